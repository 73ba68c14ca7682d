"""The AMX gemm kernel on the scalar tile model (builds with QUANTC_AMX_EMULATE=1, see .ci/run):
the model against hand-computed TDPBUSD results, and the kernel bit-identical to the scalar
kernel over its 32 x 32 x 64 tile remainders, signedness, extremes, zero points, epilogues and
threads. Skipped in normal builds (no amxemu level)."""
import numpy as np
import pytest

import quantc as qc
from quantc import _C
from conftest import assert_equal_exact, isa_cap, num_threads, SUPPORTED_ISAS

pytestmark = pytest.mark.skipif("amxemu" not in SUPPORTED_ISAS,
                                reason="not an emulation build (QUANTC_AMX_EMULATE=1)")

DTYPES = [np.int8, np.uint8]


def rand(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def test_emulated_variant_is_selected_only_when_forced():
    assert qc.cpu_info()["kernels"]["gemm"] != "gemm_32x32c4__amx_emulated"
    with isa_cap("amxemu"):
        assert qc.cpu_info()["kernels"]["gemm"] == "gemm_32x32c4__amx_emulated"


def test_tile_model_hand_computed():
    # 2 rows, K = 8 (2 dword groups), N = 3: c[m, n] += sum_k a[m, k] * b[k, n], where B's
    # element (k, n) sits at row k // 4, byte 4 n + k % 4 of the B tile
    a = np.array([[1, 2, 3, 4, 5, 6, 7, 8],
                  [255, 255, 255, 255, 0, 0, 0, 1]], np.uint8)
    bl = np.array([[1, -1, 0], [2, 0, 0], [3, 0, 0], [4, 0, 127],
                   [0, 1, 0], [0, 1, 0], [0, 1, 0], [-128, 1, 0]], np.int8)   # logical (K, N)
    bt = bl.reshape(2, 4, 3).transpose(0, 2, 1).copy()   # (K/4, N, 4): dword-grouped
    c0 = np.array([[10, 20, 30], [-1, 0, 2**31 - 1]], np.int32)
    got = np.frombuffer(_C._amx_model_dpbusd(a.tobytes(), bt.tobytes(), c0.tobytes(), 2, 2, 3),
                        np.int32).reshape(2, 3)
    # row 0: col0 = 1+4+9+16 + 8*-128 = -994; col1 = -1 + 5+6+7+8 = 25; col2 = 4*127 = 508
    # row 1: col0 = 255*10 - 128 = 2422; col1 = -255 + 1 = -254; col2 = 255*127 = 32385,
    # added to 2^31 - 1: wraps to -2^31 + 32384
    want = np.array([[10 - 994, 20 + 25, 30 + 508],
                     [-1 + 2422, -254, -2**31 + 32384]], np.int64).astype(np.int32)
    assert_equal_exact(got, want, "tdpbusd")


def test_tile_model_full_tile_random(rng):
    for rows, k, n in [(16, 16, 16), (1, 1, 1), (7, 5, 13)]:
        a = rand(rng, (rows, 4 * k), np.uint8)
        bl = rand(rng, (4 * k, n), np.int8)
        bt = bl.reshape(k, 4, n).transpose(0, 2, 1).copy()
        c0 = rand(rng, (rows, n), np.int32)
        got = np.frombuffer(_C._amx_model_dpbusd(a.tobytes(), bt.tobytes(), c0.tobytes(),
                                                 rows, k, n), np.int32).reshape(rows, n)
        want = (c0.astype(np.int64) + a.astype(np.int64) @ bl.astype(np.int64)).astype(np.int32)
        assert_equal_exact(got, want, f"rows={rows} k={k} n={n}")


# Around the AMX tiles (32 rows x 32 columns per call, 16-row / 16-column tiles, 64-byte K
# chunks) and the driver's 96-row blocks.
MS = [1, 15, 16, 17, 31, 32, 33, 48, 63, 65, 97, 130]
NS = [1, 15, 16, 17, 31, 32, 33, 47, 64, 65]
KS = [1, 3, 4, 60, 63, 64, 65, 127, 128, 129, 200]


def both(fn):
    """fn() under the scalar kernel and under the emulated AMX kernel."""
    with isa_cap("scalar"):
        want = fn()
    with isa_cap("amxemu"):
        got = fn()
    return got, want


@pytest.mark.parametrize("da", DTYPES)
@pytest.mark.parametrize("db", DTYPES)
def test_matmul_integer_remainders(rng, da, db):
    for i, m in enumerate(MS):
        for j, n in enumerate(NS):
            k = KS[(i + 3 * j) % len(KS)]
            a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
            za, zb = rand(rng, (m,) if (i + j) % 2 else (), da), rand(rng, (n,), db)
            got, want = both(lambda: qc.matmul_integer(a, b, za, zb))
            assert_equal_exact(got, want, f"m={m} k={k} n={n} {da.__name__}x{db.__name__}")


@pytest.mark.parametrize("da", DTYPES)
@pytest.mark.parametrize("db", DTYPES)
@pytest.mark.parametrize("dy", DTYPES)
def test_qlinear_matmul_epilogue(rng, da, db, dy):
    for m, k, n in [(1, 64, 16), (17, 65, 33), (33, 129, 47), (97, 200, 65), (32, 64, 32)]:
        a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
        za, zb, zy = rand(rng, (), da), rand(rng, (n,), db), rand(rng, (), dy)
        sa, sb = np.float32(0.02), rng.uniform(0.001, 0.05, n).astype(np.float32)
        sy = np.float32(0.7)
        got, want = both(lambda: qc.qlinear_matmul(a, sa, za, b, sb, zb, sy, zy))
        assert_equal_exact(got, want, f"m={m} k={k} n={n}")


@pytest.mark.parametrize("da", DTYPES)
@pytest.mark.parametrize("db", DTYPES)
def test_extreme_values_and_zero_points(da, db):
    ia, ib = np.iinfo(da), np.iinfo(db)
    for m, k, n in [(33, 129, 33), (16, 64, 16), (5, 700, 17)]:
        for av in (ia.min, ia.max):
            for bv in (ib.min, ib.max):
                a, b = np.full((m, k), av, da), np.full((k, n), bv, db)
                for za, zb in [(ia.min, ib.max), (ia.max, ib.min), (0, 0)]:
                    got, want = both(lambda: qc.matmul_integer(a, b, da(za), db(zb)))
                    assert_equal_exact(got, want, f"m={m} k={k} n={n} a={av} b={bv}")


def test_int32_wraparound_and_threads(rng):
    k = 70000  # over 65536 terms: the dot product itself wraps
    a = np.full((33, k), 255, np.uint8)
    b = np.full((k, 17), -128, np.int8)
    got, want = both(lambda: qc.matmul_integer(a, b))
    assert_equal_exact(got, want, "wrap")
    a, b = rand(rng, (300, 257), np.uint8), rand(rng, (257, 200), np.int8)
    with num_threads(2):
        got, want = both(lambda: qc.matmul_integer(a, b, np.uint8(3), np.int8(-5)))
    assert_equal_exact(got, want, "threads")
