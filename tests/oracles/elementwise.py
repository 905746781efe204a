"""torch oracles for irtool.ir.ops.elementwise."""
import torch

from tests.oracles.dtypes import torch_dtype

ORACLES = {
    "neg": torch.neg,
    "exp": torch.exp,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "cast": lambda x, dtype: x.to(torch_dtype(dtype)),
}
