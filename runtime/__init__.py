"""Executors of IR graphs: the numpy reference interpreter, and onnxruntime."""
from irtool.runtime.interpreter import normalize_inputs


def run(graph, inputs=(), backend="numpy", device="cpu"):
    """Run graph on `inputs` (dict by input name, or a sequence); returns a
    list of numpy arrays, one per graph output."""
    if backend == "numpy":
        if device != "cpu":
            from irtool.errors import IRToolError
            raise IRToolError("the numpy backend runs on cpu only; use backend='onnxruntime' for cuda")
        from irtool.runtime.interpreter import plan_for
        return plan_for(graph)(normalize_inputs(graph, inputs))
    if backend == "onnxruntime":
        from irtool.runtime.ort import run_ort
        return run_ort(graph, normalize_inputs(graph, inputs), device)
    from irtool.errors import IRToolError
    raise IRToolError(f"unknown backend {backend!r}; use 'numpy' or 'onnxruntime'")
