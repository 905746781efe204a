"""All op declarations. Importing this package fills the registry.

Groups: elementwise (unary, binary, compare, logical, where/clip/cast),
reduce (reductions, scans, matmul, topk), shape_ops (layout, indexing,
creation), conv (convolution, pooling, resize) and composite (activations,
normalisation, attention, losses: ops with a `decompose`)."""
from irtool.ir.ops import elementwise, reduce, shape_ops, conv, composite  # noqa: F401
from irtool.ir.opdef import REGISTRY

globals().update({name.upper(): op for name, op in REGISTRY.items()})
