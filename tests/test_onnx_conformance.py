"""The ONNX backend node test suite through import_onnx + the numpy runtime.

One case per ONNX node test (model + one data set), compared with the
expected outputs (rtol 1e-3, atol 1e-5; exact for ints and bools). The cases
come from `onnx/backend/test/data/node` when the installed onnx ships it;
the wheels do not, so otherwise they are generated in memory by onnx's own
generator (`onnx.backend.test.case.node.collect_testcases`), seeded.

- irtool turns shape-like inputs (Reshape's shape, Reduce axes, Pad's pads,
  TopK's K...) into IR attributes, so they must be known at import time; the
  suite feeds many of them as graph inputs. When the importer reports such an
  input (DynamicInputError), the graph inputs it depends on are baked in as
  initializers holding the test data, and the import is retried. The numbers
  are still computed by irtool and compared;
- a test using an op type the importer does not map, a dtype the IR lacks,
  or a non-tensor input/output is skipped with the reason;
- every other test must pass, except those listed in
  tests/onnx_conformance_expected_failures.txt (`name  # reason`), which are
  xfail(strict=True): fixing one makes the suite fail until it is unlisted.
"""
import glob
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, numpy_helper  # noqa: E402

import irtool  # noqa: E402
from irtool.frontends.onnx_import import ONNX_DTYPES, DynamicInputError, unsupported_ops  # noqa: E402

RTOL, ATOL = 1e-3, 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED_FAILURES_FILE = os.path.join(HERE, "onnx_conformance_expected_failures.txt")
DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")


def expected_failures():
    out = {}
    with open(EXPECTED_FAILURES_FILE) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition("#")
            out[name.strip()] = reason.strip() or "known failure"
    return out


def _read_pb(path):
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def _from_dir():
    cases = {}
    for d in sorted(glob.glob(os.path.join(DATA_DIR, "test_*"))):
        ds = os.path.join(d, "test_data_set_0")
        if not os.path.isdir(ds):
            continue
        try:
            ins = [_read_pb(p) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")),
                                               key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
            outs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")),
                                                key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        except Exception:  # noqa: BLE001 - sequences/optionals are not TensorProtos
            ins = outs = None
        cases[os.path.basename(d)] = (os.path.join(d, "model.onnx"), ins, outs)
    return cases


def _generated():
    from onnx.backend.test.case import node as node_cases
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tests = node_cases.collect_testcases(None)
    finally:
        np.random.set_state(state)
    cases = {}
    for t in tests:
        if t.model is None or not t.data_sets:
            continue
        ins, outs = t.data_sets[0]
        cases[t.name] = (t.model, list(ins), list(outs))
    return cases


def _load_cases():
    if os.path.isdir(DATA_DIR) and glob.glob(os.path.join(DATA_DIR, "test_*")):
        return _from_dir()
    return _generated()


CASES = _load_cases()
XFAIL = expected_failures()


def _to_array(v):
    """ndarray of a data-set entry, or None when it is not a plain tensor."""
    if isinstance(v, TensorProto):
        if v.data_type not in ONNX_DTYPES:
            return None
        return numpy_helper.to_array(v)
    if isinstance(v, (np.ndarray, np.generic)):
        return np.asarray(v)
    return None


def skip_reason(model, ins, outs):
    """Why a case cannot run here (unmapped ops, dtypes, non-tensors), or None."""
    bad = unsupported_ops(model)
    if bad:
        return "unsupported ops: " + ", ".join(sorted(bad))
    g = model.graph
    for vi in list(g.input) + list(g.output):
        if not vi.type.HasField("tensor_type"):
            return f"non-tensor value {vi.name!r}"
        if vi.type.tensor_type.elem_type not in ONNX_DTYPES:
            return f"unsupported dtype {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)} ({vi.name!r})"
    for t in g.initializer:
        if t.data_type not in ONNX_DTYPES:
            return f"unsupported dtype {TensorProto.DataType.Name(t.data_type)} ({t.name!r})"
    if ins is None or any(_to_array(v) is None for v in list(ins) + list(outs)):
        return "non-tensor or unsupported-dtype test data"
    return None


def _params():
    out = []
    for name in sorted(CASES):
        marks = []
        if name in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[name]))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def test_expected_failures_are_known_cases():
    unknown = sorted(set(XFAIL) - set(CASES))
    assert not unknown, f"expected-failures list names tests that do not exist: {unknown}"


def _compare(name, got, want):
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != expected {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=name)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=RTOL, atol=ATOL, err_msg=name, equal_nan=True)


def _graph_inputs_behind(model, name):
    """Graph inputs that value `name` is computed from."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inputs = {vi.name for vi in model.graph.input}
    seen, todo, found = set(), [name], []
    while todo:
        v = todo.pop()
        if v in seen or not v:
            continue
        seen.add(v)
        if v in inputs:
            found.append(v)
        elif v in producer:
            todo.extend(producer[v].input)
    return found


def import_freezing(model, feeds):
    """import_onnx, baking in the graph inputs that must be import-time constants."""
    frozen = set()
    while True:
        try:
            return irtool.import_onnx(model)
        except DynamicInputError as e:
            behind = {n for v in e.value_names for n in _graph_inputs_behind(model, v)}
            names = [n for n in sorted(behind) if n in feeds and n not in frozen]
            ints = [n for n in names if feeds[n].dtype.kind in "iu"]
            names = ints or names           # shape-like integer inputs first
            if not names:
                raise
        m = onnx.ModelProto()
        m.CopyFrom(model)
        keep = [vi for vi in m.graph.input if vi.name not in names]
        del m.graph.input[:]
        m.graph.input.extend(keep)
        m.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in names)
        frozen.update(names)
        model = m


@pytest.mark.parametrize("name", _params())
def test_node(name):
    model, ins, outs = CASES[name]
    if isinstance(model, str):
        model = onnx.load(model)
    reason = skip_reason(model, ins, outs)
    if reason:
        pytest.skip(reason)
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    feeds = {n: _to_array(v) for n, v in zip(names, ins)}
    graph = import_freezing(model, feeds)
    irtool.verify(graph)
    got = irtool.run(graph, {v.name: feeds[v.name] for v in graph.inputs})
    want = [_to_array(v) for v in outs]
    assert len(got) == len(want)
    for vi, g, w in zip(model.graph.output, got, want):
        _compare(vi.name, np.asarray(g), w)
