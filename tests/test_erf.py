"""The numpy erf kernel (Cody's rational approximations) against torch.erf."""
import numpy as np
import pytest

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import elementwise as ops
from irtool.runtime.kernels.elementwise import KERNELS, erf64

torch = pytest.importorskip("torch")


def _points():
    rng = np.random.default_rng(0)
    return np.concatenate([
        np.linspace(-8, 8, 100001),                      # covers all three Cody ranges
        np.geomspace(1e-300, 30, 5000), -np.geomspace(1e-300, 30, 5000),
        rng.standard_normal(20000) * 3,
        np.nextafter(0.46875, [-1, 1]), np.nextafter(4.0, [0, 8]),   # range boundaries
        [0.46875, 4.0, 26.5, 1e300, -1e300, np.finfo(np.float64).tiny, 5e-324]])


def test_erf64_matches_torch_to_a_few_ulps():
    x = _points()
    ours = erf64(x)
    theirs = torch.erf(torch.from_numpy(x)).numpy()
    assert ours.dtype == np.float64 and ours.shape == x.shape
    nz = theirs != 0
    rel = np.abs(ours - theirs)[nz] / np.abs(theirs[nz])
    assert rel.max() < 1e-14, f"max relative error {rel.max():.3g} at x={x[nz][rel.argmax()]!r}"
    assert np.array_equal(ours[~nz], theirs[~nz])


def test_erf64_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 40.0, -40.0])
    out = erf64(x)
    assert out[0] == 0 and out[1] == 0 and np.signbit(out[1])
    assert out[2] == 1 and out[3] == -1 and np.isnan(out[4])
    assert out[5] == 1 and out[6] == -1


def test_erf64_is_odd_and_keeps_shape():
    x = np.random.default_rng(1).uniform(-6, 6, size=(3, 4, 5))
    np.testing.assert_array_equal(erf64(-x), -erf64(x))
    assert erf64(np.float64(0.5)).shape == ()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_erf_kernel_keeps_dtype_and_precision(dtype):
    x = np.linspace(-5, 5, 2001).astype(np_dtype(dtype))
    with np.errstate(all="raise"):
        out = KERNELS[ops.ERF](x)
    assert out.dtype == x.dtype and out.shape == x.shape
    tdt = torch.bfloat16 if dtype == "bfloat16" else getattr(torch, dtype)
    ref = torch.erf(torch.from_numpy(x.astype(np.float64))).to(tdt)
    # narrow types: one rounding of an accurate value; float64: a few ulps of Cody's error
    ulp = torch.finfo(tdt).eps * (4 if dtype == "float64" else 1)
    torch.testing.assert_close(torch.from_numpy(out.astype(np.float64)).to(tdt), ref, atol=0, rtol=ulp)
