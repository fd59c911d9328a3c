//! GPU tests of GQA attention and MLA decode against `reference::attention` (skip without a
//! GPU).

mod common;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::attention::{attention_outputs, check_attention, check_merge_states, AttentionCase};
use warpcore::check::{compare, tolerance, Rng};
use warpcore::ops::attention::{attention, AttentionConfig, AttentionKernel, AttentionPlan, KvInput, MAX_SPLITS};
use warpcore::reference::attention::{self as reference, AttentionMask, AttentionShape};
use warpcore::kv_cache::{BlockTableView, KvCacheView};
use warpcore::{Error, TensorView, TensorViewMut};

/// Ragged key counts around tile (16, 64) and page boundaries.
const LENS: &[usize] = &[0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1000];
/// Query counts: decode, speculative decode, and prefill chunks around the 16/64-row tiles
/// (bounded so the f64 reference stays fast).
const Q_LENS: &[usize] = &[0, 1, 15, 16, 17, 63, 64, 65, 130];

fn case() -> impl Strategy<Value = AttentionCase> {
    let seqs = proptest::collection::vec((prop_oneof![Just(1usize), 1usize..9, proptest::sample::select(Q_LENS)], proptest::sample::select(LENS)), 1..5);
    (
        seqs,
        proptest::sample::select(&[(64usize, 64usize), (96, 96), (128, 128), (256, 256), (192, 128)][..]),
        proptest::sample::select(&[1usize, 2, 4, 8][..]),
        1usize..3,
        any::<bool>(),
        prop_oneof![Just(None), (0u32..300).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => Just(Some(20.0f32))],
        prop_oneof![Just(None), proptest::sample::select(&[1usize, 8, 16, 32, 64, 128, 256][..]).prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => (2usize..6).prop_map(Some)],
        // Auto: wgmma for prefill at head dims 64 / 128 on an H100/H200, mma.sync otherwise.
        prop_oneof![2 => Just(AttentionKernel::Auto), 1 => Just(AttentionKernel::MmaSync)],
        // The wgmma kernel's key tiles by TMA where it can (the default), or all by cp.async;
        // |q| below 1, 4 or 8 (logits of std 0.33, 1.3, 2.7): near-uniform attention hides an
        // error confined to a few keys, peaky attention shows it.
        (any::<u64>(), prop_oneof![3 => Just(true), 1 => Just(false)], prop_oneof![2 => Just(1.0f32), 1 => Just(4.0f32), 1 => Just(8.0f32)]),
    )
        .prop_map(|(seqs, (head_dim, head_dim_v), group, num_kv_heads, causal, window_left, softcap, page_size, num_splits, kernel, (seed, tma, q_magnitude))| AttentionCase {
            q_lens: seqs.iter().map(|s| s.0).collect(),
            kv_lens: seqs.iter().map(|s| s.1).collect(),
            num_q_heads: group * num_kv_heads,
            num_kv_heads,
            head_dim,
            head_dim_v,
            causal,
            window_left,
            softcap,
            // The paged cache has one head_dim for K and V (192/128 is a contiguous-K/V prefill).
            page_size: if head_dim == head_dim_v { page_size } else { None },
            num_splits,
            fp8_scales: None,
            kernel,
            // With a cap of 20 the logits must reach it (|q| < 1 left softcap a no-op).
            q_magnitude: if softcap.is_some() { 60.0 } else { q_magnitude },
            seed,
            tma,
        })
}

/// Batches over an FP8 e4m3 paged cache: half of them decode (max_q_len · group ≤ 16, the
/// decode configuration), half as case() made them (prefill / append chunks, the prefill
/// configuration). Auto plans them (AttentionPlan::with_kv): the prefill ones on the wgmma
/// kernel on Hopper at head dims 64 and 128, the rest on the portable kernel.
fn fp8_case() -> impl Strategy<Value = AttentionCase> {
    let pages = proptest::sample::select(&[1usize, 8, 16, 64][..]);
    (case().prop_filter("the paged cache has one head_dim", |c| c.head_dim == c.head_dim_v), pages, (0.005f32..2.0, 0.005f32..2.0), any::<bool>()).prop_map(|(c, page, scales, decode)| {
        let group = c.num_q_heads / c.num_kv_heads;
        let q_max = if decode { (16 / group).max(1) } else { usize::MAX };
        AttentionCase {
            q_lens: c.q_lens.iter().map(|&q| q.min(q_max)).collect(),
            page_size: Some(page),
            fp8_scales: Some(scales),
            ..c
        }
    })
}

/// MLA decode (head dims 576/512, one latent head, V = K's first 512 elements): decode and
/// speculative decode at 16-128 heads (both kernel configurations), paged or contiguous.
fn mla_case() -> impl Strategy<Value = AttentionCase> {
    (case(), proptest::collection::vec((1usize..5, proptest::sample::select(LENS)), 1..4), proptest::sample::select(&[1usize, 3, 16, 32, 128][..]))
        .prop_map(|(c, seqs, heads)| AttentionCase {
            q_lens: seqs.iter().map(|s| s.0).collect(),
            kv_lens: seqs.iter().map(|s| s.1).collect(),
            num_q_heads: heads,
            num_kv_heads: 1,
            head_dim: 576,
            head_dim_v: 512,
            // case() leaves 192/128 contiguous; here any page size or contiguous.
            page_size: c.page_size.or(if c.seed % 2 == 0 { Some(64) } else { None }),
            // Auto: the wgmma kernel on an H100/H200 above 16 rows per sequence; or mma.sync.
            ..c
        })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn mla_decode_matches_reference(c in mla_case(), bf in any::<bool>()) {
        let Some(dev) = device() else { return Ok(()) };
        let r = if bf { check_attention::<bf16>(&dev, &c) } else { check_attention::<f16>(&dev, &c) };
        assert_passed(&r.unwrap());
    }
    /// An FP8 e4m3 latent cache (one scale for K and V, which are the same rows), paged, on the
    /// portable kernel.
    #[test]
    fn mla_decode_fp8_latent_cache_matches_reference(c in mla_case(), page in proptest::sample::select(&[1usize, 16, 64][..]), scale in 0.005f32..1.0, bf in any::<bool>()) {
        let Some(dev) = device() else { return Ok(()) };
        let c = AttentionCase { page_size: Some(page), fp8_scales: Some((scale, scale)), ..c };
        let r = if bf { check_attention::<bf16>(&dev, &c) } else { check_attention::<f16>(&dev, &c) };
        assert_passed(&r.unwrap());
    }
    #[test]
    fn bf16_matches_reference(c in case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_attention::<bf16>(&dev, &c).unwrap());
    }
    #[test]
    fn f16_matches_reference(c in case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_attention::<f16>(&dev, &c).unwrap());
    }
    #[test]
    fn fp8_cache_matches_reference(c in fp8_case(), bf in any::<bool>()) {
        let Some(dev) = device() else { return Ok(()) };
        let r = if bf { check_attention::<bf16>(&dev, &c) } else { check_attention::<f16>(&dev, &c) };
        assert_passed(&r.unwrap());
    }
}

/// The wgmma prefill kernel's key tiles by TMA and by cp.async land the same bytes in the same
/// layout, so the outputs agree bit for bit: contiguous K/V (several sequences, kv heads at
/// their offsets), pages of 8 (16 boxes a tile), 16, 64 and 256 (tiles half a page in), a
/// window (paged tiles then start mid-page: cp.async), split-KV. Hopper only.
#[test]
fn tma_and_cp_async_tiles_give_the_same_bits() {
    let Some(dev) = device() else { return };
    if dev.info().compute_capability != (9, 0) {
        eprintln!("SKIP (not compute capability 9.0: the wgmma kernel is Hopper-only)");
        return;
    }
    let base = AttentionCase { num_q_heads: 8, num_kv_heads: 2, ..AttentionCase::new(vec![300, 17, 130], vec![1000, 400, 130], 31) };
    let cases = [
        AttentionCase { page_size: None, ..base.clone() },
        AttentionCase { page_size: Some(8), num_q_heads: 12, num_kv_heads: 3, head_dim: 64, head_dim_v: 64, ..base.clone() },
        AttentionCase { page_size: Some(16), num_splits: Some(3), ..base.clone() },
        AttentionCase { page_size: Some(64), window_left: Some(200), softcap: Some(30.0), q_magnitude: 60.0, ..base.clone() },
        AttentionCase { page_size: Some(256), causal: false, ..base.clone() },
        AttentionCase { page_size: None, window_left: Some(333), num_q_heads: 4, num_kv_heads: 4, ..base.clone() },
    ];
    for c in &cases {
        let plan = AttentionPlan::new(&dev, &c.q_lens, &c.kv_lens, c.num_q_heads, c.num_kv_heads, c.head_dim, c.head_dim_v).unwrap();
        assert_eq!(plan.kernel, AttentionKernel::Wgmma, "{c:?}");
        let (tma_out, tma_lse) = attention_outputs::<bf16>(&dev, c).unwrap();
        let (cp_out, cp_lse) = attention_outputs::<bf16>(&dev, &AttentionCase { tma: false, ..c.clone() }).unwrap();
        let bits = |v: &[bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&tma_out) == bits(&cp_out), "out differs: {c:?}");
        assert!(tma_lse.iter().map(|x| x.to_bits()).eq(cp_lse.iter().map(|x| x.to_bits())), "lse differs: {c:?}");
        // And both are right.
        assert_passed(&check_attention::<bf16>(&dev, c).unwrap());
    }
}

#[test]
fn long_decode_uses_split_kv() {
    let Some(dev) = device() else { return };
    let plan = AttentionPlan::new(&dev, &[1], &[131072], 32, 8, 128, 128).unwrap();
    // One CTA per kv head (8) fills a device of a few SMs unsplit (the host emulation's default
    // 4 SMs hold 8); beyond 8 SMs it cannot.
    if dev.info().sm_count > 8 {
        assert!(plan.num_splits > 1, "batch 1 × 131072 keys must split: {plan:?}");
    }
    // On an H200 / H100 SXM (132 SMs) the head_dim-128 decode configuration holds 2 CTAs per SM
    // (cuda/attention_gqa.cu, Cfg: 3 stages, 107.5 KB), so the occupancy query and the wave
    // rule give these splits for the three decode bar shapes.
    if dev.info().compute_capability == (9, 0) && dev.info().sm_count == 132 {
        for (batch, kv, splits) in [(1usize, 131072usize, 32usize), (16, 32768, 2), (64, 4096, 1)] {
            let plan = AttentionPlan::new(&dev, &vec![1; batch], &vec![kv; batch], 32, 8, 128, 128).unwrap();
            assert_eq!(plan.num_splits, splits, "b{batch} × kv {kv}: {plan:?}");
            // The cap a tuner sweeps to: 4 key tiles of 64 per split, at most 64 splits.
            assert_eq!(plan.max_splits(kv), (kv / 256).min(64), "b{batch} × kv {kv}");
        }
    }
    let c = AttentionCase::new(vec![1, 1], vec![30000, 5], 3);
    assert_passed(&check_attention::<bf16>(&dev, &c).unwrap());
}

/// The plan picks wgmma exactly for Hopper prefill at head dims 64 / 128 and Hopper MLA decode
/// above 16 rows per sequence, refuses to force it elsewhere, and both kernels agree with the
/// reference on a long causal prefill and on MLA decode.
#[test]
fn kernel_choice() {
    let Some(dev) = device() else { return };
    let hopper = dev.info().compute_capability == (9, 0);
    let prefill = AttentionPlan::new(&dev, &[300], &[300], 32, 8, 128, 128).unwrap();
    assert_eq!(prefill.kernel, if hopper { AttentionKernel::Wgmma } else { AttentionKernel::MmaSync });
    let decode = AttentionPlan::new(&dev, &[1], &[300], 32, 8, 128, 128).unwrap();
    assert_eq!(decode.kernel, AttentionKernel::MmaSync);
    for (q, hd) in [(1usize, 128usize), (300, 96), (300, 256)] {
        let e = AttentionPlan::with_kernel(&dev, &[q], &[300], 32, 8, hd, hd, AttentionKernel::Wgmma).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }
    for kernel in [AttentionKernel::Auto, AttentionKernel::MmaSync] {
        let c = AttentionCase { kernel, page_size: None, ..AttentionCase::new(vec![1000, 333], vec![1000, 700], 21) };
        assert_passed(&check_attention::<bf16>(&dev, &c).unwrap());
    }
    // MLA decode: wgmma above 16 rows per sequence on Hopper (128 heads), mma.sync at 16 heads;
    // forcing wgmma where its 64-row tiles would run a quarter full is refused.
    let mla128 = AttentionPlan::new(&dev, &[1, 1], &[500, 70], 128, 1, 576, 512).unwrap();
    assert_eq!(mla128.kernel, if hopper { AttentionKernel::Wgmma } else { AttentionKernel::MmaSync });
    let mla16 = AttentionPlan::new(&dev, &[1], &[500], 16, 1, 576, 512).unwrap();
    assert_eq!(mla16.kernel, AttentionKernel::MmaSync);
    let e = AttentionPlan::with_kernel(&dev, &[1], &[500], 16, 1, 576, 512, AttentionKernel::Wgmma).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    for kernel in [AttentionKernel::Auto, AttentionKernel::MmaSync] {
        let c = AttentionCase { kernel, num_q_heads: 128, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, page_size: Some(64), ..AttentionCase::new(vec![1, 2], vec![300, 77], 22) };
        assert_passed(&check_attention::<bf16>(&dev, &c).unwrap());
    }
}

/// Plans of sizes past usize are refused or planned, never an overflow panic (debug builds
/// checked the sum of q_lens and the row and CTA products).
#[test]
fn absurd_plans_do_not_panic() {
    let Some(dev) = device() else { return };
    let e = AttentionPlan::new(&dev, &[usize::MAX, 1], &[1, 1], 8, 8, 128, 128).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let _ = AttentionPlan::new(&dev, &[1 << 62], &[1], 1 << 20, 1, 128, 128);
    let _ = AttentionPlan::new(&dev, &[usize::MAX / 2], &[1 << 40], 64, 1, 576, 512);
}

#[test]
fn merge_states_matches_reference() {
    let Some(dev) = device() else { return };
    assert_passed(&check_merge_states::<bf16>(&dev, 777, 128, 1).unwrap());
    assert_passed(&check_merge_states::<f16>(&dev, 5, 64, 2).unwrap());
    assert_passed(&check_merge_states::<f32>(&dev, 64, 256, 3).unwrap());
}

/// A block-table entry outside [0, num_pages) masks its page's keys and is never read.
#[test]
fn out_of_range_pages_are_masked_not_read() {
    let Some(dev) = device() else { return };
    let (nkv, hd, page, kv_len) = (1usize, 64usize, 16usize, 40usize);
    let mut rng = Rng::new(5);
    let q: Vec<bf16> = rng.vec(4 * hd, -1.0, 1.0);
    let k: Vec<bf16> = rng.vec(kv_len * hd, -1.0, 1.0);
    let v: Vec<bf16> = rng.vec(kv_len * hd, -1.0, 1.0);
    // Pages 0 and 1 hold keys 0..16 and 32..40; the middle page's id is out of range.
    let mut kc = vec![bf16::NAN; 2 * page * hd];
    let mut vc = vec![bf16::NAN; 2 * page * hd];
    kc[..16 * hd].copy_from_slice(&k[..16 * hd]);
    vc[..16 * hd].copy_from_slice(&v[..16 * hd]);
    kc[16 * hd..24 * hd].copy_from_slice(&k[32 * hd..40 * hd]);
    vc[16 * hd..24 * hd].copy_from_slice(&v[32 * hd..40 * hd]);
    for bad in [2i32, 1_000_000, -7] {
        let (dq, dk, dv) = (dev.upload(&q).unwrap(), dev.upload(&kc).unwrap(), dev.upload(&vc).unwrap());
        let bt = dev.upload(&[0i32, bad, 1]).unwrap();
        let sl = dev.upload(&[kv_len as i32]).unwrap();
        let cu = dev.upload(&[0i32, 1]).unwrap();
        let mut out = dev.upload(&vec![bf16::NAN; 4 * hd]).unwrap();
        let plan = AttentionPlan::new(&dev, &[1], &[kv_len], 4, nkv, hd, hd).unwrap();
        let cfg = AttentionConfig { causal: false, ..AttentionConfig::causal(hd) };
        let cache = KvCacheView::new(
            TensorView::contiguous(dk.as_view(), [2, page, nkv, hd]).unwrap(),
            TensorView::contiguous(dv.as_view(), [2, page, nkv, hd]).unwrap(),
        )
        .unwrap();
        let table = BlockTableView::new(TensorView::contiguous(bt.as_view(), [1, 3]).unwrap(), TensorView::contiguous(sl.as_view(), [1]).unwrap()).unwrap();
        attention(
            &dev,
            &TensorView::contiguous(dq.as_view(), [1, 4, hd]).unwrap(),
            &TensorView::contiguous(cu.as_view(), [2]).unwrap(),
            KvInput::Paged { cache: &cache, table: &table },
            &plan,
            &cfg,
            &mut TensorViewMut::contiguous(out.as_view_mut(), [1, 4, hd]).unwrap(),
            None,
            None,
        )
        .unwrap();
        let got = dev.download(&out).unwrap();
        let keep: Vec<usize> = (0..16).chain(32..40).collect();
        let pick = |x: &[bf16]| keep.iter().flat_map(|&j| x[j * hd..(j + 1) * hd].to_vec()).collect::<Vec<_>>();
        let mask = AttentionMask { scale: cfg.scale as f64, causal: false, window_left: None, softcap: None };
        let shape = AttentionShape { q_len: 1, kv_len: keep.len(), num_q_heads: 4, num_kv_heads: 1, head_dim: hd, head_dim_v: hd };
        let (want, _) = reference::attention(&q, &pick(&k), &pick(&v), shape, &mask, 1.0, 1.0);
        let c = compare("out", &got, &want, tolerance::<bf16>());
        assert!(c.passed(), "bad page id {bad}: {c}");
    }
}

#[test]
fn bad_inputs_are_typed_errors_and_write_nothing() {
    let Some(dev) = device() else { return };
    let hd = 128;
    let q = dev.upload(&vec![bf16::ONE; 8 * 4 * hd]).unwrap();
    let k = dev.upload(&vec![bf16::ONE; 8 * hd]).unwrap();
    let cu = dev.upload(&[0i32, 8]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 8 * 4 * hd]).unwrap();
    let plan = AttentionPlan::new(&dev, &[8], &[8], 4, 1, hd, hd).unwrap();
    let cfg = AttentionConfig::causal(hd);
    let cuv = TensorView::contiguous(cu.as_view(), [2]).unwrap();
    let kt = TensorView::contiguous(k.as_view(), [8, 1, hd]).unwrap();
    let run = |qv: &TensorView<bf16, 3>, plan: &AttentionPlan, out: &mut TensorViewMut<bf16, 3>, cfg: &AttentionConfig| {
        attention(&dev, qv, &cuv, KvInput::Contiguous { k: &kt, v: &kt, cu_seqlens_kv: &cuv }, plan, cfg, out, None, None)
    };
    let qv = TensorView::contiguous(q.as_view(), [8, 4, hd]).unwrap();
    // head_dim 80 is not built.
    let e = AttentionPlan::new(&dev, &[8], &[8], 4, 1, 80, 80).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // 6 q heads over 4 kv heads.
    let e = AttentionPlan::new(&dev, &[8], &[8], 6, 4, hd, hd).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // A token stride that breaks 16-byte alignment (q rows of 4·128 + 1 elements).
    let q2 = dev.upload(&vec![bf16::ONE; 8 * (4 * hd + 1)]).unwrap();
    let qs = TensorView::new(q2.as_view(), [8, 4, hd], [4 * hd + 1, hd, 1]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [8, 4, hd]).unwrap();
    let e = run(&qs, &plan, &mut ov, &cfg).unwrap_err();
    assert!(matches!(e, Error::Misaligned { arg: "q", .. }), "{e}");
    // Split-KV without a workspace.
    let split = AttentionPlan { num_splits: 4, ..plan };
    let e = run(&qv, &split, &mut ov, &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "workspace", .. }), "{e}");
    // Non-finite softcap.
    let e = run(&qv, &plan, &mut ov, &AttentionConfig { softcap: Some(f32::NAN), ..cfg }).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "softcap", .. }), "{e}");
    // A hand-built plan's split count outside 1..=MAX_SPLITS (a huge one once sized the
    // workspace check by a wrapped product and wrote past the workspace).
    let mut ws = dev.upload(&vec![f32::NAN; 1 << 16]).unwrap();
    for n in [0, MAX_SPLITS + 1, usize::MAX / 3] {
        let bad = AttentionPlan { num_splits: n, ..plan };
        let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [1 << 16]).unwrap();
        let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &kt, cu_seqlens_kv: &cuv }, &bad, &cfg, &mut ov, None, Some(&mut wv)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "plan.num_splits (1 to MAX_SPLITS, 64)", .. }), "{n}: {e}");
    }
    assert_eq!(AttentionPlan { num_splits: usize::MAX / 3, ..plan }.workspace_len(), usize::MAX);
    // out or the workspace one element past a 16-byte boundary (the Hopper kernels store
    // element pairs: a misaligned pointer would fault the context).
    let mut out2 = dev.upload(&vec![bf16::NAN; 8 * 4 * hd + 1]).unwrap();
    {
        let mut o1 = TensorViewMut::new(out2.slice_mut(1..), [8, 4, hd], [4 * hd, hd, 1]).unwrap();
        let e = run(&qv, &plan, &mut o1, &cfg).unwrap_err();
        assert!(matches!(e, Error::Misaligned { arg: "out", .. }), "{e}");
        let mut w1 = TensorViewMut::new(ws.slice_mut(1..), [(1 << 16) - 1], [1]).unwrap();
        let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &kt, cu_seqlens_kv: &cuv }, &split, &cfg, &mut ov, None, Some(&mut w1)).unwrap_err();
        assert!(matches!(e, Error::Misaligned { arg: "workspace", .. }), "{e}");
    }
    assert!(dev.download(&out2).unwrap().iter().all(|v| v.is_nan()));
    drop(ov);
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
    // f32 is not an attention dtype.
    let qf = dev.upload(&vec![1.0f32; 8 * 4 * hd]).unwrap();
    let kf = dev.upload(&vec![1.0f32; 8 * hd]).unwrap();
    let mut of = dev.upload(&vec![f32::NAN; 8 * 4 * hd]).unwrap();
    let kft = TensorView::contiguous(kf.as_view(), [8, 1, hd]).unwrap();
    let e = attention(
        &dev,
        &TensorView::contiguous(qf.as_view(), [8, 4, hd]).unwrap(),
        &cuv,
        KvInput::Contiguous { k: &kft, v: &kft, cu_seqlens_kv: &cuv },
        &plan,
        &cfg,
        &mut TensorViewMut::contiguous(of.as_view_mut(), [8, 4, hd]).unwrap(),
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    // A block table whose rows are wider than its columns (a column slice): the kernels clamp a
    // length (device data) to the row stride, so it could reach page ids past the view.
    let bt = dev.upload(&[0i32; 8]).unwrap();
    let sl = dev.upload(&[8i32, 8]).unwrap();
    let slv = || TensorView::contiguous(sl.as_view(), [2]).unwrap();
    let e = BlockTableView::new(TensorView::new(bt.as_view(), [2, 2], [4, 1]).unwrap(), slv()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "strides (must be contiguous)", .. }), "{e}");
    assert!(BlockTableView::new(TensorView::new(bt.as_view(), [2, 4], [4, 1]).unwrap(), slv()).is_ok());
}

/// Prefill over an FP8 cache with queries far from 1 — up to 1e5 (past f16's range: the
/// Hopper kernel computes in f16 and scales bf16 queries into it per CTA; a soft-cap keeps the
/// softmax smooth) and below 1e-6 — on the kernel Auto picks and on the portable one.
#[test]
fn fp8_cache_prefill_at_extreme_query_magnitudes() {
    let Some(dev) = device() else { return };
    let base = AttentionCase { num_q_heads: 8, num_kv_heads: 2, fp8_scales: Some((0.02, 0.05)), ..AttentionCase::new(vec![130, 40], vec![600, 40], 31) };
    for c in [
        AttentionCase { softcap: Some(30.0), q_magnitude: 1e5, ..base.clone() },
        AttentionCase { head_dim: 64, head_dim_v: 64, page_size: Some(8), q_magnitude: 1e-6, seed: 32, ..base.clone() },
    ] {
        for kernel in [AttentionKernel::Auto, AttentionKernel::MmaSync] {
            assert_passed(&check_attention::<bf16>(&dev, &AttentionCase { kernel, ..c.clone() }).unwrap());
        }
    }
}

/// An FP8 cache's batches: prefill at head dims 64 / 128 plans on the wgmma kernel on Hopper
/// (it converts the cache's tiles to f16), decode, MLA and other head dims on the portable
/// kernel, and everything on the portable kernel elsewhere; FP8 K/V outside the paged cache (no
/// scales) are refused and nothing is written.
#[test]
fn fp8_cache_plans() {
    let Some(dev) = device() else { return };
    use warpcore::F8E4M3;
    let hopper = dev.info().compute_capability == (9, 0);
    let (nq, nkv) = (8, 2);
    for (hd, q, kv, wgmma) in [(128, 1usize, 100usize, false), (128, 300, 300, hopper), (64, 64, 4096, hopper), (96, 300, 300, false), (576, 4, 300, false)] {
        let (hd, hdv, nkv) = if hd == 576 { (576, 512, 1) } else { (hd, hd, nkv) };
        let plan = AttentionPlan::with_kv::<F8E4M3>(&dev, &[q], &[kv], nq, nkv, hd, hdv, AttentionKernel::Auto).unwrap();
        let want = if wgmma { AttentionKernel::Wgmma } else { AttentionKernel::MmaSync };
        assert_eq!(plan.kernel, want, "head dim {hd}, q {q} kv {kv}");
        let forced = AttentionPlan::with_kv::<F8E4M3>(&dev, &[q], &[kv], nq, nkv, hd, hdv, AttentionKernel::Wgmma);
        match forced {
            Ok(p) => assert!(wgmma && p.kernel == AttentionKernel::Wgmma, "head dim {hd}, q {q} kv {kv}: {p:?}"),
            Err(e) => assert!(!wgmma && matches!(e, Error::Unsupported { .. }), "head dim {hd}, q {q} kv {kv}: {e}"),
        }
        // K/V in the query dtype: with_kv plans as with_kernel.
        assert_eq!(AttentionPlan::with_kv::<bf16>(&dev, &[q], &[kv], nq, nkv, hd, hdv, AttentionKernel::Auto).unwrap(), AttentionPlan::new(&dev, &[q], &[kv], nq, nkv, hd, hdv).unwrap());
    }
    let hd = 128;
    let q = dev.upload(&vec![bf16::ONE; 8 * nq * hd]).unwrap();
    let k8 = dev.upload(&vec![F8E4M3::from_f64_sat(0.5); 8 * nkv * hd]).unwrap();
    let cu = dev.upload(&[0i32, 8]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 8 * nq * hd]).unwrap();
    let plan = AttentionPlan::with_kv::<F8E4M3>(&dev, &[8], &[8], nq, nkv, hd, hd, AttentionKernel::Auto).unwrap();
    let cuv = TensorView::contiguous(cu.as_view(), [2]).unwrap();
    let kt = TensorView::contiguous(k8.as_view(), [8, nkv, hd]).unwrap();
    let qv = TensorView::contiguous(q.as_view(), [8, nq, hd]).unwrap();
    {
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [8, nq, hd]).unwrap();
        let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &kt, cu_seqlens_kv: &cuv }, &plan, &AttentionConfig::causal(hd), &mut ov, None, None).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

/// MLA decode reads V from K's rows: a V that is not K's first 512 elements is refused (not
/// silently replaced by K's), and so is an FP8 latent cache with two scales.
#[test]
fn mla_decode_needs_v_inside_k() {
    let Some(dev) = device() else { return };
    let (hd, hdv, heads) = (576, 512, 16);
    let q = dev.upload(&vec![bf16::ONE; 4 * heads * hd]).unwrap();
    let k = dev.upload(&vec![bf16::ONE; 4 * hd]).unwrap();
    let v = dev.upload(&vec![bf16::ONE; 4 * hdv]).unwrap();
    let cu = dev.upload(&[0i32, 4]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 4 * heads * hdv]).unwrap();
    let plan = AttentionPlan::new(&dev, &[4], &[4], heads, 1, hd, hdv).unwrap();
    let cfg = AttentionConfig::causal(hd);
    let cuv = TensorView::contiguous(cu.as_view(), [2]).unwrap();
    let qv = TensorView::contiguous(q.as_view(), [4, heads, hd]).unwrap();
    let kt = TensorView::contiguous(k.as_view(), [4, 1, hd]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [4, heads, hdv]).unwrap();
    // A separate V tensor (dense 512-element rows: other strides).
    let vt = TensorView::contiguous(v.as_view(), [4, 1, hdv]).unwrap();
    let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &vt, cu_seqlens_kv: &cuv }, &plan, &cfg, &mut ov, None, None).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // K's strides but another buffer.
    let k2 = dev.upload(&vec![bf16::ONE; 4 * hd]).unwrap();
    let v2 = TensorView::contiguous(k2.as_view(), [4, 1, hd]).unwrap().narrow(2, 0, hdv).unwrap();
    let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &v2, cu_seqlens_kv: &cuv }, &plan, &cfg, &mut ov, None, None).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // K's prefix 64 elements in: not the first 512.
    let v3 = kt.narrow(2, 64, hdv).unwrap();
    let e = attention(&dev, &qv, &cuv, KvInput::Contiguous { k: &kt, v: &v3, cu_seqlens_kv: &cuv }, &plan, &cfg, &mut ov, None, None).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    drop(ov);
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
    // An FP8 latent cache with two scales (V is K: one scale).
    let pages8 = dev.upload(&vec![warpcore::F8E4M3::from_f64_sat(0.5); 2 * 16 * hd]).unwrap();
    let cache = KvCacheView::latent(TensorView::contiguous(pages8.as_view(), [2, 16, 1, hd]).unwrap(), hdv).unwrap().with_scales(warpcore::kv_cache::KvScales::new(0.5, 0.25)).unwrap();
    let bt = dev.upload(&[0i32, 1]).unwrap();
    let lens = dev.upload(&[4i32]).unwrap();
    let table = BlockTableView::new(TensorView::contiguous(bt.as_view(), [1, 2]).unwrap(), TensorView::contiguous(lens.as_view(), [1]).unwrap()).unwrap();
    let plan8 = AttentionPlan::with_kernel(&dev, &[4], &[4], heads, 1, hd, hdv, AttentionKernel::MmaSync).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [4, heads, hdv]).unwrap();
    let e = attention(&dev, &qv, &cuv, KvInput::Paged { cache: &cache, table: &table }, &plan8, &cfg, &mut ov, None, None).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    drop(ov);
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
    // kv_lora_rank past the row.
    let pages = dev.upload(&vec![bf16::ONE; 2 * 16 * hd]).unwrap();
    let e = KvCacheView::latent(TensorView::contiguous(pages.as_view(), [2, 16, 1, hd]).unwrap(), hd + 1).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // A latent cache at other head dims: V (its first 64 columns) is narrower than the 128 the
    // kernel would read; refused (it once ran with V silently the whole K row).
    let lat = dev.upload(&vec![bf16::ONE; 2 * 16 * 128]).unwrap();
    let cache = KvCacheView::latent(TensorView::contiguous(lat.as_view(), [2, 16, 1, 128]).unwrap(), 64).unwrap();
    let plan = AttentionPlan::new(&dev, &[4], &[4], 8, 1, 128, 128).unwrap();
    let q = dev.upload(&vec![bf16::ONE; 4 * 8 * 128]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; 4 * 8 * 128]).unwrap();
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [4, 8, 128]).unwrap();
    let qv = TensorView::contiguous(q.as_view(), [4, 8, 128]).unwrap();
    let e = attention(&dev, &qv, &cuv, KvInput::Paged { cache: &cache, table: &table }, &plan, &AttentionConfig::causal(128), &mut ov, None, None).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    drop(ov);
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
}
