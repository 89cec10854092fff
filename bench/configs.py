"""What the benchmark runs: the reference configs of shared/REFERENCE.md, the sweeps and the quick set."""

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
    seed_loop: bool = False  # the seeds' per-sample loop runs here (small sizes only: it is slow)

    @property
    def flops(self) -> float:
        """2*B*T*G*H*(in+H): the multiply-adds of the input and recurrent matmuls."""
        return 2.0 * self.batch * self.steps * CELLS[self.cell].num_gates * self.hidden_size * (
            self.input_size + self.hidden_size)

    def to_json(self) -> dict:
        return asdict(self)


REFERENCE = [
    Config("keras-seed", "rnn", 64, 250, 32, 100, seed_loop=True),
    Config("lstm-med", "lstm", 64, 100, 256, 512),
    Config("lstm-large", "lstm", 256, 200, 1024, 1024),
    Config("gru-latency", "gru", 1, 1000, 64, 256),
]


def _sweeps():
    out = []
    # time steps: the keras-seed cell; T = 10,000 shows memory bounded by a projection chunk
    for T in (25, 100, 1000, 10000):
        out.append(Config(f"steps-T{T}", "rnn", 64, T, 32, 100, "steps", seed_loop=T <= 100))
    # batch: a GRU from batch 1 (latency bound) to 512 (throughput bound)
    for B in (1, 4, 16, 64, 256):
        out.append(Config(f"batch-B{B}", "gru", B, 200, 64, 256, "batch", seed_loop=B <= 4))
    # hidden size: the lstm-med shape from H = 64 to 1024
    for H in (64, 128, 256, 1024):
        out.append(Config(f"hidden-H{H}", "lstm", 64, 100, 256, H, "hidden", seed_loop=H <= 64))
    return out


SWEEPS = _sweeps()

QUICK = [
    Config("keras-seed", "rnn", 64, 250, 32, 100, seed_loop=True),
    Config("quick-lstm", "lstm", 8, 30, 16, 32, "quick", seed_loop=True),
    Config("quick-gru", "gru", 1, 60, 8, 16, "quick", seed_loop=True),
]

# python -m bench.dask_scaling: the keras-seed and lstm-med cells at a batch large enough to split over
# processes (NumPy in one process vs a Dask LocalCluster); not part of the main benchmark's selections
DASK = [
    Config("dask-keras-seed", "rnn", 4096, 250, 32, 100, "dask"),
    Config("dask-lstm-med", "lstm", 4096, 100, 256, 512, "dask"),
]

# the reference config each sweep point continues, for the plots (same cell and sizes but one)
SWEEP_ANCHORS = {"steps": "keras-seed", "hidden": "lstm-med"}


def select(names: str, quick: bool) -> list[Config]:
    """'reference', 'sweeps', 'all' or a comma list of config names."""
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
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown config(s) {unknown}; expected 'reference', 'sweeps', 'all' or names from "
                         f"{sorted(known)}")
    return [known[n] for n in wanted]
