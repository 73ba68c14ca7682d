"""matmul_integer / qlinear_matmul / pack_matrix: exact vs NumPy int64, every variant and layout."""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact, isa_cap, num_threads, SUPPORTED_ISAS

DTYPES = [np.int8, np.uint8]
COMBOS = [(da, db) for da in DTYPES for db in DTYPES]


def ref_matmul(a, b, za=None, zb=None):
    """The ground truth: int64 matmul of the zero-point-shifted inputs, wrapped to int32."""
    a64 = np.asarray(a).astype(np.int64)
    b64 = np.asarray(b).astype(np.int64)
    if za is not None:
        za = np.asarray(za).astype(np.int64)
        a64 = a64 - (za[:, None] if za.ndim == 1 else za)    # per row (M,) or scalar
    if zb is not None:
        b64 = b64 - np.asarray(zb).astype(np.int64)          # per column (N,) broadcasts
    return (a64 @ b64).astype(np.int32)  # astype wraps modulo 2**32, like the kernels


def rand(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


# Sizes around the tiles: AVX-512 VNNI 8 x 32 (panels of 16), AVX2 4 x 16, KR = 4, and the
# driver's row blocks (96) and thread split (multiples of 32).
MS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 97, 193]
NS = [1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65]
KS = [1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 300]


@pytest.mark.parametrize("da,db", COMBOS)
def test_tile_remainders(isa, rng, da, db):
    for i, m in enumerate(MS):
        for j, n in enumerate(NS):
            k = KS[(i + 3 * j) % len(KS)]
            a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
            za, zb = rand(rng, (), da), rand(rng, (n,), db)
            got = qc.matmul_integer(a, b, za, zb)
            assert_equal_exact(got, ref_matmul(a, b, za, zb), f"{isa} m={m} k={k} n={n}")


def test_every_remainder(isa, rng):
    # every M remainder of the 8- and 4-row tiles (and the 2x96 row blocks' 1..17 tail), every
    # N remainder of the 32- and 16-column tiles, K cycling through every remainder of 4
    for m in range(1, 18):
        for n in range(1, 66):
            k = 1 + (3 * m + n) % 11
            da, db = COMBOS[(m + n) % 4]
            a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
            za, zb = rand(rng, (m,), da), rand(rng, (), db)
            assert_equal_exact(qc.matmul_integer(a, b, za, zb), ref_matmul(a, b, za, zb),
                               f"{isa} m={m} k={k} n={n} {da.__name__}x{db.__name__}")


@pytest.mark.parametrize("da,db", COMBOS)
def test_random_shapes_up_to_300(isa, rng, da, db):
    for _ in range(12):
        m, k, n = (int(v) for v in rng.integers(1, 301, 3))
        a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
        za = rand(rng, (m,), da) if rng.random() < 0.5 else rand(rng, (), da)
        zb = rand(rng, (n,), db) if rng.random() < 0.5 else rand(rng, (), db)
        got = qc.matmul_integer(a, qc.pack_matrix(b), za, zb)
        assert_equal_exact(got, ref_matmul(a, b, za, zb), f"{isa} m={m} k={k} n={n}")


@pytest.mark.parametrize("da,db", COMBOS)
def test_every_variant_equals_scalar(rng, da, db):
    a, b = rand(rng, (37, 203), da), rand(rng, (203, 75), db)
    za, zb = rand(rng, (37,), da), rand(rng, (75,), db)
    with isa_cap("scalar"):
        want = qc.matmul_integer(a, b, za, zb)
    for name in SUPPORTED_ISAS:
        with isa_cap(name):
            assert_equal_exact(qc.matmul_integer(a, b, za, zb), want, name)


@pytest.mark.parametrize("da,db", COMBOS)
def test_extreme_zero_points(isa, da, db):
    ia, ib = np.iinfo(da), np.iinfo(db)
    for av in (ia.min, ia.max):
        for bv in (ib.min, ib.max):
            for za in (ia.min, ia.max, 0):
                for zb in (ib.min, ib.max, 0):
                    a = np.full((3, 70), av, da)
                    b = np.full((70, 18), bv, db)
                    got = qc.matmul_integer(a, b, da(za), db(zb))
                    assert_equal_exact(got, ref_matmul(a, b, za, zb), f"{isa} a={av} b={bv} "
                                       f"za={za} zb={zb}")


def test_k_65536_exact_at_the_int32_limit(isa):
    k = 65536
    # 255 * 128 * 65536 = 2**31 - 2**23 + ... fits int32: the largest |sum a'b'| there is.
    cases = [
        (np.full((2, k), 255, np.uint8), np.full((k, 17), -128, np.int8), 0, 0),
        (np.full((2, k), -128, np.int8), np.full((k, 17), -128, np.int8), 127, 0),
        (np.full((2, k), 0, np.uint8), np.full((k, 17), 255, np.uint8), 255, 127),
    ]
    for a, b, za, zb in cases:
        want = ref_matmul(a, b, za, zb)
        true = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
        assert np.all(np.abs(true) < 2**31)
        assert_equal_exact(qc.matmul_integer(a, b, a.dtype.type(za), b.dtype.type(zb)), want,
                           f"{isa} K=65536")


def test_overflow_wraps_modulo_2_32(isa, rng):
    # True results beyond int32 come back modulo 2**32 (ONNX Runtime wraps the same way).
    for k in (65536, 70001):
        a = np.full((3, k), 255, np.uint8)
        b = np.full((k, 20), 127, np.int8)
        zb = np.int8(-128)
        true = (a.astype(np.int64)) @ (b.astype(np.int64) - int(zb))
        assert np.all(true >= 2**31)
        want = ((true + 2**31) % 2**32 - 2**31).astype(np.int32)
        assert_equal_exact(qc.matmul_integer(a, b, None, zb), want, f"{isa} K={k} wraps")
    a, b = rand(rng, (5, 70001), np.int8), rand(rng, (70001, 33), np.uint8)
    assert_equal_exact(qc.matmul_integer(a, b, np.int8(-128), np.uint8(255)),
                       ref_matmul(a, b, -128, 255), f"{isa} random K=70001")


def test_batched_and_per_row_zero_point(isa, rng):
    a = rand(rng, (2, 3, 9, 40), np.int8)
    b = rand(rng, (40, 21), np.uint8)
    za = rand(rng, (9,), np.int8)
    got = qc.matmul_integer(a, b, za, np.uint8(7))
    want = np.stack([np.stack([ref_matmul(a[i, j], b, za, 7) for j in range(3)])
                     for i in range(2)])
    assert_equal_exact(got, want, f"{isa} batched")
    v = rand(rng, (40,), np.int8)  # 1-D a: one row, output (N,)
    assert_equal_exact(qc.matmul_integer(v, b), ref_matmul(v[None], b)[0], "1-D a")


def test_non_contiguous_and_negative_strides(isa, rng):
    base_a = rand(rng, (30, 80), np.uint8)
    base_b = rand(rng, (90, 60), np.int8)
    a_views = [base_a[::2, ::2], base_a[::-1], base_a[:, ::-1][:, :40], base_a.T[:40].T]
    b_views = [base_b[::2, ::3][:40], base_b[::-1][:40, ::-1], base_b.T[:40, :25].copy().T.T,
               np.asfortranarray(base_b[:40])]
    for a in a_views:
        for b in b_views:
            k = min(a.shape[1], b.shape[0])
            a2, b2 = a[:, :k], b[:k]
            a_before, b_before = a2.copy(), b2.copy()
            assert_equal_exact(qc.matmul_integer(a2, b2, np.uint8(3), np.int8(-5)),
                               ref_matmul(a2, b2, 3, -5), f"{isa} strides")
            assert_equal_exact(a2, a_before, "a unchanged")
            assert_equal_exact(b2, b_before, "b unchanged")


def test_zero_sizes(isa):
    for m, k, n in [(0, 5, 3), (4, 5, 0), (4, 0, 3), (0, 0, 0)]:
        a = np.ones((m, k), np.uint8)
        b = np.ones((k, n), np.int8)
        assert_equal_exact(qc.matmul_integer(a, b, np.uint8(1), np.int8(2)),
                           ref_matmul(a, b, 1, 2), f"{isa} m={m} k={k} n={n}")
    a = np.ones((2, 0, 4), np.int8)
    assert qc.matmul_integer(a, np.ones((4, 3), np.int8)).shape == (2, 0, 3)


def test_thread_count_does_not_change_results(rng):
    cases = [(1, 512, 1000), (3, 300, 4000), (700, 256, 300), (200, 1000, 200)]
    for m, k, n in cases:
        a, b = rand(rng, (m, k), np.uint8), rand(rng, (k, n), np.int8)
        za, zb = rand(rng, (m,), np.uint8), rand(rng, (n,), np.int8)
        want = ref_matmul(a, b, za, zb)
        for t in (1, 2, 3, 7):
            with num_threads(t):
                assert_equal_exact(qc.matmul_integer(a, b, za, zb), want, f"threads={t}")
                s = np.float32(0.01)
                y1 = qc.qlinear_matmul(a, s, za, b, s, zb, s, np.int8(1))
                assert_equal_exact(y1, ref_qlinear(a, s, za, b, s, zb, s, np.int8(1)),
                                   f"qlinear threads={t}")


# ---- PackedMatrix ----

def test_pack_matrix_properties_and_memory(rng):
    for k, n in [(2048, 2048), (768, 3072), (1000, 17), (333, 100), (3, 5), (1, 1)]:
        b = rand(rng, (k, n), np.int8)
        p = qc.pack_matrix(b)
        assert p.shape == (k, n) and p.dtype == np.int8
        assert p.variant == qc.cpu_info()["kernels"]["gemm"]
        assert p.data_nbytes == -(-k // 4) * 4 * n + 64   # K padded to 4, 64 bytes of slack
        assert p.nbytes == p.data_nbytes + 4 * (-(-n // 16) * 16)
        if k >= 40:
            assert p.data_nbytes <= k * n * 1.1 + 64
        assert "PackedMatrix" in repr(p)


def test_packed_zero_point(rng):
    b = rand(rng, (50, 20), np.uint8)
    a = rand(rng, (4, 50), np.int8)
    zb = rand(rng, (20,), np.uint8)
    p = qc.pack_matrix(b, zb)
    assert_equal_exact(qc.matmul_integer(a, p, np.int8(1)), ref_matmul(a, b, 1, zb), "stored")
    assert_equal_exact(qc.matmul_integer(a, p, np.int8(1), zb), ref_matmul(a, b, 1, zb), "same")
    other = zb.copy()
    other[3] ^= 1
    with pytest.raises(ValueError, match="b_zero_point.*column 3"):
        qc.matmul_integer(a, p, None, other)


def test_stale_packed_matrix_and_shape_errors(rng):
    b = rand(rng, (64, 32), np.int8)
    p = qc.pack_matrix(b)
    a = rand(rng, (2, 64), np.uint8)
    if len(SUPPORTED_ISAS) > 1:
        with isa_cap("scalar"):
            with pytest.raises(ValueError, match="PackedMatrix was packed for"):
                qc.matmul_integer(a, p)
            with pytest.raises(ValueError, match="PackedMatrix was packed for"):
                qc.qlinear_matmul(a, 0.1, np.uint8(0), p, 0.1, np.int8(0), 0.1, np.int8(0))
            p2 = qc.pack_matrix(b)
            assert p2.variant == "gemm_4x16c4__scalar"
            assert_equal_exact(qc.matmul_integer(a, p2), ref_matmul(a, b), "repacked")
    with pytest.raises(ValueError, match="K = 64"):
        qc.matmul_integer(rand(rng, (2, 63), np.uint8), p)
    with pytest.raises(ValueError, match="K = 64"):
        qc.matmul_integer(rand(rng, (2, 65), np.uint8), b)
    with pytest.raises(TypeError, match="already packed"):
        qc.pack_matrix(p)


def test_bad_input(rng):
    a = rand(rng, (3, 8), np.uint8)
    b = rand(rng, (8, 5), np.int8)
    with pytest.raises(TypeError, match="a: expected an array of int8 or uint8, got .*int16"):
        qc.matmul_integer(a.astype(np.int16), b)
    with pytest.raises(TypeError, match="b: expected"):
        qc.matmul_integer(a, b.astype(np.float32))
    with pytest.raises(ValueError, match="b: expected a 2-D"):
        qc.matmul_integer(a, np.int8(3))  # (a batch b[None] and a vector b[:, 0] are
    assert_equal_exact(qc.matmul_integer(a, b[:, 0]),  # accepted: tests/test_lowbit.py)
                       qc.matmul_integer(a, b)[:, 0], "vector b")
    with pytest.raises(ValueError, match="a: expected at least 1 dimension"):
        qc.matmul_integer(np.uint8(3), b)
    with pytest.raises(TypeError, match="a_zero_point: expected dtype uint8"):
        qc.matmul_integer(a, b, np.int8(0))
    with pytest.raises(TypeError, match="b_zero_point: expected dtype int8"):
        qc.matmul_integer(a, b, None, np.uint8(0))
    with pytest.raises(ValueError, match=r"a_zero_point: expected a scalar or shape \(3,\)"):
        qc.matmul_integer(a, b, np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"b_zero_point: expected a scalar or shape \(5,\)"):
        qc.matmul_integer(a, b, None, np.zeros((5, 1), np.int8))
    with pytest.raises(ValueError, match="a_zero_point: expected a value in"):
        qc.matmul_integer(a, b, 256)
    assert_equal_exact(qc.matmul_integer(a, b, 255, -128), ref_matmul(a, b, 255, -128), "ints")


# ---- qlinear_matmul ----

def ref_qlinear(a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp, bias=None, relu=False):
    """onnx's reference arithmetic: float32 multiplier, int32 * float32 -> float64, rint."""
    acc = ref_matmul(a, b, a_zp, b_zp)
    if bias is not None:
        acc = (acc.astype(np.int64) + bias).astype(np.int32)
    m = (np.float32(a_s) * np.asarray(b_s, np.float32)) / np.float32(y_s)
    d = acc * m.astype(np.float32) + y_zp  # int32 * float32 -> float64
    info = np.iinfo(np.asarray(y_zp).dtype)
    lo = max(info.min, int(y_zp)) if relu else info.min
    return np.clip(np.rint(d), lo, info.max).astype(np.asarray(y_zp).dtype)


@pytest.mark.parametrize("da,db", COMBOS)
@pytest.mark.parametrize("dy", DTYPES)
def test_qlinear_matmul(isa, rng, da, db, dy):
    for m, k, n in [(1, 1, 1), (5, 33, 17), (9, 100, 40), (33, 64, 65)]:
        a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
        za, zb, zy = rand(rng, (), da), rand(rng, (n,), db), rand(rng, (), dy)
        a_s = np.float32(rng.uniform(0.001, 0.1))
        b_s = rng.uniform(0.001, 0.1, n).astype(np.float32)
        y_s = np.float32(rng.uniform(0.05, 2.0))
        bias = rng.integers(-5000, 5000, n).astype(np.int32)
        for relu in (False, True):
            got = qc.qlinear_matmul(a, a_s, za, b, b_s, zb, y_s, zy, bias=bias, relu=relu)
            assert_equal_exact(got, ref_qlinear(a, a_s, za, b, b_s, zb, y_s, zy, bias, relu),
                               f"{isa} m={m} k={k} n={n} relu={relu}")
        got = qc.qlinear_matmul(a, a_s, za, qc.pack_matrix(b), b_s[0], zb[0], y_s, zy)
        assert_equal_exact(got, ref_qlinear(a, a_s, za, b, b_s[0], zb[0], y_s, zy), "per tensor")


def test_qlinear_ties_to_even(isa):
    # multiplier 0.5: odd accumulators land exactly on .5 and go to the even neighbour
    a = np.arange(-20, 21, dtype=np.int8)[:, None]
    b = np.ones((1, 1), np.int8)
    got = qc.qlinear_matmul(a, 1.0, np.int8(0), b, 1.0, np.int8(0), 2.0, np.int8(0))
    assert got[:, 0].tolist() == np.rint(np.arange(-20, 21) / 2).astype(int).tolist()


def test_qlinear_bad_input(rng):
    a = rand(rng, (3, 8), np.uint8)
    b = rand(rng, (8, 5), np.int8)
    args = dict(a=a, a_scale=0.1, a_zero_point=np.uint8(0), b=b, b_scale=0.1,
                b_zero_point=np.int8(0), y_scale=0.2, y_zero_point=np.int8(0))
    with pytest.raises(TypeError, match="y_zero_point"):
        qc.qlinear_matmul(**{**args, "y_zero_point": 0})
    with pytest.raises(TypeError, match="y_zero_point"):
        qc.qlinear_matmul(**{**args, "y_zero_point": np.int32(0)})
    with pytest.raises(ValueError, match="b_scale"):
        qc.qlinear_matmul(**{**args, "b_scale": np.full(4, 0.1, np.float32)})
    with pytest.raises(ValueError, match="a_scale"):
        qc.qlinear_matmul(**{**args, "a_scale": 0.0})
    with pytest.raises(ValueError, match="y_scale"):
        qc.qlinear_matmul(**{**args, "y_scale": float("nan")})
    with pytest.raises(ValueError, match="bias"):
        qc.qlinear_matmul(**args, bias=np.zeros(4, np.int32))
    with pytest.raises(TypeError, match="bias"):
        qc.qlinear_matmul(**args, bias=np.zeros(5, np.float32))


# ---- onnx reference evaluator ----

def _onnx_eval(op, inputs, names):
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    ins = [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for nm, v in zip(names, inputs)]
    out = helper.make_tensor_value_info("y", onnx.TensorProto.UNDEFINED, None)
    graph = helper.make_graph([helper.make_node(op, names, ["y"])], "g", ins, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    del numpy_helper
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("da,db", COMBOS)
def test_onnx_matmul_integer(isa, rng, da, db):
    for m, k, n in [(1, 7, 3), (17, 65, 33), (64, 128, 48)]:
        a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
        za, zb = rand(rng, (), da), rand(rng, (n,), db)
        want = _onnx_eval("MatMulInteger", [a, b, np.asarray(za), zb],
                          ["a", "b", "a_zero_point", "b_zero_point"])
        assert_equal_exact(qc.matmul_integer(a, b, za, zb), want, f"{isa} onnx MatMulInteger")


@pytest.mark.parametrize("da,db", COMBOS)
@pytest.mark.parametrize("dy", DTYPES)
def test_onnx_qlinear_matmul(isa, rng, da, db, dy):
    for m, k, n in [(1, 7, 3), (17, 65, 33), (40, 128, 48)]:
        a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
        za, zb, zy = rand(rng, (), da), rand(rng, (n,), db), rand(rng, (), dy)
        a_s = np.float32(rng.uniform(0.001, 0.1))
        b_s = rng.uniform(0.001, 0.1, n).astype(np.float32)
        y_s = np.float32(rng.uniform(0.01, 1.0))
        want = _onnx_eval("QLinearMatMul",
                          [a, np.asarray(a_s), np.asarray(za), b, b_s, zb, np.asarray(y_s),
                           np.asarray(zy)],
                          ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                           "y_scale", "y_zero_point"])
        got = qc.qlinear_matmul(a, a_s, za, b, b_s, zb, y_s, zy)
        assert_equal_exact(got, want, f"{isa} onnx QLinearMatMul m={m} k={k} n={n}")


# ---- out= and concurrent callers ----

def test_out_argument(rng):
    a, b = rand(rng, (6, 30), np.uint8), rand(rng, (30, 20), np.int8)
    out = np.empty((6, 20), np.int32)
    r = qc.matmul_integer(a, b, np.uint8(4), out=out)
    assert r is out
    assert_equal_exact(out, ref_matmul(a, b, 4), "out=")
    y = np.empty((6, 20), np.uint8)
    r = qc.qlinear_matmul(a, 0.1, np.uint8(4), b, 0.2, np.int8(0), 0.5, np.uint8(9), out=y)
    assert r is y
    assert_equal_exact(y, ref_qlinear(a, 0.1, 4, b, 0.2, 0, 0.5, np.uint8(9)), "qlinear out=")
    with pytest.raises(ValueError, match=r"out: expected shape \(6, 20\)"):
        qc.matmul_integer(a, b, out=np.empty((6, 21), np.int32))
    with pytest.raises(ValueError, match="out: expected dtype int32"):
        qc.matmul_integer(a, b, out=np.empty((6, 20), np.int64))
    with pytest.raises(ValueError, match="out: expected a writable"):
        qc.matmul_integer(a, b, out=np.empty((20, 6), np.int32).T)
    with pytest.raises(ValueError, match="out: expected dtype uint8"):
        qc.qlinear_matmul(a, 0.1, np.uint8(4), b, 0.2, np.int8(0), 0.5, np.uint8(9),
                          out=np.empty((6, 20), np.int8))


def test_concurrent_python_threads(rng):
    import threading
    a, b = rand(rng, (64, 500), np.int8), rand(rng, (500, 300), np.uint8)
    p = qc.pack_matrix(b)
    want = ref_matmul(a, b, -3, 200)
    errors = []

    def work():
        try:
            for _ in range(5):
                got = qc.matmul_integer(a, p, np.int8(-3), np.uint8(200))
                if not np.array_equal(got, want):
                    errors.append("mismatch")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    with num_threads(2):
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors, errors


@pytest.mark.parametrize("da,db", COMBOS)
def test_onnxruntime_matmul_integer(rng, da, db):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    m, k, n = 13, 77, 40
    a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
    za, zb = rand(rng, (), da), rand(rng, (n,), db)
    ty = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}
    names = ["a", "b", "za", "zb"]
    vals = [a, b, np.asarray(za), zb]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", names, ["y"])], "g",
        [helper.make_tensor_value_info(nm, ty[v.dtype], v.shape) for nm, v in zip(names, vals)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, dict(zip(names, vals)))[0]
    except Exception as e:  # noqa: BLE001 - some ORT builds lack a signedness combination
        pytest.skip(f"onnxruntime has no MatMulInteger for this combination: {e}")
    assert_equal_exact(qc.matmul_integer(a, b, za, zb), want, "onnxruntime MatMulInteger")


# Scalar scales and zero points (Python float/int, NumPy scalars) take a short path in the
# bindings; arrays the general one: the same value in any form gives the same bytes, and a bad
# value the same error.
@pytest.mark.parametrize("sf", [float, np.float32, np.float64, lambda v: np.array(v),
                                lambda v: np.array([v], np.float32)])
@pytest.mark.parametrize("zf", [int, np.uint8, lambda v: np.array(v, np.uint8)])
def test_qlinear_matmul_scalar_forms(sf, zf):
    rng = np.random.default_rng(12)
    a = rng.integers(0, 256, (5, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (40, 7), dtype=np.uint8)
    want = qc.qlinear_matmul(a, np.float32(0.1), np.uint8(3), b, np.float32(0.03),
                             np.uint8(200), np.float32(0.7), np.uint8(9))
    got = qc.qlinear_matmul(a, sf(0.1), zf(3), b, sf(0.03), zf(200), sf(0.7), np.uint8(9))
    assert_equal_exact(got, want, "qlinear_matmul")
    for bad in (-1.0, 0.0, float("inf")):
        with pytest.raises(ValueError, match="a_scale: expected a positive finite value"):
            qc.qlinear_matmul(a, sf(bad), zf(3), b, 0.1, 0, 0.1, np.uint8(0))
    with pytest.raises(TypeError, match="a_zero_point: expected dtype uint8"):
        qc.qlinear_matmul(a, 0.1, np.int8(3), b, 0.1, 0, 0.1, np.uint8(0))
