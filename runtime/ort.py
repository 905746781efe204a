"""The onnxruntime backend: export in memory, run, cache the session.

Sessions are cached on the graph object per device, so repeated runs do not
re-export. device="cuda" needs onnxruntime-gpu and a visible GPU."""
from irtool.errors import IRToolError, RuntimeFailure


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
    from irtool.runtime.interpreter import check_inputs
    arrays, _ = check_inputs(graph.inputs, inputs)
    sess = session_for(graph, device)
    try:
        return sess.run(None, {v.name: a for v, a in zip(graph.inputs, arrays)})
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped
        raise RuntimeFailure(f"onnxruntime failed on {graph.name}: {str(e).strip().splitlines()[0]}") from e
