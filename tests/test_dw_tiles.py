"""Issue 14 item 10: the depthwise (direct) convolution path keeps its scratch to a tile of
the output plane (a bounded number of rows and columns) instead of a whole plane. Any tiling
must give exactly the untiled result: forced tiles of 1, 2, 3 and 5 rows (and 3x as many
columns) against the default, at every ISA level, for strides, dilations, paddings wider
than the kernel, int8/uint8 and int32 output."""
import contextlib
import itertools

import numpy as np
import pytest

import quantc as qc
from quantc import _C

from conftest import assert_equal_exact


@contextlib.contextmanager
def tile_rows(n):
    prev = _C._set_dw_tile_rows(n)
    try:
        yield
    finally:
        _C._set_dw_tile_rows(prev)


GEOMS = [
    # (H, W, kh, kw, strides, dilations, pads)
    (13, 11, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),
    (13, 11, 3, 3, (2, 2), (1, 1), (0, 1, 1, 0)),
    (17, 9, 5, 3, (3, 2), (1, 2), (2, 0, 3, 1)),
    (10, 12, 3, 5, (1, 3), (2, 1), (0, 0, 0, 0)),
    (6, 7, 2, 2, (1, 1), (1, 1), (5, 2, 7, 3)),      # padding beyond the kernel: empty tiles
    (9, 8, 7, 1, (2, 1), (1, 1), (3, 0, 3, 0)),
    (0, 5, 3, 3, (1, 1), (1, 1), (2, 1, 2, 1)),      # no input rows at all, only padding
]


def _run(x, w, group, geom, integer, xt):
    _, _, kh, kw, strides, dilations, pads = geom
    kw_ = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}
    if integer:
        return qc.conv_integer(x, w, xt(3), None, **kw_)
    return qc.qlinear_conv(x, 0.05, xt(3), w, np.linspace(0.01, 0.1, w.shape[0], dtype=np.float32),
                           np.int8(0), 0.3, xt(5), np.arange(w.shape[0], dtype=np.int32) * 97,
                           **kw_)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("grouped", [False, True])
def test_tiles_equal_untiled(isa, geom, grouped):
    rng = np.random.default_rng(hash(geom) % 2**32)
    H, W, kh, kw = geom[:4]
    for xt, integer in itertools.product([np.uint8, np.int8], [False, True]):
        if grouped:   # 2 input channels per group, 3 outputs per group: still the direct path
            C, group, M, cg = 4, 2, 6, 2
        else:         # depthwise
            C, group, M, cg = 3, 3, 3, 1
        info = np.iinfo(xt)
        x = rng.integers(info.min, info.max + 1, (2, C, H, W), dtype=xt)
        w = rng.integers(-128, 128, (M, cg, kh, kw), dtype=np.int8)
        assert qc.pack_conv_weight(w, group=group).path == "direct"
        want = _run(x, w, group, geom, integer, xt)
        for rows in (1, 2, 3, 5):
            with tile_rows(rows):
                got = _run(x, w, group, geom, integer, xt)
            assert_equal_exact(got, want, f"{geom} grouped={grouped} {xt.__name__} "
                                          f"integer={integer} tile={rows}")


def test_tall_plane_default_tiles(isa):
    """A plane taller than one default tile (the scratch budget): same as 7-row tiles."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (1, 1, 3000, 300), dtype=np.uint8)
    w = rng.integers(-128, 128, (1, 1, 3, 3), dtype=np.int8)
    xp = np.pad(x[0, 0].astype(np.int64), 1)
    want = sum(xp[ky:ky + 3000, kx:kx + 300] * int(w[0, 0, ky, kx])
               for ky in range(3) for kx in range(3)).astype(np.int32)[None, None]
    assert_equal_exact(qc.conv_integer(x, w, pads=(1, 1, 1, 1)), want, "default tiles")
    with tile_rows(7):
        assert_equal_exact(qc.conv_integer(x, w, pads=(1, 1, 1, 1)), want, "7-row tiles")
