// Emulated runs of cuda/attention_gqa.cu, cuda/attention_sm90.cu and cuda/attention_mla.cu
// (wc_attention, wc_merge_states; the wgmma kernel where a case sets `wgmma`, MLA decode at head
// dims 576/512 with V = K's first 512 elements where it sets `mla`): builds
// wc_attention_params as src/ops/attention/ does (plan: num_splits, workspace), random inputs,
// NaN-poisoned outputs, compares with an independent f64 attention (src/reference/attention.rs
// semantics). Usage: attention [all|quick] [name-filter] | attention name-filter
#include <sys/mman.h>

#include <cstring>
#include <map>
#include <random>
#include <string>

#include "shim.h"
#include "warpcore.h"

extern "C" wc_status wc_attention(const wc_attention_params* p, wc_stream stream);
extern "C" wc_status wc_attention_ctas_per_sm(const wc_attention_params* p, int32_t* ctas_per_sm);
extern "C" wc_status wc_merge_states(const wc_merge_states_params* p, wc_stream stream);

// ------------------------------------------------------------------ element helpers
static uint16_t to16(float x, bool bf16) {
  if (bf16) { __nv_bfloat16 b = __float2bfloat16_rn(x); uint16_t u; memcpy(&u, &b, 2); return u; }
  __half h = __float2half_rn(x); uint16_t u; memcpy(&u, &h, 2); return u;
}
static double from16(uint16_t u, bool bf16) {
  if (bf16) return __uint_as_float(static_cast<uint32_t>(u) << 16);
  __half_raw r; r.x = u; return __half2float(__half(r));
}
// Independent e4m3fn decoder (bias 7, 3 mantissa bits, subnormals, 0x7F/0xFF NaN).
static double e4m3_decode(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return NAN;
  double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -v : v;
}

// Exact-size, 16-byte aligned heap buffers (ASan sees any overrun).
template <typename E>
static E* alloc(size_t n) {
  E* p = static_cast<E*>(malloc(n ? n * sizeof(E) : 1));
  if (reinterpret_cast<uintptr_t>(p) % 16) { fprintf(stderr, "malloc not 16B aligned\n"); exit(2); }
  return p;
}

struct Case {
  std::string name;
  bool bf16 = true, fp8 = false;
  int nq = 4, nkv = 1, hd = 64, hdv = 64;
  std::vector<int> q_lens, kv_lens;
  int page_size = 0;           // 0: contiguous
  bool causal = true;
  int window = -1;
  float softcap = 0.0f;
  int force_splits = 0;        // 0: AttentionPlan's choice
  bool lse = true;
  int bad_pages = 0;           // invalid page ids injected inside the sequences' ranges
  int q_pad = 0, out_pad = 0, kv_pad = 0;  // extra elements in token strides (multiples of 8)
  float qmag = 3.0f;
  bool wgmma = false;          // WC_ATTENTION_WGMMA (the sm_90a prefill kernel)
  bool mla = false;            // hd 576 / hdv 512, V = K's first 512 elements (p.v = p.k)
  bool tma = true;             // wgmma over K/V in the query dtype: TMA maps where kv_tma builds them
  int inf_head = -1;           // this query head's first element +inf in every token; the other
                               // heads (sharing its row tiles) must match the reference
};

// TMA maps as src/ops/attention/mod.rs's kv_tma builds them for the wgmma kernels (key_tile
// keys per tile: 128, MLA's 64; K/V in the query dtype, elem bytes each): none for pages under
// 8 slots or not back to back, or a head span wider than the token stride.
static void set_tma(wc_attention_params& p, int elem, long key_tile) {
  const long ps = p.page_size;
  const long box_rows = ps == 0 ? key_tile : std::min(ps, key_tile);
  if (ps != 0 && (ps < 8 || ps % box_rows != 0 || p.page_stride != ps * p.k_stride || p.v_stride != p.k_stride)) return;
  const long rows = ps == 0 ? p.total_kv : p.num_pages * ps;
  if (rows <= 0 || rows > INT32_MAX) return;
  auto map = [&](wc_tensor_map* m, const void* base, long stride, long head_stride) {
    const long row_bytes = ((long)(p.num_kv_heads - 1) * head_stride + p.head_dim) * elem, stride_bytes = stride * elem;
    const uint64_t dims[2] = {(uint64_t)row_bytes, (uint64_t)rows};
    const uint32_t box[2] = {128, (uint32_t)box_rows};
    return row_bytes <= stride_bytes && emu::sm90::encode_tensor_map_2d(m, base, dims, stride_bytes, box, 128);
  };
  if (map(&p.tma_k, p.k, p.k_stride, p.k_head_stride) && map(&p.tma_v, p.v, p.v_stride, p.v_head_stride))
    p.tma_rows = static_cast<int32_t>(box_rows);
}

// AttentionPlan::new and choose_splits (src/ops/attention/plan.rs), sm_count = 132 (H200), CTAs per
// SM from wc_attention_ctas_per_sm (the shim's occupancy calculator: shared memory only).
static int plan_splits(const Case& c, int sm_count = 132) {
  const int group = c.nq / c.nkv;
  int max_q = 0, max_kv = 0;
  for (int q : c.q_lens) max_q = std::max(max_q, q);
  for (int k : c.kv_lens) max_kv = std::max(max_kv, k);
  const bool decode = c.hd == c.hdv && max_q * group <= 16;
  const int d = std::max(c.hd, c.hdv);
  const int prefill_rows = d <= 128 ? 128 : 64;
  const int bm = c.wgmma ? (c.mla ? 64 : 128) : c.mla ? (max_q * group <= 16 ? 16 : 64) : decode ? 16 : prefill_rows;
  const bool wave_model = decode || (c.mla && max_q <= 8);
  long base = 0;
  for (int q : c.q_lens) base += (long)((q * group + bm - 1) / bm) * c.nkv;
  const int kpt = c.wgmma ? (c.mla ? 64 : 128) : (d > 192 || (!decode && d > 64 && prefill_rows == 128)) ? 32 : 64;
  const int max_splits = std::clamp(max_kv / (4 * kpt), 1, 64);
  if (base == 0 || max_splits == 1) return 1;
  wc_attention_params p{};
  p.num_q_heads = c.nq, p.num_kv_heads = c.nkv, p.head_dim = c.hd, p.head_dim_v = c.hdv, p.max_q_len = max_q;
  p.num_splits = 1, p.dtype = WC_BF16, p.kv_dtype = c.fp8 ? WC_E4M3 : WC_BF16;  // as ctas_per_sm (plan.rs)
  p.kernel = c.wgmma ? WC_ATTENTION_WGMMA : WC_ATTENTION_MMA;
  int32_t per_sm = 0;
  if (wc_attention_ctas_per_sm(&p, &per_sm) != WC_OK || per_sm < 1) {
    fprintf(stderr, "wc_attention_ctas_per_sm failed for %s\n", c.name.c_str());
    exit(1);
  }
  const long slots = (long)per_sm * sm_count;
  if (!wave_model) return (int)std::clamp<long>(slots / base, 1, max_splits);
  auto busy = [&](int s) { const double n = (double)(base * s) / slots; return n / std::ceil(n); };
  double best = 0.0;
  for (int s = 1; s <= max_splits; ++s) best = std::max(best, busy(s));
  for (int s = 1; s <= max_splits; ++s)
    if (busy(s) >= 0.95 * best) return s;
  return 1;
}

struct Result { bool pass; double rel_fro, max_abs, max_lse; int splits; long tma_loads; };

static Result run_case(const Case& c, std::mt19937& rng) {
  const int S = static_cast<int>(c.q_lens.size());
  const int group = c.nq / c.nkv;
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);
  long total_q = 0, total_kv = 0;
  int max_q = 0;
  std::vector<int32_t> cu_q(S + 1, 0), cu_kv(S + 1, 0);
  for (int s = 0; s < S; ++s) {
    cu_q[s + 1] = cu_q[s] + c.q_lens[s];
    cu_kv[s + 1] = cu_kv[s] + c.kv_lens[s];
    max_q = std::max(max_q, c.q_lens[s]);
  }
  total_q = cu_q[S];
  total_kv = cu_kv[S];
  const int splits = c.force_splits ? c.force_splits : plan_splits(c);

  // q
  const long q_stride = (long)c.nq * c.hd + c.q_pad;
  uint16_t* q = alloc<uint16_t>(total_q * q_stride);
  for (long i = 0; i < total_q * q_stride; ++i) q[i] = to16(U(rng) * c.qmag, c.bf16);
  if (c.inf_head >= 0)
    for (long t = 0; t < total_q; ++t) q[t * q_stride + (long)c.inf_head * c.hd] = c.bf16 ? 0x7F80 : 0x7C00;
  // K/V as logical values [seq][j][kvh][d] (doubles) plus the device images.
  std::vector<std::vector<double>> Kl(S), Vl(S);
  std::vector<std::vector<char>> exists(S);
  const int esz = c.fp8 ? 1 : 2;
  // MLA: V is K (the same latent rows), one scale.
  const float k_scale = c.fp8 ? 1.0f / 64 : 1.0f, v_scale = c.fp8 ? (c.mla ? k_scale : 1.0f / 32) : 1.0f;
  auto gen = [&](double scale, void* dst, long idx, double& logical) {
    const float x = U(rng);
    if (c.fp8) {
      __nv_fp8_e4m3 f;
      f.__x = __nv_cvt_float_to_fp8(x / static_cast<float>(scale), __NV_SATFINITE, __NV_E4M3);
      static_cast<uint8_t*>(dst)[idx] = f.__x;
      logical = e4m3_decode(f.__x) * scale;
    } else {
      const uint16_t u = to16(x, c.bf16);
      static_cast<uint16_t*>(dst)[idx] = u;
      logical = from16(u, c.bf16);
    }
  };
  void *kbuf = nullptr, *vbuf = nullptr;
  int32_t *block_table = nullptr, *seq_lens = nullptr;
  long num_pages = 0, bt_stride = 0, page_stride = 0, slot_stride = 0, k_stride = 0, v_stride = 0;
  long k_head_stride = c.hd, v_head_stride = c.hdv, kv_rows = total_kv;
  if (c.page_size == 0) {
    k_stride = (long)c.nkv * c.hd + c.kv_pad;
    v_stride = (long)c.nkv * c.hdv + c.kv_pad;
    kbuf = alloc<char>(total_kv * k_stride * esz);
    vbuf = alloc<char>(total_kv * v_stride * esz);
    for (long i = 0; i < total_kv * k_stride; ++i) { double d; gen(k_scale, kbuf, i, d); }
    for (long i = 0; i < total_kv * v_stride; ++i) { double d; gen(v_scale, vbuf, i, d); }
    for (int s = 0; s < S; ++s) {
      const int L = c.kv_lens[s];
      Kl[s].resize((size_t)L * c.nkv * c.hd);
      Vl[s].resize((size_t)L * c.nkv * c.hdv);
      exists[s].assign(L, 1);
      for (int j = 0; j < L; ++j)
        for (int h = 0; h < c.nkv; ++h) {
          const long row = cu_kv[s] + j;
          for (int d = 0; d < c.hd; ++d) {
            const long i = row * k_stride + h * c.hd + d;
            Kl[s][((size_t)j * c.nkv + h) * c.hd + d] = c.fp8 ? e4m3_decode(((uint8_t*)kbuf)[i]) * k_scale : from16(((uint16_t*)kbuf)[i], c.bf16);
          }
          for (int d = 0; d < c.hdv; ++d) {
            const long i = row * v_stride + h * c.hdv + d;
            Vl[s][((size_t)j * c.nkv + h) * c.hdv + d] = c.fp8 ? e4m3_decode(((uint8_t*)vbuf)[i]) * v_scale : from16(((uint16_t*)vbuf)[i], c.bf16);
          }
        }
    }
  } else {
    const int P = c.page_size;
    int max_pages = 0;
    for (int s = 0; s < S; ++s) { num_pages += (c.kv_lens[s] + P - 1) / P; max_pages = std::max(max_pages, (c.kv_lens[s] + P - 1) / P); }
    num_pages += 2;
    bt_stride = max_pages + 1;
    slot_stride = (long)c.nkv * c.hd + c.kv_pad;
    page_stride = P * slot_stride;
    k_stride = v_stride = slot_stride;
    kv_rows = num_pages * P;
    kbuf = alloc<char>(num_pages * page_stride * esz);
    vbuf = alloc<char>(num_pages * page_stride * esz);
    std::vector<double> klog(num_pages * page_stride), vlog(num_pages * page_stride);
    for (long i = 0; i < num_pages * page_stride; ++i) { gen(k_scale, kbuf, i, klog[i]); gen(v_scale, vbuf, i, vlog[i]); }
    std::vector<int> perm(num_pages);
    for (int i = 0; i < num_pages; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    block_table = alloc<int32_t>(S * bt_stride);
    seq_lens = alloc<int32_t>(S);
    int next = 0;
    const int32_t junk[] = {-1, -1000, (int32_t)num_pages, (int32_t)num_pages + 7, INT32_MAX, INT32_MIN};
    for (int s = 0; s < S; ++s) {
      seq_lens[s] = c.kv_lens[s];
      const int np = (c.kv_lens[s] + P - 1) / P;
      for (int b = 0; b < bt_stride; ++b) block_table[s * bt_stride + b] = b < np ? perm[next++] : junk[(s + b) % 6];
    }
    // Invalid page ids inside the sequences (keys on them are masked, never read).
    for (int n = 0; n < c.bad_pages; ++n) {
      const int s = n % S;
      const int np = (c.kv_lens[s] + P - 1) / P;
      if (np == 0) continue;
      block_table[s * bt_stride + (rng() % np)] = junk[n % 6];
    }
    for (int s = 0; s < S; ++s) {
      const int L = c.kv_lens[s];
      Kl[s].assign((size_t)L * c.nkv * c.hd, 0.0);
      Vl[s].assign((size_t)L * c.nkv * c.hdv, 0.0);
      exists[s].assign(L, 0);
      for (int j = 0; j < L; ++j) {
        const long page = block_table[s * bt_stride + j / P];
        if (page < 0 || page >= num_pages) continue;
        exists[s][j] = 1;
        for (int h = 0; h < c.nkv; ++h)
          for (int d = 0; d < c.hd; ++d) {
            const long i = page * page_stride + (j % P) * slot_stride + h * c.hd + d;
            Kl[s][((size_t)j * c.nkv + h) * c.hd + d] = klog[i];
            if (d < c.hdv) Vl[s][((size_t)j * c.nkv + h) * c.hdv + d] = vlog[i];
          }
      }
    }
  }

  if (c.mla) {
    // The latent cache: V is the first hdv elements of K's rows, in the same buffer.
    free(vbuf);
    vbuf = kbuf;
    v_stride = k_stride;
    v_head_stride = k_head_stride;
    for (int s = 0; s < S; ++s)
      for (int j = 0; j < c.kv_lens[s]; ++j)
        for (int h = 0; h < c.nkv; ++h)
          for (int d = 0; d < c.hdv; ++d)
            Vl[s][((size_t)j * c.nkv + h) * c.hdv + d] = Kl[s][((size_t)j * c.nkv + h) * c.hd + d];
  }
  const long out_stride = (long)c.nq * c.hdv + c.out_pad;
  uint16_t* out = alloc<uint16_t>(total_q * out_stride);
  for (long i = 0; i < total_q * out_stride; ++i) out[i] = 0xFFFF;  // NaN
  float* lse = c.lse ? alloc<float>(total_q * c.nq) : nullptr;
  if (lse) for (long i = 0; i < total_q * c.nq; ++i) lse[i] = NAN;
  float* ws = nullptr;
  const long ws_len = splits > 1 ? (long)splits * total_q * c.nq * (c.hdv + 1) : 0;
  if (ws_len) { ws = alloc<float>(ws_len); for (long i = 0; i < ws_len; ++i) ws[i] = NAN; }
  int32_t* cuq = alloc<int32_t>(S + 1);
  memcpy(cuq, cu_q.data(), (S + 1) * 4);
  int32_t* cukv = nullptr;
  if (c.page_size == 0) { cukv = alloc<int32_t>(S + 1); memcpy(cukv, cu_kv.data(), (S + 1) * 4); }

  // Params as src/ops/attention/mod.rs fills them.
  wc_attention_params p{};
  p.k_scale = k_scale;
  p.v_scale = v_scale;
  if (c.page_size == 0) {
    p.total_kv = total_kv;
    p.k_stride = k_stride;
    p.v_stride = v_stride;
    p.k_head_stride = k_head_stride;
    p.v_head_stride = v_head_stride;
    p.cu_seqlens_kv = cukv;
  } else {
    p.page_size = c.page_size;
    p.num_pages = num_pages;
    p.total_kv = kv_rows;
    p.block_table_stride = bt_stride;
    p.page_stride = page_stride;
    p.k_stride = p.v_stride = slot_stride;
    p.k_head_stride = p.v_head_stride = c.hd;
    p.block_table = block_table;
    p.seq_lens = seq_lens;
  }
  if (ws) {
    const long n = (long)splits * total_q * c.nq;
    p.partial_out = ws;
    p.partial_lse = ws + n * c.hdv;
  }
  p.q = q; p.k = kbuf; p.v = vbuf; p.out = out; p.lse = lse;
  p.cu_seqlens_q = cuq;
  p.q_stride = q_stride;
  p.out_stride = out_stride;
  p.total_q = total_q;
  p.num_seqs = S;
  p.num_q_heads = c.nq;
  p.num_kv_heads = c.nkv;
  p.head_dim = c.hd;
  p.head_dim_v = c.hdv;
  p.max_q_len = max_q;
  p.causal = c.causal;
  p.window_left = c.window;
  p.num_splits = splits;
  p.merge_pdl = splits % 2 == 0;  // both merge launches: PDL (the plan's default) and plain
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  p.softcap = c.softcap;
  p.dtype = c.bf16 ? WC_BF16 : WC_F16;
  p.kv_dtype = c.fp8 ? WC_E4M3 : p.dtype;
  p.kernel = c.wgmma ? WC_ATTENTION_WGMMA : WC_ATTENTION_MMA;
  if (c.wgmma && c.tma && !c.fp8) set_tma(p, esz, c.mla ? 64 : 128);
  const long errs_before = emu::errors.load();
  const long tma_before = emu::sm90::tma_loads.load();
  const wc_status st = wc_attention(&p, nullptr);
  const long tma_loads = emu::sm90::tma_loads.load() - tma_before;

  // f64 reference, per sequence (bottom-right causal, window, softcap, scale, LSE).
  double num = 0, den = 0, max_abs = 0, max_lse = 0;
  long bad = 0;
  for (int s = 0; s < S; ++s) {
    const int ql = c.q_lens[s], L = c.kv_lens[s];
    for (int i = 0; i < ql; ++i) {
      const long pos = (long)L - ql + i;
      const long tok = cu_q[s] + i;
      for (int h = 0; h < c.nq; ++h) {
        if (h == c.inf_head) continue;  // its scores are ±inf / NaN; what it gives is not compared
        const int kvh = h / group;
        std::vector<double> sc(L, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j < L; ++j) {
          if (!exists[s][j]) continue;
          if (c.causal && j > pos) continue;
          if (c.window >= 0 && j < pos - c.window) continue;
          double dot = 0;
          for (int d = 0; d < c.hd; ++d)
            dot += from16(q[tok * q_stride + (long)h * c.hd + d], c.bf16) * Kl[s][((size_t)j * c.nkv + kvh) * c.hd + d];
          double x = dot * p.scale;
          if (c.softcap > 0) x = c.softcap * std::tanh(x / c.softcap);
          sc[j] = x;
          mx = std::max(mx, x);
        }
        std::vector<double> o(c.hdv, 0.0);
        double l = -INFINITY;
        if (mx != -INFINITY) {
          double sum = 0;
          for (int j = 0; j < L; ++j) if (sc[j] != -INFINITY) sum += std::exp(sc[j] - mx);
          l = mx + std::log(sum);
          for (int j = 0; j < L; ++j) {
            if (sc[j] == -INFINITY) continue;
            const double w = std::exp(sc[j] - mx) / sum;
            for (int d = 0; d < c.hdv; ++d) o[d] += w * Vl[s][((size_t)j * c.nkv + kvh) * c.hdv + d];
          }
        }
        for (int d = 0; d < c.hdv; ++d) {
          const double got = from16(out[tok * out_stride + (long)h * c.hdv + d], c.bf16);
          const double err = std::fabs(got - o[d]);
          if (!(err <= 2e-2 + 2e-2 * std::fabs(o[d]))) ++bad;  // NaN fails too
          max_abs = std::max(max_abs, std::isnan(err) ? INFINITY : err);
          num += std::isnan(err) ? INFINITY : err * err;
          den += o[d] * o[d];
        }
        if (lse) {
          const double got = lse[tok * c.nq + h];
          double e;
          if (l == -INFINITY) e = (got == -INFINITY) ? 0 : INFINITY;
          else e = std::fabs(got - l);
          if (!(e <= 1e-2 * std::max(1.0, std::fabs(l)))) ++bad;
          max_lse = std::max(max_lse, std::isnan(e) ? INFINITY : e);
        }
      }
    }
  }
  // Padding columns of out must be untouched.
  for (long t = 0; t < total_q; ++t)
    for (long d = (long)c.nq * c.hdv; d < out_stride; ++d)
      if (out[t * out_stride + d] != 0xFFFF) ++bad;
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const bool pass = st == WC_OK && bad == 0 && rel <= 1e-2 && emu::errors.load() == errs_before;
  if (st != WC_OK) fprintf(stderr, "status %d\n", st);
  free(q); free(kbuf); if (vbuf != kbuf) free(vbuf); free(out); free(lse); free(ws); free(cuq); free(cukv); free(block_table); free(seq_lens);
  return {pass, rel, max_abs, max_lse, splits, tma_loads};
}

static std::vector<Case> cases(const std::string& set) {
  std::vector<Case> v;
  auto add = [&](Case c) { v.push_back(c); };
  // ---- decode: q_len 1, GQA 1/4/8, page sizes 16/1/64, kv lens incl. 0, split on/off
  for (int ratio : {1, 4, 8}) {
    for (int ps : {16, 1, 64}) {
      Case c;
      c.name = "decode g" + std::to_string(ratio) + " ps" + std::to_string(ps);
      c.nkv = 2; c.nq = 2 * ratio; c.hd = c.hdv = 64;
      c.q_lens = {1, 1, 1, 1, 1, 1};
      c.kv_lens = {1, 15, 16, 17, 100, 0};
      c.page_size = ps;
      add(c);
    }
  }
  { Case c; c.name = "decode g4 ps16 forced splits 3"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1, 1, 1, 1, 1};
    c.kv_lens = {1, 15, 16, 17, 100, 0}; c.page_size = 16; c.force_splits = 3; add(c); }
  { Case c; c.name = "decode g8 ps16 plan splits (kv 700)"; c.nkv = 1; c.nq = 8; c.q_lens = {1, 1, 1};
    c.kv_lens = {700, 0, 260}; c.page_size = 16; add(c); }
  { Case c; c.name = "decode g4 hd128 ps16 plan splits"; c.nkv = 2; c.nq = 8; c.hd = c.hdv = 128;
    c.q_lens = {1, 1}; c.kv_lens = {520, 33}; c.page_size = 16; add(c); }
  // The merge past one batch of loaded splits (8 at head_dim 128, 4 at 256) and past 32 (a
  // second round of lse lanes); many splits are empty (lse -inf) for the shorter sequences.
  { Case c; c.name = "decode g4 hd128 ps16 forced splits 37"; c.nkv = 2; c.nq = 8; c.hd = c.hdv = 128;
    c.q_lens = {1, 1, 1}; c.kv_lens = {4000, 300, 0}; c.page_size = 16; c.force_splits = 37; add(c); }
  { Case c; c.name = "decode g2 hd256 ps32 forced splits 11"; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 256;
    c.q_lens = {1, 1}; c.kv_lens = {1500, 40}; c.page_size = 32; c.force_splits = 11; add(c); }
  { Case c; c.name = "decode g1 hd128 ps64 no-lse splits 2"; c.nkv = 2; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {1, 1, 1}; c.kv_lens = {100, 17, 0}; c.page_size = 64; c.force_splits = 2; c.lse = false; add(c); }
  { Case c; c.name = "decode g4 ps16 bad page ids"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1, 1};
    c.kv_lens = {100, 40, 17}; c.page_size = 16; c.bad_pages = 4; add(c); }
  { Case c; c.name = "decode g4 ps16 bad pages + split 2"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1, 1};
    c.kv_lens = {100, 40, 17}; c.page_size = 16; c.bad_pages = 3; c.force_splits = 2; add(c); }
  { Case c; c.name = "decode g4 ps16 window 20 softcap 2"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1, 1};
    c.kv_lens = {100, 17, 5}; c.page_size = 16; c.window = 20; c.softcap = 2.0f; c.qmag = 8; add(c); }
  { Case c; c.name = "decode spec q_len 4 g4 ps16 (rows 16)"; c.nkv = 2; c.nq = 8; c.q_lens = {4, 4, 2};
    c.kv_lens = {37, 4, 100}; c.page_size = 16; add(c); }
  { Case c; c.name = "decode f16 g4 ps16"; c.bf16 = false; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1};
    c.kv_lens = {100, 17}; c.page_size = 16; add(c); }
  { Case c; c.name = "decode hd256 g4 ps16 split 2"; c.nkv = 1; c.nq = 4; c.hd = c.hdv = 256; c.q_lens = {1, 1};
    c.kv_lens = {100, 31}; c.page_size = 16; c.force_splits = 2; add(c); }
  { Case c; c.name = "decode hd96 g2 ps16"; c.nkv = 2; c.nq = 4; c.hd = c.hdv = 96; c.q_lens = {1, 1};
    c.kv_lens = {70, 16}; c.page_size = 16; add(c); }
  // ---- FP8 cache decode
  { Case c; c.name = "fp8 decode g4 ps16"; c.fp8 = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1, 1, 1};
    c.kv_lens = {100, 17, 0, 1}; c.page_size = 16; add(c); }
  { Case c; c.name = "fp8 decode hd128 g8 ps1 split 2"; c.fp8 = true; c.nkv = 1; c.nq = 8; c.hd = c.hdv = 128;
    c.q_lens = {1, 1}; c.kv_lens = {80, 15}; c.page_size = 1; c.force_splits = 2; add(c); }
  // head_dim 256 decode: 2 warps, 32-key tiles, 16 raw chunks a row (raw_chunk's swizzle spans
  // two 128-byte lines a row).
  { Case c; c.name = "fp8 decode hd256 g4 ps32 split 2"; c.fp8 = true; c.nkv = 2; c.nq = 8; c.hd = c.hdv = 256;
    c.q_lens = {1, 1, 1}; c.kv_lens = {150, 33, 7}; c.page_size = 32; c.force_splits = 2; add(c); }
  // ---- FP8 cache prefill / append (the prefill configuration, raw stages converted in smem)
  { Case c; c.name = "fp8 prefill hd64 g4 ps16"; c.fp8 = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33};
    c.kv_lens = {5, 17, 80}; c.page_size = 16; add(c); }
  { Case c; c.name = "fp8 prefill hd128 g2 ps1 split 2"; c.fp8 = true; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33}; c.kv_lens = {30, 100}; c.page_size = 1; c.force_splits = 2; add(c); }
  { Case c; c.name = "fp8 prefill hd96 g4 ps8 3 key tiles"; c.fp8 = true; c.nkv = 1; c.nq = 4; c.hd = c.hdv = 96;
    c.q_lens = {20}; c.kv_lens = {150}; c.page_size = 8; add(c); }
  { Case c; c.name = "fp8 prefill f16 hd256 window softcap bad pages"; c.fp8 = true; c.bf16 = false; c.nkv = 1;
    c.nq = 2; c.hd = c.hdv = 256; c.q_lens = {33, 9}; c.kv_lens = {70, 9}; c.page_size = 16; c.window = 40;
    c.softcap = 2.0f; c.qmag = 8; c.bad_pages = 2; add(c); }
  // bf16 queries past f16's range (the mma runs in f16 over an FP8 cache: Q scaled per CTA).
  { Case c; c.name = "fp8 prefill hd128 g2 ps16 softcap qmag 1e5"; c.fp8 = true; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {40, 9}; c.kv_lens = {200, 9}; c.page_size = 16; c.softcap = 30.0f; c.qmag = 1e5f; add(c); }
  // One head's +inf query over an FP8 cache (bf16 queries scaled to f16 by one exponent per row
  // tile): the heads sharing its tiles keep their values (before 2026-12-03 the inf set the
  // tile's exponent and flushed every other query to 0).
  { Case c; c.name = "fp8 prefill g4 ps16 inf in head 1"; c.fp8 = true; c.nkv = 1; c.nq = 4; c.q_lens = {20, 3};
    c.kv_lens = {100, 40}; c.page_size = 16; c.inf_head = 1; add(c); }
  { Case c; c.name = "fp8 decode g8 ps16 inf in head 5"; c.fp8 = true; c.nkv = 1; c.nq = 8; c.q_lens = {1, 1};
    c.kv_lens = {100, 17}; c.page_size = 16; c.inf_head = 5; add(c); }
  { Case c; c.name = "fp8 decode g4 ps16 qmag 1e-6"; c.fp8 = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 1};
    c.kv_lens = {100, 17}; c.page_size = 16; c.qmag = 1e-6f; add(c); }
  // ---- prefill varlen (ragged 1, 17, 33), causal bottom-right, contiguous and paged
  { Case c; c.name = "prefill contig hd64 g4"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33, 0};
    c.kv_lens = {1, 40, 33, 5}; add(c); }
  { Case c; c.name = "prefill contig hd128 g1 strides padded"; c.nkv = 2; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33, 1}; c.kv_lens = {17, 90, 70}; c.q_pad = 8; c.out_pad = 16; c.kv_pad = 8; add(c); }
  { Case c; c.name = "prefill paged ps16 hd64 g4"; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33};
    c.kv_lens = {5, 17, 80}; c.page_size = 16; add(c); }
  { Case c; c.name = "prefill paged ps1 hd128 g2 split 2"; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33}; c.kv_lens = {30, 100}; c.page_size = 1; c.force_splits = 2; add(c); }
  { Case c; c.name = "prefill contig window 7 softcap 1.5"; c.nkv = 2; c.nq = 4; c.q_lens = {17, 33};
    c.kv_lens = {40, 100}; c.window = 7; c.softcap = 1.5f; c.qmag = 8; add(c); }
  { Case c; c.name = "prefill contig non-causal"; c.causal = false; c.nkv = 1; c.nq = 4; c.q_lens = {17, 3};
    c.kv_lens = {40, 70}; add(c); }
  { Case c; c.name = "prefill mla (192,128) g1"; c.nkv = 2; c.nq = 2; c.hd = 192; c.hdv = 128;
    c.q_lens = {1, 17, 33}; c.kv_lens = {1, 20, 70}; add(c); }
  { Case c; c.name = "prefill mla (192,128) g4 split 3"; c.nkv = 1; c.nq = 4; c.hd = 192; c.hdv = 128;
    c.q_lens = {17, 5}; c.kv_lens = {130, 5}; c.force_splits = 3; add(c); }
  { Case c; c.name = "prefill hd256 g2 window 40"; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 256;
    c.q_lens = {33, 9}; c.kv_lens = {70, 9}; c.window = 40; add(c); }
  { Case c; c.name = "prefill f16 hd64 g8 q>kv rows"; c.bf16 = false; c.nkv = 1; c.nq = 8; c.q_lens = {9};
    c.kv_lens = {4}; add(c); }
  // A window of INT32_MAX over queries at negative positions (q_len > kv_len): pos - window
  // must not wrap (it did in int: every row of the tile saw no key; seed `window_wrap`).
  { Case c; c.name = "prefill window 2^31-1 q>kv non-causal"; c.causal = false; c.nkv = 1; c.nq = 2;
    c.q_lens = {3, 40}; c.kv_lens = {1, 20}; c.window = INT32_MAX; add(c); }
  { Case c; c.name = "prefill window 2^31-2 q>kv paged"; c.nkv = 1; c.nq = 2; c.q_lens = {3, 40};
    c.kv_lens = {1, 20}; c.page_size = 16; c.window = INT32_MAX - 1; add(c); }
  // A key tile ending one past the first row's position: masked, though its neighbours are not.
  { Case c; c.name = "prefill contig causal tile edge (q3 kv65)"; c.nkv = 1; c.nq = 2; c.q_lens = {3, 3};
    c.kv_lens = {65, 66}; add(c); }
  // ---- the sm_90a wgmma prefill kernel (head dims 64 / 128): 128-row m-tiles, 128-key tiles
  { Case c; c.name = "wgmma contig hd64 g4"; c.wgmma = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33, 0};
    c.kv_lens = {1, 40, 33, 5}; add(c); }
  { Case c; c.name = "wgmma contig hd128 g1 strides padded"; c.wgmma = true; c.nkv = 2; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33, 1}; c.kv_lens = {17, 90, 70}; c.q_pad = 8; c.out_pad = 16; c.kv_pad = 8; add(c); }
  { Case c; c.name = "wgmma paged ps16 hd64 g4"; c.wgmma = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33};
    c.kv_lens = {5, 17, 80}; c.page_size = 16; add(c); }
  { Case c; c.name = "wgmma paged ps1 hd128 g2 split 2"; c.wgmma = true; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33}; c.kv_lens = {30, 100}; c.page_size = 1; c.force_splits = 2; add(c); }
  { Case c; c.name = "wgmma hd128 g4 2 m-tiles 3 key tiles ps64"; c.wgmma = true; c.nkv = 1; c.nq = 4;
    c.hd = c.hdv = 128; c.q_lens = {40}; c.kv_lens = {300}; c.page_size = 64; add(c); }
  { Case c; c.name = "wgmma hd64 bad pages + split 2"; c.wgmma = true; c.nkv = 2; c.nq = 4; c.q_lens = {20, 3};
    c.kv_lens = {300, 40}; c.page_size = 16; c.bad_pages = 3; c.force_splits = 2; add(c); }
  { Case c; c.name = "wgmma window 2^31-1 q>kv non-causal"; c.wgmma = true; c.causal = false; c.nkv = 1; c.nq = 4;
    c.q_lens = {3, 40}; c.kv_lens = {1, 20}; c.window = INT32_MAX; add(c); }
  { Case c; c.name = "wgmma window 7 softcap 1.5"; c.wgmma = true; c.nkv = 2; c.nq = 4; c.q_lens = {17, 33};
    c.kv_lens = {40, 200}; c.window = 7; c.softcap = 1.5f; c.qmag = 8; add(c); }
  { Case c; c.name = "wgmma non-causal no-lse"; c.wgmma = true; c.causal = false; c.nkv = 1; c.nq = 4;
    c.q_lens = {17, 3}; c.kv_lens = {140, 70}; c.lse = false; add(c); }
  { Case c; c.name = "wgmma f16 hd64 g8 q>kv rows"; c.wgmma = true; c.bf16 = false; c.nkv = 1; c.nq = 8;
    c.q_lens = {9}; c.kv_lens = {4}; add(c); }
  { Case c; c.name = "wgmma f16 hd128 g1 130 rows"; c.wgmma = true; c.bf16 = false; c.nkv = 1; c.nq = 1;
    c.hd = c.hdv = 128; c.q_lens = {130}; c.kv_lens = {260}; add(c); }
  { Case c; c.name = "wgmma causal tile edge (q3 kv129)"; c.wgmma = true; c.nkv = 1; c.nq = 2; c.q_lens = {3, 3};
    c.kv_lens = {129, 130}; add(c); }
  // Six key tiles per CTA with large, drifting scores: the pipelined loop's steady state (the
  // running max keeps moving, so every rescale of O matters) in both m-tiles.
  { Case c; c.name = "wgmma hd64 6 key tiles non-causal qmag 8"; c.wgmma = true; c.causal = false; c.nkv = 1;
    c.nq = 2; c.q_lens = {70}; c.kv_lens = {768}; c.qmag = 8; add(c); }
  // ---- TMA key tiles (every wgmma case above maps K/V where kv_tma would; these stress it):
  // contiguous rows at any offset, several kv heads in padded token strides; pages of 8 (16
  // boxes per tile) and 256 (tiles half a page in); a window (paged tiles no longer start a
  // page: cp.async) and bad pages (that tile by cp.async, its neighbours by TMA); and the same
  // long tiles with the maps off (cp.async everywhere).
  { Case c; c.name = "wgmma tma contig hd128 kv3 heads padded split 2"; c.wgmma = true; c.nkv = 3; c.nq = 6; c.hd = c.hdv = 128;
    c.q_lens = {30, 1, 70}; c.kv_lens = {500, 37, 300}; c.kv_pad = 8; c.force_splits = 2; add(c); }
  { Case c; c.name = "wgmma tma paged ps8 hd64 g4"; c.wgmma = true; c.nkv = 2; c.nq = 8; c.q_lens = {20, 5};
    c.kv_lens = {400, 130}; c.page_size = 8; add(c); }
  { Case c; c.name = "wgmma tma paged ps256 hd128 non-causal"; c.wgmma = true; c.causal = false; c.nkv = 1; c.nq = 2;
    c.hd = c.hdv = 128; c.q_lens = {9, 3}; c.kv_lens = {700, 256}; c.page_size = 256; add(c); }
  { Case c; c.name = "wgmma tma paged ps32 window 150 bad pages"; c.wgmma = true; c.nkv = 1; c.nq = 4; c.q_lens = {40};
    c.kv_lens = {600}; c.page_size = 32; c.window = 150; c.bad_pages = 2; add(c); }
  { Case c; c.name = "wgmma tma paged ps32 window 144 (aligned) bad pages"; c.wgmma = true; c.nkv = 1; c.nq = 4;
    c.q_lens = {40}; c.kv_lens = {600}; c.page_size = 32; c.window = 144; c.bad_pages = 2; add(c); }
  { Case c; c.name = "wgmma tma contig window 150 f16"; c.wgmma = true; c.bf16 = false; c.nkv = 2; c.nq = 4;
    c.hd = c.hdv = 128; c.q_lens = {60, 7}; c.kv_lens = {520, 300}; c.window = 150; add(c); }
  { Case c; c.name = "wgmma cp.async hd64 6 key tiles non-causal"; c.wgmma = true; c.tma = false; c.causal = false;
    c.nkv = 1; c.nq = 2; c.q_lens = {70}; c.kv_lens = {768}; c.qmag = 8; add(c); }
  { Case c; c.name = "wgmma cp.async paged ps16 hd128 4 key tiles"; c.wgmma = true; c.tma = false; c.nkv = 2; c.nq = 4;
    c.hd = c.hdv = 128; c.q_lens = {33}; c.kv_lens = {520}; c.page_size = 16; add(c); }
  // ---- the wgmma kernel over an FP8 cache: raw tiles converted to f16 by the producer (two
  // stages each, K and V on barriers of their own); bf16 queries scaled into f16's range.
  { Case c; c.name = "wgmma fp8 hd64 g4 ps16"; c.wgmma = c.fp8 = true; c.nkv = 2; c.nq = 8; c.q_lens = {1, 17, 33};
    c.kv_lens = {5, 17, 80}; c.page_size = 16; add(c); }
  { Case c; c.name = "wgmma fp8 hd128 g2 ps1 split 2"; c.wgmma = c.fp8 = true; c.nkv = 1; c.nq = 2; c.hd = c.hdv = 128;
    c.q_lens = {17, 33}; c.kv_lens = {30, 300}; c.page_size = 1; c.force_splits = 2; add(c); }
  { Case c; c.name = "wgmma fp8 f16 hd128 2 m-tiles 5 key tiles ps64 bad pages"; c.wgmma = c.fp8 = true; c.bf16 = false;
    c.nkv = 1; c.nq = 4; c.hd = c.hdv = 128; c.q_lens = {40}; c.kv_lens = {600}; c.page_size = 64; c.bad_pages = 2; add(c); }
  { Case c; c.name = "wgmma fp8 hd64 6 key tiles non-causal window softcap qmag 1e5"; c.wgmma = c.fp8 = true;
    c.causal = false; c.nkv = 1; c.nq = 2; c.q_lens = {70}; c.kv_lens = {768}; c.page_size = 8; c.window = 300;
    c.softcap = 30.0f; c.qmag = 1e5f; add(c); }
  { Case c; c.name = "wgmma fp8 hd64 ps16 inf in head 2"; c.wgmma = c.fp8 = true; c.nkv = 1; c.nq = 4;
    c.q_lens = {40, 9}; c.kv_lens = {200, 9}; c.page_size = 16; c.inf_head = 2; add(c); }
  { Case c; c.name = "wgmma fp8 hd128 tiny q (qmag 1e-6) ps32"; c.wgmma = c.fp8 = true; c.nkv = 2; c.nq = 4;
    c.hd = c.hdv = 128; c.q_lens = {9, 130}; c.kv_lens = {9, 300}; c.page_size = 32; c.qmag = 1e-6f; add(c); }
  // ---- MLA decode (576/512, one latent head): the 16-row configuration (16 heads, q_len 1)
  // and the 64-row one (more rows per sequence), paged and contiguous, splits, masks.
  { Case c; c.name = "mla decode h16 ps16"; c.mla = true; c.hd = 576; c.hdv = 512; c.nkv = 1; c.nq = 16;
    c.q_lens = {1, 1, 1}; c.kv_lens = {1, 70, 0}; c.page_size = 16; add(c); }
  { Case c; c.name = "mla decode h16 ps64 split 2 bad pages"; c.mla = true; c.hd = 576; c.hdv = 512; c.nkv = 1;
    c.nq = 16; c.q_lens = {1, 1}; c.kv_lens = {130, 33}; c.page_size = 64; c.force_splits = 2; c.bad_pages = 1; add(c); }
  { Case c; c.name = "mla spec q2 h32 contig (64-row)"; c.mla = true; c.hd = 576; c.hdv = 512; c.nkv = 1; c.nq = 32;
    c.q_lens = {2, 1}; c.kv_lens = {45, 3}; c.q_pad = 8; c.out_pad = 8; c.kv_pad = 8; add(c); }
  { Case c; c.name = "mla f16 h3 q5 ps1 window softcap"; c.mla = true; c.bf16 = false; c.hd = 576; c.hdv = 512;
    c.nkv = 1; c.nq = 3; c.q_lens = {5}; c.kv_lens = {40}; c.page_size = 1; c.window = 20; c.softcap = 2.0f;
    c.qmag = 8; add(c); }
  { Case c; c.name = "mla fp8 h16 ps16 split 2"; c.mla = c.fp8 = true; c.hd = 576; c.hdv = 512; c.nkv = 1; c.nq = 16;
    c.q_lens = {1, 1}; c.kv_lens = {100, 17}; c.page_size = 16; c.force_splits = 2; add(c); }
  { Case c; c.name = "mla fp8 f16 h40 ps1 (64-row)"; c.mla = c.fp8 = true; c.bf16 = false; c.hd = 576; c.hdv = 512;
    c.nkv = 1; c.nq = 40; c.q_lens = {1, 1}; c.kv_lens = {70, 0}; c.page_size = 1; add(c); }
  // Two latent heads (the wrapper accepts any num_kv_heads; released models have one).
  { Case c; c.name = "mla decode h32 kv2 ps16 split 2"; c.mla = true; c.hd = 576; c.hdv = 512; c.nkv = 2; c.nq = 32;
    c.q_lens = {1, 1}; c.kv_lens = {90, 17}; c.page_size = 16; c.force_splits = 2; add(c); }
  // ---- MLA decode on the Hopper kernel (attention_mla_sm90.cu: 64 rows, 64-key tiles)
  { Case c; c.name = "mla wgmma h128 kv2 ps16"; c.mla = c.wgmma = true; c.hd = 576; c.hdv = 512; c.nkv = 2; c.nq = 128;
    c.q_lens = {1, 1}; c.kv_lens = {150, 40}; c.page_size = 16; add(c); }
  { Case c; c.name = "mla wgmma h64 ps16"; c.mla = c.wgmma = true; c.hd = 576; c.hdv = 512; c.nkv = 1; c.nq = 64;
    c.q_lens = {1, 1}; c.kv_lens = {130, 1}; c.page_size = 16; add(c); }
  { Case c; c.name = "mla wgmma h128 ps64 split 2 bad pages"; c.mla = c.wgmma = true; c.hd = 576; c.hdv = 512; c.nkv = 1;
    c.nq = 128; c.q_lens = {1, 1, 1}; c.kv_lens = {150, 0, 70}; c.page_size = 64; c.force_splits = 2; c.bad_pages = 1; add(c); }
  { Case c; c.name = "mla wgmma tma ps8 h64 q2 split 2"; c.mla = c.wgmma = true; c.hd = 576; c.hdv = 512; c.nkv = 1;
    c.nq = 64; c.q_lens = {2, 1}; c.kv_lens = {300, 129}; c.page_size = 8; c.force_splits = 2; add(c); }
  { Case c; c.name = "mla wgmma tma ps256 h32 bad pages"; c.mla = c.wgmma = true; c.hd = 576; c.hdv = 512; c.nkv = 1;
    c.nq = 32; c.q_lens = {1, 1}; c.kv_lens = {700, 300}; c.page_size = 256; c.bad_pages = 1; add(c); }
  { Case c; c.name = "mla wgmma cp.async ps64 h64"; c.mla = c.wgmma = true; c.tma = false; c.hd = 576; c.hdv = 512;
    c.nkv = 1; c.nq = 64; c.q_lens = {1}; c.kv_lens = {400}; c.page_size = 64; add(c); }
  { Case c; c.name = "mla wgmma f16 h20 q3 contig window softcap"; c.mla = c.wgmma = true; c.bf16 = false; c.hd = 576;
    c.hdv = 512; c.nkv = 1; c.nq = 20; c.q_lens = {3}; c.kv_lens = {140}; c.window = 70; c.softcap = 2.0f; c.qmag = 8;
    c.q_pad = 8; c.out_pad = 8; c.kv_pad = 8; add(c); }
  if (set == "quick") v.resize(3);
  return v;
}


// wc_merge_states against the f64 formula (one side -inf in some rows, both in one).
static bool merge_test(std::mt19937& rng, bool bf16) {
  const long rows = 37; const int hd = 96;
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);
  uint16_t *a = alloc<uint16_t>(rows * hd), *b = alloc<uint16_t>(rows * hd), *o = alloc<uint16_t>(rows * hd);
  float *la = alloc<float>(rows), *lb = alloc<float>(rows), *lo = alloc<float>(rows);
  for (long i = 0; i < rows * hd; ++i) { a[i] = to16(U(rng), bf16); b[i] = to16(U(rng), bf16); o[i] = 0xFFFF; }
  for (long r = 0; r < rows; ++r) { la[r] = 3 * U(rng); lb[r] = 3 * U(rng); lo[r] = NAN; }
  la[3] = -INFINITY; lb[5] = -INFINITY; la[7] = lb[7] = -INFINITY;
  wc_merge_states_params p{a, la, b, lb, o, lo, rows, hd, bf16 ? WC_BF16 : WC_F16};
  const long e0 = emu::errors.load();
  bool ok = wc_merge_states(&p, nullptr) == WC_OK;
  double max_abs = 0, max_lse = 0;
  for (long r = 0; r < rows; ++r) {
    const double m = std::max<double>(la[r], lb[r]);
    double wa = 0, wb = 0, l = -INFINITY;
    if (m != -INFINITY) { wa = std::exp(la[r] - m); wb = std::exp(lb[r] - m); l = m + std::log(wa + wb); }
    for (int d = 0; d < hd; ++d) {
      const double ref = m == -INFINITY ? 0 : (from16(a[r * hd + d], bf16) * wa + from16(b[r * hd + d], bf16) * wb) / (wa + wb);
      const double e = std::fabs(from16(o[r * hd + d], bf16) - ref);
      if (!(e <= 1e-2 + 1e-2 * std::fabs(ref))) ok = false;
      max_abs = std::max(max_abs, std::isnan(e) ? INFINITY : e);
    }
    const double e = l == -INFINITY ? (lo[r] == -INFINITY ? 0 : INFINITY) : std::fabs(lo[r] - l);
    if (!(e <= 1e-4 * std::max(1.0, std::fabs(l)))) ok = false;
    max_lse = std::max(max_lse, std::isnan(e) ? INFINITY : e);
  }
  ok = ok && emu::errors.load() == e0;
  printf("%-44s           max_abs %.2e  max_lse_err %.2e  %s\n", bf16 ? "merge_states bf16 rows 37 hd 96" : "merge_states f16 rows 37 hd 96",
         max_abs, max_lse, ok ? "ok" : "FAIL");
  free(a); free(b); free(o); free(la); free(lb); free(lo);
  return ok;
}

// A paged sequence whose device-side seq_len is INT32_MAX, with a block table wide enough to
// cover it (2^23 pages of 256) and a window of 0: key indices must stay inside int32 (they had
// wrapped negative and read the table 32 MB before its start; seed `kv_len_clamp`). The table
// sits above a PROT_NONE region the size of the table, so such a read faults. Every page id is
// page 0, whose K and V are 1.0: the one key a query sees gives out = 1.0.
static bool huge_seq_len_test(bool wgmma) {
  const int hd = wgmma ? 64 : 128, ps = 256, nq = wgmma ? 32 : 1;
  const long cols = 1L << 23;
  const size_t tb = cols * sizeof(int32_t);
  char* m = static_cast<char*>(mmap(nullptr, 2 * tb, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (m == MAP_FAILED || mprotect(m + tb, tb, PROT_READ | PROT_WRITE) != 0) {
    printf("huge seq_len: mmap failed\n");
    return false;
  }
  int32_t* table = reinterpret_cast<int32_t*>(m + tb);
  std::memset(table, 0, tb);
  uint16_t *kc = alloc<uint16_t>(ps * hd), *vc = alloc<uint16_t>(ps * hd);
  uint16_t *q = alloc<uint16_t>(nq * hd), *out = alloc<uint16_t>(nq * hd);
  for (int i = 0; i < ps * hd; ++i) kc[i] = vc[i] = 0x3f80;
  for (int i = 0; i < nq * hd; ++i) q[i] = 0x3f80, out[i] = 0x7fc0;
  int32_t *cu = alloc<int32_t>(2), *sl = alloc<int32_t>(1);
  float* lse = alloc<float>(nq);
  cu[0] = 0, cu[1] = 1, sl[0] = INT32_MAX;
  wc_attention_params p{};
  p.q = q, p.k = kc, p.v = vc, p.out = out, p.lse = lse;
  p.cu_seqlens_q = cu, p.seq_lens = sl, p.block_table = table;
  p.q_stride = (long)nq * hd, p.k_stride = hd, p.v_stride = hd, p.k_head_stride = hd, p.v_head_stride = hd;
  p.page_stride = (long)ps * hd, p.out_stride = (long)nq * hd, p.total_q = 1, p.total_kv = ps, p.num_pages = 1;
  p.block_table_stride = cols, p.page_size = ps, p.num_seqs = 1, p.num_q_heads = nq, p.num_kv_heads = 1;
  p.head_dim = hd, p.head_dim_v = hd, p.max_q_len = 1, p.causal = 1, p.window_left = 0;
  p.num_splits = 1, p.scale = 0.125f, p.k_scale = 1, p.v_scale = 1;
  p.dtype = WC_BF16, p.kv_dtype = WC_BF16, p.kernel = wgmma ? WC_ATTENTION_WGMMA : WC_ATTENTION_MMA;
  const long e0 = emu::errors.load();
  const wc_status st = wc_attention(&p, nullptr);
  bool ok = st == WC_OK && emu::errors.load() == e0;
  for (int i = 0; i < nq * hd; ++i) ok = ok && out[i] == 0x3f80;
  printf("%-44s           status %d  out[0] %04x  %s\n", wgmma ? "wgmma huge seq_len window 0" : "decode huge seq_len window 0",
         st, out[0], ok ? "ok" : "FAIL");
  munmap(m, 2 * tb);
  free(kc); free(vc); free(q); free(out); free(cu); free(sl); free(lse);
  return ok;
}

int main(int argc, char** argv) {
  // attention [all|quick] [filter], or attention FILTER (what `run --filter` passes).
  std::string set = argc > 1 ? argv[1] : "all", only = argc > 2 ? argv[2] : "";
  if (set != "all" && set != "quick") only = set, set = "all";
  std::mt19937 rng(1234);
  int fails = 0, n = 0;
  for (const Case& c : cases(set)) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    ++n;
    const Result r = run_case(c, rng);
    printf("%-44s splits %2d  rel_fro %.2e  max_abs %.2e  max_lse_err %.2e  %s", c.name.c_str(), r.splits, r.rel_fro,
           r.max_abs, r.max_lse, r.pass ? "ok" : "FAIL");
    if (r.tma_loads) printf("  (%ld TMA boxes)", r.tma_loads);
    printf("\n");
    fflush(stdout);
    fails += !r.pass;
  }
  if (only.empty()) for (bool bf : {true, false}) { ++n; fails += !merge_test(rng, bf); }
  for (bool wg : {false, true}) {
    if (!only.empty() && std::string(wg ? "wgmma huge seq_len" : "decode huge seq_len").find(only) == std::string::npos) continue;
    ++n;
    fails += !huge_seq_len_test(wg);
  }
  printf("attention %s: %d/%d configurations passed (cp.async %s, max dynamic smem %zu B, %ld launches)\n",
         fails ? "FAIL" : "PASS", n - fails, n, emu::cp_eager ? "eager" : "deferred", emu::max_smem_attr(), emu::launches);
  return fails ? 1 : 0;
}
