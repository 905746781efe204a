"""Reference implementations for the op tests, written with torch (or numpy
where torch has no equivalent). ORACLES maps op name -> fn(*tensors, **attrs)
returning a tensor or a tuple of tensors. The oracle is never irtool code."""
from tests.oracles import composite, conv, elementwise, reduce, shape_ops

ORACLES = {}
for _group in (elementwise, reduce, shape_ops, conv, composite):
    ORACLES.update(_group.ORACLES)
