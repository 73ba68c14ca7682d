"""Bad input raises TypeError/ValueError naming the argument; inputs are never modified."""
import numpy as np
import pytest

import quantc as qc

X = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)


@pytest.mark.parametrize("call,exc,match", [
    # data
    (lambda: qc.quantize(np.array(["a"]), 1.0), TypeError, "x: expected a real-valued array"),
    (lambda: qc.quantize(np.array([1 + 2j]), 1.0), TypeError, "x:"),
    (lambda: qc.quantize(np.array([True]), 1.0), TypeError, "x:"),
    (lambda: qc.quantize(None, 1.0), TypeError, "x:"),
    (lambda: qc.dequantize(np.zeros(3, np.int32), 1.0), TypeError, "q: expected an array of int8, uint8, int16"),
    (lambda: qc.dequantize(np.zeros(3, np.float32), 1.0), TypeError, "q:"),
    (lambda: qc.quantize(np.array([1.0, np.nan, np.nan], np.float32), 1.0), ValueError,
     r"x: expected no NaN values, got 2 NaN values, the first at index 1"),
    (lambda: qc.fake_quantize(np.array([[1.0, np.nan]], np.float32), 1.0), ValueError,
     r"x: expected no NaN values, got 1 NaN value, the first at index \(0, 1\)"),
    # scale
    (lambda: qc.quantize(X, 0.0), ValueError, "scale: expected a positive finite value, got 0.0"),
    (lambda: qc.quantize(X, -1.0), ValueError, "scale: expected a positive finite value"),
    (lambda: qc.quantize(X, float("nan")), ValueError, "scale: expected a positive finite value, got nan"),
    (lambda: qc.quantize(X, float("inf")), ValueError, "scale: expected a positive finite value, got inf"),
    (lambda: qc.quantize(X, 1e-50), ValueError, r"scale: expected a positive finite float32 value, got 1e-50 \(0.0 in float32\)"),
    (lambda: qc.quantize(X, 1e300), ValueError, r"got 1e\+300 \(inf in float32\)"),
    (lambda: qc.quantize(X, 1e-39, profile="torch"), ValueError,
     "scale: expected values whose float32 reciprocal is finite for profile='torch'"),
    (lambda: qc.fake_quantize(X, np.array([1, 1, 1, 1e-39], np.float32), axis=0,
                              profile="torch"), ValueError, "at index 3"),
    (lambda: qc.quantize(X, np.array([1, 1, 0, 1], np.float32), axis=0), ValueError,
     "scale: expected positive finite values, got 0.0 at index 2"),
    (lambda: qc.dequantize(np.zeros(3, np.int8), np.nan), ValueError, "scale:"),
    (lambda: qc.quantize(X, "a"), TypeError, "scale:"),
    (lambda: qc.quantize(X, None), TypeError, "scale:"),
    (lambda: qc.quantize(X, True), TypeError, "scale:"),
    # shapes vs axis
    (lambda: qc.quantize(X, np.ones(6, np.float32), axis=0), ValueError,
     r"scale: expected shape \(4,\) for per-axis quantization \(axis=0\), got shape \(6,\)"),
    (lambda: qc.quantize(X, np.ones(4, np.float32)), ValueError,
     r"scale: expected a scalar for per-tensor quantization \(axis=None\), got shape \(4,\)"),
    (lambda: qc.quantize(X, np.ones((4, 6), np.float32), axis=1, block_size=4), ValueError,
     r"scale: expected shape \(4, 2\) for blocked quantization"),
    (lambda: qc.quantize(X, np.ones(4, np.float32), np.zeros(3, np.int8), axis=0), ValueError,
     r"zero_point: expected shape \(4,\)"),
    (lambda: qc.quantize(X, 1.0, axis=2), ValueError, r"axis: expected an axis in \[-2, 2\)"),
    (lambda: qc.quantize(X, 1.0, axis=1.5), TypeError, "axis: expected an int or None"),
    (lambda: qc.quantize(X, 1.0, block_size=4), ValueError, "block_size: blocked quantization needs an axis"),
    (lambda: qc.quantize(X, np.ones((4, 6)), axis=1, block_size=0), ValueError, "block_size: expected an int >= 1"),
    (lambda: qc.quantize(np.float32(1.0), np.ones(1), axis=0), ValueError, "axis:"),
    # zero point
    (lambda: qc.quantize(X, 1.0, 128), ValueError, r"zero_point: expected an integer in \[-128, 127\] \(int8\), got 128"),
    (lambda: qc.quantize(X, 1.0, -1, "uint8"), ValueError, r"zero_point: expected an integer in \[0, 255\]"),
    (lambda: qc.quantize(X, 1.0, 2 ** 40), ValueError, "zero_point:"),
    (lambda: qc.quantize(X, 1.0, 1.5), TypeError, "zero_point: expected integer values"),
    (lambda: qc.quantize(X, 1.0, np.array([1.0])), TypeError, "zero_point: expected integer values"),
    (lambda: qc.quantize(X, np.ones(4, np.float32), np.array([0, 0, 300, 0]), "uint8", axis=0),
     ValueError, r"zero_point: expected integers in \[0, 255\] \(uint8\), got 300 at index 2"),
    (lambda: qc.quantize(X, 1.0, np.int32(3)), ValueError, "dtype: expected int8 or uint8"),
    (lambda: qc.dequantize(np.zeros(3, np.uint8), 1.0, -3), ValueError, "zero_point:"),
    (lambda: qc.fake_quantize(X, 1.0, 9, qmin=0, qmax=7), ValueError, r"zero_point: expected an integer in \[0, 7\]"),
    (lambda: qc.fake_quantize(X, 1.0, qmin=5, qmax=2), ValueError, "qmax: expected qmax >= qmin"),
    (lambda: qc.fake_quantize(X, 1.0, qmin=-200), ValueError, r"qmin: expected an int in \[-128, 127\]"),
    # strings
    (lambda: qc.quantize(X, 1.0, dtype="int3"), ValueError, "dtype: expected one of int8, uint8, .*got 'int3'"),
    (lambda: qc.quantize(X, 1.0, dtype=np.float32), ValueError, "dtype:"),
    (lambda: qc.quantize(X, 1.0, dtype=3.5), TypeError, "dtype:"),
    (lambda: qc.quantize(X, 1.0, profile="tf"), ValueError, "profile: expected 'onnx', 'torch' or 'tflite', got 'tf'"),
    (lambda: qc.fake_quantize(X, 1.0, profile=None or 3), TypeError, "profile:"),
    (lambda: qc.choose_qparams(X, profile="pytorch"), ValueError, "profile:"),
    (lambda: qc.choose_qparams(X, dtype="int3"), ValueError, "dtype:"),
    (lambda: qc.qrange("float8"), ValueError, "dtype:"),
    (lambda: qc.qrange(None), TypeError, "dtype: .*got None"),  # not "float64"
    (lambda: qc.Linear.from_float(np.ones((5, 7), np.float32), "abc"), TypeError,
     "bias: expected real numbers or None"),
    (lambda: qc.quantize_dynamic(X, "int32"), ValueError, "dtype:"),
    # out=
    (lambda: qc.quantize(X, 1.0, out=np.empty((4, 5), np.int8)), ValueError, r"out: expected shape \(4, 6\)"),
    (lambda: qc.quantize(X, 1.0, out=np.empty((4, 6), np.uint8)), ValueError, "out: expected dtype int8"),
    (lambda: qc.quantize(X, 1.0, out=np.empty((6, 4), np.int8).T), ValueError, "out: expected a writable"),
    (lambda: qc.dequantize(np.zeros(3, np.int8), 1.0, out=[0, 0, 0]), TypeError, "out:"),
    (lambda: qc.dequantize(np.zeros(3, np.int8), 1.0, out=np.empty(3, ">f4")), ValueError,
     "out: expected a writable, aligned, C-contiguous array in native byte order"),
    (lambda: qc.quantize(X, 1.0, out=np.empty((4, 6), np.int8)[::-1]), ValueError, "out:"),
    # choose_qparams
    (lambda: qc.choose_qparams(), TypeError, "x: expected an array"),
    (lambda: qc.choose_qparams(np.array([1.0, np.inf], np.float32)), ValueError, "x: expected finite"),
    (lambda: qc.choose_qparams(min_val=1.0, max_val=-1.0), ValueError, "max_val: expected max_val >= min_val"),
    (lambda: qc.choose_qparams(min_val=np.nan, max_val=1.0), ValueError, "min_val: expected no NaN"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_never_modified(rng):
    x = (rng.standard_normal((5, 7)) * 3).astype(np.float32)
    s = np.full(7, 0.1, np.float32)
    zp = np.arange(7, dtype=np.int8)
    copies = [a.copy() for a in (x, s, zp)]
    q = qc.quantize(x, s, zp, axis=1, profile="torch")
    qcopy = q.copy()
    qc.dequantize(q, s, zp, axis=1)
    qc.fake_quantize(x, s, zp, axis=1, return_mask=True)
    qc.choose_qparams(x, axis=1)
    qc.quantize_dynamic(x)
    for a, b in zip((x, s, zp), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(q, qcopy)
    bad = x.copy()
    bad[0, 0] = np.nan
    keep = bad.copy()
    with pytest.raises(ValueError):
        qc.quantize(bad, 1.0)
    np.testing.assert_array_equal(bad, keep)


def test_zero_size():
    for shape in [(0,), (3, 0), (0, 5)]:
        x = np.zeros(shape, np.float32)
        assert qc.quantize(x, 1.0).shape == shape
        assert qc.dequantize(x.astype(np.int8), 1.0).shape == shape
        assert qc.fake_quantize(x, 1.0).shape == shape
    assert qc.quantize(np.zeros((3, 0)), np.ones(3), axis=0).shape == (3, 0)
