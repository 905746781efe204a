"""torch oracles for irtool.ir.ops.shape_ops."""
import numpy as np
import torch


def _unsq(shape, axes):
    rank = len(shape) + len(axes)
    axes = {a % rank for a in axes}
    it = iter(shape)
    return tuple(1 if i in axes else next(it) for i in range(rank))


def _onnx_slice_indices(d, start, end, step):
    """Indices ONNX Slice picks on an axis of size d (spec text, written out)."""
    start = start + d if start < 0 else start
    end = end + d if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
    else:
        start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
    out, i = [], start
    while (i < end) if step > 0 else (i > end):
        out.append(i)
        i += step
    return out


def _slice(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = steps or (1,) * len(starts)
    for a, s, e, k in zip(axes, starts, ends, steps):
        a %= x.ndim
        x = x.index_select(a, torch.tensor(_onnx_slice_indices(x.shape[a], s, e, k), dtype=torch.long))
    return x


def _pad(x, pads, mode="constant", value=0.0):
    r = x.ndim
    begins, ends = pads[:r], pads[r:]
    if mode == "constant":
        flat = [p for i in reversed(range(r)) for p in (begins[i], ends[i])]
        return torch.nn.functional.pad(x, flat, value=value)
    for i in range(r):     # reflect/edge: crop, then index with numpy.pad's own index map
        kept = np.arange(x.shape[i])[-min(begins[i], 0) or None:min(ends[i], 0) or None]
        idx = np.pad(kept, (max(begins[i], 0), max(ends[i], 0)), mode=mode)
        x = x.index_select(i, torch.from_numpy(idx.astype(np.int64)))
    return x


def _gather(x, indices, axis=0):
    axis %= x.ndim
    return x[(slice(None),) * axis + (indices.long(),)]


def _wrap(x, indices, axis):
    size = x.shape[axis]
    return torch.where(indices < 0, indices + size, indices).long()


def _gather_elements(x, indices, axis=0):
    return torch.gather(x, axis, _wrap(x, indices, axis))


def _scatter_add(x, indices, updates, axis=0):
    return torch.scatter_add(x, axis, _wrap(x, indices, axis), updates)


ORACLES = {
    "constant": lambda value: torch.from_numpy(value),
    "reshape": lambda x, shape: torch.reshape(x, shape),
    "expand": lambda x, shape: torch.broadcast_to(x, shape),
    "transpose": lambda x, perm=None: x.permute(*(perm if perm is not None else reversed(range(x.ndim)))),
    "unsqueeze": lambda x, axes: x.reshape(_unsq(x.shape, axes)),
    "squeeze": lambda x, axes=None: torch.squeeze(x, tuple(axes)) if axes is not None else torch.squeeze(x),
    "concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "split": lambda x, sizes, axis: torch.split(x, list(sizes), dim=axis),
    "slice": _slice,
    "pad": _pad,
    "gather": _gather,
    "gather_elements": _gather_elements,
    "scatter_add": _scatter_add,
    "tile": lambda x, repeats: x.repeat(*repeats),
    "flip": lambda x, axes=None: torch.flip(x, dims=tuple(range(x.ndim)) if axes is None else tuple(axes)),
    "shape_of": lambda x: torch.tensor(tuple(x.shape), dtype=torch.int64),
    "arange": lambda start, stop, step=1, dtype="int64": torch.arange(start, stop, step,
                                                                      dtype=getattr(torch, dtype)),
    "full": lambda shape, value, dtype="float32": torch.full(tuple(shape), value, dtype=getattr(torch, dtype)),
}
