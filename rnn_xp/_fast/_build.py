"""Compiling the numba kernels out of the way of the calls that need them.

A kernel (one per configuration, :func:`rnn_xp._fast._numba_kernels.chunk_kernel`) is compiled on
first use, and numba's on-disk cache (``cache=True``: next to the package, else in the user's cache
folder, or under NUMBA_CACHE_DIR) serves every later process. On a cold cache the compile takes
seconds, so by default (``RNN_XP_COMPILE=background``) no call waits for it:

* the first call of a configuration looks in numba's cache (a load takes a fraction of a second);
* on a miss it starts a child process (``python -m rnn_xp._fast.numba_cpu SPEC``) that compiles the
  kernel into the cache (the caller's GIL and cores stay free), and ``impl="auto"`` runs numpy-fused
  meanwhile (``rnn_xp.explain`` says so);
* a later call that finds the child done loads the kernel from the cache and runs it.

Two processes compiling the same kernel at once are harmless: numba writes each cache file to a
temporary name and renames it into place, and each configuration has its own index file. A child
that fails, crashes or runs past BUILD_TIMEOUT leaves the configuration on numpy-fused for the rest
of the process, with one warning that names the cause. ``RNN_XP_COMPILE=wait`` (or an explicit
``impl="numba"``, or ``rnn_xp.warmup``) compiles in the calling process instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

__all__ = ["Kernels", "mode", "BUILD_TIMEOUT"]

MODES = ("background", "wait")
BUILD_TIMEOUT = 600.0  # seconds a child may compile before it counts as failed (and is killed)


def mode() -> str:
    """RNN_XP_COMPILE: 'background' (the default) or 'wait'."""
    value = os.environ.get("RNN_XP_COMPILE", "background").strip().lower() or "background"
    if value not in MODES:
        raise ValueError(
            f"RNN_XP_COMPILE={value!r}; expected 'background' (compile out of the way, numpy-fused meanwhile) "
            "or 'wait' (compile in the call that needs the kernel)"
        )
    return value


class _NotCached(Exception):
    pass


class _Job:
    def __init__(self, proc, log):
        self.proc, self.log, self.started = proc, log, time.monotonic()

    def tail(self):
        try:
            self.log.seek(0)
            text = self.log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        finally:
            self.log.close()
        lines = text.splitlines()
        return " | ".join(lines[-4:])


class Kernels:
    """The compiled kernels of one process, by spec: loaded ones, background builds and failures.

    ``make(spec) -> (dispatcher, example_args, uncached)``: the kernel's numba function (not
    compiled), a tuple of arguments of the types every call passes (the signature is read from it),
    and why numba cannot cache it, or None.
    ``spec_to_json(spec)`` is the JSON given to the build process, ``child`` the module it runs
    (``python -m child JSON`` compiles that spec and exits).
    """

    def __init__(self, make, spec_to_json, child):
        self.make, self.spec_to_json, self.child = make, spec_to_json, child
        self.lock = threading.RLock()
        self.loaded = {}  # spec -> dispatcher with its signature compiled or loaded
        self.jobs = {}  # spec -> _Job
        self.failed = {}  # spec -> reason
        if hasattr(os, "register_at_fork"):  # a forked child must not wait on its parent's builds
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self):
        self.lock = threading.RLock()
        self.jobs = {}

    def _signature(self, spec):
        fn, args, _ = self.make(spec)
        return fn, tuple(fn.typeof_pyval(a) for a in args)

    def get(self, spec):
        """The kernel, compiling it here and now if it is neither loaded nor in numba's cache."""
        fn = self.loaded.get(spec)
        if fn is not None:
            return fn
        with self.lock:
            if spec not in self.loaded:
                fn, sig = self._signature(spec)
                fn.compile(sig)  # numba loads it from its cache when it is there
                self.loaded[spec] = fn
            return self.loaded[spec]

    def _load_cached(self, spec):
        """Load the kernel from numba's cache without compiling: True, False (not there), None (cannot tell)."""
        with self.lock:
            if spec in self.loaded:
                return True
            fn, sig = self._signature(spec)
            compiler = getattr(fn, "_compiler", None)
            if compiler is None or not hasattr(compiler, "compile"):
                return None  # another numba: no way to load without compiling

            def refuse(*args, **kwargs):
                raise _NotCached

            compiler.compile = refuse  # numba's Dispatcher.compile calls it only on a cache miss
            try:
                fn.compile(sig)
            except _NotCached:
                return False
            finally:
                del compiler.compile
            self.loaded[spec] = fn
            return True

    def available(self, spec):
        """(kernel, None) when it can run now, else (None, why not): for impl="auto", which then runs another.

        In 'background' mode the first look loads it from numba's cache or starts a build; in 'wait'
        mode the kernel is compiled here (the call waits).
        """
        fn = self.loaded.get(spec)
        if fn is not None:
            return fn, None
        reason = self.failed.get(spec)
        if reason is not None:
            return None, reason
        if mode() == "wait":
            return self.get(spec), None
        with self.lock:
            job = self.jobs.get(spec)
            if job is None:
                uncached = self.make(spec)[2]
                if uncached is not None:  # a child's compile could not reach this process
                    self._warn(spec, f"numba has no cache folder it can write to ({uncached})", fail=True)
                    return None, self.failed[spec]
                try:
                    cached = self._load_cached(spec)
                except Exception as e:  # noqa: BLE001 - a cache that cannot be read: build it
                    cached = None
                    self._warn(spec, f"numba's cache could not be read ({type(e).__name__}: {e})", fail=False)
                if cached:
                    return self.loaded[spec], None
                self._start(spec)
                return None, self._building(spec)
            code = job.proc.poll()
            if code is None:
                if time.monotonic() - job.started < BUILD_TIMEOUT:
                    return None, self._building(spec)
                job.proc.kill()
                job.proc.wait()
                code = f"killed after {BUILD_TIMEOUT:.0f} s"
            del self.jobs[spec]
            if code == 0:
                try:
                    cached = self._load_cached(spec)
                    if cached is None:  # cannot tell: compile, which numba serves from its cache
                        self.get(spec)
                        cached = True
                except Exception as e:  # noqa: BLE001 - reported below, never raised into the call
                    cached, code = False, f"loading it failed ({type(e).__name__}: {e})"
                if cached:
                    return self.loaded[spec], None
                if code == 0:
                    code = "it ran but the kernel is not in numba's cache (is the cache folder writable?)"
            detail = job.tail()
            why = f"the background compile failed (exit {code})" if isinstance(code, int) else f"the build {code}"
            self._warn(spec, f"{why}{': ' + detail if detail else ''}", fail=True)
            return None, self.failed[spec]

    def _building(self, spec):
        job = self.jobs.get(spec)
        since = 0.0 if job is None else time.monotonic() - job.started
        return f"compiling in the background ({since:.0f} s so far; numba's cache keeps it for later processes)"

    def _start(self, spec):
        """A child process that compiles the kernel into numba's cache."""
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds the rnn_xp package
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["RNN_XP_COMPILE"] = "wait"
        log = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", self.child, json.dumps(self.spec_to_json(spec))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                close_fds=True,
            )
        except OSError as e:
            log.close()
            self._warn(spec, f"the background compile could not start ({type(e).__name__}: {e})", fail=True)
            return
        self.jobs[spec] = _Job(proc, log)

    def _warn(self, spec, what, *, fail):
        name = getattr(spec, "name", str(spec))
        if fail:
            self.failed[spec] = f"numba kernel {name}: {what}"
        warnings.warn(
            f"rnn_xp: numba kernel {name}: {what}. Calls of this configuration run on numpy-fused. "
            "Fix: RNN_XP_COMPILE=wait compiles in the calling process; NUMBA_CACHE_DIR=<a writable folder> "
            "gives numba a cache; `rnn-xp warmup` compiles ahead of time",
            RuntimeWarning,
            stacklevel=4,
        )

    def pending(self):
        """The specs being compiled in the background now."""
        return list(self.jobs)

    def wait(self, timeout=None):
        """Wait for the background builds (tests, warmup): True if none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                specs = list(self.jobs)
            if not specs:
                return True
            for spec in specs:
                self.available(spec)
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
