"""to_device, count_params and summary: functions that take params, a layer or a model alike.

They use only the protocol every rnn_xp layer and model speaks (see :mod:`rnn_xp.layers.base`):
``named_arrays()``, ``map_arrays(fn)``, ``name``, ``type_name``, and for models ``layers`` and
``output_shapes()``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from . import _xp
from .layers import REGISTRY, Recurrent, Sequential
from .params import RNNParams

__all__ = ["to_device", "count_params", "summary"]


def _check(obj, fn):
    if isinstance(obj, RNNParams) or REGISTRY.get(type(obj).__name__) is type(obj):
        return obj
    raise TypeError(
        f"{fn}() takes rnn_xp params, a layer or a model (Sequential, or an imported one); got {type(obj).__name__}"
    )


def to_device(obj, xp, device=None, dtype=None):
    """A copy of params or a model with every array in namespace ``xp`` on ``device``, cast to ``dtype``.

    ``xp`` is a namespace, as a module (``numpy``, ``cupy``, ``torch``, ``array_api_strict``,
    ``jax.numpy``, ...) or by name (``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``,
    ``"jax"``, ``"dask.array"``); a name whose package is missing raises ModuleNotFoundError naming
    the install. This is the one explicit way to move or cast: forward() never transfers or casts
    silently.
    """
    _check(obj, "to_device")
    xp = _xp.as_namespace(xp)
    if dtype is not None and not isinstance(dtype, str):
        dtype = _xp.dtype_name(dtype)
    if dtype is not None:
        _xp.resolve_dtype(xp, dtype)

    def move(a, target):
        target = target or _xp.dtype_name(a.dtype)
        if _xp.same_namespace(_xp.array_namespace(a), xp) and (device is None or _xp.device(a) == device):
            axp = _xp.array_namespace(a)
            return a if _xp.dtype_name(a.dtype) == target else axp.astype(a, _xp.resolve_dtype(axp, target))
        return _xp.from_host(_xp.to_host(a), xp, device, target)

    if isinstance(obj, RNNParams):
        target = dtype or obj.config.dtype
        _xp.resolve_dtype(xp, target)
        return obj.map_arrays(lambda a: move(a, target), dtype=target)
    return obj.map_arrays(lambda a: move(a, dtype))


def count_params(obj) -> int:
    """Number of stored weights (biases as stored: bias=True counts two vectors per gate).

    For a model imported from Keras this is Keras's ``model.count_params()``.
    """
    _check(obj, "count_params")
    return sum(math.prod(a.shape) for _, a in obj.named_arrays())


def _fmt_shape(shape):
    if isinstance(shape, list):  # a layer with several outputs
        return "[" + ", ".join(_fmt_shape(s) for s in shape) + "]"
    return "?" if shape is None else "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _describe(layer):
    desc = layer.type_name
    params = getattr(layer, "params", None)
    if isinstance(params, RNNParams):
        c = params.config
        extras = [f"{c.num_layers} layers"] if c.num_layers > 1 else []
        extras += [c.direction] if c.direction != "forward" else []
        if extras:
            desc = f"{desc}, {', '.join(extras)}"
    return f"{layer.name} ({desc})"


def summary(obj, input_shape=None) -> str:
    """A Keras-style table: layer (type), output shape, params; then the total.

    ``input_shape`` (without batch) fills in the output shapes of params or a Sequential built
    without one.
    """
    _check(obj, "summary")
    if isinstance(obj, RNNParams):
        c = obj.config
        obj = Sequential([Recurrent(obj, return_sequences=True)], input_shape or (None, c.input_size), "rnn")
    elif getattr(obj, "kind", None) != "model":
        obj = Sequential([obj], input_shape, obj.name)
    elif input_shape is not None and isinstance(obj, Sequential):
        obj = replace(obj, input_shape=input_shape)
    rows = [
        (_describe(layer), _fmt_shape(shape), f"{count_params(layer):,}")
        for layer, shape in zip(obj.layers, obj.output_shapes(), strict=True)
    ]
    w = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
        for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))
    ]
    w = [max(w[0], 28), max(w[1], 22), max(w[2], 10)]
    line = "─" * (sum(w) + 6)
    out = [f'Model: "{obj.name}"', *([obj.origin] if getattr(obj, "origin", "") else []), line]
    out += [f"{'Layer (type)':<{w[0]}}   {'Output Shape':<{w[1]}}   {'Param #':>{w[2]}}", line]
    out += [f"{a:<{w[0]}}   {b:<{w[1]}}   {c:>{w[2]}}" for a, b, c in rows]
    total = count_params(obj)
    out += [line, f"Total params: {total:,}", line]
    return "\n".join(out)
