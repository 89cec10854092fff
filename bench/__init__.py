"""The rnn_xp benchmark: ``python -m bench`` from the repository root (see bench/README.md).

Every backend runs in its own process (bench.worker), is checked against a float64 reference
before it is timed, and is timed in rounds that alternate between the processes, so that no
backend's spinning thread pool slows the next one down.
"""
