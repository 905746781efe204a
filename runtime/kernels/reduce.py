"""numpy kernels for irtool.ir.ops.reduce. numpy promotes small ints in sum
and prod and means to float64: every kernel casts back to the rule's dtype."""
import math

import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import reduce as ops


def _axes(axes):
    return None if axes is None else tuple(axes)


def _reducer(fn):
    return lambda x, axes=None, keepdims=False: np.asarray(fn(x, axis=_axes(axes), keepdims=keepdims),
                                                           dtype=x.dtype)


def _arg(fn):
    return lambda x, axis, keepdims=False: np.asarray(fn(x, axis=axis, keepdims=keepdims), dtype=np.int64)


def _cumsum(x, axis, exclusive=False, reverse=False):
    y = np.flip(x, axis) if reverse else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if exclusive:   # shift by one along axis, zeros first
        out = np.delete(np.insert(out, 0, 0, axis=axis), -1, axis=axis)
    return np.flip(out, axis) if reverse else out


def _topk(x, k, axis=-1, largest=True):
    axis = axis % x.ndim
    if largest:
        # stable ascending sort of the flipped axis, read backwards: descending
        # values, equal values by ascending original index (no negation, so
        # unsigned ints work and NaN counts as largest, like torch)
        order = x.shape[axis] - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis), idx


_HALF = (np.dtype(np.float16), np_dtype("bfloat16"))


def _matmul(a, c):
    # 16-bit floats: accumulate in float32 (as BLAS-backed runtimes do) and
    # round once; numpy would return float32 for bfloat16 and crawl on float16
    if a.dtype in _HALF:
        return np.matmul(a.astype(np.float32), c.astype(np.float32)).astype(a.dtype)
    if c.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:     # one GEMM over all leading axes
        return np.matmul(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), c).reshape(a.shape[:-1] + c.shape[1:])
    return np.asarray(np.matmul(a, c))


KERNELS = {
    ops.REDUCE_SUM: _reducer(np.sum),
    ops.REDUCE_MEAN: _reducer(np.mean),
    ops.REDUCE_MAX: _reducer(np.max),
    ops.REDUCE_MIN: _reducer(np.min),
    ops.REDUCE_PROD: _reducer(np.prod),
    ops.ARGMAX: _arg(np.argmax),
    ops.ARGMIN: _arg(np.argmin),
    ops.CUMSUM: _cumsum,
    ops.TOPK: _topk,
    ops.MATMUL: _matmul,
}
