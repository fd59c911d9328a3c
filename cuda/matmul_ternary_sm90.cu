// matmul_ternary_sm90.cu — the ternary GEMM's Hopper prefill tile (block_m 64, sm_90a): the
// int8 products on wgmma instead of mma.sync. Contract: warpcore/matmul_ternary.h; the same
// exact int32 sums and the same epilogue (ternary_store_out) as the mma.sync tiles, so the
// output is bit-identical to theirs.
//
// The product is computed transposed, outᵀ = V · Qᵀ, so that the weights are wgmma's A operand,
// which may come from registers: one ldmatrix.x4 of 16 packed rows × 32 bytes of k (per warp;
// 64 packed rows per warpgroup) gives the A fragments of all four planes at once, and one LOP
// per register masks plane pl's codes (code · 4^pl, a u8 ≤ 128), exactly as in the mma.sync
// kernel. B is the activation tile, s8, K-major, straight from shared memory. Per 32 bytes of k
// a consumer warpgroup issues 4 × wgmma.m64n64k32.s32.u8.s8 (one per plane, each into its own
// 32 int32 accumulators): 64 packed rows × 4 planes = 256 output columns × 64 tokens.
// Σ q · v = (Σ q · code · 4^pl) >> 2·pl − Σ q as before; the token sums Σ q come from the
// staged activation rows (dp4a, two 16-byte chunks per consumer thread and stage).
//
// CTA: 3 warpgroups. Warpgroup 0 is the producer (setmaxnreg.dec): cp.async of every stage
// (128 packed weight rows and 64 activation rows, 128 bytes of k each, 16-byte chunks XOR-
// swizzled into the 128-byte-swizzle layout the B descriptor reads), out-of-range rows and k
// zero-filled; sm90.cuh's produce_cp_async ring (full / empty mbarriers, two stages in flight).
// Warpgroups 1 and 2 consume (setmaxnreg.inc), 64 packed rows each, sharing the 64 tokens.
// The A fragments are double-buffered across the k32 steps: wait_group<1> before rewriting a
// set retires the wgmmas that read it (and, one step into a stage, the previous stage's last
// group, which releases that stage). The epilogue stages each consumer's exact sums in shared
// memory (over the ring, once both consumers' wgmmas have retired) and stores them with
// consecutive threads on consecutive output columns.
//
// Roofline (H200): 2·m·n·k int8 ops at 1979 TOPS dense; per stage 24 KB from L2 for
// 128 · 4 · 64 · 128 MACs (175 MAC/B, the mma.sync 128 × 128 tile's 102).
#include "matmul_ternary.cuh"
#include "sm90.cuh"

namespace wc {
namespace {

using namespace sm90;

struct TernarySm90 {
  static constexpr int kThreads = 384;
  static constexpr int BP = 128;  // packed weight rows per CTA (512 output columns), 64 per consumer
  static constexpr int BN = kTernarySm90BlockM;  // tokens per CTA
  static constexpr int BK = 128;  // bytes of k per stage: one 128-byte swizzle row
  static constexpr int kStages = 6;
  static constexpr int kWBytes = BP * BK;                 // 16 KB of packed weights
  static constexpr int kStageBytes = kWBytes + BN * BK;   // + 8 KB of activations
  static constexpr int kRingBytes = kStages * kStageBytes;
  // The epilogue's staged sums, per consumer int32 [BN tokens][kOutStride]: 4 planes × 64 packed
  // rows, padded so that a warp's stores (8 rows × 4 token pairs) hit 32 distinct banks.
  static constexpr int kOutStride = 4 * 64 + 4;
  static constexpr int kOutBytes = 2 * BN * kOutStride * 4;
  static_assert(kOutBytes <= kRingBytes, "the staged sums reuse the ring");
  static_assert(kStageBytes % 1024 == 0 && kWBytes % 1024 == 0, "stages and tiles 1024-byte aligned (swizzle atoms)");
  static constexpr int kBarOffset = kRingBytes;                            // full[S], empty[S]
  static constexpr int kRowSumOffset = kBarOffset + 2 * kStages * 8;       // int [BN]
  static constexpr int kSmem = kRowSumOffset + BN * 4;
};

template <typename OutT>
__global__ void __launch_bounds__(TernarySm90::kThreads, 1) matmul_ternary_sm90_kernel(const wc_matmul_ternary_params p) {
#if WC_SM90A
  using C = TernarySm90;
  constexpr int S = C::kStages;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::kBarOffset);
  uint64_t* empty = full + S;
  int* s_rowsum = reinterpret_cast<int*>(smem + C::kRowSumOffset);
  const int64_t prows = p.n / 4;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * C::BP, n0 = static_cast<int64_t>(blockIdx.y) * C::BN;
  const int n_iter = static_cast<int>((p.k + C::BK - 1) / C::BK);
  if (threadIdx.x == 0) {
    if ((smem_addr(smem) & 1023) != 0) __trap();
    for (int st = 0; st < S; ++st) {
      mbar_init(&full[st], 128);  // the producer's threads, each once its copies landed
      mbar_init(&empty[st], 8);   // lane 0 of each consumer warp
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (threadIdx.x < 128) {
    setmaxnreg_dec<56>();
    const uint8_t* q = reinterpret_cast<const uint8_t*>(p.q);
    // Stage it: rows 0 .. BP - 1 packed weights, then BN activation rows; chunk c of row r at
    // r · 128 + (c ^ r % 8) · 16 (128-byte swizzle).
    auto load_tile = [&](int it) {
      uint8_t* st = smem + (it % S) * C::kStageBytes;
      const int64_t k0 = static_cast<int64_t>(it) * C::BK;
      for (int i = threadIdx.x; i < (C::BP + C::BN) * 8; i += 128) {
        const int r = i / 8, c = i % 8;
        const int64_t kk = k0 + c * 16;
        bool ok;
        const uint8_t* src;
        if (r < C::BP) {
          ok = p0 + r < prows && kk < p.k;
          src = p.w + (p0 + r) * p.ldw + kk;
        } else {
          ok = n0 + (r - C::BP) < p.m && kk < p.k;
          src = q + (n0 + r - C::BP) * p.ldq + kk;
        }
        cp_async16(st + r * 128 + ((c ^ (r & 7)) * 16), ok ? src : p.w, ok);
      }
      cp_async_commit();
    };
    load_tile(0);
    produce_cp_async<S>(n_iter, full, empty, load_tile);
    return;
  }

  setmaxnreg_inc<224>();
  const int tid = threadIdx.x - 128;  // 0 .. 255 over both consumers
  const int cw = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  int32_t acc[4][32];    // [plane][m64n64 fragment]: packed rows × tokens
  uint32_t a[2][4][4];   // [k32 step parity][plane][register]: A fragments in flight
  int rsum = 0;          // Σ q over this thread's chunks of token tid / 4

  for (int it = 0; it < n_iter; ++it) {
    const int st = it % S;
    mbar_wait(&full[st], (it / S) & 1);
    const uint8_t* wt = smem + st * C::kStageBytes;
    const uint8_t* qt = wt + C::kWBytes;
    {  // token tid / 4's bytes 32 · (tid % 4) .. + 31 of this stage (their order does not matter)
      const uint4* row = reinterpret_cast<const uint4*>(qt + (tid / 4) * 128 + (tid % 4) * 32);
      const uint4 x = row[0], y = row[1];
      const uint32_t words[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) rsum = __dp4a(static_cast<int>(words[j]), 0x01010101, rsum);
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      // Retire all but the last group: the wgmmas that read set ks & 1 (two steps back) and,
      // one step into a stage, the previous stage's last group.
      wgmma_wait<1>();
#pragma unroll
      for (int pl = 0; pl < 4; ++pl)
#pragma unroll
        for (int j = 0; j < 4; ++j) fence_operand_u32(a[ks & 1][pl][j]);
      if (ks == 1 && it > 0 && lane == 0) mbar_arrive(&empty[(it - 1) % S]);
      // A: this warp's 16 packed rows, k bytes 32 ks .. 32 ks + 31 (ldmatrix quarters: rows
      // 0-7 / 8-15 × the two 16-byte chunks).
      const int r = cw * 64 + warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int c = 2 * ks + (lane >> 4);
      uint32_t raw[4];
      ldmatrix_x4(raw, wt + r * 128 + ((c ^ (r & 7)) * 16));
#pragma unroll
      for (int pl = 0; pl < 4; ++pl)
#pragma unroll
        for (int j = 0; j < 4; ++j) a[ks & 1][pl][j] = raw[j] & (0x03030303u << (2 * pl));
      wgmma_fence();
      const uint64_t desc_b = desc_k_major_sw128(qt) + ((32 * ks) >> 4);  // the k32 slice ks
#pragma unroll
      for (int pl = 0; pl < 4; ++pl) wgmma_m64n64k32_u8s8_rs(acc[pl], a[ks & 1][pl], desc_b, it > 0 || ks > 0);
      wgmma_commit();
    }
  }
  wgmma_wait<0>();
#pragma unroll
  for (int pl = 0; pl < 4; ++pl) {
#pragma unroll
    for (int i = 0; i < 32; ++i) fence_operand_i32(acc[pl][i]);
#pragma unroll
    for (int j = 0; j < 4; ++j) fence_operand_u32(a[0][pl][j]), fence_operand_u32(a[1][pl][j]);
  }

  // Token sums: the four threads of a token; then both consumers are past the ring (their
  // wgmmas retired) before its memory holds the staged sums.
  rsum += __shfl_xor_sync(0xffffffffu, rsum, 1);
  rsum += __shfl_xor_sync(0xffffffffu, rsum, 2);
  if (tid % 4 == 0) s_rowsum[tid / 4] = rsum;
  named_barrier_sync(1, 256);
  int* out_t = reinterpret_cast<int*>(smem) + cw * C::BN * C::kOutStride;
#pragma unroll
  for (int pl = 0; pl < 4; ++pl)
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = warp * 16 + lane / 4 + 8 * (e >> 1), tok = 8 * i + 2 * (lane % 4) + (e & 1);
        out_t[tok * C::kOutStride + pl * 64 + row] = (acc[pl][4 * i + e] >> (2 * pl)) - s_rowsum[tok];
      }
  named_barrier_sync(2 + cw, 128);
  // Consecutive threads on consecutive packed rows: each plane's 64 output columns of a token
  // are contiguous in out.
  for (int i = tid % 128; i < C::BN * 256; i += 128) {
    const int tok = i / 256, pl = (i / 64) % 4, row = i % 64;
    const int64_t pr = p0 + cw * 64 + row;
    if (n0 + tok < p.m && pr < prows)
      ternary_store_out<OutT>(p, n0 + tok, pl * prows + pr, out_t[tok * C::kOutStride + pl * 64 + row], p.q_scale[n0 + tok]);
  }
#else
  __trap();
#endif
}

template <typename OutT>
wc_status launch(const wc_matmul_ternary_params& p, cudaStream_t s) {
  using C = TernarySm90;
  auto kernel = matmul_ternary_sm90_kernel<OutT>;
  const int64_t gx = (p.n / 4 + C::BP - 1) / C::BP, gy = (p.m + C::BN - 1) / C::BN;
  if (gx > INT32_MAX || gy > 65535) return WC_ERR_INVALID_ARG;
  const cudaError_t e = allow_dynamic_smem(kernel, C::kSmem);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), C::kThreads, C::kSmem, s>>>(p);
  return launch_status();
}

}  // namespace

wc_status launch_matmul_ternary_sm90(const wc_matmul_ternary_params& p, cudaStream_t s) {
  bool hopper = false;
  if (const cudaError_t e = hopper_device(hopper); e != cudaSuccess) return static_cast<wc_status>(e);
  if (!hopper || p.k_splits > 1) return WC_ERR_UNSUPPORTED;  // sm_80 builds only a trapping stub
  WC_DISPATCH_DTYPE(p.out_dtype, OutT, { return launch<OutT>(p, s); });
}

}  // namespace wc
