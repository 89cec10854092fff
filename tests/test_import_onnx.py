"""rnn_xp.from_onnx against onnxruntime (not onnx.reference, which ignores sequence_lens, clip,
input_forget and custom activations): every value of every attribute, pairwise, plus torch.onnx.export graphs."""

import functools
import io
import itertools
import random
import warnings

import numpy as np
import pytest
from conftest import assert_close, on

import rnn_xp
from rnn_xp import _xp

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = 1e-4
ACTS = [
    "Relu",
    "Tanh",
    "Sigmoid",
    "Affine",
    "LeakyRelu",
    "ThresholdedRelu",
    "ScaledTanh",
    "HardSigmoid",
    "Elu",
    "Softsign",
    "Softplus",
]
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
T, B, F, H = 4, 3, 2, 3


# --- a pairwise (all-pairs) sample of the attribute matrix ------------------------------------------------
def pairwise(space, valid, seed):
    """Cases (dicts) that together hold every pair of values of two attributes that a valid case can hold."""
    rng = random.Random(seed)
    names = list(space)

    def draw(fixed):
        case = {n: rng.choice(space[n]) for n in names}
        case.update(fixed)
        return case

    def pairs(case):
        return {(a, case[a], b, case[b]) for a, b in itertools.combinations(names, 2)}

    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(names, 2)
        for va in space[a]
        for vb in space[b]
        if any(valid(draw({a: va, b: vb})) for _ in range(20))
    }
    cases = []
    while uncovered:
        a, va, b, vb = min(uncovered, key=repr)
        candidates = [c for c in (draw({a: va, b: vb}) for _ in range(40)) if valid(c)]
        best = max(candidates, key=lambda c: len(pairs(c) & uncovered))
        cases.append(best)
        uncovered -= pairs(best)
    return cases


def _space(op):
    space = {
        "direction": ["forward", "reverse", "bidirectional"],
        "layout": [0, 1],
        "opset": [7, 14, 22],
        "f": ACTS,
        "alpha_beta": ["none", "all", "some"],  # "some": fewer values than takers, the rest take defaults
        "clip": [None, 0.9],
        "bias": [True, False],
        "lengths": ["none", "full", "ragged"],  # ragged holds a length 0
        "initial_h": [True, False],
        "outputs": ["all", "Y", "states"],
    }
    if op != "RNN":
        space["g"] = ACTS
    if op == "GRU":
        space["linear_before_reset"] = [0, 1]
    if op == "LSTM":
        space.update(h=ACTS, initial_c=[True, False], peepholes=[True, False], input_forget=[0, 1])
    return space


def _valid(case):
    return case["layout"] == 0 or case["opset"] >= 14  # layout arrived in opset 14


CASES = [(op, i, c) for op in GATES for i, c in enumerate(pairwise(_space(op), _valid, seed=len(op)))]


def test_the_sample_covers_every_value_of_every_attribute():
    for op in GATES:
        cases = [c for o, _, c in CASES if o == op]
        for name, values in _space(op).items():
            assert {repr(c[name]) for c in cases} == {repr(v) for v in values}, (op, name)


# --- building a node and running it on onnxruntime -----------------------------------------------------------
def _model(op, case, seed, layout):
    """(ModelProto, feeds) for one recurrent node written with ``layout``."""
    rng = np.random.default_rng(seed)
    D = 2 if case["direction"] == "bidirectional" else 1
    G = GATES[op]
    n_funcs = {"RNN": 1, "GRU": 2, "LSTM": 3}[op]
    names = [case[k] for k in "fgh"[:n_funcs]]
    names += [ACTS[(ACTS.index(n) + 5) % len(ACTS)] for n in names] if D == 2 else []  # the reverse differs
    takers_a = sum(n in ("Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu") for n in names)
    takers_b = sum(n in ("Affine", "ScaledTanh", "HardSigmoid") for n in names)
    attrs = {"direction": case["direction"], "activations": names}
    if case["alpha_beta"] != "none":
        keep = 1 if case["alpha_beta"] == "all" else 0.5
        attrs["activation_alpha"] = list(rng.uniform(0.3, 1.2, int(np.ceil(takers_a * keep))))
        attrs["activation_beta"] = list(rng.uniform(0.3, 1.2, int(np.ceil(takers_b * keep))))
        attrs = {k: v for k, v in attrs.items() if v != []}
    if case["clip"] is not None:
        attrs["clip"] = case["clip"]
    if case.get("hidden_size", True):  # onnxruntime needs it; rnn_xp can read it off R
        attrs["hidden_size"] = H
    if layout:
        attrs["layout"] = layout
    if op == "GRU":
        attrs["linear_before_reset"] = case["linear_before_reset"]
    if op == "LSTM":
        attrs["input_forget"] = case["input_forget"]

    inits = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, G * H, F)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, G * H, H)).astype(np.float32), "R"),
    ]
    if case["bias"]:
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, 2 * G * H)).astype(np.float32), "B"))
    if op == "LSTM" and case["peepholes"]:
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, 3 * H)).astype(np.float32), "P"))
    x = rng.standard_normal((T, B, F)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    c0 = rng.standard_normal((D, B, H)).astype(np.float32)
    feeds = {"X": x if layout == 0 else np.ascontiguousarray(x.transpose(1, 0, 2))}
    if case["lengths"] != "none":
        feeds["sequence_lens"] = np.array([T] * B if case["lengths"] == "full" else [T, 0, 2][:B], np.int32)
    if case["initial_h"]:
        feeds["initial_h"] = h0 if layout == 0 else np.ascontiguousarray(h0.transpose(1, 0, 2))
    if op == "LSTM" and case["initial_c"]:
        feeds["initial_c"] = c0 if layout == 0 else np.ascontiguousarray(c0.transpose(1, 0, 2))

    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][: 8 if op == "LSTM" else 6]
    present = set(feeds) | {t.name for t in inits}
    inputs = [s if s in present else "" for s in slots]
    while inputs[-1] == "":
        inputs.pop()
    outputs = {"all": ["Y", "Y_h", "Y_c"], "Y": ["Y"], "states": ["", "Y_h", "Y_c"]}[case["outputs"]]
    outputs = outputs[: 3 if op == "LSTM" else 2]
    node = helper.make_node(op, inputs, outputs, name=f"{op.lower()}_node", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, a.shape)
            for n, a in feeds.items()
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", case["opset"])]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), feeds


def _ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def _to_layout1(name, a):
    return np.ascontiguousarray(a.transpose(2, 0, 1, 3) if name == "Y" else a.transpose(1, 0, 2))


@functools.cache
def _expected(index):
    """(the model as written, its feeds, onnxruntime's outputs); layout=1 through its layout-0 twin."""
    op, i, case = CASES[index]
    model, feeds = _model(op, case, seed=index, layout=case["layout"])
    if case["layout"] == 0:
        return model, feeds, _ort(model, feeds)
    # onnxruntime refuses layout=1: the same weights written with layout=0, inputs and outputs transposed
    twin, twin_feeds = _model(op, case, seed=index, layout=0)
    out = _ort(twin, twin_feeds)
    return model, feeds, {n: _to_layout1(n, a) for n, a in out.items()}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{op}-{i}" for op, i, _ in CASES])
def test_attribute_matrix_matches_onnxruntime(index, xp):
    model, feeds, expected = _expected(index)
    for a in expected.values():
        assert np.isfinite(a).all()
    graph = rnn_xp.to_device(rnn_xp.from_onnx(model), xp)
    got = graph(**{n: on(xp, a) for n, a in feeds.items()})
    assert sorted(got) == sorted(expected)
    # unbounded gate functions (Relu, Elu, Affine, ...) let a few cases grow far past 1, where float32 holds
    # 1e-4 only relative to the outputs' scale
    scale = max(1.0, *(float(np.abs(e).max()) for e in expected.values()))
    for name, e in expected.items():
        assert_close(got[name], e, xp=xp, dtype="float32", shape=e.shape, atol=TOL * scale)


def test_length_zero_gives_zero_states_even_with_an_initial_state():
    case = dict(
        direction="bidirectional",
        layout=0,
        opset=14,
        f="Sigmoid",
        g="Tanh",
        h="Tanh",
        alpha_beta="none",
        clip=None,
        bias=True,
        lengths="ragged",
        initial_h=True,
        initial_c=True,
        outputs="all",
        peepholes=False,
        input_forget=0,
    )
    model, feeds = _model("LSTM", case, seed=1, layout=0)
    got = rnn_xp.from_onnx(model)(**feeds)
    expected = _ort(model, feeds)
    assert feeds["sequence_lens"][1] == 0 and np.abs(feeds["initial_h"][:, 1]).min() > 0
    for name in ("Y_h", "Y_c"):
        np.testing.assert_array_equal(got[name][:, 1], 0.0)  # onnxruntime's choice, documented
        np.testing.assert_allclose(got[name], expected[name], atol=TOL)
    np.testing.assert_array_equal(got["Y"][:, :, 1], 0.0)


def test_hidden_size_may_be_left_to_the_shape_of_r():
    op, _, case = CASES[0]
    model, feeds = _model(op, case, seed=0, layout=case["layout"])
    bare, _ = _model(op, {**case, "hidden_size": False}, seed=0, layout=case["layout"])
    assert not any(a.name == "hidden_size" for a in bare.graph.node[0].attribute)
    got, expected = rnn_xp.from_onnx(bare)(**feeds), rnn_xp.from_onnx(model)(**feeds)
    for name, e in expected.items():
        np.testing.assert_array_equal(got[name], e)


def test_the_newest_opset_imports_as_the_ones_onnxruntime_runs():
    index = next(i for i, (op, _, c) in enumerate(CASES) if op == "LSTM" and c["opset"] == 22)
    op, _, case = CASES[index]
    model, feeds, expected = _expected(index)
    newest, _ = _model(op, {**case, "opset": onnx.defs.onnx_opset_version()}, seed=index, layout=case["layout"])
    got = rnn_xp.from_onnx(newest)(**feeds)
    for name, e in expected.items():
        np.testing.assert_allclose(got[name], e, atol=TOL * max(1.0, float(np.abs(e).max())))


# --- torch.onnx.export graphs ----------------------------------------------------------------------------
torch = pytest.importorskip("torch")


def _export(module, args, input_names, output_names, dynamic_axes):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            f,
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=17,
        )
    return f.getvalue()


def _seeded(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module.eval()


@functools.cache
def _exported(kind):
    if kind == "lstm-stacked-bidirectional":
        m = _seeded(torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True), 0)
        x, names = torch.randn(2, 4, 3), (["x"], ["y", "h", "c"])
        data = _export(m, (x,), *names, {"x": {0: "batch", 1: "time"}})
        feeds = {"x": np.random.default_rng(0).standard_normal((3, 6, 3)).astype(np.float32)}
        with torch.no_grad():
            y, (h, c) = m(torch.from_numpy(feeds["x"]))
        return data, feeds, {"y": y, "h": h, "c": c}
    if kind == "lstm-initial-state":
        m = _seeded(torch.nn.LSTM(3, 4, num_layers=2, batch_first=True), 1)
        x, h0, c0 = torch.randn(2, 4, 3), torch.randn(2, 2, 4), torch.randn(2, 2, 4)
        data = _export(
            m,
            (x, (h0, c0)),
            ["x", "h0", "c0"],
            ["y", "h", "c"],
            {"x": {0: "b", 1: "t"}, "h0": {1: "b"}, "c0": {1: "b"}},
        )
        rng = np.random.default_rng(1)
        feeds = {
            "x": rng.standard_normal((3, 5, 3)).astype(np.float32),
            "h0": rng.standard_normal((2, 3, 4)).astype(np.float32),
            "c0": rng.standard_normal((2, 3, 4)).astype(np.float32),
        }
        with torch.no_grad():
            y, (h, c) = m(
                *(torch.from_numpy(feeds[k]) for k in ("x",)), tuple(torch.from_numpy(feeds[k]) for k in ("h0", "c0"))
            )
        return data, feeds, {"y": y, "h": h, "c": c}
    if kind == "gru-time-major-bidirectional":
        m = _seeded(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True), 2)
        data = _export(m, (torch.randn(4, 2, 3),), ["x"], ["y", "h"], {"x": {0: "t", 1: "b"}})
        feeds = {"x": np.random.default_rng(2).standard_normal((6, 3, 3)).astype(np.float32)}
        with torch.no_grad():
            y, h = m(torch.from_numpy(feeds["x"]))
        return data, feeds, {"y": y, "h": h}
    m = _seeded(torch.nn.RNN(3, 4, num_layers=3, nonlinearity="relu", batch_first=True), 3)
    data = _export(m, (torch.randn(2, 4, 3),), ["x"], ["y", "h"], {"x": {0: "b", 1: "t"}})
    feeds = {"x": np.random.default_rng(3).standard_normal((3, 5, 3)).astype(np.float32)}
    with torch.no_grad():
        y, h = m(torch.from_numpy(feeds["x"]))
    return data, feeds, {"y": y, "h": h}


EXPORTS = ["lstm-stacked-bidirectional", "lstm-initial-state", "gru-time-major-bidirectional", "rnn-relu-stacked"]


@pytest.mark.parametrize("kind", EXPORTS)
def test_torch_onnx_export_graphs(kind, xp):
    data, feeds, expected = _exported(kind)
    graph = rnn_xp.to_device(rnn_xp.from_onnx(data), xp)
    got = graph(**{n: on(xp, a) for n, a in feeds.items()})
    ort_out = _ort(onnx.load_from_string(data), feeds)
    for name, e in expected.items():
        e = e.numpy()
        assert_close(got[name], e, xp=xp, dtype="float32", shape=e.shape, atol=2e-5)  # the torch tolerance
        np.testing.assert_allclose(ort_out[name], e, atol=2e-5)


def test_imported_graph_works_with_the_tools(tmp_path, xp):
    data, feeds, expected = _exported("lstm-stacked-bidirectional")
    graph = rnn_xp.from_onnx(data)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    assert rnn_xp.count_params(graph) == sum(p.numel() for p in lstm.parameters())
    text = rnn_xp.summary(graph)
    assert "(LSTM, bidirectional)" in text and f"Total params: {rnn_xp.count_params(graph):,}" in text
    rnn_xp.save(graph, tmp_path / "g.npz")
    again = rnn_xp.load(tmp_path / "g.npz", xp=xp)
    assert rnn_xp.summary(again) == text
    got = again(**{n: on(xp, a) for n, a in feeds.items()})
    assert_close(got["y"], expected["y"].numpy(), xp=xp, dtype="float32", shape=tuple(expected["y"].shape), atol=2e-5)
    as64 = rnn_xp.to_device(graph, xp, dtype="float64")  # ConstantOfShape follows the model's dtype
    got = as64(**{n: on(xp, a, "float64") for n, a in feeds.items()})
    assert _xp.dtype_name(got["h"].dtype) == "float64"


def test_path_and_bytes(tmp_path):
    data, feeds, expected = _exported("rnn-relu-stacked")
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    for source in (path, str(path), data, onnx.load_from_string(data)):
        np.testing.assert_allclose(rnn_xp.from_onnx(source)(**feeds)["y"], expected["y"].numpy(), atol=2e-5)


# --- what it does not import: clear errors ----------------------------------------------------------------
def _lstm_graph(extra_nodes=(), *, w_as_input=False, opset=14, activations=None, **extra):
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.uniform(-1, 1, (1, 8, 2)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.uniform(-1, 1, (1, 8, 2)).astype(np.float32), "R")
    attrs = {"hidden_size": 2, **extra} if activations is None else {"hidden_size": 2, "activations": activations}
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], name="lstm", **attrs), *extra_nodes]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 1, 2])]
    if w_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, None))
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=[R] if w_as_input else [W, R],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_clear_errors():
    with pytest.raises(ValueError, match=r"node 'hardmax' \(Hardmax\): the operator is not supported; .*LSTM"):
        rnn_xp.from_onnx(_lstm_graph([helper.make_node("Hardmax", ["Y"], ["Z"], name="hardmax")]))
    with pytest.raises(ValueError, match="opset 6"):
        rnn_xp.from_onnx(_lstm_graph(opset=6))
    with pytest.raises(ValueError, match="'tanh_shrink' is not an ONNX activation"):
        rnn_xp.from_onnx(_lstm_graph(activations=["Sigmoid", "tanh_shrink", "Tanh"]))
    with pytest.raises(ValueError, match="is not an ONNX model"):
        rnn_xp.from_onnx(b"\x08\x07\x12\xff\xff garbage that is not protobuf")
    with pytest.raises(ValueError, match="holds no graph"):
        rnn_xp.from_onnx(b"")
    with pytest.raises(TypeError, match="ModelProto, a file path"):
        rnn_xp.from_onnx(3.5)
    model = _lstm_graph()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((1, 8, 3), np.float32), "W"))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros((1, 8, 5), np.float32), "R"))
    with pytest.raises(ValueError, match=r"node 'lstm' \(LSTM\): R has shape \(1, 8, 5\); expected \(1, 8, 2\)"):
        rnn_xp.from_onnx(model)
    graph = rnn_xp.from_onnx(_lstm_graph())
    with pytest.raises(TypeError, match=r"takes the inputs \['X'\] by name; missing \['X'\], unexpected \['x'\]"):
        graph(x=np.zeros((3, 1, 2), np.float32))
    unnamed = _lstm_graph([helper.make_node("Hardmax", ["Y"], ["Z"])])
    with pytest.raises(ValueError, match=r"node 'hardmax_1' \(Hardmax\)"):
        rnn_xp.from_onnx(unnamed)
    assert unnamed.graph.node[1].name == ""  # named on a copy: the caller's model is left as it was
    with pytest.raises(ValueError, match=r"node 'lstm' \(LSTM\): attribute 'colour' is not supported"):
        rnn_xp.from_onnx(_lstm_graph([helper.make_node("Identity", ["Y"], ["Z"])], colour=1))
    no_rnn = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["X"], ["Y"])],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        )
    )
    np.testing.assert_array_equal(rnn_xp.from_onnx(no_rnn)(X=np.ones(1, np.float32))["Y"], [1.0])  # any graph of OPS


def test_weights_as_graph_inputs_are_checked_per_call(xp):
    graph = rnn_xp.to_device(rnn_xp.from_onnx(_lstm_graph(w_as_input=True)), xp)
    assert graph.inputs == ("X", "W")
    x = on(xp, np.random.default_rng(0).standard_normal((3, 1, 2)).astype(np.float32))
    w = np.random.default_rng(1).uniform(-1, 1, (1, 8, 2)).astype(np.float32)
    fixed = rnn_xp.from_onnx(_lstm_graph())  # the same weights as initializers
    expected = fixed(X=_xp.to_host(x))["Y"]
    model = _lstm_graph()
    got = graph(X=x, W=on(xp, numpy_helper.to_array(model.graph.initializer[0])))["Y"]
    np.testing.assert_allclose(_xp.to_host(got), expected, atol=1e-6)
    cases = [
        (on(xp, w[:, :4]), ValueError, r"node 'lstm' \(LSTM\): W has shape \(1, 4, 2\); expected \(1, 8, 2\)"),
        (on(xp, w[None]), ValueError, r"node 'lstm' \(LSTM\): W and R must be 3-D"),
        (on(xp, w.astype(np.float64)), TypeError, r"node 'lstm' \(LSTM\): R has dtype float32; expected W's float64"),
        (_xp.from_host(np.zeros((1, 8, 2), np.int64), xp), TypeError, "W has dtype int64; expected a floating dtype"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            graph(X=x, W=bad)


def test_mutated_models_raise_value_errors():
    """Flipped bits in a serialized model: a graph or a ValueError, never a protobuf or numpy traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    data = _exported("lstm-stacked-bidirectional")[0]

    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), min_size=1, max_size=6))
    def check(flips):
        buf = bytearray(data)
        for i, bit in flips:
            buf[i] ^= 1 << bit
        try:
            graph = rnn_xp.from_onnx(bytes(buf))
        except ValueError:
            return
        assert isinstance(graph, rnn_xp.OnnxGraph)

    check()
