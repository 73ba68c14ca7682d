"""Every ONNX backend node test case for the quantization ops (the cases the ``onnx``
package's own generators produce: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv), run through quantc and compared
exactly (integers and float8/float4 bit patterns; floats bit for bit)."""
import warnings

import numpy as np
import pytest

import quantc as qc

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
       "QLinearMatMul", "ConvInteger", "QLinearConv")


def _cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if c.model.graph.node[0].op_type in OPS]


CASES = _cases()


def _arr(v):
    return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)


def _scalar(v):
    v = np.asarray(v)
    return v.reshape(()) if v.size == 1 and v.ndim <= 1 else v


def _run(node, ins):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        x, s = ins[0], ins[1]
        zp = ins[2] if len(ins) > 2 else None
        block = attrs.get("block_size", 0) or None
        axis = attrs.get("axis", 1) if (s.ndim >= 1 and s.size > 1) or block else None
        if axis is not None:
            axis = axis % x.ndim
        if op == "DequantizeLinear":
            y = qc.dequantize(x, s, zp, axis=axis, block_size=block)
            return [y.astype(s.dtype)]
        if zp is not None:
            dtype = zp.dtype
        elif "output_dtype" in attrs:
            dtype = helper.tensor_dtype_to_np_dtype(attrs["output_dtype"])
        else:
            dtype = np.uint8  # ONNX's default output type
        return [qc.quantize(x, s, zp, dtype, axis=axis, block_size=block)]
    if op == "DynamicQuantizeLinear":
        return list(qc.quantize_dynamic(ins[0]))
    if op == "MatMulInteger":
        return [qc.matmul_integer(ins[0], ins[1], *(_scalar(z) for z in ins[2:]))]
    if op == "QLinearMatMul":
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = ins
        return [qc.qlinear_matmul(a, _scalar(a_s), _scalar(a_zp), b, _scalar(b_s),
                                  _scalar(b_zp), _scalar(y_s), _scalar(y_zp))]
    kw = {k: tuple(attrs[k]) for k in ("strides", "pads", "dilations") if k in attrs}
    if "group" in attrs:
        kw["group"] = attrs["group"]
    if op == "ConvInteger":
        return [qc.conv_integer(ins[0], ins[1], *(_scalar(z) for z in ins[2:]), **kw)]
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp = ins[:8]
    bias = ins[8] if len(ins) > 8 else None
    return [qc.qlinear_conv(x, _scalar(x_s), _scalar(x_zp), w, _scalar(w_s), _scalar(w_zp),
                            _scalar(y_s), _scalar(y_zp), bias, **kw)]


def _bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind not in "iub" else a


def test_all_quantization_ops_have_cases():
    seen = {c.model.graph.node[0].op_type for c in CASES}
    assert seen == set(OPS)
    names = {c.name for c in CASES}
    for t in ("int4", "uint4", "int2", "uint2", "int16", "uint16", "e4m3fn", "e5m2",
              "float4e2m1"):
        assert any(n.startswith("test_quantizelinear_" + t) for n in names), t
        assert any(n.startswith("test_dequantizelinear_" + t) for n in names), t
    assert "test_qlinearmatmul_3D_int8_float32" in names


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_onnx_backend_node_case(case):
    node = case.model.graph.node[0]
    inputs, outputs = case.data_sets[0]
    got = _run(node, [_arr(v) for v in inputs])
    assert len(got) == len(outputs)
    for g, want in zip(got, outputs):
        want = _arr(want)
        g = np.asarray(g)
        assert g.dtype == want.dtype, (case.name, g.dtype, want.dtype)
        assert g.shape == want.shape, (case.name, g.shape, want.shape)
        assert np.array_equal(_bits(g), _bits(want)), (case.name, g, want)
