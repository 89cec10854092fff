"""One backend on one config, in a process of its own: ``python -m bench.worker JOB.json``.

It sets the backend up, checks its output against the float64 reference (a wrong result is
reported as not verified and never timed), warms up, measures the memory of one call, then
answers the parent's commands on stdin, one JSON line each:

* ``{"cmd": "time", "budget_s": s, "max_calls": n}``: run calls until s seconds are spent (at
  least one, at most n) and answer the list of their durations in seconds;
* ``{"cmd": "quit"}``.

Answers go to the original stdout as JSON lines; everything a library prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_hwm() -> bool:
    """Reset the peak-RSS counter VmHWM (Linux: write 5 to clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_inputs(cfg):
    """The same params (rnn_xp.init, seed 0) and x (seed 1) in every process, float32 on NumPy."""
    import rnn_xp

    params = rnn_xp.init(cfg.cell, cfg.input_size, cfg.hidden_size, seed=0, xp=np, dtype="float32")
    x = np.random.default_rng(1).standard_normal((cfg.batch, cfg.steps, cfg.input_size), dtype=np.float32)
    return params, x


def check(y, h, ref_path, tol, perturb=0.0):
    """(verified, max abs error) of y (B, T, H) and h_T (B, H) against the saved float64 reference."""
    ref = np.load(ref_path)
    err = 0.0
    for got, name in ((y, "y"), (h, "h")):
        exp = ref[name]
        if got.shape != exp.shape:
            return False, None
        err = max(err, float(np.max(np.abs(got + perturb - exp), initial=0.0)))
    scale = max(1.0, float(np.max(np.abs(ref["y"]), initial=0.0)))
    return bool(np.isfinite(err) and err <= tol * scale), err


def _serve(job, proto):
    from . import backends
    from .configs import Config

    cfg = Config(**job["config"])
    params, x = make_inputs(cfg)
    be = backends.SETUP[job["backend"]](cfg, params, x, job)
    info = {"impl": be.impl, "threads": be.threads, "versions": be.versions}

    # memory: the first call in this fresh process, so that no allocator holds memory freed by an
    # earlier call (glibc reuses such memory without the RSS growing): a device's high-water mark,
    # or the growth of this process's peak RSS (VmHWM, reset just before the call)
    import gc

    gc.collect()
    if be.memory is not None:
        be.reset_memory()
        result = be.run()
        peak = be.memory() / 2**20
        how = be.memory_how
    else:
        ok = _reset_hwm()
        before = _rss_kb("VmRSS")
        result = be.run()
        peak = (_rss_kb("VmHWM") - before) / 1024 if ok and before is not None else None
        how = be.memory_how if ok else "not measured (no /proc/self/clear_refs)"
    info.update(peak_mem_mb=peak, peak_mem_how=how)

    y, h = be.host(result)
    del result
    verified, err = check(y, h, job["ref"], job["tol"], job.get("perturb", 0.0))
    del y, h
    info.update(verified=verified, max_abs_err_vs_ref=err)
    if not verified:
        proto.write(json.dumps({"status": "ready", **info}) + "\n")
        proto.flush()
        return

    # warm-up: at least two calls and a quarter second (allocators, BLAS threads, cuDNN plans, jit)
    t_end = time.perf_counter() + job.get("warmup_s", 0.25)
    for k in range(1000):
        be.run()
        if k >= 1 and time.perf_counter() >= t_end:
            break
    proto.write(json.dumps({"status": "ready", **info}) + "\n")
    proto.flush()

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        times = []
        t_end = time.perf_counter() + cmd["budget_s"]
        while True:
            t0 = time.perf_counter()
            be.run()
            times.append(time.perf_counter() - t0)
            if len(times) >= cmd["max_calls"] or time.perf_counter() >= t_end:
                break
        proto.write(json.dumps({"times": times}) + "\n")
        proto.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # the protocol keeps the real stdout; fd 1 (and print) go to stderr so no library can corrupt it
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(argv[0]) as f:
        job = json.load(f)
    try:
        _serve(job, proto)
    except Exception as e:  # noqa: BLE001 - any failure of a backend becomes a record, not a crash
        traceback.print_exc()
        proto.write(json.dumps({"status": "error", "error": f"{type(e).__name__}: {e}"}) + "\n")
        proto.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
