"""The bundled digits CNN as a full-integer int8 model against its float NumPy forward pass.

    python benchmarks/bench_digits.py [--quick] [--json OUT.json]

Accuracy on the 360 held-out test images (float32, weight-only int8, full-integer int8 with
each calibration method, calibrated on the bundled 256-image calibration split) and the time
per batch of the float model (``qc.Model``: NumPy float32, im2col + matmul) and the int8
model (``qc.quantize_model``), batch 1 and 64, 1 and 2 threads, timed alternating in one
process (issue 9, acceptance point 1: int8 at least 3x the float forward pass).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402  (pins BLAS threads before NumPy loads)

import quantc as qc  # noqa: E402
from quantc import examples  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    print(f"quantc digits benchmark; {_util.blas_info()}")
    model = examples.digits_model()
    images, labels = examples.digits_data()
    calib = examples.digits_calibration()
    acc_rows, out = [], {"accuracy": {}, "speed": []}
    acc_f = float((model(images).argmax(1) == labels).mean())
    acc_rows.append(["float32", f"{acc_f:.2%}", ""])
    wq = qc.quantize_weights(examples.digits_weights(), progress=False)
    acc = float((examples.digits_model(wq.dequantize())(images).argmax(1) == labels).mean())
    acc_rows.append(["weight-only int8", f"{acc:.2%}", f"{100 * (acc - acc_f):+.2f}"])
    models = {}
    for method in ("minmax", "moving_average", "percentile", "entropy", "mse"):
        qm = models[method] = qc.quantize_model(model, calib, method=method, progress=False)
        acc = float((qm(images).argmax(1) == labels).mean())
        acc_rows.append([f"full-integer int8, {method}", f"{acc:.2%}",
                         f"{100 * (acc - acc_f):+.2f}"])
        out["accuracy"][method] = acc
    out["accuracy"]["float32"] = acc_f
    _util.print_table("accuracy on the held-out split (360 images)",
                      ["model", "accuracy", "points vs float"], acc_rows)
    qm = models["minmax"]
    rows = []
    for nthreads in (1, 2):
        with _util.threads(nthreads):
            for batch in (1, 64):
                x = images[:batch]
                t = _util.time_alternating({"float": lambda: model(x), "int8": lambda: qm(x)},
                                           repeats=3 if a.quick else 7)
                rows.append([batch, nthreads, t["float"] * 1e6, t["int8"] * 1e6,
                             f"{t['float'] / t['int8']:.2f}x"])
                out["speed"].append({"batch": batch, "threads": nthreads,
                                     "float_s": t["float"], "int8_s": t["int8"]})
    _util.print_table("time per batch (us): float NumPy forward vs full-integer int8",
                      ["batch", "threads", "float us", "int8 us", "speedup"], rows)
    if a.json:
        _util.write_json(a.json, out)


if __name__ == "__main__":
    main()
