"""Float32 accuracy of a long LSTM against float64, beside PyTorch's on the same inputs.

``python -m bench.accuracy [--out FILE] [--impls a,b] [--seeds N]``: on a GPU, every CuPy
implementation (impl=...) and torch-cuda (cuDNN, TF32 off) run the same float32 LSTM; each one's
error is measured against a float64 computation (bench/reference.py, written apart from rnn_xp's
engine) on the same float32-rounded weights and inputs. It prints a table and exits 1 when an
implementation's error exceeds ``RATIO`` times torch-cuda's. tests/test_cupy_accuracy.py asserts
the same on the GPU; tests/test_cuda_sources.py runs the fused kernels' text on the host against
torch on the CPU.

The problem: 500 steps, the forget gates biased by +3 (f near 0.95: the cell state integrates about
20 steps, so a biased gate error accumulates in it), the input and output gates by -3 (their
pre-activations mostly negative: where ``0.5*tanh(x/2)+0.5`` in float32 loses hundreds of ULP, and
where the sigmoid's small outputs carry their relative error straight into c and h). With these
biases the recurrence is contractive, so the error measures the arithmetic rather than a
chaotic amplification of the first rounding (with zero biases and larger weights the same
comparison swings by 10x between seeds).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .reference import forward64

RATIO = 1.25  # rnn_xp's float32 error may be at most this times torch's on the same inputs
SIZES = {"B": 16, "T": 500, "F": 16, "H": 64}
BIASES = {"i": -3.0, "f": 3.0, "o": -3.0}  # added to b_ih's gate slices (LSTM gate order i, f, g, o)


def problem(seed=0, B=SIZES["B"], T=SIZES["T"], F=SIZES["F"], H=SIZES["H"]):
    """(params float32 on NumPy, x float32 (B, T, F), (y, h_n, c_n) float64 of the same float32 values)."""
    import rnn_xp
    from rnn_xp.params import CellWeights, RNNParams

    p = rnn_xp.init("lstm", F, H, seed=seed, dtype="float32", xp=np)
    w = p.layers[0][0]
    b_ih = np.array(w.b_ih)
    for gate, offset in BIASES.items():
        k = "ifgo".index(gate)
        b_ih[k * H : (k + 1) * H] += np.float32(offset)
    params = RNNParams(p.config, [[CellWeights(w_ih=w.w_ih, w_hh=w.w_hh, b_ih=b_ih, b_hh=w.b_hh)]])
    x = np.random.default_rng(seed + 1000).standard_normal((B, T, F)).astype(np.float32)
    w = params.layers[0][0]
    y, h, c = forward64(
        "lstm", x, {k: np.asarray(getattr(w, k), dtype=np.float64) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    )
    return params, x, (y, h, c)


def errors(got, ref):
    """{'y', 'h_n', 'c_n'}: ||got - ref|| / ||ref|| of each output (host arrays; h_n, c_n (B, H))."""
    out = {}
    for name, g, r in zip(("y", "h_n", "c_n"), got, ref, strict=True):
        g = np.asarray(g, dtype=np.float64).reshape(r.shape)
        out[name] = float(np.linalg.norm(g - r) / np.linalg.norm(r))
    return out


def rnn_xp_outputs(params, x, xp, impl):
    """(y, h_n, c_n) on the host from rnn_xp.forward(impl=impl) with params and x moved to namespace xp."""
    import rnn_xp
    from rnn_xp import _xp

    p = rnn_xp.to_device(params, xp)
    y, (h, c) = rnn_xp.forward(_xp.from_host(x, xp), p, impl=impl)
    return tuple(_xp.to_host(a) for a in (y, h[0], c[0]))


def torch_outputs(params, x, device="cpu"):
    """(y, h_n, c_n) on the host from torch.nn.LSTM (cuDNN on 'cuda', TF32 off) with the same float32 weights."""
    import torch

    import rnn_xp

    cfg = params.config
    mod = torch.nn.LSTM(cfg.input_size, cfg.hidden_size, batch_first=True)
    mod.load_state_dict(rnn_xp.to_torch_state_dict(rnn_xp.to_device(params, np)))
    mod = mod.to(device).eval()
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            y, (h, c) = mod(torch.from_numpy(x).to(device))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    return tuple(a.cpu().numpy() for a in (y, h[0], c[0]))


def worst_ratio(mine, peer):
    """max over y and c_n of mine / peer (h_n follows y's last step)."""
    return max(mine[k] / peer[k] for k in ("y", "c_n"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--impls", default=None, help="comma list (default: every implementation usable on CuPy)")
    args = ap.parse_args(argv)
    os.environ.setdefault("CUPY_TF32", "0")
    import cupy as cp

    import rnn_xp
    from rnn_xp import _xp

    xp = _xp.as_namespace(cp)
    impls = args.impls.split(",") if args.impls else rnn_xp.implementations(xp)
    lines = [
        f"float32 LSTM B{SIZES['B']} T{SIZES['T']} in{SIZES['F']} H{SIZES['H']}, gate biases {BIASES}: "
        "||out - float64|| / ||float64||; ratio = worst of y, c_n over torch-cuda's (cuDNN, TF32 off)",
        f"{'seed':>4} {'implementation':16} {'y':>9} {'h_n':>9} {'c_n':>9} {'ratio':>6}",
    ]
    failed = []
    for seed in range(args.seeds):
        params, x, ref = problem(seed)
        peer = errors(torch_outputs(params, x, "cuda"), ref)
        lines.append(f"{seed:4d} {'torch-cuda':16} {peer['y']:9.2e} {peer['h_n']:9.2e} {peer['c_n']:9.2e}")
        for impl in impls:
            try:
                mine = errors(rnn_xp_outputs(params, x, cp, impl), ref)
            except Exception as e:  # noqa: BLE001 - a failing implementation is a row, not the end of the run
                lines.append(f"{seed:4d} {impl:16} {type(e).__name__}: {e}"[:200])
                failed.append(impl)
                continue
            r = worst_ratio(mine, peer)
            # the reference implementation computes activations.py's sigmoid: reported, not judged here
            judged = impl != "reference"
            if judged and not r <= RATIO:
                failed.append(impl)
            lines.append(
                f"{seed:4d} {impl:16} {mine['y']:9.2e} {mine['h_n']:9.2e} {mine['c_n']:9.2e} {r:6.2f}"
                + ("" if not judged else "  ok" if r <= RATIO else f"  OVER {RATIO}")
            )
    lines.append("ACCURACY OK" if not failed else f"ACCURACY FAILED: {sorted(set(failed))}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
