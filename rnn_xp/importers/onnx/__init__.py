"""ONNX: the importer (onnx.ModelProto -> OnnxGraph) and the graph runtime it builds, in one package."""

from .graph import OnnxGraph
from .importer import from_onnx

__all__ = ["OnnxGraph", "from_onnx"]
