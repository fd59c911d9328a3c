// matmul_fp8.cuh — what the FP8 GEMM kernels (matmul_fp8_sm90.cu, matmul_fp8_sm80.cu) share:
// the tile order and the epilogue's store of a staged f32 tile (scales, bias, residual).
// Both kernels are written over bytes: a stage holds 128 bytes of k per row, whatever the
// operand type (InT: uint8_t for e4m3, __nv_bfloat16), so one pipeline serves both; only the
// tensor-core instruction and the scales (e4m3 only: kScaled<InT>) differ.
#pragma once

#include "common.cuh"

namespace wc {

// K per pipeline stage and per scaling block: one 128-byte swizzle row of e4m3.
constexpr int kFp8BlockK = WC_FP8_BLOCK;
constexpr int kStageBytesK = 128;  // bytes of k per stage and row (64 bf16)

// e4m3 operands carry scales; bf16 ones do not.
template <typename InT>
constexpr bool kScaled = sizeof(InT) == 1;

// The k-steps of a problem: 128-byte stages, the last one zero-filled past k (bf16: k % 64).
template <typename InT>
__host__ __device__ inline int64_t k_steps_of(const wc_matmul_fp8_params& p) {
  return (p.k * static_cast<int64_t>(sizeof(InT)) + kStageBytesK - 1) / kStageBytesK;
}

// The tile grid of one group of rows: ceil(rows / (cluster · block_m)) × ceil(n / block_n) tiles,
// walked in groups of group_m m-tiles; inside a group the m-tile changes fastest, so the CTAs
// running together share B tiles (weights) and a band of A rows in L2. With clusters (sm_90a) a
// tile of this grid is a cluster's: `cluster` block_m-row tiles side by side, one per CTA.
struct TileGrid {
  int32_t m_tiles, n_tiles, group_m;  // 32-bit: the launchers refuse more than INT32_MAX units

  __host__ __device__ static TileGrid of(const wc_matmul_fp8_params& p, int32_t rows, int cluster = 1) {
    TileGrid g;
    const int32_t tile_rows = p.block_m * cluster;
    g.m_tiles = (rows + tile_rows - 1) / tile_rows;
    g.n_tiles = static_cast<int32_t>((p.n + p.block_n - 1) / p.block_n);
    // At most the m-tiles (a larger group is one group of them all), so that group_m · n_tiles
    // stays within tiles() <= INT32_MAX: a caller's group_m of INT32_MAX ("no grouping") once
    // wrapped it negative, and the walk then stored tiles at negative rows.
    g.group_m = max32(1, min32(p.group_m, g.m_tiles));
    return g;
  }
  __host__ __device__ int32_t tiles() const { return m_tiles * n_tiles; }
  __host__ __device__ void coords(int32_t t, int32_t& m_tile, int32_t& n_tile) const {
    const int32_t per_group = group_m * n_tiles;
    const int32_t group = t / per_group;
    const int32_t first_m = group * group_m;
    const int32_t rows = min32(group_m, m_tiles - first_m);  // the last group may be short
    const int32_t r = t - group * per_group;
    m_tile = first_m + r % rows;
    n_tile = r / rows;
  }
};

// One CTA's tile: rows [m0, min(m0 + block_m, m_end)) of A, D and the residual (rows from m_end
// on belong to the next group or to nobody: loaded at most, never stored), D's columns
// [n0, n0 + block_n), and B's rows (with their scales and bias) [b0, b0 + block_n). m_end and
// b0 are 32-bit (the launchers check m and B's rows against INT32_MAX): registers are tight
// in the Hopper kernel's consumers.
struct Tile {
  int64_t m0, n0;
  int32_t m_end, b0;
};

// The units (tiles, or clusters' tiles) of a problem in the kernels' order. A plain GEMM is one
// group, rows [0, m). A grouped GEMM (p.group_offsets, p.num_groups) is one per group: group g
// multiplies its rows of A, [offsets[g], offsets[g + 1]), by B's rows [g · n, (g + 1) · n).
// The offsets are read here, on the device, so no host ever waits for them (num_groups >= 1:
// the launchers check); they are clamped into [0, m] and made non-decreasing
// (lo_g = max(offsets[g], hi_(g-1))), so that offsets out of range or out of order never reach
// memory outside A or D nor let two groups write one row. Units are numbered group by group,
// each group's in TileGrid's order. A walk only moves forward (persistent CTAs take increasing
// units), reading each offset once. It keeps only what changes (the group, its first unit and
// rows) and reads the rest from the params (the kernels' are __grid_constant__).
struct TileWalk {
  const wc_matmul_fp8_params& p;
  int cluster;
  int32_t g = 0, lo = 0, hi = 0;  // the current group and its rows
  int32_t base = 0;               // its first unit

  __host__ __device__ TileWalk(const wc_matmul_fp8_params& params, int cluster_m = 1) : p(params), cluster(cluster_m) {
    load();
  }
  __host__ __device__ void load() {
    if (p.group_offsets == nullptr) {
      hi = static_cast<int32_t>(p.m);
      return;
    }
    const int32_t m = static_cast<int32_t>(p.m);
    lo = max32(hi, min32(max32(p.group_offsets[g], 0), m));
    hi = max32(lo, min32(p.group_offsets[g + 1], m));
  }
  __host__ __device__ TileGrid grid() const { return TileGrid::of(p, hi - lo, cluster); }
  // Unit u's tile for the CTA of cluster rank `rank`; false when u is past the last unit.
  __host__ __device__ bool seek(int32_t u, int rank, Tile& t) {
    const int64_t groups = p.group_offsets == nullptr ? 1 : p.num_groups;
    TileGrid grid = this->grid();
    while (u - base >= grid.tiles()) {
      if (g + 1 >= groups) return false;
      base += grid.tiles();
      ++g;
      load();
      grid = this->grid();
    }
    int32_t m_tile, n_tile;
    grid.coords(u - base, m_tile, n_tile);
    t.m0 = lo + (int64_t{m_tile} * cluster + rank) * p.block_m;
    t.n0 = int64_t{n_tile} * p.block_n;
    t.m_end = hi;
    t.b0 = static_cast<int32_t>(g * p.n + t.n0);
    return true;
  }
};

// An upper bound on a problem's units without reading the offsets: a group of c rows has
// ceil(c / rows) m-tiles, and Σ_g ceil(c_g / r) <= ceil(m / r) + (nonempty groups - 1). The
// launchers refuse problems where it exceeds INT32_MAX (the walk counts in 32 bits; a D that
// large would not fit in memory).
__host__ __device__ inline int64_t max_units(const wc_matmul_fp8_params& p, int cluster = 1) {
  const int64_t tile_rows = int64_t{p.block_m} * cluster;
  int64_t m_tiles = (p.m + tile_rows - 1) / tile_rows;
  if (p.group_offsets != nullptr) m_tiles += min64(p.num_groups, p.m) - 1;
  return m_tiles * ((p.n + p.block_n - 1) / p.block_n);
}

// Split-k (p.k_splits >= 2; one GEMM, not grouped): a problem's unit u is k-slice u % s of tile
// u / s, so a CTA's tiles still come in increasing order (TileWalk only moves forward). Slice j
// takes the k-steps [⌊K·j/s⌋, ⌊K·(j+1)/s⌋) of the problem's K (the launchers check s <= K: none
// is empty). Each writes its sums to its workspace slice (store_partial) and split_k_reduce
// finishes them.
__host__ __device__ inline int32_t k_splits_of(const wc_matmul_fp8_params& p) { return p.k_splits > 1 ? p.k_splits : 1; }
__host__ __device__ inline int64_t k_slice_start(int64_t k_steps, int32_t splits, int32_t j) {
  return k_steps * j / splits;
}

// Stores rows × cols of a split-k partial from a staged f32 tile (stage[r · pitch + c] · extra is
// the sum of D[m0 + r, n0 + c] over k-slice `slice`: block scales applied, nothing else; extra as
// store_tile's) into its workspace slice, [m, n] dense at p.workspace + slice · m · n, in 16-byte
// stores (rows from m_end on and columns from p.n on are skipped). split_k_reduce applies the rest.
__device__ __forceinline__ void store_partial(const wc_matmul_fp8_params& p, const float* stage, int pitch, int rows,
                                              int cols, int64_t m0, int64_t m_end, int64_t n0, int32_t slice,
                                              float extra, int tid, int nthreads) {
  const int per_row = cols / 4;
  float* out = p.workspace + slice * p.m * p.n;
  for (int idx = tid; idx < rows * per_row; idx += nthreads) {
    const int r = idx / per_row, q = idx % per_row;
    const int64_t gm = m0 + r, gn = n0 + 4 * q;
    if (gm >= m_end || gn >= p.n) continue;
    float4 v = *reinterpret_cast<const float4*>(stage + r * pitch + 4 * q);
    v.x *= extra;
    v.y *= extra;
    v.z *= extra;
    v.w *= extra;
    *reinterpret_cast<float4*>(out + gm * p.n + gn) = v;
  }
}

// Split-k's second pass, queued behind either GEMM kernel (matmul_fp8_sm90.cu defines it): sums
// the workspace's slices and stores D as store_tile does (scales, bias, residual, one rounding).
wc_status split_k_reduce(const wc_matmul_fp8_params& p, cudaStream_t s);

// The launchers' checks of a split-k problem (p.k_splits >= 2): WC_OK, WC_ERR_UNSUPPORTED (pairs,
// the TMA store, groups) or WC_ERR_INVALID_ARG (more slices than k-steps, no room in the
// workspace, a workspace not 16-byte aligned).
template <typename InT>
inline wc_status check_split_k(const wc_matmul_fp8_params& p) {
  if (p.k_splits < 0 || k_splits_of(p) > k_steps_of<InT>(p)) return WC_ERR_INVALID_ARG;
  if (p.k_splits < 2) return WC_OK;
  if (p.cluster_m == 2 || p.tma_store || p.group_offsets != nullptr) return WC_ERR_UNSUPPORTED;
  const int64_t slice_floats = p.n * p.k_splits;  // <= 2^61: no overflow below
  if (p.workspace == nullptr || (reinterpret_cast<uintptr_t>(p.workspace) & 15) != 0 ||
      slice_floats > p.workspace_floats || p.m > p.workspace_floats / slice_floats)
    return WC_ERR_INVALID_ARG;
  return WC_OK;
}

// The epilogue's per-column factors for this thread's 8 columns of a 32-column chunk, the
// accumulator fragment's columns 8j + 2(lane % 4) + {0, 1} (j < 4) from B's row b_first: B's scales (not
// needed when block-scaled: they were applied per k-block) and the bias, loaded ahead of use
// so that their latency hides under other work (apply). Columns from b_end on (past the
// group's n: bf16 operands' n % 8 tails) load no bias; their results are not stored.
template <typename OutT, bool Scaled>
struct ChunkFactors {
  float sb[Scaled ? 8 : 1];
  Pack<OutT, 2> bias[4];

  __device__ __forceinline__ void load(const wc_matmul_fp8_params& p, int64_t b_first, int64_t b_end, int lane) {
    const OutT* b = static_cast<const OutT*>(p.bias);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = b_first + 8 * j + 2 * (lane & 3);
      if (Scaled && !p.block_scaled) {  // columns past the group's n (a tile wider than the rest): unused
        sb[2 * j] = col < b_end ? p.b_scale[col * p.b_scale_stride_n] : 0.0f;
        sb[2 * j + 1] = col < b_end ? p.b_scale[(col + 1) * p.b_scale_stride_n] : 0.0f;
      }
      if (b != nullptr && col < b_end) bias[j] = load_pack<OutT, 2>(b + col);  // n % 8: col + 1 < b_end too
    }
  }
  // acc (columns 8j + 2(lane % 4) + e of a row whose A scale is sa) · sa · sb + bias: the same
  // operations, in the same order, as store_tile applies when the staging carries raw sums.
  __device__ __forceinline__ float2 apply(const wc_matmul_fp8_params& p, float2 acc, float sa, int j) const {
    if (Scaled && !p.block_scaled) {
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
// D[m0 + r, n0 + c], already multiplied by its block scales when p.block_scaled. Otherwise (and
// Scaled: e4m3 operands) it is multiplied here by a_scale[m · a_scale_stride_m] ·
// b_scale[nb · b_scale_stride_n], where nb = n + b_shift is B's row (the group's, grouped);
// then + bias[nb] + residual[m, n], one rounding to OutT, 16-byte stores (rows from m_end on
// and columns from p.n on are skipped; n % 8 == 0 keeps the vectors whole).
// `extra` is an exact power of two the staging left out (the sm_80 path's 2^16). `applied`:
// the staging already carries the scales and the bias (ChunkFactors), only the residual is left.
template <typename OutT, bool Scaled>
__device__ __forceinline__ void store_tile(const wc_matmul_fp8_params& p, const float* stage, int pitch, int rows,
                                           int cols, int64_t m0, int64_t m_end, int64_t n0, int64_t b_shift,
                                           float extra, int tid, int nthreads, bool applied = false) {
  constexpr int V = 16 / sizeof(OutT);
  const int per_row = cols / V;
  const OutT* bias = static_cast<const OutT*>(p.bias);
  const OutT* residual = static_cast<const OutT*>(p.residual);
  OutT* d = static_cast<OutT*>(p.d);
  for (int idx = tid; idx < rows * per_row; idx += nthreads) {
    const int r = idx / per_row, q = idx % per_row;
    const int64_t gm = m0 + r;
    if (gm >= m_end) continue;
    const int64_t gn = n0 + q * V, gb = gn + b_shift;
    if (gn >= p.n) continue;
    float v[V];
#pragma unroll
    for (int e = 0; e < V; e += 4) {
      const float4 f = *reinterpret_cast<const float4*>(stage + r * pitch + q * V + e);
      v[e] = f.x * extra;
      v[e + 1] = f.y * extra;
      v[e + 2] = f.z * extra;
      v[e + 3] = f.w * extra;
    }
    if (Scaled && !applied && !p.block_scaled) {
      const float sa = p.a_scale[gm * p.a_scale_stride_m];
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] *= sa * p.b_scale[(gb + e) * p.b_scale_stride_n];
    }
    if (!applied && bias != nullptr) {
      const Pack<OutT, V> b = load_pack<OutT, V>(bias + gb);
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
