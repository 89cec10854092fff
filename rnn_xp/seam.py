"""The seam: the one place that decides which implementation runs a forward call, and says why.

An implementation is a module of :mod:`rnn_xp._fast` (the reference loop lives in
:mod:`rnn_xp.loop`) that defines

- ``NAMESPACES``: the namespace names it runs on ('numpy', 'cupy', ...), or None for all;
- ``unsupported(call) -> str | None``: why it cannot run this :class:`Call`, or None when it can;
- optionally ``unsuited(call) -> str | None``: why ``impl="auto"`` should leave a call it can run to a
  later implementation (it would be slower, e.g. a weight arrangement that a single step does not
  repay); an explicit ``impl=`` still runs it;
- ``run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None)``: the contract of
  :func:`rnn_xp.loop.run_direction`. An implementation that accepts ``call.trace`` also takes
  ``trace=True`` and then returns the trace dict as a fourth item; the others decline such calls.

:func:`select_runner` asks the candidates in order and takes the first that can run the call;
``impl="auto"`` falls back along the list and records every reason, an explicit ``impl=`` that
cannot run raises ValueError with its reason. Runners never fall back on their own. Modules are
imported on first use, so ``import rnn_xp`` imports no fast path (and never CuPy).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from . import _xp
from .params import RNNConfig

__all__ = ["Call", "Choice", "select_runner", "described", "implementations", "IMPLEMENTATIONS"]


class Implementation(NamedTuple):
    name: str
    module: str  # in rnn_xp._fast, or "loop" for the reference
    auto: bool  # whether impl="auto" may choose it


# impl="auto" tries these in order; the reference, last, runs everything.
IMPLEMENTATIONS = (
    # verified on an H200 (bench/results/gpu-*): auto up to the step sizes where it was measured to win
    Implementation("cupy-persistent", "cupy_persistent", auto=True),
    Implementation("cupy-fused", "cupy_fused", auto=True),
    Implementation("numba", "numba_cpu", auto=True),  # needs numba: pip install 'rnn_xp[numba]'
    Implementation("numpy-fused", "numpy_fused", auto=True),
    Implementation("reference", "loop", auto=True),
)
_BY_NAME = {i.name: i for i in IMPLEMENTATIONS}


class Call(NamedTuple):
    """What an implementation may need to know to accept or decline a forward call (a tuple: every forward call
    makes one, and a frozen dataclass took a microsecond more)."""

    namespace: str  # 'numpy', 'cupy', 'torch', 'jax', 'array_api_strict', ...
    cfg: RNNConfig
    dtype: str  # the compute dtype ('float32' for float16/bfloat16 inputs)
    steps: int
    batch: int
    device: object = None
    lengths: bool = False  # lengths given
    mask: bool = False  # a mask given
    trace: bool = False  # per-step states and gates asked for
    traced: bool = False  # the arrays are tracers (jax.jit): no host round trips, no in-place writes
    writeable: bool = True  # the namespace's arrays support in-place writes


@dataclass(frozen=True)
class Choice:
    """The implementation chosen for a call, and why each one before it was skipped."""

    implementation: str
    skipped: tuple = field(default=())  # ((name, reason), ...)
    runner: object = field(default=None, repr=False, compare=False)
    detail: str = ""  # what the implementation says of how it runs the call (explain only)

    def __str__(self):
        lines = [f"implementation: {self.implementation}"]
        if self.detail:
            lines.append(f"  {self.detail}")
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


_MODULES: dict = {}  # implementation name -> its module, imported on first use


def _module(impl):
    mod = _MODULES.get(impl.name)
    if mod is None:
        name = "rnn_xp.loop" if impl.module == "loop" else f"rnn_xp._fast.{impl.module}"
        mod = _MODULES[impl.name] = importlib.import_module(name)
    return mod


def _reason(impl, call):
    """Why ``impl`` cannot run ``call``, or None."""
    mod = _module(impl)
    spaces = getattr(mod, "NAMESPACES", None)
    if spaces is not None and call.namespace not in spaces:
        return f"runs on {', '.join(spaces)}, not on {call.namespace}"
    return mod.unsupported(call)


def select_runner(call: Call, impl: str = "auto") -> Choice:
    """The implementation that runs ``call``: the first able one (``impl="auto"``) or the one named."""
    if not isinstance(impl, str) or impl not in ("auto", *_BY_NAME):
        raise ValueError(f"impl={impl!r} is unknown; expected 'auto' or one of {list(_BY_NAME)}")
    if impl != "auto":
        reason = _reason(_BY_NAME[impl], call)
        if reason is not None:
            raise ValueError(
                f"impl={impl!r} cannot run this call: {reason}. Fix: impl='auto' (chooses an "
                f"implementation that can; rnn_xp.explain(...) shows which and why)"
            )
        return Choice(impl, (), _module(_BY_NAME[impl]).run_direction)
    skipped = []
    for candidate in IMPLEMENTATIONS:
        mod = _module(candidate)
        spaces = getattr(mod, "NAMESPACES", None)
        if spaces is not None and call.namespace not in spaces:
            continue  # not for this namespace: not worth listing
        reason = mod.unsupported(call) if candidate.auto else f"opt-in only (impl={candidate.name!r})"
        if reason is None and getattr(mod, "unsuited", None) is not None:
            reason = mod.unsuited(call)
        if reason is None:
            return Choice(candidate.name, tuple(skipped), mod.run_direction) if skipped else _first(candidate, mod)
        skipped.append((candidate.name, reason))
    raise AssertionError("the reference implementation declined a call")  # it declines nothing


_FIRST: dict = {}  # implementation name -> its Choice with nothing skipped (most forward calls make one)


def _first(impl, mod):
    choice = _FIRST.get(impl.name)
    if choice is None or choice.runner is not mod.run_direction:
        choice = _FIRST[impl.name] = Choice(impl.name, (), mod.run_direction)
    return choice


def described(choice: Choice, call: Call) -> Choice:
    """``choice`` with the detail its implementation gives of the call (``describe(call)``, where it has one)."""
    describe = getattr(_module(_BY_NAME[choice.implementation]), "describe", None)
    return choice if describe is None else replace(choice, detail=describe(call))


def implementations(xp=None) -> list[str]:
    """Names of the implementations that may run on namespace ``xp`` (all when None), in auto order."""
    name = None if xp is None else _xp.namespace_name(_xp.as_namespace(xp))
    out = []
    for impl in IMPLEMENTATIONS:
        spaces = getattr(_module(impl), "NAMESPACES", None)
        if name is None or spaces is None or name in spaces:
            out.append(impl.name)
    return out
