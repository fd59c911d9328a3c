// rms_norm.cu — the RMSNorm family: rms_norm, fused_add_rms_norm, qk_rms_norm.
//
// Contract (see warpcore/rms_norm.h): rows of `hidden` elements (bf16 / f16 / f32), any row stride,
// f32 accumulation, one rounding at each store. out = x * rsqrt(mean(x^2) + eps) * (w_off + w).
// fused_add_rms_norm first stores residual = round(x + residual) and normalises that rounded
// value, so the stored residual and the output agree exactly with the reference.
//
// Roofline: these ops do ~4 FLOPs per element and move 2 (rms_norm) or 4 (fused add) element
// streams, so they are purely bandwidth-bound: the floor is bytes / copy bandwidth. On the
// H200 (4.06 TB/s measured copy) rms_norm bf16 [16384, 4096] moves 268 MB -> 66 us.
//
// Thread mapping:
//   rows_regs  one block per row; each thread keeps VPT packed vectors of VEC elements in
//              registers, so x is read from memory once. Used when the row fits
//              (hidden <= 1024 * 4 * VEC) and the 16-byte vector path applies.
//   rows_loop  one block of 1024 threads per row, two passes over the row (the second pass
//              re-reads x from L2). Any hidden size, any alignment (VEC = 1 is the tail-safe
//              scalar path for odd sizes, odd strides or pointers not 16-byte aligned).
//   qk_heads   one warp per (token, head); a head (<= 512 elements) lives in the warp's
//              registers; q and k heads in one launch.
#include "common.cuh"
#include "rms_norm.cuh"

namespace wc {
namespace {

constexpr int kMaxThreads = 1024;

// Normalise one packed vector of the row (rms_norm.cuh's rms_normalize) and store it.
template <typename T, int VEC>
__device__ __forceinline__ void store_normed(T* dst, const Pack<T, VEC>& v, const T* weight,
                                             float rstd, float w_off) {
  float f[VEC];
  rms_normalize<T, VEC>(v, weight, rstd, w_off, f);
  Pack<T, VEC> o;
#pragma unroll
  for (int k = 0; k < VEC; ++k) o.v[k] = from_float<T>(f[k]);
  store_pack<T, VEC>(dst, o);
}

// x and out may alias (in place; fused_add passes out = x), hence no __restrict__ on them.
template <typename T, int VEC, int VPT, bool ADD>
__global__ void __launch_bounds__(kMaxThreads)
rows_regs_kernel(const T* x, T* out, T* residual, const T* __restrict__ weight, int64_t x_stride,
                 int64_t out_stride, int64_t res_stride, int hidden, float eps, float w_off) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int nvec = hidden / VEC;
  const T* xr = x + row * x_stride;
  T* rr = ADD ? residual + row * res_stride : nullptr;

  // The vectors as 16-byte words (VEC = kVec16<T>): held as Pack<T, 8>, each 16-bit element took
  // a register, and at VPT 2 the bf16 fused add went to 42 registers (2 blocks an SM instead of
  // 4) with the second vector's loads issued only after the first was consumed (2026-12-03,
  // from the SASS). Same arithmetic, in the same order, as add_residual and sum_squares
  // (calling them on the words reinterpreted as a Pack gives 36 registers: 3 blocks an SM).
  static_assert(VEC * sizeof(T) == 16, "the register kernel moves 16-byte vectors");
  uint4 v[VPT], r[ADD ? VPT : 1];
#pragma unroll
  for (int j = 0; j < VPT; ++j) {  // all loads first (x and residual): independent 16-byte loads in flight
    const int i = threadIdx.x + j * blockDim.x;
    if (i < nvec) {
      v[j] = *reinterpret_cast<const uint4*>(xr + i * VEC);
      if constexpr (ADD) r[j] = *reinterpret_cast<const uint4*>(rr + i * VEC);
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < nvec) {
      if constexpr (ADD) {  // residual = round(x + residual), stored; v becomes it
        float f[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) f[k] = elem_of<T>(v[j], k) + elem_of<T>(r[j], k);
        v[j] = floats_to_words<T>(f);
        *reinterpret_cast<uint4*>(rr + i * VEC) = v[j];
      }
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float e = elem_of<T>(v[j], k);
        s = fmaf(e, e, s);
      }
      ss += s;
    }
  }
  const float rstd = rms_rstd(block_sum(ss, scratch), hidden, eps);
  T* outr = out + row * out_stride;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < nvec) store_normed<T, VEC>(outr + i * VEC, *reinterpret_cast<const Pack<T, VEC>*>(&v[j]), weight + i * VEC, rstd, w_off);
  }
}

template <typename T, int VEC, bool ADD>
__global__ void __launch_bounds__(kMaxThreads)
rows_loop_kernel(const T* x, T* out, T* residual, const T* __restrict__ weight, int64_t x_stride,
                 int64_t out_stride, int64_t res_stride, int hidden, float eps, float w_off) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int nvec = hidden / VEC;
  const T* xr = x + row * x_stride;
  T* rr = ADD ? residual + row * res_stride : nullptr;

  float ss = 0.0f;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    Pack<T, VEC> v = load_pack<T, VEC>(xr + i * VEC);
    if constexpr (ADD) v = add_residual<T, VEC>(v, rr + i * VEC);
    ss += sum_squares<T, VEC>(v);
  }
  const float rstd = rms_rstd(block_sum(ss, scratch), hidden, eps);
  // Second pass: each thread re-reads exactly the elements it read (or wrote) itself.
  const T* src = ADD ? rr : xr;
  T* outr = out + row * out_stride;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x)
    store_normed<T, VEC>(outr + i * VEC, load_pack<T, VEC>(src + i * VEC), weight + i * VEC, rstd, w_off);
}

int round_up_warp(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

template <typename T, int VEC, bool ADD>
void launch_rows_vec(const T* x, T* out, T* residual, const T* weight, int64_t rows, int64_t hidden,
                     int64_t xs, int64_t os, int64_t rs, float eps, float w_off, cudaStream_t s) {
  const int64_t nvec = hidden / VEC;
  const int h = static_cast<int>(hidden);
  const dim3 grid(static_cast<unsigned>(rows));
  auto threads = [nvec](int vpt) { return round_up_warp((nvec + vpt - 1) / vpt); };
#define WC_ROWS_REGS(VPT, THREADS) \
  rows_regs_kernel<T, VEC, VPT, ADD><<<grid, THREADS, 0, s>>>(x, out, residual, weight, xs, os, rs, h, eps, w_off)
  // Prefer <= 512 threads per row (several rows per SM) with more vectors per thread, then
  // up to 1024 threads; VPT stops at 4 (VPT = 8 spills under the 1024-thread register cap).
  // The scalar path (VEC = 1) always loops: it is the correctness path for odd layouts.
  if constexpr (VEC > 1) {
    if (threads(1) <= 512) return WC_ROWS_REGS(1, threads(1));
    if (threads(2) <= 512) return WC_ROWS_REGS(2, threads(2));
    if (threads(4) <= kMaxThreads) return WC_ROWS_REGS(4, threads(4));
  }
  rows_loop_kernel<T, VEC, ADD><<<grid, kMaxThreads, 0, s>>>(x, out, residual, weight, xs, os, rs, h, eps, w_off);
#undef WC_ROWS_REGS
}

template <typename T, bool ADD>
wc_status launch_rows(const void* x, void* out, void* residual, const void* weight, int64_t rows,
                      int64_t hidden, int64_t xs, int64_t os, int64_t rs, float eps, float w_off,
                      cudaStream_t s) {
  if (rows <= 0) return WC_OK;
  if (hidden <= 0 || hidden > INT32_MAX || rows > INT32_MAX) return WC_ERR_INVALID_ARG;
  constexpr int V = kVec16<T>;
  const bool vec = hidden % V == 0 && xs % V == 0 && os % V == 0 && (!ADD || rs % V == 0) &&
                   aligned_to(16, x, out, residual, weight);
  auto* xt = static_cast<const T*>(x);
  auto* ot = static_cast<T*>(out);
  auto* rt = static_cast<T*>(residual);
  auto* wt = static_cast<const T*>(weight);
  if (vec) launch_rows_vec<T, V, ADD>(xt, ot, rt, wt, rows, hidden, xs, os, rs, eps, w_off, s);
  else launch_rows_vec<T, 1, ADD>(xt, ot, rt, wt, rows, hidden, xs, os, rs, eps, w_off, s);
  return launch_status();
}

// ------------------------------------------------------------------ per-head q/k norm
constexpr int kQkWarps = 8;

template <typename T, int VEC>
__global__ void __launch_bounds__(kQkWarps * 32)
qk_heads_kernel(T* qk, const T* __restrict__ q_weight, const T* __restrict__ k_weight, int64_t num_rows,
                int heads, int num_q_heads, int head_dim, int64_t token_stride, int64_t head_stride,
                float eps, float w_off) {
  constexpr int kIters = (WC_QK_NORM_MAX_HEAD_DIM / VEC + 31) / 32;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kQkWarps + (threadIdx.x >> 5);
  if (row >= num_rows) return;  // whole warps exit together: no shuffle is left half-full
  const int64_t token = row / heads;
  const int head = static_cast<int>(row - token * heads);
  T* p = qk + token * token_stride + head * head_stride;
  const T* w = head < num_q_heads ? q_weight : k_weight;
  const int nvec = head_dim / VEC;

  Pack<T, VEC> v[kIters];
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const int i = lane + 32 * j;
    if (i < nvec) v[j] = load_pack<T, VEC>(p + i * VEC);
  }
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < kIters; ++j)
    if (lane + 32 * j < nvec) ss += sum_squares<T, VEC>(v[j]);
  const float rstd = rms_rstd(warp_sum(ss), head_dim, eps);
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const int i = lane + 32 * j;
    if (i < nvec) store_normed<T, VEC>(p + i * VEC, v[j], w + i * VEC, rstd, w_off);
  }
}

template <typename T>
wc_status launch_qk(const wc_qk_rms_norm_params& p, cudaStream_t s) {
  const int64_t heads = p.num_q_heads + p.num_kv_heads;
  const int64_t rows = p.num_tokens * heads;
  if (rows <= 0) return WC_OK;
  if (p.head_dim <= 0 || p.head_dim > WC_QK_NORM_MAX_HEAD_DIM || p.num_q_heads < 0 || p.num_kv_heads < 0)
    return WC_ERR_INVALID_ARG;
  const int64_t blocks = (rows + kQkWarps - 1) / kQkWarps;
  if (blocks > INT32_MAX) return WC_ERR_INVALID_ARG;
  // Widest vector that divides the head, keeps >= 32 vectors per head when it can (no idle
  // lanes), and matches the pointers' and strides' alignment.
  int vec = kVec16<T>;
  while (vec > 1 && (p.head_dim % vec != 0 || p.head_dim / vec < 32 || p.token_stride % vec != 0 ||
                     p.head_stride % vec != 0 ||
                     !aligned_to(vec * static_cast<int>(sizeof(T)), p.qk, p.q_weight, p.k_weight)))
    vec /= 2;
  auto* qk = static_cast<T*>(p.qk);
  auto* qw = static_cast<const T*>(p.q_weight);
  auto* kw = static_cast<const T*>(p.k_weight);
  const int nq = static_cast<int>(p.num_q_heads), hd = static_cast<int>(p.head_dim), h = static_cast<int>(heads);
#define WC_QK(VEC)                                                                                 \
  qk_heads_kernel<T, VEC><<<static_cast<unsigned>(blocks), kQkWarps * 32, 0, s>>>(                 \
      qk, qw, kw, rows, h, nq, hd, p.token_stride, p.head_stride, p.eps, p.weight_offset)
  switch (vec) {
    case 8: if constexpr (kVec16<T> >= 8) WC_QK(8); break;
    case 4: WC_QK(4); break;
    case 2: WC_QK(2); break;
    default: WC_QK(1); break;
  }
#undef WC_QK
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_rms_norm(const wc_rms_norm_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, {
    return wc::launch_rows<T, false>(p->x, p->out, nullptr, p->weight, p->num_tokens, p->hidden, p->x_stride,
                                     p->out_stride, 0, p->eps, p->weight_offset, s);
  });
}

extern "C" wc_status wc_fused_add_rms_norm(const wc_fused_add_rms_norm_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, {
    return wc::launch_rows<T, true>(p->x, p->x, p->residual, p->weight, p->num_tokens, p->hidden, p->x_stride,
                                    p->x_stride, p->residual_stride, p->eps, p->weight_offset, s);
  });
}

extern "C" wc_status wc_qk_rms_norm(const wc_qk_rms_norm_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_qk<T>(*p, s); });
}
