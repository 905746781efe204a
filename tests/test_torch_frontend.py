"""PyTorch frontend on the model zoo: torch vs numpy runtime vs onnxruntime
(forward, at several batch sizes / sequence lengths through one traced graph),
and IR gradients of a scalar loss vs torch.autograd for every parameter."""
import numpy as np
import pytest

import irtool
from irtool.frontends.torch_files import flatten_outputs
from irtool.errors import UnsupportedError

torch = pytest.importorskip("torch")
from tests.torch_zoo import ZOO, tracer  # noqa: E402

FWD = dict(rtol=1e-4, atol=1e-5)     # float32 through different op orders: a little above torch defaults


def _np(ts):
    return [t.detach().numpy() for t in ts]


@pytest.fixture(scope="module")
def traced():
    get = tracer()
    return lambda name: get(name)[:3]


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_matches_torch_on_every_backend(traced, name):
    model, inputs, graph = traced(name)
    irtool.verify(graph)
    shapes = [(1, 5), (3, 33), (8, 5), (17, 5)] if "seq" in str(ZOO[name][2]) else [(1, 5), (3, 5), (8, 5), (17, 5)]
    for batch, seq in shapes:
        args = inputs(batch, seq)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
        feeds = [a.numpy() for a in args]
        for backend in ("numpy", "onnxruntime"):
            got = irtool.run(graph, feeds, backend=backend)
            assert len(got) == len(expected), f"{len(got)} outputs vs torch's {len(expected)}"
            for g, e in zip(got, expected):
                torch.testing.assert_close(torch.from_numpy(np.asarray(g)), e, **FWD,
                                           msg=lambda m: f"{name} {backend} batch={batch} seq={seq}: {m}")


@pytest.mark.parametrize("name", list(ZOO))
def test_parameter_gradients_match_autograd(traced, name):
    model, inputs, graph = traced(name)
    torch.manual_seed(0)
    args = inputs(3, 5)
    b = irtool.Builder(graph.name + "_loss")
    vmap = b.copy_graph(graph)
    rng = np.random.default_rng(0)
    weights = []
    loss = None
    for o in graph.outputs:
        if not o.dtype.startswith("float"):
            continue
        shape = tuple(d if isinstance(d, int) else {"batch": 3, "seq": 5}.get(d, None) for d in o.shape)
        if None in shape:
            continue
        w = rng.standard_normal(shape).astype(np.float32)
        weights.append(w)
        term = b.reduce_sum(b.mul(vmap[o], b.const(w, "float32")))
        loss = term if loss is None else b.add(loss, term)
    grad_graph = irtool.grad(b.build([loss]))
    ours = irtool.run(grad_graph, [a.numpy() for a in args])
    params = dict(model.named_parameters())
    model.zero_grad()
    outs = [o for o in flatten_outputs(model(*args)) if o.dtype.is_floating_point]
    total = sum((o * torch.from_numpy(w)).sum() for o, w in zip(outs, weights))
    total.backward()
    torch.testing.assert_close(torch.tensor(ours[0]), total.detach(), rtol=1e-4, atol=1e-4)
    trainable = [v.name for v in graph.trainable()]
    assert set(trainable) == set(params), "IR params are named by state_dict keys"
    for pname, g in zip(trainable, ours[1:]):
        expected = params[pname].grad
        expected = torch.zeros_like(params[pname]) if expected is None else expected
        torch.testing.assert_close(torch.from_numpy(g), expected, rtol=1e-3, atol=1e-4,
                                   msg=lambda m: f"{name} d loss / d {pname}: {m}")


def test_buffers_are_frozen_params_named_by_state_dict(traced):
    model, _, graph = traced("cnn")
    assert not graph.params["bn1.running_mean"].trainable
    assert graph.params["conv1.weight"].trainable
    np.testing.assert_array_equal(graph.params["bn1.running_var"].data, model.bn1.running_var.numpy())


def test_dynamic_dims_become_symbols_and_dim_params(traced):
    _, _, graph = traced("encoder")
    assert graph.inputs[0].shape == ("batch", "seq", 16)
    model = irtool.export_onnx(graph)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", 16]


def test_unsupported_ops_are_listed_with_counts_and_source():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x) + torch.special.bessel_j0(x * 2) + torch.lgamma(x)

    with pytest.raises(UnsupportedError) as err:
        irtool.trace(Odd(), (torch.rand(3),))
    msg = str(err.value)
    assert "special_bessel_j0" in msg and "(x2" in msg and "lgamma" in msg and "test_torch_frontend.py" in msg


@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder", "attention"])
def test_gradient_graph_exports_and_runs_on_onnxruntime(traced, name):
    """The training-side feature no other converter has: d loss / d params as
    a standard-ONNX graph, run on stock onnxruntime, equal to the numpy runtime."""
    onnx = pytest.importorskip("onnx")
    model, inputs, graph = traced(name)
    b = irtool.Builder(graph.name + "_loss")
    vmap = b.copy_graph(graph)
    loss = None
    for o in graph.outputs:
        term = b.reduce_mean(b.mul(vmap[o], vmap[o]))
        loss = term if loss is None else b.add(loss, term)
    grad_graph = irtool.grad(b.build([loss]))
    model_proto = irtool.export_onnx(grad_graph)
    onnx.checker.check_model(model_proto, full_check=True)
    assert {n.domain for n in model_proto.graph.node} <= {"", "ai.onnx"}
    for batch in (1, 4):
        feeds = [a.numpy() for a in inputs(batch, 5)]
        ours = irtool.run(grad_graph, feeds)
        theirs = irtool.run(grad_graph, feeds, backend="onnxruntime")
        for a, c in zip(ours, theirs):
            np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-5)


def test_nested_outputs_get_readable_names(traced):
    assert [o.name for o in traced("bert")[2].outputs] == ["last_hidden_state", "pooler_output"]
    assert [o.name for o in traced("attention")[2].outputs] == ["output_0", "output_1"]
    assert [o.name for o in traced("mlp")[2].outputs] == ["output"]


def test_traced_params_do_not_alias_the_module():
    model = torch.nn.Linear(3, 2)
    graph = irtool.trace(model, (torch.randn(1, 3),))
    before = graph.params["weight"].data.copy()
    with torch.no_grad():
        model.weight.add_(1.0)
    np.testing.assert_array_equal(graph.params["weight"].data, before)


def test_share_params_reads_the_module_memory_read_only(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    graph = irtool.trace(model, (x,), share_params=True)
    weight = graph.params["0.weight"].data
    assert np.shares_memory(weight, model[0].weight.detach().numpy())
    assert not weight.flags.writeable             # the IR side cannot write into the module
    with pytest.raises(ValueError):
        weight[0, 0] = 1.0
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(irtool.run(graph, [x.numpy()])[0]), expected, **FWD)
    onnx_out = irtool.run(graph, [x.numpy()], backend="onnxruntime")[0]
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, **FWD)
    irtool.export_onnx(graph, tmp_path / "m.onnx")
    # training in the IR works on its own copy: the module is left as it was
    before = model[0].weight.detach().clone()
    trainer = irtool.Trainer(graph, loss="mse", optimizer=irtool.optim.SGD(0.1))
    trainer.step(x.numpy(), np.zeros((5, 2), np.float32))
    assert not np.allclose(trainer.params["0.weight"], before.numpy())
    torch.testing.assert_close(model[0].weight.detach(), before)


def test_embedding_padding_idx_gets_no_gradient():
    emb = torch.nn.Embedding(10, 4, padding_idx=0)
    ids = torch.tensor([[0, 3, 0, 7]])
    graph = irtool.trace(emb, (ids,))
    b = irtool.Builder("loss")
    vmap = b.copy_graph(graph)
    loss = b.reduce_sum(b.mul(vmap[graph.outputs[0]], vmap[graph.outputs[0]]))
    ours = irtool.run(irtool.grad(b.build([loss])), [ids.numpy()])[1]
    (emb(ids) ** 2).sum().backward()
    torch.testing.assert_close(torch.from_numpy(ours), emb.weight.grad)
    assert not ours[0].any()
