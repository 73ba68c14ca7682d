"""Weight dictionaries: quantize_weights, report, save/load round trips, bad files."""
import json
import math
import os
import pickle
import struct

import numpy as np
import pytest

import quantc as qc
from quantc import io as qio
from conftest import assert_equal_exact

FORMATS = [".npz", ".safetensors"]


def model(rng):
    return {
        "embed.weight": rng.standard_normal((100, 48)).astype(np.float32),
        "layer.0.w": rng.standard_normal((64, 40)).astype(np.float32) * 0.1,
        "layer.0.b": rng.standard_normal(64).astype(np.float32),
        "conv.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
        "small": rng.standard_normal((4, 4)).astype(np.float32),
        "ids": np.arange(2000, dtype=np.int64).reshape(40, 50),
        "f64": rng.standard_normal((33, 65)).astype(np.float64),
        "f16": rng.standard_normal((30, 40)).astype(np.float16),
        "skipme.w": rng.standard_normal((50, 50)).astype(np.float32),
        "scalar": np.array(3.0, np.float32),
        "empty": np.zeros((0, 5000), np.float32),
    }


KEPT = {"layer.0.b", "small", "ids", "skipme.w", "scalar", "empty"}

CONFIGS = [
    dict(granularity="per_tensor"),
    dict(granularity="per_channel"),
    dict(granularity="per_channel", axis=1),
    dict(granularity="per_channel", axis=-1, symmetric=False, narrow_range=False),
    dict(granularity="per_block", block_size=16),
    dict(granularity="per_block", block_size=7, symmetric=False),
    dict(granularity="per_tensor", dtype="uint8", symmetric=False, narrow_range=False),
    dict(granularity="per_channel", dtype="uint8", symmetric=False, method="mse"),
    dict(granularity="per_block", block_size=32, method="percentile"),
    dict(dtype="float16"),
]


def qw_of(rng, **kw):
    return qc.quantize_weights(model(rng), skip=["skip*"], progress=False, **kw)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_bit_identical(tmp_path, rng, cfg, ext):
    w = model(rng)
    qw = qc.quantize_weights(w, skip=["skip*"], progress=False, **cfg)
    path = tmp_path / ("m" + ext)
    qw.save(path)
    back = qc.load_quantized(path)
    assert list(back) == list(qw) == list(w)  # the original order, whatever the format
    a, b = qw.dequantize(), back.dequantize()
    for name in w:
        assert_equal_exact(b[name], a[name], name)
        if name in KEPT:
            assert_equal_exact(back[name], w[name], name)
            assert back[name] is not None and not isinstance(back[name], qc.QuantizedTensor)
        elif cfg.get("dtype") == "float16":
            assert back[name].dtype == np.float16
        else:
            t, u = qw[name], back[name]
            assert isinstance(u, qc.QuantizedTensor)
            for f in ("q", "scale", "zero_point"):
                assert_equal_exact(getattr(u, f), getattr(t, f), f"{name}.{f}")
            assert (u.axis, u.block_size, u.dtype, u.shape) == (t.axis, t.block_size, t.dtype,
                                                                 t.shape)
            assert u.orig_dtype == w[name].dtype
    assert back.nbytes == qw.nbytes
    assert back.original_nbytes == qw.original_nbytes
    assert not [p for p in os.listdir(tmp_path) if ".quantc-tmp-" in p or p.endswith(".tmp")]


def test_kept_tensors_unchanged(rng):
    w = model(rng)
    qw = qc.quantize_weights(w, skip=["skip*"], progress=False)
    for name in KEPT:
        assert qw[name] is w[name] or np.array_equal(qw[name], w[name])
        assert qw[name].dtype == w[name].dtype
    for name in set(w) - KEPT:
        assert isinstance(qw[name], qc.QuantizedTensor), name
    rows = {r["name"]: r for r in qw.report()}
    assert all(rows[n]["scheme"] == "kept" for n in KEPT)
    qw2 = qc.quantize_weights(w, min_elements=0, progress=False)
    assert isinstance(qw2["small"], qc.QuantizedTensor)
    assert not isinstance(qw2["layer.0.b"], qc.QuantizedTensor)  # 1-D is never quantized


def test_inputs_not_modified(rng):
    w = model(rng)
    keep = {k: v.copy() for k, v in w.items()}
    qc.quantize_weights(w, method="mse", progress=False)
    for k in w:
        assert_equal_exact(w[k], keep[k], k)


@pytest.mark.parametrize("ext", FORMATS)
def test_any_memory_layout_is_saved_in_c_order(tmp_path, rng, ext):
    """Transposed, Fortran-ordered, strided and 0-d arrays (kept or quantized) come back with
    the values they had, not their memory order read as C order."""
    import ml_dtypes
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    big = rng.standard_normal((48, 64)).astype(np.float32)
    kept = {"t": w.T, "f": np.asfortranarray(w), "neg": w[::-1, ::-2], "zero_d": np.float32(2.5),
            "bf16": np.asfortranarray(w.astype(ml_dtypes.bfloat16)), "ints": [[1, 2], [3, 4]]}
    qw = qc.quantize_weights(dict(kept, big=big.T), progress=False)
    assert isinstance(qw["big"], qc.QuantizedTensor)
    path = tmp_path / ("m" + ext)
    qw.save(path)
    back = qc.load_quantized(path)
    for name, v in kept.items():
        assert_equal_exact(back[name], np.asarray(v), name)
    assert_equal_exact(back.dequantize()["big"], qw.dequantize()["big"], "big")


@pytest.mark.parametrize("ext", FORMATS)
def test_big_endian_arrays_are_saved_as_their_values(tmp_path, rng, ext):
    be = {"f4": np.arange(4, dtype=">f4"), "i8": np.arange(-3, 3, dtype=">i8").reshape(2, 3),
          "f2": np.float16([1.5, -2]).astype(">f2"), "u2": np.arange(3, dtype=">u2")}
    qw = qc.quantize_weights(dict(be, w=rng.standard_normal((48, 64)).astype(">f4")),
                             progress=False)
    assert isinstance(qw["w"], qc.QuantizedTensor)
    path = tmp_path / ("m" + ext)
    qw.save(path)
    back = qc.load_quantized(path)
    for name, v in be.items():
        assert back[name].dtype.isnative and back[name].dtype == v.dtype.newbyteorder("=")
        assert np.array_equal(back[name], v), name
    assert_equal_exact(back.dequantize()["w"], qw.dequantize()["w"], "w")


@pytest.mark.parametrize("gran,kw", [("per_tensor", {}), ("per_channel", {}),
                                     ("per_channel", dict(axis=1)),
                                     ("per_block", dict(block_size=10))])
@pytest.mark.parametrize("symmetric", [True, False])
def test_minmax_matches_reference(rng, gran, kw, symmetric):
    x = rng.standard_normal((24, 45)).astype(np.float32)
    qt = qc.quantize_weights({"w": x}, granularity=gran, symmetric=symmetric, min_elements=0,
                             progress=False, **kw)["w"]
    if gran == "per_tensor":
        mn, mx, axis, bs = x.min(), x.max(), None, None
    elif gran == "per_channel":
        a = kw.get("axis", 0)
        mn, mx, axis, bs = x.min(axis=1 - a), x.max(axis=1 - a), a, None
    else:
        b = kw["block_size"]
        pad = np.pad(x, ((0, 0), (0, -x.shape[1] % b)), constant_values=np.nan)
        blocks = pad.reshape(24, -1, b)
        mn, mx, axis, bs = np.nanmin(blocks, -1), np.nanmax(blocks, -1), 1, b
    qp = qc.choose_qparams(min_val=mn, max_val=mx, dtype="int8", symmetric=symmetric,
                           axis=axis, block_size=bs, narrow_range=True)
    assert_equal_exact(qt.scale, np.asarray(qp.scale, np.float32), "scale")
    assert_equal_exact(qt.zero_point, np.asarray(qp.zero_point), "zero_point")
    want = qc.quantize(x, qp.scale, qp.zero_point, "int8", axis=axis, block_size=bs)
    assert_equal_exact(qt.q, want, "q")
    assert (qt.axis, qt.block_size) == (axis, bs)


@pytest.mark.parametrize("gran,kw", [("per_tensor", {}), ("per_channel", {}),
                                     ("per_block", dict(block_size=1024))])
@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_beats_minmax_on_heavy_tails(rng, gran, kw, symmetric):
    # Student-t with 2 degrees of freedom: rare huge values stretch the min/max range
    x = (rng.standard_t(2, size=(16, 8192)) * 0.02).astype(np.float32)

    def mse(method):
        qw = qc.quantize_weights({"w": x}, granularity=gran, method=method, symmetric=symmetric,
                                 progress=False, **kw)
        return float(np.mean((qw.dequantize()["w"].astype(np.float64) - x) ** 2))

    assert mse("mse") < mse("minmax")


def test_percentile_clips(rng):
    x = (rng.standard_t(2, size=(8, 4096))).astype(np.float32)
    qw = qc.quantize_weights({"w": x}, method="percentile", percentile=99.0,
                             granularity="per_channel", symmetric=False, progress=False)
    row = qw.report()[0]
    assert 0.5 < row["clipped_pct"] < 3.0
    lo, hi = np.percentile(x, [1.0, 99.0], axis=1)
    qp = qc.choose_qparams(min_val=lo.astype(np.float32), max_val=hi.astype(np.float32),
                           symmetric=False, axis=0, narrow_range=True)
    assert_equal_exact(qw["w"].scale, np.asarray(qp.scale, np.float32), "scale")


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "uint4"])
@pytest.mark.parametrize("method", ["percentile", "mse"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_block"])
def test_clipped_values_stay_in_the_narrow_range(rng, dtype, method, granularity):
    # the qparams were chosen for the narrow range, but the values clipped by percentile or
    # mse saturated to the full one (-128 for int8, a weight outside the chosen range)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    x[0, 0], x[3, 7] = -40.0, 35.0
    for symmetric in (True, False):
        qt = qc.quantize_weights({"w": x}, dtype=dtype, method=method, symmetric=symmetric,
                                 granularity=granularity, min_elements=0,
                                 **({"block_size": 64} if granularity == "per_block" else {}),
                                 progress=False)["w"]
        q = np.asarray(qt.q).astype(np.int32)
        lo, hi = qc.qrange(dtype, narrow_range=True)
        assert lo <= q.min() and q.max() <= hi, (symmetric, q.min(), q.max())


def test_report_contents(rng):
    w = model(rng)
    qw = qc.quantize_weights(w, skip=["skip*"], progress=False)
    rep = qw.report()
    rows = rep.to_list()
    assert [r["name"] for r in rows] == list(w)
    json.dumps(rows, allow_nan=False)
    json.loads(rep.to_json())
    deq = qw.dequantize()
    for r in rows:
        assert set(r) == {"name", "shape", "scheme", "bytes_before", "bytes_after", "sqnr_db",
                          "max_abs_error", "clipped_pct"}
        x = w[r["name"]]
        assert r["bytes_before"] == x.nbytes
        assert r["shape"] == list(x.shape)
        if r["name"] in KEPT:
            assert r["sqnr_db"] is None and r["bytes_after"] == x.nbytes
            continue
        e = x.astype(np.float64) - deq[r["name"]].astype(np.float64)
        want = 10 * math.log10(np.sum(x.astype(np.float32).astype(np.float64) ** 2)
                               / np.sum(e ** 2))
        assert r["sqnr_db"] == pytest.approx(want, rel=1e-6)
        assert r["max_abs_error"] == pytest.approx(np.abs(e).max(), rel=1e-6)
        assert r["clipped_pct"] == 0.0
        assert r["sqnr_db"] > 35
    text = str(rep)
    for name in w:
        assert name in text
    assert "of the original" in text
    assert qw.original_nbytes == sum(v.nbytes for v in w.values())
    assert qw.nbytes < qw.original_nbytes
    assert qw.compression_ratio == qw.original_nbytes / qw.nbytes


def test_compression_close_to_four(rng):
    w = {"a": rng.standard_normal((256, 1024)).astype(np.float32)}
    assert qc.quantize_weights(w, progress=False).compression_ratio > 3.95
    assert qc.quantize_weights(w, granularity="per_tensor", progress=False).compression_ratio > 3.99
    assert 1.99 < qc.quantize_weights(w, dtype="float16", progress=False).compression_ratio <= 2


@pytest.mark.parametrize("ext", FORMATS)
def test_path_input_equals_dict_input(tmp_path, rng, ext):
    w = {k: v for k, v in model(rng).items() if k not in ("scalar", "empty")}
    path = tmp_path / ("f" + ext)
    qio.write_tensors(path, w)
    a = qc.quantize_weights(w, progress=False)
    b = qc.quantize_weights(path, progress=False)
    b2 = qc.quantize_weights(str(path), progress=False)
    da, db = a.dequantize(), b.dequantize()
    assert set(da) == set(db) == set(b2)
    for k in da:
        assert_equal_exact(db[k], da[k], k)


def test_nan_names_the_tensor(rng):
    w = model(rng)
    w["layer.0.w"][3, 5] = np.nan
    with pytest.raises(ValueError, match=r"layer\.0\.w: expected no NaN values, got 1 NaN"):
        qc.quantize_weights(w, progress=False)
    with pytest.raises(ValueError, match=r"layer\.0\.w"):
        qc.quantize_weights(w, dtype="float16", progress=False)
    # the index is the NaN's in the tensor, whatever layout the ranges are taken in
    c = np.zeros((4, 3, 2, 2), np.float32)
    c[2, 0, 1, 1] = c[3, 1, 0, 0] = np.nan
    for kw in (dict(granularity="per_channel", axis=1), dict(granularity="per_channel", axis=-1),
               dict(granularity="per_tensor"), dict(granularity="per_block", block_size=5)):
        with pytest.raises(ValueError, match=r"^c: expected no NaN values, got 2 NaN values, the "
                                             r"first at index \(2, 0, 1, 1\)$"):
            qc.quantize_weights({"c": c}, min_elements=1, progress=False, **kw)


def test_inf_names_the_tensor(rng):
    w = model(rng)
    w["conv.weight"][1, 2, 0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"conv\.weight: expected finite values"):
        qc.quantize_weights(w, progress=False)


def test_file_is_read_one_tensor_at_a_time(tmp_path, rng, monkeypatch):
    import weakref
    path = tmp_path / "big.safetensors"
    qio.write_tensors(path, {f"w{i}": rng.standard_normal((64, 64)).astype(np.float32)
                             for i in range(6)})
    alive = []
    real_read = qio.TensorReader.read

    def read(self, name):
        arr = real_read(self, name)
        # every float tensor read before this one must have been released already
        assert all(ref() is None for ref in alive), f"{name}: an earlier tensor is still held"
        alive.append(weakref.ref(arr))
        return arr

    monkeypatch.setattr(qio.TensorReader, "read", read)
    qw = qc.quantize_weights(path, progress=False)
    assert len(qw) == 6 and len(alive) == 6


def test_bad_arguments(rng):
    w = {"w": np.ones((40, 40), np.float32)}
    with pytest.raises(ValueError, match="granularity"):
        qc.quantize_weights(w, granularity="per_row")
    with pytest.raises(ValueError, match="block_size"):
        qc.quantize_weights(w, granularity="per_block")
    with pytest.raises(ValueError, match="block_size"):
        qc.quantize_weights(w, block_size=4)
    with pytest.raises(ValueError, match="method"):
        qc.quantize_weights(w, method="kl")
    with pytest.raises(ValueError, match="dtype"):
        qc.quantize_weights(w, dtype="int3")
    with pytest.raises(ValueError, match="axis"):
        qc.quantize_weights(w, axis=2)
    with pytest.raises(TypeError, match="weights"):
        qc.quantize_weights(42)
    with pytest.raises(ValueError, match=r"weights\['s'\]: expected a numeric array"):
        qc.quantize_weights({"s": np.array(["a", "b"])})
    with pytest.raises(ValueError, match="min_elements"):
        qc.quantize_weights(w, min_elements=-1)


def test_progress_forced_on_prints(rng, capsys):
    qc.quantize_weights({"a": np.ones((40, 40), np.float32)}, progress=True)
    assert "quantizing" in capsys.readouterr().err
    qc.quantize_weights({"a": np.ones((40, 40), np.float32)}, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- bad files

def st_file(tmp_path, rng):
    path = tmp_path / "w.safetensors"
    qio.write_tensors(path, {"a": rng.standard_normal((64, 64)).astype(np.float32),
                             "b": np.arange(10, dtype=np.int8)})
    return path


def npz_file(tmp_path, rng):
    path = tmp_path / "w.npz"
    qio.write_tensors(path, {"a": rng.standard_normal((64, 64)).astype(np.float32),
                             "b": np.arange(10, dtype=np.int8)})
    return path


def test_missing_file(tmp_path):
    for ext in FORMATS:
        with pytest.raises(FileNotFoundError, match="no such file"):
            qc.quantize_weights(tmp_path / ("nope" + ext))
        with pytest.raises(FileNotFoundError):
            qc.load_quantized(tmp_path / ("nope" + ext))
    with pytest.raises(ValueError, match=r"expected a \.safetensors or \.npz"):
        qc.quantize_weights(tmp_path / "w.h5")
    for ext in (".pt", ".pth", ".bin"):  # pickles are never loaded, present or not
        with pytest.raises(ValueError, match="not supported.*save the weights with safetensors"):
            qc.quantize_weights(tmp_path / ("w" + ext))


@pytest.mark.parametrize("cut", [0, 4, 8, 20, 100, -1, -100])
def test_truncated_safetensors(tmp_path, rng, cut):
    path = st_file(tmp_path, rng)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
        qc.quantize_weights(path, progress=False)


def test_corrupted_safetensors_headers(tmp_path, rng):
    path = st_file(tmp_path, rng)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]

    def write(h, body=data, length=None):
        hb = json.dumps(h).encode()
        path.write_bytes(struct.pack("<Q", len(hb) if length is None else length) + hb + body)

    cases = [
        (dict(header, a=dict(header["a"], data_offsets=[0, 10 ** 9])), "occupies bytes"),
        (dict(header, a=dict(header["a"], shape=[64, 65])), "needs"),
        (dict(header, a=dict(header["a"], dtype="Q9")), "unsupported dtype"),
        (dict(header, a=dict(header["a"], shape=[-1, 64])), "bad entry"),
        (dict(header, a="zzz"), "bad entry"),
        (dict(header, __metadata__={"x": 1}), "__metadata__"),
        ([1, 2], "not a JSON object"),
    ]
    for h, msg in cases:
        write(h)
        with pytest.raises(ValueError, match=msg):
            qc.quantize_weights(path, progress=False)
    write(header, length=2 ** 62)
    with pytest.raises(ValueError, match="header length"):
        qc.quantize_weights(path, progress=False)
    path.write_bytes(struct.pack("<Q", 5) + b"{{{{{" + data)
    with pytest.raises(ValueError, match="not valid JSON"):
        qc.quantize_weights(path, progress=False)


@pytest.mark.parametrize("cut", [0, 10, 100, -10, -200])
def test_truncated_npz(tmp_path, rng, cut):
    path = npz_file(tmp_path, rng)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(ValueError, match="w.npz"):
        qc.quantize_weights(path, progress=False)


def test_npz_garbage_in_member(tmp_path, rng):
    path = npz_file(tmp_path, rng)
    raw = bytearray(path.read_bytes())
    i = raw.find(b"\x93NUMPY")
    raw[i:i + 6] = b"GARBAG"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="w.npz"):
        qc.quantize_weights(path, progress=False)


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, obj=np.array([{"a": 1}, None], dtype=object),
             w=np.ones((40, 40), np.float32))
    with pytest.raises(ValueError, match="p.npz.*'obj'"):
        qc.quantize_weights(path, progress=False)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"w": np.ones(3)}))
    with pytest.raises(ValueError, match="raw.npz"):
        qc.quantize_weights(raw, progress=False)


def test_non_numeric_arrays_in_files(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, s=np.array(["a", "bc"]), w=np.ones((40, 40), np.float32))
    with pytest.raises(ValueError, match="'s': expected a numeric array"):
        qc.quantize_weights(path, progress=False)


def test_output_folder_missing(tmp_path, rng):
    qw = qw_of(rng)
    for ext in FORMATS:
        target = tmp_path / "no" / "such" / ("out" + ext)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            qw.save(target)
        assert not target.parent.exists()
    with pytest.raises(ValueError, match="expected a .safetensors or .npz"):
        qw.save(tmp_path / "out.bin")


@pytest.mark.parametrize("ext", FORMATS)
def test_interrupted_save_leaves_old_file(tmp_path, rng, monkeypatch, ext):
    qw = qw_of(rng)
    path = tmp_path / ("out" + ext)
    path.write_bytes(b"previous contents")

    def boom(*a, **k):
        raise KeyboardInterrupt("crash mid-write")

    if ext == ".npz":
        monkeypatch.setattr(np.lib.format, "write_array", boom)
    else:
        import safetensors.numpy
        monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        qw.save(path)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("ext", FORMATS)
def test_load_quantized_rejects_tampered_files(tmp_path, rng, ext):
    qw = qw_of(rng)
    tensors, meta = qw._flat()
    path = tmp_path / ("t" + ext)
    qio.write_tensors(path, {k: v for k, v in tensors.items() if k != "small"})
    with pytest.raises(ValueError, match="no 'quantc' metadata"):
        qc.load_quantized(path)

    def check(tensors, meta, msg):
        qio.write_tensors(path, tensors, meta)
        with pytest.raises(ValueError, match=msg):
            qc.load_quantized(path)

    bad = dict(tensors)
    bad["embed.weight::scale"] = bad["embed.weight::scale"][:-1]
    check(bad, meta, "scale/zero_point shapes")
    bad = dict(tensors)
    s = bad["embed.weight::scale"].copy()
    s[0] = -1
    bad["embed.weight::scale"] = s
    check(bad, meta, "positive")
    bad = dict(tensors)
    del bad["embed.weight::zero_point"]
    check(bad, meta, "missing")
    bad = dict(tensors)
    bad["embed.weight"] = bad["embed.weight"].astype(np.uint8)
    check(bad, meta, "dtype")
    m = json.loads(meta["quantc"])
    m["version"] = 99
    check(tensors, {"quantc": json.dumps(m)}, "version")
    check(tensors, {"quantc": "{nope"}, "not JSON")
    m = json.loads(meta["quantc"])
    m["tensors"]["ghost"] = m["tensors"]["embed.weight"]
    check(tensors, {"quantc": json.dumps(m)}, "ghost")
    m = json.loads(meta["quantc"])
    m["tensors"]["embed.weight"]["axis"] = 7
    check(tensors, {"quantc": json.dumps(m)}, "inconsistent granularity")


@pytest.mark.parametrize("ext", FORMATS)
def test_load_quantized_metadata_of_the_wrong_type(tmp_path, rng, ext):
    """Metadata values of the wrong JSON type are ValueErrors naming the file, never an
    AttributeError or a TypeError from inside the reader."""
    qw = qw_of(rng)
    tensors, meta = qw._flat()
    path = tmp_path / ("t" + ext)
    edits = [(lambda m: m["tensors"].__setitem__("embed.weight", 5),
              "tensor 'embed.weight': bad metadata \\(expected an object, got int\\)"),
             (lambda m: m["tensors"].__setitem__("layer.0.w", ["x"]), "got list"),
             (lambda m: m["tensors"]["embed.weight"].__setitem__("method", {"a": 1}),
              "'method' is a dict, not a string"),
             (lambda m: m.__setitem__("order", [["embed.weight"], "small"]),
              "metadata 'order' is not a list of tensor names"),
             (lambda m: m.__setitem__("order", "embed.weight"), "'order' is not a list")]
    for edit, msg in edits:
        m = json.loads(meta["quantc"])
        edit(m)
        qio.write_tensors(path, tensors, {"quantc": json.dumps(m)})
        with pytest.raises(ValueError, match=f"t{ext}: not a valid quantc quantized file: .*{msg}"):
            qc.load_quantized(path)
    m = json.loads(meta["quantc"])  # an order naming other tensors is ignored (file order)
    m["order"] = ["nope"]
    qio.write_tensors(path, tensors, {"quantc": json.dumps(m)})
    assert set(qc.load_quantized(path)) == set(qw)


def test_quantized_tensor_api(rng):
    qt = qw_of(rng)["embed.weight"]
    assert qt.q.dtype == np.int8 and qt.dtype == np.int8
    assert qt.shape == (100, 48) and qt.axis == 0 and qt.block_size is None
    assert qt.scale.shape == (100,) and qt.zero_point.shape == (100,)
    d = qt.dequantize()
    assert d.dtype == np.float32 and d.shape == (100, 48)
    assert "per_channel" in repr(qt)


def test_report_independent_of_threads(rng):
    from conftest import num_threads
    w = {"a": rng.standard_normal((300, 700)).astype(np.float32),
         "b": rng.standard_normal((64, 1000)).astype(np.float32)}
    reps = []
    for n in (1, 2):
        with num_threads(n):
            for g, kw in (("per_tensor", {}), ("per_channel", {}),
                          ("per_block", {"block_size": 64})):
                reps.append(qc.quantize_weights(w, granularity=g, method="mse", progress=False,
                                                **kw).report().to_list())
    assert reps[:3] == reps[3:]


@pytest.mark.parametrize("dtype", ["int8", "int4", "q8_0", "float16"])
def test_big_endian_weights_as_native(tmp_path, rng, dtype):
    """A '>f8' / '>f4' tensor is the same float64 / float32 values: the same report (float64
    stats for float64), the same orig_dtype name in the file and the same tensors."""
    w = {"f64": rng.standard_normal((32, 64)), "f32": rng.standard_normal((32, 64))
         .astype(np.float32)}
    kw = dict(granularity="per_block", block_size=32) if dtype == "int4" else {}
    qws = [qc.quantize_weights({k: v.astype(v.dtype.newbyteorder(order)) for k, v in w.items()},
                               dtype=dtype, progress=False, min_elements=1, **kw)
           for order in ("=", "S")]
    assert qws[1].report().to_list() == qws[0].report().to_list()
    for qw in qws:
        qw.save(tmp_path / "w.safetensors")
        for name, d in qc.load_quantized(tmp_path / "w.safetensors").dequantize(
                original_dtype=True).items():
            assert d.dtype == w[name].dtype and np.array_equal(d, qws[0].dequantize(
                original_dtype=True)[name]), name


def test_progress_plain_lines_without_tqdm(monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    qc.quantize_weights({"a": np.ones((40, 40), np.float32), "b": np.ones(3)}, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err == ["quantizing 1/2 a", "quantizing 2/2 b"]
