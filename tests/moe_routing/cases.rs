//! Case generators for the MoE routing tests: proptest strategies and fixed case lists (every
//! one also checked on the CPU by model.rs, so a GPU run never trips on a bad case).

use half::bf16;
use proptest::prelude::*;
use warpcore::check::moe_routing::{gate_inputs, AlignCase, AlignIds, GateCase, PermuteCase, Ties};
use warpcore::check::Rng;
use warpcore::ops::moe_routing::MoeGateConfig;
use warpcore::reference::moe_routing as reference;

/// The expert counts the issue names (not only powers of two).
pub const EXPERT_COUNTS: &[usize] = &[8, 60, 64, 128, 160, 256, 384, 512];

/// A gate configuration for `n` experts drawn from `seed`: softmax (renormalised or not) or
/// sigmoid with a group count dividing n (groups of any size, e.g. 60 / 5 = 12), a kept-group
/// count, top_k up to what the kept groups hold (and up to 32 = every expert when n ≤ 32).
pub fn gate_config(n: usize, seed: u64, sigmoid: bool) -> (MoeGateConfig, usize) {
    let mut rng = Rng::new(seed);
    let mut pick = |hi: usize| (rng.next_u64() % hi as u64) as usize;
    let mut cfg = if sigmoid {
        let divisors: Vec<usize> = (1..=32).filter(|g| n.is_multiple_of(*g)).collect();
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

pub fn gate_case() -> impl Strategy<Value = GateCase> {
    (
        prop_oneof![proptest::sample::select(EXPERT_COUNTS), 1usize..=512],
        prop_oneof![Just(0usize), Just(1usize), 1usize..300],
        any::<bool>(),
        0usize..5,
        any::<u64>(),
    )
        .prop_map(|(n, num_tokens, sigmoid, ties, seed)| {
            let (cfg, top_k) = gate_config(n, seed, sigmoid);
            let ties = match ties {
                0 => Ties::None,
                1 => Ties::Heavy,
                2 => Ties::AllEqual,
                3 if sigmoid => Ties::BiasCancels,
                _ if sigmoid => Ties::NearSelection,
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

pub fn align_case() -> impl Strategy<Value = AlignCase> {
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

pub fn permute_case() -> impl Strategy<Value = PermuteCase> {
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
                local: (seed % 4 == 0).then_some(first..num_experts),
                row_gap: if seed % 2 == 0 { 0 } else { (seed % 9) as usize },
                hot_expert: (seed % 7 == 0).then_some(first),
                seed,
            }
        })
}

/// Every expert count: softmax (both), and sigmoid with every group count dividing it.
pub fn expert_count_cases() -> Vec<GateCase> {
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
pub fn top_k_cases() -> Vec<GateCase> {
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
pub fn cancelling_bias_cases() -> Vec<GateCase> {
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

/// Near ties of sigmoid + bias on the shapes the gate's pre-filter takes (top_k ≤ 2 ·
/// topk_group, at least 2 experts a group, at most 16 values a lane): DeepSeek-V3's 256 / 8 / 4,
/// and P = 4, 2, 1 lanes a group, scalar loads, groups of two, no bias.
pub fn near_selection_cases() -> Vec<GateCase> {
    [
        (256, 8, 4, 8, true),
        (160, 5, 2, 4, true),
        (384, 12, 5, 10, true),
        (60, 4, 3, 6, true),
        (512, 32, 4, 8, true),
        (64, 32, 4, 8, true),
        (96, 3, 2, 3, false),
    ]
        .iter()
        .map(|&(n, g, kept, k, bias)| {
            let cfg = MoeGateConfig::deepseek_v3(g, kept, 2.5);
            GateCase { bias, counts: true, ties: Ties::NearSelection, ..GateCase::new(257, n, k, cfg, n as u64 + 7) }
        })
        .collect()
}

/// The host side of a gate case: inputs and the reference (what the GPU test compares with).
pub fn gate_reference(c: &GateCase) -> reference::GateOutput {
    let (logits, bias) = gate_inputs::<bf16>(c);
    let stride = c.num_experts + c.logits_gap;
    let dense = warpcore::check::gather_rows(&logits, c.offset, c.num_tokens, c.num_experts, stride);
    reference::moe_gate(&dense, c.num_experts, c.top_k, c.bias.then_some(&bias[..]), &c.cfg)
}

