"""ONNX lowerings for irtool.ir.ops.conv."""
LOWERINGS = {}
