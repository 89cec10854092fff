"""Hypothesis: forward against the float64 loop over random shapes and options."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_forward

import rnn_xp
from rnn_xp import _xp


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    H = draw(st.integers(1, 5))
    kw = dict(
        num_layers=draw(st.integers(1, 3)),
        direction=draw(st.sampled_from(["forward", "reverse", "bidirectional"])),
        bias=draw(st.sampled_from([True, "single", False])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    if cell == "lstm":
        kw["proj_size"] = draw(st.integers(0, H - 1))
        kw["peepholes"] = draw(st.booleans())
        kw["input_forget"] = draw(st.booleans())
    if cell == "gru":
        kw["reset_after"] = draw(st.booleans())
    if cell == "rnn":
        kw["activations"] = [draw(st.sampled_from(["tanh", "relu", "Softsign", "HardSigmoid", "elu"]))]
    if draw(st.booleans()):
        kw["clip"] = draw(st.floats(0.1, 3.0))
    F = draw(st.integers(1, 4))
    B, T = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    return cell, F, H, kw, B, T


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.data())
def test_forward_matches_loop_reference(cfg, data):
    cell, F, H, kw, B, T = cfg
    params = rnn_xp.init(cell, F, H, dtype="float64", xp=np, **kw)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((B, T, F))
    opts = {}
    if data.draw(st.booleans()):
        opts["lengths"] = rng.integers(0, T + 1, size=B)
    if data.draw(st.booleans()):
        opts["mask"] = rng.random((B, T)) > 0.3
        opts["zero_output_for_mask"] = data.draw(st.booleans())
    y, state = rnn_xp.forward(x, params, **opts)
    ry, rh, rc = reference_forward(x, params, **opts)
    np.testing.assert_allclose(y, ry, atol=1e-10, rtol=0)
    h = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(h, rh, atol=1e-10, rtol=0)
    if cell == "lstm":
        np.testing.assert_allclose(state[1], rc, atol=1e-10, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["rnn", "lstm", "gru"]), st.integers(1, 4), st.integers(1, 4))
def test_nan_and_inf_propagate_without_crashing(cell, B, T):
    """NaN/inf in x propagate as in the reference: only the sequences that contain them are affected."""
    params = rnn_xp.init(cell, 2, 3, seed=1, dtype="float64", xp=np)
    x = np.random.default_rng(B * 10 + T).standard_normal((B, T, 2))
    x[0, 0, 0] = np.nan
    if B > 1:
        x[1, -1, 1] = np.inf
    with np.errstate(all="ignore"):
        y, _ = rnn_xp.forward(x, params)
        ry, _, _ = reference_forward(x, params)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ry))
    assert np.isnan(y[0, -1]).all()
    if B > 2:
        assert np.isfinite(y[2:]).all()


@pytest.mark.parametrize("ns", ["array_api_strict", "torch"])
@settings(max_examples=15, deadline=None)
@given(cfg=configs())
def test_other_namespaces_match_numpy(ns, cfg):
    xp = _xp.as_namespace(pytest.importorskip(ns))
    cell, F, H, kw, B, T = cfg
    params = rnn_xp.init(cell, F, H, dtype="float64", xp=np, **kw)
    x = np.random.default_rng(kw["seed"]).standard_normal((B, T, F))
    y_np, _ = rnn_xp.forward(x, params)
    y, _ = rnn_xp.forward(_xp.from_host(x, xp), rnn_xp.to_device(params, xp))
    np.testing.assert_allclose(_xp.to_host(y), y_np, atol=1e-12, rtol=0)
