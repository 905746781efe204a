"""torch oracles for irtool.ir.ops.composite (torch.nn.functional)."""
import torch
import torch.nn.functional as F


def _layer_norm(x, weight=None, bias=None, axis=-1, eps=1e-5):
    return F.layer_norm(x, x.shape[axis % x.ndim:], weight, bias, eps)


def _batch_norm(x, weight, bias, mean, var, eps=1e-5):
    # F.batch_norm refuses gradients for running stats; the IR op treats them as inputs
    c = (-1,) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(c)) / torch.sqrt(var.reshape(c) + eps) * weight.reshape(c) + bias.reshape(c)


def _group_norm(x, weight=None, bias=None, groups=1, eps=1e-5):
    return F.group_norm(x, groups, weight, bias, eps)


def _logsumexp(x, axes=None, keepdims=False):
    dims = tuple(range(x.ndim)) if axes is None else tuple(axes)
    return torch.logsumexp(x, dim=dims, keepdim=keepdims)


def _sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def _cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    return F.cross_entropy(logits, labels.long(), reduction=reduction, label_smoothing=label_smoothing,
                           ignore_index=-100 if ignore_index is None else ignore_index)


ORACLES = {
    "relu": F.relu,
    "leaky_relu": lambda x, alpha=0.01: F.leaky_relu(x, alpha),
    "gelu": lambda x, approximate="none": F.gelu(x, approximate=approximate),
    "silu": F.silu,
    "softplus": lambda x, beta=1.0, threshold=20.0: F.softplus(x, beta, threshold),
    "elu": lambda x, alpha=1.0: F.elu(x, alpha),
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "softmax": lambda x, axis=-1: torch.softmax(x, axis),
    "log_softmax": lambda x, axis=-1: torch.log_softmax(x, axis),
    "logsumexp": _logsumexp,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "group_norm": _group_norm,
    "linear": F.linear,
    "embedding": lambda weight, indices, padding_idx=None: F.embedding(indices.long(), weight, padding_idx=padding_idx),
    "scaled_dot_product_attention": _sdpa,
    "mse_loss": lambda pred, target, reduction="mean": F.mse_loss(pred, target, reduction=reduction),
    "cross_entropy": _cross_entropy,
}
