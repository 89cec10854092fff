"""to_device, count_params and summary: functions that take params or a model alike."""

from __future__ import annotations

import math

from . import _xp
from .model import Dense, Embedding, Recurrent, Sequential, Softmax
from .params import RNNParams

__all__ = ["to_device", "count_params", "summary"]

_LAYERS = (Embedding, Dense, Softmax, Recurrent)


def _kind(obj, fn):
    if isinstance(obj, (RNNParams, Sequential, *_LAYERS)):
        return obj
    raise TypeError(f"{fn}() takes rnn_xp params, a layer or a Sequential model; got {type(obj).__name__}")


def to_device(obj, xp, device=None, dtype=None):
    """A copy of params or a model with every array in namespace ``xp`` on ``device``, cast to ``dtype``.

    ``xp`` is a namespace module (numpy, cupy, torch, array_api_strict, ...). This is the one
    explicit way to move or cast: forward() never transfers or casts silently.
    """
    _kind(obj, "to_device")
    xp = _xp.as_namespace(xp)
    if dtype is not None and not isinstance(dtype, str):
        dtype = _xp.dtype_name(dtype)
    if dtype is not None:
        _xp.resolve_dtype(xp, dtype)

    def move(a, name=None):
        target = name or _xp.dtype_name(a.dtype)
        if _xp.same_namespace(_xp.array_namespace(a), xp) and (device is None or _xp.device(a) == device):
            axp = _xp.array_namespace(a)
            return a if _xp.dtype_name(a.dtype) == target else axp.astype(a, _xp.resolve_dtype(axp, target))
        return _xp.from_host(_xp.to_host(a), xp, device, target)

    if isinstance(obj, RNNParams):
        target = dtype or obj.config.dtype
        _xp.resolve_dtype(xp, target)
        return obj.map_arrays(lambda a: move(a, target), dtype=target)
    if isinstance(obj, Sequential):
        return Sequential([to_device(layer, xp, device, dtype) for layer in obj.layers], obj.input_shape, obj.name)
    if isinstance(obj, Recurrent):
        target = dtype or obj.params.config.dtype
        return obj.map_arrays(lambda a: move(a, target), dtype=target)
    return obj.map_arrays(lambda a: move(a, dtype))


def count_params(obj) -> int:
    """Number of stored weights (biases as stored: bias=True counts two vectors per gate)."""
    _kind(obj, "count_params")
    if isinstance(obj, Sequential):
        return sum(count_params(layer) for layer in obj.layers)
    arrays = obj.named_arrays()
    return sum(math.prod(a.shape) for _, a in arrays)


def _fmt_shape(shape):
    return "?" if shape is None else "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def summary(obj, input_shape=None) -> str:
    """A Keras-style table: layer (type), output shape, params; then the total.

    ``input_shape`` (without batch) fills in the output shapes of params or a model built
    without one.
    """
    _kind(obj, "summary")
    if isinstance(obj, RNNParams):
        c = obj.config
        obj = Sequential([Recurrent(obj, return_sequences=True)], input_shape or (None, c.input_size), "rnn")
    elif not isinstance(obj, Sequential):
        obj = Sequential([obj], input_shape, obj.name)
    elif input_shape is not None:
        obj = Sequential(obj.layers, input_shape, obj.name)
    rows = []
    for layer, shape in zip(obj.layers, obj.output_shapes()):
        desc = layer.type_name
        if isinstance(layer, Recurrent):
            c = layer.params.config
            extras = [f"{c.num_layers} layers"] if c.num_layers > 1 else []
            extras += [c.direction] if c.direction != "forward" else []
            if extras:
                desc = f"{desc}, {', '.join(extras)}"
        rows.append((f"{layer.name} ({desc})", _fmt_shape(shape), f"{count_params(layer):,}"))
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
         for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))]
    w = [max(w[0], 28), max(w[1], 22), max(w[2], 10)]
    line = "─" * (sum(w) + 6)
    out = [f'Model: "{obj.name}"', line,
           f"{'Layer (type)':<{w[0]}}   {'Output Shape':<{w[1]}}   {'Param #':>{w[2]}}", line]
    out += [f"{a:<{w[0]}}   {b:<{w[1]}}   {c:>{w[2]}}" for a, b, c in rows]
    total = count_params(obj)
    out += [line, f"Total params: {total:,}", line]
    return "\n".join(out)
