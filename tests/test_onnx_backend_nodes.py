"""ONNX's own backend node tests for RNN, GRU and LSTM (onnx/backend/test/case/node/rnn.py, gru.py, lstm.py).

Each test is a directory ``test_<name>/`` holding ``model.onnx`` and ``test_data_set_0/input_<k>.pb``,
``output_<k>.pb``, as ONNX generates them into ``onnx/backend/test/data/node``. The directories come from
the installed onnx package when it ships them; a wheel that does not is asked to generate them with its own
case generators (the code ``backend-test-tools generate-data`` runs), into a temporary folder, in the same
layout. The models feed W, R and B as graph inputs; each also runs with them moved into initializers.
rnn_xp's outputs must be the expected ones (onnxruntime refuses layout=1, so those are the reference).
"""

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
OPS = ("RNN", "GRU", "LSTM")
WEIGHTS = ("W", "R", "B", "P")
_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"


def _installed():
    if not _DATA.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(_DATA.iterdir())
        if (p / "model.onnx").is_file() and any(k in p.name for k in ("rnn", "gru", "lstm"))
    }


def _generated():
    """ONNX's node test cases for the three operators, from the generators inside the onnx package."""
    cases = importlib.import_module("onnx.backend.test.case.node")
    for op in ("rnn", "gru", "lstm"):  # importing a generator module runs its export_* functions
        importlib.import_module(f"{cases.__name__}.{op}")
    # the generators append to the package's list of cases (its collect_testcases imports every operator's)
    return {c.name: c for c in cases._NodeTestCases if c.model.graph.node[0].op_type in OPS}


INSTALLED = _installed()
GENERATED = {} if INSTALLED else _generated()
NAMES = sorted(INSTALLED or GENERATED)


def _write(case, folder):
    """One case in ONNX's on-disk layout."""
    folder.mkdir()
    onnx.save(case.model, folder / "model.onnx")
    for i, (inputs, outputs) in enumerate(case.data_sets):
        data = folder / f"test_data_set_{i}"
        data.mkdir()
        for kind, arrays, values in (
            ("input", inputs, case.model.graph.input),
            ("output", outputs, case.model.graph.output),
        ):
            for k, (a, v) in enumerate(zip(arrays, values, strict=True)):
                tensor = numpy_helper.from_array(np.asarray(a), v.name)
                (data / f"{kind}_{k}.pb").write_bytes(tensor.SerializeToString())


@pytest.fixture(scope="module")
def node_dirs(tmp_path_factory):
    if INSTALLED:
        return INSTALLED
    root = tmp_path_factory.mktemp("node")
    for name, case in GENERATED.items():
        _write(case, root / name)
    return {name: root / name for name in GENERATED}


def _read(path):
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _load(folder):
    """(model, feeds by name, expected outputs by name) of data set 0."""
    model = onnx.load(folder / "model.onnx")
    data = folder / "test_data_set_0"
    n_in = len([p for p in os.listdir(data) if p.startswith("input_")])
    n_out = len([p for p in os.listdir(data) if p.startswith("output_")])
    feeds = {model.graph.input[k].name: _read(data / f"input_{k}.pb") for k in range(n_in)}
    expected = {model.graph.output[k].name: _read(data / f"output_{k}.pb") for k in range(n_out)}
    return model, feeds, expected


def _as_initializers(model, feeds):
    """The same model with the weights (W, R, B, P inputs of the node) stored as initializers."""
    node = model.graph.node[0]
    slots = dict(zip(["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"], node.input, strict=False))
    moved = {slots[w] for w in WEIGHTS if slots.get(w)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [v for v in out.graph.input if v.name not in moved]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    out.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in sorted(moved))
    return out, {n: a for n, a in feeds.items() if n not in moved}


def test_the_node_tests_are_there():
    assert len(NAMES) >= 18, NAMES  # 6 per operator in onnx 1.17+
    for op in ("rnn", "gru", "lstm"):
        assert any(op in n for n in NAMES)
    assert any("batchwise" in n for n in NAMES) and any("peepholes" in n for n in NAMES)


@pytest.mark.parametrize("weights", ["inputs", "initializers"])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_backend_node_test(name, weights, node_dirs, xp):
    model, feeds, expected = _load(node_dirs[name])
    assert model.opset_import[0].version <= onnx.defs.onnx_opset_version()
    if weights == "initializers":
        model, feeds = _as_initializers(model, feeds)
        assert not any(n in feeds for n in ("W", "R"))
    graph = rnn_xp.to_device(rnn_xp.from_onnx(model), xp)
    got = graph(**{n: on(xp, a) if a.dtype.kind == "f" else _xp.from_host(a, xp) for n, a in feeds.items()})
    assert sorted(got) == sorted(expected)
    for n, e in expected.items():
        assert _xp.namespace_name(_xp.array_namespace(got[n])) == _xp.namespace_name(xp)
        assert tuple(got[n].shape) == e.shape
        np.testing.assert_allclose(_xp.to_host(got[n]), e, atol=ATOL, rtol=RTOL, err_msg=f"{name} {n}")


@pytest.mark.parametrize("opset", [7, 14, "newest"])
def test_node_tests_at_other_opsets(opset, node_dirs):
    """The same nodes stamped with the oldest opset rnn_xp reads, the one layout arrived in, and the newest."""
    version = onnx.defs.onnx_opset_version() if opset == "newest" else opset
    for name in NAMES:
        model, feeds, expected = _load(node_dirs[name])
        if version < 14 and any(a.name == "layout" for a in model.graph.node[0].attribute):
            continue
        model.opset_import[0].version = version
        got = rnn_xp.from_onnx(model)(**feeds)
        for n, e in expected.items():
            np.testing.assert_allclose(got[n], e, atol=ATOL, rtol=RTOL, err_msg=f"{name} {n} opset {version}")
