//! The GPU path's MLA layer (DeepSeek-V3), in the absorbed form for every step — prefill and
//! decode alike — over the paged latent cache:
//!
//! ```text
//! [q_a | c] = x · [W_q_a; W_kv_a[:512]]ᵀ                          one GEMM (FP8: one x quantization)
//! q_in = x, or rms_norm(q_a) (q_a_layernorm)                        [T, hidden or q_lora_rank]
//! q̃ = q_in · W_q̃ᵀ                                                  [T, heads, 512 + 64]
//!     W_q̃ per head: W_ukᵀ · W_q_nope (512 rows), then W_q_pe (64)   folded at load
//! latent[:, 512:] = x · W_kv_a[512:]ᵀ (k_pe)                        bf16 (64 rows: no FP8 block)
//! latent[:, :512] = rms_norm(c) (kv_a_layernorm)                    [T, 576] = [c_kv | k_pe]
//! rope_append_kv: RoPE on q̃[.., 512:] and latent[.., 512:] (rotary_offset 512), each
//!                 token's latent row into the latent cache             one launch
//! o_lat = attention(q̃, latent cache)      head dims (576, 512), V = the rows' first 512
//! x = o_lat · W_õᵀ                                                   [T, hidden]
//!     W_õ = W_o with W_uv folded in: per head W_o[:, h] · W_uv,h     folded at load
//! ```
//!
//! Folding W_uk into the query projection and W_uv into o_proj (in f64 at load, one rounding to
//! bf16) makes each side one GEMM; the price is weight bytes: W_q̃ holds 576 rows per head
//! against q's 192 (at DeepSeek-V3's 128 + 64 + 512 dims), and W_õ 512 columns per head against
//! o_proj's 128 — 3× and 4×. Per-head GEMMs on the unfolded weights are the alternative (many
//! small launches); a decode-speed model would measure both. The absorbed form for prefill
//! costs 576 + 512 MACs per key and head against the naive form's 192 + 128, which the
//! attention kernels also take (head dims (192, 128)) but which needs every cached latent
//! expanded per head: one path for both keeps the layer simple.

use super::super::{MlaConfig, ModelConfig, Weights};
use super::{alloc, rows, rows_mut, to_bf16, vector, vector_mut, Buffers, Exec, GpuLinear, GpuModel, LayerStep};
use crate::kv_cache::{KvCacheMut, KvCacheView, KvScales};
use crate::ops::attention::{attention, KvInput, MLA_DECODE};
use crate::ops::rms_norm::{rms_norm, RmsNormConfig};
use crate::ops::rope::{rope_append_kv, Qkv};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;
use half::bf16;

/// The latent's width and a latent row's: kv_lora_rank and kv_lora_rank + qk_rope_head_dim.
pub(super) const LATENT: usize = MLA_DECODE.1;
pub(super) const ROW: usize = MLA_DECODE.0;

/// One MLA layer's weights. The folded projections are bf16; q_a_proj and the latent rows of
/// kv_a_proj_with_mqa stay FP8 where the checkpoint has FP8 blocks (see linear.rs), k_pe's 64
/// rows are dequantized.
pub(super) struct GpuMla {
    /// The projections of x into the low-rank spaces, stacked: `q_a_proj` `[q_lora_rank,
    /// hidden]` (when there is one) and the 512 latent rows of `kv_a_proj_with_mqa`, one GEMM
    /// (FP8: one quantization of x) for both.
    qkv_a: GpuLinear,
    /// `q_a_layernorm` `[q_lora_rank]`; None: q_proj (no q compression).
    q_a_norm: Option<CudaSlice<bf16>>,
    /// `[heads · 576, q_in]`: per head W_ukᵀ · W_q_nope (512 rows) then W_q_pe (64 rows).
    q_abs: GpuLinear,
    /// `kv_a_proj_with_mqa`'s 64 k_pe rows (never whole FP8 blocks: bf16).
    kv_a_pe: GpuLinear,
    /// `kv_a_layernorm` `[512]`.
    kv_a_norm: CudaSlice<bf16>,
    /// `[hidden, heads · 512]`: o_proj with W_uv folded in.
    o_abs: GpuLinear,
    /// q_abs's input width: hidden or q_lora_rank.
    q_in: usize,
}

/// The MLA layers' activations for `t` tokens.
pub(super) struct MlaBuffers {
    /// `[t, q_lora_rank + 512]`: q_a_proj's output and the latent before kv_a_layernorm.
    qkv_a: CudaSlice<bf16>,
    /// `[t, q_lora_rank]`: q_a_proj's output normalised.
    qa_norm: CudaSlice<bf16>,
    /// `[t, 576]`: the latent rows `[c_kv | k_pe]` as the cache stores them.
    latent: CudaSlice<bf16>,
    /// `[t, heads, 576]` absorbed queries and `[t, heads, 512]` attention output.
    q: CudaSlice<bf16>,
    o: CudaSlice<bf16>,
}

impl MlaBuffers {
    pub(super) fn new(dev: &Device, t: usize, c: &ModelConfig, m: &MlaConfig) -> Result<Self> {
        let (heads, q_lora) = (c.num_q_heads, m.q_lora_rank.unwrap_or(0));
        Ok(Self {
            qkv_a: alloc(dev, t * (q_lora + LATENT))?,
            qa_norm: alloc(dev, t * q_lora)?,
            latent: alloc(dev, t * ROW)?,
            q: alloc(dev, t * heads * ROW)?,
            o: alloc(dev, t * heads * LATENT)?,
        })
    }
}

/// Folds W_uk into the query projection: `w_q` `[heads · (d_nope + d_rope), q_in]`, `kv_b`
/// `[heads · (d_nope + d_v), 512]` → `[heads · 576, q_in]` (f64 sums).
fn fold_query(m: &MlaConfig, heads: usize, w_q: &[f32], kv_b: &[f32], q_in: usize) -> Vec<f32> {
    let (dn, dr, dv) = (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim);
    let mut out = vec![0.0f32; heads * ROW * q_in];
    let mut acc = vec![0.0f64; q_in];
    for h in 0..heads {
        let q_row = |d: usize| &w_q[(h * (dn + dr) + d) * q_in..][..q_in];
        for i in 0..LATENT {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for d in 0..dn {
                let uk = kv_b[(h * (dn + dv) + d) * LATENT + i] as f64;
                for (a, &w) in acc.iter_mut().zip(q_row(d)) {
                    *a += uk * w as f64;
                }
            }
            out[(h * ROW + i) * q_in..][..q_in].iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
        for r in 0..dr {
            out[(h * ROW + LATENT + r) * q_in..][..q_in].copy_from_slice(q_row(dn + r));
        }
    }
    out
}

/// Folds W_uv into o_proj: `w_o` `[hidden, heads · d_v]`, `kv_b` → `[hidden, heads · 512]`.
fn fold_output(m: &MlaConfig, heads: usize, hidden: usize, w_o: &[f32], kv_b: &[f32]) -> Vec<f32> {
    let (dn, dv) = (m.qk_nope_head_dim, m.v_head_dim);
    let mut out = vec![0.0f32; hidden * heads * LATENT];
    let mut acc = vec![0.0f64; LATENT];
    for k in 0..hidden {
        for h in 0..heads {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for e in 0..dv {
                let wo = w_o[k * heads * dv + h * dv + e] as f64;
                for (a, &uv) in acc.iter_mut().zip(&kv_b[(h * (dn + dv) + dn + e) * LATENT..][..LATENT]) {
                    *a += wo * uv as f64;
                }
            }
            out[(k * heads + h) * LATENT..][..LATENT].iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
    }
    out
}

impl GpuMla {
    /// Layer `p` (`model.layers.{l}.`)'s MLA weights, folded as the module docs say.
    pub(super) fn load(dev: &Device, w: &Weights, c: &ModelConfig, m: &MlaConfig, p: &str) -> Result<Self> {
        let (h, heads) = (c.hidden_size, c.num_q_heads);
        let at = |n: &str| format!("{p}self_attn.{n}");
        let get = |name: &str, shape: &[usize]| w.get_shaped(name, shape);
        let up = |v: Vec<f32>| dev.upload(&to_bf16(&v));
        let qd = heads * (m.qk_nope_head_dim + m.qk_rope_head_dim);
        let kv_b = get(&at("kv_b_proj.weight"), &[heads * (m.qk_nope_head_dim + m.v_head_dim), LATENT])?;
        let (q_a_norm, w_q, q_in) = match m.q_lora_rank {
            None => (None, get(&at("q_proj.weight"), &[qd, h])?, h),
            Some(rank) => (Some(up(get(&at("q_a_layernorm.weight"), &[rank])?)?), get(&at("q_b_proj.weight"), &[qd, rank])?, rank),
        };
        let w_o = get(&at("o_proj.weight"), &[h, heads * m.v_head_dim])?;
        let kv_a = at("kv_a_proj_with_mqa.weight");
        let q_a = at("q_a_proj.weight");
        let mut parts = Vec::new();
        if let Some(rank) = m.q_lora_rank {
            parts.push((q_a.as_str(), rank, 0..rank));
        }
        parts.push((kv_a.as_str(), ROW, 0..LATENT));
        Ok(Self {
            qkv_a: GpuLinear::load_stacked(dev, w, c, &parts, h)?,
            q_a_norm,
            q_abs: GpuLinear::dense(dev, &fold_query(m, heads, &w_q, &kv_b, q_in), heads * ROW, q_in)?,
            kv_a_pe: GpuLinear::load_stacked(dev, w, c, &[(kv_a.as_str(), ROW, LATENT..ROW)], h)?,
            kv_a_norm: up(get(&at("kv_a_layernorm.weight"), &[LATENT])?)?,
            o_abs: GpuLinear::dense(dev, &fold_output(m, heads, h, &w_o, &kv_b), h, heads * LATENT)?,
            q_in,
        })
    }

    /// Elements of the norms' weights (bf16).
    pub(super) fn norms_len(&self) -> usize {
        self.q_a_norm.as_ref().map_or(0, CudaSlice::len) + self.kv_a_norm.len()
    }

    /// Every projection of the layer.
    pub(super) fn linears(&self) -> Vec<&GpuLinear> {
        vec![&self.qkv_a, &self.q_abs, &self.kv_a_pe, &self.o_abs]
    }
}

impl GpuModel {
    /// x `[t, hidden]` (normalised) → x: the MLA layer of the module docs; writes the step's
    /// latent rows into `pages` (`s.page_shape`: `[num_pages, page_size, 1, 576]`; `s.rope` over the
    /// rope part at offset 512 of each 576-wide head); bf16 pages (scales 1), or e4m3 with
    /// their one scale (k = v).
    pub(super) fn mla_attention<C: DType>(&self, ex: Exec, bufs: &mut Buffers, t: usize, layer: &GpuMla, (pages, scales): (&mut CudaSlice<C>, KvScales), s: &LayerStep) -> Result<()> {
        let (dev, h, heads) = (ex.dev, self.config.hidden_size, self.config.num_q_heads);
        let norm = RmsNormConfig::new(MlaConfig::LATENT_NORM_EPS);
        let mb = bufs.mla.as_mut().expect("MLA buffers are allocated for MLA models");
        let x = rows(&bufs.x, t, h)?;
        // [q_a | c] = x · [W_q_a; W_kv_a[:512]]ᵀ: one GEMM. Row r of qkv_a: q_lora then 512.
        let q_lora = layer.q_a_norm.as_ref().map_or(0, |_| layer.q_in);
        let width = q_lora + LATENT;
        layer.qkv_a.forward(dev, ex.gemm, &mut bufs.fp8, &x, &mut rows_mut(&mut mb.qkv_a, t, width)?)?;
        // q̃ = q_in · W_q̃ᵀ.
        let q_in = match &layer.q_a_norm {
            Some(n) => {
                let qa = TensorView::new(mb.qkv_a.slice(..t * width), [t, q_lora], [width, 1])?;
                rms_norm(dev, &qa, &vector(n, q_lora)?, &mut rows_mut(&mut mb.qa_norm, t, q_lora)?, norm)?;
                rows(&mb.qa_norm, t, q_lora)?
            }
            None => rows(&bufs.x, t, h)?,
        };
        layer.q_abs.forward(dev, ex.gemm, &mut bufs.fp8, &q_in, &mut rows_mut(&mut mb.q, t, heads * ROW)?)?;
        // The latent rows: k_pe straight into columns 512.., the normalised latent before it.
        let mut k_pe = TensorViewMut::new(mb.latent.slice_mut(LATENT..t * ROW), [t, ROW - LATENT], [ROW, 1])?;
        layer.kv_a_pe.forward(dev, ex.gemm, &mut bufs.fp8, &x, &mut k_pe)?;
        let c = TensorView::new(mb.qkv_a.slice(q_lora..t * width), [t, LATENT], [width, 1])?;
        let mut c_kv = TensorViewMut::new(mb.latent.slice_mut(..t * ROW), [t, LATENT], [ROW, 1])?;
        rms_norm(dev, &c, &vector(&layer.kv_a_norm, LATENT)?, &mut c_kv, norm)?;
        // RoPE on both rope parts, the latent rows into the cache.
        {
            let mut q = TensorViewMut::contiguous(mb.q.slice_mut(..t * heads * ROW), [t, heads, ROW])?;
            let mut k = TensorViewMut::contiguous(mb.latent.slice_mut(..t * ROW), [t, 1, ROW])?;
            let mut cache = KvCacheMut::latent(TensorViewMut::contiguous(pages.as_view_mut(), s.page_shape)?, LATENT)?.with_scales(scales)?;
            rope_append_kv(dev, Qkv::split(&mut q, &mut k), s.positions, &s.rope, s.slots, &mut cache)?;
        }
        // Attention over the latent cache, then W_õ.
        {
            let q = TensorView::contiguous(mb.q.slice(..t * heads * ROW), [t, heads, ROW])?;
            let cache = KvCacheView::latent(TensorView::contiguous(pages.as_view(), s.page_shape)?, LATENT)?.with_scales(scales)?;
            let mut out = TensorViewMut::contiguous(mb.o.slice_mut(..t * heads * LATENT), [t, heads, LATENT])?;
            let ws_len = bufs.workspace.len();
            let mut ws = vector_mut(&mut bufs.workspace, ws_len)?;
            let kv = KvInput::Paged { cache: &cache, table: s.table };
            attention(dev, &q, s.cu_seqlens_q, kv, s.plan, &s.cfg, &mut out, None, Some(&mut ws))?;
        }
        layer.o_abs.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&mb.o, t, heads * LATENT)?, &mut rows_mut(&mut bufs.x, t, h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folded weights compute what the unfolded chain computes: q̃_nope = W_ukᵀ (W_q_nope
    /// x), q̃_pe = W_q_pe x, and W_o (W_uv o_lat) per head.
    #[test]
    fn folding_matches_the_unfolded_chain() {
        let m = MlaConfig { q_lora_rank: None, kv_lora_rank: LATENT, qk_nope_head_dim: 3, qk_rope_head_dim: ROW - LATENT, v_head_dim: 2, rope_interleave: true };
        let (heads, q_in, hidden) = (2, 5, 4);
        let mut rng = crate::check::Rng::new(5);
        let w_q: Vec<f32> = rng.vec(heads * (3 + 64) * q_in, -1.0, 1.0);
        let kv_b: Vec<f32> = rng.vec(heads * (3 + 2) * LATENT, -1.0, 1.0);
        let w_o: Vec<f32> = rng.vec(hidden * heads * 2, -1.0, 1.0);
        let x: Vec<f32> = rng.vec(q_in, -1.0, 1.0);
        let o_lat: Vec<f32> = rng.vec(heads * LATENT, -1.0, 1.0);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        let fq = fold_query(&m, heads, &w_q, &kv_b, q_in);
        let fo = fold_output(&m, heads, hidden, &w_o, &kv_b);
        for h in 0..heads {
            let q: Vec<f64> = (0..67).map(|d| dot(&w_q[(h * 67 + d) * q_in..][..q_in], &x)).collect();
            for i in (0..LATENT).step_by(37) {
                let want: f64 = (0..3).map(|d| kv_b[(h * 5 + d) * LATENT + i] as f64 * q[d]).sum();
                let got = dot(&fq[(h * ROW + i) * q_in..][..q_in], &x);
                assert!((got - want).abs() < 1e-4, "q̃ nope h{h} i{i}: {got} vs {want}");
            }
            for r in 0..64 {
                let got = dot(&fq[(h * ROW + LATENT + r) * q_in..][..q_in], &x);
                assert!((got - q[3 + r]).abs() < 1e-5);
            }
        }
        for k in 0..hidden {
            let mut want = 0.0;
            for h in 0..heads {
                for e in 0..2 {
                    let v = dot(&kv_b[(h * 5 + 3 + e) * LATENT..][..LATENT], &o_lat[h * LATENT..][..LATENT]);
                    want += w_o[k * heads * 2 + h * 2 + e] as f64 * v;
                }
            }
            let got = dot(&fo[k * heads * LATENT..][..heads * LATENT], &o_lat);
            assert!((got - want).abs() < 1e-3, "o k{k}: {got} vs {want}");
        }
    }
}
