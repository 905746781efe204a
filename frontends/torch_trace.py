"""PyTorch -> IR, through torch.export.

`trace(module, example_inputs, dynamic_shapes=None)` exports the module
and walks the FX graph once, mapping each ATen op through the table in
frontends/aten_ops.py. The table covers the composite ops torch.export
leaves in place (linear, conv2d, layer_norm...), so common models need no
decomposition pass; any other model is decomposed to core ATen first. Parameters
become trainable params and buffers frozen params, both named by their
state_dict keys; user inputs keep the forward's argument names; SymInt
sizes become symbolic dims named after the user's `dynamic_shapes`.
An unmapped op is one UnsupportedError listing every such op with its count
and the source line that produced it.

The per-node work (the table call, the cast to torch's inferred dtype, param
and output naming) is `Translator`'s, shared with frontends/pt2_reader.py,
which walks a .pt2 archive's serialized graph without torch.export.load.
"""
import operator

import numpy as np

from irtool.errors import IRToolError, UnsupportedError
from irtool.frontends.aten_ops import ATEN, NeedsDecomposition, dim_of, torch_dtype_name
from irtool.ir.builder import Builder
from irtool.ir.graph import Value


def _dynamic_spec(module, dynamic_shapes):
    """Turn {"x": {0: "batch"}} (or positional lists of such dicts) into
    torch.export Dims. Returns (spec for torch.export, {arg: {axis: name}})."""
    import inspect

    from torch.export import Dim
    if dynamic_shapes is None:
        return None, {}
    params = list(inspect.signature(module.forward).parameters)
    names = {}

    def conv(arg, spec):
        if not isinstance(spec, dict):
            return spec
        out = {}
        for axis, d in spec.items():
            # a named dim lets torch infer its range (BERT's seq <= max positions);
            # the IR symbol takes the user's name
            names.setdefault(arg, {})[axis] = d if isinstance(d, str) else d.__name__
            out[axis] = Dim.DYNAMIC if isinstance(d, str) else d
        return out

    if isinstance(dynamic_shapes, dict):
        unknown = set(dynamic_shapes) - set(params)
        if unknown:
            raise IRToolError(f"dynamic_shapes names {sorted(unknown)} are not arguments of "
                              f"forward({', '.join(params)})")
        return {k: conv(k, v) for k, v in dynamic_shapes.items()}, names
    return type(dynamic_shapes)(conv(a, s) for a, s in zip(params, dynamic_shapes)), names


def trace(module, example_inputs, dynamic_shapes=None, name=None, share_params=False):
    """IR graph of `module`. Params are copied, so the graph stays as traced
    when the module trains on; `share_params=True` skips the copy (the
    graph reads the module's own memory, read-only on the IR side: for a
    one-shot conversion of a large model, whose module is not changed after)."""
    import torch
    if not isinstance(module, torch.nn.Module):
        raise IRToolError(f"trace expects a torch.nn.Module, got {type(module).__name__}")
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    spec, dim_names = _dynamic_spec(module, dynamic_shapes)
    try:
        ep = torch.export.export(module, args, dynamic_shapes=spec)
    except Exception as e:  # torch's own message says what it could not capture
        raise IRToolError(f"torch.export could not capture {type(module).__name__}: "
                          f"{str(e).strip().splitlines()[0]}") from e
    return from_exported_program(ep, name=name or type(module).__name__, dim_names=dim_names,
                                 copy_params=not share_params)


def from_exported_program(ep, name="model", dim_names=None, copy_params=True):
    """Translate torch.export's graph directly when the table maps every op
    in it (no decomposition retrace: the fast path for common models);
    otherwise decompose to core ATen first."""
    if not _unsupported(ep.graph_module.graph):
        try:
            return _translate(ep, name, dim_names, copy_params)
        except NeedsDecomposition:
            pass
    ep = ep.run_decompositions(_decomposition_table())
    missing = _unsupported(ep.graph_module.graph)
    if missing:
        lines = [f"{k} (x{c}{', from ' + src if src else ''})" for k, (c, src) in sorted(missing.items())]
        raise UnsupportedError(f"{len(missing)} unsupported ATen op(s): " + "; ".join(lines))
    return _translate(ep, name, dim_names, copy_params)


def _translate(ep, name, dim_names, copy_params=True):
    """Walk the FX graph of `ep`; the per-node work is Translator's, shared
    with the .pt2 reader (frontends/pt2_reader.py)."""
    import torch
    gm, sig = ep.graph_module, ep.graph_signature
    kinds = {spec.arg.name: spec for spec in sig.input_specs if hasattr(spec.arg, "name")}
    state = dict(ep.state_dict)
    consts = dict(getattr(ep, "constants", {}) or {})
    env = {}
    user_names = _user_input_names(ep)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user_dims = []               # symbols first: from user inputs' fake shapes
    for n in placeholders:
        spec = kinds.get(n.name)
        if spec is not None and spec.kind == torch.export.graph_signature.InputKind.USER_INPUT:
            sizes = getattr(n.meta.get("val"), "shape", ())
            user_dims.append((user_names.get(n.name, n.name),
                              [d if isinstance(d, int) else str(d.node.expr) for d in sizes]))
    t = Translator(name, input_symbols(user_dims, dim_names))
    for n in placeholders:
        spec = kinds.get(n.name)
        kind = spec.kind.name if spec is not None else "USER_INPUT"
        val = n.meta.get("val")
        if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            tensor = state.get(spec.target)
            if tensor is None:
                tensor = consts.get(spec.target)
            if tensor is None:
                raise IRToolError(f"exported program has no data for {spec.target!r}")
            data = _param_array(tensor, copy_params)
            want = "float32" if val is not None and str(val.dtype) == "torch.float32" else None
            env[n] = t.param(spec.target, data, kind, want)
        elif kind == "USER_INPUT":
            if val is None or not hasattr(val, "shape"):
                raise UnsupportedError(f"input {n.name!r} is not a tensor; only tensor inputs are supported")
            shape = tuple(dim_of(d, t.ctx.symbols) for d in val.shape)
            env[n] = t.input(user_names.get(n.name, n.name), torch_dtype_name(val.dtype), shape)
        else:
            raise UnsupportedError(f"input kind {kind} ({n.name}) is not supported")
    outputs = []
    keys = op_keys(gm.graph)
    for n in gm.graph.nodes:
        if n.op == "call_function":
            source = _source_line(n)
            args = _map(n.args, env, t.ctx)
            kwargs = {k: _map(v, env, t.ctx) for k, v in n.kwargs.items()}
            if n.target is operator.getitem:
                t.b.source = source
                env[n] = args[0][args[1]]
                continue
            val = n.meta.get("val")
            want = (lambda val=val: torch_dtype_name(val.dtype)) if hasattr(val, "dtype") else None
            env[n] = t.call(keys[n], args, kwargs, want, source)
        elif n.op == "output":
            outputs = _flatten(_map(n.args[0], env, t.ctx))
    user_outputs = [s.arg.name for s in sig.output_specs if s.kind.name == "USER_OUTPUT"]
    return t.finish(outputs, len(user_outputs), ep.call_spec.out_spec)


def _param_array(tensor, copy):
    """A param's data: a copy (the live module may change after tracing), or
    with copy=False the tensor's own memory, made read-only for the IR."""
    if not hasattr(tensor, "numpy"):
        return np.array(tensor)
    data = tensor.detach().cpu().numpy()
    if copy:
        return data.copy()
    data = data.view()
    data.flags.writeable = False
    return data


def input_symbols(user_dims, dim_names):
    """{size key: IR symbol} from [(forward argument name, sizes)], where a
    size is an int or the key of a symbolic size (sympy's `str` of its
    expression, e.g. "s77"). The first input axis holding a symbol names it:
    after the user's `dim_names` ({arg: {axis: name}}) where given, else
    f"{arg}_dim{axis}"."""
    symbols = {}
    for arg, sizes in user_dims:
        for axis, d in enumerate(sizes):
            if not isinstance(d, int):
                symbols.setdefault(d, (dim_names or {}).get(arg, {}).get(axis, f"{arg}_dim{axis}"))
    return symbols


class Translator:
    """The per-node work of turning an exported program into IR, shared by
    the FX walker above and the .pt2 JSON walker (frontends/pt2_reader.py):
    params named by their state_dict keys, the ATen table call, the cast to
    torch's inferred dtype, and the naming of the outputs."""

    def __init__(self, name, symbols):
        self.b = Builder(name)
        self.ctx = Context(self.b, symbols)

    def param(self, target, data, kind, want_dtype=None):
        """A parameter (kind PARAMETER: trainable), buffer or tensor constant."""
        if data.dtype == np.dtype("float64") and want_dtype == "float32":
            data = data.astype(np.float32)
        return self.b.param(_param_name(self.b, target), data, trainable=(kind == "PARAMETER"))

    def input(self, name, dtype, shape):
        return self.b.input(name, dtype, shape)

    def call(self, key, args, kwargs, want_dtype=None, source=None):
        """ATEN[key](ctx, *args, **kwargs), cast to torch's inferred dtype where
        IR type promotion differs. `want_dtype` is a function returning that
        dtype's IR name, called only for a tensor result (None: no cast)."""
        self.b.source = source
        result = ATEN[key](self.ctx, *args, **kwargs)
        if want_dtype is None or not isinstance(result, Value):
            return result
        return self.ctx.cast_to(result, want_dtype())

    def finish(self, outputs, user_count, out_spec):
        """The graph, with outputs = the last `user_count` non-None values of
        `outputs` (torch puts buffer mutations first), named after `out_spec`
        (a pytree TreeSpec, or anything with `children_specs` and `context`)."""
        self.b.source = None
        outputs = [o for o in outputs if o is not None]
        outputs = outputs[len(outputs) - user_count:] if user_count else outputs
        return _name_outputs(self.b, outputs, out_spec)


def _decomposition_table():
    """Core ATen decompositions, except attention: the IR has a fused
    scaled_dot_product_attention op (and torch's own decomposition fails on
    some dynamic-shape models, GPT-2 among them)."""
    import torch
    table = torch.export.default_decompositions()
    for op in list(table):
        if "scaled_dot_product" in str(op):
            del table[op]
    return table


class Context:
    """What op implementations need: the Builder and the symbol table."""

    def __init__(self, builder, symbols):
        self.b = builder
        self.symbols = symbols

    def dim(self, d):
        return dim_of(d, self.symbols)

    def fix_dtype(self, result, val):
        """Cast to the dtype torch inferred (val: a fake tensor) when IR promotion differs."""
        if val is not None and hasattr(val, "dtype"):
            return self.cast_to(result, torch_dtype_name(val.dtype))
        return result

    def cast_to(self, result, want):
        """`result` cast to IR dtype `want` if it is a Value of another dtype."""
        if want is not None and isinstance(result, Value) and result.dtype != want:
            return self.b.cast(result, dtype=want)
        return result


def _op_key(target):
    return str(target).replace("aten.", "", 1) if str(target).startswith("aten.") else str(target)


def _unsupported(graph):
    """{op: [count, first source line]} for every op the table lacks."""
    missing = {}
    keys = op_keys(graph)
    for n, key in keys.items():
        if key not in ATEN:
            entry = missing.setdefault(key, [0, _source_line(n)])
            entry[0] += 1
    return missing


def op_keys(graph):
    """{call_function node: ATEN table key}, in-place ops as in_place_key says."""
    import torch.fx
    order = {n: i for i, n in enumerate(graph.nodes)}
    keys = {}
    for n in graph.nodes:
        if n.op != "call_function" or n.target is operator.getitem:
            continue
        key = _op_key(n.target)
        if key not in ATEN:
            written = n.args[0] if n.args else None
            if isinstance(written, torch.fx.Node):
                read_after = any(order[u] > order[n] for u in written.users if u is not n)
                key = in_place_key(key, keys.get(written), read_after) or key
        keys[n] = key
    return keys


def in_place_key(key, written_by, read_after):
    """The functional form's key of an in-place op (`out += x` is aten.add_,
    `relu(inplace=True)` aten.relu_) where translating it so cannot change
    the result, else None. Safe when the written tensor is the single result
    of an op translated by key `written_by` (None: a graph input, param,
    buffer or an item of a multi-output op) that returns no view of its
    inputs (a write into a view changes its base too), and nothing reads the
    written tensor after the write (`read_after`)."""
    name = key.partition(".")[0]
    functional = f"{name[:-1]}.{key.partition('.')[2]}"
    if key in ATEN or not name.endswith("_") or name.startswith("_") or functional not in ATEN:
        return None
    if written_by is None or read_after or written_by.startswith("<") or _returns_alias(written_by):
        return None
    return functional


def _returns_alias(key):
    import torch
    op, _, overload = key.rpartition(".")
    try:
        schema = getattr(getattr(torch.ops.aten, op), overload)._schema
    except (AttributeError, RuntimeError):
        return True
    return any(r.alias_info is not None for r in schema.returns)


def _source_line(n):
    return source_of(n.meta.get("stack_trace"))


def source_of(trace):
    """"file.py:line" of the innermost frame of a node's stack trace, or None."""
    trace = trace or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip().startswith("File ")]
    if not lines:
        return None
    last = lines[-1]            # innermost frame: the user's module code
    try:
        path = last.split('"')[1].rsplit("/", 1)[-1]
        lineno = last.split("line ")[1].split(",")[0]
        return f"{path}:{lineno}"
    except IndexError:
        return last


def _map(a, env, ctx):
    import torch.fx
    if isinstance(a, torch.fx.Node):
        if a in env:
            return env[a]
        val = a.meta.get("val")
        raise IRToolError(f"value {a.name} ({val}) used before it was defined")
    if isinstance(a, (list, tuple)):
        return type(a)(_map(x, env, ctx) for x in a)
    if isinstance(a, dict):
        return {k: _map(v, env, ctx) for k, v in a.items()}
    return a


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def _param_name(b, target):
    return target if target not in b._names else b.fresh(target)


def _user_input_names(ep):
    """placeholder name -> forward argument name (torch may rename: x -> x_1)."""
    names = {}
    try:
        import inspect
        sig = inspect.signature(ep.module().forward)
    except Exception:  # noqa: BLE001 - fall back to placeholder names
        return names
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    params = [p for p in sig.parameters]
    for ph, arg in zip(user, params):
        names[ph] = arg
    return names


def _name_outputs(b, outputs, out_spec):
    """Name graph outputs after the forward's output structure: `output` for
    one tensor, `output_0`.. for tuples, dict/ModelOutput keys for mappings."""
    graph = b.build(outputs)
    names = _output_names(out_spec, len(graph.outputs))
    for v, want in zip(graph.outputs, names):
        if v.producer is not None and want not in b._names and sum(o is v for o in graph.outputs) == 1:
            b._names.discard(v.name)
            v.name = b._claim(want)
    return graph


def _output_names(spec, count):
    names = []

    def walk(s, path):
        children = getattr(s, "children_specs", None) or []
        if not children:
            names.append(".".join(path) or "output")
            return
        ctx = s.context
        keys = list(ctx) if isinstance(ctx, (list, tuple)) and len(ctx) == len(children) else None
        if keys is None and isinstance(ctx, (list, tuple)) and len(ctx) == 2 and isinstance(ctx[1], (list, tuple)):
            keys = list(ctx[1])          # dataclass / ModelOutput: (type, keys)
        for i, c in enumerate(children):
            walk(c, path + [str(keys[i]) if keys and i < len(keys) else str(i)])

    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            walk(spec, [])
    except Exception:  # noqa: BLE001 - naming is cosmetic; fall back below
        names = []
    if len(names) != count:
        names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    if count > 1 and all(n.isdigit() for n in names):
        names = [f"output_{n}" for n in names]
    return names
