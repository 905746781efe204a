"""The numpy erf kernels against torch.erf: Cody's rational approximations in
float64, the chunked float32 rational approximation (erf32) in float32."""
import math

import numpy as np
import pytest

from irtool.ir.dtypes import np_dtype
from irtool.ir.ops import elementwise as ops
from irtool.runtime.kernels.elementwise import KERNELS, erf32, erf64

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


def _ulps(ours, x64):
    """|ours - exact| in units of the float32 spacing at the exact value."""
    exact = torch.erf(torch.from_numpy(x64)).numpy()
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(ours.astype(np.float64) - exact) / spacing


def test_erf32_within_one_ulp_on_a_dense_grid():
    rng = np.random.default_rng(2)
    x = np.concatenate([
        np.linspace(-5, 5, 2_000_001), np.geomspace(1e-38, 5, 100_000), -np.geomspace(1e-38, 5, 100_000),
        rng.standard_normal(200_000) * 2, np.linspace(3.8, 3.95, 100_001)]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(np.float32(3.92), np.float32([0, 8])),
                        np.float32([1e-45, -1e-45, 3.4e38, -3.4e38])])      # clamp edge, subnormal, huge
    ours = erf32(x)
    assert ours.dtype == np.float32 and ours.shape == x.shape
    ulps = _ulps(ours, x.astype(np.float64))
    assert ulps.max() <= 1.0, f"max error {ulps.max():.3g} ulp at x={x[ulps.argmax()]!r}"
    # ties to torch's own float32 erf on most points (both within an ulp of exact)
    theirs = torch.erf(torch.from_numpy(x)).numpy()
    assert np.mean(ours == theirs) > 0.8


def test_erf32_against_math_erf():
    x = np.random.default_rng(3).uniform(-4.5, 4.5, 20_000).astype(np.float32)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    assert (np.abs(erf32(x).astype(np.float64) - exact) / spacing).max() <= 1.0


def test_erf32_special_values_and_scale():
    x = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 40.0, -40.0, 3.92, -3.92])
    out = erf32(x)
    assert out[0] == 0 and not np.signbit(out[0]) and out[1] == 0 and np.signbit(out[1])
    assert out[2] == 1 and out[3] == -1 and np.isnan(out[4])
    assert list(out[5:]) == [1, -1, 1, -1]
    # the scaled form used by gelu: erf(x * scale) without rounding x * scale to float32
    y = np.linspace(-8, 8, 40_001).astype(np.float32)
    ulps = _ulps(erf32(y, 1 / math.sqrt(2)), y.astype(np.float64) / math.sqrt(2))
    assert ulps.max() <= 1.0


@pytest.mark.parametrize("shape", [(), (1,), (16383,), (16385,), (3, 7, 4100), (0, 5)])
def test_erf32_shapes_chunks_and_views(shape):
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32) * 2
    np.testing.assert_array_equal(erf32(x), erf32(x.copy()))
    assert erf32(x).shape == x.shape
    if x.ndim and x.size:
        x[...] = np.random.default_rng(5).standard_normal(shape) * 2
        before = x.copy()
        view = x[..., ::-1]                   # non-contiguous input, left unchanged
        np.testing.assert_array_equal(erf32(view), erf32(before[..., ::-1].copy()))
        np.testing.assert_array_equal(x, before)
        assert _ulps(erf32(x), x.astype(np.float64)).max() <= 1.0
