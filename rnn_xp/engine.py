"""forward(): validate the call, choose the implementation (rnn_xp.seam), run the layers."""

from __future__ import annotations

import sys
from typing import NamedTuple

from . import _xp
from ._validate import check_bool, check_forward_inputs
from .params import CellWeights, RNNParams
from .seam import Call, Choice, described, select_runner

__all__ = ["forward", "explain", "prepare"]


class Prepared(NamedTuple):
    """A validated forward call, time-major: what the layers run on."""

    xp: object
    x: object  # (T, B, F)
    h0: object
    c0: object
    run: object  # (T, B, 1) booleans or None: a step updates the state where True
    emit: object  # (T, B, 1) booleans or None: a step outputs the last output where True, zero elsewhere
    call: Call


def prepare(
    x, params, initial_state=None, *, lengths=None, mask=None, time_major=False, zero_output_for_mask=False, trace=False
) -> Prepared:
    """Validate forward's arguments and put them in the loop's layout (time-major, run/emit masks)."""
    if not isinstance(params, RNNParams):
        raise TypeError(
            f"params must be rnn_xp params (from rnn_xp.init, load or an importer); got {type(params).__name__}"
        )
    cfg = params.config
    zero_output_for_mask = check_bool("zero_output_for_mask", zero_output_for_mask)
    trace = check_bool("trace", trace)
    xp, x, h0, c0, lengths, mask = check_forward_inputs(x, params, initial_state, lengths, mask, time_major)
    if not time_major:
        x = xp.permute_dims(x, (1, 0, 2))  # (T, B, F)
        mask = None if mask is None else xp.permute_dims(mask, (1, 0))  # (T, B)
    T, B, _ = x.shape
    run = emit = None
    if lengths is not None:
        steps = xp.arange(T, dtype=lengths.dtype, device=_xp.device(x))
        valid = steps[:, None] < lengths[None, :]  # (T, B)
        run = emit = valid
    if mask is not None:
        run = mask if run is None else xp.logical_and(run, mask)
        if emit is None:
            emit = xp.ones_like(mask)
        if zero_output_for_mask:
            emit = run
    if run is not None:
        run, emit = run[:, :, None], emit[:, :, None]  # (T, B, 1)
    dtype = _xp.dtype_name(x.dtype)
    call = Call(
        namespace=_xp.namespace_name(xp),
        cfg=cfg,
        dtype="float32" if dtype in _xp.HALF_DTYPES else dtype,
        steps=T,
        batch=B,
        device=_xp.device(x),
        lengths=lengths is not None,
        mask=mask is not None,
        trace=trace,
        traced=_xp.is_traced(x),
        writeable=_xp.is_writeable(x),
    )
    return Prepared(xp, x, h0, c0, run, emit, call)


def explain(
    x, params, initial_state=None, *, lengths=None, mask=None, time_major=False, impl="auto", trace=False
) -> Choice:
    """Which implementation :func:`forward` runs for these arguments, and why the others were skipped.

    Takes forward's arguments, validates them as forward does, and runs nothing. ``str()`` of the
    result reads, e.g.::

        implementation: numpy-fused
          skipped numba: numba is not installed (pip install 'rnn_xp[numba]')

    or, with numba, the kernel and the CPU's blocking it runs with::

        implementation: numba
          kernel lstm float32 (sigmoid, tanh, tanh); AMD EPYC: 512-bit vectors x 32 registers, ...
    """
    if _xp.is_dask_array(x):  # each chunk's forward: see rnn_xp._dask
        from . import _dask  # given this module: it runs engine.forward per chunk, never imports it

        return _dask.explain(
            sys.modules[__name__],
            x,
            params,
            initial_state,
            lengths=lengths,
            mask=mask,
            time_major=time_major,
            impl=impl,
            trace=trace,
        )
    p = prepare(x, params, initial_state, lengths=lengths, mask=mask, time_major=time_major, trace=trace)
    return described(select_runner(p.call, impl), p.call)


def forward(
    x,
    params,
    initial_state=None,
    *,
    lengths=None,
    mask=None,
    time_major=False,
    zero_output_for_mask=False,
    impl="auto",
    trace=False,
):
    """Run a (stacked, possibly bidirectional) RNN, LSTM or GRU over a batch of sequences.

    Parameters
    ----------
    x : array (batch, time, features), or (time, batch, features) with ``time_major=True``
        Same namespace, device and dtype as ``params`` (see :func:`rnn_xp.to_device`). A dask
        array runs lazily, one task per batch chunk, with params in the namespace of its chunks;
        y and the state come back as dask arrays chunked like x along the batch (see
        :mod:`rnn_xp._dask`).
    params : RNNParams
    initial_state : array or (h0, c0) for LSTM, optional
        h0 (num_layers*num_directions, batch, H_out), c0 (num_layers*num_directions, batch, H),
        ordered [layer 0 fwd, layer 0 bwd, layer 1 fwd, ...]. Zeros when omitted.
    lengths : integers (batch,), optional
        Valid lengths of right-padded sequences (host or x's namespace). Outputs at t >= length are
        zero, the state is the one at each sequence's last valid step, the reverse direction runs
        over each sequence's valid part only. Length 0 gives zero outputs and the initial state.
    mask : booleans (batch, time) ((time, batch) with time_major), optional
        Keras semantics: a masked step keeps the state and outputs the last output (zero before any
        unmasked step), or zero with ``zero_output_for_mask=True``. With lengths too, a step runs
        only where both allow it.
    impl : str
        "auto" (the first implementation able to run the call, see :func:`rnn_xp.explain`),
        "reference", or a name from :func:`rnn_xp.implementations` (ValueError if it cannot run
        this call, with the reason).
    trace : bool
        Also return every step's state and gate activations (see Returns). The implementations
        that cannot record them decline (:func:`rnn_xp.explain` with ``trace=True`` says which
        runs); the trace holds every step, so its memory grows with T.

    Returns
    -------
    y : array (batch, time, num_directions*H_out) (time-major with ``time_major=True``), both
        directions in input time order.
    state : h_n, or (h_n, c_n) for LSTM, shaped like initial_state.
    trace : list of dict, only with ``trace=True``
        One dict per layer and direction, ordered like the state ([layer 0 fwd, layer 0 bwd,
        layer 1 fwd, ...]), of arrays in x's layout ((batch, time, size), time-major with
        ``time_major=True``) and in input time order for both directions: "h" (B, T, H_out) the
        state after each step, "c" (B, T, H) for LSTM, and the gate activations as they enter the
        cell update, each (B, T, H): LSTM "i", "f", "g", "o"; GRU "r", "z", "n"; none for
        SimpleRNN. At steps that do not run (``lengths``, ``mask``) "h" and "c" hold the carried
        state and the gates are zero.

        >>> y, (h_n, c_n), trace = rnn_xp.forward(x, params, trace=True)
        >>> trace[0]["f"].shape  # layer 0's forget gate at every step
        (8, 100, 64)
    """
    if _xp.is_dask_array(x):  # lazy, one task per batch chunk: see rnn_xp._dask
        from . import _dask  # given this module: it runs engine.forward per chunk, never imports it

        return _dask.forward(
            sys.modules[__name__],
            x,
            params,
            initial_state,
            lengths=lengths,
            mask=mask,
            time_major=time_major,
            zero_output_for_mask=zero_output_for_mask,
            impl=impl,
        )
    p = prepare(
        x,
        params,
        initial_state,
        lengths=lengths,
        mask=mask,
        time_major=time_major,
        zero_output_for_mask=zero_output_for_mask,
        trace=trace,
    )
    return _run_layers(p, params, select_runner(p.call, impl).runner, time_major)


def _run_layers(p, params, runner, time_major):
    """Every layer and direction; a layer's input is dropped as soon as the next layer has its output."""
    xp, cfg = p.xp, params.config
    # float16/bfloat16 are computed in float32 and rounded once at the end, as cuDNN does: rounding
    # every gate of every step to 8 or 11 bits would compound over the steps.
    out_dtype = p.x.dtype
    half = _xp.dtype_name(out_dtype) in _xp.HALF_DTYPES
    up = (lambda a: None if a is None else xp.astype(a, xp.float32)) if half else (lambda a: a)
    layer_in, h0, c0 = up(p.x), up(p.h0), up(p.c0)
    T, B, _ = layer_in.shape
    D, H_out = cfg.num_directions, cfg.output_size
    h_n, c_n, traces = [], [], []
    trace = {"trace": True} if p.call.trace else {}  # only runners that record accept the keyword
    for k in range(cfg.num_layers):
        # both directions write into one (T, B, D*H_out) buffer where arrays are writeable
        out = (
            xp.empty((T, B, D * H_out), dtype=layer_in.dtype, device=_xp.device(layer_in))
            if D > 1 and p.call.writeable
            else None
        )
        ys = []
        for d in range(D):
            idx = k * D + d
            w = params.layers[k][d]
            if half:
                w = CellWeights(**{n: up(a) for n, a in w.items()})
            dst = None if out is None else out[:, :, d * H_out : (d + 1) * H_out]  # (T, B, H_out) view
            y, h, c, *tr = runner(
                layer_in,
                h0[idx, ...],
                None if c0 is None else c0[idx, ...],
                w,
                cfg,
                cfg.activations[d],
                reverse=(d == 1) != (cfg.direction == "reverse"),
                run=p.run,
                emit=p.emit,
                xp=xp,
                out=dst,
                **trace,
            )
            traces.extend(tr)
            if dst is not None and y is not dst:  # a runner that could not write in place
                dst[...] = y
            if out is None:
                ys.append(y)
            del y
            h_n.append(h)
            c_n.append(c)
        layer_in = out if out is not None else ys[0] if D == 1 else xp.concat(ys, axis=-1)  # (T, B, D*H_out)
        del ys, out
    down = (lambda a: xp.astype(a, out_dtype)) if half else (lambda a: a)
    y = down(layer_in if time_major else xp.permute_dims(layer_in, (1, 0, 2)))
    h_n = down(_stack(xp, h_n))  # (L*D, B, H_out)
    state = (h_n, down(_stack(xp, c_n))) if cfg.cell == "lstm" else h_n
    if not p.call.trace:
        return y, state
    layout = (lambda a: a) if time_major else (lambda a: xp.permute_dims(a, (1, 0, 2)))  # (T, B, .) -> (B, T, .)
    return y, state, [{name: down(layout(a)) for name, a in tr.items()} for tr in traces]


def _stack(xp, states):
    """The layers' states (B, H) stacked (L*D, B, H); one alone gets its new axis by indexing (stacking one
    array took microseconds of a one-step call)."""
    return states[0][None, ...] if len(states) == 1 else xp.stack(states, axis=0)
