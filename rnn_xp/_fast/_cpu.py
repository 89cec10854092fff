"""What the compiled CPU engine needs to know about the processor, and the block sizes it derives from it.

The register tile and cache blocks of the matrix product (:mod:`rnn_xp._fast._numba_gemm`) follow the
analytical model of BLIS (Low et al., "Analytical Modeling Is Enough for High-Performance BLIS",
2016), reduced to the three facts that decide them here:

* the SIMD width (bytes in a vector register) and the register count: a tile of MR rows x V vectors
  holds MR*V accumulators, which with the V weight vectors of a step of k and a broadcast must fit
  the registers, with MR*V >= FMA latency x FMA units, so the chains hide the latency. With 32
  registers (AVX-512): 6 x 4 (24 + 4 + 1); of the shapes that fit, 4 vectors wide loads the fewest
  bytes per multiply-add: measured on Zen 4 (whole LSTM calls, one thread), 6 x 4 ran lstm-med in
  212 ms against 262 for 12 x 2 and 260 for 8 x 3. With 16 (AVX2, SSE): 6 x 2 (12 + 2 + 1), the
  shape BLIS's Haswell and Zen kernels use; 16 columns divide the usual hidden sizes (4 x 3's 24
  columns computed 72 for H 64, 8% slower there). 3 x 4 needs 17 (12 + 4 + 1): LLVM's code for it
  keeps one accumulator on the stack, a store, a load and four register moves a step of k (read in its
  assembly). One exception, measured: on Zen 4 (and Zen 5, which loads and stores more a cycle;
  :data:`WIDE_TILE_HOSTS`) 3 x 4 still ran 6-13% faster than the others; on Zen 1, which loads one
  256-bit vector a cycle (two 128-bit ports), it took 1.17-1.23x 6 x 2's time;
* the L1 data cache: a block of KC rows of a weight panel is reused by every row tile of the batch.
  BLIS keeps it in half of L1; on Zen 4 a block of twice L1 (KC = 256 at 4 vectors) ran 10-20%
  faster than half L1 (its L2 feeds the FMAs fast enough, and fewer blocks mean fewer partial sums
  stored and loaded), so KC x NR x itemsize = 2 x L1d, between 64 and 512;
* the L2 cache: many rows (an input projection over a time chunk) go in blocks of at most half of L2,
  so a block of rows stays there while every weight panel passes over it;
* nothing else: the weight panels stream from L2/L3 once per step, the state rows stay in L2.

Where the model is not the fastest choice on a CPU, ``rnn-xp tune`` (:mod:`rnn_xp._fast._tune`)
measures a few other tiles and k blocks on it and keeps the fastest in a small JSON file, by CPU
(:func:`tuning_file`); :func:`blocking` then uses it. Which one ran, and why, is in :func:`describe`.
Block sizes only change the speed: every element is the same chain of multiply-adds whatever they are.

Nothing here ever fails a call: a processor that cannot be read gets the safe defaults (16 registers,
32-byte vectors, a 32 KiB L1), a tuning file that cannot be read or holds nonsense is ignored, and
:func:`describe` says so (``rnn_xp.explain`` shows it).
"""

from __future__ import annotations

import json
import os
import platform
import stat
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CPU",
    "Blocking",
    "cpu",
    "analytical",
    "blocking",
    "describe",
    "tuning_file",
    "cpu_key",
    "load_tuning",
    "read_tuned",
]

DEFAULT_L1 = 32 << 10
DEFAULT_L2 = 1 << 20

# CPU names numba accepts (NUMBA_CPU_NAME, LLVM's names) whose vectors are 64 bytes wide (AVX-512F);
# other x86 names of the last decade have AVX2 (32 bytes); 'generic' and unknown names get 32 too
# (LLVM splits wider vectors where the target has none, so a wrong guess costs speed, never results).
_AVX512_NAMES = (
    "skylake-avx512",
    "cascadelake",
    "cooperlake",
    "cannonlake",
    "icelake-client",
    "icelake-server",
    "tigerlake",
    "rocketlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "graniterapids-d",
    "diamondrapids",
    "znver4",
    "znver5",
    "x86-64-v4",
    "knl",
    "knm",
)


# Hosts (LLVM's CPU names) where the 16-register tile is 3 x 4 despite the accumulator it keeps on the stack
# (see the module docstring): measured faster on Zen 4 with AVX2 code; Zen 5 loads and stores more a cycle.
WIDE_TILE_HOSTS = ("znver4", "znver5")


@dataclass(frozen=True)
class CPU:
    name: str  # the processor's model name, or the machine type where none can be read
    vector_bytes: int  # 64 (AVX-512), 32 (AVX2), 16 (SSE, NEON)
    registers: int  # vector registers
    l1d: int  # bytes of L1 data cache per core
    l2: int  # bytes of L2 per core
    source: str  # where the facts came from ('host', 'NUMBA_CPU_NAME=haswell', 'defaults: ...')
    host: str = ""  # LLVM's name of the host processor ('znver1', 'sapphirerapids'; '' if unknown)


@dataclass(frozen=True)
class Blocking:
    """The matrix product's block sizes for one dtype (all compile-time constants of the kernels)."""

    vector_bytes: int  # VB
    lanes: int  # elements in a vector
    v: int  # vectors per panel: a panel is NR = v * lanes output columns
    mr: int  # rows of a full register tile (MR x v accumulators)
    kc: int  # rows of k per L1 block
    accumulators: int  # the register budget for accumulators (wide tiles: rows x panels x v <= this)
    l2_half: int  # bytes of rows of A a row block may hold (half of L2): many rows go in such blocks
    source: str = "analytical"  # where mr, v, kc come from (see blocking())

    @property
    def nr(self) -> int:
        return self.v * self.lanes


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    try:
        return int(text.rstrip("KMGkmg")) * scale
    except ValueError:
        return 0


def _cache_size(level, kind):
    """Bytes of the cache of this level ('Data' or 'Unified') of cpu0, from sysconf or sysfs; 0 if unknown."""
    name = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE"}[level]
    try:
        size = os.sysconf(name)
        if size and size > 0:
            return int(size)
    except (ValueError, OSError, AttributeError):
        pass
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return 0
    for entry in entries:
        if _read_int(f"{base}/{entry}/level") == level:
            try:
                with open(f"{base}/{entry}/type") as f:
                    if f.read().strip() not in (kind, "Unified"):
                        continue
            except OSError:
                continue
            return _read_int(f"{base}/{entry}/size")
    return 0


def _model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model")):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _vector_bytes():
    """(bytes, source) of the vectors the compiled code targets: numba's CPU setting, else the host's."""
    named = os.environ.get("NUMBA_CPU_NAME", "").strip().lower()
    features = os.environ.get("NUMBA_CPU_FEATURES", "").strip().lower()
    if features:
        flags = {f[1:] for f in features.split(",") if f.startswith("+")}
        width = 64 if "avx512f" in flags else 32 if "avx2" in flags or "avx" in flags else 16
        return width, f"NUMBA_CPU_FEATURES={features}"
    if named and named != "host":
        return (64 if named in _AVX512_NAMES else 32), f"NUMBA_CPU_NAME={named}"
    try:
        import llvmlite.binding as llvm

        host = llvm.get_host_cpu_features()
        if host.get("avx512f", False):
            return 64, "host"
        if host.get("avx2", False) or host.get("avx", False):
            return 32, "host"
        return 16, "host"
    except Exception as e:  # noqa: BLE001 - llvmlite absent or the query failed: the safe default
        return 32, f"defaults (host features unreadable: {type(e).__name__})"


def _host_name():
    """LLVM's name of the host processor (the hardware, whatever NUMBA_CPU_NAME compiles for), or ''."""
    try:
        import llvmlite.binding as llvm

        name = llvm.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - llvmlite absent or the query failed: unknown
        return ""
    return name if isinstance(name, str) and name != "generic" else ""


@lru_cache(maxsize=1)
def cpu() -> CPU:
    """The processor the kernels are compiled for (read once per process)."""
    vb, source = _vector_bytes()
    l1, l2 = _cache_size(1, "Data"), _cache_size(2, "Unified")
    if not l1 or not l2:
        source += f"; cache sizes unreadable, assumed L1d {DEFAULT_L1 >> 10} KiB, L2 {DEFAULT_L2 >> 20} MiB"
    return CPU(
        name=_model_name(),
        vector_bytes=vb,
        registers=32 if vb == 64 else 16,
        l1d=l1 or DEFAULT_L1,
        l2=l2 or DEFAULT_L2,
        source=source,
        host=_host_name(),
    )


def _check(mr, v, kc):
    """Why (mr, v, kc) are not block sizes the kernels take, or None."""
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (mr, v, kc)):
        return "expected three integers"
    if not (1 <= mr <= 16 and 1 <= v <= 4 and 1 <= kc <= 4096):
        return "expected 1 <= mr <= 16, 1 <= v <= 4, 1 <= kc <= 4096"
    return None


def _override():
    """RNN_XP_BLOCKING='mr,v,kc' (tuning experiments; any values give the same results, only the speed changes)."""
    text = os.environ.get("RNN_XP_BLOCKING", "").strip()
    if not text:
        return None
    try:
        mr, v, kc = (int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(
            f"RNN_XP_BLOCKING={text!r}; expected 'mr,v,kc', three positive integers, e.g. '12,2,256'"
        ) from None
    why = _check(mr, v, kc)
    if why is not None:
        raise ValueError(f"RNN_XP_BLOCKING={text!r}; {why}")
    return mr, v, kc


# --- the choices of rnn-xp tune, kept per CPU ---------------------------------------------------------------
TUNING_FILE_MAX = 1 << 20  # bytes: a bigger tuning file is not one rnn-xp wrote (it is ignored, unread)


def tuning_file():
    """Where ``rnn-xp tune`` keeps its choices: RNN_XP_TUNING_FILE, else rnn_xp/tuning.json in the user's
    cache folder (XDG_CACHE_HOME, else ~/.cache); None when RNN_XP_TUNING_FILE is 'off' (or no home)."""
    named = os.environ.get("RNN_XP_TUNING_FILE")
    if named is not None and named.strip():
        named = named.strip()
        return None if named.lower() in ("off", "none", "0") else Path(named).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base:
        home = os.path.expanduser("~")
        if home == "~":
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "rnn_xp" / "tuning.json"


def cpu_key(c=None) -> str:
    """What a tuned choice is kept under: the processor and what the kernels are compiled for on it."""
    c = cpu() if c is None else c
    return f"{c.name} | {c.vector_bytes * 8}-bit x {c.registers} | L1d {c.l1d >> 10} KiB | L2 {c.l2 >> 10} KiB"


def load_tuning(path):
    """(the tuning file's contents {"cpus": {key: entry}}, None), ({}, None) when it is absent, or ({}, the
    exception) when it cannot be read or is not a tuning file. Never raises."""
    try:
        return _load_tuning(path), None
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file (even JSON nested too deep)
        return {}, e


def _load_tuning(path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if not stat.S_ISREG(st.st_mode):  # a folder, or a pipe that would block the read
        raise ValueError("not a regular file")
    if st.st_size > TUNING_FILE_MAX:
        raise ValueError(f"{st.st_size} bytes, more than any tuning file rnn-xp writes ({TUNING_FILE_MAX})")
    with open(path, encoding="utf-8") as f:
        data = json.loads(f.read(TUNING_FILE_MAX + 1))
    if not isinstance(data, dict) or not isinstance(data.get("cpus", {}), dict):
        raise ValueError("not a tuning file (expected an object with 'cpus')")
    return data


def read_tuned(c=None):
    """(entry, None) with the entry ``rnn-xp tune`` saved for this CPU (its "mr", "v", "kc", "measured"...), or
    (None, why there is none to use). Never raises: a file that cannot be read or holds nonsense is ignored."""
    path = tuning_file()
    if path is None:
        return None, "tuning file off (RNN_XP_TUNING_FILE)"
    data, e = load_tuning(path)
    if e is not None:
        return None, f"tuning file {path} ignored ({type(e).__name__}: {str(e)[:200]}); fix: run `rnn-xp tune` again"
    entry = data.get("cpus", {}).get(cpu_key(c))
    if entry is None:
        return None, None
    if not isinstance(entry, dict):
        return None, f"tuning file {path} ignored (its entry for this CPU is not an object); fix: `rnn-xp tune`"
    why = _check(entry.get("mr"), entry.get("v"), entry.get("kc"))
    if why is not None:
        return None, f"tuning file {path} ignored (block sizes of this CPU: {why}); fix: `rnn-xp tune`"
    return entry, None


def analytical(itemsize: int) -> Blocking:
    """The model's block sizes for elements of ``itemsize`` bytes on this CPU (see the module docstring)."""
    c = cpu()
    if c.registers >= 32:
        mr, v = 6, 4
    elif c.host in WIDE_TILE_HOSTS:
        mr, v = 3, 4
    else:
        mr, v = 6, 2
    budget = 24 if c.registers >= 32 else 12  # accumulators of 32 or 16 registers (see the module docstring)
    kc = min(512, max(64, (2 * c.l1d) // (v * c.vector_bytes) // 8 * 8))  # a KC x NR block of weights: twice L1
    return Blocking(
        vector_bytes=c.vector_bytes,
        lanes=c.vector_bytes // itemsize,
        v=v,
        mr=mr,
        kc=kc,
        accumulators=budget,
        l2_half=c.l2 // 2,
    )


@lru_cache(maxsize=4)
def blocking(itemsize: int) -> Blocking:
    """The block sizes for elements of ``itemsize`` bytes on this CPU: RNN_XP_BLOCKING, else what
    ``rnn-xp tune`` measured and kept for this CPU, else the analytical choice."""
    b = analytical(itemsize)
    forced = _override()
    if forced is not None:
        mr, v, kc = forced
        return replace(b, mr=mr, v=v, kc=kc, source="RNN_XP_BLOCKING=" + os.environ["RNN_XP_BLOCKING"].strip())
    entry, why = read_tuned()
    if entry is not None:
        when = entry.get("measured")
        when = when[:40] if isinstance(when, str) else "undated"
        return replace(b, mr=entry["mr"], v=entry["v"], kc=entry["kc"], source=f"measured by rnn-xp tune ({when})")
    if why is None:
        return replace(b, source="analytical (`rnn-xp tune` measures others on this CPU)")
    return replace(b, source=f"analytical; {why}")


def describe(itemsize: int = 4) -> str:
    """One line for explain(): the CPU, its vectors and caches, and the block sizes chosen."""
    c, b = cpu(), blocking(itemsize)
    host = f" ({c.host})" if c.host else ""
    return (
        f"{c.name}{host}: {c.vector_bytes * 8}-bit vectors x {c.registers} registers, L1d {c.l1d >> 10} KiB, "
        f"L2 {c.l2 >> 10} KiB ({c.source}); tiles {b.mr} rows x {b.nr} columns, k blocks of {b.kc}, "
        f"row blocks of about {b.l2_half >> 10} KiB; block sizes {b.source}"
    )
