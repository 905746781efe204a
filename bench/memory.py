"""Peak memory of converting a model with billions of parameter bytes:
each converter runs in its own child process (so peaks do not mix), which
builds the model, reports its resident size, converts, and exits. The child
is killed when it passes the memory limit, so a runaway converter cannot
exhaust the machine."""
import os
import re
import shutil

from bench.measure import Stats, run_with_peak_memory
from bench.report import Row
from bench.zoo import large_linear_stack_source

WIDTH = 8192
LAYERS_FULL = 12        # 12 x (8192 x 8192 + 8192) float32 = 3.2 GB
LAYERS_QUICK = 2        # 0.5 GB: exercises the code path only
LIMIT = 20 * 2**30

CONVERT = {
    "irtool": """
import irtool
graph = irtool.trace(model, example)
irtool.export_onnx(graph, OUT)
""",
    "irtool, share_params=True": """
import irtool
graph = irtool.trace(model, example, share_params=True)
irtool.export_onnx(graph, OUT)
""",
    "torch.onnx.export(dynamo=True)": """
import warnings
warnings.simplefilter("ignore")
torch.onnx.export(model, example, OUT, dynamo=True, external_data=True, opset_version=18, verbose=False)
""",
}

CHILD = """
import time, resource, os
OUT = {out!r}
{model}
print(f"BENCH param_bytes={{param_bytes}}", flush=True)
print(f"BENCH baseline={{_rss()}}", flush=True)
t0 = time.perf_counter()
{convert}
print(f"BENCH seconds={{time.perf_counter() - t0}}", flush=True)
print(f"BENCH peak={{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}", flush=True)
"""


def available_bytes():
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return LIMIT


def run_memory(ctx):
    layers = LAYERS_QUICK if ctx.quick else LAYERS_FULL
    limit = min(LIMIT, available_bytes() - 2**30)
    model_src = large_linear_stack_source(layers, WIDTH)
    label = f"{layers} x Linear({WIDTH}, {WIDTH})"
    results = {}
    for name, convert in CONVERT.items():
        folder = ctx.path("large." + re.sub(r"\W+", "_", name.split("(")[0]).strip("_"))
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, "model.onnx")
        print(f"  memory {name} ({label}, limit {limit / 2**30:.1f} GiB)", flush=True)
        res = run_with_peak_memory(CHILD.format(out=out, model=model_src, convert=convert), limit)
        shutil.rmtree(folder, ignore_errors=True)       # the file and its external data
        results[name] = res
    pbytes = next((r.report["param_bytes"] for r in results.values() if r.report.get("param_bytes")), None)
    size = f"linear stack ({pbytes / 1e9:.1f} GB)" if pbytes else "linear stack"
    rows = []
    for ours_name, ours_res in results.items():
        if not ours_name.startswith("irtool"):
            continue
        ours, ours_note = _factor(ours_res, pbytes)
        variant = ours_name.partition(", ")[2]
        for name, res in results.items():
            if name.startswith("irtool"):
                continue
            theirs, their_note = _factor(res, pbytes)
            notes = [f"{label}, {pbytes / 1e9:.2f} GB params" if pbytes else label, f"ours {ours_note}",
                     f"peer {their_note}"]
            rows.append(Row("memory", f"{size}, {variant}" if variant else size, name, ours, theirs,
                            "; ".join(notes)))
    return rows


def _factor(res, pbytes):
    """(Stats of (peak - baseline) / param bytes, a note) for one child."""
    if res.aborted:
        base = res.report.get("baseline")
        if base and pbytes:
            return None, f"{res.aborted}: more than {(res.polled_peak - base) / pbytes:.1f}x param bytes"
        return None, res.aborted
    if res.returncode != 0 or res.peak is None or "baseline" not in res.report or not pbytes:
        return None, f"failed (exit {res.returncode}): {res.stderr_tail[:200]}"
    f = (res.peak - res.report["baseline"]) / pbytes
    secs = res.report.get("seconds")
    note = (f"peak {res.peak / 2**30:.2f} GiB, baseline {res.report['baseline'] / 2**30:.2f} GiB"
            + (f", {secs:.1f} s" if secs is not None else ""))
    return Stats(f, f, f, 1), note
