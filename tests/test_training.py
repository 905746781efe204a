"""Training in the IR matches the framework's own training step by step.

Oracle: torch.optim on the original torch modules (same initial weights,
same batches). Loss and every parameter within 1e-4 relative, on the numpy
runtime and on onnxruntime through the exported training step."""
import numpy as np
import onnx
import pytest

import irtool
from irtool.errors import IRToolError

torch = pytest.importorskip("torch")
from tests.torch_zoo import CNN, MLP  # noqa: E402

STEPS = 50


def _data(name, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


def _optimizers(params, kind):
    if kind == "sgd_momentum":
        return (torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
                irtool.optim.SGD(0.05, momentum=0.9, weight_decay=1e-4))
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3), irtool.optim.Adam(1e-3)
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05), irtool.optim.AdamW(1e-3, weight_decay=0.05)


def _close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("kind", ["sgd_momentum", "adam", "adamw"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_training_matches_torch_step_by_step(name, kind, backend):
    torch.manual_seed(0)
    # dropout is the identity in eval mode on both sides; batch norm uses running stats
    model = (MLP() if name == "mlp" else CNN()).eval()
    x, y = _data(name)
    graph = irtool.trace(model, (x[:4],), dynamic_shapes={"x": {0: "batch"}})
    torch_opt, ir_opt = _optimizers(model.parameters(), kind)
    trainer = irtool.Trainer(graph, loss="cross_entropy", optimizer=ir_opt, backend=backend)
    for step in range(STEPS):
        idx = slice((step * 4) % 16, (step * 4) % 16 + 4)
        torch_opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        torch_opt.step()
        ours = trainer.step(x[idx].numpy(), y[idx].numpy())
        _close(ours, loss.item(), f"loss at step {step}")
    for pname, p in model.named_parameters():
        _close(trainer.params[pname], p.detach().numpy(), f"{pname} after {STEPS} steps")


def test_training_step_exports_to_standard_onnx(tmp_path):
    torch.manual_seed(0)
    graph = irtool.trace(MLP().eval(), (torch.randn(4, 6),), dynamic_shapes={"x": {0: "batch"}})
    trainer = irtool.Trainer(graph, "cross_entropy", irtool.optim.Adam(1e-2))
    trainer.export_training_onnx(tmp_path / "step.onnx")
    model = onnx.load(str(tmp_path / "step.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    names = [i.name for i in model.graph.input]
    assert names[:2] == ["fc1.weight", "fc1.bias"] and "adam.step" in names and names[-2:] == ["x", "target"]
    outs = [o.name for o in model.graph.output]
    assert outs[0] == "fc1.weight.updated" and outs[-1] == "loss"
    trainer.export_onnx(tmp_path / "trained.onnx")
    onnx.checker.check_model(str(tmp_path / "trained.onnx"), full_check=True)


def test_fit_reduces_loss_and_exports_trained_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    torch.manual_seed(0)
    graph = irtool.trace(MLP().eval(), (torch.from_numpy(x[:4]),), dynamic_shapes={"x": {0: "batch"}})
    trainer = irtool.Trainer(graph, "cross_entropy", irtool.optim.Adam(1e-2))
    means = trainer.fit((x, y), epochs=30, batch_size=16, progress=False)
    assert means[-1] < 0.5 * means[0]
    trained = trainer.trained_graph()
    logits = irtool.run(trained, [x])[0]
    assert (logits.argmax(1) == y).mean() > 0.8
    np.testing.assert_array_equal(trained.params["fc1.weight"].data, trainer.params["fc1.weight"])


@pytest.mark.parametrize("loss,torch_loss,target", [
    ("mse", torch.nn.functional.mse_loss, "same"),
    ("l1", torch.nn.functional.l1_loss, "same"),
    ("bce_with_logits", torch.nn.functional.binary_cross_entropy_with_logits, "binary"),
    (irtool.Loss("cross_entropy", label_smoothing=0.1),
     lambda a, t: torch.nn.functional.cross_entropy(a, t, label_smoothing=0.1), "classes"),
])
def test_losses_match_torch(loss, torch_loss, target):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x = torch.randn(8, 5)
    t = {"same": torch.randn(8, 3), "binary": (torch.rand(8, 3) > 0.5).float(),
         "classes": torch.randint(0, 3, (8,))}[target]
    graph = irtool.trace(model, (x,))
    trainer = irtool.Trainer(graph, loss, irtool.optim.SGD(0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        expected = torch_loss(model(x), t)
        expected.backward()
        opt.step()
        _close(trainer.step(x.numpy(), t.numpy()), expected.item(), "loss")
    for pname, p in model.named_parameters():
        _close(trainer.params[pname], p.detach().numpy(), pname)


def test_bad_training_input_is_a_clear_error():
    b = irtool.Builder()
    x = b.input("x", "float32", (2,))
    with pytest.raises(IRToolError, match="no trainable params"):
        irtool.training_step(b.build([b.neg(x)]), "mse", irtool.optim.SGD(0.1))
    with pytest.raises(IRToolError, match="unknown loss"):
        irtool.Loss("hinge")
    with pytest.raises(IRToolError, match="learning rate"):
        irtool.optim.SGD(-1)


def test_onnxruntime_trainer_keeps_state_between_steps_and_params_are_snapshots():
    """The onnxruntime trainer holds params and optimizer state as onnxruntime
    tensors between steps; it must still match the numpy trainer step by step
    (batch sizes changing, params read between steps), params read at one step
    must not change later, and a bad batch is an error on every step."""
    from irtool.errors import IRTypeError
    torch.manual_seed(0)
    graph = irtool.trace(MLP().eval(), (torch.randn(4, 6),), dynamic_shapes={"x": {0: "batch"}})
    x, y = _data("mlp")
    x, y = x.numpy(), y.numpy()
    ours = irtool.Trainer(graph, "cross_entropy", irtool.optim.Adam(1e-2), backend="onnxruntime")
    ref = irtool.Trainer(graph, "cross_entropy", irtool.optim.Adam(1e-2), backend="numpy")
    before = {k: v.copy() for k, v in ours.params.items()}
    snapshots = []
    for step, size in enumerate([4, 4, 3, 5, 4, 3, 4]):
        idx = slice(step, step + size)
        _close(ours.step(x[idx], y[idx]), ref.step(x[idx], y[idx]), f"loss at step {step}")
        snapshots.append((ours.params, {k: v.copy() for k, v in ref.params.items()}))
    for got, want in snapshots:                    # each read stayed what it was
        for k in want:
            _close(got[k], want[k], k)
    assert not np.allclose(before["fc1.weight"], ours.params["fc1.weight"])
    np.testing.assert_array_equal(ours.trained_graph().params["fc1.weight"].data, ours.params["fc1.weight"])
    for _ in range(2):                              # checked once per signature, rejected every time
        with pytest.raises(IRTypeError, match="must be float32"):
            ours.step(x[:4].astype(np.float64), y[:4])
    with pytest.raises(IRTypeError):
        ours.step(x[:4, :5], y[:4])
    _close(ours.step(x[:4], y[:4]), ref.step(x[:4], y[:4]), "loss after rejected batches")
    xf = np.asfortranarray(x[4:8])                  # not C-contiguous: bound through a copy
    _close(ours.step(xf, y[4:8]), ref.step(xf, y[4:8]), "loss on a Fortran-ordered batch")
