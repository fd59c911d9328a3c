// Emulated runs of cuda/elementwise.cu (glu, select_rows, argmax_rows) against independent f64 / byte
// / index references.
#include "harness.h"

#include <algorithm>

// ------------------------------------------------------------------ glu
static double act_ref(int act, double x) {
  switch (act) {
    case WC_GLU_SILU: return x / (1.0 + std::exp(-x));
    case WC_GLU_GELU_TANH: return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    default: return x > 0 ? x * x : 0.0;
  }
}
static const char* act_name(int a) { return a == 0 ? "silu" : a == 1 ? "gelu_tanh" : "relu2"; }

// layout: 0 dense (strides = cols + pad), 1 fused gate_up (one buffer, stride 2 cols + pad).
template <typename T>
static void glu_case(int act, int rows, int cols, int layout, int pad, int ptr_off, uint64_t seed) {
  ctx("glu %s %s rows=%d cols=%d layout=%s pad=%d ptr_off=%d", tname<T>(), act_name(act), rows, cols,
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
      const double ref = act_ref(act, x) * y;
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

int main() {
  uint64_t seed = 1;
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
  return finish("elementwise");
}
