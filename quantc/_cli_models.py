"""The model commands of the ``quantc`` command line: ``convert`` and ``demo``."""
import os
import time

import numpy as np

from .cli import CLIError, _check_output


def add_parsers(sub):
    c = sub.add_parser(
        "convert", help="full-integer int8 model from an ONNX model and calibration data",
        description="Calibrate a float ONNX model on the arrays of DATA.npz, convert it to a "
                    "full-integer int8 model and print the per-layer report. OUT ending in "
                    ".safetensors is quantc's own file (qc.load_model); .onnx is a QDQ model "
                    "that onnxruntime runs.")
    c.add_argument("model", metavar="MODEL.onnx", help="the float model")
    c.add_argument("--calibration", required=True, metavar="DATA.npz",
                   help="calibration inputs: one array per model input, named like the input "
                        "(or the only array, for a one-input model), batch on axis 0")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the converted model (.safetensors or .onnx)")
    c.add_argument("--method", default="minmax",
                   choices=("minmax", "moving_average", "percentile", "entropy", "mse"),
                   help="how activation ranges are chosen (default minmax)")
    c.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor (default: per output channel)")
    c.add_argument("--activation-dtype", choices=("uint8", "int8"), default="uint8",
                   help="activation type (default uint8)")
    c.add_argument("--io", choices=("float", "uint8", "int8"), default="float",
                   help="input/output type of the converted model (default float)")
    c.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="calibration batch size (default: the model's batch when its inputs "
                        "fix one, else 32)")
    sub.add_parser("demo", help="the bundled example end to end: float, weight-only int8, "
                                "full-integer int8",
                   description="Run the bundled digits CNN as float32, with weight-only int8 "
                               "weights and as a full-integer int8 model; print accuracy and "
                               "time of each. Nothing is downloaded.")


def _calibration(path, model, batch_size):
    from .io import TensorReader
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    # a model exported without a dynamic batch axis takes batches of exactly that size
    fixed = {s[0] for s in model.inputs.values() if s and s[0] is not None}
    fixed = fixed.pop() if len(fixed) == 1 else None
    if batch_size is None:
        batch_size = fixed or 32
    if batch_size < 1:
        raise CLIError(f"--batch-size: expected a positive int, got {batch_size}")
    if fixed is not None and batch_size != fixed:
        raise CLIError(f"--batch-size: the model's inputs take batches of {fixed} (no dynamic "
                       f"batch axis), got {batch_size}")
    with TensorReader(path) as r:
        names = list(r.names)
        if len(model.inputs) == 1 and len(names) == 1:
            arrays = {next(iter(model.inputs)): r.read(names[0])}
        else:
            missing = [k for k in model.inputs if k not in names]
            if missing:
                raise CLIError(f"{path}: expected arrays named like the model's inputs "
                               f"{list(model.inputs)}, got {names}")
            arrays = {k: r.read(k) for k in model.inputs}
    n = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if len(n) != 1 or 0 in n:
        raise CLIError(f"{path}: expected arrays with the same non-zero batch size (axis 0), "
                       f"got shapes {[a.shape for a in arrays.values()]}")
    total = n.pop()
    if fixed is not None:  # whole batches only
        if total < fixed:
            raise CLIError(f"{path}: expected at least {fixed} inputs (the model's batch), got "
                           f"{total}")
        total -= total % fixed
    one = len(arrays) == 1
    return [next(iter(arrays.values()))[i:i + batch_size] if one else
            {k: v[i:i + batch_size] for k, v in arrays.items()}
            for i in range(0, total, batch_size)], total


def cmd_convert(a):
    import quantc as qc
    out = a.output
    _check_output(out, (".safetensors", ".onnx"))
    ext = os.path.splitext(out)[1].lower()
    if not os.path.isfile(a.model):
        raise CLIError(f"{a.model}: no such file")
    model = qc.Model.from_onnx(a.model)
    batches, total = _calibration(a.calibration, model, a.batch_size)
    t0 = time.perf_counter()
    qm = qc.quantize_model(model, batches, method=a.method,
                           weight_granularity="per_tensor" if a.per_tensor else "per_channel",
                           activation_dtype=a.activation_dtype, io=a.io)
    print(f"{a.model}: {len(model.nodes)} nodes, calibrated on {total} inputs "
          f"({a.method}) in {time.perf_counter() - t0:.2f} s\n")
    print(qm.report())
    if ext == ".onnx":
        qm.to_onnx(out)
    else:
        qm.save(out)
    print(f"\nwrote {out} ({os.path.getsize(out)} bytes)")
    return 0


def _time(fn, x, repeats=5):
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_demo(a):
    import quantc as qc
    from . import examples
    t_start = time.perf_counter()
    images, labels = examples.digits_data()
    model = examples.digits_model()
    print("bundled example: a CNN (conv 1->16, conv 16->32, max pool, fc 512->128, fc 128->10) "
          f"trained on scikit-learn's digits; {len(labels)} held-out test images\n")
    qw = qc.quantize_weights(examples.digits_weights(), progress=False)
    weight_only = examples.digits_model(qw.dequantize())
    qm = qc.quantize_model(model, examples.digits_calibration(), method="minmax",
                           progress=False)
    print("full-integer int8 model, per layer (calibrated on 256 training images, minmax):\n")
    print(qm.report())
    print()
    rows = []
    for label, fn, size in (("float32", model, qw.original_nbytes),
                            ("weight-only int8", weight_only, qw.nbytes),
                            ("full-integer int8", qm, sum(
                                v.nbytes for wd in qm.weights.values() for v in wd.values()
                                if isinstance(v, np.ndarray)))):
        acc = float((fn(images).argmax(1) == labels).mean())
        t_batch = _time(fn, images)
        t_one = _time(fn, images[:1], 50)
        rows.append((label, size, acc, t_batch, t_one))
    acc_f = rows[0][2]
    print(f"{'model':<20}{'weights':>10}{'accuracy':>10}{'change':>9}{'batch 360':>12}"
          f"{'batch 1':>11}")
    for label, size, acc, tb, t1 in rows:
        change = "" if label == "float32" else f"{100 * (acc - acc_f):+.2f}"
        print(f"{label:<20}{size:>9}B{acc:>10.2%}{change:>9}{tb * 1e3:>9.2f} ms"
              f"{t1 * 1e6:>8.0f} us")
    print(f"\n(threads: {qc.get_num_threads()}; done in {time.perf_counter() - t_start:.2f} s)")
    return 0
