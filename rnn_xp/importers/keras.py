"""Keras recurrent models (Sequential or linear functional) to rnn_xp models.

Three sources, each read without Keras or TensorFlow (json and h5py only):

* a Keras 3 ``.keras`` archive: ``config.json`` and ``model.weights.h5`` (``layers/<layer>/.../vars/0``); a
  live Keras 3 model or layer is written by Keras into such an archive in memory (never to disk);
* a legacy HDF5 file of Keras 2 (2016-2023, standalone Keras and tf.keras) or Keras 3, ``model.save("m.h5")``:
  ``model_config`` (JSON) in the file's attributes, the weights under ``model_weights/<layer>/``, listed by
  the attributes ``layer_names`` and ``weight_names``;
* an architecture (``model.to_json()``, a file of it, or a live model) with a weights file: legacy
  ``save_weights("w.h5")``, or Keras 3's ``save_weights("w.weights.h5")``.

Keras 2 and Keras 3 differ in one function the layers name: ``hard_sigmoid`` is clip(0.2x + 0.5, 0, 1) in
Keras 2 and clip(x/6 + 1/2, 0, 1) in Keras 3. Each file is read with the meaning of the Keras version that
wrote it (its ``keras_version``), and ``summary()`` says which.

The conversion of each recurrent layer (G gates of U units, F input features):

* ``kernel`` (F, G*U) -> ``w_ih = kernel.T``; ``recurrent_kernel`` (U, G*U) -> ``w_hh = recurrent_kernel.T``;
  GRU gate blocks z, r, h become rnn_xp's r, z, n; LSTM's i, f, c, o is rnn_xp's i, f, g, o;
* SimpleRNN, LSTM and GRU(reset_after=False) keep one bias (G*U,) -> ``b_ih``, ``bias="single"``;
  GRU(reset_after=True) keeps (2, 3U) = [input, recurrent] -> ``b_ih``, ``b_hh``; use_bias=False -> none;
* activations: SimpleRNN (activation); GRU (recurrent_activation, activation); LSTM
  (recurrent_activation, activation, activation), with the meaning of each name in the file's Keras;
* CuDNNLSTM / CuDNNGRU (Keras 2.0.9-2.3, tf.compat.v1): the bias (2*G*U,) is the input biases, then the
  recurrent ones -> ``b_ih``, ``b_hh``; cuDNN reads each gate's (F, U) block of the kernel, flattened in C
  order, as its (U, F) matrix, and each (U, U) block of the recurrent kernel transposed (Keras converts them
  the same way when it loads CuDNN weights into LSTM/GRU); sigmoid and tanh; the GRU resets after.

Embedding tables and Dense kernels (in, out) are used as stored; TimeDistributed(Dense) is a Dense.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from .._validate import check_bool, check_file, read_zip_member
from ..activations import AXIS_ACTIVATIONS, resolve
from ..activations import names as activation_names
from ..layers import ActivationLayer, Bidirectional, Dense, Embedding, Identity, Masking, Recurrent, Sequential
from ..params import RNNParams, make_config
from ..registry import CELLS as _SPECS

__all__ = ["from_keras"]

CELLS = {s.type_name: s.name for s in _SPECS.values()}  # Keras class -> rnn_xp cell
CUDNN = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}  # Keras 2's GPU-only layers -> the layer whose equations they run
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
KERAS2_HARD_SIGMOID = resolve("HardSigmoid", 0.2, 0.5)  # Keras 2's clip(0.2x + 0.5, 0, 1) is ONNX's HardSigmoid
_MAX_CONFIG_BYTES = 64 << 20
_FLOATS = ("float16", "float32", "float64")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# damaged HDF5 raises OSError or RuntimeError in h5py; an address beyond any file, OverflowError when h5py asks
# the in-memory file for bytes there (found by tests/fuzz_harness.py)
_DAMAGED = (OSError, RuntimeError, EOFError, NotImplementedError, OverflowError)
# a malformed config fails in many ways; a number beyond any float (units 1e999) in OverflowError
_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, RecursionError, UnicodeDecodeError, *_DAMAGED)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading a Keras file needs h5py: pip install 'rnn_xp[keras]' (or pip install h5py); "
            "Keras itself is not needed"
        ) from None
    return h5py


def _snake_case(name):
    """Keras's naming.to_snake_case, which names a model's layers inside the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@contextlib.contextmanager
def _naming(where, what):
    """Every failure inside as a ValueError that names the file: a malformed config or damaged HDF5 raise
    many types, and the layers' own ValueErrors say which layer but not which file."""
    try:
        yield
    except ValueError as e:
        raise (e if str(e).startswith(where) else ValueError(f"{where}: {e}")) from None
    except _MALFORMED as e:
        raise ValueError(f"{where}: malformed {what} ({type(e).__name__}: {e})") from None


def _json(text, where):
    if len(text) > _MAX_CONFIG_BYTES:
        raise ValueError(f"{where}: the model config holds {len(text)} bytes; at most {_MAX_CONFIG_BYTES} are read")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: the model config is not JSON ({e})") from None


# --- which Keras wrote it --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """The Keras that wrote a file: its major version gives names their meaning (hard_sigmoid) and options
    their defaults when a config leaves them out."""

    major: int  # 2 or 3
    version: str | None = None  # keras_version as recorded ("2.21.0", "2.2.4-tf"); None when not recorded
    backend: str | None = None

    @property
    def _standalone_minor(self):
        """The minor version of standalone Keras 2.0-2.3, None for any other (tf.keras records 2.x.y-tf, and from
        TF 2.4 on versions >= 2.4; Keras 3 records 3.x)."""
        if self.major != 2 or self.version is None or self.version.endswith("-tf"):
            return None
        minor = int(re.match(r"\d+\.(\d+)", self.version).group(1))
        return minor if minor < 4 else None

    @property
    def before_2_3(self):
        """Standalone Keras 2.0-2.2: hard_sigmoid gates by default, masked steps repeat the last output."""
        minor = self._standalone_minor
        return minor is not None and minor < 3

    @property
    def recurrent_activation(self):
        """LSTM/GRU's default gate function: hard_sigmoid until Keras 2.3 made it sigmoid."""
        return "hard_sigmoid" if self.before_2_3 else "sigmoid"

    @property
    def reset_after(self):
        """GRU's default: False in standalone Keras 2 (2.0's configs lack the key), True in tf.keras 2 and Keras 3."""
        return self._standalone_minor is None

    def describe(self, what):
        recorded = f"keras_version {self.version}" if self.version else "keras_version not recorded"
        recorded += f", backend {self.backend}" if self.backend else ""
        meaning = "clip(0.2x + 0.5, 0, 1)" if self.major == 2 else "clip(x/6 + 1/2, 0, 1)"
        return f"Imported from {what} with Keras {self.major} semantics ({recorded}; hard_sigmoid = {meaning})"


def _source(version, backend, where, major=None):
    """The _Source of a recorded keras_version (``major`` when none is recorded); Keras 1 is refused."""
    if version is not None:
        m = re.match(r"(\d+)\.(\d+)", version)
        if m is None:
            raise ValueError(f"{where}: keras_version {version[:40]!r} is not a version number")
        major = int(m.group(1))
    if major not in (2, 3):
        raise ValueError(
            f"{where} was written by Keras {version or major}; rnn_xp reads files of Keras 2 and 3 (Keras 1 "
            "configs name layers and weights otherwise). Fix: load it in Keras 2 and save it again"
        )
    return _Source(major, version, backend)


def _config_source(spec, where):
    """The Keras of a model config: model.to_json() of Keras 2 records keras_version and backend; Keras 3's
    records neither but names each object's module."""
    version, backend = spec.get("keras_version"), spec.get("backend")
    for key, value in (("keras_version", version), ("backend", backend)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {key}={str(value)[:40]!r}; expected a string")
    return _source(version, backend, where, major=3 if "module" in spec else 2)


# --- the HDF5 file -------------------------------------------------------------------------------------------
def _check_global_heaps(data, where):
    """Refuse a damaged global heap before HDF5 reads it.

    Variable-length strings (the attributes Keras writes: model_config, layer_names, weight_names) live in
    global heap collections, and HDF5 2.0 walks a collection's objects by their declared sizes: a free-space
    object of size 0 (a zeroed or truncated collection) loops forever, a size past the collection reads out of
    it. Every collection HDF5 could read starts with "GCOL" and version 1, so each such place in the file is
    walked here first, object by object, the way HDF5 walks it (objects: index u16, references u16, 4 reserved
    bytes, size u64, data padded to 8 bytes; index 0 is the free space).
    """
    version = data[8] if len(data) > 8 else None
    lengths = data[14] if version in (0, 1) and len(data) > 14 else data[10] if len(data) > 10 else None
    if lengths != 8:
        raise ValueError(
            f"{where}: an HDF5 file with {lengths}-byte lengths (superblock version {version}); rnn_xp reads "
            "the 8-byte lengths that h5py writes"
        )
    at = data.find(b"GCOL")
    while at >= 0:
        if data[at + 4 : at + 5] == b"\x01":
            size = int.from_bytes(data[at + 8 : at + 16], "little")
            if at + size > len(data):
                raise ValueError(f"{where}: damaged HDF5 file (a global heap at byte {at} declares {size} bytes)")
            pos = 16
            while pos + 16 <= size:  # less than an object header left: free space
                index = int.from_bytes(data[at + pos : at + pos + 2], "little")
                n = int.from_bytes(data[at + pos + 8 : at + pos + 16], "little")
                need = 16 + (n + 7) // 8 * 8 if index else n
                if need == 0 or pos + need > size:
                    raise ValueError(
                        f"{where}: damaged HDF5 file (the global heap at byte {at} holds an object of {n} bytes "
                        f"at {pos} of its {size})"
                    )
                pos += need
        at = data.find(b"GCOL", at + 1)


def _open_h5(data, where):
    """An h5py File over bytes in memory (h5py seeks back and forth; the bytes are bounded by the file)."""
    h5py = _h5py()
    if not data.startswith(_HDF5_SIGNATURE):
        raise ValueError(f"{where} is not an HDF5 file (it does not start with HDF5's signature)")
    _check_global_heaps(data, where)
    try:
        return h5py.File(io.BytesIO(data), "r")
    except (ValueError, *_DAMAGED) as e:
        raise ValueError(f"{where} is not an HDF5 file, or a damaged one ({e})") from None


def _decode(value, label):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    if isinstance(value, str):
        return value
    raise ValueError(f"{label} holds a {type(value).__name__}; expected a string")


class _Weights:
    """The arrays and string attributes of an HDF5 weights file, read through hard links only, each checked before
    it is read. Keras stores weights uncompressed, so all the arrays read together fit in the file: a larger total
    is a compressed bomb or one dataset linked under many names."""

    def __init__(self, h5, limit, container="file"):
        self.h5, self.limit, self.container, self.held = h5, limit, container, 0

    def _group(self, path):
        h5py = _h5py()
        g = self.h5
        for part in path.split("/") if path else []:
            if part in ("", ".", ".."):
                raise ValueError(f"{path!r}: expected a plain path (names between single slashes)")
            link = g.get(part, getlink=True)
            if link is None:
                return None
            if not isinstance(link, h5py.HardLink):  # an external or soft link could reach other files
                raise ValueError(f"{path}: the weights file links outside itself")
            g = g[part]
            if not isinstance(g, h5py.Group):
                raise ValueError(f"{path}: expected a group in the weights file")
        return g

    def _array(self, g, key, label):
        h5py = _h5py()
        link = g.get(key, getlink=True) if key not in ("", ".", "..") else None
        if link is None:
            raise ValueError(f"{label}: listed, but the weights file does not hold it")
        if not isinstance(link, h5py.HardLink):
            raise ValueError(f"{label}: the weights file links outside itself")
        ds = g[key]
        if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external or ds.shape is None:
            raise ValueError(f"{label}: expected a plain dataset stored in the file")
        if ds.dtype.kind != "f":
            raise ValueError(
                f"{label} has dtype {ds.dtype}; expected floating point weights (quantized layers are not supported)"
            )
        if ds.dtype.newbyteorder("=").name not in _FLOATS:  # float128 and other extended types
            raise ValueError(
                f"{label} has dtype {ds.dtype} ({ds.dtype.itemsize} bytes); expected "
                f"{', '.join(_FLOATS[:-1])} or {_FLOATS[-1]}, which every namespace knows"
            )
        size = ds.dtype.itemsize * math.prod(ds.shape)
        if self.held + size > self.limit:  # compressed beyond its own file, or read before
            raise ValueError(f"{label} declares {ds.shape} values, more than the {self.container} holds")
        self.held += size
        a = np.array(ds[()])
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))  # >f4 -> float32

    def read(self, path):
        """Keras 3: the variables stored at ``path/vars``, in order ("0", "1", ...)."""
        g = self._group(path + "/vars")
        if g is None:
            return []
        keys = sorted(g.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise ValueError(f"{path}/vars holds {keys}; expected variables named 0, 1, ...")
        return [self._array(g, k, f"{path}/vars/{k}") for k in keys]

    def read_names(self, group, names):
        """Legacy HDF5: the datasets a layer's ``weight_names`` list, each a path inside the layer's group."""
        out = []
        for name in names:
            parent, _, key = name.rpartition("/")
            g = self._group(f"{group}/{parent}" if parent else group)
            if g is None:
                raise ValueError(f"{group}/{name}: listed in weight_names, but the weights file does not hold it")
            out.append(self._array(g, key, f"{group}/{name}"))
        return out

    def _attribute(self, obj, name, label):
        """An attribute's value, its type and size checked first (strings only, never object references)."""
        h5py = _h5py()
        aid = obj.attrs.get_id(name)
        dtype, shape = aid.dtype, aid.shape
        if shape is None:  # an empty dataspace
            return np.array([])
        if dtype.kind not in "SOf" or (dtype.kind == "O" and h5py.check_string_dtype(dtype) is None):
            raise ValueError(f"{label}: the attribute {name} has dtype {dtype}; expected strings")
        if dtype.itemsize * math.prod(shape) > self.limit:
            raise ValueError(f"{label}: the attribute {name} declares {shape} values, more than the file holds")
        return obj.attrs[name]

    def text(self, obj, name, label):
        """A string attribute (keras_version, model_config, ...), or None when absent."""
        return _decode(self._attribute(obj, name, label), f"{label}: {name}") if name in obj.attrs else None

    def strings(self, obj, name, label):
        """A list-of-strings attribute (layer_names, weight_names), [] when absent."""
        if name in obj.attrs:
            parts = [name]
        else:  # Keras splits a long list into name0, name1, ...
            parts = []
            while f"{name}{len(parts)}" in obj.attrs:
                parts.append(f"{name}{len(parts)}")
        out = []
        for part in parts:
            a = np.asarray(self._attribute(obj, part, label))
            if a.size == 0:  # Keras writes an empty list as an empty float array
                continue
            if a.ndim != 1 or a.dtype.kind not in "SOU":
                raise ValueError(f"{label}: the attribute {part} holds {a.dtype} {a.shape}; expected a list of strings")
            out += [_decode(v, f"{label}: {part}") for v in a]
        return out

    def legacy_layers(self, group, label):
        """[(layer name, weight names)] of a legacy weights group for the layers that hold weights, in the order of
        its layer_names (Keras skips the layers without weights when it matches them)."""
        g = self._group(group)
        if g is None:
            raise ValueError(f"{label}: the file holds no {group} group")
        out = []
        for name in self.strings(g, "layer_names", label):
            layer = self._group(f"{group}/{name}" if group else name)
            if layer is None:
                raise ValueError(f"{label}: layer_names lists {name!r}, which the file does not hold")
            names = self.strings(layer, "weight_names", f"{label}: layer {name!r}")
            if names:
                out.append((name, names))
        return out


# --- layers ------------------------------------------------------------------------------------------
def _activation(value, where, source, cell=False):
    """A Keras activation (a name, or a serialized built-in function) as rnn_xp's, with the meaning it has in
    the Keras that wrote the file.

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
    if value == "hard_sigmoid" and source.major == 2:
        return KERAS2_HARD_SIGMOID
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


def _from_cudnn(kernel, recurrent, G, U):
    """CuDNN kernels as the plain layer's: cuDNN reads each gate's (F, U) block of the kernel, flattened in C
    order, as its (U, F) matrix, and each (U, U) block of the recurrent kernel as the transposed block."""
    F = kernel.shape[0]
    blocks = range(G)
    kernel = np.concatenate([kernel[:, g * U : (g + 1) * U].reshape(U, F).T for g in blocks], axis=1)  # (F, G*U)
    recurrent = np.concatenate([recurrent[:, g * U : (g + 1) * U].T for g in blocks], axis=1)  # (U, G*U)
    return kernel, recurrent


def _recurrent(kind, lc, weights, where, source):
    """A Keras SimpleRNN/LSTM/GRU or CuDNNLSTM/CuDNNGRU (config and [kernel, recurrent_kernel, bias?]) as a
    Recurrent layer."""
    for option in ("return_state", "stateful"):
        if _flag(lc, option, False, where):
            raise ValueError(
                f"{where}: {option}=True is not supported; rnn_xp runs each call from a zero state "
                "and returns the layer's output only"
            )
    if _flag(lc, "time_major", False, where):  # Keras 2's option: (time, batch, features) in and out
        raise ValueError(
            f"{where}: time_major=True is not supported; rnn_xp's layers read (batch, time, features). Fix: "
            "rebuild the layer with time_major=False (the same weights) and transpose the input"
        )
    _check_dtype(lc, where)
    cudnn = kind in CUDNN
    cell, U = CELLS[CUDNN.get(kind, kind)], _size(lc, "units", where)
    G = _SPECS[cell].num_gates
    if cudnn:  # no options: a bias, sigmoid gates, tanh, and (GRU) the reset after the recurrent product
        use_bias, reset_after, act, rec = True, True, resolve("tanh"), resolve("sigmoid")
    else:
        use_bias = _flag(lc, "use_bias", True, where)
        reset_after = _flag(lc, "reset_after", source.reset_after, where) if cell == "gru" else True
        act = _activation(lc.get("activation", "tanh"), where, source, cell=True)
        rec = _activation(lc.get("recurrent_activation", source.recurrent_activation), where, source, cell=True)
    acts = {"rnn": [act], "gru": [rec, act], "lstm": [rec, act, act]}[cell]
    weights = _expect(weights, 3 if use_bias else 2, where, "kernel, recurrent_kernel" + (", bias" if use_bias else ""))
    kernel, recurrent = weights[0], weights[1]
    F = kernel.shape[0] if kernel.ndim == 2 else -1
    if kernel.shape != (F, G * U) or recurrent.shape != (U, G * U):
        raise ValueError(
            f"{where}: kernel {kernel.shape} and recurrent_kernel {recurrent.shape}; expected "
            f"(features, {G * U}) and ({U}, {G * U}) for {U} units"
        )
    if cudnn:
        kernel, recurrent = _from_cudnn(kernel, recurrent, G, U)

    def gates(a):  # (G*U, ...) in Keras's gate order -> rnn_xp's
        return np.concatenate([a[k * U : (k + 1) * U] for k in _SPECS[cell].keras_order], axis=0)

    arrays = {"l0.fwd.w_ih": gates(kernel.T), "l0.fwd.w_hh": gates(recurrent.T)}
    bias = False
    if use_bias:
        b = weights[2]
        if cudnn:  # (2*G*U,): the input biases, then the recurrent ones
            if b.shape != (2 * G * U,):
                raise ValueError(f"{where}: bias {b.shape}; expected ({2 * G * U},), input then recurrent biases")
            b = b.reshape(2, G * U)
        if cudnn or (cell == "gru" and reset_after):  # (2, G*U): the input bias, then the recurrent bias
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


def _rnn_layer(kind, lc, read, where, source):
    return _recurrent(kind, lc, read("cell"), where, source)


def _bidirectional(kind, lc, read, where, source):
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
    # Keras (tf.keras 1.13+, Keras 3) makes both directions output zeros at masked steps when they return
    # sequences, whatever their configs say; Keras 2.0-2.2's repeated the last output there
    zeros = None if source.before_2_3 else _flag(forward["config"], "return_sequences", False, where)
    sub = []
    for spec, attr in ((forward, "forward_layer"), (backward, "backward_layer")):
        if spec.get("class_name") not in (*CELLS, *CUDNN):
            raise ValueError(
                f"{where}: wraps a {spec.get('class_name')}; rnn_xp imports Bidirectional around "
                f"{', '.join((*CELLS, *CUDNN))}"
            )
        config = spec["config"] if zeros is None else {**spec["config"], "zero_output_for_mask": zeros}
        sub.append(
            _recurrent(
                spec["class_name"],
                config,
                read(f"{attr}/cell"),
                f"{where} {attr} {spec['config'].get('name', '')!r}",
                source,
            )
        )
    merge_mode = lc.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "mul", "ave", None):
        raise ValueError(f"{where}: merge_mode={merge_mode!r}; expected concat, sum, mul, ave or None")
    return Bidirectional(sub[0], sub[1], merge_mode, str(lc.get("name", "bidirectional")))


def _embedding(kind, lc, read, where, source):
    (table,) = _expect(read(""), 1, where, "embeddings")
    if table.shape != (_size(lc, "input_dim", where), _size(lc, "output_dim", where)):
        raise ValueError(f"{where}: table {table.shape}; expected ({lc['input_dim']}, {lc['output_dim']})")
    return Embedding(table, _flag(lc, "mask_zero", False, where), str(lc.get("name", "embedding")))


def _dense(kind, lc, read, where, source):
    _check_dtype(lc, where)
    use_bias = _flag(lc, "use_bias", True, where)
    weights = _expect(read(""), 2 if use_bias else 1, where, "kernel" + (", bias" if use_bias else ""))
    return Dense(
        weights[0],
        weights[1] if use_bias else None,
        _activation(lc.get("activation"), where, source),
        str(lc.get("name", "dense")),
    )


def _time_distributed(kind, lc, read, where, source):
    """TimeDistributed(Dense) is a Dense: Keras's Dense already maps the last axis of every step."""
    inner = lc["layer"]
    if not isinstance(inner, dict) or inner.get("class_name") != "Dense":
        name = inner.get("class_name") if isinstance(inner, dict) else inner
        raise ValueError(f"{where}: wraps a {str(name)[:40]}; rnn_xp imports TimeDistributed(Dense)")
    config = {**inner["config"], "name": lc.get("name", "time_distributed")}
    return _dense("Dense", config, lambda sub: read("layer"), where, source)


def _masking(kind, lc, read, where, source):
    value = lc.get("mask_value", 0.0)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
        value = float(value)
    if not isinstance(value, float):  # a string, a bool, or an int beyond any float (float() would overflow)
        raise ValueError(f"{where}: mask_value={str(value)[:40]}; expected a number a float can hold")
    return Masking(value, str(lc.get("name", "masking")))


def _activation_layer(kind, lc, read, where, source):
    return ActivationLayer(_activation(lc.get("activation"), where, source), str(lc.get("name", "activation")))


def _identity(kind, lc, read, where, source):
    return Identity(kind, str(lc.get("name", _snake_case(kind))))


# Keras class -> converter(kind, layer config, read(sub_path) -> arrays, where, source) -> rnn_xp layer
CONVERTERS = {
    **{k: _rnn_layer for k in (*CELLS, *CUDNN)},
    "Bidirectional": _bidirectional,
    "Embedding": _embedding,
    "Dense": _dense,
    "TimeDistributed": _time_distributed,
    "Masking": _masking,
    "Activation": _activation_layer,
    **{k: _identity for k in IDENTITY},
}
WEIGHTED = {*CELLS, *CUDNN, "Bidirectional", "Embedding", "Dense", "TimeDistributed"}  # the layers with weights


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


def _call(entry):
    """(the layers a layer's call reads positionally, its keyword arguments) in a functional config: Keras 3
    writes a node as {"args": [...], "kwargs": {...}}, Keras 2 as one [layer, node, tensor, kwargs] per input."""
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise ValueError(
            f"layer {_name(entry)!r} is called {len(nodes)} times; rnn_xp imports linear models, "
            "where each layer is called once"
        )
    node = nodes[0]
    if isinstance(node, dict):
        return [_history(a) for a in node.get("args", [])], node.get("kwargs", {})
    kwargs = {}
    for tensor in node:
        kwargs.update(tensor[3] if len(tensor) > 3 else {})
    return [tensor[0] for tensor in node], kwargs


def _mask_operations(entries):
    """Names of the entries, other than layers, whose outputs only ever become masks: the operations Keras 3
    records for Masking's mask (a .keras config names their module, a .h5 one only their class, NotEqual and
    Any). rnn_xp's layers recompute masks by Keras's rules."""
    readers = {}  # name -> [(reader, reads it as a mask)]
    for e in entries:
        for node in e.get("inbound_nodes") or []:
            if isinstance(node, dict):
                for a in node.get("args", []):
                    readers.setdefault(_history(a), []).append((_name(e), False))
                for key, value in node.get("kwargs", {}).items():
                    readers.setdefault(_history(value), []).append((_name(e), key == "mask"))
    ops, grew = set(), True
    while grew:  # an operation read only by masks and other such operations; each pass adds one or ends
        grew = False
        for e in entries:
            name = _name(e)
            if name in ops or e.get("class_name") in (*CONVERTERS, "InputLayer"):
                continue
            if readers.get(name) and all(mask or reader in ops for reader, mask in readers[name]):
                ops.add(name)
                grew = True
    return ops


def _linear_chain(cfg, skipped):
    """The layer entries of a functional model from its input to its output, checked to form one chain;
    ``skipped``: the names of operations that only compute masks."""
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
        if e.get("class_name") == "InputLayer" or _is_op(e) or _name(e) in skipped:
            continue  # operations only compute masks here: rnn_xp's layers recompute them by Keras's rules
        args, kwargs = _call(e)
        if len(args) != 1 or args[0] is None or set(kwargs) - {"mask", "training"}:
            raise ValueError(
                f"layer {_name(e)!r} is not called on the output of one layer alone (arguments "
                f"{sorted(kwargs)} besides it); rnn_xp imports linear models"
            )
        if kwargs.get("training"):
            raise ValueError(f"layer {_name(e)!r} is called with training=True; rnn_xp runs inference")
        source[_name(e)] = args[0]
        read = by_name.get(source[_name(e)], {})
        if _is_op(read) or _name(read) in skipped:
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
    """An InputLayer's shape, or (Keras 2) the first layer's batch_input_shape, without the batch axis."""
    shape = entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
    return None if shape is None else tuple(shape[1:])


def _unsupported(entry):
    raise ValueError(
        f"layer {_name(entry)!r} ({entry.get('class_name')}) is not supported; rnn_xp imports InputLayer, "
        f"{', '.join(sorted(CONVERTERS))}"
    )


def _model(spec):
    """(the model's layer entries, operations excluded; the chain of layers it computes; its input shape; its
    name) from a model config: Sequential (Keras 2.0-2.1 write its config as the bare list of layers) or
    functional (Keras 3 "Functional", Keras 2 "Model" or "Functional")."""
    kind, cfg = spec.get("class_name"), spec.get("config")
    if kind == "Sequential":
        cfg = {"layers": cfg} if isinstance(cfg, list) else cfg
        entries = list(cfg["layers"])
        inp = entries[0] if entries and entries[0].get("class_name") == "InputLayer" else None
        chain = entries[1:] if inp else entries
        if inp:
            input_shape = _input_shape(inp)
        elif cfg.get("build_input_shape"):
            input_shape = tuple(cfg["build_input_shape"][1:])
        else:  # Keras 2: the first layer carries the model's batch_input_shape
            input_shape = _input_shape(chain[0]) if chain else None
        skipped = set()
    elif kind in ("Functional", "Model") and "input_layers" in cfg:
        entries = list(cfg["layers"])
        skipped = _mask_operations(entries)
        for e in entries:  # name an unsupported layer before judging how the layers connect
            if not _is_op(e) and _name(e) not in skipped and e.get("class_name") not in (*CONVERTERS, "InputLayer"):
                _unsupported(e)
        chain, inp = _linear_chain(cfg, skipped)
        input_shape = _input_shape(inp)
    else:
        raise ValueError(
            f"the file holds a {kind!r}; rnn_xp imports Sequential models and linear functional "
            "models (keras.Model(inputs, outputs))"
        )
    layers = [e for e in entries if not _is_op(e) and _name(e) not in skipped]
    return layers, chain, input_shape, str(cfg.get("name", "sequential"))


def _build(spec, bind, source, what):
    """The rnn_xp model of a model config; ``bind(layers)`` gives each layer's ``read(sub_path) -> arrays`` and
    a note on where its weights come from."""
    if not isinstance(spec, dict):
        raise ValueError(f"the model config is a {type(spec).__name__}; expected a JSON object")
    layers, chain, input_shape, name = _model(spec)
    reader = bind(layers)
    out = []
    for e in chain:
        layer, kind = _name(e), e.get("class_name")
        if kind not in CONVERTERS:
            _unsupported(e)
        read, note = reader(layer)
        out.append(CONVERTERS[kind](kind, e["config"], read, f"layer {layer!r} ({kind}{note})", source))
    return Sequential(out, input_shape, name, source.describe(what))


def _keras3_reader(weights):
    """Keras 3 stores a model's layers under the snake_case of their class, numbered _1, _2, ... in order."""

    def bind(layers):
        stored, used = {}, {}
        for e in layers:
            base = _snake_case(e["class_name"])
            used[base] = used.get(base, -1) + 1
            stored[_name(e)] = base if used[base] == 0 else f"{base}_{used[base]}"

        def reader(name):
            # the layer's path is Keras's own way to find its weights; the "name" attribute Keras 3.10+ writes
            # beside them is not read: it is a variable-length string, and reading one from a damaged global heap
            # hangs HDF5 2.0 (found by tests/fuzz_harness.py)
            path = f"layers/{stored[name]}"
            return (lambda sub: weights.read(f"{path}/{sub}" if sub else path)), ""

        return reader

    return bind


def _legacy_reader(weights, group, by_name, where):
    """Keras's own matching of a legacy weights file: the file's layers that hold weights (in its layer_names
    order) to the model's layers that have weights (in the config's order), or by name with ``by_name``."""

    def bind(layers):
        wanted = [_name(e) for e in layers if e.get("class_name") in WEIGHTED]
        stored = weights.legacy_layers(group, where)
        if by_name:
            found = dict(stored)
            missing = [n for n in wanted if n not in found]
            if missing:
                raise ValueError(
                    f"{where} holds no weights for the layers {missing} (by_name=True matches layers by name); "
                    f"it holds weights for {list(found)}"
                )
            match = {n: (n, found[n]) for n in wanted}
        else:
            if len(stored) != len(wanted):
                raise ValueError(
                    f"{where} holds weights for {len(stored)} layers ({[n for n, _ in stored]}); the "
                    f"architecture has {len(wanted)} layers with weights ({wanted}). Keras matches them in "
                    "order; from_keras(..., by_name=True) matches them by name"
                )
            match = dict(zip(wanted, stored, strict=True))

        def reader(name):
            if name not in match:  # a layer without weights
                return (lambda sub: []), ""
            stored_name, names = match[name]
            arrays = weights.read_names(f"{group}/{stored_name}" if group else stored_name, names)

            def read(sub):  # a Bidirectional's weights: the forward layer's half, then the backward layer's
                half = len(arrays) // 2
                return (
                    arrays[:half] if sub.startswith("forward") else arrays[half:] if sub.startswith("back") else arrays
                )

            return read, ("" if stored_name == name else f"; weights of {stored_name!r} in the file")

        return reader

    return bind


# --- files and live models -----------------------------------------------------------------------------
def _read_archive(path, where):
    """The rnn_xp model stored in a .keras archive (a path, or a file object named ``where``)."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise ValueError(
            f"{where} is not a .keras archive ({e}) nor a Keras HDF5 file. Fix: save the model with "
            "model.save('model.keras') in Keras 3, or model.save('model.h5') in Keras 2"
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
            metadata = {}
            if "metadata.json" in infos:  # the keras_version that wrote it, for summary()
                metadata = json.loads(read_zip_member(zf, infos["metadata.json"], 1 << 20).decode("utf-8"))
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
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    source = _source(version if isinstance(version, str) else None, None, where, major=3)
    h5 = _open_h5(weights_bytes, f"{where}: model.weights.h5")
    with h5, _naming(where, ".keras archive"):
        return _build(spec, _keras3_reader(_Weights(h5, len(weights_bytes), "archive")), source, where)


def _read_file(path):
    with open(path, "rb") as f:  # a regular file (check_file): its size bounds what is read
        return f.read()


def _read_legacy(path, where):
    """The rnn_xp model of a whole-model HDF5 file (model.save("m.h5") of Keras 2, or of Keras 3)."""
    data = _read_file(path)
    with _open_h5(data, where) as h5, _naming(where, "Keras HDF5 file"):
        weights = _Weights(h5, len(data))
        config = weights.text(h5, "model_config", where)
        if config is None:
            raise ValueError(
                f"{where} holds weights only (model.save_weights), not the architecture. Fix: "
                f"rnn_xp.from_keras(architecture, weights={where!r}), the architecture as model.to_json() text, "
                "the path of a file of it, or the Keras model"
            )
        source = _source(weights.text(h5, "keras_version", where), weights.text(h5, "backend", where), where)
        return _build(_json(config, where), _legacy_reader(weights, "model_weights", False, where), source, where)


def _architecture(obj):
    """(model config, _Source, a description) of an architecture: model.to_json() text, the path of a file of
    it, or a live Keras model (Keras 3, or Keras 2's tf.keras / tf_keras)."""
    if isinstance(obj, str) and obj.lstrip().startswith("{"):
        what = "the architecture JSON"
        spec = _json(obj, what)
    elif isinstance(obj, (str, os.PathLike)):
        what = os.fspath(check_file(obj, "from_keras"))
        if os.path.getsize(obj) > _MAX_CONFIG_BYTES:
            raise ValueError(f"{what}: {os.path.getsize(obj)} bytes; an architecture (model.to_json()) is smaller")
        data = _read_file(obj)
        if data.startswith(_HDF5_SIGNATURE) or data.startswith(b"PK"):
            raise ValueError(
                f"{what} is a model file, not an architecture: pass it alone, from_keras({what!r}), or give "
                "the architecture as model.to_json() text or a file of it"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{what} is not a JSON architecture ({e})") from None
        spec = _json(text, what)
    elif callable(getattr(obj, "to_json", None)) and _package(obj) in ("keras", "tf_keras"):
        what = f"the Keras model {getattr(obj, 'name', '')!r}"
        spec = _json(obj.to_json(), what)
        if _package(obj) == "keras" and "keras_version" not in spec:  # Keras 3's to_json records no version
            return spec, _source(sys.modules["keras"].__version__, None, what), what
    else:
        raise TypeError(
            "from_keras(architecture, weights=...) takes the architecture as model.to_json() text, the path of "
            f"a file of it, or a Keras model; got {type(obj).__name__}"
        )
    if not isinstance(spec, dict):
        raise ValueError(f"{what}: the architecture is a {type(spec).__name__}; expected a JSON object")
    return spec, _config_source(spec, what), what


def _package(obj):
    """The top-level package of an object's class (or its bases): "keras", "tf_keras", ..."""
    return next(
        (p for c in type(obj).__mro__ for p in [(c.__module__ or "").split(".")[0]] if p in ("keras", "tf_keras")), None
    )


def _with_weights(architecture, path, by_name):
    """An architecture with the weights of a file: legacy HDF5 (save_weights, or a whole model's weights) matched
    the way Keras matches them, or Keras 3's .weights.h5 (its layers' paths, as in a .keras archive)."""
    spec, source, what = _architecture(architecture)
    where = os.fspath(check_file(path, "from_keras"))
    data = _read_file(path)
    with _open_h5(data, where) as h5, _naming(where, "Keras weights file"):
        weights = _Weights(h5, len(data))
        if "layer_names" not in h5.attrs and "model_weights" in h5:
            group = "model_weights"  # a whole model's file: its weights, as Keras's load_weights reads them
        else:
            group = ""
        if "layer_names" in (h5[group] if group else h5).attrs:
            version = weights.text(h5, "keras_version", where)
            _source(version, None, where, major=2)  # Keras 1 files are refused
            bind = _legacy_reader(weights, group, by_name, where)
        elif "layers" in h5:  # Keras 3: model.save_weights("w.weights.h5")
            if by_name:
                raise ValueError(
                    f"{where} is a Keras 3 weights file, which finds each layer's weights by its place in the "
                    "model; by_name=True applies to legacy HDF5 weights"
                )
            bind = _keras3_reader(weights)
        else:
            raise ValueError(
                f"{where} is not a Keras weights file: it has neither layer_names (Keras 2's save_weights, "
                "model.save('m.h5')) nor layers/ (Keras 3's save_weights)"
            )
        return _build(spec, bind, source, f"{what} with the weights of {where}")


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


def from_keras(obj, weights=None, *, by_name=False) -> Sequential:
    """An rnn_xp model that computes what a Keras model computes at inference.

    ``from_keras(obj)``: ``obj`` is a Keras 3 model (Sequential, or functional with one chain of
    layers), a single recurrent layer, or the path of a model file: a Keras 3 ``.keras`` archive, or
    an HDF5 file of ``model.save("model.h5")`` (Keras 2, standalone or tf.keras, 2016-2023; or Keras
    3). Files are read with h5py alone, without Keras or TensorFlow.

    ``from_keras(architecture, weights="w.h5")``: the architecture as ``model.to_json()`` text, the
    path of a file of it, or a Keras model (Keras 3, or tf.keras / tf_keras); the weights from
    ``model.save_weights("w.h5")`` of Keras 2 (or a whole-model ``.h5``), matched as Keras matches
    them: in order, the file's layers that hold weights to the architecture's layers that have
    weights, or by layer name with ``by_name=True``; or from Keras 3's ``save_weights("w.weights.h5")``.

    Supported layers: InputLayer, Embedding (mask_zero), Masking, SimpleRNN, LSTM, GRU (both
    reset_after, use_bias, go_backwards, return_sequences), CuDNNLSTM and CuDNNGRU (Keras 2),
    Bidirectional (merge modes concat, sum, mul, ave, None), Dense, TimeDistributed(Dense),
    Activation, and the layers that are the identity at inference (Dropout, SpatialDropout1D,
    GaussianNoise, GaussianDropout, AlphaDropout, ActivityRegularization, Identity). Names mean
    what they meant in the Keras that wrote the file (``hard_sigmoid`` is clip(0.2x + 0.5, 0, 1) in
    Keras 2, clip(x/6 + 1/2, 0, 1) in Keras 3); ``rnn_xp.summary(model)`` says which was used.
    ``m(x)`` gives ``model(x, training=False)``, masks included. The weights are NumPy arrays;
    move them with :func:`rnn_xp.to_device`.
    """
    check_bool("by_name", by_name)
    if weights is not None:
        return _with_weights(obj, weights, by_name)
    if by_name:
        raise ValueError("by_name=True matches a weights file's layers by name: from_keras(architecture, weights=path)")
    if isinstance(obj, str) and obj.lstrip().startswith("{"):
        raise ValueError(
            "from_keras() got an architecture (JSON) without weights. Fix: from_keras(json_text, weights='w.h5')"
        )
    if isinstance(obj, (str, os.PathLike)):
        where = os.fspath(check_file(obj, "from_keras"))
        with open(obj, "rb") as f:
            head = f.read(len(_HDF5_SIGNATURE))
        return _read_legacy(obj, where) if head == _HDF5_SIGNATURE else _read_archive(obj, where)
    package = _package(obj)
    if package == "keras" and int(sys.modules["keras"].__version__.split(".")[0]) >= 3:
        return _from_live(obj)
    if package is not None:  # Keras 2 (tf.keras, tf_keras)
        raise TypeError(
            f"from_keras() reads a Keras 2 model ({type(obj).__name__}) from its files: model.save('model.h5') "
            "then from_keras('model.h5'), or model.save_weights('w.h5') then from_keras(model, weights='w.h5')"
        )
    raise TypeError(
        "from_keras() takes a Keras 3 model or layer, or the path of a .keras or .h5 file (with weights=..., an "
        f"architecture); got {type(obj).__name__}"
    )
