"""ONNX lowerings for irtool.ir.ops.elementwise.

Everything lowers to default-domain ops that exist unchanged in opsets 17..21.
Where ONNX has no direct op (log1p, rsqrt, ne, float mod) the lowering
spells it out."""
import numpy as np
from onnx import TensorProto

from irtool.exporters.onnx.context import onnx_dtype
from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import elementwise as ops


def simple(op_type):
    """Lowering for ops that map 1:1 onto an ONNX op with no attributes."""
    return lambda ctx, node: ctx.emit(op_type, node.inputs, node.outputs)


def _scalar(ctx, value, dtype):
    return ctx.const(np.asarray(value).astype(np_dtype(dtype)))


def _log1p(ctx, node):
    x = node.inputs[0]
    ctx.emit("Log", [ctx.emit("Add", [x, _scalar(ctx, 1, x.dtype)])], node.outputs)


def _rsqrt(ctx, node):
    ctx.emit("Reciprocal", [ctx.emit("Sqrt", node.inputs)], node.outputs)


def _ne(ctx, node):
    ctx.emit("Not", [ctx.emit("Equal", node.inputs)], node.outputs)


def _ordered(op_type):
    """Less/Greater...: ONNX has no bool overload, so compare bools as int32."""
    def lower(ctx, node):
        ins = node.inputs
        if ins[0].dtype == "bool":
            ins = [ctx.emit("Cast", [v], to=TensorProto.INT32) for v in ins]
        ctx.emit(op_type, ins, node.outputs)
    return lower


def _mod(ctx, node):
    x, y = node.inputs
    if x.dtype not in ("float16", "bfloat16", "float32", "float64"):
        ctx.emit("Mod", [x, y], node.outputs, fmod=0)   # integer Mod: sign of the divisor
        return
    # floats: r = fmod(x, y) (exact), then move r to the divisor's sign
    zero = _scalar(ctx, 0, x.dtype)
    r = ctx.emit("Mod", [x, y], fmod=1)
    signs_differ = ctx.emit("Xor", [ctx.emit("Less", [r, zero]), ctx.emit("Less", [y, zero])])
    fix = ctx.emit("And", [signs_differ, ctx.emit("Not", [ctx.emit("Equal", [r, zero])])])
    ctx.emit("Where", [fix, ctx.emit("Add", [r, y]), r], node.outputs)


def _clip(ctx, node):
    x = node.inputs[0]
    bounds = [_scalar(ctx, node.attrs[k], x.dtype) if node.attrs.get(k) is not None else ""
              for k in ("min", "max")]
    while bounds and bounds[-1] == "":
        bounds.pop()
    ctx.emit("Clip", [x, *bounds], node.outputs)


LOWERINGS = {
    ops.NEG: simple("Neg"),
    ops.ABS: simple("Abs"),
    ops.SIGN: simple("Sign"),
    ops.EXP: simple("Exp"),
    ops.LOG: simple("Log"),
    ops.LOG1P: _log1p,
    ops.SQRT: simple("Sqrt"),
    ops.RSQRT: _rsqrt,
    ops.RECIPROCAL: simple("Reciprocal"),
    ops.SIN: simple("Sin"),
    ops.COS: simple("Cos"),
    ops.TANH: simple("Tanh"),
    ops.SIGMOID: simple("Sigmoid"),
    ops.ERF: simple("Erf"),
    ops.FLOOR: simple("Floor"),
    ops.CEIL: simple("Ceil"),
    ops.ROUND: simple("Round"),
    ops.ISNAN: simple("IsNaN"),
    ops.LOGICAL_NOT: simple("Not"),
    ops.ADD: simple("Add"),
    ops.SUB: simple("Sub"),
    ops.MUL: simple("Mul"),
    ops.DIV: simple("Div"),
    ops.POW: simple("Pow"),
    ops.MAXIMUM: simple("Max"),
    ops.MINIMUM: simple("Min"),
    ops.MOD: _mod,
    ops.EQ: simple("Equal"),
    ops.NE: _ne,
    ops.LT: _ordered("Less"),
    ops.LE: _ordered("LessOrEqual"),
    ops.GT: _ordered("Greater"),
    ops.GE: _ordered("GreaterOrEqual"),
    ops.LOGICAL_AND: simple("And"),
    ops.LOGICAL_OR: simple("Or"),
    ops.WHERE: simple("Where"),
    ops.CLIP: _clip,
    ops.STOP_GRADIENT: simple("Identity"),  # no gradients in ONNX; optimize(drop_stop_gradient=True) drops it
    ops.CAST: lambda ctx, node: ctx.emit("Cast", node.inputs, node.outputs,
                                         to=onnx_dtype(node.attrs["dtype"])),
}
