"""Model.from_onnx: files made with onnx.helper and torch.onnx.export, run by quantc's float
runner and compared with onnxruntime (and torch); the importer's errors."""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import assert_equal_exact  # noqa: E402
from quantc.model import Model  # noqa: E402

F = TensorProto.FLOAT


def assert_close(got, want, context="", tol=1e-5):
    """Float32 equality up to summation order: quantc (NumPy/BLAS) and onnxruntime (MLAS)
    add the same products in different orders, each rounding to float32 (eps 1.2e-7); over
    the few hundred terms of these layers that is a few 1e-7 of the largest partial sums,
    so 1e-5 relative plus 1e-5 of the output's magnitude leaves a wide margin while still
    catching any semantic difference (a wrong pad, axis or attribute moves values by 1e-2+).
    Whole networks compound it layer by layer: on the MobileNetV2-shaped model below torch
    and onnxruntime themselves differ by 2.3e-5 of the output's magnitude, so tol=1e-4."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{context}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=context)


def build(nodes, inits=(), in_shape=("N", 3, 8, 8), opset=17, out="y", in_type=F):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", in_type, list(in_shape))],
        [helper.make_tensor_value_info(out, F, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    # IR 8 runs on every onnxruntime >= 1.14 whatever onnx wrote by default
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def compare(proto, tmp_path, shape, seed=0):
    """Save proto, run it with quantc and onnxruntime at batch 1 and 3 (the "N" in shape),
    compare."""
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    model = Model.from_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for n in (1, 3):
        x = rng.standard_normal([n if d == "N" else d for d in shape]).astype(np.float32)
        assert_close(model(x), sess.run(None, {"x": x})[0], f"batch {n}")
    return model


def rnd(*shape, seed=1, lo=None):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.abs(a) + lo if lo is not None else a


# --------------------------------------------------------------------- every op and attribute

CONV = [  # attrs, weight shape (M, C/group, kh, kw), bias
    ({"pads": [1, 1, 1, 1]}, (8, 3, 3, 3), True),
    ({"group": 3, "strides": [2, 2], "pads": [0, 1, 2, 1]}, (6, 1, 3, 3), True),  # depthwise
    ({"group": 3, "kernel_shape": [1, 1]}, (6, 1, 1, 1), False),
    ({"group": 2, "pads": [1, 1, 1, 1]}, (6, 2, 3, 3), True),  # grouped
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (4, 3, 3, 3), True),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (5, 3, 2, 2), True),
    ({"auto_pad": "SAME_LOWER"}, (5, 3, 2, 2), False),
    ({"auto_pad": "VALID", "strides": [1, 2]}, (5, 3, 3, 1), False),
    ({"strides": [3, 3]}, (8, 3, 5, 5), True),
]


@pytest.mark.parametrize("attrs,wshape,bias", CONV)
def test_conv(tmp_path, attrs, wshape, bias):
    inits = {"w": rnd(*wshape)}
    if bias:
        inits["b"] = rnd(wshape[0], seed=2)
    shape = ("N", wshape[1] * attrs.get("group", 1), 9, 8)
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], **attrs)
    compare(build([node], inits, shape), tmp_path, shape)


@pytest.mark.parametrize("c,m,hw", [(128, 256, 4), (16, 8, 56)])
def test_conv_batch_paths(tmp_path, c, m, hw):
    """conv2d_float's other paths at batch 3: 3x3 128->256 (weights over 1 MiB) is one GEMM
    over the images, 16->8 at 56x56 (1.8 MB of columns per image) is copied 2 images at a
    time (4 MiB chunks), the last chunk partial."""
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    shape = ("N", c, hw, hw)
    compare(build([node], {"w": rnd(m, c, 3, 3) * 0.1, "b": rnd(m, seed=2)}, shape),
            tmp_path, shape)


@pytest.mark.parametrize("attrs,a_shape,b_shape,c_shape", [
    ({}, ("N", 5), (5, 4), (4,)),
    ({"transB": 1}, ("N", 5), (4, 5), (1, 4)),
    ({"transB": 1, "alpha": 0.5, "beta": 2.0}, ("N", 5), (4, 5), (4,)),
    ({"alpha": 3.0}, ("N", 5), (5, 4), None),
    ({"transA": 1, "beta": -1.0}, (3, "N"), (3, 4), (4,)),
    ({"transA": 1, "transB": 1}, (3, "N"), (4, 3), ("N", 4)),
])
def test_gemm(tmp_path, attrs, a_shape, b_shape, c_shape):
    inits = {"w": rnd(*b_shape)}
    ins = ["x", "w"]
    nodes = []
    if c_shape == ("N", 4):  # C computed from the input: (N, 3) @ (3, 4)
        inits["cw"] = rnd(3, 4, seed=3)
        nodes.append(helper.make_node("Gemm", ["x", "cw"], ["c"], transA=1))
        ins.append("c")
    elif c_shape:
        inits["c"] = rnd(*c_shape, seed=3)
        ins.append("c")
    nodes.append(helper.make_node("Gemm", ins, ["y"], **attrs))
    compare(build(nodes, inits, a_shape), tmp_path, a_shape)


def test_matmul_relu(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    compare(build(nodes, {"w": rnd(6, 4)}, ("N", 2, 6)), tmp_path, ("N", 2, 6))


def test_clip_opset13_inputs(tmp_path):
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["h"]),
             helper.make_node("Clip", ["h", "", "hi2"], ["y"])]  # min omitted
    inits = {"lo": np.float32(-0.5), "hi": np.float32(1.0), "hi2": np.float32(0.7)}
    compare(build(nodes, inits, ("N", 3, 4)), tmp_path, ("N", 3, 4))


def test_clip_opset6_attributes(tmp_path):
    node = helper.make_node("Clip", ["x"], ["y"], min=-0.25, max=0.5)
    compare(build([node], {}, ("N", 3, 4), opset=6), tmp_path, ("N", 3, 4))


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 3], "pads": [0, 1, 1, 0]}),
    ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 2], "pads": [2, 0, 0, 1]}),
    ("GlobalAveragePool", {}),
])
def test_pools(tmp_path, op, attrs):
    compare(build([helper.make_node(op, ["x"], ["y"], **attrs)]), tmp_path, ("N", 3, 8, 8))


def test_add_broadcast_concat_flatten(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["h"]),           # (N,3,8,8) + (3,1,1)
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Add", ["h", "r"], ["s"]),           # two computed tensors
             helper.make_node("Add", ["s", "row"], ["t"]),         # + (8,)
             helper.make_node("Concat", ["t", "x"], ["c"], axis=1),
             helper.make_node("Flatten", ["c"], ["y"], axis=2)]
    inits = {"b": rnd(3, 1, 1), "row": rnd(8, seed=2)}
    compare(build(nodes, inits), tmp_path, ("N", 3, 8, 8))


@pytest.mark.parametrize("target,axis", [([0, -1], 1), ([0, 4, -1], 1), ([-1, 8], 0)])
def test_reshape_flatten(tmp_path, target, axis):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["h"]),
             helper.make_node("Flatten", ["h"], ["y"], axis=axis)]
    compare(build(nodes, {"s": np.array(target, np.int64)}), tmp_path, ("N", 3, 8, 8))


def test_batchnorm_identity_dropout(tmp_path):
    c = 3
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["h"],
                              epsilon=1e-3),
             helper.make_node("Identity", ["h"], ["i"]),
             helper.make_node("Dropout", ["i"], ["y"])]
    inits = {"g": rnd(c, lo=0.5), "b": rnd(c, seed=2), "m": rnd(c, seed=3),
             "v": rnd(c, seed=4, lo=0.1)}
    compare(build(nodes, inits), tmp_path, ("N", 3, 8, 8))


@pytest.mark.parametrize("opset,axis,shape", [
    (13, {"axis": -1}, (10,)), (13, {"axis": 1}, (3, 8, 8)), (13, {}, (3, 8, 8)),
    (11, {}, (10,)), (11, {"axis": 3}, (3, 8, 8)), (11, {"axis": -1}, (2, 5)),
])
def test_softmax(tmp_path, opset, axis, shape):
    node = helper.make_node("Softmax", ["x"], ["y"], **axis)
    compare(build([node], {}, ("N",) + shape, opset=opset), tmp_path, ("N",) + shape)


def test_constant_nodes(tmp_path):
    t = rnd(3, 1, 1)
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(t)),
             helper.make_node("Constant", [], ["lo"], value_float=-0.3),
             helper.make_node("Constant", [], ["s"], value_ints=[0, -1]),
             helper.make_node("Add", ["x", "c"], ["h"]),
             helper.make_node("Clip", ["h", "lo"], ["k"]),
             helper.make_node("Reshape", ["k", "s"], ["y"])]
    model = compare(build(nodes), tmp_path, ("N", 3, 8, 8))
    np.testing.assert_array_equal(model.initializers["c"], t)
    assert model.initializers["s"].dtype == np.int64


def test_identity_of_initializer_is_a_constant(tmp_path):
    """torch.onnx.export (opset 18+) shares equal initializers through Identity nodes, so a
    Conv's bias can be the output of Identity(initializer): it is a constant there."""
    nodes = [helper.make_node("Identity", ["b"], ["b2"]),
             helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w", "b2"], ["y"], pads=[1, 1, 1, 1])]
    model = compare(build(nodes, {"w": rnd(3, 3, 3, 3), "b": rnd(3, seed=2)}), tmp_path,
                    ("N", 3, 8, 8))
    assert [n.op for n in model.nodes] == ["Conv", "Conv"]
    np.testing.assert_array_equal(model.initializers["b2"], model.initializers["b"])


def test_model_proto_and_unknown_dims(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    proto = build([node], {}, (None, 3, "H", 4))
    m = Model.from_onnx(proto)
    assert m.inputs == {"x": (None, 3, None, 4)}
    assert m.outputs == ["y"]


def test_initializers_among_inputs(tmp_path):
    """IR < 4 lists initializers among the graph inputs: they are not Model inputs."""
    nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    proto = build(nodes, {"b": rnd(8, seed=2)})
    proto.graph.input.append(helper.make_tensor_value_info("b", F, [8]))
    assert list(compare(proto, tmp_path, ("N", 3, 8, 8)).inputs) == ["x"]


def test_repeated_node_names():
    """The ONNX spec allows repeated node names (onnxruntime does not); quantc's must be
    unique, so a repeat takes the default name."""
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="n"),
             helper.make_node("Relu", ["h"], ["y"], name="n")]
    assert [n.name for n in Model.from_onnx(build(nodes)).nodes] == ["n", "Relu_y"]


# --------------------------------------------------------------------- torch exports

@pytest.fixture(scope="module", params=["resnet18", "mobilenetv2", "mobilenetv3"])
def exported(request, tmp_path_factory):
    """(torch model, ONNX path) of a small ResNet-18-/MobileNetV2-/MobileNetV3-shaped model,
    3x32x32."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    try:
        import torch_models as tm
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    cls, width = {"resnet18": (tm.ResNet18, 0.25), "mobilenetv2": (tm.MobileNetV2, 0.35),
                  "mobilenetv3": (tm.MobileNetV3, 0.35)}[request.param]
    model = tm.randomized(cls(num_classes=10, width=width),
                          [torch.randn(16, 3, 32, 32) for _ in range(2)])
    path = tmp_path_factory.mktemp(request.param) / "m.onnx"
    tm.export(model, path, (3, 32, 32))
    return model, path


def test_torch_export(exported):
    import torch
    model, path = exported
    m = Model.from_onnx(path)
    ops = {n.op for n in m.nodes}
    assert {"Conv", "Gemm", "GlobalAveragePool", "Flatten", "Add"} <= ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = model(x).numpy()
        got = m(x.numpy())
        assert np.abs(want).max() > 0.1  # not a degenerate (all-zero) network
        assert_close(got, want, f"torch, batch {n}", tol=1e-4)
        assert_close(got, sess.run(None, {"input": x.numpy()})[0], f"onnxruntime, batch {n}",
                     tol=1e-4)


def test_torch_export_int8_matches_onnxruntime(exported):
    """The exported model converted with raw uint8 io (every op int8: the MobileNetV3's
    Hardswish tables and squeeze-and-excitation Muls included) gives, bit for bit, what
    onnxruntime computes for its QDQ export."""
    import quantc as qc
    import torch
    _, path = exported
    m = Model.from_onnx(path)
    calib = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(k)).numpy()
             for k in range(10, 12)]
    qm = qc.quantize_model(m, calib, io="uint8", progress=False)
    assert all(k == "int8" for k in qm.kinds.values()), qm.kinds
    s, z, _ = qm.input_qparams["input"]
    x = qc.quantize(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(9))
                    .numpy(), s, np.uint8(z))
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    assert_equal_exact(qm(x), sess.run(None, {"input": x})[0], "qm(x) vs onnxruntime")


def test_torch_mobilenetv3_block(tmp_path):
    """A MobileNetV3-style block exported by torch (Hardswish, a squeeze-and-excitation gate
    with Hardsigmoid and Mul, LeakyReLU, a Sigmoid/Tanh head): quantc's float model matches
    torch, and the int8 model (tables for the element-wise ops, the gate's Mul on qlinear_mul)
    stays close."""
    torch = pytest.importorskip("torch")
    import quantc as qc
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    try:
        import torch_models as tm
    finally:
        sys.path.pop(0)
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16),
                                      nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Hardswish())
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                    nn.Conv2d(4, 16, 1), nn.Hardsigmoid())
            self.proj = nn.Sequential(nn.Conv2d(16, 16, 1), nn.LeakyReLU(0.1))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            h = self.dw(self.stem(x))
            h = self.proj(h * self.se(h)) + h
            z = self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))
            return torch.sigmoid(z) + torch.tanh(z)

    torch.manual_seed(0)
    net = tm.randomized(Block(), [torch.randn(16, 3, 16, 16) for _ in range(2)])
    path = tm.export(net, tmp_path / "v3.onnx", (3, 16, 16))
    model = Model.from_onnx(path)
    assert {"HardSwish", "HardSigmoid", "Mul", "LeakyRelu", "Sigmoid", "Tanh"} <= \
        {n.op for n in model.nodes}
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x).numpy()
    assert_close(model(x.numpy()), want, "torch", tol=1e-4)
    calib = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(k)).numpy()
             for k in range(2, 6)]
    qm = qc.quantize_model(model, calib, progress=False)
    assert [n.op for n in qm.model.nodes if qm.kinds[n.name] == "float"] == []
    got = qm(x.numpy())
    cos = np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want))
    assert cos > 0.999, cos


# --------------------------------------------------------------------- errors


def save(proto, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("op", ["Sin", "LSTM"])
def test_unsupported_op_names_node(tmp_path, op):
    inits = {}
    ins = ["x"]
    if op == "LSTM":
        inits = {"W": rnd(1, 16, 8), "R": rnd(1, 16, 4)}
        ins = ["x", "W", "R"]
    node = helper.make_node(op, ins, ["y"], name="mynode", **({"hidden_size": 4}
                                                                if op == "LSTM" else {}))
    proto = build([node], inits, (2, "N", 8))
    with pytest.raises(ValueError, match=rf"node 'mynode' \({op}\): unsupported op"):
        Model.from_onnx(save(proto, tmp_path))


def test_other_domain(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")
    proto = build([node])
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ValueError, match=r"node 'r' \(Relu\): domain 'com.example'"):
        Model.from_onnx(proto)


def test_unsupported_attribute_value(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            ceil_mode=1)
    with pytest.raises(ValueError, match=r"node 'pool' \(MaxPool\): ceil_mode=1"):
        Model.from_onnx(save(build([node]), tmp_path))


def test_second_outputs(tmp_path):
    # quantc computes a node's first output only: an unused second one is fine (onnxruntime
    # agrees on the first), one that is a graph output or read by a node is an error at once
    pool = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    compare(build([pool]), tmp_path, ("N", 3, 8, 8))
    proto = build([pool])
    proto.graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64, None))
    with pytest.raises(ValueError, match=r"node 'pool' \(MaxPool\): output 1 \('idx'\) is not "
                                         r"supported: quantc computes only the first output of "
                                         r"MaxPool, and it is a graph output"):
        Model.from_onnx(save(proto, tmp_path))
    drop = helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop")
    add = helper.make_node("Add", ["d", "mask"], ["y"], name="add")
    with pytest.raises(ValueError, match=r"node 'drop' \(Dropout\): output 1 \('mask'\) is not "
                                         r"supported: .* and node 'add' reads it"):
        Model.from_onnx(save(build([drop, add]), tmp_path))


def test_wrong_weight_shape(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")
    with pytest.raises(ValueError, match=r"node 'conv1' \(Conv\): the input has 3 channels"):
        Model.from_onnx(save(build([node], {"w": rnd(8, 4, 3, 3)}), tmp_path))


@pytest.mark.parametrize("dtype", [TensorProto.INT64, TensorProto.FLOAT16, TensorProto.UINT8])
def test_non_float_input(tmp_path, dtype):
    proto = build([helper.make_node("Relu", ["x"], ["y"])], in_type=dtype)
    name = TensorProto.DataType.Name(dtype)
    with pytest.raises(ValueError, match=rf"graph input 'x' \(input of node 'Relu_y' \(Relu\)\) "
                                         rf"is {name}; only float32"):
        Model.from_onnx(save(proto, tmp_path))


def test_float16_weight(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")
    proto = build([node], {"w": rnd(8, 3, 3, 3).astype(np.float16)})
    with pytest.raises(ValueError, match=r"initializer 'w' \(input of node 'conv1' \(Conv\)\): "
                                         r"data type FLOAT16"):
        Model.from_onnx(save(proto, tmp_path))


def test_unsupported_constant(tmp_path):
    node = helper.make_node("Constant", [], ["c"], name="c0", value_string="text")
    with pytest.raises(ValueError, match=r"node 'c0' \(Constant\): attribute value_string"):
        Model.from_onnx(build([node, helper.make_node("Add", ["x", "c"], ["y"])]))
    t = numpy_helper.from_array(np.ones(3, np.float16))
    node = helper.make_node("Constant", [], ["c"], name="c1", value=t)
    with pytest.raises(ValueError, match=r"node 'c1' \(Constant\): data type FLOAT16"):
        Model.from_onnx(build([node, helper.make_node("Add", ["x", "c"], ["y"])]))


def test_opset11_softmax_not_last_axis(tmp_path):
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    with pytest.raises(ValueError, match=r"node 'sm' \(Softmax\): opset 11 Softmax flattens"):
        Model.from_onnx(build([node], opset=11))


@pytest.mark.parametrize("kind", ["random", "empty", "truncated"])
def test_corrupted_file(tmp_path, kind):
    good = build([helper.make_node("Conv", ["x", "w"], ["y"])],
                 {"w": rnd(8, 3, 3, 3)}).SerializeToString()
    data = {"random": np.random.default_rng(0).bytes(4096), "empty": b"",
            "truncated": good[:len(good) // 2]}[kind]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"bad.onnx: not a valid ONNX model \("):
        Model.from_onnx(path)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Model.from_onnx(tmp_path / "nope.onnx")
    with pytest.raises(TypeError, match="expected a path or an onnx.ModelProto"):
        Model.from_onnx(42)


def test_missing_onnx(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"needs the 'onnx' package: pip install "
                                          r"'quantc\[onnx\]'"):
        Model.from_onnx(tmp_path / "m.onnx")
    import quantc as qc
    from quantc import examples
    model = examples.digits_model()
    with pytest.raises(ImportError, match=r"^Model.to_onnx needs the 'onnx' package"):
        model.to_onnx()
    qm = qc.quantize_model(model, [examples.digits_calibration()[0][:8]], progress=False)
    with pytest.raises(ImportError, match=r"^QuantizedModel.to_onnx needs the 'onnx' package"):
        qm.to_onnx()


# ------------------------------------------------- graphs beyond a plain chain of layers

def _graph(nodes, ins, outs, inits=(), opset=17):
    """A ModelProto with graph inputs ``ins`` (name -> shape) and outputs ``outs``."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, F, list(s)) for k, s in ins.items()],
        [helper.make_tensor_value_info(o, F, None) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def quantized_round_trip(proto, tmp_path, x):
    """quantize_model on proto's model (calibrated on x), then: every output of qm (io uint8)
    equals onnxruntime's run of qm.to_onnx() within 1 unit, and the dequantized outputs are
    within one output step (and a half, for the input's own step) of the float model's."""
    import quantc as qc
    model = Model.from_onnx(proto)
    feeds = x if isinstance(x, dict) else {next(iter(model.inputs)): x}
    ref = model(feeds)
    ref = ref if isinstance(ref, tuple) else (ref,)
    first = None
    for io in ("float", "uint8"):
        qm = qc.quantize_model(model, [feeds], io=io, progress=False)
        first = first or qm
        path = tmp_path / f"q_{io}.onnx"
        qm.to_onnx(path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        qfeeds = feeds if io == "float" else {
            k: qc.quantize(v, qm.input_qparams[k][0], np.uint8(qm.input_qparams[k][1]))
            for k, v in feeds.items()}
        got = qm(qfeeds)
        got = got if isinstance(got, tuple) else (got,)
        theirs = sess.run(None, qfeeds)
        for o, g, t, r in zip(model.outputs, got, theirs, ref):
            assert g.shape == t.shape == r.shape, o
            s, z, _ = qm.output_qparams[o]
            if io == "uint8":
                np.testing.assert_array_less(np.abs(g.astype(int) - t.astype(int)), 2)
                g = (g.astype(np.float32) - z) * s
            else:
                np.testing.assert_allclose(g, t, atol=1.0001 * s, rtol=0)
            np.testing.assert_allclose(g, r, atol=2 * s + 1e-6, rtol=0, err_msg=o)
    return first


def test_generated_names_never_replace_a_tensor(tmp_path):
    """quantize_model names the Gemm's transposed weight and bias '<node>.weight_t' and
    '.bias_t': a model tensor of that name stays what it is (it was overwritten, and the Add
    read the Gemm's bias: off by 100)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["a", "W", "C"], ["g"], name="fc", transB=1),
             helper.make_node("Add", ["g", "fc.bias_t"], ["y"])]
    inits = {"W": rnd(4, 3), "C": rnd(4, seed=2), "fc.bias_t": 100 + rnd(2, 4, seed=3)}
    quantized_round_trip(_graph(nodes, {"a": (2, 3)}, ["y"], inits), tmp_path,
                         rng.standard_normal((2, 3)).astype(np.float32))
    # the BatchNorm folding names as well
    nodes = [helper.make_node("Conv", ["a", "W"], ["c"], name="cv"),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
             helper.make_node("Add", ["bn", "cv.bias_folded"], ["y"])]
    inits = {"W": rnd(2, 2, 1, 1), "s": rnd(2, lo=0.5), "b": rnd(2, seed=2),
             "m": rnd(2, seed=3), "v": rnd(2, seed=4, lo=0.5),
             "cv.bias_folded": 50 + rnd(1, 2, 1, 1, seed=5)}
    quantized_round_trip(_graph(nodes, {"a": (1, 2, 3, 3)}, ["y"], inits), tmp_path,
                         rng.standard_normal((1, 2, 3, 3)).astype(np.float32))


def test_concat_with_a_constant(tmp_path):
    rng = np.random.default_rng(0)
    for c in (rnd(2, 2), np.zeros((2, 0), np.float32)):
        nodes = [helper.make_node("Concat", ["c", "a"], ["y"], axis=1)]
        quantized_round_trip(_graph(nodes, {"a": (2, 3)}, ["y"], {"c": c}), tmp_path,
                             rng.standard_normal((2, 3)).astype(np.float32))


@pytest.mark.parametrize("case", ["identity_out", "relu_add", "init_out", "const_add"])
def test_nodes_of_constants_are_computed_once(tmp_path, case):
    """Nodes that read only constants are computed at conversion; a constant can be a graph
    output (float: as it is; raw io: quantized with its own range)."""
    rng = np.random.default_rng(0)
    c = rnd(2, 3)
    relu = helper.make_node("Relu", ["a"], ["y"])
    nodes, outs = {
        "identity_out": ([helper.make_node("Identity", ["c"], ["z"]), relu], ["y", "z"]),
        "relu_add": ([helper.make_node("Relu", ["c"], ["rc"]),
                      helper.make_node("Add", ["a", "rc"], ["y"])], ["y"]),
        "init_out": ([relu], ["y", "c"]),
        "const_add": ([helper.make_node("Add", ["c", "c"], ["cc"]),
                       helper.make_node("Add", ["a", "cc"], ["y"])], ["y"]),
    }[case]
    inits = {"c": c}
    qm = quantized_round_trip(_graph(nodes, {"a": (2, 3)}, outs, inits), tmp_path,
                              rng.standard_normal((2, 3)).astype(np.float32))
    assert all(n.op not in ("Identity", "Concat") or n.inputs[0] == "a"
               for n in qm.model.nodes)
    if case == "init_out":  # the caller owns the result: the model's constant stays
        qm(np.zeros((2, 3), np.float32))[1][:] = 7
        np.testing.assert_array_equal(qm(np.zeros((2, 3), np.float32))[1], c)


@pytest.mark.parametrize("outs", [["a", "y"], ["y", "y"], ["y", "a", "y"]])
def test_inputs_as_outputs_and_repeated_outputs(tmp_path, outs):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["a", "W"], ["y"])]
    qm = quantized_round_trip(_graph(nodes, {"a": (1, 2, 3, 3)}, outs,
                                     {"W": rnd(2, 2, 1, 1)}), tmp_path,
                              rng.standard_normal((1, 2, 3, 3)).astype(np.float32))
    import quantc as qc
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    got = qm(x)
    if "a" in outs:  # a copy, not the caller's array
        assert got[outs.index("a")] is not x
    qi = qc.quantize_model(qm.model, [x], io="int8", activation_dtype="uint8", progress=False)
    xq = qc.quantize(x, qi.input_qparams["a"][0], np.int8(qi.input_qparams["a"][1]))
    gi = qi(xq)  # each raw output flipped to int8 once, even when listed twice
    ref = qm.model.run(x)
    for o, g in zip(outs, gi):
        s, z, _ = qi.output_qparams[o]
        np.testing.assert_allclose((g.astype(np.float32) - z) * s, ref[o], atol=2 * s)


def test_zero_d_input(tmp_path):
    proto = _graph([helper.make_node("Relu", ["a"], ["y"])], {"a": ()}, ["y"])
    m = Model.from_onnx(proto)
    assert m(np.array(-2.0, np.float32)).shape == ()
    assert float(m(np.float32(3.0))) == 3.0


@pytest.mark.parametrize("node, opset, inits", [
    (helper.make_node("Clip", ["a"], ["y"], min=-1.0, max=1.0), 6, {}),
    (helper.make_node("Clip", ["a"], ["y"], min=-1.0), 6, {}),
    (helper.make_node("Clip", ["a"], ["y"], min=0.5, max=float("inf")), 6, {}),
    (helper.make_node("Clip", ["a"], ["y"], min=float("-inf"), max=1.0), 6, {}),
    (helper.make_node("Dropout", ["a"], ["y"], ratio=0.3), 10, {}),
    (helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["y"], spatial=1), 7,
     {"s": np.ones(3, np.float32), "b": np.zeros(3, np.float32), "m": np.zeros(3, np.float32),
      "v": np.ones(3, np.float32)}),
    (helper.make_node("AveragePool", ["a4"], ["y"], kernel_shape=[2, 2], dilations=[1, 1]), 19,
     {}),
    (helper.make_node("Conv", ["a4", "W"], ["y"], auto_pad="SAME_UPPER", dilations=[2, 1]), 17,
     {"W": rnd(2, 3, 3, 2)}),
    (helper.make_node("MaxPool", ["a4"], ["y"], kernel_shape=[3, 2], auto_pad="SAME_LOWER",
                      strides=[2, 1]), 17, {}),
], ids=["clip6", "clip6_min", "clip6_inf_max", "clip6_inf_min", "dropout10", "bn7",
        "avgpool19", "conv_same_dil", "maxpool_same"])
def test_older_opsets_export_at_the_current_one(tmp_path, node, opset, inits):
    """Attributes of older opsets (Clip's min/max, Dropout's ratio, BatchNormalization's
    spatial), AveragePool's dilations of opset 19 and auto_pad (onnxruntime refuses SAME with
    dilations) are written as opset 17 has them, by both exporters."""
    rng = np.random.default_rng(0)
    shape = (1, 3, 5, 6) if "a4" in node.input else (1, 3)
    if "a4" in node.input:
        node.input[0] = "a"
    proto = _graph([node], {"a": shape}, ["y"], inits, opset=opset)
    x = rng.standard_normal(shape).astype(np.float32)
    model = Model.from_onnx(proto)
    path = tmp_path / "f.onnx"
    model.to_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"a": x})[0], model(x))
    quantized_round_trip(proto, tmp_path, x)


def test_unknown_dims_are_not_one_symbol(tmp_path):
    """Two free dimensions need not be equal: each input's has a symbol of its own, an
    output's none (all were "N")."""
    proto = _graph([helper.make_node("Concat", ["a", "b"], ["y"], axis=0)],
                   {"a": ("B", 4), "b": ("C", 4)}, ["y"])
    out = Model.from_onnx(proto).to_onnx()
    assert [vi.type.tensor_type.shape.dim[0].dim_param for vi in out.graph.input] == \
        ["a_dim0", "b_dim0"]
    d0 = out.graph.output[0].type.tensor_type.shape.dim[0]
    assert not d0.dim_param and not d0.HasField("dim_value")
    sess = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"a": np.zeros((2, 4), np.float32), "b": np.ones((3, 4), np.float32)})
    assert y[0].shape == (5, 4)


def test_half_open_clip_round_trips(tmp_path):
    """A fused Clip with one bound is written with the other input omitted (not +-inf, which
    from_onnx refuses as a constant)."""
    import quantc as qc
    rng = np.random.default_rng(0)
    for lo in (-0.5, None):
        ins = ["c", "lo"] if lo is not None else ["c", "", "hi"]
        nodes = [helper.make_node("Conv", ["a", "W"], ["c"]), helper.make_node("Clip", ins, ["y"])]
        inits = {"W": rnd(2, 2, 1, 1), "lo": np.float32(-0.5), "hi": np.float32(0.5)}
        x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
        qm = qc.quantize_model(Model.from_onnx(_graph(nodes, {"a": (1, 2, 3, 3)}, ["y"], inits)),
                               [x], progress=False)
        assert qm.kinds == {qm.model.nodes[0].name: "int8"}  # fused
        back = Model.from_onnx(qm.model.to_onnx())
        assert_close(back(x), qm.model(x))


def test_generated_node_names_avoid_given_ones():
    nodes = [helper.make_node("Relu", ["x"], ["z"], name="Relu_y"),
             helper.make_node("Relu", ["z"], ["y"])]
    assert [n.name for n in Model.from_onnx(build(nodes)).nodes] == ["Relu_y", "Relu_y_1"]


def test_identity_cannot_redefine_a_constant():
    nodes = [helper.make_node("Identity", ["c"], ["d"]), helper.make_node("Add", ["x", "d"], ["y"])]
    proto = build(nodes, {"c": rnd(8), "d": rnd(8, seed=2)})
    with pytest.raises(ValueError, match="output 'd' is defined twice"):
        Model.from_onnx(proto)
    proto = build([helper.make_node("Add", ["x", "c"], ["y"])], {"c": rnd(8)})
    proto.graph.initializer.append(numpy_helper.from_array(rnd(8, seed=3), "c"))
    with pytest.raises(ValueError, match="initializer 'c' is defined twice"):
        Model.from_onnx(proto)


def test_malformed_initializers_and_attributes():
    proto = build([helper.make_node("Add", ["x", "c"], ["y"])], {"c": rnd(8)})
    proto.graph.initializer[0].data_type = 99
    with pytest.raises(ValueError, match=r"initializer 'c' .*data type 99 \(unknown\)"):
        Model.from_onnx(proto)
    proto = build([helper.make_node("Add", ["x", "c"], ["y"])], {"c": rnd(8)})
    proto.graph.initializer[0].raw_data = proto.graph.initializer[0].raw_data[:-8]
    with pytest.raises(ValueError, match="initializer 'c' .*do not match the shape"):
        Model.from_onnx(proto)
    for attrs, msg in [({"axis": [1]}, "attribute axis: expected an int"),
                       ({"axis": 1.5}, "attribute axis: expected an int")]:
        proto = build([helper.make_node("Concat", ["x", "x"], ["y"], **attrs)])
        with pytest.raises(ValueError, match=msg):
            Model.from_onnx(proto)
    proto = build([helper.make_node("Identity", ["x"], [])])
    with pytest.raises(ValueError, match="expected 1 output"):
        Model.from_onnx(proto)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    node.attribute.append(helper.make_attribute("auto_pad", "x"))
    node.attribute[0].s = b"\xff\xfe"
    with pytest.raises(ValueError, match="auto_pad: expected UTF-8"):
        Model.from_onnx(build([node], {"w": rnd(3, 3, 1, 1)}))


def test_batchnorm_variance_plus_epsilon_must_be_positive():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                            epsilon=-2.0)
    ones = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"var \+ epsilon: expected > 0"):
        Model.from_onnx(build([node], {"s": ones, "b": ones, "m": ones, "v": ones}))


def test_float_output_also_read_by_an_int8_op(tmp_path):
    """A float op's result that is a graph output and also read by an int8 op: the export's
    output is the float value, as qm's (it was the copy quantized for the int8 reader)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Softmax", ["a"], ["s"], axis=1),
             helper.make_node("Conv", ["s", "W"], ["y"])]
    quantized_round_trip(_graph(nodes, {"a": (2, 4, 5, 5)}, ["s", "y"],
                                {"W": rnd(4, 4, 1, 1)}), tmp_path,
                         rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    import quantc as qc
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    qm = qc.quantize_model(Model.from_onnx(_graph(nodes, {"a": (2, 4, 5, 5)}, ["s", "y"],
                                                  {"W": rnd(4, 4, 1, 1)})), [x])
    sess = ort.InferenceSession(qm.to_onnx(None).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"a": x})[0], qm(x)[0])  # (softmax: float rounding only)


def test_planned_matmul_with_bias_exports(tmp_path):
    """The planned model's MatMul with a bias input (MatMul + Add fused) is written back as
    ONNX's MatMul and Add (a MatMul of 3 inputs failed the checker)."""
    import quantc as qc
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["a", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    x = rng.standard_normal((3, 6)).astype(np.float32)
    qm = qc.quantize_model(Model.from_onnx(_graph(nodes, {"a": (3, 6)}, ["y"],
                                                  {"W": rnd(6, 4), "b": rnd(4, seed=2)})), [x])
    assert [len(n.inputs) for n in qm.model.nodes] == [3]  # planned: one MatMul with a bias
    back = Model.from_onnx(qm.model.to_onnx(tmp_path / "p.onnx"))
    assert_close(back(x), qm.model(x))
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"a": x})[0], qm.model(x))


def test_float_op_reads_a_float_input_unquantized(tmp_path):
    """A float op reading the float graph input that an int8 op also reads gets the input as
    it is, in qm and in the export alike (the export gave it the quantized copy: values
    outside the calibrated range came out clipped)."""
    import quantc as qc
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["a", "W"], ["c"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["y"])]  # no 0 in range: float
    proto = _graph(nodes, {"a": (2, 4, 5, 5)}, ["y", "c"],
                   {"W": rnd(4, 4, 1, 1), "lo": np.float32(0.5), "hi": np.float32(4.0)})
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    qm = qc.quantize_model(Model.from_onnx(proto), [x])
    sess = ort.InferenceSession(qm.to_onnx(None).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for batch in (x, 2 * x):
        np.testing.assert_array_equal(sess.run(None, {"a": batch})[0], qm(batch)[0])
        np.testing.assert_array_equal(qm(batch)[0], np.clip(batch, 0.5, 4.0))


@pytest.mark.parametrize("c_shape", [(1, 4), (1, 1), (1,), ()])
def test_gemm_row_bias_shapes_run_in_int8(c_shape):
    """A Gemm's C of one value per output column in any ONNX shape ((1, N) is what tf2onnx
    and older exporters write) is the int32 bias: the same int8 model, bit for bit, as with
    C of shape (N,); a C that varies along the rows ((3, 4), (3, 1)) runs in float."""
    import quantc as qc
    rng = np.random.default_rng(0)
    c = rnd(*c_shape, seed=3) if c_shape else np.float32(0.7)
    attrs = {"transB": 1, "beta": 0.5}
    models = [Model.from_onnx(build([helper.make_node("Gemm", ["x", "w", "c"], ["y"], **attrs)],
                                    {"w": rnd(4, 5), "c": cc}, ("N", 5)))
              for cc in (c, np.broadcast_to(c.reshape(-1), (4,)).copy())]
    data = [rng.standard_normal((8, 5)).astype(np.float32) for _ in range(3)]
    x = rng.standard_normal((6, 5)).astype(np.float32)
    got, want = (qc.quantize_model(m, data, progress=False) for m in models)
    assert set(got.kinds.values()) == {"int8"}
    np.testing.assert_array_equal(got(x), want(x))
    for rows in ((3, 4), (3, 1)):
        m = Model.from_onnx(build([helper.make_node("Gemm", ["x", "w", "c"], ["y"], **attrs)],
                                  {"w": rnd(4, 5), "c": rnd(*rows, seed=3)}, (3, 5)))
        qm = qc.quantize_model(m, [d[:3] for d in data], progress=False)
        assert set(qm.kinds.values()) == {"float"}
        np.testing.assert_allclose(qm(x[:3]), m(x[:3]), rtol=0.05, atol=0.05)


def _producer(op, w):
    """(nodes, initializers) of an op reading 'x' (N, 3, 6, 6) into 'c', then Clip -> 'y'."""
    if op == "Conv":
        return [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])], {"W": w}
    if op in ("Gemm", "MatMul"):
        ins = ["f", "W"] + (["B"] if op == "Gemm" else [])
        return [helper.make_node("Flatten", ["x"], ["f"]),
                helper.make_node(op, ins, ["c"])], {"W": rnd(108, 8, seed=4),
                                                    "B": rnd(8, seed=5)}
    return [helper.make_node("Add", ["x", "x2"], ["c"])], {"x2": rnd(1, 3, 6, 6, seed=6) * 3}


@pytest.mark.parametrize("op", ["Conv", "Gemm", "MatMul", "Add"])
@pytest.mark.parametrize("bounds,given", [((0.0, 6.0), (0.0, 8.0)), ((-1.0, 1.0), (-8.0, 8.0)),
                                          ((0.0, 6.0), "zeros")])
def test_fused_clip_bounds_hold_in_any_output_range(op, bounds, given):
    """A Clip fused into the op before it keeps its bounds when the output's range is wider
    than they are (a range given wider, as QAT may; calibration on blank inputs, range [0, 0]
    -> scale 1): the int8 values equal quantize(clip(y)), which the QDQ export computes, and
    stay inside the bounds. (The kernels clamp only at the zero point and the type's range.)"""
    import quantc as qc
    rng = np.random.default_rng(0)
    nodes, inits = _producer(op, rnd(4, 3, 3, 3, seed=3) * 2)
    lo, hi = bounds
    nodes += [helper.make_node("Clip", ["c", "lo", "hi"], ["y"]),
              helper.make_node("MaxPool", ["y"], ["z"], kernel_shape=[1, 1]) if op != "Gemm"
              and op != "MatMul" else helper.make_node("Flatten", ["y"], ["z"])]
    inits.update(lo=np.float32(lo), hi=np.float32(hi))
    model = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["z"], inits))
    x = (rng.standard_normal((4, 3, 6, 6)) * 3).astype(np.float32)
    if given == "zeros":
        qm = qc.quantize_model(model, [np.zeros_like(x)], progress=False, io="uint8")
    else:
        qm = qc.quantize_model(model, [x], ranges={"y": given}, progress=False, io="uint8")
    assert qm.kinds[qm.model.nodes[0].name if op in ("Conv", "Add") else
                    qm.model.nodes[1].name] == "int8"
    assert qm.model.nodes[-2 if op in ("Gemm", "MatMul") else 0].attrs.get("activation")
    s, z, _ = qm.input_qparams["x"]
    xq = qc.quantize(x, s, np.uint8(z))
    got = qm(xq)
    so, zo, _ = qm.output_qparams["z"]
    qlo, qhi = (qc.quantize(np.float32(v), so, np.uint8(zo)) for v in (lo, hi))
    assert got.min() >= qlo and got.max() <= qhi
    assert got.max() == qhi  # the bound is reached: it is what clamps
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": xq})[0]
    diff = np.abs(got.astype(np.int32) - want)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.99


def test_float_op_with_an_omitted_input():
    """A node that runs in float with an omitted optional input ('': Clip's min, Gemm's C)
    gets None for it, as the float model does (it was a KeyError: '')."""
    import quantc as qc
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    cases = [([helper.make_node("Clip", ["x", "", "hi"], ["y"])], {"hi": np.float32(-0.2)}),
             ([helper.make_node("Gemm", ["x", "B", ""], ["y"], transA=1)], {"B": rnd(3, 5)})]
    for nodes, inits in cases:
        model = Model.from_onnx(_graph(nodes, {"x": (3, 4)}, ["y"], inits))
        for qm in (qc.quantize_model(model, [x], progress=False),
                   qc.quantize_model(model, None, ranges={"x": (-3, 3), "y": (-3, 3)})):
            assert set(qm.kinds.values()) == {"float"}
            np.testing.assert_allclose(qm(x), model(x), atol=0.05)


def test_required_inputs_and_empty_reshapes_are_named_errors():
    import quantc as qc
    with pytest.raises(ValueError, match=r"node 'Concat_y' \(Concat\): input 1 is omitted "
                                         r"\(''\), which Concat requires"):
        Model.from_onnx(_graph([helper.make_node("Concat", ["x", ""], ["y"], axis=1)],
                               {"x": ("N", 2)}, ["y"]))
    model = Model.from_onnx(_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                                   {"x": ("N", 2, 3)}, ["y"],
                                   {"s": np.array([0, -1], np.int64)}))
    qm = qc.quantize_model(model, [np.ones((2, 2, 3), np.float32)], progress=False)
    for f in (model, qm):  # size 0 beside -1: onnxruntime refuses it too
        with pytest.raises(ValueError, match=r"node 'rs' \(Reshape\): cannot reshape an input "
                                             r"of shape \(0, 2, 3\) to \[0, -1\]"):
            f(np.zeros((0, 2, 3), np.float32))


@pytest.mark.parametrize("acts,want", [
    ([("Relu",), ("Clip", 0.0, 6.0)], ["Clip", 0.0, 6.0]),
    ([("Clip", -1.0, 1.0), ("Relu",)], ["Clip", 0.0, 1.0]),
    ([("Clip", -2.0, 3.0), ("Clip", -1.0, 6.0)], ["Clip", -1.0, 3.0]),
    ([("Relu",), ("Relu",)], "Relu"),
])
def test_activations_in_a_row_fuse_into_one(tmp_path, acts, want):
    """Relu then Clip(0, 6) (and any activations in a row) fuse into the op before them as one
    clamp with both bounds, so the output's range is calibrated on the final values (the
    Clip ran at the Relu's range before); the int8 result matches the float model and the
    export."""
    import quantc as qc
    nodes, inits, prev = [helper.make_node("Conv", ["x", "W"], ["a0"], pads=[1, 1, 1, 1])], \
        {"W": rnd(4, 3, 3, 3, seed=3) * 2}, "a0"
    for k, act in enumerate(acts):
        if act[0] == "Relu":
            nodes.append(helper.make_node("Relu", [prev], [f"a{k + 1}"]))
        else:
            inits[f"lo{k}"], inits[f"hi{k}"] = np.float32(act[1]), np.float32(act[2])
            nodes.append(helper.make_node("Clip", [prev, f"lo{k}", f"hi{k}"], [f"a{k + 1}"]))
        prev = f"a{k + 1}"
    nodes.append(helper.make_node("MaxPool", [prev], ["y"], kernel_shape=[2, 2]))
    model = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], inits))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 6, 6)) * 3).astype(np.float32)
    qm = qc.quantize_model(model, [x], progress=False)
    assert [(n.op, n.attrs.get("activation")) for n in qm.model.nodes] == \
        [("Conv", want), ("MaxPool", None)]
    (lo, hi), s = qm.qparams[prev].range(), qm.qparams[prev].scale
    y, ref = qm(x), model(x)  # the range is the final values' (up to the zero point's nudge)
    assert lo - s <= ref.min() and ref.max() <= hi + s
    assert hi - lo <= ref.max() - min(ref.min(), 0) + 2 * s
    err = np.sum((y - ref).astype(np.float64) ** 2)  # mostly the input's 8 bits (range 20)
    assert 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)) > 25
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"x": x})[0] - y).max() <= 1.0001 * qm.qparams["y"].scale


UNARY_CASES = [("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {}),
               ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
               ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.2})]


def _unary_ref(op, attrs, x):
    """NumPy float32 reference of the ONNX formulas."""
    x = x.astype(np.float32)
    if op == "Sigmoid":
        return np.float32(1) / (np.float32(1) + np.exp(-x))
    if op == "Tanh":
        return np.tanh(x)
    if op == "LeakyRelu":
        return np.where(x >= 0, x, x * np.float32(attrs.get("alpha", 0.01)))
    a, b = (attrs.get("alpha", 0.2), attrs.get("beta", 0.5)) if op == "HardSigmoid" else \
        (1 / 6, 0.5)
    hs = np.clip(x * np.float32(a) + np.float32(b), 0, 1).astype(np.float32)
    return hs if op == "HardSigmoid" else x * hs


@pytest.mark.parametrize("op,attrs", UNARY_CASES)
@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_unary_ops_float_and_int8_tables(tmp_path, op, attrs, adt):
    """Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu: the float model matches onnxruntime;
    in int8 each is a table of its 256 input codes, exact against the NumPy formula applied
    to every dequantized code, and within one unit of the QDQ export run by onnxruntime
    (whose Sigmoid/Tanh round differently in the last place); saved and loaded bit for bit."""
    import quantc as qc
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["u"], **attrs),
             helper.make_node("Conv", ["u", "W2"], ["y"])]
    inits = {"W": rnd(4, 3, 3, 3, seed=3), "W2": rnd(2, 4, 1, 1, seed=4)}
    proto = _graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], inits)
    model = Model.from_onnx(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    assert_close(model(x), sess.run(None, {"x": x})[0], op)
    qm = qc.quantize_model(model, [x, x[:2] * 2], activation_dtype=adt, progress=False)
    assert qm.kinds[qm.model.nodes[1].name] == "int8"
    seen = {}
    qm.run(x, observe=lambda n, v, qp: seen.__setitem__(n, (v, qp)))
    (c, qc_), (u, qu) = seen["c"], seen["u"]
    want = qc.quantize(_unary_ref(op, attrs, qc.dequantize(c, qc_.scale, qc_.zp)), qu.scale,
                       qu.zp)
    np.testing.assert_array_equal(u, want)
    qm.save(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(qc.load_model(tmp_path / "m.safetensors")(x), qm(x))
    exp = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                               providers=["CPUExecutionProvider"])
    units = np.abs(exp.run(None, {"x": x})[0] - qm(x)) / qm.qparams["y"].scale
    assert units.max() <= 2.0001 and (units <= 1.0001).mean() >= 0.99


def test_se_gate_mul_runs_in_int8(tmp_path):
    """Mul (a squeeze-and-excitation gate: x * HardSigmoid(conv(pool(x)))) runs in int8 on
    qlinear_mul, like the rest; onnxruntime's run of the export (its QLinearMul) gives the
    same values."""
    import quantc as qc
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("GlobalAveragePool", ["h"], ["p"]),
             helper.make_node("Conv", ["p", "Ws", "Bs"], ["s"]),
             helper.make_node("HardSigmoid", ["s"], ["g"], alpha=1 / 6),
             helper.make_node("Mul", ["h", "g"], ["y"])]
    inits = {"W": rnd(4, 3, 3, 3, seed=3), "Ws": rnd(4, 4, 1, 1, seed=4), "Bs": rnd(4, seed=5)}
    proto = _graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], inits)
    model = Model.from_onnx(proto)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(model(x), sess.run(None, {"x": x})[0])
    qm = qc.quantize_model(model, [x], progress=False)
    kinds = {n.op: qm.kinds[n.name] for n in qm.model.nodes}
    assert kinds == {"Conv": "int8", "HardSwish": "int8", "GlobalAveragePool": "int8",
                     "HardSigmoid": "int8", "Mul": "int8"}
    ref = model(x)
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((qm(x) - ref) ** 2.0))
    assert sqnr > 25, sqnr
    exp = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                               providers=["CPUExecutionProvider"])
    assert_equal_exact(exp.run(None, {"x": x})[0], qm(x), "onnxruntime vs qm(x)")


def test_unary_ops_keep_the_nhwc_layout(isa):
    """A table op between two convolutions on the NHWC GEMM path stays NHWC (no transposes
    around it), with every bit equal to the same model run all NCHW."""
    import quantc as qc
    from quantc.qmodel import QuantizedModel
    nodes = [helper.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "W1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["d"]),
             helper.make_node("Conv", ["d", "W2"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["e", "W3"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"W0": rnd(16, 16, 3, 3, seed=3) * 0.2, "W1": rnd(16, 16, 3, 3, seed=4) * 0.2,
             "W2": rnd(16, 16, 3, 3, seed=5) * 0.2, "W3": rnd(8, 16, 3, 3, seed=6) * 0.2}
    model = Model.from_onnx(_graph(nodes, {"x": ("N", 16, 12, 12)}, ["y"], inits))
    x = np.random.default_rng(0).standard_normal((3, 16, 12, 12)).astype(np.float32)
    qm = qc.quantize_model(model, [x], progress=False)
    assert {"b", "d"} <= qm._nhwc
    try:
        QuantizedModel._nhwc_enabled = False
        qm0 = qc.quantize_model(model, [x], progress=False)
    finally:
        QuantizedModel._nhwc_enabled = True
    assert not qm0._nhwc
    np.testing.assert_array_equal(qm(x), qm0(x))


def test_given_ranges_between_activations_and_in_the_export(tmp_path):
    """A given range for the tensor between two activations (QAT's FakeQuantize after a ReLU
    that a ReLU6 follows) keeps that tensor: the Relu fuses, the Clip stays on its own; a
    float output clamped to its given range is clamped in the QDQ export too; a fused Clip
    narrower than its output's range writes file version 3 (an older quantc refuses it
    rather than run it without the clamp)."""
    import quantc as qc
    from quantc.io import TensorReader
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Clip", ["r", "lo", "hi"], ["y"])]
    inits = {"W": rnd(4, 3, 3, 3, seed=3), "lo": np.float32(0), "hi": np.float32(6)}
    model = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], inits))
    x = (np.random.default_rng(0).standard_normal((4, 3, 6, 6)) * 2).astype(np.float32)
    qm = qc.quantize_model(model, [x], ranges={"r": (0.0, 10.0)}, progress=False)
    assert [(n.op, n.attrs.get("activation")) for n in qm.model.nodes] == \
        [("Conv", "Relu"), ("Clip", None)]
    assert qm.qparams["r"].range() == pytest.approx((0.0, 10.0))
    # a Gemm's float output, clamped to half its calibrated range
    g = Model.from_onnx(_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], {"x": ("N", 5)},
                               ["y"], {"w": rnd(5, 4)}))
    xs = np.random.default_rng(1).standard_normal((64, 5)).astype(np.float32)
    y = g(xs)
    qg = qc.quantize_model(g, [xs], ranges={"y": (float(y.min()) / 2, float(y.max()) / 2)},
                           progress=False)
    got = qg(xs)
    assert got.max() < 0.6 * y.max()
    sess = ort.InferenceSession(qg.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": xs})[0], got)
    # a fused ReLU6 inside a given range of (0, 8): the clamp makes it version 3 (calibrated,
    # the range is the clipped values' own: no clamp, version 1)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"]),
             helper.make_node("MaxPool", ["y"], ["z"], kernel_shape=[1, 1])]
    inits = {"W": rnd(4, 3, 3, 3, seed=3) * 3, "lo": np.float32(0), "hi": np.float32(6)}
    m = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["z"], inits))
    assert m(x).max() == 6
    for ranges, version in ((None, "1"), ({"y": (0.0, 8.0)}, "3")):
        # (the reference arithmetic: onnxruntime's int8 Conv would make any file version 5)
        q = qc.quantize_model(m, [x], ranges=ranges, progress=False, arithmetic="reference")
        q.save(tmp_path / "c.safetensors")
        with TensorReader(tmp_path / "c.safetensors") as r:
            assert r.metadata["version"] == version
        np.testing.assert_array_equal(qc.load_model(tmp_path / "c.safetensors")(x), q(x))


def test_a_weight_layer_without_int8_weights_runs_in_float(tmp_path):
    """A file saved by an older quantc that ran a layer in float (a Gemm whose C is (1, N))
    has no int8 weights for it: that layer keeps running in float, the rest in int8."""
    import quantc as qc
    from quantc.qmodel import QuantizedModel
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"])]
    m = Model.from_onnx(_graph(nodes, {"x": ("N", 5)}, ["y"],
                               {"w": rnd(4, 5), "c": rnd(1, 4, seed=3)}))
    xs = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32)
    qm = qc.quantize_model(m, [xs], progress=False)
    gemm = qm.model.nodes[0].name
    weights = {k: v for k, v in qm.weights.items() if k != gemm}
    old = QuantizedModel(qm.model, qm.qparams, weights, info=qm.info)
    assert old.kinds[gemm] == "float"
    old.save(tmp_path / "old.safetensors")
    back = qc.load_model(tmp_path / "old.safetensors")
    assert back.kinds[gemm] == "float"
    np.testing.assert_array_equal(back(xs), old(xs))
    np.testing.assert_allclose(old(xs), m(xs), atol=2 * qm.qparams["y"].scale)


# ------------------------------------------- what torch.onnx.export writes by default (dynamo)

def _save_external(proto, path, location="m.onnx.data"):
    """Write ``proto`` to ``path`` with every tensor (a Constant's too) in the external file
    ``location`` (torch.onnx.export's dynamo exporter writes ``MODEL.onnx.data`` so)."""
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0, convert_attribute=True)
    return path


def _conv_gemm(opset=17):
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Constant", [], ["g"], name="const_g",
                              value=numpy_helper.from_array(rnd(5, 4 * 4 * 4, seed=4), "g")),
             helper.make_node("Gemm", ["f", "G"], ["h"], transB=1),
             helper.make_node("Gemm", ["f", "g"], ["k"], transB=1),
             helper.make_node("Add", ["h", "k"], ["y"])]
    inits = {"W": rnd(4, 3, 3, 3), "B": rnd(4, seed=2), "G": rnd(5, 4 * 4 * 4, seed=3)}
    return _graph(nodes, {"x": ("N", 3, 4, 4)}, ["y"], inits, opset)


def test_external_data_is_read(tmp_path):
    """Initializers in an external data file beside the model read as onnx.load reads them."""
    path = _save_external(_conv_gemm(), tmp_path / "m.onnx")
    assert os.path.getsize(path) < 1000 < os.path.getsize(tmp_path / "m.onnx.data")
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.graph.node[3].attribute[0].t.data_location == TensorProto.EXTERNAL
    m = Model.from_onnx(path)
    ref = Model.from_onnx(onnx.load(str(path)))  # onnx's own reader fills the data in
    assert set(m.initializers) == set(ref.initializers) == {"W", "B", "G", "g"}
    for k, v in ref.initializers.items():
        np.testing.assert_array_equal(m.initializers[k], v, err_msg=k)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(m(x), sess.run(None, {"x": x})[0])


def _edit_external(path, name, **entries):
    """The model at ``path`` with initializer ``name``'s external_data entries replaced."""
    proto = onnx.load(str(path), load_external_data=False)
    t = next(t for t in proto.graph.initializer if t.name == name)
    info = {e.key: e.value for e in t.external_data}
    info.update(entries)
    del t.external_data[:]
    for k, v in info.items():
        if v is not None:
            t.external_data.add(key=k, value=v)
    out = path.parent / "edited.onnx"
    out.write_bytes(proto.SerializeToString())
    return out


def test_external_data_errors(tmp_path):
    """A location outside the model's folder, a missing file, a byte range that does not fit
    the tensor or the file: a ValueError naming the file and the initializer; nothing is read
    from outside the folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(_conv_gemm(), folder / "m.onnx")
    (tmp_path / "outside.data").write_bytes(bytes(4096))
    (folder / "link.data").symlink_to(tmp_path / "outside.data")
    (folder / "sub").mkdir()
    size = 4 * 3 * 3 * 3 * 4
    for entries, msg in [
            ({"location": "../outside.data"}, r"location '\.\./outside\.data' is not a file name"),
            ({"location": str(tmp_path / "outside.data")}, "is not a file name in the model"),
            ({"location": "sub/../../outside.data"}, "is not a file name"),
            ({"location": "link.data"}, "leads out of the model's folder"),
            ({"location": "nope.data"}, "external data file .*nope.data not found"),
            ({"location": "sub"}, "external data file .*sub is not a regular file"),
            ({"location": None}, "location '' is not a file name"),
            ({"length": str(size - 4)}, f"{size - 4} bytes at offset 0, the shape "
                                        rf"\[4, 3, 3, 3\] of FLOAT needs {size} bytes"),
            ({"offset": "-4"}, "at offset -4"),
            ({"offset": "abc"}, "offset/length 'abc'/.* are not integers"),
            ({"offset": str(10 ** 6)}, r"bytes \[1000000, 1000432\) lie past the end of")]:
        bad = _edit_external(path, "W", **entries)
        with pytest.raises(ValueError, match=r"edited.onnx: initializer 'W' \(input of node "
                                             r"'Conv_c' \(Conv\)\).*" + msg):
            Model.from_onnx(bad)
    # a ModelProto whose data was left outside (onnx.load(..., load_external_data=False))
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ValueError, match="model: initializer 'W'.*is stored as external data: "
                                         r"pass the file's path, or load it with onnx.load"):
        Model.from_onnx(proto)
    assert (folder / "m.onnx.data").stat().st_size > 0  # nothing was written


def test_external_data_of_an_unsupported_type_is_not_read(tmp_path):
    proto = _conv_gemm()
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        np.ones((4, 3, 3, 3), np.float16), "W"))
    path = _save_external(proto, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="initializer 'W'.*data type FLOAT16 is not supported"):
        Model.from_onnx(path)


REDUCE_MEAN = [  # opset, axes, keepdims, noop_with_empty_axes
    (13, None, 1, None), (13, None, 0, None), (13, [2, 3], 1, None), (13, [-1, -2], 0, None),
    (13, [1], 1, None), (13, [0, 2], 0, None),
    (18, [2, 3], 1, None), (18, [3, 2], 0, None), (18, [1], 0, None), (18, None, 1, None),
    (18, [], 0, None), (18, [], 1, 1), (18, None, 0, 1), (18, [2, 3], 1, 1)]


def _reduce_mean_graph(opset, axes, keepdims, noop):
    attrs, ins, inits = {"keepdims": keepdims}, ["c"], {"W": rnd(3, 3, 3, 3)}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    if axes is not None:
        if opset >= 18:
            inits["axes"] = np.array(axes, np.int64)
            ins.append("axes")
        else:
            attrs["axes"] = axes
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ins, ["y"], **attrs)]
    return _graph(nodes, {"x": ("N", 3, 4, 5)}, ["y"], inits, opset)


@pytest.mark.parametrize("opset, axes, keepdims, noop", REDUCE_MEAN)
def test_reduce_mean(tmp_path, opset, axes, keepdims, noop):
    """ReduceMean (axes an attribute, or from opset 18 an input) as onnxruntime runs it; over
    the two spatial axes of a 4-D tensor it runs in int8 as a GlobalAveragePool (torch's
    dynamo export of AdaptiveAvgPool2d(1)), elsewhere in float; both exports run."""
    import quantc as qc
    proto = _reduce_mean_graph(opset, axes, keepdims, noop)
    m = Model.from_onnx(proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = m(x)
    assert got.shape == want.shape
    assert_close(got, want)
    again = ort.InferenceSession(m.to_onnx().SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_close(again, want)
    qm = qc.quantize_model(m, [x], progress=False)
    spatial = axes is not None and sorted(a % 4 for a in axes) == [2, 3]
    ops = [n.op for n in qm.model.nodes]
    assert ("GlobalAveragePool" in ops) == spatial
    assert set(qm.kinds.values()) == ({"int8"} if spatial else {"int8", "float"})
    # each value of c is within one step of it (rounding, the weights' error) and so is their
    # mean; y's own rounding adds at most one of its steps (a mean's range can be far
    # narrower than its input's: a whole-tensor mean is one number)
    y = qm(x)
    s_c, s_y = qm.qparams["c"].scale, qm.output_qparams["y"][0]
    np.testing.assert_allclose(y, want, atol=s_c + s_y, rtol=0)
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], y, atol=1.0001 * s_y, rtol=0)


@pytest.mark.parametrize("attrs, axes, msg", [
    ({"axes": [4]}, None, r"axes \[4\] out of range for rank 4"),
    ({"axes": [1, -3]}, None, r"axes \[1, -3\]: an axis is repeated"),
    ({"axes": [1]}, np.array([2], np.int64), "axes given both as an attribute and as an input"),
    ({}, np.array([[2]], np.int64), "axes: expected a 1-D integer tensor"),
    ({}, "x2", r"axes \(input 1, 'x2'\) must be a constant initializer"),
    ({"keepdims": 2}, None, "attribute keepdims: expected 0 or 1, got 2"),
    ({"noop_with_empty_axes": -1}, None, "attribute noop_with_empty_axes: expected 0 or 1")])
def test_reduce_mean_errors(attrs, axes, msg):
    ins, inits = ["x"], {}
    if isinstance(axes, str):
        ins.append(axes)
    elif axes is not None:
        ins.append("a")
        inits["a"] = axes
    graph_ins = {"x": ("N", 3, 4, 5)}
    if isinstance(axes, str):
        graph_ins[axes] = (1,)
    proto = _graph([helper.make_node("ReduceMean", ins, ["y"], name="rm", **attrs)], graph_ins,
                   ["y"], inits, 18)
    with pytest.raises(ValueError, match=r"node 'rm' \(ReduceMean\): " + msg):
        Model.from_onnx(proto)


def test_reshape_allowzero_without_a_zero(tmp_path):
    """allowzero=1 (as the dynamo exporter writes it) changes nothing without a 0 in the
    shape; with one (a dimension of size 0) it is still refused."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1, name="r")]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    m = Model.from_onnx(_graph(nodes, {"x": (2, 3, 4)}, ["y"], {"s": np.array([2, -1])}, 18))
    np.testing.assert_array_equal(m(x), x.reshape(2, 12))
    with pytest.raises(ValueError, match=r"node 'r' \(Reshape\): allowzero=1 with a 0"):
        Model.from_onnx(_graph(nodes, {"x": (2, 3, 4)}, ["y"], {"s": np.array([0, -1])}, 18))


def test_torch_dynamo_export(tmp_path, exported):
    """torch.onnx.export's default exporter (dynamo=True, needs onnxscript): external data,
    opset 18+, ReduceMean for the global pooling, Reshape with allowzero=1; read, run and
    converted with every layer in int8."""
    pytest.importorskip("onnxscript")
    import logging
    import warnings
    import torch
    import quantc as qc
    net, legacy = exported
    path = tmp_path / "dyn.onnx"
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(net, (x,), str(path), input_names=["input"], dynamo=True,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                              verbose=False)
        finally:
            logging.disable(logging.NOTSET)
    assert (tmp_path / "dyn.onnx.data").exists()
    m = Model.from_onnx(path)
    assert "ReduceMean" in {n.op for n in m.nodes}
    with torch.no_grad():
        want = net(x).numpy()
    assert_close(m(x.numpy()), want, "torch", tol=1e-4)
    calib = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(k)).numpy()
             for k in range(2)]
    qm = qc.quantize_model(m, calib, progress=False)
    assert set(qm.kinds.values()) == {"int8"}
    got = qm(x.numpy())
    # as close to float as the same network exported by the TorchScript exporter (these small
    # random networks are far from float in int8 either way, MobileNetV2's most)
    ql = qc.quantize_model(Model.from_onnx(legacy), calib, progress=False)

    def cos(a):
        return np.sum(a * want) / (np.linalg.norm(a) * np.linalg.norm(want))
    assert abs(cos(got) - cos(ql(x.numpy()))) < 0.01, (cos(got), cos(ql(x.numpy())))
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": x.numpy()})[0].shape == got.shape


def _nhwc_graph(opset):
    """What tf2onnx writes for a Keras CNN: an NHWC input transposed to NCHW, Squeeze after the
    global pooling, a Dense layer as MatMul + Add; then Unsqueeze back to 4-D for a 1x1 Conv
    (axes as attributes before opset 13, as inputs from it)."""
    inits = {"W": rnd(8, 3, 3, 3), "B": rnd(8, seed=2), "M": rnd(8, 5, seed=3),
             "C": rnd(5, seed=4), "W2": rnd(4, 5, 1, 1, seed=5)}

    def axes(vals):
        if opset < 13:
            return [], {"axes": vals}
        inits["ax"] = np.array(vals, np.int64)
        return ["ax"], {}
    (i1, a1), (i2, a2) = axes([2, 3]), axes([-1, 2])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Squeeze", ["g"] + i1, ["s"], **a1),
             helper.make_node("MatMul", ["s", "M"], ["mm"]),
             helper.make_node("Add", ["mm", "C"], ["h"]),
             helper.make_node("Unsqueeze", ["h"] + i1, ["u"], **a1),
             helper.make_node("Conv", ["u", "W2"], ["c2"]),
             helper.make_node("Squeeze", ["c2"] + i2, ["y"], **a2)]
    return _graph(nodes, {"x": ("N", 8, 8, 3)}, ["y"], inits, opset)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_transpose_squeeze_unsqueeze(tmp_path, opset):
    """Transpose, Squeeze and Unsqueeze only move values: in int8 they run on the codes with
    their input's qparams, so the whole tf2onnx-style model is int8, and both exports run."""
    import quantc as qc
    proto = _nhwc_graph(opset)
    m = Model.from_onnx(proto)
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_close(m(x), want)
    assert_close(ort.InferenceSession(m.to_onnx().SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, {"x": x})[0],
                 want)
    qm = qc.quantize_model(m, [x], progress=False)
    assert set(qm.kinds.values()) == {"int8"}
    got = qm(x)
    # four int8 layers deep: close to float, and onnxruntime's run of the export within one
    # output step of quantc's
    assert np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.999
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], got,
                               atol=1.0001 * qm.output_qparams["y"][0], rtol=0)
    for op in ("Transpose", "Squeeze", "Unsqueeze"):
        node = next(n for n in qm.model.nodes if n.op == op)
        assert qm.qparams[node.outputs[0]] == qm.qparams[node.inputs[0]], op
    qm.save(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(qc.load_model(tmp_path / "t.safetensors")(x), qm(x))


@pytest.mark.parametrize("node, shape, inits, msg", [
    (helper.make_node("Transpose", ["x"], ["y"], name="n", perm=[0, 2, 2, 1]), (2, 3, 4, 5), {},
     r"perm \[0, 2, 2, 1\] is not a permutation of the 4 axes"),
    (helper.make_node("Squeeze", ["x", "a"], ["y"], name="n"), (2, 3, 1), {"a": [1]},
     "axis 1 has size 3, not 1"),
    (helper.make_node("Squeeze", ["x"], ["y"], name="n"), ("N", 3, 1), {},
     r"Squeeze without axes needs every dimension known, got \(N, 3, 1\)"),
    (helper.make_node("Squeeze", ["x", "a"], ["y"], name="n"), (2, 1, 1), {"a": [1, -2]},
     r"axes \[1, -2\]: an axis is repeated"),
    (helper.make_node("Unsqueeze", ["x"], ["y"], name="n"), (2, 3), {}, "axes are required"),
    (helper.make_node("Unsqueeze", ["x", "a"], ["y"], name="n"), (2, 3), {"a": [3]},
     r"axes \[3\] out of range for rank 3")])
def test_transpose_squeeze_unsqueeze_errors(node, shape, inits, msg):
    inits = {k: np.array(v, np.int64) for k, v in inits.items()}
    with pytest.raises(ValueError, match=rf"node 'n' \({node.op_type}\): " + msg):
        Model.from_onnx(_graph([node], {"x": shape}, ["y"], inits, 13))


def test_squeeze_of_a_dimension_that_is_not_1_at_run_time():
    """An unknown dimension squeezed is taken on trust when the model is built; at run time a
    size other than 1 is an error naming the node."""
    node = helper.make_node("Squeeze", ["x", "a"], ["y"], name="n")
    m = Model.from_onnx(_graph([node], {"x": (2, "K")}, ["y"], {"a": np.array([1])}, 13))
    assert m(np.ones((2, 1), np.float32)).shape == (2,)
    with pytest.raises(ValueError, match=r"node 'n' \(Squeeze\): axis 1 has size 3, not 1"):
        m(np.ones((2, 3), np.float32))


def test_reduce_mean_of_nothing_is_zero():
    """A mean over an axis of size 0 is 0, as onnxruntime gives (no NaN, no warning)."""
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)
    proto = _graph([node], {"x": (3, 0)}, ["y"], opset=13)
    x = np.zeros((3, 0), np.float32)
    want = ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = Model.from_onnx(proto)(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.zeros(3, np.float32))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_given_range(keepdims):
    """A range given for a spatial ReduceMean's output is that output's, with keepdims=0 too
    (planned as GlobalAveragePool and Flatten: the pooled tensor between them takes it): it
    suffices without calibration data, and it clamps a float output as given ranges do."""
    import quantc as qc
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=keepdims)]
    m = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 4, 4)}, ["y"], {"W": rnd(4, 3, 1, 1)},
                               13))
    x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)
    ranges = {"x": (-4.0, 4.0), "c": (-6.0, 6.0), "y": (-0.25, 0.25)}
    qm = qc.quantize_model(m, None, ranges=ranges, progress=False)
    want = qc.choose_qparams(min_val=-0.25, max_val=0.25, dtype="uint8")
    assert (qm.qparams["y"].scale, qm.qparams["y"].zp) == (want.scale, want.zero_point)
    assert set(qm.kinds.values()) == {"int8"}
    y = qm(x)
    assert np.abs(m(x)).max() > 0.3 and np.abs(y).max() <= 0.2510  # clamped to the range
    qc_cal = qc.quantize_model(m, [x], ranges={"y": (-0.25, 0.25)}, progress=False)
    assert np.abs(qc_cal(x)).max() <= 0.2510


def test_integer_constant_output_keeps_its_type_in_the_exports():
    """An int64 initializer that is a graph output and a Reshape's shape: both exports declare
    it int64 (the int8 one declared float, which onnxruntime refused to load)."""
    import quantc as qc
    nodes = [helper.make_node("Reshape", ["x", "a"], ["y"])]
    proto = _graph(nodes, {"x": (2, 3, 4)}, ["y", "a"], {"a": np.array([2, 12], np.int64)})
    proto.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    m = Model.from_onnx(proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    qm = qc.quantize_model(m, [x], progress=False)
    for got, exported in ((m(x), m.to_onnx()), (qm(x), qm.to_onnx())):
        out = ort.InferenceSession(exported.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert out[1].dtype == got[1].dtype == np.int64
        np.testing.assert_array_equal(out[1], [2, 12])


def _export_agrees(qm, x, out="y"):
    sess = ort.InferenceSession(qm.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = qm(x)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], got,
                               atol=1.0001 * qm.output_qparams[out][0], rtol=0)
    return got


def test_given_range_after_an_op_that_moves_values(tmp_path):
    """A range given for the output of an op that only moves or clamps values (QAT's
    FakeQuantize after a Flatten, a Relu, a MaxPool): it was silently replaced by the input's
    calibrated qparams. Now it is the input's too when nothing else reads the input (the op
    still runs on the codes), else the op's result is requantized to it (file version 4),
    as the export's DequantizeLinear -> op -> QuantizeLinear computes it."""
    import quantc as qc
    from quantc.io import TensorReader
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((4, 3, 6, 6)), -2.9, 2.9).astype(np.float32)  # in x's range
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("Flatten", ["c"], ["y"])]
    m = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], {"W": rnd(2, 3, 1, 1)}))
    qm = qc.quantize_model(m, [x], ranges={"y": (-0.5, 0.5)}, progress=False)
    assert qm.qparams["c"] == qm.qparams["y"] and qm.qparams["y"].range()[1] < 0.51
    assert qm.info["given_ranges"] == ["y"]
    assert np.abs(_export_agrees(qm, x)).max() <= 0.51 < np.abs(m(x)).max()

    cases = {  # the input has its own range: requantized after the op
        "relu": ([helper.make_node("Relu", ["x"], ["r"]),
                  helper.make_node("Transpose", ["r"], ["y"], perm=[0, 3, 2, 1])],
                 {"x": (-3.0, 3.0), "y": (0.0, 0.5)}),
        "maxpool": ([helper.make_node("Conv", ["x", "W"], ["c"]),
                     helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2])],
                    {"x": (-3.0, 3.0), "c": (-4.0, 4.0), "y": (-1.0, 1.0)}),
        "clip": ([helper.make_node("Conv", ["x", "W"], ["c"]),
                  helper.make_node("Flatten", ["c"], ["f"]),
                  helper.make_node("Clip", ["f", "lo", "hi"], ["y"])],
                 {"x": (-3.0, 3.0), "f": (-4.0, 4.0), "y": (-0.3, 2.0)}),
    }
    for name, (nodes, ranges) in cases.items():
        inits = {"W": rnd(2, 3, 1, 1), "lo": np.float32(-0.25), "hi": np.float32(1.5)}
        inits = {k: v for k, v in inits.items() if any(k in n.input for n in nodes)}
        m = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 6, 6)}, ["y"], inits))
        for data in ([x], None):
            qm = qc.quantize_model(m, data, ranges=ranges, progress=False,
                                   arithmetic="reference")  # (else version 5 for the Conv)
            lo, hi = qm.qparams["y"].range()
            assert (lo, hi) == pytest.approx(ranges["y"], abs=0.02), name
            got = _export_agrees(qm, x)
            assert got.min() >= lo - 1e-6 and got.max() <= hi + 1e-6, name
            np.testing.assert_allclose(got, np.clip(m(x), lo, hi),
                                       atol=2 * qm.qparams["y"].scale + 2.1 * max(
                                           qm.qparams[n.inputs[0]].scale for n in m.nodes),
                                       rtol=0, err_msg=name)
            qm.save(tmp_path / "g.safetensors")
            with TensorReader(tmp_path / "g.safetensors") as r:
                assert r.metadata["version"] == "4", name
            np.testing.assert_array_equal(qc.load_model(tmp_path / "g.safetensors")(x), got)


def test_given_qparams_of_the_wrong_dtype_are_named():
    """A QParams range of another dtype than the activations is that error, naming the tensor
    it was given for (it was taken for an empty observer: 'saw no values')."""
    import quantc as qc
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])]
    m = Model.from_onnx(_graph(nodes, {"x": ("N", 3, 2)}, ["y"]))
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
    wrong = qc.choose_qparams(min_val=-1.0, max_val=1.0, dtype="int8")
    for name in ("x", "r", "y"):
        with pytest.raises(ValueError, match=rf"ranges\['{name}'\]: qparams of dtype int8, the "
                                             r"activations are uint8"):
            qc.quantize_model(m, [x], ranges={name: wrong}, progress=False)
