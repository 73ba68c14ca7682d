"""Full-integer models: calibrate a float :class:`~quantc.Model`, convert it, run it in int8.

:func:`quantize_model` takes a float model to a :class:`QuantizedModel` in three steps:

1. **Plan** (once, on the float graph): nodes that read only constants are computed (a
   constant may be a graph output); a ReduceMean over the spatial axes of a 4-D tensor
   becomes a GlobalAveragePool (and a Flatten for keepdims=0); BatchNormalization following
   a Conv or Gemm is folded into its weights and bias (in float64, rounded once to float32);
   a Relu, or a Clip whose range contains 0 (ReLU6), following a Conv, Gemm, MatMul or Add
   whose result nobody else reads is fused into it as its ``activation`` (several in a row,
   as Relu then Clip(0, 6), fuse into one clamp with the tightest bounds). The planned graph
   is still a float model.
2. **Calibrate**: the planned model runs in float over the calibration batches; an observer
   per activation (``method``: minmax, moving_average, percentile, entropy, mse) records its
   range, one batch at a time (memory does not grow with the number of batches).
3. **Convert**: activations get per-tensor asymmetric qparams (``activation_dtype``), weights
   symmetric int8 with narrow range (``[-127, 127]``, scale ``amax / 127``, per output
   channel or per tensor), biases int32 with scale ``x_scale * w_scale`` (float32 product;
   ``rne(bias / scale)`` computed in float64, saturated to int32). Ops that only move values
   (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Relu, Clip, Identity) keep
   their input's qparams, unless a range is given for their output (see
   :func:`quantize_model`'s ``ranges``).

At run time Conv, Gemm/MatMul (constant weights), AveragePool, GlobalAveragePool, Add, Mul (of
two activations) and Concat run on quantc's int8 kernels (``qlinear_conv``, ``qlinear_matmul``,
``avg_pool2d``, ``global_avg_pool``, ``qlinear_add``, ``qlinear_mul``, ``qlinear_concat``) with
the fused activation applied by the requantization's clamp (and, where the output's range is
wider than a fused Clip, a clamp of the int8 values at the quantized bounds), MaxPool and the
reshapes on the int8 values themselves, and the element-wise Sigmoid, Tanh, HardSigmoid,
HardSwish and LeakyRelu as a lookup in a table of the 256 input codes (dequantized, through the
float op, quantized once at conversion); no float round trip happens between int8 ops.
Activations that run from one convolution to the next (through Relu, Clip, a table op or an Add
or Mul of equal shapes) are kept NHWC, the layout the GEMM convolution works in, so it skips
its transposes; every output, ``run(observe=...)`` and the report still see NCHW. Any other op
(Softmax, a Mul by a constant, a BatchNormalization with nothing to fold into, a Gemm with a
non-constant B, with transA or with a C that varies along the rows) runs in float between a
dequantize and a quantize; :meth:`QuantizedModel.report` marks those layers ``float``. The int8
kernels requantize with onnxruntime's arithmetic by default (``arithmetic="onnxruntime"``:
float32 products rounded before the zero point is added, and the formulas of its QLinearAdd,
QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool and QLinearConcat), so
:meth:`QuantizedModel.to_onnx` runs in onnxruntime to the same values;
``arithmetic="reference"`` follows the ONNX reference evaluator instead.
"""
import functools
import json
import math
import os
import sys

import numpy as np

from . import _C, _conv, _elementwise, _gemm, _table
from .calibration import (HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                          PercentileObserver)
from ._elementwise import QParams, choose_qparams
from .model import (FUSABLE, UNARY, Model, Node, _fmt_shape, _run_reshape, activation_bounds,
                    evaluate, namer, reduce_axes, squeezed_shape, tensor_names, transpose_perm,
                    unsqueezed_shape)

__all__ = ["quantize_model", "QuantizedModel", "load_model"]

METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse")
FORMAT = "quantc.model"
# 2: a Concat may have constant operands and a graph output may be a constant; files of models
# without either are written as version 1, which every quantc reads (an older one refuses a
# version 2 file by its version instead of failing when it runs). 3: a clamp older quantc
# does not apply: a float output computed by an int8 layer clamped to its given (trained)
# range (info["given_ranges"]), or a fused Clip whose bounds fall inside its output's range
# (a range given wider, a blank calibration); written only for such models (an older quantc
# would run them without the clamp). 4: an op that only moves or clamps values (Flatten,
# Relu, ...) whose output has other qparams than its input (a range given for the output
# where its input has its own): requantized after the op, which older quantc would not do.
# 5: arithmetic "onnxruntime" (the graph's "arithmetic"; a file without it is "reference",
# what every older quantc computes) in a model with an int8 op it changes (a Conv, Gemm or
# MatMul with an int8 output, an Add, a pooling, a Concat), which older quantc would run with
# the reference's. 6: a Mul of two activations runs in int8 (qlinear_mul), where older quantc
# ran it in float (and a file before version 6 still does, whatever its arithmetic: see
# load_model)
FORMAT_VERSION = 6
# ops whose output has the qparams of their (first) input: they only move or clamp values
_PASSTHROUGH = ("MaxPool", "Flatten", "Reshape", "Relu", "Clip", "Identity", "Dropout",
                "Transpose", "Squeeze", "Unsqueeze")
_REPORT_SAMPLES = 256  # inputs kept for the report when the calibration data is an iterator


# ---------------------------------------------------------------------------------------------
# planning: BatchNorm folding and activation fusion


def fold_batch_norm(w, b, gamma, beta, mean, var, eps):
    """Fold ``BatchNormalization(conv(x, w) + b)`` into ``(w', b')``, in float64 rounded once.

    ``k = gamma / sqrt(var + eps)``; ``w' = w * k`` along the output channel (axis 0 of a conv
    weight, the output column of a Gemm weight given as (out, in)); ``b' = (b - mean) * k + beta``.
    """
    k = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + np.float64(np.float32(eps)))
    shape = (-1,) + (1,) * (w.ndim - 1)
    w2 = (w.astype(np.float64) * k.reshape(shape)).astype(np.float32)
    b0 = np.zeros(k.shape, np.float64) if b is None else b.astype(np.float64)
    b2 = ((b0 - mean.astype(np.float64)) * k + beta.astype(np.float64)).astype(np.float32)
    return w2, b2


def _is_quantizable(node, model, init=None):
    """Does this node run on an int8 kernel (else: float between dequantize and quantize)?
    ``init``: the constants to look in (default: the model's)."""
    init = model.initializers if init is None else init
    if node.op == "Conv":
        return True
    if node.op == "Gemm":
        a = node.attrs
        return (not int(a.get("transA", 0)) and node.inputs[1] in init
                and (len(node.inputs) < 3 or not node.inputs[2]
                     or (node.inputs[2] in init and _row_bias(init[node.inputs[2]]))))
    if node.op == "MatMul":
        b = init.get(node.inputs[1])
        return b is not None and b.ndim == 2 and len(model.shapes[node.inputs[0]]) >= 2
    if node.op == "Clip":
        lo, hi = _clip_bounds(node, init)
        return (lo is None or lo <= 0) and (hi is None or hi >= 0)
    if node.op == "Mul":  # of two activations (a constant factor stays exact, in float)
        return len(node.inputs) == 2 and not any(i in init for i in node.inputs)
    return node.op in ("AveragePool", "GlobalAveragePool", "Concat", "Add") + _PASSTHROUGH \
        + tuple(UNARY)


def _row_bias(c):
    """Is a Gemm's constant C one value per output column (shape (), (N,), (1,), (1, N) or
    (1, 1)), so that it can be the int32 bias? (A C of shape (M, N) or (M, 1) varies along
    the rows: that Gemm runs in float.)"""
    return c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1)


def _clip_bounds(node, init):
    """(lo, hi) of a Clip node (None where unbounded, an infinite bound included);
    ``init``: the model's constants."""
    vals = []
    for i, key in ((1, "min"), (2, "max")):
        if len(node.inputs) > i and node.inputs[i]:
            v = float(init[node.inputs[i]].reshape(()))
        else:
            v = None if node.attrs.get(key) is None else float(node.attrs[key])
        vals.append(None if v is None or math.isinf(v) else v)
    return tuple(vals)


def _gemm_weight(node, model, init=None):
    """A quantizable Gemm/MatMul's weight as (out, in) float32 and its bias (or None);
    ``init``: the constants to look in (default: the model's)."""
    init = model.initializers if init is None else init
    w = init[node.inputs[1]]
    if node.op == "MatMul" or not int(node.attrs.get("transB", 0)):
        w = w.T
    w = np.ascontiguousarray(w, np.float32)
    bias = None
    if node.op == "MatMul" and len(node.inputs) > 2:  # planned MatMul + Add(bias)
        bias = init[node.inputs[2]].astype(np.float32).reshape(-1)
    if node.op == "Gemm":
        alpha = np.float32(node.attrs.get("alpha", 1.0))
        if alpha != 1:
            w = (w * alpha).astype(np.float32)
        if len(node.inputs) > 2 and node.inputs[2]:
            c = init[node.inputs[2]].astype(np.float32)
            c = c.reshape(c.shape[-1:])  # (1, N) -> (N,): see _row_bias
            bias = np.broadcast_to(c * np.float32(node.attrs.get("beta", 1.0)),
                                   (w.shape[0],)).astype(np.float32)
    return w, bias


def _fold_constants(model, init):
    """The nodes of ``model`` that read a graph input, directly or not; the others (every
    input a constant) are computed here, their outputs added to ``init``. Integer constants
    keep their type through the ops that only move values (Identity, Concat, ...)."""
    kept = []
    for n in model.nodes:
        if not all(not i or i in init for i in n.inputs):
            kept.append(Node(n.op, n.inputs, n.outputs, dict(n.attrs), n.name))
            continue
        ins = [init[i] if i else None for i in n.inputs]
        data = ins if n.op == "Concat" else ins[:1]  # (a Reshape's shape stays an int)
        ints = n.op in ("Concat", "Reshape", "Flatten", "Identity", "Dropout", "Transpose",
                        "Squeeze", "Unsqueeze") and all(
            a.dtype.kind in "iu" for a in data)
        if not ints:
            ins = [a if a is None or (n.op in ("Reshape", "ReduceMean", "Squeeze", "Unsqueeze")
                                      and k == 1)
                   else a.astype(np.float32) for k, a in enumerate(ins)]
        res = evaluate(n, ins)[0]
        init[n.outputs[0]] = np.asarray(res) if ints else np.asarray(res, np.float32)
    return kept


def _spatial_means(nodes, model, init, fresh):
    """``nodes`` with each ReduceMean over the two spatial axes of a 4-D tensor (what torch's
    dynamo exporter writes for AdaptiveAvgPool2d(1)) as a GlobalAveragePool, followed by a
    Flatten for keepdims=0: the same values, on the int8 pooling kernel."""
    out, node_name = [], namer(n.name for n in nodes)
    for n in nodes:
        shape = model.shapes.get(n.inputs[0]) if n.op == "ReduceMean" else None
        axes_in = n.inputs[1] if len(n.inputs) > 1 and n.inputs[1] else None
        if shape is None or len(shape) != 4 or \
                reduce_axes(n, None if axes_in is None else init[axes_in], 4) != (2, 3):
            out.append(n)
        elif int(n.attrs.get("keepdims", 1)):
            out.append(Node("GlobalAveragePool", n.inputs[:1], n.outputs, {}, n.name))
        else:
            pooled = fresh(n.outputs[0] + ".pooled")
            out.append(Node("GlobalAveragePool", n.inputs[:1], (pooled,), {}, n.name))
            out.append(Node("Flatten", (pooled,), n.outputs, {"axis": 1},
                            node_name(n.name + ".flatten")))
    return out


def _planned_gemm(n, init):
    """Is Gemm node ``n`` already in the planned form x @ w.T + b (a planned model planned
    again keeps its tensors and their names)?"""
    a = n.attrs
    if set(a) - {"transB", "activation"} or int(a.get("transB", 0)) != 1:
        return False
    if len(n.inputs) < 3 or not n.inputs[2]:
        return True
    b, w = init[n.inputs[2]], init[n.inputs[1]]
    return b.ndim == 1 and b.shape[0] == w.shape[0]


def plan(model, *, keep=()):
    """The planned float model: BatchNorm folded, Relu/ReLU6 fused, nodes of constants
    computed (see the module doc). ``keep``: tensor names an activation in a row is not
    fused across (those with a given range: QAT's FakeQuantize after a ReLU before a
    ReLU6)."""
    init = dict(model.initializers)
    nodes = _fold_constants(model, init)
    fresh = namer(tensor_names(model))  # new tensors never take a name the model uses
    nodes = _spatial_means(nodes, model, init, fresh)
    for n in nodes:  # int8 Gemms as x @ w.T + bias: w (out, in) with alpha, bias with beta
        if n.op == "Gemm" and _is_quantizable(n, model, init) and not _planned_gemm(n, init):
            w, b = _gemm_weight(n, model, init)
            ins = [n.inputs[0], fresh(n.name + ".weight_t")]
            init[ins[1]] = w
            if b is not None:
                ins.append(fresh(n.name + ".bias_t"))
                init[ins[2]] = b
            act = n.attrs.get("activation")
            n.inputs, n.attrs = tuple(ins), {"transB": 1}
            if act is not None:
                n.attrs["activation"] = act
    consumers = model.consumers()
    outputs = set(model.outputs)
    producer = {o: n for n in nodes for o in n.outputs}
    dropped = set()
    for node in nodes:  # MatMul + Add(constant row vector): the MatMul's int32 bias
        if node.op != "Add" or sum(i in init for i in node.inputs) != 1:
            continue
        k = 0 if node.inputs[1] in init else 1
        src, cname = producer.get(node.inputs[k]), node.inputs[1 - k]
        if src is None or src.op != "MatMul" or len(src.inputs) > 2 \
                or "activation" in src.attrs or node.inputs[k] in outputs \
                or len(consumers.get(node.inputs[k], ())) != 1 \
                or not _is_quantizable(src, model, init):
            continue
        c, out_shape = init[cname], model.shapes[node.inputs[k]]
        n_out = init[src.inputs[1]].shape[1]
        if c.size != n_out or c.ndim > len(out_shape) or any(d != 1 for d in c.shape[:-1]):
            continue  # not one value per output column: stays an int8 Add
        bname = fresh(src.name + ".bias_t")
        init[bname] = c.astype(np.float32).reshape(-1)
        src.inputs = src.inputs + (bname,)
        if "activation" in node.attrs:
            src.attrs["activation"] = node.attrs["activation"]
        src.outputs = node.outputs
        producer.update({o: src for o in node.outputs})
        dropped.add(node.name)
    for node in nodes:
        src = producer.get(node.inputs[0]) if node.inputs else None
        sole = (src is not None and len(consumers.get(node.inputs[0], ())) == 1
                and node.inputs[0] not in outputs)
        if not sole or src.name in dropped:
            continue
        if node.op == "BatchNormalization" and src.op in ("Conv", "Gemm") \
                and "activation" not in src.attrs and _is_quantizable(src, model, init):
            gamma, beta, mean, var = (init[i] for i in node.inputs[1:5])
            eps = node.attrs.get("epsilon", 1e-5)
            # (a Gemm's weight is (out, in) with transB=1 since above, as a Conv's)
            w = init[src.inputs[1]]
            b = init[src.inputs[2]] if len(src.inputs) > 2 and src.inputs[2] else None
            w2, b2 = fold_batch_norm(w, b, gamma, beta, mean, var, eps)
            wname, bname = fresh(src.name + ".weight_folded"), fresh(src.name + ".bias_folded")
            init[wname], init[bname] = w2, b2
            src.inputs = (src.inputs[0], wname, bname)
        elif node.op in ("Relu", "Clip") and src.op in FUSABLE \
                and _is_quantizable(src, model, init):
            lo, hi = (0.0, None) if node.op == "Relu" else _clip_bounds(node, init)
            lo, hi = -math.inf if lo is None else lo, math.inf if hi is None else hi
            if lo > 0 or hi < 0:
                continue
            if "activation" in src.attrs:  # Relu then Clip(0, 6), ...: one clamp, both bounds
                if node.inputs[0] in keep:
                    continue
                plo, phi = activation_bounds(src)  # (both intervals hold 0: they overlap)
                lo = max(lo, -math.inf if plo is None else plo)
                hi = min(hi, math.inf if phi is None else phi)
            src.attrs["activation"] = "Relu" if lo == 0 and hi == math.inf else ["Clip", lo, hi]
        else:
            continue
        src.outputs = node.outputs  # the fused node now produces what the folded one did
        producer.update({o: src for o in node.outputs})
        dropped.add(node.name)
    kept = [n for n in nodes if n.name not in dropped]
    used = {i for n in kept for i in n.inputs} | set(model.outputs)
    init = {k: v for k, v in init.items() if k in used}
    return Model(model.inputs, kept, model.outputs, init, model.name)


# ---------------------------------------------------------------------------------------------
# calibration


def _observer(method):
    return {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
            "percentile": PercentileObserver,
            "entropy": lambda: HistogramObserver(method="entropy"),
            "mse": lambda: HistogramObserver(method="mse")}[method]()


def _batches(data):
    """Yield (index, batch) with a clear error for what is not a batch."""
    if isinstance(data, (np.ndarray, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(f"calibration_data: expected an iterable of batches (arrays or dicts "
                        f"name -> array), got {type(data).__name__}")
    n = -1
    for n, batch in enumerate(data):
        if not isinstance(batch, dict):
            a = np.asarray(batch) if not hasattr(batch, "detach") else \
                batch.detach().cpu().numpy()
            if a.dtype == object:
                raise TypeError(f"calibration_data[{n}]: expected an array or a dict name -> "
                                f"array, got {type(batch).__name__}")
            batch = a
        yield n, batch
    if n < 0:
        raise ValueError("calibration_data: expected at least one batch, got none")


def _progress(enabled, total):
    tty = sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    if enabled is False or (enabled is None and not tty) or sys.stderr is None:
        return None  # (no stderr at all under pythonw and some services)
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="calibrating", unit="batch", delay=0 if enabled else 1.0,
                file=sys.stderr, leave=False)


# ---------------------------------------------------------------------------------------------
# the quantized model


class _Q:
    """Quantization parameters of one activation tensor: real = scale * (q - zero_point)."""

    __slots__ = ("scale", "zero_point", "dtype", "zp")

    def __init__(self, scale, zero_point, dtype):
        self.dtype = np.dtype(dtype)
        self.scale = np.float32(scale)
        self.zero_point = int(zero_point)
        self.zp = self.dtype.type(self.zero_point)  # as the kernels want it

    def range(self):
        info = np.iinfo(self.dtype)
        s = float(self.scale)
        return s * (info.min - self.zero_point), s * (info.max - self.zero_point)

    def to_list(self):
        return [float(self.scale), self.zero_point, self.dtype.name]

    # read as the documented (scale, zero_point, dtype) triple: s, z, dt = qm.qparams[name]
    def __iter__(self):
        return iter((self.scale, self.zero_point, self.dtype.name))

    def __eq__(self, other):  # the same quantization (a file's copy equals the original)
        return isinstance(other, _Q) and tuple(self) == tuple(other)

    def __hash__(self):
        return hash(tuple(self))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return tuple(self)[i]

    def __repr__(self):
        return f"({float(self.scale)!r}, {self.zero_point}, {self.dtype.name!r})"


def _quantize_weight(w, per_channel):
    """Symmetric int8, narrow range: (q int8, scale float32 (M,)) with M = w.shape[0]."""
    m = w.shape[0]
    amax = np.abs(w.reshape(m, -1)).max(axis=1) if per_channel else \
        np.full(m, np.abs(w).max() if w.size else 0.0, np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    q = _elementwise.quantize(w, scale, np.zeros(m, np.int8), axis=0)
    return q, scale


def _const_qparams(c, dtype):
    """Per-tensor qparams of a constant activation (an Add's or Concat's operand, a constant
    graph output): its min and max with 0, as the minmax observer."""
    p = MinMaxObserver()
    if c.size:
        p.update(c)
        return p.qparams(dtype=dtype)
    return choose_qparams(min_val=0.0, max_val=0.0, dtype=dtype)


def quantize_bias(bias, x_scale, w_scale):
    """int32 ``rne(bias / (x_scale * w_scale))`` with the float32 product as the scale,
    divided in float64 and saturated to the int32 range."""
    s = (np.float32(x_scale) * w_scale.astype(np.float32)).astype(np.float32)
    q = np.rint(bias.astype(np.float64) / s.astype(np.float64))
    return np.clip(q, -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int32)


def _bias_fit_scale(bias, x_scale, w_scale, k, uniform):
    """Weight scales (M,) large enough that the int32 bias ``bias / (x_scale * w_scale)`` plus
    any sum of ``k`` products (each at most 255 * 128) stays inside int32, or None when
    ``w_scale`` already does. A tiny weight row (1e-7) with a bias of 0.5 otherwise needs a
    bias of 3e10 steps, which saturates and then wraps in the accumulator. ``uniform`` keeps
    one scale for all rows (per-tensor weights)."""
    room = 2.0 ** 31 - 1 - k * 255.0 * 128
    room = max(room, 2.0 ** 30)  # (k beyond 33k: half the range, the rest is the sums')
    need = np.abs(bias.astype(np.float64)) / (float(np.float32(x_scale)) * room)
    if not np.any(need > w_scale):
        return None
    need = np.nextafter(need.astype(np.float32), np.float32(np.inf))  # round up, not down
    if uniform:
        return np.full_like(w_scale, max(float(w_scale[0]), float(need.max())))
    return np.maximum(w_scale, need).astype(np.float32)


class QuantizedModel:
    """A model whose convolutions, matmuls, pooling, add, mul and concat run in int8.

    Made by :func:`quantize_model` or :func:`load_model`. ``qm(x)`` takes what the float
    model takes (float32 with ``io="float"``; raw ``io``-typed values quantized with
    ``input_qparams`` otherwise) and returns the outputs (dequantized to float32, or raw).

    Attributes: ``model`` (the planned float graph: BatchNorm folded, activations fused),
    ``qparams`` (tensor name -> (scale, zero_point, dtype) of every int8 activation),
    ``weights`` (node name -> dict of ``weight`` int8, ``weight_scale`` float32 (M,),
    ``bias`` int32 (M,) or None; Gemm/MatMul weights as (out, in)), ``kinds`` (node name ->
    "int8" | "float"), ``io``, ``activation_dtype``, ``arithmetic`` (``"onnxruntime"`` or
    ``"reference"``, see :func:`quantize_model`), ``input_qparams``, ``output_qparams``.
    """

    _nhwc_enabled = True  # tests: False keeps every tensor NCHW (_layouts)

    def __init__(self, model, qparams, weights, *, io="float", activation_dtype="uint8",
                 info=None, arithmetic="onnxruntime"):
        _conv.ort_arithmetic(arithmetic)  # a ValueError naming the argument
        self._arithmetic = arithmetic
        self.model = model
        self.qparams = {k: (v if isinstance(v, _Q) else _Q(*v)) for k, v in qparams.items()}
        self.weights = weights
        self.io = io
        self.activation_dtype = np.dtype(activation_dtype)
        self.info = dict(info or {})
        # (a layer with weights runs in int8 only with its int8 weights: a file an older quantc
        # saved with a Gemm it ran in float, e.g. one whose C is (1, N), still runs it in float)
        # (and a file before version 6 runs its Mul in float, as the quantc that wrote it did:
        # load_model sets _float_mul on the instance before __init__)
        float_mul = getattr(self, "_float_mul", False)
        self.kinds = {n.name: "int8" if _is_quantizable(n, model) and (
            n.op not in ("Conv", "Gemm", "MatMul") or "weight" in weights.get(n.name, {}))
            and not (float_mul and n.op == "Mul") else "float" for n in model.nodes}
        self._compile()

    @property
    def arithmetic(self):
        """``"onnxruntime"`` or ``"reference"`` (read-only: the compiled steps hold it)."""
        return self._arithmetic

    # -- program ----------------------------------------------------------------------------

    def _q(self, name):
        try:
            return self.qparams[name]
        except KeyError:
            raise ValueError(f"tensor {name!r} has no quantization parameters") from None

    def _compile(self):
        """Turn the graph into a list of (function, input names, output name) steps, with the
        quantize/dequantize steps between int8 and float ops made explicit once, here."""
        m = self.model
        steps = []
        # layers with a clamp quantc before file version 3 did not apply (see FORMAT_VERSION)
        self._new_clamps = set()
        # ops that only move values requantizing their result (file version 4)
        self._requantized_moves = set()
        domain = {}  # tensor -> "q" | "f" (what is in the environment under its name)
        for k, v in m.initializers.items():
            domain[k] = "c"
        self._io_dtype = None if self.io == "float" else np.dtype(self.io)
        for name in m.inputs:
            domain[name] = "f" if self.io == "float" else "q"
        converted = {}
        readers = m.consumers()
        # int8 Conv/Gemm/MatMul whose every reader wants float (float ops, float graph
        # outputs) turn their int32 sums into float directly instead of requantizing; not
        # clamped to a calibrated range either (the largest logit is the one most likely to
        # pass the calibration's maximum), but clamped to a given one (info["given_ranges"])
        self.float_outputs = set()
        for node in m.nodes:
            out = node.outputs[0]
            if self.kinds[node.name] == "int8" and node.op in ("Conv", "Gemm", "MatMul") \
                    and (out not in m.outputs or self.io == "float") \
                    and all(self.kinds[r.name] == "float" for r in readers.get(out, ())):
                self.float_outputs.add(out)
        # those clamped to a given range (the export writes the same Clip)
        self._range_clamped = self.float_outputs & set(self.info.get("given_ranges", ()))
        self._packed = {}
        self._nhwc = self._layouts(readers)

        def nchw(name):
            """The environment name holding `name` in NCHW (adding a transpose step)."""
            if name not in self._nhwc:
                return name
            key = (name, "nchw")
            if key not in converted:
                converted[key] = name + "#nchw"
                domain[converted[key]] = domain[name]
                steps.append((_to_nchw, (name,), converted[key]))
            return converted[key]

        def need(name, want):
            """The environment name holding `name` in domain `want` (adding a step), NCHW."""
            src = nchw(name)
            have = domain[src]
            if have == want or have == "c":
                return src
            key = (name, want)
            if key not in converted:
                qp = self._q(name)
                new = name + ("#q" if want == "q" else "#f")
                if want == "q":
                    steps.append((_quantizer(qp), (src,), new))
                else:
                    steps.append((_dequantizer(qp), (src,), new))
                converted[key] = new
            return converted[key]

        for name in m.inputs:
            if self._io_dtype is not None and self._io_dtype != self.activation_dtype:
                steps.append((_flip_sign, (name,), name))
        for node in m.nodes:
            kind = self.kinds[node.name]
            out = node.outputs[0]
            if out in self.float_outputs:
                fn, const = self._int8_step(node, float_out=True)
                ins = tuple(need(i, "q") for i in node.inputs if i and i not in const)
                steps.append((fn, ins, out))
                domain[out] = "f"
            elif kind == "int8":
                fn, const = self._int8_step(node)
                # NHWC tensors stay NHWC for the ops that take them (_layouts), for the rest
                # need() adds a transpose
                keep = (node.inputs[0],) if node.op == "Conv" else \
                    tuple(node.inputs) if out in self._nhwc and out not in self._late else ()
                ins = tuple(i if i in keep and i in self._nhwc else
                            need(i, "q") if i and domain.get(i) != "c" else i
                            for i in node.inputs if i)
                ins = tuple(i for i in ins if i not in const)
                steps.append((fn, ins, out))
                domain[out] = "q"
                if out in self._late:  # an NCHW result that the convolutions read NHWC
                    steps.append((_to_nhwc, (out,), out))
            else:
                ins = tuple(need(i, "f") if i else i for i in node.inputs)
                steps.append((_float_op(node), ins, out))
                domain[out] = "f"
        self._outputs = []
        qconsts = {}
        for o in m.outputs:
            want = "f" if self.io == "float" else "q"
            if domain.get(o) == "c" and want == "q":  # a constant output, quantized once
                qconsts[o + "#q"] = _quantizer(self._q(o))(m.initializers[o].astype(np.float32))
                self._outputs.append(o + "#q")
            else:
                self._outputs.append(need(o, want))
        if self._io_dtype is not None and self._io_dtype != self.activation_dtype:
            for k in dict.fromkeys(self._outputs):  # (an output listed twice: flipped once)
                steps.append((_flip_sign, (k,), k))
        self._steps = steps
        # what each step reads for the last time, dropped after it (peak memory is then the
        # live activations, not every activation of the run)
        last = {}
        for k, (_, ins, _) in enumerate(steps):
            for i in ins:
                last[i] = k
        keep = set(self._outputs)
        self._dead = [[] for _ in steps]
        for name, k in last.items():
            if name not in keep and name != steps[k][2]:
                self._dead[k].append(name)
        self._consts = dict(m.initializers)
        self._consts.update(qconsts)
        self._consts[""] = None  # an omitted optional input of a float op (model.evaluate)
        # outputs that are a constant or a graph input are copied: the caller owns the result
        self._copy_out = {k for k in self._outputs if k in self._consts or k in m.inputs}
        self._isa_cap = _C._get_isa_cap()  # weights are packed for this cap's kernels

    def _conv_packed(self, node):
        if node.name not in self._packed:
            self._packed[node.name] = _conv.pack_conv_weight(
                self.weights[node.name]["weight"], None, group=int(node.attrs.get("group", 1)))
        return self._packed[node.name]

    def _conv_plan(self, node, layout):
        """The prepared QLinearConv of an int8 Conv node; layout: bit 0 x NHWC, bit 1 y."""
        a = node.attrs
        qx, qy = self._q(node.inputs[0]), self._q(node.outputs[0])
        lo, _ = activation_bounds(node)
        wd = self.weights[node.name]
        # every argument but x checked and converted once (qlinear_conv's arithmetic)
        return _C._conv_plan(self._conv_packed(node)._capsule, qx.zp, qx.scale,
                             wd["weight_scale"], qy.scale, qy.zp, wd["bias"],
                             tuple(a.get("strides", (1, 1))), self._pads(node),
                             tuple(a.get("dilations", (1, 1))), int(a.get("group", 1)),
                             lo is not None and lo >= 0, layout,
                             self.arithmetic == "onnxruntime")

    def _layouts(self, readers):
        """The tensors kept NHWC between int8 convolutions.

        A convolution on the NHWC GEMM path transposes its NCHW input to NHWC and its NHWC
        result back (1 thread, this EPYC: 3x3 64 @56 614 -> 592 us without both, 663 -> 585
        in a busier run). Tensors joined by element-wise int8 ops (Relu, Clip, Identity, an
        Add or Mul of equal shapes) share a layout; such a group goes NHWC when every tensor in
        it comes from an int8 Conv, one of those ops or an int8 pooling, Add, Mul or Concat
        (whose NCHW result is then transposed), and the transposes it saves (an NHWC-GEMM conv
        reading or writing it) outnumber what it costs: a conv on the direct path (run
        through NCHW copies) or on the NCHW GEMM (which then takes the NHWC one: MobileNetV2
        at batch 1 lost 6% when its pointwise layers did), one transpose in after a pooling,
        and one back per tensor that anything else reads or that is a graph output."""
        m = self.model
        shapes = m.shapes
        route = {}
        self._late = set()
        if not self._nhwc_enabled:
            return set()
        for node in m.nodes:
            if node.op != "Conv" or self.kinds[node.name] != "int8" \
                    or node.outputs[0] in self.float_outputs:
                continue
            shp = shapes.get(node.inputs[0])
            if shp is None or len(shp) != 4 or any(d is None for d in shp[1:]):
                continue
            route[node.name] = _C._conv_route(self._conv_plan(node, 0), (1,) + tuple(shp[1:]))
        gain = {"gemm": 1, "nchw": -1, "direct": -1}

        def flex(node):
            if self.kinds[node.name] != "int8" or node.outputs[0] in self.float_outputs:
                return False
            if node.op in ("Relu", "Clip", "Identity", "Dropout") + tuple(UNARY):
                return True
            return node.op in ("Add", "Mul") and len(node.inputs) == 2 and \
                not any(i in m.initializers for i in node.inputs) and \
                shapes.get(node.inputs[0]) == shapes.get(node.inputs[1]) == \
                shapes.get(node.outputs[0])

        def late(node):
            """An int8 op writing a 4-D NCHW tensor (MaxPool after a network's stem)."""
            shp = shapes.get(node.outputs[0])
            return node.op in ("MaxPool", "AveragePool", "Concat", "Add", "Mul") and \
                self.kinds[node.name] == "int8" and not flex(node) and \
                shp is not None and len(shp) == 4

        parent = {}

        def find(t):
            while parent.get(t, t) != t:
                t = parent[t]
            return t

        producer = {}
        for node in m.nodes:
            for o in node.outputs:
                producer[o] = node
            if flex(node):
                for i in node.inputs[:2 if node.op in ("Add", "Mul") else 1]:
                    parent[find(i)] = find(node.outputs[0])
        groups = {}
        for t in producer:
            groups.setdefault(find(t), []).append(t)
        for t in list(m.inputs) + list(m.initializers):
            groups.setdefault(find(t), []).append(t)
        nhwc = set()
        for members in groups.values():
            score, ok = 0, True
            for t in members:
                p = producer.get(t)
                if p is not None and p.name in route:
                    score += gain[route[p.name]]
                elif p is not None and late(p):
                    score -= 1  # transposed to NHWC after it (self._late)
                elif p is None or not flex(p):
                    ok = False
                    break
                back = t in m.outputs
                for r in readers.get(t, ()):
                    if r.name in route and r.inputs[0] == t:
                        score += gain[route[r.name]]
                    elif not flex(r):
                        back = True
                score -= back
            if ok and score > 0:
                nhwc.update(members)
        self._late = {t for t in nhwc if t in producer and late(producer[t])}
        return nhwc

    def _int8_step(self, node, float_out=False):
        """(function of the quantized inputs, names of constant inputs it has bound).
        ``float_out``: a Conv/Gemm/MatMul returning ``float32(acc + bias) * (x_scale *
        w_scale)`` (then its activation) instead of requantized values."""
        op = node.op
        x = node.inputs[0]
        if op in _PASSTHROUGH and self._q(x) != self._q(node.outputs[0]):
            # a range given for the output (QAT) where the input has its own qparams: the
            # move on the codes, then each code requantized through a table of the 256 codes
            # (dequantized, Relu/Clip applied in float, quantized), as DequantizeLinear -> op
            # -> QuantizeLinear computes it
            self._requantized_moves.add(node.name)
            clamps = op in ("Relu", "Clip")
            consts = [self.model.initializers[i] if i else None for i in node.inputs[1:]]
            table = _code_table(self._q(x), self._q(node.outputs[0]),
                                (lambda v: evaluate(node, [v] + consts)[0]) if clamps else None)
            move = (lambda q: q) if clamps else self._move_step(node)
            return (lambda q: _C._lut8(move(q), table)), set(node.inputs[1:])
        if op in _PASSTHROUGH:
            return self._move_step(node), set(node.inputs[1:])
        if op in UNARY:
            return _table_step(node, self._q(x), self._q(node.outputs[0])), set()
        # (an Add's or Concat's constant operand may come first: it has no activation qparams)
        qx = None if op in ("Add", "Concat") else self._q(x)
        qy = self._q(node.outputs[0])
        lo, hi = activation_bounds(node)
        relu = lo is not None and lo >= 0
        if float_out:
            if node.outputs[0] in self._range_clamped:
                # a trained range (QAT) is part of the model: the float output keeps its clamp
                # and drops only the rounding; a calibrated range is not clamped (see _compile)
                qlo, qhi = qy.range()
                lo = qlo if lo is None else max(lo, qlo)
                hi = qhi if hi is None else min(hi, qhi)
                self._new_clamps.add(node.name)
            return self._float_out_step(node, qx, lo, hi), set(node.inputs[1:])
        fn, const = self._kernel_step(node, qx, qy, relu)
        if lo is not None or hi is not None:
            # the kernels clamp at the zero point (relu) and at the type's range; a fused
            # Clip's bounds inside the output's range (a range given wider than the Clip, a
            # degenerate calibration) are applied here, on the int8 values: quantize is
            # monotonic, so this equals quantize(clip(y, lo, hi)), the export's result
            qlo, qhi = _quantized_bounds(qy, lo, hi)
            info = np.iinfo(qy.dtype)
            if (qlo > info.min and not relu) or qhi < info.max:
                kernel = fn
                self._new_clamps.add(node.name)

                def fn(*qs):
                    y = kernel(*qs)
                    np.clip(y, qlo, qhi, out=y)
                    return y
        return fn, const

    def _move_step(self, node):
        """The int8 step of an op that only moves or clamps values, on its input's codes."""
        op, a = node.op, node.attrs
        x = node.inputs[0]
        if op == "Relu":
            zp = self._q(x).zp
            return lambda q: np.maximum(q, zp)
        if op == "Clip":
            lo_, hi_ = _quantized_bounds(self._q(x), *_clip_bounds(
                node, self.model.initializers))
            return lambda q: np.clip(q, lo_, hi_)
        if op == "MaxPool":
            k = tuple(a["kernel_shape"])
            strides = tuple(a.get("strides", (1, 1)))
            pads = self._pads(node)
            return lambda q: _conv.max_pool2d(q, k, strides=strides, pads=pads)
        if op == "Transpose":
            perm = transpose_perm(node, len(self.model.shapes[x]))
            return lambda q: np.transpose(q, perm).copy()
        if op in ("Squeeze", "Unsqueeze"):
            axes = self.model.initializers[node.inputs[1]] if len(node.inputs) > 1 \
                and node.inputs[1] else None
            shaped = squeezed_shape if op == "Squeeze" else unsqueezed_shape
            return lambda q: q.reshape(shaped(node, axes, q.shape))
        if op in ("Flatten", "Reshape"):
            if op == "Flatten":
                ax = int(a.get("axis", 1))
                return lambda q: q.reshape(_flat2(q.shape, ax))
            target = [int(t) for t in self.model.initializers[node.inputs[1]]]
            return lambda q: _run_reshape(node, q, target)
        return lambda q: q

    def _kernel_step(self, node, qx, qy, relu):
        """The int8 kernel call of a Conv/Gemm/MatMul/pool/Add/Mul/Concat node (see
        _int8_step)."""
        op, a = node.op, node.attrs
        x = node.inputs[0]
        if op == "Conv":
            layout = (x in self._nhwc) | (node.outputs[0] in self._nhwc) << 1
            return functools.partial(_C._conv_exec, self._conv_plan(node, layout)), \
                set(node.inputs[1:])
        if op in ("Gemm", "MatMul"):
            wd = self.weights[node.name]
            packed = _gemm.pack_matrix(np.ascontiguousarray(wd["weight"].T))
            ws, bias = wd["weight_scale"], wd["bias"]
            xs, xzp, ys, yzp = qx.scale, qx.zp, qy.scale, qy.zp
            zero = np.int8(0)
            mm = _gemm.qlinear_matmul
            ar = self.arithmetic
            return (lambda q: mm(q, xs, xzp, packed, ws, zero, ys, yzp, bias=bias,
                                 relu=relu, arithmetic=ar)), set(node.inputs[1:])
        if op == "AveragePool":
            k = tuple(a["kernel_shape"])
            strides = tuple(a.get("strides", (1, 1)))
            pads = self._pads(node)
            cip = bool(a.get("count_include_pad", 0))
            return (lambda q: _conv.avg_pool2d(q, qx.scale, qx.zp, qy.scale, qy.zp, k,
                                               strides=strides, pads=pads,
                                               count_include_pad=cip,
                                               arithmetic=self.arithmetic)), set()
        if op == "GlobalAveragePool":
            return (lambda q: _conv.global_avg_pool(q, qx.scale, qx.zp, qy.scale, qy.zp,
                                                    arithmetic=self.arithmetic)), set()
        if op == "Add":
            qa, qb = (self._q(i) if i not in self.model.initializers else None
                      for i in node.inputs)
            const_q = {}
            for i, name in enumerate(node.inputs):  # a constant operand: quantized once here
                if name in self.model.initializers:
                    const_q[i] = self.weights[node.name]["const%d" % i]
            ya = qy
            if const_q:
                i = next(iter(const_q))
                cq, cs, cz = const_q[i]
                other = qa if i == 1 else qb

                def f(q):
                    args = (q, other.scale, other.zp, cq, cs, cz) if i == 1 else \
                        (cq, cs, cz, q, other.scale, other.zp)
                    return _conv.qlinear_add(*args, ya.scale, ya.zp, relu=relu,
                                             arithmetic=self.arithmetic)
                return f, {node.inputs[i]}
            return (lambda p, q: _conv.qlinear_add(p, qa.scale, qa.zp, q, qb.scale, qb.zp,
                                                   ya.scale, ya.zp, relu=relu,
                                                   arithmetic=self.arithmetic)), set()
        if op == "Mul":
            qa, qb = self._q(node.inputs[0]), self._q(node.inputs[1])
            return (lambda p, q: _conv.qlinear_mul(p, qa.scale, qa.zp, q, qb.scale, qb.zp,
                                                   qy.scale, qy.zp,
                                                   arithmetic=self.arithmetic)), set()
        if op == "Concat":  # a constant operand was quantized once, at conversion
            axis = int(a["axis"])
            consts = self.weights.get(node.name, {})
            parts = [consts.get("const%d" % i) for i in range(len(node.inputs))]
            qs = [self._q(i) if p is None else None for i, p in zip(node.inputs, parts)]

            def concat(*xs):
                it = iter(xs)
                return _conv.qlinear_concat([p if p is not None else (next(it), q.scale, q.zp)
                                             for p, q in zip(parts, qs)], qy.scale, qy.zp,
                                            axis=axis, arithmetic=self.arithmetic)
            return concat, {i for i, p in zip(node.inputs, parts) if p is not None}
        raise AssertionError(op)

    def _float_out_step(self, node, qx, lo, hi):
        a = node.attrs
        wd = self.weights[node.name]
        scale = (np.float32(qx.scale) * wd["weight_scale"]).astype(np.float32)
        bias, xzp = wd["bias"], qx.zp
        lo = None if lo is None else np.float32(lo)
        hi = None if hi is None or hi == math.inf else np.float32(hi)
        if node.op == "Conv":
            packed = self._conv_packed(node)
            kw = dict(strides=tuple(a.get("strides", (1, 1))), pads=self._pads(node),
                      dilations=tuple(a.get("dilations", (1, 1))), group=int(a.get("group", 1)))
            scale, bias = scale[:, None, None], None if bias is None else bias[:, None, None]

            def acc(q):
                return _conv.conv_integer(q, packed, xzp, None, **kw)
        else:
            packed = _gemm.pack_matrix(np.ascontiguousarray(wd["weight"].T))

            def acc(q):
                return _gemm.matmul_integer(q, packed, xzp)

        def f(q):
            s = acc(q)
            if bias is not None:
                s += bias  # wraps like the kernels' int32 sums
            y = s.astype(np.float32)
            y *= scale
            if lo is not None or hi is not None:
                np.clip(y, lo, hi, out=y)
            return y
        return f

    def _pads(self, node):
        from .model import _pool_geometry
        k = tuple(node.attrs.get("kernel_shape") or self.model.initializers[
            node.inputs[1]].shape[2:])
        return tuple(_pool_geometry(node, self.model.shapes[node.inputs[0]], k)[1])

    # -- running ----------------------------------------------------------------------------

    @property
    def input_qparams(self):
        """Input name -> (scale, zero_point, dtype) of the raw inputs (``io`` typed)."""
        return {k: self._io_qparams(k) for k in self.model.inputs}

    @property
    def output_qparams(self):
        """Output name -> (scale, zero_point, dtype) of the raw outputs (``io`` typed)."""
        return {k: self._io_qparams(k) for k in self.model.outputs}

    def _io_qparams(self, name):
        qp = self._q(name)
        dt = self._io_dtype or qp.dtype
        shift = 0 if dt == qp.dtype else (128 if dt == np.uint8 else -128)
        return (qp.scale, qp.zero_point + shift, dt.name)

    def _feeds(self, x):
        if self.io == "float":  # NaN is caught by quantize
            return self.model._feeds(x, check_nan=False)
        if not isinstance(x, dict):
            if len(self.model.inputs) != 1:
                raise ValueError(f"x: the model has {len(self.model.inputs)} inputs: pass a "
                                 f"dict name -> array")
            x = {next(iter(self.model.inputs)): x}
        if set(x) != set(self.model.inputs):  # as the float model: no name ignored
            raise ValueError(f"x: expected the inputs {list(self.model.inputs)}, got {list(x)}")
        feeds = {}
        for name, want in self.model.inputs.items():
            a = np.asarray(x[name])
            if a.dtype != self._io_dtype:
                raise TypeError(f"x[{name!r}]: expected {self._io_dtype.name} values (the "
                                f"model was converted with io={self.io!r}), got {a.dtype}")
            if a.ndim != len(want) or any(w is not None and w != d for w, d in
                                          zip(want, a.shape)):
                raise ValueError(f"x[{name!r}]: expected shape {_fmt_shape(want)}, got "
                                 f"{a.shape}")
            feeds[name] = a
        return feeds

    def run(self, x, *, observe=None):
        """Run the int8 model; returns a dict of the outputs. ``observe(name, value, qp)``
        sees every tensor computed (int8 values with their qparams, or float with None)."""
        if _C._get_isa_cap() != self._isa_cap:
            self._compile()
        env = dict(self._consts)
        env.update(self._feeds(x))
        for (fn, ins, out), dead in zip(self._steps, self._dead):
            env[out] = fn(*[env[i] for i in ins])
            if observe is not None and "#" not in out and fn is not _to_nhwc:
                qp = self.qparams.get(out) if env[out].dtype.kind in "iu" else None
                nhwc = out in self._nhwc and out not in self._late  # NCHW until _to_nhwc
                observe(out, _to_nchw(env[out]) if nhwc else env[out], qp)
            for i in dead:
                del env[i]
        return {o: env[k].copy() if k in self._copy_out else env[k]
                for o, k in zip(self.model.outputs, self._outputs)}

    def __call__(self, x):
        if _C._get_isa_cap() != self._isa_cap:  # QUANTC_ISA changed: pack again
            self._compile()
        env = dict(self._consts)
        env.update(self._feeds(x))
        for (fn, ins, out), dead in zip(self._steps, self._dead):
            env[out] = fn(*[env[i] for i in ins])
            for i in dead:
                del env[i]
        vals = tuple(env[k].copy() if k in self._copy_out else env[k] for k in self._outputs)
        return vals[0] if len(vals) == 1 else vals

    # -- report -----------------------------------------------------------------------------

    def report(self):
        """Per layer: op, kind (int8 / float), output range chosen, % of the calibration values
        clipped, and the SQNR (dB) of the layer's output against the float model on the
        calibration data (``clipped_pct`` and ``sqnr_db`` None, printed ``-``, for a model
        converted from given ranges without data; SQNR ``inf``, printed ``exact``, for a
        layer without error). Printable; ``.to_list()`` gives dicts."""
        return ModelReport(self.info.get("report", []), self.info)

    def __repr__(self):
        n8 = sum(k == "int8" for k in self.kinds.values())
        return (f"QuantizedModel({self.model.name!r}, {n8} of {len(self.kinds)} layers int8, "
                f"activations {self.activation_dtype.name}, io={self.io!r})")

    # -- files ------------------------------------------------------------------------------

    def save(self, path):
        """Write one ``.safetensors`` file (graph and qparams in its metadata, the quantized
        tensors as tensors), atomically. :func:`load_model` reads it back; outputs are
        bit-identical."""
        from .io import write_tensors
        path = os.fspath(path)
        if not path.endswith(".safetensors"):
            raise ValueError(f"path: expected a .safetensors file name, got {path!r}")
        tensors = {}
        for name, wd in self.weights.items():
            for k, v in wd.items():
                if k.startswith("const"):
                    tensors[f"{name}::{k}::q"] = np.asarray(v[0])
                    tensors[f"{name}::{k}::scale"] = np.asarray(v[1], np.float32)
                    tensors[f"{name}::{k}::zero_point"] = np.asarray(v[2])
                elif v is not None:
                    tensors[f"{name}::{k}"] = v
        quantized = {n for n in self.weights}
        for k, v in self.model.initializers.items():
            owner = _weight_owner(self.model, k)
            if owner not in quantized or _keep_initializer(self.model, owner, k):
                tensors[f"init::{k}"] = v
        graph = {
            "name": self.model.name,
            "inputs": [[k, list(v)] for k, v in self.model.inputs.items()],
            "outputs": self.model.outputs,
            "nodes": [n.to_dict() for n in self.model.nodes],
            "qparams": {k: v.to_list() for k, v in self.qparams.items()},
            "io": self.io,
            "activation_dtype": self.activation_dtype.name,
            "info": self.info,
            "arithmetic": self.arithmetic,
        }
        m = self.model
        v2 = any(o in m.initializers for o in m.outputs) or any(
            n.op == "Concat" and self.weights.get(n.name) for n in m.nodes)
        v3 = bool(self._new_clamps)
        version = "6" if any(self.kinds[n.name] == "int8" and n.op == "Mul"
                             for n in m.nodes) \
            else "5" if self._arithmetic_matters() else "4" if self._requantized_moves \
            else "3" if v3 else "2" if v2 else "1"
        meta = {"format": FORMAT, "version": version,
                "graph": json.dumps(graph, allow_nan=True)}
        write_tensors(path, tensors, meta)

    def _arithmetic_matters(self):
        """True when the model requantizes with onnxruntime's arithmetic in some int8 op (file
        version 5): a Conv, Gemm or MatMul with an int8 output, an Add, a Mul, a pooling, a
        Concat."""
        if self.arithmetic != "onnxruntime":
            return False
        return any(self.kinds[n.name] == "int8" and n.outputs[0] not in self.float_outputs and
                   n.op in ("Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool",
                            "GlobalAveragePool", "Concat") for n in self.model.nodes)

    def to_onnx(self, path=None):
        """Write a QDQ ONNX model (QuantizeLinear/DequantizeLinear around float ops, the form
        onnxruntime's quantization tool writes) that onnxruntime runs; needs ``onnx``.
        Returns the ``onnx.ModelProto`` (``path`` None: nothing is written).

        With ``arithmetic="onnxruntime"`` (:func:`quantize_model`'s default) onnxruntime's run
        of the file on an x86-64 CPU with AVX2 gives the values ``qm(x)`` gives, bit for bit,
        for uint8 activations: onnxruntime fuses each DequantizeLinear -> op ->
        QuantizeLinear into its QLinearConv, QGemm/QLinearMatMul, QLinearAdd, QLinearMul,
        QLinearGlobalAveragePool, QLinearAveragePool or QLinearConcat kernel, whose arithmetic
        quantc then computes (random ResNet-18- and MobileNetV2-shaped networks at 224x224:
        every raw uint8 output equal). With ``"reference"`` an exact tie can round the other
        way in a layer, and a deep network carries such a unit on and grows it (the same
        networks: 99.2% and 68% of the outputs within one unit). Where onnxruntime does not
        fuse, it runs the float op between the DequantizeLinear and the QuantizeLinear and
        its results can differ from quantc's int8 kernels by a unit: a Conv or MatMul on int8
        activations (``activation_dtype="int8"``), ops quantc runs in float. One more
        difference is onnxruntime's own: its optimizer removes an Identity or Dropout (and
        moves a Transpose) and then merges the two Quantize/Dequantize pairs it leaves in a
        row, so where such an op requantizes (ranges given on both of its sides) its run
        differs by a few units; without graph optimizations it computes what quantc does."""
        from .onnx_export import quantized_to_onnx
        return quantized_to_onnx(self, path)


def _flat2(shape, axis):
    axis = axis + len(shape) if axis < 0 else axis
    return (math.prod(shape[:axis]), math.prod(shape[axis:]))


def _table_step(node, qx, qy):
    """An element-wise op (Sigmoid, HardSwish, ...) on int8 values: a table of its 256 input
    codes, each dequantized, put through the float op (model.UNARY, the float model's own
    float32 arithmetic) and quantized as QuantizeLinear does; run as one lookup per value
    (any layout). Equal to DequantizeLinear -> op -> QuantizeLinear wherever the float op
    rounds alike (onnxruntime's Sigmoid/Tanh approximations may differ in the last place,
    which can move a value across a rounding boundary: one unit)."""
    table = _code_table(qx, qy, lambda v: UNARY[node.op](node, v))
    return lambda q: _C._lut8(q, table)


def _code_table(qx, qy, fn=None):
    """The 256 codes of ``qx``'s type (every bit pattern, in the order of their uint8 view)
    dequantized with ``qx``, put through the float function ``fn`` (None: unchanged) and
    quantized with ``qy``: DequantizeLinear -> op -> QuantizeLinear as one lookup table."""
    v = _dequantizer(qx)(np.arange(256, dtype=np.uint8).view(qx.dtype))
    return _quantizer(qy)(v if fn is None else fn(v))


def _quantized_bounds(qp, lo, hi):
    """A clip's float bounds (None: unbounded) as values of ``qp``'s type, quantized as
    QuantizeLinear would (float32 division, round half to even, saturated)."""
    info = np.iinfo(qp.dtype)
    q = _quantizer(qp)
    return (qp.dtype.type(info.min if lo is None else q(np.float32(lo))),
            qp.dtype.type(info.max if hi is None else q(np.float32(hi))))


def _quantizer(qp):
    s, zp, dt = qp.scale, qp.zp, qp.dtype
    return lambda x: _elementwise.quantize(x, s, zp, dt)


def _dequantizer(qp):
    s, zp = qp.scale, qp.zp
    return lambda q: _elementwise.dequantize(q, s, zp)


def _to_nchw(q):
    return _C._layout4(q, False)


def _to_nhwc(q):
    return _C._layout4(q, True)


def _flip_sign(q):
    """uint8 <-> int8 with the same scale and the zero point moved by 128."""
    return (q.view(np.uint8) ^ np.uint8(0x80)).view(np.int8 if q.dtype == np.uint8 else np.uint8)


def _float_op(node):
    from .model import _FLOAT, _apply_activation
    fn = _FLOAT[node.op]
    act = "activation" in node.attrs

    def f(*ins):
        y = fn(node, list(ins), node.attrs)
        return np.asarray(_apply_activation(node, y) if act else y, np.float32)
    return f


def _weight_owner(model, init_name):
    for n in model.nodes:
        if init_name in n.inputs:
            return n.name
    return None


def _keep_initializer(model, node_name, init_name):
    """Constants an int8 node still reads as they are (shapes, clip bounds)."""
    node = next(n for n in model.nodes if n.name == node_name)
    return node.op not in ("Conv", "Gemm", "MatMul")


# ---------------------------------------------------------------------------------------------
# quantize_model


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got "
                         f"{value!r}")


def _tap_share(node, model):
    """(kH, kW): the share of a Conv's output pixels at which each kernel tap reads the image
    rather than the zero padding (all ones without padding; 1/9 for the outer taps of a 3x3
    kernel over a 1x1 plane). Ones when the plane's size is unknown."""
    from .model import _pool_geometry
    kh, kw = model.initializers[node.inputs[1]].shape[2:]
    x, y = model.shapes[node.inputs[0]], model.shapes[node.outputs[0]]
    if len(x) != 4 or None in x[2:] or 0 in x[2:] or None in y[2:] or 0 in y[2:]:
        return np.ones((kh, kw))
    strides, pads, dil = _pool_geometry(node, x, (kh, kw))

    def share(size, out, k, s, d, p0):
        at = np.arange(out)[:, None] * s - p0 + np.arange(k)[None, :] * d
        return ((at >= 0) & (at < size)).mean(axis=0)
    return np.outer(share(x[2], y[2], kh, strides[0], dil[0], pads[0]),
                    share(x[3], y[3], kw, strides[1], dil[1], pads[1]))


def _bias_shift(w, w_deq, mean, group=1, taps=None):
    """The bias shift that cancels the weights' quantization error on average (Nagel et al.
    2019, "empirical bias correction"): ``sum((w_deq - w) * E[x])`` per output channel, with
    ``E[x]`` the calibration mean of each input channel times, for a convolution, the share
    of output pixels at which each tap reads the image (``taps``, see _tap_share: the zero
    padding contributes nothing). ``w`` and ``w_deq`` are (M, C/group, kH, kW) or
    (out, in); returns float64 (M,)."""
    err = w_deq.astype(np.float64) - w.astype(np.float64)
    if err.ndim == 2:
        return err @ mean
    m, cg = err.shape[:2]
    mu = mean.reshape(group, cg)[np.arange(m) // (m // group)]
    per_tap = err if taps is None else err * taps
    return (per_tap.sum(axis=(2, 3)) * mu).sum(axis=1)


def quantize_model(model, calibration_data, *, method="minmax", weight_granularity="per_channel",
                   activation_dtype="uint8", io="float", bias_correction=True, progress=None,
                   ranges=None, weight_scales=None, arithmetic="onnxruntime"):
    """Calibrate ``model`` on ``calibration_data`` and convert it to a :class:`QuantizedModel`.

    ``calibration_data``: an iterable of input batches, each an array (one-input models) or a
    dict name -> array; it is read once (twice when it can be iterated again, for the
    report; an iterator's first 256 inputs are kept for the report). ``method``: the
    activation observer, ``"minmax"``, ``"moving_average"``, ``"percentile"`` (99.99),
    ``"entropy"`` (KL divergence) or ``"mse"``. ``weight_granularity``: ``"per_channel"``
    or ``"per_tensor"``. ``activation_dtype``: ``"uint8"`` or ``"int8"``. ``io``:
    ``"float"`` (float in, float out) or ``"uint8"``/``"int8"`` (raw quantized inputs and
    outputs with :attr:`QuantizedModel.input_qparams` / ``output_qparams``). ``progress``:
    None = a tqdm bar on a terminal, True/False to force. ``bias_correction``: subtract from
    each Conv/Gemm bias the mean error its quantized weights cause on the calibration data
    (``sum((w_q - w) * E[x])`` per output channel, Nagel et al. 2019, with ``E[x]`` the
    input's channel means gathered in the same pass and a convolution's zero padding left
    out), which onnxruntime's tool does not do. See the module doc for the scheme.

    Given parameters (e.g. from quantization-aware training, see ``quantc.torch.convert``):
    ``ranges``: tensor name -> ``(min, max)``, used instead of the observer for that tensor
    (qparams by the same onnx formula as the observers'), or -> a :class:`quantc.QParams`
    (per-tensor, ``activation_dtype``) used as it is. A range given for the output of an op
    that only moves or clamps values (Flatten, Reshape, Transpose, MaxPool, Relu, Clip, ...)
    is also its input's when nothing else reads that input (the op keeps running on the
    codes); where the input has other readers or its own range, the op's result is
    requantized to it. A given range is part of the model:
    an int8 layer whose output is read as float (a float graph output, a float op) clamps it
    to that range as the int8 values would be, where a calibrated range is not applied to a
    float output (it is only the calibration data's). ``calibration_data`` may be None
    when ``ranges`` covers every tensor that needs qparams (then there is no bias correction
    and the report has no statistics). ``weight_scales``: the name of a Conv/Gemm/MatMul
    weight in ``model`` -> its scale (one float, or one per output channel); the weight is
    quantized as ``rint(w / scale)`` saturated to int8 instead of with ``amax / 127``
    (a weight folded with a BatchNormalization cannot be given one).

    ``arithmetic``: how the int8 ops requantize. ``"onnxruntime"`` (the default) computes what
    onnxruntime's kernels compute on x86-64 (float32 products rounded before the zero point is
    added, QLinearAdd's folded zero points and fused multiply-adds, QLinearGlobalAveragePool's
    multiplier, QuantizeLinear(DequantizeLinear) for Concat, QLinearAveragePool's float sums),
    so onnxruntime's run of :meth:`QuantizedModel.to_onnx` gives the same uint8 values;
    ``"reference"`` follows the ONNX reference evaluator (float64 products), as
    :func:`quantc.qlinear_conv` and the other ops do by default. The two differ by a unit
    where a value lands on or next to a rounding tie (or an accumulator reaches 2^24), here and
    there, which a deep network can carry on.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a quantc.Model, got {type(model).__name__}")
    _check_choice("method", method, METHODS)
    _check_choice("weight_granularity", weight_granularity, ("per_channel", "per_tensor"))
    _check_choice("activation_dtype", str(np.dtype(activation_dtype)) if isinstance(
        activation_dtype, (np.dtype, type)) else activation_dtype, ("uint8", "int8"))
    activation_dtype = np.dtype(activation_dtype).name
    _check_choice("io", io, ("float", "uint8", "int8"))
    _check_choice("arithmetic", arithmetic, _conv.ARITHMETICS)
    if progress not in (None, True, False):
        raise TypeError(f"progress: expected None, True or False, got {progress!r}")

    ranges = _check_ranges(ranges)
    for name, r in ranges.items():
        if isinstance(r, QParams) and np.dtype(r.dtype).name != activation_dtype:
            raise ValueError(f"ranges[{name!r}]: qparams of dtype {np.dtype(r.dtype).name}, "
                             f"the activations are {activation_dtype}")
    if calibration_data is None and not ranges:
        raise TypeError("calibration_data: expected an iterable of batches, got None (None is "
                        "allowed only when ranges= covers every activation)")
    planned = plan(model, keep=set(ranges))
    given = sorted(ranges)
    known = set(tensor_names(model))
    readers = planned.consumers()
    for node in reversed(planned.nodes):
        # an op that only moves or clamps values runs on its input's codes with its input's
        # qparams (a monotone function of them: quantizing its input with the range gives
        # the same codes): a range given for its output is its input's too when nothing else
        # reads that input (Conv -> Flatten -> a trained range; the pooled tensor the
        # planning made between a spatial ReduceMean and its Flatten)
        i = node.inputs[0] if node.inputs else ""
        if node.op in _PASSTHROUGH and node.outputs[0] in ranges and i not in ranges and \
                len(readers.get(i, ())) == 1 and i not in planned.outputs:
            ranges[i] = ranges[node.outputs[0]]
    weight_scales = _planned_weight_scales(weight_scales, model, planned)
    observers = {}
    names = list(planned.inputs) + [n.outputs[0] for n in planned.nodes]

    corrected = {n.inputs[0] for n in planned.nodes
                 if bias_correction and n.op in ("Conv", "Gemm") and _is_quantizable(n, planned)}
    sums = {}  # tensor -> [per-channel sum (float64), values per channel]

    producers = {n.outputs[0]: n for n in planned.nodes}

    def tensor(name):
        n = producers.get(name)
        return f"input {name!r}" if n is None else \
            f"tensor {name!r} (the output of node {n.name!r}, {n.op})"

    def observe(name, value):
        obs = observers.get(name)
        if obs is None:
            obs = observers[name] = _observer(method)
        try:
            obs.update(value)
        except ValueError as e:  # NaN: made by the float model (inf - inf, inf * 0)
            msg = str(e)
            raise ValueError(f"{tensor(name)}: {msg[3:] if msg.startswith('x: ') else msg}") \
                from None
        # every observer keeps the exact min and max: an infinite one leaves no range
        if obs._infinite():
            raise ValueError(f"{tensor(name)}: expected finite values to calibrate on, got "
                             f"{obs._infinite()}")
        if name in corrected and value.size:
            axes = (0,) + tuple(range(2, value.ndim))
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] = acc[0] + value.sum(axis=axes, dtype=np.float64)
            acc[1] += value.size // value.shape[1]

    reiterable = iter(calibration_data) is not calibration_data \
        if hasattr(calibration_data, "__iter__") else False
    kept, kept_n = [], 0
    total = len(calibration_data) if hasattr(calibration_data, "__len__") else None
    bar = _progress(progress, total) if calibration_data is not None else None
    try:
        for i, batch in _batches(calibration_data) if calibration_data is not None else ():
            try:
                planned.run(batch, observe=observe)
            except (ValueError, TypeError) as e:
                raise type(e)(f"calibration_data[{i}]: {e}") from None
            if not reiterable and kept_n < _REPORT_SAMPLES:
                kept.append(batch)
                kept_n += len(next(iter(batch.values()))) if isinstance(batch, dict) else \
                    (len(batch) if np.ndim(batch) else 1)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    qparams = {}
    unknown = sorted(set(ranges) - set(names))
    if unknown:
        raise ValueError(f"ranges: no activation tensor named {unknown[0]!r} in the planned "
                         f"model (tensors: {', '.join(names)})")
    for name in names:
        obs = observers.get(name)
        r = ranges.get(name)
        if isinstance(r, QParams) or r:
            p = r if isinstance(r, QParams) else \
                choose_qparams(min_val=r[0], max_val=r[1], dtype=activation_dtype)
        else:
            try:
                p = obs.qparams(dtype=activation_dtype, symmetric=False) \
                    if obs is not None else None
            except ValueError:  # a tensor with no element observed (zero-size batches)
                p = None
        if p is not None:
            qparams[name] = _Q(p.scale, p.zero_point, activation_dtype)
    for node in planned.nodes:  # ops that only move values keep their input's qparams
        if node.op in _PASSTHROUGH and _is_quantizable(node, planned) \
                and node.inputs[0] in qparams and node.outputs[0] not in ranges:
            qparams[node.outputs[0]] = qparams[node.inputs[0]]
        # (a given range where the input has other qparams: the op's result is requantized)
    for o in planned.outputs:  # a graph output computed from constants only
        if o in planned.initializers:
            p = _const_qparams(planned.initializers[o].astype(np.float32), activation_dtype)
            qparams[o] = _Q(p.scale, p.zero_point, activation_dtype)
    missing = [name for name in names if name not in qparams]
    # (a tensor the planning made is named only when no tensor of the model is missing)
    missing = [name for name in missing if name in known] or missing
    if missing and calibration_data is None:
        raise ValueError(f"calibration_data: None, but ranges= does not cover the tensor(s) "
                         f"{', '.join(map(repr, missing))}; give their ranges or calibration data")
    for name in missing:
        raise ValueError(f"calibration_data: tensor {name!r} saw no values (empty "
                         f"batches?)")

    weights = {}
    per_channel = weight_granularity == "per_channel"
    for node in planned.nodes:
        if not _is_quantizable(node, planned):
            continue
        if node.op == "Conv":
            w = planned.initializers[node.inputs[1]]
            b = planned.initializers[node.inputs[2]] if len(node.inputs) > 2 and \
                node.inputs[2] else None
        elif node.op in ("Gemm", "MatMul"):
            w, b = _gemm_weight(node, planned)
        elif node.op in ("Add", "Concat"):
            consts = {}
            for i, name in enumerate(node.inputs):
                if name in planned.initializers:
                    c = planned.initializers[name].astype(np.float32)
                    cp = _const_qparams(c, activation_dtype)
                    consts[f"const{i}"] = (_elementwise.quantize(c, cp.scale, cp.zero_point),
                                           np.float32(cp.scale), cp.zero_point)
            if consts:
                weights[node.name] = consts
            continue
        else:
            continue
        if node.name in weight_scales:
            ws = np.broadcast_to(weight_scales[node.name], (w.shape[0],)).astype(np.float32)
            q = _elementwise.quantize(w, ws, np.zeros(len(ws), np.int8), axis=0)
        else:
            q, ws = _quantize_weight(w, per_channel)
        # (the sums are per channel, axis 1: a Conv's input or a Gemm's 2-D one; a MatMul
        # reading the same tensor contracts its last axis, and is not corrected)
        if node.op in ("Conv", "Gemm") and node.inputs[0] in sums:
            total, count = sums[node.inputs[0]]
            deq = q.astype(np.float32) * ws.reshape((-1,) + (1,) * (w.ndim - 1))
            shift = _bias_shift(w, deq, total / count, int(node.attrs.get("group", 1)),
                                _tap_share(node, planned) if node.op == "Conv" else None)
            b = ((np.zeros(len(ws)) if b is None else b.astype(np.float64)) - shift).astype(
                np.float32)
        if b is not None:
            wide = _bias_fit_scale(b, qparams[node.inputs[0]].scale, ws, w[0].size,
                                   uniform=bool(np.all(ws == ws[0])))
            if wide is not None:  # as onnxruntime's tool: the weight scale grows, not the bias
                ws = wide
                q = _elementwise.quantize(w, ws, np.zeros(len(ws), np.int8), axis=0)
        bq = None if b is None else quantize_bias(b, qparams[node.inputs[0]].scale, ws)
        weights[node.name] = {"weight": q, "weight_scale": ws, "bias": bq}

    info = {"method": method if calibration_data is not None else "given ranges",
            "weight_granularity": weight_granularity,
            "bias_correction": bool(bias_correction) and calibration_data is not None}
    if ranges:
        info["given_ranges"] = given
    if ranges and calibration_data is not None:
        info["method"] += f" ({len(given)} given ranges)"
    qm = QuantizedModel(planned, qparams, weights, io=io, activation_dtype=activation_dtype,
                        info=info, arithmetic=arithmetic)
    stats_data = calibration_data if reiterable else kept
    qm.info["report"] = _layer_stats(qm, planned, observers, stats_data)
    qm.info["report_samples"] = "all calibration data" if reiterable else \
        f"the first {kept_n} calibration inputs" if calibration_data is not None else \
        "no data (given ranges)"
    return qm


def _check_ranges(ranges):
    """``ranges`` as name -> (float min, float max), with errors naming the bad entry."""
    if ranges is None:
        return {}
    if not isinstance(ranges, dict):
        raise TypeError(f"ranges: expected a dict tensor name -> (min, max), got "
                        f"{type(ranges).__name__}")
    out = {}
    for k, v in ranges.items():
        if isinstance(v, QParams):
            if np.size(v.scale) != 1 or not (np.isfinite(v.scale) and v.scale > 0):
                raise ValueError(f"ranges[{k!r}]: expected one positive scale, got {v.scale}")
            out[k] = v
            continue
        try:
            lo, hi = (float(t) for t in v)
        except (TypeError, ValueError):
            raise TypeError(f"ranges[{k!r}]: expected (min, max), got {v!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"ranges[{k!r}]: expected finite min <= max, got ({lo}, {hi})")
        out[k] = (lo, hi)
    return out


def _planned_weight_scales(weight_scales, model, planned):
    """``weight_scales`` (weight name in ``model`` -> scale) as planned node name -> scale."""
    if not weight_scales:
        return {}
    if not isinstance(weight_scales, dict):
        raise TypeError(f"weight_scales: expected a dict weight name -> scale, got "
                        f"{type(weight_scales).__name__}")
    by_weight = {n.inputs[1]: n for n in model.nodes
                 if n.op in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1}
    planned_nodes = {n.name: n for n in planned.nodes}
    out = {}
    for k, v in weight_scales.items():
        node = by_weight.get(k)
        pn = planned_nodes.get(node.name) if node is not None else None
        if pn is None or not _is_quantizable(pn, planned):
            raise ValueError(f"weight_scales: {k!r} is not the weight of an int8 Conv, Gemm "
                             f"or MatMul")
        if pn.inputs[1].endswith(".weight_folded"):
            raise ValueError(f"weight_scales: {k!r} (node {node.name!r}) is folded with a "
                             f"BatchNormalization; its scale does not apply to the folded weight")
        s = np.asarray(v, np.float32)
        m = model.initializers[k].shape[0 if pn.op == "Conv" or (
            pn.op == "Gemm" and int(node.attrs.get("transB", 0))) else 1]
        if s.ndim > 1 or s.size not in (1, m) or not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError(f"weight_scales[{k!r}]: expected one positive finite scale or "
                             f"{m} (one per output channel), got shape {s.shape}")
        out[pn.name] = s
    return out


def _layer_stats(qm, planned, observers, data):
    """Per layer output: range, % clipped and SQNR of the int8 model against the float one."""
    acc = {}
    order = [n for n in planned.nodes]
    float_io = qm.io
    qm.io = "float"  # the statistics compare float outputs; io only changes the boundaries
    qm._compile()
    try:
        for _, batch in _batches(data) if data is not None and (
                not isinstance(data, list) or data) else ():  # no data: no statistics
            ref = {}
            planned.run(batch, observe=lambda k, v: ref.__setitem__(k, v))

            def seen(name, value, qp):
                if name not in ref:
                    return
                f = ref[name].astype(np.float64)
                d = _elementwise.dequantize(value, qp.scale, qp.zp).astype(np.float64) \
                    if qp is not None else value.astype(np.float64)
                a = acc.setdefault(name, [0.0, 0.0, 0, 0])
                a[0] += float(np.sum(f * f))
                a[1] += float(np.sum((f - d) ** 2))
                if qp is not None:  # clipped: farther than half a step outside the range
                    lo, hi = qp.range()
                    half = 0.5 * float(qp.scale)
                    a[2] += int(np.count_nonzero((f < lo - half) | (f > hi + half)))
                a[3] += f.size
            qm.run(batch, observe=seen)
    finally:
        qm.io = float_io
        qm._compile()
    rows = []
    for node in order:
        out = node.outputs[0]
        qp = qm.qparams.get(out)
        sig, err, clipped, count = acc.get(out, [0.0, 0.0, 0, 0])
        sqnr = None if count == 0 else math.inf if err == 0 else \
            (10 * math.log10(sig / err) if sig > 0 else -math.inf)
        lo, hi = qp.range() if qp is not None else (None, None)
        act = node.attrs.get("activation")
        rows.append({"layer": node.name, "op": node.op + ("+" + (act if isinstance(act, str)
                                                                  else "Clip") if act else ""),
                     "kind": qm.kinds[node.name] + (" (float out)" if out in qm.float_outputs
                                                    else ""), "output": out,
                     "shape": _fmt_shape(planned.shapes[out]),
                     "range_min": lo, "range_max": hi,
                     "scale": None if qp is None else float(qp.scale),
                     "zero_point": None if qp is None else qp.zero_point,
                     "clipped_pct": 100.0 * clipped / count if count else None,
                     "sqnr_db": sqnr})
    return rows


class ModelReport(_table.Rows):
    """The per-layer report of a :class:`QuantizedModel`: iterate for dicts, print for a table."""

    def __init__(self, rows, info):
        super().__init__(rows)
        self.info = info

    def __str__(self):
        head = ("layer", "op", "kind", "output shape", "range", "clipped", "SQNR dB")
        body = []
        for r in self.rows:
            rng = "-" if r["range_min"] is None else f"[{r['range_min']:.4g}, {r['range_max']:.4g}]"
            sq = r["sqnr_db"]  # None (and nan in files of older versions): no statistics
            none = sq is None or (isinstance(sq, float) and math.isnan(sq))
            body.append((r["layer"], r["op"], r["kind"], r["shape"], rng,
                         "-" if none or r["clipped_pct"] is None else f"{r['clipped_pct']:.3f}%",
                         "-" if none else "exact" if sq == math.inf else f"{sq:.1f}"))
        out = _table.table(head, body)
        n_float = sum(r["kind"] == "float" for r in self.rows)
        tail = [f"activation ranges: {self.info.get('method', '?')}; weights int8 "
                f"{self.info.get('weight_granularity', '?').replace('_', '-')}"
                f"{', bias corrected' if self.info.get('bias_correction') else ''}; "
                f"statistics on {self.info.get('report_samples', 'the calibration data')}"]
        if n_float:
            tail.append(f"{n_float} layer(s) run in float between dequantize and quantize: "
                        + ", ".join(r["layer"] for r in self.rows if r["kind"] == "float"))
        return "\n".join(out + [""] + tail)


# ---------------------------------------------------------------------------------------------
# load_model


def _bad(path, msg):
    return ValueError(f"{path}: not a valid quantc model file: {msg}")


def load_model(path):
    """Read a model written by :meth:`QuantizedModel.save` (no pickle). Sizes, dtypes, scales
    (positive, finite) and zero points (ints in the activation dtype's range) are checked; a
    mismatch raises ValueError naming the file and the tensor. A model runs as the quantc that
    wrote it ran it: a file from before format version 6 runs a Mul of two activations in
    float (dequantize, float32 multiply, quantize), not on ``qlinear_mul``."""
    from .io import TensorReader
    path = os.fspath(path)
    with TensorReader(path) as r:
        meta = r.metadata
        if meta.get("format") != FORMAT:
            raise _bad(path, "no quantc model metadata (was it written by "
                             "QuantizedModel.save?)")
        if meta.get("version") not in [str(v) for v in range(1, FORMAT_VERSION + 1)]:
            raise _bad(path, f"format version {meta.get('version')!r}, this quantc reads 1 to "
                             f"{FORMAT_VERSION}")
        try:
            g = json.loads(meta["graph"])
        except (KeyError, ValueError, RecursionError) as e:
            raise _bad(path, f"unreadable graph ({type(e).__name__})") from None
        tensors = {n: r.read(n) for n in r.names}
    try:
        return _from_saved(g, tensors, int(meta["version"]))
    except ValueError as e:
        raise _bad(path, str(e)) from None
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from None


def _from_saved(g, tensors, version):
    # the activations' (scale, zero_point, dtype): what QuantizedModel would otherwise take
    # as it comes (a bool scale, a zero point of 1.7 truncated, an int8 tensor in a uint8 model)
    adt = g["activation_dtype"]
    if adt not in ("uint8", "int8"):
        raise ValueError(f"activation_dtype: expected 'uint8' or 'int8', got {adt!r}")
    if g["io"] not in ("float", "uint8", "int8"):
        raise ValueError(f"io: expected 'float', 'uint8' or 'int8', got {g['io']!r}")
    lo, hi = int(np.iinfo(adt).min), int(np.iinfo(adt).max)
    f32_max = float(np.finfo(np.float32).max)
    given = (g.get("info") or {}).get("given_ranges", [])
    if not (isinstance(given, list) and all(isinstance(t, str) for t in given)):
        raise ValueError(f"info: given_ranges: expected a list of tensor names, got {given!r}")

    def scale_ok(s):  # a positive float32 (not a bool, not 0 once rounded to float32)
        return type(s) in (int, float) and 0 < s <= f32_max and np.float32(s) > 0

    qparams = {}
    for k, v in g["qparams"].items():
        if not (isinstance(v, list) and len(v) == 3 and scale_ok(v[0]) and type(v[1]) is int
                and lo <= v[1] <= hi and v[2] == adt):
            raise ValueError(f"tensor {k!r}: qparams {v!r}, expected [scale (a positive finite "
                             f"float), zero point (an int in [{lo}, {hi}]), {adt!r}]")
        qparams[k] = tuple(v)
    init = {k[len("init::"):]: v for k, v in tensors.items() if k.startswith("init::")}
    weights = {}
    for k, v in tensors.items():
        if k.startswith("init::"):
            continue
        parts = k.split("::")
        if len(parts) == 2:
            weights.setdefault(parts[0], {})[parts[1]] = v
        elif len(parts) == 3 and parts[1].startswith("const"):
            weights.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = v
        else:
            raise ValueError(f"unexpected tensor {k!r}")
    for name, wd in weights.items():
        for k in list(wd):
            if k.startswith("const"):
                c = wd[k]
                cs, cz = c["scale"], c["zero_point"]
                if c["q"].dtype != adt or cs.shape != () or cz.shape != () or \
                        cz.dtype.kind not in "iu" or not lo <= int(cz) <= hi or \
                        not scale_ok(float(cs)):
                    raise ValueError(f"tensor '{name}::{k}': expected {adt} values, a "
                                     f"positive finite scale and a zero point in [{lo}, {hi}]")
                wd[k] = (c["q"], np.float32(cs), int(cz))
        wd.setdefault("bias", None)
    nodes = [Node(**n) for n in g["nodes"]]
    for node in nodes:  # float weights of int8 layers, rebuilt from the int8 values
        wd = weights.get(node.name)
        if wd is None or "weight" not in wd:
            continue
        w, s = wd["weight"], wd["weight_scale"]
        if w.dtype != np.int8 or s.dtype != np.float32 or s.shape != (w.shape[0],):
            raise ValueError(f"{node.name}: weight must be int8 with one float32 scale per "
                             f"output channel")
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError(f"tensor '{node.name}::weight_scale': expected positive finite "
                             f"scales")
        if wd["bias"] is not None and (wd["bias"].dtype != np.int32 or
                                       wd["bias"].shape != (w.shape[0],)):
            raise ValueError(f"{node.name}: bias must be int32 ({w.shape[0]},)")
        deq = (w.astype(np.float32) * s.reshape((-1,) + (1,) * (w.ndim - 1)))
        init[node.inputs[1]] = deq if node.op != "MatMul" else np.ascontiguousarray(deq.T)
        if wd["bias"] is not None and len(node.inputs) > 2:  # Conv, planned Gemm: input 2
            xs = np.float32(qparams[node.inputs[0]][0])
            init[node.inputs[2]] = (wd["bias"] * (xs * s).astype(np.float64)).astype(np.float32)
    model = Model(dict((k, v) for k, v in g["inputs"]), nodes, g["outputs"], init, g["name"])
    arithmetic = g.get("arithmetic", "reference")
    if arithmetic not in ("reference", "onnxruntime"):
        raise ValueError(f"arithmetic: expected 'reference' or 'onnxruntime', got "
                         f"{arithmetic!r}")
    qm = QuantizedModel.__new__(QuantizedModel)
    qm._float_mul = version < 6  # as the quantc that wrote it ran it (see FORMAT_VERSION)
    qm.__init__(model, qparams, weights, io=g["io"], activation_dtype=adt,
                info=g.get("info"), arithmetic=arithmetic)
    return qm
