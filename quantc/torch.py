"""Quantization-aware training in PyTorch on quantc's kernels: FakeQuantize, prepare_qat, convert.

Needs PyTorch (``pip install 'quantc[torch]'``); torch is imported when this module's
contents are first used, so ``import quantc`` never needs it.

- :class:`FakeQuantize` (an ``nn.Module``): forward is :func:`quantc.fake_quantize` run on
  the CPU tensor's memory shared with NumPy (no copies for contiguous float32 tensors);
  backward is the straight-through estimator, the incoming gradient where the mask of
  ``fake_quantize(return_mask=True)`` is True and 0 elsewhere (exact). With
  ``learn_scale=True`` the scale is an ``nn.Parameter`` trained by LSQ (Esser et al. 2020):
  ``dy/ds = round(x/s) - x/s`` where ``x`` lands inside ``[qmin, qmax]``, ``qmin - zp`` below
  and ``qmax - zp`` above, summed (per channel) in float64 and multiplied by the gradient
  scale ``g = 1 / sqrt(n * qmax)`` (``n``: elements per scale).
- **Ranges.** Without a given ``scale``, an observer updates the range during training
  (``"minmax"``: running min/max; ``"moving_average"``: torch.ao's EMA with constant 0.01;
  ``"current"``: the latest batch only, what weights want); ``freeze_observer()`` stops it.
  Asymmetric qparams come from ``profile``'s formula (as :func:`quantc.choose_qparams`).
- **The clamped maximum.** Symmetric qparams use the narrow range by default: ``qmin =
  -qmax`` (``[-127, 127]``, or ``[-7, 7]`` with ``qmax=7``) and ``scale = amax / qmax``, so
  the largest weight lands exactly on ``qmax`` and every weight stays inside the mask. (torch's
  full range ``[-128, 127]`` gives ``scale = amax / 127.5``: each row's maximum maps to
  127.5, rounds to 128, is clamped and gets no gradient.) When qparams are chosen by the user
  (``scale=`` or ``qmin=``/``qmax=``) and clip more than ``clip_warning`` (1%) of a tensor
  in a training forward pass, a ``UserWarning`` says so, once per module.
- :func:`prepare_qat` traces a module with ``torch.fx`` and returns a copy with
  per-channel symmetric weight fake-quant on every Conv2d/Linear and activation fake-quant
  on each input and after each Conv2d/Linear (after the ReLU/ReLU6 that follows it, if any:
  quantc fuses that ReLU and quantizes its output).
- :func:`convert` exports the trained model to ONNX with the fake-quantized weights and the
  FakeQuantize modules removed, and builds a :class:`quantc.QuantizedModel` with the trained
  ranges and weight scales (no re-calibration). Each activation's ONNX tensor is found by
  exporting it as an extra graph output under a name of ours, then dropping those outputs.
"""
import copy
import math
import warnings

import numpy as np

from . import _elementwise
from ._lowbit import _int_or_none
from .calibration import MinMaxObserver, MovingAverageMinMaxObserver, _real

# (FakeQuantize comes from the module's __getattr__: torch is imported on first use)
__all__ = ["FakeQuantize", "prepare_qat", "convert",  # noqa: F822
           "fake_quantize_modules", "freeze_observers", "digits_module"]

NEEDS_TORCH = "quantc.torch needs PyTorch: pip install 'quantc[torch]'"
OBSERVERS = ("minmax", "moving_average", "current")
_impl_cache = {}


def _torch():
    """The real torch package (absolute import), or ImportError saying what to install."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(NEEDS_TORCH) from e
    return torch


def __getattr__(name):
    if name in ("FakeQuantize", "FakeQuantizeFunction"):
        return _impl()[name]
    raise AttributeError(f"module 'quantc.torch' has no attribute {name!r}")


def _dtype_range(dtype):
    return _elementwise.qrange(dtype)


def _qparams_from_range(rmin, rmax, *, dtype, qmin, qmax, symmetric, profile):
    """float32 scale and int64 zero point arrays for a range (arrays of one shape)."""
    rmin = np.minimum(np.asarray(rmin, np.float32), np.float32(0))
    rmax = np.maximum(np.asarray(rmax, np.float32), np.float32(0))
    if symmetric:  # narrow by default: scale = amax / qmax (see the module doc)
        amax = np.maximum(-rmin, rmax)
        scale = (amax / np.float32((qmax - qmin) / 2)).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        zp = np.full(scale.shape, 0 if qmin < 0 else (qmin + qmax + 1) // 2, np.int64)
        return scale, zp
    if profile == "onnx":
        scale, zp = _elementwise._onnx_qparams(rmin, rmax, qmin, qmax, False)
    elif profile == "torch":
        scale, zp = _elementwise._torch_qparams(rmin, rmax, qmin, qmax, False, dtype, True)
    else:
        scale, zp = _elementwise._tflite_qparams(rmin, rmax, qmin, qmax, False)
    scale = np.asarray(scale, np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32), \
        np.asarray(zp, np.int64)


def _impl():
    """Define the torch classes once, on first use."""
    if _impl_cache:
        return _impl_cache
    torch = _torch()
    nn = torch.nn

    class FakeQuantizeFunction(torch.autograd.Function):
        """``y = fake_quantize(x)`` with the STE gradient (and LSQ's for a learned scale).

        ``apply(x, scale_param, scale, zero_point, cfg)``: ``scale_param`` the learned scale
        tensor or None; ``scale``/``zero_point`` NumPy float32 / int arrays; ``cfg`` a dict
        of dtype, axis, qmin, qmax, profile.
        """

        @staticmethod
        def forward(ctx, x, scale_param, scale, zero_point, cfg):
            xt = _cpu_f32(x.detach(), "x")
            y = torch.empty_like(xt, memory_format=torch.contiguous_format)
            _, mask = _elementwise.fake_quantize(
                xt.numpy(), scale, zero_point, cfg["dtype"], axis=cfg["axis"], qmin=cfg["qmin"],
                qmax=cfg["qmax"], profile=cfg["profile"], return_mask=True, out=y.numpy())
            mask_t = torch.from_numpy(mask)
            ctx.cfg, ctx.scale, ctx.zero_point = cfg, scale, zero_point
            ctx.learn = scale_param is not None
            ctx.save_for_backward(xt if ctx.learn else None, mask_t)
            ctx.mark_non_differentiable(mask_t)
            return y, mask_t

        @staticmethod
        def backward(ctx, grad_y, _grad_mask):
            xt, mask = ctx.saved_tensors
            gx = torch.where(mask, grad_y, torch.zeros((), dtype=grad_y.dtype))
            gs = None
            if ctx.learn:
                gs = torch.from_numpy(lsq_scale_grad(
                    xt.numpy(), _cpu_f32(grad_y, "grad").numpy(), mask.numpy(), ctx.scale,
                    ctx.zero_point, ctx.cfg["axis"], ctx.cfg["qmin"], ctx.cfg["qmax"]))
            return gx, gs, None, None, None

    class FakeQuantize(nn.Module):
        """Quantize and dequantize on quantc's kernels, trainable (see the module doc).

        ``scale``/``zero_point``: fixed qparams (per-tensor scalars, or 1-D along ``axis``);
        None: from the observer. ``dtype``: ``"int8"`` or ``"uint8"``; ``qmin``/``qmax``
        narrow it (4-bit weights: ``qmin=-7, qmax=7``); symmetric defaults to the narrow
        range ``qmin = -qmax``. ``profile``: ``"onnx"``, ``"torch"`` or ``"tflite"`` (rounding
        and the asymmetric qparams formula). ``observer``: ``"minmax"``,
        ``"moving_average"`` or ``"current"`` (the latest tensor only, for weights); it
        updates in training mode only, except ``"current"``, which follows the weights in
        eval mode too.
        ``learn_scale``: LSQ (the observer sets the initial scale on the first batch).
        ``clip_warning``: the fraction of a tensor that user-chosen qparams may clip before
        a warning.
        """

        def __init__(self, scale=None, zero_point=None, *, axis=None, dtype="int8",
                     symmetric=False, profile="onnx", observer="minmax", learn_scale=False,
                     qmin=None, qmax=None, averaging_constant=0.01, clip_warning=0.01):
            super().__init__()
            dtype = _elementwise._dtype_name(dtype)
            _elementwise._check_profile(profile)
            if observer not in OBSERVERS:
                raise ValueError(f"observer: expected one of {', '.join(OBSERVERS)}, got "
                                 f"{observer!r}")
            if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
                raise TypeError(f"axis: expected an int or None, got {type(axis).__name__}")
            qmin, qmax = _int_or_none(qmin, "qmin"), _int_or_none(qmax, "qmax")
            dmin, dmax = _dtype_range(dtype)
            self.user_range = qmin is not None or qmax is not None
            qmax = dmax if qmax is None else int(qmax)
            if qmin is None:
                qmin = (-qmax if dmin < 0 else dmin + 1) if symmetric else dmin
            qmin = int(qmin)
            if not dmin <= qmin < qmax <= dmax:
                raise ValueError(f"qmin, qmax: expected {dmin} <= qmin < qmax <= {dmax} "
                                 f"({dtype}), got {qmin}, {qmax}")
            self.dtype, self.axis, self.symmetric, self.profile = dtype, axis, symmetric, profile
            self.qmin, self.qmax, self.observer = qmin, qmax, observer
            self.averaging_constant = _real(averaging_constant, "averaging_constant")
            self.learn_scale = bool(learn_scale)
            self.clip_warning = _real(clip_warning, "clip_warning")
            self.user_scale = scale is not None
            self.observer_enabled = scale is None
            self._warned = False
            self.register_buffer("min_val", None)
            self.register_buffer("max_val", None)
            zp0 = 0 if symmetric and qmin < 0 else (qmin + qmax + 1) // 2 if symmetric else 0
            if scale is not None:
                sr = np.asarray(scale.detach().cpu() if hasattr(scale, "detach") else scale)
                if sr.dtype.kind not in "fiu":
                    raise TypeError(f"scale: expected real numbers, got {sr.dtype}")
                if zero_point is not None:
                    zr = np.asarray(zero_point.detach().cpu() if hasattr(zero_point, "detach")
                                    else zero_point)
                    if zr.dtype.kind not in "iu":  # 1.5 was truncated to 1, True taken as 1
                        raise TypeError(f"zero_point: expected integer values, got {zr.dtype}")
                s = torch.as_tensor(sr.astype(np.float32))
                z = torch.as_tensor(np.asarray(zp0 if zero_point is None else zero_point,
                                               np.int64)).expand(s.shape).clone()
                if not (torch.isfinite(s).all() and (s > 0).all()):
                    raise ValueError(f"scale: expected positive finite values, got {scale}")
                if ((z < qmin) | (z > qmax)).any():
                    raise ValueError(f"zero_point: expected values in [{qmin}, {qmax}], got "
                                     f"{zero_point}")
            else:
                s = z = None
            self.register_buffer("zero_point", z)
            if self.learn_scale:
                self.scale = nn.Parameter(s if s is not None else torch.ones(()))
                self.scale_initialized = s is not None
            else:
                self.register_buffer("scale", s)

        def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
            # the qparams are None until data is seen: take their shapes from the checkpoint
            for name in ("min_val", "max_val", "zero_point", "scale"):
                t = state_dict.get(prefix + name)
                if t is None:
                    continue
                if name == "scale" and self.learn_scale:
                    self.scale.data = t.detach().clone()
                    self.scale_initialized = True
                else:
                    setattr(self, name, t.detach().clone())
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

        def extra_repr(self):
            return (f"dtype={self.dtype}, qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}, "
                    f"symmetric={self.symmetric}, profile={self.profile!r}, "
                    f"observer={self.observer!r}, learn_scale={self.learn_scale}")

        def freeze_observer(self):
            """Stop updating the range (the qparams stay as they are)."""
            self.observer_enabled = False
            return self

        def enable_observer(self):
            """Update the range again in training forward passes (not with a given scale)."""
            self.observer_enabled = not self.user_scale
            return self

        def _observe(self, x):
            a = _cpu_f32(x, "x").numpy()
            obs = MinMaxObserver(axis=self.axis) if self.observer != "moving_average" else \
                MovingAverageMinMaxObserver(self.averaging_constant, axis=self.axis)
            if self.observer != "current" and self.min_val is not None:
                obs.min_val = self.min_val.numpy().copy() if self.axis is not None else \
                    np.float32(self.min_val.item())
                obs.max_val = self.max_val.numpy().copy() if self.axis is not None else \
                    np.float32(self.max_val.item())
            obs.update(a)
            if obs.min_val is None:
                return
            # an infinite value would leave an infinite range, and no qparams ever after:
            # refused before the module's range changes
            if obs._infinite():
                raise ValueError(f"x: expected finite values to observe, got {obs._infinite()}")
            self.min_val = torch.as_tensor(np.asarray(obs.min_val, np.float32)).clone()
            self.max_val = torch.as_tensor(np.asarray(obs.max_val, np.float32)).clone()
            s, z = self.qparams_from_range()
            if self.learn_scale:
                if not self.scale_initialized:
                    with torch.no_grad():
                        self.scale.data = torch.from_numpy(s)
                    self.scale_initialized = True
                if self.zero_point is None:
                    self.zero_point = torch.from_numpy(z)
            else:
                self.scale, self.zero_point = torch.from_numpy(s), torch.from_numpy(z)

        def qparams_from_range(self):
            """(scale float32, zero_point int64) NumPy arrays for the observed range."""
            return _qparams_from_range(self.min_val.numpy(), self.max_val.numpy(),
                                       dtype=self.dtype, qmin=self.qmin, qmax=self.qmax,
                                       symmetric=self.symmetric, profile=self.profile)

        def qparams(self):
            """(scale float32, zero_point int) NumPy arrays in use (None before any data)."""
            if self.zero_point is None:
                return None
            s = self.scale.detach().numpy().astype(np.float32)
            if self.learn_scale:  # keep a learned scale positive and finite
                s = np.where(np.isfinite(s) & (s > 0), s, np.float32(1e-8)).astype(np.float32)
            return s, self.zero_point.numpy()

        def forward(self, x):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__} (use "
                                f"quantc.fake_quantize for NumPy arrays)")
            if (self.training or self.observer == "current") and self.observer_enabled and not (
                    self.learn_scale and self.scale_initialized and self.zero_point is not None):
                self._observe(x.detach())
            p = self.qparams()
            if p is None:
                raise RuntimeError("FakeQuantize: no qparams yet: give scale=, or run a batch "
                                   "in training mode so the observer sees data")
            s, z = p
            zt = z.astype(np.int8 if self.dtype == "int8" else np.uint8)
            cfg = {"dtype": self.dtype, "axis": self.axis, "qmin": self.qmin,
                   "qmax": self.qmax, "profile": self.profile}
            y, mask = FakeQuantizeFunction.apply(
                x, self.scale if self.learn_scale else None, s, zt, cfg)
            if self.training and (self.user_scale or self.user_range) and not self._warned \
                    and mask.numel():
                frac = 1.0 - float(mask.sum()) / mask.numel()
                if frac > self.clip_warning:
                    self._warned = True
                    warnings.warn(
                        f"FakeQuantize: the given qparams clip {100 * frac:.2f}% of a tensor of "
                        f"shape {tuple(x.shape)} (more than {100 * self.clip_warning:g}%); those "
                        f"values get no gradient. For symmetric weights use the narrow range "
                        f"(qmin=-qmax, scale=amax/qmax)", UserWarning, stacklevel=2)
            return y

    class _QATConv2d(nn.Conv2d):
        """Conv2d whose weight passes through ``weight_fake_quant`` in every forward."""

        def forward(self, x):
            return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)

    class _QATLinear(nn.Linear):
        """Linear whose weight passes through ``weight_fake_quant`` in every forward."""

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight_fake_quant(self.weight),
                                              self.bias)

    class _Capture(nn.Module):
        """Identity that remembers the tensor it saw (convert's stand-in for FakeQuantize)."""

        def __init__(self, fq):
            super().__init__()
            self.fq = fq
            self.seen = None

        def forward(self, x):
            self.seen = x
            return x

    _impl_cache.update(FakeQuantize=FakeQuantize, FakeQuantizeFunction=FakeQuantizeFunction,
                       Conv2d=_QATConv2d, Linear=_QATLinear, Capture=_Capture, torch=torch)
    return _impl_cache


def _cpu_f32(t, name):
    """A contiguous float32 CPU tensor (shares memory with NumPy through .numpy())."""
    if t.device.type != "cpu":
        raise TypeError(f"{name}: quantc.torch runs on CPU tensors, got one on {t.device}")
    if t.dtype != _impl_cache["torch"].float32:
        raise TypeError(f"{name}: expected a float32 tensor, got {t.dtype}")
    return t.contiguous()


def lsq_scale_grad(x, grad_y, mask, scale, zero_point, axis, qmin, qmax):
    """LSQ's gradient for the scale (float32, the scale's shape), accumulated in float64.

    Per element ``d = round(x/s) - x/s`` inside the mask, ``qmin - zp`` below it and
    ``qmax - zp`` above; the sum of ``grad_y * d`` (per channel along ``axis``) times
    ``1 / sqrt(n * qmax)`` with ``n`` the number of elements per scale.
    """
    s = np.asarray(scale, np.float64)
    zp = np.asarray(zero_point, np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    v = x.astype(np.float64) / s
    below = (np.rint(v) + zp) < qmin
    d = np.where(mask, np.rint(v) - v, np.where(below, qmin - zp, qmax - zp))
    prod = grad_y.astype(np.float64) * d
    if axis is None:
        total, n = prod.sum(), x.size
    else:
        axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        total, n = prod.sum(axis=axes), x.size // max(x.shape[axis], 1)
    g = 1.0 / math.sqrt(max(n, 1) * qmax)
    return np.asarray(total * g, np.float32).reshape(np.shape(scale))


# ---------------------------------------------------------------------------------------------
# prepare_qat


_RELU_FUNCS = ("relu", "relu6")


def _is_relu(node, modules, torch):
    nn = torch.nn
    if node.op == "call_module":
        return isinstance(modules.get(node.target), (nn.ReLU, nn.ReLU6))
    if node.op == "call_function":
        return node.target in (torch.relu, torch.nn.functional.relu,
                               torch.nn.functional.relu6, torch.relu_)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def prepare_qat(module, *, weight_dtype="int8", activation_dtype="uint8", weight_bits=None,
                profile="onnx", activation_observer="moving_average", learn_scale=False,
                per_channel=True):
    """A QAT copy of ``module`` (the original is untouched), traced with ``torch.fx``.

    Every ``nn.Conv2d``/``nn.Linear`` gets a weight :class:`FakeQuantize` (symmetric,
    ``weight_dtype``, per output channel unless ``per_channel=False``, narrow range
    ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` for ``weight_bits=b`` (default 8), observer
    ``"current"``: the scale follows the weights). Activation :class:`FakeQuantize`
    (``activation_dtype``, asymmetric, ``activation_observer``) go after each input and
    after each Conv2d/Linear, or after the ReLU/ReLU6 that alone reads it. A BatchNorm that
    alone reads a Conv2d/Linear is folded into it with its running statistics (frozen from
    then on), as quantc folds it at conversion. Other ops that quantc requantizes (Add,
    Concat, average pooling) get no FakeQuantize: :func:`convert` then needs calibration data
    for them. ``learn_scale``: LSQ for the weight scales. Returns a ``torch.fx.GraphModule``;
    put it in ``train()`` mode and train as usual, then :func:`convert`.
    """
    torch = _impl()["torch"]
    impl = _impl()
    FakeQuantize = impl["FakeQuantize"]
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if weight_bits is not None and not (isinstance(weight_bits, int) and 2 <= weight_bits <= 8):
        raise ValueError(f"weight_bits: expected an int in [2, 8] or None, got {weight_bits!r}")
    wdt = _elementwise._dtype_name(weight_dtype, "weight_dtype")
    adt = _elementwise._dtype_name(activation_dtype, "activation_dtype")
    if wdt != "int8":
        raise ValueError(f"weight_dtype: quantc's int8 layers take symmetric int8 weights, "
                         f"got {wdt!r}")
    wqmax = 127 if weight_bits is None else 2 ** (weight_bits - 1) - 1
    try:
        gm = torch.fx.symbolic_trace(copy.deepcopy(module))
    except Exception as e:  # noqa: BLE001 (fx raises many kinds)
        raise TypeError(f"prepare_qat: torch.fx could not trace {type(module).__name__} "
                        f"({type(e).__name__}: {e}); make its forward traceable") from None
    modules = dict(gm.named_modules())
    graph = gm.graph
    count = [0]

    def act_fq(after, stem):
        name = f"{stem.replace('.', '_')}_act_fq"
        while hasattr(gm, name):
            count[0] += 1
            name = f"{stem.replace('.', '_')}_act_fq{count[0]}"
        gm.add_submodule(name, FakeQuantize(dtype=adt, profile=profile,
                                            observer=activation_observer))
        with graph.inserting_after(after):
            new = graph.call_module(name, (after,))
        after.replace_all_uses_with(new, delete_user_cb=lambda u: u is not new)

    for node in list(graph.nodes):
        if node.op == "placeholder":
            act_fq(node, f"input_{node.target}")
            continue
        if node.op != "call_module":
            continue
        mod = modules[node.target]
        users = list(node.users)
        bn = modules.get(users[0].target) if len(users) == 1 and \
            users[0].op == "call_module" else None
        if type(mod) in (torch.nn.Conv2d, torch.nn.Linear) and type(bn) in (
                torch.nn.BatchNorm2d, torch.nn.BatchNorm1d):  # fold it, as quantc will
            fuse = torch.nn.utils.fusion.fuse_conv_bn_eval if type(mod) is torch.nn.Conv2d \
                else torch.nn.utils.fusion.fuse_linear_bn_eval
            training = mod.training
            mod = fuse(mod.eval(), bn.eval()).train(training)
            users[0].replace_all_uses_with(node)
            graph.erase_node(users[0])
        if type(mod) is torch.nn.Conv2d:
            cls = impl["Conv2d"]
            new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                      mod.padding, mod.dilation, mod.groups, mod.bias is not None,
                      mod.padding_mode, device="cpu", dtype=torch.float32)
        elif type(mod) is torch.nn.Linear:
            cls = impl["Linear"]
            new = cls(mod.in_features, mod.out_features, mod.bias is not None, device="cpu",
                      dtype=torch.float32)
        else:
            continue
        new.weight, new.bias = mod.weight, mod.bias
        new.train(mod.training)
        new.weight_fake_quant = FakeQuantize(
            dtype=wdt, symmetric=True, axis=0 if per_channel else None, profile=profile,
            observer="current", learn_scale=learn_scale, qmax=wqmax, qmin=-wqmax)
        new.weight_fake_quant.user_range = False  # our narrow range: no clipping by design
        with torch.no_grad():  # the weight's scale (the first one, for LSQ) from the start
            new.weight_fake_quant.train()(new.weight)
        _set_submodule(gm, node.target, new)
        point = node
        users = list(node.users)
        if len(users) == 1 and _is_relu(users[0], modules, torch):
            point = users[0]
        act_fq(point, node.target)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_submodule(root, target, new):
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def fake_quantize_modules(model):
    """(weights, activations): the qualified names of ``model``'s weight and activation
    :class:`FakeQuantize` modules (a weight's is ``<layer>.weight_fake_quant``)."""
    FakeQuantize = _impl()["FakeQuantize"]
    w, a = [], []
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantize):
            (w if name.endswith("weight_fake_quant") else a).append(name)
    return w, a


def freeze_observers(model):
    """Freeze every :class:`FakeQuantize` observer in ``model``."""
    FakeQuantize = _impl()["FakeQuantize"]
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            m.freeze_observer()
    return model


# ---------------------------------------------------------------------------------------------
# convert


def convert(qat_model, example_input, *, calibration_data=None, io="float", opset=17,
            return_onnx=False):
    """Export a trained QAT model (from :func:`prepare_qat`, or any module whose layers use
    :class:`FakeQuantize` the same way) to a :class:`quantc.QuantizedModel`.

    The model is exported by ``torch.onnx.export(..., dynamo=False)`` in eval mode with each
    Conv2d/Linear weight replaced by its fake-quantized value and each activation
    FakeQuantize by the identity; the tensor each one observed is found by exporting it as
    an extra output. :func:`quantc.quantize_model` then gets each activation's trained
    range (``ranges=``, exactly the trained scale and zero point) and each weight's scale
    (``weight_scales=``), with no bias correction: the int8 model computes what the QAT
    model's forward pass computes, up to one quantization step per layer. Tensors without an
    activation FakeQuantize (e.g. after an Add) need ``calibration_data``.
    ``return_onnx=True`` returns ``(quantized_model, float_onnx_model)``.
    """
    impl = _impl()
    torch, FakeQuantize, Capture = impl["torch"], impl["FakeQuantize"], impl["Capture"]
    import io as _io

    try:
        import onnx
    except ImportError as e:
        raise ImportError("quantc.torch.convert needs onnx: pip install 'quantc[torch]'") from e

    from .model import Model
    from .qmodel import quantize_model

    model = copy.deepcopy(qat_model).eval()
    xs = example_input if isinstance(example_input, tuple) else (example_input,)
    xs = tuple(_cpu_f32(torch.as_tensor(x), "example_input") for x in xs)
    weight_fq, act_fq = {}, {}
    adt = None
    for name, m in list(model.named_modules()):
        if not isinstance(m, FakeQuantize):
            continue
        if m.qparams() is None:
            raise ValueError(f"convert: FakeQuantize {name!r} has no range yet (train, or run "
                             f"batches in training mode, before convert)")
        if name.endswith("weight_fake_quant"):
            layer = model.get_submodule(name[:-len(".weight_fake_quant")])
            if not isinstance(layer, (impl["Conv2d"], impl["Linear"])):
                raise ValueError(f"convert: {name} belongs to a {type(layer).__name__}, not "
                                 f"to a layer made by prepare_qat")
            with torch.no_grad():
                layer.weight.data = m(layer.weight).detach().clone()
            p = m.qparams()
            if not m.symmetric or m.dtype != "int8" or np.any(p[1] != 0):
                raise ValueError(f"convert: {name}: quantc's int8 layers need symmetric int8 "
                                 f"weights with zero point 0")
            del layer.weight_fake_quant
            layer.__class__ = layer.__class__.__mro__[1]  # the plain nn.Conv2d / nn.Linear
            weight_fq[name[:-len(".weight_fake_quant")] + ".weight"] = (
                p[0], layer.weight.detach().numpy())
            continue
        if m.axis is not None or (m.qmin, m.qmax) != _dtype_range(m.dtype):
            raise ValueError(f"convert: {name}: quantc's activations are per-tensor with the "
                             f"full {m.dtype} range, got axis={m.axis}, qmin={m.qmin}, "
                             f"qmax={m.qmax}")
        if adt not in (None, m.dtype):
            raise ValueError(f"convert: activation FakeQuantize modules mix {adt} and {m.dtype}")
        adt = m.dtype
        s, z = m.qparams()
        act_fq[name] = _elementwise.QParams(np.float32(s), np.asarray(z).astype(m.dtype),
                                            np.dtype(m.dtype), None, None)
        cap = Capture(m)
        _set_submodule(model, name, cap)
    caps = {name: model.get_submodule(name) for name in act_fq}

    inner = model.forward  # exported with extra outputs; scope and weight names unchanged
    counts = []

    def forward_with_extras(*args):
        for c in caps.values():
            c.seen = None
        out = inner(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        counts[:] = [len(outs)]
        extra = []
        for c in caps.values():
            t = c.seen
            if t is not None and not any(t is o for o in list(args) + outs + extra):
                extra.append(t)
        return tuple(outs + extra)

    model.forward = forward_with_extras
    wrapper = model
    with torch.no_grad():
        outs = list(wrapper(*xs))
    n_real = counts[0]
    in_names = [f"input{i}" if len(xs) > 1 else "input" for i in range(len(xs))]
    out_names = [f"output{i}" if n_real > 1 else "output" for i in range(n_real)]
    out_names += [f"qat_act{i}" for i in range(len(outs) - n_real)]
    tensor_name = {}  # activation FakeQuantize -> the name of the tensor it saw
    for name, c in caps.items():
        if c.seen is None:
            raise ValueError(f"convert: {name!r} saw no tensor in the forward pass of "
                             f"example_input")
        tensor_name[name] = next(nm for nm, t in zip(in_names + out_names, list(xs) + outs)
                                 if t is c.seen)
    buf = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, xs, buf, input_names=in_names, output_names=out_names,
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={n: {0: "batch"} for n in in_names + out_names})
    proto = onnx.load_from_string(buf.getvalue())
    del proto.graph.output[n_real:]
    graph_names = {t for n in proto.graph.node for t in n.output} | set(in_names)
    ranges = {}
    for name, qp in act_fq.items():
        t = tensor_name[name]
        if t not in graph_names:
            raise ValueError(f"convert: the tensor {name!r} observes ({t}) is not in the "
                             f"exported graph")
        ranges[t] = qp
    inits = {i.name: i for i in proto.graph.initializer}
    weight_scales = {}
    for pname, (s, w) in weight_fq.items():
        key = pname if pname in inits else _find_initializer(proto, w)
        if key is None:
            raise ValueError(f"convert: the weight {pname!r} is not an initializer of the "
                             f"exported graph; quantc cannot give it its trained scale")
        weight_scales[key] = s
    qmodel = Model.from_onnx(proto)
    per_tensor = all(np.ndim(s) == 0 for s, _ in weight_fq.values()) and weight_fq
    qm = quantize_model(qmodel, calibration_data, ranges=ranges, weight_scales=weight_scales,
                        activation_dtype=adt or "uint8", io=io, bias_correction=False,
                        progress=False,
                        weight_granularity="per_tensor" if per_tensor else "per_channel")
    qm.info["qat_tensors"] = dict(tensor_name)
    return (qm, proto) if return_onnx else qm


def _find_initializer(proto, w):
    """The name of the initializer holding ``w`` or ``w.T`` (a Linear on a 3-D input is
    exported as MatMul with the transposed weight folded into a new constant), or None."""
    from onnx import numpy_helper
    for init in proto.graph.initializer:
        if tuple(init.dims) in (w.shape, w.shape[::-1]):
            a = numpy_helper.to_array(init)
            if a.dtype == w.dtype and (np.array_equal(a, w) or np.array_equal(a, w.T)):
                return init.name
    return None


# ---------------------------------------------------------------------------------------------
# the bundled example in torch


def digits_module(weights=None):
    """:func:`quantc.examples.digits_model` as a float ``torch.nn.Sequential`` (children
    conv1, relu1, conv2, relu2, pool, flatten, fc1, relu3, fc2) with the bundled weights
    (or ``weights``: name -> array, as :func:`quantc.examples.digits_weights`)."""
    from collections import OrderedDict

    from . import examples
    nn = _impl()["torch"].nn
    m = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(512, 128)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(128, 10))]))
    p = examples.digits_weights() if weights is None else weights
    torch = _impl()["torch"]
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                       for k, v in p.items()})
    return m
