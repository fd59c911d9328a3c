/*
 * warpcore/attention.h — GQA and MLA attention: attention, merge_states (cuda/attention_gqa.cu,
 * cuda/attention_sm90.cu, cuda/attention_mla.cu).
 * Part of the C ABI (cuda/include/warpcore.h); conventions there.
 */
#ifndef WARPCORE_ATTENTION_H
#define WARPCORE_ATTENTION_H

#include "core.h"

WC_EXTERN_C_BEGIN

/* softmax(scale · q kᵀ [softcapped, masked]) v for a batch of sequences (varlen), queries
 * bottom-right aligned: query i of a sequence with q_len queries and kv_len keys sits at
 * position kv_len - q_len + i. Query head h reads kv head h / (num_q_heads / num_kv_heads).
 * Mask: causal -> key j <= position; window_left >= 0 -> j >= position - window_left.
 * A row that sees no key gets zeros and lse = -inf.
 * K/V come either contiguous (page_size = 0: rows of sequence s start at cu_seqlens_kv[s]) or
 * from the paged cache (page_size > 0, src/kv_cache.rs): key j of sequence s is row j % page_size
 * of page block_table[s][j / page_size]. Block-table entries outside [0, num_pages) mask their
 * keys (never read).
 * MLA decode (DeepSeek-V2/V3, absorbed form) is head dims (576, 512): q̃ = [W_ukᵀ q_nope | q_pe],
 * K = the latent cache rows [c_kv | k_pe], and V = the first 512 elements of the same rows (v must
 * be k: the kernel reads k only); out is the attention-weighted latent (the caller applies W_uv).
 * Split-KV (num_splits > 1): each split writes f32 partials to the workspace, then a merge
 * kernel combines them by log-sum-exp into out (and lse). */
/* Which attention kernel runs a launch. */
typedef enum wc_attention_kernel {
  WC_ATTENTION_MMA = 0,    /* mma.sync (attention_gqa.cu; attention_mla.cu for (576, 512)): every
                              GPU, every supported shape */
  WC_ATTENTION_WGMMA = 1,  /* wgmma (attention_sm90.cu): sm_90a only; K/V in q's dtype or an
                              e4m3 paged cache, head dims (64, 64) or (128, 128); 128-row m-tiles
                              (the grid's y dimension). attention_mla_sm90.cu for (576, 512), K/V
                              in q's dtype: 64-row m-tiles */
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
  int32_t merge_pdl;            /* num_splits > 1, compute capability 9.0: nonzero launches the merge
                                   as a programmatic dependent of the attention kernel (PDL: its
                                   launch overlaps the attention's end); 0: plain stream order */
  float scale;
  float softcap;                /* <= 0: off */
  float k_scale;                /* K = stored value · k_scale (FP8 cache; 1 otherwise) */
  float v_scale;                /* V = stored value · v_scale */
  wc_dtype dtype;               /* q and out: WC_BF16 or WC_F16 */
  wc_dtype kv_dtype;            /* = dtype, or WC_E4M3 (a paged cache, scales k_scale / v_scale) */
  wc_attention_kernel kernel;   /* WC_ATTENTION_MMA unless the caller knows the GPU is sm_90 */
  /* TMA for the wgmma kernels (WC_ATTENTION_WGMMA, K/V in q's dtype; ignored elsewhere).
   * tma_rows = 0: every key tile by cp.async. Else tma_k / tma_v map k / v as 2-D bytes
   * {row bytes, rows}: row bytes = ((num_kv_heads - 1) · head stride + head_dim) · element size,
   * at most the token (slot) stride in bytes, which is a multiple of 16; rows = total_kv
   * (contiguous) or num_pages · page_size (paged, page_stride = page_size · k_stride: slot s of
   * page g is row g · page_size + s); box {128 bytes, tma_rows rows}, 128-byte swizzle;
   * tma_rows = the kernel's keys per tile (128; MLA decode's kernel: 64) when contiguous, or
   * min(page_size, keys per tile) with page_size >= 8 and a multiple of it (paged). A tile whose
   * keys all exist (and, paged, that starts a box) is then one TMA per box and 128-byte column;
   * the others go by cp.async. MLA decode reads tma_k only (V is K's rows). */
  int32_t tma_rows;
  wc_tensor_map tma_k;
  wc_tensor_map tma_v;
} wc_attention_params;
wc_status wc_attention(const wc_attention_params* p, wc_stream stream);

/* How many CTAs of the kernel wc_attention would launch for *p fit on one SM of the current
 * device at once (the CUDA occupancy calculator; registers and shared memory). Reads only the
 * fields that choose the kernel: dtype, kv_dtype, kernel, head_dim, head_dim_v, num_q_heads,
 * num_kv_heads, max_q_len, page_size, num_splits. Launches nothing. The split-KV planner
 * (AttentionPlan) sizes its splits with it. */
wc_status wc_attention_ctas_per_sm(const wc_attention_params* p, int32_t* ctas_per_sm);

/* Bytes of shared memory per block the portable MLA kernel (WC_ATTENTION_MMA at head dims
 * (576, 512)) needs for its 64-row configuration, which it takes for more than 16 query rows per
 * sequence where the device's opt-in limit allows (else 16-row tiles). fp8_cache: nonzero for
 * an e4m3 cache. Host-only; touches no device. The planner sizes its tiles by it. */
int32_t wc_attention_mla_wide_smem(int32_t fp8_cache);

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

WC_EXTERN_C_END

#endif /* WARPCORE_ATTENTION_H */
