"""IR -> TensorFlow exporter (irtool.exporters.tensorflow).

- every op times its samples (generated from the registry): the tf.Module's
  forward equals the numpy runtime, and tf.GradientTape through it equals
  irtool.grad; every op has a TF lowering or a decomposition; a few ops in
  float16 / bfloat16;
- the torch model zoo torch -> IR -> TF: forward and every variable's
  gradient equal torch's; one trace serves every batch size;
- SavedModel save / load with a symbolic batch; torch -> IR -> ONNX -> IR -> TF.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import irtool  # noqa: E402
from irtool.errors import UnsupportedError  # noqa: E402
from irtool.ir.dtypes import check_dtype, is_float, np_dtype  # noqa: E402
from irtool.ir.opdef import REGISTRY  # noqa: E402
from tests.op_harness import (float_inputs, grad_cases, loss_graph, op_cases, single_op_graph,
                               symbolic_shape_graph)  # noqa: E402

tf = pytest.importorskip("tensorflow")
from irtool.exporters.optimize import optimize  # noqa: E402
from irtool.exporters.tensorflow import LOWERINGS, save_savedmodel, to_tensorflow  # noqa: E402
from irtool.frontends.torch_files import flatten_outputs  # noqa: E402

try:                      # only the model zoo tests need torch
    import torch

    from tests.torch_zoo import ZOO, build, float_outputs, loss_weights, tracer, weighted_loss
except ImportError:       # pragma: no cover - CI installs torch
    torch = ZOO = build = float_outputs = loss_weights = tracer = weighted_loss = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

# torch.testing's defaults per dtype (rtol, atol)
TOL = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}
MODEL_FWD = dict(rtol=1e-4, atol=1e-5)    # float32 through different op orders (as the torch exporter tests)
MODEL_GRAD = dict(rtol=1e-3, atol=1e-4)


CASES = op_cases()
GRAD_CASES = grad_cases(CASES)


def _tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _assert_close(got, expected, dtype=None, rtol=None, atol=None, msg=""):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{msg}: shape {got.shape} != {expected.shape}"
    dtype = dtype or check_dtype(expected.dtype)
    if not is_float(dtype):
        np.testing.assert_array_equal(got, expected, err_msg=msg)
        return
    r, a = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64),
                               rtol=r if rtol is None else rtol, atol=a if atol is None else atol,
                               equal_nan=True, err_msg=msg)


def _dense(g, like):
    return np.zeros(like.shape, like.dtype.as_numpy_dtype) if g is None else tf.convert_to_tensor(g).numpy()


# -- every op ---------------------------------------------------------------------------

def test_every_op_has_a_tf_lowering_or_a_decomposition():
    missing = sorted(op.name for op in REGISTRY.values() if op not in LOWERINGS and op.decompose is None)
    assert not missing, f"ops with no TensorFlow lowering and no decomposition: {', '.join(missing)}"


@pytest.mark.parametrize("op,sample", CASES)
def test_forward_matches_numpy_runtime(op, sample):
    graph, arrays = single_op_graph(op, sample)
    expected = irtool.run(graph, arrays)
    got = _tuple(to_tensorflow(graph)(*arrays))
    assert len(got) == len(expected)
    for v, t, e in zip(graph.outputs, got, expected):
        assert tuple(t.shape) == v.shape and t.dtype.name == v.dtype, \
            f"rule says {v.type}, TensorFlow gave {t.dtype.name} {list(t.shape)}"
        _assert_close(t.numpy(), e, v.dtype, msg=op.name)


@pytest.mark.parametrize("op,sample", GRAD_CASES)
def test_gradient_tape_matches_irtool_grad(op, sample):
    graph, arrays = single_op_graph(op, sample, cast64=True)
    loss, cots = loss_graph(graph, np.random.default_rng(1))
    idx = float_inputs(op, arrays)
    ours = irtool.run(irtool.grad(loss, wrt=[loss.inputs[i].name for i in idx]), arrays)[1:]
    module = to_tensorflow(graph)
    ts = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        for i in idx:
            tape.watch(ts[i])
        outs = [o for o in _tuple(module(*ts)) if o.dtype.is_floating]
        total = tf.add_n([tf.reduce_sum(o * c) for o, c in zip(outs, cots)])
    theirs = tape.gradient(total, [ts[i] for i in idx])
    for i, a, t in zip(idx, ours, theirs):
        _assert_close(_dense(t, ts[i]), a, msg=f"d loss / d input {i} of {op.name}")


# float32 takes other CPU kernels than float64 (oneDNN's grouped and dilated
# convolutions, channels-last pools): their gradients too, at float32's tolerance
LAYOUT_OPS = ("conv", "conv_transpose", "max_pool", "avg_pool", "max_pool_backward", "max_pool_select")


@pytest.mark.parametrize("op,sample", [p for p in GRAD_CASES if p.values[0].name in LAYOUT_OPS])
def test_float32_gradients_of_convolutions_and_pools(op, sample):
    graph, arrays = single_op_graph(op, sample)
    loss, cots = loss_graph(graph, np.random.default_rng(1))
    idx = float_inputs(op, arrays)
    ours = irtool.run(irtool.grad(loss, wrt=[loss.inputs[i].name for i in idx]), arrays)[1:]
    ts = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        for i in idx:
            tape.watch(ts[i])
        total = tf.reduce_sum(_tuple(to_tensorflow(graph)(*ts))[0] * cots[0])
    for i, a, t in zip(idx, ours, tape.gradient(total, [ts[i] for i in idx])):
        _assert_close(_dense(t, ts[i]), a, msg=f"d loss / d input {i} of {op.name}")


# float16 / bfloat16: the numpy kernels compute mostly in float32 and round
# once, TF mostly in the 16-bit type itself (rounding each partial sum of a
# conv, matmul or reduction, and the intermediates of softmax / layer_norm),
# so results may differ by a few units in the last place of the 16-bit format:
# 1e-2 (float16, 11 significant bits) and 5e-2 (bfloat16, 8 bits) relative.
# A rounded partial sum errs relative to the summands, not to a result that
# cancels, so atol is that rtol times the largest |expected|.
HALF_RTOL = {"float16": 1e-2, "bfloat16": 5e-2}
HALF_OPS = ["add", "mul", "div", "exp", "tanh", "sigmoid", "erf", "matmul", "reduce_sum", "reduce_max",
            "softmax", "log_softmax", "layer_norm", "gelu", "silu", "linear", "conv", "conv_transpose",
            "max_pool", "avg_pool", "resize", "transpose", "concat", "gather", "pad", "slice"]


def _half_cases():
    for name in HALF_OPS:
        for dtype in ("float16", "bfloat16"):
            for i, s in enumerate(REGISTRY[name].samples(np.random.default_rng(0))):
                if any(np.asarray(a).dtype == np.float32 for a in s.inputs):
                    yield pytest.param(REGISTRY[name], s, dtype, id=f"{name}-{i}-{dtype}")
                    break


@pytest.mark.parametrize("op,sample,dtype", list(_half_cases()))
def test_half_precision_forward_matches_numpy_runtime(op, sample, dtype):
    inputs = tuple(np.asarray(a).astype(np_dtype(dtype)) if np.asarray(a).dtype == np.float32 else a
                   for a in sample.inputs)
    graph, arrays = single_op_graph(op, type(sample)(inputs, sample.attrs))
    expected = irtool.run(graph, arrays)
    got = _tuple(to_tensorflow(graph)(*arrays))
    for v, t, e in zip(graph.outputs, got, expected):
        assert t.dtype.name == v.dtype
        rtol = HALF_RTOL.get(v.dtype)
        atol = None if rtol is None else rtol * max(1.0, float(np.max(np.abs(e.astype(np.float32)), initial=0)))
        _assert_close(t.numpy(), e, v.dtype, rtol=rtol, atol=atol, msg=f"{op.name} in {dtype}")


# -- module behaviour ---------------------------------------------------------------------

def test_params_become_variables_named_like_the_ir():
    b = irtool.Builder("named")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("enc.layers.0.fc.weight", np.ones((3, 4), np.float32))
    stats = b.param("enc.norm.running_mean", np.zeros(3, np.float32), trainable=False)
    steps = b.param("steps", np.array(5, np.int64))                  # trainable ints stay frozen
    y = b.add(b.linear(x, w), stats)
    m = to_tensorflow(b.build([y, steps]))
    assert set(m.params) == {"enc.layers.0.fc.weight", "enc.norm.running_mean", "steps"}
    assert {v.name for v in m.trainable_variables} == {"enc.layers.0.fc.weight:0"}
    assert m.params["enc.norm.running_mean"].trainable is False
    assert m.params["steps"].dtype == tf.int64 and not m.params["steps"].trainable
    out, n = m(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(out.numpy(), np.full((2, 3), 4.0, np.float32))
    assert int(n) == 5
    m.params["enc.norm.running_mean"].assign(np.ones(3, np.float32))   # the call reads the variables
    np.testing.assert_array_equal(m(np.ones((1, 4), np.float32))[0].numpy(), np.full((1, 3), 5.0))


def test_one_trace_serves_every_symbolic_size():
    g = symbolic_shape_graph()
    m = to_tensorflow(g)
    spec = m.__call__.input_signature[0]
    assert spec.shape.as_list() == [None, None, 4] and spec.name == "x"
    for batch, seq in ((2, 3), (4, 7), (1, 1)):
        a = np.random.default_rng(batch).standard_normal((batch, seq, 4)).astype(np.float32)
        for t, e in zip(m(a), irtool.run(g, [a])):
            _assert_close(t.numpy(), e)
    assert m.__call__.experimental_get_tracing_count() == 1


def test_unlowered_op_is_reported(monkeypatch):
    op = REGISTRY["erf"]
    monkeypatch.delitem(LOWERINGS, op)
    b = irtool.Builder("g")
    x = b.input("x", "float32", (3,))
    with pytest.raises(UnsupportedError, match=r"erf \(x2\)"):
        to_tensorflow(b.build([b.add(b.erf(x), b.erf(b.neg(x)))]))


def test_composites_without_a_lowering_are_decomposed(monkeypatch):
    op = REGISTRY["gelu"]
    monkeypatch.delitem(LOWERINGS, op)
    b = irtool.Builder("g")
    x = b.input("x", "float32", (3, 4))
    g = b.build([b.gelu(x)])
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    _assert_close(to_tensorflow(g)(a).numpy(), irtool.run(g, [a])[0])


def test_channels_last_transpose_pairs_cancel():
    """A model from TF holds NHWC data with transposes around each NCHW conv;
    optimize() cancels the back-to-back pairs before lowering."""
    rng = np.random.default_rng(0)
    b = irtool.Builder("nhwc")
    x = b.input("x", "float32", ("batch", 6, 6, 2))
    h = x
    for i in range(2):
        w = b.param(f"conv{i}.weight", rng.standard_normal((2, 2, 3, 3)).astype(np.float32))
        h = b.transpose(b.conv(b.transpose(h, perm=(0, 3, 1, 2)), w, pads=(1, 1, 1, 1)), perm=(0, 2, 3, 1))
    g = b.build([h])
    assert optimize(g).op_histogram()["transpose"] == 2
    a = rng.standard_normal((3, 6, 6, 2)).astype(np.float32)
    _assert_close(to_tensorflow(g)(a).numpy(), irtool.run(g, [a])[0])


# -- the torch model zoo ------------------------------------------------------------------

ZOO_NAMES = ["mlp", "cnn", "lstm", "gru", "encoder", "attention", "bert", "resnet"]   # the last two need transformers


@pytest.fixture(scope="module")
def zoo():
    return tracer(to_tensorflow)


def _shapes(name):
    return [(1, 5), (3, 9)] if "seq" in str(ZOO[name][2]) else [(1, 5), (4, 5)]


def _np(args):
    return [a.numpy() for a in args]


def _check_variable_gradients(name, model, ours, args):
    """d loss / d every trainable variable of `ours` (a module or a reloaded
    SavedModel) equals torch.autograd's d loss / d every parameter."""
    weights = loss_weights(model, args)
    model.zero_grad()
    weighted_loss(float_outputs(model, args), weights).backward()
    expected = {n: p.grad for n, p in model.named_parameters()}
    trainable = {n for n, v in ours.params.items() if v.trainable}
    assert trainable == set(expected), "the trainable variables are the torch parameters"
    names = sorted(trainable)
    with tf.GradientTape() as tape:
        outs = [o for o in _tuple(ours(*_np(args))) if o.dtype.is_floating]
        loss = tf.add_n([tf.reduce_sum(o * w.numpy()) for o, w in zip(outs, weights)])
    grads = tape.gradient(loss, [ours.params[n] for n in names])
    for n, g in zip(names, grads):
        e = expected[n]
        e = np.zeros(ours.params[n].shape, np.float32) if e is None else e.numpy()
        np.testing.assert_allclose(_dense(g, ours.params[n]), e, **MODEL_GRAD, err_msg=f"{name} d loss / d {n}")


@needs_torch
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_forward_and_gradients_match_torch(zoo, name):
    """One test per model: each xdist worker traces a model once."""
    model, inputs, _, ours = zoo(name)
    for batch, seq in _shapes(name):
        args = inputs(batch, seq)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
        got = _tuple(ours(*_np(args)))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.numpy(), e.numpy(), **MODEL_FWD, err_msg=f"{name} {batch}x{seq}")
    assert ours.__call__.experimental_get_tracing_count() == 1
    _check_variable_gradients(name, model, ours, inputs(3, 5))
    assert {v.name for v in ours.trainable_variables} == {f"{n}:0" for n, _ in model.named_parameters()}


@needs_torch
def test_gradient_graph_runs_in_tensorflow(zoo):
    """An irtool.grad graph (max_pool_backward, conv_transpose, scatter_add...)
    is an ordinary graph: its TF module equals the numpy runtime."""
    _, inputs, graph, _ = zoo("cnn")
    b = irtool.Builder("loss")
    vmap = b.copy_graph(graph)
    out = vmap[graph.outputs[0]]
    g = irtool.grad(b.build([b.reduce_mean(b.mul(out, out))]))
    m = to_tensorflow(g)
    for batch in (3, 1):
        feeds = _np(inputs(batch, 5))
        for t, e in zip(m(*feeds), irtool.run(g, feeds)):
            np.testing.assert_allclose(t.numpy(), e, **MODEL_FWD)


@needs_torch
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_savedmodel_round_trip_with_a_symbolic_batch(zoo, tmp_path, name):
    model, inputs, graph, _ = zoo(name)
    path = tmp_path / name
    save_savedmodel(graph, path)
    loaded = tf.saved_model.load(str(path))
    serving = loaded.signatures["serving_default"]
    for batch in (1, 5):
        args = inputs(batch, 5)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
        got = _tuple(loaded(*_np(args)))
        served = list(serving(**{"x": tf.constant(args[0].numpy())}).values())
        for g, s, e in zip(got, served, expected):
            np.testing.assert_allclose(g.numpy(), e.numpy(), **MODEL_FWD)
            np.testing.assert_allclose(s.numpy(), e.numpy(), **MODEL_FWD)
    # the variables come back under their IR names, trainable flags kept, and still train
    assert set(loaded.params) == set(graph.params)
    _check_variable_gradients(name, model, loaded, inputs(3, 5))


@needs_torch
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_zoo_through_onnx_and_back(zoo, name):
    pytest.importorskip("onnx")
    model, inputs, graph, _ = zoo(name)
    ours = to_tensorflow(irtool.import_onnx(irtool.export_onnx(graph)))
    for batch, seq in _shapes(name):
        args = inputs(batch, seq)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
        for g, e in zip(_tuple(ours(*_np(args))), expected):
            np.testing.assert_allclose(g.numpy(), e.numpy(), **MODEL_FWD)
    # ONNX has no trainable flag: every initializer comes back trainable, under its name
    assert {n for n, _ in model.named_parameters()} <= set(ours.params)
    args = inputs(3, 5)
    model.zero_grad()
    (flatten_outputs(model(*args))[0] ** 2).mean().backward()
    names = [n for n, _ in model.named_parameters()]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(_tuple(ours(*_np(args)))[0] ** 2)
    grads = tape.gradient(loss, [ours.params[n] for n in names])
    for n, g in zip(names, grads):
        p = dict(model.named_parameters())[n]
        np.testing.assert_allclose(_dense(g, ours.params[n]), p.grad.numpy(), **MODEL_GRAD, err_msg=n)


# -- Keras -> IR -> TF ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cnn", "separable", "deconv", "conv3d"])
def test_keras_models_round_trip(name):
    """A channels-last Keras model through the TF frontend (NHWC transposes
    around each NCHW conv, back-to-back pairs cancelled) and back: outputs
    and every variable's gradient equal Keras's."""
    pytest.importorskip("keras")
    from irtool.frontends.tf_trace import to_source_layout, trace_tf
    from tests.tf_zoo import build as build_keras
    model, inputs = build_keras(name)
    graph = trace_tf(model)
    ours = to_tensorflow(graph)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        xs = inputs(batch, rng)
        expected = tf.nest.flatten(model(xs[0], training=False))
        for g, e in zip(_tuple(ours(*xs)), expected):
            np.testing.assert_allclose(g.numpy(), e.numpy(), **MODEL_FWD, err_msg=f"{name} batch={batch}")
    variables = {v.path: v for v in model.trainable_variables}
    assert {n for n, v in ours.params.items() if v.trainable} == set(variables)
    weights = [rng.standard_normal(e.shape).astype(np.float32) for e in expected]
    names = sorted(variables)
    with tf.GradientTape() as tape:
        total = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(tf.nest.flatten(model(xs[0], training=False)),
                                                                 weights)])
    theirs = tape.gradient(total, [variables[n].value for n in names])
    with tf.GradientTape() as tape:
        total = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(_tuple(ours(*xs)), weights)])
    grads = tape.gradient(total, [ours.params[n] for n in names])
    for n, g, e in zip(names, grads, theirs):
        np.testing.assert_allclose(to_source_layout(graph, n, _dense(g, ours.params[n])), tf.convert_to_tensor(e),
                                   **MODEL_GRAD, err_msg=f"{name} d loss / d {n}")

