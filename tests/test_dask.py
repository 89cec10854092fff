"""Dask arrays: forward and models run one task per batch chunk and give NumPy's results."""

import importlib.util
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from reference import reference_forward

import rnn_xp

NUMPY_AUTO = "numba" if importlib.util.find_spec("numba") else "numpy-fused"  # impl="auto" on NumPy chunks

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'rnn_xp[dask]')")
dask = pytest.importorskip("dask")
from dask.array.core import PerformanceWarning  # noqa: E402

F32 = 1e-5
REF = 2e-5  # float32 against the float64 reference loop


@pytest.fixture(autouse=True)
def _synchronous():
    """The single-threaded scheduler, except in the distributed tests (they bring their own client)."""
    with dask.config.set(scheduler="synchronous"):
        yield


def _close(a, b, atol=F32):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    err = np.abs(a - b).max(initial=0.0)
    assert err <= atol, f"max abs error {err:.3e} > {atol}"


def test_import_rnn_xp_does_not_import_dask():
    code = (
        "import sys, numpy as np, rnn_xp; p = rnn_xp.init('lstm', 3, 4, seed=0, xp=np); "
        "rnn_xp.forward(np.zeros((2, 5, 3), np.float32), p); "
        "rnn_xp.text_classifier(xp=np, steps=4)(np.zeros((2, 4), int)); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


CELLS = [
    ("rnn", {}),
    ("lstm", {"num_layers": 2}),
    ("lstm", {"proj_size": 3, "peepholes": True}),
    ("gru", {"num_layers": 2}),
    ("gru", {"reset_after": False, "bias": "single"}),
]
CHUNKS = [(4, 4, 4), (5, 1, 6), (12,), (1, 11)]  # even, uneven, one chunk, a single-row chunk
EXTRAS = ["none", "lengths", "mask", "state", "all"]


def _inputs(rng, cfg, B, T, extras, time_major=False):
    x = rng.standard_normal((T, B, cfg.input_size) if time_major else (B, T, cfg.input_size)).astype(np.float32)
    kw, state = {}, None
    if extras in ("lengths", "all"):
        kw["lengths"] = rng.integers(0, T + 1, B)
    if extras in ("mask", "all"):
        m = rng.random((B, T)) < 0.7
        kw["mask"] = m.T.copy() if time_major else m
        kw["zero_output_for_mask"] = extras == "all"
    if extras in ("state", "all"):
        LD = cfg.num_layers * cfg.num_directions
        h0 = rng.standard_normal((LD, B, cfg.output_size)).astype(np.float32)
        state = (h0, rng.standard_normal((LD, B, cfg.hidden_size)).astype(np.float32)) if cfg.cell == "lstm" else h0
    return x, state, kw


def _as_dask(a, batch_chunks, axis):
    chunks = tuple(batch_chunks if i == axis else -1 for i in range(a.ndim))
    return da.from_array(a, chunks=chunks)


def _check(params, x, state, kw, chunks, time_major=False):
    """The dask forward against NumPy's forward (<= 1e-5) and the float64 reference loop."""
    b_ax = 1 if time_major else 0
    y, st = rnn_xp.forward(x, params, state, time_major=time_major, **kw)
    dkw = {
        k: (_as_dask(v, chunks, b_ax if k == "mask" else 0) if k in ("lengths", "mask") else v) for k, v in kw.items()
    }
    dstate = (
        None
        if state is None
        else (tuple(_as_dask(s, chunks, 1) for s in state) if isinstance(state, tuple) else _as_dask(state, chunks, 1))
    )
    dy, dst = rnn_xp.forward(_as_dask(x, chunks, b_ax), params, dstate, time_major=time_major, **dkw)
    assert isinstance(dy, da.Array) and dy.chunks[b_ax] == tuple(chunks)
    hs, dhs = (st, dst) if isinstance(st, tuple) else ((st,), (dst,))
    for d in dhs:
        assert isinstance(d, da.Array) and d.chunks[1] == tuple(chunks)
    got_y, *got_s = dask.compute(dy, *dhs)
    _close(got_y, y)
    for g, h in zip(got_s, hs, strict=True):
        _close(g, h)
    # and against the independent float64 loop
    xb = np.swapaxes(x, 0, 1) if time_major else x
    rkw = dict(kw)
    if time_major and "mask" in rkw:
        rkw["mask"] = rkw["mask"].T
    ry, rh, rc = reference_forward(xb.astype(np.float64), params, state, **rkw)
    _close(np.swapaxes(got_y, 0, 1) if time_major else got_y, ry, REF)
    _close(got_s[0], rh, REF)
    if params.config.cell == "lstm":
        _close(got_s[1], rc, REF)


@pytest.mark.parametrize("extras", EXTRAS)
@pytest.mark.parametrize("chunks", CHUNKS, ids=str)
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CELLS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CELLS)])
def test_matches_numpy(cell, opts, direction, chunks, extras):
    rng = np.random.default_rng(hash((cell, direction, extras, chunks)) % 2**32)
    params = rnn_xp.init(cell, 3, 5, direction=direction, seed=11, xp=np, **opts)
    x, state, kw = _inputs(rng, params.config, sum(chunks), 7, extras)
    _check(params, x, state, kw, chunks)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reverse_and_time_major(cell):
    rng = np.random.default_rng(3)
    params = rnn_xp.init(cell, 3, 4, direction="reverse", num_layers=2, seed=5, xp=np)
    x, state, kw = _inputs(rng, params.config, 9, 6, "all", time_major=True)
    _check(params, x, state, kw, (2, 7), time_major=True)


def test_chunks_along_time_and_features_are_rechunked_with_a_warning():
    rng = np.random.default_rng(4)
    params = rnn_xp.init("lstm", 6, 5, seed=2, xp=np)
    x = rng.standard_normal((10, 8, 6)).astype(np.float32)
    y, (h, c) = rnn_xp.forward(x, params)
    dx = da.from_array(x, chunks=(3, 3, 2))
    with pytest.warns(PerformanceWarning, match=r"chunked along axes \[1, 2\].*up to .*KiB of x per chunk") as rec:
        dy, (dh, dc) = rnn_xp.forward(dx, params)
    assert rec[0].filename == __file__  # the warning points at the caller's line
    assert dy.chunks == ((3, 3, 3, 1), (8,), (5,))
    _close(dy.compute(), y)
    _close(dh.compute(), h)
    _close(dc.compute(), c)


def test_host_and_misaligned_dask_inputs_are_split_like_x():
    rng = np.random.default_rng(5)
    params = rnn_xp.init("gru", 3, 4, seed=1, xp=np)
    x, h0, kw = _inputs(rng, params.config, 10, 6, "all")
    y, h = rnn_xp.forward(x, params, h0, **kw)
    dx = da.from_array(x, chunks=(4, 6, 3))
    for lengths, mask, state in [
        (list(kw["lengths"]), kw["mask"].tolist(), h0),  # host lists and arrays
        (
            da.from_array(kw["lengths"], chunks=3),
            da.from_array(kw["mask"], chunks=(5, 2)),
            da.from_array(h0, chunks=(1, 7, 2)),
        ),  # dask arrays chunked otherwise: rechunked to x's batch chunks
    ]:
        dy, dh = rnn_xp.forward(
            dx, params, state, lengths=lengths, mask=mask, zero_output_for_mask=kw["zero_output_for_mask"]
        )
        assert dy.chunks[0] == (4, 4, 2) and dh.chunks[1] == (4, 4, 2)
        _close(dy.compute(), y)
        _close(dh.compute(), h)


def test_lazy_until_computed():
    calls = []

    def source(block):
        calls.append(block.shape)
        return block

    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    x = da.ones((6, 4, 2), chunks=(2, 4, 2), dtype=np.float32).map_blocks(source, meta=np.empty((0, 0, 0), np.float32))
    y, h = rnn_xp.forward(x, params)
    assert calls == []
    assert rnn_xp.explain(x, params).implementation == NUMPY_AUTO
    assert calls == []
    y.compute()
    assert len(calls) == 3


def _graph(*arrays):
    g = {}
    for a in arrays:
        g.update(dict(a.__dask_graph__()))
    return g


def _weight_keys(g):
    return [k for k in g if isinstance(k, str) and k.startswith("rnn_xp-params-")]


def test_graph_has_one_weights_key_and_tasks_independent_of_T():
    params = rnn_xp.init("lstm", 8, 16, num_layers=2, direction="bidirectional", seed=0, xp=np)
    sizes = {}
    for T in (10, 2000):
        x = da.zeros((64, T, 8), chunks=(16, T, 8), dtype=np.float32)
        t0 = time.perf_counter()
        y, (h, c) = rnn_xp.forward(x, params, lengths=np.full(64, T))
        built = time.perf_counter() - t0
        assert built < 1.0, f"building the graph for T={T} took {built:.2f} s"
        g = _graph(y, h, c)
        (wkey,) = _weight_keys(g)
        users = [k for k, task in g.items() if k != wkey and wkey in getattr(task, "dependencies", ())]
        assert len(users) == 4  # one forward task per batch chunk depends on the weights
        sizes[T] = len(g)
    assert sizes[10] == sizes[2000]
    # O(chunks): doubling the chunks adds a fixed number of keys per chunk
    per_chunk = []
    for n in (4, 8):
        x = da.zeros((16 * n, 50, 8), chunks=(16, 50, 8), dtype=np.float32)
        y, (h, c) = rnn_xp.forward(x, params)
        per_chunk.append(len(_graph(y, h, c)))
    assert per_chunk[1] - per_chunk[0] <= 4 * 6  # x, forward, y, h, c (and slack) per added chunk


def test_one_weights_key_across_outputs_and_calls():
    params = rnn_xp.init("gru", 4, 4, seed=0, xp=np)
    x = da.zeros((8, 5, 4), chunks=(2, 5, 4), dtype=np.float32)
    y1, h1 = rnn_xp.forward(x, params)
    y2, h2 = rnn_xp.forward(x * 2, params)
    assert len(_weight_keys(_graph(y1, h1, y2, h2))) == 1


def test_explain_reports_each_chunks_implementation():
    params = rnn_xp.init("gru", 3, 4, seed=0, xp=np)
    x = da.zeros((8, 5, 3), chunks=(3, 5, 3), dtype=np.float32)
    assert rnn_xp.explain(x, params).implementation == NUMPY_AUTO
    choice = rnn_xp.explain(x, params, trace=True)
    assert choice.implementation == "reference" and "tracing" in str(choice)
    y, h = rnn_xp.forward(x, params, impl="reference")
    _close(y.compute(), rnn_xp.forward(np.zeros((8, 5, 3), np.float32), params)[0])


# --- bad input ---------------------------------------------------------------------------------------------
def test_params_in_dask_are_refused_with_the_fix():
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    dparams = rnn_xp.to_device(params, "dask.array")
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(TypeError, match=r"params are dask arrays.*NumPy params for NumPy-backed chunks"):
        rnn_xp.forward(da.from_array(x), dparams)
    with pytest.raises(TypeError, match=r"params live in dask.array.*keep them in the chunks' namespace"):
        rnn_xp.forward(x, dparams)
    model = rnn_xp.to_device(rnn_xp.Sequential([rnn_xp.Recurrent(params)]), "dask.array")
    with pytest.raises(TypeError, match=r"weights of model 'sequential' are dask arrays"):
        model(da.from_array(x))


def test_unknown_chunk_sizes_name_compute_chunk_sizes():
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    x = da.from_array(np.ones((6, 3, 2), np.float32), chunks=(2, 3, 2))
    picked = x[x[:, 0, 0] > 0]
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes\(\)"):
        rnn_xp.forward(picked, params)
    lengths = da.from_array(np.arange(6), chunks=2)
    with pytest.raises(ValueError, match=r"lengths is a dask array with unknown chunk sizes"):
        rnn_xp.forward(x, params, lengths=lengths[lengths >= 0])
    with pytest.raises(ValueError, match=r"compute_chunk_sizes"):
        rnn_xp.text_classifier(xp=np, steps=3)(da.from_array(np.ones((6, 3), int), chunks=2)[picked[:, 0, 0] > 0])
    y, h = rnn_xp.forward(picked.compute_chunk_sizes(), params)  # the fix works
    assert y.compute().shape == (6, 3, 3)


def test_params_in_another_namespace_raise_as_forward_does():
    xps = pytest.importorskip("array_api_strict")
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=xps)
    with pytest.raises(TypeError, match=r"x is a numpy array but params live in array_api_strict"):
        rnn_xp.forward(da.zeros((4, 3, 2), chunks=2, dtype=np.float32), params)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, p: rnn_xp.forward(x[0], p), ValueError, r"expected 3 dimensions"),
        (
            lambda x, p: rnn_xp.forward(x.astype(np.float64), p),
            TypeError,
            r"x has dtype float64 but params are float32",
        ),
        (
            lambda x, p: rnn_xp.forward(x, p, lengths=[1, 2, 3]),
            ValueError,
            r"lengths has shape \(3,\); expected \(4,\)",
        ),
        (lambda x, p: rnn_xp.forward(x, p, lengths=np.ones(4)), TypeError, r"lengths has dtype float64"),
        (lambda x, p: rnn_xp.forward(x, p, mask=np.ones((3, 4), bool)), ValueError, r"mask has shape \(3, 4\)"),
        (lambda x, p: rnn_xp.forward(x, p, mask=np.ones((4, 3), int)), TypeError, r"mask has dtype int64"),
        (lambda x, p: rnn_xp.forward(x, p, np.zeros((1, 4, 3))), TypeError, r"initial_state has dtype float64"),
        (
            lambda x, p: rnn_xp.forward(x, p, np.zeros((1, 5, 3), np.float32)),
            ValueError,
            r"initial_state has shape \(1, 5, 3\); expected \(1, 4, 3\)",
        ),
        (lambda x, p: rnn_xp.forward(x, p, (np.zeros((1, 4, 3), np.float32),) * 2), TypeError, r"only LSTM takes"),
        (lambda x, p: rnn_xp.forward(x, p, lengths="3"), TypeError, r"lengths must be an integer array"),
        (lambda x, p: rnn_xp.forward(x, p, impl="cupy-fused"), ValueError, r"impl='cupy-fused' cannot run"),
        (lambda x, p: rnn_xp.forward(x, p, time_major="no"), TypeError, r"time_major must be True or False"),
        (lambda x, p: rnn_xp.forward(x, "params"), TypeError, r"params must be rnn_xp params"),
        (lambda x, p: rnn_xp.Recurrent(p)(x), TypeError, r"A dask array runs through rnn_xp.forward or a model"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(call, error, match):
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    x = da.zeros((4, 3, 2), chunks=(2, 3, 2), dtype=np.float32)
    with pytest.raises(error, match=match):
        call(x, params)


def test_out_of_range_dask_lengths_raise_when_computed():
    params = rnn_xp.init("rnn", 2, 3, seed=0, xp=np)
    x = da.zeros((4, 3, 2), chunks=(2, 3, 2), dtype=np.float32)
    y, h = rnn_xp.forward(x, params, lengths=da.from_array(np.array([1, 2, 3, 9]), chunks=2))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 3\]"):
        y.compute()


def test_large_tasks_warn_with_their_memory():
    params = rnn_xp.init("lstm", 256, 512, seed=0, xp=np)
    x = da.zeros((4096, 2000, 256), chunks=(4096, 2000, 256), dtype=np.float32)  # never computed
    with pytest.warns(PerformanceWarning, match=r"each task .* needs about [\d,.]+ MiB .*4096 sequences of 2000"):
        rnn_xp.forward(x, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnn_xp.forward(x.rechunk({0: 256}), params)


# --- models ------------------------------------------------------------------------------------------------
def test_keras_style_model_matches_numpy():
    model = rnn_xp.text_classifier(xp=np, steps=12, vocab=50)
    ids = np.random.default_rng(0).integers(0, 50, (11, 12))
    want = model(ids)
    out = model(da.from_array(ids, chunks=((3, 1, 7), (12,))))
    assert isinstance(out, da.Array) and out.chunks == ((3, 1, 7), (1,))
    _close(out.compute(), want)
    with pytest.warns(PerformanceWarning, match=r"chunked along axes \[1\]"):
        out = model(da.from_array(ids, chunks=(4, 5)))
    _close(out.compute(), want)


def test_model_with_masking_bidirectional_and_a_pair_output():
    rng = np.random.default_rng(1)
    fwd = rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, bias="single", seed=1, xp=np), return_sequences=True)
    bwd = rnn_xp.Recurrent(
        rnn_xp.init("gru", 3, 4, bias="single", seed=2, xp=np), return_sequences=True, go_backwards=True
    )
    stack = [
        rnn_xp.Masking(0.0),
        rnn_xp.Bidirectional(fwd, bwd, "concat"),
        rnn_xp.Dense.init(8, 2, activation="tanh", seed=3, xp=np),
    ]
    x = rng.standard_normal((9, 6, 3)).astype(np.float32)
    x[2, 4:] = 0.0  # masked steps
    mask = rng.random((9, 6)) < 0.8
    for model, kwargs in [(rnn_xp.Sequential(stack), {}), (rnn_xp.Sequential(stack[1:]), {"mask": mask})]:
        want = model(x, **kwargs)
        dmask = {k: da.from_array(v, chunks=(2, 6)) for k, v in kwargs.items()}
        out = model(da.from_array(x, chunks=((4, 5), (6,), (3,))), **dmask)
        assert out.chunks == ((4, 5), (6,), (2,))
        _close(out.compute(), want)
    pair = rnn_xp.Sequential([rnn_xp.Bidirectional(fwd, bwd, None)])
    want = pair(x)
    got = pair(da.from_array(x, chunks=(5, 6, 3)))
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(dask.compute(*got), want, strict=True):
        _close(g, w)


def test_onnx_graphs_refuse_dask_arrays_with_the_reason():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.uniform(-1, 1, (1, 8, 2)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.uniform(-1, 1, (1, 8, 2)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[W, R],
    )
    g = rnn_xp.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    assert onnx is not None
    with pytest.raises(ValueError, match=r"input\(s\) \['X'\] are dask arrays; an OnnxGraph does not run chunk"):
        g(X=da.zeros((3, 1, 2), dtype=np.float32))


@pytest.mark.gpu
def test_cupy_backed_chunks_run_the_cupy_path(cp):
    rng = np.random.default_rng(9)
    params = rnn_xp.init("lstm", 4, 6, num_layers=2, direction="bidirectional", seed=3, xp=np)
    x, state, kw = _inputs(rng, params.config, 10, 7, "lengths")
    y, (h, c) = rnn_xp.forward(x, params, **kw)
    gparams = rnn_xp.to_device(params, cp)
    dx = da.from_array(x, chunks=(3, 7, 4)).map_blocks(cp.asarray)
    assert isinstance(dx._meta, cp.ndarray)
    assert rnn_xp.explain(dx, gparams).implementation == "cupy-fused"
    dy, (dh, dc) = rnn_xp.forward(dx, gparams, lengths=kw["lengths"])
    for d, want in ((dy, y), (dh, h), (dc, c)):
        got = d.compute()
        assert isinstance(got, cp.ndarray)
        _close(cp.asnumpy(got), want, 1e-4)
    with pytest.raises(TypeError, match=r"x is a cupy array but params live in numpy"):
        rnn_xp.forward(dx, params)


# --- dask.distributed ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="distributed is not installed (pip install 'rnn_xp[dask]')")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, worker_dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_distributed_forward_and_model(client):
    rng = np.random.default_rng(8)
    params = rnn_xp.init("lstm", 4, 6, num_layers=2, direction="bidirectional", seed=3, xp=np)
    x, state, kw = _inputs(rng, params.config, 13, 9, "all")
    y, (h, c) = rnn_xp.forward(x, params, state, **kw)
    chunks = (5, 2, 6)
    dy, (dh, dc) = rnn_xp.forward(
        _as_dask(x, chunks, 0),
        params,
        tuple(_as_dask(s, chunks, 1) for s in state),
        lengths=_as_dask(kw["lengths"], chunks, 0),
        mask=kw["mask"],
        zero_output_for_mask=kw["zero_output_for_mask"],
    )
    held = client.persist([dy, dh, dc])
    for g, w in zip(client.gather(client.compute(held)), (y, h, c), strict=True):
        _close(g, w)
    # the weights: one key of their real size, which each worker holds once and fetched at most once
    (wkey,) = _weight_keys(_graph(dy))
    nbytes = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.tasks[wkey].nbytes)
    assert nbytes >= sum(a.nbytes for _, a in params.named_arrays())
    fetched = client.run(lambda dask_worker: [k for e in dask_worker.transfer_incoming_log for k in e["keys"]])
    assert all(keys.count(wkey) <= 1 for keys in fetched.values()), fetched
    del held
    assert len(client.scheduler_info()["workers"]) == 2
    model = rnn_xp.text_classifier(xp=np, steps=10, vocab=40)
    ids = rng.integers(0, 40, (12, 10))
    _close(client.compute(model(da.from_array(ids, chunks=(3, 10))), sync=True), model(ids))


# --- the benchmark (bench/dask_scaling.py) -------------------------------------------------------------------
def test_dask_scaling_benchmark_runs_and_checks_results(tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'rnn_xp[dask]')")
    import json
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import configs, dask_scaling

    tiny = configs.Config("dask-tiny", "gru", 16, 5, 3, 4, "dask")
    monkeypatch.setattr(configs, "DASK", [tiny])
    out = tmp_path / "d.json"
    assert dask_scaling.main(["--configs", "dask-tiny", "--rows", "4", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runners = [r["runner"] for r in result["records"]]
    assert runners[-2:] == ["dask-1", "dask-2"] and "numpy-1t" in runners
    assert all(r["h_diff"] <= F32 for r in result["records"])
    assert result["records"][-1]["tasks"] == 4
    (s,) = result["summary"]
    assert s["speedup_2_over_1"] > 0 and s["noop_task_s"] > 0
    threads = next(iter(result["worker_threads"].values()))
    assert all(t["OPENBLAS_NUM_THREADS"] == "1" for t in threads.values())
    assert "2 workers / 1 worker" in (tmp_path / "d.md").read_text()


def test_dask_scaling_summary_and_goals():
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import dask_scaling

    recs = [
        {"config": "c", "runner": r, "median_s": t, **({"tasks": 4, "noop_task_s": 1e-3} if r == "dask-1" else {})}
        for r, t in (("numpy-all", 1.0), ("numpy-1t", 1.8), ("dask-1", 2.0), ("dask-2", 1.1))
    ]
    (s,) = dask_scaling.summarise(recs)
    assert s["speedup_2_over_1"] == pytest.approx(2.0 / 1.1)
    assert s["efficiency_2"] == pytest.approx(1.0 / 1.1)
    assert s["vs_numpy_2_threads"] == pytest.approx(1.0 / 1.1)
    assert s["overhead_per_task_s"] == pytest.approx(0.05)
