"""What a new user meets first: reprs, namespaces by name, install hints, and fixes that work as given."""

from __future__ import annotations

import builtins
import importlib.util
import warnings

import numpy as np
import pytest

import rnn_xp
from rnn_xp import _xp


# --- reprs: structure and shapes, never the weights' values ------------------------------------------------
def test_model_repr_shows_structure_not_values():
    model = rnn_xp.text_classifier(xp=np)
    text = repr(model)
    assert text == str(model)
    lines = text.splitlines()
    assert len(lines) == 5, text  # the model, its three layers, the closing bracket
    assert lines[0] == "Sequential(name='sequential', input_shape=(250,), layers=["
    assert "Embedding(input_dim=5000, output_dim=32" in lines[1] and "float32 on numpy cpu" in lines[1]
    assert "Recurrent(SimpleRNN, input_size=32, units=100, bias='single'" in lines[2]
    assert "Dense(in_features=100, units=1, activation='Sigmoid', use_bias=True" in lines[3]
    assert "array(" not in text and "0." not in text, text  # no values


def test_layer_and_params_reprs_are_short():
    table = np.full((3, 2), 0.123456, dtype=np.float32)
    p = rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, proj_size=2, seed=0, xp=np)
    objects = [
        rnn_xp.Embedding(table),
        rnn_xp.Dense(np.full((2, 5), 0.123456), None, "relu"),
        rnn_xp.Recurrent(p, return_sequences=True),
        rnn_xp.Bidirectional(
            rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, xp=np)),
            rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, xp=np), go_backwards=True),
        ),
        p,
        p.layers[1][1],
    ]
    for obj in objects:
        text = repr(obj)
        assert "0.123" not in text and "array(" not in text and len(text) < 600, text
    assert repr(p.layers[1][1]) == (
        "CellWeights(w_ih=(16, 4), w_hh=(16, 2), b_ih=(16,), b_hh=(16,), w_hr=(2, 4), "
        "dtype='float32', namespace='numpy', device=cpu)"
    )
    assert "num_layers=2, direction='bidirectional', proj_size=2, return_sequences=True" in repr(objects[2])
    assert "go_backwards=True" in repr(objects[3]) and repr(objects[3]).count("\n") == 2
    assert "activation='Relu', use_bias=False" in repr(objects[1])


# --- namespaces by module or by name, with the install for a missing one -----------------------------------
NAMES = [
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("array_api_strict", "array_api_strict"),
    ("jax", "jax"),
    ("jax.numpy", "jax"),
    ("dask.array", "dask.array"),
]


@pytest.mark.parametrize("name, expected", NAMES)
def test_to_device_takes_a_namespace_by_name_or_module(name, expected):
    module = name if name != "jax" else "jax.numpy"
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")
    p = rnn_xp.init("gru", 3, 4, seed=0, xp=np)
    by_name = rnn_xp.to_device(p, name)
    by_module = rnn_xp.to_device(p, importlib.import_module(module))
    for q in (by_name, by_module):
        assert _xp.namespace_name(q.xp) == expected
        np.testing.assert_array_equal(_xp.to_host(q.layers[0][0].w_hh), p.layers[0][0].w_hh)


def test_a_missing_namespace_names_its_install(monkeypatch):
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ModuleNotFoundError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.delitem(__import__("sys").modules, "cupy", raising=False)
    p = rnn_xp.init("rnn", 2, 3, xp=np)
    with pytest.raises(ModuleNotFoundError, match=r"Fix: pip install 'rnn_xp\[cuda13\]' \('rnn_xp\[cuda12\]'"):
        rnn_xp.to_device(p, "cupy")
    with pytest.raises(TypeError, match="'gpu' is not an array namespace rnn_xp knows by name.*'torch'"):
        rnn_xp.to_device(p, "gpu")


def test_from_torch_file_without_torch_names_the_install(tmp_path, monkeypatch):
    path = tmp_path / "lstm.pt"
    path.write_bytes(b"PK\x03\x04 not a safetensors header")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match="pip install torch"):
        rnn_xp.from_torch(path)
    with pytest.raises(ImportError, match="pip install torch"):
        rnn_xp.to_torch_state_dict(rnn_xp.init("rnn", 2, 3, xp=np))


# --- the fixes the messages give work as written ------------------------------------------------------------
def test_token_ids_as_a_list_are_told_a_fix_that_works():
    model = rnn_xp.text_classifier(units=4, vocab=20, xp=np)
    ids = [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(TypeError, match=r"got list\. Fix: numpy\.asarray\(ids\)") as e:
        model(ids)
    assert "astype" not in str(e.value)
    assert model(np.asarray(ids)).shape == (2, 1)  # the fix, as given
    with pytest.raises(TypeError, match=r"got float64\. Fix: xp\.astype\(ids, xp\.int64\)"):
        model(np.asarray(ids, dtype=np.float64))
    assert model(np.asarray(ids, dtype=np.float64).astype(np.int64)).shape == (2, 1)


def test_onnx_graph_called_positionally_is_told_inputs_go_by_name():
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.uniform(-1, 1, (1, 4, 3)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.uniform(-1, 1, (1, 4, 4)).astype(np.float32), "R")
    node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=4)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 1, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [W, R],
    )
    graph = rnn_xp.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString())
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"takes its inputs by name: graph\(X=\.\.\.\)"):
        graph(x)
    assert graph(X=x)["Y"].shape == (2, 1, 1, 4)
    del onnx


# --- from_torch warns when a state_dict cannot tell the RNN's nonlinearity ----------------------------------
def test_rnn_state_dict_without_nonlinearity_warns():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")
    sd = torch.nn.RNN(3, 4, nonlinearity="relu").state_dict()
    with pytest.warns(UserWarning, match="assuming 'tanh'.*nonlinearity='relu'") as record:
        rnn_xp.from_torch(sd)
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relu = rnn_xp.from_torch(sd, nonlinearity="relu")  # told: no warning
        rnn_xp.from_torch(sd, nonlinearity="tanh")
        rnn_xp.from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))  # a module knows its nonlinearity
        rnn_xp.from_torch(torch.nn.GRU(3, 4).state_dict())  # GRU and LSTM have no choice to make
    assert relu.config.activations[0][0].name == "Relu"
