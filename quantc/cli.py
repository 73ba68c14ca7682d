"""The ``quantc`` command line: quantize, inspect, convert, demo and bench (argparse)."""
import argparse
import os
import sys
import time
import warnings

import numpy as np

from . import io as qio
from .examples import DIGITS_WEIGHTS as BUNDLED_MODEL


class CLIError(Exception):
    """An error reported as one line on stderr with exit code 2."""


def _parser():
    p = argparse.ArgumentParser(
        prog="quantc",
        description="Quantize weight files to int8 and see what it costs. Run "
                    "'quantc quantize' to quantize the bundled example model and print the "
                    "report, 'quantc demo' for the example end to end.",
        epilog="Examples:\n  quantc quantize\n"
               "  quantc quantize model.safetensors -o model.int8.safetensors --per-channel\n"
               "  quantc inspect model.int8.safetensors\n  quantc demo\n  quantc bench --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"quantc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser("quantize", help="quantize a .safetensors/.npz weight file",
                       description="Quantize every floating tensor with ndim >= 2 and at least "
                                   "--min-elements elements; print the per-tensor report. "
                                   "Exits with status 2 if nothing would be quantized or the "
                                   "file is already quantized.")
    q.add_argument("input", nargs="?", metavar="IN",
                   help="a .safetensors or .npz file (default: the bundled digits CNN)")
    q.add_argument("-o", "--output", metavar="OUT",
                   help="write the quantized weights here (.safetensors or .npz)")
    q.add_argument("--dtype", choices=("int8", "uint8", "int4", "uint4", "q8_0", "q4_0",
                                       "float16", "bfloat16"),
                   default="int8",
                   help="int8 (default), uint8, int4 or uint4 (packed two per byte; use "
                        "with --block-size) with scales and zero points, q8_0/q4_0 "
                        "(llama.cpp blocks of 32), or float16 / bfloat16 (a plain "
                        "conversion, no scales)")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--per-tensor", dest="granularity", action="store_const",
                   const="per_tensor", help="one scale per tensor")
    g.add_argument("--per-channel", dest="granularity", action="store_const",
                   const="per_channel", help="one scale per output channel (default)")
    g.add_argument("--block-size", type=int, metavar="N",
                   help="one scale per block of N consecutive values along each weight's "
                        "flattened input dimension (in*kh*kw of a conv weight)")
    q.add_argument("--axis", type=int, default=0, help="channel axis for --per-channel "
                                                       "(default 0)")
    q.add_argument("--asymmetric", action="store_true",
                   help="asymmetric ranges with a zero point (default: symmetric)")
    q.add_argument("--method", choices=("minmax", "percentile", "mse"), default="minmax",
                   help="how each range is chosen (default minmax)")
    q.add_argument("--min-elements", type=int, default=1024, metavar="N",
                   help="keep tensors with fewer elements as they are (default 1024)")
    q.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                   help="keep tensors whose name matches this fnmatch pattern (repeatable)")
    q.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    q.add_argument("--progress", dest="progress", action="store_const", const=True,
                   default=None, help="always show a progress bar")
    q.add_argument("--no-progress", dest="progress", action="store_const", const=False)

    i = sub.add_parser("inspect", help="per-tensor table of a float or quantized file",
                       description="Print one row per tensor of a .safetensors or .npz file: "
                                   "dtype, shape, bytes and range of a float file, or the "
                                   "scheme and scales of a file written by 'quantc quantize'.")
    i.add_argument("file", metavar="FILE", help="a .safetensors or .npz file")

    from . import _cli_models
    _cli_models.add_parsers(sub)

    b = sub.add_parser("bench", help="a small speed table against float NumPy (and peers)",
                       description="Time quantc's elementwise kernels against the NumPy "
                                   "expression (and torch, if installed) on this machine; "
                                   "benchmarks/run_all.py has the full set.")
    b.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    return p


def _check_input(path):
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a .safetensors or .npz file")


def _check_output(path, exts=(".safetensors", ".npz")):
    """The output path ends in one of `exts` and its folder exists (else CLIError)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in exts:
        raise CLIError(f"{path}: output must end in {' or '.join(exts)}")
    _check_output_folder(path)


def cmd_quantize(a):
    import quantc as qc
    src = a.input or BUNDLED_MODEL
    _check_input(src)
    if a.output:
        _check_output(a.output)
    if a.json:
        _check_output_folder(a.json)
        if a.output and os.path.abspath(a.json) == os.path.abspath(a.output):
            raise CLIError(f"{a.json}: --json and -o name the same file")
    gran = "per_block" if a.block_size is not None else (a.granularity or "per_channel")
    if a.input is None:
        print(f"quantizing the bundled example {os.path.relpath(src)} "
              f"(a CNN trained on scikit-learn's digits)\n")
    qw = qc.quantize_weights(src, dtype=a.dtype, granularity=gran, axis=a.axis,
                             block_size=a.block_size, symmetric=not a.asymmetric,
                             method=a.method, min_elements=a.min_elements, skip=a.skip,
                             progress=a.progress)
    rep = qw.report()
    if rep.summary()["quantized"] == 0:
        floats = [r for r in rep if r["shape"] and _is_float(qw[r["name"]])]
        if not floats:
            raise CLIError(f"{src}: no floating-point tensors to quantize ({len(rep)} tensors, "
                           f"none float){'; nothing written' if a.output else ''}")
        raise CLIError(f"{src}: nothing quantized: none of the {len(floats)} floating tensors "
                       f"has ndim >= 2, at least {a.min_elements} elements (--min-elements) "
                       f"and a name outside --skip{'; nothing written' if a.output else ''}")
    print(rep)
    if a.output:
        qw.save(a.output)
        print(f"\nwrote {a.output} ({os.path.getsize(a.output)} bytes)")
    if a.json:
        from .io import _atomic_path
        with _atomic_path(a.json) as tmp:
            with open(tmp, "w") as f:
                f.write(rep.to_json(indent=2))
        print(f"wrote the report to {a.json}")
    return 0


def _is_float(v):
    from . import _dtypes
    return isinstance(v, np.ndarray) and _dtypes.is_float(v.dtype)


def _check_output_folder(path):
    """Before any work: the folder of an output file exists and the name is no directory (the
    writers' own check, as a command-line error)."""
    try:
        qio._check_target(path)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None


def cmd_inspect(a):
    import quantc as qc
    from .io import TensorReader
    _check_input(a.file)
    with TensorReader(a.file) as r:
        quantized = "quantc" in r.metadata
    if quantized:
        qw = qc.load_quantized(a.file)
        rows = [("tensor", "shape", "scheme", "bytes", "scale min..max")]
        for name, v in qw.items():
            shape = "x".join(map(str, v.shape)) or "()"
            if isinstance(v, qc.QuantizedTensor):
                s = v.scale
                rng = f"{s.min():.3g}..{s.max():.3g}" if s.size else "-"
                rows.append((name, shape, v.scheme, str(v.nbytes), rng))
            elif isinstance(v, qc.GGUFTensor):
                rows.append((name, shape, f"{v.dtype} (blocks of 32)", str(v.nbytes), "-"))
            else:
                scheme = qw._info[name]["scheme"] if name in qw._info else f"kept {v.dtype}"
                rows.append((name, shape, scheme, str(v.nbytes), "-"))
        title = (f"{a.file}: quantc quantized file, {len(qw)} tensors, {qw.nbytes} bytes "
                 f"({qw.compression_ratio:.2f}x smaller than the original)")
    else:
        rows = [("tensor", "dtype", "shape", "bytes", "min", "max")]
        total = 0
        with TensorReader(a.file) as r:
            for name in r.names:
                x = r.read(name)
                total += x.nbytes
                dt, nb = str(x.dtype), x.nbytes
                if x.size and not (x.dtype.kind in "biuf"):  # ml_dtypes floats
                    x = x.astype(np.float32)
                lo = f"{x.min():.4g}" if x.size and x.dtype.kind in "iuf" else "-"
                hi = f"{x.max():.4g}" if x.size and x.dtype.kind in "iuf" else "-"
                rows.append((name, dt, "x".join(map(str, x.shape)) or "()", str(nb), lo, hi))
        title = f"{a.file}: {len(rows) - 1} tensors, {total} bytes"
    print(title)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _time(fn, repeats):
    fn()
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def cmd_bench(a):
    import quantc as qc
    n = 1 << (20 if a.quick else 24)
    reps = 3 if a.quick else 7
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    rows = []
    s, zp = np.float32(0.02), np.int8(3)

    def add(op, ours, base, base_name, nbytes):
        t1, t0 = _time(ours, reps), _time(base, reps)
        rows.append((op, f"{nbytes / t1 / 1e9:.2f}", f"{t0 * 1e3:.2f}", f"{t1 * 1e3:.2f}",
                     f"{t0 / t1:.2f}x", base_name))

    from . import _C
    add("min/max", lambda: _C._minmax(x), lambda: (x.min(), x.max()), "numpy", 4 * n)
    if hasattr(qc, "quantize"):
        add("quantize f32->s8", lambda: qc.quantize(x, s, zp),
            lambda: np.clip(np.rint(x / s) + zp, -128, 127).astype(np.int8), "numpy", 5 * n)
        q = qc.quantize(x, s, zp)
        if hasattr(qc, "dequantize"):
            add("dequantize s8->f32", lambda: qc.dequantize(q, s, zp),
                lambda: (q.astype(np.float32) - np.float32(zp)) * s, "numpy", 5 * n)
        try:
            import torch
        except ImportError:
            torch = None
            from ._optional import install_hint
            print(f"note: torch is not installed, its row is left out "
                  f"({install_hint('torch')})\n", file=sys.stderr)
        if torch is not None:
            xt = torch.from_numpy(x)
            with warnings.catch_warnings():  # torch deprecates its quantized tensors
                warnings.simplefilter("ignore")
                add("quantize f32->s8", lambda: qc.quantize(x, s, zp),
                    lambda: torch.quantize_per_tensor(xt, float(s), int(zp), torch.qint8),
                    "torch", 5 * n)
    obs = qc.HistogramObserver()
    obs.update(x)
    add("|x| histogram 2048", lambda: obs.update(x),
        lambda: np.histogram(np.abs(x), bins=2048, range=(0, obs.range_max)), "numpy", 4 * n)
    print(f"quantc bench ({'quick' if a.quick else 'full'}: {n} float32 values, median of "
          f"{reps}; threads={qc.get_num_threads()})\n")
    head = ("op", "GB/s", "base ms", "quantc ms", "speedup", "baseline")
    table = [head] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for k, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def main(argv=None):
    """Entry point of ``quantc`` and ``python -m quantc``; returns the exit code."""
    parser = _parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help()
        return 0
    from ._cli_models import cmd_convert, cmd_demo
    cmd = {"quantize": cmd_quantize, "inspect": cmd_inspect, "demo": cmd_demo,
           "convert": cmd_convert, "bench": cmd_bench}[a.command]
    stdout, sys.stdout = sys.stdout, _PipeGuard(sys.stdout)
    try:
        rc = cmd(a)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (CLIError, ValueError, TypeError, OSError, ImportError, KeyError, RecursionError,
            OverflowError, MemoryError) as e:
        return _error(a.command, _message(e))
    except KeyboardInterrupt:
        print("quantc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a malformed input reached something unexpected: still one line
        return _error(a.command, f"{type(e).__name__}: {_message(e)} (unexpected; "
                                 f"please report it)")
    finally:
        sys.stdout = stdout


class _PipeGuard:
    """stdout for a command: when the reader goes away (``quantc quantize ... | head -1``),
    the rest of the output goes to /dev/null and the command runs on, so the files it writes
    after printing (-o OUT, --json) are still written; the exit status stays the command's."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text):
        try:
            return self._inner.write(text)
        except BrokenPipeError:
            _quiet_broken_pipe()
            return len(text)

    def flush(self):
        try:
            self._inner.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()

    def __getattr__(self, name):  # isatty, fileno, buffer, encoding ...
        return getattr(self._inner, name)


def _message(e):
    """The text of an exception (a KeyError's without the quotes repr() adds)."""
    if isinstance(e, KeyError) and len(e.args) == 1:
        msg = str(e.args[0])
    else:
        msg = str(e)
    return " ".join(msg.split()) or type(e).__name__


def _error(command, msg):
    try:
        print(f"quantc {command}: error: {msg}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return 2


def _quiet_broken_pipe():
    """The reader went away (``quantc inspect F | head -1``): stop quietly, status 0, as other
    command-line tools do. stdout is pointed at /dev/null so that Python's final flush at exit
    does not report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0
