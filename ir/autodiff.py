"""Reverse-mode autodiff on the IR.

`grad(graph, wrt)` copies the forward graph into a Builder and appends its
backward pass, so the result is an ordinary graph: runnable, exportable,
differentiable again. Only nodes on a path from `wrt` to the outputs are
visited. Gradient rules return cotangents at the output's broadcast shape;
`unbroadcast` (the one place that handles broadcasting) sums them back to
each input's shape. Ops without a vjp but with a `decompose` are
differentiated through their decomposition.
"""
import numpy as np

from irtool.errors import AutodiffError, GraphError
from irtool.ir.builder import Builder
from irtool.ir.dtypes import is_float
from irtool.ir.graph import Value
from irtool.ir.transform import prune


def unbroadcast(b, g, x):
    """Sum cotangent g (broadcast shape) back to the shape of x."""
    if g.shape == x.shape:
        return g
    lead = g.rank - x.rank
    if lead < 0:
        raise AutodiffError(f"gradient {g!r} has lower rank than its input {x!r}")
    axes = tuple(range(lead)) + tuple(
        i + lead for i, d in enumerate(x.shape) if d == 1 and g.shape[i + lead] != 1)
    if axes:
        g = b.reduce_sum(g, axes=axes, keepdims=False)
    if g.shape != x.shape:
        g = b.reshape(g, shape=x.shape)
    return g


def backprop(b, outputs, cotangents, targets, nodes):
    """Append to `b` the backward pass of `nodes` (a topologically ordered
    slice of b.nodes) from `outputs` (seeded with `cotangents`) to `targets`.
    Returns {target Value: gradient Value} for the targets that are reached."""
    depends = set(targets)                  # values that depend on a target
    for n in nodes:
        if any(v in depends for v in n.inputs):
            depends.update(n.outputs)
    needed = set(o for o in outputs if o in depends)  # values that reach an output
    active = []
    for n in reversed(nodes):
        if any(o in needed for o in n.outputs) and n.op.differentiable:
            active.append(n)
            needed.update(v for v in n.inputs if v in depends)
    grads = {}
    for o, c in zip(outputs, cotangents):
        if o in depends:
            _accumulate(b, grads, o, c)
    for n in active:
        outs = [grads.get(o) for o in n.outputs]
        if all(g is None for g in outs):
            continue
        cot = outs[0] if len(outs) == 1 else tuple(outs)
        rule = n.op.vjp or (_vjp_via_decompose if n.op.decompose else None)
        if rule is None:
            where = f" (from {n.source})" if n.source else ""
            raise AutodiffError(f"op {n.op.name!r} has no gradient rule{where}: {n!r}")
        saved, b.source = b.source, n.source
        in_grads = rule(b, n, cot)
        b.source = saved
        for i, (x, gx) in enumerate(zip(n.inputs, in_grads)):
            if gx is None or x not in needed or i in n.op.nondiff_inputs or not is_float(x.dtype):
                continue
            _accumulate(b, grads, x, unbroadcast(b, gx, x))
    return {t: grads[t] for t in targets if t in grads}


def _accumulate(b, grads, x, g):
    if g.dtype != x.dtype:
        raise AutodiffError(f"gradient for {x!r} has dtype {g.dtype}")
    grads[x] = g if x not in grads else b.add(grads[x], g)


def _vjp_via_decompose(b, node, cot):
    start = len(b.nodes)
    outs = node.op.decompose(b, *node.inputs, **node.attrs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    cots = cot if isinstance(cot, tuple) else (cot,)
    pairs = [(o, c) for o, c in zip(outs, cots) if c is not None]
    got = backprop(b, [o for o, _ in pairs], [c for _, c in pairs], list(node.inputs),
                   list(b.nodes[start:]))
    return [got.get(x) for x in node.inputs]


def _resolve(graph, vmap, wrt):
    if wrt is None:
        return [vmap[v] for v in graph.trainable()]
    out = []
    if isinstance(wrt, (str, Value)):
        wrt = [wrt]
    for w in wrt:
        try:
            v = graph.value(w) if isinstance(w, str) else w
        except GraphError:
            raise AutodiffError(f"wrt entry {w!r} is not a value of the graph; inputs are "
                                f"{[i.name for i in graph.inputs]}, params {list(graph.params)}") from None
        if not isinstance(v, Value) or v not in vmap:
            raise AutodiffError(f"wrt entry {w!r} is not an input or param of the graph")
        if not is_float(v.dtype):
            raise AutodiffError(f"cannot differentiate with respect to {v.name!r} of dtype {v.dtype}")
        out.append(vmap[v])
    return out


def _zeros_like(b, x):
    return b.expand(b.const(0, x.dtype), shape=x.shape)


def _name_grads(b, grads, targets, forward):
    """Give gradient outputs the names users look for: grad_<target>.
    Values of the forward pass (`forward` holds their nodes) keep their names."""
    named = []
    for t, g in zip(targets, grads):
        if g.producer is not None and g.producer not in forward and g not in named:
            b.rename(g, f"grad_{t.name}")
        named.append(g)
    return named


def _unique(b, name):
    """name, or name_1, name_2... when an output appears twice."""
    out, i = name, 0
    while out in b._names:
        i += 1
        out = f"{name}_{i}"
    return out


def grad(graph, wrt=None):
    """Graph with the same inputs, outputs [loss, *dloss/dw for w in wrt].
    The first output is the loss and must hold a single float element."""
    loss = graph.outputs[0]
    if not is_float(loss.dtype) or any(d != 1 for d in loss.shape):
        raise AutodiffError(f"grad needs a scalar float first output, got {loss!r}; "
                            "reduce it (e.g. reduce_mean) or use vjp")
    b = Builder(graph.name + "_grad")
    vmap = b.copy_graph(graph)
    targets = _resolve(graph, vmap, wrt)
    if not targets:
        raise AutodiffError("nothing to differentiate: " + ("wrt is empty" if wrt is not None else
                            "the graph has no trainable params; pass wrt="))
    new_loss = vmap[loss]
    forward = set(b.nodes)
    seed = b.const(np.ones(loss.shape), loss.dtype)
    got = backprop(b, [new_loss], [seed], targets, list(b.nodes))
    grads = [got.get(t) or _zeros_like(b, t) for t in targets]
    return prune(b.build([new_loss] + _name_grads(b, grads, targets, forward)))


def vjp(graph, wrt=None):
    """Graph with extra inputs `cotangent_<output>` (one per output; an output
    listed twice gets `cotangent_<output>_1`) and outputs
    [*original outputs, *sum_i cotangent_i . d output_i / d w]."""
    b = Builder(graph.name + "_vjp")
    vmap = b.copy_graph(graph)
    targets = _resolve(graph, vmap, wrt)
    outs = [vmap[o] for o in graph.outputs]
    forward = set(b.nodes)
    cots = [b.input(_unique(b, f"cotangent_{o.name}"), o.dtype, o.shape) for o in graph.outputs]
    pairs = [(o, c) for o, c in zip(outs, cots) if is_float(o.dtype)]
    got = backprop(b, [o for o, _ in pairs], [c for _, c in pairs], targets, list(b.nodes))
    grads = [got.get(t) or _zeros_like(b, t) for t in targets]
    return prune(b.build(outs + _name_grads(b, grads, targets, forward)))
