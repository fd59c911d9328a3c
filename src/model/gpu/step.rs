//! One step through the layer stack: its attention plan and RoPE (host), its index arrays and
//! workspace put in place (`stage`), and its launches queued on the model's stream or, while a
//! decode step is captured into a CUDA graph, on the capture's (`launch_step`; graph.rs).

use crate::model::gemm::Gemm;
use super::{alloc, mla, rows, rows_mut, vector, Batch, GpuAttention, GpuMlp, GpuModel, LayerCache, PAGE_SIZE, OP};
use crate::kv_cache::{BlockTable, BlockTableView, KvScales};
use crate::ops::attention::{AttentionConfig, AttentionKernel, AttentionPlan, MLA_DECODE};
use crate::ops::elementwise::select_rows;
use crate::ops::matmul_ternary::{fused_add_rms_norm_quantize_activations, rms_norm_quantize_activations};
use crate::ops::quant::{fused_add_rms_norm_quant_fp8, rms_norm_quant_fp8, ScaleGranularity};
use crate::ops::rms_norm::{fused_add_rms_norm, rms_norm, RmsNormConfig};
use crate::ops::rope::RopeConfig;
use crate::{Device, Error, Result, TensorView, F8E4M3};

/// Where a step's launches queue: the model's stream and cuBLAS handle, or, while a decode step
/// is captured into a CUDA graph, the capture stream's (graph.rs).
#[derive(Clone, Copy)]
pub(super) struct Exec<'m> {
    pub(super) dev: &'m Device,
    pub(super) gemm: &'m Gemm,
}

/// What every attention layer of one step shares: the plan, masks and scale, RoPE, the batch's
/// index views, the cache pages' shape, the norm eps.
pub(super) struct LayerStep<'s, 'a> {
    pub(super) plan: &'s AttentionPlan,
    pub(super) cfg: AttentionConfig,
    /// MLA: over the rope part at offset 512 of each 576-wide head.
    pub(super) rope: RopeConfig,
    pub(super) positions: &'s TensorView<'a, i32, 1>,
    pub(super) slots: &'s TensorView<'a, i32, 1>,
    pub(super) cu_seqlens_q: &'s TensorView<'a, i32, 1>,
    pub(super) table: &'s BlockTableView<'a>,
    /// `[num_pages, page_size, num_kv_heads, head_dim]` (MLA: `[.., 1, 576]`).
    pub(super) page_shape: [usize; 4],
    pub(super) norm: RmsNormConfig,
}

/// One step's inputs, on the host.
pub(super) struct Step {
    pub(super) ids: Vec<i32>,
    pub(super) positions: Vec<i32>,
    pub(super) slots: Vec<i64>,
    pub(super) q_lens: Vec<usize>,
    pub(super) table: BlockTable,
    /// Rows of the step whose logits are returned.
    pub(super) logit_rows: Vec<i32>,
}

impl GpuModel {
    /// Where the model's launches queue outside a graph capture.
    pub(super) fn exec(&self) -> Exec<'_> {
        Exec { dev: &self.dev, gemm: &self.gemm }
    }

    /// The step's attention plan, from its lengths on the host (an FP8 cache: planned for it,
    /// `AttentionPlan::with_kv`).
    pub(super) fn plan(&self, batch: &Batch, step: &Step) -> Result<AttentionPlan> {
        let c = &self.config;
        let kv_lens: Vec<usize> = step.table.seq_lens.iter().map(|&l| l as usize).collect();
        // MLA: one latent head of 576 (queries absorbed).
        let (nkv, d, dv) = match &c.mla {
            Some(_) => (1, MLA_DECODE.0, MLA_DECODE.1),
            None => (c.num_kv_heads, c.head_dim, c.head_dim),
        };
        if batch.fp8_cache() {
            AttentionPlan::with_kv::<F8E4M3>(&self.dev, &step.q_lens, &kv_lens, c.num_q_heads, nkv, d, dv, AttentionKernel::Auto)
        } else {
            AttentionPlan::new(&self.dev, &step.q_lens, &kv_lens, c.num_q_heads, nkv, d, dv)
        }
    }

    /// The step's RoPE (its table spans the longest sequence; MLA: over the rope part at offset
    /// 512 of each 576-wide head).
    pub(super) fn step_rope(&self, step: &Step) -> Result<RopeConfig> {
        let max_kv = step.table.seq_lens.iter().map(|&l| l.max(0) as usize).max().unwrap_or(0);
        let rope = self.config.rope(max_kv)?;
        Ok(if self.config.mla.is_some() { rope.with_offset(mla::LATENT) } else { rope })
    }

    /// Puts the step's inputs where its launches read them: the index arrays (ids, positions,
    /// cu_seqlens_q, block table, sequence lengths, logit rows, cache slots; i32) in one
    /// host-to-device copy into `batch.index`, and a split-KV workspace for `plan`. Either
    /// buffer is reallocated only when it is too small (`batch.generation` counts that: a
    /// decode graph reads both by address). Returns where each array starts in `batch.index`
    /// (and where the last ends), in that order: what [`GpuModel::launch_step`] reads.
    pub(super) fn stage(&self, batch: &mut Batch, step: &Step, plan: &AttentionPlan) -> Result<[usize; 8]> {
        let num_pages = batch.pages.num_pages();
        // Slots fit i32: the cache's pages were allocated (num_pages · page_size slots).
        let slots: Vec<i32> = step.slots.iter().map(|&s| i32::try_from(s)).collect::<std::result::Result<_, _>>().map_err(|_| Error::Unsupported {
            op: OP,
            what: "KV cache slots (fewer than 2^31)",
            value: format!("{num_pages} pages of {PAGE_SIZE}"),
        })?;
        let mut cu_q = vec![0i32; step.q_lens.len() + 1];
        for (s, &q) in step.q_lens.iter().enumerate() {
            cu_q[s + 1] = cu_q[s] + q as i32;
        }
        let parts: [&[i32]; 7] = [&step.ids, &step.positions, &cu_q, &step.table.table, &step.table.seq_lens, &step.logit_rows, &slots];
        let mut spans = [0usize; 8];
        for (i, part) in parts.iter().enumerate() {
            spans[i + 1] = spans[i] + part.len();
        }
        let packed = parts.concat();
        if batch.index.len() < packed.len() {
            batch.index = alloc(&self.dev, packed.len())?;
            batch.generation += 1;
        }
        if batch.bufs.workspace.len() < plan.workspace_len() {
            batch.bufs.workspace = alloc(&self.dev, plan.workspace_len())?;
            batch.generation += 1;
        }
        self.dev.stream().memcpy_htod(&packed, &mut batch.index.slice_mut(..packed.len()))?;
        Ok(spans)
    }

    /// Runs one step through every layer on the model's stream; the logits of
    /// `step.logit_rows` are left in `bufs.logits` (`logits_to_host`, `tokens_to_host`).
    pub(super) fn run(&self, batch: &mut Batch, step: &Step) -> Result<()> {
        let plan = self.plan(batch, step)?;
        let spans = self.stage(batch, step, &plan)?;
        self.launch_step(self.exec(), batch, step, &plan, &spans)
    }

    /// Queues one step's launches on `ex` (the model's stream, or a decode graph's capture),
    /// reading the index arrays (at `spans`) and workspace [`GpuModel::stage`] put in place.
    pub(super) fn launch_step(&self, ex: Exec, batch: &mut Batch, step: &Step, plan: &AttentionPlan, spans: &[usize; 8]) -> Result<()> {
        let c = &self.config;
        let dev = ex.dev;
        let h = c.hidden_size;
        let t = step.ids.len();
        let num_seqs = step.q_lens.len();
        let norm = RmsNormConfig::new(c.rms_norm_eps as f32);
        let num_pages = batch.pages.num_pages();
        // MLA: one latent head of 576 (queries absorbed), DeepSeek's softmax scale.
        let (attn_cfg, page_shape) = match &c.mla {
            Some(_) => {
                let d = MLA_DECODE.0;
                (AttentionConfig { scale: c.softmax_scale()? as f32, ..AttentionConfig::causal(d) }, [num_pages, PAGE_SIZE, 1, d])
            }
            None => (AttentionConfig::causal(c.head_dim), [num_pages, PAGE_SIZE, c.num_kv_heads, c.head_dim]),
        };
        let rope = self.step_rope(step)?;
        let bufs = &mut batch.bufs;
        debug_assert!(t <= bufs.max_tokens && step.logit_rows.len() <= bufs.max_logit_rows);
        let packed = &batch.index;
        let span = |i: usize| packed.slice(spans[i]..spans[i + 1]);
        let (ids, positions) = (TensorView::contiguous(span(0), [t])?, TensorView::contiguous(span(1), [t])?);
        let cu_seqlens_q = TensorView::contiguous(span(2), [num_seqs + 1])?;
        let table = BlockTableView::new(TensorView::contiguous(span(3), [num_seqs, step.table.max_pages_per_seq])?, TensorView::contiguous(span(4), [num_seqs])?)?;
        let logit_rows = TensorView::contiguous(span(5), [step.logit_rows.len()])?;
        let slots = TensorView::contiguous(span(6), [t])?;
        let ls = LayerStep { plan, cfg: attn_cfg, rope, positions: &positions, slots: &slots, cu_seqlens_q: &cu_seqlens_q, table: &table, page_shape, norm };

        select_rows(dev, &rows(&self.embed, c.vocab_size, h)?, &ids, &mut rows_mut(&mut bufs.residual, t, h)?)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let w_in = vector(&layer.input_norm, h)?;
            if self.int8_norms() {
                // BitNet: the norm writes the qkv projection's int8 codes.
                let (mut q8, mut s8) = bufs.int8.views_mut(t, h)?;
                if l == 0 {
                    rms_norm_quantize_activations(dev, &rows(&bufs.residual, t, h)?, &w_in, norm, &mut q8, &mut s8)?;
                } else {
                    let mut residual = rows_mut(&mut bufs.residual, t, h)?;
                    fused_add_rms_norm_quantize_activations(dev, &rows(&bufs.x, t, h)?, &mut residual, &w_in, norm, &mut q8, &mut s8)?;
                }
            } else if layer.fp8_input_norm() {
                // FP8 checkpoints: the norm writes the qkv projection's e4m3 codes.
                let (mut q8, mut s8) = bufs.fp8.views_mut(t, h)?;
                if l == 0 {
                    rms_norm_quant_fp8(dev, &rows(&bufs.residual, t, h)?, &w_in, &mut q8, &mut s8, ScaleGranularity::Group128, norm)?;
                } else {
                    let mut residual = rows_mut(&mut bufs.residual, t, h)?;
                    fused_add_rms_norm_quant_fp8(dev, &rows(&bufs.x, t, h)?, &mut residual, &w_in, &mut q8, &mut s8, ScaleGranularity::Group128, norm)?;
                }
            } else if l == 0 {
                rms_norm(dev, &rows(&bufs.residual, t, h)?, &w_in, &mut rows_mut(&mut bufs.x, t, h)?, norm)?;
            } else {
                fused_add_rms_norm(dev, &mut rows_mut(&mut bufs.x, t, h)?, &mut rows_mut(&mut bufs.residual, t, h)?, &w_in, norm)?;
            }
            // The layer's cache, with its scales (1 for bf16).
            match (&layer.attn, &mut batch.cache[l]) {
                (GpuAttention::Gqa { qkv, o, attn_sub_norm, qk_norm }, cache) => {
                    let w = (qkv, o, attn_sub_norm.as_ref(), qk_norm.as_ref());
                    match cache {
                        LayerCache::Bf16(k, Some(v)) => self.gqa_attention(ex, bufs, t, w, (k, v, KvScales::ONE), &ls)?,
                        LayerCache::Fp8(k, Some(v), scales) => self.gqa_attention(ex, bufs, t, w, (k, v, *scales), &ls)?,
                        _ => unreachable!("a GQA layer's cache has V pages"),
                    }
                }
                (GpuAttention::Mla(m), LayerCache::Bf16(pages, _)) => self.mla_attention(ex, bufs, t, m, (pages, KvScales::ONE), &ls)?,
                (GpuAttention::Mla(m), LayerCache::Fp8(pages, _, scales)) => self.mla_attention(ex, bufs, t, m, (pages, *scales), &ls)?,
            }
            let w_post = vector(&layer.post_norm, h)?;
            if self.int8_norms() {
                let (mut q8, mut s8) = bufs.int8.views_mut(t, h)?;
                let mut residual = rows_mut(&mut bufs.residual, t, h)?;
                fused_add_rms_norm_quantize_activations(dev, &rows(&bufs.x, t, h)?, &mut residual, &w_post, norm, &mut q8, &mut s8)?;
            } else if layer.fp8_post_norm() {
                let (mut q8, mut s8) = bufs.fp8.views_mut(t, h)?;
                let mut residual = rows_mut(&mut bufs.residual, t, h)?;
                fused_add_rms_norm_quant_fp8(dev, &rows(&bufs.x, t, h)?, &mut residual, &w_post, &mut q8, &mut s8, ScaleGranularity::Group128, norm)?;
            } else {
                fused_add_rms_norm(dev, &mut rows_mut(&mut bufs.x, t, h)?, &mut rows_mut(&mut bufs.residual, t, h)?, &w_post, norm)?;
            }
            match &layer.mlp {
                GpuMlp::Dense { gate_up, down, inter, sub_norm } => self.dense_mlp(ex, bufs, t, gate_up, down, *inter, sub_norm.as_ref(), norm)?,
                GpuMlp::Moe { router, gate_up, down, inter, bias, shared } => self.moe_mlp(ex, bufs, t, router, bias.as_ref(), (gate_up, down, *inter), shared.as_ref())?,
            }
        }
        let v = c.vocab_size;
        fused_add_rms_norm(dev, &mut rows_mut(&mut bufs.x, t, h)?, &mut rows_mut(&mut bufs.residual, t, h)?, &vector(&self.norm, h)?, norm)?;
        let r = step.logit_rows.len();
        let lm_head = rows(self.lm_head.as_ref().unwrap_or(&self.embed), v, h)?;
        let all_rows = r == t && step.logit_rows.iter().enumerate().all(|(i, &row)| row as usize == i);
        if all_rows {
            ex.gemm.linear(dev, &rows(&bufs.x, t, h)?, &lm_head, &mut rows_mut(&mut bufs.logits, r, v)?)?;
        } else {
            select_rows(dev, &rows(&bufs.x, t, h)?, &logit_rows, &mut rows_mut(&mut bufs.selected, r, h)?)?;
            ex.gemm.linear(dev, &rows(&bufs.selected, r, h)?, &lm_head, &mut rows_mut(&mut bufs.logits, r, v)?)?;
        }
        Ok(())
    }
}
