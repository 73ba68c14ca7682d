"""The depthwise 3x3 kernel on byte quads (csrc/conv/dw.h, qc_dw3; AVX-512 VNNI, the other
levels run the pair kernels): exact against the NumPy reference at every ISA level, for the
edges of its layout: widths around its 64-output steps and its 16/32/64-byte row copies,
odd sizes at stride 2, asymmetric and wide padding, bands of forced rows, channel runs over
threads 1 and 3, zero points at the extremes, weights that do not fit int8 (the pair kernels
then), the float64 epilogue (large biases, multipliers past 64) and relu."""
import contextlib

import numpy as np
import pytest

import quantc as qc
from quantc import _C

from conftest import assert_equal_exact, num_threads
from test_conv import ref_qlinear_conv


@contextlib.contextmanager
def band_rows(n):
    prev = _C._set_dw_tile_rows(n)
    try:
        yield
    finally:
        _C._set_dw_tile_rows(prev)


def _run_both(x, xzp, w, wzp, ws, yzp, bias, relu, s, pads, label, threads=(1, 3), mult=None):
    C = x.shape[1]
    xs, ys = (np.float32(1.0), np.float32(1.0)) if mult is not None else (np.float32(0.02),
                                                                           np.float32(0.5))
    ws = mult if mult is not None else ws
    kw = dict(strides=(s, s), pads=pads, group=C)
    want = ref_qlinear_conv(x, xs, xzp, w, ws, wzp, ys, yzp, bias, relu=relu, **kw)
    packed = qc.pack_conv_weight(w, wzp, group=C)
    for t in threads:
        with num_threads(t):
            got = qc.qlinear_conv(x, xs, xzp, packed, ws, None, ys, yzp, bias, relu=relu, **kw)
        assert_equal_exact(got, want, f"{label} threads={t}")
    return want


# (H, W) around the steps of 64 flat outputs and the row copies of 16, 32, 64 bytes
SIZES = [(1, 1), (1, 2), (2, 3), (3, 7), (7, 7), (5, 14), (4, 15), (3, 16), (2, 17), (3, 31),
         (2, 32), (2, 33), (2, 62), (2, 63), (1, 64), (3, 65), (2, 66), (2, 127), (1, 130),
         (9, 14), (14, 14), (15, 28), (29, 30)]


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_sizes(isa, hw, s):
    H, W = hw
    rng = np.random.default_rng(H * 1000 + W * 10 + s)
    C = 5
    x = rng.integers(0, 256, (2, C, H, W), dtype=np.uint8)
    w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
    bias = rng.integers(-3000, 3000, C).astype(np.int32)
    _run_both(x, np.uint8(131), w, np.zeros(C, np.int8), ws, np.uint8(120), bias, False, s,
              (1, 1, 1, 1), f"{isa} {H}x{W} s{s}")


PADS = [(0, 0, 0, 0), (0, 0, 1, 1), (1, 0, 0, 1), (2, 1, 0, 2), (3, 3, 3, 3), (1, 2, 2, 0)]


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("pads", PADS, ids=lambda p: "p" + "".join(map(str, p)))
def test_pads_and_bands(isa, pads, s):
    rng = np.random.default_rng(sum(pads) * 7 + s)
    C, H, W = 3, 13, 11
    x = rng.integers(-128, 128, (1, C, H, W), dtype=np.int8)
    w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
    bias = rng.integers(-3000, 3000, C).astype(np.int32)
    args = (x, np.int8(-7), w, np.zeros(C, np.int8), ws, np.int8(4), bias)
    want = _run_both(*args, True, s, pads, f"{isa} pads={pads} s{s}")
    for rows in (1, 2, 3, 5):
        with band_rows(rows):
            got = _run_both(*args, True, s, pads, f"{isa} pads={pads} s{s} bands={rows}",
                            threads=(1,))
        assert_equal_exact(got, want, f"{isa} pads={pads} s{s} bands={rows}")


@pytest.mark.parametrize("xdt,wdt,ydt", [(np.uint8, np.int8, np.uint8),
                                         (np.int8, np.int8, np.int8),
                                         (np.uint8, np.uint8, np.int8),
                                         (np.int8, np.uint8, np.uint8)])
def test_zero_points_at_extremes(isa, xdt, wdt, ydt):
    # x_zp and y_zp at both ends of their type; uint8 weights with w_zp 127 and 128 (every
    # w - w_zp fits int8: the quads) and 0 (it does not: the pair kernels)
    rng = np.random.default_rng(3)
    C, H, W = 19, 9, 18
    xi, wi, yi = np.iinfo(xdt), np.iinfo(wdt), np.iinfo(ydt)
    x = rng.integers(xi.min, xi.max + 1, (1, C, H, W)).astype(xdt)
    x[0, 0] = xi.min
    x[0, 1] = xi.max
    w = rng.integers(wi.min, wi.max + 1, (C, 1, 3, 3)).astype(wdt)
    w[0] = wi.min
    w[1] = wi.max
    ws = rng.uniform(0.0005, 0.004, C).astype(np.float32)
    wzps = [0] if wdt == np.int8 else [127, 128, 0]
    for xzp in (xi.min, xi.max):
        for yzp in (yi.min, yi.max):
            for wzp in wzps:
                for s in (1, 2):
                    _run_both(x, xdt(xzp), w, np.full(C, wzp, wdt), ws, ydt(yzp), None,
                              yzp == yi.max, s, (1, 1, 1, 1),
                              f"{isa} xzp={xzp} yzp={yzp} wzp={wzp} s{s}")


def test_float64_epilogue_and_ties(isa):
    # biases near the int32 limits and multipliers past 64 (the non-lean path), ties at 0.5
    rng = np.random.default_rng(5)
    C, H, W = 18, 12, 70
    x = rng.integers(0, 256, (1, C, H, W), dtype=np.uint8)
    w = rng.integers(-3, 4, (C, 1, 3, 3)).astype(np.int8)
    bias = rng.integers(-2**31, 2**31, C, dtype=np.int64).astype(np.int32)
    bias[:4] = (2**31 - 1, -2**31, 2**24, -2**24)
    for s in (1, 2):
        for mult in (np.float32(0.5), np.float32(100.0), np.float32(1e-7)):
            for b in (None, bias):
                _run_both(x, np.uint8(255), w, np.zeros(C, np.int8), None, np.uint8(3), b,
                          False, s, (1, 1, 1, 1), f"{isa} mult={mult} s{s} bias={b is not None}",
                          mult=np.full(C, mult, np.float32))


def test_batch_and_many_channels(isa):
    # MobileNetV2-like planes: runs of channels over the tasks, images in a batch
    rng = np.random.default_rng(9)
    for C, H, s in ((40, 28, 1), (24, 28, 2), (70, 7, 1), (33, 14, 2), (8, 56, 1)):
        x = rng.integers(0, 256, (3, C, H, H), dtype=np.uint8)
        w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
        ws = rng.uniform(0.001, 0.01, C).astype(np.float32)
        bias = rng.integers(-1000, 1000, C).astype(np.int32)
        _run_both(x, np.uint8(128), w, np.zeros(C, np.int8), ws, np.uint8(128), bias, True, s,
                  (1, 1, 1, 1), f"{isa} C={C} H={H} s{s}")


@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_exact_epilogue_ties(isa, ydt):
    # accumulators equal to the bias (x = x_zp everywhere) at and next to (k + 1/2) / s, for
    # multipliers at and around the exact epilogue's limits (2^-22, 64, the accumulator
    # bound): ties to even, near ties either side
    mults, biases = [], []
    for s in (2.0 ** -22, np.nextafter(np.float32(2.0 ** -22), np.float32(0)), 1.5 * 2.0 ** -22,
              2.0 ** -21, 1 / 3, 0.5, 0.25 + 2.0 ** -21, 7.0, 63.0, 64.0):
        s = np.float32(s)
        for k in (-130, -1, 0, 1, 2, 126, 127, 254, 255):
            for d in (-1, 0, 1):
                b = int(round((k + 0.5) / s)) + d
                if abs(b) < 2 ** 31:
                    mults.append(s)
                    biases.append(b)
    C = len(biases)
    mult = np.array(mults, np.float32)
    bias = np.array(biases, np.int64).astype(np.int32)
    rng = np.random.default_rng(6)
    w = rng.integers(-128, 128, (C, 1, 3, 3)).astype(np.int8)
    info = np.iinfo(ydt)
    for s in (1, 2):
        for xzp in (0, 77, 255):
            x = np.full((1, C, 6, 9), xzp, np.uint8)
            for yzp in (0, 3, info.min, info.max):
                _run_both(x, np.uint8(xzp), w, np.zeros(C, np.int8), None, ydt(yzp), bias,
                          yzp == 3, s, (0, 0, 0, 0), f"{isa} ties s{s} xzp={xzp} yzp={yzp}",
                          threads=(1,), mult=mult)
        # and real sums on top of biases near the bound of the exact epilogue
        x = rng.integers(0, 256, (1, C, 6, 9), dtype=np.uint8)
        _run_both(x, np.uint8(128), w, np.zeros(C, np.int8), None, ydt(3), bias, False, s,
                  (1, 1, 1, 1), f"{isa} near ties s{s}", threads=(1, 3), mult=mult)


@pytest.mark.parametrize("W", [4096, 4097, 9001])
def test_wide_rows(isa, W):
    # up to 4096 output columns the byte quads, wider the pair kernels' column tiles
    rng = np.random.default_rng(W)
    C = 2
    x = rng.integers(0, 256, (1, C, 4, W), dtype=np.uint8)
    w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
    for s in (1, 2):
        _run_both(x, np.uint8(9), w, np.zeros(C, np.int8), ws, np.uint8(100), None, False, s,
                  (1, 1, 1, 1), f"{isa} W={W} s{s}")


def test_exact_epilogue_limit(isa):
    # Below the exact epilogue's multiplier limit 2^-22 float64's sum can round: s = m * 2^-46
    # and acc with acc * m = 2^45 - 1 give v = acc * s + y_zp = y_zp + 1/2 - 2^-46, which
    # float64 (step 2^-45 in [128, 256)) rounds to y_zp + 1/2, a tie: odd y_zp goes up where
    # the exact v goes down. The kernels must follow float64 there.
    m, acc = 9995671, 3519961
    assert m * acc == 2 ** 45 - 1
    C = 3
    mult = np.full(C, np.float32(m * 2.0 ** -46), np.float32)
    assert float(mult[0]) == m * 2.0 ** -46
    bias = np.full(C, acc, np.int32)
    w = np.random.default_rng(1).integers(-128, 128, (C, 1, 3, 3)).astype(np.int8)
    x = np.full((1, C, 5, 70), 128, np.uint8)
    for s in (1, 2):
        want = _run_both(x, np.uint8(128), w, np.zeros(C, np.int8), None, np.uint8(201), bias,
                         False, s, (1, 1, 1, 1), f"{isa} limit s{s}", threads=(1,), mult=mult)
        assert (want == 202).all()


# ---- in place (stride 1, padding 1, planes of up to 576 pixels: dw.h, qc_dw3f) ----

@pytest.mark.parametrize("hw", [(1, 1), (1, 63), (1, 64), (1, 65), (8, 8), (7, 9), (5, 13),
                                (13, 5), (9, 1), (24, 24), (8, 72), (1, 576), (1, 577),
                                (17, 34)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("xdt,ydt,relu", [(np.uint8, np.uint8, False), (np.int8, np.int8, True),
                                          (np.int8, np.uint8, False)])
def test_in_place_planes(isa, hw, xdt, ydt, relu):
    # whole planes read and written where they lie, the padding by masks: widths and heights of
    # 1, steps of 64 outputs, the last partial step, up to the 576-pixel limit and past it
    # (the padded copies then); neighbouring channels and images hold other values, which the
    # masks keep out
    H, W = hw
    rng = np.random.default_rng(H * 7919 + W)
    C = 6
    info = np.iinfo(xdt)
    x = rng.integers(info.min, info.max + 1, (2, C, H, W)).astype(xdt)
    w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
    bias = rng.integers(-3000, 3000, C).astype(np.int32)
    xzp = xdt(info.min + 3)
    yzp = ydt(np.iinfo(ydt).min + 100)
    _run_both(x, xzp, w, np.zeros(C, np.int8), ws, yzp, bias, relu, 1, (1, 1, 1, 1),
              f"{isa} {H}x{W} {np.dtype(xdt).name}")


def _guarded(nbytes, at_end):
    """A uint8 buffer of nbytes right after an inaccessible page (at_end False) or right
    before one (at_end True): a read or write past it faults."""
    import ctypes
    import mmap
    page = mmap.PAGESIZE
    span = (nbytes + page - 1) // page * page
    mm = mmap.mmap(-1, span + 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for addr in (base, base + page + span):
        assert libc.mprotect(addr, page, 0) == 0  # PROT_NONE
    off = page + (span - nbytes if at_end else 0)
    return np.frombuffer(mm, np.uint8, nbytes, off), mm


@pytest.mark.parametrize("at_end", [False, True])
def test_in_place_reads_no_further(isa, at_end):
    # x and y against inaccessible pages: the loads that start before the first plane or end
    # past the last are masked there (a byte read or written beyond would fault)
    N, C, H, W = 1, 3, 5, 7
    rng = np.random.default_rng(11)
    xb, xm = _guarded(N * C * H * W, at_end)
    x = xb.reshape(N, C, H, W)
    x[...] = rng.integers(0, 256, x.shape)
    w = rng.integers(-128, 128, (C, 1, 3, 3), dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, C).astype(np.float32)
    kw = dict(strides=(1, 1), pads=(1, 1, 1, 1), group=C)
    want = ref_qlinear_conv(x, np.float32(0.02), np.uint8(9), w, ws, np.zeros(C, np.int8),
                            np.float32(0.5), np.uint8(7), None, relu=False, **kw)
    yb, ym = _guarded(want.size, at_end)
    y = yb.reshape(want.shape)
    packed = qc.pack_conv_weight(w, np.zeros(C, np.int8), group=C)
    got = qc.qlinear_conv(x, np.float32(0.02), np.uint8(9), packed, ws, None, np.float32(0.5),
                          np.uint8(7), None, out=y, **kw)
    assert got is y or np.shares_memory(got, y)
    assert_equal_exact(y, want, f"{isa} at_end={at_end}")
    del x, y, got, xb, yb
