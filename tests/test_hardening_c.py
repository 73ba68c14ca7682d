"""C-side hardening (issues 13 and 14): memory errors, wrapping integers, strings, resource
limits and error messages reachable from the public API. Each test failed (or crashed) before
its fix; kernel-related ones run at every ISA level."""
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import quantc as qc
from quantc import _C

from conftest import assert_equal_exact, num_threads

HUGE_BLOCKS = [2**63 - 1, 2**63 - 3, 2**62, 2**40]


# ---- issue 13 item 14: a huge block_size is one block of the whole axis ----

@pytest.mark.parametrize("block", HUGE_BLOCKS)
def test_huge_block_size_is_one_block(isa, block, rng):
    x = rng.standard_normal((3, 37, 5)).astype(np.float32)
    one = qc.choose_qparams(x, axis=1, block_size=37)
    p = qc.choose_qparams(x, axis=1, block_size=block)
    assert p.scale.shape == (3, 1, 5)
    assert_equal_exact(p.scale, one.scale, f"choose_qparams block={block}")
    assert_equal_exact(p.zero_point, one.zero_point)
    q = qc.quantize(x, p.scale, p.zero_point, axis=1, block_size=block)
    assert_equal_exact(q, qc.quantize(x, one.scale, one.zero_point, axis=1, block_size=37))
    assert_equal_exact(qc.dequantize(q, p.scale, p.zero_point, axis=1, block_size=block),
                       qc.dequantize(q, one.scale, one.zero_point, axis=1, block_size=37))
    assert_equal_exact(qc.fake_quantize(x, p.scale, p.zero_point, axis=1, block_size=block),
                       qc.fake_quantize(x, one.scale, one.zero_point, axis=1, block_size=37))


@pytest.mark.parametrize("block", HUGE_BLOCKS)
def test_huge_block_size_wrong_scale_shape_is_an_error(block):
    x = np.ones((4, 8), np.float32)
    # one scale per (row, block): (4, 1); a (4, 8) scale would have been read past before
    with pytest.raises(ValueError, match="scale: expected shape \\(4, 1\\)"):
        qc.quantize(x, np.ones((4, 2), np.float32), axis=1, block_size=block)
    with pytest.raises(ValueError, match="scale: expected shape"):
        qc.dequantize(np.ones((4, 8), np.int8), np.ones((4, 2), np.float32), axis=1,
                      block_size=block)


def test_huge_block_size_quantize_weights():
    w = np.linspace(-1, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    a = qc.quantize_weights({"w": w}, granularity="per_block", block_size=2**63 - 1,
                            min_elements=1)["w"]
    b = qc.quantize_weights({"w": w}, granularity="per_block", block_size=48 * 100,
                            min_elements=1)["w"]
    assert_equal_exact(a.q, b.q)
    assert_equal_exact(a.scale, b.scale)


@pytest.mark.parametrize("block", [2**63, 2**64, 2**200, -2**63 - 1])
def test_block_size_beyond_64_bits_names_the_argument(block):
    x = np.ones((2, 4), np.float32)
    for call in (lambda: qc.quantize(x, 1.0, axis=1, block_size=block),
                 lambda: qc.choose_qparams(x, axis=1, block_size=block),
                 lambda: qc.dequantize(np.ones(4, np.int8), 1.0, axis=0, block_size=block)):
        with pytest.raises(ValueError, match="block_size"):
            call()


def test_block_size_near_2_63_is_not_negative_dimensions():
    with pytest.raises(ValueError) as e:
        qc.choose_qparams(np.ones((2, 4), np.float32), axis=1, block_size=2**63 - 1,
                          min_val=None)
        raise ValueError("no error: fine")
    assert "negative dimensions" not in str(e.value)


def test_calib_block_huge():
    x = np.ones((2, 5), np.float32)
    q = np.ones((2, 5), np.int8)
    # one group per row: scale/zero point of shape (2,)
    sig, err, mx, clipped = _C._calib_error_stats(x, q, 2**63 - 1, np.ones(2, np.float32),
                                                  np.zeros(2, np.int32))
    assert sig == 10.0 and err == 0.0
    with pytest.raises(ValueError, match="block"):
        _C._calib_error_stats(x, q, 2**64, np.ones(2, np.float32), np.zeros(2, np.int32))


# ---- issue 13 item 15: zero-stride B of huge logical shape ----

@pytest.mark.parametrize("shape", [(1, 2**62), (3, 2**61 - 1), (2**62, 1), (2**41, 1),
                                   (2**31, 2**31)])
def test_pack_huge_zero_stride_b(shape):
    b = np.broadcast_to(np.int8(1), shape)
    with pytest.raises((ValueError, MemoryError), match="b: "):
        qc.pack_matrix(b)
    a = np.ones((1, shape[0]), np.int8) if shape[0] < 2**20 else np.ones((1, 3), np.int8)
    with pytest.raises((ValueError, MemoryError), match="b: "):
        qc.matmul_integer(a, b)
    with pytest.raises((ValueError, MemoryError), match="b: "):
        qc.qlinear_matmul(a, 1.0, np.int8(0), b, 1.0, np.int8(0), 1.0, np.int8(0))


def test_pack_zero_stride_b_of_reasonable_shape_works(isa):
    b = np.broadcast_to(np.int8(3), (5, 40))
    a = np.arange(10, dtype=np.int8).reshape(2, 5)
    assert_equal_exact(qc.matmul_integer(a, b), a.astype(np.int32) @ np.full((5, 40), 3, np.int32))


# ---- issue 13 item 16: Linear validates its parameters; attributes are read-only ----

def _layer(rng, n=64, k=4):
    return qc.Linear.from_float(rng.standard_normal((n, k)).astype(np.float32),
                                rng.standard_normal(n).astype(np.float32))


@pytest.mark.parametrize("attr, value", [("weight_scale", np.ones(1)), ("weight_scale", 0.5),
                                         ("bias", np.ones(2)), ("packed", None),
                                         ("in_features", 3), ("out_features", 1000)])
def test_linear_attributes_read_only(rng, attr, value):
    layer = _layer(rng)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    want = layer(x)
    with pytest.raises(AttributeError):
        setattr(layer, attr, value)
    assert_equal_exact(layer(x), want)


def test_linear_constructor_validates(rng, isa):
    layer = _layer(rng)
    packed = layer.packed
    x = rng.standard_normal((3, 4)).astype(np.float32)
    # a scalar weight scale is one scale for every output feature
    got = qc.Linear(packed, 0.5, None, 4, 64, "int8")(x)
    assert_equal_exact(got, qc.Linear(packed, np.full(64, 0.5, np.float32), None, 4, 64,
                                      "int8")(x))
    with pytest.raises(ValueError, match="weight_scale"):
        qc.Linear(packed, np.ones(1), None, 4, 64, "int8")
    with pytest.raises(ValueError, match="weight_scale"):
        qc.Linear(packed, -np.ones(64), None, 4, 64, "int8")
    with pytest.raises(ValueError, match="bias"):
        qc.Linear(packed, np.ones(64), np.ones(2), 4, 64, "int8")
    with pytest.raises(ValueError, match="in_features"):
        qc.Linear(packed, np.ones(64), None, 5, 64, "int8")
    with pytest.raises(ValueError, match="out_features"):
        qc.Linear(packed, np.ones(64), None, 4, 65, "int8")
    with pytest.raises(ValueError, match="dtype"):
        qc.Linear(packed, np.ones(64), None, 4, 64, "uint8")
    with pytest.raises(TypeError, match="packed"):
        qc.Linear(np.ones((4, 64), np.int8), np.ones(64), None, 4, 64, "int8")
    # the user's arrays are copied, not frozen
    ws = np.ones(64, np.float32)
    qc.Linear(packed, ws, None, 4, 64, "int8")
    assert ws.flags.writeable


def test_linear_forward_binding_checks_sizes(rng):
    packed = _layer(rng).packed
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="weight_scale"):
        _C._linear_forward(x, packed, np.ones(1, np.float32), None)
    with pytest.raises(ValueError, match="weight_scale"):
        _C._linear_forward(x, packed, np.float32(0.5), None)
    with pytest.raises(ValueError, match="bias"):
        _C._linear_forward(x, packed, np.ones(64, np.float32), np.ones(2, np.float32))


# ---- issue 13 item 17: re-entrancy ----

class _Clears:
    """An int whose __index__ empties a list (and drops the items' last references)."""

    def __init__(self, target, value):
        self.target, self.value = target, value

    def __index__(self):
        self.target.clear()
        return self.value


@pytest.mark.parametrize("arg", ["strides", "pads", "dilations"])
def test_parse_ints_reentrancy_conv(arg):
    x = np.ones((1, 1, 5, 5), np.uint8)
    w = np.ones((1, 1, 2, 2), np.uint8)
    base = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]}[arg]
    lst = [int(v) for v in base]
    lst[0] = _Clears(lst, base[0])
    y = qc.conv_integer(x, w, **{arg: lst})
    assert_equal_exact(y, qc.conv_integer(x, w, **{arg: base}))


@pytest.mark.parametrize("arg", ["kernel", "strides", "pads"])
def test_parse_ints_reentrancy_pool(arg):
    q = np.arange(36, dtype=np.uint8).reshape(1, 1, 6, 6)
    base = {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}[arg]
    lst = list(base)
    lst[0] = _Clears(lst, base[0])
    kw = {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)}
    kw[arg] = lst
    got = qc.max_pool2d(q, kw.pop("kernel"), **kw)
    want = qc.max_pool2d(q, (2, 2), strides=(2, 2))
    assert_equal_exact(got, want)


class _ArrayClears:
    def __init__(self, target, value):
        self.target, self.value = target, value

    def __array__(self, dtype=None, copy=None):
        self.target.clear()
        return np.asarray(self.value, dtype=dtype)


def test_qlinear_concat_reentrancy(isa):
    a = np.arange(6, dtype=np.uint8).reshape(1, 6)
    b = np.arange(6, 12, dtype=np.uint8).reshape(1, 6)
    inputs = [(a, 1.0, np.uint8(0)), [b, 0.5, np.uint8(3)]]
    inputs[0] = (a, _ArrayClears(inputs, np.float32(1.0)), np.uint8(0))
    inputs[1][1] = _ArrayClears(inputs[1], np.float32(0.5))
    want = qc.qlinear_concat([(a, 1.0, np.uint8(0)), (b, 0.5, np.uint8(3))], 1.0, np.uint8(0))
    got = qc.qlinear_concat(inputs, 1.0, np.uint8(0))
    assert_equal_exact(got, want)


# ---- issue 13 item 18: undefined behaviour with extreme integers ----

@pytest.mark.parametrize("qmin, qmax", [(-2**31, 2**31 - 1), (-2**31, 0), (0, 2**31 - 1)])
def test_mse_clip_search_extreme_q_range(qmin, qmax):
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="qmin, qmax"):
        _C._calib_mse_clip_search(x, 8, np.full(2, -1, np.float32), np.ones(2, np.float32), qmin,
                                  qmax, False, np.ones(3, np.float32))


@pytest.mark.parametrize("zp", [-2**31, 2**31 - 1, 2**24 + 1])
def test_error_stats_extreme_zero_point(zp):
    x = np.ones((1, 8), np.float32)
    q = np.full((1, 8), -128, np.int8)
    with pytest.raises(ValueError, match="zero_point"):
        _C._calib_error_stats(x, q, 8, np.ones(1, np.float32), np.array([zp], np.int32))


def test_abs_histogram_nan_is_not_ub():
    counts = np.zeros(4, np.int64)
    _C._calib_abs_histogram(np.array([np.nan, 0.5, np.inf], np.float32), counts, 0.0)
    assert counts.sum() == 3


@pytest.mark.parametrize("name", ["\udcff", "avx2\0", "scalar\0x", "\ud800avx2"])
def test_set_isa_cap_non_encodable(name):
    with pytest.raises(ValueError, match="isa"):
        _C._set_isa_cap(name)


def test_env_isa_non_encodable_is_one_clear_error():
    env = dict(os.environ)
    env_b = {k.encode(): v.encode() for k, v in env.items()}
    env_b[b"QUANTC_ISA"] = b"avx\xff2"
    r = subprocess.run([sys.executable, "-c", "import quantc"], env=env_b, capture_output=True,
                       timeout=60)
    assert r.returncode != 0
    assert b"QUANTC_ISA" in r.stderr and b"Segmentation" not in r.stderr


# ---- issue 14 item 1: average pooling accumulator ----

@pytest.mark.parametrize("dtype, value, xzp", [(np.uint8, 255, 0), (np.uint8, 0, 255),
                                               (np.int8, -128, 127), (np.int8, 127, -128)])
def test_avg_pool_largest_window_exact(isa, dtype, value, xzp):
    """2^23 cells of |q - x_zero_point| = 255: the sum is 255 * 2^23, near the int32 limit."""
    q = np.full((1, 1, 2048, 4096), value, dtype)
    sums = (int(value) - xzp)
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    yzp = dtype(lo + 128 if dtype == np.uint8 else 0)
    want = np.array(np.clip(np.rint(np.float32(sums) * np.float32(0.5)) + int(yzp), lo, hi),
                    dtype).reshape(1, 1, 1, 1)
    got = qc.global_avg_pool(q, 1.0, dtype(xzp), 2.0, yzp)
    assert_equal_exact(got, want, f"global_avg_pool {dtype.__name__} {value} zp={xzp}")
    got = qc.avg_pool2d(q, 1.0, dtype(xzp), 2.0, yzp, (2048, 4096))
    assert_equal_exact(got, want, f"avg_pool2d {dtype.__name__} {value} zp={xzp}")


def test_avg_pool_window_beyond_limit_rejected():
    q = np.broadcast_to(np.uint8(255), (1, 1, 4096, 4096))
    with pytest.raises(ValueError, match="2\\^23"):
        qc.global_avg_pool(q, 1.0, np.uint8(0), 1.0, np.uint8(0))
    with pytest.raises(ValueError, match="kernel: expected at most 2\\^23"):
        qc.avg_pool2d(q, 1.0, np.uint8(0), 1.0, np.uint8(0), (4096, 4096))


# ---- issue 14 item 3: qlinear_matmul multiplier overflow ----

@pytest.mark.parametrize("xs, ws, ys", [(1e30, 1e30, 1e-30), (3e38, 3e38, 1.0), (1e-30, 1e-30, 1e30),
                                        (1e-45, 1e-45, 1.0)])
def test_qlinear_matmul_multiplier_out_of_float32(isa, xs, ws, ys):
    a = np.full((1, 4), 5, np.uint8)
    b = np.ones((4, 2), np.int8)
    with pytest.raises(ValueError, match="a_scale \\* b_scale / y_scale"):
        qc.qlinear_matmul(a, xs, np.uint8(5), b, ws, np.int8(0), ys, np.int8(10))


# ---- issue 14 item 4: uint64 values that wrap ----

def test_uint64_zero_point_requantize():
    acc = np.arange(3, dtype=np.int32)
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize(acc, 1.0, np.uint64(2**64 - 1))
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize(acc, 1.0, np.array([2**64 - 1] * 3, np.uint64), axis=0)
    with pytest.raises(ValueError, match="zero_point"):
        qc.requantize_fixed(acc, 2**30, 0, np.uint64(2**64 - 1))


@pytest.mark.parametrize("arg", ["multiplier", "shift"])
def test_uint64_multiplier_shift(arg):
    acc = np.arange(3, dtype=np.int32)
    kw = {"multiplier": 2**30, "shift": 0}
    kw[arg] = np.uint64(2**64 - 1)
    with pytest.raises(ValueError, match=arg):
        qc.requantize_fixed(acc, kw["multiplier"], kw["shift"], 0)


def test_uint64_zero_point_conv_and_pool():
    # int8 data: 2**64 - 1 wrapped to -1 would be a valid zero point
    x = np.ones((1, 1, 3, 3), np.int8)
    w = np.ones((1, 1, 1, 1), np.int8)
    for zp in ([2**64 - 1], np.array([2**64 - 1], np.uint64)):
        with pytest.raises((TypeError, ValueError), match="zero_point"):
            qc.conv_integer(x, w, x_zero_point=zp)
        with pytest.raises((TypeError, ValueError), match="zero_point"):
            qc.avg_pool2d(x, 1.0, zp, 1.0, np.int8(0), (1, 1))


def test_uint64_values_in_range_still_work():
    acc = np.arange(3, dtype=np.int32)
    assert_equal_exact(qc.requantize(acc, 1.0, np.uint64(3), "uint8"),
                       np.array([3, 4, 5], np.uint8))


# ---- issue 14 item 5: strings with NUL or surrogates ----

@pytest.mark.parametrize("bad", ["int8\0x", "int8\0", "\udcff", "uint8\ud800"])
def test_dtype_strings(bad):
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="dtype"):
        qc.quantize(x, 1.0, dtype=bad)
    with pytest.raises(ValueError, match="dtype"):
        qc.requantize(np.zeros(3, np.int32), 1.0, 0, bad)
    with pytest.raises(ValueError, match="dtype"):
        qc.saturate_cast(np.zeros(3, np.int32), bad)


@pytest.mark.parametrize("bad", ["onnx\0", "torch\0x", "\udcff"])
def test_profile_strings(bad):
    with pytest.raises(ValueError, match="profile"):
        qc.quantize(np.zeros(3, np.float32), 1.0, profile=bad)
    with pytest.raises(ValueError, match="profile"):
        qc.fake_quantize(np.zeros(3, np.float32), 1.0, profile=bad)


@pytest.mark.parametrize("bad", ["floor\0", "\udcff"])
def test_round_mode_strings(bad):
    with pytest.raises(ValueError, match="mode"):
        qc.round(np.zeros(3, np.float32), bad)


# ---- issue 14 item 8: cpu_info leaks ----

def test_cpu_info_does_not_leak():
    for _ in range(100):
        qc.cpu_info()
    before = sys.getallocatedblocks()
    for _ in range(5000):
        qc.cpu_info()
    assert sys.getallocatedblocks() - before < 500


# ---- issue 14 item 9: the thread count changes while kernels run ----

def test_concurrent_set_num_threads_while_kernels_run(rng):
    x = rng.standard_normal((64, 4096)).astype(np.float32)
    a = rng.integers(-128, 128, (64, 256), dtype=np.int8)
    b = rng.integers(-128, 128, (256, 96), dtype=np.int8)
    want_q = qc.quantize(x, 0.05, np.int8(3))
    want_m = qc.matmul_integer(a, b)
    stop = threading.Event()
    errors = []

    def flip():
        i = 0
        while not stop.is_set():
            qc.set_num_threads(1 + i % 3)
            i += 1

    def work():
        try:
            for _ in range(30):
                assert np.array_equal(qc.quantize(x, 0.05, np.int8(3)), want_q)
                assert np.array_equal(qc.matmul_integer(a, b), want_m)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with num_threads(2):
        t0 = threading.Thread(target=flip)
        ws = [threading.Thread(target=work) for _ in range(3)]
        t0.start()
        for t in ws:
            t.start()
        for t in ws:
            t.join()
        stop.set()
        t0.join()
    assert not errors, errors


# ---- issue 14 item 10: shapes are checked before inputs are copied ----

def _peak_during(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(ValueError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("which", ["qlinear_conv", "conv_integer", "max_pool2d", "avg_pool2d",
                                   "matmul_integer", "linear", "quantize", "fake_quantize",
                                   "dequantize"])
def test_shape_checked_before_copy(which, rng):
    big = np.broadcast_to(np.uint8(1), (2**28,))   # 256 MiB if copied
    w = np.ones((1, 1, 1, 1), np.uint8)
    u0 = np.uint8(0)
    calls = {
        "qlinear_conv": lambda: qc.qlinear_conv(big, 1.0, u0, w, 1.0, u0, 1.0, u0),
        "conv_integer": lambda: qc.conv_integer(big, w),
        "max_pool2d": lambda: qc.max_pool2d(big, 2),
        "avg_pool2d": lambda: qc.avg_pool2d(big, 1.0, u0, 1.0, u0, 2),
        "matmul_integer": lambda: qc.matmul_integer(big.reshape(2**14, 2**14),
                                                    np.ones((4, 3), np.uint8)),
        "linear": lambda: _layer(rng)(np.broadcast_to(np.float32(1), (2**26, 5))),
        "quantize": lambda: qc.quantize(np.broadcast_to(np.float64(1), (2**25,)),
                                        np.ones(3, np.float32), axis=0),
        "fake_quantize": lambda: qc.fake_quantize(np.broadcast_to(np.float64(1), (2**25,)),
                                                  np.ones(3, np.float32), axis=0),
        "dequantize": lambda: qc.dequantize(big.view(np.int8), np.ones(3, np.float32), axis=0),
    }
    assert _peak_during(calls[which]) < 16 << 20


# ---- issue 14 item 11: error messages ----

@pytest.mark.parametrize("value", [2**63, 2**64, -2**63 - 1, 2**1000])
def test_big_ints_name_the_argument(value):
    x = np.ones((1, 1, 4, 4), np.uint8)
    w = np.ones((1, 1, 1, 1), np.uint8)
    f = np.ones((2, 3), np.float32)
    cases = [
        ("axis", lambda: qc.quantize(f, np.ones(2, np.float32), axis=value)),
        ("axis", lambda: qc.requantize(np.ones(3, np.int32), 1.0, 0, axis=value)),
        ("block_size", lambda: qc.quantize(f, 1.0, axis=1, block_size=value)),
        ("strides", lambda: qc.conv_integer(x, w, strides=(value, 1))),
        ("pads", lambda: qc.conv_integer(x, w, pads=(0, value, 0, 0))),
        ("dilations", lambda: qc.conv_integer(x, w, dilations=(1, value))),
        ("group", lambda: qc.conv_integer(x, w, group=value)),
        ("kernel", lambda: qc.max_pool2d(x, (value, 1))),
        ("axis", lambda: qc.qlinear_concat([(x, 1.0, np.uint8(0))], 1.0, np.uint8(0),
                                           axis=value)),
        ("n", lambda: qc.set_num_threads(value)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=f"^{name}: "):
            call()


def test_scale_too_big_for_float_names_it():
    with pytest.raises(ValueError, match="^scale: "):
        qc.quantize(np.ones(3, np.float32), 2**2000)


def test_ratio_message_shows_the_value():
    x = np.ones((1, 1, 2, 2), np.uint8)
    cases = [
        lambda: qc.avg_pool2d(x, 3e38, np.uint8(0), 1e-38, np.uint8(0), 2),
        lambda: qc.qlinear_add(x, 3e38, np.uint8(0), x, 1.0, np.uint8(0), 1e-38, np.uint8(0)),
        lambda: qc.qlinear_concat([(x, 3e38, np.uint8(0))], 1e-38, np.uint8(0)),
        lambda: qc.qlinear_conv(x, 3e38, np.uint8(0), np.ones((1, 1, 1, 1), np.uint8), 3e38,
                                np.uint8(0), 1.0, np.uint8(0)),
    ]
    for call in cases:
        with pytest.raises(ValueError, match="ratio, got inf") as e:
            call()
        assert "%g" not in str(e.value)


def test_huge_broadcast_memory_error_names_the_argument():
    a = np.broadcast_to(np.uint8(1), (2**50,))
    with pytest.raises(MemoryError, match="^[ab]: cannot allocate"):
        qc.qlinear_add(a, 1.0, np.uint8(0), np.uint8(1), 1.0, np.uint8(0), 1.0, np.uint8(0))


@pytest.mark.parametrize("which", ["min_val", "max_val"])
def test_infinite_min_max_val_named(which):
    kw = {"min_val": -1.0, "max_val": 1.0}
    kw[which] = -np.inf if which == "min_val" else np.inf
    with pytest.raises(ValueError, match=f"^{which}: "):
        qc.choose_qparams(**kw)
