"""Command line: ``rnn-xp demo`` (also ``python -m rnn_xp demo``)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def _sync(xp_name):
    if xp_name == "cupy":
        import cupy
        cupy.cuda.Device().synchronize()


def demo(args) -> int:
    """The seeds' Keras model, Embedding(5000, 32) -> SimpleRNN(100) -> Dense(1, sigmoid), timed."""
    import numpy as np

    import rnn_xp
    from rnn_xp import _xp

    backend = rnn_xp.select_backend(args.backend)
    print(f"backend: {backend.name} on {backend.device} ({backend.reason})")
    model = rnn_xp.seed_model(seed=0, xp=backend.xp, device=backend.device, steps=args.steps)
    print(rnn_xp.summary(model))
    ids_host = np.random.default_rng(0).integers(0, 5000, size=(args.batch, args.steps))
    ids = _xp.from_host(ids_host, backend.xp, backend.device)
    print(f"input: token ids {tuple(ids.shape)} ({_xp.namespace_name(backend.xp)}, {ids.dtype})")
    for layer in model.layers:  # which implementation runs the recurrent layer, and why (rnn_xp.explain)
        if isinstance(layer, rnn_xp.Recurrent):
            cfg = layer.params.config
            probe = backend.xp.zeros((args.batch, args.steps, cfg.input_size), dtype=layer.params.dtype,
                                     device=backend.device)
            print(str(rnn_xp.explain(probe, layer.params)).replace("implementation:", f"{layer.name} runs on:"))
    out = model(ids)  # warm-up (kernel compilation on a GPU, or numba's on the first run of a new configuration)
    _sync(backend.name)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = model(ids)
        _sync(backend.name)
        times.append(time.perf_counter() - t0)
    probs = _xp.to_host(out).astype("float64")
    print(f"output: {tuple(out.shape)} {_xp.dtype_name(out.dtype)}, probabilities in "
          f"[{probs.min():.4f}, {probs.max():.4f}], first {probs[:3, 0].round(4).tolist()}")
    print(f"time: median {1e3 * statistics.median(times):.2f} ms over {args.repeats} runs "
          f"(min {1e3 * min(times):.2f} ms) for batch {args.batch} x {args.steps} steps")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rnn-xp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the seeds' Keras model on the backend select_backend picks")
    p.add_argument("--backend", choices=["auto", "numpy", "cupy"], default=None,
                   help="default: $RNN_XP_BACKEND or auto")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.batch < 1 or args.steps < 1 or args.repeats < 1:
            parser.error("--batch, --steps and --repeats must be positive")
        return demo(args)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
