"""rnn_xp's own worker threads for the compiled kernels: safe under fork and from many threads.

The kernels are numba functions compiled with ``nogil=True``: plain Python threads run them at once
on different cores. rnn_xp keeps a few such threads, started on first use, and never uses numba's
threading layers: GNU OpenMP kills a forked child ("fork() called from a process already using GNU
OpenMP") and numba's workqueue layer aborts when two threads call into it at once. After a fork the
child has none of the parent's threads: it starts its own when it first needs them (the locks are
new ones too, in case another thread of the parent held one at the fork), as PyTorch rebuilds its
pool in a pthread_atfork handler.

:func:`run_team` keeps the workers in a loop of the kernel between back-to-back calls (a stream fed a
step a call): a worker that runs one is this pool's like any other, and any other call takes it back
(it is told to leave the loop, and waited for) before giving it a job.

Only one call at a time runs on the pool (:func:`claim`); a call that starts while another holds it
runs on its own thread (so several caller threads, e.g. Dask's, never oversubscribe the cores). The
thread count is :func:`get_num_threads`: the usable CPUs, or RNN_XP_NUM_THREADS, or what
:func:`set_num_threads` said.
"""

from __future__ import annotations

import os
import threading

__all__ = ["run", "run_team", "resident_elsewhere", "claim", "release", "get_num_threads", "set_num_threads"]


class _Worker:
    def __init__(self):
        self.go = threading.Event()
        self.done = threading.Event()
        self.job = None
        self.error = None
        self.tenant = None  # (ctl, k, team): the team whose resident loop this worker runs (until done is set)
        self.thread = threading.Thread(target=self._loop, name="rnn_xp-worker", daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            self.go.wait()
            self.go.clear()
            fn, args = self.job
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                self.error = e
            self.job = None
            self.done.set()


def _usable_cpus():
    """The CPUs this process may run on (read once: a system call per forward call would show)."""
    if _setting["cpus"] is None:
        try:
            _setting["cpus"] = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            _setting["cpus"] = os.cpu_count() or 1
    return _setting["cpus"]


def _from_env():
    text = os.environ.get("RNN_XP_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"RNN_XP_NUM_THREADS={text!r}; expected a positive integer (the threads of a forward call)")
    return n


class _Pool:
    def __init__(self):
        self.workers = []
        self.lock = threading.Lock()  # held by the one call that runs on the pool
        self.calls = 0  # calls running now, on the pool or not
        self.count_lock = threading.Lock()


_pool = _Pool()
_setting = {"threads": None, "cpus": None}


def _reset_after_fork():
    global _pool
    _pool = _Pool()
    _setting["cpus"] = None  # a child may be pinned elsewhere


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_num_threads() -> int:
    """Threads a forward call may use: set_num_threads's value, else RNN_XP_NUM_THREADS, else the usable CPUs."""
    n = _setting["threads"] or _from_env() or _usable_cpus()
    return max(1, int(n))


def set_num_threads(n: int) -> None:
    """Use at most n threads per forward call from now on (None: back to the default)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads({n!r}); expected a positive integer, or None for the default")
    _setting["threads"] = n


def claim(wanted: int) -> int:
    """How many threads this call may use: ``wanted`` if no other call is running, else 1 (release() after)."""
    pool = _pool
    with pool.count_lock:
        pool.calls += 1
        alone = pool.calls == 1
    if wanted > 1 and alone and pool.lock.acquire(blocking=False):
        return wanted
    return 1


def release(nth: int) -> None:
    """The end of a call that claim() answered with nth threads."""
    pool = _pool
    if nth > 1:
        pool.lock.release()
    with pool.count_lock:
        pool.calls -= 1


def _workers(n):
    pool = _pool
    while len(pool.workers) < n:
        pool.workers.append(_Worker())
    return pool.workers[:n]


def _vacate(w):
    """Make w free for a new job: a resident loop it runs is told to leave, and its end waited for."""
    if w.tenant is not None:
        ctl, k, team = w.tenant
        team.leave(ctl, k)
        w.done.wait()
        w.tenant = None


def _post(w, fn, args):
    w.error = None
    w.done.clear()
    w.job = (fn, args)
    w.go.set()


def run(fn, nth, args):
    """fn(k, nth, *args) for k in range(nth) at once: k = 0 on the calling thread, the others on workers.

    Only for a call that claim() gave nth > 1 threads (it holds the pool).
    """
    if nth == 1:
        fn(0, 1, *args)
        return
    workers = _workers(nth - 1)
    for k, w in enumerate(workers, start=1):
        _vacate(w)
        _post(w, fn, (k, nth, *args))
    try:
        fn(0, nth, *args)
    finally:
        for w in workers:
            w.done.wait()
    for w in workers:
        if w.error is not None:
            raise w.error


def run_team(fn, nth, args, resident_args, ctl, team):
    """fn(k, nth, *args) for k in range(nth) at once, as run(), with workers that stay resident between calls.

    For back-to-back calls (a stream fed step by step): worker k runs ``fn(k, nth, *resident_args)``, a
    loop that serves the calls of the team whose control array is ``ctl`` (posted to its slot there:
    ``team.post(ctl, k)``) and leaves when told (``team.leave``) or after a while without one. A
    worker already in the loop gets the call by an atomic store; one that is not is armed
    (``team.arm``) and started as in run(). ``team.wait(ctl, nth, spins)`` says whether every worker
    has finished the call. Only for a call that claim() gave nth > 1 threads.
    """
    workers = _workers(nth - 1)
    for k, w in enumerate(workers, start=1):
        if w.tenant is not None and w.tenant[0] is ctl and w.tenant[1] == k and team.post(ctl, k):
            continue  # in the loop and waiting: it has the call
        _vacate(w)
        team.arm(ctl, k)
        w.tenant = (ctl, k, team)
        _post(w, fn, (k, nth, *resident_args))
    try:
        fn(0, nth, *args)
    finally:
        _finish_team(workers, ctl, nth, team)


def resident_elsewhere(ctl, team):
    """Whether a worker is in the loop of a team whose control array is not ``ctl``, waiting for its next call."""
    for w in _pool.workers:
        t = w.tenant
        if t is not None and t[0] is not ctl and not w.done.is_set() and team.idle(t[0], t[1]):
            return True
    return False


def _finish_team(workers, ctl, nth, team):
    """Wait until every worker has finished the call; raise if one's loop ended without running it (an error)."""
    while not team.wait(ctl, nth, 1 << 20):  # ~1 ms at a time
        for k, w in enumerate(workers, start=1):
            if w.done.is_set() and team.pending(ctl, k):  # its loop ended with the call still posted
                for j in range(1, nth):
                    team.leave(ctl, j)
                raise RuntimeError("a worker thread of rnn_xp stopped before running its part of a call") from w.error
