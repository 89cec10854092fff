"""Fuzz every loader with mutated files, each mutant in a child process under a memory limit.

HDF5 (h5py, behind from_keras), protobuf and ONNX shape inference (from_onnx), torch's zip reader (from_torch)
and safetensors can crash the interpreter on hostile bytes; Python code can loop, exhaust memory or let an
unexpected exception escape. A crash in a child shows up here as a failure with its input saved, not as a dead
test run. The contract checked for every mutant: the loader returns an object or raises ValueError; a signal, a
hang, an abnormal exit, MemoryError or any other exception is a finding.

Two kinds of mutants: bytes (flips, splices, length fields) of a valid seed file, and structure-aware ones that
keep the container valid and change what is inside it: the JSON of .npz and .keras configs (renamed, duplicated
and cyclic layer references, hostile values), .npy headers (shapes, dtypes, byte orders), torch's pickled
tensor records (sizes, strides, offsets, storage types), zip members recompressed with other methods or declaring
other sizes, ONNX graphs whose weights are computed (Shape, Reshape, Expand, ConstantOfShape, Range, Tile), and
legacy Keras .h5 models (their model_config JSON, layer_names and weight_names lists, attribute types, weights).

    python tests/fuzz_harness.py --seconds 1800 --seed 1 --out fuzz-findings    # a longer run
    python tests/fuzz_harness.py --replay fuzz-findings/crash-onnx-....onnx    # one saved input again

Mutants are derived deterministically from (seed, target, index): the same command finds the same inputs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import pickletools
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

BATCH = 150  # mutants per child: a child's start (importing torch, onnx, h5py) costs about a second
CHILD_TIMEOUT = 120  # seconds for one batch; one mutant that hangs kills its batch and is reported
MEMORY_LIMIT = 4 << 30  # a child asking for more gets MemoryError (a finding), not the machine's OOM killer
INTERESTING = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 40,
    (1 << 63) - 1,
    (1 << 64) - 1,
]


# --- the starting corpus (the files mutated) -----------------------------------------------------------------
def _keras_file(path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            L.Masking(),
            L.Bidirectional(L.GRU(4, return_sequences=True)),
            L.LSTM(3),
            L.Dense(2, activation="softmax"),
        ]
    )
    model.save(path)


def _onnx_file(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(-1, 1, s).astype(np.float32), n)
        for n, s in (("W", (2, 16, 3)), ("R", (2, 16, 4)), ("B", (2, 32)), ("P", (2, 12)))
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    nodes = [
        helper.make_node("Transpose", ["x"], ["X"], perm=[1, 0, 2]),
        helper.make_node(
            "LSTM",
            ["X", "W", "R", "B", "L", "", "", "P"],
            ["Y", "Yh", "Yc"],
            hidden_size=4,
            direction="bidirectional",
            activations=["Sigmoid", "Tanh", "Tanh"] * 2,
            clip=5.0,
        ),
        helper.make_node("Squeeze", ["Yh", "axes"], ["h"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 3]),
            helper.make_tensor_value_info("L", TensorProto.INT32, ["B"]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "h", "Yc")],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def _keras_functional_file(path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    L = keras.layers
    i = keras.Input((5, 3))
    x = L.Masking()(i)
    x = L.Bidirectional(L.GRU(4, return_sequences=True))(x)
    x = L.Dropout(0.1)(x)
    x = L.LSTM(3)(x)
    keras.Model(i, L.Dense(2, activation="softmax")(x)).save(path)


def _npz_file(path):
    import numpy as np

    import rnn_xp

    model = rnn_xp.Sequential(
        [
            rnn_xp.Embedding.init(7, 3, mask_zero=True, seed=0, xp=np),
            rnn_xp.Bidirectional(
                *(rnn_xp.Recurrent(rnn_xp.init("gru", 3, 4, seed=s, xp=np), return_sequences=True) for s in (1, 2))
            ),
            rnn_xp.Recurrent(rnn_xp.init("lstm", 8, 2, proj_size=1, seed=3, xp=np)),
            rnn_xp.Dense.init(1, 2, activation="softmax", seed=4, xp=np),
        ],
        input_shape=(6,),
    )
    rnn_xp.save(model, path)


def _torch_file(path):
    import torch

    torch.save(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2).state_dict(), path)


def _safetensors_file(path):
    import torch
    from safetensors.torch import save_file

    save_file(torch.nn.GRU(3, 4, bidirectional=True).state_dict(), str(path))


def _legacy_h5_file(path):
    """A whole model as tf-keras 2.21 saved it (HDF5, variable-length string attributes): Masking, Dense, dropout
    layers, LSTM(go_backwards), Bidirectional(GRU), Activation (tests/data/make_keras2_h5.py wrote it)."""
    path.write_bytes((Path(__file__).resolve().parent / "data" / "keras2" / "functional.h5").read_bytes())


# target -> (suffix, make the starting file, the loader's name in the child); "-s" targets mutate structure
TARGETS = {
    "h5": (".keras", _keras_file, "from_keras"),  # mutants of model.weights.h5 inside a sound zip: HDF5 itself
    "keras": (".keras", _keras_file, "from_keras"),  # mutants of the whole archive
    "onnx": (".onnx", _onnx_file, "from_onnx"),
    "pt": (".pt", _torch_file, "from_torch"),
    "safetensors": (".safetensors", _safetensors_file, "from_torch"),
    "npz": (".npz", _npz_file, "load"),
    "npz-s": (".npz", _npz_file, "load"),  # the JSON config, .npy headers, zip methods and sizes
    "keras-s": (".keras", _keras_functional_file, "from_keras"),  # the config's layers and references, weights
    "pt-s": (".pt", _torch_file, "from_torch"),  # the pickled tensor records, storages, zip methods
    "onnx-s": (".onnx", _onnx_file, "from_onnx"),  # computed weights and shapes, attributes
    "legacy-h5": (".h5", _legacy_h5_file, "from_keras"),  # a Keras 2 .h5 model's bytes: HDF5, its global heaps
    "legacy-h5-s": (".h5", _legacy_h5_file, "from_keras"),  # its model_config, layer_names, weight_names, weights
}


def make_corpus(directory):
    """target -> the bytes of a valid seed file, written under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for target, (suffix, make, _) in TARGETS.items():
        path = directory / f"seed-{make.__name__.strip('_')}{suffix}"
        if not path.exists():
            make(path)
        out[target] = path.read_bytes()
    return out


# --- mutations ---------------------------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four mutations: bit flips, interesting bytes, truncation, splices, length-field edits."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "byte", "truncate", "splice", "duplicate", "int32", "int64", "delete"])
        i = rng.randrange(max(len(buf), 1))
        if not buf:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "flip":
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            buf[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        elif kind == "truncate":
            del buf[i:]
        elif kind == "splice":
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif kind == "duplicate":
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j : j + rng.randint(1, 64)]
        elif kind == "delete":
            del buf[i : i + rng.randint(1, 32)]
        else:  # a length or offset field: an interesting integer, little- or big-endian
            fmt = rng.choice("<>") + ("I" if kind == "int32" else "Q")
            v = rng.choice(INTERESTING + [len(buf), len(buf) + 1, rng.randrange(1 << 16)])
            v &= 0xFFFFFFFF if kind == "int32" else (1 << 64) - 1
            buf[i : i + struct.calcsize(fmt)] = struct.pack(fmt, v)
    return bytes(buf)


def _h5_mutant(data, rng):
    """Mutated bytes of model.weights.h5 inside a sound zip: h5py sees every mutation."""
    members = _unzip(data)
    members["model.weights.h5"] = mutate(members["model.weights.h5"], rng)
    return _zip(members.items())


def mutant(target, seed_bytes, seed, index):
    """The index-th mutant of a target's seed file, the same for the same (seed, target, index)."""
    rng = random.Random(f"{seed}/{target}/{index}")
    for _ in range(8):
        try:
            return MUTATORS.get(target, mutate)(seed_bytes, rng)
        except Exception:  # noqa: BLE001, S112 - a change may not apply to what an earlier one left: draw again
            continue
    return mutate(seed_bytes, rng)


# --- structure-aware mutations ---------------------------------------------------------------------------------
HUGE = 10**400  # an int no float holds
HOSTILE_VALUES = [
    0,
    1,
    -1,
    2,
    3,
    1 << 31,
    1 << 63,
    10**12,
    HUGE,
    -HUGE,
    1e308,
    1e-308,
    float("inf"),
    float("-inf"),
    float("nan"),
    0.5,
    True,
    False,
    None,
    "",
    "false",
    "no",
    "0",
    "tanh",
    "relu",
    "softmax",
    "concat",
    "forward",
    "GRU",
    "Dense",
    "InputLayer",
    "__keras_tensor__",
    "../../etc/passwd",
    [],
    {},
    [[]],
    [None, 0, 0],
    [1, 2, 3],
    {"class_name": "function", "config": "os.system"},
]
DIMS = [0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 1 << 20, 1 << 31, 1 << 40, (1 << 63) - 1, -(1 << 63)]
NPY_DESCRS = [
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<f2",
    ">f2",
    "|u1",
    "<i4",
    "<i8",
    "|b1",
    "|O",
    "<c8",
    "<f16",
    ">f16",
    "|V2",
    "<U4",
    "|S4",
    "<M8[s]",
    [("a", "<f4")],
    "f4",
    "float32",
    "<f4 ",
    "",
]
ZIP_METHODS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


def _unzip(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(members, methods=None):
    """An archive of (name, bytes) pairs (a name may repeat), each member with its compression method."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name, data in members:
            # a fixed timestamp: writestr(name, ...) stamps the current time, and mutants must be deterministic
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = (methods or {}).get(name, zipfile.ZIP_STORED)
            zf.writestr(info, data)
    return out.getvalue()


def _declare_size(data, name, size):
    """The archive with member ``name`` declaring ``size`` uncompressed bytes in its local and central headers."""
    buf = bytearray(data)
    for signature, field, name_len_at, fixed in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        at = buf.find(signature)
        while at >= 0:
            n = int.from_bytes(buf[at + name_len_at : at + name_len_at + 2], "little")
            if bytes(buf[at + fixed : at + fixed + n]) == name.encode():
                buf[at + field : at + field + 4] = (size & 0xFFFFFFFF).to_bytes(4, "little")
            at = buf.find(signature, at + 4)
    return bytes(buf)


def _rezip(members, rng, names=None):
    """Members (a dict) back into an archive, some recompressed with another method, dropped, repeated, or
    declaring another size (a bomb whose header lies)."""
    items = list(members.items())
    methods = {}
    for _ in range(rng.randint(0, 3)):
        kind = rng.choice(["method", "method", "drop", "repeat", "pad"])
        k = rng.randrange(len(items)) if items else 0
        if not items:
            break
        if kind == "method":
            methods[items[k][0]] = rng.choice(ZIP_METHODS)
        elif kind == "drop":
            del items[k]
        elif kind == "repeat":
            items.insert(rng.randrange(len(items) + 1), (items[k][0], rng.choice([items[k][1], b"", b"\0" * 64])))
        else:  # zeros that compress to nothing: a small bomb
            items[k] = (items[k][0], items[k][1] + b"\0" * rng.choice([1, 1 << 16, 1 << 22]))
            methods[items[k][0]] = rng.choice(ZIP_METHODS[1:])
    data = _zip(items, methods)
    if items and rng.random() < 0.2:
        name, real = rng.choice(items)
        data = _declare_size(data, name, rng.choice([0, 1, len(real) // 2, len(real) + 1, 1 << 31, 0xFFFFFFFF]))
    return data


def _json_paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, (*path, i))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def mutate_json(obj, rng, names=()):
    """One change anywhere in a JSON document: a hostile value, a deleted, renamed or repeated entry, or a name
    swapped for another (``names``: strings that refer to things, such as layer names)."""
    paths = [p for p in _json_paths(obj) if p]
    if not paths:
        return rng.choice(HOSTILE_VALUES)
    path = rng.choice(paths)
    parent, key = _get(obj, path[:-1]), path[-1]
    kind = rng.choice(["value", "value", "name", "delete", "rename", "repeat", "deep"])
    if kind == "value" or (kind == "name" and not names):
        parent[key] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    elif kind == "name":
        parent[key] = rng.choice(list(names))
    elif kind == "delete":
        del parent[key]
    elif kind == "rename" and isinstance(parent, dict):
        parent[rng.choice([*names, "name", "type", "config", "units", "layers"] or ["x"])] = parent.pop(key)
    elif kind == "repeat" and isinstance(parent, list):
        parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(parent[key]))
    else:
        parent[key] = [[[[[[[[parent[key]]]]]]]]] if rng.random() < 0.5 else {"type": parent[key]}
    return obj


def _dumps(obj):
    return json.dumps(obj, allow_nan=True).encode()


def _npy_bytes(descr, fortran, shape, data, version=1):
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    size = len(header).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin1") + data


def _parse_npy(member):
    """(descr, fortran_order, shape, data) of a .npy written by NumPy."""
    import ast

    n = int.from_bytes(member[8:10], "little")
    header = ast.literal_eval(member[10 : 10 + n].decode("latin1"))
    return header["descr"], header["fortran_order"], header["shape"], member[10 + n :]


def _mutate_npy(member, rng):
    descr, fortran, shape, data = _parse_npy(member)
    kind = rng.choice(["descr", "shape", "fortran", "data", "version", "text", "swap"])
    if kind == "descr":
        descr = rng.choice(NPY_DESCRS)
    elif kind == "shape":
        shape = tuple(rng.choice(DIMS) if rng.random() < 0.5 else s for s in shape) or (rng.choice(DIMS),)
        if rng.random() < 0.3:
            shape = (*shape, rng.choice(DIMS))
    elif kind == "fortran":
        fortran = rng.choice([not fortran, "no", 1, None])
    elif kind == "data":
        data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data + bytes(rng.randrange(1, 64))
    elif kind == "version":
        version = rng.choice([2, 3, 0, 9])
        if version != 2:
            return member[:6] + bytes([version, 0]) + member[8:]
        return _npy_bytes(descr, fortran, shape, data, version)
    elif kind == "swap" and descr in ("<f4", "<f8", "<f2"):  # the same values in the other byte order
        import numpy as np

        a = np.frombuffer(data, descr)
        descr, data = ">" + descr[1:], a.astype(">" + descr[1:]).tobytes()
    else:
        text = bytearray(_npy_bytes(descr, fortran, shape, data))
        at = rng.randrange(10, min(len(text), 80))
        text[at : at + rng.randint(1, 8)] = bytes(
            rng.choice(b"(){}[],:' \n0123456789") for _ in range(rng.randint(0, 8))
        )
        return bytes(text)
    return _npy_bytes(descr, fortran, shape, data)


def _npz_mutant(data, rng):
    """The rnn_xp header's JSON, the arrays' .npy headers and the table of shapes, the zip's methods and sizes."""
    members = _unzip(data)
    key = "__rnn_xp__.npy"
    _, _, _, raw = _parse_npy(members[key])
    header = json.loads(raw)
    names = [n[:-4] for n in members if n != key]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["json", "json", "npy", "npy", "table", "zip"])
        if kind == "json":
            layer_names = [
                lc.get("name", "") for lc in header.get("config", {}).get("layers", []) if isinstance(lc, dict)
            ]
            header = mutate_json(
                header,
                rng,
                [
                    *layer_names,
                    "Recurrent",
                    "Bidirectional",
                    "Dense",
                    "Embedding",
                    "Sequential",
                    "Masking",
                    "Softmax",
                    "gru",
                    "lstm",
                    "rnn",
                ],
            )
        elif kind == "npy" and names:
            n = rng.choice(names) + ".npy"
            members[n] = _mutate_npy(members[n], rng)
        elif kind == "table" and names and isinstance(header.get("arrays"), dict):  # the header agrees with a lie
            n = rng.choice(names)
            stored = header["arrays"].get(n)
            shape = [
                rng.choice(DIMS) if rng.random() < 0.5 else d for d in (stored if isinstance(stored, list) else [1])
            ]
            header["arrays"][n] = shape
            descr, fortran, _, body = _parse_npy(members[n + ".npy"])
            members[n + ".npy"] = _npy_bytes(descr, fortran, tuple(shape), body)
    text = _dumps(header)
    members[key] = _npy_bytes("|u1", False, (len(text),), text)
    return _rezip(members, rng) if rng.random() < 0.3 else _zip(members.items())


def _keras_mutant(data, rng):
    """A .keras archive whose config's layers are renamed, repeated, dropped or re-wired (cycles, self
    references, unknown names), whose values are hostile, or whose weights change dtype or byte order."""
    members = _unzip(data)
    spec = json.loads(members["config.json"])
    cfg = spec.get("config", {})
    layers = cfg.get("layers", [])
    names = [e.get("name") for e in layers if isinstance(e, dict)]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["rename", "rewire", "repeat", "drop", "io", "value", "value", "weights", "zip"])
        entries = [e for e in layers if isinstance(e, dict)]
        if kind == "rename" and entries:
            e = rng.choice(entries)
            new = rng.choice([*names, "x", ""])
            e["name"] = new
            if rng.random() < 0.5 and isinstance(e.get("config"), dict):
                e["config"]["name"] = new
        elif kind == "rewire":
            refs = [
                t
                for p in _json_paths(cfg)
                for t in [_get(cfg, p)]
                if isinstance(t, dict) and isinstance(t.get("keras_history"), list) and t["keras_history"]
            ]
            if refs:
                rng.choice(refs)["keras_history"][0] = rng.choice([*names, "nowhere"])
        elif kind == "repeat" and entries:
            layers.insert(rng.randrange(len(layers) + 1), copy.deepcopy(rng.choice(entries)))
        elif kind == "drop" and layers:
            del layers[rng.randrange(len(layers))]
        elif kind == "io":
            key = rng.choice(["input_layers", "output_layers"])
            cfg[key] = rng.choice([[rng.choice(names), 0, 0], [[rng.choice(names), 0, 0]] * 2, [], "x", None])
        elif kind == "value":
            spec = mutate_json(spec, rng, names)
            cfg = spec.get("config", {}) if isinstance(spec, dict) else {}
            layers = cfg.get("layers", []) if isinstance(cfg, dict) else []
            layers = layers if isinstance(layers, list) else []
        elif kind == "weights":
            members["model.weights.h5"] = _retype_h5(members["model.weights.h5"], rng)
    members["config.json"] = _dumps(spec)
    return _rezip(members, rng) if rng.random() < 0.2 else _zip(members.items())


def _retype_h5(h5_bytes, rng):
    """The weights file with one variable rewritten in another dtype or byte order (or reshaped)."""
    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="rnn_xp-fuzz-h5-") as d:
        path = Path(d) / "w.h5"
        path.write_bytes(h5_bytes)
        with h5py.File(path, "a") as f:
            found = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
            if found:
                name = rng.choice(sorted(found))
                a = f[name][()]
                del f[name]
                dtype = rng.choice([">f4", ">f8", "<f2", np.longdouble, "<i4", "|u1", "<c8", "?"])
                with warnings.catch_warnings():  # complex (an earlier mutation) to real: the point
                    warnings.simplefilter("ignore")
                    a = np.asarray(a).astype(dtype)
                if rng.random() < 0.3 and a.size:
                    a = a.reshape(-1)[: rng.randrange(a.size + 1)]
                f.create_dataset(name, data=a)
        return path.read_bytes()


HOSTILE_NAMES = ["", ".", "..", "/", "a//b", "../model_weights", "model_weights", "top_level_model_weights", "x" * 300]


def _legacy_h5_mutant(data, rng):
    """A legacy HDF5 model whose model_config JSON changes (hostile values, renamed, repeated or re-wired layers),
    whose layer_names / weight_names lists lose, repeat, reorder or rename entries (as variable-length or
    fixed-length strings), or whose weights change dtype, byte order or shape."""
    import h5py
    import numpy as np

    kind = rng.choice(["config", "config", "names", "names", "weights", "attribute"])
    if kind == "weights":
        return _retype_h5(data, rng)
    with tempfile.TemporaryDirectory(prefix="rnn_xp-fuzz-legacy-") as d:
        path = Path(d) / "m.h5"
        path.write_bytes(data)
        with h5py.File(path, "a") as f:
            if kind == "config":
                spec = json.loads(f.attrs["model_config"])
                layers = spec.get("config", {}).get("layers", [])
                names = [e.get("name") for e in layers if isinstance(e, dict)]
                for _ in range(rng.randint(1, 3)):
                    spec = mutate_json(spec, rng, [*names, "LSTM", "GRU", "CuDNNGRU", "Bidirectional", "Model"])
                f.attrs["model_config"] = _dumps(spec).decode()
            elif kind == "names":
                groups = [f["model_weights"], *(f["model_weights"][n] for n in f["model_weights"])]
                g = rng.choice(groups)
                key = "layer_names" if g.name == "/model_weights" else "weight_names"
                values = [v.decode() if isinstance(v, bytes) else str(v) for v in g.attrs[key]]
                change = rng.choice(["drop", "repeat", "reverse", "rename", "chunk"])
                if change == "drop" and values:
                    del values[rng.randrange(len(values))]
                elif change == "repeat" and values:
                    values.insert(rng.randrange(len(values) + 1), rng.choice(values))
                elif change == "reverse":
                    values.reverse()
                elif change == "rename" and values:
                    values[rng.randrange(len(values))] = rng.choice([*HOSTILE_NAMES, *values])
                fixed = rng.random() < 0.3  # as h5py 2.x wrote them, fixed-length bytes

                def store(name, items, fixed=fixed):
                    g.attrs[name] = np.array([v.encode() for v in items]) if fixed and items else items

                if change == "chunk":  # Keras's split of a long list: key0, key1, ...
                    del g.attrs[key]
                    store(f"{key}0", values[: len(values) // 2])
                    store(f"{key}1", values[len(values) // 2 :])
                else:
                    store(key, values)
            else:  # an attribute of another type where Keras writes strings
                target = rng.choice([f, f["model_weights"]])
                key = rng.choice([k for k in target.attrs])
                target.attrs[key] = rng.choice([np.arange(3), np.float64(1.5), np.array([[b"a"]]), b"", "\xff"])
        out = path.read_bytes()
    if out == data:
        raise ValueError("the change left the file as it was")  # mutant() draws again
    return out


_PICKLE_INTS = ("BININT", "BININT1", "BININT2", "LONG1")
_STORAGES = [
    "torch FloatStorage",
    "torch DoubleStorage",
    "torch HalfStorage",
    "torch BFloat16Storage",
    "torch IntStorage",
    "torch ByteStorage",
    "torch BoolStorage",
    "torch ComplexFloatStorage",
    "torch LongStorage",
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "os system",
]


def _pickle_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + v.to_bytes(2, "little")
    if -(1 << 31) <= v < (1 << 31):
        return b"J" + v.to_bytes(4, "little", signed=True)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def _mutate_pickle(data, rng):
    """torch's data.pkl with some of its ints (tensor sizes, strides, offsets, storage sizes), storage keys or
    storage types changed; everything else as it was."""
    ops = list(pickletools.genops(data))
    spans = [(pos, ops[i + 1][2] if i + 1 < len(ops) else len(data)) for i, (_, _, pos) in enumerate(ops)]
    ints = [i for i, (op, _, _) in enumerate(ops) if op.name in _PICKLE_INTS]
    texts = [i for i, (op, arg, _) in enumerate(ops) if op.name == "BINUNICODE"]
    globs = [i for i, (op, _, _) in enumerate(ops) if op.name == "GLOBAL"]
    new = {}
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["int", "int", "int", "text", "global"])
        if kind == "int" and ints:
            i = rng.choice(ints)
            v = rng.choice([*DIMS, ops[i][1] + 1, ops[i][1] - 1, ops[i][1] * 1000])
            new[i] = _pickle_int(v)
        elif kind == "text" and texts:
            i = rng.choice(texts)
            t = rng.choice(["0", "1", "2", "99", "cpu", "cuda", "meta", "storage", "weight_ih_l0", "../x"]).encode()
            new[i] = b"X" + len(t).to_bytes(4, "little") + t
        elif kind == "global" and globs:
            module, name = rng.choice(_STORAGES).split(" ")
            new[rng.choice(globs)] = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    return b"".join(new.get(i, data[a:b]) for i, (a, b) in enumerate(spans))


def _torch_mutant(data, rng):
    """A torch.save archive whose pickled records or storages change (a storage shorter than its tensors, strides
    of 0, offsets beyond the end, other dtypes), or whose members are recompressed."""
    members = _unzip(data)
    pkl = next(n for n in members if n.endswith("data.pkl"))
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["pickle", "pickle", "pickle", "storage", "zip"])
        if kind == "pickle":
            members[pkl] = _mutate_pickle(members[pkl], rng)
        elif kind == "storage":
            stored = sorted(n for n in members if "/data/" in n)
            if stored:
                n = rng.choice(stored)
                cut = rng.randrange(len(members[n]) + 1)
                members[n] = members[n][:cut] if rng.random() < 0.6 else members[n] + bytes(rng.randrange(1, 4096))
    return _rezip(members, rng) if rng.random() < 0.25 else _zip(members.items())


def _onnx_mutant(data, rng):
    """An ONNX model whose weights are computed by a few nodes (Reshape, Expand, ConstantOfShape, Range, Tile,
    Shape of the graph's input), whose initializers declare other shapes, or whose attributes change."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_from_string(data)
    g = m.graph
    weights = [t.name for t in g.initializer if t.name in ("W", "R", "B", "P")]

    def const(name, values, dtype=np.int64):
        g.initializer.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))
        return name

    for step in range(rng.randint(1, 3)):
        kind = rng.choice(
            ["reshape", "expand", "constant_of_shape", "range", "tile", "input_shape", "dims", "attribute", "dtype"]
        )
        present = [t for t in g.initializer if t.name in weights]  # a weight computed already is no initializer
        if not present:
            break
        init = rng.choice(present)
        name = init.name
        src = f"{name}_src{step}"
        shape = [int(d) for d in init.dims]
        target = [rng.choice(DIMS) if rng.random() < 0.3 else d for d in shape]
        nodes = []
        if kind in ("reshape", "expand", "tile", "input_shape", "range", "constant_of_shape"):
            init.name = src
        if kind == "reshape":
            nodes = [helper.make_node("Reshape", [src, const(f"s{step}", target)], [name])]
        elif kind == "expand":
            small = [1] * len(shape) if rng.random() < 0.5 else target
            nodes = [
                helper.make_node(
                    "Slice",
                    [src, const(f"st{step}", [0] * len(shape)), const(f"en{step}", [1] * len(shape))],
                    [f"one{step}"],
                ),
                helper.make_node(
                    "Expand", [f"one{step}", const(f"s{step}", small if rng.random() < 0.3 else target)], [name]
                ),
            ]
        elif kind == "constant_of_shape":
            nodes = [
                helper.make_node(
                    "ConstantOfShape",
                    [const(f"s{step}", target)],
                    [name],
                    value=numpy_helper.from_array(np.array([0.5], np.float32)),
                )
            ]
        elif kind == "range":
            limit = int(np.prod(shape)) if rng.random() < 0.5 else rng.choice(DIMS)
            nodes = [
                helper.make_node(
                    "Range",
                    [
                        const(f"a{step}", 0.0, np.float32),
                        const(f"b{step}", float(limit), np.float32),
                        const(f"c{step}", rng.choice([1.0, 0.5, 1e-30, -1.0, 0.0]), np.float32),
                    ],
                    [f"r{step}"],
                ),
                helper.make_node("Reshape", [f"r{step}", const(f"s{step}", target)], [name]),
            ]
        elif kind == "tile":
            reps = [rng.choice([1, 1, 2, 0, 1 << 20, -1]) for _ in shape]
            nodes = [
                helper.make_node("Tile", [src, const(f"s{step}", reps)], [f"t{step}"]),
                helper.make_node("Reshape", [f"t{step}", const(f"z{step}", shape)], [name]),
            ]
        elif kind == "input_shape":  # a weight whose shape depends on the input's: unknown when importing
            x = g.input[0].name
            nodes = [
                helper.make_node("Shape", [x], [f"xs{step}"]),
                helper.make_node("Gather", [f"xs{step}", const(f"i{step}", 0)], [f"d{step}"]),
                helper.make_node("Unsqueeze", [f"d{step}", const(f"ax{step}", [0])], [f"u{step}"]),
                helper.make_node("Concat", [const(f"head{step}", shape[:-1]), f"u{step}"], [f"s{step}"], axis=0),
                helper.make_node("Expand", [src, f"s{step}"], [name]),
            ]
        elif kind == "dims":
            init.dims[rng.randrange(len(init.dims))] = rng.choice(DIMS[:-1])
        elif kind == "attribute":
            node = next(n for n in g.node if n.op_type in ("LSTM", "GRU", "RNN"))
            attr = rng.choice(list(node.attribute))
            if attr.type == onnx.AttributeProto.INT:
                attr.i = rng.choice(DIMS[:-1])
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = rng.choice([0.0, -1.0, float("inf"), float("nan"), 1e38])
            elif attr.type == onnx.AttributeProto.STRING:
                attr.s = rng.choice([b"", b"reverse", b"nope", b"\xff"])
            elif attr.type == onnx.AttributeProto.STRINGS:
                del attr.strings[rng.randrange(len(attr.strings)) :]
        else:
            init.data_type = rng.choice(
                [
                    TensorProto.DOUBLE,
                    TensorProto.FLOAT16,
                    TensorProto.BFLOAT16,
                    TensorProto.INT64,
                    TensorProto.STRING,
                    TensorProto.COMPLEX64,
                    0,
                    99,
                ]
            )
        if nodes:  # before the nodes reading them (protobuf's repeated fields take no slice assignment)
            rest = list(g.node)
            del g.node[:]
            g.node.extend([*nodes, *rest])
    return m.SerializeToString()


# target -> mutate(seed bytes, rng) -> bytes (byte-level ``mutate`` unless named here)
MUTATORS = {
    "h5": _h5_mutant,
    "npz-s": _npz_mutant,
    "keras-s": _keras_mutant,
    "pt-s": _torch_mutant,
    "onnx-s": _onnx_mutant,
    "legacy-h5-s": _legacy_h5_mutant,
}


# --- the child -----------------------------------------------------------------------------------------------
def child(loader_name, paths):
    """Load each path; print one JSON line per input; a crash leaves its "start" line last."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import rnn_xp

    loader = getattr(rnn_xp, loader_name) if loader_name != "selftest" else _selftest_loader
    for i, path in enumerate(paths):
        print(json.dumps({"start": i}), flush=True)
        try:
            loader(path)
            outcome = "ok"
        except ValueError:
            outcome = "refused"
        except BaseException as e:  # noqa: BLE001 - anything else breaks the contract: reported with its traceback
            outcome = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
        print(json.dumps({"done": i, "outcome": outcome}), flush=True)


def _selftest_loader(path):
    """A loader that crashes the way a C library does, for the harness's own test."""
    data = Path(path).read_bytes()
    if data.startswith(b"CRASH"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if data.startswith(b"HANG"):
        time.sleep(3600)
    if data.startswith(b"OOPS"):
        raise KeyError("not a ValueError")
    raise ValueError("refused")


# --- the parent ------------------------------------------------------------------------------------------------
def _save(out_dir, kind, target, data, detail):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = TARGETS[target][0] if target in TARGETS else ".bin"
    path = out_dir / f"{kind}-{target}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    path.write_bytes(data)
    path.with_suffix(path.suffix + ".txt").write_text(detail)
    return path


def run_batch(loader_name, target, mutants, work, out_dir, timeout=CHILD_TIMEOUT, stats=None):
    """Run mutants in children (a new child after each crash); returns (findings, ran). ``stats`` (a dict), when
    given, counts the outcomes "ok" and "refused"."""
    findings, start = [], 0
    while start < len(mutants):
        paths = []
        for k, data in enumerate(mutants[start:]):
            p = Path(work) / f"m{k}{TARGETS.get(target, ('.bin',))[0]}"
            p.write_bytes(data)
            paths.append(str(p))
        env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", loader_name, *paths]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work, env=env)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else ""
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for rec in lines:
            if stats is not None and "done" in rec and rec["outcome"] in ("ok", "refused"):
                stats[rec["outcome"]] = stats.get(rec["outcome"], 0) + 1
            if "done" in rec and rec["outcome"] not in ("ok", "refused"):
                data = mutants[start + rec["done"]]
                findings.append(
                    (
                        "exception",
                        _save(out_dir, "exception", target, data, rec["outcome"]),
                        rec["outcome"].splitlines()[0],
                    )
                )
        last = next((rec for rec in reversed(lines)), None)
        if rc == 0 and last is not None and last.get("done") == len(paths) - 1:
            return findings, len(mutants)
        # the child died (a signal, an exit, a hang) during the input it last started
        failed = start + (last["start"] if last and "start" in last else (last["done"] + 1 if last else 0))
        if failed >= len(mutants):
            return findings, len(mutants)
        why = (
            "hang"
            if rc == "timeout"
            else f"signal {signal.Signals(-rc).name}"
            if isinstance(rc, int) and rc < 0
            else f"exit status {rc}"
        )
        findings.append(("crash", _save(out_dir, "crash", target, mutants[failed], f"{why}\n{err[-4000:]}"), why))
        start = failed + 1
    return findings, len(mutants)


def fuzz(seconds, seed, out_dir, targets=None, corpus_dir=None, batch=BATCH, log=print):
    """Fuzz each target for its share of ``seconds``; returns (findings, mutants run per target)."""
    targets = list(targets or TARGETS)
    corpus = make_corpus(corpus_dir or Path(out_dir) / "corpus")
    findings, counts = [], {}
    with tempfile.TemporaryDirectory(prefix="rnn_xp-fuzz-") as work:
        for target in targets:
            deadline = time.monotonic() + seconds / len(targets)
            index = counts[target] = 0
            stats, mine = {}, 0
            while index == 0 or time.monotonic() < deadline:
                mutants = [mutant(target, corpus[target], seed, index + k) for k in range(batch)]
                found, ran = run_batch(TARGETS[target][2], target, mutants, work, out_dir, stats=stats)
                findings += found
                mine += len(found)
                index += ran
                counts[target] = index
            log(
                f"{target}: {index} mutants ({stats.get('ok', 0)} loaded, {stats.get('refused', 0)} refused with "
                f"ValueError), {mine} findings"
            )
    return findings, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("RNN_XP_FUZZ_SECONDS", 60)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fuzz-findings", help="where crashing inputs are saved")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"a comma-separated subset of {list(TARGETS)}")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--replay", help="load one saved input in a child and print what happens")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1:])
    if args.replay:
        path = Path(args.replay)
        target = path.name.split("-", 1)[1].rsplit("-", 1)[0]  # KIND-TARGET-HASH.SUFFIX; a target may hold "-"
        with tempfile.TemporaryDirectory() as work:
            found, _ = run_batch(TARGETS[target][2], target, [path.read_bytes()], work, Path(work) / "again")
        print(found[0][2] if found else "no crash: the input loads or is refused with a ValueError")
        return 1 if found else 0
    findings, counts = fuzz(args.seconds, args.seed, args.out, args.targets.split(","))
    for kind, path, why in findings:
        print(f"{kind}: {why}: {path}")
    print(f"{sum(counts.values())} mutants, {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
