//! The GPU path's GQA attention layer (Llama, Qwen3, Mixtral, Qwen3-MoE, BitNet): the fused qkv
//! projection, RoPE (Qwen3: with per-head q/k RMSNorm) and the K/V append in one launch,
//! attention over the paged cache, o_proj (BitNet: attn_sub_norm into int8 codes first).

use super::{rows, rows_mut, vector, vector_mut, Buffers, Exec, GpuLinear, GpuModel, LayerStep};
use crate::kv_cache::{KvCacheMut, KvCacheView, KvScales};
use crate::ops::attention::{attention, KvInput};
use crate::ops::matmul_ternary::rms_norm_quantize_activations;
use crate::ops::rope::{qk_norm_rope_append_kv, rope_append_kv, QkNorm, Qkv};
use crate::{DType, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;
use half::bf16;

/// A GQA layer's weights: qkv, o, BitNet's attn_sub_norm, Qwen3's q/k norms.
pub(super) type GqaWeights<'l> = (&'l GpuLinear, &'l GpuLinear, Option<&'l CudaSlice<bf16>>, Option<&'l (CudaSlice<bf16>, CudaSlice<bf16>)>);

impl GpuModel {
    /// x `[t, hidden]` (normalised; BitNet: the int8 codes the norm wrote) → x. The layer's
    /// K and V pages are bf16 (scales 1), or e4m3 with its scales.
    pub(super) fn gqa_attention<C: DType>(
        &self,
        ex: Exec,
        bufs: &mut Buffers,
        t: usize,
        (qkv, o, attn_sub_norm, qk_norm): GqaWeights,
        (k_pages, v_pages, scales): (&mut CudaSlice<C>, &mut CudaSlice<C>, KvScales),
        s: &LayerStep,
    ) -> Result<()> {
        let c = &self.config;
        let (dev, h, hd, nq, nkv) = (ex.dev, c.hidden_size, c.head_dim, c.num_q_heads, c.num_kv_heads);
        let qkv_dim = self.qkv_dim();
        if self.int8_norms() {
            qkv.forward_quantized(dev, &bufs.int8, t, h, &mut bufs.qkv)?;
        } else if qkv.fp8_k().is_some() {
            // The input norm wrote its e4m3 codes (GpuLayer::fp8_input_norm).
            qkv.forward_fp8(dev, ex.gemm, &bufs.fp8, t, &mut rows_mut(&mut bufs.qkv, t, qkv_dim)?)?;
        } else {
            qkv.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&bufs.x, t, h)?, &mut rows_mut(&mut bufs.qkv, t, qkv_dim)?)?;
        }
        {
            let mut qkv = TensorViewMut::contiguous(bufs.qkv.slice_mut(..t * qkv_dim), [t, nq + 2 * nkv, hd])?;
            let mut cache = KvCacheMut::new(TensorViewMut::contiguous(k_pages.as_view_mut(), s.page_shape)?, TensorViewMut::contiguous(v_pages.as_view_mut(), s.page_shape)?)?.with_scales(scales)?;
            let heads = Qkv::fused(&mut qkv, nq, nkv);
            match qk_norm {
                Some((qw, kw)) => {
                    let (q_weight, k_weight) = (vector(qw, hd)?, vector(kw, hd)?);
                    let qk = QkNorm { q_weight: &q_weight, k_weight: &k_weight, cfg: s.norm };
                    qk_norm_rope_append_kv(dev, heads, s.positions, &s.rope, qk, s.slots, &mut cache)?;
                }
                None => rope_append_kv(dev, heads, s.positions, &s.rope, s.slots, &mut cache)?,
            }
        }
        {
            // q: the first num_q_heads heads of each qkv row.
            let q = TensorView::new(bufs.qkv.slice(..t * qkv_dim), [t, nq, hd], [qkv_dim, hd, 1])?;
            let cache = KvCacheView::new(TensorView::contiguous(k_pages.as_view(), s.page_shape)?, TensorView::contiguous(v_pages.as_view(), s.page_shape)?)?.with_scales(scales)?;
            let mut out = TensorViewMut::contiguous(bufs.attn.slice_mut(..t * nq * hd), [t, nq, hd])?;
            let ws_len = bufs.workspace.len();
            let mut ws = vector_mut(&mut bufs.workspace, ws_len)?;
            let kv = KvInput::Paged { cache: &cache, table: s.table };
            attention(dev, &q, s.cu_seqlens_q, kv, s.plan, &s.cfg, &mut out, None, Some(&mut ws))?;
        }
        match attn_sub_norm {
            // BitNet's attn_sub_norm, straight into o_proj's int8 codes.
            Some(w) => {
                {
                    let (mut q8, mut s8) = bufs.int8.views_mut(t, nq * hd)?;
                    rms_norm_quantize_activations(dev, &rows(&bufs.attn, t, nq * hd)?, &vector(w, nq * hd)?, s.norm, &mut q8, &mut s8)?;
                }
                o.forward_quantized(dev, &bufs.int8, t, nq * hd, &mut bufs.x)
            }
            None => o.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&bufs.attn, t, nq * hd)?, &mut rows_mut(&mut bufs.x, t, h)?),
        }
    }
}
