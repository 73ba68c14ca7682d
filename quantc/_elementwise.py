"""Element-wise quantization: quantization ranges, choosing scale/zero point, quantize,
dequantize, fake-quantize and ONNX DynamicQuantizeLinear.

``quantize``, ``dequantize`` and ``fake_quantize`` are the C functions themselves (their
docstrings live in ``csrc/py/elementwise.c``), so a call costs one argument parse. The
min/max pass behind ``choose_qparams`` and ``quantize_dynamic`` is one C pass over ``x``;
the parameter formulas (O(channels)) are NumPy, written out below per profile.
"""
import math
from typing import NamedTuple

import numpy as np

from . import _C, _dtypes, _lowbit

__all__ = ["QParams", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
           "quantize_dynamic", "pack_bits", "unpack_bits"]

_PROFILES = ("onnx", "torch", "tflite")
_DTYPES = {"int8": (np.dtype(np.int8), -128, 127), "uint8": (np.dtype(np.uint8), 0, 255)}
_DTYPES.update({k: (v[0], v[1], v[2]) for k, v in _lowbit.TYPES.items()})
_NAMES = "int8, uint8, " + ", ".join(_lowbit.TYPES)

_LOWBIT_DOC = """

Beyond int8/uint8 (``dtype`` a string or ``ml_dtypes`` dtype, or ``zero_point`` an array of
it): int16, uint16, int4, uint4, int2, uint2 (ONNX/NumPy semantics above, profiles
``'onnx'`` and ``'tflite'``), and float8_e4m3fn, float8_e4m3fnuz, float8_e5m2,
float8_e5m2fnuz, float4_e2m1fn as ONNX QuantizeLinear with ``saturate=1``:
``cast(clamp(x / s, -max, max))`` rounding to nearest even (+-inf and overflow give +-max;
float8 zero points must be 0; float4_e2m1fn adds its zero point before the cast). int4,
uint4 and the float8 types run as one C pass (float32 or bfloat16 read directly), the others
as exact NumPy code, all with the ONNX reference formulas in float32; sub-byte results are
``ml_dtypes`` arrays, one value per byte. ``packed=True`` (int4, uint4, int2, uint2) returns
the ONNX packed form instead, ``pack_bits`` of that result (a 1-D uint8 array of
``ceil(size * bits / 8)`` bytes), written directly by the int4/uint4 kernel."""


def _lowbit_name(dtype, zero_point):
    if dtype is not None:
        return _lowbit.type_name(dtype)
    if isinstance(zero_point, (np.ndarray, np.generic)):
        return _lowbit.type_name(zero_point.dtype)
    return None


def _to_out(res, out):
    if out is None:
        return res
    if not isinstance(out, np.ndarray) or out.shape != res.shape or out.dtype != res.dtype or \
            not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out: expected a writable C-contiguous array of shape {res.shape} and "
                         f"dtype {res.dtype}, got "
                         f"{getattr(out, 'shape', type(out).__name__)} "
                         f"{getattr(out, 'dtype', '')}")
    out[...] = res
    return out


def quantize(x, scale, zero_point=None, dtype=None, *, axis=None, block_size=None,
             profile="onnx", packed=False, out=None):
    name = _lowbit_name(dtype, zero_point)
    if name is None:
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {_NAMES}, got {dtype!r}")
        if packed:
            raise ValueError(f"packed: expected False for int8/uint8 (only int4, uint4, int2 "
                             f"and uint2 pack), got {packed!r}")
        return _C.quantize(x, scale, zero_point, dtype, axis=axis, block_size=block_size,
                           profile=profile, out=out)
    _check_profile(profile)
    r = _lowbit.quantize(x, scale, zero_point, name, axis, block_size, profile, packed, out)
    return r if out is not None and r is out else _to_out(r, out)


def dequantize(q, scale, zero_point=None, *, axis=None, block_size=None, out=None):
    qa = q if isinstance(q, np.ndarray) else np.asarray(q) if isinstance(q, np.generic) else None
    name = _lowbit.type_name(qa.dtype) if qa is not None else None
    if name is None:
        if qa is not None and qa.dtype not in (np.int8, np.uint8):
            raise TypeError(f"q: expected an array of {_NAMES}, got {qa.dtype}")
        return _C.dequantize(q, scale, zero_point, axis=axis, block_size=block_size, out=out)
    return _to_out(_lowbit.dequantize(qa, scale, zero_point, name, axis, block_size), out)


def fake_quantize(x, scale, zero_point=None, dtype="int8", *, axis=None, block_size=None,
                  qmin=None, qmax=None, profile="onnx", return_mask=False, out=None):
    name = _lowbit_name(dtype, None)
    if name is None:
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {_NAMES}, got {dtype!r}")
        return _C.fake_quantize(x, scale, zero_point, dtype, axis=axis, block_size=block_size,
                                qmin=qmin, qmax=qmax, profile=profile, return_mask=return_mask,
                                out=out)
    _check_profile(profile)
    r = _lowbit.fake_quantize(x, scale, zero_point, name, axis, block_size, qmin, qmax,
                              profile, return_mask)
    if return_mask:
        return _to_out(r[0], out), r[1]
    return _to_out(r, out)


quantize.__doc__ = _C.quantize.__doc__.replace("Quantize float values to int8/uint8",
                                                "Quantize float values") + _LOWBIT_DOC
dequantize.__doc__ = _C.dequantize.__doc__.replace("Map int8/uint8 values",
                                                    "Map quantized values") + \
    """

Also int16/uint16, int4/uint4, int2/uint2 (``ml_dtypes``), where ``q - zero_point`` is exact
in int32 before the float32 product, and float8/float4 arrays: ``(float32(q) - zp) * s``
(ONNX DequantizeLinear)."""
fake_quantize.__doc__ = _C.fake_quantize.__doc__ + """

``dtype`` may also be int16, uint16, int4, uint4, int2, uint2 (``qmin``/``qmax`` then narrow
that range) or a float8/float4 type: ``y = dequantize(quantize(x))`` with the same formulas
as ``quantize``, the mask True where ``x / s`` lies within ``[-max, max]``."""


def pack_bits(q):
    """Pack sub-byte values into bytes with ONNX's layout: a uint8 array.

    ``q``: an ``ml_dtypes`` int4/uint4 array (two values per byte, the first value in the low
    nibble) or int2/uint2 array (four per byte, the first value in the lowest two bits),
    taken in C order; a short last byte is padded with zero bits. Length
    ``ceil(q.size / 2)`` (4-bit) or ``ceil(q.size / 4)`` (2-bit).
    """
    return _lowbit.pack_bits(q)


def unpack_bits(packed, dtype, shape):
    """Unpack ``pack_bits``' uint8 buffer into an array of ``dtype`` (``"int4"``, ``"uint4"``,
    ``"int2"``, ``"uint2"`` or the ``ml_dtypes`` dtype) and ``shape``; signed types are
    sign-extended. ``packed`` must hold exactly ``ceil(prod(shape) * bits / 8)`` bytes, else
    ValueError naming ``packed``."""
    return _lowbit.unpack_bits(packed, dtype, shape)


class QParams(NamedTuple):
    """Quantization parameters: ``real = scale * (q - zero_point)``.

    ``scale`` is a float32 ndarray (0-d per-tensor), ``zero_point`` an ndarray of ``dtype``
    of the same shape; ``axis``/``block_size`` say the granularity (None for per-tensor).
    Pass them on as ``quantize(x, p.scale, p.zero_point, p.dtype, axis=p.axis,
    block_size=p.block_size)``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    axis: object
    block_size: object


def _dtype_name(dtype, arg="dtype"):
    if dtype is None:  # np.dtype(None) would be float64
        raise TypeError(f"{arg}: expected one of {_NAMES} (a string or NumPy dtype), got None")
    if isinstance(dtype, str):
        if dtype in _DTYPES:
            return dtype
        raise ValueError(f"{arg}: expected one of {_NAMES}, got {dtype!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{arg}: expected one of {_NAMES} (a string or NumPy dtype), "
                        f"got {dtype!r}") from None
    name = _lowbit.type_name(dt) or dt.name
    if name not in _DTYPES:
        raise ValueError(f"{arg}: expected one of {_NAMES}, got {dt.name}")
    return name


def qrange(dtype, *, narrow_range=False, reduce_range=False):
    """The quantized range ``(qmin, qmax)`` of ``dtype`` (``"int8"``, ``"uint8"``, int16,
    uint16, int4, uint4, int2, uint2; for float8/float4 types ``(-max, max)`` as floats).

    ``reduce_range`` uses 7 bits, as PyTorch's ``reduce_range`` (int8: -64..63, uint8:
    0..127). ``narrow_range`` drops the lowest value so the range is symmetric around its
    midpoint (int8: -127..127, uint8: 1..255; TFLite/TensorFlow's convention); with both:
    int8 -63..63, uint8 1..127.
    """
    _check_flag(narrow_range, "narrow_range")
    _check_flag(reduce_range, "reduce_range")
    name = _dtype_name(dtype)
    _, qmin, qmax = _DTYPES[name]
    if name in _lowbit.TYPES and _lowbit.TYPES[name][3]:
        if narrow_range or reduce_range:
            raise ValueError(f"narrow_range/reduce_range: expected False for {name}, got "
                             f"{narrow_range}/{reduce_range}")
        return qmin, qmax
    if reduce_range and name not in ("int8", "uint8"):
        raise ValueError(f"reduce_range: only defined for int8/uint8 (7 bits), got {name}")
    if reduce_range:
        qmin, qmax = (-64, 63) if qmin < 0 else (0, 127)
    if narrow_range:
        qmin += 1
    return qmin, qmax


def _check_flag(value, name):
    """A yes/no option: bool (or a NumPy bool, or the ints 0 and 1), not a truthy string."""
    if not isinstance(value, (bool, np.bool_)) and not (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")


def _check_profile(profile):
    if profile not in _PROFILES:
        raise ValueError(f"profile: expected 'onnx', 'torch' or 'tflite', got {profile!r}")


def _minmax_arrays(x, min_val, max_val, axis, block_size):
    if x is not None:
        if min_val is not None or max_val is not None:
            raise ValueError("min_val/max_val: expected None when x is given, got values")
        return _C._minmax(x, axis, block_size)
    if min_val is None or max_val is None:
        raise TypeError("x: expected an array, or both min_val and max_val, got neither")
    mn = np.asarray(min_val)
    mx = np.asarray(max_val)
    for name, a in (("min_val", mn), ("max_val", mx)):
        if a.dtype.kind not in "fiu" and not _dtypes.is_ml_float(a.dtype):
            raise TypeError(f"{name}: expected real numbers, got {a.dtype}")
    mn = mn.astype(np.float32)
    mx = mx.astype(np.float32)
    if mn.shape != mx.shape:
        raise ValueError(f"max_val: expected the shape of min_val {mn.shape}, got {mx.shape}")
    if axis is None and mn.ndim != 0:
        raise ValueError(f"min_val: expected a scalar for per-tensor parameters (axis=None), "
                         f"got shape {mn.shape}")
    for name, a in (("min_val", mn), ("max_val", mx)):
        if np.isnan(a).any():
            raise ValueError(f"{name}: expected no NaN values, got NaN at index "
                             f"{np.argwhere(np.isnan(a))[0].tolist()}")
    if (mn > mx).any():
        i = np.argwhere(mn > mx)[0].tolist()
        raise ValueError(f"max_val: expected max_val >= min_val, got max_val < min_val at "
                         f"index {i}")
    return mn, mx


def choose_qparams(x=None, *, min_val=None, max_val=None, dtype="int8", symmetric=False,
                   axis=None, block_size=None, narrow_range=False, reduce_range=False,
                   profile="onnx"):
    """Choose scale and zero point from the range of ``x`` (or from ``min_val``/``max_val``).

    Min and max come from one C pass over ``x`` (per tensor, per ``axis`` or per block of
    ``block_size`` along ``axis``); NaN raises ValueError. ``(qmin, qmax) =
    qrange(dtype, narrow_range=..., reduce_range=...)``. The real range is widened to
    include 0: ``rmin = min(min, 0)``, ``rmax = max(max, 0)``. Each profile reproduces its
    ecosystem bit for bit:

    ``"onnx"`` (ONNX Runtime ``quantization.quant_utils.compute_scale_zp``):
        symmetric: ``rmax = max(|rmin|, |rmax|)``, ``rmin = -rmax``;
        ``scale64 = (float64(rmax) - float64(rmin)) / (qmax - qmin)`` in float64;
        if ``scale64 < float32 tiny``: scale 1.0, zero point 0;
        else symmetric ``zp = round_half_even((qmin + qmax) / 2)``, asymmetric
        ``zp = round_half_even(qmin - rmin / scale64)`` (float64), ``scale = float32(scale64)``.
        ONNX Runtime's quantizer passes the narrow range for symmetric int8: use
        ``narrow_range=True`` to get its ``-127..127``.
    ``"torch"`` (``torch.ao.quantization`` observers' ``_calculate_qparams``, float32):
        symmetric: ``scale = max(max(-rmin, rmax) / ((qmax - qmin) / 2), eps)`` with
        ``eps = float32 machine epsilon``; zp 0 for int8, for uint8 128 (or
        ``(qmin + qmax) // 2`` when ``narrow_range``/``reduce_range`` change the range, as
        torch's customized range; torch itself refuses symmetric uint8 with reduce_range;
        the other signed types get 0, unsigned ``(qmin + qmax + 1) // 2``);
        asymmetric: ``scale = max((rmax - rmin) / (qmax - qmin), eps)``,
        ``zp = clamp(qmin - round_half_even(rmin / scale), qmin, qmax)``;
        no data at all (empty ``x``): scale 1.0, zp 0.
    ``"tflite"`` (TFLite converter, float32):
        symmetric forces the narrow range: ``scale = max(|rmin|, |rmax|) / ((qmax - qmin) / 2)``
        (``amax / 127`` for int8), zp ``(qmin + qmax) / 2`` (0 for int8, 128 for uint8);
        asymmetric (``GetAsymmetricQuantizationParams``): ``scale = (rmax - rmin) /
        (qmax - qmin)``, ``zp_f = qmin - rmin / scale``, ``zp = qmin`` if ``zp_f < qmin``,
        ``qmax`` if ``zp_f > qmax``, else ``round_half_away(zp_f)``.
        A zero range gives scale 1.0 (zp from the same formula: the midpoint or ``qmin``).

    float8/float4 ``dtype``: symmetric whatever the profile, ``scale = float32(amax / max)``
    (float64 division; ``max`` the type's largest finite value, 448 for float8_e4m3fn) so the
    largest magnitude maps to ``max``, zero point 0 (ONNX Runtime's float8 quantizer).
    int16/uint16/int4/uint4/int2/uint2 use the integer formulas above with their range.

    A zero range never gives scale 0 or inf; a range that overflows float32 (inf in ``x``)
    raises ValueError. Returns ``QParams(scale, zero_point, dtype, axis, block_size)``.
    """
    _check_flag(symmetric, "symmetric")
    _check_profile(profile)
    name = _dtype_name(dtype)
    npdt = _DTYPES[name][0]
    if name in _lowbit.TYPES and _lowbit.TYPES[name][3]:
        return _float_qparams(x, min_val, max_val, name, npdt, axis, block_size, narrow_range,
                              reduce_range)
    if profile == "tflite" and symmetric:
        narrow_range = True
    qmin, qmax = qrange(name, narrow_range=narrow_range, reduce_range=reduce_range)
    mn, mx = _minmax_arrays(x, min_val, max_val, axis, block_size)
    empty = np.isposinf(mn) & np.isneginf(mx)
    rmin = np.minimum(mn, np.float32(0)).astype(np.float32)
    rmax = np.maximum(mx, np.float32(0)).astype(np.float32)
    rmin = np.where(empty, np.float32(0), rmin).astype(np.float32)
    rmax = np.where(empty, np.float32(0), rmax).astype(np.float32)
    if not (np.isfinite(rmin).all() and np.isfinite(rmax).all()):
        if x is None:  # the range came from min_val/max_val: name the one that is infinite
            name = "min_val" if not np.isfinite(rmin).all() else "max_val"
            raise ValueError(f"{name}: expected finite values to choose quantization "
                             "parameters from, got +-inf")
        raise ValueError("x: expected finite values to choose quantization parameters from, "
                         "got +-inf")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if profile == "onnx":
            scale, zp = _onnx_qparams(rmin, rmax, qmin, qmax, symmetric)
        elif profile == "torch":
            scale, zp = _torch_qparams(rmin, rmax, qmin, qmax, symmetric, name,
                                       narrow_range or reduce_range)
            scale = np.where(empty, np.float32(1.0), scale).astype(np.float32)
            zp = np.where(empty, 0, zp)
        else:
            scale, zp = _tflite_qparams(rmin, rmax, qmin, qmax, symmetric)
    if not np.isfinite(scale).all():
        raise ValueError(f"{'x' if x is not None else 'min_val/max_val'}: expected a range whose "
                         "scale is finite in float32, got an overflowing range")
    if axis is None:
        scale = scale.reshape(())
        zp = np.asarray(zp).reshape(())
    return QParams(np.asarray(scale, dtype=np.float32), np.asarray(zp).astype(npdt), npdt,
                   axis, block_size)


def _float_qparams(x, min_val, max_val, name, npdt, axis, block_size, narrow_range,
                   reduce_range):
    """float8/float4: symmetric, ``scale = float32(amax / max)`` (ONNX Runtime's float8
    quantizer: the largest magnitude maps to the type's largest finite value), zp 0."""
    _, fmax = qrange(name, narrow_range=narrow_range, reduce_range=reduce_range)
    mn, mx = _minmax_arrays(x, min_val, max_val, axis, block_size)
    empty = np.isposinf(mn) & np.isneginf(mx)
    amax = np.where(empty, 0, np.maximum(np.abs(mn), np.abs(mx))).astype(np.float64)
    if not np.isfinite(amax).all():
        raise ValueError(f"{'x' if x is not None else 'min_val/max_val'}: expected finite "
                         "values to choose quantization parameters from, got +-inf")
    scale64 = amax / fmax
    scale = np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)
    if axis is None:
        scale = scale.reshape(())
    return QParams(scale, np.zeros(scale.shape, npdt), npdt, axis, block_size)


def _onnx_qparams(rmin, rmax, qmin, qmax, symmetric):
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / np.float64(qmax - qmin)
    tiny = scale64 < np.finfo(np.float32).tiny
    if symmetric:
        zp = np.full(scale64.shape, np.round((qmin + qmax) / 2.0), dtype=np.float64)
    else:
        zp = np.round(qmin - rmin / np.where(tiny, 1.0, scale64))
    zp = np.where(tiny, 0, np.clip(zp, qmin, qmax)).astype(np.int64)
    scale = np.where(tiny, np.float32(1.0), scale64.astype(np.float32)).astype(np.float32)
    return scale, zp


def _torch_qparams(rmin, rmax, qmin, qmax, symmetric, name, customized):
    eps = np.finfo(np.float32).eps
    if symmetric:
        amax = np.maximum(-rmin, rmax)
        scale = np.maximum(amax / np.float32((qmax - qmin) / 2), eps).astype(np.float32)
        if name.startswith("uint"):
            mid = (qmin + qmax) // 2 if customized else (qmin + qmax + 1) // 2  # uint8: 128
            zp = np.full(scale.shape, mid, dtype=np.int64)
        else:
            zp = np.zeros(scale.shape, dtype=np.int64)
    else:
        scale = np.maximum((rmax - rmin) / np.float32(qmax - qmin), eps).astype(np.float32)
        zp = qmin - np.round(rmin / scale).astype(np.int64)
        zp = np.clip(zp, qmin, qmax)
    return scale, zp


def _tflite_qparams(rmin, rmax, qmin, qmax, symmetric):
    if symmetric:
        amax = np.maximum(np.abs(rmin), np.abs(rmax))
        scale = (amax / np.float32((qmax - qmin) / 2)).astype(np.float32)
        zp = np.full(scale.shape, (qmin + qmax) // 2, dtype=np.int64)
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        return scale, zp
    scale = ((rmax - rmin) / np.float32(qmax - qmin)).astype(np.float32)
    zero = scale == 0
    zp_f = np.where(zero, np.float32(qmin),
                    np.float32(qmin) - rmin / np.where(zero, np.float32(1), scale))
    zp_f = zp_f.astype(np.float32)
    # std::round: half away from zero (t = trunc, |zp_f - t| >= 0.5 steps away; exact)
    t = np.trunc(zp_f)
    away = np.where(np.abs(zp_f - t) >= 0.5, t + np.sign(zp_f), t)
    zp = np.where(zp_f < qmin, qmin, np.where(zp_f > qmax, qmax, away)).astype(np.int64)
    scale = np.where(zero, np.float32(1.0), scale).astype(np.float32)
    return scale, zp


def quantize_dynamic(x, dtype="uint8", *, granularity="per_tensor"):
    """ONNX DynamicQuantizeLinear: quantize ``x`` with parameters chosen from its own range.

    As the ONNX reference (float32 throughout): ``rmax = max(0, max(x))``,
    ``rmin = min(0, min(x))``, ``scale = (1.0 if rmax == rmin else rmax - rmin) /
    (qmax - qmin)``, ``zp = rint(clamp(qmin - rmin / scale, qmin, qmax))`` (ties to even),
    ``q = clamp(rint(x / scale) + zp, qmin, qmax)``. ONNX defines uint8; ``dtype="int8"``
    applies the same formulas with -128..127. Returns ``(q, scale, zero_point)`` with
    ``scale`` a 0-d float32 array and ``zero_point`` a 0-d array of ``dtype``.

    ``granularity="per_row"`` (per token) applies the same formulas to every row of ``x``
    (the last axis) on its own: ``scale`` and ``zero_point`` then have shape ``x.shape[:-1]``.
    """
    name = _dtype_name(dtype)
    if name not in ("int8", "uint8"):
        raise ValueError(f"dtype: expected 'uint8' or 'int8' (DynamicQuantizeLinear), got "
                         f"{dtype!r}")
    npdt, qmin, qmax = _DTYPES[name]
    if granularity == "per_row":
        return _quantize_dynamic_rows(x, npdt, qmin, qmax)
    if granularity != "per_tensor":
        raise ValueError(f"granularity: expected 'per_tensor' or 'per_row', got {granularity!r}")
    xf = np.asarray(x)
    mn, mx = _C._minmax(xf)
    maxx = np.float32(max(np.float32(0), mx))  # empty x: (+inf, -inf) -> (0, 0)
    minx = np.float32(min(np.float32(0), mn))
    with np.errstate(over="ignore", invalid="ignore"):
        rng = np.float32(1.0) if maxx == minx else np.float32(maxx - minx)
        scale = np.float32(rng / np.float32(qmax - qmin))
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError("x: expected finite values for dynamic quantization, got a range "
                             f"[{minx}, {maxx}]")
        zp_f = np.float32(np.float32(qmin) - minx / scale)
    zp = int(np.rint(np.float32(max(qmin, min(qmax, zp_f)))))
    q = _C.quantize(xf, scale, zp, npdt)
    return q, np.array(scale, dtype=np.float32), np.array(zp, dtype=npdt)


def _quantize_dynamic_rows(x, npdt, qmin, qmax):
    """quantize_dynamic per row: the per-tensor formulas, vectorized over rows (float32)."""
    xf = np.asarray(x)
    if xf.dtype.kind not in "fiu" and not _dtypes.is_ml_float(xf.dtype):
        raise TypeError(f"x: expected a real (float or integer) array, got {xf.dtype}")
    if xf.ndim == 0:
        raise ValueError("x: expected at least 1 dimension for granularity='per_row', got 0-d")
    x2 = xf.reshape(math.prod(xf.shape[:-1]), xf.shape[-1])
    # the output first: one that cannot be allocated fails before the reductions over x
    try:
        q = np.empty(x2.shape, npdt)
    except (MemoryError, ValueError):
        raise MemoryError(f"x: cannot allocate {math.prod(xf.shape)} bytes for the quantized "
                          f"output of shape {xf.shape}") from None
    if _dtypes.is_ml_float(x2.dtype):  # bfloat16, float8: exact in float32, as per tensor
        try:
            x2 = x2.astype(np.float32)
        except MemoryError:
            raise MemoryError(f"x: cannot allocate {4 * math.prod(xf.shape)} bytes for a "
                              f"float32 copy of shape {xf.shape}") from None
    # min/max in x's own precision, then float32: rounding is monotone, so this equals the
    # min/max of x converted to float32 (NaN propagates and is refused below)
    maxx = np.maximum(np.float32(0), np.max(x2, axis=1, initial=0).astype(np.float32))
    minx = np.minimum(np.float32(0), np.min(x2, axis=1, initial=0).astype(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        rng = np.where(maxx == minx, np.float32(1), maxx - minx).astype(np.float32)
        scale = (rng / np.float32(qmax - qmin)).astype(np.float32)
        bad = ~(np.isfinite(scale) & (scale > 0))
        if bad.any():
            nan = np.isnan(x2) if x2.dtype.kind == "f" else np.zeros(0, bool)
            if nan.any():
                raise _dtypes.nan_error("x", nan.reshape(xf.shape))
            i = int(np.argmax(bad))
            raise ValueError("x: expected finite values for dynamic quantization, got a range "
                             f"[{minx[i]}, {maxx[i]}] in row {i}")
        zp_f = (np.float32(qmin) - minx / scale).astype(np.float32)
    zp = np.rint(np.clip(zp_f, qmin, qmax)).astype(npdt)
    if x2.shape[0]:
        _C.quantize(x2, scale, zp, npdt, axis=0, out=q)
    lead = xf.shape[:-1]
    return q.reshape(xf.shape), scale.reshape(lead), zp.reshape(lead)
