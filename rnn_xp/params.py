"""The typed, immutable parameters of a (stacked, possibly bidirectional) recurrent network.

Layout (PyTorch's, so a torch user can compare line by line), for layer ``k`` and
direction ``d`` (0 forward, 1 reverse), with G gates (rnn 1, gru 3, lstm 4),
H = hidden_size and H_out = proj_size or hidden_size:

==========  =================  ===============================================
name        shape              meaning
==========  =================  ===============================================
``w_ih``    (G*H, in_k)        input weights, gates stacked in rnn_xp order
``w_hh``    (G*H, H_out)       recurrent weights, same gate order
``b_ih``    (G*H,)             input bias (``bias=True`` or ``"single"``)
``b_hh``    (G*H,)             recurrent bias (``bias=True`` only)
``w_hr``    (H_out, H)         LSTM projection (``proj_size > 0`` only)
``p``       (3*H,)             LSTM peepholes for gates i, f, o (``peepholes``)
==========  =================  ===============================================

Gate order: LSTM ``i, f, g, o``; GRU ``r, z, n``. ``in_0 = input_size`` and
``in_k = num_directions * H_out`` for k > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from . import _xp
from . import registry as _registry
from ._validate import check_bool, check_choice, check_int
from .activations import Activation, resolve, takes
from .backend import resolve_target

__all__ = ["RNNConfig", "CellWeights", "RNNParams", "init", "GATES", "CELLS"]

GATES = {name: s.num_gates for name, s in _registry.CELLS.items()}  # cell -> G (kept for importers' use)
CELLS = tuple(_registry.CELLS)
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
WEIGHT_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "p")


@dataclass(frozen=True)
class RNNConfig:
    """Everything about a recurrent network except its weights (JSON-serialisable)."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    direction: str = "forward"
    bias: bool | str = True
    proj_size: int = 0
    activations: tuple = ()  # per direction: a tuple of Activation (rnn: f; gru: f, g; lstm: f, g, h)
    reset_after: bool = True
    clip: float | None = None
    peepholes: bool = False
    input_forget: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        check_choice("cell", self.cell, CELLS)
        for name, minimum in (("input_size", 1), ("hidden_size", 1), ("num_layers", 1), ("proj_size", 0)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum))
        check_choice("direction", self.direction, tuple(DIRECTIONS))
        for name in ("reset_after", "peepholes", "input_forget"):  # 'no' must not read as True
            object.__setattr__(self, name, check_bool(name, getattr(self, name)))
        if self.bias not in (True, False, "single") or not isinstance(self.bias, (bool, str)):
            raise ValueError(
                f"bias={self.bias!r}; expected True (two bias vectors, as PyTorch/ONNX), "
                "'single' (one, as Keras) or False"
            )
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size={self.proj_size} is only defined for cell='lstm'; got cell={self.cell!r}")
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size={self.proj_size} must be smaller than hidden_size={self.hidden_size} "
                "(as in PyTorch); use proj_size=0 for no projection"
            )
        if (self.peepholes or self.input_forget) and self.cell != "lstm":
            raise ValueError(f"peepholes and input_forget are LSTM options; got cell={self.cell!r}")
        if self.clip is not None:
            if isinstance(self.clip, (bool, np.bool_)) or not isinstance(
                self.clip, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"clip must be a number or None; got {type(self.clip).__name__} {self.clip!r}")
            try:
                finite = math.isfinite(self.clip)
            except OverflowError:  # an int beyond any float, e.g. 10**400
                finite = False
            if not (finite and self.clip > 0):
                raise ValueError(f"clip={self.clip!r} must be a positive finite number or None")
            object.__setattr__(self, "clip", float(self.clip))
        if not isinstance(self.dtype, str) or self.dtype not in _xp.FLOAT_DTYPES:
            raise TypeError(f"dtype={self.dtype!r}; expected one of {', '.join(_xp.FLOAT_DTYPES)}")
        acts = self.activations
        n = self.spec.num_functions
        if len(acts) != self.num_directions or any(
            len(a) != n or not all(isinstance(f, Activation) for f in a) for a in acts
        ):
            raise ValueError(
                f"activations must hold {self.num_directions} tuple(s) of {n} "
                f"Activation(s) for cell={self.cell!r}; got {acts!r}"
            )

    @property
    def num_directions(self) -> int:
        return DIRECTIONS[self.direction]

    @property
    def spec(self) -> _registry.CellSpec:
        """The cell's registry entry (gate names and orders, activation slots, step function)."""
        return _registry.CELLS[self.cell]

    @property
    def gates(self) -> int:
        return self.spec.num_gates

    @property
    def output_size(self) -> int:
        """H_out: the size of h (proj_size when the LSTM projects, hidden_size otherwise)."""
        return self.proj_size or self.hidden_size

    def layer_input_size(self, k: int) -> int:
        return self.input_size if k == 0 else self.num_directions * self.output_size

    def shapes(self, k: int) -> dict:
        """The shape of every weight stored for layer k (one direction)."""
        G, H, Hout = self.gates, self.hidden_size, self.output_size
        out = {"w_ih": (G * H, self.layer_input_size(k)), "w_hh": (G * H, Hout)}
        if self.bias:
            out["b_ih"] = (G * H,)
        if self.bias is True:
            out["b_hh"] = (G * H,)
        if self.proj_size:
            out["w_hr"] = (Hout, H)
        if self.peepholes:
            out["p"] = (3 * H,)
        return out

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["activations"] = [[a.to_json() for a in per_dir] for per_dir in self.activations]
        return d

    @classmethod
    def from_json(cls, d: dict) -> RNNConfig:
        if not isinstance(d, dict):
            raise ValueError(f"an RNN config must be a JSON object; got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown RNN config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        d = dict(d)
        try:
            d["activations"] = tuple(
                tuple(Activation.from_json(a) for a in per_dir) for per_dir in d.get("activations", ())
            )
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"malformed activations in RNN config: {e}") from None
        return cls(**d)


def _resolve_activations(cell, num_directions, activations, alpha, beta):
    """Per-direction tuples of Activation from the user's (ONNX-style) lists.

    ``activations`` may be one name per cell function, one list per direction, or
    ONNX's flat list of n_funcs * num_directions names. ``alpha``/``beta`` are flat
    lists consumed in order by the functions that take them (onnxruntime's reading).
    """
    cs = _registry.CELLS[cell]
    n = cs.num_functions
    if activations is None:
        names = [list(cs.default_activations) for _ in range(num_directions)]
    else:
        if isinstance(activations, str):
            activations = [activations]
        if not isinstance(activations, (list, tuple)):
            raise TypeError(
                f"activations must be a name or a list of names (one per cell function); got "
                f"{type(activations).__name__} {activations!r}"
            )
        activations = list(activations)
        if activations and all(isinstance(a, (list, tuple)) for a in activations):
            names = [list(a) for a in activations]
        elif len(activations) == n:
            names = [list(activations) for _ in range(num_directions)]
        elif len(activations) == n * num_directions:
            names = [activations[d * n : (d + 1) * n] for d in range(num_directions)]
        else:
            names = None
        if names is None or len(names) != num_directions or any(len(a) != n for a in names):
            funcs = "[" + ", ".join(cs.functions) + "]"
            raise ValueError(
                f"activations={activations!r} does not fit cell={cell!r} with {num_directions} direction(s); "
                f"expected {funcs} (used for every direction) or one such list per direction"
            )
    for label, values in (("activation_alpha", alpha), ("activation_beta", beta)):
        if values is not None and not isinstance(values, (list, tuple)):
            raise TypeError(
                f"{label} must be a list of numbers (consumed in order by the functions that take "
                f"one) or None; got {type(values).__name__} {values!r}"
            )
    alphas = list(alpha) if alpha is not None else []
    betas = list(beta) if beta is not None else []
    out = []
    for per_dir in names:
        acts = []
        for name in per_dir:
            canonical = resolve(name)  # validates the name
            takes_a, takes_b = takes(canonical.name)
            a = alphas.pop(0) if takes_a and alphas else None
            b = betas.pop(0) if takes_b and betas else None
            acts.append(resolve(name, a, b))
        out.append(tuple(acts))
    return tuple(out)


def make_config(
    cell,
    input_size,
    hidden_size,
    *,
    num_layers=1,
    direction="forward",
    bidirectional=None,
    bias=True,
    proj_size=0,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    reset_after=True,
    clip=None,
    peepholes=False,
    input_forget=False,
    dtype="float32",
) -> RNNConfig:
    """An :class:`RNNConfig` from :func:`init`'s arguments (validated)."""
    if not isinstance(cell, str):
        raise TypeError(f"cell must be a str ('rnn', 'lstm' or 'gru'); got {type(cell).__name__}")
    cell = {"simplernn": "rnn", "elman": "rnn"}.get(cell.lower(), cell.lower())
    check_choice("direction", direction, tuple(DIRECTIONS))
    if bidirectional is not None:
        if not isinstance(bidirectional, bool):
            raise TypeError(f"bidirectional must be True, False or None; got {bidirectional!r}")
        if bidirectional and direction not in ("forward", "bidirectional"):
            raise ValueError(f"bidirectional=True contradicts direction={direction!r}")
        direction = "bidirectional" if bidirectional else direction
    check_choice("cell", cell, CELLS)
    dtype = _xp.dtype_name(dtype) if not isinstance(dtype, str) else dtype
    acts = _resolve_activations(cell, DIRECTIONS[direction], activations, activation_alpha, activation_beta)
    return RNNConfig(
        cell=cell,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        direction=direction,
        bias=bias,
        proj_size=proj_size,
        activations=acts,
        reset_after=reset_after,
        clip=clip,
        peepholes=peepholes,
        input_forget=input_forget,
        dtype=dtype,
    )


def _frozen(a):
    """True for a NumPy array that no one can write: read-only, as is every array its base chain reaches, down
    to an immutable ``bytes`` object (so ``flags.writeable = True`` is refused on each of them)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return isinstance(a, bytes)


def _readonly(a):
    """A NumPy array as a read-only copy that no one else holds and no one can re-open; other arrays as given.

    A read-only view of the caller's array would change when the caller writes to it, and an array that owns
    writeable memory can be made writeable again, so the data is copied into an immutable ``bytes`` object and
    viewed from there; an array already so held is kept as it is (rebuilding params from params copies nothing).
    Other namespaces have no read-only arrays: torch, CuPy and array_api_strict arrays are held as given.
    """
    if not isinstance(a, np.ndarray) or _frozen(a):
        return a
    # (shape,) contiguous bytes -> the caller's shape; tobytes() copies (in C order) whatever the strides
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


@dataclass(frozen=True, eq=False)
class CellWeights:
    """The weights of one layer and direction (see the module docstring for shapes)."""

    w_ih: object
    w_hh: object
    b_ih: object = None
    b_hh: object = None
    w_hr: object = None
    p: object = None

    def __post_init__(self):
        for name in WEIGHT_NAMES:
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    def items(self):
        return [(n, getattr(self, n)) for n in WEIGHT_NAMES if getattr(self, n) is not None]

    def __repr__(self):  # shapes, dtype and place, not values
        a = self.w_ih
        return (
            "CellWeights("
            + ", ".join(f"{n}={tuple(w.shape)}" for n, w in self.items())
            + f", dtype={_xp.dtype_name(a.dtype)!r}, namespace={_xp.namespace_name(_xp.array_namespace(a))!r}, "
            f"device={_xp.device(a)!s})"
        )


@dataclass(frozen=True, eq=False)
class RNNParams:
    """Configuration and weights of every layer and direction; immutable, validated as a whole.

    ``layers[k][d]`` is the :class:`CellWeights` of layer k, direction d (0 forward, 1 reverse).
    """

    config: RNNConfig
    layers: tuple = field(repr=False)

    def __post_init__(self):
        cfg = self.config
        if not isinstance(cfg, RNNConfig):
            raise TypeError(f"config must be an RNNConfig; got {type(cfg).__name__}")
        layers = tuple(tuple(d) for d in self.layers)
        object.__setattr__(self, "layers", layers)
        if len(layers) != cfg.num_layers or any(len(d) != cfg.num_directions for d in layers):
            raise ValueError(
                f"params hold {[len(d) for d in layers]} directions per layer; the config asks for "
                f"{cfg.num_layers} layer(s) of {cfg.num_directions} direction(s)"
            )
        ref = None
        for k, per_dir in enumerate(layers):
            expected = cfg.shapes(k)
            for d, w in enumerate(per_dir):
                where = f"layer {k} {'reverse' if d else 'forward'}"
                if not isinstance(w, CellWeights):
                    raise TypeError(f"{where}: expected CellWeights; got {type(w).__name__}")
                present = {n for n, _ in w.items()}
                if present != set(expected):
                    raise ValueError(
                        f"{where}: weights {sorted(present)} stored, but the config "
                        f"({cfg.cell}, bias={cfg.bias!r}, proj_size={cfg.proj_size}, "
                        f"peepholes={cfg.peepholes}) needs {sorted(expected)}"
                    )
                for n, a in w.items():
                    if not _xp.is_array(a):
                        raise TypeError(f"{where} {n}: expected an array; got {type(a).__name__}")
                    if tuple(a.shape) != expected[n]:
                        raise ValueError(f"{where} {n}: shape {tuple(a.shape)}, expected {expected[n]}")
                    sig = (_xp.namespace_name(_xp.array_namespace(a)), str(_xp.device(a)), _xp.dtype_name(a.dtype))
                    if ref is None:
                        ref = sig
                    elif sig != ref:
                        raise ValueError(
                            f"{where} {n}: (namespace, device, dtype) = {sig} differs from the "
                            f"other weights' {ref}; put all weights on one namespace/device/dtype"
                        )
        if ref[2] != cfg.dtype:
            raise ValueError(f"weights are {ref[2]} but config.dtype is {cfg.dtype!r}")

    # --- where the weights live -------------------------------------------------
    @property
    def _first(self):
        return self.layers[0][0].w_ih

    @property
    def xp(self):
        """The Array-API namespace of the weights."""
        return _xp.array_namespace(self._first)

    @property
    def device(self):
        return _xp.device(self._first)

    @property
    def dtype(self):
        return self._first.dtype

    def named_arrays(self):
        """[(name, array)] with names like ``'l0.fwd.w_ih'``: the flat view used by save/load."""
        return [
            (f"l{k}.{'rev' if d else 'fwd'}.{n}", a)
            for k, per_dir in enumerate(self.layers)
            for d, w in enumerate(per_dir)
            for n, a in w.items()
        ]

    @classmethod
    def from_named_arrays(cls, config: RNNConfig, arrays: dict) -> RNNParams:
        """Inverse of :meth:`named_arrays`; every expected name must be present, nothing else."""
        if config.num_layers * config.num_directions > len(arrays):  # a hostile config must not make us loop long
            raise ValueError(
                f"the config declares {config.num_layers} layer(s) of {config.num_directions} "
                f"direction(s) but only {len(arrays)} arrays come with it"
            )
        expected = {
            f"l{k}.{'rev' if d else 'fwd'}.{n}"
            for k in range(config.num_layers)
            for d in range(config.num_directions)
            for n in config.shapes(k)
        }
        missing, extra = expected - set(arrays), set(arrays) - expected
        if missing or extra:
            raise ValueError(f"weights do not match the config: missing {sorted(missing)}, unexpected {sorted(extra)}")
        layers = tuple(
            tuple(
                CellWeights(**{n: arrays[f"l{k}.{'rev' if d else 'fwd'}.{n}"] for n in config.shapes(k)})
                for d in range(config.num_directions)
            )
            for k in range(config.num_layers)
        )
        return cls(config, layers)

    def map_arrays(self, fn, **config_changes) -> RNNParams:
        """New params with every array replaced by fn(array) and config fields changed; the config's
        dtype follows the new arrays unless given."""
        arrays = {n: fn(a) for n, a in self.named_arrays()}
        config_changes.setdefault("dtype", _xp.dtype_name(next(iter(arrays.values())).dtype))
        return RNNParams.from_named_arrays(replace(self.config, **config_changes), arrays)

    def __sizeof__(self):
        """Bytes held, weights included: what sys.getsizeof (and so dask's scheduler) counts."""
        return object.__sizeof__(self) + sum(int(getattr(a, "nbytes", 0)) for _, a in self.named_arrays())

    def __repr__(self):
        c = self.config
        return (
            f"RNNParams(cell={c.cell!r}, input_size={c.input_size}, hidden_size={c.hidden_size}, "
            f"num_layers={c.num_layers}, direction={c.direction!r}, bias={c.bias!r}, "
            f"proj_size={c.proj_size}, dtype={c.dtype!r}, namespace={_xp.namespace_name(self.xp)!r}, "
            f"device={self.device!s})"
        )


def init(
    cell,
    input_size,
    hidden_size,
    *,
    num_layers=1,
    direction="forward",
    bidirectional=None,
    bias=True,
    proj_size=0,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    reset_after=True,
    clip=None,
    peepholes=False,
    input_forget=False,
    seed=None,
    dtype="float32",
    xp=None,
    device=None,
) -> RNNParams:
    """Random parameters for a recurrent network.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
        "rnn" is the Elman network (Keras SimpleRNN, PyTorch nn.RNN).
    input_size, hidden_size : int
        Features of x and units of the cell (H).
    num_layers : int
        Stacked layers; layer k > 0 reads the previous layer's (concatenated) outputs.
    direction : {"forward", "reverse", "bidirectional"}
        ``bidirectional=True`` is PyTorch's spelling of ``direction="bidirectional"``.
    bias : True, "single" or False
        True stores b_ih and b_hh (PyTorch, cuDNN, ONNX); "single" stores b_ih only (Keras
        SimpleRNN and LSTM); False stores none.
    proj_size : int
        LSTM only: h is projected to proj_size units by w_hr (PyTorch's proj_size).
    activations, activation_alpha, activation_beta
        Names per cell function (rnn: f; gru: f, g; lstm: f, g, h), optionally one list per
        direction or ONNX's flat list; see :mod:`rnn_xp.activations`. alpha/beta are consumed in
        order by the functions that take them.
    reset_after : bool
        GRU: apply the reset gate after the recurrent matmul (PyTorch, cuDNN, Keras default) or
        before it (Keras ``reset_after=False``, ONNX default).
    clip : float or None
        ONNX cell clip: the inputs of the gate activations are clipped to [-clip, clip] (the LSTM's
        h(c) sees the cell state unclipped, as in onnxruntime).
    peepholes, input_forget : bool
        LSTM: ONNX peepholes (stored as ``p``, gates i, f, o) and the coupled gate f = 1 - i.
    seed : int or None
        Weights are drawn on the host from ``numpy.random.default_rng(seed)``, uniform in
        ±1/sqrt(hidden_size), then moved: the same seed gives the same weights on every backend.
    dtype : str
        "float32" (default), "float64", "float16" or "bfloat16" where the namespace has it.
    xp, device
        Target namespace (numpy, cupy, torch, array_api_strict, ...) and device. ``xp=None`` uses
        :func:`rnn_xp.select_backend`.
    """
    cfg = make_config(
        cell,
        input_size,
        hidden_size,
        num_layers=num_layers,
        direction=direction,
        bidirectional=bidirectional,
        bias=bias,
        proj_size=proj_size,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        reset_after=reset_after,
        clip=clip,
        peepholes=peepholes,
        input_forget=input_forget,
        dtype=dtype,
    )
    if seed is not None:
        check_int("seed", seed, 0)
    xp, device = resolve_target(xp, device)
    _xp.resolve_dtype(xp, cfg.dtype)  # fail early if the namespace lacks the dtype
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(cfg.hidden_size)
    arrays = {}
    for k in range(cfg.num_layers):
        for d in range(cfg.num_directions):
            for n, shape in cfg.shapes(k).items():
                host = rng.uniform(-bound, bound, size=shape)
                arrays[f"l{k}.{'rev' if d else 'fwd'}.{n}"] = _xp.from_host(host, xp, device, cfg.dtype)
    return RNNParams.from_named_arrays(cfg, arrays)
