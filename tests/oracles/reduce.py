"""torch oracles for irtool.ir.ops.reduce."""
import torch


def _dims(x, axes):
    return tuple(range(x.ndim)) if axes is None else tuple(axes)


ORACLES = {
    "reduce_sum": lambda x, axes=None, keepdims=False: torch.sum(x, dim=_dims(x, axes), keepdim=keepdims),
    "matmul": torch.matmul,
}
