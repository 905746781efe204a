"""torch oracles for irtool.ir.ops.conv.

ONNX-style pads (begins..., ends...) become F.pad widths (negative widths
crop, which is how asymmetric conv_transpose pads are applied). Pools need
symmetric pads (torch's own padding, so ceil_mode follows torch's rule)."""
import torch
import torch.nn.functional as F


def _nd(x):
    return x.ndim - 2


def _widths(begins, ends):
    """F.pad widths: last axis first."""
    out = []
    for b, e in reversed(list(zip(begins, ends))):
        out += [b, e]
    return out


def conv(x, w, bias=None, strides=None, pads=None, dilations=None, groups=1):
    nd = _nd(x)
    if pads is not None:
        x = F.pad(x, _widths(pads[:nd], pads[nd:]))
    return getattr(F, f"conv{nd}d")(x, w, bias, stride=strides or 1, dilation=dilations or 1, groups=groups)


def conv_transpose(x, w, bias=None, strides=None, pads=None, dilations=None, groups=1, output_padding=None):
    nd = _nd(x)
    y = getattr(F, f"conv_transpose{nd}d")(x, w, None, stride=strides or 1, groups=groups,
                                           dilation=dilations or 1)
    pads = pads or (0,) * (2 * nd)
    outpad = output_padding or (0,) * nd
    y = F.pad(y, _widths([-p for p in pads[:nd]], [o - p for o, p in zip(outpad, pads[nd:])]))
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * nd)
    return y


def _pool_args(x, kernel, strides, pads):
    nd = _nd(x)
    pads = pads or (0,) * (2 * nd)
    if tuple(pads[:nd]) != tuple(pads[nd:]):
        raise ValueError(f"torch pooling needs symmetric pads, got {pads}")
    return nd, dict(kernel_size=kernel, stride=strides or kernel, padding=tuple(pads[:nd]))


def max_pool(x, kernel, strides=None, pads=None, dilations=None, ceil_mode=False, return_indices=False):
    nd, args = _pool_args(x, kernel, strides, pads)
    return getattr(F, f"max_pool{nd}d")(x, **args, dilation=dilations or 1, ceil_mode=ceil_mode,
                                        return_indices=return_indices)


def max_pool_backward(x, g, **attrs):
    """torch's max_pool gradient (differentiable again w.r.t. g)."""
    with torch.enable_grad():
        xx = x if x.requires_grad else x.detach().requires_grad_(True)
        y = max_pool(xx, **attrs)
        return torch.autograd.grad(y, xx, g, create_graph=True)[0]


def max_pool_select(x, t, **attrs):
    _, idx = max_pool(x.detach(), **attrs, return_indices=True)
    return t.flatten(2).gather(2, idx.flatten(2)).reshape(idx.shape)


def avg_pool(x, kernel, strides=None, pads=None, ceil_mode=False, count_include_pad=False):
    nd, args = _pool_args(x, kernel, strides, pads)
    return getattr(F, f"avg_pool{nd}d")(x, **args, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize(x, size, mode="nearest", align_corners=False):
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=_LINEAR[_nd(x)], align_corners=align_corners)


ORACLES = {
    "conv": conv,
    "conv_transpose": conv_transpose,
    "max_pool": max_pool,
    "max_pool_backward": max_pool_backward,
    "max_pool_select": max_pool_select,
    "avg_pool": avg_pool,
    "resize": resize,
}
