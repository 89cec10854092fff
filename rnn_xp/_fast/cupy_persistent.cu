// Persistent recurrent kernels of rnn_xp/_fast/cupy_persistent.py: ONE launch runs every time step of a
// chunk of one layer and direction (rnn, lstm, gru with the reset after the recurrent matmul).
//
// Source layout: cupy_persistent.py prepends cupy_gates.cu (the activations, ACT/ACT_UNCLIPPED) and a
// forward declaration of CuPy's float16 to this file, and compiles the whole as one RawModule (NVRTC,
// no host headers). tests/test_persistent_sources.py compiles the same text with nvcc for sm_90, and
// with g++ as a host emulation (RNNXP_HOST_EMULATION: one host thread per block, blockDim 1).
//
// Design (bench/GPU_NOTES.md has the numbers):
// * The grid: NB blocks, NB <= the number of SMs, one block per SM, all resident at once (cooperative
//   launch where CuPy can do it; the Python side guarantees the resources otherwise). Unit split: block
//   k owns the hidden units j in [k*U, k*U + U): every gate row of those units, so the gate math of a
//   unit needs nothing from other blocks. Batch split (where all of W_hh fits one SM): block k owns
//   batch rows [k*BT, k*BT + BT) and every unit (U = H), keeps h_t in shared memory for the next step,
//   and needs no grid barrier (rnnxp_persistent's comment).
// * W_hh stays on chip: the block copies its G*U rows (each padded with zeros to ldw, a multiple of 4)
//   into shared memory once per launch and reads them for every step.
// * Per step: the previous h (B, H) is read from global memory through L2 (ld.global.cg: L1 is not
//   coherent across SMs; 64 bytes of loads in flight per thread), a batch tile of BT rows at a time,
//   into shared memory (a batch split reads it only at a launch's first step); the gate inputs of each
//   thread's first pair are loaded before h, so the two latencies overlap; each (unit, row) pair's
//   G dot products are split over S work items (partial sums over k = 4*lane + 4*S*i), reduced through
//   shared memory when S > 1; the owner of a pair does the gate math and writes h_t (the other half
//   of a global double buffer), c_t, the Keras "last output" and y_t. Then a grid-wide barrier (one
//   atomic counter, monotonic across the launches of one call: no reset) and the next step.
// * Work is written as block-stride loops over work items (never over threads), and every cross-thread
//   exchange is shared memory between __syncthreads(): the same code runs with any block size, 1
//   included, which is how the host emulation runs it.
// * Masks: a step updates h, c and last only where run[t, b]; y = last where emit[t, b], else 0;
//   without masks y = h_t (rnn_xp.forward.run_direction's semantics, element for element).
//
// Keep it plain C++ that NVRTC, nvcc and g++ accept: no host headers, no std::.

#ifndef RNNXP_HOST_EMULATION
// ---- device primitives ------------------------------------------------------------------------

template <typename F>
__device__ __forceinline__ F* rnnxp_shared() {
  extern __shared__ float4 rnnxp_smem_raw[];  // 16-byte aligned dynamic shared memory
  return reinterpret_cast<F*>(rnnxp_smem_raw);
}

// a load that bypasses L1: h was written by other SMs since this SM may last have cached the line
template <typename F>
__device__ __forceinline__ F rnnxp_load_cg(const F* p) { return __ldcg(p); }

__device__ __forceinline__ unsigned int rnnxp_load_acquire(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Grid-wide barrier: every block adds 1 to *counter and waits until it reaches target (the launch's
// base plus NB per barrier so far). __syncthreads + __threadfence on each side order the block's
// global writes before the arrival and the other blocks' writes before the block's next reads.
// Needs every block resident (see the top). A block that waits for ~2^26 polls (tens of seconds)
// traps rather than hanging the GPU for ever.
__device__ __forceinline__ void rnnxp_grid_barrier(unsigned int* counter, unsigned int target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    unsigned int polls = 0;
    while (static_cast<int>(rnnxp_load_acquire(counter) - target) < 0) {
      if (++polls > (1u << 26)) __trap();
    }
    __threadfence();
  }
  __syncthreads();
}

// four consecutive elements from shared memory (16-byte aligned for float)
template <typename F> struct rnnxp_quad { F x, y, z, w; };
template <typename F>
__device__ __forceinline__ rnnxp_quad<F> rnnxp_ld4(const F* p) {
  rnnxp_quad<F> q = {p[0], p[1], p[2], p[3]};
  return q;
}
template <>
__device__ __forceinline__ rnnxp_quad<float> rnnxp_ld4<float>(const float* p) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  rnnxp_quad<float> q = {v.x, v.y, v.z, v.w};
  return q;
}
#endif  // RNNXP_HOST_EMULATION

// ---- the kernel body ---------------------------------------------------------------------------

typedef long long rnnxp_idx;  // element offsets (no host headers: no ptrdiff_t)

enum rnnxp_cell { RNNXP_CELL_RNN = 0, RNNXP_CELL_LSTM = 1, RNNXP_CELL_GRU = 2 };

template <int CELL> struct rnnxp_gates { enum { G = CELL == RNNXP_CELL_RNN ? 1 : (CELL == RNNXP_CELL_LSTM ? 4 : 3) }; };

#define RNNXP_ACT_PARAMS(F)                                                                             \
  F clip, int af_kind, F af_alpha, F af_beta, int ag_kind, F ag_alpha, F ag_beta, int ah_kind,         \
  F ah_alpha, F ah_beta
#define RNNXP_ACT_ARGS clip, af_kind, af_alpha, af_beta, ag_kind, ag_alpha, ag_beta, ah_kind, ah_alpha, ah_beta

// Every parameter of a launch, in the kernels' argument order (cupy_persistent.py: PARAMS).
#define RNNXP_PERSIST_PARAMS(F)                                                                         \
  const F *gi, const F *w_hh, const F *b_hh, const F *p, F *hbuf, F *cbuf, F *last, F *y,              \
  const bool *run, const bool *emit, unsigned int *counter, int Tc, int B, int H, int U, int S, int BT,   \
  int ldw, int ldh, int k0, int bsplit, unsigned int bar_base, int reverse, int has_bh, int has_p,      \
  int input_forget, RNNXP_ACT_PARAMS(F)
#define RNNXP_PERSIST_ARGS                                                                              \
  gi, w_hh, b_hh, p, hbuf, cbuf, last, y, run, emit, counter, Tc, B, H, U, S, BT, ldw, ldh, k0, bsplit, \
  bar_base, reverse, has_bh, has_p, input_forget, RNNXP_ACT_ARGS

// x W_ih^T + b_ih of each gate of the (unit j, batch row b) pair at step t, from the chunk's projection.
template <typename F, int G>
__device__ __forceinline__ void rnnxp_load_gx(F* gx, const F* gi, int B, int H, int t, int b, int j) {
  const F* gx_row = gi + (static_cast<rnnxp_idx>(t) * B + b) * (G * H);
#pragma unroll
  for (int g = 0; g < G; ++g) gx[g] = gx_row[g * H + j];
}

// The gate math of one (unit j, batch row b) pair from its recurrent dot products acc[g] (no bias) and
// its gate inputs gx[g] (rnnxp_load_gx), and the state update. h_old is h_{t-1}[b, j] (from the
// shared-memory copy); hout is h_t's buffer; h_keep, when not null, gets h_t too (the block's on-chip
// copy for the next step, batch-split plans).
template <typename F, int CELL, bool MASKED>
__device__ __forceinline__ void rnnxp_finish(const F* b_hh, const F* p, F* hout, F* cbuf, F* last, F* y,
                                             const bool* run, const bool* emit, int B, int H, int has_bh,
                                             int has_p, int input_forget, RNNXP_ACT_PARAMS(F), const F* acc,
                                             const F* gx, int t, int b, int j, F h_old, F* h_keep) {
  (void)p; (void)has_p; (void)input_forget; (void)cbuf; (void)last; (void)run; (void)emit;
  (void)ag_kind; (void)ag_alpha; (void)ag_beta; (void)ah_kind; (void)ah_alpha; (void)ah_beta;
  const int G = rnnxp_gates<CELL>::G;
  const rnnxp_idx e = static_cast<rnnxp_idx>(b) * H + j;  // element (b, j) of a (B, H) state
  F gr[G];
#pragma unroll
  for (int g = 0; g < G; ++g) gr[g] = acc[g] + (has_bh ? b_hh[g * H + j] : F(0));  // h W_hh^T + b_hh
  // (indices are taken modulo G so that the branches of the other cells compile for every G)
  F h_new;
  F c_prev = F(0), c_new = F(0);
  if (CELL == RNNXP_CELL_RNN) {
    h_new = ACT(af, gx[0] + gr[0]);
  } else if (CELL == RNNXP_CELL_GRU) {
    const F r = ACT(af, gx[0] + gr[0]);
    const F z = ACT(af, gx[1 % G] + gr[1 % G]);
    const F n = ACT(ag, gx[2 % G] + r * gr[2 % G]);  // reset after the recurrent matmul
    h_new = (F(1) - z) * n + z * h_old;
  } else {
    F a_i = gx[0] + gr[0], a_f = gx[1 % G] + gr[1 % G], a_g = gx[2 % G] + gr[2 % G], a_o = gx[3 % G] + gr[3 % G];
    c_prev = cbuf[e];
    if (has_p) {  // ONNX peepholes: the input and forget gates see c_{t-1}
      a_i += p[j] * c_prev;
      a_f += p[H + j] * c_prev;
    }
    const F i_t = ACT(af, a_i);
    const F f_t = input_forget ? F(1) - i_t : ACT(af, a_f);  // coupled input-forget gate
    c_new = f_t * c_prev + i_t * ACT(ag, a_g);
    if (has_p) a_o += p[2 * H + j] * c_new;  // the output gate's peephole sees the new c_t
    const F o_t = ACT(af, a_o);
    h_new = o_t * ACT_UNCLIPPED(ah, c_new);  // clip never bounds c
  }
  const rnnxp_idx ye = (static_cast<rnnxp_idx>(t) * B + b) * H + j;
  if (MASKED) {
    const bool take = run[static_cast<rnnxp_idx>(t) * B + b];
    const F h_t = take ? h_new : h_old;
    hout[e] = h_t;
    if (h_keep) *h_keep = h_t;
    if (CELL == RNNXP_CELL_LSTM) cbuf[e] = take ? c_new : c_prev;
    const F last_new = take ? h_new : last[e];  // the last output, repeated on masked steps (Keras)
    last[e] = last_new;
    y[ye] = emit[static_cast<rnnxp_idx>(t) * B + b] ? last_new : F(0);
  } else {
    hout[e] = h_new;
    if (h_keep) *h_keep = h_new;
    if (CELL == RNNXP_CELL_LSTM) cbuf[e] = c_new;
    y[ye] = h_new;
  }
}

// h_{t-1} rows [bt0, bt0 + nb) of (B, H) into shared memory rows of ldh: the 64 bytes of loads of each
// thread (16 floats, 8 doubles) are issued before any of their stores, so their L2 latencies overlap
// rather than add up.
template <typename F>
__device__ __forceinline__ void rnnxp_load_h(F* h_s, const F* hin, int bt0, int nb, int H, int ldh, int tid,
                                             int nt) {
  enum { M = 64 / sizeof(F) };
  const int n = nb * H;
  const F* src = hin + static_cast<rnnxp_idx>(bt0) * H;
  for (int i0 = tid; i0 < n; i0 += M * nt) {
    F v[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int i = i0 + m * nt;
      v[m] = i < n ? rnnxp_load_cg(src + i) : F(0);
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int i = i0 + m * nt;
      if (i < n) {
        const int bb = i / H, k = i - bb * H;
        h_s[bb * ldh + k] = v[m];
      }
    }
  }
}

// Two ways to split the work over the NB blocks (cupy_persistent.plan picks one):
// * unit split (bsplit == 0): block k owns units [k*U, k*U + U) for every batch row; the blocks exchange
//   h through global memory (L2) and meet at a grid barrier each step;
// * batch split (bsplit != 0, U == H): block k owns batch rows [k*BT, k*BT + BT) for every unit, so it
//   holds all of W_hh and needs nothing from other blocks: h_t stays in shared memory for the next step
//   (h_s and h_n swap), and a step ends at the block's own barrier. h_t still goes to hbuf (the final
//   state, the next chunk's launch).
template <typename F, int CELL, bool MASKED>
__device__ __forceinline__ void rnnxp_persistent(RNNXP_PERSIST_PARAMS(F)) {
  const int G = rnnxp_gates<CELL>::G;
  F* w_s = rnnxp_shared<F>();         // (G*U, ldw): this block's rows of W_hh, zero padded
  F* h_s = w_s + G * U * ldw;         // (BT, ldh): a batch tile of h_{t-1}, zero padded
  F* h_n = h_s + BT * ldh;            // batch split: (BT, ldh), the tile's h_t for the next step
  F* red = h_n + (bsplit ? BT * ldh : 0);  // (U*BT, S, G): partial dot products when S > 1
  const int tid = threadIdx.x, nt = blockDim.x, nblk = gridDim.x;
  const int j0 = bsplit ? 0 : blockIdx.x * U;
  const int b_lo = bsplit ? blockIdx.x * BT : 0;
  const int b_hi = bsplit ? (B - b_lo < BT ? B : b_lo + BT) : B;

  for (int i = tid; i < G * U * ldw; i += nt) {
    const int r = i / ldw, k = i - r * ldw, g = r / U, j = j0 + (r - g * U);
    w_s[i] = (k < H && j < H) ? w_hh[(static_cast<rnnxp_idx>(g) * H + j) * H + k] : F(0);
  }
  // the padding stays zero (W's padding is zero too): both tiles of a batch split
  for (int i = tid; i < (bsplit ? 2 : 1) * BT * ldh; i += nt) h_s[i] = F(0);
  __syncthreads();

  for (int s = 0; s < Tc; ++s) {
    const int t = reverse ? Tc - 1 - s : s;
    const int parity = (k0 + s) & 1;
    const F* hin = hbuf + static_cast<rnnxp_idx>(parity) * B * H;  // h_{t-1}
    F* hout = hbuf + static_cast<rnnxp_idx>(parity ^ 1) * B * H;    // h_t
    for (int bt0 = b_lo; bt0 < b_hi; bt0 += BT) {
      const int nb = b_hi - bt0 < BT ? b_hi - bt0 : BT;
      const int npairs = U * nb;
      __syncthreads();  // the previous tile's readers of h_s and red are done
      // the gate inputs of this thread's first pair (pair tid), loaded now: their latency overlaps h's
      F gx_first[G];
      const int u_first = tid / nb, bb_first = tid - u_first * nb;
      const bool first = tid < npairs && j0 + u_first < H;
      if (first) rnnxp_load_gx<F, G>(gx_first, gi, B, H, t, bt0 + bb_first, j0 + u_first);
      if (!bsplit || s == 0) rnnxp_load_h(h_s, hin, bt0, nb, H, ldh, tid, nt);
      __syncthreads();
      for (int w = tid; w < npairs * S; w += nt) {
        const int pr = w / S, lane = w - pr * S, u = pr / nb, bb = pr - u * nb;
        F acc[G];
#pragma unroll
        for (int g = 0; g < G; ++g) acc[g] = F(0);
        const F* hrow = h_s + bb * ldh;
        for (int k = 4 * lane; k < ldw; k += 4 * S) {
          const rnnxp_quad<F> hv = rnnxp_ld4(hrow + k);
#pragma unroll
          for (int g = 0; g < G; ++g) {
            const rnnxp_quad<F> wv = rnnxp_ld4(w_s + (g * U + u) * ldw + k);
            acc[g] += wv.x * hv.x;
            acc[g] += wv.y * hv.y;
            acc[g] += wv.z * hv.z;
            acc[g] += wv.w * hv.w;
          }
        }
        if (S == 1) {
          if (j0 + u < H) {
            F gx[G];
            if (pr == tid) {
#pragma unroll
              for (int g = 0; g < G; ++g) gx[g] = gx_first[g];
            } else {
              rnnxp_load_gx<F, G>(gx, gi, B, H, t, bt0 + bb, j0 + u);
            }
            rnnxp_finish<F, CELL, MASKED>(b_hh, p, hout, cbuf, last, y, run, emit, B, H, has_bh, has_p,
                                          input_forget, RNNXP_ACT_ARGS, acc, gx, t, bt0 + bb, j0 + u,
                                          hrow[j0 + u], bsplit ? h_n + bb * ldh + j0 + u : 0);
          }
        } else {
#pragma unroll
          for (int g = 0; g < G; ++g) red[w * G + g] = acc[g];
        }
      }
      if (S > 1) {
        __syncthreads();
        for (int pr = tid; pr < npairs; pr += nt) {
          const int u = pr / nb, bb = pr - u * nb;
          if (j0 + u >= H) continue;
          F acc[G];
#pragma unroll
          for (int g = 0; g < G; ++g) acc[g] = F(0);
          for (int lane = 0; lane < S; ++lane) {
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g] += red[(pr * S + lane) * G + g];
          }
          F gx[G];
          if (pr == tid) {
#pragma unroll
            for (int g = 0; g < G; ++g) gx[g] = gx_first[g];
          } else {
            rnnxp_load_gx<F, G>(gx, gi, B, H, t, bt0 + bb, j0 + u);
          }
          rnnxp_finish<F, CELL, MASKED>(b_hh, p, hout, cbuf, last, y, run, emit, B, H, has_bh, has_p,
                                        input_forget, RNNXP_ACT_ARGS, acc, gx, t, bt0 + bb, j0 + u,
                                        h_s[bb * ldh + j0 + u], bsplit ? h_n + bb * ldh + j0 + u : 0);
        }
      }
    }
    if (bsplit) {
      // the next step reads the h_t this block kept (the __syncthreads at the tile's start orders it)
      F* tmp = h_s;
      h_s = h_n;
      h_n = tmp;
    } else if (s + 1 < Tc) {
      // every block's h_t is written before any block reads it (the last step needs no barrier:
      // the launch's end orders it before whatever runs next on the stream)
      rnnxp_grid_barrier(counter, bar_base + static_cast<unsigned int>(s + 1) * nblk);
    }
  }
}

// ---- the named kernels: rnnxp_persist_<cell>[_masked]_<f32|f64> -----------------------------------

#define RNNXP_PERSIST_KERNEL(NAME, F, CELL, MASKED)                                    \
  extern "C" __global__ void __launch_bounds__(RNNXP_PERSIST_MAX_THREADS, 1)           \
  NAME(RNNXP_PERSIST_PARAMS(F)) {                                                     \
    rnnxp_persistent<F, CELL, MASKED>(RNNXP_PERSIST_ARGS);                             \
  }

#define RNNXP_PERSIST_MAX_THREADS 512

RNNXP_PERSIST_KERNEL(rnnxp_persist_rnn_f32, float, RNNXP_CELL_RNN, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_rnn_masked_f32, float, RNNXP_CELL_RNN, true)
RNNXP_PERSIST_KERNEL(rnnxp_persist_lstm_f32, float, RNNXP_CELL_LSTM, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_lstm_masked_f32, float, RNNXP_CELL_LSTM, true)
RNNXP_PERSIST_KERNEL(rnnxp_persist_gru_f32, float, RNNXP_CELL_GRU, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_gru_masked_f32, float, RNNXP_CELL_GRU, true)
RNNXP_PERSIST_KERNEL(rnnxp_persist_rnn_f64, double, RNNXP_CELL_RNN, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_rnn_masked_f64, double, RNNXP_CELL_RNN, true)
RNNXP_PERSIST_KERNEL(rnnxp_persist_lstm_f64, double, RNNXP_CELL_LSTM, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_lstm_masked_f64, double, RNNXP_CELL_LSTM, true)
RNNXP_PERSIST_KERNEL(rnnxp_persist_gru_f64, double, RNNXP_CELL_GRU, false)
RNNXP_PERSIST_KERNEL(rnnxp_persist_gru_masked_f64, double, RNNXP_CELL_GRU, true)
