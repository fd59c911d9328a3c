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
// The selection order: NaN ranks as -inf, -0 equals +0 (the CPU reference has the same two rules).
__device__ __forceinline__ float canon(float v) { return isnan(v) ? -INFINITY : (v == 0.0f ? 0.0f : v); }

// order_key / key_value (the keys below) and det_exp are common.cuh's.

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
  // Chunks of this lane inside its group: chunk c is valid iff c < valid_chunks (chunk_stride
  // is a power of two: a shift, not a ~30-instruction division per token).
  constexpr int kVecShift = VEC == 4 ? 2 : VEC == 2 ? 1 : 0;
  static_assert(VEC == 1 << kVecShift, "VEC must be 1, 2 or 4");
  const int valid_chunks = active && p * VEC < epg ? (epg - p * VEC + chunk_stride - 1) >> (a.group_shift + kVecShift) : 0;
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
