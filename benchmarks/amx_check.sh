#!/usr/bin/env bash
# The checks that need a CPU with AMX-INT8 (Intel Sapphire Rapids or later), in one run:
# what the CPU has, a build, cpu_info() (is the AMX level chosen, did its self-check pass),
# the 2048^3 GEMM at 1 thread against NumPy float32 (AMX, then AVX-512 VNNI for comparison),
# and the whole test suite, whose `isa` fixture then includes the real tiles.
# Run from the repository root: bash benchmarks/amx_check.sh [LOG_DIR] [PYTEST_WORKERS]
# Needs numpy, ml_dtypes, safetensors, pytest (pytest-xdist for WORKERS > 1); torch and
# onnxruntime are used where present. Logs go to LOG_DIR (default amx-check-logs).
set -u
LOG_DIR=${1:-amx-check-logs}
WORKERS=${2:-1}
PY=${PYTHON:-python3}
mkdir -p "$LOG_DIR"
exec > >(tee "$LOG_DIR/amx_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== cpu"
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|L2|L3|CPU max)' || true
echo "flags: $(grep -m1 -o -w -E 'amx_[a-z0-9]+|avx512_vnni|avx_vnni|avx512_fp16|avx512_bf16' \
    /proc/cpuinfo | sort -u | tr '\n' ' ')"
uname -r
$PY -c "import sys, sysconfig, numpy; print(sys.version.split()[0], numpy.__version__,
      sysconfig.get_paths()['include'])"
gcc --version | head -1

echo "== build"
start=$SECONDS
if ! QUANTC_WERROR=1 $PY setup.py -q build_ext --inplace -j 16 > "$LOG_DIR/build.log" 2>&1; then
    tail -40 "$LOG_DIR/build.log"
    echo "build failed"
    exit 1
fi
echo "built in $((SECONDS - start)) s; warnings: $(grep -c 'warning:' "$LOG_DIR/build.log")"

echo "== cpu_info"
$PY - <<'EOF'
import quantc as qc
info = qc.cpu_info()
for key in ("isa_supported", "isa_disabled", "isa_cap", "kernels"):
    print(f"{key}: {info.get(key)}")
EOF

echo "== 2048^3 gemm, 1 thread"
$PY - <<'EOF'
import time
import numpy as np
import quantc as qc
from quantc import _C

rng = np.random.default_rng(0)
n = 2048
a = rng.integers(0, 256, (n, n)).astype(np.uint8)
b = rng.integers(-128, 128, (n, n)).astype(np.int8)
af, bf = a.astype(np.float32), b.astype(np.float32)


def best(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


qc.set_num_threads(1)
ops = 2.0 * n ** 3
t_f32 = best(lambda: af @ bf)
ref = None
levels = [lv for lv in ("amx", "avx512vnni", "scalar") if lv in qc.cpu_info()["isa_supported"]]
for level in levels:
    prev = _C._set_isa_cap(level)
    try:
        kernel = qc.cpu_info()["kernels"]["gemm"]
        packed = qc.pack_matrix(b)   # packed for this level's kernel
        reps = 1 if level == "scalar" else 5
        t = best(lambda: qc.matmul_integer(a, packed, np.uint8(3)), reps)
        out = qc.matmul_integer(a, packed, np.uint8(3))
        if ref is None:
            ref = out
        same = np.array_equal(out, ref)
    finally:
        _C._set_isa_cap(prev)
    print(f"{level:11s} {kernel:34s} {t * 1e3:8.1f} ms {ops / t / 1e9:8.1f} GOP/s "
          f"x numpy f32 {t_f32 / t:6.2f}  same as first: {same}")
print(f"numpy f32 {t_f32 * 1e3:.1f} ms {ops / t_f32 / 1e9:.1f} GFLOP/s")
EOF

echo "== bench_gemm --quick --threads 1,4"
timeout 150 $PY benchmarks/bench_gemm.py --quick --threads 1,4 > "$LOG_DIR/bench_gemm.log" 2>&1
tail -30 "$LOG_DIR/bench_gemm.log"

echo "== test suite"
xdist=()
if [ "$WORKERS" -gt 1 ]; then xdist=(-n "$WORKERS"); fi
start=$SECONDS
timeout 420 $PY -m pytest -q -p no:cacheprovider "${xdist[@]}" -rfE --tb=short tests \
    > "$LOG_DIR/pytest.log" 2>&1
echo "pytest rc $? in $((SECONDS - start)) s"
grep -E '^(FAILED|ERROR)' "$LOG_DIR/pytest.log" | head -30
tail -3 "$LOG_DIR/pytest.log"
