"""Speed of qlinear_conv (ResNet-50 / MobileNetV2 layers), pooling/add/concat bandwidth, and
qlinear_add / qlinear_mul against onnxruntime.

Conv table: qlinear_conv (weights prepacked) against a float32 NumPy im2col + matmul
convolution, torch float32 conv2d and onnxruntime QLinearConv (when installed), all in one
process, alternating, same thread count; ratios are baseline time / quantc time.
Bandwidth table: GB/s of bytes read + written against np.copyto on the same bytes.
Add / mul table: microseconds per call and ratios against onnxruntime's QLinearAdd /
QLinearMul (com.microsoft) and a NumPy dequantize -> op -> quantize.

    python benchmarks/bench_conv.py [--quick] [--json PATH] [--threads 1,2] [--match TEXT]
"""
import argparse
import os
import sys

# Runs alternate between libraries, and each library's idle threads may spin for a while after
# a call (quantc's for 0.2 ms; ONNX Runtime's and OpenMP's by default): time_alternating pauses
# before each sample so they sleep before the next library is timed. OpenBLAS alone spins ~2^28
# cycles by default, longer than that pause (it halved quantc's 2-thread numbers measured right
# after NumPy); 2^19 cycles (~0.15 ms) puts it with the others. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "19")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402  (first: fixes the BLAS environment, finds the in-place build)
from _util import blas_info, print_table, threads, time_alternating, write_json  # noqa: E402

import numpy as np  # noqa: E402

import quantc as qc  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
    _util.peer_missing("torch")
try:
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError:  # pragma: no cover
    ort = None
    _util.peer_missing("onnxruntime")

# name, C, M, H(=W), k, stride, group
LAYERS = [
    ("resnet50 3x3 64->64 @56", 64, 64, 56, 3, 1, 1),
    ("resnet50 1x1 256->64 @56", 256, 64, 56, 1, 1, 1),
    ("resnet50 3x3/2 128->128 @56", 128, 128, 56, 3, 2, 1),
    ("resnet50 1x1 1024->256 @14", 1024, 256, 14, 1, 1, 1),
    ("mbv2 dw3x3 32 @112", 32, 32, 112, 3, 1, 32),
    ("mbv2 dw3x3 576 @14", 576, 576, 14, 3, 1, 576),
    ("mbv2 1x1 24->144 @56", 24, 144, 56, 1, 1, 1),
    ("mbv2 1x1 96->576 @14", 96, 576, 14, 1, 1, 1),
    ("resnext50 3x3 g32 128->128 @56", 128, 128, 56, 3, 1, 32),
    ("resnext50 3x3 g32 512->512 @14", 512, 512, 14, 3, 1, 32),
    # the ResNet-18 / MobileNetV2 layers of the full-integer model benchmark (224^2 input)
    ("resnet18 stem 7x7/2 3->64 @224", 3, 64, 224, 7, 2, 1),
    ("resnet18 3x3 64->64 @56", 64, 64, 56, 3, 1, 1),
    ("resnet18 3x3/2 128->128 @28", 128, 128, 28, 3, 2, 1),
    ("resnet18 3x3 256->256 @14", 256, 256, 14, 3, 1, 1),
    ("resnet18 3x3 512->512 @7", 512, 512, 7, 3, 1, 1),
    ("mbv2 first 3x3/2 3->32 @224", 3, 32, 224, 3, 2, 1),
    ("mbv2 dw3x3/2 96 @112", 96, 96, 112, 3, 2, 96),
    ("mbv2 dw3x3 144 @56", 144, 144, 56, 3, 1, 144),
    ("mbv2 dw3x3/2 144 @56", 144, 144, 56, 3, 2, 144),
    ("mbv2 dw3x3 192 @28", 192, 192, 28, 3, 1, 192),
    ("mbv2 dw3x3/2 192 @28", 192, 192, 28, 3, 2, 192),
    ("mbv2 dw3x3 384 @14", 384, 384, 14, 3, 1, 384),
    ("mbv2 dw3x3/2 576 @14", 576, 576, 14, 3, 2, 576),
    ("mbv2 dw3x3 960 @7", 960, 960, 7, 3, 1, 960),
]
QUICK = {"resnet50 3x3 64->64 @56", "resnet50 1x1 256->64 @56", "mbv2 dw3x3 32 @112",
         "resnet18 stem 7x7/2 3->64 @224", "mbv2 first 3x3/2 3->32 @224", "mbv2 dw3x3 144 @56",
         "mbv2 dw3x3 960 @7"}


def numpy_conv(x, w, stride, pad, group):
    """float32 im2col (sliding_window_view copy) + matmul, per group."""
    N, C, H, W = x.shape
    M, Cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride,
                                                                            ::stride]
    OH, OW = win.shape[2:4]
    outs = []
    Ng = M // group
    for g in range(group):
        cols = win[:, g * Cg:(g + 1) * Cg].transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW,
                                                                             Cg * k * k)
        outs.append(cols @ w[g * Ng:(g + 1) * Ng].reshape(Ng, -1).T)
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]
    return y.reshape(N, OH, OW, M).transpose(0, 3, 1, 2)


def ort_session(x, w, xs, xzp, ws, wzp, ys, yzp, bias, stride, pad, group, nthreads):
    k = w.shape[2]
    inits = [helper.make_tensor("xs", TensorProto.FLOAT, [], [float(xs)]),
             helper.make_tensor("xzp", TensorProto.UINT8, [], [int(xzp)]),
             helper.make_tensor("w", TensorProto.INT8, w.shape, w.tobytes(), raw=True),
             helper.make_tensor("ws", TensorProto.FLOAT, [len(ws)], ws.tolist()),
             helper.make_tensor("wzp", TensorProto.INT8, [len(wzp)], wzp.tolist()),
             helper.make_tensor("ys", TensorProto.FLOAT, [], [float(ys)]),
             helper.make_tensor("yzp", TensorProto.UINT8, [], [int(yzp)]),
             helper.make_tensor("b", TensorProto.INT32, [len(bias)], bias.tolist())]
    node = helper.make_node("QLinearConv", ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"],
                            ["y"], strides=[stride, stride], pads=[pad] * 4, group=group,
                            kernel_shape=[k, k])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8, x.shape)], [helper.make_tensor_value_info(
            "y", TensorProto.UINT8, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = _util.ort_session(model, nthreads)
    return lambda: sess.run(None, {"x": x})


def bench_conv(layers, batches, nthreads, repeats, results):
    rows = []
    rng = np.random.default_rng(0)
    for name, C, M, H, k, stride, group in layers:
        for N in batches:
            pad = k // 2
            x = rng.integers(0, 256, (N, C, H, H), dtype=np.uint8)
            w = rng.integers(-127, 128, (M, C // group, k, k), dtype=np.int8)
            xs, xzp = np.float32(0.02), np.uint8(128)
            ws = rng.uniform(0.001, 0.01, M).astype(np.float32)
            wzp = np.zeros(M, np.int8)
            ys, yzp = np.float32(0.5), np.uint8(128)
            bias = rng.integers(-1000, 1000, M).astype(np.int32)
            packed = qc.pack_conv_weight(w, wzp, group=group)
            xf = ((x.astype(np.float32) - 128) * xs)
            wf = w.astype(np.float32) * ws.reshape(-1, 1, 1, 1)
            fns = {"quantc": lambda: qc.qlinear_conv(x, xs, xzp, packed, ws, None, ys, yzp,
                                                     bias, strides=(stride, stride),
                                                     pads=(pad,) * 4, group=group),
                   "numpy": lambda: numpy_conv(xf, wf, stride, pad, group)}
            if torch is not None:
                xt, wt = torch.from_numpy(xf), torch.from_numpy(wf)

                def run_torch(xt=xt, wt=wt, stride=stride, pad=pad, group=group):
                    with torch.no_grad():
                        return torch.nn.functional.conv2d(xt, wt, None, stride, pad, 1, group)
                fns["torch"] = run_torch
            if ort is not None:
                fns["ort"] = ort_session(x, w, xs, xzp, ws, wzp, ys, yzp, bias, stride, pad,
                                         group, nthreads)
            with threads(nthreads):
                t = time_alternating(fns, repeats=repeats)
            OH = (H + 2 * pad - k) // stride + 1
            ops = 2.0 * N * M * OH * OH * (C // group) * k * k
            row = [name, N, nthreads, ops / t["quantc"] / 1e9, t["numpy"] / t["quantc"]]
            row.append(t["torch"] / t["quantc"] if "torch" in t else "-")
            row.append(t["ort"] / t["quantc"] if "ort" in t else "-")
            rows.append(row)
            results.append({"layer": name, "batch": N, "threads": nthreads,
                            "seconds": t, "gops_quantc": ops / t["quantc"] / 1e9})
    print_table(f"qlinear_conv, {nthreads} thread(s): GOP/s and speedup (baseline time / "
                "quantc time)", ["layer", "N", "thr", "GOP/s", "x numpy-f32", "x torch-f32",
                                 "x ort-qconv"], rows)


def bench_bandwidth(shape, nthreads, repeats, results):
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, shape, dtype=np.uint8)
    q2 = rng.integers(0, 256, shape, dtype=np.uint8)
    half = (shape[0], shape[1] // 2) + shape[2:]
    h1 = rng.integers(0, 256, half, dtype=np.uint8)
    h2 = rng.integers(0, 256, half, dtype=np.uint8)
    dst = np.empty_like(q)
    mp_out = qc.max_pool2d(q, 3, strides=2, pads=(1, 1, 1, 1))
    ap_out = qc.avg_pool2d(q, 0.1, 128, 0.1, 128, 3, strides=2, pads=(1, 1, 1, 1))
    gp_out = qc.global_avg_pool(q, 0.1, 128, 0.1, 128)
    add_out = np.empty_like(q)
    cat_out = np.empty_like(q)
    ops = {
        "max_pool2d 3x3/2": (lambda: qc.max_pool2d(q, 3, strides=2, pads=(1, 1, 1, 1),
                                                   out=mp_out), q.nbytes + mp_out.nbytes),
        "max_pool2d 2x2/2": (lambda: qc.max_pool2d(q, 2), q.nbytes + q.nbytes // 4),
        "avg_pool2d 3x3/2": (lambda: qc.avg_pool2d(q, 0.1, 128, 0.1, 128, 3, strides=2,
                                                   pads=(1, 1, 1, 1), out=ap_out),
                             q.nbytes + ap_out.nbytes),
        "global_avg_pool": (lambda: qc.global_avg_pool(q, 0.1, 128, 0.1, 128, out=gp_out),
                            q.nbytes),
        "qlinear_add": (lambda: qc.qlinear_add(q, 0.1, 128, q2, 0.2, 120, 0.25, np.uint8(128),
                                               out=add_out), 3 * q.nbytes),
        "qlinear_concat (requant)": (lambda: qc.qlinear_concat(
            [(h1, 0.1, 128), (h2, 0.2, 120)], 0.25, np.uint8(128), out=cat_out), 2 * q.nbytes),
        "qlinear_concat (copy)": (lambda: qc.qlinear_concat(
            [(h1, 0.1, 128), (h2, 0.1, 128)], 0.1, np.uint8(128), out=cat_out), 2 * q.nbytes),
    }
    rows = []
    for name, (fn, nbytes) in ops.items():
        with threads(nthreads):
            t = time_alternating({"op": fn, "copy": lambda: np.copyto(dst, q)}, repeats=repeats)
        op_gbs = nbytes / t["op"] / 1e9
        copy_gbs = 2 * q.nbytes / t["copy"] / 1e9
        rows.append([name, nthreads, op_gbs, copy_gbs, op_gbs / copy_gbs])
        results.append({"op": name, "threads": nthreads, "gbs": op_gbs, "copy_gbs": copy_gbs})
    print_table(f"bandwidth, {shape} uint8, {nthreads} thread(s)",
                ["op", "thr", "GB/s", "copy GB/s", "ratio"], rows)


def ort_binary(op, a, b, nthreads):
    """An onnxruntime session of com.microsoft QLinearAdd / QLinearMul on uint8 a, b with the
    scales and zero points of bench_binary."""
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v])
             for n, v in (("as", 0.1), ("bs", 0.2), ("ys", 0.25))]
    inits += [helper.make_tensor(n, TensorProto.UINT8, [], [v])
              for n, v in (("az", 128), ("bz", 120), ("yz", 128))]
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"],
                            domain="com.microsoft")
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape),
        helper.make_tensor_value_info("b", TensorProto.UINT8, b.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    sess = _util.ort_session(model, nthreads)
    return lambda: sess.run(None, {"a": a, "b": b})


def bench_binary(nthreads, repeats, results):
    """qlinear_add / qlinear_mul (onnxruntime arithmetic, then the reference one) against
    onnxruntime's QLinearAdd / QLinearMul and DequantizeLinear -> float op -> QuantizeLinear in
    NumPy, on a MobileNetV2 residual (same shapes) and a squeeze-and-excitation gate
    ((N, C, H, W) times (N, C, 1, 1))."""
    rng = np.random.default_rng(2)
    cases = [("add", (8, 32, 28, 28), (8, 32, 28, 28)), ("mul", (8, 32, 28, 28), (8, 32, 28, 28)),
             ("mul", (8, 576, 14, 14), (8, 576, 1, 1)), ("mul", (1, 96, 112, 112), (1, 96, 1, 1))]
    rows = []
    for op, sa, sb in cases:
        a = rng.integers(0, 256, sa, dtype=np.uint8)
        b = rng.integers(0, 256, sb, dtype=np.uint8)
        f = qc.qlinear_add if op == "add" else qc.qlinear_mul
        args = (a, 0.1, np.uint8(128), b, 0.2, np.uint8(120), 0.25, np.uint8(128))
        npop = np.add if op == "add" else np.multiply
        fns = {"quantc": lambda: f(*args, arithmetic="onnxruntime"),
               "quantc-ref": lambda: f(*args),
               "numpy": lambda: qc.quantize(npop(qc.dequantize(a, 0.1, np.uint8(128)),
                                                 qc.dequantize(b, 0.2, np.uint8(120))),
                                            0.25, np.uint8(128))}
        if ort is not None:
            fns["ort"] = ort_binary("QLinearAdd" if op == "add" else "QLinearMul", a, b,
                                    nthreads)
        with threads(nthreads):
            t = time_alternating(fns, repeats=repeats)
        name = f"qlinear_{op} {'x'.join(map(str, sa))}" + ("" if sa == sb else " by gate")
        rows.append([name, nthreads, t["quantc"] * 1e6, t["quantc-ref"] * 1e6,
                     t["numpy"] / t["quantc"],
                     t["ort"] / t["quantc"] if "ort" in t else "-"])
        results.append({"op": name, "threads": nthreads, "seconds": t})
    print_table(f"quantized add / mul, {nthreads} thread(s): us per call; ratios are baseline "
                "time / quantc time (onnxruntime arithmetic)",
                ["op", "thr", "quantc us", "reference us", "x numpy dq-op-q", "x ort"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seven layers, batch 1, fewer repeats")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (1,all)")
    ap.add_argument("--match", metavar="TEXT", help="only the conv layers whose name contains "
                    "TEXT (e.g. 'mbv2 dw'), and no bandwidth table")
    args = ap.parse_args(argv)
    ncpu = os.cpu_count() or 1
    counts = ([int(t) for t in args.threads.split(",")] if args.threads
              else sorted({1, ncpu}))
    layers = [row for row in LAYERS if row[0] in QUICK] if args.quick else LAYERS
    if args.match:
        layers = [row for row in layers if args.match in row[0]]
    batches = [1] if args.quick else [1, 8]
    repeats = 3 if args.quick else 7
    shape = (16, 64, 256, 256) if not args.quick else (4, 64, 112, 112)
    print(f"# quantc {qc.cpu_info()['kernels']}")
    print(f"# BLAS: {blas_info()}")
    print(f"# torch: {torch.__version__ if torch else 'not installed'}; onnxruntime: "
          f"{ort.__version__ if ort else 'not installed'}")
    results = {"conv": [], "bandwidth": [], "binary": []}
    for n in counts:
        bench_conv(layers, batches, n, repeats, results["conv"])
    for n in counts if not args.match else []:
        bench_bandwidth(shape, n, repeats, results["bandwidth"])
    for n in counts if not args.match else []:
        bench_binary(n, repeats, results["binary"])
    write_json(args.json, results)


if __name__ == "__main__":
    main()
