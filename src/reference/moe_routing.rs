//! CPU oracle for the MoE routing family. Selection (which experts, in which order) is computed
//! on the same f32 values as the kernel, by the same operations, so ids match bit for bit;
//! weights and combined rows are f64.

use crate::ops::moe_routing::{MoeAlignSizes, MoeGateConfig, MoeScoring};
use crate::DType;

/// The selection order's canonical value: NaN ranks as −∞ and −0 as +0.
pub fn canonical(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// Monotone map of canonical(v) to u32 (larger value, larger key; every key ≥ 0x007F_FFFF, the
/// key of −∞). The kernel's `order_key(canon(v))`.
pub fn selection_key(v: f32) -> u32 {
    let u = canonical(v).to_bits();
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// Inverse of [`selection_key`] (on canonical values).
pub fn key_value(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7FFF_FFFF } else { !k })
}

/// 1 / (1 + exp(−x)) in f32, bit-identical to the kernel's `det_sigmoid` (a few ulp from the
/// exact value; 0 for x below about −86.6, where 1 + exp(−x) ≥ 2¹²⁵).
pub fn sigmoid_f32(x: f32) -> f32 {
    det_recip(1.0 + super::det_exp(-x))
}

/// 1 / d for d ∈ [1, 2¹²⁵), else 0 (NaN stays NaN), bit-identical to the kernel's `det_recip`:
/// a seed from the bits (0x7EF311C3 − bits(d)) and three Newton steps y += y · (1 − d · y),
/// each two fmas. Within 1 ulp of the correctly rounded 1 / d (the test below).
pub fn det_recip(d: f32) -> f32 {
    let mut y = f32::from_bits(0x7EF3_11C3u32.wrapping_sub(d.to_bits()));
    for _ in 0..3 {
        y = y.mul_add((-d).mul_add(y, 1.0), y);
    }
    if d < f32::from_bits(0x7E00_0000) {
        y
    } else if d.is_nan() {
        d
    } else {
        0.0
    }
}

/// What [`moe_gate`] computes for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct GateOutput {
    /// `[num_tokens, top_k]`: local expert ids (−1 outside the local range), best first.
    pub topk_ids: Vec<i32>,
    /// `[num_tokens, top_k]`, f64.
    pub topk_weights: Vec<f64>,
    /// `[num_experts]`: choices per (global) expert in this batch.
    pub expert_counts: Vec<i32>,
}

/// One token's f32 selection values, exactly as the kernel forms them: the logits (softmax is
/// monotonic), or `sigmoid(logit) + correction_bias`.
pub fn selection_values(logits: &[f32], scoring: MoeScoring, correction_bias: Option<&[f32]>) -> Vec<f32> {
    match scoring {
        MoeScoring::Softmax => logits.to_vec(),
        MoeScoring::Sigmoid => logits.iter().enumerate().map(|(e, &v)| sigmoid_f32(v) + correction_bias.map_or(0.0, |b| b[e])).collect(),
    }
}

/// The gate on dense logits `[num_tokens, num_experts]`; `top_k` experts per token.
/// Panics on a configuration that `MoeGateConfig::validate` rejects.
pub fn moe_gate<T: DType>(
    logits: &[T],
    num_experts: usize,
    top_k: usize,
    correction_bias: Option<&[f32]>,
    cfg: &MoeGateConfig,
) -> GateOutput {
    cfg.validate(num_experts, top_k).expect("reference::moe_gate: invalid configuration");
    assert_eq!(logits.len() % num_experts, 0, "logits must be [num_tokens, {num_experts}]");
    if let Some(b) = correction_bias {
        assert_eq!(b.len(), num_experts);
    }
    let num_tokens = logits.len() / num_experts;
    let range = cfg.local_range(num_experts);
    let (groups, epg) = (cfg.n_group, num_experts / cfg.n_group);
    let mut out = GateOutput {
        topk_ids: Vec::with_capacity(num_tokens * top_k),
        topk_weights: Vec::with_capacity(num_tokens * top_k),
        expert_counts: vec![0; num_experts],
    };
    for row in logits.chunks_exact(num_experts) {
        let x: Vec<f32> = row.iter().map(|v| v.to_f32()).collect();
        let sel = selection_values(&x, cfg.scoring, correction_bias);
        let key: Vec<u32> = sel.iter().map(|&v| selection_key(v)).collect();
        // Groups kept: by the sum of each group's top two values, ties to the lower group.
        let mut kept = vec![true; groups];
        if cfg.topk_group < groups {
            let mut gkeys: Vec<(u32, usize)> = (0..groups)
                .map(|g| {
                    let mut k: Vec<u32> = key[g * epg..(g + 1) * epg].to_vec();
                    k.sort_unstable_by(|a, b| b.cmp(a));
                    let score = if epg >= 2 { key_value(k[0]) + key_value(k[1]) } else { key_value(k[0]) };
                    (selection_key(score), g)
                })
                .collect();
            gkeys.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            kept = vec![false; groups];
            for &(_, g) in &gkeys[..cfg.topk_group] {
                kept[g] = true;
            }
        }
        let mut cand: Vec<usize> = (0..num_experts).filter(|&e| kept[e / epg]).collect();
        cand.sort_by(|&a, &b| key[b].cmp(&key[a]).then(a.cmp(&b)));
        let chosen = &cand[..top_k];
        let weights: Vec<f64> = match cfg.scoring {
            MoeScoring::Softmax => {
                let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let e: Vec<f64> = chosen.iter().map(|&i| (x[i] as f64 - m).exp()).collect();
                let denom: f64 = if cfg.renormalize {
                    e.iter().sum()
                } else {
                    x.iter().map(|&v| (v as f64 - m).exp()).sum()
                };
                e.iter().map(|v| v / denom).collect()
            }
            MoeScoring::Sigmoid => {
                let s: Vec<f64> = chosen.iter().map(|&i| 1.0 / (1.0 + (-(x[i] as f64)).exp())).collect();
                let denom = if cfg.renormalize { s.iter().sum::<f64>() + 1e-20 } else { 1.0 };
                s.iter().map(|v| v / denom).collect()
            }
        };
        for (&e, w) in chosen.iter().zip(weights) {
            out.topk_ids.push(if range.contains(&e) { (e - range.start) as i32 } else { -1 });
            out.topk_weights.push(w * cfg.routed_scaling_factor as f64);
            out.expert_counts[e] += 1;
        }
    }
    out
}

/// What [`moe_align`] computes (every output buffer, whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignOutput {
    /// `[sorted_len]`: each row's flat assignment index (token · top_k + k), in expert order;
    /// padding rows hold num_tokens · top_k.
    pub sorted_ids: Vec<i32>,
    /// `[blocks_len]`: the expert of each block of block_m rows; −1 past the padded total.
    pub block_expert_ids: Vec<i32>,
    /// `[num_experts + 1]`: where each expert's rows start; the last entry is the padded total.
    pub expert_offsets: Vec<i32>,
    /// `[num_experts]`: assignments per expert (unpadded).
    pub expert_counts: Vec<i32>,
    /// `[num_tokens, top_k]`: each assignment's row; −1 for ids outside [0, num_experts).
    pub token_positions: Vec<i32>,
}

/// The align on dense topk_ids `[num_tokens, top_k]`: stable counting sort by expert, each
/// expert padded to a multiple of block_m; ids outside [0, num_experts) ignored.
pub fn moe_align(topk_ids: &[i32], top_k: usize, num_experts: usize, block_m: usize) -> AlignOutput {
    assert!(top_k > 0 && topk_ids.len().is_multiple_of(top_k));
    let sizes = MoeAlignSizes::new(topk_ids.len() / top_k, top_k, num_experts, block_m).expect("reference::moe_align: sizes");
    let numel = sizes.num_assignments;
    let expert = |id: i32| usize::try_from(id).ok().filter(|&e| e < num_experts);
    let mut counts = vec![0i32; num_experts];
    for &id in topk_ids {
        if let Some(e) = expert(id) {
            counts[e] += 1;
        }
    }
    let mut offsets = vec![0i32; num_experts + 1];
    for e in 0..num_experts {
        offsets[e + 1] = offsets[e] + (counts[e] as usize).div_ceil(block_m) as i32 * block_m as i32;
    }
    let mut sorted = vec![numel as i32; sizes.sorted_len];
    let mut positions = vec![-1i32; numel];
    let mut cursor = offsets.clone();
    for (flat, &id) in topk_ids.iter().enumerate() {
        if let Some(e) = expert(id) {
            sorted[cursor[e] as usize] = flat as i32;
            positions[flat] = cursor[e];
            cursor[e] += 1;
        }
    }
    let total = offsets[num_experts] as usize;
    let blocks = (0..sizes.blocks_len)
        .map(|b| {
            let row = b * block_m;
            if row >= total {
                -1
            } else {
                (0..num_experts).find(|&e| offsets[e] as usize <= row && row < offsets[e + 1] as usize).unwrap() as i32
            }
        })
        .collect();
    AlignOutput { sorted_ids: sorted, block_expert_ids: blocks, expert_offsets: offsets, expert_counts: counts, token_positions: positions }
}

/// The gather, in place on `out` (`[rows, hidden]`, dense): what the kernel writes, and
/// nothing else. hidden_states `[num_tokens, hidden]`, token_positions `[num_tokens, top_k]`.
pub fn moe_gather<T: DType>(
    hidden_states: &[T],
    hidden: usize,
    token_positions: &[i32],
    top_k: usize,
    expert_offsets: &[i32],
    expert_counts: &[i32],
    out: &mut [T],
) {
    let rows = out.len() / hidden;
    for (t, pos) in token_positions.chunks_exact(top_k).enumerate() {
        for &p in pos {
            if p >= 0 && (p as usize) < rows {
                out[p as usize * hidden..][..hidden].copy_from_slice(&hidden_states[t * hidden..][..hidden]);
            }
        }
    }
    for (e, &count) in expert_counts.iter().enumerate() {
        let start = (expert_offsets[e] as i64 + count as i64).max(0) as usize;
        let end = (expert_offsets[e + 1] as i64).clamp(0, rows as i64) as usize;
        for r in start..end {
            out[r * hidden..][..hidden].fill(T::default());
        }
    }
}

/// The combine in f64: `[num_tokens, hidden]`, `out[t] = Σ_k w[t, k] · expert_out[pos[t, k]]`
/// over positions inside [0, rows).
pub fn moe_combine<T: DType>(expert_out: &[T], hidden: usize, token_positions: &[i32], topk_weights: &[f32], top_k: usize) -> Vec<f64> {
    let rows = expert_out.len() / hidden;
    let num_tokens = token_positions.len() / top_k;
    let mut out = vec![0.0; num_tokens * hidden];
    for t in 0..num_tokens {
        for k in 0..top_k {
            let p = token_positions[t * top_k + k];
            if p < 0 || p as usize >= rows {
                continue;
            }
            let w = topk_weights[t * top_k + k] as f64;
            for (o, x) in out[t * hidden..][..hidden].iter_mut().zip(&expert_out[p as usize * hidden..][..hidden]) {
                *o += w * x.to_f64();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use half::bf16;

    #[test]
    fn selection_keys_order_numbers_and_canonicalise_nan_and_zero() {
        let vals = [f32::NEG_INFINITY, -1e30, -1.0, -1e-40, 0.0, 1e-40, 1.0, 1e30, f32::INFINITY];
        for w in vals.windows(2) {
            assert!(selection_key(w[0]) < selection_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(selection_key(-0.0), selection_key(0.0));
        assert_eq!(selection_key(f32::NAN), selection_key(f32::NEG_INFINITY));
        assert_eq!(selection_key(-f32::NAN), selection_key(f32::NEG_INFINITY));
        assert_eq!(selection_key(f32::NEG_INFINITY), 0x007F_FFFF); // 0 stays free ("no candidate")
        for v in vals {
            assert_eq!(key_value(selection_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn deterministic_sigmoid_is_accurate_and_monotone() {
        let mut worst = 0.0f64;
        let mut prev = 0.0f32;
        // Below about −86.64 (1 + e^−x ≥ 2¹²⁵) the value is 0, less than 2.5e−38 from the exact one.
        assert_eq!(sigmoid_f32(-86.65), 0.0);
        assert!((1.0 / (1.0 + 86.65f64.exp())) < 2.5e-38);
        let mut x = -86.5f32;
        while x <= 88.0 {
            let s = sigmoid_f32(x);
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let ulp = (exact as f32).abs().max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64;
            worst = worst.max((s as f64 - exact).abs() / ulp);
            assert!(s >= prev, "not monotone at {x}");
            prev = s;
            x += 1.0 / 1024.0;
        }
        assert!(worst <= 4.0, "sigmoid_f32 is {worst} ulp off");
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            let x = rng.uniform(-30.0, 30.0) as f32;
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid_f32(x) as f64 - exact).abs() <= 4.0 * exact * f32::EPSILON as f64, "{x}");
        }
        assert_eq!(sigmoid_f32(0.0), 0.5);
        assert_eq!(sigmoid_f32(100.0), 1.0);
        assert_eq!(sigmoid_f32(-1000.0), 0.0);
        assert!(sigmoid_f32(-86.0) > 0.0);
        assert!(sigmoid_f32(f32::NAN).is_nan());
    }

    /// det_recip within 1 ulp of the correctly rounded 1 / d: every significand in [1, 2), then
    /// every 4099th float up to 2¹²⁵; 0 from there on (0x7E00_0000 = 2¹²⁵).
    #[test]
    fn det_recip_is_within_one_ulp() {
        let mut u = 1.0f32.to_bits();
        while u < 0x7E00_0000 {
            let d = f32::from_bits(u);
            let want = (1.0 / d as f64) as f32;
            let ulps = (det_recip(d).to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 1, "1/{d}: {} vs {want}", det_recip(d));
            u += if u < 2.0f32.to_bits() { 1 } else { 4099 };
        }
        assert_eq!(det_recip(f32::from_bits(0x7E00_0000)), 0.0);
        assert_eq!(det_recip(1.0), 1.0);
        assert!(det_recip(f32::NAN).is_nan());
    }

    fn softmax_rows(n: usize, tokens: usize, seed: u64) -> Vec<f32> {
        Rng::new(seed).vec(tokens * n, -3.0, 3.0)
    }

    #[test]
    fn softmax_gate_matches_a_full_softmax() {
        let (n, k) = (60, 6);
        let x = softmax_rows(n, 5, 1);
        let plain = moe_gate(&x, n, k, None, &MoeGateConfig::softmax_topk(false));
        let renorm = moe_gate(&x, n, k, None, &MoeGateConfig::softmax_topk(true));
        assert_eq!(plain.topk_ids, renorm.topk_ids);
        for (t, row) in x.chunks(n).enumerate() {
            let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let ids = &plain.topk_ids[t * k..][..k];
            assert_eq!(ids, order[..k].iter().map(|&e| e as i32).collect::<Vec<_>>().as_slice());
            let w = &plain.topk_weights[t * k..][..k];
            for (j, &e) in ids.iter().enumerate() {
                assert!((w[j] - (row[e as usize] as f64).exp() / z).abs() < 1e-12);
            }
            let s: f64 = renorm.topk_weights[t * k..][..k].iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        assert_eq!(MoeGateConfig::topk_softmax(), MoeGateConfig::softmax_topk(true));
        assert_eq!(plain.expert_counts.iter().sum::<i32>(), 5 * k as i32);
    }

    #[test]
    fn ties_go_to_the_lowest_expert_and_top_k_can_take_every_expert() {
        // All equal: experts 0, 1, 2, ... in order; -0 and +0 tie.
        let x = vec![bf16::from_f32(0.5); 2 * 16];
        let g = moe_gate(&x, 16, 16, None, &MoeGateConfig::softmax_topk(false));
        assert_eq!(&g.topk_ids[..16], (0..16).collect::<Vec<i32>>().as_slice());
        assert!(g.topk_weights.iter().all(|w| (w - 1.0 / 16.0).abs() < 1e-15));
        let z = [0.0f32, -0.0, 1.0, -0.0];
        assert_eq!(moe_gate(&z, 4, 4, None, &MoeGateConfig::softmax_topk(true)).topk_ids, vec![2, 0, 1, 3]);
        // NaN ranks like -inf, after every number, ties among them by index.
        let n = [f32::NAN, -1.0, f32::NEG_INFINITY, 2.0];
        assert_eq!(moe_gate(&n, 4, 4, None, &MoeGateConfig::softmax_topk(true)).topk_ids, vec![3, 1, 0, 2]);
    }

    #[test]
    fn expert_range_maps_to_local_ids_and_keeps_weights() {
        let (n, k) = (64, 8);
        let x = softmax_rows(n, 7, 2);
        let full = moe_gate(&x, n, k, None, &MoeGateConfig::softmax_topk(true));
        let ep = moe_gate(&x, n, k, None, &MoeGateConfig::softmax_topk(true).with_local_experts(16..32));
        assert_eq!(full.topk_weights, ep.topk_weights);
        assert_eq!(full.expert_counts, ep.expert_counts);
        for (&g, &l) in full.topk_ids.iter().zip(&ep.topk_ids) {
            assert_eq!(l, if (16..32).contains(&g) { g - 16 } else { -1 });
        }
    }

    /// DeepSeek-V3 routing written the way transformers 5 does it (mask other groups to −∞,
    /// sort; transformers 4 masked them to 0.0), on the same f32 scores: an independent
    /// formulation of the grouped selection.
    fn naive_grouped(x: &[f32], bias: &[f32], n_group: usize, topk_group: usize, top_k: usize) -> Vec<i32> {
        let n = bias.len();
        let epg = n / n_group;
        let mut ids = Vec::new();
        for row in x.chunks(n) {
            let s: Vec<f32> = row.iter().zip(bias).map(|(&v, &b)| canonical(sigmoid_f32(v) + b)).collect();
            let gs: Vec<f32> = (0..n_group)
                .map(|g| {
                    let mut v = s[g * epg..(g + 1) * epg].to_vec();
                    v.sort_by(|a, b| b.total_cmp(a));
                    canonical(v[0] + v[1])
                })
                .collect();
            let mut go: Vec<usize> = (0..n_group).collect();
            go.sort_by(|&a, &b| gs[b].total_cmp(&gs[a]).then(a.cmp(&b)));
            let masked: Vec<f32> =
                (0..n).map(|e| if go[..topk_group].contains(&(e / epg)) { s[e] } else { f32::NEG_INFINITY }).collect();
            let mut eo: Vec<usize> = (0..n).filter(|&e| masked[e] != f32::NEG_INFINITY).collect();
            eo.sort_by(|&a, &b| masked[b].total_cmp(&masked[a]).then(a.cmp(&b)));
            ids.extend(eo[..top_k].iter().map(|&e| e as i32));
        }
        ids
    }

    #[test]
    fn grouped_selection_matches_the_hf_formulation() {
        for &(n, groups, kept, k) in &[(256usize, 8usize, 4usize, 8usize), (160, 5, 2, 6), (60, 4, 3, 16), (384, 12, 5, 12)] {
            let mut rng = Rng::new(n as u64);
            let x: Vec<f32> = rng.vec(9 * n, -4.0, 4.0);
            let bias: Vec<f32> = rng.vec(n, -0.3, 0.3);
            let cfg = MoeGateConfig::deepseek_v3(groups, kept, 2.5);
            let g = moe_gate(&x, n, k, Some(&bias), &cfg);
            assert_eq!(g.topk_ids, naive_grouped(&x, &bias, groups, kept, k), "{n} experts, {groups} groups");
            for (t, row) in x.chunks(n).enumerate() {
                let ids = &g.topk_ids[t * k..][..k];
                let sig: Vec<f64> = ids.iter().map(|&e| 1.0 / (1.0 + (-(row[e as usize] as f64)).exp())).collect();
                let sum: f64 = sig.iter().sum();
                for (j, s) in sig.iter().enumerate() {
                    assert!((g.topk_weights[t * k + j] - 2.5 * s / (sum + 1e-20)).abs() < 1e-12);
                }
                // At most `kept` groups are used.
                let mut used: Vec<usize> = ids.iter().map(|&e| e as usize / (n / groups)).collect();
                used.sort_unstable();
                used.dedup();
                assert!(used.len() <= kept);
            }
        }
        // Groups of one expert: the group score is that expert's value; kept groups = experts.
        let x: Vec<f32> = Rng::new(5).vec(3 * 8, -2.0, 2.0);
        let a = moe_gate(&x, 8, 3, None, &MoeGateConfig::deepseek_v3(8, 3, 1.0));
        let b = moe_gate(&x, 8, 3, None, &MoeGateConfig::sigmoid(true));
        assert_eq!(a, b);
    }

    #[test]
    fn bias_steers_selection_but_not_weights() {
        let x = [0.0f32, 0.1, 0.2, 0.3];
        let bias = [1.0f32, 0.0, 0.0, 0.0];
        let g = moe_gate(&x, 4, 2, Some(&bias), &MoeGateConfig::sigmoid(false));
        assert_eq!(g.topk_ids, vec![0, 3]);
        assert!((g.topk_weights[0] - 0.5).abs() < 1e-15); // sigmoid(0), unbiased
    }

    #[test]
    fn dropped_groups_stay_dropped_when_biased_scores_are_negative() {
        // Group 0 (biased scores −0.5) is kept over group 1 (−0.7). transformers 5, vLLM and
        // DeepSeek's code mask the dropped group to −∞: experts 0 and 1. transformers 4's
        // `masked_fill(…, 0.0)` would rank the dropped experts (0.0) above them and pick 4 and 5.
        let x = [0.0f32; 8];
        let bias = [-1.0f32, -1.0, -1.0, -1.0, -1.2, -1.2, -1.2, -1.2];
        let g = moe_gate(&x, 8, 2, Some(&bias), &MoeGateConfig::deepseek_v3(2, 1, 1.0));
        assert_eq!(g.topk_ids, vec![0, 1]);
        assert_eq!(naive_grouped(&x, &bias, 2, 1, 2), vec![0, 1]);
    }

    fn check_align_invariants(ids: &[i32], top_k: usize, n: usize, bm: usize) {
        let a = moe_align(ids, top_k, n, bm);
        let numel = ids.len() as i32;
        let total = a.expert_offsets[n];
        for e in 0..n {
            let (start, end) = (a.expert_offsets[e], a.expert_offsets[e + 1]);
            assert_eq!(start % bm as i32, 0);
            assert_eq!(end - start, (a.expert_counts[e] as usize).div_ceil(bm) as i32 * bm as i32);
            let seg = &a.sorted_ids[start as usize..end as usize];
            let (real, pad) = seg.split_at(a.expert_counts[e] as usize);
            assert!(real.windows(2).all(|w| w[0] < w[1]), "stable order");
            assert!(real.iter().all(|&f| ids[f as usize] == e as i32));
            assert!(pad.iter().all(|&f| f == numel));
            for b in start as usize / bm..end as usize / bm {
                assert_eq!(a.block_expert_ids[b], e as i32);
            }
        }
        assert!(a.sorted_ids[total as usize..].iter().all(|&f| f == numel));
        assert!(a.block_expert_ids[total as usize / bm..].iter().all(|&e| e == -1));
        for (flat, &p) in a.token_positions.iter().enumerate() {
            if (0..n as i32).contains(&ids[flat]) {
                assert_eq!(a.sorted_ids[p as usize], flat as i32);
            } else {
                assert_eq!(p, -1);
            }
        }
        let valid = ids.iter().filter(|&&i| (0..n as i32).contains(&i)).count();
        assert_eq!(a.expert_counts.iter().sum::<i32>() as usize, valid);
    }

    #[test]
    fn align_is_a_stable_padded_counting_sort() {
        let mut rng = Rng::new(11);
        for &(tokens, k, n, bm) in &[(100usize, 8usize, 64usize, 16usize), (7, 2, 5, 1), (1, 1, 512, 128), (0, 4, 8, 16), (333, 6, 60, 64)] {
            let ids: Vec<i32> = (0..tokens * k).map(|_| (rng.next_u64() % n as u64) as i32).collect();
            check_align_invariants(&ids, k, n, bm);
        }
        // All to one expert; invalid ids (EP sentinels, garbage) ignored.
        check_align_invariants(&vec![3; 40 * 4], 4, 8, 16);
        let ids: Vec<i32> = (0..200).map(|i| [-1, 0, 7, 8, i32::MAX, i32::MIN, 2][i % 7]).collect();
        check_align_invariants(&ids, 5, 8, 4);
        let a = moe_align(&[1, 0, 1, 1], 2, 2, 4);
        assert_eq!(a.sorted_ids, vec![1, 4, 4, 4, 0, 2, 3, 4, 4, 4]);
        assert_eq!(a.expert_offsets, vec![0, 4, 8]);
        assert_eq!(a.block_expert_ids, vec![0, 1, -1]);
        assert_eq!(a.token_positions, vec![4, 0, 5, 6]);
    }

    #[test]
    fn gather_then_combine_restores_the_input() {
        let (tokens, hidden, n, bm) = (37, 24, 16, 8);
        for k in [1usize, 2, 3, 6, 16] {
            let mut rng = Rng::new(k as u64);
            let x: Vec<bf16> = rng.vec(tokens * hidden, -3.0, 3.0);
            let logits: Vec<f32> = rng.vec(tokens * n, -1.0, 1.0);
            let gate = moe_gate(&logits, n, k, None, &MoeGateConfig::softmax_topk(true));
            let a = moe_align(&gate.topk_ids, k, n, bm);
            let mut permuted = vec![bf16::NAN; a.sorted_ids.len() * hidden];
            moe_gather(&x, hidden, &a.token_positions, k, &a.expert_offsets, &a.expert_counts, &mut permuted);
            let total = a.expert_offsets[n] as usize;
            // Padding rows are zero, rows past the total untouched.
            for (r, &f) in a.sorted_ids.iter().enumerate() {
                let row = &permuted[r * hidden..][..hidden];
                if r >= total {
                    assert!(row.iter().all(|v| v.is_nan()));
                } else if f as usize == tokens * k {
                    assert!(row.iter().all(|v| v.to_f32() == 0.0));
                } else {
                    assert_eq!(row, &x[f as usize / k * hidden..][..hidden]);
                }
            }
            let back = moe_combine(&permuted, hidden, &a.token_positions, &crate::check::moe_routing::dyadic_weights(tokens, k), k);
            assert!(back.iter().zip(&x).all(|(b, v)| *b == v.to_f64()), "k = {k}");
        }
    }

    #[test]
    fn combine_skips_remote_and_out_of_range_positions() {
        let rows = [1.0f32, 2.0, 3.0, 4.0]; // 4 rows of hidden 1
        let out = moe_combine(&rows, 1, &[0, -1, 3, 9], &[0.5, 7.0, 2.0, 7.0], 2);
        assert_eq!(out, vec![0.5, 8.0]);
    }
}
