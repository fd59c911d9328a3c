// attention.cuh — what the two attention kernels share (attention_gqa.cu: mma.sync, every
// GPU; attention_sm90.cu: wgmma, sm_90a prefill): the work of one CTA (sequence · kv head,
// m-tile, split) derived from the params with every device-side length clamped, the query
// position of a flattened row, and the location of a key's row in contiguous or paged K/V.
// GQA packing: row r of a (sequence, kv head) is query token r / group, query head
// kv_head · group + r % group.
#pragma once

#include "common.cuh"

namespace wc {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Work {
  int seq, kv_head, group, rows, row0;
  int64_t q_start, kv_start;  // kv_start: first key row (contiguous K/V only)
  int q_len, kv_len;
  int kv_lo, tile_begin, tile_end;  // key tiles [tile_begin, tile_end) of BN keys from kv_lo
};

// Position of flattened row r of this (sequence, kv head): its query token's position.
__device__ __forceinline__ int row_position(const Work& w, int r) { return w.kv_len - w.q_len + r / w.group; }

template <int BN>
__device__ __forceinline__ bool describe_work(const wc_attention_params& p, int bm, Work& w) {
  w.seq = blockIdx.x / p.num_kv_heads;
  w.kv_head = blockIdx.x % p.num_kv_heads;
  w.group = p.num_q_heads / p.num_kv_heads;
  w.q_start = p.cu_seqlens_q[w.seq];
  const int64_t q_end = p.cu_seqlens_q[w.seq + 1];
  // Clamp everything that comes from device data so no access leaves the tensors.
  w.q_len = static_cast<int>(max64(0, min64(min64(q_end, p.total_q) - w.q_start, p.max_q_len)));
  if (w.q_start < 0) w.q_len = 0;
  if (p.page_size > 0) {
    w.kv_start = 0;
    w.kv_len = static_cast<int>(min64(max64(p.seq_lens[w.seq], 0), p.block_table_stride * p.page_size));
  } else {
    w.kv_start = p.cu_seqlens_kv[w.seq];
    const int64_t kv_end = min64(p.cu_seqlens_kv[w.seq + 1], p.total_kv);
    w.kv_len = w.kv_start < 0 ? 0 : static_cast<int>(max64(0, kv_end - w.kv_start));
  }
  w.rows = w.q_len * w.group;
  // m-tiles in reverse launch order: the hardware dispatches y = 0 first, and with a causal
  // mask the last m-tiles carry the most keys — heaviest first keeps them out of the tail.
  w.row0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * bm;
  if (w.row0 >= w.rows) return false;  // the whole CTA leaves together
  const int last = min(w.row0 + bm, w.rows) - 1;
  int kv_hi = w.kv_len;
  if (p.causal) kv_hi = min(kv_hi, row_position(w, last) + 1);
  int kv_lo = 0;
  if (p.window_left >= 0) kv_lo = max(0, row_position(w, w.row0) - p.window_left);
  w.kv_lo = kv_lo;
  const int tiles = kv_hi > kv_lo ? (kv_hi - kv_lo + BN - 1) / BN : 0;
  const int per_split = (tiles + p.num_splits - 1) / p.num_splits;
  w.tile_begin = min(tiles, static_cast<int>(blockIdx.z) * per_split);
  w.tile_end = min(tiles, w.tile_begin + per_split);
  return true;
}

// Element offset of key j's row (head 0) in K or V (`stride`: token stride, or slot stride in
// a page), or false when the key does not exist (past kv_hi, or a block-table entry outside
// [0, num_pages)).
__device__ __forceinline__ bool key_offset(const wc_attention_params& p, const Work& w, int j, int kv_hi,
                                           int64_t stride, int64_t& off) {
  off = 0;
  if (j >= kv_hi) return false;
  if (p.page_size <= 0) {
    off = (w.kv_start + j) * stride;
    return true;
  }
  const int64_t page = p.block_table[w.seq * p.block_table_stride + j / p.page_size];
  if (page < 0 || page >= p.num_pages) return false;
  off = page * p.page_stride + (j % p.page_size) * stride;
  return true;
}

// Whether a query at position `pos` sees key j (below kv_hi; the causal and window masks).
__device__ __forceinline__ bool key_visible(const wc_attention_params& p, int pos, int j, int kv_hi) {
  return j < kv_hi && (!p.causal || j <= pos) && (p.window_left < 0 || j >= pos - p.window_left);
}
// Which key tiles every row of a CTA sees whole (no mask needed): keys below kv_hi, and, for
// all rows at positions [pos_lo, pos_hi], inside the causal and window bounds. Rows past
// w.rows hold zero queries and are never written, so they do not constrain it.
struct Visibility {
  int kv_hi, causal_hi, window_lo;  // keys [window_lo, min(kv_hi, causal_hi + 1)) are seen by all
  __device__ __forceinline__ bool all_see(int n0, int bn) const {
    return n0 >= window_lo && n0 + bn <= kv_hi && n0 + bn - 1 <= causal_hi;
  }
};
__device__ __forceinline__ Visibility visibility(const wc_attention_params& p, const Work& w, int bm, int kv_hi) {
  const int pos_lo = row_position(w, w.row0), pos_hi = row_position(w, min(w.row0 + bm, w.rows) - 1);
  return {kv_hi, p.causal ? pos_lo : INT32_MAX, p.window_left >= 0 ? pos_hi - p.window_left : INT32_MIN};
}

// A raw q·k product -> the softmax's exponent in the log2 domain (scale, soft-cap).
__device__ __forceinline__ float score_log2(const wc_attention_params& p, float qk_scale, float qk) {
  float x = qk * qk_scale;
  if (p.softcap > 0.0f) x = p.softcap * tanhf(x / p.softcap);
  return x * kLog2e;
}

// The wgmma prefill kernel (attention_sm90.cu): WC_ERR_UNSUPPORTED where it is not built for
// these parameters (dtype, head dims, FP8 K/V); launches the attention kernel only (the caller
// merges splits).
wc_status launch_attention_sm90(const wc_attention_params& p, cudaStream_t s);

}  // namespace wc
