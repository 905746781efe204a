"""The comparison article's program, once for each framework, trained in the IR.

y = 3x + 2 + noise, 100 points, MSE loss, SGD with lr 0.1, 1000 full-batch
steps. Each framework's model is traced into the IR and trained there from the
same initial weights as the framework's own training loop; the per-step losses
are compared, and the same run goes through the exported ONNX training step on
onnxruntime. Run: python examples/linear_regression.py
"""
import numpy as np

import irtool

STEPS, LR = 1000, 0.1


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(100).astype(np.float32)
    y = (3 * x + 2 + rng.normal(0, 0.1, 100)).astype(np.float32)
    return x.reshape(-1, 1), y.reshape(-1, 1)


def train_in_ir(graph, x, y, backend="numpy"):
    """Per-step losses and final params of IR training (MSE, SGD lr 0.1)."""
    trainer = irtool.Trainer(graph, loss="mse", optimizer=irtool.optim.SGD(LR), backend=backend)
    losses = [trainer.step(x, y) for _ in range(STEPS)]
    return np.array(losses), trainer.params


def pytorch(x, y, seed=0):
    """The article's PyTorch program as a module; returns (graph, losses, w, b)
    where losses/w/b come from torch's own training loop."""
    import torch

    class LinearRegression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(1, 1))
            self.b = torch.nn.Parameter(torch.zeros(1, 1))

        def forward(self, x):
            return x.mm(self.w) + self.b

    torch.manual_seed(seed)
    model = LinearRegression()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    graph = irtool.trace(model, (xt,), dynamic_shapes={"x": {0: "n"}})   # traced before training
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = torch.mean((yt - model(xt)) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return graph, np.array(losses), model.w.item(), model.b.item()


FRAMEWORKS = {"pytorch": pytorch}


def main():
    x, y = data()
    print(f"{'program':<22} {'w':>8} {'b':>8} {'max |loss diff| vs framework':>30}")
    for name, program in FRAMEWORKS.items():
        graph, framework_losses, w, b = program(x, y)
        print(f"{name + ' (framework)':<22} {w:8.4f} {b:8.4f}")
        for backend in ("numpy", "onnxruntime"):
            losses, params = train_in_ir(graph, x, y, backend)
            pw, pb = (float(np.ravel(v)[0]) for v in params.values())
            diff = np.abs(losses - framework_losses).max()
            print(f"{name + ' in IR/' + backend[:4]:<22} {pw:8.4f} {pb:8.4f} {diff:30.2e}")


if __name__ == "__main__":
    main()
