"""Runtime controls: detected CPU features, the kernel chosen per family, thread count."""
import operator

from . import _C

__all__ = ["cpu_info", "get_num_threads", "set_num_threads"]


def cpu_info():
    """Return what was detected and which kernel variant each op family uses.

    Keys: ``vendor``, ``features`` (flag -> bool), ``isa_supported`` (ISA levels this CPU and
    OS can run), ``isa_cap`` (the ``QUANTC_ISA`` cap), ``kernels`` (family -> chosen variant),
    ``variants`` (family -> list of ``(name, isa, usable)``), ``num_threads``,
    ``isa_disabled`` (level -> reason, for a level turned off for the process because its
    kernel failed the self-check run before the first use of AMX; usually empty).
    """
    return _C.cpu_info()


def set_num_threads(n):
    """Use ``n`` threads (>= 1) in the kernels; results are identical for every ``n``. Any
    integer type works (``np.int64(4)``); a bool does not."""
    if not isinstance(n, bool) and hasattr(type(n), "__index__"):
        n = operator.index(n)
    _C.set_num_threads(n)


def get_num_threads():
    """The number of threads the kernels use (default: ``QUANTC_NUM_THREADS``, else the CPUs
    this process may run on: its affinity, as ``taskset`` or a container's cpuset sets it)."""
    return _C.get_num_threads()
