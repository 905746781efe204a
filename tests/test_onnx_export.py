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


# -- conv / batch-norm / bias / Gemm fusion ----------------------------------------------------

def _keras_style_cnn():
    """What the TF frontend makes of Conv2D(bias) -> BatchNormalization -> ReLU -> Conv2D(depthwise)
    -> BatchNormalization -> Dense: NHWC input transposed once, biases added through per-channel
    reshapes, inference batch norm spelled out as x * s + (beta - mean * s), s = gamma * rsqrt(var + eps).
    Zero biases (Keras' initialisation) and frozen moving statistics, like a fresh Keras model."""
    rng = np.random.default_rng(0)
    f32 = np.float32

    def p(name, *shape, trainable=True, kind="normal"):
        data = {"normal": lambda: rng.standard_normal(shape) * 0.5, "var": lambda: rng.uniform(0.5, 1.5, shape),
                "zeros": lambda: np.zeros(shape)}[kind]()
        return b.param(name, data.astype(f32), trainable=trainable)

    def bn(x, name, c):
        var = p(f"{name}/moving_variance", c, trainable=False, kind="var")
        s = b.mul(b.rsqrt(b.add(var, b.const(1e-3, "float32"))), p(f"{name}/gamma", c))
        y = b.mul(x, b.reshape(s, shape=(1, c, 1, 1)))
        shift = b.sub(p(f"{name}/beta", c), b.mul(p(f"{name}/moving_mean", c, trainable=False), s))
        return b.add(y, b.reshape(shift, shape=(1, c, 1, 1)))

    b = irtool.Builder("keras_style")
    x = b.input("x", "float32", ("batch", 8, 8, 3))
    h = b.conv(b.transpose(x, perm=(0, 3, 1, 2)), p("conv/kernel", 6, 3, 3, 3), pads=(1, 1, 1, 1))
    h = b.add(h, b.reshape(p("conv/bias", 6), shape=(1, 6, 1, 1)))
    h = b.relu(bn(h, "bn", 6))
    h = bn(b.conv(h, p("dw/kernel", 6, 1, 3, 3), groups=6, strides=(2, 2)), "bn_1", 6)
    h = b.reduce_mean(h, axes=(2, 3))
    out = b.add(b.matmul(h, p("dense/kernel", 6, 4)), p("dense/bias", 4, kind="zeros"))
    return b.build([out])


def _torch_style_cnn():
    """conv -> batch_norm (the composite) -> relu -> conv used twice -> linear spelled
    matmul(x, w^T) + b, plus a per-channel constant scale and shift after a conv."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    b = irtool.Builder("torch_style")

    def p(name, *shape, trainable=True):
        return b.param(name, rng.standard_normal(shape).astype(f32) * 0.5, trainable=trainable)

    x = b.input("x", "float32", ("batch", 3, 8, 8))
    h = b.conv(x, p("conv1.weight", 5, 3, 3, 3), p("conv1.bias", 5), pads=(1, 1, 1, 1))
    var = b.param("bn1.running_var", rng.uniform(0.5, 1.5, 5).astype(f32), trainable=False)
    h = b.relu(b.batch_norm(h, p("bn1.weight", 5), p("bn1.bias", 5), p("bn1.running_mean", 5, trainable=False),
                            var, eps=1e-5))
    c2 = b.conv(h, p("conv2.weight", 4, 5, 1, 1))
    scaled = b.add(b.mul(c2, b.const(rng.uniform(0.5, 2, (4, 1, 1)), "float32")),
                   b.const(rng.standard_normal((1, 4, 1, 1)), "float32"))
    c3 = b.conv(h, p("conv3.weight", 4, 5, 1, 1))
    twice = b.add(c3, b.relu(c3))                      # c3 has two uses: it must not be fused away
    h = b.reduce_mean(b.add(scaled, twice), axes=(2, 3))
    out = b.add(b.matmul(h, b.transpose(p("fc.weight", 2, 4), perm=(1, 0))), p("fc.bias", 2))
    return b.build([out])


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _feed(batch=3, shape=(8, 8, 3)):
    return np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)


def test_optimizer_fuses_bias_batch_norm_and_gemm_keeping_params():
    """Without fold_params no param is folded or renamed: the spelled-out batch
    norm becomes one BatchNormalization on the same params, biases move into
    Conv, matmul(x, w^T) + b becomes Gemm on the untransposed weight."""
    g = _keras_style_cnn()
    model = irtool.export_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    assert ops.count("BatchNormalization") == 2 and ops.count("Conv") == 2
    assert not {"Reshape", "Sqrt", "Reciprocal", "Sub", "Mul"} & set(ops), ops
    assert len(ops) <= 12, ops                          # 39 nodes before the fusions
    assert {t.name for t in model.graph.initializer} == set(g.params)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert list(conv.input[1:]) == ["conv/kernel", "conv/bias"]
    x = _feed()
    np.testing.assert_allclose(_ort(model, {"x": x})[0], irtool.run(g, [x])[0], rtol=1e-5, atol=1e-5)

    t = _torch_style_cnn()
    model = irtool.export_onnx(t)
    ops = _ops(model)
    assert "Gemm" in ops and "Transpose" not in ops and ops.count("BatchNormalization") == 1
    x = _feed(shape=(3, 8, 8))
    np.testing.assert_allclose(_ort(model, {"x": x})[0], irtool.run(t, [x])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,shape", [(_keras_style_cnn, (8, 8, 3)), (_torch_style_cnn, (3, 8, 8))])
def test_fold_params_folds_batch_norm_scales_and_zero_biases_into_conv(make, shape):
    """fold_params=True (inference exports): batch norm and per-channel scale/shift fold
    into the conv weights, zero biases vanish, weights are pre-transposed; the folded model
    matches the unfolded one on onnxruntime up to float32 rounding."""
    from irtool.exporters.optimize import optimize
    from irtool.ir.graph import verify
    g = make()
    folded = optimize(g, fold_params=True)
    verify(folded)
    assert not any(p.trainable for n, p in folded.params.items() if n.endswith(".folded"))
    model = irtool.export_onnx(folded)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    unfolded = onnx_exporter.export_onnx(g, optimize=False)
    if make is _keras_style_cnn:
        # Transpose, Conv(+bias+bn), Relu, Conv(+bn_1), ReduceMean (+ its axes Constant), Gemm
        assert sorted(ops) == sorted(["Transpose", "Conv", "Relu", "Conv", "Constant", "ReduceMean", "Gemm"])
        assert len(_ops(unfolded)) >= 30
    else:
        # conv1+bn1 -> one Conv, conv2 * scale + shift -> one Conv, conv3 (two uses) stays, Gemm
        assert ops.count("Conv") == 3 and ops.count("Gemm") == 1
        assert not {"BatchNormalization", "Mul", "Transpose"} & set(ops), ops
    for batch in (1, 4):
        x = _feed(batch, shape)
        want = _ort(unfolded, {"x": x})[0]
        np.testing.assert_allclose(_ort(model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(irtool.run(folded, [x])[0], irtool.run(g, [x])[0], rtol=1e-5, atol=1e-5)


def test_fold_params_never_touches_a_training_steps_trainable_params():
    """In a training step the trainable params are graph inputs, so folding (even
    with fold_params=True) keeps them; the step still computes the same thing."""
    from irtool.exporters.optimize import optimize
    g = _torch_style_cnn()
    step = irtool.training_step(g, "mse", irtool.optim.SGD(0.1))
    folded = optimize(step, fold_params=True)
    assert [v.name for v in folded.inputs] == [v.name for v in step.inputs]
    assert [v.name for v in folded.outputs] == [v.name for v in step.outputs]
    rng = np.random.default_rng(0)
    feeds = [p.data for p in (g.params[n] for n in step.param_names)]
    feeds += [rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.standard_normal((2, 2)).astype(np.float32)]
    for a, c in zip(irtool.run(step, feeds), irtool.run(folded, feeds)):
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


def test_optimizer_drops_adds_of_zero_and_products_with_one():
    b = irtool.Builder("units")
    x = b.input("x", "float32", ("n", 3))
    y = b.mul(b.const(np.ones(3), "float32"), b.add(x, b.const(np.zeros((1, 3)), "float32")))
    z = b.add(y, b.const(np.zeros((2, 1, 3)), "float32"))        # broadcasts x up: must stay
    g = b.build([b.exp(b.sub(y, b.const(0.0, "float32"))), z])
    model = irtool.export_onnx(g)
    ops = _ops(model)
    assert ops.count("Exp") == 1 and ops.count("Add") == 1 and not {"Mul", "Sub"} & set(ops), ops
    x0 = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for a, c in zip(_ort(model, {"x": x0}), irtool.run(g, [x0])):
        np.testing.assert_allclose(a, c, rtol=1e-6)
