//! GPU tests of the MoE routing family against `reference::moe_routing` (skip without a GPU).

#[path = "../common/mod.rs"]
mod common;
mod cases;
mod model;

use cases::*;
use common::proptest_config as config;
use common::{assert_passed, device};
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::moe_routing::{
    approx_sigmoid_error, check_moe_align, check_moe_combine, check_moe_gate, check_moe_gather, check_round_trip, AlignCase,
    AlignIds, GateCase, PermuteCase, INT_POISON,
};
use warpcore::ops::moe_routing::{
    moe_align, moe_combine, moe_gate, moe_gather, MoeAlignOutputs, MoeAlignSizes, MoeGateConfig,
};
use warpcore::{Device, Error, TensorView, TensorViewMut, F8E4M3};

macro_rules! gate_tests {
    ($m:ident, $t:ty) => {
        mod $m {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn moe_gate_matches_reference(case in gate_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_moe_gate::<$t>(&dev, &case).unwrap());
                }
            }

            #[test]
            fn every_expert_count_softmax_and_grouped() {
                let Some(dev) = device() else { return };
                for c in expert_count_cases() {
                    assert_passed(&check_moe_gate::<$t>(&dev, &c).unwrap());
                }
            }

            #[test]
            fn top_k_of_one_and_of_every_expert() {
                let Some(dev) = device() else { return };
                for c in top_k_cases() {
                    assert_passed(&check_moe_gate::<$t>(&dev, &c).unwrap());
                }
            }

            #[test]
            fn sigmoid_is_bit_exact_under_cancelling_bias() {
                let Some(dev) = device() else { return };
                for c in cancelling_bias_cases() {
                    assert_passed(&check_moe_gate::<$t>(&dev, &c).unwrap());
                }
            }

            #[test]
            fn grouped_sigmoid_near_ties_of_the_selection_values() {
                let Some(dev) = device() else { return };
                for c in near_selection_cases() {
                    assert_passed(&check_moe_gate::<$t>(&dev, &c).unwrap());
                }
            }

            #[test]
            fn many_tokens() {
                let Some(dev) = device() else { return };
                let c = GateCase { counts: true, ..GateCase::new(16384, 256, 8, MoeGateConfig::softmax_topk(true), 1) };
                assert_passed(&check_moe_gate::<$t>(&dev, &c).unwrap());
                let d = GateCase { bias: true, ..GateCase::new(16384, 256, 8, MoeGateConfig::deepseek_v3(8, 4, 2.5), 2) };
                assert_passed(&check_moe_gate::<$t>(&dev, &d).unwrap());
            }
        }
    };
}
/// The pre-filter's premise, on the device: MUFU's approximate sigmoid within 2⁻²⁰ of the
/// deterministic one, over every 5th f32 bit pattern from +0 to +inf and their negatives
/// (8.6 × 10⁸ values; one launch, milliseconds).
#[test]
fn approx_sigmoid_is_within_its_budget() {
    let Some(dev) = device() else { return };
    let step = 5u32;
    let count = 0x7F80_0000u32 / step + 1; // up to +inf's bits
    let worst = approx_sigmoid_error(&dev, step, count).unwrap();
    eprintln!("approx_sigmoid: largest difference from det_sigmoid {worst:e} (2^{:.2})", f64::from(worst).log2());
    assert!(worst <= 2f32.powi(-20), "{worst:e}");
}

gate_tests!(gate_f32, f32);
gate_tests!(gate_bf16, bf16);
gate_tests!(gate_f16, f16);

proptest! {
    #![proptest_config(config())]
    #[test]
    fn moe_align_matches_reference(case in align_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_moe_align(&dev, &case).unwrap());
    }

    #[test]
    fn moe_gather_matches_reference(case in permute_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_moe_gather::<bf16>(&dev, &case).unwrap());
        assert_passed(&check_moe_gather::<F8E4M3>(&dev, &case).unwrap());
        assert_passed(&check_moe_gather::<f32>(&dev, &case).unwrap());
    }

    #[test]
    fn moe_combine_matches_reference(case in permute_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_moe_combine::<bf16>(&dev, &case).unwrap());
        assert_passed(&check_moe_combine::<f16>(&dev, &case).unwrap());
        assert_passed(&check_moe_combine::<f32>(&dev, &case).unwrap());
    }

    #[test]
    fn gather_then_combine_restores_the_input(case in permute_case()) {
        let Some(dev) = device() else { return Ok(()) };
        let c = PermuteCase { local: None, row_gap: 0, ..case };
        assert_passed(&check_round_trip::<bf16>(&dev, &c).unwrap());
        assert_passed(&check_round_trip::<f16>(&dev, &c).unwrap());
        assert_passed(&check_round_trip::<f32>(&dev, &c).unwrap());
    }
}

#[test]
fn align_at_the_issue_shapes_and_tile_edges() {
    let Some(dev) = device() else { return };
    // 16384 x 8 (32 tiles), one tile exactly, one past a tile, every assignment to one expert.
    for (tokens, k, n, bm, ids) in [
        (16384, 8, 256, 64, AlignIds::Random),
        (512, 8, 256, 64, AlignIds::Random),
        (4097, 1, 64, 16, AlignIds::Random),
        (65536, 8, 256, 128, AlignIds::SingleExpert),
        (20000, 6, 60, 32, AlignIds::WithInvalid),
    ] {
        let c = AlignCase { num_tokens: tokens, top_k: k, num_experts: n, block_m: bm, ids, ids_gap: 0, seed: tokens as u64 };
        assert_passed(&check_moe_align(&dev, &c).unwrap());
    }
}

#[test]
fn all_tokens_to_one_expert_through_the_pipeline() {
    let Some(dev) = device() else { return };
    // Expert 5's logit dominates: every token's first choice (all of them with top_k = 1).
    for k in [1, 4] {
        let c = PermuteCase {
            num_tokens: 1000,
            top_k: k,
            num_experts: 8,
            hidden: 256,
            block_m: 64,
            local: None,
            row_gap: 0,
            hot_expert: Some(5),
            seed: 7,
        };
        assert_passed(&check_round_trip::<bf16>(&dev, &c).unwrap());
        assert_passed(&check_moe_gather::<bf16>(&dev, &c).unwrap());
        assert_passed(&check_moe_combine::<bf16>(&dev, &c).unwrap());
    }
    let a = AlignCase { num_tokens: 1000, top_k: 4, num_experts: 8, block_m: 64, ids: AlignIds::SingleExpert, ids_gap: 0, seed: 1 };
    assert_passed(&check_moe_align(&dev, &a).unwrap());
}

// ---------------------------------------------------------------- error paths

/// Runs `f` on a 4-token, 64-expert gate with NaN / poison outputs and checks the error and
/// that nothing was written.
fn expect_gate_error(
    top_k: usize,
    bias: bool,
    cfg: MoeGateConfig,
    matches: impl Fn(&Error) -> bool,
) {
    let Some(dev) = device() else { return };
    let (t, n) = (4, 64);
    let logits = dev.upload(&vec![bf16::ONE; t * n]).unwrap();
    let b = dev.upload(&vec![0.0f32; n]).unwrap();
    let mut ids = dev.upload(&vec![INT_POISON; t * top_k.max(1)]).unwrap();
    let mut w = dev.upload(&vec![f32::NAN; t * top_k.max(1)]).unwrap();
    let bv = TensorView::contiguous(b.as_view(), [n]).unwrap();
    let err = moe_gate(
        &dev,
        &TensorView::contiguous(logits.as_view(), [t, n]).unwrap(),
        bias.then_some(&bv),
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, top_k]).unwrap(),
        &mut TensorViewMut::contiguous(w.as_view_mut(), [t, top_k]).unwrap(),
        None,
        &cfg,
    )
    .expect_err("bad input must be rejected");
    assert!(matches(&err), "unexpected error: {err}");
    assert!(dev.download(&ids).unwrap().iter().all(|&v| v == INT_POISON));
    assert!(dev.download(&w).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn gate_rejects_bad_configurations() {
    expect_gate_error(33, false, MoeGateConfig::softmax_topk(true), |e| matches!(e, Error::Unsupported { what, .. } if what.contains("top_k")));
    expect_gate_error(0, false, MoeGateConfig::softmax_topk(true), |e| matches!(e, Error::Empty { .. }));
    expect_gate_error(8, true, MoeGateConfig::softmax_topk(true), |e| {
        matches!(e, Error::Unsupported { what: "correction_bias with softmax scoring", .. })
    });
    expect_gate_error(8, true, MoeGateConfig::deepseek_v3(7, 2, 1.0), |e| matches!(e, Error::Unsupported { what, .. } if what.contains("n_group")));
    expect_gate_error(9, true, MoeGateConfig::deepseek_v3(8, 1, 1.0), |e| matches!(e, Error::Unsupported { what, .. } if what.contains("kept groups")));
    expect_gate_error(8, false, MoeGateConfig::softmax_topk(true).with_local_experts(0..65), |e| {
        matches!(e, Error::Unsupported { what, .. } if what.contains("local_experts"))
    });
}

#[test]
fn gate_rejects_bad_shapes_and_dtypes() {
    let Some(dev) = device() else { return };
    let (t, n, k) = (4, 64, 8);
    let logits = dev.upload(&vec![1.0f32; t * n]).unwrap();
    let mut ids = dev.upload(&vec![INT_POISON; t * k]).unwrap();
    let mut w = dev.upload(&vec![f32::NAN; t * k]).unwrap();
    let mut counts = dev.upload(&vec![INT_POISON; n]).unwrap();
    let lv = TensorView::contiguous(logits.as_view(), [t, n]).unwrap();
    let cfg = MoeGateConfig::softmax_topk(true);
    // Weights with 3 tokens for 4.
    let e = moe_gate(
        &dev,
        &lv,
        None,
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(w.slice_mut(..3 * k), [3, k]).unwrap(),
        None,
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "topk_weights", .. }), "{e}");
    // Counts of 63 experts.
    let e = moe_gate(
        &dev,
        &lv,
        None,
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(w.as_view_mut(), [t, k]).unwrap(),
        Some(&mut TensorViewMut::contiguous(counts.slice_mut(..n - 1), [n - 1]).unwrap()),
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "expert_counts", .. }), "{e}");
    // Logits with an inner stride.
    let e = moe_gate(
        &dev,
        &TensorView::new(logits.as_view(), [t, n / 2], [n, 2]).unwrap(),
        None,
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(w.as_view_mut(), [t, k]).unwrap(),
        None,
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "innermost stride (must be 1)", .. }), "{e}");
    // FP8 logits.
    let f8 = dev.upload(&vec![F8E4M3(0x38); t * n]).unwrap();
    let e = moe_gate(
        &dev,
        &TensorView::contiguous(f8.as_view(), [t, n]).unwrap(),
        None,
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(w.as_view_mut(), [t, k]).unwrap(),
        None,
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    assert!(dev.download(&ids).unwrap().iter().all(|&v| v == INT_POISON));
    assert!(dev.download(&w).unwrap().iter().all(|v| v.is_nan()));
    assert!(dev.download(&counts).unwrap().iter().all(|&v| v == INT_POISON));
}

/// Align outputs for (tokens, top_k, experts, block_m), with `sorted_ids` one element short when
/// `short`, and the error it gives.
fn align_error(dev: &Device, tokens: usize, k: usize, n: usize, bm: usize, short: bool) -> (Error, Vec<Vec<i32>>) {
    let sizes = MoeAlignSizes::new(tokens, k, n.min(512), bm.max(1)).unwrap();
    let ids = dev.upload(&vec![0i32; tokens * k]).unwrap();
    let lens = [sizes.sorted_len - short as usize, sizes.blocks_len, n + 1, n, tokens * k, sizes.workspace_len];
    let mut bufs: Vec<_> = lens.iter().map(|&l| dev.upload(&vec![INT_POISON; l.max(1)]).unwrap()).collect();
    let [b0, b1, b2, b3, b4, b5] = &mut bufs[..] else { unreachable!() };
    let e = moe_align(
        dev,
        &TensorView::contiguous(ids.as_view(), [tokens, k]).unwrap(),
        n,
        bm,
        MoeAlignOutputs {
            sorted_ids: &mut TensorViewMut::contiguous(b0.slice_mut(..lens[0]), [lens[0]]).unwrap(),
            block_expert_ids: &mut TensorViewMut::contiguous(b1.slice_mut(..lens[1]), [lens[1]]).unwrap(),
            expert_offsets: &mut TensorViewMut::contiguous(b2.slice_mut(..lens[2]), [lens[2]]).unwrap(),
            expert_counts: &mut TensorViewMut::contiguous(b3.slice_mut(..lens[3]), [lens[3]]).unwrap(),
            token_positions: &mut TensorViewMut::contiguous(b4.slice_mut(..lens[4]), [tokens, k]).unwrap(),
            workspace: &mut TensorViewMut::contiguous(b5.slice_mut(..lens[5]), [lens[5]]).unwrap(),
        },
    )
    .unwrap_err();
    (e, bufs.iter().map(|b| dev.download(b).unwrap()).collect())
}

#[test]
fn align_rejects_bad_sizes() {
    let Some(dev) = device() else { return };
    let (e, outs) = align_error(&dev, 10, 4, 16, 8, true);
    assert!(matches!(e, Error::ShapeMismatch { arg: "sorted_ids", .. }), "{e}");
    assert!(outs.iter().flatten().all(|&v| v == INT_POISON));
    let (e, _) = align_error(&dev, 10, 4, 513, 8, false);
    assert!(matches!(e, Error::Unsupported { what: "num_experts (1 to 512)", .. }), "{e}");
    let (e, outs) = align_error(&dev, 10, 4, 16, 0, false);
    assert!(matches!(e, Error::Unsupported { what: "block_m (at least 1)", .. }), "{e}");
    assert!(outs.iter().flatten().all(|&v| v == INT_POISON));
}

/// Tables that are not moe_align's — positions anywhere in i32, offsets and counts out of
/// order, negative or past the rows — never make gather or combine write outside their
/// outputs (guard rows after each stay poisoned); combine skips the positions outside
/// [0, rows) and sums the others in k order (the f32 fma chain, bit for bit).
#[test]
fn garbage_tables_never_write_outside_the_outputs() {
    let Some(dev) = device() else { return };
    let (t, k, n, h, rows, guard) = (37usize, 4usize, 6usize, 72usize, 50usize, 8usize);
    let mut rng = warpcore::check::Rng::new(7);
    let r = rows as i32;
    let wild = [i32::MIN, -7, -1, 0, r - 1, r, r + 1, i32::MAX];
    let pos: Vec<i32> = (0..t * k)
        .map(|i| if i % 3 == 0 { wild[(rng.next_u64() % 8) as usize] } else { (rng.next_u64() % rows as u64) as i32 })
        .collect();
    let offsets = [i32::MIN, 40, -5, 60, 10, i32::MAX, 3];
    let counts = [5, i32::MAX, -3, 0, i32::MIN, 2];
    assert_eq!((offsets.len(), counts.len()), (n + 1, n));
    let poisoned = |v: &[bf16], from: usize| v[from..].iter().all(|x| x.to_bits() == bf16::NAN.to_bits());

    let x: Vec<bf16> = rng.vec(t * h, -3.0, 3.0);
    let (xb, pb) = (dev.upload(&x).unwrap(), dev.upload(&pos).unwrap());
    let (ob, cb) = (dev.upload(&offsets).unwrap(), dev.upload(&counts).unwrap());
    let mut out = dev.upload(&vec![bf16::NAN; (rows + guard) * h]).unwrap();
    moe_gather(
        &dev,
        &TensorView::contiguous(xb.as_view(), [t, h]).unwrap(),
        &TensorView::contiguous(pb.as_view(), [t, k]).unwrap(),
        &TensorView::contiguous(ob.as_view(), [n + 1]).unwrap(),
        &TensorView::contiguous(cb.as_view(), [n]).unwrap(),
        &mut TensorViewMut::contiguous(out.slice_mut(..rows * h), [rows, h]).unwrap(),
    )
    .unwrap();
    assert!(poisoned(&dev.download(&out).unwrap(), rows * h), "moe_gather wrote past its rows");

    let y: Vec<bf16> = rng.vec(rows * h, -3.0, 3.0);
    let w: Vec<f32> = rng.vec(t * k, 0.0, 1.0);
    let (yb, wb) = (dev.upload(&y).unwrap(), dev.upload(&w).unwrap());
    let mut combined = dev.upload(&vec![bf16::NAN; (t + guard) * h]).unwrap();
    moe_combine(
        &dev,
        &TensorView::contiguous(yb.as_view(), [rows, h]).unwrap(),
        &TensorView::contiguous(pb.as_view(), [t, k]).unwrap(),
        &TensorView::contiguous(wb.as_view(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(combined.slice_mut(..t * h), [t, h]).unwrap(),
    )
    .unwrap();
    let got = dev.download(&combined).unwrap();
    assert!(poisoned(&got, t * h), "moe_combine wrote past its tokens");
    for tok in 0..t {
        for c in 0..h {
            let mut acc = 0.0f32;
            for j in 0..k {
                let p = pos[tok * k + j];
                if (0..r).contains(&p) {
                    acc = w[tok * k + j].mul_add(y[p as usize * h + c].to_f32(), acc);
                }
            }
            assert_eq!(got[tok * h + c].to_bits(), bf16::from_f32(acc).to_bits(), "token {tok}, column {c}");
        }
    }
}

#[test]
fn gather_and_combine_reject_bad_shapes() {
    let Some(dev) = device() else { return };
    let (t, k, n, h, rows) = (4, 2, 8, 32, 64);
    let x = dev.upload(&vec![bf16::ONE; t * h]).unwrap();
    let pos = dev.upload(&vec![0i32; 2 * t * k]).unwrap();
    let off = dev.upload(&vec![0i32; n + 1]).unwrap();
    let cnt = dev.upload(&vec![0i32; n]).unwrap();
    let w = dev.upload(&vec![1.0f32; t * k]).unwrap();
    let mut out = dev.upload(&vec![bf16::NAN; rows * h]).unwrap();
    let xv = TensorView::contiguous(x.as_view(), [t, h]).unwrap();
    let pv = TensorView::contiguous(pos.slice(..t * k), [t, k]).unwrap();
    // Out rows of 31 for hidden 32.
    let e = moe_gather(
        &dev,
        &xv,
        &pv,
        &TensorView::contiguous(off.as_view(), [n + 1]).unwrap(),
        &TensorView::contiguous(cnt.as_view(), [n]).unwrap(),
        &mut TensorViewMut::contiguous(out.slice_mut(..rows * 31), [rows, 31]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "out", .. }), "{e}");
    // Positions with a row gap (must be contiguous).
    let gapped = TensorView::new(pos.as_view(), [t, k], [2 * k, 1]).unwrap();
    let e = moe_gather(
        &dev,
        &xv,
        &gapped,
        &TensorView::contiguous(off.as_view(), [n + 1]).unwrap(),
        &TensorView::contiguous(cnt.as_view(), [n]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, h]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "strides (must be contiguous)", .. }), "{e}");
    // Offsets not num_experts + 1 long.
    let e = moe_gather(
        &dev,
        &xv,
        &pv,
        &TensorView::contiguous(off.slice(..n), [n]).unwrap(),
        &TensorView::contiguous(cnt.as_view(), [n]).unwrap(),
        &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, h]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "expert_offsets", .. }), "{e}");
    // Combine: weights for 3 tokens; FP8 is a copy-only dtype.
    let ev = TensorView::contiguous(x.as_view(), [t, h]).unwrap();
    let mut o = dev.upload(&vec![bf16::NAN; t * h]).unwrap();
    let e = moe_combine(
        &dev,
        &ev,
        &pv,
        &TensorView::contiguous(w.slice(..3 * k), [3, k]).unwrap(),
        &mut TensorViewMut::contiguous(o.as_view_mut(), [t, h]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "topk_weights", .. }), "{e}");
    let f8 = dev.upload(&vec![F8E4M3(0x38); t * h]).unwrap();
    let mut o8 = dev.upload(&vec![F8E4M3(0x7F); t * h]).unwrap();
    let e = moe_combine(
        &dev,
        &TensorView::contiguous(f8.as_view(), [t, h]).unwrap(),
        &pv,
        &TensorView::contiguous(w.as_view(), [t, k]).unwrap(),
        &mut TensorViewMut::contiguous(o8.as_view_mut(), [t, h]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
    assert!(dev.download(&out).unwrap().iter().all(|v| v.is_nan()));
    assert!(dev.download(&o).unwrap().iter().all(|v| v.is_nan()));
    assert!(dev.download(&o8).unwrap().iter().all(|v| *v == F8E4M3(0x7F)));
}

#[test]
fn zero_tokens() {
    let Some(dev) = device() else { return };
    // Gate: a no-op (counts untouched). Align: still writes its (empty-routing) outputs.
    let g = GateCase { counts: true, ..GateCase::new(0, 64, 4, MoeGateConfig::softmax_topk(true), 1) };
    assert_passed(&check_moe_gate::<bf16>(&dev, &g).unwrap());
    let a = AlignCase { num_tokens: 0, top_k: 8, num_experts: 256, block_m: 64, ids: AlignIds::Random, ids_gap: 0, seed: 1 };
    assert_passed(&check_moe_align(&dev, &a).unwrap());
}

