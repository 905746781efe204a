"""The numpy reference runtime: an interpreter over the kernel table.

`run(graph, inputs)` compiles the graph once into a plan cached on the graph:
one generated Python function that calls each node's kernel (attrs bound in
advance) on local variables and deletes each value after its last use, so no
per-node dispatch work remains at run time. Composite ops without a
kernel are expanded through their `decompose` rule at plan time. Every
failure names the node and its text line. Returned arrays never alias the
inputs or params, so callers may update them in place; kernels see read-only
views of both, so no kernel can change the caller's arrays or the params.
"""
import functools
import math

import numpy as np

from irtool.errors import IRTypeError, RuntimeFailure
from irtool.ir.dtypes import np_dtype
from irtool.ir.shapes import bind, check_bound, fmt, has_symbol, resolve
from irtool.ir.ops.reduce import MATMUL, REDUCE_SUM
from irtool.ir.ops.shape_ops import TRANSPOSE
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
        self.input_values = list(graph.inputs)
        # steps: (node named on failure, kernel, input values, output values, attrs)
        self.steps = _steps(graph)
        # params never change under a plan (the fingerprint holds their ids): read-only views once
        param_slots = [slot[p.value] for p in graph.params.values()]
        self.param_views = [_read_only(p.data) for p in graph.params.values()]
        outputs = [slot[v] for v in graph.outputs]
        keep = set(outputs) | set(param_slots) | {slot[v] for v in graph.inputs}
        last_use = {}
        for i, (_, _, ins, outs, _) in enumerate(self.steps):
            for v in ins:
                last_use[slot[v]] = i
            for o in outs:                      # dead outputs go right after their step
                last_use.setdefault(slot[o], i)
        frees = [[] for _ in self.steps]
        for s, i in last_use.items():
            if s not in keep:
                frees[i].append(s)
        self._slot = slot
        self._run, self._code, self._step_of_line = self._compile(graph, slot, param_slots, outputs, frees)

    def _compile(self, graph, slot, param_slots, outputs, frees):
        """Generate one Python function running every kernel in order on local
        variables (the torch.fx way): no per-node dispatch, dict or list work."""
        def var(s):
            return f"v{s}"
        names = {}
        lines = ["def run(inputs, params, env):"]
        if graph.inputs:
            lines.append(f"    {', '.join(var(slot[v]) for v in graph.inputs)}, = inputs")
        if param_slots:
            lines.append(f"    {', '.join(map(var, param_slots))}, = params")
        step_of_line = {}
        for i, (node, kernel, ins, outs, attrs) in enumerate(self.steps):
            if any(o.rank == 0 for o in outs):
                kernel = _scalar_safe(kernel, len(outs))   # numpy ufuncs return scalars on 0-d
            symbolic = tuple(a for a in node.op.shape_attrs if a in attrs and has_symbol(attrs[a]))
            args = [var(slot[v]) for v in ins]
            if symbolic:
                names[f"r{i}"] = _resolver(attrs, symbolic)
                args.append(f"**r{i}(env)")
            elif attrs:
                kernel = functools.partial(kernel, **attrs)
            names[f"k{i}"] = kernel
            lhs = var(slot[outs[0]]) if len(outs) == 1 else ", ".join(var(slot[o]) for o in outs) + ","
            step_of_line[len(lines) + 1] = i
            lines.append(f"    {lhs} = k{i}({', '.join(args)})")
            if frees[i]:
                lines.append(f"    del {', '.join(map(var, frees[i]))}")
        lines.append(f"    return [{', '.join(map(var, outputs))}]")
        code = compile("\n".join(lines), f"<irtool plan {graph.name!r}>", "exec")   # repr: any name is a valid filename
        namespace = dict(names)
        exec(code, namespace)                   # noqa: S102 - our own generated source
        run = namespace["run"]
        return run, run.__code__, step_of_line

    def __call__(self, inputs):
        arrays, env = check_inputs(self.input_values, inputs)
        # kernels see read-only views of the caller's inputs and of the params: a kernel
        # that writes into its arguments (np.maximum(a, b, c) writes c) fails here, as a
        # RuntimeFailure naming the node, instead of silently changing the caller's data
        views = [_read_only(a) for a in arrays]
        try:
            results = self._run(views, self.param_views, env)
        except IRTypeError:
            raise                               # a shape attr's symbol no input binds: the graph's fault
        except Exception as e:  # noqa: BLE001 - re-raised with the node named
            raise self._failure(e) from e
        given = None
        for i, arr in enumerate(results):
            if arr.flags.owndata and arr.flags.writeable:
                continue                        # a kernel's fresh array: it aliases nothing given
            if given is None:
                given = views + self.param_views
            results[i] = _owned(arr, given)
        return results

    def _failure(self, e):
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code is not self._code:
            tb = tb.tb_next
        if tb is None or tb.tb_lineno not in self._step_of_line:
            return RuntimeFailure(f"numpy runtime: {type(e).__name__}: {e}")
        node = self.steps[self._step_of_line[tb.tb_lineno]][0]
        local = tb.tb_frame.f_locals
        where = f" (from {node.source})" if node.source else ""
        shapes = ", ".join(fmt(np.shape(local[f"v{self._slot[v]}"])) if f"v{self._slot[v]}" in local else "?"
                           for v in node.inputs)
        return RuntimeFailure(f"{node_line(node)}{where}: inputs {shapes}: {type(e).__name__}: {e}")


def _steps(graph):
    """One step per node, except around matmul, where BLAS can do the work of
    the nodes that follow in the layout they need: matmul -> reduce_sum over
    all batch axes (a weight gradient: the batched products summed) is one
    matmul over the batch-concatenated operands, and a transpose of the last
    two axes of a product is the product of the transposed operands, which
    leaves the result C-contiguous for the elementwise ops after it (an
    optimizer step on a transposed gradient otherwise runs at strided speed)."""
    outputs = {id(v) for v in graph.outputs}
    absorbed, steps = set(), []
    for n in graph.nodes:
        if n in absorbed:
            continue
        if n.op is not MATMUL or min(v.rank for v in n.inputs) < 2:
            steps.append((n, KERNELS[n.op], n.inputs, n.outputs, dict(n.attrs)))
            continue
        last, summed, transposed = n, None, False
        r = _summing_consumer(n, outputs)
        if r is not None:
            absorbed.add(r)
            last, summed = r, r.attrs["axes"]
        t = _transposing_consumer(last, outputs)
        if t is not None:
            absorbed.add(t)
            last, transposed = t, True
        if last is n:
            steps.append((n, KERNELS[n.op], n.inputs, n.outputs, dict(n.attrs)))
            continue
        kernel = functools.partial(_matmul_then, matmul=KERNELS[MATMUL], reduce_sum=KERNELS[REDUCE_SUM],
                                   axes=summed, transpose=transposed)
        steps.append((n, kernel, n.inputs, last.outputs, {}))
    return steps


def _only_use(v, graph_outputs):
    if len(v.uses) != 1 or id(v) in graph_outputs:
        return None
    return v.uses[0][0]


def _summing_consumer(n, graph_outputs):
    """The reduce_sum node summing matmul node n over all its batch axes, if
    that is n's only use."""
    out = n.outputs[0]
    r = _only_use(out, graph_outputs)
    if r is None or r.op is not REDUCE_SUM or n.inputs[0].rank != n.inputs[1].rank or out.rank < 3:
        return None
    axes = r.attrs.get("axes")
    if r.attrs.get("keepdims", False) or axes is None:
        return None
    return r if sorted(a % out.rank for a in axes) == list(range(out.rank - 2)) else None


def _transposing_consumer(n, graph_outputs):
    """The transpose node swapping the last two axes of n's output, if that is
    its only use."""
    out = n.outputs[0]
    t = _only_use(out, graph_outputs)
    if t is None or t.op is not TRANSPOSE or out.rank < 2:
        return None
    perm = t.attrs.get("perm")
    swap = tuple(range(out.rank - 2)) + (out.rank - 1, out.rank - 2)
    return t if (perm is None and out.rank == 2) or (perm is not None and tuple(perm) == swap) else None


def _matmul_then(a, b, matmul, reduce_sum, axes, transpose):
    """matmul(a, b), summed over the batch axes when axes is given, then with
    its last two axes swapped when transpose: sum_i a[i] @ b[i] is
    (K, B*M) @ (B*M, N), the batch concatenated along the contraction (views
    when a is a transposed contiguous array, as in weight gradients), and
    (a @ b)^T is b^T @ a^T."""
    if axes is None:
        return matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2)) if transpose else matmul(a, b)
    if a.shape[:-2] != b.shape[:-2] or a.dtype not in _BLAS or b.dtype != a.dtype:
        y = reduce_sum(matmul(a, b), axes=axes, keepdims=False)
        return np.ascontiguousarray(np.swapaxes(y, -1, -2)) if transpose else y
    k, m = a.shape[-2:]
    rows = math.prod(a.shape[:-2]) * m
    a2 = np.moveaxis(a, -2, 0).reshape(k, rows)
    b2 = b.reshape(rows, b.shape[-1])
    return np.matmul(b2.T, a2.T) if transpose else np.matmul(a2, b2)


_BLAS = (np.dtype(np.float32), np.dtype(np.float64))


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


def _resolver(attrs, symbolic):
    """attrs with the symbolic shape attrs resolved against a call's bindings."""
    def resolved(env):
        out = dict(attrs)
        for a in symbolic:
            out[a] = resolve(out[a], env)
        return out
    return resolved


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
