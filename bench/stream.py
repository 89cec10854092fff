"""``python -m bench.stream``: the latency of one streamed step, the state fed back, per call.

Cases (cell, batch, input, hidden; float32, weights from ``rnn_xp.init(seed=0)``), one step per
call: an LSTM at batch 1 and 32, hidden 128 and 512, input 128 (the real-time case), and a GRU at
batch 571, input and hidden 256 (a server stepping many streams at once). Backends, each in a
process of its own:

* ``rnn_xp-stream``: :class:`rnn_xp.Stream` called with one (B, 1, F) frame;
* ``rnn_xp-forward``: :func:`rnn_xp.forward` on the frame with the state of the previous call;
* ``ort``: onnxruntime's ``session.run`` on the same weights (``torch.onnx.export`` of the torch
  module with the initial state as inputs), the returned state fed back as the next call's input;
* ``torch``: ``nn.LSTM``/``nn.GRU`` under ``torch.inference_mode()``, the returned state fed back;
* ``torch-cell``: ``nn.LSTMCell``/``nn.GRUCell`` (torch's one-step API) on the (B, F) frame.

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
# (cell, batch, input, hidden)
CASES = (
    ("lstm", 1, 128, 128),
    ("lstm", 1, 128, 512),
    ("lstm", 32, 128, 128),
    ("lstm", 32, 128, 512),
    ("gru", 571, 256, 256),
)
BACKENDS = ("rnn_xp-stream", "rnn_xp-forward", "ort", "torch", "torch-cell")
CHECK_STEPS = 20


def _inputs(cell, B, F, H):
    import rnn_xp

    params = rnn_xp.init(cell, F, H, seed=0, xp=np, dtype="float32")
    frames = np.random.default_rng(1).standard_normal((CHECK_STEPS, B, 1, F), dtype=np.float32)
    return params, frames


# --- the backends: setup() -> (step(frame), state_h() -> (B, H) host array) ------------------------
def _rnn_xp_stream(params, cell, B, F, H, tmp):
    import rnn_xp

    stream = rnn_xp.Stream(params)

    def step(frame):
        return stream(frame)

    def state_h():
        state = stream.state
        return np.asarray((state[0] if cell == "lstm" else state)[0])

    return step, state_h


def _rnn_xp_forward(params, cell, B, F, H, tmp):
    import rnn_xp

    state = [None]

    def step(frame):
        y, state[0] = rnn_xp.forward(frame, params, state[0])
        return y

    return step, lambda: np.asarray((state[0][0] if cell == "lstm" else state[0])[0])


def _torch_module(params, cell, F, H, one_step=False):
    import torch

    import rnn_xp

    weights = rnn_xp.to_torch_state_dict(params)
    if one_step:  # nn.LSTMCell / nn.GRUCell: the same tensors without the layer suffix
        module = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(F, H)
        weights = {k.removesuffix("_l0"): v for k, v in weights.items()}
    else:
        module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(F, H, batch_first=True)
    module.load_state_dict(weights)
    return module.eval()


def _torch(params, cell, B, F, H, tmp):
    import torch

    module = _torch_module(params, cell, F, H)
    zeros = torch.zeros(1, B, H)
    state = [(zeros, zeros.clone()) if cell == "lstm" else zeros]

    def step(frame):
        with torch.inference_mode():
            y, state[0] = module(torch.from_numpy(frame), state[0])
        return y

    return step, lambda: (state[0][0] if cell == "lstm" else state[0])[0].numpy()


def _torch_cell(params, cell, B, F, H, tmp):
    import torch

    module = _torch_module(params, cell, F, H, one_step=True)
    zeros = torch.zeros(B, H)
    state = [(zeros, zeros.clone()) if cell == "lstm" else zeros]

    def step(frame):
        with torch.inference_mode():
            state[0] = module(torch.from_numpy(frame[:, 0]), state[0])
        return state[0]

    return step, lambda: (state[0][0] if cell == "lstm" else state[0]).numpy()


def _ort(params, cell, B, F, H, tmp):
    import onnxruntime as ort
    import torch

    module = _torch_module(params, cell, F, H)
    path = os.path.join(tmp, f"{cell}-{B}-{H}.onnx")
    zeros = torch.zeros(1, B, H)
    lstm = cell == "lstm"
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (torch.zeros(B, 1, F), (zeros, zeros) if lstm else zeros),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["x", "h0", "c0"] if lstm else ["x", "h0"],
            output_names=["y", "h", "c"] if lstm else ["y", "h"],
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"x": None, "h0": zeros.numpy(), **({"c0": zeros.numpy()} if lstm else {})}

    def step(frame):
        feeds["x"] = frame
        if lstm:
            y, feeds["h0"], feeds["c0"] = session.run(None, feeds)
        else:
            y, feeds["h0"] = session.run(None, feeds)
        return y

    return step, lambda: feeds["h0"][0]


SETUP = {
    "rnn_xp-stream": _rnn_xp_stream,
    "rnn_xp-forward": _rnn_xp_forward,
    "ort": _ort,
    "torch": _torch,
    "torch-cell": _torch_cell,
}


def _versions(backend):
    if backend == "ort":
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}
    if backend in ("torch", "torch-cell"):
        import torch

        return {"torch": torch.__version__, "threads": torch.get_num_threads()}
    return {"numpy": np.__version__}


def worker(backend, cell, B, F, H):
    """The worker process: check, warm up, then answer {"calls": n} with per-call seconds until {"quit"}."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr
    sys.stdout = sys.stderr
    from .reference import forward64

    params, frames = _inputs(cell, B, F, H)
    with tempfile.TemporaryDirectory() as tmp:
        step, state_h = SETUP[backend](params, cell, B, F, H, tmp)
    for frame in frames:
        step(frame)
    w = params.layers[0][0]
    _, h_ref, _ = forward64(
        cell,
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
    def __init__(self, backend, cell, B, F, H):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.backend = backend
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stream", "--worker", backend, cell, str(B), str(F), str(H)],
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


def run(cases=CASES, backends=BACKENDS, rounds=5, calls=500, progress=True):
    have = {"ort": _has("onnxruntime") and _has("torch") and _has("onnx"), "torch": _has("torch")}
    have["torch-cell"] = have["torch"]
    backends = [b for b in backends if have.get(b, True)]
    records = []
    for cell, B, F, H in cases:
        workers = [_Worker(b, cell, B, F, H) for b in backends]
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
                    "cell": cell,
                    "batch": B,
                    "hidden": H,
                    "input": F,
                    "us_per_call": None if med is None else round(med * 1e6, 2),
                    "round_medians_us": [round(m * 1e6, 2) for m in w.medians],
                    **w.info,
                }
            )
            if progress:
                sys.stderr.write(f"{cell} B={B} F={F} H={H} {w.backend}: {records[-1]['us_per_call']} us\n")
    return records


def table(records):
    backends = list(dict.fromkeys(r["backend"] for r in records))
    head = "| cell | B | in | H | " + " | ".join(backends) + " | stream / ort | stream / torch-cell |"
    lines = [head, "|---|---|---|---|" + "---|" * (len(backends) + 2)]
    for key in dict.fromkeys((r.get("cell", "lstm"), r["batch"], r["input"], r["hidden"]) for r in records):
        row = {r["backend"]: r for r in records if (r.get("cell", "lstm"), r["batch"], r["input"], r["hidden"]) == key}
        cells = [
            f"{row[b]['us_per_call']:.1f}" if b in row and row[b]["us_per_call"] is not None else "-" for b in backends
        ]
        s = row.get("rnn_xp-stream", {}).get("us_per_call")
        ratios = []
        for peer in ("ort", "torch-cell"):
            o = row.get(peer, {}).get("us_per_call")
            ratios.append(f"{s / o:.2f}" if s and o else "-")
        lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def _cases(text):
    out = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 4 or parts[0] not in ("lstm", "gru"):
            raise ValueError(f"case {item!r}; expected cell:batch:input:hidden, e.g. lstm:1:128:128")
        out.append((parts[0], *(int(p) for p in parts[1:])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=5, metavar=("BACKEND", "CELL", "B", "F", "H"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--cases", default=",".join(":".join(map(str, c)) for c in CASES), help="comma list of cell:batch:input:hidden"
    )
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=500, help="calls per worker and round")
    ap.add_argument("--out", help="write the records and the machine's description as JSON here")
    args = ap.parse_args(argv)
    if args.worker:
        backend, cell, B, F, H = args.worker
        return worker(backend, cell, int(B), int(F), int(H))
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}; expected some of {', '.join(BACKENDS)}")
    try:
        cases = _cases(args.cases)
    except ValueError as e:
        ap.error(str(e))
    t0 = time.time()
    load0 = os.getloadavg()
    records = run(cases, args.backends.split(","), args.rounds, args.calls)
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
        f"one step per call (float32), us per call, median of {args.rounds} round medians; "
        f"{meta['cpu']}, load average {meta['load_average_start_end']}\n"
    )
    print(table(records))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": meta, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
