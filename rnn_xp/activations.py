"""Activation functions of recurrent cells, written once against the Array API.

Two families of names:

* the eleven ONNX functions, spelled as ONNX spells them (``Tanh``, ``HardSigmoid``,
  ...), with ONNX's meaning and defaults for ``alpha`` and ``beta``;
* the lower-case names users type, with Keras 3's meaning (``hard_sigmoid`` is
  ``clip(x/6 + 1/2, 0, 1)``, ``leaky_relu`` has slope 0.2), which is also what
  PyTorch means by ``tanh``, ``relu`` and ``sigmoid``.

Every function here is elementwise (the fast paths rely on it); the functions of a whole axis
(softmax, ...) are layers' activations, at the end of this module.

Each name resolves to an :class:`Activation`: a canonical ONNX function plus its
alpha and beta, so that every spelling of the same function compares equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _xp

__all__ = [
    "Activation",
    "resolve",
    "apply",
    "ONNX_NAMES",
    "names",
    "softmax",
    "log_softmax",
    "sparsemax",
    "AXIS_ACTIVATIONS",
]


@dataclass(frozen=True)
class Activation:
    """One resolved activation: ``name`` (canonical) with its ``alpha`` and ``beta``."""

    name: str
    alpha: float | None = None
    beta: float | None = None

    def __call__(self, x, xp):
        return _FUNCS[self.name](x, xp, self.alpha, self.beta)

    def to_json(self):
        return [self.name, self.alpha, self.beta]

    @classmethod
    def from_json(cls, value) -> Activation:
        """The inverse of :meth:`to_json`, for canonical values only (what :func:`resolve` returns)."""
        if not (isinstance(value, (list, tuple)) and len(value) == 3):
            raise ValueError(f"malformed activation {value!r}; expected [name, alpha, beta]")
        n, a, b = value
        try:
            act = cls(str(n), a if a is None else float(a), b if b is None else float(b))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"malformed activation {value!r}; alpha and beta must be numbers or null") from None
        if resolve(act.name, act.alpha, act.beta) != act:
            raise ValueError(f"activation {list(value)!r} is not canonical")
        return act


# Each function: (x, xp, alpha, beta) -> array of x's dtype and device.
def _relu(x, xp, a, b):
    return xp.maximum(x, xp.zeros_like(x))


def _widened(f):
    """f computed in float64 and rounded once, for float32 NumPy arrays (the gates' default functions).

    NumPy's float32 tanh and exp are up to 1.4 and ~3 ULP off: unbiased, but over hundreds of steps
    an LSTM's state then drifts about 1.5x further from float64 than PyTorch's, whose tanh is
    correctly rounded. Through float64 the result is correctly rounded but for rare near-ties.
    """

    def g(x, xp, a, b):
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            return f(x.astype(np.float64), xp, a, b).astype(np.float32)
        return f(x, xp, a, b)

    return g


def _tanh(x, xp, a, b):
    return xp.tanh(x)


def _sigmoid(x, xp, a, b):
    # With e = exp(-|x|) <= 1: 1/(1+e) for x >= 0 and e/(1+e) for x < 0, each within a few ULP and
    # never overflowing. (0.5*tanh(0.5x) + 0.5 is not: for x << 0 the sum cancels, ~700 ULP in float32,
    # biased, and the error accumulates in an LSTM's cell state over long sequences.)
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    return xp.where(x >= 0, r, e * r)


_tanh, _sigmoid = _widened(_tanh), _widened(_sigmoid)


def _affine(x, xp, a, b):
    return a * x + b


def _leaky_relu(x, xp, a, b):
    return xp.where(x >= 0, x, a * x)


def _thresholded_relu(x, xp, a, b):
    return xp.where(x > a, x, xp.zeros_like(x))


def _scaled_tanh(x, xp, a, b):
    return a * xp.tanh(b * x)


def _hard_sigmoid(x, xp, a, b):
    return xp.clip(a * x + b, 0.0, 1.0)


def _elu(x, xp, a, b):
    # expm1 of min(x, 0) so that large positive x never overflows
    return xp.where(x >= 0, x, a * xp.expm1(xp.minimum(x, xp.zeros_like(x))))


def _softsign(x, xp, a, b):
    return x / (1.0 + xp.abs(x))


def _softplus(x, xp, a, b):
    # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), stable for any x
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _selu(x, xp, a, b):
    return b * _elu(x, xp, a, None)


def _relu6(x, xp, a, b):
    return xp.clip(x, 0.0, 6.0)


def _silu(x, xp, a, b):
    return x * _sigmoid(x, xp, None, None)


def _hard_silu(x, xp, a, b):
    return x * _hard_sigmoid(x, xp, 1.0 / 6.0, 0.5)


def _exponential(x, xp, a, b):
    return xp.exp(x)


def _log_sigmoid(x, xp, a, b):
    return -_softplus(-x, xp, None, None)


def _hard_tanh(x, xp, a, b):
    return xp.clip(x, -1.0, 1.0)


def _mish(x, xp, a, b):
    return x * xp.tanh(_softplus(x, xp, None, None))


def _tanh_shrink(x, xp, a, b):
    return x - xp.tanh(x)


def _celu(x, xp, a, b):
    return xp.where(x >= 0, x, a * xp.expm1(xp.minimum(x, xp.zeros_like(x)) / a))


def _erf(x, xp):
    # The Array API has no erf: Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7
    t = 1.0 / (1.0 + 0.3275911 * xp.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * xp.exp(-x * x)
    return xp.where(x >= 0, y, -y)


def _gelu(x, xp, a, b):
    return 0.5 * x * (1.0 + _erf(x * 0.7071067811865476, xp))


def _hard_shrink(x, xp, a, b):
    return xp.where(xp.abs(x) > a, x, xp.zeros_like(x))


def _soft_shrink(x, xp, a, b):
    return xp.where(x > a, x - a, xp.where(x < -a, x + a, xp.zeros_like(x)))


def _sparse_plus(x, xp, a, b):
    return xp.where(x <= -1.0, xp.zeros_like(x), xp.where(x < 1.0, 0.25 * (x + 1.0) ** 2, x))


def _sparse_sigmoid(x, xp, a, b):
    return xp.clip(0.5 * (x + 1.0), 0.0, 1.0)


def _squareplus(x, xp, a, b):
    return 0.5 * (x + xp.sqrt(x * x + a))


# canonical name -> (function, takes alpha, takes beta, default alpha, default beta)
_SPEC = {
    "Relu": (_relu, False, False, None, None),
    "Tanh": (_tanh, False, False, None, None),
    "Sigmoid": (_sigmoid, False, False, None, None),
    "Affine": (_affine, True, True, 1.0, 0.0),
    "LeakyRelu": (_leaky_relu, True, False, 0.01, None),
    "ThresholdedRelu": (_thresholded_relu, True, False, 1.0, None),
    "ScaledTanh": (_scaled_tanh, True, True, 1.0, 1.0),
    "HardSigmoid": (_hard_sigmoid, True, True, 0.2, 0.5),
    "Elu": (_elu, True, False, 1.0, None),
    "Softsign": (_softsign, False, False, None, None),
    "Softplus": (_softplus, False, False, None, None),
    # beyond ONNX: Keras 3 activations that recurrent layers accept
    "Selu": (_selu, True, True, 1.6732632423543772, 1.0507009873554805),
    "Relu6": (_relu6, False, False, None, None),
    "Silu": (_silu, False, False, None, None),
    "HardSilu": (_hard_silu, False, False, None, None),
    "Exponential": (_exponential, False, False, None, None),
    "LogSigmoid": (_log_sigmoid, False, False, None, None),
    "HardTanh": (_hard_tanh, False, False, None, None),
    "Mish": (_mish, False, False, None, None),
    "TanhShrink": (_tanh_shrink, False, False, None, None),
    "Celu": (_celu, True, False, 1.0, None),
    "Gelu": (_gelu, False, False, None, None),
    "HardShrink": (_hard_shrink, True, False, 0.5, None),
    "SoftShrink": (_soft_shrink, True, False, 0.5, None),
    "SparsePlus": (_sparse_plus, False, False, None, None),
    "SparseSigmoid": (_sparse_sigmoid, False, False, None, None),
    "Squareplus": (_squareplus, True, False, 4.0, None),
}
_FUNCS = {name: spec[0] for name, spec in _SPEC.items()}

ONNX_NAMES = (
    "Relu",
    "Tanh",
    "Sigmoid",
    "Affine",
    "LeakyRelu",
    "ThresholdedRelu",
    "ScaledTanh",
    "HardSigmoid",
    "Elu",
    "Softsign",
    "Softplus",
)

# lower-case name -> (canonical, fixed alpha, fixed beta): Keras 3 / PyTorch meaning
_ALIASES = {
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "identity": ("Affine", 1.0, 0.0),
    "affine": ("Affine", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
    "thresholded_relu": ("ThresholdedRelu", None, None),
    "scaled_tanh": ("ScaledTanh", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "elu": ("Elu", 1.0, None),
    "selu": ("Selu", None, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "relu6": ("Relu6", None, None),
    "silu": ("Silu", None, None),
    "swish": ("Silu", None, None),
    "hard_silu": ("HardSilu", None, None),
    "hard_swish": ("HardSilu", None, None),
    "exponential": ("Exponential", None, None),
    "log_sigmoid": ("LogSigmoid", None, None),
    "hard_tanh": ("HardTanh", None, None),
    "mish": ("Mish", None, None),
    "tanh_shrink": ("TanhShrink", None, None),
    "celu": ("Celu", 1.0, None),
    "gelu": ("Gelu", None, None),
    "hard_shrink": ("HardShrink", 0.5, None),
    "soft_shrink": ("SoftShrink", 0.5, None),
    "sparse_plus": ("SparsePlus", None, None),
    "sparse_sigmoid": ("SparseSigmoid", None, None),
    "squareplus": ("Squareplus", 4.0, None),
}
_BY_LOWER = {name.lower(): name for name in _SPEC}


def names() -> list[str]:
    """Every accepted activation name."""
    return sorted(set(_SPEC) | set(_ALIASES))


def takes(name: str) -> tuple[bool, bool]:
    """(takes alpha, takes beta) for a canonical name."""
    spec = _SPEC[name]
    return spec[1], spec[2]


def resolve(spec, alpha=None, beta=None) -> Activation:
    """Turn a name (or an Activation) into a canonical :class:`Activation`.

    ``alpha``/``beta`` override the defaults for functions that take them.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an activation must be a name (str); got {type(spec).__name__} {spec!r}")
    if spec in _SPEC:
        canonical, fixed_a, fixed_b = spec, None, None
    elif spec in _ALIASES:
        canonical, fixed_a, fixed_b = _ALIASES[spec]
    elif spec.lower() in _BY_LOWER and spec.lower() not in _ALIASES:
        canonical, fixed_a, fixed_b = _BY_LOWER[spec.lower()], None, None
    else:
        raise ValueError(f"unknown activation {spec!r}; expected one of: {', '.join(names())}")
    _, takes_a, takes_b, default_a, default_b = _SPEC[canonical]
    a = (alpha if alpha is not None else fixed_a if fixed_a is not None else default_a) if takes_a else None
    b = (beta if beta is not None else fixed_b if fixed_b is not None else default_b) if takes_b else None
    for label, v in (("alpha", a), ("beta", b)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"activation {spec!r}: {label}={v!r} must be a finite number")
    return Activation(canonical, None if a is None else float(a), None if b is None else float(b))


def apply(act: Activation, x, xp):
    return act(x, xp)


# --- functions of the whole last axis (Dense and Activation layers; cells take only elementwise ones) ---


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, shifted by the max so it never overflows."""
    xp = _xp.array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along axis, without forming the softmax."""
    xp = _xp.array_namespace(x)
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def sparsemax(x, axis=-1):
    """The Euclidean projection of x onto the simplex along the last axis: max(x - tau, 0)."""
    if axis not in (-1, x.ndim - 1):
        raise ValueError(f"sparsemax runs along the last axis; got axis={axis}")
    xp = _xp.array_namespace(x)
    z = xp.sort(x, axis=-1, descending=True)
    cum = xp.cumulative_sum(z, axis=-1)
    k = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=_xp.device(x))
    support = z - (cum - 1.0) / k > 0  # the sorted prefix that stays positive
    n = xp.sum(xp.astype(support, x.dtype), axis=-1, keepdims=True)
    tau = (xp.sum(xp.where(support, cum, xp.zeros_like(cum)), axis=-1, keepdims=True) - 1.0) / n
    return xp.maximum(x - tau, xp.zeros_like(x))


AXIS_ACTIVATIONS = {"softmax": softmax, "log_softmax": log_softmax, "sparsemax": sparsemax}
