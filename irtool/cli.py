"""The `irtool` command line: convert, inspect, run, verify.

Exit codes: 0 ok, 1 the work failed (bad file, conversion error, mismatch),
2 usage error. User errors print one line, never a traceback (--debug shows
it). Outputs are written atomically and never overwrite without --force.
"""
import argparse
import os
import sys
import zipfile

import numpy as np

from irtool.errors import IRToolError


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser():
    p = _Parser(prog="irtool", description="Convert, inspect, run and verify models through one IR.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("convert", help="convert a model file (to ONNX by default)",
                       description="Convert a model file. .pt2 files (torch.export.save) convert "
                                   "without running code. Pickled modules (torch.save(model)) and "
                                   "TorchScript archives run code from the file when loaded, and so "
                                   "can Keras files with Lambda layers or custom classes, .h5 "
                                   "files, and SavedModels (their graphs run TensorFlow ops): these "
                                   "are refused unless --trust-code, except SavedModels whose every "
                                   "op irtool itself can convert.")
    c.add_argument("src", help="model file: .pt2, .pt/.pth, .keras, .h5, SavedModel folder, .pb, "
                               ".onnx or .irz")
    c.add_argument("-o", "--output", help="output path (default: SRC's stem with the new extension)")
    c.add_argument("--to", choices=["onnx", "irz", "torch", "savedmodel"], default="onnx",
                   help="onnx (default), irz, torch (a torch.export ExportedProgram, .pt2) or "
                        "savedmodel (a TensorFlow SavedModel folder)")
    c.add_argument("--opset", type=int, help="ONNX opset (17-21, default 18)")
    c.add_argument("--verify", action="store_true",
                   help="run the numpy runtime and onnxruntime on random inputs and compare")
    c.add_argument("--force", action="store_true", help="overwrite an existing output file")
    c.add_argument("--keep-params", action="store_true",
                   help="ONNX: keep every parameter under its own name (default: fold batch norm "
                        "and per-channel scales into conv weights, as an inference export)")
    _source_options(c)

    i = sub.add_parser("inspect", help="show inputs, outputs, parameters and ops of a model")
    i.add_argument("file")
    i.add_argument("--text", action="store_true", help="print the IR text form too")
    _source_options(i)

    r = sub.add_parser("run", help="run a model on inputs from .npy files")
    r.add_argument("file")
    r.add_argument("--input", dest="feeds", action="append", default=[], metavar="NAME=PATH.npy")
    r.add_argument("--backend", choices=["numpy", "onnxruntime"], default="numpy")
    r.add_argument("-o", "--output", help="save outputs to this .npz instead of printing")
    r.add_argument("--force", action="store_true")
    r.add_argument("--trust-code", action="store_true", help="see convert --help")

    t = sub.add_parser("train", help="train a model in the IR on arrays from an .npz file")
    t.add_argument("model", help="model file (.pt2, .pt, .onnx, .irz)")
    t.add_argument("--data", required=True, metavar="DATA.npz",
                   help="arrays named after the model's inputs, plus 'target'")
    t.add_argument("--loss", required=True, choices=["mse", "l1", "cross_entropy", "bce_with_logits"])
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=None, help="default: the whole data set")
    t.add_argument("--backend", choices=["numpy", "onnxruntime"], default="numpy")
    t.add_argument("-o", "--output", help="trained model (.irz or .onnx; default MODEL's stem + .trained.irz)")
    t.add_argument("--force", action="store_true")
    _source_options(t)

    v = sub.add_parser("verify", help="compare the source framework, the numpy runtime and "
                                      "onnxruntime on random inputs")
    v.add_argument("file")
    v.add_argument("--opset", type=int)
    _source_options(v)
    return p


def _source_options(p):
    p.add_argument("--input", dest="inputs", action="append", default=[], type=_input_spec,
                   metavar="NAME:SHAPE[:DTYPE]",
                   help="example input for pickled/TorchScript modules, e.g. x:1x3x224x224:float32")
    p.add_argument("--dynamic", action="append", default=[], type=_dynamic_spec, metavar="NAME:AXIS=SYMBOL",
                   help="make an input axis symbolic, e.g. x:0=batch")
    p.add_argument("--trust-code", action="store_true",
                   help="allow loading files that run code when opened (pickled modules, TorchScript, "
                        "Keras Lambda layers, .h5 files, SavedModels with ops irtool does not convert)")
    p.add_argument("--inputs-as-nchw", action="append", default=[], metavar="NAME",
                   help="TensorFlow/Keras: take this channels-last image input channels-first, "
                        "so the exported model needs no boundary Transpose")


def _input_spec(text):
    from irtool.ir.dtypes import DTYPES
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:SHAPE[:DTYPE], e.g. x:1x3x224x224")
    try:
        shape = tuple(int(d) for d in parts[1].replace(",", "x").split("x") if d != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: shape must be ints joined by x, e.g. 1x3x224x224") from None
    if any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: negative dim")
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown dtype {dtype!r}; one of {', '.join(DTYPES)}")
    return parts[0], shape, dtype


def _dynamic_spec(text):
    name, sep, rest = text.partition(":")
    axis, eq, symbol = rest.partition("=")
    if not (sep and eq and name and symbol.isidentifier()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:AXIS=SYMBOL, e.g. x:0=batch")
    try:
        return name, int(axis), symbol
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: AXIS must be an int") from None


def _open(args, path):
    from irtool.sources import open_model
    dynamic = {}
    for name, axis, symbol in getattr(args, "dynamic", []):
        dynamic.setdefault(name, {})[axis] = symbol
    return open_model(path, trust_code=getattr(args, "trust_code", False),
                      inputs=getattr(args, "inputs", ()), dynamic=dynamic or None,
                      inputs_as_nchw=getattr(args, "inputs_as_nchw", None) or None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    if not debug:
        import warnings
        warnings.simplefilter("ignore")      # framework deprecation chatter is not the user's concern
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # and neither is TensorFlow's C++ logging
        import logging
        logging.disable(logging.CRITICAL)    # nor torch.export's logged tracebacks: the error says it
    else:
        os.environ["IRTOOL_DEBUG"] = "1"
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: convert, inspect, run, train or verify")
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"irtool: usage error: {_one_line(e)}", file=sys.stderr)
        return 2
    except IRToolError as e:
        if debug:
            raise
        print(f"irtool: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irtool: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, no traceback
        if debug:
            raise
        print(f"irtool: internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for details)",
              file=sys.stderr)
        return 1


EXTENSIONS = {"onnx": "onnx", "irz": "irz", "torch": "pt2", "savedmodel": "savedmodel"}


def _one_line(error):
    """An error message on one line, whatever the file names or the frameworks put in it."""
    return " ".join(str(error).split())


def _out_path(src, output, ext, force):
    if output is None:
        stem, src_ext = os.path.splitext(os.fspath(src).rstrip("/"))
        # never default to the source itself (model.onnx -> model.irtool.onnx)
        output = stem + (".irtool" if src_ext.lower() == ext else "") + ext
    if os.path.exists(output) and not force:
        raise UsageError(f"{output} exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"output folder {folder} does not exist")
    return output


from irtool.progress import Progress  # noqa: E402


def cmd_convert(args):
    out = _out_path(args.src, args.output, "." + EXTENSIONS[args.to], args.force)
    with Progress(f"reading {args.src}"):
        graph, reference = _open(args, args.src)
    if args.to == "onnx":
        from irtool.exporters.onnx import export_onnx
        fold = not args.keep_params
        if args.verify:                      # verified before writing: a mismatch leaves no file behind
            from irtool.exporters.onnx import write_model
            with Progress(f"exporting {len(graph.nodes)} ops to ONNX"):
                model = export_onnx(graph, None, opset=args.opset, fold_params=fold)
            _verify(graph, model, reference=reference)
            write_model(model, out)          # the very model that was verified, exported once
        else:
            with Progress(f"exporting {len(graph.nodes)} ops to ONNX"):
                export_onnx(graph, out, opset=args.opset, fold_params=fold)
    elif args.to == "savedmodel":
        from irtool.exporters.tensorflow import save_savedmodel
        if args.verify:
            _verify(graph, None, reference=reference)
        with Progress("writing a SavedModel"):
            save_savedmodel(graph, out)
    elif args.to == "torch":
        from irtool.exporters.torch import save_exported_program
        if args.verify:
            _verify(graph, None, reference=reference)
        with Progress("writing a torch.export program"):
            save_exported_program(graph, out)
    else:
        from irtool.ir.serialize import save
        if args.verify:
            _verify(graph, None, reference=reference)
        save(graph, out)
    print(f"wrote {out}")
    return 0


def _verify(graph, model, opset=None, reference=None):
    """Source framework (when there is one) vs numpy runtime vs onnxruntime
    on the same random inputs; raises when any pair differs beyond tolerance."""
    import onnxruntime as ort

    from irtool.compare import differences, random_inputs, table, within_tolerance
    from irtool.exporters.onnx import export_onnx
    from irtool.runtime import run
    model = model or export_onnx(graph, None, opset=opset)
    inputs = random_inputs(graph)
    with Progress("verifying"):
        ours = run(graph, inputs)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: a for i, a in zip(model.graph.input, inputs)})
        source = reference(inputs) if reference else None
    names = [v.name for v in graph.outputs]
    rows = []
    pairs = []
    if source is not None:
        rows.append(("source vs numpy runtime", differences(names, source, ours)))
        rows.append(("source vs onnxruntime", differences(names, source, got)))
        pairs += [(source, ours), (source, got)]
    rows.append(("numpy vs onnxruntime", differences(names, ours, got)))
    pairs.append((ours, got))
    print(table(rows))
    if source is not None and len(source) != len(ours):
        raise IRToolError(f"verification failed: the source model returns {len(source)} outputs, "
                          f"the converted one {len(ours)}")
    if not all(within_tolerance(a, b) for a, b in pairs):
        raise IRToolError("verification failed: results differ beyond tolerance (rtol 1e-4, atol 1e-5)")
    print("verify: ok")


def cmd_verify(args):
    graph, reference = _open(args, args.file)
    _verify(graph, None, args.opset, reference)
    return 0


def cmd_inspect(args):
    g, _ = _open(args, args.file)
    print(f"model: {args.file}  ({len(g.nodes)} ops)")
    print("inputs:")
    for v in g.inputs:
        print(f"  {v.name}: {v.type}")
    print("outputs:")
    for v in g.outputs:
        print(f"  {v.name}: {v.type}")
    nbytes = sum(p.data.nbytes for p in g.params.values())
    trainable = sum(p.data.size for p in g.params.values() if p.trainable)
    print(f"parameters: {g.param_count():,} ({trainable:,} trainable), {nbytes:,} bytes in {len(g.params)} tensors")
    print("ops:")
    for name, count in g.op_histogram().items():
        print(f"  {name:<24} {count}")
    if args.text:
        print(g)
    return 0


def cmd_run(args):
    from irtool.runtime import run
    g, _ = _open(args, args.file)
    out = _out_path(args.file, args.output, ".npz", args.force) if args.output else None
    feeds = {}
    for item in args.feeds:
        name, sep, path = item.partition("=")
        if not sep:
            raise UsageError(f"--input {item!r}: expected NAME=PATH.npy")
        feeds[name] = _load_npy(path)
    results = run(g, feeds, backend=args.backend)
    if out:
        import io

        from irtool.ir.serialize import atomic_write
        buf = io.BytesIO()
        np.savez(buf, **{v.name: r for v, r in zip(g.outputs, results)})
        atomic_write(out, buf.getvalue())
        print(f"wrote {out}")
    else:
        for v, r in zip(g.outputs, results):
            print(f"{v.name}: {r.dtype}{list(r.shape)}")
            print(np.array2string(r, threshold=50))
    return 0


def cmd_train(args):
    from irtool.ir import optim
    from irtool.runtime.trainer import Trainer
    if args.epochs < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UsageError("--epochs and --batch-size must be positive")
    stem = os.path.splitext(args.model.rstrip("/"))[0]
    out = _out_path(args.model, args.output or stem + ".trained.irz", "", args.force)
    if not out.endswith((".irz", ".onnx")):
        raise UsageError(f"{out}: the trained model is written as .irz or .onnx")
    data = _load_npz(args.data)
    graph, _ = _open(args, args.model)
    extra = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        opt = optim.SGD(args.lr, momentum=args.momentum, **extra)
    else:
        opt = optim.OPTIMIZERS[args.optimizer](args.lr, **extra)
    trainer = Trainer(graph, args.loss, opt, backend=args.backend)
    means = trainer.fit(data, epochs=args.epochs, batch_size=args.batch_size)
    for i, m in enumerate(means, 1):
        print(f"epoch {i}: mean loss {m:.6g}")
    if out.endswith(".onnx"):
        trainer.export_onnx(out)
    else:
        from irtool.ir.serialize import save
        save(trainer.trained_graph(), out)
    print(f"wrote {out}")
    return 0


def _load_npz(path):
    from irtool.errors import FileFormatError
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise FileFormatError(f"{path}: not an .npz archive of named arrays")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise FileFormatError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    except (AttributeError, TypeError):     # np.load gave a plain array: no context manager
        raise FileFormatError(f"{path}: not an .npz archive of named arrays") from None


def _load_npy(path):
    from irtool.errors import FileFormatError
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise FileFormatError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise FileFormatError(f"{path}: an .npz archive, not a single .npy array")
    return arr


COMMANDS = {"convert": cmd_convert, "inspect": cmd_inspect, "run": cmd_run, "train": cmd_train,
            "verify": cmd_verify}

if __name__ == "__main__":
    sys.exit(main())
