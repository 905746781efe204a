"""Open any model file the CLI accepts: an IR Graph plus, for framework
files, a reference runner (the source framework itself) for --verify.

Dispatch is by file type. Files that would execute code when loaded
(pickled modules, TorchScript, Keras Lambda layers, SavedModels with ops
beyond what irtool converts) are refused unless `trust_code`.
"""
import os

from irtool.errors import FileFormatError, UnsupportedError

FORMATS = {".irz": "irtool graph", ".onnx": "ONNX model", ".pt2": "PyTorch ExportedProgram",
           ".pt": "PyTorch file", ".pth": "PyTorch file", ".keras": "Keras model",
           ".h5": "Keras HDF5 model", ".hdf5": "Keras HDF5 model", ".pb": "TensorFlow GraphDef",
           "savedmodel": "TensorFlow SavedModel directory"}
TENSORFLOW = (".keras", ".h5", ".hdf5", ".pb", "savedmodel")


def kind_of(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return "savedmodel"
    return os.path.splitext(path)[1].lower()


def open_model(path, trust_code=False, inputs=(), dynamic=None, inputs_as_nchw=None):
    """(graph, reference) for a model file; reference is None for formats
    with no framework to compare against (.irz, .onnx is compared through
    onnxruntime by the caller)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file")
    kind = kind_of(path)
    if kind not in FORMATS:
        raise FileFormatError(f"{path}: unknown model file type {kind or '(no extension)'!r}; "
                              f"supported: {', '.join(FORMATS)}")
    if kind in TENSORFLOW:
        try:
            _import_tensorflow_quietly()
        except ImportError:
            raise UnsupportedError(f"{path}: reading TensorFlow/Keras files needs tensorflow: "
                                   "pip install 'irtool[tf]'") from None
        from irtool.frontends.tf_files import convert_file as convert_tf
        return convert_tf(path, trust_code=trust_code, input_specs=inputs, dynamic=dynamic,
                          inputs_as_nchw=inputs_as_nchw)
    if inputs_as_nchw:
        raise UnsupportedError("--inputs-as-nchw applies to TensorFlow/Keras files (their inputs are "
                               "channels-last); this model's inputs already are what it declares")
    if os.path.getsize(path) == 0:
        raise FileFormatError(f"{path}: file is empty")
    if kind == ".irz":
        from irtool.ir.serialize import load
        return load(path), None
    if kind == ".onnx":
        from irtool.frontends.onnx_import import import_onnx
        return import_onnx(path), None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UnsupportedError(f"{path}: reading PyTorch files needs torch: pip install torch") from None
    from irtool.frontends.torch_files import convert_file
    return convert_file(path, trust_code=trust_code, input_specs=inputs, dynamic=dynamic)


def _import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up logging (absl, oneDNN notices)
    kept off stderr: it writes to the file descriptor directly, so silence fd 2
    for the duration of the import only."""
    import sys
    if "tensorflow" in sys.modules or os.environ.get("IRTOOL_DEBUG"):
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
