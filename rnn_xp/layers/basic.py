"""Layers without recurrence: Embedding, Masking, Dense, ActivationLayer, Identity, Softmax."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .. import _xp
from .._validate import check_bool, check_int, check_layer_input, check_same_space
from ..activations import softmax
from ..backend import resolve_target
from ..params import _readonly
from .base import (
    _activate,
    _activation_from_json,
    _activation_json,
    _activation_repr,
    _check_weight,
    _host_uniform,
    _layer_activation,
    _Stateless,
    register,
    where_repr,
)


@register
@dataclass(frozen=True, eq=False)
class Embedding:
    """Lookup table (input_dim, output_dim); ``mask_zero`` masks token 0 (Keras)."""

    table: object
    mask_zero: bool = False
    name: str = "embedding"
    kind = "layer"
    type_name = "Embedding"

    def __post_init__(self):
        _check_weight("Embedding", "the table (input_dim, output_dim)", self.table, 2)
        object.__setattr__(self, "table", _readonly(self.table))
        object.__setattr__(self, "mask_zero", check_bool("mask_zero", self.mask_zero))

    @classmethod
    def init(
        cls,
        input_dim,
        output_dim,
        *,
        mask_zero=False,
        seed=None,
        dtype="float32",
        xp=None,
        device=None,
        name="embedding",
    ):
        """Random table, uniform in ±0.05 as Keras initialises embeddings."""
        input_dim, output_dim = check_int("input_dim", input_dim, 1), check_int("output_dim", output_dim, 1)
        xp, device = resolve_target(xp, device)
        table = _xp.from_host(_host_uniform(seed, (input_dim, output_dim), 0.05), xp, device, dtype)
        return cls(table, mask_zero, name)

    def __repr__(self):  # the table's shape, not its values
        V, D = self.table.shape
        return (
            f"Embedding(input_dim={V}, output_dim={D}, mask_zero={self.mask_zero}, name={self.name!r}, "
            f"{where_repr(self.table)})"
        )

    def __call__(self, ids, mask=None):
        xp = _xp.array_namespace(self.table)
        if not _xp.is_array(ids):
            raise TypeError(
                f"{self.name}: expects an array of integer token ids; got {type(ids).__name__}. Fix: "
                f"{_xp.namespace_name(xp)}.asarray(ids), on the model's namespace"
            )
        if not _xp.array_namespace(ids).isdtype(ids.dtype, "integral"):
            raise TypeError(
                f"{self.name}: expects integer token ids; got {_xp.dtype_name(ids.dtype)}. Fix: "
                "xp.astype(ids, xp.int64)"
            )
        check_same_space(self.name, ids, self.table)
        V = self.table.shape[0]
        if math.prod(ids.shape) and (int(xp.min(ids)) < 0 or int(xp.max(ids)) >= V):  # torch's size is a method
            raise ValueError(
                f"{self.name}: token ids must lie in [0, {V}); got values in [{int(xp.min(ids))}, {int(xp.max(ids))}]"
            )
        flat = xp.reshape(ids, (-1,))
        y = xp.reshape(xp.take(self.table, flat, axis=0), (*ids.shape, self.table.shape[1]))  # (..., D)
        # Keras: an Embedding without mask_zero does not support masking, so it drops any incoming mask
        return y, (ids != 0 if self.mask_zero else None)

    def output_shape(self, shape):
        return (*shape, self.table.shape[1])

    def named_arrays(self):
        return [("table", self.table)]

    def config(self):
        return {"type": "Embedding", "name": self.name, "mask_zero": self.mask_zero}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(arrays["table"], config.get("mask_zero", False), str(config.get("name", "embedding")))

    def map_arrays(self, fn):
        return replace(self, table=fn(self.table))


@register
@dataclass(frozen=True, eq=False)
class Masking(_Stateless):
    """Keras Masking: a step whose features all equal ``mask_value`` is masked, and set to zero."""

    mask_value: float = 0.0
    name: str = "masking"
    kind = "layer"
    type_name = "Masking"

    def __post_init__(self):
        if isinstance(self.mask_value, (bool, np.bool_)) or not isinstance(self.mask_value, (int, float, np.number)):
            raise TypeError(
                f"Masking: mask_value must be a number; got {type(self.mask_value).__name__} {self.mask_value!r}"
            )

    def __call__(self, x, mask=None):
        xp = check_layer_input(self.name, x, ndim=2)
        keep = xp.any(x != self.mask_value, axis=-1, keepdims=True)  # (B, T, 1)
        return xp.where(keep, x, xp.zeros_like(x)), keep[..., 0]  # the mask ignores any incoming one (Keras)

    def config(self):
        return {"type": "Masking", "name": self.name, "mask_value": self.mask_value}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(float(config.get("mask_value", 0.0)), str(config.get("name", "masking")))


@register
@dataclass(frozen=True, eq=False)
class Dense:
    """y = activation(x @ kernel + bias); kernel (in, out) as Keras stores it; on the last axis.

    ``activation``: an elementwise one (a name of :mod:`rnn_xp.activations`), or softmax,
    log_softmax or sparsemax over the last axis.
    """

    kernel: object
    bias: object = None
    activation: object = "linear"
    name: str = "dense"
    kind = "layer"
    type_name = "Dense"

    def __post_init__(self):
        _check_weight("Dense", "the kernel (in, out)", self.kernel, 2)
        if self.bias is not None:
            _check_weight("Dense", "the bias (out,)", self.bias, 1, like=self.kernel)
            if tuple(self.bias.shape) != (self.kernel.shape[1],):
                raise ValueError(f"Dense bias has shape {tuple(self.bias.shape)}; expected ({self.kernel.shape[1]},)")
        object.__setattr__(self, "kernel", _readonly(self.kernel))
        object.__setattr__(self, "bias", _readonly(self.bias))
        object.__setattr__(self, "activation", _layer_activation(self.activation))

    @classmethod
    def init(
        cls,
        in_features,
        units,
        *,
        activation="linear",
        use_bias=True,
        seed=None,
        dtype="float32",
        xp=None,
        device=None,
        name="dense",
    ):
        """Random kernel, uniform in ±sqrt(6/(in+out)) (Glorot, as Keras)."""
        in_features, units = check_int("in_features", in_features, 1), check_int("units", units, 1)
        xp, device = resolve_target(xp, device)
        rng = np.random.default_rng(seed)
        bound = math.sqrt(6.0 / (in_features + units))
        kernel = _xp.from_host(rng.uniform(-bound, bound, (in_features, units)), xp, device, dtype)
        bias = _xp.from_host(rng.uniform(-bound, bound, (units,)), xp, device, dtype) if use_bias else None
        return cls(kernel, bias, activation, name)

    def __repr__(self):  # the kernel's shape, not its values
        F, U = self.kernel.shape
        return (
            f"Dense(in_features={F}, units={U}, activation={_activation_repr(self.activation)}, "
            f"use_bias={self.bias is not None}, name={self.name!r}, {where_repr(self.kernel)})"
        )

    def __call__(self, x, mask=None):
        xp = check_layer_input(self.name, x, self.kernel, features=self.kernel.shape[0])
        y = xp.matmul(x, self.kernel)  # (..., units)
        if self.bias is not None:
            y = y + self.bias
        return _activate(self.activation, y, xp), mask

    def output_shape(self, shape):
        return (*shape[:-1], self.kernel.shape[1])

    def named_arrays(self):
        return [("kernel", self.kernel)] + ([("bias", self.bias)] if self.bias is not None else [])

    def config(self):
        return {"type": "Dense", "name": self.name, "activation": _activation_json(self.activation)}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(
            arrays["kernel"],
            arrays.get("bias"),
            _activation_from_json(config["activation"]),
            str(config.get("name", "dense")),
        )

    def map_arrays(self, fn):
        return replace(self, kernel=fn(self.kernel), bias=None if self.bias is None else fn(self.bias))


@register
@dataclass(frozen=True, eq=False)
class ActivationLayer(_Stateless):
    """Keras's Activation layer: an elementwise activation, or softmax, log_softmax or sparsemax (last axis)."""

    activation: object = "linear"
    name: str = "activation"
    kind = "layer"
    type_name = "Activation"

    def __post_init__(self):
        object.__setattr__(self, "activation", _layer_activation(self.activation))

    def __call__(self, x, mask=None):
        return _activate(self.activation, x, check_layer_input(self.name, x)), mask

    def config(self):
        return {"type": "ActivationLayer", "name": self.name, "activation": _activation_json(self.activation)}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(_activation_from_json(config.get("activation")), str(config.get("name", "activation")))


@register
@dataclass(frozen=True, eq=False)
class Identity(_Stateless):
    """A layer that is the identity at inference (Keras Dropout, GaussianNoise, ...), kept under its type name."""

    type_name: str = "Identity"
    name: str = "identity"
    kind = "layer"

    def __call__(self, x, mask=None):
        check_layer_input(self.name, x)
        return x, mask

    def config(self):
        return {"type": "Identity", "name": self.name, "type_name": self.type_name}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(str(config.get("type_name", "Identity")), str(config.get("name", "identity")))


@register
@dataclass(frozen=True, eq=False)
class Softmax(_Stateless):
    """Softmax over the last axis, as a layer: e.g. the output layer y_t = softmax(V h_t + c) of an Elman RNN."""

    name: str = "softmax"
    kind = "layer"
    type_name = "Softmax"

    def __call__(self, x, mask=None):
        check_layer_input(self.name, x)
        return softmax(x), mask

    def config(self):
        return {"type": "Softmax", "name": self.name}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(str(config.get("name", "softmax")))
