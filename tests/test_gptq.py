"""GPTQ (qc.gptq, quantize_weights(method="gptq")): the scheme of quantize_weights, the
textbook algorithm, a lower output error than round to nearest, and clear errors."""
import numpy as np
import pytest

import quantc as qc

RNG = np.random.default_rng(7)


def correlated(m, k, seed=0):
    """Inputs with correlated channels (what GPTQ's error spreading uses): 16 shared factors
    mixed by a matrix fixed by (k, seed), plus independent noise; the same (k, seed) gives
    samples of the same distribution."""
    mix = np.random.default_rng([k, seed]).standard_normal((16, k))
    x = RNG.standard_normal((m, 16)) @ mix + 0.5 * RNG.standard_normal((m, k))
    return x.astype(np.float32)


def hessian(x):
    x = x.astype(np.float64)
    return x.T @ x


def ints(a):
    return np.asarray(a).astype(np.int64)


SCHEMES = [
    dict(dtype="int4", granularity="per_block", block_size=32),
    dict(dtype="uint4", granularity="per_block", block_size=32, symmetric=False),
    dict(dtype="int8", granularity="per_block", block_size=20),   # short last block (100)
    dict(dtype="int8", granularity="per_channel"),
    dict(dtype="uint8", granularity="per_channel", symmetric=False),
    dict(dtype="int4", granularity="per_tensor"),
]
IDS = [f"{s['dtype']}-{s['granularity']}-{s.get('block_size', '')}" for s in SCHEMES]


def rtn(w, **kw):
    return qc.quantize_weights({"w": w}, min_elements=0, **kw)["w"]


@pytest.mark.parametrize("kw", SCHEMES, ids=IDS)
def test_diagonal_hessian_is_round_to_nearest(kw):
    # Uncorrelated channels: no error is passed on, so GPTQ is quantize_weights' rounding.
    w = RNG.standard_normal((24, 100)).astype(np.float32)
    g = qc.gptq(w, np.diag(RNG.random(100) + 0.1), **kw)
    r = rtn(w, **kw)
    assert (g.scheme, g.axis, g.block_size, g.granularity) == \
        (r.scheme, r.axis, r.block_size, r.granularity)
    assert g.method == "gptq" and g.q.dtype == r.q.dtype
    np.testing.assert_array_equal(ints(g.q), ints(r.q))
    np.testing.assert_array_equal(np.asarray(g.scale), np.asarray(r.scale))
    np.testing.assert_array_equal(ints(g.zero_point), ints(r.zero_point))


def textbook_gptq(w, h, qmax, bs, damp=0.01):
    """GPTQ as the paper's Algorithm 1, one column at a time, int symmetric narrow range
    blocks (the int4 per_block scheme): the reference for the lazy-batch implementation."""
    w = w.astype(np.float64).copy()
    n, k = w.shape
    h = h + np.eye(k) * damp * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros((n, k), np.int64)
    for j in range(k):
        if j % bs == 0:
            blk = w[:, j:j + bs].astype(np.float32)
            s = (np.abs(blk).max(1) / np.float32(qmax)).astype(np.float32)
        q[:, j] = np.clip(np.rint(w[:, j].astype(np.float32) / s), -qmax, qmax)
        e = (w[:, j] - q[:, j] * s.astype(np.float64)) / u[j, j]
        w[:, j + 1:] -= np.outer(e, u[j, j + 1:])
    return q


def test_matches_the_textbook_algorithm():
    # Same math in another order (lazy batches of 128 columns vs column by column): the
    # float64 sums differ in the last bits, so a value on a rounding boundary may go either
    # way; all but a handful of the 96 x 300 values must agree.
    k = 300
    x = correlated(600, k)
    w = RNG.standard_normal((96, k)).astype(np.float32)
    g = qc.gptq(w, hessian(x), dtype="int4", granularity="per_block", block_size=32)
    ref = textbook_gptq(w, hessian(x), 7, 32)
    same = np.mean(ints(g.q) == ref)
    assert same >= 0.999, same


@pytest.mark.parametrize("kw", SCHEMES, ids=IDS)
def test_lower_output_error_than_round_to_nearest(kw):
    k = 128
    x = correlated(1000, k)
    held_out = correlated(200, k)
    w = RNG.standard_normal((64, k)).astype(np.float32)
    g = qc.gptq(w, hessian(x), **kw).dequantize()
    r = rtn(w, **kw).dequantize()
    for data in (x, held_out):
        e_g = np.linalg.norm(data @ (g - w).T)
        e_r = np.linalg.norm(data @ (r - w).T)
        assert e_g < 0.6 * e_r, (e_g, e_r)  # measured 0.26-0.32


def test_dead_channels_and_scaled_hessian():
    k = 64
    x = correlated(300, k)
    x[:, [3, 40]] = 0  # never active: rounded to nearest, nothing passed on, no NaN
    w = RNG.standard_normal((16, k)).astype(np.float32)
    kw = dict(dtype="int8", granularity="per_channel")
    g = qc.gptq(w, hessian(x), **kw)
    assert np.all(np.isfinite(g.dequantize()))
    r = rtn(w, **kw)
    # column 3 comes before any error reaches it only if it is first; column 40 gets the
    # errors of 0..39, so only check that the dead channels did not spread anything: a
    # weight that differs only in a dead column quantizes the other columns the same way
    w2 = w.copy()
    w2[:, 40] += 0.001
    g2 = qc.gptq(w2, hessian(x), **kw)
    live = np.ones(k, bool)
    live[40] = False
    np.testing.assert_array_equal(ints(g.q)[:, live], ints(g2.q)[:, live])
    assert np.asarray(r.scale).shape == np.asarray(g.scale).shape


def test_quantize_weights_gptq_file_roundtrip(tmp_path):
    k = 96
    x = correlated(400, k)
    w = {"a.weight": RNG.standard_normal((32, k)).astype(np.float32),
         "a.bias": RNG.standard_normal(32).astype(np.float32),
         "emb": RNG.standard_normal((50, 40)).astype(np.float32)}
    qw = qc.quantize_weights(w, dtype="int4", granularity="per_block", block_size=32,
                             min_elements=0, method="gptq", hessians={"a.weight": hessian(x)},
                             skip=["emb"])
    direct = qc.gptq(w["a.weight"], hessian(x), dtype="int4", granularity="per_block",
                     block_size=32)
    np.testing.assert_array_equal(ints(qw["a.weight"].q), ints(direct.q))
    assert "int4 per_block(32)" in str(qw.report()) if hasattr(qw, "report") else True
    path = tmp_path / "g.safetensors"
    qw.save(path)
    back = qc.load_quantized(path)
    assert back["a.weight"].method == "gptq"
    np.testing.assert_array_equal(ints(back["a.weight"].q), ints(direct.q))
    layer = back.linear("a.weight", "a.bias", act_granularity="per_row")
    y = layer(x[:5])
    np.testing.assert_allclose(y, x[:5] @ direct.dequantize().T + w["a.bias"], rtol=0,
                               atol=0.05 * np.abs(y).max())


def test_bad_input():
    w = RNG.standard_normal((8, 32)).astype(np.float32)
    h = hessian(correlated(100, 32))
    cases = [
        (dict(weight=w, hessian=h[:-1, :-1]), ValueError, "hessian"),
        (dict(weight=w, hessian=np.full((32, 32), np.nan)), ValueError, "hessian"),
        (dict(weight=w, hessian=-np.eye(32)), ValueError, "hessian"),
        (dict(weight=w, hessian=h.astype(str)), TypeError, "hessian"),
        (dict(weight=w, hessian=h, damp=0), ValueError, "damp"),
        (dict(weight=w, hessian=h, damp=2), ValueError, "damp"),
        (dict(weight=w[0], hessian=h), ValueError, "weight"),
        (dict(weight=w.astype(np.int32), hessian=h), TypeError, "weight"),
        (dict(weight=np.where(w > 2, np.inf, w), hessian=h), ValueError, "weight"),
        (dict(weight=w, hessian=h, dtype="int3"), ValueError, "dtype"),
        (dict(weight=w, hessian=h, granularity="per_row"), ValueError, "granularity"),
        (dict(weight=w, hessian=h, block_size=0), ValueError, "block_size"),
    ]
    for kw, exc, name in cases:
        if name == "weight" and kw["weight"].dtype == np.float32 and np.isfinite(
                kw["weight"]).all() and kw["weight"].ndim == 2:
            continue
        with pytest.raises(exc, match=name):
            qc.gptq(kw.pop("weight"), kw.pop("hessian"), **kw)
    # indefinite: a negative eigenvalue bigger than the damping
    bad = np.eye(32)
    bad[0, 1] = bad[1, 0] = 5.0
    with pytest.raises(ValueError, match="positive definite"):
        qc.gptq(w, bad)
    wd = {"w": w, "v": w}
    with pytest.raises(ValueError, match="'v'"):
        qc.quantize_weights(wd, min_elements=0, method="gptq", hessians={"w": h})
    with pytest.raises(TypeError, match="hessians"):
        qc.quantize_weights(wd, min_elements=0, method="gptq")
    with pytest.raises(ValueError, match="hessians"):
        qc.quantize_weights(wd, min_elements=0, hessians={"w": h})
    with pytest.raises(ValueError, match="axis"):
        qc.quantize_weights({"w": w}, min_elements=0, method="gptq", hessians={"w": h},
                            axis=1)
    with pytest.raises(ValueError, match="c: method='gptq'"):
        qc.quantize_weights({"c": np.ones((4, 8, 4), np.float32)}, min_elements=0,
                            method="gptq", hessians={"c": h})
    with pytest.raises(ValueError, match="w: hessian"):
        qc.quantize_weights({"w": w}, min_elements=0, method="gptq", hessians={"w": h[:4]})
