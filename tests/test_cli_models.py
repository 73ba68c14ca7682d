"""`quantc convert` and `quantc demo` through a subprocess, as a user runs them."""
import os
import subprocess
import sys

import numpy as np
import pytest

import quantc as qc
from quantc import examples


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "quantc", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("onnx")
    d = tmp_path_factory.mktemp("cli")
    examples.digits_model().to_onnx(d / "digits.onnx")
    x = np.concatenate(examples.digits_calibration())
    np.savez(d / "calib.npz", image=x)
    return d


def test_convert_to_safetensors_and_onnx(files):
    out = files / "digits.int8.safetensors"
    r = run("convert", str(files / "digits.onnx"), "--calibration", str(files / "calib.npz"),
            "--method", "entropy", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "calibrated on 256 inputs (entropy)" in r.stdout and "SQNR dB" in r.stdout
    qm = qc.load_model(out)
    want = qc.quantize_model(qc.Model.from_onnx(files / "digits.onnx"),
                             [np.load(files / "calib.npz")["image"][i:i + 32]
                              for i in range(0, 256, 32)], method="entropy")
    x, _ = examples.digits_data()
    assert np.array_equal(qm(x), want(x))
    ort = pytest.importorskip("onnxruntime")
    r = run("convert", str(files / "digits.onnx"), "--calibration", str(files / "calib.npz"),
            "--io", "uint8", "-o", str(files / "digits.int8.onnx"))
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(files / "digits.int8.onnx"),
                                providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"


@pytest.mark.parametrize("args,msg", [
    (["--calibration", "nope.npz", "-o", "o.safetensors"], "nope.npz: no such file"),
    (["--calibration", "calib.npz", "-o", "o.txt"], "output must end in .safetensors or .onnx"),
    (["--calibration", "bad.npz", "-o", "o.safetensors"], "calibration_data[0]"),
    (["--calibration", "empty.npz", "-o", "o.safetensors"], "expected arrays"),
    (["--calibration", "nan.npz", "-o", "o.safetensors"], "NaN"),
])
def test_convert_errors(files, args, msg):
    np.savez(files / "bad.npz", image=np.zeros((4, 3, 8, 8), np.float32))
    np.savez(files / "empty.npz", other=np.zeros((4, 1, 8, 8), np.float32),
             more=np.zeros((4, 1, 8, 8), np.float32))
    nan = np.zeros((4, 1, 8, 8), np.float32)
    nan[1, 0, 2, 2] = np.nan
    np.savez(files / "nan.npz", image=nan)
    before = set(os.listdir(files))
    r = run("convert", "digits.onnx", *args, cwd=files)
    assert r.returncode == 2 and msg in r.stderr, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback
    assert set(os.listdir(files)) == before  # nothing written on failure


def test_convert_fixed_batch_model(files):
    # exported without a dynamic batch axis: calibrated in batches of that size by default
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(files / "digits.onnx"))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 4
    onnx.save(proto, str(files / "fixed.onnx"))
    r = run("convert", str(files / "fixed.onnx"), "--calibration", str(files / "calib.npz"),
            "-o", str(files / "fixed.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "calibrated on 256 inputs" in r.stdout
    r = run("convert", str(files / "fixed.onnx"), "--calibration", str(files / "calib.npz"),
            "--batch-size", "32", "-o", str(files / "fixed2.safetensors"))
    assert r.returncode == 2 and "--batch-size: the model's inputs take batches of 4" in \
        r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (files / "fixed2.safetensors").exists()


def test_convert_unsupported_model(files):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Sin", ["x"], ["y"], name="sine")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(files / "sin.onnx"))
    r = run("convert", str(files / "sin.onnx"), "--calibration", str(files / "calib.npz"),
            "-o", str(files / "sin.safetensors"))
    assert r.returncode == 2 and "'sine'" in r.stderr and "Sin" in r.stderr, r.stderr
    assert not (files / "sin.safetensors").exists()


def test_demo_runs_all_three_schemes():
    r = run("demo")
    assert r.returncode == 0, r.stderr
    for label in ("float32", "weight-only int8", "full-integer int8", "SQNR dB"):
        assert label in r.stdout
    acc = {line.split()[0]: line for line in r.stdout.splitlines()
           if line.startswith(("float32", "full-integer"))}
    assert len(acc) == 2
