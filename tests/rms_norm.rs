//! GPU tests of the RMSNorm family against `reference::rms_norm` (skip without a GPU).

mod common;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::rms_norm::{check_fused_add_rms_norm, check_qk_rms_norm, check_rms_norm, QkCase, RowsCase};
use warpcore::ops::rms_norm::{fused_add_rms_norm, qk_rms_norm, rms_norm, RmsNormConfig};
use warpcore::{DType, Error, TensorView, TensorViewMut};

const AWKWARD_HIDDEN: &[usize] = &[1, 8, 17, 111, 989, 4095, 4096, 5120, 8192, 18432];

fn rows_case() -> impl Strategy<Value = RowsCase> {
    (
        1usize..40,
        prop_oneof![proptest::sample::select(AWKWARD_HIDDEN), 1usize..3000],
        0usize..9,
        0usize..9,
        0usize..3,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(num_tokens, hidden, xg, og, offset, gemma, seed)| RowsCase {
            num_tokens,
            hidden,
            // Half the cases dense (the fast path), half with gaps between rows.
            x_stride: hidden + if seed % 2 == 0 { 0 } else { xg },
            out_stride: hidden + if seed % 4 < 2 { 0 } else { og },
            offset: if seed % 3 == 0 { offset } else { 0 },
            gemma,
            seed,
        })
}

fn qk_case() -> impl Strategy<Value = QkCase> {
    (
        1usize..20,
        1usize..17,
        0usize..5,
        0usize..3,
        proptest::sample::select(&[17usize, 32, 64, 80, 96, 128, 192, 256, 512][..]),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(num_tokens, num_q_heads, num_kv_heads, v_heads, head_dim, gemma, seed)| QkCase {
            num_tokens,
            num_q_heads,
            num_kv_heads,
            v_heads,
            head_dim,
            gemma,
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
                fn rms_norm_matches_reference(case in rows_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_rms_norm::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn fused_add_rms_norm_matches_reference(case in rows_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_fused_add_rms_norm::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn qk_rms_norm_matches_reference(case in qk_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_qk_rms_norm::<$t>(&dev, &case).unwrap());
                }
            }

            #[test]
            fn large_rows_take_the_two_pass_path() {
                let Some(dev) = device() else { return };
                for hidden in [32768 + 8, 65536, 131072 + 24] {
                    assert_passed(&check_rms_norm::<$t>(&dev, &RowsCase::dense(3, hidden, 1)).unwrap());
                    assert_passed(&check_fused_add_rms_norm::<$t>(&dev, &RowsCase::dense(3, hidden, 2)).unwrap());
                }
            }

            #[test]
            fn many_rows() {
                let Some(dev) = device() else { return };
                assert_passed(&check_rms_norm::<$t>(&dev, &RowsCase::dense(4099, 4096, 3)).unwrap());
                assert_passed(&check_fused_add_rms_norm::<$t>(&dev, &RowsCase::dense(4099, 2048, 4)).unwrap());
            }
        }
    };
}
dtype_tests!(bf16_tests, bf16);
dtype_tests!(f16_tests, f16);
dtype_tests!(f32_tests, f32);

/// Runs `f` with x [tokens, hidden], weight [hidden] and a NaN-poisoned out, then checks that
/// `f`'s error matches and out is still all NaN (nothing written).
fn expect_error<T: DType>(
    tokens: usize,
    hidden: usize,
    weight_len: usize,
    f: impl FnOnce(&warpcore::Device, TensorView<T, 2>, TensorView<T, 1>, TensorViewMut<T, 2>) -> warpcore::Result<()>,
    matches: impl Fn(&Error) -> bool,
) {
    let Some(dev) = device() else { return };
    let x = dev.upload(&vec![T::from_f32(1.0); tokens * hidden]).unwrap();
    let w = dev.upload(&vec![T::from_f32(1.0); weight_len]).unwrap();
    let mut out = dev.upload(&vec![T::NAN; tokens * hidden.max(1)]).unwrap();
    let xv = TensorView::contiguous(x.as_view(), [tokens, hidden]).unwrap();
    let wv = TensorView::contiguous(w.as_view(), [weight_len]).unwrap();
    let ov = TensorViewMut::contiguous(out.as_view_mut(), [tokens, hidden]).unwrap();
    let err = f(&dev, xv, wv, ov).expect_err("bad input must be rejected");
    assert!(matches(&err), "unexpected error: {err}");
    let after = dev.download(&out).unwrap();
    assert!(after.iter().all(|v| v.to_f32().is_nan()), "an op that failed wrote to its output");
}

#[test]
fn wrong_weight_shape_is_a_shape_mismatch() {
    expect_error::<bf16>(
        4,
        64,
        63,
        |d, x, w, mut o| rms_norm(d, &x, &w, &mut o, RmsNormConfig::new(1e-6)),
        |e| matches!(e, Error::ShapeMismatch { op: "rms_norm", arg: "weight", .. }),
    );
}

#[test]
fn zero_hidden_is_empty() {
    expect_error::<f16>(
        4,
        0,
        0,
        |d, x, w, mut o| rms_norm(d, &x, &w, &mut o, RmsNormConfig::new(1e-6)),
        |e| matches!(e, Error::Empty { op: "rms_norm", .. }),
    );
}

#[test]
fn bad_eps_is_unsupported() {
    for eps in [f32::NAN, -1.0, f32::INFINITY] {
        expect_error::<f32>(
            2,
            16,
            16,
            |d, x, w, mut o| rms_norm(d, &x, &w, &mut o, RmsNormConfig::new(eps)),
            |e| matches!(e, Error::Unsupported { what: "eps", .. }),
        );
    }
}

#[test]
fn out_shape_mismatch_and_strided_inner_dim_are_rejected() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&vec![bf16::ONE; 8 * 32]).unwrap();
    let w = dev.upload(&[bf16::ONE; 16]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 8 * 32]).unwrap();
    let wv = TensorView::contiguous(w.as_view(), [16]).unwrap();
    // Inner stride 2 (every other element): rejected, not silently wrong.
    let xs = TensorView::new(x.as_view(), [8, 16], [32, 2]).unwrap();
    let mut o = TensorViewMut::contiguous(out.as_view_mut(), [8, 16]).unwrap();
    let e = rms_norm(&dev, &xs, &wv, &mut o, RmsNormConfig::new(1e-6)).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "rms_norm", .. }), "{e}");
    // out [8, 15] for x [8, 16].
    let xv = TensorView::contiguous(x.slice(..128), [8, 16]).unwrap();
    let mut o = TensorViewMut::contiguous(out.as_view_mut(), [8, 15]).unwrap();
    let e = rms_norm(&dev, &xv, &wv, &mut o, RmsNormConfig::new(1e-6)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "out", .. }), "{e}");
    // Overlapping output rows (row stride 8 < hidden 16).
    let mut o = TensorViewMut::new(out.as_view_mut(), [8, 16], [8, 1]).unwrap();
    let e = rms_norm(&dev, &xv, &wv, &mut o, RmsNormConfig::new(1e-6)).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "overlapping output strides", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn views_past_their_buffer_are_out_of_bounds() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[bf16::ONE; 100]).unwrap();
    let e = TensorView::new(x.as_view(), [2, 64], [64, 1]).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { needed: 128, len: 100, .. }), "{e}");
    let e = TensorView::new(x.as_view(), [2, 50], [51, 1]).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { needed: 101, .. }), "{e}");
    assert!(TensorView::new(x.as_view(), [2, 50], [50, 1]).is_ok());
}

#[test]
fn buffers_of_another_context_are_rejected() {
    let Some(dev) = device() else { return };
    // A second (non-primary) context on the same GPU owns `w`.
    let other = cudarc::driver::CudaContext::new_non_primary(0, 0).unwrap();
    let w = other.default_stream().clone_htod(&[bf16::ONE; 16]).unwrap();
    dev.context().bind_to_thread().unwrap();
    let x = dev.upload(&[bf16::ONE; 32]).unwrap();
    let mut out = dev.upload(&[bf16::NAN; 32]).unwrap();
    let e = rms_norm(
        &dev,
        &TensorView::contiguous(x.as_view(), [2, 16]).unwrap(),
        &TensorView::contiguous(w.as_view(), [16]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [2, 16]).unwrap(),
        RmsNormConfig::new(1e-6),
    )
    .unwrap_err();
    assert!(matches!(e, Error::WrongDevice { arg: "weight", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn zero_tokens_is_a_no_op() {
    let Some(dev) = device() else { return };
    let x = dev.upload(&[bf16::ONE; 4]).unwrap();
    let w = dev.upload(&[bf16::ONE; 16]).unwrap();
    let mut out = dev.upload(&[bf16::NAN; 4]).unwrap();
    rms_norm(
        &dev,
        &TensorView::contiguous(x.as_view(), [0, 16]).unwrap(),
        &TensorView::contiguous(w.as_view(), [16]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [0, 16]).unwrap(),
        RmsNormConfig::new(1e-6),
    )
    .unwrap();
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn fused_add_and_qk_reject_bad_shapes() {
    let Some(dev) = device() else { return };
    let mut x = dev.upload(&[f16::ONE; 64]).unwrap();
    let mut r = dev.upload(&[f16::ONE; 64]).unwrap();
    let w = dev.upload(&vec![f16::ONE; 600]).unwrap();
    let wv = TensorView::contiguous(w.slice(..16), [16]).unwrap();
    let e = fused_add_rms_norm(
        &dev,
        &mut TensorViewMut::contiguous(x.as_view_mut(), [4, 16]).unwrap(),
        &mut TensorViewMut::contiguous(r.slice_mut(..48), [3, 16]).unwrap(),
        &wv,
        RmsNormConfig::new(1e-6),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "residual", .. }), "{e}");
    // head_dim 513 > 512.
    let mut big = dev.upload(&vec![f16::ONE; 2 * 513]).unwrap();
    let w513 = TensorView::contiguous(w.slice(..513), [513]).unwrap();
    let e = qk_rms_norm(&dev, &mut TensorViewMut::contiguous(big.as_view_mut(), [1, 2, 513]).unwrap(), 1, &w513, &w513, RmsNormConfig::new(1e-6))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "head_dim (at most 512)", .. }), "{e}");
    // More q heads than heads.
    let mut qk = TensorViewMut::contiguous(x.as_view_mut(), [2, 2, 16]).unwrap();
    let e = qk_rms_norm(&dev, &mut qk, 3, &wv, &wv, RmsNormConfig::new(1e-6)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "qk", .. }), "{e}");
    assert!(dev.download(&x).unwrap().iter().all(|v| *v == f16::ONE) && dev.download(&r).unwrap().iter().all(|v| *v == f16::ONE));
}

#[test]
fn fp8_is_an_unsupported_dtype() {
    expect_error::<warpcore::F8E4M3>(
        2,
        16,
        16,
        |d, x, w, mut o| rms_norm(d, &x, &w, &mut o, RmsNormConfig::new(1e-6)),
        |e| matches!(e, Error::Unsupported { op: "rms_norm", what: "dtype", .. }),
    );
}

/// The bench's timing on its capturable device (`warpcore bench`): the calls are also replayed
/// as a CUDA graph (the threshold raised so that any call qualifies, also on the emulation),
/// and a replayed call writes what an eager one does, bit for bit. The default device (the
/// legacy stream) cannot be captured and says so.
#[test]
fn the_bench_replays_calls_as_cuda_graphs() {
    let Some(legacy) = device() else { return };
    assert!(!legacy.capturable());
    let dev = warpcore::Device::new_capturable(0).unwrap();
    assert!(dev.capturable());
    let (rows, hidden) = (4usize, 256usize);
    let x = dev.upload(&warpcore::check::Rng::new(5).vec::<bf16>(rows * hidden, -2.0, 2.0)).unwrap();
    let w = dev.upload(&warpcore::check::Rng::new(6).vec::<bf16>(hidden, -1.0, 1.0)).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; rows * hidden]).unwrap();
    let call = |out: &mut cudarc::driver::CudaSlice<bf16>| {
        rms_norm(
            &dev,
            &TensorView::contiguous(x.as_view(), [rows, hidden]).unwrap(),
            &TensorView::contiguous(w.as_view(), [hidden]).unwrap(),
            &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, hidden]).unwrap(),
            RmsNormConfig::new(1e-6),
        )
    };
    call(&mut out).unwrap();
    let eager = dev.download(&out).unwrap();
    assert!(eager.iter().all(|v| v.is_finite()));
    // The eager (timed) calls write `scratch`; only the calls captured into the graph write
    // `out`, so `out` holds what the replays wrote (before 2026-12-03 both wrote `out`, and an
    // empty graph passed).
    out = dev.upload(&vec![bf16::NAN; rows * hidden]).unwrap();
    let mut scratch = dev.upload(&vec![bf16::NAN; rows * hidden]).unwrap();
    let capturing = |dev: &warpcore::Device| dev.stream().capture_status().unwrap() != cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    let t = warpcore::bench::time_calls_graph_below(&dev, 3, f64::INFINITY, |_| if capturing(&dev) { call(&mut out) } else { call(&mut scratch) }).unwrap();
    let g = t.graph_us.expect("the calls were replayed as a graph");
    assert!(g.is_finite() && g >= 0.0 && t.median_us.is_finite(), "{t:?}");
    let replayed = dev.download(&out).unwrap();
    assert_eq!(eager.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), replayed.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}
