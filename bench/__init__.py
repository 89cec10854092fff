"""The rnn_xp benchmark: ``python -m bench`` from the repository root (see bench/README.md).

Every backend runs in its own process (bench.worker), is checked against a float64 reference
before it is timed, and is timed in rounds that alternate between the processes, so that no
backend's spinning thread pool slows the next one down.
"""

import os

# The benchmark times the steady state: numba's kernels are compiled (or loaded from its cache) in the
# warm-up call, not in the background while numpy-fused runs (python -m bench.first_call measures that).
os.environ.setdefault("RNN_XP_COMPILE", "wait")
