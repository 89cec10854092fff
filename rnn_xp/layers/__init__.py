"""Model pieces: the layers of Keras's recurrent models, and a chain of them.

A Keras text classifier, ``Embedding(5000, 32) -> SimpleRNN(100) -> Dense(1, sigmoid)``::

    model = rnn_xp.Sequential([
        rnn_xp.Embedding.init(5000, 32, seed=0),
        rnn_xp.Recurrent(rnn_xp.init("rnn", 32, 100, bias="single", seed=1)),
        rnn_xp.Dense.init(100, 1, activation="sigmoid", seed=2),
    ], input_shape=(250,))
    probs = model(token_ids)  # (batch, 1)

Layers are immutable. Every layer maps ``(x, mask) -> (y, mask)`` with Keras's mask rules, so
that masks (from ``Embedding(mask_zero=True)`` or ``Masking``) flow into the recurrent layers.
The protocol every layer and model speaks is described in :mod:`rnn_xp.layers.base`.
"""

from .base import REGISTRY, from_config, register
from .basic import ActivationLayer, Dense, Embedding, Identity, Masking, Softmax
from .recurrent import MERGE_MODES, Bidirectional, Recurrent
from .sequential import Sequential, seed_model, text_classifier

__all__ = [
    "ActivationLayer",
    "Bidirectional",
    "Dense",
    "Embedding",
    "Identity",
    "MERGE_MODES",
    "Masking",
    "REGISTRY",
    "Recurrent",
    "Sequential",
    "Softmax",
    "from_config",
    "register",
    "seed_model",
    "text_classifier",
]
