"""PyTorch nn.RNN / nn.LSTM / nn.GRU (modules, state_dicts or files of them) to rnn_xp params, and back.

PyTorch's layout is rnn_xp's: the same gate orders (LSTM i, f, g, o; GRU r, z, n), the same
matrix shapes and two bias vectors, so the conversion only renames:
``weight_ih_l{k}[_reverse] -> w_ih``, ``weight_hh -> w_hh``, ``bias_ih -> b_ih``,
``bias_hh -> b_hh``, ``weight_hr -> w_hr``.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import replace

import numpy as np

from .. import _xp
from .._validate import check_choice, check_file, check_zip_member
from ..params import RNNParams, make_config
from ..registry import CELLS

__all__ = ["from_torch", "to_torch_state_dict"]

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_NAMES = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh", "weight_hr": "w_hr"}
# torch's module mode -> (cell, nonlinearity): RNN_TANH -> ("rnn", "tanh"), LSTM -> ("lstm", None), ...
_MODES = {m: (s.name, m.partition("_")[2].lower() or None) for s in CELLS.values() for m in s.torch_modes}


def _host(key, t):
    try:
        return np.array(_xp.to_host(t), copy=True)
    except Exception as e:  # noqa: BLE001 - a meta tensor, or one on a device that cannot copy to the host
        raise ValueError(f"state_dict[{key!r}] cannot be copied to the host ({type(e).__name__}: {e})") from None


def _from_module(module):
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise TypeError(
            f"from_torch() takes an nn.RNN, nn.LSTM or nn.GRU (or their state_dict); got {type(module).__name__}"
        )
    cell, nonlinearity = _MODES[mode]
    dtype = _xp.dtype_name(module.weight_ih_l0.dtype)
    cfg = make_config(
        cell,
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=bool(module.bidirectional),
        bias=bool(module.bias),
        proj_size=getattr(module, "proj_size", 0) or 0,
        activations=[nonlinearity] if nonlinearity else None,
        dtype=dtype,
    )
    return cfg, {k: v for k, v in module.state_dict().items()}


def _is_safetensors(head):
    # 8 bytes of little-endian header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{"


def _read_file(path):
    """The state_dict in a file: safetensors, or torch.save's format read by torch's safe loader."""
    with open(check_file(path, "from_torch"), "rb") as f:  # FileNotFoundError as it is
        head = f.read(9)
    where = os.fspath(path)
    if _is_safetensors(head):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError(f"{where} is a safetensors file: pip install safetensors") from None
        try:
            return load_file(path)
        except Exception as e:  # noqa: BLE001 - safetensors reports a malformed file in several types
            raise ValueError(f"{where} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{where} is not a safetensors file, so it is read as a torch.save file, which needs "
            "PyTorch: pip install torch (or save the weights with safetensors, which rnn_xp reads "
            "without torch)"
        ) from None

    try:  # torch.save writes a zip of uncompressed records: one that declares more bytes than the file is a bomb
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                check_zip_member(info, limit=os.path.getsize(path))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise ValueError(
            f"{where} cannot be read by torch.load(weights_only=True): it is not a safetensors file nor "
            f"a sound torch.save archive (a zip, as PyTorch >= 1.6 writes) ({e}). Fix: "
            "torch.save(module.state_dict(), path), or use safetensors"
        ) from None
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... for a bad or unsafe file
        why = (
            "it pickles objects other than tensors (a whole module?), which the safe loader refuses to run"
            if "weights only" in str(e).lower()
            else f"{type(e).__name__}: {str(e)[:200]}"
        )
        raise ValueError(
            f"{where} cannot be read by torch.load(weights_only=True): {why}. Fix: save the "
            "state_dict, not the module: torch.save(module.state_dict(), path), or use safetensors"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(
            f"{where} holds a {type(obj).__name__}; expected a state_dict (a dict of tensors). Fix: "
            "torch.save(module.state_dict(), path)"
        )
    _check_storages(obj, where)
    return obj


def _check_storages(sd, where):
    """Refuse, before anything is copied, tensors that view more bytes than their file stores.

    torch.save stores each storage once and each tensor as (storage, offset, shape, strides): a tensor made by
    ``expand()`` (stride 0) or ``as_strided`` can view one stored float as gigabytes, which copying to the host
    would materialise. Each tensor's bytes must fit in its storage, and all tensors together in the storages
    they view (tensors of a state_dict do not overlap).
    """
    import torch

    viewed, stored = 0, {}
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor):
            continue  # refused by name or type later
        nbytes = t.numel() * t.element_size()
        storage = t.untyped_storage()
        if nbytes > storage.nbytes():
            raise ValueError(
                f"{where}: state_dict[{key!r}] of shape {tuple(t.shape)} views {nbytes} bytes of a "
                f"storage of {storage.nbytes()} (strides {t.stride()}: expand() or as_strided). Fix: "
                "save plain tensors, e.g. {k: v.contiguous().clone() for k, v in sd.items()}"
            )
        viewed += nbytes
        stored[storage.data_ptr()] = storage.nbytes()
    if viewed > sum(stored.values()):
        raise ValueError(
            f"{where}: the tensors view {viewed} bytes, more than the {sum(stored.values())} bytes of "
            "the storages the file holds (they overlap). Fix: save plain tensors, e.g. "
            "{k: v.contiguous().clone() for k, v in sd.items()}"
        )


def _key_error(key, sd):
    """The error for a key that is no recurrent weight, with the prefix to strip when there is one."""
    head, _, tail = str(key).rpartition(".")
    hint = ""
    if head and _KEY.match(tail):
        hint = (
            f" It carries the prefix {head + '.'!r} of a larger model; pass only the recurrent module's "
            f"weights: {{k[{len(head) + 1}:]: v for k, v in sd.items() if k.startswith({head + '.'!r})}}"
        )
    return ValueError(
        f"state_dict key {key!r} is not an nn.RNN/LSTM/GRU weight (expected names like "
        f"'weight_ih_l0', 'bias_hh_l1_reverse').{hint}"
    )


def _from_state_dict(sd, cell, nonlinearity):
    keys = {}
    for key, value in sd.items():
        m = _KEY.match(str(key))
        if m is None:
            raise _key_error(key, sd)
        if not _xp.is_array(value):
            raise ValueError(f"state_dict[{key!r}] is a {type(value).__name__}; expected a tensor or array")
        ndim = 1 if m.group(1).startswith("bias") else 2
        if value.ndim != ndim or 0 in tuple(value.shape):
            raise ValueError(
                f"state_dict[{key!r}] has shape {tuple(value.shape)}; expected a non-empty {ndim}-D tensor"
            )
        if not _xp.array_namespace(value).isdtype(value.dtype, "real floating"):
            raise ValueError(f"state_dict[{key!r}] has dtype {_xp.dtype_name(value.dtype)}; expected floating point")
        keys[key] = (m.group(1), int(m.group(2)), bool(m.group(3)), value)
    if "weight_ih_l0" not in keys or "weight_hh_l0" not in keys:
        raise ValueError(f"state_dict lacks weight_ih_l0/weight_hh_l0; got keys {sorted(map(str, sd))}")
    w_ih, w_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    proj = "weight_hr_l0" in sd
    hidden = tuple(sd["weight_hr_l0"].shape)[1] if proj else tuple(w_hh.shape)[1]
    gates, rem = divmod(tuple(w_ih.shape)[0], hidden)
    by_gates = {s.num_gates: s.name for s in CELLS.values()}
    inferred = by_gates.get(gates) if rem == 0 else None
    if cell is None:
        if inferred is None:
            raise ValueError(
                f"cannot tell the cell from weight_ih_l0 of shape {tuple(w_ih.shape)} and "
                f"hidden size {hidden}; pass cell='rnn', 'lstm' or 'gru'"
            )
        cell = inferred
    check_choice("cell", cell, tuple(CELLS))
    if nonlinearity is not None and cell != "rnn":
        raise ValueError(f"nonlinearity applies to cell='rnn' only; got cell={cell!r}")
    if cell == "rnn" and nonlinearity is None:
        warnings.warn(
            "from_torch(): a state_dict does not record an nn.RNN's nonlinearity; assuming 'tanh' (the "
            "default). Pass nonlinearity='tanh' to say so, or nonlinearity='relu' for "
            "nn.RNN(nonlinearity='relu'), whose outputs would otherwise be wrong",
            UserWarning,
            stacklevel=3,
        )
    num_layers = 1 + max(k for _, k, _, _ in keys.values())
    if num_layers > len(keys):  # the layers must be numbered 0, 1, ...: a huge index must not make us loop
        raise ValueError(
            f"state_dict keys name layer {num_layers - 1} but hold {len(keys)} tensors; expected layers "
            f"numbered 0, 1, ... Got keys {sorted(map(str, sd))[:8]}"
        )
    bidirectional = any(rev for _, _, rev, _ in keys.values())
    cfg = make_config(
        cell,
        tuple(w_ih.shape)[1],
        hidden,
        num_layers=num_layers,
        bidirectional=bidirectional,
        bias="bias_ih_l0" in sd,
        proj_size=tuple(w_hh.shape)[1] if proj else 0,
        activations=[nonlinearity or "tanh"] if cell == "rnn" else None,
        dtype=_xp.dtype_name(w_ih.dtype),
    )
    return cfg, dict(sd)


def from_torch(obj, *, cell=None, nonlinearity=None):
    """Params (on NumPy) that reproduce an nn.RNN, nn.LSTM or nn.GRU.

    ``obj`` is the module, its state_dict, or the path of a file holding the state_dict: a
    ``torch.save`` file (read with ``torch.load(weights_only=True)``, which never runs pickled
    code) or a safetensors file (read without torch). A state_dict cannot tell an RNN's
    nonlinearity: for an RNN state_dict without ``nonlinearity=`` a UserWarning says that tanh
    is assumed (pass ``nonlinearity="relu"`` when it was one, ``"tanh"`` to say so); the cell is
    inferred from the shapes unless given. A module made with ``batch_first=False`` is run with
    ``forward(..., time_major=True)``. Move the result with :func:`rnn_xp.to_device`.
    """
    if isinstance(obj, (str, os.PathLike)):
        obj = _read_file(obj)
    if hasattr(obj, "state_dict") and hasattr(obj, "mode"):
        if cell is not None or nonlinearity is not None:
            raise ValueError("cell and nonlinearity are read from the module; pass them only with a state_dict")
        cfg, sd = _from_module(obj)
    elif isinstance(obj, dict) or hasattr(obj, "items"):
        if nonlinearity not in (None, "tanh", "relu"):
            raise ValueError(f"nonlinearity={nonlinearity!r}; PyTorch's nn.RNN takes 'tanh' or 'relu'")
        cfg, sd = _from_state_dict(obj, cell, nonlinearity)
    else:
        raise TypeError(
            f"from_torch() takes an nn.RNN/LSTM/GRU module, a state_dict or the path of a file holding "
            f"one; got {type(obj).__name__}"
        )
    arrays = {}
    for key, value in sd.items():
        m = _KEY.match(str(key))
        if m is None:
            raise ValueError(f"unexpected key {key!r} in the module's state_dict")
        arrays[f"l{m.group(2)}.{'rev' if m.group(3) else 'fwd'}.{_NAMES[m.group(1)]}"] = _host(key, value)
    # the host holds bfloat16 as float32: the params' dtype is the one of the arrays they hold
    cfg = replace(cfg, dtype=_xp.dtype_name(next(iter(arrays.values())).dtype))
    try:
        return RNNParams.from_named_arrays(cfg, arrays)
    except ValueError as e:
        raise ValueError(f"the torch weights do not form a consistent {cfg.cell.upper()}: {e}") from None


def to_torch_state_dict(params):
    """A state_dict (torch tensors on the CPU) that the matching torch module loads."""
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch_state_dict() makes torch tensors: pip install torch") from None

    if not isinstance(params, RNNParams):
        raise TypeError(f"to_torch_state_dict() takes RNNParams; got {type(params).__name__}")
    cfg = params.config
    if cfg.bias == "single" or cfg.peepholes or cfg.input_forget or cfg.clip is not None or cfg.direction == "reverse":
        raise ValueError(
            "PyTorch modules have no single bias, peepholes, input_forget, clip or reverse-only "
            "direction; these params cannot be expressed as a torch state_dict"
        )
    if cfg.cell == "gru" and not cfg.reset_after:
        raise ValueError(
            "PyTorch's GRU applies the reset after the recurrent matmul; reset_after=False "
            "params cannot be expressed as a torch state_dict"
        )
    back = {v: k for k, v in _NAMES.items()}
    out = {}
    for name, a in params.named_arrays():
        layer, direction, w = name.split(".")
        key = f"{back[w]}_{layer}{'_reverse' if direction == 'rev' else ''}"
        host = _xp.to_host(a)
        t = torch.from_numpy(np.array(host, copy=True))
        out[key] = t.to(getattr(torch, cfg.dtype))
    return out
