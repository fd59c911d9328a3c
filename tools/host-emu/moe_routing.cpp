// Emulated runs of cuda/moe_routing.cu (gate, align, gather, combine) against independent C++ references.
// Usage: moe_routing [gate|align|gather|combine]
#include "harness.h"

#include <algorithm>
#include <numeric>

// ------------------------------------------------------------------ gate reference
static float canonical(float v) { return std::isnan(v) ? -INFINITY : (v == 0.0f ? 0.0f : v); }
// The documented deterministic sigmoid: recip(1 + det_exp(−x)) (harness.h), where recip(d) is
// the bit-trick seed 0x7EF311C3 − bits(d) and three Newton steps y = fma(y, fma(−d, y, 1), y)
// for d < 2^125, else 0 (docs/moe_routing.md).
static float det_recip_ref(float d) {
  uint32_t u;
  memcpy(&u, &d, 4);
  u = 0x7EF311C3u - u;
  float y;
  memcpy(&y, &u, 4);
  for (int i = 0; i < 3; ++i) y = std::fma(y, std::fma(-d, y, 1.0f), y);
  return d < 0x1p125f ? y : (std::isnan(d) ? d : 0.0f);
}
static float det_sigmoid(float x) { return det_recip_ref(1.0f + det_exp_ref(-x)); }

struct GateCfg {
  int E, n_group, topk_group, top_k;
  bool sigmoid, renorm, bias;
  float scale;
  int first, last;
};

static void gate_ref(const std::vector<float>& x, const std::vector<float>& bias, const GateCfg& c, std::vector<int>& ids,
                     std::vector<double>& w, std::vector<int>& counts) {
  const int E = c.E, epg = E / c.n_group;
  const int T = static_cast<int>(x.size()) / E;
  for (int t = 0; t < T; ++t) {
    const float* row = &x[static_cast<size_t>(t) * E];
    std::vector<float> s(E);
    for (int e = 0; e < E; ++e) s[e] = canonical(c.sigmoid ? det_sigmoid(row[e]) + (c.bias ? bias[e] : 0.0f) : row[e]);
    std::vector<bool> kept(c.n_group, true);
    if (c.topk_group < c.n_group) {
      std::vector<float> gs(c.n_group);
      for (int g = 0; g < c.n_group; ++g) {
        std::vector<float> v(s.begin() + g * epg, s.begin() + (g + 1) * epg);
        std::sort(v.begin(), v.end(), std::greater<float>());
        gs[g] = canonical(epg >= 2 ? v[0] + v[1] : v[0]);
      }
      std::vector<int> order(c.n_group);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return gs[a] > gs[b]; });
      kept.assign(c.n_group, false);
      for (int i = 0; i < c.topk_group; ++i) kept[order[i]] = true;
    }
    std::vector<int> cand;
    for (int e = 0; e < E; ++e)
      if (kept[e / epg]) cand.push_back(e);
    std::stable_sort(cand.begin(), cand.end(), [&](int a, int b) { return s[a] > s[b]; });
    cand.resize(c.top_k);
    std::vector<double> wt(c.top_k);
    if (!c.sigmoid) {
      double m = -INFINITY;
      for (int e = 0; e < E; ++e)
        if (!std::isnan(row[e])) m = std::max(m, double(row[e]));
      double den = 0;
      for (int k = 0; k < c.top_k; ++k) wt[k] = std::exp(double(row[cand[k]]) - m);
      if (c.renorm) for (double v : wt) den += v;
      else for (int e = 0; e < E; ++e) den += std::exp(double(row[e]) - m);
      for (auto& v : wt) v /= den;
    } else {
      double den = 0;
      for (int k = 0; k < c.top_k; ++k) den += (wt[k] = 1.0 / (1.0 + std::exp(-double(row[cand[k]]))));
      if (c.renorm) for (auto& v : wt) v /= den + 1e-20;
    }
    for (int k = 0; k < c.top_k; ++k) {
      const int e = cand[k];
      ids.push_back(e >= c.first && e < c.last ? e - c.first : -1);
      w.push_back(wt[k] * c.scale);
      counts[e] += 1;
    }
  }
}

// value mode: 0 random, 1 heavy ties (few values), 2 specials (NaN, -inf, +-0 mixed with ties),
// 3 near ties (a few values, each moved by up to 2^12 ulp: the packed keys' truncated bits),
// 4 near ties of the selection values sigmoid + bias (f32, with a bias; the pre-filter's
// tolerances): per group a cluster of 2-3 experts within 64 ulp of 0.5 + the group's offset
// (0.1 * rank / n_group; on every other token two groups share an offset, so that their sums
// are near ties), the others in [0.35, 0.45]; the logits solved from the bias;
// 5 random logits, bias in +-900 (the pre-filter's tolerance scales with max |bias|);
// 6 random logits, one bias entry NaN, +inf or -inf (the pre-filter falls back).
template <typename T>
static void gate_case(const GateCfg& c, int tokens, int mode, int stride_pad, int ptr_off, int out_pad, uint64_t seed) {
  ctx("gate %s E=%d groups=%d/%d k=%d %s renorm=%d bias=%d scale=%g local=[%d,%d) tokens=%d mode=%d stride+%d off=%d outpad=%d",
      tname<T>(), c.E, c.topk_group, c.n_group, c.top_k, c.sigmoid ? "sigmoid" : "softmax", c.renorm, c.bias, c.scale,
      c.first, c.last, tokens, mode, stride_pad, ptr_off, out_pad);
  Rng r(seed);
  const int E = c.E;
  const int64_t ls = E + stride_pad;
  Buf lb(((tokens - 1) * ls + E) * sizeof(T), ptr_off * sizeof(T), r);
  std::vector<float> x(static_cast<size_t>(tokens) * E);
  std::vector<float> bias4(E);  // mode 4: the bias, drawn first (the logits depend on it)
  std::vector<float> target;    // mode 4: the token's selection values
  Rng r4(seed ^ 0x5bd1e995u);
  for (auto& b : bias4) b = static_cast<float>(r4.uni(-0.3, 0.3));
  for (int t = 0; t < tokens; ++t)
    for (int e = 0; e < E; ++e) {
      float v;
      if (mode == 4 && e == 0) {
        const int G = c.n_group, epg = E / G;
        std::vector<int> rank(G);
        std::iota(rank.begin(), rank.end(), 0);
        for (int i = G - 1; i > 0; --i) std::swap(rank[i], rank[r4.below(i + 1)]);
        if (G > 1 && t % 2 == 1) rank[r4.below(G)] = rank[r4.below(G)];  // two groups share a rank
        target.assign(E, 0.0f);
        for (int g = 0; g < G; ++g) {
          std::vector<int> m(epg);
          std::iota(m.begin(), m.end(), g * epg);
          for (int i = epg - 1; i > 0; --i) std::swap(m[i], m[r4.below(i + 1)]);
          const int cs = std::min(epg, 2 + static_cast<int>(r4.below(2)));
          for (int i = 0; i < epg; ++i)
            target[m[i]] = i < cs ? (0.5f + 0.1f * rank[g] / G) + r4.below(64) * 0x1p-24f
                                  : static_cast<float>(r4.uni(0.35, 0.45));
        }
      }
      if (mode == 4) {
        const double y = static_cast<double>(target[e]) - bias4[e];
        v = static_cast<float>(std::log(y / (1.0 - y)));
      } else if (mode == 0 || mode >= 5) v = static_cast<float>(r.uni(-4, 4));
      else if (mode == 1) v = 0.5f * r.below(3) - 0.5f;
      else if (mode == 3) {
        static const float base[] = {1.5f, -0.75f, 0.375f};
        v = base[r.below(3)];
        uint32_t u;
        memcpy(&u, &v, 4);
        u += r.below(1u << (1 + r.below(12)));
        memcpy(&v, &u, 4);
      }
      else {
        static const float sp[] = {NAN, -INFINITY, 0.0f, -0.0f, 1.0f, 1.0f, -2.0f, INFINITY};
        v = sp[r.below(t % 3 == 0 ? 7 : 8)];  // some rows without +inf
      }
      T tv = fromf<T>(v);
      x[static_cast<size_t>(t) * E + e] = tof(tv);
      lb.set(&tv, sizeof(T), (t * ls + e) * sizeof(T));
    }
  std::vector<float> bias(E);
  for (auto& b : bias) b = mode == 1 ? 0.25f * r.below(2) : static_cast<float>(r.uni(-0.3, 0.3));
  if (mode == 4) bias = bias4;
  if (mode == 5)
    for (auto& b : bias) b *= 3000.0f;
  if (mode == 6) bias[r.below(E)] = seed % 3 == 0 ? NAN : (seed % 3 == 1 ? INFINITY : -INFINITY);
  Buf bb(E * 4, 4 * static_cast<int>(seed % 2), r);  // odd seeds: a bias 4 bytes past 16-byte alignment (scalar loads)
  bb.set(bias.data(), E * 4);
  const int64_t is = c.top_k + out_pad, ws = c.top_k + 2 * out_pad;
  Buf ib(((tokens - 1) * is + c.top_k) * 4, 0, r), wb(((tokens - 1) * ws + c.top_k) * 4, 0, r);
  std::vector<int> counts0(E);
  for (auto& v : counts0) v = r.below(5);
  Buf cb(E * 4, 0, r);
  cb.set(counts0.data(), E * 4);
  wc_moe_gate_params p{lb.p(), c.bias ? bb.as<float>() : nullptr, ib.as<int32_t>(), wb.as<float>(), cb.as<int32_t>(),
                       tokens, E, c.top_k, ls, is, ws, c.n_group, c.topk_group, c.first, c.last, c.scale, c.renorm,
                       c.sigmoid ? WC_MOE_SIGMOID : WC_MOE_SOFTMAX, tag<T>()};
  const wc_status st = wc_moe_gate(&p, nullptr);
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  std::vector<int> ids, counts = counts0;
  std::vector<double> w;
  gate_ref(x, bias, c, ids, w, counts);
  const int32_t* gi = ib.as<int32_t>();
  const float* gw = wb.as<float>();
  for (int t = 0; t < tokens; ++t) {
    for (int k = 0; k < c.top_k; ++k) {
      ++g_checks;
      const int want = ids[t * c.top_k + k];
      if (gi[t * is + k] != want) fail("token %d k %d: id %d want %d", t, k, gi[t * is + k], want);
      const double got = gw[t * ws + k], ref = w[t * c.top_k + k];
      const bool ok = (std::isnan(got) && std::isnan(ref)) || std::fabs(got - ref) <= 2e-5 * std::fabs(ref) + 1e-30;
      if (!ok) fail("token %d k %d: weight %.9g want %.9g", t, k, got, ref);
    }
    for (int k = c.top_k; k < is && t + 1 < tokens; ++k)
      if (memcmp(gi + t * is + k, &ib.init[(t * is + k) * 4], 4) != 0) fail("ids gap written");
    for (int k = c.top_k; k < ws && t + 1 < tokens; ++k)
      if (memcmp(gw + t * ws + k, &wb.init[(t * ws + k) * 4], 4) != 0) fail("weights gap written");
  }
  for (int e = 0; e < E; ++e)
    if (cb.as<int32_t>()[e] != counts[e]) {
      fail("count[%d] = %d want %d", e, cb.as<int32_t>()[e], counts[e]);
      break;
    }
}

// ------------------------------------------------------------------ align reference
struct AlignOut {
  std::vector<int32_t> sorted, blocks, offsets, counts, positions;
};
static AlignOut align_ref(const std::vector<int32_t>& ids, int E, int bm, int sorted_len, int blocks_len) {
  const int n = static_cast<int>(ids.size());
  AlignOut o;
  o.counts.assign(E, 0);
  for (int id : ids)
    if (id >= 0 && id < E) o.counts[id]++;
  o.offsets.assign(E + 1, 0);
  for (int e = 0; e < E; ++e) o.offsets[e + 1] = o.offsets[e] + (o.counts[e] + bm - 1) / bm * bm;
  o.sorted.assign(sorted_len, n);
  o.positions.assign(n, -1);
  std::vector<int> cur(o.offsets.begin(), o.offsets.end() - 1);
  for (int f = 0; f < n; ++f)
    if (ids[f] >= 0 && ids[f] < E) {
      o.sorted[cur[ids[f]]] = f;
      o.positions[f] = cur[ids[f]]++;
    }
  o.blocks.assign(blocks_len, -1);
  for (int e = 0; e < E; ++e)
    for (int b = o.offsets[e] / bm; b < o.offsets[e + 1] / bm; ++b) o.blocks[b] = e;
  return o;
}

static std::vector<int32_t> random_ids(Rng& r, int n, int E, int mode) {
  std::vector<int32_t> ids(n);
  for (auto& v : ids) {
    if (mode == 1) v = 3 % E;  // all to one expert
    else if (mode == 2 && r.below(4) == 0) {
      static const int32_t bad[] = {-1, INT32_MAX, INT32_MIN, -7};
      v = r.below(2) ? E : bad[r.below(4)];
    } else v = r.below(E);
  }
  return ids;
}

static AlignOut align_case(int tokens, int k, int E, int bm, int stride_pad, int mode, uint64_t seed, std::vector<int32_t>* ids_out = nullptr) {
  ctx("align tokens=%d k=%d E=%d block_m=%d stride+%d mode=%d", tokens, k, E, bm, stride_pad, mode);
  Rng r(seed);
  const int n = tokens * k;
  const int sorted_len = n + E * (bm - 1), blocks_len = (sorted_len + bm - 1) / bm;
  const int tiles = (n + WC_MOE_ALIGN_TILE - 1) / WC_MOE_ALIGN_TILE;
  const int ws_len = tiles > 1 ? tiles * E : 0;
  std::vector<int32_t> ids = random_ids(r, n, E, mode);
  const int64_t is = k + stride_pad;
  Buf ib(tokens ? ((tokens - 1) * is + k) * 4 : 0, 0, r);
  for (int t = 0; t < tokens; ++t) ib.set(&ids[t * k], k * 4, t * is * 4);
  Buf sb(sorted_len * 4, 0, r), bb(blocks_len * 4, 0, r), ob((E + 1) * 4, 0, r), cb(E * 4, 0, r), pb(n * 4, 0, r),
      wsb(ws_len * 4, 0, r);
  wc_moe_align_params p{ib.as<int32_t>(), sb.as<int32_t>(), bb.as<int32_t>(), ob.as<int32_t>(), cb.as<int32_t>(),
                        pb.as<int32_t>(), ws_len ? wsb.as<int32_t>() : nullptr, tokens, k, is, E, bm};
  const wc_status st = wc_moe_align(&p, nullptr);
  AlignOut want = align_ref(ids, E, bm, sorted_len, blocks_len);
  if (st != WC_OK) {
    fail("status %d", st);
    return want;
  }
  auto cmp = [&](const char* what, const Buf& b, const std::vector<int32_t>& v) {
    ++g_checks;
    for (size_t i = 0; i < v.size(); ++i)
      if (b.as<int32_t>()[i] != v[i]) {
        fail("%s[%zu] = %d want %d", what, i, b.as<int32_t>()[i], v[i]);
        return;
      }
  };
  cmp("sorted_ids", sb, want.sorted);
  cmp("block_expert_ids", bb, want.blocks);
  cmp("expert_offsets", ob, want.offsets);
  cmp("expert_counts", cb, want.counts);
  cmp("token_positions", pb, want.positions);
  if (ids_out) *ids_out = ids;
  return want;
}

// ------------------------------------------------------------------ gather
static void gather_case(int esize, int tokens, int k, int E, int bm, int hidden, int hpad, int opad, int off, int rows_cut,
                        uint64_t seed) {
  std::vector<int32_t> ids;
  AlignOut a = align_case(tokens, k, E, bm, 0, 2, seed, &ids);
  ctx("gather esize=%d tokens=%d k=%d E=%d bm=%d hidden=%d hpad=%d opad=%d off=%dB rows_cut=%d", esize, tokens, k, E, bm,
      hidden, hpad, opad, off, rows_cut);
  Rng r(seed + 1000);
  const int rows = rows_cut >= 0 ? std::max<int>(0, static_cast<int>(a.sorted.size()) - rows_cut)
                                 : std::max<int>(0, a.offsets[E] + rows_cut);  // < 0: cut into the padded total
  const int64_t hs = hidden + hpad, os = hidden + opad;
  Buf hb(((tokens - 1) * hs + hidden) * esize, off, r);
  Buf outb(rows ? ((rows - 1) * os + hidden) * esize : 0, off, r);
  Buf posb(a.positions.size() * 4, 0, r), offb(a.offsets.size() * 4, 0, r), cntb(a.counts.size() * 4, 0, r);
  posb.set(a.positions.data(), a.positions.size() * 4);
  offb.set(a.offsets.data(), a.offsets.size() * 4);
  cntb.set(a.counts.data(), a.counts.size() * 4);
  const wc_dtype dt = esize == 1 ? WC_E4M3 : esize == 2 ? WC_F16 : WC_F32;
  wc_moe_gather_params p{hb.p(), posb.as<int32_t>(), offb.as<int32_t>(), cntb.as<int32_t>(), outb.p(), tokens, k, hidden,
                         hs, E, rows, os, dt};
  const wc_status st = wc_moe_gather(&p, nullptr);
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  // Expected: the poisoned "before" bytes, then rows written by position, padding rows zeroed.
  std::vector<uint8_t> want(outb.init.begin() + off, outb.init.end());
  const uint8_t* h = static_cast<const uint8_t*>(hb.p());
  for (int t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j) {
      const int pos = a.positions[t * k + j];
      if (pos >= 0 && pos < rows) memcpy(&want[pos * os * esize], h + t * hs * esize, hidden * esize);
    }
  for (int e = 0; e < E; ++e)
    for (int rr = a.offsets[e] + a.counts[e]; rr < std::min(a.offsets[e + 1], rows); ++rr)
      memset(&want[rr * os * esize], 0, hidden * esize);
  ++g_checks;
  if (memcmp(outb.p(), want.data(), want.size()) != 0) {
    for (size_t i = 0; i < want.size(); ++i)
      if (static_cast<uint8_t*>(outb.p())[i] != want[i]) {
        fail("out byte %zu (row %zu) differs", i, i / (os * esize));
        break;
      }
  }
  if (!outb.guard_intact()) fail("out guard written");
}

// ------------------------------------------------------------------ combine
template <typename T>
static void combine_case(int tokens, int k, int rows, int hidden, int epad, int opad, int wpad, int off, uint64_t seed) {
  ctx("combine %s tokens=%d k=%d rows=%d hidden=%d epad=%d opad=%d wpad=%d off=%d", tname<T>(), tokens, k, rows, hidden, epad,
      opad, wpad, off);
  Rng r(seed);
  const int64_t es = hidden + epad, os = hidden + opad, ws = k + wpad;
  Buf eb(((rows - 1) * es + hidden) * sizeof(T), off * sizeof(T), r);
  std::vector<float> ev(static_cast<size_t>(rows) * es);
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < hidden; ++c) {
      T v = fromf<T>(static_cast<float>(r.uni(-3, 3)));
      ev[i * es + c] = tof(v);
      eb.set(&v, sizeof(T), (i * es + c) * sizeof(T));
    }
  std::vector<int32_t> pos(tokens * k);
  for (auto& v : pos) v = r.below(6) == 0 ? (r.below(2) ? -1 : rows + r.below(3)) : r.below(rows);
  for (int j = 0; j < k; ++j) pos[j] = -1;  // token 0: no valid position -> zeros
  std::vector<float> w(static_cast<size_t>(tokens) * ws);
  for (auto& v : w) v = static_cast<float>(r.uni(0, 1));
  Buf pb(pos.size() * 4, 0, r), wb(((tokens - 1) * ws + k) * 4, 0, r);
  pb.set(pos.data(), pos.size() * 4);
  for (int t = 0; t < tokens; ++t) wb.set(&w[t * ws], k * 4, t * ws * 4);
  Buf ob(((tokens - 1) * os + hidden) * sizeof(T), off * sizeof(T), r);
  wc_moe_combine_params p{eb.p(), pb.as<int32_t>(), wb.as<float>(), ob.p(), tokens, k, hidden, rows, es, ws, os, tag<T>()};
  const wc_status st = wc_moe_combine(&p, nullptr);
  if (st != WC_OK) {
    fail("status %d", st);
    return;
  }
  const T* o = ob.as<T>();
  for (int t = 0; t < tokens; ++t) {
    for (int c = 0; c < hidden; ++c) {
      float acc = 0.0f;
      double ref = 0.0, mag = 0.0;
      for (int j = 0; j < k; ++j) {
        const int q = pos[t * k + j];
        if (q < 0 || q >= rows) continue;
        acc = std::fmaf(w[t * ws + j], ev[q * es + c], acc);
        ref += double(w[t * ws + j]) * ev[q * es + c];
        mag += std::fabs(double(w[t * ws + j]) * ev[q * es + c]);
      }
      const T exact = fromf<T>(acc);
      const T got = o[t * os + c];
      ++g_checks;
      if (memcmp(&exact, &got, sizeof(T)) != 0)
        fail("token %d col %d: got %.9g, fma chain in k order gives %.9g", t, c, tof(got), tof(exact));
      if (!(std::fabs(tof(got) - ref) <= ulp<T>(ref) + mag * std::ldexp(1.0, -22)))
        fail("token %d col %d: got %.9g, f64 %.9g", t, c, tof(got), ref);
    }
    for (int c = hidden; c < os && t + 1 < tokens; ++c)
      if (memcmp(o + t * os + c, &ob.init[ob.off + (t * os + c) * sizeof(T)], sizeof(T)) != 0) fail("out gap written");
  }
  if (!ob.guard_intact()) fail("out guard written");
}

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  uint64_t seed = 100;
  if (only.empty() || only == "gate") {
    std::vector<GateCfg> cfgs;
    for (int E : {8, 60, 64, 256, 384, 512})
      for (int k : {1, 2, 6, 8, 16, 32})
        if (k <= E) {
          cfgs.push_back({E, 1, 1, k, false, k % 2 == 0, false, 1.0f, 0, E});
          if (k == 8 || k == 6 || k == 1) cfgs.push_back({E, 1, 1, k, false, k != 8, false, 1.0f, 0, E});
        }
    // Sigmoid, ungrouped and grouped (DeepSeek-V3 style).
    cfgs.push_back({64, 1, 1, 6, true, true, true, 1.0f, 0, 64});
    cfgs.push_back({60, 1, 1, 4, true, false, false, 1.0f, 0, 60});
    cfgs.push_back({256, 8, 4, 8, true, true, true, 2.5f, 0, 256});
    cfgs.push_back({256, 8, 4, 8, true, true, true, 2.5f, 32, 64});   // EP local range
    cfgs.push_back({256, 8, 4, 8, true, false, true, 1.0f, 250, 256});
    cfgs.push_back({60, 4, 3, 16, true, true, true, 1.0f, 0, 60});
    cfgs.push_back({384, 12, 5, 12, true, true, true, 1.5f, 0, 384});
    cfgs.push_back({512, 32, 4, 16, true, true, true, 1.0f, 0, 512});
    cfgs.push_back({510, 17, 3, 16, true, true, true, 1.0f, 0, 510});  // VPL 32, scalar
    cfgs.push_back({504, 9, 4, 8, true, true, true, 1.0f, 0, 504});    // VPL 32, vector
    cfgs.push_back({8, 8, 3, 3, true, true, false, 1.0f, 0, 8});        // groups of one expert
    cfgs.push_back({160, 5, 2, 6, true, true, true, 2.5f, 0, 160});
    // The pre-filter's shapes (top_k <= 2 topk_group, >= 2 experts a group, VPL <= 16).
    cfgs.push_back({160, 5, 2, 4, true, true, true, 1.0f, 0, 160});    // P 4, VPL 8
    cfgs.push_back({384, 12, 5, 10, true, false, true, 1.0f, 0, 384}); // P 2, VPL 16
    cfgs.push_back({60, 4, 3, 6, true, true, true, 1.0f, 0, 60});      // 15 a group: scalar, VPL 2
    cfgs.push_back({512, 32, 4, 8, true, true, true, 1.0f, 0, 512});   // P 1, VPL 16
    cfgs.push_back({96, 3, 2, 3, true, true, false, 1.0f, 0, 96});     // no bias, VPL 4
    cfgs.push_back({64, 32, 31, 2, true, true, true, 1.0f, 0, 64});    // groups of two: falls back
    cfgs.push_back({64, 32, 4, 8, true, true, true, 1.0f, 0, 64});     // groups of two, P 1, VPL 2
    cfgs.push_back({32, 16, 4, 8, true, false, true, 1.0f, 0, 32});    // groups of two, P 2, VPL 1
    cfgs.push_back({64, 8, 8, 6, true, true, true, 1.0f, 0, 64});       // topk_group = n_group
    cfgs.push_back({64, 1, 1, 8, false, true, false, 1.0f, 0, 0});      // empty local range
    cfgs.push_back({512, 1, 1, 32, false, true, false, 1.0f, 100, 300});
    int n = 0;
    for (const auto& c : cfgs) {
      const int layout = n % 3;  // 0 dense, 1 odd stride, 2 misaligned pointer
      const int sp = layout == 1 ? 1 : 0, po = layout == 2 ? 1 : 0, op = n % 2;
      switch (n % 3) {
        case 0: gate_case<__nv_bfloat16>(c, 19, n % 4 == 0 ? 1 : 0, sp, po, op, seed++); break;
        case 1: gate_case<float>(c, 19, n % 4 == 1 ? 1 : 0, sp, po, op, seed++); break;
        default: gate_case<__half>(c, 19, 0, sp, po, op, seed++);
      }
      gate_case<__nv_bfloat16>(c, 9, 1, (n + 1) % 2, 0, 0, seed++);  // heavy ties
      gate_case<float>(c, 9, 2, 0, n % 2, 1, seed++);  // NaN / inf / ±0
      gate_case<float>(c, 9, 3, n % 3, 0, 0, seed++);  // near ties: the exact path
      if (c.sigmoid && c.bias) {
        gate_case<float>(c, 33, 4, 0, 0, 0, seed++);  // near ties of sigmoid + bias
        gate_case<float>(c, 17, 5, 0, 0, 0, seed++);  // a large bias
        gate_case<float>(c, 9, 6, 0, 0, 0, seed++);   // a bias that is not finite
      }
      ++n;
    }
    fprintf(stderr, "gate: %ld configs, %ld failures\n", g_configs, g_fail);
  }
  if (only.empty() || only == "align") {
    struct A { int tokens, k, E, bm, pad, mode; };
    const A as[] = {{0, 4, 8, 16, 0, 0},     {1, 1, 512, 128, 0, 0}, {7, 2, 5, 1, 3, 0},     {100, 8, 64, 16, 0, 2},
                    {333, 6, 60, 64, 2, 0},  {40, 4, 8, 16, 0, 1},   {512, 8, 256, 64, 0, 2}, {4096, 1, 8, 16, 0, 0},
                    {4097, 1, 8, 16, 1, 2},  {600, 8, 64, 64, 0, 2}, {2000, 8, 256, 64, 0, 0}, {1300, 4, 512, 128, 5, 2},
                    {5000, 1, 16, 16, 0, 1}, {700, 6, 60, 1, 0, 2},  {100, 16, 384, 32, 0, 2}};
    for (const A& a : as) align_case(a.tokens, a.k, a.E, a.bm, a.pad, a.mode, seed++);
    fprintf(stderr, "align: %ld configs, %ld failures\n", g_configs, g_fail);
  }
  if (only.empty() || only == "gather") {
    gather_case(2, 37, 6, 16, 8, 24, 0, 0, 0, 0, seed++);
    gather_case(2, 37, 6, 16, 8, 9, 1, 3, 2, 0, seed++);
    gather_case(4, 20, 2, 8, 4, 7, 0, 1, 4, 5, seed++);
    gather_case(1, 11, 3, 5, 16, 13, 2, 0, 1, 20, seed++);
    gather_case(4, 9, 8, 64, 16, 300, 4, 4, 16, 0, seed++);
    gather_case(2, 5, 1, 4, 128, 1, 0, 0, 0, 0, seed++);
    gather_case(1, 3, 2, 8, 4, 4096 + 8, 0, 0, 0, 3, seed++);
    gather_case(2, 13, 3, 8, 16, 24, 0, 0, 0, -3, seed++);   // rows end inside padding
    gather_case(4, 13, 3, 8, 16, 5, 1, 2, 4, -20, seed++);
    fprintf(stderr, "gather: %ld configs, %ld failures\n", g_configs, g_fail);
  }
  if (only.empty() || only == "combine") {
    for (int hidden : {1, 7, 8, 9, 64, 4095, 4096})
      for (int lay = 0; lay < 3; ++lay) {
        const int ep = lay == 1 ? 1 : 0, opd = lay == 1 ? 8 : 0, off = lay == 2 ? 1 : 0;
        const int tokens = hidden >= 4095 ? 2 : 5;
        combine_case<__nv_bfloat16>(tokens, 3, 9, hidden, ep, opd, lay, off, seed++);
        combine_case<__half>(tokens, 8, 12, hidden, opd, ep, 1, off, seed++);
        combine_case<float>(tokens, 1, 4, hidden, ep, opd, 0, off, seed++);
      }
    combine_case<float>(3, 16, 40, 33, 0, 0, 2, 0, seed++);
    fprintf(stderr, "combine: %ld configs, %ld failures\n", g_configs, g_fail);
  }
  return finish("moe_routing");
}
