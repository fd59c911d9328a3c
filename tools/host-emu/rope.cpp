// Emulated runs of cuda/rope.cu — wc_rope, wc_append_kv, wc_rope_append_kv and wc_qk_norm_rope
// (with and without the append) — against an independent reference: the rotation in f64 with
// long double angles (src/reference/rope.rs semantics: pair i of a head at position p turns by
// p · inv_freq[i], cos and sin times the attention factor), the RMSNorm in f64
// (src/reference/rms_norm.rs), and the cache rows of src/reference/kv_cache.rs: the k as stored
// in k and v, bit for bit, or their e4m3 codes from a nearest-code search (saturating, ties to
// even). Every byte the op may not write (head padding, v heads, row gaps, other cache slots and
// padding, read-only inputs, guards) is checked unchanged; the cache and every q/k/v buffer
// start as random bytes. The fused appending ops must equal the unfused sequence bit for bit.
#include "harness.h"

#include <algorithm>
#include <memory>
#include <numeric>

// ------------------------------------------------------------------ the frequency table
enum Scaling { NONE, LINEAR, NTK, LLAMA3, YARN, YARN_DS };
static const char* const kScalingName[] = {"none", "linear", "dynamic-ntk", "llama3", "yarn", "yarn-deepseek"};
static const double kTheta[] = {10000.0, 10000.0, 10000.0, 500000.0, 1e6, 10000.0};  // base per scaling

struct Rope {
  int rotary_dim, rot_off;
  bool neox;
  Scaling scaling;
};

struct Table {
  std::vector<double> inv_freq;  // [rotary_dim / 2]
  double af;                     // attention factor
};

// RopeConfig::inv_freq and RopeConfig::attention_factor (src/ops/rope/config.rs, the HF
// modeling_rope_utils formulas in f64) for fixed parameters per scaling: linear factor 4;
// dynamic NTK factor 2, 2048 original positions, seq_len 5000; Llama 3.1's factor 8, low 1,
// high 4, 8192 original positions; YaRN Yarn::new(4, 32768) (Qwen style: no mscale pair, factor
// 0.1 ln 4 + 1) and Yarn::deepseek_v3() (factor 40, 4096 positions, mscale = mscale_all_dim = 1).
// main() checks the table against values printed by HF's Python (src/reference/rope.rs tests).
static Table table(const Rope& r) {
  const double d = r.rotary_dim, theta = kTheta[r.scaling];
  const int half = r.rotary_dim / 2;
  auto base = [&](double th) {
    std::vector<double> v(half);
    for (int i = 0; i < half; ++i) v[i] = 1.0 / std::pow(th, 2.0 * i / d);
    return v;
  };
  Table t{base(theta), 1.0};
  switch (r.scaling) {
    case NONE: break;
    case LINEAR:
      for (double& f : t.inv_freq) f /= 4.0;
      break;
    case NTK: {
      const double factor = 2.0, max_pos = 2048.0, seq = std::max(5000.0, max_pos);
      t.inv_freq = base(theta * std::pow(factor * seq / max_pos - (factor - 1.0), d / (d - 2.0)));
      break;
    }
    case LLAMA3: {
      const double factor = 8.0, lo = 1.0, hi = 4.0, ctx = 8192.0, low_wl = ctx / lo, high_wl = ctx / hi;
      for (double& f : t.inv_freq) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > low_wl) {
          f = f / factor;
        } else if (wavelen >= high_wl) {
          const double smooth = (ctx / wavelen - lo) / (hi - lo);
          f = (1.0 - smooth) * f / factor + smooth * f;
        }
      }
      break;
    }
    case YARN:
    case YARN_DS: {
      const double factor = r.scaling == YARN ? 4.0 : 40.0, omp = r.scaling == YARN ? 32768.0 : 4096.0;
      auto corr = [&](double rotations) { return d * std::log(omp / (rotations * 2.0 * M_PI)) / (2.0 * std::log(theta)); };
      const double low = std::max(std::floor(corr(32.0)), 0.0);
      double high = std::min(std::ceil(corr(1.0)), d - 1.0);
      if (low == high) high += 0.001;
      for (int i = 0; i < half; ++i) {
        const double pos_freq = std::pow(theta, 2.0 * i / d);
        const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0), extra = 1.0 - ramp;
        t.inv_freq[i] = 1.0 / (factor * pos_freq) * (1.0 - extra) + 1.0 / pos_freq * extra;
      }
      t.af = r.scaling == YARN ? 0.1 * std::log(factor) + 1.0 : 1.0;
      break;
    }
  }
  return t;
}

// ------------------------------------------------------------------ tolerances
// Rotated element of the pair (x1, x2): ulp<T>(want) covers the store's rounding (half an ulp of
// the f32 result, which may sit in the next binade), plus (|x1| + |x2|) · af times
//   kRot = 6e-7: the kernel's f32 cos/sin — the reduced angle rounded to f32 (pi · 2^-25 rad),
//          sincospif (1 ulp, 6e-8), af in f32 and its product (2 · 6e-8) — and the rotation's
//          two f32 roundings (2 · 2^-24); 4.3e-7 in all;
//   |angle| · 2^-51: the f64 product position · inv_freq and its reduction (the reference forms
//          the angle in long double);
//   kNorm (qk_norm_rope): the normalised inputs' f32 error, as in rms_norm.cpp (sum of squares
//          over <= 512 elements in f32, rsqrt, two products).
constexpr double kRot = 6e-7, kNorm = 4e-6;

static double g_max_err[5] = {};  // per op: largest |got - want| / tolerance
// Per output dtype (bf16, f16, f32): largest |got - want| relative to the magnitude it can be
// measured against: (|x1| + |x2|) · af for a rotated element, |want| for one only normalised.
static double g_max_rel[3] = {};
static long g_fp8_codes = 0, g_skipped = 0, g_padding = 0;

enum Op { ROPE, APPEND, ROPE_APPEND, QKN, QKN_APPEND };
static const char* const kOpName[] = {"rope", "append_kv", "rope_append_kv", "qk_norm_rope", "qk_norm_rope_append_kv"};
static bool appends(Op op) { return op == APPEND || op == ROPE_APPEND || op == QKN_APPEND; }
static bool norms(Op op) { return op == QKN || op == QKN_APPEND; }

template <typename T>
static void check_val(Op op, double got, double want, double slack, double mag, const char* what, int t, int h,
                      int e) {
  const double tol = ulp<T>(want) + slack + 1e-30;
  ++g_checks;
  g_max_err[op] = std::max(g_max_err[op], std::fabs(got - want) / tol);
  double& m = g_max_rel[std::is_same_v<T, float> ? 2 : std::is_same_v<T, __half> ? 1 : 0];
  m = std::max(m, std::fabs(got - want) / (mag + 1e-300));
  if (!(std::fabs(got - want) <= tol))
    fail("%s token %d head %d elem %d: got %.9g want %.9g (tol %.3g)", what, t, h, e, got, want, tol);
}

// The reference rotation of one head (f64 values, long double angles), in place; slack[e] gets
// the rotated elements' tolerance beyond the output rounding, mag[e] their pair's magnitude
// (|x1| + |x2|) · af. norm_rel: the relative error the inputs already carry (kNorm after the f32
// RMSNorm, 0 for rope).
static void rotate_ref(std::vector<double>& x, std::vector<double>& slack, std::vector<double>& mag, int64_t pos,
                       const Rope& r, const Table& tb, double norm_rel) {
  const int half = r.rotary_dim / 2;
  for (int i = 0; i < half; ++i) {
    const int a = r.rot_off + (r.neox ? i : 2 * i), b = r.rot_off + (r.neox ? i + half : 2 * i + 1);
    const long double angle = static_cast<long double>(pos) * tb.inv_freq[i];
    const double c = static_cast<double>(cosl(angle)) * tb.af, s = static_cast<double>(sinl(angle)) * tb.af;
    const double x1 = x[a], x2 = x[b];
    x[a] = x1 * c - x2 * s;
    x[b] = x2 * c + x1 * s;
    mag[a] = mag[b] = (std::fabs(x1) + std::fabs(x2)) * tb.af;
    slack[a] = slack[b] = mag[a] * (kRot + norm_rel + static_cast<double>(fabsl(angle)) * 0x1p-51);
  }
}

// ------------------------------------------------------------------ e4m3
// e4m3fn (bias 7, 3 mantissa bits, subnormals, no infinities): the magnitude of code c < 0x7F.
static double e4m3_mag(int c) {
  const int e = c >> 3, m = c & 7;
  return e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
}
// Saturating round to nearest, ties to the even code: the nearest of the 127 finite magnitudes.
static uint8_t e4m3_code(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return sign | 0x7F;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return sign | 0x7E;
  int best = 0;
  double bd = a;
  for (int c = 1; c <= 0x7E; ++c) {
    const double d = std::fabs(e4m3_mag(c) - a);
    if (d < bd || (d == bd && (c & 1) == 0)) {
      best = c;
      bd = d;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

// ------------------------------------------------------------------ a configuration and its buffers
struct Case {
  Op op = ROPE;
  int tokens = 5, nq = 4, nk = 2, hd = 128;
  Rope rope{128, 0, true, NONE};
  bool fused = true;       // q, k (and v) heads of one QKV buffer (Qkv::fused); else three buffers
  bool with_v = true;      // a fused buffer of a non-appending op also holds the v heads
  int hpad = 0, tpad = 0;  // head / token stride padding (elements of T)
  int off = 0;             // elements of T past a 256-byte boundary, every q/k/v buffer
  bool pos64 = false, slots64 = false;
  int64_t max_pos = 8192;  // positions in [0, max_pos), plus 0, max_pos - 1 and negative ones
  bool fp8 = false;        // e4m3 cache (k_scale 0.005: some codes saturate; v_scale 0.02), else T
  int page_size = 16;
  int c_hpad = 0, c_spad = 0, c_ppad = 0, c_off = 0;  // cache head / slot / page padding, offset (elements)
  bool counter = true;     // an error counter attached
  bool gemma = false;      // qk norm weight_offset 1 (else 0)
};

struct Role {  // where q, k or v heads live: element (t, h, e) at first + t * ts + h * hs + e of b
  Buf* b = nullptr;
  int64_t first = 0, ts = 0, hs = 0;
  int heads = 0;
  int64_t at(int t, int h, int e) const { return first + t * ts + h * hs + e; }
};

template <typename T>
struct World {
  std::vector<std::unique_ptr<Buf>> own;
  std::vector<const char*> names;
  Role q, k, v;
  Buf *pos = nullptr, *slots = nullptr, *kc = nullptr, *vc = nullptr, *err = nullptr, *qw = nullptr, *kw = nullptr;
  std::vector<int64_t> positions, slot;
  int64_t num_pages = 0, num_slots = 0, page_stride = 0, slot_stride = 0, head_stride = 0;
  float k_scale = 1.0f, v_scale = 1.0f;
  uint32_t err_init = 7;

  Buf* add(const char* name, size_t bytes, size_t off, Rng& r) {
    own.push_back(std::make_unique<Buf>(bytes, off, r));
    names.push_back(name);
    return own.back().get();
  }
  T* ptr(const Role& r) const { return r.b->template as<T>() + r.first; }
  T out(const Role& r, int t, int h, int e) const { return r.b->template as<T>()[r.at(t, h, e)]; }
  T in(const Role& r, int t, int h, int e) const {
    T x;
    memcpy(&x, r.b->init.data() + r.b->off + r.at(t, h, e) * sizeof(T), sizeof(T));
    return x;
  }
  int64_t cache_at(int64_t s, int h) const {
    return (s / page_size_) * page_stride + (s % page_size_) * slot_stride + h * head_stride;
  }
  int64_t page_size_ = 1;
};

// Builds every buffer of configuration c from seed: the same seed gives the same bytes.
template <typename T>
static void build(World<T>& w, const Case& c, uint64_t seed) {
  Rng r(seed);
  const size_t E = sizeof(T);
  const bool app = appends(c.op);
  auto extent = [&](int64_t ts, int64_t hs, int heads) { return heads == 0 ? 0 : (c.tokens - 1) * ts + (heads - 1) * hs + c.hd; };
  if (c.fused) {
    const int nv = app || c.with_v ? c.nk : 0, heads = c.nq + c.nk + nv;
    const int64_t hs = c.hd + c.hpad, ts = heads * hs + c.tpad;
    Buf* b = w.add("qkv", extent(ts, hs, heads) * E, c.off * E, r);
    w.q = {b, 0, ts, hs, c.nq};
    w.k = {b, c.nq * hs, ts, hs, c.nk};
    w.v = {b, (c.nq + c.nk) * hs, ts, hs, nv};
  } else {  // three buffers, each with its own strides
    const int64_t qhs = c.hd + c.hpad, qts = c.nq * qhs + c.tpad;
    const int64_t khs = c.hd + 2 * c.hpad, kts = c.nk * khs + 3 * c.tpad;
    w.q = {w.add("q", extent(qts, qhs, c.nq) * E, c.off * E, r), 0, qts, qhs, c.nq};
    w.k = {w.add("k", extent(kts, khs, c.nk) * E, c.off * E, r), 0, kts, khs, c.nk};
    w.v = {w.add("v", extent(kts + c.tpad, khs, app ? c.nk : 0) * E, c.off * E, r), 0, kts + c.tpad, khs,
           app ? c.nk : 0};
  }
  for (Role* role : {&w.q, &w.k, &w.v})
    for (int t = 0; t < c.tokens; ++t) {
      const double mag = t % 4 == 2 ? 1e-3 : 1.0;  // small rows: eps matters, FP8 subnormal codes
      for (int h = 0; h < role->heads; ++h)
        for (int e = 0; e < c.hd; ++e) {
          const T x = fromf<T>(static_cast<float>(r.uni(-3, 3) * mag));
          role->b->set(&x, E, role->at(t, h, e) * E);
        }
    }

  // Positions: 0, max_pos - 1, negative ones, and beyond 2^32 when int64.
  w.positions.resize(c.tokens);
  for (int t = 0; t < c.tokens; ++t) {
    int64_t p = r.below(static_cast<int>(std::min<int64_t>(c.max_pos, INT32_MAX)));
    if (t == 0) p = 0;
    else if (t == 1) p = c.max_pos - 1;
    else if (t % 5 == 4) p = -1 - r.below(100000);
    else if (c.pos64 && t % 6 == 5) p = (int64_t{1} << 33) + r.below(1000);
    w.positions[t] = p;
  }
  const size_t pe = c.pos64 ? 8 : 4;
  w.pos = w.add("positions", c.tokens * pe, 16, r);
  for (int t = 0; t < c.tokens; ++t) {
    const int32_t p32 = static_cast<int32_t>(w.positions[t]);
    w.pos->set(c.pos64 ? static_cast<const void*>(&w.positions[t]) : &p32, pe, t * pe);
  }

  if (norms(c.op)) {
    w.qw = w.add("q_weight", c.hd * E, c.off * E, r);
    w.kw = w.add("k_weight", c.hd * E, c.off * E, r);
    for (Buf* b : {w.qw, w.kw})
      for (int e = 0; e < c.hd; ++e) {
        const T x = fromf<T>(static_cast<float>(c.gemma ? r.uni(-0.3, 0.3) : r.uni(-2, 2)));
        b->set(&x, E, e * E);
      }
  }
  if (!app) return;

  // Slots: token t % 7 == 3 is padding (negative), t % 7 == 5 past the cache (num_slots exactly,
  // further, and up to INT32_MAX / INT64_MAX), the rest distinct valid slots, the first of them
  // the cache's last row.
  const int ps = c.page_size;
  int valid = 0;
  for (int t = 0; t < c.tokens; ++t) valid += t % 7 != 3 && t % 7 != 5;
  w.page_size_ = ps;
  w.num_pages = (valid + ps - 1) / ps + 1;
  w.num_slots = w.num_pages * ps;
  w.head_stride = c.hd + c.c_hpad;
  w.slot_stride = c.nk * w.head_stride + c.c_spad;
  w.page_stride = ps * w.slot_stride + c.c_ppad;
  std::vector<int64_t> perm(w.num_slots);
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = w.num_slots - 1; i > 0; --i) std::swap(perm[i], perm[r.next() % (i + 1)]);
  std::swap(*std::find(perm.begin(), perm.end(), w.num_slots - 1), perm[0]);
  w.slot.resize(c.tokens);
  int next = 0, bad = 0, pad = 0;
  for (int t = 0; t < c.tokens; ++t) {
    if (t % 7 == 3) {
      w.slot[t] = pad++ % 2 == 0 ? -1 : (c.slots64 ? INT64_MIN : INT32_MIN);
    } else if (t % 7 == 5) {
      const int64_t far[] = {w.num_slots, w.num_slots + 3 * ps + 1, c.slots64 ? int64_t{1} << 40 : INT32_MAX,
                             c.slots64 ? INT64_MAX : 2 * w.num_slots + 7};
      w.slot[t] = far[bad++ % 4];
    } else {
      w.slot[t] = perm[next++];
    }
  }
  const size_t se = c.slots64 ? 8 : 4;
  w.slots = w.add("slot_mapping", c.tokens * se, 16, r);
  for (int t = 0; t < c.tokens; ++t) {
    const int32_t s32 = static_cast<int32_t>(w.slot[t]);
    w.slots->set(c.slots64 ? static_cast<const void*>(&w.slot[t]) : &s32, se, t * se);
  }
  const size_t CE = c.fp8 ? 1 : E;
  const int64_t cache_elems = w.cache_at(w.num_slots - 1, c.nk - 1) + c.hd;  // KvCacheLayout::extent
  w.kc = w.add("k_pages", cache_elems * CE, c.c_off * CE, r);
  w.vc = w.add("v_pages", cache_elems * CE, c.c_off * CE, r);
  if (c.fp8) {
    w.k_scale = 0.005f;
    w.v_scale = 0.02f;
  }
  if (c.counter) {
    w.err = w.add("error_count", 4, 8, r);
    w.err->set(&w.err_init, 4);
  }
}

// ------------------------------------------------------------------ params, as the Rust wrappers fill them
// HeadsLayout::ffi with Qkv::raw's pointers (src/ops/rope/heads.rs): q, k, the view's (token,
// head) strides; a fused view gives q its start and k the address nq heads later.
template <typename T>
static wc_qk_heads heads_params(const World<T>& w, const Case& c) {
  return wc_qk_heads{w.ptr(w.q), w.ptr(w.k), c.tokens, c.nq, c.nk, c.hd, w.q.ts, w.q.hs, w.k.ts, w.k.hs, tag<T>()};
}

// rotary_params (src/ops/rope/mod.rs): the table zero-padded to WC_ROPE_MAX_PAIRS, the attention
// factor as f32, P::IS_I64.
static wc_rotary rotary_params(const void* positions, bool pos64, const Rope& r, const Table& tb) {
  wc_rotary p{};
  p.positions = positions;
  p.positions_int64 = pos64;
  p.style = r.neox ? WC_ROPE_NEOX : WC_ROPE_GPTJ;
  p.rotary_dim = r.rotary_dim;
  p.rotary_offset = r.rot_off;
  p.attention_factor = static_cast<float>(tb.af);
  for (size_t i = 0; i < tb.inv_freq.size(); ++i) p.inv_freq[i] = tb.inv_freq[i];
  return p;
}

// The wc_kv_append of rope_append_kv / qk_norm_rope_append_kv / append_kv (src/ops/rope/mod.rs,
// src/ops/kv_cache.rs) with the cache from KvCacheMut::raw (src/kv_cache.rs): pages, num_pages,
// page_size, the (page, slot, head) strides, scales, C::TAG, the attached counter or null.
template <typename T>
static wc_kv_append append_params(const World<T>& w, const Case& c) {
  wc_paged_kv_cache cache{w.kc->p(), w.vc->p(), w.num_pages, c.page_size, w.page_stride, w.slot_stride,
                          w.head_stride, w.k_scale, w.v_scale, c.fp8 ? WC_E4M3 : tag<T>(),
                          w.err ? static_cast<uint32_t*>(w.err->p()) : nullptr};
  return wc_kv_append{w.ptr(w.v), w.v.ts, w.v.hs, w.slots->p(), c.slots64, cache};
}

// The heads append_kv (src/ops/kv_cache.rs) passes: no q, k read only.
static wc_qk_heads append_heads(wc_qk_heads h) {
  h.q = nullptr;
  h.num_q_heads = 0;
  h.q_token_stride = 0;
  h.q_head_stride = 0;
  return h;
}

constexpr float kEps = 1e-6f;

template <typename T>
static wc_status run_op(Op op, const World<T>& w, const Case& c, const Table& tb) {
  const wc_qk_heads h = heads_params(w, c);
  const wc_rotary rot = rotary_params(w.pos->p(), c.pos64, c.rope, tb);
  switch (op) {
    case ROPE: {
      const wc_rope_params p{h, rot};
      return wc_rope(&p, nullptr);
    }
    case APPEND: {
      const wc_append_kv_params p{append_heads(h), append_params(w, c)};
      return wc_append_kv(&p, nullptr);
    }
    case ROPE_APPEND: {
      const wc_rope_append_kv_params p{h, rot, append_params(w, c)};
      return wc_rope_append_kv(&p, nullptr);
    }
    default: {  // qk_norm_rope: the QkNorm config's eps and weight_offset (RmsNormConfig::new / gemma)
      wc_qk_norm_rope_params p{h, rot, w.qw->p(), w.kw->p(), kEps, c.gemma ? 1.0f : 0.0f, 0, {}};
      if (op == QKN_APPEND) {
        p.append_kv = 1;
        p.append = append_params(w, c);
      }
      return wc_qk_norm_rope(&p, nullptr);
    }
  }
}

// ------------------------------------------------------------------ one configuration
template <typename T>
static void run_case(const Case& c, uint64_t seed) {
  const Rope& rp = c.rope;
  ctx("%s %s%s tokens=%d nq=%d nk=%d hd=%d rotary=%d@%d %s %s %s hpad=%d tpad=%d off=%d pos%s%s", kOpName[c.op],
      tname<T>(), appends(c.op) ? (c.fp8 ? "->e4m3" : "->same") : "", c.tokens, c.nq, c.nk, c.hd, rp.rotary_dim,
      rp.rot_off, rp.neox ? "neox" : "gptj", kScalingName[rp.scaling], c.fused ? "fused" : "split", c.hpad, c.tpad,
      c.off, c.pos64 ? "64" : "32",
      appends(c.op) ? (std::string(" slots") + (c.slots64 ? "64" : "32") + " page=" + std::to_string(c.page_size) +
                       " cpad=" + std::to_string(c.c_hpad) + "/" + std::to_string(c.c_spad) + "/" +
                       std::to_string(c.c_ppad) + " coff=" + std::to_string(c.c_off) +
                       (c.counter ? "" : " no-counter"))
                          .c_str()
                    : (norms(c.op) ? (c.gemma ? " gemma" : " plain") : ""));
  const Table tb = table(rp);
  World<T> w;
  build(w, c, seed);
  const long launches = emu::launches;
  const wc_status st = run_op(c.op, w, c, tb);
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  if (emu::launches != launches + 1) fail("%ld launches, want 1", emu::launches - launches);
  const size_t E = sizeof(T);

  // q and k: the reference values of what the op writes; mark those bytes.
  std::vector<std::vector<uint8_t>> may(w.own.size());
  for (size_t i = 0; i < w.own.size(); ++i) may[i].assign(w.own[i]->off + w.own[i]->n, 0);
  auto mark = [&](const Role& role, int t, int h, int e) {
    for (size_t i = 0; i < w.own.size(); ++i)
      if (w.own[i].get() == role.b) memset(&may[i][role.b->off + role.at(t, h, e) * E], 1, E);
  };
  if (c.op != APPEND) {
    for (const Role* role : {&w.q, &w.k})
      for (int t = 0; t < c.tokens; ++t)
        for (int h = 0; h < role->heads; ++h) {
          std::vector<double> x(c.hd), slack(c.hd, 0.0), mag(c.hd, 0.0);
          for (int e = 0; e < c.hd; ++e) x[e] = tof(w.in(*role, t, h, e));
          if (norms(c.op)) {
            const T* wt = (role == &w.q ? w.qw : w.kw)->template as<T>();
            double ss = 0.0;
            for (double v : x) ss += v * v;
            const double rstd = 1.0 / std::sqrt(ss / c.hd + kEps);
            for (int e = 0; e < c.hd; ++e) {
              x[e] = x[e] * rstd * ((c.gemma ? 1.0 : 0.0) + tof(wt[e]));
              mag[e] = std::fabs(x[e]);
              slack[e] = kNorm * mag[e];
            }
          }
          rotate_ref(x, slack, mag, w.positions[t], rp, tb, norms(c.op) ? kNorm : 0.0);
          for (int e = 0; e < c.hd; ++e) {
            const bool rotated = e >= rp.rot_off && e < rp.rot_off + rp.rotary_dim;
            if (!rotated && !norms(c.op)) continue;  // stays as it was (checked bytewise below)
            mark(*role, t, h, e);
            check_val<T>(c.op, tof(w.out(*role, t, h, e)), x[e], slack[e], mag[e], role == &w.q ? "q" : "k", t, h, e);
          }
        }
  }
  // Every byte the op may not write, guards included, is as before; the cache is checked below.
  for (size_t i = 0; i < w.own.size(); ++i) {
    const Buf& b = *w.own[i];
    if (&b == w.kc || &b == w.vc || &b == w.err) continue;
    for (size_t j = 0; j < b.off + b.n; ++j)
      if (!may[i][j] && b.base[j] != b.init[j]) {
        fail("%s byte %lld written (outside what the op writes)", w.names[i], static_cast<long long>(j) - (long long)b.off);
        break;
      }
  }

  if (appends(c.op)) {
    // The expected cache images: token t's k (as the op left it in k) and v rows at its slot,
    // the same bits or e4m3(x / scale) with an f32 division; everything else as before.
    const size_t CE = c.fp8 ? 1 : E;
    std::vector<uint8_t> ke(w.kc->init), ve(w.vc->init);
    int64_t skipped = 0;
    for (int t = 0; t < c.tokens; ++t) {
      const int64_t s = w.slot[t];
      if (s < 0) {
        ++g_padding;
        continue;
      }
      if (s >= w.num_slots) {
        ++skipped;
        continue;
      }
      for (int h = 0; h < c.nk; ++h)
        for (int e = 0; e < c.hd; ++e) {
          const size_t at = w.kc->off + (w.cache_at(s, h) + e) * CE;
          const T kx = w.out(w.k, t, h, e), vx = w.in(w.v, t, h, e);
          if (c.fp8) {
            ke[at] = e4m3_code(tof(kx) / w.k_scale);
            ve[at] = e4m3_code(tof(vx) / w.v_scale);
            g_fp8_codes += 2;
          } else {
            memcpy(&ke[at], &kx, E);
            memcpy(&ve[at], &vx, E);
          }
        }
    }
    g_skipped += skipped;
    for (auto [b, want, name] : {std::tuple{w.kc, &ke, "k_pages"}, std::tuple{w.vc, &ve, "v_pages"}}) {
      ++g_checks;
      for (size_t j = 0; j < want->size(); ++j)
        if (b->base[j] != (*want)[j]) {
          const int64_t el = (static_cast<int64_t>(j) - static_cast<int64_t>(b->off)) / static_cast<int64_t>(CE);
          fail("%s element %lld (slot %lld, page %lld): got byte %02x want %02x", name, (long long)el,
               (long long)((el % w.page_stride) / w.slot_stride + el / w.page_stride * c.page_size),
               (long long)(el / w.page_stride), b->base[j], (*want)[j]);
          break;
        }
    }
    if (w.err) {
      uint32_t n;
      memcpy(&n, w.err->p(), 4);
      ++g_checks;
      if (n != w.err_init + skipped) fail("error_count %u, want %u + %lld skipped slots", n, w.err_init, (long long)skipped);
      if (!w.err->guard_intact()) fail("error_count guard written");
    }
  }

  // A fused appending op equals the unfused sequence (rope / qk_norm_rope, then append_kv) bit
  // for bit: the same buffers built again from the same seed.
  if (c.op == ROPE_APPEND || c.op == QKN_APPEND) {
    World<T> u;
    build(u, c, seed);
    const wc_status s1 = run_op(c.op == ROPE_APPEND ? ROPE : QKN, u, c, tb);
    const wc_status s2 = run_op(APPEND, u, c, tb);
    if (s1 != WC_OK || s2 != WC_OK) fail("unfused status %d, %d", s1, s2);
    for (size_t i = 0; i < w.own.size(); ++i) {
      ++g_checks;
      if (memcmp(w.own[i]->base, u.own[i]->base, w.own[i]->off + w.own[i]->n) != 0)
        fail("%s differs from %s then append_kv", w.names[i], kOpName[c.op == ROPE_APPEND ? ROPE : QKN]);
    }
  }
}

template <typename T>
static void run(const Case& c, uint64_t& seed) {
  run_case<T>(c, seed++);
}

// ------------------------------------------------------------------ the configurations
// W: elements of T in 16 bytes, so padding by W keeps the vector paths.
template <typename T>
static void suite(uint64_t& seed) {
  constexpr int W = 16 / sizeof(T);
  constexpr bool half_t = !std::is_same_v<T, float>;
  int k = 0;

  // rope: head_dim 64 / 128 / 256, NeoX / GPT-J, every scaling, three layouts:
  //   0 fused QKV (with or without v heads), padded strides, full rotary: the vector path;
  //   1 split buffers, half the head rotated at offset head_dim / 4: vector path;
  //   2 fused, odd padding, misaligned, rotary_dim with an odd number of pairs at offset 5.
  for (int hd : {64, 128, 256})
    for (bool neox : {true, false})
      for (int layout = 0; layout < 3; ++layout, ++k) {
        Case c;
        c.op = ROPE;
        c.hd = hd;
        c.tokens = 5 + k % 4;
        c.pos64 = k % 2;
        const Scaling sc = static_cast<Scaling>(k % 6);
        if (layout == 0) {
          c.rope = {hd, 0, neox, sc};
          c.with_v = k % 4 < 2;
          c.hpad = W;
          c.tpad = 2 * W;
        } else if (layout == 1) {
          c.rope = {hd / 2, hd / 4, neox, sc};
          c.fused = false;
          c.hpad = W;
          c.tpad = W;
        } else {
          c.rope = {2 * (hd / 8) + 2, 5, neox, sc};
          c.hpad = 1;
          c.tpad = 3;
          c.off = 1;
        }
        run<T>(c, seed);
      }
  // Many items per token (up to 5 rounds of 2 per thread on the element-wise path), the largest
  // rotary part, a 2-element rotary part at the end of the head, k only, positions near 2^31.
  for (bool neox : {true, false}) {
    Case c;
    c.tokens = 3, c.nq = 32, c.nk = 8, c.hd = 128, c.hpad = 1, c.rope = {128, 0, neox, LLAMA3};
    run<T>(c, seed);
    c.hpad = 0, c.rope.scaling = YARN;  // the vector path, 1-2 rounds
    run<T>(c, seed);
  }
  {
    Case c;
    c.tokens = 4, c.nq = 2, c.nk = 1, c.hd = 512, c.rope = {512, 0, true, YARN_DS}, c.max_pos = 1 << 20;
    run<T>(c, seed);
    c.rope = {2, 510, false, NONE}, c.max_pos = INT32_MAX;
    run<T>(c, seed);
    c.nq = 0, c.hd = 64, c.rope = {32, 16, true, LINEAR}, c.pos64 = true;
    run<T>(c, seed);
  }

  // qk_norm_rope: head_dim 32 .. 512 (VEC 1 .. 8), NeoX / GPT-J, plain / Gemma weights; layout 0
  // fused and padded (the widest VEC), layout 1 split and misaligned (VEC 1) with a partial
  // rotary part at an odd offset. Layout 0 has more q/k heads than the block's 8 warps, so a
  // warp loads its next head while it works on the current one (qk_norm_rope_kernel).
  for (int hd : {32, 64, 128, 256, 512})
    for (bool neox : {true, false})
      for (int layout = 0; layout < 2; ++layout, ++k) {
        Case c;
        c.op = QKN;
        c.hd = hd;
        c.tokens = 4 + k % 3;
        c.nq = layout == 0 ? (hd == 512 ? 9 : 19) : (hd == 512 ? 3 : 5);
        c.nk = 2;
        c.gemma = k % 2;
        c.pos64 = k % 3 == 0;
        const Scaling sc = static_cast<Scaling>(k % 6);
        if (layout == 0) {
          c.rope = {hd, 0, neox, sc};
          c.hpad = W, c.tpad = W;
        } else {
          c.rope = {hd / 2 + 2, 3, neox, sc};
          c.fused = false, c.off = 1, c.hpad = 3;
        }
        run<T>(c, seed);
      }

  if constexpr (half_t) {
    // The appending ops, every page size, same-dtype and e4m3 caches; cache layouts: 0 dense,
    // 1 padded by W (vector paths), 2 odd padding and a misaligned cache (element-wise / VEC 1).
    int j = 0;
    for (Op op : {APPEND, ROPE_APPEND, QKN_APPEND})
      for (int ps : {1, 8, 16, 32, 64, 128, 256})
        for (bool fp8 : {false, true}) {
          Case c;
          c.op = op;
          c.page_size = ps;
          c.fp8 = fp8;
          c.tokens = 12 + j % 5;
          c.nq = 4, c.nk = 2;
          c.hd = (j / 2) % 3 == 0 ? 64 : (j / 2) % 3 == 1 ? 128 : 256;
          c.slots64 = j % 3 == 1;
          c.pos64 = j % 4 == 2;
          c.counter = j % 5 != 4;
          c.gemma = j % 2;
          c.fused = j % 4 != 3;
          const int layout = j % 3;
          const Scaling sc = static_cast<Scaling>(j % 6);
          c.rope = {c.hd, 0, j % 2 == 0, sc};
          if (layout == 1) {
            c.c_hpad = W, c.c_spad = 2 * W, c.c_ppad = W, c.hpad = W;
            c.rope = {c.hd / 2, c.hd / 4, j % 4 < 2, sc};
          } else if (layout == 2) {
            c.c_hpad = 1, c.c_spad = 3, c.c_ppad = 5, c.c_off = 1;
            c.rope = {c.hd - 6, 3, j % 4 < 2, sc};
          }
          run<T>(c, seed);
          ++j;
        }
  }
}

// Many tokens (one block each): rope, rope_append_kv into an e4m3 cache, qk_norm_rope, and
// qk_norm_rope_append_kv into a misaligned cache (VEC must not follow the cache's alignment).
static void many_tokens(uint64_t& seed) {
  Case c;
  c.tokens = 1000, c.nq = 2, c.nk = 1, c.hd = 64, c.rope = {64, 0, true, NONE}, c.max_pos = 1 << 24;
  run<__nv_bfloat16>(c, seed);
  c.op = ROPE_APPEND, c.tokens = 600, c.fp8 = true, c.page_size = 16, c.slots64 = true, c.rope.neox = false;
  run<__half>(c, seed);
  c.op = QKN, c.tokens = 300, c.nq = 4, c.hd = 128, c.rope = {128, 0, true, YARN};
  run<__nv_bfloat16>(c, seed);
  c.op = QKN_APPEND, c.tokens = 150, c.nq = 8, c.nk = 2, c.hd = 256, c.c_off = 1, c.c_spad = 1, c.rope.neox = false;
  run<__half>(c, seed);
  c.fp8 = false;
  run<__nv_bfloat16>(c, seed);
}

// ------------------------------------------------------------------ refusals and no-ops
static void refusals(uint64_t seed) {
  ctx("refusals");
  Case c;
  c.op = ROPE_APPEND, c.tokens = 3, c.hd = 64, c.rope = {64, 0, true, NONE};
  World<__nv_bfloat16> w;
  build(w, c, seed);
  const Table tb = table(c.rope);
  const long launches = emu::launches;
  auto expect = [&](wc_status got, wc_status want, const char* what) {
    ++g_checks;
    if (got != want) fail("%s: status %d, want %d", what, got, want);
  };
  const wc_qk_heads h = heads_params(w, c);
  const wc_rotary rot = rotary_params(w.pos->p(), false, c.rope, tb);
  const wc_kv_append app = append_params(w, c);
  auto rope_with = [&](auto edit) {
    wc_rope_params p{h, rot};
    edit(p);
    return wc_rope(&p, nullptr);
  };
  expect(rope_with([](wc_rope_params& p) { p.rotary.rotary_dim = 3; }), WC_ERR_INVALID_ARG, "odd rotary_dim");
  expect(rope_with([](wc_rope_params& p) { p.rotary.rotary_dim = 0; }), WC_ERR_INVALID_ARG, "rotary_dim 0");
  expect(rope_with([](wc_rope_params& p) { p.rotary.rotary_offset = 2; }), WC_ERR_INVALID_ARG, "offset + rotary_dim > head_dim");
  expect(rope_with([](wc_rope_params& p) { p.heads.head_dim = 600, p.rotary.rotary_dim = 514; }), WC_ERR_INVALID_ARG, "rotary_dim 514");
  expect(rope_with([](wc_rope_params& p) { p.rotary.positions = nullptr; }), WC_ERR_INVALID_ARG, "no positions");
  expect(rope_with([](wc_rope_params& p) { p.heads.q = nullptr; }), WC_ERR_INVALID_ARG, "no q");
  expect(rope_with([](wc_rope_params& p) { p.heads.dtype = WC_E4M3; }), WC_ERR_UNSUPPORTED, "e4m3 heads");
  auto append_with = [&](auto edit) {
    wc_rope_append_kv_params p{h, rot, app};
    edit(p);
    return wc_rope_append_kv(&p, nullptr);
  };
  for (int64_t ps : {0, 3, 512})
    expect(append_with([ps](wc_rope_append_kv_params& p) { p.append.cache.page_size = ps; }), WC_ERR_INVALID_ARG, "page_size");
  expect(append_with([](wc_rope_append_kv_params& p) { p.append.cache.num_pages = -1; }), WC_ERR_INVALID_ARG, "num_pages -1");
  expect(append_with([](wc_rope_append_kv_params& p) { p.append.slot_mapping = nullptr; }), WC_ERR_INVALID_ARG, "no slots");
  expect(append_with([](wc_rope_append_kv_params& p) { p.append.cache.dtype = WC_F16; }), WC_ERR_UNSUPPORTED, "f16 cache, bf16 inputs");
  expect(append_with([](wc_rope_append_kv_params& p) { p.heads.dtype = WC_F32, p.append.cache.dtype = WC_E4M3; }),
         WC_ERR_UNSUPPORTED, "f32 inputs, e4m3 cache");
  {
    wc_append_kv_params p{h, app};  // q heads given
    expect(wc_append_kv(&p, nullptr), WC_ERR_INVALID_ARG, "append_kv with q heads");
  }
  {
    wc_qk_norm_rope_params p{h, rot, w.pos->p(), nullptr, kEps, 0.0f, 0, {}};
    expect(wc_qk_norm_rope(&p, nullptr), WC_ERR_INVALID_ARG, "qk_norm_rope without k_weight");
    p.k_weight = w.pos->p();
    p.heads.head_dim = 520, p.heads.q_head_stride = p.heads.k_head_stride = 520;
    expect(wc_qk_norm_rope(&p, nullptr), WC_ERR_INVALID_ARG, "qk_norm_rope head_dim 520");
  }
  if (emu::launches != launches) fail("a refused call launched");
  // Zero tokens: OK, nothing launched or written.
  wc_rope_params p0{h, rot};
  p0.heads.num_tokens = 0;
  expect(wc_rope(&p0, nullptr), WC_OK, "rope, zero tokens");
  wc_rope_append_kv_params p1{h, rot, app};
  p1.heads.num_tokens = 0;
  expect(wc_rope_append_kv(&p1, nullptr), WC_OK, "rope_append_kv, zero tokens");
  if (emu::launches != launches) fail("zero tokens launched");
  for (size_t i = 0; i < w.own.size(); ++i)
    if (memcmp(w.own[i]->base, w.own[i]->init.data(), w.own[i]->init.size()) != 0) fail("%s written by a refused call", w.names[i]);
}

// The wrapper's table against values from HF's Python (src/reference/rope.rs tests).
static void table_checks() {
  ctx("frequency tables");
  auto near = [](double got, double want, const char* what, int i) {
    ++g_checks;
    if (!(std::fabs(got - want) <= 1e-12 * std::fabs(want))) fail("%s inv_freq[%d] = %.17g, want %.17g", what, i, got, want);
  };
  const Table l3 = table({128, 0, true, LLAMA3});
  for (auto [i, v] : {std::pair{10, 0.12868737343265052}, {45, 1.2297638677963614e-05}, {48, 6.647869871181236e-06},
                      {63, 3.068925988914511e-07}})
    near(l3.inv_freq[i], v, "llama3", i);
  const Table ds = table({64, 0, true, YARN_DS});
  for (auto [i, v] : {std::pair{9, 0.07498942093324558}, {12, 0.026879360111431223}, {23, 3.33380358040831e-05},
                      {31, 3.33380358040831e-06}})
    near(ds.inv_freq[i], v, "yarn deepseek", i);
  const Table qw = table({128, 0, true, YARN});
  for (auto [i, v] : {std::pair{20, 0.01333521432163324}, {30, 0.0010643609812470017}, {63, 3.102344401879299e-07}})
    near(qw.inv_freq[i], v, "yarn qwen", i);
  near(qw.af, 1.138629436111989, "yarn qwen attention factor", 0);
  near(ds.af, 1.0, "yarn deepseek attention factor", 0);
}

int main() {
  uint64_t seed = 1;
  table_checks();
  suite<__nv_bfloat16>(seed);
  suite<__half>(seed);
  suite<float>(seed);
  many_tokens(seed);
  refusals(seed);
  fprintf(stderr, "max error / tolerance:");
  for (int op = 0; op < 5; ++op) fprintf(stderr, " %s %.3f", kOpName[op], g_max_err[op]);
  fprintf(stderr, "\n");
  printf("rope: max |got - want| / tolerance: rope %.3f, rope_append_kv %.3f, qk_norm_rope %.3f, "
         "qk_norm_rope_append_kv %.3f; worst |got - want| / magnitude: bf16 %.2e, f16 %.2e, f32 %.2e; %ld "
         "e4m3 codes bit-exact; %ld skipped slots counted, %ld padding slots\n",
         g_max_err[ROPE], g_max_err[ROPE_APPEND], g_max_err[QKN], g_max_err[QKN_APPEND], g_max_rel[0], g_max_rel[1],
         g_max_rel[2], g_fp8_codes, g_skipped, g_padding);
  return finish("rope");
}
