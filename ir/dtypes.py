"""The IR's element types and their numpy counterparts.

A dtype in the IR is always one of the strings in DTYPES; `np_dtype` is the
only place that maps them to numpy (bfloat16 comes from ml_dtypes, which onnx
already depends on).
"""
import ml_dtypes
import numpy as np

from irtool.errors import IRTypeError

FLOATS = ("float16", "bfloat16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8")
DTYPES = FLOATS + INTS + ("bool",)

_NP = {name: np.dtype(name) for name in DTYPES if name != "bfloat16"}
_NP["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
_FROM_NP = {v: k for k, v in _NP.items()}


def check_dtype(dtype):
    """Return dtype as a canonical IR dtype string, or raise IRTypeError."""
    if isinstance(dtype, str) and dtype in _NP:
        return dtype
    try:
        return _FROM_NP[np.dtype(dtype)]
    except (TypeError, KeyError):
        raise IRTypeError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}") from None


def np_dtype(dtype):
    return _NP[check_dtype(dtype)]


def is_float(dtype):
    return dtype in FLOATS


def is_int(dtype):
    return dtype in INTS
