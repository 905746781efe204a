"""IR -> ONNX (default domain only).

`export_onnx(graph, path=None, opset=None)` lowers every node through the
LOWERINGS tables (one per op group, `fn(ctx, node)`); composites without a
lowering at the chosen opset fall back to their decomposition first. Params
become initializers under their own names; graph inputs and outputs keep
their names; symbolic dims become dim_params.
"""
import os
import tempfile

import numpy as np
import onnx

from irtool.errors import ExportError
from irtool.exporters.onnx import lower_composite, lower_conv, lower_elementwise, lower_reduce, lower_shape
from irtool.exporters.onnx.context import LoweringContext, onnx_dtype, value_info
from irtool.ir.dtypes import check_dtype
from irtool.exporters.optimize import optimize as optimize_graph
from irtool.ir.transform import decompose, require_supported

DEFAULT_OPSET = 18
MIN_OPSET, MAX_OPSET = 17, 21
EXTERNAL_DATA_THRESHOLD = 1 << 30   # past this, tensors go to a .data file beside the model

LOWERINGS = {}
for _group in (lower_elementwise, lower_reduce, lower_shape, lower_conv, lower_composite):
    LOWERINGS.update(_group.LOWERINGS)


def supported_ops(opset):
    return {op for op, fn in LOWERINGS.items() if getattr(fn, "min_opset", 0) <= opset}


def to_model(graph, opset=None, optimize=True, external=None, fold_params=False):
    """ModelProto of graph. With `external` (an ExternalData writer), params
    stream into its file and the proto only references them. `fold_params`
    (inference export) folds batch norm and per-channel scales into conv
    weights: fewer nodes, but the folded params get new names."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported; choose {MIN_OPSET} to {MAX_OPSET}")
    supported = supported_ops(opset)
    graph = decompose(graph, supported)
    if optimize:
        graph = optimize_graph(graph, fold_params=fold_params, drop_stop_gradient=True)
    require_supported(graph, supported, "no ONNX lowering for")
    ctx = LoweringContext(graph, opset, external)
    outputs = set(graph.outputs)
    for name, p in graph.params.items():
        if p.value.uses or p.value in outputs:   # unused buffers (num_batches_tracked) stay out
            ctx.initializer(name, p.data)
    for v in graph.inputs:
        if v.name in graph.params:
            raise ExportError(f"name {v.name!r} is both an input and a param")
    for n in graph.nodes:
        LOWERINGS[n.op](ctx, n)
    return ctx.model(_distinct_outputs(ctx, graph))


def _distinct_outputs(ctx, graph):
    """ONNX wants each graph output made by a node under a name of its own;
    where the IR returns an input, a param or one value twice, add Identity."""
    produced = {o for node in ctx.nodes for o in node.output}
    seen, infos = set(), []
    for v in graph.outputs:
        name = v.name
        if name not in produced or name in seen:
            name = ctx.emit("Identity", [v.name], [ctx.fresh(f"{v.name}_out")])
        seen.add(name)
        infos.append(value_info(v, name))
    return infos


def export_onnx(graph, path=None, opset=None, optimize=True, fold_params=False):
    """ModelProto of graph; with `path`, also written there atomically. Past
    EXTERNAL_DATA_THRESHOLD bytes of params, the params stream straight from
    their arrays into `<file>.data` (no copy of them is held in memory)."""
    if path is not None and sum(p.data.nbytes for p in graph.params.values()) > EXTERNAL_DATA_THRESHOLD:
        return _export_external(graph, path, opset, optimize, fold_params)
    model = to_model(graph, opset, optimize, fold_params=fold_params)
    if path is not None:
        write_model(model, path)
    return model


class ExternalData:
    """Appends tensors to an open external-data file and makes the
    TensorProto that references each one (onnx's external data format)."""

    def __init__(self, file, location):
        self.file, self.location = file, location

    def tensor(self, name, arr):
        arr = np.ascontiguousarray(arr)
        t = onnx.TensorProto()
        t.name = name
        t.data_type = onnx_dtype(check_dtype(arr.dtype))
        t.dims.extend(arr.shape)
        offset = self.file.tell()
        self.file.write(memoryview(arr.reshape(-1).view(np.uint8)))
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(arr.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t


def _export_external(graph, path, opset, optimize, fold_params):
    box = {}

    def save(tmp, data_name, tmpdir):
        with open(os.path.join(tmpdir, data_name), "wb") as f:
            box["model"] = to_model(graph, opset, optimize, external=ExternalData(f, data_name),
                                    fold_params=fold_params)
        onnx.save_model(box["model"], tmp)
    _atomic_model_write(path, save)
    return box["model"]


def write_model(model, path):
    """Atomic write: temp files in the target folder, then rename. Models past
    EXTERNAL_DATA_THRESHOLD keep tensors in `<file>.data` beside the model."""
    big = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD

    def save(tmp, data_name, tmpdir):
        if big:
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, tmp)
    _atomic_model_write(path, save)


def _atomic_model_write(path, save):
    """Run save(tmp_model, data_name, tmpdir) in a temp folder beside `path`,
    then move the files into place: the data file first (the old one kept
    aside), the model last; if the model cannot be moved, the old data file is
    put back, so an existing model and its weights never go out of step."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    data_name = os.path.basename(path) + ".data"
    target_data = os.path.join(folder, data_name)
    try:
        tmpdir = tempfile.mkdtemp(prefix=".irtool-", dir=folder)
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        tmp = os.path.join(tmpdir, os.path.basename(path))
        save(tmp, data_name, tmpdir)
        new_data = os.path.join(tmpdir, data_name)
        backup = os.path.join(tmpdir, "previous.data")
        moved = False
        if os.path.exists(new_data):
            if os.path.exists(target_data):
                os.replace(target_data, backup)
            os.replace(new_data, target_data)
            moved = True
        try:
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(backup):
                os.replace(backup, target_data)      # the old model's weights, back in place
            elif moved:
                os.unlink(target_data)               # ours, just moved in: no model refers to it
            raise
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        for f in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)
