"""Conversion time: in process (each converter from the in-memory model to
an ONNX file) and whole process (`irtool convert x.pt2` vs a python -c
script running torch.onnx.export on the same .pt2)."""
import os
import shutil
import sys

from bench import converters
from bench.context import quiet
from bench.measure import measure, time_subprocess
from bench.report import Row


def run_convert(ctx):
    rows = []
    r = ctx.repeats
    cases = [(c, converters.TORCH_PEERS, converters.irtool_torch) for c in ctx.torch_cases()]
    cases += [(c, converters.KERAS_PEERS, converters.irtool_keras) for c in ctx.keras_cases()]
    for case, peers, ours_fn in cases:
        print(f"  convert {case.name}", flush=True)
        path = ctx.path(f"{case.name}.irtool.onnx")
        try:
            ours = measure(lambda: ours_fn(case, path), r.convert, warmup=1)
            ctx.files[(case.name, "irtool")] = path
        except Exception as e:  # noqa: BLE001 - report and go on with the other rows
            ours = None
            ctx.note(f"convert {case.name}: irtool failed: {_one_line(e)}")
        for key, (fn, label) in peers.items():
            ppath = ctx.path(f"{case.name}.{key}.onnx")
            try:
                theirs = measure(lambda: fn(case, ppath), r.convert, warmup=1)
                ctx.files[(case.name, key)] = ppath
                notes = ""
            except Exception as e:  # noqa: BLE001
                theirs, notes = None, f"peer failed: {_one_line(e)}"
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
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="2")
    for case in cases:
        print(f"  process {case.name}", flush=True)
        pt2 = ctx.path(f"{case.name}.pt2")
        dyn = {n: {a: Dim.AUTO for a in axes} for n, axes in case.dynamic.items()}
        with quiet():
            torch.export.save(torch.export.export(case.model, case.inputs, dynamic_shapes=dyn), pt2)
        ours_out, peer_out = ctx.path(f"{case.name}.cli.onnx"), ctx.path(f"{case.name}.cli_peer.onnx")
        ours_cmd = _irtool_cli() + ["convert", pt2, "-o", ours_out, "--force"]
        peer_cmd = [sys.executable, "-c", PEER_SCRIPT, pt2, peer_out]
        ours = theirs = None
        notes = []
        try:
            ours = time_subprocess(ours_cmd, ctx.repeats.process, warmup=1, env=env)
        except Exception as e:  # noqa: BLE001
            notes.append(f"irtool failed: {_one_line(e)}")
        try:
            theirs = time_subprocess(peer_cmd, ctx.repeats.process, warmup=1, env=env)
        except Exception as e:  # noqa: BLE001
            notes.append(f"peer failed: {_one_line(e)}")
        rows.append(Row("process", case.name, "python -c torch.onnx.export(.pt2 program, dynamo=True)",
                        ours, theirs, "; ".join(notes)))
        for p in (ours_out, peer_out):
            if os.path.exists(p):
                os.remove(p)
    if shutil.which("irtool") is None and not os.path.exists(_irtool_cli()[0]):
        ctx.note("process: no `irtool` script on PATH; ran `python -m irtool.cli` instead")
    return rows


def _one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"
