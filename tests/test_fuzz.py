"""Bounded fuzzing of every public function (issue 13): random dtypes, shapes, strides
(reversed, transposed, strided, broadcast, byte-swapped), scales, zero points and out=
arguments. Every call either raises a clear TypeError/ValueError, or returns the result that
the same call gives on C-contiguous copies of its inputs, without out=, on the scalar kernels
(the ground truth the other tests check against references) -- and never modifies its inputs.
The example counts keep the whole file to well under a minute (QUANTC_FUZZ_EXAMPLES scales it)."""
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import quantc as qc  # noqa: E402

from conftest import assert_equal_exact, isa_cap  # noqa: E402

EXAMPLES = int(os.environ.get("QUANTC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

FLOATS = [np.float32, np.float64, np.float16]
Q8 = [np.int8, np.uint8]
INTS = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64]
ANY = FLOATS + INTS + [np.bool_]


def _elements(dt):
    dt = np.dtype(dt)
    if dt.kind == "f":
        lim = 6e4 if dt.itemsize == 2 else 1e6
        return st.floats(width=min(dt.itemsize * 8, 64), allow_nan=False, min_value=-lim,
                         max_value=lim) | st.sampled_from([0.0, -0.0, 0.5, -1.5, 2.5])
    if dt.kind == "b":
        return st.booleans()
    info = np.iinfo(dt)
    return st.integers(int(info.min), int(info.max))


@st.composite
def view_of(draw, a):
    """The values of `a` laid out in one of the ways an input can arrive."""
    mode = draw(st.integers(0, 6))
    if mode == 1 and a.ndim:
        return np.flip(a, draw(st.integers(0, a.ndim - 1)))
    if mode == 2:
        return a.T
    if mode == 3 and a.ndim:
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if mode == 4 and a.dtype.itemsize > 1:
        return a.byteswap().view(a.dtype.newbyteorder())
    if mode == 5 and a.ndim and a.shape[0] == 1:
        return np.broadcast_to(a, (3,) + a.shape[1:])
    if mode == 6:
        return np.asfortranarray(a)
    return a


@st.composite
def arrays(draw, dtypes, min_dims=0, max_dims=4, max_side=6, shape=None, wild=0.1):
    if draw(st.floats(0, 1)) < wild:
        dtypes = ANY
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                      max_side=max_side))
    a = draw(hnp.arrays(dt, shape, elements=_elements(dt)))
    return draw(view_of(a))


SCALE_VALUES = st.sampled_from([1e-45, 1e-30, 1e-3, 0.02, 0.1, 0.5, 1.0, 3.0, 1e10, 1e30, 3e38,
                                0.0, -1.0, np.inf, np.nan, 2**2000])
GOOD_SCALE = st.sampled_from([0.01, 0.05, 0.1, 0.25, 1.0, 2.0])


@st.composite
def scales(draw, n=None):
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return draw(GOOD_SCALE)
    if kind == 3:
        return draw(SCALE_VALUES)
    size = n if n is not None and draw(st.booleans()) else draw(st.integers(0, 4))
    vals = draw(st.lists(GOOD_SCALE | SCALE_VALUES.filter(lambda v: v != 2**2000),
                         min_size=size, max_size=size))
    with np.errstate(all="ignore"):
        return np.array(vals, np.float64).astype(draw(st.sampled_from(FLOATS + [np.int32])))


@st.composite
def zero_points(draw, dtypes=Q8, n=None):
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.sampled_from([0, 3, -3, 128, 255, -128, 2**31, 2**64 - 1, -2**63]))
    if kind == 2:
        return np.uint64(draw(st.sampled_from([0, 5, 2**63, 2**64 - 1])))
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    info = np.iinfo(dt)
    if kind <= 5:
        return dt.type(draw(st.integers(max(int(info.min), -128), min(int(info.max), 255))))
    size = n if n is not None and draw(st.booleans()) else draw(st.integers(0, 3))
    return np.array(draw(st.lists(st.integers(max(int(info.min), -128), min(int(info.max), 255)),
                                  min_size=size, max_size=size)), dt)


AXES = st.sampled_from([None, 0, 1, -1, 2, 5, -7, 2**63, True])
BLOCKS = st.sampled_from([None, None, 1, 2, 3, 4, 16, 0, -1, 2**63 - 1, 2**64])
DTYPES = st.sampled_from(["int8", "uint8", np.int8, np.uint8, "int16", "int8\0", None, 3])
PROFILES = st.sampled_from(["onnx", "torch", "tflite", "onnx\0", "bogus", None])


def pair_ints(lo=-1, hi=4):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)),
                     st.just([1, 2**63]))


def pads():
    return st.one_of(st.tuples(*[st.integers(0, 2)] * 4), st.just((0, 0, 0, 0)),
                     st.just((0, -1, 0, 0)), st.just((0, 0)))


@st.composite
def outs(draw, like=None):
    """None, or an out= array of a random (sometimes right) shape and dtype."""
    if draw(st.integers(0, 2)) == 0 or like is None:
        return None
    shape, dt = like
    if draw(st.booleans()):
        dt = draw(st.sampled_from([np.int8, np.uint8, np.float32, np.int32, np.float16]))
    if draw(st.integers(0, 4)) == 0:
        shape = tuple(s + 1 for s in shape)
    o = np.full(shape, 7, dt)
    if draw(st.integers(0, 5)) == 0 and o.ndim:
        o = np.flip(o, -1)
    return o


def _snapshot(obj):
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _same_input(before, after, where):
    if isinstance(before, np.ndarray):
        assert np.array_equal(before, after, equal_nan=before.dtype.kind == "f"), \
            f"{where}: an input was modified"
    elif isinstance(before, (list, tuple)):
        for i, (b, a) in enumerate(zip(before, after)):
            _same_input(b, a, f"{where}[{i}]")


def _contiguous(obj):
    if isinstance(obj, np.ndarray):
        return np.array(obj, dtype=obj.dtype.newbyteorder("="), order="C")  # keeps 0-d
    if isinstance(obj, (list, tuple)):
        return type(obj)(_contiguous(v) for v in obj)
    return obj


def _as_arrays(r):
    if isinstance(r, tuple):
        return [np.asarray(v) for v in r]
    if hasattr(r, "scale"):  # QParams
        return [np.asarray(r.scale), np.asarray(r.zero_point)]
    return [np.asarray(r)]


def run(fn, args, kwargs, out=None, scalar=True):
    """Call fn; on success compare with the contiguous, out-less, scalar-kernel call (with
    scalar=False, at the current ISA: packed weights belong to one kernel variant)."""
    snap_a, snap_k = _snapshot(args), _snapshot(kwargs)
    kw = dict(kwargs)
    if out is not None:
        kw["out"] = out
    try:
        got = fn(*args, **kw)
    except (TypeError, ValueError):
        got = None
    except MemoryError as e:  # only for sizes that really do not fit, with the argument named
        assert ":" in str(e), f"bare MemoryError: {e!r}"
        got = None
    _same_input(snap_a, args, "args")
    _same_input(list(snap_k.values()), list(kwargs.values()), "kwargs")
    if got is None:
        return
    if out is not None:
        assert got is out or (isinstance(got, tuple) and got[0] is out), "result is not out="
    with isa_cap("scalar" if scalar else qc.cpu_info()["isa_cap"]):
        want = fn(*_contiguous(args), **_contiguous(kwargs))
    for g, w in zip(_as_arrays(got), _as_arrays(want)):
        assert_equal_exact(g, w, f"{getattr(fn, '__name__', fn)}")


# ---- element-wise ----

@FUZZ
@given(st.data())
def test_fuzz_quantize(data):
    x = data.draw(arrays(FLOATS))
    n = x.shape[0] if x.ndim else None
    args = (x, data.draw(scales(n)), data.draw(zero_points(n=n)), data.draw(DTYPES))
    kw = {"axis": data.draw(AXES), "block_size": data.draw(BLOCKS),
          "profile": data.draw(PROFILES)}
    run(qc.quantize, args, kw, data.draw(outs((x.shape, np.int8))))


@FUZZ
@given(st.data())
def test_fuzz_dequantize(data):
    q = data.draw(arrays(Q8))
    n = q.shape[0] if q.ndim else None
    args = (q, data.draw(scales(n)), data.draw(zero_points(n=n)))
    kw = {"axis": data.draw(AXES), "block_size": data.draw(BLOCKS)}
    run(qc.dequantize, args, kw, data.draw(outs((q.shape, np.float32))))


@FUZZ
@given(st.data())
def test_fuzz_fake_quantize(data):
    x = data.draw(arrays(FLOATS))
    n = x.shape[-1] if x.ndim else None
    args = (x, data.draw(scales(n)), data.draw(zero_points(n=n)), data.draw(DTYPES))
    kw = {"axis": data.draw(AXES), "block_size": data.draw(BLOCKS),
          "qmin": data.draw(st.sampled_from([None, -8, 0, 2**40])),
          "qmax": data.draw(st.sampled_from([None, 7, 100, -300])),
          "profile": data.draw(PROFILES), "return_mask": data.draw(st.booleans())}
    run(qc.fake_quantize, args, kw, data.draw(outs((x.shape, np.float32))))


@FUZZ
@given(st.data())
def test_fuzz_choose_qparams_and_dynamic(data):
    x = data.draw(arrays(FLOATS))
    kw = {"dtype": data.draw(DTYPES), "symmetric": data.draw(st.booleans()),
          "axis": data.draw(AXES), "block_size": data.draw(BLOCKS),
          "narrow_range": data.draw(st.booleans()), "reduce_range": data.draw(st.booleans()),
          "profile": data.draw(PROFILES)}
    run(qc.choose_qparams, (x,), kw)
    run(qc.quantize_dynamic, (x, data.draw(DTYPES)), {})


@FUZZ
@given(st.data())
def test_fuzz_conversions(data):
    x = data.draw(arrays(FLOATS + INTS))
    o = data.draw(outs((x.shape, np.float32)))
    run(qc.round, (x, data.draw(st.sampled_from(["half_even", "half_away", "floor", "trunc",
                                                  "ceil", "half_up", "x", "floor\0"]))), {}, o)
    run(qc.clamp, (x, data.draw(st.sampled_from([-3, 0, -1.5, 2**70, np.nan])),
                   data.draw(st.sampled_from([5, 0, 100.5, -10]))), {})
    run(qc.saturate_cast, (x, data.draw(DTYPES)), {})
    run(qc.to_float16, (x,), {})
    run(qc.to_bfloat16, (x,), {})
    run(qc.from_bfloat16, (data.draw(arrays([np.uint16])),), {})
    run(qc.quantize_multiplier, (data.draw(arrays(FLOATS, max_dims=2)),), {})


# ---- integer arithmetic ----

@FUZZ
@given(st.data())
def test_fuzz_requantize(data):
    acc = data.draw(arrays([np.int32]))
    n = acc.shape[0] if acc.ndim else None
    axis = data.draw(st.sampled_from([None, 0, -1, 3]))
    dt = data.draw(DTYPES)
    out = data.draw(outs((acc.shape, np.int8)))
    run(qc.requantize, (acc, data.draw(scales(n)), data.draw(zero_points(INTS, n)), dt),
        {"axis": axis}, out)
    m = data.draw(st.sampled_from([1 << 30, 2**31 - 1, 0, -1, 2**31, np.uint64(2**64 - 1)]))
    sh = data.draw(st.sampled_from([0, -3, 5, 31, -31, 32, np.uint64(2**64 - 1)]))
    run(qc.requantize_fixed, (acc, m, sh, data.draw(zero_points(INTS, n)), dt), {"axis": axis},
        out)


@FUZZ
@given(st.data())
def test_fuzz_matmul(data):
    k = data.draw(st.integers(0, 9))
    a = data.draw(arrays(Q8, min_dims=1, max_dims=3, shape=data.draw(
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)) + (k,)))
    b = data.draw(arrays(Q8, shape=(k if data.draw(st.integers(0, 5)) else k + 1,
                                    data.draw(st.integers(0, 20)))))
    m = a.shape[-2] if a.ndim >= 2 else 1
    azp = data.draw(zero_points(n=m))
    bzp = data.draw(zero_points(n=b.shape[1]))
    if data.draw(st.booleans()):
        try:
            b = qc.pack_matrix(b)
        except (TypeError, ValueError):
            return
    shape = a.shape[:-1] + (b.shape[1],)
    scalar = isinstance(b, np.ndarray)
    run(qc.matmul_integer, (a, b, azp, bzp), {}, data.draw(outs((shape, np.int32))), scalar)
    run(qc.qlinear_matmul, (a, data.draw(scales()), azp, b, data.draw(scales(b.shape[1])), bzp,
                            data.draw(scales()), data.draw(zero_points())),
        {"bias": data.draw(st.one_of(st.none(), arrays([np.int32], shape=(b.shape[1],)))),
         "relu": data.draw(st.booleans())}, data.draw(outs((shape, np.int8))), scalar)


@FUZZ
@given(st.data())
def test_fuzz_linear(data):
    n, k = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    w = data.draw(arrays(FLOATS, shape=(n, k)))
    try:
        layer = qc.Linear.from_float(w, data.draw(st.one_of(st.none(), arrays(FLOATS, shape=(n,)))),
                                     per_channel=data.draw(st.booleans()),
                                     dtype=data.draw(st.sampled_from(["int8", "uint8"])))
    except (TypeError, ValueError):
        return
    x = data.draw(arrays(FLOATS, max_dims=3, shape=data.draw(
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)) + (k,)))
    run(layer, (x,), {}, data.draw(outs((x.shape[:-1] + (n,), np.float32))), scalar=False)


# ---- convolution and the operator set ----

@FUZZ
@given(st.data())
def test_fuzz_conv(data):
    x = data.draw(arrays(Q8, shape=tuple(data.draw(st.lists(st.integers(0, 7), min_size=4,
                                                           max_size=4)))))
    group = data.draw(st.sampled_from([1, 1, 2, 0]))
    c = x.shape[1] if x.ndim == 4 else 1
    w = data.draw(arrays(Q8, shape=(data.draw(st.integers(0, 5)) * max(group, 1),
                                    max(c // max(group, 1), 1), data.draw(st.integers(1, 3)),
                                    data.draw(st.integers(1, 3)))))
    kw = {"strides": data.draw(pair_ints(0, 3)), "pads": data.draw(pads()),
          "dilations": data.draw(pair_ints(0, 2)), "group": group}
    wzp = data.draw(zero_points(n=w.shape[0]))
    run(qc.conv_integer, (x, w, data.draw(zero_points()), wzp), kw)
    run(qc.qlinear_conv, (x, data.draw(scales()), data.draw(zero_points()), w,
                          data.draw(scales(w.shape[0])), wzp, data.draw(scales()),
                          data.draw(zero_points())), dict(kw, relu=data.draw(st.booleans())))


@FUZZ
@given(st.data())
def test_fuzz_pool(data):
    q = data.draw(arrays(Q8, shape=tuple(data.draw(st.lists(st.integers(0, 9), min_size=4,
                                                           max_size=4)))))
    kernel = data.draw(pair_ints(0, 4))
    kw = {"strides": data.draw(st.one_of(st.none(), pair_ints(0, 3))), "pads": data.draw(pads())}
    run(qc.max_pool2d, (q, kernel), kw)
    run(qc.avg_pool2d, (q, data.draw(scales()), data.draw(zero_points()), data.draw(scales()),
                        data.draw(zero_points()), kernel),
        dict(kw, count_include_pad=data.draw(st.booleans())))
    run(qc.global_avg_pool, (q, data.draw(scales()), data.draw(zero_points()),
                             data.draw(scales()), data.draw(zero_points())), {})


@FUZZ
@given(st.data())
def test_fuzz_add_concat(data):
    a = data.draw(arrays(Q8, max_dims=3))
    b = data.draw(st.one_of(arrays(Q8, shape=a.shape), arrays(Q8, max_dims=3)))
    run(qc.qlinear_add, (a, data.draw(scales()), data.draw(zero_points()), b, data.draw(scales()),
                         data.draw(zero_points()), data.draw(scales()), data.draw(zero_points())),
        {"relu": data.draw(st.booleans())})
    parts = [(a, data.draw(scales()), data.draw(zero_points()))]
    for _ in range(data.draw(st.integers(0, 3))):
        shape = list(a.shape)
        if shape:
            shape[-1 if a.ndim == 1 else 1] = data.draw(st.integers(0, 4))
        parts.append((data.draw(arrays(Q8, shape=tuple(shape))), data.draw(scales()),
                      data.draw(zero_points())))
    run(qc.qlinear_concat, (parts, data.draw(scales()), data.draw(zero_points())),
        {"axis": data.draw(st.sampled_from([1, 0, -1, 3, 2**63]))})


# ---- calibration and weights ----

@settings(FUZZ, max_examples=max(EXAMPLES // 4, 5))
@given(st.data())
def test_fuzz_observers_and_weights(data):
    x = data.draw(arrays(FLOATS, min_dims=1, max_dims=3))
    for obs in (qc.MinMaxObserver(), qc.MovingAverageMinMaxObserver(), qc.PercentileObserver(),
                qc.HistogramObserver(bins=64, method="mse")):
        try:
            obs.update(x)
            obs.qparams(dtype=data.draw(st.sampled_from(["int8", "uint8"])),
                        symmetric=data.draw(st.booleans()))
        except (TypeError, ValueError):
            pass
    snap = x.copy()
    try:
        qc.quantize_weights({"w": x}, min_elements=1,
                            granularity=data.draw(st.sampled_from(["per_tensor", "per_channel",
                                                                   "per_block"])),
                            block_size=data.draw(st.sampled_from([None, 2, 5, 2**63 - 1])),
                            method=data.draw(st.sampled_from(["minmax", "mse", "percentile"])))
    except (TypeError, ValueError):
        pass
    assert np.array_equal(snap, x, equal_nan=True)
