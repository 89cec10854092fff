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


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """The reference loop of one layer and direction.

    x (T, B, F) time-major; h0 (B, H_out); c0 (B, H) or None; run and emit (T, B, 1) booleans
    or None: a step updates the state where ``run``, and outputs the last output where ``emit``
    (zero elsewhere). Returns y (T, B, H_out) in input time order, h_T, c_T. ``out``, a
    (T, B, H_out) array (a view is fine), receives y where the namespace's arrays are writeable
    and is returned as y; on namespaces with immutable arrays (JAX) y is stacked chunk by chunk.
    Extra memory beyond y: one projection chunk.
    """
    T, B, _ = x.shape
    H_out = h0.shape[-1]
    step = CELLS[cfg.cell].step
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
        for t in (range(t1 - 1, t0 - 1, -1) if reverse else range(t0, t1)):
            h_new, c_new = step(gi[t - t0, ...], h, c, w, cfg, acts, xp)
            if run is None:
                h, c = h_new, c_new
                y_t = h
            else:
                r = run[t, ...]  # (B, 1)
                h = xp.where(r, h_new, h)
                c = None if c is None else xp.where(r, c_new, c)
                last = xp.where(r, h_new, last)
                y_t = xp.where(emit[t, ...], last, zero)
            if writeable:
                y[t, ...] = y_t
            else:
                ys[t - t0] = y_t
        if not writeable:
            pieces.append(xp.stack(ys, axis=0))
    if writeable:
        return y, h, c
    if reverse:
        pieces = pieces[::-1]
    if not pieces:
        return xp.zeros((0, B, H_out), dtype=h0.dtype, device=_xp.device(h0)), h, c
    return (pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)), h, c
