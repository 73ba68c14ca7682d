"""Weight dictionaries: size and SQNR per scheme, bundled accuracy, 1 GB file time and RSS.

    python benchmarks/bench_weights.py [--quick] [--json OUT.json]

1. The bundled digits CNN and a synthetic transformer-shaped dict (BERT-base-like 768/3072
   linear layers, row scales log-normal, a few outlier input columns): compression ratio
   (original bytes / quantized bytes) and median SQNR for per-tensor, per-channel and
   per-block 64/128 int8; bundled-model test accuracy with dequantized weights vs float.
2. A generated float32 .safetensors file (1 GB; 128 MB with --quick) in a temp dir:
   quantize_weights per-channel int8 vs just loading every tensor with safetensors, each in
   a fresh child process (page cache warmed first). Targets: time <= 2x load, peak RSS <=
   0.5 x file size + 100 MB. Peak RSS is the child's ru_maxrss, read by the parent through
   resource.getrusage(RUSAGE_CHILDREN) (the quantize child runs first, so the value is its
   own) and reported by the child itself. Temp files are deleted afterwards.
"""
import _util  # noqa: F401  (first: fixes the BLAS environment before NumPy loads)

import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

import quantc as qc  # noqa: E402
from quantc import examples  # noqa: E402

SCHEMES = [("per-tensor", dict(granularity="per_tensor")),
           ("per-channel", dict(granularity="per_channel")),
           ("per-block 64", dict(granularity="per_block", block_size=64)),
           ("per-block 128", dict(granularity="per_block", block_size=128))]


def transformer_dict(layers, vocab, rng, d=768, ffn=3072):
    def linear(out_f, in_f):
        w = rng.standard_normal((out_f, in_f), dtype=np.float32) * np.float32(0.02)
        w *= np.exp(rng.normal(0, 0.5, (out_f, 1))).astype(np.float32)   # uneven rows
        cols = rng.choice(in_f, max(1, in_f // 256), replace=False)
        w[:, cols] *= np.float32(8.0)                                     # outlier features
        return w
    w = {"embeddings.word": linear(vocab, d), "embeddings.norm.weight": np.ones(d, np.float32)}
    for i in range(layers):
        p = f"encoder.{i}."
        for n in ("q", "k", "v", "o"):
            w[p + f"attn.{n}.weight"] = linear(d, d)
            w[p + f"attn.{n}.bias"] = np.zeros(d, np.float32)
        w[p + "ffn.up.weight"] = linear(ffn, d)
        w[p + "ffn.down.weight"] = linear(d, ffn)
        w[p + "norm.weight"] = np.ones(d, np.float32)
    return w


def scheme_table(name, weights, accuracy=None):
    rows = []
    for label, kw in SCHEMES:
        t0 = time.perf_counter()
        qw = qc.quantize_weights(weights, progress=False, **kw)
        dt = time.perf_counter() - t0
        s = qw.report().summary()
        row = [label, f"{qw.compression_ratio:.2f}x", f"{s['size_pct']:.1f}%",
               f"{s['median_sqnr_db']:.1f}", f"{dt:.3f}"]
        if accuracy is not None:
            row.append(f"{accuracy(qw.dequantize()):.2%}")
        rows.append(row)
    header = ["scheme", "ratio", "size", "median SQNR dB", "seconds"]
    if accuracy is not None:
        header.append("accuracy")
        rows.insert(0, ["float32", "1.00x", "100.0%", "-", "-", f"{accuracy(weights):.2%}"])
    _util.print_table(name, header, rows)
    return [dict(zip(header, r)) for r in rows]


def write_big_file(path, n_tensors, rows, cols, rng):
    """A float32 .safetensors file written tensor by tensor (never all in memory)."""
    header, off = {}, 0
    nbytes = rows * cols * 4
    for i in range(n_tensors):
        header[f"layer.{i:02d}.weight"] = {"dtype": "F32", "shape": [rows, cols],
                                           "data_offsets": [off, off + nbytes]}
        off += nbytes
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for _ in range(n_tensors):
            rng.standard_normal((rows, cols), dtype=np.float32).tofile(f)


def child(mode, path):
    t0 = time.perf_counter()
    if mode == "load":
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            for k in f.keys():
                f.get_tensor(k)
    else:
        qw = qc.quantize_weights(path, granularity="per_channel", progress=False)
        assert qw.compression_ratio > 3.9
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(mode, path):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, path],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def big_file(quick, rng):
    n, rows, cols = (8, 2048, 2048) if quick else (16, 4096, 4096)
    tmp = tempfile.mkdtemp(prefix="quantc_bench_")
    try:
        path = os.path.join(tmp, "big.safetensors")
        write_big_file(path, n, rows, cols, rng)
        size_mb = os.path.getsize(path) / 2 ** 20
        with open(path, "rb") as f:  # warm the page cache without growing our own RSS
            while f.read(1 << 24):
                pass
        first = run_child("quantize", path)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        q_times, l_times = [first["seconds"]], []
        for _ in range(2 if quick else 3):
            l_times.append(run_child("load", path)["seconds"])
            q_times.append(run_child("quantize", path)["seconds"])
        l_times.append(run_child("load", path)["seconds"])
        tq, tl = statistics.median(q_times), statistics.median(l_times)
        budget = 0.5 * size_mb + 100
        rows_ = [["file", f"{size_mb:.0f} MB ({n} x {rows}x{cols} float32)"],
                 ["load every tensor (safetensors)", f"{tl:.3f} s"],
                 ["quantize_weights per-channel int8", f"{tq:.3f} s"],
                 ["time ratio (target <= 2x)", f"{tq / tl:.2f}x"],
                 ["peak RSS of the quantize child", f"{peak_mb:.0f} MB "
                                                    f"(self-reported {first['maxrss_mb']:.0f})"],
                 ["RSS budget 0.5 x file + 100 MB", f"{budget:.0f} MB "
                                                   f"({'met' if peak_mb <= budget else 'MISSED'})"]]
        _util.print_table("big .safetensors file", ["measure", "value"], rows_)
        return {"file_mb": size_mb, "load_s": tl, "quantize_s": tq, "time_ratio": tq / tl,
                "peak_rss_mb": peak_mb, "rss_budget_mb": budget}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    print(f"quantc weights benchmark ({'quick' if a.quick else 'full'}); "
          f"threads={qc.get_num_threads()}; {_util.blas_info()}")
    rng = np.random.default_rng(0)
    params = examples.digits_weights()
    images, labels = examples.digits_data()

    def accuracy(w):
        return float((examples.digits_model(w)(images).argmax(1) == labels).mean())

    out = {"bundled": scheme_table("bundled digits CNN (weights >= 1024 elements quantized; "
                                   "blocks run along the flattened input dimension)", params,
                                   accuracy)}
    td = transformer_dict(1 if a.quick else 4, 2000 if a.quick else 8000, rng)
    mb = sum(v.nbytes for v in td.values()) / 2 ** 20
    out["transformer"] = scheme_table(f"synthetic transformer dict ({len(td)} tensors, "
                                      f"{mb:.0f} MB float32)", td)
    del td
    out["big_file"] = big_file(a.quick, rng)
    _util.write_json(a.json, out)


if __name__ == "__main__":
    main()
