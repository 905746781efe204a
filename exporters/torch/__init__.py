"""IR -> PyTorch: `to_torch(graph)` returns a torch.nn.Module that runs the graph
with torch ops (exporters/torch/lowering.py, one table over every IR op).

- Params become nn.Parameters (trainable float params) or buffers (the rest)
  under their IR names: "fc1.weight" lives on a submodule `fc1`, so
  `state_dict()` keys are the IR param names. Constant nodes become
  non-persistent buffers (they follow `.to(device)`, stay out of the
  state_dict).
- forward(...) takes the graph inputs, by position or by name (identifier-safe
  forms of the IR input names), and returns one tensor, or a tuple when the
  graph has several outputs. It interprets a plan built once, like the numpy
  runtime; symbolic dims are read off the actual input shapes, so the module
  is differentiable with torch.autograd and traceable by torch.export with
  dynamic shapes (`export_program`, `save_exported_program`).

The one thing to know: ops without a torch lowering are expanded through
their IR `decompose` rule first; anything left is an UnsupportedError.
"""
import collections
import re

import numpy as np
import torch
from torch import nn

from irtool.errors import ExportError, IRTypeError, RuntimeFailure
from irtool.exporters.torch.lowering import CREATION, LOWERINGS, from_numpy, lowering_for, torch_dtype
from irtool.ir.ops import shape_ops
from irtool.ir.shapes import bind, check_bound, fmt, has_symbol, resolve
from irtool.ir.text import node_line
from irtool.ir.transform import decompose, require_supported
from irtool.exporters.naming import arg_names, class_name, identifier

__all__ = ["IRModule", "LOWERINGS", "to_torch", "export_program", "save_exported_program",
           "dynamic_shapes_for"]

_Input = collections.namedtuple("_Input", "slot name dtype shape")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")     # a dim an input can bind (not "2*b", "(a+b)")
_CONSTANTS = "ir_constants"


def supported_ops():
    return set(LOWERINGS)


def to_torch(graph):
    """An nn.Module computing `graph` with torch ops (see the module docs)."""
    graph = decompose(graph, supported_ops())
    require_supported(graph, LOWERINGS, "no torch lowering for")
    names = arg_names([v.name for v in graph.inputs])
    cls = type(class_name(graph.name), (IRModule,), {"forward": _make_forward(names)})
    return cls(graph, names)


class IRModule(nn.Module):
    """Base of the modules `to_torch` makes; each graph gets a subclass whose
    forward names the graph inputs."""

    def __init__(self, graph, arg_names):
        super().__init__()
        self.ir_graph_name = graph.name
        self.ir_input_names = [v.name for v in graph.inputs]
        self.ir_arg_names = list(arg_names)
        self.ir_renamed = {}           # IR param name -> state_dict key, where they had to differ
        self._steps, self._outputs, self._leaves = [], [], []
        slot = {}
        for v in graph.values():
            slot[v] = len(slot)
        self._nslots = len(slot)
        # plain data only (no IR objects), so copy.deepcopy and pickling of the plan work
        self._inputs = [_Input(slot[v], v.name, v.dtype, v.shape) for v in graph.inputs]
        # (slot, owning module, attribute name): read at every call, so .to(), load_state_dict
        # and torch.export's parameter swapping are all seen
        for name, p in graph.params.items():
            self._leaves.append((slot[p.value],) + self._register_param(name, p))
        self._add_constants(graph, slot)
        self._steps = self._plan(graph, slot)
        self._outputs = [slot[v] for v in graph.outputs]

    # -- building ---------------------------------------------------------------
    def _register_param(self, name, p):
        tensor = from_numpy(p.data)
        trainable = p.trainable and tensor.dtype.is_floating_point
        *path, leaf = name.split(".")
        owner = self
        try:
            if "" in path or not leaf:
                raise KeyError(name)
            for part in path:
                child = owner._modules.get(part)
                if child is None:
                    child = nn.Module()
                    owner.register_module(part, child)
                owner = child
            _attach(owner, leaf, tensor, trainable)
        except KeyError:            # the name collides with a module attribute or another param
            owner, leaf = self, _free_name(self, "ir_param_" + re.sub(r"\W", "_", name))
            _attach(owner, leaf, tensor, trainable)
            self.ir_renamed[name] = leaf
        return owner, leaf

    def _add_constants(self, graph, slot):
        consts = [n for n in graph.nodes if n.op is shape_ops.CONSTANT]
        if not consts:
            return
        holder = nn.Module()
        self.register_module(_free_name(self, _CONSTANTS), holder)
        for i, n in enumerate(consts):
            holder.register_buffer(f"c{i}", from_numpy(n.attrs["value"]), persistent=False)
            self._leaves.append((slot[n.outputs[0]], holder, f"c{i}"))

    def _plan(self, graph, slot):
        last_use = {}
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[slot[v]] = i
        keep = {slot[v] for v in graph.outputs}
        frees = [[] for _ in graph.nodes]
        for s, i in last_use.items():
            if s not in keep:
                frees[i].append(s)
        steps = []
        for i, n in enumerate(graph.nodes):
            if n.op is shape_ops.CONSTANT:
                continue
            attrs = dict(n.attrs)
            symbolic = tuple(a for a in n.op.shape_attrs if a in attrs and has_symbol(attrs[a]))
            where = node_line(n) + (f" (from {n.source})" if n.source else "")
            steps.append((lowering_for(n), [slot[v] for v in n.inputs], [slot[o] for o in n.outputs],
                          attrs, symbolic, n.op in CREATION, frees[i], where))
        return steps

    # -- running ----------------------------------------------------------------
    def _run(self, inputs):
        if len(inputs) != len(self._inputs):
            raise IRTypeError(f"{self.ir_graph_name} takes {len(self._inputs)} inputs "
                              f"({', '.join(self.ir_arg_names)}), got {len(inputs)}")
        slots = [None] * self._nslots
        tensors = [self._check_input(v, t) for v, t in zip(self._inputs, inputs)]
        env = self._bind(tensors)
        for v, t in zip(self._inputs, tensors):
            slots[v.slot] = t
        for s, owner, attr in self._leaves:
            slots[s] = getattr(owner, attr)
        eager = not (torch.compiler.is_compiling() or _is_exporting())
        device = _device(tensors, slots, self._leaves)
        for fn, ins, outs, attrs, symbolic, creates, frees, where in self._steps:
            if symbolic or creates:
                attrs = dict(attrs)
                for a in symbolic:
                    attrs[a] = resolve(attrs[a], env)
                if creates:
                    attrs["device"] = device
            args = [slots[i] for i in ins]
            if eager:
                try:
                    result = fn(*args, **attrs)
                except Exception as e:  # noqa: BLE001 - re-raised with the node named
                    shapes = ", ".join(fmt(tuple(a.shape)) for a in args)
                    raise RuntimeFailure(f"{where}: inputs {shapes}: {type(e).__name__}: {e}") from e
            else:
                result = fn(*args, **attrs)
            if len(outs) == 1:
                slots[outs[0]] = result
            else:
                for o, r in zip(outs, result):
                    slots[o] = r
            for f in frees:
                slots[f] = None
        out = tuple(slots[s] for s in self._outputs)
        return out[0] if len(out) == 1 else out

    def _check_input(self, v, t):
        if isinstance(t, np.ndarray):
            t = from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise IRTypeError(f"input {v.name!r} must be a torch.Tensor, got {type(t).__name__}")
        want = torch_dtype(v.dtype)
        if t.dtype != want:
            raise IRTypeError(f"input {v.name!r} must be {v.dtype}, got {str(t.dtype).replace('torch.', '')}")
        return t

    def _bind(self, tensors):
        """Symbol -> size (int, or SymInt under torch.export) from the inputs.
        With concrete sizes the shapes are checked as the numpy runtime does."""
        concrete = all(isinstance(d, int) for t in tensors for d in t.shape)
        env = {}
        for v, t in zip(self._inputs, tensors):
            if concrete:
                err = bind(v.shape, tuple(t.shape), env)
                if err:
                    raise IRTypeError(f"input {v.name!r}: {err}")
                continue
            if len(v.shape) != t.ndim:
                raise IRTypeError(f"input {v.name!r}: expected rank {len(v.shape)} {fmt(v.shape)}, "
                                  f"got shape {list(t.shape)}")
            for d, c in zip(v.shape, t.shape):
                if isinstance(d, str) and _PLAIN.match(d) and d not in env:
                    env[d] = c
        if concrete:
            for v, t in zip(self._inputs, tensors):
                err = check_bound(v.shape, tuple(t.shape), env)
                if err:
                    raise IRTypeError(f"input {v.name!r}: {err}")
        return env

    def extra_repr(self):
        return (f"graph={self.ir_graph_name!r}, inputs=({', '.join(self.ir_arg_names)}), "
                f"steps={len(self._steps)}")


def _is_exporting():
    fn = getattr(torch.compiler, "is_exporting", None)     # torch >= 2.7
    return bool(fn and fn())


def _device(tensors, slots, leaves):
    """Where creation ops put their results: the inputs', else the params'."""
    for t in tensors:
        return t.device
    for s, _, _ in leaves:
        return slots[s].device
    return torch.device("cpu")


def _attach(owner, name, tensor, trainable):
    if trainable:
        owner.register_parameter(name, nn.Parameter(tensor))
    else:
        owner.register_buffer(name, tensor)


def _free_name(module, base):
    name, i = base, 0
    while hasattr(module, name):
        i += 1
        name = f"{base}_{i}"
    return name


def _make_forward(names):
    """forward(self, <one argument per graph input>), so torch.export can match
    dynamic_shapes by name."""
    params = "".join(f", {n}" for n in names)
    packed = "".join(f"{n}, " for n in names)
    src = f"def forward(self{params}):\n    return self._run(({packed}))\n"
    scope = {}
    exec(compile(src, "<irtool.exporters.torch forward>", "exec"), scope)   # noqa: S102 - names are sanitized
    fn = scope["forward"]
    fn.__doc__ = "Run the graph on its inputs (" + ", ".join(names) + ")."
    return fn


# -- torch.export --------------------------------------------------------------------

_DISTINCT_SIZES = (3, 5, 7, 11, 13, 17, 19, 23)


def example_inputs_for(graph, seed=0):
    """Random torch inputs (irtool.compare.random_inputs), each symbol given its
    own size (>= 3), so torch.export neither specializes nor unifies them."""
    from irtool.compare import random_inputs
    symbols = []
    for v in graph.inputs:
        for d in v.shape:
            if isinstance(d, str) and _PLAIN.match(d) and d not in symbols:
                symbols.append(d)
    dims = {s: _DISTINCT_SIZES[i % len(_DISTINCT_SIZES)] + 24 * (i // len(_DISTINCT_SIZES))
            for i, s in enumerate(symbols)}
    return tuple(from_numpy(a) for a in random_inputs(graph, dims=dims, seed=seed))


def dynamic_shapes_for(graph, module=None, named=False):
    """torch.export dynamic_shapes for `graph`'s inputs: every symbolic axis
    becomes Dim.DYNAMIC (named=True: one torch.export.Dim per symbol, shared
    across inputs; derived dims such as "2*batch" stay Dim.AUTO)."""
    from torch.export import Dim
    names = module.ir_arg_names if module is not None else arg_names([v.name for v in graph.inputs])
    dims = {}
    spec = {}
    for arg, v in zip(names, graph.inputs):
        axes = {}
        for i, d in enumerate(v.shape):
            if not isinstance(d, str):
                continue
            if named and _PLAIN.match(d):
                if d not in dims:
                    dims[d] = Dim(identifier(d))
                axes[i] = dims[d]
            else:
                axes[i] = Dim.AUTO if named else Dim.DYNAMIC
        spec[arg] = axes or None
    return spec


def export_program(graph, example_inputs=None, named_dims=False):
    """torch.export.ExportedProgram of `to_torch(graph)`, symbolic dims dynamic."""
    module = to_torch(graph)
    if example_inputs is None:
        example_inputs = example_inputs_for(graph)
    example_inputs = tuple(from_numpy(a) if isinstance(a, np.ndarray) else a for a in example_inputs)
    spec = dynamic_shapes_for(graph, module, named=named_dims)
    dynamic = spec if any(s is not None for s in spec.values()) else None
    try:
        return torch.export.export(module, example_inputs, dynamic_shapes=dynamic)
    except torch._dynamo.exc.UserError as e:
        if not named_dims:
            raise
        raise ExportError(f"torch.export rejected the named dims of {graph.name!r} (the model constrains "
                          f"them); export with named_dims=False (Dim.DYNAMIC) instead. torch says: {e}") from e


def save_exported_program(graph, path, example_inputs=None, named_dims=False):
    """Write `graph` as a torch.export program (.pt2) and return the program.
    Without example inputs, random ones are made (irtool.compare.random_inputs);
    symbolic dims become Dim.DYNAMIC (or named Dims with named_dims=True)."""
    import io

    from irtool.ir.serialize import atomic_write
    program = export_program(graph, example_inputs, named_dims=named_dims)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write(path, buf.getvalue())        # never a half-written file
    return program
