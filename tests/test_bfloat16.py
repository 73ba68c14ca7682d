"""bfloat16 accepted wherever floats are: kernels, weight dictionaries, files, torch, CLI."""
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import quantc as qc

BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture
def xb():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((7, 33)) * 3).astype(np.float32).astype(BF16)


def test_kernels_accept_bfloat16_exactly_as_float32(xb):
    xf = xb.astype(np.float32)
    assert np.array_equal(qc.quantize(xb, 0.05, 3), qc.quantize(xf, 0.05, 3))
    assert np.array_equal(qc.quantize(xb[:, ::-2], 0.05), qc.quantize(xf[:, ::-2], 0.05))
    s = np.linspace(0.01, 0.1, 7).astype(np.float32)
    assert np.array_equal(qc.quantize(xb, s, axis=0), qc.quantize(xf, s, axis=0))
    assert np.array_equal(qc.fake_quantize(xb, 0.05), qc.fake_quantize(xf, 0.05))
    p, pf = qc.choose_qparams(xb, axis=0), qc.choose_qparams(xf, axis=0)
    assert np.array_equal(p.scale, pf.scale) and np.array_equal(p.zero_point, pf.zero_point)
    q, s1, z1 = qc.quantize_dynamic(xb)
    assert np.array_equal(q, qc.quantize_dynamic(xf)[0])
    assert np.array_equal(qc.round(xb), qc.round(xf))
    assert np.array_equal(qc.to_float16(xb), xf.astype(np.float16))
    obs = qc.MinMaxObserver()
    obs.update(xb)
    assert np.array_equal(obs.qparams().scale, qc.choose_qparams(xf).scale)
    assert xb.dtype == BF16  # input untouched


def test_to_from_bfloat16_interoperate_with_ml_dtypes(xb):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1000) * 10.0 ** rng.integers(-40, 38, 1000)).astype(np.float32)
    x[:4] = [np.inf, -np.inf, 0.0, -0.0]
    bits = qc.to_bfloat16(x)
    assert bits.dtype == np.uint16
    assert np.array_equal(bits.view(BF16).view(np.uint16), x.astype(BF16).view(np.uint16))
    assert np.array_equal(qc.from_bfloat16(xb), xb.astype(np.float32))
    assert np.array_equal(qc.from_bfloat16(xb[:, ::3]), xb[:, ::3].astype(np.float32))
    assert np.array_equal(qc.to_bfloat16(xb), xb.view(np.uint16))  # bf16 -> bf16 exact


def _model_state():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Conv2d(8, 16, 3)).bfloat16()
    return {k: v.contiguous() for k, v in m.state_dict().items()}


def test_torch_bfloat16_state_dict(tmp_path):
    sd = _model_state()
    qw = qc.quantize_weights(sd, min_elements=16)
    w = sd["0.weight"].view(__import__("torch").int16).numpy().view(BF16)
    ref = qc.quantize_weights({"0.weight": w.astype(np.float32)}, min_elements=16)
    assert np.array_equal(qw["0.weight"].q, ref["0.weight"].q)
    assert qw["0.weight"].orig_dtype == BF16
    assert qw["0.bias"].dtype == BF16  # kept tensors keep their dtype
    d = qw.dequantize()
    assert d["0.weight"].dtype == np.float32
    d = qw.dequantize(original_dtype=True)
    assert d["0.weight"].dtype == BF16 and d["1.weight"].shape == (16, 8, 3, 3)
    assert np.array_equal(d["0.weight"], qw["0.weight"].dequantize().astype(BF16))


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "bfloat16", "float16"])
def test_bfloat16_file_round_trip(tmp_path, ext, dtype):
    st = pytest.importorskip("safetensors.torch")
    sd = _model_state()
    src = tmp_path / "model.safetensors"
    st.save_file(sd, str(src))
    qw = qc.quantize_weights(str(src), dtype=dtype, min_elements=16)
    assert qw.report()[0]["bytes_before"] == sd[qw.report()[0]["name"]].numel() * 2
    out = tmp_path / ("q" + ext)
    qw.save(out)
    back = qc.load_quantized(out)
    for name, v in qw.items():
        b = back[name]
        if isinstance(v, qc.QuantizedTensor):
            assert np.array_equal(b.q, v.q) and np.array_equal(b.scale, v.scale)
            assert b.orig_dtype == BF16
        else:
            assert b.dtype == v.dtype and np.array_equal(b.view(np.uint8), v.view(np.uint8))
    if dtype == "bfloat16":
        assert back["0.weight"].dtype == BF16
        # bf16 -> bf16 is exact
        assert np.array_equal(back["0.weight"].view(np.uint16),
                              sd["0.weight"].view(__import__("torch").int16).numpy()
                              .view(np.uint16))
    d = back.dequantize(original_dtype=True)
    assert all(v.dtype == BF16 for v in d.values())


def test_bfloat16_float32_input_to_bfloat16_matches_ml_dtypes():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    qw = qc.quantize_weights({"w": w}, dtype="bfloat16")
    assert qw["w"].dtype == BF16
    assert np.array_equal(qw["w"].view(np.uint16), w.astype(BF16).view(np.uint16))
    assert qw.report()[0]["bytes_after"] == w.size * 2


def test_cli_quantize_and_inspect_bfloat16_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    src = tmp_path / "model.safetensors"
    st.save_file(_model_state(), str(src))
    run = [sys.executable, "-m", "quantc"]
    r = subprocess.run(run + ["inspect", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bfloat16" in r.stdout and "0.weight" in r.stdout
    out = tmp_path / "q.safetensors"
    r = subprocess.run(run + ["quantize", str(src), "--min-elements", "16", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "int8 per_channel" in r.stdout
    r = subprocess.run(run + ["inspect", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "kept bfloat16" in r.stdout, r.stdout + r.stderr
    out2 = tmp_path / "b.npz"
    r = subprocess.run(run + ["quantize", str(src), "--dtype", "bfloat16", "--min-elements",
                              "16", "-o", str(out2)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["inspect", str(out2)], capture_output=True, text=True)
    assert r.returncode == 0 and "bfloat16" in r.stdout


def test_float8_safetensors_tensors_read_as_ml_dtypes(tmp_path):
    from quantc.io import TensorReader, write_tensors
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    t = {"a": x.astype(ml_dtypes.float8_e4m3fn), "b": x.astype(ml_dtypes.float8_e5m2),
         "c": x.astype(BF16)}
    for ext in (".safetensors", ".npz"):
        write_tensors(tmp_path / ("f" + ext), t)
        with TensorReader(tmp_path / ("f" + ext)) as r:
            for k, v in t.items():
                got = r.read(k)
                assert got.dtype == v.dtype and np.array_equal(got.view(np.uint8),
                                                               v.view(np.uint8))
            assert "quantc.npz_dtypes" not in r.metadata


def test_bad_npz_dtype_metadata(tmp_path):
    from quantc.io import TensorReader, write_tensors
    write_tensors(tmp_path / "f.npz", {"a": np.zeros(3, np.uint16)},
                  {"quantc.npz_dtypes": '{"a": "pickle"}'})
    with pytest.raises(ValueError, match="quantc.npz_dtypes"):
        TensorReader(tmp_path / "f.npz")
