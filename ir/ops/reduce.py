"""Reductions, scans, matmul and top-k.

Reductions take `axes=None|tuple` (None reduces every axis, () none: the
identity) and `keepdims=False`. Index results (argmax, argmin, topk's
indices) are int64; ties go to the lowest index."""
from math import prod

import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import is_float
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import reduce_shape, reduction, same_dtype
from irtool.ir.shapes import broadcast, norm_axes, norm_axis
from irtool.ir.ops.sampling import ints, positive, rand


def keep_reduced(b, g, node):
    """Reshape a reduction's cotangent so it broadcasts against the input
    (re-insert the reduced axes as 1s when keepdims was False)."""
    x = node.inputs[0]
    if node.attrs.get("keepdims", False):
        return g
    axes = norm_axes(node.attrs.get("axes"), x.rank)
    return b.unsqueeze(g, axes=axes) if axes else g


def _reduced_axes(node):
    return norm_axes(node.attrs.get("axes"), node.inputs[0].rank)


def _numeric(types, what="input"):
    if types[0].dtype == "bool":
        raise IRTypeError(f"needs a numeric {what}, got bool; cast it first")
    return types[0]


def _numeric_reduction(types, attrs):
    _numeric(types)
    return reduction(types, attrs)


def _float_reduction(types, attrs):
    if not is_float(types[0].dtype):
        raise IRTypeError(f"needs a float input, got {types[0].dtype}; cast it first")
    return reduction(types, attrs)


def _int_attr(attrs, name, default=None):
    v = attrs.get(name, default)
    if v is None:
        raise IRTypeError(f"needs an int attr {name!r}")
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise IRTypeError(f"attr {name!r} must be an int, got {v!r}")
    return int(v)


def _axis(types, attrs, default=None):
    """The normalized `axis` attr of an op that needs an input of rank >= 1."""
    x = _numeric(types)
    if x.rank == 0:
        raise IRTypeError(f"needs an input of rank >= 1, got {x}")
    return norm_axis(_int_attr(attrs, "axis", default), x.rank)


def reduce_samples(make=rand, int_dtypes=("int64", "int32")):
    """Ranks 0-4, keepdims both ways, negative, repeated-free and empty axes."""
    def samples(rng):
        x = make(rng, 2, 3, 4)
        x4 = make(rng, 2, 3, 2, 3)
        out = [Sample((x,), {}), Sample((x,), {"axes": (1,)}),
               Sample((x,), {"axes": (0, 2), "keepdims": True}), Sample((x,), {"axes": (-1,)}),
               Sample((x,), {"keepdims": True}), Sample((x,), {"axes": ()}),
               Sample((make(rng),), {}), Sample((make(rng),), {"keepdims": True}),
               Sample((make(rng, 5),), {"axes": (0,), "keepdims": True}),
               Sample((x4,), {"axes": (-1, -3)}),
               Sample((x4,), {"axes": (1, 2, 3), "keepdims": True})]
        out += [Sample((ints(rng, 3, 4, low=-4, high=5, dtype=d),), {"axes": (1,)}) for d in int_dtypes]
        out += [Sample((ints(rng, 2, 3, low=-4, high=5),), {})] if int_dtypes else []
        return out
    return samples


REDUCE_SUM = register(OpDef(
    "reduce_sum", _numeric_reduction,
    vjp=lambda b, node, g: (b.expand(keep_reduced(b, g, node), shape=node.inputs[0].shape),),
    samples=reduce_samples(),
    doc="reduce_sum(x, axes=None|tuple, keepdims=False); axes=None reduces all"))


def _count(b, x, axes):
    """Number of elements reduced over `axes`: a Python int when those dims
    are static, else a scalar of x's dtype computed from x's runtime shape."""
    dims = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return prod(dims)
    picked = b.gather(b.shape_of(x), b.const(np.asarray(axes, np.int64), "int64"), axis=0)
    return b.cast(b.reduce_prod(picked), dtype=x.dtype)


def _mean_vjp(b, node, g):
    x = node.inputs[0]
    return (b.div(b.expand(keep_reduced(b, g, node), shape=x.shape), _count(b, x, _reduced_axes(node))),)


REDUCE_MEAN = register(OpDef(
    "reduce_mean", _float_reduction, vjp=_mean_vjp,
    samples=reduce_samples(int_dtypes=()),
    doc="reduce_mean(x, axes=None|tuple, keepdims=False); float inputs only"))


def _extremum_vjp(b, node, g):
    # like torch's amax/amin: the gradient is split evenly among tied extrema
    x = node.inputs[0]
    axes = _reduced_axes(node)
    if not axes:
        return (g,)
    mask = b.cast(b.eq(x, keep_reduced(b, node.outputs[0], node)), dtype=x.dtype)
    ties = b.reduce_sum(mask, axes=axes, keepdims=True)
    return (b.div(b.mul(keep_reduced(b, g, node), mask), ties),)


def _tied(largest):
    """Float samples whose extremum along axis 1 occurs exactly twice per row
    (central differences then also give 1/2 to each)."""
    def sample(rng):
        x = (rng.permutation(12).reshape(3, 4) * 0.25 - 1.5).astype(np.float32)
        rows = np.arange(3)
        best = x.argmax(axis=1) if largest else x.argmin(axis=1)
        x[rows, (best + rng.integers(1, 4, size=3)) % 4] = x[rows, best]
        return Sample((x,), {"axes": (1,)})
    return sample


def _extremum_samples(largest):
    def samples(rng):
        return reduce_samples()(rng) + [_tied(largest)(rng)]
    return samples


REDUCE_MAX = register(OpDef(
    "reduce_max", _numeric_reduction, vjp=_extremum_vjp, samples=_extremum_samples(True),
    doc="reduce_max(x, axes=None|tuple, keepdims=False); ties share the gradient evenly"))

REDUCE_MIN = register(OpDef(
    "reduce_min", _numeric_reduction, vjp=_extremum_vjp, samples=_extremum_samples(False),
    doc="reduce_min(x, axes=None|tuple, keepdims=False); ties share the gradient evenly"))


def _scan_prod(b, x, n):
    """Inclusive cumulative product along the last axis (static length n), as
    ceil(log2 n) steps of y * (y shifted by s, filled with 1): no division, and
    built from differentiable ops (pad, mul), so its own gradients are exact."""
    s = 1
    while s < n:
        pads = [0] * (2 * x.rank)
        pads[x.rank - 1], pads[2 * x.rank - 1] = s, -s
        x = b.mul(x, b.pad(x, pads=tuple(pads), value=1.0))
        s *= 2
    return x


def _shift_in_one(b, x):
    """x shifted one step along the last axis, a 1 coming in at the front."""
    pads = [0] * (2 * x.rank)
    pads[x.rank - 1], pads[2 * x.rank - 1] = 1, -1
    return b.pad(x, pads=tuple(pads), value=1.0)


def _prod_of_others(b, x, axes):
    """For each element of x, the product of the other elements of its
    reduction slice: exclusive cumulative products from both ends, multiplied.
    None where the reduced size is not a static int > 1."""
    n = prod(x.shape[a] for a in axes) if all(isinstance(x.shape[a], int) for a in axes) else None
    if n is None or n <= 1:
        return None
    kept = [a for a in range(x.rank) if a not in axes]
    perm = tuple(kept + list(axes))
    moved = x if perm == tuple(range(x.rank)) else b.transpose(x, perm=perm)
    flat = b.reshape(moved, shape=tuple(x.shape[a] for a in kept) + (n,))
    left = _scan_prod(b, _shift_in_one(b, flat), n)
    right = b.flip(_scan_prod(b, _shift_in_one(b, b.flip(flat, axes=(-1,))), n), axes=(-1,))
    others = b.reshape(b.mul(left, right), shape=moved.shape)
    if moved is x:
        return others
    inverse = tuple(sorted(range(x.rank), key=perm.__getitem__))
    return b.transpose(others, perm=inverse)


def _prod_vjp(b, node, g):
    # d out / d x_i is the product of the other elements of x_i's slice: the
    # exclusive cumulative products from both ends, multiplied (no division,
    # so exact at zeros, and differentiable again, so second order is exact
    # there too). Where the reduced size is symbolic the scan length is unknown:
    # then with x1 = x where zeros are replaced by 1 and p1 = prod(x1), it is
    # p1 / x1_i when none of the others is zero, else 0: first order still
    # exact at zeros, second order only away from them (the masks are
    # piecewise constant).
    x = node.inputs[0]
    axes = _reduced_axes(node)
    if not axes:
        return (g,)
    others = _prod_of_others(b, x, axes)
    if others is not None:
        return (b.mul(keep_reduced(b, g, node), others),)
    zeros = b.cast(b.eq(x, 0), dtype=x.dtype)
    x1 = b.add(x, zeros)
    p1 = b.reduce_prod(x1, axes=axes, keepdims=True)
    zeros_elsewhere = b.sub(b.reduce_sum(zeros, axes=axes, keepdims=True), zeros)
    keep = b.cast(b.eq(zeros_elsewhere, 0), dtype=x.dtype)
    return (b.mul(keep_reduced(b, g, node), b.mul(b.div(p1, x1), keep)),)


def _signed(rng, *shape):
    """Magnitudes in [0.5, 1.5) with random signs: products stay moderate."""
    return (positive(rng, *shape, low=0.5, high=1.5) * rng.choice([-1, 1], size=shape)).astype(np.float32)


def _prod_samples(rng):
    x = _signed(rng, 3, 4)
    x[0, 1] = 0                   # one zero in row 0
    x[1, 0] = x[1, 3] = 0         # two zeros in row 1
    return reduce_samples(_signed)(rng) + [
        Sample((x,), {"axes": (1,)}), Sample((x,), {"axes": (-2,), "keepdims": True}),
        Sample((x[:1],), {})]


REDUCE_PROD = register(OpDef(
    "reduce_prod", _numeric_reduction, vjp=_prod_vjp, samples=_prod_samples,
    doc="reduce_prod(x, axes=None|tuple, keepdims=False); keeps the input dtype"))


def _arg_infer(types, attrs):
    axis = _axis(types, attrs)
    return [TensorType("int64", reduce_shape(types[0].shape, {"axes": (axis,),
                                                               "keepdims": attrs.get("keepdims", False)}))]


def _arg_samples(rng):
    x = rand(rng, 2, 3, 4)
    return [Sample((x,), {"axis": 0}), Sample((x,), {"axis": 1, "keepdims": True}),
            Sample((x,), {"axis": -1}), Sample((rand(rng, 5),), {"axis": 0}),
            Sample((rand(rng, 2, 3, 2, 3),), {"axis": -2, "keepdims": True}),
            Sample((ints(rng, 4, 5, high=3),), {"axis": 1}),                 # ties: first index wins
            Sample((ints(rng, 4, 5, high=3, dtype="int32"),), {"axis": 0, "keepdims": True}),
            Sample((rand(rng, 3, 4, dtype="float64"),), {"axis": -1})]


ARGMAX = register(OpDef(
    "argmax", _arg_infer, differentiable=False, samples=_arg_samples,
    doc="argmax(x, axis=int, keepdims=False) -> int64; first index among ties"))

ARGMIN = register(OpDef(
    "argmin", _arg_infer, differentiable=False, samples=_arg_samples,
    doc="argmin(x, axis=int, keepdims=False) -> int64; first index among ties"))


def _cumsum_infer(types, attrs):
    _axis(types, attrs)
    return [types[0]]


def _cumsum_vjp(b, node, g):
    a = node.attrs
    return (b.cumsum(g, axis=a["axis"], exclusive=a.get("exclusive", False),
                     reverse=not a.get("reverse", False)),)


CUMSUM = register(OpDef(
    "cumsum", _cumsum_infer, vjp=_cumsum_vjp,
    samples=lambda rng: [Sample((rand(rng, 2, 3, 4),), {"axis": 1}),
                         Sample((rand(rng, 2, 3, 4),), {"axis": -1, "exclusive": True}),
                         Sample((rand(rng, 2, 3, 4),), {"axis": 0, "reverse": True}),
                         Sample((rand(rng, 2, 3, 4),), {"axis": 2, "exclusive": True, "reverse": True}),
                         Sample((rand(rng, 6),), {"axis": 0}),
                         Sample((ints(rng, 3, 4, low=-4, high=5),), {"axis": 0}),
                         Sample((ints(rng, 3, 4, low=-4, high=5, dtype="int32"),),
                                {"axis": 1, "exclusive": True, "reverse": True})],
    doc="cumsum(x, axis=int, exclusive=False, reverse=False): running sums along axis"))


def _topk_infer(types, attrs):
    x = types[0]
    axis = _axis(types, attrs, default=-1)
    k = _int_attr(attrs, "k")
    if k < 0 or (isinstance(x.shape[axis], int) and k > x.shape[axis]):
        raise IRTypeError(f"k={k} is out of range for axis {axis} of {x}")
    shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    return [TensorType(x.dtype, shape), TensorType("int64", shape)]


def _topk_vjp(b, node, g):
    gv = g[0]
    if gv is None:
        return (None,)
    x = node.inputs[0]
    zeros = b.expand(b.const(0, x.dtype), shape=x.shape)
    return (b.scatter_add(zeros, node.outputs[1], gv, axis=node.attrs.get("axis", -1)),)


TOPK = register(OpDef(
    "topk", _topk_infer, vjp=_topk_vjp,
    samples=lambda rng: [Sample((rand(rng, 3, 5),), {"k": 2}),
                         Sample((rand(rng, 4, 3),), {"k": 3, "axis": 0, "largest": False}),
                         Sample((rand(rng, 2, 4, 3),), {"k": 1, "axis": 1}),
                         Sample((rand(rng, 2, 4, 3),), {"k": 2, "axis": -3, "largest": False}),
                         Sample((rand(rng, 6),), {"k": 6}),
                         Sample((rng.permutation(20).reshape(4, 5).astype(np.int64),), {"k": 3}),
                         Sample((rng.permutation(12).reshape(3, 4).astype(np.int32),),
                                {"k": 2, "axis": 0, "largest": False})],
    doc="topk(x, k=int, axis=-1, largest=True) -> (values, int64 indices), sorted; "
        "ties: lower index first"))


def _matmul_infer(types, attrs):
    a, c = types
    dtype = same_dtype(types)
    if a.rank == 0 or c.rank == 0:
        raise IRTypeError("matmul needs inputs of rank >= 1")
    sa = a.shape if a.rank > 1 else (1,) + a.shape
    sc = c.shape if c.rank > 1 else c.shape + (1,)
    k1, k2 = sa[-1], sc[-2]
    if k1 != k2 and isinstance(k1, int) and isinstance(k2, int):
        raise IRTypeError(f"matmul inner dims differ: {a} @ {c}")
    batch = broadcast(sa[:-2], sc[:-2])
    out = batch + ((sa[-2],) if a.rank > 1 else ()) + ((sc[-1],) if c.rank > 1 else ())
    return [TensorType(dtype, out)]


def _matmul_vjp(b, node, g):
    a, c = node.inputs
    # promote vectors to matrices so one formula serves every rank
    a2 = b.unsqueeze(a, axes=(0,)) if a.rank == 1 else a
    c2 = b.unsqueeze(c, axes=(1,)) if c.rank == 1 else c
    g2 = g
    if a.rank == 1:
        g2 = b.unsqueeze(g2, axes=(g2.rank - (1 if c.rank > 1 else 0),))
    if c.rank == 1:
        g2 = b.unsqueeze(g2, axes=(g2.rank,))
    da = b.matmul(g2, b.transpose(c2, perm=_swap_last(c2.rank)))
    dc = b.matmul(b.transpose(a2, perm=_swap_last(a2.rank)), g2)
    if a.rank == 1:
        da = b.squeeze(da, axes=(da.rank - 2,))
    if c.rank == 1:
        dc = b.squeeze(dc, axes=(dc.rank - 1,))
    return da, dc


def _swap_last(rank):
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)


MATMUL = register(OpDef(
    "matmul", _matmul_infer, vjp=_matmul_vjp,
    samples=lambda rng: [Sample((rand(rng, 3, 4), rand(rng, 4, 5))),
                         Sample((rand(rng, 2, 3, 4), rand(rng, 4, 2))),
                         Sample((rand(rng, 2, 1, 3, 4), rand(rng, 3, 4, 2))),
                         Sample((rand(rng, 4), rand(rng, 4, 3))),
                         Sample((rand(rng, 2, 3, 4), rand(rng, 4))),
                         Sample((rand(rng, 4), rand(rng, 4)))],
    doc="numpy matmul semantics: batched, broadcasting, 1-D operands promoted"))
