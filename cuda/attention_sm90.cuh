// attention_sm90.cuh — what the two Hopper attention kernels (attention_sm90.cu: GQA prefill;
// attention_mla_sm90.cu: MLA decode) share beyond attention.cuh: their producers' key tiles by
// TMA. The host maps K and V as 2-D tensors of bytes (src/ops/attention/mod.rs, kv_tma: rows of
// p.k_stride / p.v_stride elements, boxes of p.tma_rows rows × 128 bytes, 128-byte swizzle);
// p.tma_rows == 0 means unmapped, and every tile then goes by cp.async.
#pragma once

#include "attention.cuh"
#include "sm90.cuh"

namespace wc {

// Whether key tile [n0, n0 + BN) goes by TMA: the host mapped K and V, every key exists — below
// kv_hi and, paged, on a page in range — and, paged, the tile starts a box (a window can start
// it mid-page). Called by whole warps, each getting the same answer; `page` is then lane b's page
// id, the one of box b.
template <int BN>
__device__ __forceinline__ bool tma_tile(const wc_attention_params& p, const Work& w, int n0, int kv_hi, int lane, int& page) {
  page = 0;
  if (p.tma_rows <= 0 || BN % p.tma_rows != 0 || n0 + BN > kv_hi) return false;
  if (p.page_size <= 0) return p.tma_rows == BN;
  if (n0 % p.tma_rows != 0 || p.page_size % p.tma_rows != 0) return false;  // boxes inside pages
  bool ok = true;
  if (lane < BN / p.tma_rows) {  // the tile's pages: n0 + BN <= kv_hi <= the table's span
    page = p.block_table[w.seq * p.block_table_stride + n0 / p.page_size + lane];
    ok = page >= 0 && page < p.num_pages;
  }
  return __ballot_sync(0xffffffffu, !ok) == 0;
}

// Warp 0 of a producer, for a tile tma_tile accepted (`page` its answer): marks the tile's BN
// keys present in `ok`, adds its bytes to the stage's full barrier `bar` (lane 0; the producer's
// threads still arrive on it, as for a tile by cp.async) and issues the tile of K into `sk` and,
// unless `sv` is null, of V into `sv`: CB 128-byte column blocks of BN rows × 128 bytes, 128-byte
// swizzled as the wgmma descriptors read them, from the kv head's first byte of each 16-bit row;
// one box of p.tma_rows rows per page (contiguous: the whole tile) and column block.
template <int BN, int CB>
__device__ __forceinline__ void tma_tile_load(const wc_attention_params& p, const Work& w, int n0, int page, int lane,
                                              int* ok, uint64_t* bar, uint8_t* sk, uint8_t* sv) {
  for (int r = lane; r < BN; r += 32) ok[r] = 1;
  if (lane == 0) sm90::mbar_expect_tx(bar, (sv ? 2 : 1) * BN * CB * 128);
  const int64_t k_head = w.kv_head * p.k_head_stride * 2, v_head = w.kv_head * p.v_head_stride * 2;
  const int boxes = p.page_size > 0 ? BN / p.tma_rows : 1;
  for (int b = 0; b < boxes; ++b) {
    const int pg = __shfl_sync(0xffffffffu, page, b);
    const int64_t row = p.page_size > 0 ? static_cast<int64_t>(pg) * p.page_size + n0 % p.page_size : w.kv_start + n0;
    if (lane != 0) continue;
    for (int cb = 0; cb < CB; ++cb) {
      const int at = cb * BN * 128 + b * p.tma_rows * 128;
      sm90::tma_load_2d(sk + at, &p.tma_k, bar, static_cast<int32_t>(k_head + cb * 128), static_cast<int32_t>(row));
      if (sv) sm90::tma_load_2d(sv + at, &p.tma_v, bar, static_cast<int32_t>(v_head + cb * 128), static_cast<int32_t>(row));
    }
  }
}

}  // namespace wc
