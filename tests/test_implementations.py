"""Every implementation behind the seam against the reference loop, on every namespace it runs on.

The cases cover every option an implementation may claim: cells, activations, clip, biases,
peepholes, input_forget, projection, GRU reset before/after, lengths, masks, initial states,
directions, layers, chunking, float32 and float64. An implementation that declines a case (its
``unsupported`` reason) is skipped for that case; one that accepts it must match the reference.
Buffers an implementation allocates through its module's ``_empty`` start as NaN, so an element
it forgot to write shows.
"""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
from conftest import _backend_params

import rnn_xp
from rnn_xp import _xp, seam

TOL = {"float32": 2e-5, "float64": 1e-10}  # relative to the reference's scale
loop = importlib.import_module("rnn_xp.loop")


def _pairs():
    """(namespace, implementation) for every fast implementation that may run on each namespace."""
    out = []
    for param in _backend_params():
        name = param.values[0]
        for impl in seam.IMPLEMENTATIONS:
            if impl.name == "reference":
                continue
            spaces = getattr(seam._module(impl), "NAMESPACES", None)
            if spaces is None or name in spaces:
                out.append(pytest.param((name, impl.name), id=f"{name}-{impl.name}", marks=param.marks))
    return out


@pytest.fixture(params=_pairs())
def target(request, monkeypatch):
    """(xp, impl): a namespace and an implementation for it, its buffers poisoned with NaN."""
    space, impl = request.param
    xp = _xp.as_namespace(importlib.import_module(space))
    mod = seam._module(seam._BY_NAME[impl])
    if hasattr(mod, "_empty"):
        real = mod._empty

        def nan_empty(*args):
            buf = real(*args)
            buf[...] = float("nan")
            return buf

        monkeypatch.setattr(mod, "_empty", nan_empty)
    return xp, impl


def _flat(result):
    y, state = result
    return [y, *(state if isinstance(state, tuple) else (state,))]


def _compare(target, params, x, dtype, *, initial_state=None, **kw):
    """impl and reference on the same inputs in the target namespace; skip if impl declines the call."""
    xp, impl = target
    p = rnn_xp.to_device(params, xp, dtype=dtype)
    x = _xp.from_host(x, xp, None, dtype)
    if initial_state is not None:
        initial_state = (
            tuple(_xp.from_host(s, xp, None, dtype) for s in initial_state)
            if isinstance(initial_state, tuple)
            else _xp.from_host(initial_state, xp, None, dtype)
        )
    # asked by name, so that every implementation is asked, not only auto's choice
    try:
        rnn_xp.explain(x, p, initial_state, impl=impl, **{k: v for k, v in kw.items() if k != "zero_output_for_mask"})
    except ValueError as e:
        if "cannot run this call" not in str(e):
            raise
        pytest.skip(f"{impl} declines: {e}")
    ref = _flat(rnn_xp.forward(x, p, initial_state, impl="reference", **kw))
    got = _flat(rnn_xp.forward(x, p, initial_state, impl=impl, **kw))
    for a, b in zip(got, ref, strict=True):
        assert _xp.dtype_name(a.dtype) == dtype and tuple(a.shape) == tuple(b.shape)
        a, b = _xp.to_host(a).astype(np.float64), _xp.to_host(b).astype(np.float64)
        assert np.all(np.isfinite(a)), "an output element was never written (NaN poison survived)"
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        err = float(np.abs(a - b).max(initial=0.0))
        assert err <= TOL[dtype] * scale, f"{impl}: max abs error {err:.3e} vs reference (scale {scale:.3g})"


CASES = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("rnn", {"activations": ["Softsign"], "clip": 0.8, "bias": False}),
    ("lstm", {}),
    ("lstm", {"bias": "single"}),
    ("lstm", {"proj_size": 3}),
    ("lstm", {"peepholes": True}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    ("lstm", {"input_forget": True}),
    ("lstm", {"clip": 0.5}),
    ("lstm", {"activations": ["HardSigmoid", "Relu", "Softsign"]}),
    ("lstm", {"activations": ["Sigmoid", "Elu", "Tanh"], "proj_size": 2, "peepholes": True}),
    (
        "lstm",
        {
            "activations": ["Affine", "ScaledTanh", "LeakyRelu"],
            "activation_alpha": [0.5, 0.7, 0.1],
            "activation_beta": [0.2, 1.3],
        },
    ),
    ("gru", {}),
    ("gru", {"bias": False}),
    ("gru", {"bias": "single"}),
    ("gru", {"reset_after": False}),
    ("gru", {"reset_after": False, "bias": "single", "clip": 0.6}),
    ("gru", {"clip": 0.5}),
    ("gru", {"activations": ["HardSigmoid", "Softsign"]}),
    ("gru", {"activations": ["hard_sigmoid", "ThresholdedRelu"], "activation_alpha": [0.3]}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_matches_reference(target, rng, cell, opts, direction, dtype):
    params = rnn_xp.init(cell, 4, 5, num_layers=2, direction=direction, seed=11, dtype="float64", xp=np, **opts)
    _compare(target, params, rng.standard_normal((3, 7, 4)), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lengths_masks_and_initial_state(target, rng, cell, dtype):
    params = rnn_xp.init(
        cell,
        3,
        6,
        num_layers=2,
        bidirectional=True,
        seed=12,
        dtype="float64",
        xp=np,
        proj_size=4 if cell == "lstm" else 0,
    )
    cfg = params.config
    B, T = 5, 9
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, cfg.output_size))
    init = (h0, rng.standard_normal((4, B, cfg.hidden_size))) if cell == "lstm" else h0
    lengths = np.array([9, 0, 4, 1, 6])
    mask = rng.random((B, T)) > 0.3
    mask[:, 0] = False
    for kw in (
        {},
        {"lengths": lengths},
        {"mask": mask},
        {"mask": mask, "zero_output_for_mask": True},
        {"lengths": lengths, "mask": mask},
    ):
        _compare(target, params, x, dtype, initial_state=init, **kw)


def test_tiny_chunks(target, rng, monkeypatch):
    """Chunks of one step, and a ragged last chunk, give the reference's numbers."""
    monkeypatch.setattr(loop, "CHUNK_ELEMENTS", 1)
    for cell in ("rnn", "lstm", "gru"):
        params = rnn_xp.init(cell, 3, 4, bidirectional=True, seed=13, dtype="float64", xp=np)
        _compare(target, params, rng.standard_normal((2, 7, 3)), "float64", lengths=np.array([7, 3]))
    monkeypatch.setattr(loop, "CHUNK_ELEMENTS", 3 * 2 * 4 * 3)  # 3 steps of B=2, G*H=12: chunks 3, 3, 1
    _compare(
        target, rnn_xp.init("gru", 3, 4, seed=14, dtype="float64", xp=np), rng.standard_normal((2, 7, 3)), "float64"
    )


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (0, 4, 3), (2, 0, 3), (0, 0, 2)])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_degenerate_sizes(target, rng, cell, B, T, H):
    params = rnn_xp.init(cell, 2, H, num_layers=2, bidirectional=True, seed=16, dtype="float64", xp=np)
    x = rng.standard_normal((B, T, 2))
    _compare(target, params, x, "float64")
    if B:
        _compare(target, params, x, "float64", lengths=np.zeros(B, dtype=np.int64))


def test_every_combination_of_cell_options(target, rng):
    for cell, bias, direction in itertools.product(
        ["rnn", "lstm", "gru"], [True, "single", False], ["forward", "bidirectional"]
    ):
        params = rnn_xp.init(cell, 3, 4, num_layers=2, bias=bias, direction=direction, seed=17, dtype="float64", xp=np)
        _compare(target, params, rng.standard_normal((2, 5, 3)), "float32", lengths=np.array([5, 2]))
