"""int16/uint16, int4/uint4, int2/uint2, float8 and float4 quantization (ONNX semantics),
pack_bits/unpack_bits, and batched integer matmul: exact against onnx's reference evaluator,
onnxruntime and ml_dtypes."""
import ml_dtypes
import numpy as np
import pytest

import quantc as qc

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

INTS = ["int16", "uint16", "int4", "uint4", "int2", "uint2"]
FLOATS = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
          "float4_e2m1fn"]


def _tp(name):
    return helper.np_dtype_to_tensor_dtype(np.dtype(name))


def _onnx_q(x, s, zp, name, axis=None, block=None, opset=21):
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block:
        attrs["block_size"] = block
    ins = ["x", "s", "z"] if zp is not None else ["x", "s"]
    if zp is None:
        attrs["output_dtype"] = _tp(name)
    node = helper.make_node("QuantizeLinear", ins, ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [helper.make_tensor_value_info("y", _tp(name), None)],
        initializer=[numpy_helper.from_array(np.asarray(s), "s")] +
        ([numpy_helper.from_array(np.asarray(zp), "z")] if zp is not None else []))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(m).run(None, {"x": x})[0]


def _onnx_dq(q, s, zp, axis=None, block=None, opset=21):
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block:
        attrs["block_size"] = block
    ins = ["q", "s", "z"] if zp is not None else ["q", "s"]
    node = helper.make_node("DequantizeLinear", ins, ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "q", _tp(q.dtype), q.shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                      None)],
        initializer=[numpy_helper.from_array(np.asarray(s), "s")] +
        ([numpy_helper.from_array(np.asarray(zp), "z")] if zp is not None else []))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(m).run(None, {"q": q})[0]


def _bits(a):
    return np.asarray(a).view(f"u{np.asarray(a).dtype.itemsize}")


def _data(rng, shape, span):
    x = (rng.standard_normal(shape) * span).astype(np.float32)
    flat = x.reshape(-1)
    n = flat.size
    flat[: n // 4] = np.round(flat[: n // 4] * 2) / 2  # exact ties x.5 (with scale 1)
    if n > 8:
        flat[1], flat[2], flat[3], flat[4] = np.inf, -np.inf, 1e30, -0.0
    return x


def _zp(rng, name, shape):
    info = ml_dtypes.iinfo(np.dtype(name)) if name not in ("int16", "uint16") else \
        np.iinfo(name)
    return rng.integers(int(info.min), int(info.max) + 1, shape).astype(name)


@pytest.mark.parametrize("name", INTS)
@pytest.mark.parametrize("gran", ["tensor", "axis", "block"])
def test_integer_types_match_onnx_reference(name, gran):
    rng = np.random.default_rng(hash((name, gran)) % 2**32)
    big = name.endswith("16")
    x = _data(rng, (6, 10), 3000.0 if big else 4.0)
    if gran == "tensor":
        s, axis, block, pshape = np.float32(1.0), None, None, ()
    elif gran == "axis":
        axis, block, pshape = 1, None, (10,)
        s = rng.uniform(0.5, 2, pshape).astype(np.float32)
        s[0] = 1.0
    else:
        axis, block, pshape = 1, 4, (6, 3)
        s = rng.uniform(0.5, 2, pshape).astype(np.float32)
        s[0, 0] = 1.0
    zp = _zp(rng, name, pshape)
    got = qc.quantize(x, s, zp, axis=axis, block_size=block)
    # the reference casts x / s to int32 before clamping (inf, 1e30: undefined): clip first
    ref = _onnx_q(np.clip(x, -1e6, 1e6).astype(np.float32), s, zp, name, axis, block)
    assert got.dtype == np.dtype(name) and got.shape == x.shape
    assert np.array_equal(_bits(got), _bits(ref))
    # dtype= instead of a typed zero point, and a Python-int zero point
    assert np.array_equal(_bits(qc.quantize(x, s, zp.astype(np.int64), name, axis=axis,
                                            block_size=block)), _bits(got))
    d = qc.dequantize(got, s, zp, axis=axis, block_size=block)
    assert d.dtype == np.float32
    assert np.array_equal(d, _onnx_dq(got, s, zp, axis, block))
    fq, mask = qc.fake_quantize(x, s, zp, name, axis=axis, block_size=block,
                                return_mask=True)
    assert np.array_equal(fq, d)
    assert mask.dtype == bool and not mask.reshape(-1)[1] and not mask.reshape(-1)[3]


def test_tflite_profile_rounds_half_away():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32)
    assert qc.quantize(x, 1.0, dtype="int4").astype(int).tolist() == [-2, -2, 0, 0, 2, 2]
    assert qc.quantize(x, 1.0, dtype="int4", profile="tflite").astype(int).tolist() == \
        [-3, -2, -1, 1, 2, 3]
    with pytest.raises(ValueError, match="profile"):
        qc.quantize(x, 1.0, dtype="int4", profile="torch")


@pytest.mark.parametrize("name", FLOATS)
def test_float_types_saturate_as_onnx(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200) * 300).astype(np.float32)
    fmax = float(ml_dtypes.finfo(np.dtype(name)).max)
    x[:6] = [np.inf, -np.inf, fmax * 1.01, -fmax * 4, 0.0, -0.0]
    s = np.float32(0.75)
    zp = np.zeros((), name)
    got = qc.quantize(x, s, zp)
    ref = _onnx_q(x, s, zp, name)
    assert got.dtype == np.dtype(name)
    assert np.array_equal(_bits(got), _bits(ref))
    assert float(got[0]) == fmax and float(got[1]) == -fmax  # saturate=1: inf -> +-max
    # ml_dtypes' own rounding (nearest even) of the in-range quotients
    inside = np.abs(x / s) <= fmax
    v = x[inside] / s
    if name == "float4_e2m1fn":  # ONNX adds float4's zero point (-0.0 + 0 = +0.0)
        v = v + np.float32(0)
    assert np.array_equal(_bits(got[inside]), _bits(v.astype(name)))
    assert np.array_equal(_bits(qc.quantize(x, s, dtype=name)), _bits(_onnx_q(x, s, None, name)))
    d = qc.dequantize(got, s, zp)
    assert np.array_equal(d, _onnx_dq(got, s, zp))
    p = qc.choose_qparams(x[6:], dtype=name)
    assert p.zero_point.dtype == np.dtype(name) and float(p.zero_point) == 0
    assert p.scale == np.float32(np.abs(x[6:]).max() / fmax)
    q = qc.quantize(x[6:], p.scale, p.zero_point)
    assert np.abs(q.astype(np.float32)).max() == fmax


def test_float8_zero_point_must_be_zero():
    with pytest.raises(ValueError, match="zero_point"):
        qc.quantize(np.ones(3, np.float32), 1.0, np.ones((), "float8_e4m3fn"))


@pytest.mark.parametrize("name", INTS)
def test_choose_qparams_and_qrange(name):
    lo, hi = qc.qrange(name)
    info = np.iinfo(name) if name.endswith("16") else ml_dtypes.iinfo(np.dtype(name))
    assert (lo, hi) == (int(info.min), int(info.max))
    assert qc.qrange(name, narrow_range=True) == (lo + 1, hi)
    with pytest.raises(ValueError, match="reduce_range"):
        qc.qrange(name, reduce_range=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    for sym in (False, True):
        p = qc.choose_qparams(x, dtype=name, symmetric=sym, axis=0)
        assert p.zero_point.dtype == np.dtype(name) and p.scale.shape == (4,)
        q = qc.quantize(x, p.scale, p.zero_point, axis=0)
        err = np.abs(qc.dequantize(q, p.scale, p.zero_point, axis=0) - x)
        assert (err <= p.scale[:, None] * 0.5 * (1 + 1e-6)).all() or sym
    # the range is widened to 0 and 0.0 is exact
    p = qc.choose_qparams(min_val=np.float32(1.0), max_val=np.float32(3.0), dtype=name)
    assert qc.dequantize(qc.quantize(np.zeros(1, np.float32), p.scale, p.zero_point),
                         p.scale, p.zero_point)[0] == 0.0


@pytest.mark.parametrize("name", ["int4", "uint4", "int16", "uint16"])
def test_onnxruntime_agrees(name):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((8, 32)) * (2000 if name.endswith("16") else 3)).astype(
        np.float32)
    s = rng.uniform(0.5, 2, (8, 2)).astype(np.float32)
    zp = _zp(rng, name, (8, 2))
    sub = name.endswith("4")  # onnxruntime returns no NumPy array of int4: Q then DQ
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q" if sub else "y"], axis=1,
                              block_size=16)]
    if sub:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1,
                                      block_size=16))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT if sub else _tp(name), None)],
        initializer=[numpy_helper.from_array(s, "s"), numpy_helper.from_array(zp, "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"x": x})[0]
    except Exception as e:  # an onnxruntime build without this type/blocking
        pytest.skip(f"onnxruntime cannot run it: {e}")
    got = qc.quantize(x, s, zp, axis=1, block_size=16)
    if sub:
        got = qc.dequantize(got, s, zp, axis=1, block_size=16)
        assert np.array_equal(got, ref)
    else:
        assert np.array_equal(_bits(got), _bits(np.asarray(ref).astype(name)))


@pytest.mark.parametrize("name", ["int4", "uint4", "int2", "uint2"])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 31, 64])
def test_pack_bits_matches_onnx_layout(name, n):
    rng = np.random.default_rng(n)
    q = _zp(rng, name, (n,))
    packed = qc.pack_bits(q)
    per = 2 if name.endswith("4") else 4
    assert packed.dtype == np.uint8 and packed.shape == (-(-n // per),)
    assert packed.tobytes() == numpy_helper.from_array(q).raw_data
    back = qc.unpack_bits(packed, name, (n,))
    assert back.dtype == np.dtype(name) and np.array_equal(_bits(back), _bits(q))
    if n == 5:
        q2 = q.reshape(5, 1)[::-1]  # non-contiguous input packs in C order
        assert np.array_equal(qc.pack_bits(q2), qc.pack_bits(np.ascontiguousarray(q2)))


def test_pack_bits_first_value_low_nibble():
    q = np.array([1, -2, 7], ml_dtypes.int4)
    assert qc.pack_bits(q).tolist() == [0xE1, 0x07]
    q2 = np.array([1, 2, 3, 0, 1], ml_dtypes.uint2)
    assert qc.pack_bits(q2).tolist() == [1 | 2 << 2 | 3 << 4, 1]
    assert qc.unpack_bits(np.array([0xE1, 0x07], np.uint8), ml_dtypes.int4, 3).tolist() == \
        [1, -2, 7]


def test_bad_input():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="zero_point.*int4"):
        qc.quantize(x, 1.0, 8, "int4")
    with pytest.raises(ValueError, match="zero_point"):
        qc.quantize(x, 1.0, -1, "uint16")
    with pytest.raises(ValueError, match="scale: expected shape"):
        qc.quantize(x, np.ones((4, 3), np.float32), None, "int4", axis=1, block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        qc.quantize(x, np.ones((4, 1), np.float32), None, "int4", axis=1, block_size=0)
    with pytest.raises(ValueError, match="scale"):
        qc.quantize(x, 0.0, None, "int16")
    with pytest.raises(ValueError, match="x: expected no NaN"):
        qc.quantize(np.array([1, np.nan], np.float32), 1.0, None, "int4")
    with pytest.raises(ValueError, match="packed: expected 2 bytes"):
        qc.unpack_bits(np.zeros(3, np.uint8), "int4", (3,))
    with pytest.raises(TypeError, match="packed"):
        qc.unpack_bits(np.zeros(2, np.int8), "int4", (3,))
    with pytest.raises(ValueError, match="dtype"):
        qc.unpack_bits(np.zeros(2, np.uint8), "int3", (3,))
    with pytest.raises(TypeError, match="q: expected"):
        qc.pack_bits(np.zeros(3, np.int8))
    with pytest.raises(ValueError, match="dtype"):
        qc.choose_qparams(x, dtype="int3")
    with pytest.raises((TypeError, ValueError), match="dtype"):
        qc.quantize(x, 1.0, None, "int3")
    with pytest.raises(TypeError, match="zero_point: expected int4"):
        qc.dequantize(np.zeros(3, ml_dtypes.int4), 1.0, np.zeros((), ml_dtypes.uint4))
    with pytest.raises(ValueError, match="out"):
        qc.quantize(x, 1.0, None, "int4", out=np.empty((4, 6), np.int8))
    x0 = x.copy()
    qc.quantize(x, 1.0, None, "int4")
    assert np.array_equal(x, x0)


def test_zero_size_and_0d_and_out():
    q = qc.quantize(np.zeros((0, 3), np.float32), 1.0, None, "int4")
    assert q.shape == (0, 3) and q.dtype == np.dtype("int4")
    q = qc.quantize(np.float32(2.6), 1.0, None, "int16")
    assert q.shape == () and int(q) == 3
    out = np.empty((2, 2), "uint4")
    r = qc.quantize(np.full((2, 2), 3.0, np.float32), 1.0, None, "uint4", out=out)
    assert r is out and out.astype(int).tolist() == [[3, 3], [3, 3]]
    xb = np.linspace(-3, 3, 8).astype(ml_dtypes.bfloat16)  # bfloat16 in
    assert np.array_equal(_bits(qc.quantize(xb, 0.5, None, "int4")),
                          _bits(qc.quantize(xb.astype(np.float32), 0.5, None, "int4")))


def test_contract_edges():
    # 0-d in, 0-d arrays out (not NumPy scalars), and the round trip takes them back
    for name in ("int16", "uint16", "int4", "float8_e4m3fn", "float4_e2m1fn"):
        q = qc.quantize(np.array(1.5, np.float32), 0.5, None, name)
        assert isinstance(q, np.ndarray) and q.shape == () and q.dtype == np.dtype(name)
        d = qc.dequantize(q, 0.5)
        assert isinstance(d, np.ndarray) and d.shape == () and float(d) == 1.5
        y, m = qc.fake_quantize(np.array(1.5, np.float32), 0.5, None, name, return_mask=True)
        assert isinstance(y, np.ndarray) and isinstance(m, np.ndarray) and y.shape == ()
        assert float(qc.dequantize(q[()], 0.5)) == 1.5  # a NumPy / ml_dtypes scalar
    # saturate_cast to the sub-byte types (their names are accepted wherever a dtype is)
    x = np.array([100, -100, 3, -3, 0], np.int32)
    for name, want in (("int4", [7, -8, 3, -3, 0]), ("uint4", [15, 0, 3, 0, 0]),
                       ("int2", [1, -2, 1, -2, 0]), ("uint2", [3, 0, 3, 0, 0])):
        for dt in (name, np.dtype(name)):
            got = qc.saturate_cast(x, dt)
            assert got.dtype == np.dtype(name) and got.astype(int).tolist() == want
        out = np.empty(5, name)
        assert qc.saturate_cast(x, name, out=out) is out and out.astype(int).tolist() == want
        assert qc.saturate_cast(x.astype(ml_dtypes.int4 if name == "int4" else np.int8)
                                [:0], name).shape == (0,)
    assert qc.saturate_cast(np.array([7, -8], ml_dtypes.int4), "uint2").astype(int).tolist() \
        == [3, 0]
    with pytest.raises(TypeError, match="x: expected an integer array"):
        qc.saturate_cast(np.array([1.5]), "int4")
    with pytest.raises(ValueError, match="out: expected"):
        qc.saturate_cast(x, "int4", out=np.empty(5, np.int8))
    # float4_e2m1fn zero points: representable values only
    for z in (np.nan, np.inf, 100.0, 0.7):
        with pytest.raises(ValueError, match=r"zero_point: expected float4_e2m1fn values"):
            qc.quantize(np.array([1.0, -2.0], np.float32), 1.0, z, "float4_e2m1fn")
        with pytest.raises(ValueError, match=r"zero_point: expected float4_e2m1fn values"):
            qc.dequantize(np.array([1, 2], ml_dtypes.float4_e2m1fn), 1.0, z)
    assert qc.quantize(np.array([1.0, -1.5, -2.0], np.float32), 1.0, -1.5,  # -3.5: to even
                       "float4_e2m1fn").astype(np.float32).tolist() == [-0.5, -3.0, -4.0]
    # qmin / qmax and shapes are ints, not truncated floats; errors name the argument
    with pytest.raises(TypeError, match="qmin: expected an int or None, got -2.7"):
        qc.fake_quantize(np.ones(3, np.float32), 1.0, None, "int4", qmin=-2.7, qmax=2)
    with pytest.raises(TypeError, match="qmax: expected an int or None"):
        qc.fake_quantize(np.ones(3, np.float32), 1.0, None, "int4", qmin=-2, qmax=True)
    for shape in ((2.9,), "ab", (2, None)):
        with pytest.raises(TypeError, match="shape: expected a tuple of ints"):
            qc.unpack_bits(np.array([0x21], np.uint8), "uint4", shape)
    assert qc.unpack_bits(np.array([0x21], np.uint8), "uint4",
                          (np.int64(2),)).astype(int).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"x: expected no NaN values, got 1 NaN value, the "
                                         r"first at index \(1, 1\)$"):
        qc.quantize_dynamic(np.array([[1, 2], [3, np.nan]], np.float32), granularity="per_row")


@pytest.mark.parametrize("name", ["int16", "uint16"])
def test_byte_swapped_16_bit_arrays_and_dtypes(name):
    """A big-endian ('>i2') array, zero point or dtype means the same values as a native one:
    every path gives the native result (dtype comparisons tell byte orders apart)."""
    swapped = np.dtype(name).newbyteorder("S")
    x = np.array([[1.0, -2.5, 3.5, 7e4], [-7e4, 0.25, 12.0, -0.75]], np.float32)
    s = np.float32(0.5)
    zp = np.array(3, name)
    q = qc.quantize(x, s, zp)
    assert q.dtype == np.dtype(name)
    assert np.array_equal(qc.quantize(x, s, zp.astype(swapped)), q)
    assert np.array_equal(qc.quantize(x, s, zp, dtype=swapped), q)
    q0 = qc.quantize(x, s, dtype=name)
    for got in (qc.quantize(x, s, dtype=swapped), qc.quantize(x, s, 0, swapped)):
        assert got.dtype == np.dtype(name) and np.array_equal(got, q0)
    y, m = qc.fake_quantize(x, s, 3, name, return_mask=True)
    y2, m2 = qc.fake_quantize(x, s, 3, swapped, return_mask=True)
    assert np.array_equal(_bits(y2), _bits(y)) and np.array_equal(m2, m)
    qs = q.astype(swapped)
    assert qs.dtype.byteorder not in ("=", "|")
    for zpa in (zp, zp.astype(swapped)):
        assert np.array_equal(_bits(qc.dequantize(qs, s, zpa)), _bits(qc.dequantize(q, s, zp)))
    sa = np.array([0.5, 2.0], np.float32)
    za = np.array([1, 7], name)
    assert np.array_equal(_bits(qc.dequantize(qs, sa, za.astype(swapped), axis=0)),
                          _bits(qc.dequantize(q, sa, za, axis=0)))
    out = np.empty(x.shape, np.float32)
    assert qc.dequantize(qs, s, zp, out=out) is out
    assert np.array_equal(_bits(out), _bits(qc.dequantize(q, s, zp)))
    p, p2 = qc.choose_qparams(x, dtype=name), qc.choose_qparams(x, dtype=swapped)
    assert p2.dtype == p.dtype and p2.zero_point.dtype == p.zero_point.dtype
    assert np.array_equal(p2.scale, p.scale) and np.array_equal(p2.zero_point, p.zero_point)


def test_byte_swapped_longdouble_is_refused_as_native():
    for dt in (np.dtype(np.longdouble), np.dtype(np.longdouble).newbyteorder("S")):
        with pytest.raises(TypeError, match="x: expected a real-valued array"):
            qc.quantize(np.ones(3, dt), 0.5, None, "int16")


@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 4, 5)), ((3, 1, 2, 4), (2, 4, 5)),
                                    ((4,), (3, 4, 2)), ((2, 3, 4), (1, 4, 5)),
                                    ((0, 3, 4), (1, 4, 5)),
                                    # one vector b (K,): the last axis dropped, as NumPy's
                                    ((2, 3, 4), (4,)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((0, 4), (4,))])
def test_batched_matmul_integer_and_qlinear(shapes):
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, shapes[0], dtype=np.uint8)
    b = rng.integers(-128, 128, shapes[1], dtype=np.int8)
    got = qc.matmul_integer(a, b, np.uint8(7), np.int8(-3))
    ref = np.matmul(a.astype(np.int32) - 7, b.astype(np.int32) + 3)
    assert got.dtype == np.int32 and np.array_equal(got, ref)
    y = qc.qlinear_matmul(a, np.float32(0.02), np.uint8(7), b, np.float32(0.01), np.int8(-3),
                          np.float32(0.05), np.uint8(128))
    node = helper.make_node("QLinearMatMul", list("abcdefgh"), ["y"])
    g = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape),
        helper.make_tensor_value_info("d", TensorProto.INT8, b.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(v, n) for n, v in (
            ("b", np.float32(0.02)), ("c", np.uint8(7)), ("e", np.float32(0.01)),
            ("f", np.int8(-3)), ("g", np.float32(0.05)), ("h", np.uint8(128)))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    ref = ReferenceEvaluator(m).run(None, {"a": a, "d": b})[0]
    assert y.dtype == np.uint8 and np.array_equal(y, ref)
    out = np.empty(ref.shape, np.uint8)
    assert qc.qlinear_matmul(a, np.float32(0.02), np.uint8(7), b, np.float32(0.01),
                             np.int8(-3), np.float32(0.05), np.uint8(128), out=out) is out


def test_batched_matmul_bad_shapes():
    a = np.zeros((2, 3, 4), np.int8)
    with pytest.raises(ValueError, match="b: expected leading"):
        qc.matmul_integer(a, np.zeros((3, 4, 5), np.int8))
    with pytest.raises(ValueError, match="b: expected 4 rows"):
        qc.matmul_integer(a, np.zeros((2, 5, 5), np.int8))
    with pytest.raises(TypeError):
        qc.matmul_integer(a, np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"b: expected 4 values \(a's K\), got shape \(5,\)"):
        qc.matmul_integer(a, np.zeros(5, np.int8))
    with pytest.raises(ValueError, match="out: expected"):
        qc.matmul_integer(a, np.zeros(4, np.int8), out=np.empty((2, 3, 1), np.int32))


@pytest.mark.parametrize("name", ["int4", "uint4", "int2", "uint2"])
@pytest.mark.parametrize("profile", ["onnx", "tflite"])
def test_subbyte_fast_path_equals_numpy_reference(name, profile):
    from quantc._lowbit import quantize_ref
    rng = np.random.default_rng(7)
    x = _data(rng, (9, 70), 6.0)[:, ::-1]  # negative strides
    cases = [(np.float32(0.5), None, None, ()), (None, 1, None, (70,)),
             (None, 1, 16, (9, 5)), (None, 0, 4, (3, 70))]
    for s, axis, block, pshape in cases:
        if s is None:
            s = rng.uniform(0.25, 2, pshape).astype(np.float32)
        zp = _zp(rng, name, pshape)
        for z in (zp, zp.astype(np.int32), None):
            got = qc.quantize(x, s, z, name, axis=axis, block_size=block, profile=profile)
            ref = quantize_ref(x, s, z, name, axis, block, profile)
            assert got.dtype == ref.dtype == np.dtype(name)
            assert np.array_equal(_bits(got), _bits(ref)), (name, profile, axis, block)


@pytest.mark.parametrize("threads", [1, 3])
def test_every_isa_and_thread_count_equal_the_reference(isa, threads):
    from conftest import num_threads
    from quantc._lowbit import quantize_ref
    rng = np.random.default_rng(8)
    x = _data(rng, (37, 129), 5.0)
    xb = x.astype(ml_dtypes.bfloat16)
    with num_threads(threads):
        for name in ("int4", "uint4", "int2", "uint2", "int16", "float8_e4m3fn"):
            s = rng.uniform(0.25, 2, (37, 5)).astype(np.float32)
            zp = None if name.startswith("float") else _zp(rng, name, (37, 5))
            got = qc.quantize(x, s, zp, name, axis=1, block_size=32)
            ref = quantize_ref(x, s, zp, name, 1, 32)
            assert np.array_equal(_bits(got), _bits(ref)), (isa, threads, name)
            got = qc.quantize(xb, s, zp, name, axis=1, block_size=32)
            ref = quantize_ref(xb.astype(np.float32), s, zp, name, 1, 32)
            assert np.array_equal(_bits(got), _bits(ref)), (isa, threads, name, "bf16")
        # bfloat16 widening (the SIMD kernel) equals ml_dtypes' cast
        assert np.array_equal(qc.quantize(xb, 0.01, np.int8(3)),
                              qc.quantize(xb.astype(np.float32), 0.01, np.int8(3)))


def test_dynamic_is_8_bit_only_and_torch_unsigned_midpoint():
    x = np.linspace(-1, 2, 50, dtype=np.float32)
    with pytest.raises(ValueError, match="dtype: expected 'uint8' or 'int8'"):
        qc.quantize_dynamic(x, "int4")
    p = qc.choose_qparams(x, dtype="uint4", symmetric=True, profile="torch")
    assert int(p.zero_point) == 8 and p.zero_point.dtype == np.dtype("uint4")
    assert int(qc.choose_qparams(x, dtype="uint8", symmetric=True, profile="torch")
               .zero_point) == 128


@pytest.mark.parametrize("name", ["int4", "uint4", "int2", "uint2"])
def test_pack_kernel_equals_numpy_reference(name):
    from quantc._lowbit import pack_bits_ref
    rng = np.random.default_rng(9)
    for n in (0, 1, 2, 3, 5, 7, 8, 63, 64, 65, 1001):
        q = _zp(rng, name, (n,))
        assert np.array_equal(qc.pack_bits(q), pack_bits_ref(q)), (name, n)
    q = _zp(rng, name, (6, 7))[:, ::2]
    assert np.array_equal(qc.pack_bits(q), pack_bits_ref(q))


# ---- the one-pass C kernels (csrc/quant quantize_ext): int4/uint4 (packed or not), float8,
# float32 or bfloat16 in; every ISA level and thread count equal to the NumPy reference ----

C_KINDS = ["int4", "uint4", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"]


def _float8_edges(name, s):
    """x / s at every float8 midpoint (ties), just beside them, at the subnormals, the largest
    value and beyond, and zeros/inf."""
    dt = np.dtype(name)
    vals = np.arange(256, dtype=np.uint8).view(dt).astype(np.float32)
    vals = np.unique(vals[np.isfinite(vals)])
    mids = (vals[:-1].astype(np.float64) + vals[1:]) / 2  # exact in float32 (4 more bits)
    mids = mids.astype(np.float32)
    fmax = np.float32(ml_dtypes.finfo(dt).max)
    tiny = np.float32(ml_dtypes.finfo(dt).smallest_subnormal)
    v = np.concatenate([vals, mids, np.nextafter(mids, np.float32(np.inf)),
                        np.nextafter(mids, np.float32(-np.inf)),
                        np.array([fmax * 1.01, -fmax * 1.01, 3e38, -3e38, tiny / 2, -tiny / 2,
                                  tiny / 2.0001, 1e-40, -1e-40, 0.0, -0.0], np.float32)])
    x = (v * s).astype(np.float32)
    x = np.concatenate([x, np.array([np.inf, -np.inf], np.float32)])
    return x


def _ref(x, s, zp, name, axis=None, block=None, profile="onnx", packed=False):
    from quantc._lowbit import pack_bits_ref, quantize_ref
    q = quantize_ref(x, s, zp, name, axis, block, profile)
    return pack_bits_ref(q) if packed else _bits(q)


@pytest.mark.parametrize("name", C_KINDS[2:])
def test_float8_kernel_ties_subnormals_saturation(isa, name):
    for s in (np.float32(1.0), np.float32(0.37), np.float32(3e-5)):
        x = _float8_edges(name, s)
        got = qc.quantize(x, s, dtype=name)
        want = _ref(x, s, None, name)
        bad = np.flatnonzero(_bits(got) != want)
        assert bad.size == 0, (isa, name, s, bad[:1], x[bad[:1]], _bits(got)[bad[:1]],
                               want[bad[:1]])
        # ml_dtypes' own cast of the clamped quotient (ONNX saturate=1)
        fmax = np.float32(ml_dtypes.finfo(np.dtype(name)).max)
        with np.errstate(over="ignore"):
            v = np.clip(x / s, -fmax, fmax)
        assert np.array_equal(_bits(got), _bits(v.astype(name))), (isa, name, s)


@pytest.mark.parametrize("threads", [1, 3])
def test_c_kernels_every_length_granularity_and_input(isa, threads):
    from conftest import num_threads
    rng = np.random.default_rng(21)
    with num_threads(threads):
        for name in C_KINDS:
            is_f8 = name.startswith("float")
            profiles = ["onnx"] if is_f8 else ["onnx", "tflite"]
            for n in range(71):
                x = _data(rng, (n,), 40.0 if is_f8 else 5.0)
                for prof in profiles:
                    zp = None if is_f8 else _zp(rng, name, ())
                    s = np.float32(0.75)
                    for xin in (x, x.astype(ml_dtypes.bfloat16)):
                        xf = xin.astype(np.float32)
                        got = qc.quantize(xin, s, zp, name, profile=prof)
                        assert np.array_equal(_bits(got), _ref(xf, s, zp, name, profile=prof)), \
                            (isa, threads, name, n, prof, xin.dtype)
                        if not is_f8:
                            got = qc.quantize(xin, s, zp, name, profile=prof, packed=True)
                            want = _ref(xf, s, zp, name, profile=prof, packed=True)
                            assert got.dtype == np.uint8 and np.array_equal(got, want), \
                                (isa, threads, name, n, prof, xin.dtype, "packed")
            # per-axis / blocked: runs starting at odd elements (odd inner extents), short
            # runs through the periodic buffers, blocks of 1 and odd blocks, large enough to
            # split across threads
            for shape, axis, block in [((5, 7), 0, None), ((7, 5), 1, None), ((3, 5, 7), 1, 2),
                                       ((9, 13), 1, 3), ((9, 13), 1, 1), ((2001, 3), 1, None),
                                       ((3, 70001), 1, 33), ((70001, 3), 0, None),
                                       ((129, 1031), 0, 64)]:
                x = _data(rng, shape, 40.0 if is_f8 else 5.0)
                pshape = list(shape)
                pshape = (shape[axis],) if block is None else tuple(
                    -(-d // block) if i == axis else d for i, d in enumerate(shape))
                s = rng.uniform(0.25, 2, pshape).astype(np.float32)
                zp = None if is_f8 else _zp(rng, name, pshape)
                for xin in (x, x.astype(ml_dtypes.bfloat16)):
                    xf = xin.astype(np.float32)
                    got = qc.quantize(xin, s, zp, name, axis=axis, block_size=block)
                    assert np.array_equal(_bits(got), _ref(xf, s, zp, name, axis, block)), \
                        (isa, threads, name, shape, axis, block, xin.dtype)
                    if not is_f8:
                        got = qc.quantize(xin, s, zp, name, axis=axis, block_size=block,
                                          packed=True)
                        assert np.array_equal(got, _ref(xf, s, zp, name, axis, block,
                                                        packed=True)), \
                            (isa, threads, name, shape, axis, block, xin.dtype, "packed")


def test_bfloat16_int8_reads_bf16_directly(isa):
    rng = np.random.default_rng(22)
    for n in list(range(71)) + [70001]:
        x = _data(rng, (n,), 300.0)
        xb = x.astype(ml_dtypes.bfloat16)
        for dt, zp in (("int8", np.int8(-3)), ("uint8", np.uint8(130))):
            for prof in ("onnx", "tflite", "torch"):
                got = qc.quantize(xb, np.float32(0.7), zp, profile=prof)
                want = qc.quantize(xb.astype(np.float32), np.float32(0.7), zp, profile=prof)
                assert got.dtype == np.dtype(dt) and np.array_equal(got, want), (isa, n, prof)
    xb = rng.standard_normal((6, 35)).astype(ml_dtypes.bfloat16)[:, ::2]  # strided
    s = rng.uniform(0.01, 0.1, 18).astype(np.float32)
    assert np.array_equal(qc.quantize(xb, s, None, axis=1),
                          qc.quantize(xb.astype(np.float32), s, None, axis=1))


def test_c_kernels_nan_out_and_bad_input():
    x = np.linspace(-3, 3, 41, dtype=np.float32)
    x[17] = np.nan
    for name in C_KINDS:
        for xin in (x, x.astype(ml_dtypes.bfloat16)):
            with pytest.raises(ValueError, match="x: expected no NaN.*17"):
                qc.quantize(xin, 0.5, dtype=name)
    with pytest.raises(ValueError, match="x: expected no NaN.*17"):
        qc.quantize(x.astype(ml_dtypes.bfloat16), 0.5, np.int8(0))
    x[17] = 0
    out = np.empty(21, np.uint8)
    r = qc.quantize(x, 0.5, dtype="int4", packed=True, out=out)
    assert r is out and np.array_equal(out, _ref(x, np.float32(0.5), None, "int4", packed=True))
    out8 = np.empty(41, "float8_e5m2")
    assert qc.quantize(x, 0.5, dtype="float8_e5m2", out=out8) is out8
    assert np.array_equal(_bits(out8), _ref(x, np.float32(0.5), None, "float8_e5m2"))
    with pytest.raises(ValueError, match="out"):
        qc.quantize(x, 0.5, dtype="int4", packed=True, out=np.empty(20, np.uint8))
    with pytest.raises(ValueError, match="out"):
        qc.quantize(x, 0.5, dtype="float8_e5m2", out=np.empty(41, np.uint8))
    with pytest.raises(ValueError, match="packed"):
        qc.quantize(x, 0.5, dtype="float8_e5m2", packed=True)
    with pytest.raises(ValueError, match="packed"):
        qc.quantize(x, 0.5, dtype="int8", packed=True)
    with pytest.raises(ValueError, match="zero_point"):
        qc.quantize(x, 0.5, np.ones((), "float8_e4m3fnuz"))
    with pytest.raises(ValueError, match="zero_point"):
        qc.quantize(x, 0.5, 8, "int4")
    # int2/uint2 pack through pack_bits
    assert np.array_equal(qc.quantize(x, 0.5, dtype="int2", packed=True),
                          _ref(x, np.float32(0.5), None, "int2", packed=True))


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_float8_tensor_files_round_trip(tmp_path, ext):
    """Every float8 format is written and read back bit-identically (safetensors' FNUZ tags
    included), and sub-byte integer arrays, which neither reader takes back, are refused
    before anything is written."""
    from quantc import io
    x = np.random.default_rng(3).normal(size=(17, 33)).astype(np.float32)
    t = {n: qc.quantize(x, 0.01, None, n) for n in
         ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")}
    path = tmp_path / ("f8" + ext)
    io.write_tensors(path, t)
    r = io.open_tensors(path)
    for name, v in t.items():
        back = r.read(name)
        assert back.dtype == v.dtype and back.tobytes() == v.tobytes(), name
    r.close()
    bad = tmp_path / ("i4" + ext)
    with pytest.raises(TypeError, match=r"tensors\['w'\].*int4"):
        io.write_tensors(bad, {"w": qc.quantize(x, 0.1, None, "int4")})
    assert not bad.exists()
