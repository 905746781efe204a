"""The onnxruntime backend: export in memory, run, cache the session.

Sessions are cached on the graph object per device, so repeated runs do not
re-export. device="cuda" needs onnxruntime-gpu and a visible GPU."""
import numpy as np

from irtool.errors import IRToolError, IRTypeError
from irtool.ir.dtypes import np_dtype


def providers_for(device):
    import onnxruntime as ort
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise IRToolError("device='cuda' needs onnxruntime-gpu and a CUDA GPU; this onnxruntime has "
                              + ", ".join(ort.get_available_providers()))
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise IRToolError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


def session_for(graph, device="cpu", opset=None):
    import onnxruntime as ort

    from irtool.exporters.onnx import to_model
    from irtool.runtime.interpreter import _fingerprint
    cache = graph.__dict__.setdefault("_ort_sessions", {})
    key = (device, opset, _fingerprint(graph))
    if key not in cache:
        model = to_model(graph, opset)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        cache.clear()
        cache[key] = ort.InferenceSession(model.SerializeToString(), opts, providers=providers_for(device))
    return cache[key]


def run_ort(graph, inputs, device="cpu"):
    sess = session_for(graph, device)
    if len(inputs) != len(graph.inputs):
        raise IRTypeError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    feed = {}
    for v, a in zip(graph.inputs, inputs):
        a = np.asarray(a)
        if a.dtype != np_dtype(v.dtype):
            raise IRTypeError(f"input {v.name!r} must be {v.dtype}, got {a.dtype}")
        feed[v.name] = a
    return sess.run(None, feed)
