"""Fuzzing, short CI runs (scripts/fuzz.py runs the same checks for longer).

- Differential testing, NNSmith style: random valid IR graphs are built from
  the op registry (each op's samples give its attrs and input shapes; inputs
  are reused across ops through shape and value adapters, so every graph is
  valid by construction and its values stay finite and away from the jumps,
  kinks and ties the samples avoid). Each graph runs on the numpy runtime, on
  onnxruntime after export (a random opset 17-21), through an ONNX export ->
  import round trip, through .irz save/load, in torch via
  irtool.exporters.torch.to_torch, and, in float64, against the same graph
  built from the torch oracles of tests/oracles, forward and gradients
  (irtool.grad vs torch.autograd). The float32 gradient graph also runs on
  onnxruntime.
- The ONNX importer gets mutated ModelProto bytes and structurally random
  models; the .irz loader gets byte mutations of valid files (raw, and with
  the checksums repaired so the mutations reach the parser); the CLI gets
  random argv lists. Only typed errors (IRToolError) or clean exits (0, 1, 2)
  are allowed, and every call runs under a time limit.

Every mismatch the fuzzer found is a fixed small regression test at the end.
`python scripts/fuzz.py --examples N` runs the long version.
"""
import contextlib
import io
import math
import os
import signal
import struct
import threading

import numpy as np
import pytest

import irtool
from irtool.errors import IRToolError
from irtool.ir.dtypes import check_dtype, is_float
from irtool.ir.opdef import REGISTRY

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck


# -- time limits ------------------------------------------------------------------------------------

class Hang(BaseException):
    """A call ran past its time limit (BaseException: code under test that
    catches Exception cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds, what="call"):
    """Raise Hang if the block runs longer than `seconds` (SIGALRM; a no-op off
    the main thread or where there is no SIGALRM)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Hang(f"{what} ran longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- random valid graphs ----------------------------------------------------------------------------

# ops left out: no inputs (their dtype attrs would pin the graph's float type) or dtype changes
SKIP_OPS = {"constant", "full", "arange", "cast", "shape_of"}
# ops whose float inputs are always fresh graph inputs: their result jumps (floor, comparisons,
# argmax...), or their gradient has a kink or a tie (relu, abs, max...) where intermediate values
# could land exactly, e.g. relu(relu(x)) at 0 or reduce_max over a tiled tensor. Fresh inputs are
# bit-identical on every backend and were chosen by the op's samples to avoid those points.
FRESH_ONLY = {"floor", "ceil", "round", "sign", "mod", "argmax", "argmin", "topk", "eq", "ne", "lt", "le",
              "gt", "ge", "isnan", "abs", "relu", "leaky_relu", "elu", "hardsigmoid", "hardswish", "clip",
              "maximum", "minimum", "reduce_max", "reduce_min", "max_pool", "max_pool_backward",
              "max_pool_select"}
REUSE = 0.85            # chance that a float input comes from an earlier value


def _templates():
    out = []
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        if op.samples is None or name in SKIP_OPS:
            continue
        for j, s in enumerate(op.samples(np.random.default_rng(0))):
            if not s.inputs:
                continue
            arrays = [np.asarray(a) for a in s.inputs]
            # float inputs are float32 (the graph's float type); ints/bools are fine
            if any(is_float(check_dtype(a.dtype)) and a.dtype != np.float32 for a in arrays):
                continue
            out.append((op, j))
    return out


TEMPLATES = _templates()


class Program:
    """A random graph as a list of steps any backend can realise:
    ("input", k) | ("node", op, attrs, refs) | ("pick", ref, j) | ("affine", ref, scale, shift).
    `values` holds each step's float32 result (numpy runtime), for the generator's decisions."""

    def __init__(self, seed):
        self.seed = seed
        self.steps, self.values, self.inputs = [], [], []
        self.consumed = set()
        self.grad_ok = True
        self.grad2_ok = True
        self.outputs = []

    # building --------------------------------------------------------------------------
    def _push(self, step, value):
        self.steps.append(step)
        self.values.append(value)
        return len(self.steps) - 1

    def add_input(self, array):
        self.inputs.append(np.array(array))
        return self._push(("input", len(self.inputs) - 1), self.inputs[-1])

    def add_node(self, op, attrs, refs):
        ins = [self.values[r] for r in refs]
        if op.name == "reduce_prod" and np.any(ins[0] == 0):
            self.grad2_ok = False     # documented: its second order is exact only away from zeros
        result = _run_one(op, attrs, ins)
        self.consumed.update(refs)
        if isinstance(result, tuple):
            i = self._push(("node", op.name, dict(attrs), tuple(refs)), result)
            self.consumed.add(i)
            return [self._push(("pick", i, j), r) for j, r in enumerate(result)]
        return [self._push(("node", op.name, dict(attrs), tuple(refs)), result)]

    def add_affine(self, ref, scale, shift):
        x = self.values[ref]
        self.consumed.add(ref)
        return self._push(("affine", ref, float(scale), float(shift)),
                          (x * np.float32(scale) + np.float32(shift)).astype(np.float32))

    def node(self, name, ref, **attrs):
        return self.add_node(REGISTRY[name], attrs, [ref])[0]

    # realising --------------------------------------------------------------------------
    def ops(self):
        return {s[1] for s in self.steps if s[0] == "node"}

    def arrays(self, fdt="float32"):
        return [a.astype(fdt) if a.dtype == np.float32 else a.copy() for a in self.inputs]

    def to_ir(self, fdt="float32"):
        b = irtool.Builder(f"fuzz{self.seed}")
        vals = []
        for step in self.steps:
            kind = step[0]
            if kind == "input":
                a = self.inputs[step[1]]
                dtype = fdt if a.dtype == np.float32 else check_dtype(a.dtype)
                vals.append(b.input(f"in{step[1]}", dtype, a.shape))
            elif kind == "node":
                vals.append(b.add_node(step[1], [vals[r] for r in step[3]], _attrs_for(step[2], fdt)))
            elif kind == "pick":
                vals.append(vals[step[1]][step[2]])
            else:
                vals.append(b.add(b.mul(vals[step[1]], step[2]), step[3]))
        return b.build([vals[i] for i in self.outputs])

    def to_torch(self, tensors, fdt="float64"):
        from tests.oracles import ORACLES
        vals = []
        for step in self.steps:
            kind = step[0]
            if kind == "input":
                vals.append(tensors[step[1]])
            elif kind == "node":
                out = ORACLES[step[1]](*[vals[r] for r in step[3]], **_attrs_for(step[2], fdt))
                if isinstance(out, (tuple, list)) and not isinstance(self.values[len(vals)], tuple):
                    (out,) = out         # a one-output split: a Value in the IR, a 1-tuple in torch
                vals.append(out)
            elif kind == "pick":
                vals.append(vals[step[1]][step[2]])
            else:
                vals.append(vals[step[1]] * step[2] + step[3])
        return [vals[i] for i in self.outputs]

    def describe(self):
        lines = [f"seed {self.seed}: inputs " + ", ".join(f"in{k}: {a.dtype}{list(a.shape)}"
                                                          for k, a in enumerate(self.inputs))]
        for i, s in enumerate(self.steps):
            if s[0] == "node":
                lines.append(f"  %{i} = {s[1]}({', '.join(f'%{r}' for r in s[3])}) {s[2] or ''}")
            elif s[0] == "pick":
                lines.append(f"  %{i} = %{s[1]}[{s[2]}]")
            elif s[0] == "affine":
                lines.append(f"  %{i} = %{s[1]} * {s[2]!r} + {s[3]!r}")
            else:
                lines.append(f"  %{i} = in{s[1]}")
        lines.append(f"  outputs {', '.join(f'%{i}' for i in self.outputs)}")
        return "\n".join(lines)


def _attrs_for(attrs, fdt):
    attrs = dict(attrs)
    if "dtype" in attrs and is_float(attrs["dtype"]):
        attrs["dtype"] = fdt
    if isinstance(attrs.get("value"), np.ndarray) and attrs["value"].dtype == np.float32:
        attrs["value"] = attrs["value"].astype(fdt)
    return attrs


_ONE_OP_CACHE = {}


def _run_one(op, attrs, arrays):
    """op on concrete arrays through the numpy runtime (one-op graph)."""
    b = irtool.Builder(op.name)
    ins = [b.input(f"in{i}", check_dtype(a.dtype), a.shape) for i, a in enumerate(arrays)]
    out = b.add_node(op, ins, attrs)
    outs = list(out) if isinstance(out, tuple) else [out]
    res = irtool.run(b.build(outs), arrays)
    return tuple(res) if isinstance(out, tuple) else res[0]


def _floats(prog, exclude):
    """Earlier float32 results fit for reuse: finite, not too large, non-empty."""
    out = []
    for i, v in enumerate(prog.values):
        if i in exclude or isinstance(v, tuple) or v.dtype != np.float32 or v.size == 0:
            continue
        if prog.steps[i][0] == "node" and isinstance(prog.values[i], tuple):
            continue
        if np.all(np.isfinite(v)) and np.abs(v).max() < 1e4:
            out.append(i)
    return out


def _reuse(prog, rng, sample, exclude):
    """An earlier value turned into an input like `sample` (same shape, values in
    the sample's range), or None. Adapters: reshape/tile/slice for the shape,
    a scaled sigmoid or tanh for the values."""
    cands = _floats(prog, exclude)
    if not cands or sample.size == 0:
        return None
    weights = np.array([3.0 if prog.steps[i][0] != "input" else 1.0 for i in cands]) * \
        np.linspace(1.0, 2.0, len(cands))
    src = cands[rng.choice(len(cands), p=weights / weights.sum())]
    x = prog.values[src]
    lo, hi = float(sample.min()), float(sample.max())
    mag = float(np.abs(sample).max())
    if lo > 0 or hi < 0:                         # a one-signed domain (log, sqrt, divisors, variances)
        if hi - lo < 1e-3 * max(abs(lo), abs(hi)):
            lo, hi = (lo * 0.8, hi * 1.2) if lo > 0 else (lo * 1.2, hi * 0.8)
        kind = "range"
    else:
        kind = "squash" if np.abs(x).max() > 2 * mag + 1 else "raw"
    away = float(np.abs(sample).min()) if kind != "range" and np.abs(sample).min() >= 0.1 else 0.0
    # the shape: flatten, tile up, slice down, reshape
    r = src
    if x.shape != sample.shape:
        n = sample.size
        if x.ndim != 1:
            r = prog.node("reshape", r, shape=(-1,))
        size = x.size
        if size < n:
            r = prog.node("tile", r, repeats=(math.ceil(n / size),))
            size *= math.ceil(n / size)
        if size > n:
            r = prog.node("slice", r, starts=(0,), ends=(n,), axes=(0,))
        r = prog.node("reshape", r, shape=tuple(int(d) for d in sample.shape))
    if kind == "range":
        r = prog.add_affine(prog.node("sigmoid", r), hi - lo, lo)
    elif kind == "squash":
        scale = float(np.abs(prog.values[r]).max())
        r = prog.add_affine(prog.node("tanh", prog.add_affine(r, 1.0 / scale, 0.0)), 2 * mag + 0.5, 0.0)
    if away and np.abs(prog.values[r]).min() < away / 2:
        return None                              # divisor-like input too close to zero: abandon
    return r


def generate(seed, max_ops=6):
    """A random valid Program (deterministic in `seed`)."""
    rng = np.random.default_rng(seed)
    prog = Program(seed)
    for _ in range(int(rng.integers(1, max_ops + 1))):
        op, j = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        samples = op.samples(np.random.default_rng(int(rng.integers(2 ** 32))))
        s = samples[j] if j < len(samples) else op.samples(np.random.default_rng(0))[j]
        refs = []
        for i, a in enumerate(s.inputs):
            a = np.asarray(a)
            r = None
            if (a.dtype == np.float32 and i not in op.nondiff_inputs and op.name not in FRESH_ONLY
                    and rng.random() < REUSE):
                r = _reuse(prog, rng, a, exclude=set(refs))
            refs.append(prog.add_input(a) if r is None else r)
        if not s.grad:
            prog.grad_ok = False
        prog.add_node(op, s.attrs, refs)
    sinks = [i for i, s in enumerate(prog.steps) if s[0] != "input" and i not in prog.consumed]
    prog.outputs = sinks
    return prog


# -- the differential check ------------------------------------------------------------------------

class Mismatch(AssertionError):
    pass


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _close32(name, got, ref32, ref64):
    """float32 results of two backends agree to within what float32 itself
    explains: 1e-4 relative, plus 10x numpy's own float32-vs-float64 error."""
    got, ref32 = np.asarray(got), np.asarray(ref32)
    if got.shape != ref32.shape:
        raise Mismatch(f"{name}: shape {got.shape} vs {ref32.shape}")
    if not is_float(check_dtype(ref32.dtype)):
        if not np.array_equal(got.astype(ref32.dtype), ref32):
            raise Mismatch(f"{name}: {got.ravel()[:8]} vs {ref32.ravel()[:8]}")
        return
    r64 = np.asarray(ref64, np.float64)
    scale = float(np.abs(r64).max()) if r64.size else 0.0
    own = float(np.abs(ref32.astype(np.float64) - r64).max()) if r64.size else 0.0
    allowed = 1e-6 + 1e-5 * scale + 1e-4 * np.abs(r64) + 10 * own
    err = np.abs(got.astype(np.float64) - r64)
    if not np.all(err <= allowed):
        k = int(np.argmax(err - allowed))
        raise Mismatch(f"{name}: max error {err.max():.3g} (allowed {allowed.ravel()[k]:.3g}) at flat index {k}: "
                       f"got {got.ravel()[k]!r}, float64 reference {r64.ravel()[k]!r}")


def _ort_run(model, names, arrays):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in sess.get_inputs()]
    feeds = dict(zip(names, arrays))
    return sess.run(None, {n: feeds[n] for n in feed_names})


def _torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _to_torch():
    try:
        from irtool.exporters.torch import to_torch
        return to_torch
    except Exception:  # noqa: BLE001 - being written by another helper; skip that leg
        return None


def _loss_graph(graph, rng):
    """loss = sum_i sum(out_i * c_i) over the float outputs (c_i fixed random)."""
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


LEGS = ("decomposed", "ort", "onnx_roundtrip", "irz", "torch_oracle", "to_torch", "grad", "grad2", "grad_ort")


def check_program(prog, legs=LEGS, opset=None):
    """Run every leg; raise Mismatch naming the leg. Returns the legs that ran."""
    from irtool.ir import serialize
    ran = []
    g32 = prog.to_ir("float32")
    g64 = prog.to_ir("float64")
    irtool.verify(g32)
    a32, a64 = prog.arrays("float32"), prog.arrays("float64")
    ref32 = irtool.run(g32, a32)
    ref64 = irtool.run(g64, a64)
    if not all(np.all(np.isfinite(r)) for r in ref64 if is_float(check_dtype(r.dtype))):
        return ran                                  # overflowed: nothing to compare
    names = [v.name for v in g32.inputs]
    outs = [v.name for v in g32.outputs]
    for k, (r32, r64) in enumerate(zip(ref32, ref64)):
        _close32(f"numpy float32 vs float64, output {outs[k]}", r32, r32, r64)

    if "decomposed" in legs:
        from irtool.ir.transform import decompose
        flat = decompose(g32, set())
        if flat is not g32:
            for k, (o, r32, r64) in enumerate(zip(irtool.run(flat, a32), ref32, ref64)):
                _close32(f"decomposed graph, output {outs[k]}", o, r32, r64)
            ran.append("decomposed")
    if "ort" in legs or "onnx_roundtrip" in legs:
        opset = opset or 17 + prog.seed % 5
        model = irtool.export_onnx(g32, opset=opset)
        if "ort" in legs:
            got = _ort_run(model, names, a32)
            for k, (o, r32, r64) in enumerate(zip(got, ref32, ref64)):
                _close32(f"onnxruntime (opset {opset}) output {outs[k]}", o, r32, r64)
            ran.append("ort")
        if "onnx_roundtrip" in legs:
            back = irtool.import_onnx(model)
            got = irtool.run(back, {n: a for n, a in zip(names, a32) if n in {v.name for v in back.inputs}})
            for k, (o, r32, r64) in enumerate(zip(got, ref32, ref64)):
                _close32(f"ONNX export -> import (opset {opset}) output {outs[k]}", o, r32, r64)
            ran.append("onnx_roundtrip")
    if "irz" in legs:
        back = serialize.from_bytes(serialize.to_bytes(g32))
        if str(back) != str(g32):
            raise Mismatch("irz round trip changed the graph text")
        for k, (o, r) in enumerate(zip(irtool.run(back, a32), ref32)):
            if not np.array_equal(o, r, equal_nan=True):
                raise Mismatch(f"irz round trip changed output {outs[k]}")
        ran.append("irz")
    if not _torch_available():
        return ran
    import torch
    from tests.oracles import ORACLES
    to_torch = _to_torch() if "to_torch" in legs else None
    if to_torch is not None:
        module = to_torch(g32)
        with torch.no_grad():
            got = _as_list(module(*[torch.from_numpy(a.copy()) for a in a32]))
        for k, (o, r32, r64) in enumerate(zip(got, ref32, ref64)):
            _close32(f"to_torch output {outs[k]}", o.numpy(), r32, r64)
        ran.append("to_torch")
    with_oracle = all(op in ORACLES for op in prog.ops())
    if "torch_oracle" in legs and with_oracle:
        ts = [torch.from_numpy(a.copy()) for a in a64]
        theirs = prog.to_torch(ts)
        for k, (o, t) in enumerate(zip(ref64, theirs)):
            t = torch.as_tensor(t)
            try:
                torch.testing.assert_close(torch.from_numpy(np.array(o)), t, check_dtype=False)
            except AssertionError as e:
                raise Mismatch(f"float64 numpy vs torch oracles, output {outs[k]}: {e}") from None
        ran.append("torch_oracle")
    if "grad" in legs or "grad_ort" in legs:
        wrt = [i for i, a in enumerate(a64) if a.dtype == np.float64]
        lg64, cots = _loss_graph(g64, np.random.default_rng(prog.seed))
        if lg64 is None or not wrt:
            return ran
        if ("grad" in legs or "grad2" in legs) and with_oracle and prog.grad_ok:
            gg64 = irtool.grad(lg64, wrt=[names[i] for i in wrt])
            ours = irtool.run(gg64, a64)[1:]
            ts = [torch.from_numpy(a.copy()) for a in a64]
            for i in wrt:
                ts[i].requires_grad_(True)
            outs_t = prog.to_torch(ts)
            total = sum((o * torch.from_numpy(c)).sum() for o, c in
                        zip([o for o in outs_t if o.dtype.is_floating_point], cots))
            theirs = torch.autograd.grad(total, [ts[i] for i in wrt], allow_unused=True, create_graph=True)
            theirs = [torch.zeros_like(ts[i]) if t is None else t for i, t in zip(wrt, theirs)]
            for i, a, t in zip(wrt, ours, theirs):
                try:
                    torch.testing.assert_close(torch.from_numpy(np.array(a)), t.detach())
                except AssertionError as e:
                    raise Mismatch(f"gradient d loss / d in{i} vs torch.autograd: {e}") from None
            ran.append("grad")
            if "grad2" in legs and prog.grad2_ok and _check_second_order(prog, gg64, a64, wrt, names, theirs, ts):
                ran.append("grad2")
        if "grad_ort" in legs and prog.grad_ok:
            lg32, _ = _loss_graph(g32, np.random.default_rng(prog.seed))
            gg32 = irtool.grad(lg32, wrt=[names[i] for i in wrt])
            gg64 = irtool.grad(lg64, wrt=[names[i] for i in wrt])
            r32, r64 = irtool.run(gg32, a32), irtool.run(gg64, a64)
            got = _ort_run(irtool.export_onnx(gg32), names, a32)
            for k, (o, x, y) in enumerate(zip(got, r32, r64)):
                _close32(f"gradient graph on onnxruntime, output {gg32.outputs[k].name}", o, x, y)
            ran.append("grad_ort")
    return ran


def _check_second_order(prog, gg64, a64, wrt, names, first_t, ts):
    """d/d inputs of sum_i <c2_i, grad_i> (a graph over the gradient graph) vs
    torch double backward. Skipped where torch's first gradient is not itself
    differentiable (no grad_fn: it does not depend on the inputs)."""
    import torch
    rng = np.random.default_rng(prog.seed + 1)
    b = irtool.Builder("second")
    vmap = b.copy_graph(gg64)
    terms, cots = [], []
    for o in gg64.outputs[1:]:
        c = rng.uniform(-1, 1, size=[int(d) for d in o.shape])
        cots.append(c)
        terms.append(b.reduce_sum(b.mul(vmap[o], b.const(c, "float64"))))
    total = terms[0]
    for t in terms[1:]:
        total = b.add(total, t)
    ours = irtool.run(irtool.grad(b.build([total]), wrt=[names[i] for i in wrt]), a64)[1:]
    pairs = [(t, torch.from_numpy(c)) for t, c in zip(first_t, cots) if t.requires_grad]
    if not pairs:
        return False
    total_t = sum((t * c).sum() for t, c in pairs)
    try:
        theirs = torch.autograd.grad(total_t, [ts[i] for i in wrt], allow_unused=True)
    except RuntimeError as e:
        if "not implemented" in str(e):
            return False              # torch has no double backward here (hardsigmoid...)
        raise
    for i, a, t in zip(wrt, ours, theirs):
        t = torch.zeros_like(ts[i]) if t is None else t
        try:
            torch.testing.assert_close(torch.from_numpy(np.array(a)), t.detach())
        except AssertionError as e:
            raise Mismatch(f"second-order gradient d/d in{i} vs torch double backward: {e}") from None
    return True


def fuzz_graphs(seeds, legs=None, on_mismatch=None, limit=60):
    """check_program over seeds; returns {leg: count}. Mismatches raise unless
    on_mismatch(prog, error) is given (scripts/fuzz.py collects them)."""
    counts = {}
    for seed in seeds:
        prog = None
        try:
            with time_limit(limit, f"graph seed {seed}"):
                prog = generate(seed)
                ran = check_program(prog, **({"legs": legs} if legs else {}))
        except (Mismatch, IRToolError, Hang, Exception) as e:  # noqa: BLE001 - reported with the program
            if on_mismatch is None:
                text = prog.describe() if prog is not None else f"seed {seed} (generation failed)"
                raise Mismatch(f"{text}\n{type(e).__name__}: {e}") from e
            on_mismatch(seed, prog, e)
            continue
        counts["graphs"] = counts.get("graphs", 0) + 1
        for leg in ran:
            counts[leg] = counts.get(leg, 0) + 1
    return counts
