// moe_routing.cu — the MoE routing family: moe_gate, moe_align, moe_gather, moe_combine.
//
// Contract (warpcore/moe_routing.h, docs/moe_routing.md):
//   moe_gate     logits [num_tokens, num_experts] (f32 / f16 / bf16) -> topk_ids int32,
//                topk_weights f32 [num_tokens, top_k], optional per-expert selection counts.
//   moe_align    topk_ids -> expert-contiguous order padded to block_m (sorted_ids,
//                block_expert_ids, expert_offsets, expert_counts, token_positions).
//   moe_gather   hidden rows -> expert order (each token row read once, written top_k times).
//   moe_combine  expert outputs -> tokens, weighted sum over k in fixed order (no atomics).
//
// Exactness. Integer outputs (ids, offsets, positions) equal the CPU reference bit for bit:
//   * Selection compares f32 values by a total order key (order_key: NaN ranks as -inf, -0 = +0);
//     equal keys go to the lower expert (group) index.
//   * Softmax selects on the logits themselves (softmax is monotone), never on rounded
//     probabilities. Sigmoid selects on det_sigmoid(x) + bias, where det_sigmoid uses only
//     correctly rounded IEEE operations (explicit _rn intrinsics, fma, rint) and bit operations,
//     which the Rust reference (reference::moe_routing::sigmoid_f32) repeats one for one. A group's
//     score is the f32 sum of its top two selection values.
//   * moe_align places each expert's assignments in increasing flat index (token * top_k + k):
//     per-tile counts, a column scan over tiles, warp-ordered ranks (__match_any_sync).
//   Weights are f32 math (accuracy, not bits, is checked against an f64 reference).
//
// Thread mapping / roofline (H200, 4.06 TB/s copy):
//   gate     one warp per token; the token's logits live in registers, VPL values per lane.
//            Experts are split into n_group groups of P lanes each (P = 32 without grouping);
//            lane (g, p) holds group g's experts g*epg + (c*P + p)*VEC + v. Each of the top_k
//            rounds is one warp reduction on keys packed with the expert id (distinct keys),
//            plus a register rescan in the winning lane on every second win; a near tie in the
//            packed keys' truncated bits sends the token to the exact path (two reductions a
//            round: the key, then the lowest expert holding it). DeepSeek-V3's grouped sigmoid
//            takes a pre-filter first: approximate sigmoids (MUFU) choose the groups and a
//            threshold with proven tolerances, and only the ~10-20 candidates left get the
//            exact sigmoid, one a lane. See gate_kernel.
//            16384 x 256 f32 logits = 16.8 MB -> 4.1 us floor; the bar (10 us) is about
//            instruction count and launch latency, not bytes.
//   align    tiles of WC_MOE_ALIGN_TILE assignments: count (one block per tile) -> scan (one
//            block: per-expert column scan over tiles, padded offsets, block ids, padding) ->
//            place (one block per tile, 8 warps in order). One fused block when <= one tile.
//   gather   block (token, 256-unit chunk of the row): read the row once, store it at the
//            token's top_k positions; plus one block per expert that zero-fills its padding rows.
//   combine  block (token, 256-vector chunk): top_k 16-byte loads in flight per thread.
//
// Files: this one (keys, deterministic sigmoid, gate, the extern "C" launchers) includes
// moe_routing/align.cuh and moe_routing/permute.cuh: one translation unit per family.
#include "common.cuh"
#include "moe_routing/align.cuh"    // moe_align
#include "moe_routing/permute.cuh"  // moe_gather, moe_combine

namespace wc {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// ------------------------------------------------------------------ selection keys
// order_key / key_value and det_exp are common.cuh's.

// 1 / d for d in [1, 2^125), else 0: a seed from the bits (0x7EF311C3 - bits(d), within 12 %)
// and three Newton steps y += y * (1 - d * y), each two fmas. Within 1 ulp of the correctly
// rounded 1 / d in that range (the Rust test det_recip_is_within_one_ulp: every significand in
// [1, 2), every 4099th float above), deterministic, and repeated operation for operation by the
// Rust reference (reference::moe_routing::det_recip): no MUFU.RCP, no division's slow path.
__device__ __forceinline__ float det_recip(float d) {
  float y = __uint_as_float(0x7EF311C3u - __float_as_uint(d));
#pragma unroll
  for (int i = 0; i < 3; ++i) y = __fmaf_rn(y, __fmaf_rn(-d, y, 1.0f), y);
  return d < 0x1p125f ? y : (isnan(d) ? d : 0.0f);
}

// 1 / (1 + exp(-x)), deterministic (see det_exp, det_recip): 0 for x below about -86.6.
__device__ __forceinline__ float det_sigmoid(float x) { return det_recip(__fadd_rn(1.0f, det_exp(-x))); }

// 1 / (1 + exp(-x)) from MUFU.EX2 and MUFU.RCP (ex2.approx.ftz: 2 ulp; __fdividef's rcp.approx:
// 1 ulp; the argument's rounding moves the result by at most 0.23 x 2^-23): within 2^-21 of the
// true sigmoid, so within 2^-20 of det_sigmoid (the GPU test approx_sigmoid_is_within_its_budget;
// kPrefilterTol allows 8x that).
// 0 for x below about -88 (1 + e overflows to +inf or passes 2^126), 1 above about 88.
__device__ __forceinline__ float approx_sigmoid(float x) {
  return __fdividef(1.0f, 1.0f + exp2_ftz(x * -kLog2e));
}

// The selection key of a value, in the selection order (NaN ranks as -inf, -0 = +0, as in the CPU
// reference), branch-free: fmaxf returns the non-NaN operand; -0 + 0 = +0; then order_key.
__device__ __forceinline__ uint32_t select_key(float v) {
  return order_key(__fadd_rn(fmaxf(v, -INFINITY), 0.0f));
}

// ------------------------------------------------------------------ gate
constexpr int kGateWarps = 8;
constexpr int kGateVec = 4;  // elements per vector load (16 B of f32, 8 B of f16 / bf16)
// The pre-filter's tolerance per unit of (1 + max |bias|): a bound on |approximate - exact|
// selection value, with 8x margin over approx_sigmoid's error, plus the two additions' rounding.
constexpr float kPrefilterTol = 0x1p-17f;

struct GateArgs {
  const void* logits;  // [num_tokens, num_experts]
  const float* bias;   // [num_experts] or nullptr
  int32_t* ids;        // [num_tokens, top_k]
  float* weights;      // [num_tokens, top_k]
  int32_t* counts;     // [num_experts] or nullptr
  int64_t logits_stride, ids_stride, weights_stride;
  int num_tokens, top_k, n_group, topk_group, experts_per_group, group_shift;  // P = 1 << group_shift
  int first_expert, last_expert;
  uint32_t id_mask;  // 2^b - 1 with 2^b >= num_experts: the expert id's bits in a packed key
  float scale;
  int renormalize, sigmoid;
  int bias_vec;  // bias is 4 * VEC-byte aligned: vector loads
  int prefilter;  // sigmoid, grouped, top_k <= 2 * topk_group, >= 2 experts a group (see gate_kernel)
};

// The lane's best two candidates not in `consumed` (a slot bitmask), by key descending then
// slot ascending (= expert ascending within a lane). Key 0 = none. The exact path's.
template <int VPL>
__device__ __forceinline__ void lane_top2(const uint32_t (&key)[VPL], uint32_t consumed, uint32_t& k1, int& s1,
                                          uint32_t& k2, int& s2) {
  k1 = k2 = 0;
  s1 = s2 = 0;
#pragma unroll
  for (int s = 0; s < VPL; ++s) {
    const uint32_t k = ((consumed >> s) & 1u) ? 0u : key[s];
    if (k > k1) {
      k2 = k1;
      s2 = s1;
      k1 = k;
      s1 = s;
    } else if (k > k2) {
      k2 = k;
      s2 = s;
    }
  }
}

// The best two packed keys below `below` (packed keys are distinct: max / min suffice).
template <int VPL>
__device__ __forceinline__ void packed_top2(const uint32_t (&pk)[VPL], uint32_t below, uint32_t& k1, uint32_t& k2) {
  k1 = k2 = 0;
#pragma unroll
  for (int s = 0; s < VPL; ++s) {
    const uint32_t k = pk[s] < below ? pk[s] : 0u;
    k2 = max(k2, min(k1, k));
    k1 = max(k1, k);
  }
}

// After top_k rounds on packed keys (lane r < top_k holds the r-th choice in `res`; `left` is
// the best packed key not chosen): whether the order may be wrong. It is the exact one iff the
// truncated keys of the chosen, then of the best left, strictly decrease. Warp-uniform; every
// lane calls it.
__device__ __forceinline__ bool packed_near_tie(uint32_t res, uint32_t left, int top_k, uint32_t id_mask) {
  const int lane = threadIdx.x & 31;
  uint32_t next = __shfl_down_sync(kFull, res, 1);
  if (lane == top_k - 1) next = left;
  return __any_sync(kFull, lane < top_k && ((res ^ next) & ~id_mask) == 0u);
}

// One warp per token (see the header). VEC: elements per load; VPL: values per lane (a
// multiple of VEC; slots past the group's end hold no candidate).
//
// Selection, fast path: each candidate's key with its low bits replaced by the expert id
// (`packed`, distinct keys), so each of the top_k rounds is one __reduce_max_sync, and the
// winner is the one lane holding the max. That order is the exact one (key descending, lowest
// expert among equal keys) unless two of the chosen, or the last chosen and the best left,
// share their truncated keys: the warp checks that once, and on such a near-tie (0.25 % of
// random f32 softmax rows, 0.95 % of DeepSeek-V3-like sigmoid rows in the CPU model; every row
// with exact ties among the chosen) redoes the rounds on the full keys (the exact path:
// reduce-max on the key, reduce-min on the expert among equals).
template <typename T, int VEC, int VPL>
__global__ void __launch_bounds__(kGateWarps * 32) gate_kernel(const GateArgs a) {
  static_assert(VPL % VEC == 0 && VPL <= 32, "VPL must be a multiple of VEC, at most 32");
  __shared__ __align__(16) float vals[kGateWarps][WC_MOE_MAX_EXPERTS];  // each expert's weight input
  __shared__ int cands[kGateWarps][32];  // the pre-filter's candidates, one a lane
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int token = blockIdx.x * kGateWarps + warp;
  if (token >= a.num_tokens) return;  // whole warps leave together; no block barriers below
  const bool prefilter = VPL <= 16 && a.prefilter;  // not built for 32 values a lane (registers)
  const int P = 1 << a.group_shift;
  const int g = lane >> a.group_shift;
  const int p = lane & (P - 1);
  const bool active = g < a.n_group;
  const int epg = a.experts_per_group;
  const int lane_base = g * epg + p * VEC;  // expert of slot 0
  const int chunk_stride = P * VEC;         // experts between consecutive chunks of a lane
  // Chunks of this lane inside its group: chunk c is valid iff c < valid_chunks (chunk_stride
  // is a power of two: a shift, not a ~30-instruction division per token).
  constexpr int kVecShift = VEC == 4 ? 2 : VEC == 2 ? 1 : 0;
  static_assert(VEC == 1 << kVecShift, "VEC must be 1, 2 or 4");
  const int valid_chunks = active && p * VEC < epg ? (epg - p * VEC + chunk_stride - 1) >> (a.group_shift + kVecShift) : 0;
  const T* row = static_cast<const T*>(a.logits) + token * a.logits_stride;
  auto expert_of = [&](int s) { return lane_base + (s / VEC) * chunk_stride + (s % VEC); };

  // val: the logits; later the selection values (the logit, or sigmoid + bias). The weights'
  // inputs (the logit, or the unbiased sigmoid) go to shared memory, by expert, for the winners.
  float val[VPL];
#pragma unroll
  for (int c = 0; c < VPL / VEC; ++c) {
    Pack<T, VEC> x = {};
    if (c < valid_chunks) x = load_pack<T, VEC>(row + lane_base + c * chunk_stride);
#pragma unroll
    for (int v = 0; v < VEC; ++v) val[c * VEC + v] = to_float(x.v[v]);
  }
  // The bias of chunk c (zeros past the group's end or without a bias).
  auto bias_pack = [&](int c) {
    Pack<float, VEC> b = {};
    if (a.bias != nullptr && c < valid_chunks) {
      const float* src = a.bias + lane_base + c * chunk_stride;
      if (VEC > 1 && a.bias_vec) {
        b = load_pack<float, VEC>(src);  // VEC floats, 4 * VEC-byte aligned (the launcher checked)
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) b.v[v] = __ldg(src + v);
      }
    }
    return b;
  };
  // Every expert's sigmoid into shared memory, and val = sigmoid + bias (the exact selection).
  auto sigmoid_stage = [&]() {
#pragma unroll
    for (int c = 0; c < VPL / VEC; ++c) {
      const Pack<float, VEC> b = bias_pack(c);
      Pack<float, VEC> w;
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const int s = c * VEC + v;
        w.v[v] = det_sigmoid(val[s]);
        val[s] = __fadd_rn(w.v[v], b.v[v]);
      }
      if (c < valid_chunks) store_pack<float, VEC>(&vals[warp][lane_base + c * chunk_stride], w);
    }
  };
  if (a.sigmoid && !prefilter) {
    sigmoid_stage();
  } else {  // the logits themselves (the pre-filter's candidates read theirs back)
#pragma unroll
    for (int c = 0; c < VPL / VEC; ++c) {
      Pack<float, VEC> w;
#pragma unroll
      for (int v = 0; v < VEC; ++v) w.v[v] = val[c * VEC + v];
      if (c < valid_chunks) store_pack<float, VEC>(&vals[warp][lane_base + c * chunk_stride], w);
    }
  }
  __syncwarp();

  int res_idx = 0;
  bool selected = false;
  if (prefilter) {
    // The pre-filter (DeepSeek-V3's grouped sigmoid): approximate selection values ak from
    // approx_sigmoid, each within tol of the exact one (tol = kPrefilterTol (1 + max |bias|)).
    // (1) The groups by approximate top-two sums; when the last kept group's sum is more than
    // 8 tol above the best left out, the exact sums (each within 2 tol + rounding) keep the same
    // groups. (2) T = the lowest second-best approximate value among the kept groups: at least
    // 2 topk_group >= top_k experts have ak >= T, so exact values above T - tol; an expert with
    // ak < T - 2 tol is below T - tol exactly, never chosen. (3) The others (the candidates,
    // typically 10-20) are compacted one a lane, their exact sigmoids computed, and top_k
    // rounds pick the exact order. A bias that is not finite, a near tie between groups or
    // more than 32 candidates fall back to the exact selection below.
    float ak[VPL];
    uint32_t babs = 0;
#pragma unroll
    for (int c = 0; c < VPL / VEC; ++c) {
      const Pack<float, VEC> b = bias_pack(c);
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const int s = c * VEC + v;
        const float k = __fadd_rn(approx_sigmoid(val[s]), b.v[v]);
        ak[s] = c < valid_chunks ? fmaxf(k, -INFINITY) : -INFINITY;  // NaN (a NaN logit) ranks as -inf
        babs = max(babs, __float_as_uint(fabsf(b.v[v])));             // NaN's bits rank above inf's
      }
    }
    const float tol = kPrefilterTol * (__uint_as_float(__reduce_max_sync(kFull, babs)) + 1.0f);
    float t1 = -INFINITY, t2 = -INFINITY;  // the group's approximate top two
#pragma unroll
    for (int s = 0; s < VPL; ++s) {
      t2 = fmaxf(t2, fminf(t1, ak[s]));
      t1 = fmaxf(t1, ak[s]);
    }
    for (int off = 1; off < P; off <<= 1) {
      const float o1 = __shfl_xor_sync(kFull, t1, off);
      const float o2 = __shfl_xor_sync(kFull, t2, off);
      t2 = fmaxf(fminf(t1, o1), fmaxf(t2, o2));
      t1 = fmaxf(t1, o1);
    }
    // Group keys packed with 31 - g (distinct; the truncation is within tol, see the check).
    uint32_t gkey = active && p == 0 ? (select_key(t1 + t2) & ~31u) | (31u - g) : 0u;
    uint32_t chosen = 0, last = 0;
    for (int r = 0; r < a.topk_group; ++r) {
      last = __reduce_max_sync(kFull, gkey);
      chosen |= 1u << (31u - (last & 31u));
      if (gkey == last) gkey = 0;
    }
    const uint32_t best_left = __reduce_max_sync(kFull, gkey);
    const bool kept = active && ((chosen >> g) & 1u);
    const float thr = key_value(__reduce_min_sync(kFull, kept && p == 0 ? select_key(t2) : kFull)) - 2.0f * tol;
    uint32_t cand = 0;
#pragma unroll
    for (int s = 0; s < VPL; ++s)
      if (kept && s / VEC < valid_chunks && ak[s] >= thr) cand |= 1u << s;
    const int count = __popc(cand);
    const int incl = warp_inclusive_scan(count);
    const int total = __shfl_sync(kFull, incl, 31);
    // Warp-uniform: the groups apart (false as well for a bias that is not finite: tol is then
    // inf or NaN), the candidates one a lane.
    if (key_value(last) - key_value(best_left) > 8.0f * tol && total <= 32) {
      int* dst = &cands[warp][incl - count];
#pragma unroll
      for (int s = 0; s < VPL; ++s)
        if ((cand >> s) & 1u) *dst++ = expert_of(s);
      __syncwarp();
      uint32_t key = 0, e = kFull;
      if (lane < total) {
        e = static_cast<uint32_t>(cands[warp][lane]);
        const float w = det_sigmoid(vals[warp][e]);
        key = select_key(__fadd_rn(w, a.bias != nullptr ? __ldg(a.bias + e) : 0.0f));
        vals[warp][e] = w;  // the weight's input
      }
      __syncwarp();
      // top_k rounds on the keys packed with the expert id, one reduction a round; as in the fast
      // path below, exact unless the truncated keys of two chosen, or of the last chosen and
      // the best left, are equal: then rounds on the full keys (key, then the lowest expert).
      uint32_t pk = key != 0 ? (key & ~a.id_mask) | e : 0u, res = 0;
      for (int r = 0; r < a.top_k; ++r) {
        const uint32_t m = __reduce_max_sync(kFull, pk);
        if (lane == r) res = m;
        if (pk == m) pk = 0;
      }
      res_idx = static_cast<int>(res & a.id_mask);
      if (packed_near_tie(res, __reduce_max_sync(kFull, pk), a.top_k, a.id_mask)) {
        for (int r = 0; r < a.top_k; ++r) {
          const uint32_t m = __reduce_max_sync(kFull, key);
          const uint32_t win = __reduce_min_sync(kFull, key == m ? e : kFull);
          if (lane == r) res_idx = static_cast<int>(win);
          if (e == win) key = 0;
        }
      }
      selected = true;
    }
  }
  if (!selected) {
    if (prefilter) {
      sigmoid_stage();
      __syncwarp();
    }
    // The full selection key of slot s (0 = no candidate).
    auto key_of = [&](int s) { return s / VEC < valid_chunks ? select_key(val[s]) : 0u; };

    // Grouped selection: keep the topk_group groups whose top-two sum is largest (full keys).
    bool kept = active;
    if (a.topk_group < a.n_group) {
      uint32_t t1 = 0, t2 = 0;
#pragma unroll
      for (int s = 0; s < VPL; ++s) {
        const uint32_t k = key_of(s);
        t2 = max(t2, min(t1, k));
        t1 = max(t1, k);
      }
      for (int off = 1; off < P; off <<= 1) {  // merge the top two over the group's P lanes
        const uint32_t o1 = __shfl_xor_sync(kFull, t1, off);
        const uint32_t o2 = __shfl_xor_sync(kFull, t2, off);
        t2 = max(min(t1, o1), max(t2, o2));
        t1 = max(t1, o1);
      }
      // Groups of one expert score that expert alone.
      const float score = t2 != 0 ? __fadd_rn(key_value(t1), key_value(t2)) : key_value(t1);
      uint32_t gkey = (active && p == 0) ? select_key(score) : 0u;
      uint32_t chosen = 0;
      for (int r = 0; r < a.topk_group; ++r) {
        const uint32_t m = __reduce_max_sync(kFull, gkey);
        const uint32_t wg = __reduce_min_sync(kFull, (gkey == m && m != 0) ? static_cast<uint32_t>(g) : kFull);
        if (wg < 32) chosen |= 1u << wg;
        if (static_cast<uint32_t>(g) == wg) gkey = 0;
      }
      kept = active && ((chosen >> g) & 1u);
    }

    // Fast path: packed keys, one reduction a round; the winner promotes its second best and
    // rescans (below its last win) on every second win. Lane r keeps the r-th choice.
    {
      uint32_t pk[VPL];
#pragma unroll
      for (int s = 0; s < VPL; ++s)  // a valid key is >= order_key(-inf) = 0x007FFFFF: never 0 packed
        pk[s] = s / VEC < valid_chunks ? (select_key(val[s]) & ~a.id_mask) | static_cast<uint32_t>(expert_of(s)) : 0u;
      uint32_t k1 = 0, k2 = 0;
      if (kept) packed_top2<VPL>(pk, 0xFFFFFFFFu, k1, k2);
      bool have2 = true;
      uint32_t res = 0;
      for (int r = 0; r < a.top_k; ++r) {
        const uint32_t m = __reduce_max_sync(kFull, k1);
        if (lane == r) res = m;
        if (k1 == m) {  // the winner: packed keys are distinct
          if (have2) {
            k1 = k2;
            have2 = false;
          } else {
            packed_top2<VPL>(pk, m, k1, k2);
            have2 = true;
          }
        }
      }
      res_idx = static_cast<int>(res & a.id_mask);
      if (packed_near_tie(res, __reduce_max_sync(kFull, k1), a.top_k, a.id_mask)) {
        // The exact path: top_k rounds on the full keys, the lowest expert among equals. Only
        // the winning lane changes: it promotes its second best, and rescans on every second win.
        uint32_t key[VPL];
#pragma unroll
        for (int s = 0; s < VPL; ++s) key[s] = key_of(s);
        uint32_t k1, k2;
        int s1, s2;
        lane_top2<VPL>(key, 0u, k1, s1, k2, s2);
        if (!kept) k1 = k2 = 0;  // never chosen below
        int i1 = expert_of(s1), i2 = expert_of(s2);
        bool have2 = true;
        uint32_t consumed = 0;
        for (int r = 0; r < a.top_k; ++r) {
          const uint32_t m = __reduce_max_sync(kFull, k1);
          const uint32_t win = __reduce_min_sync(kFull, k1 == m ? static_cast<uint32_t>(i1) : kFull);
          if (lane == r) res_idx = static_cast<int>(win);
          if (k1 == m && static_cast<uint32_t>(i1) == win) {
            consumed |= 1u << s1;
            if (have2) {
              k1 = k2;
              s1 = s2;
              i1 = i2;
              have2 = false;
            } else {
              lane_top2<VPL>(key, consumed, k1, s1, k2, s2);
              i1 = expert_of(s1);
              i2 = expert_of(s2);
              have2 = true;
            }
          }
        }
      }
    }
  }
  const bool has = lane < a.top_k;
  const float res_val = has ? vals[warp][res_idx] : 0.0f;

  float w;
  if (a.sigmoid) {
    w = res_val;
    if (a.renormalize) w = __fdividef(w, warp_sum(has ? w : 0.0f) + 1e-20f);  // the sum is below 2^126
  } else {
    const float mx = __shfl_sync(kFull, res_val, 0);  // the first choice is the largest logit
    const float e = has ? exp2_ftz(__fmul_rn(res_val - mx, kLog2e)) : 0.0f;
    float denom;
    if (a.renormalize) {
      denom = warp_sum(e);
    } else {
      float part = 0.0f;
#pragma unroll
      for (int s = 0; s < VPL; ++s)
        if (s / VEC < valid_chunks) part += exp2_ftz(__fmul_rn(val[s] - mx, kLog2e));
      denom = warp_sum(part);
    }
    w = __fdividef(e, denom);  // denom >= 1 (the first choice contributes e^0)
  }
  if (has) {
    const bool local = res_idx >= a.first_expert && res_idx < a.last_expert;
    a.ids[token * a.ids_stride + lane] = local ? res_idx - a.first_expert : -1;
    a.weights[token * a.weights_stride + lane] = w * a.scale;
    if (a.counts != nullptr) atomicAdd(a.counts + res_idx, 1);
  }
}

// wc_moe_sigmoid_error's kernel: a grid-stride sweep, a warp max, one atomicMax a warp on the
// error's bits (non-negative floats order as their bits).
__global__ void sigmoid_error_kernel(float* max_err, uint32_t step, uint32_t count) {
  float worst = 0.0f;
  for (uint64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    const float x = __uint_as_float(static_cast<uint32_t>(i * step));
    if (isnan(x)) continue;
    worst = fmaxf(worst, fabsf(approx_sigmoid(x) - det_sigmoid(x)));
    worst = fmaxf(worst, fabsf(approx_sigmoid(-x) - det_sigmoid(-x)));
  }
  const uint32_t m = __reduce_max_sync(kFull, __float_as_uint(worst));
  if ((threadIdx.x & 31) == 0) atomicMax(reinterpret_cast<unsigned int*>(max_err), m);
}

int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

// The supported set: VEC in {1, 4}, VPL in {1, 2, 4, 8, 16, 32} with VPL >= VEC.
template <typename T, int VEC>
void launch_gate_vpl(const GateArgs& a, int vpl, unsigned blocks, cudaStream_t s) {
#define WC_GATE(N)                                                                     \
  case N:                                                                              \
    if constexpr (N >= VEC) gate_kernel<T, VEC, N><<<blocks, kGateWarps * 32, 0, s>>>(a); \
    break;
  switch (vpl) {
    WC_GATE(1)
    WC_GATE(2)
    WC_GATE(4)
    WC_GATE(8)
    WC_GATE(16)
    WC_GATE(32)
    default: break;
  }
#undef WC_GATE
}

template <typename T>
wc_status launch_gate(const wc_moe_gate_params& p, cudaStream_t s) {
  const int64_t n = p.num_experts, k = p.top_k, groups = p.n_group;
  if (p.num_tokens <= 0) return WC_OK;
  if (n <= 0 || n > WC_MOE_MAX_EXPERTS || k <= 0 || k > WC_MOE_MAX_TOP_K || groups <= 0 ||
      groups > WC_MOE_MAX_GROUPS || n % groups != 0 || p.topk_group <= 0 || p.topk_group > groups ||
      k > p.topk_group * (n / groups) || p.num_tokens > INT32_MAX || p.logits == nullptr ||
      p.topk_ids == nullptr || p.topk_weights == nullptr || p.first_expert < 0 || p.last_expert > n ||
      (p.scoring != WC_MOE_SOFTMAX && p.scoring != WC_MOE_SIGMOID) || (p.scoring == WC_MOE_SOFTMAX && groups != 1))
    return WC_ERR_INVALID_ARG;
  GateArgs a;
  a.logits = p.logits;
  a.bias = p.bias;
  a.ids = p.topk_ids;
  a.weights = p.topk_weights;
  a.counts = p.expert_counts;
  a.logits_stride = p.logits_stride;
  a.ids_stride = p.ids_stride;
  a.weights_stride = p.weights_stride;
  a.num_tokens = static_cast<int>(p.num_tokens);
  a.top_k = static_cast<int>(k);
  a.n_group = static_cast<int>(groups);
  a.topk_group = static_cast<int>(p.topk_group);
  a.experts_per_group = static_cast<int>(n / groups);
  a.group_shift = 0;
  while ((groups << (a.group_shift + 1)) <= 32) ++a.group_shift;  // P = largest power of 2 with groups * P <= 32
  a.first_expert = static_cast<int>(p.first_expert);
  a.last_expert = static_cast<int>(p.last_expert);
  a.id_mask = 1;
  while (a.id_mask + 1 < static_cast<uint32_t>(n)) a.id_mask = a.id_mask << 1 | 1u;
  a.scale = p.routed_scaling_factor;
  a.renormalize = p.renormalize != 0;
  a.sigmoid = p.scoring == WC_MOE_SIGMOID;
  a.prefilter = a.sigmoid && a.topk_group < a.n_group && k <= 2 * p.topk_group && a.experts_per_group >= 2;
  const int lanes = 1 << a.group_shift;
  const int epg = a.experts_per_group;
  const bool vec = epg % kGateVec == 0 && p.logits_stride % kGateVec == 0 &&
                   aligned_to(kGateVec * static_cast<int>(sizeof(T)), p.logits);
  const int v = vec ? kGateVec : 1;
  a.bias_vec = p.bias != nullptr && aligned_to(v * static_cast<int>(sizeof(float)), p.bias);
  const int chunks = (epg + lanes * v - 1) / (lanes * v);
  const int vpl = next_pow2(chunks * v);  // <= 32: epg / lanes < 32 for every valid n_group
  if (vpl > 32) return WC_ERR_UNSUPPORTED;
  const unsigned blocks = static_cast<unsigned>((p.num_tokens + kGateWarps - 1) / kGateWarps);
  if (vec) launch_gate_vpl<T, kGateVec>(a, vpl, blocks, s);
  else launch_gate_vpl<T, 1>(a, vpl, blocks, s);
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_moe_gate(const wc_moe_gate_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_gate<T>(*p, s); });
}

extern "C" wc_status wc_moe_sigmoid_error(float* max_err, uint32_t step, uint32_t count, wc_stream stream) {
  if (max_err == nullptr || step == 0 || static_cast<uint64_t>(count > 0 ? count - 1 : 0) * step > 0xFFFFFFFFull)
    return WC_ERR_INVALID_ARG;  // i * step must not wrap
  if (count == 0) return WC_OK;
  const uint32_t blocks = count / 256 + 1 < 1024 ? count / 256 + 1 : 1024;
  wc::sigmoid_error_kernel<<<blocks, 256, 0, reinterpret_cast<cudaStream_t>(stream)>>>(max_err, step, count);
  return wc::launch_status();
}

extern "C" wc_status wc_moe_align(const wc_moe_align_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_align(*p, reinterpret_cast<cudaStream_t>(stream));
}

extern "C" wc_status wc_moe_gather(const wc_moe_gather_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_gather(*p, reinterpret_cast<cudaStream_t>(stream));
}

extern "C" wc_status wc_moe_combine(const wc_moe_combine_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_combine<T>(*p, s); });
}
