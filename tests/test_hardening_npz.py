"""Hostile .npz files: load() either returns valid params or raises ValueError, never anything else."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_xp


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "good.npz"
    rnn_xp.save(rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=0, xp=np), path)
    return path.read_bytes()


def _load_bytes(tmp_path, data, name="f.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return rnn_xp.load(path, xp=np)


def _expect_value_error_or_valid(tmp_path, data):
    try:
        p = _load_bytes(tmp_path, data)
    except ValueError as e:
        assert "not a valid rnn_xp file" in str(e)
        return
    assert isinstance(p, rnn_xp.RNNParams)  # a flip in bytes nobody reads may leave a valid file
    rnn_xp.forward(np.zeros((1, 2, 3), np.float32), p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files(tmp_path, good_bytes, data):
    buf = bytearray(good_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    _expect_value_error_or_valid(tmp_path, bytes(buf))


def _archive(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _npy(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def _header(obj):
    return _npy(np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8))


def test_hostile_headers(tmp_path, good_bytes):
    with zipfile.ZipFile(io.BytesIO(good_bytes)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(np.load(io.BytesIO(members["__rnn_xp__.npy"])).tobytes())
    cases = {
        "huge layer count": {**header, "config": {**header["config"], "num_layers": 10**12}},
        "deep nesting": None,
        "not an object": [1, 2, 3],
        "wrong format": {**header, "format": "other"},
        "future version": {**header, "version": 99},
        "unknown kind": {**header, "kind": "tensor"},
        "unknown config key": {**header, "config": {**header["config"], "evil": 1}},
        "bad activation": {**header, "config": {**header["config"], "activations": [[["Nope", None, None]] * 3] * 2}},
        "non-canonical alpha": {
            **header,
            "config": {**header["config"], "activations": [[["Tanh", 5.0, None]] * 3] * 2},
        },
        "negative hidden": {**header, "config": {**header["config"], "hidden_size": -4}},
    }
    for label, h in cases.items():
        m = dict(members)
        m["__rnn_xp__.npy"] = (
            _npy(np.frombuffer(b"[" * 100000 + b"]" * 100000, dtype=np.uint8)) if h is None else _header(h)
        )
        with pytest.raises(ValueError, match="not a valid rnn_xp file"):
            _load_bytes(tmp_path, _archive(m), f"{label.replace(' ', '_')}.npz")


def test_zip_bomb_and_unexpected_members(tmp_path, good_bytes):
    with zipfile.ZipFile(io.BytesIO(good_bytes)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    bomb = dict(members)
    # a member declaring ~25 MB that deflates to a few KB: rejected before it is read
    big = np.zeros((16, 200_000), np.float64)
    bomb["l0.fwd.w_hh.npy"] = _npy(big)
    with pytest.raises(ValueError, match="declares"):
        _load_bytes(tmp_path, _archive(bomb), "bomb.npz")
    extra = dict(members)
    extra["payload.pkl"] = b"cos\nsystem\n(S'echo pwned'\ntR."
    with pytest.raises(ValueError, match="unexpected"):
        _load_bytes(tmp_path, _archive(extra), "extra.npz")
    ints = dict(members)
    ints["l0.fwd.b_ih.npy"] = _npy(np.zeros(16, np.int64))
    with pytest.raises(ValueError, match="floating"):
        _load_bytes(tmp_path, _archive(ints), "ints.npz")


def test_load_never_writes(tmp_path, good_bytes):
    path = tmp_path / "p.npz"
    path.write_bytes(good_bytes)
    path.chmod(0o444)
    before = sorted(p.name for p in tmp_path.iterdir())
    rnn_xp.load(path, xp=np)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and path.read_bytes() == good_bytes
