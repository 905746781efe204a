"""OpDef and the op registry: each primitive or composite is declared once.

An OpDef carries what the IR itself must know about an op: its shape/dtype
rule (`infer`), its gradient (`vjp`, built with the Builder), an optional
`decompose` into primitives, and `samples` for the generated op tests.
Backends (numpy kernels, ONNX lowering, ...) keep their own tables keyed by
the OpDef object.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from irtool.errors import GraphError

REGISTRY = {}


@dataclass(eq=False, frozen=True)
class Sample:
    """Inputs (numpy arrays) and attrs for one op test case. `grad=False` skips
    gradient checks for this sample (e.g. at kinks of the function);
    `finite_differences=False` skips only the numeric check, for gradients
    that are conventions rather than derivatives (embedding's padding_idx)."""
    inputs: tuple
    attrs: dict = field(default_factory=dict)
    grad: bool = True
    finite_differences: bool = True


@dataclass(eq=False, frozen=True)
class OpDef:
    name: str
    infer: Callable                      # (input TensorTypes, attrs) -> [TensorType]
    vjp: Optional[Callable] = None       # (builder, node, cotangent(s)) -> per-input grads
    decompose: Optional[Callable] = None  # (builder, *inputs, **attrs) -> Value or tuple
    samples: Optional[Callable] = None   # numpy Generator -> [Sample]
    differentiable: bool = True          # False: no gradient flows (integer/boolean results)
    nondiff_inputs: tuple = ()           # input positions that never get gradients (indices)
    shape_attrs: tuple = ()              # attrs that hold shapes (may contain symbolic dims)
    variadic: bool = False               # takes any number of inputs (concat)
    doc: str = ""

    def __repr__(self):
        return f"<op {self.name}>"

    __hash__ = object.__hash__


def register(op):
    if op.name in REGISTRY:
        raise GraphError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get_op(name):
    try:
        return REGISTRY[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}") from None
