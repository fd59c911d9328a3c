// elementwise.cu — the element-wise family: the ops a decoder needs between its GEMMs.
//   glu          out = act(gate) * up (SwiGLU, GeGLU, squared-ReLU GLU), f32 math, one rounding
//   select_rows  out[i, :] = src[indices[i], :] (embedding lookup; last token of each sequence)
//   argmax_rows  out[r] = argmax of row r of f32 logits (greedy decoding without the logits'
//                trip to the host)
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
#include "common.cuh"
#include "glu.cuh"

namespace wc {
namespace {

constexpr int kGluThreads = 256;
// Vectors per thread held in registers before the math (loads in flight together).
constexpr int kGluUnroll = 4;

template <typename T, int VEC>
__global__ void __launch_bounds__(kGluThreads)
glu_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out, int64_t gate_stride,
           int64_t up_stride, int64_t out_stride, int nvec, wc_glu_activation act) {
  const int64_t row = blockIdx.x;
  const T* g = gate + row * gate_stride;
  const T* u = up + row * up_stride;
  T* o = out + row * out_stride;
  for (int base = threadIdx.x; base < nvec; base += kGluUnroll * blockDim.x) {
    Pack<T, VEC> gv[kGluUnroll], uv[kGluUnroll];
#pragma unroll
    for (int j = 0; j < kGluUnroll; ++j) {
      const int i = base + j * blockDim.x;
      if (i < nvec) {
        gv[j] = load_pack<T, VEC>(g + static_cast<int64_t>(i) * VEC);
        uv[j] = load_pack<T, VEC>(u + static_cast<int64_t>(i) * VEC);
      }
    }
#pragma unroll
    for (int j = 0; j < kGluUnroll; ++j) {
      const int i = base + j * blockDim.x;
      if (i < nvec) {
        Pack<T, VEC> r;
#pragma unroll
        for (int k = 0; k < VEC; ++k) r.v[k] = from_float<T>(glu_activate(to_float(gv[j].v[k]), act) * to_float(uv[j].v[k]));
        store_pack<T, VEC>(o + static_cast<int64_t>(i) * VEC, r);
      }
    }
  }
}

template <typename T, int VEC>
void launch_glu_vec(const wc_glu_params& p, cudaStream_t s) {
  const int nvec = static_cast<int>(p.cols / VEC);
  // Enough threads that each holds at most kGluUnroll vectors, whole warps, at most 256.
  const int64_t want = (nvec + kGluUnroll - 1) / kGluUnroll;
  const int threads = static_cast<int>(min64(kGluThreads, (want + 31) / 32 * 32));
  glu_kernel<T, VEC><<<static_cast<unsigned>(p.rows), threads, 0, s>>>(
      static_cast<const T*>(p.gate), static_cast<const T*>(p.up), static_cast<T*>(p.out), p.gate_stride,
      p.up_stride, p.out_stride, nvec, p.activation);
}

template <typename T>
wc_status launch_glu(const wc_glu_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.cols <= 0 || p.cols > INT32_MAX || p.rows > INT32_MAX) return WC_ERR_INVALID_ARG;
  if (!glu_activation_known(p.activation)) return WC_ERR_UNSUPPORTED;
  constexpr int V = kVec16<T>;
  const bool vec = p.cols % V == 0 && p.gate_stride % V == 0 && p.up_stride % V == 0 && p.out_stride % V == 0 &&
                   aligned_to(16, p.gate, p.up, p.out);
  if (vec) launch_glu_vec<T, V>(p, s);
  else launch_glu_vec<T, 1>(p, s);
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

__global__ void __launch_bounds__(kArgmaxThreads)
argmax_rows_kernel(const float* __restrict__ x, int32_t* __restrict__ out, int cols, int64_t x_stride) {
  const float* row = x + static_cast<int64_t>(blockIdx.x) * x_stride;
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
    if (lane == 0) out[blockIdx.x] = i == INT32_MAX ? 0 : i;  // nothing above -inf: index 0
  }
}

wc_status launch_argmax_rows(const wc_argmax_rows_params& p, cudaStream_t s) {
  if (p.rows <= 0) return WC_OK;
  if (p.x == nullptr || p.out == nullptr || p.cols <= 0 || p.cols > INT32_MAX || p.rows > INT32_MAX || p.x_stride < p.cols)
    return WC_ERR_INVALID_ARG;
  argmax_rows_kernel<<<static_cast<unsigned>(p.rows), kArgmaxThreads, 0, s>>>(p.x, p.out, static_cast<int>(p.cols), p.x_stride);
  return launch_status();
}

}  // namespace
}  // namespace wc

extern "C" wc_status wc_argmax_rows(const wc_argmax_rows_params* p, wc_stream stream) {
  if (p == nullptr) return WC_ERR_INVALID_ARG;
  return wc::launch_argmax_rows(*p, reinterpret_cast<cudaStream_t>(stream));
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
