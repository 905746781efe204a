"""The state one ONNX export builds up, and the helpers lowerings call.

A lowering is `fn(ctx, node)`: it appends ONNX nodes with `ctx.emit`, using
the IR value names for the node's outputs (so graph outputs and parameters
keep their source names). Opset-dependent details (reduce axes as inputs
from opset 18, Split's num_outputs...) live here once, not in each lowering.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from irtool.ir.dtypes import np_dtype
from irtool.ir.graph import Value
from irtool.ir.shapes import _monomial, canon


def onnx_dtype(dtype):
    if dtype == "bfloat16":
        return TensorProto.BFLOAT16
    return helper.np_dtype_to_tensor_dtype(np_dtype(dtype))


class LoweringContext:
    def __init__(self, graph, opset, external=None):
        self.graph = graph
        self.opset = opset
        self.external = external       # streams params to an external-data file when set
        self.nodes = []
        self.initializers = []
        self._names = {v.name for v in graph.values()}
        self._consts = {}
        self._shape_cache = {}
        self._symbols = {}
        for v in graph.inputs:                 # where each symbol can be read at run time
            for axis, d in enumerate(v.shape):
                if isinstance(d, str) and "*" not in d and not d.startswith("("):
                    self._symbols.setdefault(d, (v.name, axis))

    def fresh(self, base):
        base = base.replace("/", "_")
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def emit(self, op_type, inputs, outputs=None, **attrs):
        """Append one ONNX node. inputs/outputs are Values or names ("" for
        an omitted optional input); outputs=None or an int makes fresh names.
        Returns the output names (a str when there is one)."""
        ins = [v.name if isinstance(v, Value) else v for v in inputs]
        if outputs is None or isinstance(outputs, int):
            outs = [self.fresh(op_type.lower()) for _ in range(outputs or 1)]
        else:
            outs = [v.name if isinstance(v, Value) else v for v in outputs]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, ins, outs, name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, array, dtype=None, name="const", out=None):
        """A Constant node holding `array` (deduplicated by content). Constants
        are nodes and parameters are initializers, so an importer can tell
        them apart (parameters stay trainable, constants do not). `out` names
        the node's output when this content is new (returns the name used)."""
        arr = np.asarray(array, dtype=np_dtype(dtype) if dtype else None)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            out = out or self.fresh(name)
            self.nodes.append(helper.make_node("Constant", [], [out], name=self.fresh("n_Constant"),
                                               value=tensor_proto(out, arr)))
            self._consts[key] = out
        return self._consts[key]

    def initializer(self, name, arr):
        self.initializers.append(self.external.tensor(name, arr) if self.external else tensor_proto(name, arr))
        return name

    def ints(self, values):
        return self.const(np.asarray(values, dtype=np.int64), name="ints")

    # -- shapes with symbolic dims ---------------------------------------------
    def shape_tensor(self, shape):
        """Name of a 1-D int64 tensor holding `shape`, reading symbolic dims
        from the graph inputs' runtime shapes."""
        shape = tuple(shape)
        if all(isinstance(d, int) for d in shape):
            return self.ints(shape)
        if shape in self._shape_cache:
            return self._shape_cache[shape]
        parts = [self.ints([d]) if isinstance(d, int) else self.dim_tensor(d) for d in shape]
        out = self.emit("Concat", parts, axis=0)
        self._shape_cache[shape] = out
        return out

    def dim_tensor(self, d):
        """1-element int64 tensor holding the runtime value of symbolic dim d:
        a product of input dims, or a parenthesised sum/difference of dims."""
        if isinstance(d, int):
            return self.ints([d])
        key = ("dim", d)
        if key in self._shape_cache:
            return self._shape_cache[key]
        coef, names = _monomial(d)
        out = None
        for n in names:
            t = self._sum_tensor(n[1:-1]) if n.startswith("(") else self._symbol_tensor(n)
            out = t if out is None else self.emit("Mul", [out, t])
        if coef != 1:
            out = self.emit("Mul", [out, self.ints([coef])])
        self._shape_cache[key] = out
        return out

    def _symbol_tensor(self, name):
        if name not in self._symbols:
            from irtool.errors import ExportError
            raise ExportError(f"symbolic dim {name!r} is not a dim of any graph input")
        src, axis = self._symbols[name]
        return self.emit("Shape", [src], start=axis, end=axis + 1)

    def _sum_tensor(self, expr):
        out = None
        for term, op in _signed_terms(expr):
            t = self.dim_tensor(int(term) if term.isdigit() else canon(term))
            if out is None:
                out = t if op == "Add" else self.emit("Neg", [t])
            else:
                out = self.emit(op, [out, t])
        return out

    # -- opset-dependent helpers -----------------------------------------------
    def reduce(self, op_type, x, out, axes, keepdims):
        """Reduce* with axes=None meaning all, across opsets."""
        keep = int(bool(keepdims))
        if axes is None:
            return self.emit(op_type, [x], [out], keepdims=keep)
        axes = list(axes)
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.emit(op_type, [x, self.ints(axes)], [out], keepdims=keep)
        return self.emit(op_type, [x], [out], axes=axes, keepdims=keep)

    def model(self, outputs):
        g = self.graph
        graph = helper.make_graph(self.nodes, g.name, [value_info(v) for v in g.inputs],
                                  outputs, initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="irtool",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        return model


def tensor_proto(name, arr):
    if arr.dtype == np_dtype("bfloat16"):
        return helper.make_tensor(name, TensorProto.BFLOAT16, arr.shape,
                                  arr.view(np.uint16).ravel().tolist(), raw=False)
    return numpy_helper.from_array(np.asarray(arr, order="C"), name)


def _signed_terms(expr):
    """"a+b-3" -> [("a", "Add"), ("b", "Add"), ("3", "Sub")] (signs at depth 0)."""
    terms, op, depth, start = [], "Add", 0, 0
    for i, ch in enumerate(expr + "+"):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0 and expr[start:i].strip():
            terms.append((expr[start:i].strip(), op))
            op, start = ("Add" if ch == "+" else "Sub"), i + 1
    return terms


def value_info(v, name=None):
    return helper.make_tensor_value_info(name or v.name, onnx_dtype(v.dtype), list(v.shape))


def since(opset):
    """Mark a lowering as needing at least `opset`; below it the op is
    exported through its decomposition."""
    def mark(fn):
        fn.min_opset = opset
        return fn
    return mark
