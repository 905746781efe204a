"""The numpy reference runtime: an interpreter over the kernel table.

`run(graph, inputs)` compiles the graph once into a flat plan (kernel, input
slots, output slots, attrs) cached on the graph, then executes it with a list
of slots, freeing each value after its last use. Composite ops without a
kernel are expanded through their `decompose` rule at plan time. Every
failure names the node and its text line. Returned arrays never alias the
inputs or params, so callers may update them in place; kernels see read-only
views of both, so no kernel can change the caller's arrays or the params.
"""
import numpy as np

from irtool.errors import IRTypeError, RuntimeFailure
from irtool.ir.dtypes import np_dtype
from irtool.ir.shapes import bind, check_bound, fmt, has_symbol, resolve
from irtool.ir.text import node_line
from irtool.ir.transform import decompose, require_supported
from irtool.runtime.kernels import KERNELS


class Plan:
    def __init__(self, graph):
        graph = decompose(graph, KERNELS)
        require_supported(graph, KERNELS, "numpy runtime has no kernel for")
        slot = {}
        for v in graph.values():
            slot[v] = len(slot)
        self.nslots = len(slot)
        self.inputs = [(slot[v], v) for v in graph.inputs]
        self.params = [(slot[p.value], p.data) for p in graph.params.values()]
        self.outputs = [slot[v] for v in graph.outputs]
        keep = set(self.outputs)
        last_use = {}
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[slot[v]] = i
        param_slots = {s for s, _ in self.params}
        frees = [[] for _ in graph.nodes]
        for s, i in last_use.items():
            if s not in keep and s not in param_slots:
                frees[i].append(s)
        self.steps = []
        for i, n in enumerate(graph.nodes):
            attrs = dict(n.attrs)
            symbolic = tuple(a for a in n.op.shape_attrs if a in attrs and has_symbol(attrs[a]))
            kernel = KERNELS[n.op]
            if any(o.rank == 0 for o in n.outputs):
                kernel = _scalar_safe(kernel, len(n.outputs))   # numpy ufuncs return scalars on 0-d
            self.steps.append((kernel, [slot[v] for v in n.inputs],
                               [slot[o] for o in n.outputs], attrs, symbolic, frees[i], n))

    def __call__(self, inputs):
        slots = [None] * self.nslots
        env = {}
        arrays, env = check_inputs([v for _, v in self.inputs], inputs)
        # kernels see read-only views of the caller's inputs and of the params: a kernel
        # that writes into its arguments (np.maximum(a, b, c) writes c) fails here, as a
        # RuntimeFailure naming the node, instead of silently changing the caller's data
        for (s, _), arr in zip(self.inputs, arrays):
            slots[s] = _read_only(arr)
        for s, data in self.params:
            slots[s] = _read_only(data)
        given = [slots[s] for s, _ in self.inputs] + [data for _, data in self.params]
        for kernel, ins, outs, attrs, symbolic, frees, node in self.steps:
            if symbolic:
                attrs = dict(attrs)
                for a in symbolic:
                    attrs[a] = resolve(attrs[a], env)
            try:
                result = kernel(*[slots[i] for i in ins], **attrs)
            except Exception as e:  # noqa: BLE001 - re-raised with the node named
                where = f" (from {node.source})" if node.source else ""
                shapes = ", ".join(fmt(slots[i].shape) for i in ins)
                raise RuntimeFailure(f"{node_line(node)}{where}: inputs {shapes}: "
                                     f"{type(e).__name__}: {e}") from e
            if len(outs) == 1:
                slots[outs[0]] = result
            else:
                for o, r in zip(outs, result):
                    slots[o] = r
            for f in frees:
                slots[f] = None
        return [_owned(slots[s], given) for s in self.outputs]


def _read_only(arr):
    view = arr.view()
    view.flags.writeable = False
    return view


def _owned(arr, given):
    """Outputs are the caller's to modify: copy read-only results (broadcast
    views) and any that share memory with an input or a param."""
    if not arr.flags.writeable or any(np.may_share_memory(arr, g) for g in given):
        return np.array(arr)
    return arr


def check_inputs(values, inputs):
    """Check arrays against the graph inputs' dtypes and (symbolic) shapes.
    Returns the arrays and the symbol bindings; raises IRTypeError."""
    if len(inputs) != len(values):
        raise IRTypeError(f"graph takes {len(values)} inputs "
                          f"({', '.join(v.name for v in values)}), got {len(inputs)}")
    env, arrays = {}, []
    for v, arr in zip(values, inputs):
        arr = np.asarray(arr)
        if arr.dtype != np_dtype(v.dtype):
            raise IRTypeError(f"input {v.name!r} must be {v.dtype}, got {arr.dtype}")
        err = bind(v.shape, arr.shape, env)
        if err:
            raise IRTypeError(f"input {v.name!r}: {err}")
        arrays.append(arr)
    for v, arr in zip(values, arrays):      # derived dims ("4*batch") bound by later inputs
        err = check_bound(v.shape, arr.shape, env)
        if err:
            raise IRTypeError(f"input {v.name!r}: {err}")
    return arrays, env


def _scalar_safe(kernel, nout):
    if nout == 1:
        return lambda *a, **k: np.asarray(kernel(*a, **k))
    return lambda *a, **k: tuple(np.asarray(r) for r in kernel(*a, **k))


def plan_for(graph):
    plan = graph.__dict__.get("_numpy_plan")
    if plan is None or plan[0] != _fingerprint(graph):
        plan = (_fingerprint(graph), Plan(graph))
        graph.__dict__["_numpy_plan"] = plan
    return plan[1]


def _fingerprint(graph):
    # cheap staleness check: the Graph mutation API bumps `version`; passes that
    # rebuild node lists or swap param arrays change the rest
    return (getattr(graph, "version", 0), len(graph.nodes), id(graph.nodes[-1]) if graph.nodes else 0,
            tuple(id(o) for o in graph.outputs), tuple(id(p.data) for p in graph.params.values()))


def normalize_inputs(graph, inputs):
    """Accept a dict by input name or a sequence in graph-input order."""
    if isinstance(inputs, dict):
        names = [v.name for v in graph.inputs]
        unknown = set(inputs) - set(names)
        if unknown:
            raise IRTypeError(f"unknown input(s) {sorted(unknown)}; graph inputs are {names}")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise IRTypeError(f"missing input(s) {missing}")
        return [inputs[n] for n in names]
    if isinstance(inputs, np.ndarray):
        return [inputs]
    return list(inputs)
