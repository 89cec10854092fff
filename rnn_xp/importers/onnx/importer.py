"""ONNX models of RNN, GRU and LSTM nodes (and the operators exporters put around them) to rnn_xp.

The conversion of one recurrent node, per direction d (:func:`~rnn_xp.importers.onnx.graph.recurrent_weights`):

* ``W[d]`` (G*H, in) and ``R[d]`` (G*H, H) keep their shapes; their gate blocks are reordered from
  ONNX's (LSTM i, o, f, c; GRU z, r, h) to rnn_xp's (LSTM i, f, g, o; GRU r, z, n);
* ``B[d]`` (2*G*H,) = [Wb, Rb] splits into ``b_ih`` = Wb and ``b_hh`` = Rb, reordered the same way;
* ``P[d]`` (3H,) peepholes i, o, f become ``p`` in the order i, f, o;
* ``linear_before_reset`` is ``reset_after``; ``clip``, ``input_forget`` and the activations carry over.
  activation_alpha/beta go, in order, to the functions that take them (onnxruntime's reading);
  a function left without a value gets onnxruntime's: ONNX's default, except 0 for Affine and
  ScaledTanh (which have none) and for ThresholdedRelu (documented as 1.0).

Constant weights are converted once, here; weights computed at run time (graph inputs, outputs of
other nodes) on each call. Every other node is folded here when its inputs are constant, or kept as
one of the operators of :mod:`rnn_xp.importers.onnx.ops`. The ``onnx`` package is needed here only,
to parse the model.
"""

from __future__ import annotations

import os
import re
import stat

import numpy as np

from ... import _xp
from ..._validate import check_file
from ...activations import ONNX_NAMES, resolve, takes
from ...params import RNNParams
from ...registry import CELLS as _SPECS
from .graph import (
    CELLS,
    Constant,
    OnnxGraph,
    Op,
    RecurrentNode,
    RuntimeRecurrentNode,
    recurrent_config,
    recurrent_weights,
)
from .ops import ONNX_DTYPES, OPS, Space

__all__ = ["from_onnx"]

# the type each attribute of a recurrent node must have (AttributeProto type names)
RECURRENT_ATTRS = {
    "activation_alpha": "FLOATS",
    "activation_beta": "FLOATS",
    "activations": "STRINGS",
    "clip": "FLOAT",
    "direction": "STRING",
    "hidden_size": "INT",
    "layout": "INT",
    "linear_before_reset": "INT",
    "input_forget": "INT",
}
CONSTANT_ATTRS = {
    "value": "TENSOR",
    "value_float": "FLOAT",
    "value_floats": "FLOATS",
    "value_int": "INT",
    "value_ints": "INTS",
}
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
        raise ImportError(
            "rnn_xp.from_onnx needs the onnx package: pip install 'rnn_xp[onnx]' (or pip install onnx)"
        ) from None
    return onnx


def _load_model(obj):
    """(ModelProto, the folder its external data may come from or None) from a ModelProto, a path or bytes."""
    onnx = _onnx()
    if isinstance(obj, onnx.ModelProto):
        _check_names(obj, "the ModelProto given")
        return obj, None
    folder = None
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(check_file(obj, "from_onnx"))
        what = f"the file {path!r}"
        if os.path.getsize(path) > _MAX_PROTO_BYTES:  # FileNotFoundError as it is
            raise ValueError(
                f"{what} is larger than 2 GiB, the most a serialized ONNX model can be; a larger "
                "model keeps its weights in external data (onnx.save(..., save_as_external_data=True)"
                "), which rnn_xp reads from beside the model"
            )
        with open(path, "rb") as f:
            data = f.read()
        folder = os.path.dirname(os.path.abspath(path))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data, what = bytes(obj), f"the {len(obj)} bytes given"
    else:
        raise TypeError(
            f"from_onnx() takes an onnx.ModelProto, a file path or the model's bytes; got {type(obj).__name__}"
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and its relatives, whatever the backend
        raise ValueError(
            f"{what} is not an ONNX model ({type(e).__name__}: {e}). Fix: pass a .onnx file "
            "written by onnx.save or an exporter"
        ) from None
    if not model.HasField("graph"):
        raise ValueError(f"{what} is not an ONNX model: it holds no graph")
    _check_names(model, what)
    return model, folder


def _check_names(model, what):
    """protobuf hands back a string field that is not UTF-8 as bytes: refuse it in the names rnn_xp reads."""
    g = model.graph
    names = [g.name, *(o.domain for o in model.opset_import), *(v.name for v in (*g.input, *g.output, *g.initializer))]
    names += [s for t in g.initializer for e in t.external_data for s in (e.key, e.value)]
    for n in g.node:
        names += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    bad = [s for s in names if not isinstance(s, str)]
    if bad:
        raise ValueError(f"{what} is not a valid ONNX model: names {bad[:3]} are not UTF-8 text")


# --- tensors, inside the model or beside it ----------------------------------------------------------------
def _external_bytes(tensor, folder, where):
    """The bytes of a tensor kept in an external file: only a regular file inside the model's own folder,
    its range checked against the file's size and the tensor's shape before anything is read."""
    onnx = _onnx()
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if folder is None:
        raise ValueError(
            f"{where}: tensor {tensor.name!r} keeps its data in the external file {location!r}, which "
            "rnn_xp reads only from beside a model loaded from its path. Fix: rnn_xp.from_onnx("
            "'path/to/model.onnx') with the data file next to it, or onnx.load(path) first (it reads "
            "the data into the ModelProto)"
        )
    parts = re.split(r"[\\/]", location)
    if (
        not location
        or "\x00" in location
        or os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", location)
        or ".." in parts
    ):
        raise ValueError(
            f"{where}: tensor {tensor.name!r} names the external file {location!r}; rnn_xp reads "
            "only files inside the model's own folder (a relative path without '..')"
        )
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, *parts))
    if os.path.commonpath([real, root]) != root:
        raise ValueError(
            f"{where}: tensor {tensor.name!r}: the external file {location!r} leads out of the "
            f"model's folder (a link to {real!r}); rnn_xp reads only files inside it"
        )
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception:  # noqa: BLE001 - an unknown data type number
        dtype = None
    if dtype is None or dtype.kind not in "fiub" or any(d < 0 for d in tensor.dims):
        raise ValueError(
            f"{where}: external tensor {tensor.name!r} has data type {tensor.data_type} and dims "
            f"{list(tensor.dims)}; expected a numeric type and non-negative dims"
        )
    expected = int(np.prod([int(d) for d in tensor.dims], dtype=object)) * dtype.itemsize
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ValueError(
            f"{where}: external tensor {tensor.name!r} has offset {info.get('offset')!r}, length "
            f"{info.get('length')!r}; expected integers"
        ) from None
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ValueError(
            f"{where}: external tensor {tensor.name!r}: cannot open {location!r} beside the model ({e.strerror})"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(f"{where}: external tensor {tensor.name!r}: {location!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        length = st.st_size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > st.st_size:
            raise ValueError(
                f"{where}: external tensor {tensor.name!r} asks for bytes {offset} to {offset + length} "
                f"of {location!r}, which holds {st.st_size}"
            )
        if length != expected:
            raise ValueError(
                f"{where}: external tensor {tensor.name!r} has {length} bytes in {location!r}; its "
                f"shape {list(tensor.dims)} of {dtype} needs {expected}"
            )
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise ValueError(f"{where}: external tensor {tensor.name!r}: {location!r} ended early")
    return data


def _array(tensor, where, folder=None):
    """A NumPy array from a TensorProto stored inside the model or in an external file beside it."""
    onnx = _onnx()
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        inline = onnx.TensorProto()
        inline.CopyFrom(tensor)
        inline.raw_data = _external_bytes(tensor, folder, where)
        del inline.external_data[:]
        inline.data_location = onnx.TensorProto.DEFAULT
        tensor = inline
    try:
        return np.array(onnx.numpy_helper.to_array(tensor))
    except Exception as e:  # noqa: BLE001 - a malformed tensor fails in many ways inside onnx
        raise ValueError(f"{where}: tensor {tensor.name!r} is malformed ({type(e).__name__}: {e})") from None


# --- attributes ---------------------------------------------------------------------------------------------
def _attributes(node, schema, folder):
    """{name: Python value} for a node's attributes, each of the type ``schema`` gives; tensors become NumPy."""
    onnx = _onnx()
    where = f"node {node.name!r} ({node.op_type})"
    out = {}
    for a in node.attribute:
        expected = schema.get(a.name)
        if expected is None:
            raise ValueError(
                f"{where}: attribute {a.name!r} is not supported; the operator takes {sorted(schema) or 'none'}"
            )
        kind = (
            onnx.AttributeProto.AttributeType.Name(a.type)
            if a.type in onnx.AttributeProto.AttributeType.values()
            else str(a.type)
        )
        if a.ref_attr_name or kind != expected:
            raise ValueError(f"{where}: attribute {a.name!r} is {kind}; expected {expected}")
        if kind == "TENSOR":
            out[a.name] = _array(a.t, where, folder)
            continue
        v = onnx.helper.get_attribute_value(a)
        try:
            out[a.name] = (
                v.decode("utf-8")
                if kind == "STRING"
                else (
                    [x.decode("utf-8") for x in v]
                    if kind == "STRINGS"
                    else list(v)
                    if kind in ("INTS", "FLOATS")
                    else v
                )
            )
        except UnicodeDecodeError:
            raise ValueError(f"{where}: attribute {a.name!r} is not UTF-8") from None
    return out


def _constant(node, attrs):
    if len(node.output) != 1 or len(attrs) != 1:
        raise ValueError(
            f"Constant node {node.name!r}: needs one output and one of value, value_float(s), "
            f"value_int(s); got outputs {list(node.output)}, attributes {sorted(attrs)}"
        )
    ((key, v),) = attrs.items()
    return v if isinstance(v, np.ndarray) else np.asarray(v, np.float32 if "float" in key else np.int64)


def _json_attrs(node, attrs):
    """An operator's attributes as JSON, checked where the values must be known at import."""
    where = f"node {node.name!r} ({node.op_type})"
    out = dict(attrs)
    if "value" in out:  # ConstantOfShape's one-element tensor
        v = out["value"]
        if v.size != 1 or str(v.dtype) not in ONNX_DTYPES.values():
            raise ValueError(
                f"{where}: value must hold one element of a type in {sorted(ONNX_DTYPES.values())}; "
                f"got shape {v.shape} of {v.dtype}"
            )
        out["value"] = {"value": v.reshape(-1).tolist()[0], "dtype": str(v.dtype)}
    if node.op_type == "Cast" and out.get("to") not in ONNX_DTYPES:
        raise ValueError(
            f"{where}: to={out.get('to')} is not a type rnn_xp computes in; expected one of "
            f"{', '.join(f'{k} ({v})' for k, v in ONNX_DTYPES.items())}"
        )
    return out


# --- recurrent nodes ----------------------------------------------------------------------------------------
def _onnx_activations(node, cell, D, attrs):
    """Names, alphas and betas for make_config, in onnxruntime's reading."""
    defaults = _SPECS[cell].default_activations
    names = attrs.get("activations") or list(defaults) * D
    by_lower = {n.lower(): n for n in ONNX_NAMES}
    canonical = []
    for n in names:
        if n.lower() not in by_lower:
            raise ValueError(
                f"node {node.name!r} ({node.op_type}): activation {n!r} is not an ONNX activation; "
                f"expected one of {', '.join(ONNX_NAMES)}"
            )
        canonical.append(by_lower[n.lower()])
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    # the values are consumed in order by the functions that take them; those left without one get
    # onnxruntime's value: appended in the same order, the lists then hold one value per taker
    n_alpha = n_beta = 0
    for n in canonical if len(canonical) > len(defaults) else canonical * D:
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


def _check_constant_states(where, consts, names, D, H, layout):
    """A constant initial_h or initial_c must fit the node (a dynamo export of an LSTM with proj_size does not)."""
    for label, name in names:
        if not name or name not in consts:
            continue
        s = consts[name]
        axes = "(num_directions, batch, hidden_size)" if layout == 0 else "(batch, num_directions, hidden_size)"
        d_axis = 0 if layout == 0 else 1
        if s.ndim != 3 or s.shape[d_axis] != D or (H and s.shape[2] != H):
            raise ValueError(
                f"{where}: {label} ({name!r}) has shape {tuple(s.shape)}; expected {axes} with "
                f"num_directions={D}, hidden_size={H or '?'}. An LSTM exported with proj_size is "
                "such a node: rnn_xp.from_torch reads that module from its state_dict instead"
            )


def _recurrent(node, attrs, consts):
    cell = CELLS[node.op_type]
    where = f"node {node.name!r} ({node.op_type})"
    n_inputs = 8 if cell == "lstm" else 6
    if len(node.input) < 3 or len(node.input) > n_inputs:
        raise ValueError(f"{where}: takes 3 to {n_inputs} inputs; got {len(node.input)}")
    X, W, R, B, seq, h0, c0, P = (list(node.input) + [""] * 8)[:8]
    if not (X and W and R):
        raise ValueError(f"{where}: X, W and R are required; got inputs {list(node.input)}")
    outputs = (list(node.output) + ["", "", ""])[:3]
    if len(node.output) > (3 if cell == "lstm" else 2):
        raise ValueError(f"{where}: too many outputs {list(node.output)}")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: direction={direction!r}; expected forward, reverse or bidirectional")
    D = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout={layout}; expected 0 or 1")
    hidden = int(attrs.get("hidden_size", 0))
    if "hidden_size" in attrs and hidden < 1:
        raise ValueError(f"{where}: hidden_size={hidden}; expected a positive size")
    names, alphas, betas = _onnx_activations(node, cell, D, attrs)
    spec = {
        "cell": cell,
        "direction": direction,
        "hidden_size": hidden,
        "layout": layout,
        "activations": names,
        "activation_alpha": alphas,
        "activation_beta": betas,
        "clip": attrs.get("clip"),
        "linear_before_reset": int(attrs.get("linear_before_reset", 0)),
        "input_forget": int(attrs.get("input_forget", 0)),
    }
    states = [("initial_h", h0), ("initial_c", c0)]
    if all(not n or n in consts for n in (W, R, B, P)):  # the usual export: convert once, now
        w, r, b, p = (consts[n] if n else None for n in (W, R, B, P))
        try:
            F, H, arrays = recurrent_weights(cell, direction, hidden, w, r, b, p)
            _check_constant_states(where, consts, states, D, H, layout)
            cfg = recurrent_config(spec, F, H, _xp.dtype_name(w.dtype), b is not None, p is not None)
            params = RNNParams.from_named_arrays(cfg, {n: np.asarray(a) for n, a in arrays.items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{e}" if str(e).startswith(where) else f"{where}: {e}") from None
        return RecurrentNode(params, (X, seq, h0, c0 if cell == "lstm" else ""), outputs, layout, node.name)
    # W, R, B or P computed at run time (a graph input, another node's output): checked and converted per call
    try:
        _check_constant_states(where, consts, states, D, hidden, layout)
        recurrent_config(spec, 1, hidden or 1, "float32", bool(B), bool(P))  # the attributes, checked now
    except (TypeError, ValueError) as e:
        raise ValueError(f"{e}" if str(e).startswith(where) else f"{where}: {e}") from None
    return RuntimeRecurrentNode(spec, (X, W, R, B, seq, h0, c0, P), outputs, node.name)


# --- the graph ----------------------------------------------------------------------------------------------
def _fold_bound(op_type, args, attrs=None):
    """The number of elements folding an operator on these constant inputs makes, known before it runs."""
    return OPS[op_type].size(args, attrs or {})


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


def _operator(node, attrs, opset):
    """An Op for a node of OPS, its arity, attributes and opset checked."""
    where = f"node {node.name!r} ({node.op_type})"
    spec = OPS[node.op_type]
    if opset < spec.since:
        raise ValueError(f"{where}: {node.op_type} exists from opset {spec.since}; the model imports opset {opset}")
    (lo, hi), (out_lo, out_hi) = spec.inputs, spec.outputs
    if not (lo <= len(node.input) <= (hi or len(node.input)) and out_lo <= len(node.output) <= (out_hi or 1 << 30)):
        raise ValueError(
            f"{where}: takes {lo} to {hi or 'any number of'} inputs and {out_lo} to "
            f"{out_hi or 'any number of'} outputs; got {len(node.input)} and {len(node.output)}"
        )
    if any(not n for n in node.input[:lo]) or not node.output[0]:
        raise ValueError(
            f"{where}: its first {lo} inputs and first output are required; got inputs "
            f"{list(node.input)}, outputs {list(node.output)}"
        )
    return Op(node.op_type, node.input, node.output, _json_attrs(node, attrs), node.name, opset)


def from_onnx(obj) -> OnnxGraph:
    """A model that runs an ONNX graph of RNN, GRU and LSTM nodes on any Array-API namespace.

    ``obj`` is an ``onnx.ModelProto``, the path of a .onnx file or its bytes. The graph may hold
    RNN, GRU and LSTM nodes (opset 7 on, every attribute and input of the operators) and the
    operators exporters put around them (``rnn_xp.importers.onnx.OPS`` lists them: what
    ``torch.onnx.export`` writes, legacy or dynamo, for recurrent models and their usual heads).
    Weights are constants (converted once, here) or computed when the graph runs (graph inputs,
    as in ONNX's node tests: checked and converted on each call). External data (the weights in a
    file beside the model, as the dynamo exporter writes them) is read when ``obj`` is a path, from
    regular files inside the model's folder only. The result is called with the graph's inputs by
    name, ``m(X=x, sequence_lens=lengths)``, and returns a dict of the graph's outputs by name, in
    ONNX's shapes. A length-0 sequence gives Y = 0 and Y_h = Y_c = 0, as onnxruntime does (even
    with an initial state). The weights are NumPy arrays; move them with :func:`rnn_xp.to_device`.
    """
    model, folder = _load_model(obj)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx", 0)
    if opset < MIN_OPSET:
        raise ValueError(
            f"the model imports ONNX opset {opsets.get('ai.onnx')}; rnn_xp reads opset {MIN_OPSET} "
            "and later. Fix: onnx.version_converter.convert_version(model, 14)"
        )
    if any(not n.name for n in model.graph.node):  # name them for errors and summary, on a copy
        model = _copy_named(model)
    graph = model.graph
    consts = {t.name: _array(t, "initializer", folder) for t in graph.initializer}
    # folding constants may make at most this many elements in all: a few bytes of ConstantOfShape, Expand,
    # Gather or a chain of Concat nodes could otherwise ask for terabytes
    budget = limit = _FOLD_ELEMENTS + 4 * sum(a.size for a in consts.values())
    inputs = [v.name for v in graph.input if v.name not in consts]  # an initializer is a default, not an input
    nodes = []
    for node in graph.node:
        where = f"node {node.name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            domain = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            raise ValueError(
                f"{where}{domain}: the operator is not supported; rnn_xp runs graphs of {', '.join(SUPPORTED)}"
            )
        if node.op_type == "Constant":
            consts[node.output[0] if node.output else ""] = _constant(node, _attributes(node, CONSTANT_ATTRS, folder))
            continue
        if node.op_type in CELLS:
            nodes.append(_recurrent(node, _attributes(node, RECURRENT_ATTRS, folder), consts))
            continue
        op = _operator(node, _attributes(node, OPS[node.op_type].attrs, folder), opset)
        if any(n and n not in consts for n in node.input):
            nodes.append(op)
            continue
        args = [consts[n] if n else None for n in node.input]  # fold it now, on the host
        try:
            budget -= _fold_bound(node.op_type, args, op.attrs)
        except Exception as e:  # noqa: BLE001 - a malformed shape input
            raise ValueError(f"{where}: cannot be evaluated on its constant inputs ({e})") from None
        if budget < 0:
            raise ValueError(
                f"{where}: folding the graph's constants would make more than {limit:,} "
                "elements; the model is malformed or hostile"
            )
        try:
            values = op.run(args, _HOST)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{e} (evaluating constants at import)") from None
        for name, value in zip(node.output, values, strict=False):
            if name:
                consts[name] = np.asarray(value)
    outputs = [v.name for v in graph.output]
    read = {n for node in nodes for n in node.inputs} | set(outputs)
    constants = [Constant(n, a, n) for n, a in consts.items() if n in read and n not in inputs]
    try:
        return OnnxGraph(constants + nodes, inputs, outputs, _declared_shapes(model), graph.name or "onnx")
    except ValueError as e:
        raise ValueError(f"the ONNX graph is malformed: {e}") from None
