// moe_routing/align.cuh — moe_align's kernels and launcher (included by moe_routing.cu, one
// translation unit). Stable counting sort of assignments by expert, padded to block_m; see
// the header of moe_routing.cu and docs/moe_routing.md.
#pragma once

#include "common.cuh"

namespace wc {
namespace {

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
    const unsigned peers = __match_any_sync(0xffffffffu, valid ? id : -1);
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

// Several tiles, three kernels in a chain: the scan and the place kernels are launched as
// programmatic dependents of the kernel before them (launch_align), each waiting in
// grid_dependency_wait before it reads what that kernel wrote; the kernels before them allow
// their dispatch at their start.

// 1/3: each tile's per-expert counts -> workspace[tile, :].
__global__ void __launch_bounds__(kAlignThreads) align_count_kernel(const AlignArgs a) {
  __shared__ int hist[WC_MOE_MAX_EXPERTS];
  grid_dependents_launch();
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
  grid_dependents_launch();
  grid_dependency_wait();  // the counts are written
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
  load_warp_ids(a, flat0, ids);  // topk_ids: written before the chain started
  warp_histogram(a, ids, base[warp]);
  grid_dependency_wait();  // the scan is complete: tile bases and expert offsets are written
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
    if (const wc_status st = launch_status(); st != WC_OK) return st;
    cudaError_t e = launch_dependent(true, align_scan_kernel, dim3(1), dim3(kScanThreads), s, a);
    if (e == cudaSuccess) e = launch_dependent(true, align_place_kernel, dim3(static_cast<unsigned>(tiles)), dim3(kAlignThreads), s, a);
    if (e != cudaSuccess) return static_cast<wc_status>(e);
  }
  return launch_status();
}

}  // namespace
}  // namespace wc
