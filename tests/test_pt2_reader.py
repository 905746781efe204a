""".pt2 archives read natively (frontends/pt2_reader.py), without torch.export.load:
the same IR as the live path, the same numbers as torch, the same refusals,
and none of torch's compiler stack imported."""
import collections
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import irtool  # noqa: E402
from irtool.errors import FileFormatError, IRToolError  # noqa: E402
from irtool.frontends.pt2_reader import NotNative, read_pt2  # noqa: E402
from irtool.frontends.torch_files import flatten_outputs, load_pt2, pt2_graph  # noqa: E402
from irtool.frontends.torch_trace import from_exported_program  # noqa: E402
from irtool.sources import open_model  # noqa: E402
from tests.security.corpus import small_pt2_bytes  # noqa: E402
from tests.torch_zoo import ZOO, memo  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)
# zoo models the native reader leaves to torch.export.load, and why: ops outside
# the ATen table, which the live path decomposes to core ATen first
FALLBACK = {"lstm": "lstm.input", "gru": "gru.input"}
# modules torch.export.load pulls in and `import torch` alone does not
# (torch 2.13's `import torch` already imports the torch.export package itself)
HEAVY = ("torch._dynamo", "torch._export.serde.serialize", "torch.export.pt2_archive", "sympy")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """get(name) -> (model, inputs, dynamic names, path of its .pt2, the exported
    program saved there), saved once."""
    folder = tmp_path_factory.mktemp("pt2")

    def make(name, model, inputs, dyn):
        spec = {arg: {axis: torch.export.Dim.DYNAMIC for axis in axes} for arg, axes in dyn.items()}
        ep = torch.export.export(model, inputs(2, 5), dynamic_shapes=spec)
        path = folder / f"{name}.pt2"
        torch.export.save(ep, path)
        return model, inputs, dyn, path, ep
    return memo(make)


def _summary(g):
    return {"ops": collections.Counter(n.op.name for n in g.nodes),
            "inputs": [(v.name, v.type) for v in g.inputs],
            "outputs": [(v.name, v.type) for v in g.outputs],
            "params": {k: (p.value.type, p.trainable) for k, p in g.params.items()}}


def _check_numbers(graph, model, inputs, dyn=None):
    """Outputs vs torch at two batch sizes (and sequence lengths, where dynamic)."""
    has_seq = any("seq" in axes.values() for axes in (dyn or {}).values())
    for batch, seq in ((3, 6), (4, 9)):
        seq = seq if has_seq else 5
        args = inputs(batch, seq)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
        got = irtool.run(graph, [a.numpy() for a in args])
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(np.asarray(g), e.numpy(), **TOL)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_reads_natively_as_the_live_path_does(saved, name):
    model, inputs, dyn, path, exported = saved(name)
    if name in FALLBACK:
        with pytest.raises(NotNative, match=FALLBACK[name].replace(".", r"\.")):
            read_pt2(path)
        return
    graph = read_pt2(path)
    ep = torch.export.load(path)
    live = from_exported_program(ep, name=name)
    assert _summary(graph) == _summary(live)
    assert str(graph) == str(live)                        # node for node, names and attributes
    for key, p in graph.params.items():
        np.testing.assert_array_equal(p.data, live.params[key].data)
    assert str(graph) == str(from_exported_program(exported, name=name))   # and before saving
    # the user's names for the dynamic dims, as on the command line's --dynamic
    named = read_pt2(path, dim_names=dyn)
    assert _summary(named) == _summary(from_exported_program(ep, name=name, dim_names=dyn))
    for arg, axes in dyn.items():
        shape = next(v.shape for v in named.inputs if v.name == arg)
        assert all(shape[axis] == symbol for axis, symbol in axes.items())
    _check_numbers(graph, model, inputs, dyn)


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_fallback_models_convert_through_torch_export(saved, name):
    model, inputs, dyn, path, _ = saved(name)
    graph, ep = pt2_graph(path, name=name)
    assert ep is not None                                  # the torch.export.load path
    _check_numbers(graph, model, inputs, dyn)


@pytest.mark.parametrize("name", ["conv1d", "conv3d", "shapes", "masks"])
def test_direct_path_modules_read_natively(tmp_path, name):
    """The small modules of test_torch_direct (grouped convs, pools, diff,
    dtype arguments, boolean logic) through an archive."""
    from tests.test_torch_direct import CASES, _randomize_bn
    make, inputs = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    _randomize_bn(model)
    args = inputs(2)
    spec = tuple({0: torch.export.Dim.DYNAMIC} for _ in args)
    ep = torch.export.export(model, args, dynamic_shapes=spec)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(ep, path)
    graph = read_pt2(path)
    assert str(graph) == str(from_exported_program(torch.export.load(path), name=name))
    _check_numbers(graph, model, lambda batch, seq: inputs(batch))


class Views(torch.nn.Module):
    """Buffers that are views of one storage (an offset slice, a transpose):
    torch saves the storage once, with strides and offsets per tensor."""

    def __init__(self):
        super().__init__()
        base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 10
        self.register_buffer("top", base[1:3])
        self.register_buffer("side", base.t()[2:5])
        self.register_buffer("steps", torch.arange(5, dtype=torch.int64), persistent=False)
        self.k = torch.tensor([0.5, -1.5, 2.0, 1.0, 3.0, -2.0])   # a lifted tensor constant

    def forward(self, x):
        return (x @ self.side + self.top.sum(0)[:4]) * self.k[:4] + self.steps[:4]   # x: [batch, 3]


def test_strided_shared_and_constant_tensors(tmp_path):
    model = Views().eval()
    ep = torch.export.export(model, (torch.randn(2, 3),), dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}})
    path = tmp_path / "views.pt2"
    torch.export.save(ep, path)
    graph = read_pt2(path)
    assert _summary(graph) == _summary(from_exported_program(torch.export.load(path), name="views"))
    for batch in (2, 5):
        x = torch.randn(batch, 3)
        np.testing.assert_allclose(irtool.run(graph, [x.numpy()])[0], model(x).numpy(), **TOL)


def test_native_path_does_not_import_torch_export_machinery(saved, tmp_path):
    path = saved("mlp")[3]
    script = ("import json, sys\nfrom irtool.cli import main\n"
              "code = main(['convert', sys.argv[1], '-o', sys.argv[2], '--force'])\n"
              f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n")
    for source in (path, os.path.join(os.path.dirname(irtool.__file__), "..", "examples", "classifier.pt2")):
        if not os.path.exists(source):
            continue
        p = subprocess.run([sys.executable, "-c", script, str(source), str(tmp_path / "out.onnx")],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        code, loaded = json.loads(p.stdout.strip().splitlines()[-1])
        assert code == 0 and loaded == [], (source, loaded)


# -- archives the native reader must leave alone ---------------------------------------------

def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, edit(item.filename, zin.read(item)))
    return dst


def _same_outcome_as_torch_export(path):
    """open_model (native first) ends exactly as torch.export.load's path does."""
    try:
        expected = ("ok", from_exported_program(load_pt2(path), name=path.stem).nodes.__len__())
    except IRToolError as e:
        expected = (type(e), str(e))
    try:
        got = ("ok", len(open_model(path)[0].nodes))
    except IRToolError as e:
        got = (type(e), str(e))
    assert got == expected


class Mish(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.mish(x) * 2


def test_op_outside_the_table_falls_back_and_converts(tmp_path):
    path = tmp_path / "mish.pt2"
    torch.export.save(torch.export.export(Mish(), (torch.randn(2, 3),)), path)
    with pytest.raises(NotNative, match="mish"):
        read_pt2(path)
    graph, ep = pt2_graph(path)
    assert ep is not None
    x = torch.randn(2, 3)
    np.testing.assert_allclose(irtool.run(graph, [x.numpy()])[0], Mish()(x).numpy(), **TOL)


def test_unknown_op_is_refused_as_before(saved, tmp_path):
    path = saved("mlp")[3]

    def edit(name, data):
        return data.replace(b"torch.ops.aten.tanh.default", b"torch.ops.aten.no_such_op.default") \
            if name.endswith("models/model.json") else data
    bad = _rewrite(path, tmp_path / "unknown_op.pt2", edit)
    with pytest.raises(NotNative, match="no_such_op"):
        read_pt2(bad)
    _same_outcome_as_torch_export(bad)
    with pytest.raises(FileFormatError):
        open_model(bad)


class _Payload:
    def __init__(self, canary):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


@pytest.mark.parametrize("member,config", [("constants/tensor_0", "model_constants_config.json"),
                                           ("weights/weight_0", "model_weights_config.json"),
                                           ("sample_inputs/model.pt", None)])
def test_pickled_payloads_are_refused_as_before(tmp_path, member, config):
    src = tmp_path / "small.pt2"
    src.write_bytes(small_pt2_bytes())                      # a Linear plus tensor constants
    read_pt2(src)                                          # the clean archive reads natively
    canary = tmp_path / "canary"

    def edit(name, data):
        if name.endswith(member):
            if config is None:                             # a torch.save'd tuple holding the payload
                import io
                buf = io.BytesIO()
                torch.save(((_Payload(canary),), {}), buf)
                return buf.getvalue()
            return pickle.dumps(_Payload(canary))
        if config and name.endswith(config):
            return data.replace(b'"use_pickle": false', b'"use_pickle": true')
        return data
    evil = _rewrite(src, tmp_path / "evil.pt2", edit)
    with pytest.raises(NotNative):
        read_pt2(evil)
    with pytest.raises(FileFormatError, match="refused"):
        open_model(evil)
    _same_outcome_as_torch_export(evil)
    assert not canary.exists()


def test_truncated_tensor_bytes_are_not_read_past_the_end(tmp_path):
    src = tmp_path / "small.pt2"
    src.write_bytes(small_pt2_bytes())                      # a Linear plus tensor constants
    cut = _rewrite(src, tmp_path / "cut.pt2",
                   lambda name, data: data[:8] if name.endswith("weights/weight_0") else data)
    with pytest.raises(NotNative):
        read_pt2(cut)
    _same_outcome_as_torch_export(cut)


def test_corrupted_model_json_is_one_clear_line(saved, tmp_path):
    path = saved("mlp")[3]
    bad = _rewrite(path, tmp_path / "bad.pt2",
                   lambda name, data: data[: len(data) // 2] if name.endswith("models/model.json") else data)
    with pytest.raises(FileFormatError, match="model.json"):
        read_pt2(bad)
    p = subprocess.run([sys.executable, "-m", "irtool.cli", "convert", str(bad), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert p.stderr.startswith("irtool: error:") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "model.json" in p.stderr and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("name,native", [("Residual", True), ("ReadAfterWrite", True), ("ViewWrite", False)])
def test_in_place_ops_read_natively_where_the_live_path_translates_them(tmp_path, name, native):
    """`out += x` and in-place ReLU read natively, as the live path translates
    them; a write through a view falls back (the live path decomposes it)."""
    import tests.test_torch_direct as direct
    torch.manual_seed(0)
    model = getattr(direct, name)().eval()
    x = torch.randn(2, 3, 5, 5)
    path = str(tmp_path / "m.pt2")
    torch.export.save(torch.export.export(model, (x,)), path)
    graph, ep = pt2_graph(path, name=name)
    assert (ep is None) == native
    with torch.no_grad():
        expected = model(x.clone())
    np.testing.assert_allclose(irtool.run(graph, [x.numpy()])[0], expected.numpy(), **TOL)
