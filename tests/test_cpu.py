"""The CPU the compiled engine meets: its probing never fails a call, and no block size changes a result.

The kernels' block sizes come from the CPU (SIMD width, registers, L1): a Xeon, an EPYC and an
AVX2-only machine compile different tiles. Every element is still the same chain of multiply-adds,
so the results are bit-identical whatever tiles and vector width ran them (checked here with other
block sizes, RNN_XP_BLOCKING, and with AVX2 code, NUMBA_CPU_NAME=haswell, in child processes).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnn_xp
from rnn_xp._fast import _cpu

pytest.importorskip("numba")

CHILD = """
import json, sys
import numpy as np
import rnn_xp
from rnn_xp._fast import _cpu
out = {"cpu": _cpu.cpu().__dict__, "blocking": _cpu.blocking(4).__dict__, "results": {}}
for cell, opts in [("lstm", {}), ("gru", {"reset_after": False})]:
    params = rnn_xp.init(cell, 7, 45, seed=1, **opts)
    for B in (1, 5, 29):
        x = np.random.default_rng(B).standard_normal((B, 13, 7)).astype(np.float32)
        y, _ = rnn_xp.forward(x, params, impl="numba")
        out["results"][f"{cell}-{B}"] = y.tobytes().hex()
out["explain"] = str(rnn_xp.explain(x, params))
print(json.dumps(out))
"""


def child(**env):
    full = dict(os.environ, RNN_XP_COMPILE="wait", **env)
    done = subprocess.run([sys.executable, "-c", CHILD], env=full, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def here():
    return child()


def test_the_cpu_is_read_and_the_blocking_derived_from_it(here):
    c, b = here["cpu"], here["blocking"]
    assert c["vector_bytes"] in (16, 32, 64) and c["registers"] in (16, 32)
    assert c["l1d"] >= 4096 and c["l2"] >= c["l1d"]
    assert b["mr"] * b["v"] <= b["accumulators"] and b["kc"] >= 32
    assert b["lanes"] * 4 == b["vector_bytes"]
    assert "tiles" in here["explain"] and "vectors" in here["explain"], here["explain"]


@pytest.mark.parametrize("blocking", ["6,2,64", "3,1,40", "16,2,512"])
def test_other_block_sizes_give_the_same_bits(here, blocking):
    other = child(RNN_XP_BLOCKING=blocking)
    assert other["blocking"]["mr"] == int(blocking.split(",")[0])
    assert other["results"] == here["results"]


def test_avx2_code_gives_the_same_bits(here):
    """NUMBA_CPU_NAME=haswell: 256-bit vectors, 16 registers, another register tile: the same numbers."""
    other = child(NUMBA_CPU_NAME="haswell")
    assert other["cpu"]["vector_bytes"] == 32 and other["cpu"]["registers"] == 16
    assert other["cpu"]["host"] == here["cpu"]["host"]  # the hardware, not the code's target
    tile = (3, 4) if other["cpu"]["host"] in _cpu.WIDE_TILE_HOSTS else (6, 2)
    assert (other["blocking"]["mr"], other["blocking"]["v"]) == tile
    assert other["results"] == here["results"]


def test_an_unreadable_cpu_gets_safe_defaults_that_explain_states(monkeypatch):
    monkeypatch.setattr(_cpu, "_cache_size", lambda level, kind: 0)
    monkeypatch.setattr(_cpu, "_model_name", lambda: "unknown")
    _cpu.cpu.cache_clear()
    _cpu.blocking.cache_clear()
    try:
        c = _cpu.cpu()
        assert c.l1d == _cpu.DEFAULT_L1 and c.l2 == _cpu.DEFAULT_L2
        assert "cache sizes unreadable" in _cpu.describe()
    finally:
        _cpu.cpu.cache_clear()
        _cpu.blocking.cache_clear()


@pytest.mark.parametrize(
    "vector_bytes,host,tile,kc",
    [
        (64, "znver4", (6, 4), 256),  # 32 registers: the weight vectors, the broadcast and 24 accumulators
        (64, "sapphirerapids", (6, 4), 256),
        (32, "znver1", (6, 2), 512),  # 16 registers: 12 accumulators + 2 weight vectors + a broadcast
        (32, "haswell", (6, 2), 512),
        (32, "", (6, 2), 512),  # an unknown host: the tile that fits the registers
        (32, "znver4", (3, 4), 512),  # AVX2 code on a host whose loads feed FMAs from memory
        (16, "znver1", (6, 2), 512),
    ],
)
def test_the_analytical_tile_follows_the_registers_and_the_host(monkeypatch, vector_bytes, host, tile, kc):
    fake = _cpu.CPU("test", vector_bytes, 32 if vector_bytes == 64 else 16, 32 << 10, 1 << 20, "test", host)
    monkeypatch.setattr(_cpu, "cpu", lambda: fake)
    b = _cpu.analytical(4)
    assert (b.mr, b.v, b.kc) == (*tile, kc)
    assert b.mr * b.v <= b.accumulators
    if vector_bytes == 64 or host not in _cpu.WIDE_TILE_HOSTS:  # accumulators, weight vectors, a broadcast
        assert b.mr * b.v + b.v + 1 <= fake.registers


def test_the_host_is_the_hardware_whatever_numba_compiles_for(monkeypatch):
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    import llvmlite.binding as llvm

    assert _cpu._host_name() in (llvm.get_host_cpu_name(), "")
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: (_ for _ in ()).throw(RuntimeError("no")))
    assert _cpu._host_name() == ""  # a failed query: unknown, never an error


@pytest.mark.parametrize(
    "features,width", [("+avx512f,+avx2", 64), ("+avx2,+fma", 32), ("+sse4.2", 16), ("-avx512f,+avx", 32)]
)
def test_numba_cpu_features_decide_the_vector_width(monkeypatch, features, width):
    monkeypatch.setenv("NUMBA_CPU_FEATURES", features)
    assert _cpu._vector_bytes()[0] == width


@pytest.mark.parametrize("name,width", [("haswell", 32), ("skylake-avx512", 64), ("znver4", 64), ("generic", 32)])
def test_numba_cpu_name_decides_the_vector_width(monkeypatch, name, width):
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.setenv("NUMBA_CPU_NAME", name)
    assert _cpu._vector_bytes()[0] == width


@pytest.mark.parametrize("text", ["12,2", "a,b,c", "0,2,64", "12,9,64"])
def test_a_bad_blocking_override_is_refused_with_the_fix(monkeypatch, text):
    monkeypatch.setenv("RNN_XP_BLOCKING", text)
    _cpu.blocking.cache_clear()
    try:
        with pytest.raises(ValueError, match="RNN_XP_BLOCKING"):
            _cpu.blocking(4)
    finally:
        _cpu.blocking.cache_clear()


def test_explain_names_the_kernel_and_the_cpu():
    params = rnn_xp.init("gru", 3, 4, seed=0)
    text = str(rnn_xp.explain(np.zeros((2, 5, 3), np.float32), params))
    assert text.splitlines()[0] == "implementation: numba", text
    assert "kernel gru (reset after) float32 (sigmoid, tanh)" in text and _cpu.cpu().name in text, text
