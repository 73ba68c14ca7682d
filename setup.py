"""Build quantc's C extension, compiling each ISA's kernel file with its own flags.

A source file's stem names its ISA (``csrc/quant/avx2.c``, ``csrc/gemm/4x16c4_avx512vnni.c``):
the longest ISA suffix in ISA_FLAGS wins, and files without one are built for the baseline
x86-64 target. Never ``-march=native``: the wheel must run on CPUs with less than this one.
"""
import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()

_AVX2 = ["-mavx2", "-mfma", "-mf16c", "-mbmi2"]
_AVX512 = _AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512cd"]
ISA_FLAGS = {
    "avx2": _AVX2,
    "avxvnni": _AVX2 + ["-mavxvnni"],
    "avx512": _AVX512,
    "avx512vnni": _AVX512 + ["-mavx512vnni"],
    "amx": _AVX512 + ["-mavx512vnni", "-mamx-tile", "-mamx-int8"],
}

# No -ffast-math: the kernels must round exactly like the references. fp-contract=off keeps
# the compiler from fusing a*b+c into an FMA, which would change the rounding of a product.
BASE_FLAGS = ["-O3", "-std=c11", "-Wall", "-Wextra", "-fno-strict-aliasing",
              "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden"]
if os.environ.get("QUANTC_WERROR"):
    BASE_FLAGS.append("-Werror")

# QUANTC_SANITIZE=address,undefined (or thread): a sanitizer build for CI (.ci/run), built in a
# copy of the tree so that the installed extension stays the optimized one. -O1 keeps the
# sanitizers' reports exact; run it with the sanitizer runtime in LD_PRELOAD (Python itself is
# not instrumented).
SANITIZE = os.environ.get("QUANTC_SANITIZE", "").strip()
LINK_FLAGS = []
if SANITIZE:
    _san = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
    if "undefined" in SANITIZE:
        _san.append("-fno-sanitize-recover=undefined")
    BASE_FLAGS = [f for f in BASE_FLAGS if f != "-O3"] + ["-O1"] + _san
    LINK_FLAGS = _san

# QUANTC_AMX_EMULATE=1: a test build that also compiles the AMX gemm kernel against the scalar
# tile model (csrc/gemm/amx_tiles.h) as the extra ISA level "amxemu" (forced like any level:
# QUANTC_ISA=amxemu, or the tests' `isa` fixture). .ci/run builds it in a copy of the tree; the
# installed extension never contains it.
AMX_EMULATE = os.environ.get("QUANTC_AMX_EMULATE", "").strip() not in ("", "0")

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def isa_of(path):
    """The ISA a source file is compiled for, from the end of its stem (None: baseline)."""
    stem = Path(path).stem
    for isa in sorted(ISA_FLAGS, key=len, reverse=True):
        if stem == isa or stem.endswith("_" + isa):
            return isa
    return None


def sources():
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.c"))


class BuildExt(build_ext):
    """Compile ISA files with their flags, the rest with the base flags, then link once."""

    def build_extension(self, ext):
        import numpy as np

        include_dirs = list(ext.include_dirs) + [np.get_include(), str(ROOT / "csrc")]
        by_isa = {}
        for src in ext.sources:
            isa = isa_of(src)
            if isa is not None and not IS_X86:
                continue  # x86 kernels are left out on other architectures
            by_isa.setdefault(isa, []).append(src)
        objects = []
        for isa, srcs in sorted(by_isa.items(), key=lambda kv: kv[0] or ""):
            extra = BASE_FLAGS + (ISA_FLAGS[isa] if isa else [])
            macros = list(ext.define_macros)
            if not IS_X86:
                macros.append(("QC_NO_X86", "1"))
            if AMX_EMULATE:
                macros.append(("QC_AMX_EMULATE", "1"))
            objects += self.compiler.compile(
                srcs, output_dir=self.build_temp, macros=macros,
                include_dirs=include_dirs, extra_postargs=extra, depends=ext.depends,
                debug=self.debug)
        ext_path = self.get_ext_fullpath(ext.name)
        self.compiler.link_shared_object(
            objects, ext_path, libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs, runtime_library_dirs=ext.runtime_library_dirs,
            extra_postargs=["-lpthread", "-lm"] + LINK_FLAGS, export_symbols=self.get_export_symbols(ext),
            debug=self.debug, build_temp=self.build_temp, target_lang="c")


ext = Extension(
    "quantc._C",
    sources=sources(),
    depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.h")),
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION"), ("_GNU_SOURCE", "1")],
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
