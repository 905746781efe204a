"""numpy kernels, one table per op group, merged into KERNELS (OpDef -> fn).

A kernel is `fn(*arrays, **attrs)` returning an array, or a tuple of arrays
for multi-output ops. It must return exactly the dtype the op's rule infers
(the op tests check this), so no casts are needed at run time."""
from irtool.runtime.kernels import composite, conv, elementwise, reduce, shape_ops

KERNELS = {}
for _group in (elementwise, reduce, shape_ops, conv, composite):
    KERNELS.update(_group.KERNELS)
