"""Model pieces: the layers of Keras's recurrent models, and a chain of them.

The seeds' Keras model, ``Embedding(5000, 32) -> SimpleRNN(100) -> Dense(1, sigmoid)``::

    model = rnn_xp.Sequential([
        rnn_xp.Embedding.init(5000, 32, seed=0),
        rnn_xp.Recurrent(rnn_xp.init("rnn", 32, 100, bias="single", seed=1)),
        rnn_xp.Dense.init(100, 1, activation="sigmoid", seed=2),
    ], input_shape=(250,))
    probs = model(token_ids)  # (batch, 1)

Layers are immutable. Every layer maps ``(x, mask) -> (y, mask)`` with Keras's mask rules, so
that masks (from ``Embedding(mask_zero=True)`` or ``Masking``) flow into the recurrent layers.

Every layer and model speaks one small protocol, which is all that :func:`rnn_xp.to_device`,
:func:`rnn_xp.count_params`, :func:`rnn_xp.summary` and :func:`rnn_xp.save`/:func:`rnn_xp.load`
use: ``config()`` (JSON, with a ``"type"`` key), ``named_arrays()``, ``map_arrays(fn)``,
``from_config(config, arrays)`` (a classmethod, the inverse of the two), ``name``, ``type_name``
and, for layers, ``output_shape(shape)``. :func:`register` files a class under its name so that
:func:`from_config` finds it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import _xp
from ._validate import check_bool, check_int, check_layer_input, check_mask, check_same_space, check_x
from .activations import Activation, resolve
from .forward import forward
from .params import RNNConfig, RNNParams, _readonly
from .params import init as _init_params

__all__ = ["Embedding", "Masking", "Dense", "ActivationLayer", "Identity", "Softmax", "Recurrent",
           "Bidirectional", "Sequential", "softmax", "log_softmax", "sparsemax", "register", "from_config", "REGISTRY"]

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
    return {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, shifted by the max so it never overflows."""
    xp = _xp.array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along axis, without forming the softmax."""
    xp = _xp.array_namespace(x)
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def sparsemax(x, axis=-1):
    """The Euclidean projection of x onto the simplex along the last axis: max(x - tau, 0)."""
    if axis not in (-1, x.ndim - 1):
        raise ValueError(f"sparsemax runs along the last axis; got axis={axis}")
    xp = _xp.array_namespace(x)
    z = xp.sort(x, axis=-1, descending=True)
    cum = xp.cumulative_sum(z, axis=-1)
    k = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=_xp.device(x))
    support = z - (cum - 1.0) / k > 0  # the sorted prefix that stays positive
    n = xp.sum(xp.astype(support, x.dtype), axis=-1, keepdims=True)
    tau = (xp.sum(xp.where(support, cum, xp.zeros_like(cum)), axis=-1, keepdims=True) - 1.0) / n
    return xp.maximum(x - tau, xp.zeros_like(x))


# Functions of the whole last axis, which Dense and Activation layers take besides the elementwise
# activations of rnn_xp.activations (cells take only those: their fast paths work elementwise).
AXIS_ACTIVATIONS = {"softmax": softmax, "log_softmax": log_softmax, "sparsemax": sparsemax}


def _layer_activation(act):
    return act if isinstance(act, str) and act in AXIS_ACTIVATIONS else resolve(act)


def _activate(act, y, xp):
    return AXIS_ACTIVATIONS[act](y) if isinstance(act, str) else act(y, xp)


def _activation_json(act):
    return act if isinstance(act, str) else act.to_json()


def _activation_from_json(value):
    if isinstance(value, str) and value in AXIS_ACTIVATIONS:
        return value
    if not (isinstance(value, list) and len(value) == 3):
        raise ValueError(f"malformed activation {value!r}; expected one of {sorted(AXIS_ACTIVATIONS)} or "
                         "[name, alpha, beta]")
    act = Activation(*value)
    if resolve(act.name, act.alpha, act.beta) != act:
        raise ValueError(f"activation {value!r} is not canonical")
    return act


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
            raise TypeError(f"{layer}: {what} is {_xp.dtype_name(a.dtype)} but the other weights are "
                            f"{_xp.dtype_name(like.dtype)}. Fix: rnn_xp.to_device(..., dtype=...) on all of them")


class _Stateless:
    """The protocol for layers without arrays."""

    def output_shape(self, shape):
        return shape

    def named_arrays(self):
        return []

    def map_arrays(self, fn):
        return self


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
    def init(cls, input_dim, output_dim, *, mask_zero=False, seed=None, dtype="float32", xp=None, device=None,
             name="embedding"):
        """Random table, uniform in ±0.05 as Keras initialises embeddings."""
        input_dim, output_dim = check_int("input_dim", input_dim, 1), check_int("output_dim", output_dim, 1)
        xp, device = _target(xp, device)
        table = _xp.from_host(_host_uniform(seed, (input_dim, output_dim), 0.05), xp, device, dtype)
        return cls(table, mask_zero, name)

    def __call__(self, ids, mask=None):
        xp = _xp.array_namespace(self.table)
        if not _xp.is_array(ids) or not _xp.array_namespace(ids).isdtype(ids.dtype, "integral"):
            raise TypeError(f"{self.name}: expects integer token ids; got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}. Fix: xp.astype(ids, xp.int64)")
        check_same_space(self.name, ids, self.table)
        V = self.table.shape[0]
        if math.prod(ids.shape) and (int(xp.min(ids)) < 0 or int(xp.max(ids)) >= V):  # torch's size is a method
            raise ValueError(f"{self.name}: token ids must lie in [0, {V}); got values in "
                             f"[{int(xp.min(ids))}, {int(xp.max(ids))}]")
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
        return cls(arrays["table"], bool(config.get("mask_zero", False)), str(config.get("name", "embedding")))

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
            raise TypeError(f"Masking: mask_value must be a number; got {type(self.mask_value).__name__} "
                            f"{self.mask_value!r}")

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
    def init(cls, in_features, units, *, activation="linear", use_bias=True, seed=None, dtype="float32", xp=None,
             device=None, name="dense"):
        """Random kernel, uniform in ±sqrt(6/(in+out)) (Glorot, as Keras)."""
        in_features, units = check_int("in_features", in_features, 1), check_int("units", units, 1)
        xp, device = _target(xp, device)
        rng = np.random.default_rng(seed)
        bound = math.sqrt(6.0 / (in_features + units))
        kernel = _xp.from_host(rng.uniform(-bound, bound, (in_features, units)), xp, device, dtype)
        bias = _xp.from_host(rng.uniform(-bound, bound, (units,)), xp, device, dtype) if use_bias else None
        return cls(kernel, bias, activation, name)

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
        return cls(arrays["kernel"], arrays.get("bias"), _activation_from_json(config["activation"]),
                   str(config.get("name", "dense")))

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
    """Softmax over the last axis (a layer, for the seeds' y_t = softmax(V h_t + c))."""

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


def params_from_config(rnn_json, arrays):
    """RNNParams from RNNConfig JSON and arrays; the dtype is the arrays' (load casts afterwards)."""
    cfg = RNNConfig.from_json(rnn_json)
    if arrays:
        cfg = replace(cfg, dtype=_xp.dtype_name(next(iter(arrays.values())).dtype))
    return RNNParams.from_named_arrays(cfg, arrays)


def map_params(params, fn):
    """params with every array replaced by fn(array); the config's dtype follows the new arrays."""
    arrays = {n: fn(a) for n, a in params.named_arrays()}
    return RNNParams.from_named_arrays(replace(params.config, dtype=_xp.dtype_name(next(iter(arrays.values())).dtype)),
                                       arrays)


@register
@dataclass(frozen=True, eq=False)
class Recurrent:
    """An RNN/LSTM/GRU layer (Keras's SimpleRNN, LSTM, GRU): its sequence or its last output.

    The last output is Keras's: each direction's output at the last step it processed, which is
    its final h, or zero when ``zero_output_for_mask`` and that step was masked. ``go_backwards``
    is Keras's: the layer reads the sequence from its end and returns its sequence in that
    (reversed) order; the mask it passes on is the one it received.
    """

    params: RNNParams
    return_sequences: bool = False
    zero_output_for_mask: bool = False
    name: str = ""
    go_backwards: bool = False
    kind = "layer"

    def __post_init__(self):
        if not isinstance(self.params, RNNParams):
            raise TypeError(f"Recurrent needs RNNParams; got {type(self.params).__name__}")
        for flag in ("return_sequences", "zero_output_for_mask", "go_backwards"):
            object.__setattr__(self, flag, check_bool(flag, getattr(self, flag)))
        if not self.name:
            object.__setattr__(self, "name", {"rnn": "simple_rnn"}.get(self.params.config.cell,
                                                                          self.params.config.cell))

    def __call__(self, x, mask=None):
        xp, x = check_x(x, self.params, time_major=False)  # before the flip, so that errors name x
        if mask is not None:
            mask = check_mask(mask, x, xp, x.shape[0], x.shape[1], time_major=False)
        seq, run = x, mask
        if self.go_backwards:
            seq = _xp.array_namespace(x).flip(x, axis=1)
            run = None if mask is None else _xp.array_namespace(mask).flip(mask, axis=1)
        y, state = forward(seq, self.params, mask=run, zero_output_for_mask=self.zero_output_for_mask)
        if self.return_sequences:
            return y, mask
        return self._last_output(y, state, run), None

    def _last_output(self, y, state, run):
        xp = _xp.array_namespace(y)
        cfg = self.params.config
        h_n = state[0] if cfg.cell == "lstm" else state  # (L*D, B, H_out)
        D, T = cfg.num_directions, y.shape[1]
        last = []
        for d in range(D):
            h = h_n[h_n.shape[0] - D + d, ...]  # (B, H_out)
            if self.zero_output_for_mask and run is not None and T > 0:
                t = 0 if (d == 1) != (cfg.direction == "reverse") else T - 1  # the direction's last step
                ran = run[:, t:t + 1]  # (B, 1)
                h = xp.where(ran, h, xp.zeros_like(h))
            last.append(h)
        return last[0] if D == 1 else xp.concat(last, axis=-1)  # (B, D*H_out)

    def output_shape(self, shape):
        c = self.params.config
        units = c.num_directions * c.output_size
        return (*shape[:-1], units) if self.return_sequences else (shape[0], units)

    def named_arrays(self):
        return self.params.named_arrays()

    def config(self):
        return {"type": "Recurrent", "name": self.name, "return_sequences": self.return_sequences,
                "zero_output_for_mask": self.zero_output_for_mask, "go_backwards": self.go_backwards,
                "rnn": self.params.config.to_json()}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(params_from_config(config["rnn"], arrays), bool(config.get("return_sequences", False)),
                   bool(config.get("zero_output_for_mask", False)), str(config.get("name", "")),
                   bool(config.get("go_backwards", False)))

    def map_arrays(self, fn):
        return replace(self, params=map_params(self.params, fn))

    @property
    def type_name(self):
        return {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[self.params.config.cell]


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register
@dataclass(frozen=True, eq=False)
class Bidirectional:
    """Keras's Bidirectional: a forward layer and a backward (go_backwards) layer over the same input.

    With ``return_sequences`` the backward sequence is flipped back to input order; the two are
    merged by ``merge_mode``: "concat" (last axis), "sum", "mul", "ave", or None (the pair).
    """

    forward_layer: Recurrent
    backward_layer: Recurrent
    merge_mode: str | None = "concat"
    name: str = "bidirectional"
    kind = "layer"
    type_name = "Bidirectional"

    def __post_init__(self):
        for layer in (self.forward_layer, self.backward_layer):
            if not isinstance(layer, Recurrent):
                raise TypeError(f"Bidirectional wraps two Recurrent layers; got {type(layer).__name__}")
        if self.merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode={self.merge_mode!r}; expected one of {MERGE_MODES}")
        if self.forward_layer.return_sequences != self.backward_layer.return_sequences:
            raise ValueError("the forward and backward layers of a Bidirectional must agree on return_sequences")
        f, b = self.forward_layer.params, self.backward_layer.params
        if f.config.input_size != b.config.input_size:
            raise ValueError(f"{self.name}: the forward layer reads {f.config.input_size} features, the backward "
                             f"layer {b.config.input_size}; both read the same input")
        _check_weight(self.name, "the backward layer's w_ih", b.layers[0][0].w_ih, 2, like=f.layers[0][0].w_ih)
        units = [layer.output_shape((None, None, 0))[-1] for layer in (self.forward_layer, self.backward_layer)]
        if self.merge_mode in ("sum", "mul", "ave") and units[0] != units[1]:
            raise ValueError(f"{self.name}: merge_mode={self.merge_mode!r} needs outputs of one size; the layers "
                             f"output {units[0]} and {units[1]} units. Fix: merge_mode='concat'")

    @property
    def return_sequences(self):
        return self.forward_layer.return_sequences

    def __call__(self, x, mask=None):
        y, _ = self.forward_layer(x, mask)
        y_rev, _ = self.backward_layer(x, mask)
        xp = _xp.array_namespace(y)
        if self.return_sequences:
            y_rev = xp.flip(y_rev, axis=1)  # back to input order
        if self.merge_mode == "concat":
            out = xp.concat([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = y + y_rev
        elif self.merge_mode == "mul":
            out = y * y_rev
        elif self.merge_mode == "ave":
            out = (y + y_rev) / 2
        else:
            out = (y, y_rev)
        return out, (mask if self.return_sequences else None)

    def output_shape(self, shape):
        f, b = self.forward_layer.output_shape(shape), self.backward_layer.output_shape(shape)
        if self.merge_mode is None:
            return [f, b]
        return (*f[:-1], f[-1] + b[-1]) if self.merge_mode == "concat" else f

    def named_arrays(self):
        return ([(f"forward.{n}", a) for n, a in self.forward_layer.named_arrays()]
                + [(f"backward.{n}", a) for n, a in self.backward_layer.named_arrays()])

    def config(self):
        return {"type": "Bidirectional", "name": self.name, "merge_mode": self.merge_mode,
                "forward": self.forward_layer.config(), "backward": self.backward_layer.config()}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(from_config(config["forward"], sub_arrays(arrays, "forward.")),
                   from_config(config["backward"], sub_arrays(arrays, "backward.")),
                   config.get("merge_mode", "concat"), str(config.get("name", "bidirectional")))

    def map_arrays(self, fn):
        return replace(self, forward_layer=self.forward_layer.map_arrays(fn),
                       backward_layer=self.backward_layer.map_arrays(fn))


@register
@dataclass(frozen=True, eq=False)
class Sequential:
    """A chain of layers; ``model(x, mask=None)`` returns the last layer's output.

    ``input_shape`` (without the batch axis) is only used by :func:`rnn_xp.summary`.
    """

    layers: tuple
    input_shape: tuple | None = None
    name: str = "sequential"
    kind = "model"
    type_name = "Sequential"

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise TypeError(f"Sequential takes a list of layers; got {type(self.layers).__name__}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_shape is not None:
            shape = self.input_shape
            if not isinstance(shape, (list, tuple)) or not all(
                    s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 0) for s in shape):
                raise TypeError(f"input_shape must be a tuple of sizes (ints >= 0, or None for any), without the "
                                f"batch axis; got {shape!r}")
            object.__setattr__(self, "input_shape", tuple(shape))
        for layer in self.layers:
            if getattr(type(layer), "kind", None) != "layer" or REGISTRY.get(type(layer).__name__) is not type(layer):
                raise TypeError(f"Sequential takes rnn_xp layers ({', '.join(self.layer_types())}); got "
                                f"{type(layer).__name__}")
        for layer in self.layers[:-1]:
            if isinstance(layer, Bidirectional) and layer.merge_mode is None:
                raise ValueError(f"{layer.name}: a Bidirectional with merge_mode=None outputs a pair; it can only "
                                 "be the last layer")

    @staticmethod
    def layer_types():
        return sorted(n for n, c in REGISTRY.items() if getattr(c, "kind", None) == "layer")

    def __call__(self, x, mask=None):
        for layer in self.layers:
            x, mask = layer(x, mask)
        return x

    @property
    def params(self):
        """The RNNParams of the recurrent layers, in order."""
        return tuple(layer.params for layer in self.layers if isinstance(layer, Recurrent))

    def output_shapes(self):
        shape = (None, *self.input_shape) if self.input_shape is not None else None
        out = []
        for layer in self.layers:
            shape = None if shape is None else layer.output_shape(shape)
            out.append(shape)
        return out

    def named_arrays(self):
        return [(f"layer{i}.{n}", a) for i, layer in enumerate(self.layers) for n, a in layer.named_arrays()]

    def config(self):
        return {"type": "Sequential", "name": self.name, "input_shape": self.input_shape,
                "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config, arrays):
        layers = config.get("layers")
        if not isinstance(layers, list):
            raise ValueError("a Sequential config needs a list of layers")
        shape = config.get("input_shape")
        return cls([from_config(lc, sub_arrays(arrays, f"layer{i}.")) for i, lc in enumerate(layers)],
                   None if shape is None else tuple(shape), str(config.get("name", "sequential")))

    def map_arrays(self, fn):
        return replace(self, layers=tuple(layer.map_arrays(fn) for layer in self.layers))


def _target(xp, device):
    if xp is None:
        from .device import select_backend
        b = select_backend()
        return b.xp, b.device if device is None else device
    return _xp.as_namespace(xp), device


# the seeds' model, for the demo and the tests
def seed_model(*, seed=0, dtype="float32", xp=None, device=None, vocab=5000, embed=32, units=100, steps=250):
    """Embedding(5000, 32) -> SimpleRNN(100) -> Dense(1, sigmoid), Keras conventions (173,401 params)."""
    xp, device = _target(xp, device)
    return Sequential([
        Embedding.init(vocab, embed, seed=seed, dtype=dtype, xp=xp, device=device),
        Recurrent(_init_params("rnn", embed, units, bias="single", seed=seed + 1, dtype=dtype, xp=xp,
                               device=device)),
        Dense.init(units, 1, activation="sigmoid", seed=seed + 2, dtype=dtype, xp=xp, device=device),
    ], input_shape=(steps,))
