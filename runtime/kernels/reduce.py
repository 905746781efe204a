"""numpy kernels for irtool.ir.ops.reduce."""
import numpy as np

from irtool.ir.ops import reduce as ops


def _axes(axes):
    return None if axes is None else tuple(axes)


KERNELS = {
    ops.REDUCE_SUM: lambda x, axes=None, keepdims=False:
        np.asarray(np.sum(x, axis=_axes(axes), keepdims=keepdims), dtype=x.dtype),
    ops.MATMUL: lambda a, c: np.asarray(np.matmul(a, c)),
}
