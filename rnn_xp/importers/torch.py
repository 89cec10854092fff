"""PyTorch nn.RNN / nn.LSTM / nn.GRU (modules, state_dicts or files of them) to rnn_xp params, and back.

PyTorch's layout is rnn_xp's: the same gate orders (LSTM i, f, g, o; GRU r, z, n), the same
matrix shapes and two bias vectors, so the conversion only renames:
``weight_ih_l{k}[_reverse] -> w_ih``, ``weight_hh -> w_hh``, ``bias_ih -> b_ih``,
``bias_hh -> b_hh``, ``weight_hr -> w_hr``.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .. import _xp
from ..params import GATES, RNNParams, make_config

__all__ = ["from_torch", "to_torch_state_dict"]

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_NAMES = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh", "weight_hr": "w_hr"}
_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", None), "GRU": ("gru", None)}


def _host(t):
    h = _xp.to_host(t)
    return np.array(h, copy=True)


def _from_module(module):
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise TypeError(f"from_torch() takes an nn.RNN, nn.LSTM or nn.GRU (or their state_dict); got "
                        f"{type(module).__name__}")
    cell, nonlinearity = _MODES[mode]
    dtype = _xp.dtype_name(module.weight_ih_l0.dtype)
    cfg = make_config(cell, module.input_size, module.hidden_size, num_layers=module.num_layers,
                      bidirectional=bool(module.bidirectional), bias=bool(module.bias),
                      proj_size=getattr(module, "proj_size", 0) or 0,
                      activations=[nonlinearity] if nonlinearity else None, dtype=dtype)
    return cfg, {k: v for k, v in module.state_dict().items()}


def _is_safetensors(head):
    # 8 bytes of little-endian header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{"


def _read_file(path):
    """The state_dict in a file: safetensors, or torch.save's format read by torch's safe loader."""
    with open(path, "rb") as f:  # FileNotFoundError as it is
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
    import torch

    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... for a bad or unsafe file
        why = ("it pickles objects other than tensors (a whole module?), which the safe loader refuses to run"
               if "weights only" in str(e).lower() else f"{type(e).__name__}: {str(e)[:200]}")
        raise ValueError(f"{where} cannot be read by torch.load(weights_only=True): {why}. Fix: save the "
                         "state_dict, not the module: torch.save(module.state_dict(), path), or use safetensors"
                         ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} holds a {type(obj).__name__}; expected a state_dict (a dict of tensors). Fix: "
                         "torch.save(module.state_dict(), path)")
    return obj


def _key_error(key, sd):
    """The error for a key that is no recurrent weight, with the prefix to strip when there is one."""
    head, _, tail = str(key).rpartition(".")
    hint = ""
    if head and _KEY.match(tail):
        hint = (f" It carries the prefix {head + '.'!r} of a larger model; pass only the recurrent module's "
                f"weights: {{k[{len(head) + 1}:]: v for k, v in sd.items() if k.startswith({head + '.'!r})}}")
    return ValueError(f"state_dict key {key!r} is not an nn.RNN/LSTM/GRU weight (expected names like "
                      f"'weight_ih_l0', 'bias_hh_l1_reverse').{hint}")


def _from_state_dict(sd, cell, nonlinearity):
    keys = {}
    for key, value in sd.items():
        m = _KEY.match(str(key))
        if m is None:
            raise _key_error(key, sd)
        if not _xp.is_array(value):
            raise ValueError(f"state_dict[{key!r}] is a {type(value).__name__}; expected a tensor or array")
        keys[key] = (m.group(1), int(m.group(2)), bool(m.group(3)), value)
    if "weight_ih_l0" not in keys or "weight_hh_l0" not in keys:
        raise ValueError(f"state_dict lacks weight_ih_l0/weight_hh_l0; got keys {sorted(map(str, sd))}")
    w_ih, w_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    proj = "weight_hr_l0" in sd
    hidden = tuple(sd["weight_hr_l0"].shape)[1] if proj else tuple(w_hh.shape)[1]
    gates, rem = divmod(tuple(w_ih.shape)[0], hidden)
    inferred = {1: "rnn", 3: "gru", 4: "lstm"}.get(gates) if rem == 0 else None
    if cell is None:
        if inferred is None:
            raise ValueError(f"cannot tell the cell from weight_ih_l0 of shape {tuple(w_ih.shape)} and "
                             f"hidden size {hidden}; pass cell='rnn', 'lstm' or 'gru'")
        cell = inferred
    if cell not in GATES:
        raise ValueError(f"cell={cell!r} is unknown; expected 'rnn', 'lstm' or 'gru'")
    if nonlinearity is not None and cell != "rnn":
        raise ValueError(f"nonlinearity applies to cell='rnn' only; got cell={cell!r}")
    num_layers = 1 + max(k for _, k, _, _ in keys.values())
    bidirectional = any(rev for _, _, rev, _ in keys.values())
    cfg = make_config(cell, tuple(w_ih.shape)[1], hidden, num_layers=num_layers, bidirectional=bidirectional,
                      bias="bias_ih_l0" in sd, proj_size=tuple(w_hh.shape)[1] if proj else 0,
                      activations=[nonlinearity or "tanh"] if cell == "rnn" else None,
                      dtype=_xp.dtype_name(w_ih.dtype))
    return cfg, dict(sd)


def from_torch(obj, *, cell=None, nonlinearity=None):
    """Params (on NumPy) that reproduce an nn.RNN, nn.LSTM or nn.GRU.

    ``obj`` is the module, its state_dict, or the path of a file holding the state_dict: a
    ``torch.save`` file (read with ``torch.load(weights_only=True)``, which never runs pickled
    code) or a safetensors file (read without torch). A state_dict cannot tell an RNN's
    nonlinearity (pass ``nonlinearity="relu"`` when it was one); the cell is inferred from the
    shapes unless given. A module made with ``batch_first=False`` is run with
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
        raise TypeError(f"from_torch() takes an nn.RNN/LSTM/GRU module, a state_dict or the path of a file holding "
                        f"one; got {type(obj).__name__}")
    arrays = {}
    for key, value in sd.items():
        m = _KEY.match(str(key))
        if m is None:
            raise ValueError(f"unexpected key {key!r} in the module's state_dict")
        arrays[f"l{m.group(2)}.{'rev' if m.group(3) else 'fwd'}.{_NAMES[m.group(1)]}"] = _host(value)
    try:
        return RNNParams.from_named_arrays(cfg, arrays)
    except ValueError as e:
        raise ValueError(f"the torch weights do not form a consistent {cfg.cell.upper()}: {e}") from None


def to_torch_state_dict(params):
    """A state_dict (torch tensors on the CPU) that the matching torch module loads."""
    import torch

    if not isinstance(params, RNNParams):
        raise TypeError(f"to_torch_state_dict() takes RNNParams; got {type(params).__name__}")
    cfg = params.config
    if cfg.bias == "single" or cfg.peepholes or cfg.input_forget or cfg.clip is not None or cfg.direction == "reverse":
        raise ValueError("PyTorch modules have no single bias, peepholes, input_forget, clip or reverse-only "
                         "direction; these params cannot be expressed as a torch state_dict")
    if cfg.cell == "gru" and not cfg.reset_after:
        raise ValueError("PyTorch's GRU applies the reset after the recurrent matmul; reset_after=False "
                         "params cannot be expressed as a torch state_dict")
    back = {v: k for k, v in _NAMES.items()}
    out = {}
    for name, a in params.named_arrays():
        layer, direction, w = name.split(".")
        key = f"{back[w]}_{layer}{'_reverse' if direction == 'rev' else ''}"
        host = _xp.to_host(a)
        t = torch.from_numpy(np.array(host, copy=True))
        out[key] = t.to(getattr(torch, cfg.dtype))
    return out
