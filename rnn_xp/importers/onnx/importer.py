"""ONNX graphs of RNN, GRU and LSTM nodes (and the shape operators exporters wrap them in) to rnn_xp.

The conversion of one recurrent node, per direction d:

* ``W[d]`` (G*H, in) and ``R[d]`` (G*H, H) keep their shapes; their gate blocks are reordered from
  ONNX's (LSTM i, o, f, c; GRU z, r, h) to rnn_xp's (LSTM i, f, g, o; GRU r, z, n);
* ``B[d]`` (2*G*H,) = [Wb, Rb] splits into ``b_ih`` = Wb and ``b_hh`` = Rb, reordered the same way;
* ``P[d]`` (3H,) peepholes i, o, f become ``p`` in the order i, f, o;
* ``linear_before_reset`` is ``reset_after``; ``clip``, ``input_forget`` and the activations carry over.
  activation_alpha/beta go, in order, to the functions that take them (onnxruntime's reading);
  a function left without a value gets onnxruntime's: ONNX's default, except 0 for Affine and
  ScaledTanh (which have none) and for ThresholdedRelu (documented as 1.0).

Every other node is folded at import when its inputs are constant, or kept as one of the shape
operators of :mod:`rnn_xp.importers.onnx.graph`. The ``onnx`` package is needed here only, to parse the model.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ... import _xp
from ..._validate import check_file
from ...activations import ONNX_NAMES, resolve, takes
from ...params import RNNParams, make_config
from .graph import OPS, Constant, OnnxGraph, Op, RecurrentNode, Space, _ints

__all__ = ["from_onnx"]

CELLS = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# rnn_xp gate k is ONNX gate ORDER[cell][k]
ORDER = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 2, 3, 1]}
PEEPHOLE_ORDER = [0, 2, 1]  # rnn_xp p = (i, f, o) from ONNX P = (i, o, f)
DEFAULT_ACTIVATIONS = {"rnn": ["Tanh"], "gru": ["Sigmoid", "Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"]}
RECURRENT_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size",
                   "layout", "linear_before_reset", "input_forget"}
# onnxruntime's alpha and beta where the node gives none, when they differ from ONNX's documented defaults
# (Affine and ScaledTanh have none documented; ThresholdedRelu's is documented as 1.0)
ORT_DEFAULTS = {"Affine": (0.0, 0.0), "ScaledTanh": (0.0, 0.0), "ThresholdedRelu": (0.0, None)}
SUPPORTED = sorted([*CELLS, *OPS, "Constant"])
MIN_OPSET = 7
_FOLD_ELEMENTS = 1 << 24  # what folding constants may make beyond 4x the model's own weights
_MAX_PROTO_BYTES = 2 << 30  # protobuf's limit: a larger file is no ONNX model, and is not read into memory
_HOST = Space(_xp.as_namespace(np), "cpu", None)  # where constants are folded


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("rnn_xp.from_onnx needs the onnx package: pip install 'rnn_xp[onnx]' "
                          "(or pip install onnx)") from None
    return onnx


def _load_model(obj):
    """A ModelProto from a ModelProto, a file path or the serialized bytes."""
    onnx = _onnx()
    if isinstance(obj, onnx.ModelProto):
        _check_names(obj, "the ModelProto given")
        return obj
    if isinstance(obj, (str, os.PathLike)):
        what = f"the file {os.fspath(check_file(obj, 'from_onnx'))!r}"
        if os.path.getsize(obj) > _MAX_PROTO_BYTES:  # FileNotFoundError as it is
            raise ValueError(f"{what} is larger than 2 GiB, the most a serialized ONNX model can be; a larger "
                             "model keeps its weights in external data, which rnn_xp does not read")
        with open(obj, "rb") as f:
            data = f.read()
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data, what = bytes(obj), f"the {len(obj)} bytes given"
    else:
        raise TypeError(f"from_onnx() takes an onnx.ModelProto, a file path or the model's bytes; got "
                        f"{type(obj).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and its relatives, whatever the backend
        raise ValueError(f"{what} is not an ONNX model ({type(e).__name__}: {e}). Fix: pass a .onnx file "
                         "written by onnx.save or an exporter") from None
    if not model.HasField("graph"):
        raise ValueError(f"{what} is not an ONNX model: it holds no graph")
    _check_names(model, what)
    return model


def _check_names(model, what):
    """protobuf hands back a string field that is not UTF-8 as bytes: refuse it in the names rnn_xp reads."""
    g = model.graph
    names = [g.name, *(o.domain for o in model.opset_import), *(v.name for v in (*g.input, *g.output, *g.initializer))]
    for n in g.node:
        names += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    bad = [s for s in names if not isinstance(s, str)]
    if bad:
        raise ValueError(f"{what} is not a valid ONNX model: names {bad[:3]} are not UTF-8 text")


def _array(tensor, where):
    """A NumPy array from a TensorProto stored inside the model (external data is refused)."""
    onnx = _onnx()
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(f"{where}: tensor {tensor.name!r} keeps its data in an external file; rnn_xp reads "
                         "self-contained models only. Fix: onnx.load(path) then onnx.save(model, path, "
                         "save_as_external_data=False)")
    try:
        return np.array(onnx.numpy_helper.to_array(tensor))
    except Exception as e:  # noqa: BLE001 - a malformed tensor fails in many ways inside onnx
        raise ValueError(f"{where}: tensor {tensor.name!r} is malformed ({type(e).__name__}: {e})") from None


# the type each attribute rnn_xp reads must have (AttributeProto type names)
ATTRIBUTE_TYPES = {
    "activation_alpha": "FLOATS", "activation_beta": "FLOATS", "activations": "STRINGS", "clip": "FLOAT",
    "direction": "STRING", "hidden_size": "INT", "layout": "INT", "linear_before_reset": "INT", "input_forget": "INT",
    "perm": "INTS", "axes": "INTS", "allowzero": "INT", "axis": "INT", "starts": "INTS", "ends": "INTS",
    "start": "INT", "end": "INT", "value": "TENSOR", "value_float": "FLOAT", "value_floats": "FLOATS",
    "value_int": "INT", "value_ints": "INTS",
}


def _attributes(node):
    """{name: Python value} for a node's attributes, each of the type rnn_xp expects; tensors become NumPy."""
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        expected = ATTRIBUTE_TYPES.get(a.name)
        kind = onnx.AttributeProto.AttributeType.Name(a.type) if a.type in onnx.AttributeProto.AttributeType.values() \
            else str(a.type)
        if expected is None:
            out[a.name] = None  # an attribute rnn_xp does not read: the operator's check names it
        elif kind != expected:
            raise ValueError(f"node {node.name!r} ({node.op_type}): attribute {a.name!r} is {kind}; "
                             f"expected {expected}")
        elif kind == "TENSOR":
            out[a.name] = _array(a.t, f"node {node.name!r}")
        else:
            v = onnx.helper.get_attribute_value(a)
            try:
                out[a.name] = v.decode("utf-8") if kind == "STRING" else (
                    [x.decode("utf-8") for x in v] if kind == "STRINGS" else v)
            except UnicodeDecodeError:
                raise ValueError(f"node {node.name!r} ({node.op_type}): attribute {a.name!r} is not UTF-8") from None
    return out


def _constant(node, attrs):
    if len(node.output) != 1 or set(attrs) - {"value", "value_float", "value_floats", "value_int", "value_ints"}:
        raise ValueError(f"Constant node {node.name!r}: needs one output and one of value, value_float(s), "
                         f"value_int(s); got outputs {list(node.output)}, attributes {sorted(attrs)}")
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            v = attrs[key]
            return v if isinstance(v, np.ndarray) else np.asarray(v, np.float32 if "float" in key else np.int64)
    raise ValueError(f"Constant node {node.name!r}: only value, value_float(s) and value_int(s) are supported; "
                     f"got {sorted(attrs)}")


def _json_attrs(node, attrs):
    """A shape operator's attributes, checked, as JSON."""
    allowed = OPS[node.op_type][2]
    unknown = set(attrs) - allowed
    if unknown:
        raise ValueError(f"node {node.name!r} ({node.op_type}): attributes {sorted(unknown)} are not supported; "
                         f"expected a subset of {sorted(allowed)}")
    out = dict(attrs)
    if "value" in out:  # ConstantOfShape's one-element tensor
        v = out["value"]
        if v.size != 1:
            raise ValueError(f"node {node.name!r} (ConstantOfShape): value must hold one element; got {v.shape}")
        out["value"] = {"value": v.reshape(-1).tolist()[0], "dtype": str(v.dtype)}
    return out


def _onnx_activations(node, cell, D, attrs):
    """Names, alphas and betas for make_config, in onnxruntime's reading."""
    names = attrs.get("activations") or DEFAULT_ACTIVATIONS[cell] * D
    by_lower = {n.lower(): n for n in ONNX_NAMES}
    canonical = []
    for n in names:
        if n.lower() not in by_lower:
            raise ValueError(f"node {node.name!r} ({node.op_type}): activation {n!r} is not an ONNX activation; "
                             f"expected one of {', '.join(ONNX_NAMES)}")
        canonical.append(by_lower[n.lower()])
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    # the values are consumed in order by the functions that take them; those left without one get
    # onnxruntime's value: appended in the same order, the lists then hold one value per taker
    n_alpha = n_beta = 0
    for n in canonical if len(canonical) > len(DEFAULT_ACTIVATIONS[cell]) else canonical * D:
        onnx_default = resolve(n)
        alpha, beta = ORT_DEFAULTS.get(n, (onnx_default.alpha, onnx_default.beta))
        takes_a, takes_b = takes(n)
        n_alpha += takes_a
        n_beta += takes_b
        if takes_a and len(alphas) < n_alpha:
            alphas.append(alpha)
        if takes_b and len(betas) < n_beta:
            betas.append(beta)
    return canonical, alphas, betas


def _recurrent(node, attrs, consts):
    cell = CELLS[node.op_type]
    where = f"node {node.name!r} ({node.op_type})"
    unknown = set(attrs) - RECURRENT_ATTRS
    if unknown:
        raise ValueError(f"{where}: attributes {sorted(unknown)} are not supported; expected a subset of "
                         f"{sorted(RECURRENT_ATTRS)}")
    n_inputs = 8 if cell == "lstm" else 6
    if len(node.input) < 3 or len(node.input) > n_inputs:
        raise ValueError(f"{where}: takes 3 to {n_inputs} inputs; got {len(node.input)}")
    X, W, R, B, seq, h0, c0, P = (list(node.input) + [""] * 8)[:8]

    def const(name, label):
        if not name:
            return None
        if name not in consts:
            raise ValueError(f"{where}: {label} ({name!r}) must be a constant (an initializer or Constant node); "
                             "rnn_xp converts the weights once, at import")
        return consts[name]

    w, r, b, p = const(W, "W"), const(R, "R"), const(B, "B"), const(P, "P")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: direction={direction!r}; expected forward, reverse or bidirectional")
    D, G = (2 if direction == "bidirectional" else 1), GATES[cell]
    if w.ndim != 3 or r.ndim != 3:
        raise ValueError(f"{where}: W and R must be 3-D (directions, gates*hidden, in); got {w.shape}, {r.shape}")
    H = int(attrs.get("hidden_size", r.shape[-1]))
    F = w.shape[-1]
    expected = {"W": (w, (D, G * H, F)), "R": (r, (D, G * H, H)), "B": (b, (D, 2 * G * H)), "P": (p, (D, 3 * H))}
    for label, (a, shape) in expected.items():
        if a is not None and tuple(a.shape) != shape:
            raise ValueError(f"{where}: {label} has shape {tuple(a.shape)}; expected {shape} for direction="
                             f"{direction}, hidden_size={H}")
        if a is not None and a.dtype.kind != "f":
            raise ValueError(f"{where}: {label} has dtype {a.dtype}; expected floating point")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout={layout}; expected 0 or 1")
    names, alphas, betas = _onnx_activations(node, cell, D, attrs)
    try:
        cfg = make_config(cell, F, H, direction=direction, bias=b is not None, activations=names,
                          activation_alpha=alphas, activation_beta=betas,
                          reset_after=bool(attrs.get("linear_before_reset", 0)), clip=attrs.get("clip"),
                          peepholes=p is not None, input_forget=bool(attrs.get("input_forget", 0)),
                          dtype=str(w.dtype))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None

    def gates(a):  # (G*H, ...) in ONNX's gate order -> rnn_xp's
        return np.concatenate([a[k * H:(k + 1) * H] for k in ORDER[cell]], axis=0)

    arrays = {}
    for d in range(D):
        key = f"l0.{'rev' if d else 'fwd'}."
        arrays[key + "w_ih"] = gates(w[d])
        arrays[key + "w_hh"] = gates(r[d])
        if b is not None:
            arrays[key + "b_ih"] = gates(b[d, :G * H])
            arrays[key + "b_hh"] = gates(b[d, G * H:])
        if p is not None:
            arrays[key + "p"] = np.concatenate([p[d, k * H:(k + 1) * H] for k in PEEPHOLE_ORDER])
    arrays = {n: a.astype(w.dtype) for n, a in arrays.items()}
    outputs = (list(node.output) + ["", "", ""])[:3]
    if len(node.output) > 3 or (cell != "lstm" and outputs[2]):
        raise ValueError(f"{where}: too many outputs {list(node.output)}")
    return RecurrentNode(RNNParams.from_named_arrays(cfg, arrays), (X, seq, h0, c0 if cell == "lstm" else ""),
                         outputs, layout, node.name)


def _fold_bound(op_type, args):
    """At least the number of elements folding an operator on these constant inputs makes (before it runs)."""
    if op_type == "ConstantOfShape":
        return math.prod(max(n, 0) for n in _ints(args[0]))
    sizes = [a.size for a in args if a is not None]
    return math.prod(sizes) if op_type == "Gather" else sum(sizes)


def _declared_shapes(model):
    """{value name: shape} from the graph, with ONNX's shape inference filling in what it can (for summary)."""
    onnx = _onnx()
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - inference is a nicety; a graph it cannot follow keeps its own shapes
        graph = model.graph
    out = {}
    for v in [*graph.input, *graph.output, *graph.value_info]:
        t = v.type.tensor_type
        if v.type.HasField("tensor_type") and t.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


def _copy_named(model):
    out = _onnx().ModelProto()
    out.CopyFrom(model)
    for i, node in enumerate(out.graph.node):
        node.name = node.name or f"{node.op_type.lower()}_{i}"
    return out


def from_onnx(obj) -> OnnxGraph:
    """A model that runs an ONNX graph of RNN, GRU and LSTM nodes on any Array-API namespace.

    ``obj`` is an ``onnx.ModelProto``, the path of a .onnx file or its bytes. The graph may hold
    RNN, GRU and LSTM nodes (opset 7 on, every attribute and input of the operators) and the shape
    operators exporters wrap them in: Transpose, Squeeze, Unsqueeze, Reshape, Concat, Slice, Gather,
    Shape, ConstantOfShape, Constant and Identity (``torch.onnx.export`` of a stacked bidirectional
    nn.LSTM imports). The weights must be constants. The result is called with the graph's inputs
    by name, ``m(X=x, sequence_lens=lengths)``, and returns a dict of the graph's outputs by name,
    in ONNX's shapes. A length-0 sequence gives Y = 0 and Y_h = Y_c = 0, as onnxruntime does (even
    with an initial state). The weights are NumPy arrays; move them with :func:`rnn_xp.to_device`.
    """
    model = _load_model(obj)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_OPSET:
        raise ValueError(f"the model imports ONNX opset {opsets.get('ai.onnx')}; rnn_xp reads opset {MIN_OPSET} "
                         "and later. Fix: onnx.version_converter.convert_version(model, 14)")
    if any(not n.name for n in model.graph.node):  # name them for errors and summary, on a copy
        model = _copy_named(model)
    graph = model.graph
    consts = {t.name: _array(t, "initializer") for t in graph.initializer}
    # folding constants may make at most this many elements in all: a few bytes of ConstantOfShape, Gather or
    # a chain of Concat nodes could otherwise ask for terabytes
    budget = limit = _FOLD_ELEMENTS + 4 * sum(a.size for a in consts.values())
    inputs = [v.name for v in graph.input if v.name not in consts]  # an initializer is a default, not an input
    nodes = []
    for node in graph.node:
        where = f"node {node.name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            domain = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            raise ValueError(f"{where}{domain}: the operator is not supported; rnn_xp runs graphs of "
                             f"{', '.join(SUPPORTED)}")
        attrs = _attributes(node)
        if node.op_type == "Constant":
            consts[node.output[0]] = _constant(node, attrs)
        elif node.op_type in CELLS:
            nodes.append(_recurrent(node, attrs, consts))
        else:
            lo, hi = OPS[node.op_type][1]
            if len(node.input) < lo or (hi is not None and len(node.input) > hi) or len(node.output) != 1:
                raise ValueError(f"{where}: takes {lo} to {hi or 'any number of'} inputs and one output; got "
                                 f"{len(node.input)} and {len(node.output)}")
            op = Op(node.op_type, node.input, node.output, _json_attrs(node, attrs), node.name)
            if all(not n or n in consts for n in node.input):  # fold it now, on the host
                args = [consts[n] if n else None for n in node.input]
                try:
                    budget -= _fold_bound(node.op_type, args)
                except Exception as e:  # noqa: BLE001 - a malformed shape input
                    raise ValueError(f"{where}: cannot be evaluated on its constant inputs ({e})") from None
                if budget < 0:
                    raise ValueError(f"{where}: folding the graph's constants would make more than {limit:,} "
                                     "elements; the model is malformed or hostile")
                try:
                    (value,) = op.run(args, _HOST)
                except Exception as e:  # noqa: BLE001 - bad shapes or indices surface in many types
                    raise ValueError(f"{where}: cannot be evaluated on its constant inputs ({e})") from None
                consts[node.output[0]] = np.asarray(value)
            else:
                nodes.append(op)
    if not any(isinstance(n, RecurrentNode) for n in nodes):
        raise ValueError("the ONNX graph holds no RNN, GRU or LSTM node; rnn_xp.from_onnx imports recurrent graphs")
    outputs = [v.name for v in graph.output]
    read = {n for node in nodes for n in node.inputs} | set(outputs)
    constants = [Constant(n, a, n) for n, a in consts.items() if n in read and n not in inputs]
    try:
        return OnnxGraph(constants + nodes, inputs, outputs, _declared_shapes(model), graph.name or "onnx")
    except ValueError as e:
        raise ValueError(f"the ONNX graph is malformed: {e}") from None
