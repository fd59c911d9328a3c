// rope/args.cuh — part of rope.cu's translation unit (split from it by size; its definitions
// are in an anonymous namespace, as rope.cu's): the kernels' argument block and the device
// pieces both rope kernels share (the cos/sin table, the rotation, a token's cache rows, the
// cache store).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"

namespace wc {
namespace {

constexpr int kItemThreads = 256;  // most threads per block of items_kernel
constexpr int kNormWarps = 8;      // warps per block of qk_norm_rope_kernel
constexpr double kInvPi = 0.318309886183790671537767526745028724;

// Everything the kernels read, by value. Kernels take it as a __grid_constant__ parameter, so
// the inv_freq table is indexed in place in the parameter bank (no per-thread copy).
struct Args {
  void* q;                // [num_tokens, nq, head_dim]
  void* k;                // [num_tokens, nk, head_dim]
  const void* v;          // [num_tokens, nk, head_dim] (appending ops)
  int64_t q_ts, q_hs, k_ts, k_hs, v_ts, v_hs;
  int nq, nk, head_dim;
  int nv;                 // v heads an append writes: nk, or 0 (a latent cache, or no append)
  const void* positions;  // [num_tokens] int32 / int64
  const void* slots;      // [num_tokens] int32 / int64 (appending ops)
  bool pos64, slots64, neox;
  int rotary_dim, rot_off, half;  // half = rotary_dim / 2 (0: nothing to rotate)
  float attention_factor;
  void* k_pages;          // [num_pages, page_size, nk, head_dim]; nullptr: no append
  void* v_pages;
  int64_t page_stride, slot_stride, c_head_stride, num_slots;
  int log2_page;
  float k_scale, v_scale;
  uint32_t* error_count;  // optional
  const void* q_weight;   // [head_dim] (qk_norm_rope)
  const void* k_weight;
  float eps, w_off;
  bool cache_vec;         // qk_norm_rope: v and the cache take VEC-wide accesses (else element-wise)
  int num_tokens;         // items_kernel: a block's rows past it have no token
  int table_slots;        // items_kernel: float2 slots of one token's cos/sin table
  double inv_freq[WC_ROPE_MAX_PAIRS];
};

// ------------------------------------------------------------------ shared device pieces

// The cos/sin table in shared memory: pair p at cs[cs_slot(p)], one float2 of padding after
// every 16 pairs. A vector item reads its N (<= 8) consecutive pairs; unpadded, the items a
// warp reads at once start 8 N bytes apart and their LDS.64s fall into the same few banks:
// 4 wavefronts a warp-instruction at head_dim 128 (bf16 NeoX, N = 8), 8 at head_dim 256.
// Padded: 1 at both, and at most 2 for every N and rotary_dim up to 512 (tools/banks.py rope).
constexpr int kTableSlots = WC_ROPE_MAX_PAIRS + WC_ROPE_MAX_PAIRS / 16;
__host__ __device__ __forceinline__ int cs_slot(int pair) { return pair + (pair >> 4); }

// (cos, sin) * attention_factor of every pair at position `pos`, into the table. The angle is
// formed and reduced in f64 (pos * inv_freq / pi half-turns, minus the nearest even integer),
// then sincospif in f32 on an argument in [-1, 1]: |error| ~2e-7 for positions below 2^27,
// growing with the f64 rounding of pos * inv_freq beyond (~1e-6 rad at 2^32).
__device__ __forceinline__ void rope_table(const Args& a, int64_t pos, float2* cs) {
  for (int i = threadIdx.x; i < a.half; i += blockDim.x) {
    double t = static_cast<double>(pos) * a.inv_freq[i] * kInvPi;
    t -= 2.0 * rint(0.5 * t);
    float s, c;
    sincospif(static_cast<float>(t), &s, &c);
    cs[cs_slot(i)] = make_float2(c * a.attention_factor, s * a.attention_factor);
  }
}

// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin). Both kernels use exactly these expressions.
__device__ __forceinline__ float rot_first(float x1, float x2, float2 cs) { return fmaf(x1, cs.x, -x2 * cs.y); }
__device__ __forceinline__ float rot_second(float x2, float x1, float2 cs) { return fmaf(x2, cs.x, x1 * cs.y); }

// Token t's cache rows (head 0 of its slot, K and V), or nullptrs when the op does not append,
// the slot is padding (< 0) or past the cache (then counted once, by thread 0).
template <typename C>
struct CacheRows {
  C* k;
  C* v;
};

template <typename C>
__device__ __forceinline__ CacheRows<C> cache_rows(const Args& a, int64_t t) {
  CacheRows<C> r{nullptr, nullptr};
  if (a.k_pages == nullptr) return r;
  const int64_t slot = load_index(a.slots, a.slots64, t);
  if (slot < 0) return r;
  if (slot >= a.num_slots) {
    if (threadIdx.x == 0 && a.error_count != nullptr) atomicAdd(a.error_count, 1u);
    return r;
  }
  const int64_t page = slot >> a.log2_page;
  const int64_t row = slot & ((int64_t{1} << a.log2_page) - 1);
  const int64_t off = page * a.page_stride + row * a.slot_stride;
  r.k = static_cast<C*>(a.k_pages) + off;
  // A latent cache has no V pages (v_pages null): r.v is then never used, and is formed by
  // integer arithmetic (an offset from a null pointer would be undefined).
  r.v = reinterpret_cast<C*>(reinterpret_cast<uintptr_t>(a.v_pages) + static_cast<uintptr_t>(off) * sizeof(C));
  return r;
}

// M elements already rounded to T, into a cache row: the same bits when C is T; for FP8,
// round(x / scale) with IEEE f32 division and saturating RNE (what reference::kv_cache does).
template <typename T, typename C, int M, bool VECTOR>
__device__ __forceinline__ void store_cache(C* dst, const Pack<T, M>& v, float scale) {
  if constexpr (std::is_same_v<T, C>) {
    store_elems<T, M, VECTOR>(dst, v);
  } else {
    Pack<C, M> o;
#pragma unroll
    for (int k = 0; k < M; ++k) o.v[k] = from_float<C>(__fdiv_rn(to_float(v.v[k]), scale));
    store_elems<C, M, VECTOR>(dst, o);
  }
}

}  // namespace
}  // namespace wc
