"""GPU paths, run where a CUDA device is present and skipped elsewhere (CI
has none): modules from irtool.to_torch moved to CUDA against the original
torch model on CPU (forward, and every parameter's gradient), and the
onnxruntime backend on CUDAExecutionProvider (inference and training steps)
where onnxruntime-gpu is installed."""
import numpy as np
import pytest

import irtool
from irtool.frontends.torch_files import flatten_outputs

torch = pytest.importorskip("torch")
from tests.torch_zoo import ZOO, build, float_outputs, loss_weights, weighted_loss  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# float32 on the GPU sums in other orders than the CPU (and cuDNN picks its own
# algorithms): a little looser than the CPU tests' rtol 1e-4
FWD = dict(rtol=1e-3, atol=1e-4)
GRAD = dict(rtol=2e-3, atol=2e-4)
MODELS = ["mlp", "cnn", "lstm", "gru", "encoder", "attention", "bert", "gpt2", "vit", "resnet"]


@pytest.fixture(autouse=True)
def _no_tf32():
    if torch.cuda.is_available():
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    else:
        yield


@needs_cuda
@pytest.mark.parametrize("name", MODELS)
def test_to_torch_on_cuda_matches_the_original_on_cpu(name):
    if ZOO[name][3]:
        pytest.importorskip("transformers")
    model, inputs, dyn = build(name)
    graph = irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
    ours = irtool.to_torch(graph).to("cuda")
    for batch, seq in ((1, 5), (3, 7) if "seq" in str(dyn) else (3, 5)):
        args = inputs(batch, seq)
        with torch.no_grad():
            expected = flatten_outputs(model(*args))
            got = flatten_outputs(ours(*[a.cuda() for a in args]))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.device.type == "cuda"
            torch.testing.assert_close(g.cpu(), e, **FWD, msg=lambda m: f"{name} {batch}x{seq}: {m}")
    args = inputs(3, 5)
    weights = loss_weights(model, args)
    model.zero_grad()
    weighted_loss(float_outputs(model, args), weights).backward()
    ours.zero_grad()
    weighted_loss(float_outputs(ours, [a.cuda() for a in args]), [w.cuda() for w in weights]).backward()
    theirs = dict(model.named_parameters())
    for pname, p in ours.named_parameters():
        expected = theirs[pname].grad
        expected = torch.zeros_like(theirs[pname]) if expected is None else expected
        got = torch.zeros_like(p).cpu() if p.grad is None else p.grad.cpu()
        torch.testing.assert_close(got, expected, **GRAD, msg=lambda m: f"{name} d/d {pname}: {m}")


def _cuda_provider():
    import onnxruntime as ort
    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(not _cuda_provider(), reason="needs onnxruntime-gpu and a GPU")


@needs_ort_cuda
@pytest.mark.parametrize("name", ["mlp", "cnn", "bert"])
def test_onnxruntime_cuda_matches_numpy(name):
    if ZOO[name][3]:
        pytest.importorskip("transformers")
    model, inputs, dyn = build(name)
    graph = irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
    feeds = [a.numpy() for a in inputs(3, 5)]
    for g, e in zip(irtool.run(graph, feeds, backend="onnxruntime", device="cuda"), irtool.run(graph, feeds)):
        np.testing.assert_allclose(g, e, **FWD)


@needs_ort_cuda
def test_training_on_onnxruntime_cuda_matches_numpy():
    model, inputs, dyn = build("cnn")
    graph = irtool.trace(model, inputs(2, 5), dynamic_shapes=dyn)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    y = rng.standard_normal((8,) + tuple(graph.outputs[0].shape[1:])).astype(np.float32)
    losses = {}
    for device in ("cpu", "cuda"):
        kw = {"device": device} if device == "cuda" else {}
        trainer = irtool.Trainer(graph, loss="mse", optimizer=irtool.optim.Adam(1e-3), backend="onnxruntime", **kw)
        losses[device] = [trainer.step(x, y) for _ in range(5)]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-3)
