"""The `xp` fixture: every engine test runs on numpy, array_api_strict, torch (CPU) and cupy (GPU)."""

import importlib
import os

# The tests compile numba's kernels in the calling process (tests of the background compile set the mode
# they test): a test then sees the implementation it asks for, not numpy-fused while a kernel compiles.
os.environ.setdefault("RNN_XP_COMPILE", "wait")
# Block sizes a developer kept with `rnn-xp tune` stay out of the tests (tests/test_tune.py sets its own file).
os.environ.setdefault("RNN_XP_TUNING_FILE", "off")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnn_xp  # noqa: E402
from rnn_xp import _xp  # noqa: E402


def _cupy_reason():
    try:
        import cupy
    except Exception as e:  # noqa: BLE001
        return f"cupy is not importable ({type(e).__name__})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy sees no CUDA device"
    except Exception as e:  # noqa: BLE001
        return f"no CUDA device answers ({type(e).__name__})"
    return None


def _backend_params():
    out = [pytest.param("numpy", id="numpy"), pytest.param("array_api_strict", id="array_api_strict")]
    try:
        importlib.import_module("torch")
        out.append(pytest.param("torch", id="torch"))
    except ImportError:
        out.append(pytest.param("torch", id="torch", marks=pytest.mark.skip(reason="torch is not installed")))
    reason = _cupy_reason()
    marks = [pytest.mark.gpu] + ([pytest.mark.skip(reason=reason)] if reason else [])
    out.append(pytest.param("cupy", id="cupy", marks=marks))
    return out


@pytest.fixture(params=_backend_params())
def xp(request):
    """The Array-API namespace under test (array-api-compat wrapped for numpy, torch, cupy)."""
    return _xp.as_namespace(importlib.import_module(request.param))


def on(xp, host, dtype=None):
    """A host array moved into xp (default device), cast to dtype name if given."""
    host = np.asarray(host)
    if dtype is None and host.dtype.kind == "f":
        dtype = str(host.dtype)
    return _xp.from_host(host, xp, None, dtype) if host.dtype.kind == "f" else _xp.from_host(host, xp)


def assert_close(actual, expected, *, xp, dtype, shape, atol, rtol=0.0):
    """Namespace, device, dtype and shape first, then the values against a host reference."""
    assert _xp.namespace_name(_xp.array_namespace(actual)) == _xp.namespace_name(xp)
    assert _xp.dtype_name(actual.dtype) == dtype
    assert tuple(actual.shape) == tuple(shape)
    got = _xp.to_host(actual).astype(np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    assert np.all(np.isfinite(got) == np.isfinite(exp)), "non-finite values differ"
    err = np.abs(got - exp)
    bound = atol + rtol * np.abs(exp)
    assert np.all(err <= bound), f"max abs error {err.max():.3e} (atol {atol}, rtol {rtol})"


@pytest.fixture(scope="module")
def cp():
    """CuPy itself, for the GPU-only tests; skipped with the reason when no CUDA device answers."""
    reason = _cupy_reason()
    if reason:
        pytest.skip(reason)
    import cupy

    return cupy


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_report_header(config):
    return f"rnn_xp {rnn_xp.__version__}; cupy: {_cupy_reason() or 'usable'}"
