/*
 * warpcore/quant_fp8.h — FP8 quantization: quantize_fp8, rms_norm_quant_fp8, dequantize_fp8 (cuda/quant_fp8.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_QUANT_FP8_H
#define WARPCORE_QUANT_FP8_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* Scales are f32 and dequantize: value = fp8 · scale. A tensor of rows × cols is cut into
 * blocks of block_rows × block_cols; scale (i, j) covers rows [i·br, (i+1)·br) and columns
 * [j·bc, (j+1)·bc) and lives at scale[i · scale_stride_row + j · scale_stride_col]:
 *   WC_SCALE_TENSOR    one block (br = rows, bc = cols): a [1, 1] scale
 *   WC_SCALE_ROW       br = 1, bc = cols: [rows, 1] (per token / per output channel)
 *   WC_SCALE_GROUP128  br = 1, bc = 128: [rows, cols / 128] (DeepSeek-V3 activations; the
 *                      GEMM prefers the column-major storage scale_stride_row = 1,
 *                      scale_stride_col >= rows, which makes a k-block's scales contiguous)
 *   WC_SCALE_BLOCK128  br = bc = 128: [ceil(rows / 128), ceil(cols / 128)] (DeepSeek-V3
 *                      weights, `weight_scale_inv`, row-major in checkpoints)
 * Dynamic quantization computes scale = max(amax, WC_FP8_AMAX_FLOOR) / 448 (f32 division)
 * over each block, then fp8 = e4m3_rn_satfinite(x · (1 / scale)) (f32 multiply): a scale is
 * never zero or subnormal and overflow saturates to ±448, never NaN. Inputs must be finite. */
typedef enum wc_scale_granularity {
  WC_SCALE_TENSOR = 0,
  WC_SCALE_ROW = 1,
  WC_SCALE_GROUP128 = 2,
  WC_SCALE_BLOCK128 = 3,
} wc_scale_granularity;

/* Side of the fine-grained scaling blocks (1×128 groups, 128×128 blocks). */
#define WC_FP8_BLOCK 128
/* Largest finite e4m3 value. */
#define WC_FP8_MAX 448.0f
/* amax is clamped to at least this before the scale is computed (scale >= 2.2e-15). */
#define WC_FP8_AMAX_FLOOR 1e-12f

/* Single-pass per-tensor quantization: at most this many CTAs, and the workspace they share
 * (uint32 words: one arrival word for the grid barrier, then one amax slot per CTA). */
#define WC_QUANT_TENSOR_MAX_CTAS 2048
#define WC_QUANT_WORKSPACE_WORDS (32 + WC_QUANT_TENSOR_MAX_CTAS)

/* Dynamic quantization of x (bf16 / f16) to e4m3 with scales computed on the GPU.
 * WC_SCALE_TENSOR, two kernels (single_pass_ctas == 0): scale[0] is zeroed, reduced by
 * atomicMax over blocks, then read by the quantizing kernel (three stream-ordered steps, no
 * host synchronisation); x is read twice.
 * WC_SCALE_TENSOR, single pass (single_pass_ctas > 0): one cooperative launch of
 * single_pass_ctas co-resident CTAs (a launch that cannot be co-resident fails with the
 * runtime's error, nothing written); each holds up to single_pass_held elements of its share of
 * x in shared memory across a grid barrier, so x is read once (the rest is re-read, from L2
 * when it fits). Needs the 16-byte vector layout (cols % 16 == 0, rows and pointers 16-byte
 * aligned), single_pass_held a multiple of 16 within wc_quantize_fp8_tensor_limits' max_held,
 * and `workspace`: WC_QUANT_WORKSPACE_WORDS uint32, zero-filled once before its first use and
 * then left to the kernel (every launch leaves its arrival word as valid as it found it: no
 * reset between calls or graph replays), used by one launch at a time. */
typedef struct wc_quantize_fp8_params {
  const void* x;              /* [rows, cols], row stride x_stride */
  void* out;                  /* [rows, cols] e4m3, row stride out_stride */
  float* scale;               /* see wc_scale_granularity */
  int64_t rows;
  int64_t cols;
  int64_t x_stride;
  int64_t out_stride;
  int64_t scale_stride_row;
  int64_t scale_stride_col;
  wc_scale_granularity granularity;
  wc_dtype dtype;             /* x: WC_BF16 or WC_F16 */
  void* workspace;            /* single pass: [WC_QUANT_WORKSPACE_WORDS] uint32 (see above) */
  int64_t single_pass_ctas;   /* WC_SCALE_TENSOR: 0 = two kernels; else the single pass's CTAs */
  int64_t single_pass_held;   /* single pass: elements of x each CTA holds in shared memory */
} wc_quantize_fp8_params;
wc_status wc_quantize_fp8(const wc_quantize_fp8_params* p, wc_stream stream);

/* What the current device allows the single-pass per-tensor kernel for x of `dtype`. */
typedef struct wc_quant_tensor_limits {
  int64_t sm_count;
  int64_t ctas_per_sm;        /* co-resident CTAs per SM at max_held (occupancy calculator) */
  int64_t max_held;           /* elements per CTA that fit in shared memory (multiple of 16) */
  int32_t cooperative;        /* the device supports cooperative launches */
} wc_quant_tensor_limits;
wc_status wc_quantize_fp8_tensor_limits(wc_dtype dtype, wc_quant_tensor_limits* out);

/* Fused RMSNorm -> FP8 (granularity WC_SCALE_ROW or WC_SCALE_GROUP128): the normalised row
 * stays in f32 registers and is quantized directly (never stored in bf16).
 *   y = rms_norm(x) · (weight_offset + weight)      (the RMSNorm family's formula)
 * With residual != NULL (fused add): residual = round(x + residual) is stored first and y
 * normalises that stored value, as wc_fused_add_rms_norm does; x is not written. */
typedef struct wc_rms_norm_quant_fp8_params {
  const void* x;              /* [num_tokens, hidden], row stride x_stride */
  void* residual;             /* NULL, or [num_tokens, hidden], row stride residual_stride */
  const void* weight;         /* [hidden], required (NULL: WC_ERR_INVALID_ARG) */
  void* out;                  /* [num_tokens, hidden] e4m3, row stride out_stride */
  float* scale;               /* [num_tokens, 1] or [num_tokens, hidden / 128] */
  int64_t num_tokens;
  int64_t hidden;
  int64_t x_stride;
  int64_t residual_stride;
  int64_t out_stride;
  int64_t scale_stride_row;
  int64_t scale_stride_col;
  float eps;
  float weight_offset;
  wc_scale_granularity granularity;
  wc_dtype dtype;             /* x, residual, weight: WC_BF16 or WC_F16 */
} wc_rms_norm_quant_fp8_params;
wc_status wc_rms_norm_quant_fp8(const wc_rms_norm_quant_fp8_params* p, wc_stream stream);

/* Fused GLU -> FP8 (granularity WC_SCALE_ROW or WC_SCALE_GROUP128): y = act(gate) * up in f32
 * registers (wc_glu's formula), quantized directly, never stored in bf16: what a gated MLP's
 * down projection reads when it is an FP8 GEMM. Rows 16-byte aligned with cols % 16 == 0 (groups:
 * cols % 128 == 0); anything else is WC_ERR_UNSUPPORTED. */
typedef struct wc_glu_quant_fp8_params {
  const void* gate;           /* [rows, cols], row stride gate_stride */
  const void* up;             /* [rows, cols], row stride up_stride */
  void* out;                  /* [rows, cols] e4m3, row stride out_stride */
  float* scale;               /* [rows, 1] or [rows, cols / 128] */
  int64_t rows;
  int64_t cols;
  int64_t gate_stride;
  int64_t up_stride;
  int64_t out_stride;
  int64_t scale_stride_row;
  int64_t scale_stride_col;
  wc_glu_activation activation;
  wc_scale_granularity granularity;
  wc_dtype dtype;             /* gate, up: WC_BF16 or WC_F16 */
} wc_glu_quant_fp8_params;
wc_status wc_glu_quant_fp8(const wc_glu_quant_fp8_params* p, wc_stream stream);

/* out = fp8 · scale (tests and debugging), any granularity. */
typedef struct wc_dequantize_fp8_params {
  const void* q;              /* [rows, cols] e4m3, row stride q_stride */
  const float* scale;         /* see wc_scale_granularity */
  void* out;                  /* [rows, cols], row stride out_stride */
  int64_t rows;
  int64_t cols;
  int64_t q_stride;
  int64_t out_stride;
  int64_t scale_stride_row;
  int64_t scale_stride_col;
  wc_scale_granularity granularity;
  wc_dtype dtype;             /* out: WC_BF16, WC_F16 or WC_F32 */
} wc_dequantize_fp8_params;
wc_status wc_dequantize_fp8(const wc_dequantize_fp8_params* p, wc_stream stream);

WC_EXTERN_C_END

#endif /* WARPCORE_QUANT_FP8_H */
