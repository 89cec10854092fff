"""The compiled CPU implementation (impl="numba") against the reference loop (impl="reference").

Every option the reference supports: cells, every activation with alpha/beta, clip, biases,
peepholes, input_forget, projection, GRU reset before/after, lengths, masks, initial states,
directions, layers, chunking, float32 and float64; on one thread and split over threads by units
(batch 1: a barrier a step) and by batch rows. Its buffers are poisoned with NaN so an element it
forgot to write shows.

The helpers take an implementation name so that they serve any NumPy implementation.
"""

import importlib
import itertools
import threading
import time

import numpy as np
import pytest

import rnn_xp
from rnn_xp import seam
from rnn_xp._fast import _threads
from rnn_xp.activations import _SPEC

pytest.importorskip("numba")

IMPL = "numba"
TOL = {"float32": 3e-5, "float64": 1e-10}  # relative to the reference's scale
loop = importlib.import_module("rnn_xp.loop")


def impl_module(impl):
    """The module that implements ``impl`` (seam.IMPLEMENTATIONS)."""
    entry = next(i for i in seam.IMPLEMENTATIONS if i.name == impl)
    return importlib.import_module("rnn_xp.loop" if entry.module == "loop" else f"rnn_xp._fast.{entry.module}")


def poison(monkeypatch, impl):
    """Make every buffer ``impl`` allocates start as NaN; returns the list of shapes it allocated."""
    calls = []

    def nan_empty(shape, dtype):
        calls.append(shape)
        return np.full(shape, np.nan, dtype=dtype)

    mod = impl_module(impl)
    monkeypatch.setattr(mod, "_empty", nan_empty)
    if hasattr(mod, "REUSE_SCRATCH"):  # every buffer fresh, so poisoned
        monkeypatch.setattr(mod, "REUSE_SCRATCH", False)
    return calls


def compare(impl, params, x, dtype, *, initial_state=None, tol=None, **kw):
    """forward with ``impl`` against impl="reference": same dtype, shapes, every element finite and close."""
    p = rnn_xp.to_device(params, np, dtype=dtype)
    x = x.astype(dtype)
    if initial_state is not None:
        initial_state = (
            tuple(s.astype(dtype) for s in initial_state)
            if isinstance(initial_state, tuple)
            else initial_state.astype(dtype)
        )
    ref = rnn_xp.forward(x, p, initial_state, impl="reference", **kw)
    got = rnn_xp.forward(x, p, initial_state, impl=impl, **kw)
    flat_ref = [ref[0], *(ref[1] if isinstance(ref[1], tuple) else (ref[1],))]
    flat_got = [got[0], *(got[1] if isinstance(got[1], tuple) else (got[1],))]
    for a, b in zip(flat_got, flat_ref, strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) and a.shape == b.shape
        finite = np.isfinite(b)
        assert np.all(np.isfinite(a) == finite), "an output element was never written (NaN poison survived)"
        np.testing.assert_array_equal(a[~finite], b[~finite])  # the same infinities (Exponential overflows)
        a, b = a[finite], b[finite]
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
        assert err <= (tol or TOL[dtype]) * scale, f"max abs error {err:.3e} vs reference (scale {scale:.3g})"
    return got


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    return poison(monkeypatch, IMPL)


def threaded(monkeypatch, n=2):
    """The threaded kernels on n threads, whatever the size of the call or the machine's load."""
    mod = impl_module(IMPL)
    monkeypatch.setattr(mod, "PARALLEL_MIN", 0)
    monkeypatch.setattr(mod, "CALL_PARALLEL_MIN", 0)
    monkeypatch.setattr(mod, "_cores_busy", lambda: False)
    monkeypatch.setitem(_threads._setting, "threads", n)


def use_path(monkeypatch, path):
    """How threads share a step: 'rows' (each thread its rows), 'units' (each thread its groups of units for
    every row, a barrier a step, as at batch 1) or 'parts' (nth // 2 parts of the groups, or one, each for
    parts of the rows), whatever the number of groups."""
    mod = impl_module(IMPL)
    monkeypatch.setattr(mod, "ROWS_PER_THREAD_MIN", 1 if path == "rows" else 1 << 62)
    monkeypatch.setattr(mod, "ROWS_PER_THREAD_FULL", 1)
    if path != "rows":
        parts = (lambda nth: nth) if path == "units" else (lambda nth: max(1, nth // 2))
        monkeypatch.setattr(mod.Direction, "_plan", lambda self, nth, B: (nth, parts(nth)))


BATCHES = [
    pytest.param(1, "units", id="B1"),
    pytest.param(3, "rows", id="B3-rows"),
    pytest.param(3, "units", id="B3-units"),
]


@pytest.fixture(params=["serial", "parallel"])
def threads(request, monkeypatch):
    """serial: the one-thread kernels; parallel: the threaded ones, whatever the size of the step."""
    if request.param == "parallel":
        threaded(monkeypatch)
    else:
        monkeypatch.setitem(_threads._setting, "threads", 1)
    return request.param


CASES = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("rnn", {"activations": ["Softsign"], "clip": 0.8, "bias": False}),
    ("lstm", {}),
    ("lstm", {"bias": "single"}),
    ("lstm", {"bias": False}),
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


@pytest.mark.parametrize("B,path", BATCHES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_matches_reference(rng, monkeypatch, threads, cell, opts, direction, dtype, B, path):
    use_path(monkeypatch, path)
    params = rnn_xp.init(cell, 4, 5, num_layers=2, direction=direction, seed=11, dtype="float64", xp=np, **opts)
    compare(IMPL, params, rng.standard_normal((B, 7, 4)), dtype)


# every activation, with alpha and beta where it takes them, in each slot of each cell
ACTIVATIONS = sorted(_SPEC)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # Exponential, in the reference
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation(rng, monkeypatch, name, dtype):
    takes_a, takes_b = _SPEC[name][1], _SPEC[name][2]
    alpha = [0.7] if takes_a else None
    beta = [0.3] if takes_b else None
    x = rng.standard_normal((2, 6, 3))
    for cell, acts in (
        ("rnn", [name]),
        ("gru", [name, "Tanh"]),
        ("gru", ["Sigmoid", name]),
        ("lstm", [name, "Tanh", "Tanh"]),
        ("lstm", ["Sigmoid", name, "Tanh"]),
        ("lstm", ["Sigmoid", "Tanh", name]),
    ):
        for B, path in ((1, "units"), (2, "rows"), (2, "units")):
            use_path(monkeypatch, path)
            a = alpha * sum(_SPEC[n][1] for n in acts) if alpha else None
            b = beta * sum(_SPEC[n][2] for n in acts) if beta else None
            params = rnn_xp.init(
                cell,
                3,
                4,
                seed=21,
                dtype="float64",
                xp=np,
                activations=acts,
                activation_alpha=a,
                activation_beta=b,
                clip=3.0 if cell == "lstm" else None,
            )
            compare(IMPL, params, x[:B], dtype)


@pytest.mark.parametrize(
    "B,path",
    [
        pytest.param(1, "units", id="B1"),
        pytest.param(5, "rows", id="B5-rows"),
        pytest.param(5, "units", id="B5-units"),
        pytest.param(5, "parts", id="B5-parts"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "cell,opts",
    [
        ("rnn", {}),
        ("lstm", {"proj_size": 4}),
        ("lstm", {"peepholes": True}),
        ("gru", {}),
        ("gru", {"reset_after": False}),
    ],
)
def test_lengths_masks_and_initial_state(rng, monkeypatch, threads, cell, opts, dtype, B, path):
    use_path(monkeypatch, path)
    params = rnn_xp.init(cell, 3, 6, num_layers=2, bidirectional=True, seed=12, dtype="float64", xp=np, **opts)
    cfg = params.config
    T = 9
    x = rng.standard_normal((B, T, 3))
    h0 = rng.standard_normal((4, B, cfg.output_size))
    init = (h0, rng.standard_normal((4, B, cfg.hidden_size))) if cell == "lstm" else h0
    lengths = np.array([9, 0, 4, 1, 6])[:B]
    mask = rng.random((B, T)) > 0.3
    mask[:, 0] = False
    for kw in (
        {},
        {"lengths": lengths},
        {"mask": mask},
        {"mask": mask, "zero_output_for_mask": True},
        {"lengths": lengths, "mask": mask},
    ):
        compare(IMPL, params, x, dtype, initial_state=init, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B,path", [(1, "units"), (3, "units"), (5, "rows")])
def test_rnn_products_span_several_groups(rng, monkeypatch, B, path, dtype):
    """An rnn's products and epilogues take up to span_groups() groups of units at once: H over two spans and
    a bit (every thread's last span shorter), on one thread and split by units (each thread's groups in
    spans of their own) or rows, batch 1 projecting its chunk ahead, with lengths and an initial state."""
    from rnn_xp._fast import _numba_kernels as kernels

    cfg = rnn_xp.init("rnn", 3, 512, seed=19, xp=np).config  # wide enough for the CPU's panels (panel_vectors)
    spec = impl_module(IMPL).make_spec(cfg, cfg.activations[0], dtype)
    span = kernels.span_groups(spec)
    assert span > 1
    H = 2 * span * spec.nr + 3
    params = rnn_xp.init("rnn", 3, H, bidirectional=True, seed=19, dtype="float64", xp=np)
    for n in (1, 2):
        threaded(monkeypatch, n)
        use_path(monkeypatch, path)
        x = rng.standard_normal((B, 6, 3))
        h0 = rng.standard_normal((2, B, H))
        compare(IMPL, params, x, dtype, initial_state=h0, lengths=np.array([6, 2, 0, 5, 1])[:B])


def test_panels_are_no_wider_than_a_narrow_layer():
    """A layer narrower than the CPU's panel gets the fewest vectors that hold it, a power of two (the padding
    costs as much as the units); wider layers the CPU's."""
    from rnn_xp._fast._cpu import Blocking

    vectors = impl_module(IMPL).panel_vectors
    avx512 = Blocking(vector_bytes=64, lanes=16, v=4, mr=6, kc=256, accumulators=24, l2_half=1 << 19)
    got = {H: vectors(H, avx512) for H in (1, 16, 17, 32, 33, 48, 64, 65, 1000)}
    assert got == {1: 1, 16: 1, 17: 2, 32: 2, 33: 4, 48: 4, 64: 4, 65: 4, 1000: 4}
    three = Blocking(vector_bytes=32, lanes=8, v=3, mr=4, kc=256, accumulators=12, l2_half=1 << 19)  # rnn-xp tune's
    assert [vectors(H, three) for H in (8, 9, 16, 17, 24, 100)] == [1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("cell,opts", [("lstm", {"proj_size": 2}), ("gru", {"reset_after": False}), ("rnn", {})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_narrow_panels_give_the_bits_of_full_ones(rng, monkeypatch, cell, opts, dtype):
    """A small layer's narrow panels (fewer multiply-adds of padding) give the same bits as the CPU's full width:
    every element is one chain over k in order, whatever the panel."""
    mod = impl_module(IMPL)
    if mod._cpu.blocking(np.dtype(dtype).itemsize).v == 1:
        pytest.skip("the CPU's panels are one vector wide: none narrower")
    x = rng.standard_normal((5, 7, 4)).astype(dtype)
    make = lambda: rnn_xp.init(cell, 4, 3, seed=43, xp=np, dtype=dtype, bidirectional=True, **opts)  # noqa: E731
    params = make()
    spec = mod.make_spec(params.config, params.config.activations[0], dtype)
    assert spec.v == 1  # 3 units: one vector, whatever the CPU
    narrow = rnn_xp.forward(x, params, impl=IMPL, lengths=np.array([7, 3, 0, 7, 1]))
    monkeypatch.setattr(mod, "panel_vectors", lambda H, b: b.v)
    params = make()
    assert mod.make_spec(params.config, params.config.activations[0], dtype).nr > spec.nr
    same_result(rnn_xp.forward(x, params, impl=IMPL, lengths=np.array([7, 3, 0, 7, 1])), narrow)


def test_tiny_chunks_and_time_major(rng, monkeypatch):
    """Chunks of one step (and a ragged last chunk) give the reference's numbers."""
    monkeypatch.setattr(loop, "CHUNK_ELEMENTS", 1)
    for cell, B, path in itertools.product(("rnn", "lstm", "gru"), (1, 2), ("rows", "units")):
        use_path(monkeypatch, path)
        params = rnn_xp.init(cell, 3, 4, bidirectional=True, seed=13, dtype="float64", xp=np)
        compare(IMPL, params, rng.standard_normal((B, 7, 3)), "float64", lengths=np.array([7, 3])[:B])
    monkeypatch.setattr(loop, "CHUNK_ELEMENTS", 3 * 2 * 4 * 3)  # 3 steps of B=2, G*H=12: chunks 3, 3, 1
    params = rnn_xp.init("gru", 3, 4, seed=14, dtype="float64", xp=np)
    x = rng.standard_normal((7, 2, 3))  # time-major
    ref = rnn_xp.forward(x, params, time_major=True, impl="reference")
    got = rnn_xp.forward(x, params, time_major=True, impl=IMPL)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "cell,B,rows,chunks",
    [("gru", 2, 4, 25), ("gru", 3, 3, 50), ("lstm", 2, 4, 25), ("rnn", 2, 16, 7), ("lstm", 3, 1, 1), ("rnn", 3, 1, 1)],
)
def test_chunk_buffer_is_bounded_by_a_chunk_not_by_T(rng, monkeypatch, poisoned, cell, B, rows, chunks):
    """GRU, and rnn and lstm at batch 1 and 2 (fewer rows than MR/2: each chunk's inputs projected at once):
    the chunk's x rows and projection (t*B rows), a chunk at a time (CHUNK_ELEMENTS 64: G*H*B = 24 or 36
    for a GRU, 2 steps or 1 a chunk; 32 for an LSTM, 2 steps; 8 for an rnn, 8 steps); rnn and lstm on the
    caller's x with more rows need no buffer by time at all: the whole call is one kernel call."""
    monkeypatch.setattr(loop, "CHUNK_ELEMENTS", 64)
    monkeypatch.setitem(_threads._setting, "threads", 1)
    mod = impl_module(IMPL)
    calls, run_chunk = [], mod.Direction._chunk
    monkeypatch.setattr(mod.Direction, "_chunk", lambda self, *a: calls.append(1) or run_chunk(self, *a))
    params = rnn_xp.init(cell, 3, 4, seed=15, xp=np)
    x = rng.standard_normal((B, 50, 3)).astype("float32")
    got = rnn_xp.forward(x, params, impl=IMPL)
    np.testing.assert_allclose(got[0], rnn_xp.forward(x, params, impl="reference")[0], rtol=0, atol=2e-6)
    assert len(calls) == chunks
    # the x and projection buffers (rows, >= 16): as wide as a row of x and 1, or as the packed panels
    big = [s for s in poisoned if len(s) == 2 and s[1] >= 16 and s[0] != 2]
    assert big and all(s[0] <= rows for s in big), poisoned


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (0, 4, 3), (2, 0, 3), (0, 0, 2), (1, 0, 2)])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_degenerate_sizes(rng, cell, B, T, H):
    params = rnn_xp.init(cell, 2, H, num_layers=2, bidirectional=True, seed=16, dtype="float64", xp=np)
    x = rng.standard_normal((B, T, 2))
    compare(IMPL, params, x, "float64")
    if B:
        compare(IMPL, params, x, "float64", lengths=np.zeros(B, dtype=np.int64))


def test_auto_picks_numba_and_half_precision_runs_in_float32(rng):
    assert rnn_xp.implementations(np).index(IMPL) < rnn_xp.implementations(np).index("numpy-fused")
    params = rnn_xp.init("gru", 3, 4, seed=18, xp=np)
    x = rng.standard_normal((2, 6, 3)).astype("float32")
    assert rnn_xp.explain(x, params).implementation == IMPL
    p16 = rnn_xp.to_device(params, np, dtype="float16")
    x16 = x.astype("float16")
    assert rnn_xp.explain(x16, p16).implementation == IMPL  # the engine computes float16 in float32
    np.testing.assert_array_equal(rnn_xp.forward(x16, p16, impl=IMPL)[0], rnn_xp.forward(x16, p16, impl="reference")[0])


def test_tracing_is_declined_with_a_reason():
    call = seam.Call(
        namespace="numpy",
        cfg=rnn_xp.init("rnn", 2, 3, seed=0, xp=np).config,
        dtype="float32",
        steps=3,
        batch=2,
        trace=True,
    )
    assert "tracing" in impl_module(IMPL).unsupported(call)
    assert seam.select_runner(call).implementation == "reference"
    assert "int8" in impl_module(IMPL).unsupported(
        seam.Call(namespace="numpy", cfg=call.cfg, dtype="int8", steps=3, batch=2)
    )


@pytest.mark.parametrize("B", [1, 64])
def test_concurrent_calls_are_bit_identical_to_serial(rng, B, monkeypatch):
    """4 threads at once (each then runs single-threaded kernels) give exactly the serial results."""
    threaded(monkeypatch)  # the lone serial call uses the threaded kernels
    params = rnn_xp.init("lstm", 8, 48, seed=19, xp=np, peepholes=True, bias="single", bidirectional=True)
    before = {n: a.copy() for n, a in params.named_arrays()}
    xs = [rng.standard_normal((B, 40, 8)).astype("float32") for _ in range(4)]
    expected = [rnn_xp.forward(x, params, impl=IMPL) for x in xs]
    results = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def work(k):
        barrier.wait()
        for _ in range(3):
            results[k] = rnn_xp.forward(xs[k], params, impl=IMPL)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for got, exp in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got[0], exp[0])
        np.testing.assert_array_equal(got[1][0], exp[1][0])
        np.testing.assert_array_equal(got[1][1], exp[1][1])
    for n, a in params.named_arrays():
        np.testing.assert_array_equal(a, before[n])


def test_obeys_set_num_threads(rng, monkeypatch):
    """rnn_xp.set_num_threads(1) gives the same numbers as two threads (only the speed changes)."""
    threaded(monkeypatch)
    seen = []
    real = _threads.run
    monkeypatch.setattr(_threads, "run", lambda fn, nth, args: seen.append(nth) or real(fn, nth, args))
    params = rnn_xp.init("gru", 8, 150, seed=22, xp=np)  # groups of units for both threads (one group: one thread)
    x = rng.standard_normal((1, 30, 8)).astype("float32")
    many = rnn_xp.forward(x, params, impl=IMPL)[0]
    rnn_xp.set_num_threads(1)
    try:
        assert rnn_xp.get_num_threads() == 1
        single = rnn_xp.forward(x, params, impl=IMPL)[0]
    finally:
        rnn_xp.set_num_threads(None)
    assert seen == [2]  # the single-threaded call never wakes the pool
    np.testing.assert_array_equal(single, many)
    with pytest.raises(ValueError, match="positive integer"):
        rnn_xp.set_num_threads(0)


def test_threaded_kernels_only_where_they_pay(monkeypatch):
    """Small calls or steps, or one thread allowed: one thread (at batch 1 projecting a chunk's inputs at once:
    units 1). Batch 1: units split, unless the machine is busy. A big batch: rows split (threads that never
    wait for each other), busy machine or not; a few rows a thread (4-7) with a W_hh larger than L2: units
    split, unless the machine is busy."""
    mod = impl_module(IMPL)
    monkeypatch.setitem(_threads._setting, "threads", 2)
    monkeypatch.setattr(mod, "_cores_busy", lambda: False)

    def split(cell, B, T, F, H, **kw):
        params = rnn_xp.init(cell, F, H, seed=23, xp=np, **kw)
        w, cfg = params.layers[0][0], params.config
        d = mod.Direction(mod.arrange(w, cfg, cfg.activations[0], "float32"), cfg, cfg.activations[0], "float32", B)
        return d._split(T, B)

    assert split("gru", 1, 200, 64, 256) == (2, 2)  # batch 1, 3*256*(256+65) multiply-adds a step
    assert split("gru", 1, 2, 64, 256) == (1, 1)  # a short call: waking the threads costs more
    assert split("gru", 1, 200, 8, 8) == (1, 1)  # a small step
    assert split("gru", 3, 200, 8, 8) == (1, 0)  # three rows (MR/2 or more): each step's projected in the step
    assert split("gru", 64, 200, 64, 256) == (2, 0)  # rows
    monkeypatch.setattr(mod, "_l2_bytes", lambda: 1 << 20)
    assert split("lstm", 8, 200, 64, 256) == (2, 0)  # 4 rows a thread, W_hh (1 MiB) fits L2
    assert split("lstm", 4, 200, 64, 256) == (2, 2)
    monkeypatch.setattr(mod, "_l2_bytes", lambda: (1 << 20) - 1)
    assert split("lstm", 8, 200, 64, 256) == (2, 2)  # 4 rows a thread, W_hh larger than L2: units
    assert split("lstm", 14, 200, 64, 256) == (2, 2)  # 7 rows a thread
    assert split("lstm", 16, 200, 64, 256) == (2, 0)  # 8 rows a thread: rows, W_hh or not
    monkeypatch.setattr(mod, "_cores_busy", lambda: True)
    assert split("lstm", 8, 200, 64, 256) == (2, 0)  # busy cores: rows rather than a barrier a step
    assert split("gru", 1, 200, 64, 256) == (1, 1)
    assert split("gru", 64, 200, 64, 256) == (2, 0)
    monkeypatch.setitem(_threads._setting, "threads", 1)
    assert split("gru", 64, 200, 64, 256) == (1, 0)


@pytest.mark.parametrize(
    "nth,groups,B,mr,want",
    [
        (2, 8, 64, 6, (2, 2)),  # at least as many groups as threads: each thread its groups, every row
        (16, 16, 64, 6, (16, 16)),
        (16, 8, 64, 6, (16, 8)),  # lstm-med's H 512 on 16 threads: 8 groups for 2 halves of the rows
        (16, 8, 1, 6, (8, 8)),  # batch 1 (projected ahead): a group a thread, 8 threads
        (16, 4, 10, 6, (16, 4)),  # 4 groups for 4 parts of the rows (3 rows at most)
        (16, 3, 64, 6, (15, 3)),  # 3 groups for 5 parts of the rows (13 rows at most), a thread left out
        (12, 8, 64, 6, (12, 4)),  # 2 groups x 22 rows (44), level with 4 x 11, ahead of 1 x 64 and 3 x 16
        (2, 1, 4, 6, (2, 0)),  # one group: the rows split (2 rows a thread), no barrier a step
        (2, 1, 1, 6, (1, 1)),  # one group, one row: one thread (projecting the chunk's inputs at once)
        (4, 2, 2, 6, (2, 2)),  # two rows projected ahead: a group a thread, against a row a thread (two groups)
        (4, 3, 3, 6, (3, 3)),  # three groups for three rows: a group a thread, against 2 x 2 rows on four
    ],
)
def test_a_units_split_keeps_every_thread_busy(nth, groups, B, mr, want):
    """Threads that split the units (few rows a thread, W_hh larger than L2) with fewer groups of units than
    threads: the groups for parts of the rows, so that no thread only meets the others (lstm-med's 8 groups
    of H 512 on 16 threads: 8 busy, before); the busiest thread's groups x rows as low as it goes, ties to
    more parts of the groups."""
    from types import SimpleNamespace

    G = 4
    Direction = impl_module(IMPL).Direction
    d = SimpleNamespace(a=SimpleNamespace(wpi=np.empty((groups * G, 1, 1)), spec=SimpleNamespace(mr=mr)), G=G)
    d._alone = lambda B: Direction._alone(d, B)
    assert Direction._plan(d, nth, B) == want


def test_many_threads_take_the_plan_and_give_the_same_bits(rng, monkeypatch):
    """12 threads (more than this machine's cores: they take turns at the barrier) on the library's own plan:
    an LSTM of H 512 (8 groups of float32 units with 512-bit vectors, 32 with 256-bit ones) at batch 64 (5
    rows a thread, W_hh larger than L2) and 1, a GRU at batch 40: the one-thread bits."""
    mod = impl_module(IMPL)
    monkeypatch.setattr(mod, "CALL_PARALLEL_MIN", 0)
    monkeypatch.setattr(mod, "_cores_busy", lambda: False)
    monkeypatch.setattr(mod, "_l2_bytes", lambda: 1 << 20)
    plans = []
    real = mod.Direction._plan
    monkeypatch.setattr(mod.Direction, "_plan", lambda self, nth, B: plans.append(real(self, nth, B)) or plans[-1])
    for cell, B, H in (("lstm", 64, 512), ("lstm", 1, 512), ("gru", 40, 400)):
        params = rnn_xp.init(cell, 16, H, seed=42, xp=np)
        x = rng.standard_normal((B, 4, 16)).astype(np.float32)
        monkeypatch.setitem(_threads._setting, "threads", 1)
        want = rnn_xp.forward(x, params, impl=IMPL)
        monkeypatch.setitem(_threads._setting, "threads", 12)
        plans.clear()
        same_result(rnn_xp.forward(x, params, impl=IMPL), want)
        assert plans and all(threads <= 12 and (units == 0 or threads % units == 0) for threads, units in plans)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_units_for_parts_of_the_rows_give_the_same_bits(rng, monkeypatch, cell, opts, dtype):
    """The groups of units (three of them in float32 with 512-bit vectors) split U ways, each for nth // U parts
    of the rows: 2 x 2 on 4 threads, 1 x 2 and 2 x 1 on 2, 2 x 1 and a thread left over on 3; at batch 1
    (projected ahead: one part of the rows, a thread beyond U only meets the others) and 5, with lengths:
    the one-thread bits."""
    mod = impl_module(IMPL)
    params = rnn_xp.init(cell, 4, 150, num_layers=2, bidirectional=True, seed=41, dtype="float64", xp=np, **opts)
    p = rnn_xp.to_device(params, np, dtype=dtype)
    x = rng.standard_normal((5, 6, 4)).astype(dtype)
    lengths = np.array([6, 2, 0, 5, 1])
    monkeypatch.setitem(_threads._setting, "threads", 1)
    want = [rnn_xp.forward(x[:B], p, lengths=lengths[:B], impl=IMPL) for B in (1, 5)]
    threaded(monkeypatch, 2)
    use_path(monkeypatch, "units")
    for n, units in ((4, 2), (2, 1), (2, 2), (3, 2)):
        monkeypatch.setitem(_threads._setting, "threads", n)
        monkeypatch.setattr(mod.Direction, "_plan", lambda self, nth, B, u=units: (nth, u))
        for B, expected in zip((1, 5), want, strict=True):
            same_result(rnn_xp.forward(x[:B], p, lengths=lengths[:B], impl=IMPL), expected)


def test_threads_that_cannot_meet_abandon_and_the_call_runs_on_one(rng, monkeypatch):
    """A spin barrier needs its threads at once: one that waits alone gives up (no deadlock), every thread
    then returns before writing, and the call runs the chunk again on one thread: the reference's numbers."""
    mod = impl_module(IMPL)
    k = mod._load()
    ctl = np.zeros(k.CONTROL_SIZE, dtype=np.int64)
    assert not k._start(ctl, 2)  # the other thread never comes
    assert ctl[k.DECISION] == k.ABANDONED
    assert not k._start(ctl, 2)  # it arrives late: it sees the decision and returns at once

    threaded(monkeypatch)
    calls = []

    def never_together(fn, nth, args):
        calls.append(nth)
        args[0][k.DECISION] = k.ABANDONED  # what the threads decide when they cannot all start

    monkeypatch.setattr(_threads, "run", never_together)
    params = rnn_xp.init("lstm", 5, 150, seed=24, xp=np, proj_size=3)  # groups of units for both threads
    got = compare(IMPL, params, rng.standard_normal((1, 9, 5)), "float64")
    assert calls == [2]  # once: the rest of the call stays on one thread
    assert got[0].shape == (1, 9, 3)


def on_teams(monkeypatch):
    """A Stream's one-step calls on a team of two resident threads, whatever the size of the step; the calls
    the team runs are counted."""
    mod = impl_module(IMPL)
    threaded(monkeypatch)
    monkeypatch.setattr(mod, "TEAM_STEP_MIN", 0)
    monkeypatch.setattr(mod, "TEAM_GAP", float("inf"))
    monkeypatch.setattr(mod, "_cores_busy_cached", lambda: False)
    monkeypatch.setattr(mod, "_held_elsewhere", lambda ctl: False)  # a team takes the workers from any other
    teams = []
    real = _threads.run_team
    monkeypatch.setattr(_threads, "run_team", lambda fn, nth, *a: teams.append(nth) or real(fn, nth, *a))
    return teams


def frames(s, x):
    """A stream fed x (B, T, F) a frame a call: its outputs (B, T, H_out)."""
    return np.concatenate([s(x[:, t : t + 1]) for t in range(x.shape[1])], axis=1)


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def same_result(got, want):
    """forward's (y, state) against another's, bit for bit (an LSTM's state is a pair)."""
    flat = lambda r: [r[0], *(r[1] if isinstance(r[1], tuple) else (r[1],))]  # noqa: E731
    for a, b in zip(flat(got), flat(want), strict=True):
        same_bits(a, b)


@pytest.mark.parametrize("cell,opts", [("lstm", {"proj_size": 5}), ("gru", {"reset_after": False}), ("rnn", {})])
def test_calls_that_reuse_a_kept_direction_give_their_own_results(rng, cell, opts):
    """forward keeps its Directions (state buffers, scratch) beside the weights for the next call of the same batch
    size: a call after calls of other lengths, masks, lengths, initial states and batch sizes gives the bits of the
    same call on a fresh copy of the params (nothing kept), and nothing of an earlier call leaks into it."""
    mod = impl_module(IMPL)
    make = lambda: rnn_xp.init(cell, 6, 24, seed=41, xp=np, num_layers=2, bidirectional=True, **opts)  # noqa: E731
    params = make()
    B = 3
    H_out = params.config.output_size
    calls = []
    for T in (5, 1, 9):
        x = rng.standard_normal((B, T, 6)).astype(np.float32)
        h0 = rng.standard_normal((4, B, H_out)).astype(np.float32)
        state = (h0, rng.standard_normal((4, B, 24)).astype(np.float32)) if cell == "lstm" else h0
        mask = rng.random((B, T)) < 0.7
        calls += [
            (x, {}),
            (x, {"initial_state": state}),
            (x, {"lengths": np.array([T, 0, max(T - 2, 1)])}),
            (x, {"mask": mask}),
            (x[:1], {}),  # another batch size between
            (x, {"mask": mask, "zero_output_for_mask": True, "initial_state": state}),
        ]
    for x, kw in calls:
        same_result(rnn_xp.forward(x, params, impl=IMPL, **kw), rnn_xp.forward(x, make(), impl=IMPL, **kw))
    kept = [v for key, v in mod._arranged[params.layers[0][0]].items() if key[0] == "idle"]
    assert kept and kept[0].get(B), "no Direction was kept for the next call"


@pytest.mark.parametrize("cell,opts", [("lstm", {"proj_size": 7}), ("gru", {"reset_after": False}), ("rnn", {})])
def test_one_step_calls_run_as_a_streams_steps(rng, monkeypatch, cell, opts):
    """A one-step forward call without masks runs as a Stream's step (on a team of threads that stay resident
    between calls back to back): such calls, each fed the state of the one before, give the bits of one call over
    all the steps (one layer direction, batch 1 and 5), and two layers both ways give the one-thread bits."""
    teams = on_teams(monkeypatch)
    for B in (1, 5):
        x = rng.standard_normal((B, 6, 4)).astype(np.float32)
        params = rnn_xp.init(cell, 4, 150, seed=44, xp=np, num_layers=2, **opts)
        both = rnn_xp.init(cell, 4, 150, seed=45, xp=np, num_layers=2, bidirectional=True, **opts)
        monkeypatch.setitem(_threads._setting, "threads", 1)
        want = rnn_xp.forward(x, params, impl=IMPL)
        want_both = [rnn_xp.forward(x[:, t : t + 1], both, impl=IMPL) for t in range(6)]
        monkeypatch.setitem(_threads._setting, "threads", 2)
        teams.clear()
        ys, state = [], None
        for t in range(6):
            y, state = rnn_xp.forward(x[:, t : t + 1], params, state, impl=IMPL)
            ys.append(y)
        same_result((np.concatenate(ys, axis=1), state), want)
        for t in range(6):
            same_result(rnn_xp.forward(x[:, t : t + 1], both, impl=IMPL), want_both[t])
        assert teams, "no one-step call ran on a team"


def _held_bytes(d):
    """The bytes of every array a Direction holds apart from the weights (views counted once, with their base)."""
    weights = {id(a if a.base is None else a.base) for a in d.a if isinstance(a, np.ndarray)}
    seen, total, todo = set(), 0, list(vars(d).values())
    while todo:
        v = todo.pop()
        if isinstance(v, np.ndarray):
            base = v if v.base is None else v.base
            if id(base) not in seen and id(base) not in weights:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(v, (tuple, list)):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.values())
    return total


def test_kept_directions_hold_at_most_a_share_of_the_weights(rng, monkeypatch):
    """forward keeps a Direction for the next call only while what it holds (state buffers, one-step buffers and
    teams, small scratch: all of it counted) is at most POOL_BYTES or 1/POOL_SHARE of the packed weights; one-step
    calls run as a stream's steps only on a kept Direction (no buffers and team made anew each call)."""
    mod = impl_module(IMPL)
    monkeypatch.setattr(mod, "POOL_BYTES", 0)  # the share of the weights alone decides
    on_teams(monkeypatch)
    params = rnn_xp.init("lstm", 16, 64, seed=43, xp=np)
    w, cfg = params.layers[0][0], params.config
    a = mod.arrange(w, cfg, cfg.activations[0], "float32")
    used, how = [], []  # the Directions of the calls, and their methods
    for name in ("run", "step1"):
        real = getattr(mod.Direction, name)

        def spy(self, *args, f=real, name=name, **kw):
            used.append(self)
            how.append(name)
            return f(self, *args, **kw)

        monkeypatch.setattr(mod.Direction, name, spy)
    for B, T in ((1, 1), (1, 3), (2, 5), (40, 1), (40, 3)):
        used.clear()
        how.clear()
        for _ in range(2):  # the second call takes the Direction the first one kept, if it was
            rnn_xp.forward(rng.standard_normal((B, T, 16)).astype(np.float32), params, impl=IMPL)
        idle = mod._arranged[w][("idle", a.spec)]
        assert idle.cap == a.wpi.nbytes // mod.POOL_SHARE
        d = used[-1]
        assert _held_bytes(d) <= d.nbytes + 4096  # every buffer counted (the control arrays aside)
        assert (d in idle.get(B, [])) == (d.nbytes <= idle.cap), (B, T, d.nbytes, idle.cap)
        assert (used[0] is used[1]) == (d.nbytes <= idle.cap)
        if T == 1:  # a one-step call on a kept Direction runs as a stream's step (never one too big to keep)
            assert how == (["run", "step1"] if B == 1 else ["run", "run"])
    assert 1 in idle and 40 not in idle and idle.big == {40}


def test_stream_teams_share_the_threads_with_every_other_call(rng, monkeypatch):
    """Two streams' one-step calls on teams of resident threads, one after the other, and threaded forward calls
    between them (each takes the workers from the other's loop): every result is the one-thread one, bit for
    bit, and no call waits forever; also with the library's rule, where a team waits for the workers to have
    left another's loop (which of the two gets them then depends on timing)."""
    mod = impl_module(IMPL)
    pa = rnn_xp.init("lstm", 6, 150, seed=31, xp=np)  # three groups of units (float32, AVX-512): both threads work
    pb = rnn_xp.init("gru", 5, 70, seed=32, xp=np, reset_after=False)
    xa = rng.standard_normal((3, 12, 6)).astype(np.float32)
    xb = rng.standard_normal((1, 12, 5)).astype(np.float32)
    xf = rng.standard_normal((4, 7, 6)).astype(np.float32)
    monkeypatch.setitem(_threads._setting, "threads", 1)
    want_a, want_b, want_f = (rnn_xp.forward(x, p, impl=IMPL)[0] for x, p in ((xa, pa), (xb, pb), (xf, pa)))
    teams = on_teams(monkeypatch)
    for take_turns in (True, False):
        teams.clear()
        if not take_turns:  # the rule of the library: not while the workers wait in another team's loop
            monkeypatch.setattr(mod, "_held_elsewhere", lambda ctl: _threads.resident_elsewhere(ctl, mod._TEAM))
        sa, sb = rnn_xp.Stream(pa), rnn_xp.Stream(pb)
        ya, yb = [], []
        for t in range(12):
            for s, x, y in ((sa, xa, ya), (sb, xb, yb)):
                y.append(s(x[:, t : t + 1]))
            if t % 4 == 3 and take_turns:
                same_bits(rnn_xp.forward(xf, pa, impl=IMPL)[0], want_f)
        same_bits(np.concatenate(ya, axis=1), want_a)
        same_bits(np.concatenate(yb, axis=1), want_b)
        if take_turns:
            assert len(teams) == 2 * 11  # every call but each stream's first


def test_a_team_leaves_the_workers_to_another_only_once_they_left_its_loop(monkeypatch):
    """While a worker waits in one team's loop, another team does not take it (a stream's layers would take
    it from each other every step); once it has left (told to, or after a while), anyone may."""
    mod = impl_module(IMPL)
    on_teams(monkeypatch)
    monkeypatch.setattr(mod, "_held_elsewhere", lambda ctl: _threads.resident_elsewhere(ctl, mod._TEAM))
    for w in _threads._pool.workers:  # none still in an earlier test's loop (a descheduled worker stays longer)
        _threads._vacate(w)
    s = rnn_xp.Stream(rnn_xp.init("lstm", 5, 150, seed=35, xp=np))
    x = np.ones((1, 1, 5), dtype=np.float32)
    s(x)
    ctl = None
    for _ in range(50):  # a step, then at once the question (a busy machine may delay it past the wait)
        s(x)
        d = s._units[0].dirs[0]
        ctl = d._teams[2][0]
        if mod._held_elsewhere(None) and mod._held_elsewhere(np.zeros(1)) and not mod._held_elsewhere(ctl):
            break
    else:
        pytest.fail("the worker was never seen in the team's loop right after a step")
    w = _threads._pool.workers[0]
    _threads._vacate(w)  # told to leave, and waited for
    assert not mod._held_elsewhere(None)


def test_a_team_that_cannot_meet_runs_the_step_on_one_thread(rng, monkeypatch):
    mod = impl_module(IMPL)
    k = mod._load()
    params = rnn_xp.init("lstm", 5, 150, seed=33, xp=np, proj_size=7)
    x = rng.standard_normal((1, 6, 5)).astype(np.float32)
    monkeypatch.setitem(_threads._setting, "threads", 1)
    want = rnn_xp.forward(x, params, impl=IMPL)[0]
    on_teams(monkeypatch)
    calls = []

    def never_together(fn, nth, args, resident, ctl, team):
        calls.append(nth)
        ctl[k.DECISION] = k.ABANDONED  # what the threads decide when they cannot all start

    monkeypatch.setattr(_threads, "run_team", never_together)
    same_bits(frames(rnn_xp.Stream(params), x), want)
    assert calls == [2] * 5


def test_a_team_worker_that_stops_early_raises_and_the_pool_goes_on():
    """A worker whose loop ends without running its part of a call (an error before its kernel): the call
    raises instead of waiting for it forever, and the workers serve the next calls."""
    mod = impl_module(IMPL)
    k = mod._load()
    ctl = np.zeros(k.control_size(2), dtype=np.int64)

    def broken(i, nth):
        if i > 0:
            raise ValueError("no kernel")

    with pytest.raises(RuntimeError, match="stopped before running its part") as e:
        _threads.run_team(broken, 2, (), (), ctl, mod._TEAM)
    assert isinstance(e.value.__cause__, ValueError)
    seen = []
    _threads.run(lambda i, nth: seen.append(i), 2, ())
    assert sorted(seen) == [0, 1]


def test_only_back_to_back_steps_of_some_size_wake_a_team(monkeypatch):
    """A stream's step goes to a team when it is big enough to split and the calls come back to back (or the
    step alone pays for waking threads); small steps and calls far apart run on the calling thread."""
    mod = impl_module(IMPL)
    monkeypatch.setitem(_threads._setting, "threads", 2)
    monkeypatch.setattr(mod, "_cores_busy_cached", lambda: False)
    monkeypatch.setattr(mod, "TEAM_GAP", 1.0)  # back to back: the last call ended under 1 s ago
    monkeypatch.setattr(mod, "_held_elsewhere", lambda ctl: False)  # the last case's workers may still wait

    def on_team(B, F, H, ago):
        params = rnn_xp.init("lstm", F, H, seed=34, xp=np)
        w, cfg = params.layers[0][0], params.config
        d = mod.Direction(mod.arrange(w, cfg, cfg.activations[0], "float32"), cfg, cfg.activations[0], "float32", B)
        d._one = d._one_step()
        d._ended = time.perf_counter() - ago
        return d._team(d._one[0])

    assert not on_team(1, 128, 128, 0)  # 128 Ki multiply-adds a step: one thread is faster
    assert on_team(1, 128, 512, 0)  # 1.3 Mi, back to back
    assert not on_team(1, 128, 512, 10)  # calls 10 s apart: waking the threads would cost more than they save
    assert on_team(32, 512, 512, 10)  # 67 Mi: the threads pay even cold
    monkeypatch.setattr(mod, "_cores_busy_cached", lambda: True)
    assert not on_team(1, 128, 512, 0)  # batch 1 splits the units: a barrier a step, not on a busy machine
    assert on_team(32, 512, 512, 0)  # rows: the threads never wait for each other
    monkeypatch.setitem(_threads._setting, "threads", 1)
    assert not on_team(32, 512, 512, 0)


@pytest.mark.parametrize("own", ["kept by each Direction", "the thread's"])
def test_scratch_is_reused_across_calls_without_leaking(rng, monkeypatch, own):
    """Scratch buffers are kept between calls (fresh pages cost a fault each), by the Direction when small, else
    per thread: calls of other shapes and dtypes in between change nothing, and what a call returned is never
    overwritten by a later one."""
    mod = impl_module(IMPL)
    monkeypatch.setattr(mod, "REUSE_SCRATCH", True)
    monkeypatch.setattr(mod, "_pool", threading.local())
    if own == "the thread's":
        monkeypatch.setattr(mod, "OWN_BYTES", 0)
    cases = [
        ("lstm", 4, 7, 8, "float32", {"proj_size": 3}),
        ("gru", 1, 5, 16, "float64", {"reset_after": False}),
        ("rnn", 9, 3, 4, "float32", {}),
    ]
    first = None
    for cell, B, T, H, dtype, opts in cases + cases[:1]:
        params = rnn_xp.init(cell, 3, H, seed=25, xp=np, bidirectional=True, **opts)
        x = np.random.default_rng(B).standard_normal((B, T, 3))
        got = compare(IMPL, params, x, dtype)
        if first is None:
            first = (got, [got[0].copy(), *(a.copy() for a in got[1])])
    got, kept = first
    for a, b in zip([got[0], *got[1]], kept, strict=True):
        np.testing.assert_array_equal(a, b)
    if own == "the thread's":
        assert getattr(mod._pool, "bufs", None), "no scratch was kept"
    else:  # every call here is small
        assert getattr(mod._pool, "bufs", None) is None
