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

/* ---------------------------------------------------------------- GQA attention */

/* softmax(scale · q kᵀ [softcapped, masked]) v for a batch of sequences (varlen), queries
 * bottom-right aligned: query i of a sequence with q_len queries and kv_len keys sits at
 * position kv_len - q_len + i. Query head h reads kv head h / (num_q_heads / num_kv_heads).
 * Mask: causal -> key j <= position; window_left >= 0 -> j >= position - window_left.
 * A row that sees no key gets zeros and lse = -inf.
 * K/V come either contiguous (page_size = 0: rows of sequence s start at cu_seqlens_kv[s]) or
 * from the paged cache (page_size > 0, src/kv_cache.rs): key j of sequence s is row j % page_size
 * of page block_table[s][j / page_size]. Block-table entries outside [0, num_pages) mask their
 * keys (never read).
 * Split-KV (num_splits > 1): each split writes f32 partials to the workspace, then a merge
 * kernel combines them by log-sum-exp into out (and lse). */
/* Which attention kernel runs a launch. */
typedef enum wc_attention_kernel {
  WC_ATTENTION_MMA = 0,    /* mma.sync (attention_gqa.cu): every GPU, every supported shape */
  WC_ATTENTION_WGMMA = 1,  /* wgmma (attention_sm90.cu): sm_90a only; K/V in q's dtype, head dims
                              (64, 64) or (128, 128); 128-row m-tiles (the grid's y dimension) */
} wc_attention_kernel;

typedef struct wc_attention_params {
  const void* q;                /* [total_q, num_q_heads, head_dim], token stride q_stride */
  const void* k;                /* contiguous: [total_kv, num_kv_heads, head_dim];
                                   paged: [num_pages, page_size, num_kv_heads, head_dim] */
  const void* v;                /* as k, with head_dim_v and v_stride */
  void* out;                    /* [total_q, num_q_heads, head_dim_v], token stride out_stride */
  float* lse;                   /* optional [total_q, num_q_heads], natural log; NULL: not written */
  const int32_t* cu_seqlens_q;  /* [num_seqs + 1] */
  const int32_t* cu_seqlens_kv; /* contiguous: [num_seqs + 1]; unused when paged */
  const int32_t* seq_lens;      /* paged: [num_seqs] number of keys of each sequence */
  const int32_t* block_table;   /* paged: [num_seqs, block_table_stride] page ids */
  float* partial_out;           /* num_splits > 1: [num_splits, total_q, num_q_heads, head_dim_v] */
  float* partial_lse;           /* num_splits > 1: [num_splits, total_q, num_q_heads] */
  int64_t q_stride;
  int64_t k_stride;             /* contiguous: token stride; paged: slot (row within a page) stride */
  int64_t v_stride;
  int64_t k_head_stride;        /* kv head stride of k and v (multiples of 8 elements) */
  int64_t v_head_stride;
  int64_t page_stride;          /* paged: page stride of k and v (they share one layout) */
  int64_t out_stride;
  int64_t total_q;
  int64_t total_kv;             /* contiguous: rows of k and v; paged: num_pages * page_size */
  int64_t num_pages;
  int64_t block_table_stride;
  int32_t page_size;            /* 0: contiguous K/V */
  int32_t num_seqs;
  int32_t num_q_heads;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t head_dim_v;
  int32_t max_q_len;            /* the grid covers q_len <= max_q_len; longer sequences are clamped */
  int32_t causal;
  int32_t window_left;          /* < 0: no window */
  int32_t num_splits;           /* >= 1 */
  float scale;
  float softcap;                /* <= 0: off */
  float k_scale;                /* K = stored value · k_scale (FP8 cache; 1 otherwise) */
  float v_scale;                /* V = stored value · v_scale */
  wc_dtype dtype;               /* q and out: WC_BF16 or WC_F16 */
  wc_dtype kv_dtype;            /* = dtype, or WC_E4M3 (paged decode: max_q_len · group <= 16) */
  wc_attention_kernel kernel;   /* WC_ATTENTION_MMA unless the caller knows the GPU is sm_90 */
} wc_attention_params;
wc_status wc_attention(const wc_attention_params* p, wc_stream stream);

/* How many CTAs of the kernel wc_attention would launch for *p fit on one SM of the current
 * device at once (the CUDA occupancy calculator; registers and shared memory). Reads only the
 * fields that choose the kernel: dtype, kv_dtype, kernel, head_dim, head_dim_v, num_q_heads,
 * num_kv_heads, max_q_len, page_size, num_splits. Launches nothing. The split-KV planner
 * (AttentionPlan) sizes its splits with it. */
wc_status wc_attention_ctas_per_sm(const wc_attention_params* p, int32_t* ctas_per_sm);

/* Combines two partial attention results over disjoint keys by their log-sum-exp:
 * lse = log(e^lse_a + e^lse_b); out = out_a e^(lse_a - lse) + out_b e^(lse_b - lse). */
typedef struct wc_merge_states_params {
  const void* out_a;            /* [rows, head_dim], row stride = head_dim */
  const float* lse_a;           /* [rows] */
  const void* out_b;            /* [rows, head_dim] */
  const float* lse_b;           /* [rows] */
  void* out;                    /* [rows, head_dim] */
  float* lse;                   /* optional [rows]; NULL: not written */
  int64_t rows;
  int32_t head_dim;
  wc_dtype dtype;               /* out_a, out_b, out: WC_BF16, WC_F16 or WC_F32 */
} wc_merge_states_params;
wc_status wc_merge_states(const wc_merge_states_params* p, wc_stream stream);

/* ---------------------------------------------------------------- RoPE family + paged KV cache */

/* Which elements of the rotary part r = head[rotary_offset, rotary_offset + rotary_dim) form a
 * rotated pair (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), pair i turning at inv_freq[i]. */
typedef enum wc_rope_style {
  WC_ROPE_NEOX = 0,   /* (r[i], r[i + rotary_dim / 2]): rotate halves (Llama, Qwen, Mistral, GPT-NeoX) */
  WC_ROPE_GPTJ = 1,   /* (r[2i], r[2i + 1]): interleaved pairs (GPT-J, ChatGLM) */
} wc_rope_style;

/* Largest rotary_dim / 2 (rotary_dim <= 512). */
#define WC_ROPE_MAX_PAIRS 256
/* Largest head_dim wc_qk_norm_rope takes (a warp holds one head in registers). */
#define WC_QK_NORM_ROPE_MAX_HEAD_DIM 512

/* The q and k heads an op works on (q may be NULL when num_q_heads = 0). Rotated in place;
 * wc_append_kv only reads k. Strides in elements; head_dim is dense. */
typedef struct wc_qk_heads {
  void* q;              /* [num_tokens, num_q_heads, head_dim], strides q_token_stride, q_head_stride */
  void* k;              /* [num_tokens, num_kv_heads, head_dim], strides k_token_stride, k_head_stride */
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t q_token_stride;
  int64_t q_head_stride;
  int64_t k_token_stride;
  int64_t k_head_stride;
  wc_dtype dtype;       /* WC_BF16, WC_F16, WC_F32 (WC_BF16 / WC_F16 when writing a cache) */
} wc_qk_heads;

/* The rotation. Angle of pair i at position p: p * inv_freq[i] radians (the frequency table,
 * scaling included, is computed by the caller in f64); cos and sin are multiplied by
 * attention_factor (YaRN's mscale; 1 otherwise). */
typedef struct wc_rotary {
  const void* positions;  /* [num_tokens], int32 or int64 */
  int32_t positions_int64;
  wc_rope_style style;
  int64_t rotary_dim;     /* even, 2 ... 512 */
  int64_t rotary_offset;  /* first rotated element of each head; rotary_offset + rotary_dim <= head_dim */
  float attention_factor;
  double inv_freq[WC_ROPE_MAX_PAIRS]; /* [rotary_dim / 2] */
} wc_rotary;

/* A paged KV cache (see src/kv_cache.rs): token slot s lives in page s / page_size at row
 * s % page_size. K and V share one shape and one set of strides. */
typedef struct wc_paged_kv_cache {
  void* k_pages;          /* [num_pages, page_size, num_kv_heads, head_dim] */
  void* v_pages;          /* [num_pages, page_size, num_kv_heads, head_dim] */
  int64_t num_pages;
  int64_t page_size;      /* a power of two, 1 ... 256 */
  int64_t page_stride;
  int64_t slot_stride;
  int64_t head_stride;
  float k_scale;          /* WC_E4M3: stored = round(x / scale), x ~ stored * scale; else 1 */
  float v_scale;
  wc_dtype dtype;         /* the inputs' dtype, or WC_E4M3 */
  uint32_t* error_count;  /* optional [1]: += 1 per token whose slot is >= num_pages * page_size */
} wc_paged_kv_cache;

/* Where the new tokens' K/V rows go: token t to slot slot_mapping[t]; a negative slot is padding
 * (skipped); a slot past the cache is skipped and counted in cache.error_count. */
typedef struct wc_kv_append {
  const void* v;          /* [num_tokens, num_kv_heads, head_dim], strides v_token_stride, v_head_stride */
  int64_t v_token_stride;
  int64_t v_head_stride;
  const void* slot_mapping; /* [num_tokens], int32 or int64 */
  int32_t slots_int64;
  wc_paged_kv_cache cache;
} wc_kv_append;

/* RoPE in place on q and k, one launch. */
typedef struct wc_rope_params {
  wc_qk_heads heads;
  wc_rotary rotary;
} wc_rope_params;
wc_status wc_rope(const wc_rope_params* p, wc_stream stream);

/* reshape_and_cache: k (heads.k, read only; heads.num_q_heads = 0) and v rows into the cache,
 * quantized when the cache is WC_E4M3. */
typedef struct wc_append_kv_params {
  wc_qk_heads heads;
  wc_kv_append append;
} wc_append_kv_params;
wc_status wc_append_kv(const wc_append_kv_params* p, wc_stream stream);

/* RoPE in place on q and k, then the rotated k (as stored in k) and v into the cache. */
typedef struct wc_rope_append_kv_params {
  wc_qk_heads heads;
  wc_rotary rotary;
  wc_kv_append append;
} wc_rope_append_kv_params;
wc_status wc_rope_append_kv(const wc_rope_append_kv_params* p, wc_stream stream);

/* Qwen3: per-head RMSNorm over head_dim (q_weight for q heads, k_weight for k heads; f32
 * accumulation), then RoPE, in place, one rounding at the store; with append_kv = 1 the final
 * k and v also go into the cache. */
typedef struct wc_qk_norm_rope_params {
  wc_qk_heads heads;
  wc_rotary rotary;
  const void* q_weight;   /* [head_dim] */
  const void* k_weight;   /* [head_dim] */
  float eps;
  float weight_offset;
  int32_t append_kv;
  wc_kv_append append;    /* read only when append_kv = 1 */
} wc_qk_norm_rope_params;
wc_status wc_qk_norm_rope(const wc_qk_norm_rope_params* p, wc_stream stream);
/* ---------------------------------------------------------------- MoE routing family */

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

/* ---------------------------------------------------------------- FP8 quantization */

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
  const void* weight;         /* [hidden] */
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

/* ---------------------------------------------------------------- FP8 GEMM */

#ifdef __cplusplus
#define WC_ALIGNAS(n) alignas(n)
#else
#define WC_ALIGNAS(n) _Alignas(n)
#endif

/* A TMA descriptor (CUtensorMap, built on the host by cuTensorMapEncodeTiled). */
typedef struct wc_tensor_map {
  WC_ALIGNAS(128) uint64_t opaque[16];
} wc_tensor_map;

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
 * Two launchers: wc_matmul_fp8_sm90 (wgmma + TMA; needs tma_a / tma_b) and
 * wc_matmul_fp8_sm80 (mma.sync; runs on every sm_80+ GPU). The tile configuration (block_m,
 * block_n, group_m, num_ctas) comes from the host planner; each launcher lists what it has. */
typedef struct wc_matmul_fp8_params {
  wc_tensor_map tma_a;        /* sm90: a as [m, k] bytes, box [block_m rows, 128], 128B swizzle */
  wc_tensor_map tma_b;        /* sm90: b as [n, k] bytes, box [block_n rows, 128], 128B swizzle */
  const void* a;              /* [m, k] e4m3, row stride lda (bytes, multiple of 16) */
  const void* b;              /* [n, k] e4m3, row stride ldb */
  const float* a_scale;
  const float* b_scale;
  const void* bias;           /* NULL or [n], the output dtype */
  const void* residual;       /* NULL or [m, n], the output dtype, row stride ldr */
  void* d;                    /* [m, n], row stride ldd */
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
} wc_matmul_fp8_params;
wc_status wc_matmul_fp8_sm90(const wc_matmul_fp8_params* p, wc_stream stream);
wc_status wc_matmul_fp8_sm80(const wc_matmul_fp8_params* p, wc_stream stream);

/* Tile t of a problem with the params' tile shape, group_m and cluster_m: its (m-tile, n-tile),
 * as the kernels' scheduler computes it (host-side, for tests); with cluster_m = 2 a tile is a
 * cluster's pair and m-tile counts pairs. Returns WC_ERR_INVALID_ARG for t outside [0, tiles). */
wc_status wc_matmul_fp8_tile(const wc_matmul_fp8_params* p, int64_t t, int64_t* m_tile, int64_t* n_tile);

/* ---------------------------------------------------------------- element-wise family */

/* The gate activation of a gated MLP (reference::mlp::GluActivation). */
typedef enum wc_glu_activation {
  WC_GLU_SILU = 0,       /* x * sigmoid(x): SwiGLU (Llama, Qwen, Mixtral, DeepSeek) */
  WC_GLU_GELU_TANH = 1,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GeGLU (Gemma) */
  WC_GLU_RELU2 = 2,      /* max(x, 0)^2: squared-ReLU GLU (BitNet b1.58) */
} wc_glu_activation;

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

#ifdef __cplusplus
}
#endif

#endif /* WARPCORE_H */
