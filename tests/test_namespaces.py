"""The one Array-API path on namespaces beyond the xp fixture: JAX (eager, jit, grad, tracers),
array_api_strict's restricted devices, and the rules for where auxiliary arrays may live."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnn_xp
from rnn_xp import _xp

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax = pytest.importorskip("jax", reason="jax is not installed (pip install jax)")
jnp = jax.numpy
strict = pytest.importorskip("array_api_strict")


@pytest.fixture(scope="module")
def lstm():
    """A 2-layer bidirectional LSTM on NumPy and on JAX, and an input."""
    p = rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=0, xp=np)
    x = np.random.default_rng(0).standard_normal((3, 6, 3)).astype(np.float32)
    return p, rnn_xp.to_device(p, jnp), x


def test_jax_eager_matches_numpy(lstm):
    p, pj, x = lstm
    y, (h, c) = rnn_xp.forward(jnp.asarray(x), pj, lengths=[6, 2, 0])
    ny, (nh, nc) = rnn_xp.forward(x, p, lengths=[6, 2, 0])
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32 and y.shape == (3, 6, 8)
    np.testing.assert_allclose(np.asarray(y), ny, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c), nc, atol=1e-6)


def test_jit_equals_eager_with_traced_lengths_and_mask(lstm):
    _, pj, x = lstm
    xj = jnp.asarray(x)
    lengths = jnp.asarray([6, 2, 0], dtype=jnp.int32)
    mask = jnp.asarray(np.random.default_rng(1).random((3, 6)) > 0.3)
    eager = rnn_xp.forward(xj, pj, lengths=lengths, mask=mask)[0]
    jitted = jax.jit(lambda x, n, m: rnn_xp.forward(x, pj, lengths=n, mask=m)[0])(xj, lengths, mask)
    assert jitted.shape == eager.shape
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)
    assert rnn_xp.explain(xj, pj).implementation == "reference"


def test_grad_through_forward_equals_torch_autograd(lstm):
    torch = pytest.importorskip("torch")
    p1 = rnn_xp.init("lstm", 3, 5, seed=3, xp=np)
    x = np.random.default_rng(2).standard_normal((2, 7, 3)).astype(np.float32)
    pj = rnn_xp.to_device(p1, jnp)
    g = jax.grad(lambda x: jnp.sum(jnp.tanh(rnn_xp.forward(x, pj)[0]) * jnp.arange(5.0)))(jnp.asarray(x))
    m = torch.nn.LSTM(3, 5, batch_first=True)
    m.load_state_dict(rnn_xp.to_torch_state_dict(p1))
    xt = torch.tensor(x, requires_grad=True)
    (torch.tanh(m(xt)[0]) * torch.arange(5.0)).sum().backward()
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), atol=1e-5)
    assert np.abs(np.asarray(g)).max() > 1e-3  # a gradient that says something


def test_traced_lengths_skip_the_range_check_but_eager_ones_do_not(lstm):
    _, pj, x = lstm
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 6\]"):
        rnn_xp.forward(jnp.asarray(x), pj, lengths=jnp.asarray([7, 1, 1]))
    jax.jit(lambda x, n: rnn_xp.forward(x, pj, lengths=n)[0])(jnp.asarray(x), jnp.asarray([7, 1, 1]))


def test_jax_without_x64_says_how_to_enable_it():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is enabled in this process")
    p = rnn_xp.init("rnn", 2, 3, dtype="float64", xp=np)
    with pytest.warns(UserWarning), pytest.raises(TypeError, match="jax_enable_x64"):
        rnn_xp.to_device(p, jnp)


@pytest.mark.parametrize("device", ["no_float64", "no_x64"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_array_api_strict_devices_without_64_bit_types(device, cell):
    dev = strict.Device(device)
    p = rnn_xp.init(cell, 2, 3, num_layers=2, seed=1, xp=strict, device=dev)
    assert p.device == dev
    host = np.random.default_rng(4).standard_normal((2, 4, 2)).astype(np.float32)
    x = strict.asarray(host, device=dev)
    lengths = strict.asarray([4, 1], dtype=strict.int32, device=dev)
    y, _ = rnn_xp.forward(x, p, lengths=lengths, mask=[[True, True, False, True], [True] * 4])
    ref, _ = rnn_xp.forward(host, rnn_xp.to_device(p, np), lengths=[4, 1], mask=[[True, True, False, True], [True] * 4])
    assert y.device == dev and y.dtype == strict.float32
    np.testing.assert_allclose(np.asarray(strict.asarray(y, device=strict.Device("CPU_DEVICE"))), ref, atol=1e-6)


def test_lengths_in_x_namespace_make_no_host_round_trip(monkeypatch):
    p = rnn_xp.init("gru", 2, 3, seed=2, xp=strict)
    x = strict.asarray(np.ones((2, 3, 2), dtype=np.float32))
    expected = rnn_xp.forward(x, p, lengths=[3, 1])[0]

    def no_host(a):
        raise AssertionError("lengths went through the host")

    monkeypatch.setattr(_xp, "to_host", no_host)
    y = rnn_xp.forward(x, p, lengths=strict.asarray([3, 1]))[0]
    assert bool(strict.all(y == expected))


def test_lengths_and_masks_on_another_device_are_refused():
    p = rnn_xp.init("rnn", 2, 3, seed=2, xp=strict)
    x = strict.asarray(np.ones((2, 3, 2), dtype=np.float32))
    elsewhere = strict.Device("device1")
    with pytest.raises(TypeError, match="lengths is a array_api_strict array.*no silent transfers"):
        rnn_xp.forward(x, p, lengths=strict.asarray([3, 1], device=elsewhere))
    with pytest.raises(TypeError, match="mask is a array_api_strict array"):
        rnn_xp.forward(x, p, mask=strict.ones((2, 3), dtype=strict.bool, device=elsewhere))
