"""Controls of the compiled CPU engine (impl="numba"): its threads and its compiled kernels.

Nothing here imports numba until it is needed (``import rnn_xp`` never does).
"""

from __future__ import annotations

__all__ = ["set_num_threads", "get_num_threads"]


def set_num_threads(n):
    """Let each forward call (and Stream chunk) of the compiled engine use at most ``n`` threads.

    ``None`` goes back to the default: the ``RNN_XP_NUM_THREADS`` environment variable, else the CPUs
    this process may use. The engine runs its own threads, not numba's threading layer, so
    ``numba.set_num_threads`` does not apply. Results never depend on the thread count.
    """
    from ._fast import _threads

    _threads.set_num_threads(n)


def get_num_threads() -> int:
    """The most threads a forward call of the compiled engine uses now (see :func:`set_num_threads`)."""
    from ._fast import _threads

    return _threads.get_num_threads()
