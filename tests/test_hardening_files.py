"""Hostile files for every loader: load (.npz), from_torch (.pt, .safetensors), from_keras (.keras, .h5), from_onnx
(path and bytes). Each either returns a valid object or raises ValueError (FileNotFoundError for a missing path),
never runs pickled code, never writes to disk, and refuses huge declared sizes before reading them."""

import io
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import rnn_xp  # noqa: E402

torch = pytest.importorskip("torch")
MARKER = "rnn_xp_pwned"
# Keras 3 on torch warns inside itself when building and calling a model
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class _Evil:
    """Unpickling this would create the directory MARKER in the working directory."""

    def __reduce__(self):
        return os.mkdir, (MARKER,)


def _sd():
    return torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).state_dict()


def _make_npz(path):
    rnn_xp.save(rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=0, xp=np), path)


def _make_pt(path):
    torch.save(_sd(), path)


def _make_safetensors(path):
    from safetensors.torch import save_file

    save_file(_sd(), str(path))


def _keras_model():
    keras = pytest.importorskip("keras")
    L = keras.layers
    return keras.Sequential([keras.Input((5, 3)), L.Masking(), L.GRU(4, return_sequences=True), L.LSTM(2), L.Dense(1)])


def _make_keras(path):
    _keras_model().save(path)


def _make_legacy_h5(path):
    """A whole model as tf-keras 2.21 saved it (model.save("m.h5")), committed under tests/data/keras2."""
    path.write_bytes((Path(__file__).resolve().parent / "data" / "keras2" / "functional.h5").read_bytes())


def _onnx_bytes():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), n)
        for n, shape in (("W", (2, 9, 2)), ("R", (2, 9, 3)), ("B", (2, 18)))
    ]
    node = helper.make_node(
        "GRU",
        ["X", "W", "R", "B"],
        ["Y", "Yh"],
        name="gru",
        hidden_size=3,
        direction="bidirectional",
        linear_before_reset=1,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Yh")],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()


def _make_onnx(path):
    path.write_bytes(_onnx_bytes())


def _load_npz(path):
    return rnn_xp.load(path, xp=np)


def _load_onnx_bytes(path):
    return rnn_xp.from_onnx(path.read_bytes())


# kind -> (suffix, make(path), load(path))
LOADERS = {
    "npz": (".npz", _make_npz, _load_npz),
    "pt": (".pt", _make_pt, rnn_xp.from_torch),
    "safetensors": (".safetensors", _make_safetensors, rnn_xp.from_torch),
    "keras": (".keras", _make_keras, rnn_xp.from_keras),
    "h5": (".h5", _make_legacy_h5, rnn_xp.from_keras),
    "onnx": (".onnx", _make_onnx, rnn_xp.from_onnx),
    "onnx-bytes": (".onnx", _make_onnx, _load_onnx_bytes),
}
KINDS = list(LOADERS)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """kind -> the bytes of a valid file."""
    out = {}
    for kind, (suffix, make, _) in LOADERS.items():
        path = tmp_path_factory.mktemp(kind) / f"good{suffix}"
        make(path)
        out[kind] = path.read_bytes()
    return out


def _run(kind, tmp_path, data, name="f"):
    suffix, _, load = LOADERS[kind]
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(data)
    return load(path)


def _value_error_or_valid(kind, tmp_path, data, name="f"):
    """The one contract for a damaged file: a ValueError, or (bytes nobody reads) an object that works."""
    try:
        obj = _run(kind, tmp_path, data, name)
    except ValueError:
        return False
    assert rnn_xp.count_params(obj) > 0
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_garbage_truncated_and_tampered(kind, good, tmp_path):
    data = good[kind]
    for label, junk in (
        ("empty", b""),
        ("garbage", bytes(random.Random(0).randrange(256) for _ in range(3000))),
        ("text", b"not a model at all\n" * 50),
        ("zip of nothing", _zip({})),
    ):
        with pytest.raises(ValueError):
            _run(kind, tmp_path, junk, label.replace(" ", "_"))
    for cut in (1, 9, 64, len(data) // 3, len(data) // 2, len(data) - 1):
        if kind.startswith("onnx"):  # a protobuf prefix may parse: it must still be refused or valid
            _value_error_or_valid(kind, tmp_path, data[:cut], f"cut{cut}")
        else:
            with pytest.raises(ValueError):
                _run(kind, tmp_path, data[:cut], f"cut{cut}")
    rng = random.Random(kind)
    for i in range(25):  # bit flips anywhere: refused, or harmless
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        _value_error_or_valid(kind, tmp_path, bytes(buf), f"flip{i}")


@pytest.mark.parametrize("kind", KINDS[:-1])
def test_directory_and_missing_path(kind, tmp_path):
    _, _, load = LOADERS[kind]
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / f"missing{LOADERS[kind][0]}")


@pytest.mark.parametrize("kind", KINDS)
def test_loaders_never_write(kind, good, tmp_path, monkeypatch):
    """The input's folder, the working directory and the temporary directory stay as they were."""
    home, cwd, tmp = tmp_path / "input", tmp_path / "cwd", tmp_path / "tmp"
    for d in (home, cwd, tmp):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    suffix, _, load = LOADERS[kind]
    path = home / f"model{suffix}"
    path.write_bytes(good[kind])
    path.chmod(0o444)
    home.chmod(0o555)  # a write there would fail loudly, not only show up below
    try:
        obj = load(path)
    finally:
        home.chmod(0o755)
    assert rnn_xp.count_params(obj) > 0
    assert [p.name for p in home.iterdir()] == [path.name] and path.read_bytes() == good[kind]
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


def test_from_keras_of_a_live_model_never_writes(tmp_path, monkeypatch):
    model = _keras_model()
    model(np.zeros((1, 5, 3), np.float32))
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    imported = rnn_xp.from_keras(model)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(imported(x), model(x, training=False).detach().numpy(), atol=2e-5)
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


# --- pickles never run --------------------------------------------------------------------------------------
def test_pickle_payloads_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight_ih_l0": _Evil(), "weight_hh_l0": torch.zeros(4, 4)}, tmp_path / "zip.pt")  # torch's zip
    with open(tmp_path / "legacy.pt", "wb") as f:
        pickle.dump({"weight_ih_l0": _Evil()}, f)  # a bare pickle
    for name in ("zip.pt", "legacy.pt"):
        with pytest.raises(ValueError, match=r"torch.load\(weights_only=True\)"):
            rnn_xp.from_torch(tmp_path / name)
    npz = tmp_path / "evil.npz"
    _make_npz(tmp_path / "good.npz")
    with zipfile.ZipFile(tmp_path / "good.npz") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array([_Evil()] * 48, dtype=object).reshape(12, 4), allow_pickle=True)
    members["l0.fwd.w_hh.npy"] = buf.getvalue()
    npz.write_bytes(_zip(members))
    with pytest.raises(ValueError, match="not a valid rnn_xp file"):
        rnn_xp.load(npz, xp=np)
    assert not (tmp_path / MARKER).exists()


# --- zip archives: bombs, strange members ---------------------------------------------------------------------
def _zip(members, compression=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize(
    "kind,member", [("npz", "l0.fwd.w_ih.npy"), ("keras", "model.weights.h5"), ("keras", "config.json"), ("pt", None)]
)
def test_zip_bombs_are_refused_before_reading(kind, member, good, tmp_path, monkeypatch):
    """A member declaring ~200 MB that deflates to ~200 kB: refused from its declared size, never inflated."""
    members = _members(good[kind])
    member = member or next(n for n in members if n.endswith("/data/0"))  # a tensor's storage in torch's zip
    members[member] = members[member] + b"\0" * (200 << 20)
    data = _zip(members, zipfile.ZIP_DEFLATED)
    assert len(data) < (1 << 20)

    opened = zipfile.ZipFile.open

    def no_inflating(self, name, *args, **kwargs):
        assert getattr(name, "filename", name) != member, "the zip bomb was opened"
        return opened(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    with pytest.raises(ValueError, match="declares"):
        _run(kind, tmp_path, data)


@pytest.mark.parametrize("kind", ["npz", "keras", "pt"])
def test_unexpected_zip_members_are_never_extracted(kind, good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    members = _members(good[kind])
    members["../../escaped.txt"] = b"outside"
    members["payload.pkl"] = pickle.dumps(_Evil())
    valid = _value_error_or_valid(kind, tmp_path, _zip(members))
    assert valid == (kind == "keras") or kind == "pt"  # npz names every member in its header; keras ignores extras
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{LOADERS[kind][0]}"]


# --- weights that do not fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_torch_files_with_wrong_or_missing_weights(fmt, tmp_path):
    from safetensors.torch import save_file

    def write(sd, name):
        path = tmp_path / f"{name}.{fmt}"
        torch.save(sd, path) if fmt == "pt" else save_file(sd, str(path))
        return path

    sd = _sd()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "weight_hh_l1"}, "missing"),
        "shape": ({**sd, "bias_ih_l0": torch.zeros(15)}, "b_ih: shape"),
        "rank": ({**sd, "weight_ih_l0": torch.zeros(16)}, "non-empty 2-D"),
        "ints": ({**sd, "weight_hh_l0": torch.zeros(16, 4, dtype=torch.int32)}, "expected floating point"),
        "extra": ({**sd, "classifier.weight": torch.zeros(2, 2)}, "not an nn.RNN/LSTM/GRU weight"),
    }
    for name, (bad, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            rnn_xp.from_torch(write(bad, name))


def test_safetensors_with_a_huge_declared_header(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((1 << 60).to_bytes(8, "little") + b'{"weight_ih_l0": {}}')
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        rnn_xp.from_torch(path)


def _rewrite_weights(good, tmp_path, edit):
    import h5py

    members = _members(good)
    h5 = tmp_path / "w.h5"
    h5.write_bytes(members["model.weights.h5"])
    with h5py.File(h5, "a") as f:
        edit(f)
    members["model.weights.h5"] = h5.read_bytes()
    return _zip(members)


def test_keras_weights_missing_wrong_or_huge(good, tmp_path):
    def missing(f):
        del f["layers/gru/cell/vars/2"]

    def wrong_shape(f):
        del f["layers/gru/cell/vars/0"]
        f["layers/gru/cell/vars/0"] = np.zeros((3, 7), np.float32)

    def ints(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = np.zeros((2, 1), np.int32)

    def huge(f):  # ~40 GB declared, stored as nothing: chunks never written take no space
        del f["layers/gru/cell/vars/0"]
        f.create_dataset(
            "layers/gru/cell/vars/0", shape=(100_000, 100_000), dtype=np.float32, chunks=(100, 100), compression="gzip"
        )

    for edit, match in (
        (missing, "expected 3"),
        (wrong_shape, "kernel"),
        (ints, "floating point"),
        (huge, "more than the archive holds"),
    ):
        with pytest.raises(ValueError, match=match):
            _run("keras", tmp_path, _rewrite_weights(good["keras"], tmp_path, edit), edit.__name__)


def test_onnx_constant_folding_cannot_blow_up(tmp_path):
    """A few bytes of ConstantOfShape or a chain of Concat nodes asking for terabytes: refused before allocating."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(_onnx_bytes())
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "S"))
    graph.initializer.append(numpy_helper.from_array(np.ones(1000, np.float32), "C0"))
    bombs = {
        "ConstantOfShape": [helper.make_node("ConstantOfShape", ["S"], ["Z"], name="big")],
        "Concat": [
            helper.make_node("Concat", [f"C{i}", f"C{i}"], [f"C{i + 1}"], name=f"cat{i}", axis=0) for i in range(40)
        ],
    }
    for nodes in bombs.values():
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.node.extend([*nodes, helper.make_node("Identity", [nodes[-1].output[0]], ["out"], name="id")])
        m.graph.output.append(helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None))
        with pytest.raises(ValueError, match="folding the graph's constants would make more than"):
            rnn_xp.from_onnx(m.SerializeToString())


@pytest.mark.parametrize("kind", ["npz", "keras", "pt"])
def test_encrypted_zip_members(kind, good, tmp_path):
    """zipfile raises RuntimeError ("password required") or NotImplementedError for encrypted members."""
    data = bytearray(good[kind])
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local headers, central directory
        at = data.find(signature)
        while at >= 0:
            data[at + flags] |= 0x41  # encrypted, strong encryption
            at = data.find(signature, at + 4)
    if kind == "pt":  # torch's own zip reader ignores the flags: refused or read, never another exception
        _value_error_or_valid(kind, tmp_path, bytes(data))
    else:
        with pytest.raises(ValueError):
            _run(kind, tmp_path, bytes(data))
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data = bytearray(good[kind])
        at = data.find(signature)
        data[at + flags] |= 0x01  # only the first member, traditional encryption
        _value_error_or_valid(kind, tmp_path, bytes(data), f"first{flags}")


def test_onnx_names_that_are_not_utf8(tmp_path):
    """protobuf returns such a name as bytes (found by tests/fuzz_harness.py: a TypeError from sorting them)."""
    data = _onnx_bytes()
    for field in (b"hidden_size", b"linear_before_reset", b"gru"):  # attribute names, the node name
        at = data.rindex(field)
        bad = data[:at] + b"\x80" + data[at + 1 :]
        with pytest.raises(ValueError, match="not UTF-8"):
            rnn_xp.from_onnx(bad)


# --- legacy Keras HDF5 ---------------------------------------------------------------------------------------
def _edit_h5(data, tmp_path, edit):
    import h5py

    path = tmp_path / "edited.h5"
    path.write_bytes(data)
    with h5py.File(path, "a") as f:
        edit(f)
    return path.read_bytes()


def test_legacy_h5_weights_missing_linked_or_huge(good, tmp_path):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.ones((4, 15), np.float32)
    lstm = "model_weights/lstm_3/lstm_3/lstm_cell"

    def missing(f):
        del f[f"{lstm}/bias:0"]

    def linked(f):
        del f[f"{lstm}/kernel:0"]
        f[f"{lstm}/kernel:0"] = h5py.ExternalLink(str(other), "secret")

    def soft(f):
        del f[f"{lstm}/kernel:0"]
        f[f"{lstm}/kernel:0"] = h5py.SoftLink("/model_weights/dense_4/dense_4/kernel:0")

    def huge(f):  # ~40 GB declared, stored as nothing: chunks never written take no space
        del f[f"{lstm}/kernel:0"]
        f.create_dataset(f"{lstm}/kernel:0", shape=(100_000, 100_000), dtype=np.float32, chunks=(100, 100))

    def hard_links(f):  # one dataset under many names: each read is small, all of them together are not
        g = f["model_weights/lstm_3"]
        names = [f"lstm_3/lstm_cell/k{i}" for i in range(2000)]
        for n in names:
            g[n] = g["lstm_3/lstm_cell/recurrent_kernel:0"]
        g.attrs["weight_names"] = ["lstm_3/lstm_cell/kernel:0", *names]

    def references(f):  # an attribute of object references where Keras writes strings
        f["model_weights"].attrs["layer_names"] = np.array([f["model_weights"].ref], dtype=h5py.ref_dtype)

    def unknown_layer(f):
        f["model_weights"].attrs["layer_names"] = ["lstm_3", "nowhere"]

    for edit, match in (
        (missing, "does not hold it"),
        (linked, "links outside itself"),
        (soft, "links outside itself"),
        (huge, "more than the file holds"),
        (hard_links, "more than the file holds"),
        (references, "expected strings"),
        (unknown_layer, "lists 'nowhere', which the file does not hold"),
    ):
        with pytest.raises(ValueError, match=match):
            _run("h5", tmp_path, _edit_h5(good["h5"], tmp_path, edit), edit.__name__)


def test_damaged_global_heaps_are_refused_before_hdf5_reads_them(good, tmp_path):
    """HDF5 2.0 walks a global heap by its objects' declared sizes and loops forever on a free-space object of size
    0; Keras's attributes (model_config, layer_names) are variable-length strings stored there."""
    data = good["h5"]
    at = data.find(b"GCOL")
    assert at > 0 and data[at + 4] == 1  # a global heap collection, version 1
    zero_free = bytearray(data)
    zero_free[at + 16 : at + 32] = bytes(16)  # the first object: index 0 (free space), size 0
    beyond = bytearray(data)
    beyond[at + 24 : at + 32] = (1 << 40).to_bytes(8, "little")  # an object larger than its collection
    short = data[: at + 64]  # a collection cut short
    for name, bad in (("zero", zero_free), ("beyond", beyond), ("short", short)):
        with pytest.raises(ValueError, match="damaged HDF5 file"):
            _run("h5", tmp_path, bytes(bad), name)
