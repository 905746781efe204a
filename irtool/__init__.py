"""irtool: one IR for PyTorch, TensorFlow and ONNX models, with its own
autodiff, a numpy reference runtime and exporters.

    import irtool
    b = irtool.Builder()
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", np.ones((4, 3), np.float32))
    g = b.build([b.matmul(x, w)])
    irtool.run(g, {"x": np.ones((2, 4), np.float32)})
"""
from irtool.errors import IRToolError
from irtool.ir import Builder, Graph, grad, verify, vjp
from irtool.ir.serialize import load, save
from irtool.ir import optim
from irtool.ir.losses import Loss
from irtool.ir.training import training_step
from irtool.runtime import run
from irtool.runtime.trainer import Trainer

__version__ = "0.1.0"

__all__ = ["Builder", "Graph", "IRToolError", "Loss", "Trainer", "grad", "load", "optim", "run", "save",
           "training_step", "verify", "vjp",
           "export_onnx", "import_onnx", "to_tensorflow", "to_torch", "trace"]


def export_onnx(graph, path=None, opset=None, fold_params=False):
    """Export graph to ONNX; writes `path` atomically when given and returns
    the onnx.ModelProto. `fold_params=True` (for inference) folds batch norm
    and per-channel scales into conv weights, renaming those params."""
    from irtool.exporters.onnx import export_onnx as _export
    return _export(graph, path, opset=opset, fold_params=fold_params)


def import_onnx(path_or_model):
    """Read an ONNX model (path, bytes or onnx.ModelProto) into an IR Graph."""
    from irtool.frontends.onnx_import import import_onnx as _import
    return _import(path_or_model)


def trace(model, example_inputs=None, dynamic_shapes=None, **options):
    """Trace a framework model into an IR Graph.

    torch.nn.Module: through torch.export; `dynamic_shapes` maps forward
    argument names to {axis: "symbol"} (or torch.export.Dim objects).
    Params are copied (the graph stays as traced when the module trains
    on); `share_params=True` reads the module's memory instead, for a
    one-shot conversion of a large model that is not changed afterwards.
    keras.Model / tf.Module / tf.function / SavedModel path: through a
    concrete function; `options` go to frontends.tf_trace.trace_tf
    (input_signature, inputs_as_nchw, trust_code)."""
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from irtool.frontends.torch_trace import trace as trace_torch
        if example_inputs is None:
            raise TypeError("tracing a torch module needs example_inputs")
        return trace_torch(model, example_inputs, dynamic_shapes, **options)
    from irtool.frontends.tf_trace import is_tf_object, trace_tf
    if is_tf_object(model) or isinstance(model, str):
        return trace_tf(model, example_inputs=example_inputs, dynamic_shapes=dynamic_shapes, **options)
    from irtool.errors import UnsupportedError
    raise UnsupportedError(f"cannot trace a {type(model).__module__}.{type(model).__name__}; "
                           "supported: torch.nn.Module, keras.Model, tf.Module, tf.function")


def to_torch(graph):
    """An nn.Module running graph with torch ops; params are nn.Parameters
    named like the IR params (a state_dict a user recognises)."""
    from irtool.exporters.torch import to_torch as _to_torch
    return _to_torch(graph)


def to_tensorflow(graph):
    """A tf.Module running graph with TensorFlow ops: tf.Variables named like
    the IR params, a __call__ tf.function with an input signature (symbolic
    dims as None), differentiable with tf.GradientTape, saveable as a SavedModel."""
    from irtool.exporters.tensorflow import to_tensorflow as _to_tensorflow
    return _to_tensorflow(graph)
