"""Importers from other frameworks; each imports its framework lazily, when called."""

from .keras import from_keras
from .onnx import from_onnx
from .torch import from_torch, to_torch_state_dict

__all__ = ["from_keras", "from_onnx", "from_torch", "to_torch_state_dict"]
