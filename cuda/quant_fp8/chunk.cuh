// quant_fp8/chunk.cuh — what the quantization kernels of quant_fp8.cu share (included by it
// and by quant_fp8/tensor.cuh, one translation unit): a thread's 16-element chunk, its amax and
// (fused norms) values, the scale formula and the saturating e4m3 store.
#pragma once

#include "common.cuh"
#include "rms_norm.cuh"

namespace wc {
namespace {

// A thread's unit of work: CH consecutive elements, moved as packs of up to 8 (16 bytes).
template <typename T, int CH>
struct Chunk {
  static constexpr int kV = CH < 8 ? CH : 8;
  Pack<T, kV> p[CH / kV];
  __device__ __forceinline__ float at(int e) const { return to_float(p[e / kV].v[e % kV]); }
};

template <typename T, int CH>
__device__ __forceinline__ Chunk<T, CH> load_chunk(const T* src) {
  Chunk<T, CH> c;
#pragma unroll
  for (int i = 0; i < CH / Chunk<T, CH>::kV; ++i) c.p[i] = load_pack<T, Chunk<T, CH>::kV>(src + i * Chunk<T, CH>::kV);
  return c;
}

// residual = round(x + residual), stored; the chunk becomes the rounded sum.
template <typename T, int CH>
__device__ __forceinline__ void add_residual_chunk(Chunk<T, CH>& c, T* residual) {
#pragma unroll
  for (int i = 0; i < CH / Chunk<T, CH>::kV; ++i)
    c.p[i] = add_residual<T, Chunk<T, CH>::kV>(c.p[i], residual + i * Chunk<T, CH>::kV);
}

template <typename T, int CH>
__device__ __forceinline__ float chunk_sum_squares(const Chunk<T, CH>& c) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < CH / Chunk<T, CH>::kV; ++i) s += sum_squares<T, Chunk<T, CH>::kV>(c.p[i]);
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
