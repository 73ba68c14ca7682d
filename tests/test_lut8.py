"""The byte table lookup behind a model's element-wise int8 ops (Sigmoid, HardSwish, ... as a
table of their 256 input codes) and onnxruntime-arithmetic Concat: every ISA's kernel against
NumPy's indexing and against the scalar kernel."""
import numpy as np
import pytest

from quantc import _C

from conftest import SUPPORTED_ISAS, assert_equal_exact, isa_cap, num_threads


@pytest.mark.parametrize("n", [0, 1, 15, 31, 32, 33, 63, 64, 65, 127, 1000, 3 * 65536 + 17])
def test_lut8_every_isa(n):
    """Lengths around the 32- and 64-byte steps and the 65536-element thread chunks; every
    int8/uint8 pairing of input and table; every byte value present."""
    rng = np.random.default_rng(n)
    for xdt in (np.uint8, np.int8):
        x = rng.integers(0, 256, n).astype(np.uint8)
        x[:min(n, 256)] = np.arange(min(n, 256))  # every code, where there is room
        x = x.view(xdt)
        for tdt in (np.uint8, np.int8):
            table = rng.integers(0, 256, 256).astype(np.uint8).view(tdt)
            want = table[x.view(np.uint8)]
            with isa_cap("scalar"):
                scalar = _C._lut8(x, table)
            assert_equal_exact(scalar, want, "scalar vs NumPy")
            for isa in SUPPORTED_ISAS:
                with isa_cap(isa), num_threads(2):
                    assert_equal_exact(_C._lut8(x, table), scalar, f"{isa} vs scalar")


def test_lut8_shapes_and_strides():
    rng = np.random.default_rng(1)
    table = rng.integers(0, 256, 256).astype(np.uint8)
    for x in (np.uint8(7), rng.integers(0, 256, (3, 0, 4)).astype(np.uint8),
              rng.integers(0, 256, (4, 5, 6)).astype(np.uint8)[:, ::-2, 1:],
              rng.integers(0, 256, (7, 9)).astype(np.uint8).T):
        x0 = np.array(x, copy=True)
        got = _C._lut8(x, table)
        assert got.shape == np.shape(x) and got.dtype == table.dtype
        assert_equal_exact(got, table[np.asarray(x)], "strided")
        np.testing.assert_array_equal(x, x0)


def test_lut8_bad_input():
    t = np.zeros(256, np.uint8)
    with pytest.raises(ValueError, match="^table: expected 256 values, got 255"):
        _C._lut8(np.zeros(3, np.uint8), np.zeros(255, np.uint8))
    with pytest.raises(ValueError, match="^table: expected a 1-D array"):
        _C._lut8(np.zeros(3, np.uint8), np.zeros((16, 16), np.uint8))
    for bad, arg in ((np.zeros(3, np.float32), "x"), (np.zeros(3, np.int16), "x")):
        with pytest.raises((TypeError, ValueError), match=f"^{arg}:"):
            _C._lut8(bad, t)
    with pytest.raises((TypeError, ValueError), match="^table:"):
        _C._lut8(np.zeros(3, np.uint8), np.zeros(256, np.float32))
