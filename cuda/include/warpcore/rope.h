/*
 * warpcore/rope.h — RoPE family and the paged KV cache: rope, append_kv, rope_append_kv, qk_norm_rope (cuda/rope.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_ROPE_H
#define WARPCORE_ROPE_H

#include "core.h"

WC_EXTERN_C_BEGIN

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
 * s % page_size. K and V share one shape and one set of strides. MLA's latent cache has K
 * pages only (v_pages = NULL, and the append's v = NULL): rows [c_kv | k_pe]. */
typedef struct wc_paged_kv_cache {
  void* k_pages;          /* [num_pages, page_size, num_kv_heads, head_dim] */
  void* v_pages;          /* [num_pages, page_size, num_kv_heads, head_dim]; NULL: latent cache */
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
  const void* v;          /* [num_tokens, num_kv_heads, head_dim], strides v_token_stride, v_head_stride;
                             NULL exactly when cache.v_pages is */
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

WC_EXTERN_C_END

#endif /* WARPCORE_ROPE_H */
