""".irz files: exact round trips, and every way a file can be damaged ends in
irtool.errors.FileFormatError with a message that says what is wrong (never
another exception type). Saving is atomic."""
import hashlib
import json
import math
import os
import struct
import uuid

import ml_dtypes
import numpy as np
import pytest

import irtool
from irtool.errors import ExportError, FileFormatError, IRToolError
from irtool.ir import serialize
from irtool.ir.opdef import REGISTRY, OpDef, register

BF16 = ml_dtypes.bfloat16
PREFIX = len(serialize.MAGIC) + 8 + 32


def rich_graph():
    """Symbolic inputs, params of many dtypes, frozen and trainable, constants
    holding inf/nan/-0.0, tuple/bool/str/int attrs, several outputs."""
    rng = np.random.default_rng(0)
    b = irtool.Builder("rich")
    x = b.input("x", "float32", ("batch", 4))
    b.input("flags", "bool", ("batch", 1))                       # unused input survives too
    w = b.param("w", rng.uniform(-1, 1, (4, 3)).astype(np.float32))
    h = b.param("h", rng.uniform(-1, 1, (3,)).astype(np.float16), trainable=False)
    bf = b.param("bf", rng.uniform(-1, 1, (3,)).astype(BF16), trainable=False)
    i8 = b.param("i8", np.array([[-128, 7], [0, 127]], np.int8))
    flag = b.param("flag", np.array([True, False]), trainable=False)
    s64 = b.param("s64", np.float64(np.pi))
    empty = b.param("empty", np.zeros((0, 3), np.int64))
    y = b.add(b.matmul(x, w), b.cast(h, dtype="float32"))
    y = b.add(y, b.cast(bf, dtype="float32"))
    special = b.const(np.array([np.inf, -np.inf, np.nan, -0.0], np.float32), "float32")
    flat = b.reshape(b.expand(b.unsqueeze(y, axes=(-1,)), shape=("batch", 3, 4)), shape=(-1, 4))
    t = b.transpose(b.add(flat, special), perm=(1, 0))
    r = b.reduce_sum(b.mul(y, 2.5), axes=(1,), keepdims=True)
    ints = b.add(b.cast(i8, dtype="int32"), b.const(np.array([1, 2], np.int32), "int32"))
    c_bool = b.const(np.array([[True], [False]]), "bool")
    c_bf = b.const(np.array([1.5, -2.0], BF16), "bfloat16")
    c_u8 = b.const(np.arange(4, dtype=np.uint8), "uint8")
    return b.build([r, t, ints, flag, x, c_bool, c_bf, c_u8, s64, empty, b.squeeze(r, axes=(1,))])


def test_multi_output_nodes_round_trip():
    if "split" not in REGISTRY:
        pytest.skip("split not registered yet")
    b = irtool.Builder("multi")
    x = b.input("x", "float32", (5, "n"))
    first, second = b.split(x, sizes=(2, 3), axis=0)
    g = b.build([second, b.neg(first), first])
    back = serialize.from_bytes(serialize.to_bytes(g))
    assert str(back) == str(g)
    assert [o.name for o in back.outputs] == [o.name for o in g.outputs]
    xv = np.arange(10, dtype=np.float32).reshape(5, 2)
    for a, c in zip(irtool.run(g, [xv]), irtool.run(back, [xv])):
        assert _bits(a) == _bits(c)
    np.testing.assert_array_equal(irtool.run(back, [xv])[0], xv[2:])


def small_graph():
    b = irtool.Builder("small")
    x = b.input("x", "float32", ("n", 2))
    w = b.param("w", np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    return b.build([b.reduce_sum(b.matmul(x, w), axes=(0,))])


def _x(n=3):
    return np.random.default_rng(n).uniform(-1, 1, (n, 4)).astype(np.float32)


def _bits(a):
    a = np.asarray(a)
    return (a.dtype, a.shape, a.tobytes())


@pytest.fixture
def throwaway_op():
    made = []

    def make():
        name = f"test_irz_op_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return register(OpDef(name, lambda types, attrs: [types[0]]))
    yield make
    for name in made:
        REGISTRY.pop(name, None)


# -- round trips ---------------------------------------------------------------------

def test_round_trip_is_exact(tmp_path):
    g = rich_graph()
    irtool.verify(g)
    path = tmp_path / "rich.irz"
    irtool.save(g, path)
    back = irtool.load(path)
    irtool.verify(back)
    assert str(back) == str(g)
    assert back.name == "rich"
    assert [v.type for v in back.inputs] == [v.type for v in g.inputs]
    assert back.inputs[0].shape == ("batch", 4)
    assert "float32[3*batch,4]" in str(back)
    assert list(back.params) == list(g.params)
    for name, p in g.params.items():
        q = back.params[name]
        assert q.trainable is p.trainable
        assert _bits(q.data) == _bits(p.data), name
        assert q.value.type == p.value.type
    assert [o.name for o in back.outputs] == [o.name for o in g.outputs]
    for n, m in zip(g.nodes, back.nodes):
        assert n.op is m.op and n.attrs.key() == m.attrs.key()
    for n in (1, 5):
        ours = irtool.run(g, [_x(n), np.ones((n, 1), bool)])
        theirs = irtool.run(back, [_x(n), np.ones((n, 1), bool)])
        for a, c in zip(ours, theirs):
            assert _bits(a) == _bits(c)


def test_round_trip_through_bytes_is_stable():
    g = rich_graph()
    data = serialize.to_bytes(g)
    assert data.startswith(serialize.MAGIC)
    assert serialize.to_bytes(serialize.from_bytes(data)) == data


def test_round_trip_of_a_gradient_graph(tmp_path):
    b = irtool.Builder("train")
    x = b.input("x", "float32", ("batch", 4))
    w = b.param("w", np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32))
    frozen = b.param("frozen", np.ones(3, np.float32), trainable=False)
    g = irtool.grad(b.build([b.reduce_sum(b.exp(b.add(b.matmul(x, w), frozen)))]))
    irtool.save(g, tmp_path / "g.irz")
    back = irtool.load(tmp_path / "g.irz")
    assert str(back) == str(g)
    assert back.params["frozen"].trainable is False and back.params["w"].trainable is True
    for a, c in zip(irtool.run(g, [_x()]), irtool.run(back, [_x()])):
        assert _bits(a) == _bits(c)


def test_attrs_of_every_kind_round_trip(throwaway_op):
    op = throwaway_op()
    attrs = {
        "f": 1.5, "neg0": -0.0, "tiny": 5e-324, "inf": math.inf, "ninf": -math.inf, "nan": math.nan,
        "i": -3, "big": 2 ** 62, "s": "h\u00e9llo \"quoted\"", "t": True, "f0": False,
        "tup": (1, (2.5, "a", math.inf), ()), "shape": ("batch", -1, "4*seq"),
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
        "arrs": (np.array([1.5, -0.0], BF16), np.array(True), np.zeros((0, 2), np.float16)),
    }
    b = irtool.Builder()
    x = b.input("x", "float32", (2,))
    b.add_node(op, [x], attrs)
    g = b.build([b.nodes[-1].outputs[0]])
    back = serialize.from_bytes(serialize.to_bytes(g))
    got = back.nodes[0].attrs
    assert sorted(got) == sorted(attrs)

    def same(a, c):
        if isinstance(a, np.ndarray):
            return isinstance(c, np.ndarray) and _bits(a) == _bits(c)
        if isinstance(a, tuple):
            return isinstance(c, tuple) and len(a) == len(c) and all(map(same, a, c))
        if isinstance(a, float) and math.isnan(a):
            return isinstance(c, float) and math.isnan(c)
        return type(a) is type(c) and a == c and (not isinstance(a, float) or
                                                  math.copysign(1, a) == math.copysign(1, c))
    for k, v in attrs.items():
        assert same(v, got[k]), k
    assert str(back) == str(g)


def test_unsavable_attrs_are_reported(throwaway_op, tmp_path):
    op = throwaway_op()
    b = irtool.Builder()
    x = b.input("x", "float32", (2,))
    b.add_node(op, [x], {"what": {"a": 1}})
    with pytest.raises(IRToolError, match="cannot save attribute"):
        irtool.save(b.build([b.nodes[-1].outputs[0]]), tmp_path / "x.irz")
    assert os.listdir(tmp_path) == []


# -- damaged files -------------------------------------------------------------------------

def _header(data):
    (hlen,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[PREFIX:PREFIX + hlen]), data[PREFIX + hlen:]


def _assemble(header_bytes, blob, fix_data_hash=False):
    if fix_data_hash:
        h = json.loads(header_bytes)
        h["data_sha256"] = hashlib.sha256(blob).hexdigest()
        header_bytes = json.dumps(h).encode()
    return (serialize.MAGIC + struct.pack("<Q", len(header_bytes)) +
            hashlib.sha256(header_bytes).digest() + header_bytes + blob)


def _rewrite(data, edit):
    """A file whose checksums are right but whose header says what `edit` made it say."""
    header, blob = _header(data)
    edit(header)
    return _assemble(json.dumps(header).encode(), blob)


def _load_fails(data, needle, tmp_path=None):
    with pytest.raises(FileFormatError) as e:
        serialize.from_bytes(data, "model.irz")
    msg = str(e.value)
    assert msg.startswith("model.irz: "), msg
    assert needle in msg, msg
    assert "\n" not in msg
    return msg


@pytest.fixture
def data():
    return serialize.to_bytes(small_graph())


def test_the_helpers_reproduce_a_valid_file(data):
    assert _rewrite(data, lambda h: None) == _assemble(*_reencoded(data))
    g = serialize.from_bytes(_rewrite(data, lambda h: None))
    assert str(g) == str(small_graph())


def _reencoded(data):
    header, blob = _header(data)
    return json.dumps(header).encode(), blob


def test_empty_and_missing_files(tmp_path):
    _load_fails(b"", "empty")
    with pytest.raises(FileFormatError, match="cannot read .*missing.irz: No such file"):
        irtool.load(tmp_path / "missing.irz")
    (tmp_path / "empty.irz").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty.irz: file is empty"):
        irtool.load(tmp_path / "empty.irz")
    with pytest.raises(FileFormatError, match="cannot read"):
        irtool.load(tmp_path)                                  # a directory


def test_wrong_magic(data):
    _load_fails(b"PK\x03\x04" + data[4:], "not an .irz file")
    _load_fails(b"\x89HDF\r\n\x1a\n" + data[8:], "not an .irz file")
    _load_fails(b"IRZ\x00v001" + data[8:], "unsupported .irz version")
    _load_fails(b"hello", "not an .irz file")


@pytest.mark.parametrize("keep", [3, 8, 12, 16, 40, 47, 48, 60, -40, -1])
def test_truncated_files(data, keep):
    cut = data[:keep] if keep > 0 else data[:len(data) + keep]
    msg = _load_fails(cut, "")
    assert "truncated" in msg or "corrupted" in msg, msg


def test_oversized_header_length(data):
    for hlen in (2 ** 63, 2 ** 64 - 1, serialize.MAX_HEADER + 1):
        _load_fails(data[:8] + struct.pack("<Q", hlen) + data[16:], "exceeds")
    _load_fails(data[:8] + struct.pack("<Q", len(data)) + data[16:], "runs past the end")


def test_flipped_byte_in_data(data):
    bad = bytearray(data)
    bad[-1] ^= 0x40
    _load_fails(bytes(bad), "tensor data is truncated or corrupted")
    _load_fails(data + b"\x00", "tensor data is truncated or corrupted")


def test_flipped_byte_in_header(data):
    (hlen,) = struct.unpack("<Q", data[8:16])
    header = data[PREFIX:PREFIX + hlen]
    for needle in (b'"n"', b'"w"', b"true", b'"small"', b"[0]"):   # a symbol, a name, a flag, ...
        i = PREFIX + header.index(needle) + 1
        bad = bytearray(data)
        bad[i] ^= 0x01
        _load_fails(bytes(bad), "header is corrupted")
    bad = bytearray(data)
    bad[20] ^= 0x01                                                    # in the stored checksum
    _load_fails(bytes(bad), "header is corrupted")


def test_every_single_byte_flip_is_caught(data):
    assert len(data) < 2000
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            try:
                serialize.from_bytes(bytes(bad))
            except FileFormatError:
                continue
            pytest.fail(f"flipping bit {mask:#x} of byte {i} went unnoticed")


def _set(path, value):
    def edit(h):
        target = h
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("path,value,needle", [
    (("tensors", 0, "shape"), [-1, 2], "bad tensor shape"),
    (("tensors", 0, "shape"), [1.5], "bad tensor shape"),
    (("tensors", 0, "shape"), [True, 2], "bad tensor shape"),
    (("tensors", 0, "shape"), "22", "bad tensor shape"),
    (("tensors", 0, "shape"), [2 ** 40, 2 ** 40], "claims 16 bytes"),
    (("tensors", 0, "shape"), [2 ** 70], "claims 16 bytes"),
    (("tensors", 0, "shape"), [3, 2], "claims 16 bytes"),
    (("tensors", 0, "offset"), 1, "past the end"),
    (("tensors", 0, "offset"), -4, "past the end"),
    (("tensors", 0, "offset"), 2 ** 64, "past the end"),
    (("tensors", 0, "offset"), "0", "past the end"),
    (("tensors", 0, "nbytes"), 1000, "past the end"),
    (("tensors", 0, "nbytes"), -16, "past the end"),
    (("tensors", 0, "nbytes"), 8, "claims 8 bytes"),
    (("tensors", 0, "dtype"), "complex64", "unknown dtype 'complex64'"),
    (("tensors", 0, "dtype"), ["float32"], "unknown dtype"),
    (("tensors", 0), {}, "malformed .irz header"),
    (("tensors",), None, "malformed .irz header"),
    (("params", 0, "tensor"), 7, "tensor index 7 out of range"),
    (("params", 0, "tensor"), "0", "out of range"),
    (("params", 0, "trainable"), "yes", "trainable must be true or false"),
    (("params", 0, "name"), 5, "bad name 5"),
    (("params", 0, "name"), "x", "'x' is already used"),
    (("inputs", 0, "shape"), ["bad name!", 2], "bad symbolic dim"),
    (("inputs", 0, "shape"), [-3, 2], "negative dim"),
    (("inputs", 0, "dtype"), "string", "unsupported dtype"),
    (("inputs", 0, "name"), "", "bad name"),
    (("nodes", 0, "op"), "frobnicate", "unknown op 'frobnicate'"),
    (("nodes", 0, "op"), ["matmul"], "unknown op"),
    (("nodes", 0, "inputs"), ["x", "nowhere"], "uses undefined value 'nowhere'"),
    (("nodes", 0, "inputs"), ["x"], "invalid graph"),
    (("nodes", 1, "attrs", "axes"), {"tuple": [5]}, "invalid graph: reduce_sum: axis 5 out of range"),
    (("nodes", 0, "outputs"), ["a", "b"], "lists 2 outputs, op has 1"),
    (("nodes", 0, "outputs"), ["w"], "defined twice"),
    (("nodes", 1, "attrs", "axes"), {"tensor": 99}, "tensor index 99 out of range"),
    (("nodes", 1, "attrs", "axes"), {"weird": 1}, "bad attribute encoding"),
    (("nodes", 1, "attrs", "axes"), [0], "bad attribute encoding (list)"),
    (("nodes", 1, "attrs", "axes"), {"float": "lots"}, "malformed .irz header"),
    (("nodes", 1, "attrs", "axes"), {"tuple": [7]}, "out of range"),
    (("nodes", 1, "attrs"), [], "malformed .irz header"),
    (("outputs",), ["ghost"], "graph output 'ghost' is not defined"),
    (("version",), 2, "unsupported .irz header version"),
    (("format",), "zip", "unsupported .irz header version"),
    (("name",), {"a": 1}, "bad name"),
])
def test_header_claiming_impossible_things(data, path, value, needle):
    _load_fails(_rewrite(data, _set(path, value)), needle)


def test_header_that_is_not_json_or_not_an_object(data):
    _, blob = _header(data)
    _load_fails(_assemble(b"{not json", blob), "malformed .irz header")
    _load_fails(_assemble(b"\xff\xfe{}", blob), "malformed .irz header")
    _load_fails(_assemble(b"[1, 2]", blob), "unsupported .irz header version")
    _load_fails(_assemble(b"[" * 100000 + b"]" * 100000, blob), "malformed .irz header")
    _load_fails(_assemble(b"", blob), "malformed .irz header")


def test_missing_header_fields(data):
    header, blob = _header(data)
    for key in ("inputs", "params", "nodes", "outputs", "tensors", "data_sha256"):
        h = dict(header)
        del h[key]
        _load_fails(_assemble(json.dumps(h).encode(), blob), "")


def test_data_tampering_with_a_matching_checksum_still_loads_typed(data):
    # an attacker who rewrites the data and fixes the checksum gets values
    # into params, but never anything but arrays of the declared dtype and shape
    header, blob = _header(data)
    forged = _assemble(json.dumps(header).encode(), b"\xff" * len(blob), fix_data_hash=True)
    g = serialize.from_bytes(forged)
    assert g.params["w"].data.dtype == np.float32 and g.params["w"].data.shape == (2, 2)


# -- atomic save ----------------------------------------------------------------------------

def test_save_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.irz"
    irtool.save(small_graph(), path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(serialize.os, "replace", broken_replace)
    with pytest.raises(ExportError, match="cannot write .*m.irz: No space left on device"):
        irtool.save(rich_graph(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.irz"]                    # no temp file left behind


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.irz"
    irtool.save(small_graph(), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(serialize.os, "fsync", broken_fsync)
    with pytest.raises(ExportError, match="Input/output error"):
        irtool.save(rich_graph(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.irz"]


def test_save_is_atomic_when_encoding_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.irz"
    irtool.save(small_graph(), path)
    before = path.read_bytes()

    def broken(graph):
        raise KeyboardInterrupt
    monkeypatch.setattr(serialize, "to_bytes", broken)
    with pytest.raises(KeyboardInterrupt):
        irtool.save(rich_graph(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.irz"]


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(ExportError, match="cannot write"):
        irtool.save(small_graph(), tmp_path / "nope" / "m.irz")


def test_save_overwrites_and_loads_back(tmp_path):
    path = tmp_path / "m.irz"
    irtool.save(small_graph(), path)
    irtool.save(rich_graph(), str(path))
    assert irtool.load(str(path)).name == "rich"
    assert os.listdir(tmp_path) == ["m.irz"]
