"""Namespace and device helpers: the only module that imports array-api-compat.

Everything else in rnn_xp asks this module which Array-API namespace an array
belongs to, on which device it lives, and how to move host (NumPy) data there.
"""

from __future__ import annotations

import contextlib
import sys

import array_api_compat
import numpy as np
from array_api_compat import array_namespace as _array_namespace
from array_api_compat import device as _device
from array_api_compat import is_array_api_obj

__all__ = [
    "array_namespace",
    "device",
    "is_array",
    "is_dask_array",
    "namespace_name",
    "same_namespace",
    "dtype_name",
    "resolve_dtype",
    "to_host",
    "from_host",
    "as_namespace",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
HALF_DTYPES = ("float16", "bfloat16")


# NumPy arrays are answered without asking array-api-compat: its checks cost microseconds a call,
# which is most of a one-step forward call on small inputs
_NP_NAMESPACE = _array_namespace(np.empty(0))


def array_namespace(*arrays, **kwargs):
    """array-api-compat's array_namespace (the wrapped namespace of the arrays)."""
    if len(arrays) == 1 and not kwargs and type(arrays[0]) is np.ndarray:
        return _NP_NAMESPACE
    return _array_namespace(*arrays, **kwargs)


def device(a):
    """array-api-compat's device ('cpu' for NumPy)."""
    return "cpu" if type(a) is np.ndarray else _device(a)


def is_array(obj) -> bool:
    return type(obj) is np.ndarray or is_array_api_obj(obj)


def is_dask_array(obj) -> bool:
    """Whether obj is a dask array (never imports dask: False when dask.array was never imported)."""
    return type(obj) is not np.ndarray and bool(array_api_compat.is_dask_array(obj))


def is_real_floating(xp, dtype) -> bool:
    """xp.isdtype(dtype, 'real floating'), answered for NumPy's dtypes without the call."""
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return True
    return xp.isdtype(dtype, "real floating")


_NAMESPACE_TESTS = (
    ("numpy", array_api_compat.is_numpy_namespace),
    ("cupy", array_api_compat.is_cupy_namespace),
    ("torch", array_api_compat.is_torch_namespace),
    ("jax", array_api_compat.is_jax_namespace),
    ("dask.array", array_api_compat.is_dask_namespace),
    ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
    ("ndonnx", array_api_compat.is_ndonnx_namespace),
    ("sparse", array_api_compat.is_pydata_sparse_namespace),
)


def namespace_name(xp) -> str:
    """'numpy', 'cupy', 'torch', 'jax', 'dask.array', 'array_api_strict', ... for a namespace module."""
    if xp is _NP_NAMESPACE:
        return "numpy"
    if not isinstance(getattr(xp, "__name__", None), str):
        return type(xp).__name__  # not a module: its type, for the error that follows
    for name, test in _NAMESPACE_TESTS:
        if test(xp):
            return name
    return getattr(xp, "__name__", type(xp).__name__)


# namespaces by the names users type: module to import, the install that brings it
_BY_NAME = {
    "numpy": ("numpy", "pip install numpy"),
    "cupy": ("cupy", "pip install 'rnn_xp[cuda13]' ('rnn_xp[cuda12]' for a CUDA 12 driver)"),
    "torch": ("torch", "pip install torch"),
    "array_api_strict": ("array_api_strict", "pip install array-api-strict"),
    "jax": ("jax.numpy", "pip install jax"),
    "jax.numpy": ("jax.numpy", "pip install jax"),
    "dask": ("dask.array", "pip install 'dask[array]'"),
    "dask.array": ("dask.array", "pip install 'dask[array]'"),
}


def _import_by_name(name):
    import importlib

    if name not in _BY_NAME:
        raise TypeError(
            f"xp={name!r} is not an array namespace rnn_xp knows by name; expected one of "
            f"{', '.join(map(repr, _BY_NAME))}, or pass the module itself"
        )
    module, install = _BY_NAME[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModuleNotFoundError(
            f"xp={name!r} needs {module}, which does not import here ({e}). Fix: {install}"
        ) from None


def as_namespace(xp):
    """The array-api-compat wrapped namespace for a module such as numpy, cupy or torch, or its name."""
    if xp is None:
        return None
    if isinstance(xp, str):
        xp = _import_by_name(xp)
    name = namespace_name(xp)
    if name == "numpy":
        return array_api_compat.array_namespace(np.empty(0))
    if name in ("cupy", "torch", "dask.array"):
        import importlib

        return importlib.import_module("array_api_compat." + name)
    if not hasattr(xp, "asarray") or not hasattr(xp, "matmul"):
        raise TypeError(
            f"xp={xp!r} is not an array namespace; expected a module such as numpy, cupy, "
            "torch or array_api_strict, or its name ('numpy', 'cupy', 'torch', 'array_api_strict', 'jax')"
        )
    return xp


def same_namespace(a, b) -> bool:
    return namespace_name(a) == namespace_name(b)


_DTYPE_NAMES: dict = {}  # dtype object -> its name in the standard ('float32', ...), per namespace met


def _learn_dtypes(xp):
    """Record the names of the dtypes of namespace xp, from its ``__array_namespace_info__``."""
    try:
        dtypes = xp.__array_namespace_info__().dtypes()
    except Exception:  # noqa: BLE001 - a namespace without the inspection API (older releases)
        return
    for name, dt in dtypes.items():
        with contextlib.suppress(TypeError):  # an unhashable dtype cannot be a key
            _DTYPE_NAMES.setdefault((type(dt), dt), name)
    for name in HALF_DTYPES:  # outside the standard's table, but present in numpy, torch, cupy, jax
        dt = getattr(xp, name, None)
        if dt is not None:
            with contextlib.suppress(TypeError):
                _DTYPE_NAMES.setdefault((type(dt), dt), name)


def dtype_name(dtype, xp=None) -> str:
    """The standard's name of a dtype of any namespace ('float32', 'int64', 'bool', ...); 'bfloat16' too."""
    try:
        return _DTYPE_NAMES[(type(dtype), dtype)]
    except (KeyError, TypeError):  # not met yet, or unhashable
        pass
    spaces = [xp] if xp is not None else []
    spaces += [np] + [
        array_namespace(_probe(m)) for m in ("torch", "array_api_strict", "cupy", "jax.numpy") if _probe(m) is not None
    ]
    for space in spaces:
        _learn_dtypes(as_namespace(space) if space is not np else array_namespace(np.empty(0)))
    with contextlib.suppress(KeyError, TypeError):
        return _DTYPE_NAMES[(type(dtype), dtype)]
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.dtype(dtype).name  # numpy scalar types, and numpy-compatible dtypes (ml_dtypes' bfloat16)
    return str(dtype)


def _probe(module_name):
    """An empty array of an already imported module (never imports one), or None."""
    mod = sys.modules.get(module_name)
    if mod is None:
        return None
    try:
        return mod.asarray([])
    except Exception:  # noqa: BLE001 - a half-initialised or exotic module
        return None


def is_writeable(a) -> bool:
    """Whether the arrays of a's namespace take in-place writes (False for JAX)."""
    if type(a) is np.ndarray:
        return a.flags.writeable
    return bool(array_api_compat.is_writeable_array(a))


def is_traced(a) -> bool:
    """Whether a is a JAX tracer (inside jax.jit or jax.grad): its values are not known on the host."""
    if type(a) is np.ndarray or not array_api_compat.is_jax_array(a):
        return False
    import jax

    return isinstance(a, jax.core.Tracer)


def same_device(a, b) -> bool:
    """Whether two devices are the same; None (a traced array's device under jax.jit) is not told apart."""
    return a is None or b is None or a == b


def resolve_dtype(xp, name: str):
    """The dtype object called `name` in namespace xp, or a TypeError if it has none."""
    if name not in FLOAT_DTYPES:
        raise TypeError(f"dtype={name!r} is not supported; expected one of {', '.join(FLOAT_DTYPES)}")
    dt = getattr(xp, name, None)
    if dt is None:
        raise TypeError(
            f"the namespace {namespace_name(xp)!r} has no {name}; use float32 or float64 there, "
            "or move to a namespace that has it (torch has float16 and bfloat16, numpy float16)"
        )
    return dt


def to_host(a) -> np.ndarray:
    """A NumPy copy of any array (cupy, torch, array_api_strict, ...); bfloat16 becomes float32."""
    if isinstance(a, np.ndarray):
        return a
    name = namespace_name(array_namespace(a))
    if name == "cupy":
        return a.get()
    if name == "torch":
        t = a.detach().cpu()
        if dtype_name(t.dtype) == "bfloat16":
            t = t.float()  # NumPy has no bfloat16; float32 holds every bfloat16 exactly
        return t.numpy()
    try:
        return np.from_dlpack(a)
    except Exception:  # noqa: BLE001 - not every namespace's DLPack reaches the host
        return np.asarray(a)


def check_device(xp, dev):
    """A ValueError naming the namespace when ``dev`` is none of its devices (tried on an empty array)."""
    if dev is None:
        return
    name = namespace_name(xp)
    try:
        if name == "numpy" and str(dev) != "cpu":
            raise ValueError("numpy's only device is 'cpu'")
        if name != "numpy":
            xp.asarray(np.zeros(0, dtype=bool), device=dev)  # each namespace refuses a device it lacks in its own way
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, array_api_strict ValueError, cupy its own
        raise ValueError(
            f"device={dev!r} is not a device of {name} ({type(e).__name__}: {e}). Fix: pass "
            "device=None (the namespace's default device) or one of its devices"
        ) from None


def from_host(host: np.ndarray, xp, dev=None, dtype_name_: str | None = None):
    """Put a NumPy array into namespace xp on device dev, cast to dtype_name_ if given."""
    xp = as_namespace(xp)
    name = namespace_name(xp)
    host = np.array(host, copy=True, order="C")  # never share memory with the caller's array
    if dtype_name_ in ("float16", "float32", "float64") and name != "torch":
        host = host.astype(dtype_name_, copy=False)
    check_device(xp, dev)
    out = host if name == "numpy" else xp.asarray(host) if dev is None else xp.asarray(host, device=dev)
    if dtype_name_ is not None and dtype_name(out.dtype) != dtype_name_:
        out = xp.astype(out, resolve_dtype(xp, dtype_name_))
    if dtype_name_ is not None and dtype_name(out.dtype) != dtype_name_:
        hint = (
            " JAX computes in 32 bits unless told otherwise. Fix: jax.config.update('jax_enable_x64', True) "
            "before creating arrays, or use float32"
            if name == "jax"
            else " Fix: use a dtype it has"
        )
        raise TypeError(f"{name} turned {dtype_name_} data into {dtype_name(out.dtype)}.{hint}")
    return out
