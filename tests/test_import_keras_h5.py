"""rnn_xp.from_keras on legacy HDF5 files: Keras 2 (written by tf-keras 2.21, and hand-built as Keras 2.0.8, 2.1.6
and 2.2.4 wrote them) and Keras 3's .h5, whole models and weights-only files with their architecture.

The Keras 2 files and the outputs tf-keras computed on them are committed under tests/data/keras2 (written by
tests/data/make_keras2_h5.py, which needs TensorFlow); the tests here need h5py, and Keras 3 for its own files.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, on

import rnn_xp
from rnn_xp.activations import resolve

h5py = pytest.importorskip("h5py")
DATA = Path(__file__).resolve().parent / "data" / "keras2"
ATOL, RTOL = 1e-5, 1e-4


@functools.cache
def _expected():
    with np.load(DATA / "expected.npz") as f:
        return {k: f[k] for k in f.files}


def _cases(name):
    """[(input, [outputs])] that tf-keras computed for a fixture."""
    exp, out, i = _expected(), [], 0
    while f"{name}/x{i}" in exp:
        single = exp.get(f"{name}/y{i}")
        ys = [single] if single is not None else [exp[k] for k in sorted(exp) if k.startswith(f"{name}/y{i}_")]
        out.append((exp[f"{name}/x{i}"], ys))
        i += 1
    return out


MODELS = sorted({k.split("/")[0] for k in _expected()} - {"weights"})


def _check(model, name, xp):
    for x, ys in _cases(name):
        got = model(on(xp, x))
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(ys)
        for g, e in zip(got, ys, strict=True):
            assert_close(g, e, xp=xp, dtype="float32", shape=e.shape, atol=ATOL, rtol=RTOL)


def _stored_values(path, group="model_weights"):
    """The number of weight values a legacy file holds (Keras's count_params of the model it saved)."""
    total = []
    with h5py.File(path, "r") as f:
        f[group].visititems(lambda n, o: total.append(o.size) if isinstance(o, h5py.Dataset) else None)
    return sum(total)


@functools.cache
def _imported(name):
    return rnn_xp.from_keras(DATA / f"{name}.h5")


def test_the_fixtures_cover_every_layer_and_option():
    assert MODELS == [
        "bidirectional",
        "cudnn",
        "functional",
        "grus",
        "hard_sigmoid",
        "keras_2_0_8",
        "keras_2_1_6_cudnn",
        "keras_2_2_4",
        "pair",
        "text_classifier",
        "time_distributed",
    ]
    kinds = set()
    for name in MODELS:
        with h5py.File(DATA / f"{name}.h5", "r") as f:
            text = f.attrs["model_config"]
        kinds |= {e["class_name"] for e in _layer_entries(json.loads(text))}
    assert kinds >= {
        "SimpleRNN",
        "LSTM",
        "GRU",
        "CuDNNLSTM",
        "CuDNNGRU",
        "Bidirectional",
        "Embedding",
        "Masking",
        "Dense",
        "TimeDistributed",
        "Activation",
        "Dropout",
        "InputLayer",
    }


def _layer_entries(spec):
    cfg = spec["config"]
    entries = cfg if isinstance(cfg, list) else cfg["layers"]
    for e in entries:
        yield e
        if isinstance(e["config"].get("layer"), dict):
            yield e["config"]["layer"]


@pytest.mark.parametrize("name", MODELS)
def test_keras2_files_give_tf_keras_outputs(name, xp):
    model = rnn_xp.to_device(_imported(name), xp)
    _check(model, name, xp)
    assert rnn_xp.count_params(model) == _stored_values(DATA / f"{name}.h5")  # every stored weight, once


def test_torch_tensors_too():
    torch = pytest.importorskip("torch")
    model = rnn_xp.to_device(_imported("bidirectional"), torch)
    for x, (y,) in _cases("bidirectional"):
        got = model(torch.from_numpy(x))
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), y, atol=ATOL, rtol=RTOL)


def test_summary_says_which_keras_and_semantics():
    text = rnn_xp.summary(_imported("keras_2_2_4"))
    assert "with Keras 2 semantics (keras_version 2.2.4, backend tensorflow" in text
    assert "hard_sigmoid = clip(0.2x + 0.5, 0, 1)" in text
    assert "keras_version 2.21.0, backend tensorflow" in rnn_xp.summary(_imported("grus"))
    assert "lstm_1 (LSTM)" in text and "Total params: 208" in text  # 4*4*(3+4+1) + 3*3*(4+3+1) + 8


def test_the_origin_line_survives_save_and_load(tmp_path):
    model = _imported("keras_2_1_6_cudnn")
    rnn_xp.save(model, tmp_path / "m.npz")
    again = rnn_xp.load(tmp_path / "m.npz", xp=np)
    assert again.origin == model.origin and rnn_xp.summary(again) == rnn_xp.summary(model)
    _check(again, "keras_2_1_6_cudnn", rnn_xp._xp.as_namespace(np))


# --- Keras 2's meanings --------------------------------------------------------------------------------------
def test_keras2_hard_sigmoid_is_keras2s():
    model = _imported("hard_sigmoid")
    lstm, gru, rnn, dense = model.layers[1:]
    keras2 = resolve("HardSigmoid", 0.2, 0.5)
    assert lstm.params.config.activations[0][0] == keras2 and gru.params.config.activations[0][0] == keras2
    assert rnn.params.config.activations[0] == (keras2,) and dense.activation == keras2
    assert keras2 != resolve("hard_sigmoid")  # Keras 3's clip(x/6 + 1/2, 0, 1)


def _edited(tmp_path, name, edit, version=None):
    """A copy of a fixture with its model_config edited (and its keras_version replaced)."""
    path = tmp_path / f"{name}-edited.h5"
    shutil.copy(DATA / f"{name}.h5", path)
    with h5py.File(path, "a") as f:
        spec = json.loads(f.attrs["model_config"])
        edit(spec)
        f.attrs["model_config"] = np.bytes_(json.dumps(spec))
        if version is not None:
            f.attrs["keras_version"] = np.bytes_(version)
    return path


def test_defaults_follow_the_keras_version(tmp_path):
    """A config without recurrent_activation: hard_sigmoid under Keras 2.2 (its default then), sigmoid from 2.3 on;
    a GRU without reset_after: False in standalone Keras 2, True in tf.keras and Keras 3."""

    def drop_defaults(spec):
        for e in spec["config"]["layers"]:
            e["config"].pop("recurrent_activation", None)
            e["config"].pop("reset_after", None)

    x, (y,) = _cases("keras_2_2_4")[0]
    same = rnn_xp.from_keras(_edited(tmp_path, "keras_2_2_4", drop_defaults))
    np.testing.assert_allclose(same(x), y, atol=ATOL, rtol=RTOL)
    assert same.layers[1].params.config.reset_after is False
    later = rnn_xp.from_keras(_edited(tmp_path, "keras_2_2_4", drop_defaults, version="2.3.1"))
    assert later.layers[0].params.config.activations[0][0] == resolve("sigmoid")
    assert np.abs(later(x) - y).max() > 1e-4  # the defaults matter to the numbers (tolerance: 1e-5)
    with pytest.raises(
        ValueError, match=r"layer 'gru_1' \(GRU\): bias \(9,\); expected \(2, 9\) with reset_after=True"
    ):
        rnn_xp.from_keras(_edited(tmp_path, "keras_2_2_4", drop_defaults, version="2.2.4-tf"))  # tf.keras's default


# --- weights-only files ---------------------------------------------------------------------------------------
def test_weights_file_with_its_architecture(xp):
    text = (DATA / "weights.json").read_text()
    for architecture in (text, DATA / "weights.json", str(DATA / "weights.json")):
        model = rnn_xp.from_keras(architecture, weights=DATA / "weights.h5")
        _check(rnn_xp.to_device(model, xp), "weights", xp)
    assert f"{DATA / 'weights.json'} with the weights of {DATA / 'weights.h5'}" in model.origin
    assert "Keras 2 semantics (keras_version 2.21.0" in model.origin


def test_by_name_matches_layers_by_name(tmp_path):
    """renamed.h5 holds the same layers' weights plus another layer's, its layer_names reversed: in order they
    cannot match; by name they do (as Keras's load_weights(by_name=True))."""
    text = (DATA / "weights.json").read_text()
    with pytest.raises(ValueError, match=r"holds weights for 4 layers .* 3 layers with weights .*by_name=True"):
        rnn_xp.from_keras(text, weights=DATA / "renamed.h5")
    model = rnn_xp.from_keras(text, weights=DATA / "renamed.h5", by_name=True)
    _check(model, "weights", rnn_xp._xp.as_namespace(np))
    with pytest.raises(ValueError, match=r"holds no weights for the layers \['tokens2'\] \(by_name=True"):
        rnn_xp.from_keras(text.replace('"tokens"', '"tokens2"'), weights=DATA / "renamed.h5", by_name=True)


def test_a_whole_model_file_gives_weights_too():
    """load_weights reads a model.save file's model_weights; so does weights=."""
    with h5py.File(DATA / "grus.h5", "r") as f:
        architecture = f.attrs["model_config"]
    model = rnn_xp.from_keras(architecture, weights=DATA / "grus.h5")
    _check(model, "grus", rnn_xp._xp.as_namespace(np))


def test_shapes_are_checked_with_the_layer_named(tmp_path):
    path = tmp_path / "w.h5"
    shutil.copy(DATA / "weights.h5", path)
    with h5py.File(path, "a") as f:
        del f["summary/summary/gru_cell/kernel:0"]
        f["summary/summary/gru_cell/kernel:0"] = np.zeros((3, 7), np.float32)
    with pytest.raises(ValueError, match=r"layer 'summary' \(GRU\): kernel \(3, 7\) and recurrent_kernel"):
        rnn_xp.from_keras((DATA / "weights.json").read_text(), weights=path)


# --- Keras 3 live models and files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_live_keras3_architecture_with_keras2_weights(keras):
    """The architecture built in Keras 3 code, the weights from tf-keras's save_weights: what Keras 3's
    load_weights computes."""
    L = keras.layers
    inp = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, name="tokens")(inp)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave", name="both_ways")(x)
    model = keras.Model(inp, L.GRU(2, name="summary")(x))
    model.load_weights(DATA / "weights.h5")
    imported = rnn_xp.from_keras(model, weights=DATA / "weights.h5")
    assert "Keras 3 semantics" in imported.origin
    for x, (y,) in _cases("weights"):
        np.testing.assert_allclose(np.asarray(keras.ops.convert_to_numpy(model(x))), y, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(imported(x), y, atol=ATOL, rtol=RTOL)


def test_the_same_weights_under_keras3_give_keras3s_hard_sigmoid(keras):
    """hard_sigmoid.h5's weights in the same architecture built by Keras 3: Keras 3's numbers (x/6 + 1/2), which
    are not Keras 2's; from_keras follows the Keras the architecture comes from."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((6, 3)),
            L.Masking(0.0),
            L.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True),
            L.GRU(4, recurrent_activation="hard_sigmoid", reset_after=False, go_backwards=True, return_sequences=True),
            L.SimpleRNN(3, activation="hard_sigmoid"),
            L.Dense(2, activation="hard_sigmoid"),
        ]
    )
    model.load_weights(DATA / "hard_sigmoid.h5")
    keras3 = rnn_xp.from_keras(model, weights=DATA / "hard_sigmoid.h5")
    keras2 = _imported("hard_sigmoid")
    for x, (y,) in _cases("hard_sigmoid"):
        theirs = np.asarray(keras.ops.convert_to_numpy(model(x)))
        np.testing.assert_allclose(keras3(x), theirs, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(keras2(x), y, atol=ATOL, rtol=RTOL)
        assert np.abs(theirs - y).max() > 1e-2  # the two meanings differ here: the test can tell them apart


def _keras3_models(keras, rng):
    L = keras.layers
    seq = keras.Sequential(
        [
            keras.Input((6, 3)),
            L.Masking(0.0),
            L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
            L.GRU(3, recurrent_activation="hard_sigmoid", return_sequences=True, reset_after=False),
            L.TimeDistributed(L.Dense(2, activation="softmax")),
        ]
    )
    inp = keras.Input((6, 3))
    x = L.Masking(0.0)(inp)
    x = L.Dropout(0.2)(x)
    x = L.LSTM(4, return_sequences=True, go_backwards=True)(x)
    x = L.Bidirectional(L.SimpleRNN(3))(x)
    fun = keras.Model(inp, L.Dense(2, activation="hard_sigmoid")(x))
    for model in (seq, fun):
        for layer in model.layers:
            ws = layer.get_weights()
            if ws:
                layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in ws])
    return {"sequential": seq, "functional": fun}


def _masked(rng):
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    x[0, :2] = 0.0
    x[1] = 0.0
    x[2, 3] = 0.0
    return x


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_keras3_h5_files(kind, keras, tmp_path, xp):
    rng = np.random.default_rng(3)
    model = _keras3_models(keras, rng)[kind]
    path = tmp_path / "model.h5"
    model.save(path)  # Keras 3 still writes the legacy format (with a warning)
    x = _masked(rng)
    expected = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    imported = rnn_xp.from_keras(path)
    assert f"Keras 3 semantics (keras_version {keras.__version__}, backend torch" in rnn_xp.summary(imported)
    assert rnn_xp.count_params(imported) == model.count_params()
    got = rnn_xp.to_device(imported, xp)(on(xp, x))
    assert_close(got, expected, xp=xp, dtype="float32", shape=expected.shape, atol=ATOL, rtol=RTOL)
    # the same model as .keras, and its architecture with Keras 3's own weights file
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(rnn_xp.from_keras(tmp_path / "model.keras")(x), expected, atol=ATOL, rtol=RTOL)
    model.save_weights(tmp_path / "w.weights.h5")
    again = rnn_xp.from_keras(model.to_json(), weights=tmp_path / "w.weights.h5")
    np.testing.assert_allclose(again(x), expected, atol=ATOL, rtol=RTOL)


def test_reads_where_keras_and_tensorflow_cannot_be_imported(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['keras'] = sys.modules['tensorflow'] = sys.modules['tf_keras'] = None\n"
        "import numpy as np, rnn_xp\n"
        f"m = rnn_xp.from_keras({str(DATA / 'keras_2_1_6_cudnn.h5')!r})\n"
        f"w = rnn_xp.from_keras({str(DATA / 'weights.json')!r}, weights={str(DATA / 'weights.h5')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "assert 'torch' not in sys.modules, 'reading an .h5 file pulled torch in'\n"
    )
    x, (y,) = _cases("keras_2_1_6_cudnn")[0]
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnn_xp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), y, atol=ATOL, rtol=RTOL)


# --- refusals: what was given, what is expected, the fix ------------------------------------------------------
def _first_rnn(spec):
    return next(e for e in _layer_entries(spec) if e["class_name"] in ("LSTM", "GRU", "SimpleRNN"))


@pytest.mark.parametrize(
    "option,match",
    [
        ("stateful", "stateful=True is not supported"),
        ("return_state", "return_state=True is not supported"),
        ("time_major", "time_major=True is not supported; .* Fix: rebuild the layer with time_major=False"),
    ],
)
def test_unsupported_options_are_named(option, match, tmp_path):
    path = _edited(tmp_path, "grus", lambda spec: _first_rnn(spec)["config"].update({option: True}))
    with pytest.raises(ValueError, match=rf"grus-edited.h5: layer 'gru(_\d+)?' \(GRU\): {match}"):
        rnn_xp.from_keras(path)


def test_unsupported_layers_and_wrappers_are_named(tmp_path):
    def conv(spec):
        spec["config"]["layers"][1] = {"class_name": "Conv1D", "config": {"name": "conv1d", "filters": 2}}

    with pytest.raises(ValueError, match=r"layer 'conv1d' \(Conv1D\) is not supported; rnn_xp imports .*LSTM"):
        rnn_xp.from_keras(_edited(tmp_path, "grus", conv))

    def wrap_lstm(spec):
        td = next(e for e in spec["config"]["layers"] if e["class_name"] == "TimeDistributed")
        td["config"]["layer"] = {"class_name": "LSTM", "config": {"units": 2}}

    with pytest.raises(ValueError, match=r"wraps a LSTM; rnn_xp imports TimeDistributed\(Dense\)"):
        rnn_xp.from_keras(_edited(tmp_path, "time_distributed", wrap_lstm))


def test_keras1_files_are_refused(tmp_path):
    path = _edited(tmp_path, "keras_2_2_4", lambda spec: None, version="1.2.2")
    with pytest.raises(ValueError, match="written by Keras 1.2.2; rnn_xp reads files of Keras 2 and 3.*Fix: load it"):
        rnn_xp.from_keras(path)


def test_misuse_is_explained():
    with pytest.raises(ValueError, match=r"holds weights only .*Fix: rnn_xp.from_keras\(architecture, weights="):
        rnn_xp.from_keras(DATA / "weights.h5")
    with pytest.raises(ValueError, match=r"architecture \(JSON\) without weights"):
        rnn_xp.from_keras((DATA / "weights.json").read_text())
    with pytest.raises(ValueError, match="by_name=True matches a weights file's layers by name"):
        rnn_xp.from_keras(DATA / "grus.h5", by_name=True)
    with pytest.raises(ValueError, match="is a model file, not an architecture"):
        rnn_xp.from_keras(DATA / "grus.h5", weights=DATA / "grus.h5")
    with pytest.raises(TypeError, match="by_name must be True or False"):
        rnn_xp.from_keras(DATA / "grus.h5", by_name="yes")
    with pytest.raises(TypeError, match="takes the architecture as model.to_json"):
        rnn_xp.from_keras(42, weights=DATA / "weights.h5")
    with pytest.raises(ValueError, match="is not a Keras weights file"):
        rnn_xp.from_keras((DATA / "weights.json").read_text(), weights=_empty_h5())


@functools.cache
def _empty_h5():
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rnn_xp-test-")) / "empty.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
    return path
