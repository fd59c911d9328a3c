//! GPU tests of FP8 quantization against `reference::quant` (skip without a GPU).

mod common;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::quant::{check_dequantize, check_glu_quant, check_norm_quant, check_quantize, check_quantize_tensor, DequantCase, GluQuantCase, NormQuantCase, QuantCase, ScaleLayout};
use warpcore::ops::quant::{
    dequantize_fp8, fused_add_rms_norm_quant_fp8, glu_quant_fp8, quantize_fp8, quantize_fp8_with_plan, rms_norm_quant_fp8, ScaleGranularity, TensorQuantLimits, TensorQuantPlan,
};
use warpcore::ops::rms_norm::RmsNormConfig;
use warpcore::reference::mlp::GluActivation;
use warpcore::{DType, Error, TensorView, TensorViewMut, F8E4M3};

/// Column counts: tiny, odd (scalar path), DeepSeek/Llama hidden sizes, past the register path.
const COLS: &[usize] = &[1, 16, 128, 384, 989, 1024, 2048, 4096, 7168, 18432, 32768 + 128, 65536 + 256];

fn granularity() -> impl Strategy<Value = ScaleGranularity> {
    proptest::sample::select(&ScaleGranularity::ALL[..])
}

fn layout() -> impl Strategy<Value = ScaleLayout> {
    prop_oneof![Just(ScaleLayout::RowMajor), Just(ScaleLayout::ColMajor)]
}

fn quant_case() -> impl Strategy<Value = QuantCase> {
    (1usize..40, proptest::sample::select(COLS), granularity(), layout(), 0usize..4, 0usize..3, 0i32..13, any::<u64>()).prop_map(
        |(rows, cols, granularity, layout, gap, offset, spread, seed)| {
            // 1×128 groups need whole groups and 16-byte aligned rows: round the columns up
            // and keep gaps and offsets in 16-byte steps; the other modes take anything.
            let group = granularity == ScaleGranularity::Group128;
            let cols = if group { cols.div_ceil(128) * 128 } else { cols };
            let (x_gap, out_gap, offset) = if group { (8 * gap, 16 * gap, 16 * offset) } else { (gap, 3 * gap, offset) };
            QuantCase { rows, cols, x_stride: cols + x_gap, out_stride: cols + out_gap, offset, granularity, layout, spread, seed }
        },
    )
}

fn norm_case() -> impl Strategy<Value = NormQuantCase> {
    (1usize..40, proptest::sample::select(COLS), any::<bool>(), any::<bool>(), layout(), any::<bool>(), 0usize..3, any::<u64>()).prop_map(
        |(num_tokens, hidden, group, add, layout, gemma, gap, seed)| {
            let granularity = if group { ScaleGranularity::Group128 } else { ScaleGranularity::PerRow };
            let hidden = if group { hidden.div_ceil(128) * 128 } else { hidden };
            NormQuantCase { num_tokens, hidden, x_stride: hidden + 8 * gap, add, granularity, layout, gemma, seed }
        },
    )
}

fn glu_case() -> impl Strategy<Value = GluQuantCase> {
    const ACTS: &[GluActivation] = &[GluActivation::Silu, GluActivation::GeluTanh, GluActivation::SquaredRelu];
    (1usize..40, proptest::sample::select(COLS), any::<bool>(), proptest::sample::select(ACTS), layout(), 0usize..3, any::<u64>()).prop_map(
        |(rows, cols, group, act, layout, gap, seed)| {
            // Whole 16-element chunks (whole groups for 1×128) on 16-byte aligned rows.
            let granularity = if group { ScaleGranularity::Group128 } else { ScaleGranularity::PerRow };
            let cols = cols.div_ceil(if group { 128 } else { 16 }) * if group { 128 } else { 16 };
            GluQuantCase { rows, cols, pad: 8 * gap, act, granularity, layout, seed }
        },
    )
}

fn dequant_case() -> impl Strategy<Value = DequantCase> {
    (1usize..300, prop_oneof![Just(128usize), Just(384), Just(1024), Just(7168)], granularity(), layout(), 0i32..20, any::<u64>())
        .prop_map(|(rows, cols, granularity, layout, spread, seed)| DequantCase { rows, cols, granularity, layout, spread, seed })
}

/// A per-tensor case and how to run it: `None` = planned; `Some((c, h))` = forced single pass
/// on a fraction c of the device's CTAs (at least one) holding a fraction h of its shared memory.
#[derive(Clone, Copy, Debug)]
struct TensorCase {
    quant: QuantCase,
    forced: Option<(f64, f64)>,
    calls: usize,
}

fn tensor_case() -> impl Strategy<Value = TensorCase> {
    let shape = prop_oneof![(1usize..8, 1usize..600), (1usize..300, proptest::sample::select(COLS))];
    let forced = prop_oneof![Just(None), (0.0f64..1.0, 0.0f64..1.0).prop_map(Some), (0.0f64..0.05, 0.0f64..0.01).prop_map(Some)];
    (shape, 0usize..3, 0usize..3, any::<bool>(), forced, 1usize..4, any::<u64>()).prop_map(|((rows, cols), gap, offset, odd, forced, calls, seed)| {
        // Mostly the 16-byte layout (whole 16-element chunks, gaps and offsets in 16-byte
        // steps); `odd` keeps the columns as drawn and offsets by an element (two kernels).
        let cols = if odd { cols } else { cols.div_ceil(16) * 16 };
        let (x_gap, out_gap, offset) = if odd { (gap, 3 * gap, offset) } else { (8 * gap, 16 * gap, 16 * offset) };
        let quant = QuantCase {
            rows,
            cols,
            x_stride: cols + x_gap,
            out_stride: cols + out_gap,
            offset,
            granularity: ScaleGranularity::PerTensor,
            layout: ScaleLayout::RowMajor,
            spread: 6,
            seed,
        };
        TensorCase { quant, forced: if odd { None } else { forced }, calls }
    })
}

/// The forced plan of a case on this device.
fn forced_plan(limits: &TensorQuantLimits, (c, h): (f64, f64)) -> TensorQuantPlan {
    let ctas = 1 + (c * limits.max_ctas() as f64) as usize;
    TensorQuantPlan::SinglePass { ctas: ctas.min(limits.max_ctas()), held: (h * limits.max_held as f64) as usize / 16 * 16 }
}

macro_rules! dtype_tests {
    ($m:ident, $t:ty) => {
        mod $m {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn quantize_matches_reference_bit_for_bit(case in quant_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_quantize::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn single_pass_per_tensor_matches_reference_bit_for_bit(case in tensor_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    let limits = TensorQuantLimits::query::<$t>(&dev).unwrap();
                    let plan = case.forced.filter(|_| limits.cooperative).map(|f| forced_plan(&limits, f));
                    assert_passed(&check_quantize_tensor::<$t>(&dev, &case.quant, plan, case.calls).unwrap());
                }
                #[test]
                fn fused_norm_quant_is_within_one_step(case in norm_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_norm_quant::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn fused_glu_quant_is_within_one_step(case in glu_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_glu_quant::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn dequantize_matches_reference(case in dequant_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    let case = DequantCase { spread: if stringify!($t) == "f16" { case.spread.min(2) } else { case.spread }, ..case };
                    assert_passed(&check_dequantize::<$t>(&dev, &case).unwrap());
                }
            }

            #[test]
            fn deepseek_shapes() {
                let Some(dev) = device() else { return };
                for g in ScaleGranularity::ALL {
                    assert_passed(&check_quantize::<$t>(&dev, &QuantCase::dense(4096, 7168, g, 1)).unwrap());
                }
                assert_passed(&check_quantize::<$t>(&dev, &QuantCase::dense(18432, 7168, ScaleGranularity::Block128, 2)).unwrap());
                for add in [false, true] {
                    let case = NormQuantCase {
                        num_tokens: 1000,
                        hidden: 7168,
                        x_stride: 7168,
                        add,
                        granularity: ScaleGranularity::Group128,
                        layout: ScaleLayout::ColMajor,
                        gemma: false,
                        seed: 3,
                    };
                    assert_passed(&check_norm_quant::<$t>(&dev, &case).unwrap());
                }
            }
        }
    };
}
dtype_tests!(bf16_tests, bf16);
dtype_tests!(f16_tests, f16);

/// The device's one workspace through many grids: every CTA count from 1 up (and the device's maximum), held
/// shares that fit, that do not, and none; tensors smaller than the grid; both dtypes; then the
/// planner's choice at the bar's shape and a small one, twice each.
#[test]
fn single_pass_reuses_one_workspace_across_grids() {
    let Some(dev) = device() else { return };
    let limits = TensorQuantLimits::query::<bf16>(&dev).unwrap();
    if !limits.cooperative {
        eprintln!("SKIP single pass: the device does not launch cooperatively");
        return;
    }
    let max = limits.max_ctas();
    let mut seed = 0;
    for ctas in [1, 2, 3, 7, 64, max.saturating_sub(1), max].into_iter().filter(|&c| c >= 1 && c <= max) {
        for held in [0, 16, 1024, limits.max_held] {
            for &(rows, cols) in &[(1usize, 16usize), (3, 48), (257, 1040), (1024, 4096)] {
                seed += 1;
                let plan = Some(TensorQuantPlan::SinglePass { ctas, held });
                let case = QuantCase::dense(rows, cols, ScaleGranularity::PerTensor, seed);
                if seed % 2 == 0 {
                    assert_passed(&check_quantize_tensor::<bf16>(&dev, &case, plan, 1).unwrap());
                } else {
                    assert_passed(&check_quantize_tensor::<f16>(&dev, &case, plan, 1).unwrap());
                }
            }
        }
    }
    for &(rows, cols) in &[(4096usize, 7168usize), (64, 4096), (18432, 7168)] {
        let case = QuantCase::dense(rows, cols, ScaleGranularity::PerTensor, 99);
        assert_passed(&check_quantize_tensor::<bf16>(&dev, &case, None, 2).unwrap());
    }
}

#[test]
fn single_pass_rejects_plans_the_device_or_layout_cannot_run() {
    let Some(dev) = device() else { return };
    let limits = TensorQuantLimits::query::<bf16>(&dev).unwrap();
    let bad = [
        TensorQuantPlan::SinglePass { ctas: limits.max_ctas() + 1, held: 16 },
        TensorQuantPlan::SinglePass { ctas: 0, held: 16 },
        TensorQuantPlan::SinglePass { ctas: 1, held: limits.max_held + 16 },
        TensorQuantPlan::SinglePass { ctas: 1, held: 8 },
    ];
    for plan in bad {
        expect_quant_error(4, 256, [1, 1], 0, |d, x, mut o, mut s| quantize_fp8_with_plan(d, &x, &mut o, &mut s, plan), |e| {
            matches!(e, Error::Unsupported { op: "quantize_fp8", .. })
        });
    }
    // The single pass needs the 16-byte layout: x one element in is refused when forced...
    let ok = TensorQuantPlan::SinglePass { ctas: 1, held: 16 };
    expect_quant_error(4, 256, [1, 1], 1, |d, x, mut o, mut s| quantize_fp8_with_plan(d, &x, &mut o, &mut s, ok), |e| {
        matches!(e, Error::Unsupported { what: "single pass layout (cols % 16 == 0, 16-byte aligned rows of x and out)", .. })
    });
    // ...and planned onto the two kernels.
    let case = QuantCase { offset: 1, ..QuantCase::dense(4, 256, ScaleGranularity::PerTensor, 5) };
    assert_passed(&check_quantize_tensor::<bf16>(&dev, &case, None, 1).unwrap());
    // Per tensor only: another granularity's scale shape is a shape error.
    expect_quant_error(4, 256, [4, 1], 0, |d, x, mut o, mut s| quantize_fp8_with_plan(d, &x, &mut o, &mut s, TensorQuantPlan::TwoKernels), |e| {
        matches!(e, Error::ShapeMismatch { arg: "scale", .. })
    });
}

#[test]
fn dequantize_to_f32_is_exact_up_to_one_rounding() {
    let Some(dev) = device() else { return };
    for g in ScaleGranularity::ALL {
        let case = DequantCase { rows: 257, cols: 384, granularity: g, layout: ScaleLayout::ColMajor, spread: 30, seed: 4 };
        assert_passed(&check_dequantize::<f32>(&dev, &case).unwrap());
    }
}

/// x [rows, cols] bf16 ones, out and scale NaN-poisoned; `f` must fail as `matches` says and
/// leave both outputs untouched.
fn expect_quant_error(
    rows: usize,
    cols: usize,
    scale_shape: [usize; 2],
    x_offset: usize,
    f: impl FnOnce(&warpcore::Device, TensorView<bf16, 2>, TensorViewMut<F8E4M3, 2>, TensorViewMut<f32, 2>) -> warpcore::Result<()>,
    matches: impl Fn(&Error) -> bool,
) {
    let Some(dev) = device() else { return };
    let x = dev.upload(&vec![bf16::ONE; x_offset + rows * cols]).unwrap();
    let mut out = dev.upload(&vec![F8E4M3::NAN; rows * cols]).unwrap();
    let mut scale = dev.upload(&vec![f32::NAN; scale_shape[0] * scale_shape[1]]).unwrap();
    let xv = TensorView::contiguous(x.slice(x_offset..), [rows, cols]).unwrap();
    let ov = TensorViewMut::contiguous(out.as_view_mut(), [rows, cols]).unwrap();
    let sv = TensorViewMut::contiguous(scale.as_view_mut(), scale_shape).unwrap();
    let err = f(&dev, xv, ov, sv).expect_err("bad input must be rejected");
    assert!(matches(&err), "unexpected error: {err}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.0 == 0x7F), "a failed op wrote codes");
    assert!(dev.download(&scale).unwrap().iter().all(|v| v.is_nan()), "a failed op wrote scales");
}

#[test]
fn quantize_rejects_bad_input_before_launching() {
    use ScaleGranularity::*;
    // Scale tensor of the wrong shape.
    expect_quant_error(4, 256, [4, 1], 0, |d, x, mut o, mut s| quantize_fp8(d, &x, &mut o, &mut s, Group128), |e| {
        matches!(e, Error::ShapeMismatch { op: "quantize_fp8", arg: "scale", .. })
    });
    // 1×128 groups over 200 columns.
    expect_quant_error(4, 200, [4, 2], 0, |d, x, mut o, mut s| quantize_fp8(d, &x, &mut o, &mut s, Group128), |e| {
        matches!(e, Error::Unsupported { what: "columns for 1×128 groups (a multiple of 128)", .. })
    });
    // Groups need 16-byte aligned rows: x one element in.
    expect_quant_error(4, 256, [4, 2], 1, |d, x, mut o, mut s| quantize_fp8(d, &x, &mut o, &mut s, Group128), |e| {
        matches!(e, Error::Misaligned { arg: "x", align: 16, .. })
    });
    // Zero columns.
    expect_quant_error(4, 0, [4, 1], 0, |d, x, mut o, mut s| quantize_fp8(d, &x, &mut o, &mut s, PerRow), |e| matches!(e, Error::Empty { .. }));
    // The fused norms take per-row or group scales only.
    expect_quant_error(
        4,
        256,
        [1, 1],
        0,
        |d, x, mut o, mut s| {
            let w = d.upload(&vec![bf16::ONE; 256]).unwrap();
            rms_norm_quant_fp8(d, &x, &TensorView::contiguous(w.as_view(), [256]).unwrap(), &mut o, &mut s, PerTensor, RmsNormConfig::new(1e-6))
        },
        |e| matches!(e, Error::Unsupported { what: "granularity (per row or 1×128 groups)", .. }),
    );
    // Weight of the wrong length; bad eps.
    expect_quant_error(
        4,
        256,
        [4, 1],
        0,
        |d, x, mut o, mut s| {
            let w = d.upload(&vec![bf16::ONE; 255]).unwrap();
            rms_norm_quant_fp8(d, &x, &TensorView::contiguous(w.as_view(), [255]).unwrap(), &mut o, &mut s, PerRow, RmsNormConfig::new(1e-6))
        },
        |e| matches!(e, Error::ShapeMismatch { arg: "weight", .. }),
    );
    expect_quant_error(
        4,
        256,
        [4, 1],
        0,
        |d, x, mut o, mut s| {
            let w = d.upload(&vec![bf16::ONE; 256]).unwrap();
            rms_norm_quant_fp8(d, &x, &TensorView::contiguous(w.as_view(), [256]).unwrap(), &mut o, &mut s, PerRow, RmsNormConfig::new(f32::NAN))
        },
        |e| matches!(e, Error::Unsupported { what: "eps", .. }),
    );
}

/// One row takes any row stride, as every other op's one-row view does: the wrappers hand the
/// launchers the row's length (before 2026-12-02 a one-row x with stride 1 reached the group
/// path's stride check and failed untyped). Codes and scales equal the dense view's.
#[test]
fn one_row_takes_any_row_stride() {
    let Some(dev) = device() else { return };
    let xs: Vec<bf16> = (0..256).map(|i| bf16::from_f32((i as f32 * 0.37).sin() * 3.0)).collect();
    let x = dev.upload(&xs).unwrap();
    let w = dev.upload(&vec![bf16::ONE; 256]).unwrap();
    let wv = TensorView::contiguous(w.as_view(), [256]).unwrap();
    for g in [ScaleGranularity::PerRow, ScaleGranularity::Group128] {
        for fused in [false, true] {
            let run = |x_stride: usize, out_stride: usize| {
                let mut out = dev.upload(&vec![F8E4M3::NAN; 256 + out_stride]).unwrap();
                let mut scale = dev.upload(&[f32::NAN; 2]).unwrap();
                let xv = TensorView::new(x.as_view(), [1, 256], [x_stride, 1]).unwrap();
                let mut ov = TensorViewMut::new(out.as_view_mut(), [1, 256], [out_stride, 1]).unwrap();
                let shape = if g == ScaleGranularity::PerRow { [1, 1] } else { [1, 2] };
                let mut sv = TensorViewMut::contiguous(scale.slice_mut(..shape[1]), shape).unwrap();
                if fused {
                    rms_norm_quant_fp8(&dev, &xv, &wv, &mut ov, &mut sv, g, RmsNormConfig::new(1e-6)).unwrap();
                } else {
                    quantize_fp8(&dev, &xv, &mut ov, &mut sv, g).unwrap();
                }
                (dev.download(&out).unwrap()[..256].iter().map(|c| c.0).collect::<Vec<u8>>(), dev.download(&scale).unwrap()[..shape[1]].to_vec())
            };
            let dense = run(256, 256);
            assert!(dense.0.iter().all(|&c| c != 0x7F) && dense.1.iter().all(|s| s.is_finite()), "{g:?}");
            for (xs, os) in [(1, 5), (3, 256), (256, 1)] {
                assert_eq!(run(xs, os), dense, "{g:?} fused {fused}: x stride {xs}, out stride {os}");
            }
        }
    }
}

#[test]
fn glu_quant_rejects_bad_input_before_launching() {
    use ScaleGranularity::*;
    let Some(dev) = device() else { return };
    let (rows, cols) = (4usize, 256usize);
    // gate and up: halves of one [rows, 2 · cols] gate_up buffer (one spare element at the end).
    let gu = dev.upload(&vec![bf16::ONE; rows * 2 * cols + 1]).unwrap();
    let mut out = dev.upload(&vec![F8E4M3::NAN; rows * cols]).unwrap();
    let mut scale = dev.upload(&vec![f32::NAN; rows * 2]).unwrap();
    let mut run = |gate_at: usize, width: usize, up_width: usize, g: ScaleGranularity| -> Error {
        let gate = TensorView::new(gu.slice(gate_at..), [rows, width], [2 * cols, 1]).unwrap();
        let up = TensorView::new(gu.slice(cols..), [rows, up_width], [2 * cols, 1]).unwrap();
        let mut o = TensorViewMut::contiguous(out.slice_mut(..rows * width), [rows, width]).unwrap();
        let mut s = TensorViewMut::contiguous(scale.as_view_mut(), [rows, if g == Group128 { width / 128 } else { 1 }]).unwrap();
        glu_quant_fp8(&dev, &gate, &up, GluActivation::Silu, &mut o, &mut s, g).expect_err("bad input must be rejected")
    };
    let e = run(0, cols, cols - 128, Group128);
    assert!(matches!(e, Error::ShapeMismatch { op: "glu_quant_fp8", arg: "up", .. }), "{e}");
    let e = run(1, cols, cols, Group128);
    assert!(matches!(e, Error::Misaligned { arg: "gate", align: 16, .. }), "{e}");
    let e = run(0, cols, cols, PerTensor);
    assert!(matches!(e, Error::Unsupported { what: "granularity (per row or 1×128 groups)", .. }), "{e}");
    let e = run(0, 8, 8, PerRow);
    assert!(matches!(e, Error::Unsupported { what: "cols (a multiple of 16; of 128 with 1×128 groups)", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.0 == 0x7F), "a failed op wrote codes");
    assert!(dev.download(&scale).unwrap().iter().all(|v| v.is_nan()), "a failed op wrote scales");
}

#[test]
fn unsupported_dtypes_are_rejected() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&vec![1.0f32; 2 * 128]).unwrap();
    let mut out = dev.upload(&vec![F8E4M3::NAN; 2 * 128]).unwrap();
    let mut scale = dev.upload(&[f32::NAN; 2]).unwrap();
    let e = quantize_fp8(
        &dev,
        &TensorView::contiguous(x.as_view(), [2, 128]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [2, 128]).unwrap(),
        &mut TensorViewMut::contiguous(scale.as_view_mut(), [2, 1]).unwrap(),
        ScaleGranularity::PerRow,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    // Dequantizing into e4m3 is not a thing.
    let q = dev.upload(&vec![F8E4M3(0x38); 2 * 128]).unwrap();
    let s1 = dev.upload(&[1.0f32]).unwrap();
    let mut o8 = dev.upload(&vec![F8E4M3::NAN; 2 * 128]).unwrap();
    let e = dequantize_fp8(
        &dev,
        &TensorView::contiguous(q.as_view(), [2, 128]).unwrap(),
        &TensorView::contiguous(s1.as_view(), [1, 1]).unwrap(),
        ScaleGranularity::PerTensor,
        &mut TensorViewMut::contiguous(o8.as_view_mut(), [2, 128]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.0 == 0x7F) && dev.download(&o8).unwrap().iter().all(|v| v.0 == 0x7F));
}

#[test]
fn fused_add_rejects_a_residual_of_another_shape_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&vec![f16::ONE; 4 * 256]).unwrap();
    let mut r = dev.upload(&vec![f16::ONE; 4 * 256]).unwrap();
    let w = dev.upload(&vec![f16::ONE; 256]).unwrap();
    let mut out = dev.upload(&vec![F8E4M3::NAN; 4 * 256]).unwrap();
    let mut scale = dev.upload(&[f32::NAN; 8]).unwrap();
    let e = fused_add_rms_norm_quant_fp8(
        &dev,
        &TensorView::contiguous(x.as_view(), [4, 256]).unwrap(),
        &mut TensorViewMut::contiguous(r.slice_mut(..3 * 256), [3, 256]).unwrap(),
        &TensorView::contiguous(w.as_view(), [256]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [4, 256]).unwrap(),
        &mut TensorViewMut::contiguous(scale.as_view_mut(), [4, 2]).unwrap(),
        ScaleGranularity::Group128,
        RmsNormConfig::new(1e-6),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "residual", .. }), "{e}");
    assert!(dev.download(&r).unwrap().iter().all(|v| *v == f16::ONE));
    assert!(dev.download(&out).unwrap().iter().all(|v| v.0 == 0x7F));
}

#[test]
fn zero_rows_is_a_no_op() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[bf16::ONE; 4]).unwrap();
    let mut out = dev.upload(&[F8E4M3::NAN; 4]).unwrap();
    let mut scale = dev.upload(&[f32::NAN; 4]).unwrap();
    for g in ScaleGranularity::ALL {
        let shape = g.scale_shape(0, 128);
        quantize_fp8(
            &dev,
            &TensorView::contiguous(x.as_view(), [0, 128]).unwrap(),
            &mut TensorViewMut::contiguous(out.as_view_mut(), [0, 128]).unwrap(),
            &mut TensorViewMut::contiguous(scale.slice_mut(..shape[0] * shape[1]), shape).unwrap(),
            g,
        )
        .unwrap();
    }
    assert!(dev.download(&out).unwrap().iter().all(|v| v.0 == 0x7F));
    // Per tensor has a [1, 1] scale even for zero rows, and zero rows write nothing to it.
    assert!(dev.download(&scale).unwrap().iter().all(|v| v.is_nan()));
}
