"""The CUDA sources of the fused gate kernels, as data: no CuPy here.

Each kernel is the gate math of one time step over the (B, H) elements of the new state,
written as the body of a ``cupy.ElementwiseKernel`` with a type placeholder ``T`` (float16,
float32 or float64 storage; arithmetic in ``F``, float for float16). The device helpers they
call (activations, clip) are in ``cupy_gates.cu``, CuPy's ``preamble`` for every kernel.
:mod:`rnn_xp._fast.cupy_fused` builds the kernels from these specs on the GPU;
``tests/test_cuda_sources.py`` compiles the same text with nvcc and runs it on the host.

Every kernel sees, per element ``i`` (row ``b``, unit ``j``):

* ``gi``, the input projection of this step (B, G*H) = x_t W_ih^T + b_ih, and ``gh``, the
  recurrent matmul h_{t-1} W_hh^T (B, G_h*H) without its bias: the bias ``b_hh`` is added here,
  which saves a pass over (B, G*H) per step;
* the activations as (kind, alpha, beta) per cell function (``af, ag, ah`` are ONNX's f, g, h)
  and ``clip`` (+inf for none).

The state update ends every kernel: written as is, or, with lengths or a mask (``_masked``),
only where the row takes this step, Keras's "last output" carried along for the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KernelSpec", "KERNELS", "PREAMBLE", "ACT_KINDS", "ACT_PREFIXES", "parse_params"]

PREAMBLE = (Path(__file__).with_name("cupy_gates.cu")).read_text()

# canonical activation name -> its kind in cupy_gates.cu's enum (the one list of what the kernels cover)
ACT_KINDS = {m.group(1): int(m.group(2)) for m in re.finditer(r"RNNXP_(\w+) = (\d+)", PREAMBLE)}

# the parameter-name prefix of each cell function: rnn (f,), gru (f, g), lstm (f, g, h)
ACT_PREFIXES = ("af", "ag", "ah")


@dataclass(frozen=True)
class KernelSpec:
    """One ElementwiseKernel: CuPy's in/out parameter lists and the loop body."""

    name: str
    in_params: str
    out_params: str
    operation: str

    @property
    def in_names(self) -> list[str]:
        return [p[2] for p in parse_params(self.in_params)]

    @property
    def out_names(self) -> list[str]:
        return [p[2] for p in parse_params(self.out_params)]


def parse_params(params: str) -> list[tuple[bool, str, str]]:
    """CuPy's parameter syntax ``"raw T gi, int32 H"`` -> [(raw, type, name)]."""
    out = []
    for item in params.split(","):
        words = item.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"malformed kernel parameter {item.strip()!r}")
        out.append((raw, words[0], words[1]))
    return out


def _acts(n):
    return ", ".join(f"int32 {p}_kind, float64 {p}_alpha, float64 {p}_beta" for p in ACT_PREFIXES[:n])


_GATE_INS = "raw T gi, raw T gh, raw T b_hh, int32 H, int32 has_bh, float64 clip"


def _head(G, G_h):
    """Declarations every body starts with: F, the element's row and unit, and its gates' pre-activations."""
    lines = [
        "typedef rnnxp_acc<T>::type F;",
        "const ptrdiff_t b = i / H, j = i % H;  // batch row and hidden unit of this element"
        if G
        else "const ptrdiff_t b = i / H;  // batch row of this element",
    ]
    if G:
        lines.append(f"auto gx = [&](int k) {{ return F(gi[(b * {G} + k) * H + j]); }};  // x W_ih^T + b_ih of gate k")
    if G_h:
        lines.append(
            f"auto gr = [&](int k) {{ return F(gh[(b * {G_h} + k) * H + j]) "
            "+ (has_bh ? F(b_hh[k * H + j]) : F(0)); };  // h W_hh^T + b_hh of gate k"
        )
    return "\n".join(lines) + "\n"


_RNN = """\
const F h_new = ACT(af, gx(0) + gr(0));  // h_t = f(x W_ih^T + b_ih + h W_hh^T + b_hh)
"""

_GRU_AFTER = """\
const F r = ACT(af, gx(0) + gr(0));
const F z = ACT(af, gx(1) + gr(1));
const F n = ACT(ag, gx(2) + r * gr(2));  // reset after the recurrent matmul: r * (W_hn h + b_hn)
const F h_new = (F(1) - z) * n + z * F(h);
"""

# GRU with the reset before the recurrent matmul: r must exist before (r * h) W_hn^T, so one step is two
# kernels around that matmul: gates r and z (gh holds the r and z rows only), then n and the new state.
_GRU_RZ = """\
const F r = ACT(af, gx(0) + gr(0));
rh_out = T(r * F(h));  // the input of (r * h) W_hn^T
z_out = T(ACT(af, gx(1) + gr(1)));
"""

_GRU_N = """\
const F gh_n = F(gh[i]) + (has_bh ? F(b_hh[2 * H + j]) : F(0));  // (r * h) W_hn^T + b_hn, gh is (B, H)
const F n = ACT(ag, gx(2) + gh_n);
const F h_new = (F(1) - F(z)) * n + F(z) * F(h);
"""

_LSTM = """\
F a_i = gx(0) + gr(0), a_f = gx(1) + gr(1), a_g = gx(2) + gr(2), a_o = gx(3) + gr(3);
const F c_prev = F(c);
if (has_p) {  // ONNX peepholes: the input and forget gates see c_{t-1}
  a_i += F(p[j]) * c_prev;
  a_f += F(p[H + j]) * c_prev;
}
const F i_t = ACT(af, a_i);
const F f_t = input_forget ? F(1) - i_t : ACT(af, a_f);  // coupled input-forget gate
const F c_new = f_t * c_prev + i_t * ACT(ag, a_g);
if (has_p) a_o += F(p[2 * H + j]) * c_new;  // the output gate's peephole sees the new c_t
const F o_t = ACT(af, a_o);
const F h_new = o_t * ACT_UNCLIPPED(ah, c_new);  // clip never bounds c; before the projection, if any
"""

# the new state after a projection h_t = (o * h(c)) W_hr^T, computed by cuBLAS between two kernels
_UPDATE = """\
const F h_new = F(hp);
"""

_TAKE = "const bool take = run[b];  // lengths and mask let this row take the step\n"

_H_PLAIN = "h_out = T(h_new);\n"

_H_MASKED = """\
h_out = take ? T(h_new) : h;
const T last_new = take ? T(h_new) : last;  // the last output, repeated on masked steps (Keras)
last_out = last_new;
y_out = emit[b] ? last_new : T(0);
"""

_C_PLAIN = "c_out = T(c_new);\n"
_C_MASKED = "c_out = take ? T(c_new) : c;\n"

_MASK_INS = "raw bool run, raw bool emit, T h, T last"
_MASK_OUTS = "T last_out, T y_out"


def _spec(name, ins, outs, body):
    return KernelSpec(f"rnnxp_{name}", ins, outs, body)


def _build() -> dict:
    k = {}
    for masked in (False, True):
        sfx = "_masked" if masked else ""
        tail = (_TAKE + _H_MASKED) if masked else _H_PLAIN
        mask_ins = f", {_MASK_INS}" if masked else ""
        outs = f"T h_out, {_MASK_OUTS}" if masked else "T h_out"
        k["rnn" + sfx] = _spec("rnn" + sfx, f"{_GATE_INS}, {_acts(1)}{mask_ins}", outs, _head(1, 1) + _RNN + tail)
        h_in = "" if masked else ", T h"  # the masked kernels already take h
        k["gru" + sfx] = _spec(
            "gru" + sfx, f"{_GATE_INS}, {_acts(2)}{h_in}{mask_ins}", outs, _head(3, 3) + _GRU_AFTER + tail
        )
        k["gru_n" + sfx] = _spec(
            "gru_n" + sfx, f"{_GATE_INS}, {_acts(2)}, T z{h_in}{mask_ins}", outs, _head(3, 0) + _GRU_N + tail
        )
        lstm_ins = f"{_GATE_INS}, {_acts(3)}, raw T p, int32 has_p, int32 input_forget, T c"
        c_tail = _C_MASKED if masked else _C_PLAIN
        k["lstm" + sfx] = _spec(
            "lstm" + sfx,
            lstm_ins + mask_ins,
            outs.replace("T h_out", "T h_out, T c_out"),
            _head(4, 4) + _LSTM + tail + c_tail,
        )
    k["gru_rz"] = _spec("gru_rz", f"{_GATE_INS}, {_acts(2)}, T h", "T rh_out, T z_out", _head(3, 2) + _GRU_RZ)
    # LSTM with a projection: the gate kernel writes o * h(c) (h_out) and the masked cell state; after
    # the projection matmul, update_masked does the masked update of h.
    k["lstm_cmasked"] = _spec(
        "lstm_cmasked",
        f"{k['lstm'].in_params}, raw bool run",
        "T h_out, T c_out",
        _head(4, 4) + _LSTM + _TAKE + _H_PLAIN + _C_MASKED,
    )
    k["update_masked"] = _spec(
        "update_masked",
        f"T hp, int32 H, {_MASK_INS}",
        f"T h_out, {_MASK_OUTS}",
        _head(0, 0) + _UPDATE + _TAKE + _H_MASKED,
    )
    return k


KERNELS = _build()
