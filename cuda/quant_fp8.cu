// quant_fp8.cu — FP8 e4m3 quantization: dynamic per-tensor, per-row, 1×128-group and 128×128
// block scales, fused RMSNorm (and residual add + RMSNorm) -> FP8, fused GLU -> FP8, and
// dequantization.
//
// Contract (warpcore/quant_fp8.h, wc_scale_granularity): bf16 / f16 in, e4m3 out, f32 scales with
// value = fp8 · scale. For each scaling block: scale = max(amax, WC_FP8_AMAX_FLOOR) / 448 and
// fp8 = e4m3_rn_satfinite(y · (1 / scale)), all in f32 with IEEE division, so a plain
// quantization is reproducible bit for bit on the host (reference/quant.rs). The fused norm
// quantizes y = rms_normed(x) straight from f32 registers: the normalised row is never rounded
// to bf16 (one rounding instead of two; the reference documents the difference).
//
// Roofline: every op here is bandwidth-bound (a handful of FLOPs per element). Bytes: bf16 in
// (2 B) + e4m3 out (1 B) (+ residual read and write, + weight) per element; on the H200 (4.06
// TB/s copy) quantizing [4096, 7168] bf16 moves 88 MB -> 22 µs.
//
// Thread mapping:
//   rows        one block per row (per-row and group scales, fused norms). A thread owns chunks
//               of CH = 16 elements (two 16-byte loads, one 16-byte e4m3 store); with VPT > 0
//               it keeps VPT chunks in registers (x read once); VPT = 0 loops over the row and
//               re-reads it from L1/L2 (long rows, and CH = 1, the scalar path for unaligned
//               or odd layouts). A 128-group is 8 chunks = 8 adjacent lanes: its amax is three
//               xor-shuffles. Row amax and the RMS are block reductions.
//   glu         one block per row, 16-element chunks of gate and up -> act(gate) · up in f32 ->
//               codes; a loop with a uniform trip count (groups: 8 adjacent lanes, values
//               computed once; per row: a first pass for the amax, values recomputed).
//   block128    one block of 256 threads per 128×128 tile (weights), tile in registers.
//   tensor      (1) cudaMemsetAsync(scale, 0); (2) grid-stride amax, one atomicMax per block
//               of fl(max(amax_block, floor) / 448) (division by a positive constant is
//               monotone, so the maximum is the tensor's scale); (3) grid-stride quantize
//               reading scale[0]. Stream-ordered, no host synchronisation.
//   dequantize  grid-stride over chunks; a 16-chunk never straddles a scaling block.
#include "common.cuh"
#include "quant_fp8/chunk.cuh"   // chunks, scale formula, e4m3 store
#include "quant_fp8/tensor.cuh"  // the single-pass per-tensor kernel
#include "glu.cuh"
#include "rms_norm.cuh"

namespace wc {
namespace {

constexpr int kRowThreadsMax = 1024;
constexpr int kRowRegThreads = 512;
constexpr int kGridThreads = 256;
constexpr unsigned kGridBlocksMax = 4096;

// ------------------------------------------------------------------ rows: per-row / group, fused norms
struct RowsArgs {
  const void* x;
  void* residual;       // non-null: fused add (implies norm)
  const void* weight;   // non-null: norm
  uint8_t* out;
  float* scale;
  int64_t x_stride, res_stride, out_stride, ss_row, ss_col;
  int cols;
  float eps, w_off;
  bool group;
};

// Register path (VPT > 0): at most kRowRegThreads threads, so 128 registers per thread hold
// VPT <= 4 chunks (rows up to 32768 elements); the loop path runs 1024 threads.
// NORM: whether the fused norms (a.weight, a.residual) are built in. The plain quantizers'
// register path is built without them: the norm path's values kept across the amax took
// <bf16, 16, 1> (7168 columns) from 32 to 61 registers, 2 blocks of 448 threads an SM
// instead of 4, whether or not a row was normalised.
template <typename T, int CH, int VPT, bool NORM>
__global__ void __launch_bounds__(VPT > 0 ? kRowRegThreads : kRowThreadsMax) rows_quant_kernel(const RowsArgs a) {
  __shared__ float scratch[32];
  constexpr int kGroupChunks = WC_FP8_BLOCK / CH;
  const int64_t row = blockIdx.x;
  const int nchunks = a.cols / CH;
  const bool norm = NORM && a.weight != nullptr, add = NORM && a.residual != nullptr;
  const bool group = CH == 16 && a.group;  // the launcher sends groups to CH = 16 only
  const T* xr = static_cast<const T*>(a.x) + row * a.x_stride;
  T* rr = add ? static_cast<T*>(a.residual) + row * a.res_stride : nullptr;
  const T* w = static_cast<const T*>(a.weight);
  uint8_t* outr = a.out + row * a.out_stride;
  float* scale_row = a.scale + row * a.ss_row;
  const int tid = threadIdx.x, nt = blockDim.x;

  if constexpr (VPT > 0) {
    Chunk<T, CH> v[VPT];
#pragma unroll
    for (int j = 0; j < VPT; ++j) {  // all loads first: VPT independent chunks in flight
      const int i = tid + j * nt;
      if (i < nchunks) v[j] = load_chunk<T, CH>(xr + i * CH);
    }
    float rstd = 1.0f;
    if (norm) {
      float ss = 0.0f;
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int i = tid + j * nt;
        if (i < nchunks) {
          if (add) add_residual_chunk<T, CH>(v[j], rr + i * CH);
          ss += chunk_sum_squares<T, CH>(v[j]);
        }
      }
      rstd = rms_rstd(block_sum(ss, scratch), a.cols, a.eps);
    }
    float amax[VPT];
    float row_amax = 0.0f;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int i = tid + j * nt;
      Chunk<T, CH> wv{};
      if (norm && i < nchunks) wv = load_chunk<T, CH>(w + i * CH);  // the weight stays in L1
      amax[j] = i < nchunks ? chunk_amax<T, CH>(v[j], wv, norm, rstd, a.w_off) : 0.0f;
      row_amax = fmaxf(row_amax, amax[j]);
    }
    if (!group) row_amax = block_max(row_amax, scratch);
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int i = tid + j * nt;
      const float s = scale_of(group ? group8_max(amax[j]) : row_amax);  // shuffles: every lane
      if (i < nchunks) {
        Chunk<T, CH> wv{};
        if (norm) wv = load_chunk<T, CH>(w + i * CH);
        store_e4m3<CH>(outr + i * CH, 1.0f / s, [&](int e) { return chunk_value(v[j], wv, e, norm, rstd, a.w_off); });
        if (group && i % kGroupChunks == 0) scale_row[(i / kGroupChunks) * a.ss_col] = s;
      }
    }
    if (!group && tid == 0) scale_row[0] = scale_of(row_amax);
  } else {
    // Pass 1 (norm): fused add and the sum of squares. Later passes re-read what this thread
    // read (or wrote: the stored residual), so no synchronisation beyond the reductions.
    const T* src = add ? rr : xr;
    float rstd = 1.0f;
    if (norm) {
      float ss = 0.0f;
      for (int i = tid; i < nchunks; i += nt) {
        Chunk<T, CH> c = load_chunk<T, CH>(xr + i * CH);
        if (add) add_residual_chunk<T, CH>(c, rr + i * CH);
        ss += chunk_sum_squares<T, CH>(c);
      }
      rstd = rms_rstd(block_sum(ss, scratch), a.cols, a.eps);
    }
    Chunk<T, CH> wv{};
    float row_amax = 0.0f;
    if (!group) {  // pass 2: the row's amax
      for (int i = tid; i < nchunks; i += nt) {
        const Chunk<T, CH> c = load_chunk<T, CH>(src + i * CH);
        if (norm) wv = load_chunk<T, CH>(w + i * CH);
        row_amax = fmaxf(row_amax, chunk_amax<T, CH>(c, wv, norm, rstd, a.w_off));
      }
      row_amax = block_max(row_amax, scratch);
      if (tid == 0) scale_row[0] = scale_of(row_amax);
    }
    // Pass 3: quantize. Uniform trip count so that every lane takes part in the shuffles.
    for (int base = 0; base < nchunks; base += nt) {
      const int i = base + tid;
      const bool active = i < nchunks;
      Chunk<T, CH> c{};
      if (active) {
        c = load_chunk<T, CH>(src + i * CH);
        if (norm) wv = load_chunk<T, CH>(w + i * CH);
      }
      float s = scale_of(row_amax);
      if (group) s = scale_of(group8_max(active ? chunk_amax<T, CH>(c, wv, norm, rstd, a.w_off) : 0.0f));
      if (active) {
        store_e4m3<CH>(outr + i * CH, 1.0f / s, [&](int e) { return chunk_value(c, wv, e, norm, rstd, a.w_off); });
        if (group && i % kGroupChunks == 0) scale_row[(i / kGroupChunks) * a.ss_col] = s;
      }
    }
  }
}

int round_up_warp(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

// Vector path when every row start is 16-byte aligned and rows are whole chunks; groups need it.
template <typename T>
bool rows_vectorizable(const void* x, const void* residual, const void* weight, const void* out, int64_t cols,
                       int64_t xs, int64_t rs, int64_t os) {
  constexpr int V = kVec16<T>;
  return cols % 16 == 0 && xs % V == 0 && (residual == nullptr || rs % V == 0) && os % 16 == 0 &&
         aligned_to(16, x, residual, weight, out);
}

// The register path with VPT chunks a thread (NORM: built with the fused norms).
template <typename T, bool NORM>
void launch_rows_reg(const RowsArgs& a, int vpt, dim3 grid, int threads, cudaStream_t s) {
  if (vpt == 1) rows_quant_kernel<T, 16, 1, NORM><<<grid, threads, 0, s>>>(a);
  else if (vpt == 2) rows_quant_kernel<T, 16, 2, NORM><<<grid, threads, 0, s>>>(a);
  else rows_quant_kernel<T, 16, 4, NORM><<<grid, threads, 0, s>>>(a);
}

template <typename T>
wc_status launch_rows(const RowsArgs& a, int64_t rows, cudaStream_t s) {
  if (rows <= 0) return WC_OK;
  if (a.cols <= 0 || rows > INT32_MAX) return WC_ERR_INVALID_ARG;
  const bool vec = rows_vectorizable<T>(a.x, a.residual, a.weight, a.out, a.cols, a.x_stride, a.res_stride, a.out_stride);
  if (a.group && (!vec || a.cols % WC_FP8_BLOCK != 0)) return WC_ERR_UNSUPPORTED;
  const dim3 grid(static_cast<unsigned>(rows));
  if (vec) {
    const int64_t n = a.cols / 16;
    auto threads = [n](int vpt) { return round_up_warp((n + vpt - 1) / vpt); };
    if (threads(4) > kRowRegThreads) {
      rows_quant_kernel<T, 16, 0, true><<<grid, kRowThreadsMax, 0, s>>>(a);
    } else {
      const int vpt = threads(1) <= kRowRegThreads ? 1 : threads(2) <= kRowRegThreads ? 2 : 4;
      if (a.weight != nullptr) launch_rows_reg<T, true>(a, vpt, grid, threads(vpt), s);
      else launch_rows_reg<T, false>(a, vpt, grid, threads(vpt), s);
    }
  } else {
    rows_quant_kernel<T, 1, 0, true><<<grid, kRowThreadsMax, 0, s>>>(a);
  }
  return launch_status();
}

// ------------------------------------------------------------------ fused GLU -> FP8
struct GluArgs {
  const void* gate;
  const void* up;
  uint8_t* out;
  float* scale;
  int64_t gate_stride, up_stride, out_stride, ss_row, ss_col;
  int cols;
  wc_glu_activation act;
  bool group;
};

// A chunk of act(gate) · up, in f32 (glu.cuh's formula, as wc_glu computes before its rounding).
template <typename T, int CH, wc_glu_activation ACT>
__device__ __forceinline__ void glu_chunk(const T* g, const T* u, float (&v)[CH]) {
  const Chunk<T, CH> gc = load_chunk<T, CH>(g), uc = load_chunk<T, CH>(u);
#pragma unroll
  for (int e = 0; e < CH; ++e) v[e] = glu_activate<ACT>(gc.at(e)) * uc.at(e);
}

// ACT a template parameter, as glu_kernel's (elementwise.cu): no switch per element.
template <typename T, wc_glu_activation ACT>
__global__ void __launch_bounds__(kRowThreadsMax) glu_quant_kernel(const GluArgs a) {
  __shared__ float scratch[32];
  constexpr int CH = 16, kGroupChunks = WC_FP8_BLOCK / CH;
  const int64_t row = blockIdx.x;
  const T* g = static_cast<const T*>(a.gate) + row * a.gate_stride;
  const T* u = static_cast<const T*>(a.up) + row * a.up_stride;
  uint8_t* outr = a.out + row * a.out_stride;
  float* scale_row = a.scale + row * a.ss_row;
  const int nchunks = a.cols / CH, tid = threadIdx.x, nt = blockDim.x;
  float row_amax = 0.0f;
  if (!a.group) {  // pass 1: the row's amax
    for (int i = tid; i < nchunks; i += nt) {
      float v[CH];
      glu_chunk<T, CH, ACT>(g + i * CH, u + i * CH, v);
#pragma unroll
      for (int e = 0; e < CH; ++e) row_amax = fmaxf(row_amax, fabsf(v[e]));
    }
    row_amax = block_max(row_amax, scratch);
    if (tid == 0) scale_row[0] = scale_of(row_amax);
  }
  // Quantize. Uniform trip count so that every lane takes part in the group shuffles.
  for (int base = 0; base < nchunks; base += nt) {
    const int i = base + tid;
    const bool active = i < nchunks;
    float v[CH] = {};
    if (active) glu_chunk<T, CH, ACT>(g + i * CH, u + i * CH, v);
    float s = scale_of(row_amax);
    if (a.group) {
      float m = 0.0f;
#pragma unroll
      for (int e = 0; e < CH; ++e) m = fmaxf(m, fabsf(v[e]));
      s = scale_of(group8_max(m));
    }
    if (active) {
      store_e4m3<CH>(outr + i * CH, 1.0f / s, [&](int e) { return v[e]; });
      if (a.group && i % kGroupChunks == 0) scale_row[(i / kGroupChunks) * a.ss_col] = s;
    }
  }
}

template <typename T>
wc_status launch_glu_quant(const GluArgs& a, int64_t rows, cudaStream_t s) {
  if (rows <= 0) return WC_OK;
  if (a.cols <= 0 || rows > INT32_MAX) return WC_ERR_INVALID_ARG;
  if (!glu_activation_known(a.act)) return WC_ERR_UNSUPPORTED;
  constexpr int V = kVec16<T>;
  const bool vec = a.cols % 16 == 0 && a.gate_stride % V == 0 && a.up_stride % V == 0 && a.out_stride % 16 == 0 &&
                   aligned_to(16, a.gate, a.up, a.out);
  if (!vec || (a.group && a.cols % WC_FP8_BLOCK != 0)) return WC_ERR_UNSUPPORTED;
  const int threads = static_cast<int>(min64(kRowThreadsMax, round_up_warp(a.cols / 16)));
  const dim3 grid(static_cast<unsigned>(rows));
  switch (a.act) {
    case WC_GLU_GELU_TANH: glu_quant_kernel<T, WC_GLU_GELU_TANH><<<grid, threads, 0, s>>>(a); break;
    case WC_GLU_RELU2: glu_quant_kernel<T, WC_GLU_RELU2><<<grid, threads, 0, s>>>(a); break;
    default: glu_quant_kernel<T, WC_GLU_SILU><<<grid, threads, 0, s>>>(a); break;  // known: checked above
  }
  return launch_status();
}

// ------------------------------------------------------------------ 128×128 blocks (weights)
constexpr int kBlockThreads = 256;

template <typename T, int CH>
__global__ void __launch_bounds__(kBlockThreads)
block_quant_kernel(const T* __restrict__ x, uint8_t* __restrict__ out, float* __restrict__ scale, int64_t rows,
                   int64_t cols, int64_t xs, int64_t os, int64_t ss_row, int64_t ss_col) {
  __shared__ float scratch[32];
  constexpr int kPerRow = WC_FP8_BLOCK / CH;
  constexpr int kPer = WC_FP8_BLOCK * kPerRow / kBlockThreads;  // chunks per thread
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * WC_FP8_BLOCK, c0 = static_cast<int64_t>(blockIdx.x) * WC_FP8_BLOCK;
  auto where = [&](int j, int64_t& r, int64_t& c) {
    const int i = threadIdx.x + j * kBlockThreads;
    r = r0 + i / kPerRow;
    c = c0 + (i % kPerRow) * CH;
    return r < rows && c < cols;  // CH = 16 only when cols % 16 == 0: chunks are whole
  };
  // CH = 16: the tile's 4 chunks a thread in registers, every load issued before the first use.
  // CH = 1 (scalar path): 64 values a thread would not fit, so the second pass re-reads them (L1).
  Chunk<T, 16> v[CH == 16 ? kPer : 1];
  bool ok[kPer];
  float amax = 0.0f;
  if constexpr (CH == 16) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      int64_t r, c;
      ok[j] = where(j, r, c);
      if (ok[j]) v[j] = load_chunk<T, 16>(x + r * xs + c);
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j)
      if (ok[j])
#pragma unroll
        for (int e = 0; e < 16; ++e) amax = fmaxf(amax, fabsf(v[j].at(e)));
  } else {
    const Chunk<T, CH> none{};
#pragma unroll 4
    for (int j = 0; j < kPer; ++j) {
      int64_t r, c;
      if (where(j, r, c)) amax = fmaxf(amax, chunk_amax<T, CH>(load_chunk<T, CH>(x + r * xs + c), none, false, 1.0f, 0.0f));
    }
  }
  const float s = scale_of(block_max(amax, scratch));
  if (threadIdx.x == 0) scale[blockIdx.y * ss_row + blockIdx.x * ss_col] = s;
  const float inv = 1.0f / s;
#pragma unroll(CH == 16 ? kPer : 4)
  for (int j = 0; j < kPer; ++j) {
    int64_t r, c;
    const bool in = where(j, r, c);
    if (!(CH == 16 ? ok[j] : in)) continue;  // the same test; ok[j] keeps 48 registers, not 64
    if constexpr (CH == 16) {
      store_e4m3<CH>(out + r * os + c, inv, [&](int e) { return v[j].at(e); });
    } else {
      const Chunk<T, CH> t = load_chunk<T, CH>(x + r * xs + c);
      store_e4m3<CH>(out + r * os + c, inv, [&](int e) { return t.at(e); });
    }
  }
}

// ------------------------------------------------------------------ per tensor (three steps)
template <typename T, int CH>
__global__ void __launch_bounds__(kGridThreads)
amax_kernel(const T* __restrict__ x, float* __restrict__ scale, int64_t rows, int64_t cols, int64_t xs) {
  __shared__ float scratch[32];
  const int64_t per_row = cols / CH, total = rows * per_row;
  const Chunk<T, CH> none{};
  float amax = 0.0f;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row, c = (idx % per_row) * CH;
    amax = fmaxf(amax, chunk_amax<T, CH>(load_chunk<T, CH>(x + r * xs + c), none, false, 1.0f, 0.0f));
  }
  amax = block_max(amax, scratch);
  // Non-negative floats order like their bit patterns as signed ints.
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(scale), __float_as_int(scale_of(amax)));
}

template <typename T, int CH>
__global__ void __launch_bounds__(kGridThreads)
scaled_quant_kernel(const T* __restrict__ x, uint8_t* __restrict__ out, const float* __restrict__ scale, int64_t rows,
                    int64_t cols, int64_t xs, int64_t os) {
  const int64_t per_row = cols / CH, total = rows * per_row;
  const float inv = 1.0f / *scale;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row, c = (idx % per_row) * CH;
    const Chunk<T, CH> v = load_chunk<T, CH>(x + r * xs + c);
    store_e4m3<CH>(out + r * os + c, inv, [&](int e) { return v.at(e); });
  }
}

unsigned grid_for(int64_t chunks) {
  const int64_t blocks = (chunks + kGridThreads - 1) / kGridThreads;
  return static_cast<unsigned>(max64(1, min64(blocks, kGridBlocksMax)));
}

template <typename T>
wc_status launch_quantize(const wc_quantize_fp8_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.cols <= 0) return WC_ERR_INVALID_ARG;
  const T* x = static_cast<const T*>(p.x);
  auto* out = static_cast<uint8_t*>(p.out);
  const bool vec = rows_vectorizable<T>(p.x, nullptr, nullptr, p.out, p.cols, p.x_stride, 0, p.out_stride);
  switch (p.granularity) {
    case WC_SCALE_TENSOR: {
      if (p.single_pass_ctas != 0) return launch_tensor_single_pass<T>(p, vec, s);
      const cudaError_t e = cudaMemsetAsync(p.scale, 0, sizeof(float), s);
      if (e != cudaSuccess) return static_cast<wc_status>(e);
      const unsigned grid = grid_for(p.rows * (p.cols / (vec ? 16 : 1)));
      if (vec) {
        amax_kernel<T, 16><<<grid, kGridThreads, 0, s>>>(x, p.scale, p.rows, p.cols, p.x_stride);
        scaled_quant_kernel<T, 16><<<grid, kGridThreads, 0, s>>>(x, out, p.scale, p.rows, p.cols, p.x_stride, p.out_stride);
      } else {
        amax_kernel<T, 1><<<grid, kGridThreads, 0, s>>>(x, p.scale, p.rows, p.cols, p.x_stride);
        scaled_quant_kernel<T, 1><<<grid, kGridThreads, 0, s>>>(x, out, p.scale, p.rows, p.cols, p.x_stride, p.out_stride);
      }
      return launch_status();
    }
    case WC_SCALE_ROW:
    case WC_SCALE_GROUP128: {
      if (p.cols > INT32_MAX) return WC_ERR_INVALID_ARG;
      RowsArgs a{p.x, nullptr, nullptr, out, p.scale, p.x_stride, 0, p.out_stride, p.scale_stride_row,
                 p.scale_stride_col, static_cast<int>(p.cols), 0.0f, 0.0f, p.granularity == WC_SCALE_GROUP128};
      return launch_rows<T>(a, p.rows, s);
    }
    case WC_SCALE_BLOCK128: {
      const int64_t gy = (p.rows + WC_FP8_BLOCK - 1) / WC_FP8_BLOCK, gx = (p.cols + WC_FP8_BLOCK - 1) / WC_FP8_BLOCK;
      if (gy > 65535 || gx > INT32_MAX) return WC_ERR_INVALID_ARG;
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
      if (vec) block_quant_kernel<T, 16><<<grid, kBlockThreads, 0, s>>>(x, out, p.scale, p.rows, p.cols, p.x_stride, p.out_stride, p.scale_stride_row, p.scale_stride_col);
      else block_quant_kernel<T, 1><<<grid, kBlockThreads, 0, s>>>(x, out, p.scale, p.rows, p.cols, p.x_stride, p.out_stride, p.scale_stride_row, p.scale_stride_col);
      return launch_status();
    }
    default:
      return WC_ERR_UNSUPPORTED;
  }
}

// ------------------------------------------------------------------ dequantize
template <typename T, int CH>
__global__ void __launch_bounds__(kGridThreads)
dequant_kernel(const uint8_t* __restrict__ q, const float* __restrict__ scale, T* __restrict__ out, int64_t rows,
               int64_t cols, int64_t qs, int64_t os, int64_t ss_row, int64_t ss_col, int64_t block_rows,
               int64_t block_cols) {
  const int64_t per_row = cols / CH, total = rows * per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row, c = (idx % per_row) * CH;
    // CH divides every block width (16 | 128, or the block is the whole row): one scale per chunk.
    const float sc = 256.0f * scale[(r / block_rows) * ss_row + (c / block_cols) * ss_col];  // 2^8: see e4m3x4_to_f16x2_scaled
    if constexpr (CH == 1) {
      uint32_t lo, hi;
      e4m3x4_to_f16x2_scaled(q[r * qs + c], lo, hi);
      out[r * os + c] = from_float<T>(__low2float(*reinterpret_cast<__half2*>(&lo)) * sc);
    } else {
      const uint4 bytes = *reinterpret_cast<const uint4*>(q + r * qs + c);
      const uint32_t words[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
      float f[16];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint32_t h[2];
        e4m3x4_to_f16x2_scaled(words[w], h[0], h[1]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const __half2 two = *reinterpret_cast<const __half2*>(&h[e / 2]);
          f[w * 4 + e] = (e % 2 == 0 ? __low2float(two) : __high2float(two)) * sc;
        }
      }
#pragma unroll
      for (int i = 0; i < 16; i += kVec16<T>) store_floats16<T>(out + r * os + c + i, f + i);
    }
  }
}

template <typename T>
wc_status launch_dequantize(const wc_dequantize_fp8_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.cols <= 0) return WC_ERR_INVALID_ARG;
  int64_t br, bc;
  switch (p.granularity) {
    case WC_SCALE_TENSOR: br = p.rows; bc = p.cols; break;
    case WC_SCALE_ROW: br = 1; bc = p.cols; break;
    case WC_SCALE_GROUP128: br = 1; bc = WC_FP8_BLOCK; break;
    case WC_SCALE_BLOCK128: br = WC_FP8_BLOCK; bc = WC_FP8_BLOCK; break;
    default: return WC_ERR_UNSUPPORTED;
  }
  auto* q = static_cast<const uint8_t*>(p.q);
  T* out = static_cast<T*>(p.out);
  const bool vec = p.cols % 16 == 0 && p.q_stride % 16 == 0 && p.out_stride % kVec16<T> == 0 && aligned_to(16, p.q, p.out);
  const unsigned grid = grid_for(p.rows * (p.cols / (vec ? 16 : 1)));
  if (vec) dequant_kernel<T, 16><<<grid, kGridThreads, 0, s>>>(q, p.scale, out, p.rows, p.cols, p.q_stride, p.out_stride, p.scale_stride_row, p.scale_stride_col, br, bc);
  else dequant_kernel<T, 1><<<grid, kGridThreads, 0, s>>>(q, p.scale, out, p.rows, p.cols, p.q_stride, p.out_stride, p.scale_stride_row, p.scale_stride_col, br, bc);
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_quantize_fp8(const wc_quantize_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_HALF_DTYPE(p->dtype, T, { return wc::launch_quantize<T>(*p, s); });
}

extern "C" wc_status wc_quantize_fp8_tensor_limits(wc_dtype dtype, wc_quant_tensor_limits* out) {
  if (out == nullptr) return WC_ERR_INVALID_ARG;
  WC_DISPATCH_HALF_DTYPE(dtype, T, { return wc::tensor_limits<T>(out); });
}

extern "C" wc_status wc_rms_norm_quant_fp8(const wc_rms_norm_quant_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->granularity != WC_SCALE_ROW && p->granularity != WC_SCALE_GROUP128) return WC_ERR_UNSUPPORTED;
  if (p->hidden > INT32_MAX || p->weight == nullptr) return WC_ERR_INVALID_ARG;  // null weight: the plain quantizer's
  auto s = reinterpret_cast<cudaStream_t>(stream);
  wc::RowsArgs a{p->x, p->residual, p->weight, static_cast<uint8_t*>(p->out), p->scale, p->x_stride,
                 p->residual_stride, p->out_stride, p->scale_stride_row, p->scale_stride_col,
                 static_cast<int>(p->hidden), p->eps, p->weight_offset, p->granularity == WC_SCALE_GROUP128};
  WC_DISPATCH_HALF_DTYPE(p->dtype, T, { return wc::launch_rows<T>(a, p->num_tokens, s); });
}

extern "C" wc_status wc_glu_quant_fp8(const wc_glu_quant_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->granularity != WC_SCALE_ROW && p->granularity != WC_SCALE_GROUP128) return WC_ERR_UNSUPPORTED;
  if (p->cols > INT32_MAX) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  wc::GluArgs a{p->gate, p->up, static_cast<uint8_t*>(p->out), p->scale, p->gate_stride, p->up_stride, p->out_stride,
                p->scale_stride_row, p->scale_stride_col, static_cast<int>(p->cols), p->activation,
                p->granularity == WC_SCALE_GROUP128};
  WC_DISPATCH_HALF_DTYPE(p->dtype, T, { return wc::launch_glu_quant<T>(a, p->rows, s); });
}

extern "C" wc_status wc_dequantize_fp8(const wc_dequantize_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_dequantize<T>(*p, s); });
}
