"""Run every benchmark under benchmarks/ in turn (each in its own process), passing flags on.

    python benchmarks/run_all.py [--quick] [--json-dir DIR]

BLAS threads are pinned in the children by OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
MKL_NUM_THREADS: to the core count when threadpoolctl is installed (it then sets each row's
count), else to 1, and the benchmarks are asked for 1-thread rows only, so that a row labelled
"1 thread" never has a float baseline on all cores.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# the benchmarks that take --threads (a list; "1" is the same in every form)
THREADED = ("bench_conv", "bench_gemm", "bench_linear_int4", "bench_linear_per_row",
            "bench_models")


def have_threadpoolctl():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def child_env(blas_threads):
    """The environment of a benchmark process: BLAS pinned to `blas_threads` threads."""
    env = dict(os.environ)
    for var in BLAS_VARS:
        env[var] = str(blas_threads)
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--json-dir", help="write each benchmark's JSON into this folder")
    ap.add_argument("only", nargs="*", help="benchmark names (e.g. elementwise gemm); default all")
    args = ap.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem[len("bench_"):] in args.only]
    failed = []
    pinned = have_threadpoolctl()
    env = child_env((os.cpu_count() or 1) if pinned else 1)
    if not pinned:
        print("threadpoolctl is not installed (pip install 'quantc[bench]'): BLAS pinned to "
              "1 thread, 1-thread rows only", file=sys.stderr)
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd.append("--quick")
        if not pinned and script.stem in THREADED:
            cmd += ["--threads", "1"]
        if args.json_dir:
            os.makedirs(args.json_dir, exist_ok=True)
            cmd += ["--json", os.path.join(args.json_dir, script.stem + ".json")]
        print(f"\n# {script.name}", flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
