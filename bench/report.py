"""The markdown table, the CPU goal checks and the plots of one results file.

``python -m bench.report RESULTS.json`` rewrites the .md and .png files beside it. Files written
by earlier versions of the benchmark are read with today's names (config ``keras-seed`` is
``keras-text``, backend ``seed-loop`` is ``numpy-loop``).
"""

from __future__ import annotations

import json
import os
import sys

PEERS_CPU = ("torch-cpu", "ort-cpu")
OLD_NAMES = {"keras-seed": "keras-text", "seed-loop": "numpy-loop"}  # earlier versions' names -> today's


def _today(result):
    """The result with the names of earlier versions of the benchmark replaced by today's."""

    def rename(r):
        return {
            **r,
            "config": OLD_NAMES.get(r["config"], r["config"]),
            "backend": OLD_NAMES.get(r["backend"], r["backend"]),
        }

    return {**result, "records": [rename(r) for r in result["records"]]}


def is_quick(result) -> bool:
    """Whether the results come from ``--quick`` (files before the "quick" key: from their command)."""
    return bool(result.get("quick", "--quick" in result.get("command", "")))


def load_line(result) -> str:
    """The machine's load average at the start and end of the run, and whether it was busy."""
    load, cores = result.get("load_average"), result["machine"].get("cores")
    if not load:
        return "Load average: not recorded."
    start, end = load["start"][0], load["end"][0]
    text = f"Load average (1 min) {start:.2f} at the start, {end:.2f} at the end, on {cores} cores"
    if cores and max(start, end) > 0.5 * cores:
        return text + ": the machine was busy, other work competed for the cores and the times are inflated."
    return text + "."


def _label(r):
    impl = r.get("impl") or ""
    if r["backend"].startswith("rnn_xp"):
        label = f"{r['backend']} [{impl}]"
    else:
        label = r["backend"]
    return label + (" TF32" if r.get("tf32") else "")


def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 10**-nd or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{nd}f}"
    return str(v)


def _by_config(records):
    out = {}
    for r in records:
        out.setdefault(r["config"], []).append(r)
    return out


def _timed(rows, backend, **match):
    return [
        r
        for r in rows
        if r["backend"] == backend and r.get("median_ms") is not None and all(r.get(k) == v for k, v in match.items())
    ]


def _ours(rows):
    """The rnn_xp-numpy row a user gets with impl='auto' (else the fastest rnn_xp-numpy row)."""
    rows_ = _timed(rows, "rnn_xp-numpy")
    auto = [r for r in rows_ if r.get("auto")]
    pick = auto or rows_
    return min(pick, key=lambda r: r["median_ms"]) if pick else None


def goals(result) -> list[dict]:
    """The CPU goals (rnn_xp against its peers and the BLAS floor), checked on this results file."""
    result = _today(result)
    by = _by_config(result["records"])
    out = []

    def add(goal, value, limit, holds, note=""):
        out.append({"goal": goal, "value": value, "limit": limit, "holds": holds, "note": note})

    for name in ("keras-text", "lstm-med", "gru-latency"):
        rows = by.get(name)
        if not rows:
            continue
        ours = _ours(rows)
        peers = [r for p in PEERS_CPU for r in _timed(rows, p)]
        if ours and peers:
            best = min(peers, key=lambda r: r["median_ms"])
            ratio = ours["median_ms"] / best["median_ms"]
            add(
                f"{name}: rnn_xp-numpy / best CPU peer ({best['backend']})",
                round(ratio, 3),
                "<= 1.0",
                ratio <= 1.0,
                f"{ours['median_ms']:.2f} ms vs {best['median_ms']:.2f} ms",
            )
    rows = by.get("keras-text", [])
    ours = _ours(rows)
    torch = _timed(rows, "torch-cpu")
    if ours and torch:
        ratio = ours["median_ms"] / torch[0]["median_ms"]
        add(
            "keras-text: rnn_xp-numpy / torch-cpu",
            round(ratio, 3),
            "<= 0.5",
            ratio <= 0.5,
            f"{ours['median_ms']:.2f} ms vs {torch[0]['median_ms']:.2f} ms",
        )
    loop = _timed(rows, "numpy-loop")
    if ours and loop:
        speedup = loop[0]["median_ms"] / ours["median_ms"]
        add(
            "keras-text: speed-up over the per-sample NumPy loop",
            round(speedup, 1),
            ">= 3",
            speedup >= 3,
            f"{loop[0]['median_ms']:.1f} ms vs {ours['median_ms']:.2f} ms",
        )
    rows = by.get("lstm-large", [])
    ours = _ours(rows)
    sgemm = result["machine"].get("sgemm_gflops")
    if ours and sgemm:
        floor_ms = ours["flops"] / sgemm / 1e6
        ratio = ours["median_ms"] / floor_ms
        add(
            "lstm-large: rnn_xp-numpy / BLAS floor",
            round(ratio, 3),
            "<= 2.0",
            ratio <= 2.0,
            f"{ours['median_ms']:.0f} ms vs floor {floor_ms:.0f} ms ({ours['flops'] / 1e9:.0f} GFLOP at "
            f"{sgemm} GFLOP/s)",
        )
    short, long_ = by.get("keras-text", []), by.get("steps-T10000", [])
    a, b = _ours(short), _ours(long_)
    if a and b and a.get("peak_mem_mb") is not None and b.get("peak_mem_mb") is not None:
        extra_a = a["peak_mem_mb"] - a["output_mb"]
        extra_b = b["peak_mem_mb"] - b["output_mb"]
        add(
            "memory beyond the output, T=10,000 vs T=250 (MB)",
            round(extra_b, 1),
            "bounded by a chunk",
            extra_b <= extra_a + 32.0,
            f"peak {b['peak_mem_mb']:.1f} MB (output {b['output_mb']:.1f} MB) vs peak {a['peak_mem_mb']:.1f} MB "
            f"(output {a['output_mb']:.1f} MB); target: within 32 MB (a 16 MB projection chunk and its input) of T=250",
        )
    return out


def _memory_how(result) -> str:
    """How peak memory was measured, each way once, with the backends it applies to."""
    hows = {}
    for r in result["records"]:
        if r.get("peak_mem_how"):
            hows.setdefault(r["peak_mem_how"], set()).add(r["backend"])
    return "; ".join(f"{how} ({', '.join(sorted(b))})" for how, b in sorted(hows.items())) or "not measured"


def markdown(result) -> str:
    result = _today(result)
    m = result["machine"]
    lines = [
        f"# rnn_xp benchmark, {result['date']}",
        "",
        f"`{result['command']}` on {m['cpu']} ({m['cores']} cores, {m.get('memory_gb')} GB)"
        + (f", {m['gpu']} (driver {m.get('gpu_driver')}, CUDA {m.get('cuda')})" if m.get("gpu") else ", no GPU")
        + f"; BLAS {m.get('blas')}; sgemm {m.get('sgemm_gflops')} GFLOP/s "
        f"({', '.join(f'{k} {v}' for k, v in m.get('sgemm_gflops_by_library', {}).items())}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        "",
        load_line(result),
        "",
        *([f"rnn_xp's compiled engine: {m['rnn_xp_cpu']}.", ""] if m.get("rnn_xp_cpu") else []),
        "Median of the repeats (min-max), each backend in its own process, rounds alternating. "
        "`numpy-loop`: a per-sample NumPy loop as tutorials write it (bench/numpy_loop.py). "
        "`vs best peer`: time / the faster of torch-cpu and ort-cpu on the same config "
        "(`-` when neither is installed: `pip install -e '.[bench]'`). "
        "`floor`: the FLOPs at the sgemm rate / the time. Peak memory: " + _memory_how(result) + ".",
        "",
    ]
    g = goals(result)
    quick = is_quick(result)
    if g:
        lines += ["## CPU goals" + (" (indicative only)" if quick else ""), ""]
        if quick:
            lines += [
                "Quick mode: small configs, two short rounds of a few calls each; a goal that holds or fails "
                "here only hints at what `python -m bench` would measure.",
                "",
            ]
        lines += ["| goal | measured | target | holds | detail |", "|---|---|---|---|---|"]
        for x in g:
            holds = "yes" if x["holds"] else "**no**"
            lines.append(
                f"| {x['goal']} | {x['value']} | {x['limit']} | {holds + ' (indicative)' if quick else holds} "
                f"| {x['note']} |"
            )
        lines.append("")
    lines += [
        "## All records",
        "",
        "| config | B | T | in | H | backend [impl] | threads | median ms (min-max) | n | per step µs | "
        "GFLOP/s | floor | vs best peer | peak MB | verified | max abs err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in _by_config(result["records"]).items():
        peers = [r["median_ms"] for p in PEERS_CPU for r in _timed(rows, p)]
        best = min(peers) if peers else None
        for r in rows:
            med = r.get("median_ms")
            rng = (
                f"{_fmt(med)} ({_fmt(r.get('min_ms'))}-{_fmt(r.get('max_ms'))})"
                if med is not None
                else ("not timed" + (f": {r['error'][:80]}" if r.get("error") else ""))
            )
            vs = _fmt(med / best, 3) if med is not None and best else "-"
            lines.append(
                f"| {name} | {r['batch']} | {r['steps']} | {r['input_size']} | {r['hidden_size']} | {_label(r)} | "
                f"{_fmt(r.get('threads'))} | {rng} | {r.get('repeats')} | {_fmt(r.get('per_step_us'), 1)} | "
                f"{_fmt(r.get('gflops'), 1)} | {_fmt(r.get('floor_fraction'), 3)} | {vs} | "
                f"{_fmt(r.get('peak_mem_mb'), 1)} | {'yes' if r['verified'] else '**no**'} | "
                f"{_fmt(r.get('max_abs_err_vs_ref'), 2)} |"
            )
    return "\n".join(lines) + "\n"


SWEEP_AXES = {
    "steps": ("steps", "sequence length T"),
    "hidden": ("hidden_size", "hidden size H"),
    "batch": ("batch", "batch B"),
}


def plots(result, stem) -> list[str]:
    """``<stem>-configs.png`` (median time per config and backend), and one PNG per sweep in the results
    (``<stem>-steps.png``, ``-hidden.png``, ``-batch.png``: median time against the swept size, log-log)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    from .configs import SWEEP_ANCHORS

    result = _today(result)
    recs = result["records"]
    written = [_bars(result, f"{stem}-configs.png", plt)] if any(r.get("median_ms") for r in recs) else []
    for group, (key, label) in SWEEP_AXES.items():
        rows = [r for r in recs if r.get("group") == group]
        anchor = SWEEP_ANCHORS.get(group)
        rows += [r for r in recs if r["config"] == anchor]
        rows = [r for r in rows if r.get("median_ms") is not None]
        if len({r[key] for r in rows}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for lab in sorted({_label(r) for r in rows}):
            pts = sorted((r[key], r["median_ms"]) for r in rows if _label(r) == lab)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
        fixed = rows[0]
        others = {k: fixed[k] for k in ("batch", "steps", "input_size", "hidden_size") if k != key}
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("median time per forward call (ms)")
        ax.set_title(
            f"{fixed['cell']}: time against {label} (" + ", ".join(f"{k}={v}" for k, v in others.items()) + ")",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = f"{stem}-{group}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _bars(result, path, plt):
    """Median time per config, one bar per backend [impl], log scale."""
    timed = [r for r in result["records"] if r.get("median_ms") is not None]
    names = list(dict.fromkeys(r["config"] for r in timed))
    labels = sorted({_label(r) for r in timed})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) * max(1, len(labels)) / 3), 4.5))
    width = 0.8 / len(labels)
    for k, lab in enumerate(labels):
        xs, ys = [], []
        for i, name in enumerate(names):
            hit = [r["median_ms"] for r in timed if r["config"] == name and _label(r) == lab]
            if hit:
                xs.append(i + (k - (len(labels) - 1) / 2) * width)
                ys.append(hit[0])
        ax.bar(xs, ys, width, label=lab)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median time per forward call (ms)")
    title = "time per config" + (" (quick mode: indicative)" if is_quick(result) else "")
    ax.set_title(f"{title}; {result['machine'].get('cpu')}", fontsize=9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    path = sys.argv[1]
    with open(path) as f:
        res = json.load(f)
    stem = os.path.splitext(path)[0]
    with open(stem + ".md", "w") as f:
        f.write(markdown(res))
    print("\n".join([stem + ".md", *plots(res, stem)]))
