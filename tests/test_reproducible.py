"""Reproducible to the bit: a sequence gets the same outputs and final state wherever and however it runs.

The guarantee (README, "Reproducible results"), for impl="numba" and impl="numpy-fused": the outputs
and final states of a sequence are bit-identical whether it runs alone or at any position of any
batch (with or without lengths or masks on the other rows), with any thread count or split, and
whether it comes from forward or from a Stream fed in any chunking. Checked with hypothesis over
cells, options, batch compositions, chunkings and thread settings. numpy-fused's batch compositions hold
only where NumPy's BLAS computes each row of a product alike whatever the rows beside it (its probe,
numpy_fused.rows_alike, says; tested here both ways).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_xp
from rnn_xp import stream as stream_mod
from rnn_xp._fast import _threads, numpy_fused

IMPLS = ["numba", "numpy-fused"]
CONFIGS = [  # a few kernels (each compiles once): every cell, both GRU conventions, LSTM options
    ("rnn", {}),
    ("lstm", {}),
    ("gru", {}),
    ("gru", {"reset_after": False}),
    ("lstm", {"proj_size": 5, "peepholes": True}),
    ("lstm", {"clip": 0.9, "activations": ["HardSigmoid", "Tanh", "Softsign"]}),
]
F, H = 6, 19
_PARAMS = {}

SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def params_for(i, dtype="float32"):
    key = (i, dtype)
    if key not in _PARAMS:
        cell, opts = CONFIGS[i]
        _PARAMS[key] = rnn_xp.init(cell, F, H, seed=40 + i, dtype=dtype, **opts)
    return _PARAMS[key]


@pytest.fixture(params=IMPLS)
def impl(request):
    if request.param == "numba":
        pytest.importorskip("numba")
    return request.param


def threads(monkeypatch, mode):
    """'one' thread, or two splitting the 'rows', the 'units' (each thread its groups for every row) or
    the rows in 'parts' (every group in each part: the kernel's units split with one part of the groups,
    a barrier a step), whatever the size of the call (a Stream's one-step calls on a team of resident threads)
    and the number of groups of units."""
    from rnn_xp._fast import numba_cpu

    units = {"rows": 0, "units": 2, "parts": 1}.get(mode)  # the kernel's units (U parts of the groups)
    if units is not None:
        monkeypatch.setattr(numba_cpu.Direction, "_plan", lambda self, nth, B: (nth, units))

    monkeypatch.setitem(_threads._setting, "threads", 1 if mode == "one" else 2)
    monkeypatch.setattr(numba_cpu, "CALL_PARALLEL_MIN", 0)
    monkeypatch.setattr(numba_cpu, "PARALLEL_MIN", 0)
    monkeypatch.setattr(numba_cpu, "TEAM_STEP_MIN", 0)
    monkeypatch.setattr(numba_cpu, "_cores_busy", lambda: False)
    monkeypatch.setattr(numba_cpu, "_cores_busy_cached", lambda: False)
    monkeypatch.setattr(numba_cpu, "_held_elsewhere", lambda ctl: False)
    monkeypatch.setattr(numba_cpu, "ROWS_PER_THREAD_MIN", 1 if mode == "rows" else 1 << 62)
    monkeypatch.setattr(numba_cpu, "ROWS_PER_THREAD_FULL", 1)


def flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@SETTINGS
@given(
    config=st.integers(0, len(CONFIGS) - 1),
    B=st.integers(2, 7),
    T=st.integers(1, 14),
    data=st.data(),
    mode=st.sampled_from(["one", "rows", "units", "parts"]),
)
def test_a_sequence_alone_or_anywhere_in_any_batch(impl, monkeypatch, config, B, T, data, mode):
    if impl == "numpy-fused" and not numpy_fused.rows_alike("float32"):
        pytest.skip("NumPy's BLAS here sums a row by the rows beside it (explain says so: tested below)")
    params = params_for(config)
    rng = np.random.default_rng([config, B, T])
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    pos = data.draw(st.integers(0, B - 1), label="position")
    length = data.draw(st.integers(0, T), label="its length")
    masked = data.draw(st.sampled_from(["none", "lengths", "mask"]), label="masks")
    threads(monkeypatch, mode)
    alone_y, alone_state = rnn_xp.forward(x[pos : pos + 1, :length], params, impl=impl)
    kw = {}
    if masked == "lengths":
        lengths = rng.integers(0, T + 1, size=B)
        lengths[pos] = length
        kw["lengths"] = lengths
    elif masked == "mask":
        mask = rng.random((B, T)) < 0.7
        mask[pos] = np.arange(T) < length
        kw["mask"] = mask
    else:
        x[pos, length:] = rng.standard_normal((T - length, F))  # its own length: the steps after it differ
    y, state = rnn_xp.forward(x if kw else x[:, :length], params, impl=impl, **kw)
    assert_same_bits(np.ascontiguousarray(y[pos, :length]), alone_y[0])
    if kw:
        tail = y[pos, length:]
        if masked == "lengths":
            assert not tail.any()  # zero past its length
    for a, b in zip(flat(state), flat(alone_state), strict=True):
        assert_same_bits(np.ascontiguousarray(a[:, pos]), b[:, 0])


@SETTINGS
@given(
    config=st.integers(0, len(CONFIGS) - 1),
    B=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    mode=st.sampled_from(["one", "rows", "units", "parts"]),
)
def test_a_stream_in_any_chunks_is_forward(impl, monkeypatch, config, B, cuts, mode):
    params = params_for(config)
    if params.config.direction != "forward":
        return
    T = sum(cuts)
    x = np.random.default_rng([config, B, T]).standard_normal((B, T, F)).astype(np.float32)
    threads(monkeypatch, mode)
    monkeypatch.setattr(stream_mod, "PREPARED", ("numba_cpu",) if impl == "numba" else ("numpy_fused",))
    y, state = rnn_xp.forward(x, params, impl=impl)
    s = rnn_xp.Stream(params)
    got, t = [], 0
    for n in cuts:
        got.append(s(x[:, t : t + n]))
        t += n
    assert_same_bits(np.concatenate(got, axis=1), y)
    for a, b in zip(flat(s.state), flat(state), strict=True):
        assert_same_bits(a, b)


@pytest.mark.parametrize("mode", ["one", "rows", "units", "parts"])
@pytest.mark.parametrize("config", range(len(CONFIGS)))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_frame_by_frame_is_forward(impl, monkeypatch, config, dtype, mode):
    """The one-step path of a Stream (a frame a call, batch 1 and 3; on one thread or a team of resident
    threads splitting the rows or the units) gives forward's bits."""
    params = params_for(config, dtype)
    monkeypatch.setattr(stream_mod, "PREPARED", ("numba_cpu",) if impl == "numba" else ("numpy_fused",))
    y_one = {}
    for B in (1, 3):
        x = np.random.default_rng(B).standard_normal((B, 9, F)).astype(dtype)
        y_one[B] = rnn_xp.forward(x, params, impl=impl)  # on one thread
    threads(monkeypatch, mode)
    if impl == "numba":
        from rnn_xp._fast import numba_cpu

        monkeypatch.setattr(numba_cpu, "TEAM_GAP", float("inf"))  # every call after the first on the team
    teams = []
    real = _threads.run_team
    monkeypatch.setattr(_threads, "run_team", lambda fn, nth, *a: teams.append(nth) or real(fn, nth, *a))
    for B in (1, 3):
        x = np.random.default_rng(B).standard_normal((B, 9, F)).astype(dtype)
        y, state = y_one[B]
        s = rnn_xp.Stream(params)
        got = np.concatenate([s(x[:, t : t + 1]) for t in range(9)], axis=1)
        assert_same_bits(got, y)
        for a, b in zip(flat(s.state), flat(state), strict=True):
            assert_same_bits(a, b)
    assert len(teams) == (16 * params.config.num_layers if impl == "numba" and mode != "one" else 0)


def test_the_stream_runs_the_compiled_engine_where_it_is_installed():
    pytest.importorskip("numba")
    s = rnn_xp.Stream(params_for(1))
    s(np.zeros((2, 3, F), dtype=np.float32))
    assert s._units[0].prepared[0].__name__ == "rnn_xp._fast.numba_cpu"


@pytest.mark.parametrize("mode", ["one", "rows", "units", "parts"])
@pytest.mark.parametrize("config", [0, 1, 3])
def test_the_input_layout_does_not_change_the_bits(impl, monkeypatch, config, mode):
    """Batch-first or time-major, read-only, strided: the kernel reads the rows of x where they lie (the
    threads copying their own), or x is copied first (other layouts); every way gives the same bits."""
    params = params_for(config)
    threads(monkeypatch, mode)
    rng = np.random.default_rng(config)
    wide = rng.standard_normal((5, 11, 2 * F)).astype(np.float32)
    x = np.ascontiguousarray(wide[:, :, ::2])  # (B, T, F)
    y, state = rnn_xp.forward(x, params, impl=impl)
    frozen = x.copy()
    frozen.setflags(write=False)
    ways = {
        "time-major": rnn_xp.forward(np.ascontiguousarray(x.transpose(1, 0, 2)), params, impl=impl, time_major=True),
        "read-only": rnn_xp.forward(frozen, params, impl=impl),
        "strided": rnn_xp.forward(wide[:, :, ::2], params, impl=impl),
    }
    for name, (y2, state2) in ways.items():
        y2 = y2.transpose(1, 0, 2) if name == "time-major" else y2
        assert_same_bits(np.ascontiguousarray(y2), np.ascontiguousarray(y))
        for a, b in zip(flat(state2), flat(state), strict=True):
            assert_same_bits(a, b)
    if impl == "numba":  # one compiled signature per kernel: no layout or flag made numba compile another
        from rnn_xp._fast import _numba_kernels

        for fn in _numba_kernels._KERNELS.values():
            assert len(fn.signatures) <= 1, fn.signatures


_MATMUL = np.matmul  # the real one (the fakes below stand in for it)


def _row_by_row(a, b, out=None):
    """A matmul that computes each row on its own (a BLAS whose rows do not see each other)."""
    r = np.stack([np.dot(row, b) for row in a]) if a.ndim == 2 else np.dot(a, b)
    if out is None:
        return r
    out[...] = r
    return out


def _by_row_count(a, b, out=None):
    """A matmul whose rows' last bits depend on how many rows there are (OpenBLAS's Haswell kernels)."""
    r = _MATMUL(a, b)
    if a.ndim == 2 and a.shape[0] >= 4:
        r = np.nextafter(r, np.inf)
    return r


@pytest.mark.parametrize("fake,alike", [(_row_by_row, True), (_by_row_count, False)])
def test_numpy_fused_asks_its_blas_whether_rows_stay_apart(monkeypatch, fake, alike):
    numpy_fused.rows_alike.cache_clear()
    try:
        monkeypatch.setattr(numpy_fused.np, "matmul", fake)
        assert numpy_fused.rows_alike("float32") is alike
        params = rnn_xp.init("lstm", 3, 4, seed=0)
        text = str(rnn_xp.explain(np.zeros((2, 5, 3), np.float32), params, impl="numpy-fused"))
    finally:
        monkeypatch.undo()
        numpy_fused.rows_alike.cache_clear()
    assert text.splitlines()[0] == "implementation: numpy-fused", text
    if alike:
        assert "alike whatever the rows beside it" in text, text
    else:
        assert "depend on its batch" in text and "impl='numba'" in text, text


def test_numpy_fused_keeps_its_word_on_this_blas():
    """What the probe says of the BLAS at hand holds for real calls: sequences alone and in batches of 5, 13, 64."""
    params = rnn_xp.init("lstm", 96, 64, seed=3)
    x = np.random.default_rng(3).standard_normal((64, 6, 96)).astype(np.float32)
    alone = [rnn_xp.forward(x[b : b + 1], params, impl="numpy-fused")[0][0] for b in range(5)]
    same = [
        np.array_equal(rnn_xp.forward(x[:n], params, impl="numpy-fused")[0][b], alone[b])
        for n in (5, 13, 64)
        for b in range(5)
    ]
    assert all(same) if numpy_fused.rows_alike("float32") else not all(same)
