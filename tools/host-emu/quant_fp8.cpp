// Emulated runs of cuda/quant_fp8.cu against an independent e4m3 reference (src/reference/
// quant.rs semantics): quantize_fp8 (per tensor, per row, 1x128 groups, 128x128 blocks) bit for
// bit, codes and scales; dequantize_fp8 within one rounding of the output type; the fused
// (add +) RMSNorm -> FP8 within half an e4m3 step of the exact f64 normalised value, with the
// stored residual bit for bit; glu_quant_fp8 within half an e4m3 step of the f64 act(gate) · up.
// Usage: quant_fp8 [single | glu] (only the single-pass per-tensor or the glu_quant cases).
#include "harness.h"

#include <algorithm>

static double g_max_norm_err = 0.0;  // fused norm: largest error / half-step bound
static double g_max_glu_err = 0.0;   // glu_quant: the same

// e4m3 (bias 7, 3 mantissa bits, max 448, no inf), round to nearest even, saturating.
static uint8_t e4m3_ref(float v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  double a = std::min(std::fabs(static_cast<double>(v)), 448.0);
  const int e = std::max(std::ilogb(a == 0 ? 1.0 : a), -6);
  const double step = std::ldexp(1.0, e - 3);
  const double q = std::nearbyint(a / step) * step;  // ties to even (default rounding mode)
  if (q == 0) return sign;
  if (q < std::ldexp(1.0, -6)) return sign | static_cast<uint8_t>(q / std::ldexp(1.0, -9));
  const int qe = std::ilogb(q);
  return sign | static_cast<uint8_t>(((qe + 7) << 3) | (static_cast<int>(q / std::ldexp(1.0, qe - 3)) - 8));
}
static double e4m3_value(uint8_t b) {
  const int ex = (b >> 3) & 15, m = b & 7;
  const double mag = ex == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, ex - 10);
  return (b & 0x80) ? -mag : mag;
}

struct Layout {  // block shape and scale storage
  int64_t br, bc, sr, sc, ss_row, ss_col;
};
static Layout layout_of(wc_scale_granularity g, int64_t rows, int64_t cols, bool col_major) {
  Layout l{};
  switch (g) {
    case WC_SCALE_TENSOR: l.br = rows; l.bc = cols; break;
    case WC_SCALE_ROW: l.br = 1; l.bc = cols; break;
    case WC_SCALE_GROUP128: l.br = 1; l.bc = 128; break;
    default: l.br = 128; l.bc = 128; break;
  }
  l.sr = (rows + l.br - 1) / l.br;
  l.sc = (cols + l.bc - 1) / l.bc;
  if (col_major) {
    l.ss_row = 1;
    l.ss_col = l.sr + 3;  // a gap after each column of scales
  } else {
    l.ss_row = l.sc;
    l.ss_col = 1;
  }
  return l;
}
static size_t scale_count(const Layout& l) { return (l.sr - 1) * l.ss_row + (l.sc - 1) * l.ss_col + 1; }
static const char* gname(wc_scale_granularity g) {
  return g == WC_SCALE_TENSOR ? "tensor" : g == WC_SCALE_ROW ? "row" : g == WC_SCALE_GROUP128 ? "group128" : "block128";
}

template <typename T>
static void fill(Buf& b, int rows, int cols, int64_t stride, Rng& r) {
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      // Per-row magnitudes differ (row scales differ); a few zero rows and tiny values.
      const double mag = i % 5 == 3 ? 0.0 : std::ldexp(1.0, (i * 7) % 9 - 4);
      T v = fromf<T>(static_cast<float>(r.uni(-1, 1) * mag * (r.below(16) == 0 ? 1e-4 : 1.0)));
      b.set(&v, sizeof(T), (i * stride + c) * sizeof(T));
    }
}

static bool gaps_untouched(const Buf& b, int rows, int cols, int64_t stride, size_t E) {
  for (int i = 0; i + 1 < rows; ++i)
    for (int64_t k = cols * E; k < stride * static_cast<int64_t>(E); ++k)
      if (b.as<uint8_t>()[i * stride * E + k] != b.before(i * stride * E + k)) return false;
  return b.guard_intact();
}

// Dequantizes (q, scale) with the kernel into D and checks each value against code · scale.
template <typename D>
static void dequant_check(const Buf& qb, const Buf& sb, const Layout& l, wc_scale_granularity g, int rows, int cols,
                          int64_t qs, int off, Rng& r) {
  const int64_t os = cols + (off ? 3 : 0);
  Buf ob(((rows - 1) * os + cols) * sizeof(D), off * sizeof(D), r);
  wc_dequantize_fp8_params p{qb.p(), sb.as<float>(), ob.p(), rows, cols, qs, os, l.ss_row, l.ss_col, g, tag<D>()};
  if (wc_dequantize_fp8(&p, nullptr) != WC_OK) return fail("dequantize %s: status not OK", tname<D>());
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      const double want = e4m3_value(qb.as<uint8_t>()[i * qs + c]) *
                          sb.as<float>()[(i / l.br) * l.ss_row + (c / l.bc) * l.ss_col];
      const double got = tof(ob.as<D>()[i * os + c]);
      ++g_checks;
      if (!(std::fabs(got - want) <= ulp<D>(want)))
        return fail("dequantize %s (%d, %d): got %.9g want %.9g", tname<D>(), i, c, got, want);
    }
  if (!gaps_untouched(ob, rows, cols, os, sizeof(D))) fail("dequantize %s: gap or guard written", tname<D>());
}

// The single-pass per-tensor kernel's plan and workspace (one for the whole run: every launch
// must leave its arrival word with the low 31 bits 0, bit 31 flipped).
struct SinglePass {
  Buf* ws;
  int64_t ctas, held;
};

// ------------------------------------------------------------------ quantize_fp8 (+ dequantize)
template <typename T>
static void quant_case(wc_scale_granularity g, int rows, int cols, int xpad, int opad, int off, bool col_major,
                       uint64_t seed, wc_status want_st = WC_OK, const SinglePass* sp = nullptr) {
  ctx("quantize_fp8 %s %s rows=%d cols=%d xpad=%d opad=%d off=%d scale_col_major=%d%s ctas=%lld held=%lld", tname<T>(),
      gname(g), rows, cols, xpad, opad, off, col_major, sp ? " single-pass" : "", sp ? (long long)sp->ctas : 0LL,
      sp ? (long long)sp->held : 0LL);
  Rng r(seed);
  const int64_t xs = cols + xpad, os = cols + opad;
  const Layout l = layout_of(g, rows, cols, col_major);
  Buf xb(((rows - 1) * xs + cols) * sizeof(T), off * sizeof(T), r);
  fill<T>(xb, rows, cols, xs, r);
  Buf qb((rows - 1) * os + cols, off, r);
  Buf sb(scale_count(l) * 4, 0, r);
  wc_quantize_fp8_params p{xb.p(), qb.p(), sb.as<float>(), rows, cols, xs, os, l.ss_row, l.ss_col, g, tag<T>()};
  uint32_t arrivals = 0;
  if (sp) {
    p.workspace = sp->ws ? sp->ws->p() : nullptr;
    p.single_pass_ctas = sp->ctas;
    p.single_pass_held = sp->held;
    if (sp->ws) {  // a slot read before this launch wrote it is a NaN amax: the floor scale
      memset(sp->ws->as<uint32_t>() + 32, 0xFF, (WC_QUANT_WORKSPACE_WORDS - 32) * 4);
      arrivals = sp->ws->as<uint32_t>()[0];
    }
  }
  const wc_status st = wc_quantize_fp8(&p, nullptr);
  ++g_checks;
  if (st != want_st) return fail("status %d, want %d", st, want_st);
  if (sp && sp->ws) {
    const uint32_t now = sp->ws->as<uint32_t>()[0];
    ++g_checks;
    if ((now & 0x7FFFFFFFu) != 0 || now != (st == WC_OK ? arrivals ^ 0x80000000u : arrivals))
      return fail("arrival word %08x after the launch, %08x before", now, arrivals);
  }
  if (st != WC_OK) {
    ++g_checks;
    if (memcmp(qb.base, qb.init.data(), qb.init.size()) != 0 || memcmp(sb.base, sb.init.data(), sb.init.size()) != 0)
      fail("a refused launch wrote out or scale");
    return;
  }
  // Reference: f32 amax per block, scale = max(amax, floor) / 448, code = e4m3(x · (1 / scale)).
  std::vector<float> amax(l.sr * l.sc, 0.0f);
  const T* x = xb.as<T>();
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      float& a = amax[(i / l.br) * l.sc + c / l.bc];
      a = std::max(a, std::fabs(tof(x[i * xs + c])));
    }
  std::vector<float> scale(amax.size());
  for (size_t k = 0; k < amax.size(); ++k) scale[k] = std::max(amax[k], WC_FP8_AMAX_FLOOR) / WC_FP8_MAX;
  std::vector<bool> used(scale_count(l), false);
  for (int64_t i = 0; i < l.sr; ++i)
    for (int64_t j = 0; j < l.sc; ++j) {
      const size_t at = i * l.ss_row + j * l.ss_col;
      used[at] = true;
      ++g_checks;
      if (memcmp(&sb.as<float>()[at], &scale[i * l.sc + j], 4) != 0)
        return fail("scale (%lld, %lld): got %.9g want %.9g", (long long)i, (long long)j, sb.as<float>()[at],
                    scale[i * l.sc + j]);
    }
  for (size_t k = 0; k < used.size(); ++k)
    if (!used[k] && memcmp(sb.as<uint8_t>() + 4 * k, sb.init.data() + 4 * k, 4) != 0)
      return fail("scale gap %zu written", k);
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      const float s = scale[(i / l.br) * l.sc + c / l.bc];
      const uint8_t want = e4m3_ref(tof(x[i * xs + c]) * (1.0f / s));
      const uint8_t got = qb.as<uint8_t>()[i * os + c];
      ++g_checks;
      if (got != want) return fail("code (%d, %d): x=%.9g scale=%.9g got %02x want %02x", i, c, tof(x[i * xs + c]), s, got, want);
    }
  if (!gaps_untouched(qb, rows, cols, os, 1)) fail("out gap or guard written");
  if (memcmp(xb.base, xb.init.data(), xb.init.size()) != 0) fail("x written");
  if (rows <= 3) {
    dequant_check<__nv_bfloat16>(qb, sb, l, g, rows, cols, os, off, r);
    dequant_check<__half>(qb, sb, l, g, rows, cols, os, off, r);
  }
  dequant_check<float>(qb, sb, l, g, rows, cols, os, off, r);
}

// ------------------------------------------------------------------ (fused_add_)rms_norm_quant_fp8
template <typename T>
static void norm_case(wc_scale_granularity g, bool add, int rows, int hidden, int pad, int off, bool gemma,
                      uint64_t seed, wc_status want_st = WC_OK) {
  ctx("%s %s %s rows=%d hidden=%d pad=%d off=%d gemma=%d", add ? "fused_add_rms_norm_quant_fp8" : "rms_norm_quant_fp8",
      tname<T>(), gname(g), rows, hidden, pad, off, gemma);
  Rng r(seed);
  const size_t E = sizeof(T);
  const int64_t xs = hidden + pad, rs = hidden + 2 * pad, os = hidden + (pad ? 16 : 0);
  const float eps = 1e-6f, w_off = gemma ? 1.0f : 0.0f;
  const Layout l = layout_of(g, rows, hidden, false);
  Buf xb(((rows - 1) * xs + hidden) * E, off * E, r);
  fill<T>(xb, rows, hidden, xs, r);
  Buf rb(add ? ((rows - 1) * rs + hidden) * E : 0, off * E, r);
  if (add) fill<T>(rb, rows, hidden, rs, r);
  Buf wb(hidden * E, off * E, r);
  for (int c = 0; c < hidden; ++c) {
    T v = fromf<T>(static_cast<float>(r.uni(-2, 2) * (gemma ? 0.1 : 1.0)));
    wb.set(&v, E, c * E);
  }
  Buf qb((rows - 1) * os + hidden, off, r);
  Buf sb(scale_count(l) * 4, 0, r);
  wc_rms_norm_quant_fp8_params p{xb.p(), add ? rb.p() : nullptr, wb.p(), qb.p(), sb.as<float>(), rows, hidden, xs, rs,
                                 os, l.ss_row, l.ss_col, eps, w_off, g, tag<T>()};
  const wc_status st = wc_rms_norm_quant_fp8(&p, nullptr);
  ++g_checks;
  if (st != want_st) return fail("status %d, want %d", st, want_st);
  if (st != WC_OK) return;
  const T* x = xb.as<T>();
  const T* rin = reinterpret_cast<const T*>(rb.init.data() + rb.off);
  const T* w = wb.as<T>();
  for (int i = 0; i < rows; ++i) {
    std::vector<double> v(hidden), y(hidden);
    double ss = 0.0;
    for (int c = 0; c < hidden; ++c) {
      if (add) {
        const T sum = fromf<T>(tof(x[i * xs + c]) + tof(rin[i * rs + c]));  // f32 add, one rounding
        ++g_checks;
        if (memcmp(&sum, &rb.as<T>()[i * rs + c], E) != 0)
          return fail("residual (%d, %d): got %.9g want %.9g", i, c, tof(rb.as<T>()[i * rs + c]), tof(sum));
        v[c] = tof(sum);
      } else {
        v[c] = tof(x[i * xs + c]);
      }
      ss += v[c] * v[c];
    }
    const double rstd = 1.0 / std::sqrt(ss / hidden + eps);
    for (int c = 0; c < hidden; ++c) y[c] = v[c] * rstd * (w_off + tof(w[c]));
    for (int64_t j = 0; j < l.sc; ++j) {
      double amax = 0.0;
      for (int64_t c = j * l.bc; c < std::min<int64_t>(hidden, (j + 1) * l.bc); ++c) amax = std::max(amax, std::fabs(y[c]));
      const double want_s = std::max(amax, 1e-12) / 448.0;
      const double s = sb.as<float>()[i * l.ss_row + j * l.ss_col];
      ++g_checks;
      if (!(std::fabs(s - want_s) <= 2e-6 * want_s)) return fail("scale (%d, %lld): got %.9g want %.9g", i, (long long)j, s, want_s);
      for (int64_t c = j * l.bc; c < std::min<int64_t>(hidden, (j + 1) * l.bc); ++c) {
        const double got = e4m3_value(qb.as<uint8_t>()[i * os + c]) * s;
        // Half an e4m3 step (2^-4 |y| among normals, 2^-10 scale among subnormals) + f32 slack.
        const double bound = std::ldexp(std::fabs(y[c]), -4) + std::ldexp(s, -10) + 4e-6 * std::fabs(y[c]);
        ++g_checks;
        g_max_norm_err = std::max(g_max_norm_err, std::fabs(got - y[c]) / bound);
        if (!(std::fabs(got - y[c]) <= bound)) return fail("value (%d, %lld): got %.9g want %.9g", i, (long long)c, got, y[c]);
      }
    }
  }
  if (!gaps_untouched(qb, rows, hidden, os, 1)) fail("out gap or guard written");
  if (add && !gaps_untouched(rb, rows, hidden, rs, E)) fail("residual gap or guard written");
  if (memcmp(xb.base, xb.init.data(), xb.init.size()) != 0) fail("x written");
}

// ------------------------------------------------------------------ glu_quant_fp8

// y = act(gate) · up quantized per row or per 1x128 group. The kernel computes y in f32 (a few
// ulp of |x| + x² + 1 times |up|: glu's bound), so each scale is held to the f64 block amax within
// that slack and each value to half an e4m3 step of the f64 y plus it. layout 0: separate gate
// and up with padded strides, 1: one fused [gate | up] buffer. col_major: group scales stored
// column-major with a gap. Row 1 of every case is all zero (the floor scale); gate has special
// values (±30, -100, 88, -90) that saturate the activations.
template <typename T>
static void glu_quant_case(int act, wc_scale_granularity g, int rows, int cols, int layout, int pad, int off,
                           bool col_major, uint64_t seed, wc_status want_st = WC_OK) {
  ctx("glu_quant_fp8 %s %s %s rows=%d cols=%d layout=%s pad=%d off=%d scale_col_major=%d", tname<T>(), glu_act_name(act),
      gname(g), rows, cols, layout ? "fused" : "split", pad, off, col_major);
  Rng r(seed);
  const size_t E = sizeof(T);
  const int64_t gs = layout ? 2 * cols + pad : cols + pad, us = layout ? gs : cols + 2 * pad,
                os = cols + (pad ? 16 : 0);
  const Layout l = layout_of(g, rows, cols, col_major);
  Buf gb(((rows - 1) * gs + (layout ? 2 * cols : cols)) * E, off * E, r);
  Buf ub(layout ? 0 : ((rows - 1) * us + cols) * E, off * E, r);
  T* gp = gb.as<T>();
  T* up = layout ? gp + cols : ub.as<T>();
  Buf& uown = layout ? gb : ub;
  const int64_t ubase = layout ? cols : 0;
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      static const float sp[] = {30.0f, -30.0f, -100.0f, 88.0f, -90.0f, 5.5f, -5.5f, 0.0f};
      float gv = static_cast<float>(r.uni(-8, 8)), uv = static_cast<float>(r.uni(-4, 4));
      if (r.below(8) == 0) gv = sp[r.below(8)];
      if (i == 1) gv = uv = 0.0f;
      const T a = fromf<T>(gv), b = fromf<T>(uv);
      gb.set(&a, E, (i * gs + c) * E);
      uown.set(&b, E, (ubase + i * us + c) * E);
    }
  Buf qb((rows - 1) * os + cols, off, r);
  Buf sb(scale_count(l) * 4, 0, r);
  wc_glu_quant_fp8_params p{gp, up, qb.p(), sb.as<float>(), rows, cols, gs, us, os, l.ss_row, l.ss_col,
                            static_cast<wc_glu_activation>(act), g, tag<T>()};
  const wc_status st = wc_glu_quant_fp8(&p, nullptr);
  ++g_checks;
  if (st != want_st) return fail("status %d, want %d", st, want_st);
  if (st != WC_OK) {
    ++g_checks;
    if (memcmp(qb.base, qb.init.data(), qb.init.size()) != 0 || memcmp(sb.base, sb.init.data(), sb.init.size()) != 0)
      fail("a refused launch wrote out or scale");
    return;
  }
  std::vector<bool> used(scale_count(l), false);
  for (int i = 0; i < rows; ++i) {
    std::vector<double> y(cols), slack(cols);
    for (int c = 0; c < cols; ++c) {
      const double x = tof(gp[i * gs + c]), u = tof(up[i * us + c]);
      y[c] = glu_act_ref(act, x) * u;
      slack[c] = 8.0 * std::ldexp(1.0, -24) * (std::fabs(x) + x * x + 1.0) * std::fabs(u);
    }
    for (int64_t j = 0; j < l.sc; ++j) {
      const int64_t c0 = j * l.bc, c1 = std::min<int64_t>(cols, c0 + l.bc);
      double amax = 0.0, amax_slack = 0.0;
      for (int64_t c = c0; c < c1; ++c) {
        amax = std::max(amax, std::fabs(y[c]));
        amax_slack = std::max(amax_slack, slack[c]);
      }
      const double want_s = std::max(amax, 1e-12) / 448.0;
      const size_t at = i * l.ss_row + j * l.ss_col;
      used[at] = true;
      const double s = sb.as<float>()[at];
      ++g_checks;
      if (!(std::fabs(s - want_s) <= amax_slack / 448.0 + 2e-7 * want_s))
        return fail("scale (%d, %lld): got %.9g want %.9g", i, (long long)j, s, want_s);
      for (int64_t c = c0; c < c1; ++c) {
        const double got = e4m3_value(qb.as<uint8_t>()[i * os + c]) * s;
        // Half an e4m3 step (2^-4 |y| among normals, 2^-10 s among subnormals), y's f32 slack,
        // f32 slack of the multiply by 1 / s.
        const double bound = std::ldexp(std::fabs(y[c]), -4) + std::ldexp(s, -10) + slack[c] + 4e-6 * std::fabs(y[c]);
        ++g_checks;
        g_max_glu_err = std::max(g_max_glu_err, std::fabs(got - y[c]) / bound);
        if (!(std::fabs(got - y[c]) <= bound))
          return fail("value (%d, %lld): x=%g up=%g got %.9g want %.9g", i, (long long)c, tof(gp[i * gs + c]),
                      tof(up[i * us + c]), got, y[c]);
      }
    }
  }
  for (size_t k = 0; k < used.size(); ++k)
    if (!used[k] && memcmp(sb.as<uint8_t>() + 4 * k, sb.init.data() + 4 * k, 4) != 0)
      return fail("scale gap %zu written", k);
  if (!gaps_untouched(qb, rows, cols, os, 1)) fail("out gap or guard written");
  if (memcmp(gb.base, gb.init.data(), gb.init.size()) != 0) fail("gate buffer written");
  if (!layout && memcmp(ub.base, ub.init.data(), ub.init.size()) != 0) fail("up buffer written");
}

template <typename T>
static void glu_quant_cases(uint64_t& seed) {
  // cols 16 (one chunk), 144 (9 chunks), 4096, 14336 (Llama-3-8B's intermediate), 16512 (1032
  // chunks: a second round of 1024 threads with 8 active, the group shuffles across idle lanes).
  for (int act = 0; act < 3; ++act)
    for (int cols : {16, 144, 4096, 14336, 16512})
      for (int layout = 0; layout < 2; ++layout) {
        const int rows = cols > 4096 ? 2 : 3, pad = layout ? 16 : 8 * (cols % 3 == 0);
        glu_quant_case<T>(act, WC_SCALE_ROW, rows, cols, layout, pad, 0, false, seed++);
        if (cols % 128 == 0) glu_quant_case<T>(act, WC_SCALE_GROUP128, rows, cols, layout, pad, 0, layout == 1, seed++);
        else glu_quant_case<T>(act, WC_SCALE_GROUP128, rows, cols, layout, pad, 0, false, seed++, WC_ERR_UNSUPPORTED);
      }
  // Refusals (nothing written): cols % 16, misaligned rows or pointers, per-tensor / block
  // scales, an unknown activation, cols 0; rows 0 is a no-op.
  glu_quant_case<T>(WC_GLU_SILU, WC_SCALE_ROW, 2, 136, 0, 0, 0, false, seed++, WC_ERR_UNSUPPORTED);
  glu_quant_case<T>(WC_GLU_SILU, WC_SCALE_ROW, 2, 128, 0, 0, 1, false, seed++, WC_ERR_UNSUPPORTED);
  glu_quant_case<T>(WC_GLU_SILU, WC_SCALE_ROW, 2, 128, 0, 1, 0, false, seed++, WC_ERR_UNSUPPORTED);
  glu_quant_case<T>(WC_GLU_SILU, WC_SCALE_TENSOR, 2, 128, 0, 0, 0, false, seed++, WC_ERR_UNSUPPORTED);
  glu_quant_case<T>(WC_GLU_SILU, WC_SCALE_BLOCK128, 2, 128, 0, 0, 0, false, seed++, WC_ERR_UNSUPPORTED);
  glu_quant_case<T>(3, WC_SCALE_ROW, 2, 128, 0, 0, 0, false, seed++, WC_ERR_UNSUPPORTED);
  {
    ctx("glu_quant_fp8 %s cols=0 / rows=0", tname<T>());
    wc_glu_quant_fp8_params p{nullptr, nullptr, nullptr, nullptr, 2, 0, 0, 0, 0, 1, 1, WC_GLU_SILU, WC_SCALE_ROW, tag<T>()};
    ++g_checks;
    if (wc_glu_quant_fp8(&p, nullptr) != WC_ERR_INVALID_ARG) fail("cols=0 accepted");
    p.rows = 0;
    p.cols = 256;
    ++g_checks;
    if (wc_glu_quant_fp8(&p, nullptr) != WC_OK) fail("rows=0 not a no-op");
  }
}

// Single pass: CTA counts from one to more than there are chunks, shares that fit in shared
// memory, that do not and nothing held, dense (one collapsed row) and padded (per-chunk division)
// layouts, odd chunk counts per row, both loop bodies run several rounds; refusals.
template <typename T>
static void single_pass_cases(Buf& ws, uint64_t& seed, bool full) {
  struct C {
    int rows, cols, xpad, opad, off;
    int64_t ctas, held;
  };
  const C ok[] = {
      {1, 16, 0, 0, 0, 1, 16},            // one chunk, held
      {1, 32, 0, 0, 0, 5, 16},            // 2 chunks on 5 CTAs: three with empty shares
      {3, 48, 0, 0, 0, 4, 0},             // nothing held: every chunk re-read
      {130, 144, 0, 0, 0, 3, 390 * 16},   // shares of 390 chunks, all held
      {130, 144, 0, 0, 0, 3, 64},         // 4 of 390 held
      {130, 144, 8, 16, 0, 4, 1600},      // padded rows: chunk -> (row, col) by division
      {7, 4112, 0, 0, 0, 6, 592},         // 257 chunks per row, 1799 chunks over 6 CTAs
      {64, 4096, 0, 0, 0, 2, 65536},      // 4096 held chunks per CTA: two rounds of 4 per thread
      {64, 4096, 0, 0, 0, 2, 0},          // 8192 streamed chunks per CTA: four rounds
      {64, 4096, 8, 16, 0, 8, 16384},     // 8 CTAs, padded, half held
  };
  for (const C& c : ok) {
    if (!full && c.rows * c.cols > 130 * 144) continue;
    const SinglePass sp{&ws, c.ctas, c.held};
    quant_case<T>(WC_SCALE_TENSOR, c.rows, c.cols, c.xpad, c.opad, c.off, false, seed++, WC_OK, &sp);
  }
  if (!full) return;
  for (int k = 0; k < 3; ++k) {  // the same launch again and again on the same workspace
    const SinglePass sp{&ws, 3, 64};
    quant_case<T>(WC_SCALE_TENSOR, 130, 144, 0, 0, 0, false, seed++, WC_OK, &sp);
  }
  // Refusals, nothing written, the arrival word untouched.
  wc_quant_tensor_limits lim{};
  if (wc_quantize_fp8_tensor_limits(tag<T>(), &lim) != WC_OK || lim.cooperative != 1 || lim.max_held % 16 != 0 ||
      lim.sm_count < 1 || lim.ctas_per_sm < 1)
    fail("tensor limits: status or values (sms %lld, per SM %lld, held %lld)", (long long)lim.sm_count,
         (long long)lim.ctas_per_sm, (long long)lim.max_held);
  const struct {
    int cols, off;
    int64_t ctas, held;
    bool with_ws;
    wc_status want;
  } bad[] = {
      {129, 0, 2, 16, true, WC_ERR_INVALID_ARG},  // cols % 16: no vector layout
      {256, 1, 2, 16, true, WC_ERR_INVALID_ARG},  // x and out one element in
      {256, 0, 2, 24, true, WC_ERR_INVALID_ARG},  // held not whole chunks
      {256, 0, 2, 16, false, WC_ERR_INVALID_ARG}, // no workspace
      {256, 0, -1, 16, true, WC_ERR_INVALID_ARG},
      {256, 0, WC_QUANT_TENSOR_MAX_CTAS + 1, 16, true, WC_ERR_INVALID_ARG},
      // More CTAs than can be co-resident: the runtime refuses the cooperative launch.
      {256, 0, lim.sm_count * lim.ctas_per_sm + 1, lim.max_held, true, static_cast<wc_status>(cudaErrorCooperativeLaunchTooLarge)},
      // More shared memory than a CTA may have.
      {256, 0, 1, lim.max_held + 64 * 1024, true, static_cast<wc_status>(cudaErrorInvalidValue)},
  };
  for (const auto& b : bad) {
    const SinglePass sp{b.with_ws ? &ws : nullptr, b.ctas, b.held};
    quant_case<T>(WC_SCALE_TENSOR, 4, b.cols, 0, 0, b.off, false, seed++, b.want, &sp);
  }
}

template <typename T>
static void all_cases(uint64_t& seed) {
  // (rows, cols): one row, odd cols, partial 128-blocks in both directions, whole blocks.
  const int shapes[][2] = {{1, 7}, {3, 129}, {130, 140}, {130, 144}, {2, 256}, {2, 4096}};
  for (const auto& shape : shapes)
    for (int lay = 0; lay < 3; ++lay) {  // 0 dense, 1 padded strides (vector path if cols allow), 2 misaligned
      const int rows = shape[0], cols = shape[1];
      const int xpad = lay == 1 ? 8 : 0, opad = lay == 1 ? 16 : 0, off = lay == 2 ? 1 : 0;
      for (auto g : {WC_SCALE_TENSOR, WC_SCALE_ROW, WC_SCALE_BLOCK128}) {
        if (rows > 3 && (g == WC_SCALE_ROW || lay == 1)) continue;  // one block per row: keep the run short
        quant_case<T>(g, rows, cols, xpad, opad, off, false, seed++);
      }
      if (rows > 3) continue;
      const bool group_ok = cols % 128 == 0 && lay != 2;
      quant_case<T>(WC_SCALE_GROUP128, rows, cols, xpad, opad, off, lay == 1, seed++,
                    group_ok ? WC_OK : WC_ERR_UNSUPPORTED);
    }
  quant_case<T>(WC_SCALE_GROUP128, 1, 32768 + 128, 0, 0, 0, true, seed++);  // loop path (1024 threads)
  quant_case<T>(WC_SCALE_ROW, 1, 32768 + 128, 0, 0, 0, false, seed++);
  for (bool add : {false, true})
    for (int hidden : {7, 128, 1000, 4096}) {
      const int rows = 2;
      norm_case<T>(WC_SCALE_ROW, add, rows, hidden, 0, 0, false, seed++);
      norm_case<T>(WC_SCALE_ROW, add, rows, hidden, 8, 1, true, seed++);  // misaligned: scalar path
      norm_case<T>(WC_SCALE_GROUP128, add, rows, hidden, 8, 0, hidden % 2 == 0, seed++,
                   hidden % 128 == 0 ? WC_OK : WC_ERR_UNSUPPORTED);
    }
  norm_case<T>(WC_SCALE_GROUP128, true, 1, 32768 + 128, 0, 0, true, seed++);  // loop path
}

int main(int argc, char** argv) {
  uint64_t seed = 1;
  Rng r(7);
  Buf ws(WC_QUANT_WORKSPACE_WORDS * 4, 0, r);
  const uint32_t zero = 0;
  ws.set(&zero, 4);  // zero-filled once (the arrival word); the slots start as garbage
  // "single": only the single-pass configurations (quick), as the seeds need.
  const bool only_single = argc > 1 && strstr(argv[1], "single") != nullptr;
  if (argc > 1 && strstr(argv[1], "glu") != nullptr) {  // "glu": the fused GLU -> FP8 cases only
    glu_quant_cases<__nv_bfloat16>(seed);
    glu_quant_cases<__half>(seed);
    printf("quant_fp8: glu_quant configurations only, max error / bound = %.3f\n", g_max_glu_err);
    return finish("quant_fp8");
  }
  single_pass_cases<__nv_bfloat16>(ws, seed, true);
  single_pass_cases<__half>(ws, seed, !only_single);
  if (only_single) {
    printf("quant_fp8: single-pass configurations only\n");
    return finish("quant_fp8");
  }
  all_cases<__nv_bfloat16>(seed);
  all_cases<__half>(seed);
  glu_quant_cases<__nv_bfloat16>(seed);
  glu_quant_cases<__half>(seed);
  {
    ctx("e4m3 reference self-check");
    const float v[] = {0.0f, 448.0f, 500.0f, -1e9f, 1.0f, 1.0625f, 1.1875f, std::ldexp(1.0f, -9), std::ldexp(1.0f, -10),
                       std::ldexp(3.0f, -10), 464.0f};
    const uint8_t want[] = {0x00, 0x7E, 0x7E, 0xFE, 0x38, 0x38, 0x3A, 0x01, 0x00, 0x02, 0x7E};
    for (int i = 0; i < 11; ++i)
      if (e4m3_ref(v[i]) != want[i]) fail("e4m3_ref(%g) = %02x, want %02x", v[i], e4m3_ref(v[i]), want[i]);
  }
  printf("quant_fp8: fused norm max error / half-step bound = %.3f, glu_quant %.3f\n", g_max_norm_err, g_max_glu_err);
  return finish("quant_fp8");
}
