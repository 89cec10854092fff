"""What the benchmark runs: the four reference configs, the sweeps and the quick set (see bench/README.md).

The reference configs span the regimes an RNN forward pass meets:

    name         cell      B    T     in    H     GFLOP  what it stresses
    keras-text   rnn tanh  64   250   32    100   0.42   the SimpleRNN of rnn_xp.text_classifier(): latency
    lstm-med     lstm      64   100   256   512   20.1   a mid-size LSTM: matmuls and gate math share the time
    lstm-large   lstm      256  200   1024  1024  859    compute bound: the BLAS sets the pace
    gru-latency  gru       1    1000  64    256   0.49   batch 1, 1000 dependent steps: per-step overhead

FLOPs = 2·B·T·G·H·(in + H), G = 1 (rnn), 3 (gru), 4 (lstm): the multiply-adds of the two matmuls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rnn_xp.registry import CELLS


@dataclass(frozen=True)
class Config:
    name: str
    cell: str  # rnn (tanh), lstm, gru: PyTorch's defaults, one layer, one direction
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    group: str = "reference"  # reference, steps, batch, hidden, quick
    numpy_loop: bool = False  # the per-sample NumPy loop (bench/numpy_loop.py) runs here (small sizes: it is slow)

    @property
    def flops(self) -> float:
        """2*B*T*G*H*(in+H): the multiply-adds of the input and recurrent matmuls."""
        return (
            2.0
            * self.batch
            * self.steps
            * CELLS[self.cell].num_gates
            * self.hidden_size
            * (self.input_size + self.hidden_size)
        )

    def to_json(self) -> dict:
        return asdict(self)


REFERENCE = [
    Config("keras-text", "rnn", 64, 250, 32, 100, numpy_loop=True),
    Config("lstm-med", "lstm", 64, 100, 256, 512),
    Config("lstm-large", "lstm", 256, 200, 1024, 1024),
    Config("gru-latency", "gru", 1, 1000, 64, 256),
]


def _sweeps():
    out = []
    # time steps: the keras-text cell; T = 10,000 shows memory bounded by a projection chunk
    for T in (25, 100, 1000, 10000):
        out.append(Config(f"steps-T{T}", "rnn", 64, T, 32, 100, "steps", numpy_loop=T <= 100))
    # batch: a GRU from batch 1 (latency bound) to 512 (throughput bound)
    for B in (1, 4, 16, 64, 256):
        out.append(Config(f"batch-B{B}", "gru", B, 200, 64, 256, "batch", numpy_loop=B <= 4))
    # hidden size: the lstm-med shape from H = 64 to 1024
    for H in (64, 128, 256, 1024):
        out.append(Config(f"hidden-H{H}", "lstm", 64, 100, 256, H, "hidden", numpy_loop=H <= 64))
    return out


SWEEPS = _sweeps()

QUICK = [
    Config("keras-text", "rnn", 64, 250, 32, 100, numpy_loop=True),
    Config("quick-lstm", "lstm", 8, 30, 16, 32, "quick", numpy_loop=True),
    Config("quick-gru", "gru", 1, 60, 8, 16, "quick", numpy_loop=True),
]

# python -m bench.dask_scaling: the keras-text and lstm-med cells at a batch large enough to split over
# processes (NumPy in one process vs a Dask LocalCluster); not part of the main benchmark's selections
DASK = [
    Config("dask-keras-text", "rnn", 4096, 250, 32, 100, "dask"),
    Config("dask-lstm-med", "lstm", 4096, 100, 256, 512, "dask"),
]

# the reference config each sweep point continues, for the plots (same cell and sizes but one)
SWEEP_ANCHORS = {"steps": "keras-text", "hidden": "lstm-med"}


# names used by earlier versions of the benchmark (and in results files they wrote) -> today's name
RENAMED = {"keras-seed": "keras-text"}


def select(names: str, quick: bool, note=None) -> list[Config]:
    """'reference', 'sweeps', 'all' or a comma list of config names; ``note(text)`` hears of renamed ones."""
    if quick:
        return list(QUICK)
    if names == "reference":
        return list(REFERENCE)
    if names == "sweeps":
        return list(SWEEPS)
    if names == "all":
        return REFERENCE + SWEEPS
    known = {c.name: c for c in REFERENCE + SWEEPS + QUICK}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    for old in [n for n in wanted if n in RENAMED]:
        if note is not None:
            note(f"config {old!r} is now called {RENAMED[old]!r}")
    wanted = [RENAMED.get(n, n) for n in wanted]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(
            f"unknown config(s) {unknown}; expected 'reference', 'sweeps', 'all' or names from {sorted(known)}"
        )
    return [known[n] for n in wanted]
