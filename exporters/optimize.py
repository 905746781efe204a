"""Graph passes that make exported models good, not just valid.

`optimize(graph)` rebuilds the graph once, in order, applying: constant
folding (nodes whose inputs are all constants, evaluated with the numpy
kernels, when the result is small), transpose/reshape/expand/cast
cancellation, common-subexpression elimination, and finally dead-code
removal. Params are never folded: they stay trainable and keep their names.
Graph outputs keep their names.
"""
import numpy as np

from irtool.ir.builder import Builder
from irtool.ir.transform import prune

FOLD_LIMIT = 4096   # elements: larger folded results would bloat the file


def optimize(graph):
    from irtool.ir.ops import shape_ops
    from irtool.runtime.kernels import KERNELS
    b = Builder(graph.name)
    vmap, consts, seen = {}, {}, {}
    for v in graph.inputs:
        vmap[v] = b.input(v.name, v.dtype, v.shape)
    for name, p in graph.params.items():
        vmap[p.value] = b.param(name, p.data, p.trainable)
    for n in graph.nodes:
        ins = [vmap[v] for v in n.inputs]
        simpler = _simplify(b, n, ins, shape_ops)
        if simpler is not None:
            vmap[n.outputs[0]] = simpler
            continue
        if _foldable(n, ins, consts, shape_ops, KERNELS):
            result = np.asarray(KERNELS[n.op](*[consts[v] for v in ins], **n.attrs))
            out = b.const(result, n.outputs[0].dtype)
            consts[out] = result
            vmap[n.outputs[0]] = _cse(b, seen, out)
            continue
        key = (n.op, tuple(id(v) for v in ins), n.attrs.key())
        if key in seen:
            outs = seen[key]
        else:
            outs = b.replay_with(n, ins)
            seen[key] = outs
            if n.op is shape_ops.CONSTANT:
                consts[outs[0]] = n.attrs["value"]
        for old, new in zip(n.outputs, outs):
            vmap[old] = new
    outs = [vmap[o] for o in graph.outputs]
    for old, new in zip(graph.outputs, outs):
        if new.name != old.name and new.producer is not None and old.name not in b._names \
                and sum(o is new for o in outs) == 1:
            b._names.discard(new.name)
            new.name = b._claim(old.name)
    return prune(b.build(outs))


def _foldable(n, ins, consts, ops, kernels):
    if n.op is ops.CONSTANT or n.op not in kernels or len(n.outputs) != 1:
        return False
    if not all(v in consts for v in ins):
        return False
    shape = n.outputs[0].shape
    return all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= FOLD_LIMIT


def _cse(b, seen, out):
    key = (out.producer.op, (), out.producer.attrs.key())
    if key in seen:
        b.nodes.remove(out.producer)
        return seen[key][0]
    seen[key] = (out,)
    return out


def _simplify(b, n, ins, ops):
    """Return a Value replacing n's single output, or None."""
    x = ins[0] if ins else None
    if n.op is ops.TRANSPOSE:
        perm = tuple(n.attrs.get("perm") or reversed(range(x.rank)))
        if perm == tuple(range(x.rank)):
            return x
        p = x.producer
        if p is not None and p.op is ops.TRANSPOSE:
            inner = tuple(p.attrs.get("perm") or reversed(range(x.rank)))
            combined = tuple(inner[i] for i in perm)
            src = p.inputs[0]
            return src if combined == tuple(range(src.rank)) else b.transpose(src, perm=combined)
    if n.op in (ops.RESHAPE, ops.EXPAND, ops.SQUEEZE, ops.UNSQUEEZE) and x.shape == n.outputs[0].shape:
        return x
    if n.op is ops.RESHAPE and x.producer is not None and x.producer.op in (ops.RESHAPE, ops.SQUEEZE,
                                                                            ops.UNSQUEEZE):
        src = x.producer.inputs[0]
        return src if src.shape == n.outputs[0].shape else b.reshape(src, shape=n.outputs[0].shape)
    if n.op.name == "cast" and x.dtype == n.attrs["dtype"]:
        return x
    return None
