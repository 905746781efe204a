"""TensorFlow / Keras -> IR, through tf.function concrete functions.

`trace_tf(obj, ...)` gets a concrete function (a FuncGraph) for a Keras
model, a tf.Module, a tf.function, a concrete function, a SavedModel or a
.keras/.h5 file, and walks its ops once, mapping each TF op type through the
table in frontends/tf_ops.py. `trace_tf1(graph_def, inputs, outputs,
session)` does the same for TF1 graphs. Calls of other graph functions
(PartitionedCall, nested tf.functions, SavedModel signatures) are inlined.

- Variables become params named by their source names: the Keras path
  ("dense/kernel"), the tf.Module attribute path ("layers/0/w"), else the
  variable name; the trainable flag is kept.
- `None` dims become symbolic dims: the names given in `dynamic_shapes`
  ({input: {axis: name}}), else "batch" for axis 0 (the Keras batch axis,
  shared by every input) and "<input>_dim<axis>" for the others.
- Shape computations (Shape -> StridedSlice -> Pack -> Reshape ...) are
  evaluated at trace time over those symbolic dims, so reshape targets become
  IR shape attrs; only shapes that depend on tensor data are refused.
- Control flow is resolved at trace time: While loops are unrolled when
  their condition is static (Keras RNNs: a static sequence length), If
  takes the branch its static predicate picks; TensorLists become Python
  lists of traced tensors.
- An unmapped op is one UnsupportedError listing every such op with its
  count and the source line that created it.
- StopGradient and PreventGradient become the IR's stop_gradient (identity
  forward, no gradient), so IR gradients match GradientTape's.

The one thing to know: layouts. TF convolutions and pools are channels-last,
the IR's are channels-first. Every traced tensor carries a layout (a
permutation of its TF axes, see `TV`): conv/pool outputs stay
channels-first, and layout-agnostic ops (elementwise, bias, pad, reductions,
concat, split, transpose, squeeze, tile, most reshapes) keep whatever layout
their input has, so a Transpose is emitted only where a layout-sensitive op
(matmul, a reshape that mixes axes, a graph output...) needs TF's order.
Convolution kernels are stored as params in the IR layout (out, in/groups,
*kernel); `graph.source_layouts[name]` records how to get TF's layout back
(`to_source_layout(graph, name, array)`). `inputs_as_nchw=[names]` makes
those inputs channels-first, removing the boundary transposes.
"""
import os

import numpy as np

from irtool.errors import IRToolError, UnsupportedError
from irtool.ir.builder import Builder

_TF_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    return tf


def ir_dtype(dtype):
    """IR dtype name of a tf.DType (or its name)."""
    name = dtype if isinstance(dtype, str) else dtype.name
    name = name.replace("_ref", "")
    if name not in _TF_DTYPES:
        raise UnsupportedError(f"TensorFlow dtype {name} has no IR equivalent")
    return name


def channels_first(rank):
    """The layout of a channels-first view of a channels-last tensor: IR axis
    i holds TF axis perm[i] (NHWC -> NCHW is (0, 3, 1, 2))."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def _norm_perm(perm):
    if perm is None:
        return None
    perm = tuple(int(p) for p in perm)
    return None if perm == tuple(range(len(perm))) else perm


class TV:
    """A traced TF tensor: one of
    - an IR Value holding the TF tensor permuted by `perm` (IR axis i is TF
      axis perm[i]; None = TF's own order),
    - a constant (`const`, a numpy array),
    - a static int vector/scalar with symbolic entries (`sym`, an object
      array of ints and dim names: what Shape and its arithmetic produce),
    - a variable (`resource`: key of a param, created when first used;
      `view`: the variable's data reshaped to this shape),
    - a TensorList (`items`: element TVs; dtype "variant"), as loops use.
    `shape` and `dtype` are always the TF tensor's."""

    __slots__ = ("value", "perm", "const", "sym", "dtype", "shape", "resource", "view", "views", "items")

    def __init__(self, dtype, shape, value=None, perm=None, const=None, sym=None, resource=None, view=None,
                 items=None):
        self.value, self.perm, self.const, self.sym = value, _norm_perm(perm), const, sym
        self.dtype, self.shape = dtype, tuple(shape)
        self.resource, self.view = resource, view
        self.items = items          # a TensorList: the element TVs (None where unset)
        self.views = {}

    @property
    def rank(self):
        return len(self.shape)

    @property
    def static(self):
        """The numpy value (ints and dim names for symbolic shapes), or None."""
        return self.const if self.const is not None else self.sym

    def __repr__(self):
        kind = "const" if self.const is not None else "sym" if self.sym is not None else \
            "var" if self.resource is not None else f"value{self.perm or ''}"
        return f"TV({kind} {self.dtype}{list(self.shape)})"


class Resource:
    """A variable: its param name, data (TF layout) and trainable flag."""

    def __init__(self, name, data, trainable=True):
        self.name, self.data, self.trainable = name, np.asarray(data), bool(trainable)


class Context:
    """What op implementations need: the Builder, layout-aware access to
    traced tensors, static evaluation and lazily created params."""

    def __init__(self, builder, resources, dim_sources):
        self.b = builder
        self.resources = resources          # key -> Resource
        self.dim_sources = dim_sources      # symbol -> (input Value, IR axis)
        self.op = None
        self._params = {}                    # key -> {layout: Value}
        self.source_layouts = {}
        self.conv_overrides = {}             # tf.Operation -> dict (dilated conv patterns)

    # -- making TVs ------------------------------------------------------------
    def tensor(self, value, perm=None):
        perm = _norm_perm(perm)
        shape = value.shape if perm is None else tuple(value.shape[perm.index(i)] for i in range(value.rank))
        return TV(value.dtype, shape, value=value, perm=perm)

    def constant(self, array, dtype=None):
        from irtool.ir.dtypes import np_dtype
        arr = np.asarray(array)
        if dtype is None:
            dtype = "bool" if arr.dtype == np.bool_ else str(arr.dtype)
        return TV(dtype, arr.shape, const=np.asarray(arr, dtype=np_dtype(dtype)))

    def symbolic(self, array, dtype):
        """A static int tensor that may hold dim names."""
        arr = np.asarray(array, dtype=object)
        if all(isinstance(x, (int, np.integer)) for x in arr.flat):
            return self.constant(np.asarray(arr.astype(np.int64)), dtype)
        return TV(dtype, arr.shape, sym=arr)

    # -- reading TVs -------------------------------------------------------------
    def value(self, tv, perm=None):
        """tv as an IR Value in layout `perm` (None: TF's order)."""
        perm = _norm_perm(perm)
        if tv.value is None:
            self._materialize(tv)
        if tv.perm == perm:
            return tv.value
        if perm in tv.views:
            return tv.views[perm]
        cur = tv.perm or tuple(range(tv.rank))
        want = perm or tuple(range(tv.rank))
        if [a for a in cur if tv.shape[a] != 1] == [a for a in want if tv.shape[a] != 1]:
            # only size-1 axes move: the data order is the same, a reshape will do
            out = self.b.reshape(tv.value, shape=tuple(tv.shape[a] for a in want))
        else:
            out = self.b.transpose(tv.value, perm=tuple(cur.index(a) for a in want))
        tv.views[perm] = out
        return out

    def _materialize(self, tv):
        b = self.b
        if tv.resource is not None:
            v = self.param(tv.resource)
            if tv.view is not None and tuple(tv.view) != v.shape:
                v = b.reshape(v, shape=tuple(tv.view))
        elif tv.const is not None:
            v = b.const(tv.const, tv.dtype)
        elif tv.sym is not None:
            v = self._sym_value(tv)
        else:
            raise IRToolError(f"internal: {tv} has no value")
        tv.value, tv.perm = v, None

    def _sym_value(self, tv):
        """Runtime value of a shape vector with symbolic entries."""
        b = self.b
        parts = []
        for d in tv.sym.reshape(-1):
            if isinstance(d, (int, np.integer)):
                parts.append(b.const(np.array([d]), "int64"))
            elif d in self.dim_sources:
                src, axis = self.dim_sources[d]
                parts.append(b.slice(b.shape_of(src), starts=(axis,), ends=(axis + 1,), axes=(0,)))
            else:   # a derived dim ("4*batch"): the runtime shape of a tensor that has it
                parts.append(b.shape_of(b.full(shape=(d,), value=False, dtype="bool")))
        v = parts[0] if len(parts) == 1 else b.concat(parts, axis=0)
        v = b.reshape(v, shape=tv.shape)
        return v if tv.dtype == "int64" else b.cast(v, dtype=tv.dtype)

    def static(self, tv, what="value"):
        """numpy value of a TV known at trace time (ints and dim names)."""
        if tv.static is not None:
            return tv.static
        op = self.op
        where = f" of {op.type} {op.name!r}" if op is not None else ""
        raise UnsupportedError(f"the {what}{where} depends on tensor data; irtool needs shapes that are "
                               "static or follow the inputs' (symbolic) dims")

    def ints(self, tv, what="value"):
        """Static Python ints (raises if symbolic)."""
        arr = self.static(tv, what)
        out = []
        for x in np.asarray(arr).reshape(-1):
            if not isinstance(x, (int, np.integer, bool, np.bool_)):
                op = self.op
                raise UnsupportedError(f"the {what} of {op.type} {op.name!r} must be static here, "
                                       f"but holds the symbolic dim {x!r}")
            out.append(int(x))
        return out

    def dims(self, tv, what="shape"):
        """A static shape vector as a tuple of ints and dim names."""
        return tuple(d if isinstance(d, str) else int(d) for d in np.asarray(self.static(tv, what)).reshape(-1))

    def scalar(self, tv, what="value"):
        arr = np.asarray(self.static(tv, what)).reshape(-1)
        if arr.size != 1:
            raise UnsupportedError(f"{self.op.type} {self.op.name!r}: {what} must be a scalar")
        x = arr[0]
        return x.item() if hasattr(x, "item") else x

    def attr(self, name, default=None):
        try:
            v = self.op.get_attr(name)
        except (ValueError, KeyError):
            return default
        return v.decode() if isinstance(v, bytes) else v

    # -- params --------------------------------------------------------------
    def param(self, key, layout=None):
        """The param of variable `key`, in TF layout or in `layout` =
        (view_shape, perm, ir_shape): data.reshape(view).transpose(perm).reshape(ir_shape)."""
        made = self._params.setdefault(key, {})
        if layout in made:
            return made[layout]
        res = self.resources[key]
        b = self.b
        if made:
            first_layout, first = next(iter(made.items()))
            tf_v = first if first_layout is None else self._undo_layout(first, first_layout, res.data.shape)
            v = tf_v if layout is None else self._apply_layout(tf_v, layout)
        else:
            data = res.data
            if layout is not None:
                view, perm, shape = layout
                data = np.ascontiguousarray(np.transpose(data.reshape(view), perm).reshape(shape))
                self.source_layouts[res.name] = {"source_shape": tuple(res.data.shape), "view": tuple(view),
                                                 "perm": tuple(perm)}
            v = b.param(res.name if res.name not in b._names else b.fresh(res.name), data, res.trainable)
        made[layout] = v
        return v

    def _apply_layout(self, v, layout):
        view, perm, shape = layout
        b = self.b
        if tuple(view) != v.shape:
            v = b.reshape(v, shape=tuple(view))
        if tuple(perm) != tuple(range(len(perm))):
            v = b.transpose(v, perm=tuple(perm))
        return b.reshape(v, shape=tuple(shape)) if tuple(shape) != v.shape else v

    def _undo_layout(self, v, layout, source_shape):
        view, perm, _ = layout
        b = self.b
        permuted = tuple(view[p] for p in perm)
        if permuted != v.shape:
            v = b.reshape(v, shape=permuted)
        inv = tuple(int(i) for i in np.argsort(perm))
        if inv != tuple(range(len(inv))):
            v = b.transpose(v, perm=inv)
        return b.reshape(v, shape=tuple(source_shape)) if tuple(source_shape) != v.shape else v

    def kernel(self, tv, perm, shape=None):
        """A conv kernel in IR layout: TF's kernel transposed by `perm`, then
        reshaped to `shape`. Variables are stored in that layout directly."""
        view = tuple(tv.shape)
        shape = tuple(shape) if shape is not None else tuple(view[p] for p in perm)
        if tv.resource is not None and tv.value is None:
            return self.param(tv.resource, (view, tuple(perm), shape))
        if tv.const is not None:
            return self.b.const(np.ascontiguousarray(np.transpose(tv.const, perm).reshape(shape)), tv.dtype)
        return self._apply_layout(self.value(tv), (view, tuple(perm), shape))


def to_source_layout(graph, name, array):
    """`array` (shaped like param `name`) in the source framework's layout:
    conv kernels are stored channels-first in the IR (see the module doc)."""
    info = getattr(graph, "source_layouts", {}).get(name)
    if info is None:
        return np.asarray(array)
    view, perm = info["view"], info["perm"]
    permuted = tuple(view[p] for p in perm)
    return np.transpose(np.asarray(array).reshape(permuted), np.argsort(perm)).reshape(info["source_shape"])


# -- walking TF graphs ------------------------------------------------------------------

def _source_line(op):
    try:
        frames = list(op.traceback)
    except Exception:  # noqa: BLE001 - graphs loaded from files have no tracebacks
        return None
    skip = (os.sep + "tensorflow" + os.sep, os.sep + "keras" + os.sep, os.sep + "tf_keras" + os.sep,
            os.sep + "tf2onnx" + os.sep, os.sep + "absl" + os.sep, os.path.dirname(os.path.abspath(__file__)),
            "<frozen")
    for fr in reversed(frames):
        if not any(s in fr.filename for s in skip):
            return f"{os.path.basename(fr.filename)}:{fr.lineno}"
    return None


_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
FUNCTION_ATTRS = {"PartitionedCall": ("f",), "StatefulPartitionedCall": ("f",),
                  "While": ("cond", "body"), "StatelessWhile": ("cond", "body"),
                  "If": ("then_branch", "else_branch"), "StatelessIf": ("then_branch", "else_branch")}
_PASSIVE = ("NoOp", "Placeholder", "PlaceholderWithDefault", "VarHandleOp", "VariableV2", "Variable",
            "Assert")
_MAX_UNROLL = 10000


def function_graph(op, graphs, attr="f"):
    """FuncGraph of the function an op runs (a call, a loop body, a branch)."""
    name = op.get_attr(attr).name
    for g in graphs:
        try:
            fn = g._get_function(name)
        except Exception:  # noqa: BLE001
            fn = None
        if fn is not None:
            graph = getattr(fn, "graph", None)
            if graph is not None:
                return graph
            definition = getattr(fn, "definition", None)
            if definition is not None:
                from tensorflow.python.framework.function_def_to_graph import function_def_to_graph
                return function_def_to_graph(definition)
    try:
        from tensorflow.python.eager import context
        from tensorflow.python.framework.function_def_to_graph import function_def_to_graph
        return function_def_to_graph(context.context().get_function_def(name))
    except Exception as e:  # noqa: BLE001
        raise UnsupportedError(f"{op.type} {op.name!r} runs function {name!r}, which cannot be found "
                               f"({type(e).__name__})") from None


def called_graphs(op, graphs):
    """[(function name, FuncGraph)] an op runs."""
    return [(op.get_attr(a).name, function_graph(op, graphs, a)) for a in FUNCTION_ATTRS.get(op.type, ())]


def _needed_ops(outputs, stop):
    """Ops the outputs depend on (data inputs only), not looking past `stop` tensors."""
    seen, todo = set(), [t.op for t in outputs if t.name not in stop]
    while todo:
        op = todo.pop()
        if op in seen:
            continue
        seen.add(op)
        for t in op.inputs:
            if t.name not in stop:
                todo.append(t.op)
    return seen


def _scan_unsupported(graph, outputs, stop, table, graphs, missing, visited):
    for op in _needed_ops(outputs, stop):
        if op.type in FUNCTION_ATTRS:
            for name, g in called_graphs(op, graphs):
                if name not in visited:
                    visited.add(name)
                    _scan_unsupported(g, list(g.outputs), set(), table, graphs + [g], missing, visited)
        elif op.type not in table and op.type not in _PASSIVE:
            entry = missing.setdefault(op.type, [0, _source_line(op)])
            entry[0] += 1


def check_supported(graph, outputs, stop=()):
    from irtool.frontends.tf_ops import TABLE
    missing = {}
    _scan_unsupported(graph, outputs, set(stop), TABLE, [graph], missing, set())
    if missing:
        lines = [f"{k} (x{c}{', from ' + src if src else ''})" for k, (c, src) in sorted(missing.items())]
        raise UnsupportedError(f"{len(missing)} unsupported TensorFlow op(s): " + "; ".join(lines))


class Walker:
    """Maps the ops of one TF graph (and the functions it calls) to IR."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.graphs = []

    def run(self, graph, outputs, env):
        """env: tensor name -> TV for the graph's fed tensors. Returns the
        outputs' TVs."""
        from irtool.frontends import tf_ops
        from irtool.frontends.tf_ops import TABLE
        ctx = self.ctx
        self.graphs.append(graph)
        needed = _needed_ops(outputs, set(env))
        patterns = tf_ops.find_patterns([op for op in graph.get_operations() if op in needed])
        ctx.conv_overrides.update(patterns.conv)
        for op in graph.get_operations():
            if op not in needed or all(o.name in env for o in op.outputs) and op.outputs:
                continue
            ctx.op = op
            src = _source_line(op)
            ctx.b.source = f"{op.type} {op.name}" + (f" at {src}" if src else "")
            ins = [env[t.name] for t in op.inputs]
            if op in patterns.alias:
                results = [ins[0]]
            elif op.type in _CALLS:
                results = self._call(op, ins)
            elif op.type in ("While", "StatelessWhile"):
                results = self._while(op, ins)
            elif op.type in ("If", "StatelessIf"):
                results = self._if(op, ins)
            elif op.type in ("Placeholder",):
                raise UnsupportedError(f"placeholder {op.name!r} is not fed: list it among the inputs")
            elif op.type == "PlaceholderWithDefault":
                results = [ins[0]]
            elif op.type in ("NoOp", "Assert"):
                continue
            elif op.type not in TABLE:
                raise UnsupportedError(f"1 unsupported TensorFlow op(s): {op.type} (x1, from {op.name})")
            else:
                results = TABLE[op.type](ctx, op, *ins)
            if not isinstance(results, (list, tuple)):
                results = [results]
            for i, (t, r) in enumerate(zip(op.outputs, results)):
                if r is None:
                    continue
                env[t.name] = self._check(op, t, r, op in patterns.unchecked)
        ctx.b.source = None
        self.graphs.pop()
        return [env[t.name] for t in outputs]

    def _call(self, op, ins, attr="f"):
        g = function_graph(op, self.graphs, attr)
        inner = {p.name: tv for p, tv in zip(g.inputs, ins)}
        saved = self.ctx.op
        outs = self.run(g, list(g.outputs), inner)
        self.ctx.op = saved
        return outs

    def _while(self, op, ins):
        """Unrolled: the loop condition must be known at trace time (a static trip count)."""
        ctx = self.ctx
        state = list(ins)
        for _ in range(_MAX_UNROLL):
            ctx.op = op
            cond = self._call(op, state, "cond")[0]
            ctx.op = op
            if not ctx.scalar(cond, "loop condition"):
                return state
            state = self._call(op, state, "body")
        raise UnsupportedError(f"{op.type} {op.name!r} runs more than {_MAX_UNROLL} iterations")

    def _if(self, op, ins):
        ctx = self.ctx
        taken = ctx.scalar(ins[0], "branch condition")
        return self._call(op, ins[1:], "then_branch" if taken else "else_branch")

    def _check(self, op, t, tv, unchecked):
        """Cast to TF's dtype where IR promotion differs; compare shapes."""
        ctx = self.ctx
        if t.dtype.name in ("resource", "variant") or tv.dtype == "variant":
            return tv
        want = ir_dtype(t.dtype)
        if tv.dtype != want:
            if tv.const is not None:
                tv = ctx.constant(tv.const, want)
            elif tv.value is not None:
                tv = ctx.tensor(ctx.b.cast(tv.value, dtype=want), tv.perm)
            elif tv.sym is not None:
                tv = TV(want, tv.shape, sym=tv.sym)
        if not unchecked and t.shape.rank is not None:
            tf_shape = t.shape.as_list()
            ok = len(tf_shape) == tv.rank and all(
                a is None or not isinstance(d, int) or a == d for a, d in zip(tf_shape, tv.shape))
            if not ok:
                raise IRToolError(f"internal: {op.type} {op.name!r} traced to shape {list(tv.shape)}, "
                                  f"TensorFlow says {tf_shape}")
        return tv


# -- entry points ---------------------------------------------------------------------

def _dim_names(name, shape, dynamic, axis0="batch"):
    spec = (dynamic or {}).get(name, {})
    out = []
    for axis, d in enumerate(shape):
        if axis in spec:
            if d is not None:
                raise IRToolError(f"dynamic_shapes: axis {axis} of input {name!r} is fixed to {d} by the "
                                  "function's signature; trace from a signature with None there")
            out.append(spec[axis] if isinstance(spec[axis], str) else getattr(spec[axis], "__name__", str(spec[axis])))
        elif d is None:
            out.append(axis0 if axis == 0 and axis0 else f"{name}_dim{axis}")
        else:
            out.append(int(d))
    return tuple(out)


def convert_graph(graph, inputs, outputs, output_names, resources, resource_tensors=None, consts=None,
                  name="model", dynamic_shapes=None, inputs_as_nchw=None, batch_symbol="batch",
                  input_shapes=None):
    """The walk shared by every entry point.

    inputs: [(tensor, name)]; outputs: tensors; resources: key -> Resource;
    resource_tensors: tensor name -> key (handles / ref variables);
    consts: tensor name -> numpy array (captured constants)."""
    check_supported(graph, outputs, stop=[t.name for t, _ in inputs] + list(resource_tensors or {})
                    + list(consts or {}))
    nchw = set(inputs_as_nchw or ())
    unknown = nchw - {n for _, n in inputs}
    if unknown:
        raise IRToolError(f"inputs_as_nchw names {sorted(unknown)} are not inputs "
                          f"({', '.join(n for _, n in inputs)})")
    unknown = set(dynamic_shapes or {}) - {n for _, n in inputs}
    if unknown:
        raise IRToolError(f"dynamic_shapes names {sorted(unknown)} are not inputs "
                          f"({', '.join(n for _, n in inputs)})")
    b = Builder(name)
    dim_sources = {}
    ctx = Context(b, resources, dim_sources)
    env = {}
    for t, iname in inputs:
        static = (input_shapes or {}).get(iname)
        if static is None and t.shape.rank is None:
            raise UnsupportedError(f"input {iname!r} has unknown rank; give its shape (input_shapes= for "
                                   "TF1 graphs, an input_signature otherwise)")
        static = list(static) if static is not None else t.shape.as_list()
        shape = _dim_names(iname, static, dynamic_shapes, batch_symbol)
        perm = channels_first(len(shape)) if iname in nchw else None
        if perm is not None and len(shape) < 3:
            raise IRToolError(f"inputs_as_nchw: input {iname!r} has rank {len(shape)}; it needs rank >= 3")
        ir_shape = shape if perm is None else tuple(shape[p] for p in perm)
        v = b.input(iname, ir_dtype(t.dtype), ir_shape)
        for axis, d in enumerate(ir_shape):
            if isinstance(d, str):
                dim_sources.setdefault(d, (v, axis))
        env[t.name] = ctx.tensor(v, perm)
    for tname, key in (resource_tensors or {}).items():
        res = resources[key]
        env[tname] = TV(ir_dtype(str(res.data.dtype)), res.data.shape, resource=key)
    for tname, arr in (consts or {}).items():
        env[tname] = ctx.constant(arr)
    walker = Walker(ctx)
    out_tvs = walker.run(graph, list(outputs), env)
    values = []
    for tv in out_tvs:
        v = ctx.value(tv)
        values.append(v)
    graph_ir = b.build(values)
    for v, want in zip(graph_ir.outputs, output_names):
        if v.producer is not None and want not in b._names and sum(o is v for o in graph_ir.outputs) == 1:
            b._names.discard(v.name)
            v.name = b._claim(want)
    graph_ir.source_layouts = dict(ctx.source_layouts)
    return graph_ir


def is_tf_object(obj):
    """Whether trace_tf can trace obj (without importing TensorFlow for others)."""
    import sys
    if "tensorflow" not in sys.modules:
        return False
    tf = sys.modules["tensorflow"]
    return _is_keras(obj) or isinstance(obj, tf.Module) or hasattr(obj, "get_concrete_function") \
        or type(obj).__name__ == "ConcreteFunction"


def _is_keras(obj):
    try:
        import keras
    except ImportError:
        return False
    return isinstance(obj, keras.layers.Layer)


def _keras_resources(model):
    resources, by_handle = {}, {}
    for v in model.variables:
        tfv = getattr(v, "value", v)
        handle = getattr(tfv, "handle", None)
        if handle is None:
            continue
        key = getattr(v, "path", None) or tfv.name.split(":")[0]
        resources[key] = Resource(key, np.asarray(tfv.numpy()), getattr(v, "trainable", True))
        by_handle[id(handle)] = key
    return resources, by_handle


def _module_resources(module):
    tf = _tf()
    resources, by_handle = {}, {}
    try:
        items = list(module._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True))
    except Exception:  # noqa: BLE001
        items = [((v.name.split(":")[0],), v) for v in getattr(module, "variables", ())]
    for path, v in items:
        if id(v.handle) in by_handle:
            continue
        key = "/".join(str(p) for p in path)
        resources[key] = Resource(key, v.numpy(), v.trainable)
        by_handle[id(v.handle)] = key
    return resources, by_handle


def loaded_resources(root):
    """Variables of a loaded SavedModel (or any trackable), named by their
    variable name, or by their attribute path where the name is generic."""
    import re
    tf = _tf()
    resources, by_handle = {}, {}
    seen, queue = set(), [((), root)]
    while queue:
        path, obj = queue.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, tf.Variable):
            if id(obj.handle) in by_handle:
                continue
            key = obj.name.split(":")[0]
            if re.fullmatch(r"Variable(_\d+)?", key) and path:
                key = "/".join(path)
            while key in resources:
                key = key + "_"
            resources[key] = Resource(key, obj.numpy(), obj.trainable)
            by_handle[id(obj.handle)] = key
            continue
        try:
            children = obj._trackable_children()
        except Exception:  # noqa: BLE001
            continue
        for k, child in children.items():
            if k in ("signatures",) or k.startswith("_"):
                continue
            queue.append((path + (k,), child))
    return resources, by_handle


def _capture_resources(cf, resources, by_handle):
    """Map the concrete function's captured tensors to variables/constants."""
    tf = _tf()
    handles = {}
    for v in getattr(cf, "variables", ()) or ():
        if id(v.handle) not in by_handle:
            key = v.name.split(":")[0]
            if key in resources:
                key = f"{key}_{len(resources)}"
            resources[key] = Resource(key, v.numpy(), v.trainable)
            by_handle[id(v.handle)] = key
        handles[id(v.handle)] = by_handle[id(v.handle)]
    resource_tensors, consts = {}, {}
    for external, internal in cf.graph.captures:
        key = by_handle.get(id(external))
        if key is not None:
            resource_tensors[internal.name] = key
        elif external.dtype == tf.resource:
            reads = [c for c in internal.consumers() if c.type == "ReadVariableOp"]
            try:
                data = tf.raw_ops.ReadVariableOp(resource=external, dtype=reads[0].get_attr("dtype")).numpy()
            except Exception:  # noqa: BLE001
                raise UnsupportedError(f"captured resource {internal.name!r} is not a variable irtool can read") \
                    from None
            key = reads[0].name.replace("/ReadVariableOp", "") if reads else internal.op.name
            resources[key] = Resource(key, data, False)
            resource_tensors[internal.name] = key
        else:
            try:
                consts[internal.name] = external.numpy()
            except Exception:  # noqa: BLE001
                raise UnsupportedError(f"captured tensor {internal.name!r} is not a constant") from None
    return resource_tensors, consts


def _output_names(structured, count):
    """`output` for one tensor, dict keys for mappings, output_<i> otherwise."""
    names = []

    def walk(o, path):
        if isinstance(o, dict):
            for k in sorted(o):
                walk(o[k], path + [str(k)])
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, path + [str(i)])
        elif o is not None:
            names.append("_".join(path))

    walk(structured, [])
    if len(names) != count or len(set(names)) != count or "" in names:
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    return [n if not n[0].isdigit() else f"output_{n}" for n in names]


def from_concrete_function(cf, name="model", resources=None, by_handle=None, dynamic_shapes=None,
                           inputs_as_nchw=None, output_names=None, input_names=None):
    """IR Graph of a tf ConcreteFunction."""
    tf = _tf()
    resources = dict(resources or {})
    by_handle = dict(by_handle or {})
    resource_tensors, consts = _capture_resources(cf, resources, by_handle)
    captured = {internal.name for _, internal in cf.graph.captures}
    feeds = [t for t in cf.inputs if t.name not in captured]
    names = list(input_names or [])
    if len(names) != len(feeds):
        specs = [s for s in tf.nest.flatten(cf.structured_input_signature) if isinstance(s, tf.TensorSpec)]
        names = [s.name if len(specs) == len(feeds) and s.name else t.op.name for s, t in
                 zip(specs if len(specs) == len(feeds) else feeds, feeds)]
    names = [_clean_name(n) for n in names]
    outputs = [t for t in cf.outputs if t.dtype != tf.resource]
    if output_names is None or len(output_names) != len(outputs):
        output_names = _output_names(cf.structured_outputs, len(outputs))
    return convert_graph(cf.graph, list(zip(feeds, names)), outputs, output_names, resources, resource_tensors,
                         consts, name=name, dynamic_shapes=dynamic_shapes, inputs_as_nchw=inputs_as_nchw)


def _clean_name(n):
    n = n.split(":")[0]
    return n or "input"


def _specs_from_examples(examples, names, dynamic_shapes, batch_dynamic):
    tf = _tf()
    specs = []
    for i, x in enumerate(examples):
        arr = np.asarray(x)
        name = names[i] if i < len(names) else f"input_{i}"
        shape = list(arr.shape)
        for axis in (dynamic_shapes or {}).get(name, {}):
            shape[axis] = None
        if batch_dynamic and shape:
            shape[0] = None
        specs.append(tf.TensorSpec(shape, tf.as_dtype(arr.dtype), name=name))
    return specs


def _call_arg_names(fn, skip_self=False):
    import inspect
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.name not in ("self", "training", "mask")]


def trace_keras(model, input_signature=None, example_inputs=None, dynamic_shapes=None, name=None,
                inputs_as_nchw=None):
    tf = _tf()
    inputs = None
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if input_signature is not None:
        specs = list(input_signature)
    elif inputs:
        specs = []
        for t in inputs:
            shape = list(t.shape)
            history = getattr(t, "_keras_history", None)
            iname = getattr(getattr(history, "operation", None), "name", None) or getattr(t, "name", None) \
                or f"input_{len(specs)}"
            for axis in (dynamic_shapes or {}).get(iname, {}):
                shape[axis] = None
            specs.append(tf.TensorSpec(shape, tf.as_dtype(t.dtype), name=iname))
    elif example_inputs is not None:
        examples = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        specs = _specs_from_examples(examples, _call_arg_names(model.call), dynamic_shapes, True)
    else:
        raise IRToolError(f"{type(model).__name__} has no recorded inputs: give input_signature "
                          "(tf.TensorSpec list) or example_inputs")
    struct = getattr(model, "_inputs_struct", None) if inputs else None

    def call(*xs):
        if struct is not None and not isinstance(struct, (list, tuple)) and len(xs) == 1:
            args = xs[0]
        elif struct is not None:
            args = tf.nest.pack_sequence_as(struct, list(xs))
        else:
            args = xs[0] if len(xs) == 1 else list(xs)
        return model(args, training=False)

    cf = tf.function(call).get_concrete_function(*specs)
    resources, by_handle = _keras_resources(model)
    out_names = None
    try:
        out_names = list(model.output_names)
    except (AttributeError, ValueError, TypeError):
        out_names = None
    if out_names is not None and len(set(out_names)) != len(out_names):
        out_names = None
    names = [s.name or f"input_{i}" for i, s in enumerate(specs)]
    return from_concrete_function(cf, name=name or model.name, resources=resources, by_handle=by_handle,
                                  dynamic_shapes=dynamic_shapes, inputs_as_nchw=inputs_as_nchw,
                                  output_names=out_names, input_names=names)


def trace_tf(obj, input_signature=None, example_inputs=None, dynamic_shapes=None, name=None,
             inputs_as_nchw=None, trust_code=False):
    """Trace a TensorFlow object into an IR Graph.

    obj: a keras.Model/Layer (Sequential, functional, subclassed), a
    tf.Module with a tf.function (its __call__, or its only tf.function),
    a tf.function, a ConcreteFunction, or a path to a SavedModel directory,
    .keras or .h5 file (loaded safely, see frontends/tf_files.py).
    input_signature: tf.TensorSpec list; example_inputs: arrays whose shapes
    and dtypes fix the signature (Keras models keep axis 0 dynamic);
    dynamic_shapes: {input: {axis: "symbol"}}; inputs_as_nchw: names of 4-D
    (or 3-D/5-D) channels-last inputs to take channels-first instead."""
    tf = _tf()
    if isinstance(obj, (str, os.PathLike)):
        from irtool.frontends.tf_files import load_tf
        if name is None:
            name = os.path.splitext(os.path.basename(os.fspath(obj).rstrip(os.sep)))[0] or None
        obj = load_tf(obj, trust_code=trust_code)
    if _is_keras(obj):
        return trace_keras(obj, input_signature, example_inputs, dynamic_shapes, name, inputs_as_nchw)
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction
    if isinstance(obj, ConcreteFunction):
        return from_concrete_function(obj, name=name or "model", dynamic_shapes=dynamic_shapes,
                                      inputs_as_nchw=inputs_as_nchw)
    module = None
    fn = obj
    if not hasattr(obj, "get_concrete_function"):
        if isinstance(obj, tf.Module) or hasattr(obj, "signatures"):
            module = obj
            fn = _module_function(obj)
        else:
            raise UnsupportedError(f"cannot trace a {type(obj).__module__}.{type(obj).__name__}; supported: "
                                   "keras.Model, tf.Module, tf.function, ConcreteFunction, SavedModel paths")
    if isinstance(fn, ConcreteFunction):
        cf = fn
    elif input_signature is not None:
        cf = fn.get_concrete_function(*input_signature)
    elif example_inputs is not None:
        examples = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        names = _call_arg_names(getattr(fn, "python_function", fn))
        cf = fn.get_concrete_function(*_specs_from_examples(examples, names, dynamic_shapes, False))
    else:
        try:
            cf = fn.get_concrete_function()
        except (TypeError, ValueError) as e:
            raise IRToolError(f"cannot get a concrete function without arguments; give input_signature or "
                              f"example_inputs ({_last_line(e)})") from None
    if module is None:
        resources, by_handle = {}, {}
    elif isinstance(module, tf.Module):
        resources, by_handle = _module_resources(module)
    else:
        resources, by_handle = loaded_resources(module)
    return from_concrete_function(cf, name=name or getattr(fn, "__name__", None) or "model",
                                  resources=resources, by_handle=by_handle,
                                  dynamic_shapes=dynamic_shapes, inputs_as_nchw=inputs_as_nchw)


def _last_line(e):
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def _module_function(module):
    """The tf.function (or signature) to trace on a tf.Module / loaded SavedModel."""
    call = getattr(module, "__call__", None)
    if call is not None and hasattr(call, "get_concrete_function"):
        return call
    sigs = getattr(module, "signatures", None)
    if sigs:
        return sigs["serving_default"] if "serving_default" in sigs else next(iter(sigs.values()))
    fns = [getattr(module, k) for k in dir(module) if not k.startswith("_")
           and hasattr(getattr(module, k, None), "get_concrete_function")]
    if len(fns) == 1:
        return fns[0]
    raise UnsupportedError(f"{type(module).__name__} has {len(fns)} tf.functions and no __call__; "
                           "pass the tf.function to trace (e.g. module.serve)")


def trace_tf1(graph_def_or_graph, inputs, outputs, session=None, dynamic_shapes=None, name="model",
              inputs_as_nchw=None, trainable=None, input_shapes=None):
    """IR Graph of a TF1 graph (tf.Graph or GraphDef) from `inputs` (tensor
    or placeholder names) to `outputs`. Variables (VariableV2 / VarHandleOp)
    take their values from `session`; `trainable` (names) defaults to the
    graph's trainable_variables collection, else every variable.
    `input_shapes` ({name: [None, 3, ...]}) gives shapes to placeholders
    declared without one (None: a symbolic dim)."""
    tf = _tf()
    graph = graph_def_or_graph
    if not isinstance(graph, tf.Graph):
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def_or_graph, name="")

    def tensor(n):
        n = n if ":" in n else n + ":0"
        try:
            return graph.get_tensor_by_name(n)
        except (KeyError, ValueError) as e:
            raise IRToolError(f"the graph has no tensor {n!r}: {e}") from None

    in_tensors = [tensor(n) for n in inputs]
    out_tensors = [tensor(n) for n in outputs]
    needed = _needed_ops(out_tensors, {t.name for t in in_tensors})
    var_ops = [op for op in needed if op.type in ("VariableV2", "Variable", "VarHandleOp")]
    resources, resource_tensors = {}, {}
    if var_ops:
        if session is None:
            raise IRToolError(f"the graph reads {len(var_ops)} variable(s) ({var_ops[0].name}, ...): pass the "
                              "tf.compat.v1.Session holding their values, or freeze the graph")
        train = set(trainable) if trainable is not None else \
            {v.op.name for v in graph.get_collection("trainable_variables")}
        for op in var_ops:
            if op.type == "VarHandleOp":
                with graph.as_default():
                    read = tf.raw_ops.ReadVariableOp(resource=op.outputs[0], dtype=op.get_attr("dtype"))
                data = session.run(read)
            else:
                data = session.run(op.outputs[0])
            resources[op.name] = Resource(op.name, data, (op.name in train) if train else True)
            resource_tensors[op.outputs[0].name] = op.name
    in_names = [_clean_name(t.name) if t.op.type != "Placeholder" else t.op.name for t in in_tensors]
    out_names = [_clean_name(t.name) if t.value_index else t.op.name for t in out_tensors]
    return convert_graph(graph, list(zip(in_tensors, in_names)), out_tensors, out_names, resources,
                         resource_tensors, name=name, dynamic_shapes=dynamic_shapes, inputs_as_nchw=inputs_as_nchw,
                         batch_symbol="batch", input_shapes=input_shapes)
