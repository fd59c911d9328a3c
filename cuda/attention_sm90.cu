// attention_sm90.cu — prefill attention on Hopper's warpgroup tensor cores (wgmma): the same
// contract and work split as attention_gqa.cu's prefill configuration (varlen, contiguous or
// paged K/V, GQA packing, bottom-right causal, sliding window, soft-cap, split-KV partials,
// LSE), for bf16 / f16 with (head_dim, head_dim_v) = (64, 64) or (128, 128), K/V in the query
// dtype or FP8 e4m3 (a paged cache with per-tensor scales). sm_90a only (other targets get a
// trapping stub; ops/attention/plan.rs chooses this kernel only on compute capability 9.0,
// through wc_attention_params.kernel).
//
// CTA: 384 threads = 3 warpgroups, 128 query rows, key tiles of 128.
//   warpgroup 0    producer (setmaxnreg.dec 56). K/V in the query dtype: Q by cp.async (with
//                  tile 0); K/V tiles into the 128-byte-swizzled layout the wgmma descriptors
//                  read (64-element column blocks of rows × 128 bytes, 16-byte unit u of row r
//                  at u ^ (r % 8)) — by TMA when the host mapped K and V (p.tma_rows > 0:
//                  contiguous, or pages of >= 8 slots back to back) and every key of the tile
//                  exists (one box per page and 128-byte column; warp 0 issues them and adds
//                  their bytes to the stage's full barrier), else by cp.async, row by row
//                  through the block table (a sequence's last tile, a paged window's first,
//                  page ids out of range; and everything when unmapped). A ring of 3 stages
//                  (K and V together): per tile, wait for a free stage (empty barrier) and
//                  issue the tile, then wait for the previous tile's copies, fence them to the
//                  async proxy (fence.proxy.async) and arrive on its full barrier — two tiles in
//                  flight while the consumers hold the two before them. Key flags: s_ok per
//                  key, and s_bad = the index of the last tile loaded into the stage with a
//                  missing key.
//                  FP8 K/V: the wgmmas run in f16 (e4m3 → f16 · 2^-8 is exact and three integer
//                  ops per four bytes, e4m3x4_to_f16x2_scaled; the 2^8 folds into the scales;
//                  bf16 would take more), so a bf16 Q is converted once, in shared memory,
//                  to f16 times 2^-e, with e chosen from the CTA's largest |q| so that it lands
//                  in [2^14, 2^15) (no overflow, full f16 precision relative to it; the scores
//                  take 2^e back in the softmax's scale). Raw e4m3 tiles arrive by cp.async in a
//                  ring of 2 raw stages; each producer thread converts the 16-byte chunks it
//                  copied itself (no barrier between copy and conversion) into 2 stages of f16
//                  K and V, which have full and empty barriers of their own: a K stage is
//                  released once its softmax has read the key flags, half a tile before its
//                  V, so each conversion has about one tile of slack.
//   warpgroups 1-2 consumers (setmaxnreg.inc 224), 64 rows each (one m64 row block). Per tile,
//   pipelined inside the warpgroup (FlashAttention-3): tile j's Q·Kᵀ is issued, then tile
//   j − 1's P·V behind it; the softmax of tile j runs once its S is ready, while that P·V still
//   runs; then O is rescaled by tile j's correction and tile j − 1's stage released.
//     S = Q Kᵀ   HD / 16 × wgmma m64n128k16, A = Q and B = K from shared memory (K-major);
//     softmax    mask (skipped for tiles every row sees whole), online max / sum in the log2
//                domain on the S accumulators (each thread: 2 rows × 32 keys, the mma.sync
//                layout: a quad shares a row);
//     O += P V   8 × wgmma m64nHDk16 with P straight from the S accumulators as the register A
//                operand (the accumulator layout of a k16 column pair is the A fragment
//                layout) and V from shared memory as an MN-major B operand (V rows [key][d]
//                are N-major); once it retires, lane 0 of each warp arrives on the stage's empty
//                barrier.
//   The two consumer warpgroups take turns issuing their wgmmas (ping-pong: named barriers 1
//   and 2), so that one's softmax overlaps the other's tensor-core work.
//
// Shared memory (HD 128): Q 32 KB + 3 × (K 32 KB + V 32 KB) + flags = 225.6 KB of the 227 KB a
// CTA may have; FP8: Q 32 KB + 2 × (K + V) 128 KB + 2 raw stages 64 KB + flags = 225.1 KB.
// 1 CTA per SM (HD 64: half). Registers: consumers S 64 + O HD / 2 + P 32 per thread, all live
// across the pipelined step.
//
// Floor (H200, 989 TFLOP/s dense bf16 / f16): causal b1 × 16384, 32 heads, HD 128 = 2.2e12
// FLOP -> 2.2 ms. See docs/attention.md for the prediction.
#include "attention_sm90.cuh"

namespace wc {
namespace {

template <int HD, bool FP8>
struct Sm90Attn {
  static constexpr int kBM = 128;  // query rows per CTA: 64 per consumer warpgroup
  static constexpr int kBN = 128;  // keys per tile
  // 16-bit K/V stages. The consumers hold two (tile it's K, tile it - 1's V): with K and V on
  // one barrier pair the producer fills the third; FP8's separate K and V barriers need two.
  static constexpr int kStages = FP8 ? 2 : 3;
  static constexpr int kThreads = 384;         // producer warpgroup + 2 consumer warpgroups
  static constexpr int kQ = kBM * HD * 2;      // bytes
  static constexpr int kTile = kBN * HD * 2;   // one K or V stage
  static constexpr int kRaw = FP8 ? 2 * kBN * HD : 0;  // one raw stage: K, then V (e4m3 rows)
  static constexpr int kRawStages = FP8 ? 2 : 0;
  static constexpr int kBarriers = (FP8 ? 4 : 2) * kStages;  // full / empty (FP8: of K and of V)
  static constexpr int kFlags = kStages * (kBN + 1) * 4 + (FP8 ? 5 * 4 : 0);  // key flags, bad-tile
                                                   // marks; FP8: the producer warps' |q| maxima, Q's scale
  static constexpr int kSmem = kQ + 2 * kStages * kTile + kRawStages * kRaw + kBarriers * 8 + kFlags;  // barriers before flags
  static_assert(HD == 64 || HD == 128, "head dims built: 64, 128");
  static_assert(kQ % 1024 == 0 && kTile % 1024 == 0 && kRaw % 1024 == 0, "tiles stay 1024-byte aligned (swizzle atoms)");
  static_assert(kSmem <= 227 * 1024, "a CTA may have 227 KB of shared memory");
};

// Byte offset of 16-byte unit u of row r in a [ROWS][HD] 16-bit tile, 128-byte swizzle: column
// block u / 8 (64 elements) of ROWS × 128 bytes, row r at r · 128, unit (u % 8) ^ (r % 8).
template <int ROWS>
__device__ __forceinline__ int swizzled(int r, int u) {
  return (u / 8) * ROWS * 128 + r * 128 + (((u % 8) ^ (r % 8)) << 4);
}

// FP8 K/V: a producer thread's k-th 16-byte chunk of a raw [BN][HD] e4m3 tile: chunk column c
// (the same for all k) of row r. The 8 threads of a shared-memory phase take 8 consecutive rows
// at one c, so that (with raw_offset's swizzle and swizzled's) their raw loads and converted
// stores each hit 8 distinct 16-byte bank groups.
template <int HD>
__device__ __forceinline__ void fp8_chunk(int tid, int k, int& r, int& c) {
  constexpr int kCh = HD / 16;  // chunks per row
  const int idx = k * 128 + tid;
  c = (idx / 8) % kCh;
  r = idx % 8 + 8 * (idx / (8 * kCh));
}
// Byte offset of chunk c of row r in a raw [BN][HD] e4m3 tile, XOR-swizzled so that 8
// consecutive rows at one c fall in distinct 16-byte bank groups.
template <int HD>
__device__ __forceinline__ int raw_offset(int r, int c) {
  constexpr int kCh = HD / 16;
  return r * HD + ((c ^ ((r * kCh / 8) % kCh)) << 4);
}

template <typename T, int HD, bool FP8>
__global__ void __launch_bounds__(Sm90Attn<HD, FP8>::kThreads, 1) attention_sm90_kernel(const __grid_constant__ wc_attention_params p) {
#if WC_SM90A
  grid_dependents_launch();  // the split merge may be dispatched (it waits for this grid)
  using C = Sm90Attn<HD, FP8>;
  using namespace sm90;
  // The wgmmas' operand type: the query dtype, or f16 over an FP8 cache (see the header).
  using TC = typename std::conditional<FP8, __half, T>::type;
  constexpr int BM = C::kBM, BN = C::kBN, S = C::kStages, U = HD / 8;  // U: 16-byte units per row
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* sq = smem;
  uint8_t* sk = smem + C::kQ;        // stage s at sk + s · kTile
  uint8_t* sv = sk + S * C::kTile;
  uint8_t* raw = sv + S * C::kTile;  // FP8: raw stage s at raw + s · kRaw (K, then V)
  uint64_t* bars = reinterpret_cast<uint64_t*>(raw + C::kRawStages * C::kRaw);  // mbarriers: 8-byte aligned
  // K and V in the query dtype: full_k = full_v and empty_k = empty_v (one pair per stage).
  uint64_t* full_k = bars;
  uint64_t* empty_v = bars + S;
  uint64_t* full_v = FP8 ? bars + 2 * S : full_k;
  uint64_t* empty_k = FP8 ? bars + 3 * S : empty_v;
  int* s_ok = reinterpret_cast<int*>(bars + C::kBarriers);  // [S][BN]: key exists
  int* s_bad = s_ok + S * BN;        // [S]: index of the last tile loaded there with a missing key
  float* s_qmax = reinterpret_cast<float*>(s_bad + S);  // FP8: [4] producer warps' largest |q|
  float* s_qscale = s_qmax + 4;      // FP8: 2^e, the factor by which Q was divided

  Work w;
  if (!describe_work<BN>(p, BM, w)) return;  // the whole CTA leaves together
  const int kv_hi = w.kv_hi;
  const int n_iter = w.tile_end - w.tile_begin;
  const int wg = threadIdx.x / 128;
  init_kv_ring<S>(smem, full_k, empty_v, s_bad);
  if constexpr (FP8) init_kv_ring<S>(smem, full_v, empty_k, s_bad);

  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    setmaxnreg_dec<56>();
    const int tid = threadIdx.x;
    if constexpr (!FP8) {
      // cp.async straight into the swizzled layout; per tile: wait for a free stage and issue
      // the tile, then wait for the previous tile's copies, fence them to the async proxy and
      // arrive on its full barrier (two tiles in flight).
      const T* kg = static_cast<const T*>(p.k);
      const T* vg = static_cast<const T*>(p.v);
      const int lane = tid % 32;
      auto load_tile = [&](int it) {
        const int st = it % S, n0 = w.kv_lo + (w.tile_begin + it) * BN;
        int page;
        if (tma_tile<BN>(p, w, n0, kv_hi, lane, page)) {
          // Every key exists: warp 0 marks them and issues the tile by TMA, counted on the
          // stage's full barrier (all 128 producer threads still arrive on it, in produce_cp_async).
          if (tid < 32)
            tma_tile_load<BN, HD / 64>(p, w, n0, page, lane, s_ok + st * BN, &full_k[st], sk + st * C::kTile, sv + st * C::kTile);
          cp_async_commit();  // an empty group: produce_cp_async waits for one group per tile
          return;
        }
        for (int i = tid; i < BN * U; i += 128) {
          const int r = i / U, u = i % U;
          int64_t ko, vo;
          const bool valid = key_offset(p, w, n0 + r, kv_hi, p.k_stride, ko);
          key_offset(p, w, n0 + r, kv_hi, p.v_stride, vo);
          const int at = st * C::kTile + swizzled<BN>(r, u);
          cp_async16(sk + at, valid ? kg + ko + w.kv_head * p.k_head_stride + u * 8 : kg, valid);
          cp_async16(sv + at, valid ? vg + vo + w.kv_head * p.v_head_stride + u * 8 : vg, valid);
          if (u == 0) s_ok[st * BN + r] = valid;
          if (!valid) s_bad[st] = it;  // same value from every thread that sees one
        }
        cp_async_commit();
      };
      if (n_iter > 0) {
        load_q<T, HD, BM>(p, w, tid, 128, [&](int r, int u) { return sq + swizzled<BM>(r, u); });  // with tile 0
        load_tile(0);
      }
      produce_cp_async<S>(n_iter, full_k, empty_v, load_tile);
    } else {
      // FP8: raw tiles by cp.async (2 in flight), each thread converting the chunks it copied.
      constexpr int kPer = BN * (HD / 16) / 128;  // a thread's chunks per K (or V) tile: 8 / 4
      const uint8_t* kg = static_cast<const uint8_t*>(p.k);
      const uint8_t* vg = static_cast<const uint8_t*>(p.v);
      uint32_t ok_bits = 0;  // bit 8 · (tile % 2) + k: the key row of this thread's chunk k exists
      auto issue_raw = [&](int it) {
        const int rs = it % 2, n0 = w.kv_lo + (w.tile_begin + it) * BN;
        uint8_t* rk = raw + rs * C::kRaw;
        uint32_t bits = 0;
#pragma unroll 1
        for (int k = 0; k < kPer; ++k) {
          int r, c;
          fp8_chunk<HD>(tid, k, r, c);
          int64_t ko, vo;
          const bool valid = key_offset(p, w, n0 + r, kv_hi, p.k_stride, ko);
          key_offset(p, w, n0 + r, kv_hi, p.v_stride, vo);
          const int at = raw_offset<HD>(r, c);
          cp_async16(rk + at, valid ? kg + ko + w.kv_head * p.k_head_stride + c * 16 : kg, valid);
          cp_async16(rk + BN * HD + at, valid ? vg + vo + w.kv_head * p.v_head_stride + c * 16 : vg, valid);
          bits |= static_cast<uint32_t>(valid) << k;
        }
        cp_async_commit();
        ok_bits = (ok_bits & ~(0xffu << (8 * rs))) | (bits << (8 * rs));
      };
      // Raw tile `it` (its copies landed) -> f16 K (v = 0) or V (v = 1) stage it % S; then fence
      // the writes to the async proxy and arrive on the stage's full barrier. K also carries the
      // key flags.
      auto convert = [&](int it, int v) {
        const int st = it % S;
        const uint8_t* src = raw + (it % 2) * C::kRaw + v * BN * HD;
        uint8_t* dst = (v ? sv : sk) + st * C::kTile;
#pragma unroll 1
        for (int k = 0; k < kPer; ++k) {
          int r, c;
          fp8_chunk<HD>(tid, k, r, c);
          const uint4 b = *reinterpret_cast<const uint4*>(src + raw_offset<HD>(r, c));
          uint4 lo, hi;  // elements 0-7, 8-15, as f16 of value · 2^-8 (kKvUnscale)
          e4m3x4_to_f16x2_scaled(b.x, lo.x, lo.y);
          e4m3x4_to_f16x2_scaled(b.y, lo.z, lo.w);
          e4m3x4_to_f16x2_scaled(b.z, hi.x, hi.y);
          e4m3x4_to_f16x2_scaled(b.w, hi.z, hi.w);
          st_shared_for_async16(dst + swizzled<BN>(r, 2 * c), lo);
          st_shared_for_async16(dst + swizzled<BN>(r, 2 * c + 1), hi);
          if (!v) {
            const bool ok = (ok_bits >> (8 * (it % 2) + k)) & 1u;
            if (c == 0) s_ok[st * BN + r] = ok;
            if (!ok) s_bad[st] = it;  // same value from every thread that sees one
          }
        }
        fence_proxy_async_smem();
        mbar_arrive(v ? &full_v[st] : &full_k[st]);
      };
      if (n_iter > 0) {
        load_q<T, HD, BM>(p, w, tid, 128, [&](int r, int u) { return sq + swizzled<BM>(r, u); });
        cp_async_commit();
        issue_raw(0);
        if (n_iter > 1) {
          issue_raw(1);
          cp_async_wait<2>();  // Q has landed
        } else {
          cp_async_wait<1>();
        }
        if constexpr (std::is_same<T, __nv_bfloat16>::value) {
          // Q -> f16 · 2^-e over the CTA's tile (attention.cuh), among the producer warps.
          const float up = q_to_f16<BM, HD>(
              tid, 128, [&](int r, int u) { return sq + swizzled<BM>(r, u); }, [] { named_barrier_sync(3, 128); },
              s_qmax, [](uint8_t* a, uint4 v) { st_shared_for_async16(a, v); });
          if (tid == 0) *s_qscale = up;
        } else if (tid == 0) {
          *s_qscale = 1.0f;  // f16 queries are used as they are
        }
      }
      // Per tile: its raw copies landed, convert K once its stage is free, then V, then reuse
      // the raw stage for tile it + 2 (each thread overwrites only the chunks it just read).
      for (int it = 0; it < n_iter; ++it) {
        if (it + 1 < n_iter) cp_async_wait<1>();
        else cp_async_wait<0>();
        mbar_wait(&empty_k[it % S], ((it / S) & 1) ^ 1);  // a fresh barrier passes the first round
        convert(it, 0);
        mbar_wait(&empty_v[it % S], ((it / S) & 1) ^ 1);
        convert(it, 1);
        if (it + 2 < n_iter) issue_raw(it + 2);
      }
    }
    return;
  }

  // ------------------------------------------------------------------ consumers
  setmaxnreg_inc<224>();
  const int cw = wg - 1;                          // consumer warpgroup: rows 64 cw .. 64 cw + 63
  const int lane = threadIdx.x & 31, wq = (threadIdx.x / 32) % 4;
  const int g = lane >> 2, t4 = lane & 3;
  int row_pos[2];
  bool row_ok[2];
  tile_rows(w, cw * 64 + wq * 16, g, row_ok, row_pos);
  const Visibility vis = visibility(p, w, BM, kv_hi);

  float o[HD / 2], s[BN / 2];
  uint32_t a[BN / 16][4];  // P of the previous tile, the register A operand of O += P V
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) s[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  ScoreMap score = ScoreMap::of(p);

  // The ring as the consumers see it: K of tile it is waited for before its Q·Kᵀ and V of tile
  // it before its P·V (the same barrier when K and V share a stage; with FP8, K of tile it
  // arrives after V of tile it − 1 — the producer converts in order — so only the last V's
  // wait can block, but each wait states what its wgmma reads); K's stage is released once the
  // softmax has read its key flags (a no-op when shared), V's once its P·V retired.
  auto wait_k = [&](int it) { mbar_wait(&full_k[it % S], (it / S) & 1); };
  auto wait_v = [&](int it) {
    if constexpr (FP8) mbar_wait(&full_v[it % S], (it / S) & 1);
  };
  auto release_k = [&](int it) {
    if constexpr (FP8) {
      if (lane == 0) mbar_arrive(&empty_k[it % S]);
    }
  };
  auto release_v = [&](int it) {
    if (lane == 0) mbar_arrive(&empty_v[it % S]);
  };

  // S = Q Kᵀ of the tile in stage st, issued (not waited for): k16 slice kk is 32 bytes into
  // 128-byte row block kk / 4.
  auto issue_s = [&](int st) {
    const uint8_t* k_t = sk + st * C::kTile;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const int col = (kk % 4) * 32;
      const uint64_t da = desc_k_major_sw128(sq + (kk / 4) * BM * 128 + cw * 64 * 128 + col);
      const uint64_t db = desc_k_major_sw128(k_t + (kk / 4) * BN * 128 + col);
      wgmma_m64n128k16_ss<TC>(s, da, db, kk > 0);
    }
    wgmma_commit();
  };
  // O += P V with the tile in stage st, issued: keys 16 ks .. 16 ks + 15 are S's n8 blocks 2 ks
  // and 2 ks + 1; V's 16 rows from key 16 ks are 2048 bytes into each 64-column block (LBO: the
  // next block, BN rows on).
  auto issue_pv = [&](int st) {
    const uint8_t* v_t = sv + st * C::kTile;
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks)
      wgmma_rs<TC, HD>(o, a[ks], desc_mn_major_sw128(v_t + ks * 16 * 128, BN * 128), 1);
    wgmma_commit();
  };
  // Scale, soft-cap, mask (not needed when every row sees every key of the tile) and the online
  // softmax statistics of tile `it` in stage st (rows g and g + 8 of this warp's 16, a quad per
  // row): s becomes P; corr is the factor for O.
  auto softmax = [&](int it, int st, float (&corr)[2]) {
    const int n0 = w.kv_lo + (w.tile_begin + it) * BN;
    const int* ok = s_ok + st * BN;
    const bool unmasked = s_bad[st] != it && vis.all_see(n0, BN);
    mask_tile<BN / 8>(s, p, score, unmasked, ok, n0, 0, t4, row_ok, row_pos, kv_hi);
    softmax_stats<BN / 8>(s, m, l, corr, score.unit);
  };
  auto pack_p = [&]() {
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      a[ks][0] = pack2<TC>(s[8 * ks + 0], s[8 * ks + 1]);
      a[ks][1] = pack2<TC>(s[8 * ks + 2], s[8 * ks + 3]);
      a[ks][2] = pack2<TC>(s[8 * ks + 4], s[8 * ks + 5]);
      a[ks][3] = pack2<TC>(s[8 * ks + 6], s[8 * ks + 7]);
    }
  };
  auto fence_s = [&]() {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) fence_operand(s[i]);
  };
  auto fence_o_p = [&]() {
#pragma unroll
    for (int i = 0; i < HD / 2; ++i) fence_operand(o[i]);
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) fence_operand_u32(a[ks][r]);
  };

  // Intra-warpgroup pipelining (FlashAttention-3): tile it's Q·Kᵀ runs on the tensor core while
  // the previous tile's P·V is queued behind it, and the softmax of tile it runs while that P·V
  // finishes. O is rescaled by tile it's correction only after the P·V of tile it − 1 (scaled
  // to the old max) has landed in it. A stage is released when its P·V is done, so the
  // consumers hold two stages and the producer fills the third.
  //
  // Ping-pong between the two consumer warpgroups (FlashAttention-3's inter-warpgroup
  // schedule): they take turns issuing their wgmmas — named barrier 1 + cw is this
  // warpgroup's turn, given by the other arriving on it after issuing its own — so that one's
  // softmax runs under the other's tensor-core work. There are n_iter + 1 issue phases (S of
  // tile 0; S of tile it with P·V of tile it − 1; P·V of the last tile); warpgroup 1 opens the
  // first turn of warpgroup 0 and skips its last hand-over, which leaves every barrier whole.
  const int phases = n_iter > 0 ? n_iter + 1 : 0;
  auto my_turn = [&]() { named_barrier_sync(1 + cw, 256); };
  auto hand_over = [&](int phase) {
    if (cw == 0 || phase + 1 < phases) named_barrier_arrive(2 - cw, 256);
  };
  if (cw == 1 && phases > 0) named_barrier_arrive(1, 256);

  if (n_iter > 0) {
    wait_k(0);
    // FP8: Q was divided by *s_qscale (signalled with K 0), K's tiles hold value · 2^-8.
    if constexpr (FP8) score = ScoreMap::of(p, *s_qscale * kKvUnscale<FP8>);
    my_turn();
    wgmma_fence();
    issue_s(0);
    hand_over(0);
    wgmma_wait<0>();
    fence_s();
    float corr[2];
    softmax(0, 0, corr);  // O is zero: nothing to rescale
    release_k(0);
    pack_p();
  }
  for (int it = 1; it < n_iter; ++it) {
    const int st = it % S, prev = (it - 1) % S;
    wait_k(it);
    wait_v(it - 1);
    fence_s();
    fence_o_p();
    my_turn();
    wgmma_fence();
    issue_s(st);
    issue_pv(prev);
    hand_over(it);
    wgmma_wait<1>();  // S of tile it is ready; P·V of tile it − 1 may still run
    fence_s();
    float corr[2];
    softmax(it, st, corr);
    release_k(it);
    wgmma_wait<0>();
    fence_o_p();
    release_v(it - 1);  // this warp is done with tile it − 1's V
    rescale_rows<HD / 8>(o, corr);
    pack_p();
  }
  if (n_iter > 0) {
    const int last = (n_iter - 1) % S;
    wait_v(n_iter - 1);
    fence_o_p();
    my_turn();
    wgmma_fence();
    issue_pv(last);
    hand_over(n_iter);
    wgmma_wait<0>();
    fence_o_p();
    release_v(n_iter - 1);
  }

  // Epilogue from registers: thread holds rows g, g + 8, columns 8 i + 2 t4 + 0..1.
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    if (!row_ok[h]) continue;
    const int gr = w.row0 + cw * 64 + wq * 16 + g + 8 * h;
    const int64_t tok = w.q_start + gr / w.group;
    const int head = w.kv_head * w.group + gr % w.group;
    const float inv = l[h] > 0.0f ? p.v_scale * kKvUnscale<FP8> / l[h] : 0.0f;
    const float lse = l[h] > 0.0f ? (m[h] + log2f(l[h])) * kLn2 : -INFINITY;
    if (p.num_splits > 1) {
      const int64_t rowid = (static_cast<int64_t>(blockIdx.z) * p.total_q + tok) * p.num_q_heads + head;
      float* dst = p.partial_out + rowid * HD + 2 * t4;
#pragma unroll
      for (int i = 0; i < HD / 8; ++i)
        *reinterpret_cast<float2*>(dst + 8 * i) = make_float2(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
      if (t4 == 0) p.partial_lse[rowid] = lse;
    } else {
      T* dst = out + tok * p.out_stride + static_cast<int64_t>(head) * HD + 2 * t4;
#pragma unroll
      for (int i = 0; i < HD / 8; ++i)
        *reinterpret_cast<uint32_t*>(dst + 8 * i) = pack2<T>(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
      if (t4 == 0 && p.lse != nullptr) p.lse[tok * p.num_q_heads + head] = lse;
    }
  }
#else
  __trap();
#endif
}

template <typename T, int HD, bool FP8>
wc_status launch(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  using C = Sm90Attn<HD, FP8>;
  return launch_grid(attention_sm90_kernel<T, HD, FP8>, p, C::kBM, C::kThreads, C::kSmem, s, occupancy);
}

// The instantiation for p's dtype and head dim; FP8: K/V e4m3, else in the query dtype.
template <bool FP8>
wc_status dispatch(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  switch (p.dtype * 1000 + p.head_dim) {
    case WC_BF16 * 1000 + 64: return launch<__nv_bfloat16, 64, FP8>(p, s, occupancy);
    case WC_BF16 * 1000 + 128: return launch<__nv_bfloat16, 128, FP8>(p, s, occupancy);
    case WC_F16 * 1000 + 64: return launch<__half, 64, FP8>(p, s, occupancy);
    case WC_F16 * 1000 + 128: return launch<__half, 128, FP8>(p, s, occupancy);
    default: return WC_ERR_UNSUPPORTED;
  }
}

}  // namespace

wc_status launch_attention_sm90(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  if (p.head_dim != p.head_dim_v) return WC_ERR_UNSUPPORTED;
  if (p.kv_dtype == WC_E4M3) return dispatch<true>(p, s, occupancy);
  if (p.kv_dtype != p.dtype) return WC_ERR_UNSUPPORTED;
  return dispatch<false>(p, s, occupancy);
}

}  // namespace wc
