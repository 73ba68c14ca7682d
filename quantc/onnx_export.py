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
import math
import os

import numpy as np

from .model import activation_bounds, namer, tensor_names

OPSET = 17


def _onnx(what):
    from ._optional import require
    return require("onnx", what=what)


def _dims(shape, name=None):
    """ONNX dims of a quantc shape. An unknown dimension (None) of graph input ``name`` gets a
    symbol of its own, ``<name>_dim<axis>`` (one symbol for all would tell onnxruntime they
    are equal; a name lets tools such as onnxruntime's free_dimension_overrides refer to it);
    an output's is left unnamed."""
    return [f"{name}_dim{i}" if d is None and name is not None else d
            for i, d in enumerate(shape)]


def _input_names(n):
    """The inputs of node ``n`` that the exports write as inputs (a ReduceMean's axes, an
    input from opset 18, become its attribute at opset OPSET)."""
    return n.inputs[:1] if n.op == "ReduceMean" else n.inputs


def _opset_attrs(model, n, const):
    """(op, attributes, extra inputs, number of the node's inputs written) of node ``n`` in
    opset OPSET: fused activation dropped (written as its own node), older opsets' attributes
    moved or dropped (Clip's min/max become inputs made with ``const(stem, value)``;
    Dropout's ratio does not act at inference; BatchNormalization's spatial is 1), opset 18's
    ReduceMean as opset 13's (axes an attribute; noop_with_empty_axes without axes is an
    Identity), auto_pad resolved to explicit pads (onnxruntime refuses SAME with
    dilations)."""
    attrs = {k: v for k, v in n.attrs.items() if k != "activation"}
    op, extra, n_in = n.op, [], len(_input_names(n))
    if n.op == "Clip" and ("min" in attrs or "max" in attrs):
        extra = _clip_bounds(n.name + "_min", attrs.pop("min", -math.inf),
                             n.name + "_max", attrs.pop("max", math.inf), const)
    elif n.op == "Dropout":
        attrs.pop("ratio", None)
    elif n.op == "BatchNormalization":
        attrs.pop("spatial", None)
    elif n.op == "AveragePool":
        attrs.pop("dilations", None)  # (1, 1): others are refused when the model is built
    elif n.op in ("Squeeze", "Unsqueeze") and "axes" in attrs:  # an input from opset 13
        extra = [const(n.name + "_axes", np.asarray(attrs.pop("axes"), np.int64))]
    elif n.op == "ReduceMean":
        if len(n.inputs) > 1 and n.inputs[1]:
            attrs["axes"] = [int(a) for a in model.initializers[n.inputs[1]].reshape(-1)]
        if int(attrs.pop("noop_with_empty_axes", 0)) and not attrs.get("axes"):
            op, attrs = "Identity", {}
        elif not attrs.get("axes"):
            attrs.pop("axes", None)  # none given: every axis
    if n.op in ("Conv", "MaxPool", "AveragePool") and attrs.get("auto_pad", "NOTSET") != \
            "NOTSET":
        from .model import _pool_geometry
        k = tuple(attrs["kernel_shape"]) if "kernel_shape" in attrs else \
            model.initializers[n.inputs[1]].shape[2:]
        attrs["pads"] = list(_pool_geometry(n, model.shapes[n.inputs[0]], k)[1])
        del attrs["auto_pad"]
    while n_in and not n.inputs[n_in - 1]:  # omitted trailing inputs are left out
        n_in -= 1
    return op, attrs, extra, n_in


def _activation(n, out, fresh, const, node):
    """(name, finish) for node ``n`` writing tensor ``out``: the op writes ``name``, and
    ``finish()`` (None without a fused activation) then writes the activation from it to
    ``out`` as Relu or Clip (an infinite bound is an omitted input)."""
    lo, hi = activation_bounds(n)
    if lo is None and hi is None:
        return out, None
    pre = fresh(out + "_preact")

    def finish():
        if lo == 0 and (hi is None or hi == math.inf):
            node("Relu", [pre], [out])
            return
        node("Clip", [pre] + _clip_bounds(n.name + "_clip_min", lo, n.name + "_clip_max", hi,
                                          const), [out])
    return pre, finish


def _clip_bounds(lo_stem, lo, hi_stem, hi, const):
    """A Clip's min and max inputs made with ``const(stem, value)``: an infinite bound is an
    omitted input ("" for min, nothing for max)."""
    ins = [const(lo_stem, np.float32(lo)) if lo > -math.inf else "",
           const(hi_stem, np.float32(hi)) if hi < math.inf else ""]
    return ins if ins[1] else ins[:1]


def quantized_to_onnx(qm, path=None):
    """Build the QDQ ``onnx.ModelProto`` of ``qm``; write it to ``path`` (atomically) if given."""
    onnx = _onnx("QuantizedModel.to_onnx")
    from onnx import TensorProto, helper, numpy_helper
    m = qm.model
    nodes, inits = [], []
    count = [0]
    skip = ("Conv", "Gemm", "MatMul", "Add", "Concat")  # their constants are written quantized
    kept = {k for k in m.initializers if k in m.outputs or any(
        k in _input_names(n) for n in m.nodes if not (qm.kinds[n.name] == "int8" and n.op in skip))}
    # new names avoid what the exported graph holds (not the float weights it leaves out)
    fresh = namer(set(m.inputs) | set(m.outputs) | kept | {o for n in m.nodes
                                                           for o in n.outputs})

    def keep(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def const(stem, value):
        return keep(fresh(stem), value)

    def node(op, ins, outs, **attrs):
        count[0] += 1
        nodes.append(helper.make_node(op, list(ins), list(outs), name=f"{op}_{count[0]}",
                                      **attrs))

    io_dtype = None if qm.io == "float" else np.dtype(qm.io)
    qdq = {}  # tensor -> the name of its dequantized value
    held_q = set()  # tensors quantc holds in int8 (an int8 op's result): outputs dequantized
    # the float value of a graph output made here (a node's result, a constant) is written
    # under another name, and the output itself last (Identity, or QuantizeLinear for raw io)
    fname = {o: fresh(o + "_float") for o in m.outputs if o not in m.inputs}
    qp_names = {}

    def qparams_consts(t, io=False):
        if (t, io) not in qp_names:
            s, z, dt = qm._io_qparams(t) if io else qm.qparams[t].to_list()
            tail = "_io" if io else ""
            qp_names[t, io] = (const(f"{t}_scale{tail}", np.float32(s)),
                               const(f"{t}_zero_point{tail}", np.dtype(dt).type(z)))
        return qp_names[t, io]

    def float_name(t):
        return fname.get(t, t)

    def add_qdq(t):
        """Q and DQ after the float tensor t; consumers read the returned name."""
        if t not in qdq:
            s, z = qparams_consts(t)
            q, qdq[t] = fresh(t + "_quantized"), fresh(t + "_dequantized")
            node("QuantizeLinear", [float_name(t), s, z], [q])
            node("DequantizeLinear", [q, s, z], [qdq[t]])
        return qdq[t]

    def dequantized(stem, q, scale, zero_point, axis=None):
        """A DequantizeLinear of the constant q (int8/int32): the name of its float value."""
        ins = [const(stem + "_quantized", q), const(stem + "_scale", scale),
               const(stem + "_zero_point", zero_point)]
        out = fresh(stem)
        node("DequantizeLinear", ins, [out], **({} if axis is None else {"axis": axis}))
        return out

    graph_inputs = []
    for name, shape in m.inputs.items():
        elem = TensorProto.FLOAT if io_dtype is None else \
            helper.np_dtype_to_tensor_dtype(io_dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, _dims(shape, name)))
        if io_dtype is not None:
            s, z = qparams_consts(name, io=True)
            qdq[name] = fresh(name + "_dequantized")
            node("DequantizeLinear", [name, s, z], [qdq[name]])

    def arg(t, want_q):
        """What a consumer reads: the dequantized value for int8 ops and for tensors quantc
        holds in int8 (an int8 op's result, a raw input), else the float one (a float input
        that an int8 op also reads reaches a float op unquantized, as in qm)."""
        if not t:
            return ""
        if t in m.initializers:
            return float_name(t)
        if want_q or t in held_q or (io_dtype is not None and t in m.inputs):
            return add_qdq(t)
        return float_name(t)

    for n in m.nodes:
        is_int8 = qm.kinds[n.name] == "int8"
        out = float_name(n.outputs[0])
        n_op, attrs, extra, n_in = _opset_attrs(m, n, const)
        wd = qm.weights.get(n.name)
        if is_int8 and n.op in ("Conv", "Gemm", "MatMul"):
            x = arg(n.inputs[0], True)
            w, ws = wd["weight"], wd["weight_scale"]
            m_out = w.shape[0]
            wq, axis = (np.ascontiguousarray(w.T), 1) if n.op == "MatMul" else (w, 0)
            ins = [x, dequantized(n.name + "_weight", wq, ws, np.zeros(m_out, np.int8), axis)]
            if wd["bias"] is not None:
                xs = np.float32(qm.qparams[n.inputs[0]].scale)
                ins.append(dequantized(n.name + "_bias", wd["bias"],
                                       (xs * ws).astype(np.float32),
                                       np.zeros(m_out, np.int32), 0))
            if n.op == "Gemm":
                attrs = {"transB": 1}
            elif n.op == "MatMul" and wd["bias"] is not None:
                # MatMul has no bias input: MatMul, then Add of the (dequantized) int32 bias
                nobias = fresh(out + "_nobias")
                node("MatMul", ins[:2], [nobias])
                n_op, ins = "Add", [nobias, ins[2]]
        elif is_int8 and n.op in ("Add", "Concat") and wd:
            ins = []
            for i, t in enumerate(n.inputs):
                c = wd.get(f"const{i}")
                if c is None:
                    ins.append(arg(t, True))
                else:  # a constant operand, quantized at conversion
                    q, s, z = c
                    ins.append(dequantized(f"{n.name}_const{i}", q, np.float32(s),
                                           np.asarray(z, q.dtype)))
        else:
            ins = [arg(t, is_int8) for t in n.inputs[:n_in]] + extra
        # a float output clamped to its given (trained) range, as qm runs it (_int8_step)
        clamp = n.outputs[0] in qm._range_clamped
        dest = fresh(out + "_unclamped") if clamp else out
        target, finish = _activation(n, dest, fresh, const, node)
        node(n_op, ins, [target], **attrs)
        if finish is not None:
            finish()
        if clamp:
            lo, hi = qm.qparams[n.outputs[0]].range()
            node("Clip", [dest, const(f"{n.outputs[0]}_range_min", np.float32(lo)),
                          const(f"{n.outputs[0]}_range_max", np.float32(hi))], [out])
        if is_int8 and n.outputs[0] not in qm.float_outputs:
            add_qdq(n.outputs[0])
            held_q.add(n.outputs[0])

    graph_outputs, written = [], set()
    for o in m.outputs:
        # (a constant output of float io keeps its type: an int64 shape stays int64)
        elem = helper.np_dtype_to_tensor_dtype(
            m.initializers[o].dtype if o in m.initializers else np.dtype(np.float32)) \
            if io_dtype is None else helper.np_dtype_to_tensor_dtype(io_dtype)
        graph_outputs.append(helper.make_tensor_value_info(o, elem, _dims(m.shapes[o])))
        if o in m.inputs or o in written:  # a graph input is its own output (raw: same io)
            continue
        written.add(o)
        # (a float op's result that an int8 op also reads is quantized for that reader only)
        src = qdq[o] if o in held_q else float_name(o)
        if io_dtype is None:
            node("Identity", [src], [o])
        else:
            s, z = qparams_consts(o, io=True)
            if o in m.initializers and m.initializers[o].dtype != np.float32:
                # an integer constant output: quantized from float, as qm does
                cast = fresh(o + "_as_float")
                node("Cast", [src], [cast], to=TensorProto.FLOAT)
                src = cast
            node("QuantizeLinear", [src, s, z], [o])
    for k, v in m.initializers.items():  # constants float ops still read, constant outputs
        if k in kept:
            keep(float_name(k), v)
    return _finish(onnx, helper.make_graph(nodes, qm.model.name, graph_inputs, graph_outputs,
                                           inits), path)


def model_to_onnx(model, path=None):
    """The float ``onnx.ModelProto`` of a :class:`~quantc.Model` (fused activations written
    back as Relu/Clip nodes); written to ``path`` (atomically) if given."""
    onnx = _onnx("Model.to_onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes = []
    # (not a ReduceMean's axes that nothing else reads: they are written as its attribute)
    axes = {n.inputs[1] for n in model.nodes if n.op == "ReduceMean" and len(n.inputs) > 1}
    axes -= {i for n in model.nodes for i in _input_names(n)}
    inits = [numpy_helper.from_array(v, k) for k, v in model.initializers.items()
             if k not in axes or k in model.outputs]
    fresh = namer(tensor_names(model))
    fresh_node = namer(n.name for n in model.nodes)

    def const(stem, value):
        name = fresh(stem)
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, ins, outs, name=None, **attrs):
        if name is None:  # an activation node: its op's name, made unique
            name = fresh_node(nodes[-1].name + "_act")
        nodes.append(helper.make_node(op, list(ins), list(outs), name=name, **attrs))

    for n in model.nodes:
        op, attrs, extra, n_in = _opset_attrs(model, n, const)
        target, finish = _activation(n, n.outputs[0], fresh, const, node)
        if n.op == "MatMul" and len(n.inputs) > 2:  # planned MatMul + bias: ONNX's two nodes
            product = fresh(n.outputs[0] + "_nobias")
            node("MatMul", n.inputs[:2], [product], n.name)
            node("Add", [product, n.inputs[2]], [target], fresh_node(n.name + "_bias"))
        else:
            node(op, list(n.inputs[:n_in]) + extra, [target] + list(n.outputs[1:]), n.name,
                 **attrs)
        if finish is not None:
            finish()
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, _dims(v, k))
           for k, v in model.inputs.items()]
    outs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(
        model.initializers[o].dtype) if o in model.initializers else TensorProto.FLOAT,
        _dims(model.shapes[o])) for o in model.outputs]
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
