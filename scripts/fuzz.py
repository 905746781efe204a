"""Long fuzz runs: the checks of tests/test_fuzz.py with many more examples.

    python scripts/fuzz.py --examples 10000            # everything, 10,000 graphs
    python scripts/fuzz.py --only graphs --examples 20000 --jobs 4 --start 100000
    python scripts/fuzz.py --only onnx-bytes cli --examples 5000 --seed 7

Targets: `graphs` (random valid IR graphs on every backend, forward, gradients
and second order vs torch; seeds start..start+N), `onnx-bytes` (mutated ONNX
models through import_onnx), `onnx-models` (random one-node ONNX models, vs
onnxruntime), `irz-bytes` / `irz-header` (damaged .irz files), `cli` (random
argv through irtool.cli.main). Hypothesis targets run N examples each with a
random (or --seed) seed and stop at their first failure, which they shrink.

Every failure is printed with what reproduces it (a graph seed: rerun with
`--only graphs --start SEED --examples 1`); failures that match a bug already
reported (tests/test_fuzz.py KNOWN_BUGS, each with a strict-xfail regression
test) are counted, not reported. Exit status 1 when anything new turned up.
"""
import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGETS = ["graphs", "onnx-bytes", "onnx-models", "irz-bytes", "irz-header", "cli"]


def _graph_chunk(seeds):
    warnings.simplefilter("ignore")
    from tests import test_fuzz as F
    F.KNOWN_HITS.clear()
    found = []

    def on_mismatch(seed, prog, e):
        text = prog.describe() if prog is not None else f"seed {seed}"
        found.append(f"{text}\n{type(e).__name__}: {e}")
    counts = F.fuzz_graphs(seeds, on_mismatch=on_mismatch)
    return counts, found, dict(F.KNOWN_HITS)


def _pool(jobs):
    # a worker that dies (onnxruntime has segfaulted on odd models) breaks the pool
    # instead of hanging it, and the run reports the crash
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def run_graphs(start, n, jobs):
    seeds = list(range(start, start + n))
    chunk = max(1, min(250, n // (jobs * 4) or 1))
    chunks = [seeds[i:i + chunk] for i in range(0, n, chunk)]
    totals, found, known = {}, [], {}
    done = 0
    with _pool(jobs) as pool:
        futures = {pool.submit(_graph_chunk, c): c for c in chunks}
        for fut in concurrent.futures.as_completed(futures):
            try:
                counts, f, k = fut.result()
            except Exception as e:  # noqa: BLE001 - a crashed worker: report the seeds it had
                c = futures[fut]
                found.append(f"seeds {c[0]}..{c[-1]}: worker died ({type(e).__name__}: {e}); rerun them "
                             f"with --jobs 1 under python -X faulthandler")
                continue
            for key, v in counts.items():
                totals[key] = totals.get(key, 0) + v
            for key, v in k.items():
                known[key] = known.get(key, 0) + v
            found += f
            done += counts.get("graphs", 0) + counts.get("known bug", 0) + len(f)
            print(f"  graphs: {done}/{n} checked, {len(found)} new failures", file=sys.stderr, flush=True)
    return totals, found, known


def _hypothesis_target(args):
    name, n, seed, last = args
    os.environ["IRTOOL_FUZZ_LAST"] = last          # the model handed to onnxruntime last
    warnings.simplefilter("ignore")
    import hypothesis

    from tests import test_fuzz as F
    F.KNOWN_HITS.clear()
    if name == "onnx-bytes":
        fuzz = F._fuzz_import_mutations(n, derandomize=False)
    elif name == "onnx-models":
        fuzz = F._fuzz_random_models(n, derandomize=False)
    elif name == "irz-bytes":
        fuzz = F._fuzz_irz_bytes(n, derandomize=False)
    elif name == "irz-header":
        fuzz = F._fuzz_irz_header(n, derandomize=False)
    else:
        folder = tempfile.mkdtemp(prefix="irtool-cli-fuzz-")
        F._Workspace(folder)
        fuzz = F._fuzz_cli(n, lambda: folder, derandomize=False)
    fuzz = hypothesis.seed(seed)(fuzz)
    try:
        fuzz()
    except BaseException as e:  # noqa: BLE001 - reported with hypothesis' minimal example
        return name, {"examples": n}, ["".join(traceback.format_exception_only(type(e), e)).strip()[-4000:]], \
            dict(F.KNOWN_HITS)
    return name, {"examples": n}, [], dict(F.KNOWN_HITS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10000, help="graphs, and examples per hypothesis target")
    p.add_argument("--only", nargs="+", choices=TARGETS, default=TARGETS)
    p.add_argument("--start", type=int, default=1000, help="first graph seed (CI uses 0..499)")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    t0 = time.time()
    new, known = [], {}
    if "graphs" in args.only:
        print(f"graphs {args.start}..{args.start + args.examples - 1} on {args.jobs} processes", file=sys.stderr)
        totals, found, k = run_graphs(args.start, args.examples, args.jobs)
        print("graphs: " + ", ".join(f"{key} {v}" for key, v in sorted(totals.items())))
        new += [("graphs", f) for f in found]
        for key, v in k.items():
            known[key] = known.get(key, 0) + v
    others = [t for t in args.only if t != "graphs"]
    if others:
        print(f"hypothesis targets {', '.join(others)}: {args.examples} examples each, seed {seed}",
              file=sys.stderr)
        folder = tempfile.mkdtemp(prefix="irtool-fuzz-")
        with _pool(min(args.jobs, len(others))) as pool:
            futures = {pool.submit(_hypothesis_target, (t, args.examples, seed, os.path.join(folder, t + ".onnx"))): t
                       for t in others}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    name, counts, found, k = fut.result()
                except Exception as e:  # noqa: BLE001 - a crashed worker
                    name, counts, k = futures[fut], {"examples": args.examples}, {}
                    found = [f"worker died ({type(e).__name__}: {e}); the last model given to onnxruntime "
                             f"(if any) is {os.path.join(folder, name + '.onnx')}"]
                print(f"{name}: {counts['examples']} examples, {'FAILED' if found else 'ok'}")
                new += [(name, f) for f in found]
                for key, v in k.items():
                    known[key] = known.get(key, 0) + v
    for key, v in sorted(known.items()):
        print(f"known bug hit {v}x: {key}")
    for name, text in new:
        print(f"\n=== new failure in {name} ===\n{text}")
    print(f"\n{len(new)} new failures in {time.time() - t0:.0f} s")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
