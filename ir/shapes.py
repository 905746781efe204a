"""Shapes whose dims are ints or symbolic names, and the arithmetic on them.

A symbolic dim is a string. Plain names ("batch") come from inputs; products
of names and ints ("4*batch*seq") come from shape rules such as reshape(-1) or
flatten, kept in a canonical form (coefficient first, names sorted) so that two
rules deriving the same dim produce the same string. Anything else we cannot
reason about (a sum after concat, say) becomes an opaque string such as
"(a+b)"; rules treat it as a name.
"""
import re

from irtool.errors import IRTypeError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$|^\(.*\)$")


def _split(d, sep):
    """Split d on `sep` outside parentheses: "2*(a*b+c)" -> ["2", "(a*b+c)"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(d):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(d[start:i])
            start = i + 1
    parts.append(d[start:])
    return parts


def _monomial(d):
    """dim -> (coef, tuple of sorted names)."""
    if isinstance(d, int):
        return d, ()
    coef, names = 1, []
    for part in _split(d, "*"):
        if part.isdigit():
            coef *= int(part)
        else:
            names.append(part)
    return coef, tuple(sorted(names))


def _from_monomial(coef, names):
    if not names:
        return coef
    if coef == 0:
        return 0
    parts = ([str(coef)] if coef != 1 else []) + list(names)
    return "*".join(parts)


def check_shape(shape):
    """Canonical tuple form of a shape; rejects negative dims and bad names."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise IRTypeError(f"shape must be a sequence of ints or names, got {shape!r}") from None
    if isinstance(shape, str):
        raise IRTypeError(f"shape must be a sequence of ints or names, got the string {shape!r}")
    out = []
    for d in dims:
        if isinstance(d, bool):
            raise IRTypeError(f"bad dim {d!r} in shape {shape!r}")
        if not isinstance(d, (int, str)):
            if hasattr(d, "__index__"):
                d = int(d)
            else:
                raise IRTypeError(f"bad dim {d!r} in shape {shape!r}")
        if isinstance(d, int) and d < 0:
            raise IRTypeError(f"negative dim {d} in shape {shape!r}")
        if isinstance(d, str):
            d = canon(d)
        out.append(d)
    return tuple(out)


def canon(d):
    """Canonical form of a dim expression."""
    if isinstance(d, int):
        return d
    if d.isdigit():
        return int(d)
    if not all(_NAME.match(p) and _balanced(p) or p.isdigit() for p in _split(d, "*")):
        raise IRTypeError(f"bad symbolic dim {d!r}")
    return _from_monomial(*_monomial(d))


def _balanced(p):
    depth = 0
    for ch in p:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def mul_dims(*dims):
    coef, names = 1, []
    for d in dims:
        c, n = _monomial(d)
        coef *= c
        names.extend(n)
    return _from_monomial(coef, tuple(sorted(names)))


def div_dims(a, b):
    """Exact a / b, or None when it cannot be shown to divide."""
    ca, na = _monomial(a)
    cb, nb = _monomial(b)
    if ca == 0 and cb != 0:
        return 0
    if cb == 0 or ca % cb:
        return None
    rest = list(na)
    for n in nb:
        if n not in rest:
            return None
        rest.remove(n)
    return _from_monomial(ca // cb, tuple(rest))


def add_dims(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return f"({a}+{b})"


def numel(shape):
    return mul_dims(*shape) if shape else 1


def is_static(shape):
    return all(isinstance(d, int) for d in shape)


def broadcast(*shapes):
    """numpy broadcasting over symbolic shapes.

    A symbolic dim against 1 stays symbolic; against an int n != 1 becomes n
    (the only value that can broadcast); two different names keep the first,
    trusting the caller (the runtime checks the real sizes)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1 or d == dim:
                continue
            if dim == 1:
                dim = d
            elif isinstance(d, int) and isinstance(dim, int):
                raise IRTypeError(f"shapes {' and '.join(map(fmt, shapes))} do not broadcast")
            elif isinstance(d, int):
                dim = d
        out.append(dim)
    return tuple(out)


def norm_axis(axis, rank):
    if not -rank <= axis < max(rank, 1):
        raise IRTypeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def norm_axes(axes, rank):
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted({norm_axis(a, rank) for a in axes}))
    if len(out) != len(axes):
        raise IRTypeError(f"repeated axis in {axes}")
    return out


def fmt(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def bind(shape, concrete, env):
    """Match a declared shape against an array's shape, filling env with
    symbol values. Returns an error string, or None when they agree.
    Derived dims ("4*batch") are checked once their names are bound; call
    `check_bound` after binding every input to check the rest."""
    if len(shape) != len(concrete):
        return f"expected rank {len(shape)} {fmt(shape)}, got shape {list(concrete)}"
    for d, c in zip(shape, concrete):
        if isinstance(d, int):
            if d != c:
                return f"expected shape {fmt(shape)}, got {list(concrete)}"
        elif _NAME.match(d) and not d.startswith("("):
            if env.setdefault(d, c) != c:
                return f"dim {d!r} is {env[d]} elsewhere but {c} here (shape {list(concrete)})"
    return check_bound(shape, concrete, env)


def check_bound(shape, concrete, env):
    """Error string when a derived dim of `shape` whose names are all bound
    in env disagrees with the concrete size; None otherwise."""
    for d, c in zip(shape, concrete):
        if isinstance(d, str) and not (_NAME.match(d) and not d.startswith("(")):
            try:
                want = evaluate(d, env)
            except IRTypeError:
                continue                    # not all names bound (yet)
            if want != c:
                return f"dim {d!r} is {want} under {_env_text(d, env)} but {c} here (shape {list(concrete)})"
    return None


def _env_text(d, env):
    names = sorted(set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", d)) & set(env))
    return ", ".join(f"{n}={env[n]}" for n in names)


def _evaluate_sum(expr, env):
    """Value of "a+b-3" style sums (terms are dims, signs at depth 0)."""
    total, sign, depth, start = 0, 1, 0, 0
    for i, ch in enumerate(expr + "+"):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0 and i > start:
            term = expr[start:i].strip()
            total += sign * evaluate(int(term) if term.isdigit() else canon(term), env)
            sign, start = (1 if ch == "+" else -1), i + 1
        elif ch in "+-" and depth == 0:
            sign, start = (-sign if ch == "-" else sign), i + 1
    return total


def evaluate(d, env):
    """Concrete value of a dim under symbol bindings. Opaque sums "(a+b)"
    are evaluated too when every name inside is bound."""
    if isinstance(d, int):
        return d
    coef, names = _monomial(d)
    total = coef
    for n in names:
        if n.startswith("(") and n.endswith(")"):
            total *= _evaluate_sum(n[1:-1], env)
        elif n in env:
            total *= env[n]
        else:
            raise IRTypeError(f"symbolic dim {n!r} is not bound by any graph input")
    return total


def has_symbol(v):
    """Whether a shape attr (a dim, or a tuple of dims) holds a symbolic dim."""
    return isinstance(v, str) or (isinstance(v, tuple) and any(isinstance(d, str) for d in v))


def resolve(v, env):
    """Concrete value of a shape attr (a dim, or a tuple of dims) under env."""
    if isinstance(v, str):
        return evaluate(v, env)
    return tuple(evaluate(d, env) if isinstance(d, str) else d for d in v)
