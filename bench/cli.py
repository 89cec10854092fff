"""``python -m bench``: run the configs over every backend present, write JSON, a markdown table and plots.

Each (config, backend) pair runs in a worker process of its own (bench/worker.py). The parent
computes the float64 reference once per config, starts the workers one by one (each checks its
output and warms up), then times them in alternating rounds: worker A, pause, worker B, pause,
..., the order rotated every round, so that slow drifts of the machine hit every backend alike
and no thread pool left spinning by one library slows another.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np
from tqdm import tqdm

from . import configs as _configs
from .reference import forward64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {False: 1e-4, True: 2e-2}  # max abs error allowed, relative to max(1, max |y|): fp32, TF32
SETTLE_S = 0.1  # pause after each worker's turn: its thread pool stops spinning before the next one runs
BACKENDS = {"numpy-loop", "rnn_xp-numpy", "torch-cpu", "ort-cpu", "rnn_xp-cupy", "torch-cuda", "jax"}
RENAMED_BACKENDS = {"seed-loop": "numpy-loop"}  # names of earlier versions -> today's


# --- what is on this machine -------------------------------------------------------------------
def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _py(code: str, timeout=120) -> str | None:
    """Run python code in a fresh process (so the parent never loads torch, cupy or jax); its stdout."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_child_env()
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _child_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name and, where llvmlite can tell, its core's generation: a VM's "AMD EPYC" is
    a Zen 1 or a Zen 4 ("AMD EPYC (znver1)"), whose results must not share a file name."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    from rnn_xp._fast._cpu import _host_name  # LLVM's name of the core, '' without llvmlite

    core = _host_name()
    return f"{name} ({core})" if core and core not in name else name


def _memory_gb():
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _gpu_info() -> dict:
    out = {"gpu": None, "gpu_driver": None, "cuda": None}
    try:
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if q.returncode == 0 and q.stdout.strip():
            name, driver = (s.strip() for s in q.stdout.strip().splitlines()[0].split(","))
            out.update(gpu=name, gpu_driver=driver)
            m = re.search(
                r"CUDA Version:\s*([\d.]+)",
                subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout,
            )
            out["cuda"] = m.group(1) if m else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def _blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - show_config's layout is not a stable API
        return "unknown"


def probe(backends_wanted=None) -> dict:
    """Which backends can run here; each GPU check runs in a fresh process."""
    have = {"numpy-loop": True, "rnn_xp-numpy": True}
    have["torch-cpu"] = _has("torch")
    have["ort-cpu"] = _has("onnxruntime") and _has("onnx") and _has("torch")
    have["rnn_xp-cupy"] = _has("cupy") and _py("import cupy; print(cupy.cuda.runtime.getDeviceCount())") not in (
        None,
        "0",
    )
    have["torch-cuda"] = _has("torch") and _py("import torch; print(torch.cuda.is_available())") == "True"
    have["jax"] = _has("jax")
    if backends_wanted:
        have = {k: v and k in backends_wanted for k, v in have.items()}
    return have


def machine_info(have, quick=False) -> dict:
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        **_gpu_info(),
        "platform": platform.platform(),
        "blas": _blas(),
    }
    versions = {"python": platform.python_version()}
    for dist in (
        "numpy",
        "rnn_xp",
        "torch",
        "onnx",
        "onnxruntime",
        "cupy-cuda12x",
        "cupy-cuda13x",
        "jax",
        "matplotlib",
        "array-api-compat",
    ):
        v = _version(dist)
        if v is not None:
            versions[dist] = v
    if "rnn_xp" not in versions:
        import rnn_xp

        versions["rnn_xp"] = rnn_xp.__version__ + " (source tree)"
    info["versions"] = versions
    # the compiled engine's CPU facts and block sizes (analytical, tuned by rnn-xp tune, or RNN_XP_BLOCKING)
    info["rnn_xp_cpu"] = _py("from rnn_xp._fast import _cpu; print(_cpu.describe())")
    # the compute floor: the best float32 GEMM rate of the BLAS libraries here, each in a fresh process
    repeats = 3 if quick else 7
    rates = {}
    for lib, ok in (("numpy", True), ("torch", have.get("torch-cpu"))):
        if ok:
            r = _py(f"from bench.sgemm import measure; print(measure({lib!r}, repeats={repeats}))", timeout=300)
            if r is not None:
                rates[lib] = round(float(r), 1)
    info["sgemm_gflops_by_library"] = rates
    info["sgemm_gflops"] = max(rates.values()) if rates else None
    info["sgemm_how"] = f"float32 2048x2048 matmul, best of {repeats}, fresh process per library; the max is the floor"
    if have.get("rnn_xp-cupy") or have.get("torch-cuda"):
        g = (
            _py("from bench.sgemm import measure; print(measure('cupy'))", timeout=300)
            if have.get("rnn_xp-cupy")
            else None
        )
        info["gpu_sgemm_gflops"] = None if g is None else round(float(g), 1)
    return info


# --- the jobs ---------------------------------------------------------------------------------
def _implementations(namespace):
    """The implementations that run on this namespace here (numba's needs numba installed), in auto order."""
    code = (
        f"import rnn_xp, {namespace}\n"
        f"p = rnn_xp.init('rnn', 2, 2, seed=0, xp={namespace})\n"
        f"x = {namespace}.zeros((1, 1, 2), dtype={namespace}.float32)\n"
        "def runs(name):\n"
        "    try:\n"
        "        rnn_xp.explain(x, p, impl=name)\n"
        "    except ValueError:\n"
        "        return False\n"
        "    return True\n"
        f"print(','.join(n for n in rnn_xp.implementations({namespace}) if runs(n)))"
    )
    out = _py(code)
    return [s for s in out.split(",") if s] if out else ["reference"]


def _auto_impl(namespace, cfg):
    """What impl='auto' runs for this config on this namespace, as rnn_xp.explain says (in a child process)."""
    code = (
        f"import rnn_xp, numpy, {namespace}\n"
        f"p = rnn_xp.init({cfg.cell!r}, {cfg.input_size}, {cfg.hidden_size}, seed=0, xp={namespace})\n"
        # the config's shape (the step count matters to the choice), as a broadcast view: no memory
        f"x = {namespace}.broadcast_to({namespace}.zeros(({cfg.batch}, 1, {cfg.input_size}), "
        f"dtype={namespace}.float32), ({cfg.batch}, {cfg.steps}, {cfg.input_size}))\n"
        "print(rnn_xp.explain(x, p).implementation)"
    )
    return _py(code)


def plan(cfg, have, impls):
    """[(backend, impl, tf32)] for one config, CPU rows first, then GPU rows."""
    jobs = []
    if have["numpy-loop"] and cfg.numpy_loop:
        jobs.append(("numpy-loop", None, False))
    if have["rnn_xp-numpy"]:
        jobs += [("rnn_xp-numpy", impl, False) for impl in impls["numpy"]]
    if have["torch-cpu"]:
        jobs.append(("torch-cpu", None, False))
    if have["ort-cpu"]:
        jobs.append(("ort-cpu", None, False))
    if have["rnn_xp-cupy"]:
        jobs += [("rnn_xp-cupy", impl, False) for impl in impls["cupy"]]
        jobs.append(("rnn_xp-cupy", impls["cupy_auto"](cfg), True))
    if have["torch-cuda"]:
        jobs += [("torch-cuda", None, False), ("torch-cuda", None, True)]
    if have["jax"]:
        jobs.append(("jax", None, False))
        if have["rnn_xp-cupy"] or have["torch-cuda"]:
            jobs.append(("jax", None, True))
    return jobs


def progress_bar(total, enabled=True):
    """tqdm's bar on stderr. On a terminal it redraws in place every 0.1 s; elsewhere (a CI log, a file)
    each redraw adds the whole line again, so it redraws at most every 10 s there."""
    tty = sys.stderr.isatty()
    return tqdm(
        total=max(1, total), disable=not enabled, file=sys.stderr, unit="step", mininterval=0.1 if tty else 10.0
    )


class Worker:
    def __init__(self, job, tmp, idx):
        self.job = job
        path = os.path.join(tmp, f"job{idx}.json")
        with open(path, "w") as f:
            json.dump(job, f)
        self.log_path = os.path.join(tmp, f"job{idx}.log")
        self.log = open(self.log_path, "w")
        extra = {"CUPY_TF32": "1"} if job["tf32"] and job["backend"] == "rnn_xp-cupy" else {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
            env=_child_env(extra),
        )
        self.times = []
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            with open(self.log_path) as f:
                tail = f.read()[-600:]
            return {"status": "error", "error": f"worker exited with {self.proc.returncode}: {tail.strip()}"}
        return json.loads(line)

    @property
    def timeable(self):
        return self.info.get("status") == "ready" and self.info.get("verified") and self.proc.poll() is None

    def time_round(self, budget_s, max_calls):
        self.proc.stdin.write(json.dumps({"cmd": "time", "budget_s": budget_s, "max_calls": max_calls}) + "\n")
        self.proc.stdin.flush()
        ans = self._read()
        if "times" not in ans:
            self.info = ans
            return
        self.times += ans["times"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _record(cfg, job, w, floor_gflops):
    info = w.info
    rec = {
        "config": cfg.name,
        "group": cfg.group,
        "cell": cfg.cell,
        "batch": cfg.batch,
        "steps": cfg.steps,
        "input_size": cfg.input_size,
        "hidden_size": cfg.hidden_size,
        "layers": 1,
        "directions": 1,
        "dtype": "float32",
        "tf32": job["tf32"],
        "threads": info.get("threads"),
        "backend": job["backend"],
        "impl": info.get("impl") or job.get("impl"),
        "repeats": len(w.times),
        "median_ms": None,
        "min_ms": None,
        "max_ms": None,
        "per_step_us": None,
        "gflops": None,
        "floor_fraction": None,
        "flops": cfg.flops,
        "peak_mem_mb": info.get("peak_mem_mb"),
        "peak_mem_how": info.get("peak_mem_how"),
        "output_mb": round(cfg.batch * cfg.steps * cfg.hidden_size * 4 / 2**20, 3),
        "verified": bool(info.get("verified")),
        "max_abs_err_vs_ref": info.get("max_abs_err_vs_ref"),
    }
    if job["backend"] == "rnn_xp-numpy" or job["backend"] == "rnn_xp-cupy":
        rec["auto"] = job.get("auto", False)
    if info.get("status") == "error":
        rec["error"] = info["error"]
    if w.times:
        t = np.asarray(w.times) * 1e3
        med = float(np.median(t))
        rec.update(
            median_ms=_sig(med),
            min_ms=_sig(float(t.min())),
            max_ms=_sig(float(t.max())),
            per_step_us=_sig(med * 1e3 / cfg.steps),
            gflops=_sig(cfg.flops / med / 1e6),
        )
        if floor_gflops:
            rec["floor_fraction"] = _sig(cfg.flops / med / 1e6 / floor_gflops)
    for k in ("peak_mem_mb", "max_abs_err_vs_ref"):
        if isinstance(rec[k], float):
            rec[k] = _sig(rec[k])
    return rec


def _sig(v, digits=5):
    return float(f"{v:.{digits}g}")


def run_config(cfg, have, impls, tmp, opts, progress, machine):
    from .worker import make_inputs

    params, x = make_inputs(cfg)
    w = params.layers[0][0]
    progress.set_postfix_str(f"{cfg.name}: float64 reference")
    y, h, _ = forward64(cfg.cell, x, {k: np.asarray(getattr(w, k)) for k in ("w_ih", "w_hh", "b_ih", "b_hh")})
    ref = os.path.join(tmp, f"{cfg.name}-ref.npz")
    np.savez(ref, y=y, h=h)
    del y, h, params, x
    jobs = plan(cfg, have, impls)
    onnx_path = os.path.join(tmp, f"{cfg.name}.onnx")
    workers = []
    for k, (backend, impl, tf32) in enumerate(jobs):
        space = backend.split("-")[-1]
        auto = impl is not None and impl == (impls[space + "_auto"](cfg) if space + "_auto" in impls else None)
        job = {
            "config": cfg.to_json(),
            "backend": backend,
            "impl": impl,
            "tf32": tf32,
            "ref": ref,
            "tol": TOL[tf32],
            "onnx": onnx_path if have["ort-cpu"] else None,
            "auto": auto,
            "perturb": opts.perturb.get(backend, 0.0),
            "warmup_s": opts.warmup_s,
        }
        progress.set_postfix_str(f"{cfg.name}: setting up {backend} {impl or ''}{' tf32' if tf32 else ''}")
        workers.append(Worker(job, tmp, f"-{cfg.name}-{k}"))
        progress.update()
    try:
        live = [wk for wk in workers if wk.timeable]
        for r in range(opts.rounds):
            order = live[r % len(live) :] + live[: r % len(live)] if live else []
            for wk in order:
                if not wk.timeable:
                    continue
                wk.time_round(opts.budget_s, opts.max_calls)
                time.sleep(opts.settle_s)
                progress.set_postfix_str(
                    f"{cfg.name}: round {r + 1}/{opts.rounds} {wk.job['backend']} {wk.job['impl'] or ''}", refresh=False
                )
                progress.update()
            progress.update(len(workers) - len(order))  # the workers that failed their check are not timed
    finally:
        for wk in workers:
            wk.close()
    os.remove(ref)

    def floor(backend):  # GPU rows against the GPU's fp32 sgemm, CPU rows against the CPU's
        on_gpu = backend in ("rnn_xp-cupy", "torch-cuda") or (backend == "jax" and machine.get("gpu"))
        return machine.get("gpu_sgemm_gflops") if on_gpu else machine.get("sgemm_gflops")

    return [_record(cfg, wk.job, wk, floor(wk.job["backend"])) for wk in workers]


def _slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        epilog="bench/README.md explains the configs, the backends and how times are taken.",
    )
    ap.add_argument(
        "--configs",
        default="all",
        help="'reference' (keras-text, lstm-med, lstm-large, gru-latency), 'sweeps' (time steps, batch "
        "and hidden size), 'all' (default) or a comma list of config names",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="three small configs, two short rounds: a smoke test (under a minute); its goal checks "
        "are indicative only",
    )
    ap.add_argument(
        "--backends",
        default=None,
        help="comma list among " + ", ".join(sorted(BACKENDS)) + " (default: every one installed)",
    )
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds per backend (default 5; quick 2)")
    ap.add_argument(
        "--budget", type=float, default=None, help="seconds of calls per backend per round (default 0.5; quick 0.05)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help="results JSON path, or a folder (ending in /) to write it in under its default name "
        "(default: bench/results/<machine>-<date>.json; quick: <temp dir>/rnn_xp-bench/)",
    )
    ap.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ap.add_argument("--perturb", default="", help=argparse.SUPPRESS)  # tests: backend=delta spoils a result
    opts = ap.parse_args(argv)
    opts.rounds = opts.rounds or (2 if opts.quick else 5)
    opts.budget_s = opts.budget if opts.budget is not None else (0.05 if opts.quick else 0.5)
    opts.max_calls = 20 if opts.quick else 200
    opts.settle_s = 0.02 if opts.quick else SETTLE_S
    opts.warmup_s = 0.05 if opts.quick else 0.25
    opts.perturb = {k: float(v) for k, v in (p.split("=") for p in opts.perturb.split(",") if p)}
    wanted = None if opts.backends is None else {b.strip() for b in opts.backends.split(",") if b.strip()}
    for old in sorted((wanted or set()) & set(RENAMED_BACKENDS)):
        _note(f"backend {old!r} is now called {RENAMED_BACKENDS[old]!r}")
        wanted = (wanted - {old}) | {RENAMED_BACKENDS[old]}
    if wanted is not None and not wanted <= BACKENDS:
        ap.error(f"unknown backend(s) {sorted(wanted - BACKENDS)}; expected some of {sorted(BACKENDS)}")
    try:
        cfgs = _configs.select(opts.configs, opts.quick, note=_note)
    except ValueError as e:
        ap.error(str(e))

    have = probe(wanted)
    impls = {"numpy": _implementations("numpy"), "numpy_auto": functools.cache(lambda c: _auto_impl("numpy", c))}
    if have["rnn_xp-cupy"]:
        impls.update(cupy=_implementations("cupy"), cupy_auto=functools.cache(lambda c: _auto_impl("cupy", c)))
    print(f"backends here: {', '.join(k for k, v in have.items() if v)}; measuring sgemm...", file=sys.stderr)
    machine = machine_info(have, opts.quick)
    date = _dt.datetime.now(_dt.timezone.utc)
    name = _slug(machine["gpu"] or f"{machine['cpu']}-{machine['cores']}c")
    default_name = f"{'quick-' if opts.quick else ''}{name}-{date:%Y-%m-%d}.json"
    if opts.out and (opts.out.endswith(("/", os.sep)) or os.path.isdir(opts.out)):
        out = os.path.join(opts.out, default_name)
    elif opts.out:
        out = opts.out
    elif opts.quick:
        out = os.path.join(tempfile.gettempdir(), "rnn_xp-bench", default_name)
    else:
        out = os.path.join(ROOT, "bench", "results", default_name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    total = sum(len(plan(c, have, impls)) * (1 + opts.rounds) for c in cfgs)
    records = []
    t0 = time.time()
    load_start = os.getloadavg()

    def snapshot(done):
        return {
            "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quick": opts.quick,
            "command": "python -m bench"
            + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
            "wall_s": round(time.time() - t0, 1),
            "machine": machine,
            "load_average": {
                "start": [round(v, 2) for v in load_start],
                "end": [round(v, 2) for v in os.getloadavg()],
                "note": "1/5/15-minute load of the machine: other work on it shows here",
            },
            "method": {
                "rounds": opts.rounds,
                "budget_s_per_round": opts.budget_s,
                "settle_s": opts.settle_s,
                "tolerance": {"fp32": TOL[False], "tf32": TOL[True]},
                "inputs": "rnn_xp.init(seed=0) weights, x ~ N(0, 1) (seed 1), float32, batch-first",
                "timing": "each backend in its own process; rounds alternate between processes "
                "(order rotated each round, a pause after each turn); wall time of one "
                "forward call including device synchronisation; after a warm-up",
            },
            **({} if done else {"incomplete": f"written after {len(records)} records; the run went on"}),
            "records": records,
        }

    with (
        tempfile.TemporaryDirectory(prefix="rnn_xp-bench-") as tmp,
        progress_bar(total, enabled=not opts.no_progress) as progress,
    ):
        for cfg in cfgs:
            records += run_config(cfg, have, impls, tmp, opts, progress, machine)
            with open(out, "w") as f:  # after every config: a run cut short keeps what it measured
                json.dump(snapshot(False), f, indent=1)
    result = snapshot(True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    from . import report

    md = report.markdown(result)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    plots = [] if opts.no_plots else report.plots(result, os.path.splitext(out)[0])
    print(md)
    print("results:")
    for path in (out, os.path.splitext(out)[0] + ".md", *plots):
        print(f"  {path}")
    return 0


def _note(text):
    print(f"note: {text}", file=sys.stderr)
