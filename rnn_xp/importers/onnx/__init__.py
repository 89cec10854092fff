"""ONNX: the importer (onnx.ModelProto -> OnnxGraph), the graph runtime it builds and its operators."""

from .graph import OnnxGraph
from .importer import SUPPORTED, from_onnx
from .ops import OPS

__all__ = ["OnnxGraph", "from_onnx", "OPS", "SUPPORTED"]
