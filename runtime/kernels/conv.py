"""numpy kernels for irtool.ir.ops.conv.

conv is im2col + matmul: the columns are filled with one strided slice copy
per kernel tap (or, when the output is smaller than the kernel, as for the
weight gradient, one window copy per output position), then one matmul per
batch and group. Depthwise conv is a multiply-add per tap. conv_transpose is
the matmul the other way + col2im, one strided add per kernel tap. Pools
reduce over the taps with np.maximum / np.add on strided slices, never
materialising the windows; the max-pool gradient scatters per tap."""
from itertools import product
from math import prod

import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import conv as ops

_HALF = (np.dtype(np.float16), np_dtype("bfloat16"))


def _pad_to(x, pads, needed, fill):
    """Pad spatial axes by pads[a] in front and up to needed[a] total length
    (cropping the end where the windows do not reach it)."""
    nd = x.ndim - 2
    sp = x.shape[2:]
    keep = tuple(max(min(sp[a], needed[a] - pads[a]), 0) for a in range(nd))
    if not any(pads[:nd]) and all(needed[a] <= sp[a] for a in range(nd)):
        return x[(slice(None),) * 2 + tuple(slice(0, n) for n in needed)]
    xp = np.full(x.shape[:2] + tuple(needed), fill, dtype=x.dtype)
    xp[(slice(None),) * 2 + tuple(slice(pads[a], pads[a] + keep[a]) for a in range(nd))] = \
        x[(slice(None),) * 2 + tuple(slice(0, k) for k in keep)]
    return xp


def _taps(kernel, strides, dil, out):
    """Index of each kernel tap's (N, C, *out) slice of the padded input, in
    row-major tap order."""
    nd = len(kernel)
    for k in product(*(range(kk) for kk in kernel)):
        yield (slice(None),) * 2 + tuple(slice(k[a] * dil[a], k[a] * dil[a] + (out[a] - 1) * strides[a] + 1,
                                               strides[a]) for a in range(nd))


def _positions(kernel, strides, dil, out):
    """Index of each output position's (N, C, *kernel) window of the padded
    input, in row-major output order."""
    nd = len(kernel)
    for p in product(*(range(o) for o in out)):
        yield (slice(None),) * 2 + tuple(slice(p[a] * strides[a], p[a] * strides[a] + dil[a] * (kernel[a] - 1) + 1,
                                               dil[a]) for a in range(nd))


def _bias(y, bias):
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


def _in_float32(kernel):
    """16-bit floats: compute in float32 (one rounding at the end, as numpy's
    half matmul and onnxruntime accumulate), return the input dtype."""
    def run(x, w, bias=None, **attrs):
        if x.dtype not in _HALF:
            return kernel(x, w, bias, **attrs)
        b = None if bias is None else bias.astype(np.float32)
        return kernel(x.astype(np.float32), w.astype(np.float32), b, **attrs).astype(x.dtype)
    run.__name__ = kernel.__name__
    return run


@_in_float32
def conv(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = ops.conv_params(attrs, nd)
    kernel = w.shape[2:]
    out = tuple(ops.conv_out(x.shape[2 + a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a])
                for a in range(nd))
    needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    xp = _pad_to(x, pads, needed, 0)
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og, kp, po = o // groups, prod(kernel), prod(out)
    if cg == 1 and og == 1 and groups > 1:
        # depthwise: y += x_tap * w[:, tap] per tap, no columns
        wk = w.reshape(o, kp)
        y = np.zeros((n, o) + out, dtype=x.dtype)
        tmp = np.empty_like(y)
        for t, sl in enumerate(_taps(kernel, strides, dil, out)):
            np.multiply(xp[sl], wk[:, t].reshape((o,) + (1,) * nd), out=tmp)
            y += tmp
        return _bias(y, bias)
    if kp <= po:
        # columns (N, G, Cg*Kp, P), one tap's (N, C, *out) slice at a time
        cols = np.empty((n, c, kp) + out, dtype=x.dtype)
        for t, sl in enumerate(_taps(kernel, strides, dil, out)):
            cols[:, :, t] = xp[sl]
        y = np.matmul(w.reshape(groups, og, cg * kp), cols.reshape(n, groups, cg * kp, po))
        return _bias(y.reshape((n, o) + out), bias)
    # few output positions (the weight gradient): columns (N, G, P, Cg*Kp), one window at a time
    cols = np.empty((n, groups, po, cg) + tuple(kernel), dtype=x.dtype)
    for q, sl in enumerate(_positions(kernel, strides, dil, out)):
        cols[:, :, q] = xp[sl].reshape((n, groups, cg) + tuple(kernel))
    wt = w.reshape(groups, og, cg * kp).transpose(0, 2, 1)
    if groups == 1:
        y = np.matmul(cols.reshape(n * po, cg * kp), wt[0]).reshape(n, po, o)
    else:
        y = np.matmul(cols.reshape(n, groups, po, cg * kp), wt).transpose(0, 1, 3, 2)
    y = np.ascontiguousarray(np.swapaxes(y.reshape(n, po, o), 1, 2) if groups == 1 else y)
    return _bias(y.reshape((n, o) + out), bias)


@_in_float32
def conv_transpose(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = ops.conv_params(attrs, nd)
    outpad = ops.int_tuple(attrs, "output_padding", nd, 0)
    n, cin = x.shape[:2]
    sp, kernel = x.shape[2:], w.shape[2:]
    og, cg = w.shape[1], cin // groups
    p, kp = prod(sp), prod(kernel)
    wt = w.reshape(groups, cg, og * kp).transpose(0, 2, 1)                    # (G, Og*Kp, Cg)
    cols = np.matmul(wt, x.reshape(n, groups, cg, p))                         # (N, G, Og*Kp, P)
    cols = cols.reshape((n, groups, og, kp) + sp)
    full = tuple((sp[a] - 1) * strides[a] + dil[a] * (kernel[a] - 1) + 1 + outpad[a] for a in range(nd))
    buf = np.zeros((n, groups, og) + full, dtype=x.dtype)
    for t, k in enumerate(product(*(range(kk) for kk in kernel))):
        dst = tuple(slice(k[a] * dil[a], k[a] * dil[a] + (sp[a] - 1) * strides[a] + 1, strides[a])
                    for a in range(nd))
        buf[(slice(None),) * 3 + dst] += cols[:, :, :, t]
    crop = tuple(slice(pads[a], full[a] - pads[nd + a]) for a in range(nd))
    if any(pads):
        buf = np.ascontiguousarray(buf[(slice(None),) * 3 + crop])
    return _bias(buf.reshape((n, og * groups) + buf.shape[3:]), bias)


def _pool_taps(x, fill, attrs):
    """(padded x, output spatial shape, tap slices) of a pooling op."""
    nd = x.ndim - 2
    kernel, strides, pads, dil = ops.pool_params(attrs, nd)
    ceil = attrs.get("ceil_mode", False)
    out = tuple(ops.pool_out(x.shape[2 + a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a], ceil)
                for a in range(nd))
    needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    return _pad_to(x, pads, needed, fill), out, list(_taps(kernel, strides, dil, out))


def max_pool(x, **attrs):
    xp, _, taps = _pool_taps(x, -np.inf, attrs)
    y = np.array(xp[taps[0]])
    for sl in taps[1:]:
        np.maximum(y, xp[sl], out=y)            # NaN propagates, as in np.max
    return y


def avg_pool(x, **attrs):
    nd = x.ndim - 2
    xp, _, taps = _pool_taps(x, 0, attrs)
    kernel, strides, pads, _ = ops.pool_params(attrs, nd)
    acc = np.float32 if x.dtype in _HALF else x.dtype
    y = np.array(xp[taps[0]], dtype=acc)
    for sl in taps[1:]:
        np.add(y, xp[sl], out=y)
    div = ops.avg_pool_divisors(x.shape[2:], kernel, strides, pads, attrs.get("ceil_mode", False),
                                attrs.get("count_include_pad", False))
    y /= div.astype(acc)
    return y.astype(x.dtype, copy=False)


def _argmax_taps(x, attrs):
    """(padded x, tap slices, tap index of each window's max (first on ties,
    first NaN wins, as np.argmax))."""
    xp, _, taps = _pool_taps(x, -np.inf, attrs)
    best = np.array(xp[taps[0]])
    itype = np.int8 if len(taps) <= 127 else np.intp
    arg = np.zeros(best.shape, dtype=itype)
    nan = x.dtype.kind == "f" and bool(np.isnan(x).any())
    for t, sl in enumerate(taps[1:], 1):
        v = xp[sl]
        m = v > best
        if nan:
            m |= np.isnan(v) & ~np.isnan(best)
        # taps come in increasing order, so the winning tap only grows: arg = max(arg, m * t)
        # (branch-free, unlike np.where or a masked copy on data-dependent masks)
        np.maximum(arg, m.view(np.int8) * itype(t) if itype is np.int8 else m * itype(t), out=arg)
        np.maximum(best, v, out=best)
    return xp, taps, arg


def _fold_padding(buf, x, attrs):
    """Crop padded-coordinate buf to x's spatial shape, adding what landed in
    the padding onto the nearest edge of x (a window's max found in the
    padding selects the clipped position, as the flat-index form did)."""
    nd = x.ndim - 2
    pads = ops.pool_params(attrs, nd)[2]
    for a in range(nd):
        lo, size, ax = pads[a], x.shape[2 + a], 2 + a

        def at(s, ax=ax):
            return (slice(None),) * ax + (s,)
        if lo:
            buf[at(slice(lo, lo + 1))] += buf[at(slice(0, lo))].sum(axis=ax, keepdims=True)
        if buf.shape[ax] > lo + size:
            buf[at(slice(lo + size - 1, lo + size))] += buf[at(slice(lo + size, None))].sum(axis=ax, keepdims=True)
        buf = buf[at(slice(lo, lo + size))]
        if buf.shape[ax] < size:                       # the windows never reach the end of x
            widths = [(0, 0)] * buf.ndim
            widths[ax] = (0, size - buf.shape[ax])
            buf = np.pad(buf, widths)
    return np.ascontiguousarray(buf)


def max_pool_backward(x, g, **attrs):
    xp, taps, arg = _argmax_taps(x, attrs)
    acc = np.float32 if x.dtype in _HALF else x.dtype
    buf = np.zeros(xp.shape, dtype=acc)
    finite = bool(np.isfinite(g).all())
    zero = np.zeros((), dtype=g.dtype)
    for t, sl in enumerate(taps):
        hit = arg == arg.dtype.type(t)
        # g * hit is branch-free; inf or NaN in g needs the select (inf * 0 is NaN)
        buf[sl] += g * hit if finite else np.where(hit, g, zero)
    return _fold_padding(buf, x, attrs).astype(x.dtype, copy=False)


def max_pool_select(x, t, **attrs):
    xp, taps, arg = _argmax_taps(x, attrs)
    nd = x.ndim - 2
    pads = ops.pool_params(attrs, nd)[2]
    # t at the same (clipped) positions: pad t by repeating its edges
    widths = [(0, 0), (0, 0)] + [(pads[a], max(xp.shape[2 + a] - x.shape[2 + a] - pads[a], 0))
                                 for a in range(nd)]
    tp = np.pad(t, widths, mode="edge") if any(map(any, widths)) else t
    tp = tp[(slice(None),) * 2 + tuple(slice(0, n) for n in xp.shape[2:])]
    y = np.array(tp[taps[0]])
    for i, sl in enumerate(taps[1:], 1):
        y = np.where(arg == arg.dtype.type(i), tp[sl], y)
    return y


def resize(x, **attrs):
    nd = x.ndim - 2
    size, mode, align = ops.resize_params(attrs, nd)
    y = x
    for a in range(nd):
        i0, i1, lam = ops.resize_sources(x.shape[2 + a], size[a], mode, align)
        if mode == "nearest":
            y = np.take(y, i0, axis=2 + a)
            continue
        shape = (1,) * (2 + a) + (-1,) + (1,) * (nd - 1 - a)
        lam = lam.astype(x.dtype).reshape(shape)
        y = np.take(y, i0, axis=2 + a) * (1 - lam) + np.take(y, i1, axis=2 + a) * lam
    return np.ascontiguousarray(y)


KERNELS = {
    ops.CONV: conv,
    ops.CONV_TRANSPOSE: conv_transpose,
    ops.MAX_POOL: max_pool,
    ops.MAX_POOL_BACKWARD: max_pool_backward,
    ops.MAX_POOL_SELECT: max_pool_select,
    ops.AVG_POOL: avg_pool,
    ops.RESIZE: resize,
}
