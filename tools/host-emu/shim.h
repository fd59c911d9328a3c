// shim.h — host emulation of the CUDA execution model, for g++ builds of rewritten copies of
// cuda/*.cu (see prep.py). One OS thread per CUDA thread, one block at a time.
//   * __syncthreads: a block barrier; threads that exit leave it.
//   * Warp collectives (shuffles, ballot, reduce, match, __syncwarp, ldmatrix, mma.sync): every
//     lane publishes its operation and a per-thread sequence number, then meets the others at a
//     per-warp barrier. A partial mask, a partial warp, a lane that exited or took another path is
//     an error, not a silent result.
//   * Shared memory: the dynamic buffer is malloc'ed at the launch's exact size (ASan sees any
//     overrun) and static __shared__ arrays are re-poisoned for every block; both are filled with
//     0xFF (NaN in f32/f16/bf16, -1 in ints) so a read before a write shows up.
//   * cp.async: deferred to the cp.async.wait_group that retires its group (default), or copied
//     at issue with EMU_CP_EAGER=1; a kernel correct on the GPU passes both ways.
//   * mma.sync m16n8k16 (bf16/f16 -> f32) and ldmatrix x4 (.trans) follow the PTX ISA fragment
//     layouts; the products are summed in f64 (tensor-core rounding is not modelled).
//   * Hopper: mbarriers, TMA, wgmma and named barriers are in shim_sm90.h (included at the end).
// Errors are counted (emu::errors) and the first 20 printed; tests fail on a non-zero count.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <vector_functions.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include "thread_pool.h"

#undef __device__
#undef __global__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __grid_constant__
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__

// ------------------------------------------------------------------ failure reporting
namespace emu {
inline std::atomic<long> errors{0};
}  // namespace emu
#define EMU_FAIL(...)                                           \
  do {                                                          \
    if (::emu::errors.fetch_add(1) < 20) {                      \
      fprintf(stderr, "EMU ERROR %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                             \
      fprintf(stderr, "\n");                                    \
    }                                                           \
  } while (0)

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// ------------------------------------------------------------------ block and warp state
namespace emu {
constexpr uint8_t kPoison = 0xFF;

enum Op { OP_SHFL = 1, OP_VOTE, OP_SYNCWARP, OP_LDM, OP_LDMT, OP_MMA_BF16, OP_MMA_F16, OP_MMA_S8U8 };

struct Warp {
  explicit Warp(int n) : bar(n), lanes(n) {}
  std::barrier<> bar;
  int lanes;                // threads in this warp (< 32 only for the last warp of a block)
  int op[32];
  uint64_t seq[32];         // per-thread count of collectives entered
  uint32_t val[32][6];      // payload: shuffle value (2 words) or mma A (4) + B (2) registers
  const void* ptr[32];      // ldmatrix row addresses
};

struct Cluster;
struct Block {
  explicit Block(unsigned n) : bar(n), live(static_cast<int>(n)) {}
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  unsigned char* smem = nullptr;  // dynamic shared memory
  size_t smem_bytes = 0;
  std::atomic<int> and_false[3] = {0, 0, 0};  // __syncthreads_and: call k uses slot k % 3
  std::atomic<int> live;                      // threads that have not exited
  Cluster* cluster = nullptr;                 // the CTAs launched as one cluster (1 without clusters)
  unsigned rank = 0;                          // %cluster_ctarank
  void* sm90 = nullptr;                       // shim_sm90.h's state of this block (owned there)
  std::mutex statics_mu;                      // static __shared__ arrays, by declaration
  size_t static_bytes = 0;                    // their bytes (under statics_mu)
  std::map<const void*, std::unique_ptr<unsigned char, void (*)(void*)>> statics;
};
// A thread block cluster: barrier.cluster over all its threads; its CTAs by rank.
struct Cluster {
  explicit Cluster(ptrdiff_t threads) : bar(threads) {}
  std::barrier<> bar;
  std::vector<Block*> blocks;
};
// The calling thread's block. Blocks of one cluster (or of a cooperative grid) run at the same
// time, each thread knowing its own.
inline thread_local Block* block = nullptr;
inline thread_local Warp* my_warp = nullptr;
inline thread_local std::optional<std::barrier<>::arrival_token> t_cluster_token;  // barrier.cluster.arrive
inline thread_local uint64_t my_seq = 0;
inline thread_local uint64_t t_and_calls = 0;  // this thread's __syncthreads_and calls in the block

inline const bool cp_eager = [] {
  const char* e = getenv("EMU_CP_EAGER");
  return e != nullptr && strcmp(e, "0") != 0;
}();
inline long launches = 0;
// Stream capture (driver.cpp's cuStreamBeginCapture): while this thread captures
// `capture_stream`, what is queued on that stream (kernels, memsets, copies between device
// buffers, cuBLAS calls) is appended to `captured` instead of run; cuGraphLaunch runs the list in
// order. Work on other streams runs as usual, as on the GPU.
inline thread_local cudaStream_t capture_stream = nullptr;
inline thread_local std::vector<std::function<void()>>* captured = nullptr;
inline bool capturing(cudaStream_t s) { return captured != nullptr && s == capture_stream; }
// Each kernel's cudaFuncAttributeMaxDynamicSharedMemorySize (absent: the default, 48 KB for static
// and dynamic shared memory together), as the GPU checks a launch against it.
inline std::mutex smem_opt_in_mu;
inline std::map<const void*, size_t> smem_opt_in;
// The largest of them (the targets' summary lines).
inline size_t max_smem_attr() {
  std::lock_guard<std::mutex> lk(smem_opt_in_mu);
  size_t m = 0;
  for (const auto& [kernel, bytes] : smem_opt_in) m = std::max(m, bytes);
  return m;
}
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kOptInSmem = 232448;  // sm_90's opt-in maximum per block (227 KiB)
inline cudaError_t last_error = cudaSuccess;

inline unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline int lane() { return static_cast<int>(linear_tid() & 31); }

inline unsigned char* dyn_smem() { return block->smem; }

// Hooks of shim_sm90.h (mbarriers, warpgroups): per block, per starting and exiting thread.
void sm90_block_begin(Block& b, unsigned threads);
void sm90_thread_begin();
void sm90_thread_exit();
void sm90_block_end(Block& b);  // after every thread exited: no named barrier left half-arrived
void sm90_generic_write(const void* dst, size_t bytes);  // for the missing-proxy-fence check
void sm90_async_write(const void* dst, size_t bytes);    // cp.async into a stage a wgmma may still read

inline bool in_dyn_smem(const void* p, size_t bytes) {
  auto a = reinterpret_cast<const unsigned char*>(p);
  return block->smem != nullptr && a >= block->smem && a + bytes <= block->smem + block->smem_bytes;
}

// A static __shared__ array (prep.py rewrites the declaration into a reference to this): the
// calling block's copy of the array declared at `key`, allocated and poisoned on first use.
inline void* static_shared(const void* key, size_t n) {
  std::lock_guard<std::mutex> lk(block->statics_mu);
  auto it = block->statics.find(key);
  if (it == block->statics.end()) {
    void* p = nullptr;
    if (posix_memalign(&p, 128, n) != 0) abort();
    memset(p, kPoison, n);
    block->static_bytes += n;
    it = block->statics.emplace(key, std::unique_ptr<unsigned char, void (*)(void*)>(static_cast<unsigned char*>(p), free)).first;
  }
  return it->second.get();
}

// Enter a warp collective: check the mask, publish (op, sequence), meet the warp, check that all
// 32 lanes are in the same collective. The caller reads the other lanes' payloads, then leave().
inline Warp& enter(int op, unsigned mask) {
  Warp& w = *my_warp;
  if (mask != 0xffffffffu) EMU_FAIL("warp collective %d with partial mask %08x", op, mask);
  if (w.lanes != 32) EMU_FAIL("warp collective %d in a partial warp of %d lanes", op, w.lanes);
  const int l = lane();
  w.op[l] = op;
  w.seq[l] = ++my_seq;
  w.bar.arrive_and_wait();
  if (l == 0)
    for (int i = 1; i < w.lanes; ++i)
      if (w.seq[i] != my_seq || w.op[i] != op)
        EMU_FAIL("warp collective: lane %d at (op %d, #%llu), lane 0 at (op %d, #%llu) (exited or diverged)", i,
                 w.op[i], static_cast<unsigned long long>(w.seq[i]), op, static_cast<unsigned long long>(my_seq));
  return w;
}
inline void leave() { my_warp->bar.arrive_and_wait(); }

// Every lane deposits v (up to 8 bytes); all[i] is lane i's value.
template <typename T>
inline void exchange(unsigned mask, T v, T (&all)[32]) {
  static_assert(sizeof(T) <= 8, "shuffles of up to 64 bits");
  Warp& w = *my_warp;
  memcpy(w.val[lane()], &v, sizeof(T));
  enter(OP_SHFL, mask);
  for (int i = 0; i < 32; ++i) memcpy(&all[i], w.val[i], sizeof(T));
  leave();
}
}  // namespace emu

// ------------------------------------------------------------------ barriers and warp intrinsics
inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }
// Every thread of the block calls it in the same order (call k): a false predicate marks slot
// k % 3; after the barrier every thread reads it and clears slot (k + 2) % 3, last read in call
// k - 1 (before this barrier) and next written in call k + 2 (after the next one).
inline int __syncthreads_and(int pred) {
  const uint64_t k = emu::t_and_calls++;
  if (!pred) emu::block->and_false[k % 3].store(1);
  emu::block->bar.arrive_and_wait();
  const int all = emu::block->and_false[k % 3].load() == 0;
  emu::block->and_false[(k + 2) % 3].store(0);
  return all;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::enter(emu::OP_SYNCWARP, mask);
  emu::leave();
}

template <typename T> inline T __shfl_sync(unsigned m, T v, int src, int width = 32) {
  T all[32];
  emu::exchange(m, v, all);
  return all[(emu::lane() & ~(width - 1)) + (src & (width - 1))];
}
template <typename T> inline T __shfl_xor_sync(unsigned m, T v, int x, int width = 32) {
  T all[32];
  emu::exchange(m, v, all);
  const int l = emu::lane(), s = l ^ x;
  return (s & ~(width - 1)) > (l & ~(width - 1)) + width - 1 ? v : all[s];  // out of segment: own value
}
template <typename T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int width = 32) {
  T all[32];
  emu::exchange(m, v, all);
  const int l = emu::lane(), s = l - static_cast<int>(d);
  return s < (l & ~(width - 1)) ? v : all[s];
}
template <typename T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int width = 32) {
  T all[32];
  emu::exchange(m, v, all);
  const int l = emu::lane(), s = l + static_cast<int>(d);
  return s >= (l & ~(width - 1)) + width ? v : all[s];
}
inline unsigned __ballot_sync(unsigned m, int p) {
  int all[32];
  emu::exchange(m, p, all);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= (all[i] != 0 ? 1u : 0u) << i;
  return r;
}
inline int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
inline unsigned __reduce_max_sync(unsigned m, unsigned v) {
  unsigned all[32];
  emu::exchange(m, v, all);
  return *std::max_element(all, all + 32);
}
inline unsigned __reduce_min_sync(unsigned m, unsigned v) {
  unsigned all[32];
  emu::exchange(m, v, all);
  return *std::min_element(all, all + 32);
}
inline unsigned __match_any_sync(unsigned m, int v) {
  int all[32];
  emu::exchange(m, v, all);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= (all[i] == v ? 1u : 0u) << i;
  return r;
}

// ------------------------------------------------------------------ math, bits, atomics
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) {
  int cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  return cur;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  unsigned cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  return cur;
}
// Inter-block communication (a grid barrier of a cooperative launch): __threadfence is a
// sequentially consistent fence; __nanosleep, the back-off of a polling loop, sleeps the OS thread
// so the blocks it waits for get the cores, and ends the run as a deadlock once the thread has
// polled for 60 s (a barrier short of arrivals would otherwise hang the test).
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
namespace emu {
inline thread_local std::chrono::steady_clock::time_point t_started;  // when this CUDA thread began
}
inline void __nanosleep(unsigned) {
  if (std::chrono::steady_clock::now() - emu::t_started > std::chrono::seconds(60)) {
    fprintf(stderr, "EMU ERROR: deadlock: thread %u of block %u polled (__nanosleep) for 60 s\n", threadIdx.x, blockIdx.x);
    fflush(stderr);
    std::_Exit(3);
  }
  std::this_thread::sleep_for(std::chrono::microseconds(50));
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T max(T a, T b) { return a > b ? a : b; }
template <typename T> inline T min(T a, T b) { return a < b ? a : b; }

inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline int __float2int_rn(float f) { return std::isnan(f) ? 0 : static_cast<int>(std::nearbyintf(f)); }
inline float __frcp_rn(float x) { return 1.0f / x; }
// Four signed byte products of a and b, summed into c (wrapping).
inline int __dp4a(int a, int b, int c) {
  uint32_t acc = static_cast<uint32_t>(c);
  for (int i = 0; i < 4; ++i)
    acc += static_cast<uint32_t>(static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i)));
  return static_cast<int>(acc);
}
inline float __expf(float x) { return expf(x); }  // the GPU's ex2.approx is not modelled
inline float __fdividef(float a, float b) { return a / b; }  // the GPU's 2-ulp approximation is not modelled
namespace emu {
// moe_routing's approx_sigmoid (MUFU.EX2 + MUFU.RCP on the GPU, within 2^-20 of det_sigmoid, as
// the GPU test approx_sigmoid_is_within_its_budget checks): det_sigmoid moved by a pseudo-random
// amount (a hash of x) of up to 2^-20 - 2^-23 (2^-20 after rounding), so that the tests meet the
// pre-filter's tolerances with the GPU's worst case, not with an exact sigmoid.
inline float approx_sigmoid(float x, float exact) {
  if (std::isnan(x)) return x;
  uint32_t h;
  memcpy(&h, &x, 4);
  h *= 0x9E3779B1u;
  h ^= h >> 15;
  h *= 0x85EBCA77u;
  h ^= h >> 13;
  const double d = (static_cast<double>(h) / 4294967295.0 * 2.0 - 1.0) * (0x1p-20 - 0x1p-23);
  return static_cast<float>(std::min(1.0, std::max(0.0, static_cast<double>(exact) + d)));
}
}  // namespace emu
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }  // rsqrt.approx (2 ulp) is not modelled
// sin(pi x), cos(pi x) from the f64 functions, rounded once to f32 (the GPU's is within 1 ulp;
// sin(pi) etc. come out as ~1e-16 rather than 0).
inline void sincospif(float x, float* s, float* c) {
  const double a = 3.14159265358979323846 * static_cast<double>(x);
  *s = static_cast<float>(std::sin(a));
  *c = static_cast<float>(std::cos(a));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned sel = (s >> (4 * i)) & 0xF;
    unsigned b = (v >> (8 * (sel & 7))) & 0xFF;
    if (sel & 8) b = (b & 0x80) ? 0xFF : 0;  // sign-replicate mode
    r |= b << (8 * i);
  }
  return r;
}
inline size_t __cvta_generic_to_shared(const void* p) {
  if (!emu::in_dyn_smem(p, 1)) EMU_FAIL("cvta of %p outside dynamic shared memory", p);
  return static_cast<size_t>(reinterpret_cast<const unsigned char*>(p) - emu::block->smem);
}
// Device math that CUDA declares globally; rintf, fmaf, fminf / fmaxf, fmin / fmax, floor, ceil
// come from <math.h> (correctly rounded, round-to-nearest-even as on the GPU).
using std::isfinite;
using std::isinf;
using std::isnan;
inline void __trap() {
  EMU_FAIL("__trap() in thread %u of block %u", emu::linear_tid(), blockIdx.x);
  fflush(stderr);
  std::_Exit(4);
}

// ------------------------------------------------------------------ PTX: cp.async, ldmatrix, mma, st.global.v4
namespace emu {
struct Copy { void* dst; const void* src; bool valid; };
inline thread_local std::vector<std::vector<Copy>> t_cp_groups;  // committed groups, oldest first
inline thread_local std::vector<Copy> t_cp_open;                 // not yet committed

inline void cp_do(const Copy& c) {
  if (c.valid) memcpy(c.dst, c.src, 16);
  else memset(c.dst, 0, 16);
  sm90_generic_write(c.dst, 16);
}
inline void cp_async16(void* dst, const void* src, bool valid) {
  if (!in_dyn_smem(dst, 16) || (reinterpret_cast<uintptr_t>(dst) & 15)) EMU_FAIL("cp.async dst %p not 16B in smem", dst);
  if (valid && (reinterpret_cast<uintptr_t>(src) & 15)) EMU_FAIL("cp.async src %p misaligned", src);
  sm90_async_write(dst, 16);
  const Copy c{dst, src, valid};
  if (cp_eager) cp_do(c);
  else t_cp_open.push_back(c);
}
inline void cp_commit() {
  t_cp_groups.push_back(std::move(t_cp_open));
  t_cp_open.clear();
}
inline void cp_wait(int n) {
  while (static_cast<int>(t_cp_groups.size()) > n) {
    for (const Copy& c : t_cp_groups.front()) cp_do(c);
    t_cp_groups.erase(t_cp_groups.begin());
  }
}

inline void st_global_v4(void* dst, const uint32_t (&w)[4]) {
  if (reinterpret_cast<uintptr_t>(dst) & 15) EMU_FAIL("st.global.v4 to misaligned %p", dst);
  memcpy(dst, w, 16);
}

// ldmatrix m8n8 x4 b16. Lane 8*i + r gives the address of row r of matrix i. Without .trans,
// register i of lane l holds row l/4, elements 2(l%4), 2(l%4)+1 of matrix i; with .trans it
// holds (row 2(l%4), col l/4) and (row 2(l%4)+1, col l/4).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans) {
  Warp& w = *my_warp;
  const int l = lane();
  w.ptr[l] = p;
  if (!in_dyn_smem(p, 16) || (reinterpret_cast<uintptr_t>(p) & 15)) EMU_FAIL("ldmatrix row address %p not 16B in smem", p);
  enter(trans ? OP_LDMT : OP_LDM, 0xffffffffu);
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* row = static_cast<const uint16_t*>(w.ptr[8 * i + (l >> 2)]);
      lo = row[2 * (l & 3)];
      hi = row[2 * (l & 3) + 1];
    } else {
      const uint16_t* r0 = static_cast<const uint16_t*>(w.ptr[8 * i + 2 * (l & 3)]);
      const uint16_t* r1 = static_cast<const uint16_t*>(w.ptr[8 * i + 2 * (l & 3) + 1]);
      lo = r0[l >> 2];
      hi = r1[l >> 2];
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  leave();
}

// mma.sync m16n8k16 row.col, f32 accumulators. PTX ISA fragments (g = lane/4, t = lane%4):
//   A (16x16): reg0 = (g, 2t..2t+1), reg1 = (g+8, 2t..), reg2 = (g, 2t+8..), reg3 = (g+8, 2t+8..)
//   B (16x8):  reg0 = (k = 2t..2t+1, n = g), reg1 = (k = 2t+8.., n = g)
//   C (16x8):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
inline float b16_to_float(uint16_t h, bool bf16) {
  if (bf16) return __uint_as_float(static_cast<uint32_t>(h) << 16);
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}
inline float mma_a(const Warp& w, int row, int k, bool bf16) {
  const int l = (row & 7) * 4 + ((k & 7) >> 1);
  const uint32_t v = w.val[l][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
  return b16_to_float(static_cast<uint16_t>((k & 1) ? v >> 16 : v), bf16);
}
inline float mma_b(const Warp& w, int k, int n, bool bf16) {
  const int l = n * 4 + ((k & 7) >> 1);
  const uint32_t v = w.val[l][4 + (k >= 8 ? 1 : 0)];
  return b16_to_float(static_cast<uint16_t>((k & 1) ? v >> 16 : v), bf16);
}
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16) {
  Warp& w = *my_warp;
  const int l = lane();
  for (int i = 0; i < 4; ++i) w.val[l][i] = a[i];
  w.val[l][4] = b0;
  w.val[l][5] = b1;
  enter(bf16 ? OP_MMA_BF16 : OP_MMA_F16, 0xffffffffu);
  const int g = l >> 2, t = l & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    double acc = 0.0;
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(mma_a(w, row, k, bf16)) * mma_b(w, k, col, bf16);
    c[e] = static_cast<float>(c[e] + acc);
  }
  leave();
}

// mma.sync m16n8k32 row.col, s8 (A) x u8 (B) -> s32, wrapping. PTX ISA fragments:
//   A (16x32): reg0 = (g, 4t..4t+3), reg1 = (g+8, 4t..), reg2 = (g, 16+4t..), reg3 = (g+8, 16+4t..)
//   B (32x8):  reg0 = (k = 4t..4t+3, n = g), reg1 = (k = 16+4t.., n = g); byte i holds k + i
//   C (16x8):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
inline void mma_s8u8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Warp& w = *my_warp;
  const int l = lane();
  for (int i = 0; i < 4; ++i) w.val[l][i] = a[i];
  w.val[l][4] = b0;
  w.val[l][5] = b1;
  enter(OP_MMA_S8U8, 0xffffffffu);
  const int g = l >> 2, t = l & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    uint32_t acc = static_cast<uint32_t>(c[e]);
    for (int k = 0; k < 32; ++k) {
      const uint32_t ra = w.val[(row & 7) * 4 + ((k & 15) >> 2)][(row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0)];
      const uint32_t rb = w.val[col * 4 + ((k & 15) >> 2)][4 + (k >= 16 ? 1 : 0)];
      const int av = static_cast<int8_t>(ra >> (8 * (k & 3)));
      const int bv = static_cast<uint8_t>(rb >> (8 * (k & 3)));
      acc += static_cast<uint32_t>(av * bv);
    }
    c[e] = static_cast<int>(acc);
  }
  leave();
}
}  // namespace emu

// ------------------------------------------------------------------ runtime API and launches
template <typename K>
inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > emu::kOptInSmem) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(emu::smem_opt_in_mu);
  emu::smem_opt_in[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}
// The emulated device's compute capability: EMU_CC (80, 86, 90, ...), 90 (the H200) when unset.
inline int emu_cc() {
  const char* env = getenv("EMU_CC");
  return env != nullptr ? atoi(env) : 90;
}
// The emulated device's SM count: EMU_SMS, 4 when unset (a cooperative grid of SMs × CTAs per SM
// runs as that many OS threads per CTA at once).
inline int emu_sms() {
  const char* env = getenv("EMU_SMS");
  return env != nullptr ? std::max(1, atoi(env)) : 4;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  if (a == cudaDevAttrComputeCapabilityMajor) *v = emu_cc() / 10;
  else if (a == cudaDevAttrComputeCapabilityMinor) *v = emu_cc() % 10;
  else if (a == cudaDevAttrMultiProcessorCount) *v = emu_sms();
  else if (a == cudaDevAttrCooperativeLaunch) *v = 1;
  else if (a == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = emu_cc() == 90 ? 232448 : emu_cc() == 80 ? 166912 : 101376;
  else return cudaErrorInvalidValue;
  return cudaSuccess;
}
// Static __shared__ sizes are not tracked: sharedSizeBytes is 0 (the build's ptxas report has
// the real figure), registers likewise.
template <typename K>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, K) {
  *a = cudaFuncAttributes{};
  a->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
// Shared memory per SM of the emulated device (228 KiB on sm_90, 164 on sm_80, 100 elsewhere,
// 1 KiB reserved per CTA), 2048 threads and 32 CTAs; registers are not modelled (the build's
// ptxas report has them).
template <typename K>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int threads, size_t smem) {
  const size_t per_sm = emu_cc() == 90 ? 233472 : emu_cc() == 80 ? 167936 : 102400;
  const size_t by_smem = per_sm / (smem + 1024);
  *n = static_cast<int>(std::min<size_t>({by_smem, static_cast<size_t>(2048 / threads), 32}));
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  if (emu::capturing(s)) emu::captured->push_back([=] { memset(p, v, n); });
  else memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}

namespace emu {
// Runs `blocks` (linear block indices, consecutive in x) at the same time: one OS thread per CUDA
// thread (from the pool), clusters of `cluster` consecutive blocks sharing a barrier.cluster and
// each other's shared memory (shim_sm90.h).
template <typename Params, typename K>
void run_together(K kernel, Params& params, dim3 grid, dim3 blk, size_t smem, unsigned first, unsigned count,
                  unsigned cluster, size_t opt_in) {
  const unsigned n = blk.x * blk.y * blk.z;
  std::vector<std::unique_ptr<Block>> blocks;
  std::vector<std::unique_ptr<Cluster>> clusters;
  for (unsigned i = 0; i < count; ++i) {
    auto b = std::make_unique<Block>(n);
    for (unsigned w = 0; w < (n + 31) / 32; ++w) b->warps.push_back(std::make_unique<Warp>(std::min(32u, n - 32 * w)));
    b->smem_bytes = smem;
    if (smem) {  // 1024-byte aligned, as the 128B-swizzle atoms of TMA and wgmma need
      void* p = nullptr;
      if (posix_memalign(&p, 1024, smem) != 0) abort();
      b->smem = static_cast<unsigned char*>(p);
      memset(b->smem, kPoison, smem);
    }
    if (i % cluster == 0) clusters.push_back(std::make_unique<Cluster>(static_cast<ptrdiff_t>(n) * cluster));
    b->cluster = clusters.back().get();
    b->rank = i % cluster;
    b->cluster->blocks.push_back(b.get());
    sm90_block_begin(*b, n);
    blocks.push_back(std::move(b));
  }
  std::vector<std::function<void()>> ts;
  ts.reserve(size_t{n} * count);
  for (unsigned i = 0; i < count; ++i) {
    const unsigned lin = first + i;
    const dim3 bid(lin % grid.x, (lin / grid.x) % grid.y, lin / (grid.x * grid.y));
    Block* b = blocks[i].get();
    for (unsigned t = 0; t < n; ++t)
      ts.emplace_back([&, b, t, bid] {
        // A pooled OS thread starts each CUDA thread with every thread_local reset.
        t_started = std::chrono::steady_clock::now();
        threadIdx = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
        blockIdx = bid;
        block = b;
        my_warp = b->warps[t / 32].get();
        my_seq = 0;
        t_and_calls = 0;
        t_cp_groups.clear();
        t_cp_open.clear();
        t_cluster_token.reset();
        sm90_thread_begin();
        std::apply(kernel, params);
        // Copies still in flight at exit land eventually; the kernel must not depend on them.
        cp_commit();
        cp_wait(0);
        sm90_thread_exit();
        if (t_cluster_token) EMU_FAIL("thread %u of block %u exits between barrier.cluster.arrive and wait", t, bid.x);
        // An exited thread no longer takes part in barriers.
        --b->live;
        my_warp->bar.arrive_and_drop();
        b->bar.arrive_and_drop();
        (void)b->cluster->bar.arrive_and_drop();
      });
  }
  thread_pool().run_all(ts);
  for (auto& b : blocks) {
    // Without the opt-in, static and dynamic shared memory share the default 48 KB. The GPU counts
    // every static declaration of the kernel, reached or not; here only those the block reached
    // (a lower bound). With the opt-in the GPU bounds attribute + static at the device maximum,
    // which launchers size from cudaFuncGetAttributes' static bytes: the shim reports those as
    // 0 (it learns them only by running), so that bound is not checked here.
    if (opt_in == 0 && smem + b->static_bytes > kDefaultSmem)
      EMU_FAIL("%zu B of static + %zu B of dynamic shared memory: above the %zu B a launch may use without "
               "cudaFuncAttributeMaxDynamicSharedMemorySize", b->static_bytes, smem, kDefaultSmem);
    sm90_block_end(*b);
    free(b->smem);
  }
}

inline std::mutex one_at_a_time;  // launch_with's: one kernel runs at a time, whatever kernel

// kernel<<<grid, block, smem, stream>>>(args) as prep.py rewrites it, and cudaLaunchKernelEx:
// blocks one after another, or `cluster` at a time (thread block clusters along x), or the whole
// grid at once (`cooperative`: co-resident blocks, as a grid-wide barrier needs).
template <typename... P, typename... A>
cudaError_t launch_with(cudaStream_t stream, void (*kernel)(P...), dim3 grid, dim3 blk, size_t smem, unsigned cluster,
                        bool cooperative, A&&... args) {
  // One launch at a time: gridDim / blockDim, the error state and the thread pool are
  // process-wide (the Rust tests run through driver.cpp may launch from several threads). One
  // mutex for every kernel: a function-local static here would be one per template instance, so
  // two different kernels could run at once (2026-12-03: bad_function_call in the pool when
  // two test threads launched different kernels together).
  std::unique_lock<std::mutex> lock(one_at_a_time);
  ++launches;
  const unsigned n = blk.x * blk.y * blk.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || n == 0 || n > 1024 ||
      blk.z > 64 || cluster == 0 || cluster > 8 || grid.x % cluster != 0 || (cluster > 1 && cooperative)) {
    last_error = cudaErrorInvalidConfiguration;
    return last_error;
  }
  // Dynamic shared memory above the kernel's attribute (48 KB unless raised) fails the launch.
  size_t opt_in = 0;
  {
    std::lock_guard<std::mutex> lk(smem_opt_in_mu);
    const auto it = smem_opt_in.find(reinterpret_cast<const void*>(kernel));
    if (it != smem_opt_in.end()) opt_in = it->second;
  }
  if (smem > (opt_in != 0 ? opt_in : kDefaultSmem)) {
    last_error = cudaErrorInvalidValue;
    return last_error;
  }
  // EMU_SKIP_KERNELS=1: validated, counted, not run (a dry run of the host code around the
  // kernels, e.g. every benchmark of `warpcore bench`; results are garbage).
  static const bool skip = getenv("EMU_SKIP_KERNELS") != nullptr;
  std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(args)...);
  // The kernel's run, with its arguments as they are now (a graph replays those, as CUDA's
  // kernel nodes keep the launch's argument values).
  auto run = [=]() mutable {
    if (skip) return;
    gridDim = grid;
    blockDim = blk;
    const unsigned total = grid.x * grid.y * grid.z;
    const unsigned together = cooperative ? total : cluster;
    for (unsigned first = 0; first < total; first += together)
      run_together(kernel, params, grid, blk, smem, first, together, cluster, opt_in);
  };
  if (capturing(stream)) {
    captured->push_back([run]() mutable {
      std::lock_guard<std::mutex> replay_lock(one_at_a_time);
      ++launches;
      run();
    });
    return cudaSuccess;
  }
  run();
  return cudaSuccess;
}
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 blk, size_t smem, A&&... args) {
  launch_with(nullptr, kernel, grid, blk, smem, 1, false, std::forward<A>(args)...);
}
template <typename... P, typename... A>
void launch_on(cudaStream_t stream, void (*kernel)(P...), dim3 grid, dim3 blk, size_t smem, A&&... args) {
  launch_with(stream, kernel, grid, blk, smem, 1, false, std::forward<A>(args)...);
}
}  // namespace emu

// cudaLaunchKernelEx (cuda_runtime.h's typed form): the attributes emulated are a cluster
// dimension (x only), cooperative, and programmatic stream serialisation (a no-op: a stream's
// kernels run one after the other here, so griddepcontrol.wait has nothing to wait for); others
// are refused.
template <typename... P, typename... A>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*kernel)(P...), A&&... args) {
  unsigned cluster = 1;
  bool cooperative = false;
  for (unsigned i = 0; i < cfg->numAttrs; ++i) {
    const cudaLaunchAttribute& a = cfg->attrs[i];
    if (a.id == cudaLaunchAttributeClusterDimension) {
      if (a.val.clusterDim.y != 1 || a.val.clusterDim.z != 1) return cudaErrorInvalidValue;
      cluster = a.val.clusterDim.x;
    } else if (a.id == cudaLaunchAttributeCooperative) {
      cooperative = a.val.cooperative != 0;
    } else if (a.id != cudaLaunchAttributeProgrammaticStreamSerialization) {
      return cudaErrorInvalidValue;
    }
  }
  if (cooperative) {  // every block must be co-resident
    int per_sm = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, cfg->blockDim.x * cfg->blockDim.y * cfg->blockDim.z,
                                                  cfg->dynamicSmemBytes);
    if (static_cast<long>(cfg->gridDim.x) * cfg->gridDim.y * cfg->gridDim.z > static_cast<long>(per_sm) * emu_sms())
      return cudaErrorCooperativeLaunchTooLarge;
  }
  return emu::launch_with(cfg->stream, kernel, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes, cluster, cooperative,
                          std::forward<A>(args)...);
}
// Clusters of the configuration's size that fit at once: whole clusters of the SMs' CTA slots.
template <typename K>
inline cudaError_t cudaOccupancyMaxActiveClusters(int* n, K kernel, const cudaLaunchConfig_t* cfg) {
  unsigned cluster = 1;
  for (unsigned i = 0; i < cfg->numAttrs; ++i)
    if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) cluster = cfg->attrs[i].val.clusterDim.x;
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, cfg->blockDim.x * cfg->blockDim.y * cfg->blockDim.z,
                                                cfg->dynamicSmemBytes);
  *n = per_sm * emu_sms() / static_cast<int>(cluster);
  return cudaSuccess;
}

#include "shim_sm90.h"
