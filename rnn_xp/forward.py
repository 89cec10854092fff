"""The forward pass: one reference time loop, written against the Array API alone.

Per layer and direction: the input projection as one matmul over a chunk of time
steps (so the extra memory is bounded by a chunk, not by T), then a loop over the
steps of that chunk doing only the recurrent matmul and the gate math (cells.py).
Faster implementations of the same loop live behind one seam (rnn_xp._fast) and
are tested against this one.
"""

from __future__ import annotations

from . import _xp
from .cells import STEPS
from .params import CellWeights, RNNParams

__all__ = ["forward", "run_direction", "input_projection", "time_chunks"]

# Elements of one chunk of the input projection (T_chunk * B * G*H): 4 Mi, 16 MB in float32.
CHUNK_ELEMENTS = 1 << 22


def time_chunks(T: int, per_step: int, reverse: bool, chunk_elements: int | None = None):
    """[(t0, t1)] covering range(T) in processing order, each of at most chunk_elements // per_step steps."""
    n = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(1, per_step))
    chunks = [(t0, min(T, t0 + n)) for t0 in range(0, T, n)]
    return chunks[::-1] if reverse else chunks


def input_projection(x, w, xp):
    """x (t, B, F) -> x W_ih^T + b_ih, shape (t, B, G*H): one matmul for all the steps."""
    t, B, F = x.shape
    gi = xp.matmul(xp.reshape(x, (t * B, F)), xp.matrix_transpose(w.w_ih))  # (t*B, G*H)
    gi = xp.reshape(gi, (t, B, gi.shape[-1]))  # (t, B, G*H)
    return gi if w.b_ih is None else gi + w.b_ih


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp):
    """The reference loop of one layer and direction.

    x (T, B, F) time-major; h0 (B, H_out); c0 (B, H) or None; run and emit (T, B, 1) booleans
    or None: a step updates the state where ``run``, and outputs the last output where ``emit``
    (zero elsewhere). Returns y (T, B, H_out) in input time order, h_T, c_T.
    """
    T, B, _ = x.shape
    step = STEPS[cfg.cell]
    h, c = h0, c0
    zero = xp.zeros_like(h0)  # (B, H_out)
    last = zero  # the last output, repeated on masked steps (Keras)
    ys = [None] * T
    for t0, t1 in time_chunks(T, B * w.w_ih.shape[0], reverse):
        gi = input_projection(x[t0:t1, ...], w, xp)  # (t1-t0, B, G*H)
        for t in (range(t1 - 1, t0 - 1, -1) if reverse else range(t0, t1)):
            h_new, c_new = step(gi[t - t0, ...], h, c, w, cfg, acts, xp)
            if run is None:
                h, c = h_new, c_new
                ys[t] = h
                continue
            r = run[t, ...]  # (B, 1)
            h = xp.where(r, h_new, h)
            c = None if c is None else xp.where(r, c_new, c)
            last = xp.where(r, h_new, last)
            ys[t] = xp.where(emit[t, ...], last, zero)
    y = xp.stack(ys, axis=0) if T else xp.zeros((0, B, h0.shape[-1]), dtype=h0.dtype, device=_xp.device(h0))
    return y, h, c


def _to_x_space(a, x, xp):
    """An auxiliary array (lengths, mask) given on the host or in x's namespace, moved to x's device."""
    if _xp.is_array(a) and _xp.same_namespace(_xp.array_namespace(a), xp) and _xp.device(a) == _xp.device(x):
        return a
    return _xp.from_host(_xp.to_host(a), xp, _xp.device(x))


def forward(x, params, initial_state=None, *, lengths=None, mask=None, time_major=False,
            zero_output_for_mask=False, impl="auto"):
    """Run a (stacked, possibly bidirectional) RNN, LSTM or GRU over a batch of sequences.

    Parameters
    ----------
    x : array (batch, time, features), or (time, batch, features) with ``time_major=True``
        Same namespace, device and dtype as ``params`` (see :func:`rnn_xp.to_device`).
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
        "auto" (fastest implementation available for the namespace), "reference", or a name from
        :func:`rnn_xp.implementations`.

    Returns
    -------
    y : array (batch, time, num_directions*H_out) (time-major with ``time_major=True``), both
        directions in input time order.
    state : h_n, or (h_n, c_n) for LSTM, shaped like initial_state.
    """
    from ._fast import select_runner
    from ._validate import check_bool, check_forward_inputs

    if not isinstance(params, RNNParams):
        raise TypeError(f"params must be rnn_xp params (from rnn_xp.init, load or an importer); got "
                        f"{type(params).__name__}")
    cfg = params.config
    zero_output_for_mask = check_bool("zero_output_for_mask", zero_output_for_mask)
    xp, x, h0, c0, lengths, mask = check_forward_inputs(x, params, initial_state, lengths, mask, time_major)
    if not time_major:
        x = xp.permute_dims(x, (1, 0, 2))  # (T, B, F)
        mask = None if mask is None else xp.permute_dims(mask, (1, 0))  # (T, B)
    T, B, _ = x.shape
    run = emit = None
    if lengths is not None:
        valid = xp.arange(T, dtype=lengths.dtype, device=_xp.device(x))[:, None] < lengths[None, :]  # (T, B)
        run = emit = valid
    if mask is not None:
        run = mask if run is None else xp.logical_and(run, mask)
        if emit is None:
            emit = xp.ones_like(mask)
        if zero_output_for_mask:
            emit = run
    if run is not None:
        run, emit = run[:, :, None], emit[:, :, None]  # (T, B, 1)

    runner = select_runner(xp, cfg, impl)
    # float16/bfloat16 are computed in float32 and rounded once at the end, as cuDNN does: rounding
    # every gate of every step to 8 or 11 bits would compound over the steps.
    out_dtype = x.dtype
    half = _xp.dtype_name(out_dtype) in ("float16", "bfloat16")
    up = (lambda a: None if a is None else xp.astype(a, xp.float32)) if half else (lambda a: a)
    layer_in, h0, c0 = up(x), up(h0), up(c0)
    D = cfg.num_directions
    h_n, c_n = [], []
    for k in range(cfg.num_layers):
        ys = []
        for d in range(D):
            idx = k * D + d
            w = params.layers[k][d]
            if half:
                w = CellWeights(**{n: up(a) for n, a in w.items()})
            y, h, c = runner(layer_in, h0[idx, ...], None if c0 is None else c0[idx, ...], w, cfg,
                             cfg.activations[d], reverse=(d == 1) != (cfg.direction == "reverse"),
                             run=run, emit=emit, xp=xp)
            ys.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_in = ys[0] if D == 1 else xp.concat(ys, axis=-1)  # (T, B, D*H_out)
    down = (lambda a: xp.astype(a, out_dtype)) if half else (lambda a: a)
    y = down(layer_in if time_major else xp.permute_dims(layer_in, (1, 0, 2)))
    h_n = down(xp.stack(h_n, axis=0))  # (L*D, B, H_out)
    if cfg.cell == "lstm":
        return y, (h_n, down(xp.stack(c_n, axis=0)))
    return y, h_n
