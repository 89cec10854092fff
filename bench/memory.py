"""Extra memory of forward beyond its output, per implementation, on long sequences.

    python -m bench.memory            # T = 100,000: 1 layer, and 2 layers bidirectional (~1 min)
    python -m bench.memory --steps 10000

Each measurement runs in a fresh process: the input and the params are made, the peak-RSS counter
(VmHWM) is reset, forward runs once, and "extra" is the peak RSS growth minus the bytes of the
output y (and the final state). The promise it checks: extra memory is bounded by one projection
chunk plus one layer's output, whatever T and the number of layers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from .worker import _reset_hwm as reset_peak
from .worker import _rss_kb as rss_kb

CONFIGS = {  # name -> (cell, batch, input, hidden, layers, bidirectional)
    "lstm-1layer": ("lstm", 8, 64, 64, 1, False),
    "lstm-2layer-bidir": ("lstm", 8, 64, 64, 2, True),
}


def _child(cfg_name, impl, steps):
    import numpy as np

    import rnn_xp

    cell, B, F, H, L, bidir = CONFIGS[cfg_name]
    params = rnn_xp.init(cell, F, H, num_layers=L, bidirectional=bidir, seed=0, xp=np)
    x = np.random.default_rng(0).standard_normal((B, steps, F), dtype=np.float32)
    rnn_xp.forward(x[:, :2], params, impl=impl)  # imports, JIT and caches out of the way
    chosen = rnn_xp.explain(x, params, impl=impl).implementation
    ok = reset_peak()
    before = rss_kb("VmRSS")
    y, state = rnn_xp.forward(x, params, impl=impl)
    peak = rss_kb("VmHWM")
    out_mb = (y.nbytes + sum(s.nbytes for s in (state if isinstance(state, tuple) else (state,)))) / 2**20
    extra = (peak - before) / 1024 - out_mb if ok else None
    print(
        json.dumps(
            {
                "config": cfg_name,
                "impl": chosen,
                "steps": steps,
                "y_mb": round(y.nbytes / 2**20, 1),
                "extra_mb": None if extra is None else round(extra, 1),
                "extra_over_y": None if extra is None else round(extra * 2**20 / y.nbytes, 3),
            }
        )
    )


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100_000, help="sequence length T")
    ap.add_argument("--impls", default=None, help="comma-separated implementations (default: all for numpy)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.steps)
        return 0
    import numpy as np

    import rnn_xp

    impls = args.impls.split(",") if args.impls else rnn_xp.implementations(np)
    rows = []
    for cfg in CONFIGS:
        for impl in impls:
            out = subprocess.run(
                [sys.executable, "-m", "bench.memory", "--steps", str(args.steps), "--child", cfg, impl],
                capture_output=True,
                text=True,
                env=os.environ.copy(),
            )
            if out.returncode:
                print(f"{cfg} {impl}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| config | impl | T | y (MB) | extra beyond y (MB) | extra / y |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['impl']} | {r['steps']:,} | {r['y_mb']} | {r['extra_mb']} | {r['extra_over_y']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
