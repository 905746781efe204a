"""Running models: irtool's numpy runtime vs eager PyTorch / Keras
(inference and one SGD training step), and a training step through irtool's
exported training graph on onnxruntime vs the same eager step.

Every model is in inference mode on both sides (dropout is the identity,
batch norm uses running statistics), as irtool traces it."""
import copy

import numpy as np

import irtool
from bench import converters
from bench.conversion import one_line
from bench.measure import measure_many
from bench.report import Row

LR = 0.01


def _torch_infer(case):
    import torch

    def fn():
        with torch.no_grad():
            case.model(*case.inputs)
    return fn


def _torch_step(case):
    import torch
    import torch.nn.functional as F
    model = copy.deepcopy(case.model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    target = torch.from_numpy(case.target)
    loss_fn = F.cross_entropy if case.loss == "cross_entropy" else F.mse_loss

    def fn():
        opt.zero_grad()
        loss = loss_fn(model(*case.inputs), target)
        loss.backward()
        opt.step()
        return loss.item()
    return fn


def _keras_infer(case):
    def fn():
        case.model(case.inputs[0] if len(case.inputs) == 1 else case.inputs, training=False)
    return fn


def _keras_step(case):
    import keras
    import tensorflow as tf
    model = keras.models.clone_model(case.model)
    model.set_weights(case.model.get_weights())
    opt = keras.optimizers.SGD(LR)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = [tf.constant(a) for a in case.inputs]
    y = tf.constant(case.target)

    def fn():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x[0] if len(x) == 1 else x, training=False))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return float(loss)
    return fn


def _cases(ctx):
    out = [(c, c.numpy_inputs(), "torch eager", _torch_infer, _torch_step) for c in ctx.torch_cases()]
    out += [(c, c.inputs, "keras eager (TF)", _keras_infer, _keras_step) for c in ctx.keras_cases()]
    return out


def run_numpy_infer(ctx):
    rows = []
    r = ctx.repeats
    for case, inputs, peer, infer, _ in _cases(ctx):
        print(f"  numpy inference {case.name}", flush=True)
        try:
            graph = converters.graph_of(ctx, case)
        except Exception as e:  # noqa: BLE001
            ctx.note(f"numpy_infer {case.name}: irtool failed: {one_line(e)}")
            continue
        res = measure_many({"ours": lambda: irtool.run(graph, inputs), "peer": infer(case)},
                           r.infer, warmup=2, budget_s=r.budget_s, rounds=3, settle=1)
        rows.append(_row("numpy_infer", case.name, peer, res, f"{len(graph.nodes)} IR nodes"))
    return rows


def _row(section, model, peer, res, notes):
    bad = [f"{who} failed: {one_line(v)}" for who, v in res.items() if isinstance(v, Exception)]
    ours, theirs = (None if isinstance(res[k], Exception) else res[k] for k in ("ours", "peer"))
    return Row(section, model, peer, ours, theirs, "; ".join([notes] + bad), scale=1000.0)


def _trainer_rows(ctx, section, backend):
    rows = []
    r = ctx.repeats
    for case, inputs, peer, _, make_step in _cases(ctx):
        print(f"  {section} {case.name}", flush=True)
        try:
            graph = converters.graph_of(ctx, case)
            trainer = irtool.Trainer(graph, loss=case.loss, optimizer=irtool.optim.SGD(LR), backend=backend)
            first = trainer.step(*inputs, case.target)
        except Exception as e:  # noqa: BLE001
            ctx.note(f"{section} {case.name}: irtool failed: {one_line(e)}")
            continue
        notes = f"{len(trainer.step_graph.nodes)} step-graph nodes"
        eager = make_step(case)
        try:
            check = eager()
            if not np.isclose(first, check, rtol=1e-3, atol=1e-5):
                notes += f"; first loss {first:.5g} vs peer {check:.5g}"
        except Exception:  # noqa: BLE001 - measure_many reports it
            pass
        res = measure_many({"ours": lambda: trainer.step(*inputs, case.target), "peer": eager},
                           r.train, warmup=1, budget_s=r.budget_s, rounds=3, settle=1)
        rows.append(_row(section, case.name, peer, res, notes))
    return rows


def run_numpy_train(ctx):
    return _trainer_rows(ctx, "numpy_train", "numpy")


def run_ort_train(ctx):
    return _trainer_rows(ctx, "ort_train", "onnxruntime")
