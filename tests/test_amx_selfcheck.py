"""The gemm self-check that guards AMX (first selection of amx/amxemu): it passes on every
variant here, and a forced mismatch (test hook) disables the level with the reason in
cpu_info(), the next variant taking over, until the hook re-enables it; a fork while the
selection's lock is held leaves the child a usable lock."""
import os
import subprocess
import sys

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


FORK_WHILE_SELECTING = """
import os, sys, threading, time
from quantc import _C
sys.path.insert(0, sys.argv[1])
from _forks import wait_or_fail
holder = threading.Thread(target=_C._gemm_select_hold, args=(3.0,))  # a self-check running
holder.start()
deadline = time.monotonic() + 30
while not _C._gemm_select_busy():
    assert time.monotonic() < deadline, "the holder never took the lock"
    time.sleep(0.001)
pid = os.fork()
if pid == 0:  # only this thread exists here: the lock copied held must have been replaced
    if _C._gemm_select_busy():
        os._exit(3)
    _C._gemm_select_hold(0)  # what a self-check in the child does first
    os._exit(0)
assert _C._gemm_select_busy()  # still held in the parent: the fork came while it was
status = wait_or_fail(pid, 20, "the child hung on the gemm selection's lock")
assert os.WEXITSTATUS(status) != 3, "the child's lock was copied held"
assert status == 0, status
holder.join()
assert not _C._gemm_select_busy()
print("ok")
"""


def test_fork_while_a_selfcheck_holds_the_lock():
    """A fork() while another thread holds the selection's lock (an AMX self-check running):
    the child gets a fresh lock from the fork handler instead of one nobody will release."""
    out = subprocess.run([sys.executable, "-c", FORK_WHILE_SELECTING,
                          os.path.dirname(os.path.abspath(__file__))], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_hold_hook_checks_its_argument():
    for bad in (-1.0, 61.0, float("nan")):
        with pytest.raises(ValueError, match="seconds must be in"):
            _C._gemm_select_hold(bad)
    with pytest.raises(TypeError):
        _C._gemm_select_hold("1")
