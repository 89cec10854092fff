"""``python -m bench.first_call``: what a new install, container or worker waits for on its first calls.

For each case (a cell and batch at in 64, H 256, T 200, float32), in fresh processes on an empty
numba cache (a temporary NUMBA_CACHE_DIR):

* ``cold first call``: ``import rnn_xp`` done, the time of the first ``rnn_xp.forward`` with the
  default ``RNN_XP_COMPILE=background`` (numpy-fused runs while a child process compiles the kernel);
* ``compiled speed after``: in that same process, calls every 0.25 s until one runs within 1.5x of
  the warm time (the kernel is in): seconds from the first call, no action by the caller;
* ``warm``: the median of 5 calls after that;
* ``cached first call``: a new process on the cache that the first one filled: its first forward;
* ``compile, wait mode``: another fresh process on an empty cache with ``RNN_XP_COMPILE=wait``: the
  first call minus a warm one, i.e. the compile (or the load) of the configuration's kernel.

Goals (the deployment issue): cold first call <= 2 s, compiled speed <= 60 s later, cached first
call <= 1 s; compile of one configuration <= 10 s. Writes a markdown table to stdout and, with
``--out``, the JSON records.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile

CASES = [("rnn", 64), ("lstm", 1), ("lstm", 64), ("gru", 1), ("gru", 64)]
F, H, T = 64, 256, 200

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rnn_xp
t_import = time.perf_counter() - t0
cell, follow = sys.argv[1], sys.argv[6]
B, F, H, T = (int(a) for a in sys.argv[2:6])
params = rnn_xp.init(cell, F, H, seed=0)
x = np.random.default_rng(0).standard_normal((B, T, F)).astype(np.float32)

def call():
    t = time.perf_counter()
    rnn_xp.forward(x, params)
    return t, time.perf_counter() - t

t_first, first = call()
out = {"import_s": t_import, "first_s": first, "first_impl_after": rnn_xp.explain(x, params).implementation}
if follow == "follow":
    trail = []  # (end since the first call started, duration) of every call after the first
    after = None  # calls made since the kernel came in
    while time.perf_counter() - t_first < 300 and (after is None or after < 10):
        if after is None and rnn_xp.explain(x, params).implementation == "numba":
            after = 0
        t, d = call()
        trail.append((t + d - t_first, d))
        if after is None:
            time.sleep(0.25)
        else:
            after += 1
    warm = sorted(d for _, d in trail[-5:])[2]
    # the first call within 1.5x of warm: the compiled speed, reached with no action by the caller
    reached = next(end for end, d in trail if d <= 1.5 * warm)
    out.update(warm_s=warm, compiled_after_s=reached, calls_meanwhile=len(trail) - 10)
elif follow == "warm":
    out["warm_s"] = sorted(call()[1] for _ in range(5))[2]
print(json.dumps(out))
"""


def _child(cache, cell, B, follow, mode):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, RNN_XP_COMPILE=mode)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, cell, str(B), str(F), str(H), str(T), follow],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cell} B{B}: the child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(cell, B):
    """One case: the cold process, the cached one, and the wait-mode compile."""
    with tempfile.TemporaryDirectory(prefix="rnn_xp-numba-cache-") as cache:
        cold = _child(cache, cell, B, "follow", "background")
        cached = _child(cache, cell, B, "none", "background")
    with tempfile.TemporaryDirectory(prefix="rnn_xp-numba-cache-") as cache:
        waited = _child(cache, cell, B, "warm", "wait")
    return {
        "cell": cell,
        "batch": B,
        "import_s": round(cold["import_s"], 3),
        "cold_first_call_s": round(cold["first_s"], 3),
        "cold_first_impl": cold["first_impl_after"],
        "compiled_after_s": round(cold["compiled_after_s"], 2),
        "warm_s": round(cold["warm_s"], 4),
        "cached_first_call_s": round(cached["first_s"], 3),
        "cached_import_s": round(cached["import_s"], 3),
        "wait_mode_compile_s": round(waited["first_s"] - waited["warm_s"], 2),
    }


def table(records, machine):
    lines = [
        f"First calls on {machine['cpu']} ({machine['cores']} cores), {machine['date']}, numba {machine['numba']}; "
        f"in {F}, H {H}, T {T}, float32; `python -m bench.first_call`",
        "",
        "| case | cold first call (s) | compiled speed after (s) | warm call (ms) | cached first call (s) "
        "| compile, wait mode (s) | import rnn_xp (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['cell']} B{r['batch']} | {r['cold_first_call_s']:.2f} | {r['compiled_after_s']:.1f} | "
            f"{1e3 * r['warm_s']:.1f} | {r['cached_first_call_s']:.2f} | {r['wait_mode_compile_s']:.1f} | "
            f"{r['import_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.first_call", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=None, help="comma list like lstm:1,gru:64 (default: all)")
    ap.add_argument("--out", default=None, help="write the records as JSON to this file")
    opts = ap.parse_args(argv)
    cases = CASES
    if opts.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in opts.cases.split(",")]
    import numba

    from .cli import _cpu_model

    machine = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "date": _dt.date.today().isoformat(),
        "numba": numba.__version__,
        "python": platform.python_version(),
        "load_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    records = []
    for cell, B in cases:
        records.append(measure(cell, B))
        print(f"{cell} B{B}: {json.dumps(records[-1])}", file=sys.stderr, flush=True)
    machine["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(table(records, machine))
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump({"machine": machine, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
