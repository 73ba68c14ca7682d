"""Run every benchmark under benchmarks/ in turn (each in its own process), passing flags on.

    python benchmarks/run_all.py [--quick] [--json-dir DIR]
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


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
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd.append("--quick")
        if args.json_dir:
            os.makedirs(args.json_dir, exist_ok=True)
            cmd += ["--json", os.path.join(args.json_dir, script.stem + ".json")]
        print(f"\n# {script.name}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
