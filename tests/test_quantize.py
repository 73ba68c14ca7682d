"""Exactness of quantize / dequantize / fake_quantize: every ISA == scalar == NumPy reference."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import quantc as qc
from conftest import assert_equal_exact, isa_cap, num_threads

PROFILES = ["onnx", "torch", "tflite"]
RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 200_003]


# ---------------------------------------------------------------- NumPy references

def expand(p, shape, axis, block_size):
    """Broadcast per-tensor / per-axis / blocked parameters to the data's shape."""
    p = np.asarray(p)
    if axis is None:
        return np.broadcast_to(p.reshape(()), shape)
    axis %= len(shape)
    if block_size is None:
        sh = [1] * len(shape)
        sh[axis] = -1
        return np.broadcast_to(p.reshape(sh), shape)
    rep = np.repeat(p, block_size, axis=axis)
    return np.take(rep, np.arange(shape[axis]), axis=axis)


def round_half_away(v):
    v64 = v.astype(np.float64)  # |v| + 0.5 is exact in float64 for every float32 v
    return (np.sign(v64) * np.floor(np.abs(v64) + 0.5)).astype(np.float32)


def ref_rounded(x, s, zp, profile, axis=None, block_size=None):
    """R(x OP s) + zp in float32, before the clamp."""
    x = np.asarray(x).astype(np.float32)
    s = expand(np.asarray(s, np.float32), x.shape, axis, block_size)
    zp = expand(np.asarray(zp), x.shape, axis, block_size).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        inv = np.float32(1.0) / s
        if profile == "torch_fma":  # rint(fmaf(x, inv, zp)): the product is exact in float64
            return np.rint((x.astype(np.float64) * inv + zp).astype(np.float32))
        if profile == "torch_add":  # rint(fl(x * inv) + zp)
            return np.rint((x * inv + zp).astype(np.float32))
        if profile == "torch":
            v = x * inv
        else:
            v = x / s
        r = round_half_away(v) if profile == "tflite" else np.rint(v)
        return (r + zp).astype(np.float32)


def ref_quantize(x, s, zp, dtype, profile="onnx", axis=None, block_size=None):
    """quantize(); profile "torch" is torch.quantize_per_tensor / quantize_per_channel's."""
    qmin, qmax = RANGES[dtype]
    if profile == "torch":
        profile = "torch_fma" if axis is None else "torch_add"
    t = ref_rounded(x, s, zp, profile, axis, block_size)
    return np.clip(t, qmin, qmax).astype(np.int32).astype(dtype)


def ref_dequantize(q, s, zp, axis=None, block_size=None):
    s = expand(np.asarray(s, np.float32), q.shape, axis, block_size)
    zp = expand(np.asarray(zp), q.shape, axis, block_size).astype(np.int32)
    with np.errstate(over="ignore"):
        return (q.astype(np.int32) - zp).astype(np.float32) * s


def ref_fake(x, s, zp, qmin, qmax, profile="onnx", axis=None, block_size=None):
    t = ref_rounded(x, s, zp, profile, axis, block_size)
    sb = expand(np.asarray(s, np.float32), t.shape, axis, block_size)
    zb = expand(np.asarray(zp), t.shape, axis, block_size).astype(np.float32)
    y = ((np.clip(t, np.float32(qmin), np.float32(qmax)) - zb) * sb).astype(np.float32)
    return y, (t >= qmin) & (t <= qmax)


# ---------------------------------------------------------------- data

def special_values(s=0.25):
    """Ties (x/s exactly k + 0.5), one ulp either side, +-inf, denormals, huge values, zeros."""
    k = np.arange(-300, 300, dtype=np.float32)
    ties = (k + np.float32(0.5)) * np.float32(s)
    vals = [ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
            np.array([np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-38, 1e30, -1e30,
                      3.4e38, -3.4e38, 0.49999997 * s, -0.49999997 * s, 2.5 * s, -2.5 * s],
                     np.float32)]
    return np.concatenate(vals).astype(np.float32)


def mixed(rng, n, s=0.25):
    x = (rng.standard_normal(n) * 40 * s).astype(np.float32)
    sp = special_values(s)
    idx = rng.integers(0, max(n, 1), size=min(n, sp.size))
    x[idx] = sp[: idx.size]
    return x


# ---------------------------------------------------------------- quantize

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_per_tensor_sizes(isa, rng, profile, dtype):
    qmin, qmax = RANGES[dtype]
    for n in SIZES:
        x = mixed(rng, n)
        for zp in (qmin, qmax, (qmin + qmax) // 2, 3 if dtype == "int8" else 131):
            got = qc.quantize(x, 0.25, zp, dtype, profile=profile)
            want = ref_quantize(x, 0.25, zp, dtype, profile)
            assert_equal_exact(got, want, f"{isa} {profile} {dtype} n={n} zp={zp}")


@pytest.mark.parametrize("profile", PROFILES)
def test_quantize_specials_every_scale(isa, profile):
    for s in (0.25, 0.1, 0.007, 3.0, 1e-3, 1e-30, 1e30):
        x = special_values(np.float32(s))
        for dtype in ("int8", "uint8"):
            for zp in RANGES[dtype]:
                got = qc.quantize(x, s, zp, dtype, profile=profile)
                assert_equal_exact(got, ref_quantize(x, s, zp, dtype, profile),
                                   f"{isa} {profile} s={s} {dtype} zp={zp}")


def test_ties_go_where_each_profile_says(isa):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997], np.float32)
    assert qc.quantize(x, 1.0).tolist() == [0, 2, 2, 0, -2, -2, 0, 0]
    assert qc.quantize(x, 1.0, profile="torch").tolist() == [0, 2, 2, 0, -2, -2, 0, 0]
    assert qc.quantize(x, 1.0, profile="tflite").tolist() == [1, 2, 3, -1, -2, -3, 0, 0]


def test_torch_and_onnx_differ_on_reciprocal_ties(isa, rng):
    """x * (1/s) and x / s round differently near ties: each profile follows its own."""
    s = np.float32(0.1)
    k = rng.integers(-120, 120, 20000).astype(np.float32)
    x = ((k + np.float32(0.5)) * s).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    onnx = qc.quantize(x, s)
    torch = qc.quantize(x, s, profile="torch")
    assert_equal_exact(onnx, ref_quantize(x, s, 0, "int8", "onnx"), isa)
    assert_equal_exact(torch, ref_quantize(x, s, 0, "int8", "torch"), isa)
    assert (onnx != torch).any(), "the data should contain cases where the profiles differ"


def test_every_isa_equals_scalar(rng):
    x = mixed(rng, 100_003, s=0.037)
    s = np.float32(0.037)
    results = {}
    for isa in qc.cpu_info()["isa_supported"]:
        with isa_cap(isa):
            results[isa] = [qc.quantize(x, s, 7, profile=p) for p in PROFILES]
            results[isa] += [qc.fake_quantize(x, s, 7, profile=p, return_mask=True)[k]
                             for p in PROFILES for k in (0, 1)]
            q = qc.quantize(x, s, 7)
            results[isa].append(qc.dequantize(q, s, 7))
            results[isa] += list(qc._C._minmax(x[np.isfinite(x)]))
    for isa, res in results.items():
        for i, (a, b) in enumerate(zip(res, results["scalar"])):
            assert_equal_exact(a, b, f"{isa} vs scalar, output {i}")


@pytest.mark.parametrize("profile", PROFILES)
def test_quantize_per_axis_every_axis(isa, rng, profile):
    for shape in [(3, 5, 17), (1, 33, 2), (40, 1, 1), (2, 3, 4, 5), (65, 3), (3, 65), (5,)]:
        x = (rng.standard_normal(shape) * 30).astype(np.float32)
        for axis in range(-len(shape), len(shape)):
            n = shape[axis]
            s = (rng.random(n) * 0.5 + 0.01).astype(np.float32)
            for dtype in ("int8", "uint8"):
                qmin, qmax = RANGES[dtype]
                zp = rng.integers(qmin, qmax + 1, n).astype(dtype)
                zp[0] = qmin
                zp[-1] = qmax
                got = qc.quantize(x, s, zp, axis=axis, profile=profile)
                want = ref_quantize(x, s, zp, dtype, profile, axis=axis)
                assert_equal_exact(got, want, f"{isa} {profile} {shape} axis={axis} {dtype}")


@pytest.mark.parametrize("profile", PROFILES)
def test_quantize_blocked_short_last_block(isa, rng, profile):
    for shape in [(4, 37), (37, 4), (3, 10, 5), (2, 70, 1), (100,)]:
        x = (rng.standard_normal(shape) * 30).astype(np.float32)
        for axis in range(len(shape)):
            for B in (1, 3, 16, 32, 200):
                nb = -(-shape[axis] // B)
                pshape = list(shape)
                pshape[axis] = nb
                s = (rng.random(pshape) * 0.5 + 0.01).astype(np.float32)
                zp = rng.integers(-128, 128, pshape).astype(np.int8)
                got = qc.quantize(x, s, zp, axis=axis, block_size=B, profile=profile)
                want = ref_quantize(x, s, zp, "int8", profile, axis=axis, block_size=B)
                assert_equal_exact(got, want, f"{isa} {profile} {shape} axis={axis} B={B}")


def test_layouts_and_input_dtypes(isa, rng):
    base = (rng.standard_normal((37, 45)) * 20).astype(np.float32)
    views = {"strided": base[::2, 1::3], "negative": base[::-1, ::-1], "transposed": base.T,
             "0-d": np.float32(3.7).reshape(()), "float64": base.astype(np.float64),
             "float16": base.astype(np.float16), "list": base[:3, :4].tolist(),
             "big-endian": base.astype(">f4"), "big-endian float64": base.astype(">f8")}
    for name, v in views.items():
        keep = np.array(v, copy=True)
        got = qc.quantize(v, 0.3, 2)
        want = ref_quantize(np.asarray(v), 0.3, 2, "int8")
        assert_equal_exact(got, want, f"{isa} {name}")
        assert_equal_exact(np.asarray(v), keep, f"{name} input modified")
    assert qc.quantize(np.float32(2.0), 1.0).shape == ()
    s = np.linspace(0.1, 1, 45).astype(">f4")
    assert_equal_exact(qc.quantize(base, s, np.arange(45, dtype=">i4"), "int8", axis=1),
                       ref_quantize(base, s.astype(np.float32), np.arange(45), "int8", axis=1),
                       f"{isa} big-endian parameters")


def test_threads_identical(rng):
    x = mixed(rng, 5 * (1 << 16) + 12345, s=0.05)
    X = x[: 300 * 771].reshape(300, 771)
    outs = []
    for n in (1, 2, 3):
        with num_threads(n):
            outs.append([qc.quantize(x, 0.05, 3), qc.quantize(X, np.full(771, 0.05, np.float32),
                                                               axis=1),
                         qc.quantize(X, np.full((300, 25), 0.05, np.float32), axis=1,
                                     block_size=32),
                         qc.quantize(x[: 3 * 100_001].reshape(-1, 3), [0.05, 0.1, 0.2], [1, 2, 3],
                                     axis=1, profile="torch"),
                         qc.dequantize(qc.quantize(x[:300_000], 0.05).reshape(-1, 5, 3),
                                       [0.1, 0.2, 0.3, 0.4, 0.5], [1, 2, 3, 4, 5], axis=1),
                         qc.fake_quantize(x, 0.05, 3, return_mask=True)[0],
                         qc.dequantize(qc.quantize(x, 0.05), 0.05),
                         *qc._C._minmax(X[np.isfinite(X).all(axis=1)], axis=0)])
    for o in outs[1:]:
        for i, (a, b) in enumerate(zip(o, outs[0])):
            assert_equal_exact(a, b, f"threads, output {i}")


def test_output_dtype_rules():
    x = np.array([1.0, -1.0], np.float32)
    assert qc.quantize(x, 1.0).dtype == np.int8
    assert qc.quantize(x, 1.0, 5).dtype == np.int8
    assert qc.quantize(x, 1.0, np.uint8(5)).dtype == np.uint8
    assert qc.quantize(x, 1.0, np.array(5, np.uint8)).dtype == np.uint8
    assert qc.quantize(x, 1.0, 5, "uint8").dtype == np.uint8
    assert qc.quantize(x, 1.0, 5, np.uint8).dtype == np.uint8
    assert qc.quantize(x, 1.0, None, np.dtype("uint8")).tolist() == [1, 0]
    assert qc.quantize(x, np.array([1.0], np.float32), 0).tolist() == [1, -1]
    assert qc.quantize(x, [1.0], [0]).dtype == np.int8  # a list carries no dtype


def test_out_argument(rng):
    x = (rng.standard_normal(100) * 10).astype(np.float32)
    out = np.empty(100, np.int8)
    r = qc.quantize(x, 0.5, out=out)
    assert r is out
    assert_equal_exact(out, ref_quantize(x, 0.5, 0, "int8"))
    y = np.empty(100, np.float32)
    assert qc.dequantize(out, 0.5, out=y) is y
    assert qc.fake_quantize(x, 0.5, out=y) is y


def test_nan_with_out_raises_and_out_is_unspecified():
    """NaN is found by the pass that writes out=, so the ValueError comes after out= was
    written to: its contents are unspecified then (as NumPy's out=), as the docstrings say."""
    x = np.linspace(-1, 1, 1000).astype(np.float32)
    x[-1] = np.nan
    for f, kw, dt in ((qc.quantize, {}, np.int8), (qc.quantize, {"dtype": "uint8"}, np.uint8),
                      (qc.fake_quantize, {}, np.float32),
                      (qc.quantize, {"dtype": "int4"}, ml_dtypes.int4),
                      (qc.quantize, {"dtype": "float8_e4m3fn"}, ml_dtypes.float8_e4m3fn),
                      (qc.quantize, {"dtype": "int16"}, np.int16)):
        out = np.zeros(1000, dt)
        with pytest.raises(ValueError, match="x: expected no NaN values, got 1 NaN.* 999"):
            f(x, np.float32(0.1), out=out, **kw)
    for f in (qc.quantize, qc.fake_quantize):
        assert "unspecified" in " ".join(f.__doc__.split()), f.__name__


# ---------------------------------------------------------------- dequantize

def test_dequantize(isa, rng):
    for dtype in ("int8", "uint8"):
        qmin, qmax = RANGES[dtype]
        for n in SIZES:
            q = rng.integers(qmin, qmax + 1, n).astype(dtype)
            for zp in (qmin, qmax, 0 if dtype == "int8" else 128):
                for s in (0.1, 3.0, 1e-30, 3e38):
                    got = qc.dequantize(q, s, zp)
                    assert_equal_exact(got, ref_dequantize(q, s, zp), f"{isa} {dtype} n={n}")
        q = rng.integers(qmin, qmax + 1, (6, 7, 19)).astype(dtype)
        for axis in range(3):
            s = (rng.random(q.shape[axis]) + 0.01).astype(np.float32)
            zp = rng.integers(qmin, qmax + 1, q.shape[axis]).astype(dtype)
            assert_equal_exact(qc.dequantize(q, s, zp, axis=axis),
                               ref_dequantize(q, s, zp, axis=axis), f"{isa} axis={axis}")
            assert_equal_exact(qc.dequantize(q[::-1, ::2], s if axis != 1 else s[::2].copy()[:4],
                                             zp if axis != 1 else zp[::2].copy()[:4], axis=axis),
                               ref_dequantize(q[::-1, ::2], s if axis != 1 else s[::2][:4],
                                              zp if axis != 1 else zp[::2][:4], axis=axis),
                               f"{isa} strided axis={axis}")
            for B in (2, 5, 32):
                pshape = list(q.shape)
                pshape[axis] = -(-q.shape[axis] // B)
                s = (rng.random(pshape) + 0.01).astype(np.float32)
                zp = rng.integers(qmin, qmax + 1, pshape).astype(dtype)
                assert_equal_exact(qc.dequantize(q, s, zp, axis=axis, block_size=B),
                                   ref_dequantize(q, s, zp, axis=axis, block_size=B),
                                   f"{isa} axis={axis} B={B}")


def test_dequantize_long_runs_any_alignment(isa, rng):
    """Long uniform runs use non-temporal stores after an aligning head: same values."""
    n = 100_003
    q = rng.integers(-128, 128, n + 16).astype(np.int8)
    buf = np.empty(n + 16, np.float32)
    for off in range(0, 16, 3):
        out = buf[off: off + n]
        qc.dequantize(q[off: off + n], 0.37, -5, out=out)
        assert_equal_exact(out, ref_dequantize(q[off: off + n], 0.37, -5), f"{isa} offset {off}")


# ---------------------------------------------------------------- fake_quantize

@pytest.mark.parametrize("profile", PROFILES)
def test_fake_quantize(isa, rng, profile):
    for n in SIZES:
        x = mixed(rng, n, s=0.1)
        for dtype, qmin, qmax in (("int8", -128, 127), ("uint8", 0, 255), ("int8", -8, 7),
                                  ("uint8", 0, 15)):
            for zp in (qmin, qmax, (qmin + qmax) // 2):
                y, m = qc.fake_quantize(x, 0.1, zp, dtype, qmin=qmin, qmax=qmax,
                                        profile=profile, return_mask=True)
                wy, wm = ref_fake(x, 0.1, zp, qmin, qmax, profile)
                ctx = f"{isa} {profile} n={n} [{qmin},{qmax}] zp={zp}"
                assert_equal_exact(y, wy, ctx)
                assert_equal_exact(m, wm, ctx)
                assert_equal_exact(qc.fake_quantize(x, 0.1, zp, dtype, qmin=qmin, qmax=qmax,
                                                    profile=profile), wy, ctx)


@pytest.mark.parametrize("profile", PROFILES)
def test_fake_quantize_per_axis_and_blocked(isa, rng, profile):
    x = (rng.standard_normal((7, 9, 33)) * 5).astype(np.float32)
    for axis in range(3):
        s = (rng.random(x.shape[axis]) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(-20, 20, x.shape[axis]).astype(np.int8)
        y, m = qc.fake_quantize(x, s, zp, axis=axis, profile=profile, return_mask=True)
        wy, wm = ref_fake(x, s, zp, -128, 127, profile, axis=axis)
        assert_equal_exact(y, wy, f"{isa} axis={axis}")
        assert_equal_exact(m, wm, f"{isa} axis={axis}")
        pshape = list(x.shape)
        pshape[axis] = -(-x.shape[axis] // 4)
        s = (rng.random(pshape) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(-20, 20, pshape).astype(np.int8)
        y, m = qc.fake_quantize(x, s, zp, axis=axis, block_size=4, profile=profile,
                                return_mask=True)
        wy, wm = ref_fake(x, s, zp, -128, 127, profile, axis=axis, block_size=4)
        assert_equal_exact(y, wy, f"{isa} axis={axis} blocked")
        assert_equal_exact(m, wm, f"{isa} axis={axis} blocked")


def test_fake_quantize_equals_quantize_then_dequantize(rng):
    x = (rng.standard_normal(5000) * 3).astype(np.float32)
    for profile in ("onnx", "tflite"):
        q = qc.quantize(x, 0.03, 5, profile=profile)
        assert_equal_exact(qc.fake_quantize(x, 0.03, 5, profile=profile),
                           qc.dequantize(q, 0.03, 5), profile)


# ---------------------------------------------------------------- properties

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=200, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=40),
                    elements=finite_f32),
       s=st.floats(min_value=2.0 ** -20, max_value=2.0 ** 20, width=32),
       zp=st.integers(-128, 127), profile=st.sampled_from(PROFILES))
def test_property_quantize_fake(x, s, zp, profile):
    assert_equal_exact(qc.quantize(x, s, zp, profile=profile),
                       ref_quantize(x, s, zp, "int8", profile))
    y, m = qc.fake_quantize(x, s, zp, profile=profile, return_mask=True)
    wy, wm = ref_fake(x, s, zp, -128, 127, profile)
    assert_equal_exact(y, wy)
    assert_equal_exact(m, wm)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=20),
       profile=st.sampled_from(PROFILES))
def test_property_per_axis_and_blocked(data, shape, profile):
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32).map(np.float32)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    block = data.draw(st.one_of(st.none(), st.integers(1, 25)))
    if block is None:
        pshape = (shape[axis],)
    else:
        pshape = list(shape)
        pshape[axis] = -(-shape[axis] // block)
    s = data.draw(hnp.arrays(np.float32, pshape, elements=st.floats(2.0 ** -10, 2.0 ** 10, width=32)))
    zp = data.draw(hnp.arrays(np.uint8, pshape))
    q = qc.quantize(x, s, zp, axis=axis, block_size=block, profile=profile)
    assert_equal_exact(q, ref_quantize(x, s, zp, "uint8", profile, axis, block))
    assert_equal_exact(qc.dequantize(q, s, zp, axis=axis, block_size=block),
                       ref_dequantize(q, s, zp, axis, block))


def test_short_periodic_runs_large(isa, rng):
    """Per-axis with few channels / short inner extent over many elements (periodic path)."""
    x = mixed(rng, 3 * 5 * 7 * 4001, s=0.05).reshape(4001, 7, 5, 3)
    for axis in range(1, 4):
        n = x.shape[axis]
        s = (rng.random(n) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(-128, 128, n).astype(np.int8)
        for profile in PROFILES:
            got = qc.quantize(x, s, zp, axis=axis, profile=profile)
            assert_equal_exact(got, ref_quantize(x, s, zp, "int8", profile, axis=axis),
                               f"{isa} axis={axis} {profile}")
            y, m = qc.fake_quantize(x, s, zp, axis=axis, profile=profile, return_mask=True)
            wy, wm = ref_fake(x, s, zp, -128, 127, profile, axis=axis)
            assert_equal_exact(y, wy, f"{isa} fake axis={axis} {profile}")
            assert_equal_exact(m, wm, f"{isa} mask axis={axis} {profile}")
        assert_equal_exact(qc.dequantize(got, s, zp, axis=axis),
                           ref_dequantize(got, s, zp, axis=axis), f"{isa} dequantize axis={axis}")


def test_concurrent_python_threads(rng):
    """The GIL is released in the kernels; concurrent calls give the single-call results."""
    from concurrent.futures import ThreadPoolExecutor
    xs = [mixed(rng, 150_001 + k, s=0.05) for k in range(6)]
    want = [qc.quantize(x, 0.05, 1) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda x: qc.quantize(x, 0.05, 1), xs * 3))
    for i, g in enumerate(got):
        assert_equal_exact(g, want[i % 6], f"call {i}")


def test_families_registered():
    info = qc.cpu_info()
    for fam in ("quantize", "dequantize", "fake_quantize", "minmax"):
        names = [v[0] for v in info["variants"][fam]]
        assert names[-1] == f"{fam}__scalar"
        assert info["kernels"][fam] in names
