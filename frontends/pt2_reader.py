"""A .pt2 archive (torch.export.save) straight to IR, without torch.export.load.

torch.export.load deserializes through torch._export.serde, which imports
torch._dynamo, sympy and the rest of the compiler stack: ~2.8 s before the
first op, against ~0.05 s to translate a small model. This module reads the
archive itself (a zip):

    <root>/archive_format, archive_version     "pt2", "0"
    <root>/models/model.json                   the serialized ExportedProgram
    <root>/data/weights/model_weights_config.json + weight_N    raw tensor bytes
    <root>/data/constants/model_constants_config.json + tensor_N
    <root>/data/sample_inputs/model.pt         torch.save'd example inputs

and walks model.json's graph with the same per-node code as the live path
(torch_trace.Translator: the ATEN table, the dtype fixes, param and output
naming), importing only `torch` itself, for the op schemas
(`torch.ops.aten.<op>.<overload>._schema`).

Anything it does not handle raises NotNative, and the caller falls back to
torch.export.load, so no model converts worse than before. That covers:
pickled payloads of any kind (`use_pickle` weights and constants, custom and
opaque objects; a sample-inputs pickle that references anything beyond
plain tensors, which the safe loader would refuse: the pickle is only
scanned, never loaded), ops outside the ATEN table (the live path
decomposes those), entries that ask for decomposition, higher-order ops,
non-tensor inputs, other archive layouts and schema versions, and any
error raised while translating (the live path then gives its own answer).
A model.json or config that is not JSON is a FileFormatError right away.

Symbolic sizes: a user input's size {"as_expr": {"expr_str": "Symbol('s77',
...)"}} (sympy's srepr) becomes the IR symbol the live path would give the
same symbol: the `dim_names` name where given, else f"{arg}_dim{axis}" for
the first input axis holding it, `arg` being the forward's argument name
(module_call_graph's forward_arg_names). Sizes inside the graph are never
read from the archive: the IR's shape rules recompute them, and SymInt
arguments come from the sym_size / operator nodes, as in the live path.
"""
import json
import os
import pickletools
import re
import sys
import zipfile

import numpy as np

from irtool.errors import FileFormatError, IRToolError


class NotNative(IRToolError):
    """The native reader does not handle this archive; use torch.export.load."""


# schema.ScalarType -> IR dtype (others have no IR equivalent)
_IR_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
              8: "float64", 12: "bool", 13: "bfloat16"}
# schema.ScalarType -> torch dtype attribute, for dtype arguments
_TORCH_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
                 8: "float64", 9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16",
                 28: "uint16", 29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz",
                 32: "float8_e5m2fnuz", 33: "float8_e8m0fnu", 34: "uint32", 35: "uint64"}
_LAYOUTS = {1: "sparse_coo", 2: "sparse_csr", 3: "sparse_csc", 4: "sparse_bsr", 5: "sparse_bsc",
            6: "_mkldnn", 7: "strided"}
_MEMORY_FORMATS = {1: "contiguous_format", 2: "channels_last", 3: "channels_last_3d", 4: "preserve_format"}
_STRIDED = 7
_KEYWORD = 2            # schema.ArgumentKind
_SCHEMA_MAJOR = 8          # the serialized-program schema this reader was written against
_AT = "torch.ops.aten."
_SYMBOL = re.compile(r"Symbol\('([A-Za-z_][A-Za-z0-9_]*)'(?:, \w+=(?:True|False))*\)|([A-Za-z_][A-Za-z0-9_]*)")
# archive members torch.export.load reads or ignores; anything else is another format
_KNOWN = ("archive_format", "archive_version", "byteorder", "version", ".data/", "models/model.json",
          "data/weights/", "data/constants/", "data/sample_inputs/model.pt", "extra/")
# what torch.save writes for a tuple/dict of plain tensors: a sample-inputs pickle
# that names anything else would be refused by the safe loader, so it is left to it
_SAFE_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._tensor", "_rebuild_from_type_v2"),
                 ("torch", "Tensor"), ("collections", "OrderedDict")} | {
    ("torch", f"{t}Storage") for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
                                        "Char", "Byte", "Bool")}
_UNSAFE_OPS = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ_EX"}


def read_pt2(path, name=None, dim_names=None):
    """IR Graph of the ExportedProgram in a .pt2 file. Raises NotNative when
    torch.export.load must do it, FileFormatError for a damaged archive."""
    name = name or os.path.splitext(os.path.basename(os.fspath(path)))[0]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise NotNative(f"not a zip archive ({e})") from None
    with archive:
        try:
            return _Reader(path, archive, name, dim_names).graph()
        except (NotNative, FileFormatError):
            raise
        except zipfile.BadZipFile as e:
            raise FileFormatError(f"{path}: cannot read this .pt2 file (BadZipFile: {_first_line(e)})") from None
        except Exception as e:  # noqa: BLE001 - whatever it is, the torch.export path decides
            raise NotNative(f"{type(e).__name__}: {_first_line(e)}") from e


class _Reader:
    def __init__(self, path, archive, name, dim_names):
        self.path, self.zip, self.name, self.dim_names = path, archive, name, dim_names
        self.members = self._layout()
        self.files = {}                     # weight/constant file -> flat numpy array

    # -- the archive -----------------------------------------------------------------------
    def _layout(self):
        names = [i.filename for i in self.zip.infolist() if not i.is_dir()]
        if not names:
            raise NotNative("empty archive")
        root = names[0].split("/", 1)[0]
        members = {}
        for n in names:
            head, _, rel = n.partition("/")
            if head != root or not rel:
                raise NotNative(f"member {n!r} outside the archive folder {root!r}")
            writer_record = rel.startswith(".") and "/" not in rel     # .format_version and such
            if not (rel.startswith(_KNOWN) or writer_record):
                raise NotNative(f"archive member {rel!r} (not a plain exported program)")
            members[rel] = n
        if self._read(members, "archive_format", missing=b"") != b"pt2":
            raise NotNative("archive_format is not pt2")
        if self._read(members, "archive_version", missing=b"").strip() != b"0":
            raise NotNative("archive_version is not 0")
        if self._read(members, "byteorder", missing=b"little").strip() != b"little" or sys.byteorder != "little":
            raise NotNative("big-endian archive or machine")
        if any(k.startswith("models/") and k != "models/model.json" for k in members):
            raise NotNative("archive holds several programs")
        if "data/weights/model.pt" in members or "data/constants/model.pt" in members:
            raise NotNative("legacy pickled weights")
        return members

    def _read(self, members, rel, missing=None):
        if rel not in members:
            if missing is None:
                raise NotNative(f"archive has no {rel}")
            return missing
        return self.zip.read(members[rel])

    def _json(self, rel):
        data = self._read(self.members, rel)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
            raise FileFormatError(f"{self.path}: cannot read this .pt2 file ({rel} is not valid JSON: "
                                  f"{_first_line(e)})") from None

    def _check_sample_inputs(self):
        """torch.export.load unpickles the example inputs with weights_only=True;
        scan the pickle (without loading it) and leave anything but plain
        tensors to that loader, so what it refuses stays refused."""
        import io
        data = self._read(self.members, "data/sample_inputs/model.pt")
        if not data:
            return
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pkls = [n for n in inner.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise NotNative("sample inputs are not a torch.save archive")
            code = inner.read(pkls[0])
        for op, arg, _ in pickletools.genops(code):
            if op.name in _UNSAFE_OPS:
                raise NotNative(f"sample inputs pickle uses {op.name}")
            if op.name == "GLOBAL" and tuple(arg.split(" ", 1)) not in _SAFE_GLOBALS:
                raise NotNative(f"sample inputs pickle names {arg}")

    def _config(self, rel, tensor_prefix):
        """{fqn: payload meta}; any pickled payload (the safe loader's business) -> NotNative."""
        if rel not in self.members:
            raise NotNative(f"archive has no {rel}")
        config = self._json(rel)["config"]
        for fqn, meta in config.items():
            if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(tensor_prefix):
                raise NotNative(f"{fqn!r} is a pickled object")
        return config

    def _tensor(self, folder, meta):
        tm = meta["tensor_meta"]
        dtype = _IR_DTYPES.get(tm["dtype"])
        if dtype is None or tm.get("layout", _STRIDED) != _STRIDED:
            raise NotNative(f"tensor of dtype {tm['dtype']} / layout {tm.get('layout')}")
        from irtool.ir.dtypes import np_dtype
        npd = np_dtype(dtype)
        shape = tuple(_int(s) for s in tm["sizes"])
        strides = tuple(_int(s) for s in tm["strides"])
        offset = _int(tm["storage_offset"])
        if any(s < 0 for s in shape + strides) or offset < 0 or len(strides) != len(shape):
            raise NotNative("negative sizes or strides")
        key = (folder, meta["path_name"], dtype)
        if key not in self.files:
            data = self._read(self.members, folder + meta["path_name"])
            if len(data) % npd.itemsize:
                raise NotNative(f"{meta['path_name']}: {len(data)} bytes is not a whole number of {dtype}")
            self.files[key] = np.frombuffer(data, dtype=npd)     # little-endian, as on this machine
        flat = self.files[key]
        if not flat.size or 0 in shape:   # torch writes no bytes for an empty (or fake) tensor: zeros
            return np.zeros(shape, npd)
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= flat.size:
            raise NotNative(f"{meta['path_name']}: tensor view past the end of its storage")
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape, tuple(s * npd.itemsize for s in strides),
                                               writeable=False)
        return np.array(view, dtype=npd)   # a contiguous, writable copy

    # -- the program -----------------------------------------------------------------------
    def graph(self):
        from irtool.frontends.aten_ops import ATEN
        from irtool.frontends.torch_trace import Translator, input_symbols, source_of
        program = self._json("models/model.json")
        version = program.get("schema_version") or {}
        if version.get("major") != _SCHEMA_MAJOR:
            raise NotNative(f"schema version {version}")
        gm = program["graph_module"]
        g = gm["graph"]
        nodes = g["nodes"]
        keys = _keys(nodes, g["outputs"])
        missing = sorted({k for k in keys if k not in ATEN})
        if missing:
            raise NotNative(f"ops outside the ATen table: {', '.join(missing)}")
        weights = self._config("data/weights/model_weights_config.json", "weight_")
        constants = self._config("data/constants/model_constants_config.json", "tensor_")
        self._check_sample_inputs()

        signature = _call_signature(gm)
        specs = {}
        for spec in gm["signature"]["input_specs"]:
            (kind, body), = spec.items()
            arg = body["arg"]
            arg_name = arg["as_tensor"]["name"] if kind == "user_input" and "as_tensor" in arg else arg.get("name")
            if arg_name is None:
                raise NotNative(f"input of kind {kind}")
            specs[arg_name] = (kind, body)
        inputs = []
        for a in g["inputs"]:
            if "as_tensor" not in a or a["as_tensor"]["name"] not in specs:
                raise NotNative(f"graph input {a}")
            inputs.append(a["as_tensor"]["name"])
        values = g["tensor_values"]
        user = [n for n in inputs if specs[n][0] == "user_input"]
        arg_names = dict(zip(user, (signature or {}).get("forward_arg_names") or []))

        sizes = {n: [_size_key(s) for s in values[n]["sizes"]] for n in user}
        t = Translator(self.name, input_symbols([(arg_names.get(n, n), sizes[n]) for n in user],
                                                self.dim_names))
        env = {}
        for n in inputs:
            kind, body = specs[n]
            dtype = _ir_dtype(values[n]["dtype"])
            if kind == "user_input":
                env[n] = t.input(arg_names.get(n, n), dtype,
                                 tuple(d if isinstance(d, int) else t.ctx.symbols[d] for d in sizes[n]))
                continue
            target = {"parameter": "parameter_name", "buffer": "buffer_name",
                      "tensor_constant": "tensor_constant_name"}.get(kind)
            if target is None:
                raise NotNative(f"input kind {kind}")
            target = body[target]
            if target in weights:
                data = self._tensor("data/weights/", weights[target])
            elif target in constants:
                data = self._tensor("data/constants/", constants[target])
            else:
                raise NotNative(f"no data for {target!r}")
            env[n] = t.param(target, data, kind.upper() if kind != "tensor_constant" else "CONSTANT_TENSOR",
                             dtype)

        for node, key in zip(nodes, keys):
            args, kwargs = self._arguments(node, key, env)
            outs = node["outputs"]
            want = None                     # torch's dtype for a single tensor result
            if len(outs) == 1 and "as_tensor" in outs[0]:
                want = (lambda code=values[outs[0]["as_tensor"]["name"]]["dtype"]: _ir_dtype(code))
            result = t.call(key, args, kwargs, want, source_of((node.get("metadata") or {}).get("stack_trace")))
            _bind(env, outs, result)

        outputs = []
        for o in g["outputs"]:
            if "as_tensor" in o:
                outputs.append(_lookup(env, o["as_tensor"]["name"]))
            elif "as_none" in o:
                outputs.append(None)
            else:
                raise NotNative(f"graph output {o}")
        user_count = sum("user_output" in s for s in gm["signature"]["output_specs"])
        return t.finish(outputs, user_count, _out_spec(signature))

    def _arguments(self, node, key, env):
        """(args, kwargs) as the FX node had them: serialized arguments in
        their schema positions (kind POSITIONAL) or by name (KEYWORD); a gap
        before a later positional argument takes the schema default."""
        given = {}
        for i in node["inputs"]:
            given[i["name"]] = (_value(i["arg"], env), i.get("kind"))
        if key.startswith("<"):                         # operator.mul & co: positional
            return [v for v, _ in given.values()], {}
        schema = _schema(key)
        names = {a.name for a in schema.arguments}
        unknown = set(given) - names
        if unknown:
            raise NotNative(f"{key}: arguments {sorted(unknown)} are not in its schema")
        positional = [a for a in schema.arguments if not a.kwarg_only]
        last = max((i for i, a in enumerate(positional)
                    if a.name in given and given[a.name][1] != _KEYWORD), default=-1)
        args = []
        for a in positional[:last + 1]:
            if a.name in given:
                args.append(given.pop(a.name)[0])
            elif a.has_default_value():
                args.append(a.default_value)
            else:
                raise NotNative(f"{key}: argument {a.name!r} is missing")
        return args, {k: v for k, (v, _) in given.items()}


def _keys(nodes, graph_outputs):
    """The ATEN key of each node, in-place ops as the live path's
    in_place_key says (read_after: a later node or a graph output reads the
    written tensor)."""
    from irtool.frontends.aten_ops import ATEN
    from irtool.frontends.torch_trace import in_place_key
    last_read = {}
    for i, node in enumerate(nodes):
        for inp in node["inputs"]:
            for name in _tensor_names(inp["arg"]):
                last_read[name] = i
    for o in graph_outputs:
        for name in _tensor_names(o):
            last_read[name] = len(nodes)
    keys, made_by = [], {}
    for i, node in enumerate(nodes):
        key = _op_key(node["target"])
        first = node["inputs"][0]["arg"] if node["inputs"] else {}
        if key not in ATEN and "as_tensor" in first:
            written = first["as_tensor"]["name"]
            key = in_place_key(key, made_by.get(written), last_read.get(written, i) > i) or key
        keys.append(key)
        outs = node["outputs"]
        if len(outs) == 1 and "as_tensor" in outs[0]:
            made_by[outs[0]["as_tensor"]["name"]] = key
    return keys


def _tensor_names(arg):
    """Names of the tensors a serialized argument refers to."""
    if "as_tensor" in arg:
        return [arg["as_tensor"]["name"]]
    if "as_tensors" in arg:
        return [t["name"] for t in arg["as_tensors"]]
    if "as_optional_tensor" in arg:
        return _tensor_names(arg["as_optional_tensor"])
    if "as_optional_tensors" in arg:
        return [n for t in arg["as_optional_tensors"] for n in _tensor_names(t)]
    return []


def _op_key(target):
    """The ATEN table key of a serialized target (the live path's _op_key)."""
    if target.startswith(_AT):
        return target[len(_AT):]
    if target.startswith("_operator."):
        return f"<built-in function {target[len('_operator.'):]}>"
    raise NotNative(f"op {target}")


def _schema(key):
    import torch
    op, _, overload = key.rpartition(".")
    try:
        return getattr(getattr(torch.ops.aten, op), overload)._schema
    except (AttributeError, RuntimeError) as e:
        raise NotNative(f"aten.{key} is not an operator of this torch ({e})") from None


def _value(arg, env):
    """An Argument as the FX graph holds it (IR Values for tensors)."""
    (kind, v), = arg.items()
    if kind == "as_none":
        return None
    if kind == "as_tensor":
        return _lookup(env, v["name"])
    if kind == "as_tensors":
        return [_lookup(env, a["name"]) for a in v]
    if kind == "as_optional_tensor":
        return None if "as_none" in v else _lookup(env, v["as_tensor"]["name"])
    if kind == "as_optional_tensors":
        return [None if "as_none" in a else _lookup(env, a["as_tensor"]["name"]) for a in v]
    if kind in ("as_int", "as_float", "as_bool", "as_string"):
        return v
    if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
        return list(v)
    if kind == "as_sym_int":
        return _sym(v, env)
    if kind == "as_sym_ints":
        return [_sym(a, env) for a in v]
    import torch
    if kind == "as_scalar_type" and v in _TORCH_DTYPES:
        return getattr(torch, _TORCH_DTYPES[v])
    if kind == "as_layout" and v in _LAYOUTS:
        return getattr(torch, _LAYOUTS[v])
    if kind == "as_memory_format" and v in _MEMORY_FORMATS:
        return getattr(torch, _MEMORY_FORMATS[v])
    if kind == "as_device":
        return torch.device(v["type"]) if v.get("index") is None else torch.device(v["type"], v["index"])
    raise NotNative(f"argument of kind {kind}")


def _sym(v, env):
    if "as_int" in v:
        return v["as_int"]
    if "as_name" in v:
        return _lookup(env, v["as_name"])
    raise NotNative(f"symbolic argument {v}")


def _lookup(env, name):
    try:
        value = env[name]
    except KeyError:
        raise NotNative(f"value {name!r} used before it is defined") from None
    if value is None:
        raise NotNative(f"value {name!r} has no IR equivalent")
    return value


def _bind(env, outs, result):
    """Name the node's results: one output, or one per serialized output
    (torch writes multi-output ops without getitem nodes)."""
    if not outs:
        return
    if len(outs) == 1:
        results = [result]
    else:
        if not isinstance(result, (tuple, list)) or len(result) < len(outs):
            raise NotNative("results do not match the op's outputs")
        results = list(result)
    for o, r in zip(outs, results):
        (kind, v), = o.items()
        if kind == "as_tensor":
            env[v["name"]] = r
        elif kind == "as_tensors":
            if not isinstance(r, (tuple, list)) or len(r) < len(v):
                raise NotNative("results do not match the op's outputs")
            for a, x in zip(v, r):
                env[a["name"]] = x
        elif kind == "as_sym_int" and "as_name" in v:
            env[v["as_name"]] = r
        elif kind != "as_none":
            raise NotNative(f"output of kind {kind}")


def _int(s):
    if "as_int" not in s:
        raise NotNative(f"symbolic size {s}")
    return s["as_int"]


def _size_key(s):
    """An input size: an int, or the name of its symbol (sympy's str of it)."""
    if "as_int" in s:
        return s["as_int"]
    m = _SYMBOL.fullmatch(s["as_expr"]["expr_str"])
    if not m:
        raise NotNative(f"input size {s['as_expr']['expr_str']} is not a plain symbol")
    return m.group(1) or m.group(2)


def _ir_dtype(code):
    try:
        return _IR_DTYPES[code]
    except KeyError:
        raise NotNative(f"dtype {code} has no IR equivalent") from None


def _call_signature(gm):
    for entry in gm.get("module_call_graph") or []:
        if entry.get("fqn") == "":
            return entry.get("signature")
    return None


class _Spec:
    """The parts of a pytree TreeSpec that output naming reads."""

    def __init__(self, tree):
        self.children_specs = [_Spec(c) for c in tree.get("children_spec") or []]
        context = tree.get("context")
        try:
            self.context = json.loads(context) if isinstance(context, str) else context
        except ValueError:
            self.context = None


def _out_spec(signature):
    """The forward's output structure from its serialized pytree spec ("[1, {type,
    context, children_spec}]"); None (default names) when unreadable."""
    try:
        protocol, tree = json.loads(signature["out_spec"])
        return _Spec(tree) if protocol == 1 else None
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
