"""The quantized types beyond int8/uint8 (ONNX QuantizeLinear/DequantizeLinear, opset 21+):
int16/uint16, int4/uint4, int2/uint2, float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz) and
float4e2m1, as ``ml_dtypes``' NumPy dtypes, and the packed form of the sub-byte types.

The arithmetic is NumPy in float32, written to be ONNX's reference formulas exactly:

- integers: ``q = clamp(rint(x / s) + zp, qmin, qmax)`` (float32 true division, ties to even;
  ``+ zp`` and the clamp are exact in int32), dequantize ``(q - zp) * s`` with ``q - zp``
  exact and one float32 rounding in the product;
- float8 with ``saturate=True``: ``q = cast(clamp(x / s, -max, max))``, the cast rounding to
  nearest even (``ml_dtypes``), so +-inf and overflow give +-max; the zero point must be 0;
- float4e2m1: ``q = cast(clamp(x / s + zp, -6, 6))`` (no inf/NaN encoding).

Packed layout (ONNX): int4/uint4 two values per byte, the first in the low nibble; int2/uint2
four per byte, the first in the lowest two bits; a short last byte is padded with zeros.
"""
import math
import sys

import ml_dtypes
import numpy as np

from . import _C, _dtypes

# name -> (dtype, qmin, qmax, is_float)
TYPES = {}
for _n in ("int16", "uint16"):
    _i = np.iinfo(_n)
    TYPES[_n] = (np.dtype(_n), int(_i.min), int(_i.max), False)
for _n in ("int4", "uint4", "int2", "uint2"):
    _i = ml_dtypes.iinfo(getattr(ml_dtypes, _n))
    TYPES[_n] = (np.dtype(getattr(ml_dtypes, _n)), int(_i.min), int(_i.max), False)
for _n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
           "float4_e2m1fn"):
    _f = ml_dtypes.finfo(getattr(ml_dtypes, _n))
    TYPES[_n] = (np.dtype(getattr(ml_dtypes, _n)), float(-_f.max), float(_f.max), True)
del _n, _i, _f

_BITS = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}


def type_name(dtype):
    """The name in TYPES of `dtype` (a string or dtype), else None."""
    if isinstance(dtype, str):
        return dtype if dtype in TYPES else None
    try:
        dt = _dtypes.native(np.dtype(dtype))
    except TypeError:
        return None
    for name, (d, *_r) in TYPES.items():
        if dt == d:
            return name
    return None


def _int_or_none(value, name):
    """``value`` as an int, or None; a float (2.7), bool or string is a TypeError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int or None, got {value!r}")
    return int(value)


def _float32(x, arg):
    a = np.asarray(x)
    if (a.dtype.kind not in "iuf" or a.dtype.type is np.longdouble) and \
            not _dtypes.is_ml_float(a.dtype) and type_name(a.dtype) not in _BITS:
        raise TypeError(f"{arg}: expected a real-valued array (float16/32/64, bfloat16 or "
                        f"integer), got {a.dtype}")
    return a.astype(np.float32)


def _check_nan(xf, arg="x"):
    nan = np.isnan(xf)
    if nan.any():
        raise ValueError(f"{arg}: expected no NaN values, got {int(nan.sum())} NaN (first at "
                         f"index {int(np.argmax(nan.ravel()))})")


def _axis(axis, ndim):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int or None, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an int in [{-ndim}, {ndim}), got {axis}")
    return int(axis) % ndim


def _param_shape(shape, axis, block_size):
    """The shape scale/zero_point must have, and a function broadcasting one to `shape`."""
    if axis is None:
        if block_size is not None:
            raise ValueError(f"block_size: expected None without axis, got {block_size!r}")
        return (), lambda p: p
    a = _axis(axis, len(shape))
    if block_size is None:
        bshape = [1] * len(shape)
        bshape[a] = shape[a]
        return (shape[a],), lambda p: p.reshape(bshape)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or \
            block_size < 1:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    b = int(block_size)
    pshape = shape[:a] + (-(-shape[a] // b),) + shape[a + 1:]
    return pshape, lambda p: np.repeat(p, b, axis=a)[(slice(None),) * a + (slice(0, shape[a]),)]


def _params(shape, scale, zero_point, name, axis, block_size, qmin=None, qmax=None):
    """float32 scale and float32 zero point (exact values) broadcast to `shape`, checked."""
    dt, lo, hi, is_float = TYPES[name]
    pshape, bcast = _param_shape(tuple(shape), axis, block_size)
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu" and not _dtypes.is_ml_float(s.dtype):
        raise TypeError(f"scale: expected real numbers, got {s.dtype}")
    s = s.astype(np.float32)
    if s.shape != pshape and not (axis is None and s.size == 1 and s.ndim <= 1):
        raise ValueError(f"scale: expected shape {pshape}, got {s.shape}")
    s = s.reshape(pshape)
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(np.argmax(bad.ravel()))
        raise ValueError(f"scale: expected positive finite values, got {s.ravel()[i]} at index "
                         f"{i}")
    if zero_point is None:
        z = np.zeros(pshape, np.float32)
    else:
        zr = np.asarray(zero_point)
        if zr.shape != pshape and not (axis is None and zr.size == 1 and zr.ndim <= 1):
            raise ValueError(f"zero_point: expected shape {pshape}, got {zr.shape}")
        zr = zr.reshape(pshape)
        if zr.dtype == dt:
            z = zr.astype(np.float32)
        elif zr.dtype.kind in "iu" and not is_float:
            z = zr.astype(np.float64)
            lo2 = lo if qmin is None else qmin
            hi2 = hi if qmax is None else qmax
            out = (z < lo2) | (z > hi2)
            if out.any():
                i = int(np.argmax(out.ravel()))
                raise ValueError(f"zero_point: expected integers in [{lo2}, {hi2}] ({name}), "
                                 f"got {int(zr.ravel()[i])} at index {i}")
            z = z.astype(np.float32)
        elif zr.dtype.kind in "fiu" and is_float:
            z = zr.astype(np.float32)
            if name == "float4_e2m1fn":  # (float8 zero points must be 0, below)
                with np.errstate(invalid="ignore", over="ignore"):
                    bad = ~np.isfinite(z) | (z.astype(dt).astype(np.float32) != z)
                if bad.any():
                    i = int(np.argmax(bad.ravel()))
                    raise ValueError(f"zero_point: expected {name} values (0, +-0.5, +-1, "
                                     f"+-1.5, +-2, +-3, +-4, +-6), got {zr.ravel()[i]} at "
                                     f"index {i}")
        else:
            raise TypeError(f"zero_point: expected {name} or integer values, got {zr.dtype}")
        if is_float and name != "float4_e2m1fn" and np.any(z != 0):
            raise ValueError(f"zero_point: expected 0 for {name} (ONNX float8 zero points are "
                             f"0), got {z.ravel()[np.argmax(z.ravel() != 0)]}")
    return bcast(s), bcast(z), s, z


# the types with a one-pass C kernel (csrc/quant: float32 or bfloat16 in, ml_dtypes bytes or
# packed 4-bit out)
_C_KINDS = ("int4", "uint4", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
            "float8_e5m2fnuz")


def _check_float8_zero_point(zero_point, shape, name, axis, block_size):
    """ONNX float8 zero points are 0: check shape and values (the kernel never reads them)."""
    dt = TYPES[name][0]
    pshape, _ = _param_shape(tuple(shape), axis, block_size)
    zr = np.asarray(zero_point)
    if zr.shape != pshape and not (axis is None and zr.size == 1 and zr.ndim <= 1):
        raise ValueError(f"zero_point: expected shape {pshape}, got {zr.shape}")
    if zr.dtype != dt and zr.dtype.kind not in "fiu":
        raise TypeError(f"zero_point: expected {name} or integer values, got {zr.dtype}")
    z = zr.astype(np.float32).ravel()
    if np.any(z != 0):
        raise ValueError(f"zero_point: expected 0 for {name} (ONNX float8 zero points are "
                         f"0), got {z[np.argmax(z != 0)]}")


def _c_out(out, dt):
    """out= for the C kernel: an ndarray of dtype `dt` viewed as uint8 (the kernel checks the
    shape, contiguity and writability); None passes through."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray) or out.dtype != dt:
        raise ValueError(f"out: expected a writable C-contiguous array of dtype {dt}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)}")
    return out.view(np.uint8)


def quantize(x, scale, zero_point, name, axis=None, block_size=None, profile="onnx",
             packed=False, out=None):
    """int4/uint4 and the float8 types run in one C pass (``_C._quantize_lowbit``: float32
    or bfloat16 read directly, the ml_dtypes bytes or, ``packed=True``, ONNX's packed bytes
    written directly); int2/uint2 through the C int8/uint8 kernel and a clamp to the narrower
    range (exact: clamping to [-128, 127] and then to [-2, 1] is clamping to [-2, 1]); the
    other types through ``quantize_ref``. ``packed=True`` (sub-byte types only) returns
    ``pack_bits`` of the result, a 1-D uint8 array. ``out``: the C kernels write into it and
    return it; the other paths return a new array (the caller copies it into ``out``)."""
    if profile == "torch":
        raise ValueError(f"profile: 'torch' has no {name} quantization; use 'onnx' or "
                         f"'tflite'")
    if packed and name not in _BITS:
        raise ValueError(f"packed: expected False for {name} (only int4, uint4, int2 and uint2 "
                         f"pack), got {packed!r}")
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if type_name(a.dtype) in _BITS:
        q = quantize_ref(x, scale, zero_point, name, axis, block_size, profile)
        return pack_bits(q) if packed else q
    dt, lo, hi, is_float = TYPES[name]
    if name in _C_KINDS and is_float:
        if zero_point is not None:
            _check_float8_zero_point(zero_point, a.shape, name, axis, block_size)
        q = _C._quantize_lowbit(a, scale, None, name, axis=axis, block_size=block_size,
                                profile=profile, out=_c_out(out, dt))
        return out if out is not None else q.view(dt)
    if name not in _BITS:
        return quantize_ref(x, scale, zero_point, name, axis, block_size, profile)
    wide = np.dtype(np.int8 if name.startswith("int") else np.uint8)
    zp = None
    if zero_point is not None:
        zr = np.asarray(zero_point)
        if zr.dtype == dt:
            zp = zr.astype(wide)
        elif zr.dtype.kind in "iu":
            bad = (zr < lo) | (zr > hi)
            if bad.any():
                i = int(np.argmax(bad.ravel()))
                raise ValueError(f"zero_point: expected integers in [{lo}, {hi}] ({name}), "
                                 f"got {int(zr.ravel()[i])} at index {i}")
            zp = zr.astype(wide)
        else:
            raise TypeError(f"zero_point: expected {name} or integer values, got {zr.dtype}")
    if name in _C_KINDS:
        q = _C._quantize_lowbit(a, scale, zp, name, axis=axis, block_size=block_size,
                                profile=profile, packed=bool(packed),
                                out=_c_out(out, np.dtype(np.uint8) if packed else dt))
        return out if out is not None else q if packed else q.view(dt)
    q = _C.quantize(a, scale, zp, wide, axis=axis, block_size=block_size, profile=profile)
    np.clip(q, lo, hi, out=q)
    # ml_dtypes keeps a sub-byte value in the low bits of its byte, the others zero: the
    # same bytes as astype(dt), without the slower element-wise cast
    np.bitwise_and(q, wide.type((1 << _BITS[name]) - 1), out=q)
    q = q.view(dt)
    return pack_bits(q) if packed else q


def quantize_ref(x, scale, zero_point, name, axis=None, block_size=None, profile="onnx"):
    """The NumPy formulas of this module's docstring, for every type."""
    dt, lo, hi, is_float = TYPES[name]
    if profile == "torch":
        raise ValueError(f"profile: 'torch' has no {name} quantization; use 'onnx' or "
                         f"'tflite'")
    xf = _float32(x, "x")
    _check_nan(xf)
    s, z, _, _ = _params(xf.shape, scale, zero_point, name, axis, block_size)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        v = xf / s
        if is_float:
            if name == "float4_e2m1fn" and zero_point is not None:  # as ONNX: -0.0 + 0 = 0
                v = v + z
            return np.asarray(np.clip(v, np.float32(lo), np.float32(hi)).astype(dt))
        if profile == "tflite":
            r = np.trunc(v)
            r = np.where(np.abs(v - r) >= 0.5, r + np.sign(v), r)
        else:
            r = np.rint(v)
        q = np.clip(r, lo - 2.0 ** 17, hi + 2.0 ** 17) + z  # inf -> far outside, then clamp
    return np.asarray(np.clip(q, lo, hi).astype(np.int32).astype(dt))


def dequantize(q, scale, zero_point, name, axis=None, block_size=None):
    dt = TYPES[name][0]
    qa = np.asarray(q)
    qa = qa.astype(_dtypes.native(qa.dtype), copy=False)  # '>i2' reads as int16
    if qa.dtype != dt:
        raise TypeError(f"q: expected an array of {name}, got {qa.dtype}")
    s, z, _, _ = _params(qa.shape, scale, zero_point, name, axis, block_size)
    with np.errstate(over="ignore"):
        if TYPES[name][3]:
            return np.asarray(((qa.astype(np.float32) - z) * s).astype(np.float32))
        d = qa.astype(np.int32) - z.astype(np.int32)  # exact (|d| < 2**17)
        return np.asarray((d.astype(np.float32) * s).astype(np.float32))


def fake_quantize(x, scale, zero_point, name, axis=None, block_size=None, qmin=None,
                  qmax=None, profile="onnx", return_mask=False):
    dt, lo, hi, is_float = TYPES[name]
    if is_float and (qmin is not None or qmax is not None):
        raise ValueError(f"qmin/qmax: expected None for {name}, got {qmin!r}/{qmax!r}")
    qmin, qmax = _int_or_none(qmin, "qmin"), _int_or_none(qmax, "qmax")
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    if not lo <= qmin <= qmax <= hi:
        raise ValueError(f"qmin/qmax: expected {lo} <= qmin <= qmax <= {hi} ({name}), got "
                         f"{qmin}/{qmax}")
    if profile == "torch":
        raise ValueError(f"profile: 'torch' has no {name} quantization; use 'onnx' or "
                         f"'tflite'")
    xf = _float32(x, "x")
    _check_nan(xf)
    s, z, _, _ = _params(xf.shape, scale, zero_point, name, axis, block_size, qmin, qmax)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        v = xf / s
        if is_float:
            if name == "float4_e2m1fn" and zero_point is not None:
                v = v + z
            q = np.clip(v, np.float32(lo), np.float32(hi)).astype(dt).astype(np.float32)
            y = ((q - z) * s).astype(np.float32)
            mask = (v >= lo) & (v <= hi)
        else:
            if profile == "tflite":
                r = np.trunc(v)
                r = np.where(np.abs(v - r) >= 0.5, r + np.sign(v), r)
            else:
                r = np.rint(v)
            r = np.clip(r, lo - 2.0 ** 17, hi + 2.0 ** 17) + z
            mask = (r >= qmin) & (r <= qmax)
            d = np.clip(r, qmin, qmax) - z
            y = (d.astype(np.float32) * s).astype(np.float32)
    y, mask = np.asarray(y), np.asarray(mask)
    return (y, mask) if return_mask else y


def _subbyte(q):
    a = np.asarray(q)
    name = type_name(a.dtype)
    if name not in _BITS:
        raise TypeError(f"q: expected an array of int4, uint4, int2 or uint2 (ml_dtypes), got "
                        f"{a.dtype}")
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8), _BITS[name]


def pack_bits(q):
    """Pack int4/uint4 (2 per byte) or int2/uint2 (4 per byte) values into uint8 (ONNX):
    the C kernel (csrc/convert/pack.c)."""
    v, bits = _subbyte(q)
    return _C._pack_bits(v, bits)


def pack_bits_ref(q):
    """pack_bits in NumPy (the reference the C kernel is tested against)."""
    v, bits = _subbyte(q)
    per = 8 // bits
    n = v.size
    pad = -n % per
    if pad:
        v = np.concatenate([v, np.zeros(pad, np.uint8)])
    if sys.byteorder == "little":
        # `per` bytes as one little-endian word: byte k holds value k in its low bits; move
        # each to bit k * bits with contiguous (vectorized) word operations
        w = v.view(np.uint16 if per == 2 else np.uint32)
        mask = (1 << bits) - 1
        out = w & w.dtype.type(mask)
        for k in range(1, per):
            out |= (w >> w.dtype.type(8 * k - bits * k)) & w.dtype.type(mask << (bits * k))
        return out.astype(np.uint8)
    out = v[0::per] & np.uint8((1 << bits) - 1)
    for k in range(1, per):
        # the shift drops each byte's bits above the value (the last one needs no mask)
        sh = v[k::per] << np.uint8(k * bits)
        if k < per - 1:
            sh &= np.uint8(((1 << bits) - 1) << (k * bits))
        out |= sh
    return out


def unpack_bits(packed, dtype, shape):
    """The inverse of pack_bits: `shape` values of `dtype` from the packed uint8 buffer."""
    name = type_name(dtype)
    if name not in _BITS:
        raise ValueError(f"dtype: expected 'int4', 'uint4', 'int2' or 'uint2', got {dtype!r}")
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, got {shape!r}") from None
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"shape: expected a tuple of ints, got {shape!r}")
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape: expected non-negative sizes, got {shape}")
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed: expected a uint8 array, got {p.dtype}")
    bits = _BITS[name]
    per = 8 // bits
    n = math.prod(shape)
    need = -(-n // per)
    if p.size != need:
        raise ValueError(f"packed: expected {need} bytes for {n} {name} values (shape "
                         f"{shape}, {per} per byte), got {p.size}")
    p = p.reshape(-1)
    mask = np.uint8((1 << bits) - 1)
    v = np.empty((need, per), np.uint8)
    for k in range(per):
        v[:, k] = (p >> np.uint8(k * bits)) & mask
    v = v.reshape(-1)[:n]
    if name.startswith("int"):  # sign-extend the low `bits` bits
        sign = np.uint8(1 << (bits - 1))
        v = ((v ^ sign).astype(np.int8) - np.int8(sign)).astype(np.int8)
        return v.astype(TYPES[name][0]).reshape(shape)
    return v.astype(TYPES[name][0]).reshape(shape)
