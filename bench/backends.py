"""Each backend, set up inside its own worker process.

``setup(backend, impl, cfg, params, x, opts)`` returns a Backend: ``run()`` does one forward pass
and waits for the device; ``host(result)`` gives (y (B, T, H), h_T (B, H)) as float64 NumPy for
the check; ``memory()`` and ``reset_memory()`` read a device's high-water mark where there is one
(the CPU backends are measured by the worker from the process's peak RSS).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import threadpoolctl

import rnn_xp


@dataclass
class Backend:
    run: Callable
    host: Callable
    threads: int | None
    impl: str
    versions: dict = field(default_factory=dict)
    reset_memory: Callable | None = None  # device backends: reset the high-water mark
    memory: Callable | None = None  # device backends: bytes at the high-water mark
    memory_how: str = "peak RSS growth of a fresh worker process during its first call (VmHWM reset before it)"


def blas_threads() -> int | None:
    """The thread count of NumPy's BLAS, as threadpoolctl reads it from the loaded library (None if no
    BLAS library that threadpoolctl knows is loaded)."""
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    # NumPy's wheels carry their OpenBLAS in numpy.libs/; another BLAS may be loaded beside it (torch's MKL)
    numpys = [p for p in blas if os.path.basename(os.path.dirname(p["filepath"])).startswith("numpy")]
    pools = numpys or blas
    return pools[0]["num_threads"] if pools else None


def _host_pair(y, h):
    return np.asarray(y, dtype=np.float64), np.asarray(h, dtype=np.float64)


def _last_state(state):
    h = state[0] if isinstance(state, tuple) else state
    return h[0]  # (1, B, H) -> (B, H): one layer, one direction


# --- CPU -------------------------------------------------------------------------------------
def _numpy_loop(cfg, params, x, opts):
    from .numpy_loop import FORWARD

    w = params.layers[0][0]
    W = [np.asarray(a) for a in (w.w_ih, w.w_hh, w.b_ih, w.b_hh)]
    fwd = FORWARD[cfg.cell]

    def run():
        with np.errstate(over="ignore"):  # the tutorials' 1/(1+exp(-v)) overflows harmlessly
            return fwd(x, *W)

    return Backend(run, lambda y: _host_pair(y, y[:, -1]), blas_threads(), "per-sample np.dot loop")


def _rnn_xp_numpy(cfg, params, x, opts):
    impl = opts["impl"]
    if impl == "numba":
        # numba compiles its kernels on the first call of a new configuration (or loads them from its
        # disk cache): done here on two steps, so that the memory column measures the call, not the compiler
        rnn_xp.forward(x[:, :2], params, impl=impl)

    def run():
        return rnn_xp.forward(x, params, impl=impl)

    return Backend(run, lambda r: _host_pair(r[0], _last_state(r[1])), blas_threads(), impl)


def _torch_module(cfg, params, device):
    import torch

    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg.cell]
    module = cls(cfg.input_size, cfg.hidden_size, batch_first=True)
    module.load_state_dict(rnn_xp.to_torch_state_dict(params))
    return module.to(device).eval()


def _torch_cpu(cfg, params, x, opts):
    import torch

    module = _torch_module(cfg, params, "cpu")
    xt = torch.from_numpy(x)
    if opts.get("onnx"):
        _export_onnx(module, xt, opts["onnx"], cfg)

    def run():
        with torch.inference_mode():
            return module(xt)

    return Backend(
        run,
        lambda r: _host_pair(r[0].numpy(), _last_state(r[1]).numpy()),
        torch.get_num_threads(),
        "nn." + type(module).__name__,
        {"torch": torch.__version__},
    )


def _export_onnx(module, xt, path, cfg):
    """The same weights through torch.onnx.export (the TorchScript exporter: no onnxscript needed)."""
    import torch

    outputs = ["y", "h", "c"] if cfg.cell == "lstm" else ["y", "h"]
    tmp = f"{path}.{os.getpid()}.tmp"
    with torch.inference_mode():
        torch.onnx.export(module, (xt,), tmp, dynamo=False, input_names=["x"], output_names=outputs, opset_version=17)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none


def _ort_cpu(cfg, params, x, opts):
    import onnxruntime as ort

    path = opts["onnx"]
    if not os.path.exists(path):
        import torch

        _export_onnx(_torch_module(cfg, params, "cpu"), torch.from_numpy(x), path, cfg)
    so = ort.SessionOptions()
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    threads = so.intra_op_num_threads or os.cpu_count()  # 0: onnxruntime uses one thread per core

    def run():
        return session.run(None, feeds)

    return Backend(
        run,
        lambda r: _host_pair(r[0], r[1][0]),
        threads,
        "onnx " + cfg.cell.upper() + " op",
        {"onnxruntime": ort.__version__},
    )


# --- GPU -------------------------------------------------------------------------------------
def cupy_usable() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no cupy, no driver or no device: the CuPy rows are skipped
        return False


def torch_cuda_usable() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch or no CUDA build
        return False


def _rnn_xp_cupy(cfg, params, x, opts):
    import cupy

    p = rnn_xp.to_device(params, cupy)
    xd = cupy.asarray(x)
    impl = opts["impl"]
    pool = cupy.get_default_memory_pool()

    def run():
        r = rnn_xp.forward(xd, p, impl=impl)
        cupy.cuda.Device().synchronize()
        return r

    def reset():
        cupy.cuda.Device().synchronize()
        pool.free_all_blocks()

    return Backend(
        run,
        lambda r: _host_pair(cupy.asnumpy(r[0]), cupy.asnumpy(_last_state(r[1]))),
        None,
        impl,
        {"cupy": cupy.__version__},
        reset,
        lambda: pool.total_bytes(),
        "CuPy memory pool's bytes after the first call from an empty pool (the pool's high-water mark)",
    )


def _torch_cuda(cfg, params, x, opts):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(opts.get("tf32"))
    torch.backends.cudnn.allow_tf32 = bool(opts.get("tf32"))
    module = _torch_module(cfg, params, "cuda")
    xd = torch.from_numpy(x).cuda()

    def run():
        with torch.inference_mode():
            r = module(xd)
        torch.cuda.synchronize()
        return r

    def reset():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    return Backend(
        run,
        lambda r: _host_pair(r[0].cpu().numpy(), _last_state(r[1]).cpu().numpy()),
        None,
        "cudnn",
        {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version()},
        reset,
        torch.cuda.max_memory_allocated,
        "torch.cuda.max_memory_allocated during the first call",
    )


def _jax(cfg, params, x, opts):
    """lax.scan over the steps, the input projection hoisted, jit-compiled on JAX's default device."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if opts.get("tf32") else "highest")
    w = params.layers[0][0]
    w_ih, w_hh, b_ih, b_hh = (jnp.asarray(np.asarray(a)) for a in (w.w_ih, w.w_hh, w.b_ih, w.b_hh))
    H = cfg.hidden_size
    cell = cfg.cell

    def step(carry, a_x):
        h, c = carry
        a_h = h @ w_hh.T + b_hh
        if cell == "rnn":
            h = jnp.tanh(a_x + a_h)
        elif cell == "lstm":
            a = a_x + a_h
            i, f = jax.nn.sigmoid(a[:, :H]), jax.nn.sigmoid(a[:, H : 2 * H])
            g, o = jnp.tanh(a[:, 2 * H : 3 * H]), jax.nn.sigmoid(a[:, 3 * H :])
            c = f * c + i * g
            h = o * jnp.tanh(c)
        else:
            r = jax.nn.sigmoid(a_x[:, :H] + a_h[:, :H])
            z = jax.nn.sigmoid(a_x[:, H : 2 * H] + a_h[:, H : 2 * H])
            n = jnp.tanh(a_x[:, 2 * H :] + r * a_h[:, 2 * H :])
            h = (1.0 - z) * n + z * h
        return (h, c), h

    @jax.jit
    def fwd(xb):
        a_x = jnp.einsum("btf,gf->tbg", xb, w_ih) + b_ih  # (T, B, G*H)
        zeros = jnp.zeros((xb.shape[0], H), xb.dtype)
        (h, _), ys = jax.lax.scan(step, (zeros, zeros), a_x)
        return jnp.swapaxes(ys, 0, 1), h

    xd = jnp.asarray(x)

    def run():
        r = fwd(xd)
        jax.block_until_ready(r)
        return r

    dev = jax.devices()[0]
    return Backend(
        run,
        lambda r: _host_pair(np.asarray(r[0]), np.asarray(r[1])),
        None,
        f"lax.scan on {dev.platform}",
        {"jax": jax.__version__},
    )


SETUP = {
    "numpy-loop": _numpy_loop,
    "rnn_xp-numpy": _rnn_xp_numpy,
    "torch-cpu": _torch_cpu,
    "ort-cpu": _ort_cpu,
    "rnn_xp-cupy": _rnn_xp_cupy,
    "torch-cuda": _torch_cuda,
    "jax": _jax,
}
