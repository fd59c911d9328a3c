// matmul_fp8_sm80.cu — the FP8 GEMM for GPUs without wgmma (sm_80, sm_86, sm_89; also any
// later GPU through the compute_80 PTX): correct for every scaling mode, slower than the
// Hopper kernel (matmul_fp8_sm90.cu), so that the API works everywhere.
//
// Contract: wc_matmul_fp8_params (warpcore/matmul_fp8.h). D = A · Bᵀ, A [m, k] and B [n, k] e4m3
// (n, k multiples of 128) or bf16 (n, k multiples of 8), both K-major with 16-byte aligned rows;
// any m (rows past m are zero-filled on load and not stored).
//
// Design. 128×128 tile per CTA (one CTA per tile, grouped tile order), 8 warps as 2 (m) × 4 (n),
// each warp 64 × 32 = 4 × 4 mma.sync m16n8k16 tiles. K steps of 128 (one scaling block), two
// cp.async stages of raw e4m3 bytes in shared memory (rows padded to 160 bytes). Operands
// are dequantized in registers: e4m3x4_to_f16x2_scaled turns 4 bytes into two f16x2 words of
// value · 2^-8 *exactly* (every e4m3 value is an f16), so the tensor cores multiply exact
// inputs with f32 accumulation — f16 rather than bf16 because the conversion is exact and
// three integer ops. The 2^-8 of each operand is folded into the scales (2^16).
//   Fragments: a thread reads 8 consecutive bytes (k = 8t .. 8t+7 of a 32-wide k chunk) of its
//   rows; bytes 0-3 feed one m16n8k16 and bytes 4-7 a second one. The same permutation of k is
//   applied to A and B (logical k 2t+{0,1} <- bytes 8t+{0,1}, 2t+8+{0,1} <- 8t+{2,3}), and a
//   dot product does not depend on the order of k, so the sum is exact. With a 160-byte pitch
//   the 8-byte loads of a half-warp (4 rows × 4 threads) hit 32 distinct banks.
// Scaling: block_scaled -> after each 128-k step, fin += acc · (sa · sb · 2^16), acc = 0
// (ampere's mma accumulates in true f32, but the block scales change every step anyway);
// otherwise acc runs over all of k and the epilogue applies sa · sb · 2^16.
// Epilogue: the f32 tile is staged in shared memory (reusing the stages) and stored by
// store_tile (matmul_fp8.cuh): scales, bias, residual, 16-byte stores.
// Split-k (p.k_splits = s >= 2, one GEMM): s CTAs per tile, each over its k-slice, store their
// raw sums (store_partial) and split_k_reduce finishes them, as on the Hopper kernel; the
// reduction (matmul_fp8_split_k_reduce) is defined here for both GEMMs, since this file is built
// for every target and matmul_fp8_sm90.cu for sm_90a alone.
//
// bf16 operands (in_dtype WC_BF16, unscaled): the same stages, 128 bytes = 64 k per step; a
// thread's 8 bytes are 4 bf16 (k 4t .. 4t+3 of a 16-wide k chunk) and feed one m16n8k16
// directly under the same kind of k permutation (logical 2t+{0,1} <- 4t+{0,1}, 2t+8+{0,1} <-
// 4t+{2,3}, on A and B alike). Chunks past k and B rows past the stacked b are zero-filled.
//
// Roofline: this path is for correctness and portability; on an A100 it runs the f16 tensor
// cores (312 TFLOP/s peak) with the conversion in the issue slots between mma.sync.
#include "matmul_fp8.cuh"

namespace wc {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = kFp8BlockK;
constexpr int kThreads = 256;
constexpr int kPitch = kBK + 32;                    // bytes per staged row
constexpr int kStageBytes = (kBM + kBN) * kPitch;
constexpr int kStages = 2;
constexpr int kEpiPitch = kBN + 8;                  // floats per staged output row
constexpr int kSmemMain = kStages * kStageBytes;
constexpr int kSmemEpi = kBM * kEpiPitch * 4;
constexpr int kSmem = kSmemMain > kSmemEpi ? kSmemMain : kSmemEpi;
static_assert(kSmem <= 99 * 1024, "fits sm_86 / sm_89 (99 KB per block)");

// One k-step (128 bytes of k) of A (the tile's rows m0..m0+127, zeros from m_end on) and B (rows
// b0..b0+127, zeros from b_rows on) into a stage by cp.async; 16-byte chunks past k are zeros.
template <typename InT>
__device__ __forceinline__ void load_stage(const wc_matmul_fp8_params& p, uint8_t* st, const Tile& t, int64_t b_rows,
                                           int64_t kb) {
  constexpr int64_t E = sizeof(InT);
  const uint8_t* a = static_cast<const uint8_t*>(p.a);
  const uint8_t* b = static_cast<const uint8_t*>(p.b);
  const int64_t k_bytes = p.k * E;
  constexpr int kChunks = kBK / 16;
  for (int i = threadIdx.x; i < kBM * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int64_t kc = kb * kBK + c * 16;
    const bool ok = t.m0 + r < t.m_end && kc < k_bytes;
    cp_async16(st + r * kPitch + c * 16, ok ? a + (t.m0 + r) * p.lda * E + kc : a, ok);
  }
  uint8_t* sb = st + kBM * kPitch;
  for (int i = threadIdx.x; i < kBN * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int64_t kc = kb * kBK + c * 16;
    const bool ok = int64_t{t.b0} + r < b_rows && kc < k_bytes;
    cp_async16(sb + r * kPitch + c * 16, ok ? b + (int64_t{t.b0} + r) * p.ldb * E + kc : b, ok);
  }
}

// One 32-byte k chunk of a stage into the warp's 64 × 32 accumulators (sa, sb: the chunk's
// first byte in row 0 of A and of B). e4m3: 32 k, two m16n8k16 per tile, dequantized to f16 · 2^-8.
__device__ __forceinline__ void mma_chunk_e4m3(float (&acc)[4][4][4], const uint8_t* sa, const uint8_t* sb, int wm,
                                               int wn, int g, int t) {
  uint32_t bf[4][4];  // per n8 tile: {mma0 b0b1, mma0 b2b3, mma1 b0b1, mma1 b2b3}
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint2 w = *reinterpret_cast<const uint2*>(sb + (wn * 32 + j * 8 + g) * kPitch + t * 8);
    e4m3x4_to_f16x2_scaled(w.x, bf[j][0], bf[j][1]);
    e4m3x4_to_f16x2_scaled(w.y, bf[j][2], bf[j][3]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint8_t* row = sa + (wm * 64 + i * 16 + g) * kPitch + t * 8;
    const uint2 lo = *reinterpret_cast<const uint2*>(row);               // row g
    const uint2 hi = *reinterpret_cast<const uint2*>(row + 8 * kPitch);  // row g + 8
    uint32_t a0[4], a1[4];  // m16n8k16 A fragments: {row g k-lo, row g+8 k-lo, row g k-hi, row g+8 k-hi}
    e4m3x4_to_f16x2_scaled(lo.x, a0[0], a0[2]);
    e4m3x4_to_f16x2_scaled(hi.x, a0[1], a0[3]);
    e4m3x4_to_f16x2_scaled(lo.y, a1[0], a1[2]);
    e4m3x4_to_f16x2_scaled(hi.y, a1[1], a1[3]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      mma<__half>(acc[i][j], a0, bf[j][0], bf[j][1]);
      mma<__half>(acc[i][j], a1, bf[j][2], bf[j][3]);
    }
  }
}

// bf16: 16 k, one m16n8k16 per tile; a thread's 8 bytes (k 4t .. 4t+3) are its fragment words
// as they lie: {k 4t, 4t+1} in the k-lo slot, {4t+2, 4t+3} in the k-hi slot, on A and B alike.
__device__ __forceinline__ void mma_chunk_bf16(float (&acc)[4][4][4], const uint8_t* sa, const uint8_t* sb, int wm,
                                               int wn, int g, int t) {
  uint2 bw[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) bw[j] = *reinterpret_cast<const uint2*>(sb + (wn * 32 + j * 8 + g) * kPitch + t * 8);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint8_t* row = sa + (wm * 64 + i * 16 + g) * kPitch + t * 8;
    const uint2 lo = *reinterpret_cast<const uint2*>(row);
    const uint2 hi = *reinterpret_cast<const uint2*>(row + 8 * kPitch);
    const uint32_t af[4] = {lo.x, hi.x, lo.y, hi.y};
#pragma unroll
    for (int j = 0; j < 4; ++j) mma<__nv_bfloat16>(acc[i][j], af, bw[j].x, bw[j].y);
  }
}

template <bool BLOCK, typename InT, typename OutT>
__global__ void __launch_bounds__(kThreads) matmul_fp8_sm80_kernel(const __grid_constant__ wc_matmul_fp8_params p) {
  constexpr bool kFp8 = kScaled<InT>;
  extern __shared__ __align__(16) uint8_t smem[];
  Tile tile;
  // Split-k: unit u (a CTA) is k-slice u % splits of tile u / splits (matmul_fp8.cuh).
  const int32_t splits = k_splits_of(p), slice = static_cast<int32_t>(blockIdx.x % splits);
  if (!TileWalk(p).seek(blockIdx.x / splits, 0, tile)) return;  // past the last unit (grouped: the grid is a bound)
  const int64_t m0 = tile.m0;
  const int64_t k_steps = k_steps_of<InT>(p);
  // k-step kb uses stage kb % 2 (so that nothing but the end of the slice stays live).
  const int64_t kb_begin = k_slice_start(k_steps, splits, slice), kb_end = k_slice_start(k_steps, splits, slice + 1);
  const int64_t b_rows = (p.group_offsets != nullptr ? p.num_groups : 1) * p.n;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp % 2, wn = warp / 2;

  float acc[4][4][4];
  float fin[BLOCK ? 4 : 1][BLOCK ? 4 : 1][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  if constexpr (BLOCK) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) fin[i][j][e] = 0.0f;
  }

  load_stage<InT>(p, smem + (kb_begin & 1) * kStageBytes, tile, b_rows, kb_begin);
  cp_async_commit();
  for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
    const int st = static_cast<int>(kb & 1);
    if (kb + 1 < kb_end) load_stage<InT>(p, smem + (st ^ 1) * kStageBytes, tile, b_rows, kb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const uint8_t* sa = smem + st * kStageBytes;
    const uint8_t* sb = sa + kBM * kPitch;
#pragma unroll
    for (int kc = 0; kc < kBK / 32; ++kc) {
      if constexpr (kFp8) mma_chunk_e4m3(acc, sa + kc * 32, sb + kc * 32, wm, wn, g, t);
      else mma_chunk_bf16(acc, sa + kc * 32, sb + kc * 32, wm, wn, g, t);
    }
    if constexpr (BLOCK) {
      // Promote this k-block: its scales, times 2^16 for the operands' 2^-8.
      const float sbk = p.b_scale[(tile.b0 / kBK) * p.b_scale_stride_n + kb * p.b_scale_stride_k] * 65536.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t gm = min64(m0 + wm * 64 + i * 16 + g + 8 * h, p.m - 1);
          const float s = p.a_scale[gm * p.a_scale_stride_m + kb * p.a_scale_stride_k] * sbk;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            fin[i][j][2 * h] += s * acc[i][j][2 * h];
            fin[i][j][2 * h + 1] += s * acc[i][j][2 * h + 1];
            acc[i][j][2 * h] = acc[i][j][2 * h + 1] = 0.0f;
          }
        }
      }
    }
    __syncthreads();  // the next iteration's load overwrites this stage
  }
  cp_async_wait<0>();
  __syncthreads();

  float* stage = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = wm * 64 + i * 16 + g + 8 * h, c = wn * 32 + j * 8 + 2 * t;
        float2 v;
        if constexpr (BLOCK) v = make_float2(fin[i][j][2 * h], fin[i][j][2 * h + 1]);
        else v = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        *reinterpret_cast<float2*>(stage + r * kEpiPitch + c) = v;
      }
  __syncthreads();
  const float extra = BLOCK || !kFp8 ? 1.0f : 65536.0f;
  if (p.k_splits > 1)  // the slice again from the block index: nothing of it stays live over the loop
    store_partial(p, stage, kEpiPitch, kBM, kBN, m0, tile.m_end, tile.n0, static_cast<int32_t>(blockIdx.x % p.k_splits),
                  extra, threadIdx.x, kThreads);
  else
    store_tile<OutT, kFp8>(p, stage, kEpiPitch, kBM, kBN, m0, tile.m_end, tile.n0, tile.b0 - tile.n0, extra,
                           threadIdx.x, kThreads);
}

// Split-k's second pass: 32-row × 64-column blocks of D (grid-stride), each summed over the
// workspace's k_splits slices in slice order into shared memory (rows past m as zeros, never
// stored), then stored by store_tile as the one-pass epilogue stores a staged tile: the
// per-tensor / per-row scales (Scaled, unless block-scaled: the slices carry those), bias,
// residual, one rounding to OutT.
constexpr int kReduceRows = 32, kReduceCols = 64, kReduceThreads = 256;

template <typename OutT, bool Scaled>
__global__ void __launch_bounds__(kReduceThreads) matmul_fp8_split_k_reduce(const __grid_constant__ wc_matmul_fp8_params p) {
  constexpr int kPitch = kReduceCols + 4;  // floats: 16-byte rows, 4 banks apart
  __shared__ __align__(16) float stage[kReduceRows * kPitch];
  const int64_t row_blocks = (p.m + kReduceRows - 1) / kReduceRows, col_blocks = (p.n + kReduceCols - 1) / kReduceCols;
  const int64_t slice_stride = p.m * p.n;
  grid_dependency_wait();  // the GEMM (launched ahead, PDL) has completed: its partials are visible
  for (int64_t b = blockIdx.x; b < row_blocks * col_blocks; b += gridDim.x) {
    const int64_t m0 = b / col_blocks * kReduceRows, n0 = b % col_blocks * kReduceCols;
    __syncthreads();  // the previous block's stores have read the staging
    for (int idx = threadIdx.x; idx < kReduceRows * kReduceCols / 4; idx += kReduceThreads) {
      const int r = idx / (kReduceCols / 4), c = 4 * (idx % (kReduceCols / 4));
      float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (m0 + r < p.m && n0 + c < p.n) {  // bf16 operands: n % 8 == 0 keeps the float4 whole
        const float* w = p.workspace + (m0 + r) * p.n + n0 + c;
        for (int32_t j = 0; j < p.k_splits; ++j) {
          const float4 v = *reinterpret_cast<const float4*>(w + j * slice_stride);
          sum.x += v.x;
          sum.y += v.y;
          sum.z += v.z;
          sum.w += v.w;
        }
      }
      *reinterpret_cast<float4*>(stage + r * kPitch + c) = sum;
    }
    __syncthreads();
    store_tile<OutT, Scaled>(p, stage, kPitch, kReduceRows, kReduceCols, m0, p.m, n0, 0, 1.0f, threadIdx.x,
                             kReduceThreads);
  }
}

// Launched as a programmatic dependent of the GEMM (common.cuh's launch_dependent): its launch
// and CTA dispatch overlap the GEMM's last tiles (the wgmma kernel's CTAs allow it at their
// start), and each CTA waits in grid_dependency_wait for the GEMM to complete before reading the
// workspace.
template <typename OutT>
wc_status launch_split_k_reduce(const wc_matmul_fp8_params& p, cudaStream_t s) {
  const int64_t blocks = (p.m + kReduceRows - 1) / kReduceRows * ((p.n + kReduceCols - 1) / kReduceCols);
  auto kernel = p.in_dtype == WC_E4M3 ? matmul_fp8_split_k_reduce<OutT, true> : matmul_fp8_split_k_reduce<OutT, false>;
  const cudaError_t e = launch_dependent(true, kernel, dim3(static_cast<unsigned>(min64(blocks, 1 << 16))), dim3(kReduceThreads), s, p);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  return launch_status();
}

template <bool BLOCK, typename InT, typename OutT>
wc_status launch(const wc_matmul_fp8_params& p, cudaStream_t s) {
  auto kernel = matmul_fp8_sm80_kernel<BLOCK, InT, OutT>;
  const cudaError_t e = allow_dynamic_smem(kernel, kSmem);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  const int64_t units = max_units(p) * k_splits_of(p);  // one CTA per (tile, k-slice)
  if (units > INT32_MAX) return WC_ERR_INVALID_ARG;
  kernel<<<static_cast<unsigned>(units), kThreads, kSmem, s>>>(p);
  if (const wc_status st = launch_status(); st != WC_OK || k_splits_of(p) == 1) return st;
  return split_k_reduce(p, s);
}

}  // namespace

// Split-k's reduction, for both GEMMs (declared in matmul_fp8.cuh): here, in the file built for
// every target, so that the mma.sync kernel's split-k has it on every GPU.
wc_status split_k_reduce(const wc_matmul_fp8_params& p, cudaStream_t s) {
  WC_DISPATCH_FP8_OUT(p.out_dtype, OutT, { return launch_split_k_reduce<OutT>(p, s); });
}

}  // namespace wc

extern "C" wc_status wc_matmul_fp8_sm80(const wc_matmul_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->m <= 0) return WC_OK;
  // The one configuration this path has; the planner sends exactly it.
  if (p->in_dtype != WC_E4M3 && p->in_dtype != WC_BF16) return WC_ERR_UNSUPPORTED;
  const bool fp8 = p->in_dtype == WC_E4M3;
  if (p->block_m != wc::kBM || p->block_n != wc::kBN || p->n <= 0 || p->k <= 0 ||
      (fp8 ? p->n % wc::kBN != 0 || p->k % wc::kBK != 0 : p->n % 8 != 0 || p->k % 8 != 0) ||
      (p->group_offsets != nullptr && p->num_groups < 1) || p->m > INT32_MAX - 256 || p->k > INT32_MAX / 2 ||
      (p->group_offsets != nullptr ? p->num_groups : 1) > INT32_MAX / p->n)  // (n > 0: no product to overflow)
    return WC_ERR_INVALID_ARG;
  if (const wc_status st = fp8 ? wc::check_split_k<uint8_t>(*p) : wc::check_split_k<__nv_bfloat16>(*p); st != WC_OK)
    return st;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_FP8_OUT(p->out_dtype, OutT, {
    if (!fp8) return wc::launch<false, __nv_bfloat16, OutT>(*p, s);
    return p->block_scaled ? wc::launch<true, uint8_t, OutT>(*p, s) : wc::launch<false, uint8_t, OutT>(*p, s);
  });
}

extern "C" wc_status wc_matmul_fp8_tile(const wc_matmul_fp8_params* p, int64_t t, int64_t* m0, int64_t* m_end, int64_t* n0,
                                        int64_t* b0) {
  if (p == nullptr || m0 == nullptr || m_end == nullptr || n0 == nullptr || b0 == nullptr || p->block_m <= 0 ||
      p->block_n <= 0 || t < 0 || t > INT32_MAX || (p->group_offsets != nullptr && p->num_groups < 1))
    return WC_ERR_INVALID_ARG;
  wc::Tile tile;
  if (!wc::TileWalk(*p, p->cluster_m > 1 ? p->cluster_m : 1).seek(static_cast<int32_t>(t), 0, tile)) return WC_ERR_INVALID_ARG;
  *m0 = tile.m0;
  *m_end = tile.m_end;
  *n0 = tile.n0;
  *b0 = tile.b0;
  return WC_OK;
}
