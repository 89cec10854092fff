"""Deprecated: the backend choice moved to :mod:`rnn_xp.backend` (``rnn_xp.select_backend``)."""

import warnings

from . import backend as _backend


def __getattr__(name):
    if hasattr(_backend, name):
        warnings.warn(
            f"rnn_xp.device.{name} moved to rnn_xp.backend.{name}; rnn_xp.device will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_backend, name)
    raise AttributeError(f"module 'rnn_xp.device' has no attribute {name!r}")
