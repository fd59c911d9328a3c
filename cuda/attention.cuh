// attention.cuh — what the attention kernels share (attention_gqa.cu: mma.sync, every GPU;
// attention_sm90.cu: wgmma, sm_90a prefill; attention_mla.cu / attention_mla_sm90.cu: MLA
// decode on mma.sync / wgmma): the work
// of one CTA (sequence · kv head, m-tile, split) derived from the params with every device-side
// length clamped, the query position of a flattened row, the location of a key's row in
// contiguous or paged K/V, the online softmax, and the key-split epilogue.
// GQA packing: row r of a (sequence, kv head) is query token r / group, query head
// kv_head · group + r % group.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace wc {

constexpr float kLn2 = 0.6931471805599453f;

struct Work {
  int seq, kv_head, group, rows, row0;
  int64_t q_start, kv_start;  // kv_start: first key row (contiguous K/V only)
  int q_len, kv_len;
  int kv_lo, tile_begin, tile_end;  // key tiles [tile_begin, tile_end) of BN keys from kv_lo
  int kv_hi;                        // keys past this are never seen (kv_len, or the causal bound)
};

// Position of flattened row r of this (sequence, kv head): its query token's position.
__device__ __forceinline__ int row_position(const Work& w, int r) { return w.kv_len - w.q_len + r / w.group; }

// Keys are indexed with int: a sequence's length (device data) is clamped so that a tile running
// past its last key (n0 + BN, BN <= 128) and every key index stay inside int32. (A paged table of
// 2^23 pages of 256 and a seq_len of 2^31 - 1, with a window, had wrapped a key index negative
// and read the block table 32 MB before its start.) No cache holds 2^31 keys of one sequence.
constexpr int64_t kMaxKeys = INT32_MAX - 256;

// The first key a query at `pos` sees through the window (window_left >= 0): pos - window_left
// in 64 bits, clamped to int. (In int, a window near 2^31 below a negative position, a query
// past its sequence's keys, wrapped positive and hid every key of the tile.)
__device__ __forceinline__ int window_start(const wc_attention_params& p, int pos) {
  return static_cast<int>(max64(static_cast<int64_t>(pos) - p.window_left, INT32_MIN));
}

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
    w.kv_len = static_cast<int>(min64(min64(max64(p.seq_lens[w.seq], 0), p.block_table_stride * p.page_size), kMaxKeys));
  } else {
    w.kv_start = p.cu_seqlens_kv[w.seq];
    const int64_t kv_end = min64(p.cu_seqlens_kv[w.seq + 1], p.total_kv);
    w.kv_len = w.kv_start < 0 ? 0 : static_cast<int>(min64(max64(0, kv_end - w.kv_start), kMaxKeys));
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
  if (p.window_left >= 0) kv_lo = max(0, window_start(p, row_position(w, w.row0)));
  w.kv_lo = kv_lo;
  w.kv_hi = kv_hi;
  const int tiles = kv_hi > kv_lo ? (kv_hi - kv_lo + BN - 1) / BN : 0;
  const int per_split = (tiles + p.num_splits - 1) / p.num_splits;
  w.tile_begin = min(tiles, static_cast<int>(blockIdx.z) * per_split);
  w.tile_end = min(tiles, w.tile_begin + per_split);
  return true;
}

// cp.async of the CTA's BM query rows (GQA-packed: row r is token r / group, head
// kv_head · group + r % group; rows past w.rows zero-filled), 16-byte unit u of row r to
// dst(r, u), by threads tid, tid + threads, ...
template <typename T, int HD, int BM, typename Dst>
__device__ __forceinline__ void load_q(const wc_attention_params& p, const Work& w, int tid, int threads, Dst dst) {
  constexpr int kUnits = HD / 8;
  const T* q = static_cast<const T*>(p.q);
  for (int i = tid; i < BM * kUnits; i += threads) {
    const int r = i / kUnits, u = i % kUnits;
    const int gr = w.row0 + r;
    const bool valid = gr < w.rows;
    const int t = valid ? gr / w.group : 0;
    const int h = w.kv_head * w.group + (valid ? gr % w.group : 0);
    const T* src = q + (w.q_start + t) * p.q_stride + static_cast<int64_t>(h) * HD + u * 8;
    cp_async16(dst(r, u), valid ? src : q, valid);
  }
}

// Element offset of key j's row (head 0) in K or V (`stride`: token stride, or slot stride in
// a page), or false when the key does not exist (past kv_hi, or a block-table entry outside
// [0, num_pages)). Pages are a power of two in size (the launcher refuses others): page and row
// by shift and mask, not a division per 16-byte copy (the decode loaders call this for each).
__device__ __forceinline__ bool key_offset(const wc_attention_params& p, const Work& w, int j, int kv_hi,
                                           int64_t stride, int64_t& off) {
  off = 0;
  if (j >= kv_hi) return false;
  if (p.page_size <= 0) {
    off = (w.kv_start + j) * stride;
    return true;
  }
  const int shift = __ffs(p.page_size) - 1;  // j >= 0
  const int64_t page = p.block_table[w.seq * p.block_table_stride + (j >> shift)];
  if (page < 0 || page >= p.num_pages) return false;
  off = page * p.page_stride + (j & (p.page_size - 1)) * stride;
  return true;
}

// A thread's two rows of a 16-row tile starting at CTA row r0 (the accumulator layout: rows
// r0 + g and r0 + g + 8, g = lane / 4): whether each holds a query, and its position.
__device__ __forceinline__ void tile_rows(const Work& w, int r0, int g, bool (&ok)[2], int (&pos)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int gr = w.row0 + r0 + g + 8 * h;
    ok[h] = gr < w.rows;
    pos[h] = ok[h] ? row_position(w, gr) : 0;
  }
}

// Whether a query at position `pos` sees key j (below kv_hi; the causal and window masks).
__device__ __forceinline__ bool key_visible(const wc_attention_params& p, int pos, int j, int kv_hi) {
  return j < kv_hi && (!p.causal || j <= pos) && (p.window_left < 0 || j >= window_start(p, pos));
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
  return {kv_hi, p.causal ? pos_lo : INT32_MAX, p.window_left >= 0 ? window_start(p, pos_hi) : INT32_MIN};
}

// How a raw q·k product becomes the softmax's exponent in the log2 domain: qk · scale · log2(e),
// or with a soft-cap c: c · tanh(qk · scale / c) · log2(e) (scale = p.scale · p.k_scale). Without
// a soft-cap (and with a positive scale) the scores stay raw (`folded`): the tile max of the raw
// scores times `unit` is the max of the exponents, and the softmax applies `unit` in the same
// FFMA that subtracts the max. Otherwise `operator()` maps each score and `unit` is 1.
struct ScoreMap {
  float pre, post, unit;
  bool capped, folded;
  // q_unscale: the factor by which the kernel divided its queries (a power of two; 1 if not).
  __device__ __forceinline__ static ScoreMap of(const wc_attention_params& p, float q_unscale = 1.0f) {
    const float scale = p.scale * p.k_scale * q_unscale;
    ScoreMap m;
    m.capped = p.softcap > 0.0f;
    m.folded = !m.capped && scale * kLog2e > 0.0f;
    m.pre = m.capped ? scale / p.softcap : scale * kLog2e;
    m.post = m.capped ? p.softcap * kLog2e : 1.0f;
    m.unit = m.folded ? scale * kLog2e : 1.0f;
    return m;
  }
  // The score softmax_stats takes for a raw product (the raw product itself when folded).
  __device__ __forceinline__ float operator()(float qk) const {
    return folded ? qk : capped ? tanhf(qk * pre) * post : qk * pre;
  }
};

// Scale, soft-cap and mask one key tile's scores for a thread's two rows, in the accumulator
// layout (s[4i + e]: row h = e >> 1, column col0 + 8i + 2 t4 + (e & 1) of the tile, NS8 blocks
// of 8 columns; ok[col]: the key exists; n0: the tile's first key). A tile every row sees whole
// (`unmasked`) with raw scores (ScoreMap::folded) is left as it is: the softmax's FFMA scales it.
template <int NS8>
__device__ __forceinline__ void mask_tile(float* s, const wc_attention_params& p, const ScoreMap& score, bool unmasked,
                                          const int* ok, int n0, int col0, int t4, const bool (&row_ok)[2],
                                          const int (&row_pos)[2], int kv_hi) {
  if (unmasked && score.folded) return;
#pragma unroll
  for (int i = 0; i < NS8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e >> 1;
      const int col = col0 + i * 8 + 2 * t4 + (e & 1);
      const float x = score(s[4 * i + e]);
      s[4 * i + e] = (unmasked || (row_ok[h] && ok[col] && key_visible(p, row_pos[h], n0 + col, kv_hi))) ? x : -INFINITY;
    }
}

// Each of a thread's two rows' largest score in the tile (the quad of lanes sharing the row
// agrees), in softmax_stats's layout.
template <int NS8>
__device__ __forceinline__ void row_max(const float* s, float (&tile_max)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float t = -INFINITY;
#pragma unroll
    for (int i = 0; i < NS8; ++i) t = fmaxf(t, fmaxf(s[4 * i + 2 * h], s[4 * i + 2 * h + 1]));
    t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 1));
    tile_max[h] = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 2));
  }
}

// softmax_stats with each row's tile max given: a tile whose columns are spread over several
// warps (MLA's Hopper kernel: two warpgroups, half the keys each) takes the max over all of
// them; l then sums this thread's columns only.
template <int NS8>
__device__ __forceinline__ void softmax_stats_given_max(float* s, float (&m)[2], float (&l)[2], float (&corr)[2],
                                                        float unit, const float (&tile_max_of)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float tile_max = tile_max_of[h];
    const float m_new = fmaxf(m[h], tile_max * unit);
    const float base = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: p = 0
    corr[h] = exp2_ftz(m[h] - base);
    m[h] = m_new;
    l[h] *= corr[h];
#pragma unroll
    for (int i = 0; i < NS8; ++i) {
      s[4 * i + 2 * h] = exp2_ftz(fmaf(s[4 * i + 2 * h], unit, -base));
      s[4 * i + 2 * h + 1] = exp2_ftz(fmaf(s[4 * i + 2 * h + 1], unit, -base));
      l[h] += s[4 * i + 2 * h] + s[4 * i + 2 * h + 1];
    }
  }
}

// One key tile's online-softmax statistics for a thread's two rows (h = 0, 1) in the mma.sync /
// wgmma accumulator layout, which both kernels share: s[4i + 2h + e] is row h's score at
// column 8i + 2 t4 + e (NS8 blocks of 8 columns), −∞ where masked, and the quad of lanes sharing
// t4's row holds the row's tile. The exponent of a score is s · unit in the log2 domain
// (ScoreMap; unit > 0). Updates the running max m and sum l (in exponent units), turns s into
// probabilities, and returns in corr the factor by which each row's output accumulators must be
// rescaled (exp2 of the old max minus the new).
template <int NS8>
__device__ __forceinline__ void softmax_stats(float* s, float (&m)[2], float (&l)[2], float (&corr)[2], float unit) {
  float tile_max[2];
  row_max<NS8>(s, tile_max);
  softmax_stats_given_max<NS8>(s, m, l, corr, unit, tile_max);
}

// Rescales output accumulators o (NO8 blocks of 8 columns, the same layout) by corr.
template <int NO8>
__device__ __forceinline__ void rescale_rows(float* o, const float (&corr)[2]) {
#pragma unroll
  for (int i = 0; i < NO8; ++i) {
    o[4 * i + 0] *= corr[0];
    o[4 * i + 1] *= corr[0];
    o[4 * i + 2] *= corr[1];
    o[4 * i + 3] *= corr[1];
  }
}

// softmax_stats, then the output accumulators o (NO8 blocks) rescaled at once.
template <int NS8, int NO8>
__device__ __forceinline__ void softmax_step(float* s, float* o, float (&m)[2], float (&l)[2], float unit) {
  float corr[2];
  softmax_stats<NS8>(s, m, l, corr, unit);
  rescale_rows<NO8>(o, corr);
}

// Threads per key row in load_rows: THREADS / rows (every thread copies), at least 2, halved
// until it divides the row's chunks.
__host__ __device__ constexpr int lanes_per_row(int chunks, int threads, int rows) {
  int lanes = threads / rows > 2 ? threads / rows : 2;
  while (lanes > 1 && chunks % lanes != 0) lanes /= 2;
  return lanes;
}

// The 16-byte chunk slot that chunk c of row r takes in a dense raw FP8 tile of D-byte rows
// (load_rows writes it, convert_fp8 reads it): XOR-swizzled inside the row's 128-byte lines so
// that the rows a warp copies at once fall into distinct bank groups. Unswizzled, the decode
// loader's 16 rows of 128 bytes (two lanes a row) put all 32 lanes' 16-byte writes into 2 of
// the 8 bank groups: 16 wavefronts an instruction instead of 4, with the decode over an FP8
// cache shared-memory-bound. With the swizzle every loader and convert_fp8 configuration (head
// dims 64–256, decode and prefill, whole-warp and quarter-warp models) is at 4 (docs/attention.md,
// 2026-12-03). Rows of 96 bytes (6 chunks) and MLA's 576 are already spread, and stay as they
// are. (attention_sm90.cu's producer maps threads to chunks differently: its raw_offset.)
template <int D>
__device__ __forceinline__ int raw_chunk(int r, int c) {
  constexpr int kChunks = D / 16;
  if constexpr (kChunks % 8 == 0) {
    const int b = r & 7;
    return c ^ (((b & 1) << 2) | (b & 2) | (b >> 2));  // the row's low 3 bits reversed
  } else if constexpr (kChunks == 4) {
    return c ^ (r & 2);  // two rows a line: rows r and r + 2 share its half
  } else {
    return c;
  }
}

// Rows of key tile `tile` of one of K or V (D elements per head) into one stage: the padded
// tile (KV = T) or dense raw rows of D bytes (KV = uint8_t, FP8; chunks at raw_chunk). `ok`, when given, records
// which keys exist. Returns whether every key this thread loaded exists.
template <typename KV, int D, int BN, int THREADS>
__device__ __forceinline__ bool load_rows(const wc_attention_params& p, const Work& w, const void* base,
                                          int64_t stride, int64_t head_stride, int tile, int kv_hi, KV* dst,
                                          int pitch, int* ok) {
  constexpr int kPer = 16 / sizeof(KV);  // elements per 16-byte chunk
  constexpr int kChunks = D / kPer;
  // kLanes threads share a row: each works out the row's offset (a block-table read and 64-bit
  // math, some 60 instructions) once and copies kEach of its chunks, kLanes apart (a warp's copy
  // instruction covers whole 32-byte sectors), rather than once per 16-byte chunk, which made
  // the decode loaders issue-bound (2026-12-02, from the SASS). kLanes: at least 2, and enough
  // that every thread copies (BN · kLanes ≥ THREADS; with fewer, the copying warps' schedulers
  // carried the whole load while the others waited at the tile's barrier: the prefill tiles of
  // 32 keys), a power of two dividing kChunks.
  constexpr int kLanes = lanes_per_row(kChunks, THREADS, BN);
  constexpr int kEach = kChunks / kLanes;
  const KV* src = static_cast<const KV*>(base);
  const int n0 = w.kv_lo + tile * BN;
  bool all = true;
  for (int i = threadIdx.x; i < BN * kLanes; i += THREADS) {
    const int r = i / kLanes, c0 = i % kLanes;
    int64_t off;
    const bool valid = key_offset(p, w, n0 + r, kv_hi, stride, off);
    // A missing key copies nothing (size 0) from an address inside the first row.
    const KV* from = valid ? src + off + w.kv_head * head_stride : src;
#pragma unroll
    for (int e = 0; e < kEach; ++e) {
      const int c = c0 + e * kLanes;
      const int slot = std::is_same<KV, uint8_t>::value ? raw_chunk<D>(r, c) : c;
      cp_async16(dst + r * pitch + slot * kPer, from + c * kPer, valid);
    }
    if (ok != nullptr && c0 == 0) ok[r] = valid;
    all = all && valid;
  }
  return all;
}

// The mma.sync kernels' cp.async ring of S key-tile stages: one commit group per tile, one block
// barrier per tile. `load(tile, stage)` issues a tile's copies (load_rows) and returns whether
// every key the thread loaded exists.
template <int S>
struct CpAsyncRing {
  uint32_t ok_bits = 0;  // bit s: every key this thread loaded into stage s exists

  // Prologue: the CTA's first S - 1 tiles, one commit group each (whatever was issued before,
  // e.g. Q, joins the first).
  template <typename Load>
  __device__ __forceinline__ void start(const Work& w, int n_iter, Load& load) {
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
      if (s < n_iter && load(w.tile_begin + s, s)) ok_bits |= 1u << s;
      cp_async_commit();
    }
  }

  // Before computing on tile `it` (stage it % S): it has landed (this thread's copies: its group
  // and all older ones), and after the barrier every thread's have, and every warp is done with
  // tile it - 1, whose stage the next load (tile it + S - 1) refills. Returns whether every key
  // of tile it exists (no thread loaded a missing one).
  template <typename Load>
  __device__ __forceinline__ bool advance(const Work& w, int it, int n_iter, Load& load) {
    cp_async_wait<S - 2>();
    const bool keys_exist = __syncthreads_and((ok_bits >> (it % S)) & 1u);
    const int next = it + S - 1, ns = next % S;
    ok_bits &= ~(1u << ns);
    if (next < n_iter && load(w.tile_begin + next, ns)) ok_bits |= 1u << ns;
    cp_async_commit();
    return keys_exist;
  }
};

// FP8 K/V: the kernels run the tensor cores in f16 on tiles holding each e4m3 value · 2^-8
// (e4m3x4_to_f16x2_scaled, common.cuh: exact, normals and subnormals alike, three integer ops
// per four bytes); the scores and the outputs take the 2^8 back (ScoreMap::of's q_unscale, the
// epilogue's v_scale). kKvUnscale<FP8>: the factor a kernel's K/V tiles were divided by (1 for
// K/V in the query dtype).
template <bool FP8>
constexpr float kKvUnscale = FP8 ? 256.0f : 1.0f;

// FP8 e4m3 raw rows (HD bytes) -> f16 tiles of value · 2^-8 (padded pitch), 16 bytes per step.
template <int HD, int BN, int THREADS>
__device__ __forceinline__ void convert_fp8(const uint8_t* raw, __half* dst, int pitch) {
  constexpr int kChunks = HD / 16;
#pragma unroll 1
  for (int i = threadIdx.x; i < BN * kChunks; i += THREADS) {
    const int r = i / kChunks, c = i % kChunks;
    const uint4 b = *reinterpret_cast<const uint4*>(raw + r * HD + raw_chunk<HD>(r, c) * 16);
    uint4 lo, hi;  // elements 0-7, 8-15
    e4m3x4_to_f16x2_scaled(b.x, lo.x, lo.y);
    e4m3x4_to_f16x2_scaled(b.y, lo.z, lo.w);
    e4m3x4_to_f16x2_scaled(b.z, hi.x, hi.y);
    e4m3x4_to_f16x2_scaled(b.w, hi.z, hi.w);
    *reinterpret_cast<uint4*>(dst + r * pitch + c * 16) = lo;
    *reinterpret_cast<uint4*>(dst + r * pitch + c * 16 + 8) = hi;
  }
}

// FP8 K/V with bf16 queries: the kernels compute in f16, since e4m3 -> f16 is exact and one
// instruction per pair (to bf16 it takes four). A CTA's bf16 Q tile in shared memory (16-byte unit
// u of row r at at(r, u)) becomes f16 · 2^-e in place, e = floor(log2 max |q|) - 14 over the tile
// (clamped to [-100, 114]): the largest lands in [2^14, 2^15), so nothing overflows and every
// value keeps f16's 11 bits relative to it. Threads tid, tid + threads, ... convert the units
// they copied (load_q's mapping) once their copies landed; sync() is a barrier over those
// threads, scratch a float per warp of them, store(addr, v) the 16-byte shared-memory store.
// Returns 2^e, the factor the scores take back (ScoreMap::of's q_unscale).
template <int BM, int HD, typename At, typename Sync, typename Store>
__device__ __forceinline__ float q_to_f16(int tid, int threads, At at, Sync sync, float* scratch, Store store) {
  constexpr int U = HD / 8;
  auto lo = [](uint32_t w) { return __uint_as_float(w << 16); };  // the bf16 in the low half
  auto hi = [](uint32_t w) { return __uint_as_float(w & 0xffff0000u); };
  // The largest finite |q| (fmaxf drops NaN; an infinity counts 0): one head's inf must not set
  // the exponent and flush the other heads' queries in the tile to 0 (it stays inf after scaling).
  auto fin = [](float x) { return fabsf(x) < INFINITY ? fabsf(x) : 0.0f; };
  float amax = 0.0f;
  for (int i = tid; i < BM * U; i += threads) {
    const uint4 b = *reinterpret_cast<const uint4*>(at(i / U, i % U));
    for (uint32_t w : {b.x, b.y, b.z, b.w}) amax = fmaxf(amax, fmaxf(fin(lo(w)), fin(hi(w))));
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (tid % 32 == 0) scratch[tid / 32] = amax;
  sync();
  for (int w = 0; w < threads / 32; ++w) amax = fmaxf(amax, scratch[w]);
  const int e = min(max(static_cast<int>((__float_as_uint(amax) >> 23) & 0xff) - 127 - 14, -100), 114);
  const float down = __uint_as_float(static_cast<uint32_t>(127 - e) << 23);  // 2^-e
  for (int i = tid; i < BM * U; i += threads) {
    auto* a = at(i / U, i % U);
    const uint4 b = *reinterpret_cast<const uint4*>(a);
    uint32_t h[4];
    const uint32_t words[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const __half2 two = __floats2half2_rn(lo(words[q]) * down, hi(words[q]) * down);
      h[q] = *reinterpret_cast<const uint32_t*>(&two);
    }
    store(a, make_uint4(h[0], h[1], h[2], h[3]));
  }
  return __uint_as_float(static_cast<uint32_t>(127 + e) << 23);  // 2^e
}

// q_to_f16 in the mma.sync kernels (every thread of the CTA; Q rows `pitch` elements apart, Q's
// cp.async group followed by S - 1 tile groups; scratch a float per warp): waits for Q, converts
// it, and returns 2^e. The loop's first barrier publishes Q.
template <int BM, int HD, int S>
__device__ __forceinline__ float q_to_f16_cta(__half* sq, int pitch, int threads, float* scratch) {
  cp_async_wait<S - 1>();
  return q_to_f16<BM, HD>(
      threadIdx.x, threads, [&](int r, int u) { return sq + r * pitch + u * 8; }, [] { __syncthreads(); }, scratch,
      [](__half* a, uint4 v) { *reinterpret_cast<uint4*>(a) = v; });
}

// The epilogue both mma.sync kernels share: WK warps (or warp groups) split the keys, and each
// left its rows' (m, l) in s_m / s_l [WK][BM] and unnormalised outputs in s_o [WK][BM][HDV]
// (f32, log2 domain). Combines them, normalises (times v_scale: p.v_scale, and 2^8 more over an
// FP8 cache), and writes out (T) and lse, or with split-KV the f32 partials of this split.
template <typename T, int HDV, int BM, int WK, int THREADS>
__device__ __forceinline__ void store_rows(const wc_attention_params& p, const Work& w, const float* s_o,
                                           const float* s_m, const float* s_l, float v_scale) {
  // Four consecutive columns a thread: the row's combination (max, weights, sum, lse, token
  // and head) is worked out once per four outputs, not per output (it was ≈ 160 instructions
  // an element, exposed at the end of every CTA). The values are the same, bit for bit.
  constexpr int kCols = 4;
  static_assert(HDV % kCols == 0, "four columns a thread");
  T* out = static_cast<T*>(p.out);
  for (int idx = threadIdx.x; idx < BM * (HDV / kCols); idx += THREADS) {
    const int r = idx / (HDV / kCols), d0 = idx % (HDV / kCols) * kCols;
    const int gr = w.row0 + r;
    if (gr >= w.rows) continue;
    float mt = -INFINITY;
#pragma unroll
    for (int c = 0; c < WK; ++c) mt = fmaxf(mt, s_m[c * BM + r]);
    float lt = 0.0f, ot[kCols] = {};
    if (mt != -INFINITY) {
#pragma unroll
      for (int c = 0; c < WK; ++c) {
        const float f = exp2f(s_m[c * BM + r] - mt);
        lt += s_l[c * BM + r] * f;
        const float4 o = *reinterpret_cast<const float4*>(&s_o[(c * BM + r) * HDV + d0]);
        ot[0] += o.x * f;
        ot[1] += o.y * f;
        ot[2] += o.z * f;
        ot[3] += o.w * f;
      }
    }
    const float lse = lt > 0.0f ? (mt + log2f(lt)) * kLn2 : -INFINITY;
    const int64_t tok = w.q_start + gr / w.group;
    const int head = w.kv_head * w.group + gr % w.group;
    const int64_t rowid = (static_cast<int64_t>(blockIdx.z) * p.total_q + tok) * p.num_q_heads + head;
#pragma unroll
    for (int k = 0; k < kCols; ++k) {
      const float val = lt > 0.0f ? ot[k] / lt * v_scale : 0.0f;
      if (p.num_splits > 1) p.partial_out[rowid * HDV + d0 + k] = val;
      else out[tok * p.out_stride + static_cast<int64_t>(head) * HDV + d0 + k] = from_float<T>(val);
    }
    if (d0 == 0) {
      if (p.num_splits > 1) p.partial_lse[rowid] = lse;
      else if (p.lse != nullptr) p.lse[tok * p.num_q_heads + head] = lse;
    }
  }
}

// Launches an attention kernel on the (sequence · kv head, m-tile of bm rows, split) grid; or,
// with `occupancy` set, launches nothing and stores the CTAs per SM the occupancy calculator
// gives for this kernel, block size and shared memory.
template <typename Kernel>
wc_status launch_grid(Kernel kernel, const wc_attention_params& p, int bm, int threads, int smem, cudaStream_t s,
                      int* occupancy) {
  cudaError_t e = allow_dynamic_smem(kernel, smem);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  if (occupancy != nullptr)
    return static_cast<wc_status>(cudaOccupancyMaxActiveBlocksPerMultiprocessor(occupancy, kernel, threads, smem));
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t m_tiles = (p.max_q_len * group + bm - 1) / bm;
  const int64_t pairs = static_cast<int64_t>(p.num_seqs) * p.num_kv_heads;
  if (pairs > INT32_MAX || m_tiles > 65535 || p.num_splits > 65535) return WC_ERR_INVALID_ARG;
  const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(m_tiles), static_cast<unsigned>(p.num_splits));
  kernel<<<grid, threads, smem, s>>>(p);
  return launch_status();
}

// The wgmma prefill kernel (attention_sm90.cu): WC_ERR_UNSUPPORTED where it is not built for
// these parameters (dtype, head dims, FP8 K/V); launches the attention kernel only (the caller
// merges splits), or reports its occupancy (launch_grid).
wc_status launch_attention_sm90(const wc_attention_params& p, cudaStream_t s, int* occupancy);

// The MLA decode kernel (attention_mla.cu; head dims (576, 512), V = K's first 512 elements):
// launches the attention kernel only (the caller merges splits), or reports its occupancy.
wc_status launch_attention_mla(const wc_attention_params& p, cudaStream_t s, int* occupancy);
// Its Hopper kernel (attention_mla_sm90.cu; sm_90a, 64-row tiles): the same contract.
wc_status launch_attention_mla_sm90(const wc_attention_params& p, cudaStream_t s, int* occupancy);

}  // namespace wc
