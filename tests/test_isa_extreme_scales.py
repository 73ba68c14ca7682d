"""Issue 14: every requantizing op gives identical results at every ISA level for scales spanning
the whole float32 range (denormals to FLT_MAX), or rejects them identically (same exception
type and message)."""
import itertools

import numpy as np
import pytest

import quantc as qc

from conftest import SUPPORTED_ISAS, isa_cap

# float32 scales from the smallest denormal to the largest finite value
SCALES = [1e-45, 1e-40, 1.2e-38, 1e-30, 1e-10, 0.0039, 1.0, 255.0, 1e10, 1e30, 1e38,
          3.4028235e38]

_r = np.random.default_rng(11)
X_F32 = np.concatenate([(_r.standard_normal(300) * 1e3), [0.0, -0.0, 1e-40, 3e38, -3e38, np.inf,
                                                          -np.inf, 0.5, -0.5]]).astype(np.float32)
Q_U8 = _r.integers(0, 256, (2, 3, 9, 11), dtype=np.uint8)
Q_S8 = _r.integers(-128, 128, (2, 3, 9, 11), dtype=np.int8)
W_S8 = _r.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8)
WD_S8 = _r.integers(-128, 128, (3, 1, 3, 3), dtype=np.int8)
ACC = np.concatenate([_r.integers(-2**31, 2**31, 200), [0, 1, -1, 2**31 - 1, -2**31]]).astype(
    np.int32)
A_U8 = _r.integers(0, 256, (7, 40), dtype=np.uint8)
A_U8[0] = 3  # a row equal to its zero point: acc = 0, and 0 * inf would be NaN
B_S8 = _r.integers(-128, 128, (40, 19), dtype=np.int8)
U0, S0 = np.uint8(0), np.int8(0)


def outcome(fn):
    try:
        r = fn()
    except (ValueError, TypeError) as e:
        return (type(e).__name__, str(e))
    return ("ok", np.asarray(r).tobytes(), np.asarray(r).dtype.str, np.asarray(r).shape)


def same_everywhere(fn, context):
    results = {}
    for isa in SUPPORTED_ISAS:
        with isa_cap(isa):
            results[isa] = outcome(fn)
    first = results[SUPPORTED_ISAS[0]]
    for isa, r in results.items():
        assert r == first, f"{context}: {isa} differs from {SUPPORTED_ISAS[0]}: " \
                           f"{r[:2] if r[0] != 'ok' else 'values'} vs " \
                           f"{first[:2] if first[0] != 'ok' else 'values'}"
    return first


ONE_SCALE = {
    "quantize_onnx": lambda s: qc.quantize(X_F32, s, np.int8(3)),
    "quantize_torch": lambda s: qc.quantize(X_F32, s, np.uint8(7), profile="torch"),
    "quantize_tflite": lambda s: qc.quantize(X_F32, s, np.int8(-3), profile="tflite"),
    "quantize_axis": lambda s: qc.quantize(X_F32.reshape(3, 103), np.full(103, s, np.float32),
                                           None, "uint8", axis=1),
    "fake_quantize": lambda s: qc.fake_quantize(X_F32, s, 3, profile="torch"),
    "fake_quantize_onnx": lambda s: qc.fake_quantize(X_F32, s, 3),
    "dequantize": lambda s: qc.dequantize(Q_S8, s, np.int8(5)),
    "requantize": lambda s: qc.requantize(ACC, s, 3),
    "requantize_u8": lambda s: qc.requantize(ACC, s, 200, "uint8"),
}

TWO_SCALES = {
    "avg_pool2d": lambda xs, ys: qc.avg_pool2d(Q_U8, xs, np.uint8(3), ys, np.uint8(128), 3,
                                               strides=1, pads=(1, 1, 1, 1)),
    "avg_pool2d_s2": lambda xs, ys: qc.avg_pool2d(Q_S8, xs, np.int8(-3), ys, np.int8(4), 3,
                                                  strides=2),
    "global_avg_pool": lambda xs, ys: qc.global_avg_pool(Q_U8, xs, np.uint8(3), ys, np.uint8(9)),
    "qlinear_concat": lambda xs, ys: qc.qlinear_concat([(Q_U8, xs, np.uint8(3)),
                                                        (Q_U8, 1.0, U0)], ys, np.uint8(9)),
}

THREE_SCALES = {
    "qlinear_matmul": lambda a, b, y: qc.qlinear_matmul(A_U8, a, np.uint8(3), B_S8, b, S0, y,
                                                        np.int8(1)),
    "qlinear_conv": lambda a, b, y: qc.qlinear_conv(Q_U8, a, np.uint8(3), W_S8, b, S0, y,
                                                    np.uint8(128), pads=(1, 1, 1, 1)),
    "qlinear_conv_1x1": lambda a, b, y: qc.qlinear_conv(Q_U8, a, np.uint8(3), W_S8[:, :, :1, :1],
                                                        b, S0, y, np.uint8(128)),
    "qlinear_conv_dw": lambda a, b, y: qc.qlinear_conv(Q_S8, a, np.int8(3), WD_S8, b, S0, y,
                                                       np.int8(-2), group=3),
    "qlinear_add": lambda a, b, y: qc.qlinear_add(Q_U8, a, np.uint8(3), Q_U8[:, :, ::-1], b,
                                                  np.uint8(200), y, np.uint8(5)),
}


@pytest.mark.parametrize("name", sorted(ONE_SCALE))
def test_one_scale(name):
    for s in SCALES:
        same_everywhere(lambda: ONE_SCALE[name](s), f"{name} scale={s}")


@pytest.mark.parametrize("name", sorted(TWO_SCALES))
def test_two_scales(name):
    for xs, ys in itertools.product(SCALES, SCALES):
        same_everywhere(lambda: TWO_SCALES[name](xs, ys), f"{name} scales={xs, ys}")


@pytest.mark.parametrize("name", sorted(THREE_SCALES))
def test_three_scales(name):
    rng = np.random.default_rng(5)
    combos = list(itertools.product(SCALES, SCALES, SCALES))
    # every combination whose ratio is extreme, plus a sample of the rest
    for a, b, y in combos:
        with np.errstate(over="ignore", under="ignore"):
            r = np.float32(np.float32(a) * np.float32(b)) / np.float32(y)
        if not (1e-30 < r < 1e30) or rng.random() < 0.15:
            same_everywhere(lambda: THREE_SCALES[name](a, b, y), f"{name} scales={a, b, y}")
