"""Conversions: rounding modes, clamp, saturating integer casts, float16 and bfloat16.

The functions are the C bindings themselves (no Python wrapper, so a call costs little);
their docstrings state the exact numerics. Kernels: scalar, AVX2 (+F16C) and AVX-512,
bit-identical, chosen at run time (``qc.cpu_info()["kernels"]``).
"""
from . import _C

round = _C.round  # noqa: A001 - the API name; shadows the builtin inside this module only
clamp = _C.clamp
saturate_cast = _C.saturate_cast
to_float16 = _C.to_float16
to_bfloat16 = _C.to_bfloat16
from_bfloat16 = _C.from_bfloat16

__all__ = ["round", "clamp", "saturate_cast", "to_float16", "to_bfloat16", "from_bfloat16"]
