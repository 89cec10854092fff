"""``python -m bench.plans``: the compiled engine's ways of running a call, side by side on one machine.

How a call of ``impl="numba"`` shares its work (``Direction._split``: the threads, and the kernel's
``units``: 0 each thread its batch rows, U >= 1 U parts of the groups of units, each for threads // U
parts of the rows) is chosen by rules measured on a few CPUs. This times one forward call per case
under each plan named for it, the plan forced, with ``auto`` (the library's own choice) beside them:
every plan of a case in the same process, round after round in turn, each keeping its fastest call
and its median. The outputs of every plan are checked to be the same bits (a plan changes the speed,
never a result).

The cases (``--cases`` picks some by name):

* ``alone-*``: a call on the calling thread at batch 1 or 2: each step's inputs projected in the step
  (``step``: (1, 0)) or a chunk's at once (``chunk``: (1, 1), the library's choice);
* ``one-group``: an rnn of H 64 (one group of 64 float32 units with AVX-512) at batch 4 on 2 threads:
  the second thread idle beside the first (``idle``: (2, 2), the choice before 2026-12-05) or the rows
  split (``rows``: (2, 0));
* ``within-l2-*``: 4-6 rows a thread where W_hh fits a core's L2 but all of a step's weights do not:
  ``rows`` (the library's choice) or ``units``.

Writes a markdown table to stdout and, with ``--out``, the JSON records (``--out`` .md beside it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import time

import numpy as np

# name -> (cell, batch, steps, inputs, hidden, threads, {plan: (threads, units)})
CASES = {
    "alone-lstm-B1": ("lstm", 1, 1000, 256, 256, 1, {"step": (1, 0), "chunk": (1, 1)}),
    "alone-lstm-B2": ("lstm", 2, 1000, 256, 512, 1, {"step": (1, 0), "chunk": (1, 1)}),
    "alone-gru-B1": ("gru", 1, 1000, 64, 256, 1, {"step": (1, 0), "chunk": (1, 1)}),
    "alone-rnn-B1": ("rnn", 1, 1000, 64, 256, 1, {"step": (1, 0), "chunk": (1, 1)}),
    "one-group": ("rnn", 4, 2000, 256, 64, 2, {"idle": (2, 2), "rows": (2, 0)}),
    "within-l2-lstm-B8": ("lstm", 8, 300, 256, 256, 2, {"rows": (2, 0), "units": (2, 2)}),
    "within-l2-gru-B8": ("gru", 8, 300, 256, 256, 2, {"rows": (2, 0), "units": (2, 2)}),
    "within-l2-rnn-B8": ("rnn", 8, 1000, 512, 512, 2, {"rows": (2, 0), "units": (2, 2)}),
}


def run(names=tuple(CASES), rounds=5, budget=0.5, cases=CASES):
    """One record per case and plan: best and median seconds over the rounds, and the plan ``auto`` ran."""
    import rnn_xp
    from rnn_xp._fast import numba_cpu

    real = numba_cpu.Direction._split
    used = []

    def split(plan):
        def forced(self, T, B):
            out = real(self, T, B) if plan is None else plan
            used.append(out)
            return out

        return forced

    records = []
    try:
        for name in names:
            cell, B, T, F, H, threads, plans = cases[name]
            plans = {**plans, "auto": None}
            rnn_xp.set_num_threads(threads)
            params = rnn_xp.init(cell, F, H, seed=1)
            x = np.random.default_rng(0).standard_normal((B, T, F)).astype(np.float32)
            times, bits, ran = {p: [] for p in plans}, {}, {}
            for p, plan in plans.items():  # compile and check: every plan gives the same bits
                numba_cpu.Direction._split = split(plan)
                y = rnn_xp.forward(x, params, impl="numba")[0]
                bits[p], ran[p] = y.tobytes(), used[-1]
            if len(set(bits.values())) != 1:
                raise AssertionError(f"{name}: the plans gave different results")
            for r in range(rounds):
                order = list(plans)
                order = order[r % len(order) :] + order[: r % len(order)]
                for p in order:
                    numba_cpu.Direction._split = split(plans[p])
                    end = time.perf_counter() + budget
                    while True:
                        t0 = time.perf_counter()
                        rnn_xp.forward(x, params, impl="numba")
                        t1 = time.perf_counter()
                        times[p].append(t1 - t0)
                        if t1 > end:
                            break
            for p in plans:
                records.append(
                    {
                        "case": name,
                        "cell": cell,
                        "batch": B,
                        "steps": T,
                        "input": F,
                        "hidden": H,
                        "threads": threads,
                        "plan": p,
                        "split": list(ran[p]),
                        "best_s": min(times[p]),
                        "median_s": statistics.median(times[p]),
                        "calls": len(times[p]),
                    }
                )
    finally:
        numba_cpu.Direction._split = real
        rnn_xp.set_num_threads(None)
    return records


def table(records):
    lines = [
        "| case | cell B T in H | threads | plan | (threads, units) | best ms | median ms | median / first plan's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = {}
    for r in records:
        base = first.setdefault(r["case"], r["median_s"])
        shape = f"{r['cell']} {r['batch']} {r['steps']} {r['input']} {r['hidden']}"
        lines.append(
            f"| {r['case']} | {shape} | {r['threads']} | {r['plan']} | {tuple(r['split'])} | "
            f"{1e3 * r['best_s']:.2f} | {1e3 * r['median_s']:.2f} | {r['median_s'] / base:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.plans", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of case names (default: all)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.5, help="seconds of calls per plan and round")
    ap.add_argument("--out", help="write the records and the machine's description as JSON here (and .md)")
    args = ap.parse_args(argv)
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        ap.error(f"unknown cases {unknown}; expected some of {', '.join(CASES)}")
    os.environ.setdefault("RNN_XP_COMPILE", "wait")  # a plan's kernel compiled in this process, not beside it
    from .cli import _cpu_model

    load0 = os.getloadavg()[0]
    t0 = time.time()
    records = run(names, args.rounds, args.budget)
    meta = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "date": _dt.date.today().isoformat(),
        "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.time() - t0, 1),
        "rounds": args.rounds,
        "budget_s": args.budget,
    }
    text = (
        f"`python -m bench.plans` on {meta['cpu']} ({meta['cores']} cores), {meta['date']}, load average "
        f"{meta['load_average_start_end'][0]} at the start, {meta['load_average_start_end'][1]} at the end; "
        f"{args.rounds} rounds of {args.budget} s of calls per plan, plans in turn; float32.\n\n" + table(records)
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": meta, "records": records}, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write("# The compiled engine's plans, side by side\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
