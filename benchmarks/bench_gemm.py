"""int8 GEMM speed: quantc vs NumPy float32 matmul (same run, same threads) and int8 peers.

Rows: 2048^3, BERT/MiniLM linear layers (M tokens x K x N), and Linear at M=1 with a
4096x4096 weight against a float32 matvec. B is prepacked (qc.pack_matrix, ORT constant
initializer, torch prepacked dynamic Linear). GOP/s counts 2*M*N*K for every column.
Run: python benchmarks/bench_gemm.py [--quick] [--json PATH] [--threads 1,2]
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
import _util  # noqa: E402  (first: fixes the BLAS environment before NumPy loads)

import numpy as np  # noqa: E402

import quantc as qc  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - optional peer
    torch = None
    _util.peer_missing("torch")
try:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # pragma: no cover - optional peer
    ort = None
    _util.peer_missing("onnxruntime")


def ort_matmul_integer(b, threads):
    """An ORT session computing MatMulInteger(A, B_const, a_zero_point) (B prepacked by ORT)."""
    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])],
        initializer=[numpy_helper.from_array(b, "b"),
                     numpy_helper.from_array(np.array(3, np.uint8), "za")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = _util.ort_session(model, threads)
    return lambda a: sess.run(None, {"a": a})[0]


def bench_gemm(m, k, n, threads, rng, repeats):
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    packed = qc.pack_matrix(b)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    za = np.uint8(3)
    fns = {"numpy_f32": lambda: af @ bf, "quantc": lambda: qc.matmul_integer(a, packed, za)}
    if ort is not None:
        run = ort_matmul_integer(b, threads)
        fns["ort"] = lambda: run(a)
    if torch is not None:
        ta = torch.from_numpy(a.astype(np.int8))
        tb = torch.from_numpy(b)
        fns["torch_int_mm"] = lambda: torch._int_mm(ta, tb)
    with _util.threads(threads):
        times = _util.time_alternating(fns, repeats=repeats)
    return times, packed


def bench_linear(m, k, n, threads, rng, repeats):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    layer = qc.Linear.from_float(w, bias)
    wt = np.ascontiguousarray(w.T)
    fns = {"numpy_f32": lambda: x @ wt + bias, "quantc": lambda: layer(x)}
    if torch is not None:
        import torch.ao.nn.quantized.dynamic as dq
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tl = dq.Linear(k, n, dtype=torch.qint8)
            scales = torch.from_numpy((np.abs(w).max(1) / 127).astype(np.float64))
            qw = torch.quantize_per_channel(torch.from_numpy(w), scales,
                                            torch.zeros(n, dtype=torch.long), 0, torch.qint8)
            tl.set_weight_bias(qw, torch.from_numpy(bias))
        tx = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                return tl(tx)
        fns["torch_dynamic"] = run_torch
    with _util.threads(threads):
        return _util.time_alternating(fns, repeats=repeats)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    repeats = 3 if args.quick else 7
    thread_list = [int(t) for t in args.threads.split(",")]

    info = qc.cpu_info()
    print(f"quantc gemm kernel: {info['kernels']['gemm']} (cap {info['isa_cap']}); "
          f"BLAS: {_util.blas_info()}")
    peers = ["ort"] if ort is not None else []
    peers += ["torch_int_mm"] if torch is not None else []

    shapes = [("square", 2048, 2048, 2048)]
    tokens = [1, 32, 128, 512] if not args.quick else [1, 128]
    kns = [(384, 1536), (768, 768), (768, 3072), (3072, 768)]
    if args.quick:
        kns = [(768, 768), (768, 3072)]
    shapes += [(f"bert {k}x{n}", m, k, n) for k, n in kns for m in tokens]

    results = []
    header = ["shape", "M", "K", "N", "thr", "f32 GFLOP/s", "quantc GOP/s", "x f32"]
    header += [f"{p} GOP/s" for p in peers] + [f"x {p}" for p in peers]
    rows = []
    mem_rows = []
    for name, m, k, n in shapes:
        for t in thread_list:
            times, packed = bench_gemm(m, k, n, t, rng, repeats)
            ops = 2.0 * m * n * k
            r = [name, m, k, n, t, ops / times["numpy_f32"] / 1e9, ops / times["quantc"] / 1e9,
                 times["numpy_f32"] / times["quantc"]]
            r += [ops / times[p] / 1e9 for p in peers] + [times[p] / times["quantc"]
                                                         for p in peers]
            rows.append(r)
            results.append({"kind": "gemm", "shape": name, "m": m, "k": k, "n": n, "threads": t,
                            "seconds": times})
        if (k, n) not in [(r[1], r[2]) for r in mem_rows]:
            mem_rows.append([f"{k}x{n}", k, n, packed.nbytes, packed.data_nbytes,
                             packed.nbytes - packed.data_nbytes,
                             packed.data_nbytes / (k * n)])
    _util.print_table("matmul_integer (uint8 A x prepacked int8 B -> int32) vs float32 matmul",
                      header, rows)

    lin_peers = ["torch_dynamic"] if torch is not None else []
    lrows = []
    lin_shapes = [(1, 4096, 4096)] + ([] if args.quick else [(32, 768, 3072), (128, 768, 768)])
    for m, k, n in lin_shapes:
        for t in thread_list:
            times = bench_linear(m, k, n, t, rng, repeats)
            ops = 2.0 * m * n * k
            r = [m, k, n, t, ops / times["numpy_f32"] / 1e9, ops / times["quantc"] / 1e9,
                 times["numpy_f32"] / times["quantc"]]
            r += [ops / times[p] / 1e9 for p in lin_peers]
            r += [times[p] / times["quantc"] for p in lin_peers]
            lrows.append(r)
            results.append({"kind": "linear", "m": m, "k": k, "n": n, "threads": t,
                            "seconds": times})
    _util.print_table("Linear (float in/out, dynamic uint8 activations) vs float32 x @ W.T + b",
                      ["M", "K", "N", "thr", "f32 GFLOP/s", "quantc GOP/s", "x f32"]
                      + [f"{p} GOP/s" for p in lin_peers] + [f"x {p}" for p in lin_peers],
                      lrows)
    _util.print_table("pack_matrix memory (limit: K*N*1.1 + column sums)",
                      ["B", "K", "N", "nbytes", "data", "colsums", "data/(K*N)"], mem_rows)
    _util.write_json(args.json, {"cpu": info, "blas": _util.blas_info(), "results": results})


if __name__ == "__main__":
    main()
