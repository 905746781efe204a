"""Opening TensorFlow / Keras files without running code the user did not trust.

- `.keras` (Keras 3 zip) and `.h5` (legacy Keras HDF5): the model config is
  read first and every object it names must come from Keras itself; a
  Lambda layer (marshalled Python bytecode), a custom or registered class,
  or any other module import is refused unless `trust_code`. The file is
  then loaded with `keras.saving.load_model(safe_mode=True)` (safe_mode
  off only when trusted). A weights-only .h5 is refused with advice.
- SavedModel directories: loading unpickles nothing and runs no Python,
  but it does execute graph functions (variable restore, and for TF1
  SavedModels the init ops), and the reference run for --verify executes
  the serving function. Both run only TensorFlow ops named in the file, so
  the decision is made on those names: without `trust_code` every op in
  every graph and function of saved_model.pb must be one irtool can
  convert (frontends/tf_ops.TABLE) or plain variable/checkpoint plumbing
  (VarHandleOp, RestoreV2, SaveV2 ...), and the serving function itself
  may hold only convertible ops and variable reads. That rules out file
  and network I/O, py_func and custom ops; anything else needs trust.
- `.pb` (a frozen GraphDef): parsed and imported, never executed by the
  conversion; the same op check guards the reference run.
A missing, empty, garbage or truncated file is one FileFormatError line.
"""
import json
import os
import zipfile

import numpy as np

from irtool.errors import FileFormatError, IRToolError, UnsupportedError

TRUST_HINT = "pass --trust-code only if you trust its source"
KERAS_EXTS = (".keras", ".h5", ".hdf5")

# ops that move variables and checkpoints around, and function plumbing
PLUMBING = {"Placeholder", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN", "Const", "VarHandleOp",
            "ReadVariableOp", "PartitionedCall", "StatefulPartitionedCall", "VarIsInitializedOp",
            "While", "StatelessWhile", "If", "StatelessIf"}
CHECKPOINT = {"AssignVariableOp", "RestoreV2", "SaveV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
              "StaticRegexFullMatch", "Select", "Pack", "DisableCopyOnRead", "DestroyResourceOp",
              "VariableV2", "Assign", "RestoreSlice", "SaveSlices", "ShardedFilespec"}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    return tf


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def is_tf_file(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return True
    return os.path.splitext(path)[1].lower() in KERAS_EXTS + (".pb",)


# -- Keras configs ------------------------------------------------------------------

def _config_problems(config):
    """What in a Keras model config would run code from outside Keras."""
    problems = []

    def walk(o):
        if isinstance(o, dict):
            cls = o.get("class_name")
            module = o.get("module")
            if cls == "Lambda" or cls == "__lambda__":
                problems.append("a Lambda layer (Python code stored in the file)")
            elif isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
                problems.append(f"{cls or 'an object'} from module {module!r}")
            elif o.get("registered_name") not in (None, cls) and isinstance(o.get("registered_name"), str) \
                    and ">" in o["registered_name"]:
                problems.append(f"the custom object {o['registered_name']!r}")
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(config)
    return sorted(set(problems))


def _keras_config(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras":
        if not zipfile.is_zipfile(path):
            raise FileFormatError(f"{path}: not a .keras archive (Keras 3 writes a zip file)")
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if "config.json" not in names:
                    raise FileFormatError(f"{path}: no config.json in the archive; is it a Keras 3 model file?")
                config = json.loads(z.read("config.json"))
                if "model.weights.h5" in names:
                    z.getinfo("model.weights.h5")
                    with z.open("model.weights.h5") as f:
                        while f.read(1 << 20):
                            pass
        except FileFormatError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated zips, bad JSON, CRC errors
            raise FileFormatError(f"{path}: cannot read this .keras file ({type(e).__name__}: {_first_line(e)})") \
                from None
        return config
    try:
        import h5py
    except ImportError:
        raise UnsupportedError(f"{path}: reading .h5 files needs h5py: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {_first_line(e)})") from None
    if raw is None:
        raise UnsupportedError(f"{path}: holds only weights (no model config). Build the model in Python, call "
                               "model.load_weights(path), then irtool.trace(model) — or save it with "
                               "model.save('model.keras')")
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError as e:
        raise FileFormatError(f"{path}: its model config is not valid JSON ({_first_line(e)})") from None


def load_keras(path, trust_code=False):
    """A Keras model from a .keras or .h5 file."""
    path = os.fspath(path)
    _check_exists(path)
    config = _keras_config(path)
    problems = _config_problems(config)
    if problems and not trust_code:
        raise FileFormatError(f"{path}: refused: the model needs code from outside Keras to load "
                              f"({'; '.join(problems)}); {TRUST_HINT}")
    _tf()
    import keras
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as e:  # noqa: BLE001 - Keras raises anything on a damaged file
        msg = _first_line(e)
        if "safe_mode" in str(e) or "arbitrary code" in str(e):
            raise FileFormatError(f"{path}: refused: {msg.split('.')[0]}; {TRUST_HINT}") from None
        raise FileFormatError(f"{path}: cannot load this Keras file ({type(e).__name__}: {msg})") from None


# -- SavedModels and GraphDefs ------------------------------------------------------------

def _check_exists(path):
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise FileFormatError(f"{path}: file is empty")


def _allowed_ops():
    from irtool.frontends.tf_ops import TABLE
    return set(TABLE) | PLUMBING


def _saved_model_proto(path):
    _tf()
    from tensorflow.core.protobuf import saved_model_pb2
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        if os.path.isfile(os.path.join(path, "saved_model.pbtxt")):
            raise UnsupportedError(f"{path}: text SavedModels (saved_model.pbtxt) are not supported")
        raise FileFormatError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    sm = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError on garbage / truncation
        raise FileFormatError(f"{path}: saved_model.pb is damaged ({type(e).__name__}: {_first_line(e)})") from None
    if not sm.meta_graphs:
        raise FileFormatError(f"{path}: saved_model.pb holds no graph")
    return sm


def _op_counts(graph_defs):
    counts = {}
    for gd in graph_defs:
        for n in gd.node:
            counts[n.op] = counts.get(n.op, 0) + 1
        for fn in gd.library.function:
            for n in fn.node_def:
                counts[n.op] = counts.get(n.op, 0) + 1
    return counts


def _refuse_ops(path, counts, allowed, what):
    bad = {k: c for k, c in counts.items() if k not in allowed}
    if bad:
        listing = ", ".join(f"{k} (x{c})" for k, c in sorted(bad.items()))
        raise FileFormatError(f"{path}: refused: {what} ops irtool does not vet: {listing}; {TRUST_HINT}")


def load_saved_model(path, trust_code=False):
    path = os.fspath(path)
    _check_exists(path)
    sm = _saved_model_proto(path)
    if not trust_code:
        _refuse_ops(path, _op_counts([mg.graph_def for mg in sm.meta_graphs]), _allowed_ops() | CHECKPOINT,
                    "the SavedModel runs")
    tf = _tf()
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - missing variables, bad checkpoints, unknown ops
        raise FileFormatError(f"{path}: cannot load this SavedModel ({type(e).__name__}: {_first_line(e)})") \
            from None
    loaded._irtool_trusted = bool(trust_code)
    return loaded


def _function_ops(cf):
    """Op counts of a concrete function and everything it calls."""
    from irtool.frontends.tf_trace import called_graphs
    counts, seen = {}, set()

    def walk(graph, graphs):
        for op in graph.get_operations():
            counts[op.type] = counts.get(op.type, 0) + 1
            for name, g in called_graphs(op, graphs):
                if name not in seen:
                    seen.add(name)
                    walk(g, graphs + [g])

    walk(cf.graph, [cf.graph])
    return counts


def load_graph_def(path):
    _check_exists(path)
    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as f:
            gd.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{path}: not a TensorFlow GraphDef ({type(e).__name__}: {_first_line(e)})") from None
    if not gd.node:
        raise FileFormatError(f"{path}: the GraphDef holds no ops")
    return gd


def load_tf(path, trust_code=False):
    """The object a TF/Keras file holds: a Keras model or a loaded SavedModel."""
    path = os.fspath(path)
    _check_exists(path)
    if os.path.isdir(path):
        return load_saved_model(path, trust_code)
    ext = os.path.splitext(path)[1].lower()
    if ext in KERAS_EXTS:
        return load_keras(path, trust_code)
    raise FileFormatError(f"{path}: not a TensorFlow model file (.keras, .h5 or a SavedModel directory)")


# -- the CLI entry --------------------------------------------------------------------

def _signature(specs, dynamic):
    tf = _tf()
    out = []
    for name, shape, dtype in specs:
        shape = list(shape)
        for axis in (dynamic or {}).get(name, {}):
            shape[axis] = None
        out.append(tf.TensorSpec(shape, tf.as_dtype(dtype), name=name))
    return out


def _flat_numpy(out):
    tf = _tf()
    return [np.asarray(t) for t in tf.nest.flatten(out)]


def convert_file(path, trust_code=False, input_specs=(), dynamic=None, inputs_as_nchw=None):
    """Graph and a reference runner (numpy arrays in, numpy arrays out, in
    the graph's output order) for a TensorFlow / Keras file. `dynamic` is
    {input: {axis: symbol}}; `input_specs` [(name, shape, dtype)] fix the
    input signature where the file records none; inputs named in
    `inputs_as_nchw` take channels-first arrays (the reference runner still
    takes the graph's layout and moves channels last for TensorFlow)."""
    if not inputs_as_nchw:
        return _convert_file(path, trust_code, input_specs, dynamic, None)
    graph, reference = _convert_file(path, trust_code, input_specs, dynamic, list(inputs_as_nchw))
    moved = [v.name in set(inputs_as_nchw) for v in graph.inputs]

    def channels_last_reference(arrays):
        return reference([np.moveaxis(a, 1, -1) if m else a for m, a in zip(moved, arrays)])
    return graph, channels_last_reference


def _convert_file(path, trust_code, input_specs, dynamic, inputs_as_nchw):
    from irtool.frontends.tf_trace import from_concrete_function, loaded_resources, trace_keras, trace_tf1
    path = os.fspath(path)
    _check_exists(path)
    name = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0] or "model"
    if os.path.isdir(path):
        loaded = load_saved_model(path, trust_code)
        cf = _serving_function(loaded, path, input_specs, dynamic)
        resources, by_handle = loaded_resources(loaded)
        graph = from_concrete_function(cf, name=name, resources=resources, by_handle=by_handle,
                                       dynamic_shapes=dynamic, inputs_as_nchw=inputs_as_nchw)
        if not trust_code:
            _refuse_ops(path, _function_ops(cf), _allowed_ops(), "the serving function runs")
        names = [s.name for s in _tf().nest.flatten(cf.structured_input_signature)]
        kw = bool(cf.structured_input_signature[1])

        def reference(arrays):
            tf = _tf()
            tensors = [tf.constant(a) for a in arrays]
            out = cf(**dict(zip(names, tensors))) if kw else cf(*tensors)
            return _flat_numpy(out)
        return graph, reference
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pb":
        gd = load_graph_def(path)
        inputs = [n.name for n in gd.node if n.op == "Placeholder"]
        consumed = {i.split(":")[0].lstrip("^") for n in gd.node for i in n.input}
        outputs = [n.name for n in gd.node if n.name not in consumed and n.op not in ("NoOp", "Placeholder", "Const",
                                                                                     "Assert", "SaveV2")]
        if dynamic:
            inputs = [n for n in inputs]
        graph = trace_tf1(gd, inputs, outputs, name=name, dynamic_shapes=dynamic, inputs_as_nchw=inputs_as_nchw)
        counts = _op_counts([gd])

        def reference(arrays):
            if not trust_code:
                _refuse_ops(path, counts, _allowed_ops(), "the graph runs")
            tf = _tf()
            g = tf.Graph()
            with g.as_default():
                tf.compat.v1.import_graph_def(gd, name="")
            with tf.compat.v1.Session(graph=g) as sess:
                feeds = {g.get_tensor_by_name(n + ":0"): a for n, a in zip(inputs, arrays)}
                return [np.asarray(r) for r in sess.run([g.get_tensor_by_name(n + ":0") for n in outputs], feeds)]
        return graph, reference
    if ext not in KERAS_EXTS:
        raise FileFormatError(f"{path}: not a TensorFlow model file (.keras, .h5, .pb or a SavedModel directory)")
    model = load_keras(path, trust_code)
    signature = _signature(input_specs, dynamic) if input_specs else None
    try:
        graph = trace_keras(model, input_signature=signature, dynamic_shapes=dynamic, name=name,
                            inputs_as_nchw=inputs_as_nchw)
    except IRToolError:
        raise

    def reference(arrays):
        tf = _tf()
        tensors = [tf.constant(a) for a in arrays]
        struct = getattr(model, "_inputs_struct", None)
        if struct is not None and isinstance(struct, (list, tuple)):
            args = tf.nest.pack_sequence_as(struct, tensors)
        else:
            args = tensors[0] if len(tensors) == 1 else tensors
        return _flat_numpy(model(args, training=False))
    return graph, reference


def _serving_function(loaded, path, input_specs, dynamic):
    sigs = getattr(loaded, "signatures", None) or {}
    if "serving_default" in sigs:
        return sigs["serving_default"]
    if sigs:
        return next(iter(sigs.values()))
    call = getattr(loaded, "__call__", None)
    if call is not None and hasattr(call, "get_concrete_function"):
        try:
            if input_specs:
                return call.get_concrete_function(*_signature(input_specs, dynamic))
            fns = call._list_all_concrete_functions_for_serialization() if hasattr(
                call, "_list_all_concrete_functions_for_serialization") else []
            if len(fns) == 1:
                return fns[0]
            return call.get_concrete_function()
        except Exception as e:  # noqa: BLE001
            raise UnsupportedError(f"{path}: cannot pick a function to convert ({_first_line(e)}); give "
                                   "--input NAME:SHAPE for its arguments") from None
    raise UnsupportedError(f"{path}: the SavedModel has no serving signature and no __call__ function")
