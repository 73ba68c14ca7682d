"""arithmetic="onnxruntime": the requantizing ops bit for bit as onnxruntime's x86-64 kernels
(MLAS), against NumPy references of those formulas on every ISA level and convolution path,
and a quantized model against onnxruntime's own run of its export.

Rounding ties decide where the two arithmetics differ, so most data here is made of them:
zero weights make every accumulator its channel's bias, and multipliers chosen as
float32((k + 1/2) / bias) put the float32 product on the tie k + 1/2 (or within a unit in its
last place of it), which float64 resolves one way and float32 the other; odd zero points tell
"zero point added before rounding" (the reference) from "after" (onnxruntime)."""
import numpy as np
import pytest

import quantc as qc
from quantc import _C

from conftest import assert_equal_exact, num_threads, qm_and_onnxruntime
from test_conv import VNNI_PATH_KERNELS, _forced_path, rand_q, ref_conv_acc


def ref_requant_ort(acc, mult, yzp, relu=False, axis=1):
    """clamp(rint(float32(float32(acc) * mult)), lo - yzp, hi - yzp) + yzp, per channel on
    `axis` (MLAS's MlasRequantizeOutput)."""
    yzp = np.asarray(yzp)
    info = np.iinfo(yzp.dtype)
    lo = max(info.min, int(yzp)) if relu else info.min
    shape = [1] * acc.ndim
    shape[axis] = -1
    p = acc.astype(np.float32) * np.asarray(mult, np.float32).reshape(shape)
    assert p.dtype == np.float32
    p = np.clip(p, np.float32(lo - int(yzp)), np.float32(info.max - int(yzp)))
    return (np.rint(p).astype(np.int32) + int(yzp)).astype(yzp.dtype)


def ref_requant_f64(acc, mult, yzp, relu=False, axis=1):
    """The reference arithmetic (float64, zero point inside the rounding)."""
    yzp = np.asarray(yzp)
    info = np.iinfo(yzp.dtype)
    lo = max(info.min, int(yzp)) if relu else info.min
    shape = [1] * acc.ndim
    shape[axis] = -1
    r = acc.astype(np.float64) * np.asarray(mult, np.float32).astype(np.float64).reshape(
        shape) + float(yzp)
    return np.rint(np.clip(r, lo, info.max)).astype(yzp.dtype)


def _tie_data(rng, M):
    """M (bias, multiplier) pairs: positive multipliers float32((k + 1/2) / bias) for biases of
    either sign and |k| < 60, so float32(bias * mult) lands on the tie k + 1/2 or within a unit
    in its last place of it; every fourth an exact 0.5 with bias 2k + 1."""
    k = rng.integers(-60, 60, M)
    sign = np.where(k >= 0, 1, -1)
    bias = rng.integers(1000, 3_000_000, M) * sign
    mult = ((k + 0.5) / bias).astype(np.float32)
    exact = np.arange(M) % 4 == 3
    mult[exact] = np.float32(0.5)
    bias[exact] = 2 * k[exact] + 1
    return bias.astype(np.int32), mult


# (N, C, H, W, M, k, stride, pads, group): a 3x3 on the GEMM path, a pointwise layer (the NCHW
# GEMM on AVX-512 VNNI), depthwise 3x3 at strides 1 and 2 (the byte-quad kernel), a depthwise
# 5x5 (the pair tiles) and a grouped 3x3 with 4 channels per group (the quad path when forced)
CONV_CASES = [
    (2, 16, 9, 11, 24, 3, 1, (1, 1, 1, 1), 1),
    (2, 24, 8, 9, 40, 1, 1, (0, 0, 0, 0), 1),
    (2, 32, 12, 13, 32, 3, 1, (1, 1, 1, 1), 32),
    (1, 32, 12, 13, 32, 3, 2, (1, 1, 1, 1), 32),
    (1, 16, 11, 10, 16, 5, 1, (2, 2, 2, 2), 16),
    (2, 32, 9, 9, 32, 3, 1, (1, 1, 1, 1), 8),
]


def _conv_case_id(c):
    N, C, H, W, M, k, s, p, g = c
    return f"C{C}M{M}k{k}s{s}g{g}"


def _check_conv_case(label, case, ydt, rng):
    """qlinear_conv(arithmetic="onnxruntime") and the model's _conv_plan in every layout
    against ref_requant_ort: tie data (zero weights) and random data, with and without relu;
    and the tie data must tell the two arithmetics apart (else the test proves nothing)."""
    N, C, H, W, M, k, s, p, g = case
    xdt = np.uint8 if ydt == np.uint8 else np.int8
    x = rand_q(rng, (N, C, H, W), xdt)
    xzp = rand_q(rng, (), xdt)
    info = np.iinfo(ydt)
    kw = dict(strides=(s, s), pads=p, group=g)
    bias, mult = _tie_data(rng, M)
    datasets = [(np.zeros((M, C // g, k, k), np.int8), bias, mult, True)]
    w = rand_q(rng, (M, C // g, k, k), np.int8)
    acc = ref_conv_acc(x, w, xzp, 0, **kw).astype(np.float64)
    center = acc.mean(axis=(0, 2, 3))
    spread = float(acc.std()) + 1.0
    rbias = (-np.round(center) + rng.integers(-1000, 1000, M)).astype(np.int32)
    rmult = (rng.uniform(0.5, 2.0, M) * 40 / spread).astype(np.float32)
    datasets.append((w, rbias, rmult, False))
    # multipliers 2^17 times larger: products beyond 2^22 (which the saturating epilogues limit
    # first) and most outputs saturated
    datasets.append((w, rbias, (rmult * 2 ** 17).astype(np.float32), False))
    for w, b, m, ties in datasets:
        acc = ref_conv_acc(x, w, xzp, 0, **kw)
        acc = (acc.astype(np.int64) + b.reshape(1, -1, 1, 1)).astype(np.int32)
        packed = qc.pack_conv_weight(w, group=g)
        for yzp in (ydt(info.min + 1 + 2 * rng.integers(0, 100)), ydt(info.min + 120)):
            for relu in (False, True):
                want = ref_requant_ort(acc, m, yzp, relu)
                if ties:  # the data is worth it: the reference differs on it
                    assert (want != ref_requant_f64(acc, m, yzp, relu)).any()
                got = qc.qlinear_conv(x, 1.0, xzp, w, m, 0, 1.0, yzp, b, relu=relu,
                                      arithmetic="onnxruntime", **kw)
                assert_equal_exact(got, want, f"{label} ties={ties} yzp={yzp} relu={relu}")
                ref = qc.qlinear_conv(x, 1.0, xzp, packed, m, None, 1.0, yzp, b, relu=relu, **kw)
                assert_equal_exact(ref, ref_requant_f64(acc, m, yzp, relu), f"{label} reference")
                x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                for layout in range(4):
                    plan = _C._conv_plan(packed._capsule, xzp, np.float32(1), m, np.float32(1),
                                         yzp, b, (s, s), p, (1, 1), g, relu, layout, True)
                    for t in (1, 3):
                        with num_threads(t):
                            y = _C._conv_exec(plan, x_nhwc if layout & 1 else x)
                        if layout & 2:
                            y = y.transpose(0, 3, 1, 2)
                        assert_equal_exact(y, want, f"{label} layout={layout} t={t}")


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_case_id)
@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_conv_every_isa(isa, case, ydt):
    _check_conv_case(isa, case, ydt, np.random.default_rng(hash((case[4], case[5], case[8]))
                                                            % 2 ** 32))


@pytest.fixture(params=VNNI_PATH_KERNELS)
def nchw(request):
    yield from _forced_path(_C._set_conv_nchw, request.param)


@pytest.fixture(params=VNNI_PATH_KERNELS)
def gconv(request):
    yield from _forced_path(_C._set_conv_gconv, request.param)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1]], ids=_conv_case_id)
def test_conv_nchw_path(nchw, case):
    _check_conv_case(f"nchw {nchw}", case, np.uint8, np.random.default_rng(5))


def test_conv_gconv_path(gconv):
    _check_conv_case(f"gconv {gconv}", CONV_CASES[5], np.uint8, np.random.default_rng(6))


@pytest.mark.parametrize("rows", [1, 3])
def test_conv_dw_small_tiles(isa, rows):
    """Depthwise convolutions in forced small tiles (the pair kernels, never the NHWC one)."""
    prev = _C._set_dw_tile_rows(rows)
    try:
        for case in (CONV_CASES[2], CONV_CASES[4]):
            _check_conv_case(f"{isa} dw rows={rows}", case, np.uint8, np.random.default_rng(7))
    finally:
        _C._set_dw_tile_rows(prev)


def test_conv_im2col(isa):
    prev = _C._set_conv_ix(-1)
    try:
        _check_conv_case(f"{isa} im2col", CONV_CASES[0], np.int8, np.random.default_rng(8))
    finally:
        _C._set_conv_ix(prev)


@pytest.mark.parametrize("M,K,N", [(1, 16, 1), (7, 33, 17), (16, 64, 48), (37, 200, 100),
                                   (64, 512, 64)])
@pytest.mark.parametrize("bzp", [0, 3])
def test_qlinear_matmul_every_isa(isa, M, K, N, bzp):
    """QLinearMatMul / QGemm: tie data (b zero, so every sum is the bias) and random data,
    per-column multipliers, b's zero point 0 (the packed fast path) and not."""
    rng = np.random.default_rng(M * 1000 + N + bzp)
    a = rand_q(rng, (M, K), np.uint8)
    azp = np.uint8(rng.integers(0, 256))
    bias, mult = _tie_data(rng, N)
    b0 = np.full((K, N), bzp, np.int8)
    b = rand_q(rng, (K, N), np.int8)
    acc = qc.matmul_integer(a, b, azp, np.int8(bzp)).astype(np.float64)
    rmult = (rng.uniform(0.5, 2.0, N) * 40 / (acc.std() + 1)).astype(np.float32)
    rbias = (-np.round(acc.mean(axis=0))).astype(np.int32)
    for bm, bb, mm, ties in ((b0, bias, mult, True), (b, rbias, rmult, False),
                             (b, rbias, (rmult * 2 ** 17).astype(np.float32), False)):
        acc = qc.matmul_integer(a, bm, azp, np.int8(bzp)).astype(np.int64) + bb
        acc = acc.astype(np.int32)
        for yzp in (np.uint8(77), np.int8(-3)):
            for relu in (False, True):
                want = ref_requant_ort(acc, mm, yzp, relu, axis=1)
                if ties and M * N >= 16:
                    assert (want != ref_requant_f64(acc, mm, yzp, relu, axis=1)).any()
                for t in (1, 2):
                    with num_threads(t):
                        got = qc.qlinear_matmul(a, 1.0, azp, bm, mm, np.int8(bzp), 1.0, yzp,
                                                bias=bb, relu=relu, arithmetic="onnxruntime")
                    assert_equal_exact(got, want, f"{isa} ties={ties} relu={relu} t={t}")
                packed = qc.pack_matrix(bm, np.int8(bzp))
                got = qc.qlinear_matmul(a, 1.0, azp, packed, mm, np.int8(bzp), 1.0, yzp,
                                        bias=bb, relu=relu, arithmetic="onnxruntime")
                assert_equal_exact(got, want, f"{isa} packed")


def fma32(a, b, c):
    """float32 fma(a, b, c) with one rounding, in NumPy: the product is exact in float64, the
    sum's rounding error comes back exactly (TwoSum), and the one case where rounding the
    float64 sum to float32 rounds twice (the sum exactly halfway between two float32, the
    error not zero) is moved toward the true value."""
    a, b, c = (np.asarray(v, np.float32) for v in (a, b, c))
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)
    r = s.astype(np.float32)
    d = s - r.astype(np.float64)
    toward = np.nextafter(r, np.where(d < 0, np.float32(-np.inf), np.float32(np.inf)))
    gap = np.abs(toward.astype(np.float64) - r.astype(np.float64))
    fix = (d != 0) & (np.abs(d) == gap / 2) & (e != 0) & (np.sign(e) == np.sign(d))
    return np.where(fix, toward, r).astype(np.float32)


def test_fma32_reference():
    """The test's fma against exact rational arithmetic on tie-heavy inputs."""
    from fractions import Fraction
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 256, 3000).astype(np.float32)
    b = (rng.integers(1, 2 ** 24, 3000) * 2.0 ** rng.integers(-30, -20, 3000)).astype(np.float32)
    c = np.where(rng.random(3000) < 0.5, -(a * b).astype(np.float32) + np.float32(0.5),
                 rng.standard_normal(3000) * 1e-6).astype(np.float32)
    got = fma32(a, b, c)
    for i in range(3000):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        want = np.float32(float(exact))  # float() of a Fraction rounds once, to float64 ...
        lo, hi = np.nextafter(want, np.float32(-np.inf)), np.nextafter(want, np.float32(np.inf))
        cands = [v for v in (lo, want, hi)]
        best = min(cands, key=lambda v: (abs(Fraction(float(v)) - exact),
                                         int(np.float32(v).view(np.int32)) & 1))
        assert got[i] == best, (i, a[i], b[i], c[i])


def ref_add_ort(a, sa, za, b, sb, zb, sy, zy, relu=False):
    sa, sb, sy = np.float32(sa), np.float32(sb), np.float32(sy)
    ma, mb = np.float32(sa / sy), np.float32(sb / sy)
    fixed = np.float32(np.float32(zy) - fma32(ma, np.float32(za), np.float32(mb * np.float32(zb))))
    v = fma32(a.astype(np.float32), ma, fma32(b.astype(np.float32), mb, fixed))
    zy = np.asarray(zy)
    info = np.iinfo(zy.dtype)
    lo = max(info.min, int(zy)) if relu else info.min
    return np.clip(np.rint(v), lo, info.max).astype(zy.dtype)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 63, 64, 65, 200, 1000])
@pytest.mark.parametrize("adt,bdt,ydt", [(np.uint8, np.uint8, np.uint8),
                                         (np.int8, np.int8, np.int8),
                                         (np.uint8, np.int8, np.uint8)])
def test_qlinear_add_every_isa(isa, n, adt, bdt, ydt):
    """Every pair of codes (and tails around the 16- and 64-lane steps) under scales whose
    ratios are near and at powers of two (exact ties) and random ones."""
    rng = np.random.default_rng(n)
    ia, ib = np.iinfo(adt), np.iinfo(bdt)
    ga, gb = np.meshgrid(np.arange(ia.min, ia.max + 1), np.arange(ib.min, ib.max + 1))
    full = (ga.ravel().astype(adt), gb.ravel().astype(bdt))
    for sa, sb, sy in ((0.5, 0.25, 1.0), (0.1, 0.3, 0.2), (0.0371, 0.0123, 0.05),
                       (1.0, 1.0, 3.0), (2.0 ** -7, 2.0 ** -9 * 3, 2.0 ** -6)):
        for za, zb, zy in ((int(ia.min) + 128 + 3, int(ib.min) + 128 - 7, 5),
                           (int(ia.min), int(ib.max), 1)):
            zy = np.asarray(zy).astype(ydt)
            for a, b in (full, (rand_q(rng, (n,), adt), rand_q(rng, (n,), bdt))):
                for relu in (False, True):
                    want = ref_add_ort(a, sa, za, b, sb, zb, sy, zy, relu)
                    got = qc.qlinear_add(a, sa, adt(za), b, sb, bdt(zb), sy, zy, relu=relu,
                                         arithmetic="onnxruntime")
                    assert_equal_exact(got, want, f"{isa} scales={(sa, sb, sy)} relu={relu}")


def test_qlinear_add_differs_from_reference():
    """The two arithmetics of QLinearAdd do differ (the test above would pass for a kernel
    that ignored `arithmetic` only if they did not)."""
    ga, gb = np.meshgrid(np.arange(256), np.arange(256))
    a, b = ga.ravel().astype(np.uint8), gb.ravel().astype(np.uint8)
    ort = qc.qlinear_add(a, 0.1, np.uint8(3), b, 0.3, np.uint8(250), 0.2, np.uint8(5),
                         arithmetic="onnxruntime")
    ref = qc.qlinear_add(a, 0.1, np.uint8(3), b, 0.3, np.uint8(250), 0.2, np.uint8(5))
    assert (ort != ref).any()


def test_qlinear_add_large_multipliers(isa):
    """Multipliers above the 64-step loop's bound take the 16-lane loop: saturated the same."""
    rng = np.random.default_rng(2)
    a, b = rand_q(rng, (300,), np.uint8), rand_q(rng, (300,), np.uint8)
    for sa in (2.0 ** 21, 3e6, 1.0):
        want = ref_add_ort(a, sa, 100, b, 2.0 ** 21, 17, 1.0, np.uint8(9))
        got = qc.qlinear_add(a, sa, np.uint8(100), b, 2.0 ** 21, np.uint8(17), 1.0, np.uint8(9),
                             arithmetic="onnxruntime")
        assert_equal_exact(got, want, f"{isa} sa={sa}")


@pytest.mark.parametrize("hw", [(1, 1), (7, 7), (14, 14), (3, 17)])
def test_global_avg_pool_every_isa(isa, hw):
    rng = np.random.default_rng(hw[0] * 31 + hw[1])
    q = rand_q(rng, (2, 40, *hw), np.uint8)
    for xs, ys, xz, yz in ((0.05, 0.05, 128, 3), (0.1, 0.0333, 7, 250), (1.0, 3.0, 0, 1)):
        cells = np.float32(hw[0] * hw[1])
        m = np.float32(np.float32(xs) / np.float32(np.float32(ys) * cells))
        acc = q.astype(np.int32).sum(axis=(2, 3), keepdims=True) - xz * hw[0] * hw[1]
        want = ref_requant_ort(acc, np.full(40, m, np.float32), np.uint8(yz))
        got = qc.global_avg_pool(q, xs, np.uint8(xz), ys, np.uint8(yz),
                                 arithmetic="onnxruntime")
        assert_equal_exact(got, want, f"{isa} {hw} {(xs, ys)}")


def test_avg_pool_and_concat_references():
    """QLinearAveragePool and QLinearConcat against plain loops of their formulas."""
    rng = np.random.default_rng(3)
    q = rand_q(rng, (1, 3, 5, 6), np.uint8)
    xs, xz, ys, yz = np.float32(0.07), 100, np.float32(0.05), 9
    for cip in (False, True):
        got = qc.avg_pool2d(q, xs, np.uint8(xz), ys, np.uint8(yz), (3, 3), strides=(1, 2),
                            pads=(1, 1, 1, 1), count_include_pad=cip, arithmetic="onnxruntime")
        want = np.zeros_like(got)
        for c in range(3):
            for oy in range(got.shape[2]):
                for ox in range(got.shape[3]):
                    s, n = np.float32(0), 0
                    for ky in range(3):
                        for kx in range(3):
                            iy, ix = oy - 1 + ky, ox * 2 - 1 + kx
                            if 0 <= iy < 5 and 0 <= ix < 6:
                                s = np.float32(s + np.float32(np.float32(int(q[0, c, iy, ix]) -
                                                                         xz) * xs))
                                n += 1
                    cnt = np.float32(9 if cip else n)
                    v = np.float32(np.float32(np.float32(s / cnt) / ys) + np.float32(yz))
                    want[0, c, oy, ox] = np.clip(np.rint(v), 0, 255)
        assert_equal_exact(got, want, f"cip={cip}")
    a, b = rand_q(rng, (2, 3, 4), np.uint8), rand_q(rng, (2, 5, 4), np.int8)
    got = qc.qlinear_concat([(a, 0.3, np.uint8(7)), (b, 0.11, np.int8(-5))], 0.2,
                            np.uint8(128), axis=1, arithmetic="onnxruntime")

    def one(v, s, z):
        d = np.float32(np.float32(int(v) - z) * np.float32(s))
        return np.clip(np.rint(np.float32(d / np.float32(0.2))) + 128, 0, 255)
    want = np.concatenate([np.vectorize(lambda v: one(v, 0.3, 7))(a),
                           np.vectorize(lambda v: one(v, 0.11, -5))(b)], axis=1)
    assert_equal_exact(got, want.astype(np.uint8))
    # the output as an input's memory: read before written
    buf = np.zeros((2, 8, 4), np.uint8)
    buf[:, :3] = a
    got2 = qc.qlinear_concat([(buf[:, :3], 0.3, np.uint8(7)), (b, 0.11, np.int8(-5))], 0.2,
                             np.uint8(128), axis=1, arithmetic="onnxruntime", out=buf)
    assert got2 is buf and np.array_equal(buf, got)


def test_one_element_qparams():
    """Scales and zero points given as one-element arrays, as the reference path takes them."""
    rng = np.random.default_rng(4)
    q = rand_q(rng, (1, 2, 4, 4), np.uint8)
    one = (np.array([0.07], np.float32), np.array([100], np.uint8), np.array([0.05], np.float32),
           np.array([9], np.uint8))
    plain = (np.float32(0.07), np.uint8(100), np.float32(0.05), np.uint8(9))
    for f in (lambda a, b, c, d: qc.avg_pool2d(q, a, b, c, d, 3, pads=(1, 1, 1, 1),
                                               arithmetic="onnxruntime"),
              lambda a, b, c, d: qc.qlinear_concat([(q, a, b), (q, c, d)], c, d,
                                                   arithmetic="onnxruntime"),
              lambda a, b, c, d: qc.global_avg_pool(q, a, b, c, d, arithmetic="onnxruntime")):
        assert_equal_exact(f(*one), f(*plain))


def test_bad_arithmetic():
    x = np.zeros((1, 1, 2, 2), np.uint8)
    w = np.zeros((1, 1, 1, 1), np.int8)
    for call in (lambda a: qc.qlinear_conv(x, 1.0, 0, w, 1.0, 0, 1.0, np.uint8(0), arithmetic=a),
                 lambda a: qc.qlinear_matmul(x[0, 0], 1.0, np.uint8(0), w[0, 0], 1.0, np.int8(0),
                                             1.0, np.uint8(0), arithmetic=a),
                 lambda a: qc.qlinear_add(x, 1.0, np.uint8(0), x, 1.0, np.uint8(0), 1.0,
                                          np.uint8(0), arithmetic=a),
                 lambda a: qc.global_avg_pool(x, 1.0, np.uint8(0), 1.0, np.uint8(0),
                                              arithmetic=a),
                 lambda a: qc.avg_pool2d(x, 1.0, np.uint8(0), 1.0, np.uint8(0), 2, arithmetic=a),
                 lambda a: qc.qlinear_concat([(x, 1.0, np.uint8(0))], 1.0, np.uint8(0),
                                             arithmetic=a)):
        for bad in ("ort", None, 1):
            with pytest.raises(ValueError, match="arithmetic: expected 'reference' or "
                                                 "'onnxruntime'"):
                call(bad)


# ---- a model against onnxruntime ----

def mixed_net():
    """Conv + BN + ReLU, a residual Add + ReLU, a ReLU6 depthwise 3x3, a grouped 3x3 (4
    channels per group), Concat, MaxPool, AveragePool, a strided pointwise conv,
    GlobalAveragePool and a Linear: every requantizing int8 op, at 32 x 32 on 8 images. The
    pooled features are an output too (the logits alone are too few to show a difference)."""
    rng = np.random.default_rng(11)

    def bn(c):
        return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                rng.uniform(0.3, 2.0, c))
    b = qc.ModelBuilder("mixed")
    x = b.input("x", (None, 3, 32, 32))
    h = b.relu(b.batch_norm(b.conv(x, rng.normal(0, 0.3, (16, 3, 3, 3)), None, pads=1), *bn(16)))
    r = b.conv(h, rng.normal(0, 0.15, (16, 16, 3, 3)), rng.normal(0, 0.1, 16), pads=1)
    h = b.relu(b.add(h, r))
    d = b.relu6(b.conv(h, rng.normal(0, 0.5, (16, 1, 3, 3)), rng.normal(0, 0.1, 16), pads=1,
                       group=16))
    g = b.relu(b.conv(h, rng.normal(0, 0.3, (16, 4, 3, 3)), rng.normal(0, 0.1, 16), pads=1,
                      group=4))
    h = b.concat([h, d, g], axis=1)
    h = b.max_pool(h, 2)
    p = b.avg_pool(h, 3, strides=1, pads=1)
    h = b.conv(p, rng.normal(0, 0.15, (32, 48, 1, 1)), None, strides=2)
    h = b.flatten(b.global_avg_pool(h))
    b.output(p, b.linear(h, rng.normal(0, 0.3, (10, 32)), rng.normal(0, 0.1, 10)))
    model = b.build()
    calib = [rng.standard_normal((8, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    return model, calib, rng.standard_normal((8, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("adt", ["uint8"])
def test_model_matches_onnxruntime_exactly(adt, tmp_path):
    """qm(x) with raw uint8 io equals onnxruntime's run of qm.to_onnx(), every element, on a
    network with every requantizing op; the reference arithmetic does not (on this data)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, calib, x = mixed_net()
    diffs = {}
    for arithmetic in ("onnxruntime", "reference"):
        qm = qc.quantize_model(model, calib, io="uint8", activation_dtype=adt, progress=False,
                               arithmetic=arithmetic)
        assert qm.arithmetic == arithmetic
        got, want, xq = qm_and_onnxruntime(qm, x)
        diffs[arithmetic] = sum(int((g != w).sum()) for g, w in zip(got, want))
        if arithmetic == "onnxruntime":
            for g, w, name in zip(got, want, qm.model.outputs):
                assert_equal_exact(g, w, f"{name}: qm(x) vs onnxruntime")
            path = tmp_path / "m.safetensors"
            qm.save(path)
            back = qc.load_model(path)
            assert back.arithmetic == "onnxruntime"
            for g, w in zip(back(xq), got):
                assert_equal_exact(g, w, "after load")
    assert diffs["reference"] > 0, diffs


def test_model_arithmetic_is_read_only():
    model, calib, _ = mixed_net()
    qm = qc.quantize_model(model, calib[:1], progress=False)
    assert qm.arithmetic == "onnxruntime"
    with pytest.raises(AttributeError):
        qm.arithmetic = "reference"
    with pytest.raises(ValueError, match="arithmetic: expected one of 'reference', 'onnxruntime'"):
        qc.quantize_model(model, calib[:1], progress=False, arithmetic="ort")
