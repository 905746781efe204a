"""numpy kernels for irtool.ir.ops.conv.

conv is im2col (sliding_window_view) + one batched matmul over groups;
conv_transpose is the matmul the other way + col2im, one strided add per
kernel tap. Pools take windows of the padded input the same way."""
from itertools import product

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from irtool.ir.ops import conv as ops


def _windows(xp, kernel, strides, dilations, out):
    """(N, C, *out, *kernel) view of padded xp (sizes already matching out)."""
    nd = len(kernel)
    ext = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nd)))
    idx = ((slice(None),) * 2 + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))
           + tuple(slice(None, None, d) for d in dilations))
    return win[idx]


def _pad_to(x, pads, needed, fill):
    """Pad spatial axes by pads[a] in front and up to needed[a] total length
    (cropping the end where the windows do not reach it)."""
    nd = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [(pads[a], max(needed[a] - x.shape[2 + a] - pads[a], 0)) for a in range(nd)]
    xp = np.pad(x, widths, constant_values=fill) if any(map(any, widths)) else x
    return xp[(slice(None),) * 2 + tuple(slice(0, n) for n in needed)]


def _bias(y, bias):
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


def conv(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = ops.conv_params(attrs, nd)
    kernel = w.shape[2:]
    out = tuple(ops.conv_out(x.shape[2 + a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a])
                for a in range(nd))
    needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    win = _windows(_pad_to(x, pads, needed, 0), kernel, strides, dil, out)
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og, kp, po = o // groups, int(np.prod(kernel)), int(np.prod(out))
    cols = win.reshape((n, groups, cg, po, kp)).transpose(1, 0, 3, 2, 4).reshape(groups, n * po, cg * kp)
    wm = w.reshape(groups, og, cg * kp).transpose(0, 2, 1)
    y = np.matmul(cols, wm).reshape(groups, n, po, og).transpose(1, 0, 3, 2).reshape((n, o) + out)
    return _bias(np.ascontiguousarray(y), bias)


def conv_transpose(x, w, bias=None, **attrs):
    nd = x.ndim - 2
    strides, pads, dil, groups = ops.conv_params(attrs, nd)
    outpad = ops.int_tuple(attrs, "output_padding", nd, 0)
    n, cin = x.shape[:2]
    sp, kernel = x.shape[2:], w.shape[2:]
    og, cg = w.shape[1], cin // groups
    p, kp = int(np.prod(sp)), int(np.prod(kernel))
    xt = x.reshape(n, groups, cg, p).transpose(1, 0, 3, 2)                  # (G, N, P, Cg)
    cols = np.matmul(xt, w.reshape(groups, 1, cg, og * kp))                   # (G, N, P, Og*Kp)
    cols = cols.reshape((groups, n) + sp + (og,) + kernel)
    cols = cols.transpose((1, 0, 2 + nd) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(2, 2 + nd)))
    full = tuple((sp[a] - 1) * strides[a] + dil[a] * (kernel[a] - 1) + 1 + outpad[a] for a in range(nd))
    buf = np.zeros((n, groups, og) + full, dtype=x.dtype)
    for k in product(*(range(kk) for kk in kernel)):
        dst = tuple(slice(k[a] * dil[a], k[a] * dil[a] + (sp[a] - 1) * strides[a] + 1, strides[a])
                    for a in range(nd))
        buf[(slice(None),) * 3 + dst] += cols[(slice(None),) * 3 + k]
    buf = buf[(slice(None),) * 3 + tuple(slice(pads[a], full[a] - pads[nd + a]) for a in range(nd))]
    y = np.ascontiguousarray(buf.reshape((n, og * groups) + buf.shape[3:]))
    return _bias(y, bias)


def _pool_windows(x, fill, attrs):
    nd = x.ndim - 2
    kernel, strides, pads, dil = ops.pool_params(attrs, nd)
    ceil = attrs.get("ceil_mode", False)
    out = tuple(ops.pool_out(x.shape[2 + a], kernel[a], strides[a], pads[a], pads[nd + a], dil[a], ceil)
                for a in range(nd))
    needed = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    return _windows(_pad_to(x, pads, needed, fill), kernel, strides, dil, out), out


def max_pool(x, **attrs):
    win, _ = _pool_windows(x, -np.inf, attrs)
    nd = x.ndim - 2
    return np.ascontiguousarray(win.max(axis=tuple(range(-nd, 0))))


def avg_pool(x, **attrs):
    nd = x.ndim - 2
    win, _ = _pool_windows(x, 0, attrs)
    kernel, strides, pads, _ = ops.pool_params(attrs, nd)
    div = ops.avg_pool_divisors(x.shape[2:], kernel, strides, pads, attrs.get("ceil_mode", False),
                                attrs.get("count_include_pad", False))
    return np.ascontiguousarray(win.sum(axis=tuple(range(-nd, 0))) / div.astype(x.dtype))


def _argmax(x, attrs):
    """Flat index within each (n, c) plane of every window's max (first on ties)."""
    nd = x.ndim - 2
    win, out = _pool_windows(x, -np.inf, attrs)
    kernel, strides, pads, dil = ops.pool_params(attrs, nd)
    am = win.reshape(x.shape[:2] + out + (-1,)).argmax(axis=-1)
    taps = np.unravel_index(am, kernel)
    grid = np.meshgrid(*(np.arange(o) for o in out), indexing="ij")
    coords = [np.clip(grid[a] * strides[a] + taps[a] * dil[a] - pads[a], 0, x.shape[2 + a] - 1)
              for a in range(nd)]
    return np.ravel_multi_index(coords, x.shape[2:])


def max_pool_backward(x, g, **attrs):
    idx = _argmax(x, attrs)
    planes, size = x.shape[0] * x.shape[1], int(np.prod(x.shape[2:]))
    flat = (np.arange(planes)[:, None] * size + idx.reshape(planes, -1)).ravel()
    dx = np.bincount(flat, weights=g.reshape(-1).astype(np.float64), minlength=planes * size)
    return dx.astype(x.dtype).reshape(x.shape)


def max_pool_select(x, t, **attrs):
    idx = _argmax(x, attrs)
    planes = x.shape[0] * x.shape[1]
    y = np.take_along_axis(t.reshape(planes, -1), idx.reshape(planes, -1), axis=1)
    return y.reshape(idx.shape)


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
