"""int4/uint4 weight files: packed storage, bit-identical round trips, report, CLI."""
import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import quantc as qc
from quantc.io import TensorReader, write_tensors


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    return {"fc.weight": rng.standard_normal((96, 200)).astype(np.float32),
            "conv.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
            "fc.bias": rng.standard_normal(96).astype(np.float32)}


def _same(a, b):
    for name, v in a.items():
        w = b[name]
        if isinstance(v, qc.QuantizedTensor):
            assert w.dtype == v.dtype and w.shape == v.shape
            assert np.array_equal(w.q.astype(np.int8), v.q.astype(np.int8))
            assert np.array_equal(w.scale, v.scale)
            assert np.array_equal(w.zero_point.astype(np.int8), v.zero_point.astype(np.int8))
        else:
            assert np.array_equal(w, v)


@pytest.mark.parametrize("dtype", ["int4", "uint4"])
@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
@pytest.mark.parametrize("kw", [dict(granularity="per_block", block_size=32),
                                dict(granularity="per_block", block_size=128, symmetric=False),
                                dict(), dict(granularity="per_tensor", method="mse")])
def test_round_trip_bit_identical(tmp_path, weights, dtype, ext, kw):
    qw = qc.quantize_weights(weights, dtype=dtype, min_elements=16, **kw)
    qt = qw["fc.weight"]
    assert qt.dtype == np.dtype(dtype) and qt.q.shape == (96, 200)
    # narrow range for symmetric minmax; clipping (mse) may clamp to the full range, as int8
    lo, hi = qc.qrange(dtype, narrow_range=kw.get("symmetric", True) and "method" not in kw)
    q8 = qt.q.astype(np.int16)
    assert q8.min() >= lo and q8.max() <= hi
    # the values are quantize() of the weights with the stored parameters
    d = qt.dequantize()
    x = weights["fc.weight"]
    assert np.abs(d - x).max() <= 0.5 * qt.scale.max() * (1 + 1e-6) * (
        1 if kw.get("method") != "mse" else 100)
    path = tmp_path / ("w" + ext)
    qw.save(path)
    back = qc.load_quantized(path)
    _same(qw, back)
    assert back.nbytes == qw.nbytes
    for name in weights:
        assert np.array_equal(back.dequantize()[name], qw.dequantize()[name])
    with TensorReader(path) as r:
        stored = r.read("fc.weight")
        assert stored.dtype == np.uint8 and stored.shape == (96 * 200 // 2,)
        assert np.array_equal(stored, qc.pack_bits(qt.q))
        meta = json.loads(r.metadata["quantc"])
        assert meta["tensors"]["fc.weight"]["scheme"] == dtype


def test_size_is_an_eighth_plus_scales(tmp_path):
    rng = np.random.default_rng(1)
    w = {"w": rng.standard_normal((1024, 1024)).astype(np.float32)}
    qw = qc.quantize_weights(w, dtype="int4", granularity="per_block", block_size=64)
    want = 1024 * 1024 // 2 + 1024 * 16 * (4 + 1)  # values + float32 scales + zero points
    assert qw.nbytes == want and qw["w"].nbytes == want
    assert qw.report()[0]["bytes_after"] == want
    qw.save(tmp_path / "w.safetensors")
    assert os.path.getsize(tmp_path / "w.safetensors") < want + 4096
    assert qw.compression_ratio > 6.0
    # conv weights block along C*kh*kw, not kw
    c = qc.quantize_weights({"c": rng.standard_normal((32, 64, 3, 3)).astype(np.float32)},
                            dtype="int4", granularity="per_block", block_size=32)
    assert c["c"].scale.shape == (32, 18)


def test_bfloat16_input_to_int4(tmp_path, weights):
    wb = {k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    qw = qc.quantize_weights(wb, dtype="int4", granularity="per_block", block_size=32,
                             min_elements=16)
    ref = qc.quantize_weights({k: v.astype(np.float32) for k, v in wb.items()}, dtype="int4",
                              granularity="per_block", block_size=32, min_elements=16)
    _same(ref, qw)
    assert qw["fc.weight"].orig_dtype == np.dtype(ml_dtypes.bfloat16)
    assert qw.report()[0]["sqnr_db"] > 15
    qw.save(tmp_path / "b.safetensors")
    back = qc.load_quantized(tmp_path / "b.safetensors")
    d = back.dequantize(original_dtype=True)
    assert d["fc.weight"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_corrupted_int4_files(tmp_path, weights):
    qw = qc.quantize_weights(weights, dtype="int4", granularity="per_block", block_size=32,
                             min_elements=16)
    path = tmp_path / "w.npz"
    qw.save(path)
    with TensorReader(path) as r:
        tensors = {n: r.read(n) for n in r.names}
        meta = dict(r.metadata)
    bad = dict(tensors, **{"fc.weight": tensors["fc.weight"][:-1]})  # one byte short
    write_tensors(tmp_path / "short.npz", bad, meta)
    with pytest.raises(ValueError, match="packed: expected 9600 bytes"):
        qc.load_quantized(tmp_path / "short.npz")
    bad = dict(tensors, **{"fc.weight::zero_point": np.full_like(
        tensors["fc.weight::zero_point"], 9)})
    write_tensors(tmp_path / "zp.npz", bad, meta)
    with pytest.raises(ValueError, match="zero points"):
        qc.load_quantized(tmp_path / "zp.npz")
    bad = dict(tensors, **{"fc.weight": tensors["fc.weight"].astype(np.int8)})
    write_tensors(tmp_path / "dt.npz", bad, meta)
    with pytest.raises(ValueError, match="packed uint8"):
        qc.load_quantized(tmp_path / "dt.npz")


def test_bad_arguments(weights):
    with pytest.raises(ValueError, match="dtype: expected"):
        qc.quantize_weights(weights, dtype="int3")
    with pytest.raises(ValueError, match="block_size"):
        qc.quantize_weights(weights, dtype="int4", granularity="per_block", block_size=0)


def test_cli_int4(tmp_path, weights):
    src = tmp_path / "m.safetensors"
    write_tensors(src, weights)
    out = tmp_path / "q.safetensors"
    run = [sys.executable, "-m", "quantc"]
    r = subprocess.run(run + ["quantize", str(src), "--dtype", "int4", "--block-size", "32",
                              "--min-elements", "16", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "int4 per_block(32)" in r.stdout
    r = subprocess.run(run + ["inspect", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "int4 per_block(32)" in r.stdout, r.stdout + r.stderr
    back = qc.load_quantized(out)
    assert back["fc.weight"].dtype == np.dtype(ml_dtypes.int4)
