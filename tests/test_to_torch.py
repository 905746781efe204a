"""IR -> PyTorch exporter (irtool.exporters.torch).

- every op times its samples (generated from the registry): the torch module's
  forward equals the numpy runtime, and torch.autograd through it equals
  irtool.grad; every op has a torch lowering or a decomposition;
- the torch model zoo round trip torch -> IR -> torch: forward, parameter
  gradients, state_dict keys, load_state_dict, torch.export with a dynamic
  batch; and torch -> IR -> ONNX -> IR -> torch;
- save_exported_program writes a .pt2 that torch.export.load runs.
"""
import copy

import numpy as np
import pytest

import irtool
from irtool.frontends.torch_files import flatten_outputs
from irtool.errors import IRTypeError, RuntimeFailure, UnsupportedError
from irtool.ir.opdef import REGISTRY
from tests.op_harness import (float_inputs, grad_cases, loss_graph, op_cases, single_op_graph,
                               symbolic_shape_graph)

torch = pytest.importorskip("torch")
from irtool.exporters.torch import (LOWERINGS, dynamic_shapes_for, export_program,  # noqa: E402
                                    save_exported_program, to_torch)
from irtool.exporters.torch.lowering import from_numpy  # noqa: E402
from tests.torch_zoo import ZOO, build, float_outputs, loss_weights, tracer, weighted_loss  # noqa: E402

FWD = dict(rtol=1e-4, atol=1e-5)     # float32 through different op orders (as tests/test_torch_frontend.py)


CASES = op_cases()
GRAD_CASES = grad_cases(CASES)


def _tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# -- every op ---------------------------------------------------------------------------

def test_every_op_has_a_torch_lowering_or_a_decomposition():
    missing = sorted(op.name for op in REGISTRY.values() if op not in LOWERINGS and op.decompose is None)
    assert not missing, f"ops with no torch lowering and no decomposition: {', '.join(missing)}"


@pytest.mark.parametrize("op,sample", CASES)
def test_forward_matches_numpy_runtime(op, sample):
    graph, arrays = single_op_graph(op, sample)
    expected = irtool.run(graph, arrays)
    module = to_torch(graph)
    with torch.no_grad():
        got = _tuple(module(*[from_numpy(a) for a in arrays]))
    assert len(got) == len(expected)
    for v, t, e in zip(graph.outputs, got, expected):
        assert tuple(t.shape) == v.shape and str(t.dtype) == f"torch.{v.dtype}", \
            f"rule says {v.type}, torch gave {t.dtype} {list(t.shape)}"
        torch.testing.assert_close(t, from_numpy(e), equal_nan=True)


@pytest.mark.parametrize("op,sample", GRAD_CASES)
def test_autograd_matches_irtool_grad(op, sample):
    graph, arrays = single_op_graph(op, sample, cast64=True)
    loss, cots = loss_graph(graph, np.random.default_rng(1))
    idx = float_inputs(op, arrays)
    ours = irtool.run(irtool.grad(loss, wrt=[loss.inputs[i].name for i in idx]), arrays)[1:]
    ts = [from_numpy(a) for a in arrays]
    for i in idx:
        ts[i].requires_grad_(True)
    outs = [o for o in _tuple(to_torch(graph)(*ts)) if o.dtype.is_floating_point]
    total = sum((o * torch.from_numpy(c)).sum() for o, c in zip(outs, cots))
    theirs = (torch.autograd.grad(total, [ts[i] for i in idx], allow_unused=True) if total.requires_grad
              else [None] * len(idx))           # stop_gradient: nothing reaches the inputs
    for i, a, t in zip(idx, ours, theirs):
        t = torch.zeros_like(ts[i]) if t is None else t
        torch.testing.assert_close(t, torch.from_numpy(np.array(a)), msg=lambda m: f"input {i} of {op.name}: {m}")


def _first_and_last(cases):
    by_op = {}
    for p in cases:
        by_op.setdefault(p.values[0].name, []).append(p)
    return [p for ps in by_op.values() for p in {id(q): q for q in (ps[0], ps[-1])}.values()]


@pytest.mark.parametrize("op,sample", _first_and_last(CASES))
def test_torch_export_of_every_op(op, sample):
    graph, arrays = single_op_graph(op, sample)
    args = tuple(from_numpy(a) for a in arrays)
    program = torch.export.export(to_torch(graph), args)
    for t, e in zip(_tuple(program.module()(*args)), irtool.run(graph, arrays)):
        torch.testing.assert_close(t, from_numpy(e), equal_nan=True)


@pytest.mark.parametrize("op,sample", [c for c in CASES if c.values[1].inputs])
def test_every_op_stays_on_the_module_device(op, sample):
    """Constants, index arrays and created tensors follow .to(device): checked
    on the meta device, which also catches host reads such as .item()."""
    graph, arrays = single_op_graph(op, sample)
    out = _tuple(to_torch(graph).to("meta")(*[from_numpy(a).to("meta") for a in arrays]))
    assert [t.device.type for t in out] == ["meta"] * len(out)
    assert [tuple(t.shape) for t in out] == [v.shape for v in graph.outputs]


def test_params_become_parameters_and_buffers_named_like_the_ir():
    b = irtool.Builder("named")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("enc.layers.0.fc.weight", np.ones((3, 4), np.float32))
    stats = b.param("enc.norm.running_mean", np.zeros(3, np.float32), trainable=False)
    steps = b.param("steps", np.array(5, np.int64))                  # trainable ints stay buffers
    odd = b.param("training", np.ones(3, np.float32))                # collides with nn.Module.training
    y = b.add(b.add(b.linear(x, w), stats), odd)
    m = to_torch(b.build([y, steps]))
    assert m.ir_renamed == {"training": "ir_param_training"}
    assert {n for n, _ in m.named_parameters()} == {"enc.layers.0.fc.weight", "ir_param_training"}
    assert set(m.state_dict()) == {"enc.layers.0.fc.weight", "enc.norm.running_mean", "steps",
                                   "ir_param_training"}
    out, n = m(torch.ones(2, 4))
    torch.testing.assert_close(out, torch.full((2, 3), 5.0))
    assert n.item() == 5


def test_bad_inputs_are_named():
    b = irtool.Builder("g")
    x = b.input("x", "float32", ("batch", 4))
    y = b.input("y", "float32", ("batch", 4))
    m = to_torch(b.build([b.add(x, y)]))
    with pytest.raises(IRTypeError, match="input 'x' must be float32"):
        m(torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 4))
    with pytest.raises(IRTypeError, match="'batch' is 2 elsewhere but 3"):
        m(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(IRTypeError, match="expected rank 2"):
        m(torch.ones(2, 4), torch.ones(2))
    torch.testing.assert_close(m(y=torch.ones(2, 4), x=torch.ones(2, 4)), torch.full((2, 4), 2.0))


def test_runtime_failures_name_the_node():
    b = irtool.Builder("g")
    x = b.input("x", "float32", (3, 2))
    i = b.input("i", "int64", (2,))
    m = to_torch(b.build([b.gather(x, i, axis=0)]))
    with pytest.raises(RuntimeFailure, match=r"gather\(%x, %i, axis=0\)"):
        m(torch.ones(3, 2), torch.tensor([0, 7]))


def test_modules_copy_and_differentiate_twice():
    model, inputs, dyn = build("mlp")
    m = to_torch(irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn))
    twin = copy.deepcopy(m)
    x = inputs(3, 5)[0].requires_grad_(True)
    torch.testing.assert_close(twin(x), m(x))
    gx, = torch.autograd.grad(m(x).pow(2).sum(), x, create_graph=True)
    hx, = torch.autograd.grad(gx.pow(2).sum(), x)
    model_gx, = torch.autograd.grad(model(x).pow(2).sum(), x, create_graph=True)
    model_hx, = torch.autograd.grad(model_gx.pow(2).sum(), x)
    torch.testing.assert_close(hx, model_hx, **FWD)


def test_unlowered_op_is_reported(monkeypatch):
    op = REGISTRY["erf"]
    monkeypatch.delitem(LOWERINGS, op)
    b = irtool.Builder("g")
    x = b.input("x", "float32", (3,))
    with pytest.raises(UnsupportedError, match=r"erf \(x2\)"):
        to_torch(b.build([b.add(b.erf(x), b.erf(x))]))


def test_composites_without_a_lowering_are_decomposed(monkeypatch):
    op = REGISTRY["gelu"]
    monkeypatch.delitem(LOWERINGS, op)
    b = irtool.Builder("g")
    x = b.input("x", "float32", (3, 4))
    g = b.build([b.gelu(x)])
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    torch.testing.assert_close(to_torch(g)(torch.from_numpy(a)), torch.from_numpy(irtool.run(g, [a])[0]))


def test_symbolic_shape_attrs_follow_the_input_shapes():
    g = symbolic_shape_graph()
    m = to_torch(g)
    for batch, seq in ((2, 3), (4, 7)):
        a = np.random.default_rng(batch).standard_normal((batch, seq, 4)).astype(np.float32)
        for t, e in zip(m(torch.from_numpy(a)), irtool.run(g, [a])):
            torch.testing.assert_close(t, from_numpy(e))
    ep = torch.export.export(m, (torch.randn(3, 5, 4),), dynamic_shapes=dynamic_shapes_for(g, m))
    a = np.random.default_rng(0).standard_normal((6, 9, 4)).astype(np.float32)
    for t, e in zip(ep.module()(torch.from_numpy(a)), irtool.run(g, [a])):
        torch.testing.assert_close(t, from_numpy(e))


def test_gradient_graph_runs_in_torch():
    """An irtool.grad graph (max_pool_backward, conv_transpose, scatter_add...)
    is an ordinary graph: its torch module equals the numpy runtime, also
    exported with a dynamic batch."""
    model, inputs, dyn = build("cnn")
    graph = irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
    b = irtool.Builder("loss")
    vmap = b.copy_graph(graph)
    out = vmap[graph.outputs[0]]
    g = irtool.grad(b.build([b.reduce_mean(b.mul(out, out))]))
    module = to_torch(g)
    feeds = [a.numpy() for a in inputs(3, 5)]
    got = module(*[torch.from_numpy(a) for a in feeds])
    for t, e in zip(got, irtool.run(g, feeds)):
        torch.testing.assert_close(t.detach(), torch.from_numpy(np.asarray(e)), **FWD)
    program = torch.export.export(module, inputs(3, 5), dynamic_shapes=dynamic_shapes_for(g, module))
    feeds = [a.numpy() for a in inputs(5, 5)]
    for t, e in zip(program.module()(*[torch.from_numpy(a) for a in feeds]), irtool.run(g, feeds)):
        torch.testing.assert_close(t, torch.from_numpy(np.asarray(e)), **FWD)


# -- the model zoo ------------------------------------------------------------------------

ZOO_NAMES = ["mlp", "cnn", "lstm", "gru", "encoder", "attention", "bert"]


@pytest.fixture(scope="module")
def zoo():
    return tracer(to_torch)


def _shapes(name):
    return [(1, 5), (3, 9), (4, 5)] if "seq" in str(ZOO[name][2]) else [(1, 5), (3, 5), (4, 5)]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_forward_matches_the_original(zoo, name):
    model, inputs, _, ours = zoo(name)
    for batch, seq in _shapes(name):
        args = inputs(batch, seq)
        with torch.no_grad():
            expected, got = flatten_outputs(model(*args)), flatten_outputs(ours(*args))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, **FWD, msg=lambda m: f"{name} batch={batch} seq={seq}: {m}")


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_parameter_gradients_match_the_original(zoo, name):
    model, inputs, _, ours = zoo(name)
    args = inputs(3, 5)
    weights = loss_weights(model, args)
    grads = {}
    for m in (model, ours):
        m.zero_grad()
        weighted_loss(float_outputs(m, args), weights).backward()
        grads[m] = {n: p.grad for n, p in m.named_parameters()}
    assert list(grads[ours]) == list(grads[model]) or set(grads[ours]) == set(grads[model])
    for pname, expected in grads[model].items():
        got = grads[ours][pname]
        expected = torch.zeros_like(got) if expected is None else expected
        got = torch.zeros_like(expected) if got is None else got
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4,
                                   msg=lambda m: f"{name} d loss / d {pname}: {m}")


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_state_dict_round_trips(zoo, name):
    model, inputs, graph, ours = zoo(name)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in model.named_parameters()}
    assert set(ours.state_dict()) == set(graph.params)
    # every buffer the trace kept is one of the original's (non-persistent ones, such as
    # BERT's position_ids, become persistent: the IR does not record persistence)
    everything = {**model.state_dict(), **dict(model.named_buffers())}
    assert set(ours.state_dict()) <= set(everything)
    # the original's weights load into a fresh copy, strictly
    fresh = to_torch(graph)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict({k: v for k, v in everything.items() if k in graph.params}, strict=True)
    args = inputs(2, 5)
    with torch.no_grad():
        for g, e in zip(flatten_outputs(fresh(*args)), flatten_outputs(model(*args))):
            torch.testing.assert_close(g, e, **FWD)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_torch_export_with_dynamic_shapes(zoo, name):
    model, inputs, graph, ours = zoo(name)
    program = torch.export.export(ours, inputs(3, 5), dynamic_shapes=dynamic_shapes_for(graph, ours))
    run = program.module()
    for batch, seq in _shapes(name):
        args = inputs(batch, seq)
        with torch.no_grad():
            for g, e in zip(flatten_outputs(run(*args)), flatten_outputs(model(*args))):
                torch.testing.assert_close(g, e, **FWD, msg=lambda m: f"{name} batch={batch} seq={seq}: {m}")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_zoo_through_onnx_and_back(zoo, name):
    pytest.importorskip("onnx")
    model, inputs, graph, _ = zoo(name)
    back = irtool.import_onnx(irtool.export_onnx(graph))
    ours = to_torch(back)
    for batch, seq in _shapes(name):
        args = inputs(batch, seq)
        with torch.no_grad():
            for g, e in zip(flatten_outputs(ours(*args)), flatten_outputs(model(*args))):
                torch.testing.assert_close(g, e, **FWD)
    # ONNX has no trainable flag: every initializer comes back a parameter, under its name
    assert set(ours.state_dict()) <= set(model.state_dict())
    assert {n for n, _ in model.named_parameters()} <= {n for n, _ in ours.named_parameters()}
    ours.zero_grad()
    model.zero_grad()
    args = inputs(3, 5)
    for m in (model, ours):
        (flatten_outputs(m(*args))[0] ** 2).mean().backward()
    params = dict(ours.named_parameters())
    for pname, p in model.named_parameters():
        torch.testing.assert_close(params[pname].grad, p.grad, rtol=1e-3, atol=1e-4,
                                   msg=lambda m: f"{name} d loss / d {pname}: {m}")


# -- saved programs -------------------------------------------------------------------------

def test_save_exported_program_round_trips(zoo, tmp_path):
    model, inputs, graph, _ = zoo("cnn")
    path = tmp_path / "cnn.pt2"
    save_exported_program(graph, path)
    loaded = torch.export.load(path).module()
    for batch in (1, 4):
        args = inputs(batch, 5)
        with torch.no_grad():
            torch.testing.assert_close(loaded(*args), model(*args), **FWD)


def test_export_program_with_named_dims_and_given_inputs(zoo):
    model, inputs, graph, _ = zoo("encoder")
    program = export_program(graph, inputs(3, 6), named_dims=True)
    args = inputs(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), model(*args), **FWD)
