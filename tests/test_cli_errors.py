"""Bad input never loses data: every CLI command, given a missing, empty or
mistyped file, a wrong --input, an unknown option value, or a write that fails
(read-only folder, full disk: injected errors, since root ignores permissions),
prints one clear line on stderr, exits 1 (the work failed) or 2 (usage), shows
no traceback, leaves no partial output, and leaves an existing output file
byte-for-byte intact. The Python API raises typed errors (irtool.errors.*).

The CLI runs in-process (irtool.cli.main) so faults can be injected with
monkeypatch; tests/test_cli.py covers the `python -m irtool.cli` entry point.
"""
import builtins
import errno
import os
import tempfile

import numpy as np
import pytest

import irtool
from irtool.cli import main
from irtool.errors import ExportError, FileFormatError, IRToolError, IRTypeError, UnsupportedError

ENOSPC = (errno.ENOSPC, "No space left on device")
EACCES = (errno.EACCES, "Permission denied")


# -- fixtures and helpers ----------------------------------------------------------------------

def _graph():
    rng = np.random.default_rng(0)
    b = irtool.Builder("m")
    x = b.input("x", "float32", ("n", 3))
    w = b.param("w", rng.standard_normal((3, 2)).astype(np.float32))
    return b.build([b.add(b.matmul(x, w), 1.0)])


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A working folder with a model in each format irtool reads without
    torch, inputs, and data; the CLI runs with it as the current folder."""
    g = _graph()
    irtool.save(g, tmp_path / "model.irz")
    irtool.export_onnx(g, tmp_path / "model.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    np.savez(tmp_path / "data.npz", x=np.ones((4, 3), np.float32), target=np.zeros((4, 2), np.float32))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _listing(folder):
    return sorted(os.listdir(folder))


def _clean_failure(code, err, codes=(1, 2)):
    """One line on stderr, the right exit code, no traceback, no 'internal error'."""
    assert code in codes, (code, err)
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith(("irtool: error:", "irtool: usage error:")), err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 1:
        assert err.startswith("irtool: error:"), err
    if code == 2:
        assert err.startswith("irtool: usage error:"), err


def _fails(capsys, ws, *argv, codes=(1, 2), needle=None):
    """Run the CLI, expect a clean failure; nothing in the folder may change."""
    listing = _listing(ws)
    before = {f: (ws / f).read_bytes() for f in listing if (ws / f).is_file()}
    code, out, err = _cli(capsys, *argv)
    _clean_failure(code, err, codes)
    if needle is not None:
        assert needle.lower() in err.lower(), err
    assert _listing(ws) == listing, "a file appeared or vanished"
    for f, data in before.items():
        assert (ws / f).read_bytes() == data, f"{f} changed"
    return err


def _torch_export_available():
    try:
        from irtool.exporters.torch import save_exported_program  # noqa: F401
    except Exception:  # noqa: BLE001 - being written by another helper
        return False
    return True


# the commands, each with one output it writes (or None) -----------------------------------------

def _commands(model):
    return {
        "convert": ["convert", model, "-o", "out.onnx"],
        "inspect": ["inspect", model],
        "run": ["run", model, "--input", "x=x.npy"],
        "verify": ["verify", model],
        "train": ["train", model, "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "-o", "out.irz"],
    }


COMMANDS = ["convert", "inspect", "run", "verify", "train"]


# -- missing, empty, mistyped model files --------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_missing_model_file(capsys, ws, command):
    _fails(capsys, ws, *_commands("nowhere.irz")[command], codes=(1,), needle="no such file")


@pytest.mark.parametrize("ext", [".irz", ".onnx", ".pt", ".pth", ".pt2"])
@pytest.mark.parametrize("command", COMMANDS)
def test_empty_model_file(capsys, ws, command, ext):
    (ws / f"empty{ext}").write_bytes(b"")
    _fails(capsys, ws, *_commands(f"empty{ext}")[command], codes=(1,), needle="empty")


@pytest.mark.parametrize("name,content,needle", [
    pytest.param(name, content, needle, id=name) for name, content, needle in [
        ("model.txt", b"hello", "unknown model file type"),
        ("model", b"hello", "no extension"),
        ("MODEL.ZIP", b"PK\x05\x06" + b"\x00" * 18, "unknown model file type"),
        ("irz_inside.onnx", None, "onnx"),            # an .irz file named .onnx
        ("onnx_inside.irz", None, "not an .irz"),       # an ONNX file named .irz
        ("garbage.onnx", b"\x08\x01\x12\x04junk\xff\xff\xff", "onnx"),
        ("garbage.irz", b"IRZ\x00v002" + b"\xff" * 30, "truncated"),
    ]])
@pytest.mark.parametrize("command", COMMANDS)
def test_wrong_or_lying_extension(capsys, ws, command, name, content, needle):
    if content is None:
        content = (ws / ("model.irz" if name.endswith(".onnx") else "model.onnx")).read_bytes()
    (ws / name).write_bytes(content)
    _fails(capsys, ws, *_commands(name)[command], codes=(1,), needle=needle)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_given_as_the_model(capsys, ws, command):
    (ws / "folder").mkdir()
    _fails(capsys, ws, *_commands("folder")[command], codes=(1,))


@pytest.mark.parametrize("command", COMMANDS)
def test_model_file_not_readable(capsys, ws, command, monkeypatch):
    """A read error (EACCES; injected, root reads anything) is one line, exit 1."""
    real_open = builtins.open

    def deny(file, mode="r", *a, **k):
        if os.fspath(file).endswith("model.irz") and "r" in mode:
            raise PermissionError(*EACCES)
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", deny)
    _fails(capsys, ws, *_commands("model.irz")[command], codes=(1,), needle="permission denied")


# -- run: wrong inputs -------------------------------------------------------------------------------

def _bad_npy(ws, kind):
    path = ws / f"{kind}.npy"
    if kind == "wrong_shape":
        np.save(path, np.ones((2, 4), np.float32))
    elif kind == "wrong_rank":
        np.save(path, np.ones((2, 3, 1), np.float32))
    elif kind == "wrong_dtype":
        np.save(path, np.ones((2, 3), np.float64))
    elif kind == "int_dtype":
        np.save(path, np.ones((2, 3), np.int64))
    elif kind == "text":
        path.write_text("1 2 3\n4 5 6\n")
    elif kind == "truncated":
        np.save(path, np.ones((20, 3), np.float32))
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "header_only":
        np.save(path, np.ones((2, 3), np.float32))
        path.write_bytes(path.read_bytes()[:128])
    elif kind == "npz_named_npy":
        np.savez(path.with_suffix(".npz"), x=np.ones((2, 3), np.float32))
        os.replace(path.with_suffix(".npz"), path)
    return path.name


@pytest.mark.parametrize("kind,needle", [
    ("wrong_shape", "shape"), ("wrong_rank", "shape"), ("wrong_dtype", "float32"), ("int_dtype", "float32"),
    ("text", "npy"), ("truncated", "npy"), ("header_only", "npy"),
    ("npz_named_npy", "npy"),
])
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_run_with_a_bad_input_array(capsys, ws, kind, needle, backend):
    name = _bad_npy(ws, kind)
    _fails(capsys, ws, "run", "model.irz", "--input", f"x={name}", "--backend", backend, "-o", "y.npz",
           codes=(1,), needle=needle)


def test_run_with_an_empty_npy(capsys, ws):
    (ws / "empty.npy").write_bytes(b"")
    _fails(capsys, ws, "run", "model.irz", "--input", "x=empty.npy", codes=(1,), needle="npy")


@pytest.mark.parametrize("argv,codes,needle", [
    (["--input", "x=nowhere.npy"], (1,), "no such file"),
    (["--input", "y=x.npy"], (1,), "unknown input"),
    ([], (1,), "missing input"),
    (["--input", "x"], (2,), "NAME=PATH"),
    (["--input", "=x.npy"], (1, 2), None),
    (["--input", "x=x.npy", "--backend", "tpu"], (2,), "invalid choice"),
    (["--input", "x=x.npy", "--frobnicate"], (2,), "unrecognized"),
    (["--input", "x=x.npy", "-o", "no_such_folder/y.npz"], (2,), "does not exist"),
])
def test_run_usage_and_input_errors(capsys, ws, argv, codes, needle):
    _fails(capsys, ws, "run", "model.irz", *argv, codes=codes, needle=needle)


# -- unknown option values ------------------------------------------------------------------------

@pytest.mark.parametrize("argv,codes", [
    ([], (2,)),
    (["frobnicate"], (2,)),
    (["convert"], (2,)),
    (["convert", "model.irz", "--to", "tflite"], (2,)),
    (["convert", "model.irz", "--opset", "99", "-o", "o.onnx"], (1, 2)),
    (["convert", "model.irz", "--opset", "seventeen"], (2,)),
    (["convert", "model.irz", "--input", "x:2xq"], (2,)),
    (["convert", "model.irz", "--input", "x:2x3:complex64"], (2,)),
    (["convert", "model.irz", "--input", "x:-2x3"], (2,)),
    (["convert", "model.irz", "--dynamic", "x=batch"], (2,)),
    (["convert", "model.irz", "--dynamic", "x:zero=batch"], (2,)),
    (["convert", "model.irz", "--dynamic", "x:0=not a name"], (2,)),
    (["convert", "model.irz", "--bogus-flag"], (2,)),
    (["inspect", "model.irz", "--text=yes"], (2,)),
    (["verify", "model.irz", "--opset", "5"], (1, 2)),
    (["verify", "model.irz", "--opset", "1e3"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "hinge", "--lr", "0.1"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "fast"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "--optimizer", "lbfgs"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "--epochs", "0"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "--batch-size", "-4"], (2,)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "-1", "-o", "t.irz"], (1, 2)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "nan", "-o", "t.irz"], (1, 2)),
    (["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "-o", "t.txt"], (2,)),
])
def test_unknown_option_values(capsys, ws, argv, codes):
    _fails(capsys, ws, *argv, codes=codes)


# -- train: bad data ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,needle", [
    ("missing", "no such file"), ("no_target", "target"), ("wrong_shape", "shape"),
    ("wrong_dtype", "float32"), ("object", "npz"), ("empty_npz", "x"),
    ("corrupt", "npz"),
])
def test_train_with_bad_data(capsys, ws, kind, needle):
    path = ws / "bad.npz"
    if kind == "no_target":
        np.savez(path, x=np.ones((4, 3), np.float32))
    elif kind == "wrong_shape":
        np.savez(path, x=np.ones((4, 5), np.float32), target=np.zeros((4, 2), np.float32))
    elif kind == "wrong_dtype":
        np.savez(path, x=np.ones((4, 3), np.float64), target=np.zeros((4, 2), np.float32))
    elif kind == "corrupt":
        path.write_bytes((ws / "data.npz").read_bytes()[:60])
    elif kind == "object":
        np.savez(path, x=np.array([{"a": 1}], dtype=object), target=np.zeros((4, 2), np.float32))
    elif kind == "empty_npz":
        np.savez(path)
    _fails(capsys, ws, "train", "model.irz", "--data", "bad.npz", "--loss", "mse", "--lr", "0.1",
           "-o", "t.irz", codes=(1,), needle=needle)


def test_train_with_an_npy_as_data(capsys, ws):
    _fails(capsys, ws, "train", "model.irz", "--data", "x.npy", "--loss", "mse", "--lr", "0.1", "-o", "t.irz",
           codes=(1,), needle="npz")


# -- outputs: never clobbered, never half-written ---------------------------------------------------

WRITERS = {
    "convert-onnx": ["convert", "model.irz", "-o", "{out}.onnx"],
    "convert-irz": ["convert", "model.onnx", "--to", "irz", "-o", "{out}.irz"],
    "convert-torch": ["convert", "model.irz", "--to", "torch", "-o", "{out}.pt2"],
    "run-npz": ["run", "model.irz", "--input", "x=x.npy", "-o", "{out}.npz"],
    "train-irz": ["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "-o", "{out}.irz"],
    "train-onnx": ["train", "model.irz", "--data", "data.npz", "--loss", "mse", "--lr", "0.1", "-o", "{out}.onnx"],
}
ONNX_WRITERS = ("convert-onnx", "train-onnx")


def _writer(name):
    if name == "convert-torch" and not _torch_export_available():
        pytest.skip("irtool.exporters.torch.save_exported_program is not available")
    argv = [a.format(out="result") for a in WRITERS[name]]
    return argv, argv[-1]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_existing_output_needs_force(capsys, ws, writer):
    argv, out = _writer(writer)
    (ws / out).write_bytes(b"precious bytes")
    _fails(capsys, ws, *argv, codes=(2,), needle="--force")
    assert (ws / out).read_bytes() == b"precious bytes"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writers_succeed_and_leave_only_their_output(capsys, ws, writer):
    """The baseline the fault tests compare against: the command works here."""
    argv, out = _writer(writer)
    before = _listing(ws)
    code, _, err = _cli(capsys, *argv)
    assert code == 0, err
    assert _listing(ws) == sorted(before + [out])
    assert oct(os.stat(ws / out).st_mode & 0o777) == oct(0o666 & ~_umask()), "output has unusual permissions"


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _FailingFile:
    """A writable file whose write() stores half the bytes, then fails (a disk
    filling up mid-write)."""

    def __init__(self, f, error):
        self._f, self._error = f, error

    def write(self, data):
        self._f.write(bytes(data)[:len(data) // 2])
        raise OSError(*self._error)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _inject(monkeypatch, fault):
    """Make every write into the working folder fail the way `fault` says."""
    real_open, real_fdopen = builtins.open, os.fdopen

    def raise_(error):
        def fn(*a, **k):
            raise OSError(*error) if error[0] != errno.EACCES else PermissionError(*error)
        return fn

    def writing(mode):
        return any(c in mode for c in "wax+")

    if fault == "read-only folder":        # creating anything in the folder fails
        monkeypatch.setattr(tempfile, "mkstemp", raise_(EACCES))
        monkeypatch.setattr(tempfile, "mkdtemp", raise_(EACCES))

        def deny(file, mode="r", *a, **k):
            if writing(mode):
                raise PermissionError(*EACCES)
            return real_open(file, mode, *a, **k)
        monkeypatch.setattr(builtins, "open", deny)
    elif fault == "disk full while writing":
        def half_open(file, mode="r", *a, **k):
            f = real_open(file, mode, *a, **k)
            return _FailingFile(f, ENOSPC) if writing(mode) and not isinstance(file, int) else f

        def half_fdopen(fd, mode="r", *a, **k):
            f = real_fdopen(fd, mode, *a, **k)
            return _FailingFile(f, ENOSPC) if writing(mode) else f
        monkeypatch.setattr(builtins, "open", half_open)
        monkeypatch.setattr(os, "fdopen", half_fdopen)
    elif fault == "disk full at fsync":
        monkeypatch.setattr(os, "fsync", raise_(ENOSPC))
    elif fault == "disk full at rename":
        monkeypatch.setattr(os, "replace", raise_(ENOSPC))
        monkeypatch.setattr(os, "rename", raise_(ENOSPC))
    elif fault == "interrupted at rename":
        def interrupt(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(os, "replace", interrupt)
        monkeypatch.setattr(os, "rename", interrupt)
    else:
        raise AssertionError(fault)


FAULTS = ["read-only folder", "disk full while writing", "disk full at fsync", "disk full at rename",
          "interrupted at rename"]


def _fault_params():
    for writer in WRITERS:
        for fault in FAULTS:
            if fault == "disk full at fsync" and writer in ONNX_WRITERS:
                continue          # onnx.save_model does not fsync: nothing to inject
            yield pytest.param(writer, fault, id=f"{writer}-{fault.replace(' ', '_')}")


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("writer,fault", list(_fault_params()))
def test_failed_write_loses_nothing(capsys, ws, monkeypatch, writer, fault, existing):
    argv, out = _writer(writer)
    if existing:
        (ws / out).write_bytes(b"the user's previous result")
        argv = argv + ["--force"]
    before = {f: (ws / f).read_bytes() for f in _listing(ws)}
    _inject(monkeypatch, fault)
    code, _, err = _cli(capsys, *argv)
    monkeypatch.undo()
    if fault == "interrupted at rename":
        assert code == 130 and err == "irtool: interrupted\n", err
    else:
        _clean_failure(code, err, codes=(1,))
        assert "cannot write" in err and out in err, err
        assert ("Permission denied" if fault == "read-only folder" else "No space left on device") in err
    assert _listing(ws) == sorted(before), "a temp file or a partial output was left behind"
    for f, data in before.items():
        assert (ws / f).read_bytes() == data, f"{f} changed"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_real_read_only_folder(capsys, ws, writer, tmp_path_factory):
    argv, out = _writer(writer)
    ro = tmp_path_factory.mktemp("read_only")
    argv = argv[:-1] + [str(ro / out)]
    os.chmod(ro, 0o500)
    try:
        code, _, err = _cli(capsys, *argv)
        assert os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o700)
    _clean_failure(code, err, codes=(1,))


def _wide_model(ws):
    b = irtool.Builder("wide")
    x = b.input("x", "float32", ("n", 64))
    w = b.param("w", np.ones((64, 64), np.float32))
    irtool.save(b.build([b.matmul(x, w)]), ws / "wide.irz")


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_failed_write_with_external_data_loses_nothing(capsys, ws, monkeypatch, existing):
    from irtool.exporters import onnx as onnx_exporter
    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_THRESHOLD", 16)
    _wide_model(ws)
    out = ws / "out"
    out.mkdir()
    argv = ["convert", "wide.irz", "-o", out / "big.onnx"]
    if existing:
        (out / "big.onnx").write_bytes(b"old model")
        (out / "big.onnx.data").write_bytes(b"old weights")
        argv.append("--force")
    before = {f: (out / f).read_bytes() for f in _listing(out)}
    real_replace = os.replace

    def model_rename_fails(src, dst):
        if os.fspath(dst).endswith("big.onnx"):
            raise OSError(*ENOSPC)
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", model_rename_fails)
    code, _, err = _cli(capsys, *argv)
    monkeypatch.undo()
    _clean_failure(code, err, codes=(1,))
    assert _listing(out) == sorted(before)
    for f, data in before.items():
        assert (out / f).read_bytes() == data, f"{f} changed"


def test_force_replaces_a_model_with_external_data_from_its_own_folder(capsys, ws, monkeypatch):
    from irtool.exporters import onnx as onnx_exporter
    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_THRESHOLD", 16)
    _wide_model(ws)
    code, _, err = _cli(capsys, "convert", "wide.irz", "-o", "big.onnx")
    assert code == 0, err
    code, _, err = _cli(capsys, "convert", "wide.irz", "-o", "big.onnx", "--force")
    assert code == 0, err


# -- the Python API: typed errors --------------------------------------------------------------------

def test_api_errors_are_typed(tmp_path):
    g = _graph()
    with pytest.raises(FileFormatError):
        irtool.load(tmp_path / "missing.irz")
    (tmp_path / "empty.irz").write_bytes(b"")
    with pytest.raises(FileFormatError):
        irtool.load(tmp_path / "empty.irz")
    with pytest.raises(FileFormatError):
        irtool.load(tmp_path)
    with pytest.raises(FileFormatError):
        irtool.import_onnx(tmp_path / "missing.onnx")
    with pytest.raises(FileFormatError):
        irtool.import_onnx(b"\x08\x01\x12\x04junk\xff\xff")
    with pytest.raises(IRTypeError):
        irtool.run(g, [np.ones((2, 4), np.float32)])
    with pytest.raises(IRTypeError):
        irtool.run(g, [np.ones((2, 3), np.float64)])
    with pytest.raises(IRTypeError):
        irtool.run(g, [])
    with pytest.raises(IRTypeError):
        irtool.run(g, {"y": np.ones((2, 3), np.float32)})
    with pytest.raises(IRTypeError):
        irtool.run(g, [np.ones((2, 4), np.float32)], backend="onnxruntime")
    with pytest.raises(IRToolError):
        irtool.run(g, [np.ones((2, 3), np.float32)], backend="tpu")
    with pytest.raises(IRToolError):
        irtool.export_onnx(g, opset=99)
    with pytest.raises(UnsupportedError):
        irtool.trace(object(), ())
    with pytest.raises(ExportError):
        irtool.save(g, tmp_path / "no_such_folder" / "m.irz")
    with pytest.raises(IRToolError):
        irtool.grad(g)                                   # non-scalar output
    assert sorted(os.listdir(tmp_path)) == ["empty.irz"]


def test_export_onnx_into_a_missing_folder_is_an_export_error(tmp_path):
    with pytest.raises(ExportError):
        irtool.export_onnx(_graph(), tmp_path / "no_such_folder" / "m.onnx")


@pytest.mark.parametrize("source", ["empty file", "empty bytes", "no graph"])
def test_import_onnx_of_a_model_without_a_graph(tmp_path, source):
    import onnx
    if source == "empty file":
        (tmp_path / "empty.onnx").write_bytes(b"")
        arg = tmp_path / "empty.onnx"
    elif source == "empty bytes":
        arg = b""
    else:
        arg = onnx.helper.make_model(onnx.GraphProto()).SerializeToString()[:0] + \
            onnx.ModelProto(ir_version=8, opset_import=[onnx.helper.make_opsetid("", 18)]).SerializeToString()
    with pytest.raises(FileFormatError):
        irtool.import_onnx(arg)


@pytest.mark.parametrize("api,fault", [
    pytest.param(api, fault, id=f"{api}-{fault.replace(' ', '_')}")
    for api in ("save", "export_onnx", "atomic_write")
    for fault in ("disk full at rename", "disk full while writing", "read-only folder")])
def test_api_write_failures_are_export_errors(tmp_path, monkeypatch, api, fault):
    from irtool.ir.serialize import atomic_write
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    g = _graph()
    call = {"save": lambda: irtool.save(g, path), "export_onnx": lambda: irtool.export_onnx(g, path),
            "atomic_write": lambda: atomic_write(path, b"new bytes")}[api]
    _inject(monkeypatch, fault)
    with pytest.raises(ExportError) as e:
        call()
    monkeypatch.undo()
    assert str(e.value).startswith(f"cannot write {path}")
    assert os.listdir(tmp_path) == ["out.bin"] and path.read_bytes() == b"old"


def test_atomic_write_keeps_an_existing_files_mode(tmp_path):
    from irtool.ir.serialize import atomic_write
    path = tmp_path / "m.irz"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and os.stat(path).st_mode & 0o777 == 0o640


# -- --input shapes and dtypes for a pickled module (the real program: torch logs to the real stderr) --

@pytest.fixture(scope="module")
def whole_module(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tests.torch_zoo import MLP
    folder = tmp_path_factory.mktemp("whole")
    torch.save(MLP().eval(), folder / "whole.pt")            # forward(x): x is [batch, 6]
    return folder


def _program(*argv, cwd):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))       # the pickle names tests.torch_zoo
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "irtool.cli", *map(str, argv)], capture_output=True, text=True,
                       cwd=cwd, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("spec,needle", [
    ("x:2x7", "reduction dim"),
    ("x:2x6:int64", "dtype"),
    ("y:2x6", "not arguments of forward"),
])
def test_pickled_module_with_a_wrong_input_spec(whole_module, spec, needle):
    before = _listing(whole_module)
    code, _, err = _program("convert", "whole.pt", "--trust-code", "--input", spec, "-o", "out.onnx",
                            cwd=whole_module)
    _clean_failure(code, err, codes=(1,))
    assert needle in err
    assert _listing(whole_module) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_newline_in_a_file_name_keeps_the_error_on_one_line(capsys, ws, command):
    _fails(capsys, ws, *_commands("bad\nname.irz")[command], codes=(1,), needle="no such file")
