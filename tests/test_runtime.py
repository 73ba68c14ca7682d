"""Runtime: CPU detection, ISA cap, thread count."""
import os
import subprocess
import sys

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
