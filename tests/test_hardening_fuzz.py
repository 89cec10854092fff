"""The subprocess fuzz of the C parsers (tests/fuzz_harness.py), bounded for the normal test run.

RNN_XP_FUZZ_SECONDS sets the time (default 15 s, split over the targets); a longer run:
``python tests/fuzz_harness.py --seconds 600 --out fuzz-findings``.
"""

import os
from pathlib import Path

import fuzz_harness
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("h5py")
pytest.importorskip("keras")
pytest.importorskip("safetensors")
SECONDS = float(os.environ.get("RNN_XP_FUZZ_SECONDS", 15))


def test_the_harness_reports_crashes_hangs_and_exceptions(tmp_path):
    """A child killed by SIGSEGV, one that hangs and one that raises a KeyError are each found, saved and
    skipped, and the inputs after them still run."""
    mutants = [b"fine", b"CRASH 1", b"fine", b"OOPS", b"HANG", b"fine", b"CRASH 2"]
    work = tmp_path / "work"
    work.mkdir()
    findings, ran = fuzz_harness.run_batch("selftest", "selftest", mutants, work, tmp_path / "found", timeout=5)
    assert ran == len(mutants)
    kinds = sorted((kind, Path(path).read_bytes(), why.split(":")[0]) for kind, path, why in findings)
    assert kinds == [("crash", b"CRASH 1", "signal SIGSEGV"), ("crash", b"CRASH 2", "signal SIGSEGV"),
                     ("crash", b"HANG", "hang"), ("exception", b"OOPS", "KeyError")]


def test_mutants_are_deterministic():
    seed = bytes(range(256)) * 4
    a = [fuzz_harness.mutant("onnx", seed, 3, i) for i in range(20)]
    assert a == [fuzz_harness.mutant("onnx", seed, 3, i) for i in range(20)]
    assert len(set(a)) > 15 and seed not in a


def test_c_parsers_survive_mutated_files(tmp_path):
    """Mutants of a .keras archive, its HDF5 weights, an .onnx model, a torch.save file and a safetensors file:
    each loads or raises ValueError in its child; any crash is listed with the saved input."""
    out = tmp_path / "findings"
    findings, counts = fuzz_harness.fuzz(SECONDS, seed=0, out_dir=out, batch=100, log=lambda *a: None)
    assert all(n >= 100 for n in counts.values()), counts
    assert not findings, "\n".join(f"{kind}: {why}: {path}" for kind, path, why in findings)
