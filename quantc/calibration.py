"""Calibration observers: collect activation ranges over many batches, then choose qparams.

Every observer has ``update(x)`` (call it once per batch; min/max and histograms are computed
by C kernels, NaN raises ``ValueError``) and ``qparams(dtype="int8", symmetric=False,
narrow_range=False, profile="onnx") -> QParams``, which hands the observed (possibly clipped)
range to :func:`quantc.choose_qparams`.

Histogram observers (``PercentileObserver``, ``HistogramObserver``) keep a histogram of |x|
with a fixed number of bins over ``[0, R]``. The first batch with a non-zero value sets
``R = max|x|``; when a later batch reaches beyond ``R``, ``R`` is doubled (as often as
needed) and the existing counts are merged pairwise (bins ``2j`` and ``2j+1`` become bin
``j``), which is exact because the old bin edges are a subset of the new ones. A value ``v``
lands in bin ``floor(|v| * bins / R)`` computed in float64, capped at the last bin. The
histogram therefore resolves thresholds to ``R / bins``; ``R`` is at most twice the true
max|x|.
"""
import math
import threading

import numpy as np

from . import _C, _dtypes

# Upper bound on histogram bins (entropy calibration is O(bins * 128) time, O(bins * 64) memory).
MAX_BINS = 65536

__all__ = ["MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
           "HistogramObserver"]


def _real(value, name):
    """A Python float from a real number (not a bool, string or None), the error naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                       np.floating)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    return float(value)


def _f32(x, name="x"):
    """x as float32 (a copy only when needed); rejects non-real inputs."""
    a = np.asarray(x)
    if (a.dtype.kind not in "iuf") and not _dtypes.is_ml_float(a.dtype):
        raise TypeError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)  # (ascontiguousarray would make a 0-d input 1-D)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _minmax(a, name="x", axis=None, block_size=None, where=None):
    """``_C._minmax(a, axis, block_size)``: one pass of the quant family's min/max kernels.

    A NaN raises ValueError naming `name` with the NaN count and the first NaN's index in
    `where` (the caller's array, when `a` is a rearranged copy of it; default `a`), in
    C order and the format of ``choose_qparams``' message; both are found here, on the error
    path only.
    """
    try:
        return _C._minmax(a, axis, block_size)
    except ValueError:
        nan = np.isnan(a if where is None else where)
        if not nan.any():
            raise
    raise _dtypes.nan_error(name, nan)


def _channels_first(x, axis, name="x"):
    """x as a contiguous float32 (C, rest) array with `axis` moved to the front."""
    a = _f32(x, name)
    if a.ndim == 0:
        raise ValueError(f"axis: expected None for a 0-d input, got {axis}")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis: expected an int in [{-a.ndim}, {a.ndim}), got {axis}")
    a = np.moveaxis(a, axis, 0)
    return np.ascontiguousarray(a.reshape(a.shape[0], math.prod(a.shape[1:])))  # (C = 0 too)


def _choose(min_val, max_val, dtype, symmetric, narrow_range, profile, axis=None):
    from . import choose_qparams
    return choose_qparams(min_val=min_val, max_val=max_val, dtype=dtype, symmetric=symmetric,
                          axis=axis, narrow_range=narrow_range, profile=profile)


class _RangeObserver:
    """Shared min/max bookkeeping (per tensor, or per channel along `axis`).

    ``update`` may be called from several threads at once: each batch is taken whole, one at
    a time (a histogram's counts were read, rebinned and added to with the GIL released, and
    concurrent batches lost counts)."""

    def __init__(self, axis=None):
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"axis: expected an int or None, got {type(axis).__name__}")
        self.axis = None if axis is None else int(axis)
        self.min_val = None
        self.max_val = None
        self._lock = threading.Lock()

    def update(self, x):
        """Observe a batch (see the subclass)."""
        with self._lock:
            self._update(x)

    def __getstate__(self):  # copy and pickle without the lock
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _batch_range(self, x):
        """(min, max) of one batch: floats, or float32 arrays (C,) with an axis; None if empty."""
        f = _f32(x)
        if self.axis is None:
            if f.size == 0:
                return None
            mn, mx = _minmax(f)
            return np.float32(mn), np.float32(mx)
        a = _channels_first(f, self.axis)
        if a.size == 0:  # no values (no channels, or none per channel): nothing to observe
            return None
        if self.min_val is not None and a.shape[0] != self.min_val.shape[0]:
            raise ValueError(f"x: expected {self.min_val.shape[0]} channels along axis "
                             f"{self.axis} (as in earlier batches), got {a.shape[0]}")
        return _minmax(a, axis=0, where=f)  # a NaN's index in x, not in the moved copy

    def _extend(self, r):
        """Widen the running range to cover one batch's (min, max)."""
        if self.min_val is None:
            self.min_val, self.max_val = r
        else:
            self.min_val = np.minimum(self.min_val, r[0])
            self.max_val = np.maximum(self.max_val, r[1])

    def _infinite(self):
        """'+inf' or '-inf' when the observed range is infinite (no qparams can come of it),
        else None."""
        if self.min_val is None or (np.all(np.isfinite(self.min_val)) and
                                    np.all(np.isfinite(self.max_val))):
            return None
        return "-inf" if np.any(np.isneginf(self.min_val)) else "+inf"

    def _check_ready(self):
        if self.min_val is None:
            raise ValueError("qparams: no data observed yet (call update(x) first)")

    def qparams(self, dtype="int8", symmetric=False, narrow_range=False, profile="onnx"):
        """QParams for the observed range (per channel along `axis` when one was given)."""
        self._check_ready()
        return _choose(self.min_val, self.max_val, dtype, symmetric, narrow_range, profile,
                       axis=self.axis)

    def __repr__(self):
        return (f"{type(self).__name__}(axis={self.axis}, min_val={self.min_val}, "
                f"max_val={self.max_val})")


class MinMaxObserver(_RangeObserver):
    """Running minimum and maximum over every batch (per tensor, or per channel on `axis`)."""

    def update(self, x):
        """Observe a batch: the running min/max (per channel along `axis` if given)."""
        super().update(x)

    def _update(self, x):
        r = self._batch_range(x)
        if r is not None:
            self._extend(r)


class MovingAverageMinMaxObserver(_RangeObserver):
    """Exponential moving average of each batch's min and max (as torch.ao's observer).

    The first batch sets the range; every later batch moves it, in float32:
    ``min_val = min_val + c * (batch_min - min_val)`` (and the same for max), ``c`` being
    ``averaging_constant``.
    """

    def __init__(self, averaging_constant=0.01, axis=None):
        c = _real(averaging_constant, "averaging_constant")
        if not 0.0 < c <= 1.0:
            raise ValueError(f"averaging_constant: expected a value in (0, 1], got {c}")
        super().__init__(axis)
        self.averaging_constant = c

    def update(self, x):
        """Observe a batch: move min/max towards its range by `averaging_constant`."""
        super().update(x)

    def _update(self, x):
        r = self._batch_range(x)
        if r is None:
            return
        if self.min_val is None:
            self.min_val, self.max_val = r
            return
        c = np.float32(self.averaging_constant)
        self.min_val = np.float32(self.min_val + c * (r[0] - self.min_val)) if self.axis is None \
            else (self.min_val + c * (r[0] - self.min_val)).astype(np.float32)
        self.max_val = np.float32(self.max_val + c * (r[1] - self.max_val)) if self.axis is None \
            else (self.max_val + c * (r[1] - self.max_val)).astype(np.float32)


class _AbsHistogram(_RangeObserver):
    """A growing |x| histogram (see the module docstring) plus the exact min and max."""

    def __init__(self, bins):
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
            raise TypeError(f"bins: expected an int, got {type(bins).__name__}")
        if bins < 2 or bins % 2 or bins > MAX_BINS:
            raise ValueError(f"bins: expected an even int in [2, {MAX_BINS}], got {bins}")
        super().__init__(None)
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.int64)
        self.range_max = 0.0

    @property
    def width(self):
        return self.range_max / self.bins

    def update(self, x):
        """Observe a batch: add |x| to the histogram (doubling its range as needed)."""
        super().update(x)

    def _update(self, x):
        a = _f32(x)
        r = self._batch_range(a)
        if r is None:
            return
        self._extend(r)
        amax = float(max(-r[0], r[1]))
        if amax == 0.0:
            self.counts[0] += a.size  # zeros land in bin 0 whatever the range
            return
        if self.range_max == 0.0:
            self.range_max = amax
        while amax > self.range_max:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(self.bins // 2, np.int64)])
            self.range_max *= 2.0
        _C._calib_abs_histogram(a, self.counts, self.bins / self.range_max)

    def _clipped_qparams(self, threshold, dtype, symmetric, narrow_range, profile):
        t = np.float32(threshold)
        mn = np.maximum(self.min_val, -t)
        mx = np.minimum(self.max_val, t)
        if mn > mx:  # every value beyond t on one side (constant data): clip that side to t
            mn, mx = (mx, mx) if mx >= 0 else (mn, mn)
        return _choose(mn, mx, dtype, symmetric, narrow_range, profile)


class PercentileObserver(_AbsHistogram):
    """Clip |x| at a percentile of everything observed (ONNX Runtime's "percentile").

    The threshold is the upper edge of the first histogram bin where the cumulative share of
    |x| reaches ``percentile / 100``; the range is the observed [min, max] clipped to
    ``[-threshold, threshold]``.
    """

    def __init__(self, percentile=99.99, bins=2048):
        p = _real(percentile, "percentile")
        if not 0.0 < p <= 100.0:
            raise ValueError(f"percentile: expected a value in (0, 100], got {p}")
        super().__init__(bins)
        self.percentile = p

    def threshold(self):
        """The clipping threshold: the upper edge of the percentile's bin (0.0 if all zero)."""
        self._check_ready()
        if self.range_max == 0.0:
            return 0.0
        cdf = np.cumsum(self.counts) / self.counts.sum()
        i = min(int(np.searchsorted(cdf, self.percentile / 100.0)), self.bins - 1)
        return (i + 1) * self.width

    def qparams(self, dtype="int8", symmetric=False, narrow_range=False, profile="onnx"):
        """QParams for the observed [min, max] clipped to [-threshold, threshold]."""
        return self._clipped_qparams(self.threshold(), dtype, symmetric, narrow_range, profile)


def _smooth(p, eps=1e-4):
    """MXNet/ONNX Runtime smoothing: move eps mass onto zero bins so KL stays finite."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    out = p.astype(np.float32)
    out += (eps * zeros - eps1 * ~zeros).astype(np.float32)
    return out


def _kl(p, q):
    """KL(p || q) after normalizing both (scipy.stats.entropy)."""
    p = p / p.sum(dtype=np.float64)
    q = q / q.sum(dtype=np.float64)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _entropy_kl_direct(hist, tail, i, levels):
    """KL(P || Q) of candidate i computed bin by bin (None: skipped), the definition that
    :func:`entropy_threshold_index` evaluates in closed form; used where the smoothing makes a
    probability non-positive."""
    sliced = hist[:i]
    p = sliced.astype(np.float64)
    p[i - 1] += tail[i]
    nonzero = p != 0
    merged = i // levels
    gid = np.minimum(np.arange(i) // merged, levels - 1)
    qbins = np.bincount(gid, weights=sliced, minlength=levels)
    norm = np.bincount(gid, weights=nonzero, minlength=levels)
    q = np.where(nonzero, qbins[gid] / np.maximum(norm[gid], 1), 0.0)
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return _kl(ps, qs)


_EPS = 1e-4          # smoothing mass of _smooth
_SMALL = 64          # counts 1.._SMALL summed exactly per value, larger ones by series
_TERMS = 18          # series terms: (c/h)^k with c <= _EPS * MAX_BINS < 6.6 and h > 64
_CHUNK = 2048        # candidates evaluated together


def entropy_threshold_index(counts, num_quantized_bins=128):
    """TensorRT's KL-divergence calibration on an |x| histogram: the best bin count m.

    For every candidate i in [num_quantized_bins, bins]: P = the first i bins with the
    outliers (bins i..) added to bin i-1; Q = the first i bins (without outliers) merged into
    num_quantized_bins levels (i // levels bins each, the remainder going to the last level)
    and spread back evenly over the bins of each level that are non-zero in P; both smoothed
    (eps = 1e-4, as MXNet / ONNX Runtime: zero bins get eps, the others lose
    ``c = eps * zeros / nonzeros``) and KL(P || Q) taken. Returns the i with the smallest
    divergence (the first of those within 1e-12 of it); the threshold is
    ``(i + 0.5) * width``.

    Computed in O(bins * num_quantized_bins) rather than O(bins^2): with N the total count,
    KL = T / N - log N + log sum(Q), where T = sum over non-zero bins of
    ``(p - c) log(p - c)`` minus, per level, ``(sum of p - c * nonzero) * log(q - c_q)``
    (zero bins contribute eps log eps - eps log eps = 0). The level sums come from prefix
    sums; the first sum from prefix counts of each count 1..64 and, for larger counts, the
    series ``(h - c) log(h - c) = h log h - c (log h + 1) + sum_k c^k / (k (k-1) h^(k-1))``
    over prefix power sums. Candidates where smoothing leaves a bin without mass (very sparse
    histograms) are evaluated bin by bin. `counts` has at most MAX_BINS bins.
    """
    hist = np.asarray(counts, np.int64)
    bins = hist.size
    levels = num_quantized_bins
    if bins < levels:
        raise ValueError(f"bins: expected at least {levels} bins for entropy calibration, "
                         f"got {bins}")
    if bins > MAX_BINS:
        raise ValueError(f"bins: expected at most {MAX_BINS} bins for entropy calibration, "
                         f"got {bins}")
    if np.any(hist < 0):
        raise ValueError("counts: expected non-negative counts")
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0]])  # tail[i] = sum(hist[i:])
    total = float(tail[0])
    # prefix arrays over k = 0..bins (sums of the first k bins)
    S = np.concatenate([[0], np.cumsum(hist)])
    nzb = hist != 0
    NZ = np.concatenate([[0], np.cumsum(nzb)])
    small = np.arange(1, _SMALL + 1)
    cnt = np.zeros((bins + 1, _SMALL), np.int64)
    sel = nzb & (hist <= _SMALL)
    onehot = np.zeros((bins, _SMALL), np.int64)
    onehot[np.nonzero(sel)[0], hist[sel] - 1] = 1
    np.cumsum(onehot, axis=0, out=cnt[1:])
    del onehot
    big = np.where(hist > _SMALL, hist, 0).astype(np.float64)
    isbig = big > 0
    hb = np.where(isbig, big, 1.0)
    pw = np.zeros((_TERMS + 1, bins + 1))
    pw[0, 1:] = np.cumsum(np.where(isbig, hb * np.log(hb), 0.0))
    pw[1, 1:] = np.cumsum(np.where(isbig, np.log(hb) + 1.0, 0.0))
    inv = np.where(isbig, 1.0 / hb, 0.0)
    acc = np.ones(bins)
    for k in range(2, _TERMS + 1):
        acc = acc * inv
        pw[k, 1:] = np.cumsum(acc)
    coef = np.array([1.0 / (k * (k - 1)) for k in range(2, _TERMS + 1)])

    kls = np.full(bins + 1, np.nan)
    g = np.arange(levels)
    for lo in range(levels, bins + 1, _CHUNK):
        i = np.arange(lo, min(bins, lo + _CHUNK - 1) + 1)
        t = tail[i - 1].astype(np.float64)          # p[i-1]: bin i-1 plus the outliers
        tpos = t > 0
        nzp = NZ[i - 1] + tpos
        c = _EPS * (i - nzp) / np.maximum(nzp, 1)
        # sum over non-zero bins j < i-1 of (h - c) log(h - c)
        k = i - 1
        v = small - c[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            f_small = np.sum(cnt[k] * np.where(v > 0, v * np.log(np.where(v > 0, v, 1)), 0.0),
                             axis=1)
            series = pw[0, k] - c * pw[1, k]
            cp = c.copy()
            cpow = c * c
            for kk in range(2, _TERMS + 1):
                series = series + coef[kk - 2] * cpow * pw[kk, k]
                cpow = cpow * cp
            tv = np.where(tpos, t - c, 1.0)
            f = f_small + series + np.where(tpos, tv * np.log(np.where(tv > 0, tv, 1)), 0.0)
        bad = (tpos & (t <= c)) | np.any((cnt[k] > 0) & (small[None, :] <= c[:, None]), axis=1)
        # levels: [g*m, (g+1)*m), the last one up to i
        m = i // levels
        start = g[None, :] * m[:, None]
        stop = np.where(g[None, :] == levels - 1, (i - 1)[:, None], start + m[:, None])
        qb = S[stop] - S[start]                     # hist sums without bin i-1 in the last
        nrm = NZ[stop] - NZ[start]
        psum = qb.astype(np.float64)
        last_h = hist[i - 1]
        qb[:, -1] += last_h
        psum[:, -1] += t
        nrm[:, -1] += tpos
        qpos = qb > 0
        nzq = np.sum(np.where(qpos, nrm, 0), axis=1)
        cq = _EPS * (i - nzq) / np.maximum(nzq, 1)
        qv = np.where(qpos, qb / np.maximum(nrm, 1) - cq[:, None], _EPS)
        bad |= np.any(qpos & (qv <= 0), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            lq = np.log(np.where(qv > 0, qv, 1.0))
            cross = np.sum(np.where(nrm > 0, (psum - c[:, None] * nrm) * lq, 0.0), axis=1)
            sq = S[i].astype(np.float64)
            kl = (f - cross) / total - math.log(total) + np.log(np.where(sq > 0, sq, 1.0))
        skip = (nzp == 0) | (nzq == 0)
        kl[skip] = np.nan
        for j in np.nonzero(bad & ~skip)[0]:
            d = _entropy_kl_direct(hist, tail, int(i[j]), levels)
            kl[j] = np.nan if d is None else d
        kls[i] = kl
    valid = np.isfinite(kls)
    if not valid.any():
        return bins
    best = np.min(kls[valid])
    return int(np.nonzero(valid & (kls <= best + 1e-12 * max(1.0, abs(best))))[0][0])


class HistogramObserver(_AbsHistogram):
    """Clip |x| where a histogram of everything observed says it is best.

    method="entropy": TensorRT's KL-divergence calibration (the bin ``m`` of least KL
    divergence, ``quantc.calibration.entropy_threshold_index``), threshold
    ``(m + 0.5) * width``.
    method="mse": the threshold ``t = k * width`` (k in 1..bins) minimizing the summed squared
    error of quantizing the bin centres symmetrically onto ``L`` levels per side
    (``L = qmax - qmin`` when nothing negative was seen, else ``(qmax - qmin) // 2``),
    computed in C.
    The range is the observed [min, max] clipped to ``[-threshold, threshold]``.
    """

    def __init__(self, bins=2048, method="entropy"):
        if method not in ("entropy", "mse"):
            raise ValueError(f"method: expected 'entropy' or 'mse', got {method!r}")
        super().__init__(bins)
        if method == "entropy" and self.bins < 128:
            raise ValueError(f"bins: expected at least 128 bins for method='entropy', got {bins}")
        self.method = method

    def threshold(self, dtype="int8", narrow_range=False):
        """The clipping threshold that `method` picks (0.0 if everything observed was 0)."""
        self._check_ready()
        if self.range_max == 0.0:
            return 0.0
        if self.method == "entropy":
            return (entropy_threshold_index(self.counts) + 0.5) * self.width
        from . import qrange
        qmin, qmax = qrange(dtype, narrow_range=narrow_range)
        levels = qmax - qmin if self.min_val >= 0 else (qmax - qmin) // 2
        err = _C._calib_hist_mse(self.counts, self.width, int(levels))
        return (int(np.argmin(err)) + 1) * self.width

    def qparams(self, dtype="int8", symmetric=False, narrow_range=False, profile="onnx"):
        """QParams for the observed [min, max] clipped to [-threshold, threshold]."""
        t = self.threshold(dtype, narrow_range)
        return self._clipped_qparams(t, dtype, symmetric, narrow_range, profile)
