"""A smoke test of the benchmark machinery on tiny sizes (no timing assertions)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

for _dep in ("tqdm", "threadpoolctl"):  # the bench-tools extra (in the bench and test extras too)
    pytest.importorskip(_dep, reason=f"{_dep} is not installed (pip install -e '.[bench-tools]')")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import cli, configs, report  # noqa: E402
from bench.numpy_loop import FORWARD  # noqa: E402
from bench.reference import forward64  # noqa: E402

TINY = configs.Config("tiny-gru", "gru", 2, 5, 3, 4, "quick", numpy_loop=True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float64_reference_and_numpy_loop_agree_with_rnn_xp(cell):
    import rnn_xp

    params = rnn_xp.init(cell, 3, 5, seed=0, xp=np, dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 6, 3))
    y, h = rnn_xp.forward(x, params, impl="reference")
    h = h[0] if cell == "lstm" else h
    w = params.layers[0][0]
    weights = {k: np.asarray(getattr(w, k)) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    ry, rh, _ = forward64(cell, x, weights)
    np.testing.assert_allclose(ry, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rh, h[0], rtol=0, atol=1e-12)
    sy = FORWARD[cell](x, *weights.values())
    np.testing.assert_allclose(sy, y, rtol=0, atol=1e-12)


def test_flops_and_config_selection():
    lstm_large = next(c for c in configs.REFERENCE if c.name == "lstm-large")
    assert round(lstm_large.flops / 1e9) == 859  # 2·B·T·G·H·(in+H) = 2·256·200·4·1024·2048
    assert [c.name for c in configs.select("keras-text,gru-latency", False)] == ["keras-text", "gru-latency"]
    with pytest.raises(ValueError, match="unknown config"):
        configs.select("no-such-config", False)


def test_a_tiny_run_writes_json_markdown_and_marks_wrong_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(configs, "QUICK", [TINY])
    monkeypatch.setattr(
        cli,
        "machine_info",
        lambda have, quick: {
            "cpu": "test cpu",
            "cores": 2,
            "memory_gb": 1,
            "gpu": None,
            "versions": {"python": "3"},
            "sgemm_gflops": 100.0,
            "sgemm_gflops_by_library": {"numpy": 100.0},
        },
    )
    out = tmp_path / "r.json"
    backends = "numpy-loop,rnn_xp-numpy" + (",torch-cpu" if importlib.util.find_spec("torch") else "")
    # the NumPy loop's output is spoiled: it must be recorded as not verified and never timed
    rc = cli.main(
        [
            "--quick",
            "--backends",
            backends,
            "--out",
            str(out),
            "--no-plots",
            "--rounds",
            "1",
            "--budget",
            "0.01",
            "--perturb",
            "numpy-loop=0.5",
        ]
    )
    assert rc == 0
    stdout, stderr = capsys.readouterr()
    # tqdm's bar (stderr is no terminal here): its last state counts every planned step once
    done, total = map(int, re.findall(r"(\d+)/(\d+) \[", stderr)[-1])
    assert done == total and "100%" in stderr, stderr[-300:]
    assert stdout.rstrip().endswith(f"results:\n  {out}\n  {tmp_path / 'r.md'}"), stdout[-300:]  # on stdout
    assert "Load average (1 min)" in stdout and "on 2 cores" in stdout
    res = json.loads(out.read_text())
    assert res["machine"]["sgemm_gflops"] == 100.0 and res["records"]
    by = {(r["backend"], r["impl"]): r for r in res["records"]}
    loop = next(r for r in res["records"] if r["backend"] == "numpy-loop")
    assert loop["verified"] is False and loop["median_ms"] is None and loop["repeats"] == 0
    assert loop["max_abs_err_vs_ref"] >= 0.5
    fast = "numba" if importlib.util.find_spec("numba") else "numpy-fused"  # impl="auto"'s choice here
    for impl in {"reference", "numpy-fused", fast}:
        r = by[("rnn_xp-numpy", impl)]
        assert r["verified"] and r["max_abs_err_vs_ref"] < 1e-5
        assert r["repeats"] >= 1 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["per_step_us"] == pytest.approx(r["median_ms"] * 1e3 / TINY.steps, rel=1e-3)
        assert r["gflops"] == pytest.approx(TINY.flops / r["median_ms"] / 1e6, rel=1e-2)
        assert r["peak_mem_how"]
    assert by[("rnn_xp-numpy", fast)]["auto"] is True
    md = (tmp_path / "r.md").read_text()
    assert "tiny-gru" in md and "**no**" in md  # the spoiled row shows as not verified


def test_goals_are_computed_from_records():
    def rec(config, backend, ms, **kw):
        c = next(c for c in configs.REFERENCE + configs.SWEEPS if c.name == config)
        return {
            "config": config,
            "backend": backend,
            "median_ms": ms,
            "flops": c.flops,
            "impl": kw.pop("impl", None),
            "auto": kw.pop("auto", False),
            **kw,
        }

    result = {
        "machine": {"sgemm_gflops": 400.0},
        "records": [
            rec("keras-text", "rnn_xp-numpy", 4.0, impl="numpy-fused", auto=True, peak_mem_mb=7.0, output_mb=6.1),
            rec("keras-text", "torch-cpu", 10.0),
            rec("keras-text", "ort-cpu", 20.0),
            rec("keras-text", "numpy-loop", 100.0),
            rec("lstm-large", "rnn_xp-numpy", 5000.0, impl="numpy-fused", auto=True),
            rec(
                "steps-T10000", "rnn_xp-numpy", 200.0, impl="numpy-fused", auto=True, peak_mem_mb=270.0, output_mb=244.1
            ),
        ],
    }
    vals = [(x["value"], x["holds"]) for x in report.goals(result)]
    assert (0.4, True) in vals  # vs best peer (torch 10 ms)
    assert (25.0, True) in vals  # 100 / 4 over the NumPy loop
    floor_ms = configs.REFERENCE[2].flops / 400.0 / 1e6
    assert (round(5000.0 / floor_ms, 3), 5000.0 / floor_ms <= 2) in vals
    assert any(x["goal"].startswith("memory") and x["holds"] for x in report.goals(result))


def _result(quick, load=(0.1, 0.2), names=("keras-text", "numpy-loop")):
    def rec(config, backend, ms, **kw):
        return {
            "config": config,
            "backend": backend,
            "impl": kw.pop("impl", None),
            "median_ms": ms,
            "min_ms": ms,
            "max_ms": ms,
            "verified": True,
            "batch": 64,
            "steps": 250,
            "input_size": 32,
            "hidden_size": 100,
            "group": "reference",
            "cell": "rnn",
            "flops": 4.2e8,
            "repeats": 3,
            **kw,
        }

    config, loop = names
    return {
        "date": "2026-01-01T00:00:00Z",
        "command": "python -m bench" + (" --quick" if quick else ""),
        "machine": {"cpu": "test cpu", "cores": 2, "versions": {}},
        "load_average": {"start": [load[0], 0, 0], "end": [load[1], 0, 0]},
        "records": [
            rec(config, "rnn_xp-numpy", 4.0, impl="numpy-fused", auto=True),
            rec(config, "torch-cpu", 10.0),
            rec(config, loop, 100.0),
        ],
    }


def test_quick_goals_are_marked_indicative_and_the_load_is_shown():
    full, quick = report.markdown(_result(False)), report.markdown(_result(True))
    assert "## CPU goals\n" in full and "indicative" not in full
    assert "## CPU goals (indicative only)" in quick and "| yes (indicative) |" in quick
    assert "Load average (1 min) 0.10 at the start, 0.20 at the end, on 2 cores." in full
    busy = report.markdown(_result(False, load=(0.5, 1.8)))
    assert "1.80 at the end, on 2 cores: the machine was busy" in busy
    assert report.is_quick({**_result(False), "quick": True})


def test_results_of_earlier_versions_read_with_todays_names():
    old = report.markdown(_result(False, names=("keras-seed", "seed-loop")))
    assert old == report.markdown(_result(False))
    assert "seed" not in old.lower()
    assert any(
        g["goal"] == "keras-text: speed-up over the per-sample NumPy loop" and g["value"] == 25.0
        for g in report.goals(_result(False, names=("keras-seed", "seed-loop")))
    )


def test_old_names_are_accepted_on_the_command_line_with_a_note(capsys):
    notes = []
    assert [c.name for c in configs.select("keras-seed,lstm-med", False, note=notes.append)] == [
        "keras-text",
        "lstm-med",
    ]
    assert notes == ["config 'keras-seed' is now called 'keras-text'"]
    with pytest.raises(SystemExit):  # stops at the unknown backend, after the note on the renamed one
        cli.main(["--backends", "seed-loop,no-such-backend"])
    err = capsys.readouterr().err
    assert "note: backend 'seed-loop' is now called 'numpy-loop'" in err and "no-such-backend" in err


def test_quick_mode_writes_the_configs_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install matplotlib)")
    written = report.plots(_result(True), str(tmp_path / "r"))
    assert written == [str(tmp_path / "r-configs.png")] and (tmp_path / "r-configs.png").stat().st_size > 1000


def test_the_stream_benchmark_checks_its_workers_and_tabulates():
    """python -m bench.stream on a tiny size: every worker verified against the float64 loop, then timed."""
    from bench import stream as bench_stream

    records = bench_stream.run(
        cases=[("lstm", 2, 5, 8), ("gru", 3, 4, 6)],
        backends=("rnn_xp-stream", "rnn_xp-forward"),
        rounds=2,
        calls=3,
        progress=False,
    )
    assert [(r["cell"], r["backend"]) for r in records] == [
        ("lstm", "rnn_xp-stream"),
        ("lstm", "rnn_xp-forward"),
        ("gru", "rnn_xp-stream"),
        ("gru", "rnn_xp-forward"),
    ]
    assert all(r["verified"] and r["max_abs_err"] < 1e-5 and len(r["round_medians_us"]) == 2 for r in records)
    lines = bench_stream.table(records).splitlines()
    assert lines[2].startswith("| lstm | 2 | 5 | 8 | ") and lines[2].endswith("| - | - |")
    assert lines[3].startswith("| gru | 3 | 4 | 6 | ")


def test_the_plans_benchmark_forces_each_plan_and_tabulates(tmp_path, capsys):
    """python -m bench.plans on tiny cases: each plan runs as forced (auto as the library chooses), the
    same bits checked, then timed; the command line refuses an unknown case and writes JSON and markdown."""
    pytest.importorskip("numba")
    from bench import plans as bench_plans

    cases = {
        "a": ("lstm", 1, 6, 5, 8, 1, {"step": (1, 0), "chunk": (1, 1)}),
        "b": ("gru", 4, 5, 3, 6, 2, {"rows": (2, 0), "units": (2, 2)}),
    }
    records = bench_plans.run(("a", "b"), rounds=2, budget=0.001, cases=cases)
    assert [(r["case"], r["plan"], tuple(r["split"])) for r in records] == [
        ("a", "step", (1, 0)),
        ("a", "chunk", (1, 1)),
        ("a", "auto", (1, 1)),  # batch 1 on the calling thread: a chunk's inputs projected at once
        ("b", "rows", (2, 0)),
        ("b", "units", (2, 2)),
        ("b", "auto", (1, 0)),  # a call too small for the threads
    ]
    assert all(r["calls"] >= 2 and 0 < r["best_s"] <= r["median_s"] for r in records)
    lines = bench_plans.table(records).splitlines()
    assert lines[2].startswith("| a | lstm 1 6 5 8 | 1 | step | (1, 0) |") and lines[2].endswith("| 1.00 |")
    with pytest.raises(SystemExit):
        bench_plans.main(["--cases", "nope"])
    assert "unknown cases ['nope']" in capsys.readouterr().err
    out = tmp_path / "plans.json"
    assert bench_plans.main(["--cases", "one-group", "--rounds", "1", "--budget", "0.001", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["plan"] for r in data["records"]} == {"idle", "rows", "auto"} and data["machine"]["cores"]
    assert (tmp_path / "plans.md").read_text().startswith("# The compiled engine's plans")


def test_no_progress_writes_no_bar(capsys):
    with cli.progress_bar(3, enabled=False) as bar:
        bar.set_postfix_str("step")
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_blas_threads_reads_numpys_blas_through_threadpoolctl():
    """In a fresh process: OpenBLAS reads its thread count from the environment when it loads."""
    code = "import sys; sys.path.insert(0, '.')\nfrom bench.backends import blas_threads\nprint(blas_threads())"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "1", out
