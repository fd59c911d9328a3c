//! GPU tests of the ternary family (`quantize_activations`, `matmul_ternary`) against the
//! references (skip without a GPU).

mod common;

use common::proptest_config as config;
use common::{assert_passed, device};
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::matmul_ternary::{
    check_matmul_ternary, check_quantize_activations, check_rms_norm_quantize_activations, NormQuantizeCase, QuantizeCase, TernaryCase,
};
use warpcore::ops::matmul_ternary::{matmul_ternary, quantize_activations, PackedTernary, BLOCK_M, MAX_K};
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
            block_m: match seed % 3 {
                0 => None,
                1 => Some(BLOCK_M[0]),
                _ => Some(BLOCK_M[1]),
            },
            seed,
        })
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
                    assert_passed(&check_matmul_ternary::<$t>(&dev, &case).unwrap());
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
            for block_m in BLOCK_M {
                let case = TernaryCase { bias: i % 2 == 0, block_m: Some(block_m), ..TernaryCase::dense(m, n, k, (i * 10 + m) as u64) };
                assert_passed(&check_matmul_ternary::<bf16>(&dev, &case).unwrap());
            }
        }
    }
}

#[test]
fn longest_k_and_extreme_codes_stay_exact() {
    let Some(dev) = device() else { return };
    // k = MAX_K: the int32 sums of plane 3 reach 2^30 in magnitude (codes of −128 against 2 · 64).
    for block_m in BLOCK_M {
        let case = TernaryCase { block_m: Some(block_m), ..TernaryCase::dense(17, 64, MAX_K, 5) };
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
    // Empty k.
    let q0 = TensorView::contiguous(q.slice(..0), [m, 0]).unwrap();
    let w0 = TensorView::contiguous(w.slice(..0), [n / 4, 0]).unwrap();
    assert!(matches!(run(&q0, &w0, 1.0), Err(Error::Empty { .. })));
    // out's shape.
    let mut small = TensorViewMut::contiguous(out.slice_mut(..m * 4), [m, 4]).unwrap();
    let e = matmul_ternary::<bf16>(&dev, &qv, &qsv, PackedTernary { packed: &wv, scale: 1.0 }, None, &mut small).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "out", .. }), "{e}");
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
