"""Calibration: C kernels against NumPy references (every ISA), observers against references."""
import math

import numpy as np
import pytest

import quantc as qc
from quantc import _C
from quantc.calibration import _minmax as calib_minmax
from conftest import assert_equal_exact, num_threads

SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 255, 1000, (1 << 16) + 3, 3 * (1 << 16) + 17]


# ---------------------------------------------------------------- NumPy references

def ref_minmax(x):
    x = np.asarray(x, np.float32).ravel()
    if x.size == 0:
        return math.inf, -math.inf
    return float(x.min()) + 0.0, float(x.max()) + 0.0


def ref_abs_histogram(x, bins, inv_width):
    idx = np.floor(np.abs(np.asarray(x, np.float32)).astype(np.float64) * inv_width)
    idx = np.minimum(idx, bins - 1).astype(np.int64)
    return np.bincount(idx.ravel(), minlength=bins).astype(np.int64)


def ref_mse_errors(g, mn, mx, qmin, qmax, symmetric, fractions):
    """Squared error of each candidate clipping fraction, as documented in calib.h."""
    g = np.asarray(g, np.float32)
    errs = []
    for f in fractions:
        lo, hi = np.float32(mn) * np.float32(f), np.float32(mx) * np.float32(f)
        if symmetric:
            a = max(-lo, hi)
            scale = np.float32(np.float32(2.0) * a) / np.float32(qmax - qmin)
            zp = np.float32(math.floor((qmin + qmax + 1) / 2))
        else:
            scale = np.float32(hi - lo) / np.float32(qmax - qmin)
            zp = np.float32(np.rint(np.float32(qmin) - lo / scale)) if scale > 0 else np.float32(0)
            zp = np.float32(min(max(zp, qmin), qmax))
        if scale > 0:
            q = np.clip(np.rint(g / scale) + zp, qmin, qmax).astype(np.float32)
            d = g.astype(np.float64) - ((q - zp) * scale).astype(np.float64)
        else:
            d = g.astype(np.float64)
        errs.append(float(np.sum(d * d)))
    return np.array(errs)


class RefAbsHistogram:
    """The growing |x| histogram as documented in quantc.calibration, written out directly."""

    def __init__(self, bins):
        self.bins, self.counts, self.R = bins, np.zeros(bins, np.int64), 0.0
        self.mn, self.mx = None, None

    def update(self, x):
        x = np.asarray(x, np.float32)
        if x.size == 0:
            return
        mn, mx = float(x.min()), float(x.max())
        self.mn = mn if self.mn is None else min(self.mn, mn)
        self.mx = mx if self.mx is None else max(self.mx, mx)
        amax = float(np.abs(x).max())
        if amax == 0:
            self.counts[0] += x.size
            return
        if self.R == 0:
            self.R = amax
        while amax > self.R:
            merged = np.zeros(self.bins, np.int64)
            for j in range(self.bins // 2):
                merged[j] = self.counts[2 * j] + self.counts[2 * j + 1]
            self.counts, self.R = merged, self.R * 2
        self.counts += ref_abs_histogram(x, self.bins, self.bins / self.R)


def smooth_distribution(p, eps=0.0001):
    """MXNet's _smooth_distribution (used by ONNX Runtime's entropy calibration)."""
    is_zeros = (p == 0).astype(np.float32)
    is_nonzeros = (p != 0).astype(np.float32)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * float(n_zeros) / float(n_nonzeros)
    hist = p.astype(np.float32)
    hist += eps * is_zeros + (-eps1) * is_nonzeros
    return hist


def ref_entropy_index(hist, num_quantized_bins=128):
    """TensorRT's KL calibration, written out as in MXNet's _get_optimal_threshold."""
    bins = len(hist)
    divergence = {}
    for i in range(num_quantized_bins, bins + 1):
        sliced_nd_hist = hist[:i].astype(np.float64)
        p = sliced_nd_hist.copy()
        p[i - 1] += hist[i:].sum()
        is_nonzeros = (p != 0).astype(np.int64)
        quantized_bins = np.zeros(num_quantized_bins)
        num_merged_bins = i // num_quantized_bins
        for j in range(num_quantized_bins):
            start = j * num_merged_bins
            stop = start + num_merged_bins
            quantized_bins[j] = sliced_nd_hist[start:stop].sum()
        quantized_bins[-1] += sliced_nd_hist[num_quantized_bins * num_merged_bins:].sum()
        q = np.zeros(i)
        for j in range(num_quantized_bins):
            start = j * num_merged_bins
            stop = i if j == num_quantized_bins - 1 else start + num_merged_bins
            norm = is_nonzeros[start:stop].sum()
            if norm != 0:
                q[start:stop] = quantized_bins[j] / norm
        q[p == 0] = 0
        p, q = smooth_distribution(p), smooth_distribution(q)
        if p is None or q is None:
            continue
        p = p / p.sum(dtype=np.float64)
        q = q / q.sum(dtype=np.float64)
        m = p > 0
        divergence[i] = float(np.sum(p[m] * np.log(p[m] / q[m])))
    return min(divergence, key=lambda k: (divergence[k], k))


def ref_hist_mse(counts, width, levels):
    errs = []
    centers = (np.arange(len(counts)) + 0.5) * width
    for i in range(len(counts)):
        s = (i + 1) * width / levels
        q = np.minimum(np.rint(centers / s), levels)
        errs.append(float(np.sum(counts * (centers - q * s) ** 2)))
    return np.array(errs)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("n", SIZES)
def test_minmax_matches_numpy(isa, rng, n):
    x = rng.standard_normal(n).astype(np.float32) * 10
    got = tuple(map(float, _C._minmax(x)))
    assert got == ref_minmax(x), f"isa={isa} n={n}"


def test_minmax_edges(isa):
    assert tuple(map(float, _C._minmax(np.float32(3.5)))) == (3.5, 3.5)
    x = np.array([-0.0, 0.0, -0.0], np.float32)
    mn, mx = map(float, _C._minmax(x))
    assert math.copysign(1, mn) == 1 and math.copysign(1, mx) == 1
    x = np.array([1, np.inf, -np.inf, 2] * 5, np.float32)
    assert tuple(map(float, _C._minmax(x))) == (-math.inf, math.inf)
    y = np.arange(100, dtype=np.float64)[::-3]  # negative stride, float64
    assert tuple(map(float, _C._minmax(y))) == (0.0, 99.0)


@pytest.mark.parametrize("n,pos", [(5, 3), (40, 0), (40, 39), (1000, 517), (200000, 150001)])
def test_minmax_nan_names_count_and_index(isa, rng, n, pos):
    x = rng.standard_normal(n).astype(np.float32)
    x[pos] = np.nan
    x[-1] = np.nan
    count = 1 if pos == n - 1 else 2
    with pytest.raises(ValueError, match=rf"w: expected no NaN values, got {count} NaN "
                                         rf"values?, the first at index {pos}$"):
        calib_minmax(x, name="w")


@pytest.mark.parametrize("shape,block", [((1, 0), 4), ((3, 1), 1), ((5, 17), 4), ((4, 64), 16),
                                         ((7, 33), 33), ((2, 100), 1000), ((9, 130), 64)])
def test_group_minmax_matches_numpy(isa, rng, shape, block):
    x = rng.standard_normal(shape).astype(np.float32)
    mins, maxs = _C._minmax(x, 1, block)
    groups = -(-shape[1] // block) if shape[1] else 0
    assert mins.shape == (shape[0], groups)
    for r in range(shape[0]):
        for g in range(groups):
            seg = x[r, g * block:(g + 1) * block]
            assert (mins[r, g], maxs[r, g]) == ref_minmax(seg)


def test_group_minmax_nan_and_threads(rng):
    x = rng.standard_normal((64, 5000)).astype(np.float32)
    with num_threads(1):
        a = _C._minmax(x, 1, 128)
    with num_threads(2):
        b = _C._minmax(x, 1, 128)
    assert_equal_exact(a[0], b[0], "mins")
    assert_equal_exact(a[1], b[1], "maxs")
    x[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"layer\.w: .*1 NaN value, the first at index "
                                         r"\(3, 7\)$"):
        calib_minmax(x, "layer.w", 1, 128)


@pytest.mark.parametrize("n", [0, 1, 17, 1000, 100003])
def test_abs_histogram_matches_numpy(rng, n):
    x = rng.standard_normal(n).astype(np.float32)
    bins = 64
    r = float(np.abs(x).max()) if n else 1.0
    counts = np.zeros(bins, np.int64)
    _C._calib_abs_histogram(x, counts, bins / r)
    assert_equal_exact(counts, ref_abs_histogram(x, bins, bins / r), f"n={n}")
    assert counts.sum() == n
    _C._calib_abs_histogram(x, counts, bins / r)  # accumulates
    assert counts.sum() == 2 * n


def test_abs_histogram_rejects_bad_counts():
    with pytest.raises(TypeError, match="counts"):
        _C._calib_abs_histogram(np.ones(3, np.float32), np.zeros(4, np.int32), 1.0)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("qrange_", [(-127, 127), (-128, 127), (0, 255)])
def test_mse_clip_search_matches_reference(rng, symmetric, qrange_):
    qmin, qmax = qrange_
    x = (rng.standard_t(2, size=(6, 300)) * 0.1).astype(np.float32)
    x[5] = 0.0  # an all-zero row
    block = 128
    fr = (1.0 - np.arange(81) / 100.0).astype(np.float32)
    mins, maxs = _C._minmax(x, 1, block)
    mins, maxs = np.minimum(mins, 0), np.maximum(maxs, 0)
    best = _C._calib_mse_clip_search(x, block, mins, maxs, qmin, qmax, symmetric, fr)
    assert best.shape == mins.shape
    for r in range(x.shape[0]):
        for g in range(mins.shape[1]):
            errs = ref_mse_errors(x[r, g * block:(g + 1) * block], mins[r, g], maxs[r, g],
                                  qmin, qmax, symmetric, fr)
            k = best[r, g]
            # summation order differs from NumPy's: equal up to rounding of the sums
            assert errs[k] <= errs.min() * (1 + 1e-9) + 1e-30, (r, g, k, errs.argmin())


def test_hist_mse_matches_reference(rng):
    counts = rng.integers(0, 50, 200).astype(np.int64)
    for levels in (127, 255):
        got = _C._calib_hist_mse(counts, 0.01, levels)
        np.testing.assert_allclose(got, ref_hist_mse(counts, 0.01, levels), rtol=1e-12)


# ---------------------------------------------------------------- observers

def batches(rng, n=6, shape=(32, 48), grow=True):
    out = []
    for i in range(n):
        b = rng.standard_t(4, size=shape).astype(np.float32) * (1 + (i if grow else 0))
        out.append(b)
    return out


def choose(mn, mx, **kw):
    return qc.choose_qparams(min_val=mn, max_val=mx, **kw)


def assert_qparams_equal(got, want):
    assert_equal_exact(np.asarray(got.scale), np.asarray(want.scale), "scale")
    assert_equal_exact(np.asarray(got.zero_point), np.asarray(want.zero_point), "zero_point")


@pytest.mark.parametrize("kw", [{}, dict(symmetric=True), dict(dtype="uint8"),
                                dict(symmetric=True, narrow_range=True)])
def test_minmax_observer(rng, kw):
    obs = qc.MinMaxObserver()
    data = batches(rng)
    for b in data:
        obs.update(b)
    obs.update(np.zeros((0, 3), np.float32))  # empty batches change nothing
    allx = np.concatenate([b.ravel() for b in data])
    assert_qparams_equal(obs.qparams(**kw), choose(np.float32(allx.min()),
                                                   np.float32(allx.max()), **kw))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_minmax_observer_per_channel(rng, axis):
    obs = qc.MinMaxObserver(axis=axis)
    data = batches(rng, shape=(8, 5, 6))
    for b in data:
        obs.update(b)
    allx = np.stack(data)
    red = tuple(i for i in range(4) if i != (axis % 3) + 1)
    mn, mx = allx.min(axis=red), allx.max(axis=red)
    got = obs.qparams(symmetric=True)
    assert_qparams_equal(got, choose(mn, mx, symmetric=True, axis=axis))
    with pytest.raises(ValueError, match="channels"):
        obs.update(np.zeros((9, 9, 9), np.float32))


def test_moving_average_observer(rng):
    c = 0.05
    obs = qc.MovingAverageMinMaxObserver(averaging_constant=c)
    data = batches(rng, n=8)
    mn = mx = None
    for b in data:
        obs.update(b)
        bmn, bmx = np.float32(b.min()), np.float32(b.max())
        if mn is None:
            mn, mx = bmn, bmx
        else:
            mn = np.float32(mn + np.float32(c) * (bmn - mn))
            mx = np.float32(mx + np.float32(c) * (bmx - mx))
    assert obs.min_val == mn and obs.max_val == mx
    assert_qparams_equal(obs.qparams(), choose(mn, mx))


def test_moving_average_per_channel(rng):
    obs = qc.MovingAverageMinMaxObserver(0.5, axis=1)
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    obs.update(a)
    obs.update(b)
    want = (a.min(0) + np.float32(0.5) * (b.min(0) - a.min(0))).astype(np.float32)
    assert_equal_exact(obs.min_val, want, "min_val")


def test_histogram_growth_matches_reference(rng):
    obs = qc.HistogramObserver(bins=256)
    ref = RefAbsHistogram(256)
    for b in [np.zeros(10, np.float32)] + batches(rng, n=7):
        obs.update(b)
        ref.update(b)
        assert_equal_exact(obs.counts, ref.counts, "counts")
        assert obs.range_max == ref.R


@pytest.mark.parametrize("p", [99.0, 99.99, 100.0])
def test_percentile_observer(rng, p):
    obs = qc.PercentileObserver(percentile=p, bins=512)
    ref = RefAbsHistogram(512)
    for b in batches(rng):
        obs.update(b)
        ref.update(b)
    cdf = np.cumsum(ref.counts) / ref.counts.sum()
    i = min(int(np.searchsorted(cdf, p / 100.0)), 511)
    t = np.float32((i + 1) * ref.R / 512)
    assert obs.threshold() == (i + 1) * ref.R / 512
    want = choose(np.float32(max(ref.mn, -t)), np.float32(min(ref.mx, t)))
    assert_qparams_equal(obs.qparams(), want)


@pytest.mark.parametrize("bins", [128, 256, 300])
def test_histogram_entropy_matches_tensorrt_reference(rng, bins):
    obs = qc.HistogramObserver(bins=bins, method="entropy")
    ref = RefAbsHistogram(bins)
    for b in batches(rng, n=4, grow=False):
        obs.update(b)
        ref.update(b)
    m = ref_entropy_index(ref.counts)
    t = (m + 0.5) * ref.R / bins
    assert obs.threshold() == t
    tf = np.float32(t)
    want = choose(np.float32(max(ref.mn, -tf)), np.float32(min(ref.mx, tf)), symmetric=True)
    assert_qparams_equal(obs.qparams(symmetric=True), want)


def test_histogram_entropy_default_bins_clips_outliers(rng):
    obs = qc.HistogramObserver()
    x = rng.standard_normal(200000).astype(np.float32)
    x[:20] *= 50  # outliers
    obs.update(x)
    assert obs.threshold() < 0.5 * float(np.abs(x).max())


@pytest.mark.parametrize("signed", [True, False])
def test_histogram_mse_observer(rng, signed):
    obs = qc.HistogramObserver(bins=256, method="mse")
    ref = RefAbsHistogram(256)
    for b in batches(rng, n=3):
        b = b if signed else np.abs(b)
        obs.update(b)
        ref.update(b)
    levels = 127 if signed else 255
    errs = ref_hist_mse(ref.counts, ref.R / 256, levels)
    t = (int(np.argmin(errs)) + 1) * ref.R / 256
    assert obs.threshold() == pytest.approx(t, rel=0, abs=0)
    tf = np.float32(t)
    assert_qparams_equal(obs.qparams(), choose(np.float32(max(ref.mn, -tf)),
                                               np.float32(min(ref.mx, tf))))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, 2])
def test_observer_nan_index_is_in_x(axis):
    """Per-axis observers move `axis` to the front of a copy: the NaN's index is still the one
    in x, with count and format as choose_qparams' message."""
    x = np.zeros((2, 3, 4), np.float32)
    x[1, 0, 2] = x[1, 2, 0] = np.nan
    with pytest.raises(ValueError) as want:
        qc.choose_qparams(x, axis=axis)
    assert str(want.value) == "x: expected no NaN values, got 2 NaN values, the first at index " \
                              "(1, 0, 2)"
    for obs in (qc.MinMaxObserver(axis=axis), qc.MovingAverageMinMaxObserver(axis=axis)):
        for xin in (x, x.tolist(), np.asfortranarray(x)):
            with pytest.raises(ValueError) as got:
                obs.update(xin)
            assert str(got.value) == str(want.value), (type(obs).__name__, axis)
        assert obs.min_val is None


def test_observers_reject_bad_input():
    for obs in (qc.MinMaxObserver(), qc.PercentileObserver(), qc.HistogramObserver()):
        with pytest.raises(ValueError, match="no data observed"):
            obs.qparams()
        with pytest.raises(ValueError, match="NaN"):
            obs.update(np.array([1.0, np.nan], np.float32))
        with pytest.raises(TypeError, match="x: expected a real-valued array"):
            obs.update(np.array(["a"]))
    with pytest.raises(ValueError, match="method"):
        qc.HistogramObserver(method="kl")
    with pytest.raises(ValueError, match="bins"):
        qc.HistogramObserver(bins=64)
    with pytest.raises(ValueError, match="bins"):
        qc.PercentileObserver(bins=7)
    with pytest.raises(ValueError, match="percentile"):
        qc.PercentileObserver(percentile=0)
    with pytest.raises(ValueError, match="averaging_constant"):
        qc.MovingAverageMinMaxObserver(averaging_constant=2)
    with pytest.raises(TypeError, match="axis"):
        qc.MinMaxObserver(axis="0")
    with pytest.raises(ValueError, match="axis"):
        qc.MinMaxObserver(axis=3).update(np.ones((2, 2), np.float32))


def test_observers_do_not_modify_input(rng):
    x = rng.standard_normal((10, 10)).astype(np.float32)
    keep = x.copy()
    for obs in (qc.MinMaxObserver(axis=1), qc.HistogramObserver(), qc.PercentileObserver()):
        obs.update(x)
    assert_equal_exact(x, keep, "input")


def test_all_zero_data_gives_valid_qparams():
    obs = qc.HistogramObserver()
    obs.update(np.zeros(100, np.float32))
    qp = obs.qparams()
    assert np.all(np.isfinite(qp.scale)) and np.all(qp.scale > 0)


def ref_error_stats(x, q, scale, zp):
    """The documented lane rule: element i of a group adds to lane i % 16; lanes summed in order."""
    x = np.asarray(x, np.float32)
    d = ((q.astype(np.int32) - np.int32(zp)).astype(np.float32) * np.float32(scale))
    e = np.abs(x - d)
    de = x.astype(np.float64) - d.astype(np.float64)
    lanes = np.arange(x.size) % 16
    sig = err = 0.0
    for lane in range(16):
        m = lanes == lane
        s1 = e1 = 0.0
        for v, r in zip(x[m].astype(np.float64), de[m]):
            s1 += v * v
            e1 += r * r
        sig += s1
        err += e1
    half = np.float32(scale) * np.float32(0.5 + 1 / 2048)
    return sig, err, float(e.max()) if e.size else 0.0, int(np.count_nonzero(e > half))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 33, 100])
@pytest.mark.parametrize("qdtype", [np.int8, np.uint8])
def test_error_stats_matches_reference(rng, n, qdtype):
    x = rng.standard_normal(n).astype(np.float32)
    info = np.iinfo(qdtype)
    zp = 0 if qdtype == np.int8 else 128
    scale = np.float32(0.012)  # clamps the tails: some values count as clipped
    q = np.clip(np.rint(x / scale) + zp, info.min, info.max).astype(qdtype)
    k = 1 if n else 0  # a row of 0 values has no group
    got = _C._calib_error_stats(x.reshape(1, -1), q.reshape(1, -1), max(n, 1),
                                np.full(k, scale, np.float32), np.full(k, zp, np.int32))
    assert got == ref_error_stats(x, q, scale, zp)


@pytest.mark.parametrize("shape,block", [((3, 1000), 1000), ((5, 77), 16), ((2, 4099), 512),
                                         ((7, 31), 31)])
@pytest.mark.parametrize("qdtype", [np.int8, np.uint8])
def test_error_stats_simd_equals_scalar(rng, isa, shape, block, qdtype):
    from conftest import isa_cap
    x = (rng.standard_t(3, size=shape)).astype(np.float32)
    groups = -(-shape[1] // block)
    scale = rng.uniform(0.005, 0.05, shape[0] * groups).astype(np.float32)
    zp = rng.integers(-20, 20, shape[0] * groups).astype(np.int32)
    if qdtype == np.uint8:
        zp += 128
    q = rng.integers(np.iinfo(qdtype).min, np.iinfo(qdtype).max, shape, endpoint=True)
    q = q.astype(qdtype)
    got = _C._calib_error_stats(x, q, block, scale, zp)
    with isa_cap("scalar"):
        want = _C._calib_error_stats(x, q, block, scale, zp)
    assert got == want, f"isa={isa} shape={shape} block={block}"


@pytest.mark.parametrize("shape,block", [((1, 1), 1), ((3, 15), 15), ((4, 16), 16),
                                         ((5, 17), 17), ((2, 1000), 333), ((6, 4099), 4099)])
@pytest.mark.parametrize("symmetric,qr", [(True, (-127, 127)), (False, (0, 255))])
def test_mse_clip_search_simd_equals_scalar(rng, isa, shape, block, symmetric, qr):
    from conftest import isa_cap
    x = (rng.standard_t(2, size=shape) * 0.1).astype(np.float32)
    if shape[1] >= 3:
        x[0, :3] = 0.5 * 0.1 * np.arange(3)  # some exact ties at half steps
    fr = (1.0 - np.arange(81) / 100.0).astype(np.float32)
    mins, maxs = _C._minmax(x, 1, block)
    mins, maxs = np.minimum(mins, 0), np.maximum(maxs, 0)
    args = (x, block, mins, maxs, qr[0], qr[1], symmetric, fr)
    best, errs = _C._calib_mse_clip_search(*args, return_errors=True)
    with isa_cap("scalar"):
        best0, errs0 = _C._calib_mse_clip_search(*args, return_errors=True)
    assert_equal_exact(best, best0, f"best isa={isa}")
    assert_equal_exact(errs, errs0, f"errors isa={isa}")
    assert errs.shape == mins.shape + (81,)
    assert_equal_exact(np.argmin(errs, axis=-1), best, "argmin")


def test_mse_clip_search_errors_match_numpy(rng):
    x = (rng.standard_t(2, size=(3, 50)) * 0.1).astype(np.float32)
    fr = (1.0 - np.arange(20) / 40.0).astype(np.float32)
    mins, maxs = _C._minmax(x, 1, 50)
    mins, maxs = np.minimum(mins, 0), np.maximum(maxs, 0)
    _, errs = _C._calib_mse_clip_search(x, 50, mins, maxs, -128, 127, False, fr,
                                        return_errors=True)
    for r in range(3):
        want = ref_mse_errors(x[r], mins[r, 0], maxs[r, 0], -128, 127, False, fr)
        np.testing.assert_allclose(errs[r, 0], want, rtol=1e-12)


@pytest.mark.parametrize("method", ["mse", "entropy"])
@pytest.mark.parametrize("value", [2.5, -2.5, 1e-3])
def test_histogram_constant_data(method, value):
    # constant data: the clipping threshold can fall just inside the one value (mse chose
    # 2.49878 for 2.5), which inverted the range; that side clips to the threshold instead
    for n in (1, 10):
        o = qc.HistogramObserver(method=method)
        o.update(np.full(n, value, np.float32))
        qp = o.qparams(dtype="uint8")
        assert np.isfinite(qp.scale) and qp.scale > 0
        q = qc.quantize(np.float32(value), qp.scale, qp.zero_point)
        err = abs(float(qc.dequantize(q, qp.scale, qp.zero_point)) - value)
        assert err <= 0.01 * abs(value)  # within a step of ~|value| / 255 (and the clip)


def test_observer_options_are_numbers():
    for make, match in ((lambda: qc.MovingAverageMinMaxObserver("a"), "averaging_constant"),
                        (lambda: qc.MovingAverageMinMaxObserver(None), "averaging_constant"),
                        (lambda: qc.PercentileObserver("x"), "percentile"),
                        (lambda: qc.PercentileObserver(True), "percentile")):
        with pytest.raises(TypeError, match=f"{match}: expected a real number"):
            make()


def test_per_axis_zero_size_and_0d():
    o = qc.MinMaxObserver(axis=0)
    o.update(np.zeros((0, 4), np.float32))  # no channels: nothing observed (was a reshape error)
    assert o.min_val is None
    o.update(np.arange(6, dtype=np.float32).reshape(2, 3))
    o.update(np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(o.min_val, [0, 3])
    with pytest.raises(ValueError, match="axis: expected None for a 0-d input"):
        qc.MinMaxObserver(axis=0).update(np.float32(3.0))  # not a 1-channel tensor
    o = qc.MinMaxObserver()
    o.update(np.float32(-3.0))
    assert (o.min_val, o.max_val) == (-3.0, -3.0)


@pytest.mark.parametrize("make", [qc.HistogramObserver, qc.PercentileObserver,
                                  qc.MinMaxObserver])
def test_update_from_several_threads(make):
    """One observer fed from several threads takes each batch whole: a histogram counts
    every value once (its counts were read, rebinned and added to without the GIL, and
    concurrent batches lost some), and the range is that of all batches."""
    import copy
    import pickle
    import threading
    rng = np.random.default_rng(0)
    # growing ranges, so that batches arrive while another thread rebins
    batches = [rng.standard_normal(1 << 18).astype(np.float32) * (1 + i) for i in range(16)]
    obs = make()
    threads = [threading.Thread(target=lambda k=k: [obs.update(b) for b in batches[k::4]])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    whole = np.concatenate(batches)
    assert (obs.min_val, obs.max_val) == (whole.min(), whole.max())
    if hasattr(obs, "counts"):
        assert int(obs.counts.sum()) == whole.size
    for twin in (copy.deepcopy(obs), pickle.loads(pickle.dumps(obs))):  # without the lock
        assert twin.qparams().scale == obs.qparams().scale
        twin.update(batches[0])  # (and a lock of its own)
