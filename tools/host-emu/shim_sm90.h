// shim_sm90.h — host emulation of the Hopper pieces of cuda/sm90.cuh (included at the end of
// shim.h; prep.py turns the bodies of sm90.cuh's wrappers into calls to emu::sm90):
//   * mbarriers: expected count, arrivals, transaction bytes (expect_tx / complete_tx), phases;
//     try_wait.parity P returns once the current phase's parity differs from P.
//   * TMA: 2-D uint8 tensor maps (encode_tensor_map_2d takes cuTensorMapEncodeTiled's arguments
//     and applies its documented checks) and cp.async.bulk.tensor loads with 128-byte swizzle and
//     zero fill outside the tensor, completing bytes on an mbarrier. A load lands only when a
//     thread waits on its barrier (EMU_CP_EAGER=1: at issue). TMA stores (shared to global,
//     bulk groups per issuing thread) read shared memory only when cp.async.bulk.wait_group.read
//     retires their group (EMU_CP_EAGER=1: at issue), so a box refilled too early stores the new
//     values; writing shared memory a pending store still reads, storing what was written
//     through the generic proxy without fence.proxy.async since, and exiting with stores
//     pending are reported.
//   * wgmma m64nNk32 e4m3 -> f32 from K-major, 128B-swizzled shared-memory descriptors decoded
//     as the PTX ISA defines them, results in the ISA's accumulator layout; and m64nNk16 bf16 /
//     f16 with A and B K-major in shared memory ("ss"), or A in registers (the ISA's A fragment
//     layout) and B MN-major in shared memory ("rs", imm-trans-b = 1), or A K-major in shared
//     memory and B MN-major ("ss" with imm-trans-b = 1). The 128 threads of a
//     warpgroup meet at every wgmma instruction and must agree on it (operation, descriptors,
//     scale-d). Operations run at the wgmma.wait_group that retires their group (EMU_CP_EAGER=1:
//     at issue); each instruction's 32 products are summed in f64 and added with one f32
//     rounding (the tensor core's truncating accumulation is not modelled).
//   * Hazards reported: a TMA overwriting shared memory that a wgmma was still reading when its
//     thread arrived on the barrier the TMA's issuer waited for (a stage released too early); a
//     wgmma reading shared memory that a TMA has not landed in (no wait on its barrier); wgmma
//     without wgmma.fence since the last wait; wgmma still in flight when its thread exits.
//     A wgmma reading shared memory that a thread wrote through the generic proxy (cp.async)
//     without a fence.proxy.async since is reported too, and one reading shared memory that a
//     cp.async had not landed in when its thread arrived on the mbarrier the reader waited for.
//   * Named barriers (bar.sync id, threads). setmaxnreg, other fences and prefetches do nothing.
// A wait with no progress for 60 s is reported as a deadlock and ends the process.
#pragma once
#include <chrono>
#include <condition_variable>

namespace emu {
namespace sm90 {

struct Range {  // dynamic shared memory bytes [lo, hi)
  size_t lo, hi;
};
inline bool overlaps(const Range& a, const Range& b) { return a.lo < b.hi && b.lo < a.hi; }
inline size_t swizzle128(size_t offset) { return offset ^ (((offset >> 7) & 7) << 4); }

// ------------------------------------------------------------------ tensor maps
constexpr uint64_t kMapMagic = 0x74656E736F726D70ull;
struct TensorMap2d {
  uint64_t magic;
  const uint8_t* base;
  uint64_t dims[2];     // {inner (bytes), rows}
  uint64_t row_stride;  // bytes
  uint32_t box[2];      // {inner (bytes), rows}
  uint32_t swizzle;     // bytes: 0 or 128
};
static_assert(sizeof(TensorMap2d) <= 128, "fits in a CUtensorMap");

// cuTensorMapEncodeTiled(UINT8, rank 2, ptr, dims, {row_stride}, box, {1, 1}, INTERLEAVE_NONE,
// swizzle 0 / 128B, ...): false (nothing written) where the driver documents an invalid value.
inline bool encode_tensor_map_2d(void* map, const void* ptr, const uint64_t dims[2], uint64_t row_stride,
                                 const uint32_t box[2], uint32_t swizzle) {
  const bool ok = map != nullptr && (reinterpret_cast<uintptr_t>(map) & 63) == 0 &&
                  (reinterpret_cast<uintptr_t>(ptr) & 15) == 0 && dims[0] >= 1 && dims[1] >= 1 &&
                  dims[0] <= (uint64_t{1} << 32) && dims[1] <= (uint64_t{1} << 32) && row_stride % 16 == 0 &&
                  row_stride >= dims[0] && row_stride < (uint64_t{1} << 40) && box[0] >= 1 && box[1] >= 1 &&
                  box[0] <= 256 && box[1] <= 256 && box[0] % 16 == 0 &&
                  (swizzle == 0 || (swizzle == 128 && box[0] <= 128));
  if (!ok) return false;
  const TensorMap2d m{kMapMagic, static_cast<const uint8_t*>(ptr), {dims[0], dims[1]}, row_stride, {box[0], box[1]},
                      swizzle};
  memset(map, 0, 128);
  memcpy(map, &m, sizeof m);
  return true;
}

// ------------------------------------------------------------------ block state
struct Tma {
  TensorMap2d map;
  unsigned char* smem;  // the destination CTA's shared memory (multicast: one Tma per CTA)
  size_t dst;
  int32_t c0, c1;
  Range range() const { return {dst, dst + size_t{map.box[0]} * map.box[1]}; }
};
struct MBar {
  uint32_t count = 0, pending = 0, phase = 0;
  int64_t tx = 0;
  std::vector<Tma> queued;        // loads of this phase that have not landed
  std::vector<Range> arriving;    // reads still in flight when their threads arrived (this phase)
  std::vector<Range> done[2];     // ... of the last completed phase of each parity
  std::vector<Range> unlanded;    // cp.async writes still in flight when their threads arrived (this phase)
  std::vector<Range> unlanded_done[2];
};
struct NamedBar {
  int expected = 0, arrived = 0;
  uint64_t gen = 0;
};
enum WgOp { WG_FENCE = 1, WG_MMA, WG_COMMIT, WG_WAIT };
struct WarpGroup {
  explicit WarpGroup(int n) : bar(n), threads(n), live(n) {}
  std::barrier<> bar;
  int threads;
  std::atomic<int> live;
  int op[128];
  uint64_t seq[128], arg[128][3];
  uint32_t regs[128][4];
};
struct State {
  std::mutex mu;
  // Per 16-byte unit of shared memory: 1 + the thread whose generic write the async proxy cannot
  // see yet (no fence.proxy.async since), or 0.
  std::unique_ptr<std::atomic<int>[]> unfenced;
  size_t units = 0;
  std::condition_variable cv;
  std::map<size_t, MBar> bars;  // by shared-memory offset
  std::map<int, NamedBar> named;
  std::vector<std::unique_ptr<WarpGroup>> groups;
  // Operand ranges of wgmmas issued and not yet executed, one count per issuing thread: a TMA
  // landing there (from this CTA or a peer's multicast) overwrites what a wgmma still reads.
  std::map<std::pair<size_t, size_t>, int> reading;
  // Per 16-byte unit of shared memory: the TMA stores issued from it that have not read it yet.
  std::unique_ptr<std::atomic<int>[]> storing;
};
inline thread_local State* state = nullptr;  // the calling thread's block's (sm90_thread_begin)
inline State& state_of(const Block* b) { return *static_cast<State*>(b->sm90); }

enum WgKind { WG_E4M3_SS = 0, WG_16_SS, WG_16_RS, WG_16_SS_MN, WG_U8S8_RS };
struct Wgmma {
  float* d;
  int n;
  uint64_t desc_a, desc_b;
  int scale_d;
  Range ra, rb;
  int kind = WG_E4M3_SS;
  bool bf16 = false;
  std::shared_ptr<const std::vector<uint32_t>> a_regs;  // WG_16_RS, WG_U8S8_RS: the warpgroup's A fragments [128][4]
  int32_t* di = nullptr;                                // WG_U8S8_RS: the int32 accumulators (d unused)
};
inline thread_local std::vector<std::vector<Wgmma>> t_groups;  // committed, oldest first
inline thread_local std::vector<Wgmma> t_open;                 // not yet committed
inline thread_local bool t_fenced = false;
inline thread_local std::vector<Range> t_released;  // from the phase this thread last waited for
inline thread_local std::vector<Range> t_unlanded;  // ditto: cp.async writes not landed at their arrival
inline thread_local uint64_t t_wg_seq = 0;
inline thread_local std::vector<size_t> t_unfenced;  // units this thread wrote since its last proxy fence
inline thread_local std::vector<std::vector<Tma>> t_store_groups;  // TMA stores committed, oldest first
inline thread_local std::vector<Tma> t_store_open;                 // ... not yet committed

// A write (`what`: TMA, cp.async, st.shared) into shared memory that a wgmma may still read: the
// wgmma's thread arrived on the barrier this thread last waited for before the wgmma retired.
inline void check_released(const Range& w, const char* what) {
  for (const Range& r : t_released)
    if (overlaps(r, w))
      EMU_FAIL("%s into smem [%zu, %zu) by thread %u while a wgmma may still read [%zu, %zu): its thread arrived on "
               "the barrier this thread waited for before the wgmma retired",
               what, w.lo, w.hi, linear_tid(), r.lo, r.hi);
}

inline size_t smem_offset(const void* p, size_t bytes, const char* what) {
  if (!in_dyn_smem(p, bytes)) EMU_FAIL("%s: %p (+%zu bytes) outside dynamic shared memory", what, p, bytes);
  return static_cast<size_t>(static_cast<const unsigned char*>(p) - block->smem);
}

// Waits on state->cv until ready() (called with the lock held); a deadlock ends the process.
template <typename F>
inline void wait_until(std::unique_lock<std::mutex>& lk, F ready, const char* what) {
  const auto start = std::chrono::steady_clock::now();
  while (!ready()) {
    state->cv.wait_for(lk, std::chrono::milliseconds(20));
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
      fprintf(stderr, "EMU ERROR: deadlock: thread %u of block %u waited 60 s in %s\n", linear_tid(), blockIdx.x, what);
      fflush(stderr);
      std::_Exit(3);
    }
  }
}

// ------------------------------------------------------------------ mbarriers and TMA
inline MBar& bar_at(const void* bar, const char* what) {
  const size_t o = smem_offset(bar, 8, what);
  auto it = state->bars.find(o);
  if (it != state->bars.end()) return it->second;
  EMU_FAIL("%s on an uninitialised mbarrier at smem+%zu", what, o);
  MBar& b = state->bars[o];
  b.count = b.pending = 1;
  return b;
}

inline void complete_if_done(State& st, MBar& b) {
  if (b.pending != 0 || b.tx != 0) return;
  b.done[b.phase & 1] = std::move(b.arriving);
  b.arriving.clear();
  b.unlanded_done[b.phase & 1] = std::move(b.unlanded);
  b.unlanded.clear();
  ++b.phase;
  b.pending = b.count;
  st.cv.notify_all();
}

inline void tma_copy(State& st, const Tma& t) {
  for (const auto& [r, count] : st.reading)
    if (count > 0 && overlaps(t.range(), {r.first, r.second}))
      EMU_FAIL("TMA lands in smem [%zu, %zu) while an issued wgmma has not finished reading [%zu, %zu)", t.range().lo,
               t.range().hi, r.first, r.second);
  const TensorMap2d& m = t.map;
  for (uint32_t r = 0; r < m.box[1]; ++r)
    for (uint32_t c = 0; c < m.box[0]; ++c) {
      const int64_t gr = int64_t{t.c1} + r, gc = int64_t{t.c0} + c;
      const bool in = gr >= 0 && gc >= 0 && uint64_t(gr) < m.dims[1] && uint64_t(gc) < m.dims[0];
      const size_t o = t.dst + size_t{r} * m.box[0] + c;
      t.smem[m.swizzle ? swizzle128(o) : o] = in ? m.base[gr * m.row_stride + gc] : 0;
    }
}

inline void mbar_init(uint64_t* bar, uint32_t count) {
  std::lock_guard<std::mutex> lk(state->mu);
  const size_t o = smem_offset(bar, 8, "mbarrier.init");
  if (o % 8) EMU_FAIL("mbarrier at smem+%zu not 8-byte aligned", o);
  if (count == 0) EMU_FAIL("mbarrier.init with count 0");
  MBar& b = state->bars[o];
  b = MBar{};
  b.count = b.pending = count;
}

// One arrival (count 1, plus tx transaction bytes) on barrier b of state st (its mutex held),
// recording the calling thread's wgmmas still in flight (and, on its own CTA's barriers, its
// cp.async copies not yet landed).
inline void arrive_on(State& st, MBar& b, uint32_t tx, bool own) {
  if (b.pending == 0) {
    EMU_FAIL("mbarrier.arrive beyond the expected count %u", b.count);
    return;
  }
  b.tx += tx;
  --b.pending;
  for (const auto& g : t_groups)
    for (const Wgmma& w : g) b.arriving.insert(b.arriving.end(), {w.ra, w.rb});
  for (const Wgmma& w : t_open) b.arriving.insert(b.arriving.end(), {w.ra, w.rb});
  auto unlanded = [&](const Copy& c) {
    const size_t o = static_cast<size_t>(static_cast<unsigned char*>(c.dst) - block->smem);
    b.unlanded.push_back({o, o + 16});
  };
  if (own) {
    for (const auto& g : t_cp_groups) for (const Copy& c : g) unlanded(c);
    for (const Copy& c : t_cp_open) unlanded(c);
  }
  complete_if_done(st, b);
}
// mbarrier.arrive (tx = 0) or mbarrier.arrive.expect_tx (tx bytes).
inline void mbar_arrive(uint64_t* bar, uint32_t tx) {
  std::lock_guard<std::mutex> lk(state->mu);
  arrive_on(*state, bar_at(bar, "mbarrier.arrive"), tx, true);
}

// mbarrier.expect_tx: tx more bytes for the current phase, no arrival.
inline void mbar_expect_tx(uint64_t* bar, uint32_t tx) {
  std::lock_guard<std::mutex> lk(state->mu);
  MBar& b = bar_at(bar, "mbarrier.expect_tx");
  b.tx += tx;
}

inline void mbar_wait(uint64_t* bar, uint32_t parity) {
  std::unique_lock<std::mutex> lk(state->mu);
  MBar& b = bar_at(bar, "mbarrier.try_wait");
  wait_until(lk, [&] {
    if (!b.queued.empty()) {  // deferred loads land now
      for (const Tma& t : b.queued) {
        tma_copy(*state, t);
        b.tx -= int64_t{t.map.box[0]} * t.map.box[1];
      }
      b.queued.clear();
      complete_if_done(*state, b);
    }
    return (b.phase & 1) != parity;
  }, "mbarrier.try_wait.parity");
  t_released = b.done[parity & 1];
  t_unlanded = b.unlanded_done[parity & 1];
}

// ------------------------------------------------------------------ clusters
// CTA `rank` of the calling thread's cluster (a launch without clusters is a cluster of one).
inline Block* cluster_block(unsigned rank, const char* what) {
  const Cluster& c = *block->cluster;
  if (rank >= c.blocks.size()) {
    EMU_FAIL("%s: CTA rank %u outside a cluster of %zu", what, rank, c.blocks.size());
    return nullptr;
  }
  Block* b = c.blocks[rank];
  if (b != block && b->live.load() == 0) EMU_FAIL("%s: CTA %u of the cluster has exited (its shared memory is gone)", what, rank);
  return b;
}
inline uint32_t cluster_ctarank() { return block->rank; }
inline uint32_t cluster_nctarank() { return static_cast<uint32_t>(block->cluster->blocks.size()); }
inline void cluster_arrive() {
  if (t_cluster_token) EMU_FAIL("barrier.cluster.arrive twice without a wait");
  t_cluster_token = block->cluster->bar.arrive();
}
inline void cluster_wait() {
  if (!t_cluster_token) {
    EMU_FAIL("barrier.cluster.wait without an arrive");
    return;
  }
  block->cluster->bar.wait(std::move(*t_cluster_token));
  t_cluster_token.reset();
}
// The mbarrier at shared-memory offset o of a cluster CTA's state (its mutex held), or null
// after reporting an uninitialised one.
inline MBar* cluster_bar(State& st, size_t o, uint32_t rank, const char* what) {
  auto it = st.bars.find(o);
  if (it != st.bars.end()) return &it->second;
  EMU_FAIL("%s on an uninitialised mbarrier at smem+%zu of CTA %u", what, o, rank);
  return nullptr;
}
// mbarrier.arrive.shared::cluster on the barrier at bar's offset in CTA `rank`.
inline void mbar_arrive_cluster(uint64_t* bar, uint32_t rank) {
  const char* what = "mbarrier.arrive.shared::cluster";
  const size_t o = smem_offset(bar, 8, what);
  Block* b = cluster_block(rank, what);
  if (b == nullptr) return;
  State& st = state_of(b);
  std::lock_guard<std::mutex> lk(st.mu);
  if (MBar* m = cluster_bar(st, o, rank, what)) arrive_on(st, *m, 0, b == block);
}

// A TMA 2-D load of `map`'s box at (c0, c1) to dst's offset in each CTA of `mask` (bit r: CTA
// rank r; a plain load: the calling CTA only), counted on the mbarrier at bar's offset there.
// A TMA's tensor map (copied from the kernel parameter); false after reporting one that
// encode_tensor_map_2d did not make.
inline bool read_map(Tma& t, const void* map, const char* what) {
  memcpy(&t.map, map, sizeof t.map);
  if (t.map.magic != kMapMagic) {
    EMU_FAIL("%s with a tensor map not made by encode_tensor_map_2d", what);
    return false;
  }
  if (t.map.swizzle == 128 && t.map.box[0] != 128) EMU_FAIL("TMA: 128B swizzle with a %u-byte box row (not emulated)", t.map.box[0]);
  return true;
}
inline std::atomic<long> tma_loads{0};  // TMA loads issued (the tests report them)
inline void tma_issue(void* dst, const void* map, uint64_t* bar, int32_t c0, int32_t c1, uint32_t mask) {
  ++tma_loads;
  Tma t{};
  if (!read_map(t, map, "TMA load")) return;
  const size_t bytes = size_t{t.map.box[0]} * t.map.box[1];
  t.dst = smem_offset(dst, bytes, "TMA destination");
  const size_t bar_o = smem_offset(bar, 8, "TMA completion");
  t.c0 = c0;
  t.c1 = c1;
  if (t.dst % 128) EMU_FAIL("TMA destination smem+%zu not 128-byte aligned", t.dst);
  // The swizzle pattern repeats every 8 rows of 128 bytes; the hardware takes its row phase from
  // address bits [7, 10), so a 128B-swizzled box must start on a 1024-byte boundary (as stores).
  if (t.map.swizzle == 128 && t.dst % 1024) EMU_FAIL("TMA destination smem+%zu: a 128B-swizzled box needs 1024-byte alignment", t.dst);
  check_released(t.range(), "TMA");
  if (mask == 0 || mask >> cluster_nctarank()) EMU_FAIL("TMA multicast mask %x for a cluster of %u", mask, cluster_nctarank());
  for (uint32_t r = 0; r < cluster_nctarank(); ++r) {
    if (!(mask >> r & 1)) continue;
    Block* b = cluster_block(r, "TMA multicast");
    if (b == nullptr) continue;
    State& st = state_of(b);
    std::lock_guard<std::mutex> lk(st.mu);
    MBar* m = cluster_bar(st, bar_o, r, "TMA completion");
    if (m == nullptr) continue;
    t.smem = b->smem;
    if (cp_eager) {
      tma_copy(st, t);
      m->tx -= static_cast<int64_t>(bytes);
      complete_if_done(st, *m);
    } else {
      m->queued.push_back(t);
    }
  }
}
inline void tma_load_2d(void* dst, const void* map, uint64_t* bar, int32_t c0, int32_t c1) {
  tma_issue(dst, map, bar, c0, c1, 1u << cluster_ctarank());
}
inline void tma_load_2d_multicast(void* dst, const void* map, uint64_t* bar, int32_t c0, int32_t c1, uint16_t mask) {
  tma_issue(dst, map, bar, c0, c1, mask);
}

// A TMA store reads its box from shared memory (the map's swizzle) into global memory, skipping
// the elements outside the tensor; its units are released for generic writes.
inline void tma_store_run(const Tma& t) {
  const TensorMap2d& m = t.map;
  uint8_t* base = const_cast<uint8_t*>(m.base);
  for (uint32_t r = 0; r < m.box[1]; ++r)
    for (uint32_t c = 0; c < m.box[0]; ++c) {
      const int64_t gr = int64_t{t.c1} + r, gc = int64_t{t.c0} + c;
      if (gr < 0 || gc < 0 || uint64_t(gr) >= m.dims[1] || uint64_t(gc) >= m.dims[0]) continue;
      const size_t o = t.dst + size_t{r} * m.box[0] + c;
      base[gr * m.row_stride + gc] = t.smem[m.swizzle ? swizzle128(o) : o];
    }
  const Range rg = t.range();
  for (size_t u = rg.lo / 16; u < rg.hi / 16; ++u) --state->storing[u];
}
inline void tma_store_2d(const void* src, const void* map, int32_t c0, int32_t c1) {
  Tma t{};
  if (!read_map(t, map, "TMA store")) return;
  const size_t bytes = size_t{t.map.box[0]} * t.map.box[1];
  t.dst = smem_offset(src, bytes, "TMA store source");
  if (t.dst % 128) EMU_FAIL("TMA store source smem+%zu not 128-byte aligned", t.dst);
  if (t.map.swizzle == 128 && t.dst % 1024) EMU_FAIL("TMA store source smem+%zu: a 128B-swizzled box needs 1024-byte alignment", t.dst);
  t.smem = block->smem;
  t.c0 = c0;
  t.c1 = c1;
  for (size_t u = t.dst / 16; u < (t.dst + bytes) / 16; ++u)
    if (const int who = state->unfenced[u].load(); who != 0) {
      EMU_FAIL("TMA store reads smem+%zu, written by thread %d through the generic proxy with no fence.proxy.async "
               "since", u * 16, who - 1);
      return;
    }
  for (size_t u = t.dst / 16; u < (t.dst + bytes) / 16; ++u) ++state->storing[u];
  if (cp_eager) tma_store_run(t);
  else t_store_open.push_back(t);
}
inline void tma_store_commit() {
  t_store_groups.push_back(std::move(t_store_open));
  t_store_open.clear();
}
inline void tma_store_wait_read(int n) {
  if (!t_store_open.empty()) EMU_FAIL("cp.async.bulk.wait_group.read with TMA stores not committed");
  while (static_cast<int>(t_store_groups.size()) > n) {
    for (const Tma& t : t_store_groups.front()) tma_store_run(t);
    t_store_groups.erase(t_store_groups.begin());
  }
}

// ------------------------------------------------------------------ named barriers
// Counts the calling thread towards barrier `id`'s current generation (state->mu held); true
// when that completed the generation.
inline bool named_count(int id, int threads, const char* op) {
  if (id < 0 || id > 15 || threads <= 0 || threads % 32) EMU_FAIL("%s %d, %d: bad id or thread count", op, id, threads);
  NamedBar& b = state->named[id];
  if (b.arrived == 0) b.expected = threads;
  else if (b.expected != threads) EMU_FAIL("%s %d with %d threads while others expect %d", op, id, threads, b.expected);
  if (++b.arrived < b.expected) return false;
  b.arrived = 0;
  ++b.gen;
  state->cv.notify_all();
  return true;
}
inline void named_barrier_sync(int id, int threads) {
  std::unique_lock<std::mutex> lk(state->mu);
  NamedBar& b = state->named[id & 15];
  const uint64_t gen = b.gen;
  if (named_count(id, threads, "bar.sync")) return;
  wait_until(lk, [&] { return b.gen != gen; }, "bar.sync");
}
// bar.arrive: counts towards the barrier's current generation without waiting for it.
inline void named_barrier_arrive(int id, int threads) {
  std::lock_guard<std::mutex> lk(state->mu);
  named_count(id, threads, "bar.arrive");
}

// ------------------------------------------------------------------ wgmma
// All threads of the warpgroup meet; thread 0 checks that they are at the same instruction.
// `regs` (register A operands): every thread's four registers, gathered for all of them.
inline std::shared_ptr<const std::vector<uint32_t>> rendezvous(int op, uint64_t a0, uint64_t a1, uint64_t a2,
                                                               const uint32_t* regs = nullptr) {
  const unsigned t = linear_tid();
  WarpGroup& g = *state->groups[t / 128];
  const int i = static_cast<int>(t % 128);
  if (g.threads != 128 || g.live != 128) EMU_FAIL("warpgroup instruction %d with %d of 128 threads", op, g.live.load());
  g.op[i] = op;
  g.seq[i] = ++t_wg_seq;
  g.arg[i][0] = a0;
  g.arg[i][1] = a1;
  g.arg[i][2] = a2;
  if (regs) memcpy(g.regs[i], regs, sizeof g.regs[i]);
  g.bar.arrive_and_wait();
  if (i == 0)
    for (int j = 1; j < g.threads; ++j)
      if (g.op[j] != op || g.seq[j] != g.seq[0] || memcmp(g.arg[j], g.arg[0], sizeof g.arg[0]) != 0)
        EMU_FAIL("warpgroup: thread %d at (op %d, #%llu) differs from thread 0 at (op %d, #%llu) or its operands", j,
                 g.op[j], static_cast<unsigned long long>(g.seq[j]), op, static_cast<unsigned long long>(g.seq[0]));
  std::shared_ptr<const std::vector<uint32_t>> all;
  if (regs) all = std::make_shared<const std::vector<uint32_t>>(&g.regs[0][0], &g.regs[0][0] + 128 * 4);
  g.bar.arrive_and_wait();
  return all;
}

// A shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address >> 4 in
// bits [0, 14), leading byte offset >> 4 in [16, 30), stride byte offset >> 4 in [32, 46), base
// offset in [49, 52), swizzle mode in [62, 64) (1 = 128B). Only 128B swizzle is built.
// K-major: byte k of row r (k < 32: the k32 of e4m3, the k16 of 16-bit types) is at
// swizzle128(start + (r / 8) · SBO + (r % 8) · 128 + k).
inline size_t operand_offset(uint64_t desc, int row, int k) {
  const size_t start = (desc & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
  return swizzle128(start + (row / 8) * sbo + (row % 8) * 128 + k);
}
// MN-major, 16-bit elements (canonical ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))): element (n, k) is
// at swizzle128(start + (n / 64) · LBO + (k / 8) · SBO + (k % 8) · 128 + (n % 64) · 2).
inline size_t mn_offset(uint64_t desc, int n, int k) {
  const size_t start = (desc & 0x3FFF) << 4, lbo = ((desc >> 16) & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
  return swizzle128(start + (n / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (n % 64) * 2);
}
inline void check_desc(uint64_t desc) {
  if ((desc >> 62) != 1) EMU_FAIL("wgmma descriptor %016llx: only 128B swizzle is emulated", (unsigned long long)desc);
  if (((desc >> 49) & 7) != 0) EMU_FAIL("wgmma descriptor %016llx: non-zero base offset", (unsigned long long)desc);
  // Base offset 0 means the matrix starts at a swizzle atom's first row: the start address's
  // bits [7, 10) (its row within the 1024-byte atom) must be zero; only the k offset inside a
  // 128-byte row (bits [4, 7)) may move it (CUTLASS asserts the same).
  if ((((desc & 0x3FFF) << 4) >> 7) & 7) EMU_FAIL("wgmma descriptor %016llx: start address inside a swizzle atom's rows with base offset 0", (unsigned long long)desc);
}
inline Range footprint_of(uint64_t desc, size_t lo, size_t hi) {
  if (hi > block->smem_bytes) EMU_FAIL("wgmma descriptor %016llx reads past shared memory", (unsigned long long)desc);
  return {lo, hi};
}
// K-major operand of `rows` rows (32 bytes of k each).
inline Range footprint(uint64_t desc, int rows) {
  check_desc(desc);
  size_t lo = SIZE_MAX, hi = 0;
  for (int row = 0; row < rows; ++row)
    for (int k = 0; k < 32; k += 16) {
      const size_t o = operand_offset(desc, row, k) & ~size_t{15};
      lo = std::min(lo, o);
      hi = std::max(hi, o + 16);
    }
  return footprint_of(desc, lo, hi);
}
// MN-major 16-bit operand: n columns, k16.
inline Range footprint_mn(uint64_t desc, int n) {
  check_desc(desc);
  size_t lo = SIZE_MAX, hi = 0;
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < n; c += 8) {
      const size_t o = mn_offset(desc, c, k) & ~size_t{15};
      lo = std::min(lo, o);
      hi = std::max(hi, o + 16);
    }
  return footprint_of(desc, lo, hi);
}

inline double e4m3(uint8_t b) {
  __nv_fp8_e4m3 v;
  v.__x = b;
  return static_cast<float>(v);
}
inline double half16(uint16_t u, bool bf16) {
  if (bf16) return __uint_as_float(static_cast<uint32_t>(u) << 16);
  __half_raw r;
  r.x = u;
  return __half2float(__half(r));
}
inline uint16_t smem16(size_t offset) {
  uint16_t u;
  memcpy(&u, block->smem + offset, 2);
  return u;
}

// A generic-proxy write (cp.async landing, st_shared_for_async) the async proxy must not see
// before a proxy fence; and, like a cp.async or TMA, not into shared memory a wgmma may still
// read.
inline void generic_write(const void* dst, size_t bytes) {
  if (!state || state->units == 0 || !in_dyn_smem(dst, bytes)) return;
  const size_t o = static_cast<size_t>(static_cast<const unsigned char*>(dst) - block->smem);
  check_released({o, o + bytes}, "st.shared");
  for (size_t u = o / 16; u < (o + bytes + 15) / 16; ++u) {
    if (state->storing[u].load() > 0)
      EMU_FAIL("thread %u writes smem+%zu, which a TMA store has not read yet (no cp.async.bulk.wait_group.read "
               "by its issuer since)", linear_tid(), u * 16);
    state->unfenced[u].store(static_cast<int>(linear_tid()) + 1);
    t_unfenced.push_back(u);
  }
}
inline void fence_proxy_async() {
  const int me = static_cast<int>(linear_tid()) + 1;
  for (size_t u : t_unfenced) {
    int expected = me;
    state->unfenced[u].compare_exchange_strong(expected, 0);
  }
  t_unfenced.clear();
}

// This thread's part of D (+)= A · B: accumulator layout of m64nN f32 (PTX ISA, wgmma "Register
// fragments"): warp w of the warpgroup, lane l, n8 block i: d[4i + e] at row 16w + l/4, column
// 8i + 2(l%4) + e; d[4i + 2 + e] at row 16w + l/4 + 8, same column (e = 0, 1).
// Register A (16-bit, per warp a 16 × 16 tile): element (row 16w + r, k) is half (k % 2) of
// register (r / 8) + 2 (k / 8) of lane 4 (r % 8) + (k % 8) / 2.
inline void execute(const Wgmma& w) {
  {
    std::lock_guard<std::mutex> lk(state->mu);
    for (const Range& r : {w.ra, w.rb})
      if (r.hi > r.lo) --state->reading[{r.lo, r.hi}];
    for (const auto& [o, b] : state->bars)
      for (const Tma& t : b.queued)
        if (overlaps(t.range(), w.ra) || overlaps(t.range(), w.rb))
          EMU_FAIL("wgmma reads smem [%zu, %zu) that a TMA has not landed in (no wait on its mbarrier)",
                   t.range().lo, t.range().hi);
    for (const Range& r : {w.ra, w.rb})
      for (size_t u = r.lo / 16; u < r.hi / 16 && u < state->units; ++u)
        if (const int who = state->unfenced[u].load(); who != 0) {
          EMU_FAIL("wgmma reads smem+%zu, written by thread %d through the generic proxy with no fence.proxy.async "
                   "since", u * 16, who - 1);
          return;
        }
  }
  if (w.rb.hi > block->smem_bytes || w.ra.hi > block->smem_bytes) return;
  const unsigned t = linear_tid() % 128;
  const int warp = static_cast<int>(t / 32), l = static_cast<int>(t % 32);
  if (w.kind == WG_U8S8_RS) {
    // Register A (8-bit, per warp a 16 × 32 tile): element (row 16w + r, k) is byte k % 4 of
    // register (r / 8) + 2 (k / 16) of lane 4 (r % 8) + (k % 16) / 4. Exact int32 sums (wrapping).
    for (int i = 0; i < w.n / 8; ++i)
      for (int h = 0; h < 2; ++h)
        for (int e = 0; e < 2; ++e) {
          const int row = 16 * warp + l / 4 + 8 * h, col = 8 * i + 2 * (l % 4) + e;
          int64_t s = 0;
          for (int k = 0; k < 32; ++k) {
            const int r = row % 16, lane = 4 * (r % 8) + (k % 16) / 4, reg = r / 8 + 2 * (k / 16);
            const uint32_t word = (*w.a_regs)[((row / 16) * 32 + lane) * 4 + reg];
            const int a = static_cast<int>((word >> (8 * (k % 4))) & 0xFFu);
            const int b = static_cast<int8_t>(block->smem[operand_offset(w.desc_b, col, k)]);
            s += static_cast<int64_t>(a) * b;
          }
          int32_t& d = w.di[4 * i + 2 * h + e];
          d = static_cast<int32_t>(static_cast<uint32_t>(w.scale_d ? d : 0) + static_cast<uint32_t>(s));
        }
    return;
  }
  for (int i = 0; i < w.n / 8; ++i)
    for (int h = 0; h < 2; ++h)
      for (int e = 0; e < 2; ++e) {
        const int row = 16 * warp + l / 4 + 8 * h, col = 8 * i + 2 * (l % 4) + e;
        double s = 0.0;
        if (w.kind == WG_E4M3_SS) {
          for (int k = 0; k < 32; ++k)
            s += e4m3(block->smem[operand_offset(w.desc_a, row, k)]) * e4m3(block->smem[operand_offset(w.desc_b, col, k)]);
        } else {
          for (int k = 0; k < 16; ++k) {
            double a;
            if (w.kind == WG_16_SS || w.kind == WG_16_SS_MN) {
              a = half16(smem16(operand_offset(w.desc_a, row, 2 * k)), w.bf16);
            } else {
              const int r = row % 16, lane = 4 * (r % 8) + (k % 8) / 2, reg = r / 8 + 2 * (k / 8);
              const uint32_t word = (*w.a_regs)[((row / 16) * 32 + lane) * 4 + reg];
              a = half16(static_cast<uint16_t>(word >> (16 * (k % 2))), w.bf16);
            }
            const double b = w.kind == WG_16_SS ? half16(smem16(operand_offset(w.desc_b, col, 2 * k)), w.bf16)
                                                : half16(smem16(mn_offset(w.desc_b, col, k)), w.bf16);
            s += a * b;
          }
        }
        float& d = w.d[4 * i + 2 * h + e];
        d = static_cast<float>((w.scale_d ? static_cast<double>(d) : 0.0) + s);
      }
}

inline void wgmma_fence() {
  rendezvous(WG_FENCE, 0, 0, 0);
  t_fenced = true;
}
inline void issue(const Wgmma& w) {
  if (!t_fenced) EMU_FAIL("wgmma.mma_async without wgmma.fence since the last wgmma.wait_group");
  for (const Range& r : t_unlanded)
    if (overlaps(r, w.ra) || overlaps(r, w.rb)) {
      EMU_FAIL("wgmma reads smem [%zu, %zu), which a cp.async had not landed in when its thread arrived on the "
               "mbarrier this thread waited for", r.lo, r.hi);
      break;
    }
  {
    std::lock_guard<std::mutex> lk(state->mu);
    for (const Range& r : {w.ra, w.rb})
      if (r.hi > r.lo) ++state->reading[{r.lo, r.hi}];
  }
  if (cp_eager) execute(w);
  else t_open.push_back(w);
}
inline void wgmma_e4m3(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d) {
  rendezvous(WG_MMA + 16 * n, desc_a, desc_b, static_cast<uint64_t>(scale_d != 0));
  issue(Wgmma{d, n, desc_a, desc_b, scale_d, footprint(desc_a, 64), footprint(desc_b, n)});
}
// 16-bit ss: A [64][k16] K-major; B [n][k16] K-major (imm-trans-b = 0), or with `b_mn_major`
// B [k16][n] MN-major (imm-trans-b = 1).
inline void wgmma_16_ss(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d, bool bf16, bool b_mn_major = false) {
  rendezvous(WG_MMA + 16 * n + 4096 * (1 + bf16 + 4 * b_mn_major), desc_a, desc_b, static_cast<uint64_t>(scale_d != 0));
  Wgmma w{d, n, desc_a, desc_b, scale_d, footprint(desc_a, 64), b_mn_major ? footprint_mn(desc_b, n) : footprint(desc_b, n)};
  w.kind = b_mn_major ? WG_16_SS_MN : WG_16_SS;
  w.bf16 = bf16;
  issue(w);
}
// 16-bit rs: A from the warpgroup's registers, B [k16][n] MN-major (imm-trans-b = 1).
inline void wgmma_16_rs(float* d, int n, const uint32_t (&a)[4], uint64_t desc_b, int scale_d, bool bf16) {
  auto regs = rendezvous(WG_MMA + 16 * n + 4096 * (3 + bf16), 0, desc_b, static_cast<uint64_t>(scale_d != 0), a);
  Wgmma w{d, n, 0, desc_b, scale_d, Range{0, 0}, footprint_mn(desc_b, n)};
  w.kind = WG_16_RS;
  w.bf16 = bf16;
  w.a_regs = std::move(regs);
  issue(w);
}
// int8 rs: A u8 from the warpgroup's registers, B s8 [n][k32] K-major, int32 accumulators.
inline void wgmma_u8s8_rs(int32_t* d, int n, const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  auto regs = rendezvous(WG_MMA + 16 * n + 4096 * 8, 0, desc_b, static_cast<uint64_t>(scale_d != 0), a);
  Wgmma w{nullptr, n, 0, desc_b, scale_d, Range{0, 0}, footprint(desc_b, n)};
  w.kind = WG_U8S8_RS;
  w.di = d;
  w.a_regs = std::move(regs);
  issue(w);
}
inline void wgmma_commit() {
  rendezvous(WG_COMMIT, 0, 0, 0);
  t_groups.push_back(std::move(t_open));
  t_open.clear();
}
// A retired wgmma is complete for the whole warpgroup (its shared-memory reads included): every
// thread computes its part of the retired groups, then they meet once more.
inline void wgmma_wait(int n) {
  rendezvous(WG_WAIT, static_cast<uint64_t>(n), 0, 0);
  while (static_cast<int>(t_groups.size()) > n) {
    for (const Wgmma& w : t_groups.front()) execute(w);
    t_groups.erase(t_groups.begin());
  }
  t_fenced = false;
  state->groups[linear_tid() / 128]->bar.arrive_and_wait();
}

}  // namespace sm90

inline void sm90_generic_write(const void* dst, size_t bytes) { sm90::generic_write(dst, bytes); }
// A cp.async issued into shared memory that a wgmma may still read: its thread arrived on the
// barrier this thread last waited for before the wgmma retired (the TMA check's counterpart).
inline void sm90_async_write(const void* dst, size_t bytes) {
  if (!sm90::state) return;
  const size_t o = static_cast<size_t>(static_cast<const unsigned char*>(dst) - block->smem);
  sm90::check_released({o, o + bytes}, "cp.async");
}
inline void sm90_block_begin(Block& b, unsigned threads) {
  auto* st = new sm90::State;
  st->units = (b.smem_bytes + 15) / 16;
  st->unfenced = std::make_unique<std::atomic<int>[]>(st->units);  // value-initialised: 0
  st->storing = std::make_unique<std::atomic<int>[]>(st->units);
  for (unsigned first = 0; first < threads; first += 128)
    st->groups.push_back(std::make_unique<sm90::WarpGroup>(static_cast<int>(std::min(128u, threads - first))));
  b.sm90 = st;
}
inline void sm90_thread_begin() {  // on a pooled OS thread: every thread_local reset
  sm90::state = &sm90::state_of(block);
  sm90::t_groups.clear();
  sm90::t_open.clear();
  sm90::t_fenced = false;
  sm90::t_released.clear();
  sm90::t_unlanded.clear();
  sm90::t_wg_seq = 0;
  sm90::t_unfenced.clear();
  sm90::t_store_groups.clear();
  sm90::t_store_open.clear();
}
inline void sm90_block_end(Block& blk) {
  auto* st = &sm90::state_of(&blk);
  for (const auto& [id, b] : st->named)
    if (b.arrived != 0) EMU_FAIL("a block ends with %d of %d arrivals on named barrier %d", b.arrived, b.expected, id);
  delete st;
  blk.sm90 = nullptr;
}
inline void sm90_thread_exit() {
  if (!sm90::t_open.empty() || !sm90::t_groups.empty()) EMU_FAIL("thread %u exits with wgmma in flight", linear_tid());
  if (!sm90::t_store_open.empty() || !sm90::t_store_groups.empty())
    EMU_FAIL("thread %u exits with TMA stores that have not read shared memory (no wait_group.read 0)", linear_tid());
  sm90::WarpGroup& g = *sm90::state->groups[linear_tid() / 128];
  --g.live;
  g.bar.arrive_and_drop();
}

}  // namespace emu
