// glu.cuh — the gate activations of a gated MLP (wc_glu_activation), in f32: what wc_glu
// (elementwise.cu) and wc_glu_quant_fp8 (quant_fp8.cu) compute, one definition. The reference is
// reference::mlp::GluActivation::apply (f64).
#pragma once

#include "common.cuh"

namespace wc {

// One activation, chosen at compile time: the kernels are templated on it (no switch per element).
template <wc_glu_activation ACT>
__device__ __forceinline__ float glu_activate(float x) {
  if constexpr (ACT == WC_GLU_GELU_TANH) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  } else if constexpr (ACT == WC_GLU_RELU2) {
    const float r = fmaxf(x, 0.0f);
    return r * r;
  } else {  // WC_GLU_SILU; expf (not __expf): the reference computes in f64.
    // __fdividef (x times the reciprocal, 2 ulp) rather than the IEEE division, whose slow
    // path made each element a branch region the compiler could not overlap. Large negative x:
    // 1 + e^-x past 2^126 gives -0 for x · e^x (below 1e-36); x = -inf gives NaN, as x / inf.
    return __fdividef(x, 1.0f + expf(-x));
  }
}

// Whether the launchers know the activation.
inline bool glu_activation_known(wc_glu_activation act) {
  return act == WC_GLU_SILU || act == WC_GLU_GELU_TANH || act == WC_GLU_RELU2;
}

}  // namespace wc
