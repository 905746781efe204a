"""Small random-weight Keras / TensorFlow models for the TF frontend tests
(fixed seeds, no downloads).

ZOO: name -> (build() -> model, make_inputs(batch, rng) -> list of numpy
arrays). Every model takes a dynamic batch axis; sequence lengths are static.
`build(name)` seeds Keras, builds the model and gives batch-norm layers
non-trivial moving statistics."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras  # noqa: E402
from keras import layers  # noqa: E402

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "gelu", "gelu_tanh", "swish", "silu", "hard_swish",
               "hard_sigmoid", "elu", "selu", "softplus", "softsign", "relu6", "leaky_relu", "mish",
               "exponential", "linear", "log_softmax"]


def _f(*shape):
    return lambda batch, rng: [rng.standard_normal((batch, *shape)).astype(np.float32)]


def _mlp():
    return keras.Sequential([keras.Input((6,), name="x"), layers.Dense(16, activation="relu"),
                             layers.Dropout(0.3), layers.Dense(16, activation="tanh"), layers.Dense(3)])


def _cnn():
    return keras.Sequential([
        keras.Input((16, 16, 3), name="x"),
        layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Conv2D(8, 3, strides=2, padding="valid", activation="relu"), layers.BatchNormalization(),
        layers.AveragePooling2D(2, padding="same"),
        layers.Flatten(), layers.Dropout(0.5), layers.Dense(4)])


def _cnn_parts():
    """Functional: zero padding, upsampling, concatenate/add/multiply of conv branches."""
    x = keras.Input((8, 8, 3), name="x")
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    b = layers.Conv2D(4, 1, activation="sigmoid")(x)
    c = layers.Concatenate()([layers.Add()([a, b]), layers.Multiply()([a, b])])
    c = layers.ZeroPadding2D(((1, 2), (0, 1)))(c)
    c = layers.MaxPooling2D(3, strides=2, padding="same")(c)
    c = layers.UpSampling2D(2)(c)
    c = layers.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False)(c)
    c = layers.UpSampling2D((2, 1), interpolation="bilinear")(c)
    out = layers.GlobalAveragePooling2D()(c)
    out2 = layers.GlobalMaxPooling2D()(c)
    return keras.Model(x, [layers.Dense(3)(out), out2])


def _conv1d():
    return keras.Sequential([
        keras.Input((12, 4), name="x"), layers.Conv1D(6, 3, padding="causal", activation="relu"),
        layers.Conv1D(4, 2, dilation_rate=2), layers.MaxPooling1D(2),
        layers.Conv1D(6, 3, strides=2, padding="same"), layers.AveragePooling1D(2, padding="same"),
        layers.GlobalAveragePooling1D(), layers.Dense(2)])


def _conv3d():
    return keras.Sequential([
        keras.Input((6, 6, 6, 2), name="x"), layers.Conv3D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling3D(2), layers.Conv3D(4, 2, strides=(1, 2, 1)), layers.AveragePooling3D((1, 1, 2)),
        layers.GlobalMaxPooling3D(), layers.Dense(2)])


def _separable():
    return keras.Sequential([
        keras.Input((10, 10, 3), name="x"), layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        layers.BatchNormalization(), layers.ReLU(6.0),
        layers.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
        layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False),
        layers.GlobalAveragePooling2D(), layers.Dense(2)])


def _deconv():
    return keras.Sequential([
        keras.Input((5, 5, 3), name="x"), layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
        layers.Conv2DTranspose(3, 2, strides=1, padding="valid", activation="relu"),
        layers.Conv2DTranspose(2, 3, strides=2, padding="valid", use_bias=False),
        layers.Flatten(), layers.Dense(2)])


def _layernorm():
    return keras.Sequential([keras.Input((5, 8), name="x"), layers.Dense(8), layers.LayerNormalization(),
                             layers.Dense(8), layers.LayerNormalization(axis=[1, 2], epsilon=1e-3),
                             layers.Reshape((40,)), layers.Dense(2)])


def _embedding():
    return keras.Sequential([keras.Input((7,), name="ids", dtype="int32"), layers.Embedding(20, 6),
                             layers.GlobalAveragePooling1D(), layers.Dense(3)])


def _ids(batch, rng):
    return [rng.integers(0, 20, (batch, 7)).astype(np.int32)]


def _mha():
    q = keras.Input((5, 8), name="q")
    kv = keras.Input((6, 8), name="kv")
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4)
    out = att(q, kv)
    out = layers.LayerNormalization()(layers.Add()([q, out]))
    self_out = layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, output_shape=6)(out, out)
    return keras.Model([q, kv], [out, self_out])


def _mha_inputs(batch, rng):
    return [rng.standard_normal((batch, 5, 8)).astype(np.float32),
            rng.standard_normal((batch, 6, 8)).astype(np.float32)]


def _activations():
    x = keras.Input((6,), name="x")
    outs = []
    for name in ACTIVATIONS:
        if name == "gelu_tanh":
            act = lambda t: keras.activations.gelu(t, approximate=True)  # noqa: E731
            outs.append(layers.Activation(act, name="gelu_tanh")(layers.Dense(4)(x)))
        else:
            outs.append(layers.Dense(4, activation=name, name=f"dense_{name}")(x))
    outs.append(layers.LeakyReLU(negative_slope=0.2)(layers.Dense(4)(x)))
    outs.append(layers.ELU(alpha=0.5)(layers.Dense(4)(x)))
    outs.append(layers.Softmax(axis=-1)(layers.Dense(4)(x)))
    outs.append(layers.PReLU()(layers.Dense(4)(x)))
    return keras.Model(x, layers.Concatenate()(outs))


def _lstm():
    # the first layer runs a tf.while_loop (unrolled by the tracer: static trip count), the second is unrolled by Keras
    return keras.Sequential([keras.Input((5, 4), name="x"), layers.LSTM(8, return_sequences=True),
                             layers.LSTM(6, unroll=True), layers.Dense(2)])


def _gru():
    return keras.Sequential([keras.Input((5, 4), name="x"), layers.GRU(8, return_sequences=True, go_backwards=True),
                             layers.GRU(6, unroll=True, reset_after=False), layers.Dense(2)])


def _reshape():
    x = keras.Input((4, 6), name="x")
    a = layers.Reshape((6, 4))(x)
    b = layers.Reshape((2, -1))(x)
    c = layers.Permute((2, 1))(x)
    d = layers.Concatenate(axis=1)([layers.Flatten()(a), layers.Flatten()(b), layers.Flatten()(c)])
    e = layers.Multiply()([layers.Dense(5)(d), layers.Dense(5)(d)])
    f = layers.Add()([e, layers.Dense(5)(layers.Flatten()(x))])
    return keras.Model(x, [f, layers.RepeatVector(2)(f)])


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = layers.Dense(8, activation="relu")
        self.d2 = layers.Dense(3)

    def call(self, x):
        h = self.d1(x)
        return self.d2(h) + keras.ops.mean(h, axis=-1, keepdims=True)


def _subclassed():
    m = Subclassed()
    m(np.zeros((1, 5), np.float32))
    return m


def _mobilenet():
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, alpha=0.35, classes=5)


def _resnet():
    return keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=5)


# name -> (builder, inputs(batch, rng))
ZOO = {
    "mlp": (_mlp, _f(6)),
    "cnn": (_cnn, _f(16, 16, 3)),
    "cnn_parts": (_cnn_parts, _f(8, 8, 3)),
    "conv1d": (_conv1d, _f(12, 4)),
    "conv3d": (_conv3d, _f(6, 6, 6, 2)),
    "separable": (_separable, _f(10, 10, 3)),
    "deconv": (_deconv, _f(5, 5, 3)),
    "layernorm": (_layernorm, _f(5, 8)),
    "embedding": (_embedding, _ids),
    "mha": (_mha, _mha_inputs),
    "activations": (_activations, _f(6)),
    "lstm": (_lstm, _f(5, 4)),
    "gru": (_gru, _f(5, 4)),
    "reshape": (_reshape, _f(4, 6)),
    "subclassed": (_subclassed, _f(5)),
    "mobilenetv2": (_mobilenet, _f(32, 32, 3)),
    "resnet50": (_resnet, _f(32, 32, 3)),
}

HEAVY = {"resnet50"}     # forward once at one small batch, no gradient comparison


def build(name, seed=0):
    make, inputs = ZOO[name]
    keras.utils.set_random_seed(seed)
    model = make()
    _randomize_norm_stats(model, seed + 1)
    return model, inputs


def _randomize_norm_stats(model, seed):
    """Non-trivial moving statistics (and affine params), so batch norm is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape
            layer.moving_mean.assign(rng.standard_normal(c).astype(np.float32) * 0.1)
            layer.moving_variance.assign((rng.random(c) + 0.5).astype(np.float32))
            if layer.gamma is not None:
                layer.gamma.assign((rng.random(c) + 0.5).astype(np.float32))
            if layer.beta is not None:
                layer.beta.assign(rng.standard_normal(c).astype(np.float32) * 0.1)


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)
