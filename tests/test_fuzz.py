"""Fuzzing, short CI runs (scripts/fuzz.py runs the same checks for longer).

- Differential testing, NNSmith style: random valid IR graphs are built from
  the op registry (each op's samples give its attrs and input shapes; inputs
  are reused across ops through shape and value adapters, so every graph is
  valid by construction and its values stay finite and away from the jumps,
  kinks and ties the samples avoid). Each graph runs on the numpy runtime,
  decomposed into primitives, on onnxruntime after export (opset 17-21 by
  seed), through an ONNX export -> import round trip, through .irz save/load,
  in torch via irtool.exporters.torch.to_torch, and, in float64, against the
  same graph built from the torch oracles of tests/oracles: forward,
  gradients (irtool.grad vs torch.autograd) and second order (vs torch double
  backward). The float32 gradient graph also runs on onnxruntime.
- The ONNX importer gets mutated ModelProto bytes and structurally random
  one-node models (compared with onnxruntime where both accept them); the
  .irz loader gets byte mutations of valid files, raw and with the checksums
  repaired so the edits reach the parser; the CLI gets random argv lists and
  random well-formed commands. Only typed errors (IRToolError) or clean exits
  (0, 1, 2 and one line on stderr) are allowed; every call runs under a time
  limit.

Every mismatch the fuzzers found is a small fixed regression test at the end
(strict xfail while the bug is open); KNOWN_BUGS lets fuzz runs count those
instead of failing again. `python scripts/fuzz.py --examples N` runs long.
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
from irtool.errors import FileFormatError, IRToolError
from irtool.ir.dtypes import check_dtype, is_float
from irtool.ir.opdef import REGISTRY
from tests.op_harness import loss_graph

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
# (op, input) pairs that are fresh too: normalizing a nearly constant group (a tiled scalar)
# amplifies float32 rounding by 1/sqrt(eps), so two correct backends differ visibly
FRESH_INPUTS = {("layer_norm", 0), ("group_norm", 0)}
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
    if np.all(sample == np.round(sample)):
        return None                              # integer-valued floats (exponents of negative bases...)
    lo, hi = float(sample.min()), float(sample.max())
    span = hi - lo
    if lo > 0 or hi < 0:                         # a one-signed domain (log, sqrt, divisors, variances)
        if span < 1e-3 * max(abs(lo), abs(hi)):
            lo, hi = (lo * 0.8, hi * 1.2) if lo > 0 else (lo * 1.2, hi * 0.8)
        kind = "range"
    elif x.min() < lo - 0.05 * span or x.max() > hi + 0.05 * span:
        kind = "range"                           # outside what the samples exercise: map into it
    else:
        kind = "raw"
    away = float(np.abs(sample).min()) if kind != "range" or lo < 0 < hi else 0.0
    away = away if away >= 0.1 else 0.0          # e.g. mod's divisor: |y| in [0.2, 2], either sign
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
        if rng.random() < 0.5:
            r = prog.add_affine(prog.node("sigmoid", r), hi - lo, lo)
        else:
            scale = max(float(np.abs(prog.values[r]).max()), 1e-3)
            r = prog.add_affine(prog.node("tanh", prog.add_affine(r, 1.0 / scale, 0.0)), (hi - lo) / 2,
                                (hi + lo) / 2)
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
                    and (op.name, i) not in FRESH_INPUTS and rng.random() < REUSE):
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


def _noise(graph, arrays, seed):
    """Per output, how far float32 rounding can move it: the largest change when
    every float input is nudged by about one ulp (two random nudges). Sums of
    many terms that cancel, normalizations... get a tolerance to match."""
    rng = np.random.default_rng(seed)
    base = irtool.run(graph, arrays)
    worst = [0.0] * len(base)
    for _ in range(2):
        nudged = [(a * (1 + rng.choice([-1.0, 1.0], a.shape) * 2.0 ** -22)).astype(a.dtype)
                  if a.dtype == np.float32 else a for a in arrays]
        for i, (x, y) in enumerate(zip(irtool.run(graph, nudged), base)):
            if is_float(check_dtype(y.dtype)) and y.size:
                d = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                worst[i] = max(worst[i], float(d.max()) if np.all(np.isfinite(d)) else np.inf)
    return worst


def _close32(name, got, ref32, ref64, noise=0.0):
    """float32 results of two backends agree to within what float32 itself
    explains: torch.testing's float32 atol (1e-5) and 1e-4 relative (backends
    sum in different orders: a gradient that reduces 720 terms differs by 2e-4
    relative on onnxruntime, seed 766), plus 10x numpy's own float32-vs-float64
    error and 10x the output's sensitivity to one-ulp input changes (`noise`)."""
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
    allowed = 1e-5 + 1e-5 * scale + 1e-4 * np.abs(r64) + 10 * own + 10 * noise
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
    noise = _noise(g32, a32, prog.seed)
    for k, (r32, r64) in enumerate(zip(ref32, ref64)):
        _close32(f"numpy float32 vs float64, output {outs[k]}", r32, r32, r64, noise[k])

    if "decomposed" in legs:
        from irtool.ir.transform import decompose
        flat = decompose(g32, set())
        if flat is not g32:
            for k, (o, r32, r64) in enumerate(zip(irtool.run(flat, a32), ref32, ref64)):
                _close32(f"decomposed graph, output {outs[k]}", o, r32, r64, noise[k])
            ran.append("decomposed")
    if "ort" in legs or "onnx_roundtrip" in legs:
        opset = opset or 17 + prog.seed % 5
        model = irtool.export_onnx(g32, opset=opset)
        if "ort" in legs:
            got = _ort_run(model, names, a32)
            for k, (o, r32, r64) in enumerate(zip(got, ref32, ref64)):
                _close32(f"onnxruntime (opset {opset}) output {outs[k]}", o, r32, r64, noise[k])
            ran.append("ort")
        if "onnx_roundtrip" in legs:
            back = irtool.import_onnx(model)
            got = irtool.run(back, {n: a for n, a in zip(names, a32) if n in {v.name for v in back.inputs}})
            for k, (o, r32, r64) in enumerate(zip(got, ref32, ref64)):
                _close32(f"ONNX export -> import (opset {opset}) output {outs[k]}", o, r32, r64, noise[k])
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
            _close32(f"to_torch output {outs[k]}", o.numpy(), r32, r64, noise[k])
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
        lg64, cots = loss_graph(g64, np.random.default_rng(prog.seed))
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
            lg32, _ = loss_graph(g32, np.random.default_rng(prog.seed))
            gg32 = irtool.grad(lg32, wrt=[names[i] for i in wrt])
            gg64 = irtool.grad(lg64, wrt=[names[i] for i in wrt])
            r32, r64 = irtool.run(gg32, a32), irtool.run(gg64, a64)
            got = _ort_run(irtool.export_onnx(gg32), names, a32)
            gnoise = _noise(gg32, a32, prog.seed)
            for k, (o, x, y) in enumerate(zip(got, r32, r64)):
                _close32(f"gradient graph on onnxruntime, output {gg32.outputs[k].name}", o, x, y, gnoise[k])
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
            if _known(e):
                counts["known bug"] = counts.get("known bug", 0) + 1
                continue
            if on_mismatch is None:
                text = prog.describe() if prog is not None else f"seed {seed} (generation failed)"
                raise Mismatch(f"{text}\n{type(e).__name__}: {e}") from e
            on_mismatch(seed, prog, e)
            continue
        counts["graphs"] = counts.get("graphs", 0) + 1
        for leg in ran:
            counts[leg] = counts.get(leg, 0) + 1
    return counts


# -- the ONNX importer ------------------------------------------------------------------------------

def _onnx_seed_models():
    """Valid models to mutate: exported random graphs plus hand-built ones with
    control flow, shape arithmetic and attributes the exporter never writes."""
    from onnx import TensorProto, helper, numpy_helper
    out = []
    for seed in (3, 11, 20, 42):
        prog = generate(seed)
        out.append(irtool.export_onnx(prog.to_ir("float32"), opset=17 + seed % 5).SerializeToString())
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
             helper.make_node("If", ["cond"], ["i"], then_branch=then, else_branch=other),
             helper.make_node("Softmax", ["r"], ["sm"], axis=-1),
             helper.make_node("Slice", ["sm", "st", "en", "ax"], ["sl"]),
             helper.make_node("Add", ["sl", "sl"], ["y"])]
    inits = [shape, numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "st"),
             numpy_helper.from_array(np.array([9], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    g = helper.make_graph(nodes, "hand", [x], [y], inits)
    out.append(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
                           helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], ceil_mode=1),
                           helper.make_node("ReduceMean", ["p"], ["y"], keepdims=0)], "conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7])], [y], [w])
    out.append(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return out


_ONNX_SEEDS = []


def onnx_seeds():
    if not _ONNX_SEEDS:
        _ONNX_SEEDS.extend(_onnx_seed_models())
    return _ONNX_SEEDS


def mutate(data, edits):
    """Apply byte edits: (kind, position fraction, value)."""
    buf = bytearray(data)
    for kind, where, value in edits:
        if not buf:
            break
        i = int(where * len(buf)) % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "set":
            buf[i] = value % 256
        elif kind == "insert":
            buf[i:i] = bytes([value % 256]) * (1 + value % 7)
        elif kind == "delete":
            del buf[i:i + 1 + value % 16]
        elif kind == "truncate":
            del buf[i:]
        elif kind == "varint":                  # a length or a dim made huge
            buf[i:i + 1] = b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
        elif kind == "duplicate":
            j = min(len(buf), i + 1 + value % 64)
            buf[j:j] = buf[i:j]
    return bytes(buf)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "varint", "duplicate"]),
                           st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6)

MAX_INPUT_ELEMENTS = 1 << 16


def _runnable(graph):
    """Random inputs for graph, or None when its inputs are huge or cannot be
    made (a derived dim "2*batch" that no input binds: a typed error)."""
    from irtool.compare import random_inputs
    for v in graph.inputs:
        n = 1
        for d in v.shape:
            n *= d if isinstance(d, int) else 3
        if n > MAX_INPUT_ELEMENTS:
            return None
    try:
        return random_inputs(graph)
    except IRToolError:
        return None


# Bugs the fuzzers found that have a strict-xfail regression test below: a fuzz run that hits
# one again counts it instead of failing, so CI stays about *new* failures. (name, predicate)
# Empty: every bug found so far is fixed and its regression test below passes.
KNOWN_BUGS = []
KNOWN_HITS = {}


def _known(e):
    for name, hit in KNOWN_BUGS:
        if hit(e):
            KNOWN_HITS[name] = KNOWN_HITS.get(name, 0) + 1
            return True
    return False


def check_import_bytes(data, limit=20):
    """import_onnx(data) either returns a Graph that verifies and runs (or fails
    to run with a typed error), or raises an IRToolError."""
    with time_limit(limit, "import_onnx"):
        try:
            graph = irtool.import_onnx(data)
        except IRToolError:
            return "refused"
        except Exception as e:  # noqa: BLE001 - only known, reported bugs pass
            if _known(e):
                return "known bug"
            raise
        irtool.verify(graph)
        inputs = _runnable(graph)
        if inputs is None:
            return "imported"
        try:
            irtool.run(graph, inputs)
        except IRToolError:
            pass
        return "ran"


def _fuzz_mutated_seeds(seeds, check, max_examples, derandomize):
    """A hypothesis test: check(one of seeds() with random byte edits)."""
    @settings(max_examples=max_examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 10 ** 6), EDITS)
    def fuzz(which, edits):
        found = seeds()
        check(mutate(found[which % len(found)], edits))
    return fuzz


def _fuzz_import_mutations(max_examples, derandomize=True):
    return _fuzz_mutated_seeds(onnx_seeds, check_import_bytes, max_examples, derandomize)


ONNX_OPSETS = (13, 17, 18, 21)
ATTR_STRINGS = ["constant", "reflect", "edge", "NOTSET", "SAME_UPPER", "VALID", "linear", "nearest", "cubic",
                "half_pixel", "asymmetric", "align_corners", "round_prefer_floor", "none", "tanh", "mean", "sum",
                "ij,jk->ik", "", "\xff\x00junk"]


def _import_ops():
    from irtool.frontends.onnx_ops import OPS
    return sorted(OPS) + ["NoSuchOp", "Loop", "Scan", "NonZero", "Unique"]


@st.composite
def random_onnx_models(draw):
    """A one-node model: an op type the importer maps (or not), inputs that are
    graph inputs or initializers of random dtype and shape, random attributes
    of the types its schema declares."""
    from onnx import defs, helper, numpy_helper
    op_type = draw(st.sampled_from(_import_ops()))
    opset = draw(st.sampled_from(ONNX_OPSETS))
    try:
        schema = defs.get_schema(op_type, opset)
        n_in_range = (schema.min_input, min(schema.max_input, 4))
        n_out_range = (schema.min_output, min(schema.max_output, 3))
        attrs = dict(schema.attributes)
    except Exception:  # noqa: BLE001 - no such op at this opset
        n_in_range, n_out_range, attrs = (0, 3), (1, 2), {}
    n_in = draw(st.integers(*n_in_range)) if n_in_range[0] <= n_in_range[1] else n_in_range[0]
    n_out = draw(st.integers(max(1, n_out_range[0]), max(1, n_out_range[1])))
    dtypes = [np.float32, np.int64, np.bool_, np.float16, np.int32]
    graph_inputs, inits, names, feeds = [], [], [], {}
    for i in range(n_in):
        kind = draw(st.sampled_from(["input", "init", "init", "omit"]))
        if kind == "omit":
            names.append("")
            continue
        dt = draw(st.sampled_from(dtypes))
        shape = draw(st.lists(st.integers(0, 4), max_size=4).map(tuple))
        rng = np.random.default_rng(draw(st.integers(0, 1000)))
        if dt == np.bool_:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(dt, np.integer):
            arr = rng.integers(-3, 6, size=shape).astype(dt)
        else:
            arr = rng.uniform(-3, 3, size=shape).astype(dt)
        name = f"in{i}"
        names.append(name)
        if kind == "init":
            inits.append(numpy_helper.from_array(arr, name))
        else:
            dims = [d if draw(st.booleans()) else f"d{k}" for k, d in enumerate(shape)]
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                              dims))
            feeds[name] = arr
    kwargs = {}
    for name, a in attrs.items():
        if not draw(st.booleans()):
            continue
        t = int(a.type)
        ints = st.integers(-3, 6)
        if t == 2:          # INT
            kwargs[name] = draw(ints)
        elif t == 1:        # FLOAT
            kwargs[name] = draw(st.floats(-4, 4, allow_nan=False))
        elif t == 3:        # STRING
            kwargs[name] = draw(st.sampled_from(ATTR_STRINGS))
        elif t == 7:        # INTS
            kwargs[name] = draw(st.lists(ints, max_size=6))
        elif t == 6:        # FLOATS
            kwargs[name] = draw(st.lists(st.floats(-4, 4, allow_nan=False), max_size=6))
        elif t == 8:        # STRINGS
            kwargs[name] = draw(st.lists(st.sampled_from(ATTR_STRINGS), max_size=3))
        elif t == 4:        # TENSOR
            kwargs[name] = numpy_helper.from_array(
                np.asarray(draw(st.lists(ints, max_size=4)), dtype=draw(st.sampled_from([np.float32, np.int64]))))
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op_type, names, outs)
    for name, value in kwargs.items():
        node.attribute.append(helper.make_attribute(name, value, attr_type=attrs[name].type))
    g = helper.make_graph([node], "random", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


ORT_CRASHES_ON_OMITTED = {"Sum", "Max", "Min", "Mean", "Concat"}
# onnxruntime 1.32 also segfaults on LayerNormalization with a stash_type other than FLOAT (1)
FLAG_ATTRS = {"keepdims", "ceil_mode", "count_include_pad", "exclusive", "reverse", "largest", "sorted",
              "select_last_index", "noop_with_empty_axes", "transA", "transB", "upper", "detect_negative",
              "detect_positive", "training_mode", "allowzero", "fmod", "saturate"}


def _invalid_flags(model):
    return any(a.name in FLAG_ATTRS and a.type == a.INT and a.i not in (0, 1)
               for n in model.graph.node for a in n.attribute)


def check_random_model(model, feeds, limit=20):
    """Typed errors only; and where both irtool and onnxruntime accept the model
    and run it, their results agree. Returns what happened."""
    import onnxruntime as ort
    with time_limit(limit, "import_onnx"):
        try:
            graph = irtool.import_onnx(model)
        except IRToolError:
            return "refused"
        irtool.verify(graph)
        feeds = {v.name: feeds[v.name] for v in graph.inputs if v.name in feeds}
        if len(feeds) != len(graph.inputs):
            return "imported"
        try:
            ours = irtool.run(graph, feeds)
        except IRToolError:
            return "imported"
        if any(n.op_type in ORT_CRASHES_ON_OMITTED and "" in n.input for n in model.graph.node):
            return "ran"          # onnxruntime 1.32 segfaults on Sum(x, "") and friends: not irtool's to test
        if any(a.name == "stash_type" and a.i != 1 for n in model.graph.node for a in n.attribute):
            return "ran"
        if _invalid_flags(model):
            return "ran"          # e.g. keepdims=-1: out of the spec's domain, compared only for typed errors
        if any(a.size == 0 for a in feeds.values()) or any(0 in t.dims for t in model.graph.initializer):
            return "ran"          # reductions of empty tensors: the spec leaves their values open
        if os.environ.get("IRTOOL_FUZZ_LAST"):          # scripts/fuzz.py: what to look at after a crash
            with open(os.environ["IRTOOL_FUZZ_LAST"], "wb") as f:
                f.write(model.SerializeToString())
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            theirs = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
        except Exception:  # noqa: BLE001 - onnxruntime refuses the model: nothing to compare
            return "ran"
    import onnx
    where = onnx.helper.printable_graph(model.graph).replace("\n", " ")
    for k, (a, t) in enumerate(zip(ours, theirs)):
        a, t = np.asarray(a), np.asarray(t)
        if a.shape != t.shape:
            raise Mismatch(f"{where}: output {k}: irtool shape {a.shape}, onnxruntime {t.shape}")
        if a.dtype.kind == "f" or t.dtype.kind == "f":
            ok = np.allclose(a.astype(np.float64), t.astype(np.float64), rtol=1e-3 if a.dtype == np.float16 else 1e-4,
                             atol=1e-3 if a.dtype == np.float16 else 1e-5, equal_nan=True)
        else:
            ok = np.array_equal(a, t.astype(a.dtype))
        if not ok:
            raise Mismatch(f"{where}: output {k}: irtool {a.ravel()[:6]} vs onnxruntime {t.ravel()[:6]}")
    return "compared"


def _fuzz_random_models(max_examples, derandomize=True):
    @settings(max_examples=max_examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(random_onnx_models())
    def fuzz(case):
        try:
            check_random_model(*case)
        except Mismatch as e:
            if not _known(e):
                raise
    return fuzz


# -- the .irz loader --------------------------------------------------------------------------------

_IRZ_SEEDS = []


def irz_seeds():
    from irtool.ir import serialize
    if not _IRZ_SEEDS:
        for seed in (1, 5, 20, 33):
            _IRZ_SEEDS.append(serialize.to_bytes(generate(seed).to_ir("float32")))
    return _IRZ_SEEDS


def check_irz_bytes(data, limit=20):
    """from_bytes(data): a Graph that runs (or fails typed), or FileFormatError."""
    from irtool.errors import FileFormatError
    from irtool.ir import serialize
    with time_limit(limit, "irz load"):
        try:
            graph = serialize.from_bytes(data)
        except FileFormatError:
            return "refused"
        irtool.verify(graph)
        inputs = _runnable(graph)
        if inputs is None:
            return "loaded"
        try:
            irtool.run(graph, inputs)
        except IRToolError:
            pass
        return "ran"


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, 1, -1, 2, 3]),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
              st.sampled_from(["x", "w", "float32", "int64", "add", "matmul", "batch", "2*batch", "tensor", "tuple"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["tensor", "tuple", "float", "name", "shape", "dtype", "op", "x"]), inner, max_size=2)),
    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def rewrite_header(data, which, value, action):
    """The file with one header entry replaced, deleted or duplicated, and the
    checksums repaired (so the edit reaches the parser)."""
    import hashlib
    import json

    from irtool.ir import serialize
    (hlen,) = struct.unpack("<Q", data[8:16])
    start = len(serialize.MAGIC) + 8 + 32
    header, blob = json.loads(data[start:start + hlen]), data[start + hlen:]
    paths = [p for p in _paths(header) if p]
    path = paths[which % len(paths)]
    parent = header
    for k in path[:-1]:
        parent = parent[k]
    if action == "delete":
        del parent[path[-1]]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = value
    hb = json.dumps(header).encode()
    return serialize.MAGIC + struct.pack("<Q", len(hb)) + hashlib.sha256(hb).digest() + hb + blob


def _fuzz_irz_bytes(max_examples, derandomize=True):
    return _fuzz_mutated_seeds(irz_seeds, check_irz_bytes, max_examples, derandomize)


def _fuzz_irz_header(max_examples, derandomize=True):
    @settings(max_examples=max_examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), JSON_VALUES,
           st.sampled_from(["replace", "replace", "replace", "delete", "duplicate"]))
    def fuzz(which, where, value, action):
        seeds = irz_seeds()
        check_irz_bytes(rewrite_header(seeds[which % len(seeds)], where, value, action))
    return fuzz


# -- the command line -------------------------------------------------------------------------------

class _Workspace:
    """A folder with a model of each kind, inputs and data, for CLI fuzzing."""

    def __init__(self, folder):
        from irtool.ir import serialize
        self.folder = folder
        b = irtool.Builder("m")
        x = b.input("x", "float32", ("n", 3))
        w = b.param("w", np.ones((3, 2), np.float32))
        g = b.build([b.matmul(x, w)])
        serialize.save(g, os.path.join(folder, "model.irz"))
        irtool.export_onnx(g, os.path.join(folder, "model.onnx"))
        np.save(os.path.join(folder, "x.npy"), np.ones((2, 3), np.float32))
        np.save(os.path.join(folder, "bad.npy"), np.ones((2, 5), np.float64))
        np.savez(os.path.join(folder, "data.npz"), x=np.ones((4, 3), np.float32), target=np.zeros((4, 2), np.float32))
        open(os.path.join(folder, "empty.irz"), "wb").close()
        open(os.path.join(folder, "empty.npy"), "wb").close()
        np.savez(os.path.join(folder, "notarget.npz"), x=np.ones((4, 3), np.float32))
        np.savez(os.path.join(folder, "nothing.npz"))
        with open(os.path.join(folder, "data.npz"), "rb") as f:
            head = f.read(80)
        with open(os.path.join(folder, "trunc.npz"), "wb") as f:
            f.write(head)
        with open(os.path.join(folder, "junk.onnx"), "wb") as f:
            f.write(b"\x08\x01junk")
        os.mkdir(os.path.join(folder, "sub"))


ARG_WORDS = ["convert", "inspect", "run", "verify", "train", "model.irz", "model.onnx", "missing.irz", "empty.irz",
             "junk.onnx", "x.npy", "data.npz", "sub", "sub/out.onnx", "nodir/out.irz", ".", "", "-", "--", "-o",
             "--output", "out.onnx", "out.irz", "out.npz", "out.pt2", "--to", "onnx", "irz", "torch", "tflite",
             "--opset", "17", "21", "5", "x", "99999999999999999999", "--verify", "--force", "--text", "--input",
             "x=x.npy", "x=bad.npy", "x=missing.npy", "y=x.npy", "x", "x:2x3", "x:2x3:float64", "x:axb", "x:2x3:int4",
             "--dynamic", "x:0=batch", "x:0=", "x:q=b", "--trust-code", "--backend", "numpy", "onnxruntime", "tpu",
             "--data", "--loss", "mse", "l1", "cross_entropy", "bce_with_logits", "hinge", "--optimizer", "sgd",
             "adam", "adamw", "lbfgs", "--lr", "0.1", "-1", "nan", "inf", "0", "1e308", "--momentum", "0.9",
             "--weight-decay", "0.01", "--epochs", "1", "2", "0", "--batch-size", "3", "-5", "--bogus", "-h", "--help",
             "--input=x=x.npy", "--opset=18", "-ox.onnx"]


def check_cli(argv, folder, limit=30):
    """irtool.cli.main(argv) in `folder`: exit 0/1/2 (or --help's SystemExit(0)),
    one clean line on stderr for errors, never an internal error or traceback."""
    from irtool.cli import main
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with time_limit(limit, f"irtool {' '.join(argv)}"), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as e:
                if e.code != 0 or not ({"-h", "--help"} & set(argv)):
                    raise AssertionError(f"irtool {argv}: SystemExit({e.code})") from None
                code = 0
    finally:
        os.chdir(cwd)
    text = err.getvalue()
    if "internal error" in text or "Traceback" in text:
        e = Mismatch(f"irtool {argv}: {text.strip()}")
        if _known(e):
            return "known bug"
        raise e
    if code not in (0, 1, 2):
        raise Mismatch(f"irtool {argv}: exit code {code}: {text.strip()}")
    if code != 0 and text.count("\n") != 1:
        raise Mismatch(f"irtool {argv}: exit {code} but stderr is {text!r}")
    return code


MODELS = ["model.irz", "model.onnx", "empty.irz", "junk.onnx", "missing.irz", "sub", "x.npy", "data.npz", ""]
OUTPUTS = ["out.onnx", "out.irz", "out.pt2", "out.npz", "sub/out.onnx", "nodir/out.irz", "model.irz", ".", "",
           "out.txt"]
SOURCE_OPTIONS = {"--input": ["x:2x3", "x:2x3:float64", "x:axb", "x", "x:2x3:int4", ":2", "x:-1x3"],
                  "--dynamic": ["x:0=batch", "x:0=", "x:q=b", "x", "x:1=n"], "--trust-code": None}
GRAMMAR = {
    "convert": dict(SOURCE_OPTIONS, **{"-o": OUTPUTS, "--to": ["onnx", "irz", "torch", "tflite"],
                                       "--opset": ["17", "21", "5", "x", "99999999999999999999", "-1"],
                                       "--verify": None, "--force": None}),
    "inspect": dict(SOURCE_OPTIONS, **{"--text": None}),
    "run": {"--input": ["x=x.npy", "x=bad.npy", "x=empty.npy", "x=junk.onnx", "x=data.npz", "x=missing.npy",
                        "y=x.npy", "x", "=x.npy", "x=sub"],
            "--backend": ["numpy", "onnxruntime", "tpu"], "-o": OUTPUTS, "--force": None, "--trust-code": None},
    "verify": dict(SOURCE_OPTIONS, **{"--opset": ["17", "21", "5", "x"]}),
    "train": dict(SOURCE_OPTIONS, **{
        "--data": ["data.npz", "data.npz", "x.npy", "notarget.npz", "nothing.npz", "trunc.npz", "missing.npz",
                   "junk.onnx", "sub"],
        "--loss": ["mse", "l1", "cross_entropy", "bce_with_logits", "hinge"],
        "--optimizer": ["sgd", "adam", "adamw", "lbfgs"],
        "--lr": ["0.1", "-1", "nan", "inf", "0", "1e308", "x"], "--momentum": ["0.9", "-3", "nan"],
        "--weight-decay": ["0.01", "-1", "inf"], "--epochs": ["1", "2", "0", "-1", "x"],
        "--batch-size": ["1", "3", "0", "-2", "100"], "--backend": ["numpy", "onnxruntime", "tpu"],
        "-o": OUTPUTS + ["t.irz", "t.onnx"], "--force": None}),
}


@st.composite
def cli_commands(draw):
    """A command with its model and a random selection of its own options
    (values valid or not): reaches the code behind the parser."""
    command = draw(st.sampled_from(sorted(GRAMMAR)))
    argv = [command, draw(st.sampled_from(MODELS))]
    options = GRAMMAR[command]
    if command == "train":
        argv += ["--data", draw(st.sampled_from(options["--data"])), "--loss",
                 draw(st.sampled_from(options["--loss"])), "--lr", draw(st.sampled_from(options["--lr"]))]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)):
        values = options[name]
        argv += [name] if values is None else [name, draw(st.sampled_from(values))]
    return argv


def _fuzz_cli(max_examples, folder_factory, derandomize=True):
    @settings(max_examples=max_examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(cli_commands(), cli_commands(),
                     st.lists(st.one_of(st.sampled_from(ARG_WORDS), st.text(max_size=8)), max_size=8)))
    def fuzz(argv):
        check_cli(argv, folder_factory())
    return fuzz


# -- the CI runs ------------------------------------------------------------------------------------

CI_GRAPHS = 1000                # differential graphs per CI run, in batches over the xdist workers
BATCHES = 10


@pytest.mark.parametrize("batch", range(BATCHES))
def test_random_graphs_agree_on_every_backend(batch):
    per = CI_GRAPHS // BATCHES
    counts = fuzz_graphs(range(batch * per, (batch + 1) * per))
    assert counts.get("graphs", 0) >= per * 0.9          # few skipped (overflow) graphs
    assert counts.get("ort", 0) >= per * 0.9 and counts.get("grad", 0) >= per * 0.5


def test_generated_graphs_cover_the_registry():
    """Over the CI seeds, the generator uses most registry ops, and chains them
    (a good share of node inputs come from earlier nodes, not fresh inputs)."""
    used, reused, total = set(), 0, 0
    for seed in range(0, CI_GRAPHS, 5):
        prog = generate(seed)
        used |= prog.ops()
        for step in prog.steps:
            if step[0] == "node":
                total += len(step[3])
                reused += sum(prog.steps[r][0] != "input" for r in step[3])
    eligible = {op.name for op, _ in TEMPLATES}
    assert len(used & eligible) >= 0.9 * len(eligible), sorted(eligible - used)
    assert reused >= 0.3 * total


def test_import_onnx_survives_mutated_models():
    _fuzz_import_mutations(400)()


def test_import_onnx_survives_random_models():
    _fuzz_random_models(600)()


def test_irz_loader_survives_byte_mutations():
    _fuzz_irz_bytes(300)()


def test_irz_loader_survives_header_rewrites():
    _fuzz_irz_header(400)()


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_fuzz")
    _Workspace(str(folder))
    return str(folder)


def test_cli_survives_random_argv(cli_folder):
    _fuzz_cli(400, lambda: cli_folder)()


def test_time_limit_stops_a_hang():
    import time
    with pytest.raises(Hang):
        with time_limit(0.2, "sleep"):
            time.sleep(5)


# -- regression tests: every mismatch the fuzzer found ------------------------------------------------

def _ort_session(model):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [17, 21])
def test_regression_ceil_mode_pools_in_one_graph_run_on_onnxruntime(opset):
    rng = np.random.default_rng(0)
    xs = {"x": rng.standard_normal((1, 2, 5, 5)).astype(np.float32),
          "c": rng.standard_normal((1, 2, 6, 6)).astype(np.float32)}
    pool = dict(strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True)
    b = irtool.Builder("ceil_mode_pools")
    x, c = b.input("x", "float32", (1, 2, 5, 5)), b.input("c", "float32", (1, 2, 6, 6))
    y = b.max_pool(x, kernel=(2, 2), **pool)
    z = b.avg_pool(c, kernel=(3, 3), count_include_pad=False, **pool)
    assert y.shape == (1, 2, 3, 3) and z.shape == (1, 2, 4, 4)        # torch's sizes
    g = irtool.grad(b.build([b.add(b.reduce_sum(b.mul(y, y)), b.reduce_sum(b.mul(z, z)))]), wrt=["x", "c"])
    ours = irtool.run(g, xs)
    theirs = _ort_session(irtool.export_onnx(g, opset=opset)).run(None, xs)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(t, a, rtol=1e-4, atol=1e-5)


def test_regression_reduce_prod_second_order_at_zeros():
    """Fuzz seeds 40, 84, 96: the second-order gradient of reduce_prod was wrong where an input
    is exactly 0 (the zero masks of the old rule were constants); the rule now multiplies
    exclusive cumulative products from both ends, exact like torch double backward."""
    torch = pytest.importorskip("torch")
    x = np.array([[0.5, 0.0, -1.5, 2.0], [1.25, -0.75, 0.5, 1.5]])
    c2 = np.array([[0.3, -0.7, 0.2, 0.9], [-0.4, 0.6, 0.1, -0.8]])
    b = irtool.Builder("prod")
    xi = b.input("x", "float64", (2, 4))
    g1 = irtool.grad(b.build([b.reduce_sum(b.reduce_prod(xi, axes=(1,)))]), wrt=["x"])
    b2 = irtool.Builder("second")
    vm = b2.copy_graph(g1)
    second = irtool.grad(b2.build([b2.reduce_sum(b2.mul(vm[g1.outputs[1]], b2.const(c2, "float64")))]),
                         wrt=["x"])
    ours = irtool.run(second, [x])[1]
    xt = torch.from_numpy(x.copy()).requires_grad_()
    (first,) = torch.autograd.grad(xt.prod(dim=1).sum(), xt, create_graph=True)
    (theirs,) = torch.autograd.grad((first * torch.from_numpy(c2)).sum(), xt)
    torch.testing.assert_close(torch.from_numpy(ours), theirs)


@pytest.mark.parametrize("axes,keepdims", [((1,), False), ((0, 2), True), ((2, 0), False), (None, False),
                                           ((-2,), True), ((1, 2), False)])
def test_regression_reduce_prod_second_order_at_zeros_any_axes(axes, keepdims):
    """The same on rank 3 with one and two zeros per slice, several axes (reduced axes moved
    last and flattened), keepdims, and the gradient exported to onnxruntime."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1.5, (3, 4, 5)) * rng.choice([-1, 1], (3, 4, 5))
    x[0, 1, 2] = x[1, 0, 0] = x[1, 3, 0] = x[2, 2, 4] = x[2, 2, 3] = 0.0
    b = irtool.Builder("prod")
    xi = b.input("x", "float64", x.shape)
    out = b.reduce_prod(xi, axes=axes, keepdims=keepdims)
    c1 = rng.standard_normal(out.shape)
    c2 = rng.standard_normal(x.shape)
    g1 = irtool.grad(b.build([b.reduce_sum(b.mul(out, b.const(c1, "float64")))]), wrt=["x"])
    b2 = irtool.Builder("second")
    vm = b2.copy_graph(g1)
    second = irtool.grad(b2.build([b2.reduce_sum(b2.mul(vm[g1.outputs[1]], b2.const(c2, "float64")))]),
                         wrt=["x"])
    ours = irtool.run(second, [x])
    xt = torch.from_numpy(x.copy()).requires_grad_()
    dims = tuple(range(3)) if axes is None else axes
    y = xt
    for d in sorted((d % 3 for d in dims), reverse=True):
        y = y.prod(dim=d, keepdim=True)
    y = y if keepdims else y.reshape(out.shape)
    (first,) = torch.autograd.grad((y * torch.from_numpy(c1)).sum(), xt, create_graph=True)
    (theirs,) = torch.autograd.grad((first * torch.from_numpy(c2)).sum(), xt)
    torch.testing.assert_close(torch.from_numpy(irtool.run(g1, [x])[1]), first.detach())
    torch.testing.assert_close(torch.from_numpy(ours[1]), theirs)
    onnx_out = _ort_session(irtool.export_onnx(second)).run(None, {"x": x})
    np.testing.assert_allclose(onnx_out[1], theirs.numpy(), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("dtype,bias,lambd", [
    ("int32", 1.54, 0.0), ("int8", -2.3, 1.5), ("int64", 1.5, -1.5), ("uint8", 0.7, 2.0), ("int16", 0.0, 0.5)])
def test_regression_shrink_on_integers_matches_onnx(dtype, bias, lambd):
    """Found by the random-model fuzzer: on integer inputs irtool turned the float bias into an
    int before subtracting (3 - int(1.54) = 2); ONNX (reference implementation and onnxruntime)
    computes x - bias in floating point and then casts (3 - 1.54 = 1.46 -> 1)."""
    from onnx import helper
    from onnx.helper import np_dtype_to_tensor_dtype
    from onnx.reference import ReferenceEvaluator
    lo = -20 if np.dtype(dtype).kind == "i" else 0
    x = np.concatenate([[-3, -1, 0, 1, 2, 3, 5], np.arange(lo, 40)]).clip(lo).astype(dtype)[None]
    tp = np_dtype_to_tensor_dtype(np.dtype(dtype))
    g = helper.make_graph([helper.make_node("Shrink", ["x"], ["y"], bias=bias, lambd=lambd)], "shrink",
                          [helper.make_tensor_value_info("x", tp, list(x.shape))],
                          [helper.make_tensor_value_info("y", tp, list(x.shape))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with np.errstate(all="ignore"):
        expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(expected, _ort_session(model).run(None, {"x": x})[0])
    graph = irtool.import_onnx(model)
    ours = irtool.run(graph, {"x": x})[0]
    assert ours.dtype == x.dtype
    np.testing.assert_array_equal(ours, expected)
    # and the same numbers after exporting the imported graph back to ONNX
    np.testing.assert_array_equal(_ort_session(irtool.export_onnx(graph)).run(None, {"x": x})[0], expected)


def test_regression_non_utf8_op_type_is_a_typed_error():
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Xyzw", ["x"], ["t0"]), helper.make_node("Abcd", ["t0"], ["t1"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("t1", TensorProto.FLOAT, [2])])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    data = data.replace(b"Xyzw", b"X\xffzw")             # same length: still a valid protobuf
    with pytest.raises(IRToolError):
        irtool.import_onnx(data)


@pytest.mark.parametrize("good,bad,what", [
    (b"Bqtch", b"B\xfftch", "dim_param"),          # found by scripts/fuzz_atheris.py onnx
    (b"Qxval", b"Q\xffval", "name in node"),       # a value between two nodes
    (b"Nodez", b"N\xffdez", "name in node"),
    (b"Gname", b"G\xffame", "graph name"),
])
def test_regression_non_utf8_names_are_one_typed_error(good, bad, what):
    """protobuf hands a string field that is not valid UTF-8 over as bytes."""
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Relu", ["x"], ["Qxval"], name="Nodez"), helper.make_node("Neg", ["Qxval"], ["y"])]
    g = helper.make_graph(nodes, "Gname", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["Bqtch", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["Bqtch", 2])])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    assert irtool.import_onnx(data).outputs                      # the clean model imports
    with pytest.raises(FileFormatError, match=f"{what}.*not valid UTF-8"):
        irtool.import_onnx(data.replace(good, bad))            # same length: still a valid protobuf


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "line\nbreak", ""])
def test_regression_any_graph_name_runs(name):
    """Found by scripts/fuzz_atheris.py: the numpy runtime's generated plan was
    compiled under a file name holding the graph name (NUL -> ValueError)."""
    b = irtool.Builder(name)
    x = b.input("x", "float32", (2,))
    graph = b.build([b.neg(x)])
    np.testing.assert_array_equal(irtool.run(graph, [np.ones(2, np.float32)])[0], -np.ones(2, np.float32))


def test_atheris_short_run_finds_nothing(tmp_path):
    """A short coverage-guided pass of scripts/fuzz_atheris.py per target
    (where atheris installs); longer runs: the script's -max_total_time."""
    pytest.importorskip("atheris")
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "fuzz_atheris.py")
    for target, runs in (("onnx", 3000), ("irz", 20000)):
        p = subprocess.run([sys.executable, script, target, f"-runs={runs}", "-timeout=30", "-seed=1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        assert f"Done {runs} runs" in p.stderr


@pytest.mark.parametrize("op,arity", [("maximum", 3), ("add", 1), ("exp", 2)])
def test_regression_builder_checks_the_number_of_inputs(op, arity):
    b = irtool.Builder("arity")
    x = b.input("x", "float32", (3,))
    with pytest.raises(IRToolError):
        b.add_node(op, [x] * arity)


def test_regression_kernels_cannot_write_into_params_or_inputs():
    """The numpy runtime hands kernels read-only views (runtime/interpreter.py):
    a node that would write into a param fails, the param keeps its values."""
    from irtool.errors import RuntimeFailure
    b = irtool.Builder("writes")
    x = b.input("x", "float32", (3,))
    w = b.param("w", np.zeros(3, np.float32))
    try:
        y = b.add_node("maximum", [x, x, w])
    except IRToolError:
        return                                  # the Builder refuses it: even better
    x0 = np.ones(3, np.float32)
    with pytest.raises(RuntimeFailure):
        irtool.run(b.build([y]), [x0])
    assert not b.build([y]).params["w"].data.any() and (x0 == 1).all()


@pytest.mark.parametrize("alpha", [-0.0, 0.0])
def test_regression_celu_with_zero_alpha_is_refused(alpha):
    """Random-model fuzzer, seed 6: Celu computes x / alpha, so alpha = +-0 is undefined (the
    ONNX reference and onnxruntime give NaN on part of the input, irtool gave NaN elsewhere).
    The importer refuses the degenerate attribute with a typed error instead."""
    from onnx import TensorProto, helper
    from irtool.errors import FileFormatError
    g = helper.make_graph([helper.make_node("Celu", ["x"], ["y"], alpha=alpha)], "celu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(FileFormatError, match="alpha"):
        irtool.import_onnx(model)
