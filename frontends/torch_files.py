"""Opening PyTorch files without running code the user did not trust.

- `.pt2` (torch.export.save): read natively first (frontends/pt2_reader.py:
  the archive's JSON program and raw tensor bytes, no torch.export.load, no
  pickle). Archives it does not handle fall back to torch.export.load with
  every pickle path disabled: tensors unpickle with weights_only=True,
  pickled objects are refused.
- `.pt`/`.pth`: `torch.load(weights_only=True)` first. A plain state_dict is
  refused with what to do instead; TorchScript archives and whole pickled
  modules run code when loaded, so they need `trust_code=True` (and example
  inputs, for pickled modules).
"""
import contextlib
import os
import zipfile

from irtool.errors import FileFormatError, IRToolError, UnsupportedError

TRUST_HINT = "it runs code from the file when loaded; pass --trust-code only if you trust its source"


class _Refused(Exception):
    """Raised inside torch's loader when it reaches for pickle; not a
    RuntimeError, so torch's fallbacks do not swallow it."""


@contextlib.contextmanager
def _no_pickled_code():
    import torch
    from torch.export.pt2_archive import _package as pkg
    real_load = torch.load

    def tensors_only(f, *args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(f, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise _Refused("the archive holds pickled Python objects")

    class NoPickle:
        loads = load = staticmethod(refuse)

    saved = (torch.load, pkg.pickle, torch._C._pickle_load_obj)
    torch.load, pkg.pickle, torch._C._pickle_load_obj = tensors_only, NoPickle, refuse
    try:
        yield
    finally:
        torch.load, pkg.pickle, torch._C._pickle_load_obj = saved


def _check_pt2_zip(path):
    if not zipfile.is_zipfile(path):
        raise FileFormatError(f"{path}: not a .pt2 archive (torch.export.save writes a zip file)")


def pt2_graph(path, trust_code=False, name=None, dim_names=None):
    """(IR Graph, ExportedProgram or None) of a .pt2 file: the native reader's
    graph when it handles the archive (no ExportedProgram is loaded then),
    else the graph of torch.export.load's program, loaded as load_pt2 does."""
    from irtool.frontends.pt2_reader import NotNative, read_pt2
    from irtool.frontends.torch_trace import from_exported_program
    _check_pt2_zip(path)
    try:
        return read_pt2(path, name=name, dim_names=dim_names), None
    except NotNative:
        pass
    ep = load_pt2(path, trust_code)
    # the program is ours alone: its weights need no snapshot copy
    return from_exported_program(ep, name=name or "model", dim_names=dim_names, copy_params=False), ep


def load_pt2(path, trust_code=False):
    """ExportedProgram from a .pt2 file (through torch.export.load)."""
    import pickle

    import torch
    _check_pt2_zip(path)
    try:
        if trust_code:
            return torch.export.load(path)
        with _no_pickled_code():
            return torch.export.load(path)
    except (_Refused, pickle.UnpicklingError) as e:
        raise FileFormatError(f"{path}: refused: {_first_line(e)} ({TRUST_HINT})") from None
    except IRToolError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's loader raises anything on a bad file
        raise FileFormatError(f"{path}: cannot read this .pt2 file ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _is_torchscript(path):
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_pt(path, trust_code=False):
    """What a .pt/.pth file holds: an nn.Module (trusted pickles only) or a
    TorchScript module (trusted only). Raises for state_dicts and bad files."""
    import pickle

    import torch
    if _is_torchscript(path):
        if not trust_code:
            raise FileFormatError(f"{path}: refused: this is a TorchScript archive; {TRUST_HINT}")
        return torch.jit.load(path, map_location="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_code:
            raise FileFormatError(f"{path}: refused: this file pickles Python objects beyond tensors "
                                  f"(e.g. a whole model saved with torch.save(model)); {TRUST_HINT}") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001
            raise FileFormatError(f"{path}: cannot load ({type(e2).__name__}: {_first_line(e2)})") from None
        del e
    except Exception as e:  # noqa: BLE001 - truncated zips, garbage, legacy tar files...
        raise FileFormatError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(obj, torch.nn.Module):
        return obj.eval()
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in _leaves(obj)):
        raise UnsupportedError(
            f"{path}: holds only a state_dict (weights without the model's code). Build the model in "
            "Python, call model.load_state_dict(torch.load(path, weights_only=True)), then "
            "irtool.trace(model, example_inputs) — or save it with torch.export.save as a .pt2 file")
    raise UnsupportedError(f"{path}: holds a {type(obj).__name__}, not a model")


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    else:
        yield obj


def example_inputs(specs, module):
    """torch tensors from --input specs [(name, shape, dtype)] in forward's order."""
    import inspect

    import numpy as np
    import torch

    from irtool.ir.dtypes import np_dtype
    if not specs:
        raise UnsupportedError("a pickled or TorchScript module has no recorded input shapes; "
                               "give them with --input NAME:SHAPE[:DTYPE], e.g. --input x:1x3x224x224")
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        params = [name for name, _, _ in specs]
    by_name = {name: (shape, dtype) for name, shape, dtype in specs}
    unknown = set(by_name) - set(params)
    if unknown:
        raise UnsupportedError(f"--input names {sorted(unknown)} are not arguments of forward({', '.join(params)})")
    rng = np.random.default_rng(0)
    tensors = []
    for p in params:
        if p not in by_name:
            break
        shape, dtype = by_name[p]
        if dtype.startswith(("float", "bfloat")):
            arr = rng.standard_normal(shape).astype(np_dtype("float32"))
            tensors.append(torch.from_numpy(arr).to(getattr(torch, dtype)))
        else:
            tensors.append(torch.from_numpy(rng.integers(0, 2, size=shape).astype(np_dtype(dtype))))
    return tuple(tensors)


def is_torch_file(path):
    return os.path.splitext(os.fspath(path))[1].lower() in (".pt", ".pth", ".pt2")


def convert_file(path, trust_code=False, input_specs=(), dynamic=None):
    """Graph and a reference runner (numpy arrays in, numpy arrays out) for a
    PyTorch file. `dynamic` is {input: {axis: symbol}}."""
    import torch

    from irtool.frontends.torch_trace import from_exported_program, trace
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    if os.fspath(path).lower().endswith(".pt2"):
        graph, ep = pt2_graph(path, trust_code, name=name, dim_names=dynamic)
        module = ep.module() if ep is not None else _LazyProgram(path, trust_code)
    else:
        module = load_pt(path, trust_code)
        args = example_inputs(list(input_specs), module)
        if isinstance(module, torch.jit.ScriptModule):
            if dynamic:
                raise UnsupportedError("--dynamic is not supported for TorchScript files (their converter "
                                       "fixes shapes); save the model with torch.export.save instead")
            from torch._export.converter import TS2EPConverter
            graph = from_exported_program(TS2EPConverter(module, args).convert(), name=name, copy_params=False)
        else:       # a module loaded from the file, never changed after: no snapshot copy
            graph = trace(module, args, dynamic_shapes=dynamic or None, name=name, share_params=True)

    def reference(arrays):
        with torch.no_grad():
            out = module(*[torch.from_numpy(a) for a in arrays])
        return [t.detach().numpy() for t in flatten_outputs(out)]

    return graph, reference


class _LazyProgram:
    """The .pt2 program as a module, loaded (through torch.export.load) on
    its first call only: the reference run of --verify."""

    def __init__(self, path, trust_code):
        self.path, self.trust_code, self.module = path, trust_code, None

    def __call__(self, *args):
        if self.module is None:
            self.module = load_pt2(self.path, self.trust_code).module()
        return self.module(*args)


def flatten_outputs(out):
    """The tensors of a module's output (tuples, dicts, transformers ModelOutput), in order."""
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    return []
