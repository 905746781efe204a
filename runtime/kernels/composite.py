"""numpy kernels for irtool.ir.ops.composite."""
KERNELS = {}
