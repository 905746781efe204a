"""Every registered op must be complete: samples, a numpy kernel (or a
decomposition), an ONNX lowering (or a decomposition), a gradient (vjp,
decomposition, or declared not differentiable) and a test oracle."""
import pytest

from irtool.exporters.onnx import LOWERINGS
from irtool.exporters.torch.lowering import LOWERINGS as TORCH_LOWERINGS
from irtool.ir.opdef import REGISTRY
from irtool.runtime.kernels import KERNELS
from tests.oracles import ORACLES

OPS = sorted(REGISTRY.values(), key=lambda op: op.name)


def _missing(op):
    gaps = []
    if op.samples is None:
        gaps.append("samples")
    if op not in KERNELS and op.decompose is None:
        gaps.append("numpy kernel")
    if op not in LOWERINGS and op.decompose is None:
        gaps.append("ONNX lowering")
    if op not in TORCH_LOWERINGS and op.decompose is None:
        gaps.append("torch lowering")
    if op.differentiable and op.vjp is None and op.decompose is None:
        gaps.append("vjp")
    if op.name not in ORACLES:
        gaps.append("test oracle")
    return gaps


def test_every_op_lowers_to_tensorflow():
    pytest.importorskip("tensorflow")
    from irtool.exporters.tensorflow.lowering import LOWERINGS as TF_LOWERINGS
    missing = [op.name for op in OPS if op not in TF_LOWERINGS and op.decompose is None]
    assert not missing, f"ops with no TensorFlow lowering or decomposition: {missing}"


def test_every_op_is_complete():
    gaps = {op.name: _missing(op) for op in OPS}
    gaps = {k: v for k, v in gaps.items() if v}
    assert not gaps, "ops missing pieces: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in gaps.items())


REQUIRED = """neg abs sign exp log log1p sqrt rsqrt reciprocal sin cos tanh sigmoid erf floor ceil round isnan
logical_not add sub mul div pow maximum minimum mod eq ne lt le gt ge logical_and logical_or where clip
cast reduce_sum reduce_mean reduce_max reduce_min reduce_prod argmax argmin cumsum matmul reshape
transpose expand squeeze unsqueeze concat split slice pad gather gather_elements scatter_add tile flip
shape_of arange full conv conv_transpose max_pool avg_pool resize topk relu leaky_relu gelu silu
softplus elu hardsigmoid hardswish softmax log_softmax logsumexp layer_norm batch_norm group_norm linear
embedding scaled_dot_product_attention mse_loss cross_entropy""".split()


@pytest.mark.parametrize("name", REQUIRED)
def test_required_op_is_registered(name):
    assert name in REGISTRY, f"op {name!r} is not declared"
