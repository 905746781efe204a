"""Real ONNX files written by tf2onnx run through the importer: the imported
graph matches TensorFlow, and exports back to ONNX that matches onnxruntime
on tf2onnx's own file."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
tf2onnx = pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

import irtool  # noqa: E402


def _cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(inp, out)


def _mlp():
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,), name="features")
    x = keras.layers.Dense(16, activation="tanh")(inp)
    x = keras.layers.LayerNormalization()(x)
    out = keras.layers.Dense(3)(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("make,shape", [(_cnn, (16, 16, 3)), (_mlp, (6,))])
def test_tf2onnx_models_import_and_match(make, shape):
    model = make()
    spec = (tf.TensorSpec((None,) + shape, tf.float32, name="input"),)
    fn = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    graph = irtool.import_onnx(proto)
    irtool.verify(graph)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch,) + shape).astype(np.float32)
        expected = model(x, training=False).numpy()
        for backend in ("numpy", "onnxruntime"):
            got = irtool.run(graph, [x], backend=backend)[0]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
