"""The cell registry: every fact about a cell kind, in one place.

Params, the reference loop, the importers, the kernels' Python glue and the benchmark read their
cell facts here (gate count and order, activation slots and defaults, each framework's names and
gate orders). Adding a cell = one :class:`CellSpec` entry + its step function in
:mod:`rnn_xp.cells` + tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cells import gru_step, lstm_step, rnn_step

__all__ = ["CellSpec", "CELLS", "spec", "MERGE_MODES"]


@dataclass(frozen=True)
class CellSpec:
    """One cell kind.

    Gate orders map rnn_xp's gate k to the framework's gate ``order[k]`` (the blocks of a stacked
    weight matrix are reordered with them on import).
    """

    name: str  # rnn_xp's name: 'rnn', 'lstm', 'gru'
    gates: tuple  # rnn_xp's gate order (PyTorch's): LSTM i, f, g, o; GRU r, z, n
    functions: tuple  # activation slots, ONNX's f, g, h
    default_activations: tuple  # ONNX names, one per slot
    step: Callable  # the one-step function (rnn_xp.cells)
    type_name: str  # the layer's name in summaries (Keras's class name)
    keras_order: tuple  # Keras gate order: LSTM i, f, c, o; GRU z, r, h
    onnx_op: str  # the ONNX operator
    onnx_order: tuple  # ONNX gate order: LSTM i, o, f, c; GRU z, r, h
    torch_modes: tuple  # torch's mode names (nn.RNNBase.mode)

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    @property
    def num_functions(self) -> int:
        return len(self.functions)


CELLS = {
    s.name: s
    for s in (
        CellSpec("rnn", ("h",), ("f",), ("Tanh",), rnn_step, "SimpleRNN", (0,), "RNN", (0,), ("RNN_TANH", "RNN_RELU")),
        CellSpec(
            "lstm",
            ("i", "f", "g", "o"),
            ("f", "g", "h"),
            ("Sigmoid", "Tanh", "Tanh"),
            lstm_step,
            "LSTM",
            (0, 1, 2, 3),
            "LSTM",
            (0, 2, 3, 1),
            ("LSTM",),
        ),
        CellSpec(
            "gru",
            ("r", "z", "n"),
            ("f", "g"),
            ("Sigmoid", "Tanh"),
            gru_step,
            "GRU",
            (1, 0, 2),
            "GRU",
            (1, 0, 2),
            ("GRU",),
        ),
    )
}

# LSTM peepholes: rnn_xp stores p = (i, f, o); ONNX's P is (i, o, f)
ONNX_PEEPHOLE_ORDER = (0, 2, 1)

# how Keras's Bidirectional merges the two directions
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def spec(cell: str) -> CellSpec:
    """The :class:`CellSpec` of ``cell``; ValueError naming the known cells otherwise."""
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ValueError(f"cell={cell!r} is unknown; expected one of {', '.join(map(repr, CELLS))}") from None
