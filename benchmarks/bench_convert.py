"""Conversion kernels vs NumPy: GB/s against a same-run np.copyto, and speedup over NumPy.

Each row times quantc and its NumPy equivalent alternating in one process (median of
repeats), with 1 and 2 threads. Bytes moved = bytes read + bytes written per element;
"% copy" compares quantc's GB/s with np.copyto of a float32 array of the same length
(8 bytes per element). Both sides write into preallocated outputs.

A second table (issue 10's speed target) times the low-bit quantizers at 1 thread on 64M
elements (``--lowbit-n``), each against np.copyto in the same alternating run: float32 ->
packed int4 (4 + 0.5 bytes per element), float32 -> each float8 format (4 + 1), bfloat16 ->
int8 (2 + 1), with the two-pass way (quantize, then pack_bits; widen to float32, then
quantize; ml_dtypes' cast of the clamped quotient) as the baseline.

    python benchmarks/bench_convert.py [--quick] [--n N] [--lowbit-n N] [--lowbit-only]
                                       [--json PATH]
"""
import _util  # noqa: I001 - must come first: fixes the BLAS environment before NumPy loads

import argparse

import numpy as np

import quantc as qc


def bf16_numpy(x, out):
    """The integer-arithmetic reference: round to nearest even on the bits (NaN ignored)."""
    b = x.view(np.uint32)
    np.right_shift(b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1)), 16, out=out, casting="unsafe")
    return out


def cases(n, rng):
    x = (rng.standard_normal(n) * 100).astype(np.float32)
    i32 = rng.integers(-1000, 1000, n, dtype=np.int32)
    bits = qc.to_bfloat16(x)
    f32 = np.empty(n, np.float32)
    i8 = np.empty(n, np.int8)
    f16 = np.empty(n, np.float16)
    u16 = np.empty(n, np.uint16)
    i32o = np.empty(n, np.int32)
    rows = [
        # name, quantc fn, numpy fn, numpy label, bytes per element
        ("round half_even", lambda: qc.round(x, out=f32), lambda: np.rint(x, out=f32), "np.rint", 8),
        ("round half_up", lambda: qc.round(x, "half_up", out=f32),
         lambda: np.floor(np.add(x, np.float32(0.5), out=f32), out=f32), "np.floor(x+0.5)", 8),
        ("round floor", lambda: qc.round(x, "floor", out=f32), lambda: np.floor(x, out=f32),
         "np.floor", 8),
        ("clamp f32", lambda: qc.clamp(x, -50.0, 50.0, out=f32),
         lambda: np.clip(x, np.float32(-50), np.float32(50), out=f32), "np.clip", 8),
        ("clamp int32", lambda: qc.clamp(i32, -100, 100, out=i32o),
         lambda: np.clip(i32, -100, 100, out=i32o), "np.clip", 8),
        ("saturate_cast i32->i8", lambda: qc.saturate_cast(i32, "int8", out=i8),
         lambda: np.copyto(i8, np.clip(i32, -128, 127), casting="unsafe"),
         "np.clip+astype", 5),
        ("to_float16", lambda: qc.to_float16(x, out=f16), lambda: np.copyto(f16, x, casting="same_kind"),
         "astype(float16)", 6),
        ("to_bfloat16", lambda: qc.to_bfloat16(x, out=u16), lambda: bf16_numpy(x, u16),
         "numpy int RNE", 6),
        ("from_bfloat16", lambda: qc.from_bfloat16(bits, out=f32),
         lambda: np.left_shift(bits.astype(np.uint32), 16).view(np.float32), "astype<<16", 6),
    ]
    try:
        import torch
    except ImportError:
        torch = None
        _util.peer_missing("torch")
    if torch is not None:
        tx = torch.from_numpy(x)
        tb = torch.empty(n, dtype=torch.bfloat16)
        rows.append(("to_bfloat16 (torch)", lambda: qc.to_bfloat16(x, out=u16),
                     lambda: tb.copy_(tx), "torch .to(bf16)", 6))
    return x, rows


F8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


def lowbit_rows(n, rng):
    """(name, quantc fn, baseline fn, baseline label, bytes per element) for the acceptance
    conversions; outputs preallocated on both sides, like np.copyto's."""
    import ml_dtypes
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    xb = x.astype(ml_dtypes.bfloat16)
    s = np.float32(0.02)
    q4 = np.empty((n + 1) // 2, np.uint8)
    q8 = np.empty(n, np.int8)
    rows = [("f32 -> packed int4", lambda: qc.quantize(x, s, dtype="int4", packed=True, out=q4),
             lambda: qc.pack_bits(qc.quantize(x, s, dtype="int4")), "quantize+pack_bits",
             4.5)]
    for i, name in enumerate(F8):
        out = np.empty(n, name)
        fmax = np.float32(ml_dtypes.finfo(np.dtype(name)).max)
        # ml_dtypes' cast is slow (seconds at 64M): one baseline is enough to show it
        base = (lambda o=out, m=fmax: np.copyto(o, np.clip(x / s, -m, m), casting="unsafe")) \
            if i == 0 else None
        rows.append((f"f32 -> {name}", lambda o=out, nm=name: qc.quantize(x, s, dtype=nm, out=o),
                     base, "ml_dtypes cast" if base else "", 5))
    rows.append(("bf16 -> int8", lambda: qc.quantize(xb, s, np.int8(0), out=q8),
                 lambda: qc.quantize(xb.astype(np.float32), s, np.int8(0), out=q8),
                 "astype(f32)+quantize", 3))
    return x, rows


def run_lowbit(n, repeats, quick, results):
    rng = np.random.default_rng(1)
    x, rows = lowbit_rows(n, rng)
    copy_dst = np.empty_like(x)
    table = []
    with _util.threads(1):
        for name, qfn, bfn, blabel, nbytes in rows:
            fns = {"copy": lambda: np.copyto(copy_dst, x), "qc": qfn}
            if bfn is not None:
                fns["base"] = bfn
            t = _util.time_alternating(fns, repeats=repeats, min_time=0.02 if quick else 0.1)
            qgbs = nbytes * n / t["qc"] / 1e9
            cgbs = 8 * n / t["copy"] / 1e9
            r = {"op": name, "threads": 1, "qc_ms": t["qc"] * 1e3, "copy_ms": t["copy"] * 1e3,
                 "qc_gbs": qgbs, "copy_gbs": cgbs, "pct_copy": 100 * qgbs / cgbs,
                 "baseline": blabel, "base_ms": t["base"] * 1e3 if "base" in t else None}
            results.append(r)
            table.append([name, nbytes, r["qc_ms"], qgbs, cgbs, r["pct_copy"], blabel,
                          r["base_ms"] if r["base_ms"] is not None else "",
                          t["base"] / t["qc"] if "base" in t else ""])
    _util.print_table(f"low-bit quantize, 1 thread, n = {n:,} (GB/s = bytes read + written; "
                      f"% copy: of np.copyto's GB/s in the same run; target >= 80%)",
                      ["op", "B/elem", "qc ms", "qc GB/s", "copy GB/s", "% copy", "baseline",
                       "base ms", "speedup"], table)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small arrays, few repeats")
    p.add_argument("--n", type=int, default=None, help="elements per array (default 16M, quick 1M)")
    p.add_argument("--lowbit-n", type=int, default=None,
                   help="elements for the low-bit table (default 64M, quick 1M)")
    p.add_argument("--lowbit-only", action="store_true", help="only the low-bit table")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    if args.lowbit_only:
        results = []
        run_lowbit(args.lowbit_n or ((1 << 20) if args.quick else (1 << 26)),
                   3 if args.quick else 7, args.quick, results)
        _util.write_json(args.json, {"results": results, "cpu_info": qc.cpu_info()})
        return
    n = args.n or ((1 << 20) if args.quick else (1 << 24))
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    x, rows = cases(n, rng)
    copy_dst = np.empty_like(x)

    print(f"quantc {qc.__version__}; kernels: {qc.cpu_info()['kernels']}")
    print(f"NumPy {np.__version__}; {_util.blas_info()}; n = {n:,}")
    results, table = [], []
    for threads in (1, 2):
        with _util.threads(threads):
            for name, qfn, nfn, nlabel, nbytes in rows:
                t = _util.time_alternating({"copy": lambda: np.copyto(copy_dst, x), "qc": qfn, "np": nfn},
                                           repeats=repeats, min_time=0.02 if args.quick else 0.05)
                qgbs = nbytes * n / t["qc"] / 1e9
                cgbs = 8 * n / t["copy"] / 1e9
                r = {"op": name, "threads": threads, "baseline": nlabel, "qc_ms": t["qc"] * 1e3,
                     "np_ms": t["np"] * 1e3, "copy_ms": t["copy"] * 1e3, "speedup": t["np"] / t["qc"],
                     "qc_gbs": qgbs, "copy_gbs": cgbs, "pct_copy": 100 * qgbs / cgbs}
                results.append(r)
                table.append([name, threads, nlabel, r["qc_ms"], r["np_ms"], r["speedup"], qgbs, cgbs,
                              r["pct_copy"]])
        # per-call overhead: a 1,000-element call
        small = x[:1000].copy()
        so = np.empty_like(small)
        with _util.threads(threads):
            t = _util.time_alternating({"qc": lambda: qc.round(small, out=so),
                                        "np": lambda: np.rint(small, out=so),
                                        "mul": lambda: np.multiply(small, np.float32(2), out=so)},
                                       repeats=repeats, min_time=0.02)
        results.append({"op": "round 1k call", "threads": threads, "qc_us": t["qc"] * 1e6,
                        "np_us": t["np"] * 1e6, "multiply_us": t["mul"] * 1e6})
        table.append(["round 1k call (us)", threads, "np.rint", t["qc"] * 1e6, t["np"] * 1e6,
                      t["np"] / t["qc"], "", "", ""])
    _util.print_table(f"conversions, n = {n:,} (ms; GB/s = bytes read + written)",
                      ["op", "thr", "numpy baseline", "qc", "numpy", "speedup", "qc GB/s", "copy GB/s",
                       "% copy"], table)
    run_lowbit(args.lowbit_n or ((1 << 20) if args.quick else (1 << 26)), repeats, args.quick,
               results)
    _util.write_json(args.json, {"n": n, "results": results, "cpu_info": qc.cpu_info()})


if __name__ == "__main__":
    main()
