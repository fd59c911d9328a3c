// matmul_fp8.cuh — what the FP8 GEMM kernels (matmul_fp8_sm90.cu, matmul_fp8_sm80.cu) share:
// the tile order and the epilogue's store of a staged f32 tile (scales, bias, residual).
#pragma once

#include "common.cuh"

namespace wc {

// K per pipeline stage and per scaling block: one 128-byte swizzle row of e4m3.
constexpr int kFp8BlockK = WC_FP8_BLOCK;

// The tile grid of a problem: ceil(m / (cluster · block_m)) × (n / block_n) tiles, walked in
// groups of group_m m-tiles; inside a group the m-tile changes fastest, so the CTAs running
// together share B tiles (weights) and a band of A rows in L2. With clusters (sm_90a) a tile of
// this grid is a cluster's: `cluster` block_m-row tiles side by side, one per CTA. A grouped
// (MoE) GEMM would extend this with an expert index per tile and per-expert row offsets; the
// kernels only ever ask for (m_tile, n_tile) of tile t.
struct TileGrid {
  int64_t m_tiles, n_tiles, group_m;

  __host__ __device__ static TileGrid of(const wc_matmul_fp8_params& p, int cluster = 1) {
    TileGrid g;
    const int64_t rows = int64_t{p.block_m} * cluster;
    g.m_tiles = (p.m + rows - 1) / rows;
    g.n_tiles = p.n / p.block_n;
    g.group_m = p.group_m < 1 ? 1 : p.group_m;
    return g;
  }
  __host__ __device__ int64_t tiles() const { return m_tiles * n_tiles; }
  __host__ __device__ void coords(int64_t t, int64_t& m_tile, int64_t& n_tile) const {
    const int64_t per_group = group_m * n_tiles;
    const int64_t group = t / per_group;
    const int64_t first_m = group * group_m;
    const int64_t rows = min64(group_m, m_tiles - first_m);  // the last group may be short
    const int64_t r = t - group * per_group;
    m_tile = first_m + r % rows;
    n_tile = r / rows;
  }
};

// The epilogue's per-column factors for this thread's 8 columns of a 32-column chunk, the
// accumulator fragment's columns n_first + 8j + 2(lane % 4) + {0, 1} (j < 4): B's scales (not
// needed when block-scaled: they were applied per k-block) and the bias, loaded ahead of use
// so that their latency hides under other work (ScaledChunk applies them).
template <typename OutT>
struct ChunkFactors {
  float sb[8];
  Pack<OutT, 2> bias[4];

  __device__ __forceinline__ void load(const wc_matmul_fp8_params& p, int64_t n_first, int lane) {
    const OutT* b = static_cast<const OutT*>(p.bias);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n_first + 8 * j + 2 * (lane & 3);
      if (!p.block_scaled) {
        sb[2 * j] = p.b_scale[col * p.b_scale_stride_n];
        sb[2 * j + 1] = p.b_scale[(col + 1) * p.b_scale_stride_n];
      }
      if (b != nullptr) bias[j] = load_pack<OutT, 2>(b + col);
    }
  }
  // acc (columns 8j + 2(lane % 4) + e of a row whose A scale is sa) · sa · sb + bias: the same
  // operations, in the same order, as store_tile applies when the staging carries raw sums.
  __device__ __forceinline__ float2 apply(const wc_matmul_fp8_params& p, float2 acc, float sa, int j) const {
    if (!p.block_scaled) {
      acc.x *= sa * sb[2 * j];
      acc.y *= sa * sb[2 * j + 1];
    }
    if (p.bias != nullptr) {
      acc.x += to_float(bias[j].v[0]);
      acc.y += to_float(bias[j].v[1]);
    }
    return acc;
  }
};

// Stores rows × cols of D from a staged f32 tile: stage[r · pitch + c] is the accumulator of
// D[m0 + r, n0 + c], already multiplied by its block scales when p.block_scaled. Otherwise it
// is multiplied here by a_scale[m · a_scale_stride_m] · b_scale[n · b_scale_stride_n]; then
// + bias[n] + residual[m, n], one rounding to OutT, 16-byte stores (rows past m are skipped).
// `extra` is an exact power of two the staging left out (the sm_80 path's 2^16). `applied`:
// the staging already carries the scales and the bias (ChunkFactors), only the residual is left.
template <typename OutT>
__device__ __forceinline__ void store_tile(const wc_matmul_fp8_params& p, const float* stage, int pitch, int rows,
                                           int cols, int64_t m0, int64_t n0, float extra, int tid, int nthreads,
                                           bool applied = false) {
  constexpr int V = 16 / sizeof(OutT);
  const int per_row = cols / V;
  const OutT* bias = static_cast<const OutT*>(p.bias);
  const OutT* residual = static_cast<const OutT*>(p.residual);
  OutT* d = static_cast<OutT*>(p.d);
  for (int idx = tid; idx < rows * per_row; idx += nthreads) {
    const int r = idx / per_row, q = idx % per_row;
    const int64_t gm = m0 + r;
    if (gm >= p.m) continue;
    const int64_t gn = n0 + q * V;
    float v[V];
#pragma unroll
    for (int e = 0; e < V; e += 4) {
      const float4 f = *reinterpret_cast<const float4*>(stage + r * pitch + q * V + e);
      v[e] = f.x * extra;
      v[e + 1] = f.y * extra;
      v[e + 2] = f.z * extra;
      v[e + 3] = f.w * extra;
    }
    if (!applied && !p.block_scaled) {
      const float sa = p.a_scale[gm * p.a_scale_stride_m];
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] *= sa * p.b_scale[(gn + e) * p.b_scale_stride_n];
    }
    if (!applied && bias != nullptr) {
      const Pack<OutT, V> b = load_pack<OutT, V>(bias + gn);
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] += to_float(b.v[e]);
    }
    if (residual != nullptr) {
      const Pack<OutT, V> res = load_pack<OutT, V>(residual + gm * p.ldr + gn);
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] += to_float(res.v[e]);
    }
    store_floats16<OutT>(d + gm * p.ldd + gn, v);
  }
}

}  // namespace wc

// Binds OutT to the output element type (bf16 or f32) or returns WC_ERR_UNSUPPORTED.
#define WC_DISPATCH_FP8_OUT(dtype, OutT, ...)                     \
  switch (dtype) {                                                \
    case WC_BF16: { using OutT = __nv_bfloat16; __VA_ARGS__ }     \
    case WC_F32: { using OutT = float; __VA_ARGS__ }              \
    default: break;                                               \
  }                                                               \
  return WC_ERR_UNSUPPORTED;
