"""A smoke test of the benchmark machinery on tiny sizes (no timing assertions)."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import cli, configs, report  # noqa: E402
from bench.reference import forward64  # noqa: E402
from bench.seed_loop import FORWARD  # noqa: E402

TINY = configs.Config("tiny-gru", "gru", 2, 5, 3, 4, "quick", seed_loop=True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float64_reference_and_seed_loop_agree_with_rnn_xp(cell):
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
    assert round(lstm_large.flops / 1e9) == 859  # shared/REFERENCE.md's figure
    assert [c.name for c in configs.select("keras-seed,gru-latency", False)] == ["keras-seed", "gru-latency"]
    with pytest.raises(ValueError, match="unknown config"):
        configs.select("no-such-config", False)


def test_a_tiny_run_writes_json_markdown_and_marks_wrong_results(tmp_path, monkeypatch):
    monkeypatch.setattr(configs, "QUICK", [TINY])
    monkeypatch.setattr(cli, "machine_info", lambda have, quick: {
        "cpu": "test cpu", "cores": 2, "memory_gb": 1, "gpu": None, "versions": {"python": "3"},
        "sgemm_gflops": 100.0, "sgemm_gflops_by_library": {"numpy": 100.0}})
    out = tmp_path / "r.json"
    backends = "seed-loop,rnn_xp-numpy" + (",torch-cpu" if importlib.util.find_spec("torch") else "")
    # the seed loop's output is spoiled: it must be recorded as not verified and never timed
    rc = cli.main(["--quick", "--backends", backends, "--out", str(out), "--no-plots", "--no-progress",
                   "--rounds", "1", "--budget", "0.01", "--perturb", "seed-loop=0.5"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["machine"]["sgemm_gflops"] == 100.0 and res["records"]
    by = {(r["backend"], r["impl"]): r for r in res["records"]}
    seed = next(r for r in res["records"] if r["backend"] == "seed-loop")
    assert seed["verified"] is False and seed["median_ms"] is None and seed["repeats"] == 0
    assert seed["max_abs_err_vs_ref"] >= 0.5
    for impl in ("reference", "numpy-fused"):
        r = by[("rnn_xp-numpy", impl)]
        assert r["verified"] and r["max_abs_err_vs_ref"] < 1e-5
        assert r["repeats"] >= 1 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["per_step_us"] == pytest.approx(r["median_ms"] * 1e3 / TINY.steps, rel=1e-3)
        assert r["gflops"] == pytest.approx(TINY.flops / r["median_ms"] / 1e6, rel=1e-2)
        assert r["peak_mem_how"]
    assert by[("rnn_xp-numpy", "numpy-fused")]["auto"] is True
    md = (tmp_path / "r.md").read_text()
    assert "tiny-gru" in md and "**no**" in md  # the spoiled row shows as not verified


def test_goals_are_computed_from_records():
    def rec(config, backend, ms, **kw):
        c = next(c for c in configs.REFERENCE + configs.SWEEPS if c.name == config)
        return {"config": config, "backend": backend, "median_ms": ms, "flops": c.flops, "impl": kw.pop("impl", None),
                "auto": kw.pop("auto", False), **kw}
    result = {"machine": {"sgemm_gflops": 400.0}, "records": [
        rec("keras-seed", "rnn_xp-numpy", 4.0, impl="numpy-fused", auto=True, peak_mem_mb=7.0, output_mb=6.1),
        rec("keras-seed", "torch-cpu", 10.0), rec("keras-seed", "ort-cpu", 20.0), rec("keras-seed", "seed-loop", 100.0),
        rec("lstm-large", "rnn_xp-numpy", 5000.0, impl="numpy-fused", auto=True),
        rec("steps-T10000", "rnn_xp-numpy", 200.0, impl="numpy-fused", auto=True, peak_mem_mb=270.0, output_mb=244.1),
    ]}
    vals = [(x["value"], x["holds"]) for x in report.goals(result)]
    assert (0.4, True) in vals  # vs best peer (torch 10 ms)
    assert (25.0, True) in vals  # 100 / 4 over the seed loop
    floor_ms = configs.REFERENCE[2].flops / 400.0 / 1e6
    assert (round(5000.0 / floor_ms, 3), 5000.0 / floor_ms <= 2) in vals
    assert any(x["goal"].startswith("memory") and x["holds"] for x in report.goals(result))


def test_the_stream_benchmark_checks_its_workers_and_tabulates():
    """python -m bench.stream on a tiny size: every worker verified against the float64 loop, then timed."""
    from bench import stream as bench_stream

    records = bench_stream.run(batches=(2,), hidden=(8,), backends=("rnn_xp-stream", "rnn_xp-forward"), rounds=2,
                               calls=3, progress=False)
    assert [r["backend"] for r in records] == ["rnn_xp-stream", "rnn_xp-forward"]
    assert all(r["verified"] and r["max_abs_err"] < 1e-5 and len(r["round_medians_us"]) == 2 for r in records)
    table = bench_stream.table(records)
    assert table.splitlines()[2].startswith("| 2 | 8 | ") and table.splitlines()[2].endswith("| - |")
