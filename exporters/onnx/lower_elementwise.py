"""ONNX lowerings for irtool.ir.ops.elementwise."""
from irtool.exporters.onnx.context import onnx_dtype
from irtool.ir.ops import elementwise as ops


def simple(op_type):
    """Lowering for ops that map 1:1 onto an ONNX op with no attributes."""
    return lambda ctx, node: ctx.emit(op_type, node.inputs, node.outputs)


LOWERINGS = {
    ops.NEG: simple("Neg"),
    ops.EXP: simple("Exp"),
    ops.ADD: simple("Add"),
    ops.SUB: simple("Sub"),
    ops.MUL: simple("Mul"),
    ops.DIV: simple("Div"),
    ops.CAST: lambda ctx, node: ctx.emit("Cast", node.inputs, node.outputs,
                                         to=onnx_dtype(node.attrs["dtype"])),
}
