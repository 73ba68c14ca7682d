"""Full-integer ResNet-18, MobileNetV2 and MobileNetV3-Large: quantc against onnxruntime's
quantize_static.

Each model (torchvision's layout, random weights, BatchNorm with random scale/shift and
running statistics measured on data; see torch_models.py) is exported with torch.onnx.export,
read with qc.Model.from_onnx and calibrated on the same 64 inputs by both tools: quantc's
quantize_model (minmax) and onnxruntime's quantize_static (QDQ, per channel, activations
QUInt8, weights QInt8, MinMax). Accuracy: cosine similarity of the logits and top-1 agreement
with the float model (onnxruntime's float session on the same file) on 256 other inputs
(random weights leave little margin between the top two logits, so top-1 agreement is noisy:
its binomial standard error is printed beside it, and the difference between the two int8
models on the same inputs with its paired standard error below). Export: onnxruntime's run of
quantc's own qm.to_onnx() on 32 of those inputs, the share of logits equal to qm(x)'s (and
within one unit of the output scale).
Speed: quantc int8 qm(x), the ORT int8 session and the ORT float session alternating in one
process, median of several samples each after a 50 ms pause, the same thread count on all
sides (intra-op threads, inter-op 1); ratios are ORT time / quantc time (> 1: quantc faster).

    python benchmarks/bench_models.py [--quick] [--size 224] [--threads 1,2] [--held-out 256]
                                      [--models resnet18,mobilenetv2,mobilenetv3]
                                      [--more-seeds K]
                                      [--json PATH]
"""
import argparse
import logging
import os
import sys
import tempfile
import time

# As in bench_conv.py: OpenBLAS's idle threads sleep within the 50 ms pause. Before NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "19")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402,F401  (first: fixes the BLAS environment, finds the in-place build)
from _util import (blas_info, ort_session, print_table, threads,  # noqa: E402
                   time_alternating, write_json)

import numpy as np  # noqa: E402

import quantc as qc  # noqa: E402

try:
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
except ImportError as e:  # pragma: no cover
    sys.exit(f"bench_models needs torch, onnx and onnxruntime: {e}")

import torch_models  # noqa: E402

MODELS = {"resnet18": torch_models.ResNet18, "mobilenetv2": torch_models.MobileNetV2,
          "mobilenetv3": torch_models.MobileNetV3}


class _Reader(CalibrationDataReader):
    """onnxruntime's calibration input: the same batches quantc calibrates on."""

    def __init__(self, batches):
        self._it = iter(batches)

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {"input": b}


def cosine(a, b):
    """Mean over samples of the cosine similarity of two (N, classes) arrays of logits."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) *
                                             np.linalg.norm(b, axis=1))))


def paired_difference(hit_a, hit_b):
    """Top-1 agreement of a minus that of b on the same inputs (boolean arrays), in points,
    with its paired standard error (only the inputs where exactly one of the two agrees with
    the float model carry the difference) and the counts of those inputs."""
    d = hit_a.astype(np.float64) - hit_b.astype(np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"points": 100 * float(d.mean()), "stderr_points": 100 * se,
            "only_quantc": int(np.sum(hit_a & ~hit_b)), "only_ort": int(np.sum(~hit_a & hit_b))}


def run_batches(fn, x, batch=32):
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def convert_both(name, args, tmp, rng, seed=0):
    """The model (seed: torch's weights and BatchNorm), converted by quantc and onnxruntime on
    the same calibration data: (model, qm, float path, int8 path, held-out inputs, times)."""
    shape = (3, args.size, args.size)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    net = torch_models.randomized(MODELS[name](),
                                  [torch.randn(8, *shape) for _ in range(2)], seed=seed)
    fpath = os.path.join(tmp, f"{name}{seed}.onnx")
    qpath = os.path.join(tmp, f"{name}{seed}.int8.onnx")
    torch_models.export(net, fpath, shape)
    model = qc.Model.from_onnx(fpath)
    calib = [rng.standard_normal((8,) + shape).astype(np.float32) for _ in range(8)]
    held = rng.standard_normal((args.held_out,) + shape).astype(np.float32)
    t1 = time.perf_counter()
    qm = qc.quantize_model(model, calib, method="minmax", progress=False)
    t2 = time.perf_counter()
    quantize_static(fpath, qpath, _Reader(calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    t3 = time.perf_counter()
    return model, qm, fpath, qpath, held, (t0, t1, t2, t3)


def outputs(model, qm, fproto, qproto, held, nt):
    """The float reference (ORT float), quantc's and ORT's int8 logits on held, and quantc's
    float run's largest difference from ORT float (relative, first 8 inputs)."""
    with threads(nt):
        sf, sq = ort_session(fproto, nt), ort_session(qproto, nt)
        ref = run_batches(lambda b: sf.run(None, {"input": b})[0], held)
        got_qc = run_batches(qm, held)
        got_ort = run_batches(lambda b: sq.run(None, {"input": b})[0], held)
        float_gap = float(np.abs(model(held[:8]) - ref[:8]).max() / np.abs(ref[:8]).max())
    return ref, got_qc, got_ort, float_gap


def export_agreement(qm, x, nt):
    """How many of qm(x)'s outputs onnxruntime's run of qm.to_onnx() reproduces: the share of
    logits equal, and within one unit of the output's scale (the int8 codes before the
    dequantization)."""
    with threads(nt):
        sess = ort_session(qm.to_onnx(), nt)
        theirs = run_batches(lambda b: sess.run(None, {"input": b})[0], x)
        ours = run_batches(qm, x)
    scale = float(next(iter(qm.output_qparams.values()))[0])
    units = np.rint(np.abs(ours.astype(np.float64) - theirs) / scale)
    return {"inputs": len(x), "logits": int(units.size), "equal": float(np.mean(units == 0)),
            "within_1": float(np.mean(units <= 1))}


def bench_model(name, args, tmp, rng):
    size = args.size
    model, qm, fpath, qpath, held, (t0, t1, t2, t3) = convert_both(name, args, tmp, rng)
    print(f"\n{name} at {size}x{size}: export {t1 - t0:.1f} s, quantc calibration "
          f"{t2 - t1:.1f} s, onnxruntime calibration {t3 - t2:.1f} s; "
          f"{sum(k == 'int8' for k in qm.kinds.values())} of {len(qm.kinds)} quantc nodes "
          f"in int8", flush=True)

    fproto, qproto = onnx.load(fpath), onnx.load(qpath)
    n_threads = args.threads
    ref, got_qc, got_ort, float_gap = outputs(model, qm, fproto, qproto, held, max(n_threads))
    hit_qc, hit_ort = got_qc.argmax(1) == ref.argmax(1), got_ort.argmax(1) == ref.argmax(1)
    acc = {"quantc int8": (cosine(got_qc, ref), float(np.mean(hit_qc))),
           "ORT int8": (cosine(got_ort, ref), float(np.mean(hit_ort)))}
    paired = paired_difference(hit_qc, hit_ort)
    print_table(f"{name}: against the float model on {len(held)} held-out inputs (quantc's "
                f"float run is within {float_gap:.1e} of ORT float)",
                ["int8 model", "cosine", "top-1 agreement", "(standard error)"],
                [[k, f"{c:.5f}", f"{100 * t:.1f}%", f"{100 * (t * (1 - t) / len(held)) ** .5:.1f}"]
                 for k, (c, t) in acc.items()])
    print(f"top-1 agreement, quantc minus ORT on the same inputs: {paired['points']:+.1f} points "
          f"(paired standard error {paired['stderr_points']:.1f}; only quantc agrees on "
          f"{paired['only_quantc']} inputs, only ORT on {paired['only_ort']})")

    agree = export_agreement(qm, held[:32], max(n_threads))
    print(f"quantc's own export (qm.to_onnx()) run by onnxruntime on {agree['inputs']} held-out "
          f"inputs: {100 * agree['equal']:.2f}% of the {agree['logits']} logits equal to qm(x)'s, "
          f"{100 * agree['within_1']:.2f}% within one unit (arithmetic {qm.arithmetic!r})")

    rows, timings = [], []
    for nt in n_threads:
        sf, sq = ort_session(fproto, nt), ort_session(qproto, nt)
        with threads(nt):
            for batch in args.batches:
                x = held[:batch]
                t = time_alternating({"quantc int8": lambda: qm(x),
                                      "ORT int8": lambda: sq.run(None, {"input": x}),
                                      "ORT float": lambda: sf.run(None, {"input": x})},
                                     repeats=args.repeats, settle=0.25)
                ms = {k: v * 1e3 for k, v in t.items()}
                rows.append([batch, nt, ms["quantc int8"], ms["ORT int8"], ms["ORT float"],
                             f"{ms['ORT int8'] / ms['quantc int8']:.2f}x",
                             f"{ms['ORT float'] / ms['quantc int8']:.2f}x"])
                timings.append({"batch": batch, "threads": nt, "ms": ms})
    print_table(f"{name} {size}x{size}: median ms per call; ratios are ORT time / quantc time",
                ["batch", "threads", "quantc int8", "ORT int8", "ORT float",
                 "vs ORT int8", "vs ORT float"], rows)
    res = {"size": size, "held_out": len(held), "accuracy": {k: {"cosine": c, "top1_agreement": t}
                                      for k, (c, t) in acc.items()},
           "top1_paired": paired, "export_agreement": agree,
           "quantc_float_vs_ort_float": float_gap, "timings": timings,
           "seconds": {"quantc_calibration": t2 - t1, "ort_calibration": t3 - t2}}
    if args.more_seeds:
        res["more_seeds"] = more_seeds(name, args, tmp, hit_qc, hit_ort, acc)
    return res


def more_seeds(name, args, tmp, hit_qc, hit_ort, acc):
    """Accuracy only, on the models of seeds 1..args.more_seeds (other weights, calibration
    and held-out data), pooled with seed 0's: one random network's top-1 agreement on 256
    inputs moves by several points with any change of rounding, so the pooled paired
    difference is the one that tells whether either tool is closer."""
    rows = [[0, f"{acc['quantc int8'][0]:.5f}", f"{acc['ORT int8'][0]:.5f}",
             f"{100 * hit_qc.mean():.1f}%", f"{100 * hit_ort.mean():.1f}%"]]
    hits_qc, hits_ort, seeds = [hit_qc], [hit_ort], []
    for seed in range(1, args.more_seeds + 1):
        model, qm, fpath, qpath, held, _ = convert_both(name, args, tmp,
                                                        np.random.default_rng(seed), seed)
        ref, got_qc, got_ort, _ = outputs(model, qm, onnx.load(fpath), onnx.load(qpath), held,
                                          max(args.threads))
        hq, ho = got_qc.argmax(1) == ref.argmax(1), got_ort.argmax(1) == ref.argmax(1)
        hits_qc.append(hq)
        hits_ort.append(ho)
        cq, co = cosine(got_qc, ref), cosine(got_ort, ref)
        rows.append([seed, f"{cq:.5f}", f"{co:.5f}", f"{100 * hq.mean():.1f}%",
                     f"{100 * ho.mean():.1f}%"])
        seeds.append({"seed": seed, "cosine": {"quantc int8": cq, "ORT int8": co},
                      "top1_agreement": {"quantc int8": float(hq.mean()),
                                         "ORT int8": float(ho.mean())}})
    pooled = paired_difference(np.concatenate(hits_qc), np.concatenate(hits_ort))
    print_table(f"{name}: {args.more_seeds + 1} random models (seed 0 is the one above), "
                f"{args.held_out} held-out inputs each",
                ["seed", "quantc cosine", "ORT cosine", "quantc top-1", "ORT top-1"], rows)
    print(f"pooled over {len(hits_qc) * args.held_out} inputs: top-1 agreement, quantc minus "
          f"ORT: {pooled['points']:+.1f} points (paired standard error "
          f"{pooled['stderr_points']:.1f})")
    return {"seeds": seeds, "pooled_top1_paired": pooled}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="96x96 inputs, 64 held-out inputs, batch 1 and 8 on 1 thread")
    ap.add_argument("--size", type=int, help="input height and width (default 224)")
    ap.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: "
                    + ", ".join(MODELS))
    ap.add_argument("--held-out", type=int, help="inputs for the accuracy (default 256; more "
                    "narrow the top-1 agreement's standard error)")
    ap.add_argument("--more-seeds", type=int, default=0, metavar="K",
                    help="also compare the accuracy (no timing) on K more random models of "
                    "each kind and pool the top-1 difference over all of them")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    args.size = args.size or (96 if args.quick else 224)
    args.threads = [int(t) for t in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    args.batches = (1, 8)
    args.held_out = args.held_out or (64 if args.quick else 256)
    args.repeats = 3 if args.quick else 7
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's "consider pre-processing"
    ort.set_default_logger_severity(3)
    print(f"quantc {qc.__version__} ({qc.cpu_info()['kernels']['conv_nchw']}), onnxruntime "
          f"{ort.__version__}, torch {torch.__version__}; NumPy BLAS: {blas_info()}")
    results = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            # each model's own data generator: its calibration and held-out inputs do not
            # depend on which models ran before it (--models order), as its weights do not
            results[name] = bench_model(name, args, tmp, np.random.default_rng(0))
    print(f"\n(done in {time.perf_counter() - t0:.0f} s)")
    write_json(args.json, {"benchmark": "models", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
