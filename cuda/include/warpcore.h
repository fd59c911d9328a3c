/*
 * warpcore.h — the C ABI between the CUDA kernels (the .cu files under cuda/) and the Rust crate.
 *
 * Pure C, no CUDA headers: bindgen reads this file only. Every op has one POD params struct
 * `wc_<op>_params` and one launcher `wc_<op>(const params*, wc_stream)` that returns a
 * wc_status. Strides and sizes are in elements and are int64_t. The Rust wrappers validate
 * everything before calling; the launchers' own checks are a last guard.
 */
#ifndef WARPCORE_H
#define WARPCORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. The values are part of the ABI (mirrored by Rust's DType::TAG). */
typedef enum wc_dtype {
  WC_F32 = 0,
  WC_F16 = 1,
  WC_BF16 = 2,
  WC_E4M3 = 3,   /* FP8 e4m3 (OCP "e4m3fn": no infinities, NaN = 0x7F/0xFF, max 448) */
} wc_dtype;

/* A CUDA stream (CUstream / cudaStream_t; cudarc's CudaStream::cu_stream()). NULL = legacy default. */
typedef struct wc_stream_opaque* wc_stream;

/* 0 = success; > 0 = a cudaError_t from the launch; < 0 = a warpcore guard below. */
typedef int32_t wc_status;
#define WC_OK 0
#define WC_ERR_UNSUPPORTED (-1)    /* a combination the Rust side should have rejected */
#define WC_ERR_INVALID_ARG (-2)    /* a size or pointer the Rust side should have rejected */

/* Name of a status code ("cudaErrorInvalidValue", "WC_ERR_UNSUPPORTED", ...). Never NULL. */
const char* wc_status_name(wc_status status);

/* ---------------------------------------------------------------- RMSNorm family */

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

#ifdef __cplusplus
}
#endif

#endif /* WARPCORE_H */
