"""The CuPy fused kernels, checked without a GPU.

1. nvcc: each ElementwiseKernel body is wrapped into the translation unit CuPy would generate
   (headers, ``typedef <dtype> T``, the preamble, a ``__global__`` grid-stride loop binding the
   parameters) and compiled for sm_90 in float, double and half. With CuPy installed its own
   headers are used (its ``float16`` class); without, a small stand-in (``__half``).
2. The host: the same kernel text, compiled by g++ as a plain C++ loop, runs under the real
   runner (rnn_xp._fast.cupy_fused) with ``cupy`` replaced by a NumPy stand-in whose
   ElementwiseKernel compiles what it is given. This runs the kernels' math, indexing and
   masking and the runner's buffers, chunks and step order against the reference loop. It says
   nothing about CUDA's math library, CuPy's launch machinery or the GPU: tests/test_cupy_fused.py
   checks those on a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib
import importlib.util
import math
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from reference import reference_forward

import rnn_xp
from rnn_xp import _fast, _xp
from rnn_xp import activations as activations_module
from rnn_xp._fast import cupy_fused
from rnn_xp._fast.cupy_kernels import ACT_KINDS, KERNELS, PREAMBLE, parse_params

fw = importlib.import_module("rnn_xp.loop")  # the module (rnn_xp.forward is the function)
NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
SCALAR_CTYPES = {"int32": "int", "float64": "double"}


def _cupy_include():
    """CuPy's header folder, found without importing CuPy (which would probe for CUDA)."""
    spec = importlib.util.find_spec("cupy")
    if spec is None or not spec.submodule_search_locations:
        return None
    inc = Path(list(spec.submodule_search_locations)[0]) / "_core" / "include"
    return inc if (inc / "cupy" / "carray.cuh").is_file() else None


# What CuPy's headers provide to a kernel, reduced to what ElementwiseKernel bodies use.
_SHIM = r"""
#include <cuda_fp16.h>
#include <cstddef>
typedef __half float16;
template <typename T, int ndim, bool c_contiguous = false, bool use_32bit = false>
struct CArray {
  T* data_;
  __device__ T& operator[](ptrdiff_t k) const { return data_[k]; }
};
template <int ndim, bool use_32bit = false>
struct CIndexer {
  ptrdiff_t size_, index_;
  __device__ ptrdiff_t size() const { return size_; }
  __device__ void set(ptrdiff_t i) { index_ = i; }
  __device__ ptrdiff_t get() const { return index_; }
};
#define CUPY_FOR(i, n) \
  for (ptrdiff_t i = static_cast<ptrdiff_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<ptrdiff_t>(blockDim.x) * gridDim.x)
"""

_CUPY_HEADERS = "#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n#include <cupy/atomics.cuh>\n" \
                "#include <cupy/float16.cuh>\n"


def cuda_unit(ctype: str, headers: str) -> str:
    """One .cu file holding every kernel, each as CuPy's ElementwiseKernel code generator lays it out."""
    parts = [headers, f"typedef {ctype} T;", PREAMBLE]
    for spec in KERNELS.values():
        params, binds = [], []
        for is_out, plist in ((False, spec.in_params), (True, spec.out_params)):
            for raw, typ, name in parse_params(plist):
                elem = "T" if typ == "T" else typ
                if raw:
                    params.append(f"CArray<{elem}, 2> {name}")
                elif typ in SCALAR_CTYPES:
                    params.append(f"{SCALAR_CTYPES[typ]} {name}")
                else:
                    params.append(f"CArray<{elem}, 1, true, true> _raw_{name}")
                    const = "" if is_out else "const "
                    binds.append(f"{const}{elem} &{name} = _raw_{name}[_ind.get()];")
        params.append("CIndexer<1, true> _ind")
        parts.append(
            f'extern "C" __global__ void {spec.name}({", ".join(params)}) {{\n'
            "  CUPY_FOR(i, _ind.size()) {\n    _ind.set(i);\n    " + "\n    ".join(binds)
            + "\n" + spec.operation + "  ;\n  }\n}\n")
    return "\n".join(parts)


HEADER_MODES = ["shim", "cupy"]
CTYPES = {"float32": "float", "float64": "double", "float16": "float16"}


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (install the CUDA toolkit to compile-check kernels)")
@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize("dtype", list(CTYPES))
def test_kernels_compile_with_nvcc_for_sm90(tmp_path, dtype, mode):
    if mode == "cupy":
        inc = _cupy_include()
        if inc is None:
            pytest.skip("CuPy is not installed: its headers are unavailable (the shim variant still runs)")
        headers, include = _CUPY_HEADERS, ["-I", str(inc)]
    else:
        headers, include = _SHIM, []
    src = tmp_path / f"rnnxp_{dtype}.cu"
    src.write_text(cuda_unit(CTYPES[dtype], headers))
    # CuPy's headers include CCCL (thrust), which needs C++17 on CUDA 13; our own code keeps to C++11
    std = "c++17" if mode == "cupy" else "c++11"
    cmd = [NVCC, "-arch=sm_90", f"-std={std}", "--resource-usage", "-c", str(src), "-o", str(tmp_path / "k.o"),
           *include]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed:\n{log[-6000:]}"
    # every kernel made it into the object, without warnings, stack frame or register spills
    for spec in KERNELS.values():
        assert f"Compiling entry function '{spec.name}' for 'sm_90'" in log, f"{spec.name} missing:\n{log}"
    assert "warning" not in log.lower(), f"nvcc warnings:\n{log}"
    frames = [line.strip() for line in log.splitlines() if "stack frame" in line]
    assert len(frames) == len(KERNELS)
    assert all(f == "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" for f in frames), frames


# activations of a whole row of units (not elementwise): these run on the reference loop
ROW_FUNCTIONS = {"Softmax", "LogSoftmax", "Sparsemax"}


def test_every_elementwise_activation_has_a_kernel():
    """A new elementwise activation needs a kind in cupy_gates.cu (or it silently runs unfused)."""
    canonical = set(activations_module._SPEC)
    assert set(ACT_KINDS) <= canonical, f"kernels for unknown activations {sorted(set(ACT_KINDS) - canonical)}"
    assert canonical - set(ACT_KINDS) == ROW_FUNCTIONS & canonical, (
        f"no kernel for {sorted(canonical - set(ACT_KINDS) - ROW_FUNCTIONS)}: add it to cupy_gates.cu, or to "
        "ROW_FUNCTIONS if it is not elementwise")
    assert sorted(ACT_KINDS.values()) == list(range(len(ACT_KINDS)))  # distinct kinds, no gaps


def test_kernels_take_what_the_runner_passes():
    """The names every kernel declares are ones the runner fills (catches a renamed parameter on the CPU)."""
    passed = {"gi", "gh", "h", "c", "h_out", "c_out", "run", "emit", "last", "last_out", "y_out", "rh_out",
              "z_out", "z", "hp", "H", "clip", "b_hh", "has_bh", "p", "has_p", "input_forget"}
    passed |= {f"{p}_{k}" for p in ("af", "ag", "ah") for k in ("kind", "alpha", "beta")}
    for spec in KERNELS.values():
        assert set(spec.in_names + spec.out_names) <= passed, spec.name


# ---- the host stand-in for cupy ---------------------------------------------------------------------

_HOST_PRELUDE = """\
#include <math.h>
#include <stddef.h>
class float16;
#define __device__
#define __forceinline__ inline
"""


@functools.cache
def _host_build_dir():
    d = tempfile.mkdtemp(prefix="rnnxp_host_kernels_")
    atexit.register(shutil.rmtree, d, True)
    return Path(d)


@functools.cache
def _host_function(name, in_params, out_params, operation, preamble, ctype):
    """Compile one ElementwiseKernel as a host loop; returns (ctypes function, parsed params)."""
    params = [(False, *p) for p in parse_params(in_params)] + [(True, *p) for p in parse_params(out_params)]
    decls, binds = ["ptrdiff_t _n"], []
    for is_out, raw, typ, pname in params:
        if typ in SCALAR_CTYPES:
            decls.append(f"{SCALAR_CTYPES[typ]} {pname}")
        elif raw:
            decls.append(f"{typ} *{pname}")
        else:
            decls.append(f"{typ} *_raw_{pname}")
            binds.append(f"{'' if is_out else 'const '}{typ} &{pname} = _raw_{pname}[i];")
    src = (f"{_HOST_PRELUDE}typedef {ctype} T;\n{preamble}\n"
           f'extern "C" void {name}({", ".join(decls)}) {{\n'
           "  for (ptrdiff_t i = 0; i < _n; ++i) {\n    " + "\n    ".join(binds) + f"\n{operation}  ;\n  }}\n}}\n")
    d = _host_build_dir()
    stem = f"{name}_{ctype}"
    (d / f"{stem}.cpp").write_text(src)
    proc = subprocess.run([GXX, "-std=c++14", "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-Wno-unused",
                           "-o", str(d / f"{stem}.so"), str(d / f"{stem}.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, f"g++ failed on {name}:\n{proc.stderr[-4000:]}"
    fn = getattr(ctypes.CDLL(str(d / f"{stem}.so")), name)
    fn.argtypes = [ctypes.c_ssize_t] + [
        ctypes.c_int if t == "int32" else ctypes.c_double if t == "float64" else ctypes.c_void_p
        for _, _, t, _ in params]
    fn.restype = None
    return fn, params


class HostElementwiseKernel:
    """cupy.ElementwiseKernel for NumPy arrays: compiles the given text for the host and loops over it."""

    def __init__(self, in_params, out_params, operation, name, preamble=""):
        self.source = (name, in_params, out_params, operation, preamble)

    def __call__(self, *args):
        declared = parse_params(self.source[1]) + parse_params(self.source[2])
        assert len(args) == len(declared), f"{self.source[0]}: {len(args)} arguments for {len(declared)} parameters"
        t_arrays = [a for a, (_, typ, _) in zip(args, declared, strict=True) if typ == "T"]
        dtypes = {a.dtype for a in t_arrays}
        assert len(dtypes) == 1, f"{self.source[0]}: T arrays of several dtypes {dtypes}"
        dtype = dtypes.pop()
        ctype = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[dtype]
        fn, params = _host_function(*self.source, ctype)
        shape, keep, call = None, [], []
        for (is_out, raw, typ, pname), a in zip(params, args, strict=True):
            if typ in SCALAR_CTYPES:
                call.append(a)
                continue
            assert isinstance(a, np.ndarray), f"{pname}: {type(a).__name__}"
            assert a.dtype == (np.dtype(bool) if typ == "bool" else dtype), f"{pname}: dtype {a.dtype}"
            if raw:  # CuPy indexes a raw array by its logical C-order position, whatever its strides
                a = np.ascontiguousarray(a)
            else:  # the elementwise arrays of this runner all have the kernel's shape
                shape = a.shape if shape is None else shape
                assert a.shape == shape, f"{pname}: shape {a.shape}, kernel shape {shape}"
                if is_out:
                    assert a.flags.c_contiguous and a.flags.writeable, f"{pname}: output not writable in place"
                else:
                    a = np.ascontiguousarray(a)
            keep.append(a)
            call.append(a.ctypes.data)
        fn(math.prod(shape), *call)


def _host_cupy():
    mod = types.ModuleType("cupy_on_the_host")
    mod.ElementwiseKernel = HostElementwiseKernel
    mod.empty, mod.zeros, mod.full, mod.matmul, mod.nan = np.empty, np.zeros, np.full, np.matmul, np.nan
    return mod


HOST_CUPY = _host_cupy()


@pytest.fixture
def host_cupy(monkeypatch):
    """Run cupy_fused on NumPy arrays: kernels on the host, every buffer it allocates poisoned with NaN."""
    if GXX is None:
        pytest.skip("g++ is not on PATH: the kernels cannot be compiled for the host")
    allocated = []

    def poisoned(cp, shape, dtype):
        a = np.full(shape, np.nan, dtype=dtype)
        allocated.append(a)
        return a

    monkeypatch.setattr(cupy_fused, "_cupy", lambda: HOST_CUPY)
    monkeypatch.setattr(cupy_fused, "_device", lambda x: contextlib.nullcontext())
    monkeypatch.setattr(cupy_fused, "_empty", poisoned)
    return allocated


NP = _xp.as_namespace(np)

CASES = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("rnn", {"bias": False, "clip": 0.4}),
    ("lstm", {}),
    ("lstm", {"proj_size": 3}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    ("lstm", {"peepholes": True, "proj_size": 2, "bias": "single"}),
    ("gru", {}),
    ("gru", {"reset_after": False}),
    ("gru", {"reset_after": False, "bias": "single", "clip": 0.5}),
    ("gru", {"bias": False}),
]


def _direction_inputs(rng, cfg, params, B, T, dtype, with_c):
    w = params.layers[0][0]
    w = type(w)(**{n: a.astype(dtype) for n, a in w.items()})
    x = rng.standard_normal((T, B, cfg.input_size)).astype(dtype)
    h0 = rng.standard_normal((B, cfg.output_size)).astype(dtype)
    c0 = rng.standard_normal((B, cfg.hidden_size)).astype(dtype) if with_c else None
    return w, x, h0, c0


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("masking", ["none", "lengths", "mask"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_host_runner_matches_reference_direction(host_cupy, rng, cell, opts, reverse, masking, dtype, tol):
    """One layer and direction: the fused runner (kernels on the host) against forward.run_direction."""
    params = rnn_xp.init(cell, 3, 5, seed=11, dtype="float64", xp=np, **opts)
    cfg = params.config
    B, T = 4, 7  # odd sizes; every buffer NaN until written
    w, x, h0, c0 = _direction_inputs(rng, cfg, params, B, T, dtype, cell == "lstm")
    run = emit = None
    if masking == "lengths":
        run = emit = (np.arange(T)[:, None] < np.array([7, 0, 3, 5])[None, :])[:, :, None]
    elif masking == "mask":
        run = (rng.random((T, B)) > 0.35)[:, :, None]
        emit = np.ones_like(run)
    kw = dict(reverse=reverse, run=run, emit=emit, xp=NP)
    y, h, c = cupy_fused.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
    assert host_cupy, "the fused path allocated nothing: did it fall back to the reference?"
    ry, rh, rc = fw.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
    assert_close(y, ry, xp=NP, dtype=dtype, shape=(T, B, cfg.output_size), atol=tol, rtol=tol)
    assert_close(h, rh, xp=NP, dtype=dtype, shape=(B, cfg.output_size), atol=tol, rtol=tol)
    if cell == "lstm":
        assert_close(c, rc, xp=NP, dtype=dtype, shape=(B, cfg.hidden_size), atol=tol, rtol=tol)
    else:
        assert c is None
    assert not any(np.shares_memory(h, a) for a in (y, h0)), "h must be the caller's own array"


@pytest.mark.parametrize("name", sorted(activations_module._SPEC))
def test_host_every_activation(host_cupy, rng, name):
    """Each activation kind as f of an rnn and as g and h of an lstm, alpha/beta off their defaults."""
    fused = name not in ROW_FUNCTIONS
    assert (cupy_fused.unsupported(np.zeros((1, 1, 1)), None, [activations_module.resolve(name)]) is None) == fused
    for cell, acts in (("rnn", [name]), ("lstm", ["Sigmoid", "Tanh" if name == "Exponential" else name, name])):
        params = rnn_xp.init(cell, 3, 4, activations=acts, activation_alpha=[0.3, 0.3], activation_beta=[0.6, 0.6],
                             clip=3.0 if name == "Exponential" else None, seed=4, dtype="float64", xp=np)
        cfg = params.config
        w, x, h0, c0 = _direction_inputs(rng, cfg, params, 3, 5, "float64", cell == "lstm")
        x = x * 2.0  # reach both sides of every kink
        kw = dict(reverse=False, run=None, emit=None, xp=NP)
        got = cupy_fused.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
        ref = fw.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
        for g, r in zip(got, ref, strict=True):
            if r is not None:
                np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12, err_msg=f"{cell} {name}")
    assert bool(host_cupy) == fused, "fused kernels ran for a row function, or fell back for an elementwise one"


@pytest.fixture
def fused_on_numpy(host_cupy, monkeypatch):
    """forward(..., impl="cupy-fused") accepted for NumPy arrays, so the whole stack runs through the runner."""
    monkeypatch.setitem(_fast._IMPLS, "cupy-fused", (("numpy",), _fast._IMPLS["cupy-fused"][1]))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_host_forward_end_to_end(fused_on_numpy, rng, cell, monkeypatch):
    """Stacked, bidirectional, lengths + mask + initial state, tiny chunks: against the float64 loop reference."""
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 1)  # one step per input-projection chunk
    opts = {"proj_size": 2} if cell == "lstm" else {"reset_after": False} if cell == "gru" else {}
    params = rnn_xp.init(cell, 3, 4, num_layers=2, bidirectional=True, seed=1, dtype="float64", xp=np, **opts)
    cfg = params.config
    B, T = 5, 6
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, cfg.output_size))
    init = (h0, rng.standard_normal((4, B, 4))) if cell == "lstm" else h0
    lengths = np.array([6, 0, 3, 1, 5])
    mask = rng.random((B, T)) > 0.3
    for kw in ({}, {"lengths": lengths}, {"mask": mask, "zero_output_for_mask": True},
               {"lengths": lengths, "mask": mask}):
        y, state = rnn_xp.forward(x, params, init, impl="cupy-fused", **kw)
        ry, rh, rc = reference_forward(x, params, init, **kw)
        assert_close(y, ry, xp=NP, dtype="float64", shape=(B, T, 2 * cfg.output_size), atol=1e-10)
        h = state[0] if cell == "lstm" else state
        assert_close(h, rh, xp=NP, dtype="float64", shape=(4, B, cfg.output_size), atol=1e-10)
        if cell == "lstm":
            assert_close(state[1], rc, xp=NP, dtype="float64", shape=(4, B, 4), atol=1e-10)


def test_host_unsupported_configs_fall_back(host_cupy, rng, monkeypatch):
    """An activation without a kernel, and an empty batch, run on the reference loop (nothing allocated)."""
    params = rnn_xp.init("gru", 3, 4, seed=2, dtype="float64", xp=np)
    cfg = params.config
    w, x, h0, _ = _direction_inputs(rng, cfg, params, 2, 3, "float64", False)
    kw = dict(reverse=False, run=None, emit=None, xp=NP)
    monkeypatch.setattr(cupy_fused, "ACT_KINDS", {k: v for k, v in ACT_KINDS.items() if k != "Tanh"})
    assert "Tanh" in cupy_fused.unsupported(x, cfg, cfg.activations[0])
    y, h, _ = cupy_fused.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    ry, rh, _ = fw.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    np.testing.assert_array_equal(y, ry)
    assert host_cupy == []
    monkeypatch.setattr(cupy_fused, "ACT_KINDS", ACT_KINDS)
    assert cupy_fused.unsupported(x, cfg, cfg.activations[0]) is None
    assert "empty" in cupy_fused.unsupported(x[:, :0], cfg, cfg.activations[0])
    assert "empty" in cupy_fused.unsupported(x[:0], cfg, cfg.activations[0])


def test_seam_prefers_the_fused_runner_for_cupy(host_cupy):
    """impl='auto' on a namespace named cupy picks cupy-fused when it loads, the reference when it does not."""
    fake_cupy = types.SimpleNamespace(__name__="cupy")
    cfg = rnn_xp.init("rnn", 2, 3, xp=np).config
    assert _fast._AUTO["cupy"][0] == "cupy-fused"
    assert "cupy-fused" in rnn_xp.implementations(fake_cupy)
    assert "cupy-fused" not in rnn_xp.implementations(np)
    assert _fast.select_runner(fake_cupy, cfg) is cupy_fused.run_direction
    assert _fast.select_runner(fake_cupy, cfg, "cupy-fused") is cupy_fused.run_direction
    with pytest.raises(ValueError, match="runs on"):
        _fast.select_runner(NP, cfg, "cupy-fused")


def test_seam_without_cupy_falls_back(monkeypatch):
    cfg = rnn_xp.init("rnn", 2, 3, xp=np).config

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(cupy_fused, "_cupy", no_cupy)
    fake_cupy = types.SimpleNamespace(__name__="cupy")
    assert _fast.select_runner(fake_cupy, cfg) is fw.run_direction
    with pytest.raises(ValueError, match="not usable"):
        _fast.select_runner(fake_cupy, cfg, "cupy-fused")


def test_import_does_not_import_cupy():
    """rnn_xp and the fused runner's module import without touching cupy (it loads when selected)."""
    code = ("import sys, rnn_xp, rnn_xp._fast.cupy_fused, rnn_xp._fast.cupy_kernels; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_host_stand_in_catches_a_wrong_kernel(host_cupy, rng, monkeypatch):
    """The harness can fail: a kernel body with the GRU's z and r swapped disagrees with the reference."""
    from rnn_xp._fast import cupy_kernels

    spec = cupy_kernels.KERNELS["gru"]
    broken = spec.operation.replace("gx(0) + gr(0)", "SWAP").replace("gx(1) + gr(1)", "gx(0) + gr(0)") \
        .replace("SWAP", "gx(1) + gr(1)")
    assert broken != spec.operation
    monkeypatch.setitem(cupy_kernels.KERNELS, "gru", cupy_kernels.KernelSpec(spec.name + "_broken", spec.in_params,
                                                                              spec.out_params, broken))
    params = rnn_xp.init("gru", 3, 4, seed=2, dtype="float64", xp=np)
    cfg = params.config
    w, x, h0, _ = _direction_inputs(rng, cfg, params, 2, 3, "float64", False)
    kw = dict(reverse=False, run=None, emit=None, xp=NP)
    y, _, _ = cupy_fused.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    ry, _, _ = fw.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    assert np.abs(y - ry).max() > 1e-3
