// attention_mla_sm90.cu — MLA decode (head dims (576, 512), attention_mla.cu's contract) on
// Hopper's warpgroup tensor cores (wgmma), for batches with more than 16 query rows per
// sequence (128 heads, or speculative decode): the compute-bound regime, where the mma.sync
// kernel is bound by shared-memory traffic (each 16-row warp re-reads the whole K tile; a
// wgmma reads it once per 64 rows). bf16 / f16, K/V in the query dtype. sm_90a only (other
// targets get a trapping stub; ops/attention/plan.rs picks it only on compute capability 9.0).
//
// CTA: 384 threads = 3 warpgroups, 64 query rows (GQA packing as attention.cuh), 64-key tiles
// of 576-element latent rows, 2 stages.
//   warpgroup 0    producer (setmaxnreg.dec 40): Q by cp.async (with tile 0); K tiles into
//                  the 128-byte-swizzled layout the descriptors read (9 column blocks of 64
//                  elements, each rows × 128 bytes, unit u of row r at u ^ (r % 8)) — by TMA
//                  when the host mapped the cache (p.tma_rows > 0) and every key of the tile
//                  exists (attention_sm90.cu's scheme: one box per page and column block), else
//                  by cp.async, row by row through the block table; per tile: wait for the
//                  previous tile's copies, fence them to the async proxy and arrive on its full
//                  barrier, then wait for a free stage and issue the tile (one tile in flight
//                  while the consumers work on the other; sm90.cuh's produce_cp_async_in_order:
//                  the consumers wait for tile j + 1 before they release tile j − 1).
//   warpgroups 1-2 consumers (setmaxnreg.inc 232), the same 64 rows; consumer c computes the
//                  scores of keys 32 c .. 32 c + 31 of each tile and owns output columns
//                  256 c .. 256 c + 255. Per tile:
//     S half     36 × wgmma m64n32k16, A = Q and B = its 32 keys of K from shared memory
//                (K-major): each score is computed once (FlashMLA's split);
//     softmax    mask (skipped for tiles every row sees whole); each row's max over both
//                halves (posted in shared memory, named barrier 1); online softmax in the log2
//                domain on this half (attention.cuh, softmax_stats_given_max): both consumers
//                keep the same running max, each its own half's running sum; O rescaled;
//     P          this half as 16-bit values into a shared 64 × 64 tile (K-major, 128-byte
//                swizzled), fenced to the async proxy; named barrier 2;
//     O += P V   2 × 4 wgmma m64n128k16, A = all of P from shared memory, B = V = the K tile's
//                first 512 columns as an MN-major operand (the same shared memory: each latent
//                row is read from global memory once, as key and value), issued with the next
//                tile's S half right behind it (the tensor core runs them back to back); once
//                it retires, lane 0 of each warp arrives on the stage's empty barrier.
//   The row sums of the two halves are added through shared memory once, after the last tile.
//   The exchanges need no double buffers: a consumer posts tile j + 1's row max after barrier
//   2 of tile j (the other read tile j's before reaching it) and writes tile j + 1's P after
//   barrier 1 of tile j + 1 (the other's P·V of tile j retired before it reached that).
//
// Shared memory: Q 72 KB + 2 × K 72 KB + P 8 KB + flags and row statistics = 225.5 KB (of
// 227): 1 CTA per SM. Registers (consumer): O 128 + S 16 per thread.
//
// Floor (H200): 128 heads, b64 × kv 4096 = 73 TFLOP useful -> 110 µs at 660 TF/s (FlashMLA's
// reported rate); docs/attention.md has the prediction.
#include "attention_sm90.cuh"

namespace wc {
namespace {

struct MlaSm90 {
  static constexpr int kD = 576, kDV = 512;
  static constexpr int kBM = 64;     // query rows per CTA (both consumers)
  static constexpr int kBN = 64;     // keys per tile
  static constexpr int kStages = 2;
  static constexpr int kThreads = 384;
  static constexpr int kCols = kDV / 2;       // output columns per consumer warpgroup
  static constexpr int kQ = kBM * kD * 2;     // bytes
  static constexpr int kTile = kBN * kD * 2;  // one K stage
  static constexpr int kP = kBM * kBN * 2;    // the tile's probabilities, both halves
  static constexpr int kFlags = kStages * (kBN + 1) * 4;
  static constexpr int kRowStats = 2 * 2 * kBM * 4;  // per consumer: row max of its half, row sum
  static constexpr int kSmem = kQ + kStages * kTile + kP + 2 * kStages * 8 + kFlags + kRowStats;
  static_assert(kQ % 1024 == 0 && kTile % 1024 == 0, "tiles stay 1024-byte aligned (swizzle atoms)");
  static_assert(kCols % 128 == 0, "a warpgroup's columns are whole n128 wgmmas");
};

// Byte offset of 16-byte unit u of row r in a [ROWS][576] 16-bit tile, 128-byte swizzle (as
// attention_sm90.cu): column block u / 8 of ROWS × 128 bytes, unit (u % 8) ^ (r % 8).
template <int ROWS>
__device__ __forceinline__ int swizzled(int r, int u) {
  return (u / 8) * ROWS * 128 + r * 128 + (((u % 8) ^ (r % 8)) << 4);
}

template <typename T>
__global__ void __launch_bounds__(MlaSm90::kThreads, 1) attention_mla_sm90_kernel(const __grid_constant__ wc_attention_params p) {
#if WC_SM90A
  grid_dependents_launch();  // the split merge may be dispatched (it waits for this grid)
  using C = MlaSm90;
  using namespace sm90;
  constexpr int BM = C::kBM, BN = C::kBN, S = C::kStages, U = C::kD / 8;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* sq = smem;
  uint8_t* sk = smem + C::kQ;  // stage s at sk + s · kTile
  uint8_t* sp = sk + S * C::kTile;  // P [BM][BN], 128-byte swizzled (one column block)
  uint64_t* full = reinterpret_cast<uint64_t*>(sp + C::kP);
  uint64_t* empty = full + S;
  int* s_ok = reinterpret_cast<int*>(empty + S);  // [S][BN]: key exists
  int* s_bad = s_ok + S * BN;  // [S]: index of the last tile loaded there with a missing key
  float* x_max = reinterpret_cast<float*>(s_bad + S);  // [2][BM]: each consumer's row max of its keys
  float* x_sum = x_max + 2 * BM;                      // [2][BM]: each consumer's row sums, at the end

  Work w;
  if (!describe_work<BN>(p, BM, w)) return;
  const int kv_hi = w.kv_hi;
  const int n_iter = w.tile_end - w.tile_begin;
  const int wg = threadIdx.x / 128;
  init_kv_ring<S>(smem, full, empty, s_bad);

  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    setmaxnreg_dec<40>();
    const int tid = threadIdx.x;
    const T* kg = static_cast<const T*>(p.k);
    const int lane = tid % 32;
    auto load_tile = [&](int it) {
      const int st = it % S, n0 = w.kv_lo + (w.tile_begin + it) * BN;
      int page;
      if (tma_tile<BN>(p, w, n0, kv_hi, lane, page)) {
        // Every key exists: warp 0 marks them and issues the tile by TMA, counted on the stage's
        // full barrier (all 128 producer threads still arrive on it).
        if (tid < 32) tma_tile_load<BN, C::kD / 64>(p, w, n0, page, lane, s_ok + st * BN, &full[st], sk + st * C::kTile, nullptr);
        cp_async_commit();  // an empty group: one commit group per tile, as by cp.async
        return;
      }
      for (int i = tid; i < BN * U; i += 128) {
        const int r = i / U, u = i % U;
        int64_t ko;
        const bool valid = key_offset(p, w, n0 + r, kv_hi, p.k_stride, ko);
        cp_async16(sk + st * C::kTile + swizzled<BN>(r, u), valid ? kg + ko + w.kv_head * p.k_head_stride + u * 8 : kg, valid);
        if (u == 0) s_ok[st * BN + r] = valid;
        if (!valid) s_bad[st] = it;
      }
      cp_async_commit();
    };
    if (n_iter > 0) {
      load_q<T, C::kD, BM>(p, w, tid, 128, [&](int r, int u) { return sq + swizzled<BM>(r, u); });  // with tile 0
      load_tile(0);
    }
    produce_cp_async_in_order<S>(n_iter, full, empty, load_tile);
    return;
  }

  // ------------------------------------------------------------------ consumers
  setmaxnreg_inc<232>();
  const int cw = wg - 1;  // keys 32 cw .. 32 cw + 31 of each tile; output columns 256 cw ..
  const int lane = threadIdx.x & 31, wq = (threadIdx.x / 32) % 4;
  const int g = lane >> 2, t4 = lane & 3;
  int row_pos[2];
  bool row_ok[2];
  tile_rows(w, wq * 16, g, row_ok, row_pos);
  const Visibility vis = visibility(p, w, BM, kv_hi);
  constexpr int kHalf = BN / 2;  // keys per consumer

  float o[2][64], s[kHalf / 2];
#pragma unroll
  for (int nh = 0; nh < 2; ++nh)
#pragma unroll
    for (int i = 0; i < 64; ++i) o[nh][i] = 0.0f;
#pragma unroll
  for (int i = 0; i < kHalf / 2; ++i) s[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const ScoreMap score = ScoreMap::of(p);
  // The consumers' exchanges: named barrier 1 (row maxima posted), 2 (P complete).
  auto both = [](int id) { named_barrier_sync(id, 256); };

  auto fence_s = [&]() {
#pragma unroll
    for (int i = 0; i < kHalf / 2; ++i) fence_operand(s[i]);
  };
  auto fence_o = [&]() {
#pragma unroll
    for (int nh = 0; nh < 2; ++nh)
#pragma unroll
      for (int i = 0; i < 64; ++i) fence_operand(o[nh][i]);
  };

  // This consumer's half of S = Q Kᵀ for tile it (waits for its stage, then issues and commits):
  // keys 32 cw .. (rows 32 cw .. of every K column block); k16 slice kk is 32 bytes into
  // 128-byte column block kk / 4.
  auto issue_s = [&](int it) {
    const int st = it % S;
    const uint8_t* k_t = sk + st * C::kTile;
    mbar_wait(&full[st], (it / S) & 1);
    fence_s();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C::kD / 16; ++kk) {
      const int col = (kk % 4) * 32;
      wgmma_m64n32k16_ss<T>(s, desc_k_major_sw128(sq + (kk / 4) * BM * 128 + col),
                            desc_k_major_sw128(k_t + (kk / 4) * BN * 128 + cw * kHalf * 128 + col), kk > 0);
    }
    wgmma_commit();
  };

  // Per tile: [S of tile it was issued behind the P·V of tile it − 1] the P·V retires (its stage
  // is released), then S; the softmax; P·V of tile it is issued, and right behind it S of tile
  // it + 1, so the tensor core runs the two back to back instead of draining between tiles.
  if (n_iter > 0) issue_s(0);
  for (int it = 0; it < n_iter; ++it) {
    const int st = it % S;
    const uint8_t* k_t = sk + st * C::kTile;
    if (it > 0) {
      wgmma_wait<1>();  // P·V of tile it − 1 has retired (S of tile it may still run)
      fence_o();
      if (lane == 0) mbar_arrive(&empty[(it - 1) % S]);
    }
    wgmma_wait<0>();
    fence_s();
    // Scale, soft-cap, mask; the row maxima over both halves (posted, barrier 1); online softmax
    // on this half; O rescaled (its previous P·V has retired).
    const int n0 = w.kv_lo + (w.tile_begin + it) * BN;
    const bool unmasked = s_bad[st] != it && vis.all_see(n0, BN);
    mask_tile<kHalf / 8>(s, p, score, unmasked, s_ok + st * BN, n0, cw * kHalf, t4, row_ok, row_pos, kv_hi);
    float tile_max[2];
    row_max<kHalf / 8>(s, tile_max);
    if (t4 == 0) {
      x_max[cw * BM + wq * 16 + g] = tile_max[0];
      x_max[cw * BM + wq * 16 + g + 8] = tile_max[1];
    }
    both(1);
#pragma unroll
    for (int h = 0; h < 2; ++h) tile_max[h] = fmaxf(tile_max[h], x_max[(1 - cw) * BM + wq * 16 + g + 8 * h]);
    float corr[2];
    softmax_stats_given_max<kHalf / 8>(s, m, l, corr, score.unit, tile_max);
    rescale_rows<16>(o[0], corr);
    rescale_rows<16>(o[1], corr);
    // P (this half's columns) into shared memory in the K-major, 128-byte-swizzled layout the
    // A descriptor reads: row r, key c at unit c / 8 of row r, swizzled. The other consumer's
    // P·V of the previous tile has retired (it waited before reaching barrier 1).
#pragma unroll
    for (int i = 0; i < kHalf / 8; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = wq * 16 + g + 8 * h, c = cw * kHalf + 8 * i + 2 * t4;
        st_shared_for_async(sp + swizzled<BM>(r, c / 8) + (c % 8) * 2, pack2<T>(s[4 * i + 2 * h], s[4 * i + 2 * h + 1]));
      }
    fence_proxy_async_smem();  // the generic-proxy stores, before the wgmma (async proxy) reads them
    both(2);
    // O += P V over all 64 keys: P from shared memory (K-major), V = this warpgroup's 256
    // columns, column blocks 4 cw .. 4 cw + 3 of the tile (an n128 wgmma spans two: LBO the next
    // block, BN rows on); keys 16 ks .. are 2048 bytes down.
    fence_o();
    wgmma_fence();
#pragma unroll
    for (int nh = 0; nh < 2; ++nh)
#pragma unroll
      for (int ks = 0; ks < BN / 16; ++ks)
        wgmma_m64n128k16_ss<T, 1>(o[nh], desc_k_major_sw128(sp + ks * 32),
                               desc_mn_major_sw128(k_t + (4 * cw + 2 * nh) * BN * 128 + ks * 16 * 128, BN * 128), 1);
    wgmma_commit();
    if (it + 1 < n_iter) issue_s(it + 1);  // its S registers were read into P above
  }
  // Unconditional (a wait with nothing in flight is free): with the wait inside `if (n_iter >
  // 0)`, ptxas saw a path from the loop's wgmmas to the epilogue's reads of O without one, and
  // serialized every wgmma of the kernel (C7514: each waited for the one before).
  wgmma_wait<0>();
  fence_o();
  if (n_iter > 0 && lane == 0) mbar_arrive(&empty[(n_iter - 1) % S]);
  // Each row's sum over both halves.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    if (t4 == 0) x_sum[cw * BM + wq * 16 + g + 8 * h] = l[h];
  }
  both(1);
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] += x_sum[(1 - cw) * BM + wq * 16 + g + 8 * h];

  // Epilogue from registers: rows g, g + 8 of this warp's 16; columns 256 cw + 128 nh + 8 i +
  // 2 t4 + 0..1. Warpgroup 0 writes the lse.
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!row_ok[h]) continue;
    const int gr = w.row0 + wq * 16 + g + 8 * h;
    const int64_t tok = w.q_start + gr / w.group;
    const int head = w.kv_head * w.group + gr % w.group;
    const float inv = l[h] > 0.0f ? p.v_scale / l[h] : 0.0f;
    const float lse = l[h] > 0.0f ? (m[h] + log2f(l[h])) * kLn2 : -INFINITY;
    const int col0 = cw * C::kCols + 2 * t4;
    if (p.num_splits > 1) {
      const int64_t rowid = (static_cast<int64_t>(blockIdx.z) * p.total_q + tok) * p.num_q_heads + head;
      float* dst = p.partial_out + rowid * C::kDV + col0;
#pragma unroll
      for (int nh = 0; nh < 2; ++nh)
#pragma unroll
        for (int i = 0; i < 16; ++i)
          *reinterpret_cast<float2*>(dst + 128 * nh + 8 * i) = make_float2(o[nh][4 * i + 2 * h] * inv, o[nh][4 * i + 2 * h + 1] * inv);
      if (t4 == 0 && cw == 0) p.partial_lse[rowid] = lse;
    } else {
      T* dst = out + tok * p.out_stride + static_cast<int64_t>(head) * C::kDV + col0;
#pragma unroll
      for (int nh = 0; nh < 2; ++nh)
#pragma unroll
        for (int i = 0; i < 16; ++i)
          *reinterpret_cast<uint32_t*>(dst + 128 * nh + 8 * i) = pack2<T>(o[nh][4 * i + 2 * h] * inv, o[nh][4 * i + 2 * h + 1] * inv);
      if (t4 == 0 && cw == 0 && p.lse != nullptr) p.lse[tok * p.num_q_heads + head] = lse;
    }
  }
#else
  __trap();
#endif
}

}  // namespace

wc_status launch_attention_mla_sm90(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  if (p.kv_dtype != p.dtype || p.head_dim != MlaSm90::kD || p.head_dim_v != MlaSm90::kDV) return WC_ERR_UNSUPPORTED;
  using C = MlaSm90;
  switch (p.dtype) {
    case WC_BF16: return launch_grid(attention_mla_sm90_kernel<__nv_bfloat16>, p, C::kBM, C::kThreads, C::kSmem, s, occupancy);
    case WC_F16: return launch_grid(attention_mla_sm90_kernel<__half>, p, C::kBM, C::kThreads, C::kSmem, s, occupancy);
    default: return WC_ERR_UNSUPPORTED;
  }
}

}  // namespace wc
