"""numpy kernels for irtool.ir.ops.elementwise."""
import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import elementwise as ops

KERNELS = {
    ops.NEG: np.negative,
    ops.EXP: np.exp,
    ops.ADD: np.add,
    ops.SUB: np.subtract,
    ops.MUL: np.multiply,
    ops.DIV: np.divide,
    ops.CAST: lambda x, dtype: x.astype(np_dtype(dtype)),
}
