"""ONNX lowerings for irtool.ir.ops.shape_ops."""
from irtool.exporters.onnx.lower_elementwise import simple
from irtool.ir.ops import shape_ops as ops


def _constant(ctx, node):
    ctx.emit("Identity", [ctx.const(node.attrs["value"])], node.outputs)


def _reshape(ctx, node):
    # allowzero=0 (default): a 0 in the target would mean "copy"; IR shapes
    # never hold 0 for copy, and empty tensors reshape through static shapes
    ctx.emit("Reshape", [node.inputs[0], ctx.shape_tensor(node.outputs[0].shape)], node.outputs)


def _axes_input(ctx, node, op_type):
    axes = node.attrs.get("axes")
    ins = [node.inputs[0]] + ([ctx.ints(axes)] if axes is not None else [])
    ctx.emit(op_type, ins, node.outputs)


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
}
