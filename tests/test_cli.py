"""The command line: help text, --version, the demo's report, and one-line errors with exit status 2."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import rnn_xp
from rnn_xp import cli

SMALL = ["demo", "--batch", "2", "--steps", "5", "--repeats", "1"]


def _run(capsys, argv):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def _gpu_usable():
    return importlib.util.find_spec("cupy") is not None and rnn_xp.select_backend("auto").name == "cupy"


def test_help_is_plain_text_and_shows_defaults(capsys):
    top = _help(capsys, ["--help"])
    assert "``" not in top and ":func:" not in top, top  # no reST markup
    assert "demo" in top and "--version" in top and "--debug" in top
    sub = _help(capsys, ["demo", "--help"])
    assert "``" not in sub and ":func:" not in sub, sub
    for option, default in (("--batch", "64"), ("--steps", "250"), ("--repeats", "5")):
        line = " ".join(sub.split("options:", 1)[1].split(option + " N", 1)[1].split("--", 1)[0].split())
        assert f"(default: {default})" in line, (option, line)
    assert "default: None" not in sub and "seed" not in sub.lower()


def test_version(capsys):
    assert _help(capsys, ["--version"]).strip() == f"rnn_xp {rnn_xp.__version__}"


def test_demo_reports_backend_implementation_and_one_run(capsys, monkeypatch):
    monkeypatch.delenv("RNN_XP_BACKEND", raising=False)
    code, out, err = _run(capsys, ["demo", "--backend", "numpy", "--batch", "3", "--steps", "7", "--repeats", "1"])
    assert code == 0, err
    fast = rnn_xp.implementations(np)[0] if importlib.util.find_spec("numba") else "numpy-fused"  # numba if installed
    for piece in (
        "backend: numpy",
        "Total params: 173,401",
        "(None, 7, 32)",
        "input: token ids (3, 7)",
        f"SimpleRNN implementation: {fast}",
        "output: (3, 1) float32",
        "over 1 run (",
        "batch 3 x 7",
    ):
        assert piece in out, (piece, out)
    code, out, _ = _run(capsys, SMALL[:-1] + ["3", "--backend", "numpy"])
    assert "over 3 runs (" in out


@pytest.mark.skipif(_gpu_usable(), reason="a GPU is usable here: auto picks CuPy, there is no fallback")
def test_demo_fallback_says_what_the_gpu_path_needs(capsys, monkeypatch):
    monkeypatch.delenv("RNN_XP_BACKEND", raising=False)
    code, out, _ = _run(capsys, SMALL)
    assert code == 0
    first, second = out.splitlines()[:2]
    assert first.startswith("backend: numpy") and "fallback" in first, first
    assert "for the GPU path:" in second and ("rnn_xp[cuda13]" in second or "nvidia-smi" in second), second


@pytest.mark.parametrize(
    "env, words",
    [
        pytest.param(
            "cupy",
            ["'cupy' was requested", "Fix:", "RNN_XP_BACKEND=numpy"],
            marks=pytest.mark.skipif(_gpu_usable(), reason="a GPU is usable here: cupy works"),
        ),
        ("gpu", ["'gpu'", "unknown", "Fix: RNN_XP_BACKEND=auto"]),
        ("torch", ["'torch'", "unknown", "Fix: RNN_XP_BACKEND=auto", "to_device(params, 'torch')"]),
    ],
)
def test_a_bad_backend_is_one_line_with_the_fix_and_exit_2(capsys, monkeypatch, env, words):
    monkeypatch.setenv("RNN_XP_BACKEND", env)
    code, out, err = _run(capsys, SMALL)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("rnn-xp: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    # --debug (before or after the command) shows the traceback instead
    for argv in (["--debug", *SMALL], [*SMALL, "--debug"]):
        with pytest.raises(cli.UsageError):
            cli.main(argv)
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_bad_sizes_are_argparse_errors(capsys, bad):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--batch", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--batch" in err and "Traceback" not in err


def test_console_entry_point_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnn_xp",
            "demo",
            "--backend",
            "numpy",
            "--batch",
            "4",
            "--steps",
            "20",
            "--repeats",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for piece in ("backend: numpy", "Total params: 173,401", "output: (4, 1)", "time: median"):
        assert piece in out, out
    proc = subprocess.run(
        [sys.executable, "-m", "rnn_xp", "demo"],
        capture_output=True,
        text=True,
        env={**os.environ, "RNN_XP_BACKEND": "tpu"},
    )
    assert proc.returncode == 2 and proc.stderr.startswith("rnn-xp: error: backend 'tpu'"), proc.stderr
