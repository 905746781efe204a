"""Open any model file the CLI accepts and return an IR Graph.

Dispatch is by file type: `.irz` (irtool's own format) and `.onnx`. Files
that would execute code when loaded are never opened here without trust.
"""
import os

from irtool.errors import FileFormatError, UnsupportedError

FORMATS = {".irz": "irtool graph", ".onnx": "ONNX model"}
PLANNED = {".pt": "PyTorch", ".pt2": "PyTorch ExportedProgram", ".keras": "Keras",
           ".h5": "Keras HDF5", ".pb": "TensorFlow"}


def kind_of(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return "savedmodel"
    return os.path.splitext(path)[1].lower()


def open_model(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file")
    kind = kind_of(path)
    if kind == "savedmodel" or kind in PLANNED:
        what = "TensorFlow SavedModel" if kind == "savedmodel" else PLANNED[kind]
        raise UnsupportedError(f"{path}: {what} files are not supported by this version yet; "
                               f"supported: {', '.join(FORMATS)}")
    if kind not in FORMATS:
        raise FileFormatError(f"{path}: unknown model file type {kind or '(no extension)'!r}; "
                              f"supported: {', '.join(FORMATS)}")
    if os.path.getsize(path) == 0:
        raise FileFormatError(f"{path}: file is empty")
    if kind == ".irz":
        from irtool.ir.serialize import load
        return load(path)
    from irtool.frontends.onnx_import import import_onnx
    return import_onnx(path)
