"""ONNX export: validity at every opset, names and dim_params, atomic writes,
external data, the optimisation passes, and the onnxruntime backend."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import irtool
from irtool.errors import ExportError, IRToolError
from irtool.exporters import onnx as onnx_exporter


def _mlp(batch="batch"):
    rng = np.random.default_rng(0)
    b = irtool.Builder("mlp")
    x = b.input("x", "float32", (batch, 4))
    w = b.param("layer.weight", rng.standard_normal((4, 3)).astype(np.float32))
    c = b.param("layer.bias", rng.standard_normal(3).astype(np.float32))
    y = b.reduce_sum(b.exp(b.neg(b.add(b.matmul(x, w), c))), axes=(1,))
    return b.build([y])


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_every_opset_is_valid_and_matches(opset):
    g = _mlp()
    model = irtool.export_onnx(g, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    x = np.random.default_rng(1).standard_normal((7, 4)).astype(np.float32)
    np.testing.assert_allclose(_ort(model, {"x": x})[0], irtool.run(g, [x])[0], rtol=1e-5, atol=1e-6)


def test_names_and_dim_params_survive():
    model = irtool.export_onnx(_mlp())
    assert [i.name for i in model.graph.input] == ["x"]
    assert {t.name for t in model.graph.initializer} >= {"layer.weight", "layer.bias"}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_bad_opset_is_a_clear_error():
    with pytest.raises(ExportError, match="opset 9"):
        irtool.export_onnx(_mlp(), opset=9)


def test_gradient_graph_runs_on_stock_onnxruntime():
    g = _mlp()
    b = irtool.Builder("loss")
    vmap = b.copy_graph(g)
    loss = b.reduce_sum(vmap[g.outputs[0]])
    grad = irtool.grad(b.build([loss]))
    model = irtool.export_onnx(grad)
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    for batch in (1, 3, 8, 17):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        for a, c in zip(irtool.run(grad, [x]), irtool.run(grad, [x], backend="onnxruntime")):
            np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-5)


def test_atomic_write_never_clobbers(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", boom)
    with pytest.raises(ExportError, match="No space left"):
        irtool.export_onnx(_mlp(), target)
    assert target.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_external_data_past_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_THRESHOLD", 16)
    path = tmp_path / "big.onnx"
    b = irtool.Builder("wide")
    x = b.input("x", "float32", ("batch", 64))
    w = b.param("w", np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32))
    g = b.build([b.matmul(x, w)])
    irtool.export_onnx(g, path)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], irtool.run(g, [x])[0], rtol=1e-5)


def test_optimizer_cancels_folds_and_dedupes():
    b = irtool.Builder("redundant")
    x = b.input("x", "float32", ("n", 3))
    t = b.transpose(b.transpose(x, perm=(1, 0)), perm=(1, 0))       # cancels
    k = b.mul(b.const(2.0, "float32"), b.const(3.0, "float32"))       # folds to 6
    e1 = b.exp(t)
    e2 = b.exp(t)                                                     # CSE with e1
    r = b.reshape(b.reshape(b.add(e1, e2), shape=(-1,)), shape=("n", 3))  # reshape pair cancels
    g = b.build([b.mul(r, k)])
    model = irtool.export_onnx(g)
    ops = [n.op_type for n in model.graph.node]
    assert "Transpose" not in ops and ops.count("Exp") == 1 and "Reshape" not in ops
    assert ops.count("Mul") == 1
    x0 = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(_ort(model, {"x": x0})[0], irtool.run(g, [x0])[0], rtol=1e-6)
    assert model.graph.output[0].name == g.outputs[0].name


def test_output_that_is_an_input_gets_identity():
    b = irtool.Builder("passthrough")
    x = b.input("x", "float32", (2,))
    g = b.build([x, b.neg(x)])
    model = irtool.export_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    x0 = np.array([1.0, -2.0], np.float32)
    out = _ort(model, {"x": x0})
    np.testing.assert_array_equal(out[0], x0)


def test_ort_backend_caches_its_session(monkeypatch):
    g = _mlp()
    x = np.ones((2, 4), np.float32)
    first = irtool.run(g, [x], backend="onnxruntime")
    calls = []
    real = onnx_exporter.to_model
    monkeypatch.setattr(onnx_exporter, "to_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = irtool.run(g, {"x": x}, backend="onnxruntime")
    assert calls == []
    np.testing.assert_array_equal(first[0], second[0])


def test_cuda_device_without_gpu_is_a_clear_error():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present; the GPU path is tested in test_gpu.py")
    with pytest.raises(IRToolError, match="onnxruntime-gpu"):
        irtool.run(_mlp(), [np.ones((2, 4), np.float32)], backend="onnxruntime", device="cuda")


def test_ort_backend_checks_input_dtype():
    with pytest.raises(IRToolError, match="float32"):
        irtool.run(_mlp(), [np.ones((2, 4), np.float64)], backend="onnxruntime")
