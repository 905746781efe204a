"""ONNX Loop import (unrolled at import time): hand-built Loop models vs
onnxruntime (loop-carried values, scan outputs, outer-scope values, the
iteration number, folded conditions, zero iterations, nested loops), the
errors for loops irtool cannot unroll, ReverseSequence, and Keras RNNs that
tf2onnx writes as Loops, vs Keras and onnxruntime after re-export."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irtool
from irtool.errors import UnsupportedError

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def f32(*shape):
    return RNG.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def body_graph(nodes, inputs, outputs, inits=()):
    """A Loop body: inputs (iteration number, cond, carried...) and outputs
    (cond, carried..., scans...) as (name, elem type, shape) triples."""
    return helper.make_graph(nodes, "body", [vi(*t) for t in inputs], [vi(*t) for t in outputs], list(inits))


def model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", [vi(*t) for t in inputs], [onnx.ValueInfoProto(name=o) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check(m, feeds, rtol=1e-5, atol=1e-6):
    """Import m, verify it, and match onnxruntime on the original model with
    the numpy runtime and with onnxruntime on the re-exported graph."""
    want = run_ort(m, feeds)
    graph = irtool.import_onnx(m)
    irtool.verify(graph)
    assert not any(n.op.name == "loop" for n in graph.nodes)
    args = [feeds[v.name] for v in graph.inputs]
    for got in (irtool.run(graph, args), irtool.run(graph, args, backend="onnxruntime"),
                run_ort(irtool.export_onnx(graph), {v.name: feeds[v.name] for v in graph.inputs})):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, f"{g.dtype}{g.shape} != {w.dtype}{w.shape}"
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return graph


def _one_error(m, *words):
    with pytest.raises(UnsupportedError) as e:
        irtool.import_onnx(m)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


# -- hand-built loops --------------------------------------------------------------------

def test_carried_values_only():
    body = body_graph(
        [helper.make_node("Add", ["x", "x"], ["x2"]), helper.make_node("Tanh", ["x2"], ["x_out"]),
         const("one", np.int64(1)), helper.make_node("Add", ["c", "one"], ["c_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("x", F, [2, 3]), ("c", I64, [])],
        [("cond_out", B, []), ("x_out", F, [2, 3]), ("c_out", I64, [])])
    m = model([helper.make_node("Loop", ["M", "T", "x0", "c0"], ["x_final", "c_final"], name="carry", body=body)],
              [("x0", F, [2, 3])], ["x_final", "c_final"],
              {"M": np.int64(4), "T": np.array(True), "c0": np.int64(7)})
    check(m, {"x0": f32(2, 3)})


def test_scan_outputs_stack_on_a_new_axis():
    body = body_graph(
        [const("half", np.float32(0.5)), helper.make_node("Mul", ["h", "half"], ["h_out"]),
         helper.make_node("Sin", ["h"], ["s1"]), helper.make_node("ReduceSum", ["h"], ["s2"], keepdims=0),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("h", F, ["batch", 3])],
        [("cond_out", B, []), ("h_out", F, ["batch", 3]), ("s1", F, ["batch", 3]), ("s2", F, [])])
    m = model([helper.make_node("Loop", ["M", "", "h0"], ["h", "ys", "sums"], body=body)],
              [("h0", F, ["batch", 3])], ["h", "ys", "sums"], {"M": np.int64(3)})
    graph = check(m, {"h0": f32(4, 3)})
    assert graph.outputs[1].shape == (3, "batch", 3) and graph.outputs[2].shape == (3,)
    run = irtool.run(graph, [f32(2, 3)])       # the batch stays symbolic
    assert run[1].shape == (3, 2, 3)


def test_outer_scope_values_and_iteration_number():
    """An RNN step: reads x[t] from the outer graph (t = iteration number),
    an outer weight input and an outer initializer."""
    body = body_graph(
        [helper.make_node("Gather", ["seq", "i"], ["x_t"], axis=0),
         helper.make_node("MatMul", ["h", "w"], ["hw"]), helper.make_node("Add", ["hw", "x_t"], ["z"]),
         helper.make_node("Add", ["z", "bias"], ["zb"]), helper.make_node("Tanh", ["zb"], ["h_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=F), helper.make_node("Mul", ["h_out", "i_f"], ["scaled"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("h", F, [2, 3])],
        [("cond_out", B, []), ("h_out", F, [2, 3]), ("scaled", F, [2, 3])])
    m = model([helper.make_node("Shape", ["seq"], ["shape"]),
               helper.make_node("Gather", ["shape", "zero"], ["steps"], axis=0),    # M from a static shape
               helper.make_node("Loop", ["steps", "", "h0"], ["h", "ys"], body=body)],
              [("seq", F, [5, 2, 3]), ("h0", F, [2, 3]), ("w", F, [3, 3])], ["h", "ys"],
              {"zero": np.int64(0), "bias": f32(3)})
    check(m, {"seq": f32(5, 2, 3), "h0": f32(2, 3), "w": f32(3, 3)})


def test_condition_computed_from_the_iteration_number():
    """cond_out = i < 3 folds in each iteration: 4 iterations of M = 10."""
    body = body_graph(
        [const("three", np.int64(3)), helper.make_node("Less", ["i", "three"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=F), helper.make_node("Add", ["x", "i_f"], ["x_out"])],
        [("i", I64, []), ("cond", B, []), ("x", F, [3])],
        [("cond_out", B, []), ("x_out", F, [3]), ("x_out", F, [3])])
    m = model([helper.make_node("Loop", ["M", "T", "x0"], ["x", "xs"], body=body)],
              [("x0", F, [3])], ["x", "xs"], {"M": np.int64(10), "T": np.array(True)})
    graph = check(m, {"x0": f32(3)})
    assert graph.outputs[1].shape == (4, 3)


def test_while_loop_on_a_carried_counter():
    """tf2onnx's form: no M (or a huge one), the condition compares a carried
    int32 counter held in an initializer with a limit."""
    for trip in ("", "big"):
        body = body_graph(
            [const("one", np.int32(1)), helper.make_node("Add", ["t", "one"], ["t_out"]),
             const("limit", np.int32(6)), helper.make_node("Less", ["t_out", "limit"], ["cond_out"]),
             helper.make_node("Gather", ["seq", "t"], ["x_t"], axis=0), helper.make_node("Add", ["acc", "x_t"], ["a"]),
             helper.make_node("Neg", ["a"], ["acc_out"])],
            [("i", I64, []), ("cond", B, []), ("t", TensorProto.INT32, []), ("acc", F, ["n"])],
            [("cond_out", B, []), ("t_out", TensorProto.INT32, []), ("acc_out", F, ["n"]), ("a", F, ["n"])])
        m = model([helper.make_node("Loop", [trip, "T", "t0", "acc0"], ["t", "acc", "steps"], body=body)],
                  [("seq", F, [6, "n"]), ("acc0", F, ["n"])], ["t", "acc", "steps"],
                  {"big": np.int64(2 ** 62), "T": np.array(True), "t0": np.int32(2)})
        graph = check(m, {"seq": f32(6, 4), "acc0": f32(4)})
        assert graph.outputs[2].shape == (4, "n")
        assert all(n.op.name != "gather" or n.inputs[1].producer.op.name == "constant" for n in graph.nodes)


@pytest.mark.parametrize("how", ["M=0", "cond=False", "M=0,run-time cond"])
def test_zero_iterations(how):
    body = body_graph(
        [helper.make_node("Relu", ["x"], ["x_out"]), helper.make_node("Cast", ["x"], ["c"], to=TensorProto.INT64),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("x", F, [2, 3])],
        [("cond_out", B, []), ("x_out", F, [2, 3]), ("x_out", F, [2, 3]), ("c", I64, [2, 3])])
    inits = {"M": np.int64(5 if how == "cond=False" else 0)}
    inputs, feeds = [("x0", F, [2, 3])], {"x0": f32(2, 3)}
    if how == "M=0,run-time cond":        # never read: the loop does not run
        inputs.append(("T", B, []))
        feeds["T"] = np.array(True)
    else:
        inits["T"] = np.array(how == "M=0")
    m = model([helper.make_node("Loop", ["M", "T", "x0"], ["x", "xs", "cs"], body=body)],
              inputs, ["x", "xs", "cs"], inits)
    graph = check(m, feeds)
    assert graph.outputs[1].shape == (0, 2, 3) and graph.outputs[2].dtype == "int64"


def test_nested_loops():
    """An inner Loop reads the outer iteration number, an outer body value and
    a graph input; both levels carry values and produce scans."""
    inner = body_graph(
        [helper.make_node("Cast", ["j"], ["j_f"], to=F), helper.make_node("Cast", ["i"], ["i_f"], to=F),
         helper.make_node("Mul", ["j_f", "i_f"], ["ij"]), helper.make_node("Mul", ["ij", "scale"], ["s"]),
         helper.make_node("Add", ["y", "s"], ["y1"]), helper.make_node("Add", ["y1", "row"], ["y_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])],
        [("j", I64, []), ("c", B, []), ("y", F, [3])],
        [("c_out", B, []), ("y_out", F, [3]), ("y_out", F, [3])])
    outer = body_graph(
        [helper.make_node("Gather", ["rows", "i"], ["row"], axis=0),
         const("two", np.int64(2)),
         helper.make_node("Loop", ["two", "", "acc"], ["acc_out", "inner_ys"], body=inner, name="inner"),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("acc", F, [3])],
        [("cond_out", B, []), ("acc_out", F, [3]), ("inner_ys", F, [2, 3])])
    m = model([helper.make_node("Loop", ["M", "", "acc0"], ["acc", "ys"], body=outer, name="outer")],
              [("acc0", F, [3]), ("rows", F, [3, 3]), ("scale", F, [])], ["acc", "ys"], {"M": np.int64(3)})
    graph = check(m, {"acc0": f32(3), "rows": f32(3, 3), "scale": np.array(0.5, np.float32)})
    assert graph.outputs[1].shape == (3, 2, 3)


def test_gradients_flow_through_the_unrolled_steps():
    torch = pytest.importorskip("torch")
    body = body_graph(
        [helper.make_node("MatMul", ["h", "w"], ["hw"]), helper.make_node("Tanh", ["hw"], ["h_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("h", F, [2, 3])],
        [("cond_out", B, []), ("h_out", F, [2, 3])])
    w = f32(3, 3)
    m = model([helper.make_node("Loop", ["M", "", "h0"], ["h"], body=body),
               helper.make_node("ReduceSum", ["h"], ["loss"], keepdims=0)],
              [("h0", F, [2, 3])], ["loss"], {"M": np.int64(3), "w": w})
    graph = irtool.import_onnx(m)
    assert graph.params["w"].trainable
    h0 = f32(2, 3)
    loss, dw = irtool.run(irtool.grad(graph, ["w"]), [h0])
    tw = torch.from_numpy(w).requires_grad_(True)
    th = torch.from_numpy(h0)
    for _ in range(3):
        th = torch.tanh(th @ tw)
    th.sum().backward()
    np.testing.assert_allclose(loss, th.sum().item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=1e-5)


# -- what cannot be unrolled -------------------------------------------------------------

def _counter_body(cond_nodes=(), cond_out="cond"):
    return body_graph(
        [*cond_nodes, helper.make_node("Neg", ["x"], ["x_out"]),
         helper.make_node("Identity", [cond_out], ["cond_out"])],
        [("i", I64, []), ("cond", B, []), ("x", F, [3])],
        [("cond_out", B, []), ("x_out", F, [3])])


def test_runtime_trip_count_is_reported():
    m = model([helper.make_node("Loop", ["M", "", "x0"], ["x"], body=_counter_body(), name="dyn_loop")],
              [("M", I64, []), ("x0", F, [3])], ["x"])
    _one_error(m, "Loop node 'dyn_loop'", "trip count", "run time")


def test_symbolic_trip_count_is_reported():
    m = model([helper.make_node("Shape", ["seq"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["steps"]),
               helper.make_node("Loop", ["steps", "", "x0"], ["x"], body=_counter_body(), name="sym_loop")],
              [("seq", F, ["time", 3]), ("x0", F, [3])], ["x"], {"zero": np.int64(0)})
    _one_error(m, "Loop node 'sym_loop'", "'time'")


def test_runtime_initial_condition_is_reported():
    m = model([helper.make_node("Loop", ["M", "c0", "x0"], ["x"], body=_counter_body(), name="c_loop")],
              [("c0", B, []), ("x0", F, [3])], ["x"], {"M": np.int64(3)})
    _one_error(m, "Loop node 'c_loop'", "initial condition", "run-time")


def test_data_dependent_condition_is_reported():
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), const("zero_f", np.float32(0.0)),
             helper.make_node("Greater", ["s", "zero_f"], ["positive"])]
    m = model([helper.make_node("Loop", ["M", "T", "x0"], ["x"], body=_counter_body(nodes, "positive"),
                                name="data_loop")],
              [("x0", F, [3])], ["x"], {"M": np.int64(3), "T": np.array(True)})
    _one_error(m, "Loop node 'data_loop'", "data-dependent")


@pytest.mark.parametrize("m_value,cond", [(10 ** 6, ""), (2 ** 62, "T"), (None, "T")])
def test_huge_trip_counts_are_reported(m_value, cond):
    inits = {"T": np.array(True)}
    if m_value is not None:
        inits["M"] = np.int64(m_value)
    m = model([helper.make_node("Loop", ["M" if m_value is not None else "", cond, "x0"], ["x"],
                                body=_counter_body(), name="long_loop")],
              [("x0", F, [3])], ["x"], inits)
    _one_error(m, "Loop node 'long_loop'", "10000")


def test_endless_counter_loop_stops_at_the_limit():
    """A condition that keeps changing but never turns false: unrolled up to
    the limit, then reported."""
    nodes = [const("neg", np.int64(-1)), helper.make_node("Greater", ["i", "neg"], ["ok"])]
    m = model([helper.make_node("Loop", ["", "T", "x0"], ["x"], body=_counter_body(nodes, "ok"), name="endless")],
              [("x0", F, [3])], ["x"], {"T": np.array(True)})
    _one_error(m, "Loop node 'endless'", "more than 10000")


def test_unrolling_past_the_node_budget_is_reported():
    """9000 iterations of a 42-node body: more nodes than irtool unrolls."""
    nodes = [helper.make_node("Neg", ["x"], ["n0"])]
    nodes += [helper.make_node("Neg", [f"n{k}"], [f"n{k + 1}"]) for k in range(40)]
    body = body_graph([*nodes, helper.make_node("Identity", ["n40"], ["x_out"]),
                       helper.make_node("Identity", ["cond"], ["cond_out"])],
                      [("i", I64, []), ("cond", B, []), ("x", F, [3])], [("cond_out", B, []), ("x_out", F, [3])])
    m = model([helper.make_node("Loop", ["M", "", "x0"], ["x"], body=body, name="big_body")],
              [("x0", F, [3])], ["x"], {"M": np.int64(9000)})
    _one_error(m, "Loop node 'big_body'", "200000 nodes")


def test_loop_without_m_or_condition_is_reported():
    m = model([helper.make_node("Loop", ["", "", "x0"], ["x"], body=_counter_body(), name="forever")],
              [("x0", F, [3])], ["x"])
    _one_error(m, "Loop node 'forever'", "forever")


# -- ReverseSequence (tf2onnx writes it for go_backwards) ------------------------------------

@pytest.mark.parametrize("time_axis", [0, 1])
@pytest.mark.parametrize("lens", ["full", "input"])
def test_reverse_sequence(time_axis, lens):
    shape = (4, 3, 2) if time_axis == 0 else (3, 4, 2)
    inits, inputs, feeds = {}, [("x", F, list(shape))], {"x": f32(*shape)}
    if lens == "full":
        inits["lens"] = np.full(3, 4, np.int64)
    else:
        inputs.append(("lens", I64, [3]))
        feeds["lens"] = np.array([4, 1, 2], np.int64)
    m = model([helper.make_node("ReverseSequence", ["x", "lens"], ["y"], time_axis=time_axis,
                                batch_axis=1 - time_axis)], inputs, ["y"], inits)
    graph = check(m, feeds)
    if lens == "full":
        assert [n.op.name for n in graph.nodes] == ["flip"]


# -- Keras RNNs written by tf2onnx -----------------------------------------------------------

def _keras_rnn(kind, **kw):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    inp = keras.Input((5, 4), name="x")
    x = getattr(keras.layers, kind)(6, **kw)(inp)
    return keras.Model(inp, x)


@pytest.mark.parametrize("kind,kw", [
    ("GRU", {}),
    ("GRU", {"return_sequences": True, "go_backwards": True}),
    ("GRU", {"reset_after": False, "return_sequences": True}),
    ("LSTM", {"return_sequences": True}),                        # tf2onnx fuses it into an ONNX LSTM
    ("LSTM", {"recurrent_activation": "hard_sigmoid"}),          # ... but writes this one as a Loop
    ("SimpleRNN", {"return_sequences": True}),
    ("SimpleRNN", {"activation": "relu"}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()) or "default")
def test_keras_rnns_via_tf2onnx(kind, kw):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    net = _keras_rnn(kind, **kw)
    spec = (tf.TensorSpec((None, 5, 4), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(net, input_signature=spec, opset=17)
    ops = {n.op_type for n in proto.graph.node}
    assert ("Loop" in ops) == (kind != "LSTM" or "recurrent_activation" in kw)
    graph = irtool.import_onnx(proto)
    irtool.verify(graph)
    exported = irtool.export_onnx(graph)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 4)).astype(np.float32)
        want = net(x, training=False).numpy()
        for got in (irtool.run(graph, [x])[0], irtool.run(graph, [x], backend="onnxruntime")[0],
                    run_ort(exported, {graph.inputs[0].name: x})[0], run_ort(proto, {"x": x})[0]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_nested_loops_past_the_graph_budget_are_reported():
    """Found by the long fuzz run (an import that hung): each Loop stays within
    its own budget, but 5000 x 5000 nested iterations multiply. The whole
    graph's size is checked while unrolling, so this is one error in seconds."""
    inner = body_graph([helper.make_node("Neg", ["y"], ["y_out"]), helper.make_node("Identity", ["c"], ["c_out"])],
                       [("j", I64, []), ("c", B, []), ("y", F, [3])], [("c_out", B, []), ("y_out", F, [3])])
    outer = body_graph([const("n", np.int64(5000)),
                        helper.make_node("Loop", ["n", "", "x"], ["x_out"], body=inner, name="inner"),
                        helper.make_node("Identity", ["cond"], ["cond_out"])],
                       [("i", I64, []), ("cond", B, []), ("x", F, [3])], [("cond_out", B, []), ("x_out", F, [3])])
    m = model([helper.make_node("Loop", ["M", "", "x0"], ["x"], body=outer, name="outer")],
              [("x0", F, [3])], ["x"], {"M": np.int64(5000)})
    import time
    start = time.perf_counter()
    _one_error(m, "Loop node", "200000 nodes")
    assert time.perf_counter() - start < 60
