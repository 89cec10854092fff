"""Controls of the compiled CPU engine (impl="numba"): its threads, its compiled kernels (warmup) and the
block sizes of its matrix product measured on this CPU (tune).

Nothing here imports numba until it is needed (``import rnn_xp`` never does).
"""

from __future__ import annotations

__all__ = ["set_num_threads", "get_num_threads", "warmup", "tune", "CELLS"]


def set_num_threads(n):
    """Let each forward call (and Stream chunk) of the compiled engine use at most ``n`` threads.

    ``None`` goes back to the default: the ``RNN_XP_NUM_THREADS`` environment variable, else the CPUs
    this process may use. The engine runs its own threads, not numba's threading layer, so
    ``numba.set_num_threads`` does not apply. Results never depend on the thread count.
    """
    from ._fast import _threads

    _threads.set_num_threads(n)


def get_num_threads() -> int:
    """The most threads a forward call of the compiled engine uses now (see :func:`set_num_threads`)."""
    from ._fast import _threads

    return _threads.get_num_threads()


# the cells rnn-xp warmup compiles by name, with their default options
CELLS = {
    "rnn": ("rnn", {}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),  # reset after the product: PyTorch's, Keras's default
    "gru-before": ("gru", {"reset_after": False}),  # ONNX's default, Keras reset_after=False
}


def _params_in(obj, seen=None):
    """Every RNNParams inside params, a layer, a model, an ONNX graph or a Stream (a walk over their fields)."""
    import dataclasses

    from .params import RNNParams

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, RNNParams):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [p for item in obj for p in _params_in(item, seen)]
    if isinstance(obj, dict):
        return [p for item in obj.values() for p in _params_in(item, seen)]
    units = getattr(obj, "_units", None)  # a Stream
    if units is not None:
        return [p for u in units for p in _params_in(u.params, seen)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [p for f in dataclasses.fields(obj) for p in _params_in(getattr(obj, f.name), seen)]
    return []


def _read(path):
    """A model or params from a file: rnn_xp.save's files, Keras (.keras, .h5) or ONNX (.onnx)."""
    import os

    from .importers import from_keras, from_onnx
    from .io import load

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return from_keras(path)
    if suffix == ".onnx":
        return from_onnx(path)
    import numpy as np

    return load(path, xp=np)


def warmup(*objs, cells=(), dtypes=("float32",), progress=None):
    """Compile the compiled engine's kernels that ``objs`` (and ``cells``) use, now, into numba's cache.

    Each configuration (cell, options, dtype) compiles once, in seconds, and numba's on-disk cache
    keeps it for every later process: after a warm-up no call runs numpy-fused while a kernel
    compiles in the background, from the first call on. Also ``rnn-xp warmup`` on the command line.

    Parameters
    ----------
    *objs : params, layers, models (Sequential, Keras/ONNX imports), Streams, or paths of files
        (``rnn_xp.save`` files, ``.keras``/``.h5`` Keras files, ``.onnx`` files).
    cells : names from :data:`CELLS` ("rnn", "lstm", "gru", "gru-before"), with default options, of
        any size: each cell's kernels for every panel width (a layer narrower than the CPU's panel,
        H < 64 float32 units with AVX-512, has its own: 3 kernels a cell there).
    dtypes : the dtypes to compile ``cells`` for ("float32", "float64"); params use their own
        (float16 and bfloat16 compute in float32).
    progress : callable(str), optional, told of each kernel before and after it is built.

    Returns the list of (what the kernel is for, seconds, "compiled" or "loaded from the cache").
    """
    import os
    import time

    from ._fast import numba_cpu

    if numba_cpu._load() is None:
        raise RuntimeError(f"nothing to warm up: {numba_cpu._state['reason']}")
    from . import _xp
    from .params import init

    found = []
    for obj in objs:
        if isinstance(obj, (str, bytes, os.PathLike)):
            obj = _read(obj)
        params = _params_in(obj)
        if not params:
            raise TypeError(f"warmup() found no recurrent layer in {type(obj).__name__}; expected params or a model")
        found += params
    for name in cells:
        if name not in CELLS:
            raise ValueError(f"cell {name!r}; expected one of {sorted(CELLS)}")
        for dtype in dtypes:
            if dtype not in ("float32", "float64"):
                raise ValueError(f"dtype {dtype!r}; expected 'float32' or 'float64'")
            cell, opts = CELLS[name]
            found += [init(cell, 1, H, dtype=dtype, **opts) for H in numba_cpu.width_sizes(dtype)]
    specs = []
    for p in found:
        dtype = "float32" if p.config.dtype in _xp.HALF_DTYPES else p.config.dtype
        specs += [numba_cpu.make_spec(p.config, acts, dtype) for acts in p.config.activations]
    specs = list(dict.fromkeys(specs))
    kernels = numba_cpu._kernels()
    done = []
    for i, spec in enumerate(specs, start=1):
        what = numba_cpu.label(spec)
        if progress is not None:
            progress(f"[{i}/{len(specs)}] {what}: building")
        t = time.perf_counter()
        how = "loaded from the cache" if kernels._load_cached(spec) else "compiled"
        numba_cpu.compile_spec(spec)
        seconds = time.perf_counter() - t
        done.append((what, seconds, how))
        if progress is not None:
            progress(f"[{i}/{len(specs)}] {what}: {how} in {seconds:.1f} s")
    return done


def tune(rounds=15, save=True, progress=None):
    """Measure the compiled engine's matrix-product block sizes on this CPU and keep the fastest for it.

    The engine derives its register tile and k block from the CPU (vector width, registers, L1, L2);
    this measures that choice against a few others (k blocks of half to four L1 caches, the other
    tiles that fit the registers) on LSTM float32 calls of batch 64, and keeps another only when it is
    more than 3% faster, side by side with the others and again head to head. About a minute, mostly
    compiling a kernel per candidate. Results never depend on the block sizes (each candidate's outputs
    are checked to be the same bits); only the speed does.
    Also ``rnn-xp tune`` on the command line.

    Parameters
    ----------
    rounds : rounds in which the candidates take turns (each keeps its fastest call).
    save : keep the choice in the tuning file (``RNN_XP_TUNING_FILE``, else ``rnn_xp/tuning.json`` in
        the user's cache folder), by CPU: later processes on this CPU use it (``rnn_xp.explain`` says so).
    progress : callable(str), optional, told of each step.

    Returns an object with ``chosen`` and ``analytical`` (mr, v, kc), ``rows`` (candidate, score, best
    seconds per shape; score = time relative to the analytical choice), ``confirmed`` (the best other
    candidate and its score head to head, when one beat the margin), ``path`` (where it was saved) and
    ``table()``.
    """
    from ._fast import _tune

    return _tune.tune(rounds=rounds, save=save, progress=progress)
