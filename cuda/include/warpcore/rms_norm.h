/*
 * warpcore/rms_norm.h — RMSNorm family: rms_norm, fused_add_rms_norm, qk_rms_norm (cuda/rms_norm.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_RMS_NORM_H
#define WARPCORE_RMS_NORM_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * (weight_offset + weight)
 * weight_offset = 0 (Llama) or 1 (Gemma). f32 accumulation, one rounding at the store. */
typedef struct wc_rms_norm_params {
  const void* x;        /* [num_tokens, hidden], row stride x_stride */
  const void* weight;   /* [hidden], contiguous */
  void* out;            /* [num_tokens, hidden], row stride out_stride; may equal x (in place) */
  int64_t num_tokens;
  int64_t hidden;
  int64_t x_stride;
  int64_t out_stride;
  float eps;
  float weight_offset;
  wc_dtype dtype;
} wc_rms_norm_params;
wc_status wc_rms_norm(const wc_rms_norm_params* p, wc_stream stream);

/* In place, one pass:  residual[t, :] = round(x[t, :] + residual[t, :]);
 *                      x[t, :] = rms_norm(residual[t, :]) (the rounded residual). */
typedef struct wc_fused_add_rms_norm_params {
  void* x;              /* [num_tokens, hidden], row stride x_stride */
  void* residual;       /* [num_tokens, hidden], row stride residual_stride */
  const void* weight;   /* [hidden], contiguous */
  int64_t num_tokens;
  int64_t hidden;
  int64_t x_stride;
  int64_t residual_stride;
  float eps;
  float weight_offset;
  wc_dtype dtype;
} wc_fused_add_rms_norm_params;
wc_status wc_fused_add_rms_norm(const wc_fused_add_rms_norm_params* p, wc_stream stream);

/* Per-head RMSNorm over head_dim, in place, q and k in one launch (Qwen3 q_norm / k_norm):
 * heads [0, num_q_heads) use q_weight, heads [num_q_heads, num_q_heads + num_kv_heads) use
 * k_weight. qk is typically the first num_q_heads + num_kv_heads heads of a fused QKV buffer. */
typedef struct wc_qk_rms_norm_params {
  void* qk;             /* [num_tokens, num_q_heads + num_kv_heads, head_dim] */
  const void* q_weight; /* [head_dim] */
  const void* k_weight; /* [head_dim] */
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t token_stride;
  int64_t head_stride;
  float eps;
  float weight_offset;
  wc_dtype dtype;
} wc_qk_rms_norm_params;
wc_status wc_qk_rms_norm(const wc_qk_rms_norm_params* p, wc_stream stream);

/* Largest head_dim wc_qk_rms_norm takes (a warp holds one head in registers). */
#define WC_QK_NORM_MAX_HEAD_DIM 512

WC_EXTERN_C_END

#endif /* WARPCORE_RMS_NORM_H */
