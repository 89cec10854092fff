"""The CuPy persistent runner against the reference loop, both on the GPU (skipped without CuPy and a GPU).

Every buffer the persistent runner allocates is NaN until the kernel writes it, so an element it forgets
shows up as NaN. Each check draws fresh random data. The plans are forced through several shapes (units
per block, split dot products, batch tiles) so that every branch of the kernel runs; the sizes are odd
and H is no multiple of the 4-wide rows. The same source is checked without a GPU (nvcc, and a host
emulation) in tests/test_persistent_sources.py.
"""

from __future__ import annotations

import importlib
import zlib

import numpy as np
import pytest

import rnn_xp
from rnn_xp import _xp
from rnn_xp._fast import cupy_fused, cupy_persistent

pytestmark = pytest.mark.gpu

fw = importlib.import_module("rnn_xp.loop")


@pytest.fixture
def poisoned(cp, monkeypatch):
    """Every buffer of the persistent runner NaN before its first write; records the allocations."""
    made = []

    def empty(cp_, shape, dtype):
        made.append(shape)
        return cp_.full(shape, cp_.nan, dtype=dtype)

    monkeypatch.setattr(cupy_persistent, "_empty", empty)
    monkeypatch.setattr(cupy_persistent, "PLAN_OVERRIDE", {})
    return made


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail if anything but the persistent kernels runs a direction with impl='cupy-persistent' (the seam raises
    for a call it declines; this also catches a runner that would hand work to the fused path)."""

    def refuse(*a, **k):
        raise AssertionError("cupy-fused ran a direction of an impl='cupy-persistent' call")

    monkeypatch.setattr(cupy_fused, "run_direction", refuse)


def _on(cp, host, dtype):
    return cp.asarray(np.asarray(host), dtype=dtype)


def _check(cp, got, ref, dtype, tol):
    assert isinstance(got, cp.ndarray), type(got)
    assert got.device == ref.device
    assert got.dtype == ref.dtype == np.dtype(dtype)
    assert got.shape == ref.shape
    g, r = cp.asnumpy(got).astype(np.float64), cp.asnumpy(ref).astype(np.float64)
    assert np.array_equal(np.isfinite(g), np.isfinite(r)), "non-finite values differ (an unwritten element?)"
    err = np.abs(g - r)
    assert np.all(err <= tol * (1 + np.abs(r))), f"max abs error {err.max():.3e} (tol {tol})"


def _flat(out):
    y, state = out
    return [y, *state] if isinstance(state, tuple) else [y, state]


def _both(params, x, init=None, **kw):
    got = rnn_xp.forward(x, params, init, impl="cupy-persistent", **kw)
    ref = rnn_xp.forward(x, params, init, impl="reference", **kw)
    return got, ref


TOL = {"float32": 2e-5, "float64": 1e-12}

CASES = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("rnn", {"bias": False, "clip": 0.4}),
    ("lstm", {}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    ("gru", {}),
    ("gru", {"bias": False, "clip": 0.5}),
]

# forced plans for H = 7: 4 blocks (the last with one unit of two) one thread a pair; split dot products
# and batch tiles; one block of 32 threads; batch splits (3 blocks of rows 2, 2, 1 with split dot
# products; one block of 32 threads); the cost model's own choice (a batch split, one row a block)
PLANS = [
    {"U": 2, "S": 1},
    {"U": 3, "S": 2, "BT": 2},
    {"U": 7, "S": 4, "BT": 3, "threads": 32},
    {"bsplit": 1, "BT": 2, "S": 2},
    {"bsplit": 1, "BT": 5, "threads": 32},
    {},
]


def test_selectable_and_automatic(cp):
    xp = _xp.as_namespace(cp)
    assert "cupy-persistent" in rnn_xp.implementations(xp)
    params = rnn_xp.init("gru", 2, 3, seed=0, xp=cp)
    x = _on(cp, np.ones((2, 4, 2)), "float32")
    choice = rnn_xp.explain(x, params, impl="cupy-persistent")
    assert choice.implementation == "cupy-persistent" and choice.runner is cupy_persistent.run_direction
    auto = rnn_xp.explain(x, params)
    assert auto.implementation == "cupy-persistent" and auto.skipped == ()
    sms, smem = cupy_persistent._limits(x.device)
    print(f"device limits: {sms} SMs, {smem} B of shared memory per block (opt-in)")
    assert sms >= 1 and smem >= 48 * 1024


@pytest.mark.parametrize("plan", PLANS, ids=[f"plan{i}" for i in range(len(PLANS))])
@pytest.mark.parametrize("masking", ["none", "lengths", "mask", "both"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_persistent_matches_reference_on_gpu(
    cp, poisoned, no_fallback, monkeypatch, cell, opts, direction, dtype, masking, plan
):
    monkeypatch.setattr(cupy_persistent, "PLAN_OVERRIDE", plan)
    rng = np.random.default_rng(zlib.crc32(f"{cell}{opts}{direction}{dtype}{masking}{plan}".encode()))
    params = rnn_xp.init(
        cell, 3, 7, num_layers=2, direction=direction, seed=int(rng.integers(1 << 30)), dtype=dtype, xp=cp, **opts
    )
    cfg = params.config
    B, T = 5, 9  # odd sizes
    x = _on(cp, rng.standard_normal((B, T, 3)), dtype)
    LD = 2 * cfg.num_directions
    h0 = _on(cp, rng.standard_normal((LD, B, 7)), dtype)
    init = (h0, _on(cp, rng.standard_normal((LD, B, 7)), dtype)) if cell == "lstm" else h0
    kw = {}
    if masking in ("lengths", "both"):
        kw["lengths"] = cp.asarray([9, 0, 4, 1, 7])
    if masking in ("mask", "both"):
        kw["mask"] = cp.asarray(rng.random((B, T)) > 0.3)
        kw["zero_output_for_mask"] = bool(rng.integers(2))
    got, ref = _both(params, x, init, **kw)
    assert poisoned, "the persistent runner allocated nothing"
    for g, r in zip(_flat(got), _flat(ref), strict=True):
        _check(cp, g, r, dtype, TOL[dtype])


@pytest.mark.parametrize("name", sorted(rnn_xp.activations._SPEC))
def test_every_activation_on_gpu(cp, poisoned, no_fallback, name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for cell, acts in (
        ("rnn", [name]),
        ("lstm", ["Sigmoid", "Tanh" if name == "Exponential" else name, name]),
        ("gru", [name, "Tanh" if name == "Exponential" else name]),
    ):
        params = rnn_xp.init(
            cell,
            3,
            6,
            activations=acts,
            activation_alpha=[0.3, 0.3],
            activation_beta=[0.6, 0.6],
            clip=3.0 if name == "Exponential" else None,
            seed=4,
            dtype="float64",
            xp=cp,
        )
        x = _on(cp, 2.0 * rng.standard_normal((3, 5, 3)), "float64")
        got, ref = _both(params, x)
        for g, r in zip(_flat(got), _flat(ref), strict=True):
            _check(cp, g, r, "float64", 1e-12)


@pytest.mark.parametrize(
    "cell,B,T,F,H",
    [
        ("rnn", 64, 40, 32, 100),
        ("gru", 1, 300, 64, 256),
        ("gru", 3, 50, 5, 257),
        ("lstm", 64, 12, 256, 512),
        ("lstm", 33, 20, 17, 131),
    ],
)
def test_reference_config_sizes(cp, poisoned, no_fallback, cell, B, T, F, H):
    """The reference configs' widths (fewer steps), and odd ones: the cost model's plans on this GPU."""
    rng = np.random.default_rng(B * 1000 + H)
    params = rnn_xp.init(cell, F, H, seed=int(rng.integers(1 << 30)), xp=cp)
    x = _on(cp, rng.standard_normal((B, T, F)), "float32")
    got, ref = _both(params, x, lengths=cp.asarray(rng.integers(0, T + 1, B)))
    for g, r in zip(_flat(got), _flat(ref), strict=True):
        _check(cp, g, r, "float32", 1e-4)


def test_chunks_and_a_long_sequence(cp, poisoned, no_fallback, monkeypatch):
    """Many launches per direction (a projection chunk of a few steps): parity and barrier bases carry over."""
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 7 * 3 * 33 * 5)  # 5 steps a chunk
    rng = np.random.default_rng(9)
    params = rnn_xp.init("gru", 16, 33, num_layers=2, bidirectional=True, seed=1, xp=cp)
    x = _on(cp, rng.standard_normal((7, 1203, 16)), "float32")
    got, ref = _both(params, x, lengths=cp.asarray([1203, 5, 0, 640, 1202, 1, 77]))
    for g, r in zip(_flat(got), _flat(ref), strict=True):
        _check(cp, g, r, "float32", 1e-4)


def test_repeated_calls_are_identical(cp, no_fallback):
    """A race shows as results that move between runs of the same inputs."""
    rng = np.random.default_rng(12)
    params = rnn_xp.init("lstm", 8, 96, seed=3, xp=cp)
    x = _on(cp, rng.standard_normal((16, 200, 8)), "float32")
    first = cp.asnumpy(rnn_xp.forward(x, params, impl="cupy-persistent")[0])
    for _ in range(5):
        np.testing.assert_array_equal(cp.asnumpy(rnn_xp.forward(x, params, impl="cupy-persistent")[0]), first)


@pytest.mark.parametrize(
    "cell,opts,reason", [("gru", {"reset_after": False}, "reset before"), ("lstm", {"proj_size": 3}, "projection")]
)
def test_unsupported_configs_are_declined(cp, cell, opts, reason):
    """Configurations without a persistent kernel: impl='cupy-persistent' raises the reason, impl='auto' runs
    cupy-fused (the seam's choice, recorded), with the reference's results."""
    params = rnn_xp.init(cell, 3, 5, seed=2, xp=cp, **opts)
    x = _on(cp, np.random.default_rng(2).standard_normal((4, 6, 3)), "float32")
    with pytest.raises(ValueError, match=f"impl='cupy-persistent' cannot run this call: .*{reason}"):
        rnn_xp.forward(x, params, impl="cupy-persistent")
    assert rnn_xp.explain(x, params).implementation == "cupy-fused"
    got = rnn_xp.forward(x, params)
    ref = rnn_xp.forward(x, params, impl="reference")
    for g, r in zip(_flat(got), _flat(ref), strict=True):
        _check(cp, g, r, "float32", 2e-5)


def test_large_step_is_declined(cp):
    """lstm-large's step (B 256, H 1024) is compute bound: declined with the reason, so auto stays on cuBLAS."""
    params = rnn_xp.init("lstm", 8, 1024, seed=0, xp=cp)
    x = cp.zeros((256, 2, 8), dtype=cp.float32)
    with pytest.raises(ValueError, match="compute bound"):
        rnn_xp.explain(x, params, impl="cupy-persistent")


def test_float16_inputs(cp, no_fallback):
    """float16 reaches the runner as float32 (forward computes half types in float32)."""
    params = rnn_xp.init("gru", 4, 9, seed=6, dtype="float16", xp=cp)
    x = _on(cp, np.random.default_rng(8).standard_normal((3, 6, 4)), "float16")
    (y, h), (ry, rh) = _both(params, x)
    assert y.dtype == cp.float16
    assert float(cp.abs(y.astype(cp.float32) - ry.astype(cp.float32)).max()) <= 1e-2


def test_launch_modes_recorded(cp, no_fallback):
    params = rnn_xp.init("rnn", 3, 5, seed=0, xp=cp)
    rnn_xp.forward(_on(cp, np.ones((2, 3, 3)), "float32"), params, impl="cupy-persistent")
    modes = set(cupy_persistent.launch_modes.values())
    print("persistent launch modes:", cupy_persistent.launch_modes)
    assert modes <= {"cooperative", "plain"} and modes
