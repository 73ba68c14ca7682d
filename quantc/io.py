"""Tensor files: lazy, validated reading of .npz/.safetensors and atomic writing.

Files are treated as untrusted: nothing is unpickled (``allow_pickle=False``), a safetensors
header is checked before the library touches the file (header length within the file, every
tensor's byte range inside the data section and equal to shape x itemsize, the ranges in offset
order following each other without gaps or overlaps up to the end of the file), and any failure
while reading becomes a ``ValueError`` that names the file (and the tensor).

An ``.npz`` is a zip archive and may be a zip bomb: before anything is decompressed, every
member must be an ``.npy`` whose header (shape x itemsize) matches the member's declared size,
and the declared sizes together may not exceed ``NPZ_MAX_RATIO`` times the archive's size
(archives declaring less than ``NPZ_SMALL_BYTES`` in all are always accepted). Raise the limit
with ``quantc.io.NPZ_MAX_RATIO = ...`` or the environment variable ``QUANTC_NPZ_MAX_RATIO``.

Writing (``write_tensors``, and ``save_gguf`` and the ONNX export through the same helper)
goes to a temporary file ``.NAME.quantc-tmp-<pid>-<token>`` in the destination folder, given
the mode the umask gives any new file, fsync'ed and then renamed over the real name with
``os.replace``: a crash leaves the old file (or none), never a half-written one. A missing
folder or a directory as the target is an error before anything is written; an OSError while
writing names the target. SIGTERM during a write (main thread) removes the temporary file
before the process ends, and temporary files left by a process that no longer exists
(SIGKILL, power loss) are removed by the next write to the same name.
"""
import contextlib
import errno
import json
import math
import os
import signal
import struct
import threading
import zipfile

import numpy as np

from . import _dtypes
from ._optional import require

__all__ = ["TensorReader", "open_tensors", "write_tensors", "FORMATS"]

FORMATS = (".safetensors", ".npz")
_PICKLE_FORMATS = (".pt", ".pth", ".bin", ".ckpt", ".pkl")

# safetensors dtype tags -> NumPy dtypes; ml_dtypes' bfloat16 and float8 types are in
# _dtypes.ST_ML_TAGS (read straight from the checked byte range of the file).
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_ST_ITEMSIZE = dict({k: np.dtype(v).itemsize for k, v in _ST_DTYPES.items()},
                    **{k: v.itemsize for k, v in _dtypes.ST_ML_TAGS.items()})
# .npz members cannot name ml_dtypes' types (np.save writes them as raw void bytes): they are
# stored as unsigned integers of the same size and this metadata key (JSON name -> dtype
# name) gives them back their type on read.
_NPZ_DTYPES = "quantc.npz_dtypes"
_MAX_HEADER = 100 * 1024 * 1024
# Zip-bomb limits for .npz archives (see the module docstring).
NPZ_MAX_RATIO = 200.0
NPZ_SMALL_BYTES = 64 * 1024 * 1024
_TMP_TAG = ".quantc-tmp-"
# the name each format gives its metadata: no tensor may have it
_RESERVED = {".safetensors": "__metadata__", ".npz": "__metadata__.json"}


def _fmt(path, reading=True):
    ext = os.path.splitext(str(path))[1].lower()
    if reading and ext in _PICKLE_FORMATS:
        raise ValueError(f"{path}: PyTorch pickle checkpoints ({ext}) are not supported (loading "
                         f"one can run arbitrary code): save the weights with safetensors, "
                         f"e.g. safetensors.torch.save_file(model.state_dict(), "
                         f"'model.safetensors')")
    if ext not in FORMATS:
        raise ValueError(f"{path}: expected a .safetensors or .npz file, got extension "
                         f"{ext or '(none)'!r}")
    return ext


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    """json.loads' object_pairs_hook: a dict, refusing a key given twice (json.loads would
    keep the last one silently)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _safetensors_header(path):
    """Read and check a safetensors header; returns (names in file order, header dict, offset
    of the data section in the file)."""
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
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupted safetensors file: header is not valid JSON "
                         f"({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: corrupted safetensors file: header JSON is nested too "
                         f"deeply") from None
    except _DuplicateKey as e:
        raise ValueError(f"{path}: corrupted safetensors file: header JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupted safetensors file: header is not a JSON object")
    data_len = size - 8 - n
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("shape"), list)
              and all(type(d) is int and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(type(o) is int for o in info["data_offsets"]))
        if not ok:
            raise ValueError(f"{path}: corrupted safetensors file: bad entry for tensor "
                             f"{name!r}")
        dt = info.get("dtype")
        if not isinstance(dt, str) or dt not in _ST_ITEMSIZE:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {dt!r}")
        # what NumPy can allocate: every dimension, and the bytes of the non-zero ones, below
        # 2**63 (a zero-size tensor may still declare dimensions no array can have)
        if math.prod(d for d in info["shape"] if d) * _ST_ITEMSIZE[dt] >= 2 ** 63:
            raise ValueError(f"{path}: tensor {name!r}: shape {tuple(info['shape'])} x {dt} is "
                             f"too large for an array")
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
    # as the safetensors library requires (and checks for the types it reads itself): the
    # tensors, by offset, follow each other without gaps or overlaps and fill the data section
    end = 0
    prev = None
    for name in sorted(names, key=lambda k: tuple(header[k]["data_offsets"])):
        begin, stop = header[name]["data_offsets"]
        if begin < end:
            raise ValueError(f"{path}: corrupted safetensors file: tensor {name!r} (bytes "
                             f"[{begin}, {stop})) overlaps tensor {prev!r} (bytes up to {end})")
        if begin > end:
            raise ValueError(f"{path}: corrupted safetensors file: tensor {name!r} starts at "
                             f"byte {begin} of the data section, the tensors before it end at "
                             f"{end} (a gap)")
        end, prev = stop, name
    if end != data_len:
        raise ValueError(f"{path}: corrupted safetensors file: the tensors cover {end} of the "
                         f"data section's {data_len} bytes (trailing bytes)")
    return names, header, 8 + n


def npz_max_ratio():
    """The zip-bomb ratio limit: ``QUANTC_NPZ_MAX_RATIO`` if set, else ``NPZ_MAX_RATIO``."""
    env = os.environ.get("QUANTC_NPZ_MAX_RATIO")
    if env is None:
        return float(NPZ_MAX_RATIO)
    try:
        v = float(env)
    except ValueError:
        v = math.nan
    if not v > 0:
        raise ValueError(f"QUANTC_NPZ_MAX_RATIO: expected a positive number, got {env!r}")
    return v


def _check_npz(path):
    """Check an .npz archive before decompressing it: a zip of .npy members whose headers
    match their declared sizes, and declared sizes within the zip-bomb limit."""
    size = os.path.getsize(path)
    limit = npz_max_ratio()  # (a bad QUANTC_NPZ_MAX_RATIO is its own error, not the file's)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise ValueError(f"{path}: expected an .npz archive, got a single .npy array")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a valid .npz file (not a zip archive)")
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            seen = set()
            for m in members:  # np.load would keep the last member of a name, silently
                if m.filename in seen:
                    raise ValueError(f"{path}: not a valid .npz file (member {m.filename!r} "
                                     f"appears twice)")
                seen.add(m.filename)
            total = sum(m.file_size for m in members)
            if total > NPZ_SMALL_BYTES and total > limit * max(size, 1):
                raise ValueError(
                    f"{path}: refusing to decompress: the archive declares {total} bytes from "
                    f"{size} (ratio {total / max(size, 1):.0f} > {limit:g}, a zip bomb?); to "
                    f"read it anyway raise quantc.io.NPZ_MAX_RATIO or set QUANTC_NPZ_MAX_RATIO")
            for m in members:
                if not m.filename.endswith(".npy"):
                    raise ValueError(f"{path}: not a valid .npz file (member {m.filename!r} is "
                                     f"not an .npy array)")
                with zf.open(m) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"unsupported .npy version {version}")
                    shape, _, dtype = read(fh)
                    head = fh.tell() if fh.seekable() else None
                if dtype.hasobject:
                    raise ValueError(f"{path}: tensor {m.filename[:-4]!r} holds pickled "
                                     f"(object) data, which is never loaded")
                want = math.prod(shape) * dtype.itemsize
                if head is not None and want != m.file_size - head:
                    raise ValueError(f"{path}: corrupted .npz file: member {m.filename!r} "
                                     f"declares shape {shape} x {dtype} ({want} bytes) but "
                                     f"holds {m.file_size - head}")
    except ValueError as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a valid .npz file ({e})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError,
            NotImplementedError) as e:
        raise ValueError(f"{path}: not a valid .npz file ({e or type(e).__name__})") from None


class TensorReader:
    """Read the tensors of a .npz or .safetensors file one at a time.

    ``names`` lists the tensors in file order, ``shape(name)`` gives one's shape without
    reading its data (safetensors, from the header; None for .npz), ``nbytes(name)`` its
    stored size, ``read(name)`` returns it as a NumPy array, ``metadata`` is the file's
    string -> string metadata (safetensors ``__metadata__``; for .npz the
    ``__metadata__.json`` member). Use as a context manager.
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
            self.names, self._header, self._data_start = _safetensors_header(self.path)
            meta = self._header.get("__metadata__") or {}
            if not isinstance(meta, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
                raise ValueError(f"{self.path}: corrupted safetensors file: __metadata__ must "
                                 f"map strings to strings")
            self.metadata = dict(meta)
            require("safetensors", what="reading .safetensors")
        else:
            _check_npz(self.path)
            try:
                self._npz = np.load(self.path, allow_pickle=False)
            except Exception as e:
                raise ValueError(f"{self.path}: not a valid .npz file ({e})") from None
            self.names = [n for n in self._npz.files if n != "__metadata__.json"]
            if "__metadata__.json" in self._npz.files:
                raw = self._read_npz("__metadata__.json")
                try:
                    meta = json.loads(raw.tobytes().decode("utf-8"),
                                      object_pairs_hook=_unique_keys)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError,
                        _DuplicateKey) as e:
                    raise ValueError(f"{self.path}: corrupted metadata "
                                     f"({e or type(e).__name__})") from None
                if not isinstance(meta, dict):
                    raise ValueError(f"{self.path}: corrupted metadata (not a JSON object)")
                self.metadata = {str(k): str(v) for k, v in meta.items()}
        self._npz_types = {}
        if _NPZ_DTYPES in self.metadata:
            raw = self.metadata.pop(_NPZ_DTYPES)
            try:
                types = json.loads(raw)
                self._npz_types = {str(k): _dtypes.by_name(v) for k, v in types.items()}
                if None in self._npz_types.values():
                    raise KeyError("unknown dtype name")
            except (json.JSONDecodeError, RecursionError, AttributeError, KeyError,
                    TypeError) as e:
                raise ValueError(f"{self.path}: corrupted metadata {_NPZ_DTYPES!r} "
                                 f"({e or type(e).__name__})") from None

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
            want = self._npz_types.get(name)
            if want is not None:
                if arr.dtype.kind != "u" or arr.dtype.itemsize != want.itemsize:
                    raise ValueError(f"{self.path}: tensor {name!r}: stored as {arr.dtype}, "
                                     f"cannot hold {want}")
                arr = arr.view(want)
        elif self._header[name]["dtype"] in _dtypes.ST_ML_TAGS:
            arr = self._read_raw(name)
        else:
            dt = self._header[name]["dtype"]
            if dt not in _ST_DTYPES:
                raise ValueError(f"{self.path}: tensor {name!r}: dtype {dt} has no NumPy "
                                 f"equivalent")
            safe_open = require("safetensors", what="reading .safetensors").safe_open
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
        if not isinstance(arr, np.ndarray) or arr.dtype.byteorder == ">" or \
                (arr.dtype.kind not in "biuf" and not _dtypes.is_ml_float(arr.dtype)):
            kind = getattr(arr, "dtype", type(arr))
            raise ValueError(f"{self.path}: tensor {name!r}: expected a numeric array, got "
                             f"{kind}")
        return arr

    def _read_raw(self, name):
        """A safetensors tensor of an ml_dtypes type, read from its (checked) byte range."""
        info = self._header[name]
        dt = _dtypes.ST_ML_TAGS[info["dtype"]]
        begin, end = info["data_offsets"]
        arr = np.empty(tuple(info["shape"]), dt)
        try:
            with open(self.path, "rb") as f:
                f.seek(self._data_start + begin)
                got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
        except OSError as e:
            raise ValueError(f"{self.path}: tensor {name!r}: cannot be read ({e})") from None
        if got != end - begin:
            raise ValueError(f"{self.path}: tensor {name!r}: truncated ({got} of "
                             f"{end - begin} bytes)")
        return arr


def open_tensors(path):
    """A TensorReader for `path` (.npz or .safetensors)."""
    return TensorReader(path)


def _check_target(path):
    """``path``'s folder, checked before anything is written: it exists and ``path`` is not
    a directory."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: the output folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path}: expected a file name, got a directory")
    return folder


def _umask():
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_temps(folder, base):
    """Remove temporary files of earlier writes to `base` whose process no longer exists."""
    if os.name != "posix":  # os.kill(pid, 0) is no liveness probe elsewhere (it terminates)
        return
    prefix = "." + base + _TMP_TAG
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass


class _Terminated(BaseException):
    """SIGTERM arrived during a write (raised by the temporary handler)."""


class _term_cleanup:
    """While active (main thread only, and only while SIGTERM has its default action, which
    would end the process without the caller's cleanup), SIGTERM raises _Terminated so that
    the cleanup runs; on exit the default is restored and the signal delivered again. A
    program's own handler or SIG_IGN is left alone: the program decides (a handler that
    raises still gets the cleanup, which runs on any exception)."""

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            try:
                self.prev = signal.signal(signal.SIGTERM, self._raise)
            except (ValueError, OSError):
                self.prev = None
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _Terminated()

    def __exit__(self, typ, exc, tb):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        if typ is _Terminated:
            os.kill(os.getpid(), signal.SIGTERM)  # now with the previous disposition
            raise SystemExit(128 + signal.SIGTERM)
        return False


@contextlib.contextmanager
def _atomic_path(path):
    """A temporary file ``.NAME.quantc-tmp-<pid>-<token>`` in ``path``'s folder for a writer
    (write_tensors, the ONNX export, save_gguf) to fill: on success it is synced, given the
    mode the umask gives a new file and renamed to ``path``; on any failure, SIGTERM in the
    main thread included, it is removed and ``path`` is left as it was. An OSError while
    writing (a full disk) is raised again naming ``path``."""
    path = os.fspath(path)
    folder = _check_target(path)
    base = os.path.basename(path)
    _remove_stale_temps(folder, base)
    tmp = os.path.join(folder, f".{base}{_TMP_TAG}{os.getpid()}-{os.urandom(4).hex()}")
    with _term_cleanup():
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)  # the writer may have replaced the file: by name
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o666 & ~_umask())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and \
                    e.errno is not None:
                raise OSError(e.errno, f"{path}: cannot write the file: "
                                       f"{e.strerror or os.strerror(e.errno)}") from None
            raise


def _native(arr, order="K"):
    """``arr`` in native byte order (little-endian here, as both formats are), and C order
    when asked; a 0-d array stays 0-d (np.ascontiguousarray would make it shape (1,)); no copy
    when it already is."""
    dt = arr.dtype if arr.dtype.isnative else arr.dtype.newbyteorder("=")
    return np.asarray(arr, dtype=dt, order=order)


def write_tensors(path, tensors, metadata=None):
    """Write name -> array to `path` (.safetensors or .npz) atomically.

    Any array-like is accepted; it is stored as its values in C order and little-endian
    (a transposed or big-endian array reads back with the same values, in the reader's
    native layout).

    `metadata` (str -> str) goes to the safetensors ``__metadata__`` header, or to a
    ``__metadata__.json`` member (UTF-8 JSON as a uint8 array) of the .npz: no tensor may take
    that name. The new file gets
    the mode the umask gives (``0o666 & ~umask``); on any error (a full disk, SIGTERM) the
    temporary file is removed and an existing `path` is left as it was.
    """
    path = os.fspath(path)
    ext = _fmt(path, reading=False)
    _check_target(path)
    metadata = dict(metadata or {})
    for k, v in metadata.items():  # both formats alike (an .npz would store str(v))
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{path}: metadata[{k!r}]: expected str keys and values, got "
                            f"{type(k).__name__} -> {type(v).__name__}")
    # what the readers take back (numbers, bfloat16/float8; safetensors knows fewer): checked
    # before anything is written
    st_types = [np.dtype(d) for d in _ST_DTYPES.values()] + list(_dtypes.ST_ML_TAGS.values())
    arrays = {}
    for name, v in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"{path}: tensors: expected str names, got "
                            f"{type(name).__name__} {name!r}")
        if name == _RESERVED[ext]:
            raise ValueError(f"{path}: tensors[{name!r}]: the name is reserved in {ext} files "
                             f"(it holds the metadata)")
        arr = np.asarray(v)
        dt = arr.dtype if arr.dtype.isnative else arr.dtype.newbyteorder("=")
        ok = any(dt == d for d in st_types) if ext == ".safetensors" else \
            (dt.kind in "biuf" or _dtypes.is_ml_float(dt))
        if not ok:
            raise TypeError(f"{path}: tensors[{name!r}]: {ext} files hold no {arr.dtype} "
                            f"arrays (sub-byte integers: store qc.pack_bits(...), uint8)")
        arrays[name] = arr
    with _atomic_path(path) as tmp:
        if ext == ".safetensors":
            save_file = require("safetensors.numpy", what="writing .safetensors").save_file
            # the library writes each buffer as it lies in memory: C order (a transposed or
            # Fortran-ordered array came back scrambled) and little-endian, like the file
            arrays = {k: _native(a, order="C") for k, a in arrays.items()}
            try:
                save_file(arrays, tmp, metadata=metadata or None)
            except Exception as e:  # the library reports a full disk as its own error
                if "safetensors" in type(e).__module__:
                    raise OSError(errno.EIO, str(e)) from None
                raise
        else:
            with open(tmp, "wb") as raw:
                with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    items = []
                    types = {}
                    for name, arr in arrays.items():  # (write_array streams any layout)
                        arr = _native(arr)  # the file's byte order, one tensor at a time
                        if _dtypes.is_ml(arr.dtype):
                            types[name] = arr.dtype.name
                            arr = arr.view(f"u{arr.dtype.itemsize}")
                        items.append((name, arr))
                    if types:
                        metadata[_NPZ_DTYPES] = json.dumps(types, sort_keys=True)
                    if metadata:
                        blob = json.dumps(metadata, sort_keys=True).encode("utf-8")
                        items.append(("__metadata__.json", np.frombuffer(blob, np.uint8)))
                    for name, arr in items:
                        with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                            np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)
