"""Run one graph on several backends and tabulate the differences.

Used by `irtool convert --verify` and `irtool verify`: the numpy reference
runtime against onnxruntime on the exported model (and, for framework
sources, the framework itself), on the same random inputs."""
import numpy as np

from irtool.ir.dtypes import is_float, np_dtype
from irtool.ir.shapes import evaluate

DEFAULT_DIM = 3


def random_inputs(graph, dims=None, seed=0):
    """One array per graph input; symbolic dims take `dims[name]` or 3."""
    rng = np.random.default_rng(seed)
    env = dict(dims or {})
    arrays = []
    for v in graph.inputs:
        shape = []
        for d in v.shape:
            if isinstance(d, str) and "*" not in d:
                env.setdefault(d, DEFAULT_DIM)
            shape.append(evaluate(d, env))
        if is_float(v.dtype):
            a = rng.standard_normal(shape).astype(np_dtype(v.dtype))
        elif v.dtype == "bool":
            a = rng.random(shape) < 0.5
        else:
            a = rng.integers(0, 2, size=shape).astype(np_dtype(v.dtype))
        arrays.append(a)
    return arrays


def differences(names, reference, other):
    """Rows (output, max abs diff, max rel diff) comparing two result lists."""
    rows = []
    for name, a, b in zip(names, reference, other):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            rows.append((name, float("inf"), float("inf")))
            continue
        diff = np.abs(a64 - b64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        diff = np.where(both_nan, 0.0, diff)
        absd = float(diff.max()) if diff.size else 0.0
        rel = float((diff / np.maximum(np.abs(a64), 1e-12)).max()) if diff.size else 0.0
        rows.append((name, absd, rel))
    return rows


def within_tolerance(reference, other, rtol=1e-4, atol=1e-5):
    return all(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol,
                           equal_nan=True) and np.shape(a) == np.shape(b)
               for a, b in zip(reference, other))


def table(title_pairs):
    """Format [(label, rows)] as an aligned text table."""
    lines = [f"{'output':<24} {'compared':<26} {'max abs diff':>13} {'max rel diff':>13}"]
    for label, rows in title_pairs:
        for name, absd, rel in rows:
            lines.append(f"{name[:24]:<24} {label:<26} {absd:>13.3e} {rel:>13.3e}")
    return "\n".join(lines)
