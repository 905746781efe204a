"""Composite ops: activations, softmax family, normalisation, linear,
embedding, attention and losses, with torch semantics.

Every op here carries a `decompose` into primitives (it may call other
composites; the decompose pass expands until only primitives remain), so
backends without a fused kernel fall back to it. A dedicated `vjp` is given
only where it is clearly cheaper than differentiating the decomposition; it
is built from differentiable IR ops so second order works. Constants that
meet a boolean condition (`where`) are made with `b.const(v, dtype)`: a bare
Python number would take the dtype of the first Value input (the bool).
"""
import math

import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import FLOATS, is_float, is_int
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import float_unary, reduce_shape, same_dtype
from irtool.ir.shapes import broadcast, fmt, norm_axes, norm_axis
from irtool.ir.ops.sampling import bools, ints, positive, rand

INV_SQRT2 = 1.0 / math.sqrt(2.0)
SQRT2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def _const(b, value, like):
    return b.const(value, like.dtype)


def _need_float(t, what="input"):
    if not is_float(t.dtype):
        raise IRTypeError(f"{what} dtype must be float ({', '.join(FLOATS)}), got {t.dtype}")


def _dims_agree(a, c):
    """Shapes a and c are equal wherever both dims are static."""
    return len(a) == len(c) and all(x == y or not (isinstance(x, int) and isinstance(y, int))
                                    for x, y in zip(a, c))


def _keep(b, g, axes, keepdims):
    """Re-insert reduced axes as 1s so g broadcasts against the input."""
    return g if keepdims or not axes else b.unsqueeze(g, axes=axes)


def _act_samples(low=-2.0, high=2.0, attrs=({},)):
    """Samples for an elementwise activation: a matrix, a 3-D tensor and a
    scalar for each attr set; values in (low, high)."""
    def samples(rng):
        out = []
        for a in attrs:
            out += [Sample((rand(rng, 3, 4, low=low, high=high),), dict(a)),
                    Sample((rand(rng, 2, 3, 5, low=low, high=high),), dict(a))]
        out.append(Sample((rand(rng, low=low, high=high),), dict(attrs[-1])))
        return out
    return samples


# -- activations -------------------------------------------------------------

def _relu_vjp(b, node, g):
    x = node.inputs[0]
    return (b.mul(g, b.cast(b.gt(x, 0.0), dtype=x.dtype)),)


RELU = register(OpDef(
    "relu", float_unary, vjp=_relu_vjp,
    decompose=lambda b, x: b.maximum(x, 0.0),
    samples=_act_samples(),
    doc="relu(x) = max(x, 0)"))


LEAKY_RELU = register(OpDef(
    "leaky_relu", float_unary,
    decompose=lambda b, x, alpha=0.01: b.where(b.gt(x, 0.0), x, b.mul(x, alpha)),
    samples=_act_samples(attrs=({}, {"alpha": 0.2})),
    doc="leaky_relu(x, alpha=0.01) = x if x > 0 else alpha * x"))


def _gelu_infer(types, attrs):
    if attrs.get("approximate", "none") not in ("none", "tanh"):
        raise IRTypeError(f"approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return float_unary(types, attrs)


def _gelu_tanh_inner(b, x):
    # sqrt(2/pi) * (x + 0.044715 x^3)
    return b.mul(b.add(x, b.mul(b.mul(b.mul(x, x), x), GELU_TANH_C)), SQRT_2_OVER_PI)


def _gelu_decompose(b, x, approximate="none"):
    half_x = b.mul(x, 0.5)
    if approximate == "tanh":
        return b.mul(half_x, b.add(b.tanh(_gelu_tanh_inner(b, x)), 1.0))
    # x / sqrt(2) as a division: the form onnxruntime's GeluFusion recognises
    # (one fused Gelu kernel for opsets < 20, which have no ONNX Gelu)
    return b.mul(half_x, b.add(b.erf(b.div(x, SQRT2)), 1.0))


def _gelu_vjp(b, node, g):
    x = node.inputs[0]
    if node.attrs.get("approximate", "none") == "tanh":
        t = b.tanh(_gelu_tanh_inner(b, x))
        # 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3c x^2)
        du = b.mul(b.add(b.mul(b.mul(x, x), 3.0 * GELU_TANH_C), 1.0), SQRT_2_OVER_PI)
        d = b.add(b.mul(b.add(t, 1.0), 0.5),
                  b.mul(b.mul(b.mul(x, 0.5), b.sub(1.0, b.mul(t, t))), du))
    else:
        cdf = b.mul(b.add(b.erf(b.mul(x, INV_SQRT2)), 1.0), 0.5)
        pdf = b.mul(b.exp(b.mul(b.mul(x, x), -0.5)), INV_SQRT_2PI)
        d = b.add(cdf, b.mul(x, pdf))
    return (b.mul(g, d),)


GELU = register(OpDef(
    "gelu", _gelu_infer, vjp=_gelu_vjp, decompose=_gelu_decompose,
    samples=_act_samples(low=-3.0, high=3.0, attrs=({}, {"approximate": "tanh"})),
    doc='gelu(x, approximate="none"|"tanh"): x * Phi(x), or the tanh approximation'))


def _silu_vjp(b, node, g):
    x = node.inputs[0]
    s = b.sigmoid(x)
    return (b.mul(g, b.mul(s, b.add(b.mul(x, b.sub(1.0, s)), 1.0))),)


SILU = register(OpDef(
    "silu", float_unary, vjp=_silu_vjp,
    decompose=lambda b, x: b.mul(x, b.sigmoid(x)),
    samples=_act_samples(low=-4.0, high=4.0),
    doc="silu(x) = x * sigmoid(x)"))


def _softplus_decompose(b, x, beta=1.0, threshold=20.0):
    z = b.mul(x, beta) if beta != 1.0 else x
    # stable log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))
    sp = b.add(b.maximum(z, 0.0), b.log1p(b.exp(b.neg(b.abs(z)))))
    if beta != 1.0:
        sp = b.div(sp, beta)
    return b.where(b.gt(z, threshold), x, sp)


def _softplus_vjp(b, node, g):
    x = node.inputs[0]
    beta, threshold = node.attrs.get("beta", 1.0), node.attrs.get("threshold", 20.0)
    z = b.mul(x, beta) if beta != 1.0 else x
    d = b.where(b.gt(z, threshold), _const(b, 1.0, x), b.sigmoid(z))
    return (b.mul(g, d),)


SOFTPLUS = register(OpDef(
    "softplus", float_unary, vjp=_softplus_vjp, decompose=_softplus_decompose,
    samples=_act_samples(low=-3.0, high=3.0, attrs=({}, {"beta": 2.0, "threshold": 1.5})),
    doc="softplus(x, beta=1, threshold=20) = log(1 + exp(beta x)) / beta, "
        "or x where beta x > threshold (torch)"))


ELU = register(OpDef(
    "elu", float_unary,
    decompose=lambda b, x, alpha=1.0: b.where(
        b.gt(x, 0.0), x, b.mul(b.sub(b.exp(b.minimum(x, 0.0)), 1.0), alpha)),
    samples=_act_samples(attrs=({}, {"alpha": 0.5})),
    doc="elu(x, alpha=1) = x if x > 0 else alpha (exp(x) - 1)"))


HARDSIGMOID = register(OpDef(
    "hardsigmoid", float_unary,
    decompose=lambda b, x: b.div(b.clip(b.add(x, 3.0), min=0.0, max=6.0), 6.0),
    samples=_act_samples(low=-5.0, high=5.0),
    doc="hardsigmoid(x) = relu6(x + 3) / 6"))


HARDSWISH = register(OpDef(
    "hardswish", float_unary,
    decompose=lambda b, x: b.mul(x, b.hardsigmoid(x)),
    samples=_act_samples(low=-5.0, high=5.0),
    doc="hardswish(x) = x * relu6(x + 3) / 6"))


# -- softmax family ------------------------------------------------------------

def _axis_infer(types, attrs):
    t = types[0]
    _need_float(t)
    norm_axis(attrs.get("axis", -1), t.rank)
    return [t]


def _softmax_samples(rng):
    x = rand(rng, 2, 3, 4)
    return [Sample((x,), {}), Sample((x,), {"axis": 0}), Sample((x,), {"axis": 1}),
            Sample((rand(rng, 5),), {}),
            Sample((rand(rng, 3, 4) * 30 + 100,), {"axis": -1})]   # large: needs the max shift


def _softmax_decompose(b, x, axis=-1):
    axes = (norm_axis(axis, x.rank),)
    e = b.exp(b.sub(x, b.reduce_max(x, axes=axes, keepdims=True)))
    return b.div(e, b.reduce_sum(e, axes=axes, keepdims=True))


def _softmax_vjp(b, node, g):
    y = node.outputs[0]
    axes = (norm_axis(node.attrs.get("axis", -1), y.rank),)
    gy = b.mul(g, y)
    return (b.sub(gy, b.mul(y, b.reduce_sum(gy, axes=axes, keepdims=True))),)


SOFTMAX = register(OpDef(
    "softmax", _axis_infer, vjp=_softmax_vjp, decompose=_softmax_decompose,
    samples=_softmax_samples, doc="softmax(x, axis=-1), max-shifted"))


def _log_softmax_decompose(b, x, axis=-1):
    axes = (norm_axis(axis, x.rank),)
    shifted = b.sub(x, b.reduce_max(x, axes=axes, keepdims=True))
    return b.sub(shifted, b.log(b.reduce_sum(b.exp(shifted), axes=axes, keepdims=True)))


def _log_softmax_vjp(b, node, g):
    y = node.outputs[0]
    axes = (norm_axis(node.attrs.get("axis", -1), y.rank),)
    return (b.sub(g, b.mul(b.exp(y), b.reduce_sum(g, axes=axes, keepdims=True))),)


LOG_SOFTMAX = register(OpDef(
    "log_softmax", _axis_infer, vjp=_log_softmax_vjp, decompose=_log_softmax_decompose,
    samples=_softmax_samples, doc="log_softmax(x, axis=-1), max-shifted"))


def _logsumexp_infer(types, attrs):
    t = types[0]
    _need_float(t)
    return [TensorType(t.dtype, reduce_shape(t.shape, attrs))]


def _logsumexp_decompose(b, x, axes=None, keepdims=False):
    axes = norm_axes(axes, x.rank)
    # the max is a constant shift: its gradient contributions cancel exactly
    m = b.reduce_max(x, axes=axes, keepdims=True)
    out = b.add(b.log(b.reduce_sum(b.exp(b.sub(x, m)), axes=axes, keepdims=True)), m)
    return out if keepdims or not axes else b.squeeze(out, axes=axes)


def _logsumexp_vjp(b, node, g):
    x, out = node.inputs[0], node.outputs[0]
    axes = norm_axes(node.attrs.get("axes"), x.rank)
    keepdims = node.attrs.get("keepdims", False)
    return (b.mul(_keep(b, g, axes, keepdims), b.exp(b.sub(x, _keep(b, out, axes, keepdims)))),)


def _logsumexp_samples(rng):
    x = rand(rng, 2, 3, 4)
    return [Sample((x,), {}), Sample((x,), {"axes": (1,)}),
            Sample((x,), {"axes": (0, 2), "keepdims": True}), Sample((x,), {"axes": (-1,)}),
            Sample((rand(rng, 3, 4) * 30 + 100,), {"axes": (1,)})]


LOGSUMEXP = register(OpDef(
    "logsumexp", _logsumexp_infer, vjp=_logsumexp_vjp, decompose=_logsumexp_decompose,
    samples=_logsumexp_samples,
    doc="logsumexp(x, axes=None|tuple, keepdims=False), max-shifted"))


# -- normalisation -------------------------------------------------------------

def _layer_norm_infer(types, attrs):
    if not 1 <= len(types) <= 3:
        raise IRTypeError(f"layer_norm takes x, [weight, [bias]]; got {len(types)} inputs")
    x = types[0]
    _need_float(x)
    same_dtype(types)
    axis = norm_axis(attrs.get("axis", -1), x.rank)
    norm = x.shape[axis:]
    for t, what in zip(types[1:], ("weight", "bias")):
        if not _dims_agree(t.shape, norm):
            raise IRTypeError(f"{what} must have shape x.shape[{axis}:] = {fmt(norm)}, got {fmt(t.shape)}")
    return [x]


def _norm_axes(x, axis):
    return tuple(range(norm_axis(axis, x.rank), x.rank))


def _normalize(b, x, axes, eps):
    """(x - mean) * rsqrt(var + eps) over axes (biased variance)."""
    xc = b.sub(x, b.reduce_mean(x, axes=axes, keepdims=True))
    var = b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=True)
    return b.mul(xc, b.rsqrt(b.add(var, eps))), xc


def _layer_norm_decompose(b, x, *wb, axis=-1, eps=1e-5):
    y, _ = _normalize(b, x, _norm_axes(x, axis), eps)
    if len(wb) > 0:
        y = b.mul(y, wb[0])
    if len(wb) > 1:
        y = b.add(y, wb[1])
    return y


def _layer_norm_vjp(b, node, g):
    x = node.inputs[0]
    axes = _norm_axes(x, node.attrs.get("axis", -1))
    eps = node.attrs.get("eps", 1e-5)
    xc = b.sub(x, b.reduce_mean(x, axes=axes, keepdims=True))
    rstd = b.rsqrt(b.add(b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=True), eps))
    xhat = b.mul(xc, rstd)
    gw = b.mul(g, node.inputs[1]) if len(node.inputs) > 1 else g
    # dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
    inner = b.sub(b.sub(gw, b.reduce_mean(gw, axes=axes, keepdims=True)),
                  b.mul(xhat, b.reduce_mean(b.mul(gw, xhat), axes=axes, keepdims=True)))
    grads = [b.mul(rstd, inner)]
    if len(node.inputs) > 1:
        grads.append(b.mul(g, xhat))      # summed over the leading dims centrally
    if len(node.inputs) > 2:
        grads.append(g)
    return tuple(grads)


def _layer_norm_samples(rng):
    x = rand(rng, 2, 3, 4)
    return [Sample((x,), {}),
            Sample((x, rand(rng, 4)), {}),
            Sample((x, rand(rng, 4), rand(rng, 4)), {"eps": 1e-3}),
            Sample((x, rand(rng, 3, 4), rand(rng, 3, 4)), {"axis": -2}),
            Sample((rand(rng, 5, 6), rand(rng, 6), rand(rng, 6)), {"axis": 1})]


LAYER_NORM = register(OpDef(
    "layer_norm", _layer_norm_infer, vjp=_layer_norm_vjp, decompose=_layer_norm_decompose,
    samples=_layer_norm_samples,
    doc="layer_norm(x, [weight, [bias]], axis=-1, eps=1e-5): normalise over dims axis..end "
        "(ONNX LayerNormalization; torch normalized_shape = x.shape[axis:])"))


def _channel_params_infer(x, params, names):
    if x.rank < 2:
        raise IRTypeError(f"needs x of rank >= 2 (N, C, ...), got {x}")
    c = x.shape[1]
    for t, what in zip(params, names):
        if not _dims_agree(t.shape, (c,)):
            raise IRTypeError(f"{what} must have shape [C] = [{c}], got {fmt(t.shape)}")


def _batch_norm_infer(types, attrs):
    if len(types) != 5:
        raise IRTypeError(f"batch_norm takes x, weight, bias, mean, var; got {len(types)} inputs")
    _need_float(types[0])
    same_dtype(types)
    _channel_params_infer(types[0], types[1:], ("weight", "bias", "mean", "var"))
    return [types[0]]


def _per_channel(b, p, rank):
    """(C,) -> (C, 1, ..., 1) so it broadcasts against (N, C, d1, ...)."""
    return b.unsqueeze(p, axes=tuple(range(1, rank - 1))) if rank > 2 else p


def _batch_norm_decompose(b, x, weight, bias, mean, var, eps=1e-5):
    scale = b.mul(b.rsqrt(b.add(var, eps)), weight)
    r = x.rank
    return b.add(b.mul(b.sub(x, _per_channel(b, mean, r)), _per_channel(b, scale, r)),
                 _per_channel(b, bias, r))


def _batch_norm_samples(rng):
    out = []
    for shape, attrs in (((4, 3), {}), ((2, 3, 4), {"eps": 1e-3}), ((2, 3, 2, 2), {})):
        c = shape[1]
        out.append(Sample((rand(rng, *shape), rand(rng, c), rand(rng, c), rand(rng, c),
                           positive(rng, c)), attrs))
    return out


BATCH_NORM = register(OpDef(
    "batch_norm", _batch_norm_infer, decompose=_batch_norm_decompose,
    samples=_batch_norm_samples,
    doc="batch_norm(x, weight, bias, mean, var, eps=1e-5): inference form, channel axis 1"))


def _group_norm_infer(types, attrs):
    if len(types) not in (1, 3):
        raise IRTypeError(f"group_norm takes x, [weight, bias]; got {len(types)} inputs")
    x = types[0]
    _need_float(x)
    same_dtype(types)
    _channel_params_infer(x, types[1:], ("weight", "bias"))
    groups = attrs.get("groups")
    if not isinstance(groups, int) or groups < 1:
        raise IRTypeError(f"needs attr groups = a positive int, got {groups!r}")
    c = x.shape[1]
    if isinstance(c, int) and c % groups:
        raise IRTypeError(f"channels {c} do not divide into {groups} groups")
    return [x]


def _group_norm_decompose(b, x, *wb, groups, eps=1e-5):
    xr = b.reshape(x, shape=(x.shape[0], groups, -1))
    y = b.reshape(b.layer_norm(xr, axis=-1, eps=eps), shape=x.shape)
    if wb:
        y = b.add(b.mul(y, _per_channel(b, wb[0], x.rank)), _per_channel(b, wb[1], x.rank))
    return y


def _group_norm_samples(rng):
    return [Sample((rand(rng, 2, 6, 4), rand(rng, 6), rand(rng, 6)), {"groups": 3}),
            Sample((rand(rng, 2, 4, 3, 3), rand(rng, 4), rand(rng, 4)), {"groups": 2, "eps": 1e-3}),
            Sample((rand(rng, 3, 4, 5), rand(rng, 4), rand(rng, 4)), {"groups": 1}),
            Sample((rand(rng, 2, 4, 3), rand(rng, 4), rand(rng, 4)), {"groups": 4}),
            Sample((rand(rng, 2, 6, 3),), {"groups": 2})]


GROUP_NORM = register(OpDef(
    "group_norm", _group_norm_infer, decompose=_group_norm_decompose,
    samples=_group_norm_samples,
    doc="group_norm(x, [weight, bias], groups=int, eps=1e-5): torch F.group_norm"))


# -- linear, embedding, attention -------------------------------------------------

def _linear_infer(types, attrs):
    if len(types) not in (2, 3):
        raise IRTypeError(f"linear takes x, w, [bias]; got {len(types)} inputs")
    x, w = types[:2]
    _need_float(x)
    same_dtype(types)
    if x.rank < 1 or w.rank != 2:
        raise IRTypeError(f"needs x (..., in) and w (out, in), got {x} and {w}")
    if not _dims_agree(x.shape[-1:], w.shape[1:]):
        raise IRTypeError(f"x {x} and w {w} (out, in) disagree on the input size")
    if len(types) == 3 and not _dims_agree(types[2].shape, w.shape[:1]):
        raise IRTypeError(f"bias must have shape [out] = [{w.shape[0]}], got {fmt(types[2].shape)}")
    return [TensorType(x.dtype, x.shape[:-1] + w.shape[:1])]


def _linear_decompose(b, x, w, bias=None):
    y = b.matmul(x, b.transpose(w, perm=(1, 0)))
    return y if bias is None else b.add(y, bias)


LINEAR = register(OpDef(
    "linear", _linear_infer, decompose=_linear_decompose,
    samples=lambda rng: [Sample((rand(rng, 3, 4), rand(rng, 5, 4), rand(rng, 5))),
                         Sample((rand(rng, 2, 3, 4), rand(rng, 5, 4))),
                         Sample((rand(rng, 4), rand(rng, 5, 4), rand(rng, 5))),
                         Sample((rand(rng, 2, 2, 3, 4), rand(rng, 2, 4), rand(rng, 2)))],
    doc="linear(x, w, [bias]): x @ w^T + bias, w in torch layout (out, in)"))


def _embedding_infer(types, attrs):
    if len(types) != 2:
        raise IRTypeError(f"embedding takes weight, indices; got {len(types)} inputs")
    w, idx = types
    if w.rank != 2:
        raise IRTypeError(f"weight must be (num_embeddings, dim), got {w}")
    if not is_int(idx.dtype):
        raise IRTypeError(f"indices must be integers, got {idx.dtype}")
    return [TensorType(w.dtype, idx.shape + w.shape[1:])]


def _embedding_vjp(b, node, g):
    """Scatter-add g into the rows it came from; like torch, the padding_idx
    row (a fixed padding vector) gets no gradient."""
    weight, indices = node.inputs
    idx = b.reshape(indices, shape=(-1, 1)) if indices.rank != 1 else b.unsqueeze(indices, axes=(1,))
    rows = b.reshape(g, shape=(-1, weight.shape[1]))
    idx = b.expand(idx, shape=rows.shape) if idx.dtype == "int64" else \
        b.expand(b.cast(idx, dtype="int64"), shape=rows.shape)
    zeros = b.expand(b.const(0, weight.dtype), shape=weight.shape)
    dw = b.scatter_add(zeros, idx, rows, axis=0)
    pad = node.attrs.get("padding_idx")
    if pad is not None:
        keep = np.ones((weight.shape[0], 1), dtype=np.float64)
        keep[pad] = 0
        dw = b.mul(dw, b.const(keep, weight.dtype))
    return dw, None


EMBEDDING = register(OpDef(
    "embedding", _embedding_infer, nondiff_inputs=(1,), vjp=_embedding_vjp,
    decompose=lambda b, weight, indices, padding_idx=None: b.gather(weight, indices, axis=0),
    samples=lambda rng: [Sample((rand(rng, 10, 4), ints(rng, 3, high=10))),
                         Sample((rand(rng, 7, 3), ints(rng, 2, 3, high=7))),
                         Sample((rand(rng, 6, 2), ints(rng, 4, high=6, dtype="int32"))),
                         Sample((rand(rng, 5, 3), np.array([1, 1, 4, 1], dtype=np.int64))),
                         Sample((rand(rng, 5, 3), np.array([[0, 2], [0, 4]], dtype=np.int64)),
                                {"padding_idx": 0}, finite_differences=False)],
    doc="embedding(weight (V, D), indices int, padding_idx=None) = weight[indices]; the "
        "padding_idx row gets no gradient (torch semantics)"))


def _sdpa_infer(types, attrs):
    if len(types) not in (3, 4):
        raise IRTypeError(f"scaled_dot_product_attention takes q, k, v, [mask]; got {len(types)} inputs")
    q, k, v = types[:3]
    _need_float(q)
    same_dtype(types[:3])
    if min(q.rank, k.rank, v.rank) < 2:
        raise IRTypeError(f"q, k, v need rank >= 2, got {q}, {k}, {v}")
    if not _dims_agree(q.shape[-1:], k.shape[-1:]):
        raise IRTypeError(f"q {q} and k {k} disagree on the embedding size")
    if not _dims_agree(k.shape[-2:-1], v.shape[-2:-1]):
        raise IRTypeError(f"k {k} and v {v} disagree on the source length")
    if attrs.get("scale") is None and not isinstance(q.shape[-1], int):
        raise IRTypeError(f"the default scale 1/sqrt(E) needs a static E, got q {q}; pass scale=")
    L, S = q.shape[-2], k.shape[-2]
    batch = broadcast(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if len(types) == 4:
        m = types[3]
        if attrs.get("is_causal", False):
            raise IRTypeError("give either a mask or is_causal=True, not both")
        if m.dtype != "bool" and m.dtype != q.dtype:
            raise IRTypeError(f"mask must be bool or {q.dtype}, got {m.dtype}")
        scores = broadcast(batch + (L, S), m.shape)
        if not _dims_agree(scores[-2:], (L, S)):
            raise IRTypeError(f"mask {m} does not broadcast to the scores' [{L},{S}]")
        batch = scores[:-2]
    return [TensorType(q.dtype, batch + (L, v.shape[-1]))]


def _causal_mask(b, L, S):
    """Bool (L, S), True where column <= row (torch's tril(ones(L, S)))."""
    if isinstance(L, int) and isinstance(S, int):
        return b.const(np.tril(np.ones((L, S), dtype=bool)), "bool")
    ones = b.full(shape=(L, S), value=1, dtype="int64")
    return b.ge(b.cumsum(ones, axis=0), b.cumsum(ones, axis=1))   # row + 1 >= col + 1


def _sdpa_decompose(b, q, k, v, mask=None, is_causal=False, scale=None):
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = b.mul(b.matmul(q, b.transpose(k, perm=tuple(range(k.rank - 2)) + (k.rank - 1, k.rank - 2))),
              float(scale))
    if is_causal:
        mask = _causal_mask(b, q.shape[-2], k.shape[-2])
    if mask is not None:
        if mask.dtype == "bool":
            s = b.where(mask, s, _const(b, -np.inf, s))
        else:
            s = b.add(s, mask)
    return b.matmul(b.softmax(s, axis=-1), v)


def _sdpa_samples(rng):
    q, k, v = rand(rng, 2, 3, 4), rand(rng, 2, 5, 4), rand(rng, 2, 5, 6)
    keep = bools(rng, 3, 5)
    keep[:, 0] = True                       # no fully masked row
    q4, k4, v4 = rand(rng, 1, 2, 4, 3), rand(rng, 1, 2, 4, 3), rand(rng, 1, 2, 4, 2)
    return [Sample((q, k, v), {}),
            Sample((q, k, v, keep), {}),
            Sample((q, k, v, rand(rng, 2, 3, 5)), {}),
            Sample((q4, k4, v4), {"is_causal": True}),
            Sample((q, k, v), {"is_causal": True, "scale": 0.7}),
            Sample((q4, k4, v4, rand(rng, 4, 4)), {"scale": 0.3}),
            Sample((rand(rng, 3, 4), rand(rng, 2, 5, 4), rand(rng, 5, 2)), {})]  # broadcast batch


SCALED_DOT_PRODUCT_ATTENTION = register(OpDef(
    "scaled_dot_product_attention", _sdpa_infer, decompose=_sdpa_decompose,
    samples=_sdpa_samples,
    doc="scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev), [mask], "
        "is_causal=False, scale=None): torch semantics; bool mask True = attend, float mask added"))


# -- losses ----------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(attrs):
    r = attrs.get("reduction", "mean")
    if r not in _REDUCTIONS:
        raise IRTypeError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {r!r}")
    return r


def _mse_infer(types, attrs):
    if len(types) != 2:
        raise IRTypeError(f"mse_loss takes pred, target; got {len(types)} inputs")
    _need_float(types[0])
    dtype = same_dtype(types)
    shape = broadcast(types[0].shape, types[1].shape)
    return [TensorType(dtype, shape if _reduction(attrs) == "none" else ())]


def _reduce(b, loss, reduction):
    if reduction == "sum":
        return b.reduce_sum(loss)
    if reduction == "mean":
        return b.reduce_mean(loss)
    return loss


def _mse_decompose(b, pred, target, reduction="mean"):
    d = b.sub(pred, target)
    return _reduce(b, b.mul(d, d), reduction)


MSE_LOSS = register(OpDef(
    "mse_loss", _mse_infer, decompose=_mse_decompose,
    samples=lambda rng: [Sample((rand(rng, 3, 4), rand(rng, 3, 4)), {"reduction": r})
                         for r in _REDUCTIONS] + [Sample((rand(rng, 5), rand(rng, 5)), {})],
    doc='mse_loss(pred, target, reduction="mean"|"sum"|"none")'))


def _ce_infer(types, attrs):
    if len(types) != 2:
        raise IRTypeError(f"cross_entropy takes logits, labels; got {len(types)} inputs")
    x, lab = types
    _need_float(x)
    if not is_int(lab.dtype):
        raise IRTypeError(f"labels must be integer class indices, got {lab.dtype}")
    if x.rank < 1:
        raise IRTypeError(f"logits must be (C,), (N, C) or (N, C, d1, ...), got {x}")
    want = x.shape[:1] + x.shape[2:] if x.rank >= 2 else ()
    if not _dims_agree(lab.shape, want):
        raise IRTypeError(f"labels must have shape {fmt(want)} for logits {x}, got {fmt(lab.shape)}")
    ls = attrs.get("label_smoothing", 0.0)
    if not 0.0 <= ls <= 1.0:
        raise IRTypeError(f"label_smoothing must be in [0, 1], got {ls}")
    return [TensorType(x.dtype, want if _reduction(attrs) == "none" else ())]


def _ce_decompose(b, logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    cax = 1 if logits.rank >= 2 else 0
    lsm = b.log_softmax(logits, axis=cax)
    idx = labels
    if ignore_index is not None:
        ignored = b.eq(labels, ignore_index)
        idx = b.where(ignored, _const(b, 0, labels), labels)
    picked = b.squeeze(b.gather_elements(lsm, b.unsqueeze(idx, axes=(cax,)), axis=cax), axes=(cax,))
    loss = b.neg(picked)
    if label_smoothing:
        # torch: (1 - e) nll + (e / C) sum_c(-log p_c)
        smooth = b.neg(b.reduce_mean(lsm, axes=(cax,), keepdims=False))
        loss = b.add(b.mul(loss, 1.0 - label_smoothing), b.mul(smooth, float(label_smoothing)))
    if ignore_index is None:
        return _reduce(b, loss, reduction)
    loss = b.where(ignored, _const(b, 0, loss), loss)
    if reduction == "mean":
        count = b.reduce_sum(b.cast(b.ne(labels, ignore_index), dtype=loss.dtype))
        return b.div(b.reduce_sum(loss), count)
    return _reduce(b, loss, reduction)


def _ce_samples(rng):
    out = [Sample((rand(rng, 4, 5), ints(rng, 4, high=5)), {"reduction": r}) for r in _REDUCTIONS]
    lab = np.array([[0, 2, 4], [2, 1, 2]], dtype=np.int64)
    return out + [
        Sample((rand(rng, 4, 5), ints(rng, 4, high=5)), {"label_smoothing": 0.1}),
        Sample((rand(rng, 4, 5), ints(rng, 4, high=5, dtype="int32")),
               {"label_smoothing": 0.25, "reduction": "none"}),
        Sample((rand(rng, 2, 5, 3), ints(rng, 2, 3, high=5)), {}),
        Sample((rand(rng, 2, 5, 3), ints(rng, 2, 3, high=5)), {"reduction": "sum", "label_smoothing": 0.2}),
        Sample((rand(rng, 2, 5, 3), lab), {"ignore_index": 2}),
        Sample((rand(rng, 2, 5, 3), lab), {"ignore_index": 2, "label_smoothing": 0.1, "reduction": "none"}),
        Sample((rand(rng, 2, 5, 3), lab), {"ignore_index": 2, "label_smoothing": 0.3, "reduction": "sum"}),
        Sample((rand(rng, 6), np.array(3, dtype=np.int64)), {}),
    ]


CROSS_ENTROPY = register(OpDef(
    "cross_entropy", _ce_infer, decompose=_ce_decompose, nondiff_inputs=(1,),
    samples=_ce_samples,
    doc='cross_entropy(logits (N, C, d...), labels int (N, d...), reduction="mean"|"sum"|"none", '
        "label_smoothing=0.0, ignore_index=None): torch F.cross_entropy, class axis 1"))
