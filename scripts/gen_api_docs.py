"""Regenerate docs/API.md, quantc's API reference, from the docstrings.

    python scripts/gen_api_docs.py           # rewrite docs/API.md
    python scripts/gen_api_docs.py --check   # exit 1 if docs/API.md is out of date

Every name in ``quantc.__all__`` gets an entry (its signature and docstring), grouped by the
module that exports it, in ``__all__`` order; a module not listed in SECTIONS gets a section
titled by the first line of its docstring, so new public names appear without editing this
script. The conventions at the top are written here, once.
"""
import argparse
import inspect
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "docs/API.md")

# exporting module -> section title (others: their docstring's first line)
SECTIONS = {
    "quantc._runtime": "Runtime",
    "quantc._elementwise": "Parameters and element-wise kernels",
    "quantc._convert": "Conversions",
    "quantc._gemm": "Integer GEMM, requantization, Linear",
    "quantc._conv": "Convolution, pooling and quantized operators (NCHW)",
    "quantc.calibration": "Calibration observers",
    "quantc.weights": "Weight dictionaries and files",
    "quantc.io": "Tensor files (quantc.io)",
    "quantc.examples": "The bundled example (quantc.examples)",
    "quantc.torch": "Quantization-aware training (quantc.torch, needs torch)",
}

INTRO = """\
# quantc API reference

Generated from the docstrings by `python scripts/gen_api_docs.py`; edit the docstrings (or
the script's introduction), not this file. `tests/test_hardening_py.py` checks that it is up
to date.

Everything below is importable from the top level (`import quantc as qc; qc.quantize(...)`),
except the `quantc.io`, `quantc.examples` and `quantc.torch` names, imported from those
modules.

## Conventions

- Arrays are NumPy arrays; any array-like is accepted and converted. Inputs are never
  modified. Non-contiguous, negative-stride and 0-d inputs work; zero-size inputs give
  zero-size outputs.
- `dtype` arguments accept a string (`"int8"`, `"uint8"`) or a NumPy dtype.
- Float inputs may be float32, float64 or float16; they are converted to float32 first, and
  all arithmetic is float32 unless stated. Results are float32.
- Functions that write an array take an optional `out=` (right shape, dtype, contiguous,
  else `ValueError`).
- Bad input raises `TypeError` or `ValueError` whose message names the argument, what was
  expected and what was given.
- `scale` is strictly positive and finite; `zero_point` lies in the quantized range.
- NaN in data to be quantized raises `ValueError`; +-inf saturates to qmax/qmin.
- The GIL is released inside every kernel; calls from several Python threads are safe.
- Real values are `real = scale * (q - zero_point)`; the real range is always widened to
  include 0, so 0.0 is exactly representable.

## Granularity (quantize, dequantize, fake_quantize, choose_qparams)

- per tensor: `axis=None`, scale and zero_point are scalars (or 0-d arrays);
- per axis: `axis=k`, scale/zero_point are 1-D of length `x.shape[k]`;
- blocked: `axis=k, block_size=B`, scale/zero_point have the shape of `x` except that
  dimension k is `ceil(x.shape[k] / B)` (ONNX opset 21 blocked quantization; the last block
  may be short).

`quantize_weights(granularity="per_block")` blocks each weight along its flattened input
dimension: a `(M, C, kh, kw)` weight is quantized as the matrix `(M, C*kh*kw)` with
`axis=1`, so its scales have shape `(M, ceil(C*kh*kw / block_size))`.

## Profiles

`profile=` selects the exact arithmetic (default `"onnx"`): `onnx` computes
`clamp(rne(x / s) + zp)` with a true float32 division, `torch` what each torch op computes
with `inv = 1.0f / s`, `tflite` `clamp(round_half_away(x / s) + zp)`. `choose_qparams`
follows the profile too (ONNX Runtime's quantization tool, torch's observers, the TFLite
converter); the formulas are in each docstring.

## Environment

- `QUANTC_ISA=scalar|avx2|avxvnni|avx512|avx512vnni|amx` caps the kernel variants (`amxemu`, the AMX kernel on a scalar tile model, exists only in a build made with `QUANTC_AMX_EMULATE=1`: tests and CI);
- `QUANTC_NUM_THREADS=n` (1..256) sets the initial thread count;
- `QUANTC_NPZ_MAX_RATIO=r` raises the zip-bomb limit for `.npz` files (see `quantc.io`).

A bad `QUANTC_ISA` or `QUANTC_NUM_THREADS` is a `ValueError` at import naming the variable (the
command line prints `quantc: error: ...` and exits with status 2); `QUANTC_NPZ_MAX_RATIO` is read
each time an `.npz` file is, and a bad value is a `ValueError` there naming it.
"""


def _signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj):
    return (inspect.getdoc(obj) or "(no docstring)").strip()


def _block(text):
    """A docstring as a Markdown block: kept verbatim in a fenced block (it is plain text
    with reST-style ``code``, not Markdown)."""
    return "```text\n" + text + "\n```\n"


def _own_attrs(cls):
    """Public attributes defined by quantc in cls and its quantc base classes, first
    definition wins, in definition order."""
    seen = {}
    for klass in cls.__mro__:
        if not (klass.__module__ or "").startswith("quantc"):
            continue
        for name, member in klass.__dict__.items():
            seen.setdefault(name, member)
    return seen.items()


def _members(cls):
    out = []
    for name, member in _own_attrs(cls):
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(member, property):
            doc = inspect.getdoc(member)
            if doc:
                out.append((f"{cls.__name__}.{name}", "", doc))
        elif isinstance(member, (staticmethod, classmethod)):
            fn = member.__func__
            if fn.__doc__:
                sig = _signature(fn)
                if isinstance(member, classmethod):
                    sig = "(" + sig[1:].split(", ", 1)[-1] if sig.startswith("(cls") else sig
                out.append((f"{cls.__name__}.{name}", sig, inspect.getdoc(fn)))
        elif inspect.isfunction(member) or inspect.ismethoddescriptor(member):
            if member.__doc__:
                sig = _signature(member).replace("(self, ", "(").replace("(self)", "()")
                out.append((f"{cls.__name__}.{name}", sig, inspect.getdoc(member)))
    return out


def _entry(name, obj):
    lines = []
    if inspect.isclass(obj):
        sig = _signature(obj) if obj.__init__ is not object.__init__ else ""
        lines.append(f"### `{name}{sig}` (class)\n")
        lines.append(_block(_doc(obj)))
        for mname, msig, mdoc in _members(obj):
            lines.append(f"#### `{mname}{msig}`\n")
            lines.append(_block(mdoc.strip()))
    elif callable(obj):
        lines.append(f"### `{name}{_signature(obj)}`\n")
        lines.append(_block(_doc(obj)))
    else:
        lines.append(f"### `{name}`\n")
        lines.append(f"`{name} = {obj!r}`\n")
    return "\n".join(lines)


def _lazy_classes(module_path, names):
    """Entries for classes defined inside a function of a module (quantc.torch's
    FakeQuantize, made on first use so that torch is imported then), read from the source
    with ``ast``: the same text with or without torch installed."""
    import ast
    tree = ast.parse(open(module_path).read())
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name in names):
            continue
        methods = [f for f in node.body if isinstance(f, ast.FunctionDef)]
        init = next((f for f in methods if f.name == "__init__"), None)
        sig = "(" + ast.unparse(init.args).removeprefix("self").lstrip(", ") + ")" \
            if init else ""
        lines = [f"### `quantc.torch.{node.name}{sig}` (class)\n",
                 _block(ast.get_docstring(node) or "(no docstring)")]
        for f in methods:
            doc = ast.get_docstring(f)
            if f.name.startswith("_") or not doc:
                continue
            msig = "(" + ast.unparse(f.args).removeprefix("self").lstrip(", ") + ")"
            lines += [f"#### `{node.name}.{f.name}{msig}`\n", _block(doc)]
        out.append("\n".join(lines))
    return out


def _exporter(name, modules):
    for mod in modules:
        if name in getattr(mod, "__all__", ()):
            return mod.__name__
    return "quantc"


def render():
    """The text of docs/API.md for the quantc importable from here."""
    sys.path.insert(0, ROOT)
    try:
        import quantc
        import quantc.examples
        import quantc.io
        import quantc.torch  # (imports without torch; FakeQuantize is made on first use)
    finally:
        sys.path.pop(0)
    modules = [m for n, m in sorted(sys.modules.items())
               if n.startswith("quantc.") and m is not None and n != "quantc._C"]
    groups = {}
    for name in quantc.__all__:
        groups.setdefault(_exporter(name, modules), []).append(
            (name, getattr(quantc, name)))
    for sub in (quantc.io, quantc.examples, quantc.torch):
        # quantc.torch's FakeQuantize exists only with torch installed: its entry is read
        # from the source (_lazy_classes), so the file is the same either way
        groups[sub.__name__] = [(f"{sub.__name__}.{n}", vars(sub)[n]) for n in sub.__all__
                                if n in vars(sub)]
    out = [INTRO]
    order = [m for m in SECTIONS if m in groups] + [m for m in groups if m not in SECTIONS]
    for mod in order:
        title = SECTIONS.get(mod)
        if title is None:
            title = (inspect.getdoc(sys.modules.get(mod)) or mod).splitlines()[0].rstrip(".")
        out.append(f"## {title}\n")
        doc = inspect.getdoc(sys.modules.get(mod)) or ""
        if "\n" in doc.strip():  # the module's own docstring, which entries refer to
            out.append(_block(doc.strip()))
        for name, obj in groups[mod]:
            out.append(_entry(name, obj))
        if mod == "quantc.torch":
            out += _lazy_classes(sys.modules[mod].__file__, ("FakeQuantize",))
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the file is current")
    args = ap.parse_args(argv)
    text = render()
    current = open(TARGET).read() if os.path.exists(TARGET) else None
    if args.check:
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/gen_api_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(TARGET), exist_ok=True)
    with open(TARGET, "w") as f:
        f.write(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
