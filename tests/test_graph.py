"""The graph data structure: Builder API, verify(), the mutation API, the text
form, immutable attrs, and the error types they raise. Numeric results are
checked against numpy written out by hand, never against irtool itself."""
import numpy as np
import pytest

import irtool
from irtool.errors import GraphError, IRToolError, IRTypeError
from irtool.ir.graph import Attrs, Node, TensorType, Value, verify
from irtool.ir.opdef import REGISTRY


def _mlp():
    b = irtool.Builder("lin")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", np.arange(12, dtype=np.float32).reshape(4, 3) / 10)
    s = b.param("s", np.array([1, 2, 3], np.float32), trainable=False)
    y = b.matmul(x, w)
    z = b.add(y, s)
    r = b.reduce_sum(z, axes=(1,), keepdims=True)
    return b.build([r]), (x, w, s, y, z, r)


def _x(rng=None, n=2):
    rng = rng or np.random.default_rng(0)
    return rng.uniform(-1, 1, (n, 4)).astype(np.float32)


# -- Builder -------------------------------------------------------------------

def test_input_and_param_values():
    g, (x, w, s, y, z, r) = _mlp()
    assert (x.name, x.dtype, x.shape, x.rank, x.producer) == ("x", "float32", ("batch", 4), 2, None)
    assert g.inputs == [x]
    assert list(g.params) == ["w", "s"]
    assert g.params["w"].value is w and g.params["w"].trainable is True
    assert g.params["s"].trainable is False
    np.testing.assert_array_equal(g.params["s"].data, np.array([1, 2, 3], np.float32))
    assert w.type == TensorType("float32", (4, 3)) and w.producer is None
    assert g.trainable() == [w]
    assert g.param_count() == 15


def test_param_dtype_argument_and_python_data():
    b = irtool.Builder()
    p = b.param("p", [[1, 2], [3, 4]], dtype="float16")
    q = b.param("q", [1.5, 2.5])
    assert p.type == TensorType("float16", (2, 2))
    assert q.dtype == "float64"
    assert b.build([p]).params["p"].data.dtype == np.float16


def test_op_methods_type_every_value():
    g, (x, w, s, y, z, r) = _mlp()
    assert y.producer.op is REGISTRY["matmul"] and y.producer.inputs == (x, w)
    assert y.type == TensorType("float32", ("batch", 3))
    assert z.type == TensorType("float32", ("batch", 3))
    assert r.type == TensorType("float32", ("batch", 1))
    assert dict(r.producer.attrs) == {"axes": (1,), "keepdims": True}
    assert [n.op.name for n in g.nodes] == ["matmul", "add", "reduce_sum"]
    assert g.op_histogram() == {"add": 1, "matmul": 1, "reduce_sum": 1}
    verify(g)
    xv = _x()
    wv, sv = g.params["w"].data, g.params["s"].data
    np.testing.assert_allclose(irtool.run(g, {"x": xv})[0], (xv @ wv + sv).sum(1, keepdims=True),
                               rtol=1e-6)


def test_none_attrs_are_dropped_and_lists_become_tuples():
    b = irtool.Builder()
    x = b.input("x", "float32", (2, 3))
    r = b.reduce_sum(x, axes=[0], keepdims=None)
    assert dict(r.producer.attrs) == {"axes": (0,)}


@pytest.mark.parametrize("dtype,number,expect", [
    ("float32", 0.5, np.float32(0.5)),
    ("float64", 2, np.float64(2.0)),
    ("float16", 1.25, np.float16(1.25)),
    ("int32", 3, np.int32(3)),
    ("int8", -7, np.int8(-7)),
    ("int64", 2.0, np.int64(2)),       # integral floats are exact
])
def test_python_numbers_become_constants_of_the_value_dtype(dtype, number, expect):
    b = irtool.Builder()
    x = b.input("x", dtype, (3,))
    for y, pos in ((b.mul(x, number), 1), (b.add(number, x), 0)):
        c = y.producer.inputs[pos]
        assert c.producer.op is REGISTRY["constant"]
        value = c.producer.attrs["value"]
        assert isinstance(value, np.ndarray) and value.dtype == np.dtype(expect.dtype)
        assert value.shape == () and value == expect
        assert y.dtype == dtype and y.shape == (3,)
    g = b.build([b.mul(x, number)])
    xv = np.array([1, 2, 3], dtype=dtype)
    out = irtool.run(g, [xv])[0]
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, xv * expect)


def test_numpy_array_inputs_become_constants():
    b = irtool.Builder()
    x = b.input("x", "float32", (2, 3))
    y = b.add(x, np.array([1.0, 2.0, 3.0]))      # float64 array, cast to x's dtype
    assert y.dtype == "float32"
    c = y.producer.inputs[1].producer.attrs["value"]
    assert c.dtype == np.float32 and c.shape == (3,)


@pytest.mark.parametrize("dtype,number", [("int32", 2.5), ("int8", 300), ("uint8", -1),
                                          ("bool", 2), ("float16", 1e6), ("int32", float("nan"))])
def test_python_numbers_that_do_not_fit_are_rejected(dtype, number):
    b = irtool.Builder()
    x = b.input("x", dtype, (3,))
    with pytest.raises(IRTypeError, match=dtype):
        b.add(x, number)


def test_numbers_alone_cannot_fix_a_dtype():
    b = irtool.Builder()
    with pytest.raises(IRTypeError, match="give at least one Value"):
        b.add(1, 2)


def test_unknown_op_is_attribute_error():
    b = irtool.Builder()
    with pytest.raises(AttributeError, match="no_such_op"):
        b.no_such_op
    assert not hasattr(b, "no_such_op")
    assert not hasattr(b, "_private")
    assert hasattr(b, "add") and b.add.__name__ == "add"
    with pytest.raises(GraphError, match="unknown op 'no_such_op'"):
        b.add_node("no_such_op", [])


def test_shape_rule_errors_are_ir_type_errors_naming_the_op():
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    y = b.input("y", "float32", (4,))
    i = b.input("i", "int32", (3,))
    with pytest.raises(IRTypeError, match=r"add: shapes \[3\] and \[4\] do not broadcast"):
        b.add(x, y)
    with pytest.raises(IRTypeError, match="add: inputs must share one dtype"):
        b.add(x, i)
    with pytest.raises(IRTypeError, match="reshape.*missing attribute 'shape'"):
        b.reshape(x)
    with pytest.raises(IRTypeError, match="matmul"):
        b.matmul(x)


def test_names_are_unique_and_fresh():
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    with pytest.raises(GraphError, match="already used"):
        b.input("x", "float32", (3,))
    with pytest.raises(GraphError, match="already used"):
        b.param("x", np.zeros(3, np.float32))
    names = [b.neg(x).name for _ in range(3)]
    assert names[0] == "neg" and len(set(names)) == 3
    assert b.neg(x, _name="mine").name == "mine"
    assert b.neg(x, _name="mine").name != "mine"


def test_node_source_names_the_calling_file():
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    y = b.exp(x)
    assert y.producer.source.startswith("test_graph.py:"), y.producer.source


def test_bad_types_are_rejected():
    with pytest.raises(IRTypeError, match="unsupported dtype"):
        TensorType("complex64", (2,))
    with pytest.raises(IRTypeError, match="negative dim"):
        TensorType("float32", (2, -1))
    with pytest.raises(IRTypeError):
        TensorType("float32", "ab")
    t = TensorType("bfloat16", (np.int64(2), "batch"))
    assert t.shape == (2, "batch") and type(t.shape[0]) is int and t.rank == 2
    assert str(t) == "bfloat16[2,batch]"


# -- verify ----------------------------------------------------------------------

def test_verify_accepts_built_graphs():
    g, _ = _mlp()
    assert verify(g) is g
    assert irtool.verify(g) is g


def test_verify_catches_duplicate_names():
    g, (x, w, s, y, z, r) = _mlp()
    z.name = "matmul"
    with pytest.raises(GraphError, match="'matmul' defined twice"):
        verify(g)


def test_verify_catches_input_param_name_clash():
    g, (x, w, s, y, z, r) = _mlp()
    w.name = "x"
    g.params = {"x": g.params["w"], "s": g.params["s"]}
    with pytest.raises(GraphError, match="defined twice"):
        verify(g)


def test_verify_catches_params_keyed_under_another_name():
    g, (x, w, s, y, z, r) = _mlp()
    g.params = {"weights": g.params["w"], "s": g.params["s"]}
    with pytest.raises(GraphError, match="keyed under another name"):
        verify(g)


def test_verify_catches_use_before_def():
    g, _ = _mlp()
    g.nodes = [g.nodes[1], g.nodes[0], g.nodes[2]]
    with pytest.raises(GraphError, match="input 'matmul' is not defined before use"):
        verify(g)


def test_verify_catches_values_from_another_graph():
    g, (x, w, s, y, z, r) = _mlp()
    b = irtool.Builder()
    alien = b.input("alien", "float32", ("batch", 3))
    g.nodes.append(Node(REGISTRY["add"], [z, alien], {}, [z.type], ["extra"]))
    with pytest.raises(GraphError, match="'alien' is not defined before use"):
        verify(g)


def test_verify_catches_wrong_output_types():
    g, (x, w, s, y, z, r) = _mlp()
    z.type = TensorType("float32", ("batch", 4))
    with pytest.raises(GraphError, match="disagree with the op's rule"):
        verify(g)


def test_verify_catches_failing_shape_rules():
    g, (x, w, s, y, z, r) = _mlp()
    x.type = TensorType("float32", ("batch", 5))
    with pytest.raises(GraphError, match="shape rule fails"):
        verify(g)


def test_verify_catches_stale_use_lists():
    g, (x, w, s, y, z, r) = _mlp()
    x.uses.clear()
    with pytest.raises(GraphError, match="use list of 'x' is stale"):
        verify(g)
    g, (x, w, s, y, z, r) = _mlp()
    y.uses.append((r.producer, 0))
    with pytest.raises(GraphError, match="use list of 'matmul' is stale"):
        verify(g)


def test_verify_catches_dangling_uses_by_nodes_outside_the_graph():
    g, (x, w, s, y, z, r) = _mlp()
    Node(REGISTRY["neg"], [x], {}, [x.type], ["ghost"])      # registers a use of x
    with pytest.raises(GraphError, match="stale"):
        verify(g)


def test_verify_catches_undefined_outputs():
    g, (x, w, s, y, z, r) = _mlp()
    g.outputs.append(Value("nowhere", TensorType("float32", (1,))))
    with pytest.raises(GraphError, match="graph output 'nowhere' is not defined"):
        verify(g)


def test_verify_catches_bad_params_and_producers():
    g, (x, w, s, y, z, r) = _mlp()
    g.params["w"].data = np.zeros((3, 4), np.float32)
    with pytest.raises(GraphError, match="does not match its type"):
        verify(g)
    g, (x, w, s, y, z, r) = _mlp()
    g.params["w"].data = np.zeros((4, 3), np.float64)
    with pytest.raises(GraphError, match="does not match its type"):
        verify(g)
    g, (x, w, s, y, z, r) = _mlp()
    x.producer = y.producer
    with pytest.raises(GraphError, match="has a producer"):
        verify(g)
    g, (x, w, s, y, z, r) = _mlp()
    z.producer = y.producer
    with pytest.raises(GraphError, match="wrong producer"):
        verify(g)


# -- mutation API -----------------------------------------------------------------

def _chain():
    b = irtool.Builder("chain")
    x = b.input("x", "float32", (3,))
    e = b.exp(x)
    n = b.neg(e)
    out = b.add(n, x)
    return b, b.build([out]), (x, e, n, out)


def test_replace_all_uses_with_a_new_node_that_reads_the_old_value():
    b, g, (x, e, n, out) = _chain()
    xv = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(irtool.run(g, [xv])[0], -np.exp(xv) + xv, rtol=1e-6)
    # x -> neg(x) everywhere: the new node itself must keep reading x
    m = b.neg(x)
    g.insert_before(e.producer, m.producer)
    g.replace_all_uses_with(x, m)
    assert m.producer.inputs == (x,)
    assert x.uses == [(m.producer, 0)]
    verify(g)
    np.testing.assert_allclose(irtool.run(g, [xv])[0], -np.exp(-xv) - xv, rtol=1e-6)


def test_replace_all_uses_with_keeps_uses_upstream_of_the_new_value():
    b, g, (x, e, n, out) = _chain()
    a = b.exp(x)
    c = b.sub(a, x)                       # c depends on x through two paths
    g.insert_before(e.producer, a.producer)
    g.insert_before(e.producer, c.producer)
    g.replace_all_uses_with(x, c)
    verify(g)
    xv = np.array([0.5, -1.0, 2.0], np.float32)
    cv = np.exp(xv) - xv
    np.testing.assert_allclose(irtool.run(g, [xv])[0], -np.exp(cv) + cv, rtol=1e-6)


def test_replace_all_uses_with_updates_graph_outputs_and_rejects_type_changes():
    b, g, (x, e, n, out) = _chain()
    o2 = b.neg(n)
    g.insert_before(None, o2.producer)          # None: append
    assert g.nodes[-1] is o2.producer
    g.replace_all_uses_with(out, o2)
    assert g.outputs == [o2]
    g.remove(out.producer)
    verify(g)
    xv = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(irtool.run(g, [xv])[0], np.exp(xv), rtol=1e-6)
    wrong = b.input("wrong", "float64", (3,))
    with pytest.raises(GraphError, match="types differ"):
        g.replace_all_uses_with(e, wrong)


def test_replace_a_value_with_itself_is_a_no_op():
    b, g, (x, e, n, out) = _chain()
    g.replace_all_uses_with(x, x)
    g.replace_all_uses_with(out, out)
    verify(g)
    assert len(x.uses) == 2 and g.outputs == [out]


def test_remove_needs_an_unused_node_of_the_graph():
    b, g, (x, e, n, out) = _chain()
    with pytest.raises(GraphError, match="still used"):
        g.remove(e.producer)
    with pytest.raises(GraphError, match="still used"):
        g.remove(out.producer)                  # a graph output
    dead = b.exp(n)
    with pytest.raises(GraphError, match="not a node of this graph"):
        g.remove(dead.producer)
    g.insert_before(out.producer, dead.producer)
    assert (dead.producer, 0) in n.uses
    g.remove(dead.producer)
    assert (dead.producer, 0) not in n.uses
    verify(g)
    assert [nd.op.name for nd in g.nodes] == ["exp", "neg", "add"]


def test_insert_before_rejects_foreign_anchors_and_duplicates():
    b, g, (x, e, n, out) = _chain()
    m = b.neg(x)
    with pytest.raises(GraphError, match="not a node of this graph"):
        g.insert_before(b.neg(x).producer, m.producer)
    with pytest.raises(GraphError, match="already in the graph"):
        g.insert_before(None, e.producer)
    assert len(g.nodes) == 3


def test_runtime_sees_mutations_made_after_a_run():
    b, g, (x, e, n, out) = _chain()
    xv = np.array([0.5, -1.0, 2.0], np.float32)
    irtool.run(g, [xv])
    e2 = b.neg(x)
    g.insert_before(e.producer, e2.producer)
    g.replace_all_uses_with(e, e2)              # same node count at the end, same last node
    g.remove(e.producer)
    verify(g)
    np.testing.assert_allclose(irtool.run(g, [xv])[0], xv + xv, rtol=1e-6)


def test_value_lookup():
    g, (x, w, s, y, z, r) = _mlp()
    assert g.value("w") is w and g.value("reduce_sum") is r
    with pytest.raises(GraphError, match="no value named 'nope'"):
        g.value("nope")
    assert [v.name for v in g.values()] == ["x", "w", "s", "matmul", "add", "reduce_sum"]


# -- text form --------------------------------------------------------------------

def test_text_form_exact():
    g, _ = _mlp()
    assert str(g).splitlines() == [
        "graph lin(%x: float32[batch,4]) params(%w: float32[4,3], %s: float32[3] frozen) {",
        "  %matmul: float32[batch,3] = matmul(%x, %w)",
        "  %add: float32[batch,3] = add(%matmul, %s)",
        "  %reduce_sum: float32[batch,1] = reduce_sum(%add, axes=(1,), keepdims=True)",
        "  return %reduce_sum",
        "}",
    ]


def test_text_form_constants_casts_and_reshape():
    b = irtool.Builder("t")
    x = b.input("x", "float32", ("batch", 4, 8))
    y = b.mul(x, 2.0)
    r = b.reshape(y, shape=(-1, 8))
    c = b.cast(r, dtype="float16")
    big = b.const(np.zeros((3, 3)), "float64")
    g = b.build([c, big])
    assert str(g).splitlines() == [
        "graph t(%x: float32[batch,4,8]) {",
        "  %constant: float32[] = constant(value=float32[][2.0])",
        "  %mul: float32[batch,4,8] = mul(%x, %constant)",
        "  %reshape: float32[4*batch,8] = reshape(%mul, shape=(-1, 8))",
        "  %cast: float16[4*batch,8] = cast(%reshape, dtype='float16')",
        "  %constant_0: float64[3,3] = constant(value=float64[3, 3]{...})",
        "  return %cast, %constant_0",
        "}",
    ]
    assert repr(c.producer) == "%cast: float16[4*batch,8] = cast(%reshape, dtype='float16')"
    assert repr(x) == "%x: float32[batch,4,8]"


def test_text_form_shows_a_type_for_every_value():
    g, _ = _mlp()
    text = str(g)
    for v in g.values():
        assert f"%{v.name}: {v.type}" in text


# -- attrs ----------------------------------------------------------------------------

def test_attrs_are_immutable():
    g, (x, w, s, y, z, r) = _mlp()
    attrs = r.producer.attrs
    attempts = [
        lambda: attrs.__setitem__("axes", (0,)),
        lambda: attrs.__delitem__("axes"),
        lambda: attrs.update(axes=(0,)),
        lambda: attrs.pop("axes"),
        lambda: attrs.popitem(),
        lambda: attrs.clear(),
        lambda: attrs.setdefault("new", 1),
    ]
    for f in attempts:
        with pytest.raises(GraphError, match="immutable"):
            f()
    with pytest.raises(GraphError, match="immutable"):
        a = attrs
        a |= {"new": 1}
    assert dict(attrs) == {"axes": (1,), "keepdims": True}


def test_attrs_freeze_and_hash():
    a = Attrs({"axes": [1, [2, 3]], "n": np.int64(3), "v": np.ones(2)})
    assert a["axes"] == (1, (2, 3)) and type(a["n"]) is int
    b = Attrs({"axes": (1, (2, 3)), "n": 3, "v": np.ones(2)})
    assert hash(a) == hash(b) and a.key() == b.key()
    c = Attrs({"axes": (1, (2, 3)), "n": 3, "v": np.zeros(2)})
    assert a.key() != c.key()


# -- error types ------------------------------------------------------------------------

def test_error_types_share_one_base():
    from irtool import errors
    for name in ("IRTypeError", "GraphError", "RuntimeFailure", "AutodiffError", "FileFormatError",
                 "UnsupportedError", "ExportError"):
        assert issubclass(getattr(errors, name), IRToolError)
    assert irtool.IRToolError is IRToolError


def test_runtime_input_errors_are_irtool_errors():
    g, _ = _mlp()
    with pytest.raises(IRTypeError, match="must be float32"):
        irtool.run(g, [np.zeros((2, 4), np.float64)])
    with pytest.raises(IRTypeError, match="missing input"):
        irtool.run(g, {})
    with pytest.raises(IRTypeError, match="unknown input"):
        irtool.run(g, {"x": _x(), "y": _x()})
    with pytest.raises(IRTypeError, match="takes 1 inputs"):
        irtool.run(g, [_x(), _x()])
    with pytest.raises(IRToolError, match="unknown backend"):
        irtool.run(g, [_x()], backend="nope")


def test_run_outputs_are_the_callers_to_modify():
    b = irtool.Builder()
    w = b.param("w", np.ones((2, 3), np.float32))
    x = b.input("x", "float32", (2, 3))
    zeros = b.expand(b.const(0.0, "float32"), shape=(2, 3))      # a read-only broadcast view
    g = b.build([b.reshape(w, shape=(6,)), w, x, zeros])
    xv = np.zeros((2, 3), np.float32)
    outs = irtool.run(g, [xv])
    for o in outs:
        assert o.flags.writeable
        o[...] = 7
    np.testing.assert_array_equal(g.params["w"].data, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(xv, np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(irtool.run(g, [xv])[3], np.zeros((2, 3), np.float32))


def test_decompose_keeps_value_names_and_verifies():
    if "softmax" not in REGISTRY:
        pytest.skip("softmax not registered yet")
    from irtool.ir.transform import decompose
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 5))
    p = b.softmax(x, axis=-1, _name="probs")
    e = b.exp(p)                                   # named "exp", like the temporaries
    g = b.build([p, e])
    flat = decompose(g, set())
    verify(flat)
    assert "softmax" not in flat.op_histogram()
    assert [o.name for o in flat.outputs] == ["probs", "exp"]
    xv = np.random.default_rng(2).uniform(-1, 1, (3, 5)).astype(np.float32)
    want = np.exp(xv - xv.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got_p, got_e = irtool.run(flat, [xv])
    np.testing.assert_allclose(got_p, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_e, np.exp(want), rtol=1e-6)


def test_grad_and_copies_keep_forward_names():
    b = irtool.Builder()
    x = b.input("x", "float32", (3,))
    w = b.param("w", np.ones(3, np.float32))
    b.neg(x)                                       # takes "neg"; the next neg is "neg_0"...
    n = b.neg(b.mul(x, w, _name="scaled_7"))
    g = b.build([b.reduce_sum(n, _name="total_2")])
    gg = irtool.grad(g)
    assert [o.name for o in gg.outputs] == ["total_2", "grad_w"]
    fwd = {v.name for v in g.values()}
    assert {"scaled_7", n.name, "total_2"} <= {v.name for v in gg.values()} and n.name in fwd
