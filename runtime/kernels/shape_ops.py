"""numpy kernels for irtool.ir.ops.shape_ops."""
import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import shape_ops as ops


def _split(x, sizes, axis):
    parts = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _slice(x, starts, ends, axes=None, steps=None):
    index = [slice(None)] * x.ndim
    for axis, start, end, step in ops.slice_axes(x.ndim, {"starts": starts, "ends": ends,
                                                          "axes": axes, "steps": steps}):
        s, e, _ = ops.slice_bounds(x.shape[axis], start, end, step)
        index[axis] = slice(s, e if e >= 0 else None, step)
    return x[tuple(index)]


def _pad(x, pads, mode="constant", value=0.0):
    r = x.ndim
    begins, ends = pads[:r], pads[r:]
    x = x[tuple(slice(-min(lo, 0), d + min(hi, 0)) for d, lo, hi in zip(x.shape, begins, ends))]
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in zip(begins, ends)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    return np.pad(x, widths, mode=mode)


def _wrap(idx, size):
    return np.where(idx < 0, idx + size, idx)


def _gather_elements(x, indices, axis=0):
    axis %= x.ndim
    # torch.gather allows indices smaller than x off the axis: look at that corner only
    x = x[tuple(slice(None) if i == axis else slice(0, k) for i, k in enumerate(indices.shape))]
    return np.take_along_axis(x, _wrap(indices, x.shape[axis]).astype(np.intp), axis=axis)


def _scatter_add(x, indices, updates, axis=0):
    axis %= x.ndim
    out = np.array(x)                       # x may be a broadcast (read-only) view
    rows = _whole_slices(x, indices, axis)
    if rows is not None:
        _add_slices(np.moveaxis(out, axis, 0), _wrap(rows, x.shape[axis]),
                    np.moveaxis(updates, axis, 0))
        return out
    index = list(np.indices(indices.shape, sparse=True))
    index[axis] = _wrap(indices, x.shape[axis])
    np.add.at(out, tuple(index), updates)
    return out


def _whole_slices(x, indices, axis):
    """The 1-D index along axis when indices pick whole slices of x (the same
    index across every other axis, which spans x there: embedding gradients),
    else None."""
    if indices.ndim < 2 or any(indices.shape[d] != x.shape[d] for d in range(x.ndim) if d != axis):
        return None
    first = indices[tuple(slice(None) if d == axis else slice(0, 1) for d in range(x.ndim))]
    if not all(indices.strides[d] == 0 or indices.shape[d] == 1 for d in range(x.ndim) if d != axis):
        if not np.array_equal(np.broadcast_to(first, indices.shape), indices):
            return None
    return first.reshape(-1)


def _add_slices(out, idx, upd):
    """out[idx[i]] += upd[i] with repeated indices accumulating (np.add.at
    on rows, which numpy runs an element at a time)."""
    if idx.size == 0:
        return
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    runs = np.diff(np.append(starts, len(s)))
    if runs.max() <= 8:
        # few repeats: one fancy-indexed add per repeat depth (no index repeats within one)
        u = upd[order]
        for k in range(int(runs.max())):
            sel = starts[runs > k]
            out[s[sel]] += u[sel + k]
    elif len(starts) * len(s) <= 1 << 22 and out.dtype.kind == "f":
        # many repeats of few rows: a one-hot matmul sums them
        uniq, inv = s[starts], np.repeat(np.arange(len(starts)), runs)
        onehot = np.zeros((len(starts), len(s)), dtype=out.dtype)
        onehot[inv, order] = 1
        out[uniq] += (onehot @ upd.reshape(len(s), -1)).reshape((len(uniq),) + upd.shape[1:])
    else:
        np.add.at(out, idx, upd)


def _arange(start, stop, step=1, dtype="int64"):
    n = ops.ARANGE.infer([], {"start": start, "stop": stop, "step": step, "dtype": dtype})[0].shape[0]
    if np.issubdtype(np_dtype(dtype), np.integer):
        return np.arange(start, start + n * step, step, dtype=np_dtype(dtype))[:n]
    return (start + np.arange(n, dtype=np.float64) * step).astype(np_dtype(dtype))


KERNELS = {
    ops.CONSTANT: lambda value: value,
    ops.RESHAPE: lambda x, shape: np.reshape(x, shape),
    ops.EXPAND: lambda x, shape: np.broadcast_to(x, shape),
    ops.TRANSPOSE: lambda x, perm=None: np.transpose(x, perm),
    ops.UNSQUEEZE: lambda x, axes: np.expand_dims(x, tuple(axes)),
    ops.SQUEEZE: lambda x, axes=None: np.squeeze(x, tuple(axes) if axes is not None else
                                                 tuple(i for i, d in enumerate(x.shape) if d == 1)),
    ops.CONCAT: lambda *xs, axis: np.concatenate(xs, axis=axis),
    ops.SPLIT: _split,
    ops.SLICE: _slice,
    ops.PAD: _pad,
    ops.GATHER: lambda x, indices, axis=0: np.take(x, indices, axis=axis),
    ops.GATHER_ELEMENTS: _gather_elements,
    ops.SCATTER_ADD: _scatter_add,
    ops.TILE: lambda x, repeats: np.tile(x, repeats),
    ops.FLIP: lambda x, axes=None: np.flip(x, axes),
    ops.SHAPE_OF: lambda x: np.array(x.shape, dtype=np.int64),
    ops.ARANGE: _arange,
    ops.FULL: lambda shape, value, dtype="float32": np.full(shape, value, dtype=np_dtype(dtype)),
}
