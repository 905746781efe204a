"""Layout, indexing and creation ops: reshape, transpose, expand, squeeze,
unsqueeze, concat, split, slice, pad, gather, gather_elements, scatter_add,
tile, flip, shape_of, constant, full, arange.
Shape attrs may hold symbolic dims; the runtime resolves them from the
graph inputs' actual shapes. Slicing or padding a symbolic axis gives an
opaque "(d-k)" / "(d+k)" dim (see offset_dim), trusting d to be large
enough for the slice's small indices, the way broadcast trusts names."""
import math
import re

import numpy as np

from irtool.errors import IRTypeError
from irtool.ir.dtypes import check_dtype, is_float, is_int
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import same_dtype
from irtool.ir.shapes import (add_dims, broadcast, canon, check_shape, div_dims, mul_dims, norm_axes, norm_axis,
                               numel)
from irtool.ir.ops.sampling import ints, rand


def _constant_infer(types, attrs):
    v = attrs["value"]
    if not isinstance(v, np.ndarray):
        raise IRTypeError("constant needs a numpy array in attr 'value'")
    return [TensorType(check_dtype(v.dtype), v.shape)]


CONSTANT = register(OpDef(
    "constant", _constant_infer, differentiable=False,
    samples=lambda rng: [Sample((), {"value": rand(rng, 2, 3)}),
                         Sample((), {"value": np.array([3, -1, 4], np.int64)}),
                         Sample((), {"value": np.array(2.5, np.float32)})],
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
                         Sample((rand(rng, 2, 3, 4),), {"shape": (4, -1, 2)}),
                         Sample((rand(rng),), {"shape": (1, 1)}),
                         Sample((rand(rng, 1, 1, 1),), {"shape": ()}),
                         Sample((ints(rng, 6),), {"shape": (3, 2)})],
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
                         Sample((rand(rng),), {"shape": (2, 2)}),
                         Sample((rand(rng, 2, 1, 3),), {"shape": (4, 2, 5, 3)}),
                         Sample((ints(rng, 1, 3),), {"shape": (2, 3)})],
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
                         Sample((rand(rng, 2, 3),), {}),
                         Sample((rand(rng, 2, 3, 1, 4),), {"perm": (3, 1, 0, 2)}),
                         Sample((ints(rng, 2, 3, 4),), {"perm": (1, 2, 0)})],
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
                         Sample((rand(rng, 2, 3),), {"axes": (1, -1)}),
                         Sample((rand(rng),), {"axes": (0, -1)}),
                         Sample((ints(rng, 3),), {"axes": (-2,)})],
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
                         Sample((rand(rng, 1, 3, 1),), {}),
                         Sample((rand(rng, 2, 1, 3, 1),), {"axes": (-1, 1)}),
                         Sample((rand(rng, 1, 1),), {}),
                         Sample((ints(rng, 1, 4),), {"axes": (0,)})],
    doc="squeeze(x, axes=None): axes=None drops every static 1"))


# -- helpers -------------------------------------------------------------------

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63
_BIG = 2 ** 31 - 1          # |index| at or past this means "to the end" on a symbolic axis
_OFFSET = re.compile(r"^\((.+)([+-])(\d+)\)$")


def offset_dim(d, k):
    """d + k for a static or symbolic dim. Symbolic results are opaque
    "(d+k)" / "(d-k)" names; offsets of such a name merge back (so slicing
    then padding a symbolic axis by the same amount gives back d)."""
    if isinstance(d, int):
        return d + k
    if k == 0:
        return d
    m = _OFFSET.match(d)
    if m:
        d, k = m.group(1), k + (int(m.group(3)) if m.group(2) == "+" else -int(m.group(3)))
        try:
            d = canon(d)
        except IRTypeError:
            d = f"({d})"
        if k == 0:
            return d
    return f"({d}{'+' if k > 0 else '-'}{abs(k)})"


def _sum_dims(a, b):
    if isinstance(a, int) or isinstance(b, int):
        return offset_dim(b, a) if isinstance(a, int) else offset_dim(a, b)
    return add_dims(a, b)


def _zeros(b, x):
    return b.expand(b.const(0, x.dtype), shape=x.shape)


def _axis_pads(rank, axis, lo, hi):
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = lo, hi
    return tuple(pads)


def _ints(values, what):
    try:
        values = tuple(values)
    except TypeError:
        raise IRTypeError(f"{what} must be a tuple of ints, got {values!r}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise IRTypeError(f"{what} must be a tuple of ints, got {values!r}")
    return values


def _bounds(values, what):
    """Slice starts/ends: ints, or symbolic dims (a sequence length read off
    an input, as in `x[:, :seq]`)."""
    try:
        values = tuple(values)
    except TypeError:
        raise IRTypeError(f"{what} must be a tuple of ints or dims, got {values!r}") from None
    if isinstance(values, str) or not all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
                                          for v in values):
        raise IRTypeError(f"{what} must be a tuple of ints or dims, got {values!r}")
    return tuple(canon(v) if isinstance(v, str) else v for v in values)


def _index_dtype(t, op):
    if t.dtype not in ("int32", "int64"):
        raise IRTypeError(f"{op} indices must be int32 or int64, got {t.dtype}")


# -- concat / split ------------------------------------------------------------

def _concat_infer(types, attrs):
    if not types:
        raise IRTypeError("concat needs at least one input")
    dtype = same_dtype(types, "concat inputs")
    rank = types[0].rank
    if any(t.rank != rank for t in types):
        raise IRTypeError(f"concat inputs must share one rank, got {', '.join(map(str, types))}")
    if rank == 0:
        raise IRTypeError("concat needs inputs of rank >= 1")
    axis = norm_axis(attrs["axis"], rank)
    out = list(types[0].shape)
    for t in types[1:]:
        for i, d in enumerate(t.shape):
            if i == axis:
                out[i] = _sum_dims(out[i], d)
            elif isinstance(d, int) and isinstance(out[i], int) and d != out[i]:
                raise IRTypeError(f"concat inputs differ off axis {axis}: {', '.join(map(str, types))}")
            elif isinstance(out[i], str) and isinstance(d, int):
                out[i] = d
    return [TensorType(dtype, tuple(out))]


def _concat_vjp(b, node, g):
    axis = norm_axis(node.attrs["axis"], g.rank)
    sizes = tuple(x.shape[axis] for x in node.inputs)
    if len(sizes) == 1:
        return (g,)
    if not all(isinstance(s, int) for s in sizes):    # symbolic offsets: split by sizes
        return tuple(b.split(g, sizes=sizes, axis=axis))
    out, start = [], 0
    for s in sizes:
        out.append(b.slice(g, starts=(start,), ends=(start + s,), axes=(axis,)))
        start += s
    return tuple(out)


CONCAT = register(OpDef(
    "concat", _concat_infer, vjp=_concat_vjp, variadic=True,
    samples=lambda rng: [Sample((rand(rng, 2, 3), rand(rng, 4, 3)), {"axis": 0}),
                         Sample((rand(rng, 2, 1, 3), rand(rng, 2, 4, 3), rand(rng, 2, 2, 3)), {"axis": -2}),
                         Sample((rand(rng, 3),), {"axis": 0}),
                         Sample((ints(rng, 2, 2), ints(rng, 2, 3)), {"axis": 1})],
    doc="concat(values, axis=int): b.concat([a, c], axis=1)"))


def _split_infer(types, attrs):
    x = types[0]
    if x.rank == 0:
        raise IRTypeError("split needs an input of rank >= 1")
    axis = norm_axis(attrs["axis"], x.rank)
    sizes = check_shape(attrs["sizes"])
    if not sizes:
        raise IRTypeError("split needs at least one size")
    total, d = 0, x.shape[axis]
    for s in sizes:
        total = _sum_dims(total, s)
    if isinstance(total, int) and isinstance(d, int) and total != d:
        raise IRTypeError(f"split sizes {sizes} sum to {total}, but axis {axis} of {x} has size {d}")
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


def _split_vjp(b, node, g):
    gs = g if isinstance(g, tuple) else (g,)
    parts = [c if c is not None else _zeros(b, o) for c, o in zip(gs, node.outputs)]
    return (parts[0] if len(parts) == 1 else b.concat(parts, axis=node.attrs["axis"]),)


SPLIT = register(OpDef(
    "split", _split_infer, vjp=_split_vjp, shape_attrs=("sizes",),
    samples=lambda rng: [Sample((rand(rng, 5, 3),), {"sizes": (2, 3), "axis": 0}),
                         Sample((rand(rng, 2, 6, 3),), {"sizes": (1, 2, 3), "axis": -2}),
                         Sample((rand(rng, 2, 4),), {"sizes": (4,), "axis": 1}),
                         Sample((ints(rng, 4, 3),), {"sizes": (3, 1), "axis": 0})],
    doc="split(x, sizes=tuple, axis=int) -> one output per size (sizes may be symbolic)"))


# -- slice -----------------------------------------------------------------------

def slice_bounds(d, start, end, step):
    """ONNX Slice on an axis of static size d: (first index, stop, count)
    after ONNX's negative-index and clamping rules. `stop` is -1 when a
    negative step runs past index 0."""
    if step == 0:
        raise IRTypeError("slice steps must not be 0")
    start = start + d if start < 0 else start
    end = end + d if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), d), min(max(end, 0), d)
        n = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
        n = max(0, -(-(start - end) // -step))
    return start, end, n


def slice_axes(rank, attrs):
    """[(axis, start, end, step)] for the axes a slice touches."""
    starts = _bounds(attrs["starts"], "slice starts")
    ends = _bounds(attrs["ends"], "slice ends")
    axes = attrs.get("axes")
    axes = tuple(range(len(starts))) if axes is None else _ints(axes, "slice axes")
    steps = attrs.get("steps")
    steps = (1,) * len(starts) if steps is None else _ints(steps, "slice steps")
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise IRTypeError(f"slice starts, ends, axes and steps differ in length: "
                          f"{starts}, {ends}, {axes}, {steps}")
    if 0 in steps:
        raise IRTypeError(f"slice steps must not be 0, got {steps}")
    norm = [norm_axis(a, rank) for a in axes]
    if len(set(norm)) != len(norm):
        raise IRTypeError(f"repeated axis in slice axes {axes}")
    return list(zip(norm, starts, ends, steps))


def _position(v, step, is_start):
    """Where a start/end lands on an axis of unknown size, trusting the size to
    exceed every small index: ("b", i) is index i, ("e", i) is index size+i."""
    if -_BIG < v < _BIG:
        return ("b", v) if v >= 0 else ("e", v)
    if v >= _BIG:
        return ("e", 0) if step > 0 else ("e", -1)
    if is_start:
        return ("b", 0)
    return ("b", 0) if step > 0 else ("b", -1)


def slice_dim(d, start, end, step):
    """Output size of one sliced axis and how to place a cotangent back:
    ("static", n, lo, hi): n elements, lowest index lo, hi elements after the
    highest one (d static); ("pad", n, lo, hi) for |step| 1 on a symbolic axis
    (n symbolic); ("index", n, first) with n static and indices first + i*step
    (negative ones count from the end) on a symbolic axis."""
    if isinstance(start, str) or isinstance(end, str):
        return _symbolic_slice_dim(start, end, step)
    if isinstance(d, int):
        s, _, n = slice_bounds(d, start, end, step)
        if n == 0:
            return ("static", 0, 0, d)
        lo = s if step > 0 else s + (n - 1) * step
        hi = d - 1 - (s + (n - 1) * step if step > 0 else s)
        return ("static", n, lo, hi)
    (fs, s), (fe, e) = _position(start, step, True), _position(end, step, False)
    if fs == fe:
        return ("index", max(0, -(-(e - s) // step)), s)
    if abs(step) == 1 and (fs == "b") == (step > 0):
        if step > 0:      # s from the beginning, e from the end
            return ("pad", offset_dim(d, e - s), s, -e)
        return ("pad", offset_dim(d, s - e), e + 1, -s - 1)
    raise IRTypeError(f"slice {start}:{end}:{step} of symbolic size {d!r} has no static or "
                      "symbolic size; count start and end from the same side")


def _symbolic_slice_dim(start, end, step):
    """("symbolic", n, start, end) for start:end with a symbolic bound; both
    count from the beginning and end <= size (torch.export guards this)."""
    if step != 1 or any(isinstance(v, int) and v < 0 for v in (start, end)):
        raise IRTypeError(f"slice {start}:{end}:{step} with a symbolic bound needs step 1 and "
                          "non-negative bounds")
    if isinstance(start, int):
        return ("symbolic", offset_dim(end, -start), start, end)
    return ("symbolic", canon(f"({end}-{start})"), start, end)


def slice_plan(x_type, attrs):
    """One (axis, kind, data) per sliced axis, fixed at build time. "range"
    data is (lo, hi, step): take lo..hi ascending by |step|, flipped when
    step < 0 (bounds counted from the end stay negative, so a symbolic axis
    size is never needed). "symbolic" data is the position of a symbolic
    start/end pair in the attrs, read once resolved at call time."""
    plan = []
    for i, (axis, start, end, step) in enumerate(slice_axes(x_type.rank, attrs)):
        spec = slice_dim(x_type.shape[axis], start, end, step)
        kind, n = spec[0], spec[1]
        if kind == "symbolic":
            plan.append((axis, "symbolic", i))
        elif isinstance(n, int) and n == 0:
            plan.append((axis, "empty", None))
        elif kind == "static":              # lowest index lo, n elements
            lo = spec[2]
            plan.append((axis, "range", (lo, lo + (n - 1) * abs(step) + 1, step)))
        elif kind == "pad":                 # |step| 1: drop lo in front and hi at the end
            lo, hi = spec[2], spec[3]
            plan.append((axis, "range", (lo, -hi if hi else None, step)))
        else:                               # "index": n static, first + i*step, on one side
            first = spec[2]
            last = first + (n - 1) * step
            low, high = min(first, last), max(first, last)
            plan.append((axis, "range", (low, high + 1 if high != -1 else None, step)))
    return plan


def _slice_infer(types, attrs):
    x = types[0]
    shape = list(x.shape)
    for axis, start, end, step in slice_axes(x.rank, attrs):
        shape[axis] = slice_dim(x.shape[axis], start, end, step)[1]
    return [TensorType(x.dtype, tuple(shape))]


def _slice_vjp(b, node, g):
    x = node.inputs[0]
    specs = [(axis, step, slice_dim(x.shape[axis], start, end, step))
             for axis, start, end, step in slice_axes(x.rank, node.attrs)]
    if any(spec[1] == 0 for _, _, spec in specs):
        return (_zeros(b, x),)
    # pad-placed axes first, so index-placed ones see x's own (bindable) dims
    for axis, step, spec in sorted(specs, key=lambda s: s[2][0] in ("index", "symbolic")):
        kind, n = spec[0], spec[1]
        if kind == "symbolic":   # scatter into place at indices start..end-1
            idx = b.arange(start=spec[2], stop=spec[3], step=1, dtype="int64")
            idx = b.reshape(idx, shape=tuple(n if i == axis else 1 for i in range(g.rank)))
            target = tuple(x.shape[axis] if i == axis else dim for i, dim in enumerate(g.shape))
            zeros = b.expand(b.const(0, g.dtype), shape=target)
            g = b.scatter_add(zeros, b.expand(idx, shape=g.shape), g, axis=axis)
            continue
        if kind == "index":
            first = spec[2]
            idx = np.arange(n, dtype=np.int64) * step + first
            idx = b.reshape(b.const(idx, "int64"), shape=tuple(n if i == axis else 1 for i in range(g.rank)))
            target = tuple(x.shape[axis] if i == axis else dim for i, dim in enumerate(g.shape))
            zeros = b.expand(b.const(0, g.dtype), shape=target)
            g = b.scatter_add(zeros, b.expand(idx, shape=g.shape), g, axis=axis)
            continue
        lo, hi = spec[2], spec[3]
        if step < 0:
            g = b.flip(g, axes=(axis,))
        k = abs(step)
        if k > 1 and n > 1:     # interleave k-1 zeros after each element, then crop the tail
            g = b.unsqueeze(g, axes=(axis + 1,))
            g = b.pad(g, pads=_axis_pads(g.rank, axis + 1, 0, k - 1))
            g = b.reshape(g, shape=g.shape[:axis] + (n * k,) + g.shape[axis + 2:])
            hi -= k - 1
        g = b.pad(g, pads=_axis_pads(g.rank, axis, lo, hi))
    return (g,)


def _slice_samples(rng):
    x = rand(rng, 3, 4, 5)
    return [Sample((x,), {"starts": (1,), "ends": (3,), "axes": (1,)}),
            Sample((x,), {"starts": (0, -1), "ends": (INT64_MAX, INT64_MIN), "axes": (0, -1),
                          "steps": (2, -2)}),
            Sample((rand(rng, 6),), {"starts": (-4,), "ends": (100,)}),
            Sample((rand(rng, 4, 5),), {"starts": (-10,), "ends": (-20,), "axes": (0,), "steps": (-1,)}),
            Sample((rand(rng, 4, 6),), {"starts": (5, 1), "ends": (0, 5), "axes": (1, 0), "steps": (-3, 3)}),
            Sample((rand(rng, 7, 2),), {"starts": (1, 0), "ends": (7, 2), "steps": (3, 1)}),
            Sample((rand(rng, 4, 3),), {"starts": (3,), "ends": (1,), "axes": (0,)}),
            Sample((ints(rng, 4, 5),), {"starts": (1,), "ends": (-1,), "axes": (-1,)})]


SLICE = register(OpDef(
    "slice", _slice_infer, vjp=_slice_vjp, samples=_slice_samples, shape_attrs=("starts", "ends"),
    doc="slice(x, starts, ends, axes=None, steps=None): ONNX Slice semantics (clamping, negative "
        "indices and steps; INT64_MAX / INT64_MIN run to the end)"))


# -- pad -------------------------------------------------------------------------

PAD_MODES = ("constant", "reflect", "edge")


def _pad_parts(rank, pads):
    pads = _ints(pads, "pad pads")
    if len(pads) != 2 * rank:
        raise IRTypeError(f"pads {pads} must hold 2*rank = {2 * rank} ints (all begins, then all ends)")
    return pads[:rank], pads[rank:]


def _pad_infer(types, attrs):
    x = types[0]
    begins, ends = _pad_parts(x.rank, attrs["pads"])
    mode = attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        raise IRTypeError(f"pad mode {mode!r} is not one of {', '.join(PAD_MODES)}")
    shape = []
    for i, (d, lo, hi) in enumerate(zip(x.shape, begins, ends)):
        kept = offset_dim(d, min(lo, 0) + min(hi, 0))
        if isinstance(kept, int):
            if kept < 0:
                raise IRTypeError(f"pads {tuple(attrs['pads'])} crop more than axis {i} of {x} holds")
            if mode == "reflect" and max(lo, hi) >= max(kept, 1):
                raise IRTypeError(f"reflect pads on axis {i} must be smaller than its size {kept}")
            if mode == "edge" and max(lo, hi) > 0 and kept == 0:
                raise IRTypeError(f"edge padding needs a non-empty axis {i}")
        shape.append(offset_dim(d, lo + hi))
    return [TensorType(x.dtype, tuple(shape))]


def _pad_axis_adjoint(b, g, axis, n, lo, hi, mode):
    """Adjoint of reflect/edge padding of one axis: size lo+n+hi -> n."""
    if not isinstance(n, int):
        raise IRTypeError(f"the gradient of {mode} padding needs a static size on axis {axis}, got {n!r}")
    r = g.rank
    out = b.slice(g, starts=(lo,), ends=(lo + n,), axes=(axis,))
    if lo > 0:
        part = b.slice(g, starts=(0,), ends=(lo,), axes=(axis,))
        if mode == "edge":
            part, where = b.reduce_sum(part, axes=(axis,), keepdims=True), (0, n - 1)
        else:
            part, where = b.flip(part, axes=(axis,)), (1, n - 1 - lo)
        out = b.add(out, b.pad(part, pads=_axis_pads(r, axis, *where)))
    if hi > 0:
        part = b.slice(g, starts=(lo + n,), ends=(lo + n + hi,), axes=(axis,))
        if mode == "edge":
            part, where = b.reduce_sum(part, axes=(axis,), keepdims=True), (n - 1, 0)
        else:
            part, where = b.flip(part, axes=(axis,)), (n - 1 - hi, 1)
        out = b.add(out, b.pad(part, pads=_axis_pads(r, axis, *where)))
    return out


def _pad_vjp(b, node, g):
    x = node.inputs[0]
    pads = tuple(node.attrs["pads"])
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":           # padding by -pads crops what was added, zero-fills what was cropped
        return (b.pad(g, pads=tuple(-p for p in pads)),)
    begins, ends = _pad_parts(x.rank, pads)
    for axis, (d, lo, hi) in enumerate(zip(x.shape, begins, ends)):
        if max(lo, 0) or max(hi, 0):
            n = offset_dim(d, min(lo, 0) + min(hi, 0))
            g = _pad_axis_adjoint(b, g, axis, n, max(lo, 0), max(hi, 0), mode)
    crop = tuple(-min(p, 0) for p in pads)
    return (b.pad(g, pads=crop) if any(crop) else g,)


def _pad_samples(rng):
    return [Sample((rand(rng, 2, 3),), {"pads": (1, 0, 2, 1)}),
            Sample((rand(rng, 2, 3, 4),), {"pads": (0, 1, -1, 1, 0, 2), "value": 1.5}),
            Sample((rand(rng, 3, 4),), {"pads": (2, 1, 1, 3), "mode": "reflect"}),
            Sample((rand(rng, 3, 4),), {"pads": (1, 2, 3, 0), "mode": "edge"}),
            Sample((rand(rng, 4, 5),), {"pads": (-1, 2, 1, -2), "mode": "reflect"}),
            Sample((rand(rng, 4, 3),), {"pads": (2, -1, -1, 1), "mode": "edge"}),
            Sample((rand(rng, 1, 3),), {"pads": (2, 0, 1, 0), "mode": "edge"}),
            Sample((ints(rng, 2, 3),), {"pads": (1, 1, 0, 2), "value": 7})]


PAD = register(OpDef(
    "pad", _pad_infer, vjp=_pad_vjp, samples=_pad_samples,
    doc="pad(x, pads=(begins..., ends...), mode='constant'|'reflect'|'edge', value=0.0); "
        "negative pads crop first, then reflect/edge pad the cropped tensor"))


# -- gather / scatter ------------------------------------------------------------

def _gather_infer(types, attrs):
    x, idx = types
    _index_dtype(idx, "gather")
    if x.rank == 0:
        raise IRTypeError("gather needs an input of rank >= 1")
    axis = norm_axis(attrs.get("axis", 0), x.rank)
    return [TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


def _gather_vjp(b, node, g):
    x, idx = node.inputs
    axis = norm_axis(node.attrs.get("axis", 0), x.rank)
    k = numel(idx.shape)
    flat = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    idx = b.reshape(idx, shape=tuple(k if i == axis else 1 for i in range(x.rank)))
    g = b.reshape(g, shape=flat)
    return (b.scatter_add(_zeros(b, x), b.expand(idx, shape=flat), g, axis=axis), None)


GATHER = register(OpDef(
    "gather", _gather_infer, vjp=_gather_vjp, nondiff_inputs=(1,),
    samples=lambda rng: [Sample((rand(rng, 5, 3), ints(rng, 2, 2, low=-5, high=5)), {"axis": 0}),
                         Sample((rand(rng, 2, 4, 3), np.array([1, -1, 1], np.int32)), {"axis": -2}),
                         Sample((rand(rng, 4, 3), np.array(-1, np.int64)), {"axis": 1}),
                         Sample((ints(rng, 6), ints(rng, 2, 3, high=6)), {})],
    doc="gather(x, indices, axis=0): numpy take / ONNX Gather; negative indices wrap"))


def _elements_check(x, idx, op, axis):
    _index_dtype(idx, op)
    if x.rank != idx.rank or x.rank == 0:
        raise IRTypeError(f"{op} needs indices of the input's rank (>= 1), got {x} and {idx}")
    for i, (d, k) in enumerate(zip(x.shape, idx.shape)):
        if i != axis and isinstance(d, int) and isinstance(k, int) and k > d:
            raise IRTypeError(f"{op} indices {idx} exceed {x} on axis {i}")


def _gather_elements_infer(types, attrs):
    x, idx = types
    axis = norm_axis(attrs.get("axis", 0), x.rank)
    _elements_check(x, idx, "gather_elements", axis)
    return [TensorType(x.dtype, idx.shape)]


GATHER_ELEMENTS = register(OpDef(
    "gather_elements", _gather_elements_infer,
    vjp=lambda b, node, g: (b.scatter_add(_zeros(b, node.inputs[0]), node.inputs[1], g,
                                          axis=node.attrs.get("axis", 0)), None),
    nondiff_inputs=(1,),
    samples=lambda rng: [Sample((rand(rng, 3, 4), ints(rng, 3, 5, low=-4, high=4)), {"axis": 1}),
                         Sample((rand(rng, 3, 4, 2), ints(rng, 2, 4, 2, high=3, dtype="int32")),
                                {"axis": 0}),
                         Sample((rand(rng, 3, 4), ints(rng, 6, 3, low=-3, high=3)), {"axis": -2}),
                         Sample((ints(rng, 2, 5), ints(rng, 2, 3, high=5)), {"axis": 1})],
    doc="gather_elements(x, indices, axis=0): torch.gather / ONNX GatherElements"))


def _scatter_add_infer(types, attrs):
    x, idx, upd = types
    axis = norm_axis(attrs.get("axis", 0), x.rank) if x.rank else 0
    _elements_check(x, idx, "scatter_add", axis)
    if upd.shape != idx.shape or upd.dtype != x.dtype:
        raise IRTypeError(f"scatter_add updates must have the indices' shape and the input's dtype, "
                          f"got {upd} for indices {idx} and input {x}")
    return [x]


SCATTER_ADD = register(OpDef(
    "scatter_add", _scatter_add_infer,
    vjp=lambda b, node, g: (g, None, b.gather_elements(g, node.inputs[1], axis=node.attrs.get("axis", 0))),
    nondiff_inputs=(1,),
    samples=lambda rng: [Sample((rand(rng, 3, 4), np.array([[0, 2, 0, 1], [0, 2, 2, 1]]), rand(rng, 2, 4)),
                                {"axis": 0}),
                         Sample((rand(rng, 3, 5), ints(rng, 3, 3, low=-5, high=5, dtype="int32"),
                                 rand(rng, 3, 3)), {"axis": -1}),
                         Sample((rand(rng, 4), np.array([1, 3, 1, -1, 0, 1]), rand(rng, 6)), {}),
                         Sample((ints(rng, 3, 2), ints(rng, 2, 1, high=3), ints(rng, 2, 1)), {"axis": 0})],
    doc="scatter_add(x, indices, updates, axis=0): copy of x with updates added at indices along "
        "axis (duplicates accumulate); torch.scatter_add / ONNX ScatterElements(reduction='add')"))


# -- tile / flip -----------------------------------------------------------------

def _tile_infer(types, attrs):
    x = types[0]
    reps = _ints(attrs["repeats"], "tile repeats")
    if len(reps) != x.rank or any(r < 0 for r in reps):
        raise IRTypeError(f"tile needs one non-negative repeat per axis of {x}, got {reps}")
    return [TensorType(x.dtype, tuple(mul_dims(d, r) for d, r in zip(x.shape, reps)))]


def _tile_vjp(b, node, g):
    x = node.inputs[0]
    reps = tuple(node.attrs["repeats"])
    g = b.reshape(g, shape=tuple(v for r, d in zip(reps, x.shape) for v in (r, d)))
    return (b.reduce_sum(g, axes=tuple(range(0, 2 * x.rank, 2)), keepdims=False),)


TILE = register(OpDef(
    "tile", _tile_infer, vjp=_tile_vjp,
    samples=lambda rng: [Sample((rand(rng, 2, 3),), {"repeats": (2, 1)}),
                         Sample((rand(rng, 2, 1, 3),), {"repeats": (1, 3, 2)}),
                         Sample((ints(rng, 3),), {"repeats": (2,)})],
    doc="tile(x, repeats=tuple): numpy tile with one repeat per axis"))


def _flip_infer(types, attrs):
    norm_axes(attrs.get("axes"), types[0].rank)
    return [types[0]]


FLIP = register(OpDef(
    "flip", _flip_infer,
    vjp=lambda b, node, g: (b.flip(g, axes=node.attrs.get("axes")),),
    samples=lambda rng: [Sample((rand(rng, 3, 4),), {"axes": (0,)}),
                         Sample((rand(rng, 2, 3, 4),), {"axes": (-1, 0)}),
                         Sample((rand(rng, 2, 3),), {}),
                         Sample((ints(rng, 5),), {"axes": (0,)})],
    doc="flip(x, axes=None): reverse the given axes (None: all)"))


# -- shape and creation ops --------------------------------------------------------

SHAPE_OF = register(OpDef(
    "shape_of", lambda types, attrs: [TensorType("int64", (types[0].rank,))], differentiable=False,
    samples=lambda rng: [Sample((rand(rng, 2, 3, 4),)), Sample((ints(rng),))],
    doc="shape_of(x) -> int64[rank]: the runtime shape"))


def _arange_len(start, stop, step, dtype):
    if isinstance(start, str) or isinstance(stop, str):
        if step != 1 or not is_int(dtype) or isinstance(start, float) or isinstance(stop, float):
            raise IRTypeError("arange with a symbolic bound needs an integer dtype and step 1")
        return _symbolic_slice_dim(start, stop, 1)[1]
    if step == 0:
        raise IRTypeError("arange step must not be 0")
    if is_float(dtype):
        return max(0, math.ceil((stop - start) / step))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop, step)):
        raise IRTypeError(f"arange of dtype {dtype} needs int start, stop and step")
    return max(0, -(-(stop - start) // step))


def _arange_infer(types, attrs):
    dtype = check_dtype(attrs.get("dtype", "int64"))
    if dtype == "bool":
        raise IRTypeError("arange cannot make bool values")
    return [TensorType(dtype, (_arange_len(attrs["start"], attrs["stop"], attrs.get("step", 1), dtype),))]


ARANGE = register(OpDef(
    "arange", _arange_infer, differentiable=False, shape_attrs=("start", "stop"),
    samples=lambda rng: [Sample((), {"start": 0, "stop": 5, "step": 1}),
                         Sample((), {"start": 2, "stop": -7, "step": -3, "dtype": "int32"}),
                         Sample((), {"start": 0.5, "stop": 2.0, "step": 0.25, "dtype": "float32"}),
                         Sample((), {"start": -1.0, "stop": 1.0, "step": 0.3, "dtype": "float64"}),
                         Sample((), {"start": 3, "stop": 3, "step": 1})],
    doc="arange(start, stop, step=1, dtype='int64'): ONNX Range; ceil((stop-start)/step) values"))


def _full_infer(types, attrs):
    return [TensorType(check_dtype(attrs.get("dtype", "float32")), check_shape(attrs["shape"]))]


FULL = register(OpDef(
    "full", _full_infer, differentiable=False, shape_attrs=("shape",),
    samples=lambda rng: [Sample((), {"shape": (2, 3), "value": 1.5, "dtype": "float32"}),
                         Sample((), {"shape": (), "value": 3, "dtype": "int64"}),
                         Sample((), {"shape": (2,), "value": True, "dtype": "bool"}),
                         Sample((), {"shape": (0, 3), "value": -2, "dtype": "int32"})],
    doc="full(shape=tuple, value=number, dtype='float32'); shape dims may be symbolic"))
