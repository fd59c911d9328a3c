/*
 * warpcore/matmul_fp8.h — FP8 GEMM: matmul_fp8_sm90, matmul_fp8_sm80 (cuda/matmul_fp8_sm90.cu, cuda/matmul_fp8_sm80.cu),
 * whose kernels also take bf16 operands (in_dtype; the grouped bf16 GEMM of MoE experts).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_MATMUL_FP8_H
#define WARPCORE_MATMUL_FP8_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* D[m, n] = Σ_k (a[m, k] · sa) (b[n, k] · sb) (+ bias[n]) (+ residual[m, n]), e4m3 inputs, both
 * K-major, f32 accumulation, one rounding at the store. Any m; n and k multiples of 128.
 * Scales (f32) are read through strides, so broadcasting is a zero stride:
 *   block_scaled = 0: sa = a_scale[m · a_scale_stride_m], sb = b_scale[n · b_scale_stride_n]
 *                     applied once in the epilogue (per tensor: both strides 0; per row ×
 *                     per column: 1 and 1). sm90: fast_accum = 1 runs the wgmma accumulator
 *                     over all of K (its additions keep ~13 mantissa bits: error grows with
 *                     K); fast_accum = 0 adds each 128-K partial into f32 registers.
 *   block_scaled = 1: for each 128-wide k-block kb, the partial product over that block is
 *                     multiplied by a_scale[m · a_scale_stride_m + kb · a_scale_stride_k] ·
 *                     b_scale[(n / 128) · b_scale_stride_n + kb · b_scale_stride_k] and added
 *                     into an f32 register accumulator (A 1×128 groups, B 128×128 blocks).
 * Grouped (MoE experts): group_offsets non-NULL makes num_groups GEMMs in one launch. Group g
 * multiplies a's rows [group_offsets[g], group_offsets[g + 1]) by b's rows [g · n, (g + 1) · n)
 * into the same rows of d (residual alike); b is [num_groups · n, k] and its scales, and the
 * bias ([num_groups · n]), are indexed by that stacked b row. The offsets (num_groups + 1
 * int32 in device memory, e.g. moe_align's expert_offsets) are read by the kernels, never by
 * the host; they are clamped into [0, m] and made non-decreasing there, and rows of d outside
 * every group are not written. m is a's (and d's) row count. Not with cluster_m = 2.
 * bf16 operands (in_dtype = WC_BF16): a and b are bf16 and unscaled (a_scale, b_scale,
 * block_scaled and fast_accum are ignored; the f32 accumulation is exact products with f32
 * sums on both kernels); n and k need only be multiples of 8 (the k tail of the last 128-byte
 * stage is zero-filled, the columns past n are computed from the next group's rows, or zeros,
 * and not stored). Plain or grouped; not with cluster_m = 2.
 * Two launchers: wc_matmul_fp8_sm90 (wgmma + TMA; needs tma_a / tma_b) and
 * wc_matmul_fp8_sm80 (mma.sync; runs on every sm_80+ GPU). The tile configuration (block_m,
 * block_n, group_m, num_ctas) comes from the host planner; each launcher lists what it has. */
typedef struct wc_matmul_fp8_params {
  wc_tensor_map tma_a;        /* sm90: a as [m, k · element size] bytes, box [block_m rows, 128 bytes], 128B swizzle */
  wc_tensor_map tma_b;        /* sm90: b as [n, k · element size] bytes, box [block_n rows, 128 bytes], 128B swizzle */
  wc_tensor_map tma_d;        /* sm90 with tma_store = 1: d as [m, n · 2] bytes, box [64 rows, 128 bytes], 128B swizzle */
  const void* a;              /* [m, k] in_dtype, row stride lda (elements; rows 16-byte aligned) */
  const void* b;              /* [n, k] in_dtype, row stride ldb */
  const float* a_scale;
  const float* b_scale;
  const void* bias;           /* NULL or [n], the output dtype */
  const void* residual;       /* NULL or [m, n], the output dtype, row stride ldr */
  void* d;                    /* [m, n], row stride ldd */
  const int32_t* group_offsets; /* NULL, or [num_groups + 1] on the device: grouped (see above) */
  int64_t num_groups;         /* >= 1 when grouped */
  int64_t m;
  int64_t n;
  int64_t k;
  int64_t lda;
  int64_t ldb;
  int64_t ldr;
  int64_t ldd;
  int64_t a_scale_stride_m;
  int64_t a_scale_stride_k;
  int64_t b_scale_stride_n;
  int64_t b_scale_stride_k;
  int32_t block_scaled;
  int32_t fast_accum;         /* sm90 with block_scaled = 0 only; see above */
  int32_t block_m;            /* rows of D per tile */
  int32_t block_n;            /* columns of D per tile */
  int32_t group_m;            /* tile order: groups of group_m m-tiles, m fastest inside a group */
  int32_t num_ctas;           /* sm90: persistent CTAs (<= tiles); sm80: ignored (one CTA per tile) */
  int32_t cluster_m;          /* sm90: CTAs per thread block cluster, side by side along m (0 or 1:
                                 none; 2: block_m 128, the pair shares its B tile, each CTA loading
                                 half of it by TMA multicast; tma_b's box is block_n / 2 rows).
                                 num_ctas is rounded down to whole clusters. sm80: ignored */
  wc_dtype out_dtype;         /* d, bias, residual: WC_BF16 or WC_F32 */
  wc_dtype in_dtype;          /* a, b: WC_E4M3 (scaled, as above) or WC_BF16 (unscaled) */
  int32_t tma_store;          /* sm90: 1 = the epilogue stages bf16 tiles in shared memory and
                                 TMA-stores them (tma_d) while the consumers go on to the next
                                 tile; e4m3 operands, bf16 d, no residual, not grouped, block_m
                                 128 (WC_ERR_UNSUPPORTED otherwise). 0 = staged f32 and 16-byte
                                 stores by the consumers. sm80: ignored */
  int32_t k_splits;           /* 0 or 1 = none. s >= 2 (split-k, for problems with too few
                                 tiles to fill the GPU; both kernels): unit u (sm80: CTA u) is
                                 k-slice u % s of tile u / s,
                                 k-steps [⌊K·j/s⌋, ⌊K·(j+1)/s⌋) of the K = ⌈k · element size / 128⌉
                                 128-byte steps (s <= K); each writes its raw f32 sums (block
                                 scales applied, per-tensor / per-row scales not) to workspace
                                 slice j, then a second kernel on the stream sums the slices in
                                 order and applies the scales, bias and residual, rounding once.
                                 sm90 launches the second kernel as a programmatic
                                 dependent of the first. Not with cluster_m = 2, tma_store or
                                 group_offsets (WC_ERR_UNSUPPORTED) */
  float* workspace;           /* k_splits >= 2: [k_splits, m, n] f32, dense (n apart), device
                                 memory of at least workspace_floats; anything in it is overwritten */
  int64_t workspace_floats;   /* its capacity; WC_ERR_INVALID_ARG below k_splits · m · n */
} wc_matmul_fp8_params;
wc_status wc_matmul_fp8_sm90(const wc_matmul_fp8_params* p, wc_stream stream);
wc_status wc_matmul_fp8_sm80(const wc_matmul_fp8_params* p, wc_stream stream);

/* Unit t of a problem as the kernels' scheduler walks it (host-side, for tests; with
 * group_offsets, they must be host memory in this call; with k_splits >= 2 it is tile t, whose
 * k-slices are units t · k_splits .. (t + 1) · k_splits − 1): the first row of its tile (its
 * cluster's first CTA), the end of its group's rows, its first column of d and first row of b.
 * Returns WC_ERR_INVALID_ARG for t past the last unit. */
wc_status wc_matmul_fp8_tile(const wc_matmul_fp8_params* p, int64_t t, int64_t* m0, int64_t* m_end, int64_t* n0,
                             int64_t* b0);

WC_EXTERN_C_END

#endif /* WARPCORE_MATMUL_FP8_H */
