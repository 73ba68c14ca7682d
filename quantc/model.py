"""Float models as data: a list of ONNX-style nodes over named tensors, a builder, a NumPy runner.

A :class:`Model` holds graph inputs (name -> shape, ``None`` for a free dimension such as the
batch), a list of :class:`Node` (``op``, input names, output names, attributes) in
execution order, named constant tensors (``initializers``: weights, biases, shapes) and the
graph output names. Ops and attributes are ONNX's (opset 13 and later), so a model read by
:meth:`Model.from_onnx` and one written with :class:`ModelBuilder` are the same data:

    Conv, Gemm, MatMul, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add, Mul,
    Concat, Flatten, Reshape, BatchNormalization, Softmax, Identity, Dropout (inference:
    identity), Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu, ReduceMean (axes as an
    attribute or, from opset 18, a constant input), Transpose, Squeeze, Unsqueeze (axes as
    an attribute or, from opset 13, a constant input)

Every op, attribute and shape is checked when the model is built (shapes are inferred with
``None`` for unknown dimensions), so an unsupported op or a weight of the wrong shape is an
error naming the node before anything runs. ``model(x)`` runs the float model in NumPy
float32 (convolutions as im2col + matmul).
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _dtypes

__all__ = ["Model", "ModelBuilder", "Node"]


class Node:
    """One op: ``op`` (ONNX op type), ``inputs``/``outputs`` (tensor names; ``""`` marks an
    omitted optional input), ``attrs`` (ONNX attributes as Python values) and ``name``."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "name")

    def __init__(self, op, inputs, outputs, attrs=None, name=None):
        self.op = str(op)
        self.inputs = tuple(str(i) for i in inputs)
        self.outputs = tuple(str(o) for o in outputs)
        self.attrs = dict(attrs or {})
        self.name = str(name) if name else f"{self.op}_{self.outputs[0] if self.outputs else ''}"

    def __repr__(self):
        return (f"Node({self.op!r}, inputs={list(self.inputs)}, outputs={list(self.outputs)}, "
                f"attrs={self.attrs}, name={self.name!r})")

    def to_dict(self):
        """The node as a JSON-ready dict (op, inputs, outputs, attrs, name), as saved."""
        return {"op": self.op, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "attrs": self.attrs, "name": self.name}


def _err(node, msg):
    return ValueError(f"node {node.name!r} ({node.op}): {msg}")


def namer(taken):
    """``fresh(stem)``: a name that is not in ``taken`` and was not given before: ``stem``,
    else ``stem_1``, ``stem_2``, ... (for tensors and nodes that quantc adds to a graph)."""
    taken = set(taken)

    def fresh(stem):
        name, k = stem, 0
        while name in taken:
            k += 1
            name = f"{stem}_{k}"
        taken.add(name)
        return name
    return fresh


def tensor_names(model):
    """Every tensor name a model uses: inputs, constants, node inputs and outputs."""
    return set(model.inputs) | set(model.initializers) | set(model.outputs) | {
        t for n in model.nodes for t in n.inputs + n.outputs}


# ---------------------------------------------------------------------------------------------
# attribute helpers


def _ints(node, key, n, default):
    v = node.attrs.get(key, default)
    try:
        v = tuple(int(i) for i in v)
    except TypeError:
        raise _err(node, f"attribute {key}: expected {n} ints, got {v!r}") from None
    if len(v) != n:
        raise _err(node, f"attribute {key}: expected {n} ints, got {list(v)}")
    return v


def _pool_geometry(node, in_shape, kernel):
    """(strides, pads, dilations) of a 2-D Conv/MaxPool/AveragePool node, auto_pad resolved."""
    strides = _ints(node, "strides", 2, (1, 1))
    dilations = _ints(node, "dilations", 2, (1, 1))
    pads = _ints(node, "pads", 4, (0, 0, 0, 0))
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise _err(node, f"expected strides/dilations >= 1 and pads >= 0, got strides "
                         f"{list(strides)}, dilations {list(dilations)}, pads {list(pads)}")
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if in_shape is None or in_shape[2] is None or in_shape[3] is None:
            raise _err(node, f"auto_pad={auto} needs a known input height and width")
        begin, end = [], []
        for d in range(2):
            size = in_shape[2 + d]
            out = -(-size // strides[d])
            total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        pads = (begin[0], begin[1], end[0], end[1])
    elif auto != "NOTSET":
        raise _err(node, f"attribute auto_pad: expected NOTSET, VALID, SAME_UPPER or "
                         f"SAME_LOWER, got {auto!r}")
    return strides, pads, dilations


def _out_size(node, size, k, s, d, p0, p1, empty=False):
    """ONNX's output size; ``empty``: the input plane has no pixels, so a kernel that does
    not fit gives 0 (as the kernels do), not an error."""
    if size is None:
        return None
    eff = (k - 1) * d + 1
    if size + p0 + p1 < eff:
        if empty:
            return 0
        raise _err(node, f"the kernel ({k}, dilation {d}) is larger than the padded input "
                         f"({size} + {p0} + {p1})")
    return (size + p0 + p1 - eff) // s + 1


def _dim_eq(a, b):
    return a is None or b is None or a == b


def _fmt_shape(s):
    return "(" + ", ".join("N" if d is None else str(d) for d in s) + ")"


# ---------------------------------------------------------------------------------------------
# float kernels (NumPy float32)


def _pad_nchw(x, pads, value=0.0):
    t, left, b, r = pads
    if t or left or b or r:
        x = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=value)
    return x


def _windows(x, kernel, strides, pads, dilations, value=0.0):
    """A (N, C, kH, kW, OH, OW) strided view of the padded input (no copy)."""
    x = _pad_nchw(x, pads, value)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh = max(0, (h - ((kh - 1) * dh + 1)) // sh + 1)  # (0: an empty plane, see _out_size)
    ow = max(0, (w - ((kw - 1) * dw + 1)) // sw + 1)
    s = x.strides
    return as_strided(x, (n, c, kh, kw, oh, ow),
                      (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def conv2d_float(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1):
    """ONNX Conv in float32: im2col (a strided view, copied) times the weights.

    The columns of a large batch are copied a few images (about 4 MiB) at a time, so the GEMM
    reads them from cache (batch 8, 3x3 64->64 at 56x56: 1.2-1.5x over one copy of the whole
    batch). Each image is its own GEMM, except when the weights outgrow a core's L2 cache
    (group 1, over 1 MiB, as in ResNet's last stages): then the chunk's images are one GEMM
    (M, K) @ (K, images * OH * OW), which reads the weights once instead of once per image
    (batch 8, 3x3 512->512: 1.2-1.3x at 7x7, 2-3x at 2x2). Merging small layers is slower
    (the bundled CNN's 32x144 @ 144x4096 is slower in OpenBLAS than 64 GEMMs of 144x64)."""
    m, cg, kh, kw = w.shape
    n = x.shape[0]
    cols = _windows(x, (kh, kw), strides, pads, dilations)
    oh, ow = cols.shape[4], cols.shape[5]
    k, p = cg * kh * kw, oh * ow
    wg = w.reshape(group, m // group, k)
    step = max(1, (1 << 22) // max(1, group * k * p * 4))
    merge = group == 1 and step > 1 and n > 1 and m * k * 4 > (1 << 20)
    if step >= n and not merge:
        y = np.matmul(wg, cols.reshape(n, group, k, p))
    else:
        y = np.empty((n, m, p), np.float32)
        for i in range(0, n, step):
            c = cols[i:i + step]
            s = c.shape[0]
            if merge:
                c = c.transpose(1, 2, 3, 0, 4, 5).reshape(k, s * p)
                y[i:i + s] = (wg[0] @ c).reshape(m, s, p).transpose(1, 0, 2)
            else:
                np.matmul(wg, c.reshape(s, group, k, p),
                          out=y[i:i + s].reshape(s, group, m // group, p))
    y = y.reshape(n, m, oh, ow)
    if b is not None:
        y += b[:, None, None]
    return y


def _f_conv(node, ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    strides, pads, dilations = _pool_geometry(node, x.shape, w.shape[2:])
    return conv2d_float(x, w, b, strides, pads, dilations, int(a.get("group", 1)))


def _f_gemm(node, ins, a):
    x, w = ins[0], ins[1]
    if a.get("transA", 0):
        x = x.T
    if a.get("transB", 0):
        w = w.T
    y = x @ w
    alpha = np.float32(a.get("alpha", 1.0))
    if alpha != 1:
        y *= alpha
    if len(ins) > 2 and ins[2] is not None:
        beta = np.float32(a.get("beta", 1.0))
        y += ins[2] * beta if beta != 1 else ins[2]
    return y


def _f_pool(node, ins, a, is_max):
    x = ins[0]
    kernel = _ints(node, "kernel_shape", 2, None)
    strides, pads, dilations = _pool_geometry(node, x.shape, kernel)
    # one pass over the output per kernel tap (a reduction over the strided window axes is
    # many times slower)
    win = _windows(x, kernel, strides, pads, dilations if is_max else (1, 1),
                   value=-np.inf if is_max else 0.0)
    total = win[:, :, 0, 0].copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                (np.maximum if is_max else np.add)(total, win[:, :, i, j], out=total)
    if is_max:
        return total
    if a.get("count_include_pad", 0) or not any(pads):
        return total / np.float32(kernel[0] * kernel[1])
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    cnt = _windows(ones, kernel, strides, pads, (1, 1)).sum(axis=(2, 3))
    return total / cnt


def _f_clip(node, ins, a):
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    x = ins[0]
    if lo is not None:
        x = np.maximum(x, np.float32(lo))
    if hi is not None:
        x = np.minimum(x, np.float32(hi))
    return x


def _f_bn(node, ins, a):
    x, gamma, beta, mean, var = ins[:5]
    k = gamma / np.sqrt(var + np.float32(a.get("epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) * k.reshape(shape) + beta.reshape(shape)


def _f_softmax(node, ins, a):
    x = ins[0]
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _flatten_shape(shape, axis):
    axis = axis + len(shape) if axis < 0 else axis
    return (math.prod(shape[:axis]), math.prod(shape[axis:]))


def _reshape_target(in_shape, target):
    """ONNX Reshape's output shape (0 copies the input dimension, -1 is inferred)."""
    out = [in_shape[i] if t == 0 else int(t) for i, t in enumerate(target)]
    return out


def _run_reshape(node, x, target):
    """``x`` reshaped as Reshape ``node`` with the constant ``target`` says; an input it
    cannot take (a -1 beside a 0-size dimension, as onnxruntime refuses it too) is a
    ValueError naming the node."""
    shape = _reshape_target(x.shape, target)
    try:
        return x.reshape(shape)
    except ValueError:
        raise _err(node, f"cannot reshape an input of shape {x.shape} to {list(target)} "
                         f"(-> {shape})") from None


def _f_reshape(node, ins, a):
    return _run_reshape(node, ins[0], [int(t) for t in ins[1]])


def _axes_of(node, axes_input):
    """A Squeeze/Unsqueeze/ReduceMean node's axes: its second input (the value of
    ``axes_input``, opset 13+/18+) or its attribute, or None."""
    if axes_input is not None:
        return [int(v) for v in np.asarray(axes_input).reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else list(axes)


def _normalized_axes(node, axes, rank):
    if any(not -rank <= a < rank for a in axes):
        raise _err(node, f"axes {axes} out of range for rank {rank}")
    norm = sorted(a % rank for a in axes)
    if len(set(norm)) != len(norm):
        raise _err(node, f"axes {axes}: an axis is repeated")
    return norm


def squeezed_shape(node, axes_input, shape):
    """The output shape of Squeeze ``node`` on ``shape`` (None: an unknown dimension); a
    squeezed axis must have size 1 (unknown is taken on trust, checked at run time)."""
    axes = _axes_of(node, axes_input)
    if not axes:
        if any(d is None for d in shape):
            raise _err(node, f"Squeeze without axes needs every dimension known, got "
                             f"{_fmt_shape(shape)}")
        return tuple(d for d in shape if d != 1)
    norm = _normalized_axes(node, axes, len(shape))
    for a in norm:
        if shape[a] not in (1, None):
            raise _err(node, f"axis {a} has size {shape[a]}, not 1: it cannot be squeezed")
    return tuple(d for i, d in enumerate(shape) if i not in norm)


def unsqueezed_shape(node, axes_input, shape):
    """The output shape of Unsqueeze ``node`` on ``shape``."""
    axes = _axes_of(node, axes_input)
    if not axes:
        raise _err(node, "axes are required")
    rank = len(shape) + len(axes)
    norm = _normalized_axes(node, axes, rank)
    it = iter(shape)
    return tuple(1 if i in norm else next(it) for i in range(rank))


def transpose_perm(node, rank):
    """A Transpose node's permutation (default: the axes reversed)."""
    perm = node.attrs.get("perm")
    if perm is None:
        return tuple(range(rank - 1, -1, -1))
    if sorted(perm) != list(range(rank)):
        raise _err(node, f"perm {list(perm)} is not a permutation of the {rank} axes")
    return tuple(perm)


def _f_squeeze(node, ins, a):
    x = ins[0]
    shape = squeezed_shape(node, ins[1] if len(ins) > 1 else None, x.shape)
    return x.reshape(shape)


def _f_unsqueeze(node, ins, a):
    x = ins[0]
    return x.reshape(unsqueezed_shape(node, ins[1] if len(ins) > 1 else None, x.shape))


def reduce_axes(node, axes_input, rank):
    """The axes a ReduceMean node averages over, as a sorted tuple of non-negative ints
    (every axis when none are given; () for noop_with_empty_axes=1 without axes).
    ``axes_input``: the value of its second input (opset 18+), or None."""
    axes = _axes_of(node, axes_input)
    if not axes:
        return () if int(node.attrs.get("noop_with_empty_axes", 0)) else tuple(range(rank))
    return tuple(_normalized_axes(node, axes, rank))


def _f_reduce_mean(node, ins, a):
    x = ins[0]
    axes = reduce_axes(node, ins[1] if len(ins) > 1 else None, x.ndim)
    if not axes:
        return x
    keep = bool(int(a.get("keepdims", 1)))
    if any(x.shape[i] == 0 for i in axes):  # a mean of nothing: 0, as onnxruntime gives
        return np.zeros(np.sum(x, axis=axes, keepdims=keep).shape, np.float32)
    return x.mean(axis=axes, keepdims=keep, dtype=np.float32)


def _f_sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) = inf below x = -88: 1 / inf = 0, as wanted
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


def _f_hard_sigmoid(x, alpha, beta):
    return np.clip(x * np.float32(alpha) + np.float32(beta), np.float32(0), np.float32(1))


# element-wise functions of one input (ONNX semantics, float32): an int8 model runs each as a
# 256-entry table of its input's codes (quantc.qmodel)
UNARY = {
    "Sigmoid": lambda n, x: _f_sigmoid(x),
    "Tanh": lambda n, x: np.tanh(x),
    "HardSigmoid": lambda n, x: _f_hard_sigmoid(x, n.attrs.get("alpha", 0.2),
                                                n.attrs.get("beta", 0.5)),
    "HardSwish": lambda n, x: x * _f_hard_sigmoid(x, 1 / 6, 0.5),
    "LeakyRelu": lambda n, x: np.where(x >= 0, x, x * np.float32(n.attrs.get("alpha", 0.01))),
}

_FLOAT = {
    "Conv": _f_conv,
    "Gemm": _f_gemm,
    "MatMul": lambda n, ins, a: (np.matmul(ins[0], ins[1]) if len(ins) < 3
                                 else np.matmul(ins[0], ins[1]) + ins[2]),
    "Relu": lambda n, ins, a: np.maximum(ins[0], np.float32(0)),
    "Clip": _f_clip,
    "MaxPool": lambda n, ins, a: _f_pool(n, ins, a, True),
    "AveragePool": lambda n, ins, a: _f_pool(n, ins, a, False),
    "GlobalAveragePool": lambda n, ins, a: ins[0].mean(axis=(2, 3), keepdims=True,
                                                        dtype=np.float32),
    "Add": lambda n, ins, a: ins[0] + ins[1],
    "Mul": lambda n, ins, a: ins[0] * ins[1],
    "Concat": lambda n, ins, a: np.concatenate(ins, axis=int(a.get("axis"))),
    "Flatten": lambda n, ins, a: ins[0].reshape(_flatten_shape(ins[0].shape,
                                                               int(a.get("axis", 1)))),
    "Reshape": _f_reshape,
    "BatchNormalization": _f_bn,
    "Softmax": _f_softmax,
    "Identity": lambda n, ins, a: ins[0],
    "Dropout": lambda n, ins, a: ins[0],
    "ReduceMean": _f_reduce_mean,
    "Transpose": lambda n, ins, a: np.transpose(ins[0], transpose_perm(n, ins[0].ndim)),
    "Squeeze": _f_squeeze,
    "Unsqueeze": _f_unsqueeze,
    **{op: (lambda f: lambda n, ins, a: f(n, ins[0]))(f) for op, f in UNARY.items()},
}

# attributes each op accepts (others are an error), with the values quantc can run
_ATTRS = {
    "Conv": {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", "activation"},
    "Gemm": {"alpha", "beta", "transA", "transB", "activation"},
    "MatMul": {"activation"},
    "Relu": set(),
    "Clip": {"min", "max"},
    "MaxPool": {"kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad",
                "storage_order"},
    "AveragePool": {"kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad",
                    "count_include_pad"},
    "GlobalAveragePool": set(),
    "Add": {"activation"},
    "Concat": {"axis"},
    "Flatten": {"axis"},
    "Reshape": {"allowzero"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial"},
    "Softmax": {"axis"},
    "Identity": set(),
    "Dropout": {"seed", "ratio"},
    "Mul": set(),
    "Sigmoid": set(), "Tanh": set(), "HardSigmoid": {"alpha", "beta"}, "HardSwish": set(),
    "LeakyRelu": {"alpha"},
    "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "Transpose": {"perm"}, "Squeeze": {"axes"}, "Unsqueeze": {"axes"},
}
SUPPORTED_OPS = tuple(_FLOAT)
# the type of each attribute's value (ONNX's INT, INTS, FLOAT, STRING); "activation" is
# checked by activation_bounds
_ATTR_KIND = {"group": "int", "transA": "int", "transB": "int", "ceil_mode": "int",
              "storage_order": "int", "count_include_pad": "int", "allowzero": "int",
              "training_mode": "int", "axis": "int", "seed": "int", "spatial": "int",
              "kernel_shape": "ints", "strides": "ints", "pads": "ints", "dilations": "ints",
              "alpha": "float", "beta": "float", "epsilon": "float", "momentum": "float",
              "ratio": "float", "min": "bound", "max": "bound", "auto_pad": "str",
              "axes": "ints", "keepdims": "int", "noop_with_empty_axes": "int",
              "perm": "ints"}


def _attr_value(node, key, v):
    """An attribute's value as the plain Python type of its kind (NumPy ints and arrays,
    bytes for a string accepted), or a clear error naming it (a float axis is not truncated,
    a Clip bound may be infinite but not NaN)."""
    def as_int(i):
        if isinstance(i, (bool, np.bool_, int, np.integer)):
            return int(i)
        raise TypeError
    kind = _ATTR_KIND.get(key)
    try:
        if kind == "int":
            return as_int(v)
        if kind == "ints":
            if not isinstance(v, (list, tuple, np.ndarray)) or np.ndim(v) != 1:
                raise TypeError
            return [as_int(i) for i in v]
        if kind in ("float", "bound"):
            if isinstance(v, (bool, np.bool_)) or not isinstance(
                    v, (int, float, np.integer, np.floating)):
                raise TypeError
            f = float(v)
            if math.isnan(f) or (kind == "float" and math.isinf(f)):
                raise TypeError
            return f
        if kind == "str":
            return v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else \
                as_int(None)
    except (TypeError, OverflowError, UnicodeDecodeError):
        what = {"int": "an int", "ints": "a list of ints", "float": "a finite number",
                "bound": "a number (not NaN)", "str": "a string"}[kind]
        raise _err(node, f"attribute {key}: expected {what}, got {v!r}") from None
    return v


# ops that may carry a fused activation: quantc's attribute ``activation``, not ONNX's, set by
# the planning step of quantize_model: "Relu" or ["Clip", lo, hi] applied to the op's result
FUSABLE = ("Conv", "Gemm", "MatMul", "Add")


def activation_bounds(node):
    """(lo, hi) of a node's fused activation (None, None without one)."""
    act = node.attrs.get("activation")
    if act is None:
        return None, None
    if act == "Relu":
        return 0.0, None
    if isinstance(act, (list, tuple)) and len(act) == 3 and act[0] == "Clip":
        return float(act[1]), float(act[2])
    raise _err(node, f"attribute activation: expected 'Relu' or ['Clip', lo, hi], got {act!r}")


def _apply_activation(node, y):
    lo, hi = activation_bounds(node)
    if lo is not None:
        y = np.maximum(y, np.float32(lo))
    if hi is not None:
        y = np.minimum(y, np.float32(hi))
    return y


def evaluate(node, ins):
    """The float results of ``node`` on the arrays ``ins`` (None for an omitted input), fused
    activation applied: a list, one per output quantc computes."""
    res = _FLOAT[node.op](node, ins, node.attrs)
    if "activation" in node.attrs:
        res = _apply_activation(node, res)
    return list(res) if isinstance(res, (list, tuple)) else [res]


# (min, max) number of inputs per op; optional inputs may be ""
# MatMul's optional third input, a 1-D bias added to the last axis, is the planned form of
# MatMul + Add(constant) (quantc.qmodel.plan); ONNX files have two
_ARITY = {"Conv": (2, 3), "Gemm": (2, 3), "MatMul": (2, 3), "Relu": (1, 1), "Clip": (1, 3),
          "MaxPool": (1, 1), "AveragePool": (1, 1), "GlobalAveragePool": (1, 1), "Add": (2, 2),
          "Concat": (1, 1 << 16), "Flatten": (1, 1), "Reshape": (2, 2),
          "BatchNormalization": (5, 5), "Softmax": (1, 1), "Identity": (1, 1),
          "Dropout": (1, 3), "Mul": (2, 2), "Sigmoid": (1, 1), "Tanh": (1, 1),
          "HardSigmoid": (1, 1), "HardSwish": (1, 1), "LeakyRelu": (1, 1),
          "ReduceMean": (1, 2), "Transpose": (1, 1), "Squeeze": (1, 2), "Unsqueeze": (1, 2)}


# ---------------------------------------------------------------------------------------------
# shape inference (None = unknown dimension); each function also validates its node


def _need_const(node, model, i, what):
    name = node.inputs[i] if i < len(node.inputs) else ""
    if name not in model.initializers:
        raise _err(node, f"{what} (input {i}, {name!r}) must be a constant initializer")
    return model.initializers[name]


def _s_conv(node, model, shapes):
    x = shapes[0]
    w = _need_const(node, model, 1, "the weight")
    if len(x) != 4 or w.ndim != 4:
        raise _err(node, f"only 2-D convolutions are supported: expected a 4-D input and "
                         f"weight, got input {_fmt_shape(x)} and weight {w.shape}")
    group = int(node.attrs.get("group", 1))
    m, cg, kh, kw = w.shape
    if "kernel_shape" in node.attrs and _ints(node, "kernel_shape", 2, None) != (kh, kw):
        raise _err(node, f"kernel_shape {node.attrs['kernel_shape']} does not match the "
                         f"weight {w.shape}")
    if group < 1 or m % group:
        raise _err(node, f"group {group}: expected a divisor of the {m} output channels")
    if x[1] is not None and x[1] != cg * group:
        raise _err(node, f"the input has {x[1]} channels, the weight {w.shape} with group "
                         f"{group} expects {cg * group}")
    if len(node.inputs) > 2 and node.inputs[2]:
        b = _need_const(node, model, 2, "the bias")
        if b.shape != (m,):
            raise _err(node, f"bias: expected shape ({m},), got {b.shape}")
    strides, pads, dil = _pool_geometry(node, x, (kh, kw))
    empty = 0 in x[2:]
    return [(x[0], m, _out_size(node, x[2], kh, strides[0], dil[0], pads[0], pads[2], empty),
             _out_size(node, x[3], kw, strides[1], dil[1], pads[1], pads[3], empty))]


def _s_gemm(node, model, shapes):
    a = shapes[0]
    if len(a) != 2:
        raise _err(node, f"expected a 2-D input, got {_fmt_shape(a)}")
    b = shapes[1]
    if len(b) != 2:
        raise _err(node, f"expected a 2-D B, got {_fmt_shape(b)}")
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    m, k = (a[1], a[0]) if ta else a
    kb, n = (b[1], b[0]) if tb else b
    if not _dim_eq(k, kb):
        raise _err(node, f"inner dimensions differ: A {_fmt_shape(a)} (transA={ta}), "
                         f"B {_fmt_shape(b)} (transB={tb})")
    if len(node.inputs) > 2 and node.inputs[2]:
        c = shapes[2]
        try:
            np.broadcast_shapes(tuple(1 if d is None else d for d in c),
                                (1 if m is None else m, 1 if n is None else n))
        except ValueError:
            raise _err(node, f"C {_fmt_shape(c)} does not broadcast to "
                             f"{_fmt_shape((m, n))}") from None
    return [(m, n)]


def _s_matmul(node, model, shapes):
    a, b = shapes[:2]
    if len(a) < 1 or len(b) < 1:
        raise _err(node, "expected inputs of at least 1 dimension")
    if len(shapes) == 3 and (len(b) < 2 or len(shapes[2]) != 1
                             or not _dim_eq(shapes[2][0], b[-1])):
        raise _err(node, f"a bias must be 1-D with one value per output column, got "
                         f"{_fmt_shape(shapes[2])} for {_fmt_shape(b)}")
    if len(a) >= 2 and len(b) >= 2 and not _dim_eq(a[-1], b[-2]):
        raise _err(node, f"inner dimensions differ: {_fmt_shape(a)} @ {_fmt_shape(b)}")
    if len(b) == 1:
        return [a[:-1]]
    if len(a) == 1:
        return [b[:-2] + b[-1:]]
    lead = _broadcast(node, a[:-2], b[:-2])
    return [lead + (a[-2], b[-1])]


def _broadcast(node, *shapes):
    n = max(len(s) for s in shapes)
    out = []
    for i in range(n):
        dims = [s[len(s) - n + i] for s in shapes if len(s) - n + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise _err(node, "shapes do not broadcast: " + " and ".join(map(_fmt_shape, shapes)))
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _s_same(node, model, shapes):
    return [shapes[0]]


def _s_pool(node, model, shapes):
    x = shapes[0]
    if len(x) != 4:
        raise _err(node, f"expected a 4-D NCHW input, got {_fmt_shape(x)}")
    kernel = _ints(node, "kernel_shape", 2, None)
    if int(node.attrs.get("ceil_mode", 0)):
        raise _err(node, "ceil_mode=1 is not supported")
    if int(node.attrs.get("storage_order", 0)):
        raise _err(node, "storage_order=1 is not supported")
    strides, pads, dil = _pool_geometry(node, x, kernel)
    if node.op == "AveragePool" and dil != (1, 1):
        raise _err(node, "dilations are not supported for AveragePool")
    if dil != (1, 1):
        raise _err(node, f"dilations {list(dil)} are not supported for pooling")
    if any(p >= k for p, k in zip(pads, kernel + kernel)):
        raise _err(node, f"pads {list(pads)}: each must be smaller than the kernel "
                         f"{list(kernel)}")
    empty = 0 in x[2:]
    return [(x[0], x[1], _out_size(node, x[2], kernel[0], strides[0], 1, pads[0], pads[2], empty),
             _out_size(node, x[3], kernel[1], strides[1], 1, pads[1], pads[3], empty))]


def _s_gap(node, model, shapes):
    x = shapes[0]
    if len(x) != 4:
        raise _err(node, f"expected a 4-D NCHW input, got {_fmt_shape(x)}")
    return [(x[0], x[1], 1, 1)]


def _s_clip(node, model, shapes):
    for i in (1, 2):
        if len(node.inputs) > i and node.inputs[i]:
            v = _need_const(node, model, i, ("min", "max")[i - 1])
            if v.size != 1:
                raise _err(node, f"{('min', 'max')[i - 1]}: expected a scalar, got shape "
                                 f"{v.shape}")
    return [shapes[0]]


def _s_add(node, model, shapes):
    return [_broadcast(node, shapes[0], shapes[1])]


def _s_concat(node, model, shapes):
    if "axis" not in node.attrs:
        raise _err(node, "attribute axis is required")
    rank = len(shapes[0])
    axis = int(node.attrs["axis"])
    if not -rank <= axis < rank:
        raise _err(node, f"axis {axis} out of range for rank {rank}")
    axis %= rank
    out = list(shapes[0])
    for s in shapes[1:]:
        if len(s) != rank or any(not _dim_eq(s[i], out[i]) for i in range(rank) if i != axis):
            raise _err(node, "inputs differ outside the concatenation axis: "
                             + ", ".join(map(_fmt_shape, shapes)))
        out[axis] = None if out[axis] is None or s[axis] is None else out[axis] + s[axis]
    return [tuple(out)]


def _s_flatten(node, model, shapes):
    x = shapes[0]
    axis = int(node.attrs.get("axis", 1))
    if not -len(x) <= axis <= len(x):
        raise _err(node, f"axis {axis} out of range for rank {len(x)}")
    if axis < 0:
        axis += len(x)
    lead, tail = x[:axis], x[axis:]
    prod = (lambda ds: None if any(d is None for d in ds) else math.prod(ds))
    return [(prod(lead), prod(tail))]


def _s_reshape(node, model, shapes):
    target = _need_const(node, model, 1, "the shape")
    if target.ndim != 1 or target.dtype.kind not in "iu":
        raise _err(node, f"shape: expected a 1-D integer tensor, got {target.dtype} "
                         f"{target.shape}")
    if int(node.attrs.get("allowzero", 0)) and 0 in target.tolist():
        # (allowzero=1 without a 0 in the shape, as torch's dynamo exporter writes it, is the
        # same Reshape)
        raise _err(node, "allowzero=1 with a 0 in the shape (a dimension of size 0) is not "
                         "supported")
    x = shapes[0]
    out = []
    for i, t in enumerate(int(v) for v in target):
        if t == 0:
            if i >= len(x):
                raise _err(node, f"shape {target.tolist()}: 0 at {i} beyond the input rank")
            out.append(x[i])
        else:
            out.append(t)
    if out.count(-1) > 1 or any(d is not None and d < -1 for d in out):
        raise _err(node, f"shape {target.tolist()}: expected at most one -1 and no other "
                         f"negative value")
    # an unknown dimension copied by a 0 (the batch in (0, -1)) is on both sides: it cancels
    copied = {i for i, t in enumerate(target.tolist()) if t == 0 and x[i] is None}
    xk = [d for i, d in enumerate(x) if i not in copied]
    ok = [d for i, d in enumerate(out) if i not in copied and d != -1]
    if -1 in out:
        if all(d is not None for d in xk) and all(d is not None for d in ok):
            total, rest = math.prod(xk), math.prod(ok)
            if rest == 0 or total % rest:
                raise _err(node, f"cannot reshape {_fmt_shape(x)} to {target.tolist()}")
            out[out.index(-1)] = total // rest
        else:
            out[out.index(-1)] = None
    elif all(d is not None for d in xk) and all(d is not None for d in ok) and \
            math.prod(xk) != math.prod(ok):
        raise _err(node, f"cannot reshape {_fmt_shape(x)} to {target.tolist()}")
    return [tuple(out)]


def _s_bn(node, model, shapes):
    x = shapes[0]
    if int(node.attrs.get("training_mode", 0)):
        raise _err(node, "training_mode=1 is not supported (export the model in eval mode)")
    if not int(node.attrs.get("spatial", 1)):
        raise _err(node, "spatial=0 (statistics per element) is not supported")
    c = x[1] if len(x) > 1 else None
    for i, what in zip(range(1, 5), ("scale", "B", "mean", "var")):
        v = _need_const(node, model, i, what)
        if v.ndim != 1 or not _dim_eq(c, v.shape[0]):
            raise _err(node, f"{what}: expected shape ({c},), got {v.shape}")
    var = model.initializers[node.inputs[4]].astype(np.float64)
    eps = float(np.float32(node.attrs.get("epsilon", 1e-5)))
    if var.size and not np.all(var + eps > 0):
        i = int(np.argmin(var + eps > 0))
        raise _err(node, f"var + epsilon: expected > 0 in every channel, got {var[i]} + {eps} "
                         f"in channel {i}")
    return [x]


def _s_softmax(node, model, shapes):
    x = shapes[0]
    axis = int(node.attrs.get("axis", -1))
    if not -len(x) <= axis < len(x):
        raise _err(node, f"axis {axis} out of range for rank {len(x)}")
    return [x]


def _s_reduce_mean(node, model, shapes):
    x = shapes[0]
    for key in ("keepdims", "noop_with_empty_axes"):
        if node.attrs.get(key, 0) not in (0, 1):
            raise _err(node, f"attribute {key}: expected 0 or 1, got {node.attrs[key]}")
    axes = reduce_axes(node, _axes_input(node, model), len(x))
    if int(node.attrs.get("keepdims", 1)):
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _axes_input(node, model):
    """The constant axes input of a Squeeze/Unsqueeze/ReduceMean (None without one)."""
    if len(node.inputs) < 2 or not node.inputs[1]:
        return None
    if "axes" in node.attrs:
        raise _err(node, "axes given both as an attribute and as an input")
    given = _need_const(node, model, 1, "axes")
    if given.ndim != 1 or given.dtype.kind not in "iu":
        raise _err(node, f"axes: expected a 1-D integer tensor, got {given.dtype} "
                         f"{given.shape}")
    return given


def _s_squeeze(node, model, shapes):
    return [squeezed_shape(node, _axes_input(node, model), shapes[0])]


def _s_unsqueeze(node, model, shapes):
    return [unsqueezed_shape(node, _axes_input(node, model), shapes[0])]


def _s_transpose(node, model, shapes):
    x = shapes[0]
    return [tuple(x[i] for i in transpose_perm(node, len(x)))]


_SHAPE = {"Conv": _s_conv, "Gemm": _s_gemm, "MatMul": _s_matmul, "Relu": _s_same,
          "Clip": _s_clip, "MaxPool": _s_pool, "AveragePool": _s_pool,
          "GlobalAveragePool": _s_gap, "Add": _s_add, "Concat": _s_concat,
          "Flatten": _s_flatten, "Reshape": _s_reshape, "BatchNormalization": _s_bn,
          "Softmax": _s_softmax, "Identity": _s_same, "Dropout": _s_same, "Mul": _s_add,
          "ReduceMean": _s_reduce_mean, "Transpose": _s_transpose, "Squeeze": _s_squeeze,
          "Unsqueeze": _s_unsqueeze,
          **{op: _s_same for op in UNARY}}


# ---------------------------------------------------------------------------------------------
# the model


def _as_shape(name, shape):
    try:
        out = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"inputs[{name!r}]: expected a shape (ints or None), got "
                        f"{shape!r}") from None
    if any(d is not None and d < 0 for d in out):
        raise ValueError(f"inputs[{name!r}]: expected dimensions >= 0, got {shape!r}")
    return out


class Model:
    """A float model: graph inputs, nodes in execution order, constants and graph outputs.

    ``Model(inputs, nodes, outputs, initializers, name="model")``: ``inputs`` maps each
    graph input's name to its shape (``None`` for a free dimension, e.g. ``(None, 3, 224,
    224)``), ``nodes`` is a list of :class:`Node`, ``outputs`` the names of the graph
    outputs, ``initializers`` maps names to constant arrays (converted to float32 unless
    integer). Nodes may be given in any order that has no cycle; they are sorted
    topologically. Most users build one with :class:`ModelBuilder` or
    :meth:`Model.from_onnx`.

    Attributes: ``inputs`` (dict name -> shape), ``nodes``, ``outputs``, ``initializers``,
    ``shapes`` (dict name -> inferred shape of every tensor), ``name``.

    ``model(x)`` (one input) or ``model({"name": x, ...})`` runs it in float32 and returns
    the output array (a tuple for several outputs).
    """

    def __init__(self, inputs, nodes, outputs, initializers=None, name="model"):
        if isinstance(inputs, (list, tuple)):
            inputs = dict(inputs)
        self.inputs = {str(k): _as_shape(k, v) for k, v in dict(inputs).items()}
        self.outputs = [str(o) for o in ([outputs] if isinstance(outputs, str) else outputs)]
        self.name = str(name)
        self.initializers = {}
        for k, v in dict(initializers or {}).items():
            a = np.asarray(v)
            if _dtypes.is_float(a.dtype):
                a = a.astype(np.float32)
            elif a.dtype.kind not in "iub":
                raise TypeError(f"initializers[{k!r}]: expected a numeric array, got "
                                f"{a.dtype}")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"initializers[{k!r}]: expected finite values")
            self.initializers[str(k)] = a
        if not self.inputs:
            raise ValueError("inputs: expected at least one graph input")
        if not self.outputs:
            raise ValueError("outputs: expected at least one graph output")
        self.nodes = self._sort([n if isinstance(n, Node) else Node(**n) for n in nodes])
        self.shapes = self._infer()

    # -- construction -----------------------------------------------------------------------

    def _sort(self, nodes):
        """Check every node and return them in a topological order."""
        producer = {}
        for name in self.inputs:
            if name in self.initializers:
                raise ValueError(f"inputs: {name!r} is also an initializer")
        seen_names = set()
        for node in nodes:
            if node.op not in _FLOAT:
                raise _err(node, f"unsupported op {node.op!r} (supported: "
                                 f"{', '.join(SUPPORTED_OPS)})")
            extra = set(node.attrs) - _ATTRS[node.op]
            if extra:
                raise _err(node, f"unsupported attribute(s) {sorted(extra)}")
            for key, v in list(node.attrs.items()):
                node.attrs[key] = _attr_value(node, key, v)
            lo, hi = _ARITY[node.op]
            if not lo <= len(node.inputs) <= hi:
                raise _err(node, f"expected {lo}..{hi} inputs, got {len(node.inputs)}")
            required = len(node.inputs) if node.op == "Concat" else lo  # (all variadic ones)
            for k, i in enumerate(node.inputs[:required]):
                if not i:
                    raise _err(node, f"input {k} is omitted (''), which {node.op} requires")
            if not node.outputs or not node.outputs[0]:
                raise _err(node, "expected an output")
            if node.name in seen_names:
                raise _err(node, "duplicate node name")
            seen_names.add(node.name)
            for out in node.outputs:
                if not out:
                    continue
                if out in producer or out in self.inputs or out in self.initializers:
                    raise _err(node, f"output {out!r} is defined twice")
                producer[out] = node
        ready = set(self.inputs) | set(self.initializers) | {""}
        order, pending = [], list(nodes)
        while pending:
            rest = [n for n in pending if not all(i in ready for i in n.inputs)]
            done = [n for n in pending if all(i in ready for i in n.inputs)]
            if not done:
                n = rest[0]
                missing = [i for i in n.inputs if i not in ready and i not in producer]
                if missing:
                    raise _err(n, f"input {missing[0]!r} is not a graph input, an initializer "
                                  f"or the output of any node")
                raise _err(n, "the graph has a cycle")
            for n in done:
                order.append(n)
                ready.update(n.outputs)
            pending = rest
        for o in self.outputs:
            if o not in ready or o == "":
                raise ValueError(f"outputs: {o!r} is not produced by any node or input")
        # quantc computes a node's first output only (MaxPool's Indices, Dropout's mask and
        # BatchNormalization's training statistics are not): another one may be named, unused
        extra = {o: (n, k) for n in order for k, o in enumerate(n.outputs) if k and o}
        for user, name in [(n, i) for n in order for i in n.inputs] + \
                [(None, o) for o in self.outputs]:
            if name in extra:
                n, k = extra[name]
                raise _err(n, f"output {k} ({name!r}) is not supported: quantc computes only "
                              f"the first output of {n.op}, and "
                              + (f"node {user.name!r} reads it" if user is not None
                                 else "it is a graph output"))
        return order

    def _infer(self):
        shapes = dict(self.inputs)
        for k, v in self.initializers.items():
            shapes[k] = v.shape
        for node in self.nodes:
            ins = [shapes[i] if i else None for i in node.inputs]
            outs = _SHAPE[node.op](node, self, ins)
            activation_bounds(node)  # validates a fused activation
            for name, s in zip(node.outputs, outs):
                if name:
                    shapes[name] = tuple(s)
        return shapes

    @classmethod
    def from_onnx(cls, model):
        """Read an ONNX model (a path or an ``onnx.ModelProto``); needs the ``onnx`` package.

        Every node must be one of the supported ops (see the module doc) with attributes
        quantc runs; ``Constant`` nodes become initializers. Errors name the node and op.
        Tensors stored as external data (``MODEL.onnx.data`` beside the file, as
        ``torch.onnx.export`` writes by default) are read from the model's folder, with their
        location and byte ranges checked.
        """
        from .onnx_io import model_from_onnx
        return model_from_onnx(model)

    def to_onnx(self, path=None):
        """The float model as an ``onnx.ModelProto`` (written to ``path`` if given); needs
        ``onnx``. :meth:`from_onnx` reads it back."""
        from .onnx_export import model_to_onnx
        return model_to_onnx(self, path)

    # -- running ----------------------------------------------------------------------------

    def _feeds(self, x, check_nan=True):
        """name -> float32 array for every graph input, shape-checked (and NaN-checked)."""
        if isinstance(x, dict):
            missing = [k for k in self.inputs if k not in x]
            extra = [k for k in x if k not in self.inputs]
            if missing or extra:
                raise ValueError(f"x: expected the inputs {list(self.inputs)}, got {list(x)}")
            items = x.items()
        else:
            if len(self.inputs) != 1:
                raise ValueError(f"x: the model has {len(self.inputs)} inputs "
                                 f"{list(self.inputs)}: pass a dict name -> array")
            items = [(next(iter(self.inputs)), x)]
        feeds = {}
        for name, v in items:
            a = np.asarray(v)
            if (a.dtype.kind not in "fiu" or a.dtype.kind == "b") and \
                    not _dtypes.is_ml_float(a.dtype):
                raise TypeError(f"x[{name!r}]: expected a float array, got dtype {a.dtype}")
            a = np.asarray(a, dtype=np.float32, order="C")  # (ascontiguousarray makes 0-d 1-d)
            want = self.inputs[name]
            if a.ndim != len(want) or any(w is not None and w != d for w, d in
                                          zip(want, a.shape)):
                raise ValueError(f"x[{name!r}]: expected shape {_fmt_shape(want)}, got "
                                 f"{a.shape}")
            if check_nan and np.isnan(a).any():
                raise ValueError(f"x[{name!r}]: expected no NaN values, got "
                                 f"{int(np.isnan(a).sum())}")
            feeds[name] = a
        return feeds

    def run(self, x, *, observe=None):
        """Run the float model; returns a dict of the graph outputs.

        ``observe(name, value)``, if given, is called with every tensor the graph computes
        (the graph inputs first), for calibration.
        """
        env = dict(self.initializers)
        feeds = self._feeds(x)
        env.update(feeds)
        if observe is not None:
            for k, v in feeds.items():
                observe(k, v)
        for node in self.nodes:
            res = evaluate(node, [env[i] if i else None for i in node.inputs])
            for name, v in zip(node.outputs, res):
                if name:
                    v = np.asarray(v, dtype=np.float32)
                    env[name] = v
                    if observe is not None:
                        observe(name, v)
        return {o: env[o] for o in self.outputs}

    def __call__(self, x):
        out = self.run(x)
        vals = tuple(out[o] for o in self.outputs)
        return vals[0] if len(vals) == 1 else vals

    def consumers(self):
        """tensor name -> list of nodes that read it."""
        users = {}
        for node in self.nodes:
            for i in node.inputs:
                if i:
                    users.setdefault(i, []).append(node)
        return users

    def summary(self):
        """A table: node, op, output shape, parameters."""
        rows = [("node", "op", "output", "shape", "params")]
        for n in self.nodes:
            params = sum(self.initializers[i].size for i in n.inputs if i in self.initializers)
            rows.append((n.name, n.op, n.outputs[0], _fmt_shape(self.shapes[n.outputs[0]]),
                         str(params)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self):
        ins = ", ".join(f"{k}{_fmt_shape(v)}" for k, v in self.inputs.items())
        return (f"Model({self.name!r}, inputs: {ins}, {len(self.nodes)} nodes, outputs: "
                f"{self.outputs}, {sum(v.size for v in self.initializers.values())} params)")


def _pair(v, n=2):
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    return tuple(int(i) for i in v)


def _pads(p):
    """An int, (ph, pw) or ONNX (top, left, bottom, right)."""
    if isinstance(p, (int, np.integer)):
        return (int(p),) * 4
    p = tuple(int(i) for i in p)
    return p + p if len(p) == 2 else p


class ModelBuilder:
    """Build a :class:`Model` in a few lines; every method returns the new tensor's name.

    >>> b = ModelBuilder("cnn")
    >>> x = b.input("image", (None, 1, 8, 8))
    >>> h = b.relu(b.conv(x, w1, b1, pads=1))
    >>> h = b.flatten(b.max_pool(h, 2))
    >>> b.output(b.linear(h, w2, b2))
    >>> model = b.build()

    ``kernel``, ``strides``, ``dilations`` take an int or a pair; ``pads`` an int, a pair
    (height, width) or ONNX's (top, left, bottom, right). Weights are NumPy arrays in ONNX
    layouts: conv ``(M, C/group, kH, kW)``, linear ``(out_features, in_features)`` like
    ``torch.nn.Linear``.
    """

    def __init__(self, name="model"):
        self.name = name
        self._inputs, self._nodes, self._outputs, self._init = {}, [], [], {}
        self._count = {}
        self._used = set()  # node, tensor and constant names so far (given ones included)

    def _fresh(self, stem):
        """The next unused ``stem<k>`` (skipping names given explicitly)."""
        k = self._count.get(stem, 0)
        while f"{stem}{k}" in self._used or f"{stem}{k}.out" in self._used:
            k += 1
        self._count[stem] = k + 1
        self._used.add(f"{stem}{k}")
        return f"{stem}{k}"

    def _const(self, value, stem):
        name = self._fresh(stem)
        self._init[name] = np.asarray(value)
        return name

    def _op(self, op, inputs, attrs=None, name=None):
        name = name or self._fresh(op.lower() + "_")
        out = name + ".out"
        self._used.update((name, out))
        self._nodes.append(Node(op, inputs, [out], attrs, name))
        return out

    def input(self, name, shape):
        """A graph input ``name`` of ``shape`` (a tuple; None for a free dimension, as
        the batch); returns ``name``."""
        self._inputs[name] = shape
        self._used.add(name)
        return name

    def output(self, *names):
        """Mark tensors as graph outputs, in order."""
        self._outputs.extend(names)

    def conv(self, x, weight, bias=None, *, strides=1, pads=0, dilations=1, group=1,
             name=None):
        """ONNX Conv: ``weight`` (M, C/group, kH, kW), ``bias`` (M,) or None."""
        w = np.asarray(weight)
        name = name or self._fresh("conv")
        ins = [x, self._const(w, name + ".weight")]
        if bias is not None:
            ins.append(self._const(bias, name + ".bias"))
        return self._op("Conv", ins, {"kernel_shape": list(w.shape[2:]),
                                      "strides": list(_pair(strides)),
                                      "pads": list(_pads(pads)),
                                      "dilations": list(_pair(dilations)), "group": int(group)},
                        name)

    def linear(self, x, weight, bias=None, *, name=None):
        """``x @ weight.T + bias`` (ONNX Gemm with transB=1)."""
        name = name or self._fresh("fc")
        ins = [x, self._const(weight, name + ".weight")]
        if bias is not None:
            ins.append(self._const(bias, name + ".bias"))
        return self._op("Gemm", ins, {"transB": 1}, name)

    def matmul(self, x, b, *, name=None):
        """``x @ b`` with a constant ``b`` (K, N)."""
        name = name or self._fresh("matmul")
        return self._op("MatMul", [x, self._const(b, name + ".b")], None, name)

    def batch_norm(self, x, scale, bias, mean, var, *, epsilon=1e-5, name=None):
        """ONNX BatchNormalization (inference): ``(x - mean) / sqrt(var + epsilon) * scale
        + bias`` per channel (axis 1); folded into the Conv/Gemm before it at conversion
        (else it runs in float)."""
        name = name or self._fresh("bn")
        ins = [x] + [self._const(v, f"{name}.{k}") for k, v in
                     (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self._op("BatchNormalization", ins, {"epsilon": float(epsilon)}, name)

    def relu(self, x, *, name=None):
        """``max(x, 0)``."""
        return self._op("Relu", [x], None, name)

    def clip(self, x, lo, hi, *, name=None):
        """``min(max(x, lo), hi)`` (ONNX Clip with its bounds as constant inputs)."""
        name = name or self._fresh("clip")
        return self._op("Clip", [x, self._const(np.float32(lo), name + ".min"),
                                 self._const(np.float32(hi), name + ".max")], None, name)

    def relu6(self, x, *, name=None):
        """``clip(x, 0, 6)``."""
        return self.clip(x, 0.0, 6.0, name=name)

    def max_pool(self, x, kernel, *, strides=None, pads=0, name=None):
        """ONNX MaxPool; ``strides`` defaults to ``kernel``."""
        k = _pair(kernel)
        return self._op("MaxPool", [x], {"kernel_shape": list(k),
                                         "strides": list(k if strides is None else
                                                         _pair(strides)),
                                         "pads": list(_pads(pads))}, name)

    def avg_pool(self, x, kernel, *, strides=None, pads=0, count_include_pad=False, name=None):
        """ONNX AveragePool; ``strides`` defaults to ``kernel``; padded cells are left
        out of the mean unless ``count_include_pad``."""
        k = _pair(kernel)
        return self._op("AveragePool", [x], {"kernel_shape": list(k),
                                             "strides": list(k if strides is None else
                                                             _pair(strides)),
                                             "pads": list(_pads(pads)),
                                             "count_include_pad": int(count_include_pad)}, name)

    def global_avg_pool(self, x, *, name=None):
        """The mean over each channel's plane: (N, C, H, W) -> (N, C, 1, 1)."""
        return self._op("GlobalAveragePool", [x], None, name)

    def _binary(self, op, a, b, name):
        """An element-wise op of two operands, each a tensor name or an array (a constant)."""
        name = name or self._fresh(op.lower() + "_")
        ins = [v if isinstance(v, str) else self._const(np.asarray(v, np.float32),
                                                        f"{name}.const{i}")
               for i, v in enumerate((a, b))]
        return self._op(op, ins, None, name)

    def add(self, a, b, *, name=None):
        """``a + b`` with NumPy broadcasting; either may be an array (a constant)."""
        return self._binary("Add", a, b, name)

    def mul(self, a, b, *, name=None):
        """``a * b`` with NumPy broadcasting; either may be an array (a constant). In a
        converted model a Mul of two activations runs in int8 (``qlinear_mul``); a Mul by a
        constant runs in float, the constant kept exact."""
        return self._binary("Mul", a, b, name)

    def sigmoid(self, x, *, name=None):
        """``1 / (1 + exp(-x))``."""
        return self._op("Sigmoid", [x], None, name)

    def tanh(self, x, *, name=None):
        """``tanh(x)``."""
        return self._op("Tanh", [x], None, name)

    def hard_sigmoid(self, x, *, alpha=0.2, beta=0.5, name=None):
        """``clip(alpha * x + beta, 0, 1)`` (ONNX's defaults; torch's Hardsigmoid is
        ``alpha=1/6``)."""
        return self._op("HardSigmoid", [x], {"alpha": float(alpha), "beta": float(beta)}, name)

    def hard_swish(self, x, *, name=None):
        """``x * clip(x / 6 + 0.5, 0, 1)``."""
        return self._op("HardSwish", [x], None, name)

    def leaky_relu(self, x, *, alpha=0.01, name=None):
        """``x`` where ``x >= 0``, else ``alpha * x``."""
        return self._op("LeakyRelu", [x], {"alpha": float(alpha)}, name)

    def concat(self, xs, *, axis=1, name=None):
        """ONNX Concat of the tensors ``xs`` along ``axis``."""
        return self._op("Concat", list(xs), {"axis": int(axis)}, name)

    def flatten(self, x, *, axis=1, name=None):
        """ONNX Flatten: (d0 ... d[axis-1], the product of the rest)."""
        return self._op("Flatten", [x], {"axis": int(axis)}, name)

    def reshape(self, x, shape, *, name=None):
        """ONNX Reshape to the constant ``shape`` (0 copies that dimension of ``x``,
        -1 is inferred)."""
        name = name or self._fresh("reshape")
        return self._op("Reshape", [x, self._const(np.asarray(shape, np.int64),
                                                   name + ".shape")], None, name)

    def softmax(self, x, *, axis=-1, name=None):
        """ONNX Softmax along ``axis`` (runs in float in a converted model)."""
        return self._op("Softmax", [x], {"axis": int(axis)}, name)

    def build(self):
        """The :class:`Model` (checked: shapes inferred, every node's inputs defined)."""
        return Model(self._inputs, self._nodes, self._outputs, self._init, self.name)
