"""Conversion kernels: round, clamp, saturate_cast, to_float16, to/from_bfloat16.

Every ISA variant this CPU runs is compared bit for bit with the scalar kernel, and the scalar
kernel with the NumPy references below, over random data and chosen edges.
"""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantc as qc
from conftest import assert_equal_exact, isa_cap, num_threads

MODES = ["half_even", "half_away", "half_up", "floor", "ceil", "trunc"]
INT_TYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
SIZES = [0, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000, 4099]
LARGE = 3 * (1 << 16) + 17  # three threading chunks and a ragged end


# ---------------------------------------------------------------- NumPy references


def ref_round(x, mode):
    """The six modes in NumPy; half_away and half_up via float64, where x + 0.5 is exact."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
        if mode == "half_even":
            return np.rint(x)
        if mode == "half_away":
            return np.copysign(np.floor(np.abs(x64) + 0.5), x64).astype(np.float32)
        if mode == "half_up":
            return np.floor(x64 + 0.5).astype(np.float32)
        return getattr(np, mode)(x)


def ref_clamp(x, lo, hi):
    """np.clip's meaning, spelled out: NaN compares false both ways and stays."""
    x = np.asarray(x)
    lo = np.asarray(lo, x.dtype)
    hi = np.asarray(hi, x.dtype)
    return np.where(x < lo, lo, np.where(x > hi, hi, x)).astype(x.dtype)


def ref_saturate(x, dtype):
    info = np.iinfo(dtype)
    x = np.asarray(x)
    if x.dtype == np.uint64:
        return np.minimum(x, np.uint64(info.max)).astype(dtype)
    w = x.astype(np.int64)
    return np.clip(w, max(info.min, -2**63), min(info.max, 2**63 - 1)).astype(dtype)


def ref_f16_nan_bits(x):
    """vcvtps2ph's NaN: quiet, sign and the top 10 payload bits kept."""
    b = np.asarray(x, np.float32).view(np.uint32)
    return (((b >> 16) & 0x8000) | 0x7E00 | ((b >> 13) & 0x3FF)).astype(np.uint16)


def ref_bf16(x):
    """Round to nearest even on the float32 bits; NaN quieted with its sign."""
    b = np.asarray(x, np.float32).view(np.uint32)
    r = ((b + np.uint32(0x7FFF) + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    r[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return r


# ---------------------------------------------------------------- data


def f32_bits(*bits):
    return np.array(bits, np.uint32).view(np.float32)


def ties_and_neighbors():
    t = np.array([k + 0.5 for k in range(-12, 12)] + [2**22 + 0.5, -(2**22) - 0.5,
                                                       2**23 - 0.5, -(2**23) + 0.5], np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(np.inf)),
                           np.nextafter(t, np.float32(-np.inf))])


def edge_floats():
    fmin = np.finfo(np.float32)
    vals = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 2.0**23, -(2.0**23),
                     2.0**24 + 2, fmin.max, -fmin.max, fmin.tiny, -fmin.tiny,
                     0.49999997, -0.49999997, 0.5, -0.5, 1e-45, -1e-45,
                     # float16: max, the overflow tie, one ulp either side, the denormal range
                     65504.0, 65519.996, 65520.0, 65520.004, -65520.0, 65536.0,
                     2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 3 * 2.0**-25, 5 * 2.0**-26,
                     6.1e-5, -6.1e-5], np.float32)
    bits = f32_bits(
        0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC00001, 0x7FBFFFFF, 0x7FFFFFFF,  # NaNs
        0x33000000, 0x33000001, 0x32FFFFFF, 0xB3000001,  # 2^-25 and neighbours (f16 zero tie)
        0x387FF000, 0x387FEFFF, 0x387FF001,  # round up into the smallest f16 normal
        0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,  # bf16 ties (even down, odd up)
        0x7F7F8000, 0x7F7F7FFF, 0xFF7F8000, 0x7F7FFFFF,  # bf16 overflow to inf / just below
        0x00008000, 0x00018000, 0x00007FFF, 0x80018000, 0x007FFFFF, 0x00000001,  # denormals
    )
    return np.concatenate([vals, bits, ties_and_neighbors()])


def random_floats(rng, n):
    """A mix: arbitrary bit patterns (NaN, inf, denormals), ties, and ordinary values."""
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = (rng.integers(-100, 100, n) + 0.5).astype(np.float32)
    normal = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(np.float32)
    pick = rng.integers(0, 3, n)
    return np.where(pick == 0, bits, np.where(pick == 1, ties, normal)).astype(np.float32)


def bits_of(a):
    a = np.asarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_same_bits(got, want, context):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{context}: dtype {got.dtype} != {want.dtype}"
    assert_equal_exact(bits_of(got), bits_of(want), context)


def scalar_result(fn, *args, **kw):
    with isa_cap("scalar"):
        return fn(*args, **kw)


def check_variant(fn, *args, context="", **kw):
    """fn under the current ISA cap equals fn under the scalar cap, bit for bit."""
    got = fn(*args, **kw)
    want = scalar_result(fn, *args, **kw)
    assert_same_bits(got, want, f"{context} vs scalar")
    return got


# ---------------------------------------------------------------- registry


def test_families_registered():
    info = qc.cpu_info()
    for fam in ["round", "clamp", "saturate_cast", "to_float16", "bfloat16"]:
        names = [v[0] for v in info["variants"][fam]]
        assert names[-1] == f"{fam}__scalar"
        assert info["kernels"][fam] in names


def test_isa_fixture_selects_variant(isa):
    order = ["scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "amx"]
    best = "avx512" if order.index(isa) >= order.index("avx512") else (
        "avx2" if order.index(isa) >= order.index("avx2") else "scalar")
    assert qc.cpu_info()["kernels"]["round"] == f"round__{best}"


# ---------------------------------------------------------------- round


@pytest.mark.parametrize("mode", MODES)
def test_round_edges(isa, mode):
    x = edge_floats()
    got = check_variant(qc.round, x, mode, context=f"round {mode} {isa}")
    assert_equal_exact(got, ref_round(x, mode), f"round {mode} edges vs numpy")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", SIZES)
def test_round_sizes(isa, mode, n, rng):
    x = random_floats(rng, n)
    got = check_variant(qc.round, x, mode, context=f"round {mode} n={n} {isa}")
    assert_equal_exact(got, ref_round(x, mode), f"round {mode} n={n} vs numpy")


def test_round_half_up_is_exact():
    x = np.float32(0.49999997)
    assert float(np.floor(x + np.float32(0.5))) == 1.0  # the naive float32 formula is wrong
    assert qc.round(x, "half_up") == 0.0
    assert qc.round(np.float32(-0.5), "half_up") == 0.0
    assert not np.signbit(qc.round(np.float32(-0.25), "half_up"))
    assert np.signbit(qc.round(np.float32(-0.25), "half_away"))
    assert np.signbit(qc.round(np.float32(-0.25), "half_even"))


def test_round_ties_each_mode():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32)
    want = {
        "half_even": [-2, -2, -0.0, 0, 2, 2], "half_away": [-3, -2, -1, 1, 2, 3],
        "half_up": [-2, -1, 0, 1, 2, 3], "floor": [-3, -2, -1, 0, 1, 2],
        "ceil": [-2, -1, -0.0, 1, 2, 3], "trunc": [-2, -1, -0.0, 0, 1, 2],
    }
    for mode, w in want.items():
        assert_equal_exact(qc.round(x, mode), np.array(w, np.float32), mode)


def test_round_input_types():
    assert qc.round(np.array([1.5, 2.5], np.float64)).dtype == np.float32
    assert_equal_exact(qc.round(np.array([1.5, 2.5], np.float16)), np.array([2, 2], np.float32))
    assert_equal_exact(qc.round([1, 2, 3]), np.array([1, 2, 3], np.float32))
    assert_equal_exact(qc.round(2.5), np.array(2.0, np.float32))


# ---------------------------------------------------------------- clamp


@pytest.mark.parametrize("n", SIZES)
def test_clamp_float(isa, n, rng):
    x = random_floats(rng, n)
    for lo, hi in [(-1.0, 1.0), (0.0, 0.0), (-np.inf, 3.5), (-0.0, np.inf), (None, 2.0)]:
        got = check_variant(qc.clamp, x, lo, hi, context=f"clamp f32 n={n} [{lo}, {hi}] {isa}")
        want = ref_clamp(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
        assert_equal_exact(got, want, f"clamp f32 n={n} vs numpy")
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(got, np.clip(x, lo, hi))


def test_clamp_float_edges(isa):
    x = edge_floats()
    got = check_variant(qc.clamp, x, -2.0, 65504.0, context=f"clamp edges {isa}")
    assert_equal_exact(got, ref_clamp(x, -2.0, 65504.0), "clamp edges vs numpy")
    assert np.isnan(qc.clamp(np.float32(np.nan), 0, 1))  # NaN stays NaN, like np.clip


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000])
def test_clamp_int(isa, dtype, n, rng):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    if n >= 4:
        x[:4] = [info.min, info.max, info.min + 1, info.max - 1]
    mid = (int(info.min) + int(info.max)) // 2
    for lo, hi in [(info.min, info.max), (mid - 3, mid + 3), (info.min, info.min),
                   (info.max, info.max), (mid, None), (None, mid)]:
        got = check_variant(qc.clamp, x, lo, hi, context=f"clamp {dtype.__name__} n={n} {isa}")
        want = ref_clamp(x, info.min if lo is None else lo, info.max if hi is None else hi)
        assert_equal_exact(got, want, f"clamp {dtype.__name__} [{lo}, {hi}] n={n} vs numpy")


def test_clamp_keeps_dtype_and_converts_floats():
    assert qc.clamp(np.arange(5, dtype=np.int16), 1, 3).dtype == np.int16
    assert qc.clamp(np.arange(5, dtype=np.float64), 1, 3).dtype == np.float32
    assert qc.clamp(np.arange(5, dtype=np.float16), 1, 3).dtype == np.float32
    assert_equal_exact(qc.clamp([1, 5, 9], 2, 6), np.array([2, 5, 6], np.int64))
    big = np.array([0, 2**64 - 1], np.uint64)
    assert_equal_exact(qc.clamp(big, 2**63, 2**64 - 2), np.array([2**63, 2**64 - 2], np.uint64))


# ---------------------------------------------------------------- saturate_cast


def int_edges(src):
    info = np.iinfo(src)
    vals = set()
    for d in INT_TYPES:
        di = np.iinfo(d)
        for v in (di.min, di.max):
            for k in (-1, 0, 1):
                if info.min <= int(v) + k <= info.max:
                    vals.add(int(v) + k)
    vals |= {int(info.min), int(info.max), 0}
    return np.array(sorted(vals), dtype=src)


@pytest.mark.parametrize("src", INT_TYPES)
@pytest.mark.parametrize("dst", INT_TYPES)
def test_saturate_cast_pairs(isa, src, dst, rng):
    info = np.iinfo(src)
    edges = int_edges(src)
    for n in [1, 15, 16, 17, 33, 64, 65, 257]:
        x = rng.integers(info.min, info.max, n, dtype=src, endpoint=True)
        x[: min(n, len(edges))] = rng.permutation(edges)[:n]
        got = check_variant(qc.saturate_cast, x, dst,
                            context=f"saturate_cast {src.__name__}->{dst.__name__} n={n} {isa}")
        assert_equal_exact(got, ref_saturate(x, dst),
                           f"saturate_cast {src.__name__}->{dst.__name__} n={n} vs numpy")


def test_saturate_cast_examples():
    assert_equal_exact(qc.saturate_cast(np.array([300, -300, 5], np.int32), "int8"),
                       np.array([127, -128, 5], np.int8))
    assert_equal_exact(qc.saturate_cast(np.array([-5, 256], np.int16), np.uint8),
                       np.array([0, 255], np.uint8))
    assert_equal_exact(qc.saturate_cast(np.array([2**63], np.uint64), "int64"),
                       np.array([2**63 - 1], np.int64))
    assert qc.saturate_cast(np.zeros(0, np.int32), "int8").shape == (0,)


# ---------------------------------------------------------------- float16


@pytest.mark.parametrize("n", SIZES)
def test_to_float16_sizes(isa, n, rng):
    x = random_floats(rng, n)
    got = check_variant(qc.to_float16, x, context=f"to_float16 n={n} {isa}")
    check_f16_reference(x, got, f"to_float16 n={n}")


def check_f16_reference(x, got, context):
    assert got.dtype == np.float16
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.asarray(x, np.float32).astype(np.float16)
    nan = np.isnan(np.asarray(x, np.float32))
    want_bits = np.where(nan, ref_f16_nan_bits(x), bits_of(want))
    assert_equal_exact(bits_of(got), want_bits, f"{context} vs numpy astype(float16)")


def test_to_float16_edges(isa):
    x = edge_floats()
    got = check_variant(qc.to_float16, x, context=f"to_float16 edges {isa}")
    check_f16_reference(x, got, "to_float16 edges")
    b = bits_of(qc.to_float16(np.array([65504, 65519.996, 65520, -65520, 2.0**-25, 2.0**-24],
                                        np.float32)))
    assert list(b) == [0x7BFF, 0x7BFF, 0x7C00, 0xFC00, 0x0000, 0x0001]


def test_to_float16_every_float16(isa):
    """Every float16 value survives float16 -> float32 -> to_float16 unchanged."""
    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got = qc.to_float16(h.astype(np.float32))
    finite = ~np.isnan(h)
    assert_equal_exact(bits_of(got)[finite], bits_of(h)[finite], "float16 round trip")


# ---------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("n", SIZES)
def test_to_bfloat16_sizes(isa, n, rng):
    x = random_floats(rng, n)
    got = check_variant(qc.to_bfloat16, x, context=f"to_bfloat16 n={n} {isa}")
    assert_equal_exact(got, ref_bf16(x), f"to_bfloat16 n={n} vs reference")


def test_to_bfloat16_edges(isa):
    x = edge_floats()
    got = check_variant(qc.to_bfloat16, x, context=f"to_bfloat16 edges {isa}")
    assert_equal_exact(got, ref_bf16(x), "to_bfloat16 edges vs reference")
    b = qc.to_bfloat16(f32_bits(0x3F808000, 0x3F818000, 0x7F7F8000, 0x00008000, 0x00018000,
                                0x7F800001, 0xFF800001, 0x7F800000))
    assert list(b) == [0x3F80, 0x3F82, 0x7F80, 0x0000, 0x0002, 0x7FC0, 0xFFC0, 0x7F80]


def test_to_bfloat16_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = np.concatenate([edge_floats(), random_floats(rng, 100_000)])
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = qc.to_bfloat16(x)
    nan = np.isnan(x)
    assert_equal_exact(got[~nan], want[~nan], "to_bfloat16 vs torch")
    assert np.all(np.isnan(qc.from_bfloat16(got[nan])))  # torch canonicalizes NaN to 0x7FC0


def test_from_bfloat16_all_patterns(isa):
    b = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    got = check_variant(qc.from_bfloat16, b, context=f"from_bfloat16 {isa}")
    assert_equal_exact(bits_of(got), b.astype(np.uint32) << 16, "from_bfloat16 = bits << 16")
    for n in SIZES:
        check_variant(qc.from_bfloat16, b[:n], context=f"from_bfloat16 n={n} {isa}")


def test_bfloat16_round_trip(rng):
    b = rng.integers(0, 2**16, 5000, dtype=np.uint16)
    b = b[~np.isnan(qc.from_bfloat16(b))]
    assert_equal_exact(qc.to_bfloat16(qc.from_bfloat16(b)), b, "bf16 -> f32 -> bf16")


# ---------------------------------------------------------------- layouts, threads, out=

CASES = [
    ("round", lambda x: qc.round(x, "half_away")),
    ("clamp", lambda x: qc.clamp(x, -1.0, 1.0)),
    ("to_float16", qc.to_float16),
    ("to_bfloat16", qc.to_bfloat16),
]


@pytest.mark.parametrize("name,fn", CASES)
def test_layouts(isa, name, fn, rng):
    base = random_floats(rng, 6 * 37).reshape(6, 37)
    views = {"strided": base[:, ::3], "negative": base[::-1, ::-2], "fortran": np.asfortranarray(base),
             "zero_d": base[2, 5].reshape(()), "empty": base[:0], "float64": base.astype(np.float64)}
    for vname, v in views.items():
        before = v.copy()
        got = fn(v)
        assert got.shape == v.shape, f"{name} {vname}"
        assert_same_bits(got, fn(np.array(v, np.float32, order="C")), f"{name} {vname}")
        assert_same_bits(v, before, f"{name} {vname}: input modified")


def test_int_layouts(isa, rng):
    base = rng.integers(-(2**31), 2**31, (5, 40), dtype=np.int32)
    for v in [base[:, ::2], base[::-1, ::-3], base.T, base[1, 2].reshape(())]:
        before = v.copy()
        assert_equal_exact(qc.saturate_cast(v, "int8"), ref_saturate(v, np.int8), "layout")
        assert_equal_exact(qc.clamp(v, -5, 5), ref_clamp(v, -5, 5), "layout")
        assert_equal_exact(v, before, "input modified")
    b16 = np.arange(0, 2**16, 7, dtype=np.uint16)
    assert_same_bits(qc.from_bfloat16(b16.astype(">u2")), qc.from_bfloat16(b16), "big-endian bits")
    assert_same_bits(qc.to_float16(b16.astype(">f4")), qc.to_float16(b16.astype(np.float32)),
                     "big-endian float")
    swapped = base.astype(">i4")
    assert_equal_exact(qc.saturate_cast(swapped, "int16"), ref_saturate(base, np.int16), "big-endian")
    assert_equal_exact(qc.clamp(swapped, -9, 9), ref_clamp(base, -9, 9), "big-endian")


@pytest.mark.parametrize("name", ["round", "clamp", "clamp_int", "saturate_cast", "to_float16",
                                  "to_bfloat16", "from_bfloat16"])
def test_threads_identical(isa, name, rng):
    x = random_floats(rng, LARGE)
    i = rng.integers(-(2**31), 2**31, LARGE, dtype=np.int32)
    fn = {
        "round": lambda: qc.round(x, "half_up"), "clamp": lambda: qc.clamp(x, -3.0, 3.0),
        "clamp_int": lambda: qc.clamp(i, -1000, 1000), "saturate_cast": lambda: qc.saturate_cast(i, "int16"),
        "to_float16": lambda: qc.to_float16(x), "to_bfloat16": lambda: qc.to_bfloat16(x),
        "from_bfloat16": lambda: qc.from_bfloat16(qc.to_bfloat16(x)),
    }[name]
    with num_threads(1):
        one = fn()
    with num_threads(2):
        two = fn()
    assert_same_bits(two, one, f"{name}: 2 threads vs 1")
    assert_same_bits(one, scalar_result(fn), f"{name}: {isa} vs scalar")


def test_concurrent_python_threads(rng):
    """Several Python threads calling at once (the GIL is released in the kernels)."""
    from concurrent.futures import ThreadPoolExecutor
    xs = [random_floats(rng, LARGE) for _ in range(4)]
    want = [qc.to_bfloat16(x) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(qc.to_bfloat16, xs * 3))
    for k, g in enumerate(got):
        assert_equal_exact(g, want[k % 4], f"thread call {k}")


def test_out_argument(rng):
    x = random_floats(rng, 100)
    out = np.empty(100, np.float32)
    r = qc.round(x, "floor", out=out)
    assert r is out
    assert_equal_exact(out, ref_round(x, "floor"), "out=")
    y = x.copy()
    qc.round(y, "trunc", out=y)  # in place
    assert_equal_exact(y, ref_round(x, "trunc"), "in place")
    i = rng.integers(-1000, 1000, 64, dtype=np.int32)
    buf = i.copy()
    narrow = buf.view(np.int8)[:64]  # overlaps the input with a different element size
    qc.saturate_cast(buf, "int8", out=narrow)
    assert_equal_exact(narrow, ref_saturate(i, np.int8), "overlapping out=")
    h = np.empty(100, np.float16)
    assert qc.to_float16(x, out=h) is h
    b = np.empty(100, np.uint16)
    assert qc.to_bfloat16(x, out=b) is b
    assert qc.from_bfloat16(b, out=np.empty(100, np.float32)).dtype == np.float32
    assert qc.clamp(i, 0, 5, out=np.empty(64, np.int32)).dtype == np.int32


def test_out_of_an_equivalent_dtype():
    """out= of another spelling of the same type (np.longlong is int64 on LP64, np.intc is
    int32, a different type number each) is accepted as np.clip accepts it, and every
    message names a real dtype by its NumPy name."""
    x = np.array([1, -5, 300, -2**40], np.int64)
    want = np.array([1, 0, 100, 0], np.int64)
    for xt, ot in ((np.int64, np.longlong), (np.longlong, np.int64), (np.int64, np.int_),
                   (np.intc, np.int32), (np.int32, np.intc)):
        out = np.empty(4, ot)
        assert qc.clamp(x.astype(xt), 0, 100, out=out) is out
        assert_equal_exact(out.astype(np.int64), want, f"clamp {np.dtype(xt)} -> {out.dtype}")
    for name, ot in (("int64", np.longlong), ("uint64", np.ulonglong), ("int32", np.intc),
                     ("uint32", np.uintc), ("int16", np.short), ("uint8", np.ubyte)):
        out = np.empty(4, ot)
        assert qc.saturate_cast(x, name, out=out) is out
        assert_equal_exact(out, ref_saturate(x, np.dtype(name)), f"saturate_cast -> {ot}")
    for bad, got in ((np.ulonglong, "uint64"), (np.complex128, "complex128"),
                     (np.longdouble, "longdouble"), (np.bytes_, "bytes"), (object, "object"),
                     (ml_dtypes.bfloat16, "bfloat16")):
        with pytest.raises(ValueError, match=f"out: expected dtype int8, got {got}$"):
            qc.saturate_cast(x, "int8", out=np.empty(4, bad))
    with pytest.raises(ValueError, match="out: expected dtype uint64, got int64$"):
        qc.saturate_cast(x, "uint64", out=np.empty(4, np.longlong))


@pytest.mark.parametrize("bad,match", [
    (np.empty(99, np.float32), "out: expected shape"),
    (np.empty(100, np.float64), "out: expected dtype float32"),
    (np.empty(200, np.float32)[::2], "out: expected a writable"),
    ([0.0] * 100, "out: expected a NumPy array"),
])
def test_out_validation(bad, match):
    x = np.zeros(100, np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        qc.round(x, out=bad)


# ---------------------------------------------------------------- bad input


def test_bad_round_mode():
    with pytest.raises(ValueError, match="mode: expected one of half_even, half_away, half_up, "
                                         "floor, ceil, trunc, got 'nearest'"):
        qc.round([1.0], "nearest")
    with pytest.raises(TypeError, match="mode:"):
        qc.round([1.0], 3)


@pytest.mark.parametrize("x,match", [
    (np.array([True]), "x: expected a real-valued array"),
    (np.array([1 + 2j]), "x: expected a real-valued array"),
    (np.array(["a"]), "x: expected a real-valued array"),
    (None, "x: expected an array"),
])
def test_bad_float_input(x, match):
    for fn in (qc.round, qc.to_float16, qc.to_bfloat16):
        with pytest.raises(TypeError, match=match):
            fn(x)


def test_bad_clamp():
    x = np.arange(10, dtype=np.int8)
    with pytest.raises(ValueError, match="lo: expected lo <= hi, got lo=5 > hi=3"):
        qc.clamp(x, 5, 3)
    with pytest.raises(ValueError, match=r"lo: expected lo <= hi"):
        qc.clamp(x.astype(np.float32), 1.5, -1.5)
    with pytest.raises(ValueError, match=r"hi: expected an integer in \[-128, 127\] for a int8 array, got 300"):
        qc.clamp(x, 0, 300)
    with pytest.raises(ValueError, match=r"lo: expected an integer in \[0, 255\]"):
        qc.clamp(x.astype(np.uint8), -1, 3)
    with pytest.raises(TypeError, match="lo: expected an integer or None for a int8 array, got float"):
        qc.clamp(x, 0.5, 3)
    with pytest.raises(ValueError, match="lo: expected a number, got nan"):
        qc.clamp(np.zeros(3, np.float32), float("nan"), 1.0)
    with pytest.raises(ValueError, match="hi: expected a value representable in float32"):
        qc.clamp(np.zeros(3, np.float32), 0.0, 1e300)
    with pytest.raises(TypeError, match="hi: expected a real scalar or None, got str"):
        qc.clamp(np.zeros(3, np.float32), 0.0, "1")
    with pytest.raises(TypeError, match="hi: expected a real scalar or None, got numpy.ndarray"):
        qc.clamp(np.zeros(3, np.float32), 0.0, np.ones(3))
    with pytest.raises(TypeError, match="x: expected an integer or float16/32/64 array, got bool"):
        qc.clamp(np.array([True]), 0, 1)


def test_bad_saturate_cast():
    with pytest.raises(TypeError, match=r"x: expected an integer array, got float32 \(round it first"):
        qc.saturate_cast(np.zeros(3, np.float32), "int8")
    with pytest.raises(TypeError, match="x: expected an integer array, got bool"):
        qc.saturate_cast(np.array([True]), "int8")
    with pytest.raises(ValueError, match="dtype: expected an integer dtype, got 'int7'"):
        qc.saturate_cast(np.zeros(3, np.int32), "int7")
    with pytest.raises(ValueError, match="dtype: expected an integer dtype, got float32"):
        qc.saturate_cast(np.zeros(3, np.int32), np.float32)
    with pytest.raises(TypeError, match="dtype:"):
        qc.saturate_cast(np.zeros(3, np.int32), None)


def test_bad_from_bfloat16():
    with pytest.raises(TypeError, match=r"bits: expected an array of uint16, got (numpy\.)?float32"):
        qc.from_bfloat16(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="bits: expected an array of uint16"):
        qc.from_bfloat16(np.zeros(3, np.int16))


def test_inputs_never_modified(rng):
    x = random_floats(rng, 1000)
    i = rng.integers(-(2**31), 2**31, 1000, dtype=np.int32)
    xc, ic = x.copy(), i.copy()
    for m in MODES:
        qc.round(x, m)
    qc.clamp(x, 0, 1), qc.clamp(i, 0, 1), qc.saturate_cast(i, "int8")
    qc.to_float16(x), qc.to_bfloat16(x)
    assert_same_bits(x, xc, "float input")
    assert_equal_exact(i, ic, "int input")


# ---------------------------------------------------------------- properties (hypothesis)

f32_arrays = hnp.arrays(np.float32, st.integers(0, 80),
                        elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=60, deadline=None)
@given(f32_arrays, st.sampled_from(MODES))
def test_prop_round(x, mode):
    got = qc.round(x, mode)
    assert_equal_exact(got, ref_round(x, mode), f"round {mode}")
    assert_same_bits(got, scalar_result(qc.round, x, mode), f"round {mode} vs scalar")


@settings(max_examples=60, deadline=None)
@given(f32_arrays)
def test_prop_float16_bfloat16(x):
    check_f16_reference(x, qc.to_float16(x), "to_float16")
    assert_equal_exact(qc.to_bfloat16(x), ref_bf16(x), "to_bfloat16")
    assert_same_bits(qc.to_float16(x), scalar_result(qc.to_float16, x), "to_float16 vs scalar")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(INT_TYPES).map(np.dtype), st.integers(0, 70)),
       st.sampled_from(INT_TYPES))
def test_prop_saturate_cast(x, dst):
    assert_equal_exact(qc.saturate_cast(x, dst), ref_saturate(x, dst), "saturate_cast")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int32, st.integers(0, 70)), st.integers(-(2**31), 2**31 - 1),
       st.integers(-(2**31), 2**31 - 1))
def test_prop_clamp_int(x, a, b):
    lo, hi = min(a, b), max(a, b)
    assert_equal_exact(qc.clamp(x, lo, hi), ref_clamp(x, lo, hi), "clamp int32")
