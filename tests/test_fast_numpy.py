"""The NumPy fast path (impl="numpy-fused") against the reference loop (impl="reference").

Every option the fast path claims: cells, activations, clip, biases, peepholes, input_forget,
projection, GRU reset before/after, lengths, masks, initial states, directions, layers, chunking,
float32 and float64; its buffers are poisoned with NaN so an element it forgot to write shows.
"""

import importlib
import itertools
import sys
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
    ("gru", {}),
    ("gru", {"bias": False}),
    ("gru", {"bias": "single"}),
    ("gru", {"reset_after": False}),
    ("gru", {"reset_after": False, "bias": "single", "clip": 0.6}),
    ("gru", {"clip": 0.5}),
    ("gru", {"activations": ["HardSigmoid", "Softsign"]}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_matches_reference(rng, cell, opts, direction, dtype):
    params = rnn_xp.init(cell, 4, 5, num_layers=2, direction=direction, seed=11, dtype="float64", xp=np, **opts)
    _compare(params, rng.standard_normal((3, 7, 4)), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lengths_masks_and_initial_state(rng, cell, dtype):
    params = rnn_xp.init(cell, 3, 6, num_layers=2, bidirectional=True, seed=12, dtype="float64", xp=np,
                         proj_size=4 if cell == "lstm" else 0)
    cfg = params.config
    B, T = 5, 9
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, cfg.output_size))
    init = (h0, rng.standard_normal((4, B, cfg.hidden_size))) if cell == "lstm" else h0
    lengths = np.array([9, 0, 4, 1, 6])
    mask = rng.random((B, T)) > 0.3
    mask[:, 0] = False
    for kw in ({}, {"lengths": lengths}, {"mask": mask}, {"mask": mask, "zero_output_for_mask": True},
               {"lengths": lengths, "mask": mask}):
        _compare(params, x, dtype, initial_state=init, **kw)


def test_tiny_chunks_and_time_major(rng, monkeypatch):
    """Chunks of one step (and a ragged last chunk) give the reference's numbers."""
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 1)
    for cell in ("rnn", "lstm", "gru"):
        params = rnn_xp.init(cell, 3, 4, bidirectional=True, seed=13, dtype="float64", xp=np)
        _compare(params, rng.standard_normal((2, 7, 3)), "float64", lengths=np.array([7, 3]))
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 3 * 2 * 4 * 3)  # 3 steps of B=2, G*H=12: chunks 3, 3, 1
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


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (0, 4, 3), (2, 0, 3), (0, 0, 2)])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_degenerate_sizes(rng, cell, B, T, H):
    params = rnn_xp.init(cell, 2, H, num_layers=2, bidirectional=True, seed=16, dtype="float64", xp=np)
    x = rng.standard_normal((B, T, 2))
    _compare(params, x, "float64")
    if B:
        _compare(params, x, "float64", lengths=np.zeros(B, dtype=np.int64))


def test_every_combination_of_cell_options(rng):
    for cell, bias, direction in itertools.product(["rnn", "lstm", "gru"], [True, "single", False],
                                                   ["forward", "bidirectional"]):
        params = rnn_xp.init(cell, 3, 4, num_layers=2, bias=bias, direction=direction, seed=17, dtype="float64",
                             xp=np)
        _compare(params, rng.standard_normal((2, 5, 3)), "float32", lengths=np.array([5, 2]))


def test_auto_picks_the_fast_path_and_other_dtypes_fall_back(rng, monkeypatch):
    assert "numpy-fused" in rnn_xp.implementations(np)
    # numpy-fused is auto's choice where numba is not installed (made so here if it is), and explain says why
    numba_cpu = importlib.import_module("rnn_xp._fast.numba_cpu")
    monkeypatch.setitem(numba_cpu._state, "kernels", None)
    monkeypatch.setitem(numba_cpu._state, "reason", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ModuleNotFoundError
    seen = []
    real = fused.run_direction
    monkeypatch.setattr(fused, "run_direction", lambda *a, **k: seen.append(1) or real(*a, **k))
    params = rnn_xp.init("gru", 3, 4, seed=18, xp=np)
    x = rng.standard_normal((2, 3, 3)).astype("float32")
    rnn_xp.forward(x, params)
    assert seen, "impl='auto' on numpy did not run the fast path"
    choice = rnn_xp.explain(x, params)
    assert choice.implementation == "numpy-fused"
    assert dict(choice.skipped)["numba"] == "numba is not installed (pip install 'rnn_xp[numba]')"
    # float16 is not fast-pathed: the runner hands it to the reference and the numbers agree with it
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
