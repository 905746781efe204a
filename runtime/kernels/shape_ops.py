"""numpy kernels for irtool.ir.ops.shape_ops."""
import numpy as np

from irtool.ir.ops import shape_ops as ops

KERNELS = {
    ops.CONSTANT: lambda value: value,
    ops.RESHAPE: lambda x, shape: np.reshape(x, shape),
    ops.EXPAND: lambda x, shape: np.broadcast_to(x, shape),
    ops.TRANSPOSE: lambda x, perm=None: np.transpose(x, perm),
    ops.UNSQUEEZE: lambda x, axes: np.expand_dims(x, tuple(axes)),
    ops.SQUEEZE: lambda x, axes=None: np.squeeze(x, tuple(axes) if axes is not None else
                                                 tuple(i for i, d in enumerate(x.shape) if d == 1)),
}
