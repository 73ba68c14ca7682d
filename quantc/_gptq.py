"""GPTQ: weight quantization that corrects each rounding error with the calibration inputs.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers" (2022): the columns of a (out, in) weight are quantized one at a time, and the
error of each is spread over the columns not yet quantized so that ``x @ w_hat.T`` stays close
to ``x @ w.T`` on the calibration inputs (least squares weighted by ``H = sum x^T x``). The
result is an ordinary :class:`QuantizedTensor` in the layout ``quantize_weights`` writes, so
it is saved, loaded and run by ``Linear.from_quantized`` like any other.
"""
import numpy as np

from . import _dtypes

__all__ = ["gptq"]

_LAZY = 128  # columns per lazy batch (the error reaches later columns once per batch)


def _hessian(hessian, k):
    h = np.asarray(hessian)
    if h.dtype.kind not in "fiu" and not _dtypes.is_ml_float(h.dtype):
        raise TypeError(f"hessian: expected real numbers, got {h.dtype}")
    if h.shape != (k, k):
        raise ValueError(f"hessian: expected shape ({k}, {k}) (in_features squared: the sum "
                         f"of x.T @ x over the calibration inputs), got shape {h.shape}")
    h = h.astype(np.float64)
    if not np.all(np.isfinite(h)):
        raise ValueError("hessian: expected finite values")
    d = np.diag(h)
    if np.any(d < 0):
        i = int(np.argmax(d < 0))
        raise ValueError(f"hessian: expected a sum of x.T @ x (diagonal >= 0), got {d[i]} at "
                         f"[{i}, {i}]")
    return (h + h.T) * 0.5


def _upper_inverse(r):
    """Inverse of an upper triangular matrix with a nonzero diagonal, by halves:
    [[A, B], [0, C]]^-1 = [[A^-1, -A^-1 B C^-1], [0, C^-1]] (a third of np.linalg.inv's
    work, in matrix products)."""
    k = r.shape[0]
    if k <= 128:
        return np.triu(np.linalg.inv(r))
    m = k // 2
    ai, ci = _upper_inverse(r[:m, :m]), _upper_inverse(r[m:, m:])
    out = np.empty_like(r)
    out[:m, :m], out[m:, m:], out[m:, :m] = ai, ci, 0
    out[:m, m:] = -(ai @ r[:m, m:]) @ ci
    return out


def _inverse_cholesky(h, damp):
    """Upper U with U^T U = (H + damp * mean(diag H) * I)^-1, columns that were never
    active (diag 0) kept from rounding into others."""
    h = h.copy()
    k = h.shape[0]
    dead = np.diag(h) == 0
    h[dead, :] = 0
    h[:, dead] = 0
    mean = float(np.mean(np.diag(h))) if k else 0.0
    h[np.diag_indices(k)] += damp * mean if mean > 0 else 1.0
    h[dead, dead] = max(mean, 1.0)
    try:
        # H = R R^T with R upper (the Cholesky factor of H with rows and columns reversed);
        # then U = R^-1 is upper with a positive diagonal and U^T U = H^-1: the factor
        # wanted, for one factorization and one inverse
        r = np.linalg.cholesky(np.ascontiguousarray(h[::-1, ::-1]))[::-1, ::-1]
        return _upper_inverse(np.ascontiguousarray(r))
    except np.linalg.LinAlgError:
        raise ValueError(f"hessian: not positive definite after damping by {damp} of its mean "
                         "diagonal; pass a sum of x.T @ x, or a larger damp") from None


def gptq(weight, hessian, *, dtype="int4", granularity="per_block", block_size=32,
         symmetric=True, narrow_range=True, damp=0.01):
    """Quantize a Linear weight with GPTQ -> :class:`QuantizedTensor`.

    ``weight``: float (out_features, in_features), as ``torch.nn.Linear``. ``hessian``:
    (in_features, in_features), the sum of ``x.T @ x`` over the calibration inputs ``x``
    (rows = tokens or samples) of this layer, e.g. ``sum(x.T.astype(np.float64) @ x for x in
    batches)``; only its direction matters (a scaled H gives the same result, up to float64
    rounding).

    The scheme is the one ``quantize_weights(..., dtype, granularity, block_size, symmetric,
    narrow_range)`` writes (``"per_channel"`` along axis 0, ``"per_block"`` along
    in_features, ``"per_tensor"``); the tensor's ``method`` is ``"gptq"``. Columns are taken
    in order. Each group's scale and zero point are chosen with ``choose_qparams`` from the
    min/max of its current (already corrected) weights when its first column comes up (per
    tensor / per channel: from the original weights); each column is quantized with
    :func:`quantize` and its error ``(w - w_hat) / U[j, j]`` is subtracted from the later
    columns through ``U``, the upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``
    (float64). Input channels that were never active (``H[j, j] == 0``) are rounded to
    nearest and pass no error on. With a diagonal ``H`` nothing is passed on and the result
    equals ``quantize_weights``' round to nearest bit for bit.

    Memory: about five float64 (in_features, in_features) arrays at once (1 GB each for
    in_features 11008), plus the weight in float64.

    Pair it with SmoothQuant by quantizing ``weight * s`` with ``H / outer(s, s)`` (the
    Hessian of the smoothed inputs ``x / s``) and running it with
    ``Linear.from_quantized(qt, bias, smooth=s)``.
    """
    from . import choose_qparams, quantize
    from .weights import _QSCHEMES, QuantizedTensor, _check_granularity
    w0 = np.asarray(weight)
    if not _dtypes.is_float(w0.dtype):
        raise TypeError(f"weight: expected a float array, got {w0.dtype}")
    if w0.ndim != 2 or 0 in w0.shape:
        raise ValueError(f"weight: expected a non-empty (out_features, in_features) matrix, "
                         f"got shape {w0.shape}")
    dtype_s = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    if dtype_s not in _QSCHEMES:
        raise ValueError(f"dtype: expected one of {', '.join(_QSCHEMES)}, got {dtype!r}")
    _check_granularity(granularity, block_size)
    n, k = w0.shape
    bs = int(block_size) if granularity == "per_block" else k
    if isinstance(damp, bool) or not isinstance(damp, (int, float, np.integer, np.floating)) \
            or not 0 < damp <= 1:
        raise ValueError(f"damp: expected a number in (0, 1], got {damp!r}")
    w32 = w0.astype(np.float32)
    if not np.all(np.isfinite(w32)):
        bad = np.argwhere(~np.isfinite(w32))[0]
        raise ValueError(f"weight: expected finite values, got {w32[tuple(bad)]} at index "
                         f"{tuple(int(i) for i in bad)}")
    u = _inverse_cholesky(_hessian(hessian, k), float(damp))

    def params(cols):
        """(scale, zero_point) per output row for the float32 columns ``cols`` (one per
        row of ``cols``)."""
        lo, hi = cols.min(axis=0), cols.max(axis=0)
        if granularity == "per_tensor":
            lo, hi = np.full(n, lo.min(), np.float32), np.full(n, hi.max(), np.float32)
        qp = choose_qparams(min_val=lo, max_val=hi, dtype=dtype_s, symmetric=symmetric,
                            axis=0, narrow_range=narrow_range)
        return (np.asarray(qp.scale, np.float32).reshape(n),
                np.asarray(qp.zero_point).reshape(n))

    # the weight transposed: column j of the weight is the contiguous row wt[j]
    wt = np.ascontiguousarray(w32.T, dtype=np.float64)
    groups = -(-k // bs)
    scales = np.empty((n, groups), np.float32)
    zps = None
    qt_rows = None
    if granularity != "per_block":
        s, z = params(w32.T)
    lazy = bs * max(1, _LAZY // bs) if granularity == "per_block" else _LAZY
    for b0 in range(0, k, lazy):
        b1 = min(b0 + lazy, k)
        err = np.empty((b1 - b0, n))
        for j in range(b0, b1):
            if granularity == "per_block" and j % bs == 0:
                s, z = params(wt[j:min(j + bs, k)].astype(np.float32))
                s64, z64 = s.astype(np.float64), z.astype(np.float64)
                scales[:, j // bs] = s
                if zps is None:
                    zps = np.empty((n, groups), z.dtype)
                zps[:, j // bs] = z
            elif j == 0:
                s64, z64 = s.astype(np.float64), z.astype(np.float64)
            row = quantize(wt[j].astype(np.float32), s, z, dtype_s, axis=0)
            if qt_rows is None:
                qt_rows = np.empty((k, n), row.dtype)
            qt_rows[j] = row
            e = (wt[j] - (row.astype(np.float64) - z64) * s64) / u[j, j]
            err[j - b0] = e
            if j + 1 < b1:
                wt[j + 1:b1] -= np.outer(u[j, j + 1:b1], e)
        if b1 < k:
            wt[b1:] -= u[b0:b1, b1:].T @ err
    q = np.ascontiguousarray(qt_rows.T)
    if granularity == "per_block":
        return QuantizedTensor(q, scales, zps, 1, bs, w0.dtype, "per_block", "gptq",
                               flat_blocks=True)
    if granularity == "per_channel":
        return QuantizedTensor(q, s, z, 0, None, w0.dtype, "per_channel", "gptq")
    return QuantizedTensor(q, s[:1].reshape(()), z[:1].reshape(()), None, None, w0.dtype,
                           "per_tensor", "gptq")
