"""SmoothQuant for Linear: qc.smooth_factors and Linear(..., smooth=s).

The contract (Linear's class doc): a smoothed layer quantizes ``weight * s`` and runs on
``x * float32(1 / s)``; so it must give the same bits as an unsmoothed layer built from
``weight * s`` called on ``x * float32(1 / s)``, for every weight scheme."""
import numpy as np
import pytest

import quantc as qc
from quantc.weights import quantize_weights

RNG = np.random.default_rng(1234)


def outlier_problem(m=9, k=96, n=40, col=7, factor=60.0):
    """Activations with one outlier input channel, as transformer layers have."""
    w = RNG.standard_normal((n, k)).astype(np.float32) * 0.1
    b = RNG.standard_normal(n).astype(np.float32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    x[:, col] *= np.float32(factor)
    return x, w, b


def reference_factors(amax, w, alpha):
    a = np.asarray(amax, np.float64)
    wm = np.abs(np.asarray(w, np.float64)).max(0)
    s = np.ones(len(a))
    ok = (a > 0) & (wm > 0)
    s[ok] = a[ok] ** alpha / wm[ok] ** (1 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


@pytest.mark.parametrize("alpha", [0, 0.25, 0.5, 0.85, 1])
def test_smooth_factors_formula(alpha):
    x, w, _ = outlier_problem()
    amax = np.abs(x).max(0)
    amax[3] = 0        # a channel never active -> 1
    w[:, 5] = 0        # an all-zero weight column -> 1
    amax[9] = 1e30     # clamped to 1e4 (alpha > 0)
    s = qc.smooth_factors(amax, w, alpha=alpha)
    assert s.dtype == np.float32 and s.shape == (w.shape[1],)
    np.testing.assert_array_equal(s, reference_factors(amax, w, alpha))
    assert s[3] == 1 and s[5] == 1
    if alpha > 0:
        assert s[9] == np.float32(1e4)
    # the outlier channel's range is shared: at alpha 0.5 both sides get sqrt(a * w)
    if alpha == 0.5:
        k = 7
        a_s = amax[k] / s[k]
        w_s = np.abs(w[:, k]).max() * s[k]
        np.testing.assert_allclose(a_s, w_s, rtol=1e-6)


def test_smooth_factors_bad_input():
    _, w, _ = outlier_problem()
    amax = np.ones(w.shape[1], np.float32)
    cases = [
        (dict(act_absmax=amax[:-1], weight=w), ValueError, "act_absmax"),
        (dict(act_absmax=-amax, weight=w), ValueError, "act_absmax"),
        (dict(act_absmax=np.where(np.arange(len(amax)) == 4, np.nan, amax), weight=w),
         ValueError, "act_absmax"),
        (dict(act_absmax=amax.astype(str), weight=w), TypeError, "act_absmax"),
        (dict(act_absmax=amax, weight=w.astype(np.int32)), TypeError, "weight"),
        (dict(act_absmax=amax, weight=w[0]), ValueError, "weight"),
        (dict(act_absmax=amax, weight=w, alpha=1.5), ValueError, "alpha"),
        (dict(act_absmax=amax, weight=w, alpha=-0.1), ValueError, "alpha"),
        (dict(act_absmax=amax, weight=w, alpha="0.5"), TypeError, "alpha"),
        (dict(act_absmax=amax, weight=w, alpha=True), TypeError, "alpha"),
    ]
    for kw, exc, name in cases:
        with pytest.raises(exc, match=name):
            qc.smooth_factors(kw.pop("act_absmax"), kw.pop("weight"), **kw)
    wi = w.copy()
    wi[2, 3] = np.inf
    with pytest.raises(ValueError, match="weight"):
        qc.smooth_factors(amax, wi)


SCHEMES = [
    ("int8 per-channel", dict()),
    ("uint8 per-tensor", dict(per_channel=False, dtype="uint8")),
    ("int4 b32", dict(weight_dtype="int4", block_size=32)),
    ("uint4 b64", dict(weight_dtype="uint4", block_size=64)),
]


@pytest.mark.parametrize("label,kw", SCHEMES, ids=[s[0] for s in SCHEMES])
@pytest.mark.parametrize("gran", ["per_row", "per_tensor"])
def test_smoothed_layer_is_the_documented_formula(label, kw, gran):
    x, w, b = outlier_problem(k=100)  # a short last block for the 4-bit schemes
    s = qc.smooth_factors(np.abs(x).max(0), w)
    layer = qc.Linear.from_float(w, b, act_granularity=gran, smooth=s, **kw)
    plain = qc.Linear.from_float(w * s, b, act_granularity=gran, **kw)
    r = (np.float32(1) / s).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    np.testing.assert_array_equal(x, x0)  # the input is not modified
    np.testing.assert_array_equal(y, plain(x * r))
    np.testing.assert_array_equal(layer.smooth, s)
    assert not layer.smooth.flags.writeable
    assert "smooth=True" in repr(layer)
    # float64, 3-D input and out= take the same path
    np.testing.assert_array_equal(layer(x.astype(np.float64)), y)
    np.testing.assert_array_equal(layer(np.stack([x, x]))[1], y)
    out = np.empty_like(y)
    assert layer(x, out=out) is out
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("label,kw", SCHEMES[::2], ids=[s[0] for s in SCHEMES[::2]])
def test_smoothing_fixes_an_outlier_channel(label, kw):
    # One input channel 60x the others: per-token int8 activations lose the other channels;
    # smoothing moves that range into the weights. The error must drop by half at least
    # (measured: int8 ~4x, int4 ~1.4x is the weights' own floor, hence the looser 4-bit bar).
    x, w, b = outlier_problem(m=32, k=256, n=64)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    s = qc.smooth_factors(np.abs(x).max(0), w)
    err = [np.sqrt(np.mean((qc.Linear.from_float(w, b, act_granularity="per_row", smooth=sm,
                                                 **kw)(x) - ref) ** 2))
           for sm in (None, s)]
    assert err[1] < err[0] * (0.5 if not kw else 0.9), err


def test_from_quantized_with_smooth():
    x, w, b = outlier_problem(k=128)
    s = qc.smooth_factors(np.abs(x).max(0), w)
    r = (np.float32(1) / s).astype(np.float32)
    for kw in (dict(dtype="int8", granularity="per_channel"),
               dict(dtype="int4", granularity="per_block", block_size=32),
               dict(dtype="int8", granularity="per_block", block_size=64)):
        qt = quantize_weights({"w": w * s}, min_elements=0, **kw)["w"]
        layer = qc.Linear.from_quantized(qt, b, act_granularity="per_row", smooth=s)
        plain = qc.Linear.from_quantized(qt, b, act_granularity="per_row")
        np.testing.assert_array_equal(layer(x), plain(x * r), err_msg=str(kw))
    with pytest.raises(ValueError, match="smooth"):
        qc.Linear.from_quantized(qt, b, smooth=s[:-1])


def test_smooth_bad_input():
    x, w, b = outlier_problem()
    k = w.shape[1]
    good = np.ones(k, np.float32)
    for bad, exc in ((good[:-1], ValueError), (np.zeros(k), ValueError), (-good, ValueError),
                     (np.full(k, np.inf), ValueError), (np.full(k, np.nan), ValueError),
                     (np.full(k, 1e-45), ValueError), (good.astype(str), TypeError),
                     (good.reshape(1, k), ValueError)):
        for kw in (dict(), dict(weight_dtype="int4", block_size=32)):
            with pytest.raises(exc, match="smooth"):
                qc.Linear.from_float(w, b, smooth=bad, **kw)
    with pytest.raises(ValueError, match="smooth"):
        qc.Linear.from_float(w * np.float32(1e30), b, smooth=np.full(k, 1e10, np.float32))
    layer = qc.Linear.from_float(w, b, act_granularity="per_row", smooth=good * 2)
    # integer x is taken as the unsmoothed layer takes it; bad x is still reported by the
    # kernel binding, naming x
    xi = np.rint(x).astype(np.int32)
    np.testing.assert_array_equal(layer(xi), layer(xi.astype(np.float32)))
    for bad in (x > 0, x.astype(np.complex64)):
        with pytest.raises(TypeError, match="x"):
            layer(bad)
    with pytest.raises(ValueError, match="x"):
        layer(x[:, :-1])
    xn = x.copy()
    xn[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layer(xn)


def test_quantized_weights_linear_smooth_by_name(tmp_path):
    x, w, b = outlier_problem(k=64)
    s = qc.smooth_factors(np.abs(x).max(0), w)
    qw = quantize_weights({"fc.weight": w * s, "fc.bias": b, "fc.smooth": s}, min_elements=64,
                          dtype="int4", granularity="per_block", block_size=32)
    path = tmp_path / "fc.safetensors"
    qw.save(path)
    back = qc.load_quantized(path)
    layer = back.linear("fc.weight", "fc.bias", act_granularity="per_row", smooth="fc.smooth")
    direct = qc.Linear.from_quantized(qw["fc.weight"], b, act_granularity="per_row", smooth=s)
    np.testing.assert_array_equal(layer(x), direct(x))
    for bad in ("nope", "fc.weight"):
        with pytest.raises(KeyError, match="smooth"):
            back.linear("fc.weight", smooth=bad)
