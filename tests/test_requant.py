"""quantize_multiplier, requantize_fixed (gemmlowp, vs a Python transcription) and requantize."""
import math

import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---- a direct Python transcription of gemmlowp / TFLite (arbitrary-precision ints) ----

def wrap32(v):
    return (v + 2**31) % 2**32 - 2**31


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) // (1 << 31)          # C division truncates toward zero
    return q if ab + nudge >= 0 else -q


def rdbp(x, exponent):
    """gemmlowp RoundingDivideByPOT."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier; x * (1 << left) wraps like int32 hardware."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdbp(srdhm(wrap32(x * (1 << left)), multiplier), right)


def ref_requantize_fixed(acc, m, s, zp, dtype, axis=None):
    info = np.iinfo(dtype)
    acc = np.asarray(acc)
    out = np.empty(acc.shape, dtype)
    m, s, zp = (np.broadcast_to(np.asarray(v), acc.shape[axis:axis + 1] if axis is not None
                                else ()) for v in (m, s, zp))
    for idx in np.ndindex(acc.shape):
        c = idx[axis] if axis is not None else ()
        v = mbqm(int(acc[idx]), int(m[c]), int(s[c])) + int(zp[c])
        out[idx] = min(max(v, info.min), info.max)
    return out


def ref_quantize_multiplier(real):
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    qf = math.floor(abs(q) * 2**31 + 0.5)      # std::round: half away from zero (q > 0)
    if qf == 2**31:
        qf //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return qf, shift


# ---- quantize_multiplier ----

def test_quantize_multiplier_matches_tflite(rng):
    reals = np.concatenate([
        [0.0, 1.0, 0.5, 0.25, 2.0**-31, 2.0**-32, 2.0**-33, 2.0**30, 1.5, 0.999999999,
         np.nextafter(1.0, 0.0), 3.0e-10, 1234.5678, 2.0**31 - 1],
        rng.uniform(0, 1, 200), 10.0 ** rng.uniform(-12, 9, 200),
        # values whose q * 2**31 lies exactly on .5: ties go away from zero
        (np.arange(1, 50) * 2 + 2**31 + 1) / 2**32,
    ])
    m, s = qc.quantize_multiplier(reals)
    assert m.dtype == np.int32 and s.dtype == np.int32 and m.shape == reals.shape
    for i, r in enumerate(reals):
        want = ref_quantize_multiplier(float(r))
        assert (int(m[i]), int(s[i])) == want, f"real={r!r}"
        if want[0]:
            assert 2**30 <= m[i] < 2**31
            assert abs(m[i] * 2.0 ** (int(s[i]) - 31) - r) <= r * 2.0**-30


def test_quantize_multiplier_scalar_and_errors():
    m, s = qc.quantize_multiplier(0.5)
    assert m.shape == () and int(m) == 2**30 and int(s) == 0
    for bad in (-1.0, float("nan"), float("inf"), 2.0**31):
        with pytest.raises(ValueError, match="real_multiplier"):
            qc.quantize_multiplier(bad)
    with pytest.raises(TypeError, match="real_multiplier"):
        qc.quantize_multiplier("x")


# ---- requantize_fixed ----

EDGE_ACC = np.array([INT32_MIN, INT32_MIN + 1, -2**30, -65537, -256, -129, -128, -3, -2, -1, 0,
                     1, 2, 3, 127, 128, 255, 65535, 2**30, INT32_MAX - 1, INT32_MAX],
                    dtype=np.int32)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_requantize_fixed_every_shift(rng, dtype):
    acc = np.concatenate([EDGE_ACC, rng.integers(INT32_MIN, INT32_MAX, 40, dtype=np.int64)
                          .astype(np.int32)])
    mults = [2**30, 2**30 + 1, 2**31 - 1, 1518500250, 1, 0, INT32_MIN, -(2**30)]
    zp = -7 if dtype == "int8" else 131
    for shift in range(-31, 32):
        for mult in mults:
            got = qc.requantize_fixed(acc, mult, shift, zp, dtype)
            want = ref_requantize_fixed(acc, mult, shift, zp, np.dtype(dtype))
            assert_equal_exact(got, want, f"multiplier={mult} shift={shift}")


def test_requantize_fixed_ties():
    # multiplier 2**30 is 0.5: odd accumulators are exact ties in SRDHM, which rounds them up
    # (its negative nudge is 1 - 2**30, so -0.5 -> 0 and -1.5 -> -1); shift -1 then creates
    # ties in RDBP, which rounds them away from zero.
    acc = np.arange(-41, 42, dtype=np.int32)
    for shift in (0, -1, -2, -5):
        got = qc.requantize_fixed(acc, 2**30, shift, 0, "int8")
        want = ref_requantize_fixed(acc, 2**30, shift, 0, np.int8)
        assert_equal_exact(got, want, f"shift={shift}")
    assert qc.requantize_fixed(np.int32([1, -1, 3, -3]), 2**30, 0, 0).tolist() == [1, 0, 2, -1]
    assert qc.requantize_fixed(np.int32([2, -2, 6, -6]), 2**30, -1, 0).tolist() == [1, -1, 2, -2]


def test_requantize_fixed_per_axis(rng):
    acc = rng.integers(-2**20, 2**20, (3, 5, 4)).astype(np.int32)
    m, s = qc.quantize_multiplier(rng.uniform(1e-5, 2.0, 5))
    zp = rng.integers(-128, 128, 5)
    got = qc.requantize_fixed(acc, m, s, zp, "int8", axis=1)
    assert_equal_exact(got, ref_requantize_fixed(acc, m, s, zp, np.int8, axis=1), "axis=1")
    got = qc.requantize_fixed(acc, m[:4], s[:4], 3, "uint8", axis=-1)
    assert_equal_exact(got, ref_requantize_fixed(acc, m[:4], s[:4], 3, np.uint8, axis=2),
                       "axis=-1")


def test_requantize_fixed_layouts():
    acc = np.arange(-60, 60, dtype=np.int32).reshape(10, 12)
    for x in (acc[:, ::3], acc[::-1], acc.T, np.int32(1000), acc[:0]):
        got = qc.requantize_fixed(x, 2**30 + 12345, -3, 1)
        assert_equal_exact(got, ref_requantize_fixed(x, 2**30 + 12345, -3, 1, np.int8), "layout")


def test_requantize_fixed_bad_input():
    acc = np.zeros((2, 3), np.int32)
    with pytest.raises(TypeError, match="acc"):
        qc.requantize_fixed(acc.astype(np.int64), 2**30, 0, 0)
    with pytest.raises(TypeError, match="acc"):
        qc.requantize_fixed(acc.astype(np.float32), 2**30, 0, 0)
    with pytest.raises(ValueError, match="shift"):
        qc.requantize_fixed(acc, 2**30, 32, 0)
    with pytest.raises(ValueError, match="shift"):
        qc.requantize_fixed(acc, 2**30, -32, 0)
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize_fixed(acc, 2**30, 0, 128, "int8")
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize_fixed(acc, 2**30, 0, -1, "uint8")
    with pytest.raises(ValueError, match="dtype"):
        qc.requantize_fixed(acc, 2**30, 0, 0, "int16")
    with pytest.raises(ValueError, match="multiplier"):
        qc.requantize_fixed(acc, [2**30, 2**30], [0, 0], 0)          # per-axis without axis
    with pytest.raises(ValueError, match="multiplier"):
        qc.requantize_fixed(acc, [2**30] * 2, [0] * 2, 0, axis=1)    # 2 values for 3 channels
    with pytest.raises(ValueError, match="axis"):
        qc.requantize_fixed(acc, 2**30, 0, 0, axis=2)
    before = acc.copy()
    qc.requantize_fixed(acc, 2**30, 0, 0)
    assert_equal_exact(acc, before, "input unchanged")


# ---- requantize (float path) ----

def ref_requantize(acc, scale, zp, dtype, axis=None):
    info = np.iinfo(dtype)
    acc = np.asarray(acc)
    shape = [1] * acc.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape if axis is not None else ())
    z = np.asarray(zp).reshape(shape if axis is not None else ())
    with np.errstate(over="ignore"):  # scale 1e30: products saturate to +-inf, then clamp
        v = np.rint(acc.astype(np.float32) * s).astype(np.float64) + z
    return np.clip(v, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_requantize_float(rng, dtype):
    acc = np.concatenate([EDGE_ACC, rng.integers(-100000, 100000, 500).astype(np.int32),
                          np.arange(-300, 300, dtype=np.int32)])
    zp = 5 if dtype == "int8" else 128
    for scale in (0.5, 0.25, 1.0, 0.0123, 1e-6, 3.0, 1e30, 1e-45):
        got = qc.requantize(acc, scale, zp, dtype)
        assert_equal_exact(got, ref_requantize(acc, scale, zp, np.dtype(dtype)), f"scale={scale}")


def test_requantize_float_ties_to_even():
    acc = np.int32([1, 3, 5, -1, -3, -5])
    assert qc.requantize(acc, 0.5, 0).tolist() == [0, 2, 2, 0, -2, -2]


def test_requantize_float_per_axis(rng):
    acc = rng.integers(-5000, 5000, (4, 6)).astype(np.int32)
    scale = rng.uniform(0.001, 0.1, 4).astype(np.float32)
    zp = rng.integers(0, 256, 4)
    got = qc.requantize(acc, scale, zp, "uint8", axis=0)
    assert_equal_exact(got, ref_requantize(acc, scale, zp, np.uint8, axis=0), "axis=0")


def test_requantize_float_bad_input():
    acc = np.zeros(4, np.int32)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            qc.requantize(acc, bad, 0)
    with pytest.raises(ValueError, match="scale"):
        qc.requantize(acc, [0.1, 0.2], 0)
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize(acc, 0.1, 300, "uint8")
    with pytest.raises(TypeError, match="acc"):
        qc.requantize(acc.astype(np.int8), 0.1, 0)


def test_requantize_out_argument():
    acc = np.arange(-5, 5, dtype=np.int32)
    out = np.empty(10, np.uint8)
    assert qc.requantize(acc, 0.5, 10, "uint8", out=out) is out
    assert_equal_exact(out, ref_requantize(acc, 0.5, 10, np.uint8), "requantize out=")
    out8 = np.empty(10, np.int8)
    assert qc.requantize_fixed(acc, 2**30, 0, 1, out=out8) is out8
    assert_equal_exact(out8, ref_requantize_fixed(acc, 2**30, 0, 1, np.int8), "fixed out=")
    with pytest.raises(ValueError, match="out: expected dtype int8"):
        qc.requantize_fixed(acc, 2**30, 0, 1, out=out)
