"""The benchmark zoo: random-weight models (no downloads), a batch of inputs
for each, and a loss target for training steps.

Sizes are small but not toy-sized (BERT/GPT-2 at hidden 128, sequence 64,
the shape of the small published BERT variants), so inference and training
times are not all interpreter overhead. Every model's forward takes one
tensor and returns one tensor, so all converters see the same module.

Torch entries: name -> TorchCase; Keras entries (only when the TensorFlow
frontend exists) are built on demand by keras_cases()."""
import dataclasses

import numpy as np

BATCH = 4
SEQ = 64
VOCAB = 1000


@dataclasses.dataclass
class TorchCase:
    name: str
    model: object            # torch.nn.Module in eval mode (dropout is the identity)
    inputs: tuple            # example torch tensors
    input_names: list
    dynamic: dict            # input name -> {axis: symbol}
    loss: str                # irtool loss name for training steps
    target: np.ndarray       # target for the loss

    def numpy_inputs(self):
        return [t.numpy() for t in self.inputs]


def _mlp():
    import torch
    import torch.nn as nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
    return MLP()


def _cnn():
    import torch
    import torch.nn as nn

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
            self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn1(self.conv1(x))))
            x = self.pool(torch.relu(self.bn2(self.conv2(x))))
            x = torch.nn.functional.silu(self.bn3(self.conv3(x)))
            return self.fc(x.mean((2, 3)))
    return CNN()


class _LastHidden:
    """Wraps a transformers model so forward(input_ids) -> last_hidden_state."""

    @staticmethod
    def wrap(model):
        import torch.nn as nn

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                return self.model(input_ids=input_ids, return_dict=False)[0]
        return Wrapped()


def _bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return _LastHidden.wrap(BertModel(cfg, add_pooling_layer=False))


def _gpt2():
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=128, n_layer=2, n_head=2, n_positions=128, use_cache=False,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return _LastHidden.wrap(GPT2Model(cfg))


def torch_cases(names=None):
    """Build the torch zoo (fixed seeds). names: subset of mlp, cnn, bert, gpt2."""
    import torch
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    specs = {
        "mlp": (_mlp, lambda: (torch.randn(32, 784, generator=g),), ["x"], {"x": {0: "batch"}},
                "cross_entropy", lambda: rng.integers(0, 10, 32)),
        "cnn": (_cnn, lambda: (torch.randn(BATCH, 3, 32, 32, generator=g),), ["x"], {"x": {0: "batch"}},
                "cross_entropy", lambda: rng.integers(0, 10, BATCH)),
        "bert": (_bert, lambda: (torch.randint(0, VOCAB, (BATCH, SEQ), generator=g),), ["input_ids"],
                 {"input_ids": {0: "batch", 1: "seq"}}, "mse",
                 lambda: rng.standard_normal((BATCH, SEQ, 128)).astype(np.float32)),
        "gpt2": (_gpt2, lambda: (torch.randint(0, VOCAB, (BATCH, SEQ), generator=g),), ["input_ids"],
                 {"input_ids": {0: "batch", 1: "seq"}}, "mse",
                 lambda: rng.standard_normal((BATCH, SEQ, 128)).astype(np.float32)),
    }
    out = []
    for name in names or list(specs):
        make, inputs, input_names, dyn, loss, target = specs[name]
        torch.manual_seed(0)
        model = make().eval()
        _randomize_norm_stats(model)
        out.append(TorchCase(name, model, inputs(), input_names, dyn, loss, target()))
    return out


def _randomize_norm_stats(model):
    import torch
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@dataclasses.dataclass
class KerasCase:
    name: str
    model: object
    inputs: list             # numpy arrays, batch on axis 0
    loss: str
    target: np.ndarray


def tf_frontend_missing():
    """None when irtool can trace Keras models, else why not (one line)."""
    try:
        import irtool.frontends.tf_trace  # noqa: F401
    except ImportError as e:
        return f"irtool has no TensorFlow frontend yet ({e})"
    return None


def keras_cases(names=None):
    """Keras CNN and MobileNetV2 (weights=None, 96x96), fixed seeds."""
    import keras
    from keras import layers
    rng = np.random.default_rng(0)

    def cnn():
        return keras.Sequential([
            keras.Input((32, 32, 3), name="x"),
            layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.GlobalAveragePooling2D(), layers.Dense(10)])

    def mobilenet():
        return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)

    specs = {"keras_cnn": (cnn, (32, 32, 3)), "mobilenet_v2": (mobilenet, (96, 96, 3))}
    out = []
    for name in names or list(specs):
        make, shape = specs[name]
        keras.utils.set_random_seed(0)
        model = make()
        x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
        out.append(KerasCase(name, model, [x], "cross_entropy", rng.integers(0, 10, BATCH)))
    return out


def large_linear_stack_source(layers, width):
    """Python source (for a child process) that builds `layers` nn.Linear(width,
    width) layers with touched (resident) float32 weights and no init cost."""
    return f"""
import torch
torch.set_num_threads(2)
class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear({width}, {width}, device="meta") for _ in range({layers}))
        for i, l in enumerate(self.layers):
            l.weight = torch.nn.Parameter(torch.empty({width}, {width}).fill_(0.001 * (i + 1)))
            l.bias = torch.nn.Parameter(torch.empty({width}).fill_(0.01 * (i + 1)))
    def forward(self, x):
        for l in self.layers:
            x = torch.relu(l(x))
        return x
model = Stack().eval()
example = (torch.randn(2, {width}),)
param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
"""
