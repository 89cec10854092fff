"""rnn_xp.from_torch on files (torch.save state_dicts, safetensors) and the way back; the module matrix
itself is in test_torch_parity.py."""

import itertools
import pickle

import numpy as np
import pytest
from conftest import assert_close, on

import rnn_xp

torch = pytest.importorskip("torch")

TOL = 2e-5
MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _module(cell, *, layers=2, bidirectional=True, bias=True, proj=0, nonlinearity="tanh", seed=0):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=True)
    if cell == "lstm":
        kw["proj_size"] = proj
    if cell == "rnn":
        kw["nonlinearity"] = nonlinearity
    m = MODULES[cell](4, 5, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m.eval()


def _compare(params, module, xp, seed=0):
    x = np.random.default_rng(seed).standard_normal((3, 6, 4)).astype(np.float32)
    with torch.no_grad():
        ty, ts = module(torch.from_numpy(x))
    y, s = rnn_xp.forward(on(xp, x), rnn_xp.to_device(params, xp))
    assert_close(y, ty.numpy(), xp=xp, dtype="float32", shape=tuple(ty.shape), atol=TOL)
    for a, b in zip(s if isinstance(s, tuple) else (s,), ts if isinstance(ts, tuple) else (ts,), strict=True):
        assert_close(a, b.numpy(), xp=xp, dtype="float32", shape=tuple(b.shape), atol=TOL)


FILE_MATRIX = [
    (cell, nl, bidir, bias, proj)
    for cell, nl, bidir, bias, proj in itertools.product(
        ["rnn", "lstm", "gru"], ["tanh", "relu"], [False, True], [True, False], [0, 3]
    )
    if (nl == "tanh" or cell == "rnn") and (proj == 0 or cell == "lstm")
]


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
@pytest.mark.parametrize("cell,nl,bidir,bias,proj", FILE_MATRIX)
def test_state_dict_files(tmp_path, xp, fmt, cell, nl, bidir, bias, proj):
    m = _module(cell, bidirectional=bidir, bias=bias, proj=proj, nonlinearity=nl, seed=len(FILE_MATRIX))
    path = tmp_path / f"weights.{'pt' if fmt == 'torch' else 'safetensors'}"
    if fmt == "torch":
        torch.save(m.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(m.state_dict(), path)
    params = rnn_xp.from_torch(path, nonlinearity=nl if cell == "rnn" else None)  # the cell from the shapes
    assert params.config == rnn_xp.from_torch(m).config
    _compare(params, m, xp)


def test_safetensors_needs_no_torch(tmp_path):
    from safetensors.numpy import save_file

    params = rnn_xp.init("gru", 3, 4, num_layers=2, bidirectional=True, seed=0, xp=np)
    sd = {k: v.numpy() for k, v in rnn_xp.to_torch_state_dict(params).items()}
    save_file(sd, tmp_path / "w.safetensors")
    again = rnn_xp.from_torch(str(tmp_path / "w.safetensors"))
    assert again.config == params.config
    for (n1, a1), (n2, a2) in zip(params.named_arrays(), again.named_arrays(), strict=True):
        assert n1 == n2
        np.testing.assert_array_equal(a1, a2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_way_back_through_a_file(tmp_path, cell):
    params = rnn_xp.init(
        cell, 4, 5, num_layers=2, bidirectional=True, seed=3, xp=np, proj_size=2 if cell == "lstm" else 0
    )
    torch.save(rnn_xp.to_torch_state_dict(params), tmp_path / "sd.pt")
    m = MODULES[cell](
        4, 5, num_layers=2, bidirectional=True, batch_first=True, **({"proj_size": 2} if cell == "lstm" else {})
    )
    m.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))  # strict: every key and shape
    _compare(params, m.eval(), rnn_xp._xp.as_namespace(np))


class _Evil:
    def __reduce__(self):
        import os

        return os.mkdir, ("PWNED",)


def test_files_that_are_not_state_dicts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_module("gru"), tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(ValueError, match=r"safe loader refuses .* torch.save\(module.state_dict\(\), path\)"):
        rnn_xp.from_torch(tmp_path / "module.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight_ih_l0": _Evil()}, f)
    with pytest.raises(ValueError, match="cannot be read by torch.load"):
        rnn_xp.from_torch(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()  # nothing from the file ran
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds a Tensor; expected a state_dict"):
        rnn_xp.from_torch(tmp_path / "tensor.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 not a torch file")
    with pytest.raises(ValueError, match="cannot be read by torch.load"):
        rnn_xp.from_torch(tmp_path / "garbage.pt")
    (tmp_path / "bad.safetensors").write_bytes((100).to_bytes(8, "little") + b"{ broken")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        rnn_xp.from_torch(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        rnn_xp.from_torch(tmp_path / "missing.pt")


def test_errors_say_what_fits():
    sd = {f"encoder.rnn.{k}": v for k, v in _module("lstm").state_dict().items()}
    with pytest.raises(ValueError, match=r"prefix 'encoder.rnn.' .*{k\[12:\]"):
        rnn_xp.from_torch(sd)
    stripped = {k[12:]: v for k, v in sd.items() if k.startswith("encoder.rnn.")}
    assert rnn_xp.from_torch(stripped).config.cell == "lstm"  # the fix the message gives works
    with pytest.raises(ValueError, match="expected a tensor or array"):
        rnn_xp.from_torch({"weight_ih_l0": [1.0, 2.0], "weight_hh_l0": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="cannot tell the cell"):
        rnn_xp.from_torch({"weight_ih_l0": torch.zeros(10, 3), "weight_hh_l0": torch.zeros(10, 5)})
    with pytest.raises(ValueError, match="read from the module"):
        rnn_xp.from_torch(_module("rnn"), nonlinearity="relu")
    with pytest.raises(TypeError, match="file holding one"):
        rnn_xp.from_torch(3)
