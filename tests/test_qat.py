"""quantc.torch: FakeQuantize against torch's fake-quant ops (forward bit for bit, STE and LSQ
gradients), the narrow range for symmetric weights, prepare_qat, convert against the QAT
model's forward, quantize_model's ranges= / weight_scales=, and quantc without torch."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import quantc as qc
from quantc import examples

import quantc.torch as qt  # importable without torch; its contents need it

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread():
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _with_ties(shape, scale, rng):
    """Random values plus exact ties (k + 0.5) * scale and values far outside the range."""
    x = rng.standard_normal(shape).astype(np.float32) * np.float32(40 * np.max(scale))
    flat = x.reshape(-1)
    k = rng.integers(-200, 200, flat.size // 3)
    flat[:k.size] = ((k + 0.5) * np.float32(np.max(scale))).astype(np.float32)
    return x


# ---- forward: bit for bit with torch ----------------------------------------------------


@pytest.mark.parametrize("dtype,zp,qmin,qmax", [("uint8", 131, 0, 255), ("int8", -3, -128, 127),
                                                ("int8", 0, -7, 7), ("uint8", 0, 0, 15)])
@needs_torch
def test_forward_per_tensor_equals_torch(dtype, zp, qmin, qmax):
    rng = np.random.default_rng(1)
    s = np.float32(0.0173)
    x = torch.from_numpy(_with_ties((4, 3, 5, 7), s, rng))
    fq = qt.FakeQuantize(s, zp, dtype=dtype, profile="torch", qmin=qmin, qmax=qmax,
                         clip_warning=1.0)
    y = fq(x)
    ref = torch.fake_quantize_per_tensor_affine(x, float(s), zp, qmin, qmax)
    assert torch.equal(y, ref), (dtype, zp, (y != ref).nonzero()[:1])


@needs_torch
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_forward_per_channel_equals_torch(axis):
    rng = np.random.default_rng(2)
    shape = (6, 5, 3, 4)
    c = shape[axis]
    s = rng.uniform(0.005, 0.05, c).astype(np.float32)
    zp = rng.integers(-20, 20, c)
    x = torch.from_numpy(_with_ties(shape, s, rng))
    fq = qt.FakeQuantize(s, zp, axis=axis, dtype="int8", profile="torch", clip_warning=1.0)
    y = fq(x)
    ref = torch.fake_quantize_per_channel_affine(x, torch.from_numpy(s),
                                                 torch.from_numpy(zp.astype(np.int32)),
                                                 axis % 4, -128, 127)
    assert torch.equal(y, ref), (axis, (y != ref).nonzero()[:1])


@needs_torch
def test_forward_shares_memory_and_checks_input():
    fq = qt.FakeQuantize(0.1, 0, dtype="int8")
    x = torch.randn(3, 4)
    assert torch.equal(fq(x), torch.from_numpy(qc.fake_quantize(x.numpy(), 0.1, 0)))
    xt = torch.randn(4, 3).t()  # not contiguous: a contiguous copy is quantized
    assert torch.equal(fq(xt), torch.from_numpy(qc.fake_quantize(xt.contiguous().numpy(), 0.1, 0)))
    with pytest.raises(TypeError, match="float32"):
        fq(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="qmin, qmax"):
        qt.FakeQuantize(0.1, dtype="int8", qmin=5, qmax=3)
    with pytest.raises(ValueError, match="observer"):
        qt.FakeQuantize(observer="kl")
    # nothing silently truncated or taken by truthiness; errors name the argument
    for kw, match in (({"zero_point": 1.5}, "zero_point: expected integer values"),
                      ({"zero_point": True}, "zero_point: expected integer values"),
                      ({"scale": "a"}, "scale: expected real numbers"),
                      ({"qmin": -2.5}, "qmin: expected an int or None"),
                      ({"clip_warning": "a"}, "clip_warning: expected a real number"),
                      ({"averaging_constant": None}, "averaging_constant: expected a real")):
        with pytest.raises(TypeError, match=match):
            qt.FakeQuantize(**({"scale": 0.1} if "zero_point" in kw else {}), **kw)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got ndarray"):
        fq(x.numpy())
    assert torch.equal(qt.FakeQuantize(torch.tensor(0.1), torch.tensor(3))(x),
                       torch.from_numpy(qc.fake_quantize(x.numpy(), 0.1, 3)))


@needs_torch
def test_infinite_batch_is_refused_and_leaves_the_range():
    # an inf in a training batch stored an infinite range: every later call failed with
    # "scale: ... got inf", an argument the user never gave
    fq = qt.FakeQuantize().train()
    fq(torch.tensor([-1.0, 2.0]))
    before = fq.qparams()
    for v, sign in ((float("inf"), r"\+inf"), (float("-inf"), "-inf")):
        with pytest.raises(ValueError, match=f"x: expected finite values to observe, got {sign}"):
            fq(torch.tensor([1.0, v]))
    after = fq.qparams()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert torch.isfinite(fq(torch.tensor([1.0, 2.0]))).all()


# ---- backward: STE and LSQ --------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("axis", [None, 0])
def test_gradient_is_mask_times_incoming(axis):
    rng = np.random.default_rng(3)
    x0 = _with_ties((5, 9), np.float32(0.02), rng)
    s = np.float32(0.02) if axis is None else rng.uniform(0.01, 0.03, 5).astype(np.float32)
    fq = qt.FakeQuantize(s, 7 if axis is None else np.full(5, 7), axis=axis, dtype="uint8",
                         profile="torch", clip_warning=1.0)
    x = torch.from_numpy(x0).requires_grad_()
    g = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
    fq(x).backward(g)
    _, mask = qc.fake_quantize(x0, s, np.uint8(7) if axis is None else np.full(5, 7, np.uint8),
                               "uint8", axis=axis, profile="torch", return_mask=True)
    assert 0 < mask.sum() < mask.size
    assert torch.equal(x.grad, torch.where(torch.from_numpy(mask), g, torch.zeros(())))
    # torch's own fake-quant gradient is the same
    xr = torch.from_numpy(x0).requires_grad_()
    if axis is None:
        torch.fake_quantize_per_tensor_affine(xr, float(s), 7, 0, 255).backward(g)
    else:
        torch.fake_quantize_per_channel_affine(xr, torch.from_numpy(s),
                                               torch.full((5,), 7, dtype=torch.int32),
                                               0, 0, 255).backward(g)
    assert torch.equal(x.grad, xr.grad)


def _lsq_reference(x, g, s, zp, qmin, qmax, axis):
    """LSQ's d loss / d s in float64, written out from Esser et al. (2020)."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    s = np.asarray(s, np.float64)
    zp = np.asarray(zp, np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    v = x / s
    q = np.rint(v) + zp
    d = np.where(q < qmin, qmin - zp, np.where(q > qmax, qmax - zp, np.rint(v) - v))
    if axis is None:
        return (g * d).sum() / np.sqrt(x.size * qmax)
    axes = tuple(i for i in range(x.ndim) if i != axis)
    return (g * d).sum(axis=axes) / np.sqrt(x.size / x.shape[axis] * qmax)


@needs_torch
@pytest.mark.parametrize("axis,qmin,qmax", [(None, -7, 7), (0, -127, 127), (None, -128, 127)])
def test_lsq_scale_gradient_matches_float64_reference(axis, qmin, qmax):
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.float32(0.1)
    s0 = np.float32(0.03) if axis is None else rng.uniform(0.01, 0.05, 8).astype(np.float32)
    fq = qt.FakeQuantize(s0, axis=axis, symmetric=True, learn_scale=True, qmin=qmin, qmax=qmax,
                         clip_warning=1.0)
    x = torch.from_numpy(x0).requires_grad_()
    g = rng.standard_normal(x0.shape).astype(np.float32)
    fq(x).backward(torch.from_numpy(g))
    ref = _lsq_reference(x0, g, s0, 0, qmin, qmax, axis)
    np.testing.assert_allclose(fq.scale.grad.numpy(), ref, rtol=1e-6, atol=1e-9)
    assert fq.scale.grad.shape == fq.scale.shape
    _, mask = qc.fake_quantize(x0, s0, None, axis=axis, qmin=qmin, qmax=qmax, return_mask=True)
    assert torch.equal(x.grad, torch.where(torch.from_numpy(mask), torch.from_numpy(g),
                                           torch.zeros(())))


@needs_torch
def test_lsq_scale_learns_and_initializes_from_observer():
    fq = qt.FakeQuantize(symmetric=True, learn_scale=True, qmin=-7, qmax=7)
    x = torch.randn(64, 16)
    fq.train()(x)
    assert torch.allclose(fq.scale.detach(), x.abs().max() / 7)
    opt = torch.optim.SGD(fq.parameters(), lr=0.01)
    before = fq.scale.item()
    for _ in range(5):
        loss = ((fq(x) - x) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fq.scale.item() != before


# ---- observers and the clamped maximum --------------------------------------------------


@needs_torch
def test_observers_update_in_training_and_freeze():
    fq = qt.FakeQuantize(dtype="uint8")
    fq.train()(torch.tensor([0.0, 1.0]))
    fq(torch.tensor([-1.0, 0.5]))
    assert (fq.min_val.item(), fq.max_val.item()) == (-1.0, 1.0)
    s, z = fq.qparams()
    p = qc.choose_qparams(min_val=-1.0, max_val=1.0, dtype="uint8")
    assert s == p.scale and z == p.zero_point
    fq.eval()(torch.tensor([5.0]))  # eval: no update
    fq.train().freeze_observer()(torch.tensor([5.0]))  # frozen: no update
    assert fq.max_val.item() == 1.0
    fq.enable_observer()(torch.tensor([5.0]))
    assert fq.max_val.item() == 5.0
    ema = qt.FakeQuantize(dtype="uint8", observer="moving_average").train()
    ema(torch.tensor([0.0, 1.0]))
    ema(torch.tensor([0.0, 2.0]))
    assert ema.max_val.item() == np.float32(1.0) + np.float32(0.01) * np.float32(1.0)
    cur = qt.FakeQuantize(axis=0, symmetric=True, observer="current").train()
    cur(torch.tensor([[1.0, -3.0], [0.5, 0.25]]))
    cur(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    assert cur.min_val.tolist() == [-2.0, 0.25] and cur.max_val.tolist() == [1.0, 0.5]
    with pytest.raises(RuntimeError, match="no qparams"):
        qt.FakeQuantize().eval()(torch.ones(2))


@needs_torch
def test_symmetric_weights_stay_inside_the_mask():
    """Narrow range by default: each row's max lands on qmax, inside the mask; torch's full
    range [-128, 127] (amax / 127.5) clips each row's positive max and warns."""
    w = torch.randn(32, 3, 3, 3)
    for qmax in (127, 7):
        fq = qt.FakeQuantize(axis=0, symmetric=True, qmin=-qmax, qmax=qmax, observer="current")
        fq.user_range = False
        x = w.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fq.train()(x).sum().backward()
        assert torch.equal(x.grad, torch.ones_like(w)), qmax
        assert torch.equal(fq.scale, (w.abs().amax(dim=(1, 2, 3)) / qmax))
    full = qt.FakeQuantize(axis=0, symmetric=True, qmin=-128, qmax=127, observer="current",
                           profile="torch")
    x = w.clone().requires_grad_()
    with pytest.warns(UserWarning, match=r"clip .*% of a tensor"):
        full.train()(x).sum().backward()
    # a row whose largest |w| is positive maps it to about +127.5 -> 128: clamped, no
    # gradient (a negative one goes to -128, inside); torch's own op does the same
    positive = int((w.amax(dim=(1, 2, 3)) == w.abs().amax(dim=(1, 2, 3))).sum())
    assert 0 < int((x.grad == 0).sum()) <= positive
    xr = w.clone().requires_grad_()
    torch.fake_quantize_per_channel_affine(xr, full.scale, torch.zeros(32, dtype=torch.int32),
                                           0, -128, 127).sum().backward()
    assert torch.equal(x.grad, xr.grad)


# ---- prepare_qat and convert ------------------------------------------------------------


def _calib():
    x, y = examples.digits_train()
    return torch.from_numpy(x[:256]), torch.from_numpy(y[:256].astype(np.int64))


def _fit(q, x, y, epochs, lr=2e-4, batch=32):
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    q.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(q(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return q.eval()


@needs_torch
def test_prepare_qat_wraps_layers_and_keeps_the_original():
    m = qt.digits_module()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    q = qt.prepare_qat(m, weight_bits=4)
    weights, acts = qt.fake_quantize_modules(q)
    assert weights == [f"{n}.weight_fake_quant" for n in ("conv1", "conv2", "fc1", "fc2")]
    assert acts == ["input_input_act_fq", "conv1_act_fq", "conv2_act_fq", "fc1_act_fq",
                    "fc2_act_fq"]
    code = q.code
    assert code.index("relu1(") < code.index("conv1_act_fq(")  # after the ReLU it fuses
    assert q.conv1.weight_fake_quant.qmin == -7 and q.conv1.weight_fake_quant.qmax == 7
    x, y = _calib()
    _fit(q, x[:64], y[:64], 1)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(mod, qt.FakeQuantize) for mod in m.modules())
    with pytest.raises(TypeError, match="nn.Module"):
        qt.prepare_qat(object())
    with pytest.raises(ValueError, match="weight_bits"):
        qt.prepare_qat(m, weight_bits=9)


@needs_torch
def test_convert_agrees_with_the_qat_forward():
    x, y = _calib()
    q = _fit(qt.prepare_qat(qt.digits_module(), weight_bits=4), x, y, 2)
    xt, yt = examples.digits_data()
    qm = qt.convert(q, torch.from_numpy(xt[:4]))
    with torch.no_grad():
        ref = q(torch.from_numpy(xt)).numpy()
    out = qm(xt)
    agree = (out.argmax(1) == ref.argmax(1)).mean()
    assert agree >= 0.99, agree
    assert (out.argmax(1) == yt).mean() >= 0.95
    # trained ranges, not re-calibrated: the int8 model's qparams are the FakeQuantize's
    names = qm.info["qat_tensors"]
    for fq_name, tensor in names.items():
        s, z = q.get_submodule(fq_name).qparams()
        assert qm.qparams[tensor].scale == s and qm.qparams[tensor].zero_point == z, fq_name
    # weights: the 4-bit values themselves, with the trained per-channel scales
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        node = next(n for n in qm.model.nodes if n.name == f"/{layer}/"
                    + ("Conv" if layer.startswith("conv") else "Gemm"))
        wd = qm.weights[node.name]
        assert np.abs(wd["weight"]).max() <= 7
        fq = q.get_submodule(layer).weight_fake_quant
        np.testing.assert_array_equal(wd["weight_scale"], fq.qparams()[0])
    # the logits agree within a few output steps, those the trained range clamps included
    # (the float output keeps the clamp of the output's FakeQuantize, drops its rounding)
    s_out = qm.qparams["output"].scale
    lo, hi = qm.qparams["output"].range()
    assert ((ref <= lo + s_out / 2) | (ref >= hi - s_out / 2)).any()  # the clamp is tested
    assert out.min() >= lo and out.max() <= hi
    assert np.abs(out - ref).max() <= 4 * s_out


@needs_torch
def test_state_dict_round_trip():
    x, y = _calib()
    q = _fit(qt.prepare_qat(qt.digits_module(), weight_bits=4), x[:64], y[:64], 1)
    fresh = qt.prepare_qat(qt.digits_module(), weight_bits=4)
    fresh.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), q(x))
    lsq = qt.FakeQuantize(axis=0, symmetric=True, learn_scale=True)
    lsq.train()(torch.randn(4, 3))
    back = qt.FakeQuantize(axis=0, symmetric=True, learn_scale=True)
    back.load_state_dict(lsq.state_dict())
    assert torch.equal(back.scale, lsq.scale) and back.scale.shape == (4,)


@needs_torch
def test_convert_linear_on_3d_input():
    """torch exports a Linear on a (batch, seq, features) input as MatMul + Add(bias): the
    converted model runs both in int8, the Add as the MatMul's int32 bias, and matches the
    fake-quantized forward pass to within an output step or two."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    x = torch.randn(32, 5, 16)
    q = qt.prepare_qat(m)
    with torch.no_grad():
        q.train()(x)
        ref = q.eval()(x).numpy()
    qm = qt.convert(q, x[:2])
    assert [(n.op, len(n.inputs)) for n in qm.model.nodes] == [("MatMul", 3), ("MatMul", 3)]
    assert set(qm.kinds.values()) == {"int8"}
    s = qm.output_qparams[qm.model.outputs[0]][0]
    assert np.abs(qm(x.numpy()) - ref).max() <= 2.0001 * s


@needs_torch
def test_convert_errors():
    q = qt.prepare_qat(qt.digits_module())
    with pytest.raises(ValueError, match="no range yet"):
        qt.convert(q, torch.zeros(1, 1, 8, 8))


@needs_torch
def test_qat_recovers_4bit_accuracy():
    """Acceptance: 4-bit per-tensor weights, 8-bit activations, on the digits split."""
    xtr, ytr = examples.digits_train()
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    xt, yt = examples.digits_data()
    m = qt.digits_module()
    with torch.no_grad():
        float_acc = (m(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    q = qt.prepare_qat(m, weight_bits=4, per_channel=False)
    with torch.no_grad():
        q.train()(xtr[:256])  # PTQ: observers on 256 training images, no training
    ptq = qt.convert(q.eval(), xtr[:4])
    ptq_acc = (ptq(xt).argmax(1) == yt).mean()

    def loss(model):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(
                model(torch.from_numpy(xt)), torch.from_numpy(yt.astype(np.int64))).item()
    float_loss, ptq_loss = loss(m), loss(q)
    q = _fit(q, xtr, ytr, 5, lr=3e-4)
    qat_acc = (qt.convert(q, xtr[:4])(xt).argmax(1) == yt).mean()
    qat_loss = loss(q)
    # the numbers (torch 2.13 CPU, one thread): float 98.61% / 0.046, PTQ 97.78% / 0.082,
    # QAT (5 epochs) 98.06% / 0.060
    assert ptq_acc <= float_acc - 0.008 and ptq_loss > 1.5 * float_loss, \
        (float_acc, ptq_acc, float_loss, ptq_loss)
    assert qat_acc >= float_acc - 0.01 and qat_loss < 0.8 * ptq_loss, \
        (float_acc, ptq_acc, qat_acc, float_loss, ptq_loss, qat_loss)


# ---- quantize_model(ranges=, weight_scales=) --------------------------------------------


def test_quantize_model_given_ranges_and_weight_scales():
    m = examples.digits_model()
    cal = examples.digits_calibration()
    full = qc.quantize_model(m, cal, bias_correction=False)
    ranges = {k: p.range() for k, p in full.qparams.items()}
    qm = qc.quantize_model(m, None, ranges=ranges)
    x, _ = examples.digits_data()
    assert {k: (p.scale, p.zero_point) for k, p in qm.qparams.items()} == \
        {k: (p.scale, p.zero_point) for k, p in full.qparams.items()}
    np.testing.assert_array_equal(qm(x[:32]), full(x[:32]))
    # no data, no statistics: None in the rows, "-" in the table (not 0% clipped, SQNR nan)
    rows = qm.report().to_list()
    assert all(r["clipped_pct"] is None and r["sqnr_db"] is None for r in rows)
    assert "nan" not in str(qm.report()) and "0.000%" not in str(qm.report())
    assert all(r["sqnr_db"] > 10 for r in full.report().to_list())
    # a QParams is used as it is
    qp = qc.QParams(np.float32(0.05), np.uint8(3), np.dtype("uint8"), None, None)
    qm2 = qc.quantize_model(m, cal, ranges={"relu_0.out": qp})
    assert (qm2.qparams["relu_0.out"].scale, qm2.qparams["relu_0.out"].zero_point) == \
        (np.float32(0.05), 3)
    # weight scales: rint(w / s) saturated to int8
    w = m.initializers["conv1.weight0"]
    s = np.full(16, np.float32(0.01))
    qm3 = qc.quantize_model(m, cal, weight_scales={"conv1.weight0": s})
    np.testing.assert_array_equal(qm3.weights["conv1"]["weight"],
                                  np.clip(np.rint(w / s[:, None, None, None]), -128, 127))
    qm4 = qc.quantize_model(m, cal, weight_scales={"fc2.weight0": 0.02})
    assert qm4.weights["fc2"]["weight_scale"].tolist() == [np.float32(0.02)] * 10


def test_quantize_model_given_ranges_errors():
    m = examples.digits_model()
    with pytest.raises(ValueError, match="does not cover.*'conv1_relu|does not cover"):
        qc.quantize_model(m, None, ranges={"image": (0.0, 1.0)})
    with pytest.raises(TypeError, match="calibration_data"):
        qc.quantize_model(m, None)
    with pytest.raises(ValueError, match="no activation tensor named 'nope'"):
        qc.quantize_model(m, examples.digits_calibration(), ranges={"nope": (0, 1)})
    with pytest.raises(ValueError, match=r"ranges\['image'\]"):
        qc.quantize_model(m, examples.digits_calibration(), ranges={"image": (1.0, 0.0)})
    with pytest.raises(ValueError, match="not the weight"):
        qc.quantize_model(m, examples.digits_calibration(), weight_scales={"image": 1.0})
    with pytest.raises(ValueError, match="one per output channel"):
        qc.quantize_model(m, examples.digits_calibration(),
                          weight_scales={"conv1.weight0": np.ones(3)})


# ---- without torch ----------------------------------------------------------------------


def test_works_without_torch():
    code = """
import sys
sys.modules["torch"] = None
import numpy as np
import quantc as qc
import quantc.torch as qt
x, y = qc.examples.digits_data()
qm = qc.quantize_model(qc.examples.digits_model(), qc.examples.digits_calibration())
assert (qm(x).argmax(1) == y).mean() > 0.95
for use in (lambda: qt.FakeQuantize, lambda: qt.prepare_qat(None), lambda: qt.digits_module()):
    try:
        use()
    except ImportError as e:
        assert str(e) == "quantc.torch needs PyTorch: pip install 'quantc[torch]'", e
    else:
        raise AssertionError("no ImportError")
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@needs_torch
def test_batchnorm_is_folded_and_uncovered_tensors_need_calibration():
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            h = torch.relu(self.bn(self.conv(x)))
            return self.fc(torch.flatten(self.pool(h), 1))

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(16, 3, 6, 6)
    q = qt.prepare_qat(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    with torch.no_grad():
        q.train()(x)
        q.eval()
        ref = q(x).numpy()
        np.testing.assert_allclose(ref, net(x).numpy(), atol=0.1)
    with pytest.raises(ValueError, match="does not cover"):
        qt.convert(q, x[:2])  # the average pool's output has no FakeQuantize
    qm = qt.convert(q, x[:2], calibration_data=[x.numpy()])
    assert (qm(x.numpy()).argmax(1) == ref.argmax(1)).mean() >= 0.9


@needs_torch
def test_nested_modules_relu6_and_transposed_weights():
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 4, 1), nn.ReLU6())
            self.head = nn.ModuleDict({"fc": nn.Linear(64, 5)})

        def forward(self, x):
            return self.head["fc"](torch.flatten(self.features(x), 1))

    x = torch.randn(256, 2, 4, 4)
    q = qt.prepare_qat(Net().eval(), weight_bits=4)
    with torch.no_grad():
        q.train()(x)
        ref = q.eval()(x).numpy()
    qm = qt.convert(q, x[:2])
    assert qm.info["qat_tensors"] == {"input_x_act_fq": "input", "features_0_act_fq": "qat_act0",
                                      "features_2_act_fq": "qat_act1", "head_fc_act_fq": "output"}
    assert [r["op"] for r in qm.report()][:2] == ["Conv+Relu", "Conv+Clip"]
    assert all(np.abs(w["weight"]).max() <= 7 for w in qm.weights.values())
    out = qm(x.numpy())  # (an untrained net's logits tie on the output grid: no argmax test)
    assert np.abs(out - ref).max() <= 2 * qm.qparams["output"].scale
    # a Linear on a 3-D input is exported as MatMul with a new, transposed constant
    import io

    import onnx
    from quantc.torch import _find_initializer
    lin = nn.Linear(8, 6).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(lin, (torch.randn(2, 5, 8),), buf, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    name = _find_initializer(proto, lin.weight.detach().numpy())
    assert name is not None and name != "weight"
    assert _find_initializer(proto, np.ones((6, 8), np.float32)) is None
