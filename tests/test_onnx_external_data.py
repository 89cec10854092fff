"""ONNX external data (weights in a file beside the model): read only from regular files inside the model's
folder, each range checked before reading; refused, with the fix, where there is no folder to read from."""

import os
import sys

import numpy as np
import pytest

import rnn_xp

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), n)
        for n, shape in (("W", (1, 12, 2)), ("R", (1, 12, 4)), ("B", (1, 24)))
    ]
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y", "Y_h"], name="gru", hidden_size=4)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h")],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


X = np.random.default_rng(1).standard_normal((5, 3, 2)).astype(np.float32)


@pytest.fixture
def saved(tmp_path):
    """A model saved with every weight in ``weights.bin`` beside it; returns (path, expected Y)."""
    model = _model()
    expected = rnn_xp.from_onnx(model)(X=X)["Y"]
    path = tmp_path / "model.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    return path, expected


def _rewrite(path, edit):
    """The model at ``path`` with its external entries edited (edit(tensor index, {key: value}) -> entries)."""
    model = onnx.load(str(path), load_external_data=False)
    for i, t in enumerate(model.graph.initializer):
        entries = edit(i, {e.key: e.value for e in t.external_data})
        del t.external_data[:]
        for k, v in entries.items():
            t.external_data.add(key=k, value=str(v))
    path.write_bytes(model.SerializeToString())
    return path


def test_read_from_beside_the_model(saved):
    path, expected = saved
    for source in (path, str(path)):
        np.testing.assert_array_equal(rnn_xp.from_onnx(source)(X=X)["Y"], expected)
    np.testing.assert_array_equal(rnn_xp.from_onnx(onnx.load(str(path)))(X=X)["Y"], expected)  # loaded by onnx


def test_in_a_subfolder_of_the_models_folder(tmp_path):
    (tmp_path / "data").mkdir()
    model = _model()
    expected = rnn_xp.from_onnx(model)(X=X)["Y"]
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="data/w.bin", size_threshold=0)
    np.testing.assert_array_equal(rnn_xp.from_onnx(tmp_path / "m.onnx")(X=X)["Y"], expected)


def test_bytes_or_a_model_proto_without_its_data_are_refused_with_the_fix(saved):
    path, _ = saved
    fix = r"Fix: rnn_xp.from_onnx\('path/to/model.onnx'\) with the data file next to it, or onnx.load\(path\) first"
    with pytest.raises(ValueError, match=r"tensor 'W' keeps its data in the external file 'weights.bin'.*" + fix):
        rnn_xp.from_onnx(path.read_bytes())
    with pytest.raises(ValueError, match=fix):
        rnn_xp.from_onnx(onnx.load(str(path), load_external_data=False))


@pytest.mark.parametrize(
    "location",
    ["../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "sub/../../x.bin", "C:\\Windows\\win.ini", ""],
)
def test_locations_outside_the_folder_are_refused(saved, location):
    path, _ = saved
    _rewrite(path, lambda i, e: {**e, "location": location})
    with pytest.raises(ValueError, match="only files inside the model's own folder|names the external file"):
        rnn_xp.from_onnx(path)


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links and FIFOs")
def test_links_leading_out_and_special_files_are_refused(saved, tmp_path):
    path, expected = saved
    outside = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    outside.write_bytes((tmp_path / "weights.bin").read_bytes())
    (tmp_path / "link.bin").symlink_to(outside)
    _rewrite(path, lambda i, e: {**e, "location": "link.bin"})
    with pytest.raises(ValueError, match="leads out of the model's folder"):
        rnn_xp.from_onnx(path)
    (tmp_path / "inside.bin").symlink_to(tmp_path / "weights.bin")  # a link that stays inside is a file inside
    _rewrite(path, lambda i, e: {**e, "location": "inside.bin"})
    np.testing.assert_array_equal(rnn_xp.from_onnx(path)(X=X)["Y"], expected)
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would block without O_NONBLOCK
    (tmp_path / "folder").mkdir()
    for special in ("pipe", "folder"):
        _rewrite(path, lambda i, e, s=special: {**e, "location": s})
        with pytest.raises(ValueError, match="is not a regular file|cannot open"):
            rnn_xp.from_onnx(path)
    _rewrite(path, lambda i, e: {**e, "location": "missing.bin"})
    with pytest.raises(ValueError, match="cannot open 'missing.bin' beside the model"):
        rnn_xp.from_onnx(path)


def test_ranges_are_checked_against_the_file_and_the_shape(saved):
    path, _ = saved
    size = (path.parent / "weights.bin").stat().st_size
    cases = [
        (
            lambda i, e: {**e, "offset": size - 8} if i == 0 else e,
            r"asks for bytes \d+ to \d+ of 'weights.bin', "
            rf"which holds {size}",
        ),
        (lambda i, e: {**e, "length": 1 << 40} if i == 1 else e, "asks for bytes"),
        (lambda i, e: {**e, "offset": -4} if i == 0 else e, "asks for bytes -4"),
        (
            lambda i, e: {**e, "length": 8} if i == 0 else e,
            r"has 8 bytes in 'weights.bin'; its shape \[1, 12, 2\] "
            "of float32 needs 96",
        ),
        (lambda i, e: {**e, "offset": "twelve"} if i == 0 else e, "expected integers"),
    ]
    for edit, match in cases:
        original = path.read_bytes()
        _rewrite(path, edit)
        with pytest.raises(ValueError, match=match):
            rnn_xp.from_onnx(path)
        path.write_bytes(original)


def test_a_small_file_claiming_a_huge_tensor_is_refused_before_reading(saved):
    path, _ = saved
    model = onnx.load(str(path), load_external_data=False)
    t = model.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([1 << 20, 1 << 20, 1 << 10])  # 4 PiB of float32, from a 96-byte range
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=r"has 96 bytes in 'weights.bin'; its shape .* needs 4503599627370496"):
        rnn_xp.from_onnx(path)
