// moe_routing/permute.cuh — moe_gather's and moe_combine's kernels and launchers (included by
// moe_routing.cu, one translation unit). See the header of moe_routing.cu.
#pragma once

#include "common.cuh"

namespace wc {
namespace {

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
    // __ldg: the positions are read-only here, so the next ones load before this store lands
    // (plain loads were reissued after each store: out might alias them).
#pragma unroll 4
    for (int k = 0; k < a.top_k; ++k) {
      const int64_t r = __ldg(pos + k);
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
  const int64_t esize = dtype_bytes(p.dtype);
  if (esize == 0) return WC_ERR_UNSUPPORTED;
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
  // A misaligned element: the Rust side never sends one.
  if (!with_copy_unit(esize, p.hidden * esize, p.hidden_stride * esize, p.out_stride * esize, p.hidden_states,
                      p.out, [&](auto unit) { launch_gather_unit<decltype(unit)>(a, esize, p, s); }))
    return WC_ERR_INVALID_ARG;
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
  // kGroup positions at a time: their rows are all loaded before any is summed (several 16-byte
  // loads in flight per thread, not one: the sum consumed each load before the next was issued),
  // then summed in k order (fixed order: deterministic sums).
  // The 16-byte path holds the rows as words (common.cuh's Chunk; a Pack<T, 8> took a register
  // per element: 64 registers) and loads the group's positions and weights before its rows
  // (read-only here).
  constexpr int kGroup = 4;
  constexpr bool kWords = VEC == kVec16<T>;
  for (int k0 = 0; k0 < a.top_k; k0 += kGroup) {
    int64_t r[kGroup];
    float wk[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      r[j] = k0 + j < a.top_k ? __ldg(pos + k0 + j) : -1;
      wk[j] = k0 + j < a.top_k ? __ldg(w + k0 + j) : 0.0f;
    }
    Chunk<T, VEC> x[kGroup];
    bool ok[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      ok[j] = r[j] >= 0 && r[j] < a.num_rows;
      if (ok[j]) x[j] = load_chunk<T, VEC>(src + r[j] * a.expert_out_stride + i * VEC);
    }
#pragma unroll
    for (int j = 0; j < kGroup; ++j)
      if (ok[j])
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[v] = __fmaf_rn(wk[j], x[j].at(v), acc[v]);
  }
  T* dst = static_cast<T*>(a.out) + t * a.out_stride + i * VEC;
  if constexpr (kWords) {
    store_floats16<T>(dst, acc);  // one 16-byte store (a Pack's was split into 32-bit stores)
  } else {
    Pack<T, VEC> o;
#pragma unroll
    for (int v = 0; v < VEC; ++v) o.v[v] = from_float<T>(acc[v]);
    store_pack<T, VEC>(dst, o);
  }
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
