"""Tensor files: lazy, validated reading of .npz/.safetensors and atomic writing.

Files are treated as untrusted: nothing is unpickled (``allow_pickle=False``), a safetensors
header is checked before the library touches the file (header length within the file, every
tensor's byte range inside the data section and equal to shape x itemsize), and any failure
while reading becomes a ``ValueError`` that names the file (and the tensor).

Writing goes to a temporary file in the destination folder, which is flushed, fsync'ed and
then renamed over the real name with ``os.replace``: a crash leaves the old file (or none),
never a half-written one.
"""
import json
import math
import os
import struct
import tempfile
import zipfile

import numpy as np

__all__ = ["TensorReader", "open_tensors", "write_tensors", "FORMATS"]

FORMATS = (".safetensors", ".npz")

# safetensors dtype tags -> NumPy dtypes (BF16 has no NumPy dtype and is rejected on read).
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_ST_ITEMSIZE = dict({k: np.dtype(v).itemsize for k, v in _ST_DTYPES.items()}, BF16=2,
                    F8_E4M3=1, F8_E5M2=1)
_MAX_HEADER = 100 * 1024 * 1024


def _fmt(path):
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: expected a .safetensors or .npz file, got extension "
                         f"{ext or '(none)'!r}")
    return ext


def _safetensors_header(path):
    """Read and check a safetensors header; returns (names in file order, header dict)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes; the format "
                             f"starts with an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > _MAX_HEADER:
            raise ValueError(f"{path}: corrupted safetensors file: header length {n} does not "
                             f"fit in the file ({size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupted safetensors file: header is not valid JSON "
                         f"({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupted safetensors file: header is not a JSON object")
    data_len = size - 8 - n
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(isinstance(o, int) for o in info["data_offsets"]))
        if not ok:
            raise ValueError(f"{path}: corrupted safetensors file: bad entry for tensor "
                             f"{name!r}")
        dt = info.get("dtype")
        if dt not in _ST_ITEMSIZE:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {dt!r}")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= data_len:
            raise ValueError(f"{path}: truncated or corrupted safetensors file: tensor {name!r} "
                             f"occupies bytes [{begin}, {end}) but the data section has "
                             f"{data_len} bytes")
        want = math.prod(info["shape"]) * _ST_ITEMSIZE[dt]
        if end - begin != want:
            raise ValueError(f"{path}: corrupted safetensors file: tensor {name!r} has "
                             f"{end - begin} bytes, shape {tuple(info['shape'])} x {dt} needs "
                             f"{want}")
        names.append(name)
    return names, header


class TensorReader:
    """Read the tensors of a .npz or .safetensors file one at a time.

    ``names`` lists the tensors in file order, ``shape(name)``/``dtype(name)`` describe one
    without reading its data where the format allows it, ``read(name)`` returns it as a NumPy
    array, ``metadata`` is the file's string -> string metadata (safetensors ``__metadata__``;
    for .npz the ``__metadata__.json`` member). Use as a context manager.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.format = _fmt(self.path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise ValueError(f"{self.path}: expected a file, got a directory")
        self._npz = None
        self.metadata = {}
        if self.format == ".safetensors":
            self.names, self._header = _safetensors_header(self.path)
            meta = self._header.get("__metadata__") or {}
            if not isinstance(meta, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
                raise ValueError(f"{self.path}: corrupted safetensors file: __metadata__ must "
                                 f"map strings to strings")
            self.metadata = dict(meta)
            try:
                from safetensors import safe_open  # noqa: F401
            except ImportError:
                raise ImportError("reading .safetensors needs the 'safetensors' package "
                                  "(pip install safetensors)") from None
        else:
            try:
                self._npz = np.load(self.path, allow_pickle=False)
            except Exception as e:
                raise ValueError(f"{self.path}: not a readable .npz file ({e})") from None
            if not hasattr(self._npz, "files"):
                raise ValueError(f"{self.path}: expected an .npz archive, got a single .npy "
                                 f"array")
            self.names = [n for n in self._npz.files if n != "__metadata__.json"]
            if "__metadata__.json" in self._npz.files:
                raw = self._read_npz("__metadata__.json")
                try:
                    meta = json.loads(raw.tobytes().decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ValueError(f"{self.path}: corrupted metadata ({e})") from None
                if not isinstance(meta, dict):
                    raise ValueError(f"{self.path}: corrupted metadata (not a JSON object)")
                self.metadata = {str(k): str(v) for k, v in meta.items()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._npz is not None:
            self._npz.close()
            self._npz = None

    def __len__(self):
        return len(self.names)

    def shape(self, name):
        if self.format == ".safetensors":
            return tuple(self._header[name]["shape"])
        return None

    def nbytes(self, name):
        """Bytes of the stored tensor (safetensors: from the header, .npz: from the zip)."""
        if self.format == ".safetensors":
            b, e = self._header[name]["data_offsets"]
            return e - b
        return self._npz.zip.getinfo(name + ".npy").file_size

    def _read_npz(self, name):
        try:
            return self._npz[name]
        except Exception as e:
            raise ValueError(f"{self.path}: tensor {name!r}: cannot be read ({e})") from None

    def read(self, name):
        """The tensor `name` as a NumPy array (read now, from disk)."""
        if name not in self.names:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        if self.format == ".npz":
            arr = self._read_npz(name)
        else:
            dt = self._header[name]["dtype"]
            if dt not in _ST_DTYPES:
                raise ValueError(f"{self.path}: tensor {name!r}: dtype {dt} has no NumPy "
                                 f"equivalent")
            from safetensors import safe_open
            # Opened per tensor so the file mapping is released between tensors: the
            # mapped pages would otherwise stay resident and count against peak memory.
            try:
                with safe_open(self.path, framework="numpy") as f:
                    arr = f.get_tensor(name)
            except Exception as e:
                raise ValueError(f"{self.path}: tensor {name!r}: cannot be read ({e})") from None
            shape = tuple(self._header[name]["shape"])
            if arr.shape != shape:  # safe_open returns 0-d tensors as shape (1,)
                arr = arr.reshape(shape)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or \
                arr.dtype.byteorder == ">":
            kind = getattr(arr, "dtype", type(arr))
            raise ValueError(f"{self.path}: tensor {name!r}: expected a numeric array, got "
                             f"{kind}")
        return arr


def open_tensors(path):
    """A TensorReader for `path` (.npz or .safetensors)."""
    return TensorReader(path)


def _atomic_target(path):
    path = os.fspath(path)
    ext = _fmt(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: the output folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path}: expected a file name, got a directory")
    return path, ext, folder


def write_tensors(path, tensors, metadata=None):
    """Write name -> array to `path` (.safetensors or .npz) atomically.

    `metadata` (str -> str) goes to the safetensors ``__metadata__`` header, or to a
    ``__metadata__.json`` member (UTF-8 JSON as a uint8 array) of the .npz.
    """
    path, ext, folder = _atomic_target(path)
    metadata = dict(metadata or {})
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        if ext == ".safetensors":
            os.close(fd)
            fd = None
            from safetensors.numpy import save_file
            # np.ascontiguousarray would turn 0-d arrays into shape (1,)
            save_file({k: np.array(v, copy=not np.asarray(v).flags.c_contiguous)
                       for k, v in tensors.items()}, tmp,
                      metadata=metadata or None)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as raw:
                fd = None
                with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    items = list(tensors.items())
                    if metadata:
                        blob = json.dumps(metadata, sort_keys=True).encode("utf-8")
                        items.append(("__metadata__.json", np.frombuffer(blob, np.uint8)))
                    for name, arr in items:
                        with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                            np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)
                raw.flush()
                os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
