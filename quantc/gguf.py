"""llama.cpp interoperability: Q8_0 / Q4_0 weight blocks and ``.gguf`` files.

Both formats cut each row (the last axis) into blocks of 32 values with one float16 scale
``d`` per block; ``real ~= d * q``:

- **Q8_0** (34 bytes a block): ``d = max|x| / 127``, ``q = round_half_away(x / d)`` in
  ``[-127, 127]`` (int8); bytes: ``d`` (float16, little-endian), then the 32 ``q``.
- **Q4_0** (18 bytes a block): ``d = m / -8`` with ``m`` the value of largest magnitude (the
  first on ties), ``q = min(15, trunc(x / d + 8.5))`` in ``[0, 15]``, ``real ~= d * (q - 8)``;
  bytes: ``d``, then 16 bytes holding value ``i`` in the low nibble of byte ``i`` and value
  ``i + 16`` in its high nibble.

As ggml's reference quantizers (``quantize_row_q8_0_ref`` / ``quantize_row_q4_0_ref``), in
float32 with ``x * (1 / d)`` for ``x / d``: the bytes equal those of the ``gguf`` package's
``gguf.quants.quantize`` for the same float32 input (but for an all-zero Q4_0 block whose first
value is -0.0: ``d`` is -0.0 there, as ggml's C code writes, and +0.0 in the gguf package).
The scale used to quantize is the float32 ``d``; the stored one is its float16 rounding (ties
to even). An all-zero block gets ``d = 0``
and ``q = 0`` (Q8_0) or ``8`` (Q4_0).

Files: :func:`save_gguf` and :func:`load_gguf` write and read ``.gguf`` through the ``gguf``
package (``pip install 'quantc[gguf]'``), so llama.cpp's tools read what quantc writes.
"""
import math
import os

import numpy as np

from . import _C, _dtypes
from ._optional import require

__all__ = ["GGUFTensor", "quantize_gguf", "dequantize_gguf", "save_gguf", "load_gguf"]

_BLOCK = 32
_BYTES = {"q8_0": 34, "q4_0": 18}
# ggml.h's limits, which llama.cpp's reader enforces: a tensor name is at most 63 bytes (64
# with the terminating NUL), a tensor at most 4 dimensions
_MAX_NAME = 64
_MAX_DIMS = 4


def _kind(dtype):
    if not isinstance(dtype, str) or dtype not in _BYTES:
        raise ValueError(f"dtype: expected 'q8_0' or 'q4_0', got {dtype!r}")
    return dtype


def quantize_gguf(x, dtype="q8_0"):
    """float ``x`` (..., K), K a multiple of 32, finite -> uint8 blocks (..., K / 32 * B).

    ``B`` is 34 for ``"q8_0"`` and 18 for ``"q4_0"``; see the module doc for the formulas.
    """
    kind = _kind(dtype)
    xa = np.asarray(x)
    if xa.dtype.kind != "f":
        raise TypeError(f"x: expected a float array, got {xa.dtype}")
    if xa.ndim == 0:
        raise ValueError("x: expected at least 1 dimension, got a 0-d array")
    return _C._gguf_quantize(xa, kind)


def dequantize_gguf(blocks, dtype, shape=None):
    """uint8 blocks (..., nb * B) of ``dtype`` -> float32 ``d * q`` (..., nb * 32).

    ``shape``, if given, reshapes the result (it must hold the same number of values)."""
    kind = _kind(dtype)
    b = np.asarray(blocks)
    if b.dtype != np.uint8:
        raise TypeError(f"blocks: expected uint8, got {b.dtype}")
    nbytes = _BYTES[kind]
    if b.ndim == 0 or b.shape[-1] % nbytes:
        raise ValueError(f"blocks: expected a last dimension that is a multiple of {nbytes} "
                         f"({kind} block bytes), got shape {b.shape}")
    lead = b.shape[:-1]
    nb = b.shape[-1] // nbytes
    blk = np.ascontiguousarray(b).reshape(-1, nbytes)
    d = blk[:, :2].copy().view("<f2").astype(np.float32)
    if kind == "q8_0":
        q = blk[:, 2:].view(np.int8).astype(np.float32)
    else:
        qs = blk[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8
    with np.errstate(invalid="ignore"):  # an infinite d times q = 0 is NaN, as in gguf
        out = (d * q).reshape(lead + (nb * _BLOCK,))
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != out.size:
            raise ValueError(f"shape: expected {out.size} values, got shape {shape}")
        out = out.reshape(shape)
    return out


class GGUFTensor:
    """A tensor in llama.cpp blocks: ``data`` (uint8, ``(rows, K / 32 * B)``), ``dtype``
    (``"q8_0"`` | ``"q4_0"``), ``shape`` (the original shape; the last axis is blocked).

    Like a :class:`quantc.QuantizedTensor` it also has ``q``, ``scale``, ``zero_point`` (0),
    ``axis`` (the last), ``block_size`` (32) and ``granularity`` ("per_block"), with
    ``real = (q - zero_point) * scale`` per block (computed from ``data`` when read)."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, data, dtype, shape):
        kind = _kind(dtype)
        data = np.asarray(data)
        if data.dtype != np.uint8:
            raise TypeError(f"data: expected uint8 blocks, got {data.dtype}")
        shape = tuple(int(s) for s in shape)
        if not shape or shape[-1] % _BLOCK:
            raise ValueError(f"shape: expected a last dimension that is a multiple of 32, got "
                             f"{shape}")
        if min(shape) < 0 or max(shape) >= 2 ** 63:
            raise ValueError(f"shape: expected dimensions in [0, 2**63), got {shape}")
        rows = math.prod(shape[:-1])  # Python ints: np.prod wraps around at 2**63
        want = (rows, shape[-1] // _BLOCK * _BYTES[kind])
        if data.size != want[0] * want[1]:
            raise ValueError(f"data: expected {want[0] * want[1]} bytes for {kind} of shape "
                             f"{shape}, got {data.size}")
        self.data = data.reshape(want)
        self.dtype = kind
        self.shape = shape

    @classmethod
    def from_float(cls, x, dtype="q8_0"):
        """Quantize float ``x`` (last axis a multiple of 32) with :func:`quantize_gguf`."""
        xa = np.asarray(x)
        q = quantize_gguf(xa, dtype)
        return cls(q, dtype, xa.shape)

    @property
    def nbytes(self):
        return self.data.nbytes

    # The QuantizedTensor view (``real = (q - zero_point) * scale`` in blocks of 32 along the
    # last axis), computed from the blocks on each access.

    def _blocks(self):
        return self.data.reshape(-1, _BYTES[self.dtype])

    @property
    def q(self):
        """The values of ``shape``: int8 in [-127, 127] (Q8_0) or ml_dtypes int4 ``q - 8`` in
        [-8, 7] (Q4_0)."""
        b = self._blocks()
        if self.dtype == "q8_0":
            return np.array(b[:, 2:]).view(np.int8).reshape(self.shape)  # a copy, not data
        qs = b[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).view(np.int8) - np.int8(8)
        return q.astype(_dtypes.ml_dtypes.int4).reshape(self.shape)

    @property
    def scale(self):
        """float32 ``d`` of each block: ``shape[:-1] + (shape[-1] // 32,)``."""
        d = self._blocks()[:, :2].copy().view("<f2").astype(np.float32)
        return d.reshape(self.shape[:-1] + (self.shape[-1] // _BLOCK,))

    @property
    def zero_point(self):
        """Zeros of ``q``'s dtype, one per block (the formats have none)."""
        dt = np.int8 if self.dtype == "q8_0" else _dtypes.ml_dtypes.int4
        return np.zeros(self.shape[:-1] + (self.shape[-1] // _BLOCK,), dt)

    @property
    def axis(self):
        return len(self.shape) - 1

    @property
    def block_size(self):
        return _BLOCK

    @property
    def granularity(self):
        return "per_block"

    def dequantize(self):
        """float32 values of ``shape``."""
        return dequantize_gguf(self.data, self.dtype, self.shape)

    def __repr__(self):
        return f"GGUFTensor(dtype={self.dtype!r}, shape={self.shape})"


def save_gguf(tensors, path, *, arch="quantc"):
    """Write ``tensors`` (name -> :class:`GGUFTensor`, or a float32/float16 ndarray written
    unquantized) to a ``.gguf`` file with the ``gguf`` package; ``arch`` is the
    ``general.architecture`` value. Returns the path. What llama.cpp would refuse to read (a
    name of 64 UTF-8 bytes or more, more than 4 dimensions) is a ValueError, before writing."""
    gguf = require("gguf", what="save_gguf")
    if not hasattr(tensors, "items"):
        raise TypeError(f"tensors: expected a mapping name -> tensor, got "
                        f"{type(tensors).__name__}")
    types = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    items = []
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensors: expected str names, got {type(name).__name__}")
        try:
            nbytes = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"tensors[{name!r}]: the name is not valid UTF-8 text") from None
        if nbytes >= _MAX_NAME:
            raise ValueError(f"tensors[{name!r}]: names of {_MAX_NAME} bytes or more are "
                             f"refused by llama.cpp (GGML_MAX_NAME), got {nbytes} bytes")
        ndim = len(t.shape) if isinstance(t, GGUFTensor) else np.ndim(t)
        if ndim > _MAX_DIMS:
            raise ValueError(f"tensors[{name!r}]: llama.cpp reads at most {_MAX_DIMS} "
                             f"dimensions (GGML_MAX_DIMS), got {ndim}")
        if isinstance(t, GGUFTensor):
            # the byte shape keeps the leading dimensions: gguf derives the tensor's shape from
            # it (the row's bytes spelled out: -1 cannot be inferred for zero rows)
            row = t.shape[-1] // _BLOCK * _BYTES[t.dtype]
            items.append((name, t.data.reshape(t.shape[:-1] + (row,)), types[t.dtype]))
            continue
        a = np.asarray(t)
        if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4):
            raise TypeError(f"tensors[{name!r}]: expected a GGUFTensor or a float32/float16 "
                            f"array, got {a.dtype}")
        if a.ndim == 0:  # a GGUF tensor has at least one dimension: not silently (1,)
            raise ValueError(f"tensors[{name!r}]: expected at least 1 dimension (GGUF has no "
                             f"0-d tensors), got a 0-d array")
        items.append((name, np.ascontiguousarray(a, a.dtype.newbyteorder("=")), None))
    # written under a temporary name in the same folder, then renamed: a failure leaves the
    # old file (or none), never a half-written one
    from .io import _atomic_path
    with _atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, arch)
        for name, data, raw in items:
            if raw is None:
                w.add_tensor(name, data)
            else:
                w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def load_gguf(path):
    """Read a ``.gguf`` file with ``gguf.GGUFReader`` -> dict name -> :class:`GGUFTensor`
    (Q8_0 / Q4_0 tensors) or ndarray (F32 / F16, copied out of the file). A malformed file, or
    a tensor of another type, raises ``ValueError`` naming the file (and the tensor)."""
    gguf = require("gguf", what="load_gguf")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: expected a file, got a directory")
    kinds = {gguf.GGMLQuantizationType.Q8_0: "q8_0", gguf.GGMLQuantizationType.Q4_0: "q4_0"}
    floats = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    try:
        with np.errstate(over="ignore"):  # an offset near 2**64 wraps: checked below
            r = gguf.GGUFReader(path)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as e:
        # the reader's own errors for a malformed file: truncated (IndexError, reshape), bad
        # magic or version, unknown value or tensor types, names that are not UTF-8
        raise ValueError(f"{path}: not a valid .gguf file ({type(e).__name__}: "
                         f"{e})") from None
    # each tensor's bytes inside the data section, no two tensors sharing bytes (the reader
    # takes the offsets as they are: one pointing at another tensor's data reads that data),
    # each starting at a multiple of general.alignment as the format requires (llama.cpp
    # refuses a file where one does not)
    end, prev = r.data_offset, None
    for begin, stop, name in sorted((t.data_offset, t.data_offset + t.data.nbytes, t.name)
                                    for t in r.tensors):
        if begin >= r.data_offset and (begin - r.data_offset) % r.alignment:
            raise ValueError(f"{path}: not a valid .gguf file: tensor {name!r} starts at byte "
                             f"{begin - r.data_offset} of the data section, not a multiple of "
                             f"the alignment ({r.alignment})")
        if begin < end:
            where = f"overlaps tensor {prev!r}" if prev is not None else \
                f"starts before the data section (byte {r.data_offset})"
            raise ValueError(f"{path}: not a valid .gguf file: tensor {name!r} (bytes "
                             f"[{begin}, {stop})) {where}")
        if stop > r.data.size:
            raise ValueError(f"{path}: not a valid .gguf file: tensor {name!r} (bytes "
                             f"[{begin}, {stop})) ends after the file ({r.data.size} bytes)")
        end, prev = stop, name
    out = {}
    for t in r.tensors:
        if t.tensor_type not in kinds and t.tensor_type not in floats:
            raise ValueError(f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which "
                             "quantc does not read (Q8_0, Q4_0, F32, F16)")
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # ggml lists dims inner first
        try:
            if t.tensor_type in kinds:
                blocks = np.array(t.data, np.uint8)
                if r.byte_order == "S":  # a file of the other byte order: each block's
                    # float16 scale d (its first 2 bytes) is swapped, as llama.cpp's
                    # gguf_convert_endian writes it
                    b = blocks.reshape(-1, _BYTES[kinds[t.tensor_type]])
                    b[:, :2] = b[:, 1::-1].copy()
                out[t.name] = GGUFTensor(blocks, kinds[t.tensor_type], shape)
            else:  # native byte order (a big-endian file gives '>f4' views)
                data = np.array(t.data, t.data.dtype.newbyteorder("="))
                out[t.name] = data.reshape(shape)
        except ValueError as e:
            raise ValueError(f"{path}: tensor {t.name!r}: {e}") from None
    return out


# ---- quantize_weights(dtype="q8_0" | "q4_0") and its .safetensors/.npz files ----------------

def _weights_entry(name, x, dtype):
    """(GGUFTensor, file metadata, (sqnr dB, max abs error, % clipped)) for quantize_weights:
    blocks along the last axis, which must be a multiple of 32."""
    if x.shape[-1] % _BLOCK:
        raise ValueError(f"{name}: dtype={dtype!r} needs a last dimension that is a multiple "
                         f"of 32, got shape {x.shape} (leave it out with skip=)")
    xf = x if x.dtype == np.float32 else x.astype(np.float32)
    t = GGUFTensor.from_float(xf, dtype)
    e = x.astype(np.float64) - t.dequantize().astype(np.float64)
    sig, err = float(np.sum(np.square(x, dtype=np.float64))), float(np.sum(e * e))
    sq = float("inf") if err == 0 else 10 * np.log10(sig / err) if sig else float("-inf")
    info = {"scheme": dtype, "granularity": "per_block", "axis": -1, "block_size": _BLOCK,
            "orig_dtype": str(x.dtype), "shape": list(x.shape), "method": None}
    return t, info, (sq, float(np.abs(e).max()) if e.size else 0.0, 0.0)


def _from_file(path, name, arr, shape, scheme):
    """A GGUFTensor from a quantized-weights file entry, checked against its metadata."""
    rows = math.prod(shape[:-1]) if shape else 0  # Python ints: np.prod wraps at 2**63
    if not shape or shape[-1] % _BLOCK or arr.dtype != np.uint8 or \
            arr.shape != (rows, shape[-1] // _BLOCK * _BYTES[scheme]):
        raise ValueError(f"{path}: not a valid quantc quantized file: tensor {name!r}: {scheme} "
                         f"blocks of shape {arr.shape} ({arr.dtype}) do not fit shape {shape}")
    return GGUFTensor(arr, scheme, shape)
