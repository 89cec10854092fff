"""Deprecated: the layers moved to :mod:`rnn_xp.layers` (and softmax & co. to :mod:`rnn_xp.activations`)."""

import warnings

from . import activations as _activations
from . import layers as _layers


def __getattr__(name):
    for home in (_layers, _activations):
        if hasattr(home, name):
            warnings.warn(
                f"rnn_xp.model.{name} moved to {home.__name__}.{name}; rnn_xp.model will be removed",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(home, name)
    raise AttributeError(f"module 'rnn_xp.model' has no attribute {name!r}")
