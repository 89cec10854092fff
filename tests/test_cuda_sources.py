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
import re
import shutil
import subprocess
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from reference import reference_forward

import rnn_xp
from rnn_xp import _xp, seam
from rnn_xp import activations as activations_module
from rnn_xp._fast import cupy_fused
from rnn_xp._fast.cupy_kernels import ACT_KINDS, KERNELS, PREAMBLE, parse_params
from rnn_xp.seam import Call

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

_CUPY_HEADERS = (
    "#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n#include <cupy/atomics.cuh>\n"
    "#include <cupy/float16.cuh>\n"
)


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
            "  CUPY_FOR(i, _ind.size()) {\n    _ind.set(i);\n    "
            + "\n    ".join(binds)
            + "\n"
            + spec.operation
            + "  ;\n  }\n}\n"
        )
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
    cmd = [
        NVCC,
        "-arch=sm_90",
        f"-std={std}",
        "--resource-usage",
        "-c",
        str(src),
        "-o",
        str(tmp_path / "k.o"),
        *include,
    ]
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
        "ROW_FUNCTIONS if it is not elementwise"
    )
    assert sorted(ACT_KINDS.values()) == list(range(len(ACT_KINDS)))  # distinct kinds, no gaps


def test_kernels_take_what_the_runner_passes():
    """The names every kernel declares are ones the runner fills (catches a renamed parameter on the CPU)."""
    passed = {
        "gi",
        "gh",
        "h",
        "c",
        "h_out",
        "c_out",
        "run",
        "emit",
        "last",
        "last_out",
        "y_out",
        "rh_out",
        "z_out",
        "z",
        "hp",
        "H",
        "clip",
        "b_hh",
        "has_bh",
        "p",
        "has_p",
        "input_forget",
    }
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
    src = (
        f"{_HOST_PRELUDE}typedef {ctype} T;\n{preamble}\n"
        f'extern "C" void {name}({", ".join(decls)}) {{\n'
        "  for (ptrdiff_t i = 0; i < _n; ++i) {\n    " + "\n    ".join(binds) + f"\n{operation}  ;\n  }}\n}}\n"
    )
    d = _host_build_dir()
    # one file per source text: the loader keeps a library loaded by path, so a changed text needs a new one
    stem = f"{name}_{ctype}_{zlib.crc32(src.encode()):08x}"
    (d / f"{stem}.cpp").write_text(src)
    proc = subprocess.run(
        [
            GXX,
            "-std=c++14",
            "-O1",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Werror",
            "-Wno-unused",
            "-o",
            str(d / f"{stem}.so"),
            str(d / f"{stem}.cpp"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"g++ failed on {name}:\n{proc.stderr[-4000:]}"
    fn = getattr(ctypes.CDLL(str(d / f"{stem}.so")), name)
    fn.argtypes = [ctypes.c_ssize_t] + [
        ctypes.c_int if t == "int32" else ctypes.c_double if t == "float64" else ctypes.c_void_p
        for _, _, t, _ in params
    ]
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
    for cell, acts in (("rnn", [name]), ("lstm", ["Sigmoid", "Tanh" if name == "Exponential" else name, name])):
        params = rnn_xp.init(
            cell,
            3,
            4,
            activations=acts,
            activation_alpha=[0.3, 0.3],
            activation_beta=[0.6, 0.6],
            clip=3.0 if name == "Exponential" else None,
            seed=4,
            dtype="float64",
            xp=np,
        )
        cfg = params.config
        w, x, h0, c0 = _direction_inputs(rng, cfg, params, 3, 5, "float64", cell == "lstm")
        x = x * 2.0  # reach both sides of every kink
        kw = dict(reverse=False, run=None, emit=None, xp=NP)
        why = cupy_fused.declines(5, 3, "float64", cfg, cfg.activations[0])
        if not fused:  # a function of a whole row: declined with the reason, and the runner refuses it too
            assert why is not None and name in why and "no fused kernel" in why
            with pytest.raises(ValueError, match="no fused kernel"):
                cupy_fused.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
            continue
        assert why is None
        got = cupy_fused.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
        ref = fw.run_direction(x, h0, c0, w, cfg, cfg.activations[0], **kw)
        for g, r in zip(got, ref, strict=True):
            if r is not None:
                np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12, err_msg=f"{cell} {name}")
    assert bool(host_cupy) == fused, "fused kernels ran for a row function, or ran nothing for an elementwise one"


@pytest.fixture
def fused_on_numpy(host_cupy, monkeypatch):
    """The seam offers cupy-fused for NumPy arrays (kernels on the host), so the whole stack runs through it."""
    monkeypatch.setattr(cupy_fused, "NAMESPACES", ("numpy",))
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    return host_cupy


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
    for kw in (
        {},
        {"lengths": lengths},
        {"mask": mask, "zero_output_for_mask": True},
        {"lengths": lengths, "mask": mask},
    ):
        y, state = rnn_xp.forward(x, params, init, impl="cupy-fused", **kw)
        ry, rh, rc = reference_forward(x, params, init, **kw)
        assert_close(y, ry, xp=NP, dtype="float64", shape=(B, T, 2 * cfg.output_size), atol=1e-10)
        h = state[0] if cell == "lstm" else state
        assert_close(h, rh, xp=NP, dtype="float64", shape=(4, B, cfg.output_size), atol=1e-10)
        if cell == "lstm":
            assert_close(state[1], rc, xp=NP, dtype="float64", shape=(4, B, 4), atol=1e-10)


def _call(namespace="cupy", cell="rnn", dtype="float32", steps=3, batch=2, **kw):
    cfg = rnn_xp.init(cell, 2, 3, xp=np, **kw).config
    return Call(namespace=namespace, cfg=cfg, dtype=dtype, steps=steps, batch=batch)


def test_host_unsupported_configs_are_declined(fused_on_numpy, rng, monkeypatch):
    """An activation without a kernel: cupy-fused declines with the reason, auto takes the next implementation
    and records why, impl='cupy-fused' raises it, and the runner itself refuses (it never falls back)."""
    params = rnn_xp.init("gru", 3, 4, seed=2, dtype="float64", xp=np)
    cfg = params.config
    w, x, h0, _ = _direction_inputs(rng, cfg, params, 2, 3, "float64", False)
    xb = np.transpose(x, (1, 0, 2))  # (B, T, F) for forward
    assert cupy_fused.declines(3, 2, "float64", cfg, cfg.activations[0]) is None
    assert rnn_xp.explain(xb, params, impl="auto").implementation == "cupy-fused"
    monkeypatch.setattr(cupy_fused, "ACT_KINDS", {k: v for k, v in ACT_KINDS.items() if k != "Tanh"})
    assert "Tanh" in cupy_fused.declines(3, 2, "float64", cfg, cfg.activations[0])
    choice = rnn_xp.explain(xb, params)
    assert choice.implementation != "cupy-fused"
    assert "Tanh" in dict(choice.skipped)["cupy-fused"]
    with pytest.raises(ValueError, match="impl='cupy-fused' cannot run this call: .*Tanh"):
        rnn_xp.forward(xb, params, impl="cupy-fused")
    with pytest.raises(ValueError, match="Tanh"):
        cupy_fused.run_direction(x, h0, None, w, cfg, cfg.activations[0], reverse=False, run=None, emit=None, xp=NP)
    assert fused_on_numpy == [], "the runner allocated buffers for a direction it declines"
    y, _ = rnn_xp.forward(xb, params)  # auto runs it elsewhere, with the reference's results
    np.testing.assert_allclose(y, rnn_xp.forward(xb, params, impl="reference")[0], rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(cupy_fused, "ACT_KINDS", ACT_KINDS)
    for steps, batch in ((0, 2), (3, 0)):
        assert "empty" in cupy_fused.declines(steps, batch, "float64", cfg, cfg.activations[0])
    assert "dtype int32" in cupy_fused.declines(3, 2, "int32", cfg, cfg.activations[0])
    assert "tracing" in cupy_fused.unsupported(Call("numpy", cfg, "float64", 3, 2, trace=True))


def test_seam_chooses_the_fused_runner_for_cupy(monkeypatch):
    """impl='auto' on a call in the cupy namespace picks cupy-fused where CuPy is usable and cupy-persistent
    declines (the LSTM's projection) or would be slower (a step above AUTO_MAX_STEP_FMAS), saying why;
    impl='cupy-fused' gives the same runner."""
    from rnn_xp._fast import cupy_persistent

    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    monkeypatch.setattr(cupy_persistent, "_limits", lambda device: (132, 232448))
    assert seam.select_runner(_call()).implementation == "cupy-persistent"
    call = _call(cell="lstm", proj_size=2)
    choice = seam.select_runner(call)
    assert choice.implementation == "cupy-fused" and choice.runner is cupy_fused.run_direction
    assert "projection" in dict(choice.skipped)["cupy-persistent"]
    explicit = seam.select_runner(call, "cupy-fused")
    assert explicit == seam.Choice("cupy-fused") and explicit.runner is cupy_fused.run_direction
    assert "cupy-fused" in seam.implementations() and "cupy-fused" not in seam.implementations(np)
    assert "projection" in str(choice) and "implementation: cupy-fused" in str(choice)
    monkeypatch.setattr(cupy_persistent, "AUTO_MAX_STEP_FMAS", 2 * 3 * 3 - 1)  # B*G*H*H of _call() is 18
    choice = seam.select_runner(_call())
    assert choice.implementation == "cupy-fused"
    assert "18 multiply-adds a step, above 17" in dict(choice.skipped)["cupy-persistent"]
    assert seam.select_runner(_call(), "cupy-persistent").implementation == "cupy-persistent"


def test_seam_explicit_impl_that_cannot_run_raises_the_reason(monkeypatch):
    monkeypatch.setattr(cupy_fused, "cupy_problem", lambda: None)
    with pytest.raises(ValueError, match=r"impl='cupy-fused' cannot run this call: runs on cupy, not on numpy"):
        seam.select_runner(_call("numpy"), "cupy-fused")
    with pytest.raises(ValueError, match=r"cannot run this call: dtype int64 .*Fix: impl='auto'"):
        seam.select_runner(_call(dtype="int64"), "cupy-fused")
    with pytest.raises(ValueError, match="no steps or an empty batch"):
        seam.select_runner(_call(batch=0), "cupy-fused")
    with pytest.raises(ValueError, match="tracing"):
        seam.select_runner(Call("cupy", _call().cfg, "float32", 3, 2, trace=True), "cupy-fused")


def test_seam_without_cupy_skips_with_the_reason(monkeypatch):
    """CuPy that does not import: auto skips cupy-fused and records why; impl='cupy-fused' raises it."""

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(cupy_fused, "_cupy", no_cupy)
    assert cupy_fused.cupy_problem() == "CuPy does not import (ImportError: No module named 'cupy')"
    choice = seam.select_runner(_call())
    assert choice.implementation == "reference" and choice.runner is fw.run_direction
    assert dict(choice.skipped)["cupy-fused"] == "CuPy does not import (ImportError: No module named 'cupy')"
    assert dict(choice.skipped)["cupy-persistent"] == "CuPy does not import (ImportError: No module named 'cupy')"
    with pytest.raises(ValueError, match="CuPy does not import"):
        seam.select_runner(_call(), "cupy-fused")
    # a configuration the kernels do not cover is reported before CuPy is even tried
    monkeypatch.setattr(cupy_fused, "ACT_KINDS", {k: v for k, v in ACT_KINDS.items() if k != "Tanh"})
    assert "no fused kernel" in dict(seam.select_runner(_call()).skipped)["cupy-fused"]


def test_import_does_not_import_cupy():
    """rnn_xp and the fused runner's module import without touching cupy (it loads when selected)."""
    code = (
        "import sys, rnn_xp, rnn_xp._fast.cupy_fused, rnn_xp._fast.cupy_kernels; "
        "assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_host_stand_in_catches_a_wrong_kernel(host_cupy, rng, monkeypatch):
    """The harness can fail: a kernel body with the GRU's z and r swapped disagrees with the reference."""
    from rnn_xp._fast import cupy_kernels

    spec = cupy_kernels.KERNELS["gru"]
    broken = (
        spec.operation.replace("gx(0) + gr(0)", "SWAP")
        .replace("gx(1) + gr(1)", "gx(0) + gr(0)")
        .replace("SWAP", "gx(1) + gr(1)")
    )
    assert broken != spec.operation
    monkeypatch.setitem(
        cupy_kernels.KERNELS,
        "gru",
        cupy_kernels.KernelSpec(spec.name + "_broken", spec.in_params, spec.out_params, broken),
    )
    params = rnn_xp.init("gru", 3, 4, seed=2, dtype="float64", xp=np)
    cfg = params.config
    w, x, h0, _ = _direction_inputs(rng, cfg, params, 2, 3, "float64", False)
    kw = dict(reverse=False, run=None, emit=None, xp=NP)
    y, _, _ = cupy_fused.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    ry, _, _ = fw.run_direction(x, h0, None, w, cfg, cfg.activations[0], **kw)
    assert np.abs(y - ry).max() > 1e-3


# ---- float32 accuracy of the kernels' sigmoid ------------------------------------------------------

OLD_SIGMOID = "return F(0.5) * tanh(F(0.5) * x) + F(0.5);"


def _old_sigmoid_preamble():
    """The preamble with the sigmoid this project used before (0.5*tanh(x/2)+0.5): the tests below must fail it."""
    start = PREAMBLE.index("__device__ __forceinline__ F rnnxp_sigmoid(F x) {")
    end = PREAMBLE.index("}", start)
    return (
        PREAMBLE[:start] + "__device__ __forceinline__ F rnnxp_sigmoid(F x) {\n  " + OLD_SIGMOID + "\n" + PREAMBLE[end:]
    )


def ulp_errors(got, x):
    """Signed errors of a float32 sigmoid in units in the last place of the exact result (float64 reference)."""
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    return (got.astype(np.float64) - exact) / ulp


def sigmoid_inputs(rng):
    """Random float32 over the range that matters, every gate's usual range densely, and the edges."""
    edges = [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-8,
        -1e-8,
        15.0,
        -15.0,
        17.0,
        -17.0,
        30.0,
        -30.0,
        80.0,
        -80.0,
        87.0,
        -87.0,
        88.7,
        -88.7,
        100.0,
        -100.0,
        103.0,
        -103.0,
        110.0,
        -110.0,
        3e38,
        -3e38,
    ]
    return np.concatenate(
        [rng.uniform(-30, 30, 400_000), rng.uniform(-6, 6, 400_000), rng.uniform(-104, -30, 50_000), edges]
    ).astype(np.float32)


@pytest.fixture(scope="module")
def host_sigmoid():
    if GXX is None:
        pytest.skip("g++ is not on PATH: the kernels cannot be compiled for the host")

    def run(x, preamble=PREAMBLE):
        y = np.empty_like(x)
        HostElementwiseKernel("T x", "T y", "y = rnnxp_sigmoid(x);", "rnnxp_sigmoid_check", preamble=preamble)(x, y)
        return y

    return run


def test_host_sigmoid_float32_within_a_few_ulp_and_unbiased(host_sigmoid, rng):
    """The kernels' sigmoid in float (float32 storage, and the arithmetic of float16 storage): a few ULP at most,
    errors of both signs (mean near 0); the old 0.5*tanh(x/2)+0.5 fails both (hundreds of ULP, one-sided)."""
    x = sigmoid_inputs(rng)
    err = ulp_errors(host_sigmoid(x), x)
    print(
        f"float32 sigmoid on the host: max {np.abs(err).max():.2f} ULP, mean {err.mean():+.4f} ULP, "
        f"mean |err| {np.abs(err).mean():.3f} ULP"
    )
    # bound: exp (glibc: under 1 ULP), the add 1 + e and the division round once each; an error relative to
    # one operand counts up to twice in ULP of a result whose significand is near 2: (1 + 0.5 + 0.5) * 1.5 = 3
    assert np.abs(err).max() <= 3.0, f"max error {np.abs(err).max():.2f} ULP"
    assert abs(err.mean()) <= 0.02 and abs(err[x < 0].mean()) <= 0.03, f"biased: mean {err.mean():+.4f} ULP"
    old = ulp_errors(host_sigmoid(x, _old_sigmoid_preamble()), x)
    assert np.abs(old).max() > 100 and abs(old[(x < -2) & (x > -15)].mean()) > 1, "the check cannot tell the old form"
    # the special values: exact limits, NaN kept
    special = np.array([np.inf, -np.inf, np.nan, 0.0, 200.0, -200.0], dtype=np.float32)
    got = host_sigmoid(special)
    assert got[0] == 1.0 and got[1] == 0.0 and np.isnan(got[2]) and got[3] == 0.5 and got[4] == 1.0 and got[5] == 0.0


def test_host_sigmoid_float64(host_sigmoid, rng):
    """The same function in double: within a few ULP of a long-double computation."""
    x = sigmoid_inputs(rng).astype(np.float64) + rng.uniform(-1e-3, 1e-3, 850_026)
    got = host_sigmoid(x)
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        exact = np.longdouble(1) / (np.longdouble(1) + np.exp(-xl))
    err = (got.astype(np.longdouble) - exact) / np.spacing(exact.astype(np.float64)).astype(np.longdouble)
    err = err.astype(np.float64)
    assert np.finfo(np.longdouble).nmant > 52, "no extended precision here to check float64 against"
    assert np.abs(err).max() <= 3.0 and abs(err.mean()) <= 0.02, (np.abs(err).max(), err.mean())


def test_host_lstm_500_steps_float32_accuracy(fused_on_numpy, monkeypatch):
    """The fused kernels (on the host) on bench/accuracy.py's 500-step float32 LSTM (forget gates near 1): their
    error against float64 is at most RATIO times PyTorch's (CPU) on the same inputs; the old sigmoid is not."""
    torch = pytest.importorskip("torch")
    from bench import accuracy

    params, x, ref = accuracy.problem(seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; the result does not depend on it
    try:
        peer = accuracy.errors(accuracy.torch_outputs(params, x, "cpu"), ref)
    finally:
        torch.set_num_threads(threads)
    mine = accuracy.errors(accuracy.rnn_xp_outputs(params, x, np, "cupy-fused"), ref)
    ratio = accuracy.worst_ratio(mine, peer)
    print(f"torch-cpu {peer}\ncupy-fused on the host {mine}: {ratio:.2f}x torch's")
    assert fused_on_numpy, "the fused kernels did not run"
    assert ratio <= accuracy.RATIO, f"float32 error {ratio:.2f}x torch's (limit {accuracy.RATIO})"
    monkeypatch.setattr(cupy_fused, "PREAMBLE", _old_sigmoid_preamble())
    cupy_fused._kernel.cache_clear()
    try:
        old = accuracy.worst_ratio(accuracy.errors(accuracy.rnn_xp_outputs(params, x, np, "cupy-fused"), ref), peer)
    finally:
        monkeypatch.undo()
        cupy_fused._kernel.cache_clear()
    assert old > accuracy.RATIO, f"the old sigmoid passes too ({old:.2f}x): the check cannot fail"


def test_sources_use_no_inaccurate_sigmoid():
    """No 0.5*tanh(x/2)+0.5 and no fast-math intrinsics in any CUDA text (the fused and persistent kernels)."""
    from rnn_xp._fast import cupy_persistent

    for name, text in (
        ("cupy_gates.cu", PREAMBLE),
        ("cupy_persistent.cu", cupy_persistent.KERNEL_SOURCE),
        *((f"kernel {k}", spec.operation) for k, spec in KERNELS.items()),
    ):
        code = re.sub(r"//[^\n]*", "", text)
        assert not re.search(r"tanh\(\s*F\(0\.5\)", code), f"{name}: sigmoid through tanh"
        assert not re.search(r"__(expf|tanhf|fdividef|logf|powf|sinf|cosf)\b", code), f"{name}: fast-math intrinsic"
    assert "--use_fast_math" not in Path(cupy_fused.__file__).read_text()
