"""Streaming inference: a sequence fed in chunks, down to one frame a call, the state carried between calls.

:class:`Stream` wraps params or a model. Everything that does not depend on the chunk is made once
per stream: the configuration, the weights arranged for the chosen implementation and, once the
batch size is known, the step closures and their buffers. A call then checks the chunk (type,
dtype, shape) and runs the steps.

Two ways to run the recurrent layers:

* NumPy, float32 and float64 (the real-time case): a prepared direction (``Direction``) of the first
  implementation of :data:`PREPARED` that can run the layer: the compiled engine (numba) where it is
  installed, else numpy-fused. It is the object forward itself runs, once per call, so a stream and a
  forward call compute the same numbers to the bit. Preallocated buffers, the state updated in
  place. While the compiled kernel is still being built in the background (the first use of a
  configuration on a cold cache), the stream runs numpy-fused and moves to the kernel, state and
  all, at the first call after it is ready.
* every other namespace and dtype: the implementation :mod:`rnn_xp.seam` chooses, chosen once per
  chunk shape and kept, called with the carried state as its initial state.
"""

from __future__ import annotations

import importlib

import numpy as np

from . import _xp
from ._validate import check_bool, check_lengths, check_mask, check_state, check_x
from .layers.basic import ActivationLayer, Dense, Embedding, Identity, Masking, Softmax
from .layers.recurrent import Bidirectional, Recurrent
from .layers.sequential import Sequential
from .params import CellWeights, RNNParams
from .seam import Call, select_runner

__all__ = ["Stream", "PREPARED"]

# Modules of rnn_xp._fast whose prepared ``Direction`` runs a stream's steps on NumPy, tried in order; each
# defines ``prepared_unsupported(cfg, acts, dtype) -> str | None``, ``arrange(w, cfg, acts, dtype)`` and
# ``Direction(arranged, cfg, acts, dtype, B, xp)`` with ``run(x, h, c, y, run=, emit=, last=)`` (in place)
# and ``step1(x, h, c, y)``; optionally ``prepared_unready(cfg, acts, dtype) -> str | None``: why it cannot run
# yet (a kernel compiling in the background), in which case the next module runs until it can.
PREPARED = ("numba_cpu", "numpy_fused")

# layers that act on each time step alone: a chunk of their input gives the chunk of their output
_PER_STEP = (Embedding, Masking, Dense, ActivationLayer, Identity, Softmax)

_FUTURE = (
    "needs the end of the sequence before its first output, and a stream has not seen it yet. "
    "Fix: rnn_xp.forward (or the model) over the whole sequence"
)


def _refuse_direction(cfg, where):
    if cfg.direction != "forward":
        what = (
            "a bidirectional network's reverse direction"
            if cfg.direction == "bidirectional"
            else "a network with direction='reverse'"
        )
        raise ValueError(f"Stream cannot run {where}: {what} reads the sequence from its end, so it {_FUTURE}")


class _Unit:
    """One RNNParams (every layer, forward in time) streamed: its arranged weights and its carried state."""

    def __init__(self, params, initial_state, where):
        cfg = params.config
        _refuse_direction(cfg, where)
        self.params, self.cfg, self.xp = params, cfg, params.xp
        self.namespace = _xp.namespace_name(self.xp)
        self.dtype = params.dtype
        self.half = cfg.dtype in _xp.HALF_DTYPES  # computed in float32, rounded once per output (as forward)
        self.L, self.F, self.H_out = cfg.num_layers, cfg.input_size, cfg.output_size
        self.initial = None
        if initial_state is not None:
            ref = params.layers[0][0].w_ih  # the weights' namespace, device and dtype
            h0 = initial_state[0] if isinstance(initial_state, (tuple, list)) else initial_state
            B = h0.shape[1] if _xp.is_array(h0) and h0.ndim == 3 else -1
            self.initial = check_state(initial_state, cfg, ref, self.xp, B)  # (h0, c0 or None)
        self.B = None  # the batch size, fixed by the first chunk
        self.prepared = None  # (module, [arranged per layer]) for the NumPy path
        self.pending = None  # a faster module that cannot run yet (compiling): taken as soon as it can
        if self.namespace == "numpy":
            for name in PREPARED:
                try:
                    mod = importlib.import_module(f"rnn_xp._fast.{name}")
                except ImportError:
                    continue
                if mod.prepared_unsupported(cfg, cfg.activations[0], params.dtype) is not None:
                    continue
                if self._unready(mod) is not None:
                    self.pending = self.pending or mod
                    continue
                self._prepare(mod)
                break
        if self.prepared is None:
            up = (lambda a: self.xp.astype(a, self.xp.float32)) if self.half else (lambda a: a)
            self.weights = [
                CellWeights(**{n: up(a) for n, a in params.layers[k][0].items()}) for k in range(cfg.num_layers)
            ]
            self.runners = {}  # (t, masked) -> runner chosen by the seam
        self.B = None

    def _unready(self, mod):
        unready = getattr(mod, "prepared_unready", None)
        return None if unready is None else unready(self.cfg, self.cfg.activations[0], self.params.dtype)

    def _prepare(self, mod):
        """The weights arranged for ``mod``'s Direction, layer by layer."""
        acts = self.cfg.activations[0]
        self.prepared = (
            mod,
            [mod.arrange(self.params.layers[k][0], self.cfg, acts, self.dtype) for k in range(self.L)],
        )
        if self.B is not None:
            self._directions()

    def upgrade(self):
        """Move to the pending (compiled) implementation once it can run; the state carries over as it is."""
        if self.pending is not None and self._unready(self.pending) is None:
            mod, self.pending = self.pending, None
            self._prepare(mod)

    def _directions(self):
        """Each layer's Direction for batch B, and the one-step calls bound to the carried state."""
        mod, arranged = self.prepared
        top, B, cfg = self.L - 1, self.B, self.cfg
        self.dirs = [mod.Direction(a, cfg, cfg.activations[0], self.dtype, B, self.xp) for a in arranged]
        # one step: each layer's step1 with its state, and where its output goes (None: the caller's y)
        self.steps1 = [
            (d.step1, self.h[k], self.c[k], np.empty((B, self.H_out), self.dtype) if k < top else None)
            for k, d in enumerate(self.dirs)
        ]

    # --- batch ------------------------------------------------------------------------------
    def start(self, B, device):
        """Fix the batch size: the state at its initial value, the NumPy path's steps and buffers made."""
        xp, cfg = self.xp, self.cfg
        if self.initial is not None and self.initial[0].shape[1] != B:
            raise ValueError(
                f"the chunk has batch size {B} but the stream's initial_state is for batch size "
                f"{self.initial[0].shape[1]}. Fix: chunks of {self.initial[0].shape[1]} rows, or a new "
                "Stream with an initial_state of this batch size"
            )
        dt = xp.float32 if self.half else self.dtype
        if self.initial is None:
            h0 = xp.zeros((self.L, B, self.H_out), dtype=dt, device=device)
            c0 = xp.zeros((self.L, B, cfg.hidden_size), dtype=dt, device=device) if cfg.cell == "lstm" else None
        else:
            h0, c0 = (None if a is None else xp.astype(a, dt, copy=True) for a in self.initial)
        self.h0, self.c0 = h0, c0  # the initial state of every row, for reset
        self.B = B
        if self.prepared is not None:
            self.h = [np.array(h0[k]) for k in range(self.L)]  # (B, H_out) each, updated in place
            self.c = [None if c0 is None else np.array(c0[k]) for k in range(self.L)]
            self.last = [np.zeros((B, self.H_out), dtype=self.dtype) for _ in range(self.L)]
            self.mids = {}  # t -> the outputs of the layers below the top one, reused
            self._directions()
        else:
            self.h = [h0[k, ...] for k in range(self.L)]
            self.c = [None if c0 is None else c0[k, ...] for k in range(self.L)]
        # rows that have run a step: a masked step outputs the last output, zero before the first (forward)
        self.started = (
            np.zeros((B, 1), dtype=bool)
            if self.prepared is not None
            else xp.zeros((B, 1), dtype=xp.bool, device=device)
        )

    def release(self):
        self.B = None
        self.h = self.c = self.last = self.dirs = self.mids = None

    def reset_rows(self, rows):
        """Rows (a host (B,) boolean array) back to the initial state."""
        if self.B is None:
            return
        if self.prepared is not None:
            sel = rows[:, None]  # (B, 1)
            for k in range(self.L):
                np.copyto(self.h[k], self.h0[k], where=sel)
                if self.c[k] is not None:
                    np.copyto(self.c[k], self.c0[k], where=sel)
            self.started[rows] = False
            return
        xp = self.xp
        sel = _xp.from_host(rows[:, None], xp, _xp.device(self.h[0]))  # (B, 1)
        self.h = [xp.where(sel, self.h0[k, ...], h) for k, h in enumerate(self.h)]
        self.c = [None if c is None else xp.where(sel, self.c0[k, ...], c) for k, c in enumerate(self.c)]
        self.started = xp.logical_and(self.started, xp.logical_not(sel))

    def state(self):
        """forward's structure: h_n (L, B, H_out), or (h_n, c_n) for LSTM; copies."""
        xp = self.xp
        if self.B is None:
            if self.initial is None:
                return None
            h, c = self.initial
        else:
            h = xp.stack(self.h, axis=0)
            c = None if self.c[0] is None else xp.stack(self.c, axis=0)
            if self.half:
                h, c = xp.astype(h, self.dtype), None if c is None else xp.astype(c, self.dtype)
        return h if self.cfg.cell != "lstm" else (h, c)

    # --- a chunk ----------------------------------------------------------------------------
    def check(self, x, time_major):
        """x checked as forward checks it; (t, B)."""
        check_x(x, self.params, time_major)
        return (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])

    def masks(self, x, t, mask, lengths, time_major, zero_output_for_mask):
        """(run, emit) time-major (t, B, 1) in x's namespace, or (None, None): forward's meaning, for this chunk."""
        xp, B = self.xp, self.B
        run = emit = None
        if lengths is not None:
            lengths = check_lengths(lengths, x, xp, B, t)
            steps = xp.arange(t, dtype=lengths.dtype, device=_xp.device(x))
            run = emit = steps[:, None] < lengths[None, :]  # (t, B)
        if mask is not None:
            mask = check_mask(mask, x, xp, B, t, time_major)
            if not time_major:
                mask = xp.permute_dims(mask, (1, 0))  # (t, B)
            run = mask if run is None else xp.logical_and(run, mask)
            if emit is None:
                emit = xp.ones_like(mask)
            if zero_output_for_mask:
                emit = run
        if run is None:
            return None, None
        return run[:, :, None], emit[:, :, None]  # (t, B, 1)

    def run(self, x_tm, run, emit):
        """The chunk x_tm (t, B, F) through every layer; a new (t, B, H_out) array."""
        if self.pending is not None:
            self.upgrade()
        if self.prepared is not None:
            return self._run_numpy(x_tm, run, emit)
        return self._run_seam(x_tm, run, emit)

    def step1(self, x, y):
        """One unmasked step: x (B, F), y (B, H_out) receives the top layer's output."""
        if self.pending is not None:
            self.upgrade()
        for step1, h, c, out in self.steps1:
            step1(x, h, c, y if out is None else out)
            x = out
        self.started.fill(True)

    def _run_numpy(self, x, run, emit):
        t, B = x.shape[0], self.B
        top = self.L - 1
        masked = run is not None
        if masked:
            started = self.started
            for k in range(self.L):  # the last output of each layer: its state where the row has run
                np.multiply(self.h[k], started, out=self.last[k])
        layer_in = x
        for k, d in enumerate(self.dirs):
            if k == top:
                y = np.zeros((t, B, self.H_out), self.dtype) if masked else np.empty((t, B, self.H_out), self.dtype)
            else:
                y = self._mid(t, k)
                if masked:
                    y[...] = 0
            d.run(layer_in, self.h[k], self.c[k], y, run=run, emit=emit, last=self.last[k] if masked else None)
            layer_in = y
        if t:
            if masked:
                np.logical_or(self.started, np.any(run, axis=0), out=self.started)
            else:
                self.started.fill(True)
        return layer_in

    def _mid(self, t, k):
        bufs = self.mids.get(t)
        if bufs is None:
            if len(self.mids) >= 8:  # a few chunk lengths kept, not every one ever seen
                self.mids.clear()
            bufs = self.mids[t] = [np.empty((t, self.B, self.H_out), self.dtype) for _ in range(self.L - 1)]
        return bufs[k]

    def _runner(self, x, masked):
        key = (x.shape[0], masked)
        runner = self.runners.get(key)
        if runner is None:
            call = Call(
                namespace=self.namespace,
                cfg=self.cfg,
                dtype="float32" if self.half else self.cfg.dtype,
                steps=x.shape[0],
                batch=self.B,
                device=_xp.device(x),
                lengths=masked,
                mask=masked,
                traced=_xp.is_traced(x),
                writeable=_xp.is_writeable(x),
            )
            runner = self.runners[key] = select_runner(call).runner
        return runner

    def _run_seam(self, x, run, emit):
        xp, cfg = self.xp, self.cfg
        runner = self._runner(x, run is not None)
        layer_in = xp.astype(x, xp.float32) if self.half else x
        if run is not None:
            # forward starts each call's last output at zero; a stream's is the state of the rows that have run
            seen = xp.cumulative_sum(xp.astype(run, xp.int32), axis=0) > 0  # (t, B, 1): a step has run by then
            carry = xp.logical_and(emit, xp.logical_not(seen))  # emitted before this chunk's first step ran
        for k in range(self.L):
            h_prev = self.h[k]
            y, h, c = runner(
                layer_in,
                h_prev,
                self.c[k],
                self.weights[k],
                cfg,
                cfg.activations[0],
                reverse=False,
                run=run,
                emit=emit,
                xp=xp,
            )
            if run is not None:
                last = xp.where(self.started, h_prev, xp.zeros_like(h_prev))  # (B, H_out)
                y = xp.where(carry, last[None, ...], y)
            self.h[k], self.c[k] = h, c
            layer_in = y
        if x.shape[0]:
            self.started = (
                xp.ones_like(self.started) if run is None else xp.logical_or(self.started, xp.any(run, axis=0))
            )
        return xp.astype(layer_in, self.dtype) if self.half else layer_in


class Stream:
    """Run params or a model over a sequence that arrives in chunks, carrying the state between calls.

    ``stream(x_chunk)`` returns what ``obj`` returns for everything fed so far, restricted to the new
    steps: for params, the chunk's slice of :func:`rnn_xp.forward`'s y; for a model whose output is
    per step, the chunk's slice of it; for a model whose last recurrent layer returns only its last
    output, the model's output for the whole prefix (the prediction after this chunk). Feeding a
    sequence in any chunks gives what one call over the whole sequence gives.

    Parameters
    ----------
    obj : RNNParams, or a Sequential model (rnn_xp.Sequential, rnn_xp.from_keras)
        Every recurrent layer must run forward in time: bidirectional networks,
        ``direction="reverse"`` and Keras ``go_backwards=True`` need the end of the sequence and
        are refused (ValueError).
    initial_state : array or (h0, c0), optional
        Params only: forward's initial_state (its batch size is then the stream's). Zeros when
        omitted; a model always starts from zeros.
    time_major : bool
        Chunks are (t, batch, features) instead of (batch, t, features) (token ids: (t, batch)).

    Calling
    -------
    ``stream(x_chunk, mask=None, lengths=None)`` with x_chunk (batch, t, features), t >= 0, in the
    namespace, device and dtype of the weights (as forward); integer token ids for a model that
    starts with an Embedding. ``mask`` (batch, t) booleans, forward's and the layers' meaning, for
    params and models; ``lengths`` (batch,), params only: the valid steps of this chunk (0 once a
    row's sequence has ended). The first call after construction or :meth:`reset` fixes the batch
    size; a chunk of another batch size raises ValueError.

    >>> import numpy as np, rnn_xp
    >>> params = rnn_xp.init("lstm", 16, 32, seed=0, xp=np)
    >>> stream = rnn_xp.Stream(params)
    >>> frame = np.zeros((1, 1, 16), dtype=np.float32)  # one row, one step
    >>> stream(frame).shape
    (1, 1, 32)
    >>> stream.reset()  # a new sequence
    """

    def __init__(self, obj, initial_state=None, *, time_major=False):
        self._time_major = check_bool("time_major", time_major)
        self._B = None
        self._last_ran = None  # models: per row, whether the prefix's last step ran (zero_output_for_mask)
        if isinstance(obj, RNNParams):
            self._unit = _Unit(obj, initial_state, "these params")
            self._stages = None
            self._units = [self._unit]
            return
        if not isinstance(obj, Sequential):
            raise TypeError(
                f"Stream takes RNNParams or a Sequential model (rnn_xp.Sequential, rnn_xp.from_keras); "
                f"got {type(obj).__name__}"
            )
        if initial_state is not None:
            raise TypeError(
                "a model's stream starts from zeros: initial_state is for params only. Fix: drop "
                "initial_state, or stream the params of the recurrent layer"
            )
        self._unit = None
        self._stages = []  # ("layer", layer) | ("rnn", Recurrent, _Unit)
        self._head = []  # the layers after a recurrent layer that returns only its last output
        self._units = []
        for layer in obj.layers:
            where = f"layer {layer.name!r} ({type(layer).__name__})"
            if self._head or (self._stages and self._stages[-1][0] == "last"):
                if isinstance(layer, (Recurrent, Bidirectional)):
                    raise ValueError(
                        f"Stream cannot run {where}: it follows a recurrent layer that returns only "
                        "its last output, so it has no sequence to read"
                    )
            if isinstance(layer, Bidirectional):
                raise ValueError(
                    f"Stream cannot run {where}: its backward layer reads the sequence from its end, so it {_FUTURE}"
                )
            if isinstance(layer, Recurrent):
                if layer.go_backwards:
                    raise ValueError(
                        f"Stream cannot run {where}: go_backwards=True reads the sequence from its end, so it {_FUTURE}"
                    )
                unit = _Unit(layer.params, None, where)
                self._units.append(unit)
                self._stages.append(("rnn" if layer.return_sequences else "last", layer, unit))
            elif isinstance(layer, _PER_STEP):
                (self._head if self._stages and self._stages[-1][0] == "last" else self._stages).append(
                    ("layer", layer, None)
                )
            else:
                raise TypeError(
                    f"Stream cannot run {where}: it runs the layers that act on each step alone "
                    f"({', '.join(c.__name__ for c in _PER_STEP)}) and forward recurrent layers"
                )

    # --- the public surface ---------------------------------------------------------------------
    @property
    def batch_size(self):
        """The batch size fixed by the first call since construction or reset; None before it."""
        return self._B

    @property
    def state(self):
        """The current state: forward's structure for params (h_n, or (h_n, c_n) for LSTM; the
        initial_state, or None, before the first call); for a model, a list of that structure per
        recurrent layer (None before the first call)."""
        if self._stages is None:
            return self._unit.state()
        return None if self._B is None else [u.state() for u in self._units]

    def reset(self, rows=None):
        """Put rows back to the initial state: all of them (and release the batch size) when ``rows``
        is None, else the rows given as indices or a boolean (batch,) array; the other rows go on."""
        if rows is None:
            self._B = None
            for u in self._units:
                u.release()
            return
        if self._B is None:
            _rows(rows, None)  # checked; before the first call every row is at the initial state
            return
        sel = _rows(rows, self._B)
        for u in self._units:
            u.reset_rows(sel)
        if self._last_ran is not None:
            self._last_ran[sel] = True

    def __call__(self, x, mask=None, lengths=None):
        """The outputs for the chunk x (see the class docstring); one array."""
        unit = self._unit
        if unit is not None and unit.prepared is not None and mask is None and lengths is None:
            # the real-time path: a NumPy chunk of the stream's batch size, no masks
            if (
                x.__class__ is np.ndarray
                and x.dtype is unit.dtype
                and x.ndim == 3
                and x.shape[2] == unit.F
                and x.shape[1 if self._time_major else 0] == self._B
            ):
                if x.shape[0 if self._time_major else 1] == 1:  # one step: no chunk machinery at all
                    if self._time_major:
                        y = np.empty((1, self._B, unit.H_out), unit.dtype)
                        unit.step1(x[0], y[0])
                    else:
                        y = np.empty((self._B, 1, unit.H_out), unit.dtype)
                        unit.step1(x[:, 0], y[:, 0])
                    return y
                if self._time_major:
                    return unit.run(x, None, None)
                return unit.run(x.transpose(1, 0, 2), None, None).transpose(1, 0, 2)  # (B, t, H_out)
        if unit is not None:
            return self._call_params(x, mask, lengths)
        return self._call_model(x, mask, lengths)

    def __repr__(self):
        what = "params" if self._stages is None else "model"
        return f"Stream({what}, batch_size={self._B}, time_major={self._time_major})"

    # --- the general paths ----------------------------------------------------------------------
    def _batch(self, B, x):
        if self._B is None:
            for u in self._units:
                u.start(B, _xp.device(x))
            self._B = B
            if self._stages is not None:
                self._last_ran = np.ones((B, 1), dtype=bool)
        elif B != self._B:
            raise ValueError(
                f"the chunk has batch size {B} but this stream's batch size is {self._B} (fixed by the "
                "first call). Fix: stream.reset() to start over with another batch size, or pad the "
                "chunk to the stream's rows"
            )

    def _call_params(self, x, mask, lengths):
        unit, tm = self._unit, self._time_major
        t, B = unit.check(x, tm)
        self._batch(B, x)
        run, emit = unit.masks(x, t, mask, lengths, tm, False)
        xp = unit.xp
        y = unit.run(x if tm else xp.permute_dims(x, (1, 0, 2)), run, emit)  # (t, B, H_out)
        return y if tm else xp.permute_dims(y, (1, 0, 2))

    def _call_model(self, x, mask, lengths):
        if lengths is not None:
            raise TypeError(
                "lengths= is for params; a model takes mask= (batch, t) booleans. Fix: mask = "
                "steps < lengths, or Masking/Embedding(mask_zero=True) in the model"
            )
        if not _xp.is_array(x) or x.ndim < 2:
            raise ValueError(
                f"a model's chunk must be an array (batch, t, ...) ((t, batch, ...) with time_major); "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
        xp, tm = _xp.array_namespace(x), self._time_major
        swap = (1, 0, *range(2, x.ndim))
        t, B = (x.shape[0], x.shape[1]) if tm else (x.shape[1], x.shape[0])
        if mask is not None:
            mask = check_mask(mask, x, xp, B, t, tm)
            mask = xp.permute_dims(mask, (1, 0)) if tm else mask  # (B, t)
        if tm:
            x = xp.permute_dims(x, swap)  # (B, t, ...)
        self._batch(B, x)
        pred = None
        for kind, layer, unit in self._stages:
            if kind == "layer":
                x, mask = layer(x, mask)
                continue
            unit.check(x, False)
            run, emit = unit.masks(x, t, mask, None, False, layer.zero_output_for_mask)
            y = xp.permute_dims(unit.run(xp.permute_dims(x, (1, 0, 2)), run, emit), (1, 0, 2))  # (B, t, H_out)
            if kind == "rnn":
                x = y
                continue
            if t and run is not None:
                self._last_ran = np.array(_xp.to_host(run[-1, ...]), dtype=bool)  # (B, 1)
            elif t:
                self._last_ran[...] = True
            h = unit.h[-1]  # the top layer's state: its last output (Keras)
            if unit.half:
                h = xp.astype(h, unit.dtype)
            if layer.zero_output_for_mask and not self._last_ran.all():
                h = xp.where(_xp.from_host(self._last_ran, xp, _xp.device(h)), h, xp.zeros_like(h))
            pred = xp.asarray(h, copy=True) if unit.prepared is not None else h  # (B, H_out), the caller's
        if pred is None:
            return xp.permute_dims(x, (1, 0, *range(2, x.ndim))) if tm else x
        mask = None
        for _, layer, _ in self._head:
            pred, mask = layer(pred, mask)
        return pred


def _rows(rows, B):
    """Rows to reset as a host (B,) boolean array, from indices or a boolean (B,) array."""
    if isinstance(rows, (list, tuple, range)) or isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
        host = np.asarray(rows if not isinstance(rows, (int, np.integer)) else [rows])
        if host.size == 0:
            host = host.astype(np.int64)
    elif _xp.is_array(rows):
        host = np.asarray(_xp.to_host(rows))
    else:
        raise TypeError(
            f"rows must be row indices (ints, a list or an integer array) or a boolean (batch,) array; "
            f"got {type(rows).__name__}"
        )
    if host.dtype == bool:
        if B is not None and host.shape != (B,):
            raise ValueError(f"a boolean rows array has shape {host.shape}; expected ({B},), one flag per row")
        return host if B is not None else None
    if host.dtype.kind not in "iu" or host.ndim != 1:
        raise TypeError(
            f"rows must be integer indices or booleans (batch,); got dtype {host.dtype}, shape {host.shape}"
        )
    if B is None:
        return None
    if host.size and (host.min() < -B or host.max() >= B):
        raise ValueError(
            f"rows must lie in [{-B}, {B}) for this stream's batch size {B}; got "
            f"{host[(host < -B) | (host >= B)][:8].tolist()}"
        )
    sel = np.zeros(B, dtype=bool)
    sel[host] = True
    return sel
