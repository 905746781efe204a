"""Graph passes that make exported models good, not just valid.

`optimize(graph, fold_params=False)` rebuilds the graph once, in order,
applying: constant folding (nodes whose inputs are all constants, evaluated
with the numpy kernels, when the result is small), transpose/reshape/expand/
cast cancellation, `x + 0`, `x * 1` removal, operator fusion, common-
subexpression elimination, and finally dead-code removal. Graph outputs keep
their names.

Fusions that keep every param a param (always on):
- conv + per-channel add of a 1-D value (a bias) -> conv with that bias;
- matmul(x, transpose(w)) + bias, x 2-D -> linear (ONNX Gemm);
- the inference batch norm that TF/Keras graphs spell out as
  x * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps))
  -> batch_norm (one ONNX BatchNormalization, or folded below).

The one thing to know: params are constants only when the caller says so.
By default no param is folded: params stay params under their names, so the
graph can still be trained, differentiated with respect to them, and the TF
exporter keeps them as variables. `fold_params=True` treats every param as
a constant: that is for inference exports only (an ONNX file whose
initializers are fixed weights), where it folds batch norm, per-channel
scales and shifts into the preceding conv's weights and bias, transposes of
weights into the weights (linear on 3-D inputs becomes MatMul + Add with a
pre-transposed weight), and so on. Results computed from params become new
frozen params named `<param>.folded` (initializers, not Constant nodes);
params left without uses are dropped. A training step never loses its
trainable params to this: there they are graph inputs, not params.
Weights are refolded in float64 and rounded once, so a folded model equals
the unfolded one up to float32 rounding.

`stop_gradient` nodes stay by default (a TF or torch export is still
differentiated, and must stop gradients where the IR does).
`drop_stop_gradient=True` removes those that are not graph outputs (they
are the identity): for formats with no gradients, such as ONNX, whose graph
would otherwise carry an Identity node for each.
"""
import numpy as np

from irtool.ir.builder import Builder
from irtool.ir.dtypes import is_float, np_dtype
from irtool.ir.transform import prune

FOLD_LIMIT = 4096   # elements: larger folded results would bloat the file


def optimize(graph, fold_params=False, drop_stop_gradient=False):
    from irtool.ir.ops import shape_ops
    from irtool.ir.ops.elementwise import STOP_GRADIENT
    from irtool.runtime.kernels import KERNELS
    b = Builder(graph.name)
    vmap, consts, seen = {}, {}, {}
    outputs = set(graph.outputs)
    fx = _Fuser(b, consts, outputs)
    for v in graph.inputs:
        vmap[v] = b.input(v.name, v.dtype, v.shape)
    for name, p in graph.params.items():
        v = vmap[p.value] = b.param(name, p.data, p.trainable)
        if fold_params:
            consts[v] = p.data
            fx.roots[v] = name
            fx.uses[v] = _use_count(p.value, outputs)
    for n in graph.nodes:
        ins = [vmap[v] for v in n.inputs]
        if drop_stop_gradient and n.op is STOP_GRADIENT and n.outputs[0] not in outputs:
            vmap[n.outputs[0]] = ins[0]         # the identity, once nothing will differentiate the graph
            continue
        simpler = _simplify(b, n, ins, shape_ops)
        if simpler is None:
            simpler = fx.rewrite(n, ins)
        if simpler is not None:
            vmap[n.outputs[0]] = simpler
            continue
        if _foldable(n, ins, consts, shape_ops, KERNELS, fx):
            result = np.asarray(KERNELS[n.op](*[consts[v] for v in ins], **n.attrs))
            roots = [fx.roots[v] for v in ins if v in fx.roots]
            if roots:
                out = fx.new_param(result, n.outputs[0].dtype, roots[0])
                fx.uses[out] = _use_count(n.outputs[0], outputs)
            else:
                out = b.const(result, n.outputs[0].dtype)
                consts[out] = result
                out = _cse(b, seen, out)
            vmap[n.outputs[0]] = out
            continue
        key = (n.op, tuple(id(v) for v in ins), n.attrs.key())
        if key in seen:
            outs = seen[key]
        else:
            outs = b.replay_with(n, ins)
            seen[key] = outs
            if n.op is shape_ops.CONSTANT:
                consts[outs[0]] = n.attrs["value"]
        for old, new in zip(n.outputs, outs):
            vmap[old] = new
    outs = [vmap[o] for o in graph.outputs]
    for old, new in zip(graph.outputs, outs):
        if new.name != old.name and new.producer is not None and old.name not in b._names \
                and sum(o is new for o in outs) == 1:
            b._names.discard(new.name)
            new.name = b._claim(old.name)
    result = prune(b.build(outs))
    if fold_params:
        live = set(result.outputs)
        result.params = {k: p for k, p in result.params.items() if p.value.uses or p.value in live}
    return result


def _use_count(value, outputs):
    return len(value.uses) + (value in outputs)


def _foldable(n, ins, consts, ops, kernels, fx):
    if n.op is ops.CONSTANT or n.op not in kernels or len(n.outputs) != 1:
        return False
    if not all(v in consts for v in ins):
        return False
    shape = n.outputs[0].shape
    if not all(isinstance(d, int) for d in shape):
        return False
    size = int(np.prod(shape))
    if size <= FOLD_LIMIT:
        return True
    # a big result may replace big params used only here (a transposed weight), never copy them
    big = [v for v in ins if consts[v].size > FOLD_LIMIT]
    return bool(big) and all(v in fx.roots and fx.uses.get(v) == 1 for v in big) \
        and size <= sum(consts[v].size for v in big)


def _cse(b, seen, out):
    key = (out.producer.op, (), out.producer.attrs.key())
    if key in seen:
        b.nodes.remove(out.producer)
        return seen[key][0]
    seen[key] = (out,)
    return out


def _simplify(b, n, ins, ops):
    """Return a Value replacing n's single output, or None."""
    x = ins[0] if ins else None
    if n.op is ops.TRANSPOSE:
        perm = tuple(n.attrs.get("perm") or reversed(range(x.rank)))
        if perm == tuple(range(x.rank)):
            return x
        p = x.producer
        if p is not None and p.op is ops.TRANSPOSE:
            inner = tuple(p.attrs.get("perm") or reversed(range(x.rank)))
            combined = tuple(inner[i] for i in perm)
            src = p.inputs[0]
            return src if combined == tuple(range(src.rank)) else b.transpose(src, perm=combined)
    if n.op in (ops.RESHAPE, ops.EXPAND, ops.SQUEEZE, ops.UNSQUEEZE) and x.shape == n.outputs[0].shape:
        return x
    if n.op is ops.RESHAPE and x.producer is not None and x.producer.op in (ops.RESHAPE, ops.SQUEEZE,
                                                                            ops.UNSQUEEZE):
        src = x.producer.inputs[0]
        return src if src.shape == n.outputs[0].shape else b.reshape(src, shape=n.outputs[0].shape)
    if n.op.name == "cast" and x.dtype == n.attrs["dtype"]:
        return x
    return None


def _is(v, name):
    return v.producer is not None and v.producer.op.name == name


class _Fuser:
    """Rewrites of one node of the source graph, given its rebuilt inputs;
    `rewrite` returns the Value replacing the node's output, or None.

    `consts` maps rebuilt Values to their arrays (constants, and the params
    that fold_params lets fold); `roots` maps those that come from params to
    the param's name; `uses` counts their uses in the source graph."""

    def __init__(self, b, consts, outputs):
        self.b, self.consts, self.outputs = b, consts, outputs
        self.roots, self.uses = {}, {}

    # -- making folded values ------------------------------------------------------
    def new_param(self, arr, dtype, root):
        """A frozen param holding arr (a folded weight), named after `root`."""
        name = self.b.fresh(f"{root}.folded")
        self.b._names.discard(name)
        v = self.b.param(name, np.asarray(arr, dtype=np_dtype(dtype)), trainable=False)
        self.consts[v] = self.b.params[name].data
        self.roots[v] = root
        self.uses[v] = 1
        return v

    def emit(self, arr, dtype, sources):
        """A Value holding arr: a param if any of `sources` came from a param, else a constant."""
        roots = [self.roots[v] for v in sources if v in self.roots]
        if roots:
            return self.new_param(arr, dtype, roots[0])
        v = self.b.const(np.asarray(arr, dtype=np_dtype(dtype)), dtype)
        self.consts[v] = v.producer.attrs["value"]
        return v

    # -- the rewrites ---------------------------------------------------------------
    def rewrite(self, n, ins):
        op = n.op.name
        if op in ("add", "sub", "mul", "div"):
            return (self._identity(op, n, ins) or self._into_conv(op, n, ins) or
                    (self._linear(n, ins) if op == "add" else None) or
                    (self._batch_norm_pattern(n, ins) if op == "add" else None))
        if op == "batch_norm":
            return self._bn_into_conv(n.inputs[0], ins, float(n.attrs.get("eps", 1e-5)))
        if op == "linear":
            return self._linear_nd(ins)
        return None

    def _linear_nd(self, ins):
        """linear(x, w, [bias]) on x of rank > 2 with w constant -> matmul(x, w^T) [+ bias]:
        the ONNX lowering would transpose w at run time."""
        x, w = ins[:2]
        w_arr = self.consts.get(w)
        if x.rank <= 2 or w_arr is None:
            return None
        y = self.b.matmul(x, self.emit(np.ascontiguousarray(w_arr.T), w.dtype, [w]))
        return y if len(ins) == 2 else self.b.add(y, ins[2])

    def _identity(self, op, n, ins):
        """x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1 -> x (same shape and dtype). Not for
        graph outputs: `x + 0` is how a graph returns a copy of x under a name of its own."""
        out = n.outputs[0]
        if out in self.outputs:
            return None
        orders = [(0, 1), (1, 0)] if op in ("add", "mul") else [(0, 1)]
        unit = 0 if op in ("add", "sub") else 1
        for i, j in orders:
            x, c = ins[i], ins[j]
            arr = self.consts.get(c)
            if arr is not None and x not in self.consts and x.shape == out.shape and x.dtype == out.dtype \
                    and np.all(arr == unit):
                return x
        return None

    def _single_use_conv(self, src, new):
        """The conv node making `new` (the rebuilt `src`) when src has no other use."""
        p = new.producer
        if p is None or p.op.name != "conv" or _use_count(src, self.outputs) != 1:
            return None
        return p

    def _channel_array(self, v, rank, c):
        """v's array as a (c,) vector when it is constant and broadcasts along axis 1 only."""
        arr = self.consts.get(v)
        if arr is None or arr.ndim > rank:
            return None
        shape = (1,) * (rank - arr.ndim) + arr.shape
        if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, c):
            return None
        return np.broadcast_to(np.asarray(arr).reshape(shape[1]), (c,))

    def _channel_value(self, v, rank, c):
        """u of shape (c,) when v is u reshaped/unsqueezed to broadcast along axis 1
        of a rank-`rank` tensor (or v itself for rank 2)."""
        if rank == 2 and v.shape == (c,):
            return v
        if not (_is(v, "reshape") or _is(v, "unsqueeze")):
            return None
        u = v.producer.inputs[0]
        ones = (1,) * (rank - 2)
        if u.shape == (c,) and v.shape in ((1, c) + ones, (c,) + ones):
            return u
        return None

    def _conv(self, p, w, bias):
        return self.b.add_node(p.op, [p.inputs[0], w] + ([bias] if bias is not None else []), p.attrs,
                               name="conv")

    def _known(self, v):
        return None if v is None else self.consts.get(v)

    def _into_conv(self, op, n, ins):
        """conv(x, w, b) followed by a per-channel add/sub/mul of a constant
        (or an add of a 1-D bias value when the conv has none) -> one conv."""
        orders = [(0, 1), (1, 0)] if op in ("add", "mul") else [(0, 1)] if op == "sub" else []
        for i, j in orders:
            p = self._single_use_conv(n.inputs[i], ins[i])
            if p is None or n.outputs[0].shape != ins[i].shape or n.outputs[0].dtype != ins[i].dtype:
                continue
            y, other = ins[i], ins[j]
            w, bias = p.inputs[1], (p.inputs[2] if len(p.inputs) == 3 else None)
            c = y.shape[1]
            vec = self._channel_array(other, y.rank, c)
            if vec is None:
                u = self._channel_value(other, y.rank, c) if op == "add" else None
                if u is not None and bias is None and u.dtype == y.dtype:
                    return self._conv(p, w, u)             # the bias becomes the conv's own
                continue
            b_arr = self._known(bias)
            if bias is not None and b_arr is None:
                continue
            vec = vec.astype(np.float64)
            b64 = np.zeros(c) if b_arr is None else b_arr.astype(np.float64)
            sources = [v for v in (w, bias, other) if v is not None]
            if op in ("add", "sub"):
                nb = b64 + vec if op == "add" else b64 - vec
                return self._conv(p, w, self.emit(nb, y.dtype, sources))
            w_arr = self._known(w)
            if w_arr is None:
                continue
            nw = w_arr.astype(np.float64) * vec.reshape((c,) + (1,) * (w_arr.ndim - 1))
            new_bias = None if bias is None else self.emit(b64 * vec, y.dtype, sources)
            return self._conv(p, self.emit(nw, w.dtype, sources), new_bias)
        return None

    def _bn_into_conv(self, src, ins, eps):
        """batch_norm(conv(x, w, b), gamma, beta, mean, var) with all weights
        constant -> conv(x, w * s, (b - mean) * s + beta), s = gamma / sqrt(var + eps)."""
        p = self._single_use_conv(src, ins[0])
        arrs = [self._known(v) for v in ins[1:]]
        if p is None or any(a is None for a in arrs):
            return None
        w, bias = p.inputs[1], (p.inputs[2] if len(p.inputs) == 3 else None)
        w_arr, b_arr = self._known(w), self._known(bias)
        if w_arr is None or (bias is not None and b_arr is None):
            return None
        gamma, beta, mean, var = (a.astype(np.float64) for a in arrs)
        s = gamma / np.sqrt(var + np.float64(np.float32(eps) if ins[0].dtype == "float32" else eps))
        c = len(s)
        b64 = np.zeros(c) if b_arr is None else b_arr.astype(np.float64)
        sources = [v for v in [w, bias] + list(ins[1:]) if v is not None]
        nw = w_arr.astype(np.float64) * s.reshape((c,) + (1,) * (w_arr.ndim - 1))
        return self._conv(p, self.emit(nw, w.dtype, sources), self.emit((b64 - mean) * s + beta, ins[0].dtype,
                                                                          sources))

    def _linear(self, n, ins):
        """matmul(x, w^T) + bias with x 2-D -> linear(x, w, bias) (one Gemm)."""
        for i, j in ((0, 1), (1, 0)):
            mm, bias = ins[i], ins[j]
            p = mm.producer
            if p is None or p.op.name != "matmul" or _use_count(n.inputs[i], self.outputs) != 1:
                continue
            x, wt = p.inputs
            if not is_float(mm.dtype) or x.rank != 2 or wt.rank != 2 or bias.shape != (wt.shape[1],) \
                    or bias.dtype != mm.dtype or n.outputs[0].shape != mm.shape:
                continue
            if _is(wt, "transpose") and tuple(wt.producer.attrs.get("perm") or (1, 0)) == (1, 0):
                w = wt.producer.inputs[0]
            elif wt in self.consts:
                w = self.emit(np.ascontiguousarray(self.consts[wt].T), wt.dtype, [wt])
            else:
                continue
            return self.b.linear(x, w, bias)
        return None

    def _batch_norm_pattern(self, n, ins):
        """add(mul(x, R(s)), R(sub(beta, mul(mean, s)))) with s = mul(rsqrt(add(var, eps)), gamma),
        R a per-channel reshape -> batch_norm(x, gamma, beta, mean, var, eps)."""
        for m, shift in (ins, ins[::-1]):
            if not _is(m, "mul"):
                continue
            for x, scale in (m.producer.inputs, m.producer.inputs[::-1]):
                if x.rank < 2 or x.shape != n.outputs[0].shape:
                    continue
                c = x.shape[1]
                s, t = self._channel_value(scale, x.rank, c), self._channel_value(shift, x.rank, c)
                if s is None or t is None or not _is(t, "sub") or not _is(s, "mul"):
                    continue
                beta, ms = t.producer.inputs
                if not _is(ms, "mul") or s not in ms.producer.inputs:
                    continue
                mean = ms.producer.inputs[1] if ms.producer.inputs[0] is s else ms.producer.inputs[0]
                found = self._rsqrt_var_eps(s)
                if found is None:
                    continue
                gamma, var, eps = found
                if any(v.shape != (c,) or v.dtype != x.dtype for v in (gamma, beta, mean, var)):
                    continue
                return self.b.batch_norm(x, gamma, beta, mean, var, eps=eps)
        return None

    def _rsqrt_var_eps(self, s):
        """(gamma, var, eps) when s = mul(rsqrt(add(var, eps)), gamma), eps a constant scalar."""
        for r, gamma in (s.producer.inputs, s.producer.inputs[::-1]):
            if not _is(r, "rsqrt") or not _is(r.producer.inputs[0], "add"):
                continue
            for var, e in (r.producer.inputs[0].producer.inputs, r.producer.inputs[0].producer.inputs[::-1]):
                eps = self.consts.get(e)
                if eps is not None and e not in self.roots and np.size(eps) == 1 and var not in self.consts:
                    return gamma, var, float(np.asarray(eps).reshape(()))
        return None
