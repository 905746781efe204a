"""The .irz file: a graph as JSON plus raw tensor bytes. No pickle, ever.

Layout: MAGIC (8 bytes) | header length (8 bytes, little endian) | SHA-256
of the header (32 bytes) | header JSON (utf-8) | tensor data. The header
lists every tensor's dtype, shape, offset and length and the SHA-256 of the
data section, so truncation and tampering anywhere are caught before
anything is built. Loading replays every node through the Builder, so
shapes and dtypes are re-derived, not trusted. Every failure to load is a
FileFormatError.
"""
import hashlib
import json
import math
import os
import stat
import struct
import tempfile

import numpy as np

from irtool.errors import ExportError, FileFormatError, IRToolError
from irtool.ir.builder import Builder
from irtool.ir.dtypes import DTYPES, np_dtype
from irtool.ir.opdef import REGISTRY

MAGIC = b"IRZ\x00v002"          # v002: the header has its own checksum
MAX_HEADER = 256 << 20


def _encode_attr(v, tensors):
    if isinstance(v, np.ndarray):
        tensors.append(v)
        return {"tensor": len(tensors) - 1}
    if isinstance(v, tuple):
        return {"tuple": [_encode_attr(x, tensors) for x in v]}
    if isinstance(v, float) and not np.isfinite(v):
        return {"float": repr(v)}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise IRToolError(f"cannot save attribute value {v!r} of type {type(v).__name__}")


def _decode_attr(v, arrays):
    if isinstance(v, dict):
        if "tensor" in v:
            return arrays[_index(v["tensor"], len(arrays))]
        if "tuple" in v:
            return tuple(_decode_attr(x, arrays) for x in v["tuple"])
        if "float" in v:
            return float(v["float"])
        raise FileFormatError(f"bad attribute encoding {sorted(v)}")
    if isinstance(v, list):
        raise FileFormatError("bad attribute encoding (list)")
    return v


def _name(x):
    if not isinstance(x, str) or not x:
        raise FileFormatError(f"bad name {x!r} (names are non-empty strings)")
    return x


def _index(i, n):
    if type(i) is not int or not 0 <= i < n:
        raise FileFormatError(f"tensor index {i!r} out of range")
    return i


def to_bytes(graph):
    tensors = []
    params = []
    for name, p in graph.params.items():
        tensors.append(p.data)
        params.append({"name": name, "tensor": len(tensors) - 1, "trainable": p.trainable})
    nodes = []
    for n in graph.nodes:
        nodes.append({"op": n.op.name, "inputs": [v.name for v in n.inputs],
                      "outputs": [o.name for o in n.outputs],
                      "attrs": {k: _encode_attr(v, tensors) for k, v in n.attrs.items()}})
    entries, offset, chunks = [], 0, []
    for t in tensors:
        data = np.ascontiguousarray(t).tobytes()
        entries.append({"dtype": _dtype_name(t.dtype), "shape": list(t.shape),
                        "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    blob = b"".join(chunks)
    header = {
        "format": "irz", "version": 1, "name": graph.name,
        "inputs": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in graph.inputs],
        "params": params, "nodes": nodes, "outputs": [v.name for v in graph.outputs],
        "tensors": entries, "data_sha256": hashlib.sha256(blob).hexdigest(),
    }
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return MAGIC + struct.pack("<Q", len(hb)) + hashlib.sha256(hb).digest() + hb + blob


def _dtype_name(dt):
    from irtool.ir.dtypes import check_dtype
    return check_dtype(dt)


def from_bytes(data, source="<bytes>"):
    try:
        return _from_bytes(memoryview(data))
    except FileFormatError as e:
        raise FileFormatError(f"{source}: {e}") from None
    except IRToolError as e:
        raise FileFormatError(f"{source}: invalid graph: {e}") from None
    except RecursionError:
        raise FileFormatError(f"{source}: malformed .irz header (nested too deeply)") from None
    except Exception as e:  # noqa: BLE001 - a loader reports bad files as FileFormatError, always
        raise FileFormatError(f"{source}: malformed .irz header ({type(e).__name__}: {e})") from None


_PREFIX = len(MAGIC) + 8 + 32      # magic, header length, header SHA-256


def _from_bytes(data):
    if len(data) == 0:
        raise FileFormatError("file is empty")
    head = bytes(data[:len(MAGIC)])
    if head != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise FileFormatError(f"truncated .irz file ({len(data)} bytes)")
        if head[:4] == MAGIC[:4]:
            raise FileFormatError(f"unsupported .irz version {head[4:]!r}; this irtool reads "
                                  f"{MAGIC[4:].decode()}")
        raise FileFormatError("not an .irz file (bad magic bytes)")
    if len(data) < _PREFIX:
        raise FileFormatError(f"truncated .irz file ({len(data)} bytes, shorter than its fixed prefix)")
    (hlen,) = struct.unpack("<Q", data[8:16])
    if hlen > MAX_HEADER:
        raise FileFormatError(f"header length {hlen} exceeds the {MAX_HEADER}-byte limit (corrupted file)")
    if _PREFIX + hlen > len(data):
        raise FileFormatError(f"truncated .irz file (header of {hlen} bytes runs past the end "
                              f"of the {len(data)}-byte file)")
    hb = bytes(data[_PREFIX:_PREFIX + hlen])
    if hashlib.sha256(hb).digest() != bytes(data[16:_PREFIX]):
        raise FileFormatError("header is corrupted (checksum mismatch)")
    header = json.loads(hb)
    if not isinstance(header, dict) or header.get("format") != "irz" or header.get("version") != 1:
        raise FileFormatError("unsupported .irz header version")
    blob = data[_PREFIX + hlen:]
    if hashlib.sha256(blob).hexdigest() != header["data_sha256"]:
        raise FileFormatError("tensor data is truncated or corrupted (checksum mismatch)")
    arrays = []
    for e in header["tensors"]:
        if e["dtype"] not in DTYPES:
            raise FileFormatError(f"unknown dtype {e['dtype']!r}")
        shape = tuple(e["shape"])
        if not all(type(d) is int and 0 <= d for d in shape):
            raise FileFormatError(f"bad tensor shape {e['shape']!r}")
        dt = np_dtype(e["dtype"])
        off, nb = e["offset"], e["nbytes"]
        if not (type(off) is int and type(nb) is int and 0 <= off and 0 <= nb and off + nb <= len(blob)):
            raise FileFormatError(f"tensor offset/length ({off!r}, {nb!r}) past the end of the "
                                  f"{len(blob)}-byte data section")
        if nb != math.prod(shape) * dt.itemsize:
            raise FileFormatError(f"tensor of shape {list(shape)} claims {nb} bytes")
        arrays.append(np.frombuffer(blob[off:off + nb], dtype=dt).reshape(shape).copy())
    b = Builder(_name(header.get("name", "graph")))
    values = {}
    for i in header["inputs"]:
        values[i["name"]] = b.input(_name(i["name"]), i["dtype"], tuple(i["shape"]))
    for p in header["params"]:
        if not isinstance(p["trainable"], bool):
            raise FileFormatError(f"param {p['name']!r}: trainable must be true or false")
        values[p["name"]] = b.param(_name(p["name"]), arrays[_index(p["tensor"], len(arrays))],
                                    p["trainable"])
    for n in header["nodes"]:
        if not isinstance(n["op"], str) or n["op"] not in REGISTRY:
            raise FileFormatError(f"unknown op {n['op']!r} (not in this irtool's op registry)")
        try:
            ins = [values[v] for v in n["inputs"]]
        except KeyError as e:
            raise FileFormatError(f"node {n['op']} uses undefined value {e.args[0]!r}") from None
        attrs = {k: _decode_attr(v, arrays) for k, v in n["attrs"].items()}
        outs = b.add_node(n["op"], ins, attrs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if len(outs) != len(n["outputs"]):
            raise FileFormatError(f"node {n['op']} lists {len(n['outputs'])} outputs, op has {len(outs)}")
        for v, name in zip(outs, n["outputs"]):
            if not b.rename(v, _name(name)):
                raise FileFormatError(f"value name {name!r} is defined twice")
            values[name] = v
    try:
        outputs = [values[o] for o in header["outputs"]]
    except KeyError as e:
        raise FileFormatError(f"graph output {e.args[0]!r} is not defined") from None
    return b.build(outputs)


def save(graph, path):
    """Write graph to `path` atomically (temp file in the same folder + rename):
    on any failure an existing file at `path` is left as it was."""
    atomic_write(path, to_bytes(graph))


def atomic_write(path, data):
    """Write bytes to `path` through a temp file in the same folder and a rename:
    a reader never sees half a file, and on failure (disk full, read-only
    folder...) no temp file is left and an existing file at `path` is left as
    it was. OSErrors become ExportError; the file gets the usual permissions
    (an existing file's mode, else 0o666 less the umask), not mkstemp's 0o600."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".irtool-", dir=folder)
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load(path):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileFormatError(f"cannot read {path}: {e.strerror}") from None
    return from_bytes(data, path)
