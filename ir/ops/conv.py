"""Convolution, pooling and resize, channels-first (N, C, *spatial) with 1 to
3 spatial dims, attrs as in ONNX: `strides`/`dilations` per spatial axis and
`pads` = (begins..., ends...). Semantics follow torch (F.conv*, F.max_pool*,
F.avg_pool*, F.interpolate).

The one thing to know: spatial dims (and kernel sizes) must be static ints,
because output sizes, pooling divisors and interpolation weights are computed
at build time; the batch dim (and the channel dim where no kernel fixes it)
may be symbolic.

Gradients are built from the ops of this file plus transpose / reshape /
reduce_sum / matmul / div, so they are differentiable again:
- conv: dx = conv_transpose(g, w) with output_padding picked to restore x's
  size; dw = conv of x and g with batch and channels swapped (stride and
  dilation trade places); db = reduce_sum(g). conv_transpose mirrors it.
  Where the swapped conv yields a few extra trailing taps (a stride that
  skipped x's last elements), they are cut with a constant 0/1 matmul.
- avg_pool: dx = conv_transpose of g / divisors with a ones kernel, on
  (N*C, 1, *spatial).
- resize: linear in x; dx = g contracted with each axis' constant
  interpolation matrix, transposed (matmul).
- max_pool: two helper ops, `max_pool_backward(x, g)` (scatters g to each
  window's argmax, first index on ties, as torch) and `max_pool_select(x, t)`
  (reads t at each window's argmax). Each is the other's gradient w.r.t. its
  second input; w.r.t. x both are zero almost everywhere. They lower to ONNX
  MaxPool's Indices output + ScatterElements(add) / Gather, so backward
  graphs stay in the default ONNX domain. (Chosen over an IR-level argmax
  via im2col gathers: exact torch tie-breaking, small graphs, no -inf
  padding tricks.)
"""
from functools import reduce

import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import is_float
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import same_dtype
from irtool.ir.ops.sampling import rand
from irtool.ir.shapes import fmt, mul_dims


# -- attrs and sizes (shared with the kernels) ----------------------------------

def spatial_rank(x, what="input"):
    if not 3 <= x.rank <= 5:
        raise IRTypeError(f"{what} must be (N, C, *spatial) with 1 to 3 spatial dims, got {x}")
    return x.rank - 2


def static_dims(dims, what):
    if any(not isinstance(d, int) for d in dims):
        raise IRTypeError(f"{what} must be static, got {fmt(dims)}")
    return tuple(dims)


def int_tuple(attrs, key, n, default, low=0):
    v = attrs.get(key)
    if v is None:
        return (default,) * n
    if isinstance(v, int):
        v = (v,)
    try:
        v = tuple(int(d) for d in v)
    except (TypeError, ValueError):
        raise IRTypeError(f"{key} must be a tuple of {n} ints, got {v!r}") from None
    if len(v) != n or any(d < low for d in v):
        raise IRTypeError(f"{key} must be {n} ints >= {low}, got {v}")
    return v


def conv_params(attrs, nd):
    """(strides, pads, dilations, groups) with defaults filled in."""
    groups = attrs.get("groups", 1)
    if not isinstance(groups, int) or groups < 1:
        raise IRTypeError(f"groups must be an int >= 1, got {groups!r}")
    return (int_tuple(attrs, "strides", nd, 1, 1), int_tuple(attrs, "pads", 2 * nd, 0),
            int_tuple(attrs, "dilations", nd, 1, 1), groups)


def pool_params(attrs, nd):
    """(kernel, strides, pads, dilations); strides default to the kernel (torch)."""
    if attrs.get("kernel") is None:
        raise IRTypeError("pooling needs attr kernel=tuple of window sizes")
    kernel = int_tuple(attrs, "kernel", nd, 1, 1)
    strides = int_tuple(attrs, "strides", nd, 1, 1) if attrs.get("strides") is not None else kernel
    return kernel, strides, int_tuple(attrs, "pads", 2 * nd, 0), int_tuple(attrs, "dilations", nd, 1, 1)


def conv_out(size, k, s, pb, pe, d):
    span = size + pb + pe - d * (k - 1) - 1
    if span < 0:
        raise IRTypeError(f"kernel extent {d * (k - 1) + 1} exceeds padded input size {size + pb + pe}")
    return span // s + 1


def pool_out(size, k, s, pb, pe, d, ceil_mode):
    """torch's rule: with ceil_mode the last window must start inside the
    input or the left padding."""
    span = size + pb + pe - d * (k - 1) - 1
    if span < 0:
        raise IRTypeError(f"window extent {d * (k - 1) + 1} exceeds padded input size {size + pb + pe}")
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + pb:
        out -= 1
    return out


def avg_pool_divisors(spatial, kernel, strides, pads, ceil_mode, count_include_pad):
    """float64 array (output spatial shape) of each window's divisor (torch):
    with count_include_pad the window clipped to the padded input, else
    clipped to the input."""
    nd = len(spatial)
    per_axis = []
    for a in range(nd):
        size, k, s, pb, pe = spatial[a], kernel[a], strides[a], pads[a], pads[nd + a]
        start = np.arange(pool_out(size, k, s, pb, pe, 1, ceil_mode)) * s - pb
        end = start + k
        if count_include_pad:
            c = np.minimum(end, size + pe) - start
        else:
            c = np.minimum(end, size) - np.maximum(start, 0)
        per_axis.append(np.maximum(c, 1).astype(np.float64))
    return reduce(np.multiply.outer, per_axis)


def resize_sources(n_in, n_out, mode, align_corners):
    """Per output index: (i0, i1, weight of i1) along one axis (torch rules)."""
    j = np.arange(n_out)
    if mode == "nearest":
        i0 = np.minimum((j * n_in) // n_out, n_in - 1)
        return i0, i0, np.zeros(n_out)
    if align_corners:
        src = j * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((j + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def resize_matrix(n_in, n_out, mode, align_corners):
    """(n_in, n_out) float64 M with y[j] = sum_i x[i] M[i, j] along one axis."""
    i0, i1, lam = resize_sources(n_in, n_out, mode, align_corners)
    m = np.zeros((n_in, n_out))
    j = np.arange(n_out)
    np.add.at(m, (i0, j), 1.0 - lam)
    np.add.at(m, (i1, j), lam)
    return m


# -- IR helpers for gradients ---------------------------------------------------

def _swap01(rank):
    return (1, 0) + tuple(range(2, rank))


def _contract(b, t, axis, mat):
    """Contract axis `axis` of t with constant mat (old size, new size)."""
    last = t.rank - 1
    m = b.const(mat, t.dtype)
    if axis == last:
        return b.matmul(t, m)
    if axis == last - 1:
        return b.matmul(b.const(np.ascontiguousarray(mat.T), t.dtype), t)
    perm = list(range(t.rank))
    perm[axis], perm[last] = last, axis
    return b.transpose(b.matmul(b.transpose(t, perm=tuple(perm)), m), perm=tuple(perm))


def _crop(b, t, sizes):
    """Keep the first sizes[a] entries of each spatial axis 2+a."""
    for a, n in enumerate(sizes):
        have = t.shape[2 + a]
        if have != n:
            t = _contract(b, t, 2 + a, np.eye(have, n))
    return t


def _batch_to_channels(b, t, groups, cg):
    """(N, G*Cg, *S) -> (Cg, G*N, *S): channel index g*N + n, per group."""
    if groups == 1:
        return b.transpose(t, perm=_swap01(t.rank))
    n, sp = t.shape[0], t.shape[2:]
    t = b.reshape(t, shape=(n, groups, cg) + sp)
    t = b.transpose(t, perm=(2, 1, 0) + tuple(range(3, 3 + len(sp))))
    return b.reshape(t, shape=(cg, mul_dims(groups, n)) + sp)


def _bias_grad(b, g):
    return b.reduce_sum(g, axes=(0,) + tuple(range(2, g.rank)))


# -- conv -----------------------------------------------------------------------

def _check_conv_inputs(types, what):
    if len(types) not in (2, 3):
        raise IRTypeError(f"{what} takes (x, w) or (x, w, bias), got {len(types)} inputs")
    dtype = same_dtype(types)
    if not is_float(dtype):
        raise IRTypeError(f"{what} needs float inputs, got {dtype}")
    x, w = types[:2]
    nd = spatial_rank(x)
    if w.rank != x.rank:
        raise IRTypeError(f"weight {w} must have the rank of input {x}")
    static_dims(x.shape[2:], "spatial dims of the input")
    static_dims(w.shape[2:], "kernel dims of the weight")
    return dtype, x, w, nd


def _check_bias(t, n):
    if t.rank != 1 or (isinstance(n, int) and isinstance(t.shape[0], int) and t.shape[0] != n):
        raise IRTypeError(f"bias must have shape [{n}], got {t}")


def _conv_infer(types, attrs):
    dtype, x, w, nd = _check_conv_inputs(types, "conv")
    strides, pads, dil, groups = conv_params(attrs, nd)
    o, cg = w.shape[:2]
    if isinstance(o, int) and o % groups:
        raise IRTypeError(f"out channels {o} not divisible by groups={groups}")
    if isinstance(x.shape[1], int) and isinstance(cg, int) and x.shape[1] != cg * groups:
        raise IRTypeError(f"input {x} has {x.shape[1]} channels; weight {w} with groups={groups} "
                          f"expects {cg * groups}")
    if len(types) == 3:
        _check_bias(types[2], o)
    out = tuple(conv_out(x.shape[2 + a], w.shape[2 + a], strides[a], pads[a], pads[nd + a], dil[a])
                for a in range(nd))
    return [TensorType(dtype, (x.shape[0], o) + out)]


def _conv_vjp(b, node, g):
    x, w = node.inputs[:2]
    nd = x.rank - 2
    strides, pads, dil, groups = conv_params(node.attrs, nd)
    sp, k, so = x.shape[2:], w.shape[2:], g.shape[2:]
    rest = tuple(sp[a] + pads[a] + pads[nd + a] - dil[a] * (k[a] - 1) - 1 - (so[a] - 1) * strides[a]
                 for a in range(nd))
    dx = b.conv_transpose(g, w, strides=strides, pads=pads, dilations=dil, groups=groups,
                          output_padding=rest)
    ends = tuple(max(pads[nd + a] - rest[a], 0) for a in range(nd))
    dw = b.conv(_batch_to_channels(b, x, groups, w.shape[1]), b.transpose(g, perm=_swap01(g.rank)),
                strides=dil, dilations=strides, pads=pads[:nd] + ends, groups=groups)
    dw = _crop(b, b.transpose(dw, perm=_swap01(dw.rank)), k)
    return (dx, dw) + ((_bias_grad(b, g),) if len(node.inputs) == 3 else ())


def _conv_samples(rng):
    return [
        Sample((rand(rng, 2, 3, 7), rand(rng, 4, 3, 3))),
        Sample((rand(rng, 1, 2, 9), rand(rng, 3, 2, 3), rand(rng, 3)),
               {"strides": (2,), "pads": (2, 0), "dilations": (2,)}),
        Sample((rand(rng, 1, 2, 5, 5), rand(rng, 3, 2, 3, 3), rand(rng, 3)), {"pads": (1, 1, 1, 1)}),
        Sample((rand(rng, 2, 2, 6, 5), rand(rng, 2, 2, 2, 3)),
               {"strides": (2, 1), "pads": (0, 1, 1, 0), "dilations": (1, 2)}),
        Sample((rand(rng, 1, 4, 6, 5), rand(rng, 6, 2, 3, 2), rand(rng, 6)),
               {"strides": (2, 2), "groups": 2}),                     # strides skip x's last row
        Sample((rand(rng, 1, 3, 6, 6), rand(rng, 3, 1, 3, 3)),
               {"strides": (2, 2), "pads": (1, 1, 1, 1), "groups": 3}),   # depthwise
        Sample((rand(rng, 1, 2, 4, 4, 3), rand(rng, 2, 2, 2, 2, 2), rand(rng, 2)),
               {"strides": (1, 2, 1), "pads": (1, 0, 0, 0, 1, 1)}),
    ]


CONV = register(OpDef(
    "conv", _conv_infer, vjp=_conv_vjp, samples=_conv_samples,
    doc="conv(x, w[, bias], strides=1s, pads=(begins..., ends...) 0s, dilations=1s, groups=1): "
        "x (N, C, *S), w (O, C/groups, *K), bias (O,)"))


# -- conv_transpose -------------------------------------------------------------

def _conv_transpose_infer(types, attrs):
    dtype, x, w, nd = _check_conv_inputs(types, "conv_transpose")
    strides, pads, dil, groups = conv_params(attrs, nd)
    outpad = int_tuple(attrs, "output_padding", nd, 0)
    cin, og = w.shape[:2]
    if isinstance(cin, int) and cin % groups:
        raise IRTypeError(f"weight {w}: input channels {cin} not divisible by groups={groups}")
    if isinstance(x.shape[1], int) and isinstance(cin, int) and x.shape[1] != cin:
        raise IRTypeError(f"input {x} has {x.shape[1]} channels; weight {w} expects {cin}")
    if len(types) == 3:
        _check_bias(types[2], mul_dims(og, groups))
    out = []
    for a in range(nd):
        n = ((x.shape[2 + a] - 1) * strides[a] - pads[a] - pads[nd + a]
             + dil[a] * (w.shape[2 + a] - 1) + outpad[a] + 1)
        if n < 1:
            raise IRTypeError(f"conv_transpose output would have size {n} on spatial axis {a}")
        out.append(n)
    return [TensorType(dtype, (x.shape[0], mul_dims(og, groups)) + tuple(out))]


def _conv_transpose_vjp(b, node, g):
    x, w = node.inputs[:2]
    nd = x.rank - 2
    strides, pads, dil, groups = conv_params(node.attrs, nd)
    outpad = int_tuple(node.attrs, "output_padding", nd, 0)
    dx = _crop(b, b.conv(g, w, strides=strides, pads=pads, dilations=dil, groups=groups), x.shape[2:])
    ends = tuple(max(pads[nd + a] - outpad[a], 0) for a in range(nd))
    dw = b.conv(_batch_to_channels(b, g, groups, w.shape[1]), b.transpose(x, perm=_swap01(x.rank)),
                strides=dil, dilations=strides, pads=pads[:nd] + ends, groups=groups)
    dw = _crop(b, b.transpose(dw, perm=_swap01(dw.rank)), w.shape[2:])
    return (dx, dw) + ((_bias_grad(b, g),) if len(node.inputs) == 3 else ())


def _conv_transpose_samples(rng):
    return [
        Sample((rand(rng, 2, 3, 4), rand(rng, 3, 2, 3))),
        Sample((rand(rng, 1, 2, 5), rand(rng, 2, 3, 3), rand(rng, 3)),
               {"strides": (2,), "pads": (1, 0), "output_padding": (1,)}),
        Sample((rand(rng, 1, 2, 4), rand(rng, 2, 2, 3)),
               {"dilations": (2,), "output_padding": (1,)}),          # output_padding >= stride
        Sample((rand(rng, 1, 2, 3, 3), rand(rng, 2, 2, 3, 3), rand(rng, 2)),
               {"strides": (2, 2), "pads": (1, 1, 1, 1), "output_padding": (1, 0)}),
        Sample((rand(rng, 1, 4, 3, 4), rand(rng, 4, 1, 2, 3)),
               {"groups": 2, "dilations": (2, 1), "pads": (0, 1, 2, 0)}),
        Sample((rand(rng, 1, 3, 4, 4), rand(rng, 3, 1, 2, 2), rand(rng, 3)),
               {"groups": 3, "strides": (2, 2)}),                     # depthwise
        Sample((rand(rng, 1, 2, 2, 3, 2), rand(rng, 2, 2, 2, 2, 2), rand(rng, 2)),
               {"strides": (2, 1, 2), "pads": (0, 1, 0, 1, 0, 0)}),
    ]


CONV_TRANSPOSE = register(OpDef(
    "conv_transpose", _conv_transpose_infer, vjp=_conv_transpose_vjp, samples=_conv_transpose_samples,
    doc="conv_transpose(x, w[, bias], strides, pads, dilations, groups, output_padding): "
        "x (N, C, *S), w (C, O/groups, *K); the gradient of conv w.r.t. its input"))


# -- pooling --------------------------------------------------------------------

def _pool_type(x, attrs, what):
    if not is_float(x.dtype):
        raise IRTypeError(f"{what} needs a float input, got {x.dtype}")
    nd = spatial_rank(x)
    sp = static_dims(x.shape[2:], "spatial dims of the input")
    kernel, strides, pads, dil = pool_params(attrs, nd)
    if any(pads[a] >= kernel[a] or pads[nd + a] >= kernel[a] for a in range(nd)):
        raise IRTypeError(f"pads {pads} must be smaller than the kernel {kernel}")
    out = tuple(pool_out(sp[a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a],
                         attrs.get("ceil_mode", False)) for a in range(nd))
    return TensorType(x.dtype, x.shape[:2] + out)


def _max_pool_infer(types, attrs):
    return [_pool_type(types[0], attrs, "max_pool")]


def _pool_samples(rng, avg):
    ceil = {"ceil_mode": True}
    out = [
        Sample((rand(rng, 2, 3, 8),), {"kernel": (3,)}),                      # strides = kernel
        Sample((rand(rng, 1, 2, 6, 6),), {"kernel": (2, 2)}),
        Sample((rand(rng, 1, 2, 7, 6),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
        Sample((rand(rng, 1, 2, 6, 7),), {"kernel": (3, 2), "strides": (2, 2), **ceil}),
        Sample((rand(rng, 1, 2, 5, 5),), {"kernel": (2, 2), "strides": (2, 2), "pads": (1, 1, 1, 1), **ceil}),
        Sample((rand(rng, 1, 2, 4, 4, 4),), {"kernel": (2, 3, 2), "strides": (2, 1, 2),
                                             "pads": (1, 1, 0, 1, 1, 0)}),
    ]
    if avg:
        inc = {"count_include_pad": True}
        out += [
            Sample((rand(rng, 1, 2, 7, 6),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), **inc}),
            Sample((rand(rng, 1, 2, 6, 6),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
                                              **ceil, **inc}),
            Sample((rand(rng, 1, 2, 6, 6),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
                                              "ceil_mode": True, "count_include_pad": False}),
            Sample((rand(rng, 1, 2, 5, 5, 4),), {"kernel": (2, 2, 3), "strides": (2, 2, 2),
                                                 "pads": (0, 1, 1, 0, 1, 1), **ceil, **inc}),
        ]
    else:
        out += [
            Sample((rand(rng, 1, 1, 7, 6),), {"kernel": (2, 2), "strides": (1, 2), "dilations": (2, 2)}),
            Sample((rand(rng, 1, 2, 9),), {"kernel": (2,), "strides": (2,), "pads": (1, 1),
                                           "dilations": (3,), **ceil}),
        ]
    return out


MAX_POOL = register(OpDef(
    "max_pool", _max_pool_infer,
    vjp=lambda b, node, g: (b.max_pool_backward(node.inputs[0], g, **node.attrs),),
    samples=lambda rng: _pool_samples(rng, avg=False),
    doc="max_pool(x, kernel=tuple, strides=kernel, pads=0s (begins..., ends...), dilations=1s, "
        "ceil_mode=False): padding is -inf; torch semantics"))


def _with_second(what):
    """Rule for max_pool_backward / max_pool_select: x, plus a tensor shaped
    like the pool output (backward) or like x (select)."""
    def infer(types, attrs):
        if len(types) != 2:
            raise IRTypeError(f"{what} takes (x, t)")
        x, t = types
        same_dtype(types)
        y = _pool_type(x, attrs, what)
        want, give = (y, x) if what == "max_pool_backward" else (x, y)
        if len(t.shape) != len(want.shape) or any(
                isinstance(a, int) and isinstance(c, int) and a != c for a, c in zip(t.shape, want.shape)):
            raise IRTypeError(f"{what}: second input must have shape {fmt(want.shape)}, got {t}")
        return [give]
    return infer


def _pool_helper_samples(rng, backward):
    out = []
    for s in _pool_samples(rng, avg=False):
        x = s.inputs[0]
        y = _pool_type(TensorType("float32", x.shape), s.attrs, "max_pool")
        t = rand(rng, *(y.shape if backward else x.shape))
        out.append(Sample((x, t), s.attrs))
    return out


MAX_POOL_BACKWARD = register(OpDef(
    "max_pool_backward", _with_second("max_pool_backward"),
    vjp=lambda b, node, g: (None, b.max_pool_select(node.inputs[0], g, **node.attrs)),
    samples=lambda rng: _pool_helper_samples(rng, backward=True),
    doc="max_pool_backward(x, g, **max_pool attrs): g (pool output shape) added at each window's "
        "argmax in x (first index on ties); the gradient of max_pool"))

MAX_POOL_SELECT = register(OpDef(
    "max_pool_select", _with_second("max_pool_select"),
    vjp=lambda b, node, g: (None, b.max_pool_backward(node.inputs[0], g, **node.attrs)),
    samples=lambda rng: _pool_helper_samples(rng, backward=False),
    doc="max_pool_select(x, t, **max_pool attrs): t (x's shape) read at each window's argmax in x; "
        "the gradient of max_pool_backward w.r.t. g"))


def _avg_pool_infer(types, attrs):
    if attrs.get("dilations") is not None:
        raise IRTypeError("avg_pool takes no dilations")
    return [_pool_type(types[0], attrs, "avg_pool")]


def _avg_pool_vjp(b, node, g):
    x = node.inputs[0]
    nd = x.rank - 2
    kernel, strides, pads, _ = pool_params(node.attrs, nd)
    sp, so = x.shape[2:], g.shape[2:]
    div = avg_pool_divisors(sp, kernel, strides, pads, node.attrs.get("ceil_mode", False),
                            node.attrs.get("count_include_pad", False))
    h = b.reshape(b.div(g, b.const(div, g.dtype)), shape=(mul_dims(x.shape[0], x.shape[1]), 1) + so)
    trail = [(so[a] - 1) * strides[a] + kernel[a] - pads[a] - sp[a] for a in range(nd)]
    dx = b.conv_transpose(h, b.const(np.ones((1, 1) + kernel), g.dtype), strides=strides,
                          pads=pads[:nd] + tuple(max(t, 0) for t in trail),
                          output_padding=tuple(max(-t, 0) for t in trail))
    return (b.reshape(dx, shape=x.shape),)


AVG_POOL = register(OpDef(
    "avg_pool", _avg_pool_infer, vjp=_avg_pool_vjp,
    samples=lambda rng: _pool_samples(rng, avg=True),
    doc="avg_pool(x, kernel=tuple, strides=kernel, pads=0s, ceil_mode=False, count_include_pad=False): "
        "torch semantics (windows past the padded end are never counted)"))


# -- resize ---------------------------------------------------------------------

def resize_params(attrs, nd):
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise IRTypeError(f"resize mode must be 'nearest' or 'linear', got {mode!r}")
    align = attrs.get("align_corners", False)
    if align and mode == "nearest":
        raise IRTypeError("align_corners applies to mode='linear' only")
    if attrs.get("size") is None:
        raise IRTypeError("resize needs attr size=tuple of output spatial sizes")
    return int_tuple(attrs, "size", nd, 1, 1), mode, bool(align)


def _resize_infer(types, attrs):
    x = types[0]
    if not is_float(x.dtype):
        raise IRTypeError(f"resize needs a float input, got {x.dtype}")
    nd = spatial_rank(x)
    static_dims(x.shape[2:], "spatial dims of the input")
    size, _, _ = resize_params(attrs, nd)
    return [TensorType(x.dtype, x.shape[:2] + size)]


def _resize_vjp(b, node, g):
    x = node.inputs[0]
    nd = x.rank - 2
    size, mode, align = resize_params(node.attrs, nd)
    for a in range(nd):
        if x.shape[2 + a] != size[a] or mode == "linear":
            g = _contract(b, g, 2 + a, resize_matrix(x.shape[2 + a], size[a], mode, align).T)
    return (g,)


def _resize_samples(rng):
    lin = {"mode": "linear"}
    return [
        Sample((rand(rng, 2, 3, 4),), {"size": (7,)}),
        Sample((rand(rng, 1, 2, 3, 4),), {"size": (6, 8), "mode": "nearest"}),
        Sample((rand(rng, 1, 2, 6, 6),), {"size": (4, 3)}),
        Sample((rand(rng, 2, 3, 5),), {"size": (8,), **lin}),
        Sample((rand(rng, 1, 2, 3, 4),), {"size": (5, 7), **lin}),
        Sample((rand(rng, 1, 2, 6, 5),), {"size": (4, 3), **lin}),
        Sample((rand(rng, 1, 2, 4, 3),), {"size": (6, 5), **lin, "align_corners": True}),
        Sample((rand(rng, 1, 2, 4, 3),), {"size": (1, 2), **lin, "align_corners": True}),
        Sample((rand(rng, 1, 2, 4, 3),), {"size": (1, 5), **lin}),
        Sample((rand(rng, 1, 1, 3, 4, 2),), {"size": (4, 6, 3), **lin}),
        Sample((rand(rng, 1, 1, 3, 4, 2),), {"size": (5, 2, 3), **lin, "align_corners": True}),
        Sample((rand(rng, 1, 1, 2, 3, 4),), {"size": (4, 3, 2)}),
    ]


RESIZE = register(OpDef(
    "resize", _resize_infer, vjp=_resize_vjp, samples=_resize_samples,
    doc="resize(x, size=tuple, mode='nearest'|'linear', align_corners=False): F.interpolate semantics "
        "(nearest = floor of dst*in/out; linear = (bi/tri)linear, half-pixel centres clamped at 0)"))
