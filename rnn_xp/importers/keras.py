"""Keras 3 recurrent models (Sequential or linear functional) to rnn_xp models.

A ``.keras`` file is read without Keras or TensorFlow: its ``config.json`` with the json module
and its ``model.weights.h5`` with h5py. A live Keras model or layer is written by Keras into a
``.keras`` archive in memory (never to disk) and read the same way, so both take one path.

The conversion of each recurrent layer (G gates of U units, F input features):

* ``kernel`` (F, G*U) -> ``w_ih = kernel.T``; ``recurrent_kernel`` (U, G*U) -> ``w_hh = recurrent_kernel.T``;
  GRU gate blocks z, r, h become rnn_xp's r, z, n; LSTM's i, f, c, o is rnn_xp's i, f, g, o;
* SimpleRNN, LSTM and GRU(reset_after=False) keep one bias (G*U,) -> ``b_ih``, ``bias="single"``;
  GRU(reset_after=True) keeps (2, 3U) = [input, recurrent] -> ``b_ih``, ``b_hh``; use_bias=False -> none;
* activations: SimpleRNN (activation); GRU (recurrent_activation, activation); LSTM
  (recurrent_activation, activation, activation), with Keras 3's meaning of each name.

Embedding tables and Dense kernels (in, out) are used as stored.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import warnings
import zipfile

import numpy as np

from .._validate import check_file, read_zip_member
from ..activations import AXIS_ACTIVATIONS, resolve
from ..activations import names as activation_names
from ..layers import ActivationLayer, Bidirectional, Dense, Embedding, Identity, Masking, Recurrent, Sequential
from ..params import RNNParams, make_config
from ..registry import CELLS as _SPECS

__all__ = ["from_keras"]

CELLS = {s.type_name: s.name for s in _SPECS.values()}  # Keras class -> rnn_xp cell
# layers that are the identity at inference and pass the mask on
IDENTITY = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
)
CELL_ACTIVATIONS = sorted(n for n in activation_names() if n == n.lower())  # Keras 3's names and meanings
LAYER_ACTIVATIONS = sorted([*CELL_ACTIVATIONS, *AXIS_ACTIVATIONS])
_MAX_CONFIG_BYTES = 64 << 20
_FLOATS = ("float16", "float32", "float64")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading a .keras file needs h5py: pip install 'rnn_xp[keras]' (or pip install h5py); "
            "Keras itself is not needed"
        ) from None
    return h5py


def _snake_case(name):
    """Keras's naming.to_snake_case, which names a model's layers inside the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Weights:
    """The arrays of a ``model.weights.h5``, read through hard links only, each checked before it is read."""

    def __init__(self, h5, limit):
        self.h5, self.limit = h5, limit

    def _group(self, path):
        h5py = _h5py()
        g = self.h5
        for part in path.split("/"):
            link = g.get(part, getlink=True)
            if link is None:
                return None
            if not isinstance(link, h5py.HardLink):  # an external or soft link could reach other files
                raise ValueError(f"{path}: the weights file links outside itself")
            g = g[part]
            if not isinstance(g, h5py.Group):
                raise ValueError(f"{path}: expected a group in the weights file")
        return g

    def read(self, path):
        """The variables stored at ``path/vars``, in order ("0", "1", ...)."""
        h5py = _h5py()
        g = self._group(path + "/vars")
        if g is None:
            return []
        keys = sorted(g.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise ValueError(f"{path}/vars holds {keys}; expected variables named 0, 1, ...")
        out = []
        for k in keys:
            if not isinstance(g.get(k, getlink=True), h5py.HardLink):
                raise ValueError(f"{path}/vars/{k}: the weights file links outside itself")
            ds = g[k]
            if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external:
                raise ValueError(f"{path}/vars/{k}: expected a plain dataset stored in the file")
            if ds.dtype.kind != "f":
                raise ValueError(
                    f"{path}/vars/{k} has dtype {ds.dtype}; expected floating point weights "
                    "(quantized layers are not supported)"
                )
            if ds.dtype.newbyteorder("=").name not in _FLOATS:  # float128 and other extended types
                raise ValueError(
                    f"{path}/vars/{k} has dtype {ds.dtype} ({ds.dtype.itemsize} bytes); expected "
                    f"{', '.join(_FLOATS[:-1])} or {_FLOATS[-1]}, which every namespace knows"
                )
            if ds.dtype.itemsize * math.prod(ds.shape) > self.limit:  # compressed beyond its own file
                raise ValueError(f"{path}/vars/{k} declares {ds.shape} values, more than the archive holds")
            a = np.array(ds[()])
            out.append(a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")))  # >f4 -> float32
        return out


def _read_archive(path, where=None):
    """The rnn_xp model stored in a .keras archive (a path, or a file object named ``where``)."""
    where = where or os.fspath(check_file(path, "from_keras"))
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise ValueError(
            f"{where} is not a .keras archive ({e}). Fix: save the model with model.save('model.keras') in Keras 3"
        ) from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if "model.weights.json" in infos:
            raise ValueError(
                f"{where}: sharded weights (model.weights.json) are not supported; save the model "
                "without max_shard_size"
            )
        for member in ("config.json", "model.weights.h5"):
            if member not in infos:
                raise ValueError(f"{where} is not a Keras 3 .keras archive: it lacks {member}")
        try:
            spec = json.loads(read_zip_member(zf, infos["config.json"], _MAX_CONFIG_BYTES).decode("utf-8"))
            # read once, into memory: h5py seeks back and forth, and zipfile's member stream re-reads (re-inflates)
            # from the member's start on every backward seek; the read is bounded (ratio and the archive's size)
            weights_bytes = read_zip_member(zf, infos["model.weights.h5"])
        # zipfile: RuntimeError for an encrypted member, NotImplementedError for an unknown method or encryption,
        # BadZipFile for a bad CRC
        except (
            ValueError,
            UnicodeDecodeError,
            RecursionError,
            zipfile.BadZipFile,
            OSError,
            EOFError,
            RuntimeError,
            NotImplementedError,
        ) as e:
            raise ValueError(f"{where}: malformed .keras archive ({e})") from None
    h5py = _h5py()
    # damaged HDF5 raises OSError or RuntimeError in h5py; an address beyond any file, OverflowError when h5py asks
    # the in-memory file for bytes there (found by tests/fuzz_harness.py)
    damaged = (OSError, RuntimeError, EOFError, NotImplementedError, OverflowError)
    try:
        h5 = h5py.File(io.BytesIO(weights_bytes), "r")
    except (ValueError, *damaged) as e:
        raise ValueError(f"{where}: model.weights.h5 is not an HDF5 file ({e})") from None
    with h5:
        try:
            return _build(spec, _Weights(h5, len(weights_bytes)))
        # a malformed config fails in many ways; a number beyond any float (units 1e999) in OverflowError
        except (KeyError, TypeError, AttributeError, IndexError, RecursionError, *damaged) as e:
            raise ValueError(f"{where}: malformed .keras archive ({type(e).__name__}: {e})") from None


# --- layers ------------------------------------------------------------------------------------------
def _activation(value, where, cell=False):
    """A Keras activation (a name, or a serialized built-in function) as rnn_xp's.

    A layer takes softmax, log_softmax and sparsemax (functions of the last axis) too; a cell
    only the elementwise ones.
    """
    if value is None:
        return resolve("linear")
    if isinstance(value, dict) and isinstance(value.get("config"), str) and value.get("class_name") == "function":
        value = value["config"]  # a built-in function, serialized
    supported = CELL_ACTIVATIONS if cell else LAYER_ACTIVATIONS
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: activation {value!r} is not a built-in Keras activation; rnn_xp runs {', '.join(supported)}"
        )
    if value not in supported:
        why = (
            " inside a cell (it mixes the units; cells apply elementwise functions)"
            if value in AXIS_ACTIVATIONS
            else ""
        )
        raise ValueError(f"{where}: activation {value!r} is not supported{why}; rnn_xp runs {', '.join(supported)}")
    return value if value in AXIS_ACTIVATIONS else resolve(value)


def _flag(lc, key, default, where):
    """A layer's boolean option in its config: true or false (a tampered "false" is not read as True)."""
    value = lc.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key}={str(value)[:40]!r}; expected true or false")
    return value


def _size(lc, key, where):
    """A layer's size in its config: an int of at least 1 (not 1e999, 4.5 or "4")."""
    value = lc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key}={value!r}; expected a whole number of at least 1")
    return value


def _check_dtype(lc, where):
    policy = lc.get("dtype")
    name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    if isinstance(name, str) and name.startswith("mixed_"):
        raise ValueError(
            f"{where}: the dtype policy {name!r} computes in half precision; rnn_xp imports "
            "float32/float64 models. Fix: keras.config.set_dtype_policy('float32') before building"
        )


def _expect(weights, n, where, what):
    if len(weights) != n:
        raise ValueError(
            f"{where}: {len(weights)} weight arrays stored; expected {n} ({what}). Was the model "
            "built (called once) before it was saved?"
        )
    return weights


def _recurrent(kind, lc, weights, where):
    """A Keras SimpleRNN/LSTM/GRU (config and [kernel, recurrent_kernel, bias?]) as a Recurrent layer."""
    for option in ("return_state", "stateful"):
        if _flag(lc, option, False, where):
            raise ValueError(
                f"{where}: {option}=True is not supported; rnn_xp runs each call from a zero state "
                "and returns the layer's output only"
            )
    _check_dtype(lc, where)
    cell, U = CELLS[kind], _size(lc, "units", where)
    G, use_bias = _SPECS[cell].num_gates, _flag(lc, "use_bias", True, where)
    reset_after = _flag(lc, "reset_after", True, where) if cell == "gru" else True
    act = _activation(lc.get("activation", "tanh"), where, cell=True)
    rec = _activation(lc.get("recurrent_activation", "sigmoid"), where, cell=True)
    acts = {"rnn": [act], "gru": [rec, act], "lstm": [rec, act, act]}[cell]
    weights = _expect(weights, 3 if use_bias else 2, where, "kernel, recurrent_kernel" + (", bias" if use_bias else ""))
    kernel, recurrent = weights[0], weights[1]
    F = kernel.shape[0] if kernel.ndim == 2 else -1
    if kernel.shape != (F, G * U) or recurrent.shape != (U, G * U):
        raise ValueError(
            f"{where}: kernel {kernel.shape} and recurrent_kernel {recurrent.shape}; expected "
            f"(features, {G * U}) and ({U}, {G * U}) for {U} units"
        )

    def gates(a):  # (G*U, ...) in Keras's gate order -> rnn_xp's
        return np.concatenate([a[k * U : (k + 1) * U] for k in _SPECS[cell].keras_order], axis=0)

    arrays = {"l0.fwd.w_ih": gates(kernel.T), "l0.fwd.w_hh": gates(recurrent.T)}
    bias = False
    if use_bias:
        b = weights[2]
        if cell == "gru" and reset_after:  # (2, 3U): the input bias, then the recurrent bias
            if b.shape != (2, G * U):
                raise ValueError(f"{where}: bias {b.shape}; expected (2, {G * U}) with reset_after=True")
            bias, arrays["l0.fwd.b_ih"], arrays["l0.fwd.b_hh"] = True, gates(b[0]), gates(b[1])
        else:
            if b.shape != (G * U,):
                raise ValueError(f"{where}: bias {b.shape}; expected ({G * U},)")
            bias, arrays["l0.fwd.b_ih"] = "single", gates(b)
    cfg = make_config(cell, F, U, bias=bias, activations=acts, reset_after=reset_after, dtype=str(kernel.dtype))
    return Recurrent(
        RNNParams.from_named_arrays(cfg, {n: np.ascontiguousarray(a) for n, a in arrays.items()}),
        return_sequences=_flag(lc, "return_sequences", False, where),
        zero_output_for_mask=_flag(lc, "zero_output_for_mask", False, where),
        name=str(lc.get("name", "")),
        go_backwards=_flag(lc, "go_backwards", False, where),
    )


def _rnn_layer(kind, lc, read, where):
    return _recurrent(kind, lc, read("cell"), where)


def _bidirectional(kind, lc, read, where):
    forward = lc["layer"]
    backward = lc.get("backward_layer")
    if backward is None:  # Keras builds it from the forward layer, reading the other way
        backward = {
            **forward,
            "config": {
                **forward["config"],
                "go_backwards": not forward["config"].get("go_backwards", False),
                "name": "backward_" + forward["config"].get("name", ""),
            },
        }
    sub = []
    for spec, attr in ((forward, "forward_layer"), (backward, "backward_layer")):
        if spec.get("class_name") not in CELLS:
            raise ValueError(
                f"{where}: wraps a {spec.get('class_name')}; rnn_xp imports Bidirectional around {', '.join(CELLS)}"
            )
        sub.append(
            _recurrent(
                spec["class_name"],
                spec["config"],
                read(f"{attr}/cell"),
                f"{where} {attr} {spec['config'].get('name', '')!r}",
            )
        )
    merge_mode = lc.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "mul", "ave", None):
        raise ValueError(f"{where}: merge_mode={merge_mode!r}; expected concat, sum, mul, ave or None")
    return Bidirectional(sub[0], sub[1], merge_mode, str(lc.get("name", "bidirectional")))


def _embedding(kind, lc, read, where):
    (table,) = _expect(read(""), 1, where, "embeddings")
    if table.shape != (_size(lc, "input_dim", where), _size(lc, "output_dim", where)):
        raise ValueError(f"{where}: table {table.shape}; expected ({lc['input_dim']}, {lc['output_dim']})")
    return Embedding(table, _flag(lc, "mask_zero", False, where), str(lc.get("name", "embedding")))


def _dense(kind, lc, read, where):
    _check_dtype(lc, where)
    use_bias = _flag(lc, "use_bias", True, where)
    weights = _expect(read(""), 2 if use_bias else 1, where, "kernel" + (", bias" if use_bias else ""))
    return Dense(
        weights[0],
        weights[1] if use_bias else None,
        _activation(lc.get("activation"), where),
        str(lc.get("name", "dense")),
    )


def _masking(kind, lc, read, where):
    value = lc.get("mask_value", 0.0)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
        value = float(value)
    if not isinstance(value, float):  # a string, a bool, or an int beyond any float (float() would overflow)
        raise ValueError(f"{where}: mask_value={str(value)[:40]}; expected a number a float can hold")
    return Masking(value, str(lc.get("name", "masking")))


def _activation_layer(kind, lc, read, where):
    return ActivationLayer(_activation(lc.get("activation"), where), str(lc.get("name", "activation")))


def _identity(kind, lc, read, where):
    return Identity(kind, str(lc.get("name", _snake_case(kind))))


# Keras class -> converter(kind, layer config, read(sub_path) -> arrays, where) -> rnn_xp layer
CONVERTERS = {
    **{k: _rnn_layer for k in CELLS},
    "Bidirectional": _bidirectional,
    "Embedding": _embedding,
    "Dense": _dense,
    "Masking": _masking,
    "Activation": _activation_layer,
    **{k: _identity for k in IDENTITY},
}


# --- models ------------------------------------------------------------------------------------------
def _is_op(entry):
    """Operations (ops.not_equal, ops.any of Masking's mask, ...) sit in a functional config beside the layers."""
    return str(entry.get("module") or "").startswith(("keras.src.ops", "keras.ops"))


def _name(entry):
    return entry.get("name") or entry.get("config", {}).get("name")


def _history(t):
    if isinstance(t, dict) and t.get("class_name") == "__keras_tensor__":
        return t["config"]["keras_history"][0]
    return None


def _refs(value):
    """Layer names of a functional config's input_layers / output_layers ([name, 0, 0] or a list of them)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value[0]]
    return [v[0] for v in value]


def _linear_chain(cfg):
    """The layer entries of a functional model from its input to its output, checked to form one chain."""
    entries = cfg["layers"]
    by_name = {}
    for e in entries:  # a name used twice would make the references below ambiguous (or loop)
        if _name(e) in by_name:
            raise ValueError(f"the config names more than one layer {_name(e)!r}; layer names must be unique")
        by_name[_name(e)] = e
    inputs, outputs = _refs(cfg["input_layers"]), set(_refs(cfg["output_layers"]))
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"the functional model has inputs {inputs} and outputs {sorted(outputs)}; rnn_xp imports "
            "models with one input and one output layer"
        )
    source = {}  # layer -> the layer whose output it reads
    for e in entries:
        if e.get("class_name") == "InputLayer" or _is_op(e):
            continue  # operations only compute masks here: rnn_xp's layers recompute them by Keras's rules
        nodes = e.get("inbound_nodes") or []
        if len(nodes) != 1:
            raise ValueError(
                f"layer {_name(e)!r} is called {len(nodes)} times; rnn_xp imports linear models, "
                "where each layer is called once"
            )
        args, kwargs = nodes[0].get("args", []), nodes[0].get("kwargs", {})
        if len(args) != 1 or _history(args[0]) is None or set(kwargs) - {"mask", "training"}:
            raise ValueError(
                f"layer {_name(e)!r} is not called on the output of one layer alone (arguments "
                f"{sorted(kwargs)} besides it); rnn_xp imports linear models"
            )
        if kwargs.get("training"):
            raise ValueError(f"layer {_name(e)!r} is called with training=True; rnn_xp runs inference")
        source[_name(e)] = _history(args[0])
        if _is_op(by_name.get(source[_name(e)], {})):
            raise ValueError(
                f"layer {_name(e)!r} reads the output of the operation {source[_name(e)]!r}; rnn_xp "
                "imports models built of layers"
            )
    chain, current, seen = [], inputs[0], {inputs[0]}
    while True:
        readers = [n for n, s in source.items() if s == current]
        if not readers:
            break
        if readers[0] in seen:  # unique names leave no cycle from the input, but a malformed config is refused
            raise ValueError(
                f"the layers' references form a cycle through {readers[0]!r}; rnn_xp imports linear models"
            )
        seen.add(readers[0])
        if len(readers) > 1:
            raise ValueError(f"the model branches after {current!r} (into {readers}); rnn_xp imports linear models")
        current = readers[0]
        chain.append(by_name[current])
    if current not in outputs or len(chain) != len(source):
        raise ValueError(
            "the functional model is not one chain from its input to its output; rnn_xp imports linear models"
        )
    return chain, by_name[inputs[0]]


def _input_shape(entry):
    shape = entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
    return None if shape is None else tuple(shape[1:])


def _unsupported(entry):
    raise ValueError(
        f"layer {_name(entry)!r} ({entry.get('class_name')}) is not supported; rnn_xp imports InputLayer, "
        f"{', '.join(sorted(CONVERTERS))}"
    )


def _build(spec, weights):
    kind, cfg = spec.get("class_name"), spec.get("config")
    if kind == "Sequential":
        entries = list(cfg["layers"])
        inp = entries[0] if entries and entries[0].get("class_name") == "InputLayer" else None
        chain = entries[1:] if inp else entries
        input_shape = (
            _input_shape(inp)
            if inp
            else (tuple(cfg["build_input_shape"][1:]) if cfg.get("build_input_shape") else None)
        )
    elif kind in ("Functional", "Model") and "input_layers" in cfg:
        entries = list(cfg["layers"])
        for e in entries:  # name an unsupported layer before judging how the layers connect
            if not _is_op(e) and e.get("class_name") not in (*CONVERTERS, "InputLayer"):
                _unsupported(e)
        chain, inp = _linear_chain(cfg)
        input_shape = _input_shape(inp)
    else:
        raise ValueError(
            f"the archive holds a {kind!r}; rnn_xp imports Sequential models and linear functional "
            "models (keras.Model(inputs, outputs))"
        )
    # Keras stores a model's layers under the snake_case of their class, numbered _1, _2, ... in order
    stored, used = {}, {}
    for e in entries:
        if _is_op(e):
            continue
        base = _snake_case(e["class_name"])
        used[base] = used.get(base, -1) + 1
        stored[_name(e)] = base if used[base] == 0 else f"{base}_{used[base]}"
    layers = []
    for e in chain:
        name, kind = _name(e), e.get("class_name")
        where = f"layer {name!r} ({kind})"
        if kind not in CONVERTERS:
            _unsupported(e)
        # the layer's path is Keras's own way to find its weights; the "name" attribute Keras 3.10+ writes beside
        # them is not read: it is a variable-length string, and reading one from a damaged global heap hangs
        # HDF5 2.0 (found by tests/fuzz_harness.py)
        path = f"layers/{stored[name]}"

        def read(sub, path=path):
            return weights.read(f"{path}/{sub}" if sub else path)

        layers.append(CONVERTERS[kind](kind, e["config"], read, where))
    return Sequential(layers, input_shape, str(cfg.get("name", "sequential")))


def _from_live(obj):
    import keras

    if isinstance(obj, keras.Model):
        model = obj
    elif not isinstance(obj, keras.layers.Layer):
        raise TypeError(f"from_keras() takes a Keras model or layer; got {type(obj).__name__}")
    else:
        if not obj.built:
            raise ValueError(
                f"the layer {obj.name!r} is not built; call it once (or layer.build(input_shape)) "
                "so that it has weights"
            )
        model = keras.Sequential([obj], name=obj.name)
    from keras.src.saving import saving_lib  # model.save takes paths only; its writer takes a file object

    archive = io.BytesIO()
    with warnings.catch_warnings():  # Keras warns that a model around a built layer is not built
        warnings.filterwarnings("ignore", "You are saving a model that has not yet been built")
        saving_lib.save_model(model, archive)  # in memory: a BytesIO has no name, so no temporary file beside it
    archive.seek(0)
    return _read_archive(archive, f"the Keras model {model.name!r}")


def from_keras(obj) -> Sequential:
    """An rnn_xp model that computes what a Keras 3 model computes at inference.

    ``obj`` is a Keras 3 model (Sequential, or functional with one chain of layers), a single
    recurrent layer, or the path of a ``.keras`` file; a file is read with h5py alone, without
    Keras or TensorFlow. Supported layers: InputLayer, Embedding (mask_zero), Masking, SimpleRNN,
    LSTM, GRU (both reset_after, use_bias, go_backwards, return_sequences), Bidirectional (merge
    modes concat, sum, mul, ave, None), Dense, Activation, and the layers that are the identity
    at inference (Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout,
    ActivityRegularization, Identity). ``m(x)`` gives ``model(x, training=False)``, masks
    included. The weights are NumPy arrays; move them with :func:`rnn_xp.to_device`.
    """
    if isinstance(obj, (str, os.PathLike)):
        return _read_archive(obj)
    if any((c.__module__ or "").split(".")[0] == "keras" for c in type(obj).__mro__):
        return _from_live(obj)
    raise TypeError(
        f"from_keras() takes a Keras 3 model or layer, or the path of a .keras file; got {type(obj).__name__}"
    )
