"""Symbolic dims: the shape arithmetic in irtool.ir.shapes, how shape rules
propagate names, and how the runtime binds them from the actual inputs."""
import numpy as np
import pytest

import irtool
from irtool.errors import IRTypeError
from irtool.ir.shapes import (add_dims, bind, broadcast, canon, check_shape, div_dims, evaluate,
                              mul_dims, norm_axes, norm_axis, numel)

torch = pytest.importorskip("torch")


def _in(shape, dtype="float32", name="x"):
    b = irtool.Builder()
    return b, b.input(name, dtype, shape)


# -- dim arithmetic ---------------------------------------------------------------

def test_mul_dims():
    assert mul_dims(2, 3) == 6
    assert mul_dims("b", 4) == "4*b"
    assert mul_dims("seq", "batch", 2) == "2*batch*seq"
    assert mul_dims(2, "batch", "seq") == mul_dims("seq", 2, "batch")    # canonical order
    assert mul_dims("2*b", "3*a") == "6*a*b"
    assert mul_dims("b", 0) == 0
    assert mul_dims("b", 1) == "b"
    assert mul_dims() == 1
    assert mul_dims("b", "b") == "b*b"


def test_div_dims():
    assert div_dims(12, 4) == 3
    assert div_dims(6, 4) is None
    assert div_dims("32*batch", 8) == "4*batch"
    assert div_dims("4*batch", "batch") == 4
    assert div_dims("4*batch", "2*batch") == 2
    assert div_dims("a*b", "b") == "a"
    assert div_dims("batch", 2) is None            # cannot be shown to divide
    assert div_dims(8, "batch") is None
    assert div_dims("a", "b") is None
    assert div_dims(5, 0) is None
    assert div_dims(0, 3) == 0
    assert div_dims(0, "b") == 0


def test_evaluate():
    env = {"batch": 3, "seq": 5}
    assert evaluate(7, env) == 7
    assert evaluate("batch", env) == 3
    assert evaluate("4*batch", env) == 12
    assert evaluate("2*batch*seq", env) == 30
    assert evaluate(add_dims("2*batch", "seq"), env) == 11
    assert evaluate(mul_dims(2, add_dims("batch", "seq")), env) == 16
    with pytest.raises(IRTypeError, match="'other' is not bound"):
        evaluate("2*other", env)


def test_add_dims_and_opaque_sums_are_valid_dims():
    assert add_dims(2, 3) == 5
    assert add_dims("a", 0) == "a" and add_dims(0, "a") == "a"
    s = add_dims("2*a", "b")
    assert check_shape((s, 3)) == (s, 3)
    assert evaluate(s, {"a": 4, "b": 1}) == 9
    t = mul_dims(3, s)
    assert check_shape((t,)) == (t,)
    assert evaluate(t, {"a": 4, "b": 1}) == 27
    assert div_dims(t, s) == 3


def test_check_shape_and_canon():
    assert check_shape(["batch*4", np.int64(3), "1*seq"]) == ("4*batch", 3, "seq")
    assert type(check_shape([np.int32(2)])[0]) is int
    assert canon("3*2*a") == "6*a" and canon("12") == 12 and canon("0*a") == 0
    for bad in [(-1,), (2.5,), (True,), (None,), ("bad name",), ("a+b",), ("(a+b",)]:
        with pytest.raises(IRTypeError):
            check_shape(bad)
    with pytest.raises(IRTypeError, match="string"):
        check_shape("ab")
    with pytest.raises(IRTypeError):
        check_shape(3)


def test_numel():
    assert numel(()) == 1
    assert numel((2, 3)) == 6
    assert numel(("batch", 4, 8)) == "32*batch"


def test_norm_axis_and_axes():
    assert norm_axis(-1, 3) == 2 and norm_axis(0, 3) == 0
    assert norm_axes(None, 3) == (0, 1, 2)
    assert norm_axes(-1, 3) == (2,)
    assert norm_axes((2, -3), 3) == (0, 2)
    with pytest.raises(IRTypeError, match="out of range"):
        norm_axis(3, 3)
    with pytest.raises(IRTypeError, match="out of range"):
        norm_axis(-4, 3)
    with pytest.raises(IRTypeError, match="repeated axis"):
        norm_axes((1, -2), 3)


def test_bind():
    env = {}
    assert bind(("batch", 4), (3, 4), env) is None and env == {"batch": 3}
    assert bind(("batch", "4*batch"), (3, 12), env) is None
    assert "expected rank" in bind(("batch",), (3, 4), env)
    assert "expected shape" in bind(("batch", 4), (3, 5), env)
    assert "'batch' is 3 elsewhere but 2 here" in bind(("batch",), (2,), env)
    assert "'4*batch' is 12" in bind(("4*batch",), (8,), env)


# -- shape rules propagate symbols -------------------------------------------------------

@pytest.mark.parametrize("a,c,out", [
    (("batch", 1, 4), (3, 1), ("batch", 3, 4)),
    (("batch", 4), (4,), ("batch", 4)),
    (("batch", 1), (1, "seq"), ("batch", "seq")),
    ((1, "seq"), ("batch", 1), ("batch", "seq")),
    (("n",), (5,), (5,)),           # only n == 5 (or 1) can broadcast with 5
    (("batch", 4), (), ("batch", 4)),
    (("batch", "seq"), ("batch", "seq"), ("batch", "seq")),
])
def test_broadcasting_symbolic_dims(a, c, out):
    assert broadcast(a, c) == out
    b = irtool.Builder()
    y = b.add(b.input("a", "float32", a), b.input("c", "float32", c))
    assert y.shape == out


def test_broadcasting_static_mismatch():
    with pytest.raises(IRTypeError, match="do not broadcast"):
        broadcast(("batch", 3), (4,))


@pytest.mark.parametrize("src,target,out", [
    (("batch", 4, 8), (-1, 8), ("4*batch", 8)),
    (("batch", 4, 8), (-1,), ("32*batch",)),
    (("batch", 4, 8), ("batch", -1), ("batch", 32)),
    (("batch", 4, 8), (-1, 2, 16), ("batch", 2, 16)),
    (("batch", "seq", 8), ("batch", -1), ("batch", "8*seq")),
    (("4*batch", 8), ("batch", 4, 8), ("batch", 4, 8)),
])
def test_reshape_symbolic(src, target, out):
    b, x = _in(src)
    assert b.reshape(x, shape=target).shape == out


def test_reshape_errors():
    b, x = _in(("batch", 4, 8))
    with pytest.raises(IRTypeError, match="sizes do not divide"):
        b.reshape(x, shape=(-1, 3, "seq"))
    with pytest.raises(IRTypeError, match="more than one -1"):
        b.reshape(x, shape=(-1, -1))
    b, y = _in((4, 8))
    with pytest.raises(IRTypeError, match="32 elements"):
        b.reshape(y, shape=(5, 7))


def test_matmul_symbolic():
    b, x = _in(("batch", 5, 4))
    w = b.input("w", "float32", (4, 3))
    assert b.matmul(x, w).shape == ("batch", 5, 3)
    v = b.input("v", "float32", ("batch", 4, "n"))
    assert b.matmul(x, v).shape == ("batch", 5, "n")
    with pytest.raises(IRTypeError, match="inner dims differ"):
        b.matmul(x, b.input("bad", "float32", (5, 3)))


@pytest.mark.parametrize("attrs,out", [
    ({}, ()),
    ({"axes": (0,)}, (4, 8)),
    ({"axes": (0,), "keepdims": True}, (1, 4, 8)),
    ({"axes": (-1,)}, ("batch", 4)),
    ({"axes": (0, 2), "keepdims": True}, (1, 4, 1)),
])
def test_reduce_symbolic(attrs, out):
    b, x = _in(("batch", 4, 8))
    assert b.reduce_sum(x, **attrs).shape == out


def test_unsqueeze_squeeze_transpose_expand_symbolic():
    b, x = _in(("batch", 4))
    u = b.unsqueeze(x, axes=(0, -1))
    assert u.shape == (1, "batch", 4, 1)
    assert b.squeeze(u).shape == ("batch", 4)                # drops static 1s only
    assert b.squeeze(u, axes=(0,)).shape == ("batch", 4, 1)
    assert b.squeeze(x, axes=(0,)).shape == (4,)             # batch may be 1: trusted
    with pytest.raises(IRTypeError, match="size is not 1"):
        b.squeeze(x, axes=(1,))
    assert b.transpose(x).shape == (4, "batch")
    one = b.input("one", "float32", (1, 4))
    assert b.expand(one, shape=("batch", 4)).shape == ("batch", 4)
    with pytest.raises(IRTypeError, match="do not broadcast"):
        b.expand(x, shape=(2, 3))
    with pytest.raises(IRTypeError, match="cannot expand"):
        b.expand(b.input("wide", "float32", (2, 4)), shape=(4,))


# -- runtime binding -----------------------------------------------------------------------

def _batch_graph():
    rng = np.random.default_rng(0)
    b = irtool.Builder("batchy")
    x = b.input("x", "float32", ("batch", 4, 8))
    m = b.input("m", "float32", ("batch", 1))
    w = b.param("w", rng.uniform(-1, 1, (8, 3)).astype(np.float32))
    bias = b.param("bias", rng.uniform(-1, 1, (3,)).astype(np.float32))
    flat = b.reshape(x, shape=(-1, 8))                       # [4*batch, 8]
    h = b.exp(b.mul(b.add(b.matmul(flat, w), bias), 0.25))   # [4*batch, 3]
    back = b.reshape(h, shape=("batch", 4, 3))
    s = b.reduce_sum(back, axes=(1,))                        # [batch, 3]
    out = b.mul(s, m)
    col = b.unsqueeze(b.reduce_sum(out, axes=(-1,)), axes=(-1,))   # [batch, 1]
    ones = b.expand(b.const(1.0, "float32"), shape=("batch", 2))
    return b.build([out, col, flat, b.add(col, ones)]), (w, bias)


@pytest.mark.parametrize("n", [1, 3, 8, 17])
def test_one_graph_runs_at_many_batch_sizes(n):
    g, (w, bias) = _batch_graph()
    irtool.verify(g)
    assert [o.shape for o in g.outputs] == [("batch", 3), ("batch", 1), ("4*batch", 8), ("batch", 2)]
    rng = np.random.default_rng(n)
    xv = rng.uniform(-1, 1, (n, 4, 8)).astype(np.float32)
    mv = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    out, col, flat, plus = irtool.run(g, {"x": xv, "m": mv})
    tx, tm = torch.from_numpy(xv), torch.from_numpy(mv)
    tw, tb = torch.from_numpy(g.params["w"].data), torch.from_numpy(g.params["bias"].data)
    h = torch.exp((tx.reshape(-1, 8) @ tw + tb) * 0.25)
    ref = h.reshape(n, 4, 3).sum(1) * tm
    torch.testing.assert_close(torch.from_numpy(out), ref)
    torch.testing.assert_close(torch.from_numpy(col), ref.sum(-1, keepdim=True))
    assert flat.shape == (4 * n, 8)
    assert plus.shape == (n, 2)
    torch.testing.assert_close(torch.from_numpy(plus), (ref.sum(-1, keepdim=True) + 1).expand(n, 2))


def test_runtime_rejects_inconsistent_symbol_sizes():
    g, _ = _batch_graph()
    xv = np.zeros((3, 4, 8), np.float32)
    with pytest.raises(IRTypeError, match=r"input 'm': dim 'batch' is 3 elsewhere but 2 here"):
        irtool.run(g, {"x": xv, "m": np.zeros((2, 1), np.float32)})
    with pytest.raises(IRTypeError, match=r"input 'x': expected shape \[batch,4,8\], got \[3, 5, 8\]"):
        irtool.run(g, {"x": np.zeros((3, 5, 8), np.float32), "m": np.zeros((3, 1), np.float32)})
    with pytest.raises(IRTypeError, match="expected rank 3"):
        irtool.run(g, {"x": np.zeros((3, 32), np.float32), "m": np.zeros((3, 1), np.float32)})


def test_runtime_checks_derived_dims_of_inputs():
    # vjp graphs take cotangents shaped like the outputs: "4*batch" is an input dim there
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 4, 8))
    r = b.reshape(x, shape=(-1, 8))
    g = irtool.vjp(b.build([r]), wrt=["x"])
    assert g.inputs[1].shape == ("4*batch", 8)
    xv = np.ones((2, 4, 8), np.float32)
    ok = irtool.run(g, [xv, np.ones((8, 8), np.float32)])
    assert ok[1].shape == (2, 4, 8)
    with pytest.raises(IRTypeError, match=r"'4\*batch' is 8 under batch=2 but 6 here"):
        irtool.run(g, [xv, np.ones((6, 8), np.float32)])
    # the order of inputs must not matter
    b = irtool.Builder()
    c = b.input("c", "float32", ("2*n",))
    d = b.input("d", "float32", ("n",))
    g2 = b.build([b.reshape(c, shape=("n", 2)), d])
    with pytest.raises(IRTypeError, match=r"input 'c'"):
        irtool.run(g2, [np.ones(6, np.float32), np.ones(2, np.float32)])


def test_unbound_symbol_in_shape_attr_is_a_clear_error():
    b = irtool.Builder()
    x = b.input("x", "float32", (1, 4))
    g = b.build([b.expand(x, shape=("rows", 4))])
    with pytest.raises(IRTypeError, match="'rows' is not bound by any graph input"):
        irtool.run(g, [np.ones((1, 4), np.float32)])


@pytest.mark.parametrize("n", [1, 5])
def test_grad_of_a_symbolic_graph_at_several_batch_sizes(n):
    g, _ = _batch_graph()
    b = irtool.Builder()
    vm = b.copy_graph(g)
    loss = b.reduce_sum(b.mul(vm[g.outputs[0]], vm[g.outputs[0]]))
    gg = irtool.grad(b.build([loss]), wrt=["w", "bias", "x"])
    irtool.verify(gg)
    rng = np.random.default_rng(n)
    xv = rng.uniform(-1, 1, (n, 4, 8)).astype(np.float32)
    mv = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    got = irtool.run(gg, {"x": xv, "m": mv})
    tx = torch.from_numpy(xv).requires_grad_()
    tw = torch.from_numpy(g.params["w"].data.copy()).requires_grad_()
    tb = torch.from_numpy(g.params["bias"].data.copy()).requires_grad_()
    h = torch.exp((tx.reshape(-1, 8) @ tw + tb) * 0.25)
    o = h.reshape(n, 4, 3).sum(1) * torch.from_numpy(mv)
    tl = (o * o).sum()
    ref = torch.autograd.grad(tl, [tw, tb, tx])
    torch.testing.assert_close(torch.from_numpy(got[0]), tl.detach())
    for a, r in zip(got[1:], ref):
        torch.testing.assert_close(torch.from_numpy(a), r)


def test_concat_of_derived_dims_runs_saves_and_differentiates():
    if "concat" not in irtool.ir.REGISTRY:
        pytest.skip("concat not registered yet")
    from irtool.ir import serialize
    b = irtool.Builder()
    x = b.input("x", "float32", ("a", 2, 3))
    y = b.input("y", "float32", ("b", 3))
    flat = b.reshape(x, shape=(-1, 3))                       # [2*a, 3]
    c = b.concat([flat, y], axis=0)                          # [(2*a+b), 3]
    assert c.shape == ("(2*a+b)", 3)
    r = b.reshape(c, shape=(-1,))
    assert r.shape == ("3*(2*a+b)",)
    e = b.expand(b.unsqueeze(b.reduce_sum(c, axes=(1,)), axes=(1,)), shape=(c.shape[0], 2))
    g = b.build([r, e])
    irtool.verify(g)
    back = serialize.from_bytes(serialize.to_bytes(g))
    assert str(back) == str(g)
    rng = np.random.default_rng(0)
    xv = rng.uniform(-1, 1, (2, 2, 3)).astype(np.float32)
    yv = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    tc = torch.cat([torch.from_numpy(xv).reshape(-1, 3), torch.from_numpy(yv)])
    for graph in (g, back):
        got_r, got_e = irtool.run(graph, [xv, yv])
        torch.testing.assert_close(torch.from_numpy(got_r), tc.reshape(-1))
        torch.testing.assert_close(torch.from_numpy(got_e), tc.sum(1, keepdim=True).expand(9, 2))
    b2 = irtool.Builder()
    vm = b2.copy_graph(g)
    gg = irtool.grad(b2.build([b2.reduce_sum(b2.mul(vm[g.outputs[1]], vm[g.outputs[1]]))]),
                     wrt=["x", "y"])
    tx = torch.from_numpy(xv).requires_grad_()
    ty = torch.from_numpy(yv).requires_grad_()
    te = torch.cat([tx.reshape(-1, 3), ty]).sum(1, keepdim=True).expand(9, 2)
    ref = torch.autograd.grad((te * te).sum(), [tx, ty])
    for a, r_ in zip(irtool.run(gg, [xv, yv])[1:], ref):
        torch.testing.assert_close(torch.from_numpy(a), r_)
