"""rnn_xp.from_keras against Keras 3 itself (torch backend): the same numbers, masks included."""

import functools
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import assert_close, on

import rnn_xp
from rnn_xp import _xp

pytest.importorskip("torch")  # the backend Keras runs on here
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
L = keras.layers
# Keras's own NumPy conversions warn on every call under NumPy 2; nothing of rnn_xp's is silenced
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TOL = 1e-4


def _randomize(model, seed):
    """Seeded, non-symmetric weights AND biases (Keras initialises biases to zero)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in ws])
    return model


def _numpy(out):
    if isinstance(out, (list, tuple)):
        return [_numpy(o) for o in out]
    return np.asarray(keras.ops.convert_to_numpy(out))


def _seq(*layers, shape):
    return keras.Sequential([keras.Input(shape[1:], dtype="int32" if len(shape) == 2 else "float32"), *layers])


def _masked_steps(rng, shape):
    """Float inputs with whole steps equal to 0 (masked by Masking): leading, inner, trailing, a whole row."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, :2] = 0.0
    x[1] = 0.0
    x[2, 3] = 0.0
    x[3, -1] = 0.0
    return x


def _token_ids(rng, shape, vocab):
    ids = rng.integers(1, vocab, shape)
    ids[0, :2] = 0
    ids[1] = 0
    ids[2, 3] = 0
    ids[3, -1] = 0
    return ids


# name -> builder(rng) -> (keras model, [inputs]); each covers part of the layer list, masked and unmasked
def _text_classifier(rng):
    m = _seq(L.Embedding(40, 8, mask_zero=True), L.SimpleRNN(6), L.Dense(1, activation="sigmoid"), shape=(5, 7))
    return m, [_token_ids(rng, (5, 7), 40), rng.integers(1, 40, (5, 7))]


def _stacked_lstm(rng):
    m = _seq(
        L.Embedding(30, 5, mask_zero=True),
        L.LSTM(6, return_sequences=True),
        L.LSTM(4, return_sequences=True),
        L.LSTM(3),
        L.Dense(3, activation="softmax"),
        shape=(5, 7),
    )
    return m, [_token_ids(rng, (5, 7), 30)]


def _grus(rng):
    m = _seq(
        L.Masking(0.0),
        L.GRU(5, return_sequences=True),
        L.GRU(4, reset_after=False, use_bias=False, go_backwards=True, return_sequences=True),
        L.GRU(3, reset_after=False, go_backwards=True),
        L.Dense(2),
        shape=(5, 7, 3),
    )
    return m, [_masked_steps(rng, (5, 7, 3)), rng.standard_normal((5, 7, 3)).astype(np.float32)]


def _bidirectional(rng):
    m = _seq(
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(4, return_sequences=True)),  # concat
        L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.SimpleRNN(3, use_bias=False, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.LSTM(2, use_bias=False), merge_mode="ave"),
        L.Dense(2, activation="tanh"),
        shape=(5, 6, 3),
    )
    return m, [_masked_steps(rng, (5, 6, 3)), rng.standard_normal((5, 6, 3)).astype(np.float32)]


def _pair_sequences(rng):
    m = _seq(
        L.Masking(0.0),
        L.Dropout(0.5),
        L.Bidirectional(L.GRU(3, reset_after=False, return_sequences=True), merge_mode=None),
        shape=(5, 6, 3),
    )
    return m, [_masked_steps(rng, (5, 6, 3))]


def _pair_last(rng):
    # a backward layer of its own kind and size
    m = _seq(
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(3), backward_layer=L.GRU(2, go_backwards=True), merge_mode=None),
        shape=(5, 6, 3),
    )
    return m, [_masked_steps(rng, (5, 6, 3))]


def _zero_output_for_mask(rng):
    m = _seq(
        L.Masking(0.0),
        L.LSTM(4, zero_output_for_mask=True, return_sequences=True),
        L.SimpleRNN(3, zero_output_for_mask=True, go_backwards=True),
        shape=(5, 6, 3),
    )
    return m, [_masked_steps(rng, (5, 6, 3))]


def _functional(rng):
    inp = keras.Input((7, 3))
    x = L.Masking(0.0)(inp)
    x = L.Dense(4, activation="relu")(x)  # passes the mask on
    x = L.SpatialDropout1D(0.3)(x)
    x = L.GaussianNoise(0.5)(x)
    x = L.GaussianDropout(0.2)(x)
    x = L.AlphaDropout(0.2)(x)
    x = L.ActivityRegularization(l1=0.1)(x)
    x = L.Identity()(x)
    x = L.LSTM(5, return_sequences=True, go_backwards=True)(x)
    x = L.Bidirectional(L.GRU(3))(x)
    x = L.Dense(3, use_bias=False)(x)
    x = L.Activation("softmax")(x)
    return keras.Model(inp, x), [_masked_steps(rng, (5, 7, 3)), rng.standard_normal((5, 7, 3)).astype(np.float32)]


def _functional_tokens(rng):
    inp = keras.Input((7,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True)(inp)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave")(x)
    x = L.GRU(2)(x)
    return keras.Model(inp, x), [_token_ids(rng, (5, 7), 20)]


MODELS = {
    f.__name__[1:]: f
    for f in (
        _text_classifier,
        _stacked_lstm,
        _grus,
        _bidirectional,
        _pair_sequences,
        _pair_last,
        _zero_output_for_mask,
        _functional,
        _functional_tokens,
    )
}


@functools.cache
def _case(name):
    """(keras model, inputs, Keras's outputs, the imported model): built once, run on every backend."""
    rng = np.random.default_rng(sorted(MODELS).index(name))
    model, inputs = MODELS[name](rng)
    _randomize(model, seed=len(name))
    expected = [_numpy(model(x, training=False)) for x in inputs]
    return model, inputs, expected, rnn_xp.from_keras(model)


def _check(got, expected, xp):
    if isinstance(expected, list):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _check(g, e, xp)
        return
    assert_close(got, expected, xp=xp, dtype="float32", shape=expected.shape, atol=TOL)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_match_keras(name, xp):
    model, inputs, expected, imported = _case(name)
    on_xp = rnn_xp.to_device(imported, xp)
    for x, e in zip(inputs, expected, strict=True):
        _check(on_xp(on(xp, x)), e, xp)
    assert rnn_xp.count_params(on_xp) == model.count_params()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_summary_counts_match_keras(name):
    model, _, _, imported = _case(name)
    keras_layers = [layer for layer in model.layers if not isinstance(layer, L.InputLayer)]
    assert [layer.name for layer in imported.layers] == [layer.name for layer in keras_layers]
    assert [rnn_xp.count_params(layer) for layer in imported.layers] == [layer.count_params() for layer in keras_layers]
    text = rnn_xp.summary(imported)
    assert f"Total params: {model.count_params():,}" in text
    for layer in keras_layers:
        shape = layer.output.shape if not isinstance(layer.output, (list, tuple)) else None
        if shape is not None:
            assert f"{layer.name} ({type(layer).__name__}" in text
            assert "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")" in text


def test_keras_file_saved_reloaded_and_rnn_xp_round_trip(tmp_path, xp):
    model, inputs, expected, _ = _case("bidirectional")
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    imported = rnn_xp.to_device(rnn_xp.from_keras(path), xp)
    for x, e in zip(inputs, expected, strict=True):
        np.testing.assert_allclose(_numpy(reloaded(x, training=False)), e, atol=1e-6)
        _check(imported(on(xp, x)), e, xp)
    # rnn_xp's own file keeps every layer option (go_backwards, merge modes, masking)
    rnn_xp.save(imported, tmp_path / "m.npz")
    again = rnn_xp.load(tmp_path / "m.npz", xp=xp)
    assert rnn_xp.summary(again) == rnn_xp.summary(imported)
    for x, e in zip(inputs, expected, strict=True):
        _check(again(on(xp, x)), e, xp)


def test_every_saved_model_round_trips_through_rnn_xp_files(tmp_path):
    for name in sorted(MODELS):
        _, inputs, expected, imported = _case(name)
        rnn_xp.save(imported, tmp_path / f"{name}.npz")
        again = rnn_xp.load(tmp_path / f"{name}.npz", xp=np)
        _check(again(inputs[0]), expected[0], _xp.as_namespace(np))


def test_loads_where_keras_cannot_be_imported(tmp_path):
    model, inputs, expected, _ = _case("functional_tokens")
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", inputs[0])
    code = (
        "import sys\n"
        "sys.modules['keras'] = None; sys.modules['tensorflow'] = None  # any import of them fails\n"
        "import numpy as np, rnn_xp\n"
        f"m = rnn_xp.from_keras({str(path)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "try:\n    import keras\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('keras imported')\n"
        "assert 'torch' not in sys.modules, 'reading a .keras file pulled torch in'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnn_xp.__file__)))  # installed or a checkout alike
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected[0], atol=TOL)


KERAS_ACTIVATIONS = [
    "celu",
    "elu",
    "exponential",
    "gelu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
]


def test_the_list_is_every_activation_keras_recurrent_layers_take():
    from keras.src.activations import ALL_OBJECTS_DICT

    # glu halves the units and threshold needs arguments: a recurrent layer cannot use either
    assert sorted(set(ALL_OBJECTS_DICT) - {"glu", "threshold"}) == KERAS_ACTIVATIONS


AXIS_WIDE = ["log_softmax", "softmax", "sparsemax"]  # functions of the last axis: layers take them, cells do not


@pytest.mark.parametrize("name", KERAS_ACTIVATIONS)
def test_every_keras_activation(name):
    rng = np.random.default_rng(KERAS_ACTIVATIONS.index(name))
    cell = "tanh" if name in AXIS_WIDE else name
    # exp(c) feeding back through h overflows within a few steps: the LSTM's exponential goes to its gates only
    lstm_act, gru_gate = ("tanh", "sigmoid") if name == "exponential" else (cell, cell)
    model = _seq(
        L.SimpleRNN(4, activation=cell, return_sequences=True),
        L.LSTM(4, activation=lstm_act, recurrent_activation=cell, return_sequences=True),
        L.GRU(
            3,
            activation=cell,
            recurrent_activation=gru_gate,
            reset_after=KERAS_ACTIVATIONS.index(name) % 2 == 0,
            return_sequences=True,
        ),
        L.Activation(name),
        L.Dense(3, activation=name),
        shape=(3, 5, 2),
    )
    rng_w = np.random.default_rng(7)
    for layer in model.layers:  # small weights: unbounded functions feed back on themselves
        layer.set_weights([rng_w.uniform(-0.25, 0.25, w.shape).astype(w.dtype) for w in layer.get_weights()])
    x = 0.5 * rng.standard_normal((3, 5, 2)).astype(np.float32)
    expected = _numpy(model(x, training=False))
    assert np.isfinite(expected).all() and np.abs(expected).max() < 100  # a test of values, not of overflow
    got = rnn_xp.from_keras(model)(x)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", AXIS_WIDE)
def test_axis_wide_activations_are_refused_in_cells(name):
    _error(_seq(L.GRU(3, recurrent_activation=name), shape=(2, 5, 3)), f"activation '{name}' is not supported inside")


def test_single_layer(xp):
    layer = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False), merge_mode="sum")
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    layer(x)  # builds it
    layer.set_weights(
        [np.random.default_rng(1).uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()]
    )
    imported = rnn_xp.to_device(rnn_xp.from_keras(layer), xp)
    _check(imported(on(xp, x)), _numpy(layer(x)), xp)
    assert rnn_xp.count_params(imported) == layer.count_params()


# --- what it does not import: clear errors ----------------------------------------------------------------
def _error(model, match):
    with pytest.raises(ValueError, match=match):
        rnn_xp.from_keras(model)


def test_unsupported_layers_and_options_are_named():
    _error(_seq(L.Conv1D(2, 2), shape=(2, 5, 3)), r"layer 'conv1d' \(Conv1D\) is not supported; rnn_xp imports .*LSTM")
    _error(_seq(L.LSTM(2, return_state=True), shape=(2, 5, 3)), "return_state=True is not supported")
    stateful = keras.Sequential([keras.Input((5, 3), batch_size=2), L.GRU(2, stateful=True)])
    _error(stateful, "stateful=True is not supported")
    _error(_seq(L.Dense(4, activation="glu"), shape=(2, 5, 3)), "activation 'glu' is not supported")
    _error(_seq(L.SimpleRNN(2, activation=lambda v: v * 2.0), shape=(2, 5, 3)), "not a built-in Keras activation")
    _error(_seq(L.Bidirectional(L.RNN(L.SimpleRNNCell(2))), shape=(2, 5, 3)), "Bidirectional around SimpleRNN")
    inp = keras.Input((5, 3))
    branch = L.Add()([L.Dense(3)(inp), L.Dense(3)(inp)])
    _error(keras.Model(inp, L.LSTM(2)(branch)), r"layer 'add' \(Add\) is not supported")
    shared = L.Dense(3)
    _error(keras.Model(inp, L.LSTM(2)(shared(shared(inp)))), "each layer is called once")
    a = L.Dense(3)(inp)
    _error(keras.Model(inp, [L.LSTM(2)(a), L.GRU(2)(a)]), "one input and one output")
    with pytest.raises(TypeError, match="Keras 3 model or layer"):
        rnn_xp.from_keras(42)
    with pytest.raises(ValueError, match="not built"):
        rnn_xp.from_keras(L.LSTM(3))


def test_bad_files(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"PK not really a zip" * 10)
    with pytest.raises(ValueError, match="not a .keras archive"):
        rnn_xp.from_keras(garbage)
    model, _, _, _ = _case("grus")
    good = tmp_path / "good.keras"
    model.save(good)
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}

    def archive(name, mutate, compression=zipfile.ZIP_STORED):
        m = dict(members)
        mutate(m)
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression) as zf:
            for n, data in m.items():
                zf.writestr(n, data)
        return path

    with pytest.raises(ValueError, match="lacks config.json"):
        rnn_xp.from_keras(archive("no_config.keras", lambda m: m.pop("config.json")))
    with pytest.raises(ValueError, match="malformed"):
        rnn_xp.from_keras(archive("bad_json.keras", lambda m: m.update({"config.json": b"{nope"})))
    with pytest.raises(ValueError, match="not an HDF5 file"):
        rnn_xp.from_keras(archive("bad_h5.keras", lambda m: m.update({"model.weights.h5": b"\x00" * 64})))
    # a config that deflates from a few KB to 100 MB: refused before it is read
    bomb = archive("bomb.keras", lambda m: m.update({"config.json": b" " * (100 << 20)}), zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="declares"):
        rnn_xp.from_keras(bomb)
    spec = json.loads(members["config.json"])
    spec["config"]["layers"][2]["config"]["units"] = 99
    with pytest.raises(ValueError, match="kernel"):
        rnn_xp.from_keras(archive("units.keras", lambda m: m.update({"config.json": json.dumps(spec).encode()})))


def test_weights_file_may_not_link_outside_itself(tmp_path):
    import h5py

    model, _, _, _ = _case("grus")
    good = tmp_path / "good.keras"
    model.save(good)
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    weights = tmp_path / "w.h5"
    weights.write_bytes(members["model.weights.h5"])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.ones((3, 15), np.float32)
    with h5py.File(weights, "a") as f:
        del f["layers/gru/cell/vars/0"]
        f["layers/gru/cell/vars/0"] = h5py.ExternalLink(str(other), "secret")
    members["model.weights.h5"] = weights.read_bytes()
    path = tmp_path / "linked.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(ValueError, match="links outside"):
        rnn_xp.from_keras(path)


def _paths(node, path=()):
    """Every path into a JSON value."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*path, k))


def test_hostile_configs_raise_value_errors(tmp_path):
    """Any value of the config replaced by junk: a model or a ValueError, never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    model, inputs, _, _ = _case("functional")
    good = tmp_path / "good.keras"
    model.save(good)
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    spec = json.loads(members["config.json"])
    paths = list(_paths(spec))
    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 10**12),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.lists(st.integers(0, 3), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(paths), junk)
    def check(path, value):
        mutated = json.loads(members["config.json"])
        if path:
            parent = mutated
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]] = value
        else:
            mutated = value
        target = tmp_path / "mutated.keras"
        with zipfile.ZipFile(target, "w") as zf:
            for n, data in members.items():
                zf.writestr(n, json.dumps(mutated).encode() if n == "config.json" else data)
        try:
            imported = rnn_xp.from_keras(target)
        except ValueError:
            return
        assert isinstance(imported, rnn_xp.Sequential)

    check()
