"""Shared fixtures: every ISA level this CPU can run, forced one at a time."""
import contextlib

import numpy as np
import pytest

import quantc as qc
from quantc import _C

SUPPORTED_ISAS = list(qc.cpu_info()["isa_supported"])


@contextlib.contextmanager
def isa_cap(name):
    """Force the kernels to ISA level `name` (and below) inside the block."""
    prev = _C._set_isa_cap(name)
    try:
        yield
    finally:
        _C._set_isa_cap(prev)


@contextlib.contextmanager
def num_threads(n):
    prev = qc.get_num_threads()
    qc.set_num_threads(n)
    try:
        yield
    finally:
        qc.set_num_threads(prev)


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Parametrize a test over every ISA level this CPU supports (scalar first)."""
    with isa_cap(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def assert_equal_exact(got, want, context=""):
    """Exact equality with the first differing index in the message."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{context}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{context}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f":
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        # distinguish -0.0 from +0.0 as well: bit-exact means bit-exact
        same &= np.signbit(got) == np.signbit(want)
    else:
        same = got == want
    if not np.all(same):
        bad = np.argwhere(~same)
        idx = tuple(bad[0])
        raise AssertionError(
            f"{context}: {len(bad)} of {got.size} differ; first at {idx}: "
            f"got {got[idx]!r}, want {want[idx]!r}")


def qm_and_onnxruntime(qm, x, name="x"):
    """(qm's outputs, onnxruntime's outputs of qm.to_onnx(), the input) for float x quantized
    with the raw-uint8 input qparams of ``name`` (one intra-op thread); needs onnxruntime."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    s, z, _ = qm.input_qparams[name]
    xq = qc.quantize(x, s, np.uint8(z))
    return qm(xq), sess.run(None, {name: xq}), xq
