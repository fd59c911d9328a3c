/*
 * warpcore/moe_routing.h — MoE routing: moe_gate, moe_align, moe_gather, moe_combine (cuda/moe_routing.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_MOE_ROUTING_H
#define WARPCORE_MOE_ROUTING_H

#include "core.h"

WC_EXTERN_C_BEGIN

#define WC_MOE_MAX_EXPERTS 512   /* experts a gate (and align) takes */
#define WC_MOE_MAX_TOP_K 32      /* experts chosen per token by wc_moe_gate */
#define WC_MOE_MAX_GROUPS 32     /* n_group of the grouped (DeepSeek-V3) selection */
#define WC_MOE_ALIGN_TILE 4096   /* assignments per block in wc_moe_align (workspace sizing) */

typedef enum wc_moe_scoring {
  WC_MOE_SOFTMAX = 0,   /* select by logit; weight = softmax probability */
  WC_MOE_SIGMOID = 1,   /* select by sigmoid(logit) + bias (grouped); weight = sigmoid(logit) */
} wc_moe_scoring;

/* Router gating, one launch: for each token choose top_k experts and their weights.
 * Selection compares f32 values in a total order (NaN ranks as -inf, -0 = +0); equal values go
 * to the lower expert index. SOFTMAX selects on the logits; SIGMOID on the f32 value
 * sigmoid(logit) + bias, computed by fixed IEEE operations that the CPU reference repeats
 * exactly (cuda/moe_routing.cu, det_sigmoid), within the topk_group
 * groups of highest score (a group's score: the f32 sum of its top two selection values).
 * Weights: softmax probability (renormalize: over the chosen k) or sigmoid(logit) (renormalize:
 * divided by their sum + 1e-20), times routed_scaling_factor. Ids outside [first_expert,
 * last_expert) are written as -1, others as id - first_expert; weights are kept either way. */
typedef struct wc_moe_gate_params {
  const void* logits;     /* [num_tokens, num_experts], row stride logits_stride, dtype */
  const float* bias;      /* [num_experts] (SIGMOID) or NULL */
  int32_t* topk_ids;      /* [num_tokens, top_k], row stride ids_stride */
  float* topk_weights;    /* [num_tokens, top_k], row stride weights_stride */
  int32_t* expert_counts; /* [num_experts] or NULL: += 1 per selection of each (global) expert */
  int64_t num_tokens;
  int64_t num_experts;
  int64_t top_k;
  int64_t logits_stride;
  int64_t ids_stride;
  int64_t weights_stride;
  int64_t n_group;        /* 1 = no grouping */
  int64_t topk_group;
  int64_t first_expert;
  int64_t last_expert;
  float routed_scaling_factor;
  int32_t renormalize;
  wc_moe_scoring scoring;
  wc_dtype dtype;
} wc_moe_gate_params;
wc_status wc_moe_gate(const wc_moe_gate_params* p, wc_stream stream);

/* Test hook (not an inference op): the largest |approx_sigmoid(x) - det_sigmoid(x)| over
 * x = +/- (the float with bits i * step) for i in [0, count), folded into *max_err (device
 * memory, one float, >= 0 on entry; the caller zeroes it). moe_gate's pre-filter assumes at most
 * 2^-20 (docs/moe_routing.md); tests/moe_routing checks it on the device. NaN x are skipped. */
wc_status wc_moe_sigmoid_error(float* max_err, uint32_t step, uint32_t count, wc_stream stream);

/* Align for grouped GEMM (vLLM's moe_align_block_size), stable: expert e's assignments occupy
 * rows [expert_offsets[e], expert_offsets[e] + expert_counts[e]) in increasing flat index
 * (token * top_k + k), then padding up to the next multiple of block_m. Ids outside
 * [0, num_experts) are ignored (token_positions -1). Sizes: num_assignments = num_tokens * top_k,
 * max_padded = num_assignments + num_experts * (block_m - 1), max_blocks = ceil(max_padded / block_m),
 * workspace = tiles * num_experts with tiles = ceil(num_assignments / WC_MOE_ALIGN_TILE) when
 * tiles > 1, else 0. Every element of every output is written. */
typedef struct wc_moe_align_params {
  const int32_t* topk_ids;  /* [num_tokens, top_k], row stride ids_stride */
  int32_t* sorted_ids;      /* [max_padded]: flat index per row; padding = num_assignments */
  int32_t* block_expert_ids;/* [max_blocks]: expert of each block_m rows; -1 past the total */
  int32_t* expert_offsets;  /* [num_experts + 1]: padded offsets; [num_experts] = padded total */
  int32_t* expert_counts;   /* [num_experts] */
  int32_t* token_positions; /* [num_tokens, top_k] dense: row of each assignment, -1 = ignored */
  int32_t* workspace;       /* [workspace], or NULL when it is 0 */
  int64_t num_tokens;
  int64_t top_k;
  int64_t ids_stride;
  int64_t num_experts;
  int64_t block_m;
} wc_moe_align_params;
wc_status wc_moe_align(const wc_moe_align_params* p, wc_stream stream);

/* Gather into expert order: out[token_positions[t, k], :] = hidden_states[t, :] for positions in
 * [0, num_rows); padding rows [expert_offsets[e] + expert_counts[e], expert_offsets[e + 1]) are
 * zero-filled; other rows are not written. A copy: any dtype (f32, f16, bf16, e4m3). */
typedef struct wc_moe_gather_params {
  const void* hidden_states;      /* [num_tokens, hidden], row stride hidden_stride */
  const int32_t* token_positions; /* [num_tokens, top_k] dense */
  const int32_t* expert_offsets;  /* [num_experts + 1] */
  const int32_t* expert_counts;   /* [num_experts] */
  void* out;                      /* [num_rows, hidden], row stride out_stride */
  int64_t num_tokens;
  int64_t top_k;
  int64_t hidden;
  int64_t hidden_stride;
  int64_t num_experts;
  int64_t num_rows;
  int64_t out_stride;
  wc_dtype dtype;
} wc_moe_gather_params;
wc_status wc_moe_gather(const wc_moe_gather_params* p, wc_stream stream);

/* Combine: out[t, :] = sum over k = 0, 1, ... of topk_weights[t, k] * expert_out[token_positions[t, k], :],
 * in that order, f32 accumulation, one rounding at the store; positions outside [0, num_rows)
 * contribute nothing (a token with none gets zeros). Deterministic: no atomics. */
typedef struct wc_moe_combine_params {
  const void* expert_out;         /* [num_rows, hidden], row stride expert_out_stride */
  const int32_t* token_positions; /* [num_tokens, top_k] dense */
  const float* topk_weights;      /* [num_tokens, top_k], row stride weights_stride */
  void* out;                      /* [num_tokens, hidden], row stride out_stride */
  int64_t num_tokens;
  int64_t top_k;
  int64_t hidden;
  int64_t num_rows;
  int64_t expert_out_stride;
  int64_t weights_stride;
  int64_t out_stride;
  wc_dtype dtype;
} wc_moe_combine_params;
wc_status wc_moe_combine(const wc_moe_combine_params* p, wc_stream stream);

WC_EXTERN_C_END

#endif /* WARPCORE_MOE_ROUTING_H */
