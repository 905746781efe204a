"""Layout, indexing and creation ops: reshape, transpose, expand, squeeze,
unsqueeze, concat, split, slice, pad, gather..., constant, full, arange.
Shape attrs may hold symbolic dims; the runtime resolves them from the
graph inputs' actual shapes."""
import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import check_dtype
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.shapes import broadcast, check_shape, div_dims, mul_dims, norm_axes, numel
from irtool.ir.ops.sampling import rand


def _constant_infer(types, attrs):
    v = attrs["value"]
    if not isinstance(v, np.ndarray):
        raise IRTypeError("constant needs a numpy array in attr 'value'")
    return [TensorType(check_dtype(v.dtype), v.shape)]


CONSTANT = register(OpDef(
    "constant", _constant_infer, differentiable=False,
    samples=lambda rng: [Sample((), {"value": rand(rng, 2, 3)})],
    doc="constant(value=ndarray)"))


def _reshape_infer(types, attrs):
    x = types[0]
    target = list(attrs["shape"])
    if target.count(-1) > 1:
        raise IRTypeError(f"reshape target {tuple(target)} has more than one -1")
    if -1 in target:
        known = mul_dims(*(d for d in target if d != -1))
        missing = div_dims(numel(x.shape), known)
        if missing is None:
            raise IRTypeError(f"cannot reshape {x} to {tuple(target)}: sizes do not divide")
        target[target.index(-1)] = missing
    target = check_shape(target)
    a, c = numel(x.shape), numel(target)
    if a != c and isinstance(a, int) and isinstance(c, int):
        raise IRTypeError(f"cannot reshape {x} ({a} elements) to {target} ({c} elements)")
    return [TensorType(x.dtype, target)]


RESHAPE = register(OpDef(
    "reshape", _reshape_infer,
    vjp=lambda b, node, g: (b.reshape(g, shape=node.inputs[0].shape),),
    shape_attrs=("shape",),
    samples=lambda rng: [Sample((rand(rng, 2, 3, 4),), {"shape": (6, 4)}),
                         Sample((rand(rng, 2, 3, 4),), {"shape": (-1,)}),
                         Sample((rand(rng, 2, 3, 4),), {"shape": (4, -1, 2)})],
    doc="reshape(x, shape=tuple); one -1 is inferred; dims may be symbolic"))


def _expand_infer(types, attrs):
    x = types[0]
    shape = check_shape(attrs["shape"])
    out = broadcast(x.shape, shape)
    if out != shape:
        raise IRTypeError(f"cannot expand {x} to {list(shape)}")
    return [TensorType(x.dtype, shape)]


EXPAND = register(OpDef(
    "expand", _expand_infer,
    vjp=lambda b, node, g: (g,),   # the autodiff pass sums g back to x's shape
    shape_attrs=("shape",),
    samples=lambda rng: [Sample((rand(rng, 3, 1),), {"shape": (2, 3, 4)}),
                         Sample((rand(rng),), {"shape": (2, 2)})],
    doc="expand(x, shape=tuple): broadcast x to exactly `shape`"))


def _transpose_infer(types, attrs):
    x = types[0]
    perm = attrs.get("perm")
    perm = tuple(reversed(range(x.rank))) if perm is None else tuple(perm)
    if sorted(perm) != list(range(x.rank)):
        raise IRTypeError(f"perm {perm} is not a permutation of {x.rank} axes")
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


def _transpose_vjp(b, node, g):
    perm = node.attrs.get("perm") or tuple(reversed(range(g.rank)))
    return (b.transpose(g, perm=tuple(np.argsort(perm).tolist())),)


TRANSPOSE = register(OpDef(
    "transpose", _transpose_infer, vjp=_transpose_vjp,
    samples=lambda rng: [Sample((rand(rng, 2, 3, 4),), {"perm": (2, 0, 1)}),
                         Sample((rand(rng, 2, 3),), {})],
    doc="transpose(x, perm=None): perm=None reverses the axes"))


def _unsqueeze_infer(types, attrs):
    x = types[0]
    rank = x.rank + len(attrs["axes"])
    axes = norm_axes(attrs["axes"], rank)
    dims = iter(x.shape)
    return [TensorType(x.dtype, tuple(1 if i in axes else next(dims) for i in range(rank)))]


UNSQUEEZE = register(OpDef(
    "unsqueeze", _unsqueeze_infer,
    vjp=lambda b, node, g: (b.squeeze(g, axes=node.attrs["axes"]),),
    samples=lambda rng: [Sample((rand(rng, 2, 3),), {"axes": (0,)}),
                         Sample((rand(rng, 2, 3),), {"axes": (1, -1)})],
    doc="unsqueeze(x, axes=tuple): axes index the output"))


def _squeeze_infer(types, attrs):
    x = types[0]
    axes = attrs.get("axes")
    if axes is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    axes = norm_axes(axes, x.rank)
    for a in axes:
        if x.shape[a] != 1 and isinstance(x.shape[a], int):
            raise IRTypeError(f"cannot squeeze axis {a} of {x}: size is not 1")
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


SQUEEZE = register(OpDef(
    "squeeze", _squeeze_infer,
    vjp=lambda b, node, g: (b.reshape(g, shape=node.inputs[0].shape),),
    samples=lambda rng: [Sample((rand(rng, 2, 1, 3, 1),), {"axes": (1,)}),
                         Sample((rand(rng, 1, 3, 1),), {})],
    doc="squeeze(x, axes=None): axes=None drops every static 1"))
