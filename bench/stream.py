"""``python -m bench.stream``: the latency of one streamed step, the state fed back, per call.

One LSTM layer (in 128, float32, weights from ``rnn_xp.init(seed=0)``), one step per call, at batch
1 and 32 and hidden size 128 and 512. Backends, each in a process of its own:

* ``rnn_xp-stream``: :class:`rnn_xp.Stream` called with one (B, 1, 128) frame;
* ``rnn_xp-forward``: :func:`rnn_xp.forward` on the frame with the state of the previous call;
* ``ort``: onnxruntime's ``session.run`` on the same weights (``torch.onnx.export`` of nn.LSTM with h0
  and c0 as inputs), the returned state fed back as the next call's input;
* ``torch``: ``nn.LSTM`` under ``torch.inference_mode()``, the returned (h, c) fed back.

Each worker first checks its state after 20 frames against a float64 loop (``bench.reference``), then
the parent times them in alternating rounds (each worker in turn runs ``--calls`` calls, the order
rotated every round) and reports, per worker, the median over the rounds of each round's median
per-call time. ``--out FILE.json`` also writes the records; a markdown table goes to stdout.
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F = 128
BATCHES = (1, 32)
HIDDEN = (128, 512)
BACKENDS = ("rnn_xp-stream", "rnn_xp-forward", "ort", "torch")
CHECK_STEPS = 20


def _inputs(B, H):
    import rnn_xp

    params = rnn_xp.init("lstm", F, H, seed=0, xp=np, dtype="float32")
    frames = np.random.default_rng(1).standard_normal((CHECK_STEPS, B, 1, F), dtype=np.float32)
    return params, frames


# --- the backends: setup() -> (step(frame), state_h() -> (B, H) host array) ------------------------
def _rnn_xp_stream(params, B, H, tmp):
    import rnn_xp

    stream = rnn_xp.Stream(params)

    def step(frame):
        return stream(frame)

    return step, lambda: np.asarray(stream.state[0][0])


def _rnn_xp_forward(params, B, H, tmp):
    import rnn_xp

    state = [None]

    def step(frame):
        y, state[0] = rnn_xp.forward(frame, params, state[0])
        return y

    return step, lambda: np.asarray(state[0][0][0])


def _torch_module(params, H):
    import torch

    import rnn_xp

    module = torch.nn.LSTM(F, H, batch_first=True)
    module.load_state_dict(rnn_xp.to_torch_state_dict(params))
    return module.eval()


def _torch(params, B, H, tmp):
    import torch

    module = _torch_module(params, H)
    state = [(torch.zeros(1, B, H), torch.zeros(1, B, H))]

    def step(frame):
        with torch.inference_mode():
            y, state[0] = module(torch.from_numpy(frame), state[0])
        return y

    return step, lambda: state[0][0][0].numpy()


def _ort(params, B, H, tmp):
    import onnxruntime as ort
    import torch

    module = _torch_module(params, H)
    path = os.path.join(tmp, f"lstm-{B}-{H}.onnx")
    zeros = torch.zeros(1, B, H)
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (torch.zeros(B, 1, F), (zeros, zeros)),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["x", "h0", "c0"],
            output_names=["y", "h", "c"],
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"x": None, "h0": zeros.numpy(), "c0": zeros.numpy()}

    def step(frame):
        feeds["x"] = frame
        y, feeds["h0"], feeds["c0"] = session.run(None, feeds)
        return y

    return step, lambda: feeds["h0"][0]


SETUP = {"rnn_xp-stream": _rnn_xp_stream, "rnn_xp-forward": _rnn_xp_forward, "ort": _ort, "torch": _torch}


def _versions(backend):
    if backend == "ort":
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}
    if backend == "torch":
        import torch

        return {"torch": torch.__version__, "threads": torch.get_num_threads()}
    return {"numpy": np.__version__}


def worker(backend, B, H):
    """The worker process: check, warm up, then answer {"calls": n} with per-call seconds until {"quit"}."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr
    sys.stdout = sys.stderr
    from .reference import forward64

    params, frames = _inputs(B, H)
    with tempfile.TemporaryDirectory() as tmp:
        step, state_h = SETUP[backend](params, B, H, tmp)
    for frame in frames:
        step(frame)
    w = params.layers[0][0]
    _, h_ref, _ = forward64(
        "lstm",
        np.concatenate(list(frames), axis=1),
        {k: np.asarray(getattr(w, k)) for k in ("w_ih", "w_hh", "b_ih", "b_hh")},
    )
    err = float(np.max(np.abs(state_h() - h_ref)))
    frame = frames[0]
    t_end = time.perf_counter() + 0.3
    while time.perf_counter() < t_end:  # warm-up: allocators, thread pools
        step(frame)
    proto.write(json.dumps({"max_abs_err": err, "verified": err < 1e-4, **_versions(backend)}) + "\n")
    proto.flush()
    perf = time.perf_counter
    for line in sys.stdin:
        cmd = json.loads(line)
        if "quit" in cmd:
            return 0
        times = []
        for _ in range(cmd["calls"]):
            t0 = perf()
            step(frame)
            times.append(perf() - t0)
        proto.write(json.dumps({"median_s": statistics.median(times)}) + "\n")
        proto.flush()
    return 0


class _Worker:
    def __init__(self, backend, B, H):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.backend = backend
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stream", "--worker", backend, str(B), str(H)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        line = self.proc.stdout.readline()
        self.info = json.loads(line) if line else {"verified": False, "error": "the worker exited"}
        self.medians = []

    def round(self, calls):
        self.proc.stdin.write(json.dumps({"calls": calls}) + "\n")
        self.proc.stdin.flush()
        self.medians.append(json.loads(self.proc.stdout.readline())["median_s"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write('{"quit": 1}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run(batches=BATCHES, hidden=HIDDEN, backends=BACKENDS, rounds=5, calls=500, progress=True):
    have = {"ort": _has("onnxruntime") and _has("torch") and _has("onnx"), "torch": _has("torch")}
    backends = [b for b in backends if have.get(b, True)]
    records = []
    for B in batches:
        for H in hidden:
            workers = [_Worker(b, B, H) for b in backends]
            timed = [w for w in workers if w.info.get("verified")]
            for r in range(rounds):
                for w in timed[r % len(timed) :] + timed[: r % len(timed)]:
                    w.round(calls)
                    time.sleep(0.05)  # a library's spinning threads settle before the next one runs
            for w in workers:
                w.close()
                med = statistics.median(w.medians) if w.medians else None
                records.append(
                    {
                        "backend": w.backend,
                        "batch": B,
                        "hidden": H,
                        "input": F,
                        "us_per_call": None if med is None else round(med * 1e6, 2),
                        "round_medians_us": [round(m * 1e6, 2) for m in w.medians],
                        **w.info,
                    }
                )
                if progress:
                    sys.stderr.write(f"B={B} H={H} {w.backend}: {records[-1]['us_per_call']} us\n")
    return records


def table(records):
    backends = list(dict.fromkeys(r["backend"] for r in records))
    lines = ["| B | H | " + " | ".join(backends) + " | stream / ort |", "|---|---|" + "---|" * (len(backends) + 1)]
    for B, H in dict.fromkeys((r["batch"], r["hidden"]) for r in records):
        row = {r["backend"]: r for r in records if r["batch"] == B and r["hidden"] == H}
        cells = [
            f"{row[b]['us_per_call']:.1f}" if b in row and row[b]["us_per_call"] is not None else "-" for b in backends
        ]
        s, o = row.get("rnn_xp-stream", {}).get("us_per_call"), row.get("ort", {}).get("us_per_call")
        ratio = f"{s / o:.2f}" if s and o else "-"
        lines.append(f"| {B} | {H} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=3, metavar=("BACKEND", "B", "H"), help=argparse.SUPPRESS)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=500, help="calls per worker and round")
    ap.add_argument("--out", help="write the records and the machine's description as JSON here")
    args = ap.parse_args(argv)
    if args.worker:
        backend, B, H = args.worker
        return worker(backend, int(B), int(H))
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}; expected some of {', '.join(BACKENDS)}")
    t0 = time.time()
    load0 = os.getloadavg()
    records = run(
        [int(b) for b in args.batches.split(",")],
        [int(h) for h in args.hidden.split(",")],
        args.backends.split(","),
        args.rounds,
        args.calls,
    )
    from .cli import _cpu_model

    meta = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "date": _dt.date.today().isoformat(),
        "load_average_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.time() - t0, 1),
        "rounds": args.rounds,
        "calls_per_round": args.calls,
    }
    print(
        f"one LSTM step per call (in {F}, float32), us per call, median of {args.rounds} round medians; "
        f"{meta['cpu']}, load average {meta['load_average_start_end']}\n"
    )
    print(table(records))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": meta, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
