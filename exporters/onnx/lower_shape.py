"""ONNX lowerings for irtool.ir.ops.shape_ops."""
import numpy as np

from irtool.exporters.onnx.context import onnx_dtype
from irtool.exporters.onnx.lower_elementwise import simple
from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import shape_ops as ops
from irtool.ir.shapes import norm_axes


def _constant(ctx, node):
    out = node.outputs[0].name
    if ctx.const(node.attrs["value"], out=out) != out:      # same content emitted before
        ctx.emit("Identity", [ctx.const(node.attrs["value"])], node.outputs)


def _reshape(ctx, node):
    # allowzero=0 (default): a 0 in the target would mean "copy"; IR shapes
    # never hold 0 for copy, and empty tensors reshape through static shapes
    ctx.emit("Reshape", [node.inputs[0], ctx.shape_tensor(node.outputs[0].shape)], node.outputs)


def _axes_input(ctx, node, op_type):
    axes = node.attrs.get("axes")
    ins = [node.inputs[0]] + ([ctx.ints(axes)] if axes is not None else [])
    ctx.emit(op_type, ins, node.outputs)


def _split(ctx, node):
    # sizes always go in as the `split` input: valid from opset 13 on, and
    # opset 18's num_outputs is then not needed
    ctx.emit("Split", [node.inputs[0], ctx.shape_tensor(node.attrs["sizes"])], node.outputs,
             axis=node.attrs["axis"])


def _slice(ctx, node):
    a = node.attrs
    axes = a.get("axes")
    axes = range(len(a["starts"])) if axes is None else axes
    steps = a.get("steps") or (1,) * len(a["starts"])
    ctx.emit("Slice", [node.inputs[0], ctx.shape_tensor(a["starts"]), ctx.shape_tensor(a["ends"]),
                       ctx.ints(list(axes)),
                       ctx.ints(steps)], node.outputs)


def _pad(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    r = x.rank
    pads = list(node.attrs["pads"])
    mode = node.attrs.get("mode", "constant")
    if mode != "constant" and any(p < 0 for p in pads):
        # crop first, then reflect/edge pad the cropped tensor (the IR's order)
        begins, ends = pads[:r], pads[r:]
        axes = [i for i in range(r) if begins[i] < 0 or ends[i] < 0]
        x = ctx.emit("Slice", [x, ctx.ints([-min(begins[i], 0) for i in axes]),
                               ctx.ints([min(ends[i], 0) if ends[i] < 0 else ops.INT64_MAX for i in axes]),
                               ctx.ints(axes)])
        pads = [max(p, 0) for p in pads]
        if not any(pads):
            return ctx.emit("Identity", [x], [out])
    value = ""
    if mode == "constant":
        value = ctx.const(np.asarray(node.attrs.get("value", 0.0)).astype(np_dtype(out.dtype)))
    return ctx.emit("Pad", [x, ctx.ints(pads), value], [out], mode=mode)


def _flip(ctx, node):
    x = node.inputs[0]
    axes = norm_axes(node.attrs.get("axes"), x.rank)
    if not axes:
        return ctx.emit("Identity", [x], node.outputs)
    n = len(axes)
    return ctx.emit("Slice", [x, ctx.ints([-1] * n), ctx.ints([ops.INT64_MIN] * n), ctx.ints(axes),
                              ctx.ints([-1] * n)], node.outputs)


_RANGE_TYPES = ("float32", "float64", "int16", "int32", "int64")


def _range_arg(ctx, v, dtype, name):
    """A scalar Range input: a constant, or a symbolic dim read at run time."""
    if isinstance(v, str):
        t = ctx.emit("Squeeze", [ctx.dim_tensor(v), ctx.ints([0])])
        return t if dtype == "int64" else ctx.emit("Cast", [t], to=onnx_dtype(dtype))
    return ctx.const(np.asarray(v, dtype=np_dtype(dtype)), name=name)


def _arange(ctx, node):
    a = node.attrs
    out = node.outputs[0]
    dtype = out.dtype if out.dtype in _RANGE_TYPES else ("float64" if "float" in out.dtype else "int64")
    args = [_range_arg(ctx, a.get(k, 1), dtype, k) for k in ("start", "stop", "step")]
    if dtype == out.dtype:
        return ctx.emit("Range", args, node.outputs)
    return ctx.emit("Cast", [ctx.emit("Range", args)], node.outputs, to=onnx_dtype(out.dtype))


def _full(ctx, node):
    out = node.outputs[0]
    value = ctx.const(np.asarray(node.attrs["value"]).astype(np_dtype(out.dtype)))
    return ctx.emit("Expand", [value, ctx.shape_tensor(node.attrs["shape"])], node.outputs)


def _axis(op_type):
    return lambda ctx, node: ctx.emit(op_type, node.inputs, node.outputs, axis=node.attrs.get("axis", 0))


LOWERINGS = {
    ops.CONSTANT: _constant,
    ops.RESHAPE: _reshape,
    ops.EXPAND: lambda ctx, node: ctx.emit("Expand", [node.inputs[0], ctx.shape_tensor(node.attrs["shape"])],
                                           node.outputs),
    ops.TRANSPOSE: lambda ctx, node: ctx.emit("Transpose", node.inputs, node.outputs,
                                              perm=list(node.attrs.get("perm") or
                                                        reversed(range(node.inputs[0].rank)))),
    ops.UNSQUEEZE: lambda ctx, node: _axes_input(ctx, node, "Unsqueeze"),
    ops.SQUEEZE: lambda ctx, node: _axes_input(ctx, node, "Squeeze"),
    ops.CONCAT: _axis("Concat"),
    ops.SPLIT: _split,
    ops.SLICE: _slice,
    ops.PAD: _pad,
    ops.GATHER: _axis("Gather"),
    ops.GATHER_ELEMENTS: _axis("GatherElements"),
    ops.SCATTER_ADD: lambda ctx, node: ctx.emit("ScatterElements", node.inputs, node.outputs,
                                                axis=node.attrs.get("axis", 0), reduction="add"),
    ops.TILE: lambda ctx, node: ctx.emit("Tile", [node.inputs[0], ctx.ints(node.attrs["repeats"])],
                                         node.outputs),
    ops.FLIP: _flip,
    ops.SHAPE_OF: simple("Shape"),
    ops.ARANGE: _arange,
    ops.FULL: _full,
}
