"""rnn_xp: the forward pass of SimpleRNN, LSTM and GRU on any Array-API namespace.

One code path runs on NumPy (CPU), CuPy (CUDA GPU), PyTorch tensors and any other
Array-API namespace; the numbers match PyTorch, Keras and ONNX.

    >>> import numpy as np, rnn_xp
    >>> params = rnn_xp.init("lstm", 32, 64, num_layers=2, seed=0, xp=np)
    >>> x = np.random.default_rng(0).standard_normal((8, 100, 32), dtype=np.float32)
    >>> y, (h_n, c_n) = rnn_xp.forward(x, params)
    >>> y.shape, h_n.shape
    ((8, 100, 64), (2, 8, 64))
"""

from .activations import Activation, softmax
from .backend import Backend, select_backend
from .cpu import get_num_threads, set_num_threads, warmup
from .engine import explain, forward
from .importers import from_keras, from_onnx, from_torch, to_torch_state_dict
from .importers.onnx import OnnxGraph
from .io import load, save
from .layers import (
    ActivationLayer,
    Bidirectional,
    Dense,
    Embedding,
    Identity,
    Masking,
    Recurrent,
    Sequential,
    Softmax,
    seed_model,
    text_classifier,
)
from .params import CellWeights, RNNConfig, RNNParams, init
from .seam import implementations
from .stream import Stream
from .tools import count_params, summary, to_device

__version__ = "0.2.0"

rnn_forward = forward  # the name tutorials give the function: rnn_forward(x, params)

__all__ = [
    "Activation",
    "ActivationLayer",
    "Backend",
    "Bidirectional",
    "CellWeights",
    "Dense",
    "Embedding",
    "Identity",
    "Masking",
    "OnnxGraph",
    "RNNConfig",
    "RNNParams",
    "Recurrent",
    "Sequential",
    "Softmax",
    "Stream",
    "__version__",
    "count_params",
    "explain",
    "forward",
    "from_keras",
    "from_onnx",
    "from_torch",
    "get_num_threads",
    "implementations",
    "init",
    "load",
    "rnn_forward",
    "save",
    "seed_model",
    "select_backend",
    "set_num_threads",
    "softmax",
    "summary",
    "text_classifier",
    "to_device",
    "to_torch_state_dict",
    "warmup",
]
