"""Read an ONNX file into a quantc :class:`~quantc.model.Model` (needs the ``onnx`` package).

The ONNX graph maps onto a Model one to one: graph inputs that are not initializers become
``inputs`` (a symbolic or unknown dimension becomes ``None``), initializers and ``Constant``
nodes become ``initializers``, every other node a :class:`~quantc.model.Node` with its
attributes as Python values. Only the default domain is read. Two older opsets differ from
the opset-13 semantics the Model runs: Clip before opset 11 takes ``min``/``max`` as
attributes (the Model accepts them), and Softmax before opset 13 flattens its input to 2-D at
``axis`` (default 1), which equals opset 13's Softmax only when ``axis`` is the last axis.
Tensors stored as external data (torch.onnx.export's default exporter writes its weights to
``MODEL.onnx.data``) are read from files in the model's own folder, after the ops are checked.
"""
import os

import numpy as np

from .model import SUPPORTED_OPS, Model, Node, namer

__all__ = ["model_from_onnx"]

_NEEDS_ONNX = "Model.from_onnx needs the 'onnx' package: pip install 'quantc[onnx]'"


def _name(node):
    """A NodeProto's name as quantc's Node names it ("Op_output" when it has none)."""
    return node.name or f"{node.op_type}_{node.output[0] if node.output else ''}"


def _node_err(node, msg):
    return ValueError(f"node {_name(node)!r} ({node.op_type}): {msg}")


def _used_by(graph, name):
    """' (input of node N (Op))' for the first node reading tensor `name`, for messages."""
    for n in graph.node:
        if name in n.input:
            return f" (input of node {_name(n)!r} ({n.op_type}))"
    return ""


def _load(model, onnx):
    """(ModelProto, label for messages): parsed and checked, a clear error if it is not ONNX."""
    if isinstance(model, onnx.ModelProto):
        proto, label = model, "model"
    elif isinstance(model, (str, os.PathLike)):
        label = os.fspath(model)
        if not os.path.isfile(label):
            raise FileNotFoundError(f"{label}: no such file")
        try:
            # external data is read below, with its location and sizes checked
            proto = onnx.load(label, load_external_data=False)
        except Exception as e:  # protobuf raises DecodeError, RuntimeWarning, ...
            raise ValueError(f"{label}: not a valid ONNX model ({type(e).__name__}: {e})") \
                from None
    else:
        raise TypeError(f"model: expected a path or an onnx.ModelProto, got "
                        f"{type(model).__name__}")
    # bytes that happen to parse (an empty file does) carry no IR version or graph; anything
    # deeper is checked node by node (onnx.checker would also refuse models onnxruntime runs)
    if proto.ir_version < 1 or not proto.graph.output:
        raise ValueError(f"{label}: not a valid ONNX model (no IR version or no graph outputs)")
    return proto, label


def _load_external(proto, model, label, onnx):
    """Read every tensor of ``proto`` stored as external data (see _read_external)."""
    base = None if isinstance(model, onnx.ModelProto) else os.path.dirname(os.path.abspath(label))
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(t, f"{label}: initializer {t.name!r}{_used_by(proto.graph, t.name)}",
                           base, onnx)
    for n in proto.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and \
                    a.t.data_location == onnx.TensorProto.EXTERNAL:
                _read_external(a.t, f"{label}: node {_name(n)!r} ({n.op_type}) attribute "
                                    f"{a.name}", base, onnx)


# bytes per element of the tensor types _array reads
_ITEMSIZE = {"FLOAT": 4, "DOUBLE": 8, "INT64": 8, "INT32": 4, "INT16": 2, "INT8": 1, "UINT8": 1}


def _read_external(t, what, base, onnx):
    """Fill TensorProto ``t``'s raw_data from its external data file (what torch.onnx.export
    writes beside the model: ``MODEL.onnx.data``), in place. The file must lie in the model's
    folder (a location that is absolute, climbs out with ``..`` or leads out through a link is
    refused) and the byte range [offset, offset + length) inside it, ``length`` the tensor's
    size; read with plain file reads. ``base``: the model's folder (None: the model was given
    as a ModelProto, whose external data has no folder to be read from)."""
    T = onnx.TensorProto
    name = T.DataType.Name(t.data_type) if t.data_type in T.DataType.values() else None
    if name not in _ITEMSIZE:
        return  # _array names the unsupported type, before any byte is read
    if base is None:
        raise ValueError(f"{what} is stored as external data: pass the file's path, or load "
                         f"it with onnx.load(path), which reads that data")
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    parts = loc.replace("\\", "/").split("/")
    if not loc or os.path.isabs(loc) or ".." in parts or "\0" in loc:
        raise ValueError(f"{what}: external data location {loc!r} is not a file name in the "
                         f"model's folder")
    path = os.path.join(base, *parts)
    real_base = os.path.realpath(base)
    if os.path.commonpath([os.path.realpath(path), real_base]) != real_base:
        raise ValueError(f"{what}: external data location {loc!r} leads out of the model's "
                         f"folder")
    if not os.path.exists(path):
        raise ValueError(f"{what}: external data file {path} not found")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: external data file {path} is not a regular file")
    try:
        offset = int(info.get("offset", 0))
        size = _ITEMSIZE[name]
        for d in t.dims:
            size *= int(d)  # Python ints: no wraparound
        length = int(info.get("length", size))
    except ValueError:
        raise ValueError(f"{what}: external data offset/length {info.get('offset')!r}/"
                         f"{info.get('length')!r} are not integers") from None
    if any(d < 0 for d in t.dims):
        raise ValueError(f"{what}: expected dimensions >= 0, got {list(t.dims)}")
    if length != size or offset < 0:
        raise ValueError(f"{what}: external data of {length} bytes at offset {offset}, the "
                         f"shape {list(t.dims)} of {name} needs {size} bytes")
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        if offset + length > end:
            raise ValueError(f"{what}: external data bytes [{offset}, {offset + length}) lie "
                             f"past the end of {path} ({end} bytes)")
        f.seek(offset)
        raw = f.read(length)
    if len(raw) != length:
        raise ValueError(f"{what}: could read only {len(raw)} of {length} bytes of {path}")
    t.raw_data = raw
    del t.external_data[:]
    t.data_location = T.DEFAULT


def _array(t, what, onnx):
    """A TensorProto as float32 (float types) or int64 (integer types) NumPy array."""
    T = onnx.TensorProto
    if t.data_type in (T.FLOAT, T.DOUBLE):
        dtype = np.float32
    elif t.data_type in (T.INT64, T.INT32, T.INT16, T.INT8, T.UINT8):
        dtype = np.int64
    else:
        kind = T.DataType.Name(t.data_type) if t.data_type in T.DataType.values() else \
            f"{t.data_type} (unknown)"
        raise ValueError(f"{what}: data type {kind} is not supported (expected FLOAT, DOUBLE "
                         f"or an integer type)")
    if any(d < 0 for d in t.dims):
        raise ValueError(f"{what}: expected dimensions >= 0, got {list(t.dims)}")
    try:
        a = onnx.numpy_helper.to_array(t)
    except (ValueError, TypeError) as e:  # raw_data or typed values that do not fill dims
        raise ValueError(f"{what}: the stored values do not match the shape {list(t.dims)} "
                         f"({e})") from None
    return a.astype(dtype)


def _attr(node, a, onnx):
    """One AttributeProto as a Python value (int, float, str or a list of them)."""
    A = onnx.AttributeProto
    if a.type not in (A.INT, A.FLOAT, A.STRING, A.INTS, A.FLOATS, A.STRINGS):
        raise _node_err(node, f"attribute {a.name}: type {A.AttributeType.Name(a.type)} is "
                              f"not supported")
    v = onnx.helper.get_attribute_value(a)
    try:
        if a.type == A.STRING:
            return v.decode()
        if a.type == A.STRINGS:
            return [s.decode() for s in v]
    except UnicodeDecodeError:
        raise _node_err(node, f"attribute {a.name}: expected UTF-8 text") from None
    return list(v) if a.type in (A.INTS, A.FLOATS) else v


def _constant(node, onnx):
    """The value of a Constant node as an array."""
    if len(node.attribute) != 1:
        raise _node_err(node, "expected exactly one value attribute")
    a = node.attribute[0]
    if a.name == "value":
        return _array(a.t, f"node {_name(node)!r} (Constant)", onnx)
    if a.name in ("value_float", "value_floats"):
        return np.asarray(_attr(node, a, onnx), np.float32)
    if a.name in ("value_int", "value_ints"):
        return np.asarray(_attr(node, a, onnx), np.int64)
    raise _node_err(node, f"attribute {a.name} is not supported")


def model_from_onnx(model):
    """A :class:`~quantc.model.Model` from an ONNX path or ``onnx.ModelProto``.

    Raises ValueError naming the node and op for an op, attribute or data type quantc does
    not run, or naming the file when it is not a valid ONNX model.
    """
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError:
        raise ImportError(_NEEDS_ONNX) from None
    proto, label = _load(model, onnx)
    g = proto.graph
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=0)

    # every op and domain first, before any tensor is converted
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            raise _node_err(n, f"domain {n.domain!r} is not supported (only the default ONNX "
                               f"domain)")
        if n.op_type != "Constant" and n.op_type not in SUPPORTED_OPS:
            raise _node_err(n, f"unsupported op {n.op_type!r} (supported: "
                               f"{', '.join(SUPPORTED_OPS)})")

    _load_external(proto, model, label, onnx)
    inits = {}
    for t in g.initializer:
        if t.name in inits:
            raise ValueError(f"{label}: initializer {t.name!r} is defined twice")
        inits[t.name] = _array(t, f"{label}: initializer {t.name!r}{_used_by(g, t.name)}", onnx)
    inputs = {}
    for vi in g.input:
        if vi.name in inits:
            continue  # IR < 4 lists initializers among the graph inputs
        if vi.name in inputs:
            raise ValueError(f"{label}: graph input {vi.name!r} is listed twice")
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type != onnx.TensorProto.FLOAT:
            kind = (onnx.TensorProto.DataType.Name(tt.elem_type)
                    if vi.type.HasField("tensor_type") else vi.type.WhichOneof("value"))
            raise ValueError(f"{label}: graph input {vi.name!r}{_used_by(g, vi.name)} is "
                             f"{kind}; only float32 graph inputs are supported")
        if not tt.HasField("shape"):
            raise ValueError(f"{label}: graph input {vi.name!r} has no shape")
        inputs[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                for d in tt.shape.dim)

    nodes, softmax_old = [], []
    # names: the given ones once each (ONNX allows repeats and none), then Op_output with a
    # counter where that is taken
    fresh = namer(n.name for n in g.node if n.name)
    given, graph_outputs = set(), {o.name for o in g.output}
    for n in g.node:
        if n.op_type in ("Constant", "Identity") and len(n.output) != 1:
            raise _node_err(n, f"expected 1 output, got {len(n.output)}")
        if n.op_type == "Constant":
            if n.output[0] in inits or n.output[0] in inputs:
                raise _node_err(n, f"output {n.output[0]!r} is defined twice")
            inits[n.output[0]] = _constant(n, onnx)
            continue
        if n.op_type == "Identity" and len(n.input) == 1 and n.input[0] in inits \
                and n.output[0] not in graph_outputs and n.output[0] not in inits \
                and n.output[0] not in inputs:
            # torch.onnx.export shares equal initializers through Identity nodes
            inits[n.output[0]] = inits[n.input[0]]
            continue
        attrs = {a.name: _attr(n, a, onnx) for a in n.attribute}
        if n.op_type == "Softmax" and opset < 13:
            attrs.setdefault("axis", 1)  # the old default, valid only as the last axis
            if not isinstance(attrs["axis"], int):
                raise _node_err(n, f"attribute axis: expected an int, got {attrs['axis']!r}")
            softmax_old.append((n, attrs["axis"]))
        name = n.name if n.name and n.name not in given else \
            fresh(f"{n.op_type}_{n.output[0] if n.output else ''}")
        given.add(name)
        nodes.append(Node(n.op_type, n.input, n.output, attrs, name))

    m = Model(inputs, nodes, [o.name for o in g.output], inits, name=g.name or "model")
    for n, axis in softmax_old:
        rank = len(m.shapes[n.input[0]])
        if axis % rank != rank - 1:
            raise _node_err(n, f"opset {opset} Softmax flattens the input to 2-D at axis "
                               f"{axis}; only the last axis (or a 2-D input with axis 1) is "
                               f"supported for rank {rank}: re-export with opset 13 or later")
    return m
