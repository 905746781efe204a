"""IR op -> TensorFlow ops: one table, LOWERINGS = {OpDef: fn}, covering every op.

An entry is `fn(*tensors, **attrs) -> tensor` (a tuple for multi-output ops),
called while a tf.function traces, with the node's attrs; shape attrs are
already resolved (ints, or int32 scalar tensors read off the inputs' runtime
shapes where the IR dim is symbolic). Entries marked `@per_node` are called
once, when the module is built, as `fn(node)` and return such a function:
they read the node's static IR types (conv geometry, a slice's static axis
size, squeeze's default axes).

The one thing to know: every entry reproduces the numpy kernel
(runtime/kernels), and its TensorFlow gradient reproduces the IR's vjp rule
(ties split evenly in maximum/minimum, first index on ties in max pooling,
no gradient to embedding's padding row). Layout: the IR is channels-first;
TF CPU convolutions and pools are channels-last, so they transpose in and
out. Where TF's CPU kernels lack a feature (grouped or dilated gradients
outside oneDNN's float32/bfloat16 path, 3-D pools in float64), the lowering
builds the same result from supported ops: per-group convolutions, kernels
dilated with zeros, pools as a max/sum over kernel taps.
"""
import math
import os
import platform
from itertools import product

import numpy as np
import tensorflow as tf

from irtool.ir.ops import composite as cops
from irtool.ir.ops import conv as conv_ops
from irtool.ir.ops import elementwise as eops
from irtool.ir.ops import reduce as rops
from irtool.ir.ops import shape_ops as sops

# TF's CPU convolutions support groups and dilations (with gradients) only
# through oneDNN, which TF enables by default on x86-64 for float32/bfloat16
_ONEDNN = (platform.machine().lower() in ("x86_64", "amd64")
           and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False"))
_ONEDNN_DTYPES = ("float32", "bfloat16")


def tf_dtype(name):
    """IR dtype name -> tf.DType (the names agree)."""
    return tf.as_dtype(name)


def per_node(fn):
    """Mark a lowering that needs the node: fn(node) -> fn(*tensors, **attrs)."""
    fn.per_node = True
    return fn


def _scalar(value, dtype):
    """A Python number as a scalar tensor, cast the way numpy's astype casts it."""
    dtype = tf.as_dtype(dtype)
    return tf.constant(np.asarray(value).astype(dtype.as_numpy_dtype))


def _shape(dims):
    """A shape attr (ints and int32 scalar tensors) -> list of ints or int32 tensor."""
    dims = list(dims)
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return [int(d) for d in dims]
    return tf.stack([tf.cast(d, tf.int32) for d in dims])


def _rank(x):
    return x.shape.rank


def _axis_index(rank, axis, index):
    return (slice(None),) * axis + (index,) + (slice(None),) * (rank - axis - 1)


def _identity(x, **attrs):
    return tf.identity(x)


# -- elementwise ------------------------------------------------------------------------

def _safe_int_divisor(y):
    zero = tf.equal(y, tf.zeros_like(y))
    return zero, tf.where(zero, tf.ones_like(y), y)


def _div(x, y):
    if x.dtype.is_floating:
        return tf.math.truediv(x, y)
    zero, y1 = _safe_int_divisor(y)                 # numpy kernel: x / 0 gives 0
    q = tf.truncatediv(x, y1)
    return tf.where(zero, tf.zeros_like(q), q)


def _mod(x, y):
    if x.dtype.is_floating:
        return tf.math.floormod(x, y)               # sign of the divisor, like np.mod
    zero, y1 = _safe_int_divisor(y)
    r = tf.math.floormod(x, y1)
    return tf.where(zero, tf.zeros_like(r), r)


def _extremum(pick, native):
    """maximum / minimum; on floats ties split the gradient evenly (the IR's
    rule; TF's own gradient gives it all to x). The value is exact: on a tie
    x/2 + y/2 == x."""
    def lower(x, y):
        if not x.dtype.is_floating:
            return native(x, y)
        half = _scalar(0.5, x.dtype)
        first, second = pick(x, y), pick(y, x)
        return tf.where(first, x, tf.where(second, y, x * half + y * half))
    return lower


def _compare(fn, ordered):
    def lower(x, y):
        if ordered and x.dtype == tf.bool:       # TF orders numbers only; numpy: False < True
            x, y = tf.cast(x, tf.int8), tf.cast(y, tf.int8)
        return fn(x, y)
    return lower


def _clip(x, min=None, max=None):
    # tf.maximum/minimum pass the gradient to x on ties: inclusive bounds, as the IR's vjp
    if min is None and max is None:
        return tf.identity(x)
    if min is not None:
        x = tf.maximum(x, _scalar(min, x.dtype))
    if max is not None:
        x = tf.minimum(x, _scalar(max, x.dtype))
    return x


ELEMENTWISE = {
    eops.NEG: tf.negative,
    eops.ABS: tf.abs,
    eops.SIGN: tf.sign,
    eops.EXP: tf.exp,
    eops.LOG: tf.math.log,
    eops.LOG1P: tf.math.log1p,
    eops.SQRT: tf.sqrt,
    eops.RSQRT: tf.math.rsqrt,
    eops.RECIPROCAL: tf.math.reciprocal,
    eops.SIN: tf.sin,
    eops.COS: tf.cos,
    eops.TANH: tf.tanh,
    eops.SIGMOID: tf.sigmoid,
    eops.ERF: tf.math.erf,
    eops.FLOOR: tf.floor,
    eops.CEIL: tf.math.ceil,
    eops.ROUND: tf.round,                    # half to even, like numpy
    eops.ISNAN: tf.math.is_nan,
    eops.LOGICAL_NOT: tf.logical_not,
    eops.ADD: tf.add,
    eops.SUB: tf.subtract,
    eops.MUL: tf.multiply,
    eops.DIV: _div,
    eops.POW: tf.pow,
    eops.MAXIMUM: _extremum(tf.greater, tf.maximum),
    eops.MINIMUM: _extremum(tf.less, tf.minimum),
    eops.MOD: _mod,
    eops.EQ: _compare(tf.equal, False),
    eops.NE: _compare(tf.not_equal, False),
    eops.LT: _compare(tf.less, True),
    eops.LE: _compare(tf.less_equal, True),
    eops.GT: _compare(tf.greater, True),
    eops.GE: _compare(tf.greater_equal, True),
    eops.LOGICAL_AND: tf.logical_and,
    eops.LOGICAL_OR: tf.logical_or,
    eops.WHERE: tf.where,
    eops.CLIP: _clip,
    eops.STOP_GRADIENT: tf.stop_gradient,
    eops.CAST: lambda x, dtype: tf.cast(x, tf_dtype(dtype)),
}


# -- reductions, scans, matmul, topk ------------------------------------------------------

def _dims(x, axes):
    """IR axes -> TF axes; () means no reduction (TF would read [] as none too,
    but a rank-0 input with axes=None must stay as it is)."""
    r = _rank(x)
    if r == 0:
        return ()
    return tuple(range(r)) if axes is None else tuple(sorted(a % r for a in axes))


def _reducer(fn):
    def lower(x, axes=None, keepdims=False):
        dims = _dims(x, axes)
        if not dims:
            return tf.identity(x)
        return fn(x, axis=list(dims), keepdims=bool(keepdims))
    return lower


def _arg(reduce):
    """argmax/argmin -> int64, the first index among ties (np.argmax's rule;
    tf.argmax does not promise one)."""
    def lower(x, axis, keepdims=False):
        r = _rank(x)
        axis %= r
        if x.dtype == tf.bool:
            x = tf.cast(x, tf.int8)
        best = reduce(x, axis=axis, keepdims=True)
        n = tf.shape(x, out_type=tf.int64)[axis]
        pos = tf.reshape(tf.range(n, dtype=tf.int64), [-1 if i == axis else 1 for i in range(r)])
        return tf.reduce_min(tf.where(tf.equal(x, best), pos, n), axis=axis, keepdims=bool(keepdims))
    return lower


def _cumsum(x, axis, exclusive=False, reverse=False):
    return tf.math.cumsum(x, axis=axis, exclusive=bool(exclusive), reverse=bool(reverse))


def _move_last(x, axis):
    r = _rank(x)
    if axis == r - 1:
        return x, None
    perm = [i for i in range(r) if i != axis] + [axis]
    return tf.transpose(x, perm), list(np.argsort(perm))


def _topk(x, k, axis=-1, largest=True):
    axis %= _rank(x)
    xl, back = _move_last(x, axis)
    if largest:      # sorted; equal values: lower index first (documented by top_k)
        values, idx = tf.math.top_k(xl, k=k, sorted=True)
    else:            # a stable ascending sort gives the same tie order
        idx = tf.argsort(xl, axis=-1, direction="ASCENDING", stable=True)[..., :k]
        values = tf.gather(xl, idx, axis=-1, batch_dims=_rank(xl) - 1)
    idx = tf.cast(idx, tf.int64)
    if back is not None:
        values, idx = tf.transpose(values, back), tf.transpose(idx, back)
    return values, idx


def _matmul(a, c):
    ra, rc = _rank(a), _rank(c)
    a2 = tf.expand_dims(a, 0) if ra == 1 else a
    c2 = tf.expand_dims(c, -1) if rc == 1 else c
    y = tf.linalg.matmul(a2, c2)            # batch dims broadcast, as in numpy
    if rc == 1:
        y = tf.squeeze(y, -1)
    if ra == 1:
        y = tf.squeeze(y, -2 if rc > 1 else -1)
    return y


REDUCE = {
    rops.REDUCE_SUM: _reducer(tf.reduce_sum),
    rops.REDUCE_MEAN: _reducer(tf.reduce_mean),
    rops.REDUCE_MAX: _reducer(tf.reduce_max),     # TF's gradient splits ties evenly, as the IR's
    rops.REDUCE_MIN: _reducer(tf.reduce_min),
    rops.REDUCE_PROD: _reducer(tf.reduce_prod),
    rops.ARGMAX: _arg(tf.reduce_max),
    rops.ARGMIN: _arg(tf.reduce_min),
    rops.CUMSUM: _cumsum,
    rops.TOPK: _topk,
    rops.MATMUL: _matmul,
}


# -- layout, indexing, creation ------------------------------------------------------------

def _constant(value):
    """Used only outside modules; the module makes constants once per trace."""
    return tf.constant(value)


def _unsqueeze(x, axes):
    rank = _rank(x) + len(axes)
    for a in sorted(a % rank for a in axes):
        x = tf.expand_dims(x, a)
    return x


@per_node
def _squeeze(node):
    x = node.inputs[0]
    axes = node.attrs.get("axes")
    # default axes: the static 1s of the IR type (what the shape rule dropped)
    dims = [i for i, d in enumerate(x.shape) if d == 1] if axes is None else sorted(a % x.rank for a in axes)

    def lower(x, axes=None):
        return tf.squeeze(x, dims) if dims else tf.identity(x)
    return lower


def _split(x, sizes, axis):
    if len(sizes) == 1:
        return tf.identity(x)
    return tuple(tf.split(x, _shape(sizes), axis=axis, num=len(sizes)))


def _take_range(x, axis, lo, hi, step):
    """x[lo:hi:|step|] along axis, reversed when step < 0 (lo..hi ascending)."""
    y = x[_axis_index(_rank(x), axis, slice(lo, hi, abs(step)))]
    return tf.reverse(y, [axis]) if step < 0 else y


@per_node
def _slice(node):
    plan = sops.slice_plan(node.inputs[0].type, node.attrs)

    def lower(x, starts, ends, axes=None, steps=None):
        for axis, kind, data in plan:
            if kind == "empty":
                x = x[_axis_index(_rank(x), axis, slice(0, 0))]
            elif kind == "symbolic":
                x = x[_axis_index(_rank(x), axis, slice(starts[data], ends[data]))]
            else:
                x = _take_range(x, axis, *data)
        return tf.identity(x) if not plan else x
    return lower


def _edge_pad(x, axis, lo, hi):
    n = tf.shape(x)[axis]
    idx = tf.clip_by_value(tf.range(-lo, n + hi), 0, n - 1)
    return tf.gather(x, idx, axis=axis)


def _pad(x, pads, mode="constant", value=0.0):
    r = _rank(x)
    if r == 0 or not any(pads):
        return tf.identity(x)
    begins, ends = pads[:r], pads[r:]
    if any(p < 0 for p in pads):          # negative pads crop first
        x = x[tuple(slice(-min(lo, 0), min(hi, 0) or None) for lo, hi in zip(begins, ends))]
    widths = [[max(lo, 0), max(hi, 0)] for lo, hi in zip(begins, ends)]
    if not any(lo or hi for lo, hi in widths):
        return x
    if mode == "constant":
        return tf.pad(x, widths, constant_values=_scalar(value, x.dtype))
    if mode == "reflect":
        return tf.pad(x, widths, mode="REFLECT")
    for axis, (lo, hi) in enumerate(widths):     # edge: repeat the first / last slice
        if lo or hi:
            x = _edge_pad(x, axis, lo, hi)
    return x


def _wrap(indices, size):
    size = tf.cast(size, indices.dtype)
    return tf.where(indices < 0, indices + size, indices)


def _gather(x, indices, axis=0):
    axis %= _rank(x)
    return tf.gather(x, _wrap(indices, tf.shape(x)[axis]), axis=axis)


def _element_coords(x, indices, axis):
    """gather_nd / scatter_nd coordinates (*indices.shape, rank): indices on
    `axis` (negative ones wrapped), the element's own position elsewhere."""
    r = _rank(x)
    idx = tf.cast(_wrap(indices, tf.shape(x)[axis]), tf.int64)
    shape = tf.shape(idx)
    coords = []
    for i in range(r):
        if i == axis:
            coords.append(idx)
        else:
            pos = tf.reshape(tf.range(tf.cast(shape[i], tf.int64)), [-1 if j == i else 1 for j in range(r)])
            coords.append(tf.broadcast_to(pos, shape))
    return tf.stack(coords, axis=-1)


def _gather_elements(x, indices, axis=0):
    axis %= _rank(x)
    return tf.gather_nd(x, _element_coords(x, indices, axis))


def _scatter_add(x, indices, updates, axis=0):
    axis %= _rank(x)
    return tf.tensor_scatter_nd_add(x, _element_coords(x, indices, axis), updates)


def _tile(x, repeats):
    return tf.tile(x, list(repeats)) if _rank(x) else tf.identity(x)


def _flip(x, axes=None):
    r = _rank(x)
    if r == 0:
        return tf.identity(x)
    axes = range(r) if axes is None else axes
    return tf.reverse(x, sorted(a % r for a in axes))


@per_node
def _arange(node):
    out = node.outputs[0]
    dt = tf_dtype(out.dtype)
    n = out.shape[0]

    def lower(start, stop, step=1, dtype=None):
        if not isinstance(n, int):         # symbolic bound: integer dtype, step 1
            return tf.range(tf.cast(start, dt), tf.cast(stop, dt), dtype=dt)
        if dt.is_floating:                 # the kernel: start + i*step in float64, rounded once
            return tf.cast(tf.range(n, dtype=tf.float64) * step + start, dt)
        return tf.cast(tf.range(n, dtype=tf.int64) * step + start, dt)
    return lower


def _full(shape, value, dtype="float32"):
    return tf.fill(_shape(shape), _scalar(value, tf_dtype(dtype)))


SHAPE = {
    sops.CONSTANT: _constant,
    sops.RESHAPE: lambda x, shape: tf.reshape(x, _shape(shape)),
    sops.EXPAND: lambda x, shape: tf.broadcast_to(x, _shape(shape)),
    sops.TRANSPOSE: lambda x, perm=None: tf.transpose(x, None if perm is None else list(perm)),
    sops.UNSQUEEZE: _unsqueeze,
    sops.SQUEEZE: _squeeze,
    sops.CONCAT: lambda *xs, axis: tf.concat(list(xs), axis=axis),
    sops.SPLIT: _split,
    sops.SLICE: _slice,
    sops.PAD: _pad,
    sops.GATHER: _gather,
    sops.GATHER_ELEMENTS: _gather_elements,
    sops.SCATTER_ADD: _scatter_add,
    sops.TILE: _tile,
    sops.FLIP: _flip,
    sops.SHAPE_OF: lambda x: tf.shape(x, out_type=tf.int64),
    sops.ARANGE: _arange,
    sops.FULL: _full,
}


# -- conv, pooling, resize ------------------------------------------------------------------

def _channels_last(x):
    r = _rank(x)
    return tf.transpose(x, [0] + list(range(2, r)) + [1])


def _channels_first(x):
    r = _rank(x)
    return tf.transpose(x, [0, r - 1] + list(range(1, r - 1)))


def _pad_spatial(x, begins, ends, first, fill=0):
    """Pad (or, for negative amounts, crop) the spatial axes first..first+nd-1."""
    nd = len(begins)
    if any(b < 0 or e < 0 for b, e in zip(begins, ends)):
        index = [slice(None)] * _rank(x)
        for a in range(nd):
            index[first + a] = slice(-min(begins[a], 0), min(ends[a], 0) or None)
        x = x[tuple(index)]
    widths = [[0, 0] for _ in range(_rank(x))]
    for a in range(nd):
        widths[first + a] = [max(begins[a], 0), max(ends[a], 0)]
    if not any(lo or hi for lo, hi in widths):
        return x
    return tf.pad(x, widths, constant_values=_scalar(fill, x.dtype))


def _dilate(w, dil):
    """Insert d-1 zeros between the taps of each leading (spatial) axis of w:
    a dilated kernel as a plain one (for CPU kernels without dilation). The
    spatial sizes are static; the channel axes may not be."""
    for a, d in enumerate(dil):
        k = w.shape[a]
        if d == 1 or k == 1:
            continue
        shape = tf.shape(w)
        w = tf.expand_dims(w, a + 1)
        widths = [[0, 0]] * _rank(w)
        widths[a + 1] = [0, d - 1]
        w = tf.pad(w, widths)
        w = tf.reshape(w, tf.concat([shape[:a], [k * d], shape[a + 1:]], axis=0))
        w = w[_axis_index(_rank(w), a, slice(0, (k - 1) * d + 1))]
    return w


def _native(dtype):
    return _ONEDNN and dtype in _ONEDNN_DTYPES


def _conv_cl(x, w, strides, dil, groups, native):
    """Channels-last convolution, no padding: x (N, *S, C), w (*K, C/groups, O)."""
    nd = _rank(x) - 2
    if nd == 1:      # as 2-D with a unit height
        y = _conv_cl(tf.expand_dims(x, 1), tf.expand_dims(w, 0), (1,) + tuple(strides), (1,) + tuple(dil),
                     groups, native)
        return tf.squeeze(y, 1)
    if nd == 2 and (native or (groups == 1 and all(d == 1 for d in dil))):
        return tf.nn.conv2d(x, w, [1, *strides, 1], "VALID", dilations=[1, *dil, 1])
    if any(d > 1 for d in dil):
        w = _dilate(w, dil)
    conv = tf.nn.conv2d if nd == 2 else tf.nn.conv3d
    full = [1, *strides, 1]
    if groups == 1:
        return conv(x, w, full, "VALID")
    if nd == 2 and w.shape[2] == 1 and strides[0] == strides[1]:    # depthwise, channel multiplier
        filt = tf.reshape(w, [w.shape[0], w.shape[1], groups, -1])
        return tf.nn.depthwise_conv2d(x, filt, full, "VALID")
    xs, ws = tf.split(x, groups, axis=-1), tf.split(w, groups, axis=-1)
    return tf.concat([conv(a, b, full, "VALID") for a, b in zip(xs, ws)], axis=-1)


@per_node
def _conv(node):
    nd = node.inputs[0].rank - 2
    strides, pads, dil, groups = conv_ops.conv_params(node.attrs, nd)
    native = _native(node.inputs[0].dtype)

    def lower(x, w, bias=None, **attrs):
        x = _channels_last(_pad_spatial(x, pads[:nd], pads[nd:], 2))
        w = tf.transpose(w, list(range(2, 2 + nd)) + [1, 0])           # (*K, C/groups, O)
        y = _conv_cl(x, w, strides, dil, groups, native)
        if bias is not None:
            y = y + bias
        return _channels_first(y)
    return lower


def _conv_transpose_cl(x, w, out_sizes, strides, dil):
    """Channels-last transposed convolution without padding: x (N, *S, C),
    w (*K, O, C); out_sizes the full spatial output sizes."""
    nd = _rank(x) - 2
    if nd == 1:
        y = _conv_transpose_cl(tf.expand_dims(x, 1), tf.expand_dims(w, 0), [1] + list(out_sizes),
                               (1,) + tuple(strides), (1,) + tuple(dil))
        return tf.squeeze(y, 1)
    shape = tf.stack([tf.shape(x)[0]] + [tf.constant(s) for s in out_sizes] + [tf.shape(w)[-2]])
    fn = tf.nn.conv2d_transpose if nd == 2 else tf.nn.conv3d_transpose
    return fn(x, w, shape, [1, *strides, 1], "VALID", dilations=[1, *dil, 1])


@per_node
def _conv_transpose(node):
    x_t, w_t = node.inputs[:2]
    nd = x_t.rank - 2
    strides, pads, dil, groups = conv_ops.conv_params(node.attrs, nd)
    outpad = conv_ops.int_tuple(node.attrs, "output_padding", nd, 0)
    kernel, sizes = w_t.shape[2:], x_t.shape[2:]
    full = [(sizes[a] - 1) * strides[a] + dil[a] * (kernel[a] - 1) + 1 for a in range(nd)]
    native = _native(x_t.dtype) and nd <= 2

    def lower(x, w, bias=None, **attrs):
        x = _channels_last(x)
        w = tf.transpose(w, list(range(2, 2 + nd)) + [1, 0])           # (*K, O/groups, C)
        d = dil
        if not native and any(v > 1 for v in dil):
            w, d = _dilate(w, dil), (1,) * nd
        if groups == 1:
            y = _conv_transpose_cl(x, w, full, strides, d)
        else:
            xs, ws = tf.split(x, groups, axis=-1), tf.split(w, groups, axis=-1)
            y = tf.concat([_conv_transpose_cl(a, b, full, strides, d) for a, b in zip(xs, ws)], axis=-1)
        # crop pads[:nd] in front; at the end crop pads[nd:] and add output_padding zeros
        y = _pad_spatial(y, [-p for p in pads[:nd]], [o - p for o, p in zip(outpad, pads[nd:])], 1)
        if bias is not None:
            y = y + bias
        return _channels_first(y)
    return lower


class _Pool:
    """Static geometry of a pooling node (all spatial dims are static in the IR)."""

    def __init__(self, x_type, attrs):
        self.nd = nd = x_type.rank - 2
        self.sizes = x_type.shape[2:]
        self.kernel, self.strides, self.pads, self.dil = conv_ops.pool_params(attrs, nd)
        self.ceil = bool(attrs.get("ceil_mode", False))
        self.out = tuple(conv_ops.pool_out(self.sizes[a], self.kernel[a], self.strides[a], self.pads[a],
                                           self.pads[nd + a], self.dil[a], self.ceil) for a in range(nd))
        # padded extent the output windows cover exactly (cropped where they stop short)
        self.needed = [(o - 1) * s + d * (k - 1) + 1
                       for o, s, d, k in zip(self.out, self.strides, self.dil, self.kernel)]
        self.taps = list(product(*(range(k) for k in self.kernel)))

    def padded(self, x, fill):
        nd = self.nd
        ends = [self.needed[a] - self.sizes[a] - self.pads[a] for a in range(nd)]
        return _pad_spatial(x, self.pads[:nd], ends, 2, fill)

    def window(self, xp, tap):
        """(N, C, *out): the tap-th element of every window of padded xp."""
        return xp[(slice(None),) * 2 + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                             for t, d, o, s in zip(tap, self.dil, self.out, self.strides))]

    def flat_index(self, tap):
        """int64 (*out): flat index within an (n, c) plane of x read by `tap`
        (clipped into x, as the numpy kernel does)."""
        grid = np.meshgrid(*(np.arange(o) for o in self.out), indexing="ij")
        coords = [np.clip(grid[a] * self.strides[a] + tap[a] * self.dil[a] - self.pads[a], 0, self.sizes[a] - 1)
                  for a in range(self.nd)]
        return np.ravel_multi_index(coords, self.sizes).astype(np.int64)

    def argmax(self, x):
        """(N, C, *out) int64: each window's first maximum as a flat plane index."""
        xp = self.padded(tf.stop_gradient(x), -np.inf)
        best, idx = None, None
        for tap in self.taps:
            v, flat = self.window(xp, tap), tf.constant(self.flat_index(tap))
            if best is None:
                best, idx = v, tf.broadcast_to(flat, tf.shape(v, out_type=tf.int32))
                continue
            upd = v > best                     # strict: the first maximum wins ties
            best, idx = tf.where(upd, v, best), tf.where(upd, flat, idx)
        return idx

    def segments(self, x, idx):
        """Flat indices into x (reshaped to 1-D) of each window's maximum."""
        shape = tf.shape(idx, out_type=tf.int64)
        planes, plane = shape[0] * shape[1], int(np.prod(self.sizes))
        rows = tf.reshape(idx, tf.stack([planes, -1]))
        return tf.reshape(rows + tf.range(planes)[:, None] * plane, [-1]), planes * plane


def _max_pool_backward_impl(geo, x, g):
    seg, size = geo.segments(x, geo.argmax(x))
    dx = tf.math.unsorted_segment_sum(tf.reshape(g, [-1]), seg, num_segments=size)
    return tf.reshape(dx, tf.shape(x))


def _max_pool_select_impl(geo, x, t):
    idx = geo.argmax(x)
    seg, _ = geo.segments(x, idx)
    return tf.reshape(tf.gather(tf.reshape(t, [-1]), seg), tf.shape(idx))


@per_node
def _max_pool(node):
    geo = _Pool(node.inputs[0].type, node.attrs)
    nd = geo.nd
    native = nd <= 2 and all(d == 1 for d in geo.dil)

    def forward(x):
        xp = geo.padded(x, -np.inf)
        if native:
            xl = _channels_last(xp)
            if nd == 1:
                y = tf.squeeze(tf.nn.max_pool2d(tf.expand_dims(xl, 1), [1, *geo.kernel], [1, *geo.strides],
                                                "VALID"), 1)
            else:
                y = tf.nn.max_pool2d(xl, list(geo.kernel), list(geo.strides), "VALID")
            return _channels_first(y)
        y = None
        for tap in geo.taps:
            v = geo.window(xp, tap)
            y = v if y is None else tf.maximum(y, v)
        return y

    def lower(x, **attrs):
        # TF's own gradient of a pool may pick any of several tied maxima; the
        # IR's (and torch's) picks the first: scatter to the first argmax
        @tf.custom_gradient
        def pool(x):
            def grad(dy):
                return _max_pool_backward_impl(geo, x, dy)
            return forward(x), grad
        return pool(x)
    return lower


@per_node
def _max_pool_backward(node):
    geo = _Pool(node.inputs[0].type, node.attrs)
    return lambda x, g, **attrs: _max_pool_backward_impl(geo, x, g)


@per_node
def _max_pool_select(node):
    geo = _Pool(node.inputs[0].type, node.attrs)
    return lambda x, t, **attrs: _max_pool_select_impl(geo, x, t)


@per_node
def _avg_pool(node):
    x_t = node.inputs[0]
    geo = _Pool(x_t.type, node.attrs)
    nd = geo.nd
    div = conv_ops.avg_pool_divisors(geo.sizes, geo.kernel, geo.strides, geo.pads, geo.ceil,
                                     bool(node.attrs.get("count_include_pad", False)))
    k = float(np.prod(geo.kernel))
    np_dt = tf_dtype(x_t.dtype).as_numpy_dtype

    def lower(x, **attrs):
        xp = geo.padded(x, 0)
        if nd <= 2:       # TF's mean over full (VALID) windows, rescaled to the IR's divisors
            xl = _channels_last(xp)
            if nd == 1:
                y = tf.squeeze(tf.nn.avg_pool2d(tf.expand_dims(xl, 1), [1, *geo.kernel], [1, *geo.strides],
                                                "VALID"), 1)
            else:
                y = tf.nn.avg_pool2d(xl, list(geo.kernel), list(geo.strides), "VALID")
            y = _channels_first(y)
            if np.all(div == k):
                return y
            return y * tf.constant((k / div).astype(np_dt))
        total = None      # 3-D: window sums over the kernel taps (any dtype on CPU)
        for tap in geo.taps:
            v = geo.window(xp, tap)
            total = v if total is None else total + v
        return total / tf.constant(div.astype(np_dt))
    return lower


@per_node
def _resize(node):
    x_t = node.inputs[0]
    nd = x_t.rank - 2
    size, mode, align = conv_ops.resize_params(node.attrs, nd)
    np_dt = tf_dtype(x_t.dtype).as_numpy_dtype
    axes = []
    for a in range(nd):
        n_in = x_t.shape[2 + a]
        i0, i1, lam = conv_ops.resize_sources(n_in, size[a], mode, align)
        shape = (-1,) + (1,) * (nd - 1 - a)
        lam = lam.astype(np_dt).reshape(shape)
        axes.append((i0.astype(np.int64), i1.astype(np.int64), (1 - lam).astype(np_dt), lam))

    def lower(x, **attrs):
        # gathers and a lerp per axis, exactly the numpy kernel's arithmetic
        for a, (i0, i1, one_minus, lam) in enumerate(axes):
            if mode == "nearest":
                x = tf.gather(x, i0, axis=2 + a)
                continue
            x = tf.gather(x, i0, axis=2 + a) * one_minus + tf.gather(x, i1, axis=2 + a) * lam
        return x
    return lower


CONV = {
    conv_ops.CONV: _conv,
    conv_ops.CONV_TRANSPOSE: _conv_transpose,
    conv_ops.MAX_POOL: _max_pool,
    conv_ops.MAX_POOL_BACKWARD: _max_pool_backward,
    conv_ops.MAX_POOL_SELECT: _max_pool_select,
    conv_ops.AVG_POOL: _avg_pool,
    conv_ops.RESIZE: _resize,
}


# -- composites --------------------------------------------------------------------------

def _leaky_relu(x, alpha=0.01):
    # not tf.nn.leaky_relu: its alpha is a float32 attr, inexact in float64
    return tf.where(x > 0, x, x * _scalar(alpha, x.dtype))


def _gelu(x, approximate="none"):
    return tf.nn.gelu(x, approximate=approximate == "tanh")


def _softplus(x, beta=1.0, threshold=20.0):
    z = x * _scalar(beta, x.dtype)
    return tf.where(z > _scalar(threshold, x.dtype), x, tf.math.softplus(z) / _scalar(beta, x.dtype))


def _elu(x, alpha=1.0):
    neg = tf.math.expm1(tf.minimum(x, tf.zeros_like(x))) * _scalar(alpha, x.dtype)
    return tf.where(x > 0, x, neg)


def _hardsigmoid(x):
    return _clip(x + _scalar(3, x.dtype), 0, 6) / _scalar(6, x.dtype)


def _logsumexp(x, axes=None, keepdims=False):
    dims = _dims(x, axes)
    if not dims:
        return tf.identity(x)
    return tf.reduce_logsumexp(x, axis=list(dims), keepdims=bool(keepdims))


def _normalize(x, axes, eps):
    xc = x - tf.reduce_mean(x, axis=axes, keepdims=True)
    var = tf.reduce_mean(xc * xc, axis=axes, keepdims=True)
    return xc * tf.math.rsqrt(var + _scalar(eps, x.dtype))


def _layer_norm(x, *wb, axis=-1, eps=1e-5):
    r = _rank(x)
    y = _normalize(x, list(range(axis % r, r)), eps)
    if len(wb) > 0:
        y = y * wb[0]
    if len(wb) > 1:
        y = y + wb[1]
    return y


def _channel(p, rank):
    return tf.reshape(p, [-1] + [1] * (rank - 2))


def _batch_norm(x, weight, bias, mean, var, eps=1e-5):
    scale = tf.math.rsqrt(var + _scalar(eps, var.dtype)) * weight
    r = _rank(x)
    return (x - _channel(mean, r)) * _channel(scale, r) + _channel(bias, r)


def _group_norm(x, *wb, groups, eps=1e-5):
    shape = tf.shape(x)
    y = _normalize(tf.reshape(x, tf.stack([shape[0], groups, -1])), [-1], eps)
    y = tf.reshape(y, shape)
    if wb:
        r = _rank(x)
        y = y * _channel(wb[0], r) + _channel(wb[1], r)
    return y


def _linear(x, w, bias=None):
    y = _matmul(x, tf.transpose(w))
    return y if bias is None else y + bias


@per_node
def _embedding(node):
    pad = node.attrs.get("padding_idx")
    rows = node.inputs[0].shape[0]
    if pad is not None:
        keep = np.ones((rows, 1), dtype=bool)
        keep[pad] = False

    def lower(weight, indices, padding_idx=None):
        if pad is not None:      # the padding row is a fixed vector: no gradient reaches it
            weight = tf.where(tf.constant(keep), weight, tf.stop_gradient(weight))
        return tf.gather(weight, indices, axis=0)
    return lower


@per_node
def _sdpa(node):
    q_t = node.inputs[0]
    default_scale = 1.0 / math.sqrt(q_t.shape[-1]) if isinstance(q_t.shape[-1], int) else None

    def lower(q, k, v, mask=None, is_causal=False, scale=None):
        scale = default_scale if scale is None else scale
        s = tf.linalg.matmul(q, k, transpose_b=True) * _scalar(scale, q.dtype)
        if is_causal:
            rows = tf.range(tf.shape(q)[-2])[:, None]
            cols = tf.range(tf.shape(k)[-2])[None, :]
            mask = rows >= cols
        if mask is not None:
            if mask.dtype == tf.bool:
                s = tf.where(mask, s, _scalar(-np.inf, s.dtype))
            else:
                s = s + mask
        return tf.linalg.matmul(tf.nn.softmax(s, axis=-1), v)
    return lower


def _reduce(loss, reduction):
    if reduction == "sum":
        return tf.reduce_sum(loss)
    if reduction == "mean":
        return tf.reduce_mean(loss)
    return loss


def _mse_loss(pred, target, reduction="mean"):
    d = pred - target
    return _reduce(d * d, reduction)


def _cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    cax = 1 if _rank(logits) >= 2 else 0
    lsm = tf.nn.log_softmax(logits, axis=cax)
    dt = logits.dtype
    ignored = None if ignore_index is None else tf.equal(labels, _scalar(ignore_index, labels.dtype))
    idx = labels if ignored is None else tf.where(ignored, tf.zeros_like(labels), labels)
    picked = tf.squeeze(_gather_elements(lsm, tf.expand_dims(idx, cax), cax), cax)
    loss = -picked
    if label_smoothing:
        smooth = -tf.reduce_mean(lsm, axis=cax)
        loss = loss * _scalar(1.0 - label_smoothing, dt) + smooth * _scalar(label_smoothing, dt)
    if ignored is None:
        return _reduce(loss, reduction)
    loss = tf.where(ignored, tf.zeros_like(loss), loss)
    if reduction == "mean":
        return tf.reduce_sum(loss) / tf.cast(tf.math.count_nonzero(tf.logical_not(ignored)), dt)
    return _reduce(loss, reduction)


COMPOSITE = {
    cops.RELU: tf.nn.relu,
    cops.LEAKY_RELU: _leaky_relu,
    cops.GELU: _gelu,
    cops.SILU: tf.nn.silu,
    cops.SOFTPLUS: _softplus,
    cops.ELU: _elu,
    cops.HARDSIGMOID: _hardsigmoid,
    cops.HARDSWISH: lambda x: x * _hardsigmoid(x),
    cops.SOFTMAX: lambda x, axis=-1: tf.nn.softmax(x, axis=axis),
    cops.LOG_SOFTMAX: lambda x, axis=-1: tf.nn.log_softmax(x, axis=axis),
    cops.LOGSUMEXP: _logsumexp,
    cops.LAYER_NORM: _layer_norm,
    cops.BATCH_NORM: _batch_norm,
    cops.GROUP_NORM: _group_norm,
    cops.LINEAR: _linear,
    cops.EMBEDDING: _embedding,
    cops.SCALED_DOT_PRODUCT_ATTENTION: _sdpa,
    cops.MSE_LOSS: _mse_loss,
    cops.CROSS_ENTROPY: _cross_entropy,
}


LOWERINGS = {}
for _group in (ELEMENTWISE, REDUCE, SHAPE, CONV, COMPOSITE):
    LOWERINGS.update(_group)


def lowering_for(node):
    """The trace-time function of one node (per-node entries prepared)."""
    fn = LOWERINGS[node.op]
    if getattr(fn, "per_node", False):
        return fn(node)
    return fn
