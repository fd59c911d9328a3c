// glu.cuh — the gate activations of a gated MLP (wc_glu_activation), in f32: what wc_glu
// (elementwise.cu) and wc_glu_quant_fp8 (quant_fp8.cu) compute, one definition. The reference is
// reference::mlp::GluActivation::apply (f64).
#pragma once

#include "common.cuh"

namespace wc {

__device__ __forceinline__ float glu_activate(float x, wc_glu_activation act) {
  switch (act) {
    case WC_GLU_GELU_TANH: {
      const float k = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case WC_GLU_RELU2: {
      const float r = fmaxf(x, 0.0f);
      return r * r;
    }
    default:  // WC_GLU_SILU; expf (not __expf): the reference computes in f64.
      return x / (1.0f + expf(-x));
  }
}

// Whether the launchers know the activation.
inline bool glu_activation_known(wc_glu_activation act) {
  return act == WC_GLU_SILU || act == WC_GLU_GELU_TANH || act == WC_GLU_RELU2;
}

}  // namespace wc
