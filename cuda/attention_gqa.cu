// attention_gqa.cu — GQA attention on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async):
// varlen prefill / append and paged decode, causal (bottom-right), sliding window, softcap,
// split-KV with a log-sum-exp merge, merge_states. Runs on sm_80 and sm_90.
//
// Contract: wc_attention_params (warpcore/attention.h). bf16 / f16; (head_dim, head_dim_v) in
// {(64, 64), (96, 96), (128, 128), (256, 256), (192, 128)} — 192/128 is MLA prefill: a different
// value head dim is one more instantiation of the same kernel; (576, 512), MLA decode over the
// latent cache, is dispatched from here to attention_mla.cu; f32 softmax statistics and
// accumulators. FP8 e4m3 K/V (the paged cache; decode and prefill configurations): the bytes
// arrive by cp.async into a raw stage and are converted in shared memory to f16 holding value ·
// 2^-8 (convert_fp8, attention.cuh: exact, three integer ops per four bytes) before the mma,
// which then runs in f16 — bf16 queries are scaled into f16's range per CTA (q_to_f16); the
// scales fold into the softmax scale (k_scale, 2^8 and Q's 2^e) and the output (v_scale, 2^8).
//
// Thread mapping. A CTA owns one (sequence · kv head = blockIdx.x, m-tile = gridDim.y - 1 -
// blockIdx.y (heaviest causal tiles first), split = blockIdx.z). The m dimension is the
// flattened (query token, query head in the kv head's group) index — GQA packing: every query
// head that shares the kv head is in the same tile, so each K/V tile loaded into shared
// memory serves the whole group (decode reads each K/V byte from memory once).
//   prefill config: 4 warps along m, each warp MT 16-row tiles × all BN keys (MT = 2, BM = 128
//                   up to head_dim 128; MT = 1, BM = 64 above: kPrefillTiles);
//   decode config:  1 warp along m (BM = 16 rows), 4 (or 2) warps split each key tile,
//                   combined in the epilogue. Chosen when max_q_len · group <= 16.
// Pipeline: a ring of Cfg::kStages K/V tiles filled by cp.async (on Hopper 3 for decode and the
// two-tile prefill, 4 raw stages for FP8 decode, 2 above head_dim 128; fewer where shared
// memory is smaller), one barrier per key tile: wait for the current tile, barrier, refill the
// stage the previous tile used, then S = Q Kᵀ (ldmatrix + mma), mask (skipped for tiles every
// row sees whole), online softmax in the log2 domain (attention.cuh's softmax_step), O += P V
// with P taken straight from the S accumulators (ldmatrix.trans for V). Epilogue through
// shared memory: combine the key-splitting warps, normalise, write out and lse, or f32 partials.
//
// Shared memory rows are padded by 16 bytes (pitch = head_dim + 8 elements), which makes the
// 8 rows of every ldmatrix hit distinct bank groups for all supported head dims.
//
// Roofline (H200): decode reads K and V once: bytes = 2 · kv_len · num_kv_heads · head_dim · 2
// per sequence -> at 4.06 TB/s, batch 64 × kv 4096 × 8 heads × 128 is 1.07 GB -> 264 µs.
// Causal prefill: FLOPs = 4 · q_len · kv_len/2 · num_q_heads · head_dim (halved by the mask).
#include <cuda_fp8.h>

#include <type_traits>

#include "attention.cuh"

namespace wc {
namespace {

// ------------------------------------------------------------------ configuration
// HOPPER: sized for Hopper's 228 KB of shared memory per SM, else for sm_80's 164 KB (sm_86 /
// sm_89: 100 KB). The sm_90a compilation builds the Hopper-sized kernels and every other target
// the others (kHopperTarget); the launcher picks by the device's compute capability (9.0 runs
// the sm_90a code), so each kernel body is compiled once per target.
template <int HD, int HDV, int WARPS_M, int WARPS_N, int MT, bool FP8, bool HOPPER>
struct Cfg {
  static constexpr int kBM = 16 * WARPS_M * MT;                     // query rows per CTA
  // keys per tile: 64; 32 at head_dim 256, and with two 16-row tiles per warp at head_dim > 64
  // (registers: the S accumulators double)
  static constexpr int kBN = (HD <= 192 && HDV <= 192 && (MT == 1 || HD <= 64)) ? 64 : 32;
  static constexpr int kKW = kBN / WARPS_N;                         // keys per warp per tile
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int kPitch = HD + 8;                             // smem row pitch of Q, K
  static constexpr int kPitchV = HDV + 8;                           // and of V (elements)
  static_assert(kKW % 16 == 0, "each warp needs whole 16-key steps");
  static_assert(HD % 16 == 0 && HDV % 32 == 0, "head dims: multiples of 16 (q/k) and 32 (v)");
  // K/V tiles in the cp.async ring (kStages - 1 in flight while one is computed on). Hopper:
  // decode (memory-bound) 3 stages (FP8: 4 raw stages of half the bytes), 2 CTAs per SM at
  // head_dim 96-256, 3 at 64 (FP8: 4); prefill 3 with two 16-row tiles per warp (registers
  // hold those at 2 CTAs per SM anyway), 2 above head_dim 128, where a third stage would cost
  // the second CTA. Elsewhere: 2, and 3 for the two-tile prefill up to head_dim 96 — what
  // keeps 2 CTAs per SM in sm_80's 164 KB.
  static constexpr int kStages = HOPPER ? (WARPS_M == 1 ? (FP8 ? 4 : 3) : (MT == 2 ? 3 : 2))
                                        : (WARPS_M > 1 && MT == 2 && HD <= 96 ? 3 : 2);
  // T-typed K/V buffers: one per stage, or (FP8) the single one each raw stage converts into.
  static constexpr int kTStages = FP8 ? 1 : kStages;
  // Shared memory (bytes): Q, the K and V buffers, (FP8) the raw stages, key validity per
  // stage, epilogue stats.
  static constexpr int kQ = kBM * kPitch * 2;
  static constexpr int kK = kTStages * kBN * kPitch * 2;
  static constexpr int kV = kTStages * kBN * kPitchV * 2;
  static constexpr int kRawK = FP8 ? kStages * kBN * HD : 0;
  static constexpr int kRawV = FP8 ? kStages * kBN * HDV : 0;
  // Q, the T tiles and the raw stages lie first, in that order; the epilogue reuses them.
  static constexpr int kTiles = kQ + kK + kV + kRawK + kRawV;
  static constexpr int kEpilogue = WARPS_N * kBM * HDV * 4;
  static_assert(kEpilogue <= kTiles, "epilogue reuses the Q, K/V and raw buffers");
  static constexpr int kOk = kStages * kBN * 4;
  static constexpr int kStats = 2 * WARPS_N * kBM * 4;  // m and l per warp column
  static constexpr int kSmem = kTiles + kOk + kStats;
};

template <typename T, int HD, int HDV, int WARPS_M, int WARPS_N, int MT, bool FP8, bool HOPPER>
__device__ __forceinline__ void attention_body(const wc_attention_params& p) {
  using C = Cfg<HD, HDV, WARPS_M, WARPS_N, MT, FP8, HOPPER>;
  using KV = typename std::conditional<FP8, uint8_t, T>::type;
  // The mma operand type: T, or f16 over an FP8 cache (convert_fp8 and q_to_f16, attention.cuh:
  // the tiles hold e4m3 values · 2^-8 exactly; bf16 queries are scaled into f16's range per CTA).
  using TC = typename std::conditional<FP8, __half, T>::type;
  constexpr int BM = C::kBM, BN = C::kBN, KW = C::kKW, P = C::kPitch, PV = C::kPitchV, S = C::kStages;
  extern __shared__ __align__(16) unsigned char smem[];
  TC* sq = reinterpret_cast<TC*>(smem);  // T as loaded, TC once converted (FP8 with bf16 queries)
  TC* sk = reinterpret_cast<TC*>(smem + C::kQ);
  TC* sv = reinterpret_cast<TC*>(smem + C::kQ + C::kK);
  int* s_ok = reinterpret_cast<int*>(smem + C::kTiles);
  float* s_stats = reinterpret_cast<float*>(smem + C::kTiles + C::kOk);
  // Where cp.async lands K/V: the tiles themselves, or (FP8) the raw stages.
  KV* ld_k = FP8 ? reinterpret_cast<KV*>(smem + C::kQ + C::kK + C::kV) : reinterpret_cast<KV*>(sk);
  KV* ld_v = FP8 ? reinterpret_cast<KV*>(smem + C::kQ + C::kK + C::kV + C::kRawK) : reinterpret_cast<KV*>(sv);
  const int ld_pitch_k = FP8 ? HD : P, ld_pitch_v = FP8 ? HDV : PV;

  Work w;
  if (!describe_work<BN>(p, BM, w)) return;
  const int kv_hi = w.kv_hi;
  // Loads a K/V tile into a stage; returns whether every key this thread loaded exists.
  auto load_tile = [&](int tile, int stage) {
    const bool k_ok = load_rows<KV, HD, BN, C::kThreads>(p, w, p.k, p.k_stride, p.k_head_stride, tile, kv_hi,
                                                         ld_k + stage * BN * ld_pitch_k, ld_pitch_k, s_ok + stage * BN);
    load_rows<KV, HDV, BN, C::kThreads>(p, w, p.v, p.v_stride, p.v_head_stride, tile, kv_hi,
                                        ld_v + stage * BN * ld_pitch_v, ld_pitch_v, nullptr);
    return k_ok;
  };
  const Visibility vis = visibility(p, w, BM, kv_hi);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp % WARPS_M, wn = warp / WARPS_M;
  const int g = lane >> 2, t4 = lane & 3;

  // This thread's rows: g and g + 8 of each of its warp's MT 16-row tiles (rows
  // (wm · MT + mt) · 16 ..): validity and query positions.
  int row_pos[MT][2];
  bool row_ok[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) tile_rows(w, (wm * MT + mt) * 16, g, row_ok[mt], row_pos[mt]);

  float o[MT][HDV / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < HDV / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;

  // Prefill config with one 16-row tile per warp (head_dim 192 / 256 keep MT = 1) and head_dim
  // <= 192: this warp's Q fragments are read from shared memory once, at the first key tile (Q
  // arrives with it), and kept in registers (HD / 4 of them); otherwise they are re-read at
  // every tile.
  constexpr bool kQInRegs = WARPS_N == 1 && MT == 1 && HD <= 192;
  uint32_t qf[kQInRegs ? HD / 16 : 1][4];

  ScoreMap score = ScoreMap::of(p, kKvUnscale<FP8>);  // FP8: the tiles hold K · 2^-8
  const int n_iter = w.tile_end - w.tile_begin;
  // Prologue: Q and the first S - 1 key tiles, one commit group per tile (Q in the first).
  // (bf16 queries over an FP8 cache: Q in a group of its own, converted to f16 · 2^-e once it
  // landed — q_to_f16; s_stats is free until the epilogue — while the first tiles load.)
  constexpr bool kQToF16 = FP8 && std::is_same<T, __nv_bfloat16>::value;
  load_q<T, HD, BM>(p, w, threadIdx.x, C::kThreads, [&](int r, int u) { return sq + r * P + u * 8; });
  if constexpr (kQToF16) cp_async_commit();
  CpAsyncRing<S> ring;
  ring.start(w, n_iter, load_tile);
  if constexpr (kQToF16) {
    if (n_iter > 0) score = ScoreMap::of(p, kKvUnscale<FP8> * q_to_f16_cta<BM, HD, S>(sq, P, C::kThreads, s_stats));
  }

  for (int it = 0; it < n_iter; ++it) {
    const int st = it % S;
    const bool keys_exist = ring.advance(w, it, n_iter, load_tile);
    if constexpr (FP8) {
      // Raw stage st -> the single f16 buffer (free: every warp is past tile it - 1).
      const uint8_t* raw_k = reinterpret_cast<const uint8_t*>(ld_k) + st * BN * HD;
      const uint8_t* raw_v = reinterpret_cast<const uint8_t*>(ld_v) + st * BN * HDV;
      convert_fp8<HD, BN, C::kThreads>(raw_k, sk, P);
      convert_fp8<HDV, BN, C::kThreads>(raw_v, sv, PV);
      __syncthreads();
    }

    const TC* k_t = FP8 ? sk : sk + st * BN * P;
    const TC* v_t = FP8 ? sv : sv + st * BN * PV;
    const int* ok = s_ok + st * BN;
    const int n0 = w.kv_lo + (w.tile_begin + it) * BN;

    // S = Q Kᵀ for this warp's MT × 16 rows and KW keys: each K fragment serves every m-tile.
    float s[MT][KW / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < KW / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const TC* q_frag = sq + ((wm * MT + mt) * 16 + (lane & 15)) * P + kk * 16 + (lane >> 4) * 8;
        if constexpr (kQInRegs) {
          if (it == 0) ldmatrix_x4(qf[kk], q_frag);
#pragma unroll
          for (int r = 0; r < 4; ++r) a[mt][r] = qf[kk][r];
        } else {
          ldmatrix_x4(a[mt], q_frag);
        }
      }
#pragma unroll
      for (int nn = 0; nn < KW / 16; ++nn) {
        uint32_t b[4];
        const int key = wn * KW + nn * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(b, k_t + key * P + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma<TC>(s[mt][2 * nn], a[mt], b[0], b[1]);
          mma<TC>(s[mt][2 * nn + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // Scale, soft-cap, mask (not needed when every row sees every key of the tile); online
    // softmax.
    // (The common case, a tile every row sees whole without a soft-cap, leaves the raw scores
    // as they are: the softmax's FFMA applies the scale.)
    const bool unmasked = keys_exist && vis.all_see(n0, BN);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      mask_tile<KW / 8>(&s[mt][0][0], p, score, unmasked, ok, n0, wn * KW, t4, row_ok[mt], row_pos[mt], kv_hi);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) softmax_step<KW / 8, HDV / 8>(&s[mt][0][0], &o[mt][0][0], m[mt], l[mt], score.unit);

    // O += P V: P from the S accumulators (two n-tiles make one 16-key A fragment); each V
    // fragment serves every m-tile.
#pragma unroll
    for (int ks = 0; ks < KW / 16; ++ks) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = pack2<TC>(s[mt][2 * ks][0], s[mt][2 * ks][1]);
        a[mt][1] = pack2<TC>(s[mt][2 * ks][2], s[mt][2 * ks][3]);
        a[mt][2] = pack2<TC>(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
        a[mt][3] = pack2<TC>(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
      }
      const int key = wn * KW + ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int dn = 0; dn < HDV / 16; ++dn) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_t + key * PV + dn * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma<TC>(o[mt][2 * dn], a[mt], b[0], b[1]);
          mma<TC>(o[mt][2 * dn + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: per-warp (m, l, O) to shared memory, then combine the key-splitting warps.
  float* s_o = reinterpret_cast<float*>(smem);  // [WARPS_N][BM][HDV], over Q, K and V
  float* s_m = s_stats;                       // [WARPS_N][BM]
  float* s_l = s_stats + WARPS_N * BM;        // [WARPS_N][BM]
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 1);
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 2);
      const int r = (wm * MT + mt) * 16 + g + 8 * h;
      if (t4 == 0) {
        s_m[wn * BM + r] = m[mt][h];
        s_l[wn * BM + r] = l[mt][h];
      }
#pragma unroll
      for (int i = 0; i < HDV / 8; ++i) {
        float* dst = s_o + (wn * BM + r) * HDV + i * 8 + 2 * t4;
        dst[0] = o[mt][i][2 * h];
        dst[1] = o[mt][i][2 * h + 1];
      }
    }
  __syncthreads();

  store_rows<T, HDV, BM, WARPS_N, C::kThreads>(p, w, s_o, s_m, s_l, p.v_scale * kKvUnscale<FP8>);
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr bool kHopperTarget = true;
#else
constexpr bool kHopperTarget = false;
#endif
// Whether this compilation target builds the kernels sized for Hopper (or the others).
__host__ __device__ constexpr bool builds(bool hopper) { return hopper == kHopperTarget; }

template <typename T, int HD, int HDV, int WARPS_M, int WARPS_N, int MT, bool FP8, bool HOPPER>
__global__ void __launch_bounds__(Cfg<HD, HDV, WARPS_M, WARPS_N, MT, FP8, HOPPER>::kThreads)
attention_kernel(const wc_attention_params p) {
  if constexpr (builds(HOPPER)) {
    grid_dependents_launch();  // the split merge may be dispatched (it waits for this grid)
    attention_body<T, HD, HDV, WARPS_M, WARPS_N, MT, FP8, HOPPER>(p);
  } else {
    __trap();  // the launcher never picks a configuration the running code was not built with
  }
}

// Whether token `tok` is a query some attention CTA wrote partials for (the same clamping as
// describe_work): the sequence holding it (binary search over cu_seqlens_q) covers it.
__device__ __forceinline__ bool token_covered(const wc_attention_params& p, int64_t tok) {
  int lo = 0, hi = p.num_seqs - 1;  // largest s with cu_seqlens_q[s] <= tok
  if (p.cu_seqlens_q[0] > tok) return false;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens_q[mid] <= tok) lo = mid; else hi = mid - 1;
  }
  const int64_t start = p.cu_seqlens_q[lo];
  const int64_t end = min64(min64(p.cu_seqlens_q[lo + 1], p.total_q), start + p.max_q_len);
  return start >= 0 && tok < end;
}

// Split-KV merge: one warp per (token, head) row, f32 partials -> T out (+ lse). Rows no CTA
// covered (inconsistent cu_seqlens_q) are left unwritten, as without split-KV. Launched as a
// programmatic dependent of the attention kernel (launch_merge): everything before
// grid_dependency_wait reads only what was written before the attention kernel started.
template <typename T, int HD>
__global__ void __launch_bounds__(256) merge_splits_kernel(const wc_attention_params p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  const int64_t rows = p.total_q * p.num_q_heads;
  if (row >= rows || !token_covered(p, row / p.num_q_heads)) return;
  grid_dependency_wait();  // the attention kernel has completed: its partials are visible
  // The splits' lse spread over the lanes (lane l: splits l, l + 32, ...): one round of loads
  // for up to 32 splits, then the warp's maximum. Each weight f_s = e^(lse_s - max) is computed
  // by one lane and handed to the others by a shuffle, so the weighted sum's loop loads only
  // partial_out, kBatch splits' rows at once. The sums run over s in order, as before (one lane
  // looping over every split): bit for bit the same.
  float mt = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) mt = fmaxf(mt, p.partial_lse[s * rows + row]);
  mt = warp_max(mt);
  float wsum = 0.0f;
  float acc[HD / 32];
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) acc[i] = 0.0f;
  // Splits whose partial rows are loaded together: 32 values a lane (16 at head_dim <= 64).
  constexpr int kCols = HD / 32, kBatch = kCols <= 4 ? 8 : 32 / kCols;
  if (mt != -INFINITY) {
    for (int s0 = 0; s0 < p.num_splits; s0 += 32) {
      const int n = min(32, p.num_splits - s0);  // warp-uniform
      const float f_lane = lane < n ? __expf(p.partial_lse[(s0 + lane) * rows + row] - mt) : 0.0f;
      for (int j0 = 0; j0 < n; j0 += kBatch) {
        float v[kBatch][kCols];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          if (j0 + u < n) {
            const float* po = p.partial_out + ((s0 + j0 + u) * rows + row) * HD + lane;
#pragma unroll
            for (int i = 0; i < kCols; ++i) v[u][i] = po[32 * i];
          }
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          if (j0 + u < n) {
            const float f = __shfl_sync(0xffffffffu, f_lane, j0 + u);
            wsum += f;
#pragma unroll
            for (int i = 0; i < kCols; ++i) acc[i] += f * v[u][i];
          }
        }
      }
    }
  }
  const int64_t tok = row / p.num_q_heads;
  const int head = static_cast<int>(row % p.num_q_heads);
  T* out = static_cast<T*>(p.out) + tok * p.out_stride + static_cast<int64_t>(head) * HD;
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) out[lane + 32 * i] = from_float<T>(wsum > 0.0f ? acc[i] / wsum : 0.0f);
  if (lane == 0 && p.lse != nullptr) p.lse[row] = wsum > 0.0f ? mt + __logf(wsum) : -INFINITY;
}

template <typename T, int HD, int HDV, int WARPS_M, int WARPS_N, int MT, bool FP8>
wc_status launch_config(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  bool hopper = false;
  if (cudaError_t e = hopper_device(hopper); e != cudaSuccess) return static_cast<wc_status>(e);
  if (hopper) {
    using C = Cfg<HD, HDV, WARPS_M, WARPS_N, MT, FP8, true>;
    return launch_grid(attention_kernel<T, HD, HDV, WARPS_M, WARPS_N, MT, FP8, true>, p, C::kBM, C::kThreads,
                       C::kSmem, s, occupancy);
  }
  using C = Cfg<HD, HDV, WARPS_M, WARPS_N, MT, FP8, false>;
  return launch_grid(attention_kernel<T, HD, HDV, WARPS_M, WARPS_N, MT, FP8, false>, p, C::kBM, C::kThreads,
                     C::kSmem, s, occupancy);
}

// After an attention launch with num_splits > 1: the merge of the splits' partials; with
// p.merge_pdl as a programmatic dependent of the attention kernel (whose CTAs allow it at their
// start): its launch overlaps the attention's last CTAs instead of following its completion.
template <typename T, int HDV>
wc_status launch_merge(const wc_attention_params& p, cudaStream_t s) {
  const int64_t rows = p.total_q * p.num_q_heads;
  const cudaError_t e = launch_dependent(p.merge_pdl != 0, merge_splits_kernel<T, HDV>,
                                         dim3(static_cast<unsigned>((rows + 7) / 8)), dim3(256), s, p);
  if (e != cudaSuccess) return static_cast<wc_status>(e);
  return launch_status();
}

// 16-row tiles per warp of the prefill configuration (src/ops/attention/plan.rs plans 16 · 4 · this
// rows per CTA): two up to head_dim 128, which halves the K and V fragment loads per FLOP; one
// above (registers).
template <int HD, int HDV>
constexpr int kPrefillTiles = (HD <= 128 && HDV <= 128) ? 2 : 1;

// Every (head_dim, head_dim_v) the kernels are built for: the supported set, listed once.
template <typename T, int HD, int HDV>
wc_status launch_head_dims(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  constexpr int kDecodeWarpsN = HD <= 128 ? 4 : 2;
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  // Decode-like batches (every sequence's rows fit one 16-row tile): split each key tile
  // across warps instead of leaving 3 of 4 warps without rows. 192/128 (MLA prefill) has only
  // the prefill configuration.
  const bool decode = HD == HDV && static_cast<int64_t>(p.max_q_len) * group <= 16;
  if (p.kv_dtype == WC_E4M3) {
    // The paged cache only (its scales); an occupancy query has no cache.
    if constexpr (HD == HDV) {
      if (p.page_size <= 0 && occupancy == nullptr) return WC_ERR_UNSUPPORTED;
      if (decode) return launch_config<T, HD, HDV, 1, kDecodeWarpsN, 1, true>(p, s, occupancy);
      return launch_config<T, HD, HDV, 4, 1, kPrefillTiles<HD, HDV>, true>(p, s, occupancy);
    }
    return WC_ERR_UNSUPPORTED;
  }
  if (p.kv_dtype != p.dtype) return WC_ERR_UNSUPPORTED;
  if constexpr (HD == HDV) {
    if (decode) return launch_config<T, HD, HDV, 1, kDecodeWarpsN, 1, false>(p, s, occupancy);
  }
  // Prefill: 4 warps; two 16-row tiles per warp (128 rows) up to head_dim 128, one above.
  return launch_config<T, HD, HDV, 4, 1, kPrefillTiles<HD, HDV>, false>(p, s, occupancy);
}

// Launches the attention (and, with num_splits > 1, the merge) for p; or, with `occupancy`
// set, launches nothing and stores how many CTAs of the kernel p selects fit on one SM.
template <typename T>
wc_status launch_attention(const wc_attention_params& p, cudaStream_t s, int* occupancy) {
  if (p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0 || p.num_splits < 1) return WC_ERR_INVALID_ARG;
  // Pages of a power-of-two size (src/kv_cache.rs PAGE_SIZES): key_offset splits a key index
  // into page and row by shift and mask.
  if (p.page_size > 0 && (p.page_size & (p.page_size - 1)) != 0) return WC_ERR_INVALID_ARG;
  if (occupancy == nullptr) {
    if (p.num_seqs == 0 || p.max_q_len == 0 || p.total_q == 0) return WC_OK;
    if (p.num_splits > 1 && (p.partial_out == nullptr || p.partial_lse == nullptr)) return WC_ERR_INVALID_ARG;
  }
  wc_status st = WC_ERR_UNSUPPORTED;
  if (p.kernel == WC_ATTENTION_WGMMA) {
    const bool mla = p.head_dim == 576 && p.head_dim_v == 512;
    st = mla ? launch_attention_mla_sm90(p, s, occupancy) : launch_attention_sm90(p, s, occupancy);
  } else if (p.kernel == WC_ATTENTION_MMA) {
    switch (p.head_dim * 1000 + p.head_dim_v) {
      case 64064: st = launch_head_dims<T, 64, 64>(p, s, occupancy); break;
      case 96096: st = launch_head_dims<T, 96, 96>(p, s, occupancy); break;
      case 128128: st = launch_head_dims<T, 128, 128>(p, s, occupancy); break;
      case 256256: st = launch_head_dims<T, 256, 256>(p, s, occupancy); break;
      case 192128: st = launch_head_dims<T, 192, 128>(p, s, occupancy); break;
      case 576512: st = launch_attention_mla(p, s, occupancy); break;
      default: break;
    }
  }
  if (st != WC_OK || p.num_splits == 1 || occupancy != nullptr) return st;
  switch (p.head_dim_v) {
    case 64: return launch_merge<T, 64>(p, s);
    case 96: return launch_merge<T, 96>(p, s);
    case 128: return launch_merge<T, 128>(p, s);
    case 256: return launch_merge<T, 256>(p, s);
    case 512: return launch_merge<T, 512>(p, s);
    default: return WC_ERR_UNSUPPORTED;
  }
}

// ------------------------------------------------------------------ merge_states
template <typename T>
__global__ void __launch_bounds__(256) merge_states_kernel(const wc_merge_states_params p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= p.rows) return;
  const float la = p.lse_a[row], lb = p.lse_b[row];
  const float mt = fmaxf(la, lb);
  float wa = 0.0f, wb = 0.0f;
  if (mt != -INFINITY) {
    wa = __expf(la - mt);
    wb = __expf(lb - mt);
  }
  const float sum = wa + wb;
  const T* a = static_cast<const T*>(p.out_a) + row * p.head_dim;
  const T* b = static_cast<const T*>(p.out_b) + row * p.head_dim;
  T* o = static_cast<T*>(p.out) + row * p.head_dim;
  for (int d = lane; d < p.head_dim; d += 32) {
    const float v = sum > 0.0f ? (to_float(a[d]) * wa + to_float(b[d]) * wb) / sum : 0.0f;
    o[d] = from_float<T>(v);
  }
  if (lane == 0 && p.lse != nullptr) p.lse[row] = sum > 0.0f ? mt + __logf(sum) : -INFINITY;
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_attention(const wc_attention_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (p->dtype) {
    case WC_BF16: return wc::launch_attention<__nv_bfloat16>(*p, s, nullptr);
    case WC_F16: return wc::launch_attention<__half>(*p, s, nullptr);
    default: return WC_ERR_UNSUPPORTED;
  }
}

extern "C" wc_status wc_attention_ctas_per_sm(const wc_attention_params* p, int32_t* ctas_per_sm) {
  if (p == nullptr || ctas_per_sm == nullptr) return WC_ERR_INVALID_ARG;
  int n = 0;
  wc_status st = WC_ERR_UNSUPPORTED;
  switch (p->dtype) {
    case WC_BF16: st = wc::launch_attention<__nv_bfloat16>(*p, nullptr, &n); break;
    case WC_F16: st = wc::launch_attention<__half>(*p, nullptr, &n); break;
    default: break;
  }
  if (st == WC_OK) *ctas_per_sm = n;
  return st;
}

extern "C" wc_status wc_merge_states(const wc_merge_states_params* p, wc_stream stream) {
  if (p == nullptr || p->head_dim <= 0) return WC_ERR_INVALID_ARG;
  if (p->rows <= 0) return WC_OK;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((p->rows + 7) / 8);
  WC_DISPATCH_DTYPE(p->dtype, T, {
    wc::merge_states_kernel<T><<<blocks, 256, 0, s>>>(*p);
    return wc::launch_status();
  });
}
