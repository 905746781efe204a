"""ONNX lowerings for irtool.ir.ops.reduce. A reduction over no axes (axes=()
or a scalar input) is the identity: ONNX would read empty axes as "all"."""
import numpy as np

from irtool.exporters.onnx.lower_elementwise import simple
from irtool.ir.ops import reduce as ops
from irtool.ir.shapes import norm_axes, norm_axis


def reduce(op_type):
    def lower(ctx, node):
        x = node.inputs[0]
        axes = node.attrs.get("axes")
        if not norm_axes(axes, x.rank):
            return ctx.emit("Identity", [x], node.outputs)
        return ctx.reduce(op_type, x, node.outputs[0], axes, node.attrs.get("keepdims", False))
    return lower


def arg(op_type):
    return lambda ctx, node: ctx.emit(op_type, node.inputs, node.outputs,
                                      axis=norm_axis(node.attrs["axis"], node.inputs[0].rank),
                                      keepdims=int(bool(node.attrs.get("keepdims", False))))


def _cumsum(ctx, node):
    a = node.attrs
    ctx.emit("CumSum", [node.inputs[0], ctx.const(np.int64(a["axis"]))], node.outputs,
             exclusive=int(bool(a.get("exclusive", False))), reverse=int(bool(a.get("reverse", False))))


def _topk(ctx, node):
    a = node.attrs
    ctx.emit("TopK", [node.inputs[0], ctx.ints([a["k"]])], node.outputs,
             axis=norm_axis(a.get("axis", -1), node.inputs[0].rank),
             largest=int(bool(a.get("largest", True))), sorted=1)


LOWERINGS = {
    ops.REDUCE_SUM: reduce("ReduceSum"),
    ops.REDUCE_MEAN: reduce("ReduceMean"),
    ops.REDUCE_MAX: reduce("ReduceMax"),
    ops.REDUCE_MIN: reduce("ReduceMin"),
    ops.REDUCE_PROD: reduce("ReduceProd"),
    ops.ARGMAX: arg("ArgMax"),
    ops.ARGMIN: arg("ArgMin"),
    ops.CUMSUM: _cumsum,
    ops.TOPK: _topk,
    ops.MATMUL: simple("MatMul"),
}
