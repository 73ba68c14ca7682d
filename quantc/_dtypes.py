"""The low-precision NumPy dtypes quantc accepts: ``ml_dtypes``' bfloat16, float8, float4,
int4/uint4 and int2/uint2, looked up by name, and the float test used across the package."""
import ml_dtypes
import numpy as np

bfloat16 = np.dtype(ml_dtypes.bfloat16)

# ml_dtypes' floating types quantc reads (float32 conversion is exact for each).
ML_FLOATS = {name: np.dtype(getattr(ml_dtypes, name)) for name in (
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float4_e2m1fn") if hasattr(ml_dtypes, name)}

# safetensors dtype tags of ml_dtypes' types (read from the file's bytes directly).
ST_ML_TAGS = {"BF16": ML_FLOATS["bfloat16"], "F8_E4M3": ML_FLOATS["float8_e4m3fn"],
              "F8_E5M2": ML_FLOATS["float8_e5m2"]}
ST_ML_TAGS.update({tag: ML_FLOATS[name] for tag, name in (
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz")) if name in ML_FLOATS})


def native(dt):
    """`dt` in this machine's byte order (``>i2`` -> ``int16`` on little-endian): dtype
    comparisons (``==``) tell byte orders apart, the values they mean do not."""
    return dt if dt.isnative else dt.newbyteorder("=")


def is_ml_float(dt):
    """True for one of ml_dtypes' floating dtypes (bfloat16, float8_*, float4_e2m1fn)."""
    return any(dt == d for d in ML_FLOATS.values())


def is_float(dt):
    """True for NumPy floating dtypes (float16/32/64) and ml_dtypes' floating dtypes."""
    dt = np.dtype(dt)
    return dt.kind == "f" or is_ml_float(dt)


def is_ml(dt):
    """True for any ml_dtypes type (floating or sub-byte integer)."""
    return np.dtype(dt).type.__module__.startswith("ml_dtypes")


def by_name(name):
    """The ml_dtypes dtype called `name`, or None."""
    t = getattr(ml_dtypes, name, None) if isinstance(name, str) else None
    try:
        return np.dtype(t) if t is not None and is_ml(t) else None
    except TypeError:
        return None


def nan_error(name, nan):
    """The ValueError for NaN in argument ``name``, from its boolean mask ``nan`` (some True):
    the count and the first NaN's index in C order (one format for every function)."""
    count = int(nan.sum())
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(nan)), nan.shape))
    at = str(first[0]) if len(first) == 1 else str(first)
    return ValueError(f"{name}: expected no NaN values, got {count} NaN value"
                      f"{'' if count == 1 else 's'}, the first at index {at}")
