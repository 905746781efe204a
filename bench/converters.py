"""The converters under test, each writing one ONNX file from the in-memory
model: irtool (convert_ours), and the peers torch.onnx.export (dynamo=True
and dynamo=False) and tf2onnx.convert.from_function, as `peer(case, path)`.
All at opset 18 (irtool's default)."""
import irtool

from bench.context import quiet

OPSET = 18


def torch_dynamo(case, path):
    import torch
    from torch.export import Dim
    dyn = {n: {a: Dim.AUTO for a in axes} for n, axes in case.dynamic.items()}
    with quiet():
        torch.onnx.export(case.model, case.inputs, path, dynamo=True, input_names=case.input_names,
                          output_names=["output"], dynamic_shapes=dyn, opset_version=OPSET, verbose=False)


def torch_script(case, path):
    import torch
    with quiet():
        torch.onnx.export(case.model, case.inputs, path, dynamo=False, input_names=case.input_names,
                          output_names=["output"], dynamic_axes={n: dict(a) for n, a in case.dynamic.items()},
                          opset_version=OPSET)


def trace_keras(ctx, case):
    """irtool.trace on a Keras model; while irtool.trace does not dispatch
    Keras yet, the TF frontend's own entry point (with a note)."""
    from irtool.errors import UnsupportedError
    with quiet():       # TensorFlow's AutoGraph warnings
        try:
            return irtool.trace(case.model, tuple(case.inputs))
        except UnsupportedError:
            from irtool.frontends import tf_trace
            if not hasattr(tf_trace, "trace_tf"):
                raise
            graph = tf_trace.trace_tf(case.model, example_inputs=list(case.inputs))
    ctx.note("Keras rows: irtool.trace does not dispatch Keras models yet; used "
             "irtool.frontends.tf_trace.trace_tf(model, example_inputs=...)")
    return graph


def _is_keras(case):
    return case.__class__.__name__ == "KerasCase"


def trace_ours(ctx, case):
    if _is_keras(case):
        return trace_keras(ctx, case)
    return irtool.trace(case.model, case.inputs, dynamic_shapes=case.dynamic)


def convert_ours(ctx, case, path):
    graph = trace_ours(ctx, case)
    irtool.export_onnx(graph, path, fold_params=True)     # what `irtool convert` writes (and the peers fold too)
    ctx.graphs[case.name] = graph
    return graph


def tf2onnx_keras(case, path):
    import tensorflow as tf
    import tf2onnx
    model = case.model
    spec = tuple(tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype), name=f"x{i}" if i else "x")
                 for i, x in enumerate(case.inputs))
    fn = tf.function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False),
                     input_signature=spec)
    with quiet():
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET, output_path=path)


TORCH_PEERS = {"torch_dynamo": (torch_dynamo, "torch.onnx.export(dynamo=True)"),
               "torch_script": (torch_script, "torch.onnx.export(dynamo=False)")}
KERAS_PEERS = {"tf2onnx": (tf2onnx_keras, "tf2onnx.convert.from_function")}


def exported(ctx, case, converter):
    """Path of `case` converted by `converter` ("irtool" or a peer key),
    converting once per run."""
    key = (case.name, converter)
    if key not in ctx.files:
        path = ctx.path(f"{case.name}.{converter}.onnx")
        if converter == "irtool":
            convert_ours(ctx, case, path)
        else:
            (KERAS_PEERS if _is_keras(case) else TORCH_PEERS)[converter][0](case, path)
        ctx.files[key] = path
    return ctx.files[key]


def graph_of(ctx, case):
    if case.name not in ctx.graphs:
        ctx.graphs[case.name] = trace_ours(ctx, case)
    return ctx.graphs[case.name]
