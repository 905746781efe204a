"""ONNX lowerings for irtool.ir.ops.composite.

Only ops with a fused standard ONNX op of the same semantics are lowered
here; the others (softplus: ONNX has no torch threshold; group_norm: the
opset-18 op scales per group before opset 21; sdpa, losses) export through
their decomposition."""
import numpy as np

from irtool.exporters.onnx.context import since
from irtool.exporters.onnx.lower_elementwise import simple
from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import composite as ops
from irtool.ir.shapes import norm_axis


def _unary(op_type, **fixed):
    def lower(ctx, node):
        ctx.emit(op_type, node.inputs, node.outputs, **fixed)
    return lower


@since(20)
def _gelu(ctx, node):
    ctx.emit("Gelu", node.inputs, node.outputs, approximate=node.attrs.get("approximate", "none"))


def _silu(ctx, node):
    x = node.inputs[0]
    ctx.emit("Mul", [x, ctx.emit("Sigmoid", [x])], node.outputs)


def _axis_op(op_type):
    def lower(ctx, node):
        ctx.emit(op_type, node.inputs, node.outputs, axis=int(node.attrs.get("axis", -1)))
    return lower


def _logsumexp(ctx, node):
    x = node.inputs[0]
    axes = node.attrs.get("axes")
    axes = None if axes is None else [norm_axis(a, x.rank) for a in axes]
    ctx.reduce("ReduceLogSumExp", x, node.outputs[0], axes, node.attrs.get("keepdims", False))


def _layer_norm(ctx, node):
    x = node.inputs[0]
    axis = norm_axis(node.attrs.get("axis", -1), x.rank)
    ins = list(node.inputs)
    if len(ins) == 1:                      # ONNX requires Scale
        shape = x.shape[axis:]
        if all(isinstance(d, int) for d in shape):
            ins.append(ctx.const(np.ones(shape, np_dtype(x.dtype))))
        else:
            ins.append(ctx.emit("Expand", [ctx.const(np.ones((), np_dtype(x.dtype))),
                                           ctx.shape_tensor(shape)]))
    ctx.emit("LayerNormalization", ins, node.outputs, axis=axis,
             epsilon=float(node.attrs.get("eps", 1e-5)))


def _batch_norm(ctx, node):
    ctx.emit("BatchNormalization", node.inputs, node.outputs, epsilon=float(node.attrs.get("eps", 1e-5)))


def _linear(ctx, node):
    x, w = node.inputs[:2]
    if x.rank == 2:
        ctx.emit("Gemm", node.inputs, node.outputs, transB=1)
        return
    wt = ctx.emit("Transpose", [w], perm=[1, 0])
    if len(node.inputs) == 2:
        ctx.emit("MatMul", [x, wt], node.outputs)
    else:
        ctx.emit("Add", [ctx.emit("MatMul", [x, wt]), node.inputs[2]], node.outputs)


LOWERINGS = {
    ops.RELU: simple("Relu"),
    ops.LEAKY_RELU: lambda ctx, node: ctx.emit("LeakyRelu", node.inputs, node.outputs,
                                               alpha=float(node.attrs.get("alpha", 0.01))),
    ops.GELU: _gelu,
    ops.SILU: _silu,
    ops.ELU: lambda ctx, node: ctx.emit("Elu", node.inputs, node.outputs,
                                        alpha=float(node.attrs.get("alpha", 1.0))),
    ops.HARDSIGMOID: _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    ops.HARDSWISH: simple("HardSwish"),
    ops.SOFTMAX: _axis_op("Softmax"),
    ops.LOG_SOFTMAX: _axis_op("LogSoftmax"),
    ops.LOGSUMEXP: _logsumexp,
    ops.LAYER_NORM: _layer_norm,
    ops.BATCH_NORM: _batch_norm,
    ops.LINEAR: _linear,
    ops.EMBEDDING: lambda ctx, node: ctx.emit("Gather", node.inputs, node.outputs, axis=0),
}
