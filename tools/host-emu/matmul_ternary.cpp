// Emulated runs of cuda/matmul_ternary.cu (quantize_activations, rms_norm_quantize_activations,
// matmul_ternary) against
// independent references: the activation codes and scales bit for bit (transformers' f32
// arithmetic), the GEMM against exact int64 sums of the unpacked ternary values with an f64
// epilogue; guards and row gaps untouched.
#include "harness.h"

#include <algorithm>

// ------------------------------------------------------------------ quantize_activations
template <typename T>
static void quant_case(int m, int k, int xpad, int qpad, int off, uint64_t seed, wc_status want_status = WC_OK) {
  ctx("quantize_activations %s m=%d k=%d xpad=%d qpad=%d off=%d", tname<T>(), m, k, xpad, qpad, off);
  Rng r(seed);
  const size_t E = sizeof(T);
  const int64_t xs = k + xpad, qs = k + qpad;
  Buf xb(m > 0 ? ((m - 1) * xs + k) * E : 0, off * E, r);
  for (int i = 0; i < m; ++i) {
    const double mag = std::pow(10.0, r.uni(-3, 2));
    for (int c = 0; c < k; ++c) {
      double v = r.uni(-mag, mag);
      if (i == 0 && m > 2) v = 0.0;                    // a zero row: the 1e-5 floor
      if (i == 1 && m > 2) v = r.uni(-4e-6, 4e-6);     // below the floor
      if (i == 2 && m > 3 && c == k / 2) v = -mag;     // the absmax negative, at ±127 exactly
      T t = fromf<T>(static_cast<float>(v));
      xb.set(&t, E, (i * xs + c) * E);
    }
  }
  Buf qb(m > 0 ? (m - 1) * qs + k : 0, 16, r);
  Buf sb(m * 4, 16, r);
  wc_quantize_activations_params p{xb.p(), qb.as<int8_t>(), sb.as<float>(), m, k, xs, qs, tag<T>()};
  const wc_status st = wc_quantize_activations(&p, nullptr);
  if (st != want_status) {
    fail("status %d, want %d", st, want_status);
    return;
  }
  if (st != WC_OK || m == 0) {
    if (memcmp(qb.base, qb.init.data(), qb.init.size()) != 0 || memcmp(sb.base, sb.init.data(), sb.init.size()) != 0)
      fail("a refused launch wrote");
    return;
  }
  for (int i = 0; i < m; ++i) {
    const T* x = xb.as<T>() + i * xs;
    float amax = 0.0f;
    for (int c = 0; c < k; ++c) amax = std::max(amax, std::fabs(tof(x[c])));
    const float inv = 1.0f / std::max(amax, 1e-5f);
    const float s = inv * 127.0f;
    ++g_checks;
    if (sb.as<float>()[i] != s) fail("row %d scale %.9g want %.9g", i, sb.as<float>()[i], s);
    for (int c = 0; c < k; ++c) {
      const float y = std::nearbyint(tof(x[c]) * s);
      const int want = static_cast<int>(std::min(127.0f, std::max(-128.0f, y)));
      ++g_checks;
      if (qb.as<int8_t>()[i * qs + c] != want) {
        fail("row %d col %d: code %d want %d (x %.9g)", i, c, qb.as<int8_t>()[i * qs + c], want, tof(x[c]));
        return;
      }
    }
    for (int64_t c = k; c < qs && i + 1 < m; ++c)
      if (qb.as<uint8_t>()[i * qs + c] != qb.before(i * qs + c)) fail("q row gap written at row %d col %lld", i, (long long)c);
  }
  if (!qb.guard_intact() || !sb.guard_intact()) fail("guard written");
}

// ------------------------------------------------------------------ rms_norm_quantize_activations
// Against an f64 RMSNorm: the scale within 1e-5 relative of the f64 one, every code within one of
// the f64 code, and equal wherever the f64 value of y · scale is more than 1e-3 from a rounding
// boundary (the kernel's f32 normalisation differs from f64 by a few ulps); the residual
// (fused add) bit-exact: round(x + residual) in T.
template <typename T>
static void norm_quant_case(bool add, int m, int k, int xpad, int qpad, float w_off, uint64_t seed,
                            wc_status want_status = WC_OK) {
  ctx("rms_norm_quantize_activations %s add=%d m=%d k=%d xpad=%d qpad=%d w_off=%g", tname<T>(), add, m, k, xpad, qpad, w_off);
  Rng r(seed);
  const size_t E = sizeof(T);
  const int64_t xs = k + xpad, qs = k + qpad;
  auto matrix = [&](double mag) {
    Buf* b = new Buf(m > 0 ? ((m - 1) * xs + k) * E : 0, 0, r);
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < k; ++c) {
        T t = fromf<T>(static_cast<float>(r.uni(-mag, mag) * (1 + i % 3)));
        b->set(&t, E, (i * xs + c) * E);
      }
    return b;
  };
  Buf* xb = matrix(2.0);
  Buf* rb = add ? matrix(1.0) : nullptr;
  const std::vector<uint8_t> r_before = rb ? rb->init : std::vector<uint8_t>();
  Buf wb(k * E, 0, r);
  for (int c = 0; c < k; ++c) {
    T t = fromf<T>(static_cast<float>(r.uni(0.5, 1.5) - w_off));
    wb.set(&t, E, c * E);
  }
  Buf qb(m > 0 ? (m - 1) * qs + k : 0, 16, r);
  Buf sb(m * 4, 16, r);
  const float eps = 1e-5f;
  wc_rms_norm_quantize_activations_params p{xb->p(), rb ? rb->p() : nullptr, wb.p(), qb.as<int8_t>(), sb.as<float>(),
                                            m, k, xs, xs, qs, eps, w_off, tag<T>()};
  const wc_status st = wc_rms_norm_quantize_activations(&p, nullptr);
  if (st != want_status) {
    fail("status %d, want %d", st, want_status);
  } else if (st == WC_OK) {
    int exact_misses = 0;
    for (int i = 0; i < m; ++i) {
      std::vector<double> v(k), y(k);
      double ss = 0.0, amax = 0.0;
      for (int c = 0; c < k; ++c) {
        const T* x0 = reinterpret_cast<const T*>(xb->init.data() + xb->off) + i * xs + c;
        if (add) {
          const T* r0 = reinterpret_cast<const T*>(r_before.data() + rb->off) + i * xs + c;
          const T sum = fromf<T>(tof(*x0) + tof(*r0));
          ++g_checks;
          if (memcmp(&sum, rb->as<T>() + i * xs + c, E) != 0) {
            fail("row %d col %d: residual not round(x + residual)", i, c);
            return;
          }
          v[c] = tof(sum);
        } else {
          v[c] = tof(*x0);
        }
        ss += v[c] * v[c];
      }
      const double rstd = 1.0 / std::sqrt(ss / k + eps);
      for (int c = 0; c < k; ++c) {
        y[c] = v[c] * rstd * (w_off + tof(wb.as<T>()[c]));
        amax = std::max(amax, std::fabs(y[c]));
      }
      const double s = 127.0 / std::max(amax, 1e-5);
      ++g_checks;
      if (!(std::fabs(sb.as<float>()[i] - s) <= 1e-5 * s)) fail("row %d scale %.9g want %.9g", i, sb.as<float>()[i], s);
      for (int c = 0; c < k; ++c) {
        const double want = std::min(127.0, std::max(-128.0, y[c] * s));
        const int got = qb.as<int8_t>()[i * qs + c];
        const double frac = std::fabs(want - std::floor(want) - 0.5);
        ++g_checks;
        if (std::fabs(got - want) > 1.0 || (frac > 1e-3 && got != static_cast<int>(std::nearbyint(want)))) {
          fail("row %d col %d: code %d want %.4f", i, c, got, want);
          return;
        }
        if (got != static_cast<int>(std::nearbyint(want))) ++exact_misses;
      }
    }
    if (exact_misses) fprintf(stderr, "  [%s] %d codes at a rounding boundary differ from f64\n", g_ctx.c_str(), exact_misses);
  } else if (memcmp(qb.base, qb.init.data(), qb.init.size()) != 0 || (rb && memcmp(rb->base, r_before.data(), r_before.size()) != 0)) {
    fail("a refused launch wrote");
  }
  if (!qb.guard_intact() || !sb.guard_intact()) fail("guard written");
  delete xb;
  delete rb;
}

// ------------------------------------------------------------------ matmul_ternary
// Split-k's workspace, shared by every case as the Device's scratch is by every launch: zero
// before the first, and each launch must leave it zero (checked after every case).
static std::vector<int32_t> g_workspace(1 << 18, 0);

// codes: 0 random, 1 the extremes (q = -128 against code 2 = +1 everywhere: the largest sums).
// splits >= 2: split-k over that many CTAs per tile (workspace_words: its capacity; -1 = all).
template <typename OutT>
static void gemm_case(int block_m, int m, int n, int k, int qpad, int wpad, int opad, bool bias, int codes, uint64_t seed,
                      wc_status want_status = WC_OK, int splits = 1, int64_t workspace_words = -1) {
  ctx("matmul_ternary %s block_m=%d splits=%d m=%d n=%d k=%d pads=%d/%d/%d bias=%d codes=%d", tname<OutT>(), block_m, splits, m,
      n, k, qpad, wpad, opad, bias, codes);
  Rng r(seed);
  const size_t E = sizeof(OutT);
  const int P = n / 4;
  const int64_t ldq = k + qpad, ldw = k + wpad, ldo = n + opad;
  Buf qb(m > 0 ? (m - 1) * ldq + k : 0, 0, r);
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < k; ++c) {
      const int8_t v = codes ? -128 : static_cast<int8_t>(r.next());
      qb.set(&v, 1, i * ldq + c);
    }
  Buf sb(m * 4, 0, r);
  for (int i = 0; i < m; ++i) {
    const float s = static_cast<float>(127.0 / std::pow(10.0, r.uni(-2, 2)));
    sb.set(&s, 4, i * 4);
  }
  // Packed weights: byte (p, c) holds columns plane · P + p in bits 2 · plane (code = v + 1).
  Buf wb(P > 0 ? (P - 1) * ldw + k : 0, 0, r);
  std::vector<int8_t> v(static_cast<size_t>(n) * k);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < k; ++c) v[static_cast<size_t>(j) * k + c] = codes ? 1 : static_cast<int8_t>(r.below(3) - 1);
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < k; ++c) {
      uint8_t byte = 0;
      for (int plane = 0; plane < 4; ++plane)
        byte |= static_cast<uint8_t>(v[static_cast<size_t>(plane * P + p) * k + c] + 1) << (2 * plane);
      wb.set(&byte, 1, p * ldw + c);
    }
  Buf bb(bias ? n * E : 0, 0, r);
  for (int j = 0; bias && j < n; ++j) {
    OutT b = fromf<OutT>(static_cast<float>(r.uni(-4, 4)));
    bb.set(&b, E, j * E);
  }
  const float w_scale = static_cast<float>(r.uni(0.01, 2.0));
  Buf ob(m > 0 ? ((m - 1) * ldo + n) * E : 0, 16, r);
  wc_matmul_ternary_params p{qb.as<int8_t>(), sb.as<float>(), wb.as<uint8_t>(), w_scale, bias ? bb.p() : nullptr, ob.p(),
                             m, n, k, ldq, ldw, ldo, block_m, tag<OutT>(), splits, g_workspace.data(),
                             workspace_words < 0 ? static_cast<int64_t>(g_workspace.size()) : workspace_words};
  const wc_status st = wc_matmul_ternary(&p, nullptr);
  if (std::any_of(g_workspace.begin(), g_workspace.end(), [](int32_t w) { return w != 0; })) {
    fail("the split-k workspace is not all zero after the launch");
    std::fill(g_workspace.begin(), g_workspace.end(), 0);
  }
  if (st != want_status) {
    fail("status %d, want %d", st, want_status);
    return;
  }
  if (st != WC_OK || m == 0) {
    if (memcmp(ob.base, ob.init.data(), ob.init.size()) != 0) fail("a refused launch wrote");
    return;
  }
  double worst = 0.0;
  for (int i = 0; i < m; ++i) {
    const int8_t* q = qb.as<int8_t>() + i * ldq;
    const double s = sb.as<float>()[i];
    for (int j = 0; j < n; ++j) {
      int64_t dot = 0;
      const int8_t* vj = &v[static_cast<size_t>(j) * k];
      for (int c = 0; c < k; ++c) dot += static_cast<int64_t>(q[c]) * vj[c];
      const double b = bias ? tof(bb.as<OutT>()[j]) : 0.0;
      const double want = (dot / s + b) * w_scale;
      const double terms = (std::fabs(dot / s) + std::fabs(b)) * std::fabs(w_scale);
      const double tol = ulp<OutT>(want) + 8.0 * 1.1920929e-7 * terms + 1e-30;
      const double got = tof(ob.as<OutT>()[i * ldo + j]);
      ++g_checks;
      worst = std::max(worst, std::fabs(got - want) / tol);
      if (!(std::fabs(got - want) <= tol)) {
        fail("row %d col %d: got %.9g want %.9g (sum %lld)", i, j, got, want, (long long)dot);
        return;
      }
    }
    for (int64_t j = n; j < ldo && i + 1 < m; ++j)
      for (size_t e = 0; e < E; ++e)
        if (ob.as<uint8_t>()[(i * ldo + j) * E + e] != ob.before((i * ldo + j) * E + e)) {
          fail("out row gap written at row %d col %lld", i, (long long)j);
          return;
        }
  }
  if (!ob.guard_intact()) fail("out guard written");
  if (worst > 0.5) fprintf(stderr, "  [%s] worst error %.2f of the bound\n", g_ctx.c_str(), worst);
}

int main() {
  uint64_t seed = 1;
  for (int m : {1, 3, 5, 130})
    for (int k : {16, 208, 256, 2560})
      for (int pad : {0, 16}) {
        if (m == 130 && k == 2560 && pad) continue;
        quant_case<__nv_bfloat16>(m, k, pad, pad ? 32 : 0, pad ? 8 : 0, seed++);
        quant_case<__half>(m, k, pad ? 8 : 0, pad, 0, seed++);
        quant_case<float>(m, k, pad ? 4 : 0, pad, pad ? 4 : 0, seed++);
      }
  quant_case<__nv_bfloat16>(0, 64, 0, 0, 0, seed++);                             // zero rows: no-op
  quant_case<__nv_bfloat16>(2, 24, 0, 0, 0, seed++, WC_ERR_INVALID_ARG);         // k not a multiple of 16
  quant_case<__nv_bfloat16>(2, 32, 0, 0, 1, seed++, WC_ERR_INVALID_ARG);         // misaligned x
  quant_case<float>(2, 32, 1, 0, 0, seed++, WC_ERR_INVALID_ARG);                 // x row stride not 16 bytes
  fprintf(stderr, "quantize_activations done: %ld configs, %ld failures\n", g_configs, g_fail);
  for (bool add : {false, true})
    for (int m : {1, 4, 33})
      for (int k : {16, 272, 2560}) {
        norm_quant_case<__nv_bfloat16>(add, m, k, m % 2 ? 16 : 0, 16, 0.0f, seed++);
        norm_quant_case<__half>(add, m, k, 0, 0, 1.0f, seed++);
        norm_quant_case<float>(add, m, k, 4, 0, 0.0f, seed++);
      }
  norm_quant_case<__nv_bfloat16>(true, 2, 24, 0, 0, 0.0f, seed++, WC_ERR_INVALID_ARG);  // k % 16
  norm_quant_case<__nv_bfloat16>(false, 2, 32, 3, 0, 0.0f, seed++, WC_ERR_INVALID_ARG);  // x row stride
  fprintf(stderr, "rms_norm_quantize_activations done: %ld configs, %ld failures\n", g_configs, g_fail);

  // 16 and 128: the mma.sync tiles; 64: the Hopper tile (wgmma, sm_90a).
  for (int block_m : {16, 128, 64}) {
    for (int m : {1, 5, 16, 17, 130})
      for (int n : {4, 36, 128, 132})
        for (int k : {16, 208, 512, 528}) {
          const int variant = static_cast<int>(seed % 4);
          gemm_case<__nv_bfloat16>(block_m, m, n, k, variant & 1 ? 16 : 0, variant & 2 ? 32 : 0, variant ? 3 : 0, variant != 1,
                                   0, seed++);
        }
    gemm_case<__half>(block_m, 33, 260, 1040, 16, 0, 1, true, 0, seed++);
    gemm_case<float>(block_m, 129, 520, 336, 0, 16, 0, true, 0, seed++);
    gemm_case<float>(block_m, 3, 8, 4096, 0, 0, 0, false, 1, seed++);   // long k, the largest sums
    gemm_case<__nv_bfloat16>(block_m, 0, 8, 32, 0, 0, 0, false, 0, seed++);                          // m = 0: no-op
    gemm_case<__nv_bfloat16>(block_m, 2, 8, 24, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG);      // k % 16
    gemm_case<__nv_bfloat16>(block_m, 2, 6, 32, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG);      // n % 4
    gemm_case<__nv_bfloat16>(block_m, 2, 8, 32, 8, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG);      // ldq % 16
    gemm_case<__nv_bfloat16>(block_m, 2, 8, 65552, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG);   // k > max
  }
  gemm_case<float>(32, 2, 8, 32, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG);  // no such tile
  gemm_case<float>(16, 17, 8, 65536, 0, 0, 0, false, 1, seed++);                 // k = max, the largest sums
  gemm_case<float>(64, 17, 8, 65536, 0, 0, 0, false, 1, seed++);                 // ... on the Hopper tile
  gemm_case<__nv_bfloat16>(64, 70, 1032, 2560, 16, 16, 8, true, 0, seed++);     // 3 × 2 CTAs, padded, bias
  fprintf(stderr, "matmul_ternary unsplit done: %ld configs, %ld failures\n", g_configs, g_fail);

  // Split-k (16-row tile): every slice count up to the k-steps (512 bytes each), slices of one
  // and of several steps, partial last steps, m past one tile, padded strides, bias.
  for (int m : {1, 5, 16, 33})
    for (int n : {4, 36, 132})
      for (int k : {528, 1040, 2560}) {
        const int steps = (k + 511) / 512;
        for (int s = 2; s <= steps; ++s) {
          const int variant = static_cast<int>(seed % 4);
          gemm_case<__nv_bfloat16>(16, m, n, k, variant & 1 ? 16 : 0, variant & 2 ? 32 : 0, variant ? 3 : 0, variant != 1, 0, seed++,
                                   WC_OK, s);
        }
      }
  gemm_case<__half>(16, 17, 260, 3344, 16, 0, 1, true, 0, seed++, WC_OK, 7);
  gemm_case<float>(16, 3, 8, 8192, 0, 0, 0, false, 1, seed++, WC_OK, 16);       // the largest sums, split 16 ways
  gemm_case<float>(16, 2, 2560, 6912, 0, 0, 0, true, 0, seed++, WC_OK, 4);      // BitNet's down_proj at decode, the plan's split
  gemm_case<__nv_bfloat16>(16, 0, 8, 1024, 0, 0, 0, false, 0, seed++, WC_OK, 2);                          // m = 0: no-op
  gemm_case<__nv_bfloat16>(128, 2, 8, 1024, 0, 0, 0, false, 0, seed++, WC_ERR_UNSUPPORTED, 2);            // split on the 128-row tile
  gemm_case<__nv_bfloat16>(64, 2, 8, 1024, 0, 0, 0, false, 0, seed++, WC_ERR_UNSUPPORTED, 2);             // ... on the Hopper tile
  gemm_case<__nv_bfloat16>(16, 2, 8, 1024, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG, 3);             // more slices than k-steps
  gemm_case<__nv_bfloat16>(16, 17, 64, 1024, 0, 0, 0, false, 0, seed++, WC_ERR_INVALID_ARG, 2, 4 * 513 - 1);  // workspace short
  gemm_case<__nv_bfloat16>(16, 17, 64, 1024, 0, 0, 0, false, 0, seed++, WC_OK, 2, 4 * 513);                   // just enough
  return finish("matmul_ternary");
}
