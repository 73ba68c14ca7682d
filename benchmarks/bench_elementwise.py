"""Element-wise quantization speed: quantize / dequantize / choose_qparams vs NumPy and copy.

Ratios are measured in one run, baseline and candidate alternating (benchmarks/_util.py):
- quantize per-tensor, float32 -> int8: speed-up over the NumPy expression
  ``np.clip(np.rint(x / s) + zp, qmin, qmax).astype(np.int8)``, and bytes moved per second
  (4 read + 1 written per element) against a same-run ``np.copyto`` of the float32 array
  (8 bytes moved per element);
- per-channel (axis 0 of a 4096 x 16384 matrix) time against per-tensor on the same matrix;
- dequantize (1 read + 4 written) and choose_qparams (one min/max pass, 4 read) GB/s vs copy;
- a 1,000-element quantize call against ``np.multiply(x, s)`` on the same array.

Usage: python benchmarks/bench_elementwise.py [--quick] [--json PATH]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402  (first: fixes the BLAS environment before NumPy loads)

import numpy as np  # noqa: E402

import quantc as qc  # noqa: E402


def run(n_threads, rows_m, cols, repeats):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows_m, cols), dtype=np.float32) * 3)
    n = x.size
    s, zp = np.float32(0.02), 3
    copy_dst = np.empty_like(x)
    q_out = np.empty(x.shape, np.int8)
    y_out = np.empty_like(x)
    q = qc.quantize(x, s, zp)
    sc = np.full(rows_m, s, np.float32)
    zc = np.full(rows_m, zp, np.int8)
    small = x.ravel()[:1000].copy()

    def numpy_quantize():
        return np.clip(np.rint(x / s) + zp, -128, 127).astype(np.int8)

    with _util.threads(n_threads):
        t = _util.time_alternating({
            "copy": lambda: np.copyto(copy_dst, x),
            "numpy": numpy_quantize,
            "per_tensor": lambda: qc.quantize(x, s, zp, out=q_out),
            "per_channel": lambda: qc.quantize(x, sc, zc, axis=0, out=q_out),
            "dequantize": lambda: qc.dequantize(q, s, zp, out=y_out),
            "choose_qparams": lambda: qc.choose_qparams(x),
        }, repeats=repeats, min_time=0.2)
        ts = _util.time_alternating({
            "np.multiply": lambda: np.multiply(small, s),
            "quantize_1k": lambda: qc.quantize(small, s, zp),
        }, repeats=max(repeats, 7), min_time=0.05)
    gbs = lambda nbytes, sec: nbytes / sec / 1e9  # noqa: E731
    copy_gbs = gbs(8 * n, t["copy"])
    rows = [
        ["copy (np.copyto, 8 B/elem)", f"{t['copy'] * 1e3:.2f}", f"{copy_gbs:.2f}", "", ""],
        ["numpy quantize expression", f"{t['numpy'] * 1e3:.2f}", f"{gbs(5 * n, t['numpy']):.2f}",
         "", ""],
        ["quantize per-tensor (5 B/elem)", f"{t['per_tensor'] * 1e3:.2f}",
         f"{gbs(5 * n, t['per_tensor']):.2f}", f"{t['numpy'] / t['per_tensor']:.1f}x vs numpy",
         f"{gbs(5 * n, t['per_tensor']) / copy_gbs:.0%} of copy"],
        ["quantize per-channel axis 0", f"{t['per_channel'] * 1e3:.2f}",
         f"{gbs(5 * n, t['per_channel']):.2f}",
         f"{t['per_tensor'] / t['per_channel']:.0%} of per-tensor speed",
         f"{gbs(5 * n, t['per_channel']) / copy_gbs:.0%} of copy"],
        ["dequantize (5 B/elem)", f"{t['dequantize'] * 1e3:.2f}",
         f"{gbs(5 * n, t['dequantize']):.2f}", "",
         f"{gbs(5 * n, t['dequantize']) / copy_gbs:.0%} of copy"],
        ["choose_qparams (4 B/elem)", f"{t['choose_qparams'] * 1e3:.2f}",
         f"{gbs(4 * n, t['choose_qparams']):.2f}", "",
         f"{gbs(4 * n, t['choose_qparams']) / copy_gbs:.0%} of copy"],
        ["np.multiply, 1,000 elements", f"{ts['np.multiply'] * 1e6:.2f} us", "", "", ""],
        ["quantize, 1,000 elements", f"{ts['quantize_1k'] * 1e6:.2f} us", "",
         f"{ts['quantize_1k'] / ts['np.multiply']:.2f}x np.multiply time", ""],
    ]
    _util.print_table(f"{n_threads} thread(s), {rows_m}x{cols} float32 ({n / 2**20:.0f}M elements)",
                      ["op", "ms", "GB/s", "ratio", "bandwidth"], rows)
    return {"threads": n_threads, "shape": [rows_m, cols],
            "seconds": {**t, **ts},
            "ratios": {"quantize_vs_numpy": t["numpy"] / t["per_tensor"],
                       "quantize_bw_vs_copy": gbs(5 * n, t["per_tensor"]) / copy_gbs,
                       "per_channel_vs_per_tensor": t["per_tensor"] / t["per_channel"],
                       "dequantize_bw_vs_copy": gbs(5 * n, t["dequantize"]) / copy_gbs,
                       "choose_qparams_bw_vs_copy": gbs(4 * n, t["choose_qparams"]) / copy_gbs,
                       "small_call_vs_multiply": ts["quantize_1k"] / ts["np.multiply"]}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4M elements instead of 64M")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()
    rows_m, cols = (256, 16384) if args.quick else (4096, 16384)
    print(f"quantc kernels: {qc.cpu_info()['kernels']}")
    print(f"BLAS: {_util.blas_info()}")
    results = [run(n, rows_m, cols, 3 if args.quick else 5) for n in (1, 2)]
    _util.write_json(args.json, {"benchmark": "elementwise", "results": results})


if __name__ == "__main__":
    main()
