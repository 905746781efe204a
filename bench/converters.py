"""The converters under test, each as `convert(case, path)` writing one ONNX
file from the in-memory model: irtool, torch.onnx.export (dynamo=True and
dynamo=False) and tf2onnx. All at opset 18 (irtool's default)."""
import irtool

from bench.context import quiet

OPSET = 18


def irtool_torch(case, path):
    graph = irtool.trace(case.model, case.inputs, dynamic_shapes=case.dynamic)
    irtool.export_onnx(graph, path)
    return graph


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


def irtool_keras(case, path):
    graph = irtool.trace(case.model, tuple(case.inputs))
    irtool.export_onnx(graph, path)
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


# converter name -> (function, which zoo: "torch" or "keras", display name)
TORCH_PEERS = {"torch_dynamo": (torch_dynamo, "torch.onnx.export(dynamo=True)"),
               "torch_script": (torch_script, "torch.onnx.export(dynamo=False)")}
KERAS_PEERS = {"tf2onnx": (tf2onnx_keras, "tf2onnx.convert.from_function")}


def exported(ctx, case, converter):
    """Path of `case` converted by `converter` ("irtool" or a peer key),
    converting once per run; for "irtool" the traced graph is cached too."""
    key = (case.name, converter)
    if key not in ctx.files:
        path = ctx.path(f"{case.name}.{converter}.onnx")
        keras = case.__class__.__name__ == "KerasCase"
        if converter == "irtool":
            ctx.graphs[case.name] = (irtool_keras if keras else irtool_torch)(case, path)
        else:
            (KERAS_PEERS if keras else TORCH_PEERS)[converter][0](case, path)
        ctx.files[key] = path
    return ctx.files[key]


def graph_of(ctx, case):
    if case.name not in ctx.graphs:
        keras = case.__class__.__name__ == "KerasCase"
        ctx.graphs[case.name] = (irtool.trace(case.model, tuple(case.inputs)) if keras else
                                 irtool.trace(case.model, case.inputs, dynamic_shapes=case.dynamic))
    return ctx.graphs[case.name]
