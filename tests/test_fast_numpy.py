"""What is particular to the NumPy fast path (impl="numpy-fused"): its chunk buffer, its inlined loops,
the seam's choice, threads. Every option against the reference is in tests/test_implementations.py."""

import importlib
import threading

import numpy as np
import pytest

import rnn_xp

fused = importlib.import_module("rnn_xp._fast.numpy_fused")
fw = importlib.import_module("rnn_xp.loop")

TOL = {"float32": 2e-5, "float64": 1e-10}  # relative to the reference's scale


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    """Every buffer the fast path allocates starts as NaN: an element left unwritten fails the comparison."""
    calls = []

    def nan_empty(shape, dtype):
        calls.append(shape)
        return np.full(shape, np.nan, dtype=dtype)
    monkeypatch.setattr(fused, "_empty", nan_empty)
    return calls


def _compare(params, x, dtype, *, initial_state=None, **kw):
    p = rnn_xp.to_device(params, np, dtype=dtype)
    x = x.astype(dtype)
    if initial_state is not None:
        initial_state = tuple(s.astype(dtype) for s in initial_state) if isinstance(initial_state, tuple) \
            else initial_state.astype(dtype)
    ref = rnn_xp.forward(x, p, initial_state, impl="reference", **kw)
    got = rnn_xp.forward(x, p, initial_state, impl="numpy-fused", **kw)
    flat_ref = [ref[0], *(ref[1] if isinstance(ref[1], tuple) else (ref[1],))]
    flat_got = [got[0], *(got[1] if isinstance(got[1], tuple) else (got[1],))]
    for a, b in zip(flat_got, flat_ref, strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) and a.shape == b.shape
        assert np.all(np.isfinite(a)), "an output element was never written (NaN poison survived)"
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
        assert err <= TOL[dtype] * scale, f"max abs error {err:.3e} vs reference (scale {scale:.3g})"


def test_time_major(rng):
    params = rnn_xp.init("gru", 3, 4, seed=14, dtype="float64", xp=np)
    x = rng.standard_normal((7, 2, 3))  # time-major
    ref = rnn_xp.forward(x, params, time_major=True, impl="reference")
    got = rnn_xp.forward(x, params, time_major=True, impl="numpy-fused")
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)


def test_chunk_buffer_is_bounded_by_a_chunk_not_by_T(rng, monkeypatch, poisoned):
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 64)
    params = rnn_xp.init("lstm", 3, 4, seed=15, xp=np)  # G*H = 16, B = 2: 2 steps a chunk
    rnn_xp.forward(rng.standard_normal((2, 50, 3)).astype("float32"), params, impl="numpy-fused")
    big = [s for s in poisoned if len(s) == 2 and s[1] == 16]  # the projection buffer (t*B, G*H)
    assert big and all(s[0] <= 4 for s in big), poisoned


def test_auto_picks_the_fast_path_and_half_types_agree(rng, monkeypatch):
    assert "numpy-fused" in rnn_xp.implementations(np)
    seen = []
    real = fused.run_direction
    monkeypatch.setattr(fused, "run_direction", lambda *a, **k: seen.append(1) or real(*a, **k))
    params = rnn_xp.init("gru", 3, 4, seed=18, xp=np)
    rnn_xp.forward(rng.standard_normal((2, 6, 3)).astype("float32"), params)
    assert seen, "impl='auto' on numpy did not run the fast path"
    # under MIN_AUTO_STEPS steps the per-call weight arrangement does not pay: auto runs the reference
    one_step = rnn_xp.explain(rng.standard_normal((2, 1, 3)).astype("float32"), params)
    assert one_step.implementation == "reference" and "arranging the weights" in str(one_step)
    # float16 is computed in float32 by the engine, then rounded once: the same numbers as the reference
    p16 = rnn_xp.to_device(params, np, dtype="float16")
    x16 = rng.standard_normal((2, 3, 3)).astype("float16")
    np.testing.assert_array_equal(rnn_xp.forward(x16, p16, impl="numpy-fused")[0],
                                  rnn_xp.forward(x16, p16, impl="reference")[0])


def test_impl_errors_name_the_choices():
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    with pytest.raises(ValueError, match="numpy-fused"):
        rnn_xp.forward(np.zeros((1, 2, 2), np.float32), params, impl="no-such-impl")


def test_params_untouched_and_safe_from_many_threads(rng):
    """Nothing is cached on params or in the module: concurrent calls give each their own answer."""
    params = rnn_xp.init("lstm", 5, 16, seed=19, xp=np, peepholes=True, bias="single")
    before = {n: a.copy() for n, a in params.named_arrays()}
    xs = [rng.standard_normal((4, 30, 5)).astype("float32") for _ in range(6)]
    expected = [rnn_xp.forward(x, params, impl="reference")[0] for x in xs]
    results = [None] * len(xs)

    def work(k):
        for _ in range(3):
            results[k] = rnn_xp.forward(xs[k], params, impl="numpy-fused")[0]
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, exp in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, exp, rtol=0, atol=2e-5)
    for n, a in params.named_arrays():
        np.testing.assert_array_equal(a, before[n])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_default_cells_take_the_written_out_loop(rng, monkeypatch, cell):
    """PyTorch's default cells without masks run the inlined loop; it agrees with the reference too."""
    used = []
    real = fused._inline_loop

    def spy(*a, **k):
        loop = real(*a, **k)
        used.append(loop is not None)
        return loop
    monkeypatch.setattr(fused, "_inline_loop", spy)
    params = rnn_xp.init(cell, 3, 6, seed=20, dtype="float64", xp=np, bidirectional=True)
    x = rng.standard_normal((4, 9, 3))
    _compare(params, x, "float32")
    _compare(params, x, "float64")
    assert used and all(used)
    used.clear()
    _compare(params, x, "float64", lengths=np.array([9, 3, 0, 5]))  # masked: the step closures
    assert not any(used)
