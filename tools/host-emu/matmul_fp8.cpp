// Emulated runs of both FP8 GEMM kernels: cuda/matmul_fp8_sm80.cu (wc_matmul_fp8_sm80, the
// portable mma.sync path) and cuda/matmul_fp8_sm90.cu (wc_matmul_fp8_sm90: TMA, mbarriers, wgmma,
// warp specialisation, persistent CTAs; shim_sm90.h), with params filled as src/ops/matmul_fp8/
// does (plan_sm80's tile; for sm_90a every tile configuration the launcher builds, tensor maps
// as tma_box / encode_tma describe them, and few CTAs so that each walks several tiles), scale
// strides with 0 for a size-1 dimension, random e4m3 codes and scales, poisoned outputs,
// compared with an f64 GEMM on the dequantized inputs (src/reference/matmul_fp8.rs semantics).
// The same kernels with bf16 operands (in_dtype WC_BF16: unscaled, n and k multiples of 8) on
// sm_80 and in the three bf16 tile configurations of sm_90a, vs an f64 GEMM on the bf16 values.
// Usage: matmul_fp8 [name-filter], e.g. "sm90 bf16 m=17 ", " pair" or "in=bf16".
#include <memory>

#include "harness.h"

extern "C" wc_status wc_matmul_fp8_sm80(const wc_matmul_fp8_params* p, wc_stream stream);
extern "C" wc_status wc_matmul_fp8_sm90(const wc_matmul_fp8_params* p, wc_stream stream);

// Which kernel runs a case: sm_80 with plan_sm80's one tile, or sm_90a with one of the tile
// configurations matmul_fp8_sm90.cu builds (SM90_TILES in src/ops/matmul_fp8/plan.rs), alone or in
// cluster pairs (128-row tiles sharing B by TMA multicast), and `ctas` persistent CTAs (0: one
// per tile or pair; the launcher caps pairs at what cudaOccupancyMaxActiveClusters reports,
// EMU_SMS / 2 here).
// `tma`: the TMA-store epilogue (tma_store = 1; bf16 out, no residual, one GEMM, 128-row tiles).
// `splits`: split-k (k_splits; one GEMM, no pairs, no TMA store), its workspace exactly
// k_splits · m · n floats of random bytes.
struct Path {
  bool sm90;
  int block_m, block_n;
  bool fast;
  int ctas;
  int cluster = 1;
  bool tma = false;
  int splits = 1;
};
static const char* pname(const Path& t) {
  static char b[96];
  char k[16] = "";
  if (t.splits > 1) snprintf(k, sizeof k, " k%d", t.splits);
  if (!t.sm90) {
    snprintf(b, sizeof b, "sm80%s", k);
    return b;
  }
  snprintf(b, sizeof b, "sm90 %dx%d %s%s%s%s ctas=%d", t.block_m, t.block_n, t.fast ? "fast" : "promoted",
           t.cluster > 1 ? " pair" : "", t.tma ? " tma-store" : "", k, t.ctas);
  return b;
}

// tma_box + encode_tma (src/ops/matmul_fp8/): uint8 {k bytes, rows}, the row stride in bytes,
// boxes of {128, box_rows} bytes, 128-byte swizzle (bf16 operands: k · 2 and lda · 2 bytes).
static bool encode_tma(wc_tensor_map* map, const void* ptr, int64_t rows, int64_t k_bytes, int64_t row_stride,
                       int box_rows) {
  const uint64_t dims[2] = {static_cast<uint64_t>(k_bytes), static_cast<uint64_t>(rows)};
  const uint32_t box[2] = {128, static_cast<uint32_t>(box_rows)};
  return emu::sm90::encode_tensor_map_2d(map, ptr, dims, static_cast<uint64_t>(row_stride), box, 128);
}

// ------------------------------------------------------------------ scales
// ScaleGranularity (src/ops/quant.rs): A per tensor / row / 1×128 group, B per tensor / row /
// 128×128 block.
enum Gran { TENSOR, ROW, GROUP, BLOCK };
static const char* gname(Gran g) {
  static const char* n[] = {"tensor", "row", "group128", "block128"};
  return n[g];
}

// scaling_mode (src/ops/matmul_fp8/): whether the pair is block-scaled (the pairs tested are
// the supported ones).
static bool block_scaled(Gran a, Gran b) { return !((a == TENSOR || a == ROW) && (b == TENSOR || b == ROW)); }

// One operand's scale view: granularity.scale_shape(rows, k), stored row-major or transposed
// (column-major: DeepGEMM keeps A's group scales MN-major), values 2^[-6, 6) · [1, 2).
struct Scales {
  Gran g;
  int64_t shape[2], stride[2];  // the storage layout
  Buf* buf;
  Scales(Gran g_, int64_t rows, int64_t k, bool transposed, Rng& r) : g(g_) {
    shape[0] = g == TENSOR ? 1 : g == BLOCK ? (rows + 127) / 128 : rows;
    shape[1] = g == GROUP || g == BLOCK ? k / 128 : 1;
    stride[0] = transposed ? 1 : shape[1];
    stride[1] = transposed ? shape[0] : 1;
    const int64_t count = shape[0] * shape[1];
    buf = new Buf(count * sizeof(float), 0, r);
    for (int64_t i = 0; i < count; ++i) {
      const float v = static_cast<float>(std::ldexp(r.uni(1.0, 2.0), r.below(12) - 6));
      buf->set(&v, sizeof v, i * sizeof v);
    }
  }
  ~Scales() { delete buf; }
  // scale_strides (src/ops/quant.rs): a dimension of size 1 broadcasts (stride 0).
  int64_t c_stride(int d) const { return shape[d] > 1 ? stride[d] : 0; }
  // The scale of element (row, l) of the operand, from the element's block coordinates.
  double at(int64_t row, int64_t l) const {
    const int64_t i = g == TENSOR ? 0 : g == BLOCK ? row / 128 : row;
    const int64_t j = g == GROUP || g == BLOCK ? l / 128 : 0;
    return buf->as<float>()[i * stride[0] + j * stride[1]];
  }
};

// Independent e4m3fn decoder (bias 7, 3 mantissa bits, subnormals; 0x7F / 0xFF are NaN and
// never generated here: the kernel's integer dequantization maps them to 480 · 2^-8).
static double e4m3(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return s ? -v : v;
}

// bf16 from its bits (the upper half of an f32), and a random bf16 of either sign in
// 2^[-4, 4) · [0.5, 1] (an exact zero one time in 16), rounded to nearest even.
static double bf16_bits(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint16_t random_bf16(Rng& r) {
  if (r.below(16) == 0) return r.below(2) ? 0x8000 : 0;
  const float f = static_cast<float>(std::ldexp(r.uni(-1.0, 1.0), r.below(8) - 4));
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u += 0x7FFF + ((u >> 16) & 1);  // round to nearest even (no NaN / overflow here)
  return static_cast<uint16_t>(u >> 16);
}

// ------------------------------------------------------------------ one GEMM
struct Case {
  int m, n, k;
  Gran ga, gb;
  bool bias, residual;
  int pad = 0;              // extra row-stride: 16·pad bytes of A / B, pad 16-byte units of D / R
  bool scale_t = false;     // scales stored transposed
  // Grouped (MoE): num_groups + 1 row offsets (B then has num_groups · n rows); empty: one GEMM.
  std::vector<int32_t> offsets = {};
  // bf16 operands (in_dtype WC_BF16): no scales (ga / gb unused), n and k multiples of 8; pad
  // then counts 8 elements of A, 16 of B (16 and 32 bytes), V and 2V of D / R.
  bool bf16 = false;
};
static Case bf16_case(int m, int n, int k, bool bias, bool residual, int pad, std::vector<int32_t> offsets = {}) {
  Case c{m, n, k, TENSOR, TENSOR, bias, residual, pad, false, std::move(offsets)};
  c.bf16 = true;
  return c;
}

// The rows [lo, hi) of each group as the header specifies them: offsets clamped into [0, m] and
// made non-decreasing, lo_g = max(offsets[g], hi_(g-1)), hi_g = max(lo_g, offsets[g + 1]).
static std::vector<int> group_of_rows(const Case& c) {
  std::vector<int> g(c.m, c.offsets.empty() ? 0 : -1);
  int64_t hi = 0;
  for (size_t i = 0; i + 1 < c.offsets.size(); ++i) {
    const int64_t lo = std::max<int64_t>(hi, std::min<int64_t>(std::max(c.offsets[i], 0), c.m));
    hi = std::max<int64_t>(lo, std::min<int64_t>(c.offsets[i + 1], c.m));
    for (int64_t r = lo; r < hi; ++r) g[r] = static_cast<int>(i);
  }
  return g;
}

// Worst f32 |err| / (Σ|a·b| + |bias| + |res|) and |err| / bound; worst bf16 (|err| - f32 bound) in ulps.
// [0]: e4m3 operands, [1]: bf16 operands.
static double max_rel32[2] = {}, max_tol32[2] = {}, max_ulp16[2] = {};

template <typename O>
static void run_case(const Case& c, const Path& path, uint64_t seed) {
  const bool b16 = c.bf16;
  if (b16)
    ctx("%s %s in=bf16 m=%d n=%d k=%d%s%s pad=%d groups=%d", pname(path), tname<O>(), c.m, c.n, c.k,
        c.bias ? " bias" : "", c.residual ? " residual" : "", c.pad,
        c.offsets.empty() ? 1 : static_cast<int>(c.offsets.size()) - 1);
  else
    ctx("%s %s m=%d n=%d k=%d a:%s b:%s%s%s pad=%d%s groups=%d", pname(path), tname<O>(), c.m, c.n, c.k, gname(c.ga),
        gname(c.gb), c.bias ? " bias" : "", c.residual ? " residual" : "", c.pad, c.scale_t ? " scales-transposed" : "",
        c.offsets.empty() ? 1 : static_cast<int>(c.offsets.size()) - 1);
  Rng r(seed);
  const int64_t m = c.m, n = c.n, k = c.k, E = sizeof(O), V = 16 / E, EI = b16 ? 2 : 1;  // EI: operand bytes
  const int64_t groups = c.offsets.empty() ? 1 : static_cast<int64_t>(c.offsets.size()) - 1, nb = groups * n;
  const std::vector<int> group = group_of_rows(c);
  // lda / ldb in elements (16 · pad and 32 · pad bytes either way), ldd / ldr in output elements.
  const int64_t lda = k + 16 / EI * c.pad, ldb = k + 32 / EI * c.pad, ldd = n + V * c.pad, ldr = n + 2 * V * c.pad;
  auto codes = [&](int64_t rows, int64_t ld) {
    Buf* b = new Buf(((rows - 1) * ld + k), 0, r);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t l = 0; l < k; ++l) {
        uint8_t v = static_cast<uint8_t>(r.next());
        if ((v & 0x7F) == 0x7F) v ^= 1;  // not NaN
        b->set(&v, 1, i * ld + l);
      }
    return b;
  };
  auto bf16s = [&](int64_t rows, int64_t ld) {  // row gaps keep their random bytes (any bf16, NaN included)
    Buf* b = new Buf(((rows - 1) * ld + k) * 2, 0, r);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t l = 0; l < k; ++l) {
        const uint16_t v = random_bf16(r);
        b->set(&v, 2, (i * ld + l) * 2);
      }
    return b;
  };
  Buf* a = b16 ? bf16s(m, lda) : codes(m, lda);
  Buf* b = b16 ? bf16s(nb, ldb) : codes(nb, ldb);
  std::unique_ptr<Scales> sa, sb;  // e4m3 only
  if (!b16) {
    sa = std::make_unique<Scales>(c.ga, m, k, c.scale_t, r);
    sb = std::make_unique<Scales>(c.gb, nb, k, c.scale_t, r);
  }
  // Dequantized operands, then the f64 GEMM and Σ|a·b| (the accumulation error's scale).
  std::vector<double> da(m * k), db(nb * k), want(m * n), mag(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l)
      da[i * k + l] = b16 ? bf16_bits(a->as<uint16_t>()[i * lda + l]) : e4m3(a->as<uint8_t>()[i * lda + l]) * sa->at(i, l);
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t l = 0; l < k; ++l)
      db[j * k + l] = b16 ? bf16_bits(b->as<uint16_t>()[j * ldb + l]) : e4m3(b->as<uint8_t>()[j * ldb + l]) * sb->at(j, l);
  double typical = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n && group[i] >= 0; ++j) {
      const int64_t jb = group[i] * n + j;  // B's row
      double s = 0, g = 0;
      for (int64_t l = 0; l < k; ++l) {
        const double p = da[i * k + l] * db[jb * k + l];
        s += p;
        g += std::fabs(p);
      }
      want[i * n + j] = s;
      mag[i * n + j] = g;
      typical = std::max(typical, std::fabs(s));
    }
  // Bias and residual of the output's size, in its dtype.
  auto vals = [&](int64_t rows, int64_t cols, int64_t ld) {
    Buf* v = new Buf(((rows - 1) * ld + cols) * E, 0, r);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const O x = fromf<O>(static_cast<float>(r.uni(-1, 1) * typical));
        v->set(&x, E, (i * ld + j) * E);
      }
    return v;
  };
  Buf* bias = c.bias ? vals(1, nb, nb) : nullptr;
  Buf* res = c.residual ? vals(m, n, ldr) : nullptr;
  Buf* offsets = nullptr;
  if (!c.offsets.empty()) {
    offsets = new Buf(c.offsets.size() * sizeof(int32_t), 0, r);
    offsets->set(c.offsets.data(), c.offsets.size() * sizeof(int32_t), 0);
  }
  Buf d(((m - 1) * ldd + n) * E, 0, r);  // random bytes: every unwritten element is noticed

  // As matmul_fp8 (src/ops/matmul_fp8/) fills them.
  wc_matmul_fp8_params p{};
  p.a = a->p();
  p.b = b->p();
  p.a_scale = b16 ? nullptr : sa->buf->as<float>();  // bf16: may be NULL
  p.b_scale = b16 ? nullptr : sb->buf->as<float>();
  p.bias = bias ? bias->p() : nullptr;
  p.residual = res ? res->p() : nullptr;
  p.d = d.p();
  p.group_offsets = offsets ? offsets->as<int32_t>() : nullptr;
  p.num_groups = offsets ? groups : 0;
  p.m = m;
  p.n = n;
  p.k = k;
  p.lda = lda;
  p.ldb = ldb;
  p.ldr = res ? ldr : 0;
  p.ldd = ldd;
  if (!b16) {
    p.a_scale_stride_m = sa->c_stride(0);
    p.a_scale_stride_k = sa->c_stride(1);
    p.b_scale_stride_n = sb->c_stride(0);
    p.b_scale_stride_k = sb->c_stride(1);
  }
  // bf16: block_scaled and fast_accum are ignored; every other seed sets them as e4m3's
  // promoted / block-scaled modes would (with NULL scales: any use of them crashes).
  p.block_scaled = b16 ? static_cast<int32_t>(seed & 1) : block_scaled(c.ga, c.gb);
  p.fast_accum = b16 ? !(seed & 1) : path.fast;
  p.block_m = path.block_m;  // plan_sm80: SM80_TILE; plan_sm90: one of SM90_TILES
  p.block_n = path.block_n;
  p.group_m = 8 / path.cluster;  // GROUP_M / cluster_m
  p.cluster_m = path.cluster;
  // MatmulFp8Problem::m_tiles: the bound over every split of the rows into the groups.
  const int64_t rows = int64_t{path.block_m} * path.cluster,
                units = ((m + rows - 1) / rows + (offsets ? std::min(groups, m) - 1 : 0)) *
                        ((n + path.block_n - 1) / path.block_n);  // bf16: a partial last n-tile
  const int64_t all = units * path.cluster * path.splits;  // split-k: each tile's k-slices are units
  p.num_ctas = static_cast<int32_t>(path.ctas > 0 ? std::min<int64_t>(path.ctas, all) : all);
  p.out_dtype = tag<O>();
  p.in_dtype = b16 ? WC_BF16 : WC_E4M3;
  p.tma_store = path.tma;
  std::unique_ptr<Buf> ws;  // SPLIT_K_WORKSPACE_FLOATS in the crate; here exactly what the split needs
  if (path.splits > 1) {
    ws = std::make_unique<Buf>(static_cast<size_t>(path.splits * m * n) * 4, 0, r);
    p.k_splits = path.splits;
    p.workspace = ws->as<float>();
    p.workspace_floats = path.splits * m * n;
  }
  // encode_tma of D (src/ops/matmul_fp8/): {n · 2 bytes, m rows}, boxes of 64 rows; one row's
  // stride is unused (any multiple of 16 covering it).
  const bool d_map = !path.tma || encode_tma(&p.tma_d, p.d, m, n * 2, m == 1 ? (n * 2 + 15) / 16 * 16 : ldd * 2, 64);
  wc_status st = WC_OK;
  if (!path.sm90) {
    st = wc_matmul_fp8_sm80(&p, nullptr);
  } else if (!encode_tma(&p.tma_a, p.a, m, k * EI, lda * EI, path.block_m) ||
             !encode_tma(&p.tma_b, p.b, nb, k * EI, ldb * EI, path.block_n / path.cluster) || !d_map) {
    fail("tensor map refused");
    st = WC_ERR_INVALID_ARG;
  } else {
    st = wc_matmul_fp8_sm90(&p, nullptr);
  }
  if (st != WC_OK) fail("status %d", st);

  // e4m3, f32: one rounding per mma.sync (16 products summed exactly by the shim) and per
  // promotion, the scale products and the bias / residual additions. bf16 operands: the products
  // are exact in f32 and the k - 1 additions f32 ones, each (truncated or rounded, in any order)
  // off by at most 2^-23 of a partial sum (<= Σ|a·b|), then the bias and residual additions,
  // each off by 2^-23 of |acc| + |bias| + |res| at most. bf16 out: one bf16 ulp more.
  const O* out = d.as<O>();
  const double u = std::ldexp(1.0, -24);
  const int kind = b16 ? 1 : 0;
  for (int64_t i = 0; i < m && st == WC_OK; ++i) {
    for (int64_t j = 0; j < n && group[i] < 0; ++j)  // in no group: untouched
      for (int64_t e = 0; e < E; ++e)
        if (d.base[(i * ldd + j) * E + e] != d.before((i * ldd + j) * E + e))
          fail("(%lld, %lld) written: the row is in no group", (long long)i, (long long)j);
    for (int64_t j = 0; j < n && group[i] >= 0; ++j) {
      const double bv = bias ? tof(bias->as<O>()[group[i] * n + j]) : 0.0, rv = res ? tof(res->as<O>()[i * ldr + j]) : 0.0;
      const double ref = want[i * n + j] + bv + rv;
      const double scale = mag[i * n + j] + std::fabs(bv) + std::fabs(rv);
      const double tol32 =
          b16 ? 2 * u * (k * (1 + 2 * u * k) * mag[i * n + j] + ((bias != nullptr) + (res != nullptr)) * (1.001 * scale))
              : u * ((k / 16 + k / 32 + 8) * mag[i * n + j] + 4 * (std::fabs(bv) + std::fabs(rv)));
      const double got = tof(out[i * ldd + j]);
      const double err = std::fabs(got - ref);
      ++g_checks;
      if (sizeof(O) == 4) {
        if (scale > 0) max_rel32[kind] = std::max(max_rel32[kind], err / scale);
        if (tol32 > 0) max_tol32[kind] = std::max(max_tol32[kind], err / tol32);
        if (!(err <= tol32)) fail("(%lld, %lld): got %.9g want %.9g (|err| %.3g > %.3g)", (long long)i, (long long)j, got, ref, err, tol32);
      } else {
        const double ulp16 = ulp<__nv_bfloat16>(ref);
        max_ulp16[kind] = std::max(max_ulp16[kind], (err - tol32) / ulp16);
        if (!(err <= ulp16 + tol32)) fail("(%lld, %lld): got %.9g want %.9g (|err| %.3g > 1 bf16 ulp %.3g)", (long long)i, (long long)j, got, ref, err, ulp16);
      }
    }
    for (int64_t j = n; j < ldd && i + 1 < m; ++j)
      for (int64_t e = 0; e < E; ++e)
        if (d.base[(i * ldd + j) * E + e] != d.before((i * ldd + j) * E + e)) fail("row gap written at (%lld, %lld)", (long long)i, (long long)j);
  }
  for (Buf* x : {a, b, sa ? sa->buf : nullptr, sb ? sb->buf : nullptr, bias, res, offsets})
    if (x && memcmp(x->base, x->init.data(), x->init.size()) != 0) fail("an input was written");
  delete offsets;
  delete a;
  delete b;
  delete bias;
  delete res;
}

// The launchers' own refusals (they check what the planner sends) and m = 0: nothing launched.
static void refusals(bool sm90) {
  ctx("%s refusals", sm90 ? "sm90" : "sm80");
  auto kernel = sm90 ? wc_matmul_fp8_sm90 : wc_matmul_fp8_sm80;
  wc_matmul_fp8_params p{};
  p.m = 128;
  p.n = 256;
  p.k = 256;
  p.block_m = 128;
  p.block_n = 128;
  p.group_m = 8;
  p.out_dtype = WC_BF16;
  p.in_dtype = WC_E4M3;
  const long launches = emu::launches;
  auto expect = [&](const char* what, wc_status want) {
    ++g_checks;
    const wc_status got = kernel(&p, nullptr);
    if (got != want) fail("%s: status %d, want %d", what, got, want);
  };
  p.k = 200;
  expect("k % 128", WC_ERR_INVALID_ARG);
  p.k = 256;
  p.n = 192;
  expect("n % 128", WC_ERR_INVALID_ARG);
  p.n = 256;
  if (sm90) {
    p.block_m = 96;
    expect("block_m 96", WC_ERR_UNSUPPORTED);
    p.block_m = 64;
    p.block_n = 256;
    expect("64x256 (not built)", WC_ERR_UNSUPPORTED);
    p.block_m = 128;
    p.block_scaled = 1;
    expect("block-scaled 128x256 (not built)", WC_ERR_UNSUPPORTED);
    p.block_n = 128;
    p.block_scaled = 0;
    p.cluster_m = 3;
    expect("cluster 3", WC_ERR_INVALID_ARG);
    p.cluster_m = 2;
    p.block_m = 64;
    expect("pair of 64-row tiles (not built)", WC_ERR_UNSUPPORTED);
    p.block_m = 128;
    p.cluster_m = 0;
    // The TMA-store epilogue: 128-row e4m3 tiles, bf16 out, no residual, not grouped.
    p.tma_store = 1;
    p.block_m = 64;
    expect("tma_store with 64-row tiles", WC_ERR_UNSUPPORTED);
    p.block_m = 128;
    p.out_dtype = WC_F32;
    expect("tma_store with f32 out", WC_ERR_UNSUPPORTED);
    p.out_dtype = WC_BF16;
    p.residual = &p;  // any non-null pointer: refused before any launch
    expect("tma_store with a residual", WC_ERR_UNSUPPORTED);
    p.residual = nullptr;
    int32_t one_group[2] = {0, 128};
    p.group_offsets = one_group;
    p.num_groups = 1;
    expect("tma_store grouped", WC_ERR_UNSUPPORTED);
    p.group_offsets = nullptr;
    p.num_groups = 0;
    p.tma_store = 0;
  }
  int32_t offsets[2] = {0, 128};
  p.group_offsets = offsets;
  p.num_groups = 0;
  expect("grouped with no groups", WC_ERR_INVALID_ARG);
  p.num_groups = INT32_MAX / p.n + 1;
  expect("groups · n past int32", WC_ERR_INVALID_ARG);
  p.num_groups = int64_t{1} << 62;  // the product past int64 too: refused without forming it
  expect("groups · n past int64", WC_ERR_INVALID_ARG);
  p.num_groups = 1;
  if (sm90) {
    p.cluster_m = 2;
    expect("grouped pairs (a pair shares one B tile)", WC_ERR_UNSUPPORTED);
    p.cluster_m = 0;
  }
  p.group_offsets = nullptr;
  if (!sm90) {
    p.block_m = 64;
    expect("block_m 64", WC_ERR_INVALID_ARG);
  }
  p.block_m = 128;
  p.out_dtype = WC_F16;
  expect("f16 out", WC_ERR_UNSUPPORTED);
  p.out_dtype = WC_BF16;
  for (wc_dtype in : {WC_F32, WC_F16}) {  // neither e4m3 nor bf16 (WC_F32: a zeroed field)
    p.in_dtype = in;
    expect("in_dtype", WC_ERR_UNSUPPORTED);
  }
  p.in_dtype = WC_E4M3;
  p.m = 0;
  expect("m = 0", WC_OK);
  if (emu::launches != launches) fail("a refused call launched");
}

// bf16 operands: the refusals on otherwise valid params (real buffers and tensor maps, a
// poisoned D that must stay as it was, nothing launched), then those params accepted.
static void refusals_bf16(bool sm90) {
  ctx("%s bf16 refusals", sm90 ? "sm90" : "sm80");
  auto kernel = sm90 ? wc_matmul_fp8_sm90 : wc_matmul_fp8_sm80;
  Rng r(977);
  const int64_t m = 16, n = 64, k = 64;  // the buffers hold 16 rows and 72 columns / k (the n, k refusals)
  Buf a(m * 72 * 2, 0, r), b(72 * 72 * 2, 0, r), d(m * 72 * 2, 0, r), off(3 * sizeof(int32_t), 0, r);
  const int32_t offsets[3] = {0, 7, 16};
  off.set(offsets, sizeof offsets, 0);
  for (int64_t i = 0; i < m * 72; ++i) {
    const uint16_t v = random_bf16(r);
    a.set(&v, 2, i * 2);
  }
  for (int64_t i = 0; i < 72 * 72; ++i) {
    const uint16_t v = random_bf16(r);
    b.set(&v, 2, i * 2);
  }
  wc_matmul_fp8_params p{};
  p.a = a.p();
  p.b = b.p();
  p.d = d.p();
  p.m = m;
  p.n = n;
  p.k = k;
  p.lda = p.ldb = 72;
  p.ldd = 72;
  p.block_m = 128;
  p.block_n = 128;
  p.group_m = 8;
  p.num_ctas = 1;
  p.out_dtype = WC_BF16;
  p.in_dtype = WC_BF16;
  if (sm90 && (!encode_tma(&p.tma_a, p.a, m, k * 2, 72 * 2, 128) || !encode_tma(&p.tma_b, p.b, n, k * 2, 72 * 2, 128)))
    fail("tensor map refused");
  const long launches = emu::launches;
  auto expect = [&](const char* what, wc_status want) {
    ++g_checks;
    const wc_status got = kernel(&p, nullptr);
    if (got != want) fail("%s: status %d, want %d", what, got, want);
  };
  p.n = 68;
  expect("bf16 n % 8", WC_ERR_INVALID_ARG);
  p.n = 60;
  expect("bf16 n % 8 (< 64)", WC_ERR_INVALID_ARG);
  p.n = 64;
  p.k = 68;
  expect("bf16 k % 8", WC_ERR_INVALID_ARG);
  p.k = 4;
  expect("bf16 k % 8 (< 8)", WC_ERR_INVALID_ARG);
  p.k = 64;
  p.in_dtype = WC_F16;
  expect("f16 operands", WC_ERR_UNSUPPORTED);
  p.in_dtype = WC_F32;
  expect("f32 operands", WC_ERR_UNSUPPORTED);
  p.in_dtype = WC_BF16;
  p.out_dtype = WC_F16;
  expect("bf16 in, f16 out", WC_ERR_UNSUPPORTED);
  p.out_dtype = WC_BF16;
  if (sm90) {
    p.cluster_m = 2;
    expect("bf16 pair 128x128", WC_ERR_UNSUPPORTED);
    p.block_n = 256;
    expect("bf16 pair 128x256", WC_ERR_UNSUPPORTED);
    p.group_offsets = off.as<int32_t>();
    p.num_groups = 2;
    p.n = 32;
    expect("bf16 grouped pair", WC_ERR_UNSUPPORTED);
    p.group_offsets = nullptr;
    p.num_groups = 0;
    p.n = 64;
    p.block_n = 128;
    p.cluster_m = 0;
    p.block_m = 64;
    p.block_n = 256;
    expect("bf16 64x256 (not built)", WC_ERR_UNSUPPORTED);
    p.block_m = 96;
    p.block_n = 128;
    expect("bf16 block_m 96", WC_ERR_UNSUPPORTED);
    p.block_m = 128;
    p.block_n = 64;
    expect("bf16 block_n 64", WC_ERR_UNSUPPORTED);
    p.block_n = 128;
  } else {
    p.block_n = 64;
    expect("bf16 block_n 64", WC_ERR_INVALID_ARG);
    p.block_n = 128;
  }
  p.group_offsets = off.as<int32_t>();
  p.num_groups = 0;
  expect("bf16 grouped with no groups", WC_ERR_INVALID_ARG);
  p.group_offsets = nullptr;
  if (emu::launches != launches) fail("a refused bf16 call launched");
  if (memcmp(d.base, d.init.data(), d.init.size()) != 0) fail("a refused bf16 call wrote D");
  // The same params, accepted (16 × 64 of D written; only the columns 64..71 keep their bytes).
  ++g_checks;
  if (const wc_status st = kernel(&p, nullptr); st != WC_OK) fail("the valid bf16 params: status %d", st);
  if (emu::launches != launches + 1) fail("the valid bf16 params: %ld launches", emu::launches - launches);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < 72; ++j) {
      const bool changed = memcmp(d.base + (i * 72 + j) * 2, d.init.data() + (i * 72 + j) * 2, 2) != 0;
      if (j >= n && changed) fail("the valid bf16 params: (%lld, %lld) past n written", (long long)i, (long long)j);
    }
}

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  // Every supported scale pair (scaling_mode), partial m tiles, one and several k-steps (the
  // two-stage pipeline wraps at k = 384), two n-tiles, padded strides, transposed scales.
  std::vector<Case> cases = {
      {17, 128, 128, TENSOR, TENSOR, false, false},
      {130, 256, 384, ROW, ROW, true, true, 1},
      {1, 128, 256, ROW, TENSOR, false, true},
      {17, 256, 256, TENSOR, ROW, true, false, 0, true},
      {130, 256, 384, GROUP, BLOCK, true, true, 1},
      {17, 128, 384, GROUP, BLOCK, false, false, 0, true},
      {1, 256, 128, GROUP, BLOCK, true, false},
      {130, 128, 256, TENSOR, BLOCK, false, true, 2},
      {17, 256, 128, ROW, BLOCK, true, true, 0, true},
      {130, 128, 256, GROUP, TENSOR, false, false, 1, true},
      {1, 128, 384, GROUP, TENSOR, true, true},
      // Two tile groups (9 m-tiles > group_m = 8), the last one short.
      {9 * 128 + 5, 256, 128, ROW, BLOCK, true, false},
  };
  // sm_90a: long k (the stage ring wraps inside a tile) and CTAs walking many tiles.
  cases.push_back({64, 256, 1280, ROW, ROW, true, false, 1});
  cases.push_back({200, 256, 1152, GROUP, BLOCK, false, true, 0, true});
  // Pairs: an odd m-tile count (the last pair's second CTA has no rows), several pairs per CTA.
  cases.push_back({300, 256, 512, ROW, ROW, true, false});
  cases.push_back({300, 256, 640, GROUP, BLOCK, false, true, 1});
  // 160-column tiles at n = 640 start 0, 32, 64 and 96 columns into one of B's 128-row scale
  // blocks: every split between the two blocks a tile spans.
  cases.push_back({130, 640, 384, ROW, BLOCK, true, false, 1});
  // Grouped (MoE experts): empty groups, a group of one row, one of exactly 64 rows, one across
  // tiles; rows before the first group and after the last; offsets out of range and out of
  // order (clamped); per-group B rows, block scales and bias.
  cases.push_back({200, 256, 384, GROUP, BLOCK, true, true, 1, false, {0, 0, 1, 65, 65, 130, 190, 200}});
  cases.push_back({150, 128, 256, ROW, ROW, true, false, 0, true, {5, 40, 40, 140}});
  cases.push_back({70, 256, 128, TENSOR, BLOCK, false, true, 0, false, {3, -7, 30, 20, 500}});
  cases.push_back({9, 128, 256, GROUP, TENSOR, true, true, 2, true, {0, 2, 3, 3, 4, 7, 9}});
  // bf16 operands (m, n, k, bias, residual, pad[, offsets]): n and k multiples of 8 only: n 8,
  // 72, 136, 200, 264 (partial last n-tiles; the columns past n are computed, never stored),
  // k 8, 40, 72, 200 (one zero-filled stage tail) and 1000 (16 stages: the rings wrap), m tails,
  // padded strides up to 7 · 16 bytes (a D row gap wider than some tiles' overhang).
  cases.push_back(bf16_case(17, 8, 8, false, false, 0));
  cases.push_back(bf16_case(130, 72, 40, true, true, 1));
  cases.push_back(bf16_case(64, 200, 72, true, false, 3));
  cases.push_back(bf16_case(1, 264, 200, false, true, 0));
  cases.push_back(bf16_case(70, 128, 1000, true, true, 1));
  cases.push_back(bf16_case(129, 136, 64, true, true, 7));
  cases.push_back(bf16_case(300, 264, 136, false, true, 2));  // 9 to 15 tiles: each CTA walks several
  // Grouped bf16: rows before the first group and after the last, empty groups, a group of
  // one row and one of exactly 64, groups across tiles; offsets out of range and out of order;
  // a partial n-tile's columns past n come from the next group's B rows (or zeros past the last).
  cases.push_back(bf16_case(200, 72, 104, true, true, 1, {3, 3, 4, 68, 68, 130, 190, 197}));
  cases.push_back(bf16_case(150, 200, 72, true, false, 0, {5, 40, 40, 140}));
  cases.push_back(bf16_case(70, 8, 40, false, true, 2, {3, -7, 30, 20, 500}));
  cases.push_back(bf16_case(9, 264, 200, true, true, 2, {0, 2, 3, 3, 4, 7, 9}));
  cases.push_back(bf16_case(40, 136, 1000, true, true, 0, {0, 10, 10, 11, 37}));
  uint64_t seed = 1;
  for (const Case& c : cases) {
    // sm_80 once; sm_90a in every configuration its launcher builds for the case's mode
    // (SM90_TILES), with 1, 2 or 3 persistent CTAs or one per tile.
    std::vector<Path> paths = {{false, 128, 128, false, 0}};
    if (c.bf16) {  // the three bf16 configurations (one accumulator, no pairs)
      const int v = static_cast<int>(c.m + c.n / 8 + c.k / 8);
      auto ctas = [&](int i) { return (v + i) % 4 == 3 ? 0 : 1 + (v + i) % 3; };
      paths.push_back({true, 128, 256, true, ctas(0)});
      paths.push_back({true, 128, 128, true, ctas(1)});
      paths.push_back({true, 64, 128, true, ctas(2)});
      // Split-k of one GEMM: 2–4 slices of the 64-k steps (the last one zero-filled past k).
      const int steps = (c.k + 63) / 64;
      if (c.offsets.empty() && steps >= 2) {
        paths.push_back({false, 128, 128, false, 0, 1, false, std::min(steps, 2 + (v + 2) % 3)});
        paths.push_back({true, 64, 128, true, ctas(3), 1, false, std::min(steps, 2 + v % 3)});
        paths.push_back({true, 128, 256, true, ctas(4), 1, false, std::min(steps, 2 + (v + 1) % 3)});
      }
    } else if (c.m * c.n * static_cast<int64_t>(c.k) < 1 << 27) {  // the 1157-row case stays sm_80 only (time)
      const bool blk = block_scaled(c.ga, c.gb);
      const int v = static_cast<int>(paths.size() + c.m + c.k / 128);
      auto ctas = [&](int i) { return (v + i) % 4 == 3 ? 0 : 1 + (v + i) % 3; };
      auto pair_ctas = [&](int i) { return (v + i) % 3 == 2 ? 0 : 2 + 2 * ((v + i) % 3); };
      // 256- and 192-column tiles where they do not divide n: the last n-tile's columns past n
      // multiply zeros (or the next group's B rows) and are never stored.
      if (!blk) paths.push_back({true, 128, 256, true, ctas(0)});
      if (!blk) paths.push_back({true, 128, 128, true, ctas(1)});
      if (!blk) paths.push_back({true, 64, 128, true, ctas(2)});
      paths.push_back({true, 128, 128, false, ctas(3)});
      if (!blk) paths.push_back({true, 128, 192, false, ctas(12)});
      paths.push_back({true, 128, 160, false, ctas(15)});
      paths.push_back({true, 64, 128, false, ctas(4)});
      if (c.offsets.empty()) {  // grouped GEMMs have no pairs
        if (!blk && c.n % 256 == 0) paths.push_back({true, 128, 256, true, pair_ctas(5), 2});
        if (!blk) paths.push_back({true, 128, 128, true, pair_ctas(7), 2});
        paths.push_back({true, 128, 128, false, pair_ctas(6), 2});
        if (!blk) paths.push_back({true, 128, 192, false, pair_ctas(13), 2});
        paths.push_back({true, 128, 160, false, pair_ctas(16), 2});
      }
      // Split-k (one GEMM; 2–4 slices, fewer than the k-steps or all of them; a CTA walks
      // several (tile, slice) units, its ring wrapping across them): every mode's 64×128 and
      // 128×128 tiles, the 160-column block-scaled one (its scale-block straddle), fast 128×256.
      const int steps = c.k / 128;
      auto sp = [&](int i) { return std::min(steps, 2 + (v + i) % 3); };
      if (c.offsets.empty() && steps >= 2) {
        paths.push_back({false, 128, 128, false, 0, 1, false, sp(5)});
        paths.push_back({true, 64, 128, false, ctas(17), 1, false, sp(0)});
        paths.push_back({true, 128, 128, false, ctas(18), 1, false, sp(1)});
        if (blk) paths.push_back({true, 128, 160, false, ctas(19), 1, false, sp(2)});
        if (!blk) paths.push_back({true, 64, 128, true, ctas(20), 1, false, sp(3)});
        if (!blk) paths.push_back({true, 128, 256, true, ctas(21), 1, false, sp(4)});
      }
      if (c.offsets.empty() && !c.residual) {  // the TMA-store epilogue (bf16 out only, below)
        if (!blk && c.n % 256 == 0) paths.push_back({true, 128, 256, true, ctas(8), 1, true});
        if (!blk) paths.push_back({true, 128, 128, true, pair_ctas(9), 2, true});
        paths.push_back({true, 128, 128, false, ctas(10), 1, true});
        paths.push_back({true, 128, 128, false, pair_ctas(11), 2, true});
        if (!blk) paths.push_back({true, 128, 192, false, pair_ctas(14), 2, true});
      }
    }
    for (const Path& path : paths)
      for (int out = 0; out < 2; ++out) {
        ++seed;
        if (path.tma && !out) continue;  // TMA store: bf16 out
        char name[96];
        snprintf(name, sizeof name, "%s %s %sm=%d %s", pname(path), out ? "bf16" : "f32", c.bf16 ? "in=bf16 " : "",
                 c.m, c.offsets.empty() ? "" : "grouped ");
        if (filter && !strstr(name, filter)) continue;
        if (out) run_case<__nv_bfloat16>(c, path, seed);
        else run_case<float>(c, path, seed);
      }
  }
  refusals(false);
  refusals(true);
  refusals_bf16(false);
  refusals_bf16(true);
  for (int kind = 0; kind < 2; ++kind)
    printf("matmul_fp8: %s operands: f32 max |err| / (Σ|a·b| + |bias| + |res|) %.3g (%.3g of the bound), bf16 max "
           "|err| - f32 bound %.3g ulp\n", kind ? "bf16" : "e4m3", max_rel32[kind], max_tol32[kind], max_ulp16[kind]);
  printf("matmul_fp8: %ld launches, max dynamic smem %zu B\n", emu::launches, emu::max_smem_attr());
  return finish("matmul_fp8");
}
