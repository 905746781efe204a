"""numpy kernels for irtool.ir.ops.conv."""
KERNELS = {}
