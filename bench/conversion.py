"""Conversion time: in process (each converter from the in-memory model to
an ONNX file) and whole process (`irtool convert x.pt2` vs a python -c
script running torch.onnx.export on the same .pt2). Converters are timed
interleaved, round by round."""
import os
import sys

from bench import converters
from bench.context import quiet
from bench.measure import measure_many, subprocess_fn
from bench.report import Row


def one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def run_convert(ctx):
    rows = []
    cases = [(c, converters.TORCH_PEERS) for c in ctx.torch_cases()]
    cases += [(c, converters.KERAS_PEERS) for c in ctx.keras_cases()]
    for case, peers in cases:
        print(f"  convert {case.name}", flush=True)
        paths = {"irtool": ctx.path(f"{case.name}.irtool.onnx")}
        paths.update({k: ctx.path(f"{case.name}.{k}.onnx") for k in peers})
        fns = {"irtool": lambda: converters.convert_ours(ctx, case, paths["irtool"])}
        fns.update({k: (lambda fn=fn, k=k: fn(case, paths[k])) for k, (fn, _) in peers.items()})
        res = measure_many(fns, ctx.repeats.convert, warmup=1)
        for k, v in res.items():
            if not isinstance(v, Exception):
                ctx.files[(case.name, k)] = paths[k]
        ours = res["irtool"]
        if isinstance(ours, Exception):
            ctx.note(f"convert {case.name}: irtool failed: {one_line(ours)}")
            ours = None
        for key, (_, label) in peers.items():
            theirs, notes = res[key], ""
            if isinstance(theirs, Exception):
                theirs, notes = None, f"peer failed: {one_line(theirs)}"
            rows.append(Row("convert", case.name, label, ours, theirs, notes))
    return rows


PEER_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import torch
ep = torch.export.load(sys.argv[1])
torch.onnx.export(ep, f=sys.argv[2], dynamo=True, opset_version=18, verbose=False)
"""


def _irtool_cli():
    script = os.path.join(os.path.dirname(sys.executable), "irtool")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "irtool.cli"]


def run_process(ctx):
    import torch
    from torch.export import Dim
    rows = []
    cases = ctx.torch_cases()
    if ctx.quick:
        cases = [c for c in cases if c.name == "cnn"] or cases[:1]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    for case in cases:
        print(f"  process {case.name}", flush=True)
        pt2 = ctx.path(f"{case.name}.pt2")
        dyn = {n: {a: Dim.AUTO for a in axes} for n, axes in case.dynamic.items()}
        with quiet():
            torch.export.save(torch.export.export(case.model, case.inputs, dynamic_shapes=dyn), pt2)
        ours_out, peer_out = ctx.path(f"{case.name}.cli.onnx"), ctx.path(f"{case.name}.cli_peer.onnx")
        res = measure_many({"ours": subprocess_fn(_irtool_cli() + ["convert", pt2, "-o", ours_out, "--force"],
                                                  env=env),
                            "peer": subprocess_fn([sys.executable, "-c", PEER_SCRIPT, pt2, peer_out], env=env)},
                           ctx.repeats.process, warmup=1, min_repeats=1)
        notes = [f"{who} failed: {one_line(v)}" for who, v in res.items() if isinstance(v, Exception)]
        ours, theirs = (None if isinstance(res[k], Exception) else res[k] for k in ("ours", "peer"))
        rows.append(Row("process", case.name, "python -c torch.onnx.export(.pt2 program, dynamo=True)",
                        ours, theirs, "; ".join(notes)))
        for p in (ours_out, peer_out, pt2):
            if os.path.exists(p):
                os.remove(p)
    return rows
