//! MoE routing family: run each op on the GPU with poisoned outputs inside larger buffers and
//! compare with `reference::moe_routing` — ids, offsets and positions exactly, weights and
//! combined rows within tolerance, everything outside the written region untouched. Used by
//! tests/moe_routing.rs and `warpcore check`.

use super::{compare, compare_exact, compare_ints, gather_rows, outside_rows, tolerance, CheckResult, Rng};
use crate::ops::moe_routing::{self as ops, MoeAlignOutputs, MoeAlignSizes, MoeGateConfig, MoeScoring};
use crate::reference::moe_routing as reference;
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::DevicePtrMut;
use half::{bf16, f16};

mod permute;
pub use permute::*;

/// Poison for int32 outputs: a value no op writes.
pub const INT_POISON: i32 = i32::MIN;

/// How logits are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ties {
    /// Uniform in [−3, 3] (rounded to the dtype).
    None,
    /// From {−1, 0, 0.5, 1, 2}: most experts tie with others (bias from {0, 0.25}).
    Heavy,
    /// Every logit 0.25: the choice is experts 0, 1, 2, ... (in the kept groups).
    AllEqual,
    /// Sigmoid only: each expert's logit is one of two values a_e, b_e and its bias is
    /// 0.5 − sigmoid_f32(a_e), so every expert showing a_e scores 0.5 up to one rounding: the
    /// kernel's f32 sigmoid must equal the reference's bit for bit or ties break differently.
    BiasCancels,
    /// Sigmoid with groups: near ties of the selection values sigmoid + bias, where the gate's
    /// pre-filter must widen its candidate set (docs/moe_routing.md). Per token and group, 2–3
    /// experts score within 64 ulp of 0.5 + 0.1 · rank / n_group (on odd tokens two groups
    /// share a rank, so that their sums nearly tie), the others in [0.35, 0.45]; the bias is
    /// scaled into ±0.3 and the logits are solved from it. Meant for f32 logits.
    NearSelection,
}

/// One `moe_gate` run: logits rows at `num_experts + logits_gap` from `offset` (an odd offset
/// takes the scalar path), ids / weights rows at `top_k + out_gap`.
#[derive(Clone, Debug)]
pub struct GateCase {
    /// Rows of logits (tokens).
    pub num_tokens: usize,
    /// Logits per token.
    pub num_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Scoring, grouping and scaling of the gate.
    pub cfg: MoeGateConfig,
    /// Pass a correction bias (sigmoid scoring).
    pub bias: bool,
    /// Pass expert_counts (prefilled with random counts that must be added to).
    pub counts: bool,
    /// How the logits are drawn.
    pub ties: Ties,
    /// Elements after each logits row before the next.
    pub logits_gap: usize,
    /// Elements before the first logits row.
    pub offset: usize,
    /// Elements after each topk_ids / topk_weights row before the next.
    pub out_gap: usize,
    /// Seed of the logits, bias and counts.
    pub seed: u64,
}

impl GateCase {
    /// Dense, random logits, no bias, no counts.
    pub fn new(num_tokens: usize, num_experts: usize, top_k: usize, cfg: MoeGateConfig, seed: u64) -> Self {
        Self { num_tokens, num_experts, top_k, cfg, bias: false, counts: false, ties: Ties::None, logits_gap: 0, offset: 0, out_gap: 0, seed }
    }
    fn shape(&self) -> String {
        let c = &self.cfg;
        let mode = match c.scoring {
            MoeScoring::Softmax => "softmax".to_string(),
            MoeScoring::Sigmoid => format!("sigmoid g{}/{}", c.n_group, c.topk_group),
        };
        format!(
            "[{}, {}] top{} {}{}{}{}{} {:?} gaps {}/{} offset {}",
            self.num_tokens,
            self.num_experts,
            self.top_k,
            mode,
            if c.renormalize { " renorm" } else { "" },
            if self.bias { " bias" } else { "" },
            if self.counts { " counts" } else { "" },
            c.local_experts.as_ref().map_or(String::new(), |r| format!(" local {r:?}")),
            self.ties,
            self.logits_gap,
            self.out_gap,
            self.offset
        )
    }
}

/// Logits (rows of `num_experts + logits_gap` from `offset`) and the f32 bias for a gate case.
pub fn gate_inputs<T: DType>(c: &GateCase) -> (Vec<T>, Vec<f32>) {
    let mut rng = Rng::new(c.seed);
    let n = c.num_experts;
    let stride = n + c.logits_gap;
    let len = (c.offset + c.num_tokens * stride).max(1);
    let pick = |rng: &mut Rng, set: &[f64]| set[(rng.next_u64() % set.len() as u64) as usize];
    let (mut logits, mut bias): (Vec<T>, Vec<f32>) = (rng.vec(len, -3.0, 3.0), rng.vec(n, -0.5, 0.5));
    match c.ties {
        Ties::None => {}
        Ties::Heavy => {
            logits.iter_mut().for_each(|v| *v = T::from_f64(pick(&mut rng, &[-1.0, 0.0, 0.5, 1.0, 2.0])));
            bias.iter_mut().for_each(|b| *b = pick(&mut rng, &[0.0, 0.25]) as f32);
        }
        Ties::AllEqual => logits.iter_mut().for_each(|v| *v = T::from_f64(0.25)),
        Ties::BiasCancels => {
            let a: Vec<T> = rng.vec(n, -3.0, 3.0);
            let b: Vec<T> = rng.vec(n, -3.0, 3.0);
            for t in 0..c.num_tokens {
                for e in 0..n {
                    logits[c.offset + t * stride + e] = if !rng.next_u64().is_multiple_of(4) { a[e] } else { b[e] };
                }
            }
            for e in 0..n {
                bias[e] = 0.5 - reference::sigmoid_f32(a[e].to_f32());
            }
        }
        Ties::NearSelection => {
            let below = |rng: &mut Rng, m: usize| (rng.next_u64() % m as u64) as usize;
            let shuffle = |rng: &mut Rng, v: &mut Vec<usize>| {
                for i in (1..v.len()).rev() {
                    let j = below(rng, i + 1);
                    v.swap(i, j);
                }
            };
            bias.iter_mut().for_each(|b| *b *= 0.6);
            let groups = c.cfg.n_group;
            let epg = n / groups;
            for t in 0..c.num_tokens {
                let mut rank: Vec<usize> = (0..groups).collect();
                shuffle(&mut rng, &mut rank);
                if groups > 1 && t % 2 == 1 {
                    let (i, j) = (below(&mut rng, groups), below(&mut rng, groups));
                    rank[i] = rank[j];
                }
                for (g, &r) in rank.iter().enumerate() {
                    let mut members: Vec<usize> = (g * epg..(g + 1) * epg).collect();
                    shuffle(&mut rng, &mut members);
                    let cluster = epg.min(2 + below(&mut rng, 2));
                    for (i, &e) in members.iter().enumerate() {
                        let target = if i < cluster {
                            (0.5 + 0.1 * r as f32 / groups as f32) + below(&mut rng, 64) as f32 * 2f32.powi(-24)
                        } else {
                            rng.uniform(0.35, 0.45) as f32
                        };
                        let y = f64::from(target) - f64::from(bias[e]);
                        logits[c.offset + t * stride + e] = T::from_f64((y / (1.0 - y)).ln());
                    }
                }
            }
        }
    }
    (logits, bias)
}

/// The largest |approx_sigmoid(x) − det_sigmoid(x)| on the device (cuda/moe_routing.cu; the
/// gate's pre-filter assumes ≤ 2⁻²⁰), over x = ±(the f32 with bits i · step), i < count
/// (`(count − 1) · step` must fit in 32 bits). A test hook, not an inference op.
pub fn approx_sigmoid_error(dev: &Device, step: u32, count: u32) -> Result<f32> {
    let mut worst = dev.zeros::<f32>(1)?;
    {
        let (ptr, _guard) = worst.device_ptr_mut(dev.stream());
        // SAFETY: one f32 of device memory, zeroed; the launcher checks step and count.
        crate::ops::launch("moe_sigmoid_error", dev, |s| unsafe { crate::ffi::wc_moe_sigmoid_error(ptr as *mut f32, step, count, s) })?;
    }
    Ok(dev.download(&worst)?[0])
}

/// `moe_gate` against the reference.
pub fn check_moe_gate<T: DType>(dev: &Device, case: &GateCase) -> Result<CheckResult> {
    let c = case;
    let (n, k) = (c.num_experts, c.top_k);
    let (stride, ostride) = (n + c.logits_gap, k + c.out_gap);
    let (logits_host, bias_host) = gate_inputs::<T>(c);
    let mut rng = Rng::new(c.seed ^ 0xC0FFEE);
    let counts_host: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 100) as i32).collect();
    let out_len = c.num_tokens * ostride;
    let ids_host = vec![INT_POISON; out_len.max(1)];
    let w_host = vec![f32::NAN; out_len.max(1)];
    let logits = dev.upload(&logits_host)?;
    let bias = dev.upload(&bias_host)?;
    let mut ids = dev.upload(&ids_host)?;
    let mut weights = dev.upload(&w_host)?;
    let mut counts = dev.upload(&counts_host)?;
    let bias_view = TensorView::contiguous(bias.as_view(), [n])?;
    let mut counts_view = TensorViewMut::contiguous(counts.as_view_mut(), [n])?;
    ops::moe_gate(
        dev,
        &TensorView::new(logits.slice(c.offset..), [c.num_tokens, n], [stride, 1])?,
        c.bias.then_some(&bias_view),
        &mut TensorViewMut::new(ids.as_view_mut(), [c.num_tokens, k], [ostride, 1])?,
        &mut TensorViewMut::new(weights.as_view_mut(), [c.num_tokens, k], [ostride, 1])?,
        if c.counts { Some(&mut counts_view) } else { None },
        &c.cfg,
    )?;
    drop(counts_view);
    let (ids_got, w_got, counts_got) = (dev.download(&ids)?, dev.download(&weights)?, dev.download(&counts)?);
    let want = reference::moe_gate(
        &gather_rows(&logits_host, c.offset, c.num_tokens, n, stride),
        n,
        k,
        c.bias.then_some(&bias_host[..]),
        &c.cfg,
    );
    let counts_want: Vec<i32> =
        counts_host.iter().zip(&want.expert_counts).map(|(a, b)| if c.counts { a + b } else { *a }).collect();
    let region = |b: &[i32]| gather_rows(b, 0, c.num_tokens, k, ostride);
    let wregion = |b: &[f32]| gather_rows(b, 0, c.num_tokens, k, ostride);
    Ok(CheckResult {
        op: "moe_gate",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare_ints("topk_ids (exact)", &region(&ids_got), &want.topk_ids),
            compare("topk_weights", &wregion(&w_got), &want.topk_weights, tolerance::<f32>()),
            compare_ints("expert_counts (exact, accumulated)", &counts_got, &counts_want),
            compare_ints(
                "outside topk_ids (untouched)",
                &outside_rows(&ids_got, 0, c.num_tokens, k, ostride),
                &outside_rows(&ids_host, 0, c.num_tokens, k, ostride),
            ),
            compare_exact(
                "outside topk_weights (untouched)",
                &outside_rows(&w_got, 0, c.num_tokens, k, ostride),
                &outside_rows(&w_host, 0, c.num_tokens, k, ostride),
            ),
        ],
    })
}

/// Which expert ids an align case uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlignIds {
    /// Uniform over [0, num_experts).
    Random,
    /// Every assignment to expert num_experts / 2.
    SingleExpert,
    /// One in four outside [0, num_experts): −1 (expert parallelism), num_experts, i32::MAX, i32::MIN.
    WithInvalid,
}

/// One `moe_align` run; topk_ids rows at `top_k + ids_gap`.
#[derive(Clone, Copy, Debug)]
pub struct AlignCase {
    /// Rows of topk_ids (tokens).
    pub num_tokens: usize,
    /// Assignments per token.
    pub top_k: usize,
    /// Experts (valid ids are `0..num_experts`).
    pub num_experts: usize,
    /// Rows each expert's share is padded to a multiple of.
    pub block_m: usize,
    /// How the ids are drawn.
    pub ids: AlignIds,
    /// Elements after each topk_ids row before the next.
    pub ids_gap: usize,
    /// Seed of the ids.
    pub seed: u64,
}

/// Dense topk_ids for an align case (the reference's input).
pub fn align_ids(c: &AlignCase) -> Vec<i32> {
    let mut rng = Rng::new(c.seed);
    let n = c.num_experts as u64;
    (0..c.num_tokens * c.top_k)
        .map(|_| match c.ids {
            AlignIds::Random => (rng.next_u64() % n) as i32,
            AlignIds::SingleExpert => (n / 2) as i32,
            AlignIds::WithInvalid => match rng.next_u64() % 16 {
                0 => -1,
                1 => n as i32,
                2 => i32::MAX,
                3 => i32::MIN,
                _ => (rng.next_u64() % n) as i32,
            },
        })
        .collect()
}

/// The first `len` elements of `buf` as a 1-D output view.
fn prefix(buf: &mut cudarc::driver::CudaSlice<i32>, len: usize) -> Result<TensorViewMut<'_, i32, 1>> {
    TensorViewMut::contiguous(buf.slice_mut(..len), [len])
}

/// `moe_align` against the reference: every output exactly; 3 poison elements past each view.
pub fn check_moe_align(dev: &Device, case: &AlignCase) -> Result<CheckResult> {
    let c = *case;
    let sizes = MoeAlignSizes::new(c.num_tokens, c.top_k, c.num_experts, c.block_m)?;
    let dense = align_ids(&c);
    let stride = c.top_k + c.ids_gap;
    let mut ids_host = vec![7i32; (c.num_tokens * stride).max(1)];
    for t in 0..c.num_tokens {
        ids_host[t * stride..][..c.top_k].copy_from_slice(&dense[t * c.top_k..][..c.top_k]);
    }
    const EXTRA: usize = 3;
    let lens = [
        sizes.sorted_len,
        sizes.blocks_len,
        c.num_experts + 1,
        c.num_experts,
        sizes.num_assignments,
        sizes.workspace_len,
    ];
    let mut bufs = lens.iter().map(|&l| dev.upload(&vec![INT_POISON; l + EXTRA])).collect::<Result<Vec<_>>>()?;
    let ids = dev.upload(&ids_host)?;
    {
        let [b0, b1, b2, b3, b4, b5] = &mut bufs[..] else { unreachable!() };
        ops::moe_align(
            dev,
            &TensorView::new(ids.as_view(), [c.num_tokens, c.top_k], [stride, 1])?,
            c.num_experts,
            c.block_m,
            MoeAlignOutputs {
                sorted_ids: &mut prefix(b0, lens[0])?,
                block_expert_ids: &mut prefix(b1, lens[1])?,
                expert_offsets: &mut prefix(b2, lens[2])?,
                expert_counts: &mut prefix(b3, lens[3])?,
                token_positions: &mut TensorViewMut::contiguous(b4.slice_mut(..lens[4]), [c.num_tokens, c.top_k])?,
                workspace: &mut prefix(b5, lens[5])?,
            },
        )?;
    }
    let got = bufs.iter().map(|b| dev.download(b)).collect::<Result<Vec<_>>>()?;
    let want = reference::moe_align(&dense, c.top_k, c.num_experts, c.block_m);
    let mut comparisons = vec![
        compare_ints("sorted_ids", &got[0][..lens[0]], &want.sorted_ids),
        compare_ints("block_expert_ids", &got[1][..lens[1]], &want.block_expert_ids),
        compare_ints("expert_offsets", &got[2][..lens[2]], &want.expert_offsets),
        compare_ints("expert_counts", &got[3][..lens[3]], &want.expert_counts),
        compare_ints("token_positions", &got[4][..lens[4]], &want.token_positions),
    ];
    let tails: Vec<i32> = got.iter().zip(lens).flat_map(|(g, l)| g[l..].to_vec()).collect();
    comparisons.push(compare_ints("past each output (untouched)", &tails, &vec![INT_POISON; tails.len()]));
    Ok(CheckResult {
        op: "moe_align",
        dtype: "i32",
        shape: format!(
            "tokens {} top{} experts {} block_m {} {:?} gap {}",
            c.num_tokens, c.top_k, c.num_experts, c.block_m, c.ids, c.ids_gap
        ),
        comparisons,
    })
}

/// The cases `warpcore check` runs: every op, the shapes and awkward ones.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    let ds = MoeGateConfig::deepseek_v3(8, 4, 2.5);
    let gate_cases = [
        GateCase::new(1000, 256, 8, MoeGateConfig::softmax_topk(true), 1),
        GateCase { counts: true, ..GateCase::new(333, 256, 8, MoeGateConfig::softmax_topk(false), 2) },
        GateCase { bias: true, counts: true, ..GateCase::new(1000, 256, 8, ds.clone(), 3) },
        GateCase { bias: true, ties: Ties::BiasCancels, ..GateCase::new(200, 256, 8, ds.clone(), 4) },
        GateCase { bias: true, ties: Ties::NearSelection, ..GateCase::new(500, 256, 8, ds.clone(), 12) },
        GateCase { bias: true, ties: Ties::Heavy, ..GateCase::new(200, 160, 6, MoeGateConfig::deepseek_v3(5, 2, 1.0), 5) },
        GateCase { ties: Ties::Heavy, ..GateCase::new(129, 60, 4, MoeGateConfig::softmax_topk(true), 6) },
        GateCase { ties: Ties::AllEqual, ..GateCase::new(17, 8, 8, MoeGateConfig::softmax_topk(false), 7) },
        GateCase::new(64, 384, 16, MoeGateConfig::softmax_topk(true).with_local_experts(96..192), 8),
        GateCase { logits_gap: 3, offset: 1, out_gap: 2, ..GateCase::new(50, 512, 32, MoeGateConfig::sigmoid(true), 9) },
        GateCase::new(1, 128, 1, MoeGateConfig::softmax_topk(false), 10),
        GateCase::new(0, 64, 4, MoeGateConfig::softmax_topk(true), 11),
    ];
    for c in &gate_cases {
        out.push(check_moe_gate::<f32>(dev, c)?);
        out.push(check_moe_gate::<bf16>(dev, c)?);
    }
    out.push(check_moe_gate::<f16>(dev, &gate_cases[2])?);
    let align_cases = [
        AlignCase { num_tokens: 16384, top_k: 8, num_experts: 256, block_m: 64, ids: AlignIds::Random, ids_gap: 0, seed: 1 },
        AlignCase { num_tokens: 128, top_k: 8, num_experts: 256, block_m: 64, ids: AlignIds::Random, ids_gap: 0, seed: 2 },
        AlignCase { num_tokens: 4097, top_k: 6, num_experts: 60, block_m: 16, ids: AlignIds::WithInvalid, ids_gap: 2, seed: 3 },
        AlignCase { num_tokens: 3000, top_k: 4, num_experts: 8, block_m: 128, ids: AlignIds::SingleExpert, ids_gap: 0, seed: 4 },
        AlignCase { num_tokens: 0, top_k: 2, num_experts: 16, block_m: 32, ids: AlignIds::Random, ids_gap: 0, seed: 5 },
        AlignCase { num_tokens: 1, top_k: 1, num_experts: 512, block_m: 1, ids: AlignIds::Random, ids_gap: 0, seed: 6 },
    ];
    for c in &align_cases {
        out.push(check_moe_align(dev, c)?);
    }
    let permute = [
        PermuteCase { num_tokens: 300, top_k: 8, num_experts: 64, hidden: 1024, block_m: 64, local: None, row_gap: 0, hot_expert: None, seed: 1 },
        PermuteCase { num_tokens: 77, top_k: 6, num_experts: 60, hidden: 999, block_m: 16, local: Some(10..40), row_gap: 3, hot_expert: None, seed: 2 },
        PermuteCase { num_tokens: 1, top_k: 2, num_experts: 8, hidden: 7168, block_m: 128, local: None, row_gap: 8, hot_expert: Some(3), seed: 3 },
    ];
    for c in &permute {
        out.push(check_moe_gather::<bf16>(dev, c)?);
        out.push(check_moe_gather::<crate::F8E4M3>(dev, c)?);
        out.push(check_moe_combine::<bf16>(dev, c)?);
        out.push(check_moe_combine::<f32>(dev, c)?);
        out.push(check_round_trip::<bf16>(dev, &PermuteCase { local: None, row_gap: 0, ..c.clone() })?);
    }
    out.push(check_moe_combine::<f16>(dev, &permute[1])?);
    out.push(check_round_trip::<f32>(dev, &permute[0])?);
    Ok(out)
}

/// Without a GPU: the references' own invariants at the benchmark shapes (the align is a
/// stable padded sort; grouped selection keeps topk_group groups; gather → combine with exact
/// weights is the identity).
pub fn check_references() -> Vec<CheckResult> {
    let mut out = Vec::new();
    // Gate: renormalised weights sum to the scaling factor; at most topk_group groups used.
    let (t, n, k) = (512usize, 256usize, 8usize);
    let logits: Vec<bf16> = Rng::new(1).vec(t * n, -3.0, 3.0);
    let bias: Vec<f32> = Rng::new(2).vec(n, -0.5, 0.5);
    for cfg in [MoeGateConfig::softmax_topk(true), MoeGateConfig::deepseek_v3(8, 4, 2.5)] {
        let g = reference::moe_gate(&logits, n, k, (cfg.scoring == MoeScoring::Sigmoid).then_some(&bias[..]), &cfg);
        let sums: Vec<f32> = g.topk_weights.chunks(k).map(|w| w.iter().sum::<f64>() as f32).collect();
        // Groups used beyond topk_group (must be none).
        let excess: Vec<f32> = g
            .topk_ids
            .chunks(k)
            .map(|ids| {
                let mut gs: Vec<i32> = ids.iter().map(|&e| e / (n / cfg.n_group) as i32).collect();
                gs.sort_unstable();
                gs.dedup();
                gs.len().saturating_sub(cfg.topk_group) as f32
            })
            .collect();
        out.push(CheckResult {
            op: "reference::moe_gate",
            dtype: "bf16",
            shape: format!("[{t}, {n}] top{k} {:?} g{}/{}", cfg.scoring, cfg.n_group, cfg.topk_group),
            comparisons: vec![
                compare("renormalised weights sum to the scale", &sums, &vec![cfg.routed_scaling_factor as f64; t], tolerance::<f32>()),
                compare("groups used beyond topk_group", &excess, &vec![0.0; t], tolerance::<f32>()),
            ],
        });
    }
    // Align: every valid assignment exactly once, in flat order per expert, with its position.
    for c in [
        AlignCase { num_tokens: 16384, top_k: 8, num_experts: 256, block_m: 64, ids: AlignIds::Random, ids_gap: 0, seed: 1 },
        AlignCase { num_tokens: 4097, top_k: 6, num_experts: 60, block_m: 16, ids: AlignIds::WithInvalid, ids_gap: 0, seed: 3 },
    ] {
        let ids = align_ids(&c);
        let a = reference::moe_align(&ids, c.top_k, c.num_experts, c.block_m);
        let numel = ids.len() as i32;
        let placed: Vec<i32> = a.sorted_ids.iter().copied().filter(|&f| f != numel).collect();
        let want: Vec<i32> = {
            let mut v: Vec<(i32, i32)> =
                (0..numel).filter(|&f| (0..c.num_experts as i32).contains(&ids[f as usize])).map(|f| (ids[f as usize], f)).collect();
            v.sort();
            v.into_iter().map(|(_, f)| f).collect()
        };
        let inverse: Vec<i32> =
            a.token_positions.iter().map(|&p| if p < 0 { -1 } else { a.sorted_ids[p as usize] }).collect();
        let identity: Vec<i32> = (0..numel).map(|f| if a.token_positions[f as usize] < 0 { -1 } else { f }).collect();
        out.push(CheckResult {
            op: "reference::moe_align",
            dtype: "i32",
            shape: format!("tokens {} top{} experts {} block_m {} {:?}", c.num_tokens, c.top_k, c.num_experts, c.block_m, c.ids),
            comparisons: vec![
                compare_ints("sorted = stable sort by expert", &placed, &want),
                compare_ints("sorted_ids[token_positions] = identity", &inverse, &identity),
            ],
        });
    }
    // Gather → combine with dyadic weights restores bf16 rows exactly.
    let (t, n, k, h, bm) = (257usize, 64usize, 8usize, 128usize, 16usize);
    let x: Vec<bf16> = Rng::new(4).vec(t * h, -3.0, 3.0);
    let logits: Vec<f32> = Rng::new(5).vec(t * n, -1.0, 1.0);
    let g = reference::moe_gate(&logits, n, k, None, &MoeGateConfig::softmax_topk(true));
    let a = reference::moe_align(&g.topk_ids, k, n, bm);
    let mut permuted = vec![bf16::ZERO; a.sorted_ids.len() * h];
    reference::moe_gather(&x, h, &a.token_positions, k, &a.expert_offsets, &a.expert_counts, &mut permuted);
    let back = reference::moe_combine(&permuted, h, &a.token_positions, &dyadic_weights(t, k), k);
    let back_bf16: Vec<bf16> = back.iter().map(|&v| bf16::from_f64(v)).collect();
    out.push(CheckResult {
        op: "reference::moe_combine",
        dtype: "bf16",
        shape: format!("round trip tokens {t} top{k} experts {n} hidden {h}"),
        comparisons: vec![compare_exact("combine(gather(x)) = x", &back_bf16, &x)],
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_checks_pass() {
        for r in super::check_references() {
            assert!(r.passed(), "{r}");
        }
    }
}
