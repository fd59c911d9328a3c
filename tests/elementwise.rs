//! GPU tests of the element-wise family (`glu`, `select_rows`, `argmax_rows`, `sample_rows`) against the
//! references (skip without a GPU).

mod common;

use common::proptest_config as config;
use common::{assert_passed, device};
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::elementwise::{check_argmax_rows, check_glu, check_sample_rows, check_select_rows, ArgmaxCase, GluCase, SampleCase, SelectCase};
use warpcore::ops::elementwise::{argmax_rows, glu, sample_rows, sample_rows_each, select_rows, RowSampleConfig, SampleConfig};
use warpcore::reference::mlp::GluActivation;
use warpcore::{DType, Error, TensorView, TensorViewMut, F8E4M3};

const AWKWARD_COLS: &[usize] = &[1, 8, 17, 111, 768, 989, 4096, 8192, 14336];

fn activation() -> impl Strategy<Value = GluActivation> {
    prop_oneof![Just(GluActivation::Silu), Just(GluActivation::GeluTanh), Just(GluActivation::SquaredRelu)]
}

fn glu_case() -> impl Strategy<Value = GluCase> {
    (1usize..40, prop_oneof![proptest::sample::select(AWKWARD_COLS), 1usize..3000], 0usize..9, 0usize..9, 0usize..3, activation(), any::<u64>())
        .prop_map(|(rows, cols, gap, og, offset, act, seed)| GluCase {
            rows,
            cols,
            // Half the cases on the vector path (dense, aligned), half with gaps.
            in_gap: if seed % 2 == 0 { 0 } else { gap },
            out_stride: cols + if seed % 4 < 2 { 0 } else { og },
            offset: if seed % 3 == 0 { offset } else { 0 },
            act,
            seed,
        })
}

fn select_case() -> impl Strategy<Value = SelectCase> {
    (1usize..300, 0usize..70, prop_oneof![proptest::sample::select(AWKWARD_COLS), 1usize..3000], 0usize..9, 0usize..9, 0usize..3, 0usize..5, any::<u64>())
        .prop_map(|(src_rows, num_rows, cols, sg, og, offset, bad_every, seed)| SelectCase {
            src_rows,
            num_rows,
            cols,
            src_stride: cols + if seed % 2 == 0 { 0 } else { sg },
            out_stride: cols + if seed % 4 < 2 { 0 } else { og },
            offset: if seed % 3 == 0 { offset } else { 0 },
            bad_every,
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
                fn glu_matches_reference(case in glu_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_glu::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn select_rows_copies_exactly(case in select_case(), wide in any::<bool>()) {
                    let Some(dev) = device() else { return Ok(()) };
                    let r = if wide { check_select_rows::<$t, i64>(&dev, &case) } else { check_select_rows::<$t, i32>(&dev, &case) };
                    assert_passed(&r.unwrap());
                }
            }

            #[test]
            fn many_rows() {
                let Some(dev) = device() else { return };
                assert_passed(&check_glu::<$t>(&dev, &GluCase::dense(70000, 64, GluActivation::Silu, 1)).unwrap());
                assert_passed(&check_select_rows::<$t, i32>(&dev, &SelectCase::dense(128256 / 16, 70000, 16, 2)).unwrap());
            }
        }
    };
}
dtype_tests!(bf16_tests, bf16);
dtype_tests!(f16_tests, f16);
dtype_tests!(f32_tests, f32);

#[test]
fn select_rows_copies_fp8_bytes() {
    let Some(dev) = device() else { return };
    let c = SelectCase { src_rows: 20, num_rows: 9, cols: 61, src_stride: 67, out_stride: 61, offset: 3, bad_every: 5, seed: 8 };
    assert_passed(&check_select_rows::<F8E4M3, i32>(&dev, &c).unwrap());
}

#[test]
fn glu_rejects_bad_shapes_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let g = dev.upload(&vec![bf16::ONE; 8 * 32]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 8 * 32]).unwrap();
    let gate = TensorView::contiguous(g.slice(..128), [8, 16]).unwrap();
    // up [8, 15] for gate [8, 16].
    let up = TensorView::contiguous(g.slice(128..248), [8, 15]).unwrap();
    let mut o = TensorViewMut::contiguous(out.as_view_mut(), [8, 16]).unwrap();
    let e = glu(&dev, &gate, &up, &mut o, GluActivation::Silu).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "glu", arg: "up", .. }), "{e}");
    // A strided innermost dim.
    let up = TensorView::new(g.slice(128..), [8, 16], [16, 1]).unwrap();
    let strided = TensorView::new(g.as_view(), [8, 16], [32, 2]).unwrap();
    let e = glu(&dev, &strided, &up, &mut o, GluActivation::Silu).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "glu", .. }), "{e}");
    // Zero columns.
    let empty = TensorView::contiguous(g.slice(..0), [8, 0]).unwrap();
    let mut o0 = TensorViewMut::contiguous(out.slice_mut(..0), [8, 0]).unwrap();
    let e = glu(&dev, &empty, &empty, &mut o0, GluActivation::Silu).unwrap_err();
    assert!(matches!(e, Error::Empty { op: "glu", .. }), "{e}");
    // Overlapping output rows.
    let mut o = TensorViewMut::new(out.as_view_mut(), [8, 16], [8, 1]).unwrap();
    let e = glu(&dev, &gate, &up, &mut o, GluActivation::Silu).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "overlapping output strides", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()), "a rejected call wrote its output");
}

#[test]
fn glu_rejects_fp8_and_select_rows_rejects_bad_shapes() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[F8E4M3::from_f64_sat(1.0); 64]).unwrap();
    let mut o = dev.upload(&[F8E4M3::NAN; 64]).unwrap();
    let v = TensorView::contiguous(x.as_view(), [4, 16]).unwrap();
    let e = glu(&dev, &v, &v, &mut TensorViewMut::contiguous(o.as_view_mut(), [4, 16]).unwrap(), GluActivation::Silu).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "glu", what: "dtype", .. }), "{e}");

    let src = dev.upload(&[f16::ONE; 64]).unwrap();
    let idx = dev.upload(&[0i32, 1, 2]).unwrap();
    let mut out = dev.upload(&[f16::NAN; 64]).unwrap();
    let sv = TensorView::contiguous(src.as_view(), [4, 16]).unwrap();
    let iv = TensorView::contiguous(idx.as_view(), [3]).unwrap();
    // out [4, 16] for 3 indices.
    let e = select_rows(&dev, &sv, &iv, &mut TensorViewMut::contiguous(out.as_view_mut(), [4, 16]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "select_rows", arg: "out", .. }), "{e}");
    // out [3, 15] for rows of 16.
    let e = select_rows(&dev, &sv, &iv, &mut TensorViewMut::contiguous(out.as_view_mut(), [3, 15]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "select_rows", arg: "out", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.to_f32().is_nan()), "a rejected call wrote its output");
}

fn argmax_case() -> impl Strategy<Value = ArgmaxCase> {
    (1usize..40, prop_oneof![proptest::sample::select(&[1usize, 31, 32, 1023, 1024, 1025, 32000, 128256][..]), 1usize..5000], 0usize..9, 0usize..3, any::<bool>(), any::<u64>())
        .prop_map(|(rows, cols, gap, offset, special, seed)| ArgmaxCase { rows, cols, stride: cols + gap, offset, special, seed })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn argmax_rows_matches_the_reference(case in argmax_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_argmax_rows(&dev, &case).unwrap());
    }
}

#[test]
fn argmax_rows_rejects_bad_shapes_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[1.0f32; 64]).unwrap();
    let mut out = dev.upload(&[-7i32; 8]).unwrap();
    let x_view = TensorView::contiguous(x.slice(..), [8, 8]).unwrap();
    let err = argmax_rows(&dev, &x_view, &mut TensorViewMut::contiguous(out.slice_mut(..7), [7]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let empty = TensorView::contiguous(x.slice(..0), [8, 0]).unwrap();
    let err = argmax_rows(&dev, &empty, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err}");
    // Rows that overlap (a stride below cols): refused by name (the launcher refused it untyped).
    let overlap = TensorView::new(x.slice(..), [8, 8], [4, 1]).unwrap();
    let err = argmax_rows(&dev, &overlap, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { what, .. } if what.starts_with("row stride")), "{err}");
    assert_eq!(dev.download(&out).unwrap(), vec![-7; 8]);
}

fn sample_case() -> impl Strategy<Value = SampleCase> {
    (
        1usize..12,
        prop_oneof![proptest::sample::select(&[1usize, 2, 7, 8191, 8192, 8193, 50000, 128256][..]), 1usize..20000],
        0usize..9,
        (proptest::sample::select(&[0.05f32, 0.5, 1.0, 2.0][..]), prop_oneof![Just(0usize), 1usize..300], proptest::sample::select(&[1.0f32, 0.999, 0.9, 0.5, 1e-6][..])),
        any::<bool>(),
        // a third of the cases: each row its own settings (sample_rows_each)
        prop_oneof![2 => Just(false), 1 => Just(true)],
        any::<u64>(),
    )
        .prop_map(|(rows, cols, gap, (temperature, top_k, top_p), special, per_row, seed)| SampleCase { rows, cols, stride: cols + gap, temperature, top_k, top_p, special, per_row, seed })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn sample_rows_matches_the_reference(case in sample_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_sample_rows(&dev, &case).unwrap());
    }
}

#[test]
fn sample_rows_refuses_bad_settings_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[1.0f32; 64]).unwrap();
    let u = dev.upload(&[0.5f32; 8]).unwrap();
    let mut out = dev.upload(&[-7i32; 8]).unwrap();
    let xv = TensorView::contiguous(x.slice(..), [8, 8]).unwrap();
    let uv = TensorView::contiguous(u.slice(..), [8]).unwrap();
    let ok = SampleConfig { temperature: 1.0, top_k: 0, top_p: 1.0 };
    for cfg in [SampleConfig { temperature: 0.0, ..ok }, SampleConfig { temperature: f32::NAN, ..ok }, SampleConfig { top_p: 0.0, ..ok }, SampleConfig { top_p: 1.5, ..ok }] {
        let err = sample_rows(&dev, &xv, &uv, cfg, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { op: "sample_rows", .. }), "{err}");
    }
    let err = sample_rows(&dev, &xv, &TensorView::contiguous(u.slice(..7), [7]).unwrap(), ok, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let empty = TensorView::contiguous(x.slice(..0), [8, 0]).unwrap();
    let err = sample_rows(&dev, &empty, &uv, ok, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err}");
    // Per-row settings of the wrong length.
    let (t, k) = (dev.upload(&[1.0f32; 8]).unwrap(), dev.upload(&[0i32; 8]).unwrap());
    let (tv, kv) = (TensorView::contiguous(t.slice(..), [8]).unwrap(), TensorView::contiguous(k.slice(..), [8]).unwrap());
    let short = TensorView::contiguous(t.slice(..7), [7]).unwrap();
    let err = sample_rows_each(&dev, &xv, &uv, RowSampleConfig { temperature: &tv, top_k: &kv, top_p: &short }, &mut TensorViewMut::contiguous(out.slice_mut(..), [8]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { arg: "top_p", .. }), "{err}");
    assert_eq!(dev.download(&out).unwrap(), vec![-7; 8]);
}
