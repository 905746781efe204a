"""Small random-weight PyTorch models for the frontend tests (no downloads).

Each entry: name -> (build() -> module in eval mode, example inputs,
dynamic_shapes). transformers models are built from configs."""
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.fc3(self.drop(torch.tanh(self.fc2(torch.relu(self.fc1(x))))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.head = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.nn.functional.silu(self.bn2(self.conv2(x)))
        x = self.head(self.avg(x)).flatten(1)
        return self.fc(self.drop(x))


class LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class GRUHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8, batch_first=True, num_layers=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        out, h = self.rnn(x)
        return self.fc(out).mean(1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, activation="gelu")

    def forward(self, x):
        return self.layer(x)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, q, kv):
        out, weights = self.mha(q, kv, kv)
        return out, weights


def _bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64)
    return BertModel(cfg, add_pooling_layer=True)


def _gpt2():
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    return GPT2Model(cfg)


def _vit():
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=48)
    return ViTModel(cfg, add_pooling_layer=False)


def _resnet():
    from transformers import ResNetConfig, ResNetModel
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", downsample_in_first_stage=False)
    return ResNetModel(cfg)


def _ids(batch, seq):
    return torch.randint(0, 64, (batch, seq))


# name -> (builder, example-input maker(batch, seq), dynamic_shapes, needs transformers)
ZOO = {
    "mlp": (MLP, lambda b, s: (torch.randn(b, 6),), {"x": {0: "batch"}}, False),
    "cnn": (CNN, lambda b, s: (torch.randn(b, 3, 16, 16),), {"x": {0: "batch"}}, False),
    "lstm": (LSTMHead, lambda b, s: (torch.randn(b, 5, 4),), {"x": {0: "batch"}}, False),
    "gru": (GRUHead, lambda b, s: (torch.randn(b, 5, 4),), {"x": {0: "batch"}}, False),
    "encoder": (Encoder, lambda b, s: (torch.randn(b, s, 16),), {"x": {0: "batch", 1: "seq"}}, False),
    "attention": (Attention, lambda b, s: (torch.randn(b, s, 16), torch.randn(b, s + 2, 16)),
                  {"q": {0: "batch"}, "kv": {0: "batch"}}, False),
    "bert": (_bert, lambda b, s: (_ids(b, s),), {"input_ids": {0: "batch", 1: "seq"}}, True),
    "gpt2": (_gpt2, lambda b, s: (_ids(b, s),), {"input_ids": {0: "batch", 1: "seq"}}, True),
    "vit": (_vit, lambda b, s: (torch.randn(b, 3, 16, 16),), {"pixel_values": {0: "batch"}}, True),
    "resnet": (_resnet, lambda b, s: (torch.randn(b, 3, 32, 32),), {"pixel_values": {0: "batch"}}, True),
}


def build(name, seed=0):
    make, inputs, dyn, _ = ZOO[name]
    torch.manual_seed(seed)
    model = make().eval()
    _randomize_norm_stats(model)
    return model, inputs, dyn


def _randomize_norm_stats(model):
    """Non-trivial running stats, so batch norm is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def memo(make):
    """A memoising get(name) -> make(name, model, inputs, dynamic_shapes) for
    module-scoped fixtures: each model is built once (and skipped when it
    needs transformers and that is missing)."""
    import pytest
    cache = {}

    def get(name):
        if name not in cache:
            if ZOO[name][3]:
                pytest.importorskip("transformers")
            cache[name] = make(name, *build(name))
        return cache[name]
    return get


def tracer(convert=None):
    """memo of (model, inputs, graph, convert(graph) or None): each model traced once."""
    import irtool

    def make(name, model, inputs, dyn):
        graph = irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
        return model, inputs, graph, convert(graph) if convert else None
    return memo(make)


def float_outputs(model, args):
    from irtool.frontends.torch_files import flatten_outputs
    return [o for o in flatten_outputs(model(*args)) if o.dtype.is_floating_point]


def loss_weights(model, args, seed=0):
    """One random weight tensor per float output: loss = sum(output * weight)."""
    with torch.no_grad():
        shapes = [o.shape for o in float_outputs(model, args)]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in shapes]


def weighted_loss(outs, weights):
    return sum((o * w).sum() for o, w in zip(outs, weights))
