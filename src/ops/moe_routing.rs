//! The MoE routing family (cuda/moe_routing.cu): `moe_gate`, `moe_align`, `moe_gather`,
//! `moe_combine`.
//!
//! A MoE layer with these ops: `moe_gate` (router logits → `topk_ids`, `topk_weights`) →
//! `moe_align` (expert-contiguous order padded to the grouped GEMM's `block_m`) → `moe_gather`
//! (hidden states into that order) → grouped GEMM → `moe_combine` (weighted sum back per token).
//!
//! **Selection contract.** Experts are ranked by an f32 selection value in a total order: NaN
//! ranks as −∞, −0 equals +0, equal values go to the lower expert index. Softmax scoring ranks
//! the logits themselves (softmax is monotone, so this is softmax-then-top-k without rounding
//! ties); sigmoid scoring ranks `sigmoid(x) + bias` computed in f32 by a fixed sequence of
//! correctly rounded operations ([`crate::reference::moe_routing::sigmoid_f32`] is the same
//! sequence on the CPU). The chosen ids are therefore identical to the CPU reference, bit for
//! bit, ties included; weights are f32 math checked against f64.
//!
//! **Expert parallelism.** With `local_experts = first..last`, ids of chosen experts outside the
//! range are written as −1 and the others as `id − first` (local ids); the weights are kept (the
//! token's weights still sum to one across ranks). `moe_align`, `moe_gather` and `moe_combine`
//! ignore ids outside `[0, num_experts)`, so −1 slots cost nothing and index nothing.

use super::{
    check_contiguous, check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_nonempty,
    check_shape, launch, FLOAT_DTYPES,
};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};
use std::ops::Range;

/// Most experts a gate or align takes.
pub const MAX_EXPERTS: usize = ffi::WC_MOE_MAX_EXPERTS as usize;
/// Most experts [`moe_gate`] chooses per token.
pub const MAX_TOP_K: usize = ffi::WC_MOE_MAX_TOP_K as usize;
/// Most groups of the grouped selection.
pub const MAX_GROUPS: usize = ffi::WC_MOE_MAX_GROUPS as usize;
/// Assignments per block of [`moe_align`] (sizes its workspace).
pub const ALIGN_TILE: usize = ffi::WC_MOE_ALIGN_TILE as usize;
/// Most bytes in one row of [`moe_gather`] / [`moe_combine`] (the grid's y extent: 65535 chunks
/// of 256 elements or units).
pub const MAX_ROW_BYTES: usize = 65535 * 256;

/// How logits become selection values and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeScoring {
    /// Select the largest logits; weight = softmax probability (over all experts, or over the
    /// chosen k when renormalising). Mixtral, Qwen-MoE.
    Softmax,
    /// Select the largest `sigmoid(logit) + correction_bias` (within the best groups); weight =
    /// `sigmoid(logit)` (renormalised: divided by the chosen k's sum + 1e-20). DeepSeek-V3.
    Sigmoid,
}

/// Options of [`moe_gate`].
#[derive(Clone, Debug, PartialEq)]
pub struct MoeGateConfig {
    /// How logits become selection values and weights.
    pub scoring: MoeScoring,
    /// Divide the chosen weights by their sum (see [`MoeScoring`]).
    pub renormalize: bool,
    /// Groups of consecutive experts (1: no grouping). Sigmoid scoring only.
    pub n_group: usize,
    /// Groups kept: those with the largest sum of their top-two selection values (a group of
    /// one expert: that value), ties to the lower group index; experts are then chosen only
    /// inside them (as transformers 5 does, masking the others to −inf; earlier versions masked
    /// to 0.0, which can pick experts of other groups when the biased scores are negative).
    pub topk_group: usize,
    /// Every weight is multiplied by this (after renormalising).
    pub routed_scaling_factor: f32,
    /// Expert-parallel range `first..last` (None: all experts are local).
    pub local_experts: Option<Range<usize>>,
}

impl MoeGateConfig {
    /// Softmax over all experts, then the top k, optionally renormalised over the k.
    pub fn softmax_topk(renormalize: bool) -> Self {
        Self {
            scoring: MoeScoring::Softmax,
            renormalize,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            local_experts: None,
        }
    }
    /// Top k of the logits, then softmax over the k: identical (same selection, same weights)
    /// to `softmax_topk(true)`, and computed that way.
    pub fn topk_softmax() -> Self {
        Self::softmax_topk(true)
    }
    /// Sigmoid scores (+ correction bias when given), no grouping.
    pub fn sigmoid(renormalize: bool) -> Self {
        Self { scoring: MoeScoring::Sigmoid, ..Self::softmax_topk(renormalize) }
    }
    /// DeepSeek-V3: sigmoid + correction bias, `topk_group` of `n_group` groups, renormalised,
    /// times `routed_scaling_factor` (V3: 8 groups, 4 kept, 2.5).
    pub fn deepseek_v3(n_group: usize, topk_group: usize, routed_scaling_factor: f32) -> Self {
        Self { n_group, topk_group, routed_scaling_factor, ..Self::sigmoid(true) }
    }
    /// Only experts in `range` are local (expert parallelism); see the module docs.
    pub fn with_local_experts(mut self, range: Range<usize>) -> Self {
        self.local_experts = Some(range);
        self
    }

    /// The local range, `0..num_experts` when none is set.
    pub fn local_range(&self, num_experts: usize) -> Range<usize> {
        self.local_experts.clone().unwrap_or(0..num_experts)
    }

    /// Checks the options against `num_experts` and `top_k` (everything `moe_gate` checks
    /// besides shapes). The CPU reference takes the same configurations.
    pub fn validate(&self, num_experts: usize, top_k: usize) -> Result<()> {
        const OP: &str = "moe_gate";
        let bad = |what: &'static str, value: String| Err(Error::Unsupported { op: OP, what, value });
        if num_experts == 0 || num_experts > MAX_EXPERTS {
            return bad("num_experts (1 to 512)", num_experts.to_string());
        }
        if top_k == 0 || top_k > MAX_TOP_K || top_k > num_experts {
            return bad("top_k (1 to min(32, num_experts))", top_k.to_string());
        }
        let (g, kg) = (self.n_group, self.topk_group);
        if g == 0 || g > MAX_GROUPS || !num_experts.is_multiple_of(g) {
            return bad("n_group (1 to 32, dividing num_experts)", format!("{g} for {num_experts} experts"));
        }
        if g > 1 && self.scoring != MoeScoring::Sigmoid {
            return bad("n_group > 1 with softmax scoring (grouping is sigmoid-only)", g.to_string());
        }
        if kg == 0 || kg > g {
            return bad("topk_group (1 to n_group)", format!("{kg} of {g}"));
        }
        if top_k > kg * (num_experts / g) {
            return bad("top_k (more than the kept groups hold)", format!("{top_k} > {kg} × {}", num_experts / g));
        }
        if !self.routed_scaling_factor.is_finite() {
            return bad("routed_scaling_factor", self.routed_scaling_factor.to_string());
        }
        let r = self.local_range(num_experts);
        if r.start > r.end || r.end > num_experts {
            return bad("local_experts (first ≤ last ≤ num_experts)", format!("{r:?} of {num_experts}"));
        }
        Ok(())
    }
}

/// Chooses `top_k = topk_ids.shape()[1]` experts per token from router logits, in one launch.
///
/// logits: `[num_tokens, num_experts]` (bf16 / f16 / f32, any row stride); correction_bias:
/// `[num_experts]` f32 (sigmoid scoring only; None = zeros); topk_ids `[num_tokens, top_k]` i32
/// and topk_weights `[num_tokens, top_k]` f32 (any row strides), in choice order (best first);
/// expert_counts: `[num_experts]` i32, each choice adds one to its expert (by global id, local
/// or not) — it is not zeroed, so it accumulates across calls. Zero tokens is a no-op.
pub fn moe_gate<T: DType>(
    dev: &Device,
    logits: &TensorView<T, 2>,
    correction_bias: Option<&TensorView<f32, 1>>,
    topk_ids: &mut TensorViewMut<i32, 2>,
    topk_weights: &mut TensorViewMut<f32, 2>,
    expert_counts: Option<&mut TensorViewMut<i32, 1>>,
    cfg: &MoeGateConfig,
) -> Result<()> {
    const OP: &str = "moe_gate";
    check_dtype::<T>(OP, FLOAT_DTYPES)?;
    let [num_tokens, num_experts] = logits.shape();
    let top_k = topk_ids.shape()[1];
    check_nonempty(OP, "logits (num_experts)", &[num_experts])?;
    check_nonempty(OP, "topk_ids (top_k)", &[top_k])?;
    cfg.validate(num_experts, top_k)?;
    check_inner_dense(OP, "logits", &logits.strides())?;
    check_shape(OP, "topk_ids", &topk_ids.shape(), &[num_tokens, top_k])?;
    check_shape(OP, "topk_weights", &topk_weights.shape(), &[num_tokens, top_k])?;
    check_inner_dense(OP, "topk_ids", &topk_ids.strides())?;
    check_inner_dense(OP, "topk_weights", &topk_weights.strides())?;
    check_no_overlap(OP, "topk_ids", &topk_ids.shape(), &topk_ids.strides())?;
    check_no_overlap(OP, "topk_weights", &topk_weights.shape(), &topk_weights.strides())?;
    check_fits_i32(OP, "num_tokens", num_tokens)?;
    if let Some(b) = correction_bias {
        if cfg.scoring != MoeScoring::Sigmoid {
            return Err(Error::Unsupported { op: OP, what: "correction_bias with softmax scoring", value: "Some".into() });
        }
        check_shape(OP, "correction_bias", &b.shape(), &[num_experts])?;
        check_inner_dense(OP, "correction_bias", &b.strides())?;
        check_device(OP, "correction_bias", dev, b.stream())?;
    }
    if let Some(c) = expert_counts.as_deref() {
        check_shape(OP, "expert_counts", &c.shape(), &[num_experts])?;
        check_inner_dense(OP, "expert_counts", &c.strides())?;
        check_device(OP, "expert_counts", dev, c.stream())?;
    }
    check_device(OP, "logits", dev, logits.stream())?;
    check_device(OP, "topk_ids", dev, topk_ids.stream())?;
    check_device(OP, "topk_weights", dev, topk_weights.stream())?;
    if num_tokens == 0 {
        return Ok(());
    }
    let range = cfg.local_range(num_experts);
    let stream = dev.stream();
    let (ids_stride, weights_stride) = (topk_ids.strides()[0], topk_weights.strides()[0]);
    let (logits_ptr, _gl) = logits.device_ptr(stream);
    let bias = correction_bias.map(|b| b.device_ptr(stream));
    let (ids_ptr, _gi) = topk_ids.device_ptr_mut(stream);
    let (w_ptr, _gw) = topk_weights.device_ptr_mut(stream);
    let counts = expert_counts.map(|c| c.device_ptr_mut(stream));
    let params = ffi::wc_moe_gate_params {
        logits: logits_ptr as *const _,
        bias: bias.as_ref().map_or(std::ptr::null(), |b| b.0 as *const f32),
        topk_ids: ids_ptr as *mut i32,
        topk_weights: w_ptr as *mut f32,
        expert_counts: counts.as_ref().map_or(std::ptr::null_mut(), |c| c.0 as *mut i32),
        num_tokens: num_tokens as i64,
        num_experts: num_experts as i64,
        top_k: top_k as i64,
        logits_stride: logits.strides()[0] as i64,
        ids_stride: ids_stride as i64,
        weights_stride: weights_stride as i64,
        n_group: cfg.n_group as i64,
        topk_group: cfg.topk_group as i64,
        first_expert: range.start as i64,
        last_expert: range.end as i64,
        routed_scaling_factor: cfg.routed_scaling_factor,
        renormalize: cfg.renormalize as i32,
        scoring: match cfg.scoring {
            MoeScoring::Softmax => ffi::wc_moe_scoring_WC_MOE_SOFTMAX,
            MoeScoring::Sigmoid => ffi::wc_moe_scoring_WC_MOE_SIGMOID,
        },
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides (inside each buffer: checked when the views were made), the
    // configuration, dtype and context were validated above; the guards (_g*, bias, counts)
    // keep the buffers' sync events until the launch is queued.
    launch(OP, dev, |s| unsafe { ffi::wc_moe_gate(&params, s) })
}

/// The buffer lengths [`moe_align`] needs for `num_tokens × top_k` assignments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeAlignSizes {
    /// num_tokens · top_k; also the padding marker in `sorted_ids`.
    pub num_assignments: usize,
    /// `sorted_ids` length: num_assignments + num_experts · (block_m − 1), the most rows the
    /// padded order can take.
    pub sorted_len: usize,
    /// `block_expert_ids` length: ⌈sorted_len / block_m⌉.
    pub blocks_len: usize,
    /// `workspace` length: tiles · num_experts when the assignments span more than one tile of
    /// [`ALIGN_TILE`], else 0.
    pub workspace_len: usize,
}

impl MoeAlignSizes {
    /// The lengths for `num_tokens × top_k` assignments to `num_experts` experts, each expert's
    /// rows padded to a multiple of `block_m`. Errors: top_k 0, num_experts outside
    /// 1..=[`MAX_EXPERTS`], block_m 0, or lengths past i32.
    pub fn new(num_tokens: usize, top_k: usize, num_experts: usize, block_m: usize) -> Result<Self> {
        const OP: &str = "moe_align";
        if top_k == 0 {
            return Err(Error::Empty { op: OP, arg: "topk_ids (top_k)", shape: format!("[{num_tokens}, 0]") });
        }
        if num_experts == 0 || num_experts > MAX_EXPERTS {
            return Err(Error::Unsupported { op: OP, what: "num_experts (1 to 512)", value: num_experts.to_string() });
        }
        if block_m == 0 {
            return Err(Error::Unsupported { op: OP, what: "block_m (at least 1)", value: "0".into() });
        }
        let too_big = || Error::Unsupported {
            op: OP,
            what: "padded size (num_tokens · top_k + num_experts · (block_m − 1) + 4096 must fit i32)",
            value: format!("{num_tokens} · {top_k} + {num_experts} · ({block_m} − 1)"),
        };
        let num_assignments = num_tokens.checked_mul(top_k).ok_or_else(too_big)?;
        let sorted_len = (block_m - 1)
            .checked_mul(num_experts)
            .and_then(|p| p.checked_add(num_assignments))
            .filter(|&n| n <= i32::MAX as usize - ALIGN_TILE)
            .ok_or_else(too_big)?;
        let tiles = num_assignments.div_ceil(ALIGN_TILE);
        Ok(Self {
            num_assignments,
            sorted_len,
            blocks_len: sorted_len.div_ceil(block_m),
            workspace_len: if tiles > 1 { tiles * num_experts } else { 0 },
        })
    }
}

/// The outputs of [`moe_align`] (all i32, contiguous), every element written. Lengths from
/// [`MoeAlignSizes`].
pub struct MoeAlignOutputs<'o, 'a> {
    /// `[sorted_len]`: the flat assignment index (token · top_k + k) of each row in expert
    /// order; padding rows hold `num_assignments`.
    pub sorted_ids: &'o mut TensorViewMut<'a, i32, 1>,
    /// `[blocks_len]`: the expert of each block of block_m rows; −1 past the padded total.
    pub block_expert_ids: &'o mut TensorViewMut<'a, i32, 1>,
    /// `[num_experts + 1]`: expert e's rows start at `expert_offsets[e]` (a multiple of
    /// block_m); `expert_offsets[num_experts]` is the padded total.
    pub expert_offsets: &'o mut TensorViewMut<'a, i32, 1>,
    /// `[num_experts]`: assignments per expert (unpadded).
    pub expert_counts: &'o mut TensorViewMut<'a, i32, 1>,
    /// `[num_tokens, top_k]`: the row of each assignment, −1 for ids outside [0, num_experts).
    pub token_positions: &'o mut TensorViewMut<'a, i32, 2>,
    /// `[workspace_len]` scratch (may be empty when workspace_len is 0).
    pub workspace: &'o mut TensorViewMut<'a, i32, 1>,
}

/// Sorts assignments by expert for a grouped GEMM (vLLM's moe_align_block_size): expert e's
/// assignments take rows `expert_offsets[e]..` in increasing flat index (token · top_k + k),
/// then padding up to a multiple of `block_m`. Ids outside `[0, num_experts)` (−1 from an
/// expert-parallel gate, or garbage) are ignored. topk_ids: `[num_tokens, top_k]`, any row
/// stride. Deterministic: every output equals the CPU reference exactly.
pub fn moe_align(
    dev: &Device,
    topk_ids: &TensorView<i32, 2>,
    num_experts: usize,
    block_m: usize,
    out: MoeAlignOutputs<'_, '_>,
) -> Result<()> {
    const OP: &str = "moe_align";
    let [num_tokens, top_k] = topk_ids.shape();
    let sizes = MoeAlignSizes::new(num_tokens, top_k, num_experts, block_m)?;
    check_inner_dense(OP, "topk_ids", &topk_ids.strides())?;
    check_shape(OP, "sorted_ids", &out.sorted_ids.shape(), &[sizes.sorted_len])?;
    check_shape(OP, "block_expert_ids", &out.block_expert_ids.shape(), &[sizes.blocks_len])?;
    check_shape(OP, "expert_offsets", &out.expert_offsets.shape(), &[num_experts + 1])?;
    check_shape(OP, "expert_counts", &out.expert_counts.shape(), &[num_experts])?;
    check_shape(OP, "token_positions", &out.token_positions.shape(), &[num_tokens, top_k])?;
    check_shape(OP, "workspace", &out.workspace.shape(), &[sizes.workspace_len])?;
    for (arg, strides) in [
        ("sorted_ids", out.sorted_ids.strides()),
        ("block_expert_ids", out.block_expert_ids.strides()),
        ("expert_offsets", out.expert_offsets.strides()),
        ("expert_counts", out.expert_counts.strides()),
        ("workspace", out.workspace.strides()),
    ] {
        check_inner_dense(OP, arg, &strides)?;
    }
    check_contiguous(OP, "token_positions", &out.token_positions.shape(), &out.token_positions.strides())?;
    check_device(OP, "topk_ids", dev, topk_ids.stream())?;
    check_device(OP, "sorted_ids", dev, out.sorted_ids.stream())?;
    check_device(OP, "block_expert_ids", dev, out.block_expert_ids.stream())?;
    check_device(OP, "expert_offsets", dev, out.expert_offsets.stream())?;
    check_device(OP, "expert_counts", dev, out.expert_counts.stream())?;
    check_device(OP, "token_positions", dev, out.token_positions.stream())?;
    check_device(OP, "workspace", dev, out.workspace.stream())?;
    let stream = dev.stream();
    let (ids_ptr, _g0) = topk_ids.device_ptr(stream);
    let (sorted_ptr, _g1) = out.sorted_ids.device_ptr_mut(stream);
    let (blocks_ptr, _g2) = out.block_expert_ids.device_ptr_mut(stream);
    let (offsets_ptr, _g3) = out.expert_offsets.device_ptr_mut(stream);
    let (counts_ptr, _g4) = out.expert_counts.device_ptr_mut(stream);
    let (pos_ptr, _g5) = out.token_positions.device_ptr_mut(stream);
    let (ws_ptr, _g6) = out.workspace.device_ptr_mut(stream);
    let params = ffi::wc_moe_align_params {
        topk_ids: ids_ptr as *const i32,
        sorted_ids: sorted_ptr as *mut i32,
        block_expert_ids: blocks_ptr as *mut i32,
        expert_offsets: offsets_ptr as *mut i32,
        expert_counts: counts_ptr as *mut i32,
        token_positions: pos_ptr as *mut i32,
        workspace: if sizes.workspace_len > 0 { ws_ptr as *mut i32 } else { std::ptr::null_mut() },
        num_tokens: num_tokens as i64,
        top_k: top_k as i64,
        ids_stride: topk_ids.strides()[0] as i64,
        num_experts: num_experts as i64,
        block_m: block_m as i64,
    };
    // SAFETY: every buffer has exactly the length MoeAlignSizes gives for these sizes (checked
    // above), ids are bounds-checked on the device, and the guards live until the launch.
    launch(OP, dev, |s| unsafe { ffi::wc_moe_align(&params, s) })
}

/// Checks shared by gather and combine: the positions table and the row size.
fn check_rows<T: DType>(op: &'static str, hidden: usize, positions: &TensorView<i32, 2>, num_tokens: usize) -> Result<usize> {
    let top_k = positions.shape()[1];
    check_nonempty(op, "rows (hidden)", &[hidden])?;
    check_nonempty(op, "token_positions (top_k)", &[top_k])?;
    check_shape(op, "token_positions", &positions.shape(), &[num_tokens, top_k])?;
    check_contiguous(op, "token_positions", &positions.shape(), &positions.strides())?;
    let row_bytes = hidden.saturating_mul(std::mem::size_of::<T>());
    if row_bytes > MAX_ROW_BYTES {
        return Err(Error::Unsupported { op, what: "row size in bytes (at most 65535 · 256)", value: row_bytes.to_string() });
    }
    Ok(top_k)
}

/// Gathers hidden states into expert order: `out[token_positions[t, k], :] = hidden_states[t, :]`
/// (each token row read once), and zero-fills each expert's padding rows
/// `expert_offsets[e] + expert_counts[e] .. expert_offsets[e + 1]`; other rows of `out` (past
/// the padded total) are not written. Positions outside `[0, rows)` are skipped.
///
/// hidden_states `[num_tokens, hidden]`, out `[rows, hidden]` (any row strides; any dtype,
/// FP8 included: it is a copy); token_positions `[num_tokens, top_k]` contiguous;
/// expert_offsets `[num_experts + 1]`, expert_counts `[num_experts]` (from [`moe_align`]).
pub fn moe_gather<T: DType>(
    dev: &Device,
    hidden_states: &TensorView<T, 2>,
    token_positions: &TensorView<i32, 2>,
    expert_offsets: &TensorView<i32, 1>,
    expert_counts: &TensorView<i32, 1>,
    out: &mut TensorViewMut<T, 2>,
) -> Result<()> {
    const OP: &str = "moe_gather";
    let [num_tokens, hidden] = hidden_states.shape();
    let top_k = check_rows::<T>(OP, hidden, token_positions, num_tokens)?;
    let num_experts = expert_counts.shape()[0];
    check_nonempty(OP, "expert_counts (num_experts)", &[num_experts])?;
    check_shape(OP, "expert_offsets", &expert_offsets.shape(), &[num_experts.saturating_add(1)])?;
    check_inner_dense(OP, "expert_offsets", &expert_offsets.strides())?;
    check_inner_dense(OP, "expert_counts", &expert_counts.strides())?;
    check_inner_dense(OP, "hidden_states", &hidden_states.strides())?;
    let rows = out.shape()[0];
    check_shape(OP, "out", &out.shape(), &[rows, hidden])?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_fits_i32(OP, "rows", rows)?;
    check_fits_i32(OP, "num_tokens + num_experts (blocks)", num_tokens.saturating_add(num_experts))?;
    for (arg, s) in [
        ("hidden_states", hidden_states.stream()),
        ("token_positions", token_positions.stream()),
        ("expert_offsets", expert_offsets.stream()),
        ("expert_counts", expert_counts.stream()),
        ("out", out.stream()),
    ] {
        check_device(OP, arg, dev, s)?;
    }
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let out_stride = out.strides()[0];
    let (h_ptr, _g0) = hidden_states.device_ptr(stream);
    let (pos_ptr, _g1) = token_positions.device_ptr(stream);
    let (off_ptr, _g2) = expert_offsets.device_ptr(stream);
    let (cnt_ptr, _g3) = expert_counts.device_ptr(stream);
    let (out_ptr, _g4) = out.device_ptr_mut(stream);
    let params = ffi::wc_moe_gather_params {
        hidden_states: h_ptr as *const _,
        token_positions: pos_ptr as *const i32,
        expert_offsets: off_ptr as *const i32,
        expert_counts: cnt_ptr as *const i32,
        out: out_ptr as *mut _,
        num_tokens: num_tokens as i64,
        top_k: top_k as i64,
        hidden: hidden as i64,
        hidden_stride: hidden_states.strides()[0] as i64,
        num_experts: num_experts as i64,
        num_rows: rows as i64,
        out_stride: out_stride as i64,
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides and context validated above; row indices read from the tables
    // are bounds-checked against `rows` on the device.
    launch(OP, dev, |s| unsafe { ffi::wc_moe_gather(&params, s) })
}

/// Combines expert outputs per token: `out[t, :] = Σ_k topk_weights[t, k] ·
/// expert_out[token_positions[t, k], :]`, summed in k order in f32 and rounded once (no
/// atomics: deterministic). Positions outside `[0, rows)` (−1: a remote expert) contribute
/// nothing; a token with none gets zeros.
///
/// expert_out `[rows, hidden]`, out `[num_tokens, hidden]` (bf16 / f16 / f32, any row
/// strides); token_positions `[num_tokens, top_k]` contiguous; topk_weights `[num_tokens,
/// top_k]` f32, any row stride.
pub fn moe_combine<T: DType>(
    dev: &Device,
    expert_out: &TensorView<T, 2>,
    token_positions: &TensorView<i32, 2>,
    topk_weights: &TensorView<f32, 2>,
    out: &mut TensorViewMut<T, 2>,
) -> Result<()> {
    const OP: &str = "moe_combine";
    check_dtype::<T>(OP, FLOAT_DTYPES)?;
    let [rows, hidden] = expert_out.shape();
    let num_tokens = out.shape()[0];
    let top_k = check_rows::<T>(OP, hidden, token_positions, num_tokens)?;
    check_shape(OP, "out", &out.shape(), &[num_tokens, hidden])?;
    check_shape(OP, "topk_weights", &topk_weights.shape(), &[num_tokens, top_k])?;
    check_inner_dense(OP, "expert_out", &expert_out.strides())?;
    check_inner_dense(OP, "topk_weights", &topk_weights.strides())?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_fits_i32(OP, "num_tokens", num_tokens)?;
    check_fits_i32(OP, "rows", rows)?;
    for (arg, s) in [
        ("expert_out", expert_out.stream()),
        ("token_positions", token_positions.stream()),
        ("topk_weights", topk_weights.stream()),
        ("out", out.stream()),
    ] {
        check_device(OP, arg, dev, s)?;
    }
    if num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let out_stride = out.strides()[0];
    let (e_ptr, _g0) = expert_out.device_ptr(stream);
    let (pos_ptr, _g1) = token_positions.device_ptr(stream);
    let (w_ptr, _g2) = topk_weights.device_ptr(stream);
    let (out_ptr, _g3) = out.device_ptr_mut(stream);
    let params = ffi::wc_moe_combine_params {
        expert_out: e_ptr as *const _,
        token_positions: pos_ptr as *const i32,
        topk_weights: w_ptr as *const f32,
        out: out_ptr as *mut _,
        num_tokens: num_tokens as i64,
        top_k: top_k as i64,
        hidden: hidden as i64,
        num_rows: rows as i64,
        expert_out_stride: expert_out.strides()[0] as i64,
        weights_stride: topk_weights.strides()[0] as i64,
        out_stride: out_stride as i64,
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides, dtype and context validated above; positions read from the
    // table are bounds-checked against `rows` on the device.
    launch(OP, dev, |s| unsafe { ffi::wc_moe_combine(&params, s) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsupported(r: Result<()>, what_contains: &str) {
        match r {
            Err(Error::Unsupported { what, .. }) => assert!(what.contains(what_contains), "{what}"),
            other => panic!("expected Unsupported({what_contains}), got {other:?}"),
        }
    }

    #[test]
    fn gate_configs_are_validated() {
        let ds = MoeGateConfig::deepseek_v3(8, 4, 2.5);
        assert!(ds.validate(256, 8).is_ok());
        assert!(ds.validate(160, 8).is_ok()); // groups of 20
        assert!(MoeGateConfig::deepseek_v3(5, 2, 1.0).validate(60, 16).is_ok()); // groups of 12
        assert!(MoeGateConfig::softmax_topk(false).validate(8, 8).is_ok()); // top_k = num_experts
        assert!(MoeGateConfig::softmax_topk(true).validate(512, 32).is_ok());
        unsupported(MoeGateConfig::softmax_topk(true).validate(513, 8), "num_experts");
        unsupported(MoeGateConfig::softmax_topk(true).validate(0, 1), "num_experts");
        unsupported(MoeGateConfig::softmax_topk(true).validate(64, 33), "top_k");
        unsupported(MoeGateConfig::softmax_topk(true).validate(8, 9), "top_k");
        unsupported(MoeGateConfig::softmax_topk(true).validate(8, 0), "top_k");
        unsupported(MoeGateConfig::deepseek_v3(7, 4, 1.0).validate(256, 8), "n_group");
        unsupported(MoeGateConfig::deepseek_v3(64, 4, 1.0).validate(256, 8), "n_group");
        unsupported(MoeGateConfig::deepseek_v3(8, 9, 1.0).validate(256, 8), "topk_group");
        unsupported(MoeGateConfig::deepseek_v3(8, 0, 1.0).validate(256, 8), "topk_group");
        // 2 kept groups of 4 experts hold 8 < 9.
        unsupported(MoeGateConfig::deepseek_v3(8, 2, 1.0).validate(32, 9), "kept groups");
        unsupported(MoeGateConfig::deepseek_v3(8, 4, f32::NAN).validate(256, 8), "routed_scaling_factor");
        let grouped_softmax = MoeGateConfig { n_group: 8, topk_group: 4, ..MoeGateConfig::softmax_topk(true) };
        unsupported(grouped_softmax.validate(256, 8), "softmax");
        unsupported(ds.clone().with_local_experts(0..257).validate(256, 8), "local_experts");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = ds.clone().with_local_experts(10..5);
        unsupported(reversed.validate(256, 8), "local_experts");
        assert!(ds.with_local_experts(32..64).validate(256, 8).is_ok());
        assert_eq!(MoeGateConfig::topk_softmax(), MoeGateConfig::softmax_topk(true));
    }

    #[test]
    fn align_sizes() {
        let s = MoeAlignSizes::new(16384, 8, 256, 64).unwrap();
        assert_eq!(s.num_assignments, 131072);
        assert_eq!(s.sorted_len, 131072 + 256 * 63);
        assert_eq!(s.blocks_len, (131072 + 256 * 63usize).div_ceil(64));
        assert_eq!(s.workspace_len, 32 * 256);
        // One tile: no workspace; zero tokens still has padding-free outputs.
        assert_eq!(MoeAlignSizes::new(512, 8, 64, 16).unwrap().workspace_len, 0);
        let z = MoeAlignSizes::new(0, 4, 8, 16).unwrap();
        assert_eq!((z.num_assignments, z.sorted_len, z.blocks_len, z.workspace_len), (0, 8 * 15, 8, 0));
        // block_m = 1: no padding.
        let one = MoeAlignSizes::new(3, 2, 5, 1).unwrap();
        assert_eq!((one.sorted_len, one.blocks_len), (6, 6));
        assert!(matches!(MoeAlignSizes::new(4, 0, 8, 16), Err(Error::Empty { .. })));
        assert!(MoeAlignSizes::new(4, 2, 0, 16).is_err());
        assert!(MoeAlignSizes::new(4, 2, 513, 16).is_err());
        assert!(MoeAlignSizes::new(4, 2, 8, 0).is_err());
        assert!(MoeAlignSizes::new(1 << 28, 8, 8, 16).is_err()); // 2^31 assignments
        assert!(MoeAlignSizes::new(i32::MAX as usize - 4096, 1, 1, 1).is_ok());
        assert!(MoeAlignSizes::new(i32::MAX as usize - 4095, 1, 1, 1).is_err()); // tile indices would wrap
        assert!(MoeAlignSizes::new(usize::MAX, 2, 8, 16).is_err());
        assert!(MoeAlignSizes::new(1, 1, 512, 1 << 23).is_err());
    }
}
