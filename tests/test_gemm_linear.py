"""Linear (dynamic quantization): error bound vs float, torch's dynamic Linear, variants, errors."""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact, isa_cap, num_threads, SUPPORTED_ISAS


def act_scale(x, levels=255):
    lo = min(float(np.min(x[np.isfinite(x)], initial=0.0)), 0.0)
    hi = max(float(np.max(x[np.isfinite(x)], initial=0.0)), 0.0)
    return (hi - lo) / levels


def error_bound(x, w, w_scale, x_scale, bias=None):
    """Worst case of the int8 rounding: |x - x^| <= sx/2 and |w - w^| <= sw/2 per element, so
    |x.w - x^.w^| <= sum_k (|x_k| sw/2 + |w_k| sx/2 + sx sw/4); plus a float32 rounding
    allowance of 1e-5 relative to sum_k |x_k w_k| + |bias| (the epilogue rounds 3-4 times,
    and sx itself is rounded, hence the 1e-5 slack on it)."""
    ax, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    sx = x_scale * (1 + 1e-5)
    k = w.shape[1]
    quant = (ax.sum(-1, keepdims=True) * w_scale / 2 + aw.sum(1) * sx / 2
             + k * sx * w_scale / 4)
    rounding = 1e-5 * (ax @ aw.T + (0 if bias is None else np.abs(bias))) + 1e-30
    return quant + rounding


def ref_linear(x, w, bias=None, per_channel=True):
    """The exact pipeline in NumPy float32: DynamicQuantizeLinear of x, symmetric int8 w,
    int64 matmul, then float32(acc) * float32(sx * sw) + bias."""
    k = w.shape[1]
    x = np.asarray(x, np.float32).reshape(-1, k)
    fin = x[np.isfinite(x)]
    lo = np.float32(min(fin.min(initial=0.0), 0.0))
    hi = np.float32(max(fin.max(initial=0.0), 0.0))
    sx = np.float32((hi - lo) / np.float32(255))
    if sx == 0:
        sx = np.float32(1)
    zp = np.clip(np.rint(np.float32(0) - lo / sx), 0, 255)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / sx) + zp, 0, 255).astype(np.int64)
    sw = w_scales(w, per_channel)
    qw = np.clip(np.rint(w / sw[:, None]), -127, 127).astype(np.int64)
    acc = ((q - int(zp)) @ qw.T).astype(np.int32)
    y = acc.astype(np.float32) * (sx * sw).astype(np.float32)
    return y + bias if bias is not None else y


def make(rng, m, k, n, batch=()):
    x = rng.standard_normal(batch + (m, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 0.3, (n, 1))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return x, w, bias


def w_scales(w, per_channel=True):
    amax = np.abs(w).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(w).max())
    s = (amax / np.float32(127)).astype(np.float32)
    s[s == 0] = 1
    return s


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_linear_within_quantization_bound(isa, rng, per_channel, dtype):
    for m, k, n in [(1, 64, 48), (7, 300, 65), (32, 384, 129), (130, 96, 17)]:
        x, w, bias = make(rng, m, k, n)
        layer = qc.Linear.from_float(w, bias, per_channel=per_channel, dtype=dtype)
        y = layer(x)
        assert y.dtype == np.float32 and y.shape == (m, n)
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + bias
        bound = error_bound(x, w, w_scales(w, per_channel), act_scale(x), bias)
        err = np.abs(y - ref)
        assert np.all(err <= bound), (f"{isa} m={m} k={k} n={n}: max err {err.max()} "
                                      f"at {np.unravel_index(np.argmax(err - bound), err.shape)}")
        # the bound is not vacuous: typical errors are far below it, but not zero
        assert err.max() > 0 and err.mean() < bound.mean()


def test_linear_bit_identical_across_variants_threads_and_dtypes(rng):
    x, w, bias = make(rng, 37, 200, 75, batch=(2,))
    with isa_cap("scalar"):
        want = qc.Linear.from_float(w, bias)(x)
    for name in SUPPORTED_ISAS:
        with isa_cap(name):
            layer = qc.Linear.from_float(w, bias)
            layer_u8 = qc.Linear.from_float(w, bias, dtype="uint8")
            for t in (1, 2, 3):
                with num_threads(t):
                    assert_equal_exact(layer(x), want, f"{name} threads={t}")
                    assert_equal_exact(layer_u8(x), want, f"{name} uint8 weights threads={t}")


def test_linear_shapes_and_input_types(rng):
    x, w, bias = make(rng, 5, 40, 24, batch=(2, 3))
    layer = qc.Linear.from_float(w)
    y = layer(x)
    assert y.shape == (2, 3, 5, 24)
    flat = layer(x.reshape(-1, 40)).reshape(y.shape)
    # activations are quantized per call over the whole tensor, so the same data in another
    # shape gives the same result
    assert_equal_exact(y, flat, "batched == flat")
    assert layer(x[0, 0, 0]).shape == (24,)
    assert_equal_exact(layer(x.astype(np.float64)), y, "float64 input")
    assert layer(x.astype(np.float16)).dtype == np.float32
    xs = x[..., ::-1]
    before = xs.copy()
    layer(xs)
    assert_equal_exact(xs, before, "input unchanged")
    assert layer(np.zeros((0, 40), np.float32)).shape == (0, 24)
    assert_equal_exact(layer(np.zeros((2, 40), np.float32)), np.zeros((2, 24), np.float32),
                       "zeros")


def test_linear_no_inputs():
    layer = qc.Linear.from_float(np.zeros((3, 0), np.float32), np.float32([1, 2, 3]))
    assert_equal_exact(layer(np.zeros((2, 0), np.float32)), np.float32([[1, 2, 3]] * 2),
                       "in_features=0 gives the bias")


def test_linear_zero_weight_rows_and_bias(rng):
    x, w, bias = make(rng, 4, 32, 16)
    w[3] = 0
    y = qc.Linear.from_float(w, bias)(x)
    assert np.all(y[:, 3] == bias[3])


def test_linear_nan_and_inf(rng):
    x, w, bias = make(rng, 3, 32, 16)
    layer = qc.Linear.from_float(w, bias)
    bad = x.copy()
    bad[1, 5] = np.nan
    bad[2, 7] = np.nan
    with pytest.raises(ValueError, match="x: expected no NaN, got 2 NaN values.*37"):
        layer(bad)
    inf = x.copy()
    inf[0, 0] = np.inf
    inf[1, 1] = -np.inf
    y = layer(inf)
    assert np.all(np.isfinite(y))
    assert_equal_exact(y, ref_linear(inf, w, bias), "+-inf saturate to 255 / 0")


@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_exact_pipeline(isa, rng, per_channel):
    for m, k, n in [(1, 64, 48), (7, 300, 65), (130, 96, 17)]:
        x, w, bias = make(rng, m, k, n)
        x[0, 0] = 0.5 * act_scale(x) * 3  # a tie on the quantization grid (up to rounding)
        layer = qc.Linear.from_float(w, bias, per_channel=per_channel)
        assert_equal_exact(layer(x), ref_linear(x, w, bias, per_channel),
                           f"{isa} m={m} k={k} n={n}")
        assert_equal_exact(qc.Linear.from_float(w, per_channel=per_channel)(x),
                           ref_linear(x, w, None, per_channel), "no bias")


def test_linear_bad_input(rng):
    x, w, bias = make(rng, 3, 32, 16)
    layer = qc.Linear.from_float(w, bias)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 32\)"):
        layer(x[:, :31])
    with pytest.raises(TypeError, match="x"):
        layer(x.astype(np.complex64))
    with pytest.raises(ValueError, match="weight"):
        qc.Linear.from_float(w[0])
    with pytest.raises(TypeError, match="weight"):
        qc.Linear.from_float(w.astype(np.int32))
    with pytest.raises(ValueError, match="weight"):
        qc.Linear.from_float(np.where(w > 0.1, np.inf, w))
    with pytest.raises(ValueError, match="bias"):
        qc.Linear.from_float(w, bias[:3])
    with pytest.raises(ValueError, match="dtype"):
        qc.Linear.from_float(w, dtype="int16")
    with pytest.raises(TypeError, match="dtype"):
        qc.Linear.from_float(w, dtype="no-such-type")
    if len(SUPPORTED_ISAS) > 1:
        with isa_cap("scalar"):
            with pytest.raises(ValueError, match="PackedMatrix was packed for"):
                layer(x)


@pytest.mark.filterwarnings("ignore:.*quantize_per_tensor.*:UserWarning")
def test_linear_vs_torch_dynamic(rng):
    torch = pytest.importorskip("torch")
    dq = pytest.importorskip("torch.ao.nn.quantized.dynamic")
    for m, k, n in [(1, 128, 64), (16, 384, 96), (64, 256, 200)]:
        x, w, bias = make(rng, m, k, n)
        sw = w_scales(w)
        tl = dq.Linear(k, n, dtype=torch.qint8)
        qw = torch.quantize_per_channel(torch.from_numpy(w),
                                        torch.from_numpy(sw.astype(np.float64)),
                                        torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        tl.set_weight_bias(qw, torch.from_numpy(bias))
        with torch.no_grad():
            yt = tl(torch.from_numpy(x)).numpy()
        y = qc.Linear.from_float(w, bias)(x)
        # torch quantizes activations with reduce_range (7 bits: 127 levels), quantc with 255;
        # both are within their own bound of the float result, so within the sum of each other
        bound = (error_bound(x, w, sw, act_scale(x), bias)
                 + error_bound(x, w, sw, act_scale(x, 127), bias))
        err = np.abs(y - yt)
        assert np.all(err <= bound), f"m={m} k={k} n={n}: max diff {err.max()}"
        assert np.corrcoef(y.ravel(), yt.ravel())[0, 1] > 0.999


def test_linear_out_argument(rng):
    x, w, bias = make(rng, 3, 32, 16)
    layer = qc.Linear.from_float(w, bias)
    out = np.empty((3, 16), np.float32)
    assert layer(x, out=out) is out
    assert_equal_exact(out, layer(x), "out=")
    with pytest.raises(ValueError, match="out: expected shape"):
        layer(x, out=np.empty((3, 15), np.float32))
