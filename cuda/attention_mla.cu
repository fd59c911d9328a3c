// attention_mla.cu — MLA decode (DeepSeek-V2/V3 multi-head latent attention, absorbed form) on
// tensor cores (mma.sync m16n8k16, ldmatrix, cp.async). Runs on sm_80 and sm_90.
//
// Contract: wc_attention_params (warpcore/attention.h) with (head_dim, head_dim_v) = (576, 512):
// bf16 / f16 queries q̃ = [W_ukᵀ q_nope | q_pe] `[total_q, num_q_heads, 576]`, and K rows that
// are the latent cache's [c_kv (512) | k_pe (64)] — contiguous or paged (src/kv_cache.rs, one
// kv head: `[num_pages, page_size, 1, 576]`). V is the first 512 elements of the same rows: the
// kernel reads each row once and uses it as key and value (p.v is not read; the Rust wrapper
// requires v to be that prefix of k). Out `[total_q, num_q_heads, 512]` is the attention-
// weighted latent; the caller applies W_uv. Same masks, split-KV, lse and merge as the GQA
// kernels (attention.cuh); f32 softmax statistics and accumulators. An FP8 e4m3 latent cache
// (one scale: k_scale = v_scale) arrives by cp.async in raw stages of 576-byte rows, each tile
// converted into one f16 tile of value · 2^-8 in shared memory before the mma, which then runs
// in f16 (convert_fp8 and q_to_f16, attention.cuh; bf16 queries scaled into f16's range per
// CTA); the scale (and the 2^8) folds into the softmax scale and the output (half the bytes of the memory-bound 16-head decode).
//
// Why its own kernel: a row's output is 512 f32 accumulators, twice what one warp's registers
// hold for 16 rows next to everything else. So each 16-row tile is served by two warps that own
// 256 output columns each (kWC = 2) and both compute the tile's scores S = Q Kᵀ (the same values,
// so no exchange and no extra barrier). That repeats the q·k half of the FLOPs (×1.53 tensor
// work). On Hopper, batches above 16 rows per sequence run attention_mla_sm90.cu instead (wgmma
// reads K from shared memory once per 64 rows: past the shared-memory bound below).
//
// Thread mapping. A CTA owns one (sequence · kv head = blockIdx.x, m-tile, split) exactly as the
// GQA kernels (GQA packing: row r is query token r / group, head r % group — group = num_q_heads
// for DeepSeek's one latent head). Warp w: column group wc = w % 2, key group wk = (w / 2) % WK,
// row group wm = w / (2 · WK). Two configurations:
//   decode (max_q_len · group <= 16): BM = 16 rows, WK = 2 key groups (16 keys of each 32-key
//           tile, combined in the epilogue), 4 warps; 94 KB of shared memory, 2 CTAs per SM on
//           Hopper. Serves tensor-parallel DeepSeek (16 heads per GPU) at q_len 1.
//   wide:   BM = 64 rows, WK = 1, 8 warps; 150 KB (A100 / H100 / H200; devices with less
//           shared memory run the decode configuration on every m-tile). Serves 128 heads.
// Pipeline: 2 stages of 32 keys × 576 (padded pitch 584: conflict-free ldmatrix), one barrier
// per tile, as attention_gqa.cu: wait, barrier, refill the stage the previous tile used, S = Q Kᵀ
// (Q re-read from shared memory: 144 registers would not fit), mask, online softmax
// (attention.cuh), O += P V with P from the S accumulators and V by ldmatrix.trans from the K
// tile's first 512 columns.
//
// Roofline (H200, per key of a sequence): bytes = 576 · 2 = 1152; FLOPs = num_heads · q_len ·
// 2 · (576 + 512) = 2176 per head. 16 heads: 30 FLOP/byte, memory-bound (batch 64 × kv 4096:
// 302 MB -> 74 µs at 4.06 TB/s). 128 heads: 242 FLOP/byte, compute-bound (the same batch is
// 73 TFLOP -> 110 µs at 660 TF/s). Shared memory per useful MAC (wide config): per warp and
// tile, Q 18.4 KB + K 36.9 KB + V 16.4 KB = 72 KB for 278 K useful MACs, 0.26 B/MAC against
// 128 B/clk and ~1000 MAC/clk per SM: the wide configuration is shared-memory-bound at about
// half the tensor rate (docs/attention.md has the prediction).
#include <atomic>

#include "attention.cuh"

namespace wc {
namespace {

constexpr int kMlaD = 576;   // kv_lora_rank 512 + qk_rope_head_dim 64
constexpr int kMlaDV = 512;  // kv_lora_rank

template <int WM, int WK, bool FP8>
struct MlaCfg {
  static constexpr int kWC = 2;                    // column groups (warps sharing a row tile)
  static constexpr int kCols = kMlaDV / kWC;       // output columns per warp
  static constexpr int kBM = 16 * WM;              // query rows per CTA
  static constexpr int kBN = 32;                   // keys per tile
  static constexpr int kKW = kBN / WK;             // keys per warp per tile
  static constexpr int kThreads = 32 * WM * WK * kWC;
  static constexpr int kPitch = kMlaD + 8;         // smem row pitch of Q and K (elements)
  static constexpr int kStages = 2;
  static_assert(kKW % 16 == 0, "each warp needs whole 16-key steps");
  // Shared memory (bytes), in this order: Q, the T-typed K tiles (one per stage, or for FP8 the
  // single one each raw stage converts into), the raw FP8 stages, key validity, statistics.
  static constexpr int kQ = kBM * kPitch * 2;
  static constexpr int kK = (FP8 ? 1 : kStages) * kBN * kPitch * 2;
  static constexpr int kRaw = FP8 ? kStages * kBN * kMlaD : 0;
  static constexpr int kOk = kStages * kBN * 4;
  static constexpr int kStats = 2 * WK * kBM * 4;  // m and l per key group
  static constexpr int kEpilogue = WK * kBM * kMlaDV * 4;
  static_assert(kEpilogue <= kQ + kK + kRaw, "epilogue reuses the Q, K and raw buffers");
  static constexpr int kSmem = kQ + kK + kRaw + kOk + kStats;
};

template <typename T, int WM, int WK, bool FP8>
__global__ void __launch_bounds__(MlaCfg<WM, WK, FP8>::kThreads) attention_mla_kernel(const wc_attention_params p) {
  grid_dependents_launch();  // the split merge may be dispatched (it waits for this grid)
  using C = MlaCfg<WM, WK, FP8>;
  constexpr int BM = C::kBM, BN = C::kBN, KW = C::kKW, P = C::kPitch, S = C::kStages, COLS = C::kCols;
  // The mma operand type: T, or f16 over an FP8 cache (as attention_gqa.cu: q_to_f16).
  using TC = typename std::conditional<FP8, __half, T>::type;
  extern __shared__ __align__(16) unsigned char smem[];
  TC* sq = reinterpret_cast<TC*>(smem);  // T as loaded, TC once converted (FP8 with bf16 queries)
  TC* sk = reinterpret_cast<TC*>(smem + C::kQ);
  uint8_t* raw = smem + C::kQ + C::kK;  // FP8: the cp.async stages (rows of 576 bytes)
  int* s_ok = reinterpret_cast<int*>(smem + C::kQ + C::kK + C::kRaw);
  float* s_stats = reinterpret_cast<float*>(smem + C::kQ + C::kK + C::kRaw + C::kOk);

  Work w;
  if (!describe_work<BN>(p, BM, w)) return;
  const int kv_hi = w.kv_hi;
  auto load_tile = [&](int tile, int stage) {
    if constexpr (FP8)
      return load_rows<uint8_t, kMlaD, BN, C::kThreads>(p, w, p.k, p.k_stride, p.k_head_stride, tile, kv_hi,
                                                        raw + stage * BN * kMlaD, kMlaD, s_ok + stage * BN);
    else
      return load_rows<T, kMlaD, BN, C::kThreads>(p, w, p.k, p.k_stride, p.k_head_stride, tile, kv_hi,
                                                  sk + stage * BN * P, P, s_ok + stage * BN);
  };
  const Visibility vis = visibility(p, w, BM, kv_hi);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wc = warp % C::kWC, wk = (warp / C::kWC) % WK, wm = warp / (C::kWC * WK);
  const int g = lane >> 2, t4 = lane & 3;

  int row_pos[2];
  bool row_ok[2];
  tile_rows(w, wm * 16, g, row_ok, row_pos);

  float o[COLS / 8][4];
#pragma unroll
  for (int i = 0; i < COLS / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  ScoreMap score = ScoreMap::of(p, kKvUnscale<FP8>);  // FP8: the tile holds K · 2^-8
  const int n_iter = w.tile_end - w.tile_begin;
  // bf16 queries over an FP8 cache: Q in a cp.async group of its own, converted to f16 · 2^-e
  // (q_to_f16; s_stats is free until the epilogue) while the first tile loads.
  constexpr bool kQToF16 = FP8 && std::is_same<T, __nv_bfloat16>::value;
  load_q<T, kMlaD, BM>(p, w, threadIdx.x, C::kThreads, [&](int r, int u) { return sq + r * P + u * 8; });
  if constexpr (kQToF16) cp_async_commit();
  CpAsyncRing<S> ring;  // attention.cuh
  ring.start(w, n_iter, load_tile);
  if constexpr (kQToF16) {
    if (n_iter > 0) score = ScoreMap::of(p, kKvUnscale<FP8> * q_to_f16_cta<BM, kMlaD, S>(sq, P, C::kThreads, s_stats));
  }

  for (int it = 0; it < n_iter; ++it) {
    const int st = it % S;
    const bool keys_exist = ring.advance(w, it, n_iter, load_tile);
    if constexpr (FP8) {
      // Raw stage st -> the single f16 tile (free: every warp is past tile it - 1).
      convert_fp8<kMlaD, BN, C::kThreads>(raw + st * BN * kMlaD, sk, P);
      __syncthreads();
    }
    const TC* k_t = FP8 ? sk : sk + st * BN * P;
    const int* ok = s_ok + st * BN;
    const int n0 = w.kv_lo + (w.tile_begin + it) * BN;

    // S = Q Kᵀ for this warp's 16 rows and KW keys over all 576 dims (both column groups alike).
    float s[KW / 8][4];
#pragma unroll
    for (int i = 0; i < KW / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll 4
    for (int kk = 0; kk < kMlaD / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, sq + (wm * 16 + (lane & 15)) * P + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int nn = 0; nn < KW / 16; ++nn) {
        uint32_t b[4];
        const int key = wk * KW + nn * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(b, k_t + key * P + kk * 16 + ((lane >> 3) & 1) * 8);
        mma<TC>(s[2 * nn], a, b[0], b[1]);
        mma<TC>(s[2 * nn + 1], a, b[2], b[3]);
      }
    }

    const bool unmasked = keys_exist && vis.all_see(n0, BN);
    mask_tile<KW / 8>(&s[0][0], p, score, unmasked, ok, n0, wk * KW, t4, row_ok, row_pos, kv_hi);
    softmax_step<KW / 8, COLS / 8>(&s[0][0], &o[0][0], m, l, score.unit);

    // O += P V over this warp's 256 columns: V = the K tile's first 512 columns.
#pragma unroll
    for (int ks = 0; ks < KW / 16; ++ks) {
      uint32_t a[4];
      a[0] = pack2<TC>(s[2 * ks][0], s[2 * ks][1]);
      a[1] = pack2<TC>(s[2 * ks][2], s[2 * ks][3]);
      a[2] = pack2<TC>(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      a[3] = pack2<TC>(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      const int key = wk * KW + ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const TC* v_row = k_t + key * P + wc * COLS + (lane >> 4) * 8;
#pragma unroll
      for (int dn = 0; dn < COLS / 16; ++dn) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_row + dn * 16);
        mma<TC>(o[2 * dn], a, b[0], b[1]);
        mma<TC>(o[2 * dn + 1], a, b[2], b[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: each warp's (m, l) (column group 0's; group 1 holds the same) and its 256 output
  // columns to shared memory, then combine the key groups (attention.cuh's store_rows).
  float* s_o = reinterpret_cast<float*>(smem);  // [WK][BM][512], over Q, K and the raw stages
  float* s_m = s_stats;                       // [WK][BM]
  float* s_l = s_stats + WK * BM;             // [WK][BM]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    const int r = wm * 16 + g + 8 * h;
    if (t4 == 0 && wc == 0) {
      s_m[wk * BM + r] = m[h];
      s_l[wk * BM + r] = l[h];
    }
#pragma unroll
    for (int i = 0; i < COLS / 8; ++i) {
      float* dst = s_o + (wk * BM + r) * kMlaDV + wc * COLS + i * 8 + 2 * t4;
      dst[0] = o[i][2 * h];
      dst[1] = o[i][2 * h + 1];
    }
  }
  __syncthreads();
  store_rows<T, kMlaDV, BM, WK, C::kThreads>(p, w, s_o, s_m, s_l, p.v_scale * kKvUnscale<FP8>);
}

// Opt-in shared memory per block of the current device, asked of the runtime once per device
// (ordinals below 64).
cudaError_t smem_optin(int& bytes) {
  static std::atomic<int> known[64];  // 0: not asked yet
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const bool cached = dev >= 0 && dev < 64;
  if (cached && (bytes = known[dev].load(std::memory_order_relaxed)) != 0) return cudaSuccess;
  e = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess && cached) known[dev].store(bytes, std::memory_order_relaxed);
  return e;
}

template <typename T, bool FP8>
wc_status launch_mla(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  using Decode = MlaCfg<1, 2, FP8>;
  using Wide = MlaCfg<4, 1, FP8>;
  int smem = 0;
  if (cudaError_t e = smem_optin(smem); e != cudaSuccess) return static_cast<wc_status>(e);
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  if (static_cast<int64_t>(p.max_q_len) * group > Decode::kBM && smem >= Wide::kSmem)
    return launch_grid(attention_mla_kernel<T, 4, 1, FP8>, p, Wide::kBM, Wide::kThreads, Wide::kSmem, s, occupancy);
  return launch_grid(attention_mla_kernel<T, 1, 2, FP8>, p, Decode::kBM, Decode::kThreads, Decode::kSmem, s, occupancy);
}

}  // namespace

wc_status launch_attention_mla(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  const bool fp8 = p.kv_dtype == WC_E4M3;
  if (p.kv_dtype != p.dtype && !fp8) return WC_ERR_UNSUPPORTED;
  switch (p.dtype) {
    case WC_BF16: return fp8 ? launch_mla<__nv_bfloat16, true>(p, s, occupancy) : launch_mla<__nv_bfloat16, false>(p, s, occupancy);
    case WC_F16: return fp8 ? launch_mla<__half, true>(p, s, occupancy) : launch_mla<__half, false>(p, s, occupancy);
    default: return WC_ERR_UNSUPPORTED;
  }
}

}  // namespace wc

extern "C" int32_t wc_attention_mla_wide_smem(int32_t fp8_cache) {
  return fp8_cache ? wc::MlaCfg<4, 1, true>::kSmem : wc::MlaCfg<4, 1, false>::kSmem;
}
