"""Trainer: runs an IR training-step graph repeatedly on the numpy runtime
or onnxruntime, holding params and optimizer state between steps.

    t = irtool.Trainer(graph, loss="mse", optimizer=irtool.optim.SGD(0.1))
    t.fit((x, y), epochs=10, batch_size=32)
    t.export_onnx("trained.onnx")

On onnxruntime the params and optimizer state stay onnxruntime tensors
between steps (runtime.ort.CarriedRunner); `params` and the exports copy
them out, so what `params` returns is a snapshot: writing into it does not
change the training.
"""
import sys
import time

import numpy as np

from irtool.errors import IRToolError
from irtool.ir.builder import Builder
from irtool.ir.optim import initial_state
from irtool.ir.training import training_step


class Trainer:
    def __init__(self, graph, loss, optimizer, backend="numpy", device="cpu", output=0):
        if backend not in ("numpy", "onnxruntime"):
            raise IRToolError(f"unknown backend {backend!r}; use 'numpy' or 'onnxruntime'")
        self.graph = graph
        self.backend, self.device = backend, device
        self.step_graph = training_step(graph, loss, optimizer, output)
        self._param_names = self.step_graph.param_names
        self._params = [graph.params[n].data.copy() for n in self._param_names]
        self._state = initial_state(self.step_graph.state_spec)
        self._model_inputs = [v.name for v in graph.inputs]
        self.history = []
        self._runner = None
        if backend == "onnxruntime":
            from irtool.runtime.ort import CarriedRunner
            self._runner = CarriedRunner(self.step_graph, self._params + self._state, device)
            self._params = self._state = None     # held by the runner; _sync() reads them back

    def _sync(self):
        """Copy the runner's params and state to numpy (once per step, when read)."""
        if self._params is None:
            values = self._runner.carried()
            n = len(self._param_names)
            self._params, self._state = values[:n], values[n:]

    @property
    def params(self):
        """Current trainable params by name (frozen ones are unchanged)."""
        self._sync()
        return dict(zip(self._param_names, self._params))

    def step(self, *batch):
        """One optimizer step on one batch (model inputs..., target); returns the loss."""
        from irtool.runtime import run
        if len(batch) != len(self._model_inputs) + 1:
            raise IRToolError(f"step takes the model inputs ({', '.join(self._model_inputs)}) and the "
                              f"target: {len(self._model_inputs) + 1} arrays, got {len(batch)}")
        if self._runner is not None:
            loss = float(self._runner.run([np.asarray(a) for a in batch])[-1])
            self._params = self._state = None
            self.history.append(loss)
            return loss
        inputs = self._params + self._state + [np.asarray(a) for a in batch]
        outs = run(self.step_graph, inputs, backend=self.backend, device=self.device)
        n = len(self._params)
        self._params = [np.asarray(a) for a in outs[:n]]
        self._state = [np.asarray(a) for a in outs[n:-1]]
        loss = float(outs[-1])
        self.history.append(loss)
        return loss

    def fit(self, data, epochs=1, batch_size=None, shuffle=True, progress=True, seed=0):
        """Train on `data`: a tuple (model inputs..., target) of arrays with the
        batch on axis 0, or a dict by input name plus "target". Returns the
        mean loss of each epoch."""
        arrays = self._arrays(data)
        count = len(arrays[0])
        if any(len(a) != count for a in arrays):
            raise IRToolError("all data arrays must have the same length on axis 0")
        batch_size = batch_size or count
        rng = np.random.default_rng(seed)
        steps = -(-count // batch_size)
        bar = _Bar(epochs * steps, enabled=progress)
        means = []
        for _ in range(epochs):
            order = rng.permutation(count) if shuffle else np.arange(count)
            losses = []
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                losses.append(self.step(*[a[idx] for a in arrays]))
                bar.update(losses[-1])
            means.append(float(np.mean(losses)))
        bar.close()
        return means

    def _arrays(self, data):
        if isinstance(data, dict):
            names = self._model_inputs + ["target"]
            missing = [n for n in names if n not in data]
            if missing:
                raise IRToolError(f"data has no {missing}; expected arrays named {names}")
            return [np.asarray(data[n]) for n in names]
        return [np.asarray(a) for a in data]

    def trained_graph(self):
        """The inference graph with the trained params."""
        b = Builder(self.graph.name)
        vmap = {}
        trained = self.params
        for v in self.graph.inputs:
            vmap[v] = b.input(v.name, v.dtype, v.shape)
        for name, p in self.graph.params.items():
            vmap[p.value] = b.param(name, trained.get(name, p.data), p.trainable)
        for n in self.graph.nodes:
            b.replay(n, vmap)
        return b.build([vmap[o] for o in self.graph.outputs])

    def export_onnx(self, path, opset=None):
        from irtool.exporters.onnx import export_onnx
        return export_onnx(self.trained_graph(), path, opset=opset)

    def export_training_onnx(self, path, opset=None):
        """The training step: (params, state, batch, target) -> (params, state, loss)."""
        from irtool.exporters.onnx import export_onnx
        return export_onnx(self.step_graph, path, opset=opset)


class _Bar:
    """A text progress bar with the latest loss, on stderr terminals only."""

    def __init__(self, total, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done = total, 0
        self.enabled = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.last = 0.0

    def update(self, loss):
        self.done += 1
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            filled = int(30 * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} loss {loss:.6g}")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
