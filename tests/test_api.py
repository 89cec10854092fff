"""Params, backend choice, transfers, validation, save/load, model pieces (the demo: tests/test_cli.py)."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from reference import reference_forward

import rnn_xp
from rnn_xp import _xp


# --- init and params ----------------------------------------------------------------------------
def test_same_seed_same_weights_on_every_backend(xp):
    a = rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=42, dtype="float64", xp=np)
    b = rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=42, dtype="float64", xp=xp)
    assert _xp.same_namespace(b.xp, xp)
    for (na, wa), (nb, wb) in zip(a.named_arrays(), b.named_arrays(), strict=True):
        assert na == nb
        np.testing.assert_array_equal(wa, _xp.to_host(wb))
    bound = 1 / np.sqrt(4)
    assert all(np.abs(w).max() <= bound for _, w in a.named_arrays())
    c = rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=43, dtype="float64", xp=np)
    assert not np.array_equal(a.layers[0][0].w_ih, c.layers[0][0].w_ih)


@pytest.mark.parametrize(
    "cell,bias,expected",
    [
        ("rnn", "single", 100 * (32 + 100 + 1)),  # Keras SimpleRNN U(F+U+1)
        ("lstm", "single", 4 * 10 * (3 + 10 + 1)),  # Keras LSTM 4U(F+U+1)
        ("gru", True, 3 * 10 * (3 + 10 + 2)),  # Keras GRU reset_after 3U(F+U+2)
        ("gru", "single", 3 * 10 * (3 + 10 + 1)),  # Keras GRU reset_after=False 3U(F+U+1)
        ("lstm", True, 4 * 10 * (3 + 10 + 2)),  # PyTorch: two bias vectors
        ("rnn", False, 10 * (3 + 10)),
    ],
)
def test_count_params(cell, bias, expected):
    F, U = (32, 100) if expected == 13300 else (3, 10)
    assert rnn_xp.count_params(rnn_xp.init(cell, F, U, bias=bias, xp=np)) == expected


def test_count_params_stacked_proj_peepholes():
    p = rnn_xp.init("lstm", 3, 8, num_layers=2, bidirectional=True, proj_size=4, peepholes=True, xp=np)
    per = lambda f: 32 * f + 32 * 4 + 2 * 32 + 4 * 8 + 3 * 8  # noqa: E731
    assert rnn_xp.count_params(p) == 2 * per(3) + 2 * per(8)  # layer 1 reads 2*proj = 8 features


def test_params_are_immutable():
    p = rnn_xp.init("gru", 2, 3, xp=np)
    with pytest.raises(AttributeError):
        p.config = None
    with pytest.raises(AttributeError):
        p.layers[0][0].w_ih = None
    with pytest.raises(ValueError):  # numpy weights are read-only views
        p.layers[0][0].w_ih[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"cell": "lstmx"}, ValueError, "unknown"),
        ({"cell": 3}, TypeError, "cell must be a str"),
        ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1"),
        ({"input_size": 2.5}, TypeError, "input_size must be an int"),
        ({"num_layers": 0}, ValueError, "num_layers"),
        ({"direction": "both"}, ValueError, "direction"),
        ({"bias": "double"}, ValueError, "bias"),
        ({"proj_size": 2}, ValueError, "only defined for cell='lstm'"),
        ({"cell": "lstm", "proj_size": 9}, ValueError, "smaller than hidden_size"),
        ({"activations": ["nope"]}, ValueError, "unknown activation"),
        ({"activations": ["tanh", "tanh"]}, ValueError, "does not fit"),
        ({"peepholes": True}, ValueError, "LSTM options"),
        ({"clip": -1.0}, ValueError, "clip"),
        ({"dtype": "int32"}, TypeError, "dtype"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"direction": "reverse", "bidirectional": True}, ValueError, "contradicts"),
    ],
)
def test_init_rejects(kwargs, exc, match):
    args = {"cell": "rnn", "input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(exc, match=match):
        rnn_xp.init(args.pop("cell"), args.pop("input_size"), args.pop("hidden_size"), xp=np, **args)


def test_init_dtype_missing_in_namespace():
    import array_api_strict

    with pytest.raises(TypeError, match="has no bfloat16"):
        rnn_xp.init("rnn", 2, 3, dtype="bfloat16", xp=array_api_strict)


def test_bidirectional_spelling():
    a = rnn_xp.init("gru", 2, 3, bidirectional=True, xp=np)
    assert a.config.direction == "bidirectional" and len(a.layers[0]) == 2


# --- backend choice -----------------------------------------------------------------------------
def test_select_backend_numpy_and_env(monkeypatch):
    b = rnn_xp.select_backend("numpy")
    assert b.name == "numpy" and "requested" in b.reason and _xp.namespace_name(b.xp) == "numpy"
    monkeypatch.setenv("RNN_XP_BACKEND", "numpy")
    assert "RNN_XP_BACKEND" in rnn_xp.select_backend().reason
    monkeypatch.setenv("RNN_XP_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown"):
        rnn_xp.select_backend()


def test_select_backend_auto_and_explicit_cupy(monkeypatch):
    monkeypatch.delenv("RNN_XP_BACKEND", raising=False)
    b = rnn_xp.select_backend()
    assert b.name in ("numpy", "cupy") and b.reason
    if b.name == "numpy":
        assert "NumPy fallback" in b.reason
        with pytest.raises(RuntimeError, match=r"cuda12\]|cuda13\]"):
            rnn_xp.select_backend("cupy")


# --- forward validation ---------------------------------------------------------------------------
@pytest.fixture
def p32():
    return rnn_xp.init("lstm", 3, 4, num_layers=2, seed=0, xp=np)


def test_forward_rejects_bad_input(p32):
    x = np.zeros((2, 5, 3), np.float32)
    cases = [
        (lambda: rnn_xp.forward(x.tolist(), p32), TypeError, "must be an array"),
        (lambda: rnn_xp.forward(x[0], p32), ValueError, "3 dimensions"),
        (lambda: rnn_xp.forward(np.zeros((2, 5, 4), np.float32), p32), ValueError, "input_size=3"),
        (lambda: rnn_xp.forward(x.astype(np.float64), p32), TypeError, "no silent casts"),
        (lambda: rnn_xp.forward(x.astype(np.int64), p32), TypeError, "floating"),
        (lambda: rnn_xp.forward(x, "params"), TypeError, "params must be rnn_xp params"),
        (lambda: rnn_xp.forward(x, p32, np.zeros((2, 2, 4), np.float32)), TypeError, "c0 is missing"),
        (lambda: rnn_xp.forward(x, p32, (np.zeros((2, 2, 4), np.float32),) * 2 + (1,)), TypeError, "pair"),
        (
            lambda: rnn_xp.forward(x, p32, (np.zeros((1, 2, 4), np.float32), np.zeros((2, 2, 4), np.float32))),
            ValueError,
            "shape",
        ),
        (lambda: rnn_xp.forward(x, p32, lengths=[5, 6]), ValueError, r"\[0, 5\]"),
        (lambda: rnn_xp.forward(x, p32, lengths=[5, -1]), ValueError, r"\[0, 5\]"),
        (lambda: rnn_xp.forward(x, p32, lengths=[5]), ValueError, r"expected \(2,\)"),
        (lambda: rnn_xp.forward(x, p32, lengths=[5.0, 2.0]), TypeError, "integers"),
        (lambda: rnn_xp.forward(x, p32, lengths=np.array([5.0, 2.0])), TypeError, "integers"),
        (lambda: rnn_xp.forward(x, p32, mask=np.ones((5, 2), bool)), ValueError, "mask has shape"),
        (lambda: rnn_xp.forward(x, p32, mask=np.ones((2, 5))), TypeError, "bool"),
        (lambda: rnn_xp.forward(x, p32, impl="magic"), ValueError, "impl"),
        (lambda: rnn_xp.forward(x, p32, time_major=1), TypeError, "time_major"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_forward_refuses_silent_transfers():
    import array_api_strict as xs

    p = rnn_xp.init("rnn", 3, 4, seed=0, xp=np)
    x = xs.zeros((1, 2, 3), dtype=xs.float32)
    with pytest.raises(TypeError, match="to_device"):
        rnn_xp.forward(x, p)
    y, h = rnn_xp.forward(x, rnn_xp.to_device(p, xs))  # the documented fix
    assert tuple(y.shape) == (1, 2, 4)


def test_to_device_round_trip_and_dtype(xp):
    p = rnn_xp.init("gru", 3, 4, seed=1, dtype="float64", xp=np)
    q = rnn_xp.to_device(p, xp, dtype="float32")
    assert q.config.dtype == "float32" and _xp.dtype_name(q.dtype) == "float32"
    back = rnn_xp.to_device(q, np, dtype="float64")
    for (_, a), (_, b) in zip(p.named_arrays(), back.named_arrays(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7)
    with pytest.raises(TypeError, match="takes rnn_xp params"):
        rnn_xp.to_device([1, 2], np)


def test_to_device_copies():
    torch = pytest.importorskip("torch")
    host = rnn_xp.init("rnn", 2, 3, seed=1, xp=np)

    t = rnn_xp.to_device(host, torch)
    t.layers[0][0].w_ih.add_(1.0)  # a torch tensor is writable; the numpy params must not change
    assert np.abs(host.layers[0][0].w_ih).max() <= 1 / np.sqrt(3)


# --- save / load ----------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, xp):
    p = rnn_xp.init(
        "lstm",
        3,
        5,
        num_layers=2,
        bidirectional=True,
        proj_size=2,
        peepholes=True,
        clip=3.0,
        activations=["HardSigmoid", "Tanh", "ScaledTanh"],
        activation_alpha=[0.3, 0.7],
        activation_beta=[0.4, 1.1],
        seed=3,
        xp=np,
    )
    path = tmp_path / "p.npz"
    rnn_xp.save(p, path)
    q = rnn_xp.load(path, xp=xp)
    assert q.config == p.config and _xp.same_namespace(q.xp, xp)
    for (na, a), (nb, b) in zip(p.named_arrays(), q.named_arrays(), strict=True):
        assert na == nb
        np.testing.assert_array_equal(a, _xp.to_host(b))


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    rnn_xp.save(rnn_xp.init("rnn", 2, 3, seed=1, xp=np), path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        rnn_xp.save(rnn_xp.init("rnn", 2, 3, seed=2, xp=np), path)
    assert path.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ["p.npz"]


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"\x00not a zip at all" * 10)
    with pytest.raises(ValueError, match="not a valid rnn_xp file"):
        rnn_xp.load(bad, xp=np)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="no rnn_xp header"):
        rnn_xp.load(plain, xp=np)
    good = tmp_path / "good.npz"
    rnn_xp.save(rnn_xp.init("gru", 2, 3, seed=1, xp=np), good)
    data = dict(np.load(good))
    data["l0.fwd.w_hh"] = np.zeros((9, 4))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **data)
    with pytest.raises(ValueError, match="shape"):
        rnn_xp.load(wrong, xp=np)
    data = dict(np.load(good))
    del data["l0.fwd.b_hh"]
    missing = tmp_path / "missing.npz"
    np.savez(missing, **data)
    with pytest.raises(ValueError, match="missing"):
        rnn_xp.load(missing, xp=np)
    obj = tmp_path / "obj.npz"
    data = dict(np.load(good))
    data["l0.fwd.w_ih"] = np.array([object()] * 18, dtype=object).reshape(9, 2)
    np.savez(obj, **data)
    with pytest.raises(ValueError, match="not a valid rnn_xp file"):
        rnn_xp.load(obj, xp=np)  # would need unpickling: refused


# --- the text classifier of the demo ---------------------------------------------------------------------
def test_text_classifier_summary_and_output(xp):
    model = rnn_xp.text_classifier(seed=0, xp=xp)
    assert rnn_xp.count_params(model) == 173_401
    text = rnn_xp.summary(model)
    for piece in ("(None, 250, 32)", "160,000", "13,300", "(None, 100)", "101", "Total params: 173,401"):
        assert piece in text
    ids_host = np.random.default_rng(0).integers(0, 5000, size=(3, 250))
    out = model(_xp.from_host(ids_host, xp))
    assert tuple(out.shape) == (3, 1)
    # the same numbers by hand: embedding lookup, the float32 rnn reference, dense + sigmoid
    emb, rnn, dense = model.layers
    table = _xp.to_host(emb.table).astype(np.float64)
    _, h, _ = reference_forward(table[ids_host], rnn.params)
    logits = h[-1] @ _xp.to_host(dense.kernel).astype(np.float64) + _xp.to_host(dense.bias)
    np.testing.assert_allclose(_xp.to_host(out), 1 / (1 + np.exp(-logits)), atol=2e-5)


def test_keras_summary_counts_of_a_small_model():
    # Keras's summary of SimpleRNN(10) on input (3, 1): 10*10 + 1*10 + 10 = 120 params; Dense(1): 11; total 131
    model = rnn_xp.Sequential(
        [rnn_xp.Recurrent(rnn_xp.init("rnn", 1, 10, bias="single", xp=np)), rnn_xp.Dense.init(10, 1, xp=np)],
        input_shape=(3, 1),
    )
    assert rnn_xp.count_params(model) == 131
    assert "(None, 10)" in rnn_xp.summary(model) and "120" in rnn_xp.summary(model)


def test_softmax_output_layer_and_return_sequences(rng):
    p = rnn_xp.init("rnn", 4, 6, seed=0, dtype="float64", xp=np)
    model = rnn_xp.Sequential(
        [
            rnn_xp.Recurrent(p, return_sequences=True),
            rnn_xp.Dense.init(6, 5, activation="softmax", seed=1, dtype="float64", xp=np),
        ]
    )
    x = rng.standard_normal((2, 7, 4))
    y = model(x)
    assert y.shape == (2, 7, 5)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-12)
    ry, _, _ = reference_forward(x, p)
    dense = model.layers[1]
    logits = ry @ dense.kernel + dense.bias
    np.testing.assert_allclose(y, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-12)


def test_embedding_mask_zero_flows_into_the_rnn(rng):
    emb = rnn_xp.Embedding.init(10, 3, mask_zero=True, seed=0, dtype="float64", xp=np)
    p = rnn_xp.init("gru", 3, 4, seed=1, dtype="float64", xp=np)
    model = rnn_xp.Sequential([emb, rnn_xp.Recurrent(p, return_sequences=True)])
    ids = np.array([[0, 3, 0, 5, 7], [2, 2, 0, 0, 0]])
    ry, _, _ = reference_forward(emb.table[ids], p, mask=ids != 0)
    np.testing.assert_allclose(model(ids), ry, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model(np.array([[10]]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(np.zeros((1, 2)))


def test_seed_model_is_a_deprecated_alias_of_text_classifier():
    with pytest.warns(DeprecationWarning, match=r"text_classifier\(\)") as record:
        old = rnn_xp.seed_model(seed=3, units=4, vocab=20, xp=np)
    assert record[0].filename == __file__  # stacklevel=2: the warning points at the caller
    new = rnn_xp.text_classifier(seed=3, units=4, vocab=20, xp=np)
    ids = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(old(ids), new(ids))
    assert "seed_model" in rnn_xp.__all__ and "text_classifier" in rnn_xp.__all__


def test_model_save_load(tmp_path):
    model = rnn_xp.text_classifier(seed=1, xp=np)
    rnn_xp.save(model, tmp_path / "m.npz")
    again = rnn_xp.load(tmp_path / "m.npz", xp=np)
    ids = np.random.default_rng(0).integers(0, 5000, size=(2, 250))
    np.testing.assert_array_equal(model(ids), again(ids))
    assert rnn_xp.summary(again) == rnn_xp.summary(model)


# --- threads, import hygiene ----------------------------------------------------------------------
def test_forward_from_many_threads(rng):
    p = rnn_xp.init("lstm", 3, 8, num_layers=2, bidirectional=True, seed=0, xp=np)
    xs = [rng.standard_normal((2, 20, 3)).astype(np.float32) for _ in range(8)]
    expected = [rnn_xp.forward(x, p)[0] for x in xs]
    results, errors = [None] * 8, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = rnn_xp.forward(xs[i], p)[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, exp in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, exp)


def test_import_pulls_no_framework():
    # numba too: the compiled implementation imports it on the first forward that it runs
    code = (
        "import sys, rnn_xp; bad = [m for m in ('cupy', 'torch', 'keras', 'onnx', 'h5py', 'tensorflow', 'numba') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rnn_forward_alias():
    assert rnn_xp.rnn_forward is rnn_xp.forward
