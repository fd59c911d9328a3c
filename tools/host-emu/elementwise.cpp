// Emulated runs of cuda/elementwise.cu (glu, select_rows, argmax_rows, sample_rows) against independent
// f64 / byte / index references. Usage: elementwise [filter]: a section (glu, select_rows, argmax_rows,
// sample_rows) runs when its name contains the filter; a sample_rows case also when its own name does
// (e.g. "vocab=8193 ", "kind=special", "refuse").
#include "harness.h"

#include <algorithm>
#include <numeric>

// ------------------------------------------------------------------ glu

// layout: 0 dense (strides = cols + pad), 1 fused gate_up (one buffer, stride 2 cols + pad).
template <typename T>
static void glu_case(int act, int rows, int cols, int layout, int pad, int ptr_off, uint64_t seed) {
  ctx("glu %s %s rows=%d cols=%d layout=%s pad=%d ptr_off=%d", tname<T>(), glu_act_name(act), rows, cols,
      layout ? "fused" : "split", pad, ptr_off);
  Rng r(seed);
  const size_t E = sizeof(T);
  int64_t gs, us, os = cols + pad;
  std::vector<T> hg, hu;
  auto val = [&](bool gate) {
    static const float sp[] = {0.0f, -0.0f, 30.0f, -30.0f, 1e-3f, -100.0f, 88.0f, -90.0f, 5.5f, -5.5f};
    if (gate && r.below(8) == 0) return fromf<T>(sp[r.below(10)]);
    return fromf<T>(static_cast<float>(gate ? r.uni(-8, 8) : r.uni(-4, 4)));
  };
  Buf* gb;
  Buf* ub;
  T *g, *u;
  if (layout == 0) {
    gs = cols + pad;
    us = cols + (pad ? pad + 3 : 0);
    gb = new Buf(((rows - 1) * gs + cols) * E, ptr_off * E, r);
    ub = new Buf(((rows - 1) * us + cols) * E, ptr_off * E, r);
    g = gb->as<T>();
    u = ub->as<T>();
  } else {
    gs = us = 2 * cols + pad;
    gb = new Buf(((rows - 1) * gs + 2 * cols) * E, ptr_off * E, r);
    ub = nullptr;
    g = gb->as<T>();
    u = g + cols;
  }
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      T a = val(true), b = val(false);
      gb->set(&a, E, (i * gs + c) * E);
      if (layout == 0) ub->set(&b, E, (i * us + c) * E);
      else gb->set(&b, E, (i * gs + cols + c) * E);
    }
  Buf ob(((rows - 1) * os + cols) * E, ptr_off * E, r);
  wc_glu_params p{g, u, ob.p(), rows, cols, gs, us, os, static_cast<wc_glu_activation>(act), tag<T>()};
  const wc_status st = wc_glu(&p, nullptr);
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  const T* o = ob.as<T>();
  for (int i = 0; i < rows; ++i) {
    for (int c = 0; c < cols; ++c) {
      const double x = tof(g[i * gs + c]), y = tof(u[i * us + c]);
      const double ref = glu_act_ref(act, x) * y;
      const double got = tof(o[i * os + c]);
      const double tol = ulp<T>(ref) + 8.0 * std::ldexp(1.0, -24) * (std::fabs(x) + x * x + 1.0) * std::fabs(y);
      ++g_checks;
      if (!(std::fabs(got - ref) <= tol)) fail("row %d col %d: x=%g up=%g got %.9g want %.9g", i, c, x, y, got, ref);
    }
    for (int c = cols; c < os && i + 1 < rows; ++c)
      for (size_t b = 0; b < E; ++b)
        if (reinterpret_cast<const uint8_t*>(o + i * os + c)[b] != ob.before((i * os + c) * E + b))
          fail("row gap written at row %d col %d", i, c);
  }
  if (!ob.guard_intact()) fail("out guard written");
  if (memcmp(gb->base, gb->init.data(), gb->init.size()) != 0) fail("gate/up buffer written");
  if (ub && memcmp(ub->base, ub->init.data(), ub->init.size()) != 0) fail("up buffer written");
  delete gb;
  delete ub;
}

// ------------------------------------------------------------------ select_rows
static void select_case(int esize, int cols, int src_rows, int num_rows, int src_pad, int out_pad, int off_bytes,
                        bool idx64, uint64_t seed, wc_status want = WC_OK) {
  ctx("select_rows esize=%d cols=%d src_rows=%d num_rows=%d src_pad=%d out_pad=%d off=%dB idx%s", esize, cols, src_rows,
      num_rows, src_pad, out_pad, off_bytes, idx64 ? "64" : "32");
  Rng r(seed);
  const int64_t ss = cols + src_pad, os = cols + out_pad;
  Buf sb(((src_rows - 1) * ss + cols) * esize, off_bytes, r);
  Buf ob(num_rows > 0 ? ((num_rows - 1) * os + cols) * esize : 0, off_bytes, r);
  std::vector<int64_t> idx(std::max(num_rows, 1));
  for (auto& v : idx) {
    switch (r.below(7)) {
      case 0: v = -1; break;
      case 1: v = src_rows; break;
      case 2: v = idx64 ? (int64_t{1} << 32) + 1 : INT32_MIN; break;  // 2^32+1: low word is a valid row
      case 3: v = idx64 ? INT64_MIN : INT32_MAX; break;
      default: v = r.below(src_rows);
    }
  }
  Buf ib(idx.size() * (idx64 ? 8 : 4), 0, r);
  for (size_t i = 0; i < idx.size(); ++i) {
    if (idx64) ib.set(&idx[i], 8, i * 8);
    else {
      int32_t v = static_cast<int32_t>(idx[i]);
      ib.set(&v, 4, i * 4);
    }
  }
  const wc_dtype dt = esize == 1 ? WC_E4M3 : esize == 2 ? WC_BF16 : WC_F32;
  wc_select_rows_params p{sb.p(), ib.p(), ob.p(), src_rows, num_rows, cols, ss, os, idx64, dt};
  const wc_status st = wc_select_rows(&p, nullptr);
  ++g_checks;
  if (st != want) fail("status %d, want %d", st, want);
  const uint8_t* o = static_cast<const uint8_t*>(ob.p());
  const uint8_t* s = static_cast<const uint8_t*>(sb.p());
  for (int i = 0; i < num_rows; ++i) {
    const int64_t k = idx[i];
    const bool valid = want == WC_OK && k >= 0 && k < src_rows;
    const int64_t row_end = (i + 1 < num_rows) ? os : cols;  // row plus the gap after it
    for (int64_t c = 0; c < row_end * esize; ++c) {
      const uint8_t want_b = (valid && c < cols * esize) ? s[k * ss * esize + c] : ob.before(i * os * esize + c);
      if (o[i * os * esize + c] != want_b) {
        fail("row %d (index %lld) byte %lld: got %02x want %02x", i, (long long)k, (long long)c, o[i * os * esize + c], want_b);
        break;
      }
    }
  }
  if (!ob.guard_intact()) fail("out guard written");
  if (!sb.init.empty() && memcmp(sb.base, sb.init.data(), sb.init.size()) != 0) fail("src written");
}

// ------------------------------------------------------------------ argmax_rows
// kind: 0 random, 1 ties for the maximum, 2 NaNs around one value, 3 all NaN, 4 all -inf,
// 5 +inf twice, 6 maximum in the last column. The reference scans each row once (first strict
// maximum, NaN skipped, 0 when nothing is above -inf).
static void argmax_case(int rows, int cols, int pad, int kind, uint64_t seed) {
  ctx("argmax_rows rows=%d cols=%d pad=%d kind=%d", rows, cols, pad, kind);
  Rng r(seed);
  const int64_t xs = cols + pad;
  std::vector<float> x(static_cast<size_t>((rows - 1) * xs + cols));
  for (auto& v : x) v = static_cast<float>(r.uni(-30, 30));
  for (int i = 0; i < rows; ++i) {
    float* row = x.data() + i * xs;
    const int a = static_cast<int>(r.below(cols)), b = static_cast<int>(r.below(cols));
    switch (kind) {
      case 1: row[a] = row[b] = 1e30f; break;
      case 2: for (int c = 0; c < cols; ++c) if (c != a) row[c] = NAN; break;
      case 3: for (int c = 0; c < cols; ++c) row[c] = NAN; break;
      case 4: for (int c = 0; c < cols; ++c) row[c] = -INFINITY; break;
      case 5: row[r.below(cols)] = NAN; row[a] = row[b] = INFINITY; break;
      case 6: row[cols - 1] = 1e30f; break;
      default: break;
    }
  }
  Buf xb(x.size() * 4, 0, r);
  xb.set(x.data(), x.size() * 4);
  Buf ob(static_cast<size_t>(rows) * 4, 4, r);  // a 4-byte guard before out
  wc_argmax_rows_params p{xb.as<float>(), ob.as<int32_t>(), rows, cols, xs};
  ++g_checks;
  if (wc_argmax_rows(&p, nullptr) != WC_OK) fail("status");
  for (int i = 0; i < rows; ++i) {
    const float* row = x.data() + i * xs;
    int want = 0;
    float best = -INFINITY;
    for (int c = 0; c < cols; ++c)
      if (row[c] > best) {
        best = row[c];
        want = c;
      }
    if (ob.as<int32_t>()[i] != want) {
      fail("row %d: got %d want %d", i, ob.as<int32_t>()[i], want);
      break;
    }
  }
  if (!ob.guard_intact()) fail("out guard written");
}

// ------------------------------------------------------------------ sample_rows
// The rule (reference::elementwise::sample_row's doc), restated from scratch with a full sort:
// the finite logits, ranked by descending value (−0 below +0), ties to the lower id; weights
// trunc(e · 2^40) with e = det_exp_ref((v − max) / T) (harness.h); top_k (0 < k < #finite)
// keeps the k best; top_p < 1 keeps the shortest rank prefix whose weight reaches
// max(1, ceil(top_p · total)) (in f64); the token is the first id, in ascending order, whose
// inclusive prefix of kept weight exceeds floor(u · mass) (f64) clamped into [0, mass − 1] (the
// upper clamp in integers: above 2^53, mass − 1 as a double rounds up to mass). No finite logit:
// the first +inf, else 0.
static const char* g_filter = "";

static uint64_t sr_weight(float v, float mx, float t) {
  return static_cast<uint64_t>(std::trunc(static_cast<double>(det_exp_ref((v - mx) / t)) * 1099511627776.0));
}
// a ranks before b: larger value, +0 before −0, then the lower id.
static bool sr_before(const float* row, int a, int b) {
  const float x = row[a], y = row[b];
  if (x != y) return x > y;
  if (std::signbit(x) != std::signbit(y)) return std::signbit(y);
  return a < b;
}
struct SampleRef {
  int32_t token;
  bool f64_clamp_short;  // a clamp to mass − 1 in f64 would have found no token (u >= 1, mass > 2^53)
};
static SampleRef sample_ref(const float* row, int cols, float t, int top_k, float top_p, float u) {
  std::vector<int> ids;
  int first_inf = -1;
  for (int c = 0; c < cols; ++c) {
    if (std::isfinite(row[c])) ids.push_back(c);
    else if (row[c] == INFINITY && first_inf < 0) first_inf = c;
  }
  if (ids.empty()) return {first_inf < 0 ? 0 : first_inf, false};
  float mx = row[ids[0]];
  for (int c : ids) mx = std::max(mx, row[c]);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return sr_before(row, a, b); });
  if (top_k > 0 && static_cast<size_t>(top_k) < ids.size()) ids.resize(top_k);
  if (top_p < 1.0f) {
    uint64_t total = 0;
    for (int c : ids) total += sr_weight(row[c], mx, t);
    const double need_f = std::ceil(static_cast<double>(top_p) * static_cast<double>(total));  // < 1 for top_p <= 0
    const uint64_t need = need_f < 1.0 ? 1 : static_cast<uint64_t>(need_f);
    uint64_t acc = 0;
    for (size_t j = 0; j < ids.size(); ++j)
      if ((acc += sr_weight(row[ids[j]], mx, t)) >= need) {
        ids.resize(j + 1);
        break;
      }
  }
  std::sort(ids.begin(), ids.end());
  uint64_t mass = 0;
  for (int c : ids) mass += sr_weight(row[c], mx, t);
  double x = std::floor(static_cast<double>(u) * static_cast<double>(mass));
  if (!(x >= 0.0)) x = 0.0;  // negative or NaN
  const bool f64_clamp_short = static_cast<double>(mass - 1) >= static_cast<double>(mass) && x >= static_cast<double>(mass - 1);
  const uint64_t target = x >= static_cast<double>(mass) ? mass - 1 : std::min(static_cast<uint64_t>(x), mass - 1);
  uint64_t pre = 0;
  for (int c : ids)
    if ((pre += sr_weight(row[c], mx, t)) > target) return {c, f64_clamp_short};
  abort();  // target < mass
}

// Per-row settings (warpcore/elementwise.h): temperature not > 0 (NaN included) is greedy — the
// first index of the largest value (NaN never; nothing above −inf: 0) —, top_k < 0 is 0, top_p
// NaN or above 1 keeps all, top_p <= 0 keeps the best-ranked token (need 1).
static int32_t greedy_ref(const float* row, int cols) {
  int32_t best = 0;
  float v = -INFINITY;
  for (int c = 0; c < cols; ++c)
    if (row[c] > v) v = row[c], best = c;
  return best;
}
static SampleRef sample_ref_row(const float* row, int cols, float t, int top_k, float top_p, float u) {
  if (!(t > 0.0f)) return {greedy_ref(row, cols), false};
  return sample_ref(row, cols, t, top_k < 0 ? 0 : top_k, top_p > 1.0f ? 1.0f : top_p, u);
}

// Logit rows. kind: ties (values on a 1/8 grid: many exact ties), peaked (LM-like: a few large
// logits, one in the last column, the rest continuous around 0), special (a 1/8 grid at or below
// zero with NaN, ±inf, −0.0 and +0.0 sprinkled: the maximum is a ±0 tie), equal (all one value),
// nonfinite (nothing finite: all NaN, NaN and +inf, NaN and −inf, by row), wide (continuous over
// [−60, 4] with ±3e38: weights that truncate to 0 and differences that overflow).
enum SampleKind { SK_TIES, SK_PEAKED, SK_SPECIAL, SK_EQUAL, SK_NONFINITE, SK_WIDE };
static const char* sk_name(int k) {
  static const char* n[] = {"ties", "peaked", "special", "equal", "nonfinite", "wide"};
  return n[k];
}
static void sample_fill(float* row, int cols, int kind, int r_idx, Rng& r) {
  switch (kind) {
    case SK_TIES: {
      const double spread = (r_idx % 2) ? 4.0 : 0.5;
      for (int c = 0; c < cols; ++c) row[c] = static_cast<float>(std::round(r.uni(-spread, spread) * 8.0) / 8.0);
      break;
    }
    case SK_PEAKED: {
      for (int c = 0; c < cols; ++c) row[c] = static_cast<float>(r.uni(-3, 3) + r.uni(-3, 3));
      const int peaks = 1 + r.below(6);
      for (int i = 0; i < peaks; ++i) row[r.below(cols)] = static_cast<float>(r.uni(8, 16));
      row[cols - 1] = static_cast<float>(r.uni(8, 16));
      if (cols > 8192 && r_idx % 2) row[8191] = row[8192] = 15.0f;  // a tie across the scan's chunks
      break;
    }
    case SK_SPECIAL: {
      static const float sp[] = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f};
      for (int c = 0; c < cols; ++c)
        row[c] = r.below(4) == 0 ? sp[r.below(5)] : static_cast<float>(std::round(r.uni(-3, 0) * 8.0) / 8.0);
      if (cols >= 2) {
        row[r.below(cols)] = -0.0f;  // at least one of each zero
        row[r.below(cols)] = 0.0f;
      }
      break;
    }
    case SK_EQUAL:
      for (int c = 0; c < cols; ++c) row[c] = r_idx % 2 ? -0.0f : 1.5f;
      break;
    case SK_NONFINITE:
      for (int c = 0; c < cols; ++c) {
        const int m = r_idx % 3;
        row[c] = m == 0 ? NAN : r.below(3) ? NAN : m == 1 ? INFINITY : -INFINITY;
      }
      if (r_idx % 3 == 1 && cols >= 3) row[cols - 1] = INFINITY;
      break;
    default:
      for (int c = 0; c < cols; ++c) row[c] = static_cast<float>(r.uni(-60, 4));
      if (cols >= 4) {
        row[r.below(cols)] = 3e38f;
        row[r.below(cols)] = -3e38f;
      }
  }
}

// One launch: `rows` rows of `cols` logits (row stride cols + pad: the gaps hold 1e30, which
// would win if read), the given settings and uniforms (per row: us[r % us.size()]).
static void sample_case(int cols, int rows, int pad, int kind, float t, int top_k, float top_p, const std::vector<float>& us,
                        uint64_t seed) {
  char name[256];
  snprintf(name, sizeof name, "sample_rows vocab=%d rows=%d pad=%d kind=%s T=%g k=%d p=%g u0=%.9g ", cols, rows, pad,
           sk_name(kind), t, top_k, top_p, us[0]);
  if (!strstr(name, g_filter) && !strstr("sample_rows", g_filter)) return;
  ctx("%s", name);
  Rng r(seed);
  const int64_t ls = cols + pad;
  std::vector<float> x(static_cast<size_t>((rows - 1) * ls + cols), 1e30f);
  for (int i = 0; i < rows; ++i) sample_fill(x.data() + i * ls, cols, kind, i, r);
  std::vector<float> u(rows);
  for (int i = 0; i < rows; ++i) u[i] = us[i % us.size()];
  Buf xb(x.size() * 4, 0, r), ub(u.size() * 4, 0, r), ob(static_cast<size_t>(rows) * 4, 4, r);  // a 4-byte guard before out
  xb.set(x.data(), x.size() * 4);
  ub.set(u.data(), u.size() * 4);
  wc_sample_rows_params p{xb.as<float>(), ub.as<float>(), ob.as<int32_t>(), rows, cols, ls, t, top_k, top_p};
  const wc_status st = wc_sample_rows(&p, nullptr);
  ++g_checks;
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  for (int i = 0; i < rows; ++i) {
    const SampleRef want = sample_ref(x.data() + i * ls, cols, t, top_k, top_p, u[i]);
    const int32_t got = ob.as<int32_t>()[i];
    ++g_checks;
    if (got != want.token)
      fail("row %d u=%.9g: got %d want %d%s", i, u[i], got, want.token,
           want.f64_clamp_short ? " (u >= 1, mass > 2^53: mass - 1 as a double rounds up to mass; the target must be clamped in integers)" : "");
  }
  if (!ob.guard_intact()) fail("out guard written");
  if (memcmp(xb.base, xb.init.data(), xb.init.size()) != 0) fail("logits written");
}

// One launch with per-row settings (each row's from the lists below, by a seeded pick); the
// scalar settings are invalid (T = 0, top_p = 2, top_k = -1): per-row ones replace them.
static void sample_case_per_row(int cols, int rows, int kind, uint64_t seed) {
  char name[256];
  snprintf(name, sizeof name, "sample_rows per-row vocab=%d rows=%d kind=%s seed=%llu ", cols, rows, sk_name(kind),
           static_cast<unsigned long long>(seed));
  if (!strstr(name, g_filter) && !strstr("sample_rows", g_filter)) return;
  ctx("%s", name);
  static const float ts[] = {0.0f, -0.0f, -1.0f, NAN, 0.01f, 0.7f, 1.0f, 2.0f, INFINITY};
  static const int ks[] = {-5, 0, 1, 2, 50, INT32_MAX};
  static const float ps[] = {NAN, -1.0f, 0.0f, 1e-6f, 0.5f, 0.9f, 1.0f, 1.5f, INFINITY};
  Rng r(seed);
  std::vector<float> x(static_cast<size_t>(rows) * cols), u(rows), t(rows), p(rows);
  std::vector<int32_t> k(rows);
  for (int i = 0; i < rows; ++i) {
    sample_fill(x.data() + static_cast<size_t>(i) * cols, cols, kind, i, r);
    u[i] = static_cast<float>(r.uni(0, 1));
    t[i] = ts[static_cast<size_t>(r.uni(0, 1) * 9) % 9];
    k[i] = ks[static_cast<size_t>(r.uni(0, 1) * 6) % 6];
    p[i] = ps[static_cast<size_t>(r.uni(0, 1) * 9) % 9];
  }
  Buf xb(x.size() * 4, 0, r), ub(u.size() * 4, 0, r), tb(t.size() * 4, 0, r), kb(k.size() * 4, 0, r), pb(p.size() * 4, 0, r),
      ob(static_cast<size_t>(rows) * 4, 4, r);
  xb.set(x.data(), x.size() * 4);
  ub.set(u.data(), u.size() * 4);
  tb.set(t.data(), t.size() * 4);
  kb.set(k.data(), k.size() * 4);
  pb.set(p.data(), p.size() * 4);
  wc_sample_rows_params q{xb.as<float>(), ub.as<float>(), ob.as<int32_t>(), rows, cols, cols, 0.0f, -1, 2.0f,
                          tb.as<float>(), kb.as<int32_t>(), pb.as<float>()};
  const wc_status st = wc_sample_rows(&q, nullptr);
  ++g_checks;
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  for (int i = 0; i < rows; ++i) {
    const SampleRef want = sample_ref_row(x.data() + static_cast<size_t>(i) * cols, cols, t[i], k[i], p[i], u[i]);
    const int32_t got = ob.as<int32_t>()[i];
    ++g_checks;
    if (got != want.token) fail("row %d T=%g k=%d p=%g u=%.9g: got %d want %d", i, t[i], k[i], p[i], u[i], got, want.token);
  }
  if (!ob.guard_intact()) fail("out guard written");
}

// A refused launch: WC_ERR_INVALID_ARG and nothing written (out poisoned).
static void sample_refused(const char* what, wc_sample_rows_params p) {
  char name[256];
  snprintf(name, sizeof name, "sample_rows refuse %s", what);
  if (!strstr(name, g_filter) && !strstr("sample_rows", g_filter)) return;
  ctx("%s", name);
  Rng r(7);
  Buf ob(8, 0, r);  // poison
  p.out = ob.as<int32_t>();
  ++g_checks;
  const wc_status st = wc_sample_rows(&p, nullptr);
  if (st != WC_ERR_INVALID_ARG) fail("status %d, want WC_ERR_INVALID_ARG", st);
  if (memcmp(ob.base, ob.init.data(), ob.init.size()) != 0) fail("out written");
}

static void sample_all(uint64_t& seed) {
  struct S { float t; int k; float p; };
  const float below1 = std::nextafter(1.0f, 0.0f);  // 0.99999994
  int n = 0;
  for (int cols : {1, 2, 7, 1000, 8191, 8192, 8193, 50000, 128256}) {
    const bool big = cols > 8193;
    const S settings[] = {{1, 0, 1}, {0.7f, 0, 0.9f}, {1.3f, 40, 1}, {0.8f, 50, 0.5f}, {1, 1, 1}, {0.5f, 0, 1e-6f},
                          {2, cols, 0.999f}, {1, cols - 1, 1}, {0.01f, 0, 0.9f}};
    for (const S& s : settings)
      for (int kind : {SK_TIES, SK_PEAKED, SK_SPECIAL, SK_EQUAL, SK_WIDE}) {
        if (big && (n + kind) % 3 != 0) continue;  // the large rows: a third of the (setting, kind) pairs
        Rng r(seed * 31 + 5);
        const std::vector<float> us = {0.0f, below1, 0.5f, static_cast<float>(r.uni(0, 1)), static_cast<float>(r.uni(0, 1))};
        std::vector<float> rot(us.size());
        for (size_t i = 0; i < us.size(); ++i) rot[i] = us[(i + n) % us.size()];  // every uniform on every row position
        const int rows = big ? 1 + n % 3 : 1 + n % 5;
        sample_case(cols, rows, n % 2 ? 3 : 0, kind, s.t, s.k, s.p, rot, seed++);
        ++n;
      }
    // Nothing finite: argmax's choice, whatever the settings.
    sample_case(cols, 3, n % 2 ? 5 : 0, SK_NONFINITE, 1.0f, cols > 1 ? 1 : 0, 0.5f, {0.3f, below1, 0.0f}, seed++);
    ++n;
  }
  // Out-of-range uniforms are clamped into [0, 1): u >= 1 takes the last token with weight, u < 0
  // and NaN the first. Small masses and masses above 2^53 (8193+ equal logits: 2^40 each).
  for (int cols : {1, 7, 1000, 8193, 128256})
    for (int kind : {SK_TIES, SK_EQUAL, SK_SPECIAL}) {
      if (cols > 8193 && kind == SK_SPECIAL) continue;
      sample_case(cols, 5, 0, kind, 1.0f, 0, 1.0f, {1.5f, -0.2f, NAN, 1.0f, INFINITY}, seed++);
      if (cols >= 1000) sample_case(cols, 3, 0, kind, 2.0f, 0, 1.0f, {1.5f, -INFINITY, NAN}, seed++);
    }
  // Per-row settings: every kind, small and vocabulary-sized rows.
  for (int cols : {1, 7, 1000, 8193, 32000})
    for (int kind : {SK_TIES, SK_PEAKED, SK_SPECIAL, SK_EQUAL, SK_NONFINITE, SK_WIDE}) {
      if (cols > 8193 && kind != SK_PEAKED && kind != SK_TIES) continue;
      sample_case_per_row(cols, cols > 1000 ? 6 : 12, kind, seed++);
    }
  fprintf(stderr, "sample_rows draws done: %ld configs, %ld failures\n", g_configs, g_fail);

  // Refusals: nothing launched, nothing written.
  static float lg[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  static float uu[2] = {0.5f, 0.25f};
  const wc_sample_rows_params ok{lg, uu, nullptr, 2, 8, 8, 1.0f, 0, 1.0f};
  auto with = [&](auto f) {
    wc_sample_rows_params p = ok;
    f(p);
    return p;
  };
  sample_refused("T=0", with([](auto& p) { p.temperature = 0.0f; }));
  sample_refused("T=-0", with([](auto& p) { p.temperature = -0.0f; }));
  sample_refused("T=-1", with([](auto& p) { p.temperature = -1.0f; }));
  sample_refused("T=NaN", with([](auto& p) { p.temperature = NAN; }));
  sample_refused("p=0", with([](auto& p) { p.top_p = 0.0f; }));
  sample_refused("p=-0.5", with([](auto& p) { p.top_p = -0.5f; }));
  sample_refused("p=1.0000001", with([](auto& p) { p.top_p = std::nextafter(1.0f, 2.0f); }));
  sample_refused("p=2", with([](auto& p) { p.top_p = 2.0f; }));
  sample_refused("p=NaN", with([](auto& p) { p.top_p = NAN; }));
  sample_refused("k=-1", with([](auto& p) { p.top_k = -1; }));
  sample_refused("k=INT32_MIN", with([](auto& p) { p.top_k = INT32_MIN; }));
  sample_refused("cols=2^23+1", with([](auto& p) { p.cols = p.logits_stride = (int64_t{1} << 23) + 1; }));
  sample_refused("cols=0", with([](auto& p) { p.cols = 0; }));
  sample_refused("stride<cols", with([](auto& p) { p.logits_stride = 7; }));
  sample_refused("logits=NULL", with([](auto& p) { p.logits = nullptr; }));
  sample_refused("uniforms=NULL", with([](auto& p) { p.uniforms = nullptr; }));
  if (!*g_filter || strstr("sample_rows refuse", g_filter)) {
    ctx("sample_rows refuse out=NULL, params=NULL; rows=0");
    wc_sample_rows_params p = ok;
    ++g_checks;
    if (wc_sample_rows(&p, nullptr) != WC_ERR_INVALID_ARG) fail("out=NULL accepted");
    if (wc_sample_rows(nullptr, nullptr) != WC_ERR_INVALID_ARG) fail("params=NULL accepted");
    const wc_sample_rows_params zero{nullptr, nullptr, nullptr, 0, 8, 8, 1.0f, 0, 1.0f};
    if (wc_sample_rows(&zero, nullptr) != WC_OK) fail("rows=0 not OK");
    // The settings' edges that are accepted: top_p = 1, top_k = INT32_MAX, a tiny temperature,
    // +inf temperature (every weight 2^40), stride = cols.
    Rng r(9);
    Buf ob(8, 0, r);
    for (const wc_sample_rows_params& q :
         {with([](auto& p) { p.top_k = INT32_MAX; }), with([](auto& p) { p.temperature = 1e-30f; p.top_p = 1e-30f; }),
          with([](auto& p) { p.temperature = INFINITY; })}) {
      wc_sample_rows_params a = q;
      a.out = ob.as<int32_t>();
      ++g_checks;
      if (wc_sample_rows(&a, nullptr) != WC_OK) {
        fail("valid settings T=%g k=%d p=%g refused", a.temperature, a.top_k, a.top_p);
        continue;
      }
      for (int i = 0; i < 2; ++i) {
        const SampleRef want = sample_ref(lg + 8 * i, 8, a.temperature, a.top_k, a.top_p, uu[i]);
        if (a.out[i] != want.token) fail("T=%g k=%d p=%g row %d: got %d want %d", a.temperature, a.top_k, a.top_p, i, a.out[i], want.token);
      }
    }
  }
  fprintf(stderr, "sample_rows done: %ld configs, %ld failures\n", g_configs, g_fail);
}

int main(int argc, char** argv) {
  g_filter = argc > 1 ? argv[1] : "";
  auto section = [](const char* s) { return strstr(s, g_filter) != nullptr; };
  uint64_t seed = 1;
  if (section("glu")) {
    const int cols_list[] = {1, 7, 8, 9, 16, 4095, 4096, 8200};
    for (int act = 0; act < 3; ++act)
      for (int cols : cols_list)
        for (int layout = 0; layout < 2; ++layout)
          for (int pad : {0, 1, 8})
            for (int ptr_off : {0, 1}) {
              const int rows = (cols >= 4095) ? 2 : 3;
              glu_case<__nv_bfloat16>(act, rows, cols, layout, pad, ptr_off, seed++);
              glu_case<__half>(act, rows, cols, layout, pad, ptr_off, seed++);
              glu_case<float>(act, rows, cols, layout, pad, ptr_off, seed++);
            }
    // Zero rows: no-op; zero cols / bad activation: guards.
    {
      wc_glu_params p{nullptr, nullptr, nullptr, 0, 8, 8, 8, 8, WC_GLU_SILU, WC_BF16};
      ctx("glu rows=0");
      if (wc_glu(&p, nullptr) != WC_OK) fail("rows=0 not OK");
      p.rows = 1;
      p.cols = 0;
      ctx("glu cols=0");
      if (wc_glu(&p, nullptr) != WC_ERR_INVALID_ARG) fail("cols=0 accepted");
    }
    fprintf(stderr, "glu done: %ld configs, %ld failures\n", g_configs, g_fail);
  }
  seed = 1000;  // each section's seeds whatever the filter
  if (section("select_rows")) {
    for (int esize : {1, 2, 4})
      for (int cols : {1, 7, 8, 9, 16, 33, 4095, 4096})
        for (int pads : {0, 1, 2})
          for (int off : {0, 1, 16})
            for (bool i64 : {false, true}) {
              const int off_bytes = off == 1 ? esize : off;  // element-aligned offsets
              const int src_pad = pads == 0 ? 0 : pads == 1 ? 1 : 16 / esize;
              const int out_pad = pads == 0 ? 0 : pads == 1 ? 16 / esize + 1 : 0;
              const bool big = cols >= 4095;
              if (big && i64 && off) continue;
              select_case(esize, cols, 5, big ? 2 : 6, src_pad, out_pad, off_bytes, i64, seed++);
              if (!big) select_case(esize, cols, 1, 3, out_pad, src_pad, off_bytes, i64, seed++);
            }
    select_case(2, 8, 4, 0, 0, 0, 0, false, seed++);                            // zero rows: no-op
    select_case(2, 8, 4, 3, 0, 0, 1, false, seed++, WC_ERR_INVALID_ARG);        // misaligned bf16: guard
    select_case(4, 9, 4, 3, 0, 0, 2, true, seed++, WC_ERR_INVALID_ARG);         // misaligned f32: guard
    select_case(1, 5, 4, 3, 1, 2, 3, true, seed++);                             // fp8 any alignment
    select_case(2, 3 * 256 * 8 + 5, 2, 2, 0, 0, 0, false, seed++);              // several row chunks
    {
      ctx("select_rows too wide");
      int32_t i = 0;
      wc_select_rows_params p{nullptr, &i, nullptr, 1, 1, 65535 * 256 + 1, 65535 * 256 + 1, 65535 * 256 + 1, 0, WC_E4M3};
      if (wc_select_rows(&p, nullptr) != WC_ERR_INVALID_ARG) fail("too-wide row accepted");
    }
  }
  seed = 2000;
  if (section("argmax_rows")) {
    for (int cols : {1, 2, 31, 32, 33, 1023, 1024, 1025, 2049, 32000, 128256})
      for (int kind = 0; kind < 7; ++kind)
        for (int pad : {0, 3}) argmax_case(cols >= 32000 ? 2 : 5, cols, pad, kind, seed++);
    {
      ctx("argmax_rows guards");
      wc_argmax_rows_params p{nullptr, nullptr, 0, 8, 8};
      if (wc_argmax_rows(&p, nullptr) != WC_OK) fail("rows=0 not OK");
      float x[4] = {};
      int32_t o[2] = {};
      p = {x, o, 2, 0, 2};
      if (wc_argmax_rows(&p, nullptr) != WC_ERR_INVALID_ARG) fail("cols=0 accepted");
      p = {x, o, 2, 2, 1};
      if (wc_argmax_rows(&p, nullptr) != WC_ERR_INVALID_ARG) fail("stride < cols accepted");
    }
  }
  seed = 3000;
  sample_all(seed);
  return finish("elementwise");
}
