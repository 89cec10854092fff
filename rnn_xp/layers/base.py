"""The layer protocol and its registry: what save/load, to_device, count_params and summary rely on.

Every layer and model speaks one small protocol, which is all that :func:`rnn_xp.to_device`,
:func:`rnn_xp.count_params`, :func:`rnn_xp.summary` and :func:`rnn_xp.save`/:func:`rnn_xp.load`
use: ``config()`` (JSON, with a ``"type"`` key), ``named_arrays()``, ``map_arrays(fn)``,
``from_config(config, arrays)`` (a classmethod, the inverse of the two), ``name``, ``type_name``
and, for layers, ``output_shape(shape)``. :func:`register` files a class under its name so that
:func:`from_config` finds it again.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import _xp
from .._validate import check_same_space
from ..activations import AXIS_ACTIVATIONS, Activation, resolve
from ..params import RNNConfig, RNNParams

REGISTRY: dict = {}  # config()["type"] -> class


def register(cls):
    """Class decorator: file a layer, model or graph node under its config type (its class name)."""
    REGISTRY[cls.__name__] = cls
    return cls


def from_config(config, arrays):
    """The layer or model whose ``config()`` and ``named_arrays()`` these are."""
    kind = config.get("type") if isinstance(config, dict) else None
    if kind not in REGISTRY:
        raise ValueError(f"unknown layer type {kind!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[kind].from_config(config, arrays)


def sub_arrays(arrays, prefix):
    """The arrays named ``prefix + name``, keyed by name (a child's share of its parent's arrays)."""
    return {n[len(prefix) :]: a for n, a in arrays.items() if n.startswith(prefix)}


def _layer_activation(act):
    return act if isinstance(act, str) and act in AXIS_ACTIVATIONS else resolve(act)


def _activate(act, y, xp):
    return AXIS_ACTIVATIONS[act](y) if isinstance(act, str) else act(y, xp)


def _activation_json(act):
    return act if isinstance(act, str) else act.to_json()


def _activation_from_json(value):
    if isinstance(value, str) and value in AXIS_ACTIVATIONS:
        return value
    if not isinstance(value, list):
        raise ValueError(
            f"malformed activation {value!r}; expected one of {sorted(AXIS_ACTIVATIONS)} or [name, alpha, beta]"
        )
    return Activation.from_json(value)


def _activation_repr(act):
    """An activation as reprs show it: its name, with alpha and beta when it has them."""
    if isinstance(act, str):
        return repr(act)
    extra = "".join(f", {k}={v}" for k, v in (("alpha", act.alpha), ("beta", act.beta)) if v is not None)
    return repr(act.name) if not extra else f"{act.name}({extra[2:]})"


def where_repr(a):
    """``dtype on namespace device`` of a layer's weights, for its repr."""
    return f"{_xp.dtype_name(a.dtype)} on {_xp.namespace_name(_xp.array_namespace(a))} {_xp.device(a)}"


def _host_uniform(seed, shape, bound):
    return np.random.default_rng(seed).uniform(-bound, bound, size=shape)


def _check_weight(layer, what, a, ndim, like=None):
    """A layer's weight: a floating array with ``ndim`` axes, in the namespace, device and dtype of ``like``."""
    if not _xp.is_array(a):
        raise TypeError(f"{layer}: {what} must be an array; got {type(a).__name__}. Fix: xp.asarray(...)")
    if a.ndim != ndim:
        raise ValueError(f"{layer}: {what} must have {ndim} dimension(s); got shape {tuple(a.shape)}")
    if not _xp.array_namespace(a).isdtype(a.dtype, "real floating"):
        raise TypeError(f"{layer}: {what} has dtype {_xp.dtype_name(a.dtype)}; expected floating point weights")
    if like is not None:
        check_same_space(layer, a, like)
        if a.dtype != like.dtype:
            raise TypeError(
                f"{layer}: {what} is {_xp.dtype_name(a.dtype)} but the other weights are "
                f"{_xp.dtype_name(like.dtype)}. Fix: rnn_xp.to_device(..., dtype=...) on all of them"
            )


class _Stateless:
    """The protocol for layers without arrays."""

    def output_shape(self, shape):
        return shape

    def named_arrays(self):
        return []

    def map_arrays(self, fn):
        return self


def params_from_config(rnn_json, arrays):
    """RNNParams from RNNConfig JSON and arrays; the dtype is the arrays' (load casts afterwards)."""
    cfg = RNNConfig.from_json(rnn_json)
    if arrays:
        cfg = replace(cfg, dtype=_xp.dtype_name(next(iter(arrays.values())).dtype))
    return RNNParams.from_named_arrays(cfg, arrays)
