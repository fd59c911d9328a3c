// matmul_ternary.cuh — what the ternary GEMM's two files share: the epilogue of one output
// element (so that every kernel rounds identically) and the Hopper kernel's launcher.
#pragma once

#include "common.cuh"

namespace wc {

// out[row, col] from the exact sum v = Σ q · v; qs = q_scale[row]: ((v / qs) (+ bias)) · w_scale,
// one rounding to OutT.
template <typename OutT>
__device__ __forceinline__ void ternary_store_out(const wc_matmul_ternary_params& p, int64_t row, int64_t col, int32_t v,
                                                  float qs) {
  float y = static_cast<float>(v) / qs;
  if (p.bias != nullptr) y += to_float(static_cast<const OutT*>(p.bias)[col]);
  static_cast<OutT*>(p.out)[row * p.ldo + col] = from_float<OutT>(y * p.w_scale);
}

// The Hopper prefill tile's block_m: the tokens of one CTA (matmul_ternary_sm90.cu, sm_90a).
constexpr int kTernarySm90BlockM = 64;
// That tile's launcher: launches it for p
// (checked by wc_matmul_ternary); WC_ERR_UNSUPPORTED with k_splits > 1 or on a device other
// than compute capability 9.0.
wc_status launch_matmul_ternary_sm90(const wc_matmul_ternary_params& p, cudaStream_t s);

}  // namespace wc
