"""The irtool command line end to end: exit codes, one-line errors, atomic
outputs that never clobber, convert --verify on .irz and .onnx."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import irtool


def _cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "irtool.cli", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _mlp_graph():
    rng = np.random.default_rng(0)
    b = irtool.Builder("mlp")
    x = b.input("x", "float32", ("batch", 4))
    w1 = b.param("fc1.weight", rng.standard_normal((4, 8)).astype(np.float32))
    b1 = b.param("fc1.bias", rng.standard_normal(8).astype(np.float32))
    w2 = b.param("fc2.weight", rng.standard_normal((8, 2)).astype(np.float32))
    h = b.exp(b.neg(b.add(b.matmul(x, w1), b1)))
    return b.build([b.matmul(h, w2)])


@pytest.fixture
def irz(tmp_path):
    path = tmp_path / "mlp.irz"
    irtool.save(_mlp_graph(), path)
    return path


def test_convert_verify_writes_valid_onnx(irz):
    code, out, err = _cli("convert", str(irz), "--verify")
    assert code == 0, err
    assert "numpy vs onnxruntime" in out and "verify: ok" in out
    onnx_path = irz.with_suffix(".onnx")
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    # an inference export: matmul + bias folds into one Gemm on a transposed weight
    assert [n.op_type for n in model.graph.node][0] == "Gemm"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_convert_keep_params_keeps_every_param_name(irz):
    code, out, err = _cli("convert", str(irz), "--verify", "--keep-params", "--force")
    assert code == 0, err
    model = onnx.load(str(irz.with_suffix(".onnx")))
    assert {t.name for t in model.graph.initializer} == {"fc1.weight", "fc1.bias", "fc2.weight"}


def test_convert_refuses_to_overwrite_without_force(irz):
    target = irz.with_suffix(".onnx")
    target.write_bytes(b"precious")
    code, _, err = _cli("convert", str(irz))
    assert code == 2 and "--force" in err and "Traceback" not in err
    assert target.read_bytes() == b"precious"
    code, _, err = _cli("convert", str(irz), "--force")
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(target)))


def test_convert_onnx_to_irz_round_trip(irz, tmp_path):
    assert _cli("convert", str(irz), "-o", str(tmp_path / "m.onnx"))[0] == 0
    code, _, err = _cli("convert", str(tmp_path / "m.onnx"), "--to", "irz", "-o", str(tmp_path / "back.irz"))
    assert code == 0, err
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    a = irtool.run(irtool.load(irz), [x])[0]
    c = irtool.run(irtool.load(tmp_path / "back.irz"), [x])[0]
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("content,name,needle", [
    (None, "missing.irz", "no such file"),
    (b"", "empty.irz", "empty"),
    (b"garbage bytes here....", "bad.irz", "not an .irz"),
    (b"hello", "model.txt", "unknown model file type"),
    (b"\x08\x01garbage", "bad.onnx", ""),
])
def test_bad_files_give_one_line_and_exit_1(tmp_path, content, name, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out, err = _cli("convert", str(path))
    assert code == 1
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("irtool: error:")
    assert needle in err
    assert sorted(os.listdir(tmp_path)) == ([name] if content is not None else [])


def test_usage_errors_exit_2():
    assert _cli()[0] == 2
    assert _cli("convert")[0] == 2
    assert _cli("convert", "x.irz", "--to", "tflite")[0] == 2
    assert _cli("frobnicate")[0] == 2


def test_inspect_and_run(irz, tmp_path):
    code, out, _ = _cli("inspect", str(irz), "--text")
    assert code == 0
    assert "x: float32[batch,4]" in out and "parameters: 56" in out and "matmul" in out and "graph mlp(" in out
    x = np.ones((2, 4), np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = _cli("run", str(irz), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"))
    assert code == 0, err
    y = np.load(tmp_path / "y.npz")
    expected = irtool.run(irtool.load(irz), [x])[0]
    np.testing.assert_array_equal(list(y.values())[0], expected)
    code, out, err = _cli("run", str(irz), "--input", f"x={tmp_path / 'x.npy'}", "--backend", "onnxruntime")
    assert code == 0, err
    code, _, err = _cli("run", str(irz), "--input", "x=" + str(tmp_path / "nope.npy"))
    assert code == 1 and "no such file" in err
    np.save(tmp_path / "bad.npy", np.ones((2, 5), np.float32))
    code, _, err = _cli("run", str(irz), "--input", "x=" + str(tmp_path / "bad.npy"))
    assert code == 1 and "x" in err and "Traceback" not in err


def test_verify_command(irz):
    code, out, err = _cli("verify", str(irz))
    assert code == 0, err
    assert "verify: ok" in out


def test_train_command(tmp_path):
    rng = np.random.default_rng(0)
    b = irtool.Builder("linreg")
    x = b.input("x", "float32", ("n", 1))
    w = b.param("w", np.zeros((1, 1), np.float32))
    c = b.param("b", np.zeros((1,), np.float32))
    irtool.save(b.build([b.add(b.matmul(x, w), c)]), tmp_path / "linreg.irz")
    xs = rng.random((100, 1)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=xs, target=3 * xs + 2)
    code, out, err = _cli("train", str(tmp_path / "linreg.irz"), "--data", str(tmp_path / "data.npz"),
                          "--loss", "mse", "--optimizer", "sgd", "--lr", "0.5", "--epochs", "500")
    assert code == 0, err
    assert "epoch 500" in out
    trained = irtool.load(tmp_path / "linreg.trained.irz")
    assert abs(float(trained.params["w"].data.ravel()[0]) - 3) < 0.05
    assert abs(float(trained.params["b"].data.ravel()[0]) - 2) < 0.05
    code, _, err = _cli("train", str(tmp_path / "linreg.irz"), "--data", str(tmp_path / "data.npz"),
                        "--loss", "mse", "--lr", "0.1")
    assert code == 2 and "--force" in err
    np.savez(tmp_path / "bad.npz", x=xs)
    code, _, err = _cli("train", str(tmp_path / "linreg.irz"), "--data", str(tmp_path / "bad.npz"),
                        "--loss", "mse", "--lr", "0.1", "-o", str(tmp_path / "o.irz"))
    assert code == 1 and "target" in err and not (tmp_path / "o.irz").exists()
