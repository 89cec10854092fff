"""save/load: one .npz file of plain arrays with the JSON config stored inside it.

Loading never unpickles (the .npy members are parsed here, never by ``np.load``), never writes, reads regular
files only, checks each member's compression method, declared size and ratio before reading it and each
array's header before using its data, and validates the result as a whole (shapes, dtypes, config).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile

import numpy as np

from . import _xp
from ._validate import check_file, check_path, read_zip_member
from .backend import resolve_target
from .layers.base import REGISTRY, from_config, params_from_config
from .params import RNNConfig, RNNParams
from .tools import to_device

__all__ = ["save", "load"]

FORMAT = "rnn_xp"
VERSION = 1
_CONFIG_KEY = "__rnn_xp__"
_MAX_CONFIG_BYTES = 1 << 20


def _host_for_file(a):
    h = np.ascontiguousarray(_xp.to_host(a))
    if h.dtype.kind != "f":
        raise TypeError(f"only floating arrays are saved; got {h.dtype}")
    return h


def _describe_obj(obj):
    """(JSON header, {name: array}) for params, a layer or a model."""
    if isinstance(obj, RNNParams):
        return {"kind": "params", "config": obj.config.to_json()}, dict(obj.named_arrays())
    if REGISTRY.get(type(obj).__name__) is type(obj):
        arrays = dict(obj.named_arrays())
        dtype = next((_xp.dtype_name(a.dtype) for a in arrays.values()), "float32")
        return {"kind": "model", "config": obj.config(), "dtype": dtype}, arrays
    raise TypeError(f"save() takes rnn_xp params, a layer or a model; got {type(obj).__name__}")


def save(obj, path) -> None:
    """Write params, a layer or a model to ``path`` (a .npz file), atomically: a crash never leaves half a file."""
    header, arrays = _describe_obj(obj)
    path = os.fspath(check_path(path, "save"))
    payload = {n: _host_for_file(a) for n, a in arrays.items()}
    # the header lists every array's shape so that load() can bound each read before it happens
    header = {"format": FORMAT, "version": VERSION, **header, "arrays": {n: list(a.shape) for n, a in payload.items()}}
    payload[_CONFIG_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    write_atomically(path, lambda f: np.savez(f, **payload))


def write_atomically(path, write, *, text=False):
    """``write(f)`` into a temporary file beside ``path``, flushed to disk, then renamed over ``path``: readers
    see the old file or the new one, and a crash leaves no half-written file (the temporary one is removed)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnn_xp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _bad(path, why):
    return ValueError(f"{path!s} is not a valid rnn_xp file: {why}. Fix: write it with rnn_xp.save()")


def _expected_arrays(header):
    """{name: shape} from the header's table of arrays, validated."""
    table = header.get("arrays")
    if not isinstance(table, dict):
        raise ValueError("the header has no table of arrays")
    out = {}
    for name, shape in table.items():
        if not (
            isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        ):
            raise ValueError(f"array {name!r} has a malformed shape {shape!r} in the header")
        out[name] = tuple(shape)
    if header.get("kind") not in ("params", "model"):
        raise ValueError(f"unknown kind {header.get('kind')!r}; expected 'params' or 'model'")
    return out


_NPY_FLOATS = ("float16", "float32", "float64")


def _read_npy(zf, info, limit, *, shape=None, header=False):
    """The array in an .npy member, its header parsed and checked before any of its data is used.

    The member is read whole but bounded (:func:`read_zip_member`); its header's dtype must be a float16/32/64
    (any byte order, converted to native) or, for ``header``, bytes; its shape must be ``shape`` and its data
    exactly what that shape needs. The result is a read-only view of the bytes read, which no one else holds.
    """
    data = read_zip_member(zf, info, limit)
    f = io.BytesIO(data)
    try:  # numpy parses the header with ast and tokenize, which fail in many types on hostile bytes
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got_shape, fortran, dtype = read_header(f, max_header_size=10_000)
    except Exception as e:  # noqa: BLE001 - ValueError, SyntaxError, tokenize.TokenError, TypeError, ...
        raise ValueError(f"{info.filename} is not an .npy array ({type(e).__name__}: {e})") from None
    if header:
        if dtype != np.uint8 or len(got_shape) != 1:
            raise ValueError(
                f"{info.filename}: the rnn_xp header is not a byte string (dtype {dtype}, shape {got_shape})"
            )
    elif dtype.kind != "f" or dtype.newbyteorder("=").name not in _NPY_FLOATS:
        raise ValueError(
            f"{info.filename} has dtype {dtype}; expected floating point: {', '.join(_NPY_FLOATS)} (either byte order)"
        )
    if shape is not None and tuple(got_shape) != shape:
        raise ValueError(f"{info.filename} has shape {tuple(got_shape)}; the header expects {shape}")
    count = math.prod(got_shape)
    if count * dtype.itemsize != len(data) - f.tell():  # before any allocation: the shape may claim terabytes
        raise ValueError(
            f"{info.filename} holds {len(data) - f.tell()} bytes of data; its shape {tuple(got_shape)} "
            f"of {dtype} needs {count * dtype.itemsize}"
        )
    a = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell()).reshape(got_shape, order="F" if fortran else "C")
    return a if dtype.isnative else a.astype(dtype.newbyteorder("="))


def _read(path):
    """(header, {name: np.ndarray}) from an rnn_xp .npz file, checked before anything big is read."""
    check_file(path, "load")
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:  # NotImplementedError:
        raise _bad(path, f"not a readable .npz archive ({e})") from None  # a zip version or method zipfile lacks
    with zf:
        try:
            infos = {}
            for info in zf.infolist():
                if info.filename in infos:
                    raise ValueError(f"the archive holds {info.filename} twice")
                infos[info.filename] = info
            cfg_member = _CONFIG_KEY + ".npy"
            if cfg_member not in infos:
                raise ValueError("no rnn_xp header inside the archive")
            raw = _read_npy(zf, infos[cfg_member], _MAX_CONFIG_BYTES, header=True)
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError("the header does not name the rnn_xp format")
            if header.get("version") != VERSION:
                raise ValueError(f"format version {header.get('version')!r}; this rnn_xp reads {VERSION}")
            expected = _expected_arrays(header)
            members = set(infos) - {cfg_member}
            wanted = {n + ".npy" for n in expected}
            if members != wanted:
                raise ValueError(
                    f"the archive's arrays do not match the header's table (missing "
                    f"{sorted(n[:-4] for n in wanted - members)}, "
                    f"unexpected {sorted(members - wanted)})"
                )
            arrays = {}
            for name, shape in sorted(expected.items()):
                limit = 8 * math.prod(shape) + 4096  # float64 data plus the .npy header
                arrays[name] = _read_npy(zf, infos[name + ".npy"], limit, shape=shape)
        # RuntimeError: zipfile's word for an encrypted member; NotImplementedError: a method or an encryption
        except (
            ValueError,
            KeyError,
            TypeError,
            OSError,
            EOFError,
            zipfile.BadZipFile,
            RecursionError,
            NotImplementedError,
            RuntimeError,
            UnicodeDecodeError,
            OverflowError,
        ) as e:
            raise _bad(path, str(e)) from None
    return header, arrays


def load(path, xp=None, device=None):
    """Read params, a layer or a model written by :func:`save`, onto namespace ``xp`` and ``device``.

    ``xp=None`` uses :func:`rnn_xp.select_backend`. Raises ValueError for anything that is not a
    valid rnn_xp file; never unpickles and never writes.
    """
    header, arrays = _read(path)
    try:
        if header["kind"] == "params":
            target = RNNConfig.from_json(header["config"]).dtype
            obj = params_from_config(header["config"], arrays)
        else:
            target = header.get("dtype", "float32")
            obj = from_config(header["config"], arrays)
        if target not in _xp.FLOAT_DTYPES:
            raise ValueError(f"dtype {target!r}; expected one of {_xp.FLOAT_DTYPES}")
    # a hostile config may nest or type anything: every way it fails is a ValueError to the caller
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as e:
        raise _bad(path, str(e)) from None
    xp, device = resolve_target(xp, device)
    return to_device(obj, xp, device, target)
