// matmul_ternary.cu — BitNet b1.58 linear layers: int8 activations times ternary weights.
//   quantize_activations: x [m, k] (bf16 / f16 / f32) -> q [m, k] int8 + scale [m] f32, the
//     per-token absmax quantization transformers' ActQuant computes, bit for bit.
//   rms_norm_quantize_activations: the same codes and scales of rms_norm(x) (optionally of
//     residual = x + residual first, stored), computed from the f32 normalised values: BitNet's
//     four norms per layer each feed a ternary projection, so the normalised row never needs
//     to exist in memory.
//   matmul_ternary: out [m, n] = ((q · vᵀ) / scale (+ bias)) · w_scale with v [n, k] in
//     {-1, 0, 1}, read in the checkpoint's packed layout (four values to a byte, 2 bits each).
// Contracts: warpcore/matmul_ternary.h. No sm_90a-only code: mma.sync runs on every sm_80+ GPU.
//
// quantize_activations. One warp per row, 8 elements per lane and step (16-byte loads for
// bf16 / f16, two for f32; 8-byte stores). Two passes over the row: the absmax, then the codes
// (the second pass reads the row again, from L1 / L2). The arithmetic is transformers' f32:
// __frcp_rn (IEEE reciprocal), __fmul_rn (no contraction), __float2int_rn (ties to even).
// Roofline: (sizeof(T) + 1) · m · k bytes; a single decode row is latency-bound (one warp).
//
// matmul_ternary. The packed byte w[p, c] holds column p, p + n/4, p + n/2, p + 3n/4 at k = c
// (planes 0..3). A 32-bit word of one packed row (k = c..c+3) masked with 0x03030303 << 2·plane
// is, per byte, code · 4^plane with code = v + 1 ∈ {0, 1, 2}: at most 128, an unsigned int8.
// So one LOP turns the word into the B fragment of an int8 mma.sync (m16n8k32, s8 × u8, int32
// accumulators) for one plane, and
//     Σ q · v = (Σ q · code · 4^plane) >> 2·plane − Σ q,
// exactly (the shift divides a multiple of 4^plane; no sum overflows for k <= 65536). The row
// sums Σ q come from the A fragments by dp4a (4 per 16-row tile and k32 step). One 16-byte
// ldmatrix.x4 of eight packed rows (64 bytes of k) feeds 4 planes × 2 k-steps of mma.
// Tiles (host planner: block_m): a CTA holds rows [m0, m0 + BM) and packed rows [p0, p0 + BP)
// (4 · BP columns); warps WM × WN over the tile, and WK warps splitting each stage's k (64 bytes
// each), whose partial sums are added in a fixed order through the stages' shared memory at the
// end. Both tiles stay within 48 KB of shared memory, so a launch needs no opt-in call. cp.async stages of raw bytes, four deep,
// 16-byte chunks XOR-swizzled per row so that ldmatrix's eight rows hit distinct banks. Rows
// past m, packed rows past n/4 and k past k are zero-filled (zero codes, zero row sums) and never
// stored.
//   Decode (block_m 16): 16 rows × 32 columns, eight warps splitting k: n/32 CTAs stream the
//     weights (n · k / 4 bytes), so a 2560-wide layer has only 80 CTAs. Split-k (k_splits = s)
//     gives each tile s CTAs over contiguous slices of the 512-byte k-steps; each adds its exact
//     int32 sums into the tile's words of a zeroed workspace by atomics, and the last of the s
//     to arrive (a counter after a fence) applies the epilogue and zeroes the words again: one
//     launch, no second kernel, and bit-identical to s = 1 (integer sums).
//   Prefill (block_m 128): 128 × 128, 4 × 2 warps of 32 × 64, k 64 per stage. On Hopper the
//     plan takes block_m 64 instead: matmul_ternary_sm90.cu's int8 wgmma tile.
// Roofline: weights n·k/4 bytes + activations m·k bytes + out; 2·m·n·k int8 ops on the tensor
// cores (H200 mma.sync int8: about twice its bf16 rate).
#include "matmul_ternary.cuh"
#include "rms_norm.cuh"

namespace wc {
namespace {

// ------------------------------------------------------------------ quantize_activations
constexpr int kQuantThreads = 128;  // one row per warp
constexpr float kActMax = 127.0f;
constexpr float kScaleFloor = 1e-5f;

// 8 elements at p (16-byte aligned for 2-byte T, 32 bytes for f32 read as two 16-byte halves).
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  if constexpr (sizeof(T) == 4) {
    const Pack<float, 4> a = load_pack<float, 4>(reinterpret_cast<const float*>(p));
    const Pack<float, 4> b = load_pack<float, 4>(reinterpret_cast<const float*>(p) + 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = a.v[i], v[4 + i] = b.v[i];
  } else {
    const Pack<T, 8> a = load_pack<T, 8>(p);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = to_float(a.v[i]);
  }
}

// residual[0, 8) = round(x + residual), stored; v = those rounded sums.
template <typename T>
__device__ __forceinline__ void add8(const T* x, T* residual, float (&v)[8]) {
  constexpr int V = kVec16<T> < 8 ? kVec16<T> : 8;
#pragma unroll
  for (int h = 0; h < 8 / V; ++h) {
    const Pack<T, V> sum = add_residual<T, V>(load_pack<T, V>(x + h * V), residual + h * V);
#pragma unroll
    for (int i = 0; i < V; ++i) v[h * V + i] = to_float(sum.v[i]);
  }
}

// The scale of a row whose largest magnitude is amax: (1 / max(amax, 1e-5)) · 127.
__device__ __forceinline__ float act_scale(float amax) {
  return __fmul_rn(__frcp_rn(fmaxf(amax, kScaleFloor)), kActMax);
}

// 8 codes clamp(rint(v · s), -128, 127), byte i = code i, stored at q (8-byte aligned).
__device__ __forceinline__ void store_codes8(int8_t* q, const float (&v)[8], float s) {
  uint32_t w[2] = {0u, 0u};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int code = max(-128, min(127, __float2int_rn(__fmul_rn(v[i], s))));
    w[i / 4] |= (static_cast<uint32_t>(code) & 0xFFu) << (8 * (i % 4));
  }
  *reinterpret_cast<uint2*>(q) = make_uint2(w[0], w[1]);
}

template <typename T>
__global__ void __launch_bounds__(kQuantThreads) quantize_activations_kernel(const wc_quantize_activations_params p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kQuantThreads / 32) + (threadIdx.x >> 5);
  if (row >= p.m) return;  // whole warps leave
  const T* x = static_cast<const T*>(p.x) + row * p.ldx;
  float amax = 0.0f;
  for (int64_t c = lane * 8; c < p.k; c += 32 * 8) {
    float v[8];
    load8(x + c, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
  }
  const float s = act_scale(warp_max(amax));
  int8_t* q = p.q + row * p.ldq;
  for (int64_t c = lane * 8; c < p.k; c += 32 * 8) {
    float v[8];
    load8(x + c, v);
    store_codes8(q + c, v, s);
  }
  if (lane == 0) p.scale[row] = s;
}

// rms_norm_quantize_activations: one warp per row, three passes (the row to normalise and its
// sum of squares; the normalised row's absmax; the codes), the later two from L1 / L2. The
// normalised values are rms_norm.cuh's, in f32, recomputed identically in passes 2 and 3.
template <typename T, bool ADD>
__global__ void __launch_bounds__(kQuantThreads) rms_norm_quantize_kernel(const wc_rms_norm_quantize_activations_params p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kQuantThreads / 32) + (threadIdx.x >> 5);
  if (row >= p.m) return;  // whole warps leave
  const T* x = static_cast<const T*>(p.x) + row * p.ldx;
  T* res = ADD ? static_cast<T*>(p.residual) + row * p.ldr : nullptr;
  const T* w = static_cast<const T*>(p.weight);
  float ss = 0.0f;
  for (int64_t c = lane * 8; c < p.k; c += 32 * 8) {
    float v[8];
    if constexpr (ADD) add8(x + c, res + c, v);
    else load8(x + c, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) ss = fmaf(v[i], v[i], ss);
  }
  const float rstd = rms_rstd(warp_sum(ss), static_cast<int>(p.k), p.eps);
  const T* src = ADD ? res : x;  // this lane's own stores of pass 1 when ADD
  auto normed8 = [&](int64_t c, float (&y)[8]) {
    float v[8], wv[8];
    load8(src + c, v);
    load8(w + c, wv);
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = rms_normed(v[i], rstd, p.weight_offset, wv[i]);
  };
  float amax = 0.0f;
  for (int64_t c = lane * 8; c < p.k; c += 32 * 8) {
    float y[8];
    normed8(c, y);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(y[i]));
  }
  const float s = act_scale(warp_max(amax));
  int8_t* q = p.q + row * p.ldq;
  for (int64_t c = lane * 8; c < p.k; c += 32 * 8) {
    float y[8];
    normed8(c, y);
    store_codes8(q + c, y, s);
  }
  if (lane == 0) p.scale[row] = s;
}

// ------------------------------------------------------------------ matmul_ternary
// MI 16-row mma tiles and NG groups of 8 packed rows per warp; WM × WN warps tile the CTA, WK
// warps split each stage's k (64 bytes each).
template <int MI_, int NG_, int WM_, int WN_, int WK_>
struct TernaryTile {
  static constexpr int MI = MI_, NG = NG_, WM = WM_, WN = WN_, WK = WK_;
  static constexpr int kThreads = 32 * WM * WN * WK;
  static constexpr int BM = 16 * MI * WM;  // rows of out per CTA
  static constexpr int BP = 8 * NG * WN;   // packed weight rows per CTA: 4 · BP columns of out
  static constexpr int BK = 64 * WK;       // bytes of k per stage
  static constexpr int kChunks = BK / 16;  // 16-byte chunks per staged row
  static constexpr int kStages = 4;
  static constexpr int kStageBytes = (BM + BP) * BK;
  // Split-k partials, int32 [WK][BM][4 · BP], in the stages' memory once the loop is done.
  static constexpr int kRedBytes = WK > 1 ? WK * BM * 4 * BP * 4 : 0;
  static constexpr int kSmem = kStages * kStageBytes > kRedBytes ? kStages * kStageBytes : kRedBytes;
  static_assert(kChunks == 4 || kChunks % 8 == 0, "swizzle: 4 or a multiple of 8 chunks per row");
  // Within the default 48 KB: no per-launch opt-in (cudaFuncSetAttribute) on the decode path.
  // The default bounds static + dynamic shared memory together, so the kernel declares no
  // static shared variable (the split-k arrival flag lives past the partials; until 2026-12-02
  // it was a static int, and 4 + 49,152 bytes failed every decode launch on a real GPU).
  static constexpr int kFlagOffset = kRedBytes;
  static_assert(kThreads <= 1024 && kSmem <= 48 * 1024, "fits without a dynamic shared memory opt-in");
  static_assert(WK == 1 || kFlagOffset + 16 <= kSmem, "the split-k flag fits past the partials");
};
using DecodeTile = TernaryTile<1, 1, 1, 1, 8>;   // 16 × 32, 256 threads, 512 bytes of k per stage
using PrefillTile = TernaryTile<2, 2, 4, 2, 1>;  // 128 × 128, 256 threads, 64 bytes of k per stage
// Split-k (decode tile only): a tile's int32 sums in the workspace, then its arrival counter.
constexpr int kSplitTileSums = DecodeTile::BM * 4 * DecodeTile::BP;
constexpr int kSplitTileWords = kSplitTileSums + 1;
static_assert(kSplitTileWords == WC_TERNARY_SPLIT_K_TILE_WORDS, "the C ABI's workspace words per tile");

// Physical 16-byte chunk of logical chunk c in staged row r: eight consecutive rows read by one
// ldmatrix land in eight distinct bank groups (rows of 64 bytes: two per 128-byte line).
template <class C>
__device__ __forceinline__ int swz(int r, int c) {
  if constexpr (C::kChunks == 4) return c ^ ((r >> 1) & 3);
  else return c ^ (r & 7);
}

// Stage rows: BM activation rows, then BP packed weight rows, each BK bytes from k0.
template <class C>
__device__ __forceinline__ void load_stage(const wc_matmul_ternary_params& p, uint8_t* st, int64_t m0, int64_t p0,
                                           int64_t prows, int64_t k0) {
  const uint8_t* q = reinterpret_cast<const uint8_t*>(p.q);
  for (int i = threadIdx.x; i < (C::BM + C::BP) * C::kChunks; i += C::kThreads) {
    const int r = i / C::kChunks, c = i % C::kChunks;
    const int64_t kk = k0 + c * 16;
    bool ok;
    const uint8_t* src;
    if (r < C::BM) {
      ok = m0 + r < p.m && kk < p.k;
      src = q + (m0 + r) * p.ldq + kk;
    } else {
      ok = p0 + (r - C::BM) < prows && kk < p.k;
      src = p.w + (p0 + (r - C::BM)) * p.ldw + kk;
    }
    cp_async16(st + r * C::BK + swz<C>(r, c) * 16, ok ? src : p.w, ok);
  }
}

template <class C, typename OutT>
__global__ void __launch_bounds__(C::kThreads) matmul_ternary_kernel(const wc_matmul_ternary_params p) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int MI = C::MI, NG = C::NG;
  const int64_t prows = p.n / 4;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * C::BP, m0 = static_cast<int64_t>(blockIdx.y) * C::BM;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wk = warp % C::WK, wn = (warp / C::WK) % C::WN, wm = warp / (C::WK * C::WN);
  // This CTA's k-steps [kt0, kt1): all of them, or k-slice blockIdx.z of gridDim.z (split-k).
  const int64_t k_tiles = (p.k + C::BK - 1) / C::BK;
  const int64_t kt0 = k_tiles * blockIdx.z / gridDim.z, kt1 = k_tiles * (blockIdx.z + 1) / gridDim.z;

  // Issue the first stages before anything else.
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (kt0 + s < kt1) load_stage<C>(p, smem + s * C::kStageBytes, m0, p0, prows, (kt0 + s) * C::BK);
    cp_async_commit();
  }

  int32_t acc[MI][NG][4][4];  // [m16 tile][packed-row group][plane][fragment]
  int32_t rsum[MI][2];        // Σ q of rows g and g + 8 over this thread's k
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    rsum[i][0] = rsum[i][1] = 0;
#pragma unroll
    for (int j = 0; j < NG; ++j)
#pragma unroll
      for (int pl = 0; pl < 4; ++pl)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][pl][e] = 0;
  }

  for (int64_t kt = kt0; kt < kt1; ++kt) {
    cp_async_wait<C::kStages - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt - 1 is free
    const int64_t next = kt + C::kStages - 1;
    if (next < kt1) load_stage<C>(p, smem + ((next - kt0) % C::kStages) * C::kStageBytes, m0, p0, prows, next * C::BK);
    cp_async_commit();

    const uint8_t* st = smem + ((kt - kt0) % C::kStages) * C::kStageBytes;
    // This warp's 64 bytes of k: chunks 4·wk .. 4·wk + 3. Weights: eight packed rows × 4 chunks
    // per ldmatrix.x4 (regs 0, 1: k-step 0's b0, b1; regs 2, 3: k-step 1's).
    uint32_t b[NG][4];
#pragma unroll
    for (int j = 0; j < NG; ++j) {
      const int r = C::BM + (wn * NG + j) * 8 + (lane & 7);
      ldmatrix_x4(b[j], st + r * C::BK + swz<C>(r, 4 * wk + (lane >> 3)) * 16);
    }
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t a[MI][4];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        const int r = (wm * MI + i) * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(a[i], st + r * C::BK + swz<C>(r, 4 * wk + 2 * ks + (lane >> 4)) * 16);
        rsum[i][0] = __dp4a(static_cast<int>(a[i][0]), 0x01010101, rsum[i][0]);
        rsum[i][0] = __dp4a(static_cast<int>(a[i][2]), 0x01010101, rsum[i][0]);
        rsum[i][1] = __dp4a(static_cast<int>(a[i][1]), 0x01010101, rsum[i][1]);
        rsum[i][1] = __dp4a(static_cast<int>(a[i][3]), 0x01010101, rsum[i][1]);
      }
#pragma unroll
      for (int j = 0; j < NG; ++j)
#pragma unroll
        for (int pl = 0; pl < 4; ++pl) {
          const uint32_t mask = 0x03030303u << (2 * pl);
          const uint32_t b0 = b[j][2 * ks] & mask, b1 = b[j][2 * ks + 1] & mask;
#pragma unroll
          for (int i = 0; i < MI; ++i) mma_s8u8(acc[i][j][pl], a[i], b0, b1);
        }
    }
  }
  cp_async_wait<0>();  // only empty groups can be pending; leave none behind
  int32_t* red = reinterpret_cast<int32_t*>(smem);  // [WK][BM][4 · BP] split-k partials
  if constexpr (C::WK > 1) __syncthreads();          // every warp has read its last stage

  // Row sums over the quad's k (each thread saw 4 of every 16 bytes); the rows' scales.
  float qs[MI][2];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      rsum[i][h] += __shfl_xor_sync(0xffffffffu, rsum[i][h], 1);
      rsum[i][h] += __shfl_xor_sync(0xffffffffu, rsum[i][h], 2);
      const int64_t row = m0 + (wm * MI + i) * 16 + g + 8 * h;
      qs[i][h] = C::WK == 1 && row < p.m ? p.q_scale[row] : 1.0f;
    }

#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NG; ++j)
#pragma unroll
      for (int pl = 0; pl < 4; ++pl)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int rl = (wm * MI + i) * 16 + g + 8 * (e >> 1);   // row in the tile
          const int pr = (wn * NG + j) * 8 + 2 * t + (e & 1);     // packed row in the tile
          const int32_t v = (acc[i][j][pl][e] >> (2 * pl)) - rsum[i][e >> 1];
          if constexpr (C::WK > 1) {
            red[(wk * C::BM + rl) * 4 * C::BP + pl * C::BP + pr] = v;
          } else if (m0 + rl < p.m && p0 + pr < prows) {
            ternary_store_out<OutT>(p, m0 + rl, pl * prows + p0 + pr, v, qs[i][e >> 1]);
          }
        }
  if constexpr (C::WK > 1) {
    __syncthreads();
    // Split-k: this tile's words of the workspace, its sums then its arrival counter.
    const bool split = gridDim.z > 1;
    int32_t* part = split ? p.workspace + (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kSplitTileWords : nullptr;
    for (int i = threadIdx.x; i < C::BM * 4 * C::BP; i += C::kThreads) {
      const int rl = i / (4 * C::BP), pl = (i / C::BP) % 4, pr = i % C::BP;
      int32_t sum = 0;  // the warps' partials in a fixed order
#pragma unroll
      for (int w = 0; w < C::WK; ++w) sum += red[w * C::BM * 4 * C::BP + i];
      if (m0 + rl < p.m && p0 + pr < prows) {
        if (split) atomicAdd(part + i, sum);  // exact: any order gives the same total
        else ternary_store_out<OutT>(p, m0 + rl, pl * prows + p0 + pr, sum, p.q_scale[m0 + rl]);
      }
    }
    if (split) {
      // Count this k-slice in once its sums are visible device-wide; the last to arrive finds
      // every slice's sums there, stores the tile, and leaves its words zero for the next launch.
      int& last = *reinterpret_cast<int*>(smem + C::kFlagOffset);  // the stages are dead here
      __threadfence();
      __syncthreads();
      if (threadIdx.x == 0) last = atomicAdd(part + kSplitTileSums, 1) == static_cast<int>(gridDim.z) - 1;
      __syncthreads();
      if (!last) return;
      __threadfence();
      for (int i = threadIdx.x; i < C::BM * 4 * C::BP; i += C::kThreads) {
        const int rl = i / (4 * C::BP), pl = (i / C::BP) % 4, pr = i % C::BP;
        if (m0 + rl < p.m && p0 + pr < prows)
          ternary_store_out<OutT>(p, m0 + rl, pl * prows + p0 + pr, atomicExch(part + i, 0), p.q_scale[m0 + rl]);
      }
      if (threadIdx.x == 0) atomicExch(part + kSplitTileSums, 0);
    }
  }
}

template <class C, typename OutT>
wc_status launch_matmul(const wc_matmul_ternary_params& p, cudaStream_t s) {
  auto kernel = matmul_ternary_kernel<C, OutT>;
  const int64_t gx = (p.n / 4 + C::BP - 1) / C::BP, gy = (p.m + C::BM - 1) / C::BM;
  const int64_t splits = p.k_splits > 1 ? p.k_splits : 1;
  if (gx > INT32_MAX || gy > 65535) return WC_ERR_INVALID_ARG;
  if (splits > 1) {
    if (C::WK == 1) return WC_ERR_UNSUPPORTED;  // the decode tile only
    if (splits > (p.k + C::BK - 1) / C::BK || splits > 65535 || p.workspace == nullptr || !aligned_to(4, p.workspace) ||
        p.workspace_words < gx * gy * kSplitTileWords)
      return WC_ERR_INVALID_ARG;
  }
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(splits));
  kernel<<<grid, C::kThreads, C::kSmem, s>>>(p);
  return launch_status();
}

bool aligned16(const void* ptr, int64_t stride_bytes) {
  return aligned_to(16, ptr) && stride_bytes % 16 == 0;
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_quantize_activations(const wc_quantize_activations_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->m <= 0) return WC_OK;
  const int64_t es = wc::dtype_bytes(p->dtype);
  if (es == 0 || p->k <= 0 || p->k % 16 != 0 || p->ldx < p->k || p->ldq < p->k || !wc::aligned16(p->x, p->ldx * es) ||
      !wc::aligned16(p->q, p->ldq))
    return WC_ERR_INVALID_ARG;
  const int64_t blocks = (p->m + wc::kQuantThreads / 32 - 1) / (wc::kQuantThreads / 32);
  if (blocks > INT32_MAX) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, {
    wc::quantize_activations_kernel<T><<<static_cast<unsigned>(blocks), wc::kQuantThreads, 0, s>>>(*p);
    return wc::launch_status();
  });
}

extern "C" wc_status wc_rms_norm_quantize_activations(const wc_rms_norm_quantize_activations_params* p,
                                                     wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->m <= 0) return WC_OK;
  const int64_t es = wc::dtype_bytes(p->dtype);
  const bool add = p->residual != nullptr;
  if (es == 0 || p->k <= 0 || p->k % 16 != 0 || p->k > INT32_MAX || p->ldx < p->k || p->ldq < p->k ||
      !wc::aligned16(p->x, p->ldx * es) || !wc::aligned16(p->weight, 0) || !wc::aligned16(p->q, p->ldq) ||
      (add && (p->ldr < p->k || !wc::aligned16(p->residual, p->ldr * es))))
    return WC_ERR_INVALID_ARG;
  const int64_t blocks = (p->m + wc::kQuantThreads / 32 - 1) / (wc::kQuantThreads / 32);
  if (blocks > INT32_MAX) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, {
    if (add) wc::rms_norm_quantize_kernel<T, true><<<static_cast<unsigned>(blocks), wc::kQuantThreads, 0, s>>>(*p);
    else wc::rms_norm_quantize_kernel<T, false><<<static_cast<unsigned>(blocks), wc::kQuantThreads, 0, s>>>(*p);
    return wc::launch_status();
  });
}

extern "C" wc_status wc_matmul_ternary(const wc_matmul_ternary_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  if (p->m <= 0) return WC_OK;
  if (p->n <= 0 || p->n % 4 != 0 || p->k <= 0 || p->k % 16 != 0 || p->k > WC_TERNARY_MAX_K || p->ldq < p->k ||
      p->ldw < p->k || p->ldo < p->n || !wc::aligned16(p->q, p->ldq) || !wc::aligned16(p->w, p->ldw) ||
      p->q_scale == nullptr || p->out == nullptr)
    return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->out_dtype, OutT, {
    switch (p->block_m) {
      case wc::DecodeTile::BM: return wc::launch_matmul<wc::DecodeTile, OutT>(*p, s);
      case wc::PrefillTile::BM: return wc::launch_matmul<wc::PrefillTile, OutT>(*p, s);
      case wc::kTernarySm90BlockM: return wc::launch_matmul_ternary_sm90(*p, s);
      default: return WC_ERR_INVALID_ARG;
    }
  });
}
