"""quantize_model's ranges= / weight_scales= (given activation ranges and weight scales)."""
import numpy as np
import pytest

import quantc as qc
from quantc import examples


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
