//! GPU tests of the ternary family (`quantize_activations`, `matmul_ternary`) against the
//! references (skip without a GPU).

mod common;

use common::proptest_config as config;
use common::{assert_passed, device};
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::Rng;
use warpcore::check::matmul_ternary::{
    check_matmul_ternary, check_quantize_activations, check_rms_norm_quantize_activations, NormQuantizeCase, QuantizeCase, TernaryCase,
};
use warpcore::ops::matmul_ternary::{
    matmul_ternary, matmul_ternary_with_tile, plan, quantize_activations, PackedTernary, TernaryTile, BLOCK_M, HOPPER_BLOCK_M, K_STEP_BYTES,
    MAX_K,
};
use warpcore::{Error, TensorView, TensorViewMut};

const AWKWARD_M: &[usize] = &[1, 7, 16, 17, 64, 129, 1000];

fn quantize_case() -> impl Strategy<Value = QuantizeCase> {
    (prop_oneof![proptest::sample::select(AWKWARD_M), 1usize..300], 1usize..200, 0usize..3, 0usize..3, 0usize..2, any::<u64>()).prop_map(
        |(m, k16, xg, qg, off, seed)| QuantizeCase {
            m,
            k: 16 * k16,
            x_stride: 16 * (k16 + xg),
            q_stride: 16 * (k16 + qg),
            offset: 16 * off,
            special_rows: seed % 2 == 0,
            seed,
        },
    )
}

fn ternary_case() -> impl Strategy<Value = TernaryCase> {
    (
        prop_oneof![proptest::sample::select(AWKWARD_M), 1usize..200],
        1usize..100,
        1usize..130,
        0usize..3,
        0usize..3,
        0usize..5,
        any::<u64>(),
    )
        .prop_map(|(m, n4, k16, qg, wg, og, seed)| TernaryCase {
            m,
            n: 4 * n4,
            k: 16 * k16,
            q_stride: 16 * (k16 + qg),
            w_stride: 16 * (k16 + wg),
            out_stride: 4 * n4 + og,
            bias: seed % 2 == 0,
            // The plan, each tile unsplit (the Hopper tile: where the GPU has it, see
            // `on_this_gpu`), or the 16-row tile split over 2 to 8 k-slices (unsplit where k is a
            // single 512-byte step).
            tile: match seed % 5 {
                0 => None,
                1 => Some(TernaryTile::unsplit(BLOCK_M[0])),
                2 => Some(TernaryTile::unsplit(BLOCK_M[1])),
                3 => Some(TernaryTile::unsplit(HOPPER_BLOCK_M)),
                _ => Some(TernaryTile { block_m: BLOCK_M[0], k_splits: (2 + (seed / 5) as usize % 7).min((16 * k16).div_ceil(K_STEP_BYTES)) }),
            },
            seed,
        })
}

/// Whether the GPU runs the Hopper tile (compute capability 9.0).
fn hopper(dev: &warpcore::Device) -> bool {
    dev.info().compute_capability == (9, 0)
}

/// The case with the Hopper tile replaced by the plan on GPUs other than compute capability 9.0.
fn on_this_gpu(dev: &warpcore::Device, case: TernaryCase) -> TernaryCase {
    match case.tile {
        Some(t) if t.block_m == HOPPER_BLOCK_M && !hopper(dev) => TernaryCase { tile: None, ..case },
        _ => case,
    }
}

/// The tiles every shape runs on this GPU: both mma.sync heights unsplit, and the Hopper tile
/// where there is one.
fn unsplit_tiles(dev: &warpcore::Device) -> Vec<TernaryTile> {
    BLOCK_M.into_iter().chain(hopper(dev).then_some(HOPPER_BLOCK_M)).map(TernaryTile::unsplit).collect()
}

macro_rules! dtype_tests {
    ($m:ident, $t:ty) => {
        mod $m {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn quantize_activations_bit_exact(case in quantize_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_quantize_activations::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn rms_norm_quantize_activations_matches_reference(
                    m in prop_oneof![proptest::sample::select(AWKWARD_M), 1usize..300],
                    k16 in 1usize..300,
                    add in any::<bool>(),
                    gemma in any::<bool>(),
                    seed in any::<u64>(),
                ) {
                    let Some(dev) = device() else { return Ok(()) };
                    let case = NormQuantizeCase { m, k: 16 * k16, add, gemma, seed };
                    assert_passed(&check_rms_norm_quantize_activations::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn matmul_ternary_matches_reference(case in ternary_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_matmul_ternary::<$t>(&dev, &on_this_gpu(&dev, case)).unwrap());
                }
            }
        }
    };
}
dtype_tests!(bf16_tests, bf16);
dtype_tests!(f16_tests, f16);
dtype_tests!(f32_tests, f32);

#[test]
fn bitnet_layer_shapes_on_both_tiles() {
    let Some(dev) = device() else { return };
    // BitNet b1.58 2B4T: q/o 2560 × 2560, k/v 640 × 2560, gate_up 13824 × 2560, down 2560 × 6912.
    for (i, (n, k)) in [(2560, 2560), (640, 2560), (13824, 2560), (2560, 6912)].into_iter().enumerate() {
        for m in [1, 32, 160] {
            // The plan (split-k at the decode sizes of the narrow layers), and every tile unsplit.
            for tile in std::iter::once(None).chain(unsplit_tiles(&dev).into_iter().map(Some)) {
                let case = TernaryCase { bias: i % 2 == 0, tile, ..TernaryCase::dense(m, n, k, (i * 10 + m) as u64) };
                assert_passed(&check_matmul_ternary::<bf16>(&dev, &case).unwrap());
            }
        }
    }
}

/// Every tile computes the same exact int32 sums and rounds them through the same epilogue, so
/// all give the 16-row tile's output bit for bit: the 128-row and Hopper tiles, and split-k at
/// every slice count; and each split launch leaves the shared workspace zero, so calls after it
/// (other shapes, other slice counts, the same call again) are exact too.
#[test]
fn every_tile_and_split_k_give_the_same_bits() {
    let Some(dev) = device() else { return };
    let sms = dev.info().sm_count as usize;
    for (m, n, k) in [(1usize, 2560usize, 6912usize), (1, 3840, 2560), (16, 2560, 2560), (33, 640, 2560), (1, 4, 65536), (130, 1032, 2560)] {
        let steps = k.div_ceil(K_STEP_BYTES);
        let mut rng = Rng::new(m as u64 * 7 + n as u64);
        let q: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as i8).collect();
        let scale: Vec<f32> = (0..m).map(|_| rng.uniform(0.5, 200.0) as f32).collect();
        let packed: Vec<u8> = (0..n / 4 * k).map(|_| (0..4).fold(0u8, |b, i| b | (((rng.next_u64() % 3) as u8) << (2 * i)))).collect();
        let bias: Vec<bf16> = rng.vec(n, -2.0, 2.0);
        let (qd, sd, wd, bd) = (dev.upload(&q).unwrap(), dev.upload(&scale).unwrap(), dev.upload(&packed).unwrap(), dev.upload(&bias).unwrap());
        let poison = vec![bf16::NAN; m * n];
        let run = |tile: TernaryTile| {
            let mut out = dev.upload(&poison).unwrap();  // fresh poison: a value left unwritten shows
            let qv = TensorView::contiguous(qd.as_view(), [m, k]).unwrap();
            let sv = TensorView::contiguous(sd.as_view(), [m]).unwrap();
            let wv = TensorView::contiguous(wd.as_view(), [n / 4, k]).unwrap();
            let bv = TensorView::contiguous(bd.as_view(), [n]).unwrap();
            let mut o = TensorViewMut::contiguous(out.slice_mut(..), [m, n]).unwrap();
            matmul_ternary_with_tile(&dev, &qv, &sv, PackedTernary { packed: &wv, scale: 0.37 }, Some(&bv), &mut o, Some(tile)).unwrap();
            dev.download(&out).unwrap()
        };
        let whole = run(TernaryTile::unsplit(16));
        assert!(whole.iter().all(|v| v.is_finite()), "{m} × {n} × {k}: unsplit output not all written");
        for tile in unsplit_tiles(&dev).into_iter().skip(1) {
            let got = run(tile);
            let diff = got.iter().zip(&whole).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(diff, 0, "{m} × {n} × {k}, {tile}: {diff} outputs differ from the 16-row tile's");
        }
        let planned = plan(m, n, k, sms, hopper(&dev));
        // 2, 3, 7 and 16 slices where k has that many 512-byte steps, every step its own slice,
        // and the plan's count.
        let mut splits = vec![2, 3, 7, 16, steps, planned.k_splits];
        splits.retain(|&s| (2..=steps.min(16)).contains(&s));
        splits.sort_unstable();
        splits.dedup();
        for s in splits {
            for call in 0..2 {
                let got = run(TernaryTile { block_m: 16, k_splits: s });
                let diff = got.iter().zip(&whole).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(diff, 0, "{m} × {n} × {k}, {s} k-slices, call {call}: {diff} outputs differ from the unsplit kernel's");
            }
        }
    }
}

#[test]
fn longest_k_and_extreme_codes_stay_exact() {
    let Some(dev) = device() else { return };
    // k = MAX_K: the int32 sums of plane 3 reach 2^30 in magnitude (codes of −128 against 2 · 64).
    for tile in unsplit_tiles(&dev).into_iter().chain([TernaryTile { block_m: BLOCK_M[0], k_splits: 16 }]) {
        let case = TernaryCase { tile: Some(tile), ..TernaryCase::dense(17, 64, MAX_K, 5) };
        assert_passed(&check_matmul_ternary::<f32>(&dev, &case).unwrap());
    }
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let (m, n, k) = (4usize, 8usize, 32usize);
    let q = dev.upload(&vec![1i8; m * 64]).unwrap();
    let qs = dev.upload(&vec![1.0f32; m]).unwrap();
    let w = dev.upload(&vec![0b0101_0101u8; n / 4 * 64 + 16]).unwrap();
    let x = dev.upload(&vec![bf16::from_f32(1.0); m * 64 + 1]).unwrap();
    let poison = vec![bf16::NAN; m * n];
    let mut out = dev.upload(&poison).unwrap();
    let qv = TensorView::contiguous(q.slice(..m * k), [m, k]).unwrap();
    let qsv = TensorView::contiguous(qs.as_view(), [m]).unwrap();
    let wv = TensorView::contiguous(w.slice(..n / 4 * k), [n / 4, k]).unwrap();
    let mut run = |q: &TensorView<i8, 2>, w: &TensorView<u8, 2>, scale: f32| {
        let mut o = TensorViewMut::contiguous(out.slice_mut(..), [m, n]).unwrap();
        matmul_ternary::<bf16>(&dev, q, &qsv, PackedTernary { packed: w, scale }, None, &mut o)
    };
    // k not a multiple of 16.
    let q24 = TensorView::contiguous(q.slice(..m * 24), [m, 24]).unwrap();
    let w24 = TensorView::contiguous(w.slice(..n / 4 * 24), [n / 4, 24]).unwrap();
    assert!(matches!(run(&q24, &w24, 1.0), Err(Error::Unsupported { what, .. }) if what.starts_with("k")));
    // w's k differs from q's.
    let w64 = TensorView::contiguous(w.slice(..n / 4 * 64), [n / 4, 64]).unwrap();
    assert!(matches!(run(&qv, &w64, 1.0), Err(Error::ShapeMismatch { arg: "w.packed", .. })));
    // A non-finite weight scale.
    assert!(matches!(run(&qv, &wv, f32::NAN), Err(Error::Unsupported { what: "weight scale", .. })));
    // Misaligned rows: q starting 1 byte in, w with a row stride of 40 bytes.
    let q1 = TensorView::contiguous(q.slice(1..1 + m * k), [m, k]).unwrap();
    assert!(matches!(run(&q1, &wv, 1.0), Err(Error::Misaligned { arg: "q", .. })));
    let w40 = TensorView::new(w.slice(..), [n / 4, k], [40, 1]).unwrap();
    assert!(matches!(run(&qv, &w40, 1.0), Err(Error::Misaligned { arg: "w.packed", .. })));
    // Rows that overlap (a row stride below k): refused by name (the launcher refused it untyped).
    let q16 = TensorView::new(q.slice(..), [m, k], [16, 1]).unwrap();
    assert!(matches!(run(&q16, &wv, 1.0), Err(Error::Unsupported { what, .. }) if what.starts_with("row stride")));
    let w16 = TensorView::new(w.slice(..), [n / 4, k], [16, 1]).unwrap();
    assert!(matches!(run(&qv, &w16, 1.0), Err(Error::Unsupported { what, .. }) if what.starts_with("row stride")));
    // Empty k.
    let q0 = TensorView::contiguous(q.slice(..0), [m, 0]).unwrap();
    let w0 = TensorView::contiguous(w.slice(..0), [n / 4, 0]).unwrap();
    assert!(matches!(run(&q0, &w0, 1.0), Err(Error::Empty { .. })));
    // out's shape.
    let mut small = TensorViewMut::contiguous(out.slice_mut(..m * 4), [m, 4]).unwrap();
    let e = matmul_ternary::<bf16>(&dev, &qv, &qsv, PackedTernary { packed: &wv, scale: 1.0 }, None, &mut small).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "out", .. }), "{e}");
    // Tiles the kernel cannot run this problem with: no such height, split-k on the 128-row
    // and Hopper tiles, more k-slices than the one 512-byte k-step, k_splits 0, and the Hopper
    // tile anywhere but on compute capability 9.0.
    let refused = [TernaryTile::unsplit(32), TernaryTile { block_m: 128, k_splits: 2 }, TernaryTile { block_m: 16, k_splits: 2 }, TernaryTile { block_m: 16, k_splits: 0 }, TernaryTile { block_m: HOPPER_BLOCK_M, k_splits: 2 }];
    for tile in refused.into_iter().chain((!hopper(&dev)).then_some(TernaryTile::unsplit(HOPPER_BLOCK_M))) {
        let mut o = TensorViewMut::contiguous(out.slice_mut(..), [m, n]).unwrap();
        let e = matmul_ternary_with_tile::<bf16>(&dev, &qv, &qsv, PackedTernary { packed: &wv, scale: 1.0 }, None, &mut o, Some(tile)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{tile}: {e}");
    }
    assert_eq!(dev.download(&out).unwrap().iter().filter(|v| !v.is_nan()).count(), 0, "a refused call wrote");

    // quantize_activations: k not a multiple of 16, misaligned x rows, q of the wrong shape.
    let mut qo = dev.upload(&vec![7i8; m * 64]).unwrap();
    let mut so = dev.upload(&vec![f32::NAN; m]).unwrap();
    let mut quant = |x: &TensorView<bf16, 2>, k: usize| {
        let mut qm = TensorViewMut::contiguous(qo.slice_mut(..m * k), [m, k]).unwrap();
        let mut sm = TensorViewMut::contiguous(so.slice_mut(..), [m]).unwrap();
        quantize_activations(&dev, x, &mut qm, &mut sm)
    };
    let x24 = TensorView::contiguous(x.slice(..m * 24), [m, 24]).unwrap();
    assert!(matches!(quant(&x24, 24), Err(Error::Unsupported { what, .. }) if what.starts_with("k")));
    let x1 = TensorView::contiguous(x.slice(1..1 + m * k), [m, k]).unwrap();
    assert!(matches!(quant(&x1, k), Err(Error::Misaligned { arg: "x", .. })));
    let x32 = TensorView::contiguous(x.slice(..m * k), [m, k]).unwrap();
    assert!(matches!(quant(&x32, 16), Err(Error::ShapeMismatch { arg: "q", .. })));
    assert!(dev.download(&qo).unwrap().iter().all(|&v| v == 7), "a refused quantize wrote q");
    assert!(dev.download(&so).unwrap().iter().all(|v| v.is_nan()), "a refused quantize wrote scales");
}
