"""Linear with per-row (per-token) activations vs today's per-tensor Linear (same weights,
alternating in one process; ratio of medians). Shapes: BERT-base / MiniLM linear layers."""
import argparse
import time

import numpy as np

import _util  # noqa: F401  (puts the built source tree's quantc on the path)
import quantc as qc
from _util import write_json


def median_time(f, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="10 calls per sample (as run_all.py "
                    "--quick)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 10
    results = []
    rng = np.random.default_rng(0)
    print(f"kernel: {qc.cpu_info()['kernels']['gemm']}")
    print(f"{'threads':>7} {'M x K x N':>18} {'per_tensor us':>14} {'per_row us':>11} {'ratio':>6}")
    for t in args.threads:
        qc.set_num_threads(t)
        for m, k, n in [(1, 768, 768), (32, 384, 1536), (128, 768, 768), (128, 768, 3072),
                        (512, 384, 384)]:
            w = rng.standard_normal((n, k)).astype(np.float32)
            x = rng.standard_normal((m, k)).astype(np.float32)
            lt = qc.Linear.from_float(w)
            lr = qc.Linear.from_float(w, act_granularity="per_row")
            ts, tr = [], []
            for _ in range(5):  # alternate so drift hits both sides
                ts.append(median_time(lambda: lt(x), args.repeats))
                tr.append(median_time(lambda: lr(x), args.repeats))
            a, b = np.median(ts) * 1e6, np.median(tr) * 1e6
            print(f"{t:>7} {f'{m}x{k}x{n}':>18} {a:>14.1f} {b:>11.1f} {b / a:>6.3f}")
            results.append({"threads": t, "m": m, "k": k, "n": n, "per_tensor_us": a,
                            "per_row_us": b})
    write_json(args.json, results)


if __name__ == "__main__":
    main()
