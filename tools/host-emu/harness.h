// harness.h — shared utilities of the elementwise and moe_routing tests: failure counting with
// a context line, a deterministic RNG, buffers whose usable bytes end exactly at the allocation
// (ASan) behind a checked guard, dtype helpers, and the final verdict line.
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shim.h"
#include "warpcore.h"

static long g_fail = 0, g_configs = 0, g_checks = 0;
static std::string g_ctx;

static void fail(const char* fmt, ...) {
  if (++g_fail <= 30) {
    fprintf(stderr, "FAIL [%s]: ", g_ctx.c_str());
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
}
static void ctx(const char* fmt, ...) {
  char b[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  g_ctx = b;
  ++g_configs;
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uni(double a, double b) { return a + (b - a) * (next() >> 11) * (1.0 / 9007199254740992.0); }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
};

// A byte buffer whose usable region [off, off + n) ends exactly at the allocation's end (ASan
// catches any read or write past it); [0, off) is a poisoned guard checked after the run.
struct Buf {
  uint8_t* base = nullptr;
  size_t off = 0, n = 0;
  std::vector<uint8_t> init;
  Buf(size_t bytes, size_t off_bytes, Rng& r) : off(off_bytes), n(bytes) {
    void* p = nullptr;
    if (posix_memalign(&p, 256, off + n + (off + n == 0)) != 0) abort();
    base = static_cast<uint8_t*>(p);
    init.resize(off + n);
    for (auto& b : init) b = static_cast<uint8_t>(r.next());
    if (!init.empty()) memcpy(base, init.data(), init.size());
  }
  Buf(const Buf&) = delete;
  ~Buf() { free(base); }
  void* p() const { return base + off; }
  template <typename T> T* as() const { return reinterpret_cast<T*>(base + off); }
  // Sets the usable region's bytes (and records them as the expected "before" state).
  void set(const void* src, size_t bytes, size_t at = 0) {
    memcpy(base + off + at, src, bytes);
    memcpy(init.data() + off + at, src, bytes);
  }
  uint8_t before(size_t i) const { return init[off + i]; }
  bool guard_intact() const { return off == 0 || memcmp(base, init.data(), off) == 0; }
};

template <typename T> inline float tof(T v);
template <> inline float tof(float v) { return v; }
template <> inline float tof(__half v) { return __half2float(v); }
template <> inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> inline T fromf(float v);
template <> inline float fromf(float v) { return v; }
template <> inline __half fromf(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 fromf(float v) { return __float2bfloat16_rn(v); }
template <typename T> inline wc_dtype tag();
template <> inline wc_dtype tag<float>() { return WC_F32; }
template <> inline wc_dtype tag<__half>() { return WC_F16; }
template <> inline wc_dtype tag<__nv_bfloat16>() { return WC_BF16; }
template <typename T> inline const char* tname();
template <> inline const char* tname<float>() { return "f32"; }
template <> inline const char* tname<__half>() { return "f16"; }
template <> inline const char* tname<__nv_bfloat16>() { return "bf16"; }

// One unit in the last place of T at magnitude |x| (normal range; subnormal floor included).
template <typename T> inline double ulp(double x) {
  int mant = sizeof(T) == 4 ? 23 : (std::is_same_v<T, __half> ? 10 : 7);
  int emin = sizeof(T) == 4 || std::is_same_v<T, __nv_bfloat16> ? -126 : -14;
  int e = x == 0 ? emin : std::max(emin, std::ilogb(std::fabs(x)));
  return std::ldexp(1.0, e - mant);
}

// The verdict: no check failed and the shim reported nothing. Returns the exit status.
static int finish(const char* name) {
  const bool ok = g_fail == 0 && emu::errors == 0;
  printf("%s %s: %ld configurations, %ld checks, %ld failures, %ld emulation errors\n", name, ok ? "PASS" : "FAIL",
         g_configs, g_checks, g_fail, emu::errors.load());
  return ok ? 0 : 1;
}

// A GLU gate activation in f64 (reference::mlp::GluActivation::apply; wc_glu_activation tags):
// what wc_glu (elementwise) and wc_glu_quant_fp8 (quant_fp8) are held to.
inline double glu_act_ref(int act, double x) {
  switch (act) {
    case WC_GLU_SILU: return x / (1.0 + std::exp(-x));
    case WC_GLU_GELU_TANH: return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    default: return x > 0 ? x * x : 0.0;
  }
}
inline const char* glu_act_name(int act) { return act == 0 ? "silu" : act == 1 ? "gelu_tanh" : "relu2"; }

// The documented deterministic exp (common.cuh's det_exp, reference::det_exp), restated: fixed
// correctly rounded f32 operations, constants as bits. moe_gate's sigmoid and sample_rows'
// weights are built on it.
inline float det_exp_ref(float y) {
  auto bits = [](uint32_t u) { float f; memcpy(&f, &u, 4); return f; };
  y = y < -87.0f ? -87.0f : y;
  y = y > 88.0f ? 88.0f : y;
  const float n = std::nearbyintf(y * bits(0x3FB8AA3Bu));
  float r = std::fmaf(n, -bits(0x3F317200u), y);
  r = std::fmaf(n, -bits(0x35BFBE8Eu), r);
  float p = bits(0x39500D01u);
  for (uint32_t c : {0x3AB60B61u, 0x3C088889u, 0x3D2AAAABu, 0x3E2AAAABu}) p = std::fmaf(p, r, bits(c));
  p = std::fmaf(p, r, 0.5f);
  p = std::fmaf(p, r, 1.0f);
  p = std::fmaf(p, r, 1.0f);
  const int ni = std::isnan(n) ? 0 : static_cast<int>(n);
  const int32_t e = (ni + 127) << 23;
  return p * bits(static_cast<uint32_t>(e));
}
