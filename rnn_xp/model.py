"""Small model pieces the seeds use: embedding, dense, softmax, recurrent layers, and a chain of them.

The seeds' Keras model, ``Embedding(5000, 32) -> SimpleRNN(100) -> Dense(1, sigmoid)``::

    model = rnn_xp.Sequential([
        rnn_xp.Embedding.init(5000, 32, seed=0),
        rnn_xp.Recurrent(rnn_xp.init("rnn", 32, 100, bias="single", seed=1)),
        rnn_xp.Dense.init(100, 1, activation="sigmoid", seed=2),
    ], input_shape=(250,))
    probs = model(token_ids)  # (batch, 1)

Layers are immutable. Every layer maps ``(x, mask) -> (y, mask)`` so that masks (from
``Embedding(mask_zero=True)``) flow into the recurrent layers, as in Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import _xp
from .activations import resolve
from .forward import forward
from .params import RNNParams, _readonly, init as _init_params

__all__ = ["Embedding", "Dense", "Softmax", "Recurrent", "Sequential", "softmax"]


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, shifted by the max so it never overflows."""
    xp = _xp.array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _host_uniform(seed, shape, bound):
    return np.random.default_rng(seed).uniform(-bound, bound, size=shape)


def _check_same_space(layer, a, ref):
    if not _xp.same_namespace(_xp.array_namespace(a), _xp.array_namespace(ref)) or _xp.device(a) != _xp.device(ref):
        raise TypeError(f"{layer}: input is a {_xp.namespace_name(_xp.array_namespace(a))} array on "
                        f"{_xp.device(a)}, weights live in {_xp.namespace_name(_xp.array_namespace(ref))} on "
                        f"{_xp.device(ref)}. Fix: rnn_xp.to_device(model, xp, device=...)")


@dataclass(frozen=True, eq=False)
class Embedding:
    """Lookup table (input_dim, output_dim); ``mask_zero`` masks token 0 (Keras)."""

    table: object
    mask_zero: bool = False
    name: str = "embedding"

    def __post_init__(self):
        object.__setattr__(self, "table", _readonly(self.table))
        if not _xp.is_array(self.table) or self.table.ndim != 2:
            raise ValueError(f"Embedding table must be a 2-D array (input_dim, output_dim); got {self.table!r:.80}")

    @classmethod
    def init(cls, input_dim, output_dim, *, mask_zero=False, seed=None, dtype="float32", xp=None, device=None,
             name="embedding"):
        """Random table, uniform in ±0.05 as Keras initialises embeddings."""
        xp, device = _target(xp, device)
        table = _xp.from_host(_host_uniform(seed, (input_dim, output_dim), 0.05), xp, device, dtype)
        return cls(table, mask_zero, name)

    def __call__(self, ids, mask=None):
        xp = _xp.array_namespace(self.table)
        if not _xp.is_array(ids) or not _xp.array_namespace(ids).isdtype(ids.dtype, "integral"):
            raise TypeError(f"{self.name}: expects integer token ids; got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}. Fix: xp.astype(ids, xp.int64)")
        _check_same_space(self.name, ids, self.table)
        V = self.table.shape[0]
        if ids.size and (int(xp.min(ids)) < 0 or int(xp.max(ids)) >= V):
            raise ValueError(f"{self.name}: token ids must lie in [0, {V}); got values in "
                             f"[{int(xp.min(ids))}, {int(xp.max(ids))}]")
        flat = xp.reshape(ids, (-1,))
        y = xp.reshape(xp.take(self.table, flat, axis=0), (*ids.shape, self.table.shape[1]))  # (..., D)
        if self.mask_zero:
            mask = ids != 0
        return y, mask

    def output_shape(self, shape):
        return (*shape, self.table.shape[1])

    def named_arrays(self):
        return [("table", self.table)]

    def config(self):
        return {"type": "Embedding", "name": self.name, "mask_zero": self.mask_zero}

    def map_arrays(self, fn):
        return replace(self, table=fn(self.table))

    type_name = "Embedding"


@dataclass(frozen=True, eq=False)
class Dense:
    """y = activation(x @ kernel + bias); kernel (in, out) as Keras stores it; on the last axis."""

    kernel: object
    bias: object = None
    activation: object = "linear"
    name: str = "dense"

    def __post_init__(self):
        object.__setattr__(self, "kernel", _readonly(self.kernel))
        object.__setattr__(self, "bias", _readonly(self.bias))
        if self.activation != "softmax":
            object.__setattr__(self, "activation", resolve(self.activation))
        if not _xp.is_array(self.kernel) or self.kernel.ndim != 2:
            raise ValueError(f"Dense kernel must be a 2-D array (in, out); got {self.kernel!r:.80}")
        if self.bias is not None and tuple(self.bias.shape) != (self.kernel.shape[1],):
            raise ValueError(f"Dense bias has shape {tuple(self.bias.shape)}; expected ({self.kernel.shape[1]},)")

    @classmethod
    def init(cls, in_features, units, *, activation="linear", use_bias=True, seed=None, dtype="float32", xp=None,
             device=None, name="dense"):
        """Random kernel, uniform in ±sqrt(6/(in+out)) (Glorot, as Keras)."""
        xp, device = _target(xp, device)
        rng = np.random.default_rng(seed)
        bound = math.sqrt(6.0 / (in_features + units))
        kernel = _xp.from_host(rng.uniform(-bound, bound, (in_features, units)), xp, device, dtype)
        bias = _xp.from_host(rng.uniform(-bound, bound, (units,)), xp, device, dtype) if use_bias else None
        return cls(kernel, bias, activation, name)

    def __call__(self, x, mask=None):
        xp = _xp.array_namespace(self.kernel)
        _check_same_space(self.name, x, self.kernel)
        if x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} features; expected {self.kernel.shape[0]}")
        y = xp.matmul(x, self.kernel)  # (..., units)
        if self.bias is not None:
            y = y + self.bias
        y = softmax(y) if self.activation == "softmax" else self.activation(y, xp)
        return y, mask

    def output_shape(self, shape):
        return (*shape[:-1], self.kernel.shape[1])

    def named_arrays(self):
        return [("kernel", self.kernel)] + ([("bias", self.bias)] if self.bias is not None else [])

    def config(self):
        act = self.activation if self.activation == "softmax" else self.activation.to_json()
        return {"type": "Dense", "name": self.name, "activation": act}

    def map_arrays(self, fn):
        return replace(self, kernel=fn(self.kernel), bias=None if self.bias is None else fn(self.bias))

    type_name = "Dense"


@dataclass(frozen=True, eq=False)
class Softmax:
    """Softmax over the last axis (a layer, for the seeds' y_t = softmax(V h_t + c))."""

    name: str = "softmax"

    def __call__(self, x, mask=None):
        return softmax(x), mask

    def output_shape(self, shape):
        return shape

    def named_arrays(self):
        return []

    def config(self):
        return {"type": "Softmax", "name": self.name}

    def map_arrays(self, fn):
        return self

    type_name = "Softmax"


@dataclass(frozen=True, eq=False)
class Recurrent:
    """An RNN/LSTM/GRU layer: its sequence (return_sequences) or its last output.

    The last output is the final h of the last layer, both directions concatenated (Keras).
    """

    params: RNNParams
    return_sequences: bool = False
    zero_output_for_mask: bool = False
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.params, RNNParams):
            raise TypeError(f"Recurrent needs RNNParams; got {type(self.params).__name__}")
        if not self.name:
            object.__setattr__(self, "name", {"rnn": "simple_rnn"}.get(self.params.config.cell,
                                                                          self.params.config.cell))

    def __call__(self, x, mask=None):
        y, state = forward(x, self.params, mask=mask, zero_output_for_mask=self.zero_output_for_mask)
        if self.return_sequences:
            return y, mask
        xp = _xp.array_namespace(y)
        h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H_out)
        D = self.params.config.num_directions
        last = xp.concat([h_n[h_n.shape[0] - D + d, ...] for d in range(D)], axis=-1)  # (B, D*H_out)
        return last, None

    def output_shape(self, shape):
        c = self.params.config
        units = c.num_directions * c.output_size
        return (*shape[:-1], units) if self.return_sequences else (shape[0], units)

    def named_arrays(self):
        return self.params.named_arrays()

    def config(self):
        return {"type": "Recurrent", "name": self.name, "return_sequences": self.return_sequences,
                "zero_output_for_mask": self.zero_output_for_mask, "rnn": self.params.config.to_json()}

    def map_arrays(self, fn, **config_changes):
        return replace(self, params=self.params.map_arrays(fn, **config_changes))

    @property
    def type_name(self):
        return {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[self.params.config.cell]


@dataclass(frozen=True, eq=False)
class Sequential:
    """A chain of layers; ``model(x, mask=None)`` returns the last layer's output.

    ``input_shape`` (without the batch axis) is only used by :func:`rnn_xp.summary`.
    """

    layers: tuple
    input_shape: tuple | None = None
    name: str = "sequential"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        for layer in self.layers:
            if not isinstance(layer, (Embedding, Dense, Softmax, Recurrent)):
                raise TypeError(f"Sequential takes rnn_xp layers (Embedding, Dense, Softmax, Recurrent); got "
                                f"{type(layer).__name__}")

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
