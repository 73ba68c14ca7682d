"""GGUF Q8_0 / Q4_0 blocks: bytes equal to the gguf package's reference quantizers; .gguf files
written by quantc read back by gguf.GGUFReader."""
import json
import os
import warnings

import ml_dtypes
import numpy as np
import pytest

import quantc as qc
from conftest import assert_equal_exact

gguf = pytest.importorskip("gguf")
TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def cases(rng):
    """float32 (rows, K) inputs that walk the edges of both quantizers."""
    out = {"random": rng.standard_normal((9, 256)).astype(np.float32),
           "wide": (rng.standard_normal((4, 96)) * 10.0 ** rng.integers(-6, 6, (4, 1)))
           .astype(np.float32),
           "zeros": np.zeros((3, 64), np.float32)}
    # ties: values that land exactly on k + 1/2 of the grid (Q8_0: amax 127 makes d = 1)
    t = np.tile(np.float32([127, -127, 0.5, -0.5, 1.5, -2.5, 3.5, 126.5]), (2, 4))
    out["ties_q8"] = t
    # Q4_0: m = -8 makes d = 1, id = 1, and x + 8.5 hits integers exactly
    t4 = np.tile(np.float32([-8, 7.5, -7.5, 0.5, -0.5, 1, 8, -3.5]), (2, 4))
    out["ties_q4"] = t4
    huge = rng.standard_normal((4, 64)).astype(np.float32)
    huge[0, 3], huge[1, 40], huge[2, 0], huge[3, 63] = 1e6, -3e4, 65504 * 127, -1e30
    out["one_huge"] = huge
    eq = rng.standard_normal((2, 32)).astype(np.float32)
    eq[0, 5], eq[0, 9] = 4.0, -4.0    # equal magnitudes: the first one sets Q4_0's sign
    eq[1, 5], eq[1, 9] = -4.0, 4.0
    out["equal_magnitudes"] = eq
    tiny = rng.standard_normal((2, 32)).astype(np.float32) * np.float32(1e-38)
    out["subnormal_scale"] = tiny
    mix = rng.standard_normal((3, 96)).astype(np.float32)
    mix[1, 32:64] = 0  # an all-zero block between others
    out["zero_block"] = mix
    return out


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_bytes_equal_gguf_reference(rng, dtype):
    for name, x in cases(rng).items():
        with np.errstate(all="ignore"):  # the reference divides by zero on all-zero blocks
            want = gguf.quants.quantize(x, TYPES[dtype])
        got = qc.quantize_gguf(x, dtype)
        assert_equal_exact(got, want, f"{dtype} {name}")
        back = qc.dequantize_gguf(got, dtype)
        with np.errstate(all="ignore"):
            ref = gguf.quants.dequantize(want, TYPES[dtype]).astype(np.float32)
        assert_equal_exact(back, ref, f"{dtype} dequantize {name}")


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_shapes_and_error(rng, dtype):
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    q = qc.quantize_gguf(x, dtype)
    assert q.shape == (2, 3, 2 * (34 if dtype == "q8_0" else 18)) and q.dtype == np.uint8
    assert_equal_exact(q.reshape(6, -1), qc.quantize_gguf(x.reshape(6, 64), dtype), "batched")
    assert_equal_exact(qc.quantize_gguf(x.astype(np.float64), dtype), q, "float64 in")
    t = qc.GGUFTensor.from_float(x, dtype)
    err = np.abs(t.dequantize() - x)
    # Q8_0: half a step of d = amax/127 (plus float16 rounding of d); Q4_0: one step of
    # |m|/8 (the +8 side clamps at 7 steps)
    amax = np.abs(x.reshape(-1, 32)).max(1).repeat(32).reshape(x.shape)
    assert np.all(err <= (amax / 127 * 0.51 if dtype == "q8_0" else amax / 8 * 1.01))
    assert qc.quantize_gguf(np.zeros((0, 32), np.float32), dtype).shape[0] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="x: expected a last dimension that is a multiple of 32"):
        qc.quantize_gguf(np.zeros((2, 33), np.float32))
    with pytest.raises(ValueError, match="dtype: expected 'q8_0' or 'q4_0'"):
        qc.quantize_gguf(np.zeros((2, 32), np.float32), "q5_0")
    with pytest.raises(TypeError, match="x: expected a float array"):
        qc.quantize_gguf(np.zeros((2, 32), np.int32))
    with pytest.raises(ValueError, match="x: expected finite values, got nan at flat index 33"):
        x = np.zeros((2, 32), np.float32)
        x[1, 1] = np.nan
        qc.quantize_gguf(x)
    with pytest.raises(ValueError, match="blocks: expected a last dimension"):
        qc.dequantize_gguf(np.zeros((2, 35), np.uint8), "q8_0")
    with pytest.raises(TypeError, match="blocks: expected uint8"):
        qc.dequantize_gguf(np.zeros((2, 34), np.int8), "q8_0")
    with pytest.raises(ValueError, match="data: expected 68 bytes"):
        qc.GGUFTensor(np.zeros(34, np.uint8), "q8_0", (2, 32))
    with pytest.raises(TypeError, match=r"tensors\['a'\]: expected a GGUFTensor"):
        qc.save_gguf({"a": np.zeros((2, 32), np.int8)}, "unused.gguf")


def test_file_read_by_gguf_reader(tmp_path, rng):
    x = rng.standard_normal((8, 128)).astype(np.float32)
    t = {"blk.0.q8": qc.GGUFTensor.from_float(x, "q8_0"),
         "blk.0.q4": qc.GGUFTensor.from_float(x.reshape(2, 4, 128), "q4_0"),
         "norm": rng.standard_normal(128).astype(np.float32),
         "half": rng.standard_normal((3, 5)).astype(np.float16)}
    path = tmp_path / "w.gguf"
    qc.save_gguf(t, path)
    r = gguf.GGUFReader(str(path))
    seen = {rt.name: rt for rt in r.tensors}
    assert set(seen) == set(t)
    for name, v in t.items():
        rt = seen[name]
        if isinstance(v, qc.GGUFTensor):
            assert rt.tensor_type == TYPES[v.dtype]
            assert tuple(reversed(rt.shape.tolist())) == v.shape
            assert_equal_exact(np.array(rt.data).reshape(v.data.shape), v.data, name)
            assert_equal_exact(gguf.quants.dequantize(np.array(rt.data), rt.tensor_type)
                               .reshape(v.shape).astype(np.float32), v.dequantize(), name)
        else:
            assert_equal_exact(np.array(rt.data).reshape(v.shape), v, name)
    back = qc.load_gguf(path)
    for name, v in t.items():
        if isinstance(v, qc.GGUFTensor):
            assert back[name].dtype == v.dtype and back[name].shape == v.shape
            assert_equal_exact(back[name].data, v.data, name)
        else:
            assert_equal_exact(back[name], v, name)


def test_file_edges_and_atomic_write(tmp_path, rng, monkeypatch):
    path = tmp_path / "m.gguf"
    t = {"a": qc.GGUFTensor.from_float(rng.standard_normal((4, 64)).astype(np.float32), "q4_0"),
         "empty": qc.GGUFTensor.from_float(np.zeros((0, 32), np.float32), "q8_0"),
         "be": np.arange(6, dtype=">f4").reshape(2, 3)}  # big-endian: converted, not refused
    qc.save_gguf(t, path)
    back = qc.load_gguf(path)
    assert back["empty"].shape == (0, 32) and back["empty"].dequantize().shape == (0, 32)
    assert_equal_exact(back["a"].data, t["a"].data, "q4_0 bytes")
    assert_equal_exact(back["be"], np.arange(6, dtype=np.float32).reshape(2, 3), "be")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"tensors\['s'\]: expected at least 1 dimension"):
        qc.save_gguf({"s": np.float32(3.0)}, path)  # was written as shape (1,)
    with pytest.raises(TypeError, match=r"tensors\['i'\]: expected a GGUFTensor or a float32"):
        qc.save_gguf({"i": np.arange(3)}, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.gguf"]

    def fail(self, *a, **k):  # a failure half way through the tensors
        raise OSError("disk full")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail)
    with pytest.raises(OSError, match="disk full"):
        qc.save_gguf(t, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.gguf"]


def test_missing_gguf_names_the_extra(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match=r"quantc\[gguf\]"):
        qc.save_gguf({}, tmp_path / "x.gguf")
    with pytest.raises(ImportError, match=r"quantc\[gguf\]"):
        qc.load_gguf(tmp_path / "x.gguf")


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_quantize_weights_gguf_round_trip(tmp_path, rng, dtype, ext):
    w = {"a": rng.standard_normal((64, 96)).astype(np.float32),
         "b": rng.standard_normal((2, 8, 64)).astype(np.float16),
         "bias": rng.standard_normal(64).astype(np.float32)}
    qw = qc.quantize_weights(w, dtype=dtype, min_elements=1)
    assert isinstance(qw["a"], qc.GGUFTensor) and qw["a"].dtype == dtype
    assert_equal_exact(qw["a"].data.reshape(-1), gguf.quants.quantize(w["a"], TYPES[dtype])
                       .reshape(-1), "same bytes as gguf")
    assert_equal_exact(qw["b"].data.reshape(-1),
                       gguf.quants.quantize(w["b"].astype(np.float32), TYPES[dtype]).reshape(-1),
                       "float16 input")
    assert_equal_exact(qw["bias"], w["bias"], "1-D kept")
    rows = {r["name"]: r for r in qw.report().to_list()}
    assert rows["a"]["scheme"] == dtype and rows["a"]["sqnr_db"] > (35 if dtype == "q8_0" else 15)
    # float32 -> 34 bytes per 32 values (3.76x) or 18 bytes (7.1x)
    assert rows["a"]["bytes_after"] * (128 / 34 if dtype == "q8_0" else 128 / 18) == \
        rows["a"]["bytes_before"]
    path = tmp_path / f"w.{ext}"
    qw.save(path)
    back = qc.load_quantized(path)
    for name in ("a", "b"):
        assert back[name].shape == qw[name].shape and back[name].dtype == dtype
        assert_equal_exact(back[name].data, qw[name].data, name)
        assert_equal_exact(back.dequantize()[name], qw[name].dequantize(), name)
    with pytest.raises(ValueError, match="holds .* blocks, which Linear does not run"):
        back.linear("a")


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_quantized_tensor_view(rng, dtype):
    # the documented QuantizedTensor attributes, from the blocks themselves
    x = rng.standard_normal((3, 2, 96)).astype(np.float32)
    x[0, 0, :32] = 0  # an all-zero block: d = 0
    t = qc.quantize_weights({"a": x}, dtype=dtype, min_elements=1)["a"]
    assert (t.axis, t.block_size, t.granularity) == (2, 32, "per_block")
    q, s, z = t.q, t.scale, t.zero_point
    want_dt = np.int8 if dtype == "q8_0" else ml_dtypes.int4
    assert q.shape == x.shape and q.dtype == want_dt and z.dtype == want_dt
    assert s.shape == z.shape == (3, 2, 3) and s.dtype == np.float32 and not z.astype(int).any()
    blocks = t.data.reshape(-1, 34 if dtype == "q8_0" else 18)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32).reshape(-1)
    assert_equal_exact(s.reshape(-1), d, "d")
    lo, hi = (-127, 127) if dtype == "q8_0" else (-8, 7)
    qi = q.astype(np.int32)
    assert lo <= qi.min() and qi.max() <= hi
    if dtype == "q4_0":  # value i in the low nibble of byte i, value i + 16 in its high one
        assert_equal_exact(qi.reshape(-1, 32)[:, :16] + 8,
                           (blocks[:, 2:] & 15).astype(np.int32), "low nibbles")
    assert_equal_exact((qi - z.astype(np.int32).repeat(32, -1)).astype(np.float32) *
                       s.repeat(32, -1),
                       t.dequantize(), "real = (q - zero_point) * scale")


def test_quantize_weights_gguf_bad_shape(rng):
    with pytest.raises(ValueError, match=r"w: dtype='q4_0' needs a last dimension that is a "
                                         r"multiple of 32, got shape \(4, 33\)"):
        qc.quantize_weights({"w": rng.standard_normal((4, 33))}, dtype="q4_0", min_elements=1)


def test_shape_products_do_not_wrap_around(tmp_path):
    """Shapes whose product overflows int64 (np.prod wraps 2**64 to 0) are refused, not
    matched against zero bytes of data."""
    huge = (2 ** 32, 2 ** 32, 32)
    with pytest.raises(ValueError, match="data: expected 627189298506124754944 bytes"):
        qc.GGUFTensor(np.zeros((0, 34), np.uint8), "q8_0", huge)
    for shape in [(-1, 32), (2 ** 64, 0, 32)]:
        with pytest.raises(ValueError, match=r"shape: expected dimensions in \[0, 2\*\*63\)"):
            qc.GGUFTensor(np.zeros((0, 34), np.uint8), "q8_0", shape)
    with pytest.raises(ValueError, match="shape: expected 64 values"):
        qc.dequantize_gguf(np.zeros((2, 34), np.uint8), "q8_0", (2 ** 32, 2 ** 32, 4))
    # the same shape in a quantized-weights file
    qw = qc.quantize_weights({"w": np.ones((4, 64), np.float32)}, dtype="q8_0", min_elements=1)
    tensors, meta = qw._flat()
    m = json.loads(meta["quantc"])
    m["tensors"]["w"]["shape"] = list(huge)
    path = tmp_path / "w.safetensors"
    qc.io.write_tensors(path, {"w": np.zeros((0, 34), np.uint8)}, {"quantc": json.dumps(m)})
    with pytest.raises(ValueError, match=r"w.safetensors: not a valid quantc quantized file: "
                                         r"tensor 'w': q8_0 blocks of shape \(0, 34\)"):
        qc.load_quantized(path)


def _gguf_file(tmp_path, rng):
    path = tmp_path / "m.gguf"
    qc.save_gguf({"a": qc.GGUFTensor.from_float(rng.standard_normal((4, 64)).astype(np.float32)),
                  "b": rng.standard_normal((3, 5)).astype(np.float32)}, path)
    return path


def test_malformed_files_are_value_errors_naming_the_file(tmp_path, rng):
    good = _gguf_file(tmp_path, rng)
    raw = good.read_bytes()
    full = qc.load_gguf(good)
    bad = tmp_path / "bad.gguf"
    for n in range(len(raw)):  # truncated anywhere: an error, or (padding cut) the same tensors
        bad.write_bytes(raw[:n])
        try:
            back = qc.load_gguf(bad)
        except ValueError as e:
            assert str(e).startswith(f"{bad}: "), (n, e)
            continue
        assert set(back) == set(full) and np.array_equal(back["b"], full["b"]), n
    for edit, why in [(lambda b: b"GGUX" + b[4:], "magic"),
                      (lambda b: b.replace(b"general.architecture", b"general.architectur\xff"),
                       "UnicodeDecodeError")]:
        bad.write_bytes(edit(raw))
        with pytest.raises(ValueError, match=f"bad.gguf: not a valid .gguf file .*{why}"):
            qc.load_gguf(bad)
    with pytest.raises(FileNotFoundError, match="nope.gguf: no such file"):
        qc.load_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ValueError, match="expected a file, got a directory"):
        qc.load_gguf(tmp_path)
    w = gguf.GGUFWriter(str(bad), "quantc")
    w.add_tensor("i", np.arange(4, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"bad.gguf: tensor 'i' has type I32, which quantc"):
        qc.load_gguf(bad)


def test_big_endian_file_reads_in_native_order(tmp_path):
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "quantc", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("f", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    back = qc.load_gguf(path)["f"]
    assert back.dtype == np.float32 and back.dtype.isnative
    assert_equal_exact(back, np.arange(6, dtype=np.float32).reshape(2, 3), "f")


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_big_endian_blocks_read_their_scales(tmp_path, rng, kind):
    """A big-endian file stores each block's float16 scale big-endian (llama.cpp's
    gguf_convert_endian swaps it): read back, the blocks equal the little-endian file's."""
    x = rng.standard_normal((3, 64)).astype(np.float32)
    t = qc.GGUFTensor.from_float(x, kind)
    le = tmp_path / "le.gguf"
    qc.save_gguf({"w": t}, le)
    blocks = t.data.reshape(-1, {"q8_0": 34, "q4_0": 18}[kind]).copy()
    blocks[:, :2] = blocks[:, 1::-1].copy()  # the scales as a big-endian file holds them
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "quantc", endianess=gguf.GGUFEndian.BIG)
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    w.add_tensor("w", blocks.reshape(3, -1), raw_shape=blocks.reshape(3, -1).shape,
                 raw_dtype=qtype[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    back = qc.load_gguf(path)["w"]
    assert back.shape == (3, 64)
    assert_equal_exact(back.data, qc.load_gguf(le)["w"].data, "blocks")
    assert_equal_exact(back.dequantize(), t.dequantize(), "values")


def _with_offset(path, name, offset):
    """The bytes of `path` with tensor `name`'s data offset (relative to the data section)
    replaced."""
    import struct
    r = gguf.GGUFReader(str(path))
    part = [t for t in r.tensors if t.name == name][0].field.parts[-1]
    pos = part.ctypes.data - r.data.ctypes.data
    raw = bytearray(path.read_bytes())
    del r, part
    raw[pos:pos + 8] = struct.pack("<Q", offset)
    return bytes(raw)


def test_tensor_byte_ranges_are_checked(tmp_path, rng):
    path = tmp_path / "m.gguf"
    qc.save_gguf({"a": np.ones((2, 32), np.float32), "b": np.full((2, 32), 2, np.float32),
                  "empty": qc.GGUFTensor.from_float(np.zeros((0, 32), np.float32))}, path)
    assert qc.load_gguf(path)["b"][0, 0] == 2  # zero-size tensors may share an offset
    bad = tmp_path / "bad.gguf"
    for offset, msg in [(0, r"tensor 'b' \(bytes \[\d+, \d+\)\) overlaps tensor 'a'"),
                        (128, r"tensor 'b' \(bytes \[\d+, \d+\)\) overlaps tensor 'a'"),
                        (2 ** 64 - 64, r"tensor 'b' .* starts before the data section"),
                        (36, r"tensor 'b' starts at byte 36 of the data section, not "
                             r"a multiple of the alignment \(32\)"),
                        (10 ** 6, "")]:  # past the end: the reader's own error
        bad.write_bytes(_with_offset(path, "b", offset))
        with pytest.raises(ValueError, match="bad.gguf: not a valid .gguf file.*" + msg), \
                warnings.catch_warnings():
            warnings.simplefilter("error")  # the wrapped offset: no overflow warning either
            qc.load_gguf(bad)
    # an empty tensor's offset past the end of the file
    bad.write_bytes(_with_offset(path, "empty", 10 ** 6))
    with pytest.raises(ValueError, match=r"tensor 'empty' .* ends after the file"):
        qc.load_gguf(bad)


SLOW_GGUF = """
import sys, time
import numpy as np
import gguf
import quantc as qc
real = gguf.GGUFWriter.write_tensors_to_file
def slow(self, *a, **k):
    real(self, *a, **k)
    print("writing", flush=True)
    time.sleep(60)
gguf.GGUFWriter.write_tensors_to_file = slow
qc.save_gguf({"a": np.ones((4, 64), np.float32)}, sys.argv[1])
"""


def _temps(folder):
    return [f for f in os.listdir(folder) if ".quantc-tmp-" in f or f.endswith(".tmp")]


def test_save_gguf_sigterm_leaves_no_temporary_file(tmp_path):
    import signal
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "m.gguf"
    target.write_bytes(b"previous contents")
    p = subprocess.Popen([sys.executable, "-c", SLOW_GGUF, str(target)], cwd=root,
                         env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing", p.stderr.read()
    assert len(_temps(tmp_path)) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == -signal.SIGTERM
    assert "Traceback" not in p.stderr.read()
    assert _temps(tmp_path) == [] and target.read_bytes() == b"previous contents"


def test_save_gguf_target_and_write_errors_name_the_file(tmp_path, monkeypatch):
    import errno
    t = {"a": np.ones((4, 64), np.float32)}
    (tmp_path / "d.gguf").mkdir()
    with pytest.raises(ValueError, match=r"d.gguf: expected a file name, got a directory"):
        qc.save_gguf(t, tmp_path / "d.gguf")
    assert os.listdir(tmp_path) == ["d.gguf"]
    with pytest.raises(FileNotFoundError, match="the output folder .* does not exist"):
        qc.save_gguf(t, tmp_path / "no" / "m.gguf")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full)
    target = tmp_path / "m.gguf"
    with pytest.raises(OSError, match="m.gguf: cannot write the file: No space left") as e:
        qc.save_gguf(t, target)
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["d.gguf"]


def test_save_gguf_removes_a_dead_writer_s_temporary_file(tmp_path):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.gguf.quantc-tmp-{dead.pid}-0badf00d"
    stale.write_bytes(b"half a file")
    qc.save_gguf({"a": np.ones((4, 64), np.float32)}, tmp_path / "m.gguf")
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_save_gguf_refuses_what_llama_cpp_refuses(tmp_path):
    path = tmp_path / "m.gguf"
    ok = {"n" * 63: np.ones((1, 1, 1, 32), np.float32),
          "é" * 31 + "x": qc.GGUFTensor.from_float(np.ones((1, 1, 2, 32), np.float32))}
    qc.save_gguf(ok, path)
    assert set(qc.load_gguf(path)) == set(ok)
    before = path.read_bytes()
    for t, msg in [({"n" * 64: np.ones(32, np.float32)}, "64 bytes or more.*got 64 bytes"),
                   ({"é" * 32: np.ones(32, np.float32)}, "got 64 bytes"),
                   ({"a": np.ones((1, 1, 1, 1, 32), np.float32)}, "at most 4 dimensions.*got 5"),
                   ({"a": qc.GGUFTensor.from_float(np.ones((1, 1, 1, 1, 32), np.float32))},
                    "got 5"),
                   ({"\ud800": np.ones(32, np.float32)}, "not valid UTF-8")]:
        with pytest.raises(ValueError, match=r"tensors\[.*\]: .*" + msg):
            qc.save_gguf(t, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.gguf"]
