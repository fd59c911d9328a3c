// moe_routing.cu — the MoE routing family: moe_gate, moe_align, moe_gather, moe_combine.
//
// Contract (warpcore.h, docs/moe_routing.md):
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
//     correctly rounded IEEE operations (explicit _rn intrinsics, fma, rint), which the Rust
//     reference (reference::moe_routing::sigmoid_f32) repeats operation for operation. A group's
//     score is the f32 sum of its top two selection values.
//   * moe_align places each expert's assignments in increasing flat index (token * top_k + k):
//     per-tile counts, a column scan over tiles, warp-ordered ranks (__match_any_sync).
//   Weights are f32 math (accuracy, not bits, is checked against an f64 reference).
//
// Thread mapping / roofline (H200, 4.06 TB/s copy):
//   gate     one warp per token; the token's logits live in registers, VPL values per lane.
//            Experts are split into n_group groups of P lanes each (P = 32 without grouping);
//            lane (g, p) holds group g's experts g*epg + (c*P + p)*VEC + v. Each of the top_k
//            rounds is two warp reductions (__reduce_max_sync on the key, __reduce_min_sync on
//            the index among lanes holding the max) plus a register rescan in the winning lane.
//            16384 x 256 f32 logits = 16.8 MB -> 4.1 us floor; the bar (10 us) is about
//            instruction count and launch latency, not bytes.
//   align    tiles of WC_MOE_ALIGN_TILE assignments: count (one block per tile) -> scan (one
//            block: per-expert column scan over tiles, padded offsets, block ids, padding) ->
//            place (one block per tile, 8 warps in order). One fused block when <= one tile.
//   gather   block (token, 256-unit chunk of the row): read the row once, store it at the
//            token's top_k positions; plus one block per expert that zero-fills its padding rows.
//   combine  block (token, 256-vector chunk): top_k 16-byte loads in flight per thread.
#include "common.cuh"

namespace wc {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// ------------------------------------------------------------------ selection keys
// The selection order: NaN ranks as -inf, -0 equals +0 (the CPU reference has the same two rules).
__device__ __forceinline__ float canon(float v) { return isnan(v) ? -INFINITY : (v == 0.0f ? 0.0f : v); }

// Monotone map from canonical floats to uint32 (larger value -> larger key). Every canonical
// float maps to a key >= order_key(-inf) = 0x007FFFFF, so 0 is free to mean "no candidate".
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// exp(y) for y clamped to [-87, 88] (NaN stays NaN), from correctly rounded operations only:
// n = rint(y * log2e); r = y - n*ln2 (two fmas, Cody-Waite); degree-7 Taylor polynomial in
// Horner form with fmas; times 2^n built from bits. The constants are given as bits and the
// Rust reference uses the same bits and the same operation order, so both produce identical
// floats. Accuracy: a few ulp (the reference's tests measure it).
__device__ __forceinline__ float det_exp(float y) {
  y = y < -87.0f ? -87.0f : y;
  y = y > 88.0f ? 88.0f : y;
  const float n = rintf(__fmul_rn(y, __uint_as_float(0x3FB8AA3Bu)));  // log2(e)
  float r = __fmaf_rn(n, -__uint_as_float(0x3F317200u), y);           // ln2 high part
  r = __fmaf_rn(n, -__uint_as_float(0x35BFBE8Eu), r);                 // ln2 low part
  float p = __uint_as_float(0x39500D01u);                             // 1/5040
  p = __fmaf_rn(p, r, __uint_as_float(0x3AB60B61u));                  // 1/720
  p = __fmaf_rn(p, r, __uint_as_float(0x3C088889u));                  // 1/120
  p = __fmaf_rn(p, r, __uint_as_float(0x3D2AAAABu));                  // 1/24
  p = __fmaf_rn(p, r, __uint_as_float(0x3E2AAAABu));                  // 1/6
  p = __fmaf_rn(p, r, 0.5f);
  p = __fmaf_rn(p, r, 1.0f);
  p = __fmaf_rn(p, r, 1.0f);
  // n is in [-126, 127] (NaN converts to 0): 2^n is a normal float.
  return __fmul_rn(p, __int_as_float((__float2int_rn(n) + 127) << 23));
}

// 1 / (1 + exp(-x)), deterministic (see det_exp).
__device__ __forceinline__ float det_sigmoid(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, det_exp(-x)));
}

// ------------------------------------------------------------------ gate
constexpr int kGateWarps = 8;
constexpr int kGateVec = 4;  // elements per vector load (16 B of f32, 8 B of f16 / bf16)

struct GateArgs {
  const void* logits;  // [num_tokens, num_experts]
  const float* bias;   // [num_experts] or nullptr
  int32_t* ids;        // [num_tokens, top_k]
  float* weights;      // [num_tokens, top_k]
  int32_t* counts;     // [num_experts] or nullptr
  int64_t logits_stride, ids_stride, weights_stride;
  int num_tokens, top_k, n_group, topk_group, experts_per_group, group_shift;  // P = 1 << group_shift
  int first_expert, last_expert;
  float scale;
  int renormalize, sigmoid;
};

// The lane's best two candidates not in `consumed` (a slot bitmask), by key descending then
// slot ascending (= expert ascending within a lane). Key 0 = none.
template <int VPL>
__device__ __forceinline__ void lane_top2(const uint32_t (&key)[VPL], const float (&val)[VPL], uint32_t consumed,
                                          uint32_t& k1, int& s1, float& v1, uint32_t& k2, int& s2, float& v2) {
  k1 = k2 = 0;
  s1 = s2 = 0;
  v1 = v2 = 0.0f;
#pragma unroll
  for (int s = 0; s < VPL; ++s) {
    const uint32_t k = ((consumed >> s) & 1u) ? 0u : key[s];
    if (k > k1) {
      k2 = k1;
      s2 = s1;
      v2 = v1;
      k1 = k;
      s1 = s;
      v1 = val[s];
    } else if (k > k2) {
      k2 = k;
      s2 = s;
      v2 = val[s];
    }
  }
}

// One warp per token (see the header). VEC: elements per load; VPL: values per lane (a
// multiple of VEC; slots past the group's end hold no candidate).
template <typename T, int VEC, int VPL>
__global__ void __launch_bounds__(kGateWarps * 32) gate_kernel(const GateArgs a) {
  static_assert(VPL % VEC == 0 && VPL <= 32, "VPL must be a multiple of VEC, at most 32");
  __shared__ float chosen_val[kGateWarps][32];  // the r-th choice's weight input, by its owner
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int token = blockIdx.x * kGateWarps + warp;
  if (token >= a.num_tokens) return;  // whole warps leave together; no block barriers below
  const int P = 1 << a.group_shift;
  const int g = lane >> a.group_shift;
  const int p = lane & (P - 1);
  const bool active = g < a.n_group;
  const int epg = a.experts_per_group;
  const int lane_base = g * epg + p * VEC;  // expert of slot 0
  const int chunk_stride = P * VEC;         // experts between consecutive chunks of a lane
  // Chunks of this lane inside its group: chunk c is valid iff c < valid_chunks.
  const int valid_chunks = active && p * VEC < epg ? (epg - p * VEC + chunk_stride - 1) / chunk_stride : 0;
  const T* row = static_cast<const T*>(a.logits) + token * a.logits_stride;

  uint32_t key[VPL];  // selection keys; 0 = no candidate
  float val[VPL];     // the weight's input: the logit (softmax) or the unbiased sigmoid
#pragma unroll
  for (int c = 0; c < VPL / VEC; ++c) {
    Pack<T, VEC> x = {};
    if (c < valid_chunks) x = load_pack<T, VEC>(row + lane_base + c * chunk_stride);
#pragma unroll
    for (int v = 0; v < VEC; ++v) val[c * VEC + v] = to_float(x.v[v]);
  }
  if (a.sigmoid) {
    float bias[VPL];
#pragma unroll
    for (int c = 0; c < VPL / VEC; ++c)
#pragma unroll
      for (int v = 0; v < VEC; ++v)
        bias[c * VEC + v] = (a.bias != nullptr && c < valid_chunks) ? __ldg(a.bias + lane_base + c * chunk_stride + v) : 0.0f;
#pragma unroll
    for (int s = 0; s < VPL; ++s) {
      val[s] = det_sigmoid(val[s]);
      key[s] = s / VEC < valid_chunks ? order_key(canon(__fadd_rn(val[s], bias[s]))) : 0u;
    }
  } else {
#pragma unroll
    for (int s = 0; s < VPL; ++s) key[s] = s / VEC < valid_chunks ? order_key(canon(val[s])) : 0u;
  }

  uint32_t k1, k2;
  int s1, s2;
  float v1, v2;
  lane_top2<VPL>(key, val, 0u, k1, s1, v1, k2, s2, v2);

  // Grouped selection: keep the topk_group groups whose top-two sum is largest.
  if (a.topk_group < a.n_group) {
    uint32_t t1 = k1, t2 = k2;
    for (int off = 1; off < P; off <<= 1) {  // merge the top two over the group's P lanes
      const uint32_t o1 = __shfl_xor_sync(kFull, t1, off);
      const uint32_t o2 = __shfl_xor_sync(kFull, t2, off);
      t2 = max(min(t1, o1), max(t2, o2));
      t1 = max(t1, o1);
    }
    // Groups of one expert score that expert alone.
    const float score = t2 != 0 ? __fadd_rn(key_value(t1), key_value(t2)) : key_value(t1);
    uint32_t gkey = (active && p == 0) ? order_key(canon(score)) : 0u;
    uint32_t chosen = 0;
    for (int r = 0; r < a.topk_group; ++r) {
      const uint32_t m = __reduce_max_sync(kFull, gkey);
      const uint32_t wg = __reduce_min_sync(kFull, (gkey == m && m != 0) ? static_cast<uint32_t>(g) : kFull);
      if (wg < 32) chosen |= 1u << wg;
      if (static_cast<uint32_t>(g) == wg) gkey = 0;
    }
    if (!active || !((chosen >> g) & 1u)) k1 = k2 = 0;  // never chosen below
  }

  // top_k rounds (top_k <= 32): the largest key, the lowest expert among equals. Only the
  // winning lane changes: it promotes its second best, and rescans on every second win.
  auto expert_of = [&](int s) { return lane_base + (s / VEC) * chunk_stride + (s % VEC); };
  int i1 = expert_of(s1), i2 = expert_of(s2);
  bool have2 = true;
  uint32_t consumed = 0;
  int res_idx = 0;
  for (int r = 0; r < a.top_k; ++r) {
    const uint32_t m = __reduce_max_sync(kFull, k1);
    const uint32_t win = __reduce_min_sync(kFull, k1 == m ? static_cast<uint32_t>(i1) : kFull);
    if (lane == r) res_idx = static_cast<int>(win);
    if (k1 == m && static_cast<uint32_t>(i1) == win) {
      chosen_val[warp][r] = v1;
      consumed |= 1u << s1;
      if (have2) {
        k1 = k2;
        s1 = s2;
        v1 = v2;
        i1 = i2;
        have2 = false;
      } else {
        lane_top2<VPL>(key, val, consumed, k1, s1, v1, k2, s2, v2);
        i1 = expert_of(s1);
        i2 = expert_of(s2);
        have2 = true;
      }
    }
  }
  __syncwarp();
  const bool has = lane < a.top_k;
  const float res_val = has ? chosen_val[warp][lane] : 0.0f;

  float w;
  if (a.sigmoid) {
    w = res_val;
    if (a.renormalize) w = w / (warp_sum(has ? w : 0.0f) + 1e-20f);
  } else {
    const float mx = __shfl_sync(kFull, res_val, 0);  // the first choice is the largest logit
    const float e = has ? __expf(res_val - mx) : 0.0f;
    float denom;
    if (a.renormalize) {
      denom = warp_sum(e);
    } else {
      float part = 0.0f;
#pragma unroll
      for (int s = 0; s < VPL; ++s)
        if (s / VEC < valid_chunks) part += __expf(val[s] - mx);
      denom = warp_sum(part);
    }
    w = e / denom;
  }
  if (has) {
    const bool local = res_idx >= a.first_expert && res_idx < a.last_expert;
    a.ids[token * a.ids_stride + lane] = local ? res_idx - a.first_expert : -1;
    a.weights[token * a.weights_stride + lane] = w * a.scale;
    if (a.counts != nullptr) atomicAdd(a.counts + res_idx, 1);
  }
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
  a.scale = p.routed_scaling_factor;
  a.renormalize = p.renormalize != 0;
  a.sigmoid = p.scoring == WC_MOE_SIGMOID;
  const int lanes = 1 << a.group_shift;
  const int epg = a.experts_per_group;
  const bool vec = epg % kGateVec == 0 && p.logits_stride % kGateVec == 0 &&
                   aligned_to(kGateVec * static_cast<int>(sizeof(T)), p.logits);
  const int v = vec ? kGateVec : 1;
  const int chunks = (epg + lanes * v - 1) / (lanes * v);
  const int vpl = next_pow2(chunks * v);  // <= 32: epg / lanes < 32 for every valid n_group
  if (vpl > 32) return WC_ERR_UNSUPPORTED;
  const unsigned blocks = static_cast<unsigned>((p.num_tokens + kGateWarps - 1) / kGateWarps);
  if (vec) launch_gate_vpl<T, kGateVec>(a, vpl, blocks, s);
  else launch_gate_vpl<T, 1>(a, vpl, blocks, s);
  return launch_status();
}

// ------------------------------------------------------------------ align
constexpr int kAlignThreads = 256;
constexpr int kAlignWarps = kAlignThreads / 32;
constexpr int kAlignItems = WC_MOE_ALIGN_TILE / kAlignThreads;  // per thread
constexpr int kScanThreads = 512;  // one expert column per thread (E <= 512)
static_assert(kAlignItems * kAlignThreads == WC_MOE_ALIGN_TILE, "tile = threads * items");

struct AlignArgs {
  const int32_t* topk_ids;  // [num_tokens, top_k], row stride ids_stride
  int32_t* sorted_ids;      // [max_padded]
  int32_t* block_expert_ids;// [max_blocks]
  int32_t* expert_offsets;  // [num_experts + 1]
  int32_t* expert_counts;   // [num_experts]
  int32_t* token_positions; // [num_assignments]
  int32_t* workspace;       // [tiles, num_experts] (tiles > 1)
  int64_t ids_stride;
  int num_assignments, top_k, num_experts, block_m, max_padded, max_blocks, tiles;
};

__device__ __forceinline__ bool valid_expert(int id, int num_experts) {
  return static_cast<unsigned>(id) < static_cast<unsigned>(num_experts);
}

// This warp's items of a tile, in flat order: item j of lane = tile base + warp * 32 * ITEMS +
// j * 32 + lane. Past the end: -1 (never a valid expert).
__device__ __forceinline__ void load_warp_ids(const AlignArgs& a, int flat0, int (&ids)[kAlignItems]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kAlignItems; ++j) {
    const int flat = flat0 + j * 32 + lane;
    ids[j] = -1;
    if (flat < a.num_assignments) {
      const int t = flat / a.top_k;
      ids[j] = a.topk_ids[t * a.ids_stride + (flat - t * a.top_k)];
    }
  }
}

// Per-warp counts: row[e] = number of this warp's items with expert e.
__device__ __forceinline__ void warp_histogram(const AlignArgs& a, const int (&ids)[kAlignItems], int* row) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < a.num_experts; e += 32) row[e] = 0;
  __syncwarp();
#pragma unroll
  for (int j = 0; j < kAlignItems; ++j)
    if (valid_expert(ids[j], a.num_experts)) atomicAdd(row + ids[j], 1);
}

__device__ __forceinline__ int round_up(int v, int m) { return (v + m - 1) / m * m; }

// From per-expert counts (cnt, shared): padded offsets into off[0..E] (shared), then writes
// expert_counts, expert_offsets, block_expert_ids and every padding entry of sorted_ids.
// Block-cooperative (any multiple of 32 threads); ends with a barrier.
__device__ void finish_offsets(const AlignArgs& a, const int* cnt, int* off, int* scratch) {
  const int E = a.num_experts, bm = a.block_m;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int per = (E + nthreads - 1) / nthreads;  // consecutive experts per thread
  int sum = 0;
  for (int i = 0; i < per; ++i) {
    const int e = tid * per + i;
    if (e < E) sum += round_up(cnt[e], bm);
  }
  int total;
  int run = block_exclusive_scan(sum, scratch, &total);
  for (int i = 0; i < per; ++i) {
    const int e = tid * per + i;
    if (e < E) {
      off[e] = run;
      run += round_up(cnt[e], bm);
    }
  }
  if (tid == 0) off[E] = total;
  __syncthreads();
  for (int e = tid; e <= E; e += nthreads) {
    a.expert_offsets[e] = off[e];
    if (e < E) a.expert_counts[e] = cnt[e];
  }
  for (int b = tid; b < a.max_blocks; b += nthreads) {
    const int64_t row = static_cast<int64_t>(b) * bm;
    int e = -1;
    if (row < total) {  // the last expert whose segment starts at or before row
      int lo = 0, hi = E;
      while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (off[mid] <= row) lo = mid;
        else hi = mid;
      }
      e = lo;
    }
    a.block_expert_ids[b] = e;
  }
  const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
  for (int e = warp; e < E; e += nwarps)
    for (int r = off[e] + cnt[e] + lane; r < off[e + 1]; r += 32) a.sorted_ids[r] = a.num_assignments;
  for (int r = total + tid; r < a.max_padded; r += nthreads) a.sorted_ids[r] = a.num_assignments;
  __syncthreads();
}

// Places this warp's items: base[e] = rows of expert e before this warp's first one (without
// off[e]). Items go in flat order; equal experts in one step are ranked by lane.
__device__ __forceinline__ void place_warp(const AlignArgs& a, const int (&ids)[kAlignItems], int flat0, int* base,
                                           const int* off) {
  const int lane = threadIdx.x & 31;
  const unsigned lower = (1u << lane) - 1u;
#pragma unroll
  for (int j = 0; j < kAlignItems; ++j) {
    const int flat = flat0 + j * 32 + lane;
    const int id = ids[j];
    const bool valid = valid_expert(id, a.num_experts);
    const unsigned peers = __match_any_sync(kFull, valid ? id : -1);
    const int rank = __popc(peers & lower);
    if (valid) {
      const int pos = off[id] + base[id] + rank;
      a.sorted_ids[pos] = flat;
      a.token_positions[flat] = pos;
    } else if (flat < a.num_assignments) {
      a.token_positions[flat] = -1;
    }
    __syncwarp();
    if (valid && rank == 0) base[id] += __popc(peers);
    __syncwarp();
  }
}

// At most one tile: everything in one block.
__global__ void __launch_bounds__(kAlignThreads) align_fused_kernel(const AlignArgs a) {
  __shared__ int base[kAlignWarps][WC_MOE_MAX_EXPERTS];
  __shared__ int cnt[WC_MOE_MAX_EXPERTS];
  __shared__ int off[WC_MOE_MAX_EXPERTS + 1];
  __shared__ int scratch[32];
  const int warp = threadIdx.x >> 5;
  const int flat0 = warp * 32 * kAlignItems;
  int ids[kAlignItems];
  load_warp_ids(a, flat0, ids);
  warp_histogram(a, ids, base[warp]);
  __syncthreads();
  for (int e = threadIdx.x; e < a.num_experts; e += blockDim.x) {
    int run = 0;
    for (int w = 0; w < kAlignWarps; ++w) {
      const int c = base[w][e];
      base[w][e] = run;
      run += c;
    }
    cnt[e] = run;
  }
  __syncthreads();
  finish_offsets(a, cnt, off, scratch);
  place_warp(a, ids, flat0, base[warp], off);
}

// Several tiles, 1/3: each tile's per-expert counts -> workspace[tile, :].
__global__ void __launch_bounds__(kAlignThreads) align_count_kernel(const AlignArgs a) {
  __shared__ int hist[WC_MOE_MAX_EXPERTS];
  for (int e = threadIdx.x; e < a.num_experts; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int flat0 = blockIdx.x * WC_MOE_ALIGN_TILE + (threadIdx.x >> 5) * 32 * kAlignItems;
  int ids[kAlignItems];
  load_warp_ids(a, flat0, ids);
#pragma unroll
  for (int j = 0; j < kAlignItems; ++j)
    if (valid_expert(ids[j], a.num_experts)) atomicAdd(hist + ids[j], 1);
  __syncthreads();
  int32_t* row = a.workspace + static_cast<int64_t>(blockIdx.x) * a.num_experts;
  for (int e = threadIdx.x; e < a.num_experts; e += blockDim.x) row[e] = hist[e];
}

// 2/3 (one block): workspace[t, e] <- rows of expert e in tiles before t; counts, offsets,
// block ids, padding.
__global__ void __launch_bounds__(kScanThreads) align_scan_kernel(const AlignArgs a) {
  __shared__ int cnt[WC_MOE_MAX_EXPERTS];
  __shared__ int off[WC_MOE_MAX_EXPERTS + 1];
  __shared__ int scratch[32];
  constexpr int kBatch = 16;  // loads in flight per thread: all loads of a batch before its stores
  for (int e = threadIdx.x; e < a.num_experts; e += blockDim.x) {
    int run = 0;
    int32_t* col = a.workspace + e;
    for (int t0 = 0; t0 < a.tiles; t0 += kBatch) {
      int c[kBatch];
#pragma unroll
      for (int i = 0; i < kBatch; ++i) c[i] = t0 + i < a.tiles ? col[static_cast<int64_t>(t0 + i) * a.num_experts] : 0;
#pragma unroll
      for (int i = 0; i < kBatch; ++i)
        if (t0 + i < a.tiles) {
          col[static_cast<int64_t>(t0 + i) * a.num_experts] = run;
          run += c[i];
        }
    }
    cnt[e] = run;
  }
  __syncthreads();
  finish_offsets(a, cnt, off, scratch);
}

// 3/3: place each tile's items.
__global__ void __launch_bounds__(kAlignThreads) align_place_kernel(const AlignArgs a) {
  __shared__ int base[kAlignWarps][WC_MOE_MAX_EXPERTS];
  __shared__ int off[WC_MOE_MAX_EXPERTS];
  const int warp = threadIdx.x >> 5;
  const int flat0 = blockIdx.x * WC_MOE_ALIGN_TILE + warp * 32 * kAlignItems;
  int ids[kAlignItems];
  load_warp_ids(a, flat0, ids);
  warp_histogram(a, ids, base[warp]);
  __syncthreads();
  const int32_t* tile_base = a.workspace + static_cast<int64_t>(blockIdx.x) * a.num_experts;
  for (int e = threadIdx.x; e < a.num_experts; e += blockDim.x) {
    off[e] = a.expert_offsets[e];
    int run = tile_base[e];
    for (int w = 0; w < kAlignWarps; ++w) {
      const int c = base[w][e];
      base[w][e] = run;
      run += c;
    }
  }
  __syncthreads();
  place_warp(a, ids, flat0, base[warp], off);
}

wc_status launch_align(const wc_moe_align_params& p, cudaStream_t s) {
  const int64_t numel = p.num_tokens * p.top_k, E = p.num_experts, bm = p.block_m;
  if (p.num_tokens < 0 || p.top_k <= 0 || E <= 0 || E > WC_MOE_MAX_EXPERTS || bm <= 0 || numel > INT32_MAX)
    return WC_ERR_INVALID_ARG;
  const int64_t max_padded = numel + E * (bm - 1);
  const int64_t max_blocks = (max_padded + bm - 1) / bm;
  const int64_t tiles = (numel + WC_MOE_ALIGN_TILE - 1) / WC_MOE_ALIGN_TILE;
  if (max_padded > INT32_MAX - WC_MOE_ALIGN_TILE || (tiles > 1 && p.workspace == nullptr) || p.sorted_ids == nullptr ||
      p.block_expert_ids == nullptr || p.expert_offsets == nullptr || p.expert_counts == nullptr ||
      (numel > 0 && (p.topk_ids == nullptr || p.token_positions == nullptr)))
    return WC_ERR_INVALID_ARG;
  AlignArgs a;
  a.topk_ids = p.topk_ids;
  a.sorted_ids = p.sorted_ids;
  a.block_expert_ids = p.block_expert_ids;
  a.expert_offsets = p.expert_offsets;
  a.expert_counts = p.expert_counts;
  a.token_positions = p.token_positions;
  a.workspace = p.workspace;
  a.ids_stride = p.ids_stride;
  a.num_assignments = static_cast<int>(numel);
  a.top_k = static_cast<int>(p.top_k);
  a.num_experts = static_cast<int>(E);
  a.block_m = static_cast<int>(bm);
  a.max_padded = static_cast<int>(max_padded);
  a.max_blocks = static_cast<int>(max_blocks);
  a.tiles = static_cast<int>(tiles);
  if (tiles <= 1) {
    align_fused_kernel<<<1, kAlignThreads, 0, s>>>(a);
  } else {
    align_count_kernel<<<static_cast<unsigned>(tiles), kAlignThreads, 0, s>>>(a);
    align_scan_kernel<<<1, kScanThreads, 0, s>>>(a);
    align_place_kernel<<<static_cast<unsigned>(tiles), kAlignThreads, 0, s>>>(a);
  }
  return launch_status();
}

// ------------------------------------------------------------------ gather / combine
constexpr int kRowThreads = 256;

struct GatherArgs {
  const void* hidden_states;      // [num_tokens, row_units] at hidden_stride units
  const int32_t* token_positions; // [num_tokens, top_k]
  const int32_t* expert_offsets;  // [num_experts + 1]
  const int32_t* expert_counts;   // [num_experts]
  void* out;                      // [num_rows, row_units] at out_stride units
  int64_t row_units, hidden_stride, out_stride, num_rows;
  int num_tokens, top_k, num_experts;
};

// U: the copy unit (16, 8, 4, 2 or 1 bytes), chosen from the rows' size and alignment.
template <typename U>
__global__ void __launch_bounds__(kRowThreads) gather_kernel(const GatherArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kRowThreads + threadIdx.x;
  if (i >= a.row_units) return;
  U* out = static_cast<U*>(a.out);
  const int b = blockIdx.x;
  if (b < a.num_tokens) {
    const U v = static_cast<const U*>(a.hidden_states)[b * a.hidden_stride + i];
    const int32_t* pos = a.token_positions + static_cast<int64_t>(b) * a.top_k;
    for (int k = 0; k < a.top_k; ++k) {
      const int64_t r = pos[k];
      if (r >= 0 && r < a.num_rows) out[r * a.out_stride + i] = v;
    }
  } else {  // expert e's padding rows, clamped to the output
    const int e = b - a.num_tokens;
    const int64_t start = max(static_cast<int64_t>(a.expert_offsets[e]) + a.expert_counts[e], int64_t{0});
    const int64_t end = min(static_cast<int64_t>(a.expert_offsets[e + 1]), a.num_rows);
    const U zero = {};
    for (int64_t r = start; r < end; ++r) out[r * a.out_stride + i] = zero;
  }
}

template <typename U>
void launch_gather_unit(GatherArgs a, int64_t esize, const wc_moe_gather_params& p, cudaStream_t s) {
  const int64_t per = static_cast<int64_t>(sizeof(U)) / esize;  // elements per unit
  a.row_units = p.hidden / per;
  a.hidden_stride = p.hidden_stride / per;
  a.out_stride = p.out_stride / per;
  const dim3 grid(static_cast<unsigned>(p.num_tokens + p.num_experts),
                  static_cast<unsigned>((a.row_units + kRowThreads - 1) / kRowThreads));
  gather_kernel<U><<<grid, kRowThreads, 0, s>>>(a);
}

wc_status launch_gather(const wc_moe_gather_params& p, cudaStream_t s) {
  int64_t esize;
  switch (p.dtype) {
    case WC_F32: esize = 4; break;
    case WC_F16:
    case WC_BF16: esize = 2; break;
    case WC_E4M3: esize = 1; break;
    default: return WC_ERR_UNSUPPORTED;
  }
  if (p.num_tokens < 0 || p.top_k <= 0 || p.hidden <= 0 || p.num_experts <= 0 || p.num_rows < 0 ||
      p.num_tokens + p.num_experts > INT32_MAX || p.num_rows > INT32_MAX ||
      (p.hidden * esize + kRowThreads - 1) / kRowThreads > 65535 || p.expert_offsets == nullptr ||
      p.expert_counts == nullptr)
    return WC_ERR_INVALID_ARG;
  if (p.num_rows == 0) return WC_OK;
  GatherArgs a;
  a.hidden_states = p.hidden_states;
  a.token_positions = p.token_positions;
  a.expert_offsets = p.expert_offsets;
  a.expert_counts = p.expert_counts;
  a.out = p.out;
  a.num_rows = p.num_rows;
  a.num_tokens = static_cast<int>(p.num_tokens);
  a.top_k = static_cast<int>(p.top_k);
  a.num_experts = static_cast<int>(p.num_experts);
  // The widest unit that divides the row and both strides and matches the pointers.
  auto fits = [&](int64_t bytes) {
    return (p.hidden * esize) % bytes == 0 && (p.hidden_stride * esize) % bytes == 0 &&
           (p.out_stride * esize) % bytes == 0 && aligned_to(static_cast<int>(bytes), p.hidden_states, p.out);
  };
  if (fits(16)) launch_gather_unit<uint4>(a, esize, p, s);
  else if (fits(8)) launch_gather_unit<uint2>(a, esize, p, s);
  else if (fits(4)) launch_gather_unit<uint32_t>(a, esize, p, s);
  else if (fits(2)) launch_gather_unit<uint16_t>(a, esize, p, s);
  else launch_gather_unit<uint8_t>(a, esize, p, s);
  return launch_status();
}

struct CombineArgs {
  const void* expert_out;         // [num_rows, hidden] at expert_out_stride
  const int32_t* token_positions; // [num_tokens, top_k]
  const float* weights;           // [num_tokens, top_k] at weights_stride
  void* out;                      // [num_tokens, hidden] at out_stride
  int64_t row_vecs, num_rows, expert_out_stride, weights_stride, out_stride;
  int top_k;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kRowThreads) combine_kernel(const CombineArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kRowThreads + threadIdx.x;  // vector in the row
  if (i >= a.row_vecs) return;
  const int64_t t = blockIdx.x;
  const int32_t* pos = a.token_positions + t * a.top_k;
  const float* w = a.weights + t * a.weights_stride;
  const T* src = static_cast<const T*>(a.expert_out);
  float acc[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) acc[v] = 0.0f;
#pragma unroll 4
  for (int k = 0; k < a.top_k; ++k) {  // fixed order: deterministic sums
    const int64_t r = pos[k];
    if (r >= 0 && r < a.num_rows) {
      const float wk = w[k];
      const Pack<T, VEC> x = load_pack<T, VEC>(src + r * a.expert_out_stride + i * VEC);
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[v] = __fmaf_rn(wk, to_float(x.v[v]), acc[v]);
    }
  }
  Pack<T, VEC> o;
#pragma unroll
  for (int v = 0; v < VEC; ++v) o.v[v] = from_float<T>(acc[v]);
  store_pack<T, VEC>(static_cast<T*>(a.out) + t * a.out_stride + i * VEC, o);
}

template <typename T>
wc_status launch_combine(const wc_moe_combine_params& p, cudaStream_t s) {
  if (p.num_tokens <= 0) return WC_OK;
  if (p.top_k <= 0 || p.hidden <= 0 || p.num_rows < 0 || p.num_tokens > INT32_MAX ||
      (p.hidden + kRowThreads - 1) / kRowThreads > 65535 || p.token_positions == nullptr || p.topk_weights == nullptr)
    return WC_ERR_INVALID_ARG;
  constexpr int V = kVec16<T>;
  const bool vec = p.hidden % V == 0 && p.expert_out_stride % V == 0 && p.out_stride % V == 0 &&
                   aligned_to(16, p.expert_out, p.out);
  CombineArgs a;
  a.expert_out = p.expert_out;
  a.token_positions = p.token_positions;
  a.weights = p.topk_weights;
  a.out = p.out;
  a.num_rows = p.num_rows;
  a.expert_out_stride = p.expert_out_stride;
  a.weights_stride = p.weights_stride;
  a.out_stride = p.out_stride;
  a.top_k = static_cast<int>(p.top_k);
  a.row_vecs = vec ? p.hidden / V : p.hidden;
  const dim3 grid(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>((a.row_vecs + kRowThreads - 1) / kRowThreads));
  if (vec) combine_kernel<T, V><<<grid, kRowThreads, 0, s>>>(a);
  else combine_kernel<T, 1><<<grid, kRowThreads, 0, s>>>(a);
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_moe_gate(const wc_moe_gate_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_gate<T>(*p, s); });
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
