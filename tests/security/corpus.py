"""Hostile model files, generated at test time into a temporary folder.

Nothing dangerous is checked in: every file is built here, on demand, by
`build(name, root)`. Each case names a *canary*, a path under `root` that the
file's payload creates if irtool ever runs it (pickles whose __reduce__ calls
os.system/eval/exec, Keras Lambda bytecode, a module that runs on import), or,
for formats that cannot carry code (ONNX external data, .irz), the output file
a conversion would write if the hostile file were accepted. A case passes when
irtool refuses it with a typed error (API) or one line and exit code 1 (CLI),
and the canary never appears.

The one thing a reader must know: payloads are real. `payload_is_real(case)`
runs the unsafe loader a careless tool would use and checks the canary appears,
so a corpus file that silently stopped being hostile fails the tests.
"""
import base64
import builtins
import hashlib
import io
import json
import marshal
import os
import pickle
import shlex
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUILDERS = {}


@dataclass
class Hostile:
    """One hostile input. `argv`: the CLI command that must refuse it (run in
    `root`). `api`: a callable that must raise an IRToolError (None where the
    input only reaches irtool through the CLI). `needles`: the error message
    must contain one of them (case-insensitive)."""
    name: str
    path: Path
    canary: Path
    argv: list
    api: object
    needles: tuple
    env: dict = field(default_factory=dict)       # extra environment for a subprocess CLI run
    syspath: tuple = ()                            # folders an in-process run must put on sys.path
    kind: str = ""                                 # torch | pt2 | npy | keras | onnx | irz
    real: object = None                            # () -> None: the unsafe load a careless tool does


def case(name, kind, requires=()):
    def register(fn):
        BUILDERS[name] = (fn, kind, tuple(requires))
        return fn
    return register


def build(name, root):
    fn, kind, _ = BUILDERS[name]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    h = fn(root)
    h.name, h.kind = name, kind
    return h


def requirements(name):
    return BUILDERS[name][2]


# -- payloads ------------------------------------------------------------------------------

class Reduce:
    """Pickles as `fn(*args)`: what unpickling it calls."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def touch_by_system(canary):
    return Reduce(os.system, f"touch {shlex.quote(str(canary))}")


def touch_by_eval(canary):
    return Reduce(builtins.eval, f"open({str(canary)!r}, 'w').close()")


def touch_by_exec(canary):
    return Reduce(builtins.exec, f"import pathlib\npathlib.Path({str(canary)!r}).touch()")


def _cli_convert(path, out, *extra):
    return ["convert", str(path), "-o", str(out), *extra]


# -- small valid models the hostile files are made from ---------------------------------------

def small_irz_bytes(reshape=False):
    """x: float32[2,3] -> x * w (+ a reshape when asked), one param."""
    import irtool
    from irtool.ir import serialize
    b = irtool.Builder("small")
    x = b.input("x", "float32", (2, 3))
    w = b.param("w", np.arange(6, dtype=np.float32).reshape(2, 3))
    y = b.mul(x, w)
    if reshape:
        y = b.reshape(y, shape=(3, 2))
    return serialize.to_bytes(b.build([y]))


def _write_small_irz(root):
    path = root / "model.irz"
    path.write_bytes(small_irz_bytes())
    return path


_PT2_CACHE = {}


def small_pt2_bytes():
    """An ExportedProgram (a Linear plus two tensor constants) as .pt2 bytes."""
    if "pt2" not in _PT2_CACHE:
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(3, 2)
                self.k = torch.ones(2) * 3

            def forward(self, x):
                return self.fc(x) + self.k

        buf = io.BytesIO()
        torch.export.save(torch.export.export(M().eval(), (torch.randn(2, 3),)), buf)
        _PT2_CACHE["pt2"] = buf.getvalue()
    return _PT2_CACHE["pt2"]


def _rewrite_zip(data, path, edit):
    """Copy zip `data` to `path`; edit(name, bytes) -> bytes for each member."""
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, edit(item.filename, src.read(item)))


# -- PyTorch pickles ----------------------------------------------------------------------------

def _torch_payload(root, name, obj, **save_kwargs):
    import torch
    path = root / name
    torch.save(obj, path, **save_kwargs)
    return path


def _torch_case(root, path, canary, needles=("refused",)):
    from irtool.sources import open_model

    def real():
        import torch
        torch.load(path, weights_only=False)
    return Hostile("", path, canary, _cli_convert(path, root / "out.onnx"),
                   lambda: open_model(path), needles, real=real)


@case("pt_reduce_os_system", "torch", requires=("torch",))
def _(root):
    canary = root / "canary"
    return _torch_case(root, _torch_payload(root, "evil.pt", touch_by_system(canary)), canary)


@case("pt_reduce_eval", "torch", requires=("torch",))
def _(root):
    canary = root / "canary"
    return _torch_case(root, _torch_payload(root, "evil.pt", touch_by_eval(canary)), canary)


@case("pt_reduce_exec", "torch", requires=("torch",))
def _(root):
    canary = root / "canary"
    return _torch_case(root, _torch_payload(root, "evil.pt", touch_by_exec(canary)), canary)


@case("pth_payload_nested_in_state_dict", "torch", requires=("torch",))
def _(root):
    import torch
    canary = root / "canary"
    sd = {"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2),
          "_metadata": {"fc": {"version": 1, "history": [("step", 3, {"note": touch_by_system(canary)})]}}}
    return _torch_case(root, _torch_payload(root, "weights.pth", sd), canary)


@case("pt_payload_in_optimizer_state", "torch", requires=("torch",))
def _(root):
    import torch
    canary = root / "canary"
    ckpt = {"model": {"w": torch.zeros(2)}, "optimizer": {"state": {0: {"step": touch_by_eval(canary)}}}}
    return _torch_case(root, _torch_payload(root, "checkpoint.pt", ckpt), canary)


@case("pt_legacy_pickle_format", "torch", requires=("torch",))
def _(root):
    import torch
    canary = root / "canary"
    path = _torch_payload(root, "legacy.pt", {"w": torch.zeros(2), "p": touch_by_system(canary)},
                          _use_new_zipfile_serialization=False)
    return _torch_case(root, path, canary)


@case("pt_legacy_tar_format", "torch", requires=("torch",))
def _(root):
    canary = root / "canary"
    path = root / "legacy_tar.pt"
    members = {"sys_info": pickle.dumps({"protocol_version": 1000, "little_endian": True}),
               "storages": pickle.dumps(touch_by_system(canary), protocol=2),
               "tensors": pickle.dumps(0, protocol=2), "pickle": pickle.dumps(0, protocol=2)}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return _torch_case(root, path, canary, needles=("refused", "legacy", "weights_only"))


@case("pt_bare_pickle", "torch", requires=("torch",))
def _(root):
    canary = root / "canary"
    path = root / "bare.pt"
    path.write_bytes(pickle.dumps(touch_by_exec(canary), protocol=0))
    h = _torch_case(root, path, canary, needles=("refused", "not a readable"))
    h.real = lambda: pickle.loads(path.read_bytes())
    return h


@case("pt_torchscript_archive", "torch", requires=("torch",))
def _(root):
    return _torchscript(root, "scripted.pt")


@case("pth_torchscript_archive_renamed", "torch", requires=("torch",))
def _(root):
    return _torchscript(root, "looks_like_weights.pth")


def _torchscript(root, name):
    """A real TorchScript archive: its code runs when torch.jit.load compiles it.
    The canary stands for anything that code would do (TorchScript itself has no
    file API); the point is that it is refused without --trust-code."""
    import torch

    class M(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = root / name
    torch.jit.script(M()).save(str(path))
    h = _torch_case(root, path, root / "canary", needles=("torchscript",))
    h.real = None
    return h


# -- .pt2 with pickled members ---------------------------------------------------------------------

def _pt2_with(root, canary, member_suffix, config_suffix=None, replacement=None):
    path = root / "evil.pt2"
    payload = replacement if replacement is not None else pickle.dumps(touch_by_eval(canary))

    def edit(name, data):
        if name.endswith(member_suffix):
            return payload
        if config_suffix and name.endswith(config_suffix):
            return data.replace(b'"use_pickle": false', b'"use_pickle": true')
        return data
    _rewrite_zip(small_pt2_bytes(), path, edit)
    from irtool.sources import open_model

    def real():
        import torch
        torch.export.load(path)
    return Hostile("", path, canary, _cli_convert(path, root / "out.onnx"), lambda: open_model(path),
                   ("refused", "pickle"), real=real)


@case("pt2_pickled_weight", "pt2", requires=("torch",))
def _(root):
    return _pt2_with(root, root / "canary", "weights/weight_0", "model_weights_config.json")


@case("pt2_pickled_constant", "pt2", requires=("torch",))
def _(root):
    return _pt2_with(root, root / "canary", "constants/tensor_0", "model_constants_config.json")


@case("pt2_pickled_sample_inputs", "pt2", requires=("torch",))
def _(root):
    import torch
    canary = root / "canary"
    buf = io.BytesIO()
    torch.save(((touch_by_system(canary),), {}), buf)
    h = _pt2_with(root, canary, "sample_inputs/model.pt", replacement=buf.getvalue())
    return h


# -- .npy / .npz inputs -----------------------------------------------------------------------------

def _npy_case(root, npy, canary, needles):
    model = _write_small_irz(root)
    return Hostile("", npy, canary, ["run", str(model), "--input", f"x={npy}", "-o", str(root / "out.npz")],
                   None, needles, real=lambda: np.load(npy, allow_pickle=True))


@case("npy_object_array", "npy")
def _(root):
    canary = root / "canary"
    npy = root / "x.npy"
    arr = np.empty(1, dtype=object)
    arr[0] = touch_by_system(canary)
    np.save(npy, arr, allow_pickle=True)
    return _npy_case(root, npy, canary, ("object", "pickle"))


@case("npy_header_with_code", "npy")
def _(root):
    canary = root / "canary"
    npy = root / "x.npy"
    header = ("{'descr': __import__('os').system('touch %s') or '<f4', 'fortran_order': False, "
              "'shape': (2, 3), }" % shlex.quote(str(canary)))
    header += " " * ((64 - (len(header) + 11) % 64) % 64) + "\n"
    npy.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") +
                    np.zeros((2, 3), np.float32).tobytes())

    def real():
        import ast
        text = npy.read_bytes()[10:10 + len(header)].decode("latin1")
        eval(compile(ast.parse(text, mode="eval"), "npy", "eval"))  # what a careless parser does
    h = _npy_case(root, npy, canary, ("npy", "header"))
    h.real = real
    return h


@case("npz_object_array_for_train", "npy")
def _(root):
    canary = root / "canary"
    model = _write_small_irz(root)
    npz = root / "data.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = touch_by_eval(canary)
    np.savez(npz, x=np.zeros((2, 3), np.float32), target=obj)

    def real():
        with np.load(npz, allow_pickle=True) as z:
            z["target"]
    return Hostile("", npz, canary, ["train", str(model), "--data", str(npz), "--loss", "mse", "--lr", "0.1",
                                     "-o", str(root / "out.irz")], None, ("object", "pickle"), real=real)


# -- Keras -------------------------------------------------------------------------------------------

def _lambda_code(canary):
    fn = eval(f"lambda x: (__import__('pathlib').Path({str(canary)!r}).touch(), x)[1]")
    return base64.encodebytes(marshal.dumps(fn.__code__)).decode("ascii")


def _input_layer():
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [None, 3], "dtype": "float32", "sparse": False, "ragged": False,
                       "name": "input_layer", "optional": False},
            "registered_name": None, "name": "input_layer", "inbound_nodes": []}


def _keras_config(layer):
    history = {"class_name": "__keras_tensor__",
               "config": {"shape": [None, 3], "dtype": "float32", "keras_history": ["input_layer", 0, 0]}}
    layer = dict(layer, name=layer["config"]["name"], inbound_nodes=[{"args": [history], "kwargs": {}}],
                 build_config={"input_shape": [None, 3]})
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": "functional", "trainable": True, "layers": [_input_layer(), layer],
                       "input_layers": ["input_layer", 0, 0],
                       "output_layers": [layer["name"], 0, 0]},
            "registered_name": "Functional", "build_config": {"input_shape": None}, "compile_config": {}}


def _lambda_layer(canary):
    return {"module": "keras.layers", "class_name": "Lambda",
            "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                       "function": {"class_name": "__lambda__",
                                    "config": {"code": _lambda_code(canary), "defaults": None,
                                               "closure": None}},
                       "arguments": {}},
            "registered_name": None}


def _module_layer(module):
    return {"module": module, "class_name": "Evil", "config": {"name": "evil", "trainable": True},
            "registered_name": None}


def _weights_h5():
    try:
        import h5py
    except ImportError:
        return b""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers")
        f.create_group("vars")
    return buf.getvalue()


def _write_keras(path, config):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", _weights_h5())


def _write_h5(path, config):
    import h5py
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = "3.15.1"
        g.attrs["layer_names"] = np.array([b"input_layer", config["config"]["layers"][1]["name"].encode()])
        for n in ("input_layer", config["config"]["layers"][1]["name"]):
            g.create_group(n).attrs["weight_names"] = np.array([], dtype="S1")


def _evil_module(root, canary):
    """A module that creates the canary when imported, on a folder that a
    subprocess gets on PYTHONPATH (an attacker-controlled plugin dir)."""
    mods = root / "mods"
    mods.mkdir(exist_ok=True)
    name = "irtool_canary_" + hashlib.sha1(str(root).encode()).hexdigest()[:12]
    (mods / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(canary)!r}).touch()\n"
                                     "class Evil:\n    pass\n")
    return name, mods


def _keras_case(root, path, canary, needles, mods=None):
    from irtool.sources import open_model

    def real():
        import keras
        try:
            keras.saving.load_model(path, safe_mode=False)
        except Exception:  # noqa: BLE001 - the payload ran before the model failed to build
            pass
    env = {"PYTHONPATH": str(mods)} if mods else {}
    return Hostile("", path, canary, _cli_convert(path, root / "out.onnx"), lambda: open_model(path),
                   needles, env=env, syspath=(str(mods),) if mods else (), real=real)


@case("keras_lambda_layer", "keras")
def _(root):
    canary = root / "canary"
    path = root / "model.keras"
    _write_keras(path, _keras_config(_lambda_layer(canary)))
    return _keras_case(root, path, canary, ("lambda",))


@case("keras_config_imports_arbitrary_module", "keras")
def _(root):
    canary = root / "canary"
    name, mods = _evil_module(root, canary)
    path = root / "model.keras"
    _write_keras(path, _keras_config(_module_layer(name)))
    return _keras_case(root, path, canary, (name, "module", "import"), mods)


@case("keras_config_builtins_exec", "keras")
def _(root):
    canary = root / "canary"
    path = root / "model.keras"
    layer = {"module": "keras.layers", "class_name": "Dense",
             "config": {"name": "dense", "units": 2, "dtype": "float32",
                        "activation": {"module": "builtins", "class_name": "function", "config": "exec",
                                       "registered_name": "function"}},
             "registered_name": None}
    _write_keras(path, _keras_config(layer))
    h = _keras_case(root, path, canary, ("builtins", "exec", "module", "activation"))
    h.real = None
    return h


@case("h5_lambda_layer", "keras", requires=("h5py",))
def _(root):
    canary = root / "canary"
    path = root / "model.h5"
    _write_h5(path, _keras_config(_lambda_layer(canary)))
    return _keras_case(root, path, canary, ("lambda",))


@case("h5_config_imports_arbitrary_module", "keras", requires=("h5py",))
def _(root):
    canary = root / "canary"
    name, mods = _evil_module(root, canary)
    path = root / "model.h5"
    _write_h5(path, _keras_config(_module_layer(name)))
    return _keras_case(root, path, canary, (name, "module", "import"), mods)


# -- ONNX ----------------------------------------------------------------------------------------

def onnx_model(location=None, offset=None, length=None, dims=(3, 2), raw=None, nodes=None, opsets=None):
    """x: float32[2,3] @ W -> y. W's data lives in external file `location`
    (with optional offset/length) or in the model as `raw` bytes."""
    from onnx import TensorProto, helper
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(dims))
    if location is not None:
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                t.external_data.add(key=k, value=str(v))
    else:
        t.raw_data = raw if raw is not None else np.arange(6, dtype=np.float32).tobytes()
    g = helper.make_graph(nodes or [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [t])
    return helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", 18)])


def _onnx_case(root, model, needles, folder="model"):
    """model.onnx in root/<folder>; a 24-byte secret in root/outside/secret.bin
    that a traversal would read. The canary is the converted output: accepting
    the file would copy the secret into it."""
    import irtool
    d = root / folder
    d.mkdir(exist_ok=True)
    path = d / "model.onnx"
    path.write_bytes(model.SerializeToString() if hasattr(model, "SerializeToString") else model)
    out = root / "out.irz"
    return Hostile("", path, out, ["convert", str(path), "--to", "irz", "-o", str(out)],
                   lambda: irtool.import_onnx(path), needles)


def _secret(root):
    (root / "outside").mkdir(exist_ok=True)
    p = root / "outside" / "secret.bin"
    p.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    return p


def _ext(root, location, needles, **kw):
    _secret(root)
    (root / "model").mkdir(exist_ok=True)
    return _onnx_case(root, onnx_model(location, **kw), needles)


@case("onnx_ext_dotdot", "onnx")
def _(root):
    return _ext(root, "../outside/secret.bin", ("leaves the model's folder",))


@case("onnx_ext_nested_dotdot", "onnx")
def _(root):
    (root / "model" / "a").mkdir(parents=True)
    return _ext(root, "a/../../outside/secret.bin", ("leaves the model's folder",))


@case("onnx_ext_backslash_dotdot", "onnx")
def _(root):
    return _ext(root, "..\\outside\\secret.bin", ("leaves the model's folder",))


@case("onnx_ext_absolute_path", "onnx")
def _(root):
    return _ext(root, str(_secret(root)), ("absolute path",))


@case("onnx_ext_windows_drive_path", "onnx")
def _(root):
    return _ext(root, "C:\\Windows\\secret.bin", ("absolute path",))


@case("onnx_ext_symlink_file", "onnx")
def _(root):
    secret = _secret(root)
    (root / "model").mkdir()
    os.symlink(secret, root / "model" / "weights.bin")
    return _onnx_case(root, onnx_model("weights.bin"), ("symlink",))


@case("onnx_ext_symlink_parent_dir", "onnx")
def _(root):
    _secret(root)
    (root / "model").mkdir()
    os.symlink(root / "outside", root / "model" / "data", target_is_directory=True)
    return _onnx_case(root, onnx_model("data/secret.bin"), ("symlink",))


@case("onnx_ext_symlink_to_dev_zero", "onnx")
def _(root):
    (root / "model").mkdir()
    os.symlink("/dev/zero", root / "model" / "weights.bin")
    return _onnx_case(root, onnx_model("weights.bin", length=2 ** 40), ("symlink",))


@case("onnx_ext_hardlink", "onnx")
def _(root):
    secret = _secret(root)
    (root / "model").mkdir()
    os.link(secret, root / "model" / "weights.bin")
    return _onnx_case(root, onnx_model("weights.bin"), ("hard link", "hardlink"))


@case("onnx_ext_directory", "onnx")
def _(root):
    (root / "model" / "weights.bin").mkdir(parents=True)
    return _onnx_case(root, onnx_model("weights.bin"), ("not a regular file",))


@case("onnx_ext_fifo", "onnx")
def _(root):
    (root / "model").mkdir()
    os.mkfifo(root / "model" / "weights.bin")          # opening it would block forever
    return _onnx_case(root, onnx_model("weights.bin"), ("not a regular file",))


@case("onnx_ext_missing_file", "onnx")
def _(root):
    return _ext(root, "weights.bin", ("missing",))


@case("onnx_ext_nul_byte_in_location", "onnx")
def _(root):
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    return _onnx_case(root, onnx_model("weights.bin\x00.txt"), ("location",))


@case("onnx_ext_non_utf8_location", "onnx")
def _(root):
    """The location is not UTF-8 (protobuf hands it over as bytes); a file of
    that (byte) name exists, so only the name can be the reason to refuse."""
    (root / "model").mkdir()
    with open(os.fsencode(root / "model") + b"/w\xffyz.bin", "wb") as f:
        f.write(np.arange(6, dtype=np.float32).tobytes())
    data = onnx_model("wxyz.bin").SerializeToString().replace(b"wxyz", b"w\xffyz")
    return _onnx_case(root, data, ("location", "utf-8", "external data"))


@case("onnx_ext_offset_past_end", "onnx")
def _(root):
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    return _onnx_case(root, onnx_model("weights.bin", offset=64, length=24), ("past the end",))


@case("onnx_ext_length_past_end", "onnx")
def _(root):
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    return _onnx_case(root, onnx_model("weights.bin", offset=8, length=2 ** 62), ("past the end",))


@case("onnx_ext_negative_offset", "onnx")
def _(root):
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    return _onnx_case(root, onnx_model("weights.bin", offset=-16, length=24), ("past the end", "offset"))


@case("onnx_initializer_claims_huge_dims", "onnx")
def _(root):
    return _onnx_case(root, onnx_model(dims=(2 ** 31, 2 ** 31)), ("initializer 'w'",))


@case("onnx_custom_domain_op", "onnx")
def _(root):
    from onnx import helper
    node = helper.make_node("LoadLibrary", ["x", "W"], ["y"], domain="com.evil", path="/tmp/evil.so")
    model = onnx_model(nodes=[node], opsets=[helper.make_opsetid("", 18), helper.make_opsetid("com.evil", 1)])
    return _onnx_case(root, model, ("loadlibrary",))


@case("onnx_recursive_local_function", "onnx")
def _(root):
    from onnx import helper
    fn = helper.make_function("local", "Loopy", ["a", "b"], ["c"],
                              [helper.make_node("Loopy", ["a", "b"], ["c"], domain="local")],
                              [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    model = onnx_model(nodes=[helper.make_node("Loopy", ["x", "W"], ["y"], domain="local")],
                       opsets=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    model.functions.append(fn)
    return _onnx_case(root, model, ("loopy",))


def _pb_varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field, value):
    """One protobuf field: bytes/str as length-delimited, int as varint."""
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    value = value.encode() if isinstance(value, str) else value
    return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value


@case("onnx_deeply_nested_subgraphs", "onnx")
def _(root):
    """If inside If, 400 deep, encoded by hand (onnx's own helpers refuse to
    build it): a parser without a depth limit overflows the C stack."""
    from onnx import TensorProto, helper
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]).SerializeToString()
    graph = (_pb(1, helper.make_node("Identity", ["x"], ["y"]).SerializeToString()) + _pb(2, "leaf") +
             _pb(12, out))
    for i in range(400):
        attr = _pb(1, "then_branch") + _pb(6, graph) + _pb(20, 5)
        node = _pb(1, "cond") + _pb(2, "y") + _pb(4, "If") + _pb(5, attr)
        graph = _pb(1, node) + _pb(2, f"level{i}") + _pb(12, out)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]).SerializeToString()
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, []).SerializeToString()
    graph += _pb(11, x) + _pb(11, cond)
    model = _pb(1, 8) + _pb(8, helper.make_opsetid("", 18).SerializeToString()) + _pb(7, graph)
    return _onnx_case(root, model, ("onnx",))


# -- .irz ----------------------------------------------------------------------------------------

def _irz_case(root, data, needles):
    import irtool
    path = root / "model.irz"
    path.write_bytes(data)
    out = root / "out.onnx"
    return Hostile("", path, out, _cli_convert(path, out), lambda: irtool.load(path), needles)


def irz_rewrite(data, edit):
    """A file whose checksums match a header edited by `edit(header_dict)`."""
    from irtool.ir import serialize
    (hlen,) = struct.unpack("<Q", data[8:16])
    start = len(serialize.MAGIC) + 8 + 32
    header, blob = json.loads(data[start:start + hlen]), data[start + hlen:]
    edit(header)
    hb = json.dumps(header).encode()
    return serialize.MAGIC + struct.pack("<Q", len(hb)) + hashlib.sha256(hb).digest() + hb + blob


@case("irz_truncated", "irz")
def _(root):
    data = small_irz_bytes()
    return _irz_case(root, data[:len(data) // 2], ("truncated",))


@case("irz_huge_header_length", "irz")
def _(root):
    data = small_irz_bytes()
    return _irz_case(root, data[:8] + struct.pack("<Q", 2 ** 63) + data[16:], ("exceeds",))


@case("irz_tensor_claims_impossible_shape", "irz")
def _(root):
    def edit(h):
        h["tensors"][0]["shape"] = [2 ** 40, 2 ** 40, 2 ** 40]
    return _irz_case(root, irz_rewrite(small_irz_bytes(), edit), ("claims",))


@case("irz_input_claims_negative_shape", "irz")
def _(root):
    def edit(h):
        h["inputs"][0]["shape"] = [-(2 ** 62), 3]
    return _irz_case(root, irz_rewrite(small_irz_bytes(), edit), ("negative dim",))


@case("irz_reshape_to_impossible_shape", "irz")
def _(root):
    def edit(h):
        node = [n for n in h["nodes"] if n["op"] == "reshape"][0]
        node["attrs"]["shape"] = {"tuple": [2 ** 40, 2 ** 40]}
    return _irz_case(root, irz_rewrite(small_irz_bytes(reshape=True), edit), ("invalid graph", "reshape"))


@case("irz_op_named_like_code", "irz")
def _(root):
    def edit(h):
        h["nodes"][0]["op"] = "__import__('os').system('touch canary')"
    return _irz_case(root, irz_rewrite(small_irz_bytes(), edit), ("unknown op",))


@case("irz_deeply_nested_header", "irz")
def _(root):
    from irtool.ir import serialize
    data = small_irz_bytes()
    (hlen,) = struct.unpack("<Q", data[8:16])
    start = len(serialize.MAGIC) + 8 + 32
    hb, blob = data[start:start + hlen], data[start + hlen:]
    hb = hb.replace(b'"nodes":[', b'"nodes":' + b"[" * 200000 + b"]" * 200000 + b',"_":[', 1)
    data = serialize.MAGIC + struct.pack("<Q", len(hb)) + hashlib.sha256(hb).digest() + hb + blob
    return _irz_case(root, data, ("malformed", "nested"))


NAMES = sorted(BUILDERS)
