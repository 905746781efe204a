"""ONNX lowerings for irtool.ir.ops.conv.

Attrs are passed explicitly (ONNX's MaxPool/AveragePool default strides are
1s, torch's are the kernel). max_pool_backward / max_pool_select use
MaxPool's Indices output, which counts over the whole N*C*spatial tensor, so
they scatter into / gather from the flattened tensor directly."""
from onnx import helper

from irtool.exporters.onnx.context import onnx_dtype
from irtool.ir.ops import conv as ops


def _conv_attrs(node):
    nd = node.inputs[0].rank - 2
    strides, pads, dil, groups = ops.conv_params(node.attrs, nd)
    return dict(kernel_shape=list(node.inputs[1].shape[2:]), strides=list(strides), pads=list(pads),
                dilations=list(dil), group=groups)


def _conv(ctx, node):
    ctx.emit("Conv", node.inputs, node.outputs, **_conv_attrs(node))


def _conv_transpose(ctx, node):
    """output_padding first eats into the end pads (same result); what is
    left at or past the stride (torch allows it below the dilation,
    onnxruntime does not) becomes a zero Pad, with the bias added after."""
    nd = node.inputs[0].rank - 2
    attrs = _conv_attrs(node)
    pads, strides = attrs["pads"], attrs["strides"]
    outpad = list(ops.int_tuple(node.attrs, "output_padding", nd, 0))
    for a in range(nd):
        cut = min(outpad[a], pads[nd + a])
        outpad[a] -= cut
        pads[nd + a] -= cut
    if all(o < s for o, s in zip(outpad, strides)):
        ctx.emit("ConvTranspose", node.inputs, node.outputs, **attrs, output_padding=outpad)
        return
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    t = ctx.emit("ConvTranspose", [x, w], **attrs)
    widths = ctx.ints([0] * (2 + nd) + [0, 0] + outpad)
    if len(node.inputs) == 2:
        ctx.emit("Pad", [t, widths], node.outputs)
        return
    bias = ctx.emit("Reshape", [node.inputs[2], ctx.ints([-1] + [1] * nd)])
    ctx.emit("Add", [ctx.emit("Pad", [t, widths]), bias], [y])


def _pool_attrs(node, dilations=True):
    nd = node.inputs[0].rank - 2
    kernel, strides, pads, dil = ops.pool_params(node.attrs, nd)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                 ceil_mode=int(bool(node.attrs.get("ceil_mode", False))))
    if dilations:
        attrs["dilations"] = list(dil)
    return attrs


def _pool_shape(node):
    """The pool output shape (max_pool_backward's is its g input's)."""
    return (node.inputs[1] if node.op is ops.MAX_POOL_BACKWARD else node.outputs[0]).shape


def _needs_slice(node):
    """onnxruntime applies torch's ceil_mode rule (the last window starts
    inside the input or the left padding); ONNX shape inference does not
    and then infers one more window, so such pools are sliced to the IR's
    size, which both agree on."""
    x = node.inputs[0]
    nd = x.rank - 2
    kernel, strides, pads, dil = ops.pool_params(node.attrs, nd)
    naive = [-(-(x.shape[2 + a] + pads[a] + pads[nd + a] - dil[a] * (kernel[a] - 1) - 1) // strides[a]) + 1
             for a in range(nd)]
    return node.attrs.get("ceil_mode", False) and tuple(naive) != _pool_shape(node)[2:]


def _floor_mode_pads(node, attrs):
    """End pads that give torch's ceil_mode output size in floor mode, or None.
    Choosing the end padding so floor mode yields exactly torch's windows
    reproduces ceil_mode; for max pooling (and averages that do not count
    padding) the padding itself never changes a value.
    Keeping ceil_mode off avoids the size onnxruntime and ONNX shape
    inference disagree on (its memory planner then reuses buffers wrongly)."""
    if node.op is ops.AVG_POOL and node.attrs.get("count_include_pad", False):
        return None
    x = node.inputs[0]
    nd = x.rank - 2
    kernel, strides, pads, dil = ops.pool_params(node.attrs, nd)
    out = _pool_shape(node)[2:]
    new = list(pads)
    for a in range(nd):
        end = (out[a] - 1) * strides[a] + dil[a] * (kernel[a] - 1) + 1 - x.shape[2 + a] - pads[a]
        if end < 0 or end >= kernel[a]:
            return None                  # onnxruntime wants every pad below the kernel size
        new[nd + a] = end
    return new


def _pool(ctx, node, op_type, outputs, **attrs):
    """Emit a pool node, slicing each output to the IR's size when needed."""
    if not _needs_slice(node):
        return ctx.emit(op_type, [node.inputs[0]], outputs, **attrs)
    pads = _floor_mode_pads(node, attrs)
    if pads is not None:
        return ctx.emit(op_type, [node.inputs[0]], outputs, **dict(attrs, pads=pads, ceil_mode=0))
    outs = ctx.emit(op_type, [node.inputs[0]], len(outputs) if isinstance(outputs, list) else outputs, **attrs)
    outs = [outs] if isinstance(outs, str) else outs
    sizes = list(_pool_shape(node)[2:])
    nd = len(sizes)
    args = [ctx.ints([0] * nd), ctx.ints(sizes), ctx.ints(list(range(2, 2 + nd)))]
    dests = outputs if isinstance(outputs, list) else [None] * len(outs)
    res = [ctx.emit("Slice", [o] + args, None if d is None else [d]) for o, d in zip(outs, dests)]
    return res[0] if len(res) == 1 else res


def _max_pool(ctx, node):
    _pool(ctx, node, "MaxPool", list(node.outputs), **_pool_attrs(node))


def _indices(ctx, node):
    _, idx = _pool(ctx, node, "MaxPool", 2, **_pool_attrs(node))
    return idx


def _max_pool_backward(ctx, node):
    x, g = node.inputs
    shape = ctx.emit("Shape", [x])
    flat = ctx.ints([-1])
    zeros = ctx.emit("ConstantOfShape", [shape], value=helper.make_tensor("value", onnx_dtype(x.dtype), [1], [0]))
    zeros = ctx.emit("Reshape", [zeros, flat])
    idx = ctx.emit("Reshape", [_indices(ctx, node), flat])
    summed = ctx.emit("ScatterElements", [zeros, idx, ctx.emit("Reshape", [g, flat])], axis=0, reduction="add")
    ctx.emit("Reshape", [summed, shape], node.outputs)


def _max_pool_select(ctx, node):
    idx = _indices(ctx, node)
    ctx.emit("Gather", [ctx.emit("Reshape", [node.inputs[1], ctx.ints([-1])]), idx], node.outputs, axis=0)


def _avg_pool(ctx, node):
    _pool(ctx, node, "AveragePool", list(node.outputs), **_pool_attrs(node, dilations=False),
          count_include_pad=int(bool(node.attrs.get("count_include_pad", False))))


def _resize(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    nd = x.rank - 2
    size, mode, align = ops.resize_params(node.attrs, nd)
    if mode == "nearest":
        attrs = dict(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif align:
        attrs = dict(coordinate_transformation_mode="align_corners")
    elif any(n == 1 for n in size):
        # pytorch_half_pixel maps a size-1 axis to source 0; torch (and half_pixel) to the centre.
        # Sources below 0 only arise on upsampled axes, where linear mode clamps them anyway.
        attrs = dict(coordinate_transformation_mode="half_pixel")
    else:
        attrs = dict(coordinate_transformation_mode="pytorch_half_pixel")
    ctx.emit("Resize", [x, "", "", ctx.shape_tensor(y.shape)], node.outputs, mode=mode, **attrs)


LOWERINGS = {
    ops.CONV: _conv,
    ops.CONV_TRANSPOSE: _conv_transpose,
    ops.MAX_POOL: _max_pool,
    ops.MAX_POOL_BACKWARD: _max_pool_backward,
    ops.MAX_POOL_SELECT: _max_pool_select,
    ops.AVG_POOL: _avg_pool,
    ops.RESIZE: _resize,
}
