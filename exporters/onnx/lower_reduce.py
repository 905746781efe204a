"""ONNX lowerings for irtool.ir.ops.reduce."""
from irtool.exporters.onnx.lower_elementwise import simple
from irtool.ir.ops import reduce as ops


def reduce(op_type):
    return lambda ctx, node: ctx.reduce(op_type, node.inputs[0], node.outputs[0],
                                        node.attrs.get("axes"), node.attrs.get("keepdims", False))


LOWERINGS = {
    ops.REDUCE_SUM: reduce("ReduceSum"),
    ops.MATMUL: simple("MatMul"),
}
