"""A model with more than 2 GiB of parameters (past protobuf's 2 GiB limit)
exports to ONNX with external data, passes onnx.checker by path, reloads
into irtool, runs on onnxruntime with the right numbers, and re-saving it
over itself does not grow the data file.

One float32 embedding table of ~2.06 GiB, filled in place (no copies):
table[i, j] = col[j] + i * 1e-3 in float32, so any row can be recomputed
exactly without keeping the table around.
"""
import gc
import os

import numpy as np
import pytest

import irtool

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

V, D = 540_000, 1024                       # 552,960,000 float32 = 2.06 GiB
GIB = 1 << 30
IDS = np.array([0, 1, 7, 4099, 123_456, 269_999, 270_000, 400_001, V - 2, V - 1], np.int64)


def _col():
    return np.linspace(-1.0, 1.0, D, dtype=np.float32)


def _rows(ids):
    """The table's rows `ids`, computed exactly as the table was filled."""
    return _col()[None, :] + (ids.astype(np.float32) * np.float32(1e-3))[:, None]


def _table():
    w = np.empty((V, D), np.float32)
    w[...] = _col()
    w += (np.arange(V, dtype=np.float32) * np.float32(1e-3))[:, None]
    return w


def _graph(w):
    b = irtool.Builder("big_embedding")
    ids = b.input("ids", "int64", ("n",))
    table = b.param("table", w)
    rows = b.embedding(table, ids)
    return b.build([rows, b.reduce_sum(rows, axes=(1,))])


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def _check_numbers(outs):
    rows, sums = outs
    expected = _rows(IDS)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(sums, expected.sum(axis=1, dtype=np.float64), rtol=1e-5, atol=1e-3)


def test_model_over_2gib_exports_reloads_runs_and_resaves_in_place(tmp_path):
    path = tmp_path / "big.onnx"
    data = tmp_path / "big.onnx.data"
    w = _table()
    assert w.nbytes > 2 * GIB
    graph = _graph(w)
    assert graph.params["table"].data is w or np.shares_memory(graph.params["table"].data, w)
    irtool.export_onnx(graph, path)
    del graph, w
    gc.collect()

    # the model and its weights: a small .onnx, the weights beside it, nothing else left behind
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    assert os.path.getsize(path) < 1 << 20
    size = os.path.getsize(data)
    assert size >= V * D * 4
    onnx.checker.check_model(os.fspath(path))

    # onnxruntime runs the exported file
    sess = _session(path)
    _check_numbers(sess.run(None, {"ids": IDS}))
    del sess
    gc.collect()

    # irtool reads it back (external data, by path) and gets the same numbers
    back = irtool.import_onnx(path)
    table = next(p.data for p in back.params.values() if p.data.size == V * D)
    assert table.shape == (V, D) and table.dtype == np.float32
    np.testing.assert_array_equal(table[IDS], _rows(IDS))
    del table
    _check_numbers(irtool.run(back, {"ids": IDS}))

    # re-saving the re-imported model over the same path replaces the data file: same size
    irtool.export_onnx(back, path)
    del back
    gc.collect()
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    assert os.path.getsize(data) == size
    onnx.checker.check_model(os.fspath(path))
    _check_numbers(_session(path).run(None, {"ids": IDS}))
