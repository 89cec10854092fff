"""torch.onnx.export graphs against onnxruntime: recurrent layers and small whole models, exported four ways.

The ways: the legacy exporter (dynamo=False) and the dynamo exporter (dynamo=True, which writes the weights to
``model.onnx.data`` beside the model), each with static shapes and with dynamic batch and time axes. Opsets
14, 17, 18 and 20. Each graph is read from its path (external data included), run on every namespace and
compared with onnxruntime on the same file; the dynamic ones again at another batch and time size (the axes
the exporter left dynamic). Every model is exported once per module.
"""

import functools
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

ATOL, RTOL = 1e-5, 1e-4
B, T, VOCAB = 2, 4, 20  # the export's batch and time
OTHER = {"batch": 5, "time": 7}  # the sizes a dynamic export runs at too
WAYS = ["legacy-static", "legacy-dynamic", "dynamo-static", "dynamo-dynamic"]
OPSET = {"legacy-static": 14, "legacy-dynamic": 17, "dynamo-static": 18, "dynamo-dynamic": 20}


class LSTMStates(nn.Module):
    """A 2-layer bidirectional LSTM with explicit initial states."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(x, (h0, c0))
        return y, h, c


class GRUTimeMajor(nn.Module):
    """A time-major GRU with an explicit initial state."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4)

    def forward(self, x, h0):
        return self.gru(x, h0)


class RNNStack(nn.Module):
    """A 2-layer bidirectional ReLU RNN (the dynamo exporter unrolls it into MatMul, Add, Relu)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 4, num_layers=2, bidirectional=True, nonlinearity="relu", batch_first=True)

    def forward(self, x):
        return self.rnn(x)


class Sentiment(nn.Module):
    """Embedding -> LSTM -> last step -> Linear -> Sigmoid."""

    def __init__(self):
        super().__init__()
        self.embed, self.lstm, self.head = nn.Embedding(VOCAB, 6), nn.LSTM(6, 5, batch_first=True), nn.Linear(5, 1)

    def forward(self, ids):
        y, _ = self.lstm(self.embed(ids))
        return torch.sigmoid(self.head(y[:, -1]))


class Tagger(nn.Module):
    """Embedding -> 2-layer bidirectional GRU -> Linear -> LogSoftmax per step."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.gru = nn.GRU(6, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(8, 7)

    def forward(self, ids):
        y, _ = self.gru(self.embed(ids))
        return torch.log_softmax(self.head(y), dim=-1)


class Classifier(nn.Module):
    """Linear -> Tanh -> ReLU RNN -> Linear -> Softmax."""

    def __init__(self):
        super().__init__()
        self.proj, self.rnn, self.head = (
            nn.Linear(3, 6),
            nn.RNN(6, 5, nonlinearity="relu", batch_first=True),
            nn.Linear(5, 4),
        )

    def forward(self, x):
        _, h = self.rnn(torch.tanh(self.proj(x)))
        return torch.softmax(self.head(h[-1]), dim=-1)


class StackedNorm(nn.Module):
    """LSTM -> Dropout -> LayerNorm -> LSTM (stacked LSTMs with Dropout and LayerNorm)."""

    def __init__(self):
        super().__init__()
        self.first, self.drop, self.norm = nn.LSTM(3, 6, batch_first=True), nn.Dropout(0.3), nn.LayerNorm(6)
        self.second = nn.LSTM(6, 4, batch_first=True)

    def forward(self, x):
        y, _ = self.first(x)
        y, (h, c) = self.second(self.norm(self.drop(y)))
        return y, h, c


def _floats(*shape):
    return lambda rng, b, t: rng.standard_normal(tuple(b if s == "b" else t if s == "t" else s for s in shape)).astype(
        np.float32
    )


def _ids(rng, b, t):
    return rng.integers(0, VOCAB, (b, t))


# name -> (module, [(input, make(rng, batch, time), {axis: "batch" or "time"})], outputs)
MODELS = {
    "lstm-2layer-bidirectional-states": (
        LSTMStates,
        [
            ("x", _floats("b", "t", 3), {0: "batch", 1: "time"}),
            ("h0", _floats(4, "b", 5), {1: "batch"}),
            ("c0", _floats(4, "b", 5), {1: "batch"}),
        ],
        ["y", "h", "c"],
    ),
    "gru-time-major-state": (
        GRUTimeMajor,
        [("x", _floats("t", "b", 3), {0: "time", 1: "batch"}), ("h0", _floats(1, "b", 4), {1: "batch"})],
        ["y", "h"],
    ),
    "rnn-relu-2layer-bidirectional": (RNNStack, [("x", _floats("b", "t", 3), {0: "batch", 1: "time"})], ["y", "h"]),
    "embedding-lstm-linear-sigmoid": (Sentiment, [("ids", _ids, {0: "batch", 1: "time"})], ["p"]),
    "embedding-gru-tagger-logsoftmax": (Tagger, [("ids", _ids, {0: "batch", 1: "time"})], ["logp"]),
    "linear-tanh-rnn-softmax": (Classifier, [("x", _floats("b", "t", 3), {0: "batch", 1: "time"})], ["p"]),
    "stacked-lstm-dropout-layernorm": (
        StackedNorm,
        [("x", _floats("b", "t", 3), {0: "batch", 1: "time"})],
        ["y", "h", "c"],
    ),
}


def _module(name):
    torch.manual_seed(sorted(MODELS).index(name))
    module = MODELS[name][0]()
    with torch.no_grad():
        for p in module.parameters():  # non-symmetric weights, larger than the default init
            p.uniform_(-0.6, 0.7)
    return module.eval()


def _feeds(name, b, t, seed=0):
    rng = np.random.default_rng(seed)
    return {n: make(rng, b, t) for n, make, _ in MODELS[name][1]}


def _export(name, way, folder):
    module, (specs, outputs) = _module(name), MODELS[name][1:]
    args = tuple(torch.from_numpy(a) for a in _feeds(name, B, T, seed=99).values())
    path = folder / f"{name}-{way}.onnx"
    names = [n for n, _, _ in specs]
    kw = dict(input_names=names, output_names=outputs, opset_version=OPSET[way])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if way.startswith("legacy"):
            dynamic = {n: dict(axes) for n, _, axes in specs} if way.endswith("dynamic") else None
            torch.onnx.export(module, args, str(path), dynamo=False, dynamic_axes=dynamic, **kw)
        else:
            pytest.importorskip("onnxscript")
            dims = {"batch": torch.export.Dim("batch", min=1), "time": torch.export.Dim("time", min=1)}
            dynamic = (
                tuple({a: dims[label] for a, label in axes.items()} for _, _, axes in specs)
                if way.endswith("dynamic")
                else None
            )
            torch.onnx.export(module, args, str(path), dynamo=True, dynamic_shapes=dynamic, verbose=False, **kw)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    return functools.cache(lambda name, way: _export(name, way, folder))


def _declared_dynamic(path):
    """{input: set of axes the graph leaves dynamic}."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        v.name: {i for i, d in enumerate(v.type.tensor_type.shape.dim) if not d.HasField("dim_value")}
        for v in model.graph.input
    }


def _sizes(name, path):
    """The batch and time a dynamic export runs at besides its own: those of OTHER the graph leaves dynamic."""
    dynamic = _declared_dynamic(path)
    out = {"batch": B, "time": T}
    for label in out:
        axes = [(n, a) for n, _, spec in MODELS[name][1] for a, lab in spec.items() if lab == label]
        if axes and all(a in dynamic.get(n, set()) for n, a in axes):
            out[label] = OTHER[label]
    return out["batch"], out["time"]


@functools.cache
def _onnxruntime(path, b, t):
    name = re.sub(r"-(legacy|dynamo)-(static|dynamic)\.onnx$", "", Path(path).name)
    feeds = _feeds(name, b, t)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return feeds, dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def _check(graph, feeds, expected, xp):
    got = graph(**{n: on(xp, a) if a.dtype.kind == "f" else _xp.from_host(a, xp) for n, a in feeds.items()})
    assert sorted(got) == sorted(expected)
    for n, e in expected.items():
        assert _xp.namespace_name(_xp.array_namespace(got[n])) == _xp.namespace_name(xp)
        assert tuple(got[n].shape) == e.shape, n
        np.testing.assert_allclose(_xp.to_host(got[n]), e, atol=ATOL, rtol=RTOL, err_msg=n)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_onnxruntime(name, way, exported, xp):
    path = exported(name, way)
    if way.startswith("dynamo"):  # torch 2.13 writes the weights beside the model
        assert Path(f"{path}.data").is_file()
    graph = rnn_xp.to_device(rnn_xp.from_onnx(path), xp)
    sizes = [(B, T)]
    if way.endswith("dynamic"):
        sizes.append(_sizes(name, path))
        assert sizes[1][0] != B, f"the exporter left the batch axis static: {_declared_dynamic(path)}"
    for b, t in sizes:
        feeds, expected = _onnxruntime(str(path), b, t)
        _check(graph, feeds, expected, xp)


def test_onnxruntime_agrees_with_torch(exported):
    """The reference itself: onnxruntime on the exported files gives torch's outputs."""
    for name in MODELS:
        module = _module(name)
        feeds, expected = _onnxruntime(str(exported(name, "legacy-static")), B, T)
        with torch.no_grad():
            out = module(*(torch.from_numpy(a) for a in feeds.values()))
        out = out if isinstance(out, tuple) else (out,)
        flat = [o for item in out for o in (item if isinstance(item, tuple) else (item,))]
        for n, o in zip(MODELS[name][2], flat, strict=True):
            np.testing.assert_allclose(expected[n], o.numpy(), atol=1e-5, err_msg=f"{name} {n}")


def test_the_exports_use_the_operators_they_are_meant_to_cover(exported):
    used = set()
    for name in MODELS:
        for way in WAYS:
            used |= {n.op_type for n in onnx.load(str(exported(name, way)), load_external_data=False).graph.node}
    assert {
        "LSTM",
        "GRU",
        "RNN",
        "Expand",
        "ConstantOfShape",
        "Gather",
        "Gemm",
        "MatMul",
        "LayerNormalization",
        "ReduceMean",
        "Softmax",
        "LogSoftmax",
        "Sigmoid",
        "Relu",
        "Tanh",
        "Slice",
        "Concat",
        "Reshape",
    } <= used


def test_lstm_with_proj_size_is_refused_clearly(tmp_path):
    """torch's legacy exporter refuses proj_size; its dynamo exporter writes an LSTM node whose initial_c
    has the cell size while hidden_size is the projection's (onnxruntime cannot run it): refused at import."""
    pytest.importorskip("onnxscript")
    lstm = nn.LSTM(3, 5, proj_size=2, batch_first=True).eval()
    path = tmp_path / "proj.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm, (torch.randn(2, 4, 3),), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="initial_c must have shape"):  # onnxruntime fails when it runs
        session.run(None, {session.get_inputs()[0].name: np.zeros((2, 4, 3), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"node '.*' \(LSTM\): initial_c \('.*'\) has shape \(1, 2, 5\); expected "
        r"\(num_directions, batch, hidden_size\) with num_directions=1, "
        r"hidden_size=2. An LSTM exported with proj_size",
    ):
        rnn_xp.from_onnx(path)


# --- the README's example, as written ---------------------------------------------------------------------
def _readme_block(title):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index(f"### {title}") :]
    return section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]


def test_readme_onnx_example_runs_as_written(tmp_path, monkeypatch):
    """The lines of "Export to ONNX, run on CuPy", with NumPy for CuPy, after training nn.LSTM(batch_first=True)."""
    code = _readme_block("Export to ONNX, run on CuPy")
    assert "dynamic_axes" not in code and "dynamo=False" in code
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, batch_first=True).eval()
    x = torch.randn(2, 4, 3)
    monkeypatch.chdir(tmp_path)
    scope = {"lstm": lstm, "x": x, "torch": torch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code.replace("cupy", "numpy"), "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    session = ort.InferenceSession(str(tmp_path / "lstm.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})
    for got, e in zip((scope["y"], scope["h_n"], scope["c_n"]), expected, strict=True):
        np.testing.assert_allclose(got, e, atol=ATOL, rtol=RTOL)
    with torch.no_grad():
        y, (h, c) = lstm(x)
    np.testing.assert_allclose(scope["y"], y.numpy(), atol=ATOL)


@pytest.mark.parametrize(
    "name,way",
    [("embedding-gru-tagger-logsoftmax", "dynamo-dynamic"), ("stacked-lstm-dropout-layernorm", "legacy-static")],
)
def test_exports_work_with_the_tools(name, way, exported, tmp_path):
    """summary, save/load and to_device(dtype='float64') on graphs with heads, glue and external data."""
    path = exported(name, way)
    graph = rnn_xp.from_onnx(path)
    feeds, expected = _onnxruntime(str(path), B, T)
    text = rnn_xp.summary(graph)
    assert f"Total params: {rnn_xp.count_params(graph):,}" in text and ("(GRU" in text or "(LSTM" in text)
    assert rnn_xp.count_params(graph) >= sum(p.numel() for p in _module(name).parameters())
    rnn_xp.save(graph, tmp_path / "g.npz")
    again = rnn_xp.load(tmp_path / "g.npz", xp=np)
    for n, e in again(**feeds).items():
        np.testing.assert_allclose(e, expected[n], atol=ATOL, rtol=RTOL)
    as64 = rnn_xp.to_device(graph, np, dtype="float64")
    got = as64(**{n: a.astype(np.float64) if a.dtype.kind == "f" else a for n, a in feeds.items()})
    for n, e in got.items():
        assert e.dtype == np.float64
        np.testing.assert_allclose(e, expected[n], atol=ATOL, rtol=RTOL)
