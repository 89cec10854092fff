"""PyTorch nn.RNN / nn.LSTM / nn.GRU as the peer: the same numbers, option by option."""

import itertools

import numpy as np
import pytest
from conftest import on

import rnn_xp
from rnn_xp import _xp

torch = pytest.importorskip("torch")

TOL = {"float32": 2e-5, "float64": 1e-10}

# (cell, nonlinearity) x layers x bidirectional x bias x proj: the full matrix, sampled pairwise below
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", None)]


def _module(cell, nonlinearity, *, layers, bidirectional, bias, proj, dtype, seed):
    torch.manual_seed(seed)
    kw = dict(
        input_size=5,
        hidden_size=6,
        num_layers=layers,
        bidirectional=bidirectional,
        bias=bias,
        batch_first=True,
        dtype=getattr(torch, dtype),
    )
    if cell == "rnn":
        m = torch.nn.RNN(nonlinearity=nonlinearity, **kw)
    elif cell == "lstm":
        m = torch.nn.LSTM(proj_size=proj, **kw)
    else:
        m = torch.nn.GRU(**kw)
    with torch.no_grad():  # non-symmetric weights of a larger spread than the default init
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m.eval()


def _matrix():
    out = []
    for (cell, nl), layers, bidir, bias, proj, dtype in itertools.product(
        CELLS, [1, 2, 3], [False, True], [True, False], [0, 3], ["float32", "float64"]
    ):
        if proj and cell != "lstm":
            continue
        out.append((cell, nl, layers, bidir, bias, proj, dtype))
    return out


def _compare(actual, expected, dtype):
    exp = expected.detach().numpy()
    got = _xp.to_host(actual)
    assert got.shape == exp.shape and str(got.dtype) == dtype
    err = np.abs(got.astype(np.float64) - exp).max() if exp.size else 0.0
    assert err <= TOL[dtype], f"max abs error {err:.3e} > {TOL[dtype]}"


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell,nl,layers,bidir,bias,proj,dtype", _matrix())
def test_module_matrix(cell, nl, layers, bidir, bias, proj, dtype):
    m = _module(cell, nl, layers=layers, bidirectional=bidir, bias=bias, proj=proj, dtype=dtype, seed=layers)
    params = rnn_xp.from_torch(m)
    rng = np.random.default_rng(layers + 10 * bidir)
    x = rng.standard_normal((4, 7, 5)).astype(dtype)
    D = 2 if bidir else 1
    Hout = proj or 6
    h0 = rng.standard_normal((layers * D, 4, Hout)).astype(dtype)
    c0 = rng.standard_normal((layers * D, 4, 6)).astype(dtype)
    init = (h0, c0) if cell == "lstm" else h0
    t_init = tuple(map(torch.from_numpy, init)) if cell == "lstm" else torch.from_numpy(init)
    with torch.no_grad():
        ty, ts = m(torch.from_numpy(x), t_init)
    y, s = rnn_xp.forward(x, params, init)
    _compare(y, ty, dtype)
    for a, b in zip(_states(s), _states(ts), strict=True):
        _compare(a, b, dtype)
    # right-padded batches through packed sequences; PyTorch rejects length 0
    lengths = [7, 2, 5, 1]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        py, ps = m(packed, t_init)
    py, _ = torch.nn.utils.rnn.pad_packed_sequence(py, batch_first=True, total_length=7)
    y, s = rnn_xp.forward(x, params, init, lengths=np.array(lengths))
    _compare(y, py, dtype)
    for a, b in zip(_states(s), _states(ps), strict=True):
        _compare(a, b, dtype)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_on_every_backend(xp, cell):
    """Imported weights moved to each namespace give torch's numbers there."""
    m = _module(
        cell, "tanh", layers=2, bidirectional=True, bias=True, proj=2 if cell == "lstm" else 0, dtype="float32", seed=5
    )
    params = rnn_xp.to_device(rnn_xp.from_torch(m), xp)
    x = np.random.default_rng(3).standard_normal((3, 6, 5)).astype(np.float32)
    with torch.no_grad():
        ty, ts = m(torch.from_numpy(x))
    y, s = rnn_xp.forward(on(xp, x), params)
    assert _xp.same_namespace(_xp.array_namespace(y), xp)
    _compare(y, ty, "float32")
    for a, b in zip(_states(s), _states(ts), strict=True):
        _compare(a, b, "float32")


def test_time_major_module(rng):
    m = torch.nn.GRU(4, 3, num_layers=2, bidirectional=True).eval()  # batch_first=False
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    with torch.no_grad():
        ty, th = m(torch.from_numpy(x))
    y, h = rnn_xp.forward(x, rnn_xp.from_torch(m), time_major=True)
    _compare(y, ty, "float32")
    _compare(h, th, "float32")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_state_dict_round_trip(cell, rng):
    params = rnn_xp.init(
        cell, 4, 5, num_layers=2, bidirectional=True, seed=11, xp=np, proj_size=3 if cell == "lstm" else 0
    )
    sd = rnn_xp.to_torch_state_dict(params)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    kw = {"proj_size": 3} if cell == "lstm" else {}
    m = cls(4, 5, num_layers=2, bidirectional=True, batch_first=True, **kw)
    m.load_state_dict(sd)  # strict: every key and shape matches
    again = rnn_xp.from_torch(sd, nonlinearity="tanh" if cell == "rnn" else None)  # cell inferred from the shapes
    assert again.config == params.config
    for (n1, a1), (n2, a2) in zip(params.named_arrays(), again.named_arrays(), strict=True):
        assert n1 == n2
        np.testing.assert_array_equal(a1, a2)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    with torch.no_grad():
        ty, _ = m(torch.from_numpy(x))
    _compare(rnn_xp.forward(x, params)[0], ty, "float32")


def test_state_dict_needs_nonlinearity_for_relu(rng):
    m = torch.nn.RNN(3, 4, nonlinearity="relu", batch_first=True).eval()
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        ty, _ = m(torch.from_numpy(x))
    _compare(rnn_xp.forward(x, rnn_xp.from_torch(m.state_dict(), nonlinearity="relu"))[0], ty, "float32")
    with pytest.warns(UserWarning, match="assuming 'tanh'"):  # a state_dict cannot tell
        wrong = rnn_xp.forward(x, rnn_xp.from_torch(m.state_dict()))[0]
    assert np.abs(_xp.to_host(wrong) - ty.numpy()).max() > 1e-3


def test_from_torch_errors():
    with pytest.raises(TypeError, match="nn.RNN"):
        rnn_xp.from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="not an nn.RNN/LSTM/GRU weight"):
        rnn_xp.from_torch({"weight": torch.zeros(2, 2)})
    sd = torch.nn.LSTM(3, 4).state_dict()
    sd["weight_hh_l0"] = torch.zeros(16, 5)
    with pytest.raises(ValueError, match="consistent LSTM"):
        rnn_xp.from_torch(sd, cell="lstm")
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_xp.from_torch(torch.nn.LSTM(3, 4).state_dict(), nonlinearity="relu")
    with pytest.raises(ValueError, match="single bias"):
        rnn_xp.to_torch_state_dict(rnn_xp.init("rnn", 2, 3, bias="single", xp=np))
