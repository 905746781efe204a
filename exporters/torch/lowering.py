"""IR op -> torch calls: one table, LOWERINGS = {OpDef: fn}, covering every op.

An entry is `fn(*tensors, **attrs) -> tensor` (a tuple for multi-output ops),
called with the node's attrs, shape attrs already resolved to ints (SymInts
under torch.export). Entries marked `@per_node` are called once, when the
module is built, as `fn(node)` and return such a function: they read the
node's static IR types (a slice's static axis size, squeeze's default axes).

Creation ops (CREATION: arange, full) also get `device=`, the module's device.

The one thing to know: every entry must reproduce the numpy kernel
(runtime/kernels) exactly and stay traceable by torch.export: no Python
branches on tensor values or on symbolic sizes, and constant arrays made
with `torch.as_tensor(..., device=x.device)` at call time, so they follow the
module's device and become lifted constants when exported. Gradients come
from torch.autograd; the IR's vjp rules follow torch, so the two agree.
"""
import numpy as np
import torch
import torch.nn.functional as F

from irtool.ir.ops import composite as cops
from irtool.ir.ops import conv as conv_ops
from irtool.ir.ops import elementwise as eops
from irtool.ir.ops import reduce as rops
from irtool.ir.ops import shape_ops as sops


def torch_dtype(name):
    """IR dtype name -> torch dtype (the names agree)."""
    return getattr(torch, name)


def per_node(fn):
    """Mark a lowering that needs the node: fn(node) -> fn(*tensors, **attrs)."""
    fn.per_node = True
    return fn


def _fill(value, dtype):
    """A Python number cast the way numpy's astype casts it to `dtype`."""
    if dtype == torch.bool:
        return bool(value)
    if dtype.is_floating_point:
        return float(value)
    return int(value)


def _widths(begins, ends):
    """ONNX (begins..., ends...) of the trailing axes -> F.pad widths (last axis first)."""
    out = []
    for b, e in reversed(list(zip(begins, ends))):
        out += [int(b), int(e)]
    return out


def _axis_index(rank, axis, index):
    return (slice(None),) * axis + (index,) + (slice(None),) * (rank - axis - 1)


# -- elementwise ------------------------------------------------------------------------

def _safe_int_divisor(y):
    zero = y == 0
    return zero, torch.where(zero, torch.ones_like(y), y)


def _div(x, y):
    if x.dtype.is_floating_point:
        return torch.div(x, y)
    zero, y1 = _safe_int_divisor(y)                 # numpy kernel: x / 0 gives 0
    q = torch.div(x, y1, rounding_mode="trunc")
    return torch.where(zero, torch.zeros_like(q), q)


def _mod(x, y):
    if x.dtype.is_floating_point:
        return torch.remainder(x, y)
    zero, y1 = _safe_int_divisor(y)
    r = torch.remainder(x, y1)
    return torch.where(zero, torch.zeros_like(r), r)


def _clip(x, min=None, max=None):
    if min is None and max is None:
        return x.clone()
    lo = None if min is None else _fill(min, x.dtype)
    hi = None if max is None else _fill(max, x.dtype)
    return torch.clamp(x, min=lo, max=hi)


ELEMENTWISE = {
    eops.NEG: torch.neg,
    eops.ABS: torch.abs,
    eops.SIGN: torch.sign,
    eops.EXP: torch.exp,
    eops.LOG: torch.log,
    eops.LOG1P: torch.log1p,
    eops.SQRT: torch.sqrt,
    eops.RSQRT: torch.rsqrt,
    eops.RECIPROCAL: torch.reciprocal,
    eops.SIN: torch.sin,
    eops.COS: torch.cos,
    eops.TANH: torch.tanh,
    eops.SIGMOID: torch.sigmoid,
    eops.ERF: torch.erf,
    eops.FLOOR: torch.floor,
    eops.CEIL: torch.ceil,
    eops.ROUND: torch.round,                 # half to even, like numpy
    eops.ISNAN: torch.isnan,
    eops.LOGICAL_NOT: torch.logical_not,
    eops.ADD: torch.add,
    eops.SUB: torch.sub,
    eops.MUL: torch.mul,
    eops.DIV: _div,
    eops.POW: torch.pow,
    eops.MAXIMUM: torch.maximum,
    eops.MINIMUM: torch.minimum,
    eops.MOD: _mod,
    eops.EQ: torch.eq,
    eops.NE: torch.ne,
    eops.LT: torch.lt,
    eops.LE: torch.le,
    eops.GT: torch.gt,
    eops.GE: torch.ge,
    eops.LOGICAL_AND: torch.logical_and,
    eops.LOGICAL_OR: torch.logical_or,
    eops.WHERE: torch.where,
    eops.CLIP: _clip,
    eops.STOP_GRADIENT: torch.Tensor.detach,
    eops.CAST: lambda x, dtype: x.to(torch_dtype(dtype)),
}


# -- reductions, scans, matmul, topk ------------------------------------------------------

def _dims(x, axes):
    """IR axes -> torch dims; () means no reduction (torch would read it as all)."""
    if x.ndim == 0:
        return ()
    return tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)


def _reducer(fn, keep_dtype=False):
    def lower(x, axes=None, keepdims=False):
        dims = _dims(x, axes)
        if not dims:
            return x
        if keep_dtype:           # torch sums small ints into int64; the IR keeps the dtype
            return fn(x, dim=dims, keepdim=keepdims, dtype=x.dtype)
        return fn(x, dim=dims, keepdim=keepdims)
    return lower


def _reduce_prod(x, axes=None, keepdims=False):
    for d in sorted(_dims(x, axes), reverse=True):     # torch.prod takes one dim at a time
        x = torch.prod(x, dim=d, keepdim=keepdims, dtype=x.dtype)
    return x


def _cumsum(x, axis, exclusive=False, reverse=False):
    y = torch.flip(x, (axis,)) if reverse else x
    out = torch.cumsum(y, dim=axis, dtype=x.dtype)
    if exclusive:           # shift by one along axis, zero first
        axis %= x.ndim
        first = out.new_zeros(tuple(1 if i == axis else d for i, d in enumerate(out.shape)))
        out = torch.cat([first, out], dim=axis).narrow(axis, 0, x.shape[axis])
    return torch.flip(out, (axis,)) if reverse else out


def _topk(x, k, axis=-1, largest=True):
    # a stable sort gives the kernel's order among ties (lower index first) and
    # puts NaN first when largest, as numpy's kernel does; torch.topk promises neither
    values, idx = torch.sort(x, dim=axis, descending=largest, stable=True)
    return values.narrow(axis, 0, k), idx.narrow(axis, 0, k)


REDUCE = {
    rops.REDUCE_SUM: _reducer(torch.sum, keep_dtype=True),
    rops.REDUCE_MEAN: _reducer(torch.mean),
    rops.REDUCE_MAX: _reducer(torch.amax),
    rops.REDUCE_MIN: _reducer(torch.amin),
    rops.REDUCE_PROD: _reduce_prod,
    rops.ARGMAX: lambda x, axis, keepdims=False: torch.argmax(x, dim=axis, keepdim=keepdims),
    rops.ARGMIN: lambda x, axis, keepdims=False: torch.argmin(x, dim=axis, keepdim=keepdims),
    rops.CUMSUM: _cumsum,
    rops.TOPK: _topk,
    rops.MATMUL: torch.matmul,
}


# -- layout, indexing, creation ------------------------------------------------------------

def _constant(value):
    """Used only outside modules; IRModule keeps constants as buffers."""
    return from_numpy(value)


def from_numpy(a):
    """A torch tensor copy of a numpy array (bfloat16 included)."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def _unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@per_node
def _squeeze(node):
    x = node.inputs[0]
    axes = node.attrs.get("axes")
    # default axes: the static 1s of the IR type (what the shape rule dropped)
    dims = tuple(i for i, d in enumerate(x.shape) if d == 1) if axes is None else \
        tuple(a % x.rank for a in axes)

    def lower(x, axes=None):
        return torch.squeeze(x, dims) if dims else x
    return lower


def _split(x, sizes, axis):
    parts = torch.split(x, list(sizes), dim=axis)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _take_range(x, axis, lo, hi, step):
    """x[lo:hi:|step|] along axis, reversed when step < 0 (lo..hi ascending)."""
    y = x[_axis_index(x.ndim, axis, slice(lo, hi, abs(step)))]
    return torch.flip(y, (axis,)) if step < 0 else y


@per_node
def _slice(node):
    plan = sops.slice_plan(node.inputs[0].type, node.attrs)

    def lower(x, starts, ends, axes=None, steps=None):
        for axis, kind, data in plan:
            if kind == "empty":
                x = x.narrow(axis, 0, 0)
            elif kind == "symbolic":        # step 1, both bounds from the beginning
                x = x[_axis_index(x.ndim, axis, slice(starts[data], ends[data]))]
            else:
                x = _take_range(x, axis, *data)
        return x
    return lower


def _pad(x, pads, mode="constant", value=0.0):
    r = x.ndim
    if r == 0 or not any(pads):
        return x
    begins, ends = pads[:r], pads[r:]
    if mode == "constant":    # negative widths crop
        return F.pad(x, _widths(begins, ends), value=_fill(value, x.dtype))
    crop = tuple(slice(-min(lo, 0), min(hi, 0) or None) for lo, hi in zip(begins, ends))
    x = x[crop]
    for axis, (lo, hi) in enumerate(zip(begins, ends)):
        lo, hi = max(lo, 0), max(hi, 0)
        if not lo and not hi:
            continue
        parts = []
        if mode == "reflect":
            if lo:
                parts.append(torch.flip(x[_axis_index(r, axis, slice(1, lo + 1))], (axis,)))
            parts.append(x)
            if hi:
                parts.append(torch.flip(x[_axis_index(r, axis, slice(-hi - 1, -1))], (axis,)))
        else:                 # edge: repeat the first / last slice
            sizes = list(x.shape)
            if lo:
                sizes[axis] = lo
                parts.append(x[_axis_index(r, axis, slice(0, 1))].expand(sizes))
            parts.append(x)
            if hi:
                sizes[axis] = hi
                parts.append(x[_axis_index(r, axis, slice(-1, None))].expand(sizes))
        x = torch.cat(parts, dim=axis)
    return x


def _wrap(indices, size):
    return torch.where(indices < 0, indices + size, indices).long()


def _gather(x, indices, axis=0):
    # index_select of the flattened (wrapped) indices: advanced indexing would
    # read a 0-d index back to the host (.item())
    axis %= x.ndim
    picked = torch.index_select(x, axis, _wrap(indices, x.shape[axis]).reshape(-1))
    return picked.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


def _gather_elements(x, indices, axis=0):
    axis %= x.ndim
    return torch.gather(x, axis, _wrap(indices, x.shape[axis]))


def _scatter_add(x, indices, updates, axis=0):
    axis %= x.ndim
    return torch.scatter_add(x, axis, _wrap(indices, x.shape[axis]), updates)


def _shape_of(x):
    if not x.ndim:
        return torch.zeros((0,), dtype=torch.int64, device=x.device)
    # one scalar per dim: exportable with symbolic sizes (torch._shape_as_tensor is not)
    return torch.stack([torch.scalar_tensor(d, dtype=torch.int64, device=x.device) for d in x.shape])


@per_node
def _arange(node):
    out = node.outputs[0]
    dt = torch_dtype(out.dtype)
    n = out.shape[0]

    def lower(start, stop, step=1, dtype=None, device=None):
        if not isinstance(n, int):         # symbolic bound: integer dtype, step 1
            return torch.arange(start, stop, 1, dtype=dt, device=device)
        if dt.is_floating_point:           # the kernel: start + i*step in float64, rounded once
            return (torch.arange(n, dtype=torch.float64, device=device) * step + start).to(dt)
        return (torch.arange(n, dtype=torch.int64, device=device) * step + start).to(dt)
    return lower


def _full(shape, value, dtype="float32", device=None):
    dt = torch_dtype(dtype)
    return torch.full(tuple(shape), _fill(value, dt), dtype=dt, device=device)


# ops that make tensors from attrs alone: called with device= (the module's device)
CREATION = (sops.ARANGE, sops.FULL)


SHAPE = {
    sops.CONSTANT: _constant,
    sops.RESHAPE: lambda x, shape: torch.reshape(x, tuple(shape)),
    sops.EXPAND: lambda x, shape: x.expand(tuple(shape)),
    sops.TRANSPOSE: lambda x, perm=None: x.permute(tuple(perm) if perm is not None
                                                   else tuple(reversed(range(x.ndim)))),
    sops.UNSQUEEZE: _unsqueeze,
    sops.SQUEEZE: _squeeze,
    sops.CONCAT: lambda *xs, axis: torch.cat(xs, dim=axis),
    sops.SPLIT: _split,
    sops.SLICE: _slice,
    sops.PAD: _pad,
    sops.GATHER: _gather,
    sops.GATHER_ELEMENTS: _gather_elements,
    sops.SCATTER_ADD: _scatter_add,
    sops.TILE: lambda x, repeats: x.repeat(*repeats) if x.ndim else x.clone(),
    sops.FLIP: lambda x, axes=None: torch.flip(x, tuple(range(x.ndim)) if axes is None else tuple(axes)),
    sops.SHAPE_OF: _shape_of,
    sops.ARANGE: _arange,
    sops.FULL: _full,
}


# -- conv, pooling, resize ------------------------------------------------------------------

def _fn(kind, nd):
    return getattr(F, f"{kind}{nd}d")


def _symmetric(pads, nd):
    return tuple(pads[:nd]) == tuple(pads[nd:])


def _conv(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = conv_ops.conv_params(attrs, nd)
    if not _symmetric(pads, nd):
        x, pads = F.pad(x, _widths(pads[:nd], pads[nd:])), (0,) * (2 * nd)
    return _fn("conv", nd)(x, w, bias, stride=strides, padding=pads[:nd], dilation=dil, groups=groups)


def _conv_transpose(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = conv_ops.conv_params(attrs, nd)
    outpad = conv_ops.int_tuple(attrs, "output_padding", nd, 0)
    fn = _fn("conv_transpose", nd)
    if _symmetric(pads, nd) and all(o < max(s, d) for o, s, d in zip(outpad, strides, dil)):
        return fn(x, w, bias, stride=strides, padding=pads[:nd], output_padding=outpad,
                  groups=groups, dilation=dil)
    # asymmetric pads or a large output_padding: full output, then crop / zero-extend
    y = fn(x, w, None, stride=strides, groups=groups, dilation=dil)
    y = F.pad(y, _widths([-p for p in pads[:nd]], [o - p for o, p in zip(outpad, pads[nd:])]))
    return y if bias is None else y + bias.reshape((1, -1) + (1,) * nd)


def _pool_setup(x, attrs):
    nd = x.ndim - 2
    kernel, strides, pads, dil = conv_ops.pool_params(attrs, nd)
    ceil = bool(attrs.get("ceil_mode", False))
    native = _symmetric(pads, nd) and all(2 * p <= k for p, k in zip(pads[:nd], kernel))
    return nd, kernel, strides, pads, dil, ceil, native


def _pad_to_windows(x, attrs, fill):
    """x padded by pads in front and up to exactly the extent the IR's output
    windows cover (cropped where they stop short), so a plain pool with no
    padding and floor rounding gives the IR's output size."""
    nd = x.ndim - 2
    kernel, strides, pads, dil = conv_ops.pool_params(attrs, nd)
    ceil = attrs.get("ceil_mode", False)
    sizes = [x.shape[2 + a] for a in range(nd)]
    out = [conv_ops.pool_out(sizes[a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a], ceil)
           for a in range(nd)]
    needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    ends = [needed[a] - sizes[a] - pads[a] for a in range(nd)]
    return F.pad(x, _widths(pads[:nd], ends), value=fill), needed


def _max_pool(x, **attrs):
    nd, kernel, strides, pads, dil, ceil, native = _pool_setup(x, attrs)
    if native:
        return _fn("max_pool", nd)(x, kernel, strides, pads[:nd], dil, ceil_mode=ceil)
    xp, _ = _pad_to_windows(x, attrs, float("-inf"))
    return _fn("max_pool", nd)(xp, kernel, strides, 0, dil)


def _avg_pool(x, **attrs):
    nd, kernel, strides, pads, dil, ceil, native = _pool_setup(x, attrs)
    include = bool(attrs.get("count_include_pad", False))
    if native:
        return _fn("avg_pool", nd)(x, kernel, strides, pads[:nd], ceil_mode=ceil, count_include_pad=include)
    xp, _ = _pad_to_windows(x, attrs, 0.0)
    if nd == 1:               # window sums: avg_pool1d has no divisor_override
        total = F.avg_pool2d(xp.unsqueeze(2), (1,) + kernel, (1,) + strides, divisor_override=1).squeeze(2)
    else:
        total = _fn("avg_pool", nd)(xp, kernel, strides, divisor_override=1)
    div = conv_ops.avg_pool_divisors(tuple(x.shape[2:]), kernel, strides, pads, ceil, include)
    return total / torch.as_tensor(div, device=x.device).to(x.dtype)


def _pool_argmax(x, attrs):
    """(N, C, *out) int64: flat index within each (n, c) plane of x of every
    window's max (first on ties, as torch and the numpy kernel)."""
    nd = x.ndim - 2
    kernel, strides, pads, dil = conv_ops.pool_params(attrs, nd)
    xp, needed = _pad_to_windows(x.detach(), attrs, float("-inf"))
    _, idx = _fn("max_pool", nd)(xp, kernel, strides, 0, dil, return_indices=True)
    coords = []
    for a in reversed(range(nd)):     # unravel over the padded plane, shift back, clip into x
        coords.append(torch.clamp(idx % needed[a] - pads[a], 0, x.shape[2 + a] - 1))
        idx = idx // needed[a]
    flat = coords[-1]
    for a in range(1, nd):
        flat = flat * x.shape[2 + a] + coords[nd - 1 - a]
    return flat


def _max_pool_backward(x, g, **attrs):
    idx = _pool_argmax(x, attrs)
    n, c = x.shape[0], x.shape[1]
    zeros = g.new_zeros((n, c, int(np.prod(x.shape[2:]))))
    return zeros.scatter_add(2, idx.flatten(2), g.flatten(2)).reshape(x.shape)


def _max_pool_select(x, t, **attrs):
    idx = _pool_argmax(x, attrs)
    return t.flatten(2).gather(2, idx.flatten(2)).reshape(idx.shape)


_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _resize(x, **attrs):
    nd = x.ndim - 2
    size, mode, align = conv_ops.resize_params(attrs, nd)
    if mode == "linear":
        return F.interpolate(x, size=size, mode=_LINEAR[nd], align_corners=align)
    # nearest: the IR's exact integer rule floor(j * in / out); F.interpolate
    # computes it in float32 and can land one index lower
    for a in range(nd):
        n_in = x.shape[2 + a]
        if n_in == size[a]:
            continue
        i0, _, _ = conv_ops.resize_sources(n_in, size[a], "nearest", False)
        x = torch.index_select(x, 2 + a, torch.as_tensor(i0, dtype=torch.int64, device=x.device))
    return x


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

def _logsumexp(x, axes=None, keepdims=False):
    dims = _dims(x, axes)
    return torch.logsumexp(x, dim=dims, keepdim=keepdims) if dims else x.clone()


def _layer_norm(x, weight=None, bias=None, axis=-1, eps=1e-5):
    return F.layer_norm(x, tuple(x.shape[axis % x.ndim:]), weight, bias, eps)


def _channel(p, rank):
    return p.reshape((-1,) + (1,) * (rank - 2))


def _batch_norm(x, weight, bias, mean, var, eps=1e-5):
    if not (mean.requires_grad or var.requires_grad):
        return F.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)
    # F.batch_norm gives running stats no gradient; the IR op differentiates them
    scale = torch.rsqrt(var + eps) * weight
    r = x.ndim
    return (x - _channel(mean, r)) * _channel(scale, r) + _channel(bias, r)


def _group_norm(x, weight=None, bias=None, groups=1, eps=1e-5):
    return F.group_norm(x, groups, weight, bias, eps)


def _sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


@per_node
def _mse_loss(node):
    same = node.inputs[0].shape == node.inputs[1].shape

    def lower(pred, target, reduction="mean"):
        if same:
            return F.mse_loss(pred, target, reduction=reduction)
        d = pred - target            # broadcasting: F.mse_loss warns about it
        loss = d * d
        return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss
    return lower


def _cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    return F.cross_entropy(logits, labels.long(), reduction=reduction, label_smoothing=label_smoothing,
                           ignore_index=-100 if ignore_index is None else ignore_index)


COMPOSITE = {
    cops.RELU: torch.relu,
    cops.LEAKY_RELU: lambda x, alpha=0.01: F.leaky_relu(x, alpha),
    cops.GELU: lambda x, approximate="none": F.gelu(x, approximate=approximate),
    cops.SILU: F.silu,
    cops.SOFTPLUS: lambda x, beta=1.0, threshold=20.0: F.softplus(x, beta, threshold),
    cops.ELU: lambda x, alpha=1.0: F.elu(x, alpha),
    cops.HARDSIGMOID: F.hardsigmoid,
    cops.HARDSWISH: F.hardswish,
    cops.SOFTMAX: lambda x, axis=-1: torch.softmax(x, axis),
    cops.LOG_SOFTMAX: lambda x, axis=-1: torch.log_softmax(x, axis),
    cops.LOGSUMEXP: _logsumexp,
    cops.LAYER_NORM: _layer_norm,
    cops.BATCH_NORM: _batch_norm,
    cops.GROUP_NORM: _group_norm,
    cops.LINEAR: F.linear,
    cops.EMBEDDING: lambda weight, indices, padding_idx=None: F.embedding(indices, weight, padding_idx),
    cops.SCALED_DOT_PRODUCT_ATTENTION: _sdpa,
    cops.MSE_LOSS: _mse_loss,
    cops.CROSS_ENTROPY: _cross_entropy,
}


LOWERINGS = {}
for _group in (ELEMENTWISE, REDUCE, SHAPE, CONV, COMPOSITE):
    LOWERINGS.update(_group)


def lowering_for(node):
    """The runtime function of one node (per-node entries prepared)."""
    fn = LOWERINGS[node.op]
    if getattr(fn, "per_node", False):
        return fn(node)
    return fn

