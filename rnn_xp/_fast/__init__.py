"""The seam between the reference loop and faster implementations of it.

An implementation is a function with the signature of :func:`rnn_xp.forward.run_direction`
(one layer and direction). ``select_runner`` picks one for a namespace; every implementation
here is tested against the reference. Fast-path modules are imported lazily.
"""

from __future__ import annotations

from .. import _xp

__all__ = ["select_runner", "implementations"]


def _reference():
    from ..forward import run_direction
    return run_direction


def _cupy_fused():
    from .cupy_fused import load
    return load()


def _cupy_persistent():
    from .cupy_persistent import load
    return load()


def _numpy_fused():
    from .numpy_fused import load
    return load()


# name -> (namespaces it runs on, loader returning the runner or None when unusable)
_IMPLS = {
    "reference": (None, _reference),
    "numpy-fused": (("numpy",), _numpy_fused),
    "cupy-fused": (("cupy",), _cupy_fused),
    # not in _AUTO until a GPU round has verified it (issue 6): select it with impl="cupy-persistent"
    "cupy-persistent": (("cupy",), _cupy_persistent),
}
# preferred order for impl="auto", per namespace name
_AUTO = {
    "numpy": ("numpy-fused",),
    "cupy": ("cupy-fused",),
}


def implementations(xp=None) -> list[str]:
    """Names of the implementations usable on namespace xp (all when xp is None)."""
    name = None if xp is None else _xp.namespace_name(xp)
    return [n for n, (spaces, _) in _IMPLS.items() if spaces is None or name is None or name in spaces]


def select_runner(xp, cfg, impl="auto"):
    name = _xp.namespace_name(xp)
    if not isinstance(impl, str) or impl not in ("auto", *_IMPLS):
        raise ValueError(f"impl={impl!r} is unknown; expected 'auto' or one of {implementations()}")
    if impl == "auto":
        for candidate in _AUTO.get(name, ()):
            runner = _IMPLS[candidate][1]()
            if runner is not None:
                return runner
        return _reference()
    spaces, load = _IMPLS[impl]
    if spaces is not None and name not in spaces:
        raise ValueError(f"impl={impl!r} runs on {sorted(spaces)}, not on {name}; use impl='auto'")
    runner = load()
    if runner is None:
        raise ValueError(f"impl={impl!r} is not usable here; use impl='auto'")
    return runner
