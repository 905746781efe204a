"""The article's linear regression, trained in the IR, against each
framework's own training loop: per-step loss within 1e-5 over all 1000
steps, on the numpy runtime and through the ONNX training step."""
import importlib.util
import os

import numpy as np
import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "linear_regression.py")


def _example():
    spec = importlib.util.spec_from_file_location("linear_regression", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("framework", ["pytorch", "tensorflow2", "tensorflow1"])
def test_ir_training_matches_the_framework(framework, backend):
    pytest.importorskip("torch" if framework == "pytorch" else "tensorflow")
    ex = _example()
    x, y = ex.data()
    graph, framework_losses, w, b = ex.FRAMEWORKS[framework](x, y)
    losses, params = ex.train_in_ir(graph, *ex.inputs_for(framework, x, y), backend)
    assert len(losses) == ex.STEPS == 1000
    assert np.abs(losses - framework_losses).max() < 1e-5
    pw, pb = (float(np.ravel(v)[0]) for v in params.values())
    assert abs(pw - w) < 1e-5 and abs(pb - b) < 1e-5
    assert abs(pw - 3) < 0.1 and abs(pb - 2) < 0.1
