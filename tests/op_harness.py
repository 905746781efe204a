"""Builds one-op graphs from an op's samples, for the generated op tests."""
import numpy as np

import irtool
from irtool.ir.dtypes import check_dtype, is_float


def single_op_graph(op, sample, cast64=False):
    """Graph with one input per sample array and the op's outputs as outputs.
    With cast64, float inputs become float64 (for gradient checks)."""
    b = irtool.Builder(op.name)
    ins, arrays = [], []
    for i, a in enumerate(sample.inputs):
        a = np.asarray(a)
        if cast64 and is_float(check_dtype(a.dtype)):
            a = a.astype(np.float64)
        arrays.append(a)
        ins.append(b.input(f"in{i}", check_dtype(a.dtype), a.shape))
    attrs = dict(sample.attrs)
    if cast64 and "dtype" in attrs and is_float(attrs["dtype"]) and op.name != "cast":
        attrs["dtype"] = "float64"
    if cast64 and isinstance(attrs.get("value"), np.ndarray) and attrs["value"].dtype == np.float32:
        attrs["value"] = attrs["value"].astype(np.float64)
    outs = b.add_node(op, ins, attrs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return b.build(list(outs)), arrays


def loss_graph(graph, rng):
    """Append loss = sum_i sum(out_i * c_i) over float outputs, with fixed random
    cotangents c_i; returns the new graph and the cotangents ((None, None)
    when no output is float)."""
    b = irtool.Builder(graph.name + "_loss")
    vmap = b.copy_graph(graph)
    terms, cots = [], []
    for o in graph.outputs:
        if not is_float(o.dtype):
            continue
        c = rng.uniform(-1, 1, size=[int(d) for d in o.shape]).astype(o.dtype)
        cots.append(c)
        terms.append(b.reduce_sum(b.mul(vmap[o], b.const(c, o.dtype))))
    if not terms:
        return None, None
    loss = terms[0]
    for t in terms[1:]:
        loss = b.add(loss, t)
    return b.build([loss]), cots


def finite_difference(graph, arrays, index, eps=1e-6):
    """Central differences of the scalar graph output w.r.t. arrays[index]."""
    x = arrays[index]
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        hi = float(irtool.run(graph, arrays)[0])
        flat[j] = old - eps
        lo = float(irtool.run(graph, arrays)[0])
        flat[j] = old
        gf[j] = (hi - lo) / (2 * eps)
    return g


def float_inputs(op, arrays):
    """Positions of the inputs gradients flow to: float, not declared non-differentiable."""
    return [i for i, a in enumerate(arrays)
            if is_float(check_dtype(np.asarray(a).dtype)) and i not in op.nondiff_inputs]


def op_cases():
    """pytest params (op, sample) for every sample of every registered op."""
    import pytest

    from irtool.ir.opdef import REGISTRY
    cases = []
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        if op.samples is None:
            continue
        for i, s in enumerate(op.samples(np.random.default_rng(0))):
            cases.append(pytest.param(op, s, id=f"{name}-{i}"))
    return cases


def grad_cases(cases):
    """The cases whose op and sample take gradients."""
    return [p for p in cases
            if p.values[0].differentiable and p.values[1].grad and float_inputs(p.values[0], p.values[1].inputs)]


def symbolic_shape_graph():
    """A graph whose shape attrs name the input's symbolic dims (reshape to
    (batch, -1), slice to seq, full, arange, shape_of): each backend must
    resolve them per call."""
    b = irtool.Builder("sym")
    x = b.input("x", "float32", ("batch", "seq", 4))
    flat = b.reshape(x, shape=("batch", -1))
    head = b.slice(x, starts=(0,), ends=("seq",), axes=(1,))
    ones = b.full(shape=("batch", "seq"), value=1.0, dtype="float32")
    pos = b.arange(start=0, stop="seq", step=1, dtype="int64")
    shp = b.shape_of(x)
    return b.build([flat, head, ones, pos, shp])
