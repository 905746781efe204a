"""The framework-neutral IR: types, graphs, the op registry, the Builder,
autodiff and the .irz file format."""
import irtool.ir.ops  # noqa: F401  (fills the registry)
from irtool.ir.autodiff import grad, vjp
from irtool.ir.builder import Builder
from irtool.ir.graph import Graph, Node, Param, TensorType, Value, verify
from irtool.ir.opdef import REGISTRY, OpDef, register

__all__ = ["Builder", "Graph", "Node", "OpDef", "Param", "REGISTRY", "TensorType", "Value",
           "grad", "register", "verify", "vjp"]
