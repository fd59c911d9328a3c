// rope.cu — the RoPE family and the paged-KV-cache write: rope, append_kv, rope_append_kv,
// qk_norm_rope (with or without the append).
//
// Contract (warpcore/rope.h; src/ops/rope/ and src/kv_cache.rs for the full text):
//   q [num_tokens, num_q_heads, head_dim], k [num_tokens, num_kv_heads, head_dim], any token and
//   head strides, head_dim dense; rotated in place. The rotary part of a head is
//   [rotary_offset, rotary_offset + rotary_dim); NeoX pairs (r[i], r[i + rotary_dim/2]), GPT-J
//   pairs (r[2i], r[2i+1]); pair i at position p turns by p * inv_freq[i] (the table, with any
//   scaling, comes from the host in f64), cos and sin scaled by attention_factor. f32 math,
//   one rounding at each store.
//   Cache writes: token t goes to slot s = slot_mapping[t] (page s / page_size, row
//   s % page_size); s < 0 is padding (skipped); s >= num_pages * page_size is skipped and counted
//   in error_count: no index read from memory ever addresses outside the cache. The cache gets
//   the k values exactly as stored in k (rotated and rounded to T), so a fused op equals the
//   unfused sequence bit for bit; an FP8 cache stores round_e4m3(x / scale) (IEEE f32 division,
//   saturating RNE).
//
// Roofline: ~10 FLOPs per element against 2 (rope) to 4 bytes moved per element: purely
// bandwidth-bound. rope bf16 on q[16384, 32, 128] + k[16384, 8, 128] moves 335.5 MB: 83 us at
// the H200's 4.06 TB/s. cos/sin are computed on the fly, once per (token, pair), into shared
// memory: 64 sincos per token against 40 heads * 128 elements moved. A cos/sin cache would add
// 512 B per token of reads (+2.5%) and a table to keep; see docs/rope.md.
//
// Thread mapping:
//   items_kernel        one row of threads per token: one token a block, or (tokens of at
//                       most 64 threads) up to 128 threads of rows, at most 32. The token's
//                       work is a flat list of "items":
//                       N rotated pairs of a q head, of a k head (also written to the cache),
//                       then (when appending) 16-byte chunks of k's unrotated part and of v,
//                       copied (or quantized) into the cache. Each thread takes 2 items per
//                       round and issues their loads before it reads the position, builds the
//                       cos/sin table and waits at the block barrier, so the loads overlap that
//                       prologue (the block size makes one round the common case). 16-byte
//                       accesses when sizes, strides and pointers allow, else the element-wise
//                       path. Serves rope, rope_append_kv, append_kv (rotary_dim = 0: copy
//                       items only).
//   qk_norm_rope_kernel one block per token, one warp per head (head <= 512 elements held in
//                       registers; the warp's next head's first 32 vectors load while it works
//                       on this one): warp-sum of squares, normalise, stage the rotary part in
//                       the warp's shared memory so each lane reads its pair partner, rotate,
//                       store; then (when appending) warps copy the v heads into the cache.
#include <cstring>
#include <type_traits>

#include "common.cuh"
#include "rms_norm.cuh"
#include "rope/args.cuh"

namespace wc {
namespace {

// ------------------------------------------------------------------ items_kernel

constexpr int kRound = 2;          // items per thread per round (all loaded before any is finished)
constexpr int kMaxRows = 32;       // tokens per block of items_kernel
constexpr int kRowsThreads = 128;  // a block of rows fills up to this many threads (finer-grained
                                   // occupancy than 256 at the rows kernels' 48-76 registers)
constexpr int kMaxRowBytes = 48 << 10;  // their cos/sin tables' shared memory (no opt-in needed)

// One item between its load and its finish. Rotary items hold N pairs: NeoX x1 in `a`, x2 in
// `b`; GPT-J the 2N interleaved elements in `a`. Copy items (k's unrotated part, v) hold M
// elements in `a` (M = A on the vector path; 1 of GPT-J's 2 on the element-wise path).
template <typename T, int N, bool NEOX>
struct Work {
  static constexpr bool kVector = N > 1;
  static constexpr int A = NEOX ? N : 2 * N;
  static constexpr int M = kVector ? kVec16<T> : 1;
  static_assert(!kVector || A == M, "a vector item is 16 bytes of T");
  enum Kind : int { kNone, kRotQ, kRotK, kPassK, kCopyV };
  Pack<T, A> a;
  Pack<T, N> b;
  const T* src;  // rotary: the head's rotary part; copy: the chunk
  int kind;
  int head;
  int at;        // rotary: first pair; copy: element within the head
};

// Item i of token t: which item it is and where its data lives (no memory access). Items of
// one head are adjacent, so consecutive threads touch consecutive 16-byte chunks.
template <typename T, int N, bool NEOX>
__device__ __forceinline__ void decode(const Args& a, int64_t t, int i, Work<T, N, NEOX>& w) {
  using W = Work<T, N, NEOX>;
  const int per_head = a.half / N;  // rotary items per head
  const int rot_q = a.nq * per_head;
  const int rot_end = rot_q + a.nk * per_head;
  const int pass = (a.head_dim - a.rotary_dim) / W::M;  // k's unrotated chunks per head
  const int whole = a.head_dim / W::M;                  // v's chunks per head
  const bool append = a.k_pages != nullptr;
  const int pass_end = rot_end + (append ? a.nk * pass : 0);
  const int end = pass_end + a.nv * whole;
  w.kind = W::kNone;
  if (i >= end) return;
  if (i < rot_end) {
    const bool is_q = i < rot_q;
    const int j = is_q ? i : i - rot_q;
    w.kind = is_q ? W::kRotQ : W::kRotK;
    w.head = j / per_head;
    w.at = (j - w.head * per_head) * N;
    w.src = (is_q ? static_cast<const T*>(a.q) + t * a.q_ts + w.head * a.q_hs
                  : static_cast<const T*>(a.k) + t * a.k_ts + w.head * a.k_hs) + a.rot_off;
  } else if (i < pass_end) {
    const int j = i - rot_end;
    w.kind = W::kPassK;
    w.head = j / pass;
    w.at = (j - w.head * pass) * W::M;  // index into the unrotated elements of the head
    if (w.at >= a.rot_off) w.at += a.rotary_dim;
    w.src = static_cast<const T*>(a.k) + t * a.k_ts + w.head * a.k_hs + w.at;
  } else {
    const int j = i - pass_end;
    w.kind = W::kCopyV;
    w.head = j / whole;
    w.at = (j - w.head * whole) * W::M;
    w.src = static_cast<const T*>(a.v) + t * a.v_ts + w.head * a.v_hs + w.at;
  }
}

template <typename T, int N, bool NEOX>
__device__ __forceinline__ void load(int half, Work<T, N, NEOX>& w) {
  using W = Work<T, N, NEOX>;
  if (w.kind == W::kRotQ || w.kind == W::kRotK) {
    if constexpr (NEOX) {
      w.a = load_elems<T, N, W::kVector>(w.src + w.at);
      w.b = load_elems<T, N, W::kVector>(w.src + w.at + half);
    } else {
      w.a = load_elems<T, 2 * N, W::kVector>(w.src + 2 * w.at);
    }
  } else if (w.kind != W::kNone) {
    const Pack<T, W::M> m = load_elems<T, W::M, W::kVector>(w.src);
#pragma unroll
    for (int k = 0; k < W::M; ++k) w.a.v[k] = m.v[k];
  }
}

// Rotates and stores a rotary item in place (and k's into the cache row), or copies a copy
// item into the cache row; nothing goes to the cache when the token's slot was skipped.
template <typename T, typename C, int N, bool NEOX>
__device__ __forceinline__ void finish(const Args& a, const float2* cs, const CacheRows<C>& rows, Work<T, N, NEOX>& w) {
  using W = Work<T, N, NEOX>;
  constexpr bool V = W::kVector;
  if (w.kind == W::kRotQ || w.kind == W::kRotK) {
    T* x = const_cast<T*>(w.src);
    C* crow = (w.kind == W::kRotK && rows.k != nullptr) ? rows.k + w.head * a.c_head_stride + a.rot_off : nullptr;
    // The item's pairs [at, at + N) lie in one padded group of 16 (N divides 16, at is a
    // multiple of N): consecutive slots.
    static_assert(16 % N == 0, "an item's pairs stay inside one group of 16 table slots");
    const float2* tab = cs + cs_slot(w.at);
    if constexpr (NEOX) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float x1 = to_float(w.a.v[k]), x2 = to_float(w.b.v[k]);
        const float2 c = tab[k];
        w.a.v[k] = from_float<T>(rot_first(x1, x2, c));
        w.b.v[k] = from_float<T>(rot_second(x2, x1, c));
      }
      store_elems<T, N, V>(x + w.at, w.a);
      store_elems<T, N, V>(x + w.at + a.half, w.b);
      if (crow != nullptr) {
        store_cache<T, C, N, V>(crow + w.at, w.a, a.k_scale);
        store_cache<T, C, N, V>(crow + w.at + a.half, w.b, a.k_scale);
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float x1 = to_float(w.a.v[2 * k]), x2 = to_float(w.a.v[2 * k + 1]);
        const float2 c = tab[k];
        w.a.v[2 * k] = from_float<T>(rot_first(x1, x2, c));
        w.a.v[2 * k + 1] = from_float<T>(rot_second(x2, x1, c));
      }
      store_elems<T, 2 * N, V>(x + 2 * w.at, w.a);
      if (crow != nullptr) store_cache<T, C, 2 * N, V>(crow + 2 * w.at, w.a, a.k_scale);
    }
  } else if (w.kind != W::kNone && rows.k != nullptr) {
    const bool is_k = w.kind == W::kPassK;
    C* dst = (is_k ? rows.k : rows.v) + w.head * a.c_head_stride + w.at;
    Pack<T, W::M> m;
#pragma unroll
    for (int k = 0; k < W::M; ++k) m.v[k] = w.a.v[k];
    store_cache<T, C, W::M, V>(dst, m, is_k ? a.k_scale : a.v_scale);
  }
}

// N: pairs per rotary item (16 bytes of T per access, or 1 = the element-wise path). ROWS: the
// block serves blockDim.y tokens, one row of blockDim.x threads each (token blockIdx.x *
// blockDim.y + threadIdx.y; rows past the last token have no items and only meet the barrier);
// otherwise one token, blockIdx.x. (A template flag: the row's token and table offset cost the
// one-token kernels 3-4 registers, a block per SM at the bar shapes.) Every thread decodes and
// loads its first kRound items before the position, the cos/sin table and the slot are read, so
// a block's data loads overlap that prologue; later rounds (only when a token has more than
// kRound * blockDim.x items) load, then finish. The tables (one a row, a.table_slots float2
// each) are the dynamic shared memory.
template <typename T, typename C, int N, bool NEOX, bool ROWS>
__global__ void __launch_bounds__(kItemThreads) items_kernel(const __grid_constant__ Args a) {
  using W = Work<T, N, NEOX>;
  extern __shared__ float2 tables[];
  float2* cs = ROWS ? tables + threadIdx.y * a.table_slots : tables;
  // (int: the launcher keeps num_tokens + kMaxRows inside int32)
  const int64_t t = ROWS ? static_cast<int>(blockIdx.x * blockDim.y + threadIdx.y) : static_cast<int64_t>(blockIdx.x);
  const bool live = !ROWS || t < a.num_tokens;
  const int step = static_cast<int>(blockDim.x);
  W w[kRound];
  int base = threadIdx.x;
#pragma unroll
  for (int r = 0; r < kRound; ++r) {
    w[r].kind = W::kNone;
    if (live) decode(a, t, base + r * step, w[r]);
  }
#pragma unroll
  for (int r = 0; r < kRound; ++r) load(a.half, w[r]);
  if (live && a.half > 0) rope_table(a, load_index(a.positions, a.pos64, t), cs);
  const CacheRows<C> rows = live ? cache_rows<C>(a, t) : CacheRows<C>{nullptr, nullptr};
  __syncthreads();
  while (true) {
#pragma unroll
    for (int r = 0; r < kRound; ++r) finish<T, C, N, NEOX>(a, cs, rows, w[r]);
    if (w[kRound - 1].kind == W::kNone) break;  // this thread's items are done
    base += kRound * step;
#pragma unroll
    for (int r = 0; r < kRound; ++r) decode(a, t, base + r * step, w[r]);
#pragma unroll
    for (int r = 0; r < kRound; ++r) load(a.half, w[r]);
  }
}

int round_up_warp(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

// Vector path when every size, stride and pointer allows 16-byte accesses of T (and the matching
// width of C); otherwise the element-wise path. A token's row of threads: its items in as few
// rounds of kRound items per thread (<= 256 threads) as possible, spread evenly. Tokens of at
// most 64 such threads share a block (rows = 128 / row threads, at most kMaxRows, the tables
// within 48 KB): no thread idles but the block's last few, and each SM holds fewer, fuller
// blocks. (One token a block, rounded up to a warp, left 14 of 32 threads idle at 8 + 1 heads of
// 64, and the 32-blocks-an-SM limit then capped the bytes in flight.)
template <typename T, typename C>
wc_status launch_items(Args a, int64_t num_tokens, cudaStream_t s) {
  constexpr int W = kVec16<T>;
  const bool append = a.k_pages != nullptr;
  const bool vector =
      a.head_dim % W == 0 && a.rot_off % W == 0 && (a.neox ? a.half % W == 0 : a.rotary_dim % W == 0) &&
      a.q_ts % W == 0 && a.q_hs % W == 0 && a.k_ts % W == 0 && a.k_hs % W == 0 && aligned_to(16, a.q, a.k) &&
      (!append || (a.v_ts % W == 0 && a.v_hs % W == 0 && aligned_to(16, a.v) && a.page_stride % W == 0 &&
                   a.slot_stride % W == 0 && a.c_head_stride % W == 0 &&
                   aligned_to(W * static_cast<int>(sizeof(C)), a.k_pages, a.v_pages)));
  const int n = vector ? (a.neox ? W : W / 2) : 1;
  const int m = vector ? W : 1;
  const int64_t items = static_cast<int64_t>(a.nq + a.nk) * (a.half / n) +
                        (append ? static_cast<int64_t>(a.nk) * ((a.head_dim - a.rotary_dim) / m) + static_cast<int64_t>(a.nv) * (a.head_dim / m) : 0);
  if (items <= 0) return WC_OK;
  // (the rows kernels' token index, blockIdx.x * rows + row, stays below 2^31)
  if (items > INT32_MAX / 2 || num_tokens > INT32_MAX - kMaxRows) return WC_ERR_INVALID_ARG;
  const int64_t per_round = static_cast<int64_t>(kRound) * kItemThreads;
  const int64_t rounds = (items + per_round - 1) / per_round;
  const int per_token = static_cast<int>((items + kRound * rounds - 1) / (kRound * rounds));
  a.table_slots = a.half > 0 ? cs_slot(a.half - 1) + 1 : 0;
  const int table_bytes = a.table_slots * static_cast<int>(sizeof(float2));
  int rows = per_token > kRowsThreads / 2 ? 1 : kRowsThreads / per_token;
  rows = static_cast<int>(min64(min64(rows, kMaxRows), min64(num_tokens, table_bytes > 0 ? kMaxRowBytes / table_bytes : kMaxRows)));
  const dim3 block(rows == 1 ? round_up_warp(per_token) : per_token, static_cast<unsigned>(rows));
  const dim3 grid(static_cast<unsigned>((num_tokens + rows - 1) / rows));
  const size_t smem = static_cast<size_t>(rows) * table_bytes;
  a.num_tokens = static_cast<int>(num_tokens);
  auto go = [&](auto rows_tag) {
    constexpr bool R = decltype(rows_tag)::value;
    if (vector) {
      if (a.neox) items_kernel<T, C, W, true, R><<<grid, block, smem, s>>>(a);
      else items_kernel<T, C, W / 2, false, R><<<grid, block, smem, s>>>(a);
    } else {
      if (a.neox) items_kernel<T, C, 1, true, R><<<grid, block, smem, s>>>(a);
      else items_kernel<T, C, 1, false, R><<<grid, block, smem, s>>>(a);
    }
  };
  if (rows > 1) go(std::true_type{});
  else go(std::false_type{});
  return launch_status();
}

// ------------------------------------------------------------------ qk_norm_rope_kernel

template <typename T, typename C, int VEC>
__global__ void __launch_bounds__(kNormWarps * 32) qk_norm_rope_kernel(const __grid_constant__ Args a) {
  constexpr int kIters = (WC_QK_NORM_ROPE_MAX_HEAD_DIM / VEC + 31) / 32;
  __shared__ float2 cs[kTableSlots];
  __shared__ float stage[kNormWarps][WC_QK_NORM_ROPE_MAX_HEAD_DIM];  // each warp's rotary part
  const int64_t t = blockIdx.x;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int nvec = a.head_dim / VEC;
  const int qk_heads = a.nq + a.nk;
  // Head h (< qk_heads) of this token: a q head, then the k heads.
  auto head_at = [&](int h) -> T* {
    return h < a.nq ? static_cast<T*>(a.q) + t * a.q_ts + h * a.q_hs
                    : static_cast<T*>(a.k) + t * a.k_ts + (h - a.nq) * a.k_hs;
  };
  // A warp's q/k heads go one after the other. The first 32 vectors of each (the whole head up
  // to head_dim 32 · VEC: 128 at the usual VEC) load while the head before is reduced,
  // normalised and rotated, the first head's while the block builds its cos/sin table. Only
  // those are carried across (registers: kIters is sized for head_dim 512).
  Pack<T, VEC> v[kIters], next;
  auto load_first = [&](int h, Pack<T, VEC>& dst) {
    if (lane < nvec) dst = load_pack<T, VEC>(head_at(h) + lane * VEC);
  };
  if (warp < qk_heads) load_first(warp, next);
  rope_table(a, load_index(a.positions, a.pos64, t), cs);
  const CacheRows<C> rows = cache_rows<C>(a, t);
  __syncthreads();

  const int heads = qk_heads + (rows.k != nullptr ? a.nk : 0);  // (a latent cache is refused at launch)
  float* st = stage[warp];
  for (int h = warp; h < heads; h += kNormWarps) {  // warp-uniform loop: shuffles see full warps
    if (h >= qk_heads) {  // a v head: into the cache as it is
      const int hv = h - qk_heads;
      const T* src = static_cast<const T*>(a.v) + t * a.v_ts + hv * a.v_hs;
      C* dst = rows.v + hv * a.c_head_stride;
      for (int i = lane; i < nvec; i += 32) {
        if (a.cache_vec) store_cache<T, C, VEC, true>(dst + i * VEC, load_elems<T, VEC, true>(src + i * VEC), a.v_scale);
        else store_cache<T, C, VEC, false>(dst + i * VEC, load_elems<T, VEC, false>(src + i * VEC), a.v_scale);
      }
      continue;
    }
    const bool is_q = h < a.nq;
    const int hh = is_q ? h : h - a.nq;
    T* x = head_at(h);
    const T* w = static_cast<const T*>(is_q ? a.q_weight : a.k_weight);
    v[0] = next;
#pragma unroll
    for (int j = 1; j < kIters; ++j) {  // the rest of the head (head_dim > 32 · VEC)
      const int i = lane + 32 * j;
      if (i < nvec) v[j] = load_pack<T, VEC>(x + i * VEC);
    }
    if (h + kNormWarps < qk_heads) load_first(h + kNormWarps, next);

    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < kIters; ++j)
      if (lane + 32 * j < nvec) ss += sum_squares<T, VEC>(v[j]);
    const float rstd = rms_rstd(warp_sum(ss), a.head_dim, a.eps);

    float f[kIters][VEC];
#pragma unroll
    for (int j = 0; j < kIters; ++j) {
      const int i = lane + 32 * j;
      if (i >= nvec) continue;
      rms_normalize<T, VEC>(v[j], w + i * VEC, rstd, a.w_off, f[j]);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int r = i * VEC + k - a.rot_off;
        if (static_cast<unsigned>(r) < static_cast<unsigned>(a.rotary_dim)) st[r] = f[j][k];
      }
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < kIters; ++j) {
      const int i = lane + 32 * j;
      if (i >= nvec) continue;
      Pack<T, VEC> o;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int r = i * VEC + k - a.rot_off;
        float y = f[j][k];
        if (static_cast<unsigned>(r) < static_cast<unsigned>(a.rotary_dim)) {
          const bool second = a.neox ? r >= a.half : (r & 1) != 0;
          const int pair = a.neox ? (second ? r - a.half : r) : r >> 1;
          const float partner = st[a.neox ? (second ? r - a.half : r + a.half) : r ^ 1];
          const float2 c = cs[cs_slot(pair)];
          y = second ? rot_second(y, partner, c) : rot_first(y, partner, c);
        }
        o.v[k] = from_float<T>(y);
      }
      store_pack<T, VEC>(x + i * VEC, o);
      if (!is_q && rows.k != nullptr) {
        C* dst = rows.k + hh * a.c_head_stride + i * VEC;
        if (a.cache_vec) store_cache<T, C, VEC, true>(dst, o, a.k_scale);
        else store_cache<T, C, VEC, false>(dst, o, a.k_scale);
      }
    }
    __syncwarp();  // the next head overwrites st
  }
}

template <typename T, typename C>
wc_status launch_norm(const Args& a, int64_t num_tokens, cudaStream_t s) {
  if (a.head_dim > WC_QK_NORM_ROPE_MAX_HEAD_DIM || a.half <= 0) return WC_ERR_INVALID_ARG;
  const bool append = a.k_pages != nullptr;
  // Widest vector that divides the head, keeps >= 32 vectors per head when it can (no idle
  // lanes), and matches q's, k's and the weights' strides and pointers. VEC sets the order of
  // the sum of squares, so it must not depend on v or the cache: appending must not change the
  // rounding (qk_norm_rope_append_kv equals qk_norm_rope then append_kv bit for bit). v and the
  // cache are accessed VEC-wide when their strides and pointers allow, else element-wise.
  auto fits = [&](int vec) {
    const int tb = vec * static_cast<int>(sizeof(T));
    return a.head_dim % vec == 0 && a.head_dim / vec >= 32 && a.q_ts % vec == 0 && a.q_hs % vec == 0 &&
           a.k_ts % vec == 0 && a.k_hs % vec == 0 && aligned_to(tb, a.q, a.k, a.q_weight, a.k_weight);
  };
  int vec = kVec16<T>;
  while (vec > 1 && !fits(vec)) vec /= 2;
  Args b = a;
  b.cache_vec = append && a.v_ts % vec == 0 && a.v_hs % vec == 0 &&
                aligned_to(vec * static_cast<int>(sizeof(T)), a.v) && a.page_stride % vec == 0 &&
                a.slot_stride % vec == 0 && a.c_head_stride % vec == 0 &&
                aligned_to(vec * static_cast<int>(sizeof(C)), a.k_pages, a.v_pages);
  const dim3 grid(static_cast<unsigned>(num_tokens));
  switch (vec) {
    case 8: if constexpr (kVec16<T> >= 8) qk_norm_rope_kernel<T, C, 8><<<grid, kNormWarps * 32, 0, s>>>(b); break;
    case 4: qk_norm_rope_kernel<T, C, 4><<<grid, kNormWarps * 32, 0, s>>>(b); break;
    case 2: qk_norm_rope_kernel<T, C, 2><<<grid, kNormWarps * 32, 0, s>>>(b); break;
    default: qk_norm_rope_kernel<T, C, 1><<<grid, kNormWarps * 32, 0, s>>>(b); break;
  }
  return launch_status();
}

// ------------------------------------------------------------------ params -> Args

template <typename C>
struct Tag {
  using type = C;
};

// Calls f(Tag<C>) with C the cache element type: T when not appending or when the cache has
// the inputs' dtype, FP8 e4m3 for a WC_E4M3 cache (bf16 / f16 inputs only).
template <typename T, typename F>
wc_status with_cache_type(bool append, wc_dtype cache_dtype, wc_dtype dtype, F&& f) {
  if (!append || cache_dtype == dtype) return f(Tag<T>{});
  if constexpr (!std::is_same_v<T, float>) {
    if (cache_dtype == WC_E4M3) return f(Tag<__nv_fp8_e4m3>{});
  }
  return WC_ERR_UNSUPPORTED;
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT32_MAX; }

// Heads -> Args; false on sizes the Rust side rejects (the last guard).
bool set_heads(Args& a, const wc_qk_heads& h) {
  if (!fits_int(h.num_tokens) || !fits_int(h.num_q_heads) || !fits_int(h.num_kv_heads) || h.head_dim <= 0 ||
      !fits_int(h.head_dim) || h.k == nullptr || (h.num_q_heads > 0 && h.q == nullptr))
    return false;
  a.q = h.q;
  a.k = h.k;
  a.q_ts = h.q_token_stride;
  a.q_hs = h.q_head_stride;
  a.k_ts = h.k_token_stride;
  a.k_hs = h.k_head_stride;
  a.nq = static_cast<int>(h.num_q_heads);
  a.nk = static_cast<int>(h.num_kv_heads);
  a.head_dim = static_cast<int>(h.head_dim);
  a.neox = true;
  a.attention_factor = 1.0f;
  return true;
}

bool set_rotary(Args& a, const wc_rotary& r) {
  if (r.positions == nullptr || r.rotary_dim < 2 || r.rotary_dim % 2 != 0 || r.rotary_dim > 2 * WC_ROPE_MAX_PAIRS ||
      r.rotary_offset < 0 || r.rotary_offset + r.rotary_dim > a.head_dim ||
      (r.style != WC_ROPE_NEOX && r.style != WC_ROPE_GPTJ))
    return false;
  a.positions = r.positions;
  a.pos64 = r.positions_int64 != 0;
  a.neox = r.style == WC_ROPE_NEOX;
  a.rotary_dim = static_cast<int>(r.rotary_dim);
  a.rot_off = static_cast<int>(r.rotary_offset);
  a.half = a.rotary_dim / 2;
  a.attention_factor = r.attention_factor;
  std::memcpy(a.inv_freq, r.inv_freq, sizeof(a.inv_freq));
  return true;
}

bool set_append(Args& a, const wc_kv_append& p) {
  const wc_paged_kv_cache& c = p.cache;
  const int64_t ps = c.page_size;
  // v and v_pages are both absent for a latent (K-only) cache, MLA's.
  if ((p.v == nullptr) != (c.v_pages == nullptr) || p.slot_mapping == nullptr || c.k_pages == nullptr ||
      c.num_pages < 0 || ps < 1 || ps > 256 || (ps & (ps - 1)) != 0 || c.num_pages > INT64_MAX / ps)
    return false;
  a.v = p.v;
  a.v_ts = p.v_token_stride;
  a.v_hs = p.v_head_stride;
  a.slots = p.slot_mapping;
  a.slots64 = p.slots_int64 != 0;
  a.k_pages = c.k_pages;
  a.v_pages = c.v_pages;
  a.nv = c.v_pages != nullptr ? a.nk : 0;
  a.page_stride = c.page_stride;
  a.slot_stride = c.slot_stride;
  a.c_head_stride = c.head_stride;
  a.num_slots = c.num_pages * ps;
  a.log2_page = __builtin_ctzll(static_cast<unsigned long long>(ps));
  a.k_scale = c.k_scale;
  a.v_scale = c.v_scale;
  a.error_count = c.error_count;
  return true;
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_rope(const wc_rope_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  wc::Args a{};
  if (!wc::set_heads(a, p->heads) || !wc::set_rotary(a, p->rotary)) return WC_ERR_INVALID_ARG;
  if (p->heads.num_tokens == 0) return WC_OK;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->heads.dtype, T, { return wc::launch_items<T, T>(a, p->heads.num_tokens, s); });
}

extern "C" wc_status wc_append_kv(const wc_append_kv_params* p, wc_stream stream) {
  if (p == nullptr || p->heads.num_q_heads != 0) return WC_ERR_INVALID_ARG;
  wc::Args a{};
  if (!wc::set_heads(a, p->heads) || !wc::set_append(a, p->append)) return WC_ERR_INVALID_ARG;
  if (p->heads.num_tokens == 0) return WC_OK;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const wc_dtype cd = p->append.cache.dtype;
  WC_DISPATCH_DTYPE(p->heads.dtype, T, {
    return wc::with_cache_type<T>(true, cd, p->heads.dtype, [&](auto tag) {
      return wc::launch_items<T, typename decltype(tag)::type>(a, p->heads.num_tokens, s);
    });
  });
}

extern "C" wc_status wc_rope_append_kv(const wc_rope_append_kv_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  wc::Args a{};
  if (!wc::set_heads(a, p->heads) || !wc::set_rotary(a, p->rotary) || !wc::set_append(a, p->append))
    return WC_ERR_INVALID_ARG;
  if (p->heads.num_tokens == 0) return WC_OK;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const wc_dtype cd = p->append.cache.dtype;
  WC_DISPATCH_DTYPE(p->heads.dtype, T, {
    return wc::with_cache_type<T>(true, cd, p->heads.dtype, [&](auto tag) {
      return wc::launch_items<T, typename decltype(tag)::type>(a, p->heads.num_tokens, s);
    });
  });
}

extern "C" wc_status wc_qk_norm_rope(const wc_qk_norm_rope_params* p, wc_stream stream) {
  if (p == nullptr || p->q_weight == nullptr || p->k_weight == nullptr) return WC_ERR_INVALID_ARG;
  wc::Args a{};
  if (!wc::set_heads(a, p->heads) || !wc::set_rotary(a, p->rotary)) return WC_ERR_INVALID_ARG;
  const bool append = p->append_kv != 0;
  // Qwen3's prologue: no latent (K-only) cache.
  if (append && (!wc::set_append(a, p->append) || a.nv == 0)) return WC_ERR_INVALID_ARG;
  a.q_weight = p->q_weight;
  a.k_weight = p->k_weight;
  a.eps = p->eps;
  a.w_off = p->weight_offset;
  if (p->heads.num_tokens == 0) return WC_OK;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const wc_dtype cd = p->append.cache.dtype;
  WC_DISPATCH_DTYPE(p->heads.dtype, T, {
    return wc::with_cache_type<T>(append, cd, p->heads.dtype, [&](auto tag) {
      return wc::launch_norm<T, typename decltype(tag)::type>(a, p->heads.num_tokens, s);
    });
  });
}
