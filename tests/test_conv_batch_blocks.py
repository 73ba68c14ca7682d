"""The GEMM convolution path's pixel blocks that run across images (planes smaller than a
block: a batch's pixels n * P + p in one GEMM call), exact against the reference."""
import numpy as np
import pytest

from conftest import assert_equal_exact, num_threads
from test_conv import ref_conv_acc, ref_qlinear_conv

import quantc as qc


# (N, C, H, W, M, k, stride, pad, group): plane sizes that do not divide the block, single
# pixels, 1x1 (transposed input) and kxk (im2col) layers, a grouped layer
CASES = [(5, 16, 7, 7, 24, 3, 1, 1, 1), (3, 3, 8, 8, 16, 3, 1, 1, 1), (7, 32, 1, 1, 40, 1, 1, 0, 1),
         (9, 64, 3, 5, 17, 1, 1, 0, 1), (4, 8, 9, 9, 8, 3, 2, 1, 1), (6, 32, 4, 4, 64, 3, 1, 1, 2),
         (64, 16, 8, 8, 32, 3, 1, 1, 1), (2, 1, 5, 5, 16, 3, 1, 1, 1)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_blocks_across_images(isa, case):
    n, c, h, w, m, k, s, p, g = case
    rng = np.random.default_rng(sum(case))
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    wt = rng.integers(-128, 128, (m, c // g, k, k), dtype=np.int8)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    ws = rng.uniform(0.001, 0.01, m).astype(np.float32)
    kw = dict(strides=(s, s), pads=(p,) * 4, group=g)
    want_acc = ref_conv_acc(x, wt, 3, 0, (s, s), (p,) * 4, (1, 1), g)
    want = ref_qlinear_conv(x, 0.05, np.uint8(3), wt, ws, np.int8(0), 0.7, np.uint8(100), bias,
                            strides=(s, s), pads=(p,) * 4, group=g)
    for threads in (1, 2, 3):
        with num_threads(threads):
            assert_equal_exact(qc.conv_integer(x, wt, np.uint8(3), **kw), want_acc,
                               f"{case} threads={threads}")
            got = qc.qlinear_conv(x, 0.05, np.uint8(3), wt, ws, np.int8(0), 0.7, np.uint8(100),
                                  bias, **kw)
            assert_equal_exact(got, want, f"{case} threads={threads}")
