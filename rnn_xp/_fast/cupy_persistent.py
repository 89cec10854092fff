"""CuPy persistent path: one kernel launch runs the whole recurrence of a layer and direction.

The same loop as :func:`rnn_xp.loop.run_direction` (same signature, same results within
rounding): the input projection of a chunk of steps is one cuBLAS matmul, as in every path; then ONE
launch of a persistent kernel (``cupy_persistent.cu``) runs every step of the chunk. W_hh stays in
shared memory. Where all of it fits one SM, every block holds it and owns batch rows (a batch split:
h stays on chip, no grid barrier); otherwise it is split by hidden units over up to one block per SM,
and the blocks exchange h through L2 and meet at a grid-wide barrier once per step. Either replaces
the fused path's two or three launches per step (~50 us a step on an H200, measured) by a few
microseconds (bench/GPU_NOTES.md).

Covered: rnn, lstm without projection, gru with the reset after the recurrent matmul; every
elementwise activation, clip, peepholes, input_forget, biases or none; lengths and masks; float32 and
float64 (float16/bfloat16 reach the runner as float32: rnn_xp.forward computes half types in float32).
Everything else (the GRU's reset before the matmul, the LSTM's projection, other dtypes, an empty
batch or sequence, a W_hh slice that does not fit shared memory on the SMs there are, a step whose
recurrent matmul is large enough to be compute bound, where cuBLAS is the better tool) is declined
with the reason, and the seam runs the next implementation (cupy-fused).

CuPy is imported only when this runner is selected; kernels are compiled once per process and
device (CuPy caches them); buffers are local to each call. Verified on an NVIDIA H200 (2026-12-04:
bench/results/gpu-*); impl="auto" takes it for steps up to AUTO_MAX_STEP_FMAS multiply-adds.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _xp, registry
from ..loop import input_projection, time_chunks
from . import cupy_fused
from .cupy_kernels import ACT_KINDS, ACT_PREFIXES, PREAMBLE

__all__ = [
    "NAMESPACES",
    "run_direction",
    "unsupported",
    "unsuited",
    "describe",
    "declines",
    "plan",
    "Plan",
    "SOURCE",
    "KERNEL_NAMES",
    "PARAMS",
]

NAMESPACES = ("cupy",)

# The kernel text as CuPy compiles it: a forward declaration of CuPy's float16 (cupy_gates.cu names it),
# the activations of the fused path, then the persistent kernels. No host headers: NVRTC compiles it.
KERNEL_SOURCE = Path(__file__).with_name("cupy_persistent.cu").read_text()
SOURCE = "class float16;\n" + PREAMBLE + "\n" + KERNEL_SOURCE

CELLS = {name: s.num_gates for name, s in registry.CELLS.items()}  # cell -> gates G
DTYPES = {"float32": "f32", "float64": "f64"}
KERNEL_NAMES = tuple(f"rnnxp_persist_{cell}{m}_{d}" for d in DTYPES.values() for cell in CELLS for m in ("", "_masked"))

# The kernels' parameters in order: (name, kind); kind "ptr" (an array), "int" (int32), "uint"
# (uint32) or "F" (a scalar of the kernel's float type). The host emulation reads this list too.
PARAMS = (
    [(n, "ptr") for n in ("gi", "w_hh", "b_hh", "p", "hbuf", "cbuf", "last", "y", "run", "emit", "counter")]
    + [(n, "int") for n in ("Tc", "B", "H", "U", "S", "BT", "ldw", "ldh", "k0", "bsplit")]
    + [("bar_base", "uint")]
    + [(n, "int") for n in ("reverse", "has_bh", "has_p", "input_forget")]
    + [("clip", "F")]
    + [
        item
        for prefix in ACT_PREFIXES
        for item in ((f"{prefix}_kind", "int"), (f"{prefix}_alpha", "F"), (f"{prefix}_beta", "F"))
    ]
)

MAX_THREADS = 512  # RNNXP_PERSIST_MAX_THREADS in the .cu (__launch_bounds__)
# Above this many multiply-adds per step (B * G*H * H), the recurrent matmul is compute bound (lstm-large:
# 1.07e9) and cuBLAS inside the fused path beats the kernel's FFMA loop from shared memory: fall back.
MAX_STEP_FMAS = 1 << 28
# impl="auto" takes the persistent kernels up to this many: lstm-med's (B 64, H 512), the largest step
# measured to beat cupy-fused (an H200, 2026-12-04: 2.1x side by side, 3.1x in the benchmark, which runs
# each in its own process); larger ones run when asked for by name.
AUTO_MAX_STEP_FMAS = 1 << 26
# A cost model of one step in SM cycles, to choose the units per block (bench/GPU_NOTES.md): reading
# h (B*H elements) from L2 at ~64 B per cycle per SM, the FMAs at ~64 per cycle per SM (half of the 128
# lanes: operands come from shared memory), and the barrier (~1 us, plus a little per block).
_L2_BYTES_PER_CYCLE = 64
_FMAS_PER_CYCLE = 64
_BARRIER_CYCLES = 1800
_BARRIER_CYCLES_PER_BLOCK = 4

# How blocks are made resident together: "cooperative" (cuLaunchCooperativeKernel through CuPy's
# enable_cooperative_groups: the driver refuses a grid that cannot be resident), "plain" (an ordinary
# launch; the plan keeps every block within one SM's resources and the grid within the SM count), or
# "auto" (cooperative, plain where CuPy cannot build a cooperative module). RNN_XP_PERSISTENT_LAUNCH.
LAUNCH_MODES = ("auto", "cooperative", "plain")


@dataclass(frozen=True)
class Plan:
    """How one layer and direction is split: U units per block over NB blocks, S work items per
    (unit, row) pair, batch tiles of BT rows, ``threads`` per block, padded row lengths and the bytes
    of dynamic shared memory. ``bsplit``: the blocks split the batch instead (each owns BT rows and
    all U = H units, holds all of W_hh and keeps h on chip: no grid barrier)."""

    U: int
    NB: int
    S: int
    BT: int
    threads: int
    ldw: int
    ldh: int
    smem: int
    cycles: float  # the cost model's estimate of one step
    bsplit: bool = False


def _ceil(a, b):
    return -(-a // b)


def _smem(G, U, BT, S, ldw, ldh, itemsize, bsplit=False):
    return itemsize * (G * U * ldw + (2 if bsplit else 1) * BT * ldh + (U * BT * S * G if S > 1 else 0))


def _split(pairs, ldw, force):
    """Work items per (unit, row) pair: doubled while twice the items still fit one block's threads."""
    if "S" in force:
        return force["S"]
    S = 1
    while S < 32 and pairs * S * 2 <= MAX_THREADS and 8 * S <= ldw:
        S *= 2
    return S


def _ldh(ldw, S):
    """h's row length in shared memory: for S < 8 the rows that 8 consecutive lanes read as 16-byte
    vectors must fall in distinct banks, so the row length is 4*S words modulo 32."""
    if S >= 8:
        return ldw
    return ldw + (4 * S - ldw) % 32


def _parse_override(text):
    out = {}
    for item in (text or "").split(","):
        if item.strip():
            k, v = item.split("=")
            out[k.strip()] = int(v)
    return out


# Tests and tuning runs may force parts of the plan: {"U": .., "S": .., "BT": .., "threads": ..,
# "bsplit": 0 or 1}; forcing U means a unit split unless bsplit=1 is forced too.
# RNN_XP_PERSISTENT_PLAN="U=4,S=8" does the same from the environment.
PLAN_OVERRIDE: dict = {}
# A batch-split step: its FMAs, plus the block's own barriers and the gate inputs' L2 latency (cycles).
_BSPLIT_STEP_CYCLES = 400


def plan(B, H, G, itemsize, sms, smem_limit, override=None):
    """The cheapest Plan by the cost model that fits, or None. Pure Python: tested on the CPU."""
    force = dict(_parse_override(os.environ.get("RNN_XP_PERSISTENT_PLAN")), **PLAN_OVERRIDE, **(override or {}))
    if B < 1 or H < 1 or sms < 1:
        return None
    ldw = _ceil(H, 4) * 4
    bsplit = force.get("bsplit", 0 if "U" in force else 1)
    if bsplit:
        best = _batch_split_plan(B, H, G, itemsize, sms, smem_limit, ldw, force)
        if best is not None or "bsplit" in force:
            return best
    return _unit_split_plan(B, H, G, itemsize, sms, smem_limit, ldw, force)


def _batch_split_plan(B, H, G, itemsize, sms, smem_limit, ldw, force):
    """Every block holds all of W_hh and owns BT batch rows: the fewest rows a block that use at most
    every SM (one block per SM), or the forced BT; None where W_hh and two h tiles do not fit."""
    BT = min(force.get("BT", _ceil(B, sms)), B)
    NB = _ceil(B, BT)
    if NB > sms:
        return None
    S = _split(H * BT, ldw, force)
    ldh = _ldh(ldw, S)
    smem = _smem(G, H, BT, S, ldw, ldh, itemsize, bsplit=True)
    if smem > smem_limit:
        return None
    threads = force.get("threads", min(MAX_THREADS, _ceil(H * BT * S, 32) * 32))
    cycles = H * G * BT * ldw / _FMAS_PER_CYCLE + _BSPLIT_STEP_CYCLES
    return Plan(H, NB, S, BT, threads, ldw, ldh, smem, cycles, bsplit=True)


def _unit_split_plan(B, H, G, itemsize, sms, smem_limit, ldw, force):
    u_min = _ceil(H, sms)
    candidates = [force["U"]] if "U" in force else range(u_min, min(H, 8 * u_min) + 1)
    best = None
    for U in candidates:
        NB = _ceil(H, U)
        if NB > sms or U < 1:
            continue
        for BT in (
            [force["BT"]]
            if "BT" in force
            else sorted({B, *(b for b in (256, 128, 64, 32, 16, 8, 4, 2, 1) if b < B)}, reverse=True)
        ):
            BT = min(BT, B)
            pairs = U * BT
            S = _split(pairs, ldw, force)
            ldh = _ldh(ldw, S)
            smem = _smem(G, U, BT, S, ldw, ldh, itemsize)
            if smem > smem_limit:
                continue
            threads = force.get("threads", min(MAX_THREADS, _ceil(pairs * S, 32) * 32))
            tiles = _ceil(B, BT)
            cycles = (
                B * H * itemsize / _L2_BYTES_PER_CYCLE
                + U * G * B * ldw / _FMAS_PER_CYCLE
                + tiles * 100
                + _BARRIER_CYCLES
                + _BARRIER_CYCLES_PER_BLOCK * NB
            )
            p = Plan(U, NB, S, BT, threads, ldw, ldh, smem, cycles)
            if best is None or p.cycles < best.cycles:
                best = p
            break  # the largest batch tile that fits is the one to take for this U
    return best


def _cupy():
    import cupy

    return cupy


def _empty(cp, shape, dtype):
    """A buffer every element of which the kernel writes before it is read (tests poison it)."""
    return cp.empty(shape, dtype=dtype)


def _device(x):
    return x.device


def _device_id(x):
    return x.device.id


@functools.cache
def _device_limits_cached(cp, device_id):
    attrs = cp.cuda.Device(device_id).attributes
    return int(attrs["MultiProcessorCount"]), int(attrs["MaxSharedMemoryPerBlockOptin"])


def _limits(device):
    """(SM count, opt-in shared memory per block in bytes) of a CuPy device (the tests replace this)."""
    return _device_limits_cached(_cupy(), device.id)


# The launch mode each (device, kernel) ended with, for the tests and the benchmark logs.
launch_modes: dict = {}


@functools.cache
def _module(cp, device_id, cooperative):
    return cp.RawModule(code=SOURCE, options=("-std=c++17",), enable_cooperative_groups=cooperative)


@functools.cache
def _function(cp, device_id, name, smem_limit):
    """(kernel, launch mode) for `name` on the current device: cooperative where it builds (per LAUNCH)."""
    mode = os.environ.get("RNN_XP_PERSISTENT_LAUNCH", "auto")
    if mode not in LAUNCH_MODES:
        raise ValueError(f"RNN_XP_PERSISTENT_LAUNCH={mode!r}; expected one of {LAUNCH_MODES}")
    tries = {"auto": (True, False), "cooperative": (True,), "plain": (False,)}[mode]
    error = None
    for cooperative in tries:
        try:
            fn = _module(cp, device_id, cooperative).get_function(name)
            fn.max_dynamic_shared_size_bytes = smem_limit
        except Exception as e:  # noqa: BLE001 - CuPy's compile/link errors; the next mode may work
            error = e
            continue
        launch_modes[(device_id, name)] = "cooperative" if cooperative else "plain"
        return fn
    raise RuntimeError(f"rnn_xp: the persistent kernel {name} does not build here ({mode} launch): {error}")


def unsupported(call):
    """Why this path cannot run the call (the seam's question), or None."""
    if call.trace:
        return "per-step tracing is done by the reference loop"
    why = cupy_fused.cupy_problem()
    if why is not None:
        return why
    limits = _limits(call.device)
    has_w_hr = call.cfg.proj_size > 0
    for acts in call.cfg.activations:
        why = declines(call.steps, call.batch, call.dtype, call.cfg, acts, has_w_hr, limits)
        if why is not None:
            return why
    return None


def unsuited(call):
    """Why impl="auto" leaves a call these kernels can run to cupy-fused: a step larger than any measured
    to be faster here (AUTO_MAX_STEP_FMAS)."""
    H = call.cfg.hidden_size
    fmas = call.batch * CELLS[call.cfg.cell] * H * H
    if fmas > AUTO_MAX_STEP_FMAS:
        return (
            f"B*G*H*H = {fmas} multiply-adds a step, above {AUTO_MAX_STEP_FMAS}, the largest measured to run "
            "faster than cupy-fused (impl='cupy-persistent' runs it)"
        )
    return None


def describe(call):
    """What explain() says of this implementation for a call: how the plan splits the work."""
    p = plan(
        call.batch, call.cfg.hidden_size, CELLS[call.cfg.cell], np.dtype(call.dtype).itemsize, *_limits(call.device)
    )
    if p is None:
        return "no plan fits"
    if p.bsplit:
        how = f"batch split: {p.NB} blocks of {p.BT} batch row(s), each with all of W_hh and h on chip"
    else:
        how = f"unit split: {p.NB} blocks of {p.U} unit(s), h through L2, a grid barrier each step"
    return f"{how}; {p.threads} threads, {p.smem} B of shared memory a block"


def declines(T, B, dtype, cfg, acts, has_w_hr, limits=None):
    """Why the persistent kernels do not cover one direction of a call, or None (then the plan is usable)."""
    if dtype not in DTYPES:
        return f"dtype {dtype} (persistent kernels exist for {', '.join(DTYPES)})"
    if cfg.cell == "gru" and not cfg.reset_after:
        return "GRU with the reset before the recurrent matmul (a second grid barrier per step): fused path"
    if has_w_hr:
        return "LSTM with a projection (a second matmul per step): fused path"
    missing = [a.name for a in acts if a.name not in ACT_KINDS]
    if missing:
        return f"activation(s) {missing} have no kernel"
    if T == 0 or B == 0:
        return "no steps or an empty batch"
    H = cfg.hidden_size
    G = CELLS[cfg.cell]
    if B * G * H * H > MAX_STEP_FMAS:
        return f"B*G*H*H = {B * G * H * H} multiply-adds a step: compute bound, cuBLAS in the fused path does better"
    if limits is not None and plan(B, H, G, 4 if dtype == "float32" else 8, *limits) is None:
        return f"W_hh ({G * H}x{H}) does not fit the shared memory of {limits[0]} SMs of {limits[1]} bytes"
    return None


def _scalars(cfg, acts, w, ftype):
    """The kernel's scalar parameters that stay the same for every chunk."""
    out = {
        "has_bh": np.int32(w.b_hh is not None),
        "has_p": np.int32(w.p is not None),
        "input_forget": np.int32(bool(cfg.input_forget)),
        "clip": ftype(math.inf if cfg.clip is None else float(cfg.clip)),
    }
    for prefix in ACT_PREFIXES:
        out[f"{prefix}_kind"], out[f"{prefix}_alpha"], out[f"{prefix}_beta"] = np.int32(0), ftype(0), ftype(0)
    for prefix, act in zip(ACT_PREFIXES, acts, strict=False):
        out[f"{prefix}_kind"] = np.int32(ACT_KINDS[act.name])
        out[f"{prefix}_alpha"] = ftype(0.0 if act.alpha is None else act.alpha)
        out[f"{prefix}_beta"] = ftype(0.0 if act.beta is None else act.beta)
    return out


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """:func:`rnn_xp.loop.run_direction` with one persistent kernel launch per chunk (CuPy arrays; ``out`` is
    copied into).

    The seam asks :func:`unsupported` first; called directly on a direction the kernels do not cover,
    this raises ValueError with the reason (it never falls back on its own)."""
    cp = _cupy()
    limits = _limits(_device(x))
    why = declines(x.shape[0], x.shape[1], _xp.dtype_name(x.dtype), cfg, acts, w.w_hr is not None, limits)
    if why is not None:
        raise ValueError(
            f"cupy-persistent cannot run this direction: {why}. Fix: rnn_xp.forward(..., "
            "impl='auto') chooses an implementation that can"
        )
    with _device(x):
        pl = plan(x.shape[1], cfg.hidden_size, CELLS[cfg.cell], x.dtype.itemsize, *limits)
        return _run(cp, x, h0, c0, w, cfg, acts, reverse, run, emit, xp, pl, limits)


def _run(cp, x, h0, c0, w, cfg, acts, reverse, run, emit, xp, pl, limits):
    T, B, _ = x.shape
    H, dtype = cfg.hidden_size, x.dtype
    ftype = np.dtype(dtype).type
    masked = run is not None
    name = f"rnnxp_persist_{cfg.cell}{'_masked' if masked else ''}_{DTYPES[_xp.dtype_name(dtype)]}"
    fn = _function(cp, _device_id(x), name, limits[1])

    hbuf = _empty(cp, (2, B, H), dtype)  # h_{t-1} and h_t, alternating; the kernel writes all of one a step
    hbuf[0] = h0
    cbuf = None
    if c0 is not None:
        cbuf = _empty(cp, (B, H), dtype)  # the cell state, updated in place (c0 is the caller's)
        cbuf[...] = c0
    last = cp.zeros((B, H), dtype=dtype) if masked else None  # Keras: zero before any unmasked step
    y = _empty(cp, (T, B, H), dtype)
    counter = cp.zeros((1,), dtype=np.uint32)  # the grid barrier's, monotonic over the call's launches
    dummy_bool = cp.zeros((1,), dtype=np.bool_)
    w_hh = cp.ascontiguousarray(w.w_hh)
    args = dict(
        w_hh=w_hh,
        b_hh=w_hh if w.b_hh is None else cp.ascontiguousarray(w.b_hh),
        p=w_hh if w.p is None else cp.ascontiguousarray(w.p),
        hbuf=hbuf,
        cbuf=hbuf if cbuf is None else cbuf,
        last=hbuf if last is None else last,
        counter=counter,
        B=np.int32(B),
        H=np.int32(H),
        U=np.int32(pl.U),
        S=np.int32(pl.S),
        BT=np.int32(pl.BT),
        ldw=np.int32(pl.ldw),
        ldh=np.int32(pl.ldh),
        bsplit=np.int32(pl.bsplit),
        reverse=np.int32(bool(reverse)),
        **_scalars(cfg, acts, w, ftype),
    )
    k0, bar_base = 0, 0
    for t0, t1 in time_chunks(T, B * w.w_ih.shape[0], reverse):
        Tc = t1 - t0
        gi = cp.ascontiguousarray(input_projection(x[t0:t1, ...], w, xp))  # (Tc, B, G*H): one cuBLAS matmul
        args.update(
            gi=gi,
            y=y[t0:t1, ...],
            Tc=np.int32(Tc),
            k0=np.int32(k0),
            bar_base=np.uint32(bar_base),
            run=cp.ascontiguousarray(run[t0:t1, :, 0]) if masked else dummy_bool,
            emit=cp.ascontiguousarray(emit[t0:t1, :, 0]) if masked else dummy_bool,
        )
        fn((pl.NB,), (pl.threads,), tuple(args[n] for n, _ in PARAMS), shared_mem=pl.smem)
        k0 += Tc
        bar_base = (bar_base + pl.NB * (Tc - 1)) % (1 << 32)
    h = hbuf[k0 % 2].copy()
    return y, h, cbuf
