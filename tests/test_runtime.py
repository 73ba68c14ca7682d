"""Runtime: CPU detection, ISA cap, thread count."""
import os
import subprocess
import sys

import numpy as np
import pytest

import quantc as qc
from quantc import _C


def test_cpu_info_shape():
    info = qc.cpu_info()
    assert "scalar" in info["isa_supported"]
    assert isinstance(info["features"], dict)
    for family, chosen in info["kernels"].items():
        names = [v[0] for v in info["variants"][family]]
        assert chosen in names


def test_isa_cap_round_trip():
    prev = _C._set_isa_cap("scalar")
    try:
        assert _C._get_isa_cap() == "scalar"
        info = qc.cpu_info()
        for family, variants in info["variants"].items():
            assert info["kernels"][family] == variants[-1][0]  # the scalar one is last
    finally:
        _C._set_isa_cap(prev)
    with pytest.raises(ValueError, match="isa"):
        _C._set_isa_cap("sse9")


def test_threads():
    prev = qc.get_num_threads()
    try:
        qc.set_num_threads(1)
        assert qc.get_num_threads() == 1
        qc.set_num_threads(3)
        assert qc.get_num_threads() == 3
    finally:
        qc.set_num_threads(prev)
    with pytest.raises(ValueError, match="n:"):
        qc.set_num_threads(0)
    with pytest.raises(TypeError, match="n:"):
        qc.set_num_threads(1.5)
    with pytest.raises(TypeError, match="n:"):
        qc.set_num_threads(True)
    try:
        qc.set_num_threads(np.int64(3))  # any integer type
        assert qc.get_num_threads() == 3
    finally:
        qc.set_num_threads(prev)
    with pytest.raises(ValueError, match=r"n: .*got one of 2\*\*63 or more"):  # not "below"
        qc.set_num_threads(10 ** 20)
    with pytest.raises(ValueError, match=r"n: .*got one below -2\*\*63"):
        qc.set_num_threads(-10 ** 20)


def test_env_quantc_isa():
    env = dict(os.environ, QUANTC_ISA="scalar")
    out = subprocess.run([sys.executable, "-c", "import quantc; print(quantc.cpu_info()['isa_cap'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    env["QUANTC_ISA"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", "import quantc"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "QUANTC_ISA" in bad.stderr


def test_env_num_threads():
    env = dict(os.environ, QUANTC_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", "import quantc; print(quantc.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    for bad in ("0", "two", "1.5"):
        env["QUANTC_NUM_THREADS"] = bad
        res = subprocess.run([sys.executable, "-c", "import quantc"], env=env,
                             capture_output=True, text=True)
        assert res.returncode != 0 and "QUANTC_NUM_THREADS" in res.stderr, bad


def test_default_threads_follow_cpu_affinity():
    """The default thread count is the CPUs the process may run on (taskset, a container's
    cpuset), not every online CPU."""
    env = {k: v for k, v in os.environ.items() if k != "QUANTC_NUM_THREADS"}
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", "import quantc; print(quantc.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert out.stdout.strip() == "1"


def _matmul_case():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (96, 512), dtype=np.uint8)
    b = rng.integers(-128, 128, (512, 384), dtype=np.int8)
    return a, b, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _exact_in_this_process(_=None):
    a, b, want = _matmul_case()
    return bool((qc.matmul_integer(a, b) == want).all())


def test_fewer_threads_after_more():
    """Thread counts up and down: workers started for a larger count are not signalled by a
    job that does not need them (they used to wake and poll 200 us on every call; the CPU
    time is not asserted here), and every call still gives the exact result."""
    a, b, want = _matmul_case()
    prev = qc.get_num_threads()
    try:
        for n in (16, 2, 7, 1, 3, 16, 2):
            qc.set_num_threads(n)
            for _ in range(20):
                np.testing.assert_array_equal(qc.matmul_integer(a, b), want)
    finally:
        qc.set_num_threads(prev)


FORK = """
import os, sys
import numpy as np
import quantc as qc
sys.path.insert(0, sys.argv[1])
from test_runtime import _matmul_case
from _forks import wait_or_fail
a, b, want = _matmul_case()
qc.set_num_threads(2)
assert (qc.matmul_integer(a, b) == want).all()  # the pool's workers are running
pids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:  # only this thread exists here: the pool starts its workers again
        ok = all((qc.matmul_integer(a, b) == want).all() for _ in range(5))
        os._exit(0 if ok else 1)
    pids.append(pid)
assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
import threading
# (not under AddressSanitizer: GCC 12's libasan does not hold its allocator's lock across
# fork, so a child forked while another thread allocates waits on that lock forever, inside
# aligned_alloc; glibc's malloc, which quantc uses, is fork-safe)
asan = "libasan" in os.environ.get("LD_PRELOAD", "")
stop, wrong = threading.Event(), []
def busy():  # the parent's pool is mid-job (its locks held) at some of the forks below
    while not stop.is_set():
        if not (qc.matmul_integer(a, b) == want).all():
            wrong.append(1)
t = threading.Thread(target=busy)
t.start()
try:
    for _ in range(0 if asan else 20):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if all((qc.matmul_integer(a, b) == want).all() for _ in range(3)) else 1)
        status = wait_or_fail(pid, 30, "a child forked while the pool was busy hung")
        assert status == 0, status
finally:
    stop.set()
    t.join()
assert not wrong
import multiprocessing as mp
from test_runtime import _exact_in_this_process
with mp.get_context("fork").Pool(2) as pool:  # as torch's DataLoader workers
    assert all(pool.map(_exact_in_this_process, range(4)))
print("ok")
"""


def test_fork_after_the_pool_started():
    out = subprocess.run([sys.executable, "-c", FORK, os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
