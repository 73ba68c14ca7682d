"""Integer arithmetic: int8 GEMM (MatMulInteger, QLinearMatMul), requantization, Linear.

The math (see ``csrc/gemm/gemm.h``): ``C = sum_k (a - za) * (b - zb)`` computed exactly in
int32 for every int8/uint8 combination. The kernels run one unsigned x signed core
(AVX-512 VNNI ``vpdpbusd``, AVX-VNNI, an exact AVX2 kernel, plain C; ``cpu_info()["kernels"]``
names the one in use, ``QUANTC_ISA`` caps it), with zero points applied through
row and column sums in wrapping 32-bit arithmetic. ``C`` is the true value whenever it fits
int32; otherwise it is the true value modulo 2**32 (like ONNX Runtime). Results are
bit-identical for every kernel variant and thread count.
"""
import numpy as np

from . import _C, _dtypes
from ._elementwise import _to_out

__all__ = ["quantize_multiplier", "requantize_fixed", "requantize", "matmul_integer",
           "qlinear_matmul", "pack_matrix", "PackedMatrix", "Linear", "smooth_factors"]

PackedMatrix = _C.PackedMatrix


def quantize_multiplier(real_multiplier):
    """TFLite ``QuantizeMultiplier``: ``real = multiplier * 2**(shift - 31)``.

    ``real_multiplier`` (scalar or array, finite, in ``[0, 2**31)``) is split with ``frexp``
    into ``q * 2**shift``, ``q`` in ``[0.5, 1)``; ``multiplier = round_half_away(q * 2**31)``
    in ``[2**30, 2**31)`` (a round-up to ``2**31`` is halved and ``shift`` incremented).
    ``0`` gives ``(0, 0)``; values below about ``2**-32`` (``shift < -31``) also give
    ``(0, 0)``, as TFLite flushes them. Returns two int32 arrays of the input's shape.
    """
    return _C.quantize_multiplier(real_multiplier)


def requantize_fixed(acc, multiplier, shift, zero_point, dtype="int8", *, axis=None, out=None):
    """int32 -> int8/uint8 with TFLite's fixed-point ``MultiplyByQuantizedMultiplier``.

    ``y = clamp(RDBP(SRDHM(acc * 2**max(shift, 0), multiplier), max(-shift, 0)) + zero_point)``
    where SRDHM is gemmlowp's SaturatingRoundingDoublingHighMul (``a*b / 2**31`` to
    nearest, ties rounded up: 0.5 -> 1, -0.5 -> 0; ``INT32_MIN * INT32_MIN`` saturates) and RDBP is
    RoundingDivideByPOT (ties away from zero). ``shift`` in ``[-31, 31]``; a positive shift
    multiplies ``acc`` in wrapping int32 arithmetic, as TFLite's ``x * (1 << shift)`` does.
    ``multiplier``/``shift``/``zero_point`` are scalars, or 1-D per channel along ``axis``.
    """
    return _C.requantize_fixed(acc, multiplier, shift, zero_point, dtype, axis=axis, out=out)


def requantize(acc, scale, zero_point, dtype="int8", *, axis=None, out=None):
    """int32 -> int8/uint8 through float32: ``clamp(rne(float32(acc) * scale) + zero_point)``.

    Float32 arithmetic and ties to even, as ONNX Runtime's MLAS requantization. ``scale`` and
    ``zero_point`` are scalars, or 1-D per channel along ``axis``.
    """
    return _C.requantize(acc, scale, zero_point, dtype, axis=axis, out=out)


def pack_matrix(b, b_zero_point=None):
    """Pack ``b`` (K, N) int8/uint8 once for this CPU's GEMM kernel -> :class:`PackedMatrix`.

    The packed form holds ``b`` in panels of 16 columns (the last one narrower) x groups of
    4 rows (K rounded up to 4 with zeros), plus one int32 column sum per column:
    ``data_nbytes`` is ``round_up(K, 4) * N + 64`` and ``nbytes`` adds ``4 * round_up(N, 16)``.
    It records the kernel variant it was packed for; using it after the ISA
    cap changed (``QUANTC_ISA``) raises ``ValueError``. ``b_zero_point`` (scalar or (N,)),
    if given, is used by every call that receives this matrix (a call may repeat it).
    """
    return _C.pack_matrix(b, b_zero_point)


def _batched_b(b):
    """b as an ndarray when it is a batch of matrices (ndim >= 3), else None."""
    if isinstance(b, PackedMatrix) or not hasattr(b, "__len__") and not hasattr(b, "ndim"):
        return None
    bb = b if isinstance(b, np.ndarray) else np.asarray(b)
    return bb if bb.ndim >= 3 else None


def _run_batched(kernel, a, b, out):
    """Apply the 2-D ``kernel(a_i, b_i)`` over NumPy-broadcast leading dimensions of
    ``a`` (..., M, K) and ``b`` (..., K, N), as ONNX MatMul does."""
    aa = a if isinstance(a, np.ndarray) else np.asarray(a)
    if aa.ndim == 0:
        raise ValueError("a: expected at least 1 dimension, got a 0-d array")
    vec = aa.ndim == 1
    if vec:
        aa = aa[None, :]
    try:
        batch = np.broadcast_shapes(aa.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"b: expected leading dimensions that broadcast with a's "
                         f"{aa.shape[:-2]}, got {b.shape[:-2]}") from None
    if aa.shape[-1] != b.shape[-2]:
        raise ValueError(f"b: expected {aa.shape[-1]} rows (a's K), got shape {b.shape}")
    a_b = np.broadcast_to(aa, batch + aa.shape[-2:])
    b_b = np.broadcast_to(b, batch + b.shape[-2:])
    shape = batch + (aa.shape[-2], b.shape[-1])
    res = None
    for idx in np.ndindex(*batch):
        r = kernel(a_b[idx], b_b[idx])
        if res is None:
            res = np.empty(shape, r.dtype)
        res[idx] = r
    if res is None:  # an empty batch: one call on zero operands checks them, gives the dtype
        r = kernel(np.zeros(aa.shape[-2:], aa.dtype), np.zeros(b.shape[-2:], b.dtype))
        res = np.empty(shape, r.dtype)
    if vec:
        res = res[..., 0, :]
    return _to_out(res, out)


def _vector_b(b):
    """b as an ndarray when it is one vector (K,), else None."""
    if isinstance(b, PackedMatrix) or not hasattr(b, "__len__") and not hasattr(b, "ndim"):
        return None
    bb = b if isinstance(b, np.ndarray) else np.asarray(b)
    return bb if bb.ndim == 1 else None


def _run_vector(kernel, a, b, out):
    """``kernel(a, b[:, None])`` without its last axis: a 1-D ``b`` as NumPy/ONNX MatMul take
    it ((..., M, K) @ (K,) -> (..., M); (K,) @ (K,) -> a 0-d array)."""
    aa = a if isinstance(a, np.ndarray) else np.asarray(a)
    if aa.ndim and aa.shape[-1] != b.shape[0]:
        raise ValueError(f"b: expected {aa.shape[-1]} values (a's K), got shape {b.shape}")
    return _to_out(kernel(aa, b[:, None])[..., 0], out)


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, out=None):
    """ONNX MatMulInteger: ``(a - a_zero_point) @ (b - b_zero_point)`` in int32.

    ``a``: int8/uint8 ``(..., M, K)`` (or ``(K,)``); ``b``: int8/uint8 ``(K, N)``, a batch
    ``(..., K, N)`` whose leading dimensions broadcast with ``a``'s as in NumPy/ONNX MatMul
    (each matrix of the batch runs through the 2-D kernel), one vector ``(K,)`` (the result
    then drops its last axis, as in NumPy), or a :class:`PackedMatrix`. ``a_zero_point``:
    scalar or ``(M,)`` (per row) of ``a``'s dtype (or a Python int in range);
    ``b_zero_point``: scalar or ``(N,)`` (per column) of ``b``'s dtype. Exact whenever the
    result fits int32, else the true value modulo 2**32.
    """
    bb, bv = _batched_b(b), _vector_b(b)
    if bb is not None or bv is not None:
        return (_run_batched if bv is None else _run_vector)(
            lambda x, y: _C.matmul_integer(x, y, a_zero_point, b_zero_point), a,
            bb if bv is None else bv, out)
    return _C.matmul_integer(a, b, a_zero_point, b_zero_point, out=out)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                   *, bias=None, relu=False, arithmetic="reference", out=None):
    """ONNX QLinearMatMul, bit-exact with onnx's reference evaluator (``arithmetic=
    "reference"``) or with onnxruntime (``"onnxruntime"``).

    ``acc = (a - a_zero_point) @ (b - b_zero_point) (+ bias)`` in int32, then
    ``y = clamp(rint(float64(acc) * float64(M[j]) + y_zero_point))`` with
    ``M[j] = float32(float32(a_scale * b_scale[j]) / y_scale)``: the reference multiplies the
    int32 matrix by that float32 multiplier in float64. ``b_scale``/``b_zero_point``: scalar or
    per column ``(N,)``; ``bias``: int32 ``(N,)``; ``relu`` clamps below at ``y_zero_point``.
    The output dtype is ``y_zero_point``'s (an int8 or uint8 NumPy scalar or array). ``M[j]``
    must be positive and finite in float32 (as in :func:`qlinear_conv`), else ValueError.
    ``a`` is ``(..., M, K)``; ``b`` is ``(K, N)``, a :class:`PackedMatrix`, a batch
    ``(..., K, N)`` broadcast against ``a``'s leading dimensions as ONNX QLinearMatMul does,
    or one vector ``(K,)`` (the result drops its last axis).

    ``arithmetic="onnxruntime"``: the product in float32, rounded before the zero point is
    added, as onnxruntime's QLinearMatMul and QGemm (MLAS) compute it on x86-64:
    ``y = clamp(rint(float32(float32(acc) * M[j])) + y_zero_point)``.
    """
    from ._conv import ort_arithmetic
    rq32 = ort_arithmetic(arithmetic)
    bb, bv = _batched_b(b), _vector_b(b)
    if bb is not None or bv is not None:
        return (_run_batched if bv is None else _run_vector)(
            lambda x, y: _C.qlinear_matmul(x, a_scale, a_zero_point, y, b_scale, b_zero_point,
                                           y_scale, y_zero_point, bias=bias, relu=relu,
                                           rq32=rq32),
            a, bb if bv is None else bv, out)
    return _C.qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
                             y_zero_point, bias=bias, relu=relu, out=out, rq32=rq32)


class Linear:
    """A dynamically quantized linear layer: ``y = x @ weight.T + bias`` with int8 GEMM.

    Weights: quantized once, symmetric with narrow range. ``dtype="int8"``: ``q`` in
    ``[-127, 127]``, zero point 0; ``dtype="uint8"``: the same values shifted by 128 (zero
    point 128). The scale is ``amax / 127`` per output row (``per_channel=True``) or over the
    whole matrix; an all-zero row gets scale 1.

    Activations: quantized on every call, asymmetric uint8 from the min/max of the whole
    batch (``act_granularity="per_tensor"``) or of each row of ``x`` on its own
    (``"per_row"``, per token: an outlier token no longer coarsens every other token's scale),
    exactly as ONNX ``DynamicQuantizeLinear`` (ONNX Runtime ``quantize_dynamic``):
    ``scale = (max(x_max, 0) - min(x_min, 0)) / 255``, ``zp = clamp(rne(-min/scale), 0, 255)``,
    ``q = clamp(rne(x / scale) + zp, 0, 255)`` (+-inf saturate and are left out of min/max;
    NaN raises ``ValueError``; a zero range gives scale 1, zero point 0). Then, in float32
    with each product rounded (no FMA), ``s = x_scale[i] * w_scale[j]`` and
    ``y = float32(acc) * s + bias[j]`` (``x_scale[i]`` is the same for every row per tensor).

    Error: with ``|x - x_hat| <= x_scale / 2`` and ``|w - w_hat| <= w_scale / 2`` per element,
    ``|y - y_float| <= sum_k (|x_k| w_scale/2 + |w_k| x_scale/2 + x_scale w_scale / 4)`` plus
    float32 rounding; the tests check this bound.

    SmoothQuant (``smooth=s``, from :func:`smooth_factors`): the weight is quantized as
    ``weight * s`` (input column ``k`` times ``s[k]``), and on every call ``x`` is first
    multiplied column by column by ``r = float32(1 / s)`` (each product rounded to float32);
    everything above then applies to ``x * r``. With per-token activations this is the
    SmoothQuant recipe for transformer layers whose activations have outlier channels.

    The packed weight belongs to the kernel variant chosen when the layer was built (see
    :func:`pack_matrix`): after the ISA cap changes, build the layer again.

    4-bit weights (``weight_dtype="int4"``/``"uint4"``, or :meth:`from_quantized` of a 4-bit
    blocked tensor) stay 4-bit in memory, packed once into 16-column panels
    (``csrc/q4gemm/q4gemm.h``); int4 has zero points ``zw = 0`` unless the tensor says
    otherwise, uint4 one per block. int8/uint8 tensors with several blocks per row
    (:meth:`from_quantized`) run the same formula with 8-bit ``w``. Each row ``j`` of ``w`` is cut into ``nb = ceil(K / bs)``
    blocks of ``bs = block_size`` values along in_features (the last one short when ``bs``
    does not divide K), each with a scale ``ws[j, b]`` and zero point ``zw[j, b]``.
    Activations are quantized on every call to int8, symmetric: ``xs = amax / 127`` (1 when
    ``amax`` is 0) with ``amax`` the largest finite ``|x|`` of each row (``"per_row"``) or of
    the whole input (``"per_tensor"``), ``q = clamp(rne(x / xs), -127, 127)`` (float32,
    +-inf saturate, NaN raises ``ValueError``). Then, exactly in int32 per block and in
    float32 across blocks (every operation rounded, no FMA, blocks in order)::

        acc[i, j, b] = sum_{k in block b} q[i, k] * (w[j, k] - zw[j, b])
        y[i, j] = 0;  for b in 0 .. nb-1:  y = y + float32(acc[i, j, b]) * (xs[i] * ws[j, b])
        y[i, j] = y + bias[j]                                (only when there is a bias)

    Every kernel variant (scalar, AVX2, AVX-512 VNNI), path (M = 1 decoding, M >= 16 from an
    unpacked panel) and thread count gives the same bits. Error: per block, as above with
    ``x_scale = xs`` and ``w_scale = ws[j, b]``.
    """

    __slots__ = ("_packed", "_weight_scale", "_bias", "_in_features", "_out_features", "_dtype",
                 "_per_row", "_q4", "_block_size", "_weight_zero_point", "_smooth",
                 "_inv_smooth")

    def __init__(self, packed, weight_scale, bias, in_features, out_features, dtype, *,
                 act_granularity="per_tensor"):
        """Wrap a packed weight; every argument is checked against ``packed`` here, and the
        attributes are read-only, so a layer can never run with parameters of another shape.

        ``packed``: a :class:`PackedMatrix` of shape (in_features, out_features);
        ``weight_scale``: positive finite values, one per output feature (a scalar means the
        same scale for every one); ``bias``: None or (out_features,) floats; ``dtype``: the
        packed matrix's dtype (int8 or uint8); ``act_granularity``: ``"per_tensor"`` or
        ``"per_row"`` (see the class doc).
        """
        per_row = _act_granularity(act_granularity)
        if not isinstance(packed, PackedMatrix):
            raise TypeError(f"packed: expected a PackedMatrix, got {type(packed).__name__}")
        k, n = packed.shape
        for name, v, want in (("in_features", in_features, k), ("out_features", out_features, n)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
            if int(v) != want:
                raise ValueError(f"{name}: expected {want} (packed has shape {packed.shape}), "
                                 f"got {int(v)}")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected 'int8' or 'uint8', got {dtype!r}") from None
        if dt != packed.dtype:
            raise ValueError(f"dtype: expected {packed.dtype.name} (the packed matrix's dtype), "
                             f"got {dtype!r}")
        ws = np.asarray(weight_scale)
        if ws.dtype.kind not in "fiu" and not _dtypes.is_ml_float(ws.dtype):
            raise TypeError(f"weight_scale: expected real numbers, got {ws.dtype}")
        if ws.ndim == 0:
            ws = np.full(n, ws, dtype=np.float32)
        ws = np.array(ws, dtype=np.float32, order="C")  # a private copy, made read-only below
        if ws.shape != (n,):
            raise ValueError(f"weight_scale: expected a scalar or shape ({n},) (out_features), "
                             f"got shape {ws.shape}")
        bad = ~(np.isfinite(ws) & (ws > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"weight_scale: expected positive finite float32 values, got "
                             f"{ws[i]} at index {i}")
        bias = _linear_bias(bias, n)
        ws.flags.writeable = False
        self._packed = packed
        self._weight_scale = ws
        self._bias = bias
        self._in_features = int(k)
        self._out_features = int(n)
        self._dtype = dt
        self._per_row = per_row
        self._q4 = None
        self._block_size = None
        self._weight_zero_point = None
        self._smooth = self._inv_smooth = None

    packed = property(lambda self: self._packed,
                      doc="The packed weight (a PackedMatrix; for 4-bit weights the packed "
                          "4-bit panels, an opaque capsule).")
    weight_scale = property(lambda self: self._weight_scale,
                            doc="float32 weight scales (read-only): (out_features,), or "
                                "(out_features, blocks) for 4-bit weights.")
    weight_zero_point = property(
        lambda self: self._weight_zero_point,
        doc="4-bit weights: int8 (out_features, blocks) zero points, or None (all zero); "
            "None for int8 weights (the PackedMatrix holds them).")
    block_size = property(lambda self: self._block_size,
                          doc="Weights per block along in_features (4-bit weights), else None.")
    bias = property(lambda self: self._bias, doc="float32 (out_features,) bias or None.")
    in_features = property(lambda self: self._in_features)
    out_features = property(lambda self: self._out_features)
    dtype = property(lambda self: self._dtype,
                     doc="The weight dtype (int8 or uint8; ml_dtypes int4 or uint4).")
    weight_dtype = property(lambda self: self._dtype.name,
                            doc='The weight dtype\'s name: "int8", "uint8", "int4" or "uint4".')
    act_granularity = property(
        lambda self: "per_row" if self._per_row else "per_tensor",
        doc='How activations are quantized: "per_tensor" or "per_row" (one scale per row).')

    @classmethod
    def from_float(cls, weight, bias=None, *, per_channel=True, dtype="int8",
                   weight_dtype="int8", block_size=None, act_granularity="per_tensor",
                   smooth=None):
        """Quantize ``weight`` (out_features, in_features) and pack it; see the class doc.

        ``weight_dtype="int8"`` (default): int8 weights of ``dtype`` ("int8"/"uint8"), one
        scale per output row (``per_channel``) or per tensor. ``weight_dtype="int4"`` or
        ``"uint4"``: 4-bit weights in blocks of ``block_size`` (a multiple of 32: 32, 64,
        128, ...) consecutive values along in_features, quantized with min/max per block as
        ``qc.quantize_weights(..., granularity="per_block")`` does (int4 symmetric with
        narrow range, values in [-7, 7]; uint4 asymmetric with a zero point per block); a
        short last block when ``block_size`` does not divide in_features. See the class doc
        for the 4-bit formula.

        ``smooth``: None, or SmoothQuant factors ``s`` (in_features,) (positive, finite; see
        :func:`smooth_factors`): the layer quantizes ``weight * s`` (column ``k`` times
        ``s[k]``, in float32) and divides the activations by ``s`` on every call (see the
        class doc), moving the range of outlier input channels from the activations into the
        weights; ``y`` is unchanged up to rounding.
        """
        _act_granularity(act_granularity)
        from ._elementwise import _check_flag
        _check_flag(per_channel, "per_channel")  # "no" was truthy
        if not isinstance(weight_dtype, str):  # a dtype by its name (an array is refused)
            try:
                if weight_dtype is None:  # (np.dtype(None) is float64)
                    raise TypeError
                weight_dtype = np.dtype(weight_dtype).name
            except TypeError:
                raise TypeError(f"weight_dtype: expected 'int8', 'int4' or 'uint4', got "
                                f"{type(weight_dtype).__name__}") from None
        if weight_dtype not in ("int8", "int4", "uint4"):
            raise ValueError(f"weight_dtype: expected 'int8', 'int4' or 'uint4', got "
                             f"{weight_dtype!r}")
        if weight_dtype != "int8":
            _check_block_size(block_size)
        elif block_size is not None:
            raise ValueError(f"block_size: only used with weight_dtype 'int4' or 'uint4', got "
                             f"{block_size!r} with weight_dtype='int8'")
        w = np.asarray(weight)
        if not _dtypes.is_float(w.dtype):
            raise TypeError(f"weight: expected a float array, got {w.dtype}")
        if w.ndim != 2:
            raise ValueError(f"weight: expected shape (out_features, in_features), got {w.shape}")
        w = w.astype(np.float32)
        if not np.all(np.isfinite(w)):
            bad = np.argwhere(~np.isfinite(w))
            raise ValueError(f"weight: expected finite values, got {w[tuple(bad[0])]} "
                             f"at index {tuple(int(i) for i in bad[0])}")
        s = _smooth_arg(smooth, w.shape[1])
        if s is not None:
            with np.errstate(over="ignore"):
                w = w * s
            if not np.all(np.isfinite(w)):
                raise ValueError("smooth: weight * smooth overflows float32")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected 'int8' or 'uint8', got {dtype!r}") from None
        if dt not in (np.int8, np.uint8):
            raise ValueError(f"dtype: expected 'int8' or 'uint8', got {dtype!r}")
        if weight_dtype != "int8":
            if 0 in w.shape:
                raise ValueError(f"weight: expected a non-empty matrix, got shape {w.shape}")
            from .weights import _quantize_tensor
            qt, _, _ = _quantize_tensor("weight", w, weight_dtype, "per_block", 1,
                                        int(block_size), weight_dtype == "int4", True,
                                        "minmax", 99.99)
            return cls.from_quantized(qt, bias, act_granularity=act_granularity, smooth=s)
        n, k = w.shape
        if per_channel:
            amax = np.max(np.abs(w), axis=1) if k else np.zeros(n, np.float32)
        else:
            amax = np.full(n, np.max(np.abs(w)) if w.size else 0.0, np.float32)
        scale = (amax / np.float32(127)).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale[:, None]), -127, 127)
        if dt == np.uint8:
            packed = pack_matrix((q + 128).astype(np.uint8).T, np.uint8(128))
        else:
            packed = pack_matrix(q.astype(np.int8).T)
        b = None
        if bias is not None:
            b = np.asarray(bias)
            if b.dtype.kind not in "fiu":
                raise TypeError(f"bias: expected real numbers or None, got {b.dtype}")
            b = np.ascontiguousarray(b, dtype=np.float32)
            if b.shape != (n,):
                raise ValueError(f"bias: expected shape ({n},), got {b.shape}")
        return cls(packed, scale, b, k, n, dt, act_granularity=act_granularity)._smoothed(s)

    @classmethod
    def from_quantized(cls, qt, bias=None, *, act_granularity="per_tensor", smooth=None):
        """Run a :class:`QuantizedTensor` of shape (out_features, in_features) directly.

        The integer weights are packed as they are (no float copy, no re-quantization): the
        layer computes with ``w_hat = (q - zero_point) * scale`` exactly as
        ``qt.dequantize()`` would give it. Supported: int8/uint8 with one scale for the whole
        tensor, one per output row (per-channel along axis 0), or blocks as long as a row
        (``block_size >= in_features``, one block per row); any zero points. int4/uint4
        weights blocked along in_features (``quantize_weights(..., dtype="int4",
        granularity="per_block", block_size=...)``), and int8/uint8 weights with several
        blocks per row, ``block_size`` a multiple of 32 (a short last block allowed), run on
        the blocked kernels with the 4-bit formula of the class doc (int8 per-row symmetric
        activations, exact int32 per block), the weights kept 4-bit (or 8-bit) in memory.
        Other schemes (per-channel along axis 1, 4-bit per tensor or per channel, block sizes
        that are not multiples of 32) raise ``ValueError``.

        ``smooth``: None, or the SmoothQuant factors ``s`` (in_features,) that ``qt`` was
        quantized with (``qt`` holds ``weight * s``): the layer divides its activations by
        ``s`` (see the class doc).
        """
        from .weights import QuantizedTensor
        if not isinstance(qt, QuantizedTensor):
            raise TypeError(f"qt: expected a QuantizedTensor, got {type(qt).__name__}")
        _act_granularity(act_granularity)
        smooth_s = None
        if len(qt.shape) == 2:
            smooth_s = _smooth_arg(smooth, qt.shape[1])
        elif smooth is not None:
            raise ValueError(f"qt: expected shape (out_features, in_features), got {qt.shape}")
        if qt.dtype.name in ("int4", "uint4"):
            return cls._from_blocked(qt, bias, act_granularity)._smoothed(smooth_s)
        if qt.dtype not in (np.int8, np.uint8):
            raise ValueError(f"qt: Linear runs int8/uint8 weights, got a {qt.dtype} "
                             f"QuantizedTensor ({qt.scheme})")
        if len(qt.shape) != 2:
            raise ValueError(f"qt: expected shape (out_features, in_features), got {qt.shape}")
        n, k = qt.shape
        q = np.asarray(qt.q).reshape(n, k)
        s = np.asarray(qt.scale, np.float32)
        z = np.asarray(qt.zero_point)
        if qt.axis is None:
            if s.size != 1 or z.size != 1:
                raise ValueError(f"qt: a per-tensor scale and zero point must be single values, "
                                 f"got shapes {s.shape} and {z.shape}")
            s, z = np.full(n, s.reshape(()), np.float32), z.reshape(())
        elif qt.block_size is None and qt.axis == 0:
            if s.size != n or z.size != n:
                raise ValueError(f"qt: per-channel scale/zero_point must have {n} values "
                                 f"(out_features), got shapes {s.shape} and {z.shape}")
            s, z = s.reshape(n), z.reshape(n)
        elif qt.block_size is not None and qt.block_size >= k and qt.axis in (1, -1):
            if s.size != n or z.size != n:
                raise ValueError(f"qt: one block per row needs {n} scales/zero points, got "
                                 f"shapes {s.shape} and {z.shape}")
            s, z = s.reshape(n), z.reshape(n)
        elif qt.block_size is not None and qt.axis in (1, -1):
            return cls._from_blocked(qt, bias, act_granularity)._smoothed(smooth_s)
        else:
            raise ValueError(f"qt: scheme {qt.scheme} of shape {qt.shape} is not supported by "
                             "Linear (supported: int8/uint8 per tensor, per channel along "
                             "axis 0, or one block per row)")
        z = z.astype(qt.dtype)
        if not np.any(z):
            z = None
        elif np.all(z == z.flat[0]):
            z = z.flat[0]
        packed = pack_matrix(q.T, z)
        if bias is not None:
            b = np.asarray(bias)
            if b.dtype.kind not in "fiu":
                raise TypeError(f"bias: expected real numbers or None, got {b.dtype}")
            if b.shape != (n,):
                raise ValueError(f"bias: expected shape ({n},) (out_features) or None, got "
                                 f"shape {b.shape}")
        return cls(packed, s, bias, k, n, qt.dtype,
                   act_granularity=act_granularity)._smoothed(smooth_s)

    @classmethod
    def _from_blocked(cls, qt, bias, act_granularity):
        """A blocked QuantizedTensor (int4/uint4, or int8/uint8 with several blocks per row)
        packed for the q4gemm kernels."""
        per_row = _act_granularity(act_granularity)
        bits = 4 if qt.dtype.name in ("int4", "uint4") else 8
        if len(qt.shape) != 2:
            raise ValueError(f"qt: expected shape (out_features, in_features), got {qt.shape}")
        n, k = qt.shape
        if qt.block_size is None or qt.axis not in (1, -1):
            raise ValueError(f"qt: scheme {qt.scheme} is not supported by Linear: 4-bit weights "
                             "must be blocked along in_features (quantize_weights(..., "
                             "granularity='per_block', block_size=32))")
        if qt.block_size % 32 or qt.block_size > 65536:
            raise ValueError(f"qt: scheme {qt.scheme} is not supported by Linear (block_size "
                             f"{qt.block_size}: the blocked {bits}-bit kernels take multiples of "
                             "32 up to 65536)")
        if n == 0 or k == 0:
            raise ValueError(f"qt: expected a non-empty matrix, got shape {qt.shape}")
        nb = -(-k // qt.block_size)
        s = np.asarray(qt.scale, np.float32)
        z = np.asarray(qt.zero_point)
        if s.size != n * nb or z.size != n * nb:
            raise ValueError(f"qt: blocks of {qt.block_size} need {n}x{nb} scales and zero "
                             f"points, got shapes {s.shape} and {z.shape}")
        signed = qt.dtype.name in ("int4", "int8")
        it = np.uint8 if qt.dtype == np.uint8 else np.int8
        s = np.ascontiguousarray(s.reshape(n, nb))
        z = np.ascontiguousarray(z.reshape(n, nb).astype(it))
        if signed and not np.any(z):
            z = None
        q = np.ascontiguousarray(np.asarray(qt.q).reshape(n, k).astype(it))
        packed = _C._q4_pack(q, s, z, qt.block_size, signed, bits)
        bias = _linear_bias(bias, n)
        self = object.__new__(cls)
        s.flags.writeable = False
        if z is not None:
            z.flags.writeable = False
        self._packed = packed
        self._q4 = packed
        self._weight_scale = s
        self._weight_zero_point = z
        self._bias = bias
        self._in_features = int(k)
        self._out_features = int(n)
        self._dtype = qt.dtype
        self._per_row = per_row
        self._block_size = int(qt.block_size)
        self._smooth = self._inv_smooth = None
        return self

    smooth = property(lambda self: self._smooth,
                      doc="float32 (in_features,) SmoothQuant factors (read-only), or None.")

    def _smoothed(self, s):
        """Attach the SmoothQuant factors ``s`` (checked by :func:`_smooth_arg`) or None."""
        if s is not None:
            inv = (np.float32(1) / s).astype(np.float32)
            inv.flags.writeable = False
            self._smooth, self._inv_smooth = s, inv
        return self

    def __call__(self, x, *, out=None):
        """``x`` float (..., in_features) -> float32 (..., out_features) (or into ``out``)."""
        if self._inv_smooth is not None:
            xa = np.asarray(x)
            # anything else is left to the kernel binding, which names what is wrong
            if ((xa.dtype.kind in "iuf" or _dtypes.is_ml_float(xa.dtype)) and xa.ndim
                    and xa.shape[-1] == self._in_features):
                x = np.multiply(xa.astype(np.float32, copy=False), self._inv_smooth)
        if self._q4 is not None:
            return _C._q4_linear_forward(x, self._q4, self._bias, out, self._per_row)
        return _C._linear_forward(x, self.packed, self.weight_scale, self.bias, out,
                                  self._per_row)

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={self.dtype.name}, act_granularity='{self.act_granularity}', "
                + ("smooth=True, " if self._smooth is not None else "")
                + (f"block_size={self._block_size})" if self._q4 is not None else
                   f"variant='{self.packed.variant}')"))


def _check_block_size(v):
    """block_size of a 4-bit Linear: a positive multiple of 32 (at most 65536)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"block_size: expected an int (32, 64, 128, ...) for 4-bit weights, "
                        f"got {type(v).__name__}")
    if v < 32 or v % 32 or v > 65536:
        raise ValueError(f"block_size: expected a multiple of 32 in [32, 65536] (32, 64, 128, "
                         f"...), got {v}")


def _float_vector(v, name, n, dim):
    """A float32 (n,) C-order copy of the real numbers ``v`` (argument ``name``; ``dim`` names
    n, e.g. "out_features"), or TypeError/ValueError naming the argument."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu" and not _dtypes.is_ml_float(a.dtype):
        raise TypeError(f"{name}: expected real numbers or None, got {a.dtype}")
    out = np.array(a, dtype=np.float32, order="C")
    if out.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) ({dim}) or None, got shape "
                         f"{out.shape}")
    return out


def _linear_bias(bias, n):
    """A Linear's bias: None, or a read-only float32 (n,) copy of real numbers."""
    if bias is None:
        return None
    bias = _float_vector(bias, "bias", n, "out_features")
    bias.flags.writeable = False
    return bias


def _smooth_arg(smooth, k):
    """A Linear's ``smooth``: None, or a read-only float32 (k,) copy of positive finite
    numbers."""
    if smooth is None:
        return None
    s = _float_vector(smooth, "smooth", k, "in_features")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        bad = ~(np.isfinite(s) & (s > 0) & np.isfinite(np.float32(1) / s))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"smooth: expected positive finite float32 values whose reciprocal "
                         f"is finite, got {s[i]} at index {i}")
    s.flags.writeable = False
    return s


def smooth_factors(act_absmax, weight, *, alpha=0.5):
    """SmoothQuant factors for a Linear's ``smooth=``: float32 (in_features,).

    ``act_absmax``: the largest ``|x|`` of each input channel over calibration data
    (in_features,); ``weight``: the float (out_features, in_features) weight. Per input
    channel ``k`` (Xiao et al., 2023): ``s[k] = a[k]**alpha / w[k]**(1 - alpha)`` with
    ``a[k] = act_absmax[k]`` and ``w[k] = max_j |weight[j, k]|``, computed in float64 and
    clamped to ``[1e-4, 1e4]``; a channel where ``a`` or ``w`` is 0 gets 1. Dividing ``x`` by
    ``s`` and multiplying the weight columns by ``s`` leaves ``x @ weight.T`` unchanged and
    gives the activations and the weights the range ``(a * w) ** 0.5`` per channel at
    ``alpha = 0.5``: outlier channels of the activations (typical of transformer layers)
    stop coarsening the per-token activation scale. ``alpha`` in ``[0, 1]``: 0 leaves the
    activations alone (``s = 1 / w``), 1 moves all of their range into the weights.

    Example::

        amax = np.max([np.abs(x).max(axis=0) for x in calibration_inputs], axis=0)
        s = qc.smooth_factors(amax, w)
        layer = qc.Linear.from_float(w, b, act_granularity="per_row", smooth=s)
    """
    w = np.asarray(weight)
    if not _dtypes.is_float(w.dtype):
        raise TypeError(f"weight: expected a float array, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"weight: expected shape (out_features, in_features), got {w.shape}")
    a = np.asarray(act_absmax)
    if a.dtype.kind not in "fiu" and not _dtypes.is_ml_float(a.dtype):
        raise TypeError(f"act_absmax: expected real numbers, got {a.dtype}")
    if a.shape != (w.shape[1],):
        raise ValueError(f"act_absmax: expected shape ({w.shape[1]},) (in_features), got "
                         f"shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a) & (a >= 0)):
        i = int(np.argmax(~(np.isfinite(a) & (a >= 0))))
        raise ValueError(f"act_absmax: expected finite values >= 0, got {a[i]} at index {i}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha: expected a number in [0, 1], got {type(alpha).__name__}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
    wmax = np.abs(w.astype(np.float64)).max(axis=0) if w.shape[0] else np.zeros(w.shape[1])
    if not np.all(np.isfinite(wmax)):
        raise ValueError("weight: expected finite values")
    ok = (a > 0) & (wmax > 0)
    s = np.ones(w.shape[1])
    s[ok] = a[ok] ** alpha / wmax[ok] ** (1 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


def _act_granularity(v):
    """True for "per_row", False for "per_tensor"; anything else raises."""
    if not isinstance(v, str):
        raise TypeError(f"act_granularity: expected 'per_tensor' or 'per_row', got "
                        f"{type(v).__name__}")
    if v not in ("per_tensor", "per_row"):
        raise ValueError(f"act_granularity: expected 'per_tensor' or 'per_row', got {v!r}")
    return v == "per_row"
