"""Importers from other frameworks; each imports its framework lazily."""

from .torch import from_torch, to_torch_state_dict

__all__ = ["from_torch", "to_torch_state_dict"]
