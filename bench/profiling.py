"""cProfile of irtool's slow paths, written to bench/profile.md: converting
BERT (trace + export), numpy-runtime inference of the CNN and BERT, and
training steps (numpy runtime and onnxruntime). Each scenario runs once
unprofiled first, so the profile shows steady state rather than imports."""
import cProfile
import os
import pstats
import sys
import time

import irtool
from bench import converters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = 15


def _where(func):
    path, line, name = func
    if path == "~":
        return name                                   # a builtin
    for prefix in sorted({ROOT + os.sep, *[p + os.sep for p in sys.path if p]}, key=len, reverse=True):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    return f"{path}:{line}({name})"


def _ours(func):
    path = func[0]
    return path.startswith(ROOT + os.sep) and os.sep + "bench" + os.sep not in path


def _table(stats, key, only_ours=False):
    entries = []
    for func, (cc, nc, tt, ct, _) in stats.stats.items():
        if only_ours and not _ours(func):
            continue
        entries.append((tt if key == "tottime" else ct, nc, tt, ct, func))
    entries.sort(key=lambda e: -e[0])
    lines = ["| calls | tottime s | cumtime s | function |", "|---|---|---|---|"]
    for _, nc, tt, ct, func in entries[:TOP]:
        lines.append(f"| {nc} | {tt:.3f} | {ct:.3f} | `{_where(func)}` |")
    return "\n".join(lines)


CONVERSION_SPLIT = [
    ("torch.export.export", "torch/export/__init__.py", "export"),
    ("ExportedProgram.run_decompositions (called by irtool)", "torch/export/exported_program.py",
     "run_decompositions"),
    ("irtool from_exported_program (includes run_decompositions)", "frontends/torch_trace.py",
     "from_exported_program"),
    ("irtool export_onnx: lowering (to_model)", "exporters/onnx/__init__.py", "to_model"),
    ("irtool export_onnx: writing (write_model)", "exporters/onnx/__init__.py", "write_model"),
]


def _split(stats, picks, wall, times):
    lines = ["| part | cumulative s per call | share of the call |", "|---|---|---|"]
    for label, suffix, name in picks:
        total = sum(ct for (path, _, fn), (_, _, _, ct, _) in stats.stats.items()
                    if fn == name and path.replace(os.sep, "/").endswith(suffix))
        lines.append(f"| {label} | {total / times:.3f} | {100 * total / wall:.0f}% |")
    return "\n".join(lines)


def _profile(title, fn, times, split=None):
    fn()                                              # warm: imports, caches, sessions
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(times):
        fn()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    print(f"  profiled {title}: {wall:.2f} s for {times} call(s)", flush=True)
    head = [f"## {title}", "", f"{times} call(s), {wall:.3f} s under the profiler "
            f"({wall / times * 1000:.1f} ms per call).", ""]
    if split:
        head += ["Where the time goes:", "", _split(stats, split, wall, times), ""]
    return "\n".join(head + ["Top functions by own time (tottime):", "", _table(stats, "tottime"), "",
                             "irtool functions by cumulative time:", "", _table(stats, "cumtime", only_ours=True),
                             ""])


def run_profile(ctx, out_path):
    cases = {c.name: c for c in ctx.torch_cases()}
    parts = ["# Where irtool spends its time", "",
             "cProfile, steady state (one unprofiled call first). Written by `python -m bench --only profile`.",
             ""]
    n = 1 if ctx.quick else 3
    if "bert" in cases:
        bert = cases["bert"]
        path = ctx.path("profile_bert.onnx")
        parts.append(_profile("convert bert (irtool.trace + export_onnx)",
                              lambda: converters.convert_ours(ctx, bert, path), n, CONVERSION_SPLIT))
        g = converters.graph_of(ctx, bert)
        parts.append(_profile("export_onnx only, bert", lambda: irtool.export_onnx(g, path), n * 3))
    for name, times in (("cnn", 20), ("bert", 5)):
        if name in cases:
            case = cases[name]
            g = converters.graph_of(ctx, case)
            x = case.numpy_inputs()
            parts.append(_profile(f"numpy runtime inference, {name}", lambda: irtool.run(g, x),
                                  max(1, times // (5 if ctx.quick else 1))))
    for name in ("cnn", "bert"):
        if name not in cases:
            continue
        case = cases[name]
        g = converters.graph_of(ctx, case)
        x = case.numpy_inputs()
        for backend, times in (("numpy", 3), ("onnxruntime", 20)):
            t = irtool.Trainer(g, loss=case.loss, optimizer=irtool.optim.SGD(0.01), backend=backend)
            parts.append(_profile(f"training step, {name}, {backend} backend",
                                  lambda: t.step(*x, case.target), max(1, times // (3 if ctx.quick else 1))))
        parts.append(_profile(f"building the training-step graph, {name}",
                              lambda: irtool.Trainer(g, loss=case.loss, optimizer=irtool.optim.SGD(0.01)), 1))
    with open(out_path, "w") as f:
        f.write("\n".join(parts))
