"""4-bit Linear (int4 blocks of 32, int8 per-row activations) against NumPy float32 and ONNX
Runtime's com.microsoft MatMulNBits (bits=4, block_size=32, accuracy_level=4: int8 compute),
the same weights on both; and the int8 per-token Linear against the per-tensor one.

LLaMA-7B shapes: M = 1 (decoding) and M = 128 (prefill) rows, K = 4096, N = 4096 / 11008.
Ratios of medians, alternating in one run, 1 and 2 threads on every side (threadpoolctl pins
NumPy's BLAS, intra_op_num_threads ONNX Runtime's).
"""
import argparse

import _util  # noqa: F401  (first: unsets OPENBLAS_CORETYPE, puts the built tree on the path)
import numpy as np

import quantc as qc
from _util import blas_info, ort_session, peer_missing, print_table, threads, \
    time_alternating, write_json

SHAPES = [(1, 4096, 4096), (1, 4096, 11008), (128, 4096, 4096)]
BLOCK = 32


def matmulnbits_model(qt, n, k):
    """A MatMulNBits node holding qt's int4 blocks: u = q + 8 (zero point 8, the default when
    the node has no zero_points input), two per byte, first value in the low nibble."""
    from onnx import TensorProto, helper, numpy_helper
    nb = -(-k // BLOCK)
    u = np.full((n, nb * BLOCK), 8, np.uint8)
    u[:, :k] = np.asarray(qt.q).astype(np.int16).reshape(n, k) + 8
    u = u.reshape(n, nb, BLOCK // 2, 2)
    blob = (u[..., 0] | (u[..., 1] << 4)).astype(np.uint8)
    b = numpy_helper.from_array(blob, "B")
    s = numpy_helper.from_array(np.asarray(qt.scale, np.float32).reshape(n * nb), "scales")
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
                            K=k, N=n, bits=4, block_size=BLOCK, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT,
                                                                         [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
                              [b, s])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("com.microsoft", 1)])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--settle", type=float, default=0.25,
                    help="seconds of pause before each sample: longer than OpenBLAS's idle "
                         "spin (2^28 cycles by default), whose spinning thread would otherwise "
                         "take a core from the next library timed on 2 threads")
    ap.add_argument("--shapes", type=int, nargs="*", help="indices into SHAPES (default: all)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true",
                    help="3 samples per side and the M = 1 shapes only (as run_all.py --quick)")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 3
        args.shapes = args.shapes or [0, 1]
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
        have_ort = True
    except ImportError:
        peer_missing("onnxruntime")
        have_ort = False
    from quantc.weights import _quantize_tensor
    info = qc.cpu_info()["kernels"]
    print(f"quantc kernels: q4gemm {info['q4gemm']}, gemm {info['gemm']}")
    print(f"NumPy BLAS: {blas_info()}")
    rng = np.random.default_rng(0)
    rows, results = [], []
    shapes = [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    for m, k, n in shapes:
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        qt = _quantize_tensor("w", w, "int4", "per_block", 1, BLOCK, True, True, "minmax",
                              99.99)[0]
        layer = qc.Linear.from_quantized(qt, act_granularity="per_row")
        sess = ort_session(matmulnbits_model(qt, n, k), 1) if have_ort else None
        if sess is not None:  # the same weights: both close to the float product
            y_o = sess.run(None, {"A": x})[0]
            y_q = layer(x)
            rel = np.linalg.norm(y_o - y_q) / np.linalg.norm(y_q)
            assert rel < 0.02, f"MatMulNBits and quantc disagree: relative difference {rel}"
        for t in args.threads:
            with threads(t):
                fns = {"numpy": (lambda: w @ x[0]) if m == 1 else (lambda: x @ w.T),
                       "quantc": lambda: layer(x)}
                if have_ort:
                    s = ort_session(matmulnbits_model(qt, n, k), t)
                    fns["ort"] = lambda s=s: s.run(None, {"A": x})
                tm = time_alternating(fns, repeats=args.repeats, settle=args.settle)
            r = {"threads": t, "m": m, "k": k, "n": n, **{f"{a}_ms": v * 1e3 for a, v in tm.items()}}
            results.append(r)
            rows.append([t, f"{m}x{k}x{n}", tm["numpy"] * 1e3, tm.get("ort", float("nan")) * 1e3,
                         tm["quantc"] * 1e3, tm["numpy"] / tm["quantc"],
                         tm["ort"] / tm["quantc"] if have_ort else float("nan"),
                         2 * m * n * k / tm["quantc"] * 1e-9])
    print_table("4-bit block-32 Linear (int8 per-row activations) vs NumPy float32 and ORT "
                "MatMulNBits (accuracy_level=4)",
                ["threads", "MxKxN", "numpy ms", "ort ms", "quantc ms", "x numpy", "x ort",
                 "GOP/s"], rows)

    rows8 = []
    for m, k, n in [(1, 4096, 4096), (128, 768, 3072), (128, 4096, 4096)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        lt = qc.Linear.from_float(w)
        lr = qc.Linear.from_float(w, act_granularity="per_row")
        for t in args.threads:
            with threads(t):
                tm = time_alternating({"per_tensor": lambda: lt(x), "per_row": lambda: lr(x)},
                                      repeats=args.repeats, settle=args.settle)
            rows8.append([t, f"{m}x{k}x{n}", tm["per_tensor"] * 1e3, tm["per_row"] * 1e3,
                          tm["per_row"] / tm["per_tensor"]])
            results.append({"threads": t, "m": m, "k": k, "n": n, "int8_per_tensor_ms":
                            tm["per_tensor"] * 1e3, "int8_per_row_ms": tm["per_row"] * 1e3})
    print_table("int8 Linear: per-row (per-token) activations vs per-tensor (time ratio, "
                "1.0 = same)", ["threads", "MxKxN", "per_tensor ms", "per_row ms", "ratio"],
                rows8)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
