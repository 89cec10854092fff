"""forward(..., trace=True): every step's state and gates, checked against the cell equations in float64.

The recomputation below is written from the equations (PyTorch's layout and gate orders, documented in
rnn_xp.params), not from rnn_xp: from the traced state before each step it recomputes the gates, and from
the traced gates the state after the step.
"""

import importlib

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp

GATES = {"rnn": (), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _weights(params, k, d):
    w = params.layers[k][d]
    out = {n: np.asarray(a, dtype=np.float64) for n, a in w.items()}
    G, H = params.config.gates, params.config.hidden_size
    out.setdefault("b_ih", np.zeros(G * H))
    out.setdefault("b_hh", np.zeros(G * H))
    return out


def _check_steps(cell, x, tr, h0, c0, w, cfg, run, reverse, tol):
    """x (B, T, F) this layer's input; tr this layer and direction's trace (float64, (B, T, .))."""
    B, T, _ = x.shape
    H = cfg.hidden_size
    order = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    for t in order:
        ran = run[:, t]  # (B,)
        a_x = x[:, t] @ w["w_ih"].T + w["b_ih"]  # (B, G*H)
        a_h = h @ w["w_hh"].T + w["b_hh"]
        if cell == "rnn":
            h_new = np.tanh(a_x + a_h)
            gates = {}
        elif cell == "lstm":
            a = a_x + a_h
            gates = {
                "i": _sigmoid(a[:, :H]),
                "f": _sigmoid(a[:, H : 2 * H]),
                "g": np.tanh(a[:, 2 * H : 3 * H]),
                "o": _sigmoid(a[:, 3 * H :]),
            }
            # the state after the step from the traced gates: c = f c + i g, h = o tanh(c)
            c_new = tr["f"][:, t] * c + tr["i"][:, t] * tr["g"][:, t]
            h_new = tr["o"][:, t] * np.tanh(c_new)
            np.testing.assert_allclose(tr["c"][ran, t], c_new[ran], rtol=0, atol=tol)
            np.testing.assert_allclose(tr["c"][~ran, t], c[~ran], rtol=0, atol=0)  # carried
            if w.get("w_hr") is not None:
                h_new = h_new @ w["w_hr"].T
        else:
            r = _sigmoid(a_x[:, :H] + a_h[:, :H])
            z = _sigmoid(a_x[:, H : 2 * H] + a_h[:, H : 2 * H])
            n = np.tanh(a_x[:, 2 * H :] + r * a_h[:, 2 * H :])
            gates = {"r": r, "z": z, "n": n}
            h_new = (1.0 - tr["z"][:, t]) * tr["n"][:, t] + tr["z"][:, t] * h
        for name, g in gates.items():
            np.testing.assert_allclose(tr[name][ran, t], g[ran], rtol=0, atol=tol, err_msg=f"gate {name}, t={t}")
            assert np.all(tr[name][~ran, t] == 0), f"gate {name} is not zero at a step that does not run"
        np.testing.assert_allclose(tr["h"][ran, t], h_new[ran], rtol=0, atol=tol, err_msg=f"h, t={t}")
        np.testing.assert_allclose(tr["h"][~ran, t], h[~ran], rtol=0, atol=0)  # carried
        h = tr["h"][:, t]  # the next step starts from the traced state: each step is checked on its own
        c = tr["c"][:, t] if cell == "lstm" else None


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("masks", ["none", "lengths", "mask"])
def test_the_trace_follows_the_equations(rng, cell, masks):
    """Two bidirectional layers: layer 1 reads layer 0's outputs (the traced h of both directions)."""
    params = rnn_xp.init(cell, 3, 4, num_layers=2, bidirectional=True, seed=1, dtype="float64", xp=np)
    cfg = params.config
    B, T = 3, 7
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, 4))
    c0 = rng.standard_normal((4, B, 4))
    init = (h0, c0) if cell == "lstm" else h0
    kw, run = {}, np.ones((B, T), dtype=bool)
    if masks == "lengths":
        kw["lengths"] = np.array([7, 4, 0])
        run = np.arange(T)[None, :] < kw["lengths"][:, None]
    elif masks == "mask":
        kw["mask"] = run = rng.random((B, T)) > 0.3
    y, state, trace = rnn_xp.forward(x, params, init, trace=True, **kw)
    assert len(trace) == 4
    assert all(set(tr) == {"h", *(("c",) if cell == "lstm" else ()), *GATES[cell]} for tr in trace)
    assert all(a.shape == (B, T, 4) for tr in trace for a in tr.values())
    layer_in = x
    for k in range(2):
        for d in range(2):
            idx = 2 * k + d
            tr = {n: np.asarray(a, dtype=np.float64) for n, a in trace[idx].items()}
            _check_steps(
                cell,
                layer_in,
                tr,
                h0[idx],
                c0[idx] if cell == "lstm" else None,
                _weights(params, k, d),
                cfg,
                run,
                reverse=d == 1,
                tol=1e-12,
            )
            # the state after the last step each direction processed is forward's final state
            h_n = state[0] if cell == "lstm" else state
            last = 0 if d == 1 else T - 1
            np.testing.assert_allclose(tr["h"][:, last], h_n[idx], rtol=0, atol=1e-12)
        if masks == "none":
            np.testing.assert_allclose(
                np.concatenate([trace[2 * k]["h"], trace[2 * k + 1]["h"]], axis=-1),
                y if k == 1 else np.concatenate([trace[0]["h"], trace[1]["h"]], axis=-1),
                rtol=0,
                atol=0,
            )
            layer_in = np.concatenate([trace[2 * k]["h"], trace[2 * k + 1]["h"]], axis=-1)  # (B, T, 2H)
        else:
            layer_in = None  # masked outputs repeat the last output: checked on layer 0 only
            break


def test_projection_peepholes_and_options_record_what_enters_the_update(rng):
    """input_forget: f = 1 - i; a projected LSTM's h is (B, T, proj_size), its c (B, T, H)."""
    p = rnn_xp.init("lstm", 3, 5, proj_size=2, input_forget=True, seed=2, dtype="float64", xp=np)
    _, _, tr = rnn_xp.forward(rng.standard_normal((2, 6, 3)), p, trace=True)
    (tr,) = tr
    assert tr["h"].shape == (2, 6, 2) and tr["c"].shape == (2, 6, 5)
    np.testing.assert_allclose(tr["f"], 1.0 - tr["i"], rtol=0, atol=0)
    c = np.zeros((2, 5))
    for t in range(6):
        c = tr["f"][:, t] * c + tr["i"][:, t] * tr["g"][:, t]
        np.testing.assert_allclose(tr["c"][:, t], c, rtol=0, atol=1e-12)
        h = (tr["o"][:, t] * np.tanh(c)) @ np.asarray(p.layers[0][0].w_hr).T
        np.testing.assert_allclose(tr["h"][:, t], h, rtol=0, atol=1e-12)


def _namespaces():
    out = ["numpy", "array_api_strict"]
    for name in ("torch", "jax.numpy"):
        try:
            importlib.import_module(name)
            out.append(name)
        except ImportError:
            pass
    return out


@pytest.mark.parametrize("name", _namespaces())
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_namespace_traces_the_same(rng, name, cell):
    xp = _xp.as_namespace(importlib.import_module(name))
    host = rnn_xp.init(cell, 3, 4, num_layers=2, seed=3, dtype="float64", xp=np)
    x = rng.standard_normal((2, 5, 3))
    mask = rng.random((2, 5)) > 0.3
    _, _, expected = rnn_xp.forward(x, host, mask=mask, trace=True)
    y, _, trace = rnn_xp.forward(
        on(xp, x, "float32"), rnn_xp.to_device(host, xp, dtype="float32"), mask=on(xp, mask), trace=True
    )
    for got, want in zip(trace, expected, strict=True):
        assert set(got) == set(want)
        for n in want:
            assert _xp.namespace_name(_xp.array_namespace(got[n])) == _xp.namespace_name(xp)
            np.testing.assert_allclose(_xp.to_host(got[n]), want[n], rtol=0, atol=3e-6)


def test_layout_empty_sequences_half_dtypes_and_the_seam(rng):
    params = rnn_xp.init("gru", 3, 4, seed=4, xp=np)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)  # (T, B, F)
    y, _, (tr,) = rnn_xp.forward(x, params, time_major=True, trace=True)
    assert tr["h"].shape == (5, 2, 4)
    np.testing.assert_array_equal(tr["h"], y)
    _, _, (tr,) = rnn_xp.forward(x[:0], params, time_major=True, trace=True)
    assert {n: a.shape for n, a in tr.items()} == {n: (0, 2, 4) for n in ("h", "r", "z", "n")}
    half = rnn_xp.to_device(params, np, dtype="float16")
    _, _, (tr,) = rnn_xp.forward(x.astype(np.float16), half, time_major=True, trace=True)
    assert all(a.dtype == np.float16 for a in tr.values())
    assert rnn_xp.explain(x, params, time_major=True, trace=True).implementation == "reference"
    with pytest.raises(ValueError, match="numpy-fused.*tracing"):
        rnn_xp.forward(x, params, time_major=True, trace=True, impl="numpy-fused")
    with pytest.raises(TypeError, match="trace must be True or False"):
        rnn_xp.forward(x, params, trace="yes")
    out = rnn_xp.forward(x, params, time_major=True)
    assert len(out) == 2  # without trace, forward's pair


def test_the_readme_introspection_example_runs_as_written(tmp_path, monkeypatch):
    """The README's example, as written: it writes forget_gates.png (the committed docs/forget_gates.png)."""
    import os
    import re

    pytest.importorskip("matplotlib")
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    start = text.index("## Introspection")
    (code,) = re.findall(r"```python\n(.*?)```", text[start : text.index("\n## ", start + 5)], re.S)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md (introspection)", "exec"), scope)  # noqa: S102 - the project's own README
    assert (tmp_path / "forget_gates.png").stat().st_size > 1000
    assert scope["forget"].shape == (200, 16) and np.all((scope["forget"] > 0) & (scope["forget"] < 1))
