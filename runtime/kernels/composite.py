"""numpy kernels for irtool.ir.ops.composite.

Fused, vectorised and numerically stable (max-shifted softmax family,
logaddexp softplus, expm1 elu). float16/bfloat16 inputs are computed in
float32 and cast back, so every kernel returns exactly the input's dtype."""
import functools
import math

import numpy as np

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import composite as ops
from irtool.runtime.kernels.elementwise import erf32

_HALF = (np_dtype("float16"), np_dtype("bfloat16"))


def kernel(fn):
    """Run fn in float32 for half-precision inputs; return the input dtype."""
    @functools.wraps(fn)
    def run(x, *rest, **attrs):
        dt = x.dtype
        if dt in _HALF:
            x = x.astype(np.float32)
            rest = [a.astype(np.float32) if a.dtype == dt else a for a in rest]
        return np.asarray(fn(x, *rest, **attrs)).astype(dt, copy=False)
    return run


def _axes(axes, rank):
    return tuple(range(rank)) if axes is None else tuple(a % rank for a in axes) if rank else ()


@functools.cache
def _erf():
    # the elementwise group's erf kernel: one erf implementation for the runtime
    from irtool.ir.opdef import REGISTRY
    from irtool.runtime.kernels import KERNELS
    return KERNELS[REGISTRY["erf"]]


# -- activations -----------------------------------------------------------------

def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        half_x = x * 0.5
        inner = (x + x * x * x * ops.GELU_TANH_C) * ops.SQRT_2_OVER_PI
        return half_x * (np.tanh(inner) + 1)
    if x.dtype == np.float32:      # erf(x / sqrt 2), then (1 + erf) x 0.5 in place
        y = erf32(x, ops.INV_SQRT2)
        y += 1
        y *= x
        y *= 0.5
        return y
    return x * 0.5 * (_erf()(x * ops.INV_SQRT2) + 1)


def _softplus(x, beta=1.0, threshold=20.0):
    z = x * beta
    return np.where(z > threshold, x, np.logaddexp(0, z) / beta)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * alpha)


def _hardsigmoid(x):
    return np.clip(x + 3, 0, 6) / 6


# -- softmax family ----------------------------------------------------------------

def _shift(x, axes):
    """x - max over axes (keepdims), with all -inf slices shifted by 0."""
    m = np.max(x, axis=axes, keepdims=True)
    return x - np.where(np.isfinite(m), m, 0), m


def _softmax(x, axis=-1):
    return _exp_normalize(np.asarray(_shift(x, axis)[0]), axis)


def _exp_normalize(s, axis):
    """exp(s) / sum(exp(s)) along axis, overwriting s (a fresh, max-shifted array)."""
    np.exp(s, out=s)
    s /= np.sum(s, axis=axis, keepdims=True)
    return s


def _log_softmax(x, axis=-1):
    s = _shift(x, axis)[0]
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _logsumexp(x, axes=None, keepdims=False):
    axes = _axes(axes, x.ndim)
    if not axes:
        return x.copy()
    s, m = _shift(x, axes)
    out = np.log(np.sum(np.exp(s), axis=axes, keepdims=True)) + np.where(np.isfinite(m), m, 0)
    return out if keepdims else np.squeeze(out, axis=axes)


# -- normalisation -------------------------------------------------------------------

def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) as a fresh array (later steps work in place)."""
    xc = np.asarray(x - np.mean(x, axis=axes, keepdims=True))
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    xc *= 1 / np.sqrt(var + eps)
    return xc


def _layer_norm(x, *wb, axis=-1, eps=1e-5):
    y = _normalize(x, tuple(range(axis % x.ndim, x.ndim)), eps)
    if len(wb) > 0:
        y *= wb[0]
    if len(wb) > 1:
        y += wb[1]
    return y


def _channel(p, rank):
    return p.reshape(p.shape + (1,) * (rank - 2))


def _batch_norm(x, weight, bias, mean, var, eps=1e-5):
    scale = (1 / np.sqrt(var + eps)) * weight
    r = x.ndim
    y = np.asarray(x - _channel(mean, r))
    y *= _channel(scale, r)
    y += _channel(bias, r)
    return y


def _group_norm(x, *wb, groups, eps=1e-5):
    y = _normalize(x.reshape(x.shape[0], groups, -1), -1, eps).reshape(x.shape)
    if wb:
        y = y * _channel(wb[0], x.ndim) + _channel(wb[1], x.ndim)
    return y


# -- linear, embedding, attention ----------------------------------------------------

def _linear(x, w, bias=None):
    if x.ndim > 2 and x.flags.c_contiguous:      # one GEMM over all leading axes
        y = np.matmul(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]), w.T).reshape(x.shape[:-1] + w.shape[:1])
    else:
        y = np.asarray(np.matmul(x, w.T))
    if bias is not None:
        y += bias
    return y


def _sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.asarray(np.matmul(q, np.swapaxes(k, -1, -2)))
    s *= np.asarray(scale, q.dtype)
    if is_causal:
        mask = np.tril(np.ones((q.shape[-2], k.shape[-2]), dtype=bool))
    if mask is not None:
        if mask.dtype == np.bool_:
            s = np.where(mask, s, -np.inf).astype(q.dtype, copy=False)
        elif np.broadcast_shapes(s.shape, mask.shape) == s.shape:
            s += mask
        else:
            s = s + mask
    m = np.max(s, axis=-1, keepdims=True)
    s -= np.where(np.isfinite(m), m, 0)
    return np.matmul(_exp_normalize(s, -1), v)


# -- losses ------------------------------------------------------------------------------

def _reduce(loss, reduction):
    if reduction == "sum":
        return np.sum(loss)
    if reduction == "mean":
        return np.mean(loss)
    return loss


def _mse_loss(pred, target, reduction="mean"):
    d = pred - target
    return _reduce(d * d, reduction)


def _cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    cax = 1 if logits.ndim >= 2 else 0
    lsm = _log_softmax(logits, cax)
    ignored = None if ignore_index is None else labels == ignore_index
    idx = labels if ignored is None else np.where(ignored, 0, labels)
    loss = -np.squeeze(np.take_along_axis(lsm, np.expand_dims(idx, cax), axis=cax), axis=cax)
    if label_smoothing:
        smooth = -np.mean(lsm, axis=cax)
        loss = loss * (1.0 - label_smoothing) + smooth * label_smoothing
    loss = np.asarray(loss, logits.dtype)
    if ignored is None:
        return _reduce(loss, reduction)
    loss = np.where(ignored, 0, loss).astype(logits.dtype, copy=False)
    if reduction == "mean":
        return np.sum(loss) / np.asarray(np.count_nonzero(~ignored), logits.dtype)
    return _reduce(loss, reduction)


KERNELS = {
    ops.RELU: kernel(lambda x: np.maximum(x, 0)),
    ops.LEAKY_RELU: kernel(lambda x, alpha=0.01: np.where(x > 0, x, x * alpha)),
    ops.GELU: kernel(_gelu),
    ops.SILU: kernel(lambda x: x * _sigmoid(x)),
    ops.SOFTPLUS: kernel(_softplus),
    ops.ELU: kernel(_elu),
    ops.HARDSIGMOID: kernel(_hardsigmoid),
    ops.HARDSWISH: kernel(lambda x: x * _hardsigmoid(x)),
    ops.SOFTMAX: kernel(_softmax),
    ops.LOG_SOFTMAX: kernel(_log_softmax),
    ops.LOGSUMEXP: kernel(_logsumexp),
    ops.LAYER_NORM: kernel(_layer_norm),
    ops.BATCH_NORM: kernel(_batch_norm),
    ops.GROUP_NORM: kernel(_group_norm),
    ops.LINEAR: kernel(_linear),
    ops.EMBEDDING: kernel(lambda weight, indices, padding_idx=None: np.take(weight, indices, axis=0)),
    ops.SCALED_DOT_PRODUCT_ATTENTION: kernel(_sdpa),
    ops.MSE_LOSS: kernel(_mse_loss),
    ops.CROSS_ENTROPY: kernel(_cross_entropy),
}
