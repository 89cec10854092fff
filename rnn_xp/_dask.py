"""Dask arrays: :func:`rnn_xp.forward` and models run chunk by chunk over the batch axis.

A sequence's output depends on its own row only, so a dask array's batch chunks run independently:
one task per batch chunk runs the whole layer stack with the normal :func:`rnn_xp.forward` on the
chunk's own arrays (NumPy chunks on the NumPy fast path, CuPy chunks on the CuPy kernels). The time
and feature axes are rechunked to one chunk each (a recurrence cannot be split along time without
passing the state from task to task). The weights enter the graph once, as one key that every task
depends on, so a distributed cluster ships them to each worker once. Nothing runs until the result
is computed.

This module is imported only when a dask array reaches forward, explain or a model: ``import rnn_xp``
never imports dask.
"""

from __future__ import annotations

import math
import operator
import warnings

import dask
import dask.array as da
import numpy as np
from dask.array.core import PerformanceWarning
from dask.base import tokenize

from . import _xp
from ._validate import as_host, check_bool
from .loop import CHUNK_ELEMENTS
from .params import RNNParams
from .seam import select_runner

__all__ = ["forward", "explain", "model_call", "refuse_onnx", "LARGE_TASK_BYTES"]

# Above this estimated working memory per task (bytes), a warning suggests smaller batch chunks.
LARGE_TASK_BYTES = 4 << 30

_KEEP_PARAMS = (
    "Fix: keep the weights in the chunks' namespace: NumPy params for NumPy-backed chunks "
    "(rnn_xp.to_device(params, numpy)), rnn_xp.to_device(params, cupy) for CuPy-backed chunks"
)


def _mib(n):
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _refuse_dask_weights(obj, what):
    """Weights moved to dask.array would trace the per-step loop through dask: a graph that grows with T."""
    for _, a in obj.named_arrays():
        if _xp.is_dask_array(a):
            raise TypeError(
                f"{what} are dask arrays; rnn_xp runs each chunk of a dask array with the normal "
                f"forward, which needs its weights in the namespace of the chunks. {_KEEP_PARAMS}"
            )


def _check_known(name, a):
    """A dask array whose chunk sizes are all known (not nan, as after boolean indexing)."""
    if any(math.isnan(c) for axis in a.chunks for c in axis):
        raise ValueError(
            f"{name} is a dask array with unknown chunk sizes (shape {a.shape}); rnn_xp needs them "
            f"to split the batch. Fix: {name} = {name}.compute_chunk_sizes()"
        )


def _one_chunk_except(a, axis, name, stacklevel):
    """``a`` with every axis but ``axis`` in one chunk; a warning says when that rechunks."""
    spread = [i for i in range(a.ndim) if i != axis and len(a.chunks[i]) > 1]
    if not spread:
        return a, False
    out = a.rechunk({i: -1 for i in range(a.ndim) if i != axis})
    biggest = max(out.chunks[axis]) if out.shape[axis] else 0
    per_chunk = biggest * math.prod(s for i, s in enumerate(out.shape) if i != axis) * out.dtype.itemsize
    warnings.warn(
        f"{name} is chunked along axes {spread} (chunks {a.chunks}); rnn_xp rechunks every axis but the "
        f"batch axis {axis} to one chunk, so each task holds a whole slice of sequences: up to "
        f"{_mib(per_chunk)} of {name} per chunk. To choose the chunks yourself: "
        f"{name}.rechunk({{{axis}: rows_per_task}}) with the other axes in one chunk",
        PerformanceWarning,
        stacklevel=stacklevel,
    )
    return out, True


def _forward_bytes(cfg, T, b, itemsize):
    """About what forward holds for b sequences: x, a layer's input and output, one projection chunk."""
    width = cfg.num_directions * cfg.output_size
    proj = min(T * b * cfg.gates * cfg.hidden_size, CHUNK_ELEMENTS)
    return itemsize * (T * b * cfg.input_size + 2 * T * b * width + proj)


def _zero_batch(a, axis):
    """An empty stand-in for ``a`` with 0 rows on ``axis``: forward's checks run on it and nothing else."""
    if _xp.is_dask_array(a):
        meta = a._meta
        shape = tuple(0 if i == axis else s for i, s in enumerate(a.shape))
        return _xp.array_namespace(meta).reshape(meta, shape)  # a 0-size meta takes any 0-size shape
    if _xp.is_array(a) and a.ndim > axis:
        return a[tuple(slice(0, 0) if i == axis else slice(None) for i in range(a.ndim))]
    return a  # not an array: forward's own check says what is wrong with it


def _check_shape(name, a, expected, layout):
    """An array input (dask or not) of the full shape ``expected``; anything else is left to forward's checks."""
    if _xp.is_dask_array(a):
        _check_known(name, a)
    if (_xp.is_dask_array(a) or _xp.is_array(a)) and tuple(a.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(a.shape)}; expected {tuple(expected)} {layout}")


def _aligned(a, axis, batch_chunks):
    """``a`` as a dask array chunked like x along ``axis`` and in one chunk elsewhere."""
    chunks = tuple(batch_chunks if i == axis else (s,) for i, s in enumerate(a.shape))
    if _xp.is_dask_array(a):
        return a.rechunk(chunks)
    return da.from_array(a, chunks=chunks, asarray=False)  # host data enters the graph once, sliced per chunk


def _as_input(name, a):
    """Lists become NumPy arrays (forward's documented conversion); anything else is returned as is."""
    return as_host(name, a, "rectangular list") if isinstance(a, (list, tuple)) else a


def _unwrap(a):
    """blockwise without concatenation hands a one-chunk axis over as a one-element list: its block."""
    while isinstance(a, list):
        (a,) = a
    return a


def _forward_chunk(x, params, lengths, mask, h0, c0, *, forward, time_major, zero_output_for_mask, impl):
    """One task: the whole layer stack on one batch chunk, by the normal forward; (y, h_n[, c_n])."""
    x, lengths, mask, h0, c0 = (_unwrap(a) for a in (x, lengths, mask, h0, c0))
    state = None if h0 is None else (h0, c0) if params.config.cell == "lstm" else h0
    y, st = forward(
        x,
        params,
        state,
        lengths=lengths,
        mask=mask,
        time_major=time_major,
        zero_output_for_mask=zero_output_for_mask,
        impl=impl,
    )
    return (y, *st) if isinstance(st, tuple) else (y, st)


def _model_chunk(model, x, mask):
    """One task: a model on one batch chunk; its output(s) as a tuple."""
    out = model(_unwrap(x), _unwrap(mask))
    return out if isinstance(out, tuple) else (out,)


def _weights_key(obj, what):
    """The weights as one graph key that every task depends on (dask ships it to each worker once)."""
    return dask.delayed(obj, name=f"rnn_xp-{what}-{tokenize(obj)}", traverse=False, pure=True)


def _unpack(packed, k, out_ind, batch_index, sizes, meta, name):
    """Output ``k`` of every task as a dask array indexed ``out_ind`` (one cheap task per chunk)."""
    new_axes = {i: sizes[i] for i in out_ind if i != batch_index}
    return da.blockwise(
        operator.getitem, out_ind, packed, batch_index, k, None, new_axes=new_axes, meta=meta, name=f"{name}-{k}"
    )


def _prepare_dask(prepare, x, params, initial_state, lengths, mask, time_major, zero_output_for_mask, trace):
    """Validate a dask call (forward's own checks on empty stand-ins) and align every input with x's chunks."""
    if not isinstance(params, RNNParams):
        raise TypeError(
            f"params must be rnn_xp params (from rnn_xp.init, load or an importer); got {type(params).__name__}"
        )
    _refuse_dask_weights(params, "the params")
    time_major = check_bool("time_major", time_major)
    check_bool("zero_output_for_mask", zero_output_for_mask)
    _check_known("x", x)
    cfg = params.config
    layout = "(time, batch, features)" if time_major else "(batch, time, features)"
    if x.ndim != 3:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected 3 dimensions {layout}")
    if x.shape[2] != cfg.input_size:
        raise ValueError(
            f"x has {x.shape[2]} features (shape {tuple(x.shape)}, {layout}); params expect input_size={cfg.input_size}"
        )
    b_ax = 1 if time_major else 0
    T, B = x.shape[1 - b_ax], x.shape[b_ax]
    LD = cfg.num_layers * cfg.num_directions
    lengths, mask = _as_input("lengths", lengths), _as_input("mask", mask)
    h0, c0 = initial_state, None
    if isinstance(initial_state, (tuple, list)) and cfg.cell == "lstm" and len(initial_state) == 2:
        h0, c0 = initial_state
    # the shapes, batch included, then forward's own checks (namespace, device, dtype, the state's
    # structure) on 0-row stand-ins of every input
    state_layout = "(num_layers*num_directions, batch, units)"
    _check_shape("lengths", lengths, (B,), "(batch,): one length per sequence")
    _check_shape("mask", mask, (T, B) if time_major else (B, T), "(time, batch)" if time_major else "(batch, time)")
    if not isinstance(h0, (tuple, list)):
        _check_shape(
            "initial_state h0" if c0 is not None else "initial_state", h0, (LD, B, cfg.output_size), state_layout
        )
    _check_shape("initial_state c0", c0, (LD, B, cfg.hidden_size), state_layout)
    probe_state = (
        None
        if initial_state is None
        else ((_zero_batch(h0, 1), _zero_batch(c0, 1)) if c0 is not None else _zero_batch(h0, 1))
    )
    p = prepare(
        _zero_batch(x, b_ax),
        params,
        probe_state,
        lengths=_zero_batch(lengths, 0),
        mask=None if mask is None else _zero_batch(mask, b_ax),
        time_major=time_major,
        zero_output_for_mask=zero_output_for_mask,
        trace=trace,
    )
    x, _ = _one_chunk_except(x, b_ax, "x", stacklevel=5)  # the caller of rnn_xp.forward
    bc = x.chunks[b_ax]
    lengths = None if lengths is None else _aligned(lengths, 0, bc)
    mask = None if mask is None else _aligned(mask, b_ax, bc)
    h0 = None if h0 is None else _aligned(h0, 1, bc)
    c0 = None if c0 is None else _aligned(c0, 1, bc)
    per_task = _forward_bytes(cfg, T, max(bc, default=0), x.dtype.itemsize)
    if per_task > LARGE_TASK_BYTES:
        warnings.warn(
            f"each task of this dask forward needs about {_mib(per_task)} (batch chunks up to "
            f"{max(bc)} sequences of {T} steps); a worker runs one such task per thread. Fix: smaller "
            f"batch chunks, x.rechunk({{{b_ax}: rows_per_task}})",
            PerformanceWarning,
            stacklevel=4,
        )
    return p.call, x, bc, lengths, mask, h0, c0


def explain(
    engine, x, params, initial_state=None, *, lengths=None, mask=None, time_major=False, impl="auto", trace=False
):
    """The implementation each chunk's forward runs (decided for the largest batch chunk).

    ``engine`` is :mod:`rnn_xp.engine`, passed in by its hook (so that this module does not import it).
    """
    call, x, bc, *_ = _prepare_dask(engine.prepare, x, params, initial_state, lengths, mask, time_major, False, trace)
    return select_runner(call._replace(batch=max(bc, default=0)), impl)


def forward(
    engine,
    x,
    params,
    initial_state=None,
    *,
    lengths=None,
    mask=None,
    time_major=False,
    zero_output_for_mask=False,
    impl="auto",
):
    """:func:`rnn_xp.forward` on a dask array: lazy, one task per batch chunk (see the module docstring).

    ``engine`` is :mod:`rnn_xp.engine`, passed in by its hook (so that this module does not import it):
    each task runs ``engine.forward`` on its chunk.
    """
    call, x, bc, lengths, mask, h0, c0 = _prepare_dask(
        engine.prepare, x, params, initial_state, lengths, mask, time_major, zero_output_for_mask, False
    )
    for b in sorted(set(bc)):
        select_runner(call._replace(batch=b), impl)  # an impl= that cannot run a chunk fails now, not on a worker
    cfg = params.config
    time_major = bool(time_major)
    # index letters: b batch, t time, f features, l layers*directions, h/c state units, d output units
    x_ind = "tbf" if time_major else "btf"
    m_ind = "tb" if time_major else "bt"
    weights = _weights_key(params, "params")
    name = f"rnn_xp-forward-{tokenize(x, weights.key, lengths, mask, h0, c0, time_major, zero_output_for_mask, impl)}"
    args = [x, x_ind, weights, None]
    for a, ind in ((lengths, "b"), (mask, m_ind), (h0, "lbh"), (c0, "lbc")):
        args += [a, ind] if a is not None else [None, None]
    packed = da.blockwise(
        _forward_chunk,
        "b",
        *args,
        concatenate=False,
        meta=np.empty((0,), dtype=object),
        name=name,
        forward=engine.forward,
        time_major=time_major,
        zero_output_for_mask=bool(zero_output_for_mask),
        impl=impl,
    )
    T = x.shape[1 if not time_major else 0]
    LD, D = cfg.num_layers * cfg.num_directions, cfg.num_directions
    sizes = {"t": T, "d": D * cfg.output_size, "l": LD, "h": cfg.output_size, "c": cfg.hidden_size}
    meta = x._meta
    y = _unpack(packed, 0, "tbd" if time_major else "btd", "b", sizes, meta, name)
    h_n = _unpack(packed, 1, "lbh", "b", sizes, meta, name)
    if cfg.cell == "lstm":
        return y, (h_n, _unpack(packed, 2, "lbc", "b", sizes, meta, name))
    return y, h_n


_LETTERS = "tuvwxyzpqrs"


def model_call(model, x, mask=None):
    """A model (Sequential, an imported Keras model) on a dask array: one task per batch chunk (axis 0)."""
    _refuse_dask_weights(model, f"the weights of model {getattr(model, 'name', '')!r}")
    _check_known("x", x)
    mask = _as_input("mask", mask)
    if x.ndim >= 2:
        _check_shape("mask", mask, tuple(x.shape[:2]), "(batch, time)")
    # the model's own checks, and the structure, shapes and dtypes of its outputs, from 0-row stand-ins
    out = model(_zero_batch(x, 0), None if mask is None else _zero_batch(mask, 0))
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if not (_xp.is_array(o) and o.ndim >= 1 and o.shape[0] == 0):
            raise ValueError(
                f"model {model.name!r} returns an output of shape {getattr(o, 'shape', None)} for 0 "
                "sequences; only outputs whose first axis is the batch can be computed per chunk"
            )
    x, _ = _one_chunk_except(x, 0, "x", stacklevel=4)  # the caller of the model
    bc = x.chunks[0]
    if x.ndim > len(_LETTERS) + 1:
        raise ValueError(f"x has {x.ndim} dimensions; dask model calls take at most {len(_LETTERS) + 1}")
    x_ind = "b" + _LETTERS[: x.ndim - 1]
    args = [x, x_ind]
    if mask is not None:
        args += [_aligned(mask, 0, bc), x_ind[:2]]
    else:
        args += [None, None]
    weights = _weights_key(model, "model")
    name = f"rnn_xp-model-{tokenize(x, weights.key, mask)}"
    packed = da.blockwise(
        _model_chunk, "b", weights, None, *args, concatenate=False, meta=np.empty((0,), dtype=object), name=name
    )
    results = []
    for k, o in enumerate(outs):
        letters = _LETTERS[: o.ndim - 1]
        sizes = dict(zip(letters, o.shape[1:], strict=True))
        results.append(_unpack(packed, k, "b" + letters, "b", sizes, o, name))
    return tuple(results) if isinstance(out, tuple) else results[0]


def refuse_onnx(feeds):
    """ONNX graphs do not run on dask arrays: a ValueError saying why and what runs instead."""
    given = [n for n, a in feeds.items() if _xp.is_dask_array(a)]
    if given:
        raise ValueError(
            f"the graph's input(s) {given} are dask arrays; an OnnxGraph does not run chunk by chunk (its operators "
            "may reshape or mix the batch axis, and no input declares which axis is the batch). Fix: compute the "
            "input (x.compute()), run the graph per chunk yourself with x.map_blocks when you know each operator "
            "keeps rows apart, or import the model with rnn_xp.from_torch / from_keras: rnn_xp.forward and "
            "Sequential models run on dask arrays"
        )
