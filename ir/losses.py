"""Loss functions for training: each builds a scalar loss from the model's
prediction and a target input, with torch's formulas and reductions.

A loss is named ("mse", "l1", "cross_entropy", "bce_with_logits") or given
as `Loss(name, **options)` (e.g. `Loss("cross_entropy", label_smoothing=0.1)`).
`target_type` says what the target input looks like for a prediction."""
from dataclasses import dataclass, field

from irtool.errors import IRToolError
from irtool.ir.graph import TensorType


def _mse(b, pred, target, reduction="mean"):
    return b.mse_loss(pred, target, reduction=reduction)


def _l1(b, pred, target, reduction="mean"):
    d = b.abs(b.sub(pred, target))
    return b.reduce_mean(d) if reduction == "mean" else b.reduce_sum(d)


def _cross_entropy(b, logits, labels, reduction="mean", label_smoothing=0.0, ignore_index=None):
    return b.cross_entropy(logits, labels, reduction=reduction, label_smoothing=float(label_smoothing),
                           ignore_index=ignore_index)


def _bce_with_logits(b, x, y, reduction="mean"):
    # torch's stable form: max(x, 0) - x*y + log(1 + exp(-|x|))
    loss = b.add(b.sub(b.relu(x), b.mul(x, y)), b.log1p(b.exp(b.neg(b.abs(x)))))
    return b.reduce_mean(loss) if reduction == "mean" else b.reduce_sum(loss)


def _same(pred):
    return TensorType(pred.dtype, pred.shape)


def _class_labels(pred):
    if pred.rank < 2:
        raise IRToolError(f"cross_entropy needs logits of shape (N, C, ...), got {pred.type}")
    return TensorType("int64", (pred.shape[0],) + pred.shape[2:])


LOSSES = {
    "mse": (_mse, _same),
    "l1": (_l1, _same),
    "cross_entropy": (_cross_entropy, _class_labels),
    "bce_with_logits": (_bce_with_logits, _same),
}


@dataclass
class Loss:
    name: str
    options: dict = field(default_factory=dict)

    def __init__(self, name, **options):
        if name not in LOSSES:
            raise IRToolError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
        self.name, self.options = name, options

    def build(self, b, pred, target):
        return LOSSES[self.name][0](b, pred, target, **self.options)

    def target_type(self, pred):
        return LOSSES[self.name][1](pred)


def as_loss(loss):
    return loss if isinstance(loss, Loss) else Loss(loss)
