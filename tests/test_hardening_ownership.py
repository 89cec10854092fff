"""Params that cannot change behind their back, configs whose values are what they say, models that chain.

* Params, Dense and Embedding built from the caller's NumPy arrays own a read-only copy: a later write by the
  caller does not reach them, and ``flags.writeable = True`` cannot re-open them (nor their base).
* A tampered file whose booleans are strings ("false", "no") is refused, not read as True.
* A Sequential whose layer sizes do not chain is refused when built and when loaded.
"""

import io
import json
import zipfile

import numpy as np
import pytest

import rnn_xp


def _reachable(a):
    """``a`` and every array its ``base`` chain reaches."""
    out = []
    while isinstance(a, np.ndarray):
        out.append(a)
        a = a.base
    return out


def _cannot_reopen(a):
    for arr in _reachable(a):
        with pytest.raises(ValueError, match="WRITEABLE"):
            arr.flags.writeable = True


# --- 12. ownership -----------------------------------------------------------------------------------------
def test_params_from_the_callers_arrays_own_a_copy():
    p = rnn_xp.init("lstm", 3, 4, num_layers=2, seed=0, xp=np)
    mine = {n: np.array(a) for n, a in p.named_arrays()}  # writeable arrays the caller keeps
    readonly_views = {n: a.view() for n, a in mine.items()}
    for v in readonly_views.values():
        v.flags.writeable = False  # a read-only view of a writeable base: the caller can still write the base
    for arrays in (mine, readonly_views):
        q = rnn_xp.RNNParams.from_named_arrays(p.config, arrays)
        before = {n: np.array(a) for n, a in q.named_arrays()}
        for a in mine.values():
            a[...] = 7.0
        for n, a in q.named_arrays():
            np.testing.assert_array_equal(a, before[n])
            _cannot_reopen(a)
        for n, a in p.named_arrays():
            mine[n][...] = a


def test_weights_from_init_cannot_be_reopened():
    for obj in (
        rnn_xp.init("gru", 3, 4, seed=0, xp=np),
        rnn_xp.Dense.init(4, 2, seed=0, xp=np),
        rnn_xp.Embedding.init(10, 3, seed=0, xp=np),
    ):
        for _, a in obj.named_arrays():
            assert not a.flags.writeable
            _cannot_reopen(a)


def test_layers_from_the_callers_arrays_own_a_copy():
    kernel, bias, table = np.ones((4, 2), np.float32), np.ones(2, np.float32), np.ones((10, 3), np.float32)
    dense, emb = rnn_xp.Dense(kernel, bias), rnn_xp.Embedding(table)
    kernel[...], bias[...], table[...] = 5.0, 5.0, 5.0
    for _, a in (*dense.named_arrays(), *emb.named_arrays()):
        assert np.all(a == 1.0)
        _cannot_reopen(a)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(dense(x)[0], [[5.0, 5.0]])


def test_owned_arrays_are_not_copied_again():
    """Params rebuilt from params (to_device to NumPy, map_arrays(identity)) share the frozen arrays."""
    p = rnn_xp.init("gru", 3, 4, seed=0, xp=np)
    q = rnn_xp.RNNParams.from_named_arrays(p.config, dict(p.named_arrays()))
    assert all(a is b for (_, a), (_, b) in zip(p.named_arrays(), q.named_arrays(), strict=True))


# --- 10. booleans in a tampered file -------------------------------------------------------------------------
def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _header(members):
    return json.loads(np.load(io.BytesIO(members["__rnn_xp__.npy"])).tobytes())


def _write(path, members, header):
    b = io.BytesIO()
    np.save(b, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members = {**members, "__rnn_xp__.npy": b.getvalue()}
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return path


@pytest.mark.parametrize(
    "flag,value",
    [
        ("return_sequences", "false"),
        ("return_sequences", "no"),
        ("go_backwards", "false"),
        ("zero_output_for_mask", 0),
        ("mask_zero", "no"),
    ],
)
def test_string_booleans_in_a_tampered_file_are_refused(flag, value, tmp_path):
    model = rnn_xp.Sequential(
        [rnn_xp.Embedding.init(10, 3, seed=0, xp=np), rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, seed=1, xp=np))]
    )
    path = tmp_path / "m.npz"
    rnn_xp.save(model, path)
    members = _members(path)
    header = _header(members)
    layer = header["config"]["layers"][0 if flag == "mask_zero" else 1]
    assert layer[flag] is False
    layer[flag] = value
    with pytest.raises(ValueError, match=f"not a valid rnn_xp file: {flag} must be True or False"):
        rnn_xp.load(_write(tmp_path / "tampered.npz", members, header), xp=np)
    # the layer's own from_config, given such a value, raises the TypeError its constructor does
    cls = rnn_xp.Embedding if flag == "mask_zero" else rnn_xp.Recurrent
    arrays = rnn_xp.load(path, xp=np).layers[0 if flag == "mask_zero" else 1].named_arrays()
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        cls.from_config(layer, dict(arrays))


# --- 11. a Sequential whose sizes do not chain -------------------------------------------------------------
def _gru(n_in, units):
    return rnn_xp.Recurrent(rnn_xp.init("gru", n_in, units, seed=0, xp=np), return_sequences=True)


def test_sequential_refuses_layers_that_do_not_chain():
    emb, dense = rnn_xp.Embedding.init(10, 3, seed=0, xp=np), rnn_xp.Dense.init(9, 2, seed=0, xp=np)
    cases = [
        ([emb, _gru(5, 4), dense], r"layer 1 \(gru\) reads 5 features.*layer 0 \(embedding\) outputs 3"),
        ([emb, _gru(3, 4), dense], r"layer 2 \(dense\) reads 9 features.*layer 1 \(gru\) outputs 4"),
        ([_gru(3, 4), rnn_xp.Masking(), rnn_xp.Dense.init(5, 1, xp=np)], r"layer 2 \(dense\) reads 5 features"),
        ([_gru(3, 4), emb], r"Embedding.*first layer"),
        (
            [rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, xp=np)), _gru(4, 2)],
            r"layer 1 \(gru\) reads sequences.*layer 0 \(gru\) outputs one vector",
        ),
        ([rnn_xp.Bidirectional(_gru(3, 4), _gru(3, 4)), _gru(4, 2)], r"reads 4 features.*outputs 8"),
    ]
    for layers, match in cases:
        with pytest.raises(ValueError, match=match):
            rnn_xp.Sequential(layers)
    with pytest.raises(ValueError, match=r"layer 0 \(gru\) reads 3 features, but the input_shape \(7, 5\) outputs 5"):
        rnn_xp.Sequential([_gru(3, 4)], input_shape=(7, 5))
    # what chains is fine: merge modes, stateless layers passing sizes on, the demo model
    rnn_xp.Sequential(
        [
            emb,
            rnn_xp.Bidirectional(_gru(3, 4), _gru(3, 4), "sum"),
            rnn_xp.Identity(),
            rnn_xp.Dense.init(4, 2, xp=np),
            rnn_xp.Softmax(),
        ],
        input_shape=(6,),
    )
    rnn_xp.Sequential(
        [_gru(3, 4), rnn_xp.Recurrent(rnn_xp.init("lstm", 4, 2, xp=np)), rnn_xp.Dense.init(2, 1, xp=np)],
        input_shape=(None, 3),
    )
    assert rnn_xp.count_params(rnn_xp.text_classifier(xp=np)) == 173_401


def test_load_refuses_a_file_whose_layers_do_not_chain(tmp_path):
    model = rnn_xp.Sequential(
        [rnn_xp.Embedding.init(10, 3, seed=0, xp=np), _gru(3, 4), rnn_xp.Dense.init(4, 2, seed=0, xp=np)]
    )
    path = tmp_path / "m.npz"
    rnn_xp.save(model, path)
    members = _members(path)
    header = _header(members)
    b = io.BytesIO()
    np.save(b, np.zeros((9, 2), np.float32))
    members["layer2.kernel.npy"] = b.getvalue()
    header["arrays"]["layer2.kernel"] = [9, 2]
    with pytest.raises(ValueError, match=r"not a valid rnn_xp file: .*layer 2 \(dense\) reads 9 features"):
        rnn_xp.load(_write(tmp_path / "tampered.npz", members, header), xp=np)
