"""ONNX -> IR: `import_onnx(path_or_model)` reads an ONNX model into a Graph.

The op table lives in `frontends/onnx_ops.py` (`OPS = {op_type: fn(ctx, node)}`);
this module drives it. What a reader must know:

- Shape-like inputs (Reshape's shape, Slice's starts, Pad's pads, TopK's K...)
  become IR attributes, so they must be known at import time. `ctx.static()`
  evaluates a value from initializers, Constant nodes and a small constant
  propagation over the IR built so far (numpy kernels for numbers, a symbolic
  evaluator for Shape/Gather/Concat/... of symbolic dims). A truly dynamic
  shape input is an UnsupportedError naming the node.
- Every unsupported op type is reported at once, with counts, before anything
  is built. Standard ops without a table entry that ONNX defines as functions
  (SwiGLU, HannWindow, CenterCropPad...) are imported through their function
  bodies, each body node at the body's opset; If with an import-time
  condition imports the chosen branch inline, and Loop with an import-time
  trip count and condition is unrolled (each iteration's body inline).
- External tensor data is read only from regular files inside the model's own
  folder (no absolute paths, no '..', no symlinks, offsets inside the file).
- Graph inputs keep their names and their dim_params (as symbolic dims);
  initializers become params under their ONNX names (trainable when float);
  values keep their ONNX names where the IR produced them.
"""
import os
import re
import stat

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from irtool.errors import FileFormatError, IRToolError, UnsupportedError
from irtool.ir.builder import Builder
from irtool.ir.dtypes import check_dtype, is_float, np_dtype
from irtool.ir.graph import Value
from irtool.ir.transform import prune

ONNX_DTYPES = {
    TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16", TensorProto.INT8: "int8", TensorProto.INT16: "int16",
    TensorProto.INT32: "int32", TensorProto.INT64: "int64", TensorProto.UINT8: "uint8",
    TensorProto.BOOL: "bool",
}
DEFAULT_DOMAINS = ("", "ai.onnx")


def ir_dtype(elem_type, what):
    """IR dtype string of an ONNX TensorProto element type."""
    try:
        return ONNX_DTYPES[elem_type]
    except KeyError:
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        raise UnsupportedError(f"{what}: ONNX element type {name} has no irtool dtype "
                               f"(supported: {', '.join(sorted(set(ONNX_DTYPES.values())))})") from None


class DynamicInputError(UnsupportedError):
    """An input that must be known at import time (a shape, axes, pads...) is
    computed at run time. `value_names`: the model's ONNX values it depends
    on (the node's input, or the inputs of the function op it came from)."""

    def __init__(self, message, value_names):
        super().__init__(message)
        self.value_names = tuple(value_names)


# -- loading -------------------------------------------------------------------

def load_model(path_or_model):
    """(ModelProto, folder for external data or None)."""
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, None
    if isinstance(path_or_model, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_model_from_string(bytes(path_or_model)), None
        except Exception as e:  # noqa: BLE001 - protobuf raises several types
            raise FileFormatError(f"bytes are not an ONNX model: {e}") from None
    path = os.fspath(path_or_model)
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{path} is not a readable ONNX model: {e}") from None
    return model, os.path.dirname(os.path.abspath(path))


def tensor_to_array(t, base_dir, what=None):
    """numpy array of a TensorProto, reading external data safely."""
    what = what or f"tensor {t.name!r}"
    if t.data_location == TensorProto.EXTERNAL:
        arr, copy = _with_external_data(t, base_dir, what)
        if arr is not None:
            ir_dtype(t.data_type, what)
            return arr
        t = copy
    ir_dtype(t.data_type, what)
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001
        raise FileFormatError(f"{what}: cannot decode tensor data: {e}") from None
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


# element types whose external bytes are the little-endian array itself: read straight
# into a numpy array (no bytes object, no TensorProto copy: a 2 GiB tensor costs 2 GiB)
_PLAIN = {TensorProto.FLOAT: "<f4", TensorProto.DOUBLE: "<f8", TensorProto.FLOAT16: "<f2",
          TensorProto.INT8: "i1", TensorProto.INT16: "<i2", TensorProto.INT32: "<i4", TensorProto.INT64: "<i8",
          TensorProto.UINT8: "u1"}


def _plain_buffer(t, length):
    """An empty numpy array to read t's external bytes into, or None where the
    bytes need onnx's decoding (other types, or a length that does not fit)."""
    code = _PLAIN.get(t.data_type)
    dims = list(t.dims)
    if code is None or any(d < 0 for d in dims):
        return None
    dtype = np.dtype(code)
    n = int(np.prod(dims, dtype=object)) if dims else 1
    if not dtype.isnative or n * dtype.itemsize != length:
        return None                    # big-endian host, or sizes that onnx will report on
    return np.empty(dims, dtype)


def _with_external_data(t, base_dir, what):
    """(array, None) for plain numeric data, else (None, a copy of t holding the
    bytes); both read only from a regular file inside base_dir."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location")
    if not location:
        raise FileFormatError(f"{what}: external data without a location")
    if not isinstance(location, str):
        # protobuf hands a string field that is not valid UTF-8 over as bytes
        raise FileFormatError(f"{what}: external data location {bytes(location)!r} is not valid UTF-8")
    if base_dir is None:
        raise FileFormatError(f"{what}: its data is in external file {location!r}, but the model "
                              "was not given as a path; pass the .onnx path instead")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise FileFormatError(f"{what}: external data location {location!r} is an absolute path; "
                              "only files inside the model's folder are read")
    if "\0" in location:
        raise FileFormatError(f"{what}: external data location {location!r} holds a NUL byte")
    parts = [p for p in re.split(r"[\\/]", location) if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise FileFormatError(f"{what}: external data location {location!r} leaves the model's folder")
    path = base_dir
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            raise FileFormatError(f"{what}: external data file {location!r} is missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise FileFormatError(f"{what}: external data path {location!r} goes through a symlink "
                                  f"({'/'.join(parts[:i + 1])}); refusing to follow it")
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise FileFormatError(f"{what}: external data path {location!r} is not inside a folder")
        if last and not stat.S_ISREG(st.st_mode):
            raise FileFormatError(f"{what}: external data {location!r} is not a regular file")
        if last and st.st_nlink > 1:
            # a hard link can name any file on the device from inside the folder
            raise FileFormatError(f"{what}: external data {location!r} is a hard link (it has "
                                  f"{st.st_nlink} names); refusing to read it")
    size = st.st_size
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") not in (None, "") else size - offset
    except ValueError:
        raise FileFormatError(f"{what}: bad offset/length in external data info") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise FileFormatError(f"{what}: external data range offset={offset} length={length} is past "
                              f"the end of {location!r} ({size} bytes)")
    arr = _plain_buffer(t, length)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise FileFormatError(f"{what}: external data {location!r} is not a regular file")
            f.seek(offset)
            if arr is None:
                data = f.read(length)
                got = len(data)
            else:
                got = _read_into(f, memoryview(arr.reshape(-1)).cast("B"))
    except OSError as e:
        raise FileFormatError(f"{what}: cannot read external data {location!r}: {e.strerror}") from None
    if got != length:
        raise FileFormatError(f"{what}: external data {location!r} is truncated")
    if arr is not None:
        return arr, None
    out = TensorProto()
    out.CopyFrom(t)
    del out.external_data[:]
    out.data_location = TensorProto.DEFAULT
    out.raw_data = data
    return None, out


def _read_into(f, view):
    """Fill view from file f in 1 GiB reads; the number of bytes read (short at EOF)."""
    got = 0
    while got < len(view):
        n = f.readinto(view[got:got + (1 << 30)])
        if not n:
            break
        got += n
    return got


# -- the import context ------------------------------------------------------------

class ImportContext:
    """What op handlers see: the Builder `b`, the ONNX opset, and helpers to
    read inputs, attributes and import-time constants."""

    def __init__(self, model, base_dir):
        self.model = model
        self.graph = model.graph
        self.base_dir = base_dir
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)
        self.b = Builder(model.graph.name or "onnx")
        self.values = {}          # ONNX name -> IR Value
        self._known = {}          # id(Value) -> ndarray | None (memo of static())
        self._kind = {}           # id(Value) -> CONST | PARAM | DYNAMIC (what it is computed from)
        self._unk = 0
        self._dims = {}

    # -- inputs -------------------------------------------------------------
    def value(self, node, i):
        """IR Value of the node's i-th input, or None when omitted."""
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        try:
            return self.values[name]
        except KeyError:
            raise FileFormatError(f"{describe(node)}: input {name!r} is not defined before use") from None

    def inputs(self, node):
        return [self.value(node, i) for i in range(len(node.input))]

    # -- import-time constants -------------------------------------------------
    def static(self, v):
        """The value of IR Value v when it is known at import time (params,
        constants, and anything computed from them or from static shapes);
        an ndarray (dtype object when it holds symbolic dims) or None."""
        if v is None:
            return None
        key = id(v)
        if key in self._known:
            return self._known[key]
        stack = [v]
        while stack:               # iterative post-order: deep graphs must not recurse
            cur = stack[-1]
            if id(cur) in self._known:
                stack.pop()
                continue
            p = cur.producer
            if p is None:
                param = self.b.params.get(cur.name)
                self._known[id(cur)] = param.data if param is not None and param.value is cur else None
                stack.pop()
                continue
            if p.op.name == "shape_of":         # known from the type, not the value
                shape = p.inputs[0].shape
                self._known[id(cur)] = _dims_array(shape)
                stack.pop()
                continue
            todo = [x for x in p.inputs if id(x) not in self._known]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            self._evaluate(p)
        return self._known[key]

    def _evaluate(self, node):
        args = [self._known[id(x)] for x in node.inputs]
        result = None
        if all(a is not None for a in args):
            try:
                result = evaluate_node(node, [np.asarray(a) for a in args])
            except Exception:  # noqa: BLE001 - folding failed: treat as run-time value
                result = None
        if result is None:
            result = (None,) * len(node.outputs)
        elif len(node.outputs) == 1:
            result = (result,)
        for o, r in zip(node.outputs, result):
            self._known[id(o)] = r

    def const_input(self, node, i, what=None):
        """ndarray of input i (must be known at import time; symbolic dims allowed)."""
        v = self.value(node, i)
        if v is None:
            return None
        arr = self.static(v)
        if arr is None:
            raise DynamicInputError(
                f"{describe(node)}: input {i} ({what or node.input[i]!r}) is computed at run time; "
                "irtool needs it known at import time (from an initializer, a Constant or static shapes)",
                (node.input[i],))
        return arr

    def ints_input(self, node, i, what=None):
        """Tuple of python ints (or symbolic dim strings) for a 0-/1-D int input."""
        arr = self.const_input(node, i, what)
        if arr is None:
            return None
        return tuple(x if isinstance(x, str) else int(x) for x in np.asarray(arr).reshape(-1).tolist())

    def scalar_input(self, node, i, what=None):
        arr = self.const_input(node, i, what)
        if arr is None:
            return None
        arr = np.asarray(arr)
        if arr.size != 1:
            raise UnsupportedError(f"{describe(node)}: input {i} must hold one value, got shape {list(arr.shape)}")
        return arr.reshape(()).item()

    # -- attributes ---------------------------------------------------------
    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return self._attr_value(node, a)
        return default

    def _attr_value(self, node, a):
        A = onnx.AttributeProto
        if a.type == A.FLOAT:
            return float(a.f)
        if a.type == A.INT:
            return int(a.i)
        if a.type == A.STRING:
            return a.s.decode("utf-8", "replace")
        if a.type == A.FLOATS:
            return tuple(float(x) for x in a.floats)
        if a.type == A.INTS:
            return tuple(int(x) for x in a.ints)
        if a.type == A.STRINGS:
            return tuple(s.decode("utf-8", "replace") for s in a.strings)
        if a.type == A.TENSOR:
            return tensor_to_array(a.t, self.base_dir, f"{describe(node)} attribute {a.name!r}")
        if a.type == A.GRAPH:
            return a.g
        if a.type == A.SPARSE_TENSOR:
            raise UnsupportedError(f"{describe(node)}: sparse tensor attribute {a.name!r} is not supported")
        raise UnsupportedError(f"{describe(node)}: attribute {a.name!r} of type "
                               f"{A.AttributeType.Name(a.type)} is not supported")

    # -- graph leaves -------------------------------------------------------
    def dim(self, d):
        kind = d.WhichOneof("value")
        if kind == "dim_value":
            return int(d.dim_value)
        if kind == "dim_param" and d.dim_param:
            return self._sym_name(d.dim_param)
        name = f"unk{self._unk}"
        self._unk += 1
        while name in self._dims.values():
            name = f"unk{self._unk}"
            self._unk += 1
        return name

    def _sym_name(self, param):
        if param not in self._dims:
            name = re.sub(r"[^A-Za-z0-9_.]", "_", param)
            if not re.match(r"^[A-Za-z_]", name):
                name = "d_" + name
            base, i = name, 0
            while name in self._dims.values():
                i += 1
                name = f"{base}_{i}"
            self._dims[param] = name
        return self._dims[param]


# -- import-time evaluation ------------------------------------------------------------
#
# Values known at import time are numpy arrays; shape vectors that hold symbolic
# dims are object arrays mixing ints and dim strings. Numeric nodes run through
# the numpy kernels; object arrays go through the few ops shape arithmetic uses.

FOLD_LIMIT = 1 << 20      # elements: never fold past this (it is only for shapes)


def _dims_array(shape):
    if all(isinstance(d, int) for d in shape):
        return np.array(shape, dtype=np.int64)
    out = np.empty(len(shape), dtype=object)
    out[:] = list(shape)
    return out


def _settle(arr, dtype):
    """Object arrays without symbols become plain numeric arrays; results that
    numpy turned into str arrays go back to object arrays."""
    if isinstance(arr, str):
        arr = np.array(arr, dtype=object)
    arr = np.asarray(arr)
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    if arr.dtype == object and not any(isinstance(x, str) for x in arr.reshape(-1)):
        return arr.astype(np_dtype(dtype))
    return arr


def _sym_mul(a, c):
    from irtool.ir.shapes import mul_dims
    return mul_dims(a, c)


def _sym_div(a, c):
    from irtool.ir.shapes import div_dims
    if isinstance(a, int) and isinstance(c, int):
        if c == 0:
            return None
        q = abs(a) // abs(c)           # ONNX integer Div truncates toward zero
        return q if (a < 0) == (c < 0) else -q
    return div_dims(a, c)


def _sym_add(a, c):
    from irtool.ir.ops.shape_ops import offset_dim
    if isinstance(a, int) and isinstance(c, int):
        return a + c
    if isinstance(c, int):
        return offset_dim(a, c)         # "(seq+1)": an offset the IR can evaluate
    if isinstance(a, int):
        return offset_dim(c, a)
    return None


def _sym_sub(a, c):
    from irtool.ir.ops.shape_ops import offset_dim
    if isinstance(a, int) and isinstance(c, int):
        return a - c
    if a == c:
        return 0
    if isinstance(c, int):
        return offset_dim(a, -c)
    return None


def _sym_eq(a, c):
    if isinstance(a, int) and isinstance(c, int):
        return a == c
    if a == c:
        return True
    if (isinstance(a, int) and a < 0) or (isinstance(c, int) and c < 0):
        return False           # dims are never negative
    return None


def _sym_max(a, c):
    if isinstance(a, int) and isinstance(c, int):
        return max(a, c)
    if a == c:
        return a
    if a in (0, 1) or (isinstance(a, int) and a < 0):
        return c               # torch exports max(dim, 1) / max(dim, 0)
    if c in (0, 1) or (isinstance(c, int) and c < 0):
        return a
    if isinstance(a, str) and isinstance(c, str):
        # shape code takes max(d1, d2) to broadcast two dims (einsum batch axes);
        # like ir.shapes.broadcast, trust them to agree (the runtime checks)
        return a
    return None


_SYM_BINARY = {"mul": _sym_mul, "div": _sym_div, "add": _sym_add, "sub": _sym_sub, "eq": _sym_eq,
               "maximum": _sym_max}


def evaluate_node(node, args):
    """Output array(s) of IR node for known input arrays, or None."""
    from irtool.runtime.kernels import KERNELS
    name = node.op.name
    if sum(a.size for a in args) > FOLD_LIMIT:
        return None
    if not any(a.dtype == object for a in args):
        kernel = KERNELS.get(node.op)
        if kernel is None:
            return None
        attrs = dict(node.attrs)
        for key in node.op.shape_attrs:
            val = attrs.get(key)
            if isinstance(val, str) or (isinstance(val, tuple) and any(isinstance(d, str) for d in val)):
                return None
        out = kernel(*args, **attrs)
        return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)
    dtype = node.outputs[0].dtype
    if name in _SYM_BINARY:
        fn = _SYM_BINARY[name]
        a, c = np.broadcast_arrays(*[x.astype(object) for x in args])
        flat = [fn(x if isinstance(x, str) else int(x), y if isinstance(y, str) else int(y))
                for x, y in zip(a.reshape(-1), c.reshape(-1))]
        if any(v is None for v in flat):
            return None
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return _settle(out.reshape(a.shape), dtype)
    if name == "cast":
        from irtool.ir.dtypes import is_int
        return args[0].copy() if is_int(dtype) else None
    if name == "reduce_prod" and args[0].ndim == 1 and node.attrs.get("axes") in (None, (0,), (-1,)):
        from irtool.ir.shapes import mul_dims
        out = np.empty((), dtype=object)
        out[()] = mul_dims(*args[0].tolist()) if args[0].size else 1
        if node.attrs.get("keepdims", False):
            out = out.reshape(1)
        return _settle(out, dtype)
    if name in ("gather", "concat", "unsqueeze", "squeeze", "reshape", "slice", "expand", "where",
                "transpose", "tile", "flip", "constant"):
        kernel = KERNELS.get(node.op)
        if kernel is None:
            return None
        out = kernel(*args, **dict(node.attrs))
        return _settle(np.asarray(out), dtype)
    return None


CONST, PARAM, DYNAMIC = 0, 1, 2
EAGER_FOLD_LIMIT = 4096   # elements: constant results up to this size become constants


def _kind_of(ctx, v):
    k = ctx._kind.get(id(v))
    if k is None:
        k = PARAM if v.producer is None and v.name in ctx.b.params else DYNAMIC
    return k


def _fold_new(ctx, node, start, outs):
    """Replace outputs that only depend on constants (and static shapes) by
    constants, so shape arithmetic does not survive into the graph."""
    b = ctx.b
    for n in b.nodes[start:]:
        if n.op.name in ("constant", "shape_of"):
            kind = CONST
        else:
            kind = max((_kind_of(ctx, v) for v in n.inputs), default=CONST)
        for o in n.outputs:
            ctx._kind[id(o)] = kind
    new = {id(o) for n in b.nodes[start:] for o in n.outputs}
    out = []
    for v in outs:
        if (v is not None and id(v) in new and ctx._kind.get(id(v)) == CONST
                and v.producer.op.name != "constant"):
            arr = ctx.static(v)
            if arr is not None and arr.dtype != object and arr.size <= EAGER_FOLD_LIMIT:
                c = b.const(np.asarray(arr).astype(np_dtype(v.dtype), copy=False), v.dtype)
                ctx._kind[id(c)] = CONST
                ctx._known[id(c)] = ctx._known[id(v)]
                v = c
        out.append(v)
    return out


def describe(node):
    """How error messages name an ONNX node."""
    if node.name:
        return f"{node.op_type} node {node.name!r}"
    if node.output:
        return f"{node.op_type} node (output {node.output[0]!r})"
    return f"{node.op_type} node"


def walk_nodes(nodes):
    """The nodes and, recursively, those of their subgraph attributes (If branches, Loop bodies)."""
    for n in nodes:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from walk_nodes(a.g.node)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from walk_nodes(g.node)


def _opset_of(imports):
    return next((o.version for o in imports if o.domain in DEFAULT_DOMAINS), None)


def _schema(op_type, opset):
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except Exception:  # noqa: BLE001 - SchemaError: no such op at this opset
        return None


def _plain_function(op_type, opset):
    """FunctionProto of a default-domain op that ONNX defines as a function
    (not depending on input types), for the model's opset; or None."""
    schema = _schema(op_type, opset)
    if schema is None:
        return None
    versions = [v for v in schema.function_opset_versions if v <= opset]
    if not versions:
        return None
    fp = onnx.FunctionProto()
    fp.ParseFromString(schema.get_function_with_opset_version(max(versions)))
    return fp


def _has_typed_function(op_type, opset):
    schema = _schema(op_type, opset)
    return schema is not None and any(v <= opset for v in schema.context_dependent_function_opset_versions)


_EXPANDABLE = {}


def expandable(op_type, opset, table, depth=0):
    """Whether an op without a table entry can be imported through the
    function body its ONNX schema defines (recursively, for the body ops)."""
    key = (op_type, opset)
    if key not in _EXPANDABLE:
        _EXPANDABLE[key] = False            # cycles and deep nesting: not expandable
        ok = False
        fp = _plain_function(op_type, opset) if depth < 8 else None
        if fp is not None:
            body_opset = _opset_of(fp.opset_import) or opset
            ok = all(n.domain in DEFAULT_DOMAINS and
                     (n.op_type in table or expandable(n.op_type, body_opset, table, depth + 1))
                     for n in walk_nodes(fp.node))
        elif depth < 8 and _has_typed_function(op_type, opset):
            ok = True                       # the body depends on input types: checked when expanded
        _EXPANDABLE[key] = ok
    return _EXPANDABLE[key]


def _typed_body(node, opset, types):
    """FunctionProto of an op whose ONNX function body depends on its input
    types (TypeProtos, one per input), or None."""
    schema = _schema(node.op_type, opset)
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset] if schema else []
    if not versions:
        return None
    fp = onnx.FunctionProto()
    fp.ParseFromString(schema.get_context_dependent_function_with_opset_version(
        max(versions), _with_defaults(node, schema).SerializeToString(),
        [t.SerializeToString() for t in types]))
    return fp


def _value_types(model):
    """ONNX value name -> TypeProto, from the graph and shape inference."""
    types = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a best effort here
        inferred = model
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types.setdefault(vi.name, vi.type)
    for t in g.initializer:
        tp = onnx.TypeProto()
        tp.tensor_type.elem_type = t.data_type
        tp.tensor_type.shape.SetInParent()
        for d in t.dims:
            tp.tensor_type.shape.dim.add().dim_value = d
        types.setdefault(t.name, tp)
    return types


def unsupported_ops(model):
    """{op type: count} of the nodes import_onnx cannot map (custom domains
    appear as "domain::Op"); empty when every node is importable. Ops that
    ONNX defines as functions count as mapped when their body ops are."""
    from irtool.frontends.onnx_ops import OPS
    opset = _opset_of(model.opset_import) or 1
    counts = {}
    types = None
    for n in walk_nodes(model.graph.node):
        key = n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}"
        if n.domain in DEFAULT_DOMAINS and n.op_type in OPS:
            continue
        if n.domain in DEFAULT_DOMAINS and expandable(n.op_type, opset, OPS):
            if _plain_function(n.op_type, opset) is not None:
                continue
            if types is None:
                types = _value_types(model)
            try:
                fp = _typed_body(n, opset, [types.get(i, onnx.TypeProto()) for i in n.input])
            except Exception:  # noqa: BLE001 - types unknown here: checked when expanded
                continue
            body_opset = _opset_of(fp.opset_import) or opset
            inner = [m.op_type for m in walk_nodes(fp.node) if m.domain not in DEFAULT_DOMAINS or not (
                m.op_type in OPS or expandable(m.op_type, body_opset, OPS))]
            if not inner:
                continue
            key = f"{key} (via {', '.join(sorted(set(inner)))})"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _unsupported_message(counts):
    return "ONNX import: no mapping for op type(s): " + ", ".join(
        f"{_op_text(k)} (x{v})" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], _op_text(kv[0]))))


def _op_text(op_type):
    """An op type as text: protobuf hands back bytes when it is not valid UTF-8."""
    return op_type.decode("utf-8", "backslashreplace") if isinstance(op_type, bytes) else str(op_type)


def _check_text(model):
    """One FileFormatError for the first name that is not valid UTF-8 (protobuf
    hands such string fields over as bytes, which no later step expects).
    Op types are left to the unsupported-op report, which prints them."""
    def bad(what, text):
        if isinstance(text, bytes):
            raise FileFormatError(f"{what} {text!r} is not valid UTF-8")

    def value_info(vi):
        bad("value name", vi.name)
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                bad(f"dim_param of {vi.name!r}", d.dim_param)

    def graph(g):
        bad("graph name", g.name)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            value_info(vi)
        for t in g.initializer:
            bad("initializer name", t.name)
        nodes(g.node)

    def nodes(ns):
        for n in ns:
            for text in [n.name, n.domain, *n.input, *n.output]:
                bad("name in node", text)
            for a in n.attribute:
                bad("attribute name", a.name)
                if a.HasField("g"):
                    graph(a.g)
                for sub in a.graphs:
                    graph(sub)

    graph(model.graph)
    for f in model.functions:
        for text in [f.name, f.domain, *f.input, *f.output, *f.attribute]:
            bad("name in function", text)
        nodes(f.node)


def import_onnx(path_or_model):
    """Read an ONNX model (path, bytes or onnx.ModelProto) into an IR Graph."""
    from irtool.frontends.onnx_ops import OPS
    model, base_dir = load_model(path_or_model)
    g = model.graph
    if not model.HasField("graph") or not g.output:
        where = path_or_model if isinstance(path_or_model, (str, os.PathLike)) else "the model"
        raise FileFormatError(f"{where}: not an ONNX model (it has no graph outputs)")
    _check_text(model)
    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedError(_unsupported_message(missing))
    ctx = ImportContext(model, base_dir)
    b = ctx.b
    inits = {t.name: t for t in g.initializer}
    for vi in g.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise UnsupportedError(f"graph input {vi.name!r} is not a tensor")
        dtype = ir_dtype(tt.elem_type, f"graph input {vi.name!r}")
        if not tt.HasField("shape"):
            raise UnsupportedError(f"graph input {vi.name!r} has no shape (unknown rank); "
                                   "give it a shape in the model")
        ctx.values[vi.name] = b.input(vi.name, dtype, tuple(ctx.dim(d) for d in tt.shape.dim))
    for name, t in inits.items():
        arr = tensor_to_array(t, base_dir, f"initializer {name!r}")
        ctx.values[name] = b.param(name, arr, trainable=is_float(check_dtype(arr.dtype)))
    for n in g.node:                       # reserve ONNX names: generated names never take them
        for o in n.output:
            if o and o not in b._names:
                b._names.add(o)
    for n in g.node:
        _import_any(ctx, n, OPS)
    outputs = []
    out_names = {vi.name for vi in g.output}
    for vi in g.output:
        if vi.name not in ctx.values:
            raise FileFormatError(f"graph output {vi.name!r} is not produced by any node")
        v = ctx.values[vi.name]
        # an elided op (Identity, a no-op Reshape...) left the output under its input's
        # name: take the graph output's name when that input is an intermediate
        if v.name != vi.name and v.producer is not None and v.name not in out_names:
            v.name = vi.name
        outputs.append(v)
    graph = b.build(outputs, name=g.name or "onnx")
    prune(graph)
    used = {id(v) for n in graph.nodes for v in n.inputs} | {id(v) for v in graph.outputs}
    for name in [k for k, p in graph.params.items() if id(p.value) not in used]:
        del graph.params[name]
    return graph


def _import_any(ctx, node, table, depth=0):
    if node.op_type in table:
        _import_node(ctx, node, table[node.op_type])
    else:
        _import_function(ctx, node, table, depth)


# -- ops that ONNX defines as functions ---------------------------------------------

def _type_proto(v):
    """TypeProto of an IR Value (for ops whose function body depends on types)."""
    from irtool.exporters.onnx.context import onnx_dtype
    t = onnx.TypeProto()
    t.tensor_type.elem_type = onnx_dtype(v.dtype)
    t.tensor_type.shape.SetInParent()
    for d in v.shape:
        dim = t.tensor_type.shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d
    return t


def _import_function(ctx, node, table, depth):
    """Import a node through its schema's function body: body values get
    names prefixed by the node's, attribute references are resolved, and
    each body node is imported at the body's own opset."""
    opset = ctx.opset
    fp = _plain_function(node.op_type, opset)
    if fp is None:
        types = [_type_proto(ctx.values[i]) if i else onnx.TypeProto() for i in node.input]
        try:
            fp = _typed_body(node, opset, types)
        except Exception as e:  # noqa: BLE001 - the schema refused these inputs
            raise UnsupportedError(f"{describe(node)}: cannot expand its ONNX function body: {e}") from None
    if depth > 8:
        raise UnsupportedError(f"{describe(node)}: function bodies nest too deeply")
    body_opset = _opset_of(fp.opset_import) or opset
    missing = {}
    for n in walk_nodes(fp.node):
        if n.domain not in DEFAULT_DOMAINS or not (n.op_type in table or expandable(n.op_type, body_opset, table)):
            key = n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}"
            missing[key] = missing.get(key, 0) + 1
    if missing:
        raise UnsupportedError(f"{describe(node)}: its ONNX function body uses unmapped ops: " +
                               _unsupported_message(missing).split(": ", 1)[1])
    schema = _schema(node.op_type, opset)
    attrs = {a.name: a for a in _with_defaults(node, schema).attribute}
    names = {}
    for i, formal in enumerate(fp.input):
        names[formal] = node.input[i] if i < len(node.input) else ""
    for i, formal in enumerate(fp.output):
        if i < len(node.output) and node.output[i]:
            names[formal] = node.output[i]
    prefix = f"{node.name or node.op_type}/{node.output[0] if node.output else ''}/"
    body = localize(ctx, fp.node, names, prefix, attrs=attrs, closed=True)
    saved = ctx.opset
    try:
        ctx.opset = body_opset
        import_nodes(ctx, body, depth + 1)
    except DynamicInputError as e:     # name the model's values, not the body's
        raise DynamicInputError(str(e), [i for i in node.input if i]) from None
    finally:
        ctx.opset = saved
    for i, o in enumerate(node.output):
        if o and o not in ctx.values:
            raise UnsupportedError(f"{describe(node)}: its function body does not produce output {i}")


def import_nodes(ctx, nodes, depth=0):
    """Import ONNX nodes in order (used for function bodies and If branches)."""
    from irtool.frontends.onnx_ops import OPS
    for n in nodes:
        _import_any(ctx, n, OPS, depth)


def localize(ctx, nodes, names, prefix, attrs=None, closed=False):
    """Copies of `nodes` whose values get fresh graph-unique names: `names`
    maps body names to outer ones and is filled for every value produced
    here. Names not in `names` refer to the enclosing scope, unless `closed`
    (a function body has none). Function attribute references resolve from
    `attrs`; subgraph attributes are renamed too (their outer references
    included)."""
    def ref(n):
        if n == "" or n in names:
            return names.get(n, "")
        if closed:
            names[n] = ctx.b.fresh(prefix + n)
            return names[n]
        return n

    out = []
    for k, inner in enumerate(nodes):
        new = onnx.NodeProto()
        new.CopyFrom(inner)
        new.name = f"{prefix}{inner.name or inner.op_type}_{k}"
        new.input[:] = [ref(i) for i in inner.input]
        for o in inner.output:
            if o and o not in names:
                names[o] = ctx.b.fresh(prefix + o)      # claimed: never generated again
        new.output[:] = [names[o] if o else "" for o in inner.output]
        kept = []
        for a in inner.attribute:
            if a.ref_attr_name:
                if attrs is not None and a.ref_attr_name in attrs:
                    r = onnx.AttributeProto()
                    r.CopyFrom(attrs[a.ref_attr_name])
                    r.name = a.name
                    kept.append(r)
                continue
            if a.type == onnx.AttributeProto.GRAPH:
                r = onnx.AttributeProto()
                r.CopyFrom(a)
                inner_names = dict(names)
                sub = r.g
                for vi in list(sub.input) + [onnx.ValueInfoProto(name=t.name) for t in sub.initializer]:
                    inner_names[vi.name] = ctx.b.fresh(prefix + vi.name)
                for t in sub.initializer:
                    t.name = inner_names[t.name]
                for vi in sub.input:
                    vi.name = inner_names[vi.name]
                body = localize(ctx, sub.node, inner_names, f"{prefix}{a.name}/", attrs, closed=False)
                del sub.node[:]
                sub.node.extend(body)
                for vi in sub.output:
                    vi.name = inner_names.get(vi.name, ref(vi.name))
                kept.append(r)
                continue
            kept.append(a)
        del new.attribute[:]
        new.attribute.extend(kept)
        out.append(new)
    return out


def _with_defaults(node, schema):
    """Copy of node with the schema's default attribute values filled in."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    have = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in have and attr.default_value.name:
            out.attribute.append(attr.default_value)
    return out


def _import_node(ctx, node, fn):
    b = ctx.b
    b.source = describe(node)
    start = len(b.nodes)
    try:
        outs = fn(ctx, node)
    except IRToolError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed node: one clear line naming it
        raise UnsupportedError(f"{describe(node)}: cannot import: {type(e).__name__}: {e}") from e
    finally:
        b.source = None
    if isinstance(outs, Value) or outs is None:
        outs = [outs]
    outs = _fold_new(ctx, node, start, list(outs))
    new = {id(o) for n in b.nodes[start:] for o in n.outputs}
    for i, name in enumerate(node.output):
        if not name:
            continue
        v = outs[i] if i < len(outs) else None
        if v is None:
            raise UnsupportedError(f"{describe(node)}: output {i} ({name!r}) is not supported")
        if name in ctx.values:
            raise FileFormatError(f"{describe(node)}: output {name!r} is defined twice")
        if id(v) in new and v.name != name:
            v.name = name          # name reserved above: unique in the graph
            new.discard(id(v))
        ctx.values[name] = v
