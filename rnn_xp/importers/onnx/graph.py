"""The graph that :func:`rnn_xp.from_onnx` returns: recurrent nodes and the shape operators around them.

Running it needs neither onnx nor onnxruntime, and works on any Array-API namespace. The importer
has already folded every constant, turned each RNN/GRU/LSTM node into a :class:`RecurrentNode`
holding :class:`~rnn_xp.RNNParams`, and kept the rest as :class:`Op` nodes of the few shape
operators below, or :class:`Constant` nodes.

Values are of two kinds: data (floating arrays in the model's namespace, on its device) and shape
metadata (small integer arrays on the host, as ``Shape`` makes them). Every operator is written once
against the Array API and serves both, since NumPy is an Array-API namespace too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ... import _xp
from ..._validate import check_state_array, check_x
from ...engine import forward
from ...layers.base import from_config, params_from_config, register, sub_arrays
from ...params import RNNParams

__all__ = ["OnnxGraph", "RecurrentNode", "Op", "Constant", "OPS"]


class Space(NamedTuple):
    """Where data made inside the graph lives (ConstantOfShape): the model's namespace, device, dtype.

    ``dtype`` None keeps the dtype the graph asks for (constant folding at import).
    """

    xp: object
    device: object
    dtype: str | None


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(_xp.to_host(a)).reshape(-1)]


def _axes_arg(args, attrs, position):
    """Axes from the attribute (older opsets) or from the input at ``position`` (opset 13 on)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(args) > position and args[position] is not None:
        return _ints(args[position])
    return None


def _transpose(args, attrs, space):
    (x,) = args[:1]
    perm = attrs.get("perm") or list(range(x.ndim))[::-1]
    return [_xp.array_namespace(x).permute_dims(x, tuple(perm))]


def _squeeze(args, attrs, space):
    x = args[0]
    axes = _axes_arg(args, attrs, 1)
    axes = [i for i, n in enumerate(x.shape) if n == 1] if axes is None else [a % x.ndim for a in axes]
    return [_xp.array_namespace(x).squeeze(x, axis=tuple(axes))]


def _unsqueeze(args, attrs, space):
    x = args[0]
    axes = _axes_arg(args, attrs, 1)
    rank = x.ndim + len(axes)
    xp = _xp.array_namespace(x)
    for a in sorted(a % rank for a in axes):  # ascending, so each axis lands where the output has it
        x = xp.expand_dims(x, axis=a)
    return [x]


def _reshape(args, attrs, space):
    x, shape = args[0], _ints(args[1])
    if not attrs.get("allowzero", 0):  # 0 copies the input's size on that axis
        shape = [x.shape[i] if n == 0 else n for i, n in enumerate(shape)]
    return [_xp.array_namespace(x).reshape(x, tuple(shape))]


def _concat(args, attrs, space):
    parts = [a for a in args if a is not None]
    return [_xp.array_namespace(parts[0]).concat(parts, axis=attrs["axis"])]


def _slice(args, attrs, space):
    x = args[0]
    if "starts" in attrs:  # opset < 10: attributes
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else None
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, a, k in zip(starts, ends, axes, steps, strict=True):
        n = x.shape[a % x.ndim]
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        # ONNX clamps to the axis; with a negative step the end may fall just before 0 (-1 here, None in Python)
        if k > 0:
            index[a % x.ndim] = slice(min(max(s, 0), n), min(max(e, 0), n), k)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            index[a % x.ndim] = slice(s, None if e < 0 else e, k)
    return [x[tuple(index)]]


def _gather(args, attrs, space):
    x, idx = args[0], np.asarray(_xp.to_host(args[1])).astype(np.int64)
    axis = attrs.get("axis", 0) % x.ndim
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    xp = _xp.array_namespace(x)
    flat = xp.asarray(idx.reshape(-1), device=_xp.device(x))
    y = xp.take(x, flat, axis=axis)
    return [xp.reshape(y, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))]


def _shape(args, attrs, space):
    x = args[0]
    return [np.asarray(x.shape[attrs.get("start", 0):attrs.get("end", x.ndim)], dtype=np.int64)]


def _constant_of_shape(args, attrs, space):
    shape = tuple(_ints(args[0]))
    value = attrs.get("value", {"value": 0.0, "dtype": "float32"})
    if np.dtype(value["dtype"]).kind == "f":  # data: the model's namespace, device and dtype
        dtype = _xp.resolve_dtype(space.xp, space.dtype or value["dtype"])
        return [space.xp.full(shape, value["value"], dtype=dtype, device=space.device)]
    return [np.full(shape, value["value"], dtype=value["dtype"])]


def _identity(args, attrs, space):
    return [args[0]]


# op type -> (run(args, attrs, space) -> outputs, (fewest, most) inputs, attributes it takes)
OPS = {
    "Transpose": (_transpose, (1, 1), {"perm"}),
    "Squeeze": (_squeeze, (1, 2), {"axes"}),
    "Unsqueeze": (_unsqueeze, (1, 2), {"axes"}),
    "Reshape": (_reshape, (2, 2), {"allowzero"}),
    "Concat": (_concat, (1, None), {"axis"}),
    "Slice": (_slice, (1, 5), {"starts", "ends", "axes"}),
    "Gather": (_gather, (2, 2), {"axis"}),
    "Shape": (_shape, (1, 1), {"start", "end"}),
    "ConstantOfShape": (_constant_of_shape, (1, 1), {"value"}),
    "Identity": (_identity, (1, 1), set()),
}


@register
@dataclass(frozen=True, eq=False)
class Op:
    """One shape operator of the graph, with JSON attributes."""

    op_type: str
    inputs: tuple
    outputs: tuple
    attrs: dict
    name: str = ""
    kind = "node"

    def __post_init__(self):
        if self.op_type not in OPS:
            raise ValueError(f"operator {self.op_type!r} is not supported; expected one of {sorted(OPS)}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def type_name(self):
        return self.op_type

    def run(self, args, space):
        return OPS[self.op_type][0](args, self.attrs, space)

    def named_arrays(self):
        return []

    def map_arrays(self, fn):
        return self

    def config(self):
        return {"type": "Op", "name": self.name, "op_type": self.op_type, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": self.attrs}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(config["op_type"], config["inputs"], config["outputs"], dict(config["attrs"]), config["name"])


@register
@dataclass(frozen=True, eq=False)
class Constant:
    """A constant the graph reads at run time: floating data (an array of the model) or host integers."""

    output: str
    value: object
    name: str = ""
    kind = "node"
    type_name = "Constant"

    @property
    def inputs(self):
        return ()

    @property
    def outputs(self):
        return (self.output,)

    @property
    def floating(self):
        return not isinstance(self.value, np.ndarray) or self.value.dtype.kind == "f"

    def run(self, args, space):
        return [self.value]

    def named_arrays(self):
        return [("value", self.value)] if self.floating else []

    def map_arrays(self, fn):
        return replace(self, value=fn(self.value)) if self.floating else self

    def config(self):
        out = {"type": "Constant", "name": self.name, "output": self.output}
        if not self.floating:  # integers and booleans travel in the JSON, not as arrays
            out.update(values=self.value.reshape(-1).tolist(), shape=list(self.value.shape),
                       dtype=str(self.value.dtype))
        return out

    @classmethod
    def from_config(cls, config, arrays):
        if "values" in config:
            dtype = np.dtype(config["dtype"])
            if dtype.kind not in "iub":
                raise ValueError(f"a JSON constant must hold integers or booleans; got {dtype}")
            value = np.asarray(config["values"], dtype=dtype).reshape(config["shape"])
        else:
            value = arrays["value"]
        return cls(config["output"], value, config["name"])


@register
@dataclass(frozen=True, eq=False)
class RecurrentNode:
    """An ONNX RNN, GRU or LSTM node as rnn_xp params.

    ``inputs`` are the names of X, sequence_lens, initial_h, initial_c and ``outputs`` those of Y,
    Y_h, Y_c ("" when absent). ``layout`` 0: X (T, B, in), Y (T, D, B, H), Y_h (D, B, H);
    1: X (B, T, in), Y (B, T, D, H), Y_h (B, D, H).
    """

    params: RNNParams
    inputs: tuple
    outputs: tuple
    layout: int = 0
    name: str = ""
    kind = "node"

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if len(self.inputs) != 4 or len(self.outputs) != 3 or self.layout not in (0, 1):
            raise ValueError(f"a RecurrentNode takes 4 input names, 3 output names and layout 0 or 1; got "
                             f"{self.inputs}, {self.outputs}, {self.layout}")

    @property
    def type_name(self):
        return {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[self.params.config.cell]

    def run(self, args, space):
        x, lengths, h0, c0 = args
        cfg = self.params.config
        xp, x = check_x(x, self.params, time_major=self.layout == 0)
        batch_axis = 1 if self.layout == 0 else 0
        # the states in ONNX's layout, checked before they are transposed
        D, B, H = cfg.num_directions, x.shape[batch_axis], cfg.hidden_size
        shape, axes = ((D, B, H), "(num_directions, batch, hidden_size)") if self.layout == 0 else \
            ((B, D, H), "(batch, num_directions, hidden_size)")
        h0, c0 = (None if s is None else check_state_array(f"{self.name}: initial_{n}", s, shape, x, xp, axes)
                  for n, s in (("h", h0), ("c", c0)))
        if self.layout == 1:  # states come (B, D, H); rnn_xp takes (D, B, H)
            h0, c0 = (None if s is None else xp.permute_dims(s, (1, 0, 2)) for s in (h0, c0))
        state = h0
        if cfg.cell == "lstm" and (h0 is not None or c0 is not None):
            B, dev = x.shape[batch_axis], _xp.device(x)
            D, H = cfg.num_directions, cfg.hidden_size
            state = (xp.zeros((D, B, H), dtype=x.dtype, device=dev) if h0 is None else h0,
                     xp.zeros((D, B, H), dtype=x.dtype, device=dev) if c0 is None else c0)
        y, state = forward(x, self.params, state, lengths=lengths, time_major=self.layout == 0)
        h_n, c_n = state if cfg.cell == "lstm" else (state, None)  # (D, B, H)
        if lengths is not None:
            # onnxruntime gives a length-0 sequence Y_h = 0 (and Y_c = 0), even with an initial state
            ran = _xp.from_host(_xp.to_host(lengths) > 0, xp, _xp.device(x))[None, :, None]  # (1, B, 1)
            h_n = xp.where(ran, h_n, xp.zeros_like(h_n))
            c_n = None if c_n is None else xp.where(ran, c_n, xp.zeros_like(c_n))
        D, H = cfg.num_directions, cfg.output_size
        if self.layout == 0:
            T, B = y.shape[0], y.shape[1]
            y = xp.permute_dims(xp.reshape(y, (T, B, D, H)), (0, 2, 1, 3))  # (T, D, B, H)
        else:
            B, T = y.shape[0], y.shape[1]
            y = xp.reshape(y, (B, T, D, H))  # (B, T, D, H)
            h_n, c_n = (None if s is None else xp.permute_dims(s, (1, 0, 2)) for s in (h_n, c_n))  # (B, D, H)
        return [y, h_n, c_n]

    def named_arrays(self):
        return self.params.named_arrays()

    def map_arrays(self, fn):
        return replace(self, params=self.params.map_arrays(fn))

    def config(self):
        return {"type": "RecurrentNode", "name": self.name, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "layout": self.layout, "rnn": self.params.config.to_json()}

    @classmethod
    def from_config(cls, config, arrays):
        return cls(params_from_config(config["rnn"], arrays), config["inputs"], config["outputs"],
                   int(config["layout"]), config["name"])


@register
@dataclass(frozen=True, eq=False)
class OnnxGraph:
    """An imported ONNX graph: ``graph(X=..., sequence_lens=...)`` returns ``{output name: array}``.

    Call it with the graph's inputs by name (``graph.inputs`` lists them); every output of the
    graph comes back in a dict, in ONNX's shapes. ``shapes`` holds the shapes the graph declares
    (ints, or names of dynamic axes), used by :func:`rnn_xp.summary`.
    """

    nodes: tuple
    inputs: tuple
    outputs: tuple
    shapes: dict
    name: str = "onnx"
    kind = "model"
    type_name = "OnnxGraph"

    def __post_init__(self):
        for field in ("nodes", "inputs", "outputs"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        known = set(self.inputs)
        for node in self.nodes:
            missing = [n for n in node.inputs if n and n not in known]
            if missing:
                raise ValueError(f"node {node.name!r} ({node.type_name}) reads {missing}, which no earlier node "
                                 "or graph input produces")
            known.update(n for n in node.outputs if n)
        if set(self.outputs) - known:
            raise ValueError(f"graph outputs {sorted(set(self.outputs) - known)} are produced by no node")

    @property
    def layers(self):
        """The nodes that compute something (for summary); constants are left out."""
        return tuple(n for n in self.nodes if not isinstance(n, Constant))

    def output_shapes(self):
        return [self._declared(n.outputs[0]) for n in self.layers]

    def _declared(self, name):
        shape = self.shapes.get(name)
        return None if shape is None else tuple(s if isinstance(s, int) else None for s in shape)

    def _space(self, feeds):
        arrays = [a for n in self.nodes for _, a in n.named_arrays()]
        if not arrays:  # a graph without weights makes its data where its floating inputs live
            arrays = [a for a in feeds.values() if _xp.is_array(a) and
                      _xp.array_namespace(a).isdtype(a.dtype, "real floating")]
        if not arrays:
            return Space(_xp.as_namespace(np), None, "float32")
        a = arrays[0]
        return Space(_xp.array_namespace(a), _xp.device(a), _xp.dtype_name(a.dtype))

    def __call__(self, *args, **feeds):
        if args:  # graph(x): say how inputs are passed, rather than Python's "takes 1 positional argument"
            raise TypeError(f"the graph takes its inputs by name: graph({', '.join(f'{n}=...' for n in self.inputs)})")
        missing, unknown = set(self.inputs) - set(feeds), set(feeds) - set(self.inputs)
        if missing or unknown:
            raise TypeError(f"the graph takes the inputs {list(self.inputs)} by name; missing {sorted(missing)}, "
                            f"unexpected {sorted(unknown)}")
        for n, a in feeds.items():
            if not _xp.is_array(a):
                raise TypeError(f"input {n!r} must be an array; got {type(a).__name__}")
            declared = self.shapes.get(n)
            if isinstance(declared, (list, tuple)) and (len(declared) != a.ndim or any(
                    isinstance(d, int) and d != s for d, s in zip(declared, a.shape, strict=True))):
                raise ValueError(f"input {n!r} has shape {tuple(a.shape)}; the graph declares "
                                 f"({', '.join(str(d) if isinstance(d, int) else str(d or '?') for d in declared)})"
                                 " (a name or ? is any size), as onnxruntime checks it")
        space = self._space(feeds)
        values = dict(feeds)
        for node in self.nodes:
            out = node.run([values[n] if n else None for n in node.inputs], space)
            values.update((n, v) for n, v in zip(node.outputs, out, strict=True) if n)
        return {n: values[n] for n in self.outputs}

    def named_arrays(self):
        return [(f"node{i}.{n}", a) for i, node in enumerate(self.nodes) for n, a in node.named_arrays()]

    def map_arrays(self, fn):
        return replace(self, nodes=tuple(node.map_arrays(fn) for node in self.nodes))

    def config(self):
        return {"type": "OnnxGraph", "name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "shapes": self.shapes, "nodes": [node.config() for node in self.nodes]}

    @classmethod
    def from_config(cls, config, arrays):
        nodes = config["nodes"]
        if not isinstance(nodes, list):
            raise ValueError("an OnnxGraph config needs a list of nodes")
        return cls([from_config(nc, sub_arrays(arrays, f"node{i}.")) for i, nc in enumerate(nodes)],
                   config["inputs"], config["outputs"], dict(config.get("shapes") or {}), config["name"])
