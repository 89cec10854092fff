"""``python -m bench.dask_scaling``: a large batch on NumPy in one process vs a Dask LocalCluster.

Rows per config (``configs.DASK``: the keras-text cell and the lstm-med cell at batch 4096):

* ``numpy 1 process, all threads``: ``rnn_xp.forward`` on the whole batch in one fresh process with
  every core for its BLAS (OPENBLAS/OMP/MKL_NUM_THREADS = the core count);
* ``numpy 1 process, 1 thread``: the same with one BLAS thread (what one dask worker has);
* ``dask N worker(s)``: ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)``, x split
  into batch chunks of ``--rows`` sequences and persisted on the workers first (loading data is not
  timed); a timed call builds the graph, ships the weights, runs ``rnn_xp.forward`` on every chunk and
  waits until y and h_n are held on the workers (nothing is gathered to the client).

Dask's nanny sets OMP_NUM_THREADS = MKL_NUM_THREADS = OPENBLAS_NUM_THREADS = 1 in each worker
before it starts (``distributed.nanny.pre-spawn-environ``); the workers' settings are read back and
recorded. rnn_xp's CPU path inside a worker is numba where installed (its own threads: RNN_XP_NUM_THREADS,
or the CPUs the worker may use when unset; a call that starts while another runs in the worker runs on one
thread), NumPy with OpenBLAS otherwise.

Derived: ``speedup`` of 2 workers over 1, ``efficiency`` = speedup / workers, ``vs numpy`` = the
all-cores NumPy time / the 2-worker time, and the scheduler's per-task overhead, measured twice: a
graph of no-op tasks on the 1-worker cluster (its time / tasks), and (1-worker dask - 1-thread numpy)
/ tasks. Goals: 2 workers >= 1.6x one worker, and >= 0.85x one NumPy process using both cores.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from . import configs as _configs
from .cli import ROOT, _child_env, _cpu_model, _slug, _version

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RNN_XP_NUM_THREADS")
GOAL_SPEEDUP, GOAL_VS_NUMPY = 1.6, 0.85


def _inputs(cfg):
    from .worker import make_inputs

    return make_inputs(cfg)


def _time(fn, repeats, warmup=1, between=None):
    """Durations of ``repeats`` calls of fn after ``warmup`` calls; ``between()`` runs untimed before each."""
    for _ in range(warmup):
        if between is not None:
            between()
        fn()
    out = []
    for _ in range(repeats):
        if between is not None:
            between()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# --- NumPy in one process (a child, so that its BLAS thread count is set before NumPy loads) --------------
def numpy_child(job_path):
    """``python -m bench.dask_scaling --numpy-child JOB``: time forward on the whole batch, write the result."""
    with open(job_path) as f:
        job = json.load(f)
    import rnn_xp

    cfg = _configs.Config(**job["config"])
    params, x = _inputs(cfg)
    state = {}

    def call():
        state["out"] = rnn_xp.forward(x, params)

    times = _time(call, job["repeats"])
    h = state["out"][1]
    h = h[0] if cfg.cell == "lstm" else h
    np.save(job["h_path"], h)
    try:
        import threadpoolctl

        pools = [(p["internal_api"], p["num_threads"]) for p in threadpoolctl.threadpool_info()]
    except ImportError:
        pools = None
    with open(job["out_path"], "w") as f:
        json.dump({"times": times, "threadpools": pools, "impl": rnn_xp.explain(x, params).implementation}, f)


def run_numpy(cfg, threads, repeats, tmp):
    job = {
        "config": cfg.to_json(),
        "repeats": repeats,
        "h_path": os.path.join(tmp, f"h-{threads}.npy"),
        "out_path": os.path.join(tmp, f"numpy-{threads}.json"),
    }
    path = os.path.join(tmp, f"job-{threads}.json")
    with open(path, "w") as f:
        json.dump(job, f)
    env = _child_env({v: str(threads) for v in THREAD_VARS[:3]})
    subprocess.run([sys.executable, "-m", "bench.dask_scaling", "--numpy-child", path], check=True, cwd=ROOT, env=env)
    with open(job["out_path"]) as f:
        out = json.load(f)
    out["h"] = np.load(job["h_path"])
    out["env"] = {v: env.get(v) for v in THREAD_VARS}
    return out


# --- Dask ------------------------------------------------------------------------------------------------
def _worker_threads():
    out = {v: os.environ.get(v) for v in THREAD_VARS}
    try:
        import threadpoolctl

        out["threadpools"] = [(p["internal_api"], p["num_threads"]) for p in threadpoolctl.threadpool_info()]
    except ImportError:
        out["threadpools"] = None
    return out


def _noop(block):
    return block


def _rnn_xp_keys(dask_scheduler):
    return sum("rnn_xp-" in str(k) for k in dask_scheduler.tasks)


def _forget(client, timeout_s=30.0):
    """Wait until the scheduler has released every rnn_xp key of the previous call."""
    end = time.perf_counter() + timeout_s
    while client.run_on_scheduler(_rnn_xp_keys) and time.perf_counter() < end:
        time.sleep(0.005)


def run_dask(cfg, workers, rows, repeats, noop_tasks):
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import rnn_xp

    params, x = _inputs(cfg)
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        with warnings.catch_warnings():  # "Sending large graph": loading x onto the workers, once, untimed
            warnings.simplefilter("ignore", UserWarning)
            dx = da.from_array(x, chunks=(rows, cfg.steps, cfg.input_size)).persist()
            wait(dx)
        del x
        threads = client.run(_worker_threads)
        held = {}

        def release():
            if held.pop("out", None) is not None:
                _forget(client)  # the same call builds the same keys: they must be gone, or nothing reruns

        def call():
            y, state = rnn_xp.forward(dx, params)
            h = state[0] if cfg.cell == "lstm" else state
            held["out"] = client.persist([y, h])
            wait(held["out"])

        times = _time(call, repeats, between=release)
        h = held.pop("out")[1].compute()
        noop = None
        if noop_tasks:
            tiny = da.zeros((noop_tasks,), chunks=1).persist()
            wait(tiny)

            calls = iter(range(1 << 30))

            def noops():  # a fresh name per call: a graph seen before would not run again
                wait(tiny.map_blocks(_noop, name=f"noop-{next(calls)}").persist())

            noop = statistics.median(_time(noops, 3)) / noop_tasks
    return {"times": times, "h": h, "tasks": len(dx.chunks[0]), "threads": threads, "noop_task_s": noop}


# --- report ----------------------------------------------------------------------------------------------
def summarise(records):
    """Speed-up, efficiency, the ratio to NumPy on both cores and the per-task overhead, per config."""
    out = []
    for name in dict.fromkeys(r["config"] for r in records):
        rows = {r["runner"]: r for r in records if r["config"] == name}
        med = {k: r["median_s"] for k, r in rows.items()}
        d1, d2 = med.get("dask-1"), med.get("dask-2")
        n2, n1 = med.get("numpy-all"), med.get("numpy-1t")
        tasks = rows.get("dask-1", {}).get("tasks")
        out.append(
            {
                "config": name,
                "speedup_2_over_1": None if not (d1 and d2) else d1 / d2,
                "efficiency_2": None if not (d1 and d2) else d1 / d2 / 2,
                "vs_numpy_2_threads": None if not (n2 and d2) else n2 / d2,
                "overhead_per_task_s": None if not (d1 and n1 and tasks) else (d1 - n1) / tasks,
                "noop_task_s": rows.get("dask-1", {}).get("noop_task_s"),
            }
        )
    return out


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def _ok(v, goal):
    return "" if v is None else (" yes" if v >= goal else " **no**")


def markdown(result):
    lines = [
        f"# Dask scaling: {result['machine']['cpu']}, {result['machine']['cores']} cores",
        "",
        f"`{result['command']}`, {result['date']}; load average at start/end "
        f"{result['load_average']['start']} / {result['load_average']['end']}",
        "",
        "| config | B | T | in | H | runner | tasks | median s | min s | max s | calls | max abs diff h_n vs numpy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        c = r["cfg"]
        lines.append(
            f"| {r['config']} | {c['batch']} | {c['steps']} | {c['input_size']} | {c['hidden_size']} | "
            f"{r['label']} | {r.get('tasks') or '-'} | {r['median_s']:.3f} | {min(r['times']):.3f} | "
            f"{max(r['times']):.3f} | {len(r['times'])} | {_f(r.get('h_diff'), '.1e')} |"
        )
    lines += [
        "",
        "| config | 2 workers / 1 worker (goal >= 1.6) | efficiency | 2 workers vs NumPy on both cores "
        "(goal >= 0.85) | per-task overhead: no-op task | (dask 1 worker - numpy 1 thread) / tasks |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        sp, vs = s["speedup_2_over_1"], s["vs_numpy_2_threads"]
        noop, over = s["noop_task_s"], s["overhead_per_task_s"]
        lines.append(
            f"| {s['config']} | {_f(sp, '.2f')}{_ok(sp, GOAL_SPEEDUP)} | {_f(s['efficiency_2'], '.2f')} | "
            f"{_f(vs, '.2f')}{_ok(vs, GOAL_VS_NUMPY)} | {_f(noop and noop * 1e3, '.2f')} ms | "
            f"{_f(over and over * 1e3, '.1f')} ms |"
        )
    lines += ["", "Threads: " + result["threads_note"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.dask_scaling", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--configs",
        default=",".join(c.name for c in _configs.DASK),
        help="comma list of names from bench/configs.py DASK",
    )
    ap.add_argument("--batch", type=int, default=None, help="override every config's batch size")
    ap.add_argument("--rows", type=int, default=512, help="sequences per batch chunk (one task each)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per runner after one warm-up (default 5)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="batch 512, 128 rows per chunk, 2 calls: a smoke test (writes under the temp dir)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="results JSON path (default bench/results/dask-<machine>-<date>.json; quick: a temp dir)",
    )
    ap.add_argument("--numpy-child", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.numpy_child:
        numpy_child(opts.numpy_child)
        return 0
    known = {c.name: c for c in _configs.DASK}
    wanted = [n.strip() for n in opts.configs.split(",") if n.strip()]
    if not wanted or set(wanted) - set(known):
        ap.error(f"unknown config(s) {sorted(set(wanted) - set(known))}; expected names from {sorted(known)}")
    repeats = opts.repeats or (2 if opts.quick else 5)
    batch = opts.batch or (512 if opts.quick else None)
    rows = 128 if opts.quick and opts.rows == 512 else opts.rows
    from dataclasses import replace

    cfgs = [replace(known[n], batch=batch) if batch else known[n] for n in wanted]
    cores = os.cpu_count() or 1
    date = _dt.datetime.now(_dt.timezone.utc)
    name = _slug(f"{_cpu_model()}-{cores}c")
    if opts.out:
        out = opts.out
    elif opts.quick:
        out = os.path.join(tempfile.gettempdir(), "rnn_xp-bench", f"quick-dask-{name}-{date:%Y-%m-%d}.json")
    else:
        out = os.path.join(ROOT, "bench", "results", f"dask-{name}-{date:%Y-%m-%d}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    load_start = os.getloadavg()
    t0 = time.time()
    records, threads_seen = [], {}
    with tempfile.TemporaryDirectory(prefix="rnn_xp-dask-bench-") as tmp:
        for cfg in cfgs:
            print(f"{cfg.name}: B={cfg.batch} T={cfg.steps} in={cfg.input_size} H={cfg.hidden_size}", file=sys.stderr)
            base = {"config": cfg.name, "cfg": cfg.to_json()}
            ref_h = None
            for threads in sorted({cores, 1}, reverse=True):
                r = run_numpy(cfg, threads, repeats, tmp)
                ref_h = r["h"] if ref_h is None else ref_h
                records.append(
                    {
                        **base,
                        "runner": "numpy-all" if threads == cores else "numpy-1t",
                        "label": f"numpy 1 process, {threads} thread(s) [{r['impl']}]",
                        "times": r["times"],
                        "median_s": statistics.median(r["times"]),
                        "threads": r["threadpools"],
                        "env": r["env"],
                        "h_diff": float(np.max(np.abs(r["h"] - ref_h), initial=0.0)),
                    }
                )
                print(f"  {records[-1]['label']}: {records[-1]['median_s']:.3f} s", file=sys.stderr)
            for workers in (1, 2):
                r = run_dask(cfg, workers, rows, repeats, noop_tasks=200 if workers == 1 else 0)
                threads_seen[f"{cfg.name} dask-{workers}"] = r["threads"]
                records.append(
                    {
                        **base,
                        "runner": f"dask-{workers}",
                        "tasks": r["tasks"],
                        "label": f"dask {workers} worker(s) x 1 thread, {rows} rows/task",
                        "times": r["times"],
                        "median_s": statistics.median(r["times"]),
                        "noop_task_s": r["noop_task_s"],
                        "h_diff": float(np.max(np.abs(r["h"] - ref_h), initial=0.0)),
                    }
                )
                print(f"  {records[-1]['label']}: {records[-1]['median_s']:.3f} s", file=sys.stderr)
    some = next(iter(threads_seen.values()), {})
    first = next(iter(some.values()), {}) if some else {}
    note = (
        f"numpy rows: {'/'.join(THREAD_VARS[:3])} = the thread count given; dask workers (read back from each): "
        + ", ".join(f"{k}={first.get(k)}" for k in THREAD_VARS)
        + f"; BLAS pools {first.get('threadpools')}; "
        + "rnn_xp's threads: RNN_XP_NUM_THREADS above (None: the worker's CPUs)"
    )
    result = {
        "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m bench.dask_scaling"
        + (" " + " ".join(sys.argv[1:] if argv is None else argv) if (argv or sys.argv[1:]) else ""),
        "wall_s": round(time.time() - t0, 1),
        "machine": {
            "cpu": _cpu_model(),
            "cores": cores,
            "versions": {d: _version(d) for d in ("numpy", "dask", "distributed")},
        },
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "rows_per_task": rows,
        "repeats": repeats,
        "threads_note": note,
        "worker_threads": threads_seen,
        "records": records,
        "summary": summarise(records),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    md = markdown(result)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {out}, {os.path.splitext(out)[0]}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
