//! CPU-only tests of the test machinery and of the gate's algorithm (no GPU needed).

use crate::cases::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use warpcore::check::moe_routing::{align_ids, gate_inputs, GateCase};
use warpcore::ops::moe_routing::{MoeAlignSizes, MoeGateConfig};
use warpcore::reference::moe_routing as reference;

/// Without a GPU: every case list and every strategy yields valid configurations whose
/// references run, so the GPU session spends its time on the kernels.
#[test]
fn cases_are_valid_on_the_cpu() {
    for c in expert_count_cases().iter().chain(&top_k_cases()).chain(&cancelling_bias_cases()).chain(&near_selection_cases()) {
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


/// approx_sigmoid as the tests assume it at its worst: the f64 sigmoid moved by a pseudo-random
/// amount (a hash of x) of up to 2^-18, the pre-filter's budget (the GPU's MUFU version is
/// within 2^-20 of `sigmoid_f32`; the host emulation moves it the same way).
fn approx_sigmoid(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let mut h = x.to_bits().wrapping_mul(0x9E37_79B1);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85EB_CA77);
    h ^= h >> 13;
    let s = 1.0 / (1.0 + (-f64::from(x)).exp());
    let d = (f64::from(h) / 4_294_967_295.0 * 2.0 - 1.0) * 2f64.powi(-18);
    (s + d).clamp(0.0, 1.0) as f32
}

/// What the pre-filter did with a row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prefilter {
    /// Not built for the shape, or fell back to the exact selection.
    NotTaken,
    /// Chose with this many candidates; `exact_rounds`: the packed rounds saw a near tie.
    Chose { candidates: usize, exact_rounds: bool },
}

/// The gate's pre-filter (gate_kernel, `if (prefilter)`), expert by expert: approximate
/// selection values, groups by approximate top-two sums with the 8 tol margin, the threshold
/// T − 2 tol, at most 32 candidates, exact keys for them, packed rounds with the near-tie check.
fn model_prefilter(x: &[f32], bias: Option<&[f32]>, n: usize, top_k: usize, cfg: &MoeGateConfig, vpl: usize, id_mask: u32) -> (Option<Vec<usize>>, Prefilter) {
    let groups = cfg.n_group;
    let epg = n / groups;
    let sigmoid = cfg.scoring == warpcore::ops::moe_routing::MoeScoring::Sigmoid;
    if !(sigmoid && cfg.topk_group < groups && top_k <= 2 * cfg.topk_group && epg >= 2 && vpl <= 16) {
        return (None, Prefilter::NotTaken);
    }
    let b = |e: usize| bias.map_or(0.0, |b| b[e]);
    let ak: Vec<f32> = (0..n).map(|e| { let k = approx_sigmoid(x[e]) + b(e); if k.is_nan() { f32::NEG_INFINITY } else { k } }).collect();
    let babs = (0..n).map(|e| b(e).abs().to_bits()).max().unwrap();
    let tol = 2f32.powi(-17) * (f32::from_bits(babs) + 1.0);
    let top2: Vec<(f32, f32)> = (0..groups)
        .map(|g| {
            let mut v: Vec<f32> = ak[g * epg..(g + 1) * epg].to_vec();
            v.sort_by(|a, b| b.partial_cmp(a).unwrap());
            (v[0], v[1])
        })
        .collect();
    let mut gkey: Vec<u32> = top2.iter().enumerate().map(|(g, &(t1, t2))| (reference::selection_key(t1 + t2) & !31) | (31 - g as u32)).collect();
    let (mut chosen, mut last) = (vec![false; groups], 0u32);
    for _ in 0..cfg.topk_group {
        let (g, &m) = gkey.iter().enumerate().max_by_key(|&(_, &k)| k).unwrap();
        chosen[g] = true;
        last = m;
        gkey[g] = 0;
    }
    let best_left = *gkey.iter().max().unwrap();
    let tmin = (0..groups).filter(|&g| chosen[g]).map(|g| reference::selection_key(top2[g].1)).min().unwrap();
    let thr = reference::key_value(tmin) - 2.0 * tol;
    let cands: Vec<usize> = (0..n).filter(|&e| chosen[e / epg] && ak[e] >= thr).collect();
    if !(reference::key_value(last) - reference::key_value(best_left) > 8.0 * tol && cands.len() <= 32) {
        return (None, Prefilter::NotTaken);
    }
    let keys: Vec<(u32, usize)> = cands.iter().map(|&e| (reference::selection_key(reference::sigmoid_f32(x[e]) + b(e)), e)).collect();
    let mut pk: Vec<u32> = keys.iter().map(|&(k, e)| (k & !id_mask) | e as u32).collect();
    let mut res = Vec::new();
    for _ in 0..top_k {
        let m = *pk.iter().max().unwrap();
        res.push(m);
        pk.iter_mut().filter(|p| **p == m).for_each(|p| *p = 0);
    }
    res.push(pk.iter().copied().max().unwrap_or(0));
    let near_tie = res.windows(2).any(|w| (w[0] ^ w[1]) & !id_mask == 0);
    let ids = if near_tie {
        let mut k = keys.clone();
        k.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        k[..top_k].iter().map(|&(_, e)| e).collect()
    } else {
        res[..top_k].iter().map(|&m| (m & id_mask) as usize).collect()
    };
    (Some(ids), Prefilter::Chose { candidates: cands.len(), exact_rounds: near_tie })
}

/// A lane-by-lane model of cuda/moe_routing.cu's gate_kernel and its launch configuration
/// (group lanes P, VEC, VPL, the slot layout, the butterfly merge of group top-twos; the fast
/// path's packed keys — the key's low bits replaced by the expert id — with one reduce-max a
/// round, best-two promotion and rescans below the last win, and its near-tie check; the exact
/// path's reduce-max / reduce-min rounds). Returns the chosen experts in order and whether the
/// exact path ran. Not the kernel itself, but the same algorithm step for step: checked against
/// the reference on the CPU so that the GPU session tests the code, not the idea.
fn model_gate(x: &[f32], bias: Option<&[f32]>, n: usize, top_k: usize, cfg: &MoeGateConfig, vec_ok: bool) -> (Vec<usize>, bool, Prefilter) {
    let groups = cfg.n_group;
    let epg = n / groups;
    let mut shift = 0;
    while (groups << (shift + 1)) <= 32 {
        shift += 1;
    }
    let p_lanes = 1usize << shift;
    let vec = if vec_ok && epg.is_multiple_of(4) { 4 } else { 1 };
    let chunks = epg.div_ceil(p_lanes * vec);
    let vpl = (chunks * vec).next_power_of_two();
    assert!(vpl <= 32, "VPL {vpl} for {n} experts, {groups} groups");
    // id_mask as the launcher's: 2^b − 1 ≥ n − 1.
    let mut id_mask = 1u32;
    while id_mask + 1 < n as u32 {
        id_mask = id_mask << 1 | 1;
    }
    let (chose, pre) = model_prefilter(x, bias, n, top_k, cfg, vpl, id_mask);
    if let Some(ids) = chose {
        return (ids, false, pre);
    }
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
    // The fast path.
    let packed: Vec<Vec<u32>> = (0..32)
        .map(|lane| {
            let l = &lanes[lane];
            (0..vpl).map(|s| if l.key[s] != 0 { (l.key[s] & !id_mask) | expert_of(lane, s) as u32 } else { 0 }).collect()
        })
        .collect();
    let top2_below = |pk: &[u32], below: u32| {
        let (mut k1, mut k2) = (0u32, 0u32);
        for &k in pk {
            let k = if k < below { k } else { 0 };
            k2 = k2.max(k1.min(k));
            k1 = k1.max(k);
        }
        (k1, k2)
    };
    // Lanes of groups left out (k1 = 0 after the group phase) take no part.
    let mut fast: Vec<(u32, u32, bool)> =
        (0..32).map(|lane| if lanes[lane].k1 != 0 { let (a, b) = top2_below(&packed[lane], u32::MAX); (a, b, true) } else { (0, 0, true) }).collect();
    let mut res = Vec::new();
    for _ in 0..top_k {
        let m = fast.iter().map(|f| f.0).max().unwrap();
        res.push(m);
        let lane = (0..32).find(|&l| fast[l].0 == m).unwrap();
        let f = &mut fast[lane];
        if f.2 {
            *f = (f.1, f.1, false);
        } else {
            let (a, b) = top2_below(&packed[lane], m);
            *f = (a, b, true);
        }
    }
    res.push(fast.iter().map(|f| f.0).max().unwrap());
    if res.windows(2).all(|w| (w[0] ^ w[1]) & !id_mask != 0) {
        return (res[..top_k].iter().map(|&m| (m & id_mask) as usize).collect(), false, pre);
    }
    // The exact path.
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
    (out, true, pre)
}

#[test]
fn gate_algorithm_model_matches_the_reference() {
    let mut runner = TestRunner::deterministic();
    let (mut checked, mut exact_runs, mut prefiltered) = (0, 0, 0);
    for i in 0..3000 {
        let c = gate_case().new_tree(&mut runner).unwrap().current();
        let c = GateCase { num_tokens: c.num_tokens.min(4), cfg: MoeGateConfig { local_experts: None, ..c.cfg }, ..c };
        let (logits, bias) = gate_inputs::<f32>(&c);
        let stride = c.num_experts + c.logits_gap;
        let dense = warpcore::check::gather_rows(&logits, c.offset, c.num_tokens, c.num_experts, stride);
        let want = reference::moe_gate(&dense, c.num_experts, c.top_k, c.bias.then_some(&bias[..]), &c.cfg).topk_ids;
        for (t, row) in dense.chunks(c.num_experts).enumerate() {
            let (got, exact, pre) = model_gate(row, c.bias.then_some(&bias[..]), c.num_experts, c.top_k, &c.cfg, i % 2 == 0);
            exact_runs += exact as usize;
            prefiltered += (pre != Prefilter::NotTaken) as usize;
            let got: Vec<i32> = got.iter().map(|&e| e as i32).collect();
            assert_eq!(got, want[t * c.top_k..][..c.top_k], "case {c:?}, token {t}");
            checked += 1;
        }
    }
    // Near ties of sigmoid + bias on every pre-filter shape: the tolerances at work.
    for c in near_selection_cases() {
        let (logits, bias) = gate_inputs::<f32>(&c);
        let want = reference::moe_gate(&logits, c.num_experts, c.top_k, c.bias.then_some(&bias[..]), &c.cfg).topk_ids;
        for (t, row) in logits.chunks(c.num_experts).enumerate() {
            let (got, _, pre) = model_gate(row, c.bias.then_some(&bias[..]), c.num_experts, c.top_k, &c.cfg, true);
            prefiltered += (pre != Prefilter::NotTaken) as usize;
            assert_eq!(got.iter().map(|&e| e as i32).collect::<Vec<_>>(), want[t * c.top_k..][..c.top_k], "case {c:?}, token {t}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
    // Both paths ran (the cases have heavy ties as well as random rows).
    assert!(exact_runs > 0 && exact_runs < checked, "exact path in {exact_runs} of {checked} rows");
    assert!(prefiltered > 100, "the pre-filter chose in {prefiltered} of {checked} rows");
}

/// How often the fast paths fall back on random rows, for the two bar shapes (docs/moe_routing.md
/// records the rates): f32 softmax logits N(0, 1) over 256 experts, top 8 (the packed rounds'
/// exact path); DeepSeek-V3's sigmoid + bias, 256 experts in 8 groups, top 4 groups, top 8
/// (logits N(0, 2), bias uniform in ±0.1): the pre-filter's fallback to the full selection, its
/// candidates (mean, largest) and its exact rounds. bf16 logits never fall back without exact ties.
#[test]
fn the_exact_path_is_rare_on_random_rows() {
    let mut rng = warpcore::check::Rng::new(11);
    let normal = |rng: &mut warpcore::check::Rng, sd: f64| {
        let (u, v) = (rng.uniform(1e-12, 1.0), rng.uniform(0.0, 1.0));
        (sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let softmax = MoeGateConfig::softmax_topk(true);
    let grouped = MoeGateConfig::deepseek_v3(8, 4, 2.5);
    let bias: Vec<f32> = (0..256).map(|_| rng.uniform(-0.1, 0.1) as f32).collect();
    let rows = 4000;
    let mut rates = Vec::new();
    let (mut fallback, mut exact_rounds, mut cand_sum, mut cand_max) = (0, 0, 0, 0);
    for (cfg, sd, b) in [(&softmax, 1.0, None), (&grouped, 2.0, Some(&bias[..]))] {
        let mut exact = 0;
        for _ in 0..rows {
            let x: Vec<f32> = (0..256).map(|_| normal(&mut rng, sd)).collect();
            let (got, ran_exact, pre) = model_gate(&x, b, 256, 8, cfg, true);
            let want = reference::moe_gate(&x, 256, 8, b, cfg).topk_ids;
            assert_eq!(got.iter().map(|&e| e as i32).collect::<Vec<_>>(), want);
            exact += ran_exact as usize;
            if b.is_some() {
                match pre {
                    Prefilter::NotTaken => fallback += 1,
                    Prefilter::Chose { candidates, exact_rounds: e } => {
                        exact_rounds += e as usize;
                        cand_sum += candidates;
                        cand_max = cand_max.max(candidates);
                    }
                }
            }
        }
        rates.push(exact as f64 / rows as f64);
    }
    let chose = rows - fallback;
    eprintln!(
        "softmax f32: exact path {:.2} %; DeepSeek-V3 grouped: pre-filter fallback {:.2} %, candidates {:.1} on average (at most {cand_max}), exact rounds {:.2} %, old exact path {:.2} %",
        100.0 * rates[0],
        100.0 * fallback as f64 / rows as f64,
        cand_sum as f64 / chose as f64,
        100.0 * exact_rounds as f64 / chose as f64,
        100.0 * rates[1]
    );
    assert!(rates[0] < 0.02 && fallback * 20 < rows && exact_rounds * 20 < chose && cand_max <= 32, "{rates:?} {fallback} {exact_rounds}");
}
