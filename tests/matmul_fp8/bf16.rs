//! The FP8 GEMM's kernels on bf16 operands (`matmul_grouped`) against
//! `reference::matmul_grouped` (part of tests/matmul_fp8.rs).

use super::*;

/// bf16 grouped GEMMs of awkward shapes: n and k any multiple of 8 (tails in both), 1 to 64
/// groups over any m (empty groups, rows outside every group), padded strides, bias, residual.
fn bf16_grouped_case() -> impl Strategy<Value = GroupedCase> {
    (0usize..=300, 1usize..=50, 1usize..=80, proptest::sample::select(&[1usize, 2, 3, 8, 64][..]), (any::<bool>(), any::<bool>(), 0usize..3, any::<u64>())).prop_map(
        |(m, n8, k8, groups, (bias, residual, pad, seed))| GroupedCase { bias, residual, pad, ..GroupedCase::new(m, 8 * n8, 8 * k8, groups, seed) },
    )
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn grouped_bf16_matches_reference(case in bf16_grouped_case()) {
        let Some(dev) = device() else { return Ok(()) };
        for (kernel, _) in grouped_variants(&dev) {
            assert_passed(&check_matmul_grouped::<bf16>(&dev, &GroupedCase { kernel, ..case }).unwrap());
            assert_passed(&check_matmul_grouped::<f32>(&dev, &GroupedCase { kernel, ..case }).unwrap());
        }
    }
}

/// The check cases (Qwen3-30B-A3B's experts at decode, prefill, the test models' widths) on
/// every kernel.
#[test]
fn grouped_bf16_check_cases() {
    let Some(dev) = device() else { return };
    for (kernel, _) in grouped_variants(&dev) {
        for r in warpcore::check::matmul_grouped::check_all(&dev, kernel).unwrap() {
            assert_passed(&r);
        }
    }
}

#[test]
fn grouped_bf16_refuses_bad_input_and_writes_nothing() {
    let Some(dev) = device() else { return };
    let (m, n, k, groups) = (40usize, 72usize, 48usize, 3usize);
    let a = dev.upload(&vec![bf16::ONE; m * k + 8]).unwrap();
    let b = dev.upload(&vec![bf16::ONE; groups * n * k]).unwrap();
    let offsets = dev.upload(&[0i32, 10, 20, 40]).unwrap();
    let av = TensorView::contiguous(a.slice(..m * k), [m, k]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [groups * n, k]).unwrap();
    let ofs = TensorView::contiguous(offsets.as_view(), [groups + 1]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
    let auto = GemmKernel::Auto;
    // k and n: multiples of 8.
    let k_odd = TensorView::contiguous(a.slice(..m * 44), [m, 44]).unwrap();
    let b_odd = TensorView::contiguous(b.slice(..groups * n * 44), [groups * n, 44]).unwrap();
    let e = matmul_grouped::<bf16>(&dev, &k_odd, &b_odd, &ofs, None, None, &mut ov, auto).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "matmul_grouped", what: "k (a multiple of 8)", .. }), "{e}");
    let mut out_odd = dev.upload(&vec![bf16::NAN; m * 68]).unwrap();
    let b68 = TensorView::contiguous(b.slice(..groups * 68 * k), [groups * 68, k]).unwrap();
    let e = matmul_grouped::<bf16>(&dev, &av, &b68, &ofs, None, None, &mut TensorViewMut::contiguous(out_odd.as_view_mut(), [m, 68]).unwrap(), auto).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "n (a multiple of 8)", .. }), "{e}");
    // Rows 16-byte aligned: a starting one element in.
    let shifted = TensorView::contiguous(a.slice(1..1 + m * k), [m, k]).unwrap();
    let e = matmul_grouped::<bf16>(&dev, &shifted, &bv, &ofs, None, None, &mut ov, auto).unwrap_err();
    assert!(matches!(e, Error::Misaligned { .. }), "{e}");
    // b must stack groups · n rows; a's k must be b's.
    let short = TensorView::contiguous(b.slice(..(groups * n - 8) * k), [groups * n - 8, k]).unwrap();
    let e = matmul_grouped::<bf16>(&dev, &av, &short, &ofs, None, None, &mut ov, auto).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "b", .. }), "{e}");
    let narrow = TensorView::contiguous(b.slice(..groups * n * 40), [groups * n, 40]).unwrap();
    let e = matmul_grouped::<bf16>(&dev, &av, &narrow, &ofs, None, None, &mut ov, auto).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "b", .. }), "{e}");
    // f16 out.
    let mut out16 = dev.upload(&vec![half::f16::NAN; m * n]).unwrap();
    let e = matmul_grouped::<half::f16>(&dev, &av, &bv, &ofs, None, None, &mut TensorViewMut::contiguous(out16.as_view_mut(), [m, n]).unwrap(), auto).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()), "a refused GEMM wrote its output");
    assert!(dev.download(&out_odd).unwrap().iter().all(|v| v.is_nan()));
    assert!(dev.download(&out16).unwrap().iter().all(|v| v.is_nan()));
}
