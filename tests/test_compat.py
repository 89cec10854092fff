"""Files written by save() in rnn_xp 0.1.0 still load and compute the same numbers.

tests/data/v0.1.0/ holds one small file per kind of object (params of two cells, the text-classifier
model, a masked bidirectional model, an imported ONNX graph), written by rnn_xp 0.1.0 together with
the outputs 0.1.0 computed on fixed inputs (expected.npz).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest

import rnn_xp

DATA = Path(__file__).parent / "data" / "v0.1.0"


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "expected.npz", allow_pickle=False) as f:
        return dict(f)


@pytest.mark.parametrize("name", ["params_lstm", "params_gru"])
def test_params_files_load_and_compute_the_same(expected, name):
    p = rnn_xp.load(DATA / f"{name}.npz", xp=np)
    assert isinstance(p, rnn_xp.RNNParams)
    y, _ = rnn_xp.forward(expected["x"], p)
    np.testing.assert_allclose(y, expected[f"{name}_y"], rtol=1e-5, atol=1e-6)


def test_text_classifier_file(expected):
    m = rnn_xp.load(DATA / "model_text.npz", xp=np)
    assert isinstance(m, rnn_xp.Sequential)
    np.testing.assert_allclose(m(expected["ids"]), expected["model_text_y"], rtol=1e-5, atol=1e-6)


def test_bidirectional_model_file(expected):
    m = rnn_xp.load(DATA / "model_bidirectional.npz", xp=np)
    assert isinstance(m.layers[1], rnn_xp.Bidirectional)
    np.testing.assert_allclose(m(expected["x4"]), expected["model_bidirectional_y"], rtol=1e-5, atol=1e-6)


def test_onnx_graph_file(expected):
    g = rnn_xp.load(DATA / "graph_lstm.npz", xp=np)
    assert isinstance(g, rnn_xp.OnnxGraph)
    np.testing.assert_allclose(g(X=expected["x2"])["Y"], expected["graph_lstm_Y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "module, name, home",
    [
        ("rnn_xp.model", "Sequential", rnn_xp.Sequential),
        ("rnn_xp.model", "softmax", rnn_xp.softmax),
        ("rnn_xp.device", "select_backend", rnn_xp.select_backend),
        ("rnn_xp.graph", "OnnxGraph", rnn_xp.OnnxGraph),
    ],
)
def test_moved_names_keep_a_deprecated_alias(module, name, home):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match="moved to"):
        assert getattr(mod, name) is home
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            mod.no_such_name  # noqa: B018
