"""python -m bench [--quick] [--only SECTION[,SECTION]] [--skip-large] [--models NAME,...] [--threads N] [--out DIR]

Measures irtool against its peers and writes DIR/results.md, results.json,
results.png (and profile.md when the profile section runs); DIR defaults to
this folder. Sections: convert, process, ort, numpy_infer, numpy_train,
ort_train, memory, profile ("numpy" = numpy_infer + numpy_train)."""
import os
import sys


def _threads_arg(argv):
    """--threads N, read before numpy loads (BLAS reads its thread count once)."""
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "2"


# The same number of compute threads everywhere (BLAS, torch, onnxruntime, TF).
THREADS = _threads_arg(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS if THREADS.isdigit() else "2"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

SECTIONS = ["convert", "process", "ort", "numpy_infer", "numpy_train", "ort_train", "memory", "profile"]
ALIASES = {"numpy": ["numpy_infer", "numpy_train"], "train": ["numpy_train", "ort_train"]}
MODELS = ["mlp", "cnn", "bert", "gpt2", "keras_cnn", "mobilenet_v2"]


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="fewer repeats and a smaller large model (smoke run)")
    p.add_argument("--only", action="append", default=[], metavar="SECTION",
                   help=f"run only these sections (comma-separated or repeated): {', '.join(SECTIONS)}, "
                        "numpy, train")
    p.add_argument("--skip-large", action="store_true", help="skip the multi-GB peak-memory section")
    p.add_argument("--models", help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--threads", type=int, default=2,
                   help="compute threads for every runtime (default 2); 1 gives steadier numbers on a loaded "
                        "machine")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                   help="folder for results.md/json/png and profile.md (default: bench/)")
    args = p.parse_args(argv)
    chosen = []
    for item in args.only:
        for s in item.split(","):
            s = s.strip()
            for name in ALIASES.get(s, [s]):
                if name not in SECTIONS:
                    p.error(f"unknown section {s!r}; choose from {', '.join(SECTIONS + list(ALIASES))}")
                if name not in chosen:
                    chosen.append(name)
    args.sections = [s for s in SECTIONS if s in chosen] if chosen else list(SECTIONS)
    if args.skip_large and "memory" in args.sections:
        args.sections.remove("memory")
    args.models = [m.strip() for m in args.models.split(",")] if args.models else None
    for m in args.models or []:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    return args


def _load_line(loads):
    overall = loads.get("all")
    if overall is None:
        return "Background load: unknown (no /proc/stat)."
    per = ", ".join(f"{s} {v:.1f}" for s, v in loads.items() if s != "all" and v is not None)
    warn = (" Other processes competed for the CPUs: timings are noisy, compare the minima too."
            if overall > 0.3 else "")
    return (f"Background load: other processes kept {overall:.1f} of {os.cpu_count()} cores busy on average "
            f"(by section: {per}).{warn}")


def _header(args, seconds, loads):
    import numpy
    import onnxruntime
    import torch

    import irtool
    versions = [f"irtool {irtool.__version__}", f"torch {torch.__version__}",
                f"onnxruntime {onnxruntime.__version__}", f"numpy {numpy.__version__}"]
    if "tensorflow" in sys.modules:
        versions.append(f"tensorflow {sys.modules['tensorflow'].__version__}")
    try:
        import psutil
        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        ram = "RAM unknown"
    mode = "quick (smoke run, few repeats)" if args.quick else "full"
    return [f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, {mode}, sections: "
            f"{', '.join(args.sections)}; took {seconds / 60:.1f} min.",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {ram}, Python {platform.python_version()}; "
            + ", ".join(versions) + ".",
            _load_line(loads),
            f"{args.threads} compute thread(s) on every side (irtool's own onnxruntime sessions follow "
            "OMP_NUM_THREADS). Each cell: median (min–max) over repeats, "
            "time.perf_counter(); ratio = ours / peer on medians (< 1: irtool is faster or smaller).",
            "Models: mlp 784-256-256-10 (batch 32); cnn 3 conv+BN, 32x32 (batch 4); bert and gpt2 "
            "2 layers, hidden 128, 2 heads, vocab 1000, batch 4 x seq 64, random weights from "
            "transformers configs."]


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")
    import torch
    torch.set_num_threads(args.threads)
    if str(args.threads) != os.environ["OMP_NUM_THREADS"]:
        print("bench: pass --threads as `--threads N` or `--threads=N` on the command line", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import conversion, execution, latency, memory, profiling, report
    from bench.context import Context
    runners = {"convert": conversion.run_convert, "process": conversion.run_process, "ort": latency.run_ort,
               "numpy_infer": execution.run_numpy_infer, "numpy_train": execution.run_numpy_train,
               "ort_train": execution.run_ort_train, "memory": memory.run_memory}
    os.makedirs(args.out, exist_ok=True)
    rows = []
    start = time.perf_counter()
    from bench.measure import BackgroundLoad
    whole, loads = BackgroundLoad(), {}
    with tempfile.TemporaryDirectory(prefix="irtool-bench-") as work:
        ctx = Context(args.quick, work, args.models, args.threads)
        if args.skip_large:
            ctx.note("memory: skipped (--skip-large)")
        for section in args.sections:
            print(f"[{section}]", flush=True)
            t0, load = time.perf_counter(), BackgroundLoad()
            if section == "profile":
                profiling.run_profile(ctx, os.path.join(args.out, "profile.md"))
            else:
                new = runners[section](ctx)
                rows += new
                if new:
                    print(report.section_table(section, new), flush=True)
            loads[section] = load.cores()
            print(f"  ({time.perf_counter() - t0:.0f} s; background load {loads[section] or 0:.1f} cores)",
                  flush=True)
    loads["all"] = whole.cores()
    header = _header(args, time.perf_counter() - start, loads)
    notes = list(ctx.notes)
    chart_note = report.write_chart(os.path.join(args.out, "results.png"), rows)
    if chart_note:
        notes.append(chart_note)
    text = report.markdown(rows, header, notes)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    report.write_json(os.path.join(args.out, "results.json"), rows, header, notes)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
