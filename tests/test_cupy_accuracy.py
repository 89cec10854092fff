"""Float32 accuracy of the CuPy kernels on the GPU (skipped without CuPy and a GPU).

The kernels' sigmoid against float64 in ULP, and bench/accuracy.py's 500-step float32 LSTM (forget gates
near 1, input and output gates mostly negative) against float64, beside torch-cuda (cuDNN, TF32 off) on the
same inputs. tests/test_cuda_sources.py checks the same kernel text on the host.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cuda_sources import ulp_errors

from rnn_xp._fast.cupy_kernels import PREAMBLE

pytestmark = pytest.mark.gpu

# CUDA's expf is within 2 ULP (CUDA C Programming Guide, mathematical functions), the add and the division
# round once each (no fast math): (2 + 0.5 + 0.5) counted up to twice for a result whose significand is
# near 2 gives 6 ULP at worst. The mean: glibc's expf on the host is nearly correctly rounded (mean within
# 0.01 ULP there), CUDA's is not, and its errors lean up a little: on an H200 (2026-12-04) the mean was
# +0.038 ULP over all inputs and +0.076 ULP over x < 0 (max 3.34 ULP). MAX_BIAS_ULP bounds that; the old
# form 0.5*tanh(x/2)+0.5 leans by more than 1 ULP on x in (-15, -2) (test_cuda_sources.py).
MAX_ULP_GPU = 6.0
MAX_BIAS_ULP = 0.1


def _sigmoid_kernel(cp):
    # as the gate kernels call it: in the arithmetic type of the storage type (float for float16)
    return cp.ElementwiseKernel(
        "T x",
        "T y",
        "typedef rnnxp_acc<T>::type F; y = T(rnnxp_sigmoid(F(x)));",
        "rnnxp_sigmoid_check",
        preamble=PREAMBLE,
    )


def test_sigmoid_float32_ulp_on_gpu(cp):
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.uniform(-30, 30, 2_000_000), rng.uniform(-6, 6, 2_000_000), rng.uniform(-87.3, -30, 100_000)]
    ).astype(np.float32)
    got = cp.asnumpy(_sigmoid_kernel(cp)(cp.asarray(x)))
    err = ulp_errors(got, x)
    print(
        f"float32 sigmoid on the GPU: max {np.abs(err).max():.2f} ULP, mean {err.mean():+.4f}, "
        f"mean |err| {np.abs(err).mean():.3f}"
    )
    assert np.abs(err).max() <= MAX_ULP_GPU, f"max {np.abs(err).max():.2f} ULP"
    assert abs(err.mean()) <= MAX_BIAS_ULP and abs(err[x < 0].mean()) <= MAX_BIAS_ULP, (
        f"biased: mean {err.mean():+.4f} ULP, {err[x < 0].mean():+.4f} ULP for x < 0"
    )
    # CuPy compiles with -ftz=true: a result below float32's smallest normal number (x < -87.34) may be 0
    tiny = cp.asnumpy(_sigmoid_kernel(cp)(cp.asarray(rng.uniform(-104, -87.4, 10_000).astype(np.float32))))
    assert np.all((tiny >= 0) & (tiny <= np.finfo(np.float32).tiny))
    special = cp.asnumpy(
        _sigmoid_kernel(cp)(cp.asarray([np.inf, -np.inf, np.nan, 0.0, 200.0, -200.0], dtype=cp.float32))
    )
    assert special[0] == 1 and special[1] == 0 and np.isnan(special[2]) and special[3] == 0.5
    assert special[4] == 1 and special[5] == 0


def test_sigmoid_float16_storage_on_gpu(cp):
    """float16 storage computes in float and rounds once: within half an ULP of float16, plus float's error."""
    x = np.linspace(-12, 12, 20001, dtype=np.float16)
    got = cp.asnumpy(_sigmoid_kernel(cp)(cp.asarray(x))).astype(np.float64)
    exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    ulp16 = np.spacing(exact.astype(np.float16)).astype(np.float64)
    assert np.abs((got - exact) / ulp16).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("impl", ["cupy-fused", "cupy-persistent"])
def test_lstm_500_steps_float32_accuracy(cp, monkeypatch, impl):
    """rnn_xp's float32 error against float64 at most bench.accuracy.RATIO (1.25) times cuDNN's, same inputs."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device: no cuDNN to compare with")
    from bench import accuracy

    monkeypatch.setenv("CUPY_TF32", "0")
    for seed in (0, 1):
        params, x, ref = accuracy.problem(seed)
        peer = accuracy.errors(accuracy.torch_outputs(params, x, "cuda"), ref)
        mine = accuracy.errors(accuracy.rnn_xp_outputs(params, x, cp, impl), ref)
        ratio = accuracy.worst_ratio(mine, peer)
        print(f"seed {seed}: torch-cuda {peer}; {impl} {mine}: {ratio:.2f}x")
        assert ratio <= accuracy.RATIO, f"{impl}: float32 error {ratio:.2f}x cuDNN's (limit {accuracy.RATIO})"
        assert max(mine.values()) < 1e-5  # and small in absolute terms (float32 lands far under 1e-3)
