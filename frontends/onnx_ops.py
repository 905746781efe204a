"""The ONNX op table: `OPS = {op_type: fn(ctx, node) -> IR Value or list}`.

Each handler reads its inputs with `ctx.value(node, i)` and attributes with
`ctx.attr(node, name, default)`, builds IR through `ctx.b`, and returns one
IR Value per ONNX output (None for an optional output it cannot make). Inputs
that become IR attributes (shapes, axes, pads, K...) are read with
`ctx.ints_input` / `ctx.scalar_input`, which raise UnsupportedError naming
the node when the value is only known at run time. `ctx.opset` is the
model's default-domain opset: handlers branch on it where ONNX moved an
attribute to an input (Reduce* axes, Squeeze/Unsqueeze axes, Split, Slice,
Pad, Clip, TopK's K, Dropout's ratio, Softmax's axis semantics).

Ops without a direct IR op are composed from IR ops here. Standard ops that
are missing here but that ONNX defines as functions are imported through
their function bodies by onnx_import (see `unsupported_ops`).
"""
import math

import numpy as np
import onnx

from irtool.errors import FileFormatError, UnsupportedError
from irtool.frontends.onnx_import import describe, ir_dtype, tensor_to_array
from irtool.ir.dtypes import check_dtype, is_float, is_int, np_dtype
from irtool.ir.graph import Attrs
from irtool.ir.opdef import get_op
from irtool.ir.shapes import broadcast, mul_dims, norm_axis

OPS = {}

INT64_MAX = 2 ** 63 - 1


def op(*names):
    def register(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return register


def supported_op_types():
    return frozenset(OPS)


def _unsup(node, what):
    raise UnsupportedError(f"{describe(node)}: {what}")


def _const(b, value, like):
    return b.const(value, like.dtype)


def _np(v):
    """numpy dtype of an IR Value."""
    return np_dtype(v.dtype)


def _static_ints(ctx, node, i, what):
    vals = ctx.ints_input(node, i, what)
    if vals is not None and any(isinstance(v, str) for v in vals):
        _unsup(node, f"{what} {vals} depends on symbolic dims; irtool needs static values here")
    return vals


def _static_dim(node, d, what):
    if not isinstance(d, int):
        _unsup(node, f"{what} needs a static size, got symbolic dim {d!r}")
    return d


# -- constants, identity -----------------------------------------------------------

@op("Constant")
def _constant(ctx, node):
    b = ctx.b
    for a in node.attribute:
        if a.name == "value":
            arr = ctx.attr(node, "value")
        elif a.name == "value_float":
            arr = np.array(a.f, np.float32)
        elif a.name == "value_floats":
            arr = np.array(list(a.floats), np.float32)
        elif a.name == "value_int":
            arr = np.array(a.i, np.int64)
        elif a.name == "value_ints":
            arr = np.array(list(a.ints), np.int64)
        elif a.name == "sparse_value":
            arr = _sparse_to_dense(ctx, node, a.sparse_tensor)
        else:
            _unsup(node, f"Constant attribute {a.name!r} (strings) is not supported")
        return b.const(arr, check_dtype(arr.dtype))
    _unsup(node, "Constant without a value")


def _sparse_to_dense(ctx, node, sp):
    values = tensor_to_array(sp.values, ctx.base_dir, f"{describe(node)} sparse values")
    idx = tensor_to_array(sp.indices, ctx.base_dir, f"{describe(node)} sparse indices")
    dims = tuple(sp.dims)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    if idx.ndim == 1:
        dense[idx] = values
    else:
        dense[np.ravel_multi_index(tuple(idx.T), dims)] = values
    return dense.reshape(dims)


@op("Identity")
def _identity(ctx, node):
    return ctx.value(node, 0)


@op("Dropout")
def _dropout(ctx, node):
    x = ctx.value(node, 0)
    training = False
    if ctx.opset >= 12 and len(node.input) > 2 and node.input[2]:
        training = bool(ctx.scalar_input(node, 2, "training_mode"))
    ratio = ctx.attr(node, "ratio", 0.5)
    if ctx.opset >= 12 and len(node.input) > 1 and node.input[1]:
        ratio = float(ctx.scalar_input(node, 1, "ratio"))
    if training and ratio != 0:      # (is_test of opsets < 7 is ignored, as runtimes do)
        _unsup(node, "Dropout in training mode is random; irtool imports inference graphs")
    outs = [x]
    if len(node.output) > 1 and node.output[1]:
        outs.append(ctx.b.full(shape=x.shape, value=True, dtype="bool"))
    return outs


# -- elementwise ---------------------------------------------------------------------

def _unary(ir_name):
    def handler(ctx, node):
        return getattr(ctx.b, ir_name)(ctx.value(node, 0))
    return handler


for _onnx, _ir in {"Neg": "neg", "Abs": "abs", "Sign": "sign", "Exp": "exp", "Log": "log",
                   "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos",
                   "Tanh": "tanh", "Sigmoid": "sigmoid", "Erf": "erf", "Floor": "floor",
                   "Ceil": "ceil", "Round": "round", "IsNaN": "isnan", "Not": "logical_not",
                   "Relu": "relu", "HardSwish": "hardswish"}.items():
    OPS[_onnx] = _unary(_ir)


def _erfc(ctx, node):
    """Not an ONNX op: tf2onnx 1.17 writes Keras' gelu with it in the default
    domain (a file onnx.checker and onnxruntime refuse). Read as 1 - erf(x),
    so such files still import."""
    x = ctx.value(node, 0)
    return ctx.b.sub(ctx.b.const(1.0, x.dtype), ctx.b.erf(x))


OPS["Erfc"] = _erfc


def _binary(ir_name):
    def handler(ctx, node):
        return getattr(ctx.b, ir_name)(ctx.value(node, 0), ctx.value(node, 1))
    return handler


for _onnx, _ir in {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq",
                   "Less": "lt", "LessOrEqual": "le", "Greater": "gt", "GreaterOrEqual": "ge",
                   "And": "logical_and", "Or": "logical_or", "Xor": "ne"}.items():
    OPS[_onnx] = _binary(_ir)


@op("Pow")
def _pow(ctx, node):
    b = ctx.b
    x, y = ctx.value(node, 0), ctx.value(node, 1)
    if x.dtype == y.dtype:
        return b.pow(x, y)
    if is_float(x.dtype):
        return b.pow(x, b.cast(y, dtype=x.dtype))
    if is_float(y.dtype):          # integer base, float exponent: compute in float, keep x's type
        return b.cast(b.pow(b.cast(x, dtype=y.dtype), y), dtype=x.dtype)
    return b.pow(x, b.cast(y, dtype=x.dtype))


@op("Mod")
def _mod(ctx, node):
    b = ctx.b
    x, y = ctx.value(node, 0), ctx.value(node, 1)
    if not ctx.attr(node, "fmod", 0):
        return b.mod(x, y)
    if is_int(x.dtype):            # integer div truncates toward zero: x - (x / y) * y
        return b.sub(x, b.mul(b.div(x, y), y))
    q = b.div(x, y)
    trunc = b.where(b.lt(q, _const(b, 0, q)), b.ceil(q), b.floor(q))
    return b.sub(x, b.mul(trunc, y))


def _variadic(ir_name):
    def handler(ctx, node):
        vals = [v for v in ctx.inputs(node) if v is not None]
        out = vals[0]
        for v in vals[1:]:
            out = getattr(ctx.b, ir_name)(out, v)
        return out
    return handler


OPS["Sum"] = _variadic("add")
OPS["Max"] = _variadic("maximum")
OPS["Min"] = _variadic("minimum")


@op("Mean")
def _mean(ctx, node):
    vals = [v for v in ctx.inputs(node) if v is not None]
    total = _variadic("add")(ctx, node)
    return ctx.b.div(total, _const(ctx.b, len(vals), total))


@op("Where")
def _where(ctx, node):
    return ctx.b.where(ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2))


@op("Cast")
def _cast(ctx, node):
    x = ctx.value(node, 0)
    dtype = ir_dtype(ctx.attr(node, "to"), describe(node))
    return x if dtype == x.dtype else ctx.b.cast(x, dtype=dtype)


@op("CastLike")
def _cast_like(ctx, node):
    x, like = ctx.value(node, 0), ctx.value(node, 1)
    return x if like.dtype == x.dtype else ctx.b.cast(x, dtype=like.dtype)


@op("Clip")
def _clip(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    if ctx.opset < 11:
        return b.clip(x, min=ctx.attr(node, "min", -3.4028234663852886e38),
                      max=ctx.attr(node, "max", 3.4028234663852886e38))
    bounds = {}
    dynamic = {}
    for i, key in ((1, "min"), (2, "max")):
        v = ctx.value(node, i)
        if v is None:
            continue
        arr = ctx.static(v)
        if arr is not None and np.asarray(arr).size == 1 and np.asarray(arr).dtype != object:
            val = np.asarray(arr).reshape(()).item()
            bounds[key] = int(val) if is_int(x.dtype) else float(val)
        else:
            dynamic[key] = v
    out = b.clip(x, **bounds) if bounds else x
    if "min" in dynamic:
        out = b.maximum(out, dynamic["min"])
    if "max" in dynamic:
        out = b.minimum(out, dynamic["max"])
    return out


@op("IsInf")
def _isinf(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    pos, neg = ctx.attr(node, "detect_positive", 1), ctx.attr(node, "detect_negative", 1)
    hits = []
    if pos:
        hits.append(b.eq(x, _const(b, np.inf, x)))
    if neg:
        hits.append(b.eq(x, _const(b, -np.inf, x)))
    if not hits:
        return b.full(shape=x.shape, value=False, dtype="bool")
    return hits[0] if len(hits) == 1 else b.logical_or(*hits)


@op("Tan")
def _tan(ctx, node):
    x = ctx.value(node, 0)
    return ctx.b.div(ctx.b.sin(x), ctx.b.cos(x))


@op("Sinh")
def _sinh(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.mul(b.sub(b.exp(x), b.exp(b.neg(x))), 0.5)


@op("Cosh")
def _cosh(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.mul(b.add(b.exp(x), b.exp(b.neg(x))), 0.5)


# -- activations ------------------------------------------------------------------

@op("LeakyRelu")
def _leaky_relu(ctx, node):
    return ctx.b.leaky_relu(ctx.value(node, 0), alpha=ctx.attr(node, "alpha", 0.01))


@op("PRelu")
def _prelu(ctx, node):
    b = ctx.b
    x, slope = ctx.value(node, 0), ctx.value(node, 1)
    return b.where(b.lt(x, _const(b, 0, x)), b.mul(x, slope), x)


@op("Elu")
def _elu(ctx, node):
    return ctx.b.elu(ctx.value(node, 0), alpha=ctx.attr(node, "alpha", 1.0))


@op("Celu")
def _celu(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    alpha = ctx.attr(node, "alpha", 1.0)
    if alpha == 0:
        # x / alpha divides by zero: the spec's result is undefined (onnxruntime and the
        # reference give NaN on part of the input), so refuse rather than produce NaN
        raise FileFormatError(f"{describe(node)}: Celu alpha = {alpha!r} is invalid (the formula divides "
                              "x by alpha; ONNX leaves the result undefined)")
    neg = b.mul(b.sub(b.exp(b.div(b.minimum(x, _const(b, 0, x)), alpha)), 1.0), alpha)
    return b.add(b.maximum(x, _const(b, 0, x)), neg)


@op("Selu")
def _selu(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    alpha = ctx.attr(node, "alpha", 1.67326319217681884765625)
    gamma = ctx.attr(node, "gamma", 1.05070102214813232421875)
    neg = b.mul(b.sub(b.exp(b.minimum(x, _const(b, 0, x))), 1.0), alpha)
    return b.mul(b.where(b.gt(x, _const(b, 0, x)), x, neg), gamma)


@op("ThresholdedRelu")
def _thresholded_relu(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.where(b.gt(x, _const(b, ctx.attr(node, "alpha", 1.0), x)), x, _const(b, 0, x))


@op("HardSigmoid")
def _hard_sigmoid(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    alpha, beta = ctx.attr(node, "alpha", 0.2), ctx.attr(node, "beta", 0.5)
    return b.clip(b.add(b.mul(x, alpha), beta), min=0.0, max=1.0)


def _softplus_of(b, x):
    """log(1 + exp(x)) exactly (ONNX semantics, no threshold), overflow-free."""
    return b.add(b.maximum(x, _const(b, 0, x)), b.log1p(b.exp(b.neg(b.abs(x)))))


@op("Softplus")
def _softplus(ctx, node):
    return _softplus_of(ctx.b, ctx.value(node, 0))


@op("Softsign")
def _softsign(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.div(x, b.add(b.abs(x), 1.0))


@op("Mish")
def _mish(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.mul(x, b.tanh(_softplus_of(b, x)))


@op("Swish")
def _swish(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    alpha = ctx.attr(node, "alpha", 1.0)
    return b.silu(x) if alpha == 1.0 else b.mul(x, b.sigmoid(b.mul(x, alpha)))


@op("Shrink")
def _shrink(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    lambd, bias = ctx.attr(node, "lambd", 0.5), ctx.attr(node, "bias", 0.0)
    if not is_float(x.dtype):
        # ONNX (reference and onnxruntime) compares and subtracts in floating point and
        # casts the result back (3 - 1.54 = 1.46 -> 1); float64 holds every int32 exactly
        xf = b.cast(x, dtype="float64")
        zero = b.const(0.0, "float64")
        y = b.where(b.lt(xf, b.const(-lambd, "float64")), b.add(xf, b.const(bias, "float64")),
                    b.where(b.gt(xf, b.const(lambd, "float64")), b.sub(xf, b.const(bias, "float64")), zero))
        return b.cast(y, dtype=x.dtype)
    lo = b.add(x, _const(b, bias, x))
    hi = b.sub(x, _const(b, bias, x))
    zero = _const(b, 0, x)
    return b.where(b.lt(x, _const(b, -lambd, x)), lo, b.where(b.gt(x, _const(b, lambd, x)), hi, zero))


@op("Gelu")
def _gelu(ctx, node):
    return ctx.b.gelu(ctx.value(node, 0), approximate=ctx.attr(node, "approximate", "none"))


def _coerced_2d(ctx, node, fn, axis):
    """Softmax-family before opset 13: flatten to 2-D around axis, apply on axis 1."""
    b = ctx.b
    x = ctx.value(node, 0)
    axis = norm_axis(axis, x.rank)
    if axis == x.rank - 1:
        return fn(x, -1)
    flat = b.reshape(x, shape=(mul_dims(*x.shape[:axis]) if axis else 1, mul_dims(*x.shape[axis:])))
    return b.reshape(fn(flat, 1), shape=x.shape)


@op("Softmax")
def _softmax(ctx, node):
    if ctx.opset < 13:
        return _coerced_2d(ctx, node, lambda v, a: ctx.b.softmax(v, axis=a), ctx.attr(node, "axis", 1))
    return ctx.b.softmax(ctx.value(node, 0), axis=ctx.attr(node, "axis", -1))


@op("LogSoftmax")
def _log_softmax(ctx, node):
    if ctx.opset < 13:
        return _coerced_2d(ctx, node, lambda v, a: ctx.b.log_softmax(v, axis=a), ctx.attr(node, "axis", 1))
    return ctx.b.log_softmax(ctx.value(node, 0), axis=ctx.attr(node, "axis", -1))


@op("Hardmax")
def _hardmax(ctx, node):
    b = ctx.b

    def hardmax(v, axis):
        axis = norm_axis(axis, v.rank)
        n = _static_dim(node, v.shape[axis], "Hardmax's axis")
        idx = b.argmax(v, axis=axis, keepdims=True)
        iota = b.const(np.arange(n, dtype=np.int64).reshape([n if i == axis else 1 for i in range(v.rank)]),
                       "int64")
        return b.cast(b.eq(idx, iota), dtype=v.dtype)

    if ctx.opset < 13:
        return _coerced_2d(ctx, node, hardmax, ctx.attr(node, "axis", 1))
    return hardmax(ctx.value(node, 0), ctx.attr(node, "axis", -1))


# -- matmul family -------------------------------------------------------------------

@op("MatMul")
def _matmul(ctx, node):
    return ctx.b.matmul(ctx.value(node, 0), ctx.value(node, 1))


@op("Gemm")
def _gemm(ctx, node):
    b = ctx.b
    a, w, c = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    alpha, beta = ctx.attr(node, "alpha", 1.0), ctx.attr(node, "beta", 1.0)
    ta, tb = ctx.attr(node, "transA", 0), ctx.attr(node, "transB", 0)
    if (not ta and tb and alpha == 1.0 and is_float(a.dtype)
            and (c is None or (beta == 1.0 and c.rank == 1 and c.shape[0] == w.shape[0]))):
        return b.linear(a, w) if c is None else b.linear(a, w, c)
    if ta:
        a = b.transpose(a, perm=(1, 0))
    if tb:
        w = b.transpose(w, perm=(1, 0))
    y = b.matmul(a, w)
    if alpha != 1.0:
        y = b.mul(y, _const(b, alpha, y))
    if c is not None and beta != 0.0:
        y = b.add(y, c if beta == 1.0 else b.mul(c, _const(b, beta, c)))
    return y


@op("Einsum")
def _einsum(ctx, node):
    return einsum(ctx.b, node, ctx.attr(node, "equation"), [v for v in ctx.inputs(node)])


def einsum(b, node, equation, operands):
    """Einsum through transpose/reshape/matmul/reduce_sum; a label repeated
    within one operand (a diagonal) is taken with an identity mask first."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        _unsup(node, f"equation {equation!r} names {len(terms)} operands, got {len(operands)}")
    ell = max((v.rank - len(t.replace("...", "")) for t, v in zip(terms, operands) if "..." in t),
              default=0)

    def labels(term, rank=None):
        if "..." not in term:
            return list(term)
        head, tail = term.split("...")
        n = ell if rank is None else rank - len(head) - len(tail)
        return list(head) + [f".{ell - n + i}" for i in range(n)] + list(tail)

    ops = []
    for t, v in zip(terms, operands):
        lab = labels(t, v.rank)
        if len(lab) != v.rank:
            _unsup(node, f"operand {t!r} of {equation!r} does not match rank {v.rank}")
        while len(set(lab)) != len(lab):          # a repeated label: take the diagonal
            rep = next(l_ for l_ in lab if lab.count(l_) > 1)
            p = lab.index(rep)
            q = lab.index(rep, p + 1)
            n = _static_dim(node, v.shape[p], f"einsum diagonal {rep!r}")
            eye = np.eye(n).reshape([n if i in (p, q) else 1 for i in range(v.rank)])
            v = b.reduce_sum(b.mul(v, b.const(eye, v.dtype)), axes=(q,), keepdims=False)
            lab = lab[:q] + lab[q + 1:]
        ops.append((v, lab))
    if arrow:
        out = labels(rhs)
    else:
        counts = {}
        for _, lab in ops:
            for l_ in lab:
                counts[l_] = counts.get(l_, 0) + 1
        out = [f".{i}" for i in range(ell)] + sorted(l_ for l_, n in counts.items()
                                                     if n == 1 and not l_.startswith("."))

    def reduce_unneeded(v, lab, needed):
        drop = [i for i, l_ in enumerate(lab) if l_ not in needed]
        if drop:
            v = b.reduce_sum(v, axes=tuple(drop), keepdims=False)
            lab = [l_ for l_ in lab if l_ in needed]
        return v, lab

    v, lab = ops[0]
    for k in range(1, len(ops)):
        w, lw = ops[k]
        needed = set(out).union(*[set(lab_) for _, lab_ in ops[k + 1:]])
        v, lab = reduce_unneeded(v, lab, needed | set(lw))
        w, lw = reduce_unneeded(w, lw, needed | set(lab))
        batch = [l_ for l_ in lab if l_ in lw and l_ in needed]
        contr = [l_ for l_ in lab if l_ in lw and l_ not in needed]
        a_free = [l_ for l_ in lab if l_ not in lw]
        b_free = [l_ for l_ in lw if l_ not in lab]
        va = _permute(b, v, lab, batch + a_free + contr)
        vb = _permute(b, w, lw, batch + contr + b_free)
        nb = len(batch)
        a_dims = va.shape[nb:nb + len(a_free)]
        b_dims = vb.shape[nb + len(contr):]
        k_dim = mul_dims(*va.shape[nb + len(a_free):]) if contr else 1
        va = b.reshape(va, shape=va.shape[:nb] + (mul_dims(*a_dims) if a_dims else 1, k_dim))
        vb = b.reshape(vb, shape=vb.shape[:nb] + (k_dim, mul_dims(*b_dims) if b_dims else 1))
        prod = b.matmul(va, vb)
        batch_dims = broadcast(va.shape[:nb], vb.shape[:nb])
        v = b.reshape(prod, shape=batch_dims + tuple(a_dims) + tuple(b_dims))
        lab = batch + a_free + b_free
    v, lab = reduce_unneeded(v, lab, set(out))
    if sorted(lab) != sorted(out):
        _unsup(node, f"einsum {equation!r}: output labels {out} do not match the operands")
    return _permute(b, v, lab, out)


def _permute(b, v, lab, order):
    perm = tuple(lab.index(l_) for l_ in order)
    return v if perm == tuple(range(len(perm))) else b.transpose(v, perm=perm)


# -- reductions ---------------------------------------------------------------------

def _reduce_axes(ctx, node, attr_until):
    """Axes of a Reduce* node (None = all), whether axes are an attribute
    (opset < attr_until) or the second input."""
    if ctx.opset < attr_until:
        axes = ctx.attr(node, "axes")
    else:
        axes = _static_ints(ctx, node, 1, "axes") if len(node.input) > 1 and node.input[1] else None
    if axes is not None and len(axes) == 0:
        axes = None
    if axes is None and ctx.attr(node, "noop_with_empty_axes", 0):
        return ()
    return tuple(axes) if axes is not None else None


def _reduction(build, attr_until=18, empty=None):
    """Reduce* handler. `empty(dtype)` is the value of a reduction over no
    elements where the IR kernel would have none (max, min, logsumexp)."""
    def handler(ctx, node):
        b = ctx.b
        x = ctx.value(node, 0)
        axes = _reduce_axes(ctx, node, attr_until)
        keep = bool(ctx.attr(node, "keepdims", 1))
        if axes == ():
            return build(b, x, (), keep, identity=True)
        if empty is not None:
            red = range(x.rank) if axes is None else [norm_axis(a, x.rank) for a in axes]
            if any(x.shape[a] == 0 for a in red):
                from irtool.ir.ops.infer import reduce_shape
                shape = reduce_shape(x.shape, {"axes": axes, "keepdims": keep})
                return b.full(shape=shape, value=empty(x.dtype), dtype=x.dtype)
        return build(b, x, axes, keep, identity=False)
    return handler


def _lowest(dtype):
    if dtype == "bool":
        return False
    return -np.inf if is_float(dtype) else np.iinfo(np_dtype(dtype)).min.item()


def _highest(dtype):
    if dtype == "bool":
        return True
    return np.inf if is_float(dtype) else np.iinfo(np_dtype(dtype)).max.item()


def _simple_reduce(ir_name):
    def build(b, x, axes, keep, identity):
        if identity:
            return x
        if x.dtype == "bool":        # any/all through uint8
            out = getattr(b, ir_name)(b.cast(x, dtype="uint8"), axes=axes, keepdims=keep)
            return b.cast(out, dtype="bool")
        return getattr(b, ir_name)(x, axes=axes, keepdims=keep)
    return build


OPS["ReduceSum"] = _reduction(_simple_reduce("reduce_sum"), attr_until=13)
OPS["ReduceMax"] = _reduction(_simple_reduce("reduce_max"), empty=_lowest)
OPS["ReduceMin"] = _reduction(_simple_reduce("reduce_min"), empty=_highest)
OPS["ReduceProd"] = _reduction(_simple_reduce("reduce_prod"))


def _mean_build(b, x, axes, keep, identity):
    if identity:
        return x
    if is_float(x.dtype):
        return b.reduce_mean(x, axes=axes, keepdims=keep)
    s = b.reduce_sum(x, axes=axes, keepdims=keep)       # integer mean: truncating division
    n = mul_dims(*[x.shape[i] for i in (range(x.rank) if axes is None else
                                        [norm_axis(a, x.rank) for a in axes])])
    if not isinstance(n, int):
        raise UnsupportedError("integer ReduceMean over symbolic dims is not supported")
    return b.div(s, _const(b, n, s))


OPS["ReduceMean"] = _reduction(_mean_build)


def _l1_build(b, x, axes, keep, identity):
    return b.abs(x) if identity else b.reduce_sum(b.abs(x), axes=axes, keepdims=keep)


def _l2_build(b, x, axes, keep, identity):
    if identity:
        return b.abs(x)
    sq = b.reduce_sum(b.mul(x, x), axes=axes, keepdims=keep)
    if is_float(x.dtype):
        return b.sqrt(sq)
    return b.cast(b.sqrt(b.cast(sq, dtype="float64")), dtype=x.dtype)


def _sum_square_build(b, x, axes, keep, identity):
    return b.mul(x, x) if identity else b.reduce_sum(b.mul(x, x), axes=axes, keepdims=keep)


def _log_sum_build(b, x, axes, keep, identity):
    return b.log(x) if identity else b.log(b.reduce_sum(x, axes=axes, keepdims=keep))


def _log_sum_exp_build(b, x, axes, keep, identity):
    if identity:
        return x
    if is_float(x.dtype):
        return b.logsumexp(x, axes=axes, keepdims=keep)
    return b.cast(b.logsumexp(b.cast(x, dtype="float64"), axes=axes, keepdims=keep), dtype=x.dtype)


OPS["ReduceL1"] = _reduction(_l1_build)
OPS["ReduceL2"] = _reduction(_l2_build)
OPS["ReduceSumSquare"] = _reduction(_sum_square_build)
OPS["ReduceLogSum"] = _reduction(_log_sum_build)
OPS["ReduceLogSumExp"] = _reduction(_log_sum_exp_build, empty=lambda dtype: -np.inf)


def _arg(ir_name):
    def handler(ctx, node):
        b = ctx.b
        x = ctx.value(node, 0)
        axis = norm_axis(ctx.attr(node, "axis", 0), x.rank)
        keep = bool(ctx.attr(node, "keepdims", 1))
        if not ctx.attr(node, "select_last_index", 0):
            return getattr(b, ir_name)(x, axis=axis, keepdims=keep)
        n = _static_dim(node, x.shape[axis], "select_last_index")
        idx = getattr(b, ir_name)(b.flip(x, axes=(axis,)), axis=axis, keepdims=keep)
        return b.sub(_const(b, n - 1, idx), idx)
    return handler


OPS["ArgMax"] = _arg("argmax")
OPS["ArgMin"] = _arg("argmin")


@op("CumSum")
def _cumsum(ctx, node):
    x = ctx.value(node, 0)
    axis = _static_ints(ctx, node, 1, "axis")[0]
    return ctx.b.cumsum(x, axis=axis, exclusive=bool(ctx.attr(node, "exclusive", 0)),
                        reverse=bool(ctx.attr(node, "reverse", 0)))


@op("TopK")
def _topk(ctx, node):
    x = ctx.value(node, 0)
    k = ctx.attr(node, "k") if ctx.opset < 10 else _static_ints(ctx, node, 1, "K")[0]
    values, indices = ctx.b.topk(x, k=int(k), axis=ctx.attr(node, "axis", -1),
                                 largest=bool(ctx.attr(node, "largest", 1)))
    return [values, indices]


# -- shape ops -----------------------------------------------------------------------

@op("Reshape")
def _reshape(ctx, node):
    x = ctx.value(node, 0)
    shape = ctx.attr(node, "shape") if ctx.opset < 5 else ctx.ints_input(node, 1, "shape")
    allowzero = ctx.attr(node, "allowzero", 0)
    shape = list(shape)
    if not allowzero:
        for i, d in enumerate(shape):
            if d == 0:
                if i >= x.rank:
                    _unsup(node, f"shape {tuple(shape)} copies dim {i} of a rank-{x.rank} input")
                shape[i] = x.shape[i]
    shape = tuple(shape)
    same = get_op("reshape").infer([x.type], Attrs({"shape": shape}))[0].shape == x.shape
    return x if same else ctx.b.reshape(x, shape=shape)


@op("Flatten")
def _flatten(ctx, node):
    x = ctx.value(node, 0)
    axis = ctx.attr(node, "axis", 1)
    axis = axis + x.rank if axis < 0 else axis
    shape = (mul_dims(*x.shape[:axis]) if axis else 1, mul_dims(*x.shape[axis:]) if axis < x.rank else 1)
    return ctx.b.reshape(x, shape=shape)


@op("Transpose")
def _transpose(ctx, node):
    x = ctx.value(node, 0)
    perm = ctx.attr(node, "perm")
    perm = tuple(reversed(range(x.rank))) if perm is None else tuple(perm)
    return x if perm == tuple(range(x.rank)) else ctx.b.transpose(x, perm=perm)


def _axes_arg(ctx, node, since):
    if ctx.opset < since:
        return ctx.attr(node, "axes")
    return _static_ints(ctx, node, 1, "axes") if len(node.input) > 1 and node.input[1] else None


@op("Squeeze")
def _squeeze(ctx, node):
    x = ctx.value(node, 0)
    axes = _axes_arg(ctx, node, 13)
    if axes is not None and len(axes) == 0:
        axes = None
    if axes is None and any(isinstance(d, str) for d in x.shape):
        _unsup(node, f"Squeeze without axes on {x.type} (symbolic dims might be 1)")
    return ctx.b.squeeze(x, axes=tuple(axes) if axes is not None else None)


@op("Unsqueeze")
def _unsqueeze(ctx, node):
    axes = _axes_arg(ctx, node, 13)
    return ctx.b.unsqueeze(ctx.value(node, 0), axes=tuple(axes))


@op("Concat")
def _concat(ctx, node):
    vals = [v for v in ctx.inputs(node) if v is not None]
    axis = ctx.attr(node, "axis", 0)
    if len(vals) == 1:
        return vals[0]
    return ctx.b.concat(vals, axis=axis)


@op("Split")
def _split(ctx, node):
    x = ctx.value(node, 0)
    axis = norm_axis(ctx.attr(node, "axis", 0), x.rank)
    n = len(node.output)
    if ctx.opset < 13:
        sizes = ctx.attr(node, "split")
    else:
        sizes = ctx.ints_input(node, 1, "split") if len(node.input) > 1 and node.input[1] else None
    if sizes is None:
        d = _static_dim(node, x.shape[axis], "Split without sizes")
        parts = ctx.attr(node, "num_outputs", n) if ctx.opset >= 18 else n
        chunk = -(-d // parts)
        sizes = [chunk] * (d // chunk) + ([d % chunk] if d % chunk else [])
        if len(sizes) != n:
            _unsup(node, f"cannot split size {d} into {n} outputs")
    out = ctx.b.split(x, sizes=tuple(sizes), axis=axis)
    return list(out) if isinstance(out, tuple) else [out]


@op("Slice")
def _slice(ctx, node):
    x = ctx.value(node, 0)
    if ctx.opset < 10:
        starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
        axes, steps = ctx.attr(node, "axes"), None
    else:
        starts = ctx.ints_input(node, 1, "starts")      # may hold symbolic dims
        ends = ctx.ints_input(node, 2, "ends")
        axes = _static_ints(ctx, node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
        steps = _static_ints(ctx, node, 4, "steps") if len(node.input) > 4 and node.input[4] else None
    clamp = lambda v: v if isinstance(v, str) else max(min(int(v), INT64_MAX), -INT64_MAX - 1)  # noqa: E731
    return ctx.b.slice(x, starts=tuple(map(clamp, starts)), ends=tuple(map(clamp, ends)),
                       axes=tuple(axes) if axes is not None else None,
                       steps=tuple(steps) if steps is not None else None)


@op("Pad")
def _pad(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    mode = ctx.attr(node, "mode", "constant")
    if ctx.opset < 11:
        pads, value = ctx.attr(node, "pads") or ctx.attr(node, "paddings"), ctx.attr(node, "value", 0.0)
    else:
        pads = _static_ints(ctx, node, 1, "pads")
        value = ctx.scalar_input(node, 2, "constant_value") if len(node.input) > 2 and node.input[2] else 0
        axes = _static_ints(ctx, node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
        if axes is not None:
            full = [0] * (2 * x.rank)
            for j, a in enumerate(axes):
                a = norm_axis(a, x.rank)
                full[a], full[x.rank + a] = pads[j], pads[len(axes) + j]
            pads = full
    if mode == "wrap":
        return _wrap_pad(b, node, x, tuple(int(p) for p in pads))
    if mode not in ("constant", "reflect", "edge"):
        _unsup(node, f"Pad mode {mode!r} is not supported (constant, reflect, edge, wrap)")
    if isinstance(value, float) and is_int(x.dtype):
        value = int(value)
    if x.dtype == "bool":
        value = bool(value)
    return b.pad(x, pads=tuple(int(p) for p in pads), mode=mode,
                 value=value if mode == "constant" else None)


def _wrap_pad(b, node, x, pads):
    r = x.rank
    crop = tuple(min(p, 0) for p in pads)
    if any(crop):
        x = b.pad(x, pads=crop)
    for a in range(r):
        lo, hi = max(pads[a], 0), max(pads[r + a], 0)
        if not lo and not hi:
            continue
        n = _static_dim(node, x.shape[a], "wrap padding")
        if lo > n or hi > n:
            _unsup(node, f"wrap padding by more than the axis size ({n})")
        parts = []
        if lo:
            parts.append(b.slice(x, starts=(n - lo,), ends=(n,), axes=(a,)))
        parts.append(x)
        if hi:
            parts.append(b.slice(x, starts=(0,), ends=(hi,), axes=(a,)))
        x = b.concat(parts, axis=a)
    return x


@op("Gather")
def _gather(ctx, node):
    x, idx = ctx.value(node, 0), ctx.value(node, 1)
    axis = ctx.attr(node, "axis", 0)
    return ctx.b.gather(x, idx, axis=axis)


@op("GatherElements")
def _gather_elements(ctx, node):
    b = ctx.b
    x, idx = ctx.value(node, 0), ctx.value(node, 1)
    axis = norm_axis(ctx.attr(node, "axis", 0), x.rank)
    return b.gather_elements(x, _wrap_indices(b, node, idx, x.shape[axis]), axis=axis)


def _wrap_indices(b, node, idx, n):
    """Negative indices count from the end of an axis of size n."""
    if not isinstance(n, int):
        return idx
    return b.where(b.lt(idx, _const(b, 0, idx)), b.add(idx, _const(b, n, idx)), idx)


@op("ScatterElements", "Scatter")
def _scatter_elements(ctx, node):
    b = ctx.b
    x, idx, upd = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    axis = norm_axis(ctx.attr(node, "axis", 0), x.rank)
    idx = _wrap_indices(b, node, idx, x.shape[axis])
    reduction = ctx.attr(node, "reduction", "none")
    if reduction == "add":
        return b.scatter_add(x, idx, upd, axis=axis)
    if reduction in ("mul", "max", "min"):
        return _scatter_reduce(b, node, x, idx, upd, axis, reduction)
    if reduction != "none":
        _unsup(node, f"ScatterElements reduction {reduction!r} is not supported")
    # overwrite: where any update lands, take the scattered updates (indices are unique per ONNX)
    zeros = b.full(shape=x.shape, value=0, dtype=x.dtype if x.dtype != "bool" else "int64")
    upd_n = upd if x.dtype != "bool" else b.cast(upd, dtype="int64")
    hit = b.scatter_add(b.full(shape=x.shape, value=0, dtype="int64"), idx,
                        b.full(shape=idx.shape, value=1, dtype="int64"), axis=axis)
    scattered = b.scatter_add(zeros, idx, upd_n, axis=axis)
    if x.dtype == "bool":
        scattered = b.cast(scattered, dtype="bool")
    return b.where(b.gt(hit, b.const(0, "int64")), scattered, x)


def _scatter_reduce(b, node, x, idx, upd, axis, reduction):
    """ScatterElements with mul/max/min: one-hot over the target axis, reduce
    the updates landing on each target, combine where any landed."""
    r = x.rank
    n = _static_dim(node, x.shape[axis], "ScatterElements reduction")
    ident = {"mul": 1, "max": _lowest(x.dtype), "min": _highest(x.dtype)}[reduction]
    iota = b.const(np.arange(n, dtype=np.int64).reshape([n if i == axis + 1 else 1 for i in range(r + 1)]),
                   "int64")
    onehot = b.eq(b.unsqueeze(b.cast(idx, dtype="int64") if idx.dtype != "int64" else idx, axes=(axis + 1,)),
                  iota)
    vals = b.where(onehot, b.unsqueeze(upd, axes=(axis + 1,)), b.const(ident, x.dtype))
    red = {"mul": b.reduce_prod, "max": b.reduce_max, "min": b.reduce_min}[reduction](
        vals, axes=(axis,), keepdims=False)
    hits = b.reduce_sum(b.cast(onehot, dtype="int64"), axes=(axis,), keepdims=False)
    pads = [0] * r + [_static_dim(node, xd, "ScatterElements") - _static_dim(node, rd, "ScatterElements")
                      for xd, rd in zip(x.shape, red.shape)]
    if any(pads):
        red = b.pad(red, pads=tuple(pads), value=ident)
        hits = b.pad(hits, pads=tuple(pads), value=0)
    combined = {"mul": b.mul, "max": b.maximum, "min": b.minimum}[reduction](x, red)
    return b.where(b.gt(hits, b.const(0, "int64")), combined, x)


@op("Expand")
def _expand(ctx, node):
    x = ctx.value(node, 0)
    shape = ctx.ints_input(node, 1, "shape")
    out = broadcast(x.shape, tuple(shape))
    return x if out == x.shape else ctx.b.expand(x, shape=out)


@op("Tile")
def _tile(ctx, node):
    return ctx.b.tile(ctx.value(node, 0), repeats=_static_ints(ctx, node, 1, "repeats"))


@op("Shape")
def _shape(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end")
    r = x.rank
    start = min(max(start + r if start < 0 else start, 0), r)
    end = r if end is None else min(max(end + r if end < 0 else end, 0), r)
    dims = x.shape[start:end] if end > start else ()
    if all(isinstance(d, int) for d in dims):
        return b.const(np.array(dims, dtype=np.int64), "int64")
    s = b.shape_of(x)
    return s if (start, end) == (0, r) else b.slice(s, starts=(start,), ends=(end,))


@op("Size")
def _size(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    n = mul_dims(*x.shape) if x.shape else 1
    if isinstance(n, int):
        return b.const(np.array(n, dtype=np.int64), "int64")
    return b.reduce_prod(b.shape_of(x), axes=None, keepdims=False)


@op("ConstantOfShape")
def _constant_of_shape(ctx, node):
    shape = ctx.ints_input(node, 0, "shape")
    value = ctx.attr(node, "value")
    if value is None:
        value = np.zeros((1,), np.float32)
    dtype = check_dtype(value.dtype)
    v = value.reshape(-1)[0].item()
    if all(isinstance(d, int) for d in shape):
        return ctx.b.const(np.full(shape, v, dtype=value.dtype), dtype)
    return ctx.b.full(shape=shape, value=v, dtype=dtype)


@op("Range")
def _range(ctx, node):
    start = ctx.scalar_input(node, 0, "start")
    limit = ctx.scalar_input(node, 1, "limit")
    delta = ctx.scalar_input(node, 2, "delta")
    dtype = ctx.value(node, 0).dtype
    num = float if is_float(dtype) else int
    if isinstance(delta, str):
        _unsup(node, f"Range with a symbolic step {delta!r}")
    # start/limit may be symbolic dims (Range(0, Shape(x)[1], 1)); the IR's arange takes those
    start, limit, delta = (v if isinstance(v, str) else num(v) for v in (start, limit, delta))
    return ctx.b.arange(start=start, stop=limit, step=delta, dtype=dtype)


@op("OneHot")
def _one_hot(ctx, node):
    b = ctx.b
    idx, values = ctx.value(node, 0), ctx.value(node, 2)
    depth = ctx.scalar_input(node, 1, "depth")
    depth = int(depth)
    axis = ctx.attr(node, "axis", -1)
    rank = idx.rank + 1
    axis = norm_axis(axis, rank)
    if is_float(idx.dtype):
        idx = b.cast(b.floor(idx), dtype="int64")
    elif idx.dtype != "int64":
        idx = b.cast(idx, dtype="int64")
    idx = b.where(b.lt(idx, b.const(0, "int64")), b.add(idx, b.const(depth, "int64")), idx)
    idx = b.unsqueeze(idx, axes=(axis,))
    iota = b.const(np.arange(depth, dtype=np.int64).reshape([depth if i == axis else 1 for i in range(rank)]),
                   "int64")
    hot = b.eq(idx, iota)
    off = b.gather(values, b.const(np.array(0, np.int64), "int64"), axis=0)
    on = b.gather(values, b.const(np.array(1, np.int64), "int64"), axis=0)
    return b.where(hot, on, off)


@op("Trilu")
def _trilu(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    k = ctx.scalar_input(node, 1, "k") if len(node.input) > 1 and node.input[1] else 0
    n = _static_dim(node, x.shape[-2], "Trilu")
    m = _static_dim(node, x.shape[-1], "Trilu")
    upper = ctx.attr(node, "upper", 1)
    mask = np.triu(np.ones((n, m), bool), int(k)) if upper else np.tril(np.ones((n, m), bool), int(k))
    return b.where(b.const(mask, "bool"), x, b.const(np.zeros((), dtype=_np(x)), x.dtype))


@op("DepthToSpace")
def _depth_to_space(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    bs = ctx.attr(node, "blocksize")
    n, c, h, w = x.shape
    c2 = _static_dim(node, c, "DepthToSpace channels") // (bs * bs)
    if ctx.attr(node, "mode", "DCR") == "DCR":
        t = b.reshape(x, shape=(n, bs, bs, c2, h, w))
        t = b.transpose(t, perm=(0, 3, 4, 1, 5, 2))
    else:
        t = b.reshape(x, shape=(n, c2, bs, bs, h, w))
        t = b.transpose(t, perm=(0, 1, 4, 2, 5, 3))
    return b.reshape(t, shape=(n, c2, mul_dims(h, bs), mul_dims(w, bs)))


@op("SpaceToDepth")
def _space_to_depth(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    bs = ctx.attr(node, "blocksize")
    n, c, h, w = x.shape
    h2 = _static_dim(node, h, "SpaceToDepth height") // bs
    w2 = _static_dim(node, w, "SpaceToDepth width") // bs
    t = b.reshape(x, shape=(n, c, h2, bs, w2, bs))
    if ctx.attr(node, "mode", "DCR") == "CRD":
        t = b.transpose(t, perm=(0, 1, 3, 5, 2, 4))
    else:
        t = b.transpose(t, perm=(0, 3, 5, 1, 2, 4))
    return b.reshape(t, shape=(n, mul_dims(c, bs * bs), h2, w2))


# -- normalisation -------------------------------------------------------------------

def _per_channel(b, p, rank):
    return b.unsqueeze(p, axes=tuple(range(1, rank - 1))) if rank > 2 else p


@op("BatchNormalization")
def _batch_norm(ctx, node):
    b = ctx.b
    x, w, bias, mean, var = (ctx.value(node, i) for i in range(5))
    eps = ctx.attr(node, "epsilon", 1e-5)
    training = ctx.attr(node, "training_mode", 0) if ctx.opset >= 14 else 0
    if not training:
        outs = [b.batch_norm(x, w, bias, mean, var, eps=eps)]
        return outs + [None] * (len(node.output) - 1)
    momentum = ctx.attr(node, "momentum", 0.9)
    axes = (0,) + tuple(range(2, x.rank))
    bmean = b.reduce_mean(x, axes=axes, keepdims=False)
    xc = b.sub(x, _per_channel(b, bmean, x.rank))
    bvar = b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=False)
    y = b.add(b.mul(b.mul(xc, _per_channel(b, b.rsqrt(b.add(bvar, eps)), x.rank)),
                    _per_channel(b, w, x.rank)), _per_channel(b, bias, x.rank))
    run_mean = b.add(b.mul(mean, momentum), b.mul(bmean, 1.0 - momentum))
    run_var = b.add(b.mul(var, momentum), b.mul(bvar, 1.0 - momentum))
    return [y, run_mean, run_var]


@op("InstanceNormalization")
def _instance_norm(ctx, node):
    b = ctx.b
    x, scale, bias = (ctx.value(node, i) for i in range(3))
    eps = ctx.attr(node, "epsilon", 1e-5)
    axes = tuple(range(2, x.rank))
    xc = b.sub(x, b.reduce_mean(x, axes=axes, keepdims=True))
    var = b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=True)
    y = b.mul(xc, b.rsqrt(b.add(var, eps)))
    return b.add(b.mul(y, _per_channel(b, scale, x.rank)), _per_channel(b, bias, x.rank))


@op("LayerNormalization")
def _layer_norm(ctx, node):
    b = ctx.b
    x, w, bias = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    axis = norm_axis(ctx.attr(node, "axis", -1), x.rank)
    eps = ctx.attr(node, "epsilon", 1e-5)
    norm = x.shape[axis:]
    want_stats = len(node.output) > 1 and any(node.output[1:])
    if not want_stats and w.shape == norm and (bias is None or bias.shape == norm):
        return b.layer_norm(*([x, w] + ([bias] if bias is not None else [])), axis=axis, eps=eps)
    axes = tuple(range(axis, x.rank))
    mean = b.reduce_mean(x, axes=axes, keepdims=True)
    xc = b.sub(x, mean)
    inv = b.rsqrt(b.add(b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=True), eps))
    y = b.mul(b.mul(xc, inv), w)
    if bias is not None:
        y = b.add(y, bias)
    return [y, mean, inv]


@op("GroupNormalization")
def _group_norm(ctx, node):
    b = ctx.b
    x, scale, bias = (ctx.value(node, i) for i in range(3))
    groups = ctx.attr(node, "num_groups")
    eps = ctx.attr(node, "epsilon", 1e-5)
    c = _static_dim(node, x.shape[1], "GroupNormalization channels")
    if scale.shape == (groups,) and groups != c:          # opset 18: one scale per group
        rep = c // groups
        scale = b.reshape(b.expand(b.reshape(scale, shape=(groups, 1)), shape=(groups, rep)), shape=(c,))
        bias = b.reshape(b.expand(b.reshape(bias, shape=(groups, 1)), shape=(groups, rep)), shape=(c,))
    return b.group_norm(x, scale, bias, groups=groups, eps=eps)


@op("LRN")
def _lrn(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    size = ctx.attr(node, "size")
    alpha, beta, bias = ctx.attr(node, "alpha", 1e-4), ctx.attr(node, "beta", 0.75), ctx.attr(node, "bias", 1.0)
    sq = b.mul(x, x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    pads = [0] * (2 * x.rank)
    pads[1], pads[x.rank + 1] = lo, hi
    padded = b.pad(sq, pads=tuple(pads))
    total = None
    for i in range(size):
        end = i - (size - 1)
        part = b.slice(padded, starts=(i,), ends=(end if end < 0 else INT64_MAX,), axes=(1,))
        total = part if total is None else b.add(total, part)
    denom = b.pow(b.add(b.mul(total, alpha / size), bias), _const(b, beta, x))
    return b.div(x, denom)


@op("MeanVarianceNormalization")
def _mvn(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    axes = tuple(ctx.attr(node, "axes", (0, 2, 3)))
    xc = b.sub(x, b.reduce_mean(x, axes=axes, keepdims=True))
    var = b.reduce_mean(b.mul(xc, xc), axes=axes, keepdims=True)
    return b.div(xc, b.add(b.sqrt(var), 1e-9))


# -- global pools --------------------------------------------------------------------

@op("GlobalAveragePool")
def _global_avg(ctx, node):
    x = ctx.value(node, 0)
    return ctx.b.reduce_mean(x, axes=tuple(range(2, x.rank)), keepdims=True)


@op("GlobalMaxPool")
def _global_max(ctx, node):
    x = ctx.value(node, 0)
    return ctx.b.reduce_max(x, axes=tuple(range(2, x.rank)), keepdims=True)


# -- convolution and pooling ----------------------------------------------------------

def _spatial(node, x, what):
    if not 3 <= x.rank <= 5:
        _unsup(node, f"{what} needs (N, C, *spatial) with 1 to 3 spatial dims, got {x.type}")
    return tuple(_static_dim(node, d, f"{what}'s spatial dims") for d in x.shape[2:])


def _auto_pads(ctx, node, sizes, kernel, strides, dilations):
    """Explicit (begins..., ends...) pads for the node's auto_pad/pads attrs."""
    nd = len(sizes)
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = ctx.attr(node, "pads")
        return tuple(pads) if pads is not None else (0,) * (2 * nd)
    if auto == "VALID":
        return (0,) * (2 * nd)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        _unsup(node, f"auto_pad {auto!r} is not supported")
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return tuple(begins + ends)


@op("Conv")
def _conv(ctx, node):
    x, w, bias = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    sizes = _spatial(node, x, "Conv")
    nd = len(sizes)
    kernel = tuple(_static_dim(node, d, "Conv kernel") for d in w.shape[2:])
    strides = tuple(ctx.attr(node, "strides", (1,) * nd))
    dilations = tuple(ctx.attr(node, "dilations", (1,) * nd))
    pads = _auto_pads(ctx, node, sizes, kernel, strides, dilations)
    args = [x, w] + ([bias] if bias is not None else [])
    return ctx.b.conv(*args, strides=strides, pads=pads, dilations=dilations,
                      groups=ctx.attr(node, "group", 1))


@op("ConvTranspose")
def _conv_transpose(ctx, node):
    x, w, bias = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    sizes = _spatial(node, x, "ConvTranspose")
    nd = len(sizes)
    kernel = tuple(_static_dim(node, d, "ConvTranspose kernel") for d in w.shape[2:])
    strides = tuple(ctx.attr(node, "strides", (1,) * nd))
    dilations = tuple(ctx.attr(node, "dilations", (1,) * nd))
    outpad = list(ctx.attr(node, "output_padding", (0,) * nd))
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    out_shape = ctx.attr(node, "output_shape")
    pads = ctx.attr(node, "pads")
    if out_shape is not None or (auto in ("SAME_UPPER", "SAME_LOWER") and pads is None):
        if out_shape is None:
            out_shape = tuple(n * s for n, s in zip(sizes, strides))
        out_shape = tuple(out_shape)[-nd:]
        begins, ends = [], []
        for a in range(nd):
            total = (strides[a] * (sizes[a] - 1) + outpad[a] + (kernel[a] - 1) * dilations[a] + 1
                     - out_shape[a])
            if total < 0:                  # output larger than the full result: grow output_padding
                outpad[a] -= total
                total = 0
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        pads = tuple(begins + ends)
    elif pads is None or auto == "VALID":
        pads = (0,) * (2 * nd)
    args = [x, w] + ([bias] if bias is not None else [])
    return ctx.b.conv_transpose(*args, strides=strides, pads=tuple(pads), dilations=dilations,
                                groups=ctx.attr(node, "group", 1), output_padding=tuple(outpad))


def _pool_attrs(ctx, node, x, what):
    sizes = _spatial(node, x, what)
    nd = len(sizes)
    kernel = tuple(ctx.attr(node, "kernel_shape"))
    strides = tuple(ctx.attr(node, "strides", (1,) * nd))
    dilations = tuple(ctx.attr(node, "dilations", (1,) * nd))
    pads = _auto_pads(ctx, node, sizes, kernel, strides, dilations)
    return kernel, strides, pads, dilations


def _float_io(b, x, fn):
    """Run fn on a float view of x (integer pooling), casting back."""
    if is_float(x.dtype):
        return fn(x)
    return b.cast(fn(b.cast(x, dtype="float64" if x.dtype in ("int32", "int64") else "float32")),
                  dtype=x.dtype)


@op("MaxPool")
def _max_pool(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    kernel, strides, pads, dilations = _pool_attrs(ctx, node, x, "MaxPool")
    attrs = dict(kernel=kernel, strides=strides, pads=pads, dilations=dilations,
                 ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)))
    y = _float_io(b, x, lambda v: b.max_pool(v, **attrs))
    if len(node.output) < 2 or not node.output[1]:
        return y
    return [y, _max_pool_indices(ctx, node, x, attrs)]


def _max_pool_indices(ctx, node, x, attrs):
    """ONNX MaxPool's Indices: each window's argmax as a flat index into x
    (row-major, or column-major over the spatial dims with storage_order=1),
    read with max_pool_select from a constant tensor of flat indices."""
    b = ctx.b
    shape = tuple(_static_dim(node, d, "MaxPool Indices") for d in x.shape)
    flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if ctx.attr(node, "storage_order", 0):
        n, c = shape[:2]
        spatial = int(np.prod(shape[2:]))
        col = np.arange(spatial).reshape(shape[2:][::-1]).T        # column-major positions
        flat = (np.arange(n * c).reshape(n, c, *([1] * len(shape[2:]))) * spatial + col).astype(np.int64)
    exact = {"float64": 2 ** 53, "float32": 2 ** 24}.get(x.dtype, 0)
    if flat.size > exact:
        _unsup(node, f"MaxPool Indices of a {x.dtype} input with {flat.size} elements")
    t = b.const(flat.astype(_np(x)), x.dtype)
    return b.cast(b.max_pool_select(x, t, **attrs), dtype="int64")


@op("AveragePool")
def _avg_pool(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    kernel, strides, pads, dilations = _pool_attrs(ctx, node, x, "AveragePool")
    ceil_mode = bool(ctx.attr(node, "ceil_mode", 0))
    include = bool(ctx.attr(node, "count_include_pad", 0))
    if any(d != 1 for d in dilations):
        return _float_io(b, x, lambda v: _dilated_avg_pool(b, v, kernel, strides, pads, dilations,
                                                           ceil_mode, include))
    return _float_io(b, x, lambda v: b.avg_pool(
        v, kernel=kernel, strides=strides, pads=pads, ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)),
        count_include_pad=bool(ctx.attr(node, "count_include_pad", 0))))


def _dilated_avg_pool(b, x, kernel, strides, pads, dilations, ceil_mode, include_pad):
    """Average pooling with dilations: window sums by a ones-kernel conv on
    (N*C, 1, *S), divided by each window's element count (torch rules: the
    padding counts when include_pad, windows past the padded end never)."""
    from irtool.ir.ops.conv import pool_out
    sizes = x.shape[2:]
    nd = len(sizes)
    extra = []
    for a in range(nd):
        want = pool_out(sizes[a], kernel[a], strides[a], pads[a], pads[nd + a], dilations[a], ceil_mode)
        span = (want - 1) * strides[a] + dilations[a] * (kernel[a] - 1) + 1
        extra.append(max(0, span - (sizes[a] + pads[a] + pads[nd + a])))
    conv_pads = tuple(pads[:nd]) + tuple(pads[nd + a] + extra[a] for a in range(nd))
    flat = b.reshape(x, shape=(mul_dims(x.shape[0], x.shape[1]), 1) + tuple(sizes))
    ones = b.const(np.ones((1, 1) + tuple(kernel)), x.dtype)
    sums = b.conv(flat, ones, strides=strides, pads=conv_pads, dilations=dilations)
    mask = np.ones((1, 1) + tuple(sizes))
    if include_pad:
        mask = np.pad(mask, [(0, 0), (0, 0)] + [(pads[a], pads[nd + a]) for a in range(nd)], constant_values=1)
        mpads = [0] * nd + list(extra)
    else:
        mpads = list(conv_pads)
    counts = _np_conv_ones(mask[0, 0], kernel, strides, mpads, dilations)
    out = b.div(sums, b.const(counts.reshape((1, 1) + counts.shape), x.dtype))
    return b.reshape(out, shape=x.shape[:2] + out.shape[2:])


def _np_conv_ones(mask, kernel, strides, pads, dilations):
    """Window sums of a small static 0/1 mask (the pooling divisors)."""
    nd = mask.ndim
    m = np.pad(mask, [(pads[a], pads[nd + a]) for a in range(nd)])
    outs = [(m.shape[a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(nd)]
    res = np.zeros(outs)
    for k in np.ndindex(*kernel):
        sl = tuple(slice(k[a] * dilations[a], k[a] * dilations[a] + (outs[a] - 1) * strides[a] + 1, strides[a])
                   for a in range(nd))
        res += m[sl]
    return res


# -- resize ---------------------------------------------------------------------------

def _nearest_coeffs(ratio, mode):
    if float(ratio).is_integer():
        return np.array([0.0, 1.0])
    if mode == "round_prefer_floor":
        return np.array([ratio <= 0.5, ratio > 0.5], dtype=np.float64)
    if mode == "round_prefer_ceil":
        return np.array([ratio < 0.5, ratio >= 0.5], dtype=np.float64)
    if mode == "floor":
        return np.array([1.0, 0.0])
    if mode == "ceil":
        return np.array([0.0, 1.0])
    raise UnsupportedError(f"nearest_mode {mode!r}")


def _cubic_coeffs(ratio, scale, A, antialias):
    if antialias:
        scale = min(scale, 1.0)

        def coeff(x):
            x = abs(x)
            if x <= 1:
                return (A + 2) * x ** 3 - (A + 3) * x ** 2 + 1
            if x < 2:
                return A * x ** 3 - 5 * A * x ** 2 + 8 * A * x - 4 * A
            return 0.0
        start = int(np.floor(-2 / scale) + 1)
        c = np.array([coeff(scale * (i - ratio)) for i in range(start, 2 - start)])
        return c / c.sum()
    r = ratio
    return np.array([((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A,
                     ((A + 2) * r - (A + 3)) * r * r + 1,
                     ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1,
                     ((A * ((1 - r) + 1) - 5 * A) * ((1 - r) + 1) + 8 * A) * ((1 - r) + 1) - 4 * A])


def _linear_coeffs(ratio, scale, antialias):
    if antialias:
        scale = min(scale, 1.0)
        start = int(np.floor(-1 / scale) + 1)
        args = (np.arange(start, 2 - start) - ratio) * scale
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()
    return np.array([1 - ratio, ratio])


def resize_axis_matrix(n_in, n_out, scale, ctm, mode, nearest_mode="round_prefer_floor", cubic_a=-0.75,
                       exclude_outside=False, antialias=False, roi=None):
    """ONNX Resize along one axis as (M (n_out, n_in) float64, extrapolated rows
    mask or None), following the ONNX reference implementation."""
    y = np.arange(n_out, dtype=np.float64)
    out_w = scale * n_in
    extrap = None
    if ctm == "align_corners":
        x = np.zeros(n_out) if out_w == 1 else y * (n_in - 1) / (out_w - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        r0, r1 = roi
        x = np.full(n_out, (r1 - r0) * (n_in - 1) / 2) if out_w == 1 else y * (r1 - r0) * (n_in - 1) / (out_w - 1)
        x = x + r0 * (n_in - 1)
        extrap = (x < 0) | (x > n_in - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / out_w)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise UnsupportedError(f"coordinate_transformation_mode {ctm!r}")
    xi = np.floor(x).astype(np.int64)
    ratios = np.where(x == xi, 1.0, x - xi)
    if mode == "nearest":
        coeffs = np.stack([_nearest_coeffs(r, nearest_mode) for r in ratios])
    elif mode == "linear":
        coeffs = np.stack([_linear_coeffs(r, scale, antialias) for r in ratios])
    elif mode == "cubic":
        coeffs = np.stack([_cubic_coeffs(r, scale, cubic_a, antialias) for r in ratios])
    else:
        raise UnsupportedError(f"Resize mode {mode!r}")
    n = coeffs.shape[1]
    pad = int(np.ceil(n / 2))
    xp = x + pad
    pp = np.floor(xp).astype(np.int64)
    frac = xp - pp
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        off = np.where(frac <= 0.5, base, base + 1)
    idx = (pp + off)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= n_in), 0.0, coeffs)
        s = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(s == 0, 1.0, s)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), n), np.clip(idx, 0, n_in - 1).reshape(-1)), coeffs.reshape(-1))
    if extrap is not None:
        m[extrap] = 0.0
        if not extrap.any():
            extrap = None
    return m, extrap


def _contract_axis(b, t, axis, mat):
    """Contract axis of t with constant mat (n_out, n_in)."""
    last = t.rank - 1
    m = b.const(np.ascontiguousarray(mat.T), t.dtype)
    if axis == last:
        return b.matmul(t, m)
    perm = list(range(t.rank))
    perm[axis], perm[last] = last, axis
    return b.transpose(b.matmul(b.transpose(t, perm=tuple(perm)), m), perm=tuple(perm))


def _resize_inputs(ctx, node, x):
    """(scales list or None, sizes list, roi list or None) over all axes."""
    r = x.rank
    shape = list(x.shape)       # symbolic dims are fine on axes the Resize leaves alone

    def scaled(s, n, rounding=int):
        if isinstance(n, str):
            if s != 1.0:
                _unsup(node, f"Resize of symbolic dim {n!r} needs a static size")
            return n
        return rounding(s * n)

    def ratio(o, n):
        if isinstance(n, str) or isinstance(o, str):
            if o != n:
                _unsup(node, f"Resize of symbolic dim {n!r} to {o!r} needs static sizes")
            return 1.0
        return o / n

    if node.op_type == "Upsample" or ctx.opset < 11:
        scales = ctx.attr(node, "scales") if ctx.opset < 9 else \
            [float(s) for s in np.asarray(ctx.const_input(node, 1, "scales")).reshape(-1)]
        return list(scales), [scaled(s, n, lambda v: int(np.floor(v))) for s, n in zip(scales, shape)], \
            None, list(range(r))
    axes = ctx.attr(node, "axes")
    axes = list(range(r)) if axes is None else [norm_axis(a, r) for a in axes]
    roi = ctx.const_input(node, 1, "roi") if len(node.input) > 1 and node.input[1] else None
    roi = None if roi is None or np.asarray(roi).size == 0 else [float(v) for v in np.asarray(roi).reshape(-1)]
    scales = ctx.const_input(node, 2, "scales") if len(node.input) > 2 and node.input[2] else None
    scales = None if scales is None or np.asarray(scales).size == 0 else \
        [float(v) for v in np.asarray(scales).reshape(-1)]
    sizes = ctx.ints_input(node, 3, "sizes") if len(node.input) > 3 and node.input[3] else None
    full_scales = [1.0] * r
    full_sizes = list(shape)
    full_roi = [0.0] * r + [1.0] * r
    if roi is not None:
        for i, a in enumerate(axes):
            full_roi[a], full_roi[r + a] = roi[i], roi[len(axes) + i]
    if sizes is not None:
        for i, a in enumerate(axes):
            full_sizes[a] = sizes[i]
        full_scales = [ratio(o, n) for o, n in zip(full_sizes, shape)]
        policy = ctx.attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(full_scales[a] for a in axes)
            full_scales = [s if a in axes else 1.0 for a in range(r)]
            full_sizes = [scaled(s, shape[a], lambda v: int(v + 0.5)) if a in axes else shape[a]
                          for a in range(r)]
    elif scales is not None:
        for i, a in enumerate(axes):
            full_scales[a] = scales[i]
        full_sizes = [scaled(s, n) for s, n in zip(full_scales, shape)]
    else:
        _unsup(node, "Resize needs scales or sizes")
    return full_scales, full_sizes, full_roi, axes


@op("Resize", "Upsample")
def _resize(ctx, node):
    from irtool.ir.ops.conv import resize_matrix
    b = ctx.b
    x = ctx.value(node, 0)
    scales, sizes, roi, axes = _resize_inputs(ctx, node, x)
    mode = ctx.attr(node, "mode", "nearest")
    if mode in ("bilinear", "trilinear"):
        mode = "linear"
    if node.op_type == "Upsample" or ctx.opset < 11:
        ctm, nearest_mode = "asymmetric", "floor"
        if mode == "linear" and node.op_type == "Resize":
            ctm = "asymmetric"
    else:
        ctm = ctx.attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest_mode = ctx.attr(node, "nearest_mode", "round_prefer_floor")
    kw = dict(nearest_mode=nearest_mode, cubic_a=ctx.attr(node, "cubic_coeff_a", -0.75),
              exclude_outside=bool(ctx.attr(node, "exclude_outside", 0)),
              antialias=bool(ctx.attr(node, "antialias", 0)))
    mats = {}
    for a in range(x.rank):
        n = x.shape[a]
        identity = scales[a] == 1.0 and sizes[a] == n and (roi is None or (roi[a], roi[x.rank + a]) == (0.0, 1.0))
        if identity:
            continue
        mats[a] = resize_axis_matrix(n, sizes[a], scales[a], ctm, mode,
                                     roi=None if roi is None else (roi[a], roi[x.rank + a]), **kw)
    if not mats:
        return x
    # the IR's resize (F.interpolate) when it computes the same thing
    if (3 <= x.rank <= 5 and min(mats) >= 2 and is_float(x.dtype) and mode in ("nearest", "linear")
            and all(e is None for _, e in mats.values())):
        for align in ((False,) if mode == "nearest" else (False, True)):
            if all(np.allclose(m, resize_matrix(x.shape[a], sizes[a], mode, align).T, atol=1e-9)
                   for a, (m, _) in mats.items()):
                return b.resize(x, size=tuple(sizes[2:]), mode=mode, align_corners=align or None)
    y = x
    for a, (m, extrap) in mats.items():
        if mode == "nearest":
            idx = np.argmax(m, axis=1).astype(np.int64)
            y = b.gather(y, b.const(idx, "int64"), axis=a)
            continue
        if not is_float(x.dtype):
            _unsup(node, f"{mode} Resize of {x.dtype} input is not supported")
        y = _contract_axis(b, y, a, m)
        if extrap is not None:
            fill = np.where(extrap, ctx.attr(node, "extrapolation_value", 0.0), 0.0)
            y = b.add(y, b.const(fill.reshape([-1 if i == a else 1 for i in range(x.rank)]), x.dtype))
    return y


# -- attention, losses, RMS norm -----------------------------------------------------

def _neg_inf_bias(b, mask, dtype):
    """Bool mask (True = attend) -> additive 0 / -inf bias of dtype."""
    return b.where(mask, b.const(0, dtype), b.const(-np.inf, dtype))


def _safe_softmax(b, x):
    """Softmax over the last axis that gives 0 (not NaN) for all -inf rows."""
    m = b.reduce_max(x, axes=(-1,), keepdims=True)
    safe = b.where(b.eq(m, _const(b, -np.inf, m)), _const(b, 0, m), m)
    e = b.exp(b.sub(x, safe))
    s = b.reduce_sum(e, axes=(-1,), keepdims=True)
    s = b.where(b.eq(s, _const(b, 0, s)), _const(b, 1, s), s)
    return b.div(e, s)


def _window_allowed(q, kv, offset, left, right):
    """Bool (q, kv) or (batch, q, kv): query i (at i + offset) may see key j."""
    i = np.arange(q).reshape(q, 1)
    j = np.arange(kv).reshape(1, kv)
    off = np.asarray(offset).reshape((-1, 1, 1) if np.ndim(offset) else ())
    diff = i + off - j
    allowed = np.ones(np.shape(diff), dtype=bool)
    if left >= 0:
        allowed &= diff <= left
    if right >= 0:
        allowed &= -diff <= right
    return allowed


@op("Attention")
def _attention(ctx, node):
    """ONNX Attention (opsets 23+), following the ONNX reference: 3-D inputs
    split into heads, past key/value concatenated, additive masks (bool or
    float, padded to the key length), bottom-right causal and sliding-window
    masks, key padding (nonpad_kv_seqlen), grouped-query heads, softcap,
    fully masked rows giving zeros, and the qk_matmul_output modes."""
    b = ctx.b
    q, k, v, mask, past_k, past_v, nonpad = (ctx.value(node, i) for i in range(7))
    dtype = q.dtype
    qh, kvh = ctx.attr(node, "q_num_heads"), ctx.attr(node, "kv_num_heads")
    is3d = q.rank == 3
    if is3d:
        def heads(t, n):
            d = _static_dim(node, t.shape[2], "Attention hidden size") // n
            return b.transpose(b.reshape(t, shape=(t.shape[0], t.shape[1], n, d)), perm=(0, 2, 1, 3))
        q, k, v = heads(q, qh), heads(k, kvh), heads(v, kvh)
    scale = ctx.attr(node, "scale")
    if scale is None:
        scale = 1.0 / math.sqrt(_static_dim(node, q.shape[3], "Attention head size"))
    s = _np(q).type(np.sqrt(scale))
    if past_k is not None:
        k = b.concat([past_k, k], axis=2)
        v = b.concat([past_v, v], axis=2)
    present_k, present_v = k, v
    qlen = _static_dim(node, q.shape[2], "Attention query length")
    kvlen = _static_dim(node, k.shape[2], "Attention key length")
    left, right = ctx.attr(node, "left_window_size", -1), ctx.attr(node, "right_window_size", -1)
    is_causal = bool(ctx.attr(node, "is_causal", 0))
    masked = mask is not None or is_causal or nonpad is not None or left >= 0 or right >= 0

    bias = None                          # additive bias Value, or None (all zeros)
    if mask is not None:
        pad = kvlen - _static_dim(node, mask.shape[-1], "Attention mask length")
        if pad > 0:
            pads = [0] * (2 * mask.rank)
            pads[-1] = pad
            mask = b.pad(mask, pads=tuple(pads), value=False if mask.dtype == "bool" else -np.inf)
        bias = _neg_inf_bias(b, mask, dtype) if mask.dtype == "bool" else mask
    if nonpad is not None and past_k is not None:
        _unsup(node, "nonpad_kv_seqlen together with past key/value")
    offset = None
    if nonpad is not None:
        offset = b.sub(b.cast(nonpad, dtype="int64"), b.const(qlen, "int64"))     # (batch,)
    elif past_k is not None:
        offset = _static_dim(node, past_k.shape[2], "Attention past length")
    else:
        offset = 0

    def frontier(left_, right_):
        """Bias for j <= i + offset (causal) or the window, per the offset kind."""
        if isinstance(offset, int):
            return b.const(np.where(_window_allowed(qlen, kvlen, offset, left_, right_), 0.0, -np.inf), dtype)
        i = b.const(np.arange(qlen).reshape(1, qlen, 1), "int64")
        j = b.const(np.arange(kvlen).reshape(1, 1, kvlen), "int64")
        diff = b.sub(b.add(i, b.reshape(offset, shape=(offset.shape[0], 1, 1))), j)
        allowed = None
        if left_ >= 0:
            allowed = b.le(diff, b.const(left_, "int64"))
        if right_ >= 0:
            r = b.le(b.neg(diff), b.const(right_, "int64"))
            allowed = r if allowed is None else b.logical_and(allowed, r)
        return b.unsqueeze(_neg_inf_bias(b, allowed, dtype), axes=(1,))

    def add_bias(extra):
        nonlocal bias
        bias = extra if bias is None else b.add(bias, extra)

    if is_causal:
        add_bias(frontier(-1, 0))
    if left >= 0 or right >= 0:
        add_bias(frontier(left, right))
    if nonpad is not None:
        valid = b.lt(b.const(np.arange(kvlen).reshape(1, 1, 1, kvlen), "int64"),
                     b.reshape(b.cast(nonpad, dtype="int64"), shape=(nonpad.shape[0], 1, 1, 1)))
        add_bias(_neg_inf_bias(b, valid, dtype))
    nq = q.shape[1] if qh is None else qh
    nk = k.shape[1] if kvh is None else kvh
    if nq != nk:
        reps = _static_dim(node, nq, "Attention heads") // _static_dim(node, nk, "Attention kv heads")

        def repeat(t):
            t5 = b.unsqueeze(t, axes=(2,))
            t5 = b.expand(t5, shape=t.shape[:2] + (reps,) + t.shape[2:])
            return b.reshape(t5, shape=(t.shape[0], mul_dims(t.shape[1], reps)) + t.shape[2:])
        k, v = repeat(k), repeat(v)
    kt = b.transpose(b.mul(k, _const(b, s, k)), perm=(0, 1, 3, 2))
    qk = b.matmul(b.mul(q, _const(b, s, q)), kt)
    softcap = ctx.attr(node, "softcap")
    if softcap is not None and softcap > 0:
        qk = b.mul(b.tanh(b.div(qk, _const(b, softcap, qk))), _const(b, softcap, qk))
    with_bias = qk if bias is None else b.add(qk, bias)
    mode = ctx.attr(node, "qk_matmul_output_mode", 0)
    qk_out = with_bias if mode == 2 else qk
    logits = with_bias
    precision = ctx.attr(node, "softmax_precision")
    if precision is not None:
        logits = b.cast(logits, dtype=ir_dtype(precision, describe(node)))
    if masked:
        p = _safe_softmax(b, logits)
        guard = b.eq(b.reduce_max(bias, axes=(-1,), keepdims=True), _const(b, -np.inf, bias))
        p = b.where(guard, _const(b, 0, p), p)
    else:
        p = b.softmax(logits, axis=-1)
    if mode == 3:
        qk_out = p
    if qk_out.dtype != dtype:
        qk_out = b.cast(qk_out, dtype=dtype)
    if p.dtype != dtype:
        p = b.cast(p, dtype=dtype)
    y = b.matmul(p, v)
    if is3d:
        y = b.transpose(y, perm=(0, 2, 1, 3))
        y = b.reshape(y, shape=(y.shape[0], y.shape[1], mul_dims(y.shape[2], y.shape[3])))
    return [y, present_k, present_v, qk_out]


@op("RMSNormalization")
def _rms_norm(ctx, node):
    b = ctx.b
    x, scale = ctx.value(node, 0), ctx.value(node, 1)
    axis = norm_axis(ctx.attr(node, "axis", -1), x.rank)
    eps = ctx.attr(node, "epsilon", 1e-5)
    stash = ctx.attr(node, "stash_type", 1)
    xs = x
    compute = ir_dtype(stash, describe(node)) if stash else x.dtype
    if compute != x.dtype:
        xs = b.cast(x, dtype=compute)
    ms = b.reduce_mean(b.mul(xs, xs), axes=tuple(range(axis, x.rank)), keepdims=True)
    y = b.mul(xs, b.rsqrt(b.add(ms, _const(b, eps, ms))))
    if compute != x.dtype:
        y = b.cast(y, dtype=x.dtype)
    return b.mul(y, scale if scale.dtype == x.dtype else b.cast(scale, dtype=x.dtype))


def _nll(ctx, node, logp, target, weight):
    """NegativeLogLikelihoodLoss on log-probabilities (N, C, d...)."""
    b = ctx.b
    reduction = ctx.attr(node, "reduction", "mean")
    ignore = ctx.attr(node, "ignore_index")
    t = target if target.dtype == "int64" else b.cast(target, dtype="int64")
    keep = None
    if ignore is not None:
        keep = b.ne(t, b.const(ignore, "int64"))
        t = b.where(keep, t, b.const(0, "int64"))
    picked = b.squeeze(b.gather_elements(logp, b.unsqueeze(t, axes=(1,)), axis=1), axes=(1,))
    w = None
    if weight is not None:
        w = b.gather(weight, t, axis=0)
    if keep is not None:
        k = b.cast(keep, dtype=logp.dtype)
        w = k if w is None else b.mul(w, k)
    loss = b.neg(picked) if w is None else b.neg(b.mul(picked, w))
    if reduction == "none":
        return loss
    total = b.reduce_sum(loss, axes=None, keepdims=False)
    if reduction == "sum":
        return total
    if w is None:
        return b.reduce_mean(loss, axes=None, keepdims=False)
    return b.div(total, b.reduce_sum(w, axes=None, keepdims=False))


@op("NegativeLogLikelihoodLoss")
def _nll_loss(ctx, node):
    return _nll(ctx, node, ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2))


@op("SoftmaxCrossEntropyLoss")
def _softmax_ce(ctx, node):
    logp = ctx.b.log_softmax(ctx.value(node, 0), axis=1)
    return [_nll(ctx, node, logp, ctx.value(node, 1), ctx.value(node, 2)), logp]


# -- more composed ops ------------------------------------------------------------------

@op("LpNormalization")
def _lp_normalization(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    axis = norm_axis(ctx.attr(node, "axis", -1), x.rank)
    p = ctx.attr(node, "p", 2)
    if p == 1:
        norm = b.reduce_sum(b.abs(x), axes=(axis,), keepdims=True)
    elif p == 2:
        norm = b.sqrt(b.reduce_sum(b.mul(x, x), axes=(axis,), keepdims=True))
    else:
        _unsup(node, f"LpNormalization with p={p} (1 or 2)")
    zero = _const(b, 0, x)
    safe = b.where(b.eq(norm, zero), _const(b, 1, x), norm)
    return b.where(b.eq(norm, zero), zero, b.div(x, safe))


@op("LpPool")
def _lp_pool(ctx, node):
    """(sum of |x|^p over each window, padding counting as 0)^(1/p): the
    window sum is kernel size * the pad-inclusive average."""
    b = ctx.b
    x = ctx.value(node, 0)
    p = float(ctx.attr(node, "p", 2))
    kernel, strides, pads, dilations = _pool_attrs(ctx, node, x, "LpPool")
    ceil_mode = bool(ctx.attr(node, "ceil_mode", 0))
    include = True
    powered = b.pow(b.abs(x), _const(b, p, x))
    if any(d != 1 for d in dilations):
        avg = _dilated_avg_pool(b, powered, kernel, strides, pads, dilations, ceil_mode, include)
    else:
        avg = b.avg_pool(powered, kernel=kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                         count_include_pad=include)
    return b.pow(b.mul(avg, _const(b, float(np.prod(kernel)), avg)), _const(b, 1.0 / p, avg))


@op("EyeLike")
def _eye_like(ctx, node):
    x = ctx.value(node, 0)
    n, m = (_static_dim(node, d, "EyeLike") for d in x.shape)
    to = ctx.attr(node, "dtype")
    dtype = x.dtype if to is None else ir_dtype(to, describe(node))
    return ctx.b.const(np.eye(n, m, ctx.attr(node, "k", 0), dtype=np_dtype(dtype)), dtype)


@op("Asinh")
def _asinh(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)          # sign(x) * log(|x| + sqrt(x^2 + 1)), accurate for negative x
    ax = b.abs(x)
    return b.mul(b.sign(x), b.log(b.add(ax, b.sqrt(b.add(b.mul(ax, ax), 1.0)))))


@op("Acosh")
def _acosh(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.log(b.add(x, b.sqrt(b.sub(b.mul(x, x), 1.0))))


@op("Atanh")
def _atanh(ctx, node):
    b = ctx.b
    x = ctx.value(node, 0)
    return b.mul(b.log(b.div(b.add(x, 1.0), b.sub(_const(b, 1, x), x))), 0.5)


def _nd_linear(b, node, data, idx, batch_dims):
    """Flat row numbers of GatherND/ScatterND index tuples: data viewed as
    (rows, *rest) with rows = prod(data.shape[:batch_dims + k])."""
    shape = tuple(_static_dim(node, d, f"{node.op_type} data") for d in data.shape)
    k = _static_dim(node, idx.shape[-1], f"{node.op_type} index depth")
    lead = shape[batch_dims:batch_dims + k]
    idx = idx if idx.dtype == "int64" else b.cast(idx, dtype="int64")
    dims = b.const(np.array(lead, dtype=np.int64), "int64")
    idx = b.where(b.lt(idx, b.const(0, "int64")), b.add(idx, dims), idx)
    strides = np.array([int(np.prod(lead[j + 1:])) for j in range(k)], dtype=np.int64)
    lin = b.reduce_sum(b.mul(idx, b.const(strides, "int64")), axes=(-1,), keepdims=False)
    if batch_dims:
        bshape = shape[:batch_dims]
        nb = int(np.prod(bshape))
        offs = (np.arange(nb, dtype=np.int64) * int(np.prod(lead))).reshape(
            bshape + (1,) * (idx.rank - 1 - batch_dims))
        lin = b.add(lin, b.const(offs, "int64"))
    rows = int(np.prod(shape[:batch_dims + k]))
    flat = b.reshape(data, shape=(rows,) + shape[batch_dims + k:])
    return flat, lin, shape[batch_dims + k:]


@op("GatherND")
def _gather_nd(ctx, node):
    b = ctx.b
    data, idx = ctx.value(node, 0), ctx.value(node, 1)
    flat, lin, _ = _nd_linear(b, node, data, idx, ctx.attr(node, "batch_dims", 0))
    return b.gather(flat, lin, axis=0)


@op("ScatterND")
def _scatter_nd(ctx, node):
    b = ctx.b
    data, idx, upd = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    flat, lin, rest = _nd_linear(b, node, data, idx, 0)
    m = int(np.prod([_static_dim(node, d, "ScatterND indices") for d in lin.shape]))
    lin = b.reshape(lin, shape=(m,) + (1,) * len(rest))
    lin = b.expand(lin, shape=(m,) + tuple(rest)) if rest else lin
    upd = b.reshape(upd, shape=(m,) + tuple(rest))
    reduction = ctx.attr(node, "reduction", "none")
    if reduction == "add":
        out = b.scatter_add(flat, lin, upd, axis=0)
    elif reduction in ("mul", "max", "min"):
        out = _scatter_reduce(b, node, flat, lin, upd, 0, reduction)
    elif reduction == "none":
        hit = b.scatter_add(b.full(shape=flat.shape, value=0, dtype="int64"), lin,
                            b.full(shape=lin.shape, value=1, dtype="int64"), axis=0)
        kind = flat.dtype if flat.dtype != "bool" else "int64"
        vals = b.scatter_add(b.full(shape=flat.shape, value=0, dtype=kind), lin,
                             upd if flat.dtype != "bool" else b.cast(upd, dtype="int64"), axis=0)
        if flat.dtype == "bool":
            vals = b.cast(vals, dtype="bool")
        out = b.where(b.gt(hit, b.const(0, "int64")), vals, flat)
    else:
        _unsup(node, f"ScatterND reduction {reduction!r}")
    return b.reshape(out, shape=data.shape)


_QUANT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767)}


def _quant_param(b, node, p, x, axis, block):
    """Scale / zero point broadcastable against x (per tensor, axis or block)."""
    if p.rank == 0 or (p.rank == 1 and p.shape[0] == 1 and not block):
        return p if p.rank == 0 else b.reshape(p, shape=())
    axis = norm_axis(axis, x.rank)
    if not block:
        return b.reshape(p, shape=tuple(p.shape[0] if i == axis else 1 for i in range(x.rank)))
    n = _static_dim(node, x.shape[axis], "blocked quantization")
    parts = _static_dim(node, p.shape[axis], "blocked quantization")
    e = b.unsqueeze(p, axes=(axis + 1,))
    e = b.expand(e, shape=p.shape[:axis + 1] + (block,) + p.shape[axis + 1:])
    e = b.reshape(e, shape=p.shape[:axis] + (parts * block,) + p.shape[axis + 1:])
    return b.slice(e, starts=(0,), ends=(n,), axes=(axis,)) if parts * block != n else e


@op("DequantizeLinear")
def _dequantize(ctx, node):
    b = ctx.b
    x, scale, zp = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    axis, block = ctx.attr(node, "axis", 1), ctx.attr(node, "block_size", 0)
    out = ctx.attr(node, "output_dtype")
    dtype = ir_dtype(out, describe(node)) if out else scale.dtype
    s = _quant_param(b, node, scale, x, axis, block)
    xf = b.cast(x, dtype="float32")
    if zp is not None:
        xf = b.sub(xf, b.cast(_quant_param(b, node, zp, x, axis, block), dtype="float32"))
    y = b.mul(xf, b.cast(s, dtype="float32") if s.dtype != "float32" else s)
    return y if dtype == "float32" else b.cast(y, dtype=dtype)


@op("QuantizeLinear")
def _quantize(ctx, node):
    b = ctx.b
    x, scale, zp = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    axis, block = ctx.attr(node, "axis", 1), ctx.attr(node, "block_size", 0)
    out = ctx.attr(node, "output_dtype")
    dtype = zp.dtype if zp is not None else (ir_dtype(out, describe(node)) if out else "uint8")
    if dtype not in _QUANT_RANGES:
        _unsup(node, f"quantizing to {dtype} (uint8, int8, int16)")
    precision = ctx.attr(node, "precision")
    work = ir_dtype(precision, describe(node)) if precision else x.dtype
    xs = x if x.dtype == work else b.cast(x, dtype=work)
    s = _quant_param(b, node, scale, x, axis, block)
    q = b.round(b.div(xs, s if s.dtype == work else b.cast(s, dtype=work)))
    if zp is not None:
        q = b.add(q, b.cast(_quant_param(b, node, zp, x, axis, block), dtype=work))
    lo, hi = _QUANT_RANGES[dtype]
    return b.cast(b.clip(q, min=float(lo), max=float(hi)), dtype=dtype)


# -- control flow ----------------------------------------------------------------------

@op("If")
def _if(ctx, node):
    """If with a condition known at import time: the chosen branch is
    imported inline (its initializers as constants); a run-time condition
    is a DynamicInputError like any shape input."""
    from irtool.frontends.onnx_import import DynamicInputError, import_nodes, localize, walk_nodes
    b = ctx.b
    cond = bool(ctx.scalar_input(node, 0, "cond"))
    branch = ctx.attr(node, "then_branch" if cond else "else_branch")
    names = {}
    prefix = f"{node.name or 'If'}/{'then' if cond else 'else'}/"
    for t in branch.initializer:
        names[t.name] = b.fresh(prefix + t.name)
        arr = tensor_to_array(t, ctx.base_dir, f"{describe(node)} branch initializer {t.name!r}")
        ctx.values[names[t.name]] = b.const(arr, check_dtype(arr.dtype))
    body = localize(ctx, branch.node, names, prefix)
    try:
        import_nodes(ctx, body)
    except DynamicInputError as e:       # name the outer values the branch reads
        local = set(names.values())
        outer = [i for n in walk_nodes(body) for i in n.input if i and i not in local]
        raise DynamicInputError(str(e), outer) from None
    return [ctx.values[names.get(o.name, o.name)] for o in branch.output]


LOOP_LIMIT = 10000          # iterations: a Loop that would unroll past this is an UnsupportedError
LOOP_NODE_LIMIT = 200000    # body nodes imported for one Loop, all iterations together,
# and nodes in the whole imported graph while a Loop unrolls (nested Loops multiply)


@op("Loop")
def _loop(ctx, node):
    """Loop unrolled at import time: the trip count M and the condition must
    be known at import time (constants, initializers, static shapes, or a body
    condition that folds to a constant in each iteration, as tf2onnx writes
    for Keras RNNs). Each iteration imports the body inline with the
    iteration number as a constant; loop-carried values flow from one copy to
    the next; scan outputs are stacked along a new axis 0. A run-time M or
    condition (data-dependent termination) is a DynamicInputError naming the
    node."""
    from irtool.frontends.onnx_import import DynamicInputError, import_nodes, localize, walk_nodes
    b = ctx.b
    body = ctx.attr(node, "body")
    if not isinstance(body, onnx.GraphProto):
        raise FileFormatError(f"{describe(node)}: Loop without a body graph attribute")
    n_carried = len(node.input) - 2
    if n_carried < 0:
        raise FileFormatError(f"{describe(node)}: Loop needs the M and cond inputs (either may be empty)")
    if len(body.input) != n_carried + 2 or len(body.output) < n_carried + 1:
        raise FileFormatError(f"{describe(node)}: its body takes {len(body.input)} inputs and gives "
                              f"{len(body.output)} outputs, which does not fit {n_carried} loop-carried values")
    n_scan = len(body.output) - 1 - n_carried
    carried = [ctx.value(node, 2 + j) for j in range(n_carried)]
    if any(v is None for v in carried):
        _unsup(node, "an omitted (optional) loop-carried input is not supported")
    reads = [i for i in node.input if i] + [n for n in _outer_names(body) if n in ctx.values]
    trip = _loop_trip_count(ctx, node)
    has_cond = bool(node.input[1])
    cond = _loop_flag(ctx, node, ctx.value(node, 1), f"its initial condition ({node.input[1]!r})",
                      [node.input[1]]) if has_cond and trip != 0 else True
    if trip is None and not has_cond:
        _unsup(node, "without a trip count M or a condition it runs forever")
    bounded = trip is not None and trip <= LOOP_LIMIT
    if not has_cond and not bounded:
        _unsup(node, f"runs {trip} iterations; irtool unrolls Loop only up to {LOOP_LIMIT} iterations")
    size = max(sum(1 for _ in walk_nodes(body.node)), 1)
    if trip is not None and not has_cond and trip * size > LOOP_NODE_LIMIT:
        _unsup(node, f"unrolling its {trip} iterations of {size} body nodes would import more than "
                     f"{LOOP_NODE_LIMIT} nodes")
    # a condition computed from neither the iteration number nor the carried values never changes
    varies = has_cond and _body_depends_on(body, body.output[0].name,
                                           {body.input[0].name} | {vi.name for vi in body.input[2:]})
    consts = {}
    for t in body.initializer:
        consts[t.name] = b.fresh(f"{node.name or 'Loop'}/body/{t.name}")
        arr = tensor_to_array(t, ctx.base_dir, f"{describe(node)} body initializer {t.name!r}")
        ctx.values[consts[t.name]] = b.const(arr, check_dtype(arr.dtype))

    def iteration(i, state, prefix):
        names = dict(consts)
        feeds = [b.const(np.array(i, np.int64), "int64"), b.const(np.array(True), "bool"),
                 *(_counter_feed(ctx, v) for v in state)]
        for vi, v in zip(body.input, feeds):
            names[vi.name] = b.fresh(prefix + vi.name)
            ctx.values[names[vi.name]] = v
        try:
            import_nodes(ctx, localize(ctx, body.node, names, prefix))
        except DynamicInputError as e:      # name the outer values the loop reads
            raise DynamicInputError(str(e), reads) from None
        finally:
            b.source = describe(node)
        outs = []
        for o in body.output:
            name = names.get(o.name, o.name)
            if name not in ctx.values:
                raise FileFormatError(f"{describe(node)}: body output {o.name!r} is not produced by any node")
            outs.append(ctx.values[name])
        return outs

    scans = [[] for _ in range(n_scan)]
    i = 0
    while cond and (trip is None or i < trip):
        if i >= LOOP_LIMIT:
            _unsup(node, f"runs more than {LOOP_LIMIT} iterations; irtool unrolls Loop only up to "
                         f"{LOOP_LIMIT} iterations")
        if (i + 1) * size > LOOP_NODE_LIMIT:
            _unsup(node, f"unrolling more than {i} iterations of {size} body nodes would import more than "
                         f"{LOOP_NODE_LIMIT} nodes")
        if len(b.nodes) + size > LOOP_NODE_LIMIT:
            _unsup(node, f"unrolling it (in its enclosing loops) would grow the graph past {LOOP_NODE_LIMIT} nodes")
        outs = iteration(i, carried, f"{node.name or 'Loop'}/{i}/")
        carried = outs[1:1 + n_carried]
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        if has_cond:
            cond = _loop_flag(ctx, node, outs[0], f"its condition (body output {body.output[0].name!r})", reads)
            if cond and not varies and not bounded:
                _unsup(node, f"its condition stays true and its trip count is "
                             f"{'unbounded' if trip is None else trip}; irtool unrolls Loop only up to "
                             f"{LOOP_LIMIT} iterations")
        i += 1
    if n_scan and not scans[0]:
        return [*carried, *_empty_scans(ctx, node, body, n_carried, lambda: iteration(
            0, carried, f"{node.name or 'Loop'}/shapes/"))]
    stacked = [b.concat([b.unsqueeze(s, axes=(0,)) for s in steps], axis=0) if len(steps) > 1
               else b.unsqueeze(steps[0], axes=(0,)) for steps in scans]
    return [*carried, *stacked]


def _counter_feed(ctx, v):
    """A loop-carried int/bool value known at import time (a counter kept in a
    frozen initializer, as tf2onnx writes) enters the body as a constant, so
    what the body computes from it (indices, the condition) folds."""
    from irtool.frontends.onnx_import import EAGER_FOLD_LIMIT
    if is_float(v.dtype) or (v.producer is not None and v.producer.op.name == "constant"):
        return v
    arr = ctx.static(v)
    if arr is None or np.asarray(arr).dtype == object or np.asarray(arr).size > EAGER_FOLD_LIMIT:
        return v
    return ctx.b.const(np.asarray(arr), v.dtype)


def _loop_trip_count(ctx, node):
    """Loop's M as a python int (None when omitted)."""
    from irtool.frontends.onnx_import import DynamicInputError
    if not node.input[0]:
        return None
    arr = ctx.static(ctx.value(node, 0))
    if arr is None:
        raise DynamicInputError(
            f"{describe(node)}: its trip count M ({node.input[0]!r}) is computed at run time; irtool unrolls "
            "Loop and needs M known at import time (a constant, an initializer or static shapes)",
            (node.input[0],))
    arr = np.asarray(arr).reshape(-1)
    if arr.size != 1:
        _unsup(node, f"its trip count M must hold one value, got {arr.size}")
    m = arr[0]
    if isinstance(m, str):
        _unsup(node, f"its trip count M is the symbolic dim {m!r}; irtool unrolls Loop and needs a static count")
    return max(int(m), 0)


def _loop_flag(ctx, node, v, what, reads):
    """A Loop condition Value as a python bool (it must be known at import time)."""
    from irtool.frontends.onnx_import import DynamicInputError
    arr = ctx.static(v)
    if arr is None or np.asarray(arr).dtype == object:
        raise DynamicInputError(
            f"{describe(node)}: {what} depends on run-time values (data-dependent termination); irtool unrolls "
            "Loop and needs the condition known at import time", reads)
    arr = np.asarray(arr).reshape(-1)
    if arr.size != 1:
        _unsup(node, f"{what} must hold one value, got {arr.size}")
    return bool(arr[0])


def _subgraphs(n):
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _outer_names(graph):
    """Names a subgraph (and the subgraphs inside it) reads from enclosing scopes."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    used = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        defined.update(o for o in n.output if o)
        for sub in _subgraphs(n):
            used.update(_outer_names(sub))
    used.update(vi.name for vi in graph.output)
    return sorted(used - defined)


def _body_depends_on(graph, name, sources):
    """Whether value `name` of graph is computed from any of `sources` (names)."""
    producer = {o: n for n in graph.node for o in n.output if o}
    seen, todo = set(), [name]
    while todo:
        v = todo.pop()
        if v in seen or not v:
            continue
        seen.add(v)
        if v in sources:
            return True
        n = producer.get(v)
        if n is not None:
            todo.extend(n.input)
            for sub in _subgraphs(n):
                todo.extend(_outer_names(sub))
    return False


def _empty_scans(ctx, node, body, n_carried, dry_run):
    """Scan outputs of a Loop that runs no iteration: (0, ...) tensors typed
    like one iteration's outputs (imported for their types only, then pruned
    as dead code), or like the body's declared outputs when that fails."""
    from irtool.errors import IRToolError
    from irtool.frontends.onnx_import import ir_dtype
    b = ctx.b
    try:
        types = [(v.dtype, v.shape) for v in dry_run()[1 + n_carried:]]
    except IRToolError:
        types = []
        for vi in body.output[1 + n_carried:]:
            tt = vi.type.tensor_type
            if not (vi.type.HasField("tensor_type") and tt.HasField("shape")
                    and all(d.HasField("dim_value") for d in tt.shape.dim)):
                _unsup(node, f"Loop runs no iteration and the type of scan output {vi.name!r} is unknown")
            types.append((ir_dtype(tt.elem_type, f"{describe(node)} scan output {vi.name!r}"),
                          tuple(int(d.dim_value) for d in tt.shape.dim)))
    return [b.full(shape=(0, *shape), value=False if dtype == "bool" else 0, dtype=dtype)
            for dtype, shape in types]


@op("ReverseSequence")
def _reverse_sequence(ctx, node):
    """Reverse the first sequence_lens[b] steps of each batch entry b along the
    time axis: a flip when every length is the full (static) time size, else
    a gather with per-entry indices."""
    b = ctx.b
    x, lens = ctx.value(node, 0), ctx.value(node, 1)
    t_axis, b_axis = ctx.attr(node, "time_axis", 0), ctx.attr(node, "batch_axis", 1)
    if {t_axis, b_axis} != {0, 1} or x.rank < 2:
        _unsup(node, f"ReverseSequence with time_axis={t_axis}, batch_axis={b_axis} on a rank-{x.rank} input")
    steps = x.shape[t_axis]
    if isinstance(steps, int) and _filled_with(ctx, lens) == steps:
        return b.flip(x, axes=(t_axis,))
    lens = lens if lens.dtype == "int64" else b.cast(lens, dtype="int64")
    t = b.arange(start=0, stop=steps, step=1, dtype="int64")
    t = b.unsqueeze(t, axes=(1,) if t_axis == 0 else (0,))
    lens = b.unsqueeze(lens, axes=(0,) if t_axis == 0 else (1,))
    idx = b.where(b.lt(t, lens), b.sub(b.sub(lens, 1), t), t)
    if x.rank > 2:
        idx = b.unsqueeze(idx, axes=tuple(range(2, x.rank)))
    if idx.shape != x.shape:
        idx = b.expand(idx, shape=x.shape)
    return b.gather_elements(x, idx, axis=t_axis)


def _filled_with(ctx, v):
    """The one number every element of v holds when known at import time
    (also for an expand/full of a constant to a symbolic shape), else None."""
    arr = ctx.static(v)
    if arr is None and v.producer is not None and v.producer.op.name == "expand":
        arr = ctx.static(v.producer.inputs[0])
    if arr is None and v.producer is not None and v.producer.op.name == "full":
        arr = np.array(v.producer.attrs["value"])
    if arr is None or np.asarray(arr).dtype == object or np.asarray(arr).size == 0:
        return None
    flat = np.asarray(arr).reshape(-1)
    return int(flat[0]) if np.all(flat == flat[0]) else None


# -- recurrent layers (unrolled over a static sequence length) ------------------------

_RNN_ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu"}


def _rnn_setup(ctx, node, gates):
    """Common inputs of LSTM/GRU: (x in (seq, batch, in) layout, W, R, bias or
    None, initial states list, directions, activation fns, hidden size)."""
    b = ctx.b
    x, w, r = ctx.value(node, 0), ctx.value(node, 1), ctx.value(node, 2)
    bias = ctx.value(node, 3)
    lens = ctx.value(node, 4)
    layout = ctx.attr(node, "layout", 0)
    if layout == 1:
        x = b.transpose(x, perm=(1, 0, 2))
    seq = x.shape[0]
    if not isinstance(seq, int):
        _unsup(node, f"{node.op_type} over a symbolic sequence length {seq!r} (irtool unrolls it)")
    if lens is not None:
        known = ctx.const_input(node, 4, "sequence_lens")     # must be known at import time
        if not all(int(v) == seq for v in np.asarray(known).reshape(-1)):
            _unsup(node, f"{node.op_type} with per-example sequence_lens shorter than the sequence")
    if ctx.attr(node, "clip") is not None:
        _unsup(node, f"{node.op_type} with clip")
    direction = ctx.attr(node, "direction", "forward")
    dirs = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    names = ctx.attr(node, "activations") or (["Sigmoid", "Tanh", "Tanh"] if gates == 4 else ["Sigmoid", "Tanh"])
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    if any(n not in _RNN_ACTIVATIONS for n in names):
        _unsup(node, f"{node.op_type} activations {names}")
    acts = [getattr(b, _RNN_ACTIVATIONS[n]) for n in names]
    return x, w, r, bias, dirs, acts, ctx.attr(node, "hidden_size"), layout


def _pick(b, v, d):
    return b.gather(v, b.const(np.int64(d), "int64"), axis=0)


def _rnn_outputs(ctx, node, per_dir, finals, layout):
    """Y (seq, dirs, batch, H) from per-direction lists of (batch, H) steps,
    and each final state stacked to (dirs, batch, H)."""
    b = ctx.b
    ys = [b.concat([b.unsqueeze(h, axes=(0, 1)) for h in steps], axis=0) if len(steps) > 1
          else b.unsqueeze(steps[0], axes=(0, 1)) for steps in per_dir]
    y = ys[0] if len(ys) == 1 else b.concat(ys, axis=1)
    states = []
    for per in finals:
        s = [b.unsqueeze(v, axes=(0,)) for v in per]
        states.append(s[0] if len(s) == 1 else b.concat(s, axis=0))
    if layout == 1:
        y = b.transpose(y, perm=(2, 0, 1, 3))
        states = [b.transpose(s, perm=(1, 0, 2)) for s in states]
    return (y, *states)


def _initial(ctx, b, node, i, d, like, hidden):
    v = ctx.value(node, i)
    if v is not None:
        return _pick(b, v, d)
    return b.expand(b.const(0, like.dtype), shape=(like.shape[1], hidden))


@op("LSTM")
def _lstm(ctx, node):
    b = ctx.b
    x, w, r, bias, dirs, (f, g, h), hidden, layout = _rnn_setup(ctx, node, 4)
    if ctx.attr(node, "input_forget", 0):
        _unsup(node, "LSTM with input_forget")
    peep = ctx.value(node, 7)
    per_dir, hs, cs = [], [], []
    for d, reverse in enumerate(dirs):
        wd, rd = _pick(b, w, d), _pick(b, r, d)
        xw = b.matmul(x, b.transpose(wd, perm=(1, 0)))                # (seq, batch, 4H)
        if bias is not None:
            bd = _pick(b, bias, d)
            parts = b.split(bd, sizes=(4 * hidden, 4 * hidden), axis=0)
            xw = b.add(xw, b.add(parts[0], parts[1]))
        rt = b.transpose(rd, perm=(1, 0))
        ht, ct = _initial(ctx, b, node, 5, d, x, hidden), _initial(ctx, b, node, 6, d, x, hidden)
        pi = po = pf = None
        if peep is not None:
            pi, po, pf = b.split(_pick(b, peep, d), sizes=(hidden,) * 3, axis=0)
        steps = [None] * x.shape[0]
        order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        for t in order:
            z = b.add(_pick(b, xw, t), b.matmul(ht, rt))
            zi, zo, zf, zc = b.split(z, sizes=(hidden,) * 4, axis=1)
            if pi is not None:
                zi, zf = b.add(zi, b.mul(pi, ct)), b.add(zf, b.mul(pf, ct))
            it, ft, cc = f(zi), f(zf), g(zc)
            ct = b.add(b.mul(ft, ct), b.mul(it, cc))
            if po is not None:
                zo = b.add(zo, b.mul(po, ct))
            ht = b.mul(f(zo), h(ct))
            steps[t] = ht
        per_dir.append(steps)
        hs.append(ht)
        cs.append(ct)
    return _rnn_outputs(ctx, node, per_dir, [hs, cs], layout)


@op("GRU")
def _gru(ctx, node):
    b = ctx.b
    x, w, r, bias, dirs, (f, g), hidden, layout = _rnn_setup(ctx, node, 3)
    before_reset = ctx.attr(node, "linear_before_reset", 0)
    per_dir, hs = [], []
    for d, reverse in enumerate(dirs):
        wd, rd = _pick(b, w, d), _pick(b, r, d)
        xw = b.matmul(x, b.transpose(wd, perm=(1, 0)))                # (seq, batch, 3H)
        rb = None
        if bias is not None:
            wb, rb = b.split(_pick(b, bias, d), sizes=(3 * hidden, 3 * hidden), axis=0)
            xw = b.add(xw, wb)
        rz, rr, rh = b.split(rd, sizes=(hidden,) * 3, axis=0)
        rbz = rbr = rbh = None
        if rb is not None:
            rbz, rbr, rbh = b.split(rb, sizes=(hidden,) * 3, axis=0)
        rzr = b.transpose(b.concat([rz, rr], axis=0), perm=(1, 0))
        rht = b.transpose(rh, perm=(1, 0))
        ht = _initial(ctx, b, node, 5, d, x, hidden)
        steps = [None] * x.shape[0]
        order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        for t in order:
            xz, xr, xh = b.split(_pick(b, xw, t), sizes=(hidden,) * 3, axis=1)
            hz, hr = b.split(b.matmul(ht, rzr), sizes=(hidden, hidden), axis=1)
            if rbz is not None:
                hz, hr = b.add(hz, rbz), b.add(hr, rbr)
            zt, rt = f(b.add(xz, hz)), f(b.add(xr, hr))
            if before_reset:
                hh = b.matmul(ht, rht)
                if rbh is not None:
                    hh = b.add(hh, rbh)
                cand = g(b.add(xh, b.mul(rt, hh)))
            else:
                hh = b.matmul(b.mul(rt, ht), rht)
                if rbh is not None:
                    hh = b.add(hh, rbh)
                cand = g(b.add(xh, hh))
            ht = b.add(b.mul(b.sub(b.const(1, zt.dtype), zt), cand), b.mul(zt, ht))
            steps[t] = ht
        per_dir.append(steps)
        hs.append(ht)
    return _rnn_outputs(ctx, node, per_dir, [hs], layout)
