/*
 * warpcore/elementwise.h — element-wise family: glu, select_rows, argmax_rows, sample_rows (cuda/elementwise.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_ELEMENTWISE_H
#define WARPCORE_ELEMENTWISE_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* out[r, :] = act(gate[r, :]) * up[r, :], f32 math, one rounding at the store. gate and up are
 * typically the two halves of one fused gate_up GEMM output (row stride 2 * cols). */
typedef struct wc_glu_params {
  const void* gate;     /* [rows, cols], row stride gate_stride */
  const void* up;       /* [rows, cols], row stride up_stride */
  void* out;            /* [rows, cols], row stride out_stride; does not overlap gate / up */
  int64_t rows;
  int64_t cols;
  int64_t gate_stride;
  int64_t up_stride;
  int64_t out_stride;
  wc_glu_activation activation;
  wc_dtype dtype;       /* bf16, f16 or f32 */
} wc_glu_params;
wc_status wc_glu(const wc_glu_params* p, wc_stream stream);

/* out[i, :] = src[indices[i], :] (an embedding lookup; the last token of each sequence). A copy:
 * any dtype, FP8 included. An index outside [0, src_rows) skips its row (out untouched). */
typedef struct wc_select_rows_params {
  const void* src;      /* [src_rows, cols], row stride src_stride */
  const void* indices;  /* [num_rows] int32 or int64 (indices_int64) */
  void* out;            /* [num_rows, cols], row stride out_stride */
  int64_t src_rows;
  int64_t num_rows;
  int64_t cols;
  int64_t src_stride;
  int64_t out_stride;
  int32_t indices_int64;
  wc_dtype dtype;
} wc_select_rows_params;
wc_status wc_select_rows(const wc_select_rows_params* p, wc_stream stream);

/* out[r] = the index of the largest finite-or-infinite value of row r of x (f32 logits: greedy
 * decoding on the GPU): strictly greater wins, so ties go to the lower index; NaN never wins;
 * a row with no value above -inf gives 0 (reference::elementwise::argmax_rows, the model's
 * Sampler). */
typedef struct wc_argmax_rows_params {
  const float* x;       /* [rows, cols], row stride x_stride */
  int32_t* out;         /* [rows] */
  int64_t rows;
  int64_t cols;         /* at most INT32_MAX */
  int64_t x_stride;
} wc_argmax_rows_params;
wc_status wc_argmax_rows(const wc_argmax_rows_params* p, wc_stream stream);

/* out[r] = a token drawn from row r of f32 logits (reference::elementwise::sample_row, which the
 * model's Sampler runs on the host): the finite logits (a row with none: argmax_rows' choice) at
 * temperature T, weighted w_i = trunc(exp((l_i − max) / T) · 2^40) (common.cuh's det_exp, the
 * host's bit for bit; integer sums);
 * ranked by logit, ties to the lower id; top_k > 0 keeps the k best; top_p < 1 then keeps the
 * shortest rank prefix whose weight reaches ceil(top_p · total); the token is the first id, in
 * ascending id order, whose inclusive prefix of kept weight exceeds floor(u_r · mass), u_r =
 * uniforms[r] in [0, 1). T > 0 and top_p in (0, 1].
 * Per-row settings: where temperatures / top_ks / top_ps is set, row r takes its element instead
 * of the scalar, sanitized on the device: T not > 0 (NaN included) draws nothing — the row's
 * token is argmax_rows' (greedy) —, top_k < 0 is 0, top_p NaN or above 1 is 1, and top_p <= 0
 * keeps the best-ranked token only. */
typedef struct wc_sample_rows_params {
  const float* logits;    /* [rows, cols], row stride logits_stride */
  const float* uniforms;  /* [rows], each in [0, 1) */
  int32_t* out;           /* [rows] */
  int64_t rows;
  int64_t cols;
  int64_t logits_stride;
  float temperature;
  int32_t top_k;          /* 0: all */
  float top_p;            /* 1: all */
  const float* temperatures;  /* [rows] or NULL (the scalar) */
  const int32_t* top_ks;      /* [rows] or NULL */
  const float* top_ps;        /* [rows] or NULL */
} wc_sample_rows_params;
wc_status wc_sample_rows(const wc_sample_rows_params* p, wc_stream stream);

WC_EXTERN_C_END

#endif /* WARPCORE_ELEMENTWISE_H */
