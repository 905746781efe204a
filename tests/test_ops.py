"""Op tests generated from the registry: every op, every sample.

- shape/dtype rule vs what the kernel returns;
- kernel vs a torch oracle (tests/oracles), torch.testing defaults per dtype;
- composite kernel vs its own decomposition;
- vjp vs float64 central finite differences, and vs torch.autograd.
"""
import numpy as np
import pytest

import irtool
from irtool.ir.dtypes import check_dtype
from irtool.ir.transform import decompose
from tests.op_harness import finite_difference, float_inputs, grad_cases, loss_graph, op_cases, single_op_graph
from tests.oracles import ORACLES

torch = pytest.importorskip("torch")


CASES = op_cases()
GRAD_CASES = grad_cases(CASES)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@pytest.mark.parametrize("op,sample", CASES)
def test_rule_matches_kernel(op, sample):
    graph, arrays = single_op_graph(op, sample)
    irtool.verify(graph)
    results = irtool.run(graph, arrays)
    for v, r in zip(graph.outputs, results):
        assert isinstance(r, np.ndarray), f"{op.name} kernel returned {type(r).__name__}"
        assert r.shape == v.shape, f"rule says {v.type}, kernel gave shape {r.shape}"
        assert check_dtype(r.dtype) == v.dtype, f"rule says {v.type}, kernel gave {r.dtype}"


@pytest.mark.parametrize("op,sample", CASES)
def test_kernel_matches_oracle(op, sample):
    oracle = ORACLES.get(op.name)
    if oracle is None:
        pytest.fail(f"no oracle for op {op.name!r} in tests/oracles")
    graph, arrays = single_op_graph(op, sample)
    ours = irtool.run(graph, arrays)
    theirs = _as_tuple(oracle(*[torch.from_numpy(np.array(a)) for a in arrays], **sample.attrs))
    assert len(ours) == len(theirs)
    for a, t in zip(ours, theirs):
        t = t.detach() if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t))
        torch.testing.assert_close(torch.from_numpy(np.array(a)), t, check_dtype=False,
                                   equal_nan=True)
        assert str(t.dtype).replace("torch.", "") == str(a.dtype) or a.dtype == np.bool_


@pytest.mark.parametrize("op,sample", [c for c in CASES if c.values[0].decompose])
def test_decomposition_matches_kernel(op, sample):
    graph, arrays = single_op_graph(op, sample)
    flat = decompose(graph, set())
    assert all(n.op.decompose is None for n in flat.nodes)
    irtool.verify(flat)
    for a, c in zip(irtool.run(graph, arrays), irtool.run(flat, arrays)):
        np.testing.assert_allclose(np.asarray(c, np.float64), np.asarray(a, np.float64),
                                   rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("op,sample", GRAD_CASES)
def test_vjp_matches_finite_differences(op, sample):
    if not sample.finite_differences:
        pytest.skip("this gradient is a convention, not a derivative (checked against torch.autograd)")
    graph, arrays = single_op_graph(op, sample, cast64=True)
    loss, _ = loss_graph(graph, np.random.default_rng(1))
    idx = float_inputs(op, arrays)
    g = irtool.grad(loss, wrt=[loss.inputs[i].name for i in idx])
    irtool.verify(g)
    got = irtool.run(g, arrays)[1:]
    for i, gi in zip(idx, got):
        fd = finite_difference(loss, [a.copy() for a in arrays], i)
        np.testing.assert_allclose(gi, fd, rtol=1e-4, atol=1e-5,
                                   err_msg=f"d loss / d input {i} of {op.name}")


@pytest.mark.parametrize("op,sample", GRAD_CASES)
def test_vjp_matches_torch_autograd(op, sample):
    oracle = ORACLES.get(op.name)
    if oracle is None:
        pytest.fail(f"no oracle for op {op.name!r}")
    graph, arrays = single_op_graph(op, sample, cast64=True)
    loss, cots = loss_graph(graph, np.random.default_rng(1))
    idx = float_inputs(op, arrays)
    ours = irtool.run(irtool.grad(loss, wrt=[loss.inputs[i].name for i in idx]), arrays)[1:]
    ts = [torch.from_numpy(a.copy()) for a in arrays]
    for i in idx:
        ts[i].requires_grad_(True)
    attrs = dict(graph.nodes[-1].attrs)
    outs = [o for o in _as_tuple(oracle(*ts, **attrs)) if o.dtype.is_floating_point]
    total = sum((o * torch.from_numpy(c)).sum() for o, c in zip(outs, cots))
    theirs = torch.autograd.grad(total, [ts[i] for i in idx], allow_unused=True)
    for i, a, t in zip(idx, ours, theirs):
        t = torch.zeros_like(ts[i]) if t is None else t
        torch.testing.assert_close(torch.from_numpy(np.array(a)), t, msg=f"input {i} of {op.name}")


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("op,sample", CASES)
def test_onnx_export_matches_kernel(op, sample, opset):
    onnx = pytest.importorskip("onnx")
    graph, arrays = single_op_graph(op, sample)
    model = irtool.export_onnx(graph, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    ours = irtool.run(graph, arrays)
    theirs = irtool.run(graph, arrays, backend="onnxruntime") if opset is None else _ort(model, graph, arrays)
    for a, t in zip(ours, theirs):
        assert a.shape == t.shape and a.dtype == t.dtype
        torch.testing.assert_close(torch.from_numpy(np.array(t)), torch.from_numpy(np.array(a)), equal_nan=True)


def _ort(model, graph, arrays):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {v.name: a for v, a in zip(graph.inputs, arrays)})
