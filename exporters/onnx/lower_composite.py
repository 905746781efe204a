"""ONNX lowerings for irtool.ir.ops.composite."""
LOWERINGS = {}
