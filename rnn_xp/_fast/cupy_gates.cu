// Device helpers shared by the fused gate kernels of rnn_xp/_fast/cupy_kernels.py.
//
// CuPy prepends this file (the `preamble`) to every ElementwiseKernel it builds from those
// bodies; tests/test_cuda_sources.py compiles it with nvcc (sm_90) and runs it on the host with g++.
// Keep it plain C++11 that NVRTC, nvcc and g++ all accept: no CUDA intrinsics, no std::.
//
// The formulas follow rnn_xp/activations.py one for one, in the same order of operations,
// so that float64 results agree with the reference to rounding; the sigmoid is the exception (its
// form here is accurate in float32 as well, see rnnxp_sigmoid). Comparisons are written so
// that NaN propagates wherever the reference's xp.maximum / xp.clip / xp.where propagate it.

// The arithmetic type of a storage type T: half precision is stored in T but computed in
// float (one rounding per output instead of one per operation, as cuDNN does).
template <typename T> struct rnnxp_acc { typedef T type; };
template <> struct rnnxp_acc<float16> { typedef float type; };

// Activation kinds. rnn_xp/_fast/cupy_kernels.py reads the names and numbers from this enum:
// a canonical activation of rnn_xp.activations missing here runs on the reference path.
enum rnnxp_act_kind {
  RNNXP_Relu = 0,
  RNNXP_Tanh = 1,
  RNNXP_Sigmoid = 2,
  RNNXP_Affine = 3,
  RNNXP_LeakyRelu = 4,
  RNNXP_ThresholdedRelu = 5,
  RNNXP_ScaledTanh = 6,
  RNNXP_HardSigmoid = 7,
  RNNXP_Elu = 8,
  RNNXP_Softsign = 9,
  RNNXP_Softplus = 10,
  RNNXP_Selu = 11,
  RNNXP_Relu6 = 12,
  RNNXP_Silu = 13,
  RNNXP_HardSilu = 14,
  RNNXP_Exponential = 15,
  RNNXP_LogSigmoid = 16,
  RNNXP_HardTanh = 17,
  RNNXP_Mish = 18,
  RNNXP_TanhShrink = 19,
  RNNXP_Celu = 20,
  RNNXP_Gelu = 21,
  RNNXP_HardShrink = 22,
  RNNXP_SoftShrink = 23,
  RNNXP_SparsePlus = 24,
  RNNXP_SparseSigmoid = 25,
  RNNXP_Squareplus = 26
  // Softmax, LogSoftmax and Sparsemax are functions of a whole row, not of one element: no kernel
};

// clip(x, lo, hi) that keeps NaN (fmin/fmax would replace it by a bound).
template <typename F>
__device__ __forceinline__ F rnnxp_clamp(F x, F lo, F hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

template <typename F>
__device__ __forceinline__ F rnnxp_sigmoid(F x) {
  // e = exp(-|x|) lies in (0, 1]: it never overflows. sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) for
  // x < 0: one exp, one add, one correctly rounded division, each on a value of the result's own size,
  // so the float result stays within ~3 ULP of the exact sigmoid with errors of either sign
  // (tests/test_cuda_sources.py measures it). NOT 0.5*tanh(x/2)+0.5: for x << 0 that subtracts two
  // numbers near 0.5 and its float32 error reaches hundreds of ULP, mostly of one sign, which a long
  // sequence accumulates in the LSTM's cell state. exp, not the fast-math __expf (several ULP more).
  // NaN propagates (exp(NaN) is NaN).
  const F e = exp(-fabs(x));
  return (x >= F(0) ? F(1) : e) / (F(1) + e);
}

template <typename F>
__device__ __forceinline__ F rnnxp_softplus(F x) {
  // log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), stable for any x
  return (x < F(0) ? F(0) : x) + log1p(exp(-fabs(x)));
}

template <typename F>
__device__ __forceinline__ F rnnxp_elu(F x, F alpha) {
  // the negative branch only sees x < 0 (or NaN), so expm1 never overflows
  return x >= F(0) ? x : alpha * expm1(x);
}

template <typename F>
__device__ __forceinline__ F rnnxp_erf(F x) {
  // the reference's erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), not CUDA's: both paths agree to rounding
  const F t = F(1) / (F(1) + F(0.3275911) * fabs(x));
  const F poly = t * (F(0.254829592) + t * (F(-0.284496736) + t * (F(1.421413741) + t * (F(-1.453152027)
                 + t * F(1.061405429)))));
  const F y = F(1) - poly * exp(-x * x);
  return x >= F(0) ? y : -y;
}

// One activation function of x.
template <typename F>
__device__ __forceinline__ F rnnxp_apply(int kind, F x, F alpha, F beta) {
  switch (kind) {
    case RNNXP_Relu: return x < F(0) ? F(0) : x;
    case RNNXP_Tanh: return tanh(x);
    case RNNXP_Sigmoid: return rnnxp_sigmoid(x);
    case RNNXP_Affine: return alpha * x + beta;
    case RNNXP_LeakyRelu: return x >= F(0) ? x : alpha * x;
    case RNNXP_ThresholdedRelu: return x > alpha ? x : F(0);
    case RNNXP_ScaledTanh: return alpha * tanh(beta * x);
    case RNNXP_HardSigmoid: return rnnxp_clamp(alpha * x + beta, F(0), F(1));
    case RNNXP_Elu: return rnnxp_elu(x, alpha);
    case RNNXP_Softsign: return x / (F(1) + fabs(x));
    case RNNXP_Softplus: return rnnxp_softplus(x);
    case RNNXP_Selu: return beta * rnnxp_elu(x, alpha);
    case RNNXP_Relu6: return rnnxp_clamp(x, F(0), F(6));
    case RNNXP_Silu: return x * rnnxp_sigmoid(x);
    case RNNXP_HardSilu: return x * rnnxp_clamp(F(1.0 / 6.0) * x + F(0.5), F(0), F(1));
    case RNNXP_Exponential: return exp(x);
    case RNNXP_LogSigmoid: return -rnnxp_softplus(-x);
    case RNNXP_HardTanh: return rnnxp_clamp(x, F(-1), F(1));
    case RNNXP_Mish: return x * tanh(rnnxp_softplus(x));
    case RNNXP_TanhShrink: return x - tanh(x);
    case RNNXP_Celu: return x >= F(0) ? x : alpha * expm1(x / alpha);
    case RNNXP_Gelu: return F(0.5) * x * (F(1) + rnnxp_erf(x * F(0.7071067811865476)));
    case RNNXP_HardShrink: return fabs(x) > alpha ? x : F(0);
    case RNNXP_SoftShrink: return x > alpha ? x - alpha : (x < -alpha ? x + alpha : F(0));
    case RNNXP_SparsePlus: return x <= F(-1) ? F(0) : (x < F(1) ? F(0.25) * ((x + F(1)) * (x + F(1))) : x);
    case RNNXP_SparseSigmoid: return rnnxp_clamp(F(0.5) * (x + F(1)), F(0), F(1));
    case RNNXP_Squareplus: return F(0.5) * (x + sqrt(x * x + alpha));
  }
  // unreachable: the Python side passes only kinds of this enum; NaN makes a slip visible
  return F(0) / F(0);
}

// An activation of a gate's clipped input: ONNX's clip bounds the inputs of the gate activations
// (clip = +inf when the network has none; the comparisons leave x unchanged then).
template <typename F>
__device__ __forceinline__ F rnnxp_act(int kind, F x, F alpha, F beta, F clip) {
  return rnnxp_apply(kind, rnnxp_clamp(x, -clip, clip), alpha, beta);
}

// ACT(af, x): the cell function af of the gate input x clipped, with the kernel's parameters af_kind,
// af_alpha, af_beta and clip (every gate kernel takes them under these names; F is its arithmetic type).
// ACT_UNCLIPPED: the same function of x as it is (the LSTM's h(c): clip never bounds the cell state).
#define ACT(fn, x) rnnxp_act(fn##_kind, (x), F(fn##_alpha), F(fn##_beta), F(clip))
#define ACT_UNCLIPPED(fn, x) rnnxp_apply(fn##_kind, (x), F(fn##_alpha), F(fn##_beta))
