"""The environment variables quantc reads, checked before the C extension (which reads them)
is loaded: a bad value is one line naming the variable and what it accepts."""
import os
import re
import sys

ISA_NAMES = ("scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "amx", "amxemu")
MAX_THREADS = 256  # QC_POOL_MAX in csrc/threads/pool.c


def environment_error(environ=None):
    """One line describing a bad ``QUANTC_ISA`` / ``QUANTC_NUM_THREADS``, or None if both are
    valid or unset."""
    env = os.environ if environ is None else environ
    isa = env.get("QUANTC_ISA")
    if isa and isa not in ISA_NAMES:
        return f"QUANTC_ISA: expected one of {', '.join(ISA_NAMES)} (or unset), got {isa!r}"
    n = env.get("QUANTC_NUM_THREADS")
    # what the C side's strtol accepts: leading white space, an optional sign, digits
    if n and not (re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", n)
                  and 1 <= int(n) <= MAX_THREADS):
        return (f"QUANTC_NUM_THREADS: expected an integer in [1, {MAX_THREADS}] (or unset), "
                f"got {n!r}")
    return None


def check_environment():
    """Raise ValueError for a bad variable; when quantc runs as the command line (``quantc``
    or ``python -m quantc``), print ``quantc: error: ...`` and exit with status 2 instead."""
    err = environment_error()
    if err is None:
        return
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-m" or os.path.basename(argv0) in ("quantc", "quantc.exe"):
        print(f"quantc: error: {err}", file=sys.stderr)
        raise SystemExit(2)
    raise ValueError(err)
