"""The TensorFlow op -> IR table of the TF frontend.

Each entry is `fn(ctx, op, *inputs) -> TV | [TV or None per output]`:
`op` is the tf.Operation (attrs through `ctx.attr(name)`), inputs are the
traced tensors (`TV`, see frontends/tf_trace.py): IR Values in a layout,
constants, or static shape vectors with symbolic dims. Entries fold
constants and shape arithmetic at trace time (`ctx.static`, `ctx.dims`) and
keep their input's layout where the op does not care about it (elementwise,
reductions, concat, pad ...); `ctx.value(tv, perm)` gives a Value in a wanted
layout (None = TF's order), transposing only when needed.

Semantics follow TensorFlow's kernels; where the IR differs (SAME padding,
half-pixel resize, conv kernel layouts) the entry converts.
"""
import numpy as np

from irtool.errors import UnsupportedError
from irtool.frontends.tf_trace import TV, channels_first, ir_dtype
from irtool.ir.dtypes import is_float, np_dtype
from irtool.ir.shapes import add_dims, canon, div_dims, mul_dims

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63


def _out_dtype(op, i=0):
    return ir_dtype(op.outputs[i].dtype)


def _norm(axis, rank):
    axis = int(axis)
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise UnsupportedError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def _remove_axes(perm, axes):
    """Layout after dropping TF axes `axes` from a tensor in layout perm."""
    if perm is None:
        return None
    axes = set(axes)
    return tuple(p - sum(a < p for a in axes) for p in perm if p not in axes)


def _ir_axis(tv, axis):
    return tv.perm.index(axis) if tv.perm is not None else axis


def _is_static_value(tv):
    return tv.value is None and tv.resource is None


# -- elementwise ------------------------------------------------------------------------

def _layout_of(inputs):
    rank = max(t.rank for t in inputs)
    for t in inputs:
        if t.value is not None and t.rank == rank and t.perm is not None:
            return rank, t.perm
    return rank, None


def broadcast_value(ctx, t, rank, perm):
    """t as a Value that broadcasts against tensors of rank `rank` held in layout perm."""
    if perm is None or t.rank == 0:
        return ctx.value(t)
    if t.rank == rank:
        return ctx.value(t, perm)
    padded = (1,) * (rank - t.rank) + tuple(t.shape)
    shape = tuple(padded[p] for p in perm)
    if t.const is not None:
        return ctx.b.const(np.ascontiguousarray(np.transpose(t.const.reshape(padded), perm)), t.dtype)
    v = ctx.value(t)
    order = [p for p in perm if padded[p] != 1]
    if order == sorted(order):
        return ctx.b.reshape(v, shape=shape)
    return ctx.b.transpose(ctx.b.reshape(v, shape=padded), perm=perm)


def elementwise(ctx, op, inputs, ir_fn, np_fn=None, sym_fn=None):
    """Apply an n-ary broadcasting op: at trace time on constants (np_fn) and
    shape vectors (sym_fn), else in the IR in the inputs' common layout."""
    dtype = _out_dtype(op)
    if np_fn is not None and all(t.const is not None for t in inputs):
        with np.errstate(all="ignore"):
            return ctx.constant(np.asarray(np_fn(*[t.const for t in inputs])).astype(np_dtype(dtype)), dtype)
    if sym_fn is not None and all(t.static is not None for t in inputs):
        arrs = np.broadcast_arrays(*[np.asarray(t.static, dtype=object) for t in inputs])
        out = np.empty(arrs[0].shape, dtype=object)
        for idx in np.ndindex(out.shape):
            r = sym_fn(*[a[idx] for a in arrs])
            if r is None:
                break
            out[idx] = r
        else:
            return ctx.symbolic(out, dtype)
    rank, perm = _layout_of(inputs)
    vals = [broadcast_value(ctx, t, rank, perm) for t in inputs]
    return ctx.tensor(ir_fn(*vals), perm)


def _sym(f):
    """A symbolic-dim version of an int op; None when it cannot be done exactly."""
    def g(*xs):
        if all(isinstance(x, (int, np.integer)) for x in xs):
            return None
        try:
            return f(*[int(x) if isinstance(x, (int, np.integer)) else x for x in xs])
        except Exception:  # noqa: BLE001
            return None
    return g


def _sym_sub(a, c):
    if isinstance(c, int):
        return add_dims(a, -c)
    return canon(f"({a}-{c})") if a != c else 0


def _sym_floordiv(a, c):
    return div_dims(a, c)


def _sym_max(a, c):
    if a == c:
        return a
    if isinstance(c, int) and c <= 1 or isinstance(a, int) and a <= 1:   # dims are >= 1 once known non-empty
        return c if isinstance(a, int) else a
    return None


def _sym_min(a, c):
    if a == c:
        return a
    return None


def _binary(ir_name, np_fn, sym_fn=None):
    def fn(ctx, op, a, c):
        return elementwise(ctx, op, [a, c], lambda x, y: getattr(ctx.b, ir_name)(x, y), np_fn, sym_fn)
    return fn


def _unary(ir_fn, np_fn=None):
    def fn(ctx, op, x):
        return elementwise(ctx, op, [x], lambda v: ir_fn(ctx.b, v), np_fn)
    return fn


def _real_div(ctx, op, a, c):
    dtype = _out_dtype(op)
    if is_float(dtype):
        return elementwise(ctx, op, [a, c], lambda x, y: ctx.b.div(x, y), np.divide)
    return _floor_div(ctx, op, a, c)


def _floor_div(ctx, op, a, c):
    b = ctx.b
    dtype = _out_dtype(op)
    if is_float(dtype):
        return elementwise(ctx, op, [a, c], lambda x, y: b.floor(b.div(x, y)), lambda x, y: np.floor(x / y))

    def ir(x, y):    # floor division of ints: x - mod(x, y) is an exact multiple of y
        return b.div(b.sub(x, b.mod(x, y)), y)
    return elementwise(ctx, op, [a, c], ir, np.floor_divide, _sym(_sym_floordiv))


def _squared_difference(ctx, op, a, c):
    b = ctx.b

    def ir(x, y):
        d = b.sub(x, y)
        return b.mul(d, d)
    return elementwise(ctx, op, [a, c], ir, lambda x, y: (x - y) * (x - y))


def _pow(ctx, op, a, c):
    b = ctx.b
    if c.const is not None and c.const.size == 1 and float(c.const.reshape(-1)[0]) == 2.0:
        return elementwise(ctx, op, [a], lambda x: b.mul(x, x), lambda x: x * x)
    return elementwise(ctx, op, [a, c], lambda x, y: b.pow(x, y), np.power)


def _bias_add(ctx, op, x, bias):
    fmt = ctx.attr("data_format", "NHWC")
    if fmt.startswith("NC") and x.rank > 2:
        shape = (bias.shape[0],) + (1,) * (x.rank - 2)
        bias = _reshape(ctx, op, bias, ctx.constant(np.array(shape, np.int64)), check=False)
    return elementwise(ctx, op, [x, bias], lambda v, w: ctx.b.add(v, w), np.add)


def _add_n(ctx, op, *xs):
    b = ctx.b

    def ir(*vs):
        out = vs[0]
        for v in vs[1:]:
            out = b.add(out, v)
        return out
    return elementwise(ctx, op, list(xs), ir, lambda *a: sum(a[1:], a[0]))


def _select(ctx, op, cond, a, c):
    if op.type == "Select" and cond.rank == 1 and a.rank > 1:   # TF1 Select picks rows
        cond = _expand_dims_static(ctx, cond, a.rank)
    return elementwise(ctx, op, [cond, a, c], lambda p, x, y: ctx.b.where(p, x, y), np.where)


def _expand_dims_static(ctx, t, rank):
    shape = tuple(t.shape) + (1,) * (rank - t.rank)
    if t.const is not None:
        return ctx.constant(t.const.reshape(shape), t.dtype)
    return ctx.tensor(ctx.b.reshape(ctx.value(t), shape=shape))


def _clip_by_value(ctx, op, x, lo, hi):
    b = ctx.b
    if lo.const is not None and hi.const is not None and lo.const.size == 1 and hi.const.size == 1 \
            and is_float(x.dtype):
        lo_v, hi_v = float(lo.const.reshape(-1)[0]), float(hi.const.reshape(-1)[0])
        return elementwise(ctx, op, [x], lambda v: b.clip(v, min=lo_v, max=hi_v),
                           lambda v: np.clip(v, lo_v, hi_v))
    return elementwise(ctx, op, [x, lo, hi], lambda v, p, q: b.minimum(b.maximum(v, p), q),
                       lambda v, p, q: np.minimum(np.maximum(v, p), q))


def _cast(ctx, op, x):
    dtype = _out_dtype(op)
    if x.const is not None:
        return ctx.constant(x.const.astype(np_dtype(dtype)), dtype)
    if x.sym is not None and dtype.startswith(("int", "uint")):
        return TV(dtype, x.shape, sym=x.sym)
    if x.dtype == dtype:
        return x
    v = ctx.value(x, x.perm) if x.value is not None else ctx.value(x)
    return ctx.tensor(ctx.b.cast(v, dtype=dtype), x.perm if x.value is not None else None)


def _identity(ctx, op, *xs):
    return list(xs)


def _stop_gradient(ctx, op, x):
    """StopGradient, and PreventGradient (whose gradient TF refuses to take):
    the IR's stop_gradient. Constants, static shapes and non-float tensors
    carry no gradient anyway and pass through."""
    if x.static is not None or x.items is not None or not is_float(x.dtype):
        return x
    perm = x.perm if x.value is not None else None
    return ctx.tensor(ctx.b.stop_gradient(ctx.value(x, perm)), perm)


def _selu(b, x):
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return b.mul(b.elu(x, alpha=alpha), scale)


def _softsign(b, x):
    return b.div(x, b.add(b.abs(x), 1.0))


def _leaky_relu(ctx, op, x):
    alpha = float(ctx.attr("alpha", 0.2))
    return elementwise(ctx, op, [x], lambda v: ctx.b.leaky_relu(v, alpha=alpha),
                       lambda v: np.where(v > 0, v, v * alpha))


def _softplus(b, x):
    return b.softplus(x)


def _erfc(b, x):
    return b.sub(1.0, b.erf(x))


def _np_erf(x):
    import math as m
    return np.vectorize(m.erf)(x)


UNARY = {
    "Relu": (lambda b, x: b.relu(x), lambda x: np.maximum(x, 0)),
    "Relu6": (lambda b, x: b.clip(x, min=0.0, max=6.0), lambda x: np.clip(x, 0, 6)),
    "Elu": (lambda b, x: b.elu(x), None),
    "Selu": (_selu, None),
    "Sigmoid": (lambda b, x: b.sigmoid(x), lambda x: 1 / (1 + np.exp(-x))),
    "Tanh": (lambda b, x: b.tanh(x), np.tanh),
    "Softplus": (_softplus, None),
    "Softsign": (_softsign, None),
    "Exp": (lambda b, x: b.exp(x), np.exp),
    "Log": (lambda b, x: b.log(x), np.log),
    "Log1p": (lambda b, x: b.log1p(x), np.log1p),
    "Sqrt": (lambda b, x: b.sqrt(x), np.sqrt),
    "Rsqrt": (lambda b, x: b.rsqrt(x), lambda x: 1 / np.sqrt(x)),
    "Square": (lambda b, x: b.mul(x, x), np.square),
    "Neg": (lambda b, x: b.neg(x), np.negative),
    "Abs": (lambda b, x: b.abs(x), np.abs),
    "Sign": (lambda b, x: b.sign(x), np.sign),
    "Floor": (lambda b, x: b.floor(x), np.floor),
    "Ceil": (lambda b, x: b.ceil(x), np.ceil),
    "Round": (lambda b, x: b.round(x), np.round),
    "Reciprocal": (lambda b, x: b.reciprocal(x), np.reciprocal),
    "Inv": (lambda b, x: b.reciprocal(x), np.reciprocal),
    "Erf": (lambda b, x: b.erf(x), _np_erf),
    "Erfc": (_erfc, lambda x: 1 - _np_erf(x)),
    "Sin": (lambda b, x: b.sin(x), np.sin),
    "Cos": (lambda b, x: b.cos(x), np.cos),
    "IsNan": (lambda b, x: b.isnan(x), np.isnan),
    "IsInf": (lambda b, x: b.eq(b.abs(x), float("inf")), np.isinf),
    "IsFinite": (lambda b, x: b.lt(b.abs(x), float("inf")), np.isfinite),
    "LogicalNot": (lambda b, x: b.logical_not(x), np.logical_not),
}

BINARY = {
    "Add": ("add", np.add, _sym(add_dims)),
    "AddV2": ("add", np.add, _sym(add_dims)),
    "Sub": ("sub", np.subtract, _sym(_sym_sub)),
    "Mul": ("mul", np.multiply, _sym(mul_dims)),
    "Maximum": ("maximum", np.maximum, _sym(_sym_max)),
    "Minimum": ("minimum", np.minimum, _sym(_sym_min)),
    "FloorMod": ("mod", np.mod, None),
    "Greater": ("gt", np.greater, None),
    "GreaterEqual": ("ge", np.greater_equal, None),
    "Less": ("lt", np.less, None),
    "LessEqual": ("le", np.less_equal, None),
    "Equal": ("eq", np.equal, None),
    "NotEqual": ("ne", np.not_equal, None),
    "LogicalAnd": ("logical_and", np.logical_and, None),
    "LogicalOr": ("logical_or", np.logical_or, None),
}


# -- shapes and constants -----------------------------------------------------------

def _const(ctx, op):
    import tensorflow as tf
    arr = tf.make_ndarray(op.get_attr("value"))
    return ctx.constant(arr, _out_dtype(op))


def _shape(ctx, op, x):
    return ctx.symbolic(np.array(list(x.shape) or [], dtype=object).reshape(len(x.shape)), _out_dtype(op))


def _shape_n(ctx, op, *xs):
    return [_shape_one(ctx, op, x, i) for i, x in enumerate(xs)]


def _shape_one(ctx, op, x, i):
    return ctx.symbolic(np.array(list(x.shape), dtype=object).reshape(len(x.shape)), _out_dtype(op, i))


def _size(ctx, op, x):
    return ctx.symbolic(np.array(mul_dims(*x.shape) if x.shape else 1, dtype=object), _out_dtype(op))


def _rank(ctx, op, x):
    return ctx.constant(np.array(x.rank), _out_dtype(op))


def _resolve(shape, target):
    """Reshape target with one -1 filled in (None when it cannot be done exactly)."""
    target = list(target)
    if -1 in target:
        known = mul_dims(*[d for d in target if d != -1]) if len(target) > 1 else 1
        total = mul_dims(*shape) if shape else 1
        rest = div_dims(total, known)
        if rest is None:
            return None
        target[target.index(-1)] = rest
    return tuple(target)


def _reshape(ctx, op, x, shape, check=True):
    target = ctx.dims(shape, "target shape")
    b = ctx.b
    if x.static is not None:
        arr = np.asarray(x.static)
        out = arr.reshape([int(d) for d in target]) if all(isinstance(d, int) for d in target) else None
        if out is None:
            raise UnsupportedError(f"Reshape {op.name!r} of a constant to a symbolic shape")
        return ctx.constant(out, x.dtype) if x.const is not None else ctx.symbolic(out, x.dtype)
    full = _resolve(x.shape, target)
    if x.resource is not None and x.value is None and full is not None and all(isinstance(d, int) for d in full):
        return TV(x.dtype, full, resource=x.resource, view=full)
    if x.perm is not None and full is not None:
        ir = reshape_in_layout(x.shape, x.perm, full)
        if ir is not None:
            ir_shape, perm = ir
            v = x.value if tuple(ir_shape) == x.value.shape else b.reshape(x.value, shape=ir_shape)
            return ctx.tensor(v, perm)
    v = ctx.value(x)
    target = full if full is not None else target
    return ctx.tensor(v if tuple(target) == v.shape else b.reshape(v, shape=target))


def reshape_in_layout(S, P, T):
    """(IR shape, layout) reshaping a tensor of TF shape S held in layout P to
    TF shape T without a transpose, or None when the reshape mixes axes whose
    order differs between the layouts."""
    s_axes = [a for a in range(len(S)) if S[a] != 1]
    t_axes = [a for a in range(len(T)) if T[a] != 1]
    groups = []
    i = j = 0
    while i < len(s_axes) and j < len(t_axes):
        gs, gt = [s_axes[i]], [t_axes[j]]
        ps, pt = S[s_axes[i]], T[t_axes[j]]
        i, j = i + 1, j + 1
        while canon(ps) != canon(pt):
            if div_dims(pt, ps) is not None and i < len(s_axes):
                gs.append(s_axes[i])
                ps = mul_dims(ps, S[s_axes[i]])
                i += 1
            elif div_dims(ps, pt) is not None and j < len(t_axes):
                gt.append(t_axes[j])
                pt = mul_dims(pt, T[t_axes[j]])
                j += 1
            else:
                return None
        groups.append((gs, gt))
    if i != len(s_axes) or j != len(t_axes):
        return None
    order = [p for p in P if S[p] != 1]
    firsts = []
    for gs, gt in groups:
        pos = [order.index(a) for a in gs]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            return None
        firsts.append(pos[0])
    out = []
    for _, (gs, gt) in sorted(zip(firsts, groups), key=lambda z: z[0]):
        out.extend(gt)
    for t in range(len(T)):
        if T[t] == 1:
            out.insert(out.index(t - 1) + 1 if t > 0 else 0, t)
    return tuple(T[a] for a in out), tuple(out)


def _squeeze(ctx, op, x):
    dims = [_norm(a, x.rank) for a in (ctx.attr("squeeze_dims") or [])]
    if not dims:
        dims = [a for a, d in enumerate(x.shape) if d == 1]
    shape = tuple(d for a, d in enumerate(x.shape) if a not in dims)
    if x.static is not None:
        arr = np.asarray(x.static).reshape([int(d) for d in shape])
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if x.resource is not None and x.value is None:
        return TV(x.dtype, shape, resource=x.resource, view=shape)
    if not dims:
        return x
    axes = tuple(sorted(_ir_axis(x, a) for a in dims))
    return ctx.tensor(ctx.b.squeeze(x.value, axes=axes), _remove_axes(x.perm, dims))


def _expand_dims(ctx, op, x, dim):
    a = _norm(ctx.scalar(dim, "axis"), x.rank + 1)
    shape = tuple(x.shape[:a]) + (1,) + tuple(x.shape[a:])
    if x.static is not None:
        arr = np.expand_dims(np.asarray(x.static), a)
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if x.resource is not None and x.value is None:
        return TV(x.dtype, shape, resource=x.resource, view=shape)
    if x.perm is None:
        return ctx.tensor(ctx.b.unsqueeze(x.value, axes=(a,)))
    mapped = [p + (1 if p >= a else 0) for p in x.perm]
    cf = list(channels_first(x.rank + 1))
    if [q for q in cf if q != a] == mapped:
        perm, pos = cf, cf.index(a)
    else:
        pos = mapped.index(a - 1) + 1 if a > 0 else 0
        perm = mapped[:pos] + [a] + mapped[pos:]
    return ctx.tensor(ctx.b.unsqueeze(x.value, axes=(pos,)), perm)


def _transpose(ctx, op, x, perm_tv):
    t = ctx.ints(perm_tv, "perm")
    if x.static is not None:
        arr = np.transpose(np.asarray(x.static), t)
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if x.value is None:
        ctx.value(x)
    inv = list(np.argsort(t))
    cur = x.perm or tuple(range(x.rank))
    return ctx.tensor(x.value, tuple(int(inv[p]) for p in cur))


def _concat(ctx, op, *args):
    if op.type == "Concat":
        axis_tv, xs = args[0], list(args[1:])
    else:
        xs, axis_tv = list(args[:-1]), args[-1]
    rank = xs[0].rank
    axis = _norm(ctx.scalar(axis_tv, "axis"), rank)
    xs = [x for x in xs if not (x.shape[axis] == 0)] or xs[:1]
    if all(x.static is not None for x in xs):
        arr = np.concatenate([np.asarray(x.static, dtype=object) for x in xs], axis=axis)
        if all(x.const is not None for x in xs):
            return ctx.constant(np.concatenate([x.const for x in xs], axis=axis), _out_dtype(op))
        return ctx.symbolic(arr, _out_dtype(op))
    if len(xs) == 1:
        return xs[0]
    perms = [x.perm for x in xs if x.value is not None and x.perm is not None]
    perm = max(set(perms), key=perms.count) if perms else None
    vals = [ctx.value(x, perm) for x in xs]
    return ctx.tensor(ctx.b.concat(vals, axis=perm.index(axis) if perm else axis), perm)


def _pack(ctx, op, *xs):
    return _pack_tvs(ctx, op, xs, _norm(ctx.attr("axis", 0), xs[0].rank + 1))


def _pack_tvs(ctx, op, xs, axis):
    dtype = xs[0].dtype
    if all(x.static is not None for x in xs):
        if all(x.const is not None for x in xs):
            return ctx.constant(np.stack([x.const for x in xs], axis=axis), dtype)
        return ctx.symbolic(np.stack([np.asarray(x.static, dtype=object) for x in xs], axis=axis), dtype)
    b = ctx.b
    perms = [x.perm for x in xs if x.value is not None]
    perm = perms[0] if perms and all(p == perms[0] for p in perms) and len(perms) == len(xs) else None
    if perm is not None:     # stack in the items' layout: the new axis goes first in IR order too
        out_perm = (axis,) + tuple(p + (1 if p >= axis else 0) for p in perm)
        vals = [b.unsqueeze(ctx.value(x, perm), axes=(0,)) for x in xs]
        return ctx.tensor(vals[0] if len(vals) == 1 else b.concat(vals, axis=0), out_perm)
    vals = [b.unsqueeze(ctx.value(x), axes=(axis,)) for x in xs]
    return ctx.tensor(vals[0] if len(vals) == 1 else b.concat(vals, axis=axis))


def _unpack(ctx, op, x):
    return _unpack_axis(ctx, op, x, _norm(ctx.attr("axis", 0), x.rank))


def _unpack_axis(ctx, op, x, axis):
    n = x.shape[axis]
    if x.static is not None:
        arr = np.asarray(x.static)
        parts = [np.take(arr, i, axis=axis) for i in range(arr.shape[axis])]
        return [ctx.constant(p, x.dtype) if x.const is not None else ctx.symbolic(p, x.dtype) for p in parts]
    if not isinstance(n, int):
        raise UnsupportedError(f"{op.type} {op.name!r} along a symbolic axis")
    if x.value is None:
        ctx.value(x)
    a = _ir_axis(x, axis)
    b = ctx.b
    parts = b.split(x.value, sizes=(1,) * n, axis=a) if n > 1 else (x.value,)
    parts = parts if isinstance(parts, tuple) else (parts,)
    perm = _remove_axes(x.perm, [axis])
    return [ctx.tensor(b.squeeze(p, axes=(a,)), perm) for p in parts]


def _split_sizes(ctx, op, x, axis, sizes):
    if x.static is not None:
        arr = np.asarray(x.static)
        cuts = np.cumsum(sizes)[:-1]
        return [ctx.constant(p, x.dtype) if x.const is not None else ctx.symbolic(p, x.dtype)
                for p in np.split(arr, cuts, axis=axis)]
    if x.value is None:
        ctx.value(x)
    a = _ir_axis(x, axis)
    if len(sizes) == 1:
        return [x]
    parts = ctx.b.split(x.value, sizes=tuple(sizes), axis=a)
    return [ctx.tensor(p, x.perm) for p in parts]


def _split(ctx, op, axis_tv, x):
    axis = _norm(ctx.scalar(axis_tv, "axis"), x.rank)
    n = int(ctx.attr("num_split"))
    total = x.shape[axis]
    if isinstance(total, int):
        sizes = [total // n] * n
    else:
        each = div_dims(total, n)
        if each is None:
            raise UnsupportedError(f"Split {op.name!r}: symbolic dim {total} in {n} parts")
        sizes = [each] * n
    return _split_sizes(ctx, op, x, axis, sizes)


def _split_v(ctx, op, x, sizes_tv, axis_tv):
    axis = _norm(ctx.scalar(axis_tv, "axis"), x.rank)
    sizes = list(ctx.dims(sizes_tv, "size_splits"))
    if -1 in sizes:
        known = [s for s in sizes if s != -1]
        rest = x.shape[axis]
        for s in known:
            rest = _sym_sub(rest, s) if not isinstance(rest, int) or not isinstance(s, int) else rest - s
        sizes[sizes.index(-1)] = rest
    return _split_sizes(ctx, op, x, axis, sizes)


def _strided_spec(ctx, op, rank, begin, end, strides):
    """TF strided-slice spec -> per-output items: ("new",) or
    ("dim", axis, start|None, stop|None, step, shrink)."""
    n = len(begin)
    bm, em = ctx.attr("begin_mask", 0), ctx.attr("end_mask", 0)
    elm, nam, sam = ctx.attr("ellipsis_mask", 0), ctx.attr("new_axis_mask", 0), ctx.attr("shrink_axis_mask", 0)
    consuming = sum(1 for i in range(n) if not (elm >> i) & 1 and not (nam >> i) & 1)
    items, axis = [], 0
    seen_ellipsis = False
    for i in range(n):
        if (elm >> i) & 1:
            seen_ellipsis = True
            for _ in range(rank - consuming):
                items.append(("dim", axis, None, None, 1, False))
                axis += 1
        elif (nam >> i) & 1:
            items.append(("new",))
        else:
            shrink = bool((sam >> i) & 1)
            start = None if (bm >> i) & 1 and not shrink else begin[i]
            stop = None if (em >> i) & 1 and not shrink else end[i]
            items.append(("dim", axis, start, stop, strides[i], shrink))
            axis += 1
    if not seen_ellipsis:
        while axis < rank:
            items.append(("dim", axis, None, None, 1, False))
            axis += 1
    return items


def _strided_slice(ctx, op, x, begin_tv, end_tv, strides_tv):
    begin = list(ctx.dims(begin_tv, "begin"))
    end = list(ctx.dims(end_tv, "end"))
    strides = ctx.ints(strides_tv, "strides")
    items = _strided_spec(ctx, op, x.rank, begin, end, strides)
    if x.static is not None:
        index = []
        for it in items:
            if it[0] == "new":
                index.append(np.newaxis)
            elif it[5]:
                index.append(int(it[2]))
            else:
                index.append(slice(it[2], it[3], it[4]))
        arr = np.asarray(x.static)[tuple(index)]
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(np.asarray(arr, dtype=object),
                                                                                  x.dtype)
    if x.value is None:
        ctx.value(x)
    has_new = any(it[0] == "new" for it in items)
    v, perm = (x.value, x.perm) if not has_new else (ctx.value(x), None)
    starts, ends, axes, steps, shrink = [], [], [], [], []
    for it in items:
        if it[0] == "new":
            continue
        _, axis, start, stop, step, sh = it
        if sh:
            start = int(start) if isinstance(start, (int, np.integer)) else start
            stop = INT64_MAX if start == -1 else (start + 1 if isinstance(start, int) else add_dims(start, 1))
            step = 1
            shrink.append(axis)
        if start is None:
            start = 0 if step > 0 else INT64_MAX
        if stop is None:
            stop = INT64_MAX if step > 0 else INT64_MIN
        if start == 0 and stop == INT64_MAX and step == 1:
            continue
        if step == 1 and start == 0 and stop == x.shape[axis]:
            continue
        starts.append(start)
        ends.append(stop)
        axes.append(perm.index(axis) if perm else axis)
        steps.append(step)
    b = ctx.b
    if axes:
        v = b.slice(v, starts=tuple(starts), ends=tuple(ends), axes=tuple(axes), steps=tuple(steps))
    if shrink:
        v = b.squeeze(v, axes=tuple(sorted(perm.index(a) if perm else a for a in shrink)))
        perm = _remove_axes(perm, shrink)
    if has_new:
        pos = [i for i, it in enumerate([it for it in items if not (it[0] == "dim" and it[5])])
               if it[0] == "new"]
        v = b.unsqueeze(v, axes=tuple(pos))
    return ctx.tensor(v, perm)


def _slice(ctx, op, x, begin_tv, size_tv):
    begin = list(ctx.dims(begin_tv, "begin"))
    size = list(ctx.dims(size_tv, "size"))
    if x.static is not None:
        index = tuple(slice(b0, None if s == -1 else b0 + s) for b0, s in zip(begin, size))
        arr = np.asarray(x.static)[index]
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if x.value is None:
        ctx.value(x)
    starts, ends, axes = [], [], []
    for axis, (b0, s) in enumerate(zip(begin, size)):
        stop = INT64_MAX if s == -1 else (b0 + s if isinstance(b0, int) and isinstance(s, int) else add_dims(b0, s))
        if b0 == 0 and (stop == INT64_MAX or stop == x.shape[axis]):
            continue
        starts.append(b0)
        ends.append(stop)
        axes.append(_ir_axis(x, axis))
    if not axes:
        return x
    return ctx.tensor(ctx.b.slice(x.value, starts=tuple(starts), ends=tuple(ends), axes=tuple(axes)), x.perm)


def _gather(ctx, op, params, indices, axis_tv=None):
    axis = _norm(ctx.scalar(axis_tv, "axis") if axis_tv is not None else 0, params.rank)
    if (ctx.attr("batch_dims", 0) or 0) != 0:
        raise UnsupportedError(f"GatherV2 {op.name!r} with batch_dims != 0")
    if params.static is not None and indices.const is not None:
        arr = np.take(np.asarray(params.static), indices.const, axis=axis)
        return ctx.constant(arr, params.dtype) if params.const is not None else ctx.symbolic(arr, params.dtype)
    return ctx.tensor(ctx.b.gather(ctx.value(params), ctx.value(indices), axis=axis))


def _resource_gather(ctx, op, resource, indices):
    return _gather(ctx, op, resource, indices)


def _reverse(ctx, op, x, axes_tv):
    axes = sorted({_norm(a, x.rank) for a in ctx.ints(axes_tv, "axis")})
    if x.static is not None:
        arr = np.flip(np.asarray(x.static), axis=tuple(axes))
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if not axes:
        return x
    if x.value is None:
        ctx.value(x)
    return ctx.tensor(ctx.b.flip(x.value, axes=tuple(sorted(_ir_axis(x, a) for a in axes))), x.perm)


def _tile(ctx, op, x, multiples):
    reps = ctx.ints(multiples, "multiples")
    if x.static is not None:
        arr = np.tile(np.asarray(x.static), reps)
        return ctx.constant(arr, x.dtype) if x.const is not None else ctx.symbolic(arr, x.dtype)
    if x.value is None:
        ctx.value(x)
    ir_reps = tuple(reps[p] for p in x.perm) if x.perm else tuple(reps)
    if all(r == 1 for r in reps):
        return x
    return ctx.tensor(ctx.b.tile(x.value, repeats=ir_reps), x.perm)


def _fill(ctx, op, dims, value):
    shape = ctx.dims(dims, "dims")
    dtype = _out_dtype(op)
    if value.const is not None:
        if all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= 16:
            return ctx.constant(np.full(shape, value.const.reshape(()), np_dtype(dtype)), dtype)
        return ctx.tensor(ctx.b.full(shape=shape, value=value.const.reshape(()).item(), dtype=dtype))
    return ctx.tensor(ctx.b.expand(ctx.value(value), shape=shape))


def _like(fill):
    def fn(ctx, op, x):
        dtype = _out_dtype(op)
        shape = tuple(x.shape)
        if all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= 16:
            return ctx.constant(np.full(shape, fill, np_dtype(dtype)), dtype)
        return ctx.tensor(ctx.b.full(shape=shape, value=fill, dtype=dtype))
    return fn


def _range(ctx, op, start, limit, delta):
    dtype = _out_dtype(op)
    s, e, d = ctx.scalar(start, "start"), ctx.scalar(limit, "limit"), ctx.scalar(delta, "delta")
    if not any(isinstance(v, str) for v in (s, e, d)):
        return ctx.constant(np.arange(s, e, d).astype(np_dtype(dtype)), dtype)
    return ctx.tensor(ctx.b.arange(start=s, stop=e, step=d, dtype=dtype))


def _broadcast_to(ctx, op, x, shape_tv):
    shape = ctx.dims(shape_tv, "shape")
    if x.const is not None and all(isinstance(d, int) for d in shape):
        return ctx.constant(np.broadcast_to(x.const, shape).copy(), x.dtype)
    v = ctx.value(x)
    return ctx.tensor(v if v.shape == shape else ctx.b.expand(v, shape=shape))


def _pad(ctx, op, x, paddings, value=None):
    pads = np.asarray(ctx.ints(paddings, "paddings")).reshape(-1, 2)
    mode = {"Pad": "constant", "PadV2": "constant"}.get(op.type) or \
        {"REFLECT": "reflect", "CONSTANT": "constant"}.get(ctx.attr("mode", "CONSTANT").upper())
    if mode is None:
        raise UnsupportedError(f"MirrorPad {op.name!r} mode {ctx.attr('mode')} (only REFLECT is supported)")
    fill = 0.0
    if value is not None:
        fill = ctx.scalar(value, "constant_values")
    if x.const is not None and mode == "constant":
        return ctx.constant(np.pad(x.const, pads, constant_values=fill), x.dtype)
    if x.value is None:
        ctx.value(x)
    order = x.perm or tuple(range(x.rank))
    ir_pads = tuple(int(pads[p][0]) for p in order) + tuple(int(pads[p][1]) for p in order)
    if not any(ir_pads):
        return x
    attrs = {"pads": ir_pads, "mode": mode}
    if mode == "constant" and fill != 0:
        attrs["value"] = float(fill)
    return ctx.tensor(ctx.b.pad(x.value, **attrs), x.perm)


# -- reductions ---------------------------------------------------------------------

def _reduction(ir_name, np_fn, sym_fn=None):
    def fn(ctx, op, x, axes_tv):
        axes = sorted({_norm(a, x.rank) for a in ctx.ints(axes_tv, "axes")})
        keep = bool(ctx.attr("keep_dims", False))
        dtype = _out_dtype(op)
        if x.const is not None:
            return ctx.constant(np.asarray(np_fn(x.const, axis=tuple(axes), keepdims=keep)).astype(np_dtype(dtype)),
                                dtype)
        if x.sym is not None and sym_fn is not None:
            arr = np.asarray(x.sym, dtype=object)
            if arr.ndim == 1 and axes == [0]:
                out = np.array(sym_fn(list(arr)), dtype=object)
                return ctx.symbolic(out.reshape((1,) if keep else ()), dtype)
        if not axes:
            return x
        if x.value is None:
            ctx.value(x)
        b = ctx.b
        v = x.value
        if ir_name in ("reduce_any", "reduce_all"):
            f = b.cast(v, dtype="float32")
            r = (b.reduce_max if ir_name == "reduce_any" else b.reduce_min)(
                f, axes=tuple(_ir_axis(x, a) for a in axes), keepdims=keep)
            return ctx.tensor(b.gt(r, 0.5), x.perm if keep else _remove_axes(x.perm, axes))
        if ir_name == "reduce_mean" and not is_float(v.dtype):
            raise UnsupportedError(f"Mean {op.name!r} of integers")
        r = getattr(b, ir_name)(v, axes=tuple(sorted(_ir_axis(x, a) for a in axes)), keepdims=keep)
        return ctx.tensor(r, x.perm if keep else _remove_axes(x.perm, axes))
    return fn


def _arg(ir_name):
    def fn(ctx, op, x, axis_tv):
        axis = _norm(ctx.scalar(axis_tv, "axis"), x.rank)
        if x.value is None:
            ctx.value(x)
        r = getattr(ctx.b, ir_name)(x.value, axis=_ir_axis(x, axis), keepdims=False)
        return ctx.tensor(r, _remove_axes(x.perm, [axis]))
    return fn


def _softmax(ir_name):
    def fn(ctx, op, x):
        if x.value is None:
            ctx.value(x)
        return ctx.tensor(getattr(ctx.b, ir_name)(x.value, axis=_ir_axis(x, x.rank - 1)), x.perm)
    return fn


def _cumsum(ctx, op, x, axis_tv):
    axis = _norm(ctx.scalar(axis_tv, "axis"), x.rank)
    if x.value is None:
        ctx.value(x)
    return ctx.tensor(ctx.b.cumsum(x.value, axis=_ir_axis(x, axis), exclusive=bool(ctx.attr("exclusive", False)),
                                   reverse=bool(ctx.attr("reverse", False))), x.perm)


def _topk(ctx, op, x, k_tv):
    k = int(ctx.scalar(k_tv, "k"))
    vals, idx = ctx.b.topk(ctx.value(x), k=k, axis=-1, largest=True)
    return [ctx.tensor(vals), ctx.tensor(ctx.b.cast(idx, dtype=_out_dtype(op, 1)))]


def _one_hot(ctx, op, indices, depth, on, off):
    b = ctx.b
    n = int(ctx.scalar(depth, "depth"))
    axis = ctx.attr("axis", -1)
    idx = ctx.value(indices)
    axis = idx.rank if axis == -1 else axis
    shape = [1] * (idx.rank + 1)
    shape[axis] = n
    rng = b.const(np.arange(n).reshape(shape), idx.dtype)
    hot = b.eq(b.unsqueeze(idx, axes=(axis,)), rng)
    return ctx.tensor(b.where(hot, ctx.value(on), ctx.value(off)))


# -- matmul and einsum --------------------------------------------------------------

def _swap_last(b, v):
    perm = tuple(range(v.rank - 2)) + (v.rank - 1, v.rank - 2)
    return b.transpose(v, perm=perm)


def _matmul(ctx, op, a, c):
    b = ctx.b
    ta = ctx.attr("transpose_a", False) or ctx.attr("adj_x", False)
    tc = ctx.attr("transpose_b", False) or ctx.attr("adj_y", False)
    av = ctx.value(a) if not ta else _swap_last(b, ctx.value(a))
    cv = ctx.value(c) if not tc else _swap_last(b, ctx.value(c))
    if a.const is not None and c.const is not None:
        return ctx.constant(np.matmul(np.swapaxes(a.const, -1, -2) if ta else a.const,
                                      np.swapaxes(c.const, -1, -2) if tc else c.const), _out_dtype(op))
    return ctx.tensor(b.matmul(av, cv))


def _einsum(ctx, op, *xs):
    eq = ctx.attr("equation").replace(" ", "")
    if "..." in eq or "->" not in eq:
        raise UnsupportedError(f"Einsum {op.name!r} equation {eq!r} (ellipsis or implicit output)")
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    b = ctx.b
    vals = [ctx.value(x) for x in xs]
    sizes = {}
    for term, v in zip(terms, vals):
        for ch, d in zip(term, v.shape):
            sizes.setdefault(ch, d)
    # sum out letters that appear in one operand only and not in the output
    for k, term in enumerate(terms):
        others = "".join(t for i, t in enumerate(terms) if i != k) + out
        drop = [i for i, ch in enumerate(term) if ch not in others]
        if drop:
            vals[k] = b.reduce_sum(vals[k], axes=tuple(drop), keepdims=False)
            terms[k] = "".join(ch for ch in term if ch in others)
    if len(terms) == 1:
        return ctx.tensor(_permute_to(b, vals[0], terms[0], out))
    if len(terms) != 2:
        raise UnsupportedError(f"Einsum {op.name!r} with {len(terms)} operands")
    (ta, tb), (va, vb) = terms, vals
    batch = [ch for ch in ta if ch in tb and ch in out]
    contract = [ch for ch in ta if ch in tb and ch not in out]
    lfree = [ch for ch in ta if ch not in tb]
    rfree = [ch for ch in tb if ch not in ta]
    dims = lambda chs: [sizes[ch] for ch in chs]   # noqa: E731
    prod = lambda chs: mul_dims(*dims(chs)) if chs else 1   # noqa: E731
    if batch:
        a2 = _permute_to(b, va, ta, "".join(batch + lfree + contract))
        a2 = _reshape_if(b, a2, tuple(dims(batch)) + (prod(lfree), prod(contract)))
    else:
        a2 = _permute_to(b, va, ta, "".join(lfree + contract))
        a2 = _reshape_if(b, a2, tuple(dims(lfree)) + (prod(contract),))
    c2 = _permute_to(b, vb, tb, "".join(batch + contract + rfree))
    c2 = _reshape_if(b, c2, tuple(dims(batch)) + (prod(contract), prod(rfree)))
    r = b.matmul(a2, c2)
    r = _reshape_if(b, r, tuple(dims(batch + lfree + rfree)))
    return ctx.tensor(_permute_to(b, r, "".join(batch + lfree + rfree), out))


def _permute_to(b, v, src, dst):
    if src == dst:
        return v
    return b.transpose(v, perm=tuple(src.index(ch) for ch in dst))


def _reshape_if(b, v, shape):
    return v if tuple(v.shape) == tuple(shape) else b.reshape(v, shape=tuple(shape))


# -- convolutions and pooling ----------------------------------------------------------

def _spatial(attr, fmt_last, n):
    vals = list(attr)
    if len(vals) == n + 2:
        return vals[1:-1] if fmt_last else vals[2:]
    if len(vals) == n:
        return vals
    return [vals[0]] * n


def _same_pads(sizes, kernel, strides, dils, what):
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dils):
        k_eff = (k - 1) * d + 1
        if isinstance(size, int):
            out = -(-size // s)
            total = max((out - 1) * s + k_eff - size, 0)
        elif s == 1:
            total = k_eff - 1
        else:
            raise UnsupportedError(f"{what}: SAME padding with stride {s} over the symbolic dim {size}")
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins, ends


def _conv_setup(ctx, op, x, n):
    fmt = ctx.attr("data_format", "NHWC")
    last = not fmt.startswith("NC")
    layout = channels_first(x.rank) if last else None
    strides = [int(s) for s in _spatial(ctx.attr("strides"), last, n)]
    dils = [int(d) for d in _spatial(ctx.attr("dilations", [1] * (n + 2)), last, n)]
    return layout, strides, dils


def _padding(ctx, op, sizes, kernel, strides, dils, last, n):
    padding = ctx.attr("padding", "VALID").upper()
    if padding == "VALID":
        return [0] * n, [0] * n
    if padding == "SAME":
        return _same_pads(sizes, kernel, strides, dils, f"{op.type} {op.name!r}")
    if padding == "EXPLICIT":
        ex = list(ctx.attr("explicit_paddings"))
        pairs = [ex[i:i + 2] for i in range(0, len(ex), 2)]
        pairs = pairs[1:-1] if last else pairs[2:]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    raise UnsupportedError(f"{op.type} {op.name!r}: padding {padding}")


def _conv(ctx, op, x, w):
    n = x.rank - 2
    b = ctx.b
    layout, strides, dils = _conv_setup(ctx, op, x, n)
    xv = ctx.value(x, layout)
    kernel = [int(k) for k in w.shape[:n]]
    override = ctx.conv_overrides.get(op)
    if override is not None:
        dils = override["dilations"]
        begins, ends = override["pads"]
    else:
        begins, ends = _padding(ctx, op, xv.shape[2:], kernel, strides, dils, layout is not None, n)
    if op.type == "DepthwiseConv2dNative":
        c, m = int(w.shape[n]), int(w.shape[n + 1])
        wv = ctx.kernel(w, (n, n + 1) + tuple(range(n)), (c * m, 1) + tuple(kernel))
        groups = c
    else:
        wv = ctx.kernel(w, (n + 1, n) + tuple(range(n)))
        cin = xv.shape[1]
        if not isinstance(cin, int):
            raise UnsupportedError(f"{op.type} {op.name!r}: symbolic channel count {cin}")
        groups = cin // int(w.shape[n])
    y = b.conv(xv, wv, strides=tuple(strides), pads=tuple(begins) + tuple(ends), dilations=tuple(dils),
               groups=groups)
    return ctx.tensor(y, layout)


def _conv_transpose(ctx, op, sizes_tv, w, x):
    n = x.rank - 2
    b = ctx.b
    layout, strides, dils = _conv_setup(ctx, op, x, n)
    out_sizes = ctx.dims(sizes_tv, "input_sizes")
    last = layout is not None
    out_spatial = list(out_sizes[1:-1] if last else out_sizes[2:])
    if not all(isinstance(d, int) for d in out_spatial):
        raise UnsupportedError(f"{op.type} {op.name!r}: symbolic output spatial size")
    xv = ctx.value(x, layout)
    kernel = [int(k) for k in w.shape[:n]]
    begins, ends = _padding(ctx, op, out_spatial, kernel, strides, dils, last, n)
    outpad = []
    for i in range(n):
        natural = (xv.shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dils[i] + 1 - begins[i] - ends[i]
        outpad.append(out_spatial[i] - natural)
    if any(p < 0 for p in outpad):
        raise UnsupportedError(f"{op.type} {op.name!r}: output size smaller than the transposed conv gives")
    wv = ctx.kernel(w, (n + 1, n) + tuple(range(n)))
    cout = out_sizes[-1] if last else out_sizes[1]
    groups = 1 if not isinstance(cout, int) else max(int(cout) // int(w.shape[n]), 1)
    y = b.conv_transpose(xv, wv, strides=tuple(strides), pads=tuple(begins) + tuple(ends), dilations=tuple(dils),
                         groups=groups, output_padding=tuple(outpad))
    return ctx.tensor(y, layout)


def _conv3d_transpose(ctx, op, sizes_tv, w, x):
    return _conv_transpose(ctx, op, sizes_tv, w, x)


def _pool(kind):
    def fn(ctx, op, x, ksize_tv=None, strides_tv=None):
        n = x.rank - 2
        fmt = ctx.attr("data_format", "NHWC")
        last = not fmt.startswith("NC")
        layout = channels_first(x.rank) if last else None
        ksize = ctx.ints(ksize_tv, "ksize") if ksize_tv is not None else ctx.attr("ksize")
        strides = ctx.ints(strides_tv, "strides") if strides_tv is not None else ctx.attr("strides")
        kernel = [int(k) for k in _spatial(ksize, last, n)]
        strides = [int(s) for s in _spatial(strides, last, n)]
        xv = ctx.value(x, layout)
        begins, ends = _padding(ctx, op, xv.shape[2:], kernel, strides, [1] * n, last, n)
        pads = tuple(begins) + tuple(ends)
        if kind == "max":
            y = ctx.b.max_pool(xv, kernel=tuple(kernel), strides=tuple(strides), pads=pads)
        else:
            y = ctx.b.avg_pool(xv, kernel=tuple(kernel), strides=tuple(strides), pads=pads, count_include_pad=False)
        return ctx.tensor(y, layout)
    return fn


def _fused_batch_norm(ctx, op, x, scale, offset, mean, var):
    if ctx.attr("is_training", False):
        raise UnsupportedError(f"{op.type} {op.name!r} in training mode (trace with training=False)")
    fmt = ctx.attr("data_format", "NHWC")
    layout = channels_first(x.rank) if not fmt.startswith("NC") else None
    eps = float(ctx.attr("epsilon", 1e-3))
    xv = ctx.value(x, layout)
    args = [ctx.value(t) for t in (scale, offset, mean, var)]
    if args[0].dtype != xv.dtype:
        args = [ctx.b.cast(a, dtype=xv.dtype) for a in args]
    y = ctx.b.batch_norm(xv, *args, eps=eps)
    return [ctx.tensor(y, layout), mean, var] + [None] * (len(op.outputs) - 3)


def _resize(mode):
    def fn(ctx, op, x, size_tv):
        size = tuple(ctx.ints(size_tv, "size"))
        layout = channels_first(x.rank)
        xv = ctx.value(x, layout)
        align = bool(ctx.attr("align_corners", False))
        half = bool(ctx.attr("half_pixel_centers", False))
        in_sizes = xv.shape[2:]
        b = ctx.b
        if mode == "linear":
            if not align and not half:
                raise UnsupportedError(f"{op.type} {op.name!r}: legacy asymmetric resize (half_pixel_centers="
                                       "False, align_corners=False); use tf.image.resize (half-pixel centres)")
            return ctx.tensor(b.resize(xv, size=size, mode="linear", align_corners=align), layout)
        # nearest: TF picks floor((o + 0.5) * in / out) with half-pixel centres, round(o * scale) with
        # align_corners, floor(o * in / out) otherwise; on whole upscaling factors all agree with the IR's
        if not align and all(o % i == 0 for i, o in zip(in_sizes, size)):
            return ctx.tensor(b.resize(xv, size=size, mode="nearest"), layout)
        v = xv
        for a, (i, o) in enumerate(zip(in_sizes, size)):
            if align:
                scale = (i - 1) / (o - 1) if o > 1 else 0.0
                idx = np.minimum(np.round(np.arange(o) * scale), i - 1)
            elif half:
                idx = np.minimum(np.floor((np.arange(o) + 0.5) * i / o), i - 1)
            else:
                idx = np.minimum(np.floor(np.arange(o) * i / o), i - 1)
            v = b.gather(v, b.const(idx.astype(np.int64), "int64"), axis=2 + a)
        return ctx.tensor(v, layout)
    return fn


def _unsupported_s2b(ctx, op, *xs):
    raise UnsupportedError(f"{op.type} {op.name!r} outside a dilated convolution "
                           "(SpaceToBatchND -> conv -> BatchToSpaceND) is not supported")


# -- variables ----------------------------------------------------------------------

def _read_variable(ctx, op, handle):
    if handle.resource is None:
        raise UnsupportedError(f"ReadVariableOp {op.name!r} reads a resource that is not a known variable")
    return handle


# -- TensorLists (what unrolled loops read and write) ------------------------------------

def _tensor_list(items):
    return TV("variant", (), items=list(items))


def _list_items(ctx, op, lst):
    if lst.items is None:
        raise UnsupportedError(f"{op.type} {op.name!r} on a TensorList irtool did not build")
    return lst.items


def _list_reserve(ctx, op, element_shape, num):
    n = ctx.scalar(num, "num_elements")
    if not isinstance(n, int) or n < 0:
        raise UnsupportedError(f"TensorListReserve {op.name!r} with a dynamic or unknown length")
    return _tensor_list([None] * n)


def _list_from_tensor(ctx, op, x, element_shape):
    if not isinstance(x.shape[0], int):
        raise UnsupportedError(f"TensorListFromTensor {op.name!r}: symbolic length {x.shape[0]}")
    if x.shape[0] == 0:
        return _tensor_list([])
    parts = _unpack_axis(ctx, op, x, 0)
    return _tensor_list(parts)


def _list_get(ctx, op, lst, index, element_shape):
    items = _list_items(ctx, op, lst)
    i = int(ctx.scalar(index, "index"))
    if not -len(items) <= i < len(items) or items[i] is None:
        raise UnsupportedError(f"TensorListGetItem {op.name!r}: item {i} is not set")
    return items[i]


def _list_set(ctx, op, lst, index, item):
    items = list(_list_items(ctx, op, lst))
    i = int(ctx.scalar(index, "index"))
    if not -len(items) <= i < len(items):
        if ctx.attr("resize_if_index_out_of_bounds", False) and i >= len(items):
            items += [None] * (i + 1 - len(items))
        else:
            raise UnsupportedError(f"TensorListSetItem {op.name!r}: index {i} out of range")
    items[i] = item
    return _tensor_list(items)


def _list_push(ctx, op, lst, item):
    return _tensor_list(list(_list_items(ctx, op, lst)) + [item])


def _list_stack(ctx, op, lst, element_shape):
    items = _list_items(ctx, op, lst)
    if any(t is None for t in items):
        raise UnsupportedError(f"TensorListStack {op.name!r}: not every item was set")
    if not items:
        raise UnsupportedError(f"TensorListStack {op.name!r} of an empty list")
    return _pack_tvs(ctx, op, items, 0)


def _list_length(ctx, op, lst):
    return ctx.constant(np.array(len(_list_items(ctx, op, lst))), _out_dtype(op))


# -- patterns -----------------------------------------------------------------------

class Patterns:
    def __init__(self):
        self.alias = set()       # ops whose output is their first input
        self.unchecked = set()   # ops whose TF shapes differ from the rewritten ones
        self.conv = {}           # conv op -> {"dilations", "pads"}


_CONVS = ("Conv2D", "Conv3D", "DepthwiseConv2dNative")


def find_patterns(ops):
    """Dilated convolutions: TF writes them SpaceToBatchND -> [ExpandDims]
    -> conv (VALID) -> [Squeeze] -> BatchToSpaceND; they become one conv
    with dilations and pads."""
    import tensorflow as tf
    pats = Patterns()
    for s2b in ops:
        if s2b.type != "SpaceToBatchND":
            continue
        block = tf.get_static_value(s2b.inputs[1])
        paddings = tf.get_static_value(s2b.inputs[2])
        if block is None or paddings is None:
            continue
        chain, cur, shift_axis = [], s2b, None
        nxt = cur.outputs[0].consumers()
        if len(nxt) != 1:
            continue
        cur = nxt[0]
        if cur.type == "ExpandDims":
            axis = tf.get_static_value(cur.inputs[1])
            if axis is None:
                continue
            shift_axis = int(axis) % (len(s2b.outputs[0].shape) + 1)
            chain.append(cur)
            nxt = cur.outputs[0].consumers()
            if len(nxt) != 1:
                continue
            cur = nxt[0]
        if cur.type not in _CONVS or cur.get_attr("padding") != b"VALID" or \
                any(s != 1 for s in cur.get_attr("strides")):
            continue
        conv = cur
        nxt = conv.outputs[0].consumers()
        if len(nxt) != 1:
            continue
        cur = nxt[0]
        tail = []
        if cur.type == "Squeeze":
            tail.append(cur)
            nxt = cur.outputs[0].consumers()
            if len(nxt) != 1:
                continue
            cur = nxt[0]
        if cur.type != "BatchToSpaceND":
            continue
        b2s = cur
        crops = tf.get_static_value(b2s.inputs[2])
        block2 = tf.get_static_value(b2s.inputs[1])
        if crops is None or block2 is None or list(block2) != list(block):
            continue
        n = len(conv.outputs[0].shape) - 2
        dils, begins, ends = [1] * n, [0] * n, [0] * n
        for k in range(len(block)):
            pos = 1 + k
            if shift_axis is not None and shift_axis <= pos:
                pos += 1
            j = pos - 1
            dils[j] = int(block[k])
            begins[j] = int(paddings[k][0]) - int(crops[k][0])
            ends[j] = int(paddings[k][1]) - int(crops[k][1])
        if min(begins + ends) < 0:
            continue
        pats.alias.update({s2b, b2s})
        pats.unchecked.update({s2b, conv, b2s, *chain, *tail})
        pats.conv[conv] = {"dilations": dils, "pads": (begins, ends)}
    return pats


# -- the table ----------------------------------------------------------------------

TABLE = {
    "Const": _const,
    "Identity": _identity,
    "IdentityN": _identity,
    "StopGradient": _stop_gradient,
    "PreventGradient": _stop_gradient,
    "Snapshot": _identity,
    "EnsureShape": _identity,
    "CheckNumerics": _identity,
    "ReadVariableOp": _read_variable,
    "ResourceGather": _resource_gather,
    "Cast": _cast,
    "Shape": _shape,
    "ShapeN": _shape_n,
    "Size": _size,
    "Rank": _rank,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "ExpandDims": _expand_dims,
    "Transpose": _transpose,
    "ConcatV2": _concat,
    "Concat": _concat,
    "Pack": _pack,
    "Unpack": _unpack,
    "Split": _split,
    "SplitV": _split_v,
    "StridedSlice": _strided_slice,
    "Slice": _slice,
    "GatherV2": _gather,
    "Gather": _gather,
    "Tile": _tile,
    "ReverseV2": _reverse,
    "Fill": _fill,
    "ZerosLike": _like(0),
    "OnesLike": _like(1),
    "Range": _range,
    "BroadcastTo": _broadcast_to,
    "Pad": _pad,
    "PadV2": _pad,
    "MirrorPad": _pad,
    "BiasAdd": _bias_add,
    "BiasAddV1": _bias_add,
    "AddN": _add_n,
    "RealDiv": _real_div,
    "Div": _real_div,
    "DivNoNan": _real_div,
    "FloorDiv": _floor_div,
    "SquaredDifference": _squared_difference,
    "Pow": _pow,
    "Select": _select,
    "SelectV2": _select,
    "ClipByValue": _clip_by_value,
    "LeakyRelu": _leaky_relu,
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    "Mean": _reduction("reduce_mean", np.mean),
    "Sum": _reduction("reduce_sum", np.sum, lambda xs: add_all(xs)),
    "Max": _reduction("reduce_max", np.max),
    "Min": _reduction("reduce_min", np.min),
    "Prod": _reduction("reduce_prod", np.prod, lambda xs: mul_dims(*xs)),
    "Any": _reduction("reduce_any", np.any),
    "All": _reduction("reduce_all", np.all),
    "ArgMax": _arg("argmax"),
    "ArgMin": _arg("argmin"),
    "Cumsum": _cumsum,
    "TopKV2": _topk,
    "OneHot": _one_hot,
    "MatMul": _matmul,
    "BatchMatMul": _matmul,
    "BatchMatMulV2": _matmul,
    "BatchMatMulV3": _matmul,
    "Einsum": _einsum,
    "Conv2D": _conv,
    "Conv3D": _conv,
    "DepthwiseConv2dNative": _conv,
    "Conv2DBackpropInput": _conv_transpose,
    "Conv3DBackpropInputV2": _conv3d_transpose,
    "MaxPool": _pool("max"),
    "MaxPoolV2": _pool("max"),
    "MaxPool3D": _pool("max"),
    "AvgPool": _pool("avg"),
    "AvgPool3D": _pool("avg"),
    "FusedBatchNorm": _fused_batch_norm,
    "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm,
    "ResizeBilinear": _resize("linear"),
    "ResizeNearestNeighbor": _resize("nearest"),
    "TensorListReserve": _list_reserve,
    "TensorListFromTensor": _list_from_tensor,
    "TensorListGetItem": _list_get,
    "TensorListSetItem": _list_set,
    "TensorListPushBack": _list_push,
    "TensorListStack": _list_stack,
    "TensorListLength": _list_length,
    "SpaceToBatchND": _unsupported_s2b,
    "BatchToSpaceND": _unsupported_s2b,
}


def add_all(xs):
    out = 0
    for x in xs:
        out = add_dims(out, x)
    return out


for _name, (_ir, _np) in UNARY.items():
    TABLE[_name] = _unary(_ir, _np)
for _name, (_ir, _np, _s) in BINARY.items():
    TABLE[_name] = _binary(_ir, _np, _s)
