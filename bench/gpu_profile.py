"""One forward call per reference config on CuPy, for a profiler to watch (bench/gpu_round.sh's profile stage).

``python -m bench.gpu_profile [--impl auto] [--configs keras-text,gru-latency,lstm-med] [--steps T]``:
float32, TF32 off, random weights and inputs; every call runs once (NVRTC compiles the kernels on the
host before their first launch, so the profiler sees the persistent kernel's launches of that call
only: one per input-projection chunk, e.g. 4 for lstm-med;
``--steps`` shortens the sequences, e.g. to see a few steps of cupy-fused's per-step kernels). The
profiler (Nsight Compute: ``ncu --clock-control none --kernel-name regex:rnnxp_persist ...``) does the
measuring; this only prints what ran.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv=None):
    from bench.configs import REFERENCE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="auto")
    ap.add_argument("--configs", default="keras-text,gru-latency,lstm-med")
    ap.add_argument("--steps", type=int, default=None, help="time steps per call (default: the config's)")
    args = ap.parse_args(argv)
    os.environ.setdefault("CUPY_TF32", "0")
    import cupy as cp

    import rnn_xp

    by_name = {c.name: c for c in REFERENCE}
    for name in args.configs.split(","):
        c = by_name[name]
        T = args.steps or c.steps
        rng = np.random.default_rng(0)
        params = rnn_xp.init(c.cell, c.input_size, c.hidden_size, seed=1, xp=cp)
        x = cp.asarray(rng.standard_normal((c.batch, T, c.input_size), dtype=np.float32))
        choice = rnn_xp.explain(x, params, impl=args.impl)
        print(f"== {name} (B {c.batch}, T {T}, in {c.input_size}, H {c.hidden_size}): {choice.implementation}")
        print("   " + str(choice).replace("\n", "\n   "), flush=True)
        rnn_xp.forward(x, params, impl=args.impl)
        cp.cuda.Device().synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
