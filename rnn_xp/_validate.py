"""Input checks for forward(): every error says what was given, what was expected and the fix."""

from __future__ import annotations

import numbers
import os
import stat
import zipfile

import numpy as np

from . import _xp

_FIX_MOVE = "Fix: rnn_xp.to_device(params, xp, device=..., dtype=...) or move x to where params live"


def _dask_hint(given, weights):
    """What to do instead when a dask array meets a single layer, or the weights were moved to dask."""
    if _xp.namespace_name(weights) == "dask.array":
        return (
            " Weights in dask.array are not supported: keep them in the chunks' namespace (NumPy params for "
            "NumPy-backed chunks) and pass the dask array to rnn_xp.forward or a model"
        )
    if _xp.namespace_name(given) == "dask.array":
        return (
            " A dask array runs through rnn_xp.forward or a model (e.g. rnn_xp.Sequential([layer])), one task "
            "per batch chunk, with the weights in the namespace of its chunks"
        )
    return ""


def _describe(a):
    if _xp.is_array(a):
        return (
            f"{_xp.namespace_name(_xp.array_namespace(a))} array of shape {tuple(a.shape)}, "
            f"dtype {_xp.dtype_name(a.dtype)}, device {_xp.device(a)}"
        )
    return f"{type(a).__name__}"


def check_int(name, value, minimum):
    """An int (a Python or NumPy integer, not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_bool(name, value):
    """True or False (NumPy's bool too): a string such as 'no' is refused, not read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(name, value, choices):
    """One of ``choices`` (strings); anything else, of any type, is a ValueError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; expected one of {', '.join(map(repr, choices))}")
    return value


def check_path(path, fn):
    """A path to write or read: a str or os.PathLike that is not a directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}() takes the path of a file (str or os.PathLike); got {type(path).__name__}")
    if os.path.isdir(path):
        raise ValueError(f"{os.fspath(path)!r} is a directory; {fn}() reads a file. Fix: pass the file's path")
    return path


_FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def check_file(path, fn):
    """A loader's path: a str or os.PathLike naming a regular file once links are followed.

    A missing file raises FileNotFoundError; a directory, a device (``/dev/zero`` never ends), a FIFO (which
    blocks until someone writes) or a socket raises ValueError before anything is opened.
    """
    check_path(path, fn)
    mode = os.stat(path).st_mode  # follows symbolic links; FileNotFoundError for a missing file or a broken link
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")
        raise ValueError(
            f"{os.fspath(path)!r} is not a regular file ({kind}, after following links); {fn}() reads "
            "regular files only. Fix: copy the data into a file and pass its path"
        )
    return path


ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


def check_zip_member(info, limit=None, ratio=1000):
    """Refuse, before it is read, a zip member larger than ``limit``, inflating ``ratio`` times (a zip bomb), or
    compressed by any method but stored and deflate.

    zipfile bounds what it inflates from a deflate member by the declared size, but decompresses each chunk of a
    bzip2 or lzma member in full whatever the member declares (a kilobyte can become gigabytes), so neither the
    declared size nor the ratio bounds those: they are refused (np.savez, torch.save and Keras write stored or
    deflate members).
    """
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = ZIP_METHODS.get(info.compress_type, f"number {info.compress_type}")
        raise ValueError(
            f"{info.filename} is compressed with the compression method {method}; members stored or "
            "deflated are read (other methods inflate without a bound). Fix: rewrite the archive with "
            "zipfile.ZIP_STORED or ZIP_DEFLATED"
        )
    if limit is not None and info.file_size > limit:
        raise ValueError(f"{info.filename} declares {info.file_size} bytes; at most {limit} are read")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > ratio * max(info.compress_size, 1):
        raise ValueError(f"{info.filename} declares {info.file_size} bytes compressed into {info.compress_size}")


def read_zip_member(zf, info, limit=None, ratio=1000):
    """The bytes of a zip member, checked by :func:`check_zip_member` first and never more than it declares.

    zipfile stops a stored or deflated member at its declared size and checks its CRC at the end, so what is
    read here is bounded by ``limit`` and by ``ratio`` times the compressed size, whatever the stream holds; the
    compressed size itself by the archive (members lie before its central directory, at ``start_dir``).
    """
    check_zip_member(info, limit, ratio)
    held = getattr(zf, "start_dir", None)
    if held is not None and info.compress_size > held:
        raise ValueError(f"{info.filename} declares {info.compress_size} compressed bytes; the archive holds {held}")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ValueError(
            f"{info.filename} is stored (not compressed) but declares {info.file_size} bytes in {info.compress_size}"
        )
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ValueError(f"{info.filename} holds {len(data)} bytes; its header declares {info.file_size}")
    return data


def as_host(name, values, shape_hint):
    """A documented conversion: a (nested) list of Python values to a NumPy array, ragged lists refused."""
    try:
        return np.asarray(values)
    except ValueError:  # numpy: "setting an array element with a sequence ... inhomogeneous shape"
        raise ValueError(f"{name} is a ragged list; expected a rectangular {shape_hint}") from None


def check_same_space(layer, a, ref):
    """``a`` (an input) in the namespace and on the device of ``ref`` (a weight)."""
    axp, rxp = _xp.array_namespace(a), _xp.array_namespace(ref)
    if not _xp.same_namespace(axp, rxp) or not _xp.same_device(_xp.device(a), _xp.device(ref)):
        raise TypeError(
            f"{layer}: input is a {_xp.namespace_name(axp)} array on {_xp.device(a)}, weights live in "
            f"{_xp.namespace_name(rxp)} on {_xp.device(ref)} (no silent transfers). "
            "Fix: rnn_xp.to_device(model, xp, device=...) or move the input." + _dask_hint(axp, rxp)
        )


def check_layer_input(layer, x, ref=None, *, ndim=1, features=None):
    """The input of a model layer: a floating array with at least ``ndim`` axes, in ``ref``'s namespace,
    device and dtype when the layer has weights; returns its namespace."""
    if not _xp.is_array(x):
        raise TypeError(f"{layer}: the input must be an array; got {_describe(x)}. Fix: xp.asarray(x)")
    xp = _xp.array_namespace(x)
    if ref is not None:
        check_same_space(layer, x, ref)
    if not _xp.is_real_floating(xp, x.dtype):
        raise TypeError(
            f"{layer}: the input has dtype {_xp.dtype_name(x.dtype)}; expected floating point. "
            f"Fix: xp.astype(x, xp.{_xp.dtype_name(ref.dtype) if ref is not None else 'float32'})"
        )
    if ref is not None and x.dtype != ref.dtype:
        given, wanted = _xp.dtype_name(x.dtype), _xp.dtype_name(ref.dtype)
        raise TypeError(
            f"{layer}: the input has dtype {given} but the weights are {wanted} (no silent casts). "
            f"Fix: xp.astype(x, xp.{wanted}) or rnn_xp.to_device(model, xp, dtype='{given}')"
        )
    if x.ndim < ndim:
        raise ValueError(f"{layer}: the input has shape {tuple(x.shape)}; expected at least {ndim} dimension(s)")
    if features is not None and x.shape[-1] != features:
        raise ValueError(
            f"{layer}: the input has {x.shape[-1]} features (shape {tuple(x.shape)}); expected "
            f"{features} on the last axis"
        )
    return xp


def check_x(x, params, time_major):
    """x's namespace must be the params'; returns (xp, x)."""
    pxp = params.xp
    pname = _xp.namespace_name(pxp)
    if not _xp.is_array(x):
        raise TypeError(
            f"x must be an array of the params' namespace ({pname}); got {_describe(x)}. "
            f"Fix: convert it first, e.g. xp.asarray(x, dtype=xp.{params.config.dtype})"
        )
    xp = _xp.array_namespace(x)
    if not _xp.same_namespace(xp, pxp):
        raise TypeError(
            f"x is a {_xp.namespace_name(xp)} array but params live in {pname} "
            f"(no silent transfers). {_FIX_MOVE}." + _dask_hint(xp, pxp)
        )
    if not _xp.same_device(_xp.device(x), params.device):
        raise ValueError(
            f"x is on device {_xp.device(x)} but params are on {params.device} (no silent transfers). {_FIX_MOVE}"
        )
    if not _xp.is_real_floating(xp, x.dtype):
        hint = " Token ids go through an embedding first (rnn_xp.Embedding)." if xp.isdtype(x.dtype, "integral") else ""
        raise TypeError(
            f"x has dtype {_xp.dtype_name(x.dtype)}; expected a floating dtype, the params' "
            f"{params.config.dtype}.{hint} Fix: xp.astype(x, xp.{params.config.dtype})"
        )
    if x.dtype != params.dtype:
        raise TypeError(
            f"x has dtype {_xp.dtype_name(x.dtype)} but params are {params.config.dtype} "
            f"(no silent casts). Fix: xp.astype(x, xp.{params.config.dtype}) or "
            f"rnn_xp.to_device(params, xp, dtype='{_xp.dtype_name(x.dtype)}')"
        )
    layout = "(time, batch, features)" if time_major else "(batch, time, features)"
    if x.ndim != 3:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected 3 dimensions {layout}. Fix: add the missing "
            f"axis, e.g. x[None, ...] for a single sequence"
        )
    F = params.config.input_size
    if x.shape[2] != F:
        raise ValueError(
            f"x has {x.shape[2]} features (shape {tuple(x.shape)}, {layout}); params expect input_size={F}"
        )
    return xp, x


def check_state_array(name, s, shape, x, xp, layout="(num_layers*num_directions, batch, units)"):
    if not _xp.is_array(s):
        raise TypeError(f"{name} must be an array of shape {shape} in x's namespace; got {_describe(s)}")
    if not _xp.same_namespace(_xp.array_namespace(s), xp) or not _xp.same_device(_xp.device(s), _xp.device(x)):
        raise TypeError(
            f"{name} is a {_describe(s)}; expected x's namespace {_xp.namespace_name(xp)} on device {_xp.device(x)}"
        )
    if s.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {_xp.dtype_name(s.dtype)}; expected x's {_xp.dtype_name(x.dtype)}")
    if tuple(s.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(s.shape)}; expected {shape} {layout}")
    return s


def check_state(initial_state, cfg, x, xp, B):
    LD = cfg.num_layers * cfg.num_directions
    h_shape, c_shape = (LD, B, cfg.output_size), (LD, B, cfg.hidden_size)
    dev = _xp.device(x)
    if initial_state is None:
        h0 = xp.zeros(h_shape, dtype=x.dtype, device=dev)
        c0 = xp.zeros(c_shape, dtype=x.dtype, device=dev) if cfg.cell == "lstm" else None
        return h0, c0
    if cfg.cell == "lstm":
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise TypeError(
                f"an LSTM's initial_state must be the pair (h0, c0) with h0 {h_shape} and c0 "
                f"{c_shape}; got {_describe(initial_state)}"
                + (" (c0 is missing)" if _xp.is_array(initial_state) else "")
            )
        return (
            check_state_array("initial_state h0", initial_state[0], h_shape, x, xp),
            check_state_array("initial_state c0", initial_state[1], c_shape, x, xp),
        )
    if isinstance(initial_state, (tuple, list)):
        raise TypeError(
            f"a {cfg.cell.upper()}'s initial_state is one array h0 of shape {h_shape}; got a "
            f"{type(initial_state).__name__} (only LSTM takes (h0, c0))"
        )
    return check_state_array("initial_state", initial_state, h_shape, x, xp), None


def check_lengths(lengths, x, xp, B, T):
    """Lengths as an integer array in x's namespace and on its device (no host round trip for one already
    there; the range check is skipped for traced lengths under jax.jit, whose values are unknown)."""
    if isinstance(lengths, (list, tuple)):
        host = as_host("lengths", lengths, f"({B},) list of ints")  # documented conversion
        if host.size and host.dtype.kind not in "iu":
            raise TypeError(f"lengths must be integers; got the values {list(lengths)[:8]}")
        if host.shape != (B,):
            raise ValueError(f"lengths has shape {host.shape}; expected ({B},), one length per sequence of the batch")
        _check_range(host, T)
        return _xp.from_host(host.astype(np.int32 if T < 2**31 else np.int64), xp, _xp.device(x))
    if not _xp.is_array(lengths):
        raise TypeError(f"lengths must be an integer array or a list of ints (batch,); got {_describe(lengths)}")
    lxp = _xp.array_namespace(lengths)
    if not lxp.isdtype(lengths.dtype, "integral"):
        raise TypeError(
            f"lengths has dtype {_xp.dtype_name(lengths.dtype)}; expected integers "
            "(a length counts steps). Fix: xp.astype(lengths, xp.int32)"
        )
    if tuple(lengths.shape) != (B,):
        raise ValueError(
            f"lengths has shape {tuple(lengths.shape)}; expected ({B},), one length per sequence of the batch"
        )
    if _xp.same_namespace(lxp, xp) and _xp.same_device(_xp.device(lengths), _xp.device(x)):
        if not _xp.is_traced(lengths) and B:
            lo, hi = int(xp.min(lengths)), int(xp.max(lengths))
            if lo < 0 or hi > T:
                _check_range(_xp.to_host(lengths), T)
        return lengths
    if not isinstance(lengths, np.ndarray):
        raise TypeError(
            f"lengths is a {_describe(lengths)}; expected a host (NumPy) array or list, or an array in "
            f"x's namespace {_xp.namespace_name(xp)} on device {_xp.device(x)} (no silent transfers)"
        )
    _check_range(lengths, T)
    return _xp.from_host(lengths, xp, _xp.device(x))


def _check_range(host, T):
    if host.size and (host.min() < 0 or host.max() > T):
        bad = host[(host < 0) | (host > T)]
        raise ValueError(f"lengths must lie in [0, {T}] (the {T} steps of x); got {bad[:8].tolist()}")


def check_mask(mask, x, xp, B, T, time_major):
    shape = (T, B) if time_major else (B, T)
    if isinstance(mask, (list, tuple)):
        mask = as_host("mask", mask, f"{shape} list of booleans")  # documented conversion
    if not _xp.is_array(mask):
        raise TypeError(f"mask must be a boolean array of shape {shape}; got {_describe(mask)}")
    mxp = _xp.array_namespace(mask)
    if not mxp.isdtype(mask.dtype, "bool"):
        raise TypeError(
            f"mask has dtype {_xp.dtype_name(mask.dtype)}; expected bool (True = the step runs). Fix: mask != 0"
        )
    if tuple(mask.shape) != shape:
        layout = "(time, batch)" if time_major else "(batch, time)"
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {shape} {layout}")
    if _xp.same_namespace(mxp, xp) and _xp.same_device(_xp.device(mask), _xp.device(x)):
        return mask
    if not isinstance(mask, np.ndarray):
        raise TypeError(
            f"mask is a {_describe(mask)}; expected a host (NumPy) array or one in x's namespace "
            f"{_xp.namespace_name(xp)} on device {_xp.device(x)}"
        )
    return _xp.from_host(mask, xp, _xp.device(x))


def check_forward_inputs(x, params, initial_state, lengths, mask, time_major):
    check_bool("time_major", time_major)
    xp, x = check_x(x, params, time_major)
    T, B = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    h0, c0 = check_state(initial_state, params.config, x, xp, B)
    if lengths is not None:
        lengths = check_lengths(lengths, x, xp, B, T)
    if mask is not None:
        mask = check_mask(mask, x, xp, B, T, time_major)
    return xp, x, h0, c0, lengths, mask
