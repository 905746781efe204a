"""One training step as one IR graph:

    (trainable params, optimizer state, batch inputs, target)
        -> (updated params, updated state, loss)

The model's trainable params become graph inputs (so the step is a pure
function a runtime can call repeatedly); frozen params stay params. The step
is an ordinary graph: it runs on the numpy runtime and exports to standard
ONNX for stock onnxruntime.
"""
import numpy as np

from irtool.errors import IRToolError
from irtool.ir.autodiff import backprop
from irtool.ir.builder import Builder
from irtool.ir.dtypes import is_float
from irtool.ir.losses import as_loss
from irtool.ir.transform import prune

TARGET = "target"
LOSS = "loss"


def updated_name(name):
    return f"{name}.updated"


def training_step(graph, loss, optimizer, output=0):
    """Build the step graph for `graph` (prediction = its output `output`,
    by index or name), `loss` (name or irtool.Loss) and an irtool.optim
    optimizer. Inputs: params, state, model inputs, `target`."""
    loss = as_loss(loss)
    pred_value = graph.value(output) if isinstance(output, str) else graph.outputs[output]
    if not is_float(pred_value.dtype):
        raise IRToolError(f"the prediction {pred_value!r} is not a float tensor")
    trainable = [p.value for p in graph.params.values() if p.trainable]
    if not trainable:
        raise IRToolError("the graph has no trainable params to train")
    if TARGET in {v.name for v in graph.inputs}:
        raise IRToolError(f"the model already has an input named {TARGET!r}")
    b = Builder(graph.name + "_train_step")
    vmap = {}
    params = []
    for v in trainable:
        vmap[v] = b.input(v.name, v.dtype, v.shape)
        params.append(vmap[v])
    spec = optimizer.state_spec(params)
    state = [b.input(name, dtype, shape) for name, dtype, shape, _ in spec]
    for v in graph.inputs:
        vmap[v] = b.input(v.name, v.dtype, v.shape)
    target_type = loss.target_type(pred_value.type)
    target = b.input(TARGET, target_type.dtype, target_type.shape)
    for name, p in graph.params.items():
        if not p.trainable:
            vmap[p.value] = b.param(name, p.data, trainable=False)
    for n in graph.nodes:
        b.replay(n, vmap)
    loss_value = loss.build(b, vmap[pred_value], target)
    if loss_value.shape != ():
        raise IRToolError(f"loss {loss.name} gave shape {loss_value.shape}; use a mean or sum reduction")
    seed = b.const(np.ones((), dtype=np.float32), loss_value.dtype)
    grads = backprop(b, [loss_value], [seed], params, list(b.nodes))
    grads = [grads.get(p) or b.expand(b.const(0, p.dtype), shape=p.shape) for p in params]
    new_params, new_state = optimizer.update(b, params, grads, state)
    outs = []
    for old, new in list(zip(params, new_params)) + list(zip(state, new_state)):
        if new.producer is None or new in outs:       # an untouched value: copy under a new name
            new = b.add(new, b.const(0, new.dtype))
        b._names.discard(new.name)
        new.name = b._claim(updated_name(old.name))
        outs.append(new)
    if loss_value.producer is not None and LOSS not in b._names:
        b._names.discard(loss_value.name)
        loss_value.name = b._claim(LOSS)
    step = prune(b.build(outs + [loss_value]))
    step.state_spec = spec
    step.param_names = [p.name for p in params]
    return step
