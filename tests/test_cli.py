"""The command line, run as a new user would: ``python -m quantc ...`` in a subprocess."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from quantc import io as qio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "quantc", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def assert_clean_error(rc, out, err, *needles):
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "model.safetensors"
    qio.write_tensors(path, {"encoder.w": rng.standard_normal((64, 96)).astype(np.float32),
                             "encoder.b": rng.standard_normal(64).astype(np.float32),
                             "head.w": rng.standard_normal((32, 64)).astype(np.float32)})
    return path


def test_help():
    rc, out, err = run("--help")
    assert rc == 0 and "quantize" in out and "inspect" in out and "demo" in out
    rc, out, _ = run()
    assert rc == 0 and "usage" in out
    rc, out, _ = run("quantize", "--help")
    assert rc == 0 and "--per-channel" in out and "--block-size" in out


def test_quantize_bundled_example():
    rc, out, err = run("quantize")
    assert rc == 0, err
    for name in ("conv2.weight", "fc1.weight", "fc2.weight", "SQNR", "of the original"):
        assert name in out
    assert err == ""  # not a terminal: no progress bar


def test_quantize_save_inspect(tmp_path, model_file):
    out_path = tmp_path / "out.safetensors"
    report = tmp_path / "report.json"
    rc, out, err = run("quantize", model_file, "-o", out_path, "--per-channel", "--json", report)
    assert rc == 0, err
    assert out_path.exists() and "encoder.w" in out
    rows = json.loads(report.read_text())["tensors"]
    assert {r["name"] for r in rows} == {"encoder.w", "encoder.b", "head.w"}
    rc, out, err = run("inspect", out_path)
    assert rc == 0, err
    assert "quantc quantized file" in out and "int8 per_channel(axis=0)" in out
    rc, out, err = run("inspect", model_file)
    assert rc == 0, err
    assert "float32" in out and "encoder.b" in out


@pytest.mark.parametrize("opts", [["--per-tensor", "--dtype", "uint8", "--asymmetric"],
                                  ["--block-size", "32", "--method", "mse"],
                                  ["--dtype", "float16", "--skip", "head*"],
                                  ["--method", "percentile", "--min-elements", "10"]])
def test_quantize_options(tmp_path, model_file, opts):
    out_path = tmp_path / "o.npz"
    rc, out, err = run("quantize", model_file, "-o", out_path, *opts)
    assert rc == 0, err
    rc, out, err = run("inspect", out_path)
    assert rc == 0, err


def test_bad_paths(tmp_path, model_file):
    assert_clean_error(*run("quantize", tmp_path / "missing.safetensors"), "missing.safetensors")
    assert_clean_error(*run("inspect", tmp_path / "missing.npz"), "no such file")
    assert_clean_error(*run("quantize", model_file, "-o", tmp_path / "nodir" / "o.npz"),
                       "does not exist")
    assert_clean_error(*run("quantize", model_file, "-o", tmp_path / "o.txt"), ".safetensors")
    assert_clean_error(*run("quantize", tmp_path), "directory")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert_clean_error(*run("quantize", bad), "bad.safetensors")
    assert_clean_error(*run("inspect", bad), "bad.safetensors")
    assert not (tmp_path / "nodir").exists()


def test_output_paths_checked_before_any_work(tmp_path, model_file):
    """-o or --json naming a directory (or the same file) fails before anything is written;
    the report is written atomically."""
    (tmp_path / "report.json").mkdir()
    (tmp_path / "out.npz").mkdir()
    out = tmp_path / "o.npz"
    assert_clean_error(*run("quantize", model_file, "-o", out, "--json",
                            tmp_path / "report.json"),
                       "report.json: expected a file name, got a directory")
    assert_clean_error(*run("quantize", model_file, "-o", tmp_path / "out.npz"),
                       "out.npz: expected a file name, got a directory")
    assert_clean_error(*run("quantize", model_file, "-o", out, "--json", out), "same file")
    assert_clean_error(*run("quantize", model_file, "-o", out, "--json",
                            tmp_path / "nodir" / "r.json"), "does not exist")
    assert not out.exists()
    rc, _, err = run("quantize", model_file, "-o", out, "--json", tmp_path / "r.json")
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "o.npz", "out.npz", "r.json",
                                            "report.json"]


def test_bad_option_exit_code(model_file):
    rc, out, err = run("quantize", model_file, "--method", "nope")
    assert rc == 2 and "Traceback" not in err and "invalid choice" in err


def test_demo():
    rc, out, err = run("demo")
    assert rc == 0, err
    assert "float32" in out and "weight-only int8" in out and "full-integer int8" in out


def test_bench_quick():
    rc, out, err = run("bench", "--quick")
    assert rc == 0, err
    assert "speedup" in out and "min/max" in out
