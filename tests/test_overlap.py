"""Issue 14: every function that takes out= gives the same result when out= overlaps an input
(exactly, partly ahead of it or partly behind it) as with a separate out=. The bindings detect
the overlap and compute into a temporary, as NumPy does."""
import numpy as np
import pytest

import quantc as qc

from conftest import assert_equal_exact

# byte shifts of out relative to the aliased input: same start, partly ahead, partly behind,
# one element, and far apart (no overlap, the plain path)
SHIFTS = [0, 8, -8, 64, -64, 1000, -1000, 1 << 16]


def _views(inp, out_shape, out_dtype, shift):
    """A buffer holding `inp` at one place and an out= view `shift` bytes from it."""
    out_dtype = np.dtype(out_dtype)
    n_out = int(np.prod(out_shape)) * out_dtype.itemsize
    pad = max(abs(shift), 0) + n_out + inp.nbytes + 64
    buf = np.zeros(2 * pad + inp.nbytes + n_out, np.uint8)
    base = pad
    x = buf[base:base + inp.nbytes].view(inp.dtype).reshape(inp.shape)
    x[...] = inp
    o = buf[base + shift:base + shift + n_out].view(out_dtype).reshape(out_shape)
    return x, o


def check(fn, inp, out_dtype, rng=None, shifts=SHIFTS):
    want = fn(inp.copy(), None)
    for shift in shifts:
        x, o = _views(inp, want.shape, out_dtype, shift)
        try:
            got = fn(x, o)
        except ValueError as e:  # a clear refusal is allowed; none is expected here
            pytest.fail(f"shift {shift}: {e}")
        assert got is o, f"shift {shift}: the result is not out"
        assert_equal_exact(o, want, f"{fn.__name__ if hasattr(fn, '__name__') else fn} "
                                    f"shift {shift}")


@pytest.fixture
def data():
    r = np.random.default_rng(7)
    return {
        "f32": (r.standard_normal((6, 200)) * 20).astype(np.float32),
        "s8": r.integers(-128, 128, (6, 200), dtype=np.int8),
        "u8": r.integers(0, 256, (6, 200), dtype=np.uint8),
        "s32": r.integers(-5000, 5000, (6, 200), dtype=np.int32),
        "nchw": r.integers(0, 256, (2, 3, 12, 10), dtype=np.uint8),
        "a": r.integers(0, 256, (40, 16), dtype=np.uint8),
        "b": r.integers(-128, 128, (16, 24), dtype=np.int8),
        "w": r.integers(-128, 128, (5, 3, 3, 3), dtype=np.int8),
        "wd": r.integers(-128, 128, (3, 1, 3, 3), dtype=np.int8),
    }


U0, S0 = np.uint8(0), np.int8(0)

CASES = {
    "quantize": ("f32", np.int8, lambda x, o: qc.quantize(x, 0.3, np.int8(2), out=o)),
    "quantize_axis": ("f32", np.uint8,
                      lambda x, o: qc.quantize(x, np.linspace(0.1, 1, 200, dtype=np.float32),
                                               None, "uint8", axis=1, out=o)),
    "dequantize": ("s8", np.float32, lambda x, o: qc.dequantize(x, 0.25, np.int8(-3), out=o)),
    "dequantize_u8": ("u8", np.float32, lambda x, o: qc.dequantize(x, 0.5, np.uint8(7), out=o)),
    "fake_quantize": ("f32", np.float32, lambda x, o: qc.fake_quantize(x, 0.3, 1, out=o)),
    "requantize": ("s32", np.int8, lambda x, o: qc.requantize(x, 0.01, 3, out=o)),
    "requantize_fixed": ("s32", np.uint8,
                         lambda x, o: qc.requantize_fixed(x, 1 << 30, -3, 100, "uint8", out=o)),
    "matmul_integer": ("a", np.int32,
                       lambda x, o: qc.matmul_integer(x, CASE_B, np.uint8(3), out=o)),
    "qlinear_matmul": ("a", np.int8,
                       lambda x, o: qc.qlinear_matmul(x, 0.02, np.uint8(3), CASE_B, 0.03, S0,
                                                      0.5, np.int8(1), out=o)),
    "conv_integer": ("nchw", np.int32, lambda x, o: qc.conv_integer(x, CASE_W, out=o)),
    "qlinear_conv": ("nchw", np.uint8,
                     lambda x, o: qc.qlinear_conv(x, 0.1, U0, CASE_W, 0.05, S0, 2.0,
                                                  np.uint8(128), out=o)),
    "qlinear_conv_1x1": ("nchw", np.uint8,
                         lambda x, o: qc.qlinear_conv(x, 0.1, U0, CASE_W[:, :, :1, :1], 0.05, S0,
                                                      0.5, np.uint8(128), out=o)),
    "qlinear_conv_dw": ("nchw", np.uint8,
                        lambda x, o: qc.qlinear_conv(x, 0.1, U0, CASE_WD, 0.05, S0, 0.5,
                                                     np.uint8(128), group=3, pads=(1, 1, 1, 1),
                                                     out=o)),
    "max_pool2d": ("nchw", np.uint8, lambda x, o: qc.max_pool2d(x, 3, strides=1, out=o)),
    "avg_pool2d": ("nchw", np.uint8,
                   lambda x, o: qc.avg_pool2d(x, 0.1, U0, 0.07, np.uint8(3), 2, strides=1,
                                              out=o)),
    "avg_pool2d_s2": ("nchw", np.uint8,
                      lambda x, o: qc.avg_pool2d(x, 0.1, U0, 0.07, np.uint8(3), 3, strides=2,
                                                 pads=(1, 1, 1, 1), out=o)),
    "global_avg_pool": ("nchw", np.uint8,
                        lambda x, o: qc.global_avg_pool(x, 0.1, U0, 0.07, np.uint8(3), out=o)),
    "qlinear_add_a": ("u8", np.uint8,
                      lambda x, o: qc.qlinear_add(x, 0.1, U0, CASE_U8, 0.2, np.uint8(4), 0.3,
                                                  np.uint8(5), out=o)),
    "qlinear_add_b": ("u8", np.uint8,
                      lambda x, o: qc.qlinear_add(CASE_U8, 0.1, U0, x, 0.2, np.uint8(4), 0.3,
                                                  np.uint8(5), out=o)),
    "qlinear_concat": ("u8", np.uint8,
                       lambda x, o: qc.qlinear_concat([(x, 0.1, U0), (CASE_U8, 0.2, np.uint8(9))],
                                                      0.15, np.uint8(3), axis=1, out=o)),
    "qlinear_concat_copy": ("u8", np.uint8,
                            lambda x, o: qc.qlinear_concat([(CASE_U8, 0.2, U0), (x, 0.2, U0)],
                                                           0.2, U0, axis=0, out=o)),
    # packed under the current ISA cap, so built per call
    "linear": ("f32", np.float32, lambda x, o: qc.Linear.from_float(CASE_LINEAR_W)(x, out=o)),
    "round": ("f32", np.float32, lambda x, o: qc.round(x, "half_away", out=o)),
    "clamp": ("f32", np.float32, lambda x, o: qc.clamp(x, -3.0, 4.0, out=o)),
    "saturate_cast": ("s32", np.int8, lambda x, o: qc.saturate_cast(x, "int8", out=o)),
    "to_float16": ("f32", np.float16, lambda x, o: qc.to_float16(x, out=o)),
    "to_bfloat16": ("f32", np.uint16, lambda x, o: qc.to_bfloat16(x, out=o)),
}

_r = np.random.default_rng(3)
CASE_B = _r.integers(-128, 128, (16, 24), dtype=np.int8)
CASE_W = _r.integers(-128, 128, (5, 3, 3, 3), dtype=np.int8)
CASE_WD = _r.integers(-128, 128, (3, 1, 3, 3), dtype=np.int8)
CASE_U8 = _r.integers(0, 256, (6, 200), dtype=np.uint8)
CASE_LINEAR_W = _r.standard_normal((150, 200)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_overlapping_out_same_result(isa, name, data):
    key, out_dtype, fn = CASES[name]
    check(fn, data[key], out_dtype)


def test_from_bfloat16_overlap(isa, data):
    bits = qc.to_bfloat16(data["f32"])
    check(lambda x, o: qc.from_bfloat16(x, out=o), bits, np.float32)


def test_in_place_exact_alias(isa, data):
    """out= the very input array (same dtype): in place."""
    x = data["f32"].copy()
    want = qc.fake_quantize(x, 0.3, 1)
    got = qc.fake_quantize(x, 0.3, 1, out=x)
    assert got is x
    assert_equal_exact(x, want)
    a = data["u8"].copy()
    want = qc.qlinear_add(a, 0.1, U0, a, 0.2, U0, 0.3, U0)
    qc.qlinear_add(a, 0.1, U0, a, 0.2, U0, 0.3, U0, out=a)
    assert_equal_exact(a, want)
    q = data["nchw"].copy()
    want = qc.qlinear_conv(q, 0.1, U0, CASE_W[:3, :, :1, :1], 0.05, S0, 0.5, np.uint8(128))
    qc.qlinear_conv(q, 0.1, U0, CASE_W[:3, :, :1, :1], 0.05, S0, 0.5, np.uint8(128), out=q)
    assert_equal_exact(q, want)


def test_overlapping_scale_array(isa):
    """out= sharing memory with a per-axis scale array that the kernel reads."""
    buf = np.zeros(64, np.float32)
    scale = buf[:16]
    scale[:] = np.linspace(0.5, 2, 16, dtype=np.float32)
    x = np.linspace(-5, 5, 16, dtype=np.float32)
    want = qc.fake_quantize(x, scale.copy(), axis=0)
    got = qc.fake_quantize(x, scale, axis=0, out=buf[:16])
    assert_equal_exact(got, want)
