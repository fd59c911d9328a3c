//! GPU tests of the MoE routing family against `reference::moe_routing` (skip without a GPU).

mod common;

use common::{assert_passed, device};
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::moe_routing::{
    align_ids, check_moe_align, check_moe_combine, check_moe_gate, check_moe_gather, check_round_trip, gate_inputs, AlignCase,
    AlignIds, GateCase, PermuteCase, Ties, INT_POISON,
};
use warpcore::reference::moe_routing as reference;
use warpcore::check::Rng;
use warpcore::ops::moe_routing::{
    moe_align, moe_combine, moe_gate, moe_gather, MoeAlignOutputs, MoeAlignSizes, MoeGateConfig,
};
use warpcore::{Device, Error, TensorView, TensorViewMut, F8E4M3};

/// The expert counts the issue names (not only powers of two).
const EXPERT_COUNTS: &[usize] = &[8, 60, 64, 128, 160, 256, 384, 512];

/// 48 cases per property; PROPTEST_CASES overrides (scripts/gpu-run lowers it under memcheck).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A gate configuration for `n` experts drawn from `seed`: softmax (renormalised or not) or
/// sigmoid with a group count dividing n (groups of any size, e.g. 60 / 5 = 12), a kept-group
/// count, top_k up to what the kept groups hold (and up to 32 = every expert when n ≤ 32).
fn gate_config(n: usize, seed: u64, sigmoid: bool) -> (MoeGateConfig, usize) {
    let mut rng = Rng::new(seed);
    let mut pick = |hi: usize| (rng.next_u64() % hi as u64) as usize;
    let mut cfg = if sigmoid {
        let divisors: Vec<usize> = (1..=32).filter(|g| n % g == 0).collect();
        let g = divisors[pick(divisors.len())];
        let kept = 1 + pick(g);
        MoeGateConfig { n_group: g, topk_group: kept, ..MoeGateConfig::sigmoid(pick(2) == 0) }
    } else {
        MoeGateConfig::softmax_topk(pick(2) == 0)
    };
    cfg.routed_scaling_factor = [1.0, 2.5, 0.5][pick(3)];
    if pick(4) == 0 {
        let first = pick(n);
        cfg.local_experts = Some(first..first + pick(n - first + 1));
    }
    let most = (cfg.topk_group * (n / cfg.n_group)).min(32);
    let top_k = match pick(4) {
        0 => 1,
        1 => most,
        _ => 1 + pick(most.min(16)),
    };
    (cfg, top_k)
}

fn gate_case() -> impl Strategy<Value = GateCase> {
    (
        prop_oneof![proptest::sample::select(EXPERT_COUNTS), 1usize..=512],
        prop_oneof![Just(0usize), Just(1usize), 1usize..300],
        any::<bool>(),
        0usize..4,
        any::<u64>(),
    )
        .prop_map(|(n, num_tokens, sigmoid, ties, seed)| {
            let (cfg, top_k) = gate_config(n, seed, sigmoid);
            let ties = match ties {
                0 => Ties::None,
                1 => Ties::Heavy,
                2 => Ties::AllEqual,
                _ if sigmoid => Ties::BiasCancels,
                _ => Ties::Heavy,
            };
            GateCase {
                num_tokens,
                num_experts: n,
                top_k,
                cfg,
                bias: sigmoid && (ties == Ties::BiasCancels || seed % 3 != 0),
                counts: seed % 2 == 0,
                ties,
                logits_gap: if seed % 5 == 0 { (seed % 7) as usize } else { 0 },
                offset: if seed % 11 == 0 { 1 } else { 0 },
                out_gap: (seed % 3) as usize,
                seed,
            }
        })
}

fn align_case() -> impl Strategy<Value = AlignCase> {
    (
        prop_oneof![Just(0usize), Just(1usize), 1usize..600, 500usize..5000],
        1usize..=16,
        prop_oneof![proptest::sample::select(EXPERT_COUNTS), 1usize..=512],
        prop_oneof![proptest::sample::select(&[1usize, 16, 64, 128, 256][..]), 1usize..300],
        0usize..3,
        any::<u64>(),
    )
        .prop_map(|(num_tokens, top_k, num_experts, block_m, ids, seed)| AlignCase {
            num_tokens,
            top_k,
            num_experts,
            block_m,
            ids: [AlignIds::Random, AlignIds::SingleExpert, AlignIds::WithInvalid][ids],
            ids_gap: if seed % 3 == 0 { (seed % 5) as usize } else { 0 },
            seed,
        })
}

fn permute_case() -> impl Strategy<Value = PermuteCase> {
    (
        1usize..200,
        1usize..=8,
        prop_oneof![proptest::sample::select(EXPERT_COUNTS), 1usize..=64],
        prop_oneof![proptest::sample::select(&[1usize, 17, 111, 989, 2048, 4096][..]), 1usize..3000],
        proptest::sample::select(&[1usize, 16, 64, 128][..]),
        any::<u64>(),
    )
        .prop_map(|(num_tokens, top_k, num_experts, hidden, block_m, seed)| {
            let top_k = top_k.min(num_experts);
            let first = (seed % num_experts as u64) as usize;
            PermuteCase {
                num_tokens,
                top_k,
                num_experts,
                hidden,
                block_m,
                local: (seed % 4 == 0).then(|| first..num_experts),
                row_gap: if seed % 2 == 0 { 0 } else { (seed % 9) as usize },
                hot_expert: (seed % 7 == 0).then_some(first),
                seed,
            }
        })
}

/// Every expert count: softmax (both), and sigmoid with every group count dividing it.
fn expert_count_cases() -> Vec<GateCase> {
    let mut out = Vec::new();
    for (i, &n) in EXPERT_COUNTS.iter().enumerate() {
        let k = 8.min(n);
        for cfg in [MoeGateConfig::softmax_topk(true), MoeGateConfig::softmax_topk(false)] {
            out.push(GateCase::new(300, n, k, cfg, i as u64));
        }
        for g in (1..=32).filter(|g| n % g == 0) {
            let kept = (g / 2).max(1).max(k.div_ceil(n / g));
            let cfg = MoeGateConfig::deepseek_v3(g, kept, 2.5);
            out.push(GateCase { bias: true, ties: Ties::Heavy, ..GateCase::new(65, n, k, cfg, (i * 100 + g) as u64) });
        }
    }
    out
}

/// top_k = 1 and top_k = num_experts, random and all-equal logits, softmax and sigmoid.
fn top_k_cases() -> Vec<GateCase> {
    let mut out = Vec::new();
    for n in [1usize, 2, 8, 17, 32] {
        for k in [1, n] {
            for ties in [Ties::None, Ties::AllEqual] {
                out.push(GateCase { ties, ..GateCase::new(9, n, k, MoeGateConfig::softmax_topk(false), n as u64) });
                out.push(GateCase { ties, bias: true, ..GateCase::new(9, n, k, MoeGateConfig::sigmoid(true), n as u64) });
            }
        }
    }
    out
}

/// Bias cancelling the sigmoid: exact ties that only a bit-identical sigmoid reproduces.
fn cancelling_bias_cases() -> Vec<GateCase> {
    EXPERT_COUNTS
        .iter()
        .map(|&n| {
            let (g, k) = (if n % 8 == 0 { 8 } else { 4 }, 8.min(n));
            let kept = 2.max(k.div_ceil(n / g));
            let cfg = MoeGateConfig::deepseek_v3(g, kept, 2.5);
            GateCase { bias: true, counts: true, ties: Ties::BiasCancels, ..GateCase::new(257, n, k, cfg, n as u64) }
        })
        .collect()
}

/// The host side of a gate case: inputs and the reference (what the GPU test compares with).
fn gate_reference(c: &GateCase) -> reference::GateOutput {
    let (logits, bias) = gate_inputs::<bf16>(c);
    let stride = c.num_experts + c.logits_gap;
    let dense = warpcore::check::gather_rows(&logits, c.offset, c.num_tokens, c.num_experts, stride);
    reference::moe_gate(&dense, c.num_experts, c.top_k, c.bias.then_some(&bias[..]), &c.cfg)
}

/// Without a GPU: every case list and every strategy yields valid configurations whose
/// references run, so the GPU session spends its time on the kernels.
#[test]
fn cases_are_valid_on_the_cpu() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for c in expert_count_cases().iter().chain(&top_k_cases()).chain(&cancelling_bias_cases()) {
        c.cfg.validate(c.num_experts, c.top_k).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        let r = gate_reference(c);
        assert_eq!(r.topk_ids.len(), c.num_tokens * c.top_k);
    }
    let mut runner = TestRunner::deterministic();
    for _ in 0..200 {
        let c = gate_case().new_tree(&mut runner).unwrap().current();
        c.cfg.validate(c.num_experts, c.top_k).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        gate_reference(&c);
        let a = align_case().new_tree(&mut runner).unwrap().current();
        MoeAlignSizes::new(a.num_tokens, a.top_k, a.num_experts, a.block_m).unwrap();
        reference::moe_align(&align_ids(&a), a.top_k, a.num_experts, a.block_m);
        let p = permute_case().new_tree(&mut runner).unwrap().current();
        let (local, al) = p.routing();
        assert_eq!(al.expert_offsets.len(), local + 1);
    }
    // The cancelling bias really makes ties: many experts score exactly 0.5.
    let c = &cancelling_bias_cases()[5]; // 256 experts
    let (logits, bias) = gate_inputs::<f32>(c);
    let exact = (0..c.num_experts)
        .filter(|&e| reference::sigmoid_f32(logits[e]) + bias[e] == 0.5)
        .count();
    assert!(exact > c.num_experts / 4, "only {exact} exact ties");
}

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

// ---------------------------------------------------------------- the gate's warp algorithm, on the CPU

/// A lane-by-lane model of cuda/moe_routing.cu's gate_kernel and its launch configuration
/// (group lanes P, VEC, VPL, the slot layout, best-two promotion with rescans on every second
/// win, the butterfly merge of group top-twos, the reduce-max / reduce-min rounds). Returns
/// the chosen experts in order. Not the kernel itself, but the same algorithm step for step:
/// checked against the reference on the CPU so that the GPU session tests the code, not the idea.
fn model_gate(x: &[f32], bias: Option<&[f32]>, n: usize, top_k: usize, cfg: &MoeGateConfig, vec_ok: bool) -> Vec<usize> {
    let groups = cfg.n_group;
    let epg = n / groups;
    let mut shift = 0;
    while (groups << (shift + 1)) <= 32 {
        shift += 1;
    }
    let p_lanes = 1usize << shift;
    let vec = if vec_ok && epg % 4 == 0 { 4 } else { 1 };
    let chunks = epg.div_ceil(p_lanes * vec);
    let vpl = (chunks * vec).next_power_of_two();
    assert!(vpl <= 32, "VPL {vpl} for {n} experts, {groups} groups");
    let sigmoid = cfg.scoring == warpcore::ops::moe_routing::MoeScoring::Sigmoid;
    struct Lane {
        key: Vec<u32>,
        val: Vec<f32>,
        k1: u32,
        s1: usize,
        k2: u32,
        s2: usize,
        i1: usize,
        i2: usize,
        have2: bool,
        consumed: u32,
    }
    let top2 = |key: &[u32], consumed: u32| {
        let (mut k1, mut s1, mut k2, mut s2) = (0u32, 0usize, 0u32, 0usize);
        for (s, &k) in key.iter().enumerate() {
            let k = if (consumed >> s) & 1 == 1 { 0 } else { k };
            if k > k1 {
                (k2, s2, k1, s1) = (k1, s1, k, s);
            } else if k > k2 {
                (k2, s2) = (k, s);
            }
        }
        (k1, s1, k2, s2)
    };
    let mut lanes: Vec<Lane> = (0..32)
        .map(|lane| {
            let (g, p) = (lane >> shift, lane & (p_lanes - 1));
            let active = g < groups;
            let valid_chunks = if active && p * vec < epg { (epg - p * vec).div_ceil(p_lanes * vec) } else { 0 };
            let base = g * epg + p * vec;
            let (mut key, mut val) = (vec![0u32; vpl], vec![0f32; vpl]);
            for s in 0..vpl {
                let (c, v) = (s / vec, s % vec);
                let e = base + c * p_lanes * vec + v;
                let xf = if c < valid_chunks { x[e] } else { 0.0 };
                let sel = if sigmoid {
                    val[s] = reference::sigmoid_f32(xf);
                    val[s] + if c < valid_chunks { bias.map_or(0.0, |b| b[e]) } else { 0.0 }
                } else {
                    val[s] = xf;
                    xf
                };
                key[s] = if c < valid_chunks { reference::selection_key(sel) } else { 0 };
            }
            let (k1, s1, k2, s2) = top2(&key, 0);
            let expert = |s: usize| base + (s / vec) * p_lanes * vec + s % vec;
            Lane { k1, s1, k2, s2, i1: expert(s1), i2: expert(s2), key, val, have2: true, consumed: 0 }
        })
        .collect();
    let expert_of = |lane: usize, s: usize| (lane >> shift) * epg + (lane & (p_lanes - 1)) * vec + (s / vec) * p_lanes * vec + s % vec;
    if cfg.topk_group < groups {
        let mut t: Vec<(u32, u32)> = lanes.iter().map(|l| (l.k1, l.k2)).collect();
        let mut off = 1;
        while off < p_lanes {
            let old = t.clone();
            for lane in 0..32 {
                let ((t1, t2), (o1, o2)) = (old[lane], old[lane ^ off]);
                t[lane] = (t1.max(o1), t1.min(o1).max(t2.max(o2)));
            }
            off <<= 1;
        }
        let mut gkey: Vec<u32> = (0..32)
            .map(|lane| {
                let (t1, t2) = t[lane];
                let score = if t2 != 0 { reference::key_value(t1) + reference::key_value(t2) } else { reference::key_value(t1) };
                if (lane >> shift) < groups && lane & (p_lanes - 1) == 0 { reference::selection_key(score) } else { 0 }
            })
            .collect();
        let mut chosen = 0u32;
        for _ in 0..cfg.topk_group {
            let m = *gkey.iter().max().unwrap();
            let wg = (0..32).filter(|&l| gkey[l] == m && m != 0).map(|l| (l >> shift) as u32).min().unwrap_or(u32::MAX);
            if wg < 32 {
                chosen |= 1 << wg;
            }
            for l in 0..32 {
                if (l >> shift) as u32 == wg {
                    gkey[l] = 0;
                }
            }
        }
        for (lane, l) in lanes.iter_mut().enumerate() {
            let g = lane >> shift;
            if g >= groups || (chosen >> g) & 1 == 0 {
                l.k1 = 0;
                l.k2 = 0;
            }
        }
    }
    let mut out = Vec::new();
    for _ in 0..top_k {
        let m = lanes.iter().map(|l| l.k1).max().unwrap();
        let win = lanes.iter().filter(|l| l.k1 == m).map(|l| l.i1).min().unwrap();
        out.push(win);
        let lane = (0..32).find(|&l| lanes[l].k1 == m && lanes[l].i1 == win).unwrap();
        let l = &mut lanes[lane];
        l.consumed |= 1 << l.s1;
        if l.have2 {
            (l.k1, l.s1, l.i1, l.have2) = (l.k2, l.s2, l.i2, false);
        } else {
            let (k1, s1, k2, s2) = top2(&l.key, l.consumed);
            (l.k1, l.s1, l.k2, l.s2, l.have2) = (k1, s1, k2, s2, true);
            l.i1 = expert_of(lane, s1);
            l.i2 = expert_of(lane, s2);
        }
        let _ = &l.val;
    }
    out
}

#[test]
fn gate_algorithm_model_matches_the_reference() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut checked = 0;
    for i in 0..3000 {
        let c = gate_case().new_tree(&mut runner).unwrap().current();
        let c = GateCase { num_tokens: c.num_tokens.min(4), cfg: MoeGateConfig { local_experts: None, ..c.cfg }, ..c };
        let (logits, bias) = gate_inputs::<f32>(&c);
        let stride = c.num_experts + c.logits_gap;
        let dense = warpcore::check::gather_rows(&logits, c.offset, c.num_tokens, c.num_experts, stride);
        let want = reference::moe_gate(&dense, c.num_experts, c.top_k, c.bias.then_some(&bias[..]), &c.cfg).topk_ids;
        for (t, row) in dense.chunks(c.num_experts).enumerate() {
            let got = model_gate(row, c.bias.then_some(&bias[..]), c.num_experts, c.top_k, &c.cfg, i % 2 == 0);
            let got: Vec<i32> = got.iter().map(|&e| e as i32).collect();
            assert_eq!(got, want[t * c.top_k..][..c.top_k], "case {c:?}, token {t}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
}
