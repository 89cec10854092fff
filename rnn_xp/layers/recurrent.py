"""Recurrent layers: Keras's SimpleRNN/LSTM/GRU (one Recurrent class) and Bidirectional."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import _xp
from .._validate import check_bool, check_mask, check_x
from ..engine import forward
from ..params import RNNParams
from ..registry import MERGE_MODES
from .base import _check_weight, from_config, params_from_config, register, sub_arrays, where_repr


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
            object.__setattr__(
                self, "name", {"rnn": "simple_rnn"}.get(self.params.config.cell, self.params.config.cell)
            )

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

    def __repr__(self):  # the configuration, not the weights
        c = self.params.config
        settings = (
            ("num_layers", c.num_layers, 1),
            ("direction", c.direction, "forward"),
            ("proj_size", c.proj_size, 0),
        )
        extra = [f"{k}={v!r}" for k, v, default in settings if v != default]
        extra += [f"{f}=True" for f in ("return_sequences", "zero_output_for_mask", "go_backwards") if getattr(self, f)]
        where = where_repr(self.params.layers[0][0].w_ih)
        return (
            f"Recurrent({self.type_name}, input_size={c.input_size}, units={c.hidden_size}, bias={c.bias!r}, "
            + "".join(e + ", " for e in extra)
            + f"name={self.name!r}, {where})"
        )

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
                ran = run[:, t : t + 1]  # (B, 1)
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
        return {
            "type": "Recurrent",
            "name": self.name,
            "return_sequences": self.return_sequences,
            "zero_output_for_mask": self.zero_output_for_mask,
            "go_backwards": self.go_backwards,
            "rnn": self.params.config.to_json(),
        }

    @classmethod
    def from_config(cls, config, arrays):
        # the flags go to the constructor as stored: "false" in a tampered file is a TypeError, not True
        return cls(
            params_from_config(config["rnn"], arrays),
            config.get("return_sequences", False),
            config.get("zero_output_for_mask", False),
            str(config.get("name", "")),
            config.get("go_backwards", False),
        )

    def map_arrays(self, fn):
        return replace(self, params=self.params.map_arrays(fn))

    @property
    def type_name(self):
        return self.params.config.spec.type_name


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
            raise ValueError(
                f"{self.name}: the forward layer reads {f.config.input_size} features, the backward "
                f"layer {b.config.input_size}; both read the same input"
            )
        _check_weight(self.name, "the backward layer's w_ih", b.layers[0][0].w_ih, 2, like=f.layers[0][0].w_ih)
        units = [layer.output_shape((None, None, 0))[-1] for layer in (self.forward_layer, self.backward_layer)]
        if self.merge_mode in ("sum", "mul", "ave") and units[0] != units[1]:
            raise ValueError(
                f"{self.name}: merge_mode={self.merge_mode!r} needs outputs of one size; the layers "
                f"output {units[0]} and {units[1]} units. Fix: merge_mode='concat'"
            )

    @property
    def return_sequences(self):
        return self.forward_layer.return_sequences

    def __repr__(self):
        return (
            f"Bidirectional(merge_mode={self.merge_mode!r}, name={self.name!r},\n"
            f"  forward={self.forward_layer!r},\n  backward={self.backward_layer!r})"
        )

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
        return [(f"forward.{n}", a) for n, a in self.forward_layer.named_arrays()] + [
            (f"backward.{n}", a) for n, a in self.backward_layer.named_arrays()
        ]

    def config(self):
        return {
            "type": "Bidirectional",
            "name": self.name,
            "merge_mode": self.merge_mode,
            "forward": self.forward_layer.config(),
            "backward": self.backward_layer.config(),
        }

    @classmethod
    def from_config(cls, config, arrays):
        return cls(
            from_config(config["forward"], sub_arrays(arrays, "forward.")),
            from_config(config["backward"], sub_arrays(arrays, "backward.")),
            config.get("merge_mode", "concat"),
            str(config.get("name", "bidirectional")),
        )

    def map_arrays(self, fn):
        return replace(
            self, forward_layer=self.forward_layer.map_arrays(fn), backward_layer=self.backward_layer.map_arrays(fn)
        )
