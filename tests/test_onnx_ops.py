"""Every operator of rnn_xp.importers.onnx.OPS against onnxruntime, one small graph per case, on every namespace.

Each case runs twice: its inputs fed when the graph runs (the operator computes on the namespace under test)
and its inputs as initializers (the importer folds it on the host); both must give onnxruntime's outputs,
dtypes and shapes. Then: the table itself (arity, attributes), the errors naming the node, and the bounds on
what an operator may allocate.
"""

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp
from rnn_xp.importers.onnx import OPS
from rnn_xp.importers.onnx.graph import Op

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
_rng = np.random.default_rng(7)


def f(*shape, lo=-2.0, hi=2.0):
    return _rng.uniform(lo, hi, shape).astype(np.float32)


def i64(*values):
    return np.array(values, np.int64)


def scalar(v, dtype):
    return np.array(v, dtype)


def boolean(*shape):
    return _rng.random(shape) > 0.5


# (id, op, inputs (None: left out), attributes, opset, number of outputs)
CASES = [
    ("Shape", "Shape", [f(2, 3, 4)], {}, 17, 1),
    ("Shape-start-end", "Shape", [f(2, 3, 4)], {"start": 1, "end": -1}, 17, 1),
    ("Gather-rows", "Gather", [f(5, 3), i64([0, 4], [-1, 2])], {}, 17, 1),
    ("Gather-axis1-scalar", "Gather", [f(2, 5, 3), scalar(-2, np.int64)], {"axis": 1}, 17, 1),
    ("Gather-int32-ids", "Gather", [f(6, 4), np.array([[1, 5, 0]], np.int32)], {}, 17, 1),
    ("Gather-shape", "Gather", [i64(4, 7, 9), i64(1)], {}, 17, 1),
    ("Slice", "Slice", [f(5, 6), i64(1, -1), i64(4, 1000), i64(0, 1), i64(1, 2)], {}, 17, 1),
    ("Slice-negative-step", "Slice", [f(6, 4), i64(-1), i64(-1000), i64(0), i64(-2)], {}, 17, 1),
    ("Slice-no-axes", "Slice", [f(4, 5), i64(1), i64(3)], {}, 13, 1),
    ("Slice-opset9", "Slice", [f(5, 6)], {"starts": [1], "ends": [3], "axes": [1]}, 9, 1),
    ("Concat", "Concat", [f(2, 3), f(2, 1), f(2, 2)], {"axis": -1}, 17, 1),
    ("Concat-ints", "Concat", [i64(1), i64(2, 3)], {"axis": 0}, 17, 1),
    ("Reshape", "Reshape", [f(2, 3, 4), i64(0, -1)], {}, 17, 1),
    ("Reshape-allowzero", "Reshape", [f(2, 0, 4), i64(0, 4)], {"allowzero": 1}, 17, 1),
    ("Squeeze", "Squeeze", [f(1, 3, 1), i64(0)], {}, 17, 1),
    ("Squeeze-all", "Squeeze", [f(1, 3, 1)], {}, 17, 1),
    ("Squeeze-opset11", "Squeeze", [f(1, 3, 1)], {"axes": [-1]}, 11, 1),
    ("Unsqueeze", "Unsqueeze", [f(3, 4), i64(0, -1)], {}, 17, 1),
    ("Unsqueeze-opset11", "Unsqueeze", [f(3, 4)], {"axes": [1]}, 11, 1),
    ("Transpose", "Transpose", [f(2, 3, 4)], {"perm": [2, 0, 1]}, 17, 1),
    ("Transpose-default", "Transpose", [f(2, 3, 4)], {}, 17, 1),
    ("Expand", "Expand", [f(3, 1), i64(2, 1, 4)], {}, 17, 1),
    ("Expand-scalar", "Expand", [scalar(0.0, np.float32), i64(2, 3)], {}, 14, 1),
    ("Tile", "Tile", [f(2, 3), i64(2, 1)], {}, 17, 1),
    ("Range-int", "Range", [scalar(1, np.int64), scalar(10, np.int64), scalar(3, np.int64)], {}, 17, 1),
    ("Range-float", "Range", [scalar(0.5, np.float32), scalar(3.0, np.float32), scalar(0.7, np.float32)], {}, 17, 1),
    ("Range-down", "Range", [scalar(5, np.int32), scalar(-3, np.int32), scalar(-2, np.int32)], {}, 17, 1),
    ("Range-empty", "Range", [scalar(5, np.int64), scalar(1, np.int64), scalar(1, np.int64)], {}, 17, 1),
    (
        "ConstantOfShape",
        "ConstantOfShape",
        [i64(2, 3)],
        {"value": numpy_helper.from_array(np.array([1.5], np.float32))},
        17,
        1,
    ),
    ("ConstantOfShape-int", "ConstantOfShape", [i64(4)], {"value": numpy_helper.from_array(i64(7))}, 17, 1),
    ("ConstantOfShape-default", "ConstantOfShape", [i64(2, 2)], {}, 17, 1),
    ("Where", "Where", [boolean(3, 4), f(3, 4), f(1, 4)], {}, 17, 1),
    ("Where-ints", "Where", [boolean(3), i64(1, 2, 3), i64(-1)], {}, 17, 1),
    ("Cast-float-int", "Cast", [f(3, 4, lo=-5, hi=5)], {"to": TensorProto.INT64}, 17, 1),
    ("Cast-int-float", "Cast", [i64(3, -4, 5)], {"to": TensorProto.FLOAT}, 17, 1),
    ("Cast-float-bool", "Cast", [np.array([0.0, 1.5, -2.0], np.float32)], {"to": TensorProto.BOOL}, 17, 1),
    ("Cast-bool-float", "Cast", [boolean(5)], {"to": TensorProto.FLOAT}, 17, 1),
    ("Cast-int64-int32", "Cast", [i64(3, -4, 5)], {"to": TensorProto.INT32}, 13, 1),
    ("Equal", "Equal", [np.array([1, 2, 3], np.int64), i64(2)], {}, 17, 1),
    ("Equal-float", "Equal", [np.array([1.0, 2.0], np.float32), np.array([[1.0], [2.0]], np.float32)], {}, 17, 1),
    ("Less", "Less", [f(3, 4), f(4)], {}, 17, 1),
    ("Greater", "Greater", [f(3, 1), f(1, 4)], {}, 17, 1),
    ("LessOrEqual", "LessOrEqual", [i64(1, 2, 3), i64(2)], {}, 17, 1),
    ("GreaterOrEqual", "GreaterOrEqual", [i64(1, 2, 3), i64(2)], {}, 17, 1),
    ("Not", "Not", [boolean(3, 2)], {}, 17, 1),
    ("And", "And", [boolean(3, 2), boolean(2)], {}, 17, 1),
    ("Or", "Or", [boolean(3, 2), boolean(3, 1)], {}, 17, 1),
    ("Split", "Split", [f(6, 4), i64(2, 4)], {"axis": 0}, 17, 2),
    ("Split-num-outputs", "Split", [f(5, 2)], {"axis": 0, "num_outputs": 3}, 18, 3),
    ("Split-equal", "Split", [f(2, 6)], {"axis": 1}, 17, 3),
    ("Split-opset11", "Split", [f(2, 6)], {"axis": -1, "split": [1, 5]}, 11, 2),
    ("Flatten", "Flatten", [f(2, 3, 4)], {"axis": 2}, 17, 1),
    ("Flatten-axis0", "Flatten", [f(2, 3, 4)], {"axis": 0}, 17, 1),
    ("Identity", "Identity", [f(2, 3)], {}, 17, 1),
    ("Add", "Add", [f(3, 1, 4), f(2, 1)], {}, 17, 1),
    ("Add-ints", "Add", [i64(1, 2), i64(5)], {}, 17, 1),
    ("Sub", "Sub", [f(2, 3), f(3)], {}, 17, 1),
    ("Mul", "Mul", [f(2, 3), f(2, 1)], {}, 17, 1),
    ("Mul-ints", "Mul", [i64(4), i64(3)], {}, 17, 1),
    ("Div", "Div", [f(2, 3), f(3, lo=0.5, hi=2.0)], {}, 17, 1),
    ("Div-ints", "Div", [i64(7, -7, 6, -6), i64(2, 2, -4, -4)], {}, 17, 1),
    ("Pow", "Pow", [f(2, 3, lo=0.1, hi=2.0), f(3)], {}, 17, 1),
    ("Pow-int-exponent", "Pow", [f(2, 3), i64(2)], {}, 17, 1),
    ("Max", "Max", [f(2, 3), f(3), f(2, 1)], {}, 17, 1),
    ("Min", "Min", [f(2, 3), f(1)], {}, 17, 1),
    ("Neg", "Neg", [f(2, 3)], {}, 17, 1),
    ("Neg-ints", "Neg", [i64(2, -3)], {}, 17, 1),
    ("Abs", "Abs", [f(2, 3)], {}, 17, 1),
    ("Exp", "Exp", [f(2, 3)], {}, 17, 1),
    ("Log", "Log", [f(2, 3, lo=0.1, hi=3.0)], {}, 17, 1),
    ("Sqrt", "Sqrt", [f(2, 3, lo=0.0, hi=3.0)], {}, 17, 1),
    ("Reciprocal", "Reciprocal", [f(2, 3, lo=0.5, hi=3.0)], {}, 17, 1),
    ("Tanh", "Tanh", [f(2, 3)], {}, 17, 1),
    ("Sigmoid", "Sigmoid", [f(2, 3, lo=-30, hi=30)], {}, 17, 1),
    ("Relu", "Relu", [f(2, 3)], {}, 17, 1),
    ("LeakyRelu", "LeakyRelu", [f(2, 3)], {"alpha": 0.3}, 17, 1),
    ("LeakyRelu-default", "LeakyRelu", [f(2, 3)], {}, 17, 1),
    ("Elu", "Elu", [f(2, 3)], {"alpha": 0.7}, 17, 1),
    ("Softplus", "Softplus", [f(2, 3, lo=-30, hi=30)], {}, 17, 1),
    ("Erf", "Erf", [f(3, 5, lo=-3, hi=3)], {}, 17, 1),
    ("Clip", "Clip", [f(3, 4), scalar(-0.5, np.float32), scalar(0.8, np.float32)], {}, 17, 1),
    ("Clip-max-only", "Clip", [f(3, 4), None, scalar(0.2, np.float32)], {}, 17, 1),
    ("Clip-min-above-max", "Clip", [f(3, 4), scalar(0.5, np.float32), scalar(-0.5, np.float32)], {}, 17, 1),
    ("Clip-opset10", "Clip", [f(3, 4)], {"min": -0.3, "max": 0.4}, 10, 1),
    ("MatMul", "MatMul", [f(3, 4), f(4, 2)], {}, 17, 1),
    ("MatMul-batched", "MatMul", [f(2, 1, 3, 4), f(5, 4, 2)], {}, 17, 1),
    ("MatMul-vector", "MatMul", [f(4), f(2, 4, 3)], {}, 17, 1),
    ("Gemm", "Gemm", [f(4, 3), f(5, 4), f(5)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, 17, 1),
    ("Gemm-no-C", "Gemm", [f(3, 4), f(4, 2)], {}, 17, 1),
    ("Softmax", "Softmax", [f(2, 3, 4)], {"axis": 1}, 17, 1),
    ("Softmax-default", "Softmax", [f(2, 3, 4, lo=-30, hi=30)], {}, 17, 1),
    ("Softmax-opset11", "Softmax", [f(2, 3, 4)], {"axis": 1}, 11, 1),
    ("LogSoftmax", "LogSoftmax", [f(2, 3, 4)], {"axis": -1}, 17, 1),
    ("LogSoftmax-opset11", "LogSoftmax", [f(2, 3, 4)], {}, 11, 1),
    ("ReduceMean", "ReduceMean", [f(2, 3, 4), i64(-1)], {"keepdims": 0}, 18, 1),
    ("ReduceMean-opset13", "ReduceMean", [f(2, 3, 4)], {"axes": [0, 2]}, 13, 1),
    ("ReduceMean-all", "ReduceMean", [f(2, 3, 4)], {}, 18, 1),
    ("ReduceSum", "ReduceSum", [f(2, 3, 4), i64(1)], {}, 13, 1),
    ("ReduceSum-ints", "ReduceSum", [i64(1, 2, 3)], {"keepdims": 0}, 13, 1),
    ("ReduceSum-noop", "ReduceSum", [f(2, 3), np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, 13, 1),
    ("ReduceMax", "ReduceMax", [f(2, 3, 4), i64(0, 1)], {}, 18, 1),
    ("ReduceMax-opset13", "ReduceMax", [f(2, 3, 4)], {"axes": [1], "keepdims": 0}, 13, 1),
    ("ReduceMin", "ReduceMin", [f(2, 3, 4), i64(2)], {}, 18, 1),
    ("LayerNormalization", "LayerNormalization", [f(2, 3, 4), f(4), f(4)], {"epsilon": 1e-3}, 17, 1),
    ("LayerNormalization-axis1", "LayerNormalization", [f(2, 3, 4), f(3, 4)], {"axis": 1}, 17, 3),
    ("Dropout", "Dropout", [f(2, 3), scalar(0.3, np.float32)], {}, 13, 2),
    ("Dropout-training-false", "Dropout", [f(2, 3), scalar(0.3, np.float32), np.array(False)], {}, 13, 1),
    ("Dropout-opset7", "Dropout", [f(2, 3)], {"ratio": 0.2}, 7, 1),
]
IDS = [c[0] for c in CASES]


def _model(case, as_initializers):
    _, op, args, attrs, opset, n_out = case
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    fed = {n: a for n, a in zip(names, args, strict=True) if n}
    node = helper.make_node(op, names, [f"out{k}" for k in range(n_out)], name=f"{op.lower()}_node", **attrs)
    inputs = (
        []
        if as_initializers
        else [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in fed.items()
        ]
    )
    inits = [numpy_helper.from_array(a, n) for n, a in fed.items()] if as_initializers else []
    graph = helper.make_graph(
        [node], "g", inputs, [onnx.ValueInfoProto(name=f"out{k}") for k in range(n_out)], initializer=inits
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    return model, ({} if as_initializers else fed)


_ORT = {}


def _expected(index):
    if index not in _ORT:
        model, feeds = _model(CASES[index], as_initializers=False)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        _ORT[index] = session.run(None, feeds)
    return _ORT[index]


def _compare(got, expected):
    host = np.asarray(_xp.to_host(got))
    assert host.dtype == expected.dtype, (host.dtype, expected.dtype)
    assert host.shape == expected.shape, (host.shape, expected.shape)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(host, expected, atol=ATOL, rtol=RTOL)
    else:
        np.testing.assert_array_equal(host, expected)


def _feed(xp, a):
    if a.dtype.kind == "f":
        return on(xp, a)
    return _xp.from_host(a, xp)


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_operator_matches_onnxruntime(index, xp):
    """Inputs fed at run time: the operator computes in the namespace under test."""
    expected = _expected(index)
    model, feeds = _model(CASES[index], as_initializers=False)
    graph = rnn_xp.to_device(rnn_xp.from_onnx(model), xp)
    out = graph(**{n: _feed(xp, a) for n, a in feeds.items()})
    assert list(out) == [f"out{k}" for k in range(len(expected))]
    for k, e in enumerate(expected):
        got = out[f"out{k}"]
        if e.dtype.kind == "f" and CASES[index][1] != "Shape":  # data stays in the namespace of the data
            assert _xp.namespace_name(_xp.array_namespace(got)) == _xp.namespace_name(xp)
        _compare(got, e)


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_operator_folded_at_import_matches_onnxruntime(index):
    """The same inputs as initializers: the importer evaluates the node once, on the host."""
    expected = _expected(index)
    model, _ = _model(CASES[index], as_initializers=True)
    graph = rnn_xp.from_onnx(model)
    assert not any(isinstance(n, Op) for n in graph.nodes)  # folded
    out = graph()
    for k, e in enumerate(expected):
        _compare(out[f"out{k}"], e)


def test_every_operator_has_a_case():
    assert {c[1] for c in CASES} == set(OPS)


def test_the_table_is_consistent():
    for name, spec in OPS.items():
        lo, hi = spec.inputs
        assert 0 <= lo and (hi is None or hi >= lo), name
        assert all(t in ("INT", "INTS", "FLOAT", "FLOATS", "STRING", "STRINGS", "TENSOR") for t in spec.attrs.values())
        assert all(0 <= h < (hi or 99) for h in spec.host), name
        assert spec.claims <= (spec.size is not OPS["Identity"].size), name  # a claim is sized


# --- errors name the node ------------------------------------------------------------------------------------
def _one(op, args, attrs=None, opset=17, n_out=1):
    return _model((op, op, args, attrs or {}, opset, n_out), as_initializers=False)


def test_errors_name_the_node():
    cases = [
        (
            _one("Concat", [f(2, 3), f(2, 1)], {"axis": 0, "color": 3}),
            r"node 'concat_node' \(Concat\): attribute 'color' is not supported; the operator takes \['axis'\]",
        ),
        (
            _one("Transpose", [f(2, 3)], {"perm": 1.5}),
            r"'transpose_node' \(Transpose\): attribute 'perm' is FLOAT; "
            "expected INTS",
        ),
        (_one("Add", [f(2), f(2), f(2)]), r"'add_node' \(Add\): takes 2 to 2 inputs .* got 3"),
        (_one("Range", [scalar(1, np.int64)] * 3, opset=10), r"Range exists from opset 11; the model imports opset 10"),
        (_one("LayerNormalization", [f(2, 3), f(3)], opset=16), "LayerNormalization exists from opset 17"),
        (_one("Cast", [f(2)], {"to": TensorProto.FLOAT16}), r"'cast_node' \(Cast\): to=10 is not a type rnn_xp"),
        (_one("Cast", [f(2)], {"to": TensorProto.STRING}), r"to=8 is not a type"),
        (_one("Split", [f(6)], {"split": [1, 2]}, opset=11, n_out=2), r"'split_node' \(Split\): split sizes \[1, 2\]"),
    ]
    for (model, feeds), match in cases:
        with pytest.raises(ValueError, match=match):
            rnn_xp.from_onnx(model)(**feeds)
    unknown = _one("Conv", [f(1, 1, 3), f(1, 1, 1)])[0]
    with pytest.raises(
        ValueError,
        match=r"node 'conv_node' \(Conv\): the operator is not supported; rnn_xp runs "
        r"graphs of .*ConstantOfShape.*LSTM.*LayerNormalization",
    ):
        rnn_xp.from_onnx(unknown)


def test_call_time_shape_errors_name_the_node(xp):
    checks = [
        (
            _one("Add", [f(2, 3), f(3)]),
            {"in1": f(4)},
            ValueError,
            r"'add_node' \(Add\): shapes \(2, 3\), \(4,\) do not",
        ),
        (
            _one("Reshape", [f(2, 3), i64(4, -1)]),
            {"in1": i64(4, 4)},
            ValueError,
            r"'reshape_node' \(Reshape\): cannot reshape \(2, 3\) \(6 elements\) to \(4, 4\)",
        ),
        (_one("MatMul", [f(2, 3), f(3, 2)]), {"in1": f(4, 2)}, ValueError, r"'matmul_node' \(MatMul\): shapes"),
        (
            _one("Gather", [f(5, 3), i64(1)]),
            {"in1": i64(5)},
            ValueError,
            r"'gather_node' \(Gather\): indices must "
            r"lie in \[-5, 4\]",
        ),
        (_one("Squeeze", [f(1, 3), i64(0)]), {"in1": i64(1)}, ValueError, r"cannot squeeze axes \[1\]"),
        (_one("Concat", [f(2, 3), f(2, 1)], {"axis": 1}), {"in1": f(3, 1)}, ValueError, r"differ off axis 1"),
        (
            _one("Add", [f(2), f(2)]),
            {"in1": i64(1, 2)},
            TypeError,
            r"'add_node' \(Add\): the inputs have dtypes "
            "float32, int64",
        ),
        (_one("Where", [boolean(2), f(2), f(2)]), {"in0": i64(1, 0)}, TypeError, "condition must be bool"),
    ]
    for (model, feeds), change, exc, match in checks:
        for v in model.graph.input:  # any shape: the node, not the graph's declarations, meets the mismatch
            v.type.tensor_type.ClearField("shape")
        graph = rnn_xp.to_device(rnn_xp.from_onnx(model), xp)
        feeds = {n: _feed(xp, a) for n, a in {**feeds, **change}.items()}
        with pytest.raises(exc, match=match):
            graph(**feeds)


def test_dropout_in_training_mode_is_refused():
    model, feeds = _one("Dropout", [f(2, 3), scalar(0.3, np.float32), np.array(True)])
    with pytest.raises(ValueError, match=r"'dropout_node' \(Dropout\): training_mode is true; rnn_xp runs inference"):
        rnn_xp.from_onnx(model)(**feeds)


# --- what a small file may ask for ---------------------------------------------------------------------------
def _shape_graph(op, extra_inputs=(), attrs=None):
    """x -> Shape -> Concat with a constant -> ``op`` (the size it makes is computed when the graph runs)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Concat", ["s", "big"], ["t"], name="concat", axis=0),
        helper.make_node(
            op, ["t", *extra_inputs][::-1] if op == "Expand" else ["t"], ["y"], name="bomb", **(attrs or {})
        ),
    ]
    inits = [
        numpy_helper.from_array(i64(1 << 17, 1 << 17), "big"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])],
        [onnx.ValueInfoProto(name="y")],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand"])
def test_sizes_computed_at_run_time_are_bounded(op):
    """Shape -> Concat -> ConstantOfShape asking for 2**34 * 6 elements (a 384 GiB float32 array) is refused."""
    graph = rnn_xp.from_onnx(_shape_graph(op, ["zero"]))
    with pytest.raises(
        ValueError,
        match=r"node 'bomb' \(" + op + r"\): would make 103,079,215,104 elements, more "
        r"than the [\d,]+ this call allows",
    ):
        graph(x=np.zeros((2, 3), np.float32))
    small = helper.make_model(graph_with_small_big(op), opset_imports=[helper.make_opsetid("", 17)])
    assert rnn_xp.from_onnx(small)(x=np.zeros((2, 3), np.float32))["y"].shape == (2, 3, 4, 5)


def graph_with_small_big(op):
    model = _shape_graph(op, ["zero"])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(i64(4, 5), "big"))
    return model.graph


def test_range_and_tile_sizes_are_bounded():
    nodes = [helper.make_node("Range", ["s", "l", "d"], ["y"], name="range")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, []) for n in "sld"],
        [onnx.ValueInfoProto(name="y")],
    )
    g = rnn_xp.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ValueError, match=r"'range' \(Range\): would make 1,000,000,000,000 elements"):
        g(s=np.array(0), l=np.array(10**12), d=np.array(1))
    np.testing.assert_array_equal(g(s=np.array(0), l=np.array(5), d=np.array(2))["y"], [0, 2, 4])
    tile = helper.make_graph(
        [helper.make_node("Tile", ["x", "r"], ["y"], name="tile")],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("r", TensorProto.INT64, [1]),
        ],
        [onnx.ValueInfoProto(name="y")],
    )
    g = rnn_xp.from_onnx(helper.make_model(tile, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ValueError, match=r"'tile' \(Tile\): would make"):
        g(x=np.zeros(2, np.float32), r=i64(1 << 40))


@pytest.mark.parametrize("op", ["Expand", "Range", "Tile", "Add", "MatMul"])
def test_folding_is_bounded(op):
    """Constants asking for terabytes when folded at import: refused before anything is allocated."""
    args = {
        "Expand": [f(1), i64(1 << 20, 1 << 20)],
        "Range": [scalar(0, np.int64), scalar(1 << 50, np.int64), scalar(1, np.int64)],
        "Tile": [f(4), i64(1 << 40)],
        "Add": [f(1 << 13, 1), f(1, 1 << 13)],
        "MatMul": [f(1 << 13, 1), f(1, 1 << 13)],
    }
    model, feeds = _one(op, args[op])
    for n, a in feeds.items():
        model.graph.initializer.append(numpy_helper.from_array(a, n))
    del model.graph.input[:]
    with pytest.raises(ValueError, match="folding the graph's constants would make more than"):
        rnn_xp.from_onnx(model)


def test_host_shape_values_meet_device_data(xp):
    """Shape's host integers cast to float and combined with data: computed in the data's namespace."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Cast", ["s"], ["sf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "sf"], ["y"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [onnx.ValueInfoProto(name="y")]
    )
    g = rnn_xp.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    y = rnn_xp.to_device(g, xp)(x=on(xp, np.array([1.5, -1.0], np.float32)))["y"]
    assert _xp.namespace_name(_xp.array_namespace(y)) == _xp.namespace_name(xp)
    np.testing.assert_allclose(_xp.to_host(y), [3.0, -2.0])


def test_a_numpy_input_meeting_device_data_is_refused():
    """No silent transfer: a floating NumPy input combined with the graph's data elsewhere is refused."""
    strict = pytest.importorskip("array_api_strict")
    model, feeds = _one("Add", [f(2, 3), f(3)])
    model.graph.initializer.append(numpy_helper.from_array(feeds.pop("in1"), "in1"))
    del model.graph.input[1:]
    graph = rnn_xp.to_device(rnn_xp.from_onnx(model), strict)
    with pytest.raises(
        TypeError,
        match=r"'add_node' \(Add\): input 0 is a numpy array but the other inputs are "
        r"array_api_strict arrays .*no silent transfers",
    ):
        graph(in0=feeds["in0"])


def test_tile_with_a_zero_repeat_builds_no_huge_intermediate():
    """numpy.tile repeats axis by axis: [2**20, 2**20, 0] once built a 384 TiB intermediate (fuzz finding)."""
    x = np.arange(2 * 16 * 3, dtype=np.float32).reshape(2, 16, 3)
    reps = np.array([2**20, 2**20, 0], dtype=np.int64)
    node = helper.make_node("Tile", ["c", "r"], ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    for inits, inputs, feed in (
        ([numpy_helper.from_array(x, "c"), numpy_helper.from_array(reps, "r")], [], {}),  # folded at import
        (
            [numpy_helper.from_array(reps, "r")],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 16, 3])],
            {"c": x},
        ),  # run at call time
    ):
        graph = helper.make_graph([node], "g", inputs, [out], inits)
        g = rnn_xp.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
        y = g(**feed)["y"]
        assert tuple(y.shape) == (2 * 2**20, 16 * 2**20, 0)
