"""Deprecated: the ONNX graph runtime moved to :mod:`rnn_xp.importers.onnx.graph`."""

import warnings

from .importers.onnx import graph as _graph


def __getattr__(name):
    if hasattr(_graph, name):
        warnings.warn(
            f"rnn_xp.graph.{name} moved to rnn_xp.importers.onnx.graph.{name}; rnn_xp.graph will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_graph, name)
    raise AttributeError(f"module 'rnn_xp.graph' has no attribute {name!r}")
