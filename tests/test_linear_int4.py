"""4-bit Linear (int4/uint4 blocked weights, int8 per-row activations, csrc/q4gemm): every
kernel variant, path and thread count equals the scalar kernel bit for bit, and the scalar
kernel equals a NumPy reference of the formula documented in qc.Linear."""
import numpy as np
import pytest

import quantc as qc
from quantc import _C
from conftest import assert_equal_exact, num_threads, SUPPORTED_ISAS

# the levels that have a q4gemm variant of their own (others run the next one down)
Q4_ISAS = [i for i in ("scalar", "avx2", "avx512vnni") if i in SUPPORTED_ISAS]


def quantize_x(x, per_row=True):
    """Symmetric int8 activations: (q int64 (M, K), xs float32 (M,))."""
    x = np.asarray(x, np.float32)
    fin = np.where(np.isfinite(x), np.abs(x), 0).astype(np.float32)
    amax = fin.max(axis=1, initial=0) if per_row else np.full(x.shape[0], fin.max(initial=0))
    xs = (amax.astype(np.float32) / np.float32(127)).astype(np.float32)
    xs[xs == 0] = 1
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / xs[:, None]), -127, 127).astype(np.int64)
    return q, xs


def ref_q4(x, w, ws, zw, bs, bias=None, per_row=True):
    """The documented formula: int32 per block, float32 across blocks in order, no FMA."""
    x = np.asarray(x, np.float32).reshape(-1, w.shape[1])
    m, k = x.shape
    n, nb = ws.shape
    q, xs = quantize_x(x, per_row)
    wv = w.astype(np.int64)
    z = np.zeros((n, nb), np.int64) if zw is None else zw.astype(np.int64)
    y = np.zeros((m, n), np.float32)
    for b in range(nb):
        sl = slice(b * bs, min(k, (b + 1) * bs))
        acc = q[:, sl] @ wv[:, sl].T - q[:, sl].sum(axis=1)[:, None] * z[None, :, b]
        assert np.abs(acc).max(initial=0) < 2 ** 31
        s = (xs[:, None] * ws[None, :, b]).astype(np.float32)
        y = (y + (acc.astype(np.int32).astype(np.float32) * s)).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32)).astype(np.float32)
    return y


def make(rng, n, k, bs, signed, with_zp, extreme=False):
    nb = -(-k // bs)
    lo, hi = (-8, 7) if signed else (0, 15)
    if extreme:
        w = rng.choice(np.array([lo, hi], np.int8), (n, k))
    else:
        w = rng.integers(lo, hi + 1, (n, k)).astype(np.int8)
    ws = rng.uniform(1e-3, 0.2, (n, nb)).astype(np.float32)
    zw = None
    if with_zp:
        zw = rng.integers(lo, hi + 1, (n, nb)).astype(np.int8)
        if extreme:
            zw[::2] = lo if signed else hi
    return w, ws, zw


def run(x, cap, bias, per_row=True, isa=None, path=0):
    return _C._q4_linear_forward(x, cap, bias, None, per_row, isa, path)


SHAPES = [  # (m, k, n, bs): tile remainders, short last blocks, M = 1, 2..17, 128
    (1, 32, 16, 32), (1, 33, 1, 32), (1, 100, 17, 32), (1, 4096 + 32, 40, 128),
    (2, 64, 15, 64), (3, 257, 33, 64), (5, 96, 31, 32), (7, 160, 16, 128),
    (8, 64, 48, 32), (9, 33, 7, 32), (15, 128, 47, 64), (16, 100, 17, 32),
    (17, 300, 50, 64), (128, 256, 64, 128), (33, 64, 1, 32),
    (2, 40, 20, 128), (20, 40, 3, 64),  # block_size > K: one short block per row
]


@pytest.mark.parametrize("m,k,n,bs", SHAPES)
@pytest.mark.parametrize("signed,with_zp", [(True, False), (True, True), (False, True)])
def test_scalar_equals_reference(m, k, n, bs, signed, with_zp):
    rng = np.random.default_rng(m * 1000 + k + n + bs)
    w, ws, zw = make(rng, n, k, bs, signed, with_zp)
    cap = _C._q4_pack(w, ws, zw, bs, signed)
    x = rng.standard_normal((m, k)).astype(np.float32) * 3
    x[0, 0] = 40.0  # an outlier in row 0 only
    bias = rng.standard_normal(n).astype(np.float32)
    for per_row in (True, False):
        for b in (None, bias):
            want = ref_q4(x, w, ws, zw, bs, b, per_row)
            for path in (1, 2):
                got = run(x, cap, b, per_row, "scalar", path)
                assert_equal_exact(got, want, f"m={m} k={k} n={n} bs={bs} signed={signed} "
                                   f"zp={with_zp} per_row={per_row} bias={b is not None} "
                                   f"path={path}")


@pytest.mark.parametrize("m,k,n,bs", SHAPES)
@pytest.mark.parametrize("signed,with_zp", [(True, False), (False, True)])
def test_variants_equal_scalar(m, k, n, bs, signed, with_zp):
    rng = np.random.default_rng(7 * m + k + 3 * n + bs)
    for extreme in (False, True):
        w, ws, zw = make(rng, n, k, bs, signed, with_zp, extreme)
        cap = _C._q4_pack(w, ws, zw, bs, signed)
        x = rng.standard_normal((m, k)).astype(np.float32)
        if extreme:  # every activation at +-127 after quantization
            x = np.sign(x).astype(np.float32) + (x == 0)
        bias = rng.standard_normal(n).astype(np.float32)
        want = run(x, cap, bias, True, "scalar", 1)
        for isa in Q4_ISAS:
            for path in (0, 1, 2):
                for t in (1, 2, 3):
                    with num_threads(t):
                        got = run(x, cap, bias, True, isa, path)
                    assert_equal_exact(got, want, f"isa={isa} path={path} threads={t} m={m} "
                                       f"k={k} n={n} bs={bs} signed={signed} "
                                       f"extreme={extreme}")


@pytest.mark.parametrize("wd", ["int4", "uint4"])
def test_linear_every_isa_level(isa, wd):
    """Through the public API, under every ISA cap (the fixture), big enough for threads."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((70, 200)).astype(np.float32)
    bias = rng.standard_normal(70).astype(np.float32)
    layer = qc.Linear.from_float(w, bias, weight_dtype=wd, block_size=64,
                                 act_granularity="per_row")
    q = np.asarray(layer_qt(w, wd, 64).q).astype(np.int8)
    x = rng.standard_normal((2, 9, 200)).astype(np.float32)
    want = ref_q4(x, q, layer.weight_scale, layer.weight_zero_point, 64, bias).reshape(2, 9, 70)
    for t in (1, 2):
        with num_threads(t):
            assert_equal_exact(layer(x), want, f"isa={isa} threads={t}")
            assert_equal_exact(layer(x[0, 0]), want[0, 0], f"isa={isa} 1-d x")


def layer_qt(w, wd, bs):
    from quantc.weights import _quantize_tensor
    return _quantize_tensor("weight", w, wd, "per_block", 1, bs, wd == "int4", True, "minmax",
                            99.99)[0]


def test_special_activations():
    rng = np.random.default_rng(11)
    w, ws, zw = make(rng, 20, 64, 32, True, False)
    cap = _C._q4_pack(w, ws, zw, 32, True)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    x[1] = 0  # zero row: scale 1, output 0
    x[2, 3] = np.inf
    x[3, 5] = -np.inf
    x[4, :] = 1e-30  # tiny: amax / 127 underflows towards subnormals
    want = ref_q4(x, w, ws, None, 32)
    for isa in Q4_ISAS:
        assert_equal_exact(run(x, cap, None, True, isa), want, f"isa={isa}")
    assert np.all(run(x, cap, None)[1] == 0)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected no NaN"):
        run(x, cap, None)


@pytest.mark.parametrize("wd,bs", [("int4", 32), ("uint4", 32), ("int4", 128), ("uint4", 64)])
def test_accuracy_against_dequantized(wd, bs):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((96, 512)).astype(np.float32)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    qw = qc.quantize_weights({"w": w}, dtype=wd, granularity="per_block", block_size=bs,
                             symmetric=wd == "int4")
    layer = qc.Linear.from_quantized(qw["w"], act_granularity="per_row")
    y = layer(x)
    yd = x @ qw["w"].dequantize().T
    # activation error only: |x - x_hat| <= xs / 2 per element
    xs = np.abs(x).max(axis=1) / 127
    bound = (xs[:, None] / 2) * np.abs(qw["w"].dequantize()).sum(axis=1)[None, :] + 1e-3
    assert np.all(np.abs(y - yd) <= bound)
    # against float weights: the relative error of 4-bit block quantization
    rel = np.linalg.norm(y - x @ w.T) / np.linalg.norm(x @ w.T)
    assert rel < 0.15, rel


def test_from_quantized_file_roundtrip(tmp_path):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 100)).astype(np.float32)  # 100 % 32 != 0: short last block
    qw = qc.quantize_weights({"w": w}, dtype="uint4", granularity="per_block", block_size=32,
                             symmetric=False, min_elements=1)
    path = tmp_path / "w.safetensors"
    qw.save(path)
    back = qc.load_quantized(path)
    x = rng.standard_normal((3, 100)).astype(np.float32)
    y1 = qc.Linear.from_quantized(qw["w"], act_granularity="per_row")(x)
    y2 = back.linear("w", act_granularity="per_row")(x)
    assert_equal_exact(y2, y1, "loaded file")
    qt = back["w"]
    want = ref_q4(x, np.asarray(qt.q).astype(np.int8), qt.scale.reshape(40, 4),
                  np.asarray(qt.zero_point).astype(np.int8).reshape(40, 4), 32)
    assert_equal_exact(y2, want, "reference")


def test_stays_4bit():
    w = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    layer = qc.Linear.from_float(w, weight_dtype="int4", block_size=32)
    n, k, bs, nbytes, bits = _C._q4_info(layer.packed)
    assert (n, k, bs, bits) == (256, 1024, 32, 4)
    assert nbytes == 256 * 1024 // 2 + 256 * 32 * 4  # nibbles + float32 scales, no zero points
    assert layer.weight_dtype == "int4" and layer.block_size == 32
    assert "block_size=32" in repr(layer)


def test_out_and_overlap():
    rng = np.random.default_rng(1)
    layer = qc.Linear.from_float(rng.standard_normal((32, 64)).astype(np.float32),
                                 weight_dtype="int4", block_size=32)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    want = layer(x)
    out = np.empty((3, 32), np.float32)
    assert layer(x, out=out) is out
    assert_equal_exact(out, want, "out=")
    with pytest.raises(ValueError, match="out"):
        layer(x, out=np.empty((3, 31), np.float32))


def test_bad_input():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    for bs in (16, 48, 0, -32, 100):
        with pytest.raises(ValueError, match="block_size"):
            qc.Linear.from_float(w, weight_dtype="int4", block_size=bs)
    for bs in (None, True, "32", 32.0):
        with pytest.raises(TypeError, match="block_size"):
            qc.Linear.from_float(w, weight_dtype="int4", block_size=bs)
    with pytest.raises(ValueError, match="weight_dtype"):
        qc.Linear.from_float(w, weight_dtype="int2", block_size=32)
    with pytest.raises(ValueError, match="block_size"):
        qc.Linear.from_float(w, weight_dtype="int8", block_size=32)
    with pytest.raises(ValueError, match="weight"):
        qc.Linear.from_float(w[0], weight_dtype="int4", block_size=32)
    with pytest.raises(TypeError, match="weight"):
        qc.Linear.from_float(w.astype(np.int32), weight_dtype="int4", block_size=32)
    with pytest.raises(ValueError, match="act_granularity"):
        qc.Linear.from_float(w, weight_dtype="int4", block_size=32, act_granularity="row")
    layer = qc.Linear.from_float(w, weight_dtype="uint4", block_size=32)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 64\)"):
        layer(np.zeros((2, 63), np.float32))
    with pytest.raises(TypeError, match="x"):
        layer(np.zeros((2, 64), np.complex64))
    with pytest.raises(ValueError, match="bias"):
        qc.Linear.from_float(w, np.zeros(15), weight_dtype="int4", block_size=32)
    # QuantizedTensor schemes the 4-bit kernels do not run
    qw = qc.quantize_weights({"w": w}, dtype="int4", granularity="per_channel", min_elements=1)
    with pytest.raises(ValueError, match="qt: scheme"):
        qc.Linear.from_quantized(qw["w"])
    qw = qc.quantize_weights({"w": w}, dtype="int4", granularity="per_block", block_size=16,
                             min_elements=1)
    with pytest.raises(ValueError, match="qt: scheme .*block_size 16"):
        qc.Linear.from_quantized(qw["w"])
    qw = qc.quantize_weights({"w": w}, dtype="int4", granularity="per_tensor", min_elements=1)
    with pytest.raises(ValueError, match="qt: scheme"):
        qc.Linear.from_quantized(qw["w"])
    with pytest.raises(TypeError, match="qt"):
        qc.Linear.from_quantized(w)
    # the binding checks what it packs
    wi = np.zeros((4, 64), np.int8)
    s = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="w: expected int4 values"):
        _C._q4_pack(wi + 8, s, None, 32, True)
    with pytest.raises(ValueError, match="w: expected uint4 values"):
        _C._q4_pack(wi - 1, s, None, 32, False)
    with pytest.raises(TypeError, match="w"):
        _C._q4_pack(wi.astype(np.int16), s, None, 32, True)
    with pytest.raises(ValueError, match="scale: expected shape"):
        _C._q4_pack(wi, s[:, :1], None, 32, True)
    with pytest.raises(ValueError, match="scale: expected positive"):
        _C._q4_pack(wi, s * 0, None, 32, True)
    with pytest.raises(ValueError, match="zero_point: expected shape"):
        _C._q4_pack(wi, s, np.zeros((4, 3), np.int8), 32, True)
    with pytest.raises(ValueError, match="zero_point: expected values"):
        _C._q4_pack(wi, s, np.full((4, 2), 16, np.int8), 32, False)
    with pytest.raises(ValueError, match="block_size"):
        _C._q4_pack(wi, s, None, 40, True)
    with pytest.raises(TypeError, match="packed"):
        _C._q4_linear_forward(np.zeros((1, 64), np.float32), object(), None)


def make8(rng, n, k, bs, signed, with_zp):
    nb = -(-k // bs)
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    w = rng.integers(info.min, info.max + 1, (n, k)).astype(dt)
    w[0, :] = info.min  # extremes: |acc| up to bs * 127 * 255
    w[-1, :] = info.max
    ws = rng.uniform(1e-3, 0.2, (n, nb)).astype(np.float32)
    zw = rng.integers(info.min, info.max + 1, (n, nb)).astype(dt) if with_zp else None
    if with_zp:
        zw[0] = info.max
    return w, ws, zw


@pytest.mark.parametrize("m,k,n,bs", SHAPES)
@pytest.mark.parametrize("signed,with_zp", [(True, False), (True, True), (False, True),
                                            (False, False)])
def test_8bit_blocks_exact(m, k, n, bs, signed, with_zp):
    """int8/uint8 weights with several blocks per row on the same kernels and formula."""
    rng = np.random.default_rng(31 * m + k + n + bs)
    w, ws, zw = make8(rng, n, k, bs, signed, with_zp)
    cap = _C._q4_pack(w, ws, zw, bs, signed, 8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, ::3] = 100.0  # many activations at +127
    bias = rng.standard_normal(n).astype(np.float32)
    want = ref_q4(x, w, ws, zw, bs, bias)
    assert_equal_exact(run(x, cap, bias, True, "scalar", 1), want, "scalar vs reference")
    for isa in Q4_ISAS:
        for path in (0, 1, 2):
            for t in (1, 2):
                with num_threads(t):
                    got = run(x, cap, bias, True, isa, path)
                assert_equal_exact(got, want, f"isa={isa} path={path} threads={t} m={m} k={k} "
                                   f"n={n} bs={bs} signed={signed} zp={with_zp}")


@pytest.mark.parametrize("dtype,symmetric", [("int8", True), ("uint8", False), ("int8", False)])
def test_int8_several_blocks_from_quantized(dtype, symmetric):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 200)).astype(np.float32)
    qw = qc.quantize_weights({"w": w}, dtype=dtype, granularity="per_block", block_size=64,
                             symmetric=symmetric, min_elements=1)
    qt = qw["w"]
    layer = qc.Linear.from_quantized(qt, act_granularity="per_row")
    assert _C._q4_info(layer.packed)[4] == 8 and layer.block_size == 64
    x = rng.standard_normal((3, 200)).astype(np.float32)
    zw = np.asarray(qt.zero_point).reshape(40, 4)
    want = ref_q4(x, np.asarray(qt.q), qt.scale.reshape(40, 4), zw if zw.any() else None, 64)
    assert_equal_exact(layer(x), want, f"{dtype} symmetric={symmetric}")
    rel = np.linalg.norm(layer(x) - x @ w.T) / np.linalg.norm(x @ w.T)
    assert rel < 0.02, rel
    qw = qc.quantize_weights({"w": w}, dtype=dtype, granularity="per_block", block_size=48,
                             min_elements=1)
    with pytest.raises(ValueError, match="qt: scheme .*block_size 48"):
        qc.Linear.from_quantized(qw["w"])
