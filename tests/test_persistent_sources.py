"""The CuPy persistent kernels (rnn_xp/_fast/cupy_persistent.cu), checked without a GPU.

1. nvcc: the text CuPy's RawModule compiles (rnn_xp._fast.cupy_persistent.SOURCE) is compiled for
   sm_90 with ``--resource-usage``: every named kernel is there, no warning, no stack frame, no
   spill. The registers of each kernel are printed (``-s`` shows them).
2. The plan (units per block, split of the dot products, batch tiles, shared memory) for the
   reference configs on an H100's 132 SMs and 227 KiB, and its invariants.
3. A host emulation: the same kernel text compiled by g++ with a small header standing in for CUDA
   (``RNNXP_HOST_EMULATION``): every block is a group of host threads, ``__syncthreads`` a real
   barrier among them, the grid barrier the same atomic counter. The real runner
   (cupy_persistent.run_direction: chunks, buffers, parity, barrier targets) drives it on NumPy arrays
   against the reference loop, every buffer it allocates poisoned with NaN, on small odd sizes with
   plans forced to exercise every branch (several blocks, a last block with fewer units than U, split
   dot products S > 1, batch tiles, one thread per block and several).
   What it cannot see: CUDA's math library, the GPU's memory model (L1 vs L2, the fences), CuPy's
   argument passing and cooperative launch, timing. tests/test_cupy_persistent.py checks those on a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import rnn_xp
from rnn_xp import _xp, seam
from rnn_xp._fast import cupy_fused, cupy_persistent
from rnn_xp._fast.cupy_persistent import KERNEL_NAMES, PARAMS, SOURCE, plan
from rnn_xp.seam import Call

fw = importlib.import_module("rnn_xp.loop")
NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
NP = _xp.as_namespace(np)

# ---- 1. nvcc ---------------------------------------------------------------------------------------


@functools.cache
def _nvcc_log():
    d = Path(tempfile.mkdtemp(prefix="rnnxp_persist_nvcc_"))
    atexit.register(shutil.rmtree, d, True)
    (d / "persist.cu").write_text(SOURCE)
    cmd = [
        NVCC,
        "-arch=sm_90",
        "-std=c++17",
        "--resource-usage",
        "-c",
        str(d / "persist.cu"),
        "-o",
        str(d / "persist.o"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _resources(log):
    """kernel -> (registers, stack frame line) from ptxas's report."""
    out, name = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        elif name and "stack frame" in line:
            out[name] = [None, line.strip()]
        elif name and (m := re.search(r"Used (\d+) registers", line)):
            out[name][0] = int(m.group(1))
    return out


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (install the CUDA toolkit to compile-check kernels)")
def test_persistent_kernels_compile_with_nvcc_for_sm90():
    rc, log = _nvcc_log()
    assert rc == 0, f"nvcc failed:\n{log[-6000:]}"
    assert "warning" not in log.lower(), f"nvcc warnings:\n{log}"
    res = _resources(log)
    assert set(res) == set(KERNEL_NAMES), f"kernels: {sorted(res)}"
    for name in KERNEL_NAMES:
        regs, frame = res[name]
        print(f"{name}: {regs} registers, {frame}")
        assert frame == "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads", (name, frame)
        # __launch_bounds__(512): at most 128 registers; 512 threads of each block must fit one SM
        assert regs is not None and regs * cupy_persistent.MAX_THREADS <= 65536, (name, regs)


def test_source_is_self_contained():
    """NVRTC compiles the text as it is: no #include, no std::; the launch bound and parameters match Python's."""
    code = re.sub(r"//[^\n]*", "", SOURCE)  # without the comments
    assert "#include" not in code and "std::" not in code
    bound = re.search(r"#define RNNXP_PERSIST_MAX_THREADS (\d+)", code)
    assert bound and int(bound.group(1)) == cupy_persistent.MAX_THREADS
    for name in KERNEL_NAMES:
        assert re.search(rf"RNNXP_PERSIST_KERNEL\({name},", code), name

    def macro(name):
        m = re.search(rf"#define {name}(?:\(F\))?((?:[^\n]*\\\n)*[^\n]*)", code)
        return m.group(1).replace("\\\n", " ")

    params = macro("RNNXP_PERSIST_PARAMS").replace("RNNXP_ACT_PARAMS(F)", macro("RNNXP_ACT_PARAMS"))
    names = [decl.split()[-1].lstrip("*") for decl in params.split(",")]
    assert names == [n for n, _ in PARAMS]


# ---- 2. the plan -----------------------------------------------------------------------------------

H100 = (132, 232448)  # SMs, MaxSharedMemoryPerBlockOptin (227 KiB)
REFERENCE = {
    "keras-text": ("rnn", 64, 100),
    "gru-latency": ("gru", 1, 256),
    "lstm-med": ("lstm", 64, 512),
    "lstm-large": ("lstm", 256, 1024),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_plan_for_reference_configs(name):
    cell, B, H = REFERENCE[name]
    G = cupy_persistent.CELLS[cell]
    if B * G * H * H > cupy_persistent.MAX_STEP_FMAS:
        assert name == "lstm-large"  # compute bound: the fused path (cuBLAS) takes it
        return
    p = plan(B, H, G, 4, *H100)
    assert p is not None
    print(name, p)
    # keras-text's W_hh (40 KB) fits one SM: every block holds it and owns batch rows (no grid barrier);
    # the others' do not: the blocks split the units
    assert p.bsplit == (name == "keras-text")
    if p.bsplit:
        assert p.U == H and p.BT == 1 and p.NB == B
    else:
        assert p.NB <= H100[0] and p.NB * p.U >= H > (p.NB - 1) * p.U
    assert p.smem <= H100[1] and p.threads <= cupy_persistent.MAX_THREADS and p.threads % 32 == 0
    assert p.ldw % 4 == 0 and p.ldh % 4 == 0 and p.ldw >= H and p.ldh >= p.ldw


def test_plan_invariants_and_limits():
    for B in (1, 3, 64, 200):
        for H in (1, 5, 33, 100, 256):
            for G in (1, 3, 4):
                for sms, smem in ((132, 232448), (4, 48 * 1024), (1, 16 * 1024)):
                    p = plan(B, H, G, 8, sms, smem)
                    if p is None:
                        # nothing fits: even one unit per block over every SM, one batch row a tile
                        assert G * -(-H // sms) * 8 * (-(-H // 4) * 4) + 8 * (-(-H // 4) * 4) > smem * 0.5
                        continue
                    if p.bsplit:  # all units a block, the batch over the blocks
                        assert p.NB <= sms and p.U == H and (p.NB - 1) * p.BT < B <= p.NB * p.BT
                        assert p.smem >= 8 * (G * H * p.ldw + 2 * p.BT * p.ldh)
                    else:
                        assert p.NB <= sms and (p.NB - 1) * p.U < H <= p.NB * p.U
                        unit_only = plan(B, H, G, 8, sms, smem, override={"bsplit": 1})
                        assert unit_only is None  # a batch split is taken wherever one fits
                    assert 1 <= p.BT <= B and p.smem <= smem and p.S in (1, 2, 4, 8, 16, 32)
                    assert p.U * p.BT * p.S <= max(cupy_persistent.MAX_THREADS, p.U * p.BT)
                    if p.S < 8:
                        assert (p.ldh - 4 * p.S) % 32 == 0  # conflict-free 16-byte reads of h
    assert plan(4, 8, 1, 4, 2, 64, override={"U": 1}) is None  # 8 blocks for 2 SMs: refused
    assert plan(4, 8, 1, 4, 2, 1024, override={"bsplit": 1, "BT": 1}) is None  # 4 blocks for 2 SMs: refused
    # forcing U means a unit split; bsplit=0 too; a forced batch split that does not fit is None
    assert not plan(5, 7, 3, 8, 5, 48 * 1024, override={"U": 2}).bsplit
    assert not plan(5, 7, 3, 8, 5, 48 * 1024, override={"bsplit": 0}).bsplit
    assert plan(5, 7, 3, 8, 5, 48 * 1024).bsplit
    assert plan(2, 256, 3, 4, 132, 232448, override={"bsplit": 1}) is None


def test_declines_name_the_reason(monkeypatch):
    """Per direction (declines) and per call (unsupported, the seam's question): each reason names its cause."""

    def why(cell, dtype="float32", T=3, B=2, limits=H100, **opts):
        cfg = rnn_xp.init(cell, 4, 6, seed=0, xp=np, **opts).config
        return cupy_persistent.declines(T, B, dtype, cfg, cfg.activations[0], cfg.proj_size > 0, limits)

    assert why("rnn") is None and why("lstm", peepholes=True, clip=1.0) is None and why("gru") is None
    assert why("rnn", limits=None) is None  # without the device's limits: everything but the plan
    assert "reset" in why("gru", reset_after=False)
    assert "projection" in why("lstm", proj_size=2)
    assert "float16" in why("rnn", dtype="float16")
    assert "empty" in why("rnn", T=0) and "empty" in why("gru", B=0)
    assert "shared memory" in why("rnn", limits=(1, 64))
    monkeypatch.setattr(
        cupy_persistent, "ACT_KINDS", {k: v for k, v in cupy_persistent.ACT_KINDS.items() if k != "Tanh"}
    )
    assert "Tanh" in why("rnn")
    monkeypatch.undo()
    big = rnn_xp.init("lstm", 4, 1024, seed=0, xp=np).config
    assert "compute bound" in cupy_persistent.declines(2, 256, "float32", big, big.activations[0], False, H100)

    # the call: CuPy first, then the device's limits, then every direction
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: "CuPy does not import (ImportError: no cupy)")
    call = Call("cupy", rnn_xp.init("gru", 4, 6, bidirectional=True, xp=np).config, "float32", 3, 2)
    assert cupy_persistent.unsupported(call) == "CuPy does not import (ImportError: no cupy)"
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    monkeypatch.setattr(cupy_persistent, "_limits", lambda device: H100)
    assert cupy_persistent.unsupported(call) is None
    assert "tracing" in cupy_persistent.unsupported(Call("cupy", call.cfg, "float32", 3, 2, trace=True))
    proj = Call("cupy", rnn_xp.init("lstm", 4, 6, proj_size=2, xp=np).config, "float32", 3, 2)
    assert "projection" in cupy_persistent.unsupported(proj)
    monkeypatch.setattr(cupy_persistent, "_limits", lambda device: (1, 64))
    assert "shared memory" in cupy_persistent.unsupported(call)


def test_seam_reasons(monkeypatch):
    """auto takes cupy-persistent where it can run and the step is no larger than measured to win; else it
    records why and runs cupy-fused. impl='cupy-persistent' that cannot run raises its reason."""
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    monkeypatch.setattr(cupy_persistent, "_limits", lambda device: H100)
    gru = rnn_xp.init("gru", 4, 6, seed=0, xp=np).config
    choice = seam.select_runner(Call("cupy", gru, "float32", 3, 2), "cupy-persistent")
    assert choice == seam.Choice("cupy-persistent") and choice.runner is cupy_persistent.run_direction
    assert seam.select_runner(Call("cupy", gru, "float32", 3, 2)) == choice
    detail = seam.described(choice, Call("cupy", gru, "float32", 3, 2)).detail
    assert detail.startswith("batch split: 2 blocks of 1 batch row(s), each with all of W_hh and h on chip; ")
    # the reference configs: lstm-med (B*G*H*H = 2^26) is the largest auto step; B 65 is above it
    med = rnn_xp.init("lstm", 4, 512, seed=0, xp=np).config
    assert cupy_persistent.AUTO_MAX_STEP_FMAS == 64 * 4 * 512 * 512
    choice = seam.select_runner(Call("cupy", med, "float32", 3, 64))
    assert choice.implementation == "cupy-persistent"
    detail = seam.described(choice, Call("cupy", med, "float32", 3, 64)).detail
    unit = "unit split: 128 blocks of 4 unit(s), h through L2, a grid barrier each step; 512 threads, "
    assert detail == unit + "174080 B of shared memory a block"
    auto = seam.select_runner(Call("cupy", med, "float32", 3, 65))
    assert auto.implementation == "cupy-fused"
    assert auto.skipped == (
        (
            "cupy-persistent",
            "B*G*H*H = 68157440 multiply-adds a step, above 67108864, the largest measured to run faster than "
            "cupy-fused (impl='cupy-persistent' runs it)",
        ),
    )
    assert seam.select_runner(Call("cupy", med, "float32", 3, 65), "cupy-persistent").runner is not None
    before = rnn_xp.init("gru", 4, 6, reset_after=False, seed=0, xp=np).config
    with pytest.raises(ValueError, match=r"impl='cupy-persistent' cannot run this call: GRU with the reset before"):
        seam.select_runner(Call("cupy", before, "float32", 3, 2), "cupy-persistent")
    with pytest.raises(ValueError, match="runs on cupy, not on numpy"):
        seam.select_runner(Call("numpy", gru, "float32", 3, 2), "cupy-persistent")


# ---- 3. the host emulation -------------------------------------------------------------------------

_HOST_HEADER = r"""
#define RNNXP_HOST_EMULATION 1
#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <thread>
#include <vector>
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
struct rnnxp_dim3 { unsigned x, y, z; };
static thread_local rnnxp_dim3 threadIdx, blockIdx, blockDim, gridDim;
static thread_local void* rnnxp_host_smem;
static thread_local pthread_barrier_t* rnnxp_host_block_barrier;
inline void __syncthreads() { pthread_barrier_wait(rnnxp_host_block_barrier); }
template <typename F> inline F* rnnxp_shared() { return static_cast<F*>(rnnxp_host_smem); }
template <typename F> inline F rnnxp_load_cg(const F* p) { return *p; }
inline void rnnxp_grid_barrier(unsigned int* counter, unsigned int target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __atomic_fetch_add(counter, 1u, __ATOMIC_SEQ_CST);
    while (static_cast<int>(__atomic_load_n(counter, __ATOMIC_ACQUIRE) - target) < 0) sched_yield();
  }
  __syncthreads();
}
template <typename F> struct rnnxp_quad { F x, y, z, w; };
template <typename F> inline rnnxp_quad<F> rnnxp_ld4(const F* p) {
  rnnxp_quad<F> q = {p[0], p[1], p[2], p[3]};
  return q;
}

// one launch: nb blocks of nt host threads, each block with its shared memory and its barrier
template <typename Fn>
void rnnxp_host_launch(int nb, int nt, long long smem_bytes, Fn fn) {
  std::vector<pthread_barrier_t> barriers(nb);
  std::vector<std::vector<double> > smem(nb, std::vector<double>(smem_bytes / 8 + 2));
  for (int b = 0; b < nb; ++b) pthread_barrier_init(&barriers[b], 0, nt);
  std::vector<std::thread> threads;
  for (int b = 0; b < nb; ++b)
    for (int t = 0; t < nt; ++t)
      threads.emplace_back([&, b, t] {
        blockIdx.x = b; gridDim.x = nb; threadIdx.x = t; blockDim.x = nt;
        rnnxp_host_smem = smem[b].data();
        rnnxp_host_block_barrier = &barriers[b];
        fn();
      });
  for (auto& th : threads) th.join();
  for (int b = 0; b < nb; ++b) pthread_barrier_destroy(&barriers[b]);
}
"""

_PTR_TYPES = {
    "gi": "const F*",
    "w_hh": "const F*",
    "b_hh": "const F*",
    "p": "const F*",
    "run": "const bool*",
    "emit": "const bool*",
    "counter": "unsigned int*",
}
_SCALAR_TYPES = {"int": "int", "uint": "unsigned int", "F": "F"}


def _launchers():
    out = []
    for name in KERNEL_NAMES:
        ftype = "float" if name.endswith("_f32") else "double"
        decl = ", ".join(
            f"void* {n}" if k == "ptr" else f"{_SCALAR_TYPES[k].replace('F', ftype)} {n}" for n, k in PARAMS
        )
        call = ", ".join(f"({_PTR_TYPES.get(n, 'F*').replace('F', ftype)}){n}" if k == "ptr" else n for n, k in PARAMS)
        out.append(
            f'extern "C" void host_{name}(int nb, int nt, long long smem, {decl}) {{\n'
            f"  rnnxp_host_launch(nb, nt, smem, [&] {{ {name}({call}); }});\n}}\n"
        )
    return "\n".join(out)


@functools.cache
def _host_library():
    d = Path(tempfile.mkdtemp(prefix="rnnxp_persist_host_"))
    atexit.register(shutil.rmtree, d, True)
    (d / "persist.cpp").write_text(_HOST_HEADER + SOURCE + "\n" + _launchers())
    proc = subprocess.run(
        [
            GXX,
            "-std=c++17",
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
            "-Wall",
            "-Werror",
            "-Wno-unused",
            "-Wno-unknown-pragmas",
            "-o",
            str(d / "persist.so"),
            str(d / "persist.cpp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"g++ failed:\n{proc.stderr[-6000:]}"
    return ctypes.CDLL(str(d / "persist.so"))


class HostKernel:
    """A persistent kernel on the host, called as CuPy calls a RawModule function."""

    def __init__(self, name):
        self.name = name
        self.fn = getattr(_host_library(), f"host_{name}")
        fct = ctypes.c_float if name.endswith("_f32") else ctypes.c_double
        ctypes_of = {"ptr": ctypes.c_void_p, "int": ctypes.c_int, "uint": ctypes.c_uint, "F": fct}
        self.fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong] + [ctypes_of[k] for _, k in PARAMS]
        self.fn.restype = None
        self.max_dynamic_shared_size_bytes = 0
        self.launches = []

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(PARAMS)
        assert shared_mem <= self.max_dynamic_shared_size_bytes
        fdtype = np.dtype(np.float32 if self.name.endswith("_f32") else np.float64)
        call = []
        for (pname, kind), a in zip(PARAMS, args, strict=True):
            if kind == "ptr":
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, pname
                call.append(a.ctypes.data)
            else:  # CuPy passes a scalar by its NumPy type: it must be the kernel's exact type
                want = {"int": np.int32, "uint": np.uint32, "F": fdtype.type}[kind]
                assert type(a) is want, f"{pname}: {type(a).__name__}, kernel takes {want.__name__}"
                call.append(a.item())
        self.launches.append((grid, block, shared_mem))
        self.fn(grid[0], block[0], shared_mem, *call)


def _host_cupy():
    mod = types.ModuleType("cupy_on_the_host")
    mod.empty, mod.zeros, mod.full, mod.ascontiguousarray = np.empty, np.zeros, np.full, np.ascontiguousarray
    mod.matmul, mod.nan = np.matmul, np.nan
    return mod


@pytest.fixture
def host_persistent(monkeypatch):
    """cupy_persistent on NumPy arrays: kernels emulated on the host, every buffer it allocates NaN."""
    if GXX is None:
        pytest.skip("g++ is not on PATH: the kernels cannot be compiled for the host")
    state = types.SimpleNamespace(allocated=[], kernels={}, limits=(5, 48 * 1024))

    def poisoned(cp, shape, dtype):
        a = np.full(shape, np.nan, dtype=dtype)
        state.allocated.append(a)
        return a

    def function(cp, device_id, name, smem_limit):
        k = state.kernels.setdefault(name, HostKernel(name))
        k.max_dynamic_shared_size_bytes = smem_limit
        return k

    monkeypatch.setattr(cupy_persistent, "_cupy", lambda: _host_cupy())
    monkeypatch.setattr(cupy_persistent, "_device", lambda x: contextlib.nullcontext())
    monkeypatch.setattr(cupy_persistent, "_device_id", lambda x: 0)
    monkeypatch.setattr(cupy_persistent, "_limits", lambda device: state.limits)
    monkeypatch.setattr(cupy_persistent, "_empty", poisoned)
    monkeypatch.setattr(cupy_persistent, "_function", function)
    monkeypatch.setattr(cupy_persistent, "PLAN_OVERRIDE", {})
    return state


CASES = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("rnn", {"bias": False, "clip": 0.4}),
    ("lstm", {}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    (
        "lstm",
        {
            "bias": False,
            "activations": ["HardSigmoid", "Softsign", "Elu"],
            "activation_alpha": [0.3, 0.9],
            "activation_beta": [0.4],
        },
    ),
    ("gru", {}),
    ("gru", {"bias": False, "clip": 0.5}),
    ("gru", {"activations": ["hard_sigmoid", "relu"], "bias": "single"}),
]

# forced plans (units per block, split, batch tile, threads per block) on H = 7, B = 5, 5 SMs
PLANS = [
    {"U": 2, "S": 1, "threads": 1},  # 4 blocks, the last with one unit of two; one thread
    {"U": 3, "S": 2, "BT": 2, "threads": 8},  # split dot products, batch tiles 2, 2, 1
    {"U": 7, "S": 4, "BT": 3, "threads": 32},  # one block; S lanes over a padded row of 8
    {"bsplit": 1, "BT": 2, "S": 2, "threads": 8},  # batch split: 3 blocks of rows 2, 2, 1, h kept on chip
    {"bsplit": 1, "BT": 5, "S": 1, "threads": 1},  # batch split: one block, one thread
    {},  # the cost model's own choice (a batch split: 5 blocks of one row)
]


def _inputs(rng, cfg, params, B, T, dtype, with_c):
    w = params.layers[0][0]
    w = type(w)(**{n: a.astype(dtype) for n, a in w.items()})
    x = rng.standard_normal((T, B, cfg.input_size)).astype(dtype)
    h0 = rng.standard_normal((B, cfg.output_size)).astype(dtype)
    c0 = rng.standard_normal((B, cfg.hidden_size)).astype(dtype) if with_c else None
    return w, x, h0, c0


def _masks(rng, masking, T, B):
    if masking == "lengths":
        run = (np.arange(T)[:, None] < np.array([T, 0, 3, 1, T - 2])[None, :B])[:, :, None]
        return run, run
    if masking == "mask":
        run = (rng.random((T, B)) > 0.35)[:, :, None]
        return run, np.ones_like(run)
    if masking == "mask-zero-output":
        run = (rng.random((T, B)) > 0.35)[:, :, None]
        return run, run
    return None, None


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 3e-6)])
@pytest.mark.parametrize("masking", ["none", "lengths", "mask", "mask-zero-output"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_host_emulation_matches_reference(host_persistent, rng, monkeypatch, cell, opts, reverse, masking, dtype, tol):
    """One layer and direction through the real runner, each forced plan, against forward.run_direction."""
    G = cupy_persistent.CELLS[cell]
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 3 * 5 * G * 7)  # chunks of 3 steps (B * G*H elements each): 3, 3, 1
    params = rnn_xp.init(cell, 3, 7, seed=11, dtype="float64", xp=np, **opts)
    cfg = params.config
    B, T = 5, 7
    w, x, h0, c0 = _inputs(rng, cfg, params, B, T, dtype, cell == "lstm")
    run, emit = _masks(rng, masking, T, B)
    kw = dict(reverse=reverse, run=run, emit=emit, xp=NP)
    ry, rh, rc = fw.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
    for forced in PLANS:
        monkeypatch.setattr(cupy_persistent, "PLAN_OVERRIDE", forced)
        host_persistent.kernels.clear()
        h0_before = h0.copy()
        y, h, c = cupy_persistent.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
        (kernel,) = host_persistent.kernels.values()  # it ran the kernel, no fallback
        assert len(kernel.launches) == 3  # one launch per chunk
        assert_close(y, ry, xp=NP, dtype=dtype, shape=(T, B, 7), atol=tol, rtol=tol)
        assert_close(h, rh, xp=NP, dtype=dtype, shape=(B, 7), atol=tol, rtol=tol)
        if cell == "lstm":
            assert_close(c, rc, xp=NP, dtype=dtype, shape=(B, 7), atol=tol, rtol=tol)
        else:
            assert c is None
        np.testing.assert_array_equal(h0, h0_before)  # the caller's state is never written
        assert not any(np.shares_memory(h, a) for a in (y, h0))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_host_emulation_forward_end_to_end(host_persistent, rng, monkeypatch, cell):
    """forward(..., impl='cupy-persistent'): stacked, bidirectional, lengths + mask + initial state."""
    monkeypatch.setattr(cupy_persistent, "NAMESPACES", ("numpy",))
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    from reference import reference_forward

    params = rnn_xp.init(cell, 3, 6, num_layers=2, bidirectional=True, seed=1, dtype="float64", xp=np)
    B, T = 5, 6
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, 6))
    init = (h0, rng.standard_normal((4, B, 6))) if cell == "lstm" else h0
    lengths = np.array([6, 0, 3, 1, 5])
    mask = rng.random((B, T)) > 0.3
    for kw in (
        {},
        {"lengths": lengths},
        {"mask": mask, "zero_output_for_mask": True},
        {"lengths": lengths, "mask": mask},
    ):
        y, state = rnn_xp.forward(x, params, init, impl="cupy-persistent", **kw)
        ry, rh, rc = reference_forward(x, params, init, **kw)
        assert_close(y, ry, xp=NP, dtype="float64", shape=(B, T, 12), atol=1e-10)
        h = state[0] if cell == "lstm" else state
        assert_close(h, rh, xp=NP, dtype="float64", shape=(4, B, 6), atol=1e-10)
        if cell == "lstm":
            assert_close(state[1], rc, xp=NP, dtype="float64", shape=(4, B, 6), atol=1e-10)
    assert host_persistent.kernels, "nothing ran on the persistent kernels"


def test_host_declined_configs_raise_and_auto_runs_fused(host_persistent, rng, monkeypatch):
    """The GRU with the reset before the matmul, and a W_hh that fits no SM: impl='cupy-persistent' raises the
    reason, the runner itself refuses (no fallback of its own, nothing launched), and impl='auto' runs
    cupy-fused (its kernels on the host here) with the reference's results."""
    import test_cuda_sources as fused_sources  # the fused path's host stand-in

    for mod in (cupy_persistent, cupy_fused):
        monkeypatch.setattr(mod, "NAMESPACES", ("numpy",))
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    monkeypatch.setattr(cupy_fused, "_cupy", lambda: fused_sources.HOST_CUPY)
    monkeypatch.setattr(cupy_fused, "_device", lambda x: contextlib.nullcontext())
    kw = dict(reverse=False, run=None, emit=None, xp=NP)
    for opts, limits, reason in (
        ({"reset_after": False}, (5, 48 * 1024), "reset before"),
        ({}, (1, 64), "shared memory"),
    ):
        host_persistent.limits = limits
        params = rnn_xp.init("gru", 3, 9, seed=2, dtype="float64", xp=np, **opts)
        cfg = params.config
        xb = rng.standard_normal((2, 3, 3))
        with pytest.raises(ValueError, match=f"impl='cupy-persistent' cannot run this call: .*{reason}"):
            rnn_xp.forward(xb, params, impl="cupy-persistent")
        w, x, h0, _ = _inputs(rng, cfg, params, 2, 3, "float64", False)
        with pytest.raises(ValueError, match=reason):
            cupy_persistent.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
        choice = rnn_xp.explain(xb, params)
        assert choice.implementation == "cupy-fused" and reason in dict(choice.skipped)["cupy-persistent"]
        y, h = rnn_xp.forward(xb, params)
        ry, rh = rnn_xp.forward(xb, params, impl="reference")
        np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h, rh, rtol=1e-12, atol=1e-12)
    assert not host_persistent.kernels and not host_persistent.allocated


def test_host_emulation_catches_a_wrong_kernel(host_persistent, rng, monkeypatch):
    """The harness can fail: a kernel that forgets to write part of h_t disagrees with the reference."""
    # h_t not written for batch row 0: the poisoned buffer shows it
    broken = SOURCE.replace("hout[e] = h_new;", "if (b) hout[e] = h_new;")
    assert broken != SOURCE
    monkeypatch.setattr(sys.modules[__name__], "SOURCE", broken)
    _host_library.cache_clear()
    try:
        monkeypatch.setattr(cupy_persistent, "PLAN_OVERRIDE", {"U": 2, "threads": 4})
        params = rnn_xp.init("rnn", 3, 5, seed=2, dtype="float64", xp=np)
        cfg = params.config
        w, x, h0, _ = _inputs(rng, cfg, params, 3, 4, "float64", False)
        kw = dict(reverse=False, run=None, emit=None, xp=NP)
        y, _, _ = cupy_persistent.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
        ry, _, _ = fw.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
        assert not np.all(np.isfinite(y)) or np.abs(y - ry).max() > 1e-3
    finally:
        monkeypatch.undo()
        _host_library.cache_clear()


def test_import_does_not_import_cupy():
    code = "import sys, rnn_xp._fast.cupy_persistent; assert 'cupy' not in sys.modules, 'cupy imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_registered_and_automatic():
    """Registered for CuPy, first in auto's order (verified on a GPU: bench/results/gpu-*)."""
    (entry,) = [i for i in seam.IMPLEMENTATIONS if i.name == "cupy-persistent"]
    assert entry.module == "cupy_persistent" and entry.auto is True
    assert seam.IMPLEMENTATIONS[0] is entry
    assert cupy_persistent.NAMESPACES == ("cupy",)
    assert "cupy-persistent" in seam.implementations() and "cupy-persistent" not in seam.implementations(np)
