"""Property tests (hypothesis): random shapes, dtypes, zero points, ISA caps and thread counts."""
import numpy as np
import pytest

import quantc as qc
from conftest import SUPPORTED_ISAS, assert_equal_exact, isa_cap, num_threads
from test_gemm import ref_matmul, ref_qlinear, rand

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

DTYPES = [np.int8, np.uint8]


@hypothesis.settings(max_examples=120, deadline=None)
@hypothesis.given(m=st.integers(0, 70), k=st.integers(0, 140), n=st.integers(0, 70),
                  da=st.sampled_from(DTYPES), db=st.sampled_from(DTYPES),
                  dy=st.sampled_from(DTYPES), per_row=st.booleans(), per_col=st.booleans(),
                  packed=st.booleans(), isa=st.sampled_from(SUPPORTED_ISAS),
                  threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
def test_matmul_and_qlinear_match_reference(m, k, n, da, db, dy, per_row, per_col, packed, isa,
                                            threads, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (m, k), da), rand(rng, (k, n), db)
    za = rand(rng, (m,), da) if per_row else rand(rng, (), da)
    zb = rand(rng, (n,), db) if per_col else rand(rng, (), db)
    ctx = f"{isa} threads={threads} m={m} k={k} n={n} {da.__name__}x{db.__name__}"
    with isa_cap(isa), num_threads(threads):
        bb = qc.pack_matrix(b) if packed else b
        assert_equal_exact(qc.matmul_integer(a, bb, za, zb), ref_matmul(a, b, za, zb), ctx)
        if m and not per_row:
            a_s = np.float32(rng.uniform(1e-3, 1.0))
            b_s = rng.uniform(1e-3, 1.0, n).astype(np.float32) if per_col else np.float32(0.01)
            y_s = np.float32(rng.uniform(1e-2, 10.0))
            zy = rand(rng, (), dy)
            bias = rng.integers(-2**20, 2**20, n).astype(np.int32)
            got = qc.qlinear_matmul(a, a_s, za, bb, b_s, zb, y_s, zy, bias=bias, relu=per_col)
            want = ref_qlinear(a, a_s, za, b, b_s, zb, y_s, zy, bias, per_col)
            assert_equal_exact(got, want, "qlinear " + ctx)
