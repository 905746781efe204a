"""The PyTorch frontend's fast path: torch.export's graph translated without
run_decompositions when the ATen table maps every op in it (linear, conv,
layer_norm, batch_norm...), and the fallback to core ATen otherwise.

Each small module is checked against torch itself (forward at two batch sizes
through one traced graph, and every parameter's and input's gradient against
torch.autograd), and the test asserts which path ran."""
import numpy as np
import pytest

import irtool

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

FWD = dict(rtol=1e-4, atol=1e-5)
GRAD = dict(rtol=1e-3, atol=1e-4)


@pytest.fixture
def decompositions(monkeypatch):
    """Counts calls of ExportedProgram.run_decompositions."""
    calls = []
    original = torch.export.ExportedProgram.run_decompositions

    def counted(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)
    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", counted)
    return calls


class Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=1)
        self.pool = nn.MaxPool1d(2)
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        y = self.norm(self.pool(self.conv(x)))
        return F.adaptive_avg_pool1d(F.relu6(y), 1).flatten(1)


class Conv3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3, padding=(1, 0, 1), groups=1)
        self.bn = nn.BatchNorm3d(3)

    def forward(self, x):
        y = F.max_pool3d(self.bn(self.conv(x)), 2, ceil_mode=True)
        return F.adaptive_avg_pool3d(y, (1, 1, 1)).flatten(start_dim=1, end_dim=-1)


class Shapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8, bias=False)

    def forward(self, x):
        h = self.proj(x).unflatten(-1, (2, 4))              # (b, 5, 2, 4)
        d = torch.diff(h, n=2, dim=1, prepend=h[:, :1], append=h[:, -1:])
        s = F.softmax(d, dim=-1, dtype=torch.float64).to(torch.float32)
        ls = F.log_softmax(h, dim=2)
        ones = h.new_ones(h.shape[-1]) + x.new_zeros(4)
        z = torch.zeros(4) + torch.ones(4)
        return s.sum(1) + ls.mean(1) * ones * z


class Masks(nn.Module):
    def forward(self, x, y):
        m = (x > 0) & (y > 0) | (x < -1)
        steps = torch.diff(m, dim=-1)                      # bool diff: xor of neighbours
        return torch.where(m, x, y.type_as(x)).sum(-1) + steps.to(torch.float32).sum(-1)


CASES = {
    "conv1d": (Conv1d, lambda b: (torch.randn(b, 3, 12),)),
    "conv3d": (Conv3d, lambda b: (torch.randn(b, 2, 5, 6, 5),)),
    "shapes": (Shapes, lambda b: (torch.randn(b, 5, 6),)),
    "masks": (Masks, lambda b: (torch.randn(b, 7), torch.randn(b, 7))),
}


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("name", list(CASES))
def test_direct_path_matches_torch(decompositions, name):
    make, inputs = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    _randomize_bn(model)
    dyn = {k: {0: "batch"} for k in ("x", "y")[:len(inputs(1))]}
    graph = irtool.trace(model, inputs(2), dynamic_shapes=dyn)
    assert decompositions == [], "the direct path should not decompose"
    for batch in (1, 4):
        args = inputs(batch)
        with torch.no_grad():
            expected = model(*args)
        got = irtool.run(graph, [a.numpy() for a in args])[0]
        torch.testing.assert_close(torch.from_numpy(np.asarray(got)), expected, **FWD)

    # gradients of a weighted sum against autograd: inputs and parameters
    args = [a.clone().requires_grad_(a.dtype.is_floating_point) for a in inputs(3)]
    out = model(*args)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    float_inputs = [v.name for v, a in zip(graph.inputs, args) if a.dtype.is_floating_point]
    wrt = float_inputs + [v.name for v in graph.trainable()]
    vjp = irtool.vjp(graph, wrt=wrt)
    values = irtool.run(vjp, [a.detach().numpy() for a in args] + [weights.numpy()])
    expected = {v.name: a.grad for v, a in zip(graph.inputs, args)}
    expected.update({k: p.grad for k, p in model.named_parameters()})
    for key, g in zip(wrt, values[len(graph.outputs):]):
        torch.testing.assert_close(torch.from_numpy(np.asarray(g)), expected[key], **GRAD,
                                   msg=lambda m: f"{name} d/d{key}: {m}")


class Mish(nn.Module):
    def forward(self, x):
        return F.mish(x) * 2


def test_unmapped_op_falls_back_to_core_aten(decompositions):
    x = torch.randn(3, 4)
    graph = irtool.trace(Mish(), (x,))
    assert decompositions == [1]
    torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), Mish()(x), **FWD)


def test_string_conv_padding_falls_back(decompositions):
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 3, padding="same").eval()
    x = torch.randn(2, 2, 6, 6)
    graph = irtool.trace(model, (x,))
    assert decompositions == [1]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), model(x), **FWD)


def test_zoo_transformers_take_the_direct_path(decompositions):
    pytest.importorskip("transformers")
    from tests.torch_zoo import build
    for name in ("mlp", "cnn", "bert", "gpt2", "vit", "resnet"):
        model, inputs, dyn = build(name)
        irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
    assert decompositions == []


class Residual(nn.Module):
    """torchvision's pattern: in-place ReLU and `out += identity`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv(x)
        out += x
        return self.relu(out)


class ViewWrite(nn.Module):
    def forward(self, x):
        y = x * 2
        v = y[:, :2]
        v += 1                    # writes into y through a view
        return y


class ReadAfterWrite(nn.Module):
    def forward(self, x):
        y = x * 2
        a = y.add_(1)
        a.mul_(3)
        return a + y.sin()        # torch.export reads y through the in-place results


@pytest.mark.parametrize("model", [Residual(), ReadAfterWrite()], ids=["residual", "read-after-write"])
def test_safe_in_place_ops_take_the_direct_path(decompositions, model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    graph = irtool.trace(model.eval(), (x,))
    assert decompositions == []
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), model(x), **FWD)


def test_in_place_write_through_a_view_is_decomposed(decompositions):
    x = torch.randn(3, 4)
    graph = irtool.trace(ViewWrite(), (x,))
    assert decompositions == [1]
    torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), ViewWrite()(x), **FWD)


class ViewWrites(nn.Module):
    """Writes through views: torch.export makes slice_scatter/select_scatter of them."""

    def forward(self, x):
        y = x * 2
        y[:, 1:3] += 1
        y[:, -2:] *= 3
        y[0] -= 5
        y[:, -1] = 0.5
        y[..., :1] = y[..., 2:3]
        return y


@pytest.mark.parametrize("batch", [1, 4])
def test_writes_through_views_match_torch(batch):
    x = torch.randn(batch, 6)
    graph = irtool.trace(ViewWrites(), (torch.randn(2, 6),), dynamic_shapes={"x": {0: "batch"}})
    torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), ViewWrites()(x), **FWD)


class StraightThrough(nn.Module):
    """detach(): the straight-through estimator and a detached branch get torch's gradients."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        q = h + (torch.round(h) - h).detach()
        return q * self.b(x).detach() + h


def test_detach_stops_gradients_like_torch():
    torch.manual_seed(0)
    model = StraightThrough()
    x = torch.randn(3, 4)
    graph = irtool.trace(model, (x,))
    assert "stop_gradient" in graph.op_histogram()
    weights = torch.randn(3, 4)
    (model(x) * weights).sum().backward()
    wrt = [v.name for v in graph.trainable()]
    got = irtool.run(irtool.vjp(graph, wrt=wrt), [x.numpy(), weights.numpy()])[1:]
    for name, g in zip(wrt, got):
        expected = dict(model.named_parameters())[name].grad
        expected = torch.zeros_like(dict(model.named_parameters())[name]) if expected is None else expected
        torch.testing.assert_close(torch.from_numpy(np.asarray(g)), expected, **GRAD, msg=lambda m: f"{name}: {m}")
