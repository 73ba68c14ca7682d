"""Linear from quantized weights (from_quantized, QuantizedWeights.linear) and per-row
(per-token) dynamic activations: exact against NumPy references of the documented formulas."""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact, isa_cap, num_threads, SUPPORTED_ISAS


def dyn_rows(x):
    """DynamicQuantizeLinear parameters per row as Linear computes them (float32; a zero
    range gives scale 1, zero point 0): (q int64, scale (R,), zp (R,))."""
    fin = np.where(np.isfinite(x), x, 0).astype(np.float32)
    lo = np.minimum(fin.min(axis=1, initial=0), 0).astype(np.float32)
    hi = np.maximum(fin.max(axis=1, initial=0), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s[s == 0] = 1
    zp = np.clip(np.rint(np.float32(0) - lo / s), 0, 255)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / s[:, None]) + zp[:, None], 0, 255).astype(np.int64)
    return q, s, zp.astype(np.int64)


def ref_linear_rows(x, qw, zw, sw, bias=None):
    """y[i, j] = float32(acc) * float32(sx[i] * sw[j]) + bias[j] with
    acc = sum_k (qx - zx[i]) (qw - zw[j]) exactly (int64, then int32)."""
    k = qw.shape[1]
    x = np.asarray(x, np.float32).reshape(-1, k)
    q, sx, zx = dyn_rows(x)
    acc = ((q - zx[:, None]) @ (qw.astype(np.int64) - zw.reshape(-1, 1)).T).astype(np.int32)
    s = (sx[:, None] * sw[None, :]).astype(np.float32)
    y = acc.astype(np.float32) * s
    return y + bias.astype(np.float32) if bias is not None else y


def ref_linear_tensor(x, qw, zw, sw, bias=None):
    """The per-tensor pipeline: one (scale, zero point) from the whole x."""
    k = qw.shape[1]
    x = np.asarray(x, np.float32).reshape(-1, k)
    q, sx, zx = dyn_rows(x.reshape(1, -1))
    q = q.reshape(x.shape)
    acc = ((q - zx[0]) @ (qw.astype(np.int64) - zw.reshape(-1, 1)).T).astype(np.int32)
    y = acc.astype(np.float32) * (sx[0] * sw).astype(np.float32)
    return y + bias.astype(np.float32) if bias is not None else y


def sym_weights(w):
    amax = np.abs(w).max(axis=1)
    s = (amax / np.float32(127)).astype(np.float32)
    s[s == 0] = 1
    return np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8), s


def make(rng, m, k, n):
    x = rng.standard_normal((m, k)).astype(np.float32)
    if m > 2:
        x[1] *= 40  # an outlier token
        x[2] = 0    # an all-zero token
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 0.3, (n, 1))).astype(np.float32)
    return x, w, rng.standard_normal(n).astype(np.float32)


SHAPES = [(1, 64, 48), (3, 7, 5), (7, 300, 65), (17, 33, 31), (130, 96, 17), (9, 1, 16)]


def test_per_row_exact(isa, rng):
    for m, k, n in SHAPES:
        x, w, bias = make(rng, m, k, n)
        qw, sw = sym_weights(w)
        zw = np.zeros(n, np.int64)
        layer = qc.Linear.from_float(w, bias, act_granularity="per_row")
        assert layer.act_granularity == "per_row"
        assert_equal_exact(layer(x), ref_linear_rows(x, qw, zw, sw, bias),
                           f"{isa} m={m} k={k} n={n}")
        u8 = qc.Linear.from_float(w, None, dtype="uint8", act_granularity="per_row")
        assert_equal_exact(u8(x), ref_linear_rows(x, qw, zw, sw), f"{isa} uint8 m={m}")


def test_per_row_rows_independent_and_inf(rng):
    x, w, bias = make(rng, 6, 40, 24)
    layer = qc.Linear.from_float(w, bias, act_granularity="per_row")
    y = layer(x)
    for i in range(6):
        assert_equal_exact(layer(x[i]), y[i], f"row {i} alone")
    xb = np.stack([x, x[::-1]])
    assert_equal_exact(layer(xb)[1], y[::-1], "batched")
    inf = x.copy()
    inf[0, 0], inf[3, 1] = np.inf, -np.inf
    qw, sw = sym_weights(w)
    assert_equal_exact(layer(inf), ref_linear_rows(inf, qw, np.zeros(24), sw, bias), "inf")
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="x: expected no NaN, got 1 NaN values.*162"):
        layer(bad)


def test_per_row_bit_identical_across_variants_and_threads(rng):
    x, w, bias = make(rng, 75, 200, 90)
    with isa_cap("scalar"):
        want = qc.Linear.from_float(w, bias, act_granularity="per_row")(x)
    for name in SUPPORTED_ISAS:
        with isa_cap(name):
            layer = qc.Linear.from_float(w, bias, act_granularity="per_row")
            for t in (1, 2, 3):
                with num_threads(t):
                    assert_equal_exact(layer(x), want, f"{name} threads={t}")


def test_per_row_more_accurate_on_outlier_tokens(rng):
    x, w, _ = make(rng, 16, 256, 64)
    x[5] *= 100
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    err_t = np.abs(qc.Linear.from_float(w)(x) - ref)
    err_r = np.abs(qc.Linear.from_float(w, act_granularity="per_row")(x) - ref)
    normal = ~np.isin(np.arange(16), [1, 5])  # the outlier tokens (make scales row 1 too)
    assert err_r[normal].max() < 0.2 * err_t[normal].max()


def test_quantize_dynamic_per_row(rng):
    x = rng.standard_normal((3, 4, 33)).astype(np.float32)
    x[0, 1] = 0
    x[2, 3] *= 50
    for dtype in ("uint8", "int8"):
        q, s, z = qc.quantize_dynamic(x, dtype, granularity="per_row")
        assert q.shape == x.shape and s.shape == (3, 4) and z.shape == (3, 4)
        assert s.dtype == np.float32 and z.dtype == np.dtype(dtype) and q.dtype == z.dtype
        for i in np.ndindex(3, 4):
            q1, s1, z1 = qc.quantize_dynamic(x[i], dtype)
            assert_equal_exact(q[i], q1, f"{dtype} row {i}")
            assert s[i] == s1 and z[i] == z1
    with pytest.raises(ValueError, match="granularity"):
        qc.quantize_dynamic(x, granularity="per_col")
    with pytest.raises(ValueError, match="x: expected finite.*row 1"):
        qc.quantize_dynamic(np.float32([[1, 2], [np.inf, 1]]), granularity="per_row")
    # an output that cannot exist fails at once, not after reducing 2**58 values
    with pytest.raises(MemoryError, match=r"x: cannot allocate 288230376151711744 bytes"):
        qc.quantize_dynamic(np.broadcast_to(np.float32(1), (2 ** 28, 2 ** 30)),
                            granularity="per_row")
    with pytest.raises(ValueError, match=r"x: expected no NaN values, got 1 NaN value, the "
                                         r"first at index \(1, 0\)$"):
        qc.quantize_dynamic(np.float32([[1, 2], [np.nan, 1]]), granularity="per_row")
    with pytest.raises(TypeError, match="x: expected a real"):
        qc.quantize_dynamic(np.array([["a"]]), granularity="per_row")
    assert qc.quantize_dynamic(np.zeros((0, 5), np.float32), granularity="per_row")[1].shape == (0,)


@pytest.mark.parametrize("mltype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_quantize_dynamic_per_row_ml_dtypes(rng, mltype):
    """bfloat16 and float8 inputs, accepted per tensor, are accepted per row: each row as the
    per-tensor result of that row (both read the values exactly as float32)."""
    x = (rng.standard_normal((3, 5, 40)) * 4).astype(mltype)
    x[1, 2] = 0
    for dtype in ("uint8", "int8"):
        q, s, z = qc.quantize_dynamic(x, dtype, granularity="per_row")
        assert q.dtype == np.dtype(dtype) and s.shape == z.shape == (3, 5)
        for i in np.ndindex(3, 5):
            q1, s1, z1 = qc.quantize_dynamic(x[i], dtype)
            assert_equal_exact(q[i], q1, f"{mltype} -> {dtype} row {i}")
            assert s[i] == s1 and z[i] == z1, (mltype, dtype, i)
        assert_equal_exact(q, qc.quantize_dynamic(x.astype(np.float32), dtype,
                                                  granularity="per_row")[0], mltype)
    if mltype != "float8_e4m3fn":  # (which has no inf) +-inf leaves no range: row named
        x[2, 0, 7] = np.inf
        with pytest.raises(ValueError, match="x: expected finite.*row 10"):
            qc.quantize_dynamic(x, granularity="per_row")
    x[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x: expected no NaN values, got 1 NaN value, the "
                                         r"first at index \(0, 3, 1\)$"):
        qc.quantize_dynamic(x, granularity="per_row")


@pytest.mark.parametrize("act", ["per_tensor", "per_row"])
@pytest.mark.parametrize("kw", [dict(dtype="int8"), dict(dtype="uint8", symmetric=False),
                                dict(dtype="int8", granularity="per_tensor"),
                                dict(dtype="uint8", symmetric=False, granularity="per_tensor"),
                                dict(dtype="int8", granularity="per_block", block_size=4096)])
def test_from_quantized_exact(isa, rng, act, kw):
    ref = ref_linear_rows if act == "per_row" else ref_linear_tensor
    for m, k, n in [(1, 64, 48), (17, 300, 65), (130, 96, 17)]:
        x, w, bias = make(rng, m, k, n)
        qw = qc.quantize_weights({"w": w, "b": bias}, min_elements=1, **kw)
        qt = qw["w"]
        n_, k_ = qt.shape
        s = np.broadcast_to(qt.scale.reshape(-1), (n,)).astype(np.float32)
        z = np.broadcast_to(qt.zero_point.reshape(-1).astype(np.int64), (n,))
        want = ref(x, qt.q, z, s, bias)
        layer = qc.Linear.from_quantized(qt, bias, act_granularity=act)
        assert (layer.in_features, layer.out_features) == (k, n)
        assert_equal_exact(layer(x), want, f"{isa} {kw} m={m} k={k} n={n}")
        # bias looked up by name in the mapping (kept as float: 1-D)
        assert_equal_exact(qw.linear("w", "b", act_granularity=act)(x), want, "linear(name)")


def test_from_quantized_file_round_trip(tmp_path, rng):
    x, w, bias = make(rng, 5, 128, 40)
    qw = qc.quantize_weights({"w": w}, min_elements=1)
    path = tmp_path / "w.safetensors"
    qw.save(path)
    loaded = qc.load_quantized(path)
    assert_equal_exact(loaded.linear("w", bias)(x), qw.linear("w", bias)(x), "loaded")
    # the weights it runs are the dequantized file: close to the float layer
    y = loaded.linear("w", bias, act_granularity="per_row")(x)
    ref = x @ loaded["w"].dequantize().T + bias
    assert np.abs(y - ref).max() < 0.02 * np.abs(ref).max()


def test_from_quantized_bad_input(rng):
    w = rng.standard_normal((16, 64)).astype(np.float32)
    qt = qc.quantize_weights({"w": w}, min_elements=1)["w"]
    with pytest.raises(TypeError, match="qt: expected a QuantizedTensor"):
        qc.Linear.from_quantized(w)
    # several blocks per row run on the blocked kernels (tests/test_linear_int4.py) when
    # block_size is a multiple of 32
    blocks = qc.quantize_weights({"w": w}, min_elements=1, granularity="per_block",
                                 block_size=16)["w"]
    with pytest.raises(ValueError, match="qt: scheme .*per_block.* not supported"):
        qc.Linear.from_quantized(blocks)
    axis1 = qc.quantize_weights({"w": w}, min_elements=1, axis=1)["w"]
    with pytest.raises(ValueError, match="qt: scheme .* not supported"):
        qc.Linear.from_quantized(axis1)
    w3 = qc.quantize_weights({"w": w.reshape(4, 4, 64)}, min_elements=1)["w"]
    with pytest.raises(ValueError, match=r"qt: expected shape \(out_features, in_features\)"):
        qc.Linear.from_quantized(w3)
    with pytest.raises(ValueError, match=r"bias: expected shape \(16,\)"):
        qc.Linear.from_quantized(qt, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="bias: expected real numbers"):
        qc.Linear.from_quantized(qt, np.array(["a"] * 16))
    with pytest.raises(ValueError, match="act_granularity: expected 'per_tensor' or 'per_row'"):
        qc.Linear.from_quantized(qt, act_granularity="per_token")
    with pytest.raises(TypeError, match="act_granularity"):
        qc.Linear.from_float(w, act_granularity=1)
    for wd in (np.array(["int4", "int8"]), None):  # (NumPy's "truth value ... ambiguous")
        with pytest.raises(TypeError, match="weight_dtype: expected 'int8', 'int4' or 'uint4'"):
            qc.Linear.from_float(w, weight_dtype=wd)
    with pytest.raises(TypeError, match="per_channel: expected True or False, got 'no'"):
        qc.Linear.from_float(w, per_channel="no")
    assert qc.Linear.from_float(w, weight_dtype=np.int8).weight_dtype == "int8"
    with pytest.raises(ValueError, match="act_granularity"):
        qc.Linear.from_float(w, act_granularity="row")
    qw = qc.quantize_weights({"w": w, "small": w[:2, :2]}, min_elements=100)
    with pytest.raises(KeyError, match="name: no tensor 'nope'"):
        qw.linear("nope")
    with pytest.raises(TypeError, match=r"name: expected a tensor name \(str\), got int"):
        qw.linear(3)
    with pytest.raises(ValueError, match="name: 'small' is not quantized"):
        qw.linear("small")
    with pytest.raises(KeyError, match="bias: no tensor 'b'"):
        qw.linear("w", "b")
    layer = qc.Linear.from_quantized(qt)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 64\)"):
        layer(np.zeros((2, 63), np.float32))
    before = qt.q.copy()
    layer(rng.standard_normal((3, 64)))
    assert_equal_exact(qt.q, before, "qt unchanged")
