//! Unit tests of the FP8 GEMM's host side: the planner, the tile walk (through the C side),
//! the launchers' refusals, scale pairs and TMA boxes.

use super::*;
use ScaleGranularity::{Block128, Group128, PerRow, PerTensor};

fn problem(m: usize, n: usize, k: usize, accumulation: Accumulation) -> MatmulFp8Problem {
    MatmulFp8Problem { m, n, k, accumulation, groups: 0, input: GemmInput::E4m3, out_bf16: true, residual: false }
}
use Accumulation::*;

fn plan(m: usize, n: usize, k: usize, acc: Accumulation) -> TileConfig {
    plan_sm90(&problem(m, n, k, acc), 132, None).unwrap()
}

/// The planners are public pure functions: sizes past anything an op accepts give a plan, not
/// an overflow panic (their products saturate).
#[test]
fn the_planners_take_any_sizes() {
    for (m, n, k) in [(usize::MAX, usize::MAX, usize::MAX), (usize::MAX, 128, 128), (1, usize::MAX - 127, 1 << 62)] {
        for acc in [Fast, BlockScaled] {
            let p = problem(m, n, k, acc);
            let _ = plan_sm90(&p, 132, None);
            let _ = sm90_candidates(&p, 132);
            let _ = plan_sm80(&p, 132);
            let _ = plan_sm80(&MatmulFp8Problem { groups: usize::MAX, ..p }, 132);
        }
    }
}

#[test]
fn the_planner_picks_the_expected_tiles_for_the_bench_shapes() {
    // 4096×7168: 32 × 28 = 896 tiles of 128×256; as pairs 448 units over 66 slots: 6.8
    // waves either way, so pairs.
    let t = plan(4096, 7168, 2048, Fast);
    assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m, t.group_m), (128, 256, 132, 2, 4));
    let t = plan(8192, 8192, 8192, Fast);
    assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 256, 2));
    let t = plan(4096, 7168, 2048, Promoted);
    assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 128, 2));
    // Small m: 64-row tiles fill more SMs (2 × 56 = 112 CTAs), no clusters.
    let t = plan(128, 7168, 2048, Fast);
    assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m), (64, 128, 112, 1));
    let t = plan(1, 7168, 2048, Promoted);
    assert_eq!((t.block_m, t.block_n, t.cluster_m), (64, 128, 1));
    let t = plan(4096, 7168, 16384, BlockScaled);
    assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m), (128, 128, 132, 2));
    // Forced: no pairs, or pairs where the plan would not have them.
    let t = plan_sm90(&problem(4096, 7168, 2048, Fast), 132, Some(1)).unwrap();
    assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m, t.group_m), (128, 256, 132, 1, 8));
    let t = plan_sm90(&problem(128, 7168, 2048, Fast), 132, Some(2)).unwrap();
    assert_eq!((t.block_m, t.cluster_m), (128, 2));
    assert_eq!(plan_sm90(&problem(128, 7168, 2048, Fast), 132, Some(3)), None);
    assert_eq!(plan_sm90(&problem(128, 7168, 2048, Fast), 1, Some(2)), None);
}

#[test]
fn the_tuners_candidates_hold_the_plan_and_pass_the_check() {
    for (m, n, acc) in [(4096, 7168, Fast), (8192, 8192, Fast), (128, 7168, Fast), (4096, 7168, Promoted), (4096, 7168, BlockScaled), (1, 384, Promoted)] {
        let p = problem(m, n, 2048, acc);
        let c = sm90_candidates(&p, 132);
        assert!(c.contains(&plan_sm90(&p, 132, None).unwrap()), "{p:?}");
        for t in &c {
            assert_eq!(check_sm90_tile(&p, t), Ok(()), "{t:?}");
        }
        // 128×256 (fast), 128×192 and 128×160 (promoted), 128×160 (block-scaled) and 128×128,
        // alone and paired, and 64×128, each at three groups; the 128-row ones of whole 64-column
        // boxes with the TMA-store epilogue too. Without the tuning feature, neither the
        // UNMEASURED tiles nor the TMA store.
        let (shapes, tma) = match (acc, TUNING_BUILT) {
            (Fast, true) => (5, 4),
            (Promoted, true) => (7, 4),
            (BlockScaled, true) => (5, 2),
            (Fast, false) => (5, 0),
            (Promoted | BlockScaled, false) => (3, 0),
        };
        // Plus split-k for the lone tiles of shapes that leave SMs idle: 2–16 slices, up to two
        // waves, at the planner's group.
        let (split, whole): (Vec<&TileConfig>, Vec<&TileConfig>) = c.iter().partition(|t| t.k_splits > 1);
        assert_eq!(whole.len(), 3 * shapes + tma, "{p:?}: {c:?}");
        for t in &split {
            let tiles = p.m_tiles(t.block_m) * p.n.div_ceil(t.block_n);
            assert!(t.cluster_m == 1 && !t.tma_store && t.group_m == 8 && tiles < 132 && tiles * t.k_splits <= 264, "{t:?}");
            assert_eq!(t.num_ctas, (tiles * t.k_splits).min(132), "{t:?}");
        }
        assert_eq!(split.is_empty(), m >= 4096, "{p:?}: {split:?}");
        assert_eq!(c.iter().filter(|t| t.tma_store).count(), tma);
        assert!(c.iter().all(|t| !t.tma_store || t.block_m == 128));
        // No TMA store with a residual or f32 out, nor for a grouped GEMM.
        for q in [MatmulFp8Problem { residual: true, ..p }, MatmulFp8Problem { out_bf16: false, ..p }, MatmulFp8Problem { groups: 2, ..p }] {
            assert!(sm90_candidates(&q, 132).iter().all(|t| !t.tma_store), "{q:?}");
        }
    }
    // The plan's pick is a candidate at every shape the tuner times, split or not (5 slices for
    // the 24 tiles of n = 3072 is not one of the listed counts).
    for (m, n, k, acc) in [(32, 3072, 2048, BlockScaled), (32, 2048, 2048, BlockScaled), (32, 16384, 2048, BlockScaled), (32, 2048, 8192, BlockScaled), (1, 7168, 2048, Promoted), (2048, 3072, 2048, BlockScaled)] {
        let p = problem(m, n, k, acc);
        let c = sm90_candidates(&p, 132);
        let plan = plan_sm90(&p, 132, None).unwrap();
        assert!(c.contains(&plan), "{p:?}: {plan}");
        assert!(c.iter().all(|t| check_sm90_tile(&p, t).is_ok()), "{p:?}");
    }
    // One GEMM's pairs may be forced where the plan has none; a grouped GEMM (one group too)
    // has none at all.
    let t = TileConfig { block_m: 128, block_n: 256, group_m: 8, num_ctas: 132, cluster_m: 2, tma_store: false, k_splits: 1 };
    assert_eq!(check_sm90_tile(&problem(128, 7168, 2048, Fast), &t), Ok(()));
    let one_group = MatmulFp8Problem { groups: 1, ..problem(4096, 7168, 2048, Fast) };
    assert!(check_sm90_tile(&one_group, &t).is_err());
    assert_eq!(plan_sm90(&one_group, 132, None).unwrap().cluster_m, 1);
    assert!(sm90_candidates(&one_group, 132).iter().all(|t| t.cluster_m == 1));
}

#[test]
fn a_callers_tile_is_checked() {
    let p = problem(4096, 7168, 2048, Promoted);
    let good = TileConfig { block_m: 128, block_n: 128, group_m: 8, num_ctas: 132, cluster_m: 2, tma_store: false, k_splits: 1 };
    assert_eq!(check_sm90_tile(&p, &good), Ok(()));
    for bad in [
        TileConfig { block_n: 256, ..good },                  // promotion has no 256-wide tile
        TileConfig { block_m: 64, ..good },                   // pairs of 64-row tiles
        TileConfig { cluster_m: 3, ..good },                  // clusters of 3
        TileConfig { group_m: 0, ..good },                    // no tile order
        TileConfig { num_ctas: 131, ..good },                 // half a cluster
        TileConfig { num_ctas: 0, cluster_m: 1, ..good },     // no CTA
        TileConfig { block_m: 96, cluster_m: 1, ..good },     // not built
        TileConfig { block_m: 64, cluster_m: 1, tma_store: true, ..good }, // TMA store: 128-row tiles
    ] {
        assert!(check_sm90_tile(&p, &bad).is_err(), "{bad:?}");
    }
    let tma = TileConfig { tma_store: true, ..good };
    assert_eq!(check_sm90_tile(&p, &tma).is_ok(), TUNING_BUILT);
    assert!(check_sm90_tile(&MatmulFp8Problem { residual: true, ..p }, &tma).is_err());
    assert!(check_sm90_tile(&MatmulFp8Problem { out_bf16: false, ..p }, &tma).is_err());
    // A caller's tile need not divide n (the last n-tile is partial), e4m3 or bf16.
    let t = TileConfig { block_m: 128, block_n: 256, group_m: 8, num_ctas: 132, cluster_m: 1, tma_store: false, k_splits: 1 };
    assert_eq!(check_sm90_tile(&problem(4096, 384, 2048, Fast), &t), Ok(()));
    assert_eq!(check_sm90_tile(&MatmulFp8Problem { input: GemmInput::Bf16, ..problem(4096, 384, 2048, Fast) }, &t), Ok(()));
    // 128×192 promoted: built with the tuning feature (alone, pairs, TMA store), fast and
    // block-scaled have none.
    let wide = TileConfig { block_n: 192, ..good };
    assert_eq!(check_sm90_tile(&p, &wide).is_ok(), TUNING_BUILT);
    assert_eq!(check_sm90_tile(&p, &TileConfig { tma_store: true, ..wide }).is_ok(), TUNING_BUILT);
    assert!(check_sm90_tile(&problem(4096, 7168, 2048, Fast), &wide).is_err());
    assert!(check_sm90_tile(&problem(4096, 7168, 2048, BlockScaled), &wide).is_err());
    // 128×160, promoted and block-scaled (with the tuning feature): no TMA store (two and a
    // half 64-column boxes).
    let w160 = TileConfig { block_n: 160, ..good };
    for acc in [Promoted, BlockScaled] {
        assert_eq!(check_sm90_tile(&problem(4096, 7168, 2048, acc), &w160).is_ok(), TUNING_BUILT);
        assert!(check_sm90_tile(&problem(4096, 7168, 2048, acc), &TileConfig { tma_store: true, ..w160 }).is_err());
    }
    // The planner's tiles are checked the same with or without the feature.
    assert_eq!(check_sm90_tile(&p, &TileConfig { block_n: 128, ..good }), Ok(()));
}

/// The split-k reduction finishes the mma.sync kernel's k-slices as well as the wgmma kernel's,
/// so it must be built for every target the build has, not only with the sm_90a-only file (an
/// sm_80 GPU would otherwise fail every split GEMM with no kernel image after its first launch).
#[test]
fn the_split_k_reduction_is_built_for_every_target() {
    use crate::resources::KERNELS;
    let mut archs: Vec<&str> = KERNELS.iter().map(|k| k.arch).collect();
    archs.sort_unstable();
    archs.dedup();
    for arch in archs {
        assert!(KERNELS.iter().any(|k| k.arch == arch && k.name.contains("matmul_fp8_split_k_reduce")), "no split-k reduction for {arch}");
    }
}

#[cfg(not(feature = "matmul-fp8-tuning"))]
#[test]
fn without_the_tuning_feature_the_tuning_configurations_are_refused() {
    let good = TileConfig { block_m: 128, block_n: 128, group_m: 8, num_ctas: 132, cluster_m: 1, tma_store: false, k_splits: 1 };
    let why = Err("tile (the UNMEASURED tiles and tma_store are built only with the `matmul-fp8-tuning` feature)");
    for &(bm, bn, acc) in UNMEASURED {
        let p = problem(4096, 7680, 2048, acc); // 7680 = 40 · 192 = 48 · 160
        assert_eq!(check_sm90_tile(&p, &TileConfig { block_m: bm, block_n: bn, ..good }), why);
        assert!(sm90_candidates(&p, 132).iter().all(|t| !is_unmeasured(acc, t) && !t.tma_store));
    }
    assert_eq!(check_sm90_tile(&problem(4096, 7168, 2048, Fast), &TileConfig { tma_store: true, ..good }), why);
}

#[cfg(feature = "matmul-fp8-tuning")]
#[test]
fn the_unmeasured_wide_tiles_are_tune_candidates_and_never_planned() {
    for (m, n) in [(4096, 7168), (8192, 8192), (128, 7168), (4096, 384)] {
        for (acc, bn) in [(Promoted, 192), (Promoted, 160), (BlockScaled, 160)] {
            let p = problem(m, n, 2048, acc);
            let cands = sm90_candidates(&p, 132);
            assert!(cands.iter().any(|t| (t.block_n, t.cluster_m, t.tma_store) == (bn, 1, false)), "{m} {n} {acc:?}");
            assert!(cands.iter().any(|t| (t.block_n, t.cluster_m, t.tma_store) == (bn, 2, false)), "{m} {n} {acc:?}");
            assert_eq!(cands.iter().any(|t| t.block_n == bn && t.tma_store), bn % 64 == 0, "{m} {n} {acc:?}");
            for cluster in [None, Some(1), Some(2)] {
                assert_ne!(plan_sm90(&p, 132, cluster).map(|t| t.block_n), Some(bn), "{m} {n} {acc:?} {cluster:?}");
            }
            // bench --tune times these in a pass of their own, after the planner's tiles.
            assert!(!is_unmeasured(acc, &plan_sm90(&p, 132, None).unwrap()));
            let wide = cands.iter().filter(|t| t.block_n == 160 || t.block_n == 192).count();
            assert_eq!(cands.iter().filter(|t| is_unmeasured(acc, t)).count(), wide, "{m} {n} {acc:?}");
            // 7168 / 192 = 37.3: 38 n-tiles, the last one a third full; one CTA per unit at most.
            let t = cands.iter().find(|t| t.block_n == bn && t.cluster_m == 1).unwrap();
            assert_eq!(t.num_ctas, (m.div_ceil(128) * n.div_ceil(bn)).min(132));
        }
    }
}

#[test]
fn fast_accumulation_pairs_128_wide_tiles_where_256_does_not_divide_n() {
    // n = 3 · 128: no 128×256 tile; the 128×128 fast tile runs as pairs (built).
    let t = plan(4096, 384, 2048, Fast);
    assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 128, 2));
}

#[test]
fn pairs_are_dropped_where_they_cost_a_wave() {
    // 3 m-tiles × 44 n-tiles = 132 tiles: one wave alone; as pairs 2 × 44 = 88 units over
    // 66 slots: two waves.
    let t = plan(384, 44 * 128, 4096, Promoted);
    assert_eq!((t.block_m, t.cluster_m, t.num_ctas), (128, 1, 132));
}

#[test]
fn small_problems_split_k_over_the_idle_sms() {
    // A decode step's projections (m = 1 or 32) on 64×128 tiles: down / o_proj (n = 2048) are 16
    // tiles, qkv (n = 3072) 24 — without splitting, their weights stream through 16–24 SMs.
    for m in [1, 32] {
        let t = plan(m, 2048, 8192, Promoted);
        assert_eq!((t.block_m, t.block_n, t.k_splits, t.num_ctas), (64, 128, 8, 128), "{t}");
        let t = plan(m, 2048, 2048, BlockScaled);
        assert_eq!((t.k_splits, t.num_ctas), (8, 128), "{t}");
        let t = plan(m, 3072, 2048, Fast);
        assert_eq!((t.k_splits, t.num_ctas), (5, 120), "{t}");
    }
    // Slices of at least two k-steps: k = 512 has four.
    assert_eq!(plan(1, 2048, 512, Promoted).k_splits, 2);
    assert_eq!(plan(1, 2048, 256, Promoted).k_splits, 1);
    // Tiles that fill more than a quarter of the SMs (one token through n = 7168: 56 tiles),
    // and the bars' large shapes: none.
    assert_eq!(plan(1, 7168, 2048, Promoted).k_splits, 1);
    assert_eq!(plan(128, 7168, 2048, Fast).k_splits, 1);
    assert_eq!(plan(4096, 7168, 16384, BlockScaled).k_splits, 1);
    // Grouped GEMMs and forced pairs: none.
    let grouped = MatmulFp8Problem { groups: 8, ..problem(1, 2048, 8192, Promoted) };
    assert_eq!(plan_sm90(&grouped, 132, None).unwrap().k_splits, 1);
    assert_eq!(plan_sm90(&problem(256, 2048, 8192, Promoted), 132, Some(2)).unwrap().k_splits, 1);
    // The workspace bounds the slices: 128×256 tiles of m = 128 at n = 512 (2 tiles) on a GPU
    // of 132 SMs could take 16 slices; 16 · 128 · 512 floats fit, so they do.
    let p = problem(128, 512, 8192, Fast);
    assert!(p.split_k_fits(16) && !MatmulFp8Problem { m: 4096, ..p }.split_k_fits(16));
    assert!(!p.split_k_fits(1) && !p.split_k_fits(65) && p.split_k_fits(64));
    assert!(!MatmulFp8Problem { input: GemmInput::Bf16, k: 64, ..p }.split_k_fits(2));
    // A caller's tile: k_splits checked.
    let good = TileConfig { block_m: 64, block_n: 128, group_m: 8, num_ctas: 128, cluster_m: 1, tma_store: false, k_splits: 8 };
    let p = problem(32, 2048, 2048, Promoted);
    assert_eq!(check_sm90_tile(&p, &good), Ok(()));
    let pair = TileConfig { block_m: 128, cluster_m: 2, ..good };
    assert_eq!(check_sm90_tile(&p, &TileConfig { k_splits: 1, ..pair }), Ok(()));
    for bad in [
        TileConfig { k_splits: 0, ..good },
        TileConfig { k_splits: 17, ..good }, // 16 k-steps
        pair,
        TileConfig { block_m: 128, tma_store: true, ..good },
    ] {
        assert!(check_sm90_tile(&p, &bad).is_err(), "{bad:?}");
    }
    assert!(check_sm90_tile(&MatmulFp8Problem { groups: 2, ..p }, &good).is_err());
    assert!(check_sm90_tile(&MatmulFp8Problem { m: 2048, ..p }, &good).is_err()); // 8 · 2048 · 2048 floats
    assert_eq!(good.to_string(), "64x128 c1 g8 ctas128 k8");
    assert_eq!(good.unsplit(), TileConfig { k_splits: 1, num_ctas: 16, ..good });
    assert_eq!(good.unsplit().unsplit(), good.unsplit());
}

#[test]
fn every_plan_is_a_built_configuration_that_divides_n() {
    for m in [1, 7, 64, 128, 129, 1000, 4096, 100_000] {
        for n in [128, 384, 1024, 7168, 18432] {
            for acc in [Fast, Promoted, BlockScaled] {
                for sms in [1, 8, 78, 132] {
                    for cluster in [None, Some(1), Some(2)] {
                        let Some(t) = plan_sm90(&problem(m, n, 4096, acc), sms, cluster) else {
                            assert_eq!((cluster, sms), (Some(2), 1), "{m} {n} {acc:?}");
                            continue;
                        };
                        assert!(SM90_TILES.contains(&(t.block_m, t.block_n, acc)), "{m} {n} {acc:?}: {t:?}");
                        assert_eq!(n % t.block_n, 0);
                        assert!(t.cluster_m == 1 || (t.cluster_m == 2 && t.block_m == 128), "{t:?}");
                        assert!(cluster.is_none_or(|c| c == t.cluster_m));
                        let units = m.div_ceil(t.block_m).div_ceil(t.cluster_m) * (n / t.block_n);
                        assert_eq!(t.num_ctas % t.cluster_m, 0);
                        assert!(t.num_ctas >= t.cluster_m && t.num_ctas / t.cluster_m <= (units * t.k_splits).min(sms / t.cluster_m), "{t:?}");
                        // Split-k only where the tiles fill at most a quarter of the SMs.
                        if t.k_splits > 1 {
                            assert!(t.cluster_m == 1 && 4 * units <= sms && problem(m, n, 4096, acc).split_k_fits(t.k_splits), "{t:?}");
                            assert_eq!(t.num_ctas, units * t.k_splits);
                        }
                        assert_eq!(check_sm90_tile(&problem(m, n, 4096, acc), &t), Ok(()), "{t:?}");
                        assert!(acc == Fast || t.block_n == 128, "{t:?}");
                    }
                }
            }
            let t = plan_sm80(&problem(m, n, 256, Promoted), 132);
            assert_eq!((t.block_m, t.block_n, t.num_ctas), (128, 128, m.div_ceil(128) * (n / 128) * t.k_splits));
            assert!(t.k_splits == 1 || 4 * m.div_ceil(128) * (n / 128) <= 132, "{t}");
        }
    }
}

/// Every unit through the C side (wc_matmul_fp8_tile: the walk the kernels run), as
/// (m0, m_end, n0, b0), until it reports the end.
fn walk(p: &ffi::wc_matmul_fp8_params) -> Vec<[i64; 4]> {
    let mut units = Vec::new();
    loop {
        let mut t = [0i64; 4];
        let [a, b, c, d] = &mut t;
        // SAFETY: p is a valid params struct whose group_offsets (if any) are host memory
        // of num_groups + 1 values; the outputs are writable.
        if unsafe { ffi::wc_matmul_fp8_tile(p, units.len() as i64, a, b, c, d) } != 0 {
            return units;
        }
        units.push(t);
    }
}

#[test]
fn the_tile_order_is_a_permutation_grouped_along_m() {
    // With cluster_m = 2 the units are the pairs' (m counts pairs of block_m rows).
    for (m, n, bm, bn, group, cluster) in
        [(1000, 7168, 128, 256, 8, 1), (129, 384, 64, 128, 8, 0), (4096, 1024, 128, 128, 3, 1), (1, 128, 64, 128, 8, 1), (1000, 7168, 128, 256, 4, 2), (129, 384, 128, 128, 4, 2)]
            .into_iter()
            // group_m beyond the m-tiles is one group of them all: i32::MAX once wrapped
            // group_m · n_tiles negative (tiles at negative rows), 2^30 with 4 n-tiles to 0.
            .chain([(512, 256, 128, 128, i32::MAX, 1), (512, 512, 128, 128, 1 << 30, 1), (1000, 7168, 128, 256, i32::MAX, 2), (300, 384, 64, 128, 5, 1)])
    {
        let p = ffi::wc_matmul_fp8_params { m, n, block_m: bm, block_n: bn, group_m: group, cluster_m: cluster, ..Default::default() };
        let rows = bm as i64 * cluster.max(1) as i64;
        let (mt, nt) = ((m + rows - 1) / rows, n / bn as i64);
        let units = walk(&p);
        assert_eq!(units.len() as i64, mt * nt);
        let mut seen = vec![false; (mt * nt) as usize];
        for (t, &[m0, m_end, n0, b0]) in units.iter().enumerate() {
            let (a, b) = (m0 / rows, n0 / bn as i64);
            assert_eq!((m0 % rows, n0 % bn as i64, m_end, b0), (0, 0, m, n0), "unit {t}");
            assert!((0..mt).contains(&a) && (0..nt).contains(&b), "unit {t} -> ({a}, {b})");
            assert!(!std::mem::replace(&mut seen[(a * nt + b) as usize], true), "tile ({a}, {b}) twice");
            if (t as i64) < group.min(mt as i32) as i64 {
                assert_eq!((a, b), (t as i64, 0), "the first tiles walk m inside a group");
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}

#[test]
fn a_grouped_walk_covers_each_groups_rows_with_its_b_rows_once() {
    let (n, bm, bn) = (384i64, 64, 128);
    // Empty groups, a group of one row, one of exactly a tile, one across three tiles, rows
    // before the first group and after the last.
    let offsets = [3i32, 3, 4, 68, 68, 200, 200, 251];
    let p = ffi::wc_matmul_fp8_params { m: 260, n, block_m: bm, block_n: bn, group_m: 2, group_offsets: offsets.as_ptr(), num_groups: 7, ..Default::default() };
    let units = walk(&p);
    let problem = MatmulFp8Problem { m: 260, n: n as usize, k: 128, accumulation: Accumulation::Promoted, groups: 7, input: GemmInput::E4m3, out_bf16: true, residual: false };
    assert!(units.len() <= problem.m_tiles(bm as usize) * 3);
    let mut written = vec![0u32; 260 * 3];
    for &[m0, m_end, n0, b0] in &units {
        let g = offsets.windows(2).position(|w| (w[0] as i64..w[1] as i64).contains(&m0)).expect("a tile starts inside a group");
        assert_eq!((m_end, b0), (offsets[g + 1] as i64, g as i64 * n + n0));
        for r in m0..(m0 + bm as i64).min(m_end) {
            written[r as usize * 3 + (n0 / bn as i64) as usize] += 1;
        }
    }
    for r in 0..260 {
        let inside = (3..251).contains(&r);
        assert!(written[r * 3..][..3].iter().all(|&w| w == inside as u32), "row {r}: {:?}", &written[r * 3..][..3]);
    }
    // 1 + 1 + 3 + 1 m-tiles of the four non-empty groups, 3 n-tiles each.
    assert_eq!(units.len(), 6 * 3);
}

#[test]
fn bad_group_offsets_are_clamped_into_the_rows_and_never_overlap() {
    // Negative, decreasing and past-m offsets: groups become [0, 0), [0, 50), [50, 50),
    // [50, 100) — every row written at most once, nothing outside [0, m).
    let offsets = [-5i32, -1, 50, 20, 1000];
    let p = ffi::wc_matmul_fp8_params { m: 100, n: 128, block_m: 64, block_n: 128, group_m: 8, group_offsets: offsets.as_ptr(), num_groups: 4, ..Default::default() };
    let units = walk(&p);
    let got: Vec<(i64, i64, i64)> = units.iter().map(|&[m0, m_end, _, b0]| (m0, m_end, b0)).collect();
    assert_eq!(got, [(0, 50, 128), (50, 100, 3 * 128)]);
    let p = ffi::wc_matmul_fp8_params { num_groups: 0, ..p };
    assert!(walk(&p).is_empty(), "no groups is refused");
}

#[test]
fn the_m_tile_bound_holds_for_every_split() {
    // Σ ceil(c_g / b) over splits of m rows into g groups never exceeds the bound, and a
    // split reaching it exists (the planner and the sm80 grid size by it).
    for (m, g, b) in [(1usize, 256usize, 64usize), (8, 256, 64), (1000, 8, 128), (128, 1, 128), (129, 2, 64), (64, 64, 64)] {
        let bound = MatmulFp8Problem { m, n: 128, k: 128, accumulation: Accumulation::Fast, groups: g, input: GemmInput::E4m3, out_bf16: true, residual: false }.m_tiles(b);
        let groups = g.min(m);
        // Worst split: groups − 1 groups of one row, the rest in one group.
        let worst = (groups - 1) + (m - (groups - 1)).div_ceil(b);
        assert!(worst <= bound, "{m} {g} {b}: {worst} > {bound}");
        let even: usize = (0..groups).map(|i| (m * (i + 1) / groups - m * i / groups).div_ceil(b)).sum();
        assert!(even <= bound, "{m} {g} {b}");
        if g == 1 {
            assert_eq!(bound, m.div_ceil(b));
        }
    }
}

#[test]
fn the_launchers_reject_configurations_they_do_not_have_before_touching_the_gpu() {
    let mut p = ffi::wc_matmul_fp8_params { m: 128, n: 256, k: 256, block_m: 96, block_n: 128, group_m: 8, num_ctas: 1, out_dtype: ffi::wc_dtype_WC_BF16, in_dtype: ffi::wc_dtype_WC_E4M3, ..Default::default() };
    let stream = std::ptr::null_mut();
    // SAFETY: every call below returns from its argument checks before any CUDA call.
    unsafe {
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_INVALID_ARG);
        p.block_m = 128;
        p.block_n = 256;
        p.block_scaled = 1; // block scales have no 256-wide tile
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        p.fast_accum = 0;
        p.block_scaled = 0; // nor does promoted accumulation
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        p.k = 200;
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
        p.out_dtype = ffi::wc_dtype_WC_F16;
        p.k = 256;
        p.block_n = 128;
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        p.out_dtype = ffi::wc_dtype_WC_BF16;
        p.cluster_m = 3; // pairs at most
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
        p.cluster_m = 2;
        p.block_m = 64; // pairs of 128-row tiles only
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        // bf16 operands: n and k multiples of 8, no pairs, no other input types.
        p.in_dtype = ffi::wc_dtype_WC_BF16;
        p.block_m = 128;
        p.k = 200;
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED); // the pair
        p.cluster_m = 1;
        p.n = 132;
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_INVALID_ARG);
        p.n = 136;
        p.k = 204;
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_INVALID_ARG);
        p.in_dtype = ffi::wc_dtype_WC_F16;
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_UNSUPPORTED);
        p.m = 0; // nothing to do
        assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_OK as i32);
        assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_OK as i32);
    }
}

#[test]
fn the_launchers_refuse_split_k_outside_its_contract_before_touching_the_gpu() {
    // 2 k-steps (k = 256), 8 × 256 of D; a valid split needs 2 · 8 · 256 floats of workspace.
    let mut ws = vec![0f32; 2 * 8 * 256 + 4];
    let aligned = ws.as_mut_ptr().wrapping_add(ws.as_ptr().align_offset(16)); // elements
    let good = ffi::wc_matmul_fp8_params {
        m: 8,
        n: 256,
        k: 256,
        block_m: 64,
        block_n: 128,
        group_m: 8,
        num_ctas: 8,
        out_dtype: ffi::wc_dtype_WC_BF16,
        in_dtype: ffi::wc_dtype_WC_E4M3,
        k_splits: 2,
        workspace: aligned,
        workspace_floats: 2 * 8 * 256,
        ..Default::default()
    };
    let offsets = [0i32, 8];
    let stream = std::ptr::null_mut();
    let cases = [
        (ffi::wc_matmul_fp8_params { k_splits: 3, ..good }, ffi::WC_ERR_INVALID_ARG), // 2 k-steps
        (ffi::wc_matmul_fp8_params { k_splits: -1, ..good }, ffi::WC_ERR_INVALID_ARG),
        (ffi::wc_matmul_fp8_params { workspace: std::ptr::null_mut(), ..good }, ffi::WC_ERR_INVALID_ARG),
        (ffi::wc_matmul_fp8_params { workspace_floats: 2 * 8 * 256 - 1, ..good }, ffi::WC_ERR_INVALID_ARG),
        (ffi::wc_matmul_fp8_params { workspace: aligned.wrapping_add(1), ..good }, ffi::WC_ERR_INVALID_ARG),
        (ffi::wc_matmul_fp8_params { block_m: 128, cluster_m: 2, num_ctas: 2, ..good }, ffi::WC_ERR_UNSUPPORTED),
        (ffi::wc_matmul_fp8_params { block_m: 128, tma_store: 1, ..good }, ffi::WC_ERR_UNSUPPORTED),
        (ffi::wc_matmul_fp8_params { group_offsets: offsets.as_ptr(), num_groups: 1, ..good }, ffi::WC_ERR_UNSUPPORTED),
    ];
    // SAFETY: every call below returns from its argument checks before any CUDA call (the
    // workspace is host memory: it is never touched).
    unsafe {
        for (p, want) in cases {
            let why = format!("k_splits {} ws {:?} {} cluster {} tma {} groups {}", p.k_splits, p.workspace, p.workspace_floats, p.cluster_m, p.tma_store, p.num_groups);
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), want, "sm90: {why}");
            // The mma.sync kernel's one tile (its launcher ignores pairs and the TMA store
            // otherwise, but refuses them with split-k as the Hopper one does).
            let sm80 = ffi::wc_matmul_fp8_params { block_m: 128, block_n: 128, ..p };
            assert_eq!(ffi::wc_matmul_fp8_sm80(&sm80, stream), want, "sm80: {why}");
        }
    }
}

#[test]
fn bf16_plans_take_any_n_without_pairs() {
    let bf16 = |m, n, groups| MatmulFp8Problem { m, n, k: 2048, accumulation: Fast, groups, input: GemmInput::Bf16, out_bf16: true, residual: false };
    for (m, n, groups) in [(1, 72, 1), (256, 1536, 128), (16384, 1536, 128), (16384, 2048, 128), (300, 200, 8), (4096, 4096, 1)] {
        let p = bf16(m, n, groups);
        let t = plan_sm90(&p, 132, None).expect("a bf16 plan");
        assert_eq!(t.cluster_m, 1, "{p:?}");
        assert!(SM90_TILES.contains(&(t.block_m, t.block_n, Fast)));
        assert_eq!(t.num_ctas, (p.m_tiles(t.block_m) * n.div_ceil(t.block_n)).min(132), "{p:?}");
        assert!(plan_sm90(&p, 132, Some(2)).is_none(), "no pairs for bf16: {p:?}");
        assert_eq!(plan_sm80(&p, 132).num_ctas, p.m_tiles(128) * n.div_ceil(128));
    }
    // n % 128 != 0 is planned for bf16 only.
    assert!(plan_sm90(&MatmulFp8Problem { input: GemmInput::E4m3, ..bf16(64, 200, 1) }, 132, None).is_none());
}

#[test]
fn scale_pairs() {
    assert_eq!(scaling_mode(PerTensor, PerTensor), Some(false));
    assert_eq!(scaling_mode(PerRow, PerRow), Some(false));
    assert_eq!(scaling_mode(PerRow, PerTensor), Some(false));
    assert_eq!(scaling_mode(Group128, Block128), Some(true));
    assert_eq!(scaling_mode(PerRow, Block128), Some(true));
    assert_eq!(scaling_mode(Group128, PerTensor), Some(true));
    assert_eq!(scaling_mode(Group128, PerRow), None);
    assert_eq!(scaling_mode(Block128, Block128), None);
    assert_eq!(scaling_mode(PerTensor, Group128), None);
}

