//! The CPU oracle path: one decoder for Llama, Qwen3, Mixtral, Qwen3-MoE, DeepSeek-V3 and BitNet,
//! built only from `crate::reference` functions, activations in f32 between ops (each op computes
//! in f64). It exists to be right, not fast: tests compare it with transformers' logits. Its
//! projections (`reference::linear`) run on every core, so that a real checkpoint is usable.
//! Attention is GQA or MLA (DeepSeek: latent keys and values expanded per head,
//! `reference::mla::mla_naive`); FP8 block weights are dequantized to f32 on load; BitNet's
//! projections are ternary AutoBitLinear layers (`reference::matmul_ternary`) with sub-norms.

use super::weights::Matrix;
use super::{is_finished, MlaConfig, ModelConfig, Sampler, Sampling, Weights};
use crate::ops::rms_norm::RmsNormConfig;
use crate::ops::rope::{RopeConfig, RopeScaling};
use crate::reference::attention::{attention, AttentionMask, AttentionShape};
use crate::reference::linear::linear;
use crate::reference::mla::{mla_naive, MlaShape};
use crate::reference::mlp::{glu, GluActivation};
use crate::reference::matmul_ternary::{self as ternary, TernaryWeights};
use crate::reference::{moe_routing, rms_norm, rope};
use crate::ops::quant::{ScaleGranularity, FP8_BLOCK};
use crate::kv_cache::KvScales;
use crate::reference::kv_cache;
use crate::{Error, Result, F8E4M3};

// CpuModel::load / from_weights / with_fp8_inputs and the layer loaders.
mod load;

/// A projection `[n, k]`: dense (as the checkpoint stores it), FP8, or BitNet's ternary
/// AutoBitLinear (int8 activations).
enum Linear {
    Dense(Matrix),
    /// An FP8 checkpoint's projection in whole 128 × 128 blocks (n and k multiples of 128: the
    /// projections the GPU path runs on its FP8 GEMM), dequantized. `quantize_input`
    /// ([`CpuModel::with_fp8_inputs`]): x is first rounded to e4m3 per token per 128 columns
    /// (`reference::quant`, dynamic 1×128 group scales), as FP8 inference computes.
    Fp8 { w: Vec<f32>, quantize_input: bool },
    BitLinear(TernaryWeights),
}

impl Linear {
    /// x `[m, k]` → `[m, n]`.
    fn apply(&self, x: &[f32], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
        match self {
            Self::Dense(w) => w.linear(x, bias, k),
            Self::Fp8 { w, quantize_input: false } => linear(x, w, bias, k),
            Self::Fp8 { w, quantize_input: true } => {
                let q = crate::reference::quant::quantize_f32(x, x.len() / k, k, ScaleGranularity::Group128);
                linear(&f64_to_f32(q.dequantize()), w, bias, k)
            }
            Self::BitLinear(w) => ternary::bit_linear(x, w, bias, k),
        }
    }

    /// Rows `rows` of the checkpoint's `name` (`[total_rows, k]`): [`Linear::Fp8`] where the
    /// checkpoint stores `name` in block FP8 and the rows and k are whole 128-blocks, else dense.
    fn from_checkpoint(wts: &Weights, c: &ModelConfig, name: &str, total_rows: usize, rows: std::ops::Range<usize>, k: usize) -> Result<Self> {
        let whole = |v: usize| v.is_multiple_of(FP8_BLOCK);
        let fp8 = c.fp8_weight_block == Some([FP8_BLOCK, FP8_BLOCK])
            && whole(rows.start)
            && whole(rows.len())
            && whole(k)
            && wts.is_e4m3(name)?;
        let all = rows == (0..total_rows);
        let part = rows.start * k..rows.end * k;
        Ok(if fp8 {
            let w = wts.get_shaped(name, &[total_rows, k])?;
            Self::Fp8 { w: if all { w } else { w[part].to_vec() }, quantize_input: false }
        } else {
            let w = wts.get_matrix(name, &[total_rows, k])?;
            Self::Dense(if all { w } else { w.slice(part) })
        })
    }

    fn is_fp8(&self) -> bool {
        matches!(self, Self::Fp8 { .. })
    }

    /// Dense, for projections the GPU path stacks with a non-FP8 one (it keeps a stack FP8
    /// only when every part is).
    fn into_dense(self) -> Self {
        match self {
            Self::Fp8 { w, .. } => Self::Dense(Matrix::F32(w)),
            other => other,
        }
    }
}

/// What attention reads of the positions run so far, per layer, as it reads it (after RoPE and
/// an FP8 cache's rounding): GQA keys and values `[positions, kv_heads · head_dim]`; MLA the
/// normalised latents and the rotary keys. Every op but attention works row by row, so running
/// a sequence in pieces over a `Past` gives the bits of running it whole.
struct Past {
    len: usize,
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Past {
    fn new(layers: usize) -> Self {
        Self { len: 0, layers: vec![(Vec::new(), Vec::new()); layers] }
    }
}

/// Stacked projections (q, k, v; gate, up) stay FP8 only together, as on the GPU path.
fn fp8_together<const N: usize>(parts: [Linear; N]) -> [Linear; N] {
    if parts.iter().all(Linear::is_fp8) {
        parts
    } else {
        parts.map(Linear::into_dense)
    }
}

struct Expert {
    gate: Linear,
    up: Linear,
    down: Linear,
    intermediate_size: usize,
    /// RMSNorm of the GLU output before down_proj (BitNet's ffn_sub_norm).
    sub_norm: Option<Vec<f32>>,
}

enum Mlp {
    Dense(Expert),
    Moe {
        router: Vec<f32>,
        /// Added to the sigmoid scores for the selection only (DeepSeek-V3 `e_score_correction_bias`).
        correction_bias: Option<Vec<f32>>,
        experts: Vec<Expert>,
        /// Run by every token, added to the routed sum (DeepSeek-V3 `shared_experts`).
        shared: Option<Expert>,
    },
}

/// MLA's query projection.
enum MlaQuery {
    /// `q_proj` `[heads · qk_head_dim, hidden]` (q_lora_rank null).
    Full(Vec<f32>),
    /// `q_a_proj` `[q_lora_rank, hidden]` → `q_a_layernorm` → `q_b_proj` `[heads · qk_head_dim, q_lora_rank]`.
    LowRank { a: Linear, norm: Vec<f32>, b: Vec<f32> },
}

enum Attention {
    Gqa {
        q: Linear,
        k: Linear,
        v: Linear,
        o: Linear,
        /// RMSNorm of the attention output before o_proj (BitNet's attn_sub_norm).
        sub_norm: Option<Vec<f32>>,
        /// q_proj, k_proj, v_proj and o_proj biases (attention_bias).
        bias: Option<[Vec<f32>; 4]>,
        /// Per-head q/k RMSNorm weights (Qwen3).
        qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    },
    Mla {
        q: MlaQuery,
        /// `kv_a_proj_with_mqa` `[kv_lora_rank + qk_rope_head_dim, hidden]`: its latent rows, and
        /// the shared rotary key's.
        kv_a: (Linear, Linear),
        /// `kv_a_layernorm` `[kv_lora_rank]`.
        kv_a_norm: Vec<f32>,
        /// `kv_b_proj` `[heads · (qk_nope_head_dim + v_head_dim), kv_lora_rank]`.
        kv_b: Vec<f32>,
        /// `o_proj` `[hidden, heads · v_head_dim]`.
        o: Vec<f32>,
    },
}

struct Layer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    attention: Attention,
    mlp: Mlp,
}

/// A model loaded for the CPU path.
pub struct CpuModel {
    /// The config.json it was built from.
    pub config: ModelConfig,
    embed: Matrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// None: tied to the embedding.
    lm_head: Option<Matrix>,
    act: GluActivation,
    /// [`CpuModel::set_fp8_kv_cache`]'s scales per layer; None: K and V as computed.
    kv_fp8: Option<Vec<KvScales>>,
    /// The checkpoint's own FP8 KV cache scales per layer (`Weights::kv_scales`), if any.
    checkpoint_kv_scales: Option<Vec<KvScales>>,
}

/// What an FP8 KV cache holds for each of `x` and reads back: round_e4m3(bf16(x) / scale) ·
/// scale (`reference::kv_cache::quantize` of the bf16 value the GPU path appends).
fn fp8_cache_round(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter().map(|&v| kv_cache::dequantize(kv_cache::quantize::<half::bf16, F8E4M3>(half::bf16::from_f32(v), scale), scale) as f32).collect()
}

/// Appends this step's cache rows to `past` (keys and values, or MLA's latents and rotary keys),
/// rounded as an FP8 cache stores them when `fp8` gives its scales.
fn append_past(past: (&mut Vec<f32>, &mut Vec<f32>), (k, v): (&[f32], &[f32]), fp8: Option<(f32, f32)>) {
    match fp8 {
        Some((sk, sv)) => {
            past.0.extend(fp8_cache_round(k, sk));
            past.1.extend(fp8_cache_round(v, sv));
        }
        None => {
            past.0.extend_from_slice(k);
            past.1.extend_from_slice(v);
        }
    }
}

fn f64_to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

/// Splits rows of `a + b` elements into the rows' first `a` and last `b` elements.
fn split_rows(x: &[f32], a: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / (a + b);
    let (mut first, mut second) = (Vec::with_capacity(rows * a), Vec::with_capacity(rows * b));
    for row in x.chunks_exact(a + b) {
        first.extend_from_slice(&row[..a]);
        second.extend_from_slice(&row[a..]);
    }
    (first, second)
}

impl CpuModel {
    /// `Some(scales)`: K and V rounded as an FP8 e4m3 KV cache with these scales (one pair, or
    /// one per layer) stores them, what [`super::GpuModel::set_fp8_kv_cache`] computes: every
    /// key and value (MLA: the latent row `[c_kv | k_pe]`, one scale) becomes
    /// round_e4m3(bf16(x) / scale) · scale after RoPE, before attention reads it. `None`: as
    /// computed (the default). Errors as `GpuModel::set_fp8_kv_cache`.
    pub fn set_fp8_kv_cache(&mut self, scales: Option<&[KvScales]>) -> Result<()> {
        self.kv_fp8 = scales.map(|s| self.config.fp8_kv_scales_per_layer("CpuModel::set_fp8_kv_cache", s)).transpose()?;
        Ok(())
    }

    /// The FP8 KV cache's scales per layer, if [`CpuModel::set_fp8_kv_cache`] set them.
    pub fn fp8_kv_cache(&self) -> Option<&[KvScales]> {
        self.kv_fp8.as_deref()
    }

    /// The FP8 KV cache scales the checkpoint carries per layer, if any
    /// ([`super::GpuModel::checkpoint_kv_scales`]).
    pub fn checkpoint_kv_scales(&self) -> Option<&[KvScales]> {
        self.checkpoint_kv_scales.as_deref()
    }

    /// Teacher-forced logits `[ids.len(), vocab_size]` (every position attends to the ones
    /// before it).
    pub fn forward(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(ids, &mut Past::new(self.layers.len()), None, false)
    }

    /// Per position of a teacher-forced `ids`, the smallest gap over the MoE layers between the
    /// router's k-th and (k+1)-th selection values (`reference::moe_routing::selection_values`): how
    /// close the token came to a different expert choice, which rounding elsewhere (a bf16 GPU
    /// path) can flip. For grouped routing (DeepSeek-V3) the score gap is a proxy: groups are
    /// chosen first. `f32::INFINITY` everywhere for a model without MoE layers.
    pub fn router_margins(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut margins = vec![f32::INFINITY; ids.len()];
        self.run(ids, &mut Past::new(self.layers.len()), Some(&mut margins), false)?;
        Ok(margins)
    }

    /// Runs `ids` at the positions after those in `past` (which it extends): logits `[ids.len(),
    /// vocab_size]`, or with `last_only` those of the last position alone.
    fn run(&self, ids: &[u32], past: &mut Past, mut margins: Option<&mut [f32]>, last_only: bool) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, hd, n, p0) = (c.hidden_size, c.head_dim, ids.len(), past.len);
        let norm = RmsNormConfig::new(c.rms_norm_eps as f32);
        let rope_cfg = c.rope(p0 + n)?;
        let positions: Vec<i64> = (p0 as i64..(p0 + n) as i64).collect();
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::Unsupported { op: "CpuModel::forward", what: "token id (>= vocab_size)", value: id.to_string() });
            }
            x.extend(self.embed.to_f32(id * h..(id + 1) * h));
        }
        let scale = c.softmax_scale()?;
        for ((l, layer), (past_k, past_v)) in self.layers.iter().enumerate().zip(&mut past.layers) {
            let kv_fp8 = self.kv_fp8.as_ref().map(|s| s[l]);
            let a = f64_to_f32(rms_norm::rms_norm(&x, &layer.input_norm, norm));
            let o = match &layer.attention {
                Attention::Gqa { q, k, v, o, sub_norm, bias, qk_norm } => {
                    let shape = AttentionShape { q_len: n, kv_len: p0 + n, num_q_heads: c.num_q_heads, num_kv_heads: c.num_kv_heads, head_dim: hd, head_dim_v: hd };
                    let mask = AttentionMask { scale, causal: true, window_left: None, softcap: None };
                    let bias = |i: usize| bias.as_ref().map(|b| b[i].as_slice());
                    let mut q = q.apply(&a, bias(0), h);
                    let mut k = k.apply(&a, bias(1), h);
                    let v = v.apply(&a, bias(2), h);
                    if let Some((qn, kn)) = qk_norm {
                        q = f64_to_f32(rms_norm::rms_norm(&q, qn, norm));
                        k = f64_to_f32(rms_norm::rms_norm(&k, kn, norm));
                    }
                    let (q, k) = rope::rope(&q, &k, hd, &positions, &rope_cfg);
                    let (q, k) = (f64_to_f32(q), f64_to_f32(k));
                    append_past((past_k, past_v), (&k, &v), kv_fp8.map(|s| (s.k, s.v)));
                    let (att, _) = attention(&q, past_k, past_v, shape, &mask, 1.0, 1.0);
                    let mut att = f64_to_f32(att);
                    if let Some(w) = sub_norm {
                        att = f64_to_f32(rms_norm::rms_norm(&att, w, norm));
                    }
                    o.apply(&att, bias(3), c.num_q_heads * hd)
                }
                Attention::Mla { q, kv_a, kv_a_norm, kv_b, o } => {
                    let m = c.mla.as_ref().expect("an MLA layer has an MLA config");
                    self.mla(m, &a, q, kv_a, kv_a_norm, kv_b, o, &positions, (&rope_cfg, kv_fp8), scale, (past_k, past_v))
                }
            };
            x.iter_mut().zip(&o).for_each(|(r, d)| *r += d);
            let a = f64_to_f32(rms_norm::rms_norm(&x, &layer.post_norm, norm));
            let m = self.mlp(&layer.mlp, &a, margins.as_deref_mut())?;
            x.iter_mut().zip(&m).for_each(|(r, d)| *r += d);
        }
        past.len += n;
        let x = if last_only { &x[(n - 1) * h..] } else { &x[..] };
        let x = f64_to_f32(rms_norm::rms_norm(x, &self.norm, norm));
        Ok(self.lm_head.as_ref().unwrap_or(&self.embed).linear(&x, None, h))
    }

    /// One MLA layer on the normalised rows `a` `[n, hidden]`, as transformers computes it: q
    /// (optionally through its low-rank RMSNormed bottleneck) split per head into nope and rope
    /// parts; `kv_a_proj_with_mqa` split into the latent (RMSNormed) and the shared rotary key;
    /// RoPE on the rotary parts; attention with keys `[W_uk c_kv | k_pe]` and values `W_uv c_kv`
    /// per head (`mla_naive`) over `past`'s latents and rotary keys, which this layer's extend;
    /// `o_proj`.
    #[allow(clippy::too_many_arguments)]
    fn mla(&self, m: &MlaConfig, a: &[f32], q: &MlaQuery, kv_a: &(Linear, Linear), kv_a_norm: &[f32], kv_b: &[f32], o: &[f32], positions: &[i64], (rope_cfg, kv_fp8): (&RopeConfig, Option<KvScales>), scale: f64, (past_c, past_pe): (&mut Vec<f32>, &mut Vec<f32>)) -> Vec<f32> {
        let (h, heads, n) = (self.config.hidden_size, self.config.num_q_heads, positions.len());
        let latent_norm = RmsNormConfig::new(MlaConfig::LATENT_NORM_EPS);
        let q = match q {
            MlaQuery::Full(w) => linear(a, w, None, h),
            MlaQuery::LowRank { a: qa, norm, b } => {
                let c = f64_to_f32(rms_norm::rms_norm(&qa.apply(a, None, h), norm, latent_norm));
                linear(&c, b, None, norm.len())
            }
        };
        let (q_nope, q_pe) = split_rows(&q, m.qk_nope_head_dim, m.qk_rope_head_dim);
        let (c_kv, k_pe) = (kv_a.0.apply(a, None, h), kv_a.1.apply(a, None, h));
        let c_kv = f64_to_f32(rms_norm::rms_norm(&c_kv, kv_a_norm, latent_norm));
        let (q_pe, k_pe) = rope::rope(&q_pe, &k_pe, m.qk_rope_head_dim, positions, rope_cfg);
        let (q_pe, k_pe) = (f64_to_f32(q_pe), f64_to_f32(k_pe));
        // The latent cache's rows, one scale.
        append_past((past_c, past_pe), (&c_kv, &k_pe), kv_fp8.map(|s| (s.k, s.k)));
        let shape = MlaShape {
            q_len: n,
            kv_len: past_pe.len() / m.qk_rope_head_dim,
            num_heads: heads,
            d_nope: m.qk_nope_head_dim,
            d_rope: m.qk_rope_head_dim,
            d_v: m.v_head_dim,
            kv_lora_rank: m.kv_lora_rank,
        };
        let att = mla_naive(shape, &q_nope, &q_pe, past_c, past_pe, kv_b, scale, true);
        linear(&f64_to_f32(att), o, None, heads * m.v_head_dim)
    }

    fn expert(&self, e: &Expert, x: &[f32]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let mut act = glu(&e.gate.apply(x, None, h), &e.up.apply(x, None, h), self.act);
        if let Some(w) = &e.sub_norm {
            act = f64_to_f32(rms_norm::rms_norm(&act, w, RmsNormConfig::new(self.config.rms_norm_eps as f32)));
        }
        e.down.apply(&act, None, e.intermediate_size)
    }

    fn mlp(&self, mlp: &Mlp, x: &[f32], margins: Option<&mut [f32]>) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        match mlp {
            Mlp::Dense(e) => Ok(self.expert(e, x)),
            Mlp::Moe { router, correction_bias, experts, shared } => {
                let m = self.config.moe.as_ref().expect("a MoE layer has a MoE config");
                let logits = linear(x, router, None, h);
                let gate = moe_routing::moe_gate(&logits, m.num_experts, m.top_k, correction_bias.as_deref(), &m.gate());
                if let Some(margins) = margins {
                    for (t, row) in logits.chunks_exact(m.num_experts).enumerate().filter(|_| m.num_experts > m.top_k) {
                        let mut scores = moe_routing::selection_values(row, m.scoring, correction_bias.as_deref());
                        scores.sort_by(|a, b| b.total_cmp(a));
                        margins[t] = margins[t].min(scores[m.top_k - 1] - scores[m.top_k]);
                    }
                }
                let mut out = shared.as_ref().map_or_else(|| vec![0.0f32; x.len()], |e| self.expert(e, x));
                for (t, row) in x.chunks_exact(h).enumerate() {
                    let mut acc = vec![0.0f64; h];
                    for j in 0..m.top_k {
                        let (id, wt) = (gate.topk_ids[t * m.top_k + j], gate.topk_weights[t * m.top_k + j]);
                        // HF rounds the routing weights to the activation dtype (f32 here).
                        let wt = wt as f32 as f64;
                        for (a, y) in acc.iter_mut().zip(self.expert(&experts[id as usize], row)) {
                            *a += wt * y as f64;
                        }
                    }
                    // transformers: routed sum (f32) + shared expert (f32).
                    out[t * h..(t + 1) * h].iter_mut().zip(acc).for_each(|(o, a)| *o = ((a as f32) as f64 + *o as f64) as f32);
                }
                Ok(out)
            }
        }
    }

    /// Greedy continuation: `new_tokens` argmax tokens after `prompt` (ties to the lower id),
    /// all of them (no EOS stop: transformers' fixtures are generated the same way).
    pub fn generate_greedy(&self, prompt: &[u32], new_tokens: usize) -> Result<Vec<u32>> {
        self.generate(prompt, new_tokens, &mut Sampler::new(Sampling::greedy()), &[])
    }

    /// Up to `max_new_tokens` tokens after `prompt`, each drawn by `sampler` from the last
    /// position's logits, stopping right after a token in `eos` ([`is_finished`]; pass
    /// `&self.config.eos_token_ids`, or `&[]` for exactly `max_new_tokens`). The prompt runs
    /// first, then each new token alone over the keys and values of the positions before it
    /// (the same bits as [`CpuModel::forward`] of the whole sequence: tests/model.rs); with
    /// dynamic-NTK RoPE, which rotates every position by the sequence's length, each token
    /// runs the whole sequence again.
    pub fn generate(&self, prompt: &[u32], max_new_tokens: usize, sampler: &mut Sampler, eos: &[u32]) -> Result<Vec<u32>> {
        self.generate_with(prompt, max_new_tokens, sampler, eos, |_| {})
    }

    /// [`CpuModel::generate`], calling `on_token(token)` as each token is chosen.
    pub fn generate_with(&self, prompt: &[u32], max_new_tokens: usize, sampler: &mut Sampler, eos: &[u32], mut on_token: impl FnMut(u32)) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::Empty { op: "CpuModel::generate", arg: "prompt", shape: "[0]".into() });
        }
        sampler.settings().validate("CpuModel::generate")?;
        let mut ids = prompt.to_vec();
        let rescaled = matches!(self.config.rope(ids.len())?.scaling, RopeScaling::DynamicNtk { .. });
        let mut past = Past::new(self.layers.len());
        while !is_finished(&ids[prompt.len()..], max_new_tokens, eos) {
            if rescaled {
                past = Past::new(self.layers.len());
            }
            let logits = self.run(&ids[past.len..], &mut past, None, true)?;
            let token = sampler.sample(&logits);
            ids.push(token);
            on_token(token);
        }
        Ok(ids.split_off(prompt.len()))
    }
}

#[cfg(test)]
mod tests;
