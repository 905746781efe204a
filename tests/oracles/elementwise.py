"""torch oracles for irtool.ir.ops.elementwise."""
import torch

from tests.oracles.dtypes import torch_dtype


def _div(x, y):
    if x.dtype.is_floating_point:
        return torch.div(x, y)
    return torch.div(x, y, rounding_mode="trunc")


def _clip(x, min=None, max=None):
    if min is None and max is None:
        return x.clone()
    return torch.clamp(x, min=min, max=max).to(x.dtype)   # int x with float bounds promotes


def _stop_gradient(x):
    # x.detach(), kept in autograd's graph with an exactly zero gradient (the where
    # never picks x) so the harness's torch.autograd.grad gets zeros instead of raising
    return torch.where(torch.tensor(True), x.detach(), x)


ORACLES = {
    "neg": torch.neg,
    "abs": torch.abs,
    "sign": torch.sign,
    "exp": torch.exp,
    "log": torch.log,
    "log1p": torch.log1p,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "reciprocal": torch.reciprocal,
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "erf": torch.erf,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "round": torch.round,
    "isnan": torch.isnan,
    "logical_not": torch.logical_not,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": _div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "mod": torch.remainder,
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "where": torch.where,
    "clip": _clip,
    "stop_gradient": _stop_gradient,
    "cast": lambda x, dtype: x.to(torch_dtype(dtype)),
}
