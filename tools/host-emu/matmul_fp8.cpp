// Emulated runs of both FP8 GEMM kernels: cuda/matmul_fp8_sm80.cu (wc_matmul_fp8_sm80, the
// portable mma.sync path) and cuda/matmul_fp8_sm90.cu (wc_matmul_fp8_sm90: TMA, mbarriers, wgmma,
// warp specialisation, persistent CTAs; shim_sm90.h), with params filled as src/ops/matmul_fp8/
// does (plan_sm80's tile; for sm_90a every tile configuration the launcher builds, tensor maps
// as tma_box / encode_tma describe them, and few CTAs so that each walks several tiles), scale
// strides with 0 for a size-1 dimension, random e4m3 codes and scales, poisoned outputs,
// compared with an f64 GEMM on the dequantized inputs (src/reference/matmul_fp8.rs semantics).
// Usage: matmul_fp8 [name-filter], e.g. "sm90 bf16 m=17 " or " pair".
#include "harness.h"

extern "C" wc_status wc_matmul_fp8_sm80(const wc_matmul_fp8_params* p, wc_stream stream);
extern "C" wc_status wc_matmul_fp8_sm90(const wc_matmul_fp8_params* p, wc_stream stream);

// Which kernel runs a case: sm_80 with plan_sm80's one tile, or sm_90a with one of the tile
// configurations matmul_fp8_sm90.cu builds (SM90_TILES in src/ops/matmul_fp8/plan.rs), alone or in
// cluster pairs (128-row tiles sharing B by TMA multicast), and `ctas` persistent CTAs (0: one
// per tile or pair; the launcher caps pairs at what cudaOccupancyMaxActiveClusters reports,
// EMU_SMS / 2 here).
struct Path {
  bool sm90;
  int block_m, block_n;
  bool fast;
  int ctas;
  int cluster = 1;
};
static const char* pname(const Path& t) {
  static char b[64];
  if (!t.sm90) return "sm80";
  snprintf(b, sizeof b, "sm90 %dx%d %s%s ctas=%d", t.block_m, t.block_n, t.fast ? "fast" : "promoted",
           t.cluster > 1 ? " pair" : "", t.ctas);
  return b;
}

// tma_box + encode_tma (src/ops/matmul_fp8/): uint8 {k, rows}, the row stride, boxes of
// {128, box_rows} bytes, 128-byte swizzle.
static bool encode_tma(wc_tensor_map* map, const void* ptr, int64_t rows, int64_t k, int64_t row_stride, int box_rows) {
  const uint64_t dims[2] = {static_cast<uint64_t>(k), static_cast<uint64_t>(rows)};
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

// ------------------------------------------------------------------ one GEMM
struct Case {
  int m, n, k;
  Gran ga, gb;
  bool bias, residual;
  int pad = 0;              // extra row-stride: 16·pad bytes of A / B, pad 16-byte units of D / R
  bool scale_t = false;     // scales stored transposed
  // Grouped (MoE): num_groups + 1 row offsets (B then has num_groups · n rows); empty: one GEMM.
  std::vector<int32_t> offsets = {};
};

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
static double max_rel32 = 0, max_tol32 = 0, max_ulp16 = 0;

template <typename O>
static void run_case(const Case& c, const Path& path, uint64_t seed) {
  ctx("%s %s m=%d n=%d k=%d a:%s b:%s%s%s pad=%d%s groups=%d", pname(path), tname<O>(), c.m, c.n, c.k, gname(c.ga),
      gname(c.gb), c.bias ? " bias" : "", c.residual ? " residual" : "", c.pad, c.scale_t ? " scales-transposed" : "",
      c.offsets.empty() ? 1 : static_cast<int>(c.offsets.size()) - 1);
  Rng r(seed);
  const int64_t m = c.m, n = c.n, k = c.k, E = sizeof(O), V = 16 / E;
  const int64_t groups = c.offsets.empty() ? 1 : static_cast<int64_t>(c.offsets.size()) - 1, nb = groups * n;
  const std::vector<int> group = group_of_rows(c);
  const int64_t lda = k + 16 * c.pad, ldb = k + 32 * c.pad, ldd = n + V * c.pad, ldr = n + 2 * V * c.pad;
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
  Buf* a = codes(m, lda);
  Buf* b = codes(nb, ldb);
  Scales sa(c.ga, m, k, c.scale_t, r), sb(c.gb, nb, k, c.scale_t, r);
  // Dequantized operands, then the f64 GEMM and Σ|a·b| (the accumulation error's scale).
  std::vector<double> da(m * k), db(nb * k), want(m * n), mag(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l) da[i * k + l] = e4m3(a->as<uint8_t>()[i * lda + l]) * sa.at(i, l);
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t l = 0; l < k; ++l) db[j * k + l] = e4m3(b->as<uint8_t>()[j * ldb + l]) * sb.at(j, l);
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
  p.a_scale = sa.buf->as<float>();
  p.b_scale = sb.buf->as<float>();
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
  p.a_scale_stride_m = sa.c_stride(0);
  p.a_scale_stride_k = sa.c_stride(1);
  p.b_scale_stride_n = sb.c_stride(0);
  p.b_scale_stride_k = sb.c_stride(1);
  p.block_scaled = block_scaled(c.ga, c.gb);
  p.fast_accum = path.fast;
  p.block_m = path.block_m;  // plan_sm80: SM80_TILE; plan_sm90: one of SM90_TILES
  p.block_n = path.block_n;
  p.group_m = 8 / path.cluster;  // GROUP_M / cluster_m
  p.cluster_m = path.cluster;
  // MatmulFp8Problem::m_tiles: the bound over every split of the rows into the groups.
  const int64_t rows = int64_t{path.block_m} * path.cluster,
                units = ((m + rows - 1) / rows + (offsets ? std::min(groups, m) - 1 : 0)) * (n / path.block_n);
  p.num_ctas = static_cast<int32_t>(path.ctas > 0 ? std::min<int64_t>(path.ctas, units * path.cluster) : units * path.cluster);
  p.out_dtype = tag<O>();
  wc_status st = WC_OK;
  if (!path.sm90) {
    st = wc_matmul_fp8_sm80(&p, nullptr);
  } else if (!encode_tma(&p.tma_a, p.a, m, k, lda, path.block_m) ||
             !encode_tma(&p.tma_b, p.b, nb, k, ldb, path.block_n / path.cluster)) {
    fail("tensor map refused");
    st = WC_ERR_INVALID_ARG;
  } else {
    st = wc_matmul_fp8_sm90(&p, nullptr);
  }
  if (st != WC_OK) fail("status %d", st);

  // f32: one rounding per mma.sync (16 products summed exactly by the shim) and per promotion,
  // the scale products and the bias / residual additions; bf16: one ulp more.
  const O* out = d.as<O>();
  const double u = std::ldexp(1.0, -24);
  for (int64_t i = 0; i < m && st == WC_OK; ++i) {
    for (int64_t j = 0; j < n && group[i] < 0; ++j)  // in no group: untouched
      for (int64_t e = 0; e < E; ++e)
        if (d.base[(i * ldd + j) * E + e] != d.before((i * ldd + j) * E + e))
          fail("(%lld, %lld) written: the row is in no group", (long long)i, (long long)j);
    for (int64_t j = 0; j < n && group[i] >= 0; ++j) {
      const double bv = bias ? tof(bias->as<O>()[group[i] * n + j]) : 0.0, rv = res ? tof(res->as<O>()[i * ldr + j]) : 0.0;
      const double ref = want[i * n + j] + bv + rv;
      const double scale = mag[i * n + j] + std::fabs(bv) + std::fabs(rv);
      const double tol32 = u * ((k / 16 + k / 32 + 8) * mag[i * n + j] + 4 * (std::fabs(bv) + std::fabs(rv)));
      const double got = tof(out[i * ldd + j]);
      const double err = std::fabs(got - ref);
      ++g_checks;
      if (sizeof(O) == 4) {
        if (scale > 0) max_rel32 = std::max(max_rel32, err / scale);
        if (tol32 > 0) max_tol32 = std::max(max_tol32, err / tol32);
        if (!(err <= tol32)) fail("(%lld, %lld): got %.9g want %.9g (|err| %.3g > %.3g)", (long long)i, (long long)j, got, ref, err, tol32);
      } else {
        const double ulp16 = ulp<__nv_bfloat16>(ref);
        max_ulp16 = std::max(max_ulp16, (err - tol32) / ulp16);
        if (!(err <= ulp16 + tol32)) fail("(%lld, %lld): got %.9g want %.9g (|err| %.3g > 1 bf16 ulp %.3g)", (long long)i, (long long)j, got, ref, err, ulp16);
      }
    }
    for (int64_t j = n; j < ldd && i + 1 < m; ++j)
      for (int64_t e = 0; e < E; ++e)
        if (d.base[(i * ldd + j) * E + e] != d.before((i * ldd + j) * E + e)) fail("row gap written at (%lld, %lld)", (long long)i, (long long)j);
  }
  for (Buf* x : {a, b, sa.buf, sb.buf, bias, res, offsets})
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
  }
  int32_t offsets[2] = {0, 128};
  p.group_offsets = offsets;
  p.num_groups = 0;
  expect("grouped with no groups", WC_ERR_INVALID_ARG);
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
  p.m = 0;
  expect("m = 0", WC_OK);
  if (emu::launches != launches) fail("a refused call launched");
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
  // Grouped (MoE experts): empty groups, a group of one row, one of exactly 64 rows, one across
  // tiles; rows before the first group and after the last; offsets out of range and out of
  // order (clamped); per-group B rows, block scales and bias.
  cases.push_back({200, 256, 384, GROUP, BLOCK, true, true, 1, false, {0, 0, 1, 65, 65, 130, 190, 200}});
  cases.push_back({150, 128, 256, ROW, ROW, true, false, 0, true, {5, 40, 40, 140}});
  cases.push_back({70, 256, 128, TENSOR, BLOCK, false, true, 0, false, {3, -7, 30, 20, 500}});
  cases.push_back({9, 128, 256, GROUP, TENSOR, true, true, 2, true, {0, 2, 3, 3, 4, 7, 9}});
  uint64_t seed = 1;
  for (const Case& c : cases) {
    // sm_80 once; sm_90a in every configuration its launcher builds for the case's mode
    // (SM90_TILES), with 1, 2 or 3 persistent CTAs or one per tile.
    std::vector<Path> paths = {{false, 128, 128, false, 0}};
    if (c.m * c.n * static_cast<int64_t>(c.k) < 1 << 27) {  // the 1157-row case stays sm_80 only (time)
      const bool blk = block_scaled(c.ga, c.gb);
      const int v = static_cast<int>(paths.size() + c.m + c.k / 128);
      auto ctas = [&](int i) { return (v + i) % 4 == 3 ? 0 : 1 + (v + i) % 3; };
      auto pair_ctas = [&](int i) { return (v + i) % 3 == 2 ? 0 : 2 + 2 * ((v + i) % 3); };
      if (!blk && c.n % 256 == 0) paths.push_back({true, 128, 256, true, ctas(0)});
      if (!blk) paths.push_back({true, 128, 128, true, ctas(1)});
      if (!blk) paths.push_back({true, 64, 128, true, ctas(2)});
      paths.push_back({true, 128, 128, false, ctas(3)});
      paths.push_back({true, 64, 128, false, ctas(4)});
      if (c.offsets.empty()) {  // grouped GEMMs have no pairs
        if (!blk && c.n % 256 == 0) paths.push_back({true, 128, 256, true, pair_ctas(5), 2});
        if (!blk) paths.push_back({true, 128, 128, true, pair_ctas(7), 2});
        paths.push_back({true, 128, 128, false, pair_ctas(6), 2});
      }
    }
    for (const Path& path : paths)
      for (int out = 0; out < 2; ++out) {
        ++seed;
        char name[96];
        snprintf(name, sizeof name, "%s %s m=%d %s", pname(path), out ? "bf16" : "f32", c.m,
                 c.offsets.empty() ? "" : "grouped ");
        if (filter && !strstr(name, filter)) continue;
        if (out) run_case<__nv_bfloat16>(c, path, seed);
        else run_case<float>(c, path, seed);
      }
  }
  refusals(false);
  refusals(true);
  printf("matmul_fp8: f32 max |err| / (Σ|a·b| + |bias| + |res|) %.3g (%.3g of the bound), bf16 max |err| - f32 "
         "bound %.3g ulp, %ld launches, max dynamic smem %zu B\n", max_rel32, max_tol32, max_ulp16, emu::launches,
         emu::max_smem_attr);
  return finish("matmul_fp8");
}
