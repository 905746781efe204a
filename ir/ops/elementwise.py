"""Elementwise ops: unary math, broadcasting binaries, comparisons, logic,
where/clip/stop_gradient/cast. Broadcast gradients are returned at the
output's shape; the autodiff pass sums them back to each input's shape.

Semantics follow numpy/torch: `div` on integers truncates toward zero, `mod`
is the floor remainder (sign of the divisor), `round` is half to even, and
piecewise-constant ops (floor, ceil, round, sign) have zero gradients;
`stop_gradient` is the identity that passes no gradient back (torch's
detach, tf.stop_gradient)."""
import math

import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import check_dtype
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import arity, broadcast_binary, compare_binary, float_unary, same_dtype, unary
from irtool.ir.ops.sampling import bools, ints, positive, rand
from irtool.ir.shapes import broadcast


# -- sample helpers -----------------------------------------------------------

def unary_samples(make=rand, int_make=None):
    def samples(rng):
        out = [Sample((make(rng, 3, 4),)), Sample((make(rng, 2, 1, 5),)), Sample((make(rng),))]
        if int_make is not None:
            out.append(Sample((int_make(rng, 3, 4),)))
        return out
    return samples


def binary_samples(make=rand, make_y=None, int_make=None, int_make_y=None):
    make_y = make_y or make

    def samples(rng):
        out = [Sample((make(rng, 3, 4), make_y(rng, 3, 4))),
               Sample((make(rng, 2, 1, 4), make_y(rng, 3, 1))),   # broadcast both ways
               Sample((make(rng, 5), make_y(rng)))]
        if int_make is not None:
            out.append(Sample((int_make(rng, 3, 4), (int_make_y or int_make)(rng, 1, 4))))
        return out
    return samples


def signed_ints(rng, *shape, dtype="int64"):
    return ints(rng, *shape, low=-6, high=7, dtype=dtype)


def nonzero_ints(rng, *shape, dtype="int64"):
    """Integers in [-3, 3] without 0 (safe divisors)."""
    v = ints(rng, *shape, low=1, high=4, dtype=dtype)
    return np.where(rng.random(shape) < 0.5, -v, v).astype(dtype)


def away_from_zero(rng, *shape, dtype="float32"):
    """|x| in [0.2, 2] with random sign: keeps samples off the kink of abs/sign."""
    v = rng.uniform(0.2, 2.0, size=shape)
    return np.where(rng.random(shape) < 0.5, -v, v).astype(dtype)


def off_integers(rng, *shape, dtype="float32"):
    """Values whose fractional part avoids 0 and 0.5 (the jumps of floor/ceil/round)."""
    frac = rng.uniform(0.1, 0.4, size=shape) + 0.5 * rng.integers(0, 2, size=shape)
    return (rng.integers(-3, 3, size=shape) + frac).astype(dtype)


def above_minus_one(rng, *shape, dtype="float32"):
    return rand(rng, *shape, dtype=dtype, low=-0.9, high=2.0)


def with_ties(rng, *shape):
    """Floats where about a third of the entries equal those of a second draw."""
    x, y = rand(rng, *shape), rand(rng, *shape)
    return x, np.where(rng.random(shape) < 0.35, x, y).astype(x.dtype)


def _zeros(b, like):
    return b.expand(b.const(0, like.dtype), shape=like.shape)


# -- type rules -----------------------------------------------------------------

def numeric_unary(types, attrs):
    arity(types, 1)
    if types[0].dtype == "bool":
        raise IRTypeError("needs a numeric input, got bool")
    return [types[0]]


def numeric_binary(types, attrs):
    out = broadcast_binary(types, attrs)
    if out[0].dtype == "bool":
        raise IRTypeError("needs numeric inputs, got bool (use logical_and/logical_or/ne)")
    return out


def bool_unary(types, attrs):
    arity(types, 1)
    if types[0].dtype != "bool":
        raise IRTypeError(f"needs a bool input, got {types[0].dtype}")
    return [types[0]]


def bool_binary(types, attrs):
    if any(t.dtype != "bool" for t in types):
        raise IRTypeError(f"needs bool inputs, got {', '.join(t.dtype for t in types)}")
    return broadcast_binary(types, attrs)


def _isnan_infer(types, attrs):
    float_unary(types, attrs)
    return [TensorType("bool", types[0].shape)]


# -- unary ----------------------------------------------------------------------

def _float_unary_op(name, vjp, make=rand, doc=""):
    return register(OpDef(name, float_unary, vjp=vjp, samples=unary_samples(make), doc=doc))


NEG = register(OpDef("neg", numeric_unary, vjp=lambda b, node, g: (b.neg(g),),
                     samples=unary_samples(int_make=signed_ints)))

ABS = register(OpDef("abs", numeric_unary,
                     vjp=lambda b, node, g: (b.mul(g, b.sign(node.inputs[0])),),
                     samples=unary_samples(away_from_zero, int_make=signed_ints)))


def _sign_samples(rng):
    return unary_samples(away_from_zero, int_make=signed_ints)(rng) + [
        Sample((np.array([-1.5, 0.0, 2.0, -0.0], dtype="float32"),), grad=False)]


SIGN = register(OpDef("sign", numeric_unary, vjp=lambda b, node, g: (_zeros(b, g),),
                      samples=_sign_samples, doc="sign(x) in {-1, 0, 1}; zero gradient"))

EXP = _float_unary_op("exp", lambda b, node, g: (b.mul(g, node.outputs[0]),))

LOG = _float_unary_op("log", lambda b, node, g: (b.div(g, node.inputs[0]),), positive)

LOG1P = _float_unary_op("log1p", lambda b, node, g: (b.div(g, b.add(node.inputs[0], 1.0)),),
                        above_minus_one, doc="log(1 + x), accurate for small x")

SQRT = _float_unary_op("sqrt", lambda b, node, g: (b.div(b.mul(g, 0.5), node.outputs[0]),),
                       positive)

# d x^-1/2 = -1/2 x^-3/2 = -1/2 * out / x
RSQRT = _float_unary_op(
    "rsqrt", lambda b, node, g: (b.mul(b.mul(g, -0.5), b.div(node.outputs[0], node.inputs[0])),),
    positive, doc="1 / sqrt(x)")

RECIPROCAL = _float_unary_op(
    "reciprocal", lambda b, node, g: (b.neg(b.mul(g, b.mul(node.outputs[0], node.outputs[0]))),),
    positive)

SIN = _float_unary_op("sin", lambda b, node, g: (b.mul(g, b.cos(node.inputs[0])),))

COS = _float_unary_op("cos", lambda b, node, g: (b.neg(b.mul(g, b.sin(node.inputs[0]))),))

TANH = _float_unary_op(
    "tanh", lambda b, node, g: (b.mul(g, b.sub(1.0, b.mul(node.outputs[0], node.outputs[0]))),))


def _sigmoid_samples(rng):
    return unary_samples()(rng) + [
        Sample((np.array([-100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0], dtype="float32"),))]


SIGMOID = register(OpDef(
    "sigmoid", float_unary,
    vjp=lambda b, node, g: (b.mul(b.mul(g, node.outputs[0]), b.sub(1.0, node.outputs[0])),),
    samples=_sigmoid_samples, doc="1 / (1 + exp(-x)), stable for large |x|"))


def _erf_samples(rng):
    return unary_samples()(rng) + [Sample((rand(rng, 4, 5, low=-6.0, high=6.0),))]


ERF = register(OpDef(
    "erf", float_unary,
    vjp=lambda b, node, g: (b.mul(b.mul(g, 2.0 / math.sqrt(math.pi)),
                                  b.exp(b.neg(b.mul(node.inputs[0], node.inputs[0])))),),
    samples=_erf_samples))


def _step_samples(rng):
    halves = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -2.0, 3.0], dtype="float32")
    return unary_samples(off_integers)(rng) + [Sample((halves,), grad=False)]


FLOOR = register(OpDef("floor", float_unary, vjp=lambda b, node, g: (_zeros(b, g),),
                       samples=_step_samples, doc="zero gradient (piecewise constant)"))

CEIL = register(OpDef("ceil", float_unary, vjp=lambda b, node, g: (_zeros(b, g),),
                      samples=_step_samples, doc="zero gradient (piecewise constant)"))

ROUND = register(OpDef("round", float_unary, vjp=lambda b, node, g: (_zeros(b, g),),
                       samples=_step_samples, doc="round half to even; zero gradient"))


def _isnan_samples(rng):
    x = rand(rng, 3, 4)
    x[0, 0], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    return [Sample((x,)), Sample((np.array(np.nan, dtype="float32"),)),
            Sample((rand(rng, 5, dtype="float64"),))]


ISNAN = register(OpDef("isnan", _isnan_infer, differentiable=False, samples=_isnan_samples,
                       doc="isnan(x: float) -> bool"))

LOGICAL_NOT = register(OpDef(
    "logical_not", bool_unary, differentiable=False,
    samples=lambda rng: [Sample((bools(rng, 3, 4),)), Sample((bools(rng),))]))


# -- binary arithmetic --------------------------------------------------------------

ADD = register(OpDef("add", numeric_binary, vjp=lambda b, node, g: (g, g),
                     samples=binary_samples(int_make=signed_ints)))

SUB = register(OpDef("sub", numeric_binary, vjp=lambda b, node, g: (g, b.neg(g)),
                     samples=binary_samples(int_make=signed_ints)))

MUL = register(OpDef(
    "mul", numeric_binary,
    vjp=lambda b, node, g: (b.mul(g, node.inputs[1]), b.mul(g, node.inputs[0])),
    samples=binary_samples(int_make=signed_ints)))


def _div_samples(rng):
    return binary_samples(positive)(rng) + [
        Sample((rand(rng, 3, 4), away_from_zero(rng, 4))),
        Sample((signed_ints(rng, 3, 4), nonzero_ints(rng, 3, 4))),   # truncation toward zero
        Sample((signed_ints(rng, 2, 3, dtype="int32"), nonzero_ints(rng, 3, dtype="int32")))]


DIV = register(OpDef(
    "div", numeric_binary,
    # d(x/y) = g/y, -g*x/y^2 = -(g/y) * out
    vjp=lambda b, node, g: (b.div(g, node.inputs[1]),
                            b.neg(b.mul(b.div(g, node.inputs[1]), node.outputs[0]))),
    samples=_div_samples,
    doc="x / y; on integers truncates toward zero (C / ONNX Div)"))


def _pow_vjp(b, node, g):
    x, y = node.inputs
    out = node.outputs[0]
    zero = b.const(0, g.dtype)
    # like torch: no gradient to x where y == 0, none to y where x == 0 and y >= 0
    gx = b.where(b.eq(y, 0.0), zero, b.mul(b.mul(g, y), b.pow(x, b.sub(y, 1.0))))
    gy = b.where(b.logical_and(b.eq(x, 0.0), b.ge(y, 0.0)), zero,
                 b.mul(b.mul(g, out), b.log(x)))
    return gx, gy


def _pow_samples(rng):
    return binary_samples(positive, rand)(rng) + [
        Sample((rand(rng, 3, 4), np.array([[0.0], [1.0], [2.0]], dtype="float32")), grad=False),
        Sample((signed_ints(rng, 3, 4), ints(rng, 1, 4, low=0, high=4)))]


POW = register(OpDef("pow", numeric_binary, vjp=_pow_vjp, samples=_pow_samples,
                     doc="x ** y (integer y must be >= 0)"))


def _minmax_vjp(pick):
    def vjp(b, node, g):
        x, y = node.inputs
        zero = b.const(0, g.dtype)
        half = b.where(b.eq(x, y), b.mul(g, 0.5), zero)   # ties split the gradient, like torch
        first = pick(b, x, y)
        return b.where(first, g, half), b.where(first, zero, b.sub(g, half))
    return vjp


def _minmax_samples(rng):
    return binary_samples(int_make=signed_ints)(rng) + [Sample(with_ties(rng, 3, 4))]


MAXIMUM = register(OpDef("maximum", numeric_binary, vjp=_minmax_vjp(lambda b, x, y: b.gt(x, y)),
                         samples=_minmax_samples, doc="elementwise max; ties split the gradient"))

MINIMUM = register(OpDef("minimum", numeric_binary, vjp=_minmax_vjp(lambda b, x, y: b.lt(x, y)),
                         samples=_minmax_samples, doc="elementwise min; ties split the gradient"))


def _mod_samples(rng):
    return [Sample((rand(rng, 3, 4, low=-3.0, high=3.0), away_from_zero(rng, 3, 4))),
            Sample((rand(rng, 2, 1, 4, low=-3.0, high=3.0), away_from_zero(rng, 3, 1))),
            Sample((rand(rng, 5, low=-3.0, high=3.0), np.array(-0.7, dtype="float32"))),
            Sample((signed_ints(rng, 3, 4), nonzero_ints(rng, 3, 4))),
            Sample((signed_ints(rng, 2, 3, dtype="int32"), nonzero_ints(rng, 3, dtype="int32")))]


MOD = register(OpDef(
    "mod", numeric_binary,
    vjp=lambda b, node, g: (g, b.neg(b.mul(g, b.floor(b.div(node.inputs[0], node.inputs[1]))))),
    samples=_mod_samples,
    doc="floor remainder x - floor(x / y) * y: the sign of the divisor (np.mod, torch.remainder)"))


# -- comparisons and logic ------------------------------------------------------------

def _compare_samples(rng):
    x, y = with_ties(rng, 3, 4)
    return [Sample((x, y)),
            Sample((rand(rng, 2, 1, 4), rand(rng, 3, 1))),
            Sample((rand(rng, 5), x[0, 0].copy())),
            Sample((signed_ints(rng, 3, 4), signed_ints(rng, 1, 4))),
            Sample((signed_ints(rng, 4, dtype="int32"), signed_ints(rng, 4, dtype="int32"))),
            Sample((bools(rng, 3, 4), bools(rng, 4)))]


def _compare(name, doc):
    return register(OpDef(name, compare_binary, differentiable=False, samples=_compare_samples, doc=doc))


EQ = _compare("eq", "x == y -> bool")
NE = _compare("ne", "x != y -> bool")
LT = _compare("lt", "x < y -> bool")
LE = _compare("le", "x <= y -> bool")
GT = _compare("gt", "x > y -> bool")
GE = _compare("ge", "x >= y -> bool")


def _logic_samples(rng):
    return [Sample((bools(rng, 3, 4), bools(rng, 3, 4))),
            Sample((bools(rng, 2, 1, 4), bools(rng, 3, 1))),
            Sample((bools(rng, 5), bools(rng)))]


LOGICAL_AND = register(OpDef("logical_and", bool_binary, differentiable=False, samples=_logic_samples))

LOGICAL_OR = register(OpDef("logical_or", bool_binary, differentiable=False, samples=_logic_samples))


# -- where, clip, stop_gradient, cast ---------------------------------------------------

def _where_infer(types, attrs):
    cond, x, y = types
    if cond.dtype != "bool":
        raise IRTypeError(f"needs a bool condition, got {cond.dtype}")
    dtype = same_dtype([x, y], "where's branches")
    return [TensorType(dtype, broadcast(cond.shape, x.shape, y.shape))]


def _where_vjp(b, node, g):
    cond = node.inputs[0]
    zero = b.const(0, g.dtype)
    return None, b.where(cond, g, zero), b.where(cond, zero, g)


WHERE = register(OpDef(
    "where", _where_infer, vjp=_where_vjp, nondiff_inputs=(0,),
    samples=lambda rng: [
        Sample((bools(rng, 3, 4), rand(rng, 3, 4), rand(rng, 3, 4))),
        Sample((bools(rng, 3, 1), rand(rng, 1, 4), rand(rng))),      # all three broadcast
        Sample((bools(rng), rand(rng, 2, 3), rand(rng, 3))),
        Sample((bools(rng, 2, 3, 1), signed_ints(rng, 3, 4), signed_ints(rng, 4)))],
    doc="where(cond: bool, x, y): x where cond else y, broadcasting all three"))


def _clip_infer(types, attrs):
    for k in ("min", "max"):
        if k in attrs and not isinstance(attrs[k], (int, float, np.integer, np.floating)):
            raise IRTypeError(f"clip attr {k!r} must be a number, got {attrs[k]!r}")
    return numeric_unary(types, attrs)


def _clip_vjp(b, node, g):
    x = node.inputs[0]
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    mask = None
    if lo is not None:
        mask = b.ge(x, float(lo))
    if hi is not None:
        le = b.le(x, float(hi))
        mask = le if mask is None else b.logical_and(mask, le)
    if mask is None:
        return (g,)
    return (b.where(mask, g, b.const(0, g.dtype)),)


CLIP = register(OpDef(
    "clip", _clip_infer, vjp=_clip_vjp,
    samples=lambda rng: [
        Sample((rand(rng, 3, 4),), {"min": -0.5, "max": 0.75}),
        Sample((rand(rng, 2, 1, 5),), {"min": -1.0}),
        Sample((rand(rng, 6),), {"max": 0.3}),
        Sample((rand(rng),), {"min": -1.0, "max": 1.0}),
        Sample((rand(rng, 4),), {}),
        Sample((signed_ints(rng, 3, 4),), {"min": -2.0, "max": 3.0})],
    doc="clip(x, min=None, max=None): min/max are numbers; gradient passes where min <= x <= max"))


def _stop_gradient_samples(rng):
    # finite differences see the identity; the gradient is zero by definition
    # (torch's detach, tf.stop_gradient): checked against torch.autograd only
    return [Sample((rand(rng, 3, 4),), finite_differences=False),
            Sample((rand(rng, 2, 1, 5),), finite_differences=False),
            Sample((rand(rng),), finite_differences=False),
            Sample((signed_ints(rng, 3, 4),)),
            Sample((bools(rng, 4),))]


STOP_GRADIENT = register(OpDef(
    "stop_gradient", unary, vjp=lambda b, node, g: (None,), samples=_stop_gradient_samples,
    doc="the identity forward; no gradient reaches x (torch's x.detach(), tf.stop_gradient)"))


def _cast_infer(types, attrs):
    return [TensorType(check_dtype(attrs["dtype"]), types[0].shape)]


CAST = register(OpDef(
    "cast", _cast_infer,
    # gradient flows back between float types only; the autodiff pass drops
    # cotangents that reach integer values
    vjp=lambda b, node, g: (b.cast(g, dtype=node.inputs[0].dtype),),
    samples=lambda rng: [Sample((rand(rng, 3, 4),), {"dtype": "float64"}),
                         Sample((rand(rng, 3, 4, dtype="float64"),), {"dtype": "float32"}, grad=False),  # float32 finite differences are too coarse
                         Sample((rand(rng, 4) * 5,), {"dtype": "int32"}, grad=False)]))
