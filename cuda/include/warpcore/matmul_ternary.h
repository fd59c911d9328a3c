/*
 * warpcore/matmul_ternary.h — ternary (BitNet b1.58) family: quantize_activations,
 * rms_norm_quantize_activations, matmul_ternary
 * (cuda/matmul_ternary.cu). Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_MATMUL_TERNARY_H
#define WARPCORE_MATMUL_TERNARY_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* Largest k matmul_ternary takes: its int32 accumulators hold Σ q · code · 4^plane exactly up
 * to here (|q| <= 128, code · 4^plane <= 128: 2^14 · 2^16 = 2^30). */
#define WC_TERNARY_MAX_K 65536

/* Words of matmul_ternary's split-k workspace per output tile of the 16-row tile (block_m 16):
 * the tile's 16 × 32 int32 sums, then its arrival counter. */
#define WC_TERNARY_SPLIT_K_TILE_WORDS 513

/* BitNet b1.58's per-token activation quantization (transformers' ActQuant), in its f32
 * arithmetic: scale[r] = (1 / max(absmax(x[r, :]), 1e-5)) · 127 (reciprocal, then product,
 * both rounded to nearest), q[r, c] = clamp(rint(x[r, c] · scale[r]), -128, 127) with ties to
 * even; x ≈ q / scale. k a multiple of 16, rows 16-byte aligned (x and q). NaN in x: unspecified
 * codes for that row. */
typedef struct wc_quantize_activations_params {
  const void* x;   /* [m, k], row stride ldx (elements), dtype */
  int8_t* q;       /* [m, k], row stride ldq (bytes) */
  float* scale;    /* [m] */
  int64_t m;
  int64_t k;
  int64_t ldx;
  int64_t ldq;
  wc_dtype dtype;  /* x: WC_BF16, WC_F16 or WC_F32 */
} wc_quantize_activations_params;
wc_status wc_quantize_activations(const wc_quantize_activations_params* p, wc_stream stream);

/* RMSNorm straight into BitNet's activation codes: y = x̂ · rstd · (weight_offset + weight) in
 * f32 (rms_norm's formula, never rounded to the input dtype), then quantize_activations'
 * arithmetic on y. With residual != NULL first residual = round(x + residual) (stored, in the
 * input dtype), and that sum is what gets normalised (fused_add_rms_norm). k a multiple of 16;
 * x, residual, weight and q 16-byte aligned with row strides multiples of 16 bytes. */
typedef struct wc_rms_norm_quantize_activations_params {
  const void* x;         /* [m, k], row stride ldx (elements), dtype */
  void* residual;        /* NULL, or [m, k] in and out, row stride ldr (elements) */
  const void* weight;    /* [k], dtype */
  int8_t* q;             /* [m, k], row stride ldq (bytes) */
  float* scale;          /* [m] */
  int64_t m;
  int64_t k;
  int64_t ldx;
  int64_t ldr;
  int64_t ldq;
  float eps;
  float weight_offset;   /* 0: weight (Llama, BitNet); 1: 1 + weight (Gemma) */
  wc_dtype dtype;        /* WC_BF16, WC_F16 or WC_F32 */
} wc_rms_norm_quantize_activations_params;
wc_status wc_rms_norm_quantize_activations(const wc_rms_norm_quantize_activations_params* p, wc_stream stream);

/* out[r, j] = ((Σ_c q[r, c] · v[j, c]) / q_scale[r] (+ bias[j])) · w_scale: int8 activations
 * times ternary weights v ∈ {-1, 0, 1}, exact int32 accumulation, f32 epilogue, one rounding at
 * the store (AutoBitLinear: transformers adds the bias before the weight scale).
 * Weights in the checkpoint's packed layout (transformers' pack_weights): w [n / 4, k] bytes;
 * column j = plane · (n / 4) + row is bits 2 · plane, 2 · plane + 1 of w[row, :], stored as
 * v + 1 (0b00 = -1, 0b01 = 0, 0b10 = 1; 0b11 is no ternary value and reads as 2).
 * Any m; n a multiple of 4; k a multiple of 16, at most WC_TERNARY_MAX_K; q and w 16-byte
 * aligned with row strides multiples of 16 bytes. block_m comes from the host planner: 16 (one
 * 16-row tile, eight warps splitting k: decode), 128 (128 × 128 tiles: prefill), or 64 (64 rows
 * × 512 columns on int8 wgmma: prefill on compute capability 9.0 only, WC_ERR_UNSUPPORTED
 * elsewhere). Every tile gives the same output bit for bit.
 * Split-k (block_m 16 only, for layers with too few 16 × 32 tiles to fill the GPU): k_splits = s
 * CTAs per tile, CTA j over the k-steps [⌊K·j/s⌋, ⌊K·(j+1)/s⌋) of the K = ⌈k / 512⌉ 512-byte
 * steps (2 <= s <= K). Each adds its exact int32 sums into the tile's words of workspace
 * (atomics: integer sums, so the order does not matter and the result is bit-identical to
 * k_splits = 1), then counts itself in; the tile's last CTA reads the totals, applies the
 * epilogue, and sets the tile's words back to zero. So workspace must be all zero when the
 * launch starts and is all zero again when it ends; launches sharing one must be ordered (one
 * stream). */
typedef struct wc_matmul_ternary_params {
  const int8_t* q;        /* [m, k], row stride ldq (bytes) */
  const float* q_scale;   /* [m]: x ≈ q / q_scale (wc_quantize_activations' scale) */
  const uint8_t* w;       /* [n / 4, k] packed, row stride ldw (bytes) */
  float w_scale;          /* the checkpoint's weight_scale */
  const void* bias;       /* NULL or [n], out_dtype */
  void* out;              /* [m, n], row stride ldo (elements), out_dtype */
  int64_t m;
  int64_t n;
  int64_t k;
  int64_t ldq;
  int64_t ldw;
  int64_t ldo;
  int32_t block_m;        /* 16, 128, or 64 (sm_90a) */
  wc_dtype out_dtype;     /* WC_BF16, WC_F16 or WC_F32 */
  int32_t k_splits;       /* 0 or 1 = none; s >= 2: split-k as above (block_m 16, else
                             WC_ERR_UNSUPPORTED; s > K: WC_ERR_INVALID_ARG) */
  int32_t* workspace;     /* k_splits >= 2: tiles · WC_TERNARY_SPLIT_K_TILE_WORDS int32, all
                             zero, 4-byte aligned device memory (tiles = ⌈n / 32⌉ · ⌈m / 16⌉) */
  int64_t workspace_words; /* its capacity; WC_ERR_INVALID_ARG below what the grid needs */
} wc_matmul_ternary_params;
wc_status wc_matmul_ternary(const wc_matmul_ternary_params* p, wc_stream stream);

WC_EXTERN_C_END

#endif /* WARPCORE_MATMUL_TERNARY_H */
