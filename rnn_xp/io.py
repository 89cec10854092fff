"""save/load: one .npz file of plain arrays with the JSON config stored inside it.

Loading never unpickles (``allow_pickle=False``), never writes, checks each member's declared
size before reading it, and validates the result as a whole (shapes, dtypes, config).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile

import numpy as np

from . import _xp
from .activations import Activation
from .model import Dense, Embedding, Recurrent, Sequential, Softmax
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
    """(JSON header, {name: array}) for params or a model."""
    if isinstance(obj, RNNParams):
        return {"kind": "params", "config": obj.config.to_json()}, dict(obj.named_arrays())
    if isinstance(obj, Sequential):
        layers, arrays = [], {}
        for i, layer in enumerate(obj.layers):
            layers.append(layer.config())
            arrays.update({f"layer{i}.{n}": a for n, a in layer.named_arrays()})
        dtype = next((_xp.dtype_name(a.dtype) for a in arrays.values()), "float32")
        return {"kind": "model", "name": obj.name, "input_shape": obj.input_shape, "layers": layers,
                "dtype": dtype}, arrays
    raise TypeError(f"save() takes rnn_xp params or a Sequential model; got {type(obj).__name__}")


def save(obj, path) -> None:
    """Write params or a model to ``path`` (a .npz file), atomically: a crash never leaves half a file."""
    header, arrays = _describe_obj(obj)
    header = {"format": FORMAT, "version": VERSION, **header}
    payload = {n: _host_for_file(a) for n, a in arrays.items()}
    payload[_CONFIG_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnn_xp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
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


def _rnn_config(d, n_members):
    cfg = RNNConfig.from_json(d)
    if cfg.num_layers * cfg.num_directions > n_members:  # a hostile header must not make us loop for long
        raise ValueError(f"the header declares {cfg.num_layers} layer(s) of {cfg.num_directions} direction(s) "
                         f"but the archive holds only {n_members} arrays")
    return cfg


def _expected_arrays(header, n_members):
    """{name: shape, None (any shape) or 'optional'} the header promises, for params or a model."""
    kind = header.get("kind")
    if kind == "params":
        cfg = _rnn_config(header.get("config"), n_members)
        return {f"l{k}.{'rev' if d else 'fwd'}.{n}": shape
                for k in range(cfg.num_layers) for d in range(cfg.num_directions)
                for n, shape in cfg.shapes(k).items()}
    if kind == "model":
        out = {}
        layers = header.get("layers")
        if not isinstance(layers, list) or len(layers) > n_members + 64:
            raise ValueError("the header's layer list is missing or longer than the archive could hold")
        for i, lc in enumerate(layers):
            if not isinstance(lc, dict):
                raise ValueError(f"layer {i} is not a JSON object")
            t = lc.get("type")
            if t == "Recurrent":
                cfg = _rnn_config(lc.get("rnn"), n_members)
                out.update({f"layer{i}.l{k}.{'rev' if d else 'fwd'}.{n}": shape
                            for k in range(cfg.num_layers) for d in range(cfg.num_directions)
                            for n, shape in cfg.shapes(k).items()})
            elif t == "Embedding":
                out[f"layer{i}.table"] = None
            elif t == "Dense":
                out[f"layer{i}.kernel"] = None
                out[f"layer{i}.bias"] = "optional"
            elif t != "Softmax":
                raise ValueError(f"layer {i} has unknown type {t!r}")
        return out
    raise ValueError(f"unknown kind {kind!r}; expected 'params' or 'model'")


def _read(path):
    """(header, {name: np.ndarray}) from an rnn_xp .npz file, checked before anything big is read."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _bad(path, f"not a readable .npz archive ({e})") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        cfg_member = _CONFIG_KEY + ".npy"
        if cfg_member not in infos:
            raise _bad(path, "no rnn_xp header inside the archive")
        if infos[cfg_member].file_size > _MAX_CONFIG_BYTES:
            raise _bad(path, f"header of {infos[cfg_member].file_size} bytes is too large")
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw = npz[_CONFIG_KEY]
                if raw.dtype != np.uint8 or raw.ndim != 1:
                    raise ValueError("header is not a byte string")
                header = json.loads(raw.tobytes().decode("utf-8"))
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    raise ValueError("the header does not name the rnn_xp format")
                if header.get("version") != VERSION:
                    raise ValueError(f"format version {header.get('version')!r}; this rnn_xp reads {VERSION}")
                expected = _expected_arrays(header, len(infos))
                present = {n[:-4] for n in infos if n.endswith(".npy")} - {_CONFIG_KEY}
                required = {n for n, s in expected.items() if s != "optional"}
                if not required <= present or not present <= set(expected) or len(infos) != len(present) + 1:
                    raise ValueError(f"arrays {sorted(present)} do not match the header's "
                                     f"{sorted(expected)} (missing {sorted(required - present)}, "
                                     f"unexpected {sorted(set(infos) - {n + '.npy' for n in expected} - {cfg_member})})")
                arrays = {}
                for name in sorted(present):
                    shape = expected[name]
                    if isinstance(shape, tuple):
                        limit = 8 * math.prod(shape) + 4096  # float64 data plus the .npy header
                        if infos[name + ".npy"].file_size > limit:
                            raise ValueError(f"{name} declares {infos[name + '.npy'].file_size} bytes, more than "
                                             f"its shape {shape} can hold")
                    a = npz[name]
                    if a.dtype.kind != "f":
                        raise ValueError(f"{name} has dtype {a.dtype}; expected floating point")
                    if isinstance(shape, tuple) and a.shape != shape:
                        raise ValueError(f"{name} has shape {a.shape}; the header expects {shape}")
                    arrays[name] = a
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile, RecursionError,
                UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad(path, str(e)) from None
    return header, arrays


def _build_layer(i, lc, arrays):
    t = lc["type"]
    name = lc.get("name", "")
    if t == "Recurrent":
        cfg = RNNConfig.from_json(lc["rnn"])
        prefix = f"layer{i}."
        sub = {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}
        params = RNNParams.from_named_arrays(cfg, sub)
        return Recurrent(params, bool(lc.get("return_sequences", False)), bool(lc.get("zero_output_for_mask", False)),
                         name)
    if t == "Embedding":
        return Embedding(arrays[f"layer{i}.table"], bool(lc.get("mask_zero", False)), name or "embedding")
    if t == "Dense":
        act = lc.get("activation", "linear")
        if act != "softmax":
            if not (isinstance(act, list) and len(act) == 3):
                raise ValueError(f"layer {i}: malformed activation {act!r}")
            act = Activation(*act)
        return Dense(arrays[f"layer{i}.kernel"], arrays.get(f"layer{i}.bias"), act, name or "dense")
    return Softmax(name or "softmax")


def load(path, xp=None, device=None):
    """Read params or a model written by :func:`save`, onto namespace ``xp`` and ``device``.

    ``xp=None`` uses :func:`rnn_xp.select_backend`. Raises ValueError for anything that is not a
    valid rnn_xp file; never unpickles and never writes.
    """
    header, arrays = _read(path)
    try:
        if header["kind"] == "params":
            cfg = RNNConfig.from_json(header["config"])
            host_dtype = "float32" if cfg.dtype == "bfloat16" else cfg.dtype
            arrays = {n: a.astype(host_dtype, copy=False) for n, a in arrays.items()}
            obj = RNNParams.from_named_arrays(
                RNNConfig.from_json({**header["config"], "dtype": host_dtype}), arrays)
            target = cfg.dtype
        else:
            target = header.get("dtype", "float32")
            host_dtype = "float32" if target == "bfloat16" else target
            arrays = {n: a.astype(host_dtype, copy=False) for n, a in arrays.items()}
            shape = header.get("input_shape")
            obj = Sequential([_build_layer(i, lc, arrays) for i, lc in enumerate(header["layers"])],
                             None if shape is None else tuple(shape), str(header.get("name", "sequential")))
    except (ValueError, TypeError, KeyError) as e:
        raise _bad(path, str(e)) from None
    if xp is None:
        from .device import select_backend
        b = select_backend()
        xp, device = b.xp, b.device if device is None else device
    return to_device(obj, xp, device, target)
