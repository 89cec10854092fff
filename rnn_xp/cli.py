"""The command line, ``rnn-xp`` (also ``python -m rnn_xp``).

``rnn-xp demo`` builds :func:`rnn_xp.text_classifier` (a Keras-style text classifier with random
weights) on the backend :func:`rnn_xp.select_backend` picks, runs it on random token ids and
times it. A mistake in the command or the environment (an unknown backend, CuPy requested on a
machine without a GPU) is one line on stderr with the fix, exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

DESCRIPTION = """\
rnn_xp runs the forward pass of SimpleRNN, LSTM and GRU networks on NumPy, CuPy (GPU) or any
Array-API namespace. Commands: `demo`, a first check of an install; `warmup`, the compiled CPU
engine's kernels built ahead of time; `tune`, its block sizes measured on this CPU."""

WARMUP_HELP = "compile the CPU engine's kernels for a model or cells now, into numba's cache"

WARMUP_DESCRIPTION = """\
Compiles the kernels of the compiled CPU engine (impl="numba") that the given models or params
files use, or the given cells with their default options, into numba's on-disk cache: later
processes load them in a fraction of a second instead of compiling them (seconds each) in the
background on their first call. Files: rnn_xp.save files, Keras .keras/.h5, ONNX .onnx. With
neither files nor --cell: the cells rnn, lstm and gru. The cache is numba's: next to the installed
package where it is writable, else the user's cache folder, or NUMBA_CACHE_DIR; kernels are
compiled for this machine's CPU (another CPU kind compiles its own on first use)."""

TUNE_HELP = "measure the CPU engine's matrix-product block sizes on this CPU and keep the fastest"

TUNE_DESCRIPTION = """\
The compiled CPU engine (impl="numba") derives the register tile and k block of its matrix product
from the CPU (vector width, registers, L1 and L2 caches). This measures that choice against a few
others (k blocks of half to four L1 caches; the other tiles that fit the vector registers) on LSTM
float32 calls of batch 64, prints the table, and keeps the fastest for this CPU when it beats the
analytical choice by more than 3%, twice (side by side with the others, then head to head; else
the analytical choice). About a minute, mostly compiling a kernel per candidate. Later processes on
this CPU use the choice; rnn_xp.explain says where the block sizes came from. Results never depend
on them, only the speed does. The choice is kept in RNN_XP_TUNING_FILE, else rnn_xp/tuning.json in
the user's cache folder (XDG_CACHE_HOME or ~/.cache); RNN_XP_BLOCKING=mr,v,kc overrides it for one
process. Run it on a quiet machine."""

DEMO_HELP = "build a small text classifier and time it on the backend rnn_xp picks"

DEMO_DESCRIPTION = """\
Builds a Keras-style text classifier with random weights, Embedding(5000, 32) -> SimpleRNN(100)
-> Dense(1, sigmoid) (173,401 parameters, rnn_xp.text_classifier()), on the backend
rnn_xp.select_backend() picks: CuPy when a CUDA GPU answers, NumPy otherwise. It prints the backend
and why, the model's summary, the implementation that runs the SimpleRNN, and the time of a forward
pass over a batch of random token ids. On NumPy with numba installed, the SimpleRNN's compiled kernel is
built first (seconds, once per machine: numba's on-disk cache keeps it)."""


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except the uninformative ones (None, False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A mistake in the command or the environment: reported in one line, exit status 2."""


def _sync(xp_name):
    if xp_name == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def _gpu_hint() -> str:
    """What the GPU path would need on this machine."""
    if importlib.util.find_spec("cupy") is None:
        return (
            "for the GPU path: an NVIDIA GPU and CuPy, pip install 'rnn_xp[cuda13]' "
            "('rnn_xp[cuda12]' for a CUDA 12 driver)"
        )
    return (
        "for the GPU path: CuPy is installed but no CUDA device answers; check that nvidia-smi lists a GPU "
        "(in Docker: docker run --gpus all) and that the CuPy package matches the driver's CUDA major"
    )


def _select(name):
    """select_backend, its errors turned into a UsageError naming the fix."""
    import rnn_xp
    from rnn_xp.backend import ENV_VAR

    try:
        return rnn_xp.select_backend(name)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from e
    except ImportError as e:
        raise UsageError(f"{e}. Fix: pip install 'rnn_xp[cuda13]', or {ENV_VAR}=numpy") from e


def demo(args) -> int:
    """Build the text classifier on the selected backend, run it and print what ran and how long it took."""
    import numpy as np

    import rnn_xp
    from rnn_xp import _xp

    backend = _select(args.backend)
    print(f"backend: {backend.name} on {backend.device} ({backend.reason})")
    if backend.name == "numpy" and "fallback" in backend.reason:
        print(f"  {_gpu_hint()}")
    model = rnn_xp.text_classifier(seed=0, xp=backend.xp, device=backend.device, steps=args.steps)
    print(rnn_xp.summary(model))
    ids_host = np.random.default_rng(0).integers(0, 5000, size=(args.batch, args.steps))
    ids = _xp.from_host(ids_host, backend.xp, backend.device)
    print(f"input: token ids {tuple(ids.shape)} ({_xp.namespace_name(backend.xp)}, {_xp.dtype_name(ids.dtype)})")
    embedding, recurrent = model.layers[0], model.layers[1]
    if backend.name == "numpy":  # the compiled engine's kernel now, rather than numpy-fused while it compiles
        try:
            for what, seconds, how in rnn_xp.warmup(model):
                note = " (once: numba's on-disk cache keeps it)" if how == "compiled" else ""
                print(f"numba kernel {what}: {how} in {seconds:.1f} s{note}")
        except RuntimeError:  # numba is not installed: explain says so below
            pass
    print(f"SimpleRNN {rnn_xp.explain(embedding(ids)[0], recurrent.params)}")
    out = model(ids)  # warm-up (kernel compilation on a GPU)
    _sync(backend.name)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = model(ids)
        _sync(backend.name)
        times.append(time.perf_counter() - t0)
    probs = _xp.to_host(out).astype("float64")
    print(
        f"output: {tuple(out.shape)} {_xp.dtype_name(out.dtype)}, probabilities in "
        f"[{probs.min():.4f}, {probs.max():.4f}], first {probs[:3, 0].round(4).tolist()}"
    )
    runs = "1 run" if args.repeats == 1 else f"{args.repeats} runs"
    print(
        f"time: median {1e3 * statistics.median(times):.2f} ms over {runs} "
        f"(min {1e3 * min(times):.2f} ms) for batch {args.batch} x {args.steps} steps"
    )
    return 0


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The ``rnn-xp`` argument parser."""
    import rnn_xp
    from rnn_xp.backend import ENV_VAR

    fmt = _Help
    ap = argparse.ArgumentParser(prog="rnn-xp", description=DESCRIPTION, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"rnn_xp {rnn_xp.__version__}")
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help=DEMO_HELP, description=DEMO_DESCRIPTION, formatter_class=fmt)
    p.add_argument(
        "--backend",
        choices=["auto", "numpy", "cupy"],
        default=None,
        help=f"the array backend; when not given, ${ENV_VAR} or else auto (CuPy if a GPU answers)",
    )
    p.add_argument("--batch", type=_positive, default=64, metavar="N", help="sequences per forward pass")
    p.add_argument("--steps", type=_positive, default=250, metavar="N", help="token ids per sequence")
    p.add_argument("--repeats", type=_positive, default=5, metavar="N", help="timed forward passes (after one warm-up)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    w = sub.add_parser("warmup", help=WARMUP_HELP, description=WARMUP_DESCRIPTION, formatter_class=fmt)
    w.add_argument("files", nargs="*", metavar="FILE", help="models or params whose kernels to compile")
    w.add_argument(
        "--cell",
        action="append",
        choices=sorted(rnn_xp.cpu.CELLS),
        default=None,
        help="a cell with its default options (repeat for more)",
    )
    w.add_argument(
        "--dtype",
        action="append",
        choices=["float32", "float64"],
        default=None,
        help="dtypes for --cell (repeat for more; default float32)",
    )
    w.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    t = sub.add_parser("tune", help=TUNE_HELP, description=TUNE_DESCRIPTION, formatter_class=fmt)
    t.add_argument(
        "--rounds", type=_positive, default=15, metavar="N", help="rounds in which the candidates take turns"
    )
    what = t.add_mutually_exclusive_group()
    what.add_argument("--no-save", action="store_true", help="measure and print, keep nothing")
    what.add_argument("--show", action="store_true", help="print the block sizes in use and where they come from")
    what.add_argument("--forget", action="store_true", help="remove this CPU's choice (back to the analytical one)")
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    return ap


def warmup(args) -> int:
    """Compile the kernels of the files and cells given, one line per kernel."""
    import rnn_xp

    cells = args.cell or ([] if args.files else ["rnn", "lstm", "gru"])
    try:
        done = rnn_xp.warmup(
            *args.files, cells=cells, dtypes=args.dtype or ["float32"], progress=lambda line: print(line, flush=True)
        )
    except RuntimeError as e:  # numba missing
        raise UsageError(f"{e}") from e
    except (OSError, ValueError, TypeError) as e:  # a file that cannot be read
        raise UsageError(f"{type(e).__name__}: {e}") from e
    total = sum(seconds for _, seconds, _ in done)
    print(f"{len(done)} kernel(s) ready in numba's cache ({total:.1f} s)")
    return 0


def tune(args) -> int:
    """Measure the block sizes (or show or forget the kept ones); a line per step, then the table."""
    from rnn_xp._fast import _cpu, _tune, numba_cpu

    if args.show or args.forget:
        if args.forget:
            try:
                path, had = _tune.forget()
            except OSError as e:
                raise UsageError(f"the tuning file could not be rewritten ({type(e).__name__}: {e})") from e
            print(f"{'removed' if had else 'no'} entry for this CPU in {path}" if path else "tuning file off")
        print(f"tuning file: {_cpu.tuning_file() or 'off (RNN_XP_TUNING_FILE)'}")
        print(f"this CPU: {_cpu.cpu_key()}")
        print(_cpu.describe())
        return 0
    if numba_cpu._load() is None:
        raise UsageError(f"nothing to tune: {numba_cpu._state['reason']}")
    try:
        result = _tune.tune(rounds=args.rounds, save=not args.no_save, progress=lambda line: print(line, flush=True))
    except OSError as e:
        raise UsageError(
            f"the tuning file could not be written ({type(e).__name__}: {e}); fix: RNN_XP_TUNING_FILE=<a writable "
            "path>, or --no-save"
        ) from e
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(result.table())
    scores = {c: s for c, s, _ in result.rows}
    if result.confirmed is None:
        how = "the analytical choice (no other was more than 3% faster)"
    else:
        other, again = result.confirmed
        versus = f"{other} took {scores[other]:.3f} of its time, {again:.3f} head to head"
        how = (
            f"faster than the analytical {result.analytical}: {versus}"
            if result.chosen == other
            else f"the analytical choice: {versus} (not confirmed)"
        )
    where = f"kept for this CPU in {result.path}" if result.path else "not saved (--no-save)"
    print(f"chosen: {result.chosen}, {how}; {where} ({result.seconds:.0f} s)")
    if result.busy:
        load = " then ".join(f"{v:.1f}" for v in result.load)
        print(
            f"note: the machine was busy while it measured (load average {load} on {os.cpu_count()} cores): "
            "the times include other work; run it again on a quiet machine"
        )
    return 0


def main(argv=None) -> int:
    """Run ``rnn-xp``; returns the exit status (2 for a mistake in the command or the environment)."""
    ap = parser()
    args = ap.parse_args(argv)
    try:
        return {"warmup": warmup, "tune": tune}.get(args.command, demo)(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"rnn-xp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
