"""Without numba: impl="auto" on NumPy runs numpy-fused, and the seam says how to get the compiled path.

Runs with numba installed (made unimportable here) and in CI's virtualenv without it.
"""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import rnn_xp

numba_cpu = importlib.import_module("rnn_xp._fast.numba_cpu")
HINT = "numba is not installed (pip install 'rnn_xp[numba]')"


@pytest.fixture
def no_numba(monkeypatch):
    """numba unimportable for this test, whether or not it is installed."""
    monkeypatch.setitem(numba_cpu._state, "kernels", None)
    monkeypatch.setitem(numba_cpu._state, "reason", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ModuleNotFoundError


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_auto_runs_numpy_fused_and_says_why(rng, no_numba, cell):
    params = rnn_xp.init(cell, 3, 4, seed=18, xp=np)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    choice = rnn_xp.explain(x, params)
    assert choice.implementation == "numpy-fused"
    assert dict(choice.skipped)["numba"] == HINT
    np.testing.assert_allclose(
        rnn_xp.forward(x, params)[0], rnn_xp.forward(x, params, impl="reference")[0], rtol=0, atol=2e-6
    )


def test_asking_for_numba_without_it_names_the_install(rng, no_numba):
    params = rnn_xp.init("lstm", 3, 4, seed=18, xp=np)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"impl='numba' cannot run this call: numba is not installed \(pip install"):
        rnn_xp.forward(x, params, impl="numba")


def test_numba_is_listed_but_never_imported_by_import_rnn_xp():
    assert rnn_xp.implementations(np)[:2] == ["numba", "numpy-fused"]
    code = "import sys, rnn_xp, numpy; rnn_xp.implementations(numpy); print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
