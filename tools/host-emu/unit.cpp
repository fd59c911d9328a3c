// Self-test of shim.h: mma.sync (bf16 and int8) / ldmatrix against a plain matrix product, with register
// contents built from the PTX ISA's fragment formulas (forward maps: lane, i -> row, col);
// shuffles and votes against their definitions; and the checks that must fire (a lane that
// exited before a collective, a partial mask, shared memory poisoned per block, cp.async
// deferred to its wait_group unless EMU_CP_EAGER is set); sincospif against sinl / cosl;
// cudaLaunchKernelEx: a cooperative grid runs at once (a spin barrier completes, static shared
// memory stays per block, an oversized grid is refused), a cluster pair's remote mbarrier
// arrivals, and the report of an arrival at a peer CTA that has exited.
#include "shim.h"

static uint16_t bf(float x) { __nv_bfloat16 b = __float2bfloat16_rn(x); uint16_t u; memcpy(&u, &b, 2); return u; }
static float fbf(uint16_t u) { return __uint_as_float(static_cast<uint32_t>(u) << 16); }

// A 16x16 row-major, Bt 8x16 (rows = n, i.e. B col-major), Bk 16x8 (rows = k, row-major).
static float A[16][16], B[16][8];
static uint16_t sA[16][24], sBt[8][24], sBk[16][16];  // padded smem images
static float D_mma[16][8], D_ldm[16][8], D_ldmt[16][8];
static std::atomic<int> frag_errors{0};

void unit_kernel() {
  unsigned char* smem = emu::dyn_smem();
  uint16_t* a_s = reinterpret_cast<uint16_t*>(smem);
  uint16_t* bt_s = a_s + 16 * 24;
  uint16_t* bk_s = bt_s + 8 * 24;
  const int lane = threadIdx.x & 31;
  if (lane == 0) {
    memcpy(a_s, sA, sizeof sA);
    memcpy(bt_s, sBt, sizeof sBt);
    memcpy(bk_s, sBk, sizeof sBk);
  }
  __syncthreads();
  const int g = lane >> 2, t = lane & 3;
  // Registers from the PTX ISA formulas.
  uint32_t a[4], b[2];
  for (int r = 0; r < 4; ++r) {
    uint16_t h[2];
    for (int e = 0; e < 2; ++e) {
      const int i = 2 * r + e;  // a_i
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      h[e] = bf(A[row][col]);
    }
    a[r] = h[0] | (static_cast<uint32_t>(h[1]) << 16);
  }
  for (int r = 0; r < 2; ++r) {
    uint16_t h[2];
    for (int e = 0; e < 2; ++e) {
      const int i = 2 * r + e;  // b_i
      const int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      h[e] = bf(B[row][g]);
    }
    b[r] = h[0] | (static_cast<uint32_t>(h[1]) << 16);
  }
  float c[4] = {0, 0, 0, 0};
  emu::mma(c, a, b[0], b[1], true);
  for (int i = 0; i < 4; ++i) D_mma[g + 8 * (i >> 1)][2 * t + (i & 1)] = c[i];

  // ldmatrix (no trans) of A: lanes 0-15 rows 0-15 at col 0, lanes 16-31 rows 0-15 at col 8.
  uint32_t la[4];
  emu::ldmatrix_x4(la, a_s + (lane & 15) * 24 + (lane >> 4) * 8, false);
  for (int i = 0; i < 4; ++i)
    if (la[i] != a[i]) ++frag_errors;
  // ldmatrix (no trans) of Bt rows (n) x2 used as B: matrices (n 0-7, k 0-7), (n 0-7, k 8-15).
  uint32_t lb[4];
  emu::ldmatrix_x4(lb, bt_s + (lane & 7) * 24 + ((lane >> 3) & 1) * 8, false);
  if (lb[0] != b[0] || lb[1] != b[1]) ++frag_errors;
  // ldmatrix.trans of row-major B (k rows): matrices (k 0-7), (k 8-15).
  uint32_t lt[4];
  emu::ldmatrix_x4(lt, bk_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * 16, true);
  if (lt[0] != b[0] || lt[1] != b[1]) ++frag_errors;
  float c2[4] = {0, 0, 0, 0}, c3[4] = {0, 0, 0, 0};
  emu::mma(c2, la, lb[0], lb[1], true);
  emu::mma(c3, la, lt[0], lt[1], true);
  for (int i = 0; i < 4; ++i) {
    D_ldm[g + 8 * (i >> 1)][2 * t + (i & 1)] = c2[i];
    D_ldmt[g + 8 * (i >> 1)][2 * t + (i & 1)] = c3[i];
  }
}

// mma.sync m16n8k32 s8 x u8 -> s32 (the ternary GEMM's): registers from the PTX ISA's int8
// fragment formulas (A: element i of reg i/4 at row g (+8 for odd regs), col 4t + i%4 (+16 from
// reg 2); B: k = 4t + i%4 (+16 for reg 1), n = g), against an exact integer product; and the
// ldmatrix.x4 (.b16) addressing the kernel uses on int8 rows gives the same A registers.
static int8_t A8[16][32];
static uint8_t B8[32][8];
static int D8[16][8];
void int8_kernel() {
  unsigned char* smem = emu::dyn_smem();
  const int lane = threadIdx.x & 31;
  if (lane == 0) memcpy(smem, A8, sizeof A8);  // 16 rows of 32 bytes
  __syncthreads();
  const int g = lane >> 2, t = lane & 3;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  for (int i = 0; i < 16; ++i) {
    const int row = g + ((i / 4) % 2) * 8, col = 4 * t + (i % 4) + (i >= 8 ? 16 : 0);
    a[i / 4] |= static_cast<uint32_t>(static_cast<uint8_t>(A8[row][col])) << (8 * (i % 4));
  }
  for (int i = 0; i < 8; ++i) b[i / 4] |= static_cast<uint32_t>(B8[4 * t + (i % 4) + (i >= 4 ? 16 : 0)][g]) << (8 * (i % 4));
  uint32_t la[4];
  emu::ldmatrix_x4(la, smem + ((lane & 7) + ((lane >> 3) & 1) * 8) * 32 + (lane >> 4) * 16, false);
  for (int i = 0; i < 4; ++i)
    if (la[i] != a[i]) ++frag_errors;
  int c[4] = {0, 0, 0, 0};
  emu::mma_s8u8(c, a, b[0], b[1]);
  for (int i = 0; i < 4; ++i) D8[g + 8 * (i >> 1)][2 * t + (i & 1)] = c[i];
}

// Shuffles (full and 16-lane segments, 32- and 64-bit), ballot, match, reduce against their
// definitions; isfinite; 64-bit atomicAdd (sample_rows' weight histograms) summed by every thread.
static std::atomic<int> shfl_errors{0};
static unsigned long long atomic_sum = 0;
void shuffle_kernel() {
  const int lane = threadIdx.x & 31;
  const unsigned all = 0xffffffffu;
  const float x = static_cast<float>(100 + lane);
  const int64_t big = (int64_t{lane} << 40) + lane;
  auto expect = [&](bool ok) { if (!ok) ++shfl_errors; };
  expect(__shfl_xor_sync(all, x, 5) == static_cast<float>(100 + (lane ^ 5)));
  expect(__shfl_sync(all, big, 7) == (int64_t{7} << 40) + 7);
  expect(__shfl_sync(all, lane, 3, 16) == (lane & 16) + 3);
  expect(__shfl_up_sync(all, lane, 2) == (lane >= 2 ? lane - 2 : lane));
  expect(__shfl_up_sync(all, lane, 2, 16) == ((lane & 15) >= 2 ? lane - 2 : lane));
  expect(__shfl_down_sync(all, lane, 3) == (lane + 3 < 32 ? lane + 3 : lane));
  expect(__shfl_down_sync(all, lane, 3, 16) == ((lane & 15) + 3 < 16 ? lane + 3 : lane));
  expect(__ballot_sync(all, lane % 3 == 0) == 0x49249249u);
  expect(__match_any_sync(all, lane & 1) == ((lane & 1) ? 0xAAAAAAAAu : 0x55555555u));
  expect(__reduce_max_sync(all, static_cast<unsigned>(lane * 7 % 32)) == 31u);
  expect(__reduce_min_sync(all, static_cast<unsigned>(lane + 4)) == 4u);
  const uint64_t wide = (uint64_t{lane} << 40) + 3;
  expect(__shfl_up_sync(all, wide, 1) == (lane >= 1 ? wide - (uint64_t{1} << 40) : wide));
  expect(isfinite(x) && !isfinite(INFINITY) && !isfinite(-INFINITY) && !isfinite(NAN));
  atomicAdd(&atomic_sum, (1ull << 40) + static_cast<unsigned long long>(threadIdx.x));
}

// Lane 5 exits before the shuffle: the rendezvous must report it.
void exited_lane_kernel() {
  if ((threadIdx.x & 31) == 5) return;
  (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}
void partial_mask_kernel() { (void)__shfl_sync(0x0000ffffu, 1, 0); }

// Block b reads its static shared word and dynamic smem before writing them: both must be
// poisoned, whatever the previous block wrote.
static char static_smem_key;
static std::atomic<int> poison_errors{0};
void poison_kernel() {
  int* static_smem_word = static_cast<int*>(emu::static_shared(&static_smem_key, sizeof(int)));
  if (threadIdx.x == 0) {
    if (static_smem_word[0] != -1 || emu::dyn_smem()[63] != 0xFF) ++poison_errors;
    static_smem_word[0] = 7;
    emu::dyn_smem()[63] = 7;
  }
}

// cp.async: deferred copies land at wait_group, eager ones at issue.
static std::atomic<int> cp_errors{0};
alignas(16) static unsigned char cp_src[32];
void cp_kernel() {
  unsigned char* s = emu::dyn_smem();
  if (threadIdx.x == 0) {
    emu::cp_async16(s, cp_src, true);
    emu::cp_commit();
    emu::cp_async16(s + 16, cp_src + 16, false);  // zero fill
    emu::cp_commit();
    if (s[0] != (emu::cp_eager ? cp_src[0] : 0xFF)) ++cp_errors;
    emu::cp_wait(1);
    if (s[0] != cp_src[0] || s[16] != (emu::cp_eager ? 0 : 0xFF)) ++cp_errors;
    emu::cp_wait(0);
    if (s[16] != 0) ++cp_errors;
  }
}

// A cooperative grid runs all its blocks at once: a grid-wide spin barrier completes, and each
// block keeps its own static __shared__ word across it.
static int grid_arrived = 0;
static char grid_word_key;
static std::atomic<int> grid_errors{0};
void grid_barrier_kernel() {
  int* word = static_cast<int*>(emu::static_shared(&grid_word_key, sizeof(int)));
  if (threadIdx.x == 0) *word = static_cast<int>(blockIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(&grid_arrived, 1);
    while (*reinterpret_cast<volatile int*>(&grid_arrived) < static_cast<int>(gridDim.x)) __nanosleep(100);
    __threadfence();
  }
  __syncthreads();
  if (*word != static_cast<int>(blockIdx.x)) ++grid_errors;
}

// A cluster pair: each CTA's thread 0 arrives on its peer's mbarrier and waits on its own.
static std::atomic<int> cluster_errors{0};
void cluster_kernel() {
  uint64_t* bar = reinterpret_cast<uint64_t*>(emu::dyn_smem());
  const uint32_t rank = blockIdx.x % 2;
  if (threadIdx.x == 0) emu::sm90::mbar_init(bar, 1);
  emu::sm90::cluster_arrive();
  emu::sm90::cluster_wait();
  if (emu::sm90::cluster_ctarank() != rank) ++cluster_errors;
  if (threadIdx.x == 0) {
    emu::sm90::mbar_arrive_cluster(bar, rank ^ 1);
    emu::sm90::mbar_wait(bar, 0);
  }
  emu::sm90::cluster_arrive();
  emu::sm90::cluster_wait();
}
// ... and one that leaves without the final cluster barrier while its peer still arrives.
void cluster_exit_kernel() {
  uint64_t* bar = reinterpret_cast<uint64_t*>(emu::dyn_smem());
  if (threadIdx.x == 0) emu::sm90::mbar_init(bar, 1);
  emu::sm90::cluster_arrive();
  emu::sm90::cluster_wait();
  if (blockIdx.x % 2 == 0) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (threadIdx.x == 0) emu::sm90::mbar_arrive_cluster(bar, 0);
}

template <typename... P>
static cudaError_t launch_ex(void (*kernel)(P...), unsigned grid, unsigned block, size_t smem, unsigned cluster,
                             bool cooperative) {
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (cooperative) {
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
  } else {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel);
}

// sincospif against sinl / cosl of pi x: within one f32 ulp of the result (plus 1e-15 absolute:
// at whole x the shim gives sin(pi) ~ 1e-16, not 0).
static int sincospi_errors() {
  int bad = 0;
  for (int i = -4096; i <= 4096; ++i) {
    const float x = i / 2048.0f + (i % 7) * 1e-5f;
    float s, c;
    sincospif(x, &s, &c);
    const long double a = 3.14159265358979323846264338327950288L * x;
    for (auto [got, want] : {std::pair{s, sinl(a)}, std::pair{c, cosl(a)}}) {
      const double w = static_cast<double>(want);
      const double ulp = std::ldexp(1.0, std::max(std::ilogb(w == 0 ? 1e-30 : w), -126) - 23);
      if (!(std::fabs(got - w) <= ulp + 1e-15)) ++bad;
    }
  }
  return bad;
}

// Runs a kernel that must make the shim report an error; returns whether it did.
template <typename K>
static bool reports_error(K kernel, dim3 block) {
  const long before = emu::errors.load();
  emu::launch(kernel, dim3(1), block, 0);
  const bool reported = emu::errors.load() > before;
  emu::errors = before;
  return reported;
}

int main() {
  srand(7);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) {
      A[r][c] = fbf(bf((rand() % 2001 - 1000) / 250.0f));
      sA[r][c] = bf(A[r][c]);
    }
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) {
      B[k][n] = fbf(bf((rand() % 2001 - 1000) / 250.0f));
      sBt[n][k] = bf(B[k][n]);
      sBk[k][n] = bf(B[k][n]);
    }
  emu::launch(unit_kernel, dim3(1), dim3(32), 16 * 24 * 2 + 8 * 24 * 2 + 16 * 16 * 2);
  double maxerr = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double ref = 0;
      for (int k = 0; k < 16; ++k) ref += static_cast<double>(A[r][k]) * B[k][n];
      maxerr = std::max({maxerr, std::fabs(D_mma[r][n] - ref), std::fabs(D_ldm[r][n] - ref), std::fabs(D_ldmt[r][n] - ref)});
    }
  for (auto& row : A8)
    for (auto& v : row) v = static_cast<int8_t>(rand() % 256 - 128);
  for (auto& row : B8)
    for (auto& v : row) v = static_cast<uint8_t>(rand() % 256);
  emu::launch(int8_kernel, dim3(1), dim3(32), sizeof A8);
  int int8_errors = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      int ref = 0;
      for (int k = 0; k < 32; ++k) ref += A8[r][k] * B8[k][n];
      if (D8[r][n] != ref) ++int8_errors;
    }
  emu::launch(shuffle_kernel, dim3(1), dim3(64), 0);
  const bool atomic_ok = atomic_sum == (64ull << 40) + 64 * 63 / 2;  // every thread's add, no carry lost
  fprintf(stderr, "expected: EMU ERROR lines from kernels that must trip the checks\n");
  const bool exited = reports_error(exited_lane_kernel, dim3(32));
  const bool partial = reports_error(partial_mask_kernel, dim3(32));
  const bool partial_warp = reports_error(shuffle_kernel, dim3(48));
  shfl_errors = 0;  // the partial-warp run computed garbage on purpose
  emu::launch(shuffle_kernel, dim3(1), dim3(32), 0);
  emu::launch(poison_kernel, dim3(3), dim3(32), 64);
  for (auto& b : cp_src) b = static_cast<unsigned char>(rand() % 200 + 1);
  emu::launch(cp_kernel, dim3(1), dim3(32), 32);
  const int sincospi_bad = sincospi_errors();
  // Cooperative: 4 SMs × 32 CTAs of 64 threads fit; one more CTA is refused.
  if (launch_ex(grid_barrier_kernel, 8, 64, 0, 1, true) != cudaSuccess || grid_arrived != 8) ++grid_errors;
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, grid_barrier_kernel, 64, 0);
  if (launch_ex(grid_barrier_kernel, per_sm * emu_sms() + 1, 64, 0, 1, true) != cudaErrorCooperativeLaunchTooLarge)
    ++grid_errors;
  if (launch_ex(cluster_kernel, 4, 64, 8, 2, false) != cudaSuccess) ++cluster_errors;
  const long before_exit = emu::errors.load();
  launch_ex(cluster_exit_kernel, 2, 32, 8, 2, false);
  const bool exit_reported = emu::errors.load() > before_exit;
  emu::errors = before_exit;
  const bool ok = atomic_ok && maxerr < 1e-4 && int8_errors == 0 && frag_errors == 0 && shfl_errors == 0 && exited && partial && partial_warp &&
                  poison_errors == 0 && cp_errors == 0 && sincospi_bad == 0 && grid_errors == 0 &&
                  cluster_errors == 0 && exit_reported && emu::errors == 0;
  printf("unit %s: mma/ldmatrix max |D - A.B| %.3g, int8 mma mismatches %d, fragment mismatches %d, shuffle mismatches %d, "
         "64-bit atomicAdd %s, checks fire (exited lane %d, partial mask %d, partial warp %d), poison errors %d, cp.async (%s) errors %d, "
         "sincospif errors %d, cooperative grid errors %d, cluster errors %d, exited-peer check fires %d, "
         "emu errors %ld\n",
         ok ? "PASS" : "FAIL", maxerr, int8_errors, frag_errors.load(), shfl_errors.load(), atomic_ok ? "exact" : "WRONG", exited, partial, partial_warp,
         poison_errors.load(), emu::cp_eager ? "eager" : "deferred", cp_errors.load(), sincospi_bad,
         grid_errors.load(), cluster_errors.load(), exit_reported, emu::errors.load());
  return ok ? 0 : 1;
}
