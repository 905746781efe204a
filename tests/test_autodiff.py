"""Reverse-mode autodiff on whole graphs, checked against torch.autograd:
grad() and vjp() on MLP-like graphs, wrt handling, broadcasting, error
cases, second order (torch double backward), and gradient graphs exported
to ONNX and run on onnxruntime."""
import uuid

import numpy as np
import pytest

import irtool
from irtool.errors import AutodiffError
from irtool.ir.graph import TensorType
from irtool.ir.opdef import REGISTRY, OpDef, register

torch = pytest.importorskip("torch")


def need(*ops):
    missing = [o for o in ops if o not in REGISTRY]
    if missing:
        pytest.skip(f"op(s) {missing} not registered yet")


def close(ours, theirs, **kw):
    theirs = theirs.detach() if isinstance(theirs, torch.Tensor) else torch.as_tensor(theirs)
    torch.testing.assert_close(torch.from_numpy(np.array(ours)), theirs, **kw)


ACTS = {"tanh": torch.tanh, "exp": lambda h: torch.exp(0.5 * h), "sigmoid": torch.sigmoid}


def _act(b, name, h):
    return b.exp(b.mul(h, 0.5)) if name == "exp" else getattr(b, name)(h)


def mlp(act="tanh", dtype="float32", frozen=("b2",), n="batch"):
    """x[n,4] -> matmul w1[4,8] + b1 -> act -> matmul w2[8,3] + b2 -> mean of squares."""
    rng = np.random.default_rng(0)
    b = irtool.Builder("mlp")
    x = b.input("x", dtype, (n, 4))
    p = {}
    for name, shape in (("w1", (4, 8)), ("b1", (8,)), ("w2", (8, 3)), ("b2", (3,))):
        p[name] = b.param(name, rng.uniform(-1, 1, shape).astype(dtype), trainable=name not in frozen)
    h = _act(b, act, b.add(b.matmul(x, p["w1"]), p["b1"]))
    out = b.add(b.matmul(h, p["w2"]), p["b2"])
    sq = b.mul(out, out)
    loss = b.div(b.reduce_sum(sq), 12.0, _name="loss")     # 4 rows x 3: mean for batch 4
    return b.build([loss])


def torch_mlp(g, x, act="tanh"):
    ps = {k: torch.from_numpy(p.data.copy()).requires_grad_() for k, p in g.params.items()}
    h = ACTS[act](x @ ps["w1"] + ps["b1"])
    out = h @ ps["w2"] + ps["b2"]
    return (out * out).sum() / 12.0, ps


def _xv(dtype=np.float32, n=4, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(dtype)


# -- grad vs torch.autograd -------------------------------------------------------------

@pytest.mark.parametrize("act", ["tanh", "exp", "sigmoid"])
def test_mlp_grad_matches_torch(act):
    need(act)
    g = mlp(act)
    gg = irtool.grad(g)
    irtool.verify(gg)
    assert [o.name for o in gg.outputs] == ["loss", "grad_w1", "grad_b1", "grad_w2"]
    assert [o.type for o in gg.outputs[1:]] == [g.params[k].value.type for k in ("w1", "b1", "w2")]
    xv = _xv()
    got = irtool.run(gg, {"x": xv})
    tl, ps = torch_mlp(g, torch.from_numpy(xv), act)
    ref = torch.autograd.grad(tl, [ps["w1"], ps["b1"], ps["w2"]])
    close(got[0], tl)
    for a, r in zip(got[1:], ref):
        close(a, r)


def test_grad_leaves_the_forward_graph_alone():
    g = mlp()
    before = str(g)
    irtool.grad(g)
    irtool.grad(g, wrt=["x", "b2"])
    assert str(g) == before
    irtool.verify(g)


def test_wrt_defaults_to_trainable_params_and_skips_frozen():
    g = mlp(frozen=("w1", "b2"))
    gg = irtool.grad(g)
    assert [o.name for o in gg.outputs[1:]] == ["grad_b1", "grad_w2"]
    g = mlp(frozen=())
    assert [o.name for o in irtool.grad(g).outputs[1:]] == ["grad_w1", "grad_b1", "grad_w2", "grad_b2"]
    g = mlp(frozen=("w1", "b1", "w2", "b2"))
    with pytest.raises(AutodiffError, match="no trainable params"):
        irtool.grad(g)


def test_wrt_names_inputs_and_frozen_params():
    g = mlp()
    gg = irtool.grad(g, wrt=["x", "b2"])
    assert [o.name for o in gg.outputs] == ["loss", "grad_x", "grad_b2"]
    xv = _xv()
    got = irtool.run(gg, [xv])
    tx = torch.from_numpy(xv).requires_grad_()
    tl, ps = torch_mlp(g, tx)
    ref = torch.autograd.grad(tl, [tx, ps["b2"]])
    close(got[1], ref[0])
    close(got[2], ref[1])
    # Values work as well as names, and a single name is accepted
    g2 = irtool.grad(g, wrt=[g.inputs[0]])
    close(irtool.run(g2, [xv])[1], ref[0])
    g3 = irtool.grad(g, wrt="x")
    close(irtool.run(g3, [xv])[1], ref[0])


def test_bad_wrt_entries():
    g = mlp()
    with pytest.raises(AutodiffError, match="'nope' is not a value of the graph"):
        irtool.grad(g, wrt=["nope"])
    with pytest.raises(AutodiffError, match="wrt is empty"):
        irtool.grad(g, wrt=[])
    b = irtool.Builder()
    i = b.input("i", "int32", (3,))
    x = b.input("x", "float32", (3,))
    g = b.build([b.reduce_sum(b.mul(x, b.cast(i, dtype="float32")))])
    with pytest.raises(AutodiffError, match="dtype int32"):
        irtool.grad(g, wrt=["i"])
    other = irtool.Builder().input("x", "float32", (3,))
    with pytest.raises(AutodiffError, match="not an input or param"):
        irtool.grad(g, wrt=[other])


@pytest.mark.parametrize("shape,dtype", [((3,), "float32"), ((1, 2), "float32"), ((), "int32"),
                                         (("batch",), "float32"), (("n", 1), "float64")])
def test_non_scalar_loss_is_rejected(shape, dtype):
    b = irtool.Builder()
    x = b.input("x", dtype, shape)
    w = b.param("w", np.ones((), dtype))
    g = b.build([b.mul(x, w)])
    with pytest.raises(AutodiffError, match="scalar float first output"):
        irtool.grad(g)


def test_loss_of_shape_one_is_accepted():
    b = irtool.Builder()
    x = b.input("x", "float32", (2, 3))
    w = b.param("w", np.full((1, 3), 2.0, np.float32))
    g = b.build([b.reduce_sum(b.mul(x, w), axes=(0, 1), keepdims=True)])
    assert g.outputs[0].shape == (1, 1)
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    loss, gw = irtool.run(irtool.grad(g), [xv])
    np.testing.assert_allclose(loss, [[30.0]])
    np.testing.assert_allclose(gw, xv.sum(0, keepdims=True))


@pytest.fixture
def throwaway_op():
    """Register an op for one test and take it out of the registry afterwards."""
    made = []

    def make(**kw):
        name = f"test_autodiff_op_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return register(OpDef(name, lambda types, attrs: [types[0]], **kw))
    yield make
    for name in made:
        REGISTRY.pop(name, None)


def test_missing_rule_names_the_op_and_where_it_was_made(throwaway_op):
    op = throwaway_op()
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    w = b.param("w", np.ones(3, np.float32))
    y = getattr(b, op.name)(b.mul(x, w))                       # no kernel needed: never run
    g = b.build([b.reduce_sum(y)])
    with pytest.raises(AutodiffError) as e:
        irtool.grad(g)
    msg = str(e.value)
    assert f"op '{op.name}' has no gradient rule" in msg
    assert "test_autodiff.py:" in msg                          # the line that created the node


def test_op_without_vjp_is_differentiated_through_its_decomposition(throwaway_op):
    op = throwaway_op(decompose=lambda b, x: b.mul(x, x))
    b = irtool.Builder()
    w = b.param("w", np.array([1.0, -2.0, 3.0]))
    g = b.build([b.reduce_sum(getattr(b, op.name)(w))])
    gg = irtool.grad(g)
    assert all(n.op is not op for n in gg.nodes[len(g.nodes):])
    # kernels run the decomposition too
    loss, gw = irtool.run(gg, [])
    np.testing.assert_allclose(gw, 2 * np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(loss, 14.0)


def test_non_differentiable_ops_stop_gradients(throwaway_op):
    op = throwaway_op(differentiable=False, decompose=lambda b, x: b.mul(x, x))
    b = irtool.Builder()
    w = b.param("w", np.array([1.0, 2.0]))
    g = b.build([b.reduce_sum(b.add(b.mul(w, 3.0), getattr(b, op.name)(w)))])
    loss, gw = irtool.run(irtool.grad(g), [])       # the op runs through its decomposition
    tw = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    tl = (3 * tw + (tw * tw).detach()).sum()
    close(loss, tl)
    close(gw, torch.autograd.grad(tl, tw)[0])


# -- broadcasting -----------------------------------------------------------------------

def test_bias_add_broadcast_gradients():
    rng = np.random.default_rng(3)
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 3))
    bias = b.param("bias", rng.uniform(-1, 1, (3,)).astype(np.float32))
    scale = b.param("scale", np.array(1.5, np.float32))          # rank 0
    row = b.param("row", rng.uniform(-1, 1, (1, 3)).astype(np.float32))
    y = b.mul(b.add(b.add(x, bias), row), scale)
    g = b.build([b.reduce_sum(b.mul(y, y))])
    gg = irtool.grad(g)
    xv = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    got = irtool.run(gg, [xv])
    assert [a.shape for a in got[1:]] == [(3,), (), (1, 3)]
    ps = {k: torch.from_numpy(p.data.copy()).requires_grad_() for k, p in g.params.items()}
    ty = (torch.from_numpy(xv) + ps["bias"] + ps["row"]) * ps["scale"]
    ref = torch.autograd.grad((ty * ty).sum(), [ps["bias"], ps["scale"], ps["row"]])
    for a, r in zip(got[1:], ref):
        close(a, r)


def test_outer_product_broadcast_gradients():
    rng = np.random.default_rng(4)
    b = irtool.Builder()
    a = b.input("a", "float64", (3, 1))
    c = b.input("c", "float64", (1, 4))
    d = b.input("d", "float64", (2, 1, 1))
    g = b.build([b.reduce_sum(b.exp(b.sub(b.mul(a, c), d)))])
    gg = irtool.grad(g, wrt=["a", "c", "d"])
    arrays = [rng.uniform(-1, 1, s) for s in ((3, 1), (1, 4), (2, 1, 1))]
    got = irtool.run(gg, arrays)
    ts = [torch.from_numpy(v).requires_grad_() for v in arrays]
    ref = torch.autograd.grad(torch.exp(ts[0] * ts[1] - ts[2]).sum(), ts)
    for a_, r in zip(got[1:], ref):
        assert a_.shape == tuple(r.shape)
        close(a_, r)


def test_value_used_twice_accumulates():
    b = irtool.Builder()
    w = b.param("w", np.array([0.5, -1.0, 2.0]))
    g = b.build([b.reduce_sum(b.mul(b.mul(w, w), w))])
    np.testing.assert_allclose(irtool.run(irtool.grad(g), [])[1], 3 * np.array([0.5, -1.0, 2.0]) ** 2)


# -- vjp -------------------------------------------------------------------------------

def test_vjp_matches_torch_with_grad_outputs():
    rng = np.random.default_rng(5)
    b = irtool.Builder("two")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", rng.uniform(-1, 1, (4, 3)).astype(np.float32))
    y1 = b.matmul(x, w, _name="y1")
    y2 = b.exp(b.mul(x, b.reduce_sum(w, axes=(1,))), _name="y2")
    y3 = b.cast(x, dtype="int32", _name="y3")                    # no cotangent flows here
    g = b.build([y1, y2, y3])
    vg = irtool.vjp(g, wrt=["w", "x"])
    irtool.verify(vg)
    assert [v.name for v in vg.inputs] == ["x", "cotangent_y1", "cotangent_y2", "cotangent_y3"]
    assert [v.type for v in vg.inputs[1:]] == [y1.type, y2.type, y3.type]
    assert [o.name for o in vg.outputs] == ["y1", "y2", "y3", "grad_w", "grad_x"]
    xv = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    c1 = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    c2 = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    c3 = np.zeros((5, 4), np.int32)
    got = irtool.run(vg, [xv, c1, c2, c3])
    tx = torch.from_numpy(xv).requires_grad_()
    tw = torch.from_numpy(g.params["w"].data.copy()).requires_grad_()
    t1 = tx @ tw
    t2 = torch.exp(tx * tw.sum(1))
    ref = torch.autograd.grad([t1, t2], [tw, tx], grad_outputs=[torch.from_numpy(c1), torch.from_numpy(c2)])
    close(got[0], t1)
    close(got[1], t2)
    np.testing.assert_array_equal(got[2], xv.astype(np.int32))
    close(got[3], ref[0])
    close(got[4], ref[1])


def test_vjp_of_repeated_outputs_and_of_an_input_output():
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    w = b.param("w", np.array([1.0, -2.0, 0.5], np.float32))
    y = b.mul(x, w, _name="y")
    vg = irtool.vjp(b.build([y, y, x]), wrt=["w", "x"])
    irtool.verify(vg)
    assert [v.name for v in vg.inputs] == ["x", "cotangent_y", "cotangent_y_1", "cotangent_x"]
    xv = np.array([0.0, 1.0, 2.0], np.float32)
    cs = [np.full(3, v, np.float32) for v in (1.0, 2.0, 5.0)]
    got = _check_onnx(vg, [xv] + cs)
    tx = torch.from_numpy(xv).requires_grad_()
    tw = torch.from_numpy(b.params["w"].data.copy()).requires_grad_()
    ty = tx * tw
    ref = torch.autograd.grad([ty, ty, tx], [tw, tx], grad_outputs=[torch.from_numpy(c) for c in cs])
    close(got[3], ref[0])
    close(got[4], ref[1])


def test_vjp_defaults_to_trainable_params():
    g = mlp()
    b = irtool.Builder()
    vm = b.copy_graph(g)
    h = vm[g.outputs[0]]
    vg = irtool.vjp(b.build([h]))
    assert [o.name for o in vg.outputs] == ["loss", "grad_w1", "grad_b1", "grad_w2"]
    xv = _xv()
    got = irtool.run(vg, {"x": xv, "cotangent_loss": np.float32(2.0)})
    tl, ps = torch_mlp(g, torch.from_numpy(xv))
    ref = torch.autograd.grad(tl * 2, [ps["w1"], ps["b1"], ps["w2"]])
    for a, r in zip(got[1:], ref):
        close(a, r)


def test_unused_wrt_gets_zeros():
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 2))
    z = b.input("z", "float32", ("batch", 5))
    w = b.param("w", np.array([1.0, 2.0], np.float32))
    u = b.param("u", np.ones((3, 2), np.float32))
    g = b.build([b.reduce_sum(b.mul(x, w))])
    gg = irtool.grad(g, wrt=["w", "u", "z"])
    irtool.verify(gg)
    xv = np.ones((4, 2), np.float32)
    loss, gw, gu, gz = irtool.run(gg, [xv, np.ones((4, 5), np.float32)])
    np.testing.assert_array_equal(gw, [4.0, 4.0])
    assert gu.shape == (3, 2) and gu.dtype == np.float32 and not gu.any()
    assert gz.shape == (4, 5) and gz.dtype == np.float32 and not gz.any()


# -- second order -----------------------------------------------------------------------

def _second_order(g, wrt, arrays, torch_f, seed=7):
    """Our d/dwrt sum_i <c_i, d loss/d wrt_i> vs torch double backward."""
    rng = np.random.default_rng(seed)
    first = irtool.grad(g, wrt=wrt)
    irtool.verify(first)
    b = irtool.Builder("second")
    vm = b.copy_graph(first)
    cs = [rng.uniform(-1, 1, [int(d) for d in o.shape]) for o in first.outputs[1:]]
    total = None
    for o, c in zip(first.outputs[1:], cs):
        t = b.reduce_sum(b.mul(vm[o], b.const(c, o.dtype)))
        total = t if total is None else b.add(total, t)
    second = irtool.grad(b.build([total]), wrt=wrt)
    irtool.verify(second)
    got = irtool.run(second, arrays)
    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    names = [v.name for v in g.inputs]
    tw = [ts[names.index(w)] for w in wrt]
    first_t = torch.autograd.grad(torch_f(*ts), tw, create_graph=True)
    tot = sum((gt * torch.from_numpy(c)).sum() for gt, c in zip(first_t, cs))
    ref = torch.autograd.grad(tot, tw, allow_unused=True)
    close(got[0], tot)
    for a, r, t in zip(got[1:], ref, tw):
        close(a, torch.zeros_like(t) if r is None else r)
    return first, second


def _inputs(shapes, low=-1.0, high=1.0, seed=8):
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, s) for s in shapes]


def _graph(shapes, body):
    b = irtool.Builder()
    ins = [b.input(f"in{i}", "float64", s) for i, s in enumerate(shapes)]
    return b.build([body(b, *ins)])


def test_second_order_elementwise():
    shapes = [(3, 4), (3, 4)]

    def f(b, x, y):
        r = b.add(b.mul(b.exp(x), y), b.div(b.mul(x, x), b.add(b.mul(y, y), 1.0)))
        return b.reduce_sum(b.sub(r, b.neg(b.mul(x, y))))
    _second_order(_graph(shapes, f), ["in0", "in1"], _inputs(shapes),
                  lambda x, y: (torch.exp(x) * y + x * x / (y * y + 1) - (-(x * y))).sum())


@pytest.mark.parametrize("op", ["tanh", "sigmoid"])
def test_second_order_activations(op):
    need(op)
    shapes = [(2, 5)]
    _second_order(_graph(shapes, lambda b, x: b.reduce_sum(b.mul(getattr(b, op)(x), x))), ["in0"],
                  _inputs(shapes, -2, 2), lambda x: (getattr(torch, op)(x) * x).sum())


def test_second_order_broadcasting():
    shapes = [(3, 1), (1, 4)]
    _second_order(_graph(shapes, lambda b, a, c: b.reduce_sum(b.exp(b.mul(a, c)))), ["in0", "in1"],
                  _inputs(shapes), lambda a, c: torch.exp(a * c).sum())


def test_second_order_matmul():
    shapes = [(2, 3, 4), (4, 5)]
    _second_order(_graph(shapes, lambda b, x, w: b.reduce_sum(b.exp(b.mul(b.matmul(x, w), 0.5)))),
                  ["in0", "in1"], _inputs(shapes), lambda x, w: torch.exp((x @ w) * 0.5).sum())


@pytest.mark.parametrize("reduce,ref", [
    ("reduce_sum", lambda x: x.sum(dim=1)),
    ("reduce_mean", lambda x: x.mean(dim=1)),
    ("reduce_max", lambda x: x.amax(dim=1)),
])
def test_second_order_reductions(reduce, ref):
    need(reduce)
    shapes = [(3, 4, 2)]

    def f(b, x):
        r = getattr(b, reduce)(b.mul(x, x), axes=(1,))
        return b.reduce_sum(b.mul(b.mul(r, r), r))
    _second_order(_graph(shapes, f), ["in0"], _inputs(shapes), lambda x: (ref(x * x) ** 3).sum())


@pytest.mark.parametrize("axis", [-1, 0])
def test_second_order_softmax(axis):
    need("softmax")
    shapes = [(3, 4), (3, 4)]
    _second_order(_graph(shapes, lambda b, x, c: b.reduce_sum(b.mul(b.softmax(x, axis=axis), c))),
                  ["in0"], _inputs(shapes, -2, 2),
                  lambda x, c: (torch.softmax(x, dim=axis) * c).sum())


# -- gradient graphs on onnxruntime --------------------------------------------------------

def _check_onnx(graph, inputs):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = irtool.export_onnx(graph)
    assert isinstance(model, onnx.ModelProto)
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    names = [o.name for o in graph.outputs]
    if len(set(names)) == len(names) and not set(names) & {v.name for v in graph.inputs}:
        assert [o.name for o in model.graph.output] == names     # else ONNX needs fresh names
    ours = irtool.run(graph, inputs)
    theirs = irtool.run(graph, inputs, backend="onnxruntime")
    assert len(ours) == len(theirs)
    for a, t in zip(ours, theirs):
        assert a.shape == t.shape and a.dtype == t.dtype
        close(t, torch.from_numpy(np.array(a)))
    return ours


@pytest.mark.parametrize("act", ["tanh", "exp"])
def test_grad_graph_runs_on_onnxruntime(act):
    need(act)
    g = mlp(act)
    gg = irtool.grad(g, wrt=["w1", "b1", "w2", "b2", "x"])
    for n in (4, 9):                       # one export, symbolic batch
        xv = _xv(n=n, seed=n)
        ours = _check_onnx(gg, {"x": xv})
        tx = torch.from_numpy(xv).requires_grad_()
        tl, ps = torch_mlp(g, tx, act)
        ref = torch.autograd.grad(tl, [ps["w1"], ps["b1"], ps["w2"], ps["b2"], tx])
        for a, r in zip(ours[1:], ref):
            close(a, r)


def test_vjp_and_second_order_graphs_run_on_onnxruntime():
    shapes = [(2, 3, 4), (4, 5)]
    g = _graph(shapes, lambda b, x, w: b.reduce_sum(b.exp(b.mul(b.matmul(x, w), 0.5))))
    arrays = _inputs(shapes)
    first, second = _second_order(g, ["in0", "in1"], arrays,
                                  lambda x, w: torch.exp((x @ w) * 0.5).sum())
    _check_onnx(first, arrays)
    _check_onnx(second, arrays)
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", np.ones((4, 3), np.float32))
    vg = irtool.vjp(b.build([b.exp(b.matmul(x, w))]), wrt=["w", "x"])
    xv = _xv()
    _check_onnx(vg, [xv, np.ones((4, 3), np.float32)])


def test_grad_graph_with_softmax_runs_on_onnxruntime():
    need("softmax")
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 6))
    w = b.param("w", np.random.default_rng(0).uniform(-1, 1, (6, 6)).astype(np.float32))
    p = b.softmax(b.matmul(x, w), axis=-1)
    g = b.build([b.reduce_sum(b.mul(p, p))])
    gg = irtool.grad(g)
    xv = np.random.default_rng(1).uniform(-1, 1, (3, 6)).astype(np.float32)
    ours = _check_onnx(gg, [xv])
    tw = torch.from_numpy(g.params["w"].data.copy()).requires_grad_()
    tp = torch.softmax(torch.from_numpy(xv) @ tw, dim=-1)
    close(ours[1], torch.autograd.grad((tp * tp).sum(), tw)[0])


def test_unbroadcast_types():
    from irtool.ir.autodiff import unbroadcast
    b = irtool.Builder()
    g = b.input("g", "float32", ("batch", 3, 4))
    for shape in [("batch", 3, 4), (3, 4), (4,), (1, 4), (3, 1), (), (1, 1, 1), ("batch", 1, 4)]:
        x = b.input(f"x{len(b.inputs)}", "float32", shape)
        assert unbroadcast(b, g, x).type == TensorType("float32", shape)
    with pytest.raises(AutodiffError, match="lower rank"):
        unbroadcast(b, b.input("small", "float32", (4,)), g)


# -- stop_gradient ------------------------------------------------------------------------

def test_stop_gradient_passes_no_gradient():
    """Like torch's detach: the value flows on, no gradient flows back through it."""
    rng = np.random.default_rng(11)
    b = irtool.Builder()
    x = b.input("x", "float64", (3, 4))
    y = b.input("y", "float64", (4,))
    z = b.input("z", "float64", (3, 1))
    # z reaches the loss only through stop_gradient; y both ways (broadcast)
    r = b.add(b.mul(x, b.stop_gradient(b.mul(x, y))), b.mul(b.exp(b.stop_gradient(y)), y))
    g = b.build([b.reduce_sum(b.mul(r, b.stop_gradient(b.tanh(z))))])
    xs = [rng.uniform(-1, 1, s) for s in ((3, 4), (4,), (3, 1))]
    got = irtool.run(irtool.grad(g, wrt=["x", "y", "z"]), xs)
    tx, ty, tz = (torch.from_numpy(a.copy()).requires_grad_() for a in xs)
    tl = ((tx * (tx * ty).detach() + torch.exp(ty.detach()) * ty) * torch.tanh(tz).detach()).sum()
    ref = torch.autograd.grad(tl, [tx, ty, tz], allow_unused=True)
    close(got[0], tl)
    for a, r_, t in zip(got[1:], ref, (tx, ty, tz)):
        close(a, torch.zeros_like(t) if r_ is None else r_)
    assert not got[3].any() and got[3].shape == (3, 1)
    # vjp of an output that is stop_gradient of the input: zeros
    b = irtool.Builder()
    w = b.input("w", "float32", ("n", 2))
    out = irtool.run(irtool.vjp(b.build([b.stop_gradient(w)]), wrt=["w"]),
                     [np.ones((5, 2), np.float32), np.full((5, 2), 3.0, np.float32)])
    np.testing.assert_array_equal(out[0], np.ones((5, 2)))
    assert out[1].shape == (5, 2) and not out[1].any()


def test_straight_through_estimator():
    """x + stop_gradient(round(x) - x): forward rounds, backward is the identity."""
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 3))
    c = np.array([0.5, -2.0, 3.0], np.float32)
    q = b.add(x, b.stop_gradient(b.sub(b.round(x), x)))
    g = b.build([b.reduce_sum(b.mul(q, b.const(c, "float32")))])
    xv = np.array([[0.2, 1.7, -2.4], [3.1, -0.6, 0.9]], np.float32)
    loss, gx = irtool.run(irtool.grad(g, wrt=["x"]), [xv])
    np.testing.assert_allclose(loss, (np.round(xv) * c).sum(), rtol=1e-6)
    np.testing.assert_array_equal(gx, np.broadcast_to(c, (2, 3)))


def test_second_order_through_stop_gradient():
    shapes = [(3, 4), (3, 4)]

    def f(b, x, y):
        r = b.add(b.mul(b.mul(x, x), b.stop_gradient(b.mul(x, y))), b.mul(b.exp(b.stop_gradient(y)), y))
        return b.reduce_sum(b.mul(r, b.stop_gradient(b.sin(x))))
    first, second = _second_order(
        _graph(shapes, f), ["in0", "in1"], _inputs(shapes),
        lambda x, y: ((x * x * (x * y).detach() + torch.exp(y.detach()) * y) * torch.sin(x).detach()).sum())
    _check_onnx(first, _inputs(shapes))
    _check_onnx(second, _inputs(shapes))
