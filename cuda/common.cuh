// common.cuh — what every kernel file shares: element types and conversions, packed vector
// loads/stores, index loads, warp/block reductions, the RMS-normalisation arithmetic, and the
// dtype dispatch macro. Nothing op-specific.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "warpcore.h"

namespace wc {

// ------------------------------------------------------------------ element conversions
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// FP8 e4m3 (WC_E4M3, "e4m3fn"): round to nearest even, finite overflow and ±inf saturate to
// ±448, NaN stays NaN — the same rounding as the host's F8E4M3::from_f64_sat.
__device__ __forceinline__ float to_float(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ __nv_fp8_e4m3 from_float<__nv_fp8_e4m3>(float v) {
  __nv_fp8_e4m3 r;
  r.__x = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  return r;
}

// ------------------------------------------------------------------ packed vectors
// N elements of T moved as one aligned load/store (N * sizeof(T) in {2, 4, 8, 16} bytes:
// LDG/STG .16/.32/.64/.128). Callers guarantee the alignment (see aligned_to()).
template <typename T, int N>
struct alignas(N * sizeof(T)) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVec16 = 16 / sizeof(T);

// M contiguous elements: one M-wide access when VECTOR (the caller guarantees M * sizeof(T)
// alignment), else M scalar accesses (any alignment).
template <typename T, int M, bool VECTOR>
__device__ __forceinline__ Pack<T, M> load_elems(const T* p) {
  if constexpr (VECTOR) {
    return load_pack<T, M>(p);
  } else {
    Pack<T, M> r;
#pragma unroll
    for (int i = 0; i < M; ++i) r.v[i] = p[i];
    return r;
  }
}
template <typename T, int M, bool VECTOR>
__device__ __forceinline__ void store_elems(T* p, const Pack<T, M>& v) {
  if constexpr (VECTOR) {
    store_pack<T, M>(p, v);
  } else {
#pragma unroll
    for (int i = 0; i < M; ++i) p[i] = v.v[i];
  }
}

// ------------------------------------------------------------------ index arrays
// Element i of an int32 or int64 array (positions, slot mappings): the width is a run-time flag
// (uniform across the grid), so one kernel serves both.
__device__ __forceinline__ int64_t load_index(const void* p, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// True when every pointer is `bytes`-aligned (host side: choosing the vector width).
inline bool aligned_to(int bytes, const void* a, const void* b = nullptr, const void* c = nullptr,
                       const void* d = nullptr) {
  auto ok = [bytes](const void* p) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; };
  return ok(a) && ok(b) && ok(c) && ok(d);
}

// ------------------------------------------------------------------ 64-bit index arithmetic
__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// ------------------------------------------------------------------ reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x is a multiple of 32.
// `scratch` is 32 floats of shared memory; the trailing barrier makes it reusable.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// ------------------------------------------------------------------ RMS normalisation
// The arithmetic of RMSNorm, shared by every kernel that normalises (rms_norm.cu, rope.cu):
// sum of squares in f32, then x * rstd * (w_off + w) with rstd = rsqrt(mean + eps).
template <typename T, int VEC>
__device__ __forceinline__ float sum_squares(const Pack<T, VEC>& v) {
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const float f = to_float(v.v[k]);
    s = fmaf(f, f, s);
  }
  return s;
}

// out[k] = v[k] * rstd * (w_off + weight[k]) in f32; weight is VEC-aligned like v.
template <typename T, int VEC>
__device__ __forceinline__ void rms_normalize(const Pack<T, VEC>& v, const T* weight, float rstd, float w_off,
                                              float (&out)[VEC]) {
  const Pack<T, VEC> w = load_pack<T, VEC>(weight);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = to_float(v.v[k]) * rstd * (w_off + to_float(w.v[k]));
}

// ------------------------------------------------------------------ prefix sums
// Inclusive prefix sum over the warp's lanes (all 32 lanes take part).
__device__ __forceinline__ int warp_inclusive_scan(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += n;
  }
  return v;
}

// Exclusive prefix sum over the block in thread order; *total gets the block's sum (every
// thread). blockDim.x is a multiple of 32; `scratch` is 32 ints of shared memory; the trailing
// barrier makes it reusable.
__device__ __forceinline__ int block_exclusive_scan(int v, int* scratch, int* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  const int inc = warp_inclusive_scan(v);
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  const int w = lane < num_warps ? scratch[lane] : 0;
  const int winc = warp_inclusive_scan(w);
  const int warp_prefix = __shfl_sync(0xffffffffu, winc - w, warp);
  *total = __shfl_sync(0xffffffffu, winc, 31);
  __syncthreads();
  return warp_prefix + inc - v;
}

// Status of the launch just made (asynchronous errors surface at the next sync).
inline wc_status launch_status() { return static_cast<wc_status>(cudaGetLastError()); }

}  // namespace wc

// Runs `...` (which must `return` a wc_status) with `T` bound to the element type of `dtype`.
// Unknown dtypes return WC_ERR_UNSUPPORTED: the Rust side never sends one, this is the guard.
#define WC_DISPATCH_DTYPE(dtype, T, ...)                          \
  switch (dtype) {                                                \
    case WC_F32: { using T = float; __VA_ARGS__ }                 \
    case WC_F16: { using T = __half; __VA_ARGS__ }                \
    case WC_BF16: { using T = __nv_bfloat16; __VA_ARGS__ }        \
    default: break;                                               \
  }                                                               \
  return WC_ERR_UNSUPPORTED;
