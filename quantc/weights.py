"""Weight dictionaries: quantize every eligible tensor, report the cost, save and load.

File layout of a quantized file (``.safetensors`` or ``.npz``, see :meth:`QuantizedWeights.save`):

- a quantized tensor ``name`` is stored as three tensors: ``name`` (the int8/uint8 values,
  original shape), ``name::scale`` (float32) and ``name::zero_point`` (int8/uint8), the
  scale/zero-point shapes following the granularity rules of docs/API.md (0-d per tensor, 1-D
  per channel; per block ``(shape[0], ceil(prod(shape[1:]) / block_size))``: blocks run along
  the flattened input dimension, ``C*kh*kw`` for a ``(M, C, kh, kw)`` conv weight);
  int4/uint4 values are stored packed (``qc.pack_bits``: a 1-D uint8 tensor of
  ``ceil(size / 2)`` bytes, the first value of each pair in the low nibble, in C order of the
  original shape) and their zero points as int8/uint8;
- a tensor converted to float16 or bfloat16 is stored as ``name`` (float16, or
  ``ml_dtypes.bfloat16``: BF16 in safetensors; in an .npz its uint16 bits, typed by the
  metadata entry ``quantc.npz_dtypes``);
- a tensor kept as it is is stored under its name unchanged;
- the metadata entry ``quantc`` (safetensors ``__metadata__``; an ``.npz`` stores its metadata
  as the member ``__metadata__.json``) is JSON:
  ``{"format": "quantc.quantized", "version": 1, "tensors": {name: {"scheme": "int8" |
  "uint8" | "int4" | "uint4" | "float16" | "bfloat16", "granularity": ...,
  "axis": int | null, "block_size": int | null,
  "orig_dtype": "float32" | "float16" | "bfloat16" | "float64", "shape": [...],
  "method": ..., "blocks": "flat"}}, "order": [names in the original order]}``; tensors absent from ``tensors`` were kept unchanged. Per-block
  entries carry ``"blocks": "flat"`` and ``"axis": 1`` (blocks along the flattened dimensions
  1..ndim-1); files written before that key existed (blocks along the last axis, scale shape
  ``shape[:-1] + (blocks,)``) still load.
"""
import fnmatch
import json
import math
import os
import sys
import time
from collections.abc import Mapping

import numpy as np

from . import _C, _dtypes, _table
from .calibration import _minmax
from .gguf import GGUFTensor
from .io import TensorReader, write_tensors

__all__ = ["quantize_weights", "QuantizedWeights", "QuantizedTensor", "load_quantized",
           "WeightsReport"]

FORMAT_NAME = "quantc.quantized"
FORMAT_VERSION = 1
_SCALE = "::scale"
_ZP = "::zero_point"
_GRANULARITIES = ("per_tensor", "per_channel", "per_block")
_QSCHEMES = ("int8", "uint8", "int4", "uint4")
_PACKED = ("int4", "uint4")  # stored two values per byte (qc.pack_bits)
_METHODS = ("minmax", "percentile", "mse", "gptq")
# Candidate clipping fractions of the MSE search: 1.0 (min/max) down to 0.2 in steps of 0.01.
_MSE_FRACTIONS = (1.0 - np.arange(81) / 100.0).astype(np.float32)
# Rows per chunk when measuring the error (bounds the temporaries on big tensors).
_CHUNK_ELEMS = 1 << 22


class QuantizedTensor:
    """One quantized tensor: ``real ~= (q - zero_point) * scale``.

    Attributes: ``q`` (int8/uint8, or ``ml_dtypes`` int4/uint4 one value per byte in memory
    and packed two per byte in files; original shape), ``scale`` (float32), ``zero_point``
    (same dtype as ``q``), ``axis`` (None per tensor; the channel or blocked axis otherwise),
    ``block_size`` (None unless blocked), ``dtype`` (of ``q``), ``shape`` (original),
    ``orig_dtype`` (the float dtype before quantization), ``flat_blocks`` (True when blocks run
    along the flattened dimensions 1..ndim-1, i.e. over ``q.reshape(shape[0], -1)`` with
    ``axis`` 1; scale shape ``(shape[0], blocks)``).
    """

    __slots__ = ("q", "scale", "zero_point", "axis", "block_size", "dtype", "shape",
                 "orig_dtype", "granularity", "method", "flat_blocks")

    def __init__(self, q, scale, zero_point, axis=None, block_size=None, orig_dtype="float32",
                 granularity=None, method="minmax", flat_blocks=False):
        self.q = q
        self.scale = np.asarray(scale, np.float32)
        self.zero_point = np.asarray(zero_point, q.dtype)
        self.axis = None if axis is None else int(axis)
        self.block_size = None if block_size is None else int(block_size)
        self.dtype = q.dtype
        self.shape = tuple(q.shape)
        self.orig_dtype = np.dtype(orig_dtype)
        self.granularity = granularity or ("per_tensor" if axis is None else
                                           "per_block" if block_size else "per_channel")
        self.method = method
        self.flat_blocks = bool(flat_blocks)

    @property
    def nbytes(self):
        """Bytes as stored: 4-bit values packed two per byte, zero points one byte each."""
        if self.dtype.name in _PACKED:
            return -(-self.q.size // 2) + self.scale.nbytes + self.zero_point.size
        return self.q.nbytes + self.scale.nbytes + self.zero_point.nbytes

    def q_bytes(self):
        """``q`` as int8/uint8 values (a converted copy for int4/uint4, else ``q`` itself)."""
        if self.dtype.name in _PACKED:
            return self.q.astype(np.int8 if self.dtype.name == "int4" else np.uint8)
        return self.q

    @property
    def scheme(self):
        g = self.granularity
        if g == "per_channel":
            g = f"per_channel(axis={self.axis})"
        elif g == "per_block":
            g = f"per_block({self.block_size})"
        return f"{self.dtype} {g}"

    def dequantize(self, rows=None):
        """float32 values ``(q - zero_point) * scale`` (rows r0:r1 of axis 0 if given)."""
        from . import dequantize
        q, s, z, axis = self.q, self.scale, self.zero_point, self.axis
        if self.flat_blocks:
            q = q.reshape(q.shape[0], math.prod(q.shape[1:]))
        if rows is not None:
            q = q[rows[0]:rows[1]]
            if s.ndim == q.ndim or (s.ndim == 1 and axis == 0):
                s, z = s[rows[0]:rows[1]], z[rows[0]:rows[1]]
        out = dequantize(q, s, z, axis=axis, block_size=self.block_size)
        return out.reshape(out.shape[:1] + self.shape[1:]) if self.flat_blocks else out

    def __repr__(self):
        return (f"QuantizedTensor(shape={self.shape}, scheme='{self.scheme}', "
                f"scale shape={self.scale.shape})")


class WeightsReport(_table.Rows):
    """Per-tensor cost of a quantization: iterate for dicts, ``str()`` for a table.

    Each row: ``name``, ``shape``, ``scheme`` ("int8 per_channel(axis=0)", "float16", "kept"),
    ``bytes_before``, ``bytes_after``, ``sqnr_db`` (10 log10 of signal over error energy; None
    when the error is zero or unknown), ``max_abs_error``, ``clipped_pct`` (share of values more
    than half a step away from their dequantized value, i.e. clamped). Error fields are None
    for kept tensors and for files loaded from disk (the original values are gone).
    """

    def to_json(self, **kw):
        """``{"tensors": to_list(), "summary": summary()}`` as a JSON string (``kw`` go to
        ``json.dumps``, e.g. ``indent=1``)."""
        return json.dumps({"tensors": self.to_list(), "summary": self.summary()}, **kw)

    def summary(self):
        """Totals: tensor counts, bytes before/after, size_pct, median_sqnr_db."""
        before = sum(r["bytes_before"] for r in self.rows)
        after = sum(r["bytes_after"] for r in self.rows)
        sq = [r["sqnr_db"] for r in self.rows if r["sqnr_db"] is not None]
        return {"tensors": len(self.rows),
                "quantized": sum(1 for r in self.rows if r["scheme"] != "kept"),
                "bytes_before": before, "bytes_after": after,
                "size_pct": 100.0 * after / before if before else 100.0,
                "median_sqnr_db": float(np.median(sq)) if sq else None}

    def __str__(self):
        head = ("tensor", "shape", "scheme", "before", "after", "SQNR dB", "max|err|",
                "clipped%")
        body = []
        for r in self.rows:
            body.append((r["name"], "x".join(map(str, r["shape"])) or "()", r["scheme"],
                         _human(r["bytes_before"]), _human(r["bytes_after"]),
                         "-" if r["sqnr_db"] is None else
                         ("exact" if math.isinf(r["sqnr_db"]) else f"{r['sqnr_db']:.1f}"),
                         "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.3g}",
                         "-" if r["clipped_pct"] is None else f"{r['clipped_pct']:.3f}"))
        out = _table.table(head, body, right={3, 4, 5, 6, 7})
        s = self.summary()
        med = "-" if s["median_sqnr_db"] is None else f"{s['median_sqnr_db']:.1f} dB"
        out.append("")
        out.append(f"{s['quantized']} of {s['tensors']} tensors quantized; "
                   f"{_human(s['bytes_before'])} -> {_human(s['bytes_after'])} "
                   f"({s['size_pct']:.1f}% of the original); median SQNR {med}")
        return "\n".join(out)


def _human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


class QuantizedWeights(Mapping):
    """name -> QuantizedTensor (quantized), float16 ndarray (dtype="float16") or the original
    ndarray (kept). See :func:`quantize_weights` and :func:`load_quantized`."""

    def __init__(self, tensors, info, report_rows):
        self._tensors = dict(tensors)
        self._info = dict(info)        # name -> metadata dict (quantized/converted tensors)
        self._rows = list(report_rows)

    def __getitem__(self, name):
        return self._tensors[name]

    def linear(self, name, bias=None, *, act_granularity="per_tensor", smooth=None):
        """``qc.Linear.from_quantized(self[name], bias)``: run a quantized (out, in) weight.

        ``bias`` and ``smooth`` (SmoothQuant factors the weight was quantized with) may be
        arrays or names of (float) tensors of this mapping."""
        from ._gemm import Linear
        if not isinstance(name, str):
            raise TypeError(f"name: expected a tensor name (str), got {type(name).__name__}")
        if name not in self._tensors:
            raise KeyError(f"name: no tensor {name!r} in these weights")
        qt = self._tensors[name]
        if isinstance(qt, GGUFTensor):
            raise ValueError(f"name: {name!r} holds {qt.dtype} blocks, which Linear does not "
                             "run (use int8 weights, or Linear.from_float(t.dequantize()))")
        if not isinstance(qt, QuantizedTensor):
            raise ValueError(f"name: {name!r} is not quantized (it is a {qt.dtype} array); "
                             "use qc.Linear.from_float")
        if isinstance(bias, str):
            if bias not in self._tensors:
                raise KeyError(f"bias: no tensor {bias!r} in these weights")
            bias = self._tensors[bias]
            if isinstance(bias, QuantizedTensor):
                bias = bias.dequantize()
        if isinstance(smooth, str):
            if smooth not in self._tensors or isinstance(self._tensors[smooth], QuantizedTensor):
                raise KeyError(f"smooth: no float tensor {smooth!r} in these weights")
            smooth = self._tensors[smooth]
        return Linear.from_quantized(qt, bias, act_granularity=act_granularity, smooth=smooth)

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    @property
    def nbytes(self):
        """Bytes of the stored tensors (q + scale + zero_point for quantized ones)."""
        return sum(v.nbytes for v in self._tensors.values())

    @property
    def original_nbytes(self):
        return sum(r["bytes_before"] for r in self._rows)

    @property
    def compression_ratio(self):
        """original_nbytes / nbytes (4.0 would be a perfect float32 -> int8)."""
        return self.original_nbytes / self.nbytes if self.nbytes else 1.0

    def dequantize(self, original_dtype=False):
        """name -> ndarray: float32 for quantized and float16/bfloat16-converted tensors (or,
        with ``original_dtype=True``, each in the dtype it had before quantization, e.g.
        ``ml_dtypes.bfloat16``), kept ones as they are."""
        out = {}
        for name, v in self._tensors.items():
            if isinstance(v, (QuantizedTensor, GGUFTensor)):
                d = v.dequantize()
                if original_dtype:
                    orig = getattr(v, "orig_dtype", None)
                    if orig is None:
                        orig = np.dtype(self._info[name]["orig_dtype"])
                    d = d.astype(orig)
                out[name] = d
            elif name in self._info:
                d = v.astype(np.float32)
                if original_dtype:
                    d = d.astype(np.dtype(self._info[name]["orig_dtype"]))
                out[name] = d
            else:
                out[name] = v
        return out

    def report(self):
        """The per-tensor WeightsReport (error fields None after load_quantized)."""
        return WeightsReport(self._rows)

    def _flat(self):
        tensors = {}
        for name, v in self._tensors.items():
            if name.endswith(_SCALE) or name.endswith(_ZP):
                raise ValueError(f"{name}: tensor names ending in '{_SCALE}' or '{_ZP}' are "
                                 f"reserved for quantization parameters")
            if isinstance(v, GGUFTensor):
                tensors[name] = v.data
            elif isinstance(v, QuantizedTensor):
                if v.dtype.name in _PACKED:
                    from . import pack_bits
                    tensors[name] = pack_bits(v.q)
                    tensors[name + _SCALE] = v.scale
                    tensors[name + _ZP] = np.asarray(v.zero_point).astype(
                        np.int8 if v.dtype.name == "int4" else np.uint8)
                else:
                    tensors[name] = v.q
                    tensors[name + _SCALE] = v.scale
                    tensors[name + _ZP] = v.zero_point
            else:
                tensors[name] = v
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tensors": self._info,
                "order": list(self._tensors)}
        return tensors, {"quantc": json.dumps(meta, sort_keys=True)}

    def save(self, path):
        """Write to `path` (.safetensors or .npz; layout in this module's docstring).

        The file is written under a temporary name in the same folder and renamed into place,
        so an interrupted save never leaves a partial file under `path`.
        """
        tensors, meta = self._flat()
        write_tensors(path, tensors, meta)

    def __repr__(self):
        return (f"QuantizedWeights({len(self)} tensors, {self.nbytes} bytes, "
                f"{self.compression_ratio:.2f}x smaller)")


class _Progress:
    """A progress bar on stderr: tqdm when installed, else one line rewritten in place
    (carriage return) on a terminal, or one line per tensor when forced on and not a terminal.

    With enabled=None it appears only on a terminal and only once the job has run 1 s.
    """

    def __init__(self, total, enabled, desc="quantizing"):
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.on = tty if enabled is None else bool(enabled)
        self.delay = 1.0 if enabled is None else 0.0
        self.tty = tty
        self.width = 0
        self.bar = None
        if self.on:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="tensor", delay=self.delay,
                                file=sys.stderr, leave=False)
            except ImportError:
                self.bar = None
        self.desc = desc

    def step(self, name):
        self.done += 1
        if not self.on:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(name[-40:], refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.t0 >= self.delay:
            line = f"{self.desc} {self.done}/{self.total} {name[-40:]}"
            if self.tty:
                pad = max(0, self.width - len(line))
                sys.stderr.write("\r" + line + " " * pad)
                sys.stderr.flush()
                self.width = len(line)
            else:
                print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.width:  # clear the line, as tqdm(leave=False) does
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


def _source(weights):
    """(names, get(name), close(), label) for a mapping or a path to a tensor file."""
    if isinstance(weights, (str, os.PathLike)):
        reader = TensorReader(weights)
        try:
            _refuse_quantized(reader.path, reader.names, "quantc" in reader.metadata)
        except ValueError:
            reader.close()
            raise
        return list(reader.names), reader.read, reader.close, reader.path
    if isinstance(weights, QuantizedWeights):
        raise ValueError("weights: already quantized (a QuantizedWeights); use "
                         "weights.dequantize() to get float tensors back")
    if isinstance(weights, Mapping):
        for k in weights:
            if not isinstance(k, str):
                raise TypeError(f"weights: expected string keys, got {type(k).__name__} {k!r}")
        _refuse_quantized("weights", list(weights), False)

        def get(name):
            a = _as_numpy(weights[name], name)
            if a.dtype.kind not in "biuf" and not _dtypes.is_ml_float(a.dtype):
                raise ValueError(f"weights[{name!r}]: expected a numeric array, got dtype "
                                 f"{a.dtype}")
            return a
        return list(weights), get, (lambda: None), "weights"
    raise TypeError(f"weights: expected a mapping name -> array or a path to a .npz/.safetensors "
                    f"file, got {type(weights).__name__}")


def _refuse_quantized(src, names, has_meta):
    """Never quantize a quantized file again (its ::scale entries are not weights)."""
    marked = [n for n in names if n.endswith(_SCALE) or n.endswith(_ZP)]
    if has_meta or marked:
        why = "its metadata says so" if has_meta else f"it has {marked[0]!r}"
        raise ValueError(f"{src}: already quantized by quantc ({why}); load it with "
                         f"load_quantized, or quantize the original float weights")


def _as_numpy(v, name):
    """An array from a mapping value; torch tensors are detached and moved to the CPU."""
    if isinstance(v, QuantizedTensor):
        raise ValueError(f"weights[{name!r}]: already quantized (a QuantizedTensor)")
    mod = type(v).__module__ or ""
    if mod.split(".")[0] == "torch" and hasattr(v, "detach"):
        t = v.detach().cpu()
        import torch
        ml = {torch.bfloat16: (torch.int16, _dtypes.bfloat16)}
        for tname, mname in (("float8_e4m3fn", "float8_e4m3fn"), ("float8_e5m2", "float8_e5m2"),
                             ("float8_e4m3fnuz", "float8_e4m3fnuz"),
                             ("float8_e5m2fnuz", "float8_e5m2fnuz")):
            if hasattr(torch, tname):
                ml[getattr(torch, tname)] = (torch.uint8, _dtypes.ML_FLOATS[mname])
        if t.dtype in ml:  # no NumPy dtype in torch: the same bits as ml_dtypes' type
            bits, dt = ml[t.dtype]
            return t.contiguous().view(bits).numpy().view(dt)
        try:
            return t.numpy()
        except TypeError:
            raise TypeError(f"weights[{name!r}]: torch dtype {t.dtype} has no NumPy "
                            f"equivalent; convert it first (e.g. tensor.float())") from None
    return np.asarray(v)


def _layout(x, granularity, axis, block_size):
    """(2-D view/copy (R, L), block length, axis stored, block_size stored, param shape)."""
    if granularity == "per_tensor":
        return x.reshape(1, -1), max(x.size, 1), None, None, ()
    if granularity == "per_channel":
        a = axis + x.ndim if axis < 0 else axis
        m = np.moveaxis(x, a, 0)
        x2 = np.ascontiguousarray(m.reshape(m.shape[0], -1))
        return x2, max(x2.shape[1], 1), a, None, (x.shape[a],)
    # blocks along the flattened input dimension: (M, C, kh, kw) -> (M, C*kh*kw)
    x2 = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    groups = -(-x2.shape[1] // block_size)
    return x2, block_size, 1, block_size, (x2.shape[0], groups)


def _percentile_range(x2, block, p):
    """Per-group (lo, hi) = (100-p)th and p-th percentiles (NumPy linear interpolation)."""
    rows, length = x2.shape
    groups = -(-length // block)
    lo = np.empty((rows, groups), np.float32)
    hi = np.empty((rows, groups), np.float32)
    full = length // block
    if full:
        v = x2[:, :full * block].reshape(rows, full, block)
        lo[:, :full], hi[:, :full] = np.percentile(v, [100.0 - p, p], axis=2)
    if groups > full:
        lo[:, full], hi[:, full] = np.percentile(x2[:, full * block:], [100.0 - p, p], axis=1)
    return lo, hi


def _quantize_tensor(name, x, dtype, granularity, axis, block_size, symmetric, narrow_range,
                     method, percentile):
    from . import choose_qparams, qrange, quantize
    x2, block, st_axis, st_block, pshape = _layout(x, granularity, axis, block_size)
    mins, maxs = _minmax(x2, name, 1, block, where=x)
    if not (np.isfinite(mins).all() and np.isfinite(maxs).all()):
        raise ValueError(f"{name}: expected finite values, got +-inf (a range cannot be "
                         f"chosen)")
    if method == "percentile":
        mins, maxs = _percentile_range(x2, block, percentile)
    elif method == "mse":
        qmin, qmax = qrange(dtype, narrow_range=narrow_range)
        lo, hi = np.minimum(mins, 0), np.maximum(maxs, 0)
        if granularity == "per_tensor" and x.shape[0] > 1:
            # one range for the whole tensor: each row's error per candidate in parallel,
            # summed over rows in row order, then the first smallest candidate
            rows = x.reshape(x.shape[0], -1)
            n = rows.shape[0]
            _, errs = _C._calib_mse_clip_search(
                rows, max(rows.shape[1], 1), np.full(n, lo.item(), np.float32),
                np.full(n, hi.item(), np.float32), qmin, qmax, bool(symmetric),
                _MSE_FRACTIONS, return_errors=True)
            total = np.zeros(len(_MSE_FRACTIONS))
            for r in range(n):
                total += errs[r, 0]
            best = np.array([[int(np.argmin(total))]])
        else:
            best = _C._calib_mse_clip_search(x2, block, lo, hi, qmin, qmax, bool(symmetric),
                                             _MSE_FRACTIONS)
        f = _MSE_FRACTIONS[best]
        mins, maxs = (lo * f).astype(np.float32), (hi * f).astype(np.float32)
    mins = mins.reshape(pshape)
    maxs = maxs.reshape(pshape)
    qp = choose_qparams(min_val=mins, max_val=maxs, dtype=dtype, symmetric=symmetric,
                        axis=st_axis, block_size=st_block, narrow_range=narrow_range)
    flat = granularity == "per_block"
    q = quantize(x2 if flat else x, qp.scale, qp.zero_point, dtype, axis=st_axis,
                 block_size=st_block).reshape(x.shape)
    if narrow_range:  # values clipped by percentile / mse saturate to the narrow range too
        lo = qrange(dtype, narrow_range=True)[0]
        wide = q.astype(np.int16)
        if wide.size and wide.min() < lo:
            q = np.maximum(wide, lo).astype(q.dtype)
    qt = QuantizedTensor(q, qp.scale, qp.zero_point, st_axis, st_block, x.dtype, granularity,
                         method, flat_blocks=flat)
    return qt, x2, block


def _check_granularity(granularity, block_size):
    """ValueError unless ``granularity`` is one of _GRANULARITIES and, for "per_block",
    ``block_size`` a positive int (quantize_weights and gptq)."""
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity: expected one of {', '.join(_GRANULARITIES)}, got "
                         f"{granularity!r}")
    if granularity == "per_block" and (isinstance(block_size, bool) or
                                       not isinstance(block_size, (int, np.integer)) or
                                       block_size < 1):
        raise ValueError(f"block_size: expected a positive int with granularity='per_block', "
                         f"got {block_size!r}")


def _gptq_tensor(name, x, hessians, dtype, granularity, axis, block_size, symmetric,
                 narrow_range, damp):
    """quantize_weights(method="gptq") for one float32 tensor: (qt, x2, block) as
    _quantize_tensor returns them."""
    from ._gptq import gptq
    if x.ndim != 2:
        raise ValueError(f"{name}: method='gptq' quantizes (out, in) matrices, got shape "
                         f"{x.shape} (leave it out with skip=)")
    if granularity == "per_channel" and axis not in (0, -2):
        raise ValueError(f"axis: method='gptq' quantizes per output channel (axis=0), got "
                         f"{axis} for tensor {name!r}")
    if name not in hessians:
        raise ValueError(f"hessians: no entry for tensor {name!r} (method='gptq' needs one for "
                         "every tensor it quantizes; leave the others out with skip=)")
    try:
        qt = gptq(x, hessians[name], dtype=dtype, granularity=granularity,
                  block_size=block_size, symmetric=symmetric, narrow_range=narrow_range,
                  damp=damp)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None
    x2, block, _, _, _ = _layout(x, granularity, 0, block_size)
    return qt, x2, block


def _error_stats_c(x, x2, block, qt):
    """(sqnr_db, max_abs_error, clipped_pct) of a float32 tensor, one C pass over x and q."""
    s = np.asarray(qt.scale, np.float32)
    z = np.asarray(qt.zero_point).astype(np.int32)
    if qt.granularity == "per_tensor":
        x2 = x.reshape(x.shape[0], -1)  # rows only to spread the work over threads
        block = max(x2.shape[1], 1)
        q2 = qt.q_bytes().reshape(x2.shape)
        s = np.full(x2.shape[0], s, np.float32)
        z = np.full(x2.shape[0], z, np.int32)
    elif qt.granularity == "per_channel":
        q2 = np.ascontiguousarray(np.moveaxis(qt.q_bytes(), qt.axis, 0).reshape(x2.shape))
    else:
        q2 = qt.q_bytes().reshape(x2.shape)
    sig, err, mx, clipped = _C._calib_error_stats(x2, q2, block, s.ravel(), z.ravel())
    return _sqnr(sig, err), mx, 100.0 * clipped / x.size if x.size else 0.0


def _sqnr(sig, err):
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def _qrange_of(dt):
    from . import qrange
    return qrange(dt.name)


def _error_stats(x, qt):
    """(sqnr_db, max_abs_error, clipped_pct) against a float64 original, in row chunks."""
    rows = x.shape[0] if x.ndim else 1
    per = max(1, _CHUNK_ELEMS // max(1, x.size // max(rows, 1)))
    sig = err = 0.0
    mx = 0.0
    clipped = 0
    qmin, qmax = _qrange_of(qt.dtype)
    for r0 in range(0, rows, per):
        r1 = min(rows, r0 + per)
        xs = x[r0:r1].astype(np.float64)
        d = qt.dequantize((r0, r1))
        e = xs - d
        sig += float(np.dot(xs.ravel(), xs.ravel()))
        err += float(np.dot(e.ravel(), e.ravel()))
        if e.size:
            mx = max(mx, float(np.abs(e).max()))
        sat = qt.q_bytes()[r0:r1]
        sat = (sat == qmin) | (sat == qmax)
        if sat.any():
            step = _broadcast_scale(qt, (r0, r1), xs.shape)
            clipped += int(np.count_nonzero(sat & (np.abs(e) > 0.5 * step * (1 + 2.0 ** -10))))
    return _sqnr(sig, err), mx, 100.0 * clipped / x.size if x.size else 0.0


def _broadcast_scale(qt, rows, shape):
    s = qt.scale
    if s.ndim == 0:
        return s
    if qt.flat_blocks:  # blocked along the flattened dimensions 1..ndim-1
        s = s[rows[0]:rows[1]]
        flat = math.prod(shape[1:])
        return np.repeat(s, qt.block_size, axis=-1)[:, :flat].reshape(shape)
    if s.ndim == len(qt.shape):  # blocked along the last axis (files before "blocks": "flat")
        s = s[rows[0]:rows[1]]
        return np.repeat(s, qt.block_size, axis=-1)[..., :shape[-1]]
    if qt.axis == 0:
        s = s[rows[0]:rows[1]]
    bshape = [1] * len(shape)
    bshape[qt.axis] = s.shape[0]
    return s.reshape(bshape)


def _row(name, shape, scheme, before, after, stats=None):
    sqnr, mx, clip = stats if stats else (None, None, None)
    return {"name": name, "shape": list(shape), "scheme": scheme, "bytes_before": int(before),
            "bytes_after": int(after),
            "sqnr_db": None if sqnr is None else (sqnr if math.isfinite(sqnr) else None),
            "max_abs_error": mx, "clipped_pct": clip}


def quantize_weights(weights, *, dtype="int8", granularity="per_channel", axis=0,
                     block_size=None, symmetric=True, narrow_range=True, method="minmax",
                     min_elements=1024, skip=(), progress=None, percentile=99.99,
                     hessians=None, damp=0.01):
    """Quantize a dictionary of weights, tensor by tensor.

    weights: a mapping name -> array, or a path to a ``.npz`` / ``.safetensors`` file (read
    one tensor at a time; the float model is never held in memory as a whole).

    Quantized: floating tensors with ``ndim >= 2``, at least `min_elements` elements and a
    name matching no fnmatch pattern in `skip`; everything else is kept as it is.
    Floating inputs may be float16/32/64 or bfloat16 (``ml_dtypes.bfloat16`` arrays, torch
    bfloat16 tensors, BF16 tensors in a .safetensors file); each is converted to float32
    (exactly) before quantization and its dtype is kept as ``orig_dtype``.
    dtype: "int8", "uint8", "int4" or "uint4" (affine quantization; 4-bit values are
    ``ml_dtypes`` int4/uint4 arrays in memory and are stored packed two per byte, so a file
    holds about 1/8 of the float32 bytes plus the scales: use them with
    ``granularity="per_block"``, e.g. ``block_size=32``), "q8_0" or "q4_0" (llama.cpp's
    blocks of 32 along the last axis, which must be a multiple of 32; stored as
    :class:`GGUFTensor`, see ``quantc.gguf``; granularity and the options below do not
    apply), or "float16" / "bfloat16" (the floating tensors selected as above are converted
    instead, round to nearest even; bfloat16 values are ``ml_dtypes.bfloat16`` arrays).
    granularity:
      "per_tensor": one scale per tensor;
      "per_channel": one scale per index of `axis` (default 0: output channels of a
      (out, in) Linear or (M, C, kH, kW) conv weight);
      "per_block": blocks of `block_size` consecutive elements along the flattened input
      dimension of each weight: a (M, C, kh, kw) conv weight is blocked as the matrix
      (M, C*kh*kw), a (out, in) Linear weight along `in` (as ONNX blocked quantization with
      axis = 1, MatMulNBits, GPTQ, GGUF); scale shape (M, ceil(C*kh*kw / block_size)), and
      every block but each row's last holds `block_size` values; `axis` is not used.
    method: how each tensor/channel/block's range is chosen before choose_qparams:
      "minmax": the exact min and max;
      "percentile": NumPy's (100 - percentile)-th and percentile-th percentiles;
      "mse": the range scaled by the fraction f in {1.00, 0.99, ..., 0.20} that minimizes the
      squared error of quantizing that group (searched in C, parallel over rows; per tensor,
      the rows' errors are summed in row order);
      "gptq": GPTQ (see :func:`quantc.gptq`) with ``hessians[name]``, the (in, in) sum of
      ``x.T @ x`` over the calibration inputs of each (out, in) weight selected (2-D only;
      ``granularity="per_channel"`` needs ``axis=0``), and ``damp``; a selected tensor with
      no entry in ``hessians`` raises ValueError (leave it out with ``skip``).
    NaN in a tensor raises ValueError naming the tensor.
    progress: None = a progress bar on stderr if it is a terminal and the job takes over 1 s
    (tqdm when installed, else one line rewritten in place); True/False to force it on/off.
    Torch tensors are accepted (detached and copied to the CPU); PyTorch pickle checkpoints
    (.pt/.pth/.bin) are not read: save the state dict with safetensors. A file or mapping that
    quantc already quantized raises ValueError.
    """
    dtype_s = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    if dtype_s not in _QSCHEMES + ("float16", "bfloat16", "q8_0", "q4_0"):
        raise ValueError(f"dtype: expected 'int8', 'uint8', 'int4', 'uint4', 'q8_0', 'q4_0', "
                         f"'float16' or 'bfloat16', got {dtype!r}")
    _check_granularity(granularity, block_size)
    if granularity != "per_block" and block_size is not None:
        raise ValueError(f"block_size: only used with granularity='per_block', got "
                         f"{block_size!r} with granularity={granularity!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__}")
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {', '.join(_METHODS)}, got {method!r}")
    if method == "gptq":
        if not isinstance(hessians, Mapping):
            raise TypeError(f"hessians: expected a mapping name -> (in, in) array with "
                            f"method='gptq', got {type(hessians).__name__}")
    elif hessians is not None:
        raise ValueError(f"hessians: only used with method='gptq', got method={method!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile: expected a value in (50, 100], got {percentile}")
    if isinstance(min_elements, bool) or not isinstance(min_elements, (int, np.integer)) \
            or min_elements < 0:
        raise ValueError(f"min_elements: expected an int >= 0, got {min_elements!r}")
    skip = (skip,) if isinstance(skip, str) else tuple(skip)

    names, get, close, src = _source(weights)
    tensors, info, rows = {}, {}, []
    bar = _Progress(len(names), progress)
    try:
        for name in names:
            x = get(name)
            eligible = (_dtypes.is_float(x.dtype) and x.ndim >= 2
                        and x.size >= max(min_elements, 1)
                        and not any(fnmatch.fnmatchcase(name, p) for p in skip))
            if eligible and not x.dtype.isnative:  # '>f8' is float64: its stats, its name
                x = x.astype(_dtypes.native(x.dtype))
            if not eligible:
                tensors[name] = x
                rows.append(_row(name, x.shape, "kept", x.nbytes, x.nbytes))
            elif dtype_s in ("float16", "bfloat16"):
                xw = x if x.dtype.kind == "f" else x.astype(np.float32)
                if np.isnan(xw).any():
                    raise ValueError(f"{name}: expected no NaN values, got "
                                     f"{int(np.isnan(xw).sum())} NaN")
                from . import to_bfloat16, to_float16
                h = to_float16(x) if dtype_s == "float16" else \
                    to_bfloat16(x).view(_dtypes.bfloat16)
                tensors[name] = h
                info[name] = {"scheme": dtype_s, "granularity": None, "axis": None,
                              "block_size": None, "orig_dtype": str(x.dtype),
                              "shape": list(x.shape), "method": None}
                nbytes0, x = x.nbytes, xw
                e = x.astype(np.float64) - h.astype(np.float64)
                sig, err = float(np.sum(np.square(x, dtype=np.float64))), float(np.sum(e * e))
                sq = math.inf if err == 0 else 10 * math.log10(sig / err) if sig else -math.inf
                stats = (sq, float(np.abs(e).max()) if e.size else 0.0,
                         100.0 * float(np.count_nonzero(np.isinf(h.astype(np.float32)) &
                                                        np.isfinite(x))) / x.size)
                rows.append(_row(name, x.shape, dtype_s, nbytes0, h.nbytes, stats))
            elif dtype_s in ("q8_0", "q4_0"):  # llama.cpp blocks (quantc.gguf)
                from .gguf import _weights_entry
                tensors[name], info[name], stats = _weights_entry(name, x, dtype_s)
                rows.append(_row(name, x.shape, dtype_s, x.nbytes, tensors[name].nbytes, stats))
            else:
                if granularity == "per_channel" and not -x.ndim <= axis < x.ndim:
                    raise ValueError(f"axis: expected an int in [{-x.ndim}, {x.ndim}) for "
                                     f"tensor {name!r} of shape {x.shape}, got {axis}")
                xf = x if x.dtype == np.float32 else x.astype(np.float32)
                if method == "gptq":
                    qt, x2, block = _gptq_tensor(name, xf, hessians, dtype_s, granularity,
                                                 axis, block_size, symmetric, narrow_range,
                                                 damp)
                else:
                    qt, x2, block = _quantize_tensor(name, xf, dtype_s, granularity, axis,
                                                     block_size, symmetric, narrow_range,
                                                     method, float(percentile))
                qt.orig_dtype = x.dtype
                stats = _error_stats(x, qt) if x.dtype == np.float64 else \
                    _error_stats_c(xf, x2, block, qt)
                del x2, xf
                tensors[name] = qt
                info[name] = {"scheme": dtype_s, "granularity": granularity, "axis": qt.axis,
                              "block_size": qt.block_size, "orig_dtype": str(x.dtype),
                              "shape": list(x.shape), "method": method}
                if qt.flat_blocks:
                    info[name]["blocks"] = "flat"
                rows.append(_row(name, x.shape, qt.scheme, x.nbytes, qt.nbytes, stats))
            del x
            bar.step(name)
    finally:
        bar.close()
        close()
    return QuantizedWeights(tensors, info, rows)


def _bad(path, msg):
    return ValueError(f"{path}: not a valid quantc quantized file: {msg}")


def load_quantized(path):
    """Read a file written by :meth:`QuantizedWeights.save` back, bit for bit.

    Every array is checked against the metadata (dtypes, shapes of q/scale/zero_point,
    positive finite scales, zero points in range); a mismatch raises ValueError naming the
    file and the tensor.
    """
    with TensorReader(path) as r:
        raw = r.metadata.get("quantc")
        if raw is None:
            raise _bad(r.path, "no 'quantc' metadata (a float weights file? use "
                               "quantize_weights)")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _bad(r.path, f"metadata is not JSON ({e})") from None
        except RecursionError:
            raise _bad(r.path, "metadata JSON is nested too deeply") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise _bad(r.path, "metadata 'format' is not quantc.quantized")
        if meta.get("version") != FORMAT_VERSION:
            raise _bad(r.path, f"format version {meta.get('version')!r} is not supported "
                               f"(this quantc reads version {FORMAT_VERSION})")
        info = meta.get("tensors")
        if not isinstance(info, dict):
            raise _bad(r.path, "metadata 'tensors' is not an object")
        for name, m in info.items():
            if not isinstance(m, dict):
                raise _bad(r.path, f"tensor {name!r}: bad metadata (expected an object, got "
                                   f"{type(m).__name__})")
            if not isinstance(m.get("method"), (str, type(None))):
                raise _bad(r.path, f"tensor {name!r}: bad metadata ('method' is a "
                                   f"{type(m['method']).__name__}, not a string)")
        order = meta.get("order")
        if order is not None and not (isinstance(order, list) and
                                      all(isinstance(n, str) for n in order)):
            raise _bad(r.path, "metadata 'order' is not a list of tensor names")
        names = set(r.names)
        tensors, rows = {}, []
        for name in r.names:
            if name.endswith(_SCALE) or name.endswith(_ZP):
                base = name[:-len(_SCALE)] if name.endswith(_SCALE) else name[:-len(_ZP)]
                if base not in info or info[base].get("scheme") not in _QSCHEMES:
                    raise _bad(r.path, f"{name!r} belongs to no quantized tensor")
                continue
            arr = r.read(name)
            m = info.get(name)
            if m is None:
                tensors[name] = arr
                rows.append(_row(name, arr.shape, "kept", arr.nbytes, arr.nbytes))
                continue
            if not isinstance(m, dict) or not isinstance(m.get("shape"), list) or not all(
                    type(d) is int and 0 <= d < 2 ** 63 for d in m["shape"]):
                raise _bad(r.path, f"tensor {name!r}: bad metadata (expected an object with "
                                   f"'shape' a list of non-negative ints)")
            try:
                shape = tuple(m["shape"])
                orig = np.dtype(m["orig_dtype"])
                scheme = m["scheme"]
            except (KeyError, TypeError, ValueError) as e:
                raise _bad(r.path, f"tensor {name!r}: bad metadata ({e})") from None
            if not _dtypes.is_float(orig):
                raise _bad(r.path, f"tensor {name!r}: orig_dtype {orig} is not floating")
            if scheme in ("q8_0", "q4_0"):
                from .gguf import _from_file
                tensors[name] = _from_file(r.path, name, arr, shape, scheme)
                rows.append(_row(name, shape, scheme, math.prod(shape) * orig.itemsize,
                                 arr.nbytes))
                continue
            if scheme in _PACKED:
                if arr.dtype != np.uint8 or arr.ndim != 1:
                    raise _bad(r.path, f"tensor {name!r}: scheme {scheme} expects packed uint8 "
                                       f"bytes (1-D), got {arr.dtype} shape {arr.shape}")
                from . import unpack_bits
                try:
                    arr = unpack_bits(arr, scheme, shape)
                except ValueError as e:
                    raise _bad(r.path, f"tensor {name!r}: {e}") from None
            if arr.shape != shape:
                raise _bad(r.path, f"tensor {name!r}: shape {arr.shape} != metadata {shape}")
            nbefore = math.prod(shape) * orig.itemsize
            if scheme in ("float16", "bfloat16"):
                if arr.dtype != np.dtype(scheme):
                    raise _bad(r.path, f"tensor {name!r}: expected {scheme}, got {arr.dtype}")
                tensors[name] = arr
                rows.append(_row(name, shape, scheme, nbefore, arr.nbytes))
                continue
            if scheme not in _QSCHEMES or arr.dtype != np.dtype(scheme):
                raise _bad(r.path, f"tensor {name!r}: scheme {scheme!r} with values of dtype "
                                   f"{arr.dtype}")
            for suffix in (_SCALE, _ZP):
                if name + suffix not in names:
                    raise _bad(r.path, f"tensor {name!r}: missing {name + suffix!r}")
            scale = r.read(name + _SCALE)
            zp = r.read(name + _ZP)
            if scheme in _PACKED:  # stored one per byte as int8/uint8
                want = np.int8 if scheme == "int4" else np.uint8
                lo, hi = (-8, 7) if scheme == "int4" else (0, 15)
                if zp.dtype != want or (zp.size and (zp.min() < lo or zp.max() > hi)):
                    raise _bad(r.path, f"tensor {name!r}: {scheme} zero points must be "
                                       f"{np.dtype(want)} in [{lo}, {hi}]")
                zp = zp.astype(arr.dtype)
            qt = _checked_tensor(r.path, name, arr, scale, zp, m, orig)
            tensors[name] = qt
            rows.append(_row(name, shape, qt.scheme, nbefore, qt.nbytes))
        for name in info:
            if name not in tensors:
                raise _bad(r.path, f"metadata lists {name!r} but the file has no such tensor")
    if order is not None and sorted(order) == sorted(tensors):
        rank = {n: i for i, n in enumerate(order)}
        tensors = {n: tensors[n] for n in order}
        rows.sort(key=lambda row: rank[row["name"]])
    return QuantizedWeights(tensors, info, rows)


def _checked_tensor(path, name, q, scale, zp, m, orig):
    axis, block = m.get("axis"), m.get("block_size")
    gran = m.get("granularity")
    flat = m.get("blocks") == "flat"
    if m.get("blocks") not in (None, "flat"):
        raise _bad(path, f"tensor {name!r}: unknown block layout {m.get('blocks')!r}")
    if scale.dtype != np.float32:
        raise _bad(path, f"tensor {name!r}: scale dtype {scale.dtype}, expected float32")
    if zp.dtype != q.dtype:
        raise _bad(path, f"tensor {name!r}: zero_point dtype {zp.dtype}, expected {q.dtype}")
    if gran == "per_tensor" and axis is None and block is None:
        want = ()
    elif gran == "per_channel" and isinstance(axis, int) and 0 <= axis < q.ndim and block is None:
        want = (q.shape[axis],)
    elif gran == "per_block" and flat and axis == 1 and q.ndim >= 2 and \
            type(block) is int and block >= 1:
        want = (q.shape[0], -(-math.prod(q.shape[1:]) // block))
    elif gran == "per_block" and not flat and type(axis) is int and 0 <= axis < q.ndim and \
            type(block) is int and block >= 1:
        want = q.shape[:axis] + (-(-q.shape[axis] // block),) + q.shape[axis + 1:]
    else:
        raise _bad(path, f"tensor {name!r}: inconsistent granularity {gran!r}, axis {axis!r}, "
                         f"block_size {block!r}")
    if scale.shape != want or zp.shape != want:
        raise _bad(path, f"tensor {name!r}: scale/zero_point shapes {scale.shape}/{zp.shape}, "
                         f"expected {want}")
    if scale.size and not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise _bad(path, f"tensor {name!r}: scales must be positive and finite")
    return QuantizedTensor(q, scale, zp, axis, block, orig, gran, m.get("method", "minmax"),
                           flat_blocks=flat)
