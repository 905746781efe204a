"""Hostile files are refused before anything in them runs.

Every case of tests/security/corpus.py (built at test time in a tmp folder)
must be refused with a typed error through the Python API, with one line on
stderr and exit code 1 through the CLI (in-process and as `python -m
irtool.cli`), and its canary must never appear: no payload ran, no output was
written. `test_payload_is_real` proves the payloads work when loaded the
careless way, so a refusal here means something.
"""
import os
import subprocess
import sys

import pytest

from irtool.errors import IRToolError
from tests.security import corpus

# bugs in files this module's owner may not edit: each is a strict xfail, listed in the report
BUGS = {}


def _marks(name, message=True):
    """xfail marks of a case: strict ones for known bugs (BUGS)."""
    return [pytest.mark.xfail(strict=True, reason=BUGS[name])] if name in BUGS else []


def _params(names, message=True):
    return [pytest.param(n, marks=_marks(n, message), id=n) for n in names]


def _build(name, tmp_path):
    for module in corpus.requirements(name):
        pytest.importorskip(module)
    return corpus.build(name, tmp_path)


def _listing(root):
    out = set()
    for folder, dirs, files in os.walk(root):
        for f in dirs + files:
            out.add(os.path.relpath(os.path.join(folder, f), root))
    return out


def _has_needle(message, needles, root):
    """The message says why (one of `needles`), not merely that the format is
    unsupported; the tmp folder's name is cut out so it cannot match."""
    low = message.replace(str(root), "<tmp>").lower()
    return "not supported by this version" not in low and any(n.lower() in low for n in needles)


def test_corpus_has_at_least_25_hostile_inputs():
    assert len(corpus.NAMES) >= 25
    kinds = {corpus.BUILDERS[n][1] for n in corpus.NAMES}
    assert kinds == {"torch", "pt2", "npy", "keras", "onnx", "irz"}


@pytest.mark.parametrize("name", _params(n for n in corpus.NAMES if not n.startswith(("npy_", "npz_"))))
def test_api_refuses(name, tmp_path):
    h = _build(name, tmp_path)
    before = _listing(tmp_path)
    sys_path = list(sys.path)
    sys.path[:0] = list(h.syspath)
    try:
        with pytest.raises(IRToolError) as e:
            h.api()
    finally:
        sys.path[:] = sys_path
    msg = str(e.value)
    assert not h.canary.exists(), f"{name}: the payload ran"
    assert _listing(tmp_path) == before
    assert _has_needle(msg, h.needles, tmp_path), f"{name}: message {msg!r} names none of {h.needles}"


def _cli_in_process(h):
    from irtool.cli import main
    sys_path = list(sys.path)
    sys.path[:0] = list(h.syspath)
    try:
        return main(h.argv)
    finally:
        sys.path[:] = sys_path


@pytest.mark.parametrize("name", _params(corpus.NAMES, message=False))
def test_cli_refuses_in_process(name, tmp_path, capsys):
    h = _build(name, tmp_path)
    before = _listing(tmp_path)
    code = _cli_in_process(h)
    out, err = capsys.readouterr()
    assert not h.canary.exists(), f"{name}: the payload ran or an output was written"
    assert _listing(tmp_path) == before, "files appeared or vanished"
    assert code == 1, (code, err)
    assert err.startswith("irtool: error:") and "Traceback" not in err, err


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n), id=n) for n in corpus.NAMES])
def test_cli_error_is_one_clear_line(name, tmp_path, capsys):
    h = _build(name, tmp_path)
    code = _cli_in_process(h)
    _, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1, err
    assert _has_needle(err, h.needles, tmp_path), f"{name}: {err!r} names none of {h.needles}"


# the real entry point, for one case of each kind (the in-process test covers them all)
SUBPROCESS = ["pt_reduce_os_system", "pt_torchscript_archive", "pt2_pickled_weight", "npy_object_array",
              "keras_lambda_layer", "keras_config_imports_arbitrary_module", "onnx_ext_dotdot",
              "onnx_ext_symlink_parent_dir", "onnx_ext_hardlink", "irz_tensor_claims_impossible_shape"]


def _program_params():
    for n in SUBPROCESS:
        yield pytest.param(n, marks=_marks(n), id=n)


@pytest.mark.parametrize("name", list(_program_params()))
def test_cli_refuses_as_a_program(name, tmp_path):
    h = _build(name, tmp_path)
    before = _listing(tmp_path)
    env = dict(os.environ, **h.env)
    p = subprocess.run([sys.executable, "-m", "irtool.cli", *h.argv], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert not h.canary.exists(), f"{name}: the payload ran or an output was written"
    assert _listing(tmp_path) == before
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert _has_needle(p.stderr, h.needles, tmp_path), p.stderr
    assert p.stderr.startswith("irtool: error:") and p.stderr.count("\n") == 1, p.stderr


REAL = [n for n in corpus.NAMES if not n.startswith(("keras_", "h5_", "onnx_", "irz_"))
        and "torchscript" not in n]


@pytest.mark.parametrize("name", REAL)
def test_payload_is_real(name, tmp_path):
    """Loaded the careless way (pickle, torch.load(weights_only=False), a header
    evaluated as code), the payload does run: the refusals above are earned."""
    h = _build(name, tmp_path)
    assert h.real is not None
    try:
        h.real()
    except Exception:  # noqa: BLE001 - the payload returns junk the loader then chokes on
        pass
    assert h.canary.exists()


def test_keras_payloads_are_real(tmp_path):
    """The Keras Lambda payload runs when Keras loads the file with safe_mode=False
    (run in a subprocess: importing TensorFlow here would slow every test)."""
    pytest.importorskip("keras")
    h = corpus.build("keras_lambda_layer", tmp_path)
    code = ("import os, sys; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; sys.path.insert(0, sys.argv[2]);\n"
            "import keras\n"
            "try:\n    keras.saving.load_model(sys.argv[1], safe_mode=False)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    subprocess.run([sys.executable, "-c", code, str(h.path), os.getcwd()], capture_output=True, text=True,
                   timeout=300)
    assert h.canary.exists()


def test_keras_module_payload_is_real(tmp_path):
    """Importing the module that the config names runs it: the loader must refuse
    the config before importing anything it names."""
    import importlib
    h = corpus.build("keras_config_imports_arbitrary_module", tmp_path)
    name = [p.stem for p in (tmp_path / "mods").glob("*.py")][0]
    sys.path.insert(0, h.syspath[0])
    try:
        importlib.import_module(name)
    finally:
        sys.path.remove(h.syspath[0])
        sys.modules.pop(name, None)
    assert h.canary.exists()


@pytest.mark.parametrize("name", ["pt_reduce_os_system", "pt2_pickled_weight"])
def test_trusting_the_file_runs_it(name, tmp_path, capsys):
    """--trust-code is the only way to the payload (the flag is honoured)."""
    from irtool.cli import main
    h = _build(name, tmp_path)
    main(h.argv + ["--trust-code"])
    capsys.readouterr()
    assert h.canary.exists()
