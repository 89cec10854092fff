"""The compiled CPU implementation (impl="numba"): the reference loop's equations, compiled with numba.

Chosen by ``impl="auto"`` on NumPy when numba is installed (``pip install 'rnn_xp[numba]'``); without
it the seam says so and runs numpy-fused. numba is imported on the first call that gets here, never
by ``import rnn_xp``. The compiled code is in :mod:`rnn_xp._fast._numba_kernels` (a kernel per
configuration) and :mod:`rnn_xp._fast._numba_gemm` (the matrix product).

How a call runs, per layer and direction (a :class:`Direction`, which rnn_xp.Stream also uses, so a
stream and a forward call run the same code):

* :func:`arrange` packs the weights into panels of NR columns (the biases ride as an extra input
  row; NR the CPU's, or narrower for a narrower layer: :func:`panel_vectors`), once per params object:
  the packed copy is kept beside frozen params (every rnn_xp params object) and reused by later calls
  and streams, as are forward's Directions (state buffers, small scratch) per batch size;
* one compiled call per time chunk does everything: each step's product group by group of units
  (rnn, lstm: over the state rows [x, 1, h]; GRU: the input projection, then the recurrent product) with the
  cell's equations right after it, masks and outputs. rnn and lstm on the caller's x (time-major or
  batch-first memory) need no scratch by time: the whole call is one chunk;
* threads (rnn_xp's own, :mod:`rnn_xp._fast._threads`) split the batch rows when each gets at least
  ROWS_PER_THREAD_MIN (independent sequences: no waiting; ROWS_PER_THREAD_FULL where W_hh does not fit
  a core's L2), else the groups of units (with fewer groups than threads, the groups for parts of the
  rows: :meth:`Direction._plan`), meeting at a spin barrier after every step; small calls run on
  the calling thread;
* a stream fed a step a call, and a one-step forward call without masks on a kept Direction
  (:meth:`Direction.step1`), shares big enough steps with a team of workers that stay in the kernel
  between back-to-back calls, spinning on a slot of a control array for the next step (~0.1-0.3 ms,
  then they leave it): a call hands them its share by an atomic store instead of waking sleeping
  threads (~50-100 us a call on a VM, more than a step takes).

Results are bit-identical whatever the thread count, the split, the batch a sequence sits in, the
chunking of time (forward or a Stream fed in any chunks) and masks elsewhere in the batch: see the
Arithmetic paragraphs of the two kernel modules.

Compiling: see :mod:`rnn_xp._fast._build` (in the background by default: the first call of a
configuration on a cold cache runs numpy-fused while a child process compiles).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from typing import NamedTuple

import numpy as np

from .. import _xp
from .. import loop as _loop  # CHUNK_ELEMENTS is read at call time (tests shrink it)
from ..params import _frozen
from ..registry import CELLS
from . import _cpu, _threads

__all__ = [
    "NAMESPACES",
    "unsupported",
    "unsuited",
    "run_direction",
    "prepared_unsupported",
    "prepared_unready",
    "arrange",
    "Direction",
]

NAMESPACES = ("numpy",)

INSTALL_HINT = "pip install 'rnn_xp[numba]'"
MIN_NUMBA = (0, 60)
_CHUNK_CAP = 1 << 20
# Calls of fewer multiply-adds than this (~0.6 ms on one core) run on the calling thread: waking the
# workers costs ~50-100 us a call (measured: a one-step LSTM call at batch 32, H 128, 4 Mi multiply-adds,
# took 214 us on two threads against ~90 us on one).
CALL_PARALLEL_MIN = 1 << 25
# Steps of fewer multiply-adds (B * G * H * (H_out + F)) do not split their units: the threads would
# spend more time meeting at the barrier (~0.3 us a step, measured on 2 cores) than computing.
PARALLEL_MIN = 1 << 15
# The threads split the batch rows when each gets at least this many; with fewer they split the units.
ROWS_PER_THREAD_MIN = 4
# A thread given fewer rows than this reads all of W_hh every step for those few rows: where W_hh is larger
# than a core's L2 the threads split the units instead (each keeps its slice of W_hh in its L2), unless the
# cores are busy. Measured on 2 cores (AMD EPYC Zen 1, L2 512 KiB), LSTM in 256, H 512 (W_hh 4 MiB), T 100,
# rows / units split: B 8 (4 rows a thread) 120 / 51 ms, B 12 (6 rows) 117 / 70 ms, B 16 (8 rows) level.
# The test is on W_hh, not on all the weights a step reads ([W_ih; b; W_hh]): on 2 cores of a Zen 4 (L2 1 MiB)
# with W_hh within L2 and the whole over it (LSTM and GRU B 8, in 256, H 256; rnn B 8, in and H 512), units
# took 1.07-1.18x the time of rows (`python -m bench.plans`, the within-l2 cases).
ROWS_PER_THREAD_FULL = 8
# A stream's one-step calls (Direction.step1) share a step of at least this many multiply-adds among threads
# that stay resident between calls ending at most TEAM_GAP s apart. Measured on 2 cores (LSTM, one thread
# against two): 9.8 vs 12.0 us at 128 Ki multiply-adds (B1 H128 in 128), even at ~256 Ki, 23.1 vs 20.3 at
# 385 Ki (B1 H256), 28.7 vs 22.0 at 1 Mi (B8 H128); B32 H128: 102 vs 63 us a stream call.
TEAM_STEP_MIN = 1 << 19
TEAM_GAP = 1e-4


def _l2_bytes():
    """A core's L2 cache in bytes (as the blocking reads it)."""
    return _cpu.cpu().l2


def _cores_busy():
    """Whether other work holds the cores (1-minute load average above cores + 1/2), where it can be read.

    Threads that split the units meet at a barrier every step, so a descheduled thread stalls the
    others (measured on a 2-core machine at load 5-12: 5-9x slower than one thread). The load average
    counts this call's own threads too, so the cores count as taken only when other work needs more
    than half a core on top of them.
    """
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) + 0.5
    except (AttributeError, OSError):  # no load average (Windows)
        return False


_busy = {"at": -math.inf, "busy": False}


def _cores_busy_cached():
    """_cores_busy(), read at most every 0.1 s (a stream's steps take microseconds; reading the load takes ~10)."""
    now = time.perf_counter()
    if now - _busy["at"] > 0.1:
        _busy["at"], _busy["busy"] = now, _cores_busy()
    return _busy["busy"]


_state = {"kernels": None, "reason": None, "built": None}
_lock = threading.Lock()


def _reset_lock():
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # another thread may hold it at the fork
    os.register_at_fork(after_in_child=_reset_lock)


def _load():
    """The kernels module, or None with _state["reason"] saying why numba cannot be used."""
    if _state["kernels"] is not None or _state["reason"] is not None:
        return _state["kernels"]
    with _lock:
        if _state["kernels"] is None and _state["reason"] is None:
            try:
                import numba
            except Exception as e:  # noqa: BLE001 - absent or broken: either way the reason is reported
                _state["reason"] = (
                    f"numba is not installed ({INSTALL_HINT})"
                    if isinstance(e, ModuleNotFoundError)
                    else f"numba cannot be imported ({type(e).__name__}: {e}); {INSTALL_HINT}"
                )
                return None
            version = tuple(int(v) for v in numba.__version__.split(".")[:2] if v.isdigit())
            if version < MIN_NUMBA:
                _state["reason"] = (
                    f"numba {numba.__version__} is older than {'.'.join(map(str, MIN_NUMBA))} ({INSTALL_HINT})"
                )
                return None
            from . import _build, _numba_kernels

            _state["built"] = _build.Kernels(_make, spec_to_json, "rnn_xp._fast.numba_cpu")
            _state["kernels"] = _numba_kernels
    return _state["kernels"]


def _kernels():
    _load()
    return _state["built"]


# --- what a configuration compiles to ----------------------------------------------------------------
_DEFAULT_CODES = {"Relu": 0, "Tanh": 1, "Sigmoid": 2}  # the activations a kernel can have as constants


def make_spec(cfg, acts, dtype):
    """The kernel Spec of one layer direction (its activations ``acts``) in ``dtype`` (remembered: every
    call asks, and a config's spec never changes within a process)."""
    name = dtype if isinstance(dtype, str) else _xp.dtype_name(dtype)  # dtype.name takes a microsecond a call
    key = (id(cfg), id(acts), name)  # by identity: hashing a config costs more than making the spec
    found = _SPECS.get(key)
    if found is not None and found[0] is cfg and found[1] is acts:
        return found[2]
    if len(_SPECS) > 4096:  # configs made in a loop: start over rather than grow
        _SPECS.clear()
    spec = _make_spec(cfg, acts, name)
    _SPECS[key] = (cfg, acts, spec)  # holding cfg and acts keeps their ids from being reused
    return spec


_SPECS = {}


def _make_spec(cfg, acts, dtype):
    k = _load()
    dtype = np.dtype(dtype)
    cell = k.CELL_CODES[cfg.cell] if cfg.cell != "gru" or cfg.reset_after else 3
    names = [a.name for a in acts]
    general = cfg.clip is not None or any(
        a.name not in _DEFAULT_CODES or a.alpha is not None or a.beta is not None for a in acts
    )
    codes = (0, 0, 0) if general else tuple([_DEFAULT_CODES[n] for n in names] + [0] * (3 - len(names)))
    b = _cpu.blocking(dtype.itemsize)
    return k.Spec(
        cell=cell,
        dtype=dtype.name,
        general=general,
        acts=codes,
        peepholes=bool(cfg.peepholes),
        input_forget=bool(cfg.input_forget),
        proj=bool(cfg.proj_size),
        mr=b.mr,
        v=panel_vectors(cfg.hidden_size, b),
        vb=b.vector_bytes,
        kc=b.kc,
        budget=b.accumulators,
        l2b=b.l2_half,
    )


def panel_vectors(H, b):
    """Vectors of a panel for a layer of H units: the CPU's (``b.v``), or for a layer narrower than such a panel
    the fewest that hold it, a power of two (each kernel a few seconds to compile: at most three widths).

    Padded units cost the same multiply-adds as real ones: H 32 in 64-wide panels (float32, AVX-512) did twice
    the work. On one core of a Zen 4 (RNN_XP_BLOCKING, T 30-60): LSTM B8 in16 H32 2.84 -> 1.96 us a step with
    32-wide panels, GRU B1 in8 H16 0.24 -> 0.14 with 16-wide ones. The results are the same bits whatever the
    width (every element is one chain of multiply-adds over k in order).
    """
    v = 1
    while 2 * v <= b.v and v * b.lanes < H:
        v *= 2
    return v if v * b.lanes >= H else b.v


def width_sizes(dtype):
    """A hidden size for each panel width a layer in ``dtype`` may get (``panel_vectors``), narrowest first:
    warming these up compiles every kernel of a configuration, whatever its layers' sizes."""
    b = _cpu.blocking(np.dtype(dtype).itemsize)
    sizes = {}
    for H in [(1 << i) * b.lanes for i in range(b.v.bit_length())] + [b.nr]:
        sizes.setdefault(panel_vectors(H, b), H)
    return sorted(sizes.values())


def label(spec):
    """What a kernel is for, in words: the spec's label, and its panels' width where narrower than the CPU's."""
    full = _cpu.blocking(np.dtype(spec.dtype).itemsize).v
    return spec.label if spec.v >= full else f"{spec.label}, panels of {spec.nr} columns"


def spec_to_json(spec):
    return dict(spec._asdict(), acts=list(spec.acts))


def spec_from_json(d):
    k = _load()
    return k.Spec(**dict(d, acts=tuple(d["acts"])))


def _make(spec):
    """(kernel function, example arguments of every call's types, why it cannot be cached) for _build.Kernels."""
    k = _load()
    fn = k.chunk_kernel(spec)
    return fn, _example_args(spec), k.UNCACHED.get(spec)


def compile_spec(spec):
    """Compile (or load from numba's cache) the kernel of a spec in this process."""
    return _kernels().get(spec)


# --- the seam's interface -------------------------------------------------------------------------------
def unsupported(call):
    """Why this implementation cannot run the call, or None."""
    if call.dtype not in ("float32", "float64"):
        return f"dtype {call.dtype} (this implementation runs float32 and float64)"
    if call.trace:
        return "per-step tracing is done by the reference loop"
    if call.traced:
        return "traced arrays (compiled code needs concrete NumPy arrays)"
    if _load() is None:
        return _state["reason"]
    return None


def _specs(cfg, dtype):
    return [make_spec(cfg, acts, dtype) for acts in cfg.activations]


def unsuited(call):
    """Why impl="auto" should run another implementation now: the kernel is being compiled in the background."""
    return _availability(_specs(call.cfg, call.dtype))


def _availability(specs):
    built = _kernels()
    for spec in dict.fromkeys(specs):
        _, reason = built.available(spec)
        if reason is not None:
            return f"{reason}; kernel {label(spec)}"
    return None


def prepared_unsupported(cfg, acts, dtype):
    """Why a :class:`Direction` cannot run this layer (for rnn_xp.Stream), or None."""
    name = np.dtype(dtype).name if isinstance(dtype, np.dtype) else str(dtype)
    if name not in ("float32", "float64"):
        return f"dtype {name} (this implementation runs float32 and float64)"
    if _load() is None:
        return _state["reason"]
    return None


def prepared_unready(cfg, acts, dtype):
    """Why a :class:`Direction` of this layer cannot run yet (its kernel compiling in the background), or None."""
    return _availability([make_spec(cfg, acts, np.dtype(dtype).name)])


def describe(call):
    """What explain() says of this implementation for a call: its kernels and the CPU's blocking."""
    kernels = "; ".join(dict.fromkeys(label(s) for s in _specs(call.cfg, call.dtype)))
    return f"kernel {kernels}; {_cpu.describe(np.dtype(call.dtype).itemsize)}"


# --- the weights, arranged once per params object ----------------------------------------------------------
class Arranged(NamedTuple):
    """One layer direction's packed weights and constants (see _numba_kernels.chunk_kernel's W)."""

    spec: object
    wpi: np.ndarray  # (groups*G, F+1, NR): W_ih^T and the biases, by group and gate; rnn, lstm: (., F+1+H_out, NR)
    wp1: np.ndarray  # (groups*G1, H_out, NR): W_hh^T (GRU reset before: r and z only); rnn, lstm: wpi itself
    wp2: np.ndarray  # (groups, H, NR) W_hn^T, or (out groups, H, NR) W_hr^T, or (0, 1, NR)
    b_hn: np.ndarray  # (groups*NR,): GRU reset after: b_hn (r multiplies it)
    peep: np.ndarray  # (3, groups*NR): LSTM peepholes i, f, o
    coef: np.ndarray  # (3, 3) float64: alpha and beta per gate slot, clip (general kernels)
    codes: np.ndarray  # (3,) int64: the activation codes (general kernels)
    H: int
    H_out: int
    F: int


def _panels(w_t, gates, nr, dtype):
    """w_t (K, gates*n) (rnn_xp's gate order) -> (groups*gates, K, NR): panel g*gates+q holds gate q of units
    g*NR .. g*NR+NR-1 (zero past n), row k after row k-1: what a micro-kernel streams."""
    K = w_t.shape[0]
    n = w_t.shape[1] // gates
    groups = -(-n // nr)
    out = np.zeros((groups, gates, K, nr), dtype=dtype)
    for q in range(gates):
        block = np.zeros((K, groups * nr), dtype=dtype)
        block[:, :n] = w_t[:, q * n : (q + 1) * n]
        out[:, q] = block.reshape(K, groups, nr).transpose(1, 0, 2)
    return out.reshape(groups * gates, K, nr)


def _by_unit(v, groups, nr, dtype):
    out = np.zeros(groups * nr, dtype=dtype)
    out[: len(v)] = v
    return out


def arrange(w, cfg, acts, dtype):
    """The packed weights of one layer direction for the kernel of its spec (kept beside frozen weights)."""
    dtype = np.dtype(dtype)
    spec = make_spec(cfg, acts, dtype)
    return _kept(w, ("arranged", spec), lambda: _arrange(w, cfg, acts, dtype, spec))


def _arrange(w, cfg, acts, dtype, spec):
    H, G = cfg.hidden_size, CELLS[cfg.cell].num_gates
    nr = spec.nr
    groups = -(-H // nr)
    w_ih, w_hh = np.asarray(w.w_ih), np.asarray(w.w_hh)
    F, H_out = w_ih.shape[1], w_hh.shape[1]
    b_ih = np.zeros(G * H) if w.b_ih is None else np.asarray(w.b_ih, dtype=np.float64)
    b_hh = np.zeros(G * H) if w.b_hh is None else np.asarray(w.b_hh, dtype=np.float64)
    bias = b_ih + b_hh  # rounded once more than adding them one by one: within float tolerance
    b_hn = np.zeros(H)
    if spec.cell == 2:  # reset after the product: r multiplies W_hn h + b_hn, which stays apart
        bias[2 * H :] = b_ih[2 * H :]
        b_hn = b_hh[2 * H :]
    w_in = np.empty((F + 1, G * H), dtype=dtype)  # [W_ih^T; bias]: the input's last feature is 1
    w_in[:F] = w_ih.T
    w_in[F] = bias
    w_hh_t = np.ascontiguousarray(w_hh.T, dtype=dtype)  # (H_out, G*H)
    if spec.fused:  # rnn, lstm: state rows [x, 1, h], one matrix [W_ih^T; bias; W_hh^T]
        wpi = wp1 = _panels(np.concatenate([w_in, w_hh_t]), G, nr, dtype)
    elif spec.cell == 3:  # reset before: r and z first, then W_hn (r h)
        wpi, wp1 = _panels(w_in, G, nr, dtype), _panels(w_hh_t[:, : 2 * H], 2, nr, dtype)
    else:
        wpi, wp1 = _panels(w_in, G, nr, dtype), _panels(w_hh_t, G, nr, dtype)
    if spec.cell == 3:
        wp2 = _panels(w_hh_t[:, 2 * H :], 1, nr, dtype)
    elif spec.proj:
        wp2 = _panels(np.ascontiguousarray(np.asarray(w.w_hr).T, dtype=dtype), 1, nr, dtype)
    else:
        wp2 = np.zeros((0, 1, nr), dtype=dtype)
    peep = np.zeros((3, groups * nr), dtype=dtype)
    if w.p is not None:
        p = np.asarray(w.p, dtype=dtype).reshape(3, H)  # i, f, o
        peep[:, :H] = p
    coef = np.zeros((3, 3), dtype=np.float64)
    codes = np.zeros(3, dtype=np.int64)
    k = _load()
    for slot, a in enumerate(acts):
        codes[slot] = k.ACT_NAMES.index(a.name)
        coef[0, slot] = 0.0 if a.alpha is None else a.alpha
        coef[1, slot] = 0.0 if a.beta is None else a.beta
    coef[2, 0] = 0.0 if cfg.clip is None else cfg.clip
    return Arranged(
        spec=spec,
        wpi=wpi,
        wp1=wp1,
        wp2=wp2,
        b_hn=_by_unit(b_hn, groups, nr, dtype),
        peep=peep,
        coef=coef,
        codes=codes,
        H=H,
        H_out=H_out,
        F=F,
    )


_arranged = weakref.WeakKeyDictionary()  # CellWeights -> {key: arranged copy}, freed with the weights


def _kept(w, key, make):
    """make(), remembered for these weights when they cannot change (params hold frozen NumPy arrays).

    Arranging (transposing, packing) the weights costs a pass over them per call (~1 ms for 1 MB); a
    frozen array's contents never change, so the arranged copy is kept beside the weights for later calls
    and freed with them. Weights that could change (not built by rnn_xp.params) are arranged every call.
    """
    try:
        found = _arranged.get(w, {}).get(key)  # kept only for frozen weights, which stay frozen
    except TypeError:  # not weak-referenceable
        return make()
    if found is not None:
        return found
    arrays = [a for a in (w.w_ih, w.w_hh, w.w_hr, w.b_ih, w.b_hh, w.p) if a is not None]
    if not all(_frozen(a) for a in arrays):
        return make()
    found = make()
    with _lock:
        _arranged.setdefault(w, {})[key] = found
    return found


def _ld(n, itemsize):
    """A row length (elements) >= n for the buffers the products read by rows: whole cache lines, and not a
    multiple of 512 bytes (rows that far apart share L1 sets: measured 30% slower at H = 1024)."""
    line = 64 // itemsize
    ld = -(-max(n, 1) // line) * line
    return ld + line if (ld * itemsize) % 512 == 0 else ld


# --- a layer direction made ready for a batch size ----------------------------------------------------------------
class Direction:
    """One layer direction for batch B: its kernel, packed weights, state buffers and threads.

    :meth:`run` carries the state h (B, H_out) and c (B, H) of the caller in place over a (T, B, F)
    input; forward takes one kept from an earlier call of the same weights and batch size, or makes one (see
    POOL_BYTES), rnn_xp.Stream keeps one and runs it per chunk (the same arithmetic by construction). Not
    thread-safe: one Direction serves one caller at a time.
    """

    def __init__(self, arranged, cfg, acts, dtype, B, xp=None):
        a = self.a = arranged
        self.dtype, self.B = np.dtype(dtype), B
        spec = a.spec
        self.G = CELLS[cfg.cell].num_gates
        self.G1 = 2 if spec.cell == 3 else self.G
        # a thread's products (columns): an rnn's span of groups (rows apart as _ld sets them), another cell's one
        # group's G1 panels
        span = min(a.wpi.shape[0] // self.G, _load().span_groups(spec))
        self.acc_cols = _ld(span * spec.nr, self.dtype.itemsize) if spec.cell == 0 else self.G1 * spec.nr
        self.lstm = spec.cell == 1
        itemsize = self.dtype.itemsize
        # the state of even and odd steps; a row is [x, 1, h] for rnn and lstm (the step's product reads it
        # whole: x is copied in as the step starts), else h
        self.fused = spec.fused
        self.xo = a.F + 1 if self.fused else 0  # where h starts in a state row
        self.hbuf = _empty((2, B, _ld(self.xo + a.H_out, itemsize)), self.dtype)
        if self.fused:
            self.hbuf[:, :, a.F] = 1  # the biases' input (never written again)
        self.cbuf = _empty((2, B, a.H), self.dtype) if self.lstm else np.zeros((2, 1, 1), self.dtype)
        two = spec.cell == 3 or spec.proj  # LSTM: h before the projection; GRU: r h and z
        self.aux = _empty((2, B, _ld(a.H, itemsize)), self.dtype) if two else np.zeros((2, 1, 1), self.dtype)
        self.last = _empty((B, a.H_out), self.dtype)  # the last output of each row (masks)
        self.hv = self.hbuf[:, :, self.xo : self.xo + a.H_out]  # the state h in the rows
        self.x_ld = _ld(a.F + 1, itemsize)  # a row of the chunk's x and 1 (xs)
        self.gi_ld = _ld(a.wpi.shape[0] * spec.nr, itemsize)  # a row of its projection (gi)
        self.par = 0  # the state is in hbuf[par], cbuf[par]
        self.ctl = np.zeros(_load().CONTROL_SIZE, dtype=np.int64)  # the threads' start check and barrier
        self.W = (a.wpi, a.wp1, a.wp2, a.b_hn, a.peep, a.coef, a.codes)
        self.S = (self.hbuf, self.cbuf, self.aux, self.last)
        self.nbytes = sum(b.nbytes for b in self.S)  # what it holds (grown by step1's buffers and teams)
        self.dims = (a.H, a.H_out, a.F, 0, 0, B, 1)  # x from xs, which the caller fills (see chunk_kernel)
        self.kernel = None
        self.no_mask = np.zeros((1, 1), dtype=np.uint8)
        self._one = None  # step1's bound buffers
        self._kept_bufs = None  # (shape, buffers, bytes): run's scratch when small (see _buffers)
        self._teams = {}  # nth -> (ctl, io): step1's teams of threads
        self._ended = -math.inf  # when the last step1 call ended (time.perf_counter)

    def _fn(self):
        if self.kernel is None:
            self.kernel = _kernels().get(self.a.spec)
        return self.kernel

    def run(self, x, h, c, y, *, reverse=False, run=None, emit=None, last=None):
        """Run over x (T, B, F), carrying the state h (B, H_out) and c (B, H) in place; y (T, B, H_out) gets
        the outputs (every element). With ``run``/``emit`` (T, B, 1) booleans (forward's masks), ``last``
        (B, H_out), the last output of each row (zeros for a fresh sequence), is carried in place too."""
        T, B = x.shape[0], self.B
        if B == 0 or T == 0:
            return
        a = self.a
        masked = run is not None
        fn = self._fn()
        hv = self.hv
        hv[self.par] = h
        if self.lstm:
            self.cbuf[self.par] = c
        if masked:
            self.last[...] = last
            run_u8 = np.ascontiguousarray(run[:, :, 0]).view(np.uint8)  # (T, B)
            emit_u8 = np.ascontiguousarray(emit[:, :, 0]).view(np.uint8)
        direct = y.flags.c_contiguous  # else a chunk buffer, copied out (a strided half of a bidirectional y)
        wanted, units = self._split(T, B)
        claimed = _threads.claim(wanted)
        nth = claimed
        if units and claimed < wanted:  # fewer threads than asked for: a plan for those
            nth, units = self._plan(claimed, B) if claimed > 1 else self._alone(B)
        try:
            # x: the kernel copies each step's rows from the caller's array (time-major or batch-first memory:
            # in parallel, and in cache for the product), else from xs, which is filled here chunk by chunk:
            # other layouts, and what needs the chunk's rows at once (the units split of a GRU, or few rows)
            src = _rows_of(x, self.dtype)
            fill = src is None or (units and (not self.fused or 2 * B < a.spec.mr))
            # scratch by time chunk: xs (the chunk's x with a feature of 1) and gi (its projection) where used,
            # a chunk of y when y is not contiguous; rnn and lstm on rows they copy themselves need neither
            staged = fill or not self.fused  # the chunk's x rows and projection have buffers
            per_step = (B * self.G * a.H if staged else 0) + (0 if direct else B * a.H_out)
            chunks = _loop.time_chunks(T, max(per_step, 1), reverse, min(_loop.CHUNK_ELEMENTS, _CHUNK_CAP))
            longest = max(chunks[0][1] - chunks[0][0], chunks[-1][1] - chunks[-1][0])  # the others are as long
            xs_buf, gi_buf, y_buf, accs = self._buffers(
                longest * B if staged else 1, 0 if direct else longest, nth, units
            )
            for t0, t1 in chunks:
                n = t1 - t0
                xs, gi = (xs_buf[: n * B], gi_buf[: n * B]) if staged else (xs_buf, gi_buf)
                if fill:
                    xs[:, : a.F].reshape(n, B, a.F)[...] = x[t0:t1]  # (n, B, F)
                    xin, dims = xs, self.dims
                else:
                    xin, dims = src[0], (a.H, a.H_out, a.F, 1, t0 * src[1], src[1], src[2])
                if staged:
                    xs[:, a.F] = 1
                ys = y[t0:t1] if direct else y_buf[:n]  # (n, B, H_out)
                io = (
                    xs,
                    xin,
                    gi,
                    ys,
                    run_u8[t0:t1] if masked else self.no_mask,
                    emit_u8[t0:t1] if masked else self.no_mask,
                    accs,
                )
                if not self._chunk(fn, nth, units, reverse, masked, dims, io):
                    nth, units = 1, 0  # the threads could not meet: this call goes on on one thread
                self.par = (self.par + n) % 2
                if not direct:
                    y[t0:t1] = ys
        finally:
            _threads.release(claimed)
        h[...] = hv[self.par]
        if self.lstm:
            c[...] = self.cbuf[self.par]
        if masked:
            last[...] = self.last

    def _buffers(self, rows, steps, nth, units):
        """A call's scratch: xs (rows, F+1), the chunk's x and 1; gi (rows, ...), its projection; a chunk of y
        (steps, B, H_out), None for 0 steps; accs, each thread's products. Up to OWN_BYTES, the Direction's own,
        kept for its next calls of the same shape (taking them from the thread's pool cost microseconds of a
        one-step call); larger, the calling thread's (see _scratch)."""
        key = (rows, steps, nth, units)
        kept = self._kept_bufs
        if kept is not None and kept[0] == key:
            return kept[1]
        shapes = (
            ("x", (rows, self.x_ld)),
            ("gi", (rows, self.gi_ld)),
            ("y", (steps, self.B, self.a.H_out)),
            ("acc", (nth, self._rows(nth, units), self.acc_cols)),
        )
        own = REUSE_SCRATCH and sum(math.prod(s) for _, s in shapes) * self.dtype.itemsize <= OWN_BYTES
        take = (
            (lambda _, shape: _empty(shape, self.dtype))
            if own
            else (lambda name, shape: _scratch(name, shape, self.dtype))
        )
        bufs = tuple(None if name == "y" and not steps else take(name, shape) for name, shape in shapes)
        if kept is not None:
            self.nbytes -= kept[2]
        self._kept_bufs = (key, bufs, sum(b.nbytes for b in bufs if b is not None)) if own else None
        if own:
            self.nbytes += self._kept_bufs[2]
        return bufs

    def _chunk(self, fn, nth, units, reverse, masked, dims, io):
        """One chunk on nth threads; False when the threads could not run at once (the chunk then ran on one)."""
        args = (self.ctl, units, reverse, masked, self.par, dims, self.W, self.S)
        if nth == 1:
            fn(0, 1, *args, io)
            return True
        k = _state["kernels"]
        self.ctl[:] = 0
        _threads.run(fn, nth, (*args, io))
        if not units or self.ctl[k.DECISION] != k.ABANDONED:
            return True
        # nothing was written: the chunk again on this thread (units split: acc[0] has room for every row)
        fn(0, 1, self.ctl, 0, reverse, masked, self.par, dims, self.W, self.S, (*io[:6], io[6][:1]))
        return False

    def _step_macs(self):
        """The multiply-adds of one step of the batch (what decides whether threads pay)."""
        a = self.a
        return self.B * self.G * a.H * (a.H_out + a.F + 1)

    def _rows(self, nth, units):
        """Rows of each thread's products: every row when the threads split the units (a chunk the threads
        could not meet for runs on one thread in the first's), else a share."""
        return self.B if units else -(-self.B // nth)

    def _split(self, T, B):
        """(threads wanted, the kernel's ``units``: 0 to split the rows, else :meth:`_plan`'s) for T steps."""
        per_step = self._step_macs()
        if T * per_step < CALL_PARALLEL_MIN:
            return self._alone(B)
        nth = _threads.get_num_threads()
        if nth == 1:
            return self._alone(B)
        rows = B >= nth * ROWS_PER_THREAD_MIN
        if rows and (B >= nth * ROWS_PER_THREAD_FULL or self._w_hh_bytes() <= _l2_bytes()):
            return nth, 0
        if T == 1 or per_step < PARALLEL_MIN or _cores_busy():
            return (nth, 0) if rows else self._alone(B)
        return self._plan(nth, B)

    def _alone(self, B):
        """(1, units) for a call on the calling thread: with fewer rows than MR/2 (batch 1, latency) units 1, so
        that the kernel projects the inputs of a chunk's steps at once (each weight of W_ih read once for the
        chunk, not once a step: on one core of a Zen 4, T 1000, 0.75x the time for an LSTM B1 H 256, 0.85x
        B2 H 512, 0.85x a GRU B1, 0.90x an rnn; ``python -m bench.plans``); else 0, each step's rows
        projected in the step."""
        return (1, 1) if 2 * B < self.a.spec.mr else (1, 0)

    def _plan(self, nth, B):
        """(threads, units) for threads that split the units, up to nth: ``units`` = U parts of the groups of
        units, each for threads // U parts of the rows; 0 for the rows alone.

        With at least as many groups of units (NR each) as threads: (nth, nth), each thread its groups for
        every row, as at batch 1. With fewer, that left threads with nothing to do (lstm-med's H 512 is 8
        groups of 64 float32 units: 8 of 16 threads). Then: U from 2 to the groups, the one whose busiest
        thread has the least to do, ceil(groups / U) x ceil(B / parts of the rows), the most parts of the
        groups (the smallest share of the weights each) among equals; rows projected a chunk ahead (fewer
        than MR/2) are not parted (a group a thread; one group: one thread); one group: the rows split.
        """
        ng = self.a.wpi.shape[0] // self.G
        if ng >= nth:
            return nth, nth
        if 2 * B < self.a.spec.mr:
            return (ng, ng) if ng > 1 else self._alone(B)
        if ng == 1:
            return min(nth, B), 0
        plans = []  # (the busiest thread's groups x rows, -U, threads, U)
        for u in range(2, ng + 1):
            parts = min(nth // u, B)
            plans.append((-(-ng // u) * -(-B // parts), -u, u * parts, u))
        _, _, threads, units = min(plans)
        return threads, units

    def _w_hh_bytes(self):
        """The bytes of the recurrent weights one step reads (every gate of every unit)."""
        return self.G * self.a.H * self.a.H_out * self.dtype.itemsize

    def step1(self, x, h, c, y):
        """One unmasked step: x (B, F); h, c updated in place; y (B, H_out) receives h.

        A stream's frame-by-frame call: the kernel's one-step call with buffers of its own, bound once,
        so a call is the copies of the state in and out and the kernel (the same kernel as :meth:`run`).
        Steps big enough share the step among threads that stay resident between back-to-back calls
        (see :meth:`_team`): a call then hands them its share by an atomic store.
        """
        if self.B == 0:
            return
        one = self._one
        if one is None:
            one = self._one = self._one_step()
        fn, xs, F, H_out, io = one
        xs[:, :F] = x
        self.hbuf[self.par, :, self.xo : self.xo + H_out] = h
        if self.lstm:
            self.cbuf[self.par] = c
        if not self._team(fn):
            fn(0, 1, self.ctl, 0, False, False, self.par, self.dims, self.W, self.S, io)
        self.par ^= 1
        self._ended = time.perf_counter()
        h[...] = io[3][0]
        if self.lstm:
            c[...] = self.cbuf[self.par]
        y[...] = h

    def _one_step(self):
        a, B, dtype = self.a, self.B, self.dtype
        nr = a.spec.nr
        xs = _empty((B, _ld(a.F + 1, dtype.itemsize)), dtype)
        xs[:, a.F] = 1  # the biases' input
        # the projection: GRU's every step; rnn and lstm only with rows few enough to be projected at once
        ahead = not self.fused or 2 * B < a.spec.mr
        gi = _empty((B if ahead else 1, _ld(a.wpi.shape[0] * nr, dtype.itemsize)), dtype)
        y1 = _empty((1, B, a.H_out), dtype)
        io = (xs, xs, gi, y1, self.no_mask, self.no_mask, _empty((1, B, self.acc_cols), dtype))
        self.nbytes += sum(b.nbytes for b in io[:4]) + io[6].nbytes
        return self._fn(), xs, a.F, a.H_out, io

    def _team(self, fn):
        """Run the bound step on a team of threads (True), or say it is better run on this thread (False).

        A team is worth it when the step is big enough to split (TEAM_STEP_MIN multiply-adds) and either the
        last step ended under TEAM_GAP s ago (calls back to back: the workers are still in their loop, or
        the first call wakes them and the next ones find them there) or the step alone pays for waking
        them (CALL_PARALLEL_MIN); not when the units would be split (a barrier a step) on a busy machine,
        nor while the workers wait in another team's loop: the layers of a stream take turns, and taking
        the workers from each other every step was no faster than one thread (2-layer LSTM B1 H512: 182-195
        vs 185-190 us a call); the first layer keeps the team (157-163 us). Results are the same bits
        whichever runs it.
        """
        B = self.B
        per_step = self._step_macs()
        if per_step < TEAM_STEP_MIN:
            return False
        nth = _threads.get_num_threads()
        if nth == 1:
            return False
        warm = time.perf_counter() - self._ended < TEAM_GAP  # calls back to back
        if not warm and per_step < CALL_PARALLEL_MIN:
            return False
        nth, units = self._plan(nth, B) if B < nth * ROWS_PER_THREAD_MIN else (nth, 0)
        if nth == 1 or units and _cores_busy_cached():
            return False
        if _held_elsewhere(self._teams.get(nth, (None,))[0]):
            return False  # the workers wait in another team's loop (a stream's other layer): taking them costs more
        claimed = _threads.claim(nth)
        try:
            if claimed < nth:
                return False
            team = self._teams.get(nth)
            if team is None:
                team = self._teams[nth] = self._make_team(nth, units)
            ctl, io = team
            k = _state["kernels"]
            ctl[: k.PAR] = 0
            ctl[k.PAR] = self.par
            common = (units, False, False)
            args = (ctl, *common, self.par, self.dims, self.W, self.S, io)
            resident = (ctl, *common, -1, self.dims, self.W, self.S, io)
            _threads.run_team(fn, nth, args, resident, ctl, _TEAM)
            if units and ctl[k.DECISION] == k.ABANDONED:
                return False  # the threads could not meet: nothing was written, this thread runs the step
            return True
        finally:
            _threads.release(claimed)

    def _make_team(self, nth, units):
        """(ctl, io) of a team of nth threads: its control array and the step's buffers with nth products."""
        _, xs, _, _, io = self._one
        rows = self._rows(nth, units)
        acc = _empty((nth, rows, self.acc_cols), self.dtype)
        ctl = np.zeros(_state["kernels"].control_size(nth), dtype=np.int64)
        self.nbytes += acc.nbytes + ctl.nbytes
        return ctl, (*io[:6], acc)


def _held_elsewhere(ctl):
    """Whether a worker waits in the loop of a team other than the one of ``ctl`` (None: no team yet)."""
    return _threads.resident_elsewhere(ctl, _TEAM)


class _Team:
    """The control-array protocol of resident workers (_numba_kernels._next_job), for _threads.run_team."""

    @staticmethod
    def post(ctl, k):
        return _state["kernels"].post_job(ctl, k)

    @staticmethod
    def wait(ctl, nth, spins):
        return _state["kernels"].wait_jobs(ctl, nth, spins)

    @staticmethod
    def arm(ctl, k):
        ctl[_slot(k)] = _state["kernels"].JOB

    @staticmethod
    def leave(ctl, k):
        ctl[_slot(k)] = _state["kernels"].AWAY

    @staticmethod
    def pending(ctl, k):
        return ctl[_slot(k)] == _state["kernels"].JOB

    @staticmethod
    def idle(ctl, k):
        return ctl[_slot(k)] == _state["kernels"].IDLE


def _slot(k):
    return _state["kernels"].SLOT0 + 8 * k


_TEAM = _Team()


# forward's Directions are kept beside frozen weights for later calls of the same batch size (making one took
# ~5 us of the ~40 a one-step call cost, and a one-step LSTM call at batch 32, H 512 spent more on its ~0.5 MB
# of fresh buffers than on the step): taken by a call (one caller at a time), given back after; at most
# POOL_KEEP idle per batch size and POOL_SIZES batch sizes, each holding at most POOL_BYTES or 1/POOL_SHARE of
# the layer direction's packed weights (so what waits idle stays under twice the weights' size, or 4 MiB)
POOL_BYTES = 1 << 18
POOL_SHARE = 8
POOL_KEEP = 2
POOL_SIZES = 8


class _Idle(dict):
    """Batch size -> forward's idle Directions of one layer direction; ``cap``: the most bytes one may hold;
    ``big``: batch sizes whose Directions held more (their one-step calls run as longer ones do: a stream's
    step on a Direction made anew each call would make its buffers and team anew too)."""

    def __init__(self, a):
        super().__init__()
        weights = a.wpi.nbytes + a.wp2.nbytes + (0 if a.wp1 is a.wpi else a.wp1.nbytes)
        self.cap = max(POOL_BYTES, weights // POOL_SHARE)
        self.big = set()


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """rnn_xp.loop.run_direction's contract (x (T, B, F), returns y (T, B, H_out), h_T, c_T), compiled."""
    if _load() is None:
        raise RuntimeError(f"impl='numba' cannot run: {_state['reason']}")
    T, B, _ = x.shape
    dtype = x.dtype
    a = arrange(w, cfg, acts, dtype)
    idle = _kept(w, ("idle", a.spec), lambda: _Idle(a))  # Directions a call may take (see POOL_BYTES)
    try:
        d, was_kept = idle[B].pop(), True
    except (KeyError, IndexError):
        d, was_kept = Direction(a, cfg, acts, dtype, B), False
    h = np.array(h0, dtype=dtype)  # copies: updated in place
    c = None if c0 is None else np.array(c0, dtype=dtype)
    y = _empty((T, B, h.shape[-1]), dtype) if out is None else out
    last = np.zeros((B, h.shape[-1]), dtype=dtype) if run is not None else None
    if T == 1 and run is None and was_kept and B not in idle.big:  # a stream's step (resident threads)
        d.step1(x[0], h, c, y[0])
    else:
        d.run(x, h, c, y, reverse=reverse, run=run, emit=emit, last=last)
    if d.nbytes > idle.cap:
        if len(idle.big) >= 4 * POOL_SIZES:
            idle.big.clear()
        idle.big.add(B)
        return y, h, c
    if B not in idle and len(idle) >= POOL_SIZES:
        idle.clear()  # batch sizes without end: start over rather than grow
    kept = idle.setdefault(B, [])
    if len(kept) < POOL_KEEP:
        kept.append(d)
    return y, h, c


def _example_args(spec):
    """Arguments of the kernel's types (tiny arrays): the signature every call of the spec compiles to."""
    dtype = np.dtype(spec.dtype)
    G = _load().GATES[spec.cell]
    G1 = 2 if spec.cell == 3 else G
    nr = spec.nr
    z = lambda *shape: np.zeros(shape, dtype=dtype)  # noqa: E731
    W = (
        z(G, 2, nr),
        z(G1, 1, nr),
        z(1 if spec.cell == 3 or spec.proj else 0, 1, nr),
        z(nr),
        z(3, nr),
        np.zeros((3, 3)),
        np.zeros(3, dtype=np.int64),
    )
    S = (z(2, 1, 16), z(2, 1, 1), z(2, 1, 16), z(1, 1))
    u8 = np.zeros((1, 1), dtype=np.uint8)
    io = (z(1, 16), z(1, 16), z(1, G * nr), z(1, 1, 1), u8, u8, z(1, 1, G1 * nr))
    dims = (1, 1, 1, 0, 0, 1, 1)
    return (0, 1, np.zeros(_load().CONTROL_SIZE, dtype=np.int64), 0, False, False, 0, dims, W, S, io)


def _rows_of(x, dtype):
    """x (T, B, F) as (rows, st, sb): a (T*B, F) C-contiguous view whose row t*st + b*sb is x[t, b] (time-major
    or batch-first memory), or None (another layout, dtype, read-only or unaligned memory: the caller copies
    it; the kernel is compiled for writable, aligned arrays, and any other type would compile it again)."""
    if x.dtype != dtype or not (x.flags.writeable and x.flags.aligned):
        return None
    T, B, F = x.shape
    if x.flags.c_contiguous:
        return x.reshape(T * B, F), B, 1
    xt = x.transpose(1, 0, 2)
    if xt.flags.c_contiguous:
        return xt.reshape(B * T, F), 1, T
    return None


def _empty(shape, dtype):
    """Every buffer comes from here (tests poison it with NaN to prove each element is written)."""
    return np.empty(shape, dtype=dtype)


REUSE_SCRATCH = True  # tests turn it off, so that every buffer is fresh (and poisoned)
OWN_BYTES = 1 << 16  # a Direction keeps a call's scratch up to this size (Direction._buffers)
_pool = threading.local()


def _scratch(name, shape, dtype):
    """A scratch buffer of the calling thread, kept for its later calls (grown when a call needs more).

    Fresh memory costs a page fault per 4 KiB on first touch: measured here (a 2-core VM) ~10 ms for the
    16 MB of scratch of a 6 ms call. Scratch is bounded by a time chunk (``loop.CHUNK_ELEMENTS``, at most
    1 Mi elements a buffer) and freed with the thread. What a call returns is never scratch.
    """
    if not REUSE_SCRATCH:
        return _empty(shape, dtype)
    bufs = getattr(_pool, "bufs", None)
    if bufs is None:
        bufs = _pool.bufs = {}
    size = math.prod(shape)
    key = (name, dtype)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = _empty((size,), dtype)
    return buf[:size].reshape(shape)


if __name__ == "__main__":  # a background build (rnn_xp._fast._build): compile one spec into numba's cache
    import json
    import sys

    compile_spec(spec_from_json(json.loads(sys.argv[1])))
