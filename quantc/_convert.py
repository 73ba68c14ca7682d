"""Conversions: rounding modes, clamp, saturating integer casts, float16 and bfloat16.

The functions are the C bindings themselves (no Python wrapper, so a call costs little;
saturate_cast checks for the sub-byte types first); their docstrings state the exact
numerics. Kernels: scalar, AVX2 (+F16C) and AVX-512, bit-identical, chosen at run time
(``qc.cpu_info()["kernels"]``).
"""
import numpy as np

from . import _C, _lowbit
from ._elementwise import _to_out

round = _C.round  # noqa: A001 - the API name; shadows the builtin inside this module only
clamp = _C.clamp


def saturate_cast(x, dtype, *, out=None):
    sub = _lowbit.type_name(dtype)
    if sub not in _lowbit._BITS:
        return _C.saturate_cast(x, dtype, out=out)
    dt, lo, hi, _ = _lowbit.TYPES[sub]
    a = np.asarray(x)
    if _lowbit.type_name(a.dtype) in _lowbit._BITS:  # sub-byte in: exact as int8/uint8
        a = a.astype(np.int8 if a.dtype.name.startswith("int") else np.uint8)
    # saturating to the 8-bit type of the same signedness, then to the narrower range, is
    # saturating to the narrower range (both clamps are monotone and nest)
    q = _C.saturate_cast(a, np.int8 if lo < 0 else np.uint8)
    np.clip(q, lo, hi, out=q)
    return _to_out(q.astype(dt), out)


saturate_cast.__doc__ = _C.saturate_cast.__doc__.split("\n--\n\n", 1)[-1] + """

``dtype`` may also be int4, uint4, int2 or uint2 (``ml_dtypes``; a string is accepted): the
values saturate to that type's range (int4: -8..7), one value per byte."""
to_float16 = _C.to_float16
to_bfloat16 = _C.to_bfloat16
from_bfloat16 = _C.from_bfloat16

__all__ = ["round", "clamp", "saturate_cast", "to_float16", "to_bfloat16", "from_bfloat16"]
