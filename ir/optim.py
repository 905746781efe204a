"""Optimizers as IR: each builds the update of one training step.

`update(b, params, grads, state)` appends IR nodes computing new params and
new state from Values; `state_spec(params)` lists the state tensors (name,
dtype, shape, initial value). Formulas follow torch.optim exactly (same
operation order), so IR training matches torch step by step.
"""
import numpy as np

from irtool.errors import IRToolError


class Optimizer:
    def state_spec(self, params):
        return []

    def update(self, b, params, grads, state):
        raise NotImplementedError

    def _check(self):
        if not self.lr > 0:
            raise IRToolError(f"learning rate must be positive, got {self.lr}")


class SGD(Optimizer):
    """torch.optim.SGD(lr, momentum, nesterov, weight_decay), dampening 0."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.nesterov, self.weight_decay = float(lr), float(momentum), nesterov, float(weight_decay)
        self._check()
        if nesterov and momentum <= 0:
            raise IRToolError("nesterov momentum needs momentum > 0")

    def state_spec(self, params):
        if not self.momentum:
            return []
        return [(f"momentum.{p.name}", p.dtype, p.shape, 0.0) for p in params]

    def update(self, b, params, grads, state):
        new_params, new_state = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay:
                g = b.add(g, b.mul(p, self.weight_decay))
            if self.momentum:
                # torch starts the buffer at g; a zero buffer gives the same first step
                buf = b.add(b.mul(state[i], self.momentum), g)
                new_state.append(buf)
                g = b.add(g, b.mul(buf, self.momentum)) if self.nesterov else buf
            new_params.append(b.sub(p, b.mul(g, self.lr)))
        return new_params, new_state


class Adam(Optimizer):
    """torch.optim.Adam (decoupled=False) and AdamW (decoupled=True)."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), float(weight_decay)
        self._check()

    def state_spec(self, params):
        spec = [("adam.step", "float32", (), 0.0)]
        for p in params:
            spec += [(f"adam.exp_avg.{p.name}", p.dtype, p.shape, 0.0),
                     (f"adam.exp_avg_sq.{p.name}", p.dtype, p.shape, 0.0)]
        return spec

    def update(self, b, params, grads, state):
        b1, b2 = self.betas
        step = b.add(state[0], 1.0)
        # torch computes the bias corrections in double precision (Python floats)
        t = b.cast(step, dtype="float64")
        bias1 = b.sub(b.const(1.0, "float64"), b.pow(b.const(b1, "float64"), t))
        bias2_sqrt = b.sqrt(b.sub(b.const(1.0, "float64"), b.pow(b.const(b2, "float64"), t)))
        step_size = b.div(b.const(self.lr, "float64"), bias1)
        new_params, new_state = [], [step]
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = state[1 + 2 * i], state[2 + 2 * i]
            if self.weight_decay and self.decoupled:
                p = b.mul(p, 1.0 - self.lr * self.weight_decay)
            elif self.weight_decay:
                g = b.add(g, b.mul(p, self.weight_decay))
            m = b.add(m, b.mul(b.sub(g, m), 1.0 - b1))              # exp_avg.lerp_(g, 1 - b1)
            v = b.add(b.mul(v, b2), b.mul(b.mul(g, 1.0 - b2), g))   # mul_(b2).addcmul_(g, g, 1 - b2)
            denom = b.add(b.div(b.sqrt(v), b.cast(bias2_sqrt, dtype=p.dtype)), self.eps)
            lr_t = b.cast(step_size, dtype=p.dtype)
            new_params.append(b.sub(p, b.div(b.mul(m, lr_t), denom)))  # addcdiv_(m, denom, -step_size)
            new_state += [m, v]
        return new_params, new_state


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay (default 1e-2, as torch)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def initial_state(spec):
    from irtool.ir.dtypes import np_dtype
    return [np.full(shape, value, dtype=np_dtype(dtype)) for _, dtype, shape, value in spec]
