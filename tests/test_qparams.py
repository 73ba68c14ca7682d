"""qrange, the C min/max pass and choose_qparams per profile (onnx vs ONNX Runtime's tool)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import quantc as qc
from quantc import _C
from conftest import assert_equal_exact, num_threads


def test_flags_are_bools():
    # symmetric="False" was truthy: symmetric qparams for a string meaning the opposite
    x = np.float32([-1, 3])
    for kw in ({"symmetric": "False"}, {"narrow_range": "no"}, {"reduce_range": None},
               {"symmetric": 2}):
        name = next(iter(kw))
        with pytest.raises(TypeError, match=f"{name}: expected True or False"):
            qc.choose_qparams(x, **kw)
    with pytest.raises(TypeError, match="symmetric: expected True or False"):
        obs = qc.MinMaxObserver()
        obs.update(x)
        obs.qparams(symmetric="False")
    assert qc.choose_qparams(x, symmetric=np.True_) == qc.choose_qparams(x, symmetric=1) == \
        qc.choose_qparams(x, symmetric=True)


def test_qrange():
    assert qc.qrange("int8") == (-128, 127)
    assert qc.qrange("uint8") == (0, 255)
    assert qc.qrange(np.int8, narrow_range=True) == (-127, 127)
    assert qc.qrange(np.dtype("uint8"), narrow_range=True) == (1, 255)
    assert qc.qrange("int8", reduce_range=True) == (-64, 63)
    assert qc.qrange("uint8", reduce_range=True) == (0, 127)
    assert qc.qrange("int8", reduce_range=True, narrow_range=True) == (-63, 63)


# ---------------------------------------------------------------- the min/max pass

def ref_minmax(x, axis=None, block_size=None):
    """NumPy min/max with zeros as +0.0 (quantc normalizes the sign of zero)."""
    mn, mx = _ref_minmax(x, axis, block_size)
    return (np.asarray(mn) + np.float32(0)).astype(np.float32), \
        (np.asarray(mx) + np.float32(0)).astype(np.float32)


def _ref_minmax(x, axis=None, block_size=None):
    x = np.asarray(x, np.float32)
    if axis is None:
        return (np.float32(x.min()) if x.size else np.float32(np.inf),
                np.float32(x.max()) if x.size else np.float32(-np.inf))
    if block_size is None:
        other = tuple(d for d in range(x.ndim) if d != axis)
        if x.size == 0:
            return np.full(x.shape[axis], np.inf, np.float32), np.full(x.shape[axis], -np.inf,
                                                                       np.float32)
        return x.min(axis=other), x.max(axis=other)
    n = x.shape[axis]
    nb = -(-n // block_size)
    mins, maxs = [], []
    for b in range(nb):
        part = np.take(x, np.arange(b * block_size, min(n, (b + 1) * block_size)), axis=axis)
        mins.append(part.min(axis=axis))
        maxs.append(part.max(axis=axis))
    return np.stack(mins, axis=axis), np.stack(maxs, axis=axis)


def test_minmax_pass(isa, rng):
    for shape in [(0,), (1,), (17,), (1000,), (5, 7, 33), (3, 1, 65), (70000,)]:
        x = (rng.standard_normal(shape) * 10).astype(np.float32)
        if x.size > 3:
            x.ravel()[:3] = [-0.0, np.inf, -np.inf][: x.size]
        mn, mx = _C._minmax(x)
        wmn, wmx = ref_minmax(x)
        assert_equal_exact(mn, np.asarray(wmn).reshape(()), f"{isa} {shape}")
        assert_equal_exact(mx, np.asarray(wmx).reshape(()), f"{isa} {shape}")
        for axis in range(len(shape)):
            if x.size == 0:
                continue
            for B in (None, 1, 4, 32):
                mn, mx = _C._minmax(x, axis, B)
                wmn, wmx = ref_minmax(x, axis, B)
                assert_equal_exact(mn, wmn, f"{isa} {shape} axis={axis} B={B}")
                assert_equal_exact(mx, wmx, f"{isa} {shape} axis={axis} B={B}")


def test_minmax_zero_sign_normalized(isa):
    x = np.array([-0.0, 0.0] * 40, np.float32)
    mn, mx = _C._minmax(x)
    assert not np.signbit(mn) and not np.signbit(mx)


def test_minmax_threads_identical(rng):
    x = (rng.standard_normal((60, 7000)) * 3).astype(np.float32)
    res = []
    for n in (1, 2):
        with num_threads(n):
            res.append([*_C._minmax(x), *_C._minmax(x, 0), *_C._minmax(x, 1),
                        *_C._minmax(x, 1, 64), *_C._minmax(x.reshape(-1, 3), 1),
                        *_C._minmax(x.reshape(-1, 5, 2), 1)])
    for a, b in zip(*res):
        assert_equal_exact(a, b, "threads")
    for shape in ((-1, 3), (-1, 5, 2)):
        mn, mx = _C._minmax(x.reshape(shape), 1)
        wmn, wmx = ref_minmax(x.reshape(shape), 1)
        assert_equal_exact(mn, wmn, f"{shape}")
        assert_equal_exact(mx, wmx, f"{shape}")


def test_minmax_nan_per_axis():
    x = np.ones((50000, 3), np.float32)
    x[40000, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN value, the first at index \(40000, 2\)"):
        qc.choose_qparams(x, axis=1)


def test_minmax_nan():
    x = np.ones((3, 40), np.float32)
    x[1, 7] = np.nan
    x[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"x: expected no NaN values, got 2 NaN values, "
                                         r"the first at index \(1, 7\)"):
        qc.choose_qparams(x)


@settings(max_examples=200, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=30),
                    elements=st.floats(width=32, allow_nan=False)),
       data=st.data())
def test_property_minmax(x, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    B = data.draw(st.one_of(st.none(), st.integers(1, 31)))
    mn, mx = _C._minmax(x, axis, B)
    wmn, wmx = ref_minmax(x, axis, B)
    np.testing.assert_array_equal(mn, wmn)
    np.testing.assert_array_equal(mx, wmx)


# ---------------------------------------------------------------- onnx: ONNX Runtime's tool

try:
    from onnxruntime.quantization import quant_utils as ort_qu
except ImportError:  # only the comparison with ONNX Runtime skips
    ort_qu = None


def ort_qparams(x, dtype, symmetric, qmin, qmax, axis=None):
    npdt = np.dtype(dtype)
    qmin_a = np.array(qmin, npdt)
    qmax_a = np.array(qmax, npdt)
    if axis is None:
        zp, s = ort_qu.compute_scale_zp(np.float32(x.min()), np.float32(x.max()), qmin_a, qmax_a,
                                        symmetric)
        return np.asarray(s, np.float32).reshape(()), np.asarray(zp).reshape(())
    other = tuple(d for d in range(x.ndim) if d != axis)
    mins, maxs = x.min(axis=other), x.max(axis=other)
    out = [ort_qu.compute_scale_zp(np.float32(a), np.float32(b), qmin_a, qmax_a, symmetric)
           for a, b in zip(mins, maxs)]
    return (np.array([np.float32(s) for _, s in out], np.float32),
            np.array([z for z, _ in out], npdt))


def cases(rng):
    return [(rng.standard_normal((6, 40)) * 3).astype(np.float32),
            np.abs(rng.standard_normal((6, 40))).astype(np.float32) + 0.25,
            -np.abs(rng.standard_normal((6, 40))).astype(np.float32) - 1e-3,
            np.zeros((6, 40), np.float32),
            (rng.standard_normal((6, 40)) * 1e-20).astype(np.float32),
            (rng.standard_normal((6, 40)) * 1e30).astype(np.float32)]


@pytest.mark.skipif(ort_qu is None, reason="onnxruntime is not installed")
# ONNX Runtime's compute_scale_zp requires qmin <= 0, so narrow uint8 (1..255) is not compared.
@pytest.mark.parametrize("dtype,narrow_range", [("int8", False), ("int8", True), ("uint8", False)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_onnx_matches_onnxruntime(rng, dtype, symmetric, reduce_range, narrow_range):
    qmin, qmax = qc.qrange(dtype, narrow_range=narrow_range, reduce_range=reduce_range)
    for x in cases(rng):
        for axis in (None, 0, 1):
            p = qc.choose_qparams(x, dtype=dtype, symmetric=symmetric, axis=axis,
                                  narrow_range=narrow_range, reduce_range=reduce_range)
            ws, wz = ort_qparams(x, dtype, symmetric, qmin, qmax, axis)
            assert_equal_exact(p.scale, ws, f"scale axis={axis}")
            assert_equal_exact(p.zero_point, wz.astype(dtype), f"zero_point axis={axis}")


# ---------------------------------------------------------------- tflite

def tflite_asym_ref(mn, mx, qmin, qmax):
    """GetAsymmetricQuantizationParams, in float32 like the C++ (std::round: half away)."""
    f = np.float32
    mn, mx = min(f(mn), f(0)), max(f(mx), f(0))
    scale = f(f(mx - mn) / f(qmax - qmin))
    zp_f = f(qmin)
    if scale != 0:
        zp_f = f(f(qmin) - f(mn / scale))
    if zp_f < qmin:
        zp = qmin
    elif zp_f > qmax:
        zp = qmax
    else:
        zp = int(math.floor(abs(float(zp_f)) + 0.5)) * (1 if zp_f >= 0 else -1)
    return (scale if scale != 0 else f(1.0)), zp


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_tflite(rng, dtype):
    qmin, qmax = qc.qrange(dtype)
    for x in cases(rng):
        p = qc.choose_qparams(x, dtype=dtype, profile="tflite")
        ws, wz = tflite_asym_ref(x.min(), x.max(), qmin, qmax)
        assert p.scale == ws and int(p.zero_point) == wz
        p = qc.choose_qparams(x, dtype=dtype, profile="tflite", symmetric=True, axis=0)
        amax = np.maximum(np.abs(x.min(axis=1)), np.abs(x.max(axis=1))).astype(np.float32)
        want = (amax / np.float32(127)).astype(np.float32)
        want = np.where(want == 0, np.float32(1), want)
        assert_equal_exact(p.scale, want, "tflite symmetric")
        assert (p.zero_point == (0 if dtype == "int8" else 128)).all()


def test_tflite_zero_point_rounds_half_away():
    # min = -0.5 * scale gives zp_f = qmin + 0.5 exactly: TFLite rounds it away from zero
    p = qc.choose_qparams(min_val=np.float32(-0.5), max_val=np.float32(254.5), dtype="uint8",
                          profile="tflite")
    assert p.scale == np.float32(1.0) and int(p.zero_point) == 1
    q = qc.choose_qparams(min_val=np.float32(-0.5), max_val=np.float32(254.5), dtype="uint8",
                          profile="onnx")
    assert int(q.zero_point) == 0  # numpy rounds the same tie to even


# ---------------------------------------------------------------- every profile

@pytest.mark.parametrize("profile", ["onnx", "torch", "tflite"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_zero_range_and_empty(profile, symmetric, dtype):
    for x in (np.zeros(10, np.float32), np.zeros(0, np.float32), np.zeros((0, 3), np.float32)):
        axis = 1 if x.ndim == 2 else None
        p = qc.choose_qparams(x, dtype=dtype, symmetric=symmetric, axis=axis, profile=profile)
        assert np.all(np.isfinite(p.scale)) and np.all(p.scale > 0)
        assert p.scale.dtype == np.float32 and p.zero_point.dtype == np.dtype(dtype)
        qmin, qmax = qc.qrange(dtype)
        assert np.all((qmin <= p.zero_point) & (p.zero_point <= qmax))


@pytest.mark.parametrize("profile", ["onnx", "torch", "tflite"])
def test_zero_is_exact_and_shapes(rng, profile):
    x = (rng.standard_normal((4, 10, 6)) * 2 + 0.5).astype(np.float32)
    for axis, B in ((None, None), (0, None), (2, None), (1, 4), (2, 5)):
        p = qc.choose_qparams(x, axis=axis, block_size=B, profile=profile)
        assert p.scale.shape == _C._minmax(x, axis, B)[0].shape
        z = qc.quantize(np.zeros_like(x), p.scale, p.zero_point, axis=p.axis,
                        block_size=p.block_size)
        assert_equal_exact(qc.dequantize(z, p.scale, p.zero_point, axis=p.axis,
                                         block_size=p.block_size), np.zeros_like(x), "0 exact")
        mn, mx = _C._minmax(x, axis, B)
        p2 = qc.choose_qparams(min_val=mn, max_val=mx, axis=axis, block_size=B, profile=profile)
        assert_equal_exact(p2.scale, p.scale, "min_val/max_val path")
        assert_equal_exact(p2.zero_point, p.zero_point, "min_val/max_val path")


def test_quantize_dynamic_int8_and_empty(rng):
    x = (rng.standard_normal(300) * 2).astype(np.float32)
    q, s, zp = qc.quantize_dynamic(x, "int8")
    assert q.dtype == np.int8 and zp.dtype == np.int8 and s.dtype == np.float32
    assert -128 <= int(zp) <= 127
    err = np.abs(qc.dequantize(q, s, zp) - x).max()
    assert err <= s * 0.5 + 1e-6
    q, s, zp = qc.quantize_dynamic(np.zeros(0, np.float32))
    assert q.shape == (0,) and q.dtype == np.uint8
