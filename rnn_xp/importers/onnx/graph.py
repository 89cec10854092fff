"""The graph that :func:`rnn_xp.from_onnx` returns: recurrent nodes and the operators around them.

Running it needs neither onnx nor onnxruntime, and works on any Array-API namespace. The importer
has already folded every constant, turned each RNN/GRU/LSTM node into a :class:`RecurrentNode`
holding :class:`~rnn_xp.RNNParams` (or, when its weights are computed at run time, a
:class:`RuntimeRecurrentNode` that converts them on each call), and kept the rest as :class:`Op`
nodes of the operators in :data:`OPS` (see :mod:`rnn_xp.importers.onnx.ops`), or :class:`Constant` nodes.

Values are of two kinds: data (arrays in the model's namespace, on its device) and shape metadata
(small integer arrays on the host, as ``Shape`` makes them). Every operator is written once against
the Array API and serves both; where one operator meets both kinds, the host values move to the data's
namespace and device (they are a few integers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ... import _xp
from ..._validate import check_state_array, check_x
from ...engine import forward
from ...layers.base import from_config, params_from_config, register, sub_arrays
from ...params import RNNParams, make_config
from ...registry import CELLS as _SPECS
from ...registry import ONNX_PEEPHOLE_ORDER
from .ops import OPS, Env, Space

__all__ = ["OnnxGraph", "RecurrentNode", "RuntimeRecurrentNode", "Op", "Constant", "OPS", "Space"]

# ONNX's recurrent operators -> rnn_xp's cells (the gate orders are the registry's)
CELLS = {s.onnx_op: name for name, s in _SPECS.items()}
# what a call may make beyond its inputs (see OnnxGraph.element_limit)
CALL_ELEMENTS = 1 << 24


def _numel(a):
    return math.prod(int(n) for n in a.shape if n is not None)


def _unify(args, host):
    """Host (NumPy) data inputs moved to the namespace and device of the other data inputs, if any.

    Shape metadata lives on the host; an operator that meets it together with data (a Where whose
    condition came from Shape, a Gather of a host index table by device ids) computes on the device.
    Floating host data is a NumPy input given to a graph elsewhere: refused, not moved.
    """
    data = [a for i, a in enumerate(args) if a is not None and i not in host]
    ref = next((a for a in data if not isinstance(a, np.ndarray)), None)
    if ref is None or all(not isinstance(a, np.ndarray) for a in data):
        return args
    xp, dev = _xp.array_namespace(ref), _xp.device(ref)
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and i not in host and a.dtype.kind in "fc":
            # floating data made inside the graph is made in the model's namespace: a NumPy one is an input
            raise TypeError(
                f"input {i} is a numpy array but the other inputs are {_xp.namespace_name(xp)} arrays "
                f"on {dev} (no silent transfers). Fix: feed the graph arrays of its namespace "
                "(rnn_xp.to_device moves the graph)"
            )
    return [_xp.from_host(a, xp, dev) if isinstance(a, np.ndarray) and i not in host else a for i, a in enumerate(args)]


class _TooLarge(Exception):
    """An operator would make more elements than the call allows (args[0]: how many)."""


def _host_scalars(out):
    # NumPy reductions hand back NumPy scalars; the graph passes arrays
    return [np.asarray(o) if isinstance(o, np.generic) else o for o in out]


@register
@dataclass(frozen=True, eq=False)
class Op:
    """One operator of the graph (see :data:`OPS`), with JSON attributes and the model's opset."""

    op_type: str
    inputs: tuple
    outputs: tuple
    attrs: dict
    name: str = ""
    opset: int = 13
    kind = "node"

    def __post_init__(self):
        if self.op_type not in OPS:
            raise ValueError(f"operator {self.op_type!r} is not supported; expected one of {sorted(OPS)}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def type_name(self):
        return self.op_type

    def _where(self):
        return f"node {self.name!r} ({self.op_type})"

    def run(self, args, space, limit=None):
        """The outputs for these inputs; ``limit`` bounds what an operator that claims its size may make."""
        spec = OPS[self.op_type]
        try:
            args = _unify(list(args), spec.host)
            if limit is not None and spec.claims:
                n = spec.size(args, self.attrs)
                if n > limit:
                    raise _TooLarge(n)
            env = Env(space, self.opset)
            out = spec.run(args, self.attrs, env, len(self.outputs)) if spec.multi else spec.run(args, self.attrs, env)
        except _TooLarge as e:
            raise ValueError(
                f"{self._where()}: would make {e.args[0]:,} elements, more than the {limit:,} this "
                "call allows (a bound from the sizes of the inputs and the weights); the model is "
                "malformed or hostile"
            ) from None
        except TypeError as e:
            raise TypeError(f"{self._where()}: {e}") from None
        except (ValueError, IndexError, ArithmeticError) as e:
            raise ValueError(f"{self._where()}: {e}") from None
        return _host_scalars(out)

    def named_arrays(self):
        return []

    def map_arrays(self, fn):
        return self

    def config(self):
        return {
            "type": "Op",
            "name": self.name,
            "op_type": self.op_type,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
            "opset": self.opset,
        }

    @classmethod
    def from_config(cls, config, arrays):
        return cls(
            config["op_type"],
            config["inputs"],
            config["outputs"],
            dict(config["attrs"]),
            config["name"],
            int(config.get("opset", 13)),
        )


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

    def run(self, args, space, limit=None):
        return [self.value]

    def named_arrays(self):
        return [("value", self.value)] if self.floating else []

    def map_arrays(self, fn):
        return replace(self, value=fn(self.value)) if self.floating else self

    def config(self):
        out = {"type": "Constant", "name": self.name, "output": self.output}
        if not self.floating:  # integers and booleans travel in the JSON, not as arrays
            out.update(
                values=self.value.reshape(-1).tolist(), shape=list(self.value.shape), dtype=str(self.value.dtype)
            )
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


# --- recurrent nodes ----------------------------------------------------------------------------------------
def recurrent_weights(cell, direction, hidden_size, w, r, b=None, p=None):
    """(input_size, hidden_size, rnn_xp's named arrays) from ONNX's W, R, B, P, checked; any namespace.

    Per direction d: ``W[d]`` (G*H, F) and ``R[d]`` (G*H, H) keep their shapes, their gate blocks
    reordered from ONNX's order to rnn_xp's; ``B[d]`` (2*G*H,) = [Wb, Rb] splits into ``b_ih`` and
    ``b_hh``; ``P[d]`` (3H,) peepholes i, o, f become ``p`` in the order i, f, o. Shapes raise
    ValueError, types TypeError, each naming the input.
    """
    for label, a in (("W", w), ("R", r), ("B", b), ("P", p)):
        if a is not None and not _xp.is_array(a):
            raise TypeError(f"{label} must be an array; got {type(a).__name__}")
    if w.ndim != 3 or r.ndim != 3:
        raise ValueError(
            f"W and R must be 3-D (num_directions, gates*hidden_size, ...); got shapes "
            f"{tuple(w.shape)} and {tuple(r.shape)}"
        )
    D, G = (2 if direction == "bidirectional" else 1), _SPECS[cell].num_gates
    H = int(hidden_size or r.shape[-1])
    F = int(w.shape[-1])
    expected = {"W": (w, (D, G * H, F)), "R": (r, (D, G * H, H)), "B": (b, (D, 2 * G * H)), "P": (p, (D, 3 * H))}
    xp = _xp.array_namespace(w)
    if not xp.isdtype(w.dtype, "real floating"):
        raise TypeError(f"W has dtype {_xp.dtype_name(w.dtype)}; expected a floating dtype")
    for label, (a, shape) in expected.items():
        if a is None:
            continue
        if tuple(a.shape) != shape:
            raise ValueError(
                f"{label} has shape {tuple(a.shape)}; expected {shape} for direction={direction}, "
                f"hidden_size={H}, {F} input features"
            )
        if not _xp.same_namespace(_xp.array_namespace(a), xp) or not _xp.same_device(_xp.device(a), _xp.device(w)):
            raise TypeError(
                f"{label} is a {_xp.namespace_name(_xp.array_namespace(a))} array on "
                f"{_xp.device(a)}; expected W's namespace {_xp.namespace_name(xp)} on {_xp.device(w)}"
            )
        if a.dtype != w.dtype:
            raise TypeError(f"{label} has dtype {_xp.dtype_name(a.dtype)}; expected W's {_xp.dtype_name(w.dtype)}")

    def gates(a):  # (G*H, ...) in ONNX's gate order -> rnn_xp's
        return xp.concat([a[k * H : (k + 1) * H, ...] for k in _SPECS[cell].onnx_order], axis=0)

    arrays = {}
    for d in range(D):
        key = f"l0.{'rev' if d else 'fwd'}."
        arrays[key + "w_ih"] = gates(w[d, ...])
        arrays[key + "w_hh"] = gates(r[d, ...])
        if b is not None:
            arrays[key + "b_ih"] = gates(b[d, : G * H])
            arrays[key + "b_hh"] = gates(b[d, G * H :])
        if p is not None:
            arrays[key + "p"] = xp.concat([p[d, k * H : (k + 1) * H] for k in ONNX_PEEPHOLE_ORDER], axis=0)
    return F, H, arrays


def recurrent_config(spec, F, H, dtype, bias, peepholes):
    """The RNNConfig of an ONNX recurrent node from its JSON ``spec`` (see :class:`RuntimeRecurrentNode`)."""
    return make_config(
        spec["cell"],
        F,
        H,
        direction=spec["direction"],
        bias=bias,
        activations=list(spec["activations"]),
        activation_alpha=list(spec["activation_alpha"]),
        activation_beta=list(spec["activation_beta"]),
        reset_after=bool(spec["linear_before_reset"]),
        clip=spec["clip"],
        peepholes=peepholes,
        input_forget=bool(spec["input_forget"]),
        dtype=dtype,
    )


def _run_recurrent(params, layout, x, lengths, h0, c0):
    """Y, Y_h, Y_c of one ONNX recurrent node (layout 0 or 1) with these params."""
    cfg = params.config
    xp, x = check_x(x, params, time_major=layout == 0)
    batch_axis = 1 if layout == 0 else 0
    # the states in ONNX's layout, checked before they are transposed
    D, B, H = cfg.num_directions, x.shape[batch_axis], cfg.hidden_size
    shape, axes = (
        ((D, B, H), "(num_directions, batch, hidden_size)")
        if layout == 0
        else ((B, D, H), "(batch, num_directions, hidden_size)")
    )
    h0, c0 = (
        None if s is None else check_state_array(f"initial_{n}", s, shape, x, xp, axes)
        for n, s in (("h", h0), ("c", c0))
    )
    if layout == 1:  # states come (B, D, H); rnn_xp takes (D, B, H)
        h0, c0 = (None if s is None else xp.permute_dims(s, (1, 0, 2)) for s in (h0, c0))
    state = h0
    if cfg.cell == "lstm" and (h0 is not None or c0 is not None):
        dev = _xp.device(x)
        state = (
            xp.zeros((D, B, H), dtype=x.dtype, device=dev) if h0 is None else h0,
            xp.zeros((D, B, H), dtype=x.dtype, device=dev) if c0 is None else c0,
        )
    y, state = forward(x, params, state, lengths=lengths, time_major=layout == 0)
    h_n, c_n = state if cfg.cell == "lstm" else (state, None)  # (D, B, H)
    if lengths is not None:
        # onnxruntime gives a length-0 sequence Y_h = 0 (and Y_c = 0), even with an initial state
        ran = _xp.from_host(_xp.to_host(lengths) > 0, xp, _xp.device(x))[None, :, None]  # (1, B, 1)
        h_n = xp.where(ran, h_n, xp.zeros_like(h_n))
        c_n = None if c_n is None else xp.where(ran, c_n, xp.zeros_like(c_n))
    D, H = cfg.num_directions, cfg.output_size
    if layout == 0:
        T, B = y.shape[0], y.shape[1]
        y = xp.permute_dims(xp.reshape(y, (T, B, D, H)), (0, 2, 1, 3))  # (T, D, B, H)
    else:
        B, T = y.shape[0], y.shape[1]
        y = xp.reshape(y, (B, T, D, H))  # (B, T, D, H)
        h_n, c_n = (None if s is None else xp.permute_dims(s, (1, 0, 2)) for s in (h_n, c_n))  # (B, D, H)
    return [y, h_n, c_n]


def _named(where, fn, *args):
    """fn(*args) with the node named in its ValueError or TypeError."""
    try:
        return fn(*args)
    except TypeError as e:
        raise TypeError(f"{where}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _type_name(cell):
    return {v: k for k, v in CELLS.items()}[cell]


@register
@dataclass(frozen=True, eq=False)
class RecurrentNode:
    """An ONNX RNN, GRU or LSTM node whose weights are constants, as rnn_xp params (converted at import).

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
            raise ValueError(
                f"a RecurrentNode takes 4 input names, 3 output names and layout 0 or 1; got "
                f"{self.inputs}, {self.outputs}, {self.layout}"
            )

    @property
    def type_name(self):
        return _type_name(self.params.config.cell)

    def run(self, args, space, limit=None):
        x, lengths, h0, c0 = args
        return _named(
            f"node {self.name!r} ({self.type_name})", _run_recurrent, self.params, self.layout, x, lengths, h0, c0
        )

    def named_arrays(self):
        return self.params.named_arrays()

    def map_arrays(self, fn):
        return replace(self, params=self.params.map_arrays(fn))

    def config(self):
        return {
            "type": "RecurrentNode",
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "layout": self.layout,
            "rnn": self.params.config.to_json(),
        }

    @classmethod
    def from_config(cls, config, arrays):
        return cls(
            params_from_config(config["rnn"], arrays),
            config["inputs"],
            config["outputs"],
            int(config["layout"]),
            config["name"],
        )


SPEC_KEYS = (
    "cell",
    "direction",
    "hidden_size",
    "layout",
    "activations",
    "activation_alpha",
    "activation_beta",
    "clip",
    "linear_before_reset",
    "input_forget",
)


@register
@dataclass(frozen=True, eq=False)
class RuntimeRecurrentNode:
    """An ONNX RNN, GRU or LSTM node whose W, R, B or P are computed when the graph runs.

    They are graph inputs (as in ONNX's own node tests) or outputs of other nodes: each call checks
    them (shapes, dtypes, namespace, naming the node) and converts them as :func:`recurrent_weights`
    says. ``spec`` holds the node's attributes as JSON (keys :data:`SPEC_KEYS`; ``hidden_size`` 0
    reads it off R, activations and their alpha/beta already in rnn_xp's reading). ``inputs`` are
    the names of X, W, R, B, sequence_lens, initial_h, initial_c, P and ``outputs`` those of Y, Y_h,
    Y_c ("" when absent); shapes as in :class:`RecurrentNode`.
    """

    spec: dict
    inputs: tuple
    outputs: tuple
    name: str = ""
    kind = "node"

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if set(self.spec) != set(SPEC_KEYS) or self.spec["cell"] not in _SPECS:
            raise ValueError(f"a RuntimeRecurrentNode's spec has the keys {list(SPEC_KEYS)}; got {sorted(self.spec)}")
        if len(self.inputs) != 8 or len(self.outputs) != 3 or self.spec["layout"] not in (0, 1):
            raise ValueError(
                f"a RuntimeRecurrentNode takes 8 input names, 3 output names and layout 0 or 1; got "
                f"{self.inputs}, {self.outputs}, {self.spec['layout']}"
            )

    @property
    def type_name(self):
        return _type_name(self.spec["cell"])

    def params(self, w, r, b=None, p=None):
        """rnn_xp params from this call's W, R, B, P (checked)."""
        spec = self.spec
        if w is None or r is None:
            raise ValueError("W and R are required")
        F, H, arrays = recurrent_weights(spec["cell"], spec["direction"], spec["hidden_size"], w, r, b, p)
        cfg = recurrent_config(spec, F, H, _xp.dtype_name(w.dtype), b is not None, p is not None)
        return RNNParams.from_named_arrays(cfg, arrays)

    def run(self, args, space, limit=None):
        x, w, r, b, lengths, h0, c0, p = args
        where = f"node {self.name!r} ({self.type_name})"
        params = _named(where, self.params, w, r, b, p)
        return _named(where, _run_recurrent, params, self.spec["layout"], x, lengths, h0, c0)

    def named_arrays(self):
        return []

    def map_arrays(self, fn):
        return self

    def config(self):
        return {
            "type": "RuntimeRecurrentNode",
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "spec": dict(self.spec),
        }

    @classmethod
    def from_config(cls, config, arrays):
        return cls(dict(config["spec"]), config["inputs"], config["outputs"], config["name"])


# --- the graph ----------------------------------------------------------------------------------------------
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
                raise ValueError(
                    f"node {node.name!r} ({node.type_name}) reads {missing}, which no earlier node "
                    "or graph input produces"
                )
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
            arrays = [
                a
                for a in feeds.values()
                if _xp.is_array(a) and _xp.array_namespace(a).isdtype(a.dtype, "real floating")
            ]
        if not arrays:  # nor floating inputs: where its inputs live, in the dtypes the graph names
            given = [a for a in feeds.values() if _xp.is_array(a)]
            if not given:
                return Space(_xp.as_namespace(np), None, None)
            return Space(_xp.array_namespace(given[0]), _xp.device(given[0]), None)
        a = arrays[0]
        return Space(_xp.array_namespace(a), _xp.device(a), _xp.dtype_name(a.dtype))

    def element_limit(self, feeds):
        """The most elements one operator that claims its output's size (ConstantOfShape, Expand, Range,
        Tile) may make in a call with these inputs.

        What such an operator legitimately makes in a recurrent model is a state (layers*directions,
        batch, hidden) or a mask (batch, time, ...): a few of the inputs' elements times a size of the
        weights. The bound is ``2**24 + 4 * weights + 4 * inputs * max(16, the weights' longest axis)``
        elements; a graph that asks for more is refused before anything is allocated.
        """
        weights = [
            a
            for node in self.nodes
            for a in ([node.value] if isinstance(node, Constant) else [a for _, a in node.named_arrays()])
        ]
        longest = max((int(n) for a in weights for n in a.shape), default=0)
        fed = sum(_numel(a) for a in feeds.values())
        return CALL_ELEMENTS + 4 * sum(_numel(a) for a in weights) + 4 * fed * max(16, longest)

    def __call__(self, *args, **feeds):
        if args:  # graph(x): say how inputs are passed, rather than Python's "takes 1 positional argument"
            raise TypeError(f"the graph takes its inputs by name: graph({', '.join(f'{n}=...' for n in self.inputs)})")
        if any(_xp.is_dask_array(a) for a in feeds.values()):  # refused with the reason and the fix
            from ..._dask import refuse_onnx

            refuse_onnx(feeds)
        missing, unknown = set(self.inputs) - set(feeds), set(feeds) - set(self.inputs)
        if missing or unknown:
            raise TypeError(
                f"the graph takes the inputs {list(self.inputs)} by name; missing {sorted(missing)}, "
                f"unexpected {sorted(unknown)}"
            )
        for n, a in feeds.items():
            if not _xp.is_array(a):
                raise TypeError(f"input {n!r} must be an array; got {type(a).__name__}")
            declared = self.shapes.get(n)
            if isinstance(declared, (list, tuple)) and (
                len(declared) != a.ndim
                or any(isinstance(d, int) and d != s for d, s in zip(declared, a.shape, strict=True))
            ):
                raise ValueError(
                    f"input {n!r} has shape {tuple(a.shape)}; the graph declares "
                    f"({', '.join(str(d) if isinstance(d, int) else str(d or '?') for d in declared)})"
                    " (a name or ? is any size), as onnxruntime checks it"
                )
        space = self._space(feeds)
        limit = self.element_limit(feeds)
        values = dict(feeds)
        for node in self.nodes:
            out = node.run([values[n] if n else None for n in node.inputs], space, limit)
            if len(out) < len([n for n in node.outputs if n]):
                raise ValueError(
                    f"node {node.name!r} ({node.type_name}) gave {len(out)} outputs; the graph "
                    f"reads {list(node.outputs)}"
                )
            values.update((n, v) for n, v in zip(node.outputs, out, strict=False) if n)
        return {n: values[n] for n in self.outputs}

    def named_arrays(self):
        return [(f"node{i}.{n}", a) for i, node in enumerate(self.nodes) for n, a in node.named_arrays()]

    def map_arrays(self, fn):
        return replace(self, nodes=tuple(node.map_arrays(fn) for node in self.nodes))

    def config(self):
        return {
            "type": "OnnxGraph",
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "shapes": self.shapes,
            "nodes": [node.config() for node in self.nodes],
        }

    @classmethod
    def from_config(cls, config, arrays):
        nodes = config["nodes"]
        if not isinstance(nodes, list):
            raise ValueError("an OnnxGraph config needs a list of nodes")
        return cls(
            [from_config(nc, sub_arrays(arrays, f"node{i}.")) for i, nc in enumerate(nodes)],
            config["inputs"],
            config["outputs"],
            dict(config.get("shapes") or {}),
            config["name"],
        )
