"""Builder: the one way nodes are created. Methods are the op names.

`b.add(x, y)` looks the op up in the registry, runs its shape/dtype rule and
appends a typed node. Python numbers and numpy arrays given as inputs become
`constant` nodes with the dtype of the first Value input, so gradient rules
can write `b.mul(g, 0.5)` without dtype promotion surprises.
"""
import itertools
import os
import sys

import numpy as np

from irtool.errors import GraphError, IRTypeError
from irtool.ir.dtypes import check_dtype, is_float, np_dtype
from irtool.ir.graph import Attrs, Graph, Node, Param, TensorType, Value
from irtool.ir.opdef import REGISTRY, get_op


class Builder:
    def __init__(self, name="graph"):
        self.name = name
        self.inputs = []
        self.params = {}
        self.nodes = []
        self._names = set()
        self._counter = itertools.count()
        self.source = None   # set by frontends: where the next nodes come from

    # -- naming ------------------------------------------------------------
    def fresh(self, base):
        base = base or "v"
        if base not in self._names:
            self._names.add(base)
            return base
        while True:
            name = f"{base}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def _claim(self, name):
        if name in self._names:
            raise GraphError(f"name {name!r} is already used in this graph")
        self._names.add(name)
        return name

    # -- leaves --------------------------------------------------------------
    def input(self, name, dtype, shape):
        v = Value(self._claim(name), TensorType(dtype, shape))
        self.inputs.append(v)
        return v

    def param(self, name, data, trainable=True, dtype=None):
        data = np.asarray(data, dtype=np_dtype(dtype) if dtype else None)
        v = Value(self._claim(name), TensorType(check_dtype(data.dtype), data.shape))
        self.params[name] = Param(v, np.asarray(data, order="C"), bool(trainable))
        return v

    def const(self, value, dtype):
        arr = np.asarray(value, dtype=np_dtype(dtype))
        return self.add_node("constant", (), {"value": arr})

    # -- nodes -------------------------------------------------------------
    def add_node(self, op, inputs, attrs=None, name=None):
        op = get_op(op) if isinstance(op, str) else op
        inputs = list(inputs)
        like = next((v.dtype for v in inputs if isinstance(v, Value)), None)
        for i, v in enumerate(inputs):
            if not isinstance(v, Value):
                if like is None:
                    raise IRTypeError(f"{op.name}: give at least one Value input to fix the dtype of {v!r}")
                inputs[i] = self.const(_exact(op, v, like), like)
        attrs = Attrs({k: v for k, v in (attrs or {}).items() if v is not None})
        try:
            types = op.infer([v.type for v in inputs], attrs)
        except IRTypeError as e:
            where = f" (from {self.source})" if self.source else ""
            raise IRTypeError(f"{op.name}{where}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError) as e:
            # a rule tripped over missing attrs or a wrong number of inputs
            where = f" (from {self.source})" if self.source else ""
            what = f"missing attribute {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            ins = ", ".join(str(v.type) for v in inputs)
            raise IRTypeError(f"{op.name}{where}: bad inputs ({ins}) or attributes "
                              f"{sorted(attrs)}: {what}") from None
        base = name or op.name
        names = [self.fresh(base) for _ in types]
        node = Node(op, inputs, attrs, types, names, self.source or _caller())
        self.nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def __getattr__(self, name):
        if name.startswith("_") or name not in REGISTRY:
            raise AttributeError(f"Builder has no op {name!r}")
        op = REGISTRY[name]
        if op.variadic:
            def method(values, _name=None, **attrs):
                return self.add_node(op, values, attrs, _name)
        else:
            def method(*inputs, _name=None, **attrs):
                return self.add_node(op, inputs, attrs, _name)
        method.__name__ = name
        method.__doc__ = op.doc
        return method

    def copy_graph(self, graph):
        """Copy graph's inputs, params and nodes into this builder; returns the
        old-Value -> new-Value map (used by autodiff and passes)."""
        vmap = {}
        for v in graph.inputs:
            vmap[v] = self.input(v.name, v.dtype, v.shape)
        for name, p in graph.params.items():
            vmap[p.value] = self.param(name, p.data, p.trainable)
        for n in graph.nodes:
            self.replay(n, vmap)
        return vmap

    def replay(self, node, vmap, name=None):
        """Re-create `node` here with inputs mapped through vmap. Without
        `name`, the outputs keep the original names where they are free."""
        saved, self.source = self.source, node.source
        outs = self.add_node(node.op, [vmap[v] for v in node.inputs], node.attrs,
                             name or _base_name(node.outputs[0].name))
        self.source = saved
        outs = outs if isinstance(outs, tuple) else (outs,)
        for old, new in zip(node.outputs, outs):
            vmap[old] = new
            if name is None:
                self.rename(new, old.name)
        return outs

    def rename(self, value, name):
        """Give `value` (made by this builder) the name `name` if it is free;
        returns whether it now has that name."""
        if value.name == name:
            return True
        if name in self._names:
            return False
        self._names.discard(value.name)
        self._names.add(name)
        value.name = name
        return True

    def replay_with(self, node, inputs):
        """Re-create `node` here with the given inputs; returns its outputs as a tuple."""
        saved, self.source = self.source, node.source
        outs = self.add_node(node.op, inputs, node.attrs, _base_name(node.outputs[0].name))
        self.source = saved
        return outs if isinstance(outs, tuple) else (outs,)

    def build(self, outputs, name=None):
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return Graph(self.inputs, outputs, self.params, self.nodes, name or self.name)


def _exact(op, value, dtype):
    """value (a number or array) as an array of `dtype`; IRTypeError when
    the conversion would change it (2.5 or 300 into int8, 1e39 into float32)."""
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"not a number ({arr.dtype})")
        with np.errstate(all="ignore"):
            out = arr.astype(np_dtype(dtype))
            back, orig = out.astype(np.float64), arr.astype(np.float64)
            if is_float(dtype):     # rounding is fine, overflow to inf is not
                same = ~(np.isinf(back) & np.isfinite(orig))
            else:                   # ints and bool must hold the value exactly
                same = back == orig
    except (TypeError, ValueError, OverflowError) as e:
        raise IRTypeError(f"{op.name}: cannot use {value!r} as a {dtype} input: {e}") from None
    if not np.all(same):
        raise IRTypeError(f"{op.name}: {value!r} cannot be represented exactly as {dtype} "
                          "(the other input's dtype); cast one side explicitly")
    return out


def _base_name(name):
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep   # the ir/ folder (ops included)


def _caller():
    """The first stack frame outside irtool's IR core: where a node came from."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_HERE):
        f = f.f_back
    if f is None:
        return None
    return f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}"
