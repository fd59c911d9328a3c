// elementwise.cu — the element-wise family: the ops a decoder needs between its GEMMs.
//   glu          out = act(gate) * up (SwiGLU, GeGLU, squared-ReLU GLU), f32 math, one rounding
//   select_rows  out[i, :] = src[indices[i], :] (embedding lookup; last token of each sequence)
//   argmax_rows  out[r] = argmax of row r of f32 logits (greedy decoding without the logits'
//                trip to the host)
//   sample_rows  out[r] = a token drawn from row r of f32 logits with temperature, top-k and
//                top-p, given one uniform number per row (sampled decoding, same: no trip)
//
// Contract (see warpcore/elementwise.h): rows of `cols` elements, any row strides (innermost dense). glu
// takes bf16 / f16 / f32; select_rows is a copy of any dtype. An index of select_rows outside
// [0, src_rows) skips its row (the Rust wrapper's callers validate token ids on the host).
//
// Roofline: both ops are pure data movement. glu reads gate and up and writes out: 3 element
// streams, ~10 FLOPs per element (one exp or tanh). The Llama-3.2-1B decode step at batch 32
// moves 3 · 32 · 8192 · 2 B = 1.6 MB per layer (0.4 us at 4.06 TB/s, far below launch cost);
// prefill of 2048 tokens 100 MB (25 us per layer). select_rows moves 2 · rows · cols elements.
//
// Thread mapping:
//   glu          one block per row; thread i handles 16-byte vectors i, i + blockDim, ... of the
//                row (all of its loads issued before the math). A row of 8192 bf16 = 1024
//                vectors: 256 threads, 4 vectors each. VEC = 1 is the scalar path for odd
//                sizes, odd strides and pointers not 16-byte aligned.
//   select_rows  grid (num_rows, row chunks): each thread copies one unit (16, 8, 4, 2 or 1
//                bytes: the widest that divides the row and strides and fits the pointers).
//   argmax_rows  one block of 1024 threads per row: a strided scan (thread i reads i, i + 1024,
//                ...: coalesced), then warp shuffles and one shared-memory round. A vocabulary of
//                128256 f32 logits is 0.5 MB per row: 0.13 us of bandwidth at 4.06 TB/s, so a
//                decode step's argmax costs its launch; the win is the host not copying 0.5 MB
//                per sequence and scanning it.
//   sample_rows  one block of 1024 threads per row, no sort: top-k and top-p are thresholds on
//                the logits' rank keys found by radix descent (four 8-bit digit passes over the
//                row each: counts for top-k, weights for top-p), then one scan in id order finds
//                the drawn token. Weights are fixed point (exp((v − max) / T) · 2^40, truncated,
//                summed in u64; common.cuh's det_exp, which the host repeats bit for bit), so every
//                sum is exact and order-free: the draw is deterministic and the host's reference
//                (reference::elementwise::sample_row) makes the same choice from the same row. About 11 passes over the row (0.5 MB of f32 at
//                128256 tokens), from L2 after the first. Settings for all rows, or per row
//                (an engine's batch of requests: a row with temperature not > 0 is greedy,
//                argmax_rows' block_argmax, so greedy and sampled requests share one launch).
#include "common.cuh"
#include "glu.cuh"

namespace wc {
namespace {

constexpr int kGluThreads = 256;
// Vectors per thread held in registers before the math (loads in flight together).
constexpr int kGluUnroll = 4;

template <typename T, int VEC, wc_glu_activation ACT>
__global__ void __launch_bounds__(kGluThreads)
glu_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out, int64_t gate_stride,
           int64_t up_stride, int64_t out_stride, int nvec) {
  // A thread's units: one element (VEC 1) or a 16-byte vector as words (common.cuh's Chunk; as
  // Pack<bf16, 8> they took 96 registers).
  static_assert(VEC == 1 || VEC == kVec16<T>, "one element or one 16-byte vector");
  using U = Chunk<T, VEC>;
  const int64_t row = blockIdx.x;
  const T* g = gate + row * gate_stride;
  const T* u = up + row * up_stride;
  T* o = out + row * out_stride;
  for (int base = threadIdx.x; base < nvec; base += kGluUnroll * blockDim.x) {
    U gv[kGluUnroll], uv[kGluUnroll];
#pragma unroll
    for (int j = 0; j < kGluUnroll; ++j) {
      const int i = base + j * blockDim.x;
      if (i < nvec) {
        gv[j] = load_chunk<T, VEC>(g + static_cast<int64_t>(i) * VEC);
        uv[j] = load_chunk<T, VEC>(u + static_cast<int64_t>(i) * VEC);
      }
    }
#pragma unroll
    for (int j = 0; j < kGluUnroll; ++j) {
      const int i = base + j * blockDim.x;
      if (i < nvec) {
        float r[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) r[k] = glu_activate<ACT>(gv[j].at(k)) * uv[j].at(k);
        if constexpr (VEC == 1) o[i] = from_float<T>(r[0]);
        else store_floats16<T>(o + static_cast<int64_t>(i) * VEC, r);
      }
    }
  }
}

template <typename T, int VEC, wc_glu_activation ACT>
void launch_glu_vec(const wc_glu_params& p, cudaStream_t s) {
  const int nvec = static_cast<int>(p.cols / VEC);
  // Enough threads that each holds at most kGluUnroll vectors, whole warps, at most 256.
  const int64_t want = (nvec + kGluUnroll - 1) / kGluUnroll;
  const int threads = static_cast<int>(min64(kGluThreads, (want + 31) / 32 * 32));
  glu_kernel<T, VEC, ACT><<<static_cast<unsigned>(p.rows), threads, 0, s>>>(
      static_cast<const T*>(p.gate), static_cast<const T*>(p.up), static_cast<T*>(p.out), p.gate_stride,
      p.up_stride, p.out_stride, nvec);
}

template <typename T, int VEC>
void launch_glu_act(const wc_glu_params& p, cudaStream_t s) {
  switch (p.activation) {
    case WC_GLU_GELU_TANH: return launch_glu_vec<T, VEC, WC_GLU_GELU_TANH>(p, s);
    case WC_GLU_RELU2: return launch_glu_vec<T, VEC, WC_GLU_RELU2>(p, s);
    default: return launch_glu_vec<T, VEC, WC_GLU_SILU>(p, s);  // known: checked by the caller
  }
}

template <typename T>
wc_status launch_glu(const wc_glu_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.cols <= 0 || p.cols > INT32_MAX || p.rows > INT32_MAX) return WC_ERR_INVALID_ARG;
  if (!glu_activation_known(p.activation)) return WC_ERR_UNSUPPORTED;
  constexpr int V = kVec16<T>;
  const bool vec = p.cols % V == 0 && p.gate_stride % V == 0 && p.up_stride % V == 0 && p.out_stride % V == 0 &&
                   aligned_to(16, p.gate, p.up, p.out);
  if (vec) launch_glu_act<T, V>(p, s);
  else launch_glu_act<T, 1>(p, s);
  return launch_status();
}

// ------------------------------------------------------------------ select_rows
constexpr int kCopyThreads = 256;

struct SelectArgs {
  const void* src;      // [src_rows, row_units] at src_stride (units)
  const void* indices;  // [num_rows]
  void* out;            // [num_rows, row_units] at out_stride (units)
  int64_t src_rows, row_units, src_stride, out_stride;
  bool indices_int64;
};

template <typename U>
__global__ void __launch_bounds__(kCopyThreads) select_rows_kernel(const SelectArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kCopyThreads + threadIdx.x;  // unit in the row
  const int64_t row = blockIdx.x;
  const int64_t r = load_index(a.indices, a.indices_int64, row);
  if (i >= a.row_units || r < 0 || r >= a.src_rows) return;
  const U* src = static_cast<const U*>(a.src);
  U* out = static_cast<U*>(a.out);
  out[row * a.out_stride + i] = src[r * a.src_stride + i];
}

template <typename U>
void launch_select_unit(SelectArgs a, int64_t esize, const wc_select_rows_params& p, cudaStream_t s) {
  const int64_t per = static_cast<int64_t>(sizeof(U)) / esize;  // elements per unit (>= 1)
  a.row_units = p.cols / per;
  a.src_stride = p.src_stride / per;
  a.out_stride = p.out_stride / per;
  const dim3 grid(static_cast<unsigned>(p.num_rows), static_cast<unsigned>((a.row_units + kCopyThreads - 1) / kCopyThreads));
  select_rows_kernel<U><<<grid, kCopyThreads, 0, s>>>(a);
}

wc_status launch_select_rows(const wc_select_rows_params& p, cudaStream_t s) {
  const int64_t esize = dtype_bytes(p.dtype);
  if (esize == 0) return WC_ERR_UNSUPPORTED;
  if (p.num_rows <= 0) return WC_OK;
  if (p.cols <= 0 || p.src_rows < 0 || p.num_rows > INT32_MAX || p.indices == nullptr ||
      (p.cols * esize + kCopyThreads - 1) / kCopyThreads > 65535)
    return WC_ERR_INVALID_ARG;
  SelectArgs a;
  a.src = p.src;
  a.indices = p.indices;
  a.out = p.out;
  a.src_rows = p.src_rows;
  a.indices_int64 = p.indices_int64 != 0;
  // A misaligned element: the Rust side never sends one.
  if (!with_copy_unit(esize, p.cols * esize, p.src_stride * esize, p.out_stride * esize, p.src, p.out,
                      [&](auto unit) { launch_select_unit<decltype(unit)>(a, esize, p, s); }))
    return WC_ERR_INVALID_ARG;
  return launch_status();
}

// ------------------------------------------------------------------ argmax_rows
constexpr int kArgmaxThreads = 1024;

// The better of two candidates: the larger value, ties to the lower index (a NaN is never a
// candidate: it fails `>` against the -inf start).
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

// The greedy token of one row, by a block of kArgmaxThreads threads (argmax_rows, and
// sample_rows' rows whose temperature is not > 0): valid in thread 0.
__device__ __forceinline__ int32_t block_argmax(const float* row, int cols) {
  // No candidate yet: value -inf, index INT32_MAX (loses every tie).
  float v = -INFINITY;
  int i = INT32_MAX;
  for (int c = threadIdx.x; c < cols; c += kArgmaxThreads) {
    const float y = row[c];
    if (y > v) {  // strictly greater: the first of equal values in this thread's (ascending) scan
      v = y;
      i = c;
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) argmax_merge(v, i, __shfl_down_sync(0xffffffffu, v, off), __shfl_down_sync(0xffffffffu, i, off));
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = i;
  }
  __syncthreads();
  if (warp == 0) {
    v = sv[lane];
    i = si[lane];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) argmax_merge(v, i, __shfl_down_sync(0xffffffffu, v, off), __shfl_down_sync(0xffffffffu, i, off));
  }
  return i == INT32_MAX ? 0 : i;  // nothing above -inf: index 0
}

__global__ void __launch_bounds__(kArgmaxThreads)
argmax_rows_kernel(const float* __restrict__ x, int32_t* __restrict__ out, int cols, int64_t x_stride) {
  const int32_t i = block_argmax(x + static_cast<int64_t>(blockIdx.x) * x_stride, cols);
  if (threadIdx.x == 0) out[blockIdx.x] = i;
}

wc_status launch_argmax_rows(const wc_argmax_rows_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.x == nullptr || p.out == nullptr || p.cols <= 0 || p.cols > INT32_MAX || p.rows > INT32_MAX || p.x_stride < p.cols)
    return WC_ERR_INVALID_ARG;
  argmax_rows_kernel<<<static_cast<unsigned>(p.rows), kArgmaxThreads, 0, s>>>(p.x, p.out, static_cast<int>(p.cols), p.x_stride);
  return launch_status();
}

// ------------------------------------------------------------------ sample_rows
constexpr int kSampleThreads = 1024;
static_assert(kSampleThreads == kArgmaxThreads, "greedy rows run block_argmax with the sampling block");
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kSampleRun = 8;  // consecutive ids per thread in the final scan

// The fixed-point weight of a finite logit: det_exp((v − max) / T) (common.cuh; the host's
// reference::det_exp computes the same bits) times 2^40, truncated. The largest logit weighs
// exactly 2^40, 2^23 of them sum below 2^63, and below (v − max) / T ≈ −27.7 the weight is 0.
__device__ __forceinline__ uint64_t sample_weight(float v, float max, float t) {
  return static_cast<uint64_t>(det_exp((v - max) / t) * 1099511627776.0f);
}

struct SampleShared {
  uint64_t hist[256];  // per digit: weight (top-p)
  uint32_t cnt[256];   // per digit: count
  uint64_t red64[kSampleWarps];
  uint32_t red32[kSampleWarps];
  float redf[kSampleWarps];
  uint32_t digit;
  uint64_t acc;
};

// Radix descent over the finite logits' rank keys, largest first: the key at which the running
// total in rank order (a count, or WEIGHTED the fixed-point weight) first reaches `need`
// (need <= the total over the row). On return `need` is what is left to take at that key
// (>= 1), `above` the total of the larger keys, `ties` how many logits have that key.
template <bool WEIGHTED>
__device__ uint32_t descend(const float* row, int cols, float max, float t, uint64_t& need, uint64_t& above, uint32_t& ties,
                            SampleShared& sh) {
  uint32_t prefix = 0, mask = 0;
  above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kSampleThreads) {
      sh.hist[d] = 0;
      sh.cnt[d] = 0;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += kSampleThreads) {
      const float v = row[c];
      if (!isfinite(v)) continue;
      const uint32_t k = order_key(v);
      if ((k & mask) != prefix) continue;
      const uint32_t d = (k >> shift) & 255u;
      if (WEIGHTED) atomicAdd(reinterpret_cast<unsigned long long*>(&sh.hist[d]), static_cast<unsigned long long>(sample_weight(v, max, t)));
      atomicAdd(&sh.cnt[d], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t acc = 0;
      uint32_t digit = 0;
      for (int d = 255; d >= 0; --d) {
        const uint64_t here = WEIGHTED ? sh.hist[d] : sh.cnt[d];
        if (here > 0 && acc + here >= need) {
          digit = static_cast<uint32_t>(d);
          break;
        }
        acc += here;
      }
      sh.digit = digit;
      sh.acc = acc;
    }
    __syncthreads();
    need -= sh.acc;
    above += sh.acc;
    prefix |= sh.digit << shift;
    mask |= 255u << shift;
    ties = sh.cnt[sh.digit];
    __syncthreads();  // everyone has read this pass's counts
  }
  return prefix;
}

__global__ void __launch_bounds__(kSampleThreads) sample_rows_kernel(const wc_sample_rows_params p) {
  __shared__ SampleShared sh;
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.logits_stride;
  const int cols = static_cast<int>(p.cols);
  // 0. This row's settings (per-row ones sanitized: see warpcore/elementwise.h).
  const float t = p.temperatures != nullptr ? p.temperatures[blockIdx.x] : p.temperature;
  const int32_t top_k = p.top_ks != nullptr ? p.top_ks[blockIdx.x] : p.top_k;
  const float top_p = p.top_ps != nullptr ? p.top_ps[blockIdx.x] : p.top_p;
  if (!(t > 0.0f)) {  // greedy
    const int32_t i = block_argmax(row, cols);
    if (threadIdx.x == 0) p.out[blockIdx.x] = i;
    return;
  }

  // 1. The finite logits' max and count (a row with nothing finite takes argmax's choice).
  float mx = -INFINITY;
  uint32_t finite = 0;
  for (int c = threadIdx.x; c < cols; c += kSampleThreads) {
    const float v = row[c];
    if (isfinite(v)) {
      mx = fmaxf(mx, v);
      ++finite;
    }
  }
  mx = block_max(mx, sh.redf);
  finite = block_reduce(finite, [](uint32_t a, uint32_t b) { return a + b; }, 0u, sh.red32);
  if (finite == 0) {
    const int32_t i = block_argmax(row, cols);
    if (threadIdx.x == 0) p.out[blockIdx.x] = i;
    return;
  }

  // 2. Top-k: the k-th largest key and how many of its ties are kept (the lowest ids).
  const bool has_k = top_k > 0 && static_cast<uint64_t>(top_k) < finite;
  uint32_t key_k = 0, ties = 0;
  uint64_t c_k = 0, above = 0;
  if (has_k) {
    c_k = static_cast<uint64_t>(top_k);
    key_k = descend<false>(row, cols, mx, t, c_k, above, ties, sh);
  }
  // 3. The kept set's weight: the top-k set's (its keys above key_k and c_k ties) or the row's.
  uint64_t w = 0;
  for (int c = threadIdx.x; c < cols; c += kSampleThreads) {
    const float v = row[c];
    if (isfinite(v) && (!has_k || order_key(v) > key_k)) w += sample_weight(v, mx, t);
  }
  const uint64_t w_above_k = block_reduce(w, [](uint64_t a, uint64_t b) { return a + b; }, uint64_t{0}, sh.red64);
  const uint64_t total = has_k ? w_above_k + c_k * sample_weight(key_value(key_k), mx, t) : w_above_k;

  // 4. Top-p: the shortest rank prefix whose weight reaches ceil(top_p · total). It ends at or
  //    before the top-k boundary (the two sets share their rank order); the earlier one wins.
  //    The kept set is every key above `key` plus its first `keep` ties (all: every finite).
  bool all = !has_k;
  uint32_t key = key_k;
  uint64_t keep = c_k, mass = total;
  if (top_p < 1.0f) {  // NaN: all
    // At least 1 (top_p <= 0: the best-ranked token); no more than total (top_p < 1).
    const double need_f = ceil(static_cast<double>(top_p) * static_cast<double>(total));
    uint64_t need = need_f < 1.0 ? 1 : static_cast<uint64_t>(need_f);
    uint64_t above_p = 0;
    const uint32_t key_p = descend<true>(row, cols, mx, t, need, above_p, ties, sh);
    const uint64_t w_p = sample_weight(key_value(key_p), mx, t);  // > 0: its digit held the need
    uint64_t c_p = (need + w_p - 1) / w_p;
    c_p = c_p < ties ? c_p : ties;
    if (all || key_p > key_k || (key_p == key_k && c_p < c_k)) {
      all = false;
      key = key_p;
      keep = c_p;
      mass = above_p + c_p * w_p;
    }
  }

  // 5. The draw: the first id whose inclusive prefix of kept weight, in id order, exceeds
  //    floor(u · mass).
  // u outside [0, 1) (NaN included) is clamped into it; the clamp to mass − 1 is in integers
  // (above 2^53, mass − 1 as a double rounds up to mass).
  const double x = fmax(floor(static_cast<double>(p.uniforms[blockIdx.x]) * static_cast<double>(mass)), 0.0);
  uint64_t target = x >= 18446744073709551616.0 ? UINT64_MAX : static_cast<uint64_t>(x);
  target = target < mass ? target : mass - 1;
  uint64_t base_w = 0;
  uint32_t base_t = 0;
  __shared__ uint32_t s_found;
  if (threadIdx.x == 0) s_found = UINT32_MAX;
  for (int start = 0; start < cols; start += kSampleThreads * kSampleRun) {
    const int first = start + static_cast<int>(threadIdx.x) * kSampleRun;
    uint32_t my_ties = 0;
    float v[kSampleRun];
#pragma unroll
    for (int j = 0; j < kSampleRun; ++j) {
      v[j] = first + j < cols ? row[first + j] : NAN;
      if (!all && isfinite(v[j]) && order_key(v[j]) == key) ++my_ties;
    }
    uint32_t ties_total;
    uint32_t tie = base_t + block_exclusive_scan(my_ties, sh.red32, &ties_total);
    uint64_t weight[kSampleRun];
    uint64_t my_w = 0;
#pragma unroll
    for (int j = 0; j < kSampleRun; ++j) {
      bool kept = isfinite(v[j]);
      if (kept && !all) {
        const uint32_t k = order_key(v[j]);
        kept = k > key || (k == key && tie++ < keep);
      }
      weight[j] = kept ? sample_weight(v[j], mx, t) : 0;
      my_w += weight[j];
    }
    uint64_t w_total;
    uint64_t pre = base_w + block_exclusive_scan(my_w, sh.red64, &w_total);
    if (pre <= target && target < pre + my_w) {  // the crossing is in this thread's run
#pragma unroll
      for (int j = 0; j < kSampleRun; ++j) {
        pre += weight[j];
        if (weight[j] > 0 && pre > target) {
          s_found = static_cast<uint32_t>(first + j);  // one thread: the prefix crosses once
          break;
        }
      }
    }
    __syncthreads();
    if (s_found != UINT32_MAX) break;
    base_w += w_total;
    base_t += ties_total;
  }
  if (threadIdx.x == 0) p.out[blockIdx.x] = static_cast<int32_t>(s_found);  // target < mass: found
}

wc_status launch_sample_rows(const wc_sample_rows_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  // The scalar settings are checked where a row takes them (per-row ones are sanitized).
  if (p.logits == nullptr || p.uniforms == nullptr || p.out == nullptr || p.cols <= 0 || p.cols > (int64_t{1} << 23) ||
      p.rows > INT32_MAX || p.logits_stride < p.cols || (p.temperatures == nullptr && !(p.temperature > 0.0f)) ||
      (p.top_ps == nullptr && !(p.top_p > 0.0f && p.top_p <= 1.0f)) || (p.top_ks == nullptr && p.top_k < 0))
    return WC_ERR_INVALID_ARG;
  sample_rows_kernel<<<static_cast<unsigned>(p.rows), kSampleThreads, 0, s>>>(p);
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_argmax_rows(const wc_argmax_rows_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_argmax_rows(*p, reinterpret_cast<cudaStream_t>(stream));
}

extern "C" wc_status wc_sample_rows(const wc_sample_rows_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_sample_rows(*p, reinterpret_cast<cudaStream_t>(stream));
}

extern "C" wc_status wc_glu(const wc_glu_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  WC_DISPATCH_DTYPE(p->dtype, T, { return wc::launch_glu<T>(*p, s); });
}

extern "C" wc_status wc_select_rows(const wc_select_rows_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_select_rows(*p, reinterpret_cast<cudaStream_t>(stream));
}
