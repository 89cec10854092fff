"""The reference time loop of one layer and direction, written against the Array API alone.

Per layer and direction: the input projection as one matmul over a chunk of time steps (so the
extra memory is bounded by a chunk, not by T), then a loop over the steps of that chunk doing only
the recurrent matmul and the gate math (:mod:`rnn_xp.cells`). Faster implementations of the same
loop (:mod:`rnn_xp._fast`) import the pieces they share from here; :mod:`rnn_xp.seam` chooses
between them, :mod:`rnn_xp.engine` runs the layers.
"""

from __future__ import annotations

from . import _xp
from .registry import CELLS

__all__ = ["run_direction", "input_projection", "time_chunks", "CHUNK_ELEMENTS"]

# Elements of one chunk of the input projection (T_chunk * B * G*H): 4 Mi, 16 MB in float32.
CHUNK_ELEMENTS = 1 << 22


def time_chunks(T: int, per_step: int, reverse: bool, chunk_elements: int | None = None):
    """[(t0, t1)] covering range(T) in processing order, each of at most chunk_elements // per_step steps."""
    n = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(1, per_step))
    if 0 < T <= n:
        return [(0, T)]
    chunks = [(t0, min(T, t0 + n)) for t0 in range(0, T, n)]
    return chunks[::-1] if reverse else chunks


def input_projection(x, w, xp):
    """x (t, B, F) -> x W_ih^T + b_ih, shape (t, B, G*H): one matmul for all the steps."""
    t, B, F = x.shape
    gi = xp.matmul(xp.reshape(x, (t * B, F)), xp.matrix_transpose(w.w_ih))  # (t*B, G*H)
    gi = xp.reshape(gi, (t, B, gi.shape[-1]))  # (t, B, G*H)
    return gi if w.b_ih is None else gi + w.b_ih


NAMESPACES = None  # every Array-API namespace


def unsupported(call):
    """The reference runs every call."""
    return None


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None, trace=False):
    """The reference loop of one layer and direction.

    x (T, B, F) time-major; h0 (B, H_out); c0 (B, H) or None; run and emit (T, B, 1) booleans
    or None: a step updates the state where ``run``, and outputs the last output where ``emit``
    (zero elsewhere). Returns y (T, B, H_out) in input time order, h_T, c_T. ``out``, a
    (T, B, H_out) array (a view is fine), receives y where the namespace's arrays are writeable
    and is returned as y; on namespaces with immutable arrays (JAX) y is stacked chunk by chunk.
    Extra memory beyond y: one projection chunk.

    ``trace=True`` returns a fourth item, the dict of :func:`rnn_xp.forward`'s trace for this layer
    and direction, time-major (T, B, .) and in input time order: "h" and (LSTM) "c" the state after
    each step (the carried one where a step does not run), and the gate activations of the cell
    (zero where a step does not run). It holds every step: it is not bounded by a chunk.
    """
    T, B, _ = x.shape
    H_out = h0.shape[-1]
    step = CELLS[cfg.cell].step
    record = _Recorder(T) if trace else None
    h, c = h0, c0
    zero = xp.zeros_like(h0)  # (B, H_out)
    last = zero  # the last output, repeated on masked steps (Keras)
    writeable = _xp.is_writeable(h0)
    if writeable:
        y = out if out is not None else xp.empty((T, B, H_out), dtype=h0.dtype, device=_xp.device(h0))
    pieces = []  # immutable namespaces: one stacked (t, B, H_out) array per chunk
    for t0, t1 in time_chunks(T, B * w.w_ih.shape[0], reverse):
        gi = input_projection(x[t0:t1, ...], w, xp)  # (t1-t0, B, G*H)
        ys = [None] * (t1 - t0)
        for t in range(t1 - 1, t0 - 1, -1) if reverse else range(t0, t1):
            if record is None:
                h_new, c_new = step(gi[t - t0, ...], h, c, w, cfg, acts, xp)
            else:
                h_new, c_new, gates = step(gi[t - t0, ...], h, c, w, cfg, acts, xp, gates=True)
            if run is None:
                h, c = h_new, c_new
                y_t = h
            else:
                r = run[t, ...]  # (B, 1)
                h = xp.where(r, h_new, h)
                c = None if c is None else xp.where(r, c_new, c)
                last = xp.where(r, h_new, last)
                y_t = xp.where(emit[t, ...], last, zero)
                if record is not None:  # a step that does not run has no gates
                    gates = {k: xp.where(r, g, xp.zeros_like(g)) for k, g in gates.items()}
            if record is not None:
                record.add(t, h, c, gates)
            if writeable:
                y[t, ...] = y_t
            else:
                ys[t - t0] = y_t
        if not writeable:
            pieces.append(xp.stack(ys, axis=0))
    if not writeable:
        if reverse:
            pieces = pieces[::-1]
        if not pieces:
            y = xp.zeros((0, B, H_out), dtype=h0.dtype, device=_xp.device(h0))
        else:
            y = pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)
    if record is None:
        return y, h, c
    # with no step to record, one on an empty batch tells the gates' names and sizes
    return (
        y,
        h,
        c,
        record.arrays(
            xp,
            h0,
            c0,
            lambda: step(
                xp.zeros((0, w.w_ih.shape[0]), dtype=h0.dtype, device=_xp.device(h0)),
                h0[:0, ...],
                None if c0 is None else c0[:0, ...],
                w,
                cfg,
                acts,
                xp,
                gates=True,
            )[2],
        ),
    )


class _Recorder:
    """The per-step states and gates of one layer and direction, stacked in input time order at the end."""

    def __init__(self, T):
        self.steps = [None] * T  # per input time step: {"h": (B, H_out), "c": (B, H), gate: (B, H)}

    def add(self, t, h, c, gates):
        self.steps[t] = {"h": h, **({} if c is None else {"c": c}), **gates}

    def arrays(self, xp, h0, c0, empty_step):
        """{name: (T, B, size)}; ``empty_step()`` gives the gates' names and sizes when there is no step."""
        if self.steps:
            return {k: xp.stack([s[k] for s in self.steps], axis=0) for k in self.steps[0]}
        B, dev = h0.shape[0], _xp.device(h0)
        like = {"h": h0, **({} if c0 is None else {"c": c0}), **empty_step()}
        return {k: xp.zeros((0, B, a.shape[-1]), dtype=h0.dtype, device=dev) for k, a in like.items()}
