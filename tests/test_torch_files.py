"""PyTorch files on the command line: .pt2 converts without running code;
state_dicts, pickled modules and TorchScript are handled as the README says;
bad files give one line and exit 1."""
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from tests.torch_zoo import MLP  # noqa: E402


def _cli(*args):
    p = subprocess.run([sys.executable, "-m", "irtool.cli", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch_files")
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(3, 6)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, d / "mlp.pt2")
    torch.save(model.state_dict(), d / "weights.pt")
    torch.save(model, d / "whole.pt")
    torch.jit.script(model).save(str(d / "scripted.pt"))
    return d, model


def test_pt2_converts_and_verifies_against_torch(files):
    d, model = files
    code, out, err = _cli("convert", str(d / "mlp.pt2"), "--verify", "--force")
    assert code == 0, err
    assert "source vs numpy runtime" in out and "source vs onnxruntime" in out and "verify: ok" in out
    m = onnx.load(str(d / "mlp.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert {t.name for t in m.graph.initializer} >= {"fc1.weight", "fc3.bias"}
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_dim0"


def test_pt2_dynamic_names_the_symbol(files):
    d, _ = files
    code, out, err = _cli("inspect", str(d / "mlp.pt2"), "--dynamic", "x:0=batch")
    assert code == 0, err
    assert "x: float32[batch,6]" in out


def test_state_dict_is_refused_with_advice(files):
    d, _ = files
    code, _, err = _cli("convert", str(d / "weights.pt"))
    assert code == 1 and "state_dict" in err and "irtool.trace" in err and "Traceback" not in err


def test_pickled_module_needs_trust_and_inputs(files):
    d, model = files
    code, _, err = _cli("convert", str(d / "whole.pt"))
    assert code == 1 and "--trust-code" in err
    code, _, err = _cli("convert", str(d / "whole.pt"), "--trust-code")
    assert code == 1 and "--input" in err
    code, out, err = _cli("convert", str(d / "whole.pt"), "--trust-code", "--input", "x:4x6",
                          "--dynamic", "x:0=batch", "--verify", "-o", str(d / "whole.onnx"))
    assert code == 0, err
    assert "verify: ok" in out
    m = onnx.load(str(d / "whole.onnx"))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_torchscript_needs_trust(files):
    d, _ = files
    code, _, err = _cli("convert", str(d / "scripted.pt"))
    assert code == 1 and "TorchScript" in err and "--trust-code" in err
    code, out, err = _cli("convert", str(d / "scripted.pt"), "--trust-code", "--input", "x:2x6", "--verify",
                          "-o", str(d / "scripted.onnx"))
    assert code == 0, err
    assert "verify: ok" in out


class _Payload:
    def __init__(self, canary):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def test_malicious_pickle_never_runs(tmp_path):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(canary)}, path)
    code, _, err = _cli("convert", str(path))
    assert code == 1 and "refused" in err
    assert not canary.exists()
    _cli("convert", str(path), "--trust-code")      # the payload is real: trusting runs it
    assert canary.exists()


def test_pt2_with_pickled_object_constant_is_refused(tmp_path, files):
    d, _ = files
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(d / "mlp.pt2") as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("weights/weight_0"):
                data = pickle.dumps(_Payload(canary))
            if item.filename.endswith("model_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            dst.writestr(item, data)
    code, _, err = _cli("convert", str(evil), "-o", str(tmp_path / "evil.onnx"))
    assert code == 1 and "Traceback" not in err
    assert "pickled" in err
    assert not canary.exists()
    assert not (tmp_path / "evil.onnx").exists()
    _cli("convert", str(evil), "--trust-code", "-o", str(tmp_path / "evil.onnx"))
    assert canary.exists()                          # the payload is real: trusting runs it


@pytest.mark.parametrize("name,content", [("garbage.pt", b"not a torch file at all"),
                                          ("garbage.pt2", b"PK\x03\x04 truncated zip")])
def test_garbage_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = _cli("convert", str(path))
    assert code == 1 and err.startswith("irtool: error:") and err.count("\n") == 1


def test_truncated_pt2(tmp_path, files):
    d, _ = files
    data = (d / "mlp.pt2").read_bytes()
    path = tmp_path / "cut.pt2"
    path.write_bytes(data[: len(data) // 2])
    code, _, err = _cli("convert", str(path))
    assert code == 1 and "Traceback" not in err


def test_bad_input_spec_is_usage_error(files):
    d, _ = files
    code, _, err = _cli("convert", str(d / "whole.pt"), "--input", "x:4xq")
    assert code == 2 and "NAME:SHAPE" not in err or "shape" in err
    code, _, err = _cli("convert", str(d / "whole.pt"), "--dynamic", "x=batch")
    assert code == 2


def test_convert_to_torch_program(files, tmp_path):
    d, model = files
    out = tmp_path / "back.pt2"
    code, _, err = _cli("convert", str(d / "mlp.pt2"), "--to", "torch", "-o", str(out))
    assert code == 0, err
    ep = torch.export.load(out)
    x = torch.randn(5, 6)
    torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-6)
    assert {k for k in ep.state_dict} >= {"fc1.weight", "fc3.bias"}


def test_convert_to_savedmodel(files, tmp_path):
    tf = pytest.importorskip("tensorflow")
    d, model = files
    out = tmp_path / "mlp_saved"
    code, _, err = _cli("convert", str(d / "mlp.pt2"), "--to", "savedmodel", "-o", str(out))
    assert code == 0, err
    loaded = tf.saved_model.load(str(out))
    x = torch.randn(5, 6)
    np.testing.assert_allclose(loaded(x.numpy()).numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["mlp_saved"]
    code, _, err = _cli("convert", str(d / "mlp.pt2"), "--to", "savedmodel", "-o", str(out))
    assert code == 2 and "--force" in err
