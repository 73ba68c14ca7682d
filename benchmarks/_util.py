"""Shared benchmark helpers: float baseline environment, alternating timing, table printing.

Measure as PERF.md says: baseline and candidate alternate in one process, several repeats,
median time and the ratio reported; the same thread count on both sides.
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Benchmark the source tree's quantc when it has been built in place (`make build`);
# otherwise whatever `pip install` put on the path.
_ROOT = Path(__file__).resolve().parent.parent
if any((_ROOT / "quantc").glob("_C*.so")) and str(_ROOT) not in sys.path:
    sys.path.insert(1, str(_ROOT))

# A current NumPy is slowed by OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE that this machine may set;
# unset both for the float baseline, in this process only (never in tests or CI). Must run
# before NumPy is imported, so benchmarks import this module first.
for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)


try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_info = None
    threadpool_limits = None


def peer_missing(module):
    """One line on stderr: a peer library is not installed, so its rows are left out."""
    from quantc._optional import install_hint
    print(f"note: {module} is not installed, its rows are left out "
          f"({install_hint(module, 'bench')})", file=sys.stderr)


def blas_info():
    """One line naming NumPy's BLAS library, its kernel (core type) and threads."""
    if threadpool_info is None:
        return "threadpoolctl not installed: BLAS unknown"
    parts = []
    for p in threadpool_info():
        if p.get("user_api") == "blas":
            parts.append(f"{p.get('internal_api')} {p.get('version')} "
                         f"arch={p.get('architecture')} threads={p.get('num_threads')}")
    return "; ".join(parts) or "no BLAS found"


class threads:
    """Context manager: quantc and NumPy's BLAS (and torch, if imported) on n threads."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import quantc as qc
        self._prev = qc.get_num_threads()
        qc.set_num_threads(self.n)
        self._limits = threadpool_limits(self.n) if threadpool_limits else None
        if self._limits is None and os.environ.get("OPENBLAS_NUM_THREADS") != str(self.n):
            print(f"note: threadpoolctl is not installed, NumPy's BLAS is not on {self.n} "
                  f"thread(s) but on OPENBLAS_NUM_THREADS="
                  f"{os.environ.get('OPENBLAS_NUM_THREADS', 'all cores')}", file=sys.stderr)
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            self._torch_prev = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import quantc as qc
        qc.set_num_threads(self._prev)
        if self._limits is not None:
            self._limits.unregister()
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self._torch_prev)


def time_alternating(fns, repeats=7, min_time=0.05, settle=0.05):
    """Time each callable in `fns` (a dict name -> fn), alternating between them.

    Each sample runs a callable enough times to last about `min_time` seconds, after a pause
    of `settle` seconds: thread pools that spin while idle (ONNX Runtime's, OpenMP's, OpenBLAS's,
    quantc's for 0.2 ms) go to sleep before the next library is timed, so every library keeps
    its own default waiting policy. ONNX Runtime's intra-op workers stay busy about 40 ms
    after a run (measured from their /proc schedstat on a 2-core EPYC), so where a whole
    ONNX Runtime session runs between samples (bench_models) a longer pause is passed. A
    longer pause is not the default: on this VM memory-bound 2-thread kernels then measured
    up to 2x slower for every library (caches and idle cores going cold). Returns name ->
    median seconds per call.
    """
    loops = {}
    for name, fn in fns.items():
        fn()  # warm up (page faults, lazy packing, thread start)
        n, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            t = time.perf_counter() - t0
            if t >= min_time or n >= 1 << 20:
                break
            n *= 2 if t == 0 else max(2, int(min_time / t * 1.2))
        loops[name] = n
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = loops[name]
            time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def print_table(title, header, rows, file=sys.stdout):
    """Print rows (lists of str/number) under `header` as an aligned text table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    print(f"\n## {title}", file=file)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=file)
    file.flush()


def ort_session(model, nthreads):
    """An ONNX Runtime CPU session for an onnx `model` on `nthreads` intra-op threads, with
    ONNX Runtime's default spinning between runs (time_alternating lets it settle)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = nthreads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
