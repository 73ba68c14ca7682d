"""quantc: bit-exact int8 quantization kernels for NumPy.

Quantization maps float32 values to 8-bit integers with a scale ``S`` and a zero point
``Z`` so that ``real = S * (q - Z)`` and 0.0 is exactly representable. quantc's kernels
are hand-written C (scalar, AVX2, AVX-512, VNNI, chosen at run time) behind a NumPy API
whose results match ONNX, PyTorch and TFLite bit for bit (``profile=``).

The public API is documented in docs/API.md (generated from each function's docstring).
"""
from ._env import check_environment as _check_environment

_check_environment()  # before the C extension reads QUANTC_ISA / QUANTC_NUM_THREADS

from ._runtime import cpu_info, get_num_threads, set_num_threads  # noqa: F401
from ._elementwise import *  # noqa: F401,F403
from ._elementwise import __all__ as _elementwise_all
from ._convert import *  # noqa: F401,F403
from ._convert import __all__ as _convert_all
from ._gemm import *  # noqa: F401,F403
from ._gemm import __all__ as _gemm_all
from ._conv import *  # noqa: F401,F403
from ._conv import __all__ as _conv_all
from .calibration import *  # noqa: F401,F403
from .calibration import __all__ as _calibration_all
from .weights import *  # noqa: F401,F403
from .weights import __all__ as _weights_all
from .gguf import *  # noqa: F401,F403
from .gguf import __all__ as _gguf_all
from ._gptq import gptq
from .model import Model, ModelBuilder, Node
from .qmodel import QuantizedModel, load_model, quantize_model
from . import examples  # noqa: F401

__version__ = "0.1.0"

__all__ = (["cpu_info", "get_num_threads", "set_num_threads"] + list(_elementwise_all) + list(_convert_all)
           + list(_gemm_all) + list(_conv_all) + list(_calibration_all) + list(_weights_all) + list(_gguf_all)
           + ["gptq", "Model", "ModelBuilder", "Node", "QuantizedModel", "quantize_model", "load_model"])
