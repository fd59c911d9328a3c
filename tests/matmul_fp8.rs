//! GPU tests of the FP8 GEMM against `reference::matmul_fp8`, and of the same kernels on bf16
//! operands (`matmul_grouped`) against `reference::matmul_grouped` (skip without a GPU). On an
//! H200 every case runs on both kernels (wgmma and mma.sync).

mod common;
// bf16 operands (`matmul_grouped`): tests/matmul_fp8/bf16.rs.
#[path = "matmul_fp8/bf16.rs"]
mod bf16_operands;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::bf16;
use proptest::prelude::*;
use warpcore::check::matmul_fp8::{check_matmul_fp8, kernel_variants, MatmulCase};
use warpcore::check::matmul_grouped::{check_matmul_grouped, GroupedCase};
use warpcore::check::quant::ScaleLayout;
use warpcore::ops::matmul_fp8::{
    matmul_fp8, matmul_fp8_grouped, matmul_grouped, plan_sm90, sm90_candidates, Accumulation, Fp8Operand, GemmInput, GemmKernel, MatmulFp8Config, MatmulFp8Problem, TileConfig,
};
use warpcore::ops::quant::ScaleGranularity::{self, *};
use warpcore::{Error, TensorView, TensorViewMut, F8E4M3};

/// The supported (A, B) scale pairs.
const PAIRS: &[(ScaleGranularity, ScaleGranularity)] =
    &[(PerTensor, PerTensor), (PerRow, PerRow), (PerRow, PerTensor), (PerTensor, PerRow), (Group128, Block128), (PerRow, Block128), (Group128, PerTensor), (PerTensor, Block128)];
const M: &[usize] = &[1, 7, 64, 128, 129, 1000, 4096];
/// Bound on m · n · k per case: keeps the f64 reference under a second or so.
const MAX_MNK: usize = 1 << 29;

/// The device when it runs the wgmma kernel (compute capability 9.0); None elsewhere (the
/// Hopper-only tests then pass as skipped, as without a GPU).
fn hopper() -> Option<warpcore::Device> {
    let dev = device()?;
    if dev.info().compute_capability != (9, 0) {
        eprintln!("SKIP (not compute capability 9.0: the wgmma kernel is Hopper-only)");
        return None;
    }
    Some(dev)
}

fn case() -> impl Strategy<Value = MatmulCase> {
    (
        proptest::sample::select(M),
        1usize..=56,  // n / 128: up to 7168
        1usize..=128, // k / 128: up to 16384
        proptest::sample::select(PAIRS),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (0usize..3, 0i32..7, any::<u64>()),
    )
        .prop_map(|(m, n128, k128, (a, b), (bias, residual, fast, col_major), (pad, spread, seed))| {
            let n = n128 * 128;
            // Shrink k (then n) until the reference stays cheap; m is the point of the test.
            let mut k = k128 * 128;
            while m * n * k > MAX_MNK && k > 128 {
                k = (k / 2).div_ceil(128) * 128;
            }
            let n = if m * n * k > MAX_MNK { (MAX_MNK / (m * k)).max(128) / 128 * 128 } else { n };
            MatmulCase {
                m,
                n,
                k,
                a_granularity: a,
                b_granularity: b,
                a_scale_layout: if col_major { ScaleLayout::ColMajor } else { ScaleLayout::RowMajor },
                bias,
                residual,
                kernel: GemmKernel::Auto,
                fast_accumulation: fast,
                cluster: None,
                tile: None,
                pad,
                spread,
                groups: 0,
                seed,
            }
        })
}

/// Grouped GEMMs: 1 to 256 groups (MoE experts) over any m, with B's rows (groups · n) kept
/// under 2^26 bytes and the reference cheap.
fn grouped_case() -> impl Strategy<Value = MatmulCase> {
    (case(), proptest::sample::select(&[1usize, 2, 3, 8, 64, 256][..])).prop_map(|(c, groups)| {
        let n = c.n.min(((1 << 26) / (groups * c.k)).max(128) / 128 * 128);
        let k = if groups * n * c.k > 1 << 26 { 128 } else { c.k };
        MatmulCase { n, k, groups, ..c }
    })
}

/// The kernel variants of a grouped GEMM: the GPU's, without cluster pairs.
fn grouped_variants(dev: &warpcore::Device) -> Vec<(GemmKernel, Option<usize>)> {
    kernel_variants(dev).into_iter().filter(|&(_, c)| c != Some(2)).collect()
}


proptest! {
    #![proptest_config(config())]
    #[test]
    fn bf16_out_matches_reference(case in case()) {
        let Some(dev) = device() else { return Ok(()) };
        for (kernel, cluster) in kernel_variants(&dev) {
            assert_passed(&check_matmul_fp8::<bf16>(&dev, &MatmulCase { kernel, cluster, ..case }).unwrap());
        }
    }
    #[test]
    fn grouped_matches_reference(case in grouped_case()) {
        let Some(dev) = device() else { return Ok(()) };
        for (kernel, cluster) in grouped_variants(&dev) {
            assert_passed(&check_matmul_fp8::<bf16>(&dev, &MatmulCase { kernel, cluster, ..case }).unwrap());
        }
    }
    #[test]
    fn f32_out_matches_reference(case in case()) {
        let Some(dev) = device() else { return Ok(()) };
        for (kernel, cluster) in kernel_variants(&dev) {
            assert_passed(&check_matmul_fp8::<f32>(&dev, &MatmulCase { kernel, cluster, ..case }).unwrap());
        }
    }
}

#[test]
fn long_k_with_scales_over_many_decades() {
    let Some(dev) = device() else { return };
    for (kernel, cluster) in kernel_variants(&dev) {
        for &(a, b) in PAIRS {
            let case = MatmulCase { kernel, cluster, spread: 8, bias: true, residual: true, ..MatmulCase::new(129, 256, 16384, a, b, 1) };
            assert_passed(&check_matmul_fp8::<f32>(&dev, &case).unwrap());
        }
    }
}

/// Decode-sized GEMMs, whose tiles leave most SMs idle, run split-k on the H200 (the plan is
/// asserted, so a planner change cannot quietly drop the path from this test): one and 16
/// tokens through a 2048 × 8192 projection in every accumulation, scales over many decades,
/// bias and residual; the same problems forced unsplit and split 8 ways (a caller's tile), and
/// on the mma.sync kernel, also match.
#[test]
fn decode_shapes_split_k_over_the_idle_sms() {
    let Some(dev) = hopper() else { return };
    let sms = dev.info().sm_count as usize;
    for (i, m) in [1usize, 16].into_iter().enumerate() {
        for (j, (a, b, fast, accumulation)) in
            [(PerRow, PerRow, true, Accumulation::Fast), (PerTensor, PerRow, false, Accumulation::Promoted), (Group128, Block128, false, Accumulation::BlockScaled)].into_iter().enumerate()
        {
            let problem = MatmulFp8Problem { m, n: 2048, k: 8192, accumulation, groups: 0, input: GemmInput::E4m3, out_bf16: false, residual: true };
            let plan = plan_sm90(&problem, sms, None).unwrap();
            // 16 tiles of 64 × 128: split wherever they fill at most a quarter of the SMs.
            assert_eq!(plan.k_splits > 1, sms >= 64, "{problem:?} on {sms} SMs: {plan}");
            let case = MatmulCase { kernel: GemmKernel::Wgmma, fast_accumulation: fast, spread: 4, bias: true, residual: true, ..MatmulCase::new(m, 2048, 8192, a, b, (10 * i + j) as u64) };
            assert_passed(&check_matmul_fp8::<f32>(&dev, &case).unwrap());
            // Unsplit, and split 8 ways on whatever the GPU has (a CTA may walk several slices).
            let whole = plan.unsplit();
            let split = TileConfig { k_splits: 8, num_ctas: (16 * 8).min(sms), ..whole };
            for tile in [whole, split] {
                assert_passed(&check_matmul_fp8::<f32>(&dev, &MatmulCase { tile: Some(tile), ..case }).unwrap());
            }
            // The mma.sync kernel plans split-k by the same rule (16 tiles of 128 × 128 here).
            assert_passed(&check_matmul_fp8::<f32>(&dev, &MatmulCase { kernel: GemmKernel::MmaSync, ..case }).unwrap());
        }
    }
}

/// A split-k GEMM is two launches, the GEMM and its reduction (a programmatic dependent of it).
/// Captured into a CUDA graph after an eager call on the same `Device` (which allocated the
/// workspace: a capture may not allocate), the pair replays to the eager result bit for bit.
/// The split is forced (4 slices of 16 tiles), so the test means the same on any sm_90 GPU.
#[test]
fn split_k_replays_from_a_cuda_graph() {
    use cudarc::driver::{result, sys};
    let Some(dev0) = hopper() else { return };
    let ctx = dev0.context().clone();
    ctx.bind_to_thread().unwrap();
    // The legacy default stream cannot be captured: a stream of the test's own, wrapped without
    // cudarc owning it (as the model's capture side does), destroyed at the end.
    let raw = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    // SAFETY: `raw` belongs to this context and outlives every use of the wrapper (destroyed
    // below, after a synchronize and after the buffers and graph that use it are dropped).
    let dev = warpcore::Device::from_stream(unsafe { ctx.wrap_borrowed_stream(raw) }).unwrap();
    let (m, n, k) = (3, 2048, 1024);
    let mut state = 7u32;
    let mut code = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let c = (state >> 24) as u8;
        F8E4M3(if c & 0x7f == 0x7f { c ^ 1 } else { c }) // no NaN codes
    };
    let a = dev.upload(&(0..m * k).map(|_| code()).collect::<Vec<_>>()).unwrap();
    let b = dev.upload(&(0..n * k).map(|_| code()).collect::<Vec<_>>()).unwrap();
    let sa = dev.upload(&[0.5f32]).unwrap();
    let sb = dev.upload(&(0..n).map(|j| 1.0 + (j % 7) as f32 / 8.0).collect::<Vec<_>>()).unwrap();
    let bias = dev.upload(&(0..n).map(|j| bf16::from_f32(j as f32 / 64.0)).collect::<Vec<_>>()).unwrap();
    let mut eager = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let mut replayed = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let tile = TileConfig { block_m: 64, block_n: 128, group_m: 8, num_ctas: 64.min(dev.info().sm_count as usize), cluster_m: 1, tma_store: false, k_splits: 4 };
    let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, tile: Some(tile), ..Default::default() };
    let gemm = |out: &mut cudarc::driver::CudaSlice<bf16>| {
        let av = TensorView::contiguous(a.as_view(), [m, k]).unwrap();
        let bv = TensorView::contiguous(b.as_view(), [n, k]).unwrap();
        let sav = TensorView::contiguous(sa.as_view(), [1, 1]).unwrap();
        let sbv = TensorView::contiguous(sb.as_view(), [n, 1]).unwrap();
        let biasv = TensorView::contiguous(bias.as_view(), [n]).unwrap();
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
        let (pa, pb) = (Fp8Operand { data: &av, scale: &sav, granularity: PerTensor }, Fp8Operand { data: &bv, scale: &sbv, granularity: PerRow });
        matmul_fp8(&dev, pa, pb, Some(&biasv), None, &mut ov, cfg)
    };
    gemm(&mut eager).unwrap();
    dev.synchronize().unwrap();
    let stream = dev.stream().clone();
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    let queued = gemm(&mut replayed);
    let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    queued.unwrap();
    let graph = graph.unwrap().expect("the capture recorded the GEMM and its reduction");
    assert!(dev.download(&replayed).unwrap().iter().all(|v| v.is_nan()), "capturing ran something");
    for _ in 0..2 {
        graph.launch().unwrap();
    }
    dev.synchronize().unwrap();
    let (e, r) = (dev.download(&eager).unwrap(), dev.download(&replayed).unwrap());
    assert!(e.iter().all(|v| v.is_finite()), "the eager split-k GEMM left poison");
    assert_eq!(e.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), r.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    drop((graph, a, b, sa, sb, bias, eager, replayed, dev));
    // SAFETY: nothing runs on the stream any more (synchronized above) and its wrapper's users are gone.
    unsafe { result::stream::destroy(raw) }.unwrap();
}

#[test]
fn every_m_tail_of_the_tiles() {
    let Some(dev) = device() else { return };
    for (kernel, cluster) in kernel_variants(&dev) {
        for m in [1, 63, 64, 65, 127, 128, 129, 191, 255, 257] {
            for (a, b) in [(PerRow, PerRow), (Group128, Block128)] {
                for fast in [false, true] {
                    let case = MatmulCase { kernel, cluster, fast_accumulation: fast, residual: true, ..MatmulCase::new(m, 768, 512, a, b, m as u64) };
                    assert_passed(&check_matmul_fp8::<bf16>(&dev, &case).unwrap());
                }
            }
        }
    }
}

/// Every scale pair, both accumulation modes and both outputs on every kernel variant, at a
/// shape small enough for the host emulation (tools/host-emu/cargo-test) to run in a minute:
/// two m-tiles with a tail (pairs get an odd m-tile count), two n-tiles, three k-blocks.
#[test]
fn every_scale_pair_on_a_small_shape() {
    let Some(dev) = device() else { return };
    for (kernel, cluster) in kernel_variants(&dev) {
        for (i, &(a, b)) in PAIRS.iter().enumerate() {
            for fast in [false, true] {
                let case = MatmulCase { kernel, cluster, fast_accumulation: fast, bias: i % 2 == 0, residual: i % 3 == 0, pad: i % 2, ..MatmulCase::new(130, 256, 384, a, b, i as u64) };
                assert_passed(&check_matmul_fp8::<bf16>(&dev, &case).unwrap());
                assert_passed(&check_matmul_fp8::<f32>(&dev, &MatmulCase { seed: 100 + i as u64, ..case }).unwrap());
            }
        }
    }
}

/// Grouped GEMMs at shapes the host emulation runs in a minute or two: every scale pair, 1 to
/// 9 groups with empty groups and rows outside every group, both accumulation modes.
#[test]
fn grouped_every_scale_pair_on_a_small_shape() {
    let Some(dev) = device() else { return };
    for (kernel, cluster) in grouped_variants(&dev) {
        for (i, &(a, b)) in PAIRS.iter().enumerate() {
            let case = MatmulCase { kernel, cluster, groups: 1 + i, fast_accumulation: i % 2 == 1, bias: i % 2 == 0, residual: i % 3 == 0, pad: i % 2, ..MatmulCase::new(150, 128, 256, a, b, 3 * i as u64) };
            assert_passed(&check_matmul_fp8::<bf16>(&dev, &case).unwrap());
        }
        // Many groups over few rows (MoE decode), f32 out.
        let case = MatmulCase { kernel, cluster, groups: 40, ..MatmulCase::new(12, 256, 384, Group128, Block128, 77) };
        assert_passed(&check_matmul_fp8::<f32>(&dev, &case).unwrap());
    }
}

/// Offsets out of range and out of order are clamped on the device (rows [0, m), never two
/// groups on one row), and a grouped GEMM's bad input is refused with nothing written.
#[test]
fn grouped_offsets_are_clamped_and_bad_input_refused() {
    let Some(dev) = device() else { return };
    let (m, n, k, groups) = (70usize, 128usize, 128usize, 4usize);
    let a = dev.upload(&(0..m * k).map(|i| F8E4M3(0x30 + (i % 7) as u8)).collect::<Vec<_>>()).unwrap();
    let b = dev.upload(&(0..groups * n * k).map(|i| F8E4M3(0x28 + (i % 11) as u8)).collect::<Vec<_>>()).unwrap();
    let s = dev.upload(&[1.0f32]).unwrap();
    let offsets = dev.upload(&[3i32, -7, 30, 20, 500]).unwrap();
    let av = TensorView::contiguous(a.as_view(), [m, k]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [groups * n, k]).unwrap();
    let sv = TensorView::contiguous(s.as_view(), [1, 1]).unwrap();
    let ofs = TensorView::contiguous(offsets.as_view(), [groups + 1]).unwrap();
    for (kernel, _) in grouped_variants(&dev) {
        let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
        let cfg = MatmulFp8Config { kernel, ..Default::default() };
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
        matmul_fp8_grouped(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), &ofs, None, None, &mut ov, cfg).unwrap();
        let got = dev.download(&out).unwrap();
        // Groups [3, 3), [3, 30), [30, 30), [30, 70): rows 0..3 untouched, the rest from groups 1 and 3.
        let ah: Vec<f64> = (0..m * k).map(|i| F8E4M3(0x30 + (i % 7) as u8).to_f64()).collect();
        let bh: Vec<f64> = (0..groups * n * k).map(|i| F8E4M3(0x28 + (i % 11) as u8).to_f64()).collect();
        for i in 0..m {
            let g = if i < 3 { None } else if i < 30 { Some(1) } else { Some(3) };
            for j in 0..n {
                let v = got[i * n + j].to_f64();
                match g {
                    None => assert!(v.is_nan(), "{kernel:?}: row {i} is in no group but was written"),
                    Some(g) => {
                        let want: f64 = (0..k).map(|l| ah[i * k + l] * bh[(g * n + j) * k + l]).sum();
                        assert!((v - want).abs() <= want.abs() * 2f64.powi(-8), "{kernel:?} ({i}, {j}): {v} vs {want}");
                    }
                }
            }
        }
    }
    let untouched = |out: &cudarc::driver::CudaSlice<bf16>| dev.download(out).unwrap().iter().all(|v| v.is_nan());
    let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
    // b must stack groups · n rows.
    let short = TensorView::contiguous(b.slice(..(groups * n - 128) * k), [groups * n - 128, k]).unwrap();
    let e = matmul_fp8_grouped(&dev, per_tensor(&av, &sv), per_tensor(&short, &sv), &ofs, None, None, &mut ov, MatmulFp8Config::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "matmul_fp8_grouped", arg: "b", .. }), "{e}");
    // At least one group.
    let none = TensorView::contiguous(offsets.slice(..1), [1]).unwrap();
    let e = matmul_fp8_grouped(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), &none, None, None, &mut ov, MatmulFp8Config::default()).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    // A bias per stacked b row, not per column of out.
    let bias = dev.upload(&vec![bf16::ONE; n]).unwrap();
    let bias_v = TensorView::contiguous(bias.as_view(), [n]).unwrap();
    let e = matmul_fp8_grouped(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), &ofs, Some(&bias_v), None, &mut ov, MatmulFp8Config::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "bias", .. }), "{e}");
    // No cluster pairs.
    let cfg = MatmulFp8Config { cluster: Some(2), ..Default::default() };
    let e = matmul_fp8_grouped(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), &ofs, None, None, &mut ov, cfg).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "cluster (grouped GEMMs have no pairs)", .. }), "{e}");
    assert!(untouched(&out), "a refused grouped GEMM wrote its output");
}

/// The grouped walk against the plain one, bit for bit (each output element is the same sum in
/// the same k order, whatever the tiling): one group over every row equals `matmul_fp8`, and
/// groups that all use the same weights (b stacked three times) equal it too.
#[test]
fn grouped_gemms_with_one_weight_equal_the_plain_gemm_bit_for_bit() {
    let Some(dev) = device() else { return };
    let (m, n, k) = (200usize, 256usize, 384usize);
    let code = |i: usize, salt: usize| F8E4M3((((i * 7 + salt) % 200) as u8).wrapping_add(0x20) & 0x7E);
    let a_host: Vec<F8E4M3> = (0..m * k).map(|i| code(i, 1)).collect();
    let b_host: Vec<F8E4M3> = (0..n * k).map(|i| code(i, 3)).collect();
    let b3_host: Vec<F8E4M3> = (0..3).flat_map(|_| b_host.iter().copied()).collect();
    let sa_host: Vec<f32> = (0..m * (k / 128)).map(|i| 2f32.powi((i % 5) as i32 - 2)).collect();
    let sb_host: Vec<f32> = (0..(n / 128) * (k / 128)).map(|i| 2f32.powi((i % 3) as i32 - 1)).collect();
    let sb3_host: Vec<f32> = (0..3).flat_map(|_| sb_host.iter().copied()).collect();
    let (a, b, b3) = (dev.upload(&a_host).unwrap(), dev.upload(&b_host).unwrap(), dev.upload(&b3_host).unwrap());
    let (sa, sb, sb3) = (dev.upload(&sa_host).unwrap(), dev.upload(&sb_host).unwrap(), dev.upload(&sb3_host).unwrap());
    let av = TensorView::contiguous(a.as_view(), [m, k]).unwrap();
    let sav = TensorView::contiguous(sa.as_view(), [m, k / 128]).unwrap();
    let a_op = Fp8Operand { data: &av, scale: &sav, granularity: Group128 };
    for (kernel, _) in grouped_variants(&dev) {
        let cfg = MatmulFp8Config { kernel, cluster: Some(1).filter(|_| kernel == GemmKernel::Wgmma), ..Default::default() };
        let run = |b: &cudarc::driver::CudaSlice<F8E4M3>, sb: &cudarc::driver::CudaSlice<f32>, offsets: Option<&[i32]>| -> Vec<bf16> {
            let groups = offsets.map_or(1, |o| o.len() - 1);
            let bv = TensorView::contiguous(b.as_view(), [groups * n, k]).unwrap();
            let sbv = TensorView::contiguous(sb.as_view(), [groups * n / 128, k / 128]).unwrap();
            let b_op = Fp8Operand { data: &bv, scale: &sbv, granularity: Block128 };
            let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
            let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
            match offsets {
                None => matmul_fp8(&dev, a_op, b_op, None, None, &mut ov, cfg).unwrap(),
                Some(o) => {
                    let od = dev.upload(o).unwrap();
                    let ofs = TensorView::contiguous(od.as_view(), [o.len()]).unwrap();
                    matmul_fp8_grouped(&dev, a_op, b_op, &ofs, None, None, &mut ov, cfg).unwrap();
                }
            }
            dev.download(&out).unwrap()
        };
        let plain = run(&b, &sb, None);
        assert!(plain.iter().all(|v| v.is_finite()), "{kernel:?}: the plain GEMM left poison");
        let bits = |v: &[bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&run(&b, &sb, Some(&[0, m as i32]))), bits(&plain), "{kernel:?}: one group");
        assert_eq!(bits(&run(&b3, &sb3, Some(&[0, 1, 130, m as i32]))), bits(&plain), "{kernel:?}: three groups, one weight");
    }
}

/// Codes [m, k] and [n, k], per-tensor scales, out [m, n] bf16 poisoned; `f` gets the views.
#[allow(clippy::type_complexity)]
fn with_operands(
    m: usize,
    n: usize,
    k: usize,
    a_offset: usize,
    f: impl FnOnce(&warpcore::Device, &TensorView<F8E4M3, 2>, &TensorView<F8E4M3, 2>, &TensorView<f32, 2>, &mut TensorViewMut<bf16, 2>) -> warpcore::Result<()>,
    matches: impl Fn(&Error) -> bool,
) {
    let Some(dev) = device() else { return };
    let a = dev.upload(&vec![F8E4M3(0x38); a_offset + m * k]).unwrap();
    let b = dev.upload(&vec![F8E4M3(0x38); n * k]).unwrap();
    let s = dev.upload(&[1.0f32]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let av = TensorView::contiguous(a.slice(a_offset..), [m, k]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [n, k]).unwrap();
    let sv = TensorView::contiguous(s.as_view(), [1, 1]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
    let err = f(&dev, &av, &bv, &sv, &mut ov).expect_err("bad input must be rejected");
    assert!(matches(&err), "unexpected error: {err}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()), "a failed GEMM wrote its output");
}

fn per_tensor<'v, 'a>(data: &'v TensorView<'a, F8E4M3, 2>, scale: &'v TensorView<'a, f32, 2>) -> Fp8Operand<'v, 'a> {
    Fp8Operand { data, scale, granularity: PerTensor }
}

#[test]
fn n_and_k_must_be_multiples_of_128() {
    let run = |d: &warpcore::Device, a: &TensorView<F8E4M3, 2>, b: &TensorView<F8E4M3, 2>, s: &TensorView<f32, 2>, o: &mut TensorViewMut<bf16, 2>| {
        matmul_fp8(d, per_tensor(a, s), per_tensor(b, s), None, None, o, MatmulFp8Config::default())
    };
    with_operands(4, 200, 128, 0, run, |e| matches!(e, Error::Unsupported { what: "n (a multiple of 128)", .. }));
    with_operands(4, 128, 96, 0, run, |e| matches!(e, Error::Unsupported { what: "k (a multiple of 128)", .. }));
    with_operands(4, 128, 0, 0, run, |e| matches!(e, Error::Empty { .. }));
}

/// One row takes any row stride: the wrapper gives the kernels and the TMA maps the row's
/// length (before 2026-12-02 a one-row A with an odd stride reached the TMA encoder as given).
/// A `[1, k]` A and `[1, n]` out and residual with odd, zero or padded strides give the dense
/// views' bits, on every unpaired kernel the GPU has (pairs need 128-row tiles).
#[test]
fn one_row_takes_any_row_stride() {
    let Some(dev) = device() else { return };
    let (n, k) = (256usize, 256usize);
    let a_codes: Vec<F8E4M3> = (0..k).map(|i| F8E4M3::from_f64_sat(((i * 7 % 13) as f64 - 6.0) / 4.0)).collect();
    let b_codes: Vec<F8E4M3> = (0..n * k).map(|i| F8E4M3::from_f64_sat(((i * 5 % 11) as f64 - 5.0) / 8.0)).collect();
    let res: Vec<bf16> = (0..n).map(|i| bf16::from_f32(i as f32 / 64.0)).collect();
    let (a, b, r) = (dev.upload(&a_codes).unwrap(), dev.upload(&b_codes).unwrap(), dev.upload(&res).unwrap());
    let s = dev.upload(&[0.5f32]).unwrap();
    let sv = TensorView::contiguous(s.as_view(), [1, 1]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [n, k]).unwrap();
    for (kernel, cluster) in kernel_variants(&dev).into_iter().filter(|&(_, c)| c != Some(2)) {
        let cfg = MatmulFp8Config { kernel, cluster, ..MatmulFp8Config::default() };
        let run = |a_stride: usize, o_stride: usize| {
            let mut out = dev.upload(&vec![bf16::NAN; n]).unwrap();
            let av = TensorView::new(a.as_view(), [1, k], [a_stride, 1]).unwrap();
            let rv = TensorView::new(r.as_view(), [1, n], [o_stride, 1]).unwrap();
            let mut ov = TensorViewMut::new(out.as_view_mut(), [1, n], [o_stride, 1]).unwrap();
            matmul_fp8(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), None, Some(&rv), &mut ov, cfg).unwrap();
            dev.download(&out).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u16>>()
        };
        let dense = run(k, n);
        assert!(dense.iter().all(|&v| !bf16::from_bits(v).is_nan()), "{kernel:?}");
        for (sa, so) in [(3, 5), (0, 0), (k + 16, n + 8)] {
            assert_eq!(run(sa, so), dense, "{kernel:?}: a stride {sa}, out stride {so}");
        }
    }
}

#[test]
fn rows_must_be_16_byte_aligned() {
    with_operands(
        4,
        128,
        128,
        1,
        |d, a, b, s, o| matmul_fp8(d, per_tensor(a, s), per_tensor(b, s), None, None, o, MatmulFp8Config::default()),
        |e| matches!(e, Error::Misaligned { arg: "a", align: 16, .. }),
    );
}

#[test]
fn unsupported_scale_pairs_and_shapes_are_rejected() {
    let Some(dev) = device() else { return };
    let (m, n, k) = (4usize, 256usize, 256usize);
    let a = dev.upload(&vec![F8E4M3(0x38); m * k]).unwrap();
    let b = dev.upload(&vec![F8E4M3(0x38); n * k]).unwrap();
    let s = dev.upload(&vec![1.0f32; 4096]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; m * n]).unwrap();
    let av = TensorView::contiguous(a.as_view(), [m, k]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [n, k]).unwrap();
    let groups = TensorView::contiguous(s.slice(..m * 2), [m, 2]).unwrap();
    let per_col = TensorView::contiguous(s.slice(..n), [n, 1]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [m, n]).unwrap();
    // B per output channel cannot be applied per 128-k block.
    let e = matmul_fp8(
        &dev,
        Fp8Operand { data: &av, scale: &groups, granularity: Group128 },
        Fp8Operand { data: &bv, scale: &per_col, granularity: PerRow },
        None,
        None,
        &mut ov,
        MatmulFp8Config::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "matmul_fp8", .. }), "{e}");
    // Block scales of the wrong shape ([n/128, k/128] = [2, 2] expected).
    let wrong = TensorView::contiguous(s.slice(..6), [2, 3]).unwrap();
    let e = matmul_fp8(
        &dev,
        Fp8Operand { data: &av, scale: &groups, granularity: Group128 },
        Fp8Operand { data: &bv, scale: &wrong, granularity: Block128 },
        None,
        None,
        &mut ov,
        MatmulFp8Config::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "b_scale", .. }), "{e}");
    // A bias of the wrong length.
    let one = TensorView::contiguous(s.slice(..1), [1, 1]).unwrap();
    let bias = dev.upload(&vec![bf16::ONE; n - 1]).unwrap();
    let bias_v = TensorView::contiguous(bias.as_view(), [n - 1]).unwrap();
    let e = matmul_fp8(&dev, per_tensor(&av, &one), per_tensor(&bv, &one), Some(&bias_v), None, &mut ov, MatmulFp8Config::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "bias", .. }), "{e}");
    // The wgmma kernel only on compute capability 9.0.
    if dev.info().compute_capability != (9, 0) {
        let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, ..Default::default() };
        let e = matmul_fp8(&dev, per_tensor(&av, &one), per_tensor(&bv, &one), None, None, &mut ov, cfg).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "wgmma kernel (compute capability 9.0 only)", .. }), "{e}");
    }
    // Clusters of two at most.
    if dev.info().compute_capability == (9, 0) {
        let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, cluster: Some(3), ..Default::default() };
        let e = matmul_fp8(&dev, per_tensor(&av, &one), per_tensor(&bv, &one), None, None, &mut ov, cfg).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "cluster (1, or 2 where the plan has 128-row tiles)", .. }), "{e}");
        // A caller's tile: one the kernel is not built for, one whose pairs contradict `cluster`.
        let tile = TileConfig { block_m: 128, block_n: 256, group_m: 8, num_ctas: 2, cluster_m: 1, tma_store: false, k_splits: 1 };
        let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, tile: Some(tile), ..Default::default() };
        let e = matmul_fp8(&dev, per_tensor(&av, &one), per_tensor(&bv, &one), None, None, &mut ov, cfg).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "tile (block_m × block_n not built for this accumulation: see SM90_TILES)", .. }), "{e}");
        let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, cluster: Some(2), tile: Some(TileConfig { block_n: 128, ..tile }), ..Default::default() };
        let e = matmul_fp8(&dev, per_tensor(&av, &one), per_tensor(&bv, &one), None, None, &mut ov, cfg).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "cluster (must agree with tile.cluster_m)", .. }), "{e}");
    }
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn f16_output_is_unsupported() {
    let Some(dev) = device() else { return };
    let a = dev.upload(&vec![F8E4M3(0x38); 128 * 128]).unwrap();
    let s = dev.upload(&[1.0f32]).unwrap();
    let mut out = dev.upload(&vec![half::f16::NAN; 128 * 128]).unwrap();
    let av = TensorView::contiguous(a.as_view(), [128, 128]).unwrap();
    let sv = TensorView::contiguous(s.as_view(), [1, 1]).unwrap();
    let e = matmul_fp8(
        &dev,
        per_tensor(&av, &sv),
        per_tensor(&av, &sv),
        None,
        None,
        &mut TensorViewMut::contiguous(out.as_view_mut(), [128, 128]).unwrap(),
        MatmulFp8Config::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
}

#[test]
fn zero_rows_is_a_no_op() {
    let Some(dev) = device() else { return };
    let b = dev.upload(&vec![F8E4M3(0x38); 128 * 128]).unwrap();
    let s = dev.upload(&[1.0f32]).unwrap();
    let mut out = dev.upload(&[bf16::NAN; 4]).unwrap();
    let av = TensorView::contiguous(b.slice(..0), [0, 128]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [128, 128]).unwrap();
    let sv = TensorView::contiguous(s.as_view(), [1, 1]).unwrap();
    matmul_fp8(&dev, per_tensor(&av, &sv), per_tensor(&bv, &sv), None, None, &mut TensorViewMut::contiguous(out.slice_mut(..0), [0, 128]).unwrap(), MatmulFp8Config::default())
        .unwrap();
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

/// Every configuration `warpcore bench --tune` may time (and a caller may force) computes the
/// same GEMM: each of `sm90_candidates` (tiles, pairs, tile orders, the TMA-store epilogue)
/// and, for each shape, a grid of 3 CTAs walking many tiles each — per accumulation mode, with
/// tails in m (the TMA store clips the rows past m) and in n (256-column fast tiles at n = 640,
/// 192-column promoted ones at n = 256: the columns past n are not stored).
#[test]
fn every_tuner_candidate_is_correct() {
    let Some(dev) = hopper() else { return };
    let sms = dev.info().sm_count as usize;
    for (m, n, k, a, b, fast, accumulation) in [
        (300usize, 640usize, 512usize, PerRow, PerRow, true, Accumulation::Fast),
        (129, 256, 1024, PerTensor, PerTensor, false, Accumulation::Promoted),
        (200, 256, 768, Group128, Block128, false, Accumulation::BlockScaled),
    ] {
        let problem = MatmulFp8Problem { m, n, k, accumulation, groups: 0, input: GemmInput::E4m3, out_bf16: true, residual: false };
        let mut tiles = sm90_candidates(&problem, sms);
        let few: Vec<TileConfig> = tiles.iter().filter(|t| t.group_m == 8 / t.cluster_m).map(|&t| TileConfig { num_ctas: 3 * t.cluster_m, ..t }).collect();
        tiles.extend(few);
        for (i, tile) in tiles.into_iter().enumerate() {
            // The TMA-store epilogue takes no residual.
            let residual = i % 3 == 0 && !tile.tma_store;
            let case = MatmulCase { kernel: GemmKernel::Wgmma, tile: Some(tile), fast_accumulation: fast, bias: i % 2 == 0, residual, ..MatmulCase::new(m, n, k, a, b, 500 + i as u64) };
            assert_passed(&check_matmul_fp8::<bf16>(&dev, &case).unwrap());
        }
    }
}
