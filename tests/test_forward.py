"""The engine against the independent float64 loop, on every backend."""

import itertools

import numpy as np
import pytest
from conftest import assert_close, on
from reference import reference_forward

import rnn_xp
from rnn_xp import _xp

F32, F64 = 2e-5, 1e-10


def _run(xp, params, x_host, dtype, **kw):
    """forward on xp vs the reference; returns nothing, asserts y and the state."""
    p = rnn_xp.to_device(params, xp, dtype=dtype)
    x = on(xp, x_host, dtype)
    init = kw.pop("initial_state", None)
    init_xp = None
    if init is not None:
        init_xp = tuple(on(xp, s, dtype) for s in init) if isinstance(init, tuple) else on(xp, init, dtype)
    y, state = rnn_xp.forward(x, p, init_xp, **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("lengths", "mask", "zero_output_for_mask")}
    ry, rh, rc = reference_forward(x_host, params, init, **ref_kw)
    tol = F32 if dtype == "float32" else F64
    B, T = x_host.shape[:2]
    cfg = params.config
    LD = cfg.num_layers * cfg.num_directions
    assert_close(y, ry, xp=xp, dtype=dtype, shape=(B, T, cfg.num_directions * cfg.output_size), atol=tol)
    if cfg.cell == "lstm":
        h, c = state
        assert_close(c, rc, xp=xp, dtype=dtype, shape=(LD, B, cfg.hidden_size), atol=tol)
    else:
        h = state
    assert_close(h, rh, xp=xp, dtype=dtype, shape=(LD, B, cfg.output_size), atol=tol)


CELL_OPTIONS = [
    ("rnn", {}),
    ("rnn", {"activations": ["relu"], "bias": "single"}),
    ("lstm", {}),
    ("lstm", {"proj_size": 3, "num_layers": 2}),
    ("lstm", {"peepholes": True, "input_forget": True, "clip": 0.7}),
    ("gru", {}),
    ("gru", {"reset_after": False, "bias": "single"}),
    ("gru", {"bias": False, "clip": 0.5}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts", CELL_OPTIONS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CELL_OPTIONS)])
def test_matches_reference(xp, rng, cell, opts, direction, dtype):
    opts = {"num_layers": 2, **opts}
    params = rnn_xp.init(cell, 4, 5, direction=direction, seed=7, dtype="float64", xp=np, **opts)
    x = rng.standard_normal((3, 6, 4))
    _run(xp, params, x, dtype)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lengths_mask_and_initial_state(xp, rng, cell):
    params = rnn_xp.init(
        cell,
        3,
        4,
        num_layers=2,
        bidirectional=True,
        seed=1,
        dtype="float64",
        xp=np,
        proj_size=2 if cell == "lstm" else 0,
    )
    B, T = 5, 7
    x = rng.standard_normal((B, T, 3))
    cfg = params.config
    h0 = rng.standard_normal((4, B, cfg.output_size))
    init = (h0, rng.standard_normal((4, B, 4))) if cell == "lstm" else h0
    lengths = np.array([7, 0, 3, 1, 5])
    mask = rng.random((B, T)) > 0.3
    mask[:, 0] = False  # masked first steps output zero, not h0 (Keras)
    for kw in (
        {"lengths": lengths},
        {"mask": mask},
        {"mask": mask, "zero_output_for_mask": True},
        {"lengths": lengths, "mask": mask},
    ):
        _run(xp, params, x, "float64", initial_state=init, **kw)


def test_lengths_as_list_and_length_zero(xp, rng):
    params = rnn_xp.init("gru", 3, 4, seed=1, dtype="float64", xp=np)
    x = rng.standard_normal((3, 5, 3))
    h0 = rng.standard_normal((1, 3, 4))
    p = rnn_xp.to_device(params, xp)
    y, h = rnn_xp.forward(on(xp, x), p, on(xp, h0), lengths=[5, 0, 2])
    y, h = _xp.to_host(y), _xp.to_host(h)
    assert np.all(y[1] == 0) and np.all(y[2, 2:] == 0)
    np.testing.assert_array_equal(h[0, 1], h0[0, 1])  # length 0: the state is the initial state


def test_time_major(xp, rng):
    params = rnn_xp.init("lstm", 3, 4, bidirectional=True, seed=2, dtype="float64", xp=np)
    p = rnn_xp.to_device(params, xp)
    x = rng.standard_normal((2, 6, 3))
    mask = rng.random((2, 6)) > 0.4
    y_b, s_b = rnn_xp.forward(on(xp, x), p, mask=on(xp, mask))
    y_t, s_t = rnn_xp.forward(
        on(xp, np.ascontiguousarray(x.transpose(1, 0, 2))), p, mask=on(xp, mask.T), time_major=True
    )
    assert tuple(y_t.shape) == (6, 2, 8)
    np.testing.assert_allclose(_xp.to_host(y_t).transpose(1, 0, 2), _xp.to_host(y_b), atol=1e-12)
    np.testing.assert_allclose(_xp.to_host(s_t[1]), _xp.to_host(s_b[1]), atol=1e-12)


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (0, 4, 3), (2, 0, 3), (1, 5, 1), (0, 0, 2)])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_degenerate_sizes(xp, rng, cell, B, T, H):
    params = rnn_xp.init(cell, 2, H, num_layers=2, bidirectional=True, seed=3, dtype="float64", xp=np)
    x = rng.standard_normal((B, T, 2))
    _run(xp, params, x, "float64")
    if B:
        _run(xp, params, x, "float64", lengths=np.zeros(B, dtype=np.int64))


ALL_ACTIVATIONS = [
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
    "tanh",
    "relu",
    "sigmoid",
    "hard_sigmoid",
    "leaky_relu",
    "elu",
    "selu",
    "softsign",
    "softplus",
    "linear",
    "relu6",
    "silu",
    "hard_silu",
    "exponential",
    "log_sigmoid",
    "hard_tanh",
    "mish",
    "tanh_shrink",
]


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_every_activation(xp, rng, name):
    # as the rnn's f with random alpha/beta, and as the lstm's g and h
    params = rnn_xp.init(
        "rnn", 3, 4, activations=[name], activation_alpha=[0.3], activation_beta=[0.6], seed=4, dtype="float64", xp=np
    )
    scale = 0.3 if name == "exponential" else 2.0  # exp feeding back on itself overflows otherwise
    _run(xp, params, rng.standard_normal((2, 4, 3)) * scale, "float64")
    g = "Tanh" if name == "exponential" else name
    params = rnn_xp.init("lstm", 3, 4, activations=["Sigmoid", g, name], seed=5, dtype="float64", xp=np)
    _run(xp, params, rng.standard_normal((2, 4, 3)), "float64")


def test_onnx_alpha_beta_go_to_functions_that_take_them(rng):
    # alpha list [0.1, 0.2]: Tanh takes none, LeakyRelu takes 0.1, Affine takes 0.2 (and beta 0.9)
    p = rnn_xp.init(
        "lstm",
        2,
        3,
        activations=["LeakyRelu", "Tanh", "Affine"],
        activation_alpha=[0.1, 0.2],
        activation_beta=[0.9],
        xp=np,
    )
    f, g, h = p.config.activations[0]
    assert (f.alpha, g.alpha, h.alpha, h.beta) == (0.1, None, 0.2, 0.9)
    p = rnn_xp.init(
        "gru",
        2,
        3,
        direction="bidirectional",
        activations=["Sigmoid", "Tanh", "HardSigmoid", "Elu"],
        activation_alpha=[0.3, 0.4],
        xp=np,
    )
    assert p.config.activations[0][1].name == "Tanh" and p.config.activations[1] == (
        rnn_xp.Activation("HardSigmoid", 0.3, 0.5),
        rnn_xp.Activation("Elu", 0.4),
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_low_precision(xp, rng, cell, dtype):
    try:
        _xp.resolve_dtype(xp, dtype)
    except TypeError:
        pytest.skip(f"{_xp.namespace_name(xp)} has no {dtype}")
    params = rnn_xp.init(cell, 4, 8, num_layers=2, seed=6, dtype="float64", xp=np)
    x = rng.standard_normal((3, 10, 4))
    p = rnn_xp.to_device(params, xp, dtype=dtype)
    y, _ = rnn_xp.forward(on(xp, x, dtype), p)
    assert _xp.dtype_name(y.dtype) == dtype
    # the reference sees exactly the rounded weights and inputs the low-precision run saw
    ry, _, _ = reference_forward(_xp.to_host(on(xp, x, dtype)), rnn_xp.to_device(p, np, dtype="float64"))
    got = _xp.to_host(y).astype(np.float64)
    assert np.abs(got - ry).max() <= 1e-2 * np.abs(ry).max()  # relative to the outputs' scale


def test_input_projection_is_chunked(xp, rng, monkeypatch):
    """Tiny chunks give the same numbers: memory is bounded by a chunk, not by T."""
    import importlib

    fw = importlib.import_module("rnn_xp.loop")

    params = rnn_xp.init("gru", 3, 4, bidirectional=True, seed=8, dtype="float64", xp=np)
    x = rng.standard_normal((2, 9, 3))
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 1)
    assert fw.time_chunks(9, 24, False, 48) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    _run(xp, params, x, "float64", lengths=np.array([9, 4]))


def test_outputs_stay_on_the_inputs_namespace(xp, rng):
    p = rnn_xp.init("lstm", 3, 4, seed=0, xp=xp)
    y, (h, c) = rnn_xp.forward(on(xp, rng.standard_normal((2, 3, 3)), "float32"), p)
    for a in (y, h, c):
        assert _xp.same_namespace(_xp.array_namespace(a), xp)
        assert _xp.device(a) == p.device


def test_all_option_combinations_small(rng):
    """Every pairing of the cell options at once on numpy (the backends are covered above)."""
    for cell, direction, bias, layers in itertools.product(
        ["rnn", "lstm", "gru"], ["forward", "bidirectional"], [True, "single", False], [1, 3]
    ):
        params = rnn_xp.init(
            cell, 3, 4, num_layers=layers, direction=direction, bias=bias, seed=9, dtype="float64", xp=np
        )
        _run(_xp.as_namespace(np), params, rng.standard_normal((2, 3, 3)), "float64", lengths=np.array([3, 2]))
