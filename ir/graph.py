"""Values, nodes and graphs: the data structure every other module works on.

A Graph owns its nodes in topological order. Values know their producer and
their uses, so passes can rewrite without rescanning; mutate only through
`replace_all_uses_with`, `insert_before` and `remove`, then call `verify`.
"""
from dataclasses import dataclass

import numpy as np

from irtool.errors import GraphError
from irtool.ir.dtypes import check_dtype
from irtool.ir.shapes import check_shape, fmt


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple

    def __post_init__(self):
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        object.__setattr__(self, "shape", check_shape(self.shape))

    @property
    def rank(self):
        return len(self.shape)

    def __str__(self):
        return f"{self.dtype}{fmt(self.shape)}"


class Value:
    """A typed edge. `producer` is the Node that computes it, or None for graph
    inputs and params; `uses` lists (node, input index) pairs."""

    __slots__ = ("name", "type", "producer", "uses")

    def __init__(self, name, type, producer=None):
        self.name = name
        self.type = type
        self.producer = producer
        self.uses = []

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def shape(self):
        return self.type.shape

    @property
    def rank(self):
        return len(self.type.shape)

    def __repr__(self):
        return f"%{self.name}: {self.type}"


class Attrs(dict):
    """Immutable, hashable attribute mapping (hash used by CSE). Lists become
    tuples; numpy arrays are allowed (constants) and hash by content."""

    def __init__(self, items=()):
        super().__init__((k, _freeze(v)) for k, v in dict(items).items())

    def _blocked(self, *a, **k):
        raise GraphError("node attributes are immutable; build a new node instead")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _blocked

    def key(self):
        return tuple(sorted((k, _hash_key(v)) for k, v in self.items()))

    def __hash__(self):
        return hash(self.key())


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _hash_key(v):
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, tuple):
        return tuple(_hash_key(x) for x in v)
    return v


class Node:
    __slots__ = ("op", "inputs", "attrs", "outputs", "source")

    def __init__(self, op, inputs, attrs, output_types, names, source=None):
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = attrs if isinstance(attrs, Attrs) else Attrs(attrs)
        self.outputs = tuple(Value(n, t, self) for n, t in zip(names, output_types))
        self.source = source
        for i, v in enumerate(self.inputs):
            v.uses.append((self, i))

    def __repr__(self):
        from irtool.ir.text import node_line
        return node_line(self)


@dataclass
class Param:
    value: Value
    data: np.ndarray
    trainable: bool = True


class Graph:
    def __init__(self, inputs, outputs, params, nodes, name="graph"):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.params = dict(params)          # name -> Param
        self.nodes = list(nodes)
        self.name = name
        self.version = 0                    # bumped by every mutation (runtime caches check it)

    # -- queries ---------------------------------------------------------
    def values(self):
        yield from self.inputs
        for p in self.params.values():
            yield p.value
        for n in self.nodes:
            yield from n.outputs

    def value(self, name):
        for v in self.values():
            if v.name == name:
                return v
        raise GraphError(f"graph has no value named {name!r}")

    def trainable(self):
        return [p.value for p in self.params.values() if p.trainable]

    def op_histogram(self):
        hist = {}
        for n in self.nodes:
            hist[n.op.name] = hist.get(n.op.name, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def param_count(self):
        return sum(int(p.data.size) for p in self.params.values())

    def __str__(self):
        from irtool.ir.text import graph_text
        return graph_text(self)

    # -- mutation --------------------------------------------------------
    def replace_all_uses_with(self, old, new):
        """Make every user of `old` use `new` instead (graph outputs too).
        Uses by nodes that `new` itself is computed from are left alone, so
        `new = f(old)` can take old's place without creating a cycle."""
        if old.type != new.type:
            raise GraphError(f"cannot replace {old!r} with {new!r}: types differ")
        if old is new:
            return
        upstream = _ancestors(new)
        for node, i in list(old.uses):
            if node in upstream:
                continue
            node.inputs = node.inputs[:i] + (new,) + node.inputs[i + 1:]
            new.uses.append((node, i))
            old.uses.remove((node, i))
        self.outputs = [new if o is old else o for o in self.outputs]
        self.version += 1

    def insert_before(self, anchor, node):
        """Insert `node` before `anchor` (None: at the end)."""
        if any(n is node for n in self.nodes):
            raise GraphError(f"{node!r} is already in the graph")
        if anchor is not None and not any(n is anchor for n in self.nodes):
            raise GraphError(f"anchor {anchor!r} is not a node of this graph")
        self.nodes.insert(self.nodes.index(anchor) if anchor is not None else len(self.nodes), node)
        self.version += 1

    def remove(self, node):
        """Remove a node whose outputs are unused; its inputs lose the use."""
        if not any(n is node for n in self.nodes):
            raise GraphError(f"cannot remove {node!r}: it is not a node of this graph")
        for o in node.outputs:
            if o.uses or any(o is g for g in self.outputs):
                raise GraphError(f"cannot remove {node!r}: {o.name} is still used")
        for i, v in enumerate(node.inputs):
            if (node, i) in v.uses:
                v.uses.remove((node, i))
        self.nodes.remove(node)
        self.version += 1


def _ancestors(v):
    """Nodes that value v is computed from (its producer included)."""
    seen, todo = set(), [v]
    while todo:
        n = todo.pop().producer
        if n is not None and n not in seen:
            seen.add(n)
            todo.extend(n.inputs)
    return seen


def verify(graph):
    """Check names are unique, nodes are in topological order, types match
    each op's rule, and use lists agree with node inputs. Raises GraphError."""
    seen = {}

    def define(v, where):
        if v.name in seen:
            raise GraphError(f"value name {v.name!r} defined twice ({where})")
        seen[v.name] = v

    for v in graph.inputs:
        if v.producer is not None:
            raise GraphError(f"graph input {v.name} has a producer")
        define(v, "input")
    for name, p in graph.params.items():
        if p.value.name != name:
            raise GraphError(f"param {name!r} is keyed under another name than its value {p.value.name!r}")
        if tuple(p.data.shape) != p.value.shape or str(p.data.dtype) != _np_name(p.value.dtype):
            raise GraphError(f"param {name!r} data {p.data.dtype}{list(p.data.shape)} does not match its type {p.value.type}")
        define(p.value, "param")
    uses = {}
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if seen.get(v.name) is not v:
                raise GraphError(f"{node!r}: input {v.name!r} is not defined before use")
            uses.setdefault(id(v), []).append((node, i))
        try:
            expected = node.op.infer([v.type for v in node.inputs], node.attrs)
        except Exception as e:
            raise GraphError(f"{node!r}: shape rule fails: {e}") from None
        if [o.type for o in node.outputs] != list(expected):
            raise GraphError(f"{node!r}: output types disagree with the op's rule {list(map(str, expected))}")
        for o in node.outputs:
            if o.producer is not node:
                raise GraphError(f"{node!r}: output {o.name} has the wrong producer")
            define(o, node.op.name)
    for v in seen.values():
        if sorted(map(_use_key, v.uses)) != sorted(map(_use_key, uses.get(id(v), []))):
            raise GraphError(f"use list of {v.name!r} is stale")
    for o in graph.outputs:
        if seen.get(o.name) is not o:
            raise GraphError(f"graph output {o.name!r} is not defined in the graph")
    return graph


def _use_key(u):
    return (id(u[0]), u[1])


def _np_name(dtype):
    from irtool.ir.dtypes import np_dtype
    return str(np_dtype(dtype))
