"""torch oracles for irtool.ir.ops.shape_ops."""
import torch

ORACLES = {
    "constant": lambda value: torch.from_numpy(value),
    "reshape": lambda x, shape: torch.reshape(x, shape),
    "expand": lambda x, shape: torch.broadcast_to(x, shape),
    "transpose": lambda x, perm=None: x.permute(*(perm if perm is not None else reversed(range(x.ndim)))),
    "unsqueeze": lambda x, axes: x.reshape(_unsq(x.shape, axes)),
    "squeeze": lambda x, axes=None: torch.squeeze(x, tuple(axes)) if axes is not None else torch.squeeze(x),
}


def _unsq(shape, axes):
    rank = len(shape) + len(axes)
    axes = {a % rank for a in axes}
    it = iter(shape)
    return tuple(1 if i in axes else next(it) for i in range(rank))
