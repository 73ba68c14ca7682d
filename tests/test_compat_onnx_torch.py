"""Bit-compatibility with the real libraries: onnx's reference evaluator and PyTorch."""
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact


try:
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
except ImportError:  # each library's tests skip only when that library is absent
    onnx = None
try:
    import torch
except ImportError:
    torch = None

needs_onnx = pytest.mark.skipif(onnx is None, reason="onnx is not installed")
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def tdtype(dtype):
    return torch.qint8 if np.dtype(dtype) == np.int8 else torch.quint8


# ---------------------------------------------------------------- ONNX


def run_onnx(op, inputs, outputs, opset=21, **attrs):
    types = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.float32): TensorProto.FLOAT}
    names = [f"i{k}" for k in range(len(inputs))]
    outs = [f"o{k}" for k in range(outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, types[a.dtype], a.shape)
         for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))


def onnx_data(rng, shape, s=0.05):
    """Random values with ties and values beside them (no inf: the reference evaluator casts
    rint(inf) to int32, which is undefined; quantc saturates)."""
    x = (rng.standard_normal(shape) * 4).astype(np.float32).ravel()
    k = rng.integers(-200, 200, x.size // 4).astype(np.float32)
    x[: k.size] = (k + np.float32(0.5)) * np.float32(s)  # ties, most exact only for 2^-k scales
    x[k.size: 2 * k.size] = np.nextafter(x[: k.size], np.inf)
    return rng.permutation(x).reshape(shape)


@needs_onnx
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_onnx_quantize_dequantize_per_tensor(rng, dtype):
    for s in (np.float32(0.05), np.float32(0.0625)):
        x = onnx_data(rng, (7, 33), s)
        zp = np.array(3 if dtype == np.int8 else 130, dtype)
        want = run_onnx("QuantizeLinear", [x, np.array(s, np.float32), zp], 1)[0]
        got = qc.quantize(x, s, zp)
        assert_equal_exact(got, want, f"QuantizeLinear s={s}")
        want = run_onnx("DequantizeLinear", [got, np.array(s, np.float32), zp], 1)[0]
        assert_equal_exact(qc.dequantize(got, s, zp), want, "DequantizeLinear")


@needs_onnx
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_onnx_per_axis(rng, dtype):
    x = onnx_data(rng, (4, 6, 10))
    info = np.iinfo(dtype)
    for axis in range(3):
        n = x.shape[axis]
        s = (rng.random(n) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(info.min, info.max + 1, n).astype(dtype)
        want = run_onnx("QuantizeLinear", [x, s, zp], 1, axis=axis)[0]
        got = qc.quantize(x, s, zp, axis=axis)
        assert_equal_exact(got, want, f"QuantizeLinear axis={axis}")
        want = run_onnx("DequantizeLinear", [got, s, zp], 1, axis=axis)[0]
        assert_equal_exact(qc.dequantize(got, s, zp, axis=axis), want, f"Dequantize axis={axis}")


@needs_onnx
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_onnx_blocked(rng, dtype):
    x = onnx_data(rng, (6, 20, 5))
    info = np.iinfo(dtype)
    for axis in range(3):
        for B in (2, 3, 7):
            pshape = list(x.shape)
            pshape[axis] = -(-x.shape[axis] // B)
            s = (rng.random(pshape) * 0.1 + 0.01).astype(np.float32)
            zp = rng.integers(info.min, info.max + 1, pshape).astype(dtype)
            want = run_onnx("QuantizeLinear", [x, s, zp], 1, axis=axis, block_size=B)[0]
            got = qc.quantize(x, s, zp, axis=axis, block_size=B)
            assert_equal_exact(got, want, f"QuantizeLinear axis={axis} B={B}")
            want = run_onnx("DequantizeLinear", [got, s, zp], 1, axis=axis, block_size=B)[0]
            assert_equal_exact(qc.dequantize(got, s, zp, axis=axis, block_size=B), want,
                               f"DequantizeLinear axis={axis} B={B}")


@needs_onnx
def test_onnx_dynamic_quantize_linear(rng):
    cases = [(rng.standard_normal((5, 17)) * 3).astype(np.float32),
             np.abs(rng.standard_normal(100)).astype(np.float32),
             -np.abs(rng.standard_normal(100)).astype(np.float32),
             np.zeros(10, np.float32), np.array([2.5, -1.0, 0.3], np.float32),
             np.float32(1.5).reshape(()), (rng.standard_normal(100_000) * 1e-3).astype(np.float32)]
    for x in cases:
        q, s, zp = qc.quantize_dynamic(x)
        wq, ws, wzp = run_onnx("DynamicQuantizeLinear", [x], 3, opset=11)
        assert_equal_exact(q, wq, "y")
        assert_equal_exact(s, np.asarray(ws, np.float32).reshape(()), "y_scale")
        assert_equal_exact(zp, np.asarray(wzp).reshape(()), "y_zero_point")


# ---------------------------------------------------------------- PyTorch


def reciprocal_ties(rng, s, n=4000):
    """Values next to ties where x * (1/s) and x / s round differently."""
    k = rng.integers(-120, 120, n).astype(np.float32)
    x = ((k + np.float32(0.5)) * np.float32(s)).astype(np.float32)
    return np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])


@needs_torch
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_torch_quantize_per_tensor(rng, dtype):
    for s in (0.1, 0.037, 0.0625):
        x = np.concatenate([reciprocal_ties(rng, s),
                            (rng.standard_normal(1001) * 10).astype(np.float32)])
        s = float(np.float32(s))
        zp = 5 if dtype == np.int8 else 128
        want = torch.quantize_per_tensor(torch.from_numpy(x), s, zp, tdtype(dtype))
        want = want.int_repr().numpy()
        got = qc.quantize(x, s, zp, dtype, profile="torch")
        assert_equal_exact(got, want, f"quantize_per_tensor s={s}")
    x = reciprocal_ties(rng, 0.1)  # the data holds cases where torch and onnx round apart
    assert (qc.quantize(x, np.float32(0.1), profile="torch")
            != qc.quantize(x, np.float32(0.1), profile="onnx")).any()


@needs_torch
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_torch_quantize_per_channel(rng, dtype):
    x = np.stack([reciprocal_ties(rng, 0.1, 300)[:900] for _ in range(6)])  # (6, 900)
    x = np.ascontiguousarray(x.reshape(6, 30, 30))
    info = np.iinfo(dtype)
    for axis in range(3):
        n = x.shape[axis]
        s = np.where(np.arange(n) % 2 == 0, 0.1, 0.037).astype(np.float32)
        zp = rng.integers(info.min, info.max + 1, n)
        want = torch.quantize_per_channel(torch.from_numpy(x),
                                          torch.from_numpy(s.astype(np.float64)),
                                          torch.from_numpy(zp), axis, tdtype(dtype))
        want = want.int_repr().numpy()
        got = qc.quantize(x, s, zp, dtype, axis=axis, profile="torch")
        assert_equal_exact(got, want, f"quantize_per_channel axis={axis}")


@needs_torch
@pytest.mark.parametrize("qmin,qmax,zp", [(-128, 127, 3), (0, 255, 128), (0, 15, 4),
                                          (-128, 127, -128)])
def test_torch_fake_quantize_per_tensor(rng, qmin, qmax, zp):
    for s in (0.1, 0.037):
        s = float(np.float32(s))
        x = np.concatenate([reciprocal_ties(rng, s), (rng.standard_normal(999) * 8)
                            .astype(np.float32)])
        t = torch.from_numpy(x).requires_grad_(True)
        y = torch.fake_quantize_per_tensor_affine(t, s, zp, qmin, qmax)
        y.sum().backward()
        dtype = "int8" if qmin < 0 else "uint8"
        got, mask = qc.fake_quantize(x, s, zp, dtype, qmin=qmin, qmax=qmax, profile="torch",
                                     return_mask=True)
        assert_equal_exact(got, y.detach().numpy(), f"fake_quantize s={s}")
        assert_equal_exact(mask, t.grad.numpy() == 1.0, f"fake_quantize mask s={s}")


def observer_case(rng):
    return [(rng.standard_normal((8, 50)) * 3).astype(np.float32),
            np.abs(rng.standard_normal((8, 50))).astype(np.float32) + 0.5,
            -np.abs(rng.standard_normal((8, 50))).astype(np.float32) - 0.1,
            np.zeros((8, 50), np.float32)]


# torch raises NotImplementedError for symmetric quint8 with reduce_range: not compared.
@needs_torch
@pytest.mark.parametrize("dtype,symmetric,reduce_range", [
    (d, s, r) for d in ("int8", "uint8") for s in (False, True) for r in (False, True)
    if not (d == "uint8" and s and r)])
def test_torch_observers(rng, dtype, symmetric, reduce_range):
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    import warnings
    for x in observer_case(rng):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs = MinMaxObserver(dtype=tdtype(dtype), reduce_range=reduce_range,
                                 qscheme=torch.per_tensor_symmetric if symmetric
                                 else torch.per_tensor_affine)
            pobs = PerChannelMinMaxObserver(ch_axis=1, dtype=tdtype(dtype),
                                            reduce_range=reduce_range,
                                            qscheme=torch.per_channel_symmetric if symmetric
                                            else torch.per_channel_affine)
        obs(torch.from_numpy(x))
        ws, wz = obs.calculate_qparams()
        p = qc.choose_qparams(x, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range,
                              profile="torch")
        assert_equal_exact(p.scale, ws.numpy().reshape(()), "MinMaxObserver scale")
        assert int(p.zero_point) == int(wz.item())
        pobs(torch.from_numpy(x))
        ws, wz = pobs.calculate_qparams()
        p = qc.choose_qparams(x, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range,
                              axis=1, profile="torch")
        assert_equal_exact(p.scale, ws.numpy().astype(np.float32), "PerChannel scale")
        assert p.zero_point.astype(np.int64).tolist() == wz.numpy().tolist()


@needs_torch
def test_torch_fake_quantize_per_channel(rng):
    x = reciprocal_ties(rng, 0.1, 3000).reshape(-1, 3)
    s = np.array([0.1, 0.037, 0.1], np.float32)
    zp = np.array([5, -3, 0])
    t = torch.from_numpy(x).requires_grad_(True)
    y = torch.fake_quantize_per_channel_affine(t, torch.from_numpy(s),
                                               torch.from_numpy(zp).int(), 1, -128, 127)
    y.sum().backward()
    got, mask = qc.fake_quantize(x, s, zp, "int8", axis=1, profile="torch", return_mask=True)
    assert_equal_exact(got, y.detach().numpy(), "fake_quantize_per_channel_affine")
    assert_equal_exact(mask, t.grad.numpy() == 1.0, "fake_quantize_per_channel_affine mask")
