"""qlinear_mul: both arithmetics bit for bit against NumPy float32 references of the documented
formulas, on every ISA level, for all eight int8/uint8 combinations of a, b and y; against
onnxruntime's own QLinearMul (and the DequantizeLinear -> Mul -> QuantizeLinear graph it fuses
into one); shapes, strides, out= and bad input.

    reference:    va = float32(a - a_zp) * a_scale, vb likewise
                  y = clamp(rne(float32(va * vb) / y_scale) + y_zp)
    onnxruntime:  ratio = float32(a_scale * b_scale) / y_scale
                  v = float32((a - a_zp) * (b - b_zp)) * ratio + y_zp   (float32, no FMA)
                  y = clamp(rne(v)), or qmin where v is outside [-2^31, 2^31)

Ties decide where the two differ, so much of the data is made of them: power-of-two scales put
products on exact halves, and odd output zero points tell "zero point added after rounding"
(the reference) from "before" (onnxruntime)."""
import itertools
import os

import numpy as np
import pytest

import quantc as qc

from conftest import SUPPORTED_ISAS, assert_equal_exact, isa_cap, num_threads

QC_CHUNK = 65536  # elements per task of the threaded loop (csrc/py/conv.c)
COMBOS = list(itertools.product((np.int8, np.uint8), repeat=3))  # (a, b, y) dtypes


def _combo_id(c):
    return "".join("s" if t == np.int8 else "u" for t in c)


def ref_mul(a, sa, za, b, sb, zb, sy, zy, ydt):
    """The reference arithmetic: DequantizeLinear -> Mul -> QuantizeLinear in float32, each
    operation rounded, ties to even, an infinite quotient saturating."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    info = np.iinfo(ydt)
    with np.errstate(over="ignore"):
        va = (a.astype(np.int32) - int(za)).astype(np.float32) * np.float32(sa)
        vb = (b.astype(np.int32) - int(zb)).astype(np.float32) * np.float32(sb)
        v = (va * vb) / np.float32(sy)
    assert v.dtype == np.float32 and not np.isnan(v).any()
    r = np.rint(v).astype(np.float64) + int(zy)
    return np.asarray(np.clip(r, info.min, info.max)).astype(ydt)


def ort_ratio(sa, sb, sy):
    return np.float32(np.float32(np.float32(sa) * np.float32(sb)) / np.float32(sy))


def ref_mul_ort(a, sa, za, b, sb, zb, sy, zy, ydt):
    """onnxruntime's (MLAS's) arithmetic: the exact integer product, converted to float32,
    times the float32 ratio, plus the zero point (float32, no FMA), rounded to int32 by
    cvtps2dq (a v outside [-2^31, 2^31) is "integer indefinite", which the saturating packs
    turn into qmin), then clamped."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    info = np.iinfo(ydt)
    ratio = ort_ratio(sa, sb, sy)
    assert np.isfinite(ratio)
    p = ((a.astype(np.int32) - int(za)) * (b.astype(np.int32) - int(zb))).astype(np.float32)
    with np.errstate(over="ignore"):
        v = (p * ratio) + np.float32(int(zy))
    assert v.dtype == np.float32
    inside = (v >= np.float32(-2.0 ** 31)) & (v < np.float32(2.0 ** 31))
    y = np.where(inside, np.clip(np.rint(v).astype(np.float64), info.min, info.max), info.min)
    return np.asarray(y).astype(ydt)


def _refs(a, sa, za, b, sb, zb, sy, zy, ydt):
    return {"reference": ref_mul(a, sa, za, b, sb, zb, sy, zy, ydt),
            "onnxruntime": ref_mul_ort(a, sa, za, b, sb, zb, sy, zy, ydt)}


def _call(a, sa, za, b, sb, zb, sy, zy, arithmetic, **kw):
    """qlinear_mul with zero points given as NumPy scalars of their tensors' dtypes."""
    return qc.qlinear_mul(a, sa, np.asarray(za).astype(a.dtype)[()], b, sb,
                          np.asarray(zb).astype(b.dtype)[()], sy, zy, arithmetic=arithmetic,
                          **kw)


def _every_pair(adt, bdt):
    ia, ib = np.iinfo(adt), np.iinfo(bdt)
    ga, gb = np.meshgrid(np.arange(ia.min, ia.max + 1), np.arange(ib.min, ib.max + 1),
                         indexing="ij")
    return ga.ravel().astype(adt), gb.ravel().astype(bdt)


def _rand(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _zp(rng, dt):
    info = np.iinfo(dt)
    return int(rng.integers(info.min, info.max + 1))


def _odd_zp(rng, dt):
    info = np.iinfo(dt)
    return int(info.min + 1 + 2 * rng.integers(0, 127))


def _tie_scales(rng, adt, bdt, ydt):
    """Power-of-two scales (products and quotients exact: ties at every half), odd output
    zero points."""
    for k in range(4):
        sa, sb = 2.0 ** int(rng.integers(-8, 1)), 2.0 ** int(rng.integers(-8, 1))
        sy = sa * sb * 2.0 ** int(rng.integers(1, 8))
        yield (sa, _zp(rng, adt) // 4, sb, _zp(rng, bdt) // 4, sy, _odd_zp(rng, ydt), "tie")


def _random_scales(rng, adt, bdt, ydt):
    for k in range(4):
        sa, sb = (float(v) for v in rng.uniform(0.001, 0.1, 2))
        # outputs spread over the range: |(a - za) * (b - zb)| ~ 2^14 typical
        sy = sa * sb * float(rng.uniform(20, 400))
        yield (sa, _zp(rng, adt), sb, _zp(rng, bdt), sy, _zp(rng, ydt), "random")


# Ratios just off 1/6 and 1/10 (float32(1/6) = 1/6 + 5e-9): the products 6k + 3 (10k + 5) land
# within a unit in the last place of a half, where rounding p * ratio + y_zp once (an FMA)
# and twice differ; for the middle two float32(sa * sb) / sy and float32(sa / sy) * sb differ
# in the last place, which these products also show
NEAR_TIE_SCALES = ((1.0, 1.0, 6.0), (0.1, 0.3, 0.18), (0.1, 0.2, 0.12), (1.0, 1.0, 10.0))


def _mid(dt):
    return 128 if dt == np.uint8 else 0


def _near_tie_scales(rng, adt, bdt, ydt):
    for sa, sb, sy in NEAR_TIE_SCALES:
        yield (sa, _mid(adt) + int(rng.integers(-3, 4)), sb, _mid(bdt) + int(rng.integers(-3, 4)),
               sy, _zp(rng, ydt), "near")


def ort_alternatives(a, sa, za, b, sb, zb, sy, zy, ydt):
    """What onnxruntime's formula is not: one rounding of p * ratio + y_zp (an FMA), the
    ratio as float32(sa / sy) * sb, a plain clamp of a v beyond int32. The data must tell
    them from ref_mul_ort."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    info = np.iinfo(ydt)
    p = (a.astype(np.int32) - int(za)) * (b.astype(np.int32) - int(zb))
    with np.errstate(over="ignore"):
        fma = (p * np.float64(ort_ratio(sa, sb, sy)) + int(zy)).astype(np.float32)
        ratio = p.astype(np.float32) * np.float32(np.float32(np.float32(sa) / np.float32(sy)) *
                                                  np.float32(sb)) + np.float32(int(zy))
        clamp = p.astype(np.float32) * ort_ratio(sa, sb, sy) + np.float32(int(zy))
    return {k: np.clip(np.rint(v), info.min, info.max).astype(ydt)
            for k, v in (("fma", fma), ("ratio", ratio), ("clamp", clamp))}


# the code pairs shuffled and cut to 64 * 1023 + 43: every kind of pair also in the masked /
# scalar tails after the 64- and 16-lane loops
SHUFFLE = np.random.default_rng(0).permutation(256 * 256)[:64 * 1023 + 43]


def _check_every_isa(a, b, params, ydt, label, tie=False):
    """Both arithmetics on (a, b) and on its shuffled, cut copy, on every ISA level, against
    the NumPy references (returned)."""
    sa, za, sb, zb, sy, zy = params
    zyt = ydt(zy)
    want = _refs(a, sa, za, b, sb, zb, sy, zyt, ydt)
    if tie:  # the data is worth it: the two arithmetics differ on it
        assert (want["reference"] != want["onnxruntime"]).any(), label
    for isa in SUPPORTED_ISAS:
        with isa_cap(isa):
            for arith, w in want.items():
                got = _call(a, sa, za, b, sb, zb, sy, zyt, arith)
                assert_equal_exact(got, w, f"{label} {isa} {arith} params={params}")
                got = _call(a[SHUFFLE], sa, za, b[SHUFFLE], sb, zb, sy, zyt, arith)
                assert_equal_exact(got, w[SHUFFLE], f"{label} {isa} {arith} params={params} "
                                   "shuffled")
    return want


# ---- 1 (a, b, c): every code pair, tie-heavy and random scales, all dtype combinations ----

@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_every_code_pair_every_isa(combo):
    """Every (a, b) code pair (a 256 x 256 meshgrid) under tie-heavy power-of-two scales,
    near-tie scales and random scales and zero points, both arithmetics, on every ISA level."""
    adt, bdt, ydt = combo
    rng = np.random.default_rng(sum(ord(c) for c in _combo_id(combo)))
    a, b = _every_pair(adt, bdt)
    told = {"fma": 0, "ratio": 0}
    for *params, kind in itertools.chain(_tie_scales(rng, adt, bdt, ydt),
                                         _near_tie_scales(rng, adt, bdt, ydt),
                                         _random_scales(rng, adt, bdt, ydt)):
        want = _check_every_isa(a, b, params, ydt, _combo_id(combo), tie=kind == "tie")
        if kind == "near":
            sa, za, sb, zb, sy, zy = params
            alts = ort_alternatives(a, sa, za, b, sb, zb, sy, zy, ydt)
            for k in told:
                told[k] += int((alts[k] != want["onnxruntime"]).sum())
    assert all(told.values()), told  # an FMA, the other ratio: both would fail


def test_reference_is_quantize_of_dequantized_product():
    """The reference arithmetic is qc.quantize(qc.dequantize(a) * qc.dequantize(b)) (a NumPy
    float32 product), which the NumPy reference above must agree with too."""
    rng = np.random.default_rng(77)
    for adt, bdt, ydt in COMBOS:
        a, b = _every_pair(adt, bdt)
        for sa, za, sb, zb, sy, zy, _ in itertools.chain(_tie_scales(rng, adt, bdt, ydt),
                                                         _near_tie_scales(rng, adt, bdt, ydt),
                                                         _random_scales(rng, adt, bdt, ydt)):
            fa = qc.dequantize(a, sa, np.asarray(za).astype(adt)[()])
            fb = qc.dequantize(b, sb, np.asarray(zb).astype(bdt)[()])
            want = qc.quantize(fa * fb, sy, ydt(zy))
            assert_equal_exact(ref_mul(a, sa, za, b, sb, zb, sy, zy, ydt), want, "numpy ref")
            assert_equal_exact(_call(a, sa, za, b, sb, zb, sy, ydt(zy), "reference"), want,
                               f"{_combo_id((adt, bdt, ydt))} {(sa, za, sb, zb, sy, zy)}")


# ---- 1 (d): lengths around the SIMD steps and the threaded chunks ----

@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 63, 64, 65, 1000, 2 * QC_CHUNK + 77])
def test_lengths_every_isa(n):
    """Remainders of the 16/32/64-lane loops, misaligned starts (views one byte into their
    buffers) and, above QC_CHUNK elements, the split into threaded chunks (1 and 2 threads)."""
    rng = np.random.default_rng(n + 1)
    threads = (1, 2) if n > QC_CHUNK else (1,)
    for adt, bdt, ydt in COMBOS:
        a = np.empty(n + 1, adt)[1:]
        b = np.empty(n + 3, bdt)[3:]
        a[:], b[:] = _rand(rng, n, adt), _rand(rng, n, bdt)
        tie_params = (0.5, _zp(rng, adt) // 2, 0.25, _zp(rng, bdt) // 2, 1.0, _odd_zp(rng, ydt))
        rand_params = (0.037, _zp(rng, adt), 0.011, _zp(rng, bdt), 0.0123, _zp(rng, ydt))
        for sa, za, sb, zb, sy, zy in (tie_params, rand_params):
            want = _refs(a, sa, za, b, sb, zb, sy, ydt(zy), ydt)
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa):
                    for t in threads:
                        with num_threads(t):
                            for arith, w in want.items():
                                got = _call(a, sa, za, b, sb, zb, sy, ydt(zy), arith)
                                assert_equal_exact(got, w, f"n={n} {isa} t={t} {arith} "
                                                   f"{_combo_id((adt, bdt, ydt))}")


# ---- 1 (e): extreme ratios ----

@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_extreme_ratios_every_isa(combo):
    """onnxruntime: products whose v reaches 2^31 give qmin (even for large positive values),
    just below it they saturate to qmax; an overflow of p * ratio to +-inf gives qmin.
    Reference: a product or quotient overflowing to inf saturates by sign."""
    adt, bdt, ydt = combo
    info = np.iinfo(ydt)
    a, b = _every_pair(adt, bdt)
    lo_a, lo_b = int(np.iinfo(adt).min), int(np.iinfo(bdt).min)
    in_tails = 0
    for sa, za, sb, zb, sy in ((1.0, lo_a, 1.0, lo_b, 1e-5),  # ratio 1e5: v up to 6.5e9
                               (1.0, 0, 1.0, 0, 2.0 ** -17),  # 128 * 128 * 2^17 == 2^31
                               (1e18, 0, 1e18, 0, 1.0),       # va * vb overflows to inf
                               (1.0, 0, 1.0, 0, 1e-37),       # va * vb / sy overflows
                               (0.75, 100, 1.25, 0, 3e-6)):   # ratio 312500, a's zp 100
        for zy in (0, info.max - 3):
            params = (sa, za, sb, zb, sy, zy)
            want = _refs(a, sa, za, b, sb, zb, sy, ydt(zy), ydt)
            # the data reaches what it is here for
            p = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb)
            big = p * float(ort_ratio(sa, sb, sy)) >= 2.0 ** 31
            assert big.any()
            assert (want["onnxruntime"][big] == info.min).all()
            assert (want["reference"][big] == info.max).all()
            with np.errstate(over="ignore"):
                vref = (np.float32(sa) * (a.astype(np.int32) - za).astype(np.float32)) * \
                       (np.float32(sb) * (b.astype(np.int32) - zb).astype(np.float32)) / \
                       np.float32(sy)
            if sa == 1e18 or sy == 1e-37:
                assert np.isinf(vref).any()
            in_tails += int(big[SHUFFLE[-43:]].sum())
            _check_every_isa(a, b, params, ydt, _combo_id(combo))
    assert in_tails > 0  # the tails see v beyond int32 too


def test_subnormal_scales_every_isa():
    """Subnormal scales, products and ratios are computed, not flushed to zero, alike on
    every ISA level (a flush would make a ratio of 0 or an infinite quotient)."""
    for adt, bdt, ydt in COMBOS:
        a, b = _every_pair(adt, bdt)
        for sa, sb, sy in ((1e-40, 1e-3, 1e-42), (3e-39, 0.5, 1e-37), (1e-20, 1e-20, 1e-40),
                           (2e-38, 1e-3, 1e-39)):
            want = _check_every_isa(a, b, (sa, 7, sb, 3, sy, 5), ydt, "subnormal")
            for w in want.values():
                assert len(np.unique(w)) > 20  # not all saturated


def test_ort_int32_boundary_exact():
    """At ratio 2^17 the product 128 * 128 gives v == 2^31 exactly (qmin) and 127 * 129 gives
    v just below it (qmax); -128 * 128 gives -2^31 (inside: qmin by the clamp)."""
    a = np.array([128, 127, 0, 128, 255, 1], np.uint8)
    b = np.array([128, 129, 128, 0, 255, 1], np.uint8)
    for isa in SUPPORTED_ISAS:
        with isa_cap(isa):
            got = qc.qlinear_mul(a, 1.0, np.uint8(0), b, 1.0, np.uint8(0), 2.0 ** -17,
                                 np.uint8(0), arithmetic="onnxruntime")
            assert_equal_exact(got, np.array([0, 255, 0, 0, 0, 255], np.uint8), isa)
            got = qc.qlinear_mul(a.view(np.int8), 1.0, np.int8(0), b, 1.0, np.uint8(0),
                                 2.0 ** -17, np.int8(0), arithmetic="onnxruntime")
            # a as int8: 128 -> -128 (v = -2^31: inside, clamped), 255 -> -1
            assert_equal_exact(got, np.array([-128, 127, 0, 0, -128, 127], np.int8), isa)
            got = qc.qlinear_mul(a, 1.0, np.uint8(0), b, 1.0, np.uint8(0), 2.0 ** -17,
                                 np.uint8(0))
            assert_equal_exact(got, np.array([255, 255, 0, 0, 255, 255], np.uint8), isa)


# ---- 2: the arithmetics differ ----

@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_arithmetics_differ_on_ties(combo):
    """On tie data (power-of-two scales, odd output zero point) the two arithmetics give
    different results, so the tests above can tell a kernel that ignores `arithmetic`."""
    adt, bdt, ydt = combo
    a, b = _every_pair(adt, bdt)
    zy = ydt(np.iinfo(ydt).min + 129)  # odd
    ort = _call(a, 0.5, 0, b, 0.25, 0, 1.0, zy, "onnxruntime")
    ref = _call(a, 0.5, 0, b, 0.25, 0, 1.0, zy, "reference")
    assert (ort != ref).any()
    # scales that are not powers of two (15/64 / (15/32) = 1/2) and zero points of a and b
    ort = _call(a, 0.375, 3, b, 0.625, 5, 0.46875, zy, "onnxruntime")
    ref = _call(a, 0.375, 3, b, 0.625, 5, 0.46875, zy, "reference")
    assert (ort != ref).any()
    # with an even output zero point the halves round alike: the difference is the ties'
    zy = ydt(np.iinfo(ydt).min + 128)
    assert_equal_exact(_call(a, 0.5, 0, b, 0.25, 0, 1.0, zy, "onnxruntime"),
                       _call(a, 0.5, 0, b, 0.25, 0, 1.0, zy, "reference"), "even zy")


# ---- 3: every ISA equals the scalar kernel ----

def test_every_isa_matches_scalar():
    """Random shapes, data, scales and zero points: every ISA level's result equals the
    scalar kernel's bit for bit, for both arithmetics and every dtype combination."""
    rng = np.random.default_rng(2024)
    for trial in range(24):
        adt, bdt, ydt = COMBOS[trial % 8]
        n = int(rng.choice([1, 7, 16, 33, 64, 127, 129, 500, 4099]))
        a, b = _rand(rng, (n,), adt), _rand(rng, (n,), bdt)
        sa, sb = (float(v) for v in 10.0 ** rng.uniform(-4, 1, 2))
        sy = sa * sb * float(10.0 ** rng.uniform(-1, 4))
        args = (a, sa, _zp(rng, adt), b, sb, _zp(rng, bdt), sy, ydt(_zp(rng, ydt)))
        for arith in ("reference", "onnxruntime"):
            with isa_cap("scalar"):
                want = _call(*args, arith)
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa):
                    assert_equal_exact(_call(*args, arith), want, f"{isa} {arith} trial={trial}")


# ---- 4: onnxruntime ----

ORT_SHAPES = {
    "same": lambda A, B: (A, B),
    "bscalar": lambda A, B: (A, B[12345:12346]),
    "ascalar": lambda A, B: (A[777:778], B),
    "se": lambda A, B: (A[:2 * 8 * 64].reshape(2, 8, 8, 8), B[:16].reshape(2, 8, 1, 1)),
}


def _ort_session(dt, shape_a, shape_b, sa, za, sb, zb, sy, zy, fused):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    T = TensorProto.UINT8 if dt == np.uint8 else TensorProto.INT8
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("sa", sa), ("sb", sb), ("sy", sy))]
    inits += [numpy_helper.from_array(np.array(v, dt), n)
              for n, v in (("za", za), ("zb", zb), ("zy", zy))]
    if fused:
        nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
                 helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
                 helper.make_node("Mul", ["fa", "fb"], ["fy"]),
                 helper.make_node("QuantizeLinear", ["fy", "sy", "zy"], ["y"])]
    else:
        nodes = [helper.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                                  ["y"], domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", T, list(shape_a)),
                                       helper.make_tensor_value_info("b", T, list(shape_b))],
                          [helper.make_tensor_value_info("y", T, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19),
                                            helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("shape", list(ORT_SHAPES))
@pytest.mark.parametrize("dt", [np.uint8, np.int8], ids=["u8", "s8"])
def test_matches_onnxruntime(dt, shape):
    """arithmetic="onnxruntime" equals onnxruntime's com.microsoft QLinearMul and its fused
    DequantizeLinear -> Mul -> QuantizeLinear exactly, on every ISA level: every code pair,
    tie-heavy, near-tie, random and extreme (v beyond int32) scales. On the full code grid
    the data must tell onnxruntime's results from the reference arithmetic's (so the float
    graph was fused), from an FMA, from the other ratio and from a plain clamp."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rng = np.random.default_rng(5 + (dt == np.int8))
    A, B = _every_pair(dt, dt)
    a, b = ORT_SHAPES[shape](A, B)
    m = _mid(dt)
    cases = [(0.5, _zp(rng, dt) // 4, 0.125, _zp(rng, dt) // 4, 2.0 ** -3, _odd_zp(rng, dt)),
             (1.0, m + 1, 1.0, m - 2, 6.0, _zp(rng, dt)),
             (0.1, m, 0.3, m + 3, 0.18, _zp(rng, dt)),
             (0.1, m - 1, 0.2, m, 0.12, _zp(rng, dt)),
             (0.0371, _zp(rng, dt), 0.0123, _zp(rng, dt), 0.0107, _zp(rng, dt)),
             (1.0, 0, 1.0, 0, 2.0 ** -17, 0)]
    told = {"reference": 0, "fma": 0, "ratio": 0, "clamp": 0}
    for sa, za, sb, zb, sy, zy in cases:
        want = ref_mul_ort(a, sa, za, b, sb, zb, sy, dt(zy), dt)
        others = ort_alternatives(a, sa, za, b, sb, zb, sy, zy, dt)
        others["reference"] = ref_mul(a, sa, za, b, sb, zb, sy, zy, dt)
        for fused in (False, True):
            s = _ort_session(dt, a.shape, b.shape, sa, za, sb, zb, sy, zy, fused)
            y = s.run(None, {"a": a, "b": b})[0]
            label = f"{shape} fused={fused} {(sa, za, sb, zb, sy, zy)}"
            assert_equal_exact(want, y, f"NumPy reference vs onnxruntime {label}")
            for k in told:
                told[k] += int((others[k] != y).sum()) if fused else 0
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa):
                    got = _call(a, sa, za, b, sb, zb, sy, dt(zy), "onnxruntime")
                assert_equal_exact(got, y, f"{isa} {label}")
    if shape == "same":
        assert all(told.values()), told


# ---- 5: shapes, strides, out= ----

@pytest.mark.parametrize("arith", ["reference", "onnxruntime"])
def test_broadcasting_and_degenerate_shapes(arith):
    rng = np.random.default_rng(31)
    ref = {"reference": ref_mul, "onnxruntime": ref_mul_ort}[arith]
    params = (0.05, 3, 0.07, -2, 0.02, 9)
    for sa_shape, sb_shape in (((3, 1, 5), (1, 4, 1)), ((4,), (2, 3, 4)), ((2, 3, 4), ()),
                               ((), (17,)), ((), ()), ((6, 1), (1, 70)), ((0,), (1,)),
                               ((3, 0), (1,)), ((3, 0), (3, 1)), ((0, 5), (5,))):
        a, b = _rand(rng, sa_shape, np.int8), _rand(rng, sb_shape, np.int8)
        want = ref(a, 0.05, 3, b, 0.07, -2, 0.02, 9, np.int8)
        assert want.shape == np.broadcast_shapes(sa_shape, sb_shape)
        for isa in SUPPORTED_ISAS:
            with isa_cap(isa):
                got = qc.qlinear_mul(a, 0.05, np.int8(3), b, 0.07, np.int8(-2), 0.02,
                                     np.int8(9), arithmetic=arith)
            assert isinstance(got, np.ndarray)
            assert_equal_exact(got, want, f"{isa} {sa_shape} * {sb_shape} {params}")


def test_output_dtype_rules():
    """The output dtype is y_zero_point's when it is a NumPy integer (scalar or 0-d array),
    else a's (a Python int or None as zero point)."""
    a = np.arange(-8, 8, dtype=np.int8)
    b = np.arange(16, dtype=np.uint8)
    for zy, dt in ((np.uint8(7), np.uint8), (np.int8(7), np.int8), (np.array(7, np.uint8),
                                                                     np.uint8), (7, np.int8)):
        got = qc.qlinear_mul(a, 0.5, 0, b, 0.5, 0, 0.25, zy)
        assert got.dtype == dt
        assert_equal_exact(got, ref_mul(a, 0.5, 0, b, 0.5, 0, 0.25, 7, dt), f"zy={zy!r}")
    got = qc.qlinear_mul(b, 0.5, 0, a, 0.5, 0, 0.25, None)
    assert_equal_exact(got, ref_mul(b, 0.5, 0, a, 0.5, 0, 0.25, 0, np.uint8), "zy=None")


def test_noncontiguous_and_negative_strides():
    rng = np.random.default_rng(8)
    A = _rand(rng, (40, 30), np.uint8)
    B = _rand(rng, (42, 30), np.int8)
    cases = [(A[::-3, ::2], B[1::3, 1::2][::-1]), (A.T[::2], B[:40].T[::2]),
             (A[:, ::-1], B[2:, ::-1]), (A[::-1, 5], B[:40, ::-7][:, :1])]
    for a, b in cases:
        assert not (a.flags.c_contiguous and b.flags.c_contiguous)
        for arith, ref in (("reference", ref_mul), ("onnxruntime", ref_mul_ort)):
            want = ref(np.ascontiguousarray(a), 0.1, 128, np.ascontiguousarray(b), 0.2, -5,
                       0.25, 3, np.int8)
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa):
                    got = qc.qlinear_mul(a, 0.1, np.uint8(128), b, 0.2, np.int8(-5), 0.25,
                                         np.int8(3), arithmetic=arith)
                assert_equal_exact(got, want, f"{isa} {arith} {a.strides} {b.strides}")


@pytest.mark.parametrize("arith", ["reference", "onnxruntime"])
def test_out_argument(arith):
    rng = np.random.default_rng(12)
    a, b = _rand(rng, (5, 70), np.uint8), _rand(rng, (1, 70), np.uint8)
    args = (a, 0.03, np.uint8(120), b, 0.05, np.uint8(7), 0.011, np.uint8(131))
    want = qc.qlinear_mul(*args, arithmetic=arith)
    assert_equal_exact(want, {"reference": ref_mul, "onnxruntime": ref_mul_ort}[arith](
        a, 0.03, 120, b, 0.05, 7, 0.011, 131, np.uint8), arith)
    out = np.full((5, 70), 77, np.uint8)
    got = qc.qlinear_mul(*args, arithmetic=arith, out=out)
    assert got is out
    assert_equal_exact(out, want, "out=")
    # 0-d output into a 0-d out
    out0 = np.zeros((), np.uint8)
    got = qc.qlinear_mul(a[0, 0], 0.03, np.uint8(120), b[0, 0], 0.05, np.uint8(7), 0.011,
                         np.uint8(131), arithmetic=arith, out=out0)
    assert got is out0 and out0 == want[0, 0]
    for bad in (np.empty((5, 69), np.uint8), np.empty((70,), np.uint8),
                np.empty((5, 70), np.int8), np.empty((5, 70), np.float32),
                np.empty((5, 140), np.uint8)[:, ::2]):
        before = bad.copy()
        with pytest.raises(ValueError, match=r"^out: "):
            qc.qlinear_mul(*args, arithmetic=arith, out=bad)
        assert_equal_exact(bad.view(np.uint8), before.view(np.uint8), "untouched on error")
    ro = np.empty((5, 70), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: "):
        qc.qlinear_mul(*args, arithmetic=arith, out=ro)
    with pytest.raises(TypeError, match=r"^out: "):
        qc.qlinear_mul(*args, arithmetic=arith, out=[0] * 350)


@pytest.mark.parametrize("arith", ["reference", "onnxruntime"])
def test_out_overlapping_inputs(arith):
    """out= that is an input, or shares part of its memory, gives what NumPy would: the result
    of the inputs as they were before the call."""
    rng = np.random.default_rng(13)
    n = 1000
    base_a = _rand(rng, n + 128, np.uint8)
    base_b = _rand(rng, n + 128, np.uint8)
    kw = dict(arithmetic=arith)

    def run(a, b, out=None):
        return qc.qlinear_mul(a, 0.05, np.uint8(100), b, 0.04, np.uint8(90), 0.03,
                              np.uint8(11), out=out, **kw)

    for isa in SUPPORTED_ISAS:
        with isa_cap(isa):
            # out is a itself, b itself, or both
            for which in ("a", "b", "ab"):
                a = base_a[:n].copy()
                b = a if which == "ab" else base_b[:n].copy()
                want = run(a.copy(), b.copy())
                out = b if which == "b" else a
                got = run(a, b, out=out)
                assert got is out
                assert_equal_exact(got, want, f"{isa} out={which}")
            # partial overlaps, shifted either way, with a and with b
            for shift in (-17, -1, 1, 5, 33):
                for target in ("a", "b"):
                    ba, bb = base_a.copy(), base_b.copy()
                    a, b = ba[64:64 + n], bb[64:64 + n]
                    want = run(a.copy(), b.copy())
                    buf = ba if target == "a" else bb
                    out = buf[64 + shift:64 + shift + n]
                    got = run(a, b, out=out)
                    assert got is out
                    assert_equal_exact(got, want, f"{isa} shift={shift} into {target}")
            # a broadcast input (b of shape (1, n)) written over by a 2-D out sharing a's buffer
            a2 = base_a[:4 * 250].reshape(4, 250).copy()
            b2 = base_b[:250].reshape(1, 250).copy()
            want = run(a2.copy(), b2.copy())
            got = run(a2, b2, out=a2)
            assert_equal_exact(got, want, f"{isa} broadcast out=a")
            # above QC_CHUNK elements, on two threads: out one byte past a
            big = _rand(rng, 2 * QC_CHUNK + 101, np.uint8)
            bb = _rand(rng, 2 * QC_CHUNK + 100, np.uint8)
            want = run(big[:-1].copy(), bb)
            with num_threads(2):
                got = run(big[:-1], bb, out=big[1:])
            assert_equal_exact(got, want, f"{isa} large, out shifted by one")
            # reversed view of the same buffer
            a = base_a[:n].copy()
            b = base_b[:n].copy()
            want = run(a[::-1].copy(), b)
            got = run(a[::-1], b, out=a)
            assert_equal_exact(got, want, f"{isa} out=a, a reversed")


def test_inputs_never_modified():
    rng = np.random.default_rng(14)
    for adt, bdt, ydt in COMBOS:
        a, b = _rand(rng, (3, 1000), adt), _rand(rng, (1000,), bdt)
        ca, cb = a.copy(), b.copy()
        for arith in ("reference", "onnxruntime"):
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa):
                    _call(a, 0.1, 1, b, 0.2, 2, 0.3, ydt(3), arith)
                    _call(a[:, ::-2], 0.1, 1, b[::-2], 0.2, 2, 0.3, ydt(3), arith)
                    _call(a, 1e18, 1, b, 1e18, 2, 1.0, ydt(3), arith)
            assert_equal_exact(a, ca, "a modified")
            assert_equal_exact(b, cb, "b modified")


# ---- 6: bad input ----

U0 = np.uint8(0)
X = np.arange(10, dtype=np.uint8)


def _mul(**over):
    kw = dict(a=X, a_scale=0.5, a_zero_point=U0, b=X, b_scale=0.5, b_zero_point=U0,
              y_scale=0.25, y_zero_point=U0)
    kw.update(over)
    arith = kw.pop("arithmetic", "reference")
    out = kw.pop("out", None)
    return qc.qlinear_mul(**kw, arithmetic=arith, out=out)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"^b: expected a shape broadcastable with a"):
        _mul(b=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"^b: expected a shape broadcastable with a"):
        _mul(a=np.zeros((2, 3), np.uint8), b=np.zeros((3, 2), np.uint8))
    for name, bad in (("a", X.astype(np.float32)), ("b", X.astype(np.float32)),
                      ("a", X.astype(np.int32)), ("b", X.astype(np.int16)),
                      ("a", X.astype(np.uint16)), ("b", X.astype(np.float64)),
                      ("a", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])):
        with pytest.raises((TypeError, ValueError), match=rf"^{name}: "):
            _mul(**{name: bad})
    # zero points of another dtype than their tensors'
    with pytest.raises((TypeError, ValueError), match=r"^a_zero_point: "):
        _mul(a_zero_point=np.int8(0))
    with pytest.raises((TypeError, ValueError), match=r"^b_zero_point: "):
        _mul(b_zero_point=np.int8(0))
    with pytest.raises((TypeError, ValueError), match=r"^y_zero_point: "):
        _mul(y_zero_point=np.int16(0))
    with pytest.raises((TypeError, ValueError), match=r"^y_zero_point: "):
        _mul(y_zero_point=np.float32(0))


@pytest.mark.parametrize("arith", ["reference", "onnxruntime"])
def test_bad_scales_and_zero_points(arith):
    for name in ("a_scale", "b_scale", "y_scale"):
        for bad in (0.0, -0.5, -np.inf, np.inf, np.nan, np.float32(np.nan)):
            with pytest.raises(ValueError, match=rf"^{name}: "):
                _mul(**{name: bad}, arithmetic=arith)
        with pytest.raises(ValueError, match=rf"^{name}: "):
            _mul(**{name: [0.5, 0.5]}, arithmetic=arith)
        with pytest.raises(TypeError, match=rf"^{name}: "):
            _mul(**{name: None}, arithmetic=arith)
    for name, bad in (("a_zero_point", 256), ("a_zero_point", -1), ("b_zero_point", 300),
                      ("y_zero_point", 256), ("y_zero_point", -129)):
        with pytest.raises(ValueError, match=rf"^{name}: "):
            _mul(**{name: bad}, arithmetic=arith)
    s8 = X.view(np.int8)
    for name, bad in (("a_zero_point", 128), ("b_zero_point", -129), ("y_zero_point", 200)):
        kw = dict(a_zero_point=0, b_zero_point=0, y_zero_point=0)
        kw[name] = bad
        with pytest.raises(ValueError, match=rf"^{name}: "):
            _mul(a=s8, b=s8, **kw, arithmetic=arith)
    with pytest.raises(ValueError, match=r"^y_zero_point: "):
        _mul(y_zero_point=np.array([1, 2], np.uint8), arithmetic=arith)


def test_bad_arithmetic():
    for bad in ("foo", "ONNXRUNTIME", None, 1):
        with pytest.raises(ValueError, match=r"^arithmetic: "):
            _mul(arithmetic=bad)


def test_scale_overflow_checks():
    """255 * scale overflowing float32 is refused in both arithmetics; an infinite
    onnxruntime ratio only in that arithmetic (the reference saturates instead)."""
    for arith in ("reference", "onnxruntime"):
        for over in (dict(a_scale=1e37), dict(b_scale=1e37), dict(a_scale=3e38, b_scale=3e38)):
            with pytest.raises(ValueError, match=r"^a_scale, b_scale: "):
                _mul(**over, arithmetic=arith)
    big = dict(a_scale=1e30, b_scale=1e30, y_scale=1.0)
    with pytest.raises(ValueError, match=r"a_scale \* b_scale, y_scale"):
        _mul(**big, arithmetic="onnxruntime")
    # finite product, infinite quotient
    with pytest.raises(ValueError, match=r"a_scale \* b_scale, y_scale"):
        _mul(a_scale=1e19, b_scale=1e19, y_scale=1e-3, arithmetic="onnxruntime")
    want = ref_mul(X, 1e30, 0, X, 1e30, 0, 1.0, 0, np.uint8)
    assert_equal_exact(want, np.array([0] + [255] * 9, np.uint8), "numpy ref")
    for isa in SUPPORTED_ISAS:
        with isa_cap(isa):
            assert_equal_exact(_mul(**big), want, isa)
            s8 = (X.astype(np.int16) - 5).astype(np.int8)
            assert_equal_exact(_mul(a=s8, b=X, a_zero_point=np.int8(0), **big,
                                    y_zero_point=np.int8(0)),
                               ref_mul(s8, 1e30, 0, X, 1e30, 0, 1.0, 0, np.int8), isa)


# ---- broadcast operands without a broadcast copy ----

# (a shape, b shape): b each element for a run of a's (rep > 1, the kernel's chunk fill), a
# over b (qlinear_mul swaps them), and shapes that need np.broadcast_arrays
REPEAT_SHAPES = [((2, 8, 5, 7), (2, 8, 1, 1)), ((3, 4, 5), (3, 1, 1)), ((7, 33), (1,)),
                 ((2, 300, 300), (2, 1, 1)),              # runs longer than a 65536 chunk
                 ((3, 21845, 3), (3, 21845, 1)),          # chunks end inside a run
                 ((2, 8, 1, 1), (2, 8, 5, 7)), ((), (4, 4)), ((1, 1), (3, 5)),
                 ((3, 1), (1, 4)), ((2, 1, 5), (2, 3, 1)), ((2, 8, 5, 7), (8, 1, 1))]


@pytest.mark.parametrize("op", ["mul", "add"])
@pytest.mark.parametrize("shapes", REPEAT_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_broadcast_operands_every_isa(op, shapes, monkeypatch):
    """A broadcast operand (an SE gate's (N, C, 1, 1), a one-element one) is read as it is,
    each element for its run of the other's (no np.broadcast_arrays copy: checked); every
    ISA, both arithmetics, equals the same call on np.broadcast_to copies (same shapes), and
    the operands are left as they were."""
    rng = np.random.default_rng(sum(map(len, shapes)) + (op == "add"))
    i = REPEAT_SHAPES.index(shapes)
    no_copy = i < 5 or (op == "mul" and i < 8)  # (mul swaps a broadcast a, one dtype only)
    real = np.broadcast_arrays

    def counted(*args, **kw):
        copies.append(1)
        return real(*args, **kw)
    f = qc.qlinear_mul if op == "mul" else qc.qlinear_add
    for adt, bdt, ydt in ((np.uint8, np.uint8, np.uint8), (np.int8, np.int8, np.int8),
                          (np.uint8, np.int8, np.int8)):
        a, b = _rand(rng, shapes[0], adt), _rand(rng, shapes[1], bdt)
        a0, b0 = a.copy(), b.copy()
        full = np.broadcast_shapes(a.shape, b.shape)
        af, bf = np.broadcast_to(a, full).copy(), np.broadcast_to(b, full).copy()
        sa, sb, sy = rng.uniform(0.01, 0.1, 3).astype(np.float32)
        za, zb, zy = adt(_zp(rng, adt)), bdt(_zp(rng, bdt)), ydt(_zp(rng, ydt))
        for arith in ("reference", "onnxruntime"):
            want = f(af, sa, za, bf, sb, zb, sy, zy, arithmetic=arith)
            if op == "mul":
                assert_equal_exact(want, ref_mul_ort(af, sa, za, bf, sb, zb, sy, zy, ydt)
                                   if arith == "onnxruntime" else
                                   ref_mul(af, sa, za, bf, sb, zb, sy, zy, ydt), "reference")
            for isa in SUPPORTED_ISAS:
                copies = []
                with isa_cap(isa), num_threads(2), monkeypatch.context() as mp:
                    mp.setattr(np, "broadcast_arrays", counted)
                    got = f(a, sa, za, b, sb, zb, sy, zy, arithmetic=arith)
                assert_equal_exact(got, want, f"{op} {shapes} {arith} {isa}")
                assert bool(copies) == (not no_copy or (op == "mul" and i >= 5 and
                                                        adt != bdt)), copies
        np.testing.assert_array_equal(a, a0)
        np.testing.assert_array_equal(b, b0)


def test_broadcast_operand_out_overlap():
    """out= sharing memory with the broadcast operand (b's run values are read before out is
    written: the overlap is handled through a temporary) gives the non-overlapping result."""
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 4 * 8 * 9 + 8, dtype=np.uint8)
    a = rng.integers(0, 256, (4, 8, 3, 3), dtype=np.uint8)
    for f in (qc.qlinear_mul, qc.qlinear_add):
        gate = buf[:4 * 8].reshape(4, 8, 1, 1)
        want = f(a, 0.05, np.uint8(3), gate.copy(), 0.01, np.uint8(7), 0.02, np.uint8(9))
        out = buf[8:].reshape(4, 8, 3, 3)  # starts inside the gate's bytes
        got = f(a, 0.05, np.uint8(3), gate, 0.01, np.uint8(7), 0.02, np.uint8(9), out=out)
        assert got is out
        assert_equal_exact(out, want, f.__name__)
        buf = rng.integers(0, 256, 4 * 8 * 9 + 8, dtype=np.uint8)


def test_broadcast_operand_size_checked():
    """The kernel's repeat count is checked against the operands' sizes (the binding is
    private, but nothing past b may be read)."""
    from quantc import _C
    a = np.zeros((2, 3, 4), np.uint8)
    for rep, b in ((4, np.zeros(5, np.uint8)), (5, np.zeros(6, np.uint8)),
                   (0, np.zeros(24, np.uint8)), (-3, np.zeros(24, np.uint8))):
        for call in (lambda: _C._qlinear_mul(a, 0.1, 0, b, 0.1, 0, 0.1, 0, None, False, rep),
                     lambda: _C._qlinear_add(a, 0.1, 0, b, 0.1, 0, 0.1, 0, False, None, False,
                                             rep)):
            with pytest.raises(ValueError, match="^b: expected"):
                call()


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's redzones multiply every stack frame")
def test_small_thread_stack():
    """The element-wise kernels run on the calling thread too (one thread here), whose stack
    may be small (64 KiB here; a kernel frame as large as that overflows it): same-shape and
    broadcast add / mul and the table lookup finish with the results of a normal thread (in a
    subprocess: a stack overflow would kill it, not the test run)."""
    import subprocess
    import sys
    code = """
import threading, numpy as np, quantc as qc
from quantc import _C
qc.set_num_threads(1)
rng = np.random.default_rng(0)
a = rng.integers(0, 256, (2, 64, 40, 40), dtype=np.uint8)
b = rng.integers(0, 256, (2, 64, 1, 1), dtype=np.uint8)
t = rng.integers(0, 256, 256, dtype=np.uint8)
def run():
    args = (0.02, np.uint8(3), b, 0.05, np.uint8(9), 0.03, np.uint8(5))
    return [f(a, *args, arithmetic=ar) for f in (qc.qlinear_add, qc.qlinear_mul)
            for ar in ("reference", "onnxruntime")] + \\
           [qc.qlinear_add(a, 0.02, np.uint8(3), a, 0.05, np.uint8(9), 0.03, np.uint8(5)),
            qc.qlinear_mul(a, 0.02, np.uint8(3), a, 0.05, np.uint8(9), 0.03, np.uint8(5)),
            _C._lut8(a, t)]
want = run()
got = []
threading.stack_size(65536)
th = threading.Thread(target=lambda: got.extend(run()))
th.start(); th.join()
assert len(got) == len(want) and all((g == w).all() for g, w in zip(got, want))
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_errors_name_the_arguments_as_given_when_a_is_broadcast():
    """qlinear_mul reads a broadcast a by swapping the operands; a bad argument is still named
    as the caller gave it."""
    gate = np.zeros((2, 3, 1, 1), np.uint8)
    x = np.zeros((2, 3, 4, 4), np.uint8)
    ok = (0.1, np.uint8(0))
    with pytest.raises(ValueError, match="^a_scale"):
        qc.qlinear_mul(gate, -1.0, np.uint8(0), x, *ok, *ok)
    with pytest.raises(ValueError, match="^b_scale"):
        qc.qlinear_mul(gate, *ok, x, float("nan"), np.uint8(0), *ok)
    with pytest.raises((TypeError, ValueError), match="^a_zero_point"):
        qc.qlinear_mul(gate, 0.1, np.int8(0), x, *ok, *ok)
    with pytest.raises(ValueError, match="^out"):
        qc.qlinear_mul(gate, *ok, x, *ok, *ok, out=np.zeros((2, 3, 1, 1), np.uint8))
