"""GEMM requant epilogue: the SIMD float32 shortcut equals onnx's float64 arithmetic exactly.

The accumulators are set directly: A is one int8 column a (M x 1), B one row of ones, the
bias carries the large part, so acc[i, j] = a[i] + bias[j] (wrapping), and with a_scale =
y_scale = 1 the multiplier of column j is b_scale[j] exactly. Columns are built to put
v * scale + y_zp within a few ulps of a tie k + 1/2 (both sides, and exactly on it), around
the float32 path's 2^-10 margin, at |acc| near 2^24 and the int32 limits, with tiny and huge
scales; every vector of 16 columns mixes such lanes with ordinary ones.
"""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact

YZPS = {np.int8: [-128, -1, 0, 127], np.uint8: [0, 1, 128, 255]}


def ref_requant(acc, m, y_zp, dtype, relu):
    """onnx's reference: int32 * float32 in float64, + y_zp, rint (ties to even), clamp."""
    d = acc.astype(np.float64) * m.astype(np.float64) + float(y_zp)
    info = np.iinfo(dtype)
    lo = max(info.min, int(y_zp)) if relu else info.min
    return np.clip(np.rint(d), lo, info.max).astype(dtype)


def run(a, bias, m, y_zp, dtype, relu):
    b = np.ones((1, len(bias)), np.int8)
    got = qc.qlinear_matmul(a[:, None], np.float32(1), np.int8(0), b, m, np.int8(0),
                            np.float32(1), dtype(y_zp), bias=bias, relu=relu)
    acc = (a.astype(np.int64)[:, None] + bias.astype(np.int64)[None, :]).astype(np.int32)
    return got, ref_requant(acc, m, y_zp, dtype, relu)


def near_tie_columns(rng, n):
    """(bias, scale) pairs with bias * scale + y_zp within a few ulps of k + 1/2 for row a = 0
    (and of the shifted tie for the rows a = +-1, +-2 nearby when the scale is 1/2^e)."""
    bias = np.empty(n, np.int64)
    m = np.empty(n, np.float32)
    for j in range(n):
        kind = j % 3
        if kind == 0:
            # m = 2^-e (1 + c 2^-23): odd multiples of 2^(e-1) sit c * acc * 2^-(23+e) off a
            # tie; acc from 2^8 to 2^24 puts that distance on both sides of 2^-10
            e = int(rng.integers(1, 4))
            c = int(rng.integers(-4, 5))
            acc = (int(rng.integers(2 ** 7, 2 ** 24 >> e)) | 1) << (e - 1)
            bias[j] = acc * int(rng.choice([-1, 1]))
            m[j] = np.float32(2.0 ** -e * (1 + c * 2.0 ** -23))
        else:
            # any acc, m the float32 nearest to (k + 1/2) / acc, then c ulps away
            acc = int(rng.integers(1, 2 ** int(rng.integers(2, 25)))) * int(rng.choice([-1, 1]))
            k = int(rng.integers(-300, 300))
            m0 = abs(np.float32((k + 0.5) / acc))
            c = int(rng.integers(-3, 4))
            m1 = m0
            for _ in range(abs(c)):
                m1 = np.nextafter(m1, np.float32(np.inf if c > 0 else 0))
            bias[j] = acc
            m[j] = m1 if m1 > 0 else m0
    return bias.astype(np.int32), m


def ordinary_columns(rng, n):
    mags = rng.integers(0, 32, n)
    bias = (rng.integers(0, 2 ** 31, n) >> (31 - mags)) * rng.choice([-1, 1], n)
    bias[:4] = [2 ** 31 - 1, -(2 ** 31), 2 ** 24 - 1, -(2 ** 24)]
    m = (10.0 ** rng.uniform(-12, 4, n)).astype(np.float32)
    m[4:8] = [1e-40, 1e-30, 3e38, 1.0]  # subnormal, tiny and huge multipliers
    return bias.astype(np.int32), m


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_near_ties_every_isa(isa, rng, dtype):
    a = np.concatenate([[0, 0, 1, -1, 2, -2, 0, 127, -128],
                        rng.integers(-128, 128, 20)]).astype(np.int8)
    for n_tie, n_ord in [(16, 0), (1, 15), (5, 12), (40, 23), (200, 0)]:
        bt, mt = near_tie_columns(rng, n_tie)
        bo, mo = ordinary_columns(rng, max(n_ord, 8)) if n_ord else (bt[:0], mt[:0])
        bias = np.concatenate([bt, bo])
        m = np.concatenate([mt, mo])
        perm = rng.permutation(len(bias))
        bias, m = bias[perm], m[perm]
        for y_zp in YZPS[dtype]:
            for relu in (False, True):
                got, want = run(a, bias, m, y_zp, dtype, relu)
                assert_equal_exact(got, want, f"{isa} n={len(bias)} y_zp={y_zp} relu={relu}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_margin_sweep_every_isa(isa, dtype):
    # m = 1/2 (1 + c 2^-23), acc odd: acc * m = tie + c * acc * 2^-24, so acc sweeping 2^10..2^17
    # crosses the 2^-10 margin (and the 2^-13 float error bound) from both sides
    acc = np.concatenate([np.arange(1, 2 ** 17, 2 ** 7 - 1), 2 ** np.arange(1, 24) - 1,
                          2 ** np.arange(1, 24) + 1])
    bias = np.concatenate([acc, -acc]).astype(np.int32)
    a = np.arange(-6, 7, dtype=np.int8)
    for c in (-5, -1, 0, 1, 5):
        m = np.full(len(bias), np.float32(0.5 * (1 + c * 2.0 ** -23)), np.float32)
        for y_zp in YZPS[dtype]:
            for relu in (False, True):
                got, want = run(a, bias, m, y_zp, dtype, relu)
                assert_equal_exact(got, want, f"{isa} c={c} y_zp={y_zp} relu={relu}")


def test_random_accumulators_every_isa(isa, rng):
    for dtype in (np.int8, np.uint8):
        a = rng.integers(-128, 128, 37).astype(np.int8)
        bias, m = ordinary_columns(rng, 77)
        for y_zp in YZPS[dtype]:
            got, want = run(a, bias, m, y_zp, dtype, relu=bool(rng.integers(2)))
            assert_equal_exact(got, want, f"{isa} random y_zp={y_zp}")


def fma_columns(rng, n):
    """(bias, scale) columns whose every scale is 0 or at least 2^-20, so the whole call may
    take the AVX-512 one-rounding FMA epilogue (epilogue_avx512.h): exact ties at the 2^-20
    boundary, near ties, accumulators around +-2^24 (where that path must step aside), huge
    and overflowing products."""
    bias, m = [], []
    for k in range(16):  # (2k + 1) * 2^19 * 2^-20 = k + 1/2: exact ties, |acc| < 2^24
        bias.append((2 * k + 1) << 19)
        m.append(2.0 ** -20)
    for c in (-3, -1, 1, 3):  # a few ulps of acc off ties, at scales 2^-20 and 2^-19
        for k in (0, 5, 15):
            e = 20 if c > 0 else 19
            bias.append(-((2 * k + 1) << (e - 1)))
            m.append(2.0 ** -e * (1 + c * 2.0 ** -23))
    for acc in (2 ** 24 - 1, 2 ** 24, 2 ** 24 + 1, 2 ** 24 + 3, 2 ** 24 + 5, 2 ** 25 - 1):
        k0 = -(-acc // 2 ** 20)  # the float32 nearest to (k + 1/2) / acc, k >= k0: >= 2^-20
        for k in (k0, k0 + 1, k0 + 24, k0 + 184):
            for sign in (1, -1):
                bias.append(sign * acc)
                m.append(np.float32((k + 0.5) / acc))
    bt, mt = near_tie_columns(rng, 4 * n)
    keep = mt >= 2.0 ** -20
    bias += list(bt[keep][:n])
    m += list(mt[keep][:n])
    bias += [2 ** 31 - 1, -(2 ** 31), 12345, -7, 99, 2 ** 23]
    m += [3e38, 3e38, 1e3, 1.0, 2.0 ** -20, np.float32(np.nextafter(np.float32(2.0 ** -20), 1))]
    return np.array(bias, np.int64).astype(np.int32), np.array(m, np.float32)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_fma_epilogue_every_isa(isa, rng, dtype):
    a = np.array([0, 1, -1, 2, -2, 127, -128, 64], np.int8)
    bias, m = fma_columns(rng, 60)
    assert (m >= 2.0 ** -20).sum() > 100 and (m[m > 0] >= 2.0 ** -20).all()
    for y_zp in YZPS[dtype]:
        for relu in (False, True):
            perm = rng.permutation(len(bias))
            got, want = run(a, bias[perm], m[perm], y_zp, dtype, relu)
            assert_equal_exact(got, want, f"{isa} y_zp={y_zp} relu={relu}")
    # Below 2^-20 the FMA's single rounding can differ from onnx's float64 double rounding:
    # 8384513 * 8392705 = 2^46 + 1, so with s = 8392705 * 2^-47 (about 2^-24) the product is
    # 0.5 + 2^-47, and 100 + 0.5 + 2^-47 rounds to the float64 tie 100.5 (then rint: 100)
    # where one rounding of the exact value gives 101. Such a scale must take the whole call
    # off the FMA path (here with columns that would take it: |acc| < 2^24 in every lane).
    v, sv = 8384513, np.float32(8392705 * 2.0 ** -47)
    assert sv < 2.0 ** -20 and float(sv) == 8392705 * 2.0 ** -47
    b2 = np.array([v, -v] + [(2 * k + 1) << 19 for k in range(14)], np.int32)
    m2 = np.array([sv, sv] + [2.0 ** -20] * 14, np.float32)
    a2 = np.array([0, 1, -1], np.int8)
    got, want = run(a2, b2, m2, 100, dtype, False)
    assert want[0, 0] == 100 and want[0, 1] == 100  # a = 0: the double-rounded ties
    assert_equal_exact(got, want, f"{isa} below 2^-20")


@pytest.mark.parametrize("k", [514, 515])
def test_dot_bound_every_isa(isa, rng, k):
    """Columns of -128 and 127 put 255 * max_j sum_k |b_kj| (the bound under which the AVX-512
    epilogue skips its per-vector |C| < 2^24 test) just below 2^24 at K = 514 (255 * 128 * 514
    = 2^24 - 256, with a bias below 256) and past it at K = 515, where C itself crosses 2^24.
    A rows of 255 with a few bytes lowered give odd and even C next to the bound; the scales
    sit ulps from a tie, so a C that float32 rounds (|C| > 2^24) would show in the bytes."""
    n = 48
    b = np.where(rng.random((k, n)) < 0.5, -128, 127).astype(np.int8)
    b[:, : n // 2] = -128  # half the columns at the largest |sum|
    b[: rng.integers(0, 4), n // 2:] = 5
    a = np.full((12, k), 255, np.uint8)
    for i in range(1, 12):
        a[i, rng.choice(k, size=i, replace=False)] = rng.integers(0, 255, i)
    bias = rng.integers(0, 256, n).astype(np.int32)
    acc = a.astype(np.int64) @ b.astype(np.int64) + bias
    assert np.abs(acc).max() < 2 ** 24 if k == 514 else np.abs(acc).max() > 2 ** 24
    kk = rng.integers(20, 200, n)
    m = np.abs(((kk + 0.5) / acc[0]).astype(np.float32))
    m = np.array([np.nextafter(v, np.float32(np.inf if j % 2 else 0)) for j, v in enumerate(m)],
                 np.float32)
    assert (m >= 2.0 ** -20).all()  # the whole call may take the one-rounding FMA path
    for dtype in (np.uint8, np.int8):
        for y_zp in YZPS[dtype]:
            got = qc.qlinear_matmul(a, np.float32(1), np.uint8(0), b, m, np.int8(0),
                                    np.float32(1), dtype(y_zp), bias=bias)
            want = ref_requant(acc.astype(np.int32), m, y_zp, dtype, False)
            assert_equal_exact(got, want, f"{isa} k={k} y_zp={y_zp}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("k", [40, 1100])
def test_tile_rows_every_isa(isa, rng, dtype, k):
    """Tiles on the one-rounding path (every scale >= 2^-20, |C| < 2^24: proven from the
    weights at K = 40, tested per tile at K = 1100), which the AVX-512 VNNI kernel narrows
    several rows at a time (two of 32 columns, four of 16): every row count of a tile (1 to 8,
    and 8 + 1 .. 8 + 8), 16 to 72 columns (full and partial tiles of both widths), outputs
    spread over the whole type and past both ends (saturation), with and without ReLU, every
    zero point."""
    info, ends = np.iinfo(dtype), set()
    for n in (16, 40, 56, 64, 72):
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        bias = rng.integers(-3000, 3000, n).astype(np.int32)
        m = (rng.uniform(2.0 ** -9, 2.0 ** -6, n) * 40 / k).astype(np.float32)
        assert (m >= 2.0 ** -20).all()
        for rows in list(range(1, 9)) + [9, 12, 15, 16]:
            a = rng.integers(0, 256, (rows, k)).astype(np.uint8)
            acc = (a.astype(np.int64) @ b.astype(np.int64) + bias).astype(np.int32)
            assert np.abs(acc).max() < 2 ** 24
            for y_zp in YZPS[dtype]:
                relu = bool(rng.integers(2))
                got = qc.qlinear_matmul(a, np.float32(1), np.uint8(0), b, m, np.int8(0),
                                        np.float32(1), dtype(y_zp), bias=bias, relu=relu)
                want = ref_requant(acc, m, y_zp, dtype, relu)
                assert_equal_exact(got, want, f"{isa} n={n} rows={rows} y_zp={y_zp} relu={relu}")
                ends |= {int(v) for v in np.unique(want) if v in (info.min, info.max)}
    assert ends == {info.min, info.max}  # outputs reach (and saturate at) both ends
