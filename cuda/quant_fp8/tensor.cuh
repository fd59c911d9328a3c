// quant_fp8/tensor.cuh — single-pass per-tensor quantization (included by quant_fp8.cu, one
// translation unit): a cooperative grid keeps x in shared memory across a grid-wide barrier;
// see docs/quant_fp8.md, "Per tensor in one pass".
#pragma once

#include "quant_fp8/chunk.cuh"

namespace wc {
namespace {

// ------------------------------------------------------------------ per tensor, single pass
// One cooperative launch of G co-resident CTAs (docs/quant_fp8.md, "Per tensor in one pass").
// CTA b owns chunks [b·C/G, (b+1)·C/G) of the tensor's C 16-element chunks; the first `held` of
// them are kept in shared memory (two planes of 16-byte packs: conflict-free), the rest is
// streamed. Phase 1 reads the held part, then the streamed part (last, so it is the freshest in
// L2 at the barrier), for the CTA's amax; grid barrier; every CTA takes the maximum of the G
// slots (bit-identical everywhere), phase 2 re-reads and quantizes the streamed part, then the
// held part from shared memory.
constexpr int kTensorThreads = 512;
constexpr int kTensorUnroll = 4;  // chunks in flight per thread
constexpr int kTensorSlots = 32;  // workspace word where the amax slots start (word 0: arrivals)
static_assert(WC_QUANT_WORKSPACE_WORDS >= kTensorSlots + WC_QUANT_TENSOR_MAX_CTAS, "workspace holds every slot");

struct TensorArgs {
  const void* x;        // [rows, cols], row stride xs; cols % 16 == 0, 16-byte aligned rows
  uint8_t* out;         // [rows, cols], row stride os
  float* scale;         // [1]
  unsigned* workspace;  // [WC_QUANT_WORKSPACE_WORDS]
  int64_t rows, cols, xs, os;
  int64_t held;         // chunks per CTA in shared memory
};

// Offsets (x, out) of chunk g; a dense tensor arrives as one row (no division).
struct ChunkAt {
  int64_t x, out;
};
__device__ __forceinline__ ChunkAt chunk_at(const TensorArgs& a, int64_t per_row, int64_t g) {
  const int64_t r = a.rows == 1 ? 0 : g / per_row;
  const int64_t c = (g - r * per_row) * 16;
  return {r * a.xs + c, r * a.os + c};
}

__device__ __forceinline__ unsigned load_volatile(const unsigned* p) { return *reinterpret_cast<const volatile unsigned*>(p); }

// Grid-wide barrier of a co-resident grid on one 32-bit word that holds 0 or 2^31 between
// launches: CTA 0 adds 2^31 - (G - 1), every other CTA 1, so bit 31 flips exactly when the
// last CTA arrives and the low 31 bits return to 0 (the scheme of cooperative groups' grid
// sync). No reset, so repeated calls, other grid sizes and graph replays just work. Writes
// before the barrier (the amax slots) are visible after it: fence, arrive, spin, fence.
__device__ __forceinline__ void grid_barrier(unsigned* arrived) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    __threadfence();
    const unsigned old = atomicAdd(arrived, add);
    SpinWatch watch;  // a grid that is not co-resident would wait forever: trap instead
    while (((old ^ load_volatile(arrived)) & 0x80000000u) == 0) {
      __nanosleep(64);
      watch.poll();
    }
    __threadfence();
  }
  __syncthreads();
}

// Maximum of non-negative floats' bit patterns over the block (unsigned order = float order; a
// slot that was never written, e.g. the emulator's 0xFFFFFFFF, wins: a NaN amax, a floor scale).
__device__ __forceinline__ unsigned block_max_bits(unsigned v, unsigned* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = __reduce_max_sync(0xffffffffu, v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = __reduce_max_sync(0xffffffffu, lane < warps ? scratch[lane] : 0u);
  __syncthreads();
  return v;
}

// f(i, chunk) for the chunks i in [lo, hi) of the CTA's share (first chunk `begin`) that fall to
// this thread, kTensorUnroll 16-byte loads in flight.
template <typename T, typename F>
__device__ __forceinline__ void each_chunk(const TensorArgs& a, int64_t per_row, int64_t begin, int64_t lo, int64_t hi,
                                           F f) {
  constexpr int U = kTensorUnroll;
  const T* x = static_cast<const T*>(a.x);
  const int64_t nt = blockDim.x;
  for (int64_t i0 = lo + threadIdx.x; i0 < hi; i0 += U * nt) {
    Chunk<T, 16> v[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * nt < hi) v[u] = load_chunk<T, 16>(x + chunk_at(a, per_row, begin + i0 + u * nt).x);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * nt < hi) f(i0 + u * nt, v[u]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kTensorThreads, 1) tensor_quant_kernel(const TensorArgs a) {
  extern __shared__ __align__(16) unsigned char tensor_smem[];
  __shared__ float scratch[32];
  __shared__ unsigned scratch_bits[32];
  const int64_t per_row = a.cols / 16, total = a.rows * per_row, grid = gridDim.x;
  const int64_t begin = total * blockIdx.x / grid, n = total * (blockIdx.x + 1) / grid - begin;
  const int64_t h = min64(n, a.held);
  uint4* plane0 = reinterpret_cast<uint4*>(tensor_smem);  // chunk i: elements 0..7 at plane0[i],
  uint4* plane1 = plane0 + a.held;                        // 8..15 at plane1[i]
  const int tid = threadIdx.x, nt = blockDim.x;
  const Chunk<T, 16> none{};

  // Phase 1: the held part into shared memory, then the streamed part; the CTA's amax.
  float amax = 0.0f;
  each_chunk<T>(a, per_row, begin, 0, h, [&](int64_t i, const Chunk<T, 16>& v) {
    amax = fmaxf(amax, chunk_amax<T, 16>(v, none, false, 1.0f, 0.0f));
    plane0[i] = v.q[0];
    plane1[i] = v.q[1];
  });
  each_chunk<T>(a, per_row, begin, h, n, [&](int64_t, const Chunk<T, 16>& v) {
    amax = fmaxf(amax, chunk_amax<T, 16>(v, none, false, 1.0f, 0.0f));
  });
  amax = block_max(amax, scratch);
  unsigned* slots = a.workspace + kTensorSlots;
  if (tid == 0) slots[blockIdx.x] = __float_as_uint(amax);
  grid_barrier(a.workspace);

  // Every CTA: the same maximum over the same slots, the same scale.
  unsigned bits = 0;
  for (int64_t k = tid; k < grid; k += nt) bits = max(bits, load_volatile(slots + k));
  const float s = scale_of(__uint_as_float(block_max_bits(bits, scratch_bits)));
  const float inv = 1.0f / s;
  if (blockIdx.x == 0 && tid == 0) a.scale[0] = s;

  // Phase 2: the streamed part (re-read while it is fresh in L2), then the held part.
  each_chunk<T>(a, per_row, begin, h, n, [&](int64_t i, const Chunk<T, 16>& v) {
    store_e4m3<16>(a.out + chunk_at(a, per_row, begin + i).out, inv, [&](int e) { return v.at(e); });
  });
  for (int64_t i = tid; i < h; i += nt) {
    Chunk<T, 16> v;
    v.q[0] = plane0[i];
    v.q[1] = plane1[i];
    store_e4m3<16>(a.out + chunk_at(a, per_row, begin + i).out, inv, [&](int e) { return v.at(e); });
  }
}

// Elements of x one CTA may hold on device `dev`: the opt-in shared memory less the kernel's
// static shared memory, in whole chunks. That maximum is granted to the kernel once per device
// (one fixed value: launches with different held sizes, from any host thread, never lower it
// for each other, and no launch pays for the attribute call again).
template <typename T>
cudaError_t tensor_capacity(int dev, int64_t* held) {
  // Elements + 1 per device; 0: not asked yet. Atomic: launches may come from several host
  // threads (two that ask at once store the same answer).
  static std::atomic<int64_t> granted[64];
  int64_t g = granted[dev & 63].load(std::memory_order_relaxed);
  if (g == 0) {
    auto kernel = tensor_quant_kernel<T>;
    int optin = 0;
    cudaFuncAttributes fa = {};
    cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, kernel);
    const int64_t chunk_bytes = 16 * sizeof(T);
    const int64_t h = max64(0, (static_cast<int64_t>(optin) - static_cast<int64_t>(fa.sharedSizeBytes)) / chunk_bytes) * 16;
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(h * sizeof(T)));
    if (e != cudaSuccess) return e;
    g = h + 1;
    granted[dev & 63].store(g, std::memory_order_relaxed);
  }
  *held = g - 1;
  return cudaSuccess;
}

template <typename T>
wc_status launch_tensor_single_pass(const wc_quantize_fp8_params& p, bool vec, cudaStream_t s) {
  if (!vec || p.workspace == nullptr || p.single_pass_ctas < 1 || p.single_pass_ctas > WC_QUANT_TENSOR_MAX_CTAS || p.single_pass_held < 0 ||
      p.single_pass_held % 16 != 0)
    return WC_ERR_INVALID_ARG;
  TensorArgs a{p.x, static_cast<uint8_t*>(p.out), p.scale, static_cast<unsigned*>(p.workspace), p.rows, p.cols,
               p.x_stride, p.out_stride, p.single_pass_held / 16};
  if (a.rows > 1 && a.xs == a.cols && a.os == a.cols) {  // dense: one row, no per-chunk division
    a.cols *= a.rows;
    a.rows = 1;
  }
  int dev = 0;
  int64_t capacity = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = tensor_capacity<T>(dev, &capacity);
  if (e == cudaSuccess && p.single_pass_held > capacity) e = cudaErrorInvalidValue;  // what the runtime says
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return static_cast<wc_status>(e);
  }
  const size_t smem = static_cast<size_t>(p.single_pass_held) * sizeof(T);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(p.single_pass_ctas));
  cfg.blockDim = dim3(kTensorThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  e = cudaLaunchKernelEx(&cfg, tensor_quant_kernel<T>, a);
  const wc_status st = launch_status();
  return e != cudaSuccess ? static_cast<wc_status>(e) : st;
}

template <typename T>
wc_status tensor_limits(wc_quant_tensor_limits* out) {
  int dev = 0, sms = 0, coop = 0, per_sm = 0;
  int64_t held = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev);
  if (e == cudaSuccess) e = tensor_capacity<T>(dev, &held);
  if (e == cudaSuccess)
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, tensor_quant_kernel<T>, kTensorThreads, held * sizeof(T));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return static_cast<wc_status>(e);
  }
  *out = wc_quant_tensor_limits{sms, per_sm, held, coop};
  return WC_OK;
}

}  // namespace
}  // namespace wc
