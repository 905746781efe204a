"""TensorFlow / Keras files: .keras, .h5, SavedModel directories and frozen
.pb graphs convert and match the framework; files that would run code from
outside Keras / outside the vetted TF ops are refused unless trusted; bad
files give one FileFormatError line."""
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import irtool  # noqa: E402
from irtool.errors import FileFormatError, UnsupportedError  # noqa: E402
from irtool.frontends.tf_files import convert_file  # noqa: E402
from irtool.frontends.tf_trace import trace_tf  # noqa: E402

FWD = dict(rtol=1e-4, atol=1e-5)


@keras.saving.register_keras_serializable(package="irtool_tests")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


class Writer(tf.Module):
    """A SavedModel whose function writes a file: not something to run untrusted."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.w = tf.Variable(np.eye(3, dtype=np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        tf.io.write_file(self.target, tf.strings.as_string(tf.reduce_sum(x)))
        return tf.matmul(x, self.w)


class Plain(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.nn.tanh(tf.matmul(x, self.w))}


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6, 6, 2), name="image"), keras.layers.Conv2D(3, 3, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf_files")
    model = _model()
    model.save(d / "model.keras")
    model.save(d / "model.h5")
    model.save_weights(d / "only.weights.h5")
    lam = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3), keras.layers.Lambda(lambda t: t + 1)])
    lam.save(d / "lambda.keras")
    lam.save(d / "lambda.h5")
    custom = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3), Doubler()])
    custom.save(d / "custom.keras")
    with zipfile.ZipFile(d / "model.keras") as z, zipfile.ZipFile(d / "evil.keras", "w") as out:
        for item in z.namelist():
            data = z.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                cfg["config"]["layers"][1]["module"] = "os"
                cfg["config"]["layers"][1]["class_name"] = "system"
                data = json.dumps(cfg).encode()
            out.writestr(item, data)
    raw = (d / "model.keras").read_bytes()
    (d / "truncated.keras").write_bytes(raw[: len(raw) // 2])
    (d / "garbage.keras").write_bytes(os.urandom(300))
    (d / "garbage.h5").write_bytes(b"not hdf5 at all" * 10)
    (d / "garbage.pb").write_bytes(b"\xff\xfe\x00garbage" * 7)
    (d / "empty.keras").write_bytes(b"")
    tf.saved_model.save(Plain(), str(d / "plain_sm"))
    model.export(str(d / "keras_sm"), verbose=False)
    tf.saved_model.save(Writer(str(d / "written.txt")), str(d / "writer_sm"))
    (d / "not_sm").mkdir()
    (d / "bad_sm").mkdir()
    (d / "bad_sm" / "saved_model.pb").write_bytes(b"\x08\x96\x01garbage\xff")
    return d, model


def _check(graph, reference, feeds):
    irtool.verify(graph)
    expected = reference(feeds)
    for backend in ("numpy", "onnxruntime"):
        got = irtool.run(graph, feeds, backend=backend)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, **FWD)


def _image(batch):
    return [np.random.default_rng(batch).standard_normal((batch, 6, 6, 2)).astype(np.float32)]


@pytest.mark.parametrize("fname", ["model.keras", "model.h5"])
def test_keras_files_convert_and_match(files, fname):
    d, model = files
    graph, reference = convert_file(d / fname, dynamic={"image": {0: "n"}})
    assert graph.inputs[0].name == "image" and graph.inputs[0].shape == ("n", 6, 6, 2)
    # params are named by the loaded model's variable paths ("conv2d/kernel" ...)
    assert {"/".join(v.path.split("/")[-2:]) for v in model.variables} == \
        {"/".join(p.split("/")[-2:]) for p in graph.params}
    for batch in (1, 4):
        _check(graph, reference, _image(batch))


def test_trace_tf_accepts_paths(files):
    d, model = files
    graph = trace_tf(str(d / "model.keras"))
    x = _image(3)
    np.testing.assert_allclose(irtool.run(graph, x)[0], model(x[0], training=False).numpy(), **FWD)


@pytest.mark.parametrize("fname", ["lambda.keras", "lambda.h5"])
def test_lambda_layers_need_trust(files, fname):
    d, _ = files
    with pytest.raises(FileFormatError) as err:
        convert_file(d / fname)
    msg = str(err.value)
    assert "Lambda" in msg and "--trust-code" in msg and "\n" not in msg
    graph, reference = convert_file(d / fname, trust_code=True)
    _check(graph, reference, [np.ones((2, 4), np.float32)])


def test_custom_objects_and_foreign_modules_need_trust(files):
    d, _ = files
    with pytest.raises(FileFormatError, match="Doubler.*--trust-code"):
        convert_file(d / "custom.keras")
    graph, reference = convert_file(d / "custom.keras", trust_code=True)
    _check(graph, reference, [np.ones((3, 4), np.float32)])
    with pytest.raises(FileFormatError, match="module 'os'.*--trust-code"):
        convert_file(d / "evil.keras")
    with pytest.raises(FileFormatError, match="--trust-code"):
        trace_tf(str(d / "lambda.keras"))


def test_weights_only_h5_is_refused_with_advice(files):
    d, _ = files
    with pytest.raises(UnsupportedError, match="load_weights"):
        convert_file(d / "only.weights.h5")


@pytest.mark.parametrize("fname", ["truncated.keras", "garbage.keras", "garbage.h5", "garbage.pb", "empty.keras",
                                   "missing.keras", "not_sm", "bad_sm"])
def test_bad_files_give_one_line(files, fname):
    d, _ = files
    with pytest.raises(FileFormatError) as err:
        convert_file(d / fname)
    msg = str(err.value)
    assert "\n" not in msg and str(d / fname) in msg


def test_saved_models_convert_without_trust(files):
    d, model = files
    graph, reference = convert_file(d / "plain_sm")
    assert set(graph.params) == {"w"} and [o.name for o in graph.outputs] == ["y"]
    _check(graph, reference, [np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)])
    graph, reference = convert_file(d / "keras_sm")
    assert {v.path for v in model.variables} == set(graph.params)
    _check(graph, reference, _image(2))


def test_saved_model_with_unvetted_ops_needs_trust(files):
    d, _ = files
    with pytest.raises(FileFormatError) as err:
        convert_file(d / "writer_sm")
    msg = str(err.value)
    assert "WriteFile" in msg and "--trust-code" in msg and "\n" not in msg
    assert not (d / "written.txt").exists()
    graph, reference = convert_file(d / "writer_sm", trust_code=True)
    _check(graph, reference, [np.ones((2, 3), np.float32)])


def test_frozen_graph_def(files, tmp_path):
    d, _ = files
    m = Plain()
    cf = m.__call__.get_concrete_function()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    frozen = convert_variables_to_constants_v2(cf).graph.as_graph_def()
    path = tmp_path / "frozen.pb"
    path.write_bytes(frozen.SerializeToString())
    graph, reference = convert_file(path)
    _check(graph, reference, [np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)])


def test_cli_converts_keras_files_and_inputs_as_nchw(tmp_path):
    import subprocess
    import sys

    import onnx
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3), name="image"), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "irtool.cli", *args], capture_output=True, text=True)

    plain = cli("convert", str(tmp_path / "m.keras"), "--verify", "-o", str(tmp_path / "nhwc.onnx"))
    assert plain.returncode == 0 and "verify: ok" in plain.stdout, plain.stderr
    assert plain.stderr == ""          # no TensorFlow start-up chatter
    nchw = cli("convert", str(tmp_path / "m.keras"), "--verify", "--inputs-as-nchw", "image",
               "-o", str(tmp_path / "nchw.onnx"))
    assert nchw.returncode == 0 and "verify: ok" in nchw.stdout, nchw.stderr
    a, c = onnx.load(str(tmp_path / "nhwc.onnx")), onnx.load(str(tmp_path / "nchw.onnx"))
    count = lambda m: [n.op_type for n in m.graph.node].count("Transpose")  # noqa: E731
    assert count(c) == count(a) - 1 == 0
    assert [d.dim_value for d in c.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 8, 8]
