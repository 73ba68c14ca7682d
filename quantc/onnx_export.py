"""ONNX export: a float Model as it is, a QuantizedModel as a QDQ model.

A QDQ model is the form onnxruntime's quantization tool writes.

Every activation that quantc holds in int8 is written as ``T -> QuantizeLinear ->
DequantizeLinear`` with its scale and zero point, so each float op between a
DequantizeLinear and a QuantizeLinear is what quantc runs in int8 (onnxruntime fuses those
groups into its QLinear kernels). Weights are int8 initializers behind a per-channel
DequantizeLinear (axis 0: the output channel; axis 1 for a MatMul's (K, N) weight), biases
int32 with scale ``x_scale * w_scale``; a fused activation is written back as Relu or Clip.
Ops quantc runs in float stay float between a DequantizeLinear and a QuantizeLinear.
"""
import os

import numpy as np

from .model import activation_bounds

OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("QuantizedModel.to_onnx needs the 'onnx' package: "
                          "pip install 'quantc[onnx]'") from None
    return onnx


def quantized_to_onnx(qm, path=None):
    """Build the QDQ ``onnx.ModelProto`` of ``qm``; write it to ``path`` (atomically) if given."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    m = qm.model
    nodes, inits = [], []
    count = [0]

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, ins, outs, **attrs):
        count[0] += 1
        nodes.append(helper.make_node(op, list(ins), list(outs), name=f"{op}_{count[0]}",
                                      **attrs))

    io_dtype = None if qm.io == "float" else np.dtype(qm.io)
    outputs = set(m.outputs)
    qdq = {}  # tensor -> the name of its dequantized value

    def qparams_consts(t, dtype=None):
        s, z, dt = qm._io_qparams(t) if dtype == "io" else qm.qparams[t].to_list()
        return (const(f"{t}_scale" + ("_io" if dtype == "io" else ""), np.float32(s)),
                const(f"{t}_zero_point" + ("_io" if dtype == "io" else ""),
                      np.dtype(dt).type(z)))

    def float_name(t):
        return t + "_float" if t in outputs else t

    def add_qdq(t):
        """Q and DQ after the float tensor t; consumers read the returned name."""
        if t not in qdq:
            s, z = qparams_consts(t)
            node("QuantizeLinear", [float_name(t), s, z], [t + "_quantized"])
            node("DequantizeLinear", [t + "_quantized", s, z], [t + "_dequantized"])
            qdq[t] = t + "_dequantized"
        return qdq[t]

    graph_inputs = []
    for name, shape in m.inputs.items():
        dims = ["N" if d is None else d for d in shape]
        if io_dtype is None:
            elem = TensorProto.FLOAT
            graph_inputs.append(helper.make_tensor_value_info(name, elem, dims))
        else:
            elem = helper.np_dtype_to_tensor_dtype(io_dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, dims))
            s, z = qparams_consts(name, "io")
            node("DequantizeLinear", [name, s, z], [name + "_dequantized"])
            qdq[name] = name + "_dequantized"

    def arg(t, want_q):
        """What a consumer reads: the dequantized value for int8 ops, else the float one."""
        if not t:
            return ""
        if t in m.initializers:
            return t
        if want_q or t in qdq:
            return add_qdq(t)
        return float_name(t)

    for n in m.nodes:
        is_int8 = qm.kinds[n.name] == "int8"
        out = float_name(n.outputs[0])
        attrs = {k: v for k, v in n.attrs.items() if k != "activation"}
        wd = qm.weights.get(n.name)
        n_op = n.op
        if is_int8 and n.op in ("Conv", "Gemm", "MatMul"):
            x = arg(n.inputs[0], True)
            w, ws = wd["weight"], wd["weight_scale"]
            m_out = w.shape[0]
            if n.op == "MatMul":
                wq, axis = np.ascontiguousarray(w.T), 1
            else:
                wq, axis = w, 0
            const(n.name + "_weight_quantized", wq)
            const(n.name + "_weight_scale", ws)
            const(n.name + "_weight_zero_point", np.zeros(m_out, np.int8))
            node("DequantizeLinear", [n.name + "_weight_quantized", n.name + "_weight_scale",
                                      n.name + "_weight_zero_point"], [n.name + "_weight"],
                 axis=axis)
            ins = [x, n.name + "_weight"]
            if wd["bias"] is not None:
                xs = np.float32(qm.qparams[n.inputs[0]].scale)
                const(n.name + "_bias_quantized", wd["bias"])
                const(n.name + "_bias_scale", (xs * ws).astype(np.float32))
                const(n.name + "_bias_zero_point", np.zeros(m_out, np.int32))
                node("DequantizeLinear", [n.name + "_bias_quantized", n.name + "_bias_scale",
                                          n.name + "_bias_zero_point"], [n.name + "_bias"],
                     axis=0)
                ins.append(n.name + "_bias")
            if n.op == "Gemm":
                attrs = {"transB": 1}
            elif n.op == "MatMul" and wd["bias"] is not None:
                # MatMul has no bias input: MatMul, then Add of the (dequantized) int32 bias
                node("MatMul", ins[:2], [out + "_nobias"])
                n_op, ins = "Add", [out + "_nobias", n.name + "_bias"]
        elif is_int8 and n.op == "Add" and wd:
            ins = []
            for i, t in enumerate(n.inputs):
                c = wd.get(f"const{i}")
                if c is None:
                    ins.append(arg(t, True))
                    continue
                q, s, z = c
                const(f"{n.name}_const{i}_quantized", q)
                const(f"{n.name}_const{i}_scale", np.float32(s))
                const(f"{n.name}_const{i}_zero_point", np.asarray(z, q.dtype))
                node("DequantizeLinear", [f"{n.name}_const{i}_quantized",
                                          f"{n.name}_const{i}_scale",
                                          f"{n.name}_const{i}_zero_point"],
                     [f"{n.name}_const{i}"])
                ins.append(f"{n.name}_const{i}")
        else:
            ins = [arg(t, is_int8) for t in n.inputs]
        lo, hi = activation_bounds(n)
        if lo is None and hi is None:
            node(n_op, ins, [out], **attrs)
        else:
            node(n_op, ins, [out + "_preact"], **attrs)
            if hi is None:
                node("Relu", [out + "_preact"], [out])
            else:
                c_lo = const(n.name + "_clip_min", np.float32(lo))
                c_hi = const(n.name + "_clip_max", np.float32(hi))
                node("Clip", [out + "_preact", c_lo, c_hi], [out])
        if is_int8 and n.outputs[0] not in qm.float_outputs:
            add_qdq(n.outputs[0])

    graph_outputs = []
    for o in m.outputs:
        shape = ["N" if d is None else d for d in m.shapes[o]]
        held_q = o in qdq
        if io_dtype is None:
            if held_q:
                node("Identity", [add_qdq(o)], [o])
            else:
                node("Identity", [float_name(o)], [o])
            graph_outputs.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, shape))
        else:
            src = add_qdq(o) if held_q else float_name(o)
            s, z = qparams_consts(o, "io")
            node("QuantizeLinear", [src, s, z], [o])
            graph_outputs.append(helper.make_tensor_value_info(
                o, helper.np_dtype_to_tensor_dtype(io_dtype), shape))
    for k, v in m.initializers.items():  # constants float ops still read (shapes, clip bounds)
        if any(k in n.inputs for n in m.nodes if not (
                qm.kinds[n.name] == "int8" and n.op in ("Conv", "Gemm", "MatMul", "Add"))):
            const(k, v)
    return _finish(onnx, helper.make_graph(nodes, qm.model.name, graph_inputs, graph_outputs,
                                           inits), path)


def model_to_onnx(model, path=None):
    """The float ``onnx.ModelProto`` of a :class:`~quantc.Model` (fused activations written
    back as Relu/Clip nodes); written to ``path`` (atomically) if given."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    nodes = []
    inits = [numpy_helper.from_array(v, k) for k, v in model.initializers.items()]
    for n in model.nodes:
        attrs = {k: v for k, v in n.attrs.items() if k != "activation"}
        lo, hi = activation_bounds(n)
        out = n.outputs[0]
        if lo is None and hi is None:
            nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **attrs))
            continue
        nodes.append(helper.make_node(n.op, n.inputs, [out + "_preact"], name=n.name, **attrs))
        if hi is None:
            nodes.append(helper.make_node("Relu", [out + "_preact"], [out], name=n.name + "_act"))
        else:
            inits += [numpy_helper.from_array(np.float32(lo), n.name + "_clip_min"),
                      numpy_helper.from_array(np.float32(hi), n.name + "_clip_max")]
            nodes.append(helper.make_node("Clip", [out + "_preact", n.name + "_clip_min",
                                                   n.name + "_clip_max"], [out],
                                          name=n.name + "_act"))
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT,
                                         ["N" if d is None else d for d in v])
           for k, v in model.inputs.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT,
                                          ["N" if d is None else d for d in model.shapes[o]])
            for o in model.outputs]
    return _finish(onnx, helper.make_graph(nodes, model.name, ins, outs, inits), path)


def _finish(onnx, graph, path):
    """The checked ModelProto of `graph` (opset OPSET, IR 8), written atomically to `path`
    if given."""
    proto = onnx.helper.make_model(graph, producer_name="quantc",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    if path is not None:
        _write_atomic(os.fspath(path), proto.SerializeToString())
    return proto


def _write_atomic(path, data):
    from .io import _atomic_path
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
