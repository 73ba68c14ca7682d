"""Pooling, qlinear_add, qlinear_concat: exact vs NumPy references of the documented formulas."""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact, num_threads


def rand_q(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def requant_f32(v, yzp, dtype, relu=False):
    """clamp(rne(v) + yzp) with v float32: the rounding every float32 op here ends with."""
    info = np.iinfo(dtype)
    lo = max(info.min, int(yzp)) if relu else info.min
    r = np.rint(v.astype(np.float32)).astype(np.int64) + int(yzp)
    return np.clip(r, lo, info.max).astype(dtype)


# ---- references ----

def ref_pool_windows(q, kernel, strides, pads):
    """Yield (oy, ox, window, real-cell count) with padded cells masked out."""
    N, C, H, W = q.shape
    kh, kw = kernel
    sh, sw = strides
    pt, pl, pb, pr = pads
    OH = (H + pt + pb - kh) // sh + 1
    OW = (W + pl + pr - kw) // sw + 1
    for oy in range(OH):
        y0, y1 = max(oy * sh - pt, 0), min(oy * sh - pt + kh, H)
        for ox in range(OW):
            x0, x1 = max(ox * sw - pl, 0), min(ox * sw - pl + kw, W)
            yield oy, ox, q[:, :, y0:y1, x0:x1], (y1 - y0) * (x1 - x0), (OH, OW)


def ref_max_pool(q, kernel, strides, pads):
    out = None
    for oy, ox, win, _, (OH, OW) in ref_pool_windows(q, kernel, strides, pads):
        if out is None:
            out = np.empty(q.shape[:2] + (OH, OW), q.dtype)
        out[:, :, oy, ox] = win.max(axis=(2, 3))
    return out


def ref_avg_pool(q, xs, xzp, ys, yzp, kernel, strides, pads, count_include_pad):
    m = np.float32(xs) / np.float32(ys)
    out = None
    for oy, ox, win, real, (OH, OW) in ref_pool_windows(q, kernel, strides, pads):
        if out is None:
            out = np.empty(q.shape[:2] + (OH, OW), q.dtype)
        acc = (win.astype(np.int32) - int(xzp)).sum(axis=(2, 3))
        cnt = kernel[0] * kernel[1] if count_include_pad else real
        mc = np.float32(m / np.float32(cnt))
        out[:, :, oy, ox] = requant_f32(acc.astype(np.float32) * mc, yzp, q.dtype)
    return out


def ref_add(a, as_, azp, b, bs, bzp, ys, yzp, ydt, relu=False):
    ma = np.float32(as_) / np.float32(ys)
    mb = np.float32(bs) / np.float32(ys)
    va = (a.astype(np.int32) - int(azp)).astype(np.float32) * ma
    vb = (b.astype(np.int32) - int(bzp)).astype(np.float32) * mb
    return requant_f32(va + vb, yzp, ydt, relu)


def ref_concat(inputs, ys, yzp, ydt, axis):
    parts = []
    for q, s, zp in inputs:
        m = np.float32(s) / np.float32(ys)
        parts.append(requant_f32((q.astype(np.int32) - int(zp)).astype(np.float32) * m, yzp, ydt))
    return np.concatenate(parts, axis=axis)


# ---- pooling ----

POOL_CASES = [
    # (N, C, H, W, kernel, strides, pads)
    (1, 3, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0)),
    (2, 5, 9, 11, (3, 3), (2, 2), (1, 1, 1, 1)),
    (1, 4, 7, 13, (3, 3), (1, 1), (1, 2, 0, 1)),
    (2, 3, 6, 5, (2, 3), (1, 2), (1, 0, 1, 2)),
    (1, 2, 13, 70, (3, 5), (3, 3), (2, 4, 0, 1)),
    (1, 2, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (3, 1, 5, 67, (5, 7), (2, 4), (4, 6, 4, 6)),
    (1, 3, 4, 4, (4, 4), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_max_pool_exact(isa, case, dt):
    N, C, H, W, k, s, p = case
    rng = np.random.default_rng(1)
    q = rand_q(rng, (N, C, H, W), dt)
    want = ref_max_pool(q, k, s, p)
    for t in (1, 2):
        with num_threads(t):
            assert_equal_exact(qc.max_pool2d(q, k, strides=s, pads=p), want, f"{isa} {case}")
    # extremes: windows of only the type's minimum
    q2 = np.full_like(q, np.iinfo(dt).min)
    assert_equal_exact(qc.max_pool2d(q2, k, strides=s, pads=p), ref_max_pool(q2, k, s, p), isa)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("cip", [False, True])
def test_avg_pool_exact(isa, case, dt, cip):
    N, C, H, W, k, s, p = case
    rng = np.random.default_rng(2)
    q = rand_q(rng, (N, C, H, W), dt)
    info = np.iinfo(dt)
    for xzp, yzp, xs, ys in ((info.min, info.max, 0.1, 0.1), (3, -3 if dt == np.int8 else 7,
                                                              0.05, 0.07),
                             (info.max, info.min, 0.5, 0.25)):
        want = ref_avg_pool(q, xs, xzp, ys, yzp, k, s, p, cip)
        for t in (1, 2):
            with num_threads(t):
                got = qc.avg_pool2d(q, xs, xzp, ys, yzp, k, strides=s, pads=p,
                                    count_include_pad=cip)
            assert_equal_exact(got, want, f"{isa} {case} zp={xzp},{yzp} threads={t}")


def test_avg_pool_ties(isa):
    # a 2x2 window with x_scale == y_scale: acc / 4 has .5 ties that go to even
    q = np.array([[[[1, 0], [0, 0]], [[1, 1], [1, 0]], [[2, 1], [1, 2]], [[3, 3], [3, 1]]]],
                 np.uint8)
    got = qc.avg_pool2d(q, 1.0, 0, 1.0, 0, (2, 2))
    # sums 1, 3, 6, 10 over 4 cells: 0.25, 0.75, 1.5, 2.5 -> 0, 1, 2, 2
    assert_equal_exact(got, np.array([0, 1, 2, 2], np.uint8).reshape(1, 4, 1, 1), isa)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 7), (1, 5, 1, 33), (2, 2, 64, 65)])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_global_avg_pool_exact(isa, shape, dt):
    rng = np.random.default_rng(3)
    q = rand_q(rng, shape, dt)
    H, W = shape[2:]
    want = ref_avg_pool(q, 0.02, 5, 0.03, -2 if dt == np.int8 else 9, (H, W), (1, 1),
                        (0, 0, 0, 0), False)
    got = qc.global_avg_pool(q, 0.02, 5, 0.03, -2 if dt == np.int8 else 9)
    assert_equal_exact(got, want, f"{isa} {shape}")


@pytest.mark.parametrize("hw", [(3, 3), (1, 31), (1, 32), (1, 63), (1, 64), (1, 65), (5, 51),
                                (16, 16), (1, 257), (11, 29), (3, 107), (40, 41)])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_global_avg_pool_plane_sums(isa, hw, dt):
    # global_avg_pool sums each plane flat (plane_sums: 64-byte steps and a masked tail, or
    # 32-byte steps and a byte loop) and avg_pool2d's whole-plane windows in 256-byte steps,
    # then 64-byte masked ones: plane sizes around all of them, random and extreme values,
    # zero points at both ends
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    info = np.iinfo(dt)
    q = rand_q(rng, (2, 3) + hw, dt)
    q[0, 1] = info.max
    q[1, 2] = info.min
    for xzp, yzp in ((info.min, info.max), (info.max, info.min), (3, 0)):
        want = ref_avg_pool(q, 0.02, xzp, 0.03, dt(yzp), hw, (1, 1), (0, 0, 0, 0), False)
        got = qc.global_avg_pool(q, 0.02, dt(xzp), 0.03, dt(yzp))
        assert_equal_exact(got, want, f"{isa} {hw} xzp={xzp}")
        # the same window through avg_pool2d, also with padding (not a whole-plane window)
        assert_equal_exact(qc.avg_pool2d(q, 0.02, dt(xzp), 0.03, dt(yzp), hw), want, isa)
    k = (hw[0] + 1, hw[1] + 1)
    want = ref_avg_pool(q, 0.02, 3, 0.03, dt(0), k, (1, 1), (1, 1, 0, 0), True)
    assert_equal_exact(qc.avg_pool2d(q, 0.02, dt(3), 0.03, dt(0), k, pads=(1, 1, 0, 0),
                                     count_include_pad=True), want, isa)


def test_pool_large_plane_threads(isa):
    rng = np.random.default_rng(4)
    for dt in (np.uint8, np.int8):
        q = rand_q(rng, (2, 3, 57, 133), dt)
        for s, k, p in ((1, (3, 3), (1, 1, 1, 1)), (2, (3, 3), (1, 1, 1, 1)),
                        (2, (2, 4), (0, 1, 1, 2)), (1, (5, 2), (2, 0, 1, 1))):
            for t in (1, 2):
                with num_threads(t):
                    assert_equal_exact(qc.max_pool2d(q, k, strides=s, pads=p),
                                       ref_max_pool(q, k, (s, s), p), f"{isa} {s} {k} {p}")
                    for cip in (False, True):
                        assert_equal_exact(
                            qc.avg_pool2d(q, 0.1, 3, 0.07, -5 if dt == np.int8 else 120, k,
                                          strides=s, pads=p, count_include_pad=cip),
                            ref_avg_pool(q, 0.1, 3, 0.07, -5 if dt == np.int8 else 120, k,
                                         (s, s), p, cip), f"{isa} {s} {k} {p} {cip}")


@pytest.mark.parametrize("shape,k,s,p", [
    ((1, 2, 300, 40), (3, 3), 1, (1, 1, 1, 1)),    # several row bands, a partial last one
    ((1, 2, 301, 40), (3, 3), 2, (1, 1, 1, 1)),
    ((1, 2, 250, 70), (2, 2), 2, (0, 0, 0, 0)),
    ((1, 1, 5, 9000), (3, 3), 2, (1, 1, 1, 1)),    # rows wider than a band: one row each
    ((1, 1, 40, 70), (16, 16), 2, (3, 2, 1, 4)),   # a large window, padded on every side
    ((1, 1, 9, 131), (1, 5), 2, (0, 2, 0, 3)),
])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_pool_row_bands(isa, shape, k, s, p, dt):
    # pooling works in bands of output rows sized to the row width; extremes fill the windows
    rng = np.random.default_rng(sum(shape) + k[0])
    info = np.iinfo(dt)
    q = rand_q(rng, shape, dt)
    q[..., :7, :] = info.max
    q[..., -5:, :] = info.min
    q[..., :, :11] = info.max
    yzp = dt(-5 if dt == np.int8 else 120)
    assert_equal_exact(qc.max_pool2d(q, k, strides=s, pads=p), ref_max_pool(q, k, (s, s), p),
                       f"{isa} {shape} {k} {s} {p}")
    for xzp in (info.min, info.max):
        for cip in (False, True):
            assert_equal_exact(
                qc.avg_pool2d(q, 0.1, dt(xzp), 0.07, yzp, k, strides=s, pads=p,
                              count_include_pad=cip),
                ref_avg_pool(q, 0.1, dt(xzp), 0.07, yzp, k, (s, s), p, cip),
                f"{isa} {shape} {k} {s} {p} xzp={xzp} cip={cip}")


def test_pool_strides_default_to_kernel_and_noncontiguous(isa):
    rng = np.random.default_rng(5)
    base = rand_q(rng, (2, 6, 10, 20), np.int8)
    q = base[:, ::-2, :, ::2]
    before = q.copy()
    assert_equal_exact(qc.max_pool2d(q, 2), ref_max_pool(np.ascontiguousarray(q), (2, 2), (2, 2),
                                                         (0, 0, 0, 0)), isa)
    assert_equal_exact(q, before, "input unchanged")


def test_pool_bad_input():
    q = np.zeros((1, 2, 5, 5), np.uint8)
    with pytest.raises(ValueError, match=r"q: expected a 4-D"):
        qc.max_pool2d(q[0], 2)
    with pytest.raises(ValueError, match=r"pads: expected each pad smaller than the kernel"):
        qc.max_pool2d(q, 2, pads=(2, 0, 0, 0))
    with pytest.raises(ValueError, match=r"pads: expected values in \[0"):
        qc.max_pool2d(q, 2, pads=(-1, 0, 0, 0))
    with pytest.raises(ValueError, match=r"kernel: expected a kernel that fits"):
        qc.max_pool2d(q, (6, 2))
    with pytest.raises(ValueError, match=r"kernel: expected values in \[1"):
        qc.max_pool2d(q, 0)
    with pytest.raises(ValueError, match=r"kernel: expected at most 2\^23 cells"):
        qc.max_pool2d(q, (1 << 20, 1 << 20), pads=(1 << 19,) * 4)
    with pytest.raises(TypeError, match=r"q: expected an array of int8 or uint8"):
        qc.max_pool2d(q.astype(np.int16), 2)
    with pytest.raises(ValueError, match=r"x_scale: expected a positive finite value"):
        qc.avg_pool2d(q, -1.0, 0, 1.0, 0, 2)
    with pytest.raises(ValueError, match=r"y_zero_point: expected values in \[0, 255\]"):
        qc.avg_pool2d(q, 1.0, 0, 1.0, -1, 2)
    with pytest.raises(ValueError, match=r"out: expected shape"):
        qc.max_pool2d(q, 2, out=np.zeros((1, 2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"q: expected H, W >= 1"):
        qc.global_avg_pool(np.zeros((1, 2, 0, 3), np.uint8), 1.0, 0, 1.0, 0)


def test_pool_zero_size():
    q = np.zeros((0, 3, 4, 4), np.int8)
    assert qc.max_pool2d(q, 2).shape == (0, 3, 2, 2)
    assert qc.avg_pool2d(q, 1.0, 0, 1.0, 0, 2).shape == (0, 3, 2, 2)
    # an empty plane: an empty output even where the kernel does not fit (ONNX's formula)
    for hw, want in (((0, 4), (0, 2)), ((4, 0), (2, 0)), ((0, 0), (0, 0)), ((1, 0), (0, 0)),
                     ((0, 1), (0, 0))):
        q = np.zeros((2, 3) + hw, np.int8)
        assert qc.max_pool2d(q, 2).shape == (2, 3) + want
        assert qc.avg_pool2d(q, 1.0, 0, 1.0, 0, 2).shape == (2, 3) + want
    with pytest.raises(ValueError, match="kernel that fits the padded input"):
        qc.max_pool2d(np.zeros((1, 1, 1, 4), np.int8), 2)


# ---- add ----

@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 63, 64, 65, 1000, 70001])
@pytest.mark.parametrize("adt,bdt,ydt", [(np.int8, np.int8, np.int8),
                                         (np.uint8, np.uint8, np.uint8),
                                         (np.uint8, np.int8, np.int8)])
def test_qlinear_add_exact(isa, n, adt, bdt, ydt):
    rng = np.random.default_rng(n)
    a = rand_q(rng, (n,), adt)
    b = rand_q(rng, (n,), bdt)
    azp, bzp = rand_q(rng, (), adt), rand_q(rng, (), bdt)
    yzp = ydt(np.iinfo(ydt).min + 100)
    for relu in (False, True):
        want = ref_add(a, 0.03, azp, b, 0.05, bzp, 0.06, yzp, ydt, relu)
        for t in (1, 2):
            with num_threads(t):
                got = qc.qlinear_add(a, 0.03, azp, b, 0.05, bzp, 0.06, yzp, relu=relu)
            assert_equal_exact(got, want, f"{isa} n={n} relu={relu} t={t}")


def test_qlinear_add_ties_broadcast_and_shapes(isa):
    # scales 0.5/1.0: sums of halves land on .5 ties, which go to even
    a = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    b = np.arange(16, dtype=np.int8).reshape(1, 16)
    want = ref_add(a, 0.5, 0, np.broadcast_to(b, a.shape), 0.5, 0, 1.0, np.int8(0), np.int8)
    assert_equal_exact(qc.qlinear_add(a, 0.5, 0, b, 0.5, 0, 1.0, np.int8(0)), want, isa)
    z = np.int8(5)
    assert qc.qlinear_add(z, 0.1, 0, z, 0.1, 0, 0.1, np.int8(0)).shape == ()
    with pytest.raises(ValueError, match=r"b: expected a shape broadcastable"):
        qc.qlinear_add(a, 0.5, 0, np.zeros(3, np.int8), 0.5, 0, 1.0, 0)
    with pytest.raises(ValueError, match=r"b_scale: expected a positive finite value"):
        qc.qlinear_add(a, 0.5, 0, a, np.inf, 0, 1.0, 0)
    with pytest.raises(TypeError, match=r"a_zero_point: expected int8"):
        qc.qlinear_add(a, 0.5, np.uint8(0), a, 0.5, 0, 1.0, 0)


def test_qlinear_add_noncontiguous(isa):
    rng = np.random.default_rng(9)
    a = rand_q(rng, (40, 30), np.uint8)[::-3, ::2]
    b = rand_q(rng, (42, 30), np.uint8)[1::3, 1::2][::-1]
    want = ref_add(a, 0.1, 128, b, 0.2, 120, 0.25, np.uint8(128), np.uint8)
    assert_equal_exact(qc.qlinear_add(a, 0.1, 128, b, 0.2, 120, 0.25, np.uint8(128)), want, isa)


@pytest.mark.parametrize("adt,bdt,ydt", [(np.int8, np.int8, np.int8),
                                         (np.int8, np.uint8, np.uint8),
                                         (np.uint8, np.int8, np.int8),
                                         (np.uint8, np.uint8, np.uint8)])
def test_qlinear_add_large_streamed_output(isa, adt, bdt, ydt):
    # >= 8 MiB outputs are written with non-temporal stores from the output's first 64-byte
    # boundary: an `out` view starting 3 bytes into its buffer puts a masked head and tail
    # around every 65536-byte task
    n = (8 << 20) + 77
    rng = np.random.default_rng(14)
    a, b = rand_q(rng, (n,), adt), rand_q(rng, (n,), bdt)
    want = ref_add(a, 0.03, 5, b, 0.05, -7 if bdt == np.int8 else 200, 0.045, ydt(3), ydt)
    buf = np.empty(n + 3, ydt)
    for t in (1, 2):
        with num_threads(t):
            got = qc.qlinear_add(a, 0.03, 5, b, 0.05, -7 if bdt == np.int8 else 200, 0.045,
                                 ydt(3), out=buf[3:])
        assert_equal_exact(got, want, f"{isa} t={t}")


@pytest.mark.parametrize("adt,bdt,ydt", [(np.int8, np.int8, np.int8),
                                         (np.uint8, np.uint8, np.uint8),
                                         (np.int8, np.uint8, np.uint8)])
def test_qlinear_add_large_ratios_and_extreme_zero_points(isa, adt, bdt, ydt):
    # results far outside the output range saturate, whether v is clamped before rounding or
    # (multipliers up to 2^22) the narrowing saturates; zero points at both ends of the range
    n = 1000
    rng = np.random.default_rng(16)
    a, b = rand_q(rng, (n,), adt), rand_q(rng, (n,), bdt)
    ia, ib, iy = np.iinfo(adt), np.iinfo(bdt), np.iinfo(ydt)
    a[:64], b[:64] = ia.max, ib.max
    a[64:128], b[64:128] = ia.min, ib.min
    for as_, bs, ys in ((4194304.0, 4194304.0, 1.0), (4194305.0, 0.5, 1.0), (1e12, 1e12, 1.0),
                        (3e3, 2e3, 0.5), (1.0, 1.0, 3e-4), (0.02, 0.03, 0.01)):
        for azp, bzp, yzp in ((ia.min, ib.max, iy.max), (ia.max, ib.min, iy.min), (0, 0, 0)):
            for relu in (False, True):
                want = ref_add(a, as_, adt(azp), b, bs, bdt(bzp), ys, ydt(yzp), ydt, relu)
                got = qc.qlinear_add(a, as_, adt(azp), b, bs, bdt(bzp), ys, ydt(yzp), relu=relu)
                assert_equal_exact(got, want, f"{isa} {as_},{bs}/{ys} zp={azp},{bzp},{yzp} "
                                              f"relu={relu}")


# ---- concat ----

@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_qlinear_concat_exact(isa, axis):
    rng = np.random.default_rng(10 + axis)
    shapes = [(2, 3, 5, 7), (2, 3, 5, 7), (2, 3, 5, 7)]
    sizes = (1, 4, 9)
    inputs = []
    for i, (sh, n) in enumerate(zip(shapes, sizes)):
        sh = list(sh)
        sh[axis] = n
        dt = (np.uint8, np.int8, np.uint8)[i]
        inputs.append((rand_q(rng, tuple(sh), dt), (0.05, 0.1, 0.2)[i],
                       (128, -3, 7)[i]))
    want = ref_concat(inputs, 0.1, np.uint8(120), np.uint8, axis)
    for t in (1, 2):
        with num_threads(t):
            got = qc.qlinear_concat(inputs, 0.1, np.uint8(120), axis=axis)
        assert_equal_exact(got, want, f"{isa} axis={axis}")


def test_qlinear_concat_copy_path_and_errors(isa):
    rng = np.random.default_rng(11)
    a = rand_q(rng, (2, 3, 4), np.int8)
    b = rand_q(rng, (2, 5, 4), np.int8)
    got = qc.qlinear_concat([(a, 0.1, 3), (b, 0.1, 3)], 0.1, np.int8(3))
    assert_equal_exact(got, np.concatenate([a, b], axis=1), isa)
    with pytest.raises(ValueError, match=r"inputs\[1\] q: expected the shape of inputs\[0\]"):
        qc.qlinear_concat([(a, 0.1, 3), (b[:, :, :2], 0.1, 3)], 0.1, np.int8(3))
    with pytest.raises(ValueError, match=r"inputs: expected at least one"):
        qc.qlinear_concat([], 0.1, 0)
    with pytest.raises(TypeError, match=r"inputs\[0\]: expected a \(q, scale, zero_point\)"):
        qc.qlinear_concat([a], 0.1, 0)
    with pytest.raises(ValueError, match=r"inputs\[0\] scale: expected a positive"):
        qc.qlinear_concat([(a, 0.0, 3)], 0.1, 0)
    with pytest.raises(ValueError, match=r"axis: expected an axis in"):
        qc.qlinear_concat([(a, 0.1, 3)], 0.1, 0, axis=3)


def test_qops_family_registered():
    info = qc.cpu_info()
    names = [v[0] for v in info["variants"]["qops"]]
    assert names[-1] == "qops__scalar"
    assert info["kernels"]["qops"] in names


def test_qlinear_concat_chunks_across_inputs(isa):
    # output rows of 150000 bytes are split into 65536-byte tasks; the input boundary at 90000
    # falls inside the second chunk
    rng = np.random.default_rng(12)
    inputs = [(rand_q(rng, (2, 3, 200, 150), np.uint8), 0.1, 128),
              (rand_q(rng, (2, 2, 200, 150), np.int8), 0.3, 0)]
    want = ref_concat(inputs, 0.2, np.uint8(128), np.uint8, 1)
    for t in (1, 2):
        with num_threads(t):
            got = qc.qlinear_concat(inputs, 0.2, np.uint8(128), axis=1)
        assert_equal_exact(got, want, f"{isa} t={t}")


def test_qlinear_concat_large_streamed_output(isa):
    # >= 8 MiB outputs are streamed (see the add test); rows of 3 + 2 * 1048579 bytes keep
    # most tasks' starts off the 64-byte grid, and the second input is a strided view
    rng = np.random.default_rng(15)
    inputs = [(rand_q(rng, (2, 2, 1, 3), np.uint8), 0.1, 128),
              (rand_q(rng, (2, 2, 3, 1048579), np.int8)[:, :, :1, :], 0.3, 0),
              (rand_q(rng, (2, 2, 1, 1048579), np.uint8), 0.07, 9)]
    for ydt, yzp in ((np.uint8, 128), (np.int8, -5)):
        want = ref_concat(inputs, 0.2, ydt(yzp), ydt, 3)
        for t in (1, 2):
            with num_threads(t):
                got = qc.qlinear_concat(inputs, 0.2, ydt(yzp), axis=3)
            assert_equal_exact(got, want, f"{isa} y={ydt.__name__} t={t}")


@pytest.mark.parametrize("xdt,ydt", [(np.int8, np.int8), (np.uint8, np.uint8),
                                     (np.int8, np.uint8), (np.uint8, np.int8)])
def test_qlinear_concat_large_ratios_and_extreme_zero_points(isa, xdt, ydt):
    # as the add test: saturation with and without the clamp before rounding, zero points at
    # both ends; rows of 1000 bytes give 64-byte steps and a masked tail
    rng = np.random.default_rng(17)
    xi, yi = np.iinfo(xdt), np.iinfo(ydt)
    q = rand_q(rng, (2, 1, 3, 1000), xdt)
    q[0, 0, 0] = xi.max
    q[0, 0, 1] = xi.min
    for xs, ys in ((4194304.0, 1.0), (4194305.0, 1.0), (1e12, 1.0), (3e3, 0.5), (0.02, 0.03)):
        for xzp, yzp in ((xi.min, yi.max), (xi.max, yi.min), (0, 0)):
            inputs = [(q, xs, xdt(xzp)), (q[:, :, :, ::-1], xs * 0.5, xdt(xzp))]
            want = ref_concat(inputs, ys, ydt(yzp), ydt, 1)
            got = qc.qlinear_concat(inputs, ys, ydt(yzp), axis=1)
            assert_equal_exact(got, want, f"{isa} {xs}/{ys} zp={xzp},{yzp}")


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_max_pool_matches_onnx_reference(dt):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(13)
    q = rand_q(rng, (2, 3, 11, 12), dt)
    ttype = TensorProto.INT8 if dt == np.int8 else TensorProto.UINT8
    for k, s, p in (((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 3), (1, 2), (0, 1, 1, 2))):
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(k), strides=list(s),
                                pads=list(p))
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", ttype, q.shape)],
                                  [helper.make_tensor_value_info("y", ttype, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        want = ReferenceEvaluator(model).run(None, {"x": q})[0]
        assert_equal_exact(qc.max_pool2d(q, k, strides=s, pads=p), want, f"{k} {s} {p}")


@pytest.mark.parametrize("H", [255, 256, 257, 300])
@pytest.mark.parametrize("dt,val", [(np.uint8, 255), (np.int8, -128), (np.int8, 127)])
def test_global_avg_pool_tall_extremes(isa, H, dt, val):
    # avg_pool2d: column sums of up to 256 rows of extremes fit 16-bit lanes, taller planes
    # use the generic kernel; global_avg_pool: plane sums of extremes
    q = np.full((1, 2, H, 3), val, dt)
    q[0, 1, ::7] = np.iinfo(dt).min if val == np.iinfo(dt).max else np.iinfo(dt).max
    want = ref_avg_pool(q, 0.5, 0, 0.25, 0, (H, 3), (1, 1), (0, 0, 0, 0), False)
    assert_equal_exact(qc.global_avg_pool(q, 0.5, 0, 0.25, 0), want, f"{isa} H={H}")
    assert_equal_exact(qc.avg_pool2d(q, 0.5, 0, 0.25, 0, (H, 3)), want, f"{isa} H={H} window")


@pytest.mark.parametrize("k,s,p", [
    ((3, 3), (2, 2), (1, 1, 1, 1)),    # consecutive windows share a row (kh = sh + 1)
    ((3, 3), (2, 2), (0, 0, 0, 0)),
    ((3, 3), (2, 2), (2, 1, 0, 2)),
    ((2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 1), (1, 2), (1, 0, 1, 0)),    # kw = 1; shared rows with sh = 1
    ((1, 1), (1, 2), (0, 0, 0, 0)),
    ((4, 4), (2, 2), (1, 3, 2, 3)),
    ((5, 3), (4, 2), (4, 2, 4, 2)),
    ((7, 2), (3, 2), (3, 1, 0, 1)),
])
@pytest.mark.parametrize("W", [1, 2, 63, 64, 65, 128, 129, 131, 257])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_avg_pool_stride2_columns(isa, k, s, p, W, dt):
    # stride-2 columns: 64 outputs per step from 64-byte loads at 2i - pl, so row widths and
    # output counts around multiples of 64, both borders padded or not, and every row case
    H = 7
    rng = np.random.default_rng(W * 10 + k[0])
    info = np.iinfo(dt)
    q = rand_q(rng, (2, 3, H, W), dt)
    if H + p[0] + p[2] < k[0] or W + p[1] + p[3] < k[1]:
        # a row of 1 or 2 columns narrower than the padded window: no output, a clear error
        with pytest.raises(ValueError, match="kernel"):
            qc.avg_pool2d(q, 0.1, dt(0), 0.07, dt(0), k, strides=s, pads=p)
        return
    q[0, 0] = info.max
    q[0, 1] = info.min
    for xzp, yzp in ((info.min, info.max), (info.max, info.min), (3, 0)):
        for cip in (False, True):
            assert_equal_exact(
                qc.avg_pool2d(q, 0.1, dt(xzp), 0.07, dt(yzp), k, strides=s, pads=p,
                              count_include_pad=cip),
                ref_avg_pool(q, 0.1, dt(xzp), 0.07, dt(yzp), k, s, p, cip),
                f"{isa} W={W} xzp={xzp} cip={cip}")


@pytest.mark.parametrize("k,p", [
    ((3, 3), (1, 1, 1, 1)),    # 3x3/2: three rows, loads from column 128j - 1
    ((3, 3), (0, 0, 0, 0)),
    ((3, 3), (2, 2, 0, 2)),
    ((2, 2), (0, 0, 0, 0)),
    ((2, 2), (1, 1, 1, 1)),
    ((1, 2), (0, 1, 0, 0)),
    ((4, 4), (1, 3, 2, 3)),
    ((2, 4), (0, 0, 1, 1)),
    ((4, 4), (0, 1, 0, 2)),    # taps from both the previous and the next 64 columns
    ((3, 4), (1, 2, 1, 1)),
    ((3, 1), (1, 0, 1, 0)),    # kw = 1 and 5: the scratch-row kernel
    ((2, 5), (1, 4, 0, 2)),
])
@pytest.mark.parametrize("W", [1, 2, 3, 63, 64, 65, 127, 128, 129, 130, 131, 255, 256, 257, 258])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_max_pool_stride2_columns(isa, k, p, W, dt):
    # stride-2 columns: 64 outputs per step from the 128 columns at 128j, shifted by up to
    # pl columns back and kw - 2 - pl ahead, loads masked where they leave the row: widths
    # around multiples of 64 and 128, padded borders or not; planes of the type's minimum and
    # maximum check the padding stays neutral
    rng = np.random.default_rng(W * 10 + k[1])
    info = np.iinfo(dt)
    q = rand_q(rng, (2, 3, 7, W), dt)
    if W + p[1] + p[3] < k[1]:
        with pytest.raises(ValueError, match="kernel"):
            qc.max_pool2d(q, k, strides=2, pads=p)
        return
    q[0, 0] = info.min
    q[0, 1] = info.max
    q[1, 0, :, ::2] = info.min
    for s in ((2, 2), (1, 2), (3, 2)):
        assert_equal_exact(qc.max_pool2d(q, k, strides=s, pads=p), ref_max_pool(q, k, s, p),
                           f"{isa} W={W} s={s}")


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_avg_pool_large_ratios(isa, dt):
    # results far outside the output range saturate, whether v is clamped before rounding or
    # (for x_scale / y_scale up to 2^22) the narrowing saturates
    rng = np.random.default_rng(8)
    q = rand_q(rng, (2, 3, 9, 70), dt)
    for xs, ys in ((1e7, 1.0), (4194304.0, 1.0), (4194305.0, 1.0), (3e3, 0.5), (1.0, 3e-4)):
        for k, s, p in (((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)),
                        ((3, 3), (1, 1), (1, 1, 1, 1))):
            for cip in (False, True):
                assert_equal_exact(
                    qc.avg_pool2d(q, xs, dt(3), ys, dt(7), k, strides=s, pads=p,
                                  count_include_pad=cip),
                    ref_avg_pool(q, xs, dt(3), ys, dt(7), k, s, p, cip),
                    f"{isa} {xs}/{ys} {k} {s} cip={cip}")


# The scalar forms of scales and zero points: Python floats and ints and NumPy scalars take a
# short path in the bindings (no arrays); arrays take the general one. Every form of the same
# value gives the same bytes, and every bad value the same error.
SCALE_FORMS = [float, np.float32, np.float64, lambda v: np.array(v), lambda v: np.array([v]),
               lambda v: np.array(v, np.float32)]
ZP_FORMS = [int, np.uint8, lambda v: np.array(v, np.uint8), lambda v: np.array([v], np.uint8)]


@pytest.mark.parametrize("sf", SCALE_FORMS)
@pytest.mark.parametrize("zf", ZP_FORMS)
def test_scalar_forms_agree(sf, zf):
    rng = np.random.default_rng(11)
    a, b = rand_q(rng, (1, 3, 5, 7), np.uint8), rand_q(rng, (1, 3, 5, 7), np.uint8)
    # 0.1 and 0.3 are not float32 values: the short path rounds them as NumPy's cast does
    want = qc.qlinear_add(a, np.float32(0.1), np.uint8(3), b, np.float32(0.3), np.uint8(250),
                          np.float32(0.7), np.uint8(9))
    got = qc.qlinear_add(a, sf(0.1), zf(3), b, sf(0.3), zf(250), sf(0.7), np.uint8(9))
    assert_equal_exact(got, want, "qlinear_add")
    want = qc.global_avg_pool(a, np.float32(0.1), np.uint8(3), np.float32(0.3), np.uint8(7))
    assert_equal_exact(qc.global_avg_pool(a, sf(0.1), zf(3), sf(0.3), np.uint8(7)), want, "gap")
    w = rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8)
    want = qc.qlinear_conv(a, np.float32(0.1), np.uint8(3), w, np.float32(0.01), np.int8(0),
                           np.float32(0.3), np.uint8(7), pads=(1, 1, 1, 1))
    got = qc.qlinear_conv(a, sf(0.1), zf(3), w, sf(0.01), 0, sf(0.3), np.uint8(7),
                          pads=(1, 1, 1, 1))
    assert_equal_exact(got, want, "qlinear_conv")


@pytest.mark.parametrize("bad,err,match", [
    (-0.5, ValueError, "a_scale: expected a positive finite value"),
    (0.0, ValueError, "a_scale: expected a positive finite value"),
    (float("nan"), ValueError, "a_scale: expected a positive finite value"),
    (1e-50, ValueError, r"a_scale: expected a positive finite value, got 0\.0"),  # in float32
])
@pytest.mark.parametrize("sf", SCALE_FORMS)
def test_scalar_forms_bad_scale(bad, err, match, sf):
    q = np.zeros((1, 2, 3, 3), np.uint8)
    with pytest.raises(err, match=match):
        qc.qlinear_add(q, sf(bad), 0, q, 1.0, 0, 1.0, np.uint8(0))


@pytest.mark.parametrize("bad,err,match", [
    (256, ValueError, r"a_zero_point: expected values in \[0, 255\] \(uint8\), got 256"),
    (-1, ValueError, r"a_zero_point: expected values in \[0, 255\] \(uint8\), got -1"),
    (2 ** 70, TypeError, "a_zero_point: expected an array of an integer dtype"),
    (np.int8(3), TypeError, "a_zero_point: expected uint8"),
    (np.int32(3), TypeError, "a_zero_point: expected uint8"),
    (1.5, TypeError, "a_zero_point"),
])
def test_scalar_forms_bad_zero_point(bad, err, match):
    q = np.zeros((1, 2, 3, 3), np.uint8)
    with pytest.raises(err, match=match):
        qc.qlinear_add(q, 1.0, bad, q, 1.0, 0, 1.0, np.uint8(0))
