"""rnn_xp.Stream: feeding a sequence in any chunks gives what one call over the whole sequence gives."""

import importlib
import os

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp

TOL = {"float32": 3e-6, "float64": 1e-12, "float16": 2e-3}

CELLS = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("lstm", {}),
    ("lstm", {"proj_size": 3}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    ("gru", {}),
    ("gru", {"reset_after": False, "bias": "single"}),
    ("gru", {"bias": False, "clip": 0.5}),
]
CELL_IDS = [f"{c}-{i}" for i, (c, _) in enumerate(CELLS)]


def _host(a):
    return _xp.to_host(a).astype(np.float64)


def _splits(T, how, rng):
    """Chunk boundaries covering range(T): chunks of 1, of 2, random sizes (0 included), or one chunk."""
    if how == "all":
        return [(0, T)]
    if how == "random":
        cuts, t = [], 0
        while t < T:
            n = int(rng.integers(0, 4))  # 0: an empty chunk now and then
            cuts.append((t, min(T, t + n)))
            t += n
        return cuts
    n = int(how)
    return [(t, min(T, t + n)) for t in range(0, T, n)]


def _feed(stream, x, cuts, *, time_major=False, mask=None, lengths=None, xp=np):
    """The stream's outputs over the chunks, concatenated on the time axis (host float64)."""
    ys = []
    for t0, t1 in cuts:
        chunk = x[t0:t1, ...] if time_major else x[:, t0:t1, ...]
        kw = {}
        if mask is not None:
            kw["mask"] = mask[t0:t1, ...] if time_major else mask[:, t0:t1]
        if lengths is not None:  # the valid steps of this chunk
            kw["lengths"] = np.clip(lengths - t0, 0, t1 - t0)
        y = stream(chunk, **kw)
        assert _xp.namespace_name(_xp.array_namespace(y)) == _xp.namespace_name(_xp.array_namespace(x))
        assert tuple(y.shape)[:2] == ((t1 - t0, x.shape[1]) if time_major else (x.shape[0], t1 - t0))
        ys.append(_host(y))
    return np.concatenate(ys, axis=0 if time_major else 1)


def _state_close(got, want, tol):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(_host(g), _host(w), rtol=0, atol=tol)
    else:
        np.testing.assert_allclose(_host(got), _host(want), rtol=0, atol=tol)


@pytest.mark.parametrize("how", ["1", "2", "random", "all"])
@pytest.mark.parametrize("cell,opts", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_any_chunking_equals_one_forward(rng, cell, opts, how, dtype):
    params = rnn_xp.init(cell, 4, 5, num_layers=2, seed=3, dtype=dtype, xp=np, **opts)
    x = rng.standard_normal((3, 9, 4)).astype(dtype)
    y, state = rnn_xp.forward(x, params)
    stream = rnn_xp.Stream(params)
    got = _feed(stream, x, _splits(9, how, rng))
    np.testing.assert_allclose(got, y, rtol=0, atol=TOL[dtype])
    _state_close(stream.state, state, TOL[dtype])


@pytest.mark.parametrize("how", ["1", "2", "random", "all"])
@pytest.mark.parametrize("cell,opts", CELLS, ids=CELL_IDS)
def test_masks_and_lengths_per_chunk(rng, cell, opts, how):
    params = rnn_xp.init(cell, 4, 5, num_layers=2, seed=4, dtype="float64", xp=np, **opts)
    x = rng.standard_normal((4, 10, 4))
    mask = rng.random((4, 10)) > 0.4
    mask[1, :4] = False  # a row whose first steps are masked: it outputs zero until it runs
    lengths = np.array([10, 6, 0, 3])
    for kw in ({"mask": mask}, {"lengths": lengths}, {"mask": mask, "lengths": lengths}):
        y, state = rnn_xp.forward(x, params, **kw)
        stream = rnn_xp.Stream(params)
        got = _feed(stream, x, _splits(10, how, rng), **kw)
        np.testing.assert_allclose(got, y, rtol=0, atol=1e-12)
        _state_close(stream.state, state, 1e-12)


def test_masked_chunks_after_unmasked_ones_carry_the_last_output(rng):
    """A chunk without a mask is a chunk whose every step runs; the last output carries across chunks."""
    params = rnn_xp.init("lstm", 3, 4, seed=5, dtype="float64", xp=np)
    x = rng.standard_normal((2, 8, 3))
    mask = np.ones((2, 8), dtype=bool)
    mask[:, 4:7] = False  # the second chunk is all masked: it repeats the first chunk's last output
    y, _ = rnn_xp.forward(x, params, mask=mask)
    stream = rnn_xp.Stream(params)
    got = [_host(stream(x[:, :4]))] + [_host(stream(x[:, 4:8], mask=mask[:, 4:8]))]
    np.testing.assert_allclose(np.concatenate(got, axis=1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1][:, 0], got[0][:, -1], rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_initial_state_and_time_major(rng, cell):
    params = rnn_xp.init(cell, 3, 4, num_layers=2, seed=6, dtype="float64", xp=np)
    x = rng.standard_normal((7, 2, 3))  # (T, B, F)
    h0 = rng.standard_normal((2, 2, 4))
    init = (h0, rng.standard_normal((2, 2, 4))) if cell == "lstm" else h0
    mask = rng.random((7, 2)) > 0.3
    mask[:3, 0] = False  # before its first step, a masked row outputs zero even with a non-zero h0
    y, state = rnn_xp.forward(x, params, init, time_major=True, mask=mask)
    stream = rnn_xp.Stream(params, init, time_major=True)
    _state_close(stream.state, init, 0)  # before the first call: the initial state
    got = _feed(stream, x, _splits(7, "2", rng), time_major=True, mask=mask)
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-12)
    _state_close(stream.state, state, 1e-12)
    stream.reset()
    got = _feed(stream, x, _splits(7, "1", rng), time_major=True, mask=mask)
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("masked", [False, True])
def test_reset_rows_mid_stream_equals_fresh_sequences(rng, cell, masked):
    """Rows reset mid-stream start sequences of their own; the other rows go on undisturbed."""
    params = rnn_xp.init(cell, 3, 4, num_layers=2, seed=7, dtype="float64", xp=np)
    h0 = rng.standard_normal((2, 3, 4))
    init = (h0, rng.standard_normal((2, 3, 4))) if cell == "lstm" else h0
    x = rng.standard_normal((3, 10, 3))
    mask = (rng.random((3, 10)) > 0.3) if masked else None
    stream = rnn_xp.Stream(params, init)
    kw = {} if mask is None else {"mask": mask[:, :4]}
    first = _host(stream(x[:, :4], **kw))
    for rows in ([1], np.array([False, True, False])):  # indices and a boolean array reset the same row
        s = rnn_xp.Stream(params, init)
        s(x[:, :4], **kw)
        s.reset(rows)
        kw2 = {} if mask is None else {"mask": mask[:, 4:]}
        second = _host(s(x[:, 4:], **kw2))
        whole, _ = rnn_xp.forward(x, params, init, mask=mask)  # rows 0 and 2: one sequence
        np.testing.assert_allclose(np.concatenate([first, second], axis=1)[[0, 2]], whole[[0, 2]], rtol=0, atol=1e-12)
        init1 = tuple(a[:, 1:2] for a in init) if cell == "lstm" else init[:, 1:2]
        fresh, fresh_state = rnn_xp.forward(x[1:2, 4:], params, init1, mask=None if mask is None else mask[1:2, 4:])
        np.testing.assert_allclose(second[1:2], fresh, rtol=0, atol=1e-12)  # row 1: a fresh sequence
        got_state = s.state
        if cell == "lstm":
            _state_close(tuple(a[:, 1:2] for a in got_state), fresh_state, 1e-12)
        else:
            _state_close(got_state[:, 1:2], fresh_state, 1e-12)


def test_reset_releases_the_batch_size_and_a_different_one_raises(rng):
    params = rnn_xp.init("gru", 3, 4, seed=8, xp=np)
    stream = rnn_xp.Stream(params)
    assert stream.batch_size is None and stream.state is None
    stream(rng.standard_normal((2, 1, 3)).astype(np.float32))
    assert stream.batch_size == 2
    with pytest.raises(ValueError, match=r"batch size 3 .* batch size is 2.*reset"):
        stream(rng.standard_normal((3, 1, 3)).astype(np.float32))
    stream.reset()
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(stream(x), rnn_xp.forward(x, params)[0], rtol=0, atol=3e-6)
    with pytest.raises(ValueError, match=r"rows must lie in \[-3, 3\)"):
        stream.reset([3])
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
        stream.reset(np.array([True, False]))
    with pytest.raises(TypeError, match="rows must be"):
        stream.reset("0")


def test_the_numpy_path_writes_no_stale_buffer_into_earlier_outputs(rng):
    """Each call returns an array of its own: later calls do not change it."""
    params = rnn_xp.init("lstm", 3, 4, num_layers=2, seed=9, xp=np)
    stream = rnn_xp.Stream(params)
    x = rng.standard_normal((1, 6, 3)).astype(np.float32)
    ys = [stream(x[:, t : t + 1]) for t in range(6)]
    kept = [y.copy() for y in ys]
    stream(x[:, :2])
    for y, k in zip(ys, kept, strict=True):
        np.testing.assert_array_equal(y, k)
    state = stream.state
    before = state[0].copy()
    stream(x[:, :1])
    np.testing.assert_array_equal(state[0], before)  # the state is a copy too


def _namespaces():
    out = ["array_api_strict"]
    for name in ("torch", "jax.numpy"):
        try:
            importlib.import_module(name)
            out.append(name)
        except ImportError:
            pass
    return out


@pytest.mark.parametrize("name", _namespaces())
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_other_namespaces(rng, name, cell):
    """The seam's implementations, chosen once per chunk length; JAX's immutable arrays included."""
    xp = _xp.as_namespace(importlib.import_module(name))
    host = rnn_xp.init(cell, 3, 4, num_layers=2, seed=10, dtype="float64", xp=np)
    params = rnn_xp.to_device(host, xp, dtype="float32")
    xh = rng.standard_normal((3, 8, 3))
    mask = rng.random((3, 8)) > 0.3
    y, state = rnn_xp.forward(xh, host, mask=mask)
    stream = rnn_xp.Stream(params)
    got = _feed(stream, on(xp, xh, "float32"), _splits(8, "random", rng), mask=on(xp, mask))
    np.testing.assert_allclose(got, y, rtol=0, atol=3e-6)
    _state_close(stream.state, state, 3e-6)
    stream.reset(on(xp, np.array([True, False, True])))  # a boolean array of the namespace
    stream.reset([0])


def test_float16_is_computed_in_float32_across_chunks(rng):
    params = rnn_xp.init("lstm", 3, 4, seed=11, dtype="float16", xp=np)
    x = rng.standard_normal((2, 9, 3)).astype(np.float16)
    y, _ = rnn_xp.forward(x, params)
    stream = rnn_xp.Stream(params)
    got = _feed(stream, x, _splits(9, "2", rng))
    np.testing.assert_allclose(got, y.astype(np.float64), rtol=0, atol=2e-3)
    assert stream(x[:, :1]).dtype == np.float16 and stream.state[0].dtype == np.float16


# --- models ----------------------------------------------------------------------------------------
def _sequence_model():
    """Masking -> LSTM (sequences) -> GRU (sequences, zero outputs on masked steps) -> Dense softmax."""
    return rnn_xp.Sequential(
        [
            rnn_xp.Masking(0.0),
            rnn_xp.Recurrent(rnn_xp.init("lstm", 3, 5, bias="single", seed=1, xp=np), return_sequences=True),
            rnn_xp.Recurrent(rnn_xp.init("gru", 5, 4, seed=2, xp=np), return_sequences=True, zero_output_for_mask=True),
            rnn_xp.Dense.init(4, 3, activation="softmax", seed=3, xp=np),
        ]
    )


def _classifier(zero_output_for_mask):
    """Embedding(mask_zero) -> LSTM (sequences) -> SimpleRNN (last output) -> Dense sigmoid."""
    return rnn_xp.Sequential(
        [
            rnn_xp.Embedding.init(20, 4, mask_zero=True, seed=4, xp=np),
            rnn_xp.Recurrent(rnn_xp.init("lstm", 4, 5, num_layers=2, seed=5, xp=np), return_sequences=True),
            rnn_xp.Recurrent(
                rnn_xp.init("rnn", 5, 6, bias="single", seed=6, xp=np), zero_output_for_mask=zero_output_for_mask
            ),
            rnn_xp.Dense.init(6, 1, activation="sigmoid", seed=7, xp=np),
        ]
    )


@pytest.mark.parametrize("how", ["1", "2", "random", "all"])
def test_a_per_step_model_streams_its_sequence(rng, how):
    model = _sequence_model()
    x = rng.standard_normal((3, 9, 3)).astype(np.float32)
    x[0, 2:4] = 0.0  # masked by Masking
    x[2, :3] = 0.0
    mask = rng.random((3, 9)) > 0.2  # and a mask of the caller's (Masking replaces it, as in Keras)
    for kw in ({}, {"mask": mask}):
        whole = model(x, **kw)
        got = _feed(rnn_xp.Stream(model), x, _splits(9, how, rng), **kw)
        np.testing.assert_allclose(got, whole, rtol=0, atol=3e-6)


@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("time_major", [False, True])
def test_a_classifier_predicts_after_every_chunk(rng, zero_output_for_mask, time_major):
    """A model whose last recurrent layer returns its last output: after each chunk, the prefix's prediction."""
    model = _classifier(zero_output_for_mask)
    ids = rng.integers(0, 20, (4, 10))
    ids[1, 3:6] = 0  # padding tokens: masked steps
    ids[2, -1] = 0  # the last step masked: zero_output_for_mask zeroes the last output
    ids[3, :] = 0
    stream = rnn_xp.Stream(model, time_major=time_major)
    assert stream.state is None
    for t0, t1 in _splits(10, "random", rng):
        chunk = ids[:, t0:t1].T if time_major else ids[:, t0:t1]
        got = stream(chunk)
        if t1 > 0:
            np.testing.assert_allclose(got, model(ids[:, :t1]), rtol=0, atol=3e-6)
    assert [type(s) for s in stream.state] == [tuple, np.ndarray]  # the LSTM's (h, c), the SimpleRNN's h
    stream.reset([2])  # row 2 starts over; row 0 goes on
    more = ids[:, :3]
    got = stream(more.T if time_major else more)
    np.testing.assert_allclose(got[[0]], model(np.concatenate([ids, more], axis=1)[[0]]), rtol=0, atol=3e-6)
    np.testing.assert_allclose(got[[2]], model(more[[2]]), rtol=0, atol=3e-6)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_a_keras_model_streams(rng):
    pytest.importorskip("torch")  # the backend Keras runs on here
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    L = keras.layers
    km = keras.Sequential(
        [
            keras.Input((None, 3)),
            L.Masking(0.0),
            L.GRU(4, return_sequences=True),
            L.LSTM(5, return_sequences=True),
            L.Dense(2),
        ]
    )
    model = rnn_xp.from_keras(km)
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    x[1, 2:4] = 0.0
    expected = np.asarray(keras.ops.convert_to_numpy(km(x)))
    got = _feed(rnn_xp.Stream(model), x, _splits(7, "2", rng))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


# --- refusals ---------------------------------------------------------------------------------------
def test_layers_that_need_the_future_are_refused():
    for direction in ("bidirectional", "reverse"):
        with pytest.raises(ValueError, match="reads the sequence from its end"):
            rnn_xp.Stream(rnn_xp.init("lstm", 3, 4, direction=direction, xp=np))
    rec = rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, xp=np), return_sequences=True)
    back = rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, xp=np), return_sequences=True, go_backwards=True)
    with pytest.raises(ValueError, match="go_backwards=True reads the sequence from its end"):
        rnn_xp.Stream(rnn_xp.Sequential([back]))
    with pytest.raises(ValueError, match="backward layer reads the sequence from its end"):
        rnn_xp.Stream(rnn_xp.Sequential([rnn_xp.Bidirectional(rec, back)]))
    last = rnn_xp.Recurrent(rnn_xp.init("gru", 3, 3, xp=np))
    # such a model is refused when built (a Sequential checks that its layers chain), before Stream sees it
    with pytest.raises(ValueError, match="returns only its last output|outputs one vector per sequence"):
        rnn_xp.Stream(rnn_xp.Sequential([last, rec]))


def test_bad_arguments_are_refused(rng):
    params = rnn_xp.init("lstm", 3, 4, xp=np)
    with pytest.raises(TypeError, match="RNNParams or a Sequential"):
        rnn_xp.Stream("params")
    with pytest.raises(TypeError, match="time_major must be True or False"):
        rnn_xp.Stream(params, time_major="no")
    with pytest.raises(TypeError, match=r"initial_state must be the pair \(h0, c0\)"):
        rnn_xp.Stream(params, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(TypeError, match="initial_state is for params only"):
        rnn_xp.Stream(_sequence_model(), np.zeros((1, 2, 4), np.float32))
    stream = rnn_xp.Stream(params, (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)))
    with pytest.raises(ValueError, match="initial_state is for batch size 2"):
        stream(np.zeros((3, 1, 3), np.float32))
    stream = rnn_xp.Stream(params)
    stream(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(TypeError, match="dtype float64 but params are float32"):
        stream(np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="input_size=3"):
        stream(np.zeros((2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="expected 3 dimensions"):
        stream(np.zeros((2, 3), np.float32))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch array but params live in numpy"):
        stream(torch.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\); expected \(2, 1\)"):
        stream(np.zeros((2, 1, 3), np.float32), mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 1\]"):
        stream(np.zeros((2, 1, 3), np.float32), lengths=[2, 0])
    with pytest.raises(TypeError, match="lengths= is for params"):
        rnn_xp.Stream(_sequence_model())(np.zeros((2, 1, 3), np.float32), lengths=[1, 1])
    graph_like = type("Graph", (), {})()
    with pytest.raises(TypeError, match="got Graph"):
        rnn_xp.Stream(graph_like)


def _readme_code(heading):
    """The python blocks of a README section, as written there."""
    import re

    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)


def test_the_readme_streaming_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = _readme_code("## Streaming: one frame at a time")
    scope = {}
    exec(compile(code, "README.md (streaming)", "exec"), scope)  # noqa: S102 - the project's own README
    assert scope["y"].shape == (4, 1, 128) and scope["h_n"].shape == (1, 4, 128)
    stream, params = scope["stream"], scope["params"]
    np.testing.assert_array_equal(scope["h_n"][:, 2], np.zeros((1, 128), np.float32))  # the reset row
    x = np.random.default_rng(1).standard_normal((4, 3, 40), dtype=np.float32)
    stream.reset()
    np.testing.assert_allclose(stream(x), rnn_xp.forward(x, params)[0], rtol=0, atol=3e-6)
