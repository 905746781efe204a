"""IR -> TensorFlow: `to_tensorflow(graph)` returns a tf.Module that runs the
graph with TF ops (exporters/tensorflow/lowering.py, one table over every IR
op); `save_savedmodel(graph, path)` writes it as a SavedModel.

- Params become tf.Variables named like the IR params (`module.params`, a
  dict keyed by the exact IR names; `trainable=False` for frozen and
  non-float params), so `module.trainable_variables` and tf.GradientTape
  see exactly the IR's trainable params.
- `module(*inputs)` is a tf.function whose input_signature comes from the
  graph inputs (symbolic dims -> None; one argument per input, named like it
  where it is an identifier). It returns one tensor, or a tuple when the
  graph has several outputs. It interprets a plan built once, like the numpy
  runtime; symbolic shape attrs are computed from `tf.shape` of the inputs,
  so one trace serves every batch size, and the module saves with
  tf.saved_model.save and reloads with tf.saved_model.load.

The one thing to know: the graph is first run through
exporters/optimize.py (so NHWC<->NCHW transpose pairs around convs of a
model that came from TF cancel), then ops without a TF lowering are expanded
through their IR `decompose` rule; anything left is an UnsupportedError.
"""
import os
import re

import numpy as np
import tensorflow as tf

from irtool.errors import RuntimeFailure
from irtool.exporters.optimize import optimize
from irtool.exporters.tensorflow.lowering import LOWERINGS, lowering_for, tf_dtype
from irtool.ir.dtypes import is_float
from irtool.ir.ops import shape_ops
from irtool.ir.shapes import has_symbol, resolve
from irtool.ir.text import node_line
from irtool.ir.transform import decompose, require_supported
from irtool.exporters.naming import arg_names, class_name

__all__ = ["IRModule", "LOWERINGS", "to_tensorflow", "save_savedmodel", "supported_ops"]

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")     # a dim an input can bind (not "2*b", "(a+b)")
_OP_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")


def supported_ops():
    return set(LOWERINGS)


def to_tensorflow(graph):
    """A tf.Module computing `graph` with TF ops (see the module docs)."""
    graph = decompose(optimize(graph), supported_ops())
    require_supported(graph, LOWERINGS, "no TensorFlow lowering for")
    names = arg_names([v.name for v in graph.inputs])
    signature = [tf.TensorSpec([None if isinstance(d, str) else d for d in v.shape], tf_dtype(v.dtype), name=a)
                 for v, a in zip(graph.inputs, names)]
    call = tf.function(_make_call(names), input_signature=signature, autograph=False)
    cls = type(class_name(graph.name), (IRModule,), {"__call__": call})
    return cls(graph, names)


def save_savedmodel(graph, path):
    """Write `graph` as a TensorFlow SavedModel directory (serving signature:
    the module's __call__) and return the module."""
    import shutil
    import tempfile
    module = to_tensorflow(graph)
    path = os.fspath(path).rstrip("/")
    # write beside the target, then move into place: never a half-written folder
    tmp = tempfile.mkdtemp(prefix=".irtool-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        tf.saved_model.save(module, tmp, signatures=module.__call__.get_concrete_function())
        if os.path.exists(path):
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return module


class IRModule(tf.Module):
    """Base of the modules `to_tensorflow` makes; each graph gets a subclass
    whose __call__ names the graph inputs."""

    def __init__(self, graph, arg_names):
        super().__init__(name=_module_name(graph.name))
        self.ir_graph_name = graph.name
        self.ir_input_names = tuple(v.name for v in graph.inputs)
        self.ir_arg_names = tuple(arg_names)
        params = {}
        for name, p in graph.params.items():
            data = np.asarray(p.data)
            trainable = bool(p.trainable) and is_float(p.value.dtype)
            params[name] = tf.Variable(data, trainable=trainable, name=_OP_NAME.sub("_", name) or "param")
        self.params = params
        self._ir_plan = _Plan(graph, list(graph.params))

    def _run(self, inputs):
        return self._ir_plan.run(inputs, self.params)


class _Plan:
    """The graph as a flat list of steps over value slots, built once. A plain
    object (not tracked by tf.Module, not saved): only the traced function is."""

    def __init__(self, graph, param_names):
        slot = {}
        for v in graph.values():
            slot[v] = len(slot)
        self.nslots = len(slot)
        self.name = graph.name
        self.inputs = [(slot[v], v) for v in graph.inputs]
        self.params = [(slot[graph.params[n].value], n) for n in param_names]
        self.outputs = [slot[v] for v in graph.outputs]
        self.steps = []
        for n in graph.nodes:
            attrs = dict(n.attrs)
            symbolic = tuple(a for a in n.op.shape_attrs if a in attrs and has_symbol(attrs[a]))
            fn = None if n.op is shape_ops.CONSTANT else lowering_for(n)
            self.steps.append((fn, [slot[v] for v in n.inputs], [slot[o] for o in n.outputs], attrs,
                               symbolic, n))

    def run(self, inputs, params):
        slots = [None] * self.nslots
        env = {}
        for (s, v), t in zip(self.inputs, inputs):
            slots[s] = t
            for i, d in enumerate(v.shape):
                if isinstance(d, str) and _PLAIN.match(d) and d not in env:
                    static = t.shape[i]
                    env[d] = int(static) if static is not None else tf.shape(t)[i]
        for s, name in self.params:
            slots[s] = tf.convert_to_tensor(params[name])
        for fn, ins, outs, attrs, symbolic, node in self.steps:
            with tf.name_scope(_scope(node)):
                if fn is None:
                    slots[outs[0]] = tf.constant(attrs["value"])
                    continue
                if symbolic:
                    attrs = dict(attrs)
                    for a in symbolic:
                        attrs[a] = resolve(attrs[a], env)
                args = [slots[i] for i in ins]
                try:
                    result = fn(*args, **attrs)
                except Exception as e:  # noqa: BLE001 - re-raised with the node named
                    where = f" (from {node.source})" if node.source else ""
                    shapes = ", ".join(str(a.shape) for a in args)
                    raise RuntimeFailure(f"{node_line(node)}{where}: inputs {shapes}: "
                                         f"{type(e).__name__}: {e}") from e
            if len(outs) == 1:
                slots[outs[0]] = result
            else:
                for o, r in zip(outs, result):
                    slots[o] = r
        out = tuple(tf.identity(slots[s]) for s in self.outputs)
        return out[0] if len(out) == 1 else out


def _scope(node):
    name = _OP_NAME.sub("_", node.outputs[0].name if node.outputs else node.op.name)
    return name if name and name[0].isalnum() else "v" + name


def _module_name(name):
    s = re.sub(r"\W", "_", name or "graph")
    return s if s and (s[0].isalpha() or s[0] == "_") else "ir_" + s


def _make_call(names):
    """__call__(self, <one argument per graph input>), so the SavedModel
    signature names its inputs like the graph."""
    args = ", ".join(names)
    src = f"def __call__(self{', ' if names else ''}{args}):\n    return self._run(({args}{',' if names else ''}))\n"
    scope = {}
    exec(compile(src, "<irtool.exporters.tensorflow __call__>", "exec"), scope)   # noqa: S102 - names are sanitized
    fn = scope["__call__"]
    fn.__doc__ = "Run the graph on its inputs (" + ", ".join(names) + ")."
    return fn
