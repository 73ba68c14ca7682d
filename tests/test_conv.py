"""conv_integer / qlinear_conv: exact against a NumPy reference and onnx's ReferenceEvaluator."""
import zlib

import numpy as np
import pytest

import quantc as qc
from conftest import SUPPORTED_ISAS, assert_equal_exact, isa_cap, num_threads
from quantc import _C

# ---- NumPy reference: the ONNX definitions, written directly ----


def ref_conv_acc(x, w, xzp=0, wzp=0, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 group=1):
    """ConvInteger: int32 sum over taps of (x - xzp)(w - wzp), padding holds 0 after the
    subtraction; sums wrap modulo 2^32 like NumPy's int32."""
    N, C, H, W = x.shape
    M, Cg, kh, kw = w.shape
    G = group
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    X = np.zeros((N, C, H + pt + pb, W + pl + pr), np.int64)
    X[:, :, pt:pt + H, pl:pl + W] = x.astype(np.int64) - int(xzp)
    Wt = w.astype(np.int64) - np.asarray(wzp, np.int64).reshape(-1, 1, 1, 1)
    OH = (H + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
    OW = (W + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
    acc = np.zeros((N, G, M // G, OH, OW), np.int64)
    Wg = Wt.reshape(G, M // G, Cg, kh, kw)
    for ky in range(kh):
        for kx in range(kw):
            patch = X[:, :, ky * dh: ky * dh + (OH - 1) * sh + 1: sh,
                      kx * dw: kx * dw + (OW - 1) * sw + 1: sw].reshape(N, G, Cg, OH, OW)
            acc += np.einsum("ngchw,gmc->ngmhw", patch, Wg[:, :, :, ky, kx])
    return acc.reshape(N, M, OH, OW).astype(np.int32)


def ref_multiplier(x_scale, w_scale, y_scale, M):
    """float32(float32(x_scale * w_scale) / y_scale), per output channel."""
    ws = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (M,))
    return (np.float32(x_scale) * ws) / np.float32(y_scale)


def ref_qlinear_conv(x, x_scale, xzp, w, w_scale, wzp, y_scale, yzp, bias=None, relu=False,
                     **kw):
    acc = ref_conv_acc(x, w, xzp, wzp, **kw)
    M = w.shape[0]
    if bias is not None:
        acc = (acc.astype(np.int64) + bias.reshape(1, -1, 1, 1)).astype(np.int32)
    yzp = np.asarray(yzp)
    info = np.iinfo(yzp.dtype)
    mult = ref_multiplier(x_scale, w_scale, y_scale, M).astype(np.float64)
    r = acc.astype(np.float64) * mult.reshape(1, -1, 1, 1) + float(yzp)
    lo = max(info.min, int(yzp)) if relu else info.min
    return np.rint(np.clip(r, lo, info.max)).astype(yzp.dtype)


def rand_q(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


# (N, C, H, W, M, k, stride, dilation, pads, group)
CASES = [
    (1, 3, 5, 6, 4, 1, 1, 1, (0, 0, 0, 0), 1),
    (2, 5, 7, 7, 3, 1, 2, 1, (0, 0, 0, 0), 1),
    (1, 4, 6, 5, 6, 1, 1, 1, (1, 0, 0, 2), 2),
    (2, 3, 8, 9, 5, 3, 1, 1, (1, 1, 1, 1), 1),
    (1, 6, 9, 8, 4, 3, 2, 1, (0, 1, 2, 1), 2),
    (1, 4, 9, 9, 8, 3, 1, 2, (2, 2, 2, 2), 1),
    (2, 7, 7, 7, 7, 3, 1, 1, (1, 1, 1, 1), 7),     # depthwise
    (1, 5, 11, 10, 10, 3, 2, 1, (1, 0, 1, 2), 5),  # depthwise, channel multiplier 2
    (1, 3, 12, 12, 3, 5, 1, 1, (2, 2, 2, 2), 3),   # depthwise 5x5
    (1, 3, 13, 12, 3, 5, 2, 1, (2, 1, 0, 2), 3),   # depthwise 5x5 stride 2
    (1, 17, 9, 20, 17, 3, 1, 2, (1, 3, 0, 1), 17),  # depthwise, dilation 2, odd channels
    (2, 3, 40, 45, 3, 3, 2, 1, (1, 1, 1, 1), 3),   # depthwise, planes past the SIMD width
    (1, 2, 33, 35, 4, 5, 1, 1, (2, 2, 2, 2), 2),   # depthwise 5x5, multiplier 2, long rows
    (1, 2, 20, 21, 2, 7, 3, 1, (3, 2, 1, 3), 2),   # depthwise 7x7 (25 tap pairs), stride 3
    (1, 2, 12, 13, 2, 9, 1, 1, (4, 4, 4, 4), 2),   # depthwise 9x9 (41 tap pairs)
    (1, 2, 9, 10, 2, 17, 1, 1, (8, 8, 8, 8), 2),   # depthwise 17x17: generic kernel (> 256 taps)
    (1, 2, 9, 70, 2, 3, 2, 1, (1, 1, 0, 1), 2),    # depthwise stride 2, rows past 64 bytes
    (1, 2, 9, 71, 4, 3, 2, 1, (0, 2, 1, 0), 2),
    (1, 4, 9, 10, 5, 5, 2, 1, (2, 2, 1, 1), 1),
    (1, 2, 10, 9, 3, 7, 1, 1, (3, 3, 3, 3), 1),
    (1, 4, 9, 9, 4, 7, 2, 1, (0, 3, 1, 2), 2),
    (3, 3, 1, 1, 5, 1, 1, 1, (0, 0, 0, 0), 1),     # 1x1 spatial
    (2, 4, 1, 1, 6, 3, 1, 1, (1, 1, 1, 1), 2),     # 1x1 spatial, 3x3 kernel fully padded
    (1, 19, 6, 7, 33, 1, 1, 1, (0, 0, 0, 0), 1),   # channels not a multiple of the tile
    (1, 40, 5, 5, 18, 3, 1, 1, (1, 1, 1, 1), 1),
    (2, 32, 11, 12, 32, 3, 1, 1, (1, 1, 1, 1), 8),  # ResNeXt-like: 4 in, 4 out per group
    (1, 24, 9, 37, 12, 3, 2, 1, (1, 1, 1, 1), 4),   # 6 in, 3 out per group, stride 2
    (1, 30, 6, 7, 10, 5, 1, 1, (2, 2, 2, 2), 2),    # 15 * 25 = 375 taps: GEMM path
    (1, 32, 9, 10, 8, 3, 1, 2, (2, 1, 1, 2), 2),    # 16 per group: 16-byte taps, dilation 2
    (2, 16, 7, 9, 8, 3, 1, 1, (1, 1, 1, 1), 1),     # 16 channels: 48-byte kernel rows
    (1, 64, 8, 7, 8, 3, 2, 1, (1, 1, 1, 1), 2),     # 32 per group, stride 2
]


def _case_id(c):
    N, C, H, W, M, k, s, d, p, g = c
    return f"N{N}C{C}H{H}W{W}M{M}k{k}s{s}d{d}p{''.join(map(str, p))}g{g}"


def _widen(case, wide):
    """wide: 16 more output channels per group, so groups of C/group > 1 take the GEMM path
    (fewer than 16 per group run the direct kernel)."""
    N, C, H, W, M, k, s, d, p, g = case
    return (N, C, H, W, M + 16 * g if wide else M, k, s, d, p, g)


def _case_rng(*key):
    """A generator seeded from the test case alone: the same data in every process (Python's
    hash() of a tuple holding NumPy types differs between runs)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("wide", [False, True], ids=["M", "M+16g"])
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.int8, np.int8),
                                     (np.uint8, np.uint8), (np.int8, np.uint8)])
def test_conv_integer_exact(isa, case, wide, xdt, wdt):
    N, C, H, W, M, k, s, d, p, g = _widen(case, wide)
    rng = _case_rng(case, xdt, wdt)
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, k, k), wdt)
    xzp = rand_q(rng, (), xdt)
    wzp = rand_q(rng, (M,), wdt)
    kw = dict(strides=(s, s), pads=p, dilations=(d, d), group=g)
    want = ref_conv_acc(x, w, xzp, wzp, **kw)
    for threads in (1, 2):
        with num_threads(threads):
            got = qc.conv_integer(x, w, xzp, wzp, **kw)
        assert_equal_exact(got, want, f"{isa} {case} threads={threads}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("wide", [False, True], ids=["M", "M+16g"])
@pytest.mark.parametrize("xdt,wdt,ydt", [(np.uint8, np.int8, np.uint8),
                                         (np.int8, np.int8, np.int8),
                                         (np.int8, np.uint8, np.uint8)])
def test_qlinear_conv_exact(isa, case, wide, xdt, wdt, ydt):
    _check_qlinear_case(isa, _widen(case, wide), xdt, wdt, ydt, _case_rng(case, xdt, wdt, 1))


def _check_qlinear_case(label, case, xdt, wdt, ydt, rng, threads=(1, 2)):
    """qlinear_conv against the reference on random data, with and without relu."""
    N, C, H, W, M, k, s, d, p, g = case
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, k, k), wdt)
    xzp = rand_q(rng, (), xdt)
    wzp = rand_q(rng, (M,), wdt)
    info = np.iinfo(ydt)
    yzp = ydt((info.min + info.max + 1) // 2 + rng.integers(-30, 31))
    xs = np.float32(0.02)
    ws = rng.uniform(0.001, 0.02, M).astype(np.float32)
    kw = dict(strides=(s, s), pads=p, dilations=(d, d), group=g)
    # Random (even extreme) zero points give each channel's accumulators a large offset of its
    # own; the bias cancels it (as a trained layer's bias would) plus a shift of the spread's
    # size, and y_scale follows the spread, so outputs use the range instead of saturating.
    acc = ref_conv_acc(x, w, xzp, wzp, **kw).astype(np.float64)
    center = acc.mean(axis=(0, 2, 3))
    spread = float(np.sqrt(np.mean((acc - center[None, :, None, None]) ** 2))) + 1.0
    ys = np.float32(rng.uniform(0.5, 2.0) * xs * ws.mean() * spread / 40)
    blim = int(min(5000, spread)) + 1
    bias = (-np.round(center) + rng.integers(-blim, blim, M)).astype(np.int32)
    for relu in (False, True):
        want = ref_qlinear_conv(x, xs, xzp, w, ws, wzp, ys, yzp, bias, relu=relu, **kw)
        # spread: the test is only meaningful if outputs are not all saturated
        assert relu or len(np.unique(want)) > min(want.size // 4, 8)
        for t in threads:
            with num_threads(t):
                got = qc.qlinear_conv(x, xs, xzp, w, ws, wzp, ys, yzp, bias, relu=relu, **kw)
            assert_equal_exact(got, want, f"{label} {case} relu={relu} threads={t}")


def test_qlinear_conv_per_tensor_and_ties(isa):
    # multiplier 0.5 exactly: every odd accumulator is a tie, which goes to even
    rng = np.random.default_rng(3)
    x = rand_q(rng, (1, 3, 6, 6), np.uint8)
    w = rng.integers(-2, 3, (4, 3, 3, 3)).astype(np.int8)
    want = ref_qlinear_conv(x, 0.5, 128, w, 1.0, 0, 1.0, np.uint8(100), pads=(1, 1, 1, 1))
    got = qc.qlinear_conv(x, 0.5, 128, w, 1.0, 0, 1.0, np.uint8(100), pads=(1, 1, 1, 1))
    assert_equal_exact(got, want, isa)
    acc = ref_conv_acc(x, w, 128, 0, pads=(1, 1, 1, 1))
    assert np.any(acc % 2 == 1)


def test_extreme_zero_points(isa):
    rng = np.random.default_rng(4)
    for xdt, xzp in ((np.uint8, 0), (np.uint8, 255), (np.int8, -128), (np.int8, 127)):
        x = rand_q(rng, (2, 5, 7, 6), xdt)
        for wzp in (-128, 127):
            w = rand_q(rng, (6, 5, 3, 3), np.int8)
            kw = dict(pads=(1, 2, 0, 1), strides=(2, 1))
            assert_equal_exact(qc.conv_integer(x, w, xzp, wzp, **kw),
                               ref_conv_acc(x, w, xzp, wzp, **kw), f"{isa} {xdt} {xzp} {wzp}")


def test_int32_wraps_like_numpy(isa):
    # K = 65 * 49 taps of 255 * 128: the sum passes 2^31 and wraps like the reference
    x = np.full((1, 65, 7, 7), 255, np.uint8)
    w = np.full((1, 65, 7, 7), -128, np.int8)
    want = ref_conv_acc(x, w, 0, 127)
    got = qc.conv_integer(x, w, 0, 127)
    assert_equal_exact(got, want, isa)


def test_packed_weight_same_result(isa):
    rng = np.random.default_rng(5)
    x = rand_q(rng, (2, 6, 8, 8), np.uint8)
    for g, cg, M in ((1, 6, 6), (1, 6, 20), (2, 3, 6), (2, 3, 34), (6, 1, 6), (6, 1, 96)):
        w = rand_q(rng, (M, cg, 3, 3), np.int8)
        wzp = rand_q(rng, (M,), np.int8)
        pw = qc.pack_conv_weight(w, wzp, group=g)
        # depthwise and small groups (< 16 outputs per group) run the direct kernel
        assert pw.path == ("direct" if cg == 1 or M // g < 16 else "gemm")
        assert pw.shape == (M, cg, 3, 3)
        kw = dict(pads=(1, 1, 1, 1), group=g)
        want = ref_conv_acc(x, w, 3, wzp, **kw)
        assert_equal_exact(qc.conv_integer(x, pw, 3, **kw), want, f"{isa} g={g}")
        ws = np.full(M, 0.01, np.float32)
        assert_equal_exact(qc.qlinear_conv(x, 0.1, 3, pw, ws, None, 2.0, np.uint8(7), **kw),
                           qc.qlinear_conv(x, 0.1, 3, w, ws, wzp, 2.0, np.uint8(7), **kw),
                           f"{isa} g={g}")
    with pytest.raises(ValueError, match="w_zero_point"):
        qc.conv_integer(x, pw, 3, wzp, group=6)
    with pytest.raises(ValueError, match="group"):
        qc.conv_integer(x, pw, 3, group=1)


def test_non_contiguous_and_out(isa):
    rng = np.random.default_rng(6)
    xb = rand_q(rng, (2, 4, 9, 16), np.int8)
    x = xb[:, ::-1, :, ::2]
    w = rand_q(rng, (5, 4, 3, 3), np.int8)[:, :, ::-1]
    want = ref_conv_acc(np.ascontiguousarray(x), np.ascontiguousarray(w), -3, 2, pads=(1, 1, 1, 1))
    x_before, w_before = x.copy(), w.copy()
    out = np.empty(want.shape, np.int32)
    got = qc.conv_integer(x, w, -3, 2, pads=(1, 1, 1, 1), out=out)
    assert got is out
    assert_equal_exact(got, want, isa)
    assert_equal_exact(x, x_before, "x unchanged")
    assert_equal_exact(w, w_before, "w unchanged")


def test_huge_strides_single_output(isa):
    rng = np.random.default_rng(22)
    x = rand_q(rng, (1, 4, 5, 6), np.int8)
    for g, cg in ((4, 1), (1, 4)):
        w = rand_q(rng, (4, cg, 3, 3), np.int8)
        kw = dict(strides=(1 << 20, 1 << 19), pads=(1, 0, 0, 2), group=g)
        got = qc.conv_integer(x, w, -1, 2, **kw)
        assert got.shape == (1, 4, 1, 1)
        assert_equal_exact(got, ref_conv_acc(x, w, -1, 2, **kw), f"{isa} g={g}")


# 1x1 kernels whose stride leaves one output row or column and crops the rest of the input:
# the stride of such a dimension does not matter, but the output plane is not the input plane
# (the unstrided pointwise GEMM read it as one: 1 + 2 instead of 1 + 3 in the first case).
# (N, C, H, W), M, group, strides
CROPPED = [((1, 2, 1, 2), 16, 1, (1, 2)), ((1, 64, 2, 2), 128, 1, (2, 2)),
           ((2, 8, 2, 40), 16, 1, (2, 1)), ((1, 8, 2, 1024), 16, 1, (2, 1)),
           ((1, 34, 3, 1), 34, 2, (2, 3)), ((2, 16, 5, 3), 32, 1, (1, 4))]


@pytest.mark.parametrize("case", CROPPED, ids=lambda c: f"{c[0]}-M{c[1]}-g{c[2]}-s{c[3]}")
@pytest.mark.parametrize("route", [0, 1, -1], ids=["default", "nchw", "nhwc"])
def test_pointwise_cropped_by_stride(isa, case, route):
    shape, M, g, strides = case
    rng = np.random.default_rng(sum(shape) + M)
    x = rand_q(rng, shape, np.uint8)
    w = rand_q(rng, (M, shape[1] // g, 1, 1), np.int8)
    wzp = rand_q(rng, (M,), np.int8)
    kw = dict(strides=strides, group=g)
    want = ref_conv_acc(x, w, 7, wzp, **kw)
    prev = _C._set_conv_nchw(route)
    try:
        assert_equal_exact(qc.conv_integer(x, w, 7, wzp, **kw), want, f"{isa} {case}")
        ws = rng.uniform(0.001, 0.01, M).astype(np.float32)
        assert_equal_exact(qc.qlinear_conv(x, 0.05, 7, w, ws, wzp, 1.0, np.uint8(128), **kw),
                           ref_qlinear_conv(x, 0.05, 7, w, ws, wzp, 1.0, np.uint8(128), **kw),
                           f"{isa} {case} qlinear")
    finally:
        _C._set_conv_nchw(prev)


def test_out_of_memory_names_the_padded_input():
    # pads of 2**20 around a 4x4 image: 9 outputs, but the work buffers hold the padded image
    # (4.4 TB): a MemoryError that says so, not an empty one
    x = np.ones((1, 1, 4, 4), np.uint8)
    w = np.ones((1, 1, 3, 3), np.int8)
    with pytest.raises(MemoryError, match=r"x: out of memory for the convolution's work "
                                          r"buffers \(a padded image of .* = 4398063288336 "
                                          r"bytes; pads \(1048576, "):
        qc.conv_integer(x, w, pads=(2 ** 20,) * 4, strides=(2 ** 20, 2 ** 20))
    assert qc.conv_integer(x, w, pads=(8,) * 4, strides=(8, 8)).ravel().tolist() == \
        [0, 0, 0, 0, 9, 0, 0, 0, 0]


def test_zero_size():
    x = np.zeros((0, 3, 5, 5), np.uint8)
    w = np.zeros((4, 3, 3, 3), np.int8)
    assert qc.conv_integer(x, w).shape == (0, 4, 3, 3)
    x = np.zeros((2, 3, 5, 5), np.uint8)
    w = np.zeros((0, 3, 3, 3), np.int8)
    assert qc.conv_integer(x, w).shape == (2, 0, 3, 3)


@pytest.mark.parametrize("hw, pads, out_hw", [
    ((0, 5), (1, 1, 1, 1), (0, 5)), ((4, 0), (0, 0, 0, 0), (2, 0)), ((0, 0), (0,) * 4, (0, 0)),
    ((2, 0), (0, 0, 0, 0), (0, 0)), ((0, 2), (0, 0, 0, 0), (0, 0)),
    ((0, 5), (2, 0, 2, 0), (2, 3))])  # (the last: padding only, as ONNX's formula says)
def test_empty_planes(isa, hw, pads, out_hw):
    """An empty plane gives an empty output even where the kernel does not fit the padding
    (ONNX's floor((H + pads - k) / s) + 1 is 0 or less); a non-empty one that does not fit
    stays an error. Where the padding alone holds windows, they are computed."""
    rng = np.random.default_rng(0)
    x = np.zeros((2, 3) + hw, np.uint8)
    w = rand_q(rng, (4, 3, 3, 3), np.int8)
    bias = rng.integers(-5000, 5000, 4).astype(np.int32)
    for yield_ in (lambda: qc.conv_integer(x, w, 7, pads=pads),
                   lambda: qc.qlinear_conv(x, 0.5, 7, w, 0.25, 0, 2.0, np.uint8(9), bias,
                                           pads=pads)):
        assert yield_().shape == (2, 4) + out_hw
    if 0 not in out_hw:
        assert_equal_exact(qc.conv_integer(x, w, 7, pads=pads), ref_conv_acc(x, w, 7, pads=pads))
        assert_equal_exact(qc.qlinear_conv(x, 0.5, 7, w, 0.25, 0, 2.0, np.uint8(9), bias,
                                           pads=pads),
                           ref_qlinear_conv(x, 0.5, 7, w, 0.25, 0, 2.0, np.uint8(9), bias,
                                            pads=pads))
    with pytest.raises(ValueError, match="kernel that fits the padded input"):
        qc.conv_integer(np.zeros((1, 3, 2, 5), np.uint8), w)


def test_pointwise_paths(isa):
    # 1x1 layers: many pixels (the NCHW GEMM with AVX-512 VNNI) and few pixels with a long K
    # (the NHWC path everywhere)
    rng = np.random.default_rng(23)
    for C, M, H in ((40, 20, 9), (300, 20, 7)):
        x = rand_q(rng, (2, C, H, H), np.uint8)
        w = rand_q(rng, (M, C, 1, 1), np.int8)
        wzp = rand_q(rng, (M,), np.int8)
        assert_equal_exact(qc.conv_integer(x, w, 9, wzp), ref_conv_acc(x, w, 9, wzp),
                           f"{isa} C={C}")
        ws = rng.uniform(0.001, 0.002, M).astype(np.float32)
        want = ref_qlinear_conv(x, 0.05, 9, w, ws, 0, 1.0, np.uint8(128))
        assert_equal_exact(qc.qlinear_conv(x, 0.05, 9, w, ws, 0, 1.0, np.uint8(128)), want,
                           f"{isa} C={C}")


def test_bigger_layer_threads(isa):
    # a few hundred output pixels, several pixel blocks and tasks per group
    rng = np.random.default_rng(7)
    x = rand_q(rng, (2, 16, 20, 23), np.uint8)
    w = rand_q(rng, (40, 8, 3, 3), np.int8)
    kw = dict(pads=(1, 1, 1, 1), group=2)
    want = ref_conv_acc(x, w, 128, 0, **kw)
    for t in (1, 2):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, 128, 0, **kw), want, f"{isa} t={t}")


# Few output pixels for many output channels (ResNet's 7x7 planes at batch 1): the GEMM path
# reads the patches in place and splits the output channels over tasks (blocks of 32; not a
# multiple for 200), across images with N = 2; threads 1-3 give 1-6 column blocks. And 1x1
# projections of 256 / 512 channels onto few pixels (the GEMM path's pixels transposed per
# block, into rows one cache line longer than the channels).
FEW_PIXELS = [(1, 128, 7, 7, 96, 3, 1, 1, (1, 1, 1, 1), 1),
              (1, 64, 9, 5, 200, 3, 1, 1, (1, 1, 1, 1), 1),
              (2, 96, 6, 7, 128, 3, 2, 1, (1, 0, 1, 0), 1),
              (1, 256, 7, 7, 512, 3, 1, 1, (1, 1, 1, 1), 1),
              (2, 256, 5, 5, 64, 1, 1, 1, (0, 0, 0, 0), 1),
              (1, 512, 12, 12, 96, 1, 1, 1, (0, 0, 0, 0), 1)]


@pytest.mark.parametrize("case", FEW_PIXELS, ids=_case_id)
def test_few_pixels_output_channel_split(isa, case):
    N, C, H, W, M, k, s, d, p, g = case
    rng = _case_rng(case, "split")
    x = rand_q(rng, (N, C, H, W), np.uint8)
    w = rand_q(rng, (M, C, k, k), np.int8)
    kw = dict(strides=(s, s), pads=p)
    want = ref_conv_acc(x, w, 77, 0, **kw)
    for t in (1, 2, 3):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, 77, 0, **kw), want, f"{isa} {case} t={t}")
    _check_qlinear_case(isa, case, np.uint8, np.int8, np.uint8, rng, threads=(1, 2, 3))
    _check_qlinear_case(isa, case, np.int8, np.int8, np.int8, rng, threads=(2,))


# ---- indirect rows: patches read in place from a padded NHWC copy (per-pixel row offsets) ----

# (N, C, H, W, M, kh, kw, sh, sw, dh, dw, pads[, group]): kw * C a multiple of 4 (dense, one
# column step: kh runs) or C / group a multiple of 4 (grouped or dilated along x: kh * kw runs),
# with 16+ outputs per group (the GEMM path)
IX_CASES = [
    (1, 64, 9, 10, 64, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 4),     # Cg 16, ResNeXt-like
    (1, 32, 11, 7, 256, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 8),    # Cg 4, 32 outputs per group
    (1, 24, 12, 9, 48, 3, 2, 2, 1, 2, 2, (1, 0, 2, 1), 3),     # Cg 8, phases and dilation
    (2, 32, 10, 13, 32, 3, 3, 1, 2, 1, 1, (0, 1, 1, 1), 2),
    (1, 4, 9, 9, 24, 3, 3, 1, 1, 2, 2, (2, 2, 2, 2)),
    (2, 16, 17, 19, 8, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
    (1, 8, 11, 10, 40, 3, 3, 2, 2, 1, 1, (1, 0, 1, 2)),
    (1, 12, 13, 9, 17, 5, 3, 2, 1, 2, 1, (2, 1, 2, 1)),    # sh 2 with dh 2: one phase
    (1, 12, 14, 9, 17, 4, 3, 3, 1, 2, 1, (0, 1, 3, 1)),    # sh 3, dh 2: taps in every phase
    (1, 4, 10, 12, 33, 2, 1, 1, 2, 1, 1, (0, 0, 1, 0)),    # kw 1
    (1, 4, 9, 13, 16, 3, 5, 3, 2, 1, 2, (1, 2, 1, 2)),
    (2, 64, 12, 5, 32, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
    (1, 8, 3, 300, 256, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),   # blocks of part of a wide row
    (2, 16, 9, 11, 32, 1, 1, 2, 2, 1, 1, (0, 0, 1, 1)),    # 1x1, strided and padded
    (3, 8, 4, 5, 64, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),      # small planes: blocks span images
    (1, 256, 4, 4, 512, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),   # few pixels: output channels split
    (2, 64, 3, 3, 256, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),    # the same over two images
    (1, 4, 8, 9, 16, 3, 3, 2, 2, 1, 1, (0, 0, 0, 0)),      # no padding, the last row unread
    (1, 4, 8, 9, 16, 3, 3, 1, 1, 3, 3, (0, 0, 0, 0)),      # dilation 3
    # the padded copy from NCHW x in bands of rows (batch 1 on 2 or 3 threads): padding
    # above and below, then above only
    (1, 80, 30, 7, 32, 3, 3, 1, 1, 1, 1, (2, 1, 1, 1)),
    (1, 80, 20, 9, 32, 3, 3, 1, 1, 1, 1, (2, 1, 0, 1)),
]


def _ix_id(c):
    N, C, H, W, M, kh, kw, sh, sw, dh, dw, p = c[:12]
    g = c[12] if len(c) > 12 else 1
    return f"N{N}C{C}H{H}W{W}M{M}k{kh}x{kw}s{sh}{sw}d{dh}{dw}p{''.join(map(str, p))}g{g}"


@pytest.mark.parametrize("case", IX_CASES, ids=_ix_id)
@pytest.mark.parametrize("xdt,wdt,wzp0", [(np.uint8, np.int8, True), (np.uint8, np.int8, False),
                                          (np.int8, np.uint8, False)])
def test_indirect_rows_exact(isa, case, xdt, wdt, wzp0):
    """The indirect rows (each output pixel's patch as kh runs of kw * C bytes, or kh * kw
    runs of its group's Cg channels, at that pixel's offset in a padded NHWC copy of x: with
    uint8 x and symmetric int8 weights the AVX-512 VNNI kernel reads them where they lie,
    otherwise the GEMM gathers them with their row sums) and im2col, against the reference:
    int32 and requantized, on 1 to 3 threads (blocks of pixels that start mid-row, span
    images, or take every pixel for a slice of the output channels)."""
    N, C, H, W, M, kh, kw_, sh, sw, dh, dw, p = case[:12]
    g = case[12] if len(case) > 12 else 1
    rng = _case_rng(case, xdt, wdt, wzp0, "ix")
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, kh, kw_), wdt)
    xzp = rand_q(rng, (), xdt)
    wzp = np.zeros(M, wdt) if wzp0 else rand_q(rng, (M,), wdt)
    kw = dict(strides=(sh, sw), pads=p, dilations=(dh, dw), group=g)
    want = ref_conv_acc(x, w, xzp, wzp, **kw)
    xs, ys = np.float32(0.02), np.float32(0.7)
    ws = rng.uniform(0.001, 0.02, M).astype(np.float32)
    bias = rng.integers(-5000, 5000, M).astype(np.int32)
    wantq = ref_qlinear_conv(x, xs, xzp, w, ws, wzp, ys, np.uint8(100), bias, relu=False, **kw)
    prev_nchw = _C._set_conv_nchw(-1)
    try:
        for mode in (1, -1):
            prev = _C._set_conv_ix(mode)
            try:
                for t in (1, 2, 3):
                    with num_threads(t):
                        got = qc.conv_integer(x, w, xzp, wzp, **kw)
                        gotq = qc.qlinear_conv(x, xs, xzp, w, ws, wzp, ys, np.uint8(100), bias,
                                               **kw)
                    assert_equal_exact(got, want, f"{isa} ix={mode} t={t}")
                    assert_equal_exact(gotq, wantq, f"{isa} ix={mode} t={t} qlinear")
            finally:
                _C._set_conv_ix(prev)
    finally:
        _C._set_conv_nchw(prev_nchw)


def test_indirect_rows_in_image_chunks(isa):
    """Images whose padded copies pass the L2 room in all (here 700 KB each, 3 images) are
    copied and convolved in chunks (1 image each on 1 thread, 2 then 1 on 2 threads): every
    image's output, from NCHW and from NHWC x (a plan's layouts), requantized and int32."""
    rng = np.random.default_rng(17)
    N, C, H, W, M = 3, 128, 72, 72, 32
    x = rand_q(rng, (N, C, H, W), np.uint8)
    w = rand_q(rng, (M, C, 3, 3), np.int8)
    kw = dict(strides=(1, 1), pads=(1, 1, 1, 1))
    want = ref_conv_acc(x, w, 131, 0, **kw)
    xs, ys, ws = np.float32(0.02), np.float32(0.7), rng.uniform(0.001, 0.02, M).astype(np.float32)
    bias = rng.integers(-5000, 5000, M).astype(np.int32)
    wantq = ref_qlinear_conv(x, xs, np.uint8(131), w, ws, np.zeros(M, np.int8), ys,
                             np.uint8(100), bias, relu=False, **kw)
    packed = qc.pack_conv_weight(w)
    plan = _C._conv_plan(packed._capsule, np.uint8(131), xs, ws, ys, np.uint8(100), bias, (1, 1),
                         (1, 1, 1, 1), (1, 1), 1, False, 1)  # x NHWC, y NCHW
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for t in (1, 2):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, np.uint8(131), 0, **kw), want, f"{isa} t={t}")
            assert_equal_exact(qc.qlinear_conv(x, xs, np.uint8(131), packed, ws, None, ys,
                                               np.uint8(100), bias, **kw), wantq, f"{isa} t={t}")
            assert_equal_exact(_C._conv_exec(plan, x_nhwc), wantq, f"{isa} NHWC t={t}")


# ---- prepared QLinearConv (what a QuantizedModel's conv steps run) ----

@pytest.mark.parametrize("case", [c for c in CASES if c[0] == 1][:12] + CASES[-4:] + [
    (2, 32, 6, 7, 24, 1, 1, 1, (0, 0, 0, 0), 4),   # grouped 1x1: A in place
    (1, 128, 4, 4, 240, 3, 1, 1, (1, 1, 1, 1), 1)], ids=_case_id)  # output channels split
@pytest.mark.parametrize("xdt,ydt,use_bias,relu", [(np.uint8, np.uint8, True, True),
                                                   (np.int8, np.int8, False, False)])
def test_conv_plan_matches_qlinear_conv(isa, case, xdt, ydt, use_bias, relu):
    """_conv_exec(_conv_plan(...), x) equals qlinear_conv with the same arguments, bit for bit,
    in every layout (x and y NCHW or NHWC: a model's tensors between convolutions), on 1 and
    3 threads, and the plan can run again on other inputs of other sizes."""
    N, C, H, W, M, k, s, d, p, g = _widen(case, True)
    rng = _case_rng(case, xdt, ydt, "plan")
    w = rand_q(rng, (M, C // g, k, k), np.int8)
    packed = qc.pack_conv_weight(w, group=g)
    xzp, yzp = rand_q(rng, (), xdt), ydt(rng.integers(-20, 20) + (128 if ydt == np.uint8 else 0))
    xs, ys = np.float32(0.02), np.float32(0.5)
    ws = rng.uniform(0.001, 0.02, M).astype(np.float32)
    bias = rng.integers(-3000, 3000, M).astype(np.int32) if use_bias else None
    kw = dict(strides=(s, s), pads=p, dilations=(d, d), group=g)
    plans = [_C._conv_plan(packed._capsule, xzp, xs, ws, ys, yzp, bias, (s, s), p, (d, d), g, relu,
                           layout) for layout in range(4)]
    assert _C._conv_route(plans[0], (N, C, H, W)) in ("direct", "nchw", "gemm")
    for shape in ((N, C, H, W), (2, C, H + 3, W + 1)):
        x = rand_q(rng, shape, xdt)
        want = qc.qlinear_conv(x, xs, xzp, packed, ws, None, ys, yzp, bias, relu=relu, **kw)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for layout, plan in enumerate(plans):
            for t in (1, 3):
                with num_threads(t):
                    y = _C._conv_exec(plan, x_nhwc if layout & 1 else x)
                if layout & 2:
                    assert y.shape == (want.shape[0],) + want.shape[2:] + want.shape[1:2]
                    y = y.transpose(0, 3, 1, 2)
                assert_equal_exact(y, want, f"{isa} {case} {shape} layout={layout} t={t}")


def test_conv_plan_errors():
    w = np.ones((8, 4, 3, 3), np.int8)
    packed = qc.pack_conv_weight(w)
    ws = np.full(8, 0.01, np.float32)
    plan = _C._conv_plan(packed._capsule, np.uint8(3), np.float32(0.1), ws, np.float32(0.2),
                         np.uint8(9), None, (1, 1), (1, 1, 1, 1), (1, 1), 1, False)
    x = np.zeros((1, 4, 5, 5), np.uint8)
    before = x.copy()
    assert _C._conv_exec(plan, x).shape == (1, 8, 5, 5)
    assert np.array_equal(x, before)
    with pytest.raises(TypeError, match="x: expected uint8"):
        _C._conv_exec(plan, x.astype(np.int8))
    with pytest.raises(ValueError, match="x: expected C = 4"):
        _C._conv_exec(plan, np.zeros((1, 5, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        _C._conv_exec(plan, np.zeros((4, 5, 5), np.uint8))
    plan0 = _C._conv_plan(packed._capsule, np.uint8(3), np.float32(0.1), ws, np.float32(0.2),
                          np.uint8(9), None, (1, 1), (0, 0, 0, 0), (1, 1), 1, False)
    with pytest.raises(ValueError, match="kernel that fits"):
        _C._conv_exec(plan0, np.zeros((1, 4, 2, 2), np.uint8))
    args = [packed._capsule, np.uint8(3), np.float32(0.1), ws, np.float32(0.2), np.uint8(9),
            None, (1, 1), (1, 1, 1, 1), (1, 1), 1, False]
    for i, bad, exc, msg in [(1, 3, TypeError, "x_zero_point: expected an int8 or uint8"),
                             (3, np.full(5, 0.01, np.float32), ValueError, "w_scale"),
                             (4, np.float32(0.0), ValueError, "y_scale"),
                             (6, np.zeros(7, np.int32), ValueError, "bias: expected shape"),
                             (7, (0, 1), ValueError, "strides"),
                             (10, 2, ValueError, "group: expected 1"),
                             (0, "nope", TypeError, "w: expected a packed conv weight")]:
        a = list(args)
        a[i] = bad
        with pytest.raises(exc, match=msg):
            _C._conv_plan(*a)
    with pytest.raises(TypeError, match="plan: expected a _conv_plan"):
        _C._conv_exec(packed._capsule, x)
    with pytest.raises(ValueError, match="layout: expected 0..3"):
        _C._conv_plan(*args, 4)
    nhwc = _C._conv_plan(*args, 3)
    assert _C._conv_exec(nhwc, np.zeros((1, 5, 5, 4), np.uint8)).shape == (1, 5, 5, 8)
    with pytest.raises(ValueError, match="x: expected C = 4"):
        _C._conv_exec(nhwc, x)  # NCHW (1, 4, 5, 5) read as NHWC: C = 5
    assert _C._conv_route(plan, (1, 4, 5, 5)) == "direct"  # 8 outputs: the per-plane kernels
    with pytest.raises(ValueError, match="x: expected C = 4"):
        _C._conv_route(plan, (1, 5, 5, 5))
    with pytest.raises(TypeError, match="x_shape"):
        _C._conv_route(plan, (1, 4, 5))


@pytest.mark.parametrize("C,M,H,route", [
    (160, 960, 7, "gemm"),  # under 64 pixels, K >= 64: the NHWC GEMM (its vectors fill)
    (96, 576, 6, "gemm"),
    (320, 1280, 7, "gemm"),
    (32, 192, 7, "nchw"),   # tiny K stays on the NCHW GEMM
    (96, 576, 8, "nchw"),   # from 64 pixels on
    (64, 384, 14, "nchw")])
def test_pointwise_route(C, M, H, route):
    """Which GEMM a 1x1 convolution (NCHW in and out) takes: the NCHW GEMM (only with the
    AVX-512 VNNI kernel) for planes of 64+ pixels or a K under 64, else the NHWC GEMM."""
    if not qc.cpu_info()["kernels"]["conv_nchw"].endswith("avx512vnni"):
        pytest.skip("the NCHW GEMM runs by default only with the AVX-512 VNNI kernel")
    packed = qc.pack_conv_weight(np.ones((M, C, 1, 1), np.int8))
    plan = _C._conv_plan(packed._capsule, np.uint8(3), np.float32(0.1),
                         np.full(M, 0.01, np.float32), np.float32(0.2), np.uint8(9), None,
                         (1, 1), (0, 0, 0, 0), (1, 1), 1, False)
    assert _C._conv_route(plan, (1, C, H, H)) == route


@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (3, 5, 7, 9), (2, 512, 7, 7), (1, 1, 1, 1),
                                   (4, 17, 33, 2), (0, 3, 4, 5), (2, 3, 0, 4), (1, 960, 3, 3),
                                   (1, 20, 3, 3), (2, 18, 1, 7)])
def test_layout4_matches_numpy(shape, rng):
    """_C._layout4 (a QuantizedModel's NCHW <-> NHWC steps) equals NumPy's transposes,
    byte for byte, for both dtypes, contiguous or not, and leaves its input alone. Planes
    under 16 pixels take the edge tiles, whose short rows are loaded 16 bytes at a time except
    near the end of the source (20 x 9: rows 0-18 whole, row 19 in pieces; the sanitizer run
    of .ci/run sees any read past the array)."""
    for dt in (np.uint8, np.int8):
        x = rand_q(rng, shape, dt)
        before = x.copy()
        y = _C._layout4(x, True)
        assert y.dtype == dt and y.flags.c_contiguous
        assert_equal_exact(y, x.transpose(0, 2, 3, 1), f"{shape} {dt}")
        assert_equal_exact(_C._layout4(y, False), x, f"{shape} {dt} back")
        assert np.array_equal(x, before)
        v = x.transpose(0, 1, 3, 2)  # not contiguous
        assert_equal_exact(_C._layout4(v, True), v.transpose(0, 2, 3, 1), f"{shape} view")


def test_layout4_errors():
    with pytest.raises(ValueError, match="x: expected a 4-D array"):
        _C._layout4(np.zeros((2, 3, 4), np.uint8), True)
    with pytest.raises(TypeError, match="x"):
        _C._layout4(np.zeros((1, 2, 3, 4), np.float32), False)


# ---- the NCHW GEMM path (weights on rows, pixels on columns) ----

# the paths with a scalar kernel and an AVX-512 VNNI one, only the latter taken by default
VNNI_PATH_KERNELS = ["scalar"] + (["avx512vnni"] if "avx512vnni" in SUPPORTED_ISAS else [])


def _forced_path(force, isa):
    """Force a path on (force: one of the _C._set_conv_* hooks) under ISA cap `isa`, so it
    runs that level's kernel; the previous setting comes back after."""
    prev = force(1)
    try:
        with isa_cap(isa):
            yield isa
    finally:
        force(prev)


@pytest.fixture(params=VNNI_PATH_KERNELS)
def nchw(request):
    """Every GEMM-path convolution forced onto the NCHW GEMM, with its scalar kernel and (where
    the CPU has it) its AVX-512 VNNI kernel; by default only the latter takes that path."""
    yield from _forced_path(_C._set_conv_nchw, request.param)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.int8, np.uint8)])
def test_nchw_path_exact(nchw, case, xdt, wdt):
    case = _widen(case, True)
    N, C, H, W, M, k, s, d, p, g = case
    rng = _case_rng(case, xdt, wdt, 2)
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, k, k), wdt)
    xzp, wzp = rand_q(rng, (), xdt), rand_q(rng, (M,), wdt)
    kw = dict(strides=(s, s), pads=p, dilations=(d, d), group=g)
    want = ref_conv_acc(x, w, xzp, wzp, **kw)
    for t in (1, 3):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, xzp, wzp, **kw), want,
                               f"{nchw} {case} threads={t}")
    ydt = np.uint8 if xdt == np.uint8 else np.int8
    _check_qlinear_case(nchw, case, xdt, wdt, ydt, rng, threads=(1, 3))


@pytest.mark.parametrize("P", [1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65, 97, 200])
@pytest.mark.parametrize("M", [1, 7, 8, 9, 16, 17, 24, 33])
def test_nchw_block_edges(nchw, P, M):
    # pixel counts around the 16-lane vectors, the 32/48-pixel kernel calls and the blocks of
    # a task; output channels around the 8-row weight tiles
    rng = np.random.default_rng(P * 100 + M)
    x = rand_q(rng, (2, 13, 1, P), np.uint8)
    w = rand_q(rng, (M, 13, 1, 1), np.int8)
    wzp = rand_q(rng, (M,), np.int8)
    for t in (1, 2, 3):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, 7, wzp), ref_conv_acc(x, w, 7, wzp),
                               f"{nchw} P={P} M={M} t={t}")
    ws = rng.uniform(0.001, 0.01, M).astype(np.float32)
    bias = rng.integers(-3000, 3000, M).astype(np.int32)
    want = ref_qlinear_conv(x, 0.05, 7, w, ws, 0, 0.2, np.uint8(100), bias)
    assert_equal_exact(qc.qlinear_conv(x, 0.05, 7, w, ws, 0, 0.2, np.uint8(100), bias), want,
                       f"{nchw} P={P} M={M}")


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_nchw_ties_and_near_ties(nchw, ydt):
    # mult 0.5: every odd accumulator is a tie; mult 0.5 + 2^-20: accumulators land within
    # 2^-15 of a tie, so the float32 shortcut must hand them to the float64 arithmetic
    rng = np.random.default_rng(31)
    x = rand_q(rng, (1, 20, 9, 11), np.uint8)
    w = rng.integers(-3, 4, (24, 20, 1, 1)).astype(np.int8)
    yzp = ydt(3)
    for mult in (0.5, 0.5 + 2.0 ** -20, 0.25 + 2.0 ** -21):
        for relu in (False, True):
            want = ref_qlinear_conv(x, mult, 128, w, 1.0, 0, 1.0, yzp, relu=relu)
            got = qc.qlinear_conv(x, mult, 128, w, 1.0, 0, 1.0, yzp, relu=relu)
            assert_equal_exact(got, want, f"{nchw} mult={mult} relu={relu}")


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_nchw_exact_epilogue_bounds(nchw, ydt):
    # Zero weights make every accumulator its channel's bias. Multiplier 2^-22 (the smallest the
    # one-rounding epilogue takes) with ties (2k + 1) 2^21 and accumulators one off them; then a
    # multiplier below it where one rounding would differ from onnx's float64 arithmetic:
    # 8384513 * 8392705 * 2^-47 = 0.5 + 2^-47, and 100.5 + 2^-47 rounds to the float64 tie 100.5
    # (rint: 100) where a single rounding gives 101.
    x = np.random.default_rng(33).integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    w = np.zeros((16, 4, 1, 1), np.int8)
    ks = np.arange(8)
    ties = ((2 * ks + 1) << 21).astype(np.int64)
    bias = np.concatenate([ties, ties[:4] + 1, -ties[4:] - 1]).astype(np.int32)
    for yzp in (ydt(3), ydt(100)):
        for relu in (False, True):
            want = ref_qlinear_conv(x, 2.0 ** -22, 9, w, 1.0, 0, 1.0, yzp, bias, relu=relu)
            got = qc.qlinear_conv(x, 2.0 ** -22, 9, w, 1.0, 0, 1.0, yzp, bias, relu=relu)
            assert_equal_exact(got, want, f"{nchw} 2^-22 yzp={yzp} relu={relu}")
    # large products (|C * mult| past 2^22, the one-rounding epilogue's range): the clamps
    big = np.array([-2 ** 23, 2 ** 23, -2 ** 23 + 1, 2 ** 22] * 4, np.int32)
    for mult in (2.0, 1.5, 0.75, 63.0):
        want = ref_qlinear_conv(x, mult, 9, w, 1.0, 0, 1.0, ydt(3), big)
        assert_equal_exact(qc.qlinear_conv(x, mult, 9, w, 1.0, 0, 1.0, ydt(3), big), want,
                           f"{nchw} mult={mult}")
    s = np.float32(8392705 * 2.0 ** -47)
    bias = np.full(16, 8384513, np.int32)
    want = ref_qlinear_conv(x, s, 9, w, 1.0, 0, 1.0, ydt(100), bias)
    assert (want == 100).all()
    assert_equal_exact(qc.qlinear_conv(x, s, 9, w, 1.0, 0, 1.0, ydt(100), bias), want,
                       f"{nchw} double rounding")


def test_nchw_large_accumulators_and_multipliers(nchw):
    # K = 300 (accumulators may pass 2^24), biases near the int32 limits (wrapping) and
    # multipliers from tiny to 100 (beyond what the float32 conversion takes unclamped)
    rng = np.random.default_rng(32)
    x = rand_q(rng, (1, 300, 5, 7), np.uint8)
    w = rand_q(rng, (12, 300, 1, 1), np.int8)
    bias = np.array([2**31 - 1, -2**31, 2**30, -2**30, 0, 1, -1, 2**24, -2**24, 12345,
                     -54321, 7], np.int32)
    ws = np.array([1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 64.0, 100.0, 3e4, 1e-2],
                  np.float32)
    for xzp in (0, 255):
        want = ref_qlinear_conv(x, 1.0, xzp, w, ws, 0, 1.0, np.uint8(128), bias)
        got = qc.qlinear_conv(x, 1.0, xzp, w, ws, 0, 1.0, np.uint8(128), bias)
        assert_equal_exact(got, want, f"{nchw} xzp={xzp}")
        assert_equal_exact(qc.conv_integer(x, w, xzp, 0), ref_conv_acc(x, w, xzp, 0), nchw)


# ---- the direct path (depthwise and small groups): tiles of the output planes ----

# (C, H, W, k, stride, dilation, pads, multiplier): planes around the 16-lane vectors and the
# 64-output steps, wider than one 256-column tile (several column tiles) and taller than one
# row band (several row tiles), channel counts around the SIMD widths, strides 1-3, dilation 2
DW_CASES = [
    (1, 1, 1, 3, 1, 1, (1, 1, 1, 1), 1),
    (15, 7, 7, 3, 1, 1, (1, 1, 1, 1), 1),
    (16, 14, 14, 3, 2, 1, (1, 1, 1, 1), 1),
    (17, 15, 17, 3, 1, 1, (1, 1, 1, 1), 1),
    (33, 16, 16, 3, 2, 1, (0, 1, 1, 0), 1),
    (3, 63, 65, 3, 1, 1, (1, 1, 1, 1), 1),
    (2, 64, 64, 3, 2, 1, (1, 1, 1, 1), 2),
    (2, 5, 300, 3, 1, 1, (1, 1, 1, 1), 1),     # two column tiles
    (2, 6, 520, 3, 2, 1, (1, 0, 1, 1), 1),     # two column tiles at stride 2
    (1, 9, 771, 3, 1, 1, (1, 1, 1, 1), 1),     # four column tiles
    (2, 200, 100, 3, 1, 1, (1, 1, 1, 1), 1),   # several row tiles
    (2, 190, 90, 3, 2, 1, (1, 1, 1, 1), 1),
    (2, 120, 70, 5, 3, 1, (2, 2, 2, 2), 1),    # 5x5 stride 3: row tiles, single taps
    (3, 40, 41, 3, 1, 2, (2, 2, 2, 2), 1),     # dilation 2: pairs two apart
    (3, 41, 40, 3, 2, 2, (2, 1, 2, 1), 1),     # dilation 2, stride 2: every tap paired
    (2, 23, 29, 5, 1, 1, (2, 2, 2, 2), 1),     # 5x5: pairs (0,1), (2,3) and a single
    (4, 19, 22, 4, 2, 1, (1, 2, 2, 1), 1),     # even kernel
    (2, 30, 31, 1, 2, 1, (0, 0, 0, 0), 3),     # 1x1 depthwise, multiplier 3
    (2, 9, 11, 3, 1, 1, (3, 3, 3, 3), 1),      # pads wider than the kernel's reach
]


def _dw_id(c):
    C, H, W, k, s, d, p, mul = c
    return f"C{C}H{H}W{W}k{k}s{s}d{d}p{''.join(map(str, p))}x{mul}"


@pytest.mark.parametrize("case", DW_CASES, ids=_dw_id)
@pytest.mark.parametrize("xdt,wdt,ydt", [(np.uint8, np.int8, np.uint8),
                                         (np.int8, np.uint8, np.int8)])
def test_direct_path_tiles(isa, case, xdt, wdt, ydt):
    C, H, W, k, s, d, p, mul = case
    rng = _case_rng("dw", case, xdt, wdt)
    x = rand_q(rng, (2, C, H, W), xdt)
    w = rand_q(rng, (C * mul, 1, k, k), wdt)
    xzp, wzp = rand_q(rng, (), xdt), rand_q(rng, (C * mul,), wdt)
    kw = dict(strides=(s, s), pads=p, dilations=(d, d), group=C)
    assert qc.pack_conv_weight(w, wzp, group=C).path == "direct"
    want = ref_conv_acc(x, w, xzp, wzp, **kw)
    for t in (1, 3):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, xzp, wzp, **kw), want,
                               f"{isa} {case} threads={t}")
    _check_qlinear_case(isa, (2, C, H, W, C * mul, k, s, d, p, C), xdt, wdt, ydt, rng,
                        threads=(1, 2))


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_direct_path_ties_and_epilogues(isa, ydt):
    # multiplier 0.5 (every odd accumulator a tie), within 2^-20 of ties, multipliers past 64
    # and biases near the int32 limits (the float64 path), relu with y_zp on both sides of 0
    rng = np.random.default_rng(41)
    C = 18
    x = rand_q(rng, (1, C, 21, 19), np.uint8)
    w = rng.integers(-3, 4, (C, 1, 3, 3)).astype(np.int8)
    kw = dict(pads=(1, 1, 1, 1), group=C)
    for mult in (0.5, 0.5 + 2.0 ** -20, 0.25 + 2.0 ** -21, 100.0, 1e-7):
        for yzp in (ydt(3), ydt(np.iinfo(ydt).min), ydt(np.iinfo(ydt).max)):
            for relu in (False, True):
                want = ref_qlinear_conv(x, mult, 128, w, 1.0, 0, 1.0, yzp, relu=relu, **kw)
                got = qc.qlinear_conv(x, mult, 128, w, 1.0, 0, 1.0, yzp, relu=relu, **kw)
                assert_equal_exact(got, want, f"{isa} mult={mult} yzp={yzp} relu={relu}")
    bias = rng.integers(-2**31, 2**31, C, dtype=np.int64).astype(np.int32)
    bias[:4] = (2**31 - 1, -2**31, 2**24, -2**24)
    ws = rng.uniform(1e-9, 1e-2, C).astype(np.float32)
    for xzp in (0, 255):
        want = ref_qlinear_conv(x, 1.0, xzp, w, ws, 0, 1.0, ydt(0), bias, **kw)
        got = qc.qlinear_conv(x, 1.0, xzp, w, ws, 0, 1.0, ydt(0), bias, **kw)
        assert_equal_exact(got, want, f"{isa} xzp={xzp} large bias")


def test_direct_path_extreme_values(isa):
    # x - x_zp and w - w_zp at +-255: the largest int16 pair products
    for xdt, xv, xzp in ((np.uint8, 255, 0), (np.uint8, 0, 255), (np.int8, 127, -128),
                         (np.int8, -128, 127)):
        for wdt, wv, wzp in ((np.uint8, 255, 0), (np.uint8, 0, 255), (np.int8, -128, 127)):
            x = np.full((1, 5, 9, 40), xv, xdt)
            w = np.full((5, 1, 5, 5), wv, wdt)
            kw = dict(pads=(2, 2, 2, 2), group=5)
            assert_equal_exact(qc.conv_integer(x, w, xzp, wzp, **kw),
                               ref_conv_acc(x, w, xzp, wzp, **kw), f"{isa} {xdt} {wdt}")


_BIG_PLANE_SCRIPT = r"""
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import quantc as qc
H = W = 6144
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (1, 1, H, W), dtype=np.uint8)
w = rng.integers(-127, 128, (1, 1, 3, 3), dtype=np.int8)
y = np.empty((1, 1, H, W), np.uint8)
y.fill(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
qc.qlinear_conv(x, 0.02, 128, w, 0.01, 0, 0.5, np.uint8(128), pads=(1, 1, 1, 1), out=y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
np.save(sys.argv[2], np.stack([x[0, 0, :8], x[0, 0, -8:]]))
np.save(sys.argv[3], np.stack([y[0, 0, :7], y[0, 0, -7:]]))
print((after - before) * 1024)
"""


def test_direct_path_big_plane_bounded_scratch(tmp_path):
    # one 6144^2 plane (36 MiB in, 36 MiB out): the direct path's scratch is a tile, not the
    # plane (an int32 accumulator plane alone would be 144 MiB); peak RSS measured in a fresh
    # process, the first and last rows checked against the reference on a crop
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(qc.__file__)))
    xs, ys = tmp_path / "x.npy", tmp_path / "y.npy"
    out = subprocess.run([sys.executable, "-c", _BIG_PLANE_SCRIPT, root, str(xs), str(ys)],
                         capture_output=True, text=True, check=True)
    grew = int(out.stdout.strip().splitlines()[-1])
    assert grew < 16 << 20, f"peak RSS grew by {grew} bytes during the call"
    xe, ye = np.load(xs), np.load(ys)
    rng = np.random.default_rng(0)  # the script's draws: x, then w
    rng.integers(0, 256, (1, 1, 6144, 6144), dtype=np.uint8)
    w = rng.integers(-127, 128, (1, 1, 3, 3), dtype=np.int8)
    top = ref_qlinear_conv(xe[0][None, None], 0.02, 128, w, 0.01, 0, 0.5, np.uint8(128),
                           pads=(1, 1, 1, 1))[0, 0]
    bottom = ref_qlinear_conv(xe[1][None, None], 0.02, 128, w, 0.01, 0, 0.5, np.uint8(128),
                              pads=(1, 1, 1, 1))[0, 0]
    assert_equal_exact(ye[0], top[:7], "top rows")
    assert_equal_exact(ye[1], bottom[1:], "bottom rows")


# ---- onnx reference evaluator ----

def _onnx_run(op, inputs, attrs):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names = [f"i{i}" if v is not None else "" for i, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    tmap = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
            np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}
    ins = [helper.make_tensor_value_info(n, tmap[v.dtype], v.shape)
           for n, v in zip(names, inputs) if v is not None]
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info(
        "y", TensorProto.UNDEFINED, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ReferenceEvaluator(model)
    return sess.run(None, {n: v for n, v in zip(names, inputs) if v is not None})[0]


ONNX_CASES = [
    (2, 4, 7, 8, 6, 3, 1, 1, (1, 1, 1, 1), 1),
    (1, 6, 9, 9, 6, 3, 2, 1, (0, 1, 1, 0), 6),
    (1, 4, 9, 8, 4, 3, 1, 2, (2, 1, 2, 1), 2),
    (1, 5, 6, 6, 3, 1, 2, 1, (0, 0, 0, 0), 1),
    (1, 3, 11, 11, 3, 5, 1, 1, (2, 2, 2, 2), 3),
]


@pytest.mark.parametrize("case", ONNX_CASES, ids=_case_id)
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.int8, np.int8),
                                     (np.uint8, np.uint8)])
def test_onnx_reference_evaluator(case, xdt, wdt):
    N, C, H, W, M, k, s, d, p, g = case
    rng = np.random.default_rng(11)
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, k, k), wdt)
    xzp = rand_q(rng, (), xdt)
    wzp = rand_q(rng, (M,), wdt)
    attrs = dict(strides=[s, s], pads=list(p), dilations=[d, d], group=g, kernel_shape=[k, k])
    want = _onnx_run("ConvInteger", [x, w, np.array(xzp), wzp], attrs)
    got = qc.conv_integer(x, w, xzp, wzp, strides=(s, s), pads=p, dilations=(d, d), group=g)
    assert_equal_exact(got, want, f"ConvInteger {case}")

    xs = np.array(0.03, np.float32)
    ws = rng.uniform(0.002, 0.02, M).astype(np.float32)
    ys = np.array(0.05 * np.sqrt(C // g * k * k), np.float32)
    yzp = np.array(rand_q(rng, (), xdt))
    bias = rng.integers(-3000, 3000, M).astype(np.int32)
    want = _onnx_run("QLinearConv", [x, xs, np.array(xzp), w, ws, wzp, ys, yzp, bias], attrs)
    got = qc.qlinear_conv(x, xs, xzp, w, ws, wzp, ys, yzp, bias, strides=(s, s), pads=p,
                          dilations=(d, d), group=g)
    assert_equal_exact(got, want, f"QLinearConv {case}")
    # per-tensor weight scale/zero point
    want = _onnx_run("QLinearConv", [x, xs, np.array(xzp), w, ws[:1].reshape(()),
                                     np.array(wzp[0]), ys, yzp], attrs)
    got = qc.qlinear_conv(x, xs, xzp, w, ws[0], wzp[0], ys, yzp, strides=(s, s), pads=p,
                          dilations=(d, d), group=g)
    assert_equal_exact(got, want, f"QLinearConv per-tensor {case}")


# ---- bad input ----

def test_bad_input():
    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.zeros((6, 4, 3, 3), np.int8)
    with pytest.raises(ValueError, match=r"x: expected a 4-D"):
        qc.conv_integer(x[0], w)
    with pytest.raises(ValueError, match=r"w: expected a 4-D"):
        qc.conv_integer(x, w[0])
    with pytest.raises(ValueError, match=r"x: expected C = 8"):
        qc.conv_integer(x, np.zeros((6, 8, 3, 3), np.int8))
    with pytest.raises(ValueError, match=r"divisible by group"):
        qc.conv_integer(x, np.zeros((6, 1, 3, 3), np.int8), group=4)
    with pytest.raises(ValueError, match=r"x: expected C = 6"):
        qc.conv_integer(x, np.zeros((6, 2, 3, 3), np.int8), group=3)
    with pytest.raises(ValueError, match=r"kernel that fits the padded input"):
        qc.conv_integer(x, np.zeros((6, 4, 7, 3), np.int8))
    with pytest.raises(ValueError, match=r"kernel that fits the padded input"):
        qc.conv_integer(x, w, dilations=(3, 1))
    with pytest.raises(ValueError, match=r"pads: expected values in \[0"):
        qc.conv_integer(x, w, pads=(-1, 0, 0, 0))
    with pytest.raises(TypeError, match=r"pads: expected a sequence of 4"):
        qc.conv_integer(x, w, pads=(1, 1))
    with pytest.raises(ValueError, match=r"strides: expected values in \[1"):
        qc.conv_integer(x, w, strides=(0, 1))
    with pytest.raises(ValueError, match=r"group: expected an int >= 1"):
        qc.conv_integer(x, w, group=0)
    with pytest.raises(TypeError, match=r"x: expected an array of int8 or uint8"):
        qc.conv_integer(x.astype(np.float32), w)
    with pytest.raises(ValueError, match=r"x_zero_point: expected values in \[0, 255\]"):
        qc.conv_integer(x, w, 300)
    with pytest.raises(TypeError, match=r"x_zero_point: expected uint8"):
        qc.conv_integer(x, w, np.int8(3))
    with pytest.raises(ValueError, match=r"w_zero_point: expected a scalar or shape \(6,\)"):
        qc.conv_integer(x, w, 0, np.zeros(5, np.int8))
    with pytest.raises(ValueError, match=r"w_scale: expected a scalar or shape \(6,\)"):
        qc.qlinear_conv(x, 0.1, 0, w, np.ones(4, np.float32), 0, 1.0, np.uint8(0))
    with pytest.raises(ValueError, match=r"x_scale: expected a scalar"):
        qc.qlinear_conv(x, np.ones(2), 0, w, 0.1, 0, 1.0, np.uint8(0))
    with pytest.raises(ValueError, match=r"y_scale: expected a positive finite value, got 0.0"):
        qc.qlinear_conv(x, 0.1, 0, w, 0.1, 0, 0.0, np.uint8(0))
    with pytest.raises(ValueError, match=r"w_scale: expected positive finite values"):
        qc.qlinear_conv(x, 0.1, 0, w, np.array([1, 1, 1, -1, 1, 1], np.float32), 0, 1.0, 0)
    with pytest.raises(ValueError, match=r"bias: expected shape \(6,\)"):
        qc.qlinear_conv(x, 0.1, 0, w, 0.1, 0, 1.0, np.uint8(0), np.zeros(5, np.int32))
    with pytest.raises(TypeError, match=r"bias: expected an array of int32"):
        qc.qlinear_conv(x, 0.1, 0, w, 0.1, 0, 1.0, np.uint8(0), np.zeros(6, np.int64))
    with pytest.raises(ValueError, match=r"out: expected shape"):
        qc.conv_integer(x, w, out=np.zeros((1, 6, 2, 2), np.int32))
    with pytest.raises(ValueError, match=r"x_scale \* w_scale / y_scale"):
        qc.qlinear_conv(x, 1e30, 0, w, 1e30, 0, 1.0, np.uint8(0))


def test_concurrent_calls_from_python_threads():
    # the GIL is released inside the kernels; calls from several threads at once agree
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(21)
    x = rand_q(rng, (2, 8, 17, 19), np.uint8)
    w = rand_q(rng, (12, 4, 3, 3), np.int8)
    pw = qc.pack_conv_weight(w, 3, group=2)
    dw = qc.pack_conv_weight(rand_q(rng, (8, 1, 3, 3), np.int8), 0, group=8)
    want = qc.conv_integer(x, pw, 128, pads=(1, 1, 1, 1), group=2)
    want_dw = qc.conv_integer(x, dw, 128, strides=(2, 2), group=8)

    def run(_):
        return (qc.conv_integer(x, pw, 128, pads=(1, 1, 1, 1), group=2),
                qc.conv_integer(x, dw, 128, strides=(2, 2), group=8))

    with num_threads(2), ThreadPoolExecutor(4) as ex:
        for got, got_dw in ex.map(run, range(16)):
            assert_equal_exact(got, want, "gemm path")
            assert_equal_exact(got_dw, want_dw, "depthwise path")


# ---- the small-group path on channel quads (grouped, Cg a multiple of 4, stride 1) ----

# (N, C, H, W, M, (kh, kw), dilation, pads, group): suited shapes (4 to 12 channels and 1 to
# 15 outputs per group, rows narrower and wider than the 16-lane vectors and the 64-output
# steps, dilation, asymmetric and no padding, 1x1 and non-square kernels)
GCONV_CASES = [
    (1, 128, 14, 14, 128, (3, 3), 1, (1, 1, 1, 1), 32),  # ResNeXt's g32 (4 in, 4 out)
    (2, 16, 9, 7, 8, (3, 3), 1, (1, 1, 1, 1), 4),
    (1, 32, 10, 13, 12, (3, 3), 2, (2, 1, 0, 3), 4),      # 8 in, 3 out, dilation 2
    (3, 8, 5, 5, 6, (1, 1), 1, (0, 0, 0, 0), 2),
    (1, 64, 20, 30, 32, (3, 5), 1, (1, 2, 1, 2), 8),
    (1, 24, 17, 3, 9, (3, 3), 1, (0, 0, 0, 0), 3),        # 3-wide rows, no padding
    (1, 24, 6, 67, 30, (2, 3), 1, (0, 1, 1, 0), 2),       # 12 in, 15 out per group
    (2, 8, 1, 1, 4, (3, 3), 1, (1, 1, 1, 1), 2),          # one pixel, fully padded taps
    (1, 12, 4, 80, 3, (1, 4), 1, (0, 3, 0, 0), 3),
]


@pytest.fixture(params=VNNI_PATH_KERNELS)
def gconv(request):
    """Every suited convolution forced onto the quad path with its scalar kernel and (where
    the CPU has it) its AVX-512 VNNI kernel; by default only the latter takes that path."""
    yield from _forced_path(_C._set_conv_gconv, request.param)


@pytest.mark.parametrize("case", GCONV_CASES, ids=str)
@pytest.mark.parametrize("xdt,ydt", [(np.uint8, np.uint8), (np.int8, np.int8),
                                     (np.uint8, np.int8)])
def test_gconv_exact(gconv, case, xdt, ydt):
    N, C, H, W, M, (kh, kw), d, p, g = case
    rng = _case_rng(case, xdt, ydt, 5)
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (M, C // g, kh, kw), np.int8)
    xzp = rand_q(rng, (), xdt)
    kwargs = dict(pads=p, dilations=(d, d), group=g)
    want = ref_conv_acc(x, w, xzp, 0, **kwargs)
    for t in (1, 3):
        with num_threads(t):
            assert_equal_exact(qc.conv_integer(x, w, xzp, np.int8(0), **kwargs), want,
                               f"{gconv} {case} threads={t}")
    info = np.iinfo(ydt)
    yzp = ydt((info.min + info.max + 1) // 2 + rng.integers(-30, 31))
    ws = rng.uniform(0.001, 0.02, M).astype(np.float32)
    ys = np.float32(0.02 * ws.mean() * (np.abs(want).mean() + 1) / 40)
    bias = rng.integers(-5000, 5000, M).astype(np.int32)
    pw = qc.pack_conv_weight(w, np.int8(0), group=g)
    for relu in (False, True):
        ref = ref_qlinear_conv(x, 0.02, xzp, w, ws, np.int8(0), ys, yzp, bias, relu=relu, **kwargs)
        assert relu or len(np.unique(ref)) > min(ref.size // 4, 8)
        for t in (1, 3):
            with num_threads(t):
                got = qc.qlinear_conv(x, 0.02, xzp, pw, ws, None, ys, yzp, bias, relu=relu,
                                      **kwargs)
            assert_equal_exact(got, ref, f"{gconv} {case} relu={relu} threads={t}")


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_gconv_epilogue_paths(gconv, ydt):
    # multipliers below 2^-20 (the general epilogue) to large ones that saturate,
    # and biases that put |C| past 2^24 (no one-rounding epilogue for the call), around ties
    rng = np.random.default_rng(11)
    N, C, H, W, M, g = 1, 32, 6, 21, 16, 4
    x = rand_q(rng, (N, C, H, W), np.uint8)
    w = rand_q(rng, (M, C // g, 3, 3), np.int8)
    kwargs = dict(pads=(1, 1, 1, 1), group=g)
    acc = ref_conv_acc(x, w, 9, 0, **kwargs).astype(np.int64)
    for big in (0, 1 << 25):
        bias = rng.integers(-3000, 3000, M).astype(np.int64)
        bias[::3] += big
        bias = bias.astype(np.int32)
        ws = np.float32(2.0) ** rng.integers(-24, 4, M).astype(np.float32)
        ws[0], ws[1] = np.float32(1e-30), np.float32(3e-7)
        c2 = float(acc[0, 2, 2, 2] + bias[2])  # a tie k + 1/2 at one output, where exact
        ws[2] = np.float32(abs(0.5 / c2)) if c2 else np.float32(1)
        yzp = ydt(3)
        ref = ref_qlinear_conv(x, 1.0, np.uint8(9), w, ws, np.int8(0), 1.0, yzp, bias, **kwargs)
        got = qc.qlinear_conv(x, 1.0, np.uint8(9), w, ws, np.int8(0), 1.0, yzp, bias, **kwargs)
        assert_equal_exact(got, ref, f"{gconv} big={big}")


def test_gconv_unsuited_shapes_still_exact(gconv):
    # forced on, the path still leaves what it cannot run to the others: stride 2, weights
    # with a zero point, uint8 weights, depthwise, Cg not a multiple of 4
    rng = np.random.default_rng(12)
    for (C, M, g, s, wdt, wzp) in [(16, 8, 4, 2, np.int8, 0), (16, 8, 4, 1, np.int8, 3),
                                   (16, 8, 4, 1, np.uint8, 128), (8, 8, 8, 1, np.int8, 0),
                                   (12, 6, 2, 1, np.int8, 0), (24, 8, 4, 1, np.int8, 0)]:
        x = rand_q(rng, (2, C, 7, 9), np.uint8)
        w = rand_q(rng, (M, C // g, 3, 3), wdt)
        kwargs = dict(strides=(s, s), pads=(1, 1, 1, 1), group=g)
        assert_equal_exact(qc.conv_integer(x, w, np.uint8(5), wdt(wzp), **kwargs),
                           ref_conv_acc(x, w, 5, wzp, **kwargs), f"{gconv} {C} {g} {s} {wdt}")


def test_gconv_default_is_the_simd_kernel():
    info = qc.cpu_info()
    names = [v[0] for v in info["variants"]["conv_gconv"]]
    assert names[-1] == "conv_gconv_quads__scalar"
    if "avx512vnni" in SUPPORTED_ISAS:
        assert info["kernels"]["conv_gconv"] == "conv_gconv_4x64c4__avx512vnni"


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_gconv_accumulators_past_2_24(gconv, ydt):
    # x at its zero point everywhere: every output's C is its channel's bias, set around
    # +-2^24 with multipliers within ulps of ties (k + 1/2) / C, where a float32 C (the
    # one-rounding epilogue, valid only below 2^24) would round the other way
    rng = np.random.default_rng(13)
    M, g = 48, 4
    x = np.full((1, 16, 5, 6), 77, np.uint8)
    w = rand_q(rng, (M, 16 // g, 3, 3), np.int8)
    bias, ws = [], []
    for j in range(M):
        c = (2 ** 24 + int(rng.integers(-6, 7)) * 2 + 1) * (1 if j % 2 else -1)
        k = int(rng.integers(17, 100))  # multipliers >= 2^-20: the call may take that path
        s = np.float32((k + 0.5) / abs(c))
        for _ in range(int(rng.integers(-2, 3))):
            s = np.nextafter(s, np.float32(1))
        bias.append(c)
        ws.append(s)
    bias, ws = np.array(bias, np.int32), np.array(ws, np.float32)
    assert ws.min() >= 2.0 ** -20
    kwargs = dict(pads=(1, 1, 1, 1), group=g)
    for yzp in (ydt(0), ydt(-100 if ydt == np.int8 else 100)):
        ref = ref_qlinear_conv(x, 1.0, np.uint8(77), w, ws, np.int8(0), 1.0, yzp, bias, **kwargs)
        assert len(np.unique(ref)) > 20
        got = qc.qlinear_conv(x, 1.0, np.uint8(77), w, ws, np.int8(0), 1.0, yzp, bias, **kwargs)
        assert_equal_exact(got, ref, f"{gconv} yzp={yzp}")
