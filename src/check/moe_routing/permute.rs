//! The permutation half of the MoE checker: gather, combine and the gate → align → gather →
//! combine round trip.

use super::*;

/// Routing for gather / combine runs: `num_tokens` tokens, `top_k` of `num_experts` experts
/// (reference gate on random logits), aligned to `block_m` on the CPU; `local` restricts the
/// local experts (the others' slots are −1 and skipped). Rows at `hidden + row_gap`.
#[derive(Clone, Debug)]
pub struct PermuteCase {
    /// Tokens routed.
    pub num_tokens: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Experts in the gate.
    pub num_experts: usize,
    /// Elements per hidden-state row.
    pub hidden: usize,
    /// Padding multiple of the aligned order.
    pub block_m: usize,
    /// The experts this rank holds (None: all).
    pub local: Option<std::ops::Range<usize>>,
    /// Elements after each row before the next (hidden states and expert rows).
    pub row_gap: usize,
    /// This expert's logit is raised by 8 for every token: it is every token's first choice.
    pub hot_expert: Option<usize>,
    /// Seed of the logits and hidden states.
    pub seed: u64,
}

impl PermuteCase {
    fn shape(&self) -> String {
        format!(
            "tokens {} top{} experts {} hidden {} block_m {}{}{} gap {}",
            self.num_tokens,
            self.top_k,
            self.num_experts,
            self.hidden,
            self.block_m,
            self.local.as_ref().map_or(String::new(), |r| format!(" local {r:?}")),
            self.hot_expert.map_or(String::new(), |e| format!(" hot {e}")),
            self.row_gap
        )
    }
    /// `logits` with the hot expert raised.
    fn logits(&self, mut logits: Vec<f32>) -> Vec<f32> {
        if let Some(e) = self.hot_expert {
            logits.iter_mut().skip(e).step_by(self.num_experts).for_each(|v| *v += 8.0);
        }
        logits
    }
    /// The local expert count and the reference align of the case's routing.
    pub fn routing(&self) -> (usize, reference::AlignOutput) {
        let logits = self.logits(Rng::new(self.seed).vec(self.num_tokens * self.num_experts, -2.0, 2.0));
        let mut cfg = MoeGateConfig::softmax_topk(true);
        cfg.local_experts = self.local.clone();
        let gate = reference::moe_gate(&logits, self.num_experts, self.top_k, None, &cfg);
        let local = cfg.local_range(self.num_experts).len().max(1);
        (local, reference::moe_align(&gate.topk_ids, self.top_k, local, self.block_m))
    }
}

/// Uploads `rows` rows of `hidden` at `stride` (row r filled by `f`), poison in the gaps.
fn strided_rows<T: DType>(rows: usize, hidden: usize, stride: usize, values: &[T]) -> Vec<T> {
    let mut buf = vec![T::NAN; (rows * stride).max(1)];
    for r in 0..rows {
        buf[r * stride..][..hidden].copy_from_slice(&values[r * hidden..][..hidden]);
    }
    buf
}

/// `moe_gather` against the reference: the written rows bit for bit, everything else untouched.
pub fn check_moe_gather<T: DType>(dev: &Device, case: &PermuteCase) -> Result<CheckResult> {
    let c = case;
    let (h, stride) = (c.hidden, c.hidden + c.row_gap);
    let (local, a) = c.routing();
    let rows = a.sorted_ids.len();
    let x: Vec<T> = Rng::new(c.seed + 1).vec(c.num_tokens * h, -3.0, 3.0);
    let x_host = strided_rows(c.num_tokens, h, stride, &x);
    let out_host = vec![T::NAN; (rows * stride).max(1)];
    let xb = dev.upload(&x_host)?;
    let pos = dev.upload(&a.token_positions)?;
    let off = dev.upload(&a.expert_offsets)?;
    let cnt = dev.upload(&a.expert_counts)?;
    let mut out = dev.upload(&out_host)?;
    ops::moe_gather(
        dev,
        &TensorView::new(xb.as_view(), [c.num_tokens, h], [stride, 1])?,
        &TensorView::contiguous(pos.as_view(), [c.num_tokens, c.top_k])?,
        &TensorView::contiguous(off.as_view(), [local + 1])?,
        &TensorView::contiguous(cnt.as_view(), [local])?,
        &mut TensorViewMut::new(out.as_view_mut(), [rows, h], [stride, 1])?,
    )?;
    let got = dev.download(&out)?;
    let mut want = vec![T::NAN; rows * h];
    reference::moe_gather(&x, h, &a.token_positions, c.top_k, &a.expert_offsets, &a.expert_counts, &mut want);
    Ok(CheckResult {
        op: "moe_gather",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare_exact("rows (exact; past the total: untouched)", &gather_rows(&got, 0, rows, h, stride), &want),
            compare_exact(
                "row gaps (untouched)",
                &outside_rows(&got, 0, rows, h, stride),
                &outside_rows(&out_host, 0, rows, h, stride),
            ),
        ],
    })
}

/// `moe_combine` against the f64 reference (random expert outputs and weights).
pub fn check_moe_combine<T: DType>(dev: &Device, case: &PermuteCase) -> Result<CheckResult> {
    let c = case;
    let (h, stride) = (c.hidden, c.hidden + c.row_gap);
    let (_, a) = c.routing();
    let rows = a.sorted_ids.len();
    let mut rng = Rng::new(c.seed + 2);
    let y: Vec<T> = rng.vec(rows * h, -3.0, 3.0);
    let w: Vec<f32> = rng.vec(c.num_tokens * c.top_k, 0.0, 1.0);
    let out_host = vec![T::NAN; (c.num_tokens * stride).max(1)];
    let yb = dev.upload(&strided_rows(rows, h, stride, &y))?;
    let pos = dev.upload(&a.token_positions)?;
    let wb = dev.upload(&w)?;
    let mut out = dev.upload(&out_host)?;
    ops::moe_combine(
        dev,
        &TensorView::new(yb.as_view(), [rows, h], [stride, 1])?,
        &TensorView::contiguous(pos.as_view(), [c.num_tokens, c.top_k])?,
        &TensorView::contiguous(wb.as_view(), [c.num_tokens, c.top_k])?,
        &mut TensorViewMut::new(out.as_view_mut(), [c.num_tokens, h], [stride, 1])?,
    )?;
    let got = dev.download(&out)?;
    let want = reference::moe_combine(&y, h, &a.token_positions, &w, c.top_k);
    Ok(CheckResult {
        op: "moe_combine",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare("out", &gather_rows(&got, 0, c.num_tokens, h, stride), &want, tolerance::<T>()).in_rows(h),
            compare_exact(
                "row gaps (untouched)",
                &outside_rows(&got, 0, c.num_tokens, h, stride),
                &outside_rows(&out_host, 0, c.num_tokens, h, stride),
            ),
        ],
    })
}

/// Weights 1/2, 1/4, ..., 2^−(k−1), 2^−(k−1) for every token (1 when k = 1): dyadic and
/// summing to exactly 1, so combine(gather(x)) = x exactly when T's significand plus k − 1
/// bits fit f32's 24.
pub fn dyadic_weights(num_tokens: usize, top_k: usize) -> Vec<f32> {
    let row: Vec<f32> =
        (0..top_k).map(|j| if j + 1 < top_k { 2f32.powi(-(j as i32 + 1)) } else { 2f32.powi(1 - top_k as i32) }).collect();
    row.iter().copied().cycle().take(num_tokens * top_k).collect()
}

/// Weights for which the round trip is exact in T: dyadic where T's significand allows (bf16:
/// k ≤ 17, f16: k ≤ 14), else 1 on the first choice and 0 on the others.
fn exact_weights<T: DType>(num_tokens: usize, top_k: usize) -> Vec<f32> {
    let bits = match T::NAME {
        "bf16" => 8,
        "f16" => 11,
        _ => 24,
    };
    if bits + top_k - 1 <= 24 {
        dyadic_weights(num_tokens, top_k)
    } else {
        (0..num_tokens * top_k).map(|i| if i % top_k == 0 { 1.0 } else { 0.0 }).collect()
    }
}

/// The whole pipeline on the GPU: moe_gate (softmax, heavy ties) → moe_align → moe_gather →
/// moe_combine with exact weights must give back the input bit for bit (all experts local).
pub fn check_round_trip<T: DType>(dev: &Device, case: &PermuteCase) -> Result<CheckResult> {
    let c = case;
    let (t, k, n, h) = (c.num_tokens, c.top_k, c.num_experts, c.hidden);
    let sizes = MoeAlignSizes::new(t, k, n, c.block_m)?;
    let mut rng = Rng::new(c.seed);
    let logits = c.logits((0..t * n).map(|_| [-1.0, 0.0, 0.5, 1.0][(rng.next_u64() % 4) as usize]).collect());
    let x: Vec<T> = rng.vec(t * h, -3.0, 3.0);
    let lg = dev.upload(&logits)?;
    let xb = dev.upload(&x)?;
    let mut ids = dev.upload(&vec![INT_POISON; (t * k).max(1)])?;
    let mut wts = dev.upload(&vec![0.0f32; (t * k).max(1)])?;
    let mut bufs = [sizes.sorted_len, sizes.blocks_len, n + 1, n, t * k, sizes.workspace_len]
        .iter()
        .map(|&l| dev.zeros::<i32>(l.max(1)))
        .collect::<Result<Vec<_>>>()?;
    let mut permuted = dev.upload(&vec![T::NAN; (sizes.sorted_len * h).max(1)])?;
    let mut out = dev.upload(&vec![T::NAN; (t * h).max(1)])?;
    ops::moe_gate(
        dev,
        &TensorView::contiguous(lg.as_view(), [t, n])?,
        None,
        &mut TensorViewMut::contiguous(ids.as_view_mut(), [t, k])?,
        &mut TensorViewMut::contiguous(wts.as_view_mut(), [t, k])?,
        None,
        &MoeGateConfig::softmax_topk(true),
    )?;
    let [sorted, blocks, offsets, counts, positions, ws] = &mut bufs[..] else { unreachable!() };
    ops::moe_align(
        dev,
        &TensorView::contiguous(ids.slice(..t * k), [t, k])?,
        n,
        c.block_m,
        MoeAlignOutputs {
            sorted_ids: &mut TensorViewMut::contiguous(sorted.slice_mut(..sizes.sorted_len), [sizes.sorted_len])?,
            block_expert_ids: &mut TensorViewMut::contiguous(blocks.slice_mut(..sizes.blocks_len), [sizes.blocks_len])?,
            expert_offsets: &mut TensorViewMut::contiguous(offsets.slice_mut(..n + 1), [n + 1])?,
            expert_counts: &mut TensorViewMut::contiguous(counts.slice_mut(..n), [n])?,
            token_positions: &mut TensorViewMut::contiguous(positions.slice_mut(..t * k), [t, k])?,
            workspace: &mut TensorViewMut::contiguous(ws.slice_mut(..sizes.workspace_len), [sizes.workspace_len])?,
        },
    )?;
    let pos = TensorView::contiguous(positions.slice(..t * k), [t, k])?;
    ops::moe_gather(
        dev,
        &TensorView::contiguous(xb.as_view(), [t, h])?,
        &pos,
        &TensorView::contiguous(offsets.slice(..n + 1), [n + 1])?,
        &TensorView::contiguous(counts.slice(..n), [n])?,
        &mut TensorViewMut::contiguous(permuted.slice_mut(..sizes.sorted_len * h), [sizes.sorted_len, h])?,
    )?;
    let w = dev.upload(&exact_weights::<T>(t, k))?;
    ops::moe_combine(
        dev,
        &TensorView::contiguous(permuted.slice(..sizes.sorted_len * h), [sizes.sorted_len, h])?,
        &pos,
        &TensorView::contiguous(w.slice(..t * k), [t, k])?,
        &mut TensorViewMut::contiguous(out.slice_mut(..t * h), [t, h])?,
    )?;
    let got = dev.download(&out)?;
    let ids_got = dev.download(&ids)?;
    let want_ids = reference::moe_gate(&logits, n, k, None, &MoeGateConfig::softmax_topk(true)).topk_ids;
    Ok(CheckResult {
        op: "moe_round_trip",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare_ints("gate ids (heavy ties)", &ids_got[..t * k], &want_ids),
            compare_exact("combine(gather(x)) = x", &got[..t * h], &x),
        ],
    })
}
