// common.cuh — what every kernel file shares: element types and conversions (FP8 e4m3
// included), packed vector loads/stores, index loads, warp/block reductions and prefix
// scans, cp.async and mma.sync wrappers, and the dtype dispatch macros. Nothing op-specific.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>
#include <type_traits>

#include "warpcore.h"

namespace wc {

// ------------------------------------------------------------------ element conversions
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// FP8 e4m3 (WC_E4M3, "e4m3fn"): round to nearest even, finite overflow and ±inf saturate to
// ±448, NaN stays NaN — the same rounding as the host's F8E4M3::from_f64_sat.
__device__ __forceinline__ float to_float(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ __nv_fp8_e4m3 from_float<__nv_fp8_e4m3>(float v) {
  __nv_fp8_e4m3 r;
  r.__x = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  return r;
}

// ------------------------------------------------------------------ packed vectors
// N elements of T moved as one aligned load/store (N * sizeof(T) in {2, 4, 8, 16} bytes:
// LDG/STG .16/.32/.64/.128). Callers guarantee the alignment (see aligned_to()).
template <typename T, int N>
struct alignas(N * sizeof(T)) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVec16 = 16 / sizeof(T);

// M contiguous elements: one M-wide access when VECTOR (the caller guarantees M * sizeof(T)
// alignment), else M scalar accesses (any alignment).
template <typename T, int M, bool VECTOR>
__device__ __forceinline__ Pack<T, M> load_elems(const T* p) {
  if constexpr (VECTOR) {
    return load_pack<T, M>(p);
  } else {
    Pack<T, M> r;
#pragma unroll
    for (int i = 0; i < M; ++i) r.v[i] = p[i];
    return r;
  }
}
template <typename T, int M, bool VECTOR>
__device__ __forceinline__ void store_elems(T* p, const Pack<T, M>& v) {
  if constexpr (VECTOR) {
    store_pack<T, M>(p, v);
  } else {
#pragma unroll
    for (int i = 0; i < M; ++i) p[i] = v.v[i];
  }
}

// ------------------------------------------------------------------ index arrays
// Element i of an int32 or int64 array (positions, slot mappings): the width is a run-time flag
// (uniform across the grid), so one kernel serves both.
__device__ __forceinline__ int64_t load_index(const void* p, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// Whether the current device is compute capability 9.0, where the sm_90a code runs. The
// capability is asked of the runtime once per device (ordinals below 64), not per launch.
inline cudaError_t hopper_device(bool& hopper) {
  static std::atomic<int> known[64];  // 0: not asked yet, 1: Hopper, 2: not
  int dev = 0, major = 0, minor = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const bool cached = dev >= 0 && dev < 64;
  if (cached && known[dev].load(std::memory_order_relaxed) != 0) {
    hopper = known[dev].load(std::memory_order_relaxed) == 1;
    return cudaSuccess;
  }
  e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (e != cudaSuccess) return e;
  hopper = major == 9 && minor == 0;
  if (cached) known[dev].store(hopper ? 1 : 2, std::memory_order_relaxed);
  return cudaSuccess;
}

// Which devices a kernel has been allowed its dynamic shared memory on (bit d: device d), in a
// fixed table keyed by the kernel's address (open addressing; more kernels than slots: nullptr,
// asked at every launch). Lock-free, and nothing from the C++ library that needs libstdc++.
struct SmemAllowance {
  std::atomic<const void*> fn{nullptr};
  std::atomic<uint64_t> devices{0};
};
inline SmemAllowance* smem_allowance(const void* fn) {
  constexpr int kSlots = 1024;  // the kernels with dynamic shared memory: about 200
  static SmemAllowance table[kSlots];
  int slot = static_cast<int>((reinterpret_cast<uintptr_t>(fn) >> 4) % kSlots);
  for (int probe = 0; probe < kSlots; ++probe, slot = (slot + 1) % kSlots) {
    const void* cur = table[slot].fn.load(std::memory_order_acquire);
    if (cur == nullptr && table[slot].fn.compare_exchange_strong(cur, fn, std::memory_order_acq_rel)) return &table[slot];
    if (cur == fn) return &table[slot];
  }
  return nullptr;
}

// Lets `kernel` take `bytes` of dynamic shared memory (cudaFuncAttributeMaxDynamicSharedMemorySize),
// asked of the runtime once per (kernel, device) instead of at every launch. `bytes` must be the
// kernel's constant (each launcher passes its tile's), so a kernel's value never changes and a
// launch on another thread cannot see it lowered. The attribute lives in the device's primary
// context, which the runtime holds until the process ends. Set at every launch, it cost a driver
// call each time, which other projects found can wait for the copies pending on the device
// (intel/llvm#16928): a stall where an engine overlaps copies and kernels.
template <typename Kernel>
inline cudaError_t allow_dynamic_smem(Kernel kernel, int bytes) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  SmemAllowance* a = dev >= 0 && dev < 64 ? smem_allowance(reinterpret_cast<const void*>(kernel)) : nullptr;
  const uint64_t bit = uint64_t{1} << (dev & 63);
  if (a != nullptr && (a->devices.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess && a != nullptr) a->devices.fetch_or(bit, std::memory_order_release);
  return e;
}

// True when every pointer is `bytes`-aligned (host side: choosing the vector width).
inline bool aligned_to(int bytes, const void* a, const void* b = nullptr, const void* c = nullptr,
                       const void* d = nullptr) {
  auto ok = [bytes](const void* p) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; };
  return ok(a) && ok(b) && ok(c) && ok(d);
}

// Bytes per element of a dtype tag (0: not a tensor dtype).
inline int64_t dtype_bytes(int dtype) {
  switch (dtype) {
    case WC_F32: return 4;
    case WC_F16:
    case WC_BF16: return 2;
    case WC_E4M3: return 1;
    default: return 0;
  }
}

// Row copies by raw units: calls f(U{}) with the widest unit U (uint4, uint2, uint32_t, uint16_t,
// uint8_t) that is no narrower than an element, divides the row and both row strides (all in
// bytes) and to which both pointers are aligned. False (nothing called) when no unit fits, i.e.
// an element is misaligned.
template <typename F>
bool with_copy_unit(int64_t esize, int64_t row_bytes, int64_t stride_a_bytes, int64_t stride_b_bytes,
                    const void* a, const void* b, F&& f) {
  auto fits = [&](int64_t bytes) {
    return bytes >= esize && row_bytes % bytes == 0 && stride_a_bytes % bytes == 0 &&
           stride_b_bytes % bytes == 0 && aligned_to(static_cast<int>(bytes), a, b);
  };
  if (fits(16)) f(uint4{});
  else if (fits(8)) f(uint2{});
  else if (fits(4)) f(uint32_t{});
  else if (fits(2)) f(uint16_t{});
  else if (fits(1)) f(uint8_t{});
  else return false;
  return true;
}

// ------------------------------------------------------------------ 64-bit index arithmetic
__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ int32_t min32(int32_t a, int32_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int32_t max32(int32_t a, int32_t b) { return a > b ? a : b; }

// ------------------------------------------------------------------ reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x is a multiple of 32.
// `scratch` is 32 floats of shared memory; the trailing barrier makes it reusable.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// Any associative `op` (integer sums, min, max) over the whole block, combined in a fixed order
// (deterministic); every thread gets the result. `identity` fills the missing warps. As
// block_sum: blockDim.x a multiple of 32, `scratch` 32 T of shared memory, reusable after.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity, T* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : identity;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  return v;
}

// ------------------------------------------------------------------ prefix sums
// Inclusive prefix sum over the warp's lanes (all 32 lanes take part); T an integer type.
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const T n = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += n;
  }
  return v;
}

// Exclusive prefix sum over the block in thread order; *total gets the block's sum (every
// thread). blockDim.x is a multiple of 32; `scratch` is 32 T of shared memory; the trailing
// barrier makes it reusable.
template <typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T* scratch, T* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  const T inc = warp_inclusive_scan(v);
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  const T w = lane < num_warps ? scratch[lane] : T{0};
  const T winc = warp_inclusive_scan(w);
  const T warp_prefix = __shfl_sync(0xffffffffu, winc - w, warp);
  *total = __shfl_sync(0xffffffffu, winc, 31);
  __syncthreads();
  return warp_prefix + inc - v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Maximum over the whole block; every thread gets the result. As block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : -INFINITY;
  v = warp_max(v);
  __syncthreads();
  return v;
}

// ------------------------------------------------------------------ order keys, deterministic exp
// Monotone map from floats to uint32 (larger value -> larger key; −0 below +0, NaN outside the
// order: callers map or skip it). Every float >= -inf maps to a key >= order_key(-inf) =
// 0x007FFFFF, so 0 is free to mean "no candidate". key_value inverts it. Used by moe_gate's
// selection (on canonical values) and sample_rows' ranks.
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);  // negative: ~u
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// 2^x as MUFU.EX2 alone (ex2.approx.ftz): exp2f adds a range test and two predicated multiplies
// per call to keep results below 2^-126 subnormal; a probability that small is 0 to the
// softmax's f32 sums (the GPU's ex2 is within 2 ulp either way).
constexpr float kLog2e = 1.4426950408889634f;  // e^x = 2^(x log2 e)
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// exp(y) for y clamped to [-87, 88] (NaN stays NaN), from correctly rounded operations only:
// n = rint(y * log2e); r = y - n*ln2 (two fmas, Cody-Waite); degree-7 Taylor polynomial in
// Horner form with fmas; times 2^n built from bits. The constants are given as bits and the
// Rust reference (reference::det_exp) uses the same bits and the same operation order, so both
// produce identical floats. Accuracy: a few ulp (the reference's tests measure it).
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

// ------------------------------------------------------------------ spin-wait watchdog
// Every spin wait of the kernels traps once it has waited WC_WAIT_LIMIT_NS nanoseconds of
// %globaltimer (default 20 s, far beyond any wait of a correct launch; 0 turns it off; the
// build passes the environment's WARPCORE_WAIT_LIMIT_NS through): the per-tensor quantizer's
// grid barrier through SpinWatch, sm90.cuh's mbar_wait in its own PTX. A deadlock — a pipeline bug, a
// transaction count the hardware never delivers, a grid that is not co-resident — then fails
// the launch (a sticky launch failure the caller sees at its next synchronisation) instead of
// hanging the GPU. The timer is read only after a poll fails (the wait goes on anyway).
#ifndef WC_WAIT_LIMIT_NS
#define WC_WAIT_LIMIT_NS 20000000000ull
#endif
__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}
struct SpinWatch {
  uint64_t start = 0;  // the timer at the first failed poll
  __device__ __forceinline__ void poll() {  // after each failed poll
    const uint64_t now = globaltimer_ns();
    if (start == 0) start = now;
    else if (WC_WAIT_LIMIT_NS > 0 && now - start > WC_WAIT_LIMIT_NS) __trap();
  }
};

// ------------------------------------------------------------------ async copies and mma.sync (sm_80+)
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; when !valid nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// "memory": plain loads of the copied shared memory after a wait must not move above it.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a · b, m16n8k16, f32 accumulators.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c += a · b, m16n8k32, a signed int8 (A row-major: reg0 = (g, 4t..4t+3), reg1 = (g+8, 4t..),
// reg2 = (g, 16+4t..), reg3 = (g+8, 16+4t..)), b unsigned int8 (B column: b0 = (k 4t..4t+3,
// n g), b1 = (k 16+4t.., n g)), int32 accumulators (c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, ..)),
// wrapping on overflow.
__device__ __forceinline__ void mma_s8u8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one register of two T (lo in the low half), rounded to nearest.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  Pack<T, 2> p;
  p.v[0] = from_float<T>(lo);
  p.v[1] = from_float<T>(hi);
  return *reinterpret_cast<uint32_t*>(&p);
}

// The two T (2-byte types) of one register as floats, exactly: pack2's inverse. Kernels that
// hold 16-byte vectors as four words (uint4) rather than as Pack<T, 8> use it: ptxas gives each
// 16-bit element of a Pack its own register, which doubled some kernels' registers and made
// them consume a load before issuing the next (2026-12-03, from the SASS).
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t w) {
  static_assert(sizeof(T) == 2, "two T a word");
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  }
}

// A 16-byte vector of T held as four words: word q, and element k (< kVec16<T>) as a float,
// exactly (k a compile-time constant after unrolling: no selects remain).
__device__ __forceinline__ uint32_t word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}
template <typename T>
__device__ __forceinline__ float elem_of(const uint4& v, int k) {
  if constexpr (sizeof(T) == 4) {
    return __uint_as_float(word_of(v, k));
  } else {
    const float2 f = unpack2<T>(word_of(v, k / 2));
    return k % 2 ? f.y : f.x;
  }
}

// kVec16<T> floats rounded to T, as four words.
template <typename T>
__device__ __forceinline__ uint4 floats_to_words(const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    if constexpr (sizeof(T) == 4) w[q] = __float_as_uint(f[q]);
    else w[q] = pack2<T>(f[2 * q], f[2 * q + 1]);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// CH consecutive elements of T as a thread holds them. CH = 1 (a scalar path): one element. CH
// a multiple of kVec16<T>: CH / kVec16<T> 16-byte vectors, each held as four words and read
// through elem_of (a Pack<T, 8> would take a register per 16-bit element). Loads need the
// vectors' 16-byte alignment (the caller's check).
template <typename T, int CH>
struct Chunk {
  static_assert(CH % kVec16<T> == 0, "whole 16-byte vectors");
  static constexpr int kQ = CH / kVec16<T>;
  uint4 q[kQ];
  __device__ __forceinline__ float at(int e) const { return elem_of<T>(q[e / kVec16<T>], e % kVec16<T>); }
};
template <typename T>
struct Chunk<T, 1> {
  T v;
  __device__ __forceinline__ float at(int) const { return to_float(v); }
};

template <typename T, int CH>
__device__ __forceinline__ Chunk<T, CH> load_chunk(const T* src) {
  Chunk<T, CH> c;
  if constexpr (CH == 1) {
    c.v = *src;
  } else {
#pragma unroll
    for (int i = 0; i < Chunk<T, CH>::kQ; ++i) c.q[i] = *reinterpret_cast<const uint4*>(src + i * kVec16<T>);
  }
  return c;
}

// kVec16<T> floats rounded to T and stored to global memory as one 16-byte store (PTX, so
// that the compiler cannot split it into element stores). dst is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store_floats16(T* dst, const float* v) {
  const uint4 u = floats_to_words<T>(v);
  // An array w: the host emulation's prep.py rewrites the store below into a call taking it.
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
               : "memory");
}

// ------------------------------------------------------------------ programmatic dependent launch (sm_90+)
// A kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization may start before the
// kernel ahead of it on the stream has finished, once every CTA of that kernel has called
// grid_dependents_launch() or exited. It must call grid_dependency_wait() before reading what
// that kernel wrote: it returns once that kernel has completed and its writes are visible.
// Both are no-ops below sm_90 and where no such launch is involved.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches `kernel` as a programmatic dependent of the kernel ahead of it on the stream (PDL) on
// Hopper: its launch and CTA dispatch overlap that kernel's end (from when each of its CTAs has
// called grid_dependents_launch() or exited), and `kernel` calls grid_dependency_wait() before
// reading what that kernel wrote. Elsewhere in plain stream order: the wait exists only in the
// sm_90a code, and a newer GPU running the compute_80 PTX would honour PDL with no wait. A
// driver or tool that refuses the attribute gets the plain launch.
// `dependent` false: a plain launch (the caller's switch, e.g. wc_attention_params::merge_pdl).
template <typename... P, typename... A>
cudaError_t launch_dependent(bool dependent, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t s,
                             A&&... args) {
  bool hopper = false;
  if (const cudaError_t e = hopper_device(hopper); e != cudaSuccess) return e;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = hopper && dependent ? 1 : 0;
  cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
  if (cfg.numAttrs != 0 && (e == cudaErrorNotSupported || e == cudaErrorInvalidValue)) {
    (void)cudaGetLastError();  // not sticky: clear it, launch in plain order
    cfg.numAttrs = 0;
    e = cudaLaunchKernelEx(&cfg, kernel, args...);
  }
  return e;
}

// ------------------------------------------------------------------ FP8 e4m3
// Two floats -> two e4m3 bytes (a in the low byte): round to nearest even, saturating to
// ±448 (__NV_SATFINITE: overflow never makes NaN). One F2FP on sm_89+, emulated on sm_80.
__device__ __forceinline__ uint16_t e4m3x2_from_floats(float a, float b) {
  return static_cast<uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}

// Four e4m3 bytes (byte 0 lowest) -> two f16x2 words holding value · 2^-8 exactly: lo = bytes
// 0, 1 and hi = bytes 2, 3 (the lower byte in the lower half). Placing the 7 magnitude bits at
// f16 bit 7 maps e4m3's exponent (bias 7) onto f16's (bias 15), normals and subnormals alike,
// so three integer ops replace a conversion; multiply by 256 (or fold 2^8 into a scale) for
// the value. The NaN codes (0x7F, 0xFF) become the finite 480 · 2^-8.
__device__ __forceinline__ void e4m3x4_to_f16x2_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(w, 0u, 0x1404);  // byte0 -> bits 8..15, byte1 -> bits 24..31
  const uint32_t b = __byte_perm(w, 0u, 0x3424);  // byte2, byte3 likewise
  lo = (a & 0x80008000u) | ((a >> 1) & 0x3F803F80u);
  hi = (b & 0x80008000u) | ((b >> 1) & 0x3F803F80u);
}

// Status of the launch just made (asynchronous errors surface at the next sync).
inline wc_status launch_status() { return static_cast<wc_status>(cudaGetLastError()); }

}  // namespace wc

// Runs `...` (which must `return` a wc_status) with `T` bound to the element type of `dtype`.
// Unknown dtypes return WC_ERR_UNSUPPORTED: the Rust side never sends one, this is the guard.
#define WC_DISPATCH_DTYPE(dtype, T, ...)                          \
  switch (dtype) {                                                \
    case WC_F32: { using T = float; __VA_ARGS__ }                 \
    case WC_F16: { using T = __half; __VA_ARGS__ }                \
    case WC_BF16: { using T = __nv_bfloat16; __VA_ARGS__ }        \
    default: break;                                               \
  }                                                               \
  return WC_ERR_UNSUPPORTED;

// As WC_DISPATCH_DTYPE for ops that take only the 16-bit float types (bf16, f16).
#define WC_DISPATCH_HALF_DTYPE(dtype, T, ...)                     \
  switch (dtype) {                                                \
    case WC_F16: { using T = __half; __VA_ARGS__ }                \
    case WC_BF16: { using T = __nv_bfloat16; __VA_ARGS__ }        \
    default: break;                                               \
  }                                                               \
  return WC_ERR_UNSUPPORTED;
