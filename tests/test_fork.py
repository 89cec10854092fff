"""Safe under fork: after a forward that ran on rnn_xp's threads, child processes run forward and get its bits.

multiprocessing pools with the fork, forkserver and spawn start methods (fork: Python's default on
Linux before 3.14, gunicorn and Celery pre-fork workers, torch DataLoader workers) and bare os.fork
children: 100% of them return the parent's results, none hangs (every wait has a timeout). Threads
sharing params keep working too.
"""

import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import traceback

import numpy as np
import pytest

import rnn_xp
from rnn_xp._fast import _threads

pytest.importorskip("numba")
# JAX, when another test imported it, warns at every fork that its own threads make fork unsafe: not rnn_xp's
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("fork is POSIX", allow_module_level=True)

TIMEOUT = 240  # seconds: a spawned child imports rnn_xp and loads the kernel from numba's cache


def _params():
    return rnn_xp.init("lstm", 16, 150, seed=3)  # groups of units for two threads whatever the vector width


def _inputs():
    rng = np.random.default_rng(5)
    return [rng.standard_normal((B, 30, 16)).astype(np.float32) for B in (1, 8)]


def work(k):
    """A child's job: forward of input k (the module-level params and inputs, made in the child)."""
    y, (h, c) = rnn_xp.forward(_inputs()[k], _params(), impl="numba")
    return y, h, c


@pytest.fixture
def parent_threaded(monkeypatch):
    """The parent's forward calls run on rnn_xp's threads (2, whatever the size), before any child starts."""
    from rnn_xp._fast import numba_cpu

    monkeypatch.setitem(_threads._setting, "threads", 2)
    monkeypatch.setattr(numba_cpu, "CALL_PARALLEL_MIN", 0)
    monkeypatch.setattr(numba_cpu, "PARALLEL_MIN", 0)
    monkeypatch.setattr(numba_cpu, "_cores_busy", lambda: False)
    used = []
    real = _threads.run
    monkeypatch.setattr(_threads, "run", lambda fn, nth, args: used.append(nth) or real(fn, nth, args))
    expected = [work(k) for k in range(2)]
    assert used, "the parent never ran on its threads"
    return expected


def same(got, expected):
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pools_of_every_start_method(parent_threaded, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map_async(work, [0, 1, 0, 1]).get(timeout=TIMEOUT)
    for k, got in zip([0, 1, 0, 1], results, strict=True):
        same(got, parent_threaded[k])


def _in_children(jobs):
    """Run each job (a function returning arrays) in a bare os.fork child; the bytes of each one's arrays."""
    children = []
    for k, job in enumerate(jobs):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its job on the threads it starts itself, the bytes back, and out
            code = 1
            try:
                os.close(read)
                arrays = job()
                with os.fdopen(write, "wb") as f:
                    f.write(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))
                code = 0
            except BaseException:  # noqa: BLE001 - the parent sees the exit status; the traceback helps
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write)
        children.append((k, pid, read))
    deadline = time.monotonic() + TIMEOUT
    out = []
    for k, pid, read in children:
        data = []  # read while the child writes (it blocks on a full pipe: 64 KiB on Linux) until it closes it
        while True:
            if select.select([read], [], [], 0.05)[0]:
                chunk = os.read(read, 1 << 20)
                if not chunk:
                    break
                data.append(chunk)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"an os.fork child hung (job {k})")
        os.close(read)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"an os.fork child did not exit (job {k})")
            time.sleep(0.05)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child {k} failed: status {status}"
        out.append(b"".join(data))
    return out


def _from_bytes(data, like):
    sizes = np.cumsum([0] + [a.nbytes for a in like])
    return [np.frombuffer(data[sizes[i] : sizes[i + 1]], dtype=a.dtype).reshape(a.shape) for i, a in enumerate(like)]


def test_bare_os_fork_children(parent_threaded):
    got = _in_children([lambda k=k: work(k) for k in (0, 1)])
    for k in (0, 1):
        same(_from_bytes(got[k], parent_threaded[k]), parent_threaded[k])


@pytest.mark.parametrize("how", ["stream", "forward"])
@pytest.mark.parametrize("B", [1, 8], ids=["units", "rows"])
def test_a_stream_on_resident_threads_forks(monkeypatch, B, how):
    """A stream whose one-step calls run on threads that stay resident between calls (still in their loop at
    the fork), or forward fed a step a call (its kept Directions run as a stream's steps): forked children go
    on streaming on threads of their own and get the parent's bits."""
    from rnn_xp._fast import numba_cpu

    monkeypatch.setitem(_threads._setting, "threads", 2)
    forced = {"TEAM_STEP_MIN": 0, "TEAM_GAP": float("inf"), "_cores_busy_cached": lambda: False}
    forced["_held_elsewhere"] = lambda ctl: False
    for name, value in forced.items():
        monkeypatch.setattr(numba_cpu, name, value)
    teams = []
    real = _threads.run_team
    monkeypatch.setattr(_threads, "run_team", lambda fn, nth, *a: teams.append(nth) or real(fn, nth, *a))
    x = _inputs()[B > 1]
    params = _params()
    s = rnn_xp.Stream(params)
    carried = {"state": None}

    def step(t):  # frame t's output
        if how == "stream":
            return s(x[:, t : t + 1])
        y, carried["state"] = rnn_xp.forward(x[:, t : t + 1], params, carried["state"], impl="numba")
        return y

    def rest():  # the second half of the sequence, frame by frame
        ys = [step(t) for t in range(15, 30)]
        h, c = s.state if how == "stream" else carried["state"]
        return np.concatenate(ys, axis=1), h, c

    for t in range(15):
        step(t)
    got = _in_children([rest, rest])  # forked right after a step: the workers wait in their loop
    expected = rest()
    assert teams, "the parent's stream never ran on a team"
    for data in got:
        same(_from_bytes(data, expected), expected)


def test_threads_sharing_params_after_a_fork(parent_threaded):
    """The parent goes on: 8 threads at once on the same params, every result the serial one."""
    params, xs = _params(), _inputs()
    results = [None] * 8
    start = threading.Barrier(8)

    def run(i):
        start.wait()
        results[i] = rnn_xp.forward(xs[i % 2], params, impl="numba")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a thread hung"
    for i, (y, (h, c)) in enumerate(results):
        same((y, h, c), parent_threaded[i % 2])
