// rms_norm.cuh — the RMSNorm arithmetic, shared by every kernel that normalises (rms_norm.cu,
// rope.cu's q/k norm, quant_fp8.cu's fused norm -> FP8): one definition of what "normalised"
// means — sum of squares in f32, rstd = rsqrt(mean + eps), x · rstd · (w_off + w).
#pragma once

#include "common.cuh"

namespace wc {

// 1 / sqrt(mean(x²) + eps) from the row's sum of squares.
__device__ __forceinline__ float rms_rstd(float sum_squares, int hidden, float eps) {
  return rsqrtf(sum_squares / static_cast<float>(hidden) + eps);
}

// One normalised element: x · rstd · (w_off + w), in f32.
__device__ __forceinline__ float rms_normed(float x, float rstd, float w_off, float w) {
  return x * rstd * (w_off + w);
}

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

// out[k] = rms_normed(v[k]) for a packed vector; weight is VEC-aligned like v.
template <typename T, int VEC>
__device__ __forceinline__ void rms_normalize(const Pack<T, VEC>& v, const T* weight, float rstd, float w_off,
                                              float (&out)[VEC]) {
  const Pack<T, VEC> w = load_pack<T, VEC>(weight);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = rms_normed(to_float(v.v[k]), rstd, w_off, to_float(w.v[k]));
}

// residual = round(x + r), stored (r: the residual's pack, loaded by the caller); returns the
// rounded sum (what gets normalised).
template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> add_residual(const Pack<T, VEC>& x, const Pack<T, VEC>& r, T* residual) {
  Pack<T, VEC> s;
#pragma unroll
  for (int k = 0; k < VEC; ++k) s.v[k] = from_float<T>(to_float(x.v[k]) + to_float(r.v[k]));
  store_pack<T, VEC>(residual, s);
  return s;
}

// The same, loading the residual's pack here (one more dependent load: the register-resident
// kernels load it beside x instead).
template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> add_residual(const Pack<T, VEC>& x, T* residual) {
  return add_residual<T, VEC>(x, load_pack<T, VEC>(residual), residual);
}

}  // namespace wc
