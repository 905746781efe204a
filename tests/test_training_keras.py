"""IR training of a Keras CNN matches Keras' own training step by step.

Oracle: keras.optimizers.SGD(momentum) and Adam applied with GradientTape to
the original model (same initial weights, same batches). Keras' SGD momentum
is torch's in another parameterisation; Keras' Adam puts epsilon outside the
bias correction, so epsilon is set small enough not to matter (1e-10).
Batch norm runs in inference form on both sides (training=False)."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import irtool  # noqa: E402
from irtool.frontends.tf_trace import to_source_layout  # noqa: E402

STEPS = 50


def _cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("kind", ["sgd_momentum", "adam"])
def test_keras_cnn_training_matches_keras(kind, backend):
    model = _cnn()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 4, 16).astype(np.int64)
    graph = irtool.trace(model)
    if kind == "sgd_momentum":
        ours, theirs = irtool.optim.SGD(0.05, momentum=0.9), keras.optimizers.SGD(0.05, momentum=0.9)
    else:
        ours, theirs = irtool.optim.Adam(1e-3, eps=1e-10), keras.optimizers.Adam(1e-3, epsilon=1e-10)
    trainer = irtool.Trainer(graph, "cross_entropy", ours, backend=backend)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for step in range(STEPS):
        idx = slice((step * 4) % 16, (step * 4) % 16 + 4)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[idx], model(x[idx], training=False))
        grads = tape.gradient(loss, model.trainable_variables)
        theirs.apply_gradients(zip(grads, model.trainable_variables))
        got = trainer.step(x[idx], y[idx])
        np.testing.assert_allclose(got, float(loss), rtol=1e-4, atol=1e-6, err_msg=f"loss at step {step}")
    params = trainer.params
    for v in model.trainable_variables:
        np.testing.assert_allclose(to_source_layout(graph, v.path, params[v.path]), v.numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=f"{v.path} after {STEPS} steps")
