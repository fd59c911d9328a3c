// quant_fp8/chunk.cuh — what the quantization kernels of quant_fp8.cu share (included by it
// and by quant_fp8/tensor.cuh, one translation unit): a thread's 16-element chunk, its amax and
// (fused norms) values, the scale formula and the saturating e4m3 store.
#pragma once

#include "common.cuh"
#include "rms_norm.cuh"

namespace wc {
namespace {

// A thread's unit of work: common.cuh's Chunk<T, CH> (CH = 16 on the vector paths, 1 on the
// scalar ones).

// residual = round(x + residual), stored; the chunk becomes the rounded sum (rms_norm.cuh's
// add_residual, element for element).
template <typename T, int CH>
__device__ __forceinline__ void add_residual_chunk(Chunk<T, CH>& c, T* residual) {
  if constexpr (CH == 1) {
    c.v = from_float<T>(to_float(c.v) + to_float(*residual));
    *residual = c.v;
  } else {
    constexpr int V = kVec16<T>;
#pragma unroll
    for (int i = 0; i < Chunk<T, CH>::kQ; ++i) {
      const uint4 r = *reinterpret_cast<const uint4*>(residual + i * V);
      float s[V];
#pragma unroll
      for (int k = 0; k < V; ++k) s[k] = elem_of<T>(c.q[i], k) + elem_of<T>(r, k);
      c.q[i] = floats_to_words<T>(s);
      *reinterpret_cast<uint4*>(residual + i * V) = c.q[i];
    }
  }
}

// The sum of squares in rms_norm.cuh's order: an fma chain per 16-byte vector, the vectors'
// sums added in turn.
template <typename T, int CH>
__device__ __forceinline__ float chunk_sum_squares(const Chunk<T, CH>& c) {
  constexpr int V = CH == 1 ? 1 : kVec16<T>;
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < CH / V; ++i) {
    float t = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float f = c.at(i * V + k);
      t = fmaf(f, f, t);
    }
    s += t;
  }
  return s;
}

// Element e of the value being quantized: x, or the normalised x.
template <typename T, int CH>
__device__ __forceinline__ float chunk_value(const Chunk<T, CH>& x, const Chunk<T, CH>& w, int e, bool norm,
                                             float rstd, float w_off) {
  return norm ? rms_normed(x.at(e), rstd, w_off, w.at(e)) : x.at(e);
}

template <typename T, int CH>
__device__ __forceinline__ float chunk_amax(const Chunk<T, CH>& x, const Chunk<T, CH>& w, bool norm, float rstd,
                                            float w_off) {
  float a = 0.0f;
#pragma unroll
  for (int e = 0; e < CH; ++e) a = fmaxf(a, fabsf(chunk_value(x, w, e, norm, rstd, w_off)));
  return a;
}

// The scale of a block with this amax (never zero or subnormal).
__device__ __forceinline__ float scale_of(float amax) { return fmaxf(amax, WC_FP8_AMAX_FLOOR) / WC_FP8_MAX; }

// Quantizes CH values (value(e) · inv) and stores them (CH bytes; 16-byte store for CH = 16).
template <int CH, typename F>
__device__ __forceinline__ void store_e4m3(uint8_t* dst, float inv, F value) {
  if constexpr (CH == 1) {
    *dst = static_cast<uint8_t>(e4m3x2_from_floats(value(0) * inv, 0.0f) & 0xFF);
  } else {
    static_assert(CH % 16 == 0, "vector chunks are whole 16-byte stores");
#pragma unroll
    for (int s = 0; s < CH / 16; ++s) {
      uint32_t w[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int e = s * 16 + q * 4;
        const uint32_t lo = e4m3x2_from_floats(value(e) * inv, value(e + 1) * inv);
        const uint32_t hi = e4m3x2_from_floats(value(e + 2) * inv, value(e + 3) * inv);
        w[q] = lo | (hi << 16);
      }
      *reinterpret_cast<uint4*>(dst + s * 16) = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

// Maximum over the 8 lanes (aligned) that hold one 128-group of 16-element chunks.
__device__ __forceinline__ float group8_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
}

}  // namespace
}  // namespace wc
