// sm90.cuh — Hopper (sm_90a) building blocks: mbarriers, TMA tile loads (and multicast across a
// thread block cluster), wgmma (shared-memory descriptors, fences, FP8 m64nNk32), register
// reallocation, named barriers.
//
// Only for code compiled under WC_SM90A (sm_90a); every helper is an inline function, so
// including this header costs other targets nothing. PTX references: "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate" (wgmma), "Tensor Copy" (cp.async.bulk.tensor),
// "mbarrier".
#pragma once

#include <type_traits>

#include "common.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WC_SM90A 1
#else
#define WC_SM90A 0
#endif

namespace wc {
namespace sm90 {

// ------------------------------------------------------------------ mbarriers
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// After initialising barriers (one thread): make them visible to the async proxy (TMA)
// and, with the __syncthreads that follows, to every thread.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Arrive (count 1) and add `bytes` to the transaction count the phase waits for.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
// Add `bytes` to the transaction count of the current phase without arriving (the thread
// arrives later, like the others counted by the barrier).
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the phase with this parity has completed. A fresh barrier is in phase 0, and
// waiting for parity 1 (the phase "before" it) returns at once: that is how a producer's
// first pass over the empty barriers goes through. The spin-wait watchdog (common.cuh): a
// wait that never completes traps after WC_WAIT_LIMIT_NS instead of hanging.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if WC_WAIT_LIMIT_NS > 0
  // One asm block: the watchdog's registers live only on the slow path (a C++ loop kept one
  // across the wait and made the attention consumers spill).
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      ".reg .u64 t0, t1;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@done bra WC_MBAR_DONE;\n"
      "mov.u64 t0, %%globaltimer;\n"
      "WC_MBAR_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@done bra WC_MBAR_DONE;\n"
      "mov.u64 t1, %%globaltimer;\n"
      "sub.u64 t1, t1, t0;\n"
      "setp.gt.u64 done, t1, %2;\n"
      "@done trap;\n"
      "bra WC_MBAR_WAIT;\n"
      "WC_MBAR_DONE:\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity), "n"(WC_WAIT_LIMIT_NS)
      : "memory");
#else
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WC_MBAR_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WC_MBAR_WAIT;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
#endif
}

// ------------------------------------------------------------------ TMA
__device__ __forceinline__ void prefetch_tensor_map(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
}
// The box of a 2-D tensor map at (c0 = inner coordinate, c1 = row) into shared memory;
// completion is counted on `bar` in bytes (out-of-bounds rows arrive as zeros and count too).
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, uint64_t* bar, int32_t c0, int32_t c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          smem_addr(dst)),
      "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
}

// The reverse: shared memory (the box, in the map's swizzle) to a 2-D tensor map's box at (c0, c1);
// elements outside the tensor are not written. The issuing thread tracks its stores in bulk
// groups: tma_store_commit closes one, tma_store_wait_read<N> returns once at most N of its
// groups are still reading shared memory (their source may be overwritten then; the global
// writes may still be in flight: kernel completion makes them visible). The source must have
// been fenced to the async proxy (fence_proxy_async_smem) by every thread that wrote it, then
// handed over by a barrier.
__device__ __forceinline__ void tma_store_2d(const void* src, const void* map, int32_t c0, int32_t c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(map),
               "r"(smem_addr(src)), "r"(c0), "r"(c1)
               : "memory");
}
__device__ __forceinline__ void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}

// ------------------------------------------------------------------ thread block clusters
// A (C, 1, 1) cluster's CTA ranks are blockIdx.x % C (%cluster_ctarank).
// barrier.cluster: every thread of every CTA of the cluster arrives (release) and waits
// (acquire). After barrier initialisation it makes the CTAs' mbarriers visible to their peers;
// before exit it keeps a CTA's shared memory alive while a peer may still arrive on its barriers.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// Arrives (count 1) on the mbarrier at bar's offset in CTA `cta` of the cluster (mapa: the same
// shared-memory offset in the peer's window). Default semantics, as CUTLASS's
// ClusterBarrier::arrive(cta_id): `.release.cluster` would put a GPU-wide MEMBAR before every
// arrival (seen in the SASS), and what a consumer's release orders — its wgmma reads of the
// stage, retired by wgmma.wait_group — needs no memory fence.
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, uint32_t cta) {
  asm volatile(
      "{\n.reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(cta)
      : "memory");
}
// tma_load_2d to the same offset in every CTA of `mask` (bit r: cluster rank r), each counting
// the bytes on its own mbarrier at bar's offset: one L2 read feeds several SMs.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const void* map, uint64_t* bar, int32_t c0, int32_t c1,
                                                      uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4}], [%2], %5;\n" ::"r"(smem_addr(dst)),
      "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "h"(mask)
      : "memory");
}

// ------------------------------------------------------------------ wgmma
// Descriptor of a K-major operand tile written by TMA with 128-byte swizzle: rows of 128 bytes,
// 8-row atoms of 1024 bytes (stride byte offset), the tile 1024-byte aligned (base offset 0).
// Bits: [0,14) start address >> 4; [16,30) leading byte offset >> 4 (unused for swizzled
// K-major, 1 by convention); [32,46) stride byte offset >> 4; [62,64) layout: 1 = 128B swizzle.
// Advancing the start by 32 bytes selects the next k32 slice inside the swizzle atom.
__device__ __forceinline__ uint64_t desc_k_major_sw128(const void* tile) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// Descriptor of an MN-major ("transposed") operand with 128-byte swizzle: 128-byte rows run
// along N (64 16-bit elements), one row per k, 8-row atoms of 1024 bytes (stride byte offset:
// the next 8 k), `lbo` bytes from one 64-element block of N to the next (leading byte
// offset), the tile 1024-byte aligned. PTX ISA canonical layout, MN-major SW128:
// ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO)).
__device__ __forceinline__ uint64_t desc_mn_major_sw128(const void* tile, uint32_t lbo) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t((lbo & 0x3FFFF) >> 4) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
// Makes this thread's generic-proxy writes to shared memory (st.shared, cp.async after its
// wait) visible to the async proxy (wgmma operand reads); a barrier then publishes them.
// A 32-bit (16-byte) store of a thread's data into shared memory that the async proxy will read
// (a wgmma operand, a TMA store's source): the writer must fence_proxy_async_smem() before the
// barrier that hands it over. (The host emulation tracks these stores for that check.)
__device__ __forceinline__ void st_shared_for_async(void* p, uint32_t v) { *static_cast<uint32_t*>(p) = v; }
__device__ __forceinline__ void st_shared_for_async16(void* p, uint4 v) { *static_cast<uint4*>(p) = v; }
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of an accumulator across wgmma fences and waits.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
// ... and a register A operand, which the tensor core reads until its wgmma retires.
__device__ __forceinline__ void fence_operand_u32(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// ------------------------------------------------------------------ cp.async producer ring
// The ring's set-up, by the whole CTA (thread 0 initialises, then a CTA barrier): full[stage]
// counts the 128 producer threads (each arrives once its copies landed), empty[stage] lane 0 of
// each of the 8 consumer warps; s_bad[stage] (the last tile loaded there with a missing key)
// starts at -1. The dynamic shared memory must be 1024-byte aligned (the swizzle atoms).
template <int S>
__device__ __forceinline__ void init_kv_ring(const void* smem, uint64_t* full, uint64_t* empty, int* s_bad) {
  if (threadIdx.x == 0) {
    if ((smem_addr(smem) & 1023) != 0) __trap();
    for (int st = 0; st < S; ++st) {
      mbar_init(&full[st], 128);
      mbar_init(&empty[st], 8);
      s_bad[st] = -1;
    }
    fence_barrier_init();
  }
  __syncthreads();
}

// The producer warpgroup's side of a ring of S stages that it fills with cp.async (tile 0 already
// issued; load_tile(it) issues tile it as one commit group), for consumer warpgroups that wait
// on full[stage] and arrive on empty[stage] when done with it. Tile it goes out as soon as its
// stage is free, before tile it - 1 has landed, so two tiles are in flight: waiting for that
// stage cannot block the consumers, since its previous tile, it - S, is released once they are
// done with it, which needs only tiles up to it - S + 1 — all signalled. Each landed tile's
// copies are fenced to the async proxy (the wgmmas read them) before its full barrier.
template <int S, typename Load>
__device__ __forceinline__ void produce_cp_async(int n_iter, uint64_t* full, uint64_t* empty, Load&& load_tile) {
  // With two stages, tile it's stage holds tile it - 2, released only once tile it - 1 is
  // signalled, which this loop does after the wait: a deadlock.
  static_assert(S >= 3, "produce_cp_async signals tile it - 1 after waiting for tile it's stage: S >= 3");
  for (int it = 1; it <= n_iter; ++it) {
    if (it < n_iter) {
      mbar_wait(&empty[it % S], ((it / S) & 1) ^ 1);  // a fresh barrier passes the first round
      load_tile(it);
      cp_async_wait<1>();  // tile it - 1 has landed
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async_smem();
    mbar_arrive(&full[(it - 1) % S]);
  }
}

// The same ring for consumers that release tile j only after waiting for tile j + 1 (the Hopper
// MLA kernel issues tile j + 1's S behind tile j's P·V): each tile is signalled as soon as its
// copies land, before the producer waits for the next stage. produce_cp_async signals tile
// j + 1 only after issuing tile j + 2, i.e. once tile j's stage is free again: with two stages
// and these consumers, a deadlock. The next tile still goes out as soon as its stage is free.
template <int S, typename Load>
__device__ __forceinline__ void produce_cp_async_in_order(int n_iter, uint64_t* full, uint64_t* empty, Load&& load_tile) {
  for (int it = 1; it <= n_iter; ++it) {
    cp_async_wait<0>();  // tile it - 1 has landed
    fence_proxy_async_smem();
    mbar_arrive(&full[(it - 1) % S]);
    if (it < n_iter) {
      const int st = it % S;
      mbar_wait(&empty[st], ((it / S) & 1) ^ 1);  // a fresh barrier passes the first round
      load_tile(it);
    }
  }
}

// ------------------------------------------------------------------ warpgroup control
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
// Barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Arrives on barrier `id` without waiting (the producer side of a bar.sync by other threads).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ------------------------------------------------------------------ FP8 wgmma instructions
// Accumulator layout (m64nN, f32): warp w of the warpgroup owns rows 16w .. 16w + 15; lane l
// holds, for each n8 block i, d[4i + 0..1] at row 16w + l/4, columns 8i + 2(l%4) + 0..1, and
// d[4i + 2..3] at row 16w + l/4 + 8, same columns (the mma.sync m16n8 layout, repeated).
// Output operand lists of the wgmma wrappers: one "+f" per accumulator register, d[0] up.
#define WC_WGMMA_F8(d, i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define WC_WGMMA_D16(d) WC_WGMMA_F8(d, 0), WC_WGMMA_F8(d, 8)
#define WC_WGMMA_D32(d) WC_WGMMA_D16(d), WC_WGMMA_F8(d, 16), WC_WGMMA_F8(d, 24)
#define WC_WGMMA_D64(d) WC_WGMMA_D32(d), WC_WGMMA_F8(d, 32), WC_WGMMA_F8(d, 40), WC_WGMMA_F8(d, 48), WC_WGMMA_F8(d, 56)
#define WC_WGMMA_D80(d) WC_WGMMA_D64(d), WC_WGMMA_F8(d, 64), WC_WGMMA_F8(d, 72)
#define WC_WGMMA_D96(d) WC_WGMMA_D80(d), WC_WGMMA_F8(d, 80), WC_WGMMA_F8(d, 88)
#define WC_WGMMA_D128(d) \
  WC_WGMMA_D96(d), WC_WGMMA_F8(d, 96), WC_WGMMA_F8(d, 104), WC_WGMMA_F8(d, 112), WC_WGMMA_F8(d, 120)

// d (+)= A · Bᵀ for one m64n128k32 step: A and B from shared-memory descriptors (K-major), d the
// 64 f32 accumulators of this thread; scale_d = 0 overwrites d instead of adding to it.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1;\n}\n"
      : WC_WGMMA_D64(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// d (+)= A · Bᵀ for one m64n256k32 step: A and B from shared-memory descriptors (K-major), d the
// 128 f32 accumulators of this thread; scale_d = 0 overwrites d instead of adding to it.
__device__ __forceinline__ void wgmma_m64n256k32_e4m3(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1;\n}\n"
      : WC_WGMMA_D128(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// d (+)= A · Bᵀ for one m64n192k32 step (FP8, as the n128 / n256 wrappers above): the 96 f32
// accumulators of this thread.
__device__ __forceinline__ void wgmma_m64n192k32_e4m3(float (&d)[96], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
      "}, %96, %97, p, 1, 1;\n}\n"
      : WC_WGMMA_D96(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// ... m64n160k32: the 80 f32 accumulators of this thread.
__device__ __forceinline__ void wgmma_m64n160k32_e4m3(float (&d)[80], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %82, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n160k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
      "}, %80, %81, p, 1, 1;\n}\n"
      : WC_WGMMA_D80(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

template <int N>
__device__ __forceinline__ void wgmma_e4m3(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(N == 128 || N == 160 || N == 192 || N == 256, "FP8 wgmma widths built: 128, 160, 192, 256");
  if constexpr (N == 128) wgmma_m64n128k32_e4m3(d, desc_a, desc_b, scale_d);
  else if constexpr (N == 160) wgmma_m64n160k32_e4m3(d, desc_a, desc_b, scale_d);
  else if constexpr (N == 192) wgmma_m64n192k32_e4m3(d, desc_a, desc_b, scale_d);
  else wgmma_m64n256k32_e4m3(d, desc_a, desc_b, scale_d);
}

// ------------------------------------------------------------------ 16-bit wgmma instructions
// bf16 / f16 inputs, f32 accumulators (the accumulator layout above); T picks the input type.
// "ss": A and B from K-major shared-memory descriptors (D = A · Bᵀ, B stored [n][k]).
// "rs": A from registers — per warp a 16 × 16 tile in mma.sync m16n8k16's A layout (a[0]: row
// l/4, k 2(l%4) + 0..1; a[1]: row + 8; a[2]: k + 8; a[3]: both) — and B from an MN-major
// descriptor (B stored [k][n]: imm-trans-b = 1). The tensor core reads the A registers until
// the wgmma retires: keep them alive (fence_operand_u32) past the wait.
// TRANS_B = 1: B MN-major instead (stored [k][n], imm-trans-b = 1) — P · V with P staged in
// shared memory.
template <typename T, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(TRANS_B == 0 || TRANS_B == 1, "imm-trans-b is 0 or 1");
#define WC_WGMMA_SS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "  \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "  \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"  \
      "}, %64, %65, p, 1, 1, 0, %67;\n}\n" \
      : WC_WGMMA_D64(d) \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_SS("bf16");
  else WC_WGMMA_SS("f16");
#undef WC_WGMMA_SS
}
template <typename T>
__device__ __forceinline__ void wgmma_m64n32k16_ss(float (&d)[16], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#define WC_WGMMA_SS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"  \
      "}, %16, %17, p, 1, 1, 0, 0;\n}\n" \
      : WC_WGMMA_D16(d) \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_SS("bf16");
  else WC_WGMMA_SS("f16");
#undef WC_WGMMA_SS
}
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#define WC_WGMMA_SS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"  \
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
      : WC_WGMMA_D32(d) \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_SS("bf16");
  else WC_WGMMA_SS("f16");
#undef WC_WGMMA_SS
}
template <typename T>
__device__ __forceinline__ void wgmma_m64n256k16_ss(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#define WC_WGMMA_SS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "  \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "  \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "  \
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "  \
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "  \
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "  \
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"  \
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n" \
      : WC_WGMMA_D128(d) \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_SS("bf16");
  else WC_WGMMA_SS("f16");
#undef WC_WGMMA_SS
}
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(N == 64 || N == 128 || N == 256, "16-bit ss wgmma widths built: 64, 128, 256");
  if constexpr (N == 64) wgmma_m64n64k16_ss<T>(d, desc_a, desc_b, scale_d);
  else if constexpr (N == 128) wgmma_m64n128k16_ss<T>(d, desc_a, desc_b, scale_d);
  else wgmma_m64n256k16_ss<T>(d, desc_a, desc_b, scale_d);
}
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
#define WC_WGMMA_RS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"  \
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
      : WC_WGMMA_D32(d) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_RS("bf16");
  else WC_WGMMA_RS("f16");
#undef WC_WGMMA_RS
}
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
#define WC_WGMMA_RS(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "  \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "  \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"  \
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
      : WC_WGMMA_D64(d) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same<T, __nv_bfloat16>::value) WC_WGMMA_RS("bf16");
  else WC_WGMMA_RS("f16");
#undef WC_WGMMA_RS
}
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  static_assert(N == 64 || N == 128, "16-bit rs wgmma widths built: 64, 128");
  if constexpr (N == 64) wgmma_m64n64k16_rs<T>(d, a, desc_b, scale_d);
  else wgmma_m64n128k16_rs<T>(d, a, desc_b, scale_d);
}

// ------------------------------------------------------------------ int8 wgmma instruction
// d (+)= A · Bᵀ for one m64n64k32 step with int32 accumulators (the accumulator layout above,
// integers): A u8 from registers — per warp a 16 × 32 tile in mma.sync m16n8k32's A layout
// (a[0]: row l/4, k 4(l%4) + 0..3; a[1]: row + 8; a[2]: k + 16; a[3]: both), which is what
// ldmatrix.x4 of the tile's four 8 × 16-byte quarters gives — and B s8 from a K-major
// descriptor (B stored [n][k]; 8-bit operands are K-major only). Exact: no saturation. The
// tensor core reads the A registers until the wgmma retires: keep them alive
// (fence_operand_u32) past the wait.
#define WC_WGMMA_I8(d, i) \
  "+r"(d[i]), "+r"(d[i + 1]), "+r"(d[i + 2]), "+r"(d[i + 3]), "+r"(d[i + 4]), "+r"(d[i + 5]), "+r"(d[i + 6]), "+r"(d[i + 7])
__device__ __forceinline__ void wgmma_m64n64k32_u8s8_rs(int32_t (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.u8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p;\n}\n"
      : WC_WGMMA_I8(d, 0), WC_WGMMA_I8(d, 8), WC_WGMMA_I8(d, 16), WC_WGMMA_I8(d, 24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}
#undef WC_WGMMA_I8
// Keeps the compiler from moving accesses of an int32 accumulator across wgmma fences and waits.
__device__ __forceinline__ void fence_operand_i32(int32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

}  // namespace sm90
}  // namespace wc
