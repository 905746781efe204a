"""Shape/dtype rules shared by many ops. Each takes (input types, attrs) and
returns the list of output TensorTypes; errors are IRTypeError."""
from irtool.errors import IRTypeError
from irtool.ir.dtypes import FLOATS, is_float
from irtool.ir.graph import TensorType
from irtool.ir.shapes import broadcast, norm_axes


def same_dtype(types, what="inputs"):
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise IRTypeError(f"{what} must share one dtype, got {', '.join(sorted(dtypes))}")
    return types[0].dtype


def arity(types, n):
    """Check the input count (a tampered file or a wrong call must not build)."""
    if len(types) != n:
        raise IRTypeError(f"takes {n} input{'s' if n != 1 else ''}, got {len(types)}")


def unary(types, attrs):
    """Same type as the single input."""
    arity(types, 1)
    return [types[0]]


def float_unary(types, attrs):
    arity(types, 1)
    if not is_float(types[0].dtype):
        raise IRTypeError(f"needs a float input ({', '.join(FLOATS)}), got {types[0].dtype}")
    return [types[0]]


def broadcast_binary(types, attrs):
    """numpy-style broadcasting of two inputs that share one dtype."""
    arity(types, 2)
    return [TensorType(same_dtype(types), broadcast(*(t.shape for t in types)))]


def compare_binary(types, attrs):
    arity(types, 2)
    same_dtype(types)
    return [TensorType("bool", broadcast(*(t.shape for t in types)))]


def reduce_shape(shape, attrs):
    axes = norm_axes(attrs.get("axes"), len(shape))
    if attrs.get("keepdims", False):
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduction(types, attrs):
    return [TensorType(types[0].dtype, reduce_shape(types[0].shape, attrs))]
