// Emulated runs of cuda/rms_norm.cu (rms_norm, fused_add_rms_norm, qk_rms_norm) against an
// independent f64 RMSNorm (src/reference/rms_norm.rs semantics): the residual of the fused add
// is x + residual added in f32 and rounded once to T, bit for bit.
#include "harness.h"

#include <algorithm>

static double g_max_err = 0.0;  // largest |got - want| in units of the tolerance

// One normalised row in f64: x · rsqrt(mean(x²) + eps) · (w_off + w).
template <typename T>
static std::vector<double> norm_ref(const T* x, const T* w, int n, double eps, double w_off) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(tof(x[i])) * tof(x[i]);
  const double rstd = 1.0 / std::sqrt(ss / n + eps);
  std::vector<double> out(n);
  for (int i = 0; i < n; ++i) out[i] = tof(x[i]) * rstd * (w_off + tof(w[i]));
  return out;
}

// One rounding of T at the store plus f32 accumulation over the row.
template <typename T>
static void check_val(double got, double want, const char* what, int row, int col) {
  const double tol = ulp<T>(want) + 4e-6 * std::fabs(want) + 1e-30;
  ++g_checks;
  g_max_err = std::max(g_max_err, std::fabs(got - want) / tol);
  if (!(std::fabs(got - want) <= tol)) fail("%s row %d col %d: got %.9g want %.9g", what, row, col, got, want);
}

template <typename T>
static T rand_val(Rng& r, double scale) {
  return fromf<T>(static_cast<float>(r.uni(-3, 3) * scale));
}

// A [rows, cols] matrix with row stride `stride`, `off` elements past a 256-byte boundary.
template <typename T>
static Buf* matrix(int rows, int cols, int64_t stride, int off, Rng& r, double scale = 1.0) {
  const size_t E = sizeof(T);
  Buf* b = new Buf((rows > 0 ? (rows - 1) * stride + cols : 0) * E, off * E, r);
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) {
      T v = rand_val<T>(r, i == 1 ? 1e-3 : scale);  // row 1: small values (eps matters)
      b->set(&v, E, (i * stride + c) * E);
    }
  return b;
}

// Bytes of b outside the [rows, cols] region (row gaps) and the guard are as before.
static void check_untouched(const Buf& b, int rows, int cols, int64_t stride, size_t E, const char* what) {
  if (!b.guard_intact()) fail("%s guard written", what);
  for (int i = 0; i + 1 < rows; ++i)
    for (int64_t c = cols; c < stride; ++c)
      for (size_t k = 0; k < E; ++k)
        if (b.as<uint8_t>()[(i * stride + c) * E + k] != b.before((i * stride + c) * E + k)) {
          fail("%s row gap written at row %d col %lld", what, i, (long long)c);
          return;
        }
}

// ------------------------------------------------------------------ rms_norm / fused_add_rms_norm
template <typename T>
static void rows_case(bool add, int rows, int hidden, int xpad, int opad, int off, bool gemma, bool in_place,
                      uint64_t seed) {
  ctx("%s %s rows=%d hidden=%d xpad=%d opad=%d off=%d gemma=%d in_place=%d", add ? "fused_add_rms_norm" : "rms_norm",
      tname<T>(), rows, hidden, xpad, opad, off, gemma, in_place);
  Rng r(seed);
  const size_t E = sizeof(T);
  const float eps = 1e-6f, w_off = gemma ? 1.0f : 0.0f;
  const int64_t xs = hidden + xpad, os = in_place || add ? xs : hidden + opad, rs = hidden + opad;
  Buf* xb = matrix<T>(rows, hidden, xs, off, r);
  Buf* wb = matrix<T>(1, hidden, hidden, off, r, gemma ? 0.1 : 1.0);
  Buf* ob = (in_place || add) ? nullptr : matrix<T>(rows, hidden, os, off, r);
  Buf* rb = add ? matrix<T>(rows, hidden, rs, off, r) : nullptr;
  const T* x0 = xb->as<T>();
  const std::vector<uint8_t> x_before(xb->base, xb->base + xb->init.size());
  const std::vector<uint8_t> r_before = rb ? rb->init : std::vector<uint8_t>();
  const T* xi = reinterpret_cast<const T*>(x_before.data() + xb->off);
  const T* ri = rb ? reinterpret_cast<const T*>(r_before.data() + rb->off) : nullptr;
  const T* w = wb->as<T>();

  wc_status st;
  if (add) {
    wc_fused_add_rms_norm_params p{xb->p(), rb->p(), wb->p(), rows, hidden, xs, rs, eps, w_off, tag<T>()};
    st = wc_fused_add_rms_norm(&p, nullptr);
  } else {
    wc_rms_norm_params p{xb->p(), wb->p(), in_place ? xb->p() : ob->p(), rows, hidden, xs, os, eps, w_off, tag<T>()};
    st = wc_rms_norm(&p, nullptr);
  }
  if (st != WC_OK) fail("status %d", st);
  const T* o = ob ? ob->as<T>() : x0;
  for (int i = 0; i < rows && st == WC_OK; ++i) {
    std::vector<T> src(xi + i * xs, xi + i * xs + hidden);
    if (add)
      for (int c = 0; c < hidden; ++c) {
        src[c] = fromf<T>(tof(xi[i * xs + c]) + tof(ri[i * rs + c]));  // f32 add, one rounding
        const T got = rb->as<T>()[i * rs + c];
        ++g_checks;
        if (memcmp(&got, &src[c], E) != 0) {
          fail("residual row %d col %d: got %.9g want %.9g", i, c, tof(got), tof(src[c]));
          break;
        }
      }
    const std::vector<double> want = norm_ref(src.data(), w, hidden, eps, w_off);
    for (int c = 0; c < hidden; ++c) check_val<T>(tof(o[i * os + c]), want[c], "out", i, c);
  }
  if (ob) check_untouched(*ob, rows, hidden, os, E, "out");
  check_untouched(*xb, rows, hidden, xs, E, "x");
  if (rb) check_untouched(*rb, rows, hidden, rs, E, "residual");
  if (!in_place && !add && memcmp(xb->base, x_before.data(), x_before.size()) != 0) fail("x written");
  if (memcmp(wb->base, wb->init.data(), wb->init.size()) != 0) fail("weight written");
  delete xb;
  delete wb;
  delete ob;
  delete rb;
}

// ------------------------------------------------------------------ qk_rms_norm
// qk is the first nq + nk heads of a fused [tokens, nq + nk + nv, head_stride] buffer.
template <typename T>
static void qk_case(int tokens, int nq, int nk, int nv, int head_dim, int head_pad, int off, bool gemma,
                    uint64_t seed) {
  ctx("qk_rms_norm %s tokens=%d nq=%d nk=%d nv=%d head_dim=%d head_pad=%d off=%d gemma=%d", tname<T>(), tokens, nq,
      nk, nv, head_dim, head_pad, off, gemma);
  Rng r(seed);
  const size_t E = sizeof(T);
  const float eps = 1e-6f, w_off = gemma ? 1.0f : 0.0f;
  const int64_t hs = head_dim + head_pad, ts = (nq + nk + nv) * hs;
  Buf* b = matrix<T>(tokens, static_cast<int>(ts), ts, off, r);
  Buf* qw = matrix<T>(1, head_dim, head_dim, off, r, gemma ? 0.1 : 1.0);
  Buf* kw = matrix<T>(1, head_dim, head_dim, off, r, gemma ? 0.1 : 1.0);
  const std::vector<uint8_t> before(b->base, b->base + b->init.size());
  const T* in = reinterpret_cast<const T*>(before.data() + b->off);
  wc_qk_rms_norm_params p{b->p(), qw->p(), kw->p(), tokens, nq, nk, head_dim, ts, hs, eps, w_off, tag<T>()};
  const wc_status st = wc_qk_rms_norm(&p, nullptr);
  if (st != WC_OK) fail("status %d", st);
  const T* o = b->as<T>();
  for (int t = 0; t < tokens && st == WC_OK; ++t)
    for (int h = 0; h < nq + nk + nv; ++h) {
      const int64_t base = t * ts + h * hs;
      if (h < nq + nk) {
        const std::vector<double> want =
            norm_ref(in + base, (h < nq ? qw : kw)->template as<T>(), head_dim, eps, w_off);
        for (int c = 0; c < head_dim; ++c) check_val<T>(tof(o[base + c]), want[c], "head", t * 1000 + h, c);
      }
      const int64_t from = h < nq + nk ? head_dim : 0;  // the head's padding, or a whole v head
      for (int64_t c = from; c < hs; ++c)
        if (memcmp(o + base + c, in + base + c, E) != 0) {
          fail("token %d head %d col %lld written (outside q/k)", t, h, (long long)c);
          break;
        }
    }
  if (!b->guard_intact()) fail("qk guard written");
  delete b;
  delete qw;
  delete kw;
}

template <typename T>
static void all_cases(uint64_t& seed) {
  for (int hidden : {1, 7, 64, 111, 989, 4096, 8192 + 8})
    for (int layout = 0; layout < 4; ++layout) {
      // 0 dense, 1 padded strides (vector-compatible), 2 odd padding (scalar), 3 misaligned pointer.
      const int v = 16 / sizeof(T);
      const int xpad = layout == 1 ? v : layout == 2 ? 1 : 0, opad = layout == 1 ? 2 * v : layout == 2 ? 3 : 0;
      const int off = layout == 3 ? 1 : 0;
      const int rows = hidden >= 4096 ? 2 : 3;
      const bool gemma = (layout & 1) != 0;
      rows_case<T>(false, rows, hidden, xpad, opad, off, gemma, false, seed++);
      rows_case<T>(true, rows, hidden, xpad, opad, off, !gemma, false, seed++);
      if (layout == 0) rows_case<T>(false, rows, hidden, 0, 0, 0, false, true, seed++);
    }
  for (int head_dim : {17, 64, 128, 256, 512})
    for (int layout = 0; layout < 3; ++layout)
      qk_case<T>(3, layout == 2 ? 1 : 4, layout == 1 ? 0 : 2, layout == 0 ? 2 : 1, head_dim, layout == 1 ? 8 : 0,
                 layout == 2 ? 1 : 0, layout == 1, seed++);
}

int main() {
  uint64_t seed = 1;
  all_cases<__nv_bfloat16>(seed);
  all_cases<__half>(seed);
  all_cases<float>(seed);
  {
    ctx("rms_norm guards");
    wc_rms_norm_params p{nullptr, nullptr, nullptr, 0, 8, 8, 8, 1e-6f, 0.0f, WC_BF16};
    if (wc_rms_norm(&p, nullptr) != WC_OK) fail("zero tokens not OK");
    p.num_tokens = 1;
    p.hidden = 0;
    if (wc_rms_norm(&p, nullptr) != WC_ERR_INVALID_ARG) fail("hidden = 0 accepted");
    wc_qk_rms_norm_params q{nullptr, nullptr, nullptr, 1, 1, 1, WC_QK_NORM_MAX_HEAD_DIM + 1, 1024, 513, 1e-6f, 0.0f, WC_BF16};
    if (wc_qk_rms_norm(&q, nullptr) != WC_ERR_INVALID_ARG) fail("head_dim > max accepted");
  }
  fprintf(stderr, "max error / tolerance: %.3f\n", g_max_err);
  printf("rms_norm: max |got - want| / tolerance = %.3f\n", g_max_err);
  return finish("rms_norm");
}
