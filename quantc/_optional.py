"""Optional dependencies: import one, or fail with one line naming the extra that installs it."""
import importlib

__all__ = ["require", "MissingDependency"]

# module (top-level name) -> (pip package, quantc extra that brings it)
_EXTRAS = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "torch": ("torch", "bench"),
    "gguf": ("gguf", "gguf"),
    "tqdm": ("tqdm", "progress"),
    "matplotlib": ("matplotlib", "plot"),
    "threadpoolctl": ("threadpoolctl", "bench"),
    "safetensors": ("safetensors", None),
    "ml_dtypes": ("ml_dtypes", None),
}


class MissingDependency(ImportError):
    """An optional package is not installed; the message says how to install it."""


def install_hint(module, extra=None):
    """'pip install ...' for `module` (its quantc extra when it has one)."""
    top = module.split(".")[0]
    package, default_extra = _EXTRAS.get(top, (top, None))
    extra = extra if extra is not None else default_extra
    return f"pip install 'quantc[{extra}]'" if extra else f"pip install {package}"


def require(module, extra=None, what=None):
    """Import and return `module`; if it is missing raise MissingDependency in one line:
    "<what> needs the '<package>' package: pip install 'quantc[<extra>]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if getattr(e, "name", None) not in (None, top, module):
            raise  # the package is there but one of its own imports failed
        package = _EXTRAS.get(top, (top, None))[0]
        lead = f"{what} needs" if what else "needs"
        raise MissingDependency(f"{lead} the '{package}' package: "
                                f"{install_hint(module, extra)}") from None
