"""Time the persistent kernels' plan variants against cupy-fused (and torch-cuda) on the GPU, in one process.

``python -m bench.persistent_variants [--out FILE] [--budget S]``: for each reference config the
persistent runner covers, check every variant against impl="reference" on the same GPU arrays (fresh
random inputs, float32, TF32 off), then time it with CUDA events (median of repeated calls after a
warm-up). Variants: the cost model's plan, and around it: forced units per block (U) for a unit split;
for a batch split, the unit split beside it and other batch tiles (BT) and splits (S). A table goes to
stdout; with --out, the table and one JSON line per row. This is the tuning loop of issue 6 (see
bench/GPU_NOTES.md), not the benchmark of record (python -m bench isolates each backend in a process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib

import numpy as np

CONFIGS = [
    ("keras-text", "rnn", 64, 250, 32, 100),
    ("gru-latency", "gru", 1, 1000, 64, 256),
    ("lstm-med", "lstm", 64, 100, 256, 512),
    ("lstm-large", "lstm", 256, 200, 1024, 1024),
]


def _median_ms(cp, fn, budget_s):
    fn()
    fn()
    cp.cuda.Device().synchronize()
    times, t_end = [], time.perf_counter() + budget_s
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 200):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return float(np.median(times)), len(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timing per row")
    args = ap.parse_args(argv)
    os.environ.setdefault("CUPY_TF32", "0")
    import cupy as cp

    import rnn_xp
    from rnn_xp._fast import cupy_persistent as P

    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        have_torch = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        have_torch = False
    sms, smem = P._device_limits_cached(cp, cp.cuda.Device().id)
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    head = f"device {dev}: {sms} SMs, {smem} B shared memory per block (opt-in)"
    print(head, flush=True)
    # each row goes to --out as it is measured (a stage cut short by its time limit keeps what it did)
    log = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed at the end of main
    if log:
        log.write(head + "\n")
    rows = []

    def add(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    for name, cell, B, T, F, H in CONFIGS:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        params = rnn_xp.init(cell, F, H, seed=int(rng.integers(1 << 30)), xp=cp)
        x = cp.asarray(rng.standard_normal((B, T, F), dtype=np.float32))
        ref = cp.asnumpy(rnn_xp.forward(x, params, impl="reference")[0]).astype(np.float64)
        scale = max(1.0, float(np.abs(ref).max()))
        G = P.CELLS[cell]
        base = P.plan(B, H, G, 4, sms, smem)
        variants = [("cupy-fused", None)]
        why = P.declines(T, B, "float32", params.config, params.config.activations[0], False, (sms, smem))
        if why is not None:
            add({"config": name, "impl": "cupy-persistent", "declined": why})
        elif base is not None:
            variants.append(("cupy-persistent", {}))
            if base.bsplit:
                others = [{"bsplit": 0}]
                others += [{"bsplit": 1, "BT": bt} for bt in sorted({base.BT * 2, base.BT * 4} - {base.BT})]
                others += [{"bsplit": 1, "S": s} for s in sorted({max(1, base.S // 2), base.S * 2} - {base.S})]
            else:
                others = [{"U": U} for U in sorted({max(1, base.U // 2), base.U * 2, base.U * 4} - {base.U})]
            variants += [("cupy-persistent", o) for o in others if P.plan(B, H, G, 4, sms, smem, override=o)]
        for impl, forced in variants:
            P.PLAN_OVERRIDE.clear()
            P.PLAN_OVERRIDE.update(forced or {})
            label = impl + ("" if not forced else " " + ",".join(f"{k}={v}" for k, v in forced.items()))
            pl = P.plan(B, H, G, 4, sms, smem) if impl == "cupy-persistent" else None
            row = {"config": name, "impl": label, "plan": None if pl is None else pl.__dict__}
            try:
                y = cp.asnumpy(rnn_xp.forward(x, params, impl=impl)[0]).astype(np.float64)
                err = float(np.abs(y - ref).max())
                row["max_err"] = err
                row["verified"] = bool(np.isfinite(err) and err <= 1e-4 * scale)
                if row["verified"]:
                    row["median_ms"], row["calls"] = _median_ms(
                        cp, lambda x=x, p=params, i=impl: rnn_xp.forward(x, p, impl=i), args.budget
                    )
            except Exception as e:  # noqa: BLE001 - a failing variant is a row, not the end of the run
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            add(row)
        P.PLAN_OVERRIDE.clear()
        if have_torch:
            mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](F, H, batch_first=True)
            mod.load_state_dict(rnn_xp.to_torch_state_dict(rnn_xp.to_device(params, np)))
            mod = mod.cuda().eval()
            xt = torch.from_dlpack(x)
            with torch.inference_mode():
                yt = mod(xt)[0].cpu().numpy().astype(np.float64)
                err = float(np.abs(yt - ref).max())
                ms, calls = _median_ms(cp, lambda m=mod, a=xt: m(a), args.budget)
            add(
                {
                    "config": name,
                    "impl": "torch-cuda (cudnn)",
                    "max_err": err,
                    "verified": err <= 1e-4 * scale,
                    "median_ms": ms,
                    "calls": calls,
                }
            )
    torch_ms = {r["config"]: r.get("median_ms") for r in rows if r["impl"].startswith("torch")}
    declined = [r for r in rows if "declined" in r]
    rows = [r for r in rows if "declined" not in r]
    lines = [f"{'config':12} {'impl':30} {'median ms':>10} {'us/step':>8} {'/torch':>7} {'max err':>9}  plan"]
    steps = {c[0]: c[3] for c in CONFIGS}
    for r in rows:
        ms = r.get("median_ms")
        ratio = ms / torch_ms[r["config"]] if ms and torch_ms.get(r["config"]) else None
        p = r.get("plan")
        lines.append(
            f"{r['config']:12} {r['impl']:30} {ms if ms else float('nan'):10.3f} "
            f"{(ms or float('nan')) * 1e3 / steps[r['config']]:8.2f} "
            f"{ratio if ratio else float('nan'):7.3f} {r.get('max_err', float('nan')):9.2e}  "
            + (
                r.get("error")
                or (
                    ""
                    if not p
                    else f"U={p['U']} NB={p['NB']} S={p['S']} BT={p['BT']} threads={p['threads']} smem={p['smem']}"
                    + (" batch-split" if p.get("bsplit") else "")
                )
            )
            + ("" if r.get("verified", True) else "  NOT VERIFIED")
        )
    lines += [f"{r['config']:12} {r['impl']:30} declined: {r['declined']}" for r in declined]
    table = "\n".join(lines)
    print(table)
    print("launch modes:", P.launch_modes)
    if log:
        log.write(f"{table}\nlaunch modes: {P.launch_modes}\n")
        log.close()
    return 0 if all(r.get("verified", False) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
