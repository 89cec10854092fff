"""The subprocess fuzz of every loader (tests/fuzz_harness.py), bounded for the normal test run.

RNN_XP_FUZZ_SECONDS sets the time (default 15 s, split over the targets); a longer run:
``python tests/fuzz_harness.py --seconds 600 --out fuzz-findings``.
"""

import io
import os
import zipfile
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
# Keras 3 on torch warns inside itself when the starting files are built
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_the_harness_reports_crashes_hangs_and_exceptions(tmp_path):
    """A child killed by SIGSEGV, one that hangs and one that raises a KeyError are each found, saved and
    skipped, and the inputs after them still run."""
    mutants = [b"fine", b"CRASH 1", b"fine", b"OOPS", b"HANG", b"fine", b"CRASH 2"]
    work = tmp_path / "work"
    work.mkdir()
    findings, ran = fuzz_harness.run_batch("selftest", "selftest", mutants, work, tmp_path / "found", timeout=5)
    assert ran == len(mutants)
    kinds = sorted((kind, Path(path).read_bytes(), why.split(":")[0]) for kind, path, why in findings)
    assert kinds == [
        ("crash", b"CRASH 1", "signal SIGSEGV"),
        ("crash", b"CRASH 2", "signal SIGSEGV"),
        ("crash", b"HANG", "hang"),
        ("exception", b"OOPS", "KeyError"),
    ]


def test_mutants_are_deterministic():
    seed = bytes(range(256)) * 4
    a = [fuzz_harness.mutant("onnx", seed, 3, i) for i in range(20)]
    assert a == [fuzz_harness.mutant("onnx", seed, 3, i) for i in range(20)]
    assert len(set(a)) > 15 and seed not in a


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return fuzz_harness.make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("target", sorted(fuzz_harness.MUTATORS))
def test_structure_aware_mutants_keep_their_container(target, corpus):
    """The structure-aware mutants are deterministic, differ from each other and mostly stay a sound zip (or
    ONNX protobuf, or HDF5 file), so that what they change reaches the loader's checks behind the container."""
    onnx = pytest.importorskip("onnx")
    a = [fuzz_harness.mutant(target, corpus[target], 5, i) for i in range(40)]
    assert a == [fuzz_harness.mutant(target, corpus[target], 5, i) for i in range(40)]
    assert len(set(a)) > 30 and corpus[target] not in a

    def sound(data):
        try:
            if target.startswith("onnx"):
                onnx.load_from_string(data)
            elif target.startswith("legacy-h5"):
                import h5py

                h5py.File(io.BytesIO(data), "r").close()
            else:
                zipfile.ZipFile(io.BytesIO(data)).namelist()
        except Exception:  # noqa: BLE001 - any failure to parse counts as not sound
            return False
        return True

    assert sum(map(sound, a)) >= 30


def test_c_parsers_survive_mutated_files(tmp_path):
    """Mutants of a .keras archive, its HDF5 weights, a legacy .h5 model, an .onnx model, a torch.save file, a
    safetensors file and an .npz file, bytes and structure: each loads or raises ValueError in its child; any
    crash, hang, MemoryError or other exception is listed with the saved input."""
    out = tmp_path / "findings"
    findings, counts = fuzz_harness.fuzz(SECONDS, seed=0, out_dir=out, batch=100, log=lambda *a: None)
    assert all(n >= 100 for n in counts.values()), counts
    assert not findings, "\n".join(f"{kind}: {why}: {path}" for kind, path, why in findings)
