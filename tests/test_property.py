"""Property tests: random graphs of elementwise ops, broadcasting, reductions
and matmul, built once in the IR and once in torch. The numpy runtime must
match torch (float64, torch.testing defaults), and grad() must match
torch.autograd. Also: symbolic dim arithmetic agrees with integer arithmetic.
"""
import numpy as np
import pytest

import irtool
from irtool.ir import serialize
from irtool.ir.opdef import REGISTRY
from irtool.ir.shapes import add_dims, canon, div_dims, evaluate, mul_dims

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

UNARY = [op for op in ("neg", "exp", "tanh", "sigmoid") if op in REGISTRY]
BINARY = ["add", "sub", "mul", "div"]
REDUCE = [op for op in ("reduce_sum", "reduce_mean", "reduce_max") if op in REGISTRY]
TORCH_REDUCE = {"reduce_sum": torch.sum, "reduce_mean": torch.mean, "reduce_max": torch.amax}
TORCH_UNARY = {"neg": torch.neg, "exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
TORCH_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul,
                "div": lambda a, c: a / (c * c + 1.0)}


class Expr:
    """A random expression: `spec` is a nested tuple both builders read;
    `shape` is broadcast-compatible with the base shape; `bound` estimates
    max |value| so exp is only applied where it cannot overflow."""

    def __init__(self, spec, shape, bound):
        self.spec, self.shape, self.bound = spec, tuple(shape), bound


def _compatible_shape(draw, base):
    """A shape that broadcasts to `base`: a suffix of it with some dims set to 1."""
    k = draw(st.integers(0, len(base)))
    tail = base[len(base) - k:]
    return tuple(d if draw(st.booleans()) else 1 for d in tail)


def _fits(shape, base):
    try:
        return np.broadcast_shapes(shape, base) == tuple(base)
    except ValueError:
        return False


def _broadcast(a, c):
    return tuple(np.broadcast_shapes(a, c))


def pick(draw, options, turn):
    """An option chosen by hypothesis, offset by a per-example counter so
    that even the simplest (all-zero) draws cycle through every op."""
    turn[0] += 1
    return options[(draw(st.integers(0, len(options) - 1)) + turn[0]) % len(options)]


def gen(draw, base, inputs, depth, turn):
    def leaf(shape=None):
        reusable = [j for j, s in enumerate(inputs) if _fits(s, base)]
        if shape is None and reusable and draw(st.booleans()):
            i = reusable[draw(st.integers(0, len(reusable) - 1))]
        else:
            inputs.append(shape if shape is not None else _compatible_shape(draw, base))
            i = len(inputs) - 1
        return Expr(("in", i), inputs[i], 1.5)

    if depth == 0:
        return leaf()
    kind = pick(draw, ["binary", "unary", "reduce", "matmul", "binary", "leaf"], turn)
    if kind == "leaf":
        return leaf()
    if kind == "unary":
        op = pick(draw, UNARY, turn)
        a = gen(draw, base, inputs, depth - 1, turn)
        if op == "exp" and a.bound > 3:             # squash first: exp(tanh(a)), or give up on exp
            if "tanh" not in REGISTRY:
                return Expr(("neg", a.spec), a.shape, a.bound)
            a = Expr(("tanh", a.spec), a.shape, 1.0)
        bound = {"neg": a.bound, "exp": float(np.exp(a.bound)), "tanh": 1.0, "sigmoid": 1.0}[op]
        return Expr((op, a.spec), a.shape, bound)
    if kind == "binary":
        op = pick(draw, BINARY, turn)
        a = gen(draw, base, inputs, depth - 1, turn)
        c = gen(draw, base, inputs, depth - 1, turn)
        bound = {"add": a.bound + c.bound, "sub": a.bound + c.bound, "mul": a.bound * c.bound,
                 "div": a.bound}[op]
        return Expr((op, a.spec, c.spec), _broadcast(a.shape, c.shape), bound)
    if kind == "reduce" and REDUCE:
        op = pick(draw, REDUCE, turn)
        # reduce_max only on inputs: tied maxima have no unique gradient
        a = leaf() if op == "reduce_max" else gen(draw, base, inputs, depth - 1, turn)
        if not a.shape:
            return a
        axes = draw(st.lists(st.integers(0, len(a.shape) - 1), min_size=1, unique=True))
        axes = tuple(ax - len(a.shape) if draw(st.booleans()) else ax for ax in axes)
        shape = tuple(1 if i in [ax % len(a.shape) for ax in axes] else d for i, d in enumerate(a.shape))
        count = int(np.prod([a.shape[ax] for ax in axes]))
        bound = a.bound * count if op == "reduce_sum" else a.bound
        return Expr((op, a.spec, axes), shape, bound)
    # matmul with a fresh weight input [k, base[-1]] keeps the result compatible
    a = gen(draw, base, inputs, depth - 1, turn)
    if not a.shape:
        return a
    k = a.shape[-1]
    w = leaf((k, base[-1]))
    return Expr(("matmul", a.spec, w.spec), a.shape[:-1] + (base[-1],), a.bound * 1.5 * k)


def to_ir(b, spec, ins):
    op = spec[0]
    if op == "in":
        return ins[spec[1]]
    if op in TORCH_UNARY:
        return getattr(b, op)(to_ir(b, spec[1], ins))
    if op == "div":
        c = to_ir(b, spec[2], ins)
        return b.div(to_ir(b, spec[1], ins), b.add(b.mul(c, c), 1.0))
    if op in TORCH_BINARY or op == "matmul":
        return getattr(b, op)(to_ir(b, spec[1], ins), to_ir(b, spec[2], ins))
    return getattr(b, op)(to_ir(b, spec[1], ins), axes=spec[2], keepdims=True)


def to_torch(spec, ts):
    op = spec[0]
    if op == "in":
        return ts[spec[1]]
    if op in TORCH_UNARY:
        return TORCH_UNARY[op](to_torch(spec[1], ts))
    if op in TORCH_BINARY:
        return TORCH_BINARY[op](to_torch(spec[1], ts), to_torch(spec[2], ts))
    if op == "matmul":
        return to_torch(spec[1], ts) @ to_torch(spec[2], ts)
    return TORCH_REDUCE[op](to_torch(spec[1], ts), dim=spec[2], keepdim=True)


@st.composite
def programs(draw):
    base = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    inputs = []
    turn = [0]
    expr = gen(draw, base, inputs, draw(st.integers(2, 4)), turn)
    final = pick(draw, ["none", "all", "axes"], turn)
    final_axes = None
    if final == "axes" and expr.shape:
        final_axes = tuple(draw(st.lists(st.integers(-len(expr.shape), len(expr.shape) - 1),
                                         min_size=1, max_size=1)))
    elif final == "axes":
        final = "none"
    seed = draw(st.integers(0, 2 ** 16))
    return expr, inputs, final, final_axes, seed


@SETTINGS
@given(programs())
def test_random_graphs_match_torch(program):
    expr, shapes, final, final_axes, seed = program
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1.5, 1.5, s) for s in shapes]

    b = irtool.Builder("random")
    ins = [b.input(f"in{i}", "float64", s) for i, s in enumerate(shapes)]
    out = to_ir(b, expr.spec, ins)
    if final == "all":
        out = b.reduce_sum(out)
    elif final == "axes":
        out = b.reduce_sum(out, axes=final_axes)
    assert out.shape == (() if final == "all" else
                         tuple(np.sum(np.zeros(expr.shape), axis=final_axes).shape)
                         if final == "axes" else expr.shape)
    cot = rng.uniform(-1, 1, [int(d) for d in out.shape])
    loss = b.reduce_sum(b.mul(out, b.const(cot, "float64")))
    g = b.build([out, loss])
    irtool.verify(g)

    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    t_out = to_torch(expr.spec, ts)
    if final == "all":
        t_out = t_out.sum()
    elif final == "axes":
        t_out = t_out.sum(dim=final_axes)
    t_loss = (t_out * torch.from_numpy(cot)).sum()

    got_out, got_loss = irtool.run(g, arrays)
    assert got_out.shape == tuple(t_out.shape) and got_out.dtype == np.float64
    torch.testing.assert_close(torch.from_numpy(np.asarray(got_out)), t_out.detach())
    torch.testing.assert_close(torch.from_numpy(np.asarray(got_loss)), t_loss.detach())

    lg = b.build([loss])
    gg = irtool.grad(lg, wrt=[v.name for v in ins])
    irtool.verify(gg)
    got = irtool.run(gg, arrays)
    ref = torch.autograd.grad(t_loss, ts, allow_unused=True)
    for i, (a, r) in enumerate(zip(got[1:], ref)):
        r = torch.zeros_like(ts[i]) if r is None else r
        assert a.shape == shapes[i]
        torch.testing.assert_close(torch.from_numpy(np.asarray(a)), r, msg=lambda m: f"d/d in{i}: {m}")

    # the gradient graph survives a save/load round trip unchanged
    back = serialize.from_bytes(serialize.to_bytes(gg))
    assert str(back) == str(gg)
    for a, c in zip(got, irtool.run(back, arrays)):
        np.testing.assert_array_equal(a, c)


names = st.sampled_from(["a", "b", "seq"])
dims = st.one_of(st.integers(0, 6), names,
                 st.tuples(st.integers(1, 4), st.lists(names, min_size=1, max_size=3)).map(
                     lambda t: canon("*".join([str(t[0])] + t[1]))))
envs = st.fixed_dictionaries({"a": st.integers(1, 7), "b": st.integers(1, 7), "seq": st.integers(1, 7)})


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(dims, dims, envs)
def test_dim_arithmetic_agrees_with_integers(x, y, env):
    ex, ey = evaluate(x, env), evaluate(y, env)
    p = mul_dims(x, y)
    assert evaluate(p, env) == ex * ey
    assert mul_dims(x, y) == mul_dims(y, x)
    q = div_dims(p, y)
    if ey != 0 and not (isinstance(y, int) and y == 0):
        assert q is not None and evaluate(q, env) == ex
    s = add_dims(x, y)
    assert evaluate(s, env) == ex + ey
    assert evaluate(canon(str(s)), env) == ex + ey
    d = div_dims(x, y)
    if d is not None:
        assert evaluate(d, env) * ey == ex
