"""Reductions, scans, matmul and top-k."""
from irtool.errors import IRTypeError
from irtool.ir.graph import TensorType
from irtool.ir.opdef import OpDef, Sample, register
from irtool.ir.ops.infer import reduction, same_dtype
from irtool.ir.shapes import broadcast, norm_axes
from irtool.ir.ops.sampling import rand


def keep_reduced(b, g, node):
    """Reshape a reduction's cotangent so it broadcasts against the input
    (re-insert the reduced axes as 1s when keepdims was False)."""
    x = node.inputs[0]
    if node.attrs.get("keepdims", False):
        return g
    axes = norm_axes(node.attrs.get("axes"), x.rank)
    return b.unsqueeze(g, axes=axes) if axes else g


def reduce_samples(rng):
    x = rand(rng, 2, 3, 4)
    return [Sample((x,), {}), Sample((x,), {"axes": (1,)}),
            Sample((x,), {"axes": (0, 2), "keepdims": True}), Sample((x,), {"axes": (-1,)})]


REDUCE_SUM = register(OpDef(
    "reduce_sum", reduction,
    vjp=lambda b, node, g: (b.expand(keep_reduced(b, g, node), shape=node.inputs[0].shape),),
    samples=reduce_samples,
    doc="reduce_sum(x, axes=None|tuple, keepdims=False); axes=None reduces all"))


def _matmul_infer(types, attrs):
    a, c = types
    dtype = same_dtype(types)
    if a.rank == 0 or c.rank == 0:
        raise IRTypeError("matmul needs inputs of rank >= 1")
    sa = a.shape if a.rank > 1 else (1,) + a.shape
    sc = c.shape if c.rank > 1 else c.shape + (1,)
    k1, k2 = sa[-1], sc[-2]
    if k1 != k2 and isinstance(k1, int) and isinstance(k2, int):
        raise IRTypeError(f"matmul inner dims differ: {a} @ {c}")
    batch = broadcast(sa[:-2], sc[:-2])
    out = batch + ((sa[-2],) if a.rank > 1 else ()) + ((sc[-1],) if c.rank > 1 else ())
    return [TensorType(dtype, out)]


def _matmul_vjp(b, node, g):
    a, c = node.inputs
    # promote vectors to matrices so one formula serves every rank
    a2 = b.unsqueeze(a, axes=(0,)) if a.rank == 1 else a
    c2 = b.unsqueeze(c, axes=(1,)) if c.rank == 1 else c
    g2 = g
    if a.rank == 1:
        g2 = b.unsqueeze(g2, axes=(g2.rank - (1 if c.rank > 1 else 0),))
    if c.rank == 1:
        g2 = b.unsqueeze(g2, axes=(g2.rank,))
    da = b.matmul(g2, b.transpose(c2, perm=_swap_last(c2.rank)))
    dc = b.matmul(b.transpose(a2, perm=_swap_last(a2.rank)), g2)
    if a.rank == 1:
        da = b.squeeze(da, axes=(da.rank - 2,))
    if c.rank == 1:
        dc = b.squeeze(dc, axes=(dc.rank - 1,))
    return da, dc


def _swap_last(rank):
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)


MATMUL = register(OpDef(
    "matmul", _matmul_infer, vjp=_matmul_vjp,
    samples=lambda rng: [Sample((rand(rng, 3, 4), rand(rng, 4, 5))),
                         Sample((rand(rng, 2, 3, 4), rand(rng, 4, 2))),
                         Sample((rand(rng, 2, 1, 3, 4), rand(rng, 3, 4, 2))),
                         Sample((rand(rng, 4), rand(rng, 4, 3))),
                         Sample((rand(rng, 2, 3, 4), rand(rng, 4))),
                         Sample((rand(rng, 4), rand(rng, 4)))],
    doc="numpy matmul semantics: batched, broadcasting, 1-D operands promoted"))
