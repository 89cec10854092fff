"""Small hostile files and special paths for every loader (load, from_torch, from_keras, from_onnx).

Each case is a file of a few kilobytes built here. Where a regression could exhaust the machine's memory or
hang (a zip bomb, a stride-0 tensor, a cycle in a config, /dev/zero, a FIFO), the loader runs in a child
process under a memory limit (RLIMIT_AS) and a timeout, so a regression fails this test instead of the run.
"""

import bz2
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import rnn_xp  # noqa: E402

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
CHILD_MEMORY = 3 << 30  # torch and keras import within it; a regression asking for gigabytes gets MemoryError


def run_child(code, timeout=180, memory=CHILD_MEMORY):
    """Run ``code`` in a child under a memory limit and a timeout; returns its stdout (asserting it exited 0)."""
    prologue = textwrap.dedent(f"""
        import os, resource, signal
        resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
        os.environ.setdefault("KERAS_BACKEND", "torch")
        class Alarm(BaseException):  # not an OSError (TimeoutError is), which loaders turn into ValueError
            pass
        def _alarm(*_):
            raise Alarm("the case ran past its alarm")
        signal.signal(signal.SIGALRM, _alarm)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "torch"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", prologue + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child ran past {timeout} s (a hang)")
    assert proc.returncode == 0, f"the child exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


OUTCOME = textwrap.dedent("""
    def outcome(name, call, seconds=20):
        signal.alarm(seconds)
        try:
            call()
            what = "loaded"
        except BaseException as e:  # noqa: BLE001 - every outcome is reported
            what = f"{type(e).__name__}: {str(e)[:400]}"
        finally:
            signal.alarm(0)
        print(f"{name} -> {what}".replace("\\n", " "), flush=True)
""")


def outcome_code(body):
    """Child code defining ``outcome(name, call)``, which prints 'name -> ValueError: ...' or what else
    happened, then running ``body``."""
    return OUTCOME + textwrap.dedent(body)


def _outcomes(stdout):
    return dict(line.split(" -> ", 1) for line in stdout.splitlines() if " -> " in line)


# --- makers -----------------------------------------------------------------------------------------------
def _make_npz(path):
    rnn_xp.save(rnn_xp.init("lstm", 3, 4, num_layers=2, bidirectional=True, seed=0, xp=np), path)


def _make_pt(path):
    torch.save(torch.nn.LSTM(3, 4).state_dict(), path)


def _keras_functional():
    keras = pytest.importorskip("keras")
    L = keras.layers
    i = keras.Input((5, 3), name="input_layer")  # fixed names: Keras numbers its defaults per process
    x = L.GRU(4, return_sequences=True, name="gru")(i)
    x = L.LSTM(2, name="lstm")(x)
    return keras.Model(i, L.Dense(1, name="dense")(x))


def _make_keras(path):
    _keras_functional().save(path)


def _onnx_bytes():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), n)
        for n, shape in (("W", (1, 9, 2)), ("R", (1, 9, 3)))
    ]
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], name="gru", hidden_size=3)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(members, compression=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data, compress_type=compression)
    return out.getvalue()


def _npy(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


@pytest.fixture(scope="module")
def npz_members(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "good.npz"
    _make_npz(path)
    return _members(path.read_bytes())


@pytest.fixture(scope="module")
def keras_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "good.keras"
    _make_keras(path)
    return path.read_bytes()


def _declare_size(data, name, size):
    """The archive with member ``name`` declaring ``size`` uncompressed bytes, in both of its headers."""
    buf = bytearray(data)
    for signature, field, name_len_at, fixed in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        at = buf.find(signature)
        while at >= 0:
            n = int.from_bytes(buf[at + name_len_at : at + name_len_at + 2], "little")
            if bytes(buf[at + fixed : at + fixed + n]) == name.encode():
                buf[at + field : at + field + 4] = size.to_bytes(4, "little")
            at = buf.find(signature, at + 4)
    return bytes(buf)


# --- 1. .npz members compressed with bzip2 or lzma, and ratio bounds --------------------------------------
@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_npz_members_of_other_compression_methods_are_refused_unread(method, npz_members, tmp_path, monkeypatch):
    """A member of a few hundred bytes that inflates to 64 MB, honest about it or declaring the size of its
    header's shape: refused before anything is decompressed (zipfile inflates bzip2 and lzma chunks in full)."""
    member = "l0.fwd.w_ih.npy"
    bomb = dict(npz_members)
    bomb[member] = npz_members[member] + b"\0" * (64 << 20)
    data = _zip(bomb, method)
    assert len(data) < 64 << 10
    lying = _declare_size(data, member, len(npz_members[member]))

    def no_decompressing(*args, **kwargs):
        raise AssertionError("a member was decompressed")

    monkeypatch.setattr(bz2, "BZ2Decompressor", no_decompressing)
    monkeypatch.setattr(zipfile, "LZMADecompressor", no_decompressing)
    for label, archive in (("honest", data), ("lying", lying)):
        path = tmp_path / f"{label}.npz"
        path.write_bytes(archive)
        with pytest.raises(ValueError, match="compression method"):
            rnn_xp.load(path, xp=np)


def test_npz_bzip2_bomb_in_a_child_under_a_memory_limit(npz_members, tmp_path):
    """The issue's case at its size: ~1 KB of bzip2 that would inflate to 512 MB, under a 3 GB limit."""
    members = dict(npz_members)
    members["l0.fwd.w_ih.npy"] += b"\0" * (512 << 20)
    path = tmp_path / "bomb.npz"
    path.write_bytes(_declare_size(_zip(members, zipfile.ZIP_BZIP2), "l0.fwd.w_ih.npy", 500))
    assert path.stat().st_size < 16 << 10
    out = _outcomes(
        run_child(
            outcome_code(f"""
        import numpy as np, rnn_xp
        outcome("bomb", lambda: rnn_xp.load({str(path)!r}, xp=np))
    """)
        )
    )
    assert out["bomb"].startswith("ValueError") and "compression method" in out["bomb"], out


def test_npz_deflate_ratio_bound(npz_members, tmp_path):
    """A deflated member inflating more than 1000 times is refused from its declared sizes."""
    members = dict(npz_members)
    members["l0.fwd.w_ih.npy"] += b"\0" * (16 << 20)
    path = tmp_path / "ratio.npz"
    path.write_bytes(_zip(members, zipfile.ZIP_DEFLATED))
    with pytest.raises(ValueError, match="declares"):
        rnn_xp.load(path, xp=np)


def test_npz_written_by_savez_compressed_loads(npz_members, tmp_path):
    """Deflate (np.savez_compressed) stays readable: only bzip2, lzma and unknown methods are refused."""
    path = tmp_path / "deflated.npz"
    path.write_bytes(_zip(npz_members, zipfile.ZIP_DEFLATED))
    assert isinstance(rnn_xp.load(path, xp=np), rnn_xp.RNNParams)


# --- 6. and 7. corrupted .npy members --------------------------------------------------------------------
def _npz_with(npz_members, tmp_path, member, data, name="bad.npz"):
    members = dict(npz_members)
    members[member] = data
    path = tmp_path / name
    path.write_bytes(_zip(members))
    return path


@pytest.mark.parametrize(
    "label,data",
    [
        ("not npy", b"this member is not an .npy array at all" * 4),
        ("truncated header", _npy(np.zeros((16, 3), np.float32))[:40]),
        (
            "unterminated header",
            b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (16, 3" + b" " * 20,
        ),
        ("header not a dict", b"\x93NUMPY\x01\x00\x10\x00[1, 2, 3]      \n"),
        ("unknown version", b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16),
        (
            "object dtype",
            b"\x93NUMPY\x01\x00\x46\x00{'descr': '|O', 'fortran_order': False, 'shape': (16, 3), }" + b" " * 4,
        ),
    ],
)
def test_corrupted_npy_members_raise_value_error(label, data, npz_members, tmp_path):
    path = _npz_with(npz_members, tmp_path, "l0.fwd.w_ih.npy", data)
    with pytest.raises(ValueError, match="not a valid rnn_xp file"):
        rnn_xp.load(path, xp=np)


def test_npy_header_claiming_a_huge_shape_is_refused_before_allocating(npz_members, tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    member = b"\x93NUMPY\x01\x00" + len(header + "\n").to_bytes(2, "little") + header.encode() + b"\n"
    path = _npz_with(npz_members, tmp_path, "l0.fwd.w_ih.npy", member + b"\0" * 64)
    with pytest.raises(ValueError, match="not a valid rnn_xp file.*(shape|bytes)"):
        rnn_xp.load(path, xp=np)


@pytest.mark.parametrize(
    "dtype,ok", [(">f4", True), (">f8", True), ("<f2", True), ("float128", False), ("complex64", False), ("<i4", False)]
)
def test_npz_byte_order_is_converted_and_odd_dtypes_refused(dtype, ok, tmp_path):
    p = rnn_xp.init("gru", 3, 4, seed=0, xp=np, dtype="float64")
    path = tmp_path / "p.npz"
    rnn_xp.save(p, path)
    members = _members(path.read_bytes())
    for name, a in p.named_arrays():
        members[name + ".npy"] = _npy(np.asarray(a).astype(dtype))
    path.write_bytes(_zip(members))
    if not ok:
        with pytest.raises(ValueError, match="dtype"):
            rnn_xp.load(path, xp=np)
        return
    q = rnn_xp.load(path, xp=np)  # in the dtype its config names, float64, in native byte order
    for (_, a), (_, b) in zip(q.named_arrays(), p.named_arrays(), strict=True):
        assert a.dtype == np.float64 and a.dtype.isnative
        np.testing.assert_array_equal(a, np.asarray(b).astype(dtype).astype(np.float64))


# --- 2. torch files with expand()ed (stride-0) tensors --------------------------------------------------
def _expanded_state_dict(hidden):
    zero = torch.zeros(1, 1)
    return {
        "weight_ih_l0": zero.expand(4 * hidden, 3),
        "weight_hh_l0": zero.expand(4 * hidden, hidden),
        "bias_ih_l0": zero[0].expand(4 * hidden),
        "bias_hh_l0": zero[0].expand(4 * hidden),
    }


def test_torch_file_with_stride_zero_tensors_is_refused_before_copying(tmp_path):
    path = tmp_path / "expanded.pt"
    torch.save(_expanded_state_dict(64), path)
    with pytest.raises(ValueError, match="storage"):
        rnn_xp.from_torch(path)


def test_torch_stride_zero_bomb_in_a_child_under_a_memory_limit(tmp_path):
    """~2 KB on disk, 4.3 GB once copied out: refused in a child that has 3 GB."""
    path = tmp_path / "bomb.pt"
    torch.save(_expanded_state_dict(16384), path)
    assert path.stat().st_size < 4 << 10
    out = _outcomes(
        run_child(
            outcome_code(f"""
        import rnn_xp
        outcome("bomb", lambda: rnn_xp.from_torch({str(path)!r}), seconds=60)
    """)
        )
    )
    assert out["bomb"].startswith("ValueError") and "storage" in out["bomb"], out


def test_torch_tensors_overlapping_in_one_storage_are_refused(tmp_path):
    """Views of one storage, each within it, but reading its bytes more than once between them."""
    storage = torch.zeros(256 * 64)
    sd = {"weight_ih_l0": storage[: 256 * 3].view(256, 3)}
    for k in range(40):
        sd[f"weight_hh_l{k}"] = storage.view(256, 64)
        if k:
            sd[f"weight_ih_l{k}"] = storage.view(256, 64)
    path = tmp_path / "overlapping.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="storage"):
        rnn_xp.from_torch(path)
    sd = torch.nn.LSTM(3, 64, num_layers=2).state_dict()  # disjoint views, as torch.save writes them: fine
    torch.save(sd, path)
    assert isinstance(rnn_xp.from_torch(path), rnn_xp.RNNParams)


# --- 3. a Keras functional config whose references loop -----------------------------------------------
def _keras_with_config(keras_bytes, edit):
    members = _members(keras_bytes)
    cfg = json.loads(members["config.json"])
    edit(cfg["config"])
    members["config.json"] = json.dumps(cfg).encode()
    return _zip(members)


def _rename(cfg, old, new):
    """Rename layer ``old`` to ``new`` in its entry only (the layers reading it keep the old name)."""
    for e in cfg["layers"]:
        if e["name"] == old:
            e["name"] = e["config"]["name"] = new


def test_keras_config_cycles_are_refused(keras_bytes, tmp_path):
    """A layer reusing the input layer's name read itself forever (memory grew ~8 MB/s); a cycle between two
    layers and duplicated names are refused too. In a child: a regression hangs there, not here."""

    def self_loop(cfg):
        _rename(cfg, "gru", "input_layer")

    def two_cycle(cfg):  # gru reads lstm, lstm reads gru
        by = {e["name"]: e for e in cfg["layers"]}
        by["gru"]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = "lstm"

    def duplicate(cfg):
        _rename(cfg, "lstm", "gru")

    paths = {}
    for edit in (self_loop, two_cycle, duplicate):
        paths[edit.__name__] = tmp_path / f"{edit.__name__}.keras"
        paths[edit.__name__].write_bytes(_keras_with_config(keras_bytes, edit))
    out = _outcomes(
        run_child(
            outcome_code(f"""
        import rnn_xp
        for name, path in { ({k: str(v) for k, v in paths.items()})!r}.items():
            outcome(name, lambda: rnn_xp.from_keras(path))
    """)
        )
    )
    for name in paths:
        assert out[name].startswith("ValueError"), out
    assert "cycle" in out["self_loop"] or "names" in out["self_loop"], out
    assert "more than one layer" in out["duplicate"], out


# --- 4. special files: /dev/zero, a symlink to it, a FIFO -------------------------------------------------
LOADERS = {
    "load": "lambda p: rnn_xp.load(p, xp=np)",
    "from_torch": "rnn_xp.from_torch",
    "from_keras": "rnn_xp.from_keras",
    "from_onnx": "rnn_xp.from_onnx",
}


@pytest.mark.skipif(not os.path.exists("/dev/zero") or not hasattr(os, "mkfifo"), reason="needs /dev/zero and FIFOs")
def test_special_files_are_refused_by_every_loader(tmp_path):
    """/dev/zero read until out of memory, a FIFO blocked forever: each loader refuses anything that is not a
    regular file, after following links, with a ValueError (in a child with a memory limit and alarms)."""
    link = tmp_path / "model.onnx"
    link.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.keras"
    os.mkfifo(fifo)
    link_to_fifo = tmp_path / "via-link.pt"
    link_to_fifo.symlink_to(fifo)
    paths = {"zero": "/dev/zero", "link": str(link), "fifo": str(fifo), "link-fifo": str(link_to_fifo)}
    calls = "".join(
        f"for label, path in {paths!r}.items(): outcome('{name} ' + label, lambda: ({fn})(path))\n"
        for name, fn in LOADERS.items()
    )
    out = _outcomes(run_child(outcome_code("import numpy as np, rnn_xp\n" + calls)))
    assert len(out) == len(LOADERS) * len(paths), out
    for case, what in out.items():
        assert what.startswith("ValueError") and "not a regular file" in what, (case, what)


def test_regular_files_through_a_symlink_still_load(npz_members, tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(_zip(npz_members))
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert isinstance(rnn_xp.load(link, xp=np), rnn_xp.RNNParams)


# --- 5. from_keras reads model.weights.h5 once -------------------------------------------------------------
def test_from_keras_reads_the_weights_member_once(keras_bytes, tmp_path, monkeypatch):
    """zipfile's member stream re-reads (re-inflates) from the start on every backward seek; h5py seeks a lot.
    The member is read once, in full (it is bounded), and h5py seeks in memory."""
    path = tmp_path / "m.keras"
    path.write_bytes(_zip(_members(keras_bytes), zipfile.ZIP_DEFLATED))

    def no_seeking(self, *args, **kwargs):
        raise AssertionError("h5py seeks zipfile's member stream")

    monkeypatch.setattr(zipfile.ZipExtFile, "seek", no_seeking)
    model = rnn_xp.from_keras(path)
    assert rnn_xp.count_params(model) > 0


# --- 9. Keras weights in another byte order or a non-standard float ----------------------------------------
def _rewrite_h5(keras_bytes, tmp_path, dtype):
    import h5py

    members = _members(keras_bytes)
    h5 = tmp_path / "w.h5"
    h5.write_bytes(members["model.weights.h5"])
    with h5py.File(h5, "a") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and "/vars/" in n else None)
        for n in names:
            a = f[n][()]
            del f[n]
            f.create_dataset(n, data=a.astype(dtype))
    members["model.weights.h5"] = h5.read_bytes()
    return _zip(members)


def test_keras_big_endian_weights_are_converted_to_native(keras_bytes, tmp_path):
    native = rnn_xp.from_keras(_write(tmp_path / "native.keras", keras_bytes))
    swapped = rnn_xp.from_keras(_write(tmp_path / "be.keras", _rewrite_h5(keras_bytes, tmp_path, ">f4")))
    for (_, a), (_, b) in zip(swapped.named_arrays(), native.named_arrays(), strict=True):
        assert a.dtype == np.float32 and a.dtype.isnative
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(swapped(x), native(x))
    rnn_xp.save(swapped, tmp_path / "again.npz")  # what loads saves, and loads again
    np.testing.assert_array_equal(rnn_xp.load(tmp_path / "again.npz", xp=np)(x), native(x))


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="no extended precision on this platform")
def test_keras_float128_weights_are_refused(keras_bytes, tmp_path):
    path = _write(tmp_path / "f128.keras", _rewrite_h5(keras_bytes, tmp_path, np.longdouble))
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        rnn_xp.from_keras(path)


def _write(path, data):
    path.write_bytes(data)
    return path


# --- 8. numbers too large for a float --------------------------------------------------------------------
def test_huge_numbers_raise_value_or_type_errors(npz_members, keras_bytes, tmp_path):
    with pytest.raises(ValueError, match="clip"):
        rnn_xp.init("lstm", 3, 4, clip=10**400, xp=np)
    with pytest.raises(ValueError, match="clip"):
        rnn_xp.init("lstm", 3, 4, clip=float("inf"), xp=np)
    header = json.loads(np.load(io.BytesIO(npz_members["__rnn_xp__.npy"])).tobytes())
    huge = "1" + "0" * 400
    acts = json.dumps(header["config"]["activations"]).replace("null", huge, 1)  # the first alpha
    for label, key, text, match in (
        ("clip-int", "clip", huge, "clip"),
        ("clip-float", "clip", "1e400", "clip"),
        ("alpha", "activations", acts, "malformed activations"),
    ):
        raw = json.dumps({**header, "config": {**header["config"], key: "PLACEHOLDER"}})
        raw = raw.replace('"PLACEHOLDER"', text)
        members = dict(npz_members, **{"__rnn_xp__.npy": _npy(np.frombuffer(raw.encode(), np.uint8))})
        path = tmp_path / f"{label}.npz"
        path.write_bytes(_zip(members))
        with pytest.raises(ValueError, match=f"not a valid rnn_xp file.*{match}"):
            rnn_xp.load(path, xp=np)

    def units(cfg):
        cfg["layers"][1]["config"]["units"] = "UNITS"

    def mask(cfg):
        cfg["layers"].insert(
            1,
            {
                "module": "keras.layers",
                "class_name": "Masking",
                "name": "masking",
                "config": {"name": "masking", "mask_value": "MASK"},
                "inbound_nodes": cfg["layers"][1]["inbound_nodes"],
            },
        )
        cfg["layers"][2]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = "masking"

    for edit, placeholder, value in (
        (units, '"UNITS"', "1e999"),
        (units, '"UNITS"', "1" + "0" * 400),
        (mask, '"MASK"', "1" + "0" * 400),
    ):
        members = _members(_keras_with_config(keras_bytes, edit))
        members["config.json"] = members["config.json"].replace(placeholder.encode(), value.encode())
        with pytest.raises(ValueError):
            rnn_xp.from_keras(_write(tmp_path / "huge.keras", _zip(members)))


@pytest.mark.parametrize("flag", ["return_sequences", "use_bias", "go_backwards", "reset_after"])
def test_keras_string_booleans_are_refused(flag, keras_bytes, tmp_path):
    """A tampered "false" in a Keras config was read as True (bool("false")): the output changed shape."""

    def edit(cfg):
        next(e for e in cfg["layers"] if e["name"] == "gru")["config"][flag] = "false"

    with pytest.raises(ValueError, match=f"{flag}='false'; expected true or false"):
        rnn_xp.from_keras(_write(tmp_path / "flag.keras", _keras_with_config(keras_bytes, edit)))


def test_keras_hdf5_addresses_beyond_any_file_are_refused(keras_bytes, tmp_path):
    """A superblock whose driver-information address is 2**64 - 128: h5py asks the in-memory weights for bytes at
    an offset no ssize_t holds and raises OverflowError (found by tests/fuzz_harness.py)."""
    members = _members(keras_bytes)
    h5 = bytearray(members["model.weights.h5"])
    assert h5[:8] == b"\x89HDF\r\n\x1a\n" and h5[8] == 0 and h5[48:56] == b"\xff" * 8  # superblock version 0
    h5[48] = 0x80
    members["model.weights.h5"] = bytes(h5)
    with pytest.raises(ValueError, match="not an HDF5 file|malformed"):
        rnn_xp.from_keras(_write(tmp_path / "address.keras", _zip(members)))
