"""Backend choice: CuPy on a machine with a usable CUDA GPU, NumPy otherwise."""

from __future__ import annotations

import os
from typing import NamedTuple

from . import _xp

__all__ = ["Backend", "select_backend", "resolve_target", "ENV_VAR"]

ENV_VAR = "RNN_XP_BACKEND"
_CHOICES = ("auto", "numpy", "cupy")


class Backend(NamedTuple):
    """The chosen namespace, its device, the backend's name and why it was chosen."""

    xp: object
    device: object
    name: str
    reason: str


def _probe_cupy():
    """(cupy namespace, device) if CuPy imports and a CUDA device answers, else (None, why not)."""
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken CUDA install raising anything
        return None, f"CuPy is not importable ({type(e).__name__}: {e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return None, "CuPy imports but sees no CUDA device"
        cupy.zeros(1).sum().item()  # a device that answers, not only a driver that loads
        return cupy, cupy.cuda.Device()
    except Exception as e:  # noqa: BLE001 - no driver, no device, out of memory, ...
        return None, f"CuPy imports but no CUDA device answers ({type(e).__name__}: {e})"


def select_backend(name: str | None = None) -> Backend:
    """Pick the array backend.

    ``name``: "auto", "numpy" or "cupy"; None reads the environment variable
    ``RNN_XP_BACKEND`` (default "auto"). "auto" uses CuPy when it imports and a
    CUDA device answers, else NumPy. An explicit "cupy" without a usable GPU raises.
    """
    source = "argument"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto") or "auto", f"${ENV_VAR}"
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        fix = f"{ENV_VAR}=auto (or numpy, or cupy), or unset it" if source != "argument" else "select_backend('auto')"
        raise ValueError(
            f"backend {name!r} (from the {source}) is unknown; expected one of {', '.join(_CHOICES)}. "
            f"Fix: {fix}. (Other namespaces, such as torch, need no backend: pass their arrays, and "
            "rnn_xp.to_device(params, 'torch') for the weights)"
        )
    name = name.lower()
    if name == "numpy":
        import numpy

        return Backend(_xp.as_namespace(numpy), "cpu", "numpy", f"numpy requested ({source})")
    cupy, info = _probe_cupy()
    if cupy is not None:
        dev_name = _gpu_name(cupy, info)
        why = "requested" if name == "cupy" else "auto: a CUDA device answers"
        return Backend(_xp.as_namespace(cupy), info, "cupy", f"cupy {why} ({dev_name})")
    if name == "cupy":
        raise RuntimeError(
            f"backend 'cupy' was requested ({source}) but is not usable: {info}. Fix: on a machine with an "
            "NVIDIA GPU, install the extra matching its CUDA major version (pip install 'rnn_xp[cuda12]' or "
            f"'rnn_xp[cuda13]'), or choose 'numpy' ({ENV_VAR}=numpy)"
        )
    import numpy

    return Backend(_xp.as_namespace(numpy), "cpu", "numpy", f"auto: NumPy fallback, {info}")


def _gpu_name(cupy, dev):
    try:
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is only decoration
        return f"CUDA device {getattr(dev, 'id', '?')}"


def resolve_target(xp, device):
    """(namespace, device) for the ``xp=``/``device=`` arguments of init, load and the layers' init:
    ``xp=None`` asks :func:`select_backend`; a module or its name is wrapped by array-api-compat."""
    if xp is None:
        backend = select_backend()
        return backend.xp, backend.device if device is None else device
    return _xp.as_namespace(xp), device
