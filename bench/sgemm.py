"""The sgemm rate of this machine: ``python -m bench.sgemm numpy|torch|cupy`` prints GFLOP/s.

A square float32 matmul, best of several after a warm-up: the compute floor that the
benchmark's ``floor_fraction`` is measured against. Run in a fresh process per library.
"""

from __future__ import annotations

import sys
import time


def measure(lib: str, n: int = 2048, repeats: int = 7) -> float:
    if lib == "numpy":
        import numpy as np

        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)

        def mm():
            np.matmul(a, b, out=c)
    elif lib == "torch":
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)

        def mm():
            torch.matmul(a, b, out=c)
    elif lib in ("cupy", "cupy-tf32"):
        import cupy

        n = 8192
        a, b = (
            cupy.random.standard_normal((n, n), dtype=cupy.float32),
            cupy.random.standard_normal((n, n), dtype=cupy.float32),
        )

        def mm():
            cupy.matmul(a, b)
            cupy.cuda.Device().synchronize()
    else:
        raise ValueError(f"lib={lib!r}; expected 'numpy', 'torch' or 'cupy'")
    mm()
    mm()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


if __name__ == "__main__":
    print(f"{measure(sys.argv[1]):.2f}")
