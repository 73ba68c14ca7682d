"""The gemm self-check that guards AMX (first selection of amx/amxemu): it passes on every
variant here, and a forced mismatch (test hook) disables the level with the reason in
cpu_info(), the next variant taking over, until the hook re-enables it."""
import numpy as np
import pytest

import quantc as qc
from quantc import _C
from conftest import isa_cap, SUPPORTED_ISAS

GEMM_LEVELS = sorted({isa for _, isa, _ in qc.cpu_info()["variants"]["gemm"]}
                     & set(SUPPORTED_ISAS) - {"scalar"})


@pytest.mark.parametrize("level", GEMM_LEVELS)
def test_selfcheck_passes(level):
    assert _C._gemm_selfcheck(level, False) is None
    assert level not in qc.cpu_info()["isa_disabled"]


@pytest.mark.skipif(not GEMM_LEVELS, reason="only the scalar gemm here")
def test_forced_mismatch_disables_the_level():
    level = "amxemu" if "amxemu" in GEMM_LEVELS else GEMM_LEVELS[-1]
    a = np.arange(-60, 60, dtype=np.int8).reshape(8, 15)
    b = np.arange(15 * 33, dtype=np.int64).astype(np.uint8).reshape(15, 33)
    with isa_cap(level):
        before = qc.cpu_info()["kernels"]["gemm"]
        want = qc.matmul_integer(a, b)
        try:
            why = _C._gemm_selfcheck(level, True)
            assert why and "self-check failed" in why and before in why and "forced" in why
            info = qc.cpu_info()
            assert info["isa_disabled"] == {level: why}
            assert level not in info["isa_supported"]
            assert info["kernels"]["gemm"] != before
            np.testing.assert_array_equal(qc.matmul_integer(a, b), want)  # next variant
        finally:
            _C._isa_reenable(level)
        info = qc.cpu_info()
        assert info["isa_disabled"] == {} and level in info["isa_supported"]
        assert info["kernels"]["gemm"] == before


def test_hook_rejects_unknown_levels():
    with pytest.raises(ValueError):
        _C._gemm_selfcheck("nope", False)
