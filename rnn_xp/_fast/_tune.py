"""``rnn-xp tune``: the matrix product's block sizes measured on this CPU, and kept for it.

The analytical choice (:func:`rnn_xp._fast._cpu.analytical`) was fitted on one processor; another may
prefer a smaller k block (an L2 that feeds the FMAs more slowly) or another register tile. This
measures, on the machine at hand, whole LSTM float32 calls of the compiled engine (batch 64, two
GEMM-bound shapes, the thread count a call gets) with:

1. the analytical tile and k blocks whose weight block (KC x NR) fills half, one, two and four L1s;
2. those again, side by side with the other register tiles that fit the vector registers, at the best
   k block of step 1 (in bytes): the choice and the table come from this step's measurements.

Each candidate is a kernel of its own (compiled once, kept in numba's cache like any other). The
candidates take turns round after round, and each keeps its fastest call (noise on a shared machine
only ever adds time); a candidate's score is the geometric mean over the shapes of its time over the
analytical choice's. The fastest is kept only when it beats the analytical choice by more than
``MARGIN``, and again in a head-to-head confirmation of the two (else the analytical choice is kept,
and saved as such). Every candidate's outputs are checked to be the analytical choice's bits: block
sizes change the speed, never a result.

The choice is saved in :func:`rnn_xp._fast._cpu.tuning_file` under :func:`~rnn_xp._fast._cpu.cpu_key`
(the processor, the code's vector width, the caches), and serves both dtypes (a k block of the same
bytes). Processes started later use it; ``rnn_xp.explain`` says where the block sizes came from.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from typing import NamedTuple

import numpy as np

from ..io import write_atomically
from . import _cpu

__all__ = ["tune", "forget", "TuneResult", "SHAPES", "MARGIN"]

SHAPES = ((64, 256, 256, 24), (64, 256, 1024, 3))  # (batch, inputs, hidden, steps) of the LSTM calls timed
MARGIN = 0.97  # another choice is kept only when its score is below this (3% faster than the analytical one)
L1_FOOTPRINTS = (0.5, 1, 2, 4)  # a k block of weights (KC x NR) of this many L1 data caches
KC_RANGE = (32, 1024)


class Candidate(NamedTuple):
    mr: int
    v: int
    kc: int

    def __str__(self):
        return f"{self.mr}x{self.v} k{self.kc}"


class TuneResult(NamedTuple):
    """What :func:`tune` measured: ``rows`` of (candidate, score, best seconds per shape), best first."""

    key: str  # the CPU, as the tuning file keeps it
    analytical: Candidate
    chosen: Candidate
    rows: list
    path: object  # where it was saved (a Path), or None when not saved
    seconds: float  # the whole tune, compiles included
    load: tuple = ()  # the 1-minute load average at the start and the end of the measurements (where readable)
    shapes: tuple = SHAPES  # (batch, inputs, hidden, steps) of the calls, in the order of each row's times
    confirmed: tuple = None  # (the best other candidate, its score head to head with the analytical one), if run

    @property
    def busy(self) -> bool:
        """Whether other work held the cores while it measured (load above cores + 1/2): noise, measure again."""
        return bool(self.load) and max(self.load) > (os.cpu_count() or 1) + 0.5

    def table(self) -> str:
        """A line per candidate, best first: its score and, per shape, its best time and GFLOP/s."""
        heads = [f"B{b} in{f} H{h} T{t}" for b, f, h, t in self.shapes]
        flops = [2 * b * t * 4 * h * (f + 1 + h) for b, f, h, t in self.shapes]  # the LSTM's products
        lines = [f"{'tile k block':<14} {'score':>6}  " + "  ".join(f"{h:>22}" for h in heads)]
        for cand, score, best in self.rows:
            mark = "  <- chosen" if cand == self.chosen else ("  (analytical)" if cand == self.analytical else "")
            cells = "  ".join(f"{1e3 * s:>8.2f} ms {n / s / 1e9:>5.0f} GF/s" for s, n in zip(best, flops, strict=True))
            lines.append(f"{cand!s:<14} {score:>6.3f}  {cells}{mark}")
        return "\n".join(lines)


def tiles(registers):
    """Register tiles (rows, vectors) of as many accumulators as the analytical one (MR*V: 24 of 32 registers,
    12 of 16), leaving room for a broadcast and, with 32 registers, the V weight vectors of a step of k."""
    if registers >= 32:
        return [(6, 4), (8, 3), (12, 2), (4, 4)]
    return [(3, 4), (4, 3), (6, 2), (2, 4)]


def kc_for(footprint_bytes, v, vector_bytes):
    """The k block (a multiple of 8 in KC_RANGE) whose KC x NR block of weights takes about these bytes."""
    kc = int(footprint_bytes) // (v * vector_bytes) // 8 * 8
    return min(KC_RANGE[1], max(KC_RANGE[0], kc))


def _spec(base, cand):
    return base._replace(mr=cand.mr, v=cand.v, kc=cand.kc)


class _Case:
    """One shape, prepared for one candidate: its packed weights, Direction and buffers."""

    def __init__(self, nc, params, spec, x, B):
        cfg, acts, w = params.config, params.config.activations[0], params.layers[0][0]
        dtype = np.dtype("float32")
        arranged = nc._arrange(w, cfg, acts, dtype, spec)
        self.d = nc.Direction(arranged, cfg, acts, dtype, B)
        H = cfg.hidden_size
        self.x = x
        self.h, self.c = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
        self.y = np.empty((x.shape[0], B, H), dtype)

    def __call__(self):
        self.h[...] = 0
        self.c[...] = 0
        t = time.perf_counter()
        self.d.run(self.x, self.h, self.c, self.y)
        return time.perf_counter() - t

    def bits(self):
        return self.y.tobytes() + self.h.tobytes() + self.c.tobytes()


def _measure(cases_of, cands, rounds, calls, progress):
    """{candidate: [best seconds per shape]} over ``rounds`` rounds in turn (rotated each round)."""
    best = {c: [math.inf] * len(cases_of[c]) for c in cands}
    for r in range(rounds):
        order = cands[r % len(cands) :] + cands[: r % len(cands)]
        for cand in order:
            for i, case in enumerate(cases_of[cand]):
                best[cand][i] = min(best[cand][i], *(case() for _ in range(calls)))
        if progress is not None:
            progress(f"  round {r + 1}/{rounds} done")
    return best


def _score(best, ref):
    return math.exp(sum(math.log(b / a) for a, b in zip(ref, best, strict=True)) / len(ref))


def _steps(c, analytical):
    """The two steps of the module docstring: functions of the scores so far that give their candidates
    (the last step measures every candidate, so that one measurement decides)."""
    mr, v = analytical.mr, analytical.v

    def k_blocks(scores):
        return [Candidate(mr, v, kc_for(f * c.l1d, v, c.vector_bytes)) for f in L1_FOOTPRINTS]

    def tiles_at_the_best_k_block(scores):
        top = min((k for k in scores if (k.mr, k.v) == (mr, v)), key=scores.get)
        footprint = top.kc * top.v * c.vector_bytes  # bytes of its block of weights
        return [*scores] + [Candidate(m, w, kc_for(footprint, w, c.vector_bytes)) for m, w in tiles(c.registers)]

    return [k_blocks, tiles_at_the_best_k_block]


def choose(scores, analytical, margin=MARGIN):
    """The candidate to keep: the best-scoring one when it beats the analytical choice's 1.0 by the margin."""
    cand = min(scores, key=scores.get)
    return cand if scores[cand] < margin * scores[analytical] else analytical


def tune(rounds=15, calls=2, save=True, progress=None, *, candidates=None):
    """Measure the block sizes of the compiled engine's matrix product on this CPU and keep the fastest.

    Takes about a minute, mostly compiling a kernel per candidate (kept in numba's cache). ``rounds``
    rounds of ``calls`` calls per candidate and shape; ``save``: write the choice to the tuning file
    (rnn-xp tune), which later processes read. ``candidates`` (tests): the list of (mr, v, kc) to measure
    instead of the two steps of the module docstring. Returns a :class:`TuneResult`.
    """
    from . import numba_cpu as nc

    if nc._load() is None:
        raise RuntimeError(f"nothing to tune: {nc._state['reason']}")
    rounds, calls = int(rounds), int(calls)
    if rounds < 1 or calls < 1:
        raise ValueError(f"rounds={rounds}, calls={calls}; expected whole numbers >= 1")
    say = progress or (lambda line: None)
    started = time.perf_counter()
    if save:  # a file that cannot be written fails now, not after a minute of measuring
        _writable(_cpu.tuning_file())
    c = _cpu.cpu()
    ana = _cpu.analytical(4)
    analytical = Candidate(ana.mr, ana.v, ana.kc)
    from ..params import init

    rng = np.random.default_rng(0)
    shapes = []
    for B, F, H, T in SHAPES:
        params = init("lstm", F, H, seed=1)
        x = rng.standard_normal((T, B, F)).astype(np.float32)
        shapes.append((params, x, B))
    base = nc._make_spec(shapes[0][0].config, shapes[0][0].config.activations[0], "float32")
    cases_of, reference = {}, {}

    def prepare(cands):
        for cand in cands:
            if cand in cases_of:
                continue
            t = time.perf_counter()
            spec = _spec(base, cand)
            nc.compile_spec(spec)
            cases_of[cand] = [_Case(nc, p, spec, x, B) for p, x, B in shapes]
            for i, case in enumerate(cases_of[cand]):  # warm-up and the bits check
                case()
                bits = case.bits()
                if reference.setdefault(i, bits) != bits:
                    raise RuntimeError(
                        f"block sizes {cand} changed the results of an LSTM call: a bug in rnn_xp's kernels, "
                        "please report it (with `rnn-xp --version` and this CPU's model)"
                    )
            say(f"  {cand}: ready in {time.perf_counter() - t:.1f} s")

    steps = _steps(c, analytical) if candidates is None else [lambda scores: [Candidate(*k) for k in candidates]]
    scores, best_all = {}, {}
    load = [_load_average()]
    for i, step in enumerate(steps, start=1):
        cands = list(dict.fromkeys([analytical, *step(scores)]))
        say(f"step {i}/{len(steps)}: {', '.join(map(str, cands))}")
        prepare(cands)
        best = _measure(cases_of, cands, rounds, calls, progress)
        for cand in cands:  # relative to the analytical choice measured in the same rounds
            scores[cand], best_all[cand] = _score(best[cand], best[analytical]), best[cand]
    chosen, confirmed = choose(scores, analytical), None
    if chosen != analytical:  # one lucky step is not enough: the two again, head to head, must agree
        say(f"confirming: {chosen} against {analytical}")
        again = _measure(cases_of, [analytical, chosen], rounds, calls, progress)
        confirmed = (chosen, _score(again[chosen], again[analytical]))
        chosen = choose({analytical: 1.0, chosen: confirmed[1]}, analytical)
    load.append(_load_average())
    rows = sorted(((k, scores[k], best_all[k]) for k in scores), key=lambda r: r[1])
    key = _cpu.cpu_key(c)
    path = None
    if save:
        path = _save(key, chosen, analytical, scores)
        _cpu.blocking.cache_clear()  # this process uses it from its next new configuration on
    load = tuple(v for v in load if v is not None)
    seconds = time.perf_counter() - started
    return TuneResult(key, analytical, chosen, rows, path, seconds, load, SHAPES, confirmed)


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return None


def _rewrite(path, change):
    """Read the tuning file (a broken one starts over), apply change(data), write it back atomically."""
    data, _ = _cpu.load_tuning(path)  # a broken file starts over
    data = {"format": 1, "cpus": dict(data.get("cpus", {}))}
    change(data["cpus"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True) + "\n"), text=True)


def _writable(path):
    """Raise (ValueError: off; OSError: its folder cannot be made or written) unless the tuning file can be saved."""
    if path is None:
        raise ValueError("RNN_XP_TUNING_FILE is 'off': nowhere to save; set it to a file path, or tune --no-save")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write in {path.parent}")
    return path


def _save(key, chosen, analytical, scores):
    path = _writable(_cpu.tuning_file())
    entry = {
        "mr": chosen.mr,
        "v": chosen.v,
        "kc": chosen.kc,
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%MZ"),
        "rnn_xp": getattr(sys.modules.get("rnn_xp"), "__version__", "unknown"),  # the package, imported first
        "analytical": list(analytical),
        "scores": {str(k): round(s, 4) for k, s in sorted(scores.items(), key=lambda kv: kv[1])},
    }
    _rewrite(path, lambda cpus: cpus.__setitem__(key, entry))
    return path


def forget():
    """Remove this CPU's entry from the tuning file: (path, whether there was one)."""
    path = _cpu.tuning_file()
    if path is None:
        return None, False
    key = _cpu.cpu_key()
    had = key in _cpu.load_tuning(path)[0].get("cpus", {})
    if had:
        _rewrite(path, lambda cpus: cpus.pop(key, None))
    _cpu.blocking.cache_clear()
    return path, had
