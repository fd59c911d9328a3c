#!/usr/bin/env python3
"""Mechanical rewrite of copies of cuda/ sources into g++-compilable C++ for the host emulation.

  prep.py TARGET OUT_DIR [--seed NAME]

Writes OUT_DIR/<file> for every cuda/ file of TARGET (same relative paths, so the sources' own
#include "..." lines still work), plus verbatim copies of shim.h (with shim_sm90.h and
thread_pool.h), harness.h and the target's test <target>.cpp. The rules, applied to every cuda/ file:
  * `#include <cuda_runtime.h>`           -> `#include "shim.h"`
  * the bodies of the PTX wrappers in common.cuh (cp.async, ldmatrix, mma.sync) and sm90.cuh
    (mbarrier, TMA, wgmma, named barriers) -> shim calls, signatures kept; sm90.cuh's sm_90a
    feature test -> 1 (the Hopper path is built); the `st.global.v4` asm statement -> a shim call
  * `extern __shared__ T name[];`         -> `T* name = reinterpret_cast<T*>(::emu::dyn_smem());`
  * `__shared__ T name[..];`, `__shared__ T name;` -> the calling block's copy, poisoned per
    block (::emu::static_shared)
  * `kernel<...><<<grid, block, smem, stream>>>(args);` -> `::emu::launch_on(stream, kernel<...>, grid, block, smem, args);`
Anything left over (inline asm, __shared__, <<<) is an error: extend the rules, never the copies.
--seed NAME applies one deliberate bug (SEEDS) to show that the target's test catches it.
prep.py --check-seeds fails if a seed's text is no longer in its file exactly once (scripts/test).
"""
import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUDA = HERE.parent.parent / "cuda"

# Per target: the cuda/ files it copies (the .cu ones are compiled) and its test, HERE/<target>.cpp.
TARGETS = {
    "unit": [],
    "attention": ["common.cuh", "sm90.cuh", "attention.cuh", "attention_sm90.cuh", "attention_gqa.cu", "attention_sm90.cu", "attention_mla.cu", "attention_mla_sm90.cu"],
    "elementwise": ["common.cuh", "glu.cuh", "elementwise.cu"],
    "moe_routing": ["common.cuh", "moe_routing.cu", "moe_routing/align.cuh", "moe_routing/permute.cuh"],
    "matmul_fp8": ["common.cuh", "matmul_fp8.cuh", "matmul_fp8_sm80.cu", "sm90.cuh", "matmul_fp8_sm90.cu"],
    "rms_norm": ["common.cuh", "rms_norm.cuh", "rms_norm.cu"],
    "quant_fp8": ["common.cuh", "rms_norm.cuh", "glu.cuh", "quant_fp8/chunk.cuh", "quant_fp8/tensor.cuh", "quant_fp8.cu"],
    "rope": ["common.cuh", "rms_norm.cuh", "rope/args.cuh", "rope.cu"],
    "matmul_ternary": ["common.cuh", "sm90.cuh", "rms_norm.cuh", "matmul_ternary.cuh", "matmul_ternary.cu", "matmul_ternary_sm90.cu"],
}
# Not a test: every kernel file and driver.cpp (a stand-in libcuda / libcublas) in one shared
# library, libwarpcore_emu.so, that the Rust crate links instead of the nvcc build (cargo-test).
LIB_FILES = sorted({f for files in TARGETS.values() for f in files} | {"status.cu"})
TARGETS["lib"] = LIB_FILES

# Deliberate bugs, one at a time: name -> (target, file, old, new). `old` must occur exactly once.
SEEDS = {
    # The shim's ldmatrix.trans reads the rows of the wrong matrix half.
    "ldm_trans": ("unit", "shim.h", "w.ptr[8 * i + 2 * (l & 3) + 1]", "w.ptr[8 * i + 2 * (l & 3)]"),
    # A fragment: swap the row halves of P (a[1] <-> a[2]) in O += P V.
    "pfrag": ("attention", "attention_gqa.cu", "a[mt][1] = pack2<TC>(s[mt][2 * ks][2], s[mt][2 * ks][3]);",
              "a[mt][1] = pack2<TC>(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);"),
    # V ldmatrix.trans addressing: key half from the wrong lane bit.
    "vaddr": ("attention", "attention_gqa.cu",
              "const int key = wn * KW + ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;",
              "const int key = wn * KW + ks * 16 + (lane & 7) + ((lane >> 4) & 1) * 8;"),
    # Prefill keeps Q fragments in registers: only the first k16 slice is ever loaded.
    "qregs": ("attention", "attention_gqa.cu", "if (it == 0) ldmatrix_x4(qf[kk], q_frag);",
              "if (it == 0 && kk == 0) ldmatrix_x4(qf[kk], q_frag);"),
    # Two-tile prefill: the second 16-row tile's S takes the first tile's Q fragment.
    "mtile": ("attention", "attention_gqa.cu", "mma<TC>(s[mt][2 * nn], a[mt], b[0], b[1]);",
              "mma<TC>(s[mt][2 * nn], a[0], b[0], b[1]);"),
    # Causal mask off by one.
    "causal": ("attention", "attention.cuh", "(!p.causal || j <= pos)", "(!p.causal || j < pos)"),
    # A key tile counts as seen whole by every row when its last key is one past the first row's position.
    "unmasked_edge": ("attention", "attention.cuh", "n0 + bn - 1 <= causal_hi;", "n0 + bn - 2 <= causal_hi;"),
    # Split-KV partial row index with the wrong split stride.
    "split": ("attention", "attention.cuh", "(static_cast<int64_t>(blockIdx.z) * p.total_q + tok)",
              "(static_cast<int64_t>(blockIdx.z) * (p.total_q - 1) + tok)"),
    # Page lookup without the range check on the page id.
    "pagecheck": ("attention", "attention.cuh", "if (page < 0 || page >= p.num_pages) return false;", ""),
    # Missing wait: read a stage before its copy group completes (deferred cp.async only).
    "nowait": ("attention", "attention.cuh", "cp_async_wait<S - 2>();\n    const bool keys_exist", "const bool keys_exist"),
    # The K/V ring refills the stage being computed on instead of the one the previous tile used.
    "ring": ("attention", "attention.cuh", "const int next = it + S - 1, ns = next % S;",
             "const int next = it + S - 1, ns = it % S;"),
    # FP8 convert: the first 8-element half written with the second's values.
    "fp8": ("attention", "attention.cuh", "*reinterpret_cast<uint4*>(dst + r * pitch + c * 16) = lo;",
            "*reinterpret_cast<uint4*>(dst + r * pitch + c * 16) = hi;"),
    # FP8 K/V: no barrier between the conversion into the T tiles and the mma reading them
    # (caught with EMU_CP_EAGER=1: the OS threads' timing decides it otherwise).
    "fp8_convert_sync": ("attention", "attention_gqa.cu", "convert_fp8<HDV, BN, C::kThreads>(raw_v, sv, PV);\n      __syncthreads();",
                         "convert_fp8<HDV, BN, C::kThreads>(raw_v, sv, PV);"),
    # FP8 K/V: V's raw stages land on K's (the raw buffers' layout after the T tiles; caught
    # with EMU_CP_EAGER=1: deferred copies land after the stage they overwrite was converted).
    "fp8_raw_layout": ("attention", "attention_gqa.cu", "smem + C::kQ + C::kK + C::kV + C::kRawK) : reinterpret_cast<KV*>(sv);",
                       "smem + C::kQ + C::kK + C::kV + C::kRawK / 2) : reinterpret_cast<KV*>(sv);"),
    # wgmma attention: V's descriptor steps half a column block to the next 64 columns (LBO).
    "sm90_vdesc": ("attention", "attention_sm90.cu", "desc_mn_major_sw128(v_t + ks * 16 * 128, BN * 128)",
                   "desc_mn_major_sw128(v_t + ks * 16 * 128, BN * 64)"),
    # wgmma attention: the cp.async writes are not fenced to the async proxy before the wgmmas read them.
    "sm90_proxy": ("attention", "sm90.cuh", "    }\n    fence_proxy_async_smem();\n    mbar_arrive(&full",
                   "    }\n    mbar_arrive(&full"),
    # wgmma attention: the producer signals a tile full before its copies have landed.
    "sm90_early_full": ("attention", "sm90.cuh",
                        "cp_async_wait<1>();  // tile it - 1 has landed",
                        "cp_async_wait<2>();  // seeded: tile it - 1 may not have landed"),
    # wgmma attention: the producer's first wait on a stage's empty barrier expects a completed phase (deadlock).
    "sm90_empty_phase": ("attention", "sm90.cuh", "mbar_wait(&empty[it % S], ((it / S) & 1) ^ 1);",
                         "mbar_wait(&empty[it % S], (it / S) & 1);"),
    # wgmma attention: P's register A fragment with its k halves swapped (a[1] <-> a[2]).
    "sm90_pfrag": ("attention", "attention_sm90.cu", "a[ks][1] = pack2<TC>(s[8 * ks + 2], s[8 * ks + 3]);",
                   "a[ks][1] = pack2<TC>(s[8 * ks + 4], s[8 * ks + 5]);"),
    # wgmma attention, pipelined loop: a stage is released before the P·V reading its V retires.
    "sm90_early_release": ("attention", "attention_sm90.cu",
                           "    wgmma_wait<0>();\n    fence_o_p();\n    release_v(it - 1);",
                           "    release_v(it - 1);\n    wgmma_wait<0>();\n    fence_o_p();"),
    # wgmma attention, pipelined loop: O rescaled before the previous tile's P·V has landed in it.
    "sm90_early_rescale": ("attention", "attention_sm90.cu",
                           "    release_k(it);\n    wgmma_wait<0>();",
                           "    release_k(it);\n    rescale_rows<HD / 8>(o, corr);\n    wgmma_wait<0>();"),
    # wgmma attention, ping-pong: warpgroup 1 hands over after its last phase too (a half-arrived barrier).
    "sm90_turn_count": ("attention", "attention_sm90.cu",
                        "if (cw == 0 || phase + 1 < phases) named_barrier_arrive(2 - cw, 256);",
                        "named_barrier_arrive(2 - cw, 256);"),
    # wgmma attention, ping-pong: nobody opens warpgroup 0's first turn (deadlock).
    "sm90_turn_open": ("attention", "attention_sm90.cu", "if (cw == 1 && phases > 0) named_barrier_arrive(1, 256);", ""),
    # wgmma attention: Q·Kᵀ k16 slices 16 bytes apart instead of 32.
    "sm90_kslice": ("attention", "attention_sm90.cu", "const int col = (kk % 4) * 32;", "const int col = (kk % 4) * 16;"),
    # wgmma attention over an FP8 cache: the converted f16 tiles are not fenced to the async proxy.
    "sm90_fp8_fence": ("attention", "attention_sm90.cu", "        fence_proxy_async_smem();\n        mbar_arrive(v ? &full_v[st] : &full_k[st]);",
                       "        mbar_arrive(v ? &full_v[st] : &full_k[st]);"),
    # wgmma attention over an FP8 cache: a K stage released before the Q·Kᵀ reading it retires.
    "sm90_fp8_early_k": ("attention", "attention_sm90.cu",
                         "    wgmma_wait<1>();  // S of tile it is ready; P·V of tile it − 1 may still run\n    fence_s();\n    float corr[2];\n    softmax(it, st, corr);\n    release_k(it);",
                         "    release_k(it);\n    wgmma_wait<1>();  // S of tile it is ready; P·V of tile it − 1 may still run\n    fence_s();\n    float corr[2];\n    softmax(it, st, corr);"),
    # The mma.sync loaders' rows (load_rows): a thread's chunks of its row taken consecutively
    # instead of kLanes apart (chunks duplicated and others never loaded).
    "rows_lanes": ("attention", "attention.cuh", "      const int c = c0 + e * kLanes;\n", "      const int c = c0 + e;\n"),
    # key_offset: the row within a page masked with the page size instead of page size − 1.
    "page_mask": ("attention", "attention.cuh", "(j & (p.page_size - 1))", "(j & p.page_size)"),
    # wgmma attention, TMA key tiles: contiguous rows without the sequence's first row.
    "tma_row": ("attention", "attention_sm90.cuh", ": w.kv_start + n0;", ": n0;"),
    # TMA key tiles: a tile's pages looked up by box instead of by page (pages of 256: box 128).
    "tma_page": ("attention", "attention_sm90.cuh", "n0 / p.page_size + lane];", "n0 / p.tma_rows + lane];"),
    # TMA key tiles: a page id outside the cache taken as present (its box reads zeros, keys count).
    "tma_pagecheck": ("attention", "attention_sm90.cuh", "    ok = page >= 0 && page < p.num_pages;\n", ""),
    # TMA key tiles: every kv head reads head 0's K.
    "tma_head": ("attention", "attention_sm90.cuh", "k_head = w.kv_head * p.k_head_stride * 2,", "k_head = 0,"),
    # MLA's TMA key tiles land in the other stage (the one the consumers may still be reading).
    "mla_tma_stage": ("attention", "attention_mla_sm90.cu", "&full[st], sk + st * C::kTile, nullptr);", "&full[st], sk + (st ^ 1) * C::kTile, nullptr);"),
    # wgmma attention over an FP8 cache: the conversion reads raw chunks unswizzled (not where they were copied).
    "sm90_fp8_raw": ("attention", "attention_sm90.cu", "*reinterpret_cast<const uint4*>(src + raw_offset<HD>(r, c));",
                     "*reinterpret_cast<const uint4*>(src + r * HD + c * 16);"),
    # wgmma attention over an FP8 cache: bf16 queries converted to f16 unscaled (|q| > 65504 overflows).
    "sm90_fp8_qscale": ("attention", "attention.cuh",
                        "const int e = min(max(static_cast<int>((__float_as_uint(amax) >> 23) & 0xff) - 127 - 14, -100), 114);",
                        "const int e = 0;"),
    # select_rows accepts index == src_rows.
    "select_oob": ("elementwise", "elementwise.cu", "r >= a.src_rows", "r > a.src_rows"),
    # argmax_rows: ties between threads go to the higher index.
    "argmax_tie": ("elementwise", "elementwise.cu", "(ov == v && oi < i)", "(ov == v && oi > i)"),
    # argmax_rows: within a thread's scan, a later equal value wins (and a NaN compare slips by).
    "argmax_scan": ("elementwise", "elementwise.cu", "if (y > v) {", "if (y >= v) {"),
    # sample_rows, final scan: one tie of the boundary key more than its share is kept.
    "sample_tie": ("elementwise", "elementwise.cu", "tie++ < keep", "tie++ <= keep"),
    # sample_rows: top-p ending at the top-k key with fewer ties than top-k loses to top-k.
    "sample_topp_k": ("elementwise", "elementwise.cu", "(key_p == key_k && c_p < c_k)", "(key_p == key_k && c_p > c_k)"),
    # sample_rows, radix descent: the need is not reduced by the larger digits' total (a lower key).
    # (Not `acc + here > need`: passing over a digit that reaches the need exactly ends at the next
    # lower key with none of its ties taken, the same kept set: an equivalent mutant.)
    "sample_need": ("elementwise", "elementwise.cu", "    need -= sh.acc;\n", ""),
    # sample_rows: the draw's target clamped to mass − 1 in f64 (the bug this target found: above
    # 2^53 mass − 1 rounds up to mass, and a uniform >= 1 found no token: -1).
    "sample_clamp": ("elementwise", "elementwise.cu", "  target = target < mass ? target : mass - 1;\n",
                     "  target = static_cast<uint64_t>(fmin(static_cast<double>(target), static_cast<double>(mass - 1)));\n"),
    # sample_rows, final scan: each 8192-id chunk restarts the kept-weight prefix at 0.
    "sample_chunk": ("elementwise", "elementwise.cu", "    base_w += w_total;\n", ""),
    # sample_rows, per-row settings: the scalar top_k read instead of the row's.
    "sample_row_k": ("elementwise", "elementwise.cu", "p.top_ks != nullptr ? p.top_ks[blockIdx.x] : p.top_k;", "p.top_k;"),
    # sample_rows, per-row settings: a negative top_p not clamped to a need of 1 (wraps around).
    "sample_neg_p": ("elementwise", "elementwise.cu", "uint64_t need = need_f < 1.0 ? 1 : static_cast<uint64_t>(need_f);",
                     "uint64_t need = static_cast<uint64_t>(static_cast<int64_t>(need_f)); need = need < 1 ? 1 : need;"),
    # glu reads up with the gate's stride.
    "glu_stride": ("elementwise", "elementwise.cu", "const T* u = up + row * up_stride;",
                   "const T* u = up + row * gate_stride;"),
    # Gate top-k: ties broken towards the higher expert id.
    "gate_tie": ("moe_routing", "moe_routing.cu", "if (k > k1) {", "if (k >= k1) {"),
    # Gate packed rounds (fast path and pre-filter): the near-tie check dropped (truncated keys decide).
    "gate_near_tie": ("moe_routing", "moe_routing.cu", "return __any_sync(kFull, lane < top_k &&", "return false && __any_sync(kFull, lane < top_k &&"),
    # Gate fast path: a first win drops the lane's second best instead of promoting it. (A rescan
    # that keeps the win itself is no seed: the repeated choice trips the near-tie check.)
    "gate_promote": ("moe_routing", "moe_routing.cu", "            k1 = k2;\n            have2 = false;",
                     "            k1 = 0;\n            have2 = false;"),
    # Gate pre-filter: a tolerance below approx_sigmoid's (emulated) error: candidates lost.
    "prefilter_tol": ("moe_routing", "moe_routing.cu", "constexpr float kPrefilterTol = 0x1p-17f;",
                      "constexpr float kPrefilterTol = 0x1p-23f;"),
    # Gate pre-filter: no margin between the kept groups' approximate sums and the rest.
    "prefilter_margin": ("moe_routing", "moe_routing.cu", "> 8.0f * tol &&", "> 0.0f * tol &&"),
    # Gate pre-filter: the candidates' threshold without its slack (T instead of T - 2 tol).
    "prefilter_thr": ("moe_routing", "moe_routing.cu", ") - 2.0f * tol;", ") - 0.0f * tol;"),
    # Gate pre-filter: equal exact keys go to the higher expert (in its exact rounds).
    "prefilter_tie": ("moe_routing", "moe_routing.cu", "__reduce_min_sync(kFull, key == m ? e : kFull)",
                      "__reduce_max_sync(kFull, key == m ? e : 0u)"),
    # Gate pre-filter: no __syncwarp between writing the candidates and reading them.
    "prefilter_sync": ("moe_routing", "moe_routing.cu", "*dst++ = expert_of(s);\n      __syncwarp();",
                       "*dst++ = expert_of(s);\n"),
    # Align: wrong rank of a token among its expert's peers in the warp.
    "align_rank": ("moe_routing", "moe_routing/align.cuh", "const int rank = __popc(peers & lower);",
                   "const int rank = __popc(peers & ~lower) - 1;"),
    # Combine sums each group of 4 choices in reverse order (no longer the fixed k-order chain).
    "combine_order": ("moe_routing", "moe_routing/permute.cuh", "    for (int j = 0; j < kGroup; ++j)\n      if (ok[j])",
                      "    for (int j = kGroup - 1; j >= 0; --j)\n      if (ok[j])"),
    # Fused add, loop path: the second pass normalises x instead of the stored (rounded) residual.
    "norm_src": ("rms_norm", "rms_norm.cu", "const T* src = ADD ? rr : xr;", "const T* src = xr;"),
    # Quantize: the 128x128 block scale goes to the transposed block.
    "block_scale": ("quant_fp8", "quant_fp8.cu", "scale[blockIdx.y * ss_row + blockIdx.x * ss_col] = s;",
                    "scale[blockIdx.x * ss_row + blockIdx.y * ss_col] = s;"),
    # Single-pass per tensor: the grid barrier does not wait (CTAs read amax slots not yet written).
    "grid_nowait": ("quant_fp8", "quant_fp8/tensor.cuh",
                    "while (((old ^ load_volatile(arrived)) & 0x80000000u) == 0) {",
                    "while (false) {"),
    # Single-pass per tensor: each CTA takes its own amax for the tensor's (no grid-wide maximum).
    "own_amax": ("quant_fp8", "quant_fp8/tensor.cuh", "bits = max(bits, load_volatile(slots + k));",
                 "bits = max(bits, load_volatile(slots + blockIdx.x));"),
    # Gather writes padding rows past num_rows.
    "gather_pad": ("moe_routing", "moe_routing/permute.cuh",
                   "min(static_cast<int64_t>(a.expert_offsets[e + 1]), a.num_rows)",
                   "static_cast<int64_t>(a.expert_offsets[e + 1])"),
    # FP8 GEMM block scales: rows g + 8 of each m16 tile promote with row g's A scale.
    "fp8_srow": ("matmul_fp8", "matmul_fp8_sm80.cu", "min64(m0 + wm * 64 + i * 16 + g + 8 * h, p.m - 1)",
                 "min64(m0 + wm * 64 + i * 16 + g, p.m - 1)"),
    # FP8 GEMM: A's second k16 fragment takes its two k halves swapped (B's not): a wrong k pairing.
    "fp8_kperm": ("matmul_fp8", "matmul_fp8_sm80.cu", "e4m3x4_to_f16x2_scaled(lo.y, a1[0], a1[2]);",
                  "e4m3x4_to_f16x2_scaled(lo.y, a1[2], a1[0]);"),
    # sm_90a wgmma descriptors: the 8-row stride of the 128B-swizzle atoms halved.
    "sm90_sbo": ("matmul_fp8", "sm90.cuh", "(uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32)",
                 "(uint64_t(1) << 16) | (uint64_t(512 >> 4) << 32)"),
    # sm_90a consumers wait for the full barrier's previous phase: they read a stage before its TMA lands.
    "sm90_phase": ("matmul_fp8", "matmul_fp8_sm90.cu", "mbar_wait(&full[s], phase);", "mbar_wait(&full[s], phase ^ 1);"),
    # sm_90a promoted accumulation releases a stage before its wgmmas retire.
    "sm90_release": ("matmul_fp8", "matmul_fp8_sm90.cu",
                     "wgmma_wait<0>();\n#pragma unroll\n          for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);\n"
                     "          if (lane == 0) release(s);",
                     "if (lane == 0) release(s);\n          wgmma_wait<0>();\n#pragma unroll\n"
                     "          for (int i = 0; i < BN / 2; ++i) fence_operand(acc[i]);"),
    # sm_90a cluster pairs: consumers release a stage in their own CTA only (and the empty
    # barriers count them alone), so a peer multicasts into a stage this CTA still reads.
    "sm90_pair_local": ("matmul_fp8", "matmul_fp8_sm90.cu",
                        [("      if constexpr (CM == 2) mbar_arrive_cluster(&empty[stage], rank ^ 1);\n", ""),
                         ("4 * C::kConsumers * CM);", "4 * C::kConsumers);")]),
    # ... no cluster barrier before exit: a CTA may leave while its peer still arrives on its barriers.
    "sm90_pair_exit": ("matmul_fp8", "matmul_fp8_sm90.cu",
                       "  if constexpr (CM > 1) cluster_sync();\n#else", "#else"),
    # ... both CTAs load the same half of the shared B tile into the same place.
    "sm90_pair_slice": ("matmul_fp8", "matmul_fp8_sm90.cu", "t.b0 + rank * (BN / CM)", "t.b0"),
    # The TMA-store epilogue: a box refilled before the store issued from it two boxes ago has
    # read it (no wait_group.read) ...
    "tma_store_reuse": ("matmul_fp8", "matmul_fp8_sm90.cu", "if (tid == 0) tma_store_wait_read<1>();", ""),
    # ... the box's writes not fenced to the async proxy before the store reads them ...
    "tma_store_fence": ("matmul_fp8", "matmul_fp8_sm90.cu",
                        "            fence_proxy_async_smem();\n            named_barrier_sync(1 + cw, 128);  // the box is written",
                        "            named_barrier_sync(1 + cw, 128);  // the box is written"),
    # ... the box written unswizzled (the TMA store reads it 128B-swizzled) ...
    "tma_store_swizzle": ("matmul_fp8", "matmul_fp8_sm90.cu", "16 * (unit ^ (r0 % 8))", "16 * unit"),
    # ... the boxes alternating per tile instead of over the whole sequence: a 192-column tile
    # fills three, so the next tile's first box is the one whose store was just issued ...
    "tma_store_box_parity": ("matmul_fp8", "matmul_fp8_sm90.cu", "boxes + (box_seq % 2) * C::kStoreBox", "boxes + (c / 2 % 2) * C::kStoreBox"),
    # ... and a CTA that exits while its last stores may still read its shared memory.
    "tma_store_exit": ("matmul_fp8", "matmul_fp8_sm90.cu", "if (tid == 0) tma_store_wait_read<0>();", ""),
    # Split-k: a k-slice after the first one adding onto the accumulator of the unit before
    # (fast accumulation) ...
    "split_accumulate": ("matmul_fp8", "matmul_fp8_sm90.cu", "const int accumulate = kPromotes ? kk > 0 : (kb > kb_begin || kk > 0);",
                         "const int accumulate = kPromotes ? kk > 0 : (kb > 0 || kk > 0);"),
    # ... the mma.sync kernel loading a slice's first k-step into stage 0 (its loop reads stage
    # kb % 2: wrong for slices that start at an odd step) ...
    "split80_stage": ("matmul_fp8", "matmul_fp8_sm80.cu", "load_stage<InT>(p, smem + (kb_begin & 1) * kStageBytes, tile, b_rows, kb_begin);",
                      "load_stage<InT>(p, smem, tile, b_rows, kb_begin);"),
    # ... and the reduction leaving out the first slice.
    "split_reduce": ("matmul_fp8", "matmul_fp8_sm80.cu", "for (int32_t j = 0; j < p.k_splits; ++j) {", "for (int32_t j = 1; j < p.k_splits; ++j) {"),
    # A 160-column block-scaled tile promoting every column with its first B block's scale ...
    "block_straddle": ("matmul_fp8", "matmul_fp8_sm90.cu", "const bool second = kStraddle && 8 * i >= split;", "const bool second = false;"),
    # ... or with the split one n8 block late.
    "block_split": ("matmul_fp8", "matmul_fp8_sm90.cu", "const bool second = kStraddle && 8 * i >= split;", "const bool second = kStraddle && 8 * i > split;"),
    # ... or whose second block is past B's last one (the tail of the last n-tile) unclamped.
    "block_clamp": ("matmul_fp8", "matmul_fp8_sm90.cu", "min32(blk0 + 1, static_cast<int32_t>((t.b0 - n0 + p.n - 1) / WC_FP8_BLOCK))", "blk0 + 1"),
    # A tile wider than the rest of n (128×192 at n = 256): B's scales read past the group's n.
    "tail_scales": ("matmul_fp8", "matmul_fp8.cuh", "col < b_end ? p.b_scale[col * p.b_scale_stride_n] : 0.0f", "p.b_scale[col * p.b_scale_stride_n]"),
    # Grouped FP8 GEMM: every group multiplies B's first n rows (the group's B offset lost).
    "grouped_b": ("matmul_fp8", "matmul_fp8.cuh", "t.b0 = static_cast<int32_t>(g * p.n + t.n0);",
                  "t.b0 = static_cast<int32_t>(t.n0);"),
    # ... a tile stores its rows past its group's end (the next group's rows, or rows in none).
    "grouped_end": ("matmul_fp8", "matmul_fp8.cuh", "if (gm >= m_end) continue;", "if (gm >= p.m) continue;"),
    # ... offsets are not made non-decreasing (a group before a smaller offset overlaps the last).
    "grouped_order": ("matmul_fp8", "matmul_fp8.cuh", "lo = max32(hi, min32(max32(p.group_offsets[g], 0), m));",
                      "lo = min32(max32(p.group_offsets[g], 0), m);"),
    # ... the full barrier expects only this CTA's own bytes (A and its B slice).
    "sm90_pair_expect": ("matmul_fp8", "matmul_fp8_sm90.cu", "mbar_arrive_expect_tx(&full[s], C::kStage);",
                         "mbar_arrive_expect_tx(&full[s], C::kStageA + C::kSliceB);"),
    # bf16 operands, sm_80: the A fragment's words in the wrong slots (rows g + 8 take row g's k-hi).
    "bf16_afrag": ("matmul_fp8", "matmul_fp8_sm80.cu", "const uint32_t af[4] = {lo.x, hi.x, lo.y, hi.y};",
                   "const uint32_t af[4] = {lo.x, lo.y, hi.x, hi.y};"),
    # bf16 operands: the store writes the columns past n of a partial last n-tile.
    "bf16_ntail": ("matmul_fp8", "matmul_fp8.cuh", "    if (gn >= p.n) continue;\n", ""),
    # bf16 operands: the k-steps rounded down (a k tail short of a 128-byte stage is dropped).
    "bf16_ktail": ("matmul_fp8", "matmul_fp8.cuh",
                   "return (p.k * static_cast<int64_t>(sizeof(InT)) + kStageBytesK - 1) / kStageBytesK;",
                   "return (p.k * static_cast<int64_t>(sizeof(InT))) / kStageBytesK;"),
    # RoPE, GPT-J on the items path: a rotary item loads from pair index instead of element
    # index 2 * pair (wrong pairs).
    "gptj_pair": ("rope", "rope.cu", "load_elems<T, 2 * N, W::kVector>(w.src + 2 * w.at)",
                  "load_elems<T, 2 * N, W::kVector>(w.src + w.at)"),
    # The padded cos/sin table read unpadded on the vector path (pairs 8 and up take the
    # previous group's slots).
    "table_slot": ("rope", "rope.cu", "const float2* tab = cs + cs_slot(w.at);", "const float2* tab = cs + w.at;"),
    # A 16-byte vector held as words: every element read from its word's low half.
    "elem_half": ("quant_fp8", "common.cuh", "return k % 2 ? f.y : f.x;", "return f.x;"),
    # Fused add + norm -> FP8, chunks held as words: the residual's old vector stored back
    # instead of the rounded sum.
    "chunk_residual": ("quant_fp8", "quant_fp8/chunk.cuh", "*reinterpret_cast<uint4*>(residual + i * V) = c.q[i];",
                       "*reinterpret_cast<uint4*>(residual + i * V) = r;"),
    # The dynamic shared memory allowance remembered before it was ever granted: every launch
    # above 48 KB is refused (common.cuh's allow_dynamic_smem).
    "smem_allow": ("attention", "common.cuh", "if (a != nullptr && (a->devices.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;",
                   "if (a != nullptr) return cudaSuccess;"),
    # glu_quant: a group's scale stored at the row-major index (wrong for column-major scales).
    "gluq_scale": ("quant_fp8", "quant_fp8.cu", "if (a.group && i % kGroupChunks == 0) scale_row[(i / kGroupChunks) * a.ss_col] = s;",
                   "if (a.group && i % kGroupChunks == 0) scale_row[i / kGroupChunks] = s;"),
    # glu_quant: GeLU-tanh launched with the SiLU kernel.
    "gluq_act": ("quant_fp8", "quant_fp8.cu", "case WC_GLU_GELU_TANH: glu_quant_kernel<T, WC_GLU_GELU_TANH>",
                 "case WC_GLU_GELU_TANH: glu_quant_kernel<T, WC_GLU_SILU>"),
    # glu: SiLU's quotient taken as x · (1 + e^-x) (the activation templated per kernel).
    "glu_silu": ("elementwise", "glu.cuh", "return __fdividef(x, 1.0f + expf(-x));", "return x * (1.0f + expf(-x));"),
    # qk_norm_rope: a warp's next head prefetched from the head it is working on.
    # Attention's window start in int (pos - window_left wraps for a window near 2^31 below a
    # negative position).
    "window_wrap": ("attention", "attention.cuh",
                    "return static_cast<int>(max64(static_cast<int64_t>(pos) - p.window_left, INT32_MIN));",
                    "return pos - p.window_left;"),
    # Attention's paged kv_len not clamped below 2^31 - 256 (key indices wrap negative).
    "kv_len_clamp": ("attention", "attention.cuh", "p.block_table_stride * p.page_size), kMaxKeys));",
                     "p.block_table_stride * p.page_size), INT32_MAX));"),
    # items_kernel's rows: every token of a block on row 0's cos/sin table.
    "rows_table": ("rope", "rope.cu", "float2* cs = ROWS ? tables + threadIdx.y * a.table_slots : tables;",
                   "float2* cs = tables;"),
    # items_kernel's rows: the rows past the last token not held back (they read and write a token
    # that does not exist).
    "rows_live": ("rope", "rope.cu", "const bool live = !ROWS || t < a.num_tokens;", "const bool live = true;"),
    "qkn_prefetch": ("rope", "rope.cu", "if (h + kNormWarps < qk_heads) load_first(h + kNormWarps, next);",
                     "if (h + kNormWarps < qk_heads) load_first(h, next);"),
    # Split merge: every batch of loaded splits weighted by the first batch's weights.
    "merge_batch": ("attention", "attention_gqa.cu", "const float f = __shfl_sync(0xffffffffu, f_lane, j0 + u);",
                    "const float f = __shfl_sync(0xffffffffu, f_lane, u);"),
    # The attention epilogue's fourth column summed from the third's values.
    "epilogue_cols": ("attention", "attention.cuh", "ot[3] += o.w * f;", "ot[3] += o.z * f;"),
    # The FP8 raw tiles written swizzled and read back unswizzled (mma.sync kernels).
    "raw_chunk": ("attention", "attention.cuh", "raw + r * HD + raw_chunk<HD>(r, c) * 16", "raw + r * HD + c * 16"),
    # Cache append: slot == num_slots passes the range check (writes one page past the cache).
    "slot_range": ("rope", "rope/args.cuh", "if (slot >= a.num_slots) {", "if (slot > a.num_slots) {"),
    # Angle reduction modulo one half-turn instead of two (flips cos and sin on odd half-turns).
    "angle_reduce": ("rope", "rope/args.cuh", "t -= 2.0 * rint(0.5 * t);", "t -= rint(t);"),
    # FP8 cache: v quantized with k's scale.
    "v_scale": ("rope", "rope.cu", "is_k ? a.k_scale : a.v_scale", "a.k_scale"),
    # qk_norm_rope, GPT-J: the pair partner of element r is r ^ 3 instead of r ^ 1.
    "qkn_partner": ("rope", "rope.cu", ": r ^ 1]", ": r ^ 3]"),
    # qk_norm_rope's VEC chosen from the cache's alignment too (the bug this target found): a
    # misaligned cache makes the appending op sum the squares in another order than qk_norm_rope.
    "qkn_vec": ("rope", "rope.cu", "aligned_to(tb, a.q, a.k, a.q_weight, a.k_weight);",
                "aligned_to(tb, a.q, a.k, a.q_weight, a.k_weight) &&\n"
                "           (!append || aligned_to(vec * static_cast<int>(sizeof(C)), a.k_pages, a.v_pages));"),
    # Ternary GEMM: planes 2 and 3 masked with planes 1 and 0 (columns from the wrong plane).
    # MLA decode: both column groups store their outputs into the first 256 columns.
    "mla_cols": ("attention", "attention_mla.cu", "kMlaDV + wc * COLS + i * 8 + 2 * t4;", "kMlaDV + i * 8 + 2 * t4;"),
    # MLA decode: the second key group multiplies its probabilities by the first group's values.
    "mla_vkeys": ("attention", "attention_mla.cu", "const int key = wk * KW + ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;",
                  "const int key = ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;"),
    # MLA decode: S = Q Kᵀ stops at the latent (the 64 rope dims never enter the scores).
    "mla_rope": ("attention", "attention_mla.cu", "for (int kk = 0; kk < kMlaD / 16; ++kk) {", "for (int kk = 0; kk < kMlaDV / 16; ++kk) {"),
    # Hopper MLA decode: both consumer warpgroups multiply P by the first 256 value columns.
    "mla90_vblock": ("attention", "attention_mla_sm90.cu", "(k_t + (4 * cw + 2 * nh) * BN * 128", "(k_t + (2 * nh) * BN * 128"),
    # Hopper MLA decode: a stage released before the P·V reading its values retires.
    "mla90_release": ("attention", "attention_mla_sm90.cu", "      wgmma_wait<1>();  // P·V of tile it − 1 has retired (S of tile it may still run)\n      fence_o();\n      if (lane == 0) mbar_arrive(&empty[(it - 1) % S]);",
                      "      if (lane == 0) mbar_arrive(&empty[(it - 1) % S]);\n      wgmma_wait<1>();\n      fence_o();"),
    # Hopper MLA decode, back-to-back issue: tile it + 1's S issued before this tile's P·V, right
    # after P is stored (S and P·V still both in flight, but the wait for P·V then waits for S).
    "mla90_early_s": ("attention", "attention_mla_sm90.cu",
                      "    fence_proxy_async_smem();  // the generic-proxy stores, before the wgmma (async proxy) reads them\n    both(2);\n    // O += P V over all 64 keys: P from shared memory (K-major), V = this warpgroup's 256\n    // columns, column blocks 4 cw .. 4 cw + 3 of the tile (an n128 wgmma spans two: LBO the next\n    // block, BN rows on); keys 16 ks .. are 2048 bytes down.\n    fence_o();\n    wgmma_fence();\n#pragma unroll\n    for (int nh = 0; nh < 2; ++nh)\n#pragma unroll\n      for (int ks = 0; ks < BN / 16; ++ks)\n        wgmma_m64n128k16_ss<T, 1>(o[nh], desc_k_major_sw128(sp + ks * 32),\n                               desc_mn_major_sw128(k_t + (4 * cw + 2 * nh) * BN * 128 + ks * 16 * 128, BN * 128), 1);\n    wgmma_commit();\n    if (it + 1 < n_iter) issue_s(it + 1);  // its S registers were read into P above\n",
                      "    if (it + 1 < n_iter) issue_s(it + 1);\n    fence_proxy_async_smem();  // the generic-proxy stores, before the wgmma (async proxy) reads them\n    both(2);\n    // O += P V over all 64 keys: P from shared memory (K-major), V = this warpgroup's 256\n    // columns, column blocks 4 cw .. 4 cw + 3 of the tile (an n128 wgmma spans two: LBO the next\n    // block, BN rows on); keys 16 ks .. are 2048 bytes down.\n    fence_o();\n    wgmma_fence();\n#pragma unroll\n    for (int nh = 0; nh < 2; ++nh)\n#pragma unroll\n      for (int ks = 0; ks < BN / 16; ++ks)\n        wgmma_m64n128k16_ss<T, 1>(o[nh], desc_k_major_sw128(sp + ks * 32),\n                               desc_mn_major_sw128(k_t + (4 * cw + 2 * nh) * BN * 128 + ks * 16 * 128, BN * 128), 1);\n    wgmma_commit();\n"),
    # Hopper MLA decode: the usual producer ring, which signals tile j + 1 only once tile j's stage
    # is free (it issues tile j + 2 first) — which these consumers release only after waiting for
    # tile j + 1 (deadlock).
    "mla90_ring_order": ("attention", "attention_mla_sm90.cu", "produce_cp_async_in_order<S>(n_iter, full, empty, load_tile);",
                         "produce_cp_async<S>(n_iter, full, empty, load_tile);"),
    # Hopper MLA decode: the second n128 half of O is never rescaled by the running max.
    "mla90_rescale": ("attention", "attention_mla_sm90.cu", "    rescale_rows<16>(o[1], corr);\n", ""),
    # Hopper MLA decode: each consumer takes its own half's row max (the two halves of P on
    # different scales).
    "mla90_own_max": ("attention", "attention_mla_sm90.cu",
                      "    for (int h = 0; h < 2; ++h) tile_max[h] = fmaxf(tile_max[h], x_max[(1 - cw) * BM + wq * 16 + g + 8 * h]);\n", ""),
    # Hopper MLA decode: P stored through the generic proxy and read by wgmma with no proxy fence.
    "mla90_no_fence": ("attention", "attention_mla_sm90.cu", "    fence_proxy_async_smem();  // the generic-proxy stores", "    // the generic-proxy stores"),
    # Hopper MLA decode: each row normalised by its own half's sum.
    "mla90_half_sum": ("attention", "attention_mla_sm90.cu", "  for (int h = 0; h < 2; ++h) l[h] += x_sum[(1 - cw) * BM + wq * 16 + g + 8 * h];\n", ""),
    # MLA decode, FP8 latent cache: every tile converted from the first raw stage.
    "mla_fp8_stage": ("attention", "attention_mla.cu", "convert_fp8<kMlaD, BN, C::kThreads>(raw + st * BN * kMlaD, sk, P);",
                      "convert_fp8<kMlaD, BN, C::kThreads>(raw, sk, P);"),
    "tern_plane": ("matmul_ternary", "matmul_ternary.cu", "0x03030303u << (2 * pl)", "0x03030303u << (2 * (pl ^ (pl >> 1 & 1 ? 3 : 0)))"),
    # ... the row sum misses the second k half of rows g + 8.
    "tern_rowsum": ("matmul_ternary", "matmul_ternary.cu",
                    "        rsum[i][1] = __dp4a(static_cast<int>(a[i][3]), 0x01010101, rsum[i][1]);\n", ""),
    # ... the A fragment read without the swizzle its stage was written with.
    "tern_swz": ("matmul_ternary", "matmul_ternary.cu", "swz<C>(r, 4 * wk + 2 * ks + (lane >> 4)) * 16",
                 "(4 * wk + 2 * ks + (lane >> 4)) * 16"),
    # ... activation chunks past k are loaded (reads past the row; garbage in the k tail).
    "tern_ktail": ("matmul_ternary", "matmul_ternary.cu", "ok = m0 + r < p.m && kk < p.k;", "ok = m0 + r < p.m;"),
    # ... split-k partials summed before every warp has written its own.
    "tern_reduce": ("matmul_ternary", "matmul_ternary.cu", "  if constexpr (C::WK > 1) {\n    __syncthreads();\n",
                    "  if constexpr (C::WK > 1) {\n"),
    # Fused add + norm -> int8: x normalised instead of the sum x + residual it stored.
    "tern_norm_src": ("matmul_ternary", "matmul_ternary.cu", "const T* src = ADD ? res : x;", "const T* src = x;"),
    # Split-k: a slice starts at ⌈K·j/s⌉ while the one before ends at ⌊K·j/s⌋ (steps skipped).
    "tern_split_slice": ("matmul_ternary", "matmul_ternary.cu", "const int64_t kt0 = k_tiles * blockIdx.z / gridDim.z,",
                         "const int64_t kt0 = (k_tiles * blockIdx.z + gridDim.z - 1) / gridDim.z,"),
    # ... the first slice to arrive stores the tile (missing the later slices' sums).
    "tern_split_last": ("matmul_ternary", "matmul_ternary.cu", "atomicAdd(part + kSplitTileSums, 1) == static_cast<int>(gridDim.z) - 1",
                        "atomicAdd(part + kSplitTileSums, 1) == 0"),
    # ... the tile's sums read but not cleared (the next launch adds onto them).
    "tern_split_clear": ("matmul_ternary", "matmul_ternary.cu", "atomicExch(part + i, 0)", "atomicAdd(part + i, 0)"),
    # ... the arrival counter not reset (the next launch's last CTA is never found).
    "tern_split_counter": ("matmul_ternary", "matmul_ternary.cu", "      if (threadIdx.x == 0) atomicExch(part + kSplitTileSums, 0);\n", ""),
    # Hopper ternary tile: the token sums Σ q left out of the epilogue.
    "tern90_rowsum": ("matmul_ternary", "matmul_ternary_sm90.cu", " >> (2 * pl)) - s_rowsum[tok];", " >> (2 * pl));"),
    # ... the A fragments read without the swizzle the stage was written with.
    "tern90_afrag": ("matmul_ternary", "matmul_ternary_sm90.cu", "ldmatrix_x4(raw, wt + r * 128 + ((c ^ (r & 7)) * 16));",
                     "ldmatrix_x4(raw, wt + r * 128 + c * 16);"),
    # ... the previous stage released before its last group of wgmmas retires.
    "tern90_release": ("matmul_ternary", "matmul_ternary_sm90.cu", "if (ks == 1 && it > 0 && lane == 0)", "if (ks == 0 && it > 0 && lane == 0)"),
    # ... every plane's codes read through plane 0's mask.
    "tern90_plane": ("matmul_ternary", "matmul_ternary_sm90.cu", "raw[j] & (0x03030303u << (2 * pl))", "raw[j] & 0x03030303u"),
    # Activation scale as the quotient 127 / absmax instead of transformers' reciprocal product.
    "tern_recip": ("matmul_ternary", "matmul_ternary.cu", "__fmul_rn(__frcp_rn(fmaxf(amax, kScaleFloor)), kActMax)",
                   "__fdiv_rn(kActMax, fmaxf(amax, kScaleFloor))"),
    # The split-k arrival flag back in static shared memory: 4 B on top of the decode tile's 48 KB
    # of dynamic, past the default a launch may use without the opt-in (the shim's launch check).
    "tern_static_flag": ("matmul_ternary", "matmul_ternary.cu", "int& last = *reinterpret_cast<int*>(smem + C::kFlagOffset);",
                         "__shared__ int last;"),
}


def matching_brace(text, i):
    """Index of the `}` closing the `{` at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced braces")


def matching_paren(text, i):
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced parentheses")


# PTX wrapper definitions (regex on the signature) -> new body.
PTX_BODIES = [
    # The emulation has its own deadlock checks (shim.h): a zero clock keeps SpinWatch idle.
    (r"uint64_t globaltimer_ns\(\)", "return 0;"),
    (r"void cp_async16\(void\* dst, const void\* src, bool valid\)", "::emu::cp_async16(dst, src, valid);"),
    (r"void cp_async_commit\(\)", "::emu::cp_commit();"),
    (r"float exp2_ftz\(float x\)", "const float y = std::exp2(x); return std::fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;"),
    (r"float approx_sigmoid\(float x\)", "return ::emu::approx_sigmoid(x, det_sigmoid(x));"),
    (r"void cp_async_wait\(\)", "::emu::cp_wait(N);"),
    (r"void ldmatrix_x4\(uint32_t \(&r\)\[4\], const void\* p\)", "::emu::ldmatrix_x4(r, p, false);"),
    (r"void ldmatrix_x4_trans\(uint32_t \(&r\)\[4\], const void\* p\)", "::emu::ldmatrix_x4(r, p, true);"),
    (r"void mma<__nv_bfloat16>\(float \(&c\)\[4\], const uint32_t \(&a\)\[4\], uint32_t b0, uint32_t b1\)",
     "::emu::mma(c, a, b0, b1, true);"),
    (r"void mma<__half>\(float \(&c\)\[4\], const uint32_t \(&a\)\[4\], uint32_t b0, uint32_t b1\)",
     "::emu::mma(c, a, b0, b1, false);"),
    (r"void mma_s8u8\(int \(&c\)\[4\], const uint32_t \(&a\)\[4\], uint32_t b0, uint32_t b1\)",
     "::emu::mma_s8u8(c, a, b0, b1);"),
    # programmatic dependent launch: the emulation runs a stream's kernels one after the other
    (r"void grid_dependency_wait\(\)", ""),
    (r"void grid_dependents_launch\(\)", ""),
    # sm90.cuh (shim_sm90.h)
    (r"void mbar_init\(uint64_t\* bar, uint32_t count\)", "::emu::sm90::mbar_init(bar, count);"),
    (r"void fence_barrier_init\(\)", ""),
    (r"void mbar_arrive_expect_tx\(uint64_t\* bar, uint32_t bytes\)", "::emu::sm90::mbar_arrive(bar, bytes);"),
    (r"void mbar_expect_tx\(uint64_t\* bar, uint32_t bytes\)", "::emu::sm90::mbar_expect_tx(bar, bytes);"),
    (r"void mbar_arrive\(uint64_t\* bar\)", "::emu::sm90::mbar_arrive(bar, 0);"),
    (r"void mbar_wait\(uint64_t\* bar, uint32_t parity\)", "::emu::sm90::mbar_wait(bar, parity);"),
    (r"void prefetch_tensor_map\(const void\* map\)", "(void)map;"),
    (r"void tma_load_2d\(void\* dst, const void\* map, uint64_t\* bar, int32_t c0, int32_t c1\)",
     "::emu::sm90::tma_load_2d(dst, map, bar, c0, c1);"),
    (r"void tma_store_2d\(const void\* src, const void\* map, int32_t c0, int32_t c1\)",
     "::emu::sm90::tma_store_2d(src, map, c0, c1);"),
    (r"void tma_store_commit\(\)", "::emu::sm90::tma_store_commit();"),
    (r"void tma_store_wait_read\(\)", "::emu::sm90::tma_store_wait_read(N);"),
    (r"void cluster_sync\(\)", "::emu::sm90::cluster_arrive(); ::emu::sm90::cluster_wait();"),
    (r"void mbar_arrive_cluster\(uint64_t\* bar, uint32_t cta\)", "::emu::sm90::mbar_arrive_cluster(bar, cta);"),
    (r"void tma_load_2d_multicast\(void\* dst, const void\* map, uint64_t\* bar, int32_t c0, int32_t c1,\s*uint16_t mask\)",
     "::emu::sm90::tma_load_2d_multicast(dst, map, bar, c0, c1, mask);"),
    (r"void wgmma_fence\(\)", "::emu::sm90::wgmma_fence();"),
    (r"void wgmma_commit\(\)", "::emu::sm90::wgmma_commit();"),
    (r"void wgmma_wait\(\)", "::emu::sm90::wgmma_wait(N);"),
    (r"void fence_operand\(float& r\)", "(void)r;"),
    (r"void setmaxnreg_inc\(\)", ""),
    (r"void setmaxnreg_dec\(\)", ""),
    (r"void named_barrier_sync\(int id, int threads\)", "::emu::sm90::named_barrier_sync(id, threads);"),
    (r"void named_barrier_arrive\(int id, int threads\)", "::emu::sm90::named_barrier_arrive(id, threads);"),
    (r"void fence_proxy_async_smem\(\)", "::emu::sm90::fence_proxy_async();"),
    (r"void st_shared_for_async\(void\* p, uint32_t v\)", "memcpy(p, &v, 4);\n  ::emu::sm90_generic_write(p, 4);"),
    (r"void st_shared_for_async16\(void\* p, uint4 v\)", "memcpy(p, &v, 16);\n  ::emu::sm90_generic_write(p, 16);"),
    (r"void fence_operand_u32\(uint32_t& r\)", "(void)r;"),
    (r"void fence_operand_i32\(int32_t& r\)", "(void)r;"),
    (r"void wgmma_m64n64k32_u8s8_rs\(int32_t \(&d\)\[32\], const uint32_t \(&a\)\[4\], uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_u8s8_rs(d, 64, a, desc_b, scale_d);"),
    (r"void wgmma_m64n128k16_ss\(float \(&d\)\[64\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_ss(d, 128, desc_a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value, TRANS_B != 0);"),
    (r"void wgmma_m64n256k16_ss\(float \(&d\)\[128\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_ss(d, 256, desc_a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);"),
    (r"void wgmma_m64n32k16_ss\(float \(&d\)\[16\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_ss(d, 32, desc_a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);"),
    (r"void wgmma_m64n64k16_ss\(float \(&d\)\[32\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_ss(d, 64, desc_a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);"),
    (r"void wgmma_m64n64k16_rs\(float \(&d\)\[32\], const uint32_t \(&a\)\[4\], uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_rs(d, 64, a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);"),
    (r"void wgmma_m64n128k16_rs\(float \(&d\)\[64\], const uint32_t \(&a\)\[4\], uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_16_rs(d, 128, a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);"),
    (r"void wgmma_m64n128k32_e4m3\(float \(&d\)\[64\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_e4m3(d, 128, desc_a, desc_b, scale_d);"),
    (r"void wgmma_m64n160k32_e4m3\(float \(&d\)\[80\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_e4m3(d, 160, desc_a, desc_b, scale_d);"),
    (r"void wgmma_m64n192k32_e4m3\(float \(&d\)\[96\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_e4m3(d, 192, desc_a, desc_b, scale_d);"),
    (r"void wgmma_m64n256k32_e4m3\(float \(&d\)\[128\], uint64_t desc_a, uint64_t desc_b, int scale_d\)",
     "::emu::sm90::wgmma_e4m3(d, 256, desc_a, desc_b, scale_d);"),
]
# The sm_90a feature test of sm90.cuh: the emulation builds the Hopper path.
SM90A_TEST = "defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)"
ST_GLOBAL_V4 = re.compile(r'asm volatile\("st\.global\.v4\.b32.*?\);', re.S)
DYN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w[\w:<>, ]*?)\s+(\w+)\[\]\s*;")
SHARED = re.compile(r"__shared__\s+(?:__align__\(\d+\)\s+)?(\w[\w:<>, ]*?)\s+(\w+)((?:\[[^\]]*\])+)\s*;")
SHARED_SCALAR = re.compile(r"__shared__\s+(?:__align__\(\d+\)\s+)?(\w[\w:<>, ]*?)\s+(\w+)\s*;")


def replace_bodies(text):
    for header, body in PTX_BODIES:
        m = re.search(header + r"\s*\{", text)
        if m:
            i = m.end() - 1
            text = text[: i + 1] + "\n  " + body + "\n" + text[matching_brace(text, i):]
    return ST_GLOBAL_V4.sub("::emu::st_global_v4(dst, w);", text)


def split_top(s):
    """Split at commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "([{<"
        depth -= ch in ")]}>"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def rewrite_launches(s):
    out, i = [], 0
    while (j := s.find("<<<", i)) >= 0:
        k = j  # back over the kernel's template arguments and name
        if s[k - 1] == ">":
            depth = 0
            while True:
                k -= 1
                depth += s[k] == ">"
                depth -= s[k] == "<"
                if depth == 0:
                    break
        while k > 0 and (s[k - 1].isalnum() or s[k - 1] in "_:"):
            k -= 1
        e = s.index(">>>", j)
        cfg = split_top(s[j + 3:e])
        assert s[e + 3] == "(" and len(cfg) in (2, 3, 4), s[k:e + 20]
        p = matching_paren(s, e + 3)
        smem = cfg[2] if len(cfg) > 2 else "0"
        args = s[e + 4:p]
        out.append(s[i:k])
        stream = cfg[3] if len(cfg) > 3 else "nullptr"
        out.append(f"::emu::launch_on({stream}, {s[k:j]}, dim3({cfg[0]}), dim3({cfg[1]}), static_cast<size_t>({smem})"
                   + (f", {args})" if args.strip() else ")"))
        i = p + 1
    return "".join(out) + s[i:]


def rewrite(text):
    text = text.replace("#include <cuda_runtime.h>", '#include "shim.h"')
    text = text.replace(SM90A_TEST, "1  /* host-emu: the sm_90a path */")
    # attention_gqa.cu: both shared-memory sizings are built; the shim's compute capability
    # (EMU_CC, default 90) makes the launcher pick one.
    text = text.replace("return hopper == kHopperTarget;", "return true;  /* host-emu: every target */")
    text = replace_bodies(text)
    text = DYN_SHARED.sub(lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(::emu::dyn_smem());", text)
    # A static __shared__ array: a reference to the calling block's copy (blocks of a cluster or a
    # cooperative grid run at the same time), keyed by a function-local static.
    text = SHARED.sub(lambda m: f"static char {m[2]}_emu_key; {m[1]} (&{m[2]}){m[3]} = "
                      f"*reinterpret_cast<{m[1]} (*){m[3]}>(::emu::static_shared(&{m[2]}_emu_key, sizeof({m[1]}{m[3]})));",
                      text)
    # A static __shared__ scalar or struct: likewise, a reference to the calling block's copy.
    text = SHARED_SCALAR.sub(lambda m: f"static char {m[2]}_emu_key; {m[1]}& {m[2]} = "
                             f"*reinterpret_cast<{m[1]}*>(::emu::static_shared(&{m[2]}_emu_key, sizeof({m[1]})));",
                             text)
    text = rewrite_launches(text)
    for leftover in (r"\basm\b", r"__shared__", r"<<<"):
        m = re.search(leftover, text)
        assert m is None, f"no rewrite rule for: {text[max(0, m.start() - 80):m.end() + 80]}"
    return text


def prepare(target, out, seed=None):
    """Writes TARGET's build inputs under OUT; returns the translation units (.cu copies, the test)."""
    sources = {f: (CUDA / f).read_text() for f in TARGETS[target]}
    # The shim and the test are copied too, so that every translation unit includes the same
    # (possibly seeded) shim.h: a quoted include looks next to the including file first.
    own = ["shim.h", "shim_sm90.h", "thread_pool.h", "harness.h", "driver.cpp" if target == "lib" else f"{target}.cpp"]
    sources.update({f: (HERE / f).read_text() for f in own})
    if seed:
        seed_target, f, *change = SEEDS[seed]  # (old, new), or a list of (old, new) pairs
        assert seed_target == target, f"seed {seed} is for {seed_target}, not {target}"
        for old, new in change[0] if len(change) == 1 else [change]:
            assert sources[f].count(old) == 1, f"seed {seed}: the text to replace is not in {f} exactly once"
            sources[f] = sources[f].replace(old, new)
    units = []
    for f, text in sources.items():
        dst = out / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = text if f in own else rewrite(text)
        if not dst.exists() or dst.read_text() != text:  # keep mtimes of unchanged files
            dst.write_text(text)
        if f.endswith((".cu", ".cpp")):
            units.append(dst)
    return units


def stale_seeds():
    """The seeds whose text to replace is no longer in their file exactly once (the kernels moved
    on): each must be retargeted, or it would fail to build instead of showing a caught bug."""
    stale = []
    for seed, (target, f, *change) in SEEDS.items():
        text = ((CUDA if f in TARGETS[target] else HERE) / f).read_text()
        for old, _ in change[0] if len(change) == 1 else [change]:
            if text.count(old) != 1:
                stale.append(f"{seed} ({f}: found {text.count(old)} times)")
    return stale


def main():
    if sys.argv[1:] == ["--check-seeds"]:  # scripts/test: no target, no output folder
        stale = stale_seeds()
        for s in stale:
            print(f"prep.py: stale seed {s}", file=sys.stderr)
        return 1 if stale else 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=TARGETS)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", choices=SEEDS)
    a = ap.parse_args()
    for u in prepare(a.target, a.out, a.seed):
        print(u)


if __name__ == "__main__":
    sys.exit(main())
