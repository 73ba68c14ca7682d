"""Mul in full-integer models: a Mul of two activations (a squeeze-and-excitation gate, a
swish) runs on qlinear_mul in either arithmetic; a Mul by a constant stays float."""
import numpy as np
import pytest

import quantc as qc
from quantc.io import TensorReader, write_tensors

from conftest import assert_equal_exact, qm_and_onnxruntime


def se_net():
    """Conv + ReLU, a squeeze-and-excitation gate (GlobalAveragePool, 1x1 convs, Sigmoid, Mul
    by the (N, C, 1, 1) gate), a conv and a swish (x * sigmoid(x), same shapes), a strided
    conv, a Mul by a per-channel constant, GlobalAveragePool and a Linear; 8 images of
    16 x 16. The two int8 Muls' results are outputs too."""
    rng = np.random.default_rng(5)
    b = qc.ModelBuilder("se")
    x = b.input("x", (None, 3, 16, 16))
    h = b.relu(b.conv(x, rng.normal(0, 0.4, (16, 3, 3, 3)), rng.normal(0, 0.1, 16), pads=1),
               name="h")
    s = b.relu(b.conv(b.global_avg_pool(h), rng.normal(0, 0.5, (4, 16, 1, 1)), None))
    s = b.sigmoid(b.conv(s, rng.normal(0, 0.5, (16, 4, 1, 1)), rng.normal(0, 0.1, 16)),
                  name="gate")
    g = b.mul(h, s, name="se_gate")
    c = b.conv(g, rng.normal(0, 0.3, (16, 16, 3, 3)), rng.normal(0, 0.1, 16), pads=1)
    w = b.mul(c, b.sigmoid(c), name="swish")
    h = b.conv(w, rng.normal(0, 0.2, (32, 16, 1, 1)), None, strides=2)
    h = b.mul(h, rng.uniform(0.5, 1.5, (1, 32, 1, 1)), name="scale")
    h = b.flatten(b.global_avg_pool(h))
    b.output(g, w, b.linear(h, rng.normal(0, 0.3, (10, 32)), rng.normal(0, 0.1, 10)))
    model = b.build()
    calib = [rng.standard_normal((8, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    return model, calib, rng.standard_normal((8, 3, 16, 16)).astype(np.float32)


def _as_version(src, dst, version):
    """A copy of the model file src with its format version replaced (as an older quantc
    would have written it)."""
    with TensorReader(src) as r:
        meta = dict(r.metadata)
        tensors = {n: r.read(n) for n in r.names}
    meta["version"] = version
    write_tensors(dst, tensors, meta)


@pytest.mark.parametrize("arithmetic", ["onnxruntime", "reference"])
def test_mul_kinds_and_file_version(arithmetic, tmp_path):
    model, calib, x = se_net()
    qm = qc.quantize_model(model, calib, progress=False, arithmetic=arithmetic)
    kinds = {n.op + ":" + n.name: qm.kinds[n.name] for n in qm.model.nodes if n.op == "Mul"}
    assert kinds == {"Mul:se_gate": "int8", "Mul:swish": "int8", "Mul:scale": "float"}
    qm.save(tmp_path / "m.safetensors")
    with TensorReader(tmp_path / "m.safetensors") as r:
        assert r.metadata["version"] == "6"
    back = qc.load_model(tmp_path / "m.safetensors")
    assert back.kinds == qm.kinds
    for g, w in zip(back(x), qm(x)):
        assert_equal_exact(g, w, "after load")


def test_reference_mul_equals_the_float_path(tmp_path):
    """A file written before version 6 runs its Mul in float (dequantize, float32 multiply,
    quantize), as the quantc that wrote it did; in the reference arithmetic that is what
    qlinear_mul computes, so the outputs (raw uint8: the Muls' results are outputs) are the
    same bits."""
    model, calib, x = se_net()
    qm = qc.quantize_model(model, calib, io="uint8", progress=False, arithmetic="reference")
    s, z, _ = qm.input_qparams["x"]
    x = qc.quantize(x, s, np.uint8(z))
    qm.save(tmp_path / "m.safetensors")
    _as_version(tmp_path / "m.safetensors", tmp_path / "v5.safetensors", "5")
    old = qc.load_model(tmp_path / "v5.safetensors")
    assert old.kinds["se_gate"] == old.kinds["swish"] == "float"
    for g, w in zip(old(x), qm(x)):
        assert_equal_exact(g, w, "float Mul vs qlinear_mul (reference)")
    # the old file saved again keeps its float Mul, so its version stays below 6
    old.save(tmp_path / "again.safetensors")
    with TensorReader(tmp_path / "again.safetensors") as r:
        assert r.metadata["version"] != "6"


@pytest.mark.parametrize("adt", ["uint8"])
def test_mul_model_matches_onnxruntime_exactly(adt, tmp_path):
    """onnxruntime fuses DequantizeLinear -> Mul -> QuantizeLinear into QLinearMul: with the
    onnxruntime arithmetic qm(x) equals its run of qm.to_onnx() element for element; the
    reference arithmetic (the float Mul quantc ran before) does not. The given ranges put the
    SE gate's output zero point at 191 and its scales where the two arithmetics round 307 of
    the 65536 code pairs differently (calibrated ones rarely differ at all)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, calib, x = se_net()
    ranges = {"h.out": (0, 25.5), "gate.out": (0, 2.55), "se_gate.out": (-97.5375, 32.5125)}
    diffs = {}
    for arithmetic in ("onnxruntime", "reference"):
        qm = qc.quantize_model(model, calib, io="uint8", activation_dtype=adt, progress=False,
                               arithmetic=arithmetic, ranges=ranges)
        assert qm.qparams["se_gate.out"].zp == 191
        got, want, _ = qm_and_onnxruntime(qm, x)
        diffs[arithmetic] = sum(int((g != w).sum()) for g, w in zip(got, want))
        if arithmetic == "onnxruntime":
            for g, w, name in zip(got, want, qm.model.outputs):
                assert_equal_exact(g, w, f"{name}: qm(x) vs onnxruntime")
    assert diffs["reference"] > 0, diffs


def test_mul_in_the_nhwc_layout(isa):
    """A swish (x * sigmoid(x), equal shapes) between convolutions on the NHWC GEMM path stays
    NHWC with them, and an SE gate's Mul ((N, C, H, W) by (N, C, 1, 1)) runs NCHW with its
    result transposed for the two convs reading it; every bit equal to the same model run all NCHW, on
    every ISA (the isa fixture)."""
    from quantc.qmodel import QuantizedModel
    rng = np.random.default_rng(8)
    b = qc.ModelBuilder("nhwc_mul")
    x = b.input("x", (None, 16, 12, 12))
    c = b.conv(x, rng.normal(0, 0.2, (16, 16, 3, 3)), None, pads=1)
    w = b.mul(c, b.sigmoid(c), name="swish")
    c = b.conv(w, rng.normal(0, 0.2, (16, 16, 3, 3)), None, pads=1)
    g = b.sigmoid(b.conv(b.global_avg_pool(c), rng.normal(0, 0.5, (16, 16, 1, 1)), None))
    h = b.mul(c, g, name="se_gate")
    h = b.add(b.conv(h, rng.normal(0, 0.2, (16, 16, 3, 3)), None, pads=1),
              b.conv(h, rng.normal(0, 0.2, (16, 16, 3, 3)), None, pads=1))
    b.output(b.conv(h, rng.normal(0, 0.2, (8, 16, 3, 3)), None, pads=1))
    model = b.build()
    xs = rng.standard_normal((3, 16, 12, 12)).astype(np.float32)
    for arithmetic in ("onnxruntime", "reference"):
        qm = qc.quantize_model(model, [xs], progress=False, arithmetic=arithmetic)
        assert {"swish.out", "se_gate.out"} <= qm._nhwc and "se_gate.out" in qm._late
        try:
            QuantizedModel._nhwc_enabled = False
            qm0 = qc.quantize_model(model, [xs], progress=False, arithmetic=arithmetic)
        finally:
            QuantizedModel._nhwc_enabled = True
        assert not qm0._nhwc
        assert_equal_exact(qm(xs), qm0(xs), f"NHWC vs NCHW ({arithmetic})")
