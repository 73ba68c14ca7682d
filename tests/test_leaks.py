"""Issue 14: every public function, called many times (successful calls and calls that raise),
leaves memory flat: Python-level blocks (sys.getallocatedblocks: objects, PyMem buffers, NumPy
arrays) and the process's resident set (C buffers from malloc). Takes a few seconds."""
import gc
import os
import sys

import numpy as np
import pytest

import quantc as qc

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads RSS from /proc/self/statm")

R = np.random.default_rng(1)
F = (R.standard_normal((32, 512)) * 3).astype(np.float32)        # 64 KiB
S8 = R.integers(-128, 128, (32, 512), dtype=np.int8)
U8 = R.integers(0, 256, (32, 512), dtype=np.uint8)
I32 = R.integers(-2**20, 2**20, (32, 512), dtype=np.int32)
A = R.integers(0, 256, (64, 128), dtype=np.uint8)
B = R.integers(-128, 128, (128, 96), dtype=np.int8)
X4 = R.integers(0, 256, (2, 8, 24, 24), dtype=np.uint8)
W4 = R.integers(-128, 128, (16, 8, 3, 3), dtype=np.int8)
WD = R.integers(-128, 128, (8, 1, 3, 3), dtype=np.int8)
U0, S0 = np.uint8(0), np.int8(0)
PACKED = qc.pack_matrix(B)
PCONV = qc.pack_conv_weight(W4)
LAYER = qc.Linear.from_float(R.standard_normal((96, 128)).astype(np.float32),
                             R.standard_normal(96).astype(np.float32))
OUT_Q = np.empty_like(S8)


def _quantize_in_place(buf):
    """out= over the input's own bytes (a temporary is made and released inside)."""
    return qc.quantize(buf, 0.1, out=buf.reshape(-1).view(np.int8)[:buf.size].reshape(buf.shape))


def _raises(fn):
    def call():
        try:
            fn()
        except (TypeError, ValueError):
            return
        raise AssertionError("expected an error")
    return call


CALLS = {
    "cpu_info": lambda: qc.cpu_info(),
    "threads": lambda: (qc.set_num_threads(qc.get_num_threads()), qc.get_num_threads()),
    "qrange": lambda: qc.qrange("uint8", narrow_range=True),
    "choose_qparams": lambda: qc.choose_qparams(F, axis=1, block_size=32, dtype="uint8"),
    "quantize": lambda: qc.quantize(F, 0.1, np.int8(3)),
    "quantize_axis_out": lambda: qc.quantize(F, np.full(512, 0.1, np.float32), axis=1,
                                             out=OUT_Q),
    "quantize_overlap": lambda: _quantize_in_place(F.copy()),
    "dequantize": lambda: qc.dequantize(S8, np.full((32, 16), 0.5, np.float32), axis=1,
                                        block_size=32),
    "fake_quantize": lambda: qc.fake_quantize(F, 0.1, 2, return_mask=True, profile="torch"),
    "quantize_dynamic": lambda: qc.quantize_dynamic(F),
    "round": lambda: qc.round(F, "half_away"),
    "clamp": lambda: qc.clamp(I32, -5, 5),
    "saturate_cast": lambda: qc.saturate_cast(I32, "int8"),
    "float16": lambda: (qc.to_float16(F), qc.from_bfloat16(qc.to_bfloat16(F))),
    "quantize_multiplier": lambda: qc.quantize_multiplier(np.linspace(0.01, 2, 64)),
    "requantize_fixed": lambda: qc.requantize_fixed(I32, 1 << 30, -4, 3),
    "requantize": lambda: qc.requantize(I32, np.full(32, 1e-3, np.float32), 3, axis=0),
    "matmul_integer": lambda: qc.matmul_integer(A, B, np.uint8(3)),
    "matmul_packed": lambda: qc.matmul_integer(A, PACKED),
    "qlinear_matmul": lambda: qc.qlinear_matmul(A, 0.1, U0, B, np.full(96, 0.02, np.float32), S0,
                                                0.3, np.int8(2), bias=np.arange(96, dtype=np.int32)),
    "pack_matrix": lambda: qc.pack_matrix(B, np.int8(0)),
    "linear": lambda: LAYER(R.standard_normal((8, 128)).astype(np.float32)),
    "linear_from_float": lambda: qc.Linear.from_float(np.ones((16, 32), np.float32)),
    "conv_integer": lambda: qc.conv_integer(X4, W4, pads=(1, 1, 1, 1)),
    "qlinear_conv": lambda: qc.qlinear_conv(X4, 0.1, U0, PCONV, 0.02, None, 0.5, np.uint8(9),
                                            np.zeros(16, np.int32)),
    "qlinear_conv_dw": lambda: qc.qlinear_conv(X4, 0.1, U0, WD, 0.02, S0, 0.5, np.uint8(9),
                                               group=8),
    "pack_conv_weight": lambda: qc.pack_conv_weight(W4, group=1).path,
    "max_pool2d": lambda: qc.max_pool2d(X4, 3, strides=2, pads=(1, 1, 1, 1)),
    "avg_pool2d": lambda: qc.avg_pool2d(X4, 0.1, U0, 0.1, U0, 3, strides=1),
    "global_avg_pool": lambda: qc.global_avg_pool(X4, 0.1, U0, 0.2, U0),
    "qlinear_add": lambda: qc.qlinear_add(U8, 0.1, U0, U8[:1], 0.2, U0, 0.3, U0, relu=True),
    "qlinear_concat": lambda: qc.qlinear_concat([(U8, 0.1, U0), (U8, 0.2, np.uint8(4))], 0.3, U0),
    "observers": lambda: [o.update(F) or o.qparams() for o in (
        qc.MinMaxObserver(), qc.MovingAverageMinMaxObserver(), qc.PercentileObserver(),
        qc.HistogramObserver(bins=256, method="mse"))],
    "quantize_weights": lambda: qc.quantize_weights({"w": F}, min_elements=1).report(),
    # error paths: every early exit must release what it took
    "err_quantize": _raises(lambda: qc.quantize(F, np.full(3, 0.1, np.float32), axis=1)),
    "err_quantize_nan": _raises(lambda: qc.quantize(np.array([1, np.nan], np.float32), 1.0)),
    "err_dtype": _raises(lambda: qc.quantize(F, 0.1, dtype="int8\0")),
    "err_zero_point": _raises(lambda: qc.requantize(I32, 1.0, np.uint64(2**64 - 1))),
    "err_matmul": _raises(lambda: qc.qlinear_matmul(A, 1e30, U0, B, 1e30, S0, 1e-30, S0)),
    "err_pack": _raises(lambda: qc.pack_matrix(np.broadcast_to(np.int8(1), (3, 2**61 - 1)))),
    "err_conv": _raises(lambda: qc.qlinear_conv(X4, 0.1, U0, W4, np.ones(3, np.float32), S0, 0.5,
                                                U0)),
    "err_pool": _raises(lambda: qc.avg_pool2d(X4, 1.0, U0, 1.0, U0, 3, strides=(1, 2**63))),
    "err_concat": _raises(lambda: qc.qlinear_concat([(U8, 0.1, U0), (X4, 0.2, U0)], 0.3, U0)),
    "err_linear": _raises(lambda: LAYER(np.ones((2, 5), np.float32))),
    "err_add": _raises(lambda: qc.qlinear_add(U8, 3e38, U0, U8, 3e38, U0, 1e-3, U0)),
}


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("name", sorted(CALLS))
def test_memory_stays_flat(name):
    fn = CALLS[name]
    for _ in range(100):  # warm-up: NumPy's and the observers' first-use caches settle
        fn()
    n = 400

    def growth():
        gc.collect()
        blocks0, rss0 = sys.getallocatedblocks(), _rss()
        for _ in range(n):
            fn()
        gc.collect()
        return sys.getallocatedblocks() - blocks0, _rss() - rss0

    # a leak of one object per call gives n blocks; a leaked 64 KiB buffer n * 64 KiB of RSS.
    # A leak grows in every round: a second round confirms growth seen in the first (the
    # allocator may still be taking arenas or pages for the first calls of a thread)
    for attempt in range(2):
        blocks, rss = growth()
        if blocks < n // 4 and rss < 12 << 20:
            break
    assert blocks < n // 4, f"{name}: {blocks} Python blocks more after {n} calls (twice)"
    assert rss < 12 << 20, f"{name}: RSS grew by {rss >> 20} MiB after {n} calls (twice)"
