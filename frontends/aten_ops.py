"""The ATen -> IR table of the PyTorch frontend (core ATen after decompositions).

Each entry is `fn(ctx, *args, **kwargs)` receiving IR Values for tensors and
Python values (ints, floats, lists, symbolic dim strings) for the rest, and
returning a Value or a tuple (for multi-output ATen ops; unused outputs may
be None). `ctx.b` is the Builder. Keys are ATen overload names without the
"aten." prefix. Results whose dtype differs from torch's inferred dtype are
cast by the caller, so entries need not replicate torch's type promotion.
"""
import math

import numpy as np

from irtool.errors import UnsupportedError
from irtool.ir.graph import Value

INT64_MAX = 2 ** 63 - 1

_DTYPES = {
    "torch.float16": "float16", "torch.bfloat16": "bfloat16", "torch.float32": "float32",
    "torch.float64": "float64", "torch.int8": "int8", "torch.int16": "int16", "torch.int32": "int32",
    "torch.int64": "int64", "torch.uint8": "uint8", "torch.bool": "bool",
}


def torch_dtype_name(dtype):
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise UnsupportedError(f"torch dtype {dtype} has no IR equivalent") from None


def dim_of(d, symbols):
    """A torch size (int or SymInt) as an IR dim (int or symbolic string)."""
    if isinstance(d, (int, np.integer)):
        return int(d)
    if isinstance(d, str):
        return d
    expr = d.node.expr if hasattr(d, "node") else d
    return _expr(expr, symbols)


def _expr(e, symbols):
    import sympy
    if e.is_Integer:
        return int(e)
    if e.is_Symbol:
        return symbols.get(str(e), str(e))
    if isinstance(e, sympy.Mul):
        parts = [_expr(a, symbols) for a in e.args]
        from irtool.ir.shapes import mul_dims
        return mul_dims(*parts)
    if isinstance(e, sympy.Add):
        from irtool.ir.shapes import add_dims
        out = 0
        for a in e.args:
            out = add_dims(out, _expr(a, symbols))
        return out
    raise UnsupportedError(f"symbolic size expression {e} is not supported")


def _shape(ctx, sizes, like=None):
    """Target sizes list (ints, SymInts as strings, -1) -> IR shape tuple."""
    out = []
    for i, s in enumerate(sizes):
        out.append(s if isinstance(s, (int, str)) else ctx.dim(s))
    return tuple(out)


def _axis(d, rank):
    return d % rank if rank else 0


def _dt(dtype, default=None):
    return torch_dtype_name(dtype) if dtype is not None else default


def _scalar_or_value(ctx, x, like):
    if isinstance(x, Value):
        return x
    return ctx.b.const(x, like.dtype)


def _binary(op):
    def fn(ctx, a, c, alpha=None):
        b = ctx.b
        if not isinstance(a, Value):
            a = b.const(a, c.dtype)
        c = _scalar_or_value(ctx, c, a)
        if c.dtype != a.dtype:        # torch promotes; cast the lower one up
            a, c = _promote(b, a, c)
        if alpha not in (None, 1):
            c = b.mul(c, alpha)
        return getattr(b, op)(a, c)
    return fn


_RANK = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]


def _promote(b, a, c):
    if _RANK.index(a.dtype) >= _RANK.index(c.dtype):
        return a, b.cast(c, dtype=a.dtype)
    return b.cast(a, dtype=c.dtype), c


def _compare(op):
    def fn(ctx, a, c):
        b = ctx.b
        c = _scalar_or_value(ctx, c, a)
        if c.dtype != a.dtype:
            a, c = _promote(b, a, c)
        return getattr(b, op)(a, c)
    return fn


def _unary(op, **attrs):
    return lambda ctx, x: getattr(ctx.b, op)(x, **attrs)


def _identity(ctx, x, *a, **k):
    return x


def _reduce(op):
    def fn(ctx, x, dims=None, keepdim=False, dtype=None):
        if dtype is not None:
            x = ctx.b.cast(x, dtype=_dt(dtype))
        axes = None if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0) else \
            tuple(dims) if isinstance(dims, (list, tuple)) else (dims,)
        return getattr(ctx.b, op)(x, axes=axes, keepdims=bool(keepdim))
    return fn


def _sum(ctx, x, dims=None, keepdim=False, dtype=None):
    if x.dtype == "bool":
        x = ctx.b.cast(x, dtype="int64")
    return _reduce("reduce_sum")(ctx, x, dims, keepdim, dtype)


def _any(ctx, x, dim=None, keepdim=False):
    b = ctx.b
    f = b.cast(x, dtype="float32")
    axes = None if dim is None else tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    return b.gt(b.reduce_max(f, axes=axes, keepdims=bool(keepdim)), 0.0)


def _addmm(ctx, bias, a, c, beta=1, alpha=1):
    b = ctx.b
    mm = b.matmul(a, c)
    if alpha != 1:
        mm = b.mul(mm, alpha)
    if beta != 1:
        bias = b.mul(bias, beta)
    return b.add(mm, bias)


def _view(ctx, x, sizes):
    return ctx.b.reshape(x, shape=_shape(ctx, sizes))


def _expand(ctx, x, sizes, implicit=False):
    sizes = list(_shape(ctx, sizes))
    lead = len(sizes) - x.rank
    for i, s in enumerate(sizes):
        if s == -1:
            sizes[i] = x.shape[i - lead]
    return ctx.b.expand(x, shape=tuple(sizes))


def _permute(ctx, x, dims):
    return ctx.b.transpose(x, perm=tuple(_axis(d, x.rank) for d in dims))


def _transpose_int(ctx, x, d0, d1):
    perm = list(range(x.rank))
    d0, d1 = _axis(d0, x.rank), _axis(d1, x.rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return ctx.b.transpose(x, perm=tuple(perm))


def _unsqueeze(ctx, x, dim):
    return ctx.b.unsqueeze(x, axes=(_axis(dim, x.rank + 1),))


def _squeeze(ctx, x, dims=None):
    if dims is None:
        return ctx.b.squeeze(x)
    dims = dims if isinstance(dims, (list, tuple)) else (dims,)
    axes = tuple(_axis(d, x.rank) for d in dims if x.shape[_axis(d, x.rank)] == 1)
    return ctx.b.squeeze(x, axes=axes) if axes else x


def _slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    """x with x[start:end] along dim replaced by src (what torch.export makes
    of `x[:, a:b] += ...`): the kept head and tail concatenated around src."""
    dim = _axis(dim, x.rank)
    size = x.shape[dim]
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    if step != 1 or not isinstance(start, int) or not isinstance(end, int) or \
            ((start < 0 or end < 0) and not isinstance(size, int)):
        raise UnsupportedError("slice_scatter needs step 1 and static bounds")
    if isinstance(size, int):
        start, end = (min(max(v + size if v < 0 else v, 0), size) for v in (start, end))
    parts = ([_slice(ctx, x, dim, 0, start)] if start > 0 else []) + [src]
    if not (isinstance(size, int) and end >= size) and end < INT64_MAX:
        parts.append(_slice(ctx, x, dim, end, None))
    return _cat(ctx, parts, dim) if len(parts) > 1 else src


def _copy(ctx, x, src, non_blocking=False):
    """The functional form of x.copy_(src): src cast to x's dtype and broadcast to its shape."""
    b = ctx.b
    src = _scalar_or_value(ctx, src, x)
    if src.dtype != x.dtype:
        src = b.cast(src, dtype=x.dtype)
    return src if src.shape == x.shape else b.expand(src, shape=x.shape)


def _select_scatter(ctx, x, src, dim, index):
    dim = _axis(dim, x.rank)
    end = index + 1 if index != -1 else None
    return _slice_scatter(ctx, x, ctx.b.unsqueeze(src, axes=(dim,)), dim, index, end)


def _cat(ctx, tensors, dim=0):
    tensors = [t for t in tensors if not (t.rank == 1 and t.shape[0] == 0)]   # torch ignores empty 1-D
    if len(tensors) == 1:
        return tensors[0]
    return ctx.b.concat(list(tensors), axis=_axis(dim, tensors[0].rank))


def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    dim = _axis(dim, x.rank)
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    if isinstance(start, str) or isinstance(end, str):
        if start == 0 and end == x.shape[dim] and step == 1:
            return x
        return ctx.b.slice(x, starts=(start,), ends=(end,), axes=(dim,), steps=(step,))
    if start == 0 and end >= INT64_MAX and step == 1:
        return x
    if start == 0 and step == 1 and isinstance(x.shape[dim], int) and end >= x.shape[dim]:
        return x
    return ctx.b.slice(x, starts=(start,), ends=(end,), axes=(dim,), steps=(step,))


def _select(ctx, x, dim, index):
    b = ctx.b
    dim = _axis(dim, x.rank)
    return b.gather(x, b.const(np.int64(index), "int64"), axis=dim)


def _split_with_sizes(ctx, x, sizes, dim=0):
    outs = ctx.b.split(x, sizes=tuple(sizes), axis=_axis(dim, x.rank))
    return outs if isinstance(outs, tuple) else (outs,)


def _split(ctx, x, size, dim=0):
    dim = _axis(dim, x.rank)
    total = x.shape[dim]
    if not isinstance(total, int):
        raise UnsupportedError("split along a symbolic dim is not supported")
    sizes = [size] * (total // size) + ([total % size] if total % size else [])
    return _split_with_sizes(ctx, x, sizes, dim)


def _convolution(ctx, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    b = ctx.b
    n = x.rank - 2
    pads = tuple(padding) * 2 if len(padding) == n else tuple(padding)
    ins = [x, w] + ([bias] if bias is not None else [])
    if transposed:
        return b.conv_transpose(*ins, strides=tuple(stride), pads=pads, dilations=tuple(dilation),
                                groups=groups, output_padding=tuple(output_padding))
    return b.conv(*ins, strides=tuple(stride), pads=pads, dilations=tuple(dilation), groups=groups)


def _batch_norm_eval(ctx, x, w, bias, mean, var, momentum, eps):
    b = ctx.b
    c = x.shape[1]
    w = w if w is not None else b.const(np.ones(c), x.dtype)
    bias = bias if bias is not None else b.const(np.zeros(c), x.dtype)
    return (b.batch_norm(x, w, bias, mean, var, eps=float(eps)), None, None)


def _layer_norm(ctx, x, normalized_shape, w=None, bias=None, eps=1e-5):
    ins = [x] + ([w] if w is not None else []) + ([bias] if bias is not None and w is not None else [])
    y = ctx.b.layer_norm(*ins, axis=-len(normalized_shape), eps=float(eps))
    if bias is not None and w is None:
        y = ctx.b.add(y, bias)
    return (y, None, None)


def _group_norm(ctx, x, w, bias, n, c, hw, groups, eps):
    b = ctx.b
    w = w if w is not None else b.const(np.ones(c), x.dtype)
    bias = bias if bias is not None else b.const(np.zeros(c), x.dtype)
    return (b.group_norm(x, w, bias, groups=groups, eps=float(eps)), None, None)


def _pool_pads(padding, n):
    padding = tuple(padding) if padding else (0,) * n
    padding = padding * n if len(padding) == 1 else padding
    return padding * 2


def _max_pool(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    n = x.rank - 2
    kernel = tuple(kernel) * (n if len(kernel) == 1 else 1)
    stride = tuple(stride) * (n if len(stride) == 1 else 1) if stride else kernel
    dilation = tuple(dilation) if isinstance(dilation, (list, tuple)) else (dilation,)
    dilation = dilation * (n if len(dilation) == 1 else 1)
    padding = padding if isinstance(padding, (list, tuple)) else (padding,)
    return (ctx.b.max_pool(x, kernel=kernel, strides=stride, pads=_pool_pads(padding, n),
                           dilations=dilation, ceil_mode=bool(ceil_mode)), None)


def _avg_pool(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    if divisor_override is not None:
        raise UnsupportedError("avg_pool with divisor_override is not supported")
    n = x.rank - 2
    kernel = tuple(kernel) * (n if len(kernel) == 1 else 1)
    stride = tuple(stride) * (n if len(stride) == 1 else 1) if stride else kernel
    padding = padding if isinstance(padding, (list, tuple)) else (padding,)
    return ctx.b.avg_pool(x, kernel=kernel, strides=stride, pads=_pool_pads(padding, n),
                          ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))


def _adaptive_avg_pool(ctx, x, output_size):
    n = len(output_size)
    spatial = x.shape[-n:]
    if all(o == 1 for o in output_size):
        return ctx.b.reduce_mean(x, axes=tuple(range(x.rank - n, x.rank)), keepdims=True)
    if not all(isinstance(s, int) and s % o == 0 for s, o in zip(spatial, output_size)):
        raise UnsupportedError(f"adaptive_avg_pool from {spatial} to {tuple(output_size)} needs "
                               "input sizes divisible by the output size")
    kernel = tuple(s // o for s, o in zip(spatial, output_size))
    return ctx.b.avg_pool(x, kernel=kernel, strides=kernel, pads=(0,) * (2 * n))


def _softmax(op):
    def fn(ctx, x, dim, half_to_float=False):
        return getattr(ctx.b, op)(x, axis=_axis(dim, x.rank))
    return fn


def _where(ctx, cond, a, c):
    b = ctx.b
    like = a if isinstance(a, Value) else c
    a, c = _scalar_or_value(ctx, a, like), _scalar_or_value(ctx, c, like)
    if a.dtype != c.dtype:
        a, c = _promote(b, a, c)
    return b.where(cond, a, c)


def _full(ctx, size, fill_value, dtype=None, layout=None, device=None, pin_memory=None):
    dtype = _dt(dtype, "float32" if isinstance(fill_value, float) else "int64"
                if not isinstance(fill_value, bool) else "bool")
    return ctx.b.full(shape=_shape(ctx, size), value=fill_value, dtype=dtype)


def _full_like(ctx, x, fill_value, dtype=None, **kw):
    return ctx.b.full(shape=x.shape, value=fill_value, dtype=_dt(dtype, x.dtype))


def _scalar_tensor(ctx, value, dtype=None, **kw):
    return ctx.b.const(np.asarray(value), _dt(dtype, "float32"))


def _arange(ctx, start, end=None, step=1, dtype=None, **kw):
    if end is None:
        start, end = 0, start
    is_float = any(isinstance(v, float) for v in (start, end, step))
    return ctx.b.arange(start=start, stop=end, step=step, dtype=_dt(dtype, "float32" if is_float else "int64"))


def _to_copy(ctx, x, dtype=None, **kw):
    return ctx.b.cast(x, dtype=_dt(dtype)) if dtype is not None and _dt(dtype) != x.dtype else x


def _clamp(ctx, x, min=None, max=None):
    return ctx.b.clip(x, min=None if min is None else float(min), max=None if max is None else float(max))


def _pow(ctx, x, e):
    if isinstance(e, (int, float)) and not isinstance(x, (int, float)):
        if e == 2:
            return ctx.b.mul(x, x)
        if e == 0.5:
            return ctx.b.sqrt(x)
        if e == 1:
            return x
    return _binary("pow")(ctx, x, e)


def _gelu(ctx, x, approximate="none"):
    return ctx.b.gelu(x, approximate=approximate)


def _leaky_relu(ctx, x, negative_slope=0.01):
    return ctx.b.leaky_relu(x, alpha=float(negative_slope))


def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if scale != 1.0 or input_scale != 1.0:
        y = ctx.b.elu(ctx.b.mul(x, float(input_scale)), alpha=float(alpha))
        return ctx.b.mul(y, float(scale))
    return ctx.b.elu(x, alpha=float(alpha))


def _hardtanh(ctx, x, min_val=-1.0, max_val=1.0):
    return ctx.b.clip(x, min=float(min_val), max=float(max_val))


def _softplus(ctx, x, beta=1.0, threshold=20.0):
    return ctx.b.softplus(x, beta=float(beta), threshold=float(threshold))


def _embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if scale_grad_by_freq:
        raise UnsupportedError("embedding with scale_grad_by_freq=True is not supported")
    return ctx.b.embedding(weight, indices, padding_idx=padding_idx if padding_idx >= 0 else None)


def _gather(ctx, x, dim, index, sparse_grad=False):
    return ctx.b.gather_elements(x, index, axis=_axis(dim, x.rank))


def _index_select(ctx, x, dim, index):
    return ctx.b.gather(x, index, axis=_axis(dim, x.rank))


def _index(ctx, x, indices):
    """x[i0, i1, ...] with index tensors on adjacent axes (torch puts the
    broadcast index dims where the first indexed axis was): merge the indexed
    axes into one and gather a linear index."""
    b = ctx.b
    pos = [i for i, t in enumerate(indices) if t is not None]
    idx = [t for t in indices if t is not None]
    if any(t.dtype == "bool" for t in idx):
        raise UnsupportedError("boolean mask indexing (data-dependent shape) is not supported")
    if len(idx) == 1:
        return b.gather(x, idx[0], axis=pos[0])
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise UnsupportedError("advanced indexing with index tensors on non-adjacent axes is not supported")
    sizes = [x.shape[p] for p in pos]
    lin = None
    for t, p in zip(idx, pos):
        t = b.cast(t, dtype="int64") if t.dtype != "int64" else t
        size = _size_value(b, x, p)
        t = b.mod(t, size)                    # negative indices count from the end
        lin = t if lin is None else b.add(b.mul(lin, size), t)
    from irtool.ir.shapes import mul_dims
    merged = b.reshape(x, shape=x.shape[:pos[0]] + (mul_dims(*sizes),) + x.shape[pos[-1] + 1:])
    return b.gather(merged, lin, axis=pos[0])


def _size_value(b, x, axis):
    """x.shape[axis] as an int64 scalar Value (read at run time when symbolic)."""
    d = x.shape[axis]
    if isinstance(d, int):
        return b.const(d, "int64")
    return b.gather(b.shape_of(x), b.const(np.int64(axis), "int64"), axis=0)


def _constant_pad(ctx, x, pad, value=0.0):
    return _pad(ctx, x, pad, "constant", value)


def _pad(ctx, x, pad, mode, value=0.0):
    begins, ends = [0] * x.rank, [0] * x.rank
    for i in range(len(pad) // 2):           # torch: (last_begin, last_end, prev_begin, ...)
        axis = x.rank - 1 - i
        begins[axis], ends[axis] = pad[2 * i], pad[2 * i + 1]
    return ctx.b.pad(x, pads=tuple(begins + ends), mode=mode, value=float(value or 0.0))


def _reflection_pad(ctx, x, pad):
    return _pad(ctx, x, pad, "reflect")


def _replication_pad(ctx, x, pad):
    return _pad(ctx, x, pad, "edge")


def _upsample_nearest(ctx, x, output_size, scales=None, *rest):
    if output_size is None:
        scales = scales if isinstance(scales, (list, tuple)) else rest
        output_size = [int(math.floor(s * f)) for s, f in zip(x.shape[2:], scales)]
    return ctx.b.resize(x, size=tuple(output_size), mode="nearest")


def _upsample_linear(ctx, x, output_size, align_corners, scales=None, *rest):
    if output_size is None:
        output_size = [int(math.floor(s * f)) for s, f in zip(x.shape[2:], scales)]
    return ctx.b.resize(x, size=tuple(output_size), mode="linear", align_corners=bool(align_corners))


def _masked_fill(ctx, x, mask, value):
    v = value if isinstance(value, Value) else ctx.b.const(value, x.dtype)
    return ctx.b.where(mask, ctx.b.expand(v, shape=()) if v.rank else v, x)


def _max_dim(ctx, x, dim, keepdim=False):
    axis = _axis(dim, x.rank)
    return (ctx.b.reduce_max(x, axes=(axis,), keepdims=keepdim), ctx.b.argmax(x, axis=axis, keepdims=keepdim))


def _min_dim(ctx, x, dim, keepdim=False):
    axis = _axis(dim, x.rank)
    return (ctx.b.reduce_min(x, axes=(axis,), keepdims=keepdim), ctx.b.argmin(x, axis=axis, keepdims=keepdim))


def _argm(op):
    def fn(ctx, x, dim=None, keepdim=False):
        if dim is None:
            x, dim = ctx.b.reshape(x, shape=(-1,)), 0
        return getattr(ctx.b, op)(x, axis=_axis(dim, x.rank), keepdims=bool(keepdim))
    return fn


def _cumsum(ctx, x, dim, dtype=None):
    if dtype is not None or x.dtype == "bool":      # torch sums bools as int64
        x = ctx.b.cast(x, dtype=_dt(dtype, "int64"))
    return ctx.b.cumsum(x, axis=_axis(dim, x.rank))


def _topk(ctx, x, k, dim=-1, largest=True, sorted=True):
    return ctx.b.topk(x, k=k, axis=_axis(dim, x.rank), largest=bool(largest))


def _var(ctx, x, dims=None, correction=None, keepdim=False):
    b = ctx.b
    axes = None if dims is None else tuple(_axis(d, x.rank) for d in dims)
    mean = b.reduce_mean(x, axes=axes, keepdims=True)
    d = b.sub(x, mean)
    n = 1
    for a in (axes if axes is not None else range(x.rank)):
        n = n * x.shape[a] if isinstance(x.shape[a], int) else None if n is None else None
    if n is None:
        raise UnsupportedError("var over symbolic dims is not supported")
    corr = 1 if correction is None else correction
    s = b.reduce_sum(b.mul(d, d), axes=axes, keepdims=bool(keepdim))
    return b.div(s, float(max(n - corr, 0)))


def _sym_size(ctx, x, dim):
    return x.shape[dim]


def _repeat(ctx, x, repeats):
    lead = len(repeats) - x.rank
    if lead:
        x = ctx.b.reshape(x, shape=(1,) * lead + x.shape)
    return ctx.b.tile(x, repeats=tuple(repeats))


def _flip(ctx, x, dims):
    return ctx.b.flip(x, axes=tuple(_axis(d, x.rank) for d in dims))


def _tril_triu(lower):
    def fn(ctx, x, diagonal=0):
        b = ctx.b
        r, c = x.shape[-2], x.shape[-1]
        if not (isinstance(r, int) and isinstance(c, int)):
            raise UnsupportedError("tril/triu over symbolic sizes is not supported")
        mask = np.tril(np.ones((r, c), bool), diagonal) if lower else np.triu(np.ones((r, c), bool), diagonal)
        return b.where(b.const(mask, "bool"), x, b.const(0, x.dtype))
    return fn


def _sym_arith(op):
    def fn(ctx, a, c):
        from irtool.ir.shapes import add_dims, mul_dims
        if op == "mul":
            return mul_dims(a, c)
        if op == "add":
            return add_dims(a, c)
        if isinstance(a, int) and isinstance(c, int):
            return {"sub": a - c, "floordiv": a // c}[op]
        raise UnsupportedError(f"symbolic size arithmetic {op} is not supported")
    return fn


def _sdpa(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and q.shape[-3] != k.shape[-3]:
        raise UnsupportedError("grouped-query attention (enable_gqa) is not supported")
    ins = [q, k, v] + ([attn_mask] if attn_mask is not None else [])
    return ctx.b.scaled_dot_product_attention(*ins, is_causal=bool(is_causal),
                                              scale=None if scale is None else float(scale))


def _ignore(ctx, *args, **kwargs):
    return None


ATEN = {
    # linear algebra
    "addmm.default": _addmm, "mm.default": lambda ctx, a, c: ctx.b.matmul(a, c),
    "bmm.default": lambda ctx, a, c: ctx.b.matmul(a, c),
    "matmul.default": lambda ctx, a, c: ctx.b.matmul(a, c),
    # elementwise arithmetic
    "add.Tensor": _binary("add"), "add.Scalar": _binary("add"),
    "sub.Tensor": _binary("sub"), "sub.Scalar": _binary("sub"),
    "rsub.Scalar": lambda ctx, a, c, alpha=1: _binary("sub")(ctx, c, a if alpha == 1 else ctx.b.mul(a, alpha)),
    "mul.Tensor": _binary("mul"), "mul.Scalar": _binary("mul"),
    "div.Tensor": _binary("div"), "div.Scalar": _binary("div"),
    "div.Tensor_mode": lambda ctx, a, c, rounding_mode=None: _div_mode(ctx, a, c, rounding_mode),
    "remainder.Tensor": _binary("mod"), "remainder.Scalar": _binary("mod"),
    "fmod.Tensor": _binary("mod"),
    "pow.Tensor_Scalar": _pow, "pow.Tensor_Tensor": _binary("pow"),
    "pow.Scalar": lambda ctx, a, c: _binary("pow")(ctx, a, c),
    "maximum.default": _binary("maximum"), "minimum.default": _binary("minimum"),
    "neg.default": _unary("neg"), "abs.default": _unary("abs"), "sign.default": _unary("sign"),
    "exp.default": _unary("exp"), "log.default": _unary("log"), "log1p.default": _unary("log1p"),
    "sqrt.default": _unary("sqrt"), "rsqrt.default": _unary("rsqrt"),
    "reciprocal.default": _unary("reciprocal"), "sin.default": _unary("sin"), "cos.default": _unary("cos"),
    "tanh.default": _unary("tanh"), "sigmoid.default": _unary("sigmoid"), "erf.default": _unary("erf"),
    "floor.default": _unary("floor"), "ceil.default": _unary("ceil"), "round.default": _unary("round"),
    "isnan.default": _unary("isnan"),
    "logical_not.default": _unary("logical_not"), "bitwise_not.default": _unary("logical_not"),
    "logical_and.default": _compare("logical_and"), "bitwise_and.Tensor": _compare("logical_and"),
    "logical_or.default": _compare("logical_or"), "bitwise_or.Tensor": _compare("logical_or"),
    "eq.Tensor": _compare("eq"), "eq.Scalar": _compare("eq"), "ne.Tensor": _compare("ne"),
    "ne.Scalar": _compare("ne"), "lt.Tensor": _compare("lt"), "lt.Scalar": _compare("lt"),
    "le.Tensor": _compare("le"), "le.Scalar": _compare("le"), "gt.Tensor": _compare("gt"),
    "gt.Scalar": _compare("gt"), "ge.Tensor": _compare("ge"), "ge.Scalar": _compare("ge"),
    "where.self": _where, "clamp.default": _clamp, "clamp.Tensor": _clamp,
    "clamp_min.default": lambda ctx, x, m: _clamp(ctx, x, min=m),
    "clamp_max.default": lambda ctx, x, m: _clamp(ctx, x, max=m),
    "masked_fill.Scalar": _masked_fill, "masked_fill.Tensor": _masked_fill,
    # activations
    "relu.default": _unary("relu"), "gelu.default": _gelu, "silu.default": _unary("silu"),
    "leaky_relu.default": _leaky_relu, "elu.default": _elu, "hardtanh.default": _hardtanh,
    "hardsigmoid.default": _unary("hardsigmoid"), "hardswish.default": _unary("hardswish"),
    "softplus.default": _softplus,
    "_softmax.default": _softmax("softmax"), "_log_softmax.default": _softmax("log_softmax"),
    "logsumexp.default": lambda ctx, x, dims, keepdim=False: ctx.b.logsumexp(
        x, axes=tuple(_axis(d, x.rank) for d in dims), keepdims=bool(keepdim)),
    # reductions
    "sum.dim_IntList": _sum, "sum.default": lambda ctx, x, dtype=None: _sum(ctx, x, None, False, dtype),
    "mean.dim": _reduce("reduce_mean"), "mean.default": lambda ctx, x, dtype=None: _reduce("reduce_mean")(
        ctx, x, None, False, dtype),
    "amax.default": _reduce("reduce_max"), "amin.default": _reduce("reduce_min"),
    "max.default": lambda ctx, x: ctx.b.reduce_max(x), "min.default": lambda ctx, x: ctx.b.reduce_min(x),
    "max.dim": _max_dim, "min.dim": _min_dim,
    "prod.dim_int": lambda ctx, x, dim, keepdim=False, dtype=None: _reduce("reduce_prod")(ctx, x, [dim], keepdim, dtype),
    "prod.default": lambda ctx, x, dtype=None: _reduce("reduce_prod")(ctx, x, None, False, dtype),
    "argmax.default": _argm("argmax"), "argmin.default": _argm("argmin"),
    "any.dim": _any, "any.dims": _any, "any.default": lambda ctx, x: _any(ctx, x),
    "cumsum.default": _cumsum, "topk.default": _topk,
    "var.correction": _var,
    # shapes and layout
    "view.default": _view, "_unsafe_view.default": _view, "reshape.default": _view,
    "expand.default": _expand, "permute.default": _permute, "transpose.int": _transpose_int,
    "t.default": lambda ctx, x: ctx.b.transpose(x, perm=tuple(reversed(range(x.rank)))),
    "unsqueeze.default": _unsqueeze, "squeeze.dims": _squeeze, "squeeze.dim": _squeeze,
    "squeeze.default": _squeeze, "cat.default": _cat, "slice.Tensor": _slice, "select.int": _select,
    "slice_scatter.default": _slice_scatter, "select_scatter.default": _select_scatter,
    "copy.default": _copy, "fill.Scalar": lambda ctx, x, value: _full_like(ctx, x, value),
    "fill.Tensor": lambda ctx, x, value: _copy(ctx, x, value),
    "split_with_sizes.default": _split_with_sizes, "split.Tensor": _split,
    "clone.default": _identity, "alias.default": _identity, "detach.default": lambda ctx, x: ctx.b.stop_gradient(x),
    "lift_fresh_copy.default": _identity, "contiguous.default": _identity,
    "_to_copy.default": _to_copy, "native_dropout.default": lambda ctx, x, p, train: (x, None),
    "dropout.default": lambda ctx, x, p, train: x,
    "gather.default": _gather, "index_select.default": _index_select, "index.Tensor": _index,
    "embedding.default": _embedding, "constant_pad_nd.default": _constant_pad,
    "reflection_pad1d.default": _reflection_pad, "reflection_pad2d.default": _reflection_pad,
    "reflection_pad3d.default": _reflection_pad, "replication_pad1d.default": _replication_pad,
    "replication_pad2d.default": _replication_pad, "replication_pad3d.default": _replication_pad,
    "repeat.default": _repeat, "flip.default": _flip,
    "tril.default": _tril_triu(True), "triu.default": _tril_triu(False),
    # creation
    "full.default": _full, "full_like.default": _full_like, "scalar_tensor.default": _scalar_tensor,
    "arange.start_step": _arange, "arange.default": _arange, "arange.start": _arange,
    "zeros_like.default": lambda ctx, x, dtype=None, **kw: _full_like(ctx, x, 0, dtype),
    "ones_like.default": lambda ctx, x, dtype=None, **kw: _full_like(ctx, x, 1, dtype),
    # neural network layers
    "convolution.default": _convolution,
    "_native_batch_norm_legit_no_training.default": _batch_norm_eval,
    "native_layer_norm.default": _layer_norm, "native_group_norm.default": _group_norm,
    "max_pool1d_with_indices.default": _max_pool, "max_pool2d_with_indices.default": _max_pool,
    "max_pool3d_with_indices.default": _max_pool,
    "avg_pool1d.default": _avg_pool, "avg_pool2d.default": _avg_pool, "avg_pool3d.default": _avg_pool,
    "_adaptive_avg_pool1d.default": _adaptive_avg_pool, "_adaptive_avg_pool2d.default": _adaptive_avg_pool,
    "_adaptive_avg_pool3d.default": _adaptive_avg_pool,
    "upsample_nearest1d.vec": _upsample_nearest, "upsample_nearest2d.vec": _upsample_nearest,
    "upsample_nearest3d.vec": _upsample_nearest, "upsample_nearest2d.default": _upsample_nearest,
    "upsample_bilinear2d.vec": _upsample_linear, "upsample_linear1d.vec": _upsample_linear,
    "upsample_trilinear3d.vec": _upsample_linear, "upsample_bilinear2d.default": _upsample_linear,
    "scaled_dot_product_attention.default": _sdpa,
    # symbolic sizes and bookkeeping
    "sym_size.int": _sym_size, "_assert_scalar.default": _ignore,
    "sym_constrain_range_for_size.default": _ignore, "_assert_tensor_metadata.default": _ignore,
    "<built-in function mul>": _sym_arith("mul"), "<built-in function add>": _sym_arith("add"),
    "<built-in function sub>": _sym_arith("sub"), "<built-in function floordiv>": _sym_arith("floordiv"),
}


# ---- training-IR ops -------------------------------------------------------
# torch.export's own output (before run_decompositions) keeps these composite
# ops. Mapping them directly lets the frontend skip the decomposition retrace,
# which was ~60% of a transformer's conversion time. A model with any other
# op is decomposed to core ATen first, as before.

class NeedsDecomposition(Exception):
    """Raised by an entry whose arguments only the core-ATen form handles
    (e.g. batch norm in training mode): the frontend decomposes and retries."""


def _linear(ctx, x, w, bias=None):
    return ctx.b.linear(x, w) if bias is None else ctx.b.linear(x, w, bias)


def _conv(ctx, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):          # padding="same"/"valid": core ATen spells it out
        raise NeedsDecomposition("string conv padding")
    n = x.rank - 2

    def per_dim(v):
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        return v * n if len(v) == 1 else v
    return _convolution(ctx, x, w, bias, per_dim(stride), per_dim(padding), per_dim(dilation),
                        False, (0,) * n, groups)


def _batch_norm(ctx, x, w, bias, mean, var, training, momentum, eps, cudnn_enabled=True):
    if training or mean is None:
        raise NeedsDecomposition("batch norm in training mode")
    return _batch_norm_eval(ctx, x, w, bias, mean, var, momentum, eps)[0]


def _group_norm_op(ctx, x, groups, w=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return _group_norm(ctx, x, w, bias, None, x.shape[1], None, groups, eps)[0]


def _flatten(ctx, x, start=0, end=-1):
    from irtool.ir.shapes import mul_dims
    if x.rank == 0:
        return ctx.b.reshape(x, shape=(1,))
    start, end = _axis(start, x.rank), _axis(end, x.rank)
    shape = x.shape[:start] + (mul_dims(*x.shape[start:end + 1]),) + x.shape[end + 1:]
    return x if shape == x.shape else ctx.b.reshape(x, shape=shape)


def _unflatten(ctx, x, dim, sizes):
    dim = _axis(dim, x.rank)
    return ctx.b.reshape(x, shape=x.shape[:dim] + _shape(ctx, sizes) + x.shape[dim + 1:])


def _diff(ctx, x, n=1, dim=-1, prepend=None, append=None):
    dim = _axis(dim, x.rank)
    parts = [t for t in (prepend, x, append) if t is not None]
    y = _cat(ctx, parts, dim) if len(parts) > 1 else x
    for _ in range(n):
        hi = _slice(ctx, y, dim, 1, None)
        lo = _slice(ctx, y, dim, 0, -1)
        y = ctx.b.ne(hi, lo) if y.dtype == "bool" else ctx.b.sub(hi, lo)   # bool diff is xor
    return y


def _new_full(fill):
    def fn(ctx, x, size, dtype=None, **kw):
        dtype = _dt(dtype, x.dtype)
        return ctx.b.full(shape=_shape(ctx, size), value=fill, dtype=dtype)
    return fn


def _softmax_int(op):
    def fn(ctx, x, dim, dtype=None):
        if dtype is not None:
            x = _to_copy(ctx, x, dtype=dtype)
        return getattr(ctx.b, op)(x, axis=_axis(dim, x.rank))
    return fn


TRAINING_IR = {
    "linear.default": _linear,      # the IR's own linear op (torch weight layout)
    "conv1d.default": _conv, "conv2d.default": _conv, "conv3d.default": _conv,
    "batch_norm.default": _batch_norm, "group_norm.default": _group_norm_op,
    "layer_norm.default": lambda ctx, x, shape, w=None, bias=None, eps=1e-5, cudnn_enable=True:
        _layer_norm(ctx, x, shape, w, bias, eps)[0],
    "max_pool1d.default": lambda ctx, x, *a: _max_pool(ctx, x, *a)[0],
    "max_pool2d.default": lambda ctx, x, *a: _max_pool(ctx, x, *a)[0],
    "max_pool3d.default": lambda ctx, x, *a: _max_pool(ctx, x, *a)[0],
    "adaptive_avg_pool1d.default": _adaptive_avg_pool, "adaptive_avg_pool2d.default": _adaptive_avg_pool,
    "adaptive_avg_pool3d.default": _adaptive_avg_pool,
    "flatten.using_ints": _flatten, "unflatten.int": _unflatten, "diff.default": _diff,
    "softmax.int": _softmax_int("softmax"), "log_softmax.int": _softmax_int("log_softmax"),
    "new_ones.default": _new_full(1), "new_zeros.default": _new_full(0),
    "zeros.default": lambda ctx, size, dtype=None, **kw: _full(ctx, size, 0.0, dtype or _default_float()),
    "ones.default": lambda ctx, size, dtype=None, **kw: _full(ctx, size, 1.0, dtype or _default_float()),
    "to.dtype_layout": lambda ctx, x, dtype=None, **kw: _to_copy(ctx, x, dtype=dtype),
    "to.dtype": lambda ctx, x, dtype, *a, **kw: _to_copy(ctx, x, dtype=dtype),
    "type_as.default": lambda ctx, x, other: ctx.b.cast(x, dtype=other.dtype) if x.dtype != other.dtype else x,
    "__and__.Tensor": _compare("logical_and"), "__or__.Tensor": _compare("logical_or"),
    "relu6.default": lambda ctx, x: _hardtanh(ctx, x, 0.0, 6.0),
}


def _default_float():
    import torch
    return torch.get_default_dtype()


ATEN.update(TRAINING_IR)


def _div_mode(ctx, a, c, mode):
    b = ctx.b
    if not isinstance(c, Value):
        c = b.const(c, a.dtype)
    q = b.div(a, c)
    if mode == "floor":
        return b.floor(q) if q.dtype.startswith(("float", "bfloat")) else _floor_div_int(b, a, c)
    if mode == "trunc":
        if q.dtype.startswith(("float", "bfloat")):
            return b.mul(b.sign(q), b.floor(b.abs(q)))
        return q
    return q


def _floor_div_int(b, a, c):
    q = b.div(a, c)                     # truncates
    fix = b.logical_and(b.ne(b.mul(q, c), a), b.ne(b.lt(a, 0), b.lt(c, 0)))
    return b.sub(q, b.cast(fix, dtype=q.dtype))
