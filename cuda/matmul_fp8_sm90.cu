// matmul_fp8_sm90.cu — the Hopper FP8 GEMM: wgmma (QGMMA) on TMA-loaded, 128B-swizzled tiles,
// a multi-stage mbarrier pipeline, producer/consumer warp specialisation and a persistent
// tile scheduler. sm_90a only (other targets get a trapping stub; the host never calls it
// there: ops/matmul_fp8/ dispatches on the compute capability).
//
// Contract: wc_matmul_fp8_params (warpcore/matmul_fp8.h): D = A · Bᵀ, A [m, k] and B [n, k] e4m3,
// K-major, rows 16-byte aligned (TMA); n % 128 == 0, k % 128 == 0, any m (TMA zero-fills
// the rows past m; the epilogue does not store them). block_n need not divide n: the last
// n-tile's columns past n multiply B's zero-filled rows (or, grouped, the next group's) and are
// not stored. bf16 operands (in_dtype): the same
// byte-level pipeline (a stage is 128 bytes = 64 k; TMA zero-fills k past the end and B's rows
// past the stacked b), 4 × wgmma m64nBNk16 bf16 per stage, one f32 accumulator over all of k
// (kFast: bf16 products are exact and the sums f32), no scales; n and k multiples of 8 (the
// columns past n are not stored). Grouped: B [groups · n, k]; a tile's
// rows past its group's end are the next group's (loaded, not stored). tma_a / tma_b are built by the host
// (cuTensorMapEncodeTiled: uint8, dims {k, rows}, box {128, block_m | block_n}, 128B swizzle)
// and reach the kernel inside the __grid_constant__ params.
//
// Structure (one CTA per SM, persistent: CTA c takes tiles c, c + gridDim.x, ...):
//   warpgroup 0    producer. setmaxnreg.dec to 40; one thread waits for a free stage (empty
//                  barrier), arms the full barrier with the stage's bytes and issues the two
//                  TMA loads (A: block_m × 128 bytes, B: block_n × 128 bytes).
//   warpgroups 1.. consumers, one per 64 rows of the tile (block_m / 64 of them); setmaxnreg.inc
//                  to 232 when there are two. Per stage: wait full, 4 × wgmma m64nBNk32
//                  (k = 128 = one swizzle row), commit; then release the stage (empty arrive
//                  by lane 0 of each warp, so the empty barriers count 4 per consumer).
//   accumulation   Hopper's FP8 wgmma adds into its accumulator keeping ~13 mantissa bits
//                  (truncating), so over long k the error grows with the number of k32 steps.
//                  kPromote / kBlock: each k-step's (k = 128) wgmma result is waited for and
//                  added into f32 registers, fin += acc (per tensor / per row: scales in the
//                  epilogue) or fin += (sa[row, kb] · sb[n-block, kb]) · acc (block scales) —
//                  DeepGEMM's promotion, cuBLASLt's default "2x accumulation". The two
//                  consumers' wgmma streams interleave on the tensor core, which hides the
//                  promotion FMAs. kFast (fast_accum = 1): one accumulator over all of k
//                  (wait_group 1 keeps a k-step in flight), 128-column tiles grow to 256.
//   epilogue       per consumer, in 32-column chunks: fragments · scales + bias in registers
//                  (ChunkFactors, matmul_fp8.cuh: the row scales load at the tile's start, the
//                  first chunk's column factors before the last wait, each next chunk's during
//                  the current one)
//                  -> padded f32 staging in shared memory (conflict-free float2 stores) ->
//                  named barrier -> store_tile: residual, one rounding, 16-byte coalesced
//                  stores. The producer keeps loading the next tile's stages meanwhile.
//                  TMA store (TS, p.tma_store): the rounded bf16 values go into 128B-swizzled
//                  64 × 64 boxes (two per consumer, alternating), each stored by one TMA
//                  (tma_d) that completes while the consumers go on to the next tile.
//   clusters       (CM = 2, 128-row tiles) a pair of CTAs takes m-tiles 2u, 2u + 1 of one n-tile
//                  and shares its B tile: each CTA's producer loads half of B by TMA multicast
//                  into both CTAs' stage (and its own A); each full barrier expects A plus all of
//                  B; the empty barriers count the consumer warps of both CTAs, which release a
//                  stage in their own CTA and in the peer's (mbar_arrive_cluster). A cluster
//                  barrier after the barrier setup and one before exit. Units (tiles or pairs)
//                  are scheduled per cluster: cluster c takes units c, c + clusters, ...
//   split-k        (p.k_splits = s >= 2; one GEMM, no pairs, no TMA store) unit u is k-slice u % s of
//                  tile u / s (k_slice_start, matmul_fp8.cuh); its epilogue stores the raw f32 sums
//                  to workspace slice u % s (store_partial), and matmul_fp8_split_k_reduce, launched
//                  behind it as a programmatic dependent, sums the slices and applies the rest
//                  (store_tile). For decode-sized problems whose tiles leave most SMs idle. The
//                  reduction lives in matmul_fp8_sm80.cu, built for every target: the mma.sync
//                  kernel's split-k needs it on GPUs this file has no code for.
// Stage and phase bookkeeping: producer and consumers walk the same (tile, k-step) sequence;
// stage s = step % stages and phase bit flips each time s wraps; consumers wait full[s] with
// the phase bit, the producer waits empty[s] with its complement.
//
// Tile configurations (block_m, block_n, accumulation) built here — the host planner
// (ops/matmul_fp8/plan.rs, plan_sm90) picks one per shape:
//   fast: (128, 256) (128, 128) (64, 128); promote: (128, 192) (128, 160) (128, 128) (64, 128)
//   — 192 columns: 96 + 96 accumulators, the widest promoted tile that fits 232 registers;
//   block: (128, 160) (128, 128) (64, 128) — a 160-column tile spans two of B's 128-row scale
//   blocks, each column promoted with its own (192 spilled);
//   bf16 (fast, no pairs): (128, 256) (128, 128) (64, 128); the e4m3 128-row ones with bf16 out
//   also with the TMA-store epilogue (tma_store = 1: no residual, not grouped; not 160: whole
//   64-column boxes)
//   Only with WC_FP8_TUNING (the `matmul-fp8-tuning` feature; build.rs defines it): the tiles the
//   planner does not pick until an H200 run has timed them (UNMEASURED in plan.rs: promote
//   (128, 192) (128, 160), block (128, 160)) and the TMA-store epilogue — 22 of the file's 50
//   kernels, about 40 % of its compile time, which `warpcore bench --tune` times. Without it
//   they return WC_ERR_UNSUPPORTED (the host refuses them first: check_sm90_tile).
// Shared memory: stages × (block_m + block_n) × 128 B + staging (64 × 40 floats per consumer;
//   TMA store: two 8 KB boxes): 128×256: 4 stages (212 KB; 224 KB); 128×192: 5 (220 KB; TMA
//   store: 4, 192 KB); 128×160: 5 (200 KB); 128×128: 6 (212; 224 KB);
//   64×128: 8 (202 KB). Registers: 168 at
//   launch (384 threads, 1 CTA/SM) then 40 / 232 after setmaxnreg; 64-row tiles: 256 threads.
#include "matmul_fp8.cuh"
#include "sm90.cuh"

namespace wc {
namespace {

// How the k-steps are accumulated (template: it changes the registers).
constexpr int kFast = 0;     // the wgmma accumulator runs over all of k; scales in the epilogue
constexpr int kPromote = 1;  // each k-step's wgmma result is added into f32 registers
constexpr int kBlock = 2;    // ... multiplied by the k-block's scales (block_scaled)

template <int BM, int BN, int ACC, int CM, bool TS>
struct Sm90Tile {
  static constexpr int kConsumers = BM / 64;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kStageA = BM * kStageBytesK;  // bytes
  static constexpr int kStageB = BN * kStageBytesK;
  static constexpr int kSliceB = kStageB / CM;     // the part of B each CTA of a cluster loads
  static constexpr int kStage = kStageA + kStageB;
  static constexpr int kEpiCols = 32;
  static constexpr int kEpiPitch = kEpiCols + 8;  // floats: rows 8 banks apart
  // TS (TMA store): per consumer two bf16 buffers of 64 rows × 64 columns (one 128B-swizzled
  // TMA box each, 1024-byte aligned); otherwise the padded f32 staging of a 32-column chunk.
  static constexpr int kStoreBox = 64 * 128;
  static constexpr int kEpi = TS ? kConsumers * 2 * kStoreBox : kConsumers * 64 * kEpiPitch * 4;
  static constexpr int kSmemMax = 227 * 1024;
  static constexpr int kFit = (kSmemMax - kEpi - 256) / kStage;
  static constexpr int kStages = kFit < 8 ? kFit : 8;
  static constexpr int kSmem = kStages * kStage + kEpi + 2 * kStages * 8;
  static_assert(BM == 64 || BM == 128, "one or two consumer warpgroups");
  static_assert(BN == 128 || BN == 160 || BN == 192 || BN == 256, "wgmma widths built");
  static_assert(ACC == kFast || BN <= 192, "promotion keeps two accumulator sets: at most 192 columns");
  // A tile starts at a multiple of BN: with BN 160 it reaches into at most two of B's 128-row
  // scale blocks (the first ends at least 32 columns in, and the rest is at most 128). 192
  // would too, but its second scale and selects made ptxas spill.
  static_assert(ACC != kBlock || BN == 128 || BN == 160, "block scales: 128 or 160 columns");
  static_assert(kStages >= 3 && kSmem <= kSmemMax, "pipeline depth");
  static_assert(kStageA % 1024 == 0 && kSliceB % 1024 == 0, "tiles stay 1024-byte aligned (swizzle atoms)");
  static_assert(CM == 1 || (CM == 2 && BM == 128), "clusters of two 128-row tiles");
  static_assert(!TS || BN % 64 == 0, "whole 64-column store boxes");
};

template <int BM, int BN, int ACC, int CM, bool TS, typename InT, typename OutT>
__global__ void __launch_bounds__(Sm90Tile<BM, BN, ACC, CM, TS>::kThreads, 1)
matmul_fp8_sm90_kernel(const __grid_constant__ wc_matmul_fp8_params p) {
#if WC_SM90A
  using C = Sm90Tile<BM, BN, ACC, CM, TS>;
  constexpr bool kPromotes = ACC != kFast;
  constexpr bool kFp8 = kScaled<InT>;
  static_assert(!TS || (kFp8 && sizeof(OutT) == 2), "TMA store: e4m3 operands, bf16 out");
  static_assert(kFp8 || (ACC == kFast && CM == 1), "bf16: one accumulator, no pairs");
  using namespace sm90;
  constexpr int S = C::kStages;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* stage_a = smem;
  uint8_t* stage_b = smem + S * C::kStageA;
  float* staging = reinterpret_cast<float*>(smem + S * C::kStage);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + S * C::kStage + C::kEpi);
  uint64_t* empty = full + S;

  // The grid's units are cluster tiles: CM m-tiles side by side (same n-tile); CTA `rank` of a
  // cluster takes m-tile CM · unit_m + rank. Cluster c walks units c, c + clusters, ... (TileWalk:
  // group by group when grouped).
  const int64_t k_steps = k_steps_of<InT>(p);
  const int wg = threadIdx.x / 128;
  // %cluster_ctarank of a (CM, 1, 1) cluster: blockIdx.x % CM (cheaper for ptxas to keep).
  const uint32_t rank = blockIdx.x % CM;
  const int32_t first_unit = blockIdx.x / CM, unit_stride = gridDim.x / CM;
  const int32_t splits = k_splits_of(p);  // split-k: unit u is k-slice u % splits of tile u / splits

  if (threadIdx.x == 0) {
    if ((smem_addr(smem) & 1023) != 0) __trap();  // swizzle atoms need 1024-byte alignment
#pragma unroll
    for (int s = 0; s < S; ++s) {
      mbar_init(&full[s], 1);                       // the producer's arrive.expect_tx
      mbar_init(&empty[s], 4 * C::kConsumers * CM);  // lane 0 of every consumer warp of the cluster
    }
    fence_barrier_init();
    prefetch_tensor_map(&p.tma_a);
    prefetch_tensor_map(&p.tma_b);
    if constexpr (TS) prefetch_tensor_map(&p.tma_d);
  }
  // With clusters, the peers' barriers must be initialised before anyone multicasts into them.
  if constexpr (CM > 1) cluster_sync();
  else __syncthreads();
  // Split-k: the reduction, launched behind this kernel as a programmatic dependent, may be
  // dispatched from now on (it waits for this grid's completion before reading anything).
  // Every thread signals, as CUTLASS does: a CTA counts once all of its threads have.
  if (splits > 1) grid_dependents_launch();

  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    if constexpr (C::kConsumers == 2) setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      int s = 0;
      uint32_t phase = 0;
      TileWalk walk(p, CM);
      Tile t;
      for (int32_t u = first_unit; walk.seek(u / splits, rank, t); u += unit_stride) {
        const int32_t row_a = static_cast<int32_t>(t.m0);
        const int32_t row_b = static_cast<int32_t>(t.b0 + rank * (BN / CM));
        const int32_t slice = u % splits;
        const int64_t kb_end = k_slice_start(k_steps, splits, slice + 1);
        for (int64_t kb = k_slice_start(k_steps, splits, slice); kb < kb_end; ++kb) {
          // The stage is free in every CTA of the cluster (the empty barrier counts them all):
          // this CTA's slice of B lands in all of them.
          mbar_wait(&empty[s], phase ^ 1);
          mbar_arrive_expect_tx(&full[s], C::kStage);  // A, and B whole: CM slices from CM CTAs
          const int32_t k0 = static_cast<int32_t>(kb * kStageBytesK);  // bytes: the maps are uint8
          tma_load_2d(stage_a + s * C::kStageA, &p.tma_a, &full[s], k0, row_a);
          uint8_t* slice = stage_b + s * C::kStageB + rank * C::kSliceB;
          if constexpr (CM == 1) tma_load_2d(slice, &p.tma_b, &full[s], k0, row_b);
          else tma_load_2d_multicast(slice, &p.tma_b, &full[s], k0, row_b, (1u << CM) - 1);
          if (++s == S) {
            s = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    // ---------------------------------------------------------------- consumers
    if constexpr (C::kConsumers == 2) setmaxnreg_inc<232>();
    const int cw = wg - 1;  // rows [64 cw, 64 cw + 64) of each tile
    const int tid = threadIdx.x & 127, warp = tid >> 5, lane = tid & 31;
    const int r0 = warp * 16 + (lane >> 2);  // this thread's rows: r0 and r0 + 8
    float* stage = staging + cw * 64 * C::kEpiPitch;
    uint8_t* boxes = smem + S * C::kStage + cw * 2 * C::kStoreBox;  // TS: this consumer's two store boxes
    uint32_t box_seq = 0;  // TS: boxes filled so far (across tiles: a 192-column tile fills three)
    float acc[BN / 2];
    float fin[kPromotes ? BN / 2 : 1];
    int s = 0;
    uint32_t phase = 0;
    // Frees stage s in every CTA of the cluster: each of them multicasts into it.
    auto release = [&](int stage) {
      mbar_arrive(&empty[stage]);
      if constexpr (CM == 2) mbar_arrive_cluster(&empty[stage], rank ^ 1);
    };
    TileWalk walk(p, CM);
    Tile t;
    for (int32_t u = first_unit; walk.seek(u / splits, rank, t); u += unit_stride) {
      const int64_t m0 = t.m0 + cw * 64, n0 = t.n0;
      const int32_t slice = u % splits;
      const int64_t kb_begin = k_slice_start(k_steps, splits, slice), kb_end = k_slice_start(k_steps, splits, slice + 1);
      const int64_t row_lo = min64(m0 + r0, p.m - 1), row_hi = min64(m0 + r0 + 8, p.m - 1);
      // Epilogue scales and bias are applied in registers, unless 128 accumulators leave no room
      // for the factors (128×256 with f32 out: ptxas spills): that configuration stages raw sums
      // and store_tile applies them. The row scales load now: the mainloop hides their latency.
      constexpr bool kRegFactors = !(BN == 256 && sizeof(OutT) == 4);
      float ea_lo = 1.0f, ea_hi = 1.0f;
      if (kFp8 && kRegFactors && !p.block_scaled) {
        ea_lo = p.a_scale[row_lo * p.a_scale_stride_m];
        ea_hi = p.a_scale[row_hi * p.a_scale_stride_m];
      }
      if constexpr (kPromotes) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fin[i] = 0.0f;
      }
      int prev = 0;
      // Block scales: B's 128-row blocks under this tile's columns, the first one's and, for a
      // tile that is not block-aligned (BN 160), the next one's from column `split` on
      // (clamped to the group's last block: columns past n are not stored).
      constexpr bool kStraddle = ACC == kBlock && BN % WC_FP8_BLOCK != 0;
      const int32_t blk0 = t.b0 / WC_FP8_BLOCK;
      const int32_t blk1 = kStraddle ? min32(blk0 + 1, static_cast<int32_t>((t.b0 - n0 + p.n - 1) / WC_FP8_BLOCK)) : blk0;
      const int split = kStraddle ? WC_FP8_BLOCK - t.b0 % WC_FP8_BLOCK : BN;
      for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
        float sa_lo = 0.0f, sa_hi = 0.0f, sb0 = 0.0f, sb1 = 0.0f;
        if constexpr (ACC == kBlock) {  // issued before the wait: the loads overlap it
          sb0 = p.b_scale[blk0 * p.b_scale_stride_n + kb * p.b_scale_stride_k];
          sb1 = kStraddle ? p.b_scale[blk1 * p.b_scale_stride_n + kb * p.b_scale_stride_k] : sb0;
          sa_lo = p.a_scale[row_lo * p.a_scale_stride_m + kb * p.a_scale_stride_k];
          sa_hi = p.a_scale[row_hi * p.a_scale_stride_m + kb * p.a_scale_stride_k];
        }
        mbar_wait(&full[s], phase);
        const uint8_t* ta = stage_a + s * C::kStageA + cw * 64 * kStageBytesK;
        const uint8_t* tb = stage_b + s * C::kStageB;
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kFp8BlockK / 32; ++kk) {
          const int accumulate = kPromotes ? kk > 0 : (kb > kb_begin || kk > 0);
          const uint64_t da = desc_k_major_sw128(ta + 32 * kk), db = desc_k_major_sw128(tb + 32 * kk);
          if constexpr (kFp8) wgmma_e4m3<BN>(acc, da, db, accumulate);  // k32
          else wgmma_ss<__nv_bfloat16, BN>(acc, da, db, accumulate);    // k16
        }
        wgmma_commit();
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);
        if constexpr (kPromotes) {
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);
          if (lane == 0) release(s);
          if constexpr (ACC == kBlock) {
            const float s_lo0 = sa_lo * sb0, s_hi0 = sa_hi * sb0, s_lo1 = sa_lo * sb1, s_hi1 = sa_hi * sb1;
#pragma unroll
            for (int i = 0; i < BN / 8; ++i) {
              const bool second = kStraddle && 8 * i >= split;  // n8 block i's columns: 8i ..
              const float s_lo = second ? s_lo1 : s_lo0, s_hi = second ? s_hi1 : s_hi0;
              fin[4 * i + 0] += s_lo * acc[4 * i + 0];
              fin[4 * i + 1] += s_lo * acc[4 * i + 1];
              fin[4 * i + 2] += s_hi * acc[4 * i + 2];
              fin[4 * i + 3] += s_hi * acc[4 * i + 3];
            }
          } else {
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) fin[i] += acc[i];
          }
        } else {
          wgmma_wait<1>();  // the previous k-step's wgmmas are done: its stage is free
          if (kb > kb_begin && lane == 0) release(prev);
        }
        prev = s;
        if (++s == S) {
          s = 0;
          phase ^= 1;
        }
      }
      // The first chunk's column factors load while the last wgmmas finish (fast mode).
      const int64_t b_end = t.b0 - n0 + p.n;  // the group's last row of B, plus one
      const bool partial = splits > 1;        // split-k: raw sums to the workspace, no factors
      ChunkFactors<OutT, kFp8> f;
      if (kRegFactors && !partial) f.load(p, t.b0, b_end, lane);
      if constexpr (!kPromotes) {
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);
        // A unit with no k-steps (check_split_k refuses them today) holds no stage to release.
        if (lane == 0 && kb_end > kb_begin) release(prev);
      }

      // The sums of n8 block i (promoted or not): rows r0 (lo) and r0 + 8 (hi), this thread's two
      // columns 8i + 2(lane % 4) + {0, 1}.
      auto sums = [&](int i, float2& lo, float2& hi) {
        if constexpr (kPromotes) {
          lo = make_float2(fin[4 * i], fin[4 * i + 1]);
          hi = make_float2(fin[4 * i + 2], fin[4 * i + 3]);
        } else {
          lo = make_float2(acc[4 * i], acc[4 * i + 1]);
          hi = make_float2(acc[4 * i + 2], acc[4 * i + 3]);
        }
      };
      // TMA-store epilogue: 32 columns at a time, scales and bias applied in registers (the next
      // chunk's factors load meanwhile) and rounded to bf16 pairs into a 128B-swizzled box of 64
      // columns (row r's 16-byte unit u at r · 128 + 16 (u ^ r % 8): conflict-free); every other
      // chunk fills a box, which one thread stores by TMA while everyone goes on — to the next
      // box, then the next tile's mainloop. The boxes alternate over the consumer's whole sequence
      // (not per tile: a 192-column tile fills three). Before a box is refilled, that thread
      // waits for the store issued from it two boxes ago to have read it (at most one other
      // still reading).
      if constexpr (TS) {
#pragma unroll
        for (int c = 0; c < BN / C::kEpiCols; ++c) {
          ChunkFactors<OutT, kFp8> next;
          if (c + 1 < BN / C::kEpiCols) next.load(p, t.b0 + (c + 1) * C::kEpiCols, b_end, lane);
          uint8_t* box = boxes + (box_seq % 2) * C::kStoreBox;
          if (c % 2 == 0) {
            if (tid == 0) tma_store_wait_read<1>();
            named_barrier_sync(1 + cw, 128);  // the box is free
          }
#pragma unroll
          for (int j = 0; j < C::kEpiCols / 8; ++j) {
            const int i = c * (C::kEpiCols / 8) + j;  // n8 block
            const int unit = (c % 2) * 4 + j;         // 16-byte unit of the box row: 8 columns
            float2 lo, hi;
            sums(i, lo, hi);
            lo = f.apply(p, lo, ea_lo, j);
            hi = f.apply(p, hi, ea_hi, j);
            const int byte = 4 * (lane & 3);
            st_shared_for_async(box + r0 * 128 + 16 * (unit ^ (r0 % 8)) + byte, pack2<OutT>(lo.x, lo.y));
            st_shared_for_async(box + (r0 + 8) * 128 + 16 * (unit ^ ((r0 + 8) % 8)) + byte, pack2<OutT>(hi.x, hi.y));
          }
          if (c % 2 == 1) {
            fence_proxy_async_smem();
            named_barrier_sync(1 + cw, 128);  // the box is written
            if (tid == 0) {
              tma_store_2d(box, &p.tma_d, static_cast<int32_t>((n0 + (c / 2) * 64) * 2), static_cast<int32_t>(m0));
              tma_store_commit();
            }
            ++box_seq;
          }
          f = next;
        }
      } else {
        // Epilogue: 32 columns at a time, scales and bias applied in registers (the next chunk's
        // factors load meanwhile), then through the staging buffer to 16-byte row stores; with
        // split-k, the raw sums to this k-slice's workspace slice instead.
#pragma unroll
        for (int c = 0; c < BN / C::kEpiCols; ++c) {
          ChunkFactors<OutT, kFp8> next;
          if (kRegFactors && !partial && c + 1 < BN / C::kEpiCols) next.load(p, t.b0 + (c + 1) * C::kEpiCols, b_end, lane);
          named_barrier_sync(1 + cw, 128);  // the previous chunk (or tile) has been read
#pragma unroll
          for (int j = 0; j < C::kEpiCols / 8; ++j) {
            const int i = c * (C::kEpiCols / 8) + j;  // n8 block
            const int col = 8 * j + 2 * (lane & 3);
            float2 lo, hi;
            sums(i, lo, hi);
            if (kRegFactors && !partial) {
              lo = f.apply(p, lo, ea_lo, j);
              hi = f.apply(p, hi, ea_hi, j);
            }
            *reinterpret_cast<float2*>(stage + r0 * C::kEpiPitch + col) = lo;
            *reinterpret_cast<float2*>(stage + (r0 + 8) * C::kEpiPitch + col) = hi;
          }
          named_barrier_sync(1 + cw, 128);
          if (partial)
            store_partial(p, stage, C::kEpiPitch, 64, C::kEpiCols, m0, t.m_end, n0 + c * C::kEpiCols, slice, 1.0f, tid,
                          128);
          else
            store_tile<OutT, kFp8>(p, stage, C::kEpiPitch, 64, C::kEpiCols, m0, t.m_end, n0 + c * C::kEpiCols,
                                   t.b0 - n0, 1.0f, tid, 128, kRegFactors);
          if (kRegFactors) f = next;
        }
      }
    }
    // The boxes must outlive the TMA stores reading them.
    if constexpr (TS) {
      if (tid == 0) tma_store_wait_read<0>();
    }
  }
  // A CTA's shared memory must outlive its peers' last arrivals on its barriers.
  if constexpr (CM > 1) cluster_sync();
#else
  __trap();  // sm_90a only
#endif
}

// The persistent grid: p.num_ctas rounded down to whole clusters, at most one cluster per unit
// and, with clusters, at most as many as the GPU co-schedules (GPCs hold whole clusters; asked
// once per device).
template <int BM, int BN, int ACC, int CM, typename OutT, typename InT = uint8_t, bool TS = false>
wc_status launch(const wc_matmul_fp8_params& p, cudaStream_t s) {
  using C = Sm90Tile<BM, BN, ACC, CM, TS>;
  auto kernel = matmul_fp8_sm90_kernel<BM, BN, ACC, CM, TS, InT, OutT>;
  cudaError_t e = allow_dynamic_smem(kernel, C::kSmem);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  int64_t clusters = max64(1, min64(p.num_ctas / CM, max_units(p, CM) * k_splits_of(p)));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CM;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(C::kThreads);
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = CM > 1 ? 1 : 0;
  if constexpr (CM > 1) {
    // Per device; 0: not asked yet. Atomic: launches may come from several host threads (two
    // that ask at once store the same answer).
    static std::atomic<int> co_scheduled[64];
    int dev = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess) return static_cast<wc_status>(e);
    int fit = co_scheduled[dev & 63].load(std::memory_order_relaxed);
    if (fit == 0) {
      cfg.gridDim = dim3(static_cast<unsigned>(clusters * CM));
      if ((e = cudaOccupancyMaxActiveClusters(&fit, kernel, &cfg)) != cudaSuccess) return static_cast<wc_status>(e);
      if (fit < 1) return WC_ERR_UNSUPPORTED;
      co_scheduled[dev & 63].store(fit, std::memory_order_relaxed);
    }
    clusters = min64(clusters, fit);
  }
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * CM));
  if ((e = cudaLaunchKernelEx(&cfg, kernel, p)) != cudaSuccess) return static_cast<wc_status>(e);
  return launch_status();
}

// The TMA-store epilogue's configurations: e4m3 operands, bf16 out, 128-row tiles; built only
// with WC_FP8_TUNING.
template <typename OutT>
wc_status dispatch_tma_store(const wc_matmul_fp8_params& p, cudaStream_t s) {
#ifndef WC_FP8_TUNING
  (void)p, (void)s;
  return WC_ERR_UNSUPPORTED;
#else
  if constexpr (sizeof(OutT) != 2) {
    return WC_ERR_UNSUPPORTED;
  } else {
    const int bn = p.block_n;
    const bool pair = p.cluster_m == 2;
    if (p.in_dtype != WC_E4M3 || p.residual != nullptr || p.group_offsets != nullptr || p.block_m != 128)
      return WC_ERR_UNSUPPORTED;
    using U = uint8_t;
    if (p.block_scaled) {
      if (bn == 128) return pair ? launch<128, 128, kBlock, 2, OutT, U, true>(p, s) : launch<128, 128, kBlock, 1, OutT, U, true>(p, s);
    } else if (p.fast_accum) {
      if (bn == 256) return pair ? launch<128, 256, kFast, 2, OutT, U, true>(p, s) : launch<128, 256, kFast, 1, OutT, U, true>(p, s);
      if (bn == 128) return pair ? launch<128, 128, kFast, 2, OutT, U, true>(p, s) : launch<128, 128, kFast, 1, OutT, U, true>(p, s);
    } else {
      if (bn == 128) return pair ? launch<128, 128, kPromote, 2, OutT, U, true>(p, s) : launch<128, 128, kPromote, 1, OutT, U, true>(p, s);
      if (bn == 192) return pair ? launch<128, 192, kPromote, 2, OutT, U, true>(p, s) : launch<128, 192, kPromote, 1, OutT, U, true>(p, s);
    }
    return WC_ERR_UNSUPPORTED;
  }
#endif
}

template <typename OutT>
wc_status dispatch_gemm(const wc_matmul_fp8_params& p, cudaStream_t s) {
  const int bm = p.block_m, bn = p.block_n;
  const bool pair = p.cluster_m == 2;
  if (pair && bm != 128) return WC_ERR_UNSUPPORTED;
  if (p.tma_store) return dispatch_tma_store<OutT>(p, s);
  if (p.in_dtype == WC_BF16) {
    using B16 = __nv_bfloat16;
    if (pair) return WC_ERR_UNSUPPORTED;
    if (bm == 128 && bn == 256) return launch<128, 256, kFast, 1, OutT, B16>(p, s);
    if (bm == 128 && bn == 128) return launch<128, 128, kFast, 1, OutT, B16>(p, s);
    if (bm == 64 && bn == 128) return launch<64, 128, kFast, 1, OutT, B16>(p, s);
  } else if (p.block_scaled) {
    if (bm == 128 && bn == 128) return pair ? launch<128, 128, kBlock, 2, OutT>(p, s) : launch<128, 128, kBlock, 1, OutT>(p, s);
#ifdef WC_FP8_TUNING
    if (bm == 128 && bn == 160) return pair ? launch<128, 160, kBlock, 2, OutT>(p, s) : launch<128, 160, kBlock, 1, OutT>(p, s);
#endif
    if (bm == 64 && bn == 128) return launch<64, 128, kBlock, 1, OutT>(p, s);
  } else if (p.fast_accum) {
    if (bm == 128 && bn == 256) return pair ? launch<128, 256, kFast, 2, OutT>(p, s) : launch<128, 256, kFast, 1, OutT>(p, s);
    if (bm == 128 && bn == 128) return pair ? launch<128, 128, kFast, 2, OutT>(p, s) : launch<128, 128, kFast, 1, OutT>(p, s);
    if (bm == 64 && bn == 128) return launch<64, 128, kFast, 1, OutT>(p, s);
  } else {
    if (bm == 128 && bn == 128) return pair ? launch<128, 128, kPromote, 2, OutT>(p, s) : launch<128, 128, kPromote, 1, OutT>(p, s);
#ifdef WC_FP8_TUNING
    if (bm == 128 && bn == 160) return pair ? launch<128, 160, kPromote, 2, OutT>(p, s) : launch<128, 160, kPromote, 1, OutT>(p, s);
    if (bm == 128 && bn == 192) return pair ? launch<128, 192, kPromote, 2, OutT>(p, s) : launch<128, 192, kPromote, 1, OutT>(p, s);
#endif
    if (bm == 64 && bn == 128) return launch<64, 128, kPromote, 1, OutT>(p, s);
  }
  return WC_ERR_UNSUPPORTED;
}

// The GEMM and, with split-k, its reduction (queued behind it on the stream).
template <typename OutT>
wc_status dispatch(const wc_matmul_fp8_params& p, cudaStream_t s) {
  const wc_status st = dispatch_gemm<OutT>(p, s);
  if (st != WC_OK || k_splits_of(p) == 1) return st;
  return split_k_reduce(p, s);
}

}  // namespace

}  // namespace wc

extern "C" wc_status wc_matmul_fp8_sm90(const wc_matmul_fp8_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->m <= 0) return WC_OK;
  if (p->in_dtype != WC_E4M3 && p->in_dtype != WC_BF16) return WC_ERR_UNSUPPORTED;
  const bool fp8 = p->in_dtype == WC_E4M3;
  if (p->block_m <= 0 || p->block_n <= 0 || p->n <= 0 || p->k <= 0 ||
      (fp8 ? p->n % wc::kFp8BlockK != 0 || p->k % wc::kFp8BlockK != 0 : p->n % 8 != 0 || p->k % 8 != 0) ||
      p->m > INT32_MAX - 256 || p->n > INT32_MAX || p->k > INT32_MAX / 2 ||
      p->cluster_m < 0 || p->cluster_m > 2 || (p->group_offsets != nullptr && p->num_groups < 1) ||
      (p->group_offsets != nullptr ? p->num_groups : 1) > INT32_MAX / p->n)  // (n > 0: no product to overflow)
    return WC_ERR_INVALID_ARG;
  if (p->group_offsets != nullptr && p->cluster_m == 2) return WC_ERR_UNSUPPORTED;  // a pair shares one B tile
  if (const wc_status st = fp8 ? wc::check_split_k<uint8_t>(*p) : wc::check_split_k<__nv_bfloat16>(*p); st != WC_OK)
    return st;
  // The persistent loops count units in 32 bits and step past the last by up to the grid.
  if (wc::max_units(*p) * wc::k_splits_of(*p) > INT32_MAX / 2) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_FP8_OUT(p->out_dtype, OutT, { return wc::dispatch<OutT>(*p, s); });
}
