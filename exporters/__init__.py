"""Exporters: IR to ONNX, PyTorch and TensorFlow."""
