"""torch oracles for irtool.ir.ops.reduce. torch reads dim=() as "all axes";
the IR reads axes=() as none, so those cases return the input unchanged."""
import torch


def _dims(x, axes):
    return tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)


def _reduce(fn):
    def oracle(x, axes=None, keepdims=False):
        dims = _dims(x, axes)
        return fn(x, dim=dims, keepdim=keepdims) if dims else x.clone()
    return oracle


def _prod(x, dim, keepdim):
    # torch.prod takes one dim: reduce the highest first so the rest stay valid
    for d in sorted(dim, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim, dtype=x.dtype)
    return x


def _cumsum(x, axis, exclusive=False, reverse=False):
    y = x.flip(axis) if reverse else x
    out = torch.cumsum(y, dim=axis, dtype=x.dtype)
    if exclusive:
        n = out.shape[axis]
        out = torch.cat([torch.zeros_like(out.narrow(axis, 0, 1)), out.narrow(axis, 0, n - 1)], dim=axis)
    return out.flip(axis) if reverse else out


ORACLES = {
    "reduce_sum": _reduce(lambda x, dim, keepdim: torch.sum(x, dim=dim, keepdim=keepdim, dtype=x.dtype)),
    "reduce_mean": _reduce(torch.mean),
    "reduce_max": _reduce(torch.amax),
    "reduce_min": _reduce(torch.amin),
    "reduce_prod": _reduce(_prod),
    "argmax": lambda x, axis, keepdims=False: torch.argmax(x, dim=axis, keepdim=keepdims),
    "argmin": lambda x, axis, keepdims=False: torch.argmin(x, dim=axis, keepdim=keepdims),
    "cumsum": _cumsum,
    "topk": lambda x, k, axis=-1, largest=True: tuple(torch.topk(x, k, dim=axis, largest=largest,
                                                                 sorted=True)),
    "matmul": torch.matmul,
}
