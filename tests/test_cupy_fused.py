"""The CuPy fused runner against the reference loop, both on the GPU (skipped without CuPy and a GPU).

Every buffer the fused runner allocates is NaN until a step writes it, so an element it forgets
shows up as NaN. The kernels' source is also checked without a GPU in tests/test_cuda_sources.py.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import zlib

import numpy as np
import pytest

import rnn_xp
from rnn_xp import _xp, seam
from rnn_xp._fast import cupy_fused

pytestmark = pytest.mark.gpu

fw = importlib.import_module("rnn_xp.loop")


@pytest.fixture
def xp(cp):
    return _xp.as_namespace(cp)


@pytest.fixture
def poisoned(cp, monkeypatch):
    """Make every buffer of the fused runner NaN before its first write; counts the allocations."""
    made = []

    def empty(cp_, shape, dtype):
        made.append(shape)
        return cp_.full(shape, cp_.nan, dtype=dtype)

    monkeypatch.setattr(cupy_fused, "_empty", empty)
    return made


def _on(cp, host, dtype):
    return cp.asarray(np.asarray(host), dtype=dtype)


def _check(cp, got, ref, dtype, tol):
    """Same namespace, device, dtype and shape, all finite where the reference is, then the values."""
    assert isinstance(got, cp.ndarray), type(got)
    assert got.device == ref.device
    assert got.dtype == ref.dtype == np.dtype(dtype)
    assert got.shape == ref.shape
    g, r = cp.asnumpy(got).astype(np.float64), cp.asnumpy(ref).astype(np.float64)
    assert np.array_equal(np.isfinite(g), np.isfinite(r)), "non-finite values differ (an unwritten element?)"
    err = np.abs(g - r)
    assert np.all(err <= tol * (1 + np.abs(r))), f"max abs error {err.max():.3e} (tol {tol})"


def _both(cp, params, x, init=None, **kw):
    """forward with impl='cupy-fused' and impl='reference' on the same GPU arrays."""
    fused = rnn_xp.forward(x, params, init, impl="cupy-fused", **kw)
    ref = rnn_xp.forward(x, params, init, impl="reference", **kw)
    return fused, ref


def _flat(out):
    y, state = out
    return [y, *state] if isinstance(state, tuple) else [y, state]


TOL = {"float32": 2e-5, "float64": 1e-12}

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


def test_auto_selects_the_fused_runner(cp, xp):
    """On CuPy arrays impl='auto' runs cupy-fused where cupy-persistent declines (an LSTM projection) and
    says why."""
    params = rnn_xp.init("lstm", 2, 3, proj_size=2, seed=0, xp=cp)
    x = _on(cp, np.ones((2, 4, 2)), "float32")
    choice = rnn_xp.explain(x, params)
    assert choice.implementation == "cupy-fused" and choice.runner is cupy_fused.run_direction
    assert "projection" in dict(choice.skipped)["cupy-persistent"]
    assert "cupy-fused" in rnn_xp.implementations(xp)
    assert cupy_fused.cupy_problem() is None
    call = seam.Call("cupy", params.config, "float32", 4, 2, device=x.device)
    assert seam.select_runner(call, "cupy-fused").runner is cupy_fused.run_direction


@pytest.mark.parametrize("masking", ["none", "lengths", "mask", "both"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_fused_matches_reference_on_gpu(cp, poisoned, cell, opts, direction, dtype, masking):
    rng = np.random.default_rng(zlib.crc32(f"{cell}{opts}{direction}{dtype}{masking}".encode()))
    params = rnn_xp.init(cell, 3, 7, num_layers=2, direction=direction, seed=5, dtype=dtype, xp=cp, **opts)
    cfg = params.config
    B, T = 5, 9  # odd sizes
    x = _on(cp, rng.standard_normal((B, T, 3)), dtype)
    LD = 2 * cfg.num_directions
    h0 = _on(cp, rng.standard_normal((LD, B, cfg.output_size)), dtype)
    init = (h0, _on(cp, rng.standard_normal((LD, B, 7)), dtype)) if cell == "lstm" else h0
    kw = {}
    if masking in ("lengths", "both"):
        kw["lengths"] = cp.asarray([9, 0, 4, 1, 7])
    if masking in ("mask", "both"):
        kw["mask"] = cp.asarray(rng.random((B, T)) > 0.3)
    fused, ref = _both(cp, params, x, init, **kw)
    assert poisoned, "the fused runner allocated nothing: did it fall back to the reference?"
    for g, r in zip(_flat(fused), _flat(ref), strict=True):
        _check(cp, g, r, dtype, TOL[dtype])


@pytest.mark.parametrize("name", sorted(rnn_xp.activations._SPEC))
def test_every_activation_on_gpu(cp, poisoned, name):
    rng = np.random.default_rng(3)
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
        fused, ref = _both(cp, params, x)
        for g, r in zip(_flat(fused), _flat(ref), strict=True):
            _check(cp, g, r, "float64", 1e-12)


@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_float16_storage(cp, poisoned, cell, opts):
    """The runner on float16 arrays (float arithmetic inside) against the reference on the same values in float32."""
    rng = np.random.default_rng(8)
    params = rnn_xp.init(cell, 4, 8, seed=6, dtype="float32", xp=cp, **opts)
    w = params.layers[0][0]
    w16 = type(w)(**{n: a.astype(cp.float16) for n, a in w.items()})
    w32 = type(w)(**{n: a.astype(cp.float32) for n, a in w16.items()})
    cfg = params.config
    x16 = _on(cp, rng.standard_normal((6, 3, 4)), "float16")
    h16 = _on(cp, rng.standard_normal((3, cfg.output_size)), "float16")
    c16 = _on(cp, rng.standard_normal((3, 8)), "float16") if cell == "lstm" else None
    run = cp.asarray(rng.random((6, 3, 1)) > 0.3)
    for masks in ({"run": None, "emit": None}, {"run": run, "emit": cp.ones_like(run)}):
        xp = _xp.as_namespace(cp)
        got = cupy_fused.run_direction(x16, h16, c16, w16, cfg, cfg.activations[0], reverse=False, xp=xp, **masks)

        def up(a):
            return None if a is None else a.astype(cp.float32)

        ref = fw.run_direction(up(x16), up(h16), up(c16), w32, cfg, cfg.activations[0], reverse=False, xp=xp, **masks)
        for g, r in zip(got, ref, strict=True):
            if r is None:
                assert g is None
                continue
            assert g.dtype == cp.float16 and g.shape == r.shape
            err = float(cp.abs(g.astype(cp.float32) - r).max())
            assert err <= 1e-2 * max(1.0, float(cp.abs(r).max())), f"float16 error {err:.3e}"


def test_chunked_projection_and_long_sequence(cp, poisoned, monkeypatch):
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 64)  # a few steps per chunk
    rng = np.random.default_rng(9)
    params = rnn_xp.init("gru", 16, 33, num_layers=2, bidirectional=True, seed=1, xp=cp)
    x = _on(cp, rng.standard_normal((7, 120, 16)), "float32")
    fused, ref = _both(cp, params, x, lengths=cp.asarray([120, 5, 0, 64, 119, 1, 77]))
    for g, r in zip(_flat(fused), _flat(ref), strict=True):
        _check(cp, g, r, "float32", 1e-4)


def test_reference_config_size(cp, poisoned):
    """lstm-med's shape (B 64, in 256, H 512), fewer steps: the kernels at a realistic width."""
    rng = np.random.default_rng(10)
    params = rnn_xp.init("lstm", 256, 512, seed=2, xp=cp)
    x = _on(cp, rng.standard_normal((64, 20, 256)), "float32")
    fused, ref = _both(cp, params, x)
    for g, r in zip(_flat(fused), _flat(ref), strict=True):
        _check(cp, g, r, "float32", 1e-4)


def test_threads_share_no_buffers(cp):
    """Two threads running the fused path at once get the single-threaded answers."""
    rng = np.random.default_rng(11)
    params = rnn_xp.init("lstm", 5, 9, proj_size=4, seed=3, xp=cp)
    xs = [_on(cp, rng.standard_normal((4, 30, 5)), "float32") for _ in range(4)]
    expected = [cp.asnumpy(rnn_xp.forward(x, params)[0]) for x in xs]

    def one(x):
        with cp.cuda.Stream(non_blocking=True):
            y = rnn_xp.forward(x, params)[0]
            return cp.asnumpy(y)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, xs * 3))
    for g, e in zip(got, expected * 3, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_outputs_stay_on_the_inputs_device(cp):
    params = rnn_xp.init("lstm", 3, 4, seed=0, xp=cp)
    x = _on(cp, np.random.default_rng(0).standard_normal((2, 5, 3)), "float32")
    y, (h, c) = rnn_xp.forward(x, params)
    for a in (y, h, c):
        assert isinstance(a, cp.ndarray) and a.device == x.device
