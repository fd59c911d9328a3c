//! The GPU path's MoE layer: router GEMM → `moe_gate` (softmax top-k, or DeepSeek-V3's sigmoid
//! grouped top-k with its selection bias) → `moe_align` (block_m 1) → `moe_gather` → the
//! experts' gate_up GEMMs over each expert's rows → one `glu` → the experts' down GEMMs →
//! `moe_combine`; DeepSeek-V3's shared experts run on the same input first and their down GEMM
//! adds into the combined output. The experts run as one grouped GEMM per projection
//! (`matmul_grouped` for bf16 weights, `matmul_fp8_grouped` for FP8 ones), which reads the
//! experts' row offsets on the device: the layer never waits for the GPU. FP8 experts' input is
//! quantized before the gather (t token rows instead of t · top_k expert rows; the gather then
//! moves e4m3 codes and their 1×128 scales: the same bytes the GEMM would have read, per row,
//! bit for bit).

use super::linear::Input;
use super::mlp::{glu_rows, glu_rows_fp8};
use super::{alloc, rows, rows_mut, vector, vector_mut, Buffers, Exec, GpuLinear, GpuModel, SharedExpert};
use crate::ops::quant::FP8_BLOCK;
use crate::F8E4M3;
use crate::model::MoeConfig;
use crate::ops::moe_routing::{moe_align, moe_combine, moe_gate, moe_gather, MoeAlignOutputs, MoeAlignSizes};
use crate::{Device, Result};
use cudarc::driver::CudaSlice;
use half::bf16;

/// MoE scratch for `max_tokens` tokens.
pub(super) struct MoeBuffers {
    logits: CudaSlice<f32>,
    topk_ids: CudaSlice<i32>,
    topk_weights: CudaSlice<f32>,
    sorted_ids: CudaSlice<i32>,
    block_expert_ids: CudaSlice<i32>,
    expert_offsets: CudaSlice<i32>,
    expert_counts: CudaSlice<i32>,
    token_positions: CudaSlice<i32>,
    align_workspace: CudaSlice<i32>,
    /// `[max_tokens · top_k, hidden]`: token rows in expert order (bf16 experts), then the
    /// experts' outputs.
    gathered: CudaSlice<bf16>,
    /// FP8 experts: the token rows' e4m3 codes `[max_tokens · top_k, hidden]` and 1×128 scales
    /// `[max_tokens · top_k, hidden / 128]` in expert order.
    gathered_q: CudaSlice<F8E4M3>,
    gathered_s: CudaSlice<f32>,
    expert_out: CudaSlice<bf16>,
    /// `[max_tokens, shared inter]`: the shared experts' activations.
    shared_act: CudaSlice<bf16>,
}

impl MoeBuffers {
    /// `fp8_experts`: some MoE layer's gate_up is FP8 (its rows are gathered as codes).
    pub(super) fn new(dev: &Device, t: usize, m: &MoeConfig, h: usize, fp8_experts: bool) -> Result<Self> {
        let sizes = MoeAlignSizes::new(t, m.top_k, m.num_experts, 1)?;
        let fp8_rows = if fp8_experts { sizes.sorted_len } else { 0 };
        Ok(Self {
            logits: alloc(dev, t * m.num_experts)?,
            topk_ids: alloc(dev, t * m.top_k)?,
            topk_weights: alloc(dev, t * m.top_k)?,
            sorted_ids: alloc(dev, sizes.sorted_len)?,
            block_expert_ids: alloc(dev, sizes.blocks_len)?,
            expert_offsets: alloc(dev, m.num_experts + 1)?,
            expert_counts: alloc(dev, m.num_experts)?,
            token_positions: alloc(dev, t * m.top_k)?,
            align_workspace: alloc(dev, sizes.workspace_len)?,
            gathered: alloc(dev, sizes.sorted_len * h)?,
            gathered_q: alloc(dev, fp8_rows * h)?,
            gathered_s: alloc(dev, fp8_rows * h.div_ceil(FP8_BLOCK))?,
            expert_out: alloc(dev, sizes.sorted_len * h)?,
            shared_act: alloc(dev, t * m.num_shared_experts * m.intermediate_size)?,
        })
    }
}

impl GpuModel {
    /// x `[t, hidden]` → x through the routed experts (`experts`: stacked gate_up, down, and
    /// their intermediate size), plus the shared experts when there are.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_mlp(
        &self,
        ex: Exec,
        bufs: &mut Buffers,
        t: usize,
        router: &CudaSlice<bf16>,
        bias: Option<&CudaSlice<f32>>,
        (gate_up, down, inter): (&GpuLinear, &GpuLinear, usize),
        shared: Option<&SharedExpert>,
    ) -> Result<()> {
        let (dev, h) = (ex.dev, self.config.hidden_size);
        let m = self.config.moe.as_ref().expect("a MoE layer has a MoE config");
        let (ne, k) = (m.num_experts, m.top_k);
        // FP8 experts: x's codes and 1×128 scales, once for the t token rows; the gathers (and an
        // FP8 shared expert's gate_up) read them.
        let fp8_in = gate_up.fp8_k().is_some();
        if fp8_in {
            bufs.fp8.quantize(dev, &rows(&bufs.x, t, h)?)?;
        }
        // The shared experts' activations, before the routed experts reuse gate_up.
        if let Some(s) = shared {
            let y = &mut rows_mut(&mut bufs.gate_up, t, 2 * s.inter)?;
            if fp8_in && s.gate_up.fp8_k().is_some() {
                s.gate_up.forward_fp8(dev, ex.gemm, &bufs.fp8, t, y)?;
            } else {
                s.gate_up.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&bufs.x, t, h)?, y)?;
            }
            let mb = bufs.moe.as_mut().expect("MoE buffers are allocated for MoE models");
            glu_rows(dev, self.act, &bufs.gate_up, &mut mb.shared_act, t, s.inter)?;
        }
        let mb = bufs.moe.as_mut().expect("MoE buffers are allocated for MoE models");
        ex.gemm.linear(dev, &rows(&bufs.x, t, h)?, &rows(router, ne, h)?, &mut rows_mut(&mut mb.logits, t, ne)?)?;
        let gate_cfg = m.gate();
        let bias = bias.map(|b| vector(b, ne)).transpose()?;
        moe_gate(dev, &rows(&mb.logits, t, ne)?, bias.as_ref(), &mut rows_mut(&mut mb.topk_ids, t, k)?, &mut rows_mut(&mut mb.topk_weights, t, k)?, None, &gate_cfg)?;
        let sizes = MoeAlignSizes::new(t, k, ne, 1)?;
        let n = sizes.sorted_len; // = t · k: block_m 1 pads nothing
        moe_align(
            dev,
            &rows(&mb.topk_ids, t, k)?,
            ne,
            1,
            MoeAlignOutputs {
                sorted_ids: &mut vector_mut(&mut mb.sorted_ids, n)?,
                block_expert_ids: &mut vector_mut(&mut mb.block_expert_ids, sizes.blocks_len)?,
                expert_offsets: &mut vector_mut(&mut mb.expert_offsets, ne + 1)?,
                expert_counts: &mut vector_mut(&mut mb.expert_counts, ne)?,
                token_positions: &mut rows_mut(&mut mb.token_positions, t, k)?,
                workspace: &mut vector_mut(&mut mb.align_workspace, sizes.workspace_len)?,
            },
        )?;
        let (positions, offsets, counts) = (rows(&mb.token_positions, t, k)?, vector(&mb.expert_offsets, ne + 1)?, vector(&mb.expert_counts, ne)?);
        if fp8_in {
            let (q, s) = bufs.fp8.rows(t, h)?;
            moe_gather(dev, &q, &positions, &offsets, &counts, &mut rows_mut(&mut mb.gathered_q, n, h)?)?;
            moe_gather(dev, &s, &positions, &offsets, &counts, &mut rows_mut(&mut mb.gathered_s, n, h / FP8_BLOCK)?)?;
        } else {
            moe_gather(dev, &rows(&bufs.x, t, h)?, &positions, &offsets, &counts, &mut rows_mut(&mut mb.gathered, n, h)?)?;
        }
        let gate_up_out = &mut rows_mut(&mut bufs.gate_up, n, 2 * inter)?;
        if fp8_in {
            let codes = (rows(&mb.gathered_q, n, h)?, rows(&mb.gathered_s, n, h / FP8_BLOCK)?);
            gate_up.forward_grouped(dev, Input::Fp8(&codes), &offsets, gate_up_out)?;
        } else {
            gate_up.forward_grouped(dev, Input::Bf16(&rows(&mb.gathered, n, h)?), &offsets, gate_up_out)?;
        }
        let expert_out = &mut rows_mut(&mut mb.expert_out, n, h)?;
        if down.fp8_k().is_some() {
            // The GLU writes the down projection's e4m3 codes: no bf16 activation row.
            glu_rows_fp8(dev, self.act, &bufs.gate_up, &mut bufs.fp8, n, inter)?;
            down.forward_grouped(dev, Input::Fp8(&bufs.fp8.rows(n, inter)?), &offsets, expert_out)?;
        } else {
            glu_rows(dev, self.act, &bufs.gate_up, &mut bufs.act, n, inter)?;
            down.forward_grouped(dev, Input::Bf16(&rows(&bufs.act, n, inter)?), &offsets, expert_out)?;
        }
        moe_combine(dev, &rows(&mb.expert_out, n, h)?, &rows(&mb.token_positions, t, k)?, &rows(&mb.topk_weights, t, k)?, &mut rows_mut(&mut bufs.x, t, h)?)?;
        match shared {
            Some(s) => s.down.forward_add(dev, ex.gemm, &mut bufs.fp8, &rows(&mb.shared_act, t, s.inter)?, &mut bufs.x),
            None => Ok(()),
        }
    }
}
