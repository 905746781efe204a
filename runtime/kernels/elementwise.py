"""numpy kernels for irtool.ir.ops.elementwise.

Float math on float16/bfloat16 is computed in float32 and rounded back, as
torch does. numpy has no erf: float64 `erf` implements W. J. Cody's rational
approximations (CALERF, Netlib specfun), accurate to a few float64 ulps;
float32 (and the half types through it) uses one rational approximation
x * P(x^2) / Q(x^2), evaluated in float64 over cache-sized chunks and rounded
once, so it stays within 1 float32 ulp at a fraction of Cody's cost."""
import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import elementwise as ops

_HALF = (np.dtype(np.float16), np_dtype("bfloat16"))


def _float_math(fn):
    """Run fn in float32 for half-precision inputs; return the input's dtype."""
    def kernel(x):
        if x.dtype in _HALF:
            return np.asarray(fn(x.astype(np.float32))).astype(x.dtype)
        return np.asarray(fn(x), dtype=x.dtype)
    kernel.__name__ = getattr(fn, "__name__", "kernel")
    return kernel


# -- erf (Cody) -----------------------------------------------------------------------
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_RSQRT_PI = 5.6418958354775628695e-1


def erf64(x):
    """erf in float64 (any float input), vectorised; NaN in, NaN out."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    # |x| <= 0.46875: erf = x * R(x^2)
    xs = np.where(y <= 0.46875, x, 0.0)
    z = xs * xs
    num, den = _A[4] * z, z
    for i in range(3):
        num = (num + _A[i]) * z
        den = (den + _B[i]) * z
    small = xs * (num + _A[3]) / (den + _B[3])
    # 0.46875 < |x| <= 4: erfc(|x|) = exp(-x^2) * R(|x|)
    ym = np.minimum(y, 4.0)
    num, den = _C[8] * ym, ym
    for i in range(7):
        num = (num + _C[i]) * ym
        den = (den + _D[i]) * ym
    mid = (num + _C[7]) / (den + _D[7])
    # |x| > 4: erfc(|x|) = exp(-x^2) / |x| * (1/sqrt(pi) + R(1/x^2) / x^2)
    yl = np.clip(y, 4.0, 30.0)          # erfc(30) underflows to 0 in float64
    z = 1.0 / (yl * yl)
    num, den = _P[5] * z, z
    for i in range(4):
        num = (num + _P[i]) * z
        den = (den + _Q[i]) * z
    large = (_RSQRT_PI - z * (num + _P[4]) / (den + _Q[4])) / yl
    # exp(-y^2) split as exp(-r^2) exp(-(y - r)(y + r)) with r = y rounded to 1/16
    yc = np.minimum(y, 30.0)
    r = np.trunc(yc * 16.0) / 16.0
    erfc = np.where(y <= 4.0, mid, large) * (np.exp(-r * r) * np.exp(-(yc - r) * (yc + r)))
    big = np.copysign((0.5 - erfc) + 0.5, x)
    return np.where(y <= 0.46875, small, np.where(np.isnan(x), x, big))


# -- erf (float32) -----------------------------------------------------------------------
# minimax fit of erf(x)/x = P(t)/Q(t), t = x^2, on |x| <= 3.92 (relative error 1.9e-8,
# 0.3 float32 ulp; all coefficients positive, so Horner's rule cancels nothing); erf rounds
# to +-1 in float32 beyond |x| = 3.8325, and the fit gives exactly 1.0f at the clamp
_ERF32_P = tuple(map(np.float64, (1.1283791461311523, 0.1904071137922901, 0.052748815231296375,
                                  0.003765646697117329, 0.0002848837350400839, 2.050086618138942e-06)))
_ERF32_Q = tuple(map(np.float64, (1.0, 0.5020766517560248, 0.11410938524554233,
                                  0.014969275569353072, 0.0011625433763594942, 3.809176130837488e-05)))
_ERF32_CLAMP = 3.92
_CHUNK = 16384          # float64 temporaries of one chunk stay in L2


def erf32(x, scale=None):
    """erf(x) (or erf(x * scale)) of a float32 array as a new float32 array,
    within 1 float32 ulp of the exact value; NaN in, NaN out."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, np.float32)
    xf, of = x.reshape(-1), out.reshape(-1)
    size = xf.size
    if size == 0:
        return out
    lim = _ERF32_CLAMP if scale is None else _ERF32_CLAMP / abs(scale)
    clamp = not (-lim < xf.min() and xf.max() < lim)       # NaN compares False: clip keeps it
    n = min(_CHUNK, size)
    xd, t, p, q = (np.empty(n) for _ in range(4))
    P0, P1, P2, P3, P4, P5 = _ERF32_P
    _, Q1, Q2, Q3, Q4, Q5 = _ERF32_Q
    for s in range(0, size, _CHUNK):
        e = min(s + _CHUNK, size)
        if e - s != n:
            n = e - s
            xd, t, p, q = xd[:n], t[:n], p[:n], q[:n]
        np.copyto(xd, xf[s:e])
        if scale is not None:
            xd *= scale
        if clamp:
            np.clip(xd, -_ERF32_CLAMP, _ERF32_CLAMP, out=xd)
        np.multiply(xd, xd, out=t)
        np.multiply(t, P5, out=p)
        p += P4
        np.multiply(t, Q5, out=q)
        q += Q4
        for pc, qc in ((P3, Q3), (P2, Q2), (P1, Q1)):
            p *= t
            p += pc
            q *= t
            q += qc
        p *= t
        p += P0
        q *= t
        q += 1.0
        p *= xd
        p /= q
        np.copyto(of[s:e], p, casting="same_kind")
    return out


def _erf(x):
    if x.dtype == np.float64:
        return erf64(x)
    if x.dtype == np.float32:
        return erf32(x)
    return erf32(x.astype(np.float32)).astype(x.dtype)


def _pow(x, y):
    # scalar exponents 1, 2, 3, -1 by multiplication (as torch does), exact or within an ulp of
    # powf, which numpy evaluates per element at ~25 ns each
    if y.size == 1 and y.ndim <= x.ndim and x.dtype == y.dtype and x.dtype in _FLOAT:
        v = y.item()
        if v == 2:
            return np.multiply(x, x)
        if v == 3:
            out = np.multiply(x, x)
            out *= x
            return out
        if v == 1:
            return x.copy()
        if v == -1:
            return np.divide(1, x, dtype=x.dtype)
    return np.power(x, y)


_FLOAT = (np.dtype(np.float32), np.dtype(np.float64))


def _sigmoid(x):
    e = np.exp(-np.abs(x))                 # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _int_div(x, y):
    """Integer division truncating toward zero (C, ONNX Div); x / 0 gives 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.floor_divide(x, y)
        fix = (np.remainder(x, y) != 0) & ((x < 0) != (y < 0))
    return (q + fix).astype(q.dtype)


def _div(x, y):
    if x.dtype.kind in "iu":
        return _int_div(x, y)
    return np.divide(x, y)


def _mod(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mod(x, y)


def _clip(x, min=None, max=None):
    if min is not None:
        x = np.maximum(x, np.asarray(min).astype(x.dtype))
    if max is not None:
        x = np.minimum(x, np.asarray(max).astype(x.dtype))
    return np.array(x, copy=True) if min is None and max is None else x


KERNELS = {
    ops.NEG: np.negative,
    ops.ABS: np.abs,
    ops.SIGN: np.sign,
    ops.EXP: _float_math(np.exp),
    ops.LOG: _float_math(np.log),
    ops.LOG1P: _float_math(np.log1p),
    ops.SQRT: _float_math(np.sqrt),
    ops.RSQRT: _float_math(lambda x: 1 / np.sqrt(x)),
    ops.RECIPROCAL: _float_math(lambda x: 1 / x),
    ops.SIN: _float_math(np.sin),
    ops.COS: _float_math(np.cos),
    ops.TANH: _float_math(np.tanh),
    ops.SIGMOID: _float_math(_sigmoid),
    ops.ERF: _erf,
    ops.FLOOR: _float_math(np.floor),
    ops.CEIL: _float_math(np.ceil),
    ops.ROUND: _float_math(np.round),         # half to even
    ops.ISNAN: np.isnan,
    ops.LOGICAL_NOT: np.logical_not,
    ops.ADD: np.add,
    ops.SUB: np.subtract,
    ops.MUL: np.multiply,
    ops.DIV: _div,
    ops.POW: _pow,
    ops.MAXIMUM: np.maximum,
    ops.MINIMUM: np.minimum,
    ops.MOD: _mod,
    ops.EQ: np.equal,
    ops.NE: np.not_equal,
    ops.LT: np.less,
    ops.LE: np.less_equal,
    ops.GT: np.greater,
    ops.GE: np.greater_equal,
    ops.LOGICAL_AND: np.logical_and,
    ops.LOGICAL_OR: np.logical_or,
    ops.WHERE: np.where,
    ops.CLIP: _clip,
    ops.STOP_GRADIENT: lambda x: x,          # the interpreter copies outputs that alias inputs
    ops.CAST: lambda x, dtype: x.astype(np_dtype(dtype)),
}
