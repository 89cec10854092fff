"""Legacy Keras HDF5 files for tests/test_import_keras_h5.py, with the outputs Keras computed on them.

Pinned versions (a virtualenv of its own; the tests need none of this, they read what it wrote):

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 h5py==3.14.0 numpy==2.4.6
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tests/data/make_keras2_h5.py      # from the repository root

It writes tests/data/keras2/:

* ``<name>.h5``: whole models saved by tf-keras 2.21 with ``model.save(path)`` (HDF5: ``model_config`` in the
  file's attributes, weights under ``model_weights/<layer>/<layer>/...``), each layer kind and option of the
  legacy importer, including CuDNNLSTM/CuDNNGRU (``tf.compat.v1.keras.layers``, which tf-keras still writes);
* ``weights.h5`` + ``weights.json``: ``model.save_weights(path)`` and ``model.to_json()`` of one model, and
  ``renamed.h5``: the same layers' weights saved from that model with one more layer on top, its layer_names
  listed in reverse (matched by name, ``by_name=True``, it gives the same model);
* hand-built files (this script writes their HDF5 layout and ``model_config`` with h5py, as those Keras
  versions wrote them: fixed-length byte-string attributes, ``<layer>_1`` names, weight names
  ``<layer>/kernel:0``, Keras 2.0's Sequential config as a bare list of layers, configs with
  ``batch_input_shape``, ``implementation``, ``unroll``, Keras 2.0's GRU without ``reset_after``, Keras 2.1's
  functional ``Model`` with four-element inbound nodes and Bidirectional without ``backward_layer``):
  ``keras_2_0_8.h5``, ``keras_2_2_4.h5`` and ``keras_2_1_6_cudnn.h5``. Everything else about them (the
  weights, the equations) comes from tf-keras: tf-keras 2.21 loads each hand-built file (a check of the
  format), and its outputs are the expected ones;
* ``expected.npz``: for each file, its inputs ``<name>/x<i>`` and Keras's outputs ``<name>/y<i>`` (``y<i>_<k>``
  for the k-th of several outputs).

CuDNN layers only run on a GPU: their expected outputs come from the plain twin model (LSTM; GRU with
reset_after=True; sigmoid and tanh) into which Keras's own ``load_weights`` converts the CuDNN weights. An
independent float64 NumPy reference of the equations (Keras 2's hard_sigmoid = clip(0.2x + 0.5, 0, 1), GRU
with and without reset_after, cuDNN's kernel layout) must agree with every hand-built and CuDNN output
within 1e-5, or the script stops.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

PINNED = {"tensorflow": "2.21.0", "tf_keras": "2.21.0", "h5py": "3.14.0", "numpy": "2.4.6"}
OUT = Path(__file__).resolve().parent / "keras2"
L = keras.layers
L1 = tf.compat.v1.keras.layers  # CuDNNLSTM, CuDNNGRU
B, T, F = 4, 6, 3


def _randomize(model, seed):
    """Seeded, non-symmetric weights and biases (Keras initialises biases to zero)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in ws])
    return model


def _masked(rng, shape=(B, T, F)):
    """Float inputs with whole steps of zeros (masked by Masking): leading, inner, trailing, a whole row."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, :2] = 0.0
    x[1] = 0.0
    x[2, 3] = 0.0
    x[3, -1] = 0.0
    return x


def _ids(rng, vocab, shape=(B, T)):
    ids = rng.integers(1, vocab, shape).astype(np.int32)
    ids[0, :2] = 0
    ids[1] = 0
    ids[2, 3] = 0
    ids[3, -1] = 0
    return ids


def _seq(*layers, shape=(T, F), dtype="float32"):
    return keras.Sequential([keras.Input(shape, dtype=dtype), *layers])


# --- models written by tf-keras 2.21 ---------------------------------------------------------------------
def text_classifier(rng):
    m = _seq(
        L.Embedding(30, 5, mask_zero=True), L.SimpleRNN(4), L.Dense(1, activation="sigmoid"), shape=(T,), dtype="int32"
    )
    return m, [_ids(rng, 30), rng.integers(1, 30, (B, T)).astype(np.int32)]


def hard_sigmoid(rng):
    """Keras 2's hard_sigmoid (the default recurrent activation of Keras <= 2.2) in LSTM and GRU."""
    m = _seq(
        L.Masking(0.0),
        L.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(4, recurrent_activation="hard_sigmoid", reset_after=False, go_backwards=True, return_sequences=True),
        L.SimpleRNN(3, activation="hard_sigmoid"),
        L.Dense(2, activation="hard_sigmoid"),
    )
    return m, [_masked(rng), 2.0 * rng.standard_normal((B, T, F)).astype(np.float32)]


def grus(rng):
    m = _seq(
        L.Masking(0.0),
        L.GRU(5, return_sequences=True),
        L.GRU(4, reset_after=False, use_bias=False, go_backwards=True, return_sequences=True),
        L.GRU(3, reset_after=False, go_backwards=True, activation="relu"),
        L.Dense(2),
    )
    return m, [_masked(rng), rng.standard_normal((B, T, F)).astype(np.float32)]


def bidirectional(rng):
    m = _seq(
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(4, return_sequences=True)),  # concat
        L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.SimpleRNN(3, use_bias=False, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.GRU(2, reset_after=False), merge_mode="ave"),
        L.Dense(2, activation="tanh"),
    )
    return m, [_masked(rng), rng.standard_normal((B, T, F)).astype(np.float32)]


def pair(rng):
    """merge_mode=None (two outputs) around a backward layer of another kind and size."""
    inp = keras.Input((T, F))
    x = L.Masking(0.0)(inp)
    x = L.Dropout(0.5)(x)
    out = L.Bidirectional(
        L.LSTM(3, return_sequences=True),
        backward_layer=L.GRU(2, return_sequences=True, go_backwards=True),
        merge_mode=None,
    )(x)
    return keras.Model(inp, out), [_masked(rng)]


def functional(rng):
    inp = keras.Input((T, F))
    x = L.Masking(0.0)(inp)
    x = L.Dense(4, activation="relu")(x)  # passes the mask on
    x = L.SpatialDropout1D(0.3)(x)
    x = L.GaussianNoise(0.5)(x)
    x = L.GaussianDropout(0.2)(x)
    x = L.AlphaDropout(0.2)(x)
    x = L.ActivityRegularization(l1=0.1)(x)
    x = L.LSTM(5, return_sequences=True, go_backwards=True)(x)
    x = L.Bidirectional(L.GRU(3))(x)
    x = L.Dense(3, use_bias=False)(x)
    x = L.Activation("softmax")(x)
    return keras.Model(inp, x), [_masked(rng), rng.standard_normal((B, T, F)).astype(np.float32)]


def time_distributed(rng):
    m = _seq(
        L.Masking(0.0),
        L.GRU(4, return_sequences=True),
        L.TimeDistributed(L.Dense(3, activation="softmax")),
        L.LSTM(2, return_sequences=True, zero_output_for_mask=True),
        L.TimeDistributed(L.Dense(2, use_bias=False)),
    )
    return m, [_masked(rng), rng.standard_normal((B, T, F)).astype(np.float32)]


def cudnn(rng):
    m = _seq(
        L1.CuDNNLSTM(4, return_sequences=True),
        L.Bidirectional(L1.CuDNNGRU(3, return_sequences=True), merge_mode="concat"),
        L1.CuDNNGRU(3, go_backwards=True, return_sequences=True),
        L1.CuDNNLSTM(2, go_backwards=True),
        L.Dense(2),
    )
    return m, [rng.standard_normal((B, T, F)).astype(np.float32)]


def _twin(model):
    """The model with each CuDNN layer replaced by the plain layer Keras converts its weights into."""

    def plain(layer):
        cfg = layer.get_config()
        keep = {k: cfg.get(k) for k in ("units", "return_sequences", "go_backwards", "name")}
        if type(layer).__name__ == "CuDNNLSTM":
            return L.LSTM(**keep)
        if type(layer).__name__ == "CuDNNGRU":
            return L.GRU(reset_after=True, **keep)
        if isinstance(layer, L.Bidirectional):
            return L.Bidirectional(plain(layer.forward_layer), merge_mode=layer.merge_mode, name=layer.name)
        return type(layer).from_config(layer.get_config())

    return keras.Sequential([keras.Input(model.input_shape[1:]), *[plain(layer) for layer in model.layers]])


# --- hand-built files of older Keras versions --------------------------------------------------------------
def _init(name):
    return {"class_name": name, "config": {"seed": None} if name != "Zeros" else {}}


def _rnn_config(kind, name, units, **options):
    """A recurrent layer's config as Keras 2.0-2.2 wrote it (every key, in Keras's order)."""
    cfg = {
        "name": name,
        "trainable": True,
        "return_sequences": False,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "units": units,
    }
    if kind == "CuDNN":  # the CuDNN layers' config has no unroll
        del cfg["unroll"]
    if kind != "CuDNN":
        cfg.update(activation="tanh", recurrent_activation="hard_sigmoid", use_bias=True)
    cfg.update(
        kernel_initializer=_init("VarianceScaling"),
        recurrent_initializer=_init("Orthogonal"),
        bias_initializer=_init("Zeros"),
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
    )
    if kind != "CuDNN":
        cfg.update(dropout=0.0, recurrent_dropout=0.0, implementation=1)
    cfg.update(options)
    return cfg


def _dense_config(name, units, activation):
    return {
        "name": name,
        "trainable": True,
        "units": units,
        "activation": activation,
        "use_bias": True,
        "kernel_initializer": _init("VarianceScaling"),
        "bias_initializer": _init("Zeros"),
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }


def _write_legacy(path, version, model_config, layers):
    """A whole-model HDF5 file as keras.engine.saving (Keras 2.0-2.2) wrote it with h5py 2.x: every string
    a fixed-length byte string. ``layers``: (name, [(weight name, array)]) in the model's order."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = np.bytes_(version)
        f.attrs["backend"] = np.bytes_("tensorflow")
        f.attrs["model_config"] = np.bytes_(json.dumps(model_config))
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        g.attrs["backend"] = np.bytes_("tensorflow")
        g.attrs["keras_version"] = np.bytes_(version)
        for name, weights in layers:
            lg = g.create_group(name)
            lg.attrs["weight_names"] = np.array([w.encode() for w, _ in weights]) if weights else np.array([])
            for w, a in weights:
                lg.create_dataset(w, data=a)


def keras_2_2_4(rng):
    """Keras 2.2.4: Sequential {name, layers}, the first layer carries batch_input_shape, hard_sigmoid gates,
    GRU reset_after=False, implementation 1 and 2."""
    model = _seq(
        L.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True, implementation=1),
        L.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False, implementation=2),
        L.Dense(2, activation="softmax"),
    )
    _randomize(model, 224)
    lstm, gru, dense = (layer.get_weights() for layer in model.layers)
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential_1",
            "layers": [
                {
                    "class_name": "LSTM",
                    "config": _rnn_config(
                        "LSTM",
                        "lstm_1",
                        4,
                        batch_input_shape=[None, T, F],
                        dtype="float32",
                        return_sequences=True,
                        unit_forget_bias=True,
                    ),
                },
                {"class_name": "GRU", "config": _rnn_config("GRU", "gru_1", 3, implementation=2, reset_after=False)},
                {"class_name": "Dense", "config": _dense_config("dense_1", 2, "softmax")},
            ],
        },
    }
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    layers = [
        ("lstm_1", [(f"lstm_1/{n}", a) for n, a in zip(names, lstm, strict=True)]),
        ("gru_1", [(f"gru_1/{n}", a) for n, a in zip(names, gru, strict=True)]),
        ("dense_1", [(f"dense_1/{n}", a) for n, a in zip(("kernel:0", "bias:0"), dense, strict=True)]),
    ]
    x = [2.0 * rng.standard_normal((B, T, F)).astype(np.float32)]
    reference = [
        _np_dense(
            _np_gru(_np_lstm(x[0], *lstm, _k2_hard_sigmoid, True), *gru, _k2_hard_sigmoid, False), *dense, "softmax"
        )
    ]
    return config, "2.2.4", layers, model, x, reference


def keras_2_0_8(rng):
    """Keras 2.0.8: the Sequential config is a bare list of layer configs; GRU has no reset_after (False then);
    Embedding(mask_zero) with input_length and batch_input_shape; implementation 0."""
    model = _seq(
        L.Embedding(20, 4, mask_zero=True),
        L.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False, return_sequences=True),
        L.SimpleRNN(2),
        shape=(T,),
        dtype="int32",
    )
    _randomize(model, 208)
    emb, gru, rnn = (layer.get_weights() for layer in model.layers)
    gru_cfg = _rnn_config("GRU", "gru_1", 3, return_sequences=True, implementation=0)
    rnn_cfg = _rnn_config("SimpleRNN", "simple_rnn_1", 2, implementation=0)
    del rnn_cfg["recurrent_activation"]
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Embedding",
                "config": {
                    "name": "embedding_1",
                    "trainable": True,
                    "batch_input_shape": [None, T],
                    "dtype": "float32",
                    "input_dim": 20,
                    "output_dim": 4,
                    "embeddings_initializer": {
                        "class_name": "RandomUniform",
                        "config": {"minval": -0.05, "maxval": 0.05, "seed": None},
                    },
                    "embeddings_regularizer": None,
                    "activity_regularizer": None,
                    "embeddings_constraint": None,
                    "mask_zero": True,
                    "input_length": T,
                },
            },
            {"class_name": "GRU", "config": gru_cfg},
            {"class_name": "SimpleRNN", "config": rnn_cfg},
        ],
    }
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    layers = [
        ("embedding_1", [("embedding_1/embeddings:0", emb[0])]),
        ("gru_1", [(f"gru_1/{n}", a) for n, a in zip(names, gru, strict=True)]),
        ("simple_rnn_1", [(f"simple_rnn_1/{n}", a) for n, a in zip(names, rnn, strict=True)]),
    ]
    ids = _ids(rng, 20)
    mask = ids != 0
    h = _np_gru(emb[0][ids].astype(np.float64), *gru, _k2_hard_sigmoid, True, mask=mask)
    return config, "2.0.8", layers, model, [ids], [_np_rnn(h, *rnn, mask=mask)]


def keras_2_1_6_cudnn(rng):
    """Keras 2.1.6: a functional ``Model`` (inbound nodes [name, node, tensor, kwargs]) of CuDNNLSTM and
    Bidirectional(CuDNNGRU) without a backward_layer key; the CuDNN layers' double biases."""
    model = _seq(L1.CuDNNLSTM(4, return_sequences=True), L.Bidirectional(L1.CuDNNGRU(3), merge_mode="ave"), L.Dense(2))
    _randomize(model, 216)
    lstm, bi, dense = (layer.get_weights() for layer in model.layers)

    def node(source):
        return [[[source, 0, 0, {}]]]

    layer_entries = [
        {
            "name": "input_1",
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, T, F], "dtype": "float32", "sparse": False, "name": "input_1"},
            "inbound_nodes": [],
        },
        {
            "name": "cu_dnnlstm_1",
            "class_name": "CuDNNLSTM",
            "config": _rnn_config("CuDNN", "cu_dnnlstm_1", 4, return_sequences=True, unit_forget_bias=True),
            "inbound_nodes": node("input_1"),
        },
        {
            "name": "bidirectional_1",
            "class_name": "Bidirectional",
            "config": {
                "name": "bidirectional_1",
                "trainable": True,
                "layer": {"class_name": "CuDNNGRU", "config": _rnn_config("CuDNN", "cu_dnngru_1", 3)},
                "merge_mode": "ave",
            },
            "inbound_nodes": node("cu_dnnlstm_1"),
        },
        {
            "name": "dense_1",
            "class_name": "Dense",
            "config": _dense_config("dense_1", 2, "linear"),
            "inbound_nodes": node("bidirectional_1"),
        },
    ]
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": layer_entries,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["dense_1", 0, 0]],
        },
    }
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    layers = [
        ("input_1", []),
        ("cu_dnnlstm_1", [(f"cu_dnnlstm_1/{n}", a) for n, a in zip(names, lstm, strict=True)]),
        (
            "bidirectional_1",
            [(f"bidirectional_1/forward_cu_dnngru_1/{n}", a) for n, a in zip(names, bi[:3], strict=True)]
            + [(f"bidirectional_1/backward_cu_dnngru_1/{n}", a) for n, a in zip(names, bi[3:], strict=True)],
        ),
        ("dense_1", [(f"dense_1/{n}", a) for n, a in zip(("kernel:0", "bias:0"), dense, strict=True)]),
    ]
    x = [rng.standard_normal((B, T, F)).astype(np.float32)]
    h = _np_lstm(x[0], *_cudnn(*lstm, 4), _sigmoid, True)
    fwd = _np_gru(h, *_cudnn(*bi[:3], 3), _sigmoid, False)
    bwd = _np_gru(h, *_cudnn(*bi[3:], 3), _sigmoid, False, go_backwards=True)
    return config, "2.1.6", layers, model, x, [_np_dense((fwd + bwd) / 2, *dense, "linear")]


# --- the independent float64 reference (Keras layout: kernel (F, G*U), gates LSTM i, f, c, o; GRU z, r, h) ------
def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _k2_hard_sigmoid(v):
    return np.clip(0.2 * v + 0.5, 0.0, 1.0)


def _cudnn(kernel, recurrent, bias, units):
    """CuDNN weights as the plain layer's: cuDNN reads each gate's (F, U) block of the kernel, flattened in C
    order, as its (U, F) matrix, and each (U, U) block of the recurrent kernel as the transposed one; the
    bias is the input biases, then the recurrent ones (GRU: reset after, as cuDNN computes)."""
    G = kernel.shape[1] // units
    k = np.concatenate([b.reshape(units, -1).T for b in np.split(kernel, G, axis=1)], axis=1)
    r = np.concatenate([b.T for b in np.split(recurrent, G, axis=1)], axis=1)
    return k, r, bias.reshape(2, -1)


def _steps(x, mask, go_backwards):
    order = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    return order, (np.ones(x.shape[:2], bool) if mask is None else mask)


def _np_lstm(x, kernel, recurrent, bias, rec_act, return_sequences, mask=None, go_backwards=False):
    U = recurrent.shape[0]
    h = c = out = np.zeros((x.shape[0], U))
    b = bias.sum(axis=0) if bias.ndim == 2 else bias  # CuDNN: both biases add
    seq = []
    order, mask = _steps(x, mask, go_backwards)
    for t in order:
        z = x[:, t].astype(np.float64) @ kernel + h @ recurrent + b
        i, f, g, o = (z[:, k * U : (k + 1) * U] for k in range(4))
        c_new = rec_act(f) * c + rec_act(i) * np.tanh(g)
        h_new = rec_act(o) * np.tanh(c_new)
        m = mask[:, t : t + 1]
        h, c, out = np.where(m, h_new, h), np.where(m, c_new, c), np.where(m, h_new, out)
        seq.append(out)
    return np.stack(seq, axis=1) if return_sequences else out


def _np_gru(x, kernel, recurrent, bias, rec_act, return_sequences, mask=None, go_backwards=False):
    U = recurrent.shape[0]
    h = out = np.zeros((x.shape[0], U))
    seq = []
    order, mask = _steps(x, mask, go_backwards)
    for t in order:
        if bias.ndim == 2:  # reset_after: the recurrent bias inside the reset
            xz = x[:, t].astype(np.float64) @ kernel + bias[0]
            hz = h @ recurrent + bias[1]
            z, r = rec_act(xz[:, :U] + hz[:, :U]), rec_act(xz[:, U : 2 * U] + hz[:, U : 2 * U])
            n = np.tanh(xz[:, 2 * U :] + r * hz[:, 2 * U :])
        else:  # reset_after=False: the reset gate scales h before the recurrent product
            xz = x[:, t].astype(np.float64) @ kernel + bias
            z = rec_act(xz[:, :U] + h @ recurrent[:, :U])
            r = rec_act(xz[:, U : 2 * U] + h @ recurrent[:, U : 2 * U])
            n = np.tanh(xz[:, 2 * U :] + (r * h) @ recurrent[:, 2 * U :])
        h_new = z * h + (1 - z) * n
        m = mask[:, t : t + 1]
        h, out = np.where(m, h_new, h), np.where(m, h_new, out)
        seq.append(out)
    return np.stack(seq, axis=1) if return_sequences else out


def _np_rnn(x, kernel, recurrent, bias, mask=None):
    h = np.zeros((x.shape[0], recurrent.shape[0]))
    order, mask = _steps(x, mask, False)
    for t in order:
        h = np.where(mask[:, t : t + 1], np.tanh(x[:, t] @ kernel + h @ recurrent + bias), h)
    return h


def _np_dense(x, kernel, bias, activation):
    y = x @ kernel + bias
    if activation == "softmax":
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return y


# --- writing ---------------------------------------------------------------------------------------------------
def _outputs(model, x):
    y = model(x, training=False)
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def _store(expected, name, inputs, outputs_of):
    for i, x in enumerate(inputs):
        expected[f"{name}/x{i}"] = x
        ys = outputs_of(x)
        if len(ys) == 1:
            expected[f"{name}/y{i}"] = ys[0]
        else:
            for k, y in enumerate(ys):
                expected[f"{name}/y{i}_{k}"] = y


def main():
    versions = {"tensorflow": tf.__version__, "tf_keras": keras.__version__, "h5py": h5py.__version__}
    versions["numpy"] = np.__version__
    if versions != PINNED:
        sys.exit(f"this script is pinned to {PINNED}; found {versions}")
    OUT.mkdir(exist_ok=True)
    expected = {}
    builders = (text_classifier, hard_sigmoid, grus, bidirectional, pair, functional, time_distributed, cudnn)
    for k, build in enumerate(builders):
        name = build.__name__
        rng = np.random.default_rng(100 + k)
        model, inputs = build(rng)
        _randomize(model, k)
        model.save(OUT / f"{name}.h5")
        if name == "cudnn":  # runs on a GPU only: the plain twin, with the file's weights converted by Keras
            runner = _twin(model)
            runner.load_weights(OUT / f"{name}.h5")
            for x in inputs:
                ref = _np_cudnn_model(model, x)
                np.testing.assert_allclose(_outputs(runner, x)[0], ref, atol=1e-5)
        else:  # the file as Keras reads it back
            runner = keras.models.load_model(OUT / f"{name}.h5", compile=False)
        _store(expected, name, inputs, lambda x, runner=runner: _outputs(runner, x))

    # weights-only files: save_weights next to to_json; a file of the same layers' weights with one more layer
    inp = keras.Input((T,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, name="tokens")(inp)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave", name="both_ways")(x)
    out = L.GRU(2, name="summary")(x)
    model = _randomize(keras.Model(inp, out), 50)
    model.save_weights(OUT / "weights.h5")
    (OUT / "weights.json").write_text(model.to_json())
    extra = keras.Model(inp, L.Dense(2, name="extra")(out))  # the same layers (their weights too) and one more
    head = extra.get_layer("extra")
    head.set_weights(
        [np.random.default_rng(51).uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in head.get_weights()]
    )
    _write_reordered(OUT / "renamed.h5", extra)
    _store(expected, "weights", [_ids(np.random.default_rng(60), 20)], lambda v: _outputs(model, v))

    # hand-built files of older versions: tf-keras 2.21 must read each (a check of the format)
    for build in (keras_2_2_4, keras_2_0_8, keras_2_1_6_cudnn):
        name = build.__name__
        config, version, layers, model, inputs, reference = build(np.random.default_rng(len(name)))
        _write_legacy(OUT / f"{name}.h5", version, config, layers)
        if name == "keras_2_0_8":  # tf-keras takes a GRU without reset_after for its own default, True: told here
            config["config"][1]["config"]["reset_after"] = False
            loaded = keras.models.model_from_json(json.dumps(config))
            loaded.load_weights(OUT / f"{name}.h5")
        else:
            loaded = keras.models.load_model(OUT / f"{name}.h5", compile=False)
        assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
        if "cudnn" in name:
            runner = _twin(model)
            runner.load_weights(OUT / f"{name}.h5")
        else:
            for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)
            runner = loaded
        for x, ref in zip(inputs, reference, strict=True):
            np.testing.assert_allclose(_outputs(runner, x)[0], ref, atol=1e-5)
        _store(expected, name, inputs, lambda v, runner=runner: _outputs(runner, v))

    np.savez_compressed(OUT / "expected.npz", **expected)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}")


def _write_reordered(path, model):
    """model.save_weights, with the layer groups listed in reverse order (by_name ignores the order)."""
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        f.attrs["layer_names"] = f.attrs["layer_names"][::-1]


def _np_cudnn_model(model, x):
    """The reference for the ``cudnn`` model: each CuDNN layer by the equations, from the layer's own weights."""
    h = x.astype(np.float64)
    for layer in model.layers:
        w = layer.get_weights()
        kind = type(layer).__name__
        if kind == "Dense":
            h = _np_dense(h, *w, "linear")
        elif kind == "Bidirectional":
            f = _np_gru(h, *_cudnn(*w[:3], layer.forward_layer.units), _sigmoid, True)
            b = _np_gru(h, *_cudnn(*w[3:], layer.forward_layer.units), _sigmoid, True, go_backwards=True)
            h = np.concatenate([f, b[:, ::-1]], axis=-1)
        else:
            run = _np_lstm if kind == "CuDNNLSTM" else _np_gru
            h = run(h, *_cudnn(*w, layer.units), _sigmoid, layer.return_sequences, go_backwards=layer.go_backwards)
    return h


if __name__ == "__main__":
    main()
