"""Sequential: a chain of layers, and the text-classifier model of the demo."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from .. import _xp
from ..backend import resolve_target
from ..params import init as _init_params
from .base import REGISTRY, from_config, register, sub_arrays
from .basic import ActivationLayer, Dense, Embedding, Identity, Masking, Softmax
from .recurrent import Bidirectional, Recurrent


@register
@dataclass(frozen=True, eq=False)
class Sequential:
    """A chain of layers; ``model(x, mask=None)`` returns the last layer's output.

    On a dask array the model runs lazily, one task per batch chunk (the batch is axis 0), and
    returns dask arrays chunked like x along the batch.

    ``input_shape`` (without the batch axis) is only used by :func:`rnn_xp.summary`; so is ``origin``, a line
    that says where an imported model came from and which framework semantics it was read with.
    """

    layers: tuple
    input_shape: tuple | None = None
    name: str = "sequential"
    origin: str = ""
    kind = "model"
    type_name = "Sequential"

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise TypeError(f"Sequential takes a list of layers; got {type(self.layers).__name__}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_shape is not None:
            shape = self.input_shape
            if not isinstance(shape, (list, tuple)) or not all(
                s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 0) for s in shape
            ):
                raise TypeError(
                    f"input_shape must be a tuple of sizes (ints >= 0, or None for any), without the "
                    f"batch axis; got {shape!r}"
                )
            object.__setattr__(self, "input_shape", tuple(shape))
        if not isinstance(self.origin, str):
            raise TypeError(f"origin must be a str (a line for summary()); got {type(self.origin).__name__}")
        for layer in self.layers:
            if getattr(type(layer), "kind", None) != "layer" or REGISTRY.get(type(layer).__name__) is not type(layer):
                raise TypeError(
                    f"Sequential takes rnn_xp layers ({', '.join(self.layer_types())}); got {type(layer).__name__}"
                )
        for layer in self.layers[:-1]:
            if isinstance(layer, Bidirectional) and layer.merge_mode is None:
                raise ValueError(
                    f"{layer.name}: a Bidirectional with merge_mode=None outputs a pair; it can only be the last layer"
                )
        self._check_chain()

    def _check_chain(self):
        """Each layer reads what the one before it outputs: rank and features, as far as they are known (the
        model's input_shape, when given, is the first layer's input). Checked when built, so when loaded too."""
        rank, features = (len(self.input_shape) + 1, self.input_shape[-1] or None) if self.input_shape else (None, None)
        source = f"the input_shape {self.input_shape}"
        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({layer.name})"
            if isinstance(layer, Embedding) and i > 0:
                raise ValueError(
                    f"{where}: an Embedding reads token ids, so it can only be the first layer; it follows {source}"
                )
            needs = _input_features(layer)
            if isinstance(layer, (Recurrent, Bidirectional)) and rank is not None and rank != 3:
                what = "one vector per sequence" if rank == 2 else f"arrays of {rank} dimensions"
                raise ValueError(
                    f"{where} reads sequences (batch, time, features), but {source} outputs {what}. "
                    "Fix: return_sequences=True on the recurrent layer before it"
                )
            if needs is not None and features is not None and needs != features:
                raise ValueError(
                    f"{where} reads {needs} features, but {source} outputs {features}. Fix: make each "
                    "layer's input size the previous layer's output size"
                )
            rank, features = _output(layer, rank, features)
            if not isinstance(layer, _PASS_THROUGH):
                source = where

    def __repr__(self):  # one layer a line, shapes and settings, never the weights' values
        lines = [f"Sequential(name={self.name!r}, input_shape={self.input_shape}, layers=["]
        for layer in self.layers:
            lines += ["  " + line for line in f"{layer!r},".splitlines()]
        return "\n".join(lines + ["])"])

    @staticmethod
    def layer_types():
        return sorted(n for n, c in REGISTRY.items() if getattr(c, "kind", None) == "layer")

    def __call__(self, x, mask=None):
        if _xp.is_dask_array(x):  # lazy, one task per batch chunk (axis 0): see rnn_xp._dask
            from .._dask import model_call

            return model_call(self, x, mask)
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

    def __sizeof__(self):
        """Bytes held, weights included: what sys.getsizeof (and so dask's scheduler) counts."""
        return object.__sizeof__(self) + sum(int(getattr(a, "nbytes", 0)) for _, a in self.named_arrays())

    def named_arrays(self):
        return [(f"layer{i}.{n}", a) for i, layer in enumerate(self.layers) for n, a in layer.named_arrays()]

    def config(self):
        return {
            "type": "Sequential",
            "name": self.name,
            "input_shape": self.input_shape,
            "layers": [layer.config() for layer in self.layers],
            **({"origin": self.origin} if self.origin else {}),
        }

    @classmethod
    def from_config(cls, config, arrays):
        layers = config.get("layers")
        if not isinstance(layers, list):
            raise ValueError("a Sequential config needs a list of layers")
        shape = config.get("input_shape")
        return cls(
            [from_config(lc, sub_arrays(arrays, f"layer{i}.")) for i, lc in enumerate(layers)],
            None if shape is None else tuple(shape),
            str(config.get("name", "sequential")),
            config.get("origin", ""),
        )

    def map_arrays(self, fn):
        return replace(self, layers=tuple(layer.map_arrays(fn) for layer in self.layers))


_PASS_THROUGH = (Masking, ActivationLayer, Identity, Softmax)  # output what they read


def _input_features(layer):
    """The size of the last axis ``layer`` reads, or None when it takes any (or token ids)."""
    if isinstance(layer, Recurrent):
        return layer.params.config.input_size
    if isinstance(layer, Bidirectional):
        return layer.forward_layer.params.config.input_size
    if isinstance(layer, Dense):
        return layer.kernel.shape[0]
    return None


def _output(layer, rank, features):
    """(rank, features) of ``layer``'s output from those of its input; None where unknown."""
    if isinstance(layer, _PASS_THROUGH):
        return rank, features
    if isinstance(layer, Embedding):
        return (None if rank is None else rank + 1), layer.table.shape[1]
    if isinstance(layer, Dense):
        return rank, layer.kernel.shape[1]
    if isinstance(layer, (Recurrent, Bidirectional)):
        out = layer.output_shape((None, None, 0))  # (B, T, units) or (B, units); a pair for merge_mode=None
        return (None, None) if isinstance(out, list) else (len(out), out[-1])
    return None, None  # a layer this check does not know: nothing is assumed after it


def text_classifier(*, seed=0, dtype="float32", xp=None, device=None, vocab=5000, embed=32, units=100, steps=250):
    """A Keras-style text classifier with random weights: the model of ``rnn-xp demo``.

    ``Embedding(vocab, embed) -> SimpleRNN(units) -> Dense(1, sigmoid)``, as the Keras tutorials
    build a sentiment classifier; with the defaults, Embedding(5000, 32) -> SimpleRNN(100) ->
    Dense(1, sigmoid), 160,000 + 13,300 + 101 = 173,401 parameters (Keras's count: one bias).

    Parameters
    ----------
    seed : int
        The Embedding's weights come from ``seed``, the SimpleRNN's from ``seed + 1``, the Dense
        layer's from ``seed + 2``: the same seed gives the same model on every backend.
    dtype, xp, device
        Where the weights live (see :func:`rnn_xp.init`); ``xp=None`` reads ``RNN_XP_BACKEND``.
    vocab, embed, units
        The vocabulary size, the embedding width and the SimpleRNN's units.
    steps
        The sequence length shown by :func:`rnn_xp.summary` (the model takes any length).

    Returns
    -------
    Sequential
        ``model(token_ids)`` maps integer ids of shape (batch, time) to probabilities (batch, 1).
    """
    xp, device = resolve_target(xp, device)
    return Sequential(
        [
            Embedding.init(vocab, embed, seed=seed, dtype=dtype, xp=xp, device=device),
            Recurrent(
                _init_params("rnn", embed, units, bias="single", seed=seed + 1, dtype=dtype, xp=xp, device=device)
            ),
            Dense.init(units, 1, activation="sigmoid", seed=seed + 2, dtype=dtype, xp=xp, device=device),
        ],
        input_shape=(steps,),
    )


def seed_model(**kwargs):
    """Deprecated name of :func:`text_classifier` (same arguments, same model)."""
    warnings.warn(
        "rnn_xp.seed_model() is now rnn_xp.text_classifier(); seed_model will be removed",
        DeprecationWarning,
        stacklevel=2,
    )
    return text_classifier(**kwargs)
