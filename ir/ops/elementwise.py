"""Elementwise ops: unary math, broadcasting binaries, comparisons, logic,
where/clip/cast. Broadcast gradients are returned at the output's shape; the
autodiff pass sums them back to each input's shape."""
from irtool.errors import IRTypeError
from irtool.ir.dtypes import check_dtype
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import broadcast_binary, float_unary, unary
from irtool.ir.ops.sampling import positive, rand


def unary_samples(make=rand):
    def samples(rng):
        return [Sample((make(rng, 3, 4),)), Sample((make(rng, 2, 1, 5),)), Sample((make(rng),))]
    return samples


def binary_samples(make=rand):
    def samples(rng):
        return [Sample((make(rng, 3, 4), make(rng, 3, 4))),
                Sample((make(rng, 2, 1, 4), make(rng, 3, 1))),   # broadcast both ways
                Sample((make(rng, 5), make(rng)))]
    return samples


NEG = register(OpDef("neg", unary, vjp=lambda b, node, g: (b.neg(g),),
                     samples=unary_samples()))

EXP = register(OpDef("exp", float_unary, vjp=lambda b, node, g: (b.mul(g, node.outputs[0]),),
                     samples=unary_samples()))

ADD = register(OpDef("add", broadcast_binary, vjp=lambda b, node, g: (g, g),
                     samples=binary_samples()))

SUB = register(OpDef("sub", broadcast_binary, vjp=lambda b, node, g: (g, b.neg(g)),
                     samples=binary_samples()))

MUL = register(OpDef(
    "mul", broadcast_binary,
    vjp=lambda b, node, g: (b.mul(g, node.inputs[1]), b.mul(g, node.inputs[0])),
    samples=binary_samples()))

DIV = register(OpDef(
    "div", broadcast_binary,
    # d(x/y) = g/y, -g*x/y^2 = -(g/y) * out
    vjp=lambda b, node, g: (b.div(g, node.inputs[1]),
                            b.neg(b.mul(b.div(g, node.inputs[1]), node.outputs[0]))),
    samples=binary_samples(positive)))


def _cast_infer(types, attrs):
    return [TensorType(check_dtype(attrs["dtype"]), types[0].shape)]


CAST = register(OpDef(
    "cast", _cast_infer,
    # gradient flows back between float types only; the autodiff pass drops
    # cotangents that reach integer values
    vjp=lambda b, node, g: (b.cast(g, dtype=node.inputs[0].dtype),),
    samples=lambda rng: [Sample((rand(rng, 3, 4),), {"dtype": "float64"}),
                         Sample((rand(rng, 3, 4, dtype="float64"),), {"dtype": "float32"}, grad=False),  # float32 finite differences are too coarse
                         Sample((rand(rng, 4) * 5,), {"dtype": "int32"}, grad=False)]))
