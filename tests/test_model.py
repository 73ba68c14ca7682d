"""Full-integer models: builder, planning (BatchNorm folding, activation fusion), calibration,
the int8 run against a NumPy reference of the same arithmetic, save/load, errors."""
import os
import sys
import tracemalloc

import numpy as np
import pytest

import quantc as qc
from quantc import examples
from quantc.model import Node, conv2d_float
from quantc.qmodel import (METHODS, QuantizedModel, _bias_shift, fold_batch_norm, plan,
                           quantize_bias)

from conftest import assert_equal_exact, num_threads


# ---------------------------------------------------------------------------------------------
# references


def conv_ref(x, w, b, strides, pads, dilations, group):
    """Direct float64 loops over ONNX Conv's definition."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    t, left, bot, r = pads
    xp = np.zeros((n, c, h + t + bot, wd + left + r))
    xp[:, :, t:t + h, left:left + wd] = x
    oh = (h + t + bot - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    ow = (wd + left + r - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for o in range(m):
        g = o // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dilations[0]:, j * dilations[1]:]
                patch = patch[:, :, :oh * strides[0]:strides[0], :ow * strides[1]:strides[1]]
                y[:, o] += np.einsum("nchw,c->nhw", patch[:, :, :oh, :ow], w[o, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def requant_ref(acc, mult, zp, dtype, relu):
    """qlinear_conv / qlinear_matmul's documented requantization: float64 product, rne."""
    info = np.iinfo(dtype)
    y = np.rint(acc.astype(np.float64) * mult.astype(np.float64) + zp)
    lo = max(info.min, zp) if relu else info.min
    return np.clip(y, lo, info.max).astype(dtype)


def int8_reference(qm, x):
    """Run a QuantizedModel's graph with NumPy integer arithmetic and the documented
    formulas (io='float'; Conv, Gemm, MaxPool, Relu, Flatten, Add, GlobalAveragePool,
    Softmax)."""
    m = qm.model
    env = {}
    name = next(iter(m.inputs))
    qp = qm.qparams[name]
    info = np.iinfo(qp.dtype)
    env[name] = np.clip(np.rint(x / qp.scale) + qp.zero_point, info.min,
                        info.max).astype(qp.dtype)
    for n in m.nodes:
        out = n.outputs[0]
        if n.op in ("Conv", "Gemm", "MatMul"):
            a = env[n.inputs[0]].astype(np.int64) - qm.qparams[n.inputs[0]].zero_point
            wd = qm.weights[n.name]
            w = wd["weight"].astype(np.int64)
            if n.op == "Conv":
                acc = conv_ref(a, w, None, n.attrs["strides"], n.attrs["pads"],
                               n.attrs["dilations"], n.attrs["group"]).astype(np.int64)
                if wd["bias"] is not None:
                    acc += wd["bias"][None, :, None, None]
                bshape = (1, -1, 1, 1)
            else:  # Gemm (N, in), MatMul (..., in); weights (out, in); bias on the last axis
                acc = a @ w.T
                if wd["bias"] is not None:
                    acc += wd["bias"]
                bshape = (-1,)
            xs, ys = qm.qparams[n.inputs[0]].scale, qm.qparams[out].scale
            if out in qm.float_outputs:  # read only as float: int32 sums scaled, no requantize
                scale = (np.float32(xs) * wd["weight_scale"]).astype(np.float32)
                env[out] = acc.astype(np.int32).astype(np.float32) * scale.reshape(bshape)
                continue
            mult = ((np.float32(xs) * wd["weight_scale"]).astype(np.float32) / ys).astype(
                np.float32)
            relu = n.attrs.get("activation") is not None
            env[out] = requant_ref(acc, mult.reshape(bshape), qm.qparams[out].zero_point,
                                   qm.qparams[out].dtype, relu)
        elif n.op == "MaxPool":
            q = env[n.inputs[0]]
            k = n.attrs["kernel_shape"]
            nn, c, h, w = q.shape
            env[out] = q.reshape(nn, c, h // k[0], k[0], w // k[1], k[1]).max(axis=(3, 5))
        elif n.op == "Relu":  # a Relu not fused into its producer: clamp at the zero point
            env[out] = np.maximum(env[n.inputs[0]], qm.qparams[n.inputs[0]].zero_point)
        elif n.op == "Flatten":
            env[out] = env[n.inputs[0]].reshape(len(env[n.inputs[0]]), -1)
        elif n.op == "Add":
            pa, pb, py = (qm.qparams[t] for t in (n.inputs[0], n.inputs[1], out))
            ma, mb = np.float32(pa.scale / py.scale), np.float32(pb.scale / py.scale)
            fa = (env[n.inputs[0]].astype(np.float32) - np.float32(pa.zero_point)) * ma
            fb = (env[n.inputs[1]].astype(np.float32) - np.float32(pb.zero_point)) * mb
            y = np.rint(fa + fb) + py.zero_point
            lo = py.zero_point if n.attrs.get("activation") else np.iinfo(py.dtype).min
            env[out] = np.clip(y, lo, np.iinfo(py.dtype).max).astype(py.dtype)
        elif n.op == "GlobalAveragePool":
            px, py = qm.qparams[n.inputs[0]], qm.qparams[out]
            q = env[n.inputs[0]].astype(np.int64) - px.zero_point
            acc = q.sum(axis=(2, 3), keepdims=True).astype(np.float32)
            cnt = q.shape[2] * q.shape[3]
            mult = np.float32(np.float32(px.scale / py.scale) / np.float32(cnt))
            y = np.rint(acc * mult) + py.zero_point
            env[out] = np.clip(y, np.iinfo(py.dtype).min, np.iinfo(py.dtype).max).astype(
                py.dtype)
        else:
            raise AssertionError(n.op)
    o = m.outputs[0]
    if o in qm.float_outputs:
        return env[o]
    p = qm.qparams[o]
    return (env[o].astype(np.float32) - np.float32(p.zero_point)) * p.scale


# ---------------------------------------------------------------------------------------------
# models used below


def small_resnet(rng, with_softmax=False):
    """Conv+BN+ReLU, a residual Add+ReLU, a ReLU6 conv, depthwise, concat, pooling, Gemm."""
    def bn(c):
        return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                rng.uniform(0.3, 2.0, c))
    b = qc.ModelBuilder("small_resnet")
    x = b.input("x", (None, 3, 12, 12))
    h = b.relu(b.batch_norm(b.conv(x, rng.normal(0, 0.3, (8, 3, 3, 3)), None, pads=1), *bn(8)))
    r = b.conv(h, rng.normal(0, 0.2, (8, 8, 3, 3)), rng.normal(0, 0.1, 8), pads=1)
    h = b.relu(b.add(h, r))
    d = b.relu6(b.conv(h, rng.normal(0, 0.5, (8, 1, 3, 3)), rng.normal(0, 0.1, 8), pads=1,
                       group=8))
    h = b.concat([h, d], axis=1)
    h = b.max_pool(h, 2)
    h = b.avg_pool(h, 3, strides=1, pads=1)
    h = b.conv(h, rng.normal(0, 0.2, (16, 16, 1, 1)), None, strides=2, dilations=1)
    h = b.flatten(b.global_avg_pool(h))
    h = b.linear(h, rng.normal(0, 0.3, (5, 16)), rng.normal(0, 0.1, 5))
    if with_softmax:
        h = b.softmax(h)
    b.output(h)
    return b.build()


def odd_ops_model(rng):
    """MatMul with a constant B, Add of a constant, Reshape, a lone Relu and a lone Clip."""
    b = qc.ModelBuilder("odd_ops")
    x = b.input("x", (None, 2, 3, 8))
    h = b.add(x, rng.normal(0, 0.5, (1, 2, 1, 1)).astype(np.float32))
    h = b.reshape(h, [0, -1, 8])                 # (N, 6, 8)
    h = b.matmul(h, rng.normal(0, 0.5, (8, 5)).astype(np.float32))
    h = b.relu(b.reshape(h, [0, 30]))            # Relu after Reshape: not fused
    h = b.clip(b.linear(h, rng.normal(0, 0.3, (7, 30)), None), -0.5, 0.8)
    b.output(b.clip(b.flatten(h), -0.25, 0.5))   # Clip after a Flatten: a lone Clip
    return b.build()


@pytest.fixture(scope="module")
def digits():
    x, y = examples.digits_data()
    return examples.digits_model(), x, y, examples.digits_calibration()


# ---------------------------------------------------------------------------------------------
# float model


def test_builder_names_skip_given_ones():
    b = qc.ModelBuilder()
    h = b.input("x", (None, 3, 4, 4))
    w = np.ones((3, 3, 1, 1), np.float32)
    h = b.conv(h, w, name="conv1")
    h = b.conv(b.conv(h, w), w)  # the second unnamed conv skips "conv1"
    h = b.relu(b.relu(b.relu(h, name="relu_1")))
    b.output(h)
    names = [n.name for n in b.build().nodes]
    assert len(set(names)) == len(names) == 6 and {"conv1", "relu_1"} <= set(names)


@pytest.mark.parametrize("target,want", [((0, -1), (None, 48)), ((0, 6, -1), (None, 6, 8)),
                                         ((0, 6, 8), (None, 6, 8)), ((-1, 48), (None, 48)),
                                         ((0, 3, 0, -1), (None, 3, 4, 4))])
def test_reshape_keeps_the_batch(target, want):
    # a batch copied by 0 cancels on both sides: (N, 3, 4, 4) -> (0, -1) is (N, 48), so a
    # following Linear with the wrong in_features fails when the model is built
    b = qc.ModelBuilder()
    h = b.reshape(b.input("x", (None, 3, 4, 4)), target)
    b.output(h)
    assert b.build().shapes[h] == want
    if target == (0, -1):
        b = qc.ModelBuilder()
        b.output(b.linear(b.reshape(b.input("x", (None, 3, 4, 4)), target),
                          np.ones((5, 47), np.float32)))
        with pytest.raises(ValueError, match=r"inner dimensions differ: A \(N, 48\)"):
            b.build()
    for bad in ((0, 5, -1), (0, 6, 9)):
        b = qc.ModelBuilder()
        b.output(b.reshape(b.input("x", (None, 3, 4, 4)), bad))
        with pytest.raises(ValueError, match=r"cannot reshape \(N, 3, 4, 4\)"):
            b.build()


def test_builder_digits_matches_written_out_forward(digits):
    model, x, _, _ = digits
    p = examples.digits_weights()
    a = np.maximum(conv_ref(x, p["conv1.weight"], p["conv1.bias"], (1, 1), (1, 1, 1, 1),
                            (1, 1), 1), 0)
    a = np.maximum(conv_ref(a, p["conv2.weight"], p["conv2.bias"], (1, 1), (1, 1, 1, 1),
                            (1, 1), 1), 0)
    a = a.reshape(len(x), 32, 4, 2, 4, 2).max(axis=(3, 5)).reshape(len(x), -1)
    a = np.maximum(a @ p["fc1.weight"].T + p["fc1.bias"], 0)
    want = a @ p["fc2.weight"].T + p["fc2.bias"]
    got = model(x)
    assert got.dtype == np.float32 and got.shape == (360, 10)
    # float32 sums of <= 512 products of values ~1: relative error well below 1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("strides,pads,dil,group", [((1, 1), (0, 0, 0, 0), (1, 1), 1),
                                                    ((2, 1), (1, 2, 0, 1), (1, 2), 2),
                                                    ((2, 2), (1, 1, 1, 1), (1, 1), 6)])
def test_conv2d_float(rng, strides, pads, dil, group):
    x = rng.normal(size=(2, 6, 9, 11)).astype(np.float32)
    w = rng.normal(size=(12, 6 // group, 3, 3)).astype(np.float32)
    b = rng.normal(size=12).astype(np.float32)
    got = conv2d_float(x, w, b, strides, pads, dil, group)
    want = conv_ref(x, w, b, strides, pads, dil, group)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_model_validation_names_node_and_op(rng):
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"node 'bad' \(Sin\): unsupported op"):
        qc.Model({"x": (None, 3, 8, 8)}, [Node("Sin", ["x"], ["y"], name="bad")], ["y"])
    with pytest.raises(ValueError, match=r"node 'c' \(Conv\): the input has 5 channels"):
        qc.Model({"x": (None, 5, 8, 8)}, [Node("Conv", ["x", "w"], ["y"], name="c")], ["y"],
                 {"w": w})
    with pytest.raises(ValueError, match=r"node 'p' \(MaxPool\): ceil_mode=1"):
        qc.Model({"x": (None, 3, 8, 8)}, [Node("MaxPool", ["x"], ["y"], {
            "kernel_shape": [2, 2], "ceil_mode": 1}, name="p")], ["y"])
    with pytest.raises(ValueError, match=r"node 'p' \(MaxPool\): unsupported attribute"):
        qc.Model({"x": (None, 3, 8, 8)}, [Node("MaxPool", ["x"], ["y"], {
            "kernel_shape": [2, 2], "foo": 1}, name="p")], ["y"])
    with pytest.raises(ValueError, match="input 'z' is not a graph input"):
        qc.Model({"x": (None, 3)}, [Node("Relu", ["z"], ["y"])], ["y"])
    with pytest.raises(ValueError, match="outputs: 'q'"):
        qc.Model({"x": (None, 3)}, [Node("Relu", ["x"], ["y"])], ["q"])
    m = qc.Model({"x": (None, 3)}, [Node("Relu", ["x"], ["y"])], ["y"])
    with pytest.raises(ValueError, match=r"x\['x'\]: expected shape \(N, 3\), got \(2, 4\)"):
        m(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="expected a float array"):
        m(np.array([["a", "b", "c"]]))


# ---------------------------------------------------------------------------------------------
# planning


def test_fold_batch_norm_exact(rng):
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    g, be, mu = (rng.normal(size=6).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, 6).astype(np.float32)
    w2, b2 = fold_batch_norm(w, b, g, be, mu, var, 1e-5)
    k = g.astype(np.float64) / np.sqrt(var.astype(np.float64) + np.float64(np.float32(1e-5)))
    assert_equal_exact(w2, (w.astype(np.float64) * k[:, None, None, None]).astype(np.float32))
    assert_equal_exact(b2, ((b.astype(np.float64) - mu) * k + be).astype(np.float32))
    w3, b3 = fold_batch_norm(w, None, g, be, mu, var, 1e-5)
    assert_equal_exact(b3, ((0 - mu.astype(np.float64)) * k + be).astype(np.float32))


def test_plan_folds_and_fuses(rng):
    model = small_resnet(rng)
    p = plan(model)
    ops = [(n.op, n.attrs.get("activation")) for n in p.nodes]
    assert ("BatchNormalization", None) not in ops and ("Relu", None) not in ops
    assert ops[0] == ("Conv", "Relu")  # conv + BN + ReLU -> one node
    assert ("Add", "Relu") in ops and ("Conv", ["Clip", 0.0, 6.0]) in ops
    x = rng.normal(size=(4, 3, 12, 12)).astype(np.float32)
    want, got = model(x), p(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_plan_keeps_tensors_read_twice(rng):
    b = qc.ModelBuilder()
    x = b.input("x", (None, 3, 4, 4))
    c = b.conv(x, rng.normal(size=(3, 3, 1, 1)), None)
    b.output(b.add(b.relu(c), c))  # the conv's output is read by the Relu and the Add
    p = plan(b.build())
    assert [n.op for n in p.nodes] == ["Conv", "Relu", "Add"]
    b = qc.ModelBuilder()
    x = b.input("x", (None, 3, 4, 4))
    b.output(b.clip(b.conv(x, rng.normal(size=(3, 3, 1, 1)), None), 0.5, 6))
    assert [n.op for n in plan(b.build()).nodes] == ["Conv", "Clip"]  # 0 outside the range


def test_quantize_bias_formula():
    bias = np.array([1.0, -2.5, 1e12, -1e12, 0.3], np.float32)
    ws = np.array([0.01, 0.02, 1e-3, 1e-3, 0.7], np.float32)
    got = quantize_bias(bias, 0.05, ws)
    s = (np.float32(0.05) * ws).astype(np.float32).astype(np.float64)
    want = np.clip(np.rint(bias.astype(np.float64) / s), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    assert_equal_exact(got, want)
    assert got[2] == 2 ** 31 - 1 and got[3] == -2 ** 31


# ---------------------------------------------------------------------------------------------
# calibration and conversion


@pytest.mark.parametrize("method", METHODS)
def test_each_calibrator_keeps_accuracy(digits, method):
    model, x, y, calib = digits
    acc_f = (model(x).argmax(1) == y).mean()
    qm = qc.quantize_model(model, calib, method=method)
    acc = (qm(x).argmax(1) == y).mean()
    assert acc >= acc_f - 0.005, (method, acc, acc_f)
    obs = {"minmax": qc.MinMaxObserver(), "moving_average": qc.MovingAverageMinMaxObserver(),
           "percentile": qc.PercentileObserver(),
           "entropy": qc.HistogramObserver(method="entropy"),
           "mse": qc.HistogramObserver(method="mse")}[method]
    for batch in calib:
        obs.update(batch)
    want = obs.qparams(dtype="uint8")
    got = qm.qparams["image"]
    assert got.scale == want.scale and got.zero_point == int(want.zero_point)


def test_int8_run_equals_numpy_reference(digits, isa):
    model, x, _, calib = digits
    qm = qc.quantize_model(model, calib)
    for n in (1, 2):
        with num_threads(n):
            assert_equal_exact(qm(x[:50]), int8_reference(qm, x[:50]).astype(np.float32),
                               f"isa={isa} threads={n}")


def test_int8_run_residual_model_equals_reference(rng):
    b = qc.ModelBuilder()
    x = b.input("x", (None, 4, 6, 6))
    c = b.relu(b.conv(x, rng.normal(0, 0.4, (4, 4, 3, 3)), rng.normal(0, 0.1, 4), pads=1))
    h = b.relu(b.add(x, b.conv(c, rng.normal(0, 0.4, (4, 4, 3, 3)), None, pads=1)))
    h = b.flatten(b.global_avg_pool(h))
    b.output(b.linear(h, rng.normal(0, 0.5, (3, 4)), rng.normal(0, 0.1, 3)))
    model = b.build()
    data = [rng.normal(size=(8, 4, 6, 6)).astype(np.float32) for _ in range(4)]
    qm = qc.quantize_model(model, data, activation_dtype="int8")
    xt = rng.normal(size=(5, 4, 6, 6)).astype(np.float32)
    assert_equal_exact(qm(xt), int8_reference(qm, xt).astype(np.float32))


def nhwc_model(rng):
    """Residual blocks whose tensors a QuantizedModel keeps NHWC between its convolutions: a
    stem on the graph input, a MaxPool whose result is transposed to NHWC, 3x3 and strided
    1x1/3x3 convolutions joined by Add and Relu, a conv output that is also a graph output,
    and readers that need NCHW (MaxPool, GlobalAveragePool) or run on planes (a depthwise
    conv)."""
    b = qc.ModelBuilder("nhwc")
    x = b.input("x", (None, 3, 12, 12))
    h1 = b.relu(b.conv(x, rng.normal(0, 0.3, (16, 3, 3, 3)), rng.normal(0, 0.1, 16), pads=1))
    mp = b.max_pool(h1, 2)
    h2 = b.conv(mp, rng.normal(0, 0.15, (16, 16, 3, 3)), None, pads=1)
    h3 = b.conv(b.relu(h2), rng.normal(0, 0.15, (16, 16, 3, 3)), rng.normal(0, 0.1, 16), pads=1)
    h4 = b.relu(b.add(mp, h3))
    d = b.conv(h4, rng.normal(0, 0.3, (32, 16, 1, 1)), None, strides=2)
    h5 = b.relu(b.conv(h4, rng.normal(0, 0.15, (32, 16, 3, 3)), None, strides=2, pads=1))
    h6 = b.conv(h5, rng.normal(0, 0.1, (32, 32, 3, 3)), rng.normal(0, 0.1, 32), pads=1)
    h7 = b.relu(b.add(d, h6))
    h8 = b.relu(b.conv(h7, rng.normal(0, 0.2, (64, 32, 1, 1)), None))
    g = b.flatten(b.global_avg_pool(b.add(h8, b.conv(h8, rng.normal(0, 0.1, (64, 64, 1, 1)),
                                                       None))))
    b.output(b.linear(g, rng.normal(0, 0.3, (5, 64)), rng.normal(0, 0.1, 5)))
    p = b.conv(mp, rng.normal(0, 0.5, (16, 1, 3, 3)), None, pads=1, group=16)
    b.output(h2, b.flatten(b.global_avg_pool(b.max_pool(p, 2))))
    return b.build()


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_nhwc_tensors_equal_nchw(rng, isa, io):
    """The tensors kept NHWC between convolutions change no output bit, nor the report's
    per-layer statistics, against the same model run all NCHW; and the NumPy reference
    agrees."""
    model = nhwc_model(rng)
    data = [rng.normal(size=(4, 3, 12, 12)).astype(np.float32) for _ in range(2)]
    qm = qc.quantize_model(model, data, io=io)
    assert len(qm._nhwc) >= 8 and not qm._nhwc & set(model.inputs) and len(qm._late) == 1
    try:
        QuantizedModel._nhwc_enabled = False
        qm0 = qc.quantize_model(model, data, io=io)
    finally:
        QuantizedModel._nhwc_enabled = True
    assert not qm0._nhwc
    x = data[0] if io == "float" else qc.quantize(data[0], *qm.input_qparams["x"][:2],
                                                   dtype=io)
    for t in (1, 2):
        with num_threads(t):
            got, want = qm(x), qm0(x)
        for g, w in zip(got, want):
            assert_equal_exact(g, w, f"{isa} threads={t}")
    if io == "float":
        assert_equal_exact(got[0], int8_reference(qm, x).astype(np.float32))
        assert str(qm.report()) == str(qm0.report())


@pytest.mark.parametrize("const_first", [False, True])
def test_add_of_a_constant_either_side(rng, tmp_path, const_first):
    # torch exports `self.bias + conv(x)` as Add(constant, tensor): quantize_model asked for
    # the constant's activation qparams and failed
    b = qc.ModelBuilder("m")
    x = b.input("x", (None, 2, 4, 4))
    c = rng.standard_normal((2, 1, 1)).astype(np.float32)
    b.output(b.add(c, x) if const_first else b.add(x, c))
    model = b.build()
    data = [rng.standard_normal((3, 2, 4, 4)).astype(np.float32)]
    qm = qc.quantize_model(model, data)
    assert qm.kinds == {"add_0": "int8"}
    got = qm(data[0])
    out = float(qm.qparams[model.outputs[0]].scale)
    # three roundings (x, the constant, the sum), each within half a step of its own scale
    assert np.abs(got - model(data[0])).max() < 2 * out
    qm.save(tmp_path / "m.safetensors")
    assert_equal_exact(qc.load_model(tmp_path / "m.safetensors")(data[0]), got, "load_model")


def test_matmul_bias_add_becomes_int32_bias(rng, tmp_path):
    """torch.nn.Linear on a 3-D input exports as MatMul + Add(bias) (bias first or second):
    the Add becomes the MatMul's int32 bias (with the Relu fused), exact against the NumPy
    reference, saved and exported like a Gemm's; a constant that is not one value per output
    column stays an int8 Add."""
    b = qc.ModelBuilder()
    x = b.input("x", (None, 5, 16))
    h = b.relu(b.add(rng.normal(0, 0.3, 8).astype(np.float32),
                     b.matmul(x, rng.normal(0, 0.3, (16, 8)))))
    h = b.add(b.matmul(h, rng.normal(0, 0.3, (8, 4))), rng.normal(0, 0.3, (1, 4)))
    b.output(b.add(h, rng.normal(0, 0.3, (5, 4)).astype(np.float32)))
    model = b.build()
    planned = plan(model)
    assert [(n.op, len(n.inputs), n.attrs.get("activation")) for n in planned.nodes] == \
        [("MatMul", 3, "Relu"), ("MatMul", 3, None), ("Add", 2, None)]
    data = [rng.normal(size=(8, 5, 16)).astype(np.float32) for _ in range(3)]
    for bc in (False, True):
        qm = qc.quantize_model(model, data, bias_correction=bc)
        assert set(qm.kinds.values()) == {"int8"}
        xt = rng.normal(size=(6, 5, 16)).astype(np.float32)
        first = qm.model.nodes[0]
        assert qm.weights[first.name]["bias"] is not None
        y, ref = qm(xt), model(xt)
        s = qm.output_qparams[model.outputs[0]][0]
        sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((y - ref) ** 2.0))
        assert sqnr > 30, sqnr  # 4 rounding stages of 8 bits each on random weights
        path = tmp_path / f"mm{bc}.safetensors"
        qm.save(path)
        assert_equal_exact(qc.load_model(path)(xt), y)
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    qm.to_onnx(tmp_path / "mm.onnx")
    sess = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"])
    units = np.abs(sess.run(None, {"x": xt})[0] - y) / s
    assert units.max() <= 1.0001 and (units <= 1.0001).mean() >= 0.99


def test_matmul_bias_equals_numpy_reference(rng):
    b = qc.ModelBuilder()
    x = b.input("x", (None, 3, 12))
    h = b.relu(b.add(b.matmul(x, rng.normal(0, 0.3, (12, 7))), rng.normal(0, 0.3, 7)))
    b.output(b.add(rng.normal(0, 0.3, (1, 1, 5)), b.matmul(h, rng.normal(0, 0.3, (7, 5)))))
    model = b.build()
    data = [rng.normal(size=(8, 3, 12)).astype(np.float32) for _ in range(3)]
    qm = qc.quantize_model(model, data)
    assert [n.op for n in qm.model.nodes] == ["MatMul", "MatMul"]
    xt = rng.normal(size=(4, 3, 12)).astype(np.float32)
    assert_equal_exact(qm(xt), int8_reference(qm, xt).astype(np.float32))


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_odd_ops_int8_close_to_float_and_onnxruntime(rng, tmp_path, io):
    model = odd_ops_model(rng)
    data = [rng.normal(size=(16, 2, 3, 8)).astype(np.float32) for _ in range(4)]
    qm = qc.quantize_model(model, data, io=io)
    assert set(qm.kinds.values()) == {"int8"}
    ops = [(n.op, n.attrs.get("activation")) for n in qm.model.nodes]
    assert ("Relu", None) in ops and ("Clip", None) in ops and ("Gemm", ["Clip", -0.5, float(np.float32(0.8))]) in ops
    x = rng.normal(size=(32, 2, 3, 8)).astype(np.float32)
    y = model(x)
    if io == "float":
        got = qm(x)
        assert got.min() >= -0.25 and got.max() <= 0.5
        # four quantized activations in a row (input, add, matmul, gemm): a signal-to-noise
        # ratio of 20 dB is what 8-bit steps leave after that much random mixing
        sqnr = 10 * np.log10(np.sum(y.astype(np.float64) ** 2) / np.sum((got - y) ** 2.0))
        assert sqnr > 20, sqnr
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    qm.to_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    xin = x if io == "float" else qc.quantize(x, qm.input_qparams["x"][0],
                                              np.uint8(qm.input_qparams["x"][1]))
    got, want = sess.run(None, {"x": xin})[0], qm(xin)
    s = qm.output_qparams[model.outputs[0]][0]
    units = np.abs(got.astype(np.float64) - want.astype(np.float64)) / (1 if io != "float" else s)
    assert units.max() <= 1.0001 and (units <= 1.0001).mean() >= 0.999


def test_per_tensor_weights_and_int8_activations(digits):
    model, x, y, calib = digits
    qm = qc.quantize_model(model, calib, weight_granularity="per_tensor",
                           activation_dtype="int8")
    for wd in qm.weights.values():
        assert np.all(wd["weight_scale"] == wd["weight_scale"][0])
        assert wd["weight"].min() >= -127
    assert all(p.dtype == np.int8 for p in qm.qparams.values())
    assert (qm(x).argmax(1) == y).mean() > 0.97


def test_weights_and_bias_scheme(digits):
    model, _, _, calib = digits
    qm = qc.quantize_model(model, calib, bias_correction=False)
    p = examples.digits_weights()
    w = p["conv2.weight"]
    wd = qm.weights["conv2"]
    amax = np.abs(w.reshape(32, -1)).max(axis=1)
    assert_equal_exact(wd["weight_scale"], (amax / np.float32(127)).astype(np.float32))
    assert np.abs(wd["weight"]).max() == 127 and wd["weight"].dtype == np.int8
    xs = qm.qparams[qm.model.nodes[1].inputs[0]].scale
    assert_equal_exact(wd["bias"], quantize_bias(p["conv2.bias"], xs, wd["weight_scale"]))


def test_bias_correction(digits, rng):
    model, x, _, calib = digits
    qm = qc.quantize_model(model, calib)
    plain = qc.quantize_model(model, calib, bias_correction=False)
    p = examples.digits_weights()
    mean = np.concatenate(calib).mean(axis=(0, 2, 3), dtype=np.float64)
    wd = qm.weights["conv1"]
    deq = wd["weight"] * wd["weight_scale"][:, None, None, None]
    # each tap weighted by the share of output pixels where it reads the image, not padding
    node = [n for n in qm.model.nodes if n.name == "conv1"][0]
    kh, kw = p["conv1.weight"].shape[2:]
    H, W = qm.model.shapes["image"][2:]
    pads = node.attrs.get("pads", (0, 0, 0, 0))
    inside = np.zeros((kh, kw))
    for oy in range(H + pads[0] + pads[2] - kh + 1):  # (stride 1)
        for ox in range(W + pads[1] + pads[3] - kw + 1):
            for ky in range(kh):
                for kx in range(kw):
                    y, x_ = oy + ky - pads[0], ox + kx - pads[1]
                    inside[ky, kx] += 0 <= y < H and 0 <= x_ < W
    inside /= (H + pads[0] + pads[2] - kh + 1) * (W + pads[1] + pads[3] - kw + 1)
    assert inside.min() < 1  # the test means something: conv1 pads
    shift = ((deq.astype(np.float64) - p["conv1.weight"]) * inside).sum(axis=(2, 3)) @ mean
    xs = qm.qparams["image"].scale
    assert_equal_exact(wd["bias"], quantize_bias((p["conv1.bias"] - shift).astype(np.float32),
                                                 xs, wd["weight_scale"]))
    assert not np.array_equal(wd["bias"], plain.weights["conv1"]["bias"])
    # depthwise: each output channel sees its own input channel's mean
    w = rng.normal(size=(6, 1, 3, 3))
    d = w + rng.normal(0, 0.01, w.shape)
    mu = rng.normal(size=6)
    assert np.allclose(_bias_shift(w, d, mu, group=6), (d - w).sum(axis=(1, 2, 3)) * mu)
    assert np.allclose(_bias_shift(w, d, mu, group=6, taps=np.eye(3)),
                       (d - w)[:, 0, [0, 1, 2], [0, 1, 2]].sum(axis=1) * mu)
    # the corrected model is at least as close to float on the test images
    ref = model(x)
    err = [np.mean((m(x) - ref) ** 2) for m in (qm, plain)]
    assert err[0] <= err[1] * 1.05, err


def test_io_raw_types(digits):
    model, x, _, calib = digits
    qf = qc.quantize_model(model, calib)
    qu = qc.quantize_model(model, calib, io="uint8")
    qi = qc.quantize_model(model, calib, io="int8")
    s, z, dt = qu.input_qparams["image"]
    assert dt == "uint8" and qi.input_qparams["image"] == (s, z - 128, "int8")
    assert tuple(qu.qparams["image"]) == (s, z, "uint8")  # the documented triple
    xu = qc.quantize(x, s, np.uint8(z))
    yu = qu(xu)
    assert yu.dtype == np.uint8
    for q, v in ((qu, xu), (qf, x)):  # a dict with a name the model lacks: refused either way
        with pytest.raises(ValueError, match=r"x: expected the inputs \['image'\], got "
                                             r"\['image', 'z'\]"):
            q({"image": v, "z": v})
        with pytest.raises(ValueError, match=r"x: expected the inputs \['image'\], got \[\]"):
            q({})
    xi = (xu ^ np.uint8(128)).view(np.int8)  # the same values with the zero point - 128
    assert_equal_exact(qi(xi).view(np.uint8) ^ np.uint8(128), yu)
    so, zo, _ = qu.output_qparams["fc2.out"]
    assert "fc2.out" in qf.float_outputs and "fc2.out" not in qu.float_outputs
    # the float model's last layer skips the requantization the raw one does: half a step
    np.testing.assert_allclose((yu.astype(np.float32) - np.float32(zo)) * so, qf(x), rtol=0,
                               atol=so * 0.5001)
    with pytest.raises(TypeError, match=r"x\['image'\]: expected uint8"):
        qu(x)


def test_float_fallback_and_report(rng):
    model = small_resnet(rng, with_softmax=True)
    data = [rng.normal(size=(16, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    qm = qc.quantize_model(model, data)
    kinds = qm.kinds
    assert list(kinds.values()).count("float") == 1 and kinds[qm.model.nodes[-1].name] == "float"
    rep = qm.report()
    assert len(rep) == len(qm.model.nodes)
    text = str(rep)
    assert "run in float between dequantize and quantize" in text and "softmax" in text
    rows = rep.to_list()
    assert all(r["sqnr_db"] > 15 for r in rows), text
    assert all(r["clipped_pct"] == 0 for r in rows if r["op"] != "MaxPool")  # minmax
    assert all(0 <= r["clipped_pct"] < 5 for r in rows)
    y = qm(data[0])
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)
    assert (y.argmax(1) == model(data[0]).argmax(1)).mean() > 0.8


def test_minmax_report_clips_nothing(digits):
    model, _, _, calib = digits
    rows = qc.quantize_model(model, calib).report().to_list()
    assert [r["clipped_pct"] for r in rows] == [0.0] * len(rows)


def test_isa_and_threads_do_not_change_results(rng):
    model = small_resnet(rng)
    data = [rng.normal(size=(8, 3, 12, 12)).astype(np.float32) for _ in range(2)]
    qm = qc.quantize_model(model, data)
    from conftest import SUPPORTED_ISAS, isa_cap
    with isa_cap("scalar"), num_threads(1):
        want = qm(data[0])
    for name in SUPPORTED_ISAS:
        with isa_cap(name), num_threads(2):
            assert_equal_exact(qm(data[0]), want, name)  # weights packed again for the cap
            assert_equal_exact(qc.quantize_model(model, data)(data[0]), want, name)


# ---------------------------------------------------------------------------------------------
# calibration data errors and streaming


def test_calibration_errors(digits):
    model, x, _, _ = digits
    with pytest.raises(ValueError, match="calibration_data: expected at least one batch"):
        qc.quantize_model(model, [])
    with pytest.raises(ValueError, match=r"calibration_data\[1\]: .*expected shape"):
        qc.quantize_model(model, [x[:4], x[:4, :, :4]])
    bad = x[:4].copy()
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"calibration_data\[0\].*NaN"):
        qc.quantize_model(model, [bad])
    for v, sign in ((np.inf, r"\+inf"), (-np.inf, "-inf")):  # no range: named, not NaN later
        bad[2, 0, 3, 3] = v
        for method in ("minmax", "entropy"):
            with pytest.raises(ValueError, match=r"calibration_data\[1\]: input 'image': "
                                                 r"expected finite values to calibrate on, "
                                                 f"got {sign}$"):
                qc.quantize_model(model, [x[:4], bad], method=method)
    with pytest.raises(TypeError, match=r"calibration_data\[0\]: expected"):
        qc.quantize_model(model, [["a", None]])
    with pytest.raises(TypeError, match="calibration_data: expected an iterable"):
        qc.quantize_model(model, x)
    with pytest.raises(TypeError, match=r"x\['image'\]: expected a float array"):
        qc.quantize_model(model, [x[:4].astype(np.complex64)])
    with pytest.raises(ValueError, match="method: expected one of"):
        qc.quantize_model(model, [x], method="kl")
    with pytest.raises(ValueError, match="io: expected one of"):
        qc.quantize_model(model, [x], io="int4")
    with pytest.raises(TypeError, match="model: expected a quantc.Model"):
        qc.quantize_model("model.onnx", [x])
    assert not np.isnan(x).any()  # inputs unmodified


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_bias_too_large_for_int32_widens_the_weight_scale(rng, granularity):
    # row 1's weights (1e-7) give a weight scale of 8e-10: its bias 0.5 would be 3e10 steps,
    # saturated and then wrapped in the int32 accumulator (0.04 came out instead of 0.5)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    w[1] = [1e-7, -1e-7, 0.5e-7, 0.0]
    bias = np.array([0.1, 0.5, -0.2], np.float32)
    model = qc.Model({"x": (None, 4)}, [qc.Node("Gemm", ["x", "w", "b"], ["y"], {"transB": 1},
                                                name="fc")], ["y"], {"w": w, "b": bias})
    x = rng.standard_normal((32, 4)).astype(np.float32)
    qm = qc.quantize_model(model, [x], weight_granularity=granularity, bias_correction=False)
    ref = model(x)
    ws = qm.weights["fc"]["weight_scale"]
    xs = float(qm.qparams["x"].scale)
    # the row's weights are ~0: its output is the bias, within half its step
    np.testing.assert_allclose(qm(x)[:, 1], ref[:, 1], atol=0.5 * xs * ws[1] + 1e-6)
    assert np.all(np.abs(qm.weights["fc"]["bias"].astype(np.int64)) + 4 * 255 * 128 < 2 ** 31)
    assert 0.5 / (xs * ws[1]) < 2 ** 31 - 4 * 255 * 128
    if granularity == "per_channel":  # the other rows keep amax / 127
        np.testing.assert_array_equal(ws[[0, 2]], np.abs(w[[0, 2]]).max(1) / np.float32(127))
        assert np.abs(qm(x) - ref).max() < 0.1
    else:
        assert np.all(ws == ws[0])


def test_calibration_overflow_names_the_tensor():
    model = qc.Model({"x": (None, 1, 2, 2)}, [qc.Node("Conv", ["x", "w"], ["y"], name="big")],
                     ["y"], {"w": np.full((1, 1, 1, 1), 1e30, np.float32)})
    with pytest.raises(ValueError, match=r"calibration_data\[1\]: tensor 'y' \(the output of "
                                         r"node 'big', Conv\): expected finite values to "
                                         r"calibrate on, got \+inf"):
        with np.errstate(over="ignore"):
            qc.quantize_model(model, [np.ones((1, 1, 2, 2), np.float32),
                                      np.full((1, 1, 2, 2), 1e10, np.float32)])


def test_calibration_is_streamed(digits):
    model, x, _, _ = digits

    def gen(n):
        for i in range(n):
            yield x[(i * 16) % 320:(i * 16) % 320 + 16]

    peaks = []
    for n in (20, 200):
        tracemalloc.start()
        qm = qc.quantize_model(model, gen(n))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert qm.info["report_samples"] == "the first 256 calibration inputs"
    assert peaks[1] < 1.3 * peaks[0], peaks


# ---------------------------------------------------------------------------------------------
# files


def test_activations_are_dropped_after_their_last_use(rng):
    """Peak memory of a run is the live activations, not all of them: a chain of 12 convs
    peaks about where a chain of 3 does (each activation here is 128 KiB)."""
    def chain(n):
        b = qc.ModelBuilder()
        h = b.input("x", (None, 16, 32, 32))
        for _ in range(n):
            h = b.relu(b.conv(h, rng.normal(0, 0.2, (16, 16, 3, 3)), None, pads=1))
        b.output(b.global_avg_pool(h))
        return b.build()
    x = rng.normal(size=(8, 16, 32, 32)).astype(np.float32)
    peaks = []
    for n in (3, 12):
        qm = qc.quantize_model(chain(n), [x], bias_correction=False)
        qm(x)
        tracemalloc.start()
        try:
            qm(x)
            peaks.append(tracemalloc.get_traced_memory()[1])
            qm.run(x)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    act = 8 * 16 * 32 * 32
    assert peaks[2] < peaks[0] + act and peaks[3] < peaks[1] + act, (peaks, act)


def test_save_load_bit_identical(tmp_path, rng):
    model = small_resnet(rng, with_softmax=True)
    data = [rng.normal(size=(8, 3, 12, 12)).astype(np.float32) for _ in range(2)]
    for io in ("float", "uint8"):
        qm = qc.quantize_model(model, data, io=io)
        path = tmp_path / f"m_{io}.safetensors"
        qm.save(path)
        back = qc.load_model(path)
        xin = data[0] if io == "float" else qc.quantize(
            data[0], qm.input_qparams["x"][0], np.uint8(qm.input_qparams["x"][1]))
        assert_equal_exact(back(xin), qm(xin))
        assert str(back.report()) == str(qm.report())
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(os.listdir(tmp_path)) == ["m_float.safetensors", "m_uint8.safetensors"]


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u


def test_load_rejects_corrupted_files(tmp_path, digits):
    model, x, _, calib = digits
    qm = qc.quantize_model(model, calib)
    good = tmp_path / "m.safetensors"
    qm.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.safetensors"):
        qc.load_model(trunc)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="junk.safetensors"):
        qc.load_model(junk)
    weights_only = tmp_path / "w.safetensors"
    qc.quantize_weights(examples.digits_weights(), progress=False).save(weights_only)
    with pytest.raises(ValueError, match="no quantc model metadata"):
        qc.load_model(weights_only)
    import json
    from quantc.io import write_tensors, TensorReader
    with TensorReader(good) as r:
        meta, tensors = dict(r.metadata), {n: r.read(n) for n in r.names}
    g = json.loads(meta["graph"])
    g["qparams"]["image"][0] = -1.0
    bad = tmp_path / "bad.safetensors"
    write_tensors(bad, tensors, dict(meta, graph=json.dumps(g)))
    with pytest.raises(ValueError, match="bad.safetensors: not a valid quantc model file"):
        qc.load_model(bad)
    tensors["conv2::weight"] = tensors["conv2::weight"][:3]
    write_tensors(bad, tensors, meta)
    with pytest.raises(ValueError, match="not a valid quantc model file"):
        qc.load_model(bad)


def test_load_checks_the_saved_qparams(tmp_path, digits):
    """Each saved value is checked for what it is: a scale is a positive finite float (not a
    bool), a zero point an int of the activation dtype's range (not 1.7), every activation
    has the model's activation_dtype (uint8/int8), weight and constant scales are positive."""
    import json
    from quantc.io import write_tensors, TensorReader
    model, x, _, calib = digits
    qm = qc.quantize_model(model, calib)
    good = tmp_path / "m.safetensors"
    qm.save(good)
    with TensorReader(good) as r:
        meta, tensors = dict(r.metadata), {n: r.read(n) for n in r.names}
    name = next(k for k in json.loads(meta["graph"])["qparams"] if k != "image")
    wscale = next(k for k in tensors if k.endswith("::weight_scale"))
    bad = tmp_path / "bad.safetensors"

    def check(msg, qp=None, graph=None, tensor=None):
        g = json.loads(meta["graph"])
        t = dict(tensors)
        if qp is not None:
            s, z, dt = g["qparams"][name]
            g["qparams"][name] = qp(s, z, dt)
        if graph is not None:
            graph(g)
        if tensor is not None:
            t[wscale] = tensor(t[wscale].copy())
        write_tensors(bad, t, dict(meta, graph=json.dumps(g)))
        with pytest.raises(ValueError, match="bad.safetensors: not a valid quantc model file: "
                                             + msg):
            qc.load_model(bad)

    qp_msg = f"tensor '{name}': qparams "
    check(qp_msg, qp=lambda s, z, dt: [s, 1.7, dt])
    check(qp_msg, qp=lambda s, z, dt: [s, True, dt])
    check(qp_msg, qp=lambda s, z, dt: [True, z, dt])
    check(qp_msg, qp=lambda s, z, dt: [1e-60, z, dt])  # 0 in float32
    check(qp_msg, qp=lambda s, z, dt: [1e300, z, dt])  # inf in float32
    check(qp_msg, qp=lambda s, z, dt: [s, 256, dt])
    check(qp_msg, qp=lambda s, z, dt: [s, 0, "int8"])  # one int8 tensor in a uint8 model
    check(qp_msg, qp=lambda s, z, dt: [s, z])
    check("activation_dtype: expected 'uint8' or 'int8', got 'float32'",
          graph=lambda g: g.__setitem__("activation_dtype", "float32"))
    check("io: expected", graph=lambda g: g.__setitem__("io", "float32"))
    for v in (-1.0, 0.0, np.inf, np.nan):
        check(f"tensor '{wscale}': expected positive finite scales",
              tensor=lambda s: (s.__setitem__(0, v), s)[1])
    assert_equal_exact(qc.load_model(good)(x[:8]), qm(x[:8]))


def test_load_checks_constant_operands(tmp_path, rng):
    from quantc.io import write_tensors, TensorReader
    b = qc.ModelBuilder("m")
    b.output(b.add(b.input("x", (None, 2, 4, 4)), rng.standard_normal((2, 1, 1))
                   .astype(np.float32)))
    qm = qc.quantize_model(b.build(), [rng.standard_normal((3, 2, 4, 4)).astype(np.float32)])
    good = tmp_path / "m.safetensors"
    qm.save(good)
    with TensorReader(good) as r:
        meta, tensors = dict(r.metadata), {n: r.read(n) for n in r.names}
    prefix = "add_0::const1::"
    bad = tmp_path / "bad.safetensors"
    for key, value in [("scale", np.float32(-1)), ("scale", np.float32(np.nan)),
                       ("zero_point", np.int32(300)), ("q", tensors[prefix + "q"].view(np.int8)),
                       ("scale", np.ones(1, np.float32))]:
        write_tensors(bad, dict(tensors, **{prefix + key: value}), meta)
        with pytest.raises(ValueError, match="bad.safetensors: not a valid quantc model file: "
                                             "tensor 'add_0::const1': expected uint8 values"):
            qc.load_model(bad)


def test_save_writes_nothing_on_failure(tmp_path, digits):
    model, _, _, calib = digits
    qm = qc.quantize_model(model, calib)
    with pytest.raises(ValueError, match="expected a .safetensors"):
        qm.save(tmp_path / "m.npz")
    with pytest.raises(FileNotFoundError):
        qm.save(tmp_path / "nope" / "m.safetensors")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# ONNX export, run by onnxruntime


@pytest.mark.parametrize("io", ["float", "uint8", "int8"])
def test_to_onnx_runs_in_onnxruntime(tmp_path, rng, io):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = small_resnet(rng)
    data = [rng.normal(size=(16, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    qm = qc.quantize_model(model, data, io=io)
    path = tmp_path / "m.onnx"
    qm.to_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(64, 3, 12, 12)).astype(np.float32)
    if io != "float":
        s, z, dt = qm.input_qparams["x"]
        x = qc.quantize(x, s, np.dtype(dt).type(z))
    got, want = sess.run(None, {"x": x})[0], qm(x)
    assert got.dtype == want.dtype
    if io == "float":
        units = np.abs(got - want) / qm.output_qparams[model.outputs[0]][0]
    else:
        units = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert units.max() <= 1.0001 and (units <= 1.0001).mean() >= 0.999


def test_to_onnx_digits_exact(tmp_path, digits):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, x, _, calib = digits
    qm = qc.quantize_model(model, calib, io="uint8")
    proto = qm.to_onnx(tmp_path / "d.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    sess = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    s, z, _ = qm.input_qparams["image"]
    xq = qc.quantize(x, s, np.uint8(z))
    assert_equal_exact(sess.run(None, {"image": xq})[0], qm(xq))


def test_no_stderr(monkeypatch, digits):
    """pythonw and some services run without sys.stderr: no progress bar, no error."""
    model, _, _, calib = digits
    monkeypatch.setattr(sys, "stderr", None)
    assert qc.quantize_model(model, calib[:1]).kinds


def test_attribute_values_normalized_or_named():
    """Attributes arrive as NumPy scalars and arrays (or bytes from ONNX): they become plain
    Python values; a value of the wrong kind is an error naming the attribute."""
    from quantc.model import Model, Node
    w = np.ones((2, 2, 1, 1), np.float32)
    m = Model({"x": (1, 2, 4, 4)}, [Node("Conv", ["x", "w"], ["y"], {
        "strides": np.array([1, 1]), "group": np.int64(1), "auto_pad": b"VALID"})], ["y"],
        {"w": w})
    assert m.nodes[0].attrs == {"strides": [1, 1], "group": 1, "auto_pad": "VALID"}
    assert type(m.nodes[0].attrs["group"]) is int
    m = Model({"x": (1, 2)}, [Node("Clip", ["x"], ["y"], {"min": np.float32(0.5),
                                                          "max": float("inf")})], ["y"])
    assert m(np.float32([[0, 9]])).tolist() == [[0.5, 9.0]]  # an infinite bound is no bound
    for attrs, msg in [({"transA": 1.0}, "transA: expected an int"),
                       ({"alpha": 10 ** 400}, "alpha: expected a finite number"),
                       ({"alpha": float("nan")}, "alpha: expected a finite number"),
                       ({"beta": True}, "beta: expected a finite number")]:
        with pytest.raises(ValueError, match=msg):
            Model({"x": (1, 2)}, [Node("Gemm", ["x", "w"], ["y"], attrs)], ["y"],
                  {"w": np.ones((2, 2), np.float32)})
    with pytest.raises(ValueError, match="min: expected a number"):
        Model({"x": (1, 2)}, [Node("Clip", ["x"], ["y"], {"min": float("nan")})], ["y"])


def test_planning_a_planned_model_again(rng):
    """qm.model (planned) quantized again keeps its tensor names, its fused activations and
    its results (the Gemm's weight was renamed '.weight_t_1' on every second planning)."""
    from quantc.model import Model, Node
    w = rng.standard_normal((6, 4)).astype(np.float32)  # (in, out): transB=0
    model = Model({"x": (None, 6)}, [Node("Gemm", ["x", "w", "b"], ["g"], {"alpha": 0.5}),
                                     Node("Relu", ["g"], ["y"])], ["y"],
                  {"w": w, "b": rng.standard_normal(4).astype(np.float32)})
    data = [rng.standard_normal((16, 6)).astype(np.float32)]
    qm = qc.quantize_model(model, data, bias_correction=False)
    again = qc.quantize_model(qm.model, data, bias_correction=False)
    assert sorted(again.model.initializers) == sorted(qm.model.initializers)
    assert again.model.nodes[0].attrs == qm.model.nodes[0].attrs == {
        "transB": 1, "activation": "Relu"}
    x = rng.standard_normal((32, 6)).astype(np.float32)
    assert_equal_exact(again(x), qm(x))
    assert again(x).min() >= 0


def test_empty_planes_in_the_float_model():
    """An empty plane gives an empty output, as the int8 kernels do (the float model raised
    'kernel larger than the padded input')."""
    from quantc.model import Model, Node
    w = np.ones((4, 2, 3, 3), np.float32)
    for hw, want in (((0, 5), (0, 3)), ((2, 0), (0, 0)), ((5, 0), (3, 0))):
        m = Model({"x": (None, 2) + hw}, [Node("Conv", ["x", "w"], ["y"])], ["y"], {"w": w})
        assert m.shapes["y"] == (None, 4) + want
        assert m(np.zeros((1, 2) + hw, np.float32)).shape == (1, 4) + want
        assert qc.conv_integer(np.zeros((1, 2) + hw, np.uint8),
                               np.ones((4, 2, 3, 3), np.int8)).shape == (1, 4) + want


def test_file_version_follows_the_features(tmp_path, rng):
    """A model file is version 1 (what every quantc reads) unless the model has a Concat with a
    constant operand or a constant output (version 2), a float output clamped to a given
    range (version 3), an op that only moves values requantizing to a range given for its
    output (version 4), an int8 op with onnxruntime's arithmetic (version 5, the default
    arithmetic) or a Mul of two activations, which runs in int8 (version 6), each of which an
    older quantc refuses by its version; this quantc reads all six and refuses a later one."""
    import json

    from quantc.io import TensorReader, write_tensors
    from quantc.model import Model, Node
    x = rng.standard_normal((2, 3)).astype(np.float32)
    c = rng.standard_normal((2, 2)).astype(np.float32)
    plain = Model({"a": (2, 3)}, [Node("Relu", ["a"], ["y"])], ["y"])
    concat = Model({"a": (2, 3)}, [Node("Concat", ["c", "a"], ["y"], {"axis": 1})], ["y"],
                   {"c": c})
    const_out = Model({"a": (2, 3)}, [Node("Relu", ["a"], ["y"])], ["y", "c"], {"c": c})
    gemm = Model({"a": (2, 3)}, [Node("Gemm", ["a", "w"], ["y"])], ["y"],
                 {"w": rng.standard_normal((3, 4)).astype(np.float32)})
    mul = Model({"a": (2, 3)}, [Node("Relu", ["a"], ["r"]), Node("Mul", ["a", "r"], ["y"])],
                ["y"])
    y = gemm(x)
    narrow = {"y": (float(y.min()) / 2, float(y.max()) / 2)}  # clamps the float output
    ort, ref = "onnxruntime", "reference"
    for model, ranges, arith, version in (
            (plain, None, ort, "1"), (concat, None, ref, "2"), (concat, None, ort, "5"),
            (const_out, None, ort, "2"), (gemm, None, ort, "1"),  # a float output: no requant
            (gemm, {"a": (-3.0, 3.0)}, ort, "1"),
            (plain, {"a": (-3.0, 3.0), "y": (0.0, 1.0)}, ort, "4"),
            (mul, None, ref, "6"), (mul, None, ort, "6"),
            (gemm, narrow, ort, "3")):  # (last: its outputs are checked below)
        qm = qc.quantize_model(model, [x], ranges=ranges, arithmetic=arith)
        qm.save(tmp_path / "m.safetensors")
        with TensorReader(tmp_path / "m.safetensors") as r:
            meta, tensors = r.metadata, {k: r.read(k) for k in r.names}
        assert meta["version"] == version
        back = qc.load_model(tmp_path / "m.safetensors")
        assert back.arithmetic == arith
        got, want = back.run(x), qm.run(x)
        for name in model.outputs:
            assert_equal_exact(got[name], want[name], name)
    assert want["y"].min() == pytest.approx(narrow["y"][0], abs=0.05) and \
        want["y"].max() == pytest.approx(narrow["y"][1], abs=0.05)
    graph = json.loads(meta["graph"])
    graph["info"]["given_ranges"] = "y"
    write_tensors(tmp_path / "bad.safetensors", tensors, dict(meta, graph=json.dumps(graph)))
    with pytest.raises(ValueError, match="given_ranges: expected a list of tensor names"):
        qc.load_model(tmp_path / "bad.safetensors")
    write_tensors(tmp_path / "m7.safetensors", tensors, dict(meta, version="7"))
    with pytest.raises(ValueError, match="format version '7', this quantc reads 1 to 6"):
        qc.load_model(tmp_path / "m7.safetensors")
    # a file without "arithmetic" (every older quantc's) runs with the reference arithmetic
    graph = json.loads(meta["graph"])
    del graph["arithmetic"]
    write_tensors(tmp_path / "old.safetensors", tensors, dict(meta, graph=json.dumps(graph)))
    assert qc.load_model(tmp_path / "old.safetensors").arithmetic == "reference"
    graph["arithmetic"] = "ort"
    write_tensors(tmp_path / "bad2.safetensors", tensors, dict(meta, graph=json.dumps(graph)))
    with pytest.raises(ValueError, match="arithmetic: expected 'reference' or 'onnxruntime'"):
        qc.load_model(tmp_path / "bad2.safetensors")


def test_bias_correction_only_where_the_means_fit(rng):
    """A tensor read by a Conv (channel means along axis 1) and by a MatMul (which contracts
    the last axis): the MatMul is not 'corrected' with the Conv's means (that failed when the
    sizes differed and shifted the MatMul's output when they were equal)."""
    from quantc.model import Model, Node
    for c, last in ((3, 4), (4, 4)):
        model = Model({"x": (None, c, 3, last)},
                      [Node("Conv", ["x", "wc"], ["y_conv"]),
                       Node("MatMul", ["x", "wm"], ["y_mm"])],
                      ["y_conv", "y_mm"],
                      {"wc": rng.standard_normal((4, c, 1, 1)).astype(np.float32),
                       "wm": rng.standard_normal((last, 5)).astype(np.float32)})
        shift = np.arange(c, dtype=np.float32).reshape(1, c, 1, 1) * 10  # means per channel
        data = [(rng.standard_normal((2, c, 3, last)) + shift).astype(np.float32)
                for _ in range(4)]
        got = [qc.quantize_model(model, data, bias_correction=bc) for bc in (True, False)]
        assert got[0].weights["MatMul_y_mm"]["bias"] is None  # no correction, no bias
        for x in data:
            assert_equal_exact(got[0](x)[1], got[1](x)[1], "MatMul output")


def test_bias_correction_counts_the_padding(rng):
    """A 3x3 depthwise conv over a 1x1 plane (pads 1): only the centre tap reads the image, so
    only its error is corrected (all nine taps were, with the input's mean 25: the output was
    off by 6.6 steps with the correction and 1.1 without)."""
    from quantc.model import Model, Node
    w = (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    model = Model({"x": (None, 4, 1, 1)}, [Node("Conv", ["x", "w"], ["y"],
                                                {"pads": [1, 1, 1, 1], "group": 4})], ["y"],
                  {"w": w})
    calib = [rng.uniform(20, 30, (2, 4, 1, 1)).astype(np.float32) for _ in range(4)]
    err = {}
    for bc in (True, False):
        qm = qc.quantize_model(model, calib, bias_correction=bc)
        err[bc] = max(float(np.abs(qm(x) - model(x)).max()) for x in calib) / float(
            qm.qparams["y"].scale)
    assert err[True] <= 1.0 and err[True] <= err[False] + 0.5, err


def test_builder_element_wise_ops(rng):
    """The builder's Mul and table ops: the float model follows the formulas; converted, the
    table ops run in int8 and Mul in float."""
    b = qc.ModelBuilder()
    x = b.input("x", (None, 4, 5, 5))
    h = b.conv(x, rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32), pads=1)
    parts = [b.sigmoid(h), b.tanh(h), b.hard_sigmoid(h, alpha=1 / 6), b.hard_swish(h),
             b.leaky_relu(h, alpha=0.1)]
    y = parts[0]
    for p in parts[1:]:
        y = b.add(y, p)
    b.output(b.mul(y, rng.normal(size=(1, 4, 1, 1)).astype(np.float32)), h)
    model = b.build()
    xs = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)
    out, hv = model(xs)
    hs = np.clip(hv / 6 + 0.5, 0, 1)
    want = 1 / (1 + np.exp(-hv)) + np.tanh(hv) + hs + hv * np.clip(hv / 6 + 0.5, 0, 1) + \
        np.where(hv >= 0, hv, 0.1 * hv)
    mul = next(n for n in model.nodes if n.op == "Mul")
    np.testing.assert_allclose(out, want * model.initializers[mul.inputs[1]], rtol=1e-5,
                               atol=1e-5)
    qm = qc.quantize_model(model, [xs])
    assert {n.op: qm.kinds[n.name] for n in qm.model.nodes if n.op != "Add"} == {
        "Conv": "int8", "Sigmoid": "int8", "Tanh": "int8", "HardSigmoid": "int8",
        "HardSwish": "int8", "LeakyRelu": "int8", "Mul": "float"}
