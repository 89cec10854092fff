"""The ONNX operators an :class:`~rnn_xp.OnnxGraph` runs around its RNN, GRU and LSTM nodes.

One small function per operator, written once against the Array API (so it runs on NumPy, CuPy,
torch and array_api_strict alike), and one table, :data:`OPS`, that says for each operator how many
inputs and outputs it takes, which attributes (with their ONNX types), which inputs are
read as host integers (shapes, axes, indices of a slice), from which opset it exists, and how many
elements it makes (checked before it runs: see :func:`output_elements`).

Each function is ``run(args, attrs, env) -> [outputs]``: ``args`` the input arrays (None for an
input left out), ``attrs`` the node's attributes (a missing one takes ONNX's default),
``env`` the :class:`Env` of the call. Errors are plain ValueError or TypeError; the node that ran
the operator adds its name.

Types follow ONNX: the inputs of an arithmetic or comparison operator share one dtype (no
promotion; ``Cast`` first), broadcasting is NumPy's (ONNX's multidirectional broadcasting),
comparisons and logic return bool. Floating data made inside the graph (``Cast``,
``ConstantOfShape``) takes the model's floating dtype when the graph runs, so that a model moved
to float64 stays float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ... import _xp
from ...activations import _erf, log_softmax, resolve, softmax

__all__ = ["OPS", "OpSpec", "Env", "Space", "ONNX_DTYPES", "output_elements", "ints"]


class Space(NamedTuple):
    """Where data made inside the graph lives (ConstantOfShape, Cast): namespace, device, floating dtype.

    ``dtype`` None keeps the dtype the graph asks for (constant folding at import).
    """

    xp: object
    device: object
    dtype: str | None


class Env(NamedTuple):
    """What an operator knows of the call besides its inputs: the space and the model's opset."""

    space: Space
    opset: int


# TensorProto.DataType -> dtype name, for Cast and the attributes of ConstantOfShape
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    11: "float64",
    12: "uint32",
    13: "uint64",
}
_FLOATING = ("float32", "float64")


def ints(a) -> list[int]:
    """The values of a small integer array (a shape, axes, indices) as Python ints, read on the host."""
    host = np.asarray(_xp.to_host(a))
    if host.dtype.kind not in "iub":
        raise ValueError(f"expected integers (a shape, axes or indices); got {host.dtype}")
    return [int(v) for v in host.reshape(-1)]


def _scalar(a, label):
    host = np.asarray(_xp.to_host(a))
    if host.size != 1:
        raise ValueError(f"{label} must hold one value; got shape {host.shape}")
    return host.reshape(-1)[0].item()


def _ns(*arrays):
    return _xp.array_namespace(*[a for a in arrays if a is not None])


def _dtype(xp, name):
    """The dtype called ``name`` in namespace xp (host NumPy included)."""
    dt = getattr(xp, name, None)
    if dt is None:
        raise TypeError(f"the namespace {_xp.namespace_name(xp)} has no {name}")
    return dt


def _is_floating(xp, a):
    return xp.isdtype(a.dtype, "real floating")


def _axis(axis, rank, label="axis"):
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"{label}={axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _axes(axes, rank):
    out = [_axis(a, rank, "axes") for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"axes {list(axes)} repeat an axis")
    return out


def broadcast_shape(*shapes):
    """NumPy's (ONNX's multidirectional) broadcasting of shapes; a ValueError when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _same_dtype(*arrays):
    present = [a for a in arrays if a is not None]
    names = [_xp.dtype_name(a.dtype) for a in present]
    if len(set(names)) > 1:
        raise TypeError(
            f"the inputs have dtypes {', '.join(names)}; ONNX takes one type for all of them (a Cast node converts)"
        )


# --- elementwise --------------------------------------------------------------------------------------------
def _unary(fn, floating=True):
    def run(args, attrs, env):
        (x,) = args
        xp = _ns(x)
        if floating and not _is_floating(xp, x):
            raise TypeError(f"takes a floating input; got {_xp.dtype_name(x.dtype)}")
        return [fn(x, xp, attrs)]

    return run


def _relu(x, xp, attrs):
    return xp.maximum(x, xp.zeros_like(x))


def _activation(name, alpha=None):
    def fn(x, xp, attrs):
        return resolve(name, None if alpha is None else attrs.get("alpha", alpha))(x, xp)

    return fn


def _sqrt(x, xp, attrs):
    return xp.sqrt(x)


def _binary(fn, check_types=True):
    def run(args, attrs, env):
        a, b = args
        if check_types:
            _same_dtype(a, b)
        broadcast_shape(a.shape, b.shape)
        return [fn(a, b, _ns(a, b))]

    return run


def _div(a, b, xp):
    if _is_floating(xp, a) or xp.isdtype(a.dtype, "bool"):
        return xp.divide(a, b)
    # integers: C's division, truncated toward zero (floor_divide rounds toward minus infinity)
    q = xp.floor_divide(a, b)
    inexact = xp.not_equal(xp.remainder(a, b), xp.zeros_like(q))
    return xp.where(inexact & ((a < 0) != (b < 0)), q + 1, q)


def _pow(a, b, xp):
    # ONNX's Pow keeps the base's type; the exponent may be of another numeric type
    if _is_floating(xp, a):
        return xp.pow(a, xp.astype(b, a.dtype))
    if _is_floating(xp, b):
        return xp.astype(xp.trunc(xp.pow(xp.astype(a, b.dtype), b)), a.dtype)
    return xp.pow(a, xp.astype(b, a.dtype))


def _logical(fn):
    def run(args, attrs, env):
        for a in args:
            if not _ns(a).isdtype(a.dtype, "bool"):
                raise TypeError(f"takes bool inputs; got {_xp.dtype_name(a.dtype)}")
        broadcast_shape(*(a.shape for a in args))
        return [fn(*args, xp=_ns(*args))]

    return run


def _variadic(fn):
    def run(args, attrs, env):
        parts = [a for a in args if a is not None]
        _same_dtype(*parts)
        broadcast_shape(*(a.shape for a in parts))
        xp = _ns(*parts)
        out = parts[0]
        for a in parts[1:]:
            out = fn(out, a, xp)
        return [xp.broadcast_to(out, broadcast_shape(*(a.shape for a in parts)))]

    return run


def _where(args, attrs, env):
    cond, a, b = args
    xp = _ns(cond, a, b)
    if not xp.isdtype(cond.dtype, "bool"):
        raise TypeError(f"condition must be bool; got {_xp.dtype_name(cond.dtype)}")
    _same_dtype(a, b)
    broadcast_shape(cond.shape, a.shape, b.shape)
    return [xp.where(cond, a, b)]


def _clip(args, attrs, env):
    x = args[0]
    xp = _ns(x)
    if "min" in attrs or "max" in attrs:  # opset < 11: attributes
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo, hi = (
            None if len(args) <= i or args[i] is None else _scalar(args[i], name)
            for i, name in ((1, "min"), (2, "max"))
        )
    # max(x, min) then min(., max): where min > max every value becomes max, as ONNX says
    if lo is not None:
        x = xp.where(x < lo, xp.full_like(x, lo), x)
    if hi is not None:
        x = xp.where(x > hi, xp.full_like(x, hi), x)
    return [x]


def _cast(args, attrs, env):
    (x,) = args
    xp = _ns(x)
    to = attrs["to"]
    name = ONNX_DTYPES.get(to)
    if name is None:
        raise TypeError(
            f"to={to} is not a type rnn_xp computes in; expected one of "
            f"{', '.join(f'{k} ({v})' for k, v in ONNX_DTYPES.items())}"
        )
    if name in _FLOATING and env.space.dtype is not None:  # floating data follows the model's dtype
        name = env.space.dtype
    dtype = _dtype(xp, name)
    if _is_floating(xp, x) and not name.startswith(("float", "bool")):
        x = xp.trunc(x)  # ONNX truncates toward zero; the Array API leaves float -> int rounding open
    y = xp.astype(x, dtype)
    if name in _FLOATING and isinstance(y, np.ndarray) and _xp.namespace_name(env.space.xp) != "numpy":
        y = _xp.from_host(y, env.space.xp, env.space.device)  # data made of shape values: the model's space
    return [y]


# --- shapes and indices -------------------------------------------------------------------------------------
def _shape(args, attrs, env):
    (x,) = args
    rank = x.ndim
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    return [np.asarray([int(n) for n in x.shape[start:end]], dtype=np.int64)]


def _reshape(args, attrs, env):
    x, shape = args[0], ints(args[1])
    if not attrs.get("allowzero", 0):  # 0 copies the input's size on that axis
        if any(i >= x.ndim for i, n in enumerate(shape) if n == 0):
            raise ValueError(f"shape {shape} copies an axis (0) the input of shape {tuple(x.shape)} does not have")
        shape = [x.shape[i] if n == 0 else n for i, n in enumerate(shape)]
    if shape.count(-1) > 1 or any(n < -1 for n in shape):
        raise ValueError(f"shape {shape} is not a valid target shape (at most one -1, no other negative size)")
    known = math.prod(n for n in shape if n != -1)
    size = math.prod(x.shape)
    if -1 in shape:
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape {tuple(x.shape)} ({size} elements) to {shape}")
        shape = [size // known if n == -1 else n for n in shape]
    if math.prod(shape) != size:
        raise ValueError(f"cannot reshape {tuple(x.shape)} ({size} elements) to {tuple(shape)}")
    return [_ns(x).reshape(x, tuple(shape))]


def _flatten(args, attrs, env):
    (x,) = args
    axis = attrs.get("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis={axis} is out of range for rank {x.ndim}")
    axis %= x.ndim + 1
    return [_ns(x).reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]  # (outer, inner)


def _transpose(args, attrs, env):
    (x,) = args
    perm = attrs.get("perm") or list(range(x.ndim))[::-1]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"perm={list(perm)} is not a permutation of the {x.ndim} axes of shape {tuple(x.shape)}")
    return [_ns(x).permute_dims(x, tuple(perm))]


def _axes_arg(args, attrs, position):
    """Axes from the attribute (older opsets) or from the input at ``position`` (newer ones); None if neither."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(args) > position and args[position] is not None:
        return ints(args[position])
    return None


def _squeeze(args, attrs, env):
    x = args[0]
    axes = _axes_arg(args, attrs, 1)
    axes = [i for i, n in enumerate(x.shape) if n == 1] if axes is None else _axes(axes, x.ndim)
    if any(x.shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze axes {axes} of shape {tuple(x.shape)}: each must have size 1")
    return [_ns(x).reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))]


def _unsqueeze(args, attrs, env):
    x = args[0]
    axes = _axes_arg(args, attrs, 1)
    if axes is None:
        raise ValueError("needs axes")
    rank = x.ndim + len(axes)
    axes = _axes(axes, rank)
    dims = iter(x.shape)
    return [_ns(x).reshape(x, tuple(1 if i in axes else next(dims) for i in range(rank)))]


def _concat(args, attrs, env):
    parts = [a for a in args if a is not None]
    if "axis" not in attrs:
        raise ValueError("needs the attribute axis")
    _same_dtype(*parts)
    ranks = {a.ndim for a in parts}
    if len(ranks) != 1:
        raise ValueError(f"inputs of shapes {[tuple(a.shape) for a in parts]} have different ranks")
    axis = _axis(attrs["axis"], ranks.pop())
    shapes = {tuple(n for i, n in enumerate(a.shape) if i != axis) for a in parts}
    if len(shapes) != 1:
        raise ValueError(f"inputs of shapes {[tuple(a.shape) for a in parts]} differ off axis {axis}")
    return [_ns(*parts).concat(parts, axis=axis)]


def _split(args, attrs, env, n_outputs):
    x = args[0]
    axis = _axis(attrs.get("axis", 0), x.ndim)
    n = x.shape[axis]
    if "split" in attrs:
        sizes = list(attrs["split"])
    elif len(args) > 1 and args[1] is not None:
        sizes = ints(args[1])
    elif "num_outputs" in attrs:  # opset 18: equal parts, the last one smaller
        k = attrs["num_outputs"]
        if k != n_outputs:
            raise ValueError(f"num_outputs={k} but the node has {n_outputs} outputs")
        step = -(-n // k)
        sizes = [max(min(step, n - i * step), 0) for i in range(k)]
    else:
        if n % n_outputs:
            raise ValueError(f"cannot split {n} elements of axis {axis} into {n_outputs} equal parts")
        sizes = [n // n_outputs] * n_outputs
    if len(sizes) != n_outputs or sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(
            f"split sizes {sizes} must be {n_outputs} non-negative sizes summing to {n} "
            f"(axis {axis} of shape {tuple(x.shape)})"
        )
    out, start = [], 0
    for s in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + s)
        out.append(x[tuple(index)])
        start += s
    return out


def _slice(args, attrs, env):
    x = args[0]
    if "starts" in attrs:  # opset < 10: attributes
        starts, ends, axes, steps = list(attrs["starts"]), list(attrs.get("ends", [])), attrs.get("axes"), None
    else:
        if len(args) < 3 or args[1] is None or args[2] is None:
            raise ValueError("needs starts and ends")
        starts, ends = ints(args[1]), ints(args[2])
        axes = ints(args[3]) if len(args) > 3 and args[3] is not None else None
        steps = ints(args[4]) if len(args) > 4 and args[4] is not None else None
    axes = list(range(len(starts))) if axes is None else _axes(axes, x.ndim)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    index, flips = [slice(None)] * x.ndim, []
    for s, e, a, k in zip(starts, ends, axes, steps, strict=True):
        n = x.shape[a]
        if k == 0:
            raise ValueError("a step of 0")
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        # ONNX clamps to the axis; with a negative step the end may fall just before 0
        if k > 0:
            index[a] = slice(min(max(s, 0), n), min(max(e, 0), n), k)
            continue
        s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
        count = max(0, (s - e + (-k) - 1) // (-k))  # elements s, s + k, ... down to just above e
        # not every namespace slices with a negative step (torch does not): the same elements taken
        # in ascending order, then flipped
        last = s + (count - 1) * k
        index[a] = slice(last, s + 1, -k) if count else slice(0, 0)
        flips.append(a)
    y = x[tuple(index)]
    if flips:
        y = _ns(x).flip(y, axis=tuple(flips))
    return [y]


def _gather(args, attrs, env):
    x, idx = args
    xp = _ns(x, idx)
    if not xp.isdtype(idx.dtype, "integral"):
        raise TypeError(f"indices must be integers; got {_xp.dtype_name(idx.dtype)}")
    if x.ndim == 0:
        raise ValueError("cannot gather from a scalar")
    axis = _axis(attrs.get("axis", 0), x.ndim)
    n = x.shape[axis]
    flat = xp.reshape(idx, (-1,))  # (K,): take wants one axis of indices
    if flat.shape[0]:
        lo, hi = int(xp.min(flat)), int(xp.max(flat))  # one host read: out-of-range indices must not wrap
        if lo < -n or hi >= n:
            raise ValueError(
                f"indices must lie in [{-n}, {n - 1}] (axis {axis} of shape {tuple(x.shape)}); "
                f"got values from {lo} to {hi}"
            )
        flat = xp.where(flat < 0, flat + n, flat)
    y = xp.take(x, xp.astype(flat, xp.int64), axis=axis)
    return [xp.reshape(y, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))]


def _tile(args, attrs, env):
    x, repeats = args[0], ints(args[1])
    if len(repeats) != x.ndim or any(r < 0 for r in repeats):
        raise ValueError(f"repeats {repeats} must be {x.ndim} non-negative counts (input shape {tuple(x.shape)})")
    xp = _ns(x)
    if 0 in repeats or 0 in tuple(x.shape):
        # empty: tile repeats axis by axis, so [2**20, 2**20, 0] would first build a huge intermediate
        shape = tuple(int(n) * r for n, r in zip(x.shape, repeats, strict=True))
        return [xp.zeros(shape, dtype=x.dtype, device=_xp.device(x))]
    return [xp.tile(x, tuple(repeats))]


def _expand(args, attrs, env):
    x, shape = args[0], ints(args[1])
    return [_ns(x).broadcast_to(x, broadcast_shape(tuple(x.shape), tuple(shape)))]


def _range(args, attrs, env):
    start, limit, delta = args
    _same_dtype(start, limit, delta)
    xp = _ns(start, limit, delta)
    s, e, d = (_scalar(a, label) for a, label in ((start, "start"), (limit, "limit"), (delta, "delta")))
    if d == 0:
        raise ValueError("delta is 0")
    n = max(math.ceil((e - s) / d), 0)
    # ONNX's element i is start + i * delta (which arange's float rounding may not match)
    i = xp.arange(n, dtype=start.dtype, device=_xp.device(start))
    return [xp.astype(i * d + s, start.dtype) if n else i]


def _constant_of_shape(args, attrs, env):
    shape = tuple(ints(args[0]))
    if any(n < 0 for n in shape):
        raise ValueError(f"shape {list(shape)} has a negative size")
    value = attrs.get("value", {"value": 0.0, "dtype": "float32"})
    space = env.space
    if np.dtype(value["dtype"]).kind == "f":  # data: the model's namespace, device and dtype
        dtype = _xp.resolve_dtype(space.xp, space.dtype or value["dtype"])
        return [space.xp.full(shape, value["value"], dtype=dtype, device=space.device)]
    return [np.full(shape, value["value"], dtype=value["dtype"])]


def _identity(args, attrs, env):
    return [args[0]]


def _dropout(args, attrs, env, n_outputs):
    x = args[0]
    if len(args) > 2 and args[2] is not None and _scalar(args[2], "training_mode"):
        raise ValueError("training_mode is true; rnn_xp runs inference only (export the model in eval mode)")
    out = [x]
    if n_outputs > 1:  # the mask keeps every element
        xp = _ns(x)
        out.append(xp.ones(x.shape, dtype=xp.bool if env.opset >= 10 else x.dtype, device=_xp.device(x)))
    return out


# --- linear algebra, normalisation, reductions ---------------------------------------------------------------
def _matmul(args, attrs, env):
    a, b = args
    _same_dtype(a, b)
    _matmul_shape(a.shape, b.shape)
    return [_ns(a, b).matmul(a, b)]


def _matmul_shape(a, b):
    if not a or not b:
        raise ValueError(f"matmul takes inputs of rank >= 1; got shapes {tuple(a)} and {tuple(b)}")
    a2, b2 = (1, *a) if len(a) == 1 else tuple(a), (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not multiply ({a2[-1]} != {b2[-2]})")
    batch = broadcast_shape(a2[:-2], b2[:-2])
    return (*batch, *(a2[-2:-1] if len(a) > 1 else ()), *(b2[-1:] if len(b) > 1 else ()))


def _gemm(args, attrs, env):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    _same_dtype(a, b, c)
    xp = _ns(a, b, c)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"takes 2-D A and B; got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if attrs.get("transA", 0):
        a = xp.permute_dims(a, (1, 0))
    if attrs.get("transB", 0):
        b = xp.permute_dims(b, (1, 0))
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"A' {tuple(a.shape)} and B' {tuple(b.shape)} do not multiply")
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    y = xp.matmul(a, b)
    y = y if alpha == 1.0 else alpha * y
    if c is not None:
        if broadcast_shape(tuple(c.shape), tuple(y.shape)) != tuple(y.shape):
            raise ValueError(f"C of shape {tuple(c.shape)} does not broadcast to {tuple(y.shape)}")
        y = y + (c if beta == 1.0 else beta * c)
    return [y]


def _softmax(fn):
    def run(args, attrs, env):
        (x,) = args
        if not _is_floating(_ns(x), x):
            raise TypeError(f"takes a floating input; got {_xp.dtype_name(x.dtype)}")
        if env.opset >= 13:
            return [fn(x, axis=_axis(attrs.get("axis", -1), x.ndim))]
        # before opset 13: the input is seen as 2-D (outer, inner) split at axis (default 1)
        axis = attrs.get("axis", 1)
        if not -x.ndim <= axis <= x.ndim:
            raise ValueError(f"axis={axis} is out of range for rank {x.ndim}")
        axis %= x.ndim + 1
        xp = _ns(x)
        flat = xp.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))  # (outer, inner)
        return [xp.reshape(fn(flat, axis=-1), x.shape)]

    return run


def _reduce(name):
    def run(args, attrs, env):
        x = args[0]
        xp = _ns(x)
        axes = _axes_arg(args, attrs, 1)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        axes = tuple(_axes(axes, x.ndim))
        keep = bool(attrs.get("keepdims", 1))
        if name in ("max", "min") and any(x.shape[a] == 0 for a in axes):
            raise ValueError(f"cannot take the {name} over an empty axis (shape {tuple(x.shape)})")
        if name == "mean" and not _is_floating(xp, x):
            raise TypeError(f"ReduceMean takes a floating input here; got {_xp.dtype_name(x.dtype)}")
        y = getattr(xp, name)(x, axis=axes, keepdims=keep)
        return [y if name != "sum" else xp.astype(y, x.dtype)]

    return run


def _layer_norm(args, attrs, env, n_outputs):
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    xp = _ns(x, scale, bias)
    if not _is_floating(xp, x):
        raise TypeError(f"takes a floating input; got {_xp.dtype_name(x.dtype)}")
    _same_dtype(x, scale, bias)
    axis = _axis(attrs.get("axis", -1), x.ndim)
    axes = tuple(range(axis, x.ndim))
    for label, a in (("Scale", scale), ("B", bias)):
        if a is not None and broadcast_shape(tuple(a.shape), tuple(x.shape[axis:])) != tuple(x.shape[axis:]):
            raise ValueError(
                f"{label} of shape {tuple(a.shape)} does not broadcast to the normalized shape {tuple(x.shape[axis:])}"
            )
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    inv_std = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5))
    y = centred * inv_std * scale
    if bias is not None:
        y = y + bias
    return [y, mean, inv_std][:n_outputs]


# --- how many elements an operator makes, known before it runs ----------------------------------------------
def _numel(shape):
    return math.prod(int(n) for n in shape)


def _inputs_size(args, attrs):
    return sum(_numel(a.shape) for a in args if a is not None)


def _broadcast_size(args, attrs):
    return _numel(broadcast_shape(*(tuple(a.shape) for a in args if a is not None)))


def _expand_size(args, attrs):
    return _numel(broadcast_shape(tuple(args[0].shape), tuple(ints(args[1]))))


def _constant_of_shape_size(args, attrs):
    return _numel(max(n, 0) for n in ints(args[0]))


def _range_size(args, attrs):
    s, e, d = (_scalar(a, "a Range input") for a in args)
    return max(math.ceil((e - s) / d), 0) if d else 0


def _tile_size(args, attrs):
    return _numel(args[0].shape) * _numel(max(r, 0) for r in ints(args[1]))


def _gather_size(args, attrs):
    x, idx = args
    axis = attrs.get("axis", 0) % max(x.ndim, 1)
    rest = _numel(n for i, n in enumerate(x.shape) if i != axis)
    return _numel(idx.shape) * rest + _numel(idx.shape)


def _matmul_size(args, attrs):
    return _numel(_matmul_shape(tuple(args[0].shape), tuple(args[1].shape)))


def _gemm_size(args, attrs):
    a, b = args[0], args[1]
    m = a.shape[1] if attrs.get("transA", 0) else a.shape[0]
    n = b.shape[0] if attrs.get("transB", 0) else b.shape[-1]
    return _numel((m, n)) * 2


def _twice(args, attrs):
    return 2 * _numel(args[0].shape)


@dataclass(frozen=True)
class OpSpec:
    """One operator: ``run`` and what the importer and the graph check around it.

    * ``inputs``/``outputs``: (fewest, most) counts, most None for any number;
    * ``attrs``: name -> ONNX attribute type (each function applies ONNX's defaults where it reads them);
    * ``host``: the input positions read as host integers (never moved to the data's device);
    * ``since``: the first opset that has the operator;
    * ``size``: the number of elements it makes (an upper bound), from the inputs' shapes and the host
      integers, before it runs;
    * ``claims``: whether that size is claimed by small inputs (a shape, a count) rather than made of
      the inputs' own elements, so that a call bounds it too;
    * ``multi``: ``run`` takes the number of outputs the node asks for.
    """

    run: Callable
    inputs: tuple
    attrs: dict = field(default_factory=dict)
    outputs: tuple = (1, 1)
    host: tuple = ()
    since: int = 1
    size: Callable = _inputs_size
    claims: bool = False
    multi: bool = False


def _el(run, n=2, **kw):
    return OpSpec(run, (n, n), size=_broadcast_size if n > 1 else _inputs_size, **kw)


_ALPHA = {"alpha": "FLOAT"}
_REDUCE_ATTRS = {"axes": "INTS", "keepdims": "INT", "noop_with_empty_axes": "INT"}

OPS: dict[str, OpSpec] = {
    # shapes and indices
    "Shape": OpSpec(_shape, (1, 1), {"start": "INT", "end": "INT"}),
    "Gather": OpSpec(_gather, (2, 2), {"axis": "INT"}, size=_gather_size),
    "Slice": OpSpec(_slice, (1, 5), {"starts": "INTS", "ends": "INTS", "axes": "INTS"}, host=(1, 2, 3, 4)),
    "Concat": OpSpec(_concat, (1, None), {"axis": "INT"}),
    "Reshape": OpSpec(_reshape, (2, 2), {"allowzero": "INT"}, host=(1,), since=5),
    "Squeeze": OpSpec(_squeeze, (1, 2), {"axes": "INTS"}, host=(1,)),
    "Unsqueeze": OpSpec(_unsqueeze, (1, 2), {"axes": "INTS"}, host=(1,)),
    "Transpose": OpSpec(_transpose, (1, 1), {"perm": "INTS"}),
    "Expand": OpSpec(_expand, (2, 2), host=(1,), since=8, size=_expand_size, claims=True),
    "Tile": OpSpec(_tile, (2, 2), host=(1,), since=6, size=_tile_size, claims=True),
    "Range": OpSpec(_range, (3, 3), since=11, size=_range_size, claims=True),
    "ConstantOfShape": OpSpec(
        _constant_of_shape, (1, 1), {"value": "TENSOR"}, host=(0,), since=9, size=_constant_of_shape_size, claims=True
    ),
    "Split": OpSpec(
        _split, (1, 2), {"axis": "INT", "split": "INTS", "num_outputs": "INT"}, outputs=(1, None), host=(1,), multi=True
    ),
    "Flatten": OpSpec(_flatten, (1, 1), {"axis": "INT"}),
    "Identity": OpSpec(_identity, (1, 1)),
    "Cast": OpSpec(_cast, (1, 1), {"to": "INT", "saturate": "INT"}),
    "Where": OpSpec(_where, (3, 3), since=9, size=_broadcast_size),
    "Dropout": OpSpec(
        _dropout, (1, 3), {"ratio": "FLOAT", "seed": "INT"}, outputs=(1, 2), host=(1, 2), size=_twice, multi=True
    ),
    # comparisons and logic
    "Equal": _el(_binary(lambda a, b, xp: xp.equal(a, b))),
    "Less": _el(_binary(lambda a, b, xp: xp.less(a, b))),
    "Greater": _el(_binary(lambda a, b, xp: xp.greater(a, b))),
    "LessOrEqual": _el(_binary(lambda a, b, xp: xp.less_equal(a, b)), since=12),
    "GreaterOrEqual": _el(_binary(lambda a, b, xp: xp.greater_equal(a, b)), since=12),
    "Not": _el(_logical(lambda a, xp: xp.logical_not(a)), n=1),
    "And": _el(_logical(lambda a, b, xp: xp.logical_and(a, b))),
    "Or": _el(_logical(lambda a, b, xp: xp.logical_or(a, b))),
    # arithmetic
    "Add": _el(_binary(lambda a, b, xp: xp.add(a, b))),
    "Sub": _el(_binary(lambda a, b, xp: xp.subtract(a, b))),
    "Mul": _el(_binary(lambda a, b, xp: xp.multiply(a, b))),
    "Div": _el(_binary(_div)),
    "Pow": _el(_binary(_pow, check_types=False)),
    "Max": OpSpec(_variadic(lambda a, b, xp: xp.maximum(a, b)), (1, None), size=_broadcast_size),
    "Min": OpSpec(_variadic(lambda a, b, xp: xp.minimum(a, b)), (1, None), size=_broadcast_size),
    "Neg": _el(_unary(lambda x, xp, a: xp.negative(x), floating=False), n=1),
    "Abs": _el(_unary(lambda x, xp, a: xp.abs(x), floating=False), n=1),
    "Relu": _el(_unary(_relu, floating=False), n=1),
    "Reciprocal": _el(_unary(lambda x, xp, a: 1.0 / x), n=1),
    "Exp": _el(_unary(lambda x, xp, a: xp.exp(x)), n=1),
    "Log": _el(_unary(lambda x, xp, a: xp.log(x)), n=1),
    "Sqrt": _el(_unary(_sqrt), n=1),
    "Tanh": _el(_unary(lambda x, xp, a: xp.tanh(x)), n=1),
    "Sigmoid": _el(_unary(_activation("Sigmoid")), n=1),
    "Softplus": _el(_unary(_activation("Softplus")), n=1),
    "LeakyRelu": _el(_unary(_activation("LeakyRelu", 0.01)), n=1, attrs=_ALPHA),
    "Elu": _el(_unary(_activation("Elu", 1.0)), n=1, attrs=_ALPHA),
    "Erf": _el(_unary(lambda x, xp, a: _erf(x, xp)), n=1, since=9),
    "Clip": OpSpec(_clip, (1, 3), {"min": "FLOAT", "max": "FLOAT"}, host=(1, 2), since=6),
    # linear algebra, normalisation, reductions
    "MatMul": OpSpec(_matmul, (2, 2), size=_matmul_size),
    "Gemm": OpSpec(
        _gemm, (2, 3), {"alpha": "FLOAT", "beta": "FLOAT", "transA": "INT", "transB": "INT"}, size=_gemm_size
    ),
    "Softmax": OpSpec(_softmax(softmax), (1, 1), {"axis": "INT"}),
    "LogSoftmax": OpSpec(_softmax(log_softmax), (1, 1), {"axis": "INT"}),
    "ReduceMean": OpSpec(_reduce("mean"), (1, 2), _REDUCE_ATTRS, host=(1,)),
    "ReduceSum": OpSpec(_reduce("sum"), (1, 2), _REDUCE_ATTRS, host=(1,)),
    "ReduceMax": OpSpec(_reduce("max"), (1, 2), _REDUCE_ATTRS, host=(1,)),
    "ReduceMin": OpSpec(_reduce("min"), (1, 2), _REDUCE_ATTRS, host=(1,)),
    "LayerNormalization": OpSpec(
        _layer_norm,
        (2, 3),
        {"axis": "INT", "epsilon": "FLOAT", "stash_type": "INT"},
        outputs=(1, 3),
        since=17,
        size=_twice,
        multi=True,
    ),
}


def output_elements(op_type, args, attrs):
    """An upper bound on the elements the operator makes from these inputs, computed before it runs."""
    return OPS[op_type].size(args, attrs)
