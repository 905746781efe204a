"""Graph-to-graph rewrites shared by backends.

`decompose(graph, supported)` expands every composite op whose op is not in
`supported` through its `decompose` rule until only supported ops (or ops
without a decomposition) remain; values keep their names where they can.
Backends call it to fall back to primitives, then `require_supported` to
reject what is left with one error that lists every missing op.
"""
from irtool.errors import UnsupportedError
from irtool.ir.builder import Builder


def require_supported(graph, supported, message):
    """Raise one UnsupportedError naming every op of `graph` not in
    `supported`, with counts: "<message>: gelu (x2), erf (x1)"."""
    missing = {}
    for n in graph.nodes:
        if n.op not in supported:
            missing[n.op.name] = missing.get(n.op.name, 0) + 1
    if missing:
        raise UnsupportedError(f"{message}: " + ", ".join(f"{k} (x{v})" for k, v in missing.items()))


def decompose(graph, supported):
    while True:
        todo = [n for n in graph.nodes if n.op not in supported and n.op.decompose is not None]
        if not todo:
            return graph
        graph = _expand_once(graph, supported)


def _expand_once(graph, supported):
    b = Builder(graph.name)
    vmap = {}
    for v in graph.inputs:
        vmap[v] = b.input(v.name, v.dtype, v.shape)
    for name, p in graph.params.items():
        vmap[p.value] = b.param(name, p.data, p.trainable)
    reserved = {o.name for n in graph.nodes for o in n.outputs}
    b._names.update(reserved)        # temporaries must not take a later value's name

    def keep_name(new, old):
        b._names.discard(old.name)       # release the reservation, then take it
        b.rename(new, old.name)

    for n in graph.nodes:
        if n.op in supported or n.op.decompose is None:
            for old, new in zip(n.outputs, b.replay(n, vmap, name=n.op.name)):
                keep_name(new, old)
            continue
        b.source = n.source
        start = len(b.nodes)
        outs = n.op.decompose(b, *[vmap[v] for v in n.inputs], **n.attrs)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        made = set(b.nodes[start:])
        for old, new in zip(n.outputs, outs):
            vmap[old] = new
            if new.producer in made and sum(o is new for o in outs) == 1:
                keep_name(new, old)       # graph outputs keep their names
        b.source = None
    return b.build([vmap[o] for o in graph.outputs])


def prune(graph):
    """Drop nodes whose outputs reach no graph output (dead code)."""
    live = set(graph.outputs)
    keep = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs):
            keep.append(n)
            live.update(n.inputs)
    kept = set(keep)
    for n in graph.nodes:
        if n not in kept:
            for i, v in enumerate(n.inputs):
                v.uses.remove((n, i))
    graph.nodes = [n for n in graph.nodes if n in kept]
    return graph
