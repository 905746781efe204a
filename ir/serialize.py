"""The .irz file: a graph as JSON plus raw tensor bytes. No pickle, ever.

Layout: MAGIC (8 bytes) | header length (8 bytes, little endian) | header
JSON (utf-8) | tensor data. The header lists every tensor's dtype, shape,
offset and length and the SHA-256 of the data section, so truncation and
tampering are caught before anything is built. Loading replays every node
through the Builder, so shapes and dtypes are re-derived, not trusted.
"""
import hashlib
import json
import os
import struct
import tempfile

import numpy as np

from irtool.errors import FileFormatError, IRToolError
from irtool.ir.builder import Builder
from irtool.ir.dtypes import DTYPES, np_dtype
from irtool.ir.opdef import REGISTRY

MAGIC = b"IRZ\x00v001"
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


def _index(i, n):
    if not isinstance(i, int) or not 0 <= i < n:
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
    hb = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<Q", len(hb)) + hb + blob


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
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FileFormatError(f"{source}: malformed .irz header ({type(e).__name__}: {e})") from None


def _from_bytes(data):
    if len(data) < 16 or bytes(data[:8]) != MAGIC:
        raise FileFormatError("not an .irz file (bad magic bytes)")
    (hlen,) = struct.unpack("<Q", data[8:16])
    if hlen > MAX_HEADER or 16 + hlen > len(data):
        raise FileFormatError("truncated .irz file (header runs past the end)")
    header = json.loads(bytes(data[16:16 + hlen]))
    if not isinstance(header, dict) or header.get("format") != "irz" or header.get("version") != 1:
        raise FileFormatError("unsupported .irz header version")
    blob = data[16 + hlen:]
    if hashlib.sha256(blob).hexdigest() != header["data_sha256"]:
        raise FileFormatError("tensor data is truncated or corrupted (checksum mismatch)")
    arrays = []
    for e in header["tensors"]:
        if e["dtype"] not in DTYPES:
            raise FileFormatError(f"unknown dtype {e['dtype']!r}")
        shape = tuple(e["shape"])
        if not all(isinstance(d, int) and 0 <= d for d in shape):
            raise FileFormatError(f"bad tensor shape {e['shape']!r}")
        dt = np_dtype(e["dtype"])
        off, nb = e["offset"], e["nbytes"]
        if not (isinstance(off, int) and isinstance(nb, int) and 0 <= off and off + nb <= len(blob)):
            raise FileFormatError("tensor offset/length past the end of the data")
        if nb != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise FileFormatError(f"tensor of shape {list(shape)} claims {nb} bytes")
        arrays.append(np.frombuffer(blob[off:off + nb], dtype=dt).reshape(shape).copy())
    b = Builder(str(header.get("name", "graph")))
    values = {}
    for i in header["inputs"]:
        values[i["name"]] = b.input(i["name"], i["dtype"], tuple(i["shape"]))
    for p in header["params"]:
        values[p["name"]] = b.param(p["name"], arrays[_index(p["tensor"], len(arrays))],
                                    bool(p["trainable"]))
    for n in header["nodes"]:
        if n["op"] not in REGISTRY:
            raise FileFormatError(f"unknown op {n['op']!r}")
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
            b._names.discard(v.name)
            v.name = b._claim(name)
            values[name] = v
    try:
        outputs = [values[o] for o in header["outputs"]]
    except KeyError as e:
        raise FileFormatError(f"graph output {e.args[0]!r} is not defined") from None
    return b.build(outputs)


def save(graph, path):
    """Write graph to `path` atomically (temp file in the same folder + rename)."""
    data = to_bytes(graph)
    atomic_write(path, data)


def atomic_write(path, data):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".irtool-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(path):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileFormatError(f"cannot read {path}: {e.strerror}") from None
    return from_bytes(data, path)
