//! The GPU path: the same decoder as [`super::CpuModel`] (Llama, Qwen3, Mixtral, Qwen3-MoE,
//! DeepSeek-V3, BitNet b1.58) on warpcore's kernels and cuBLAS, bf16 weights and activations
//! (BitNet: packed ternary weights and int8 activations; FP8 block checkpoints — DeepSeek-V3,
//! Qwen3-FP8 — e4m3 projections on `matmul_fp8`, linear.rs), batched generation on the paged KV cache (DeepSeek-V3: MLA's
//! latent cache, mla.rs).
//!
//! # Data flow
//!
//! A step runs `num_tokens` tokens of `num_seqs` sequences at once: a prefill is every prompt
//! token of every sequence (varlen: sequence s owns rows `cu_seqlens_q[s]..cu_seqlens_q[s+1]`),
//! a decode step one token per sequence. Buffers are `[num_tokens, …]`, bf16 unless noted.
//!
//! ```text
//! ids ──select_rows(embed)──► residual                                   [T, hidden]
//! per layer l:
//!   l = 0: x = rms_norm(residual)                      (input_layernorm)
//!   l > 0: residual += x (rounded once); x = rms_norm(residual)   fused_add_rms_norm
//!   qkv = x · W_qkvᵀ                                   cuBLAS; W_qkv = [q; k; v] rows, fused at load
//!                                                      (BitNet: every norm here writes int8 codes,
//!                                                      (fused_add_)rms_norm_quantize_activations,
//!                                                      and each projection is matmul_ternary per
//!                                                      stacked projection into its columns;
//!                                                      FP8 checkpoints: the norm writes the FP8
//!                                                      qkv's e4m3 codes, (fused_add_)rms_norm_
//!                                                      quant_fp8, and qkv is one matmul_fp8)
//!   DeepSeek-V3: the MLA layer instead, up to x = attention · W_o (mla.rs has its data flow)
//!   Qwen3: qk_norm_rope_append_kv (per-head q/k RMSNorm, RoPE, k and v into the cache of l)
//!   else:  rope_append_kv                              (RoPE, k and v into the cache of l)
//!   attn = attention(q heads of qkv, paged cache of l)  causal, bottom-right; one AttentionPlan
//!                                                      per step shared by every layer
//!   BitNet: attn_sub_norm(attn) → int8
//!   x = attn · W_oᵀ                                    cuBLAS (BitNet: matmul_ternary)
//!   residual += x; x = rms_norm(residual)              fused_add_rms_norm (post_attention_layernorm)
//!   dense MLP: gate_up = x · [W_gate; W_up]ᵀ, act = glu(gate, up), x = act · W_downᵀ
//!              (FP8: the norm writes gate_up's e4m3 codes, glu_quant_fp8 writes down's)
//!              (BitNet: ternary projections, ffn_sub_norm(act) → int8 before down)
//!   MoE:       logits = x · W_routerᵀ (f32) → moe_gate (softmax top-k, renormalised per
//!              config; DeepSeek-V3: sigmoid + selection bias, grouped) → moe_align (block_m 1)
//!              → moe_gather (rows in expert order) → the experts' gate_up GEMMs on their rows
//!              → one glu over all rows → the experts' down GEMMs → moe_combine (weighted sum
//!              per token) → x; DeepSeek-V3's shared experts: gate_up and glu on x first,
//!              their down GEMM added into x (beta 1). bf16 experts: one matmul_grouped per
//!              projection; FP8 experts: x quantized before the gather, one
//!              matmul_fp8_grouped per projection, glu_quant_fp8 between them (moe.rs)
//! residual += x; x = rms_norm(residual)                fused_add_rms_norm (final norm)
//! logits = x[rows] · W_lm_headᵀ  (f32; rows = every position, or the last of each sequence;
//!                                 W_lm_head = embed when tied) → argmax_rows (greedy) or
//!                                 sample_rows_each (each sequence's Sampler's settings and
//!                                 next uniform) on the GPU → one id per sequence to the host
//! ```
//!
//! The MoE layers' grouped GEMMs read the per-expert row offsets on the device: no step waits
//! for the GPU before its token ids come back.
//!
//! Precision: bf16 weights (converted from the checkpoint's f32 / f16 at upload), bf16
//! activations rounded at each op's store, f32 accumulation everywhere (GEMMs, norms,
//! attention, GLU, MoE combine), f32 router and vocabulary logits. Unsupported here, rejected
//! with `Error::Unsupported` before anything is allocated: MLA dims other than DeepSeek's
//! (kv_lora_rank 512, qk_rope_head_dim 64: the MLA decode kernel's), BitNet checkpoints other
//! than offline AutoBitLinear (BitNet b1.58 2B4T's format), attention biases, head dims the
//! attention kernels do not take ([`crate::ops::attention::HEAD_DIMS`]), activations outside
//! [`GluActivation`].

mod batch;
mod gqa;
mod graph;
mod linear;
mod mla;
mod mlp;
mod moe;
mod step;
mod supported;

use super::gemm::Gemm;
use super::{Architecture, ModelConfig, Weights};
use crate::kv_cache::KvScales;
use crate::ops::moe_routing::MoeScoring;
use crate::reference::mlp::GluActivation;
use crate::{Device, Result, TensorView, TensorViewMut};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::bf16;
use std::path::Path;

pub use batch::Batch;
use batch::LayerCache;
pub use supported::check_supported;
use linear::{Fp8Scratch, GpuLinear, Int8Scratch};
use mla::{GpuMla, MlaBuffers};
use moe::MoeBuffers;
use step::{Exec, LayerStep, Step};

/// Tokens per page of the KV cache the model allocates.
pub const PAGE_SIZE: usize = 16;

const OP: &str = "GpuModel";

enum GpuMlp {
    /// gate_up `[2 · inter, hidden]` (gate rows, then up rows), down `[hidden, inter]`;
    /// sub_norm `[inter]`: BitNet's ffn_sub_norm before down.
    Dense { gate_up: GpuLinear, down: GpuLinear, inter: usize, sub_norm: Option<CudaSlice<bf16>> },
    /// router `[num_experts, hidden]`; gate_up `[num_experts, 2 · inter, hidden]`; down
    /// `[num_experts, hidden, inter]`; DeepSeek-V3's selection bias `[num_experts]` (f32) and
    /// shared experts (one dense MLP, added to the routed sum).
    Moe { router: CudaSlice<bf16>, gate_up: GpuLinear, down: GpuLinear, inter: usize, bias: Option<CudaSlice<f32>>, shared: Option<SharedExpert> },
}

/// DeepSeek-V3's shared experts as one MLP: gate_up `[2 · inter, hidden]`, down `[hidden, inter]`.
struct SharedExpert {
    gate_up: GpuLinear,
    down: GpuLinear,
    inter: usize,
}

/// A layer's attention: GQA on the KV cache, or DeepSeek's MLA on the latent cache.
enum GpuAttention {
    Gqa {
        /// `[(num_q_heads + 2 · num_kv_heads) · head_dim, hidden]`: q, k, v projections stacked.
        qkv: GpuLinear,
        /// `[hidden, num_q_heads · head_dim]`.
        o: GpuLinear,
        /// BitNet's attn_sub_norm `[num_q_heads · head_dim]`, before o.
        attn_sub_norm: Option<CudaSlice<bf16>>,
        /// Per-head q/k RMSNorm weights `[head_dim]` (Qwen3).
        qk_norm: Option<(CudaSlice<bf16>, CudaSlice<bf16>)>,
    },
    Mla(Box<GpuMla>),
}

struct GpuLayer {
    input_norm: CudaSlice<bf16>,
    post_norm: CudaSlice<bf16>,
    attn: GpuAttention,
    mlp: GpuMlp,
}

impl GpuLayer {
    /// The input norm writes e4m3 codes (FP8 checkpoints: the GQA layer's qkv is FP8, its only
    /// reader; MLA's k_pe rows and a MoE router read bf16).
    fn fp8_input_norm(&self) -> bool {
        matches!(&self.attn, GpuAttention::Gqa { qkv, .. } if qkv.fp8_k().is_some())
    }

    /// The post-attention norm writes e4m3 codes (a dense MLP whose gate_up is FP8).
    fn fp8_post_norm(&self) -> bool {
        matches!(&self.mlp, GpuMlp::Dense { gate_up, .. } if gate_up.fp8_k().is_some())
    }

    /// Every projection of the layer.
    fn linears(&self) -> Vec<&GpuLinear> {
        let mut v = match &self.attn {
            GpuAttention::Gqa { qkv, o, .. } => vec![qkv, o],
            GpuAttention::Mla(m) => m.linears(),
        };
        match &self.mlp {
            GpuMlp::Dense { gate_up, down, .. } => v.extend([gate_up, down]),
            GpuMlp::Moe { gate_up, down, shared, .. } => {
                v.extend([gate_up, down]);
                v.extend(shared.iter().flat_map(|s| [&s.gate_up, &s.down]));
            }
        }
        v
    }
}

/// A model loaded onto the GPU (bf16).
pub struct GpuModel {
    /// The config.json it was built from.
    pub config: ModelConfig,
    dev: Device,
    gemm: Gemm,
    act: GluActivation,
    /// `[vocab_size, hidden]`.
    embed: CudaSlice<bf16>,
    layers: Vec<GpuLayer>,
    norm: CudaSlice<bf16>,
    /// `[vocab_size, hidden]`; None: tied to `embed`.
    lm_head: Option<CudaSlice<bf16>>,
    /// The KV cache's FP8 scales per layer ([`GpuModel::set_fp8_kv_cache`]); None: a bf16
    /// cache.
    kv_fp8: Option<Vec<KvScales>>,
    /// The checkpoint's own FP8 KV cache scales per layer (`Weights::kv_scales`), if it has them.
    checkpoint_kv_scales: Option<Vec<KvScales>>,
    /// Decode steps as CUDA graphs ([`GpuModel::set_decode_graphs`]): the capture stream.
    capture: Option<std::sync::Arc<std::sync::Mutex<graph::GraphCapture>>>,
}

/// `[rows, cols]` dense view of the first rows of a buffer.
fn rows<T>(buf: &CudaSlice<T>, rows: usize, cols: usize) -> Result<TensorView<'_, T, 2>> {
    TensorView::contiguous(buf.slice(..rows * cols), [rows, cols])
}
fn rows_mut<T>(buf: &mut CudaSlice<T>, rows: usize, cols: usize) -> Result<TensorViewMut<'_, T, 2>> {
    TensorViewMut::contiguous(buf.slice_mut(..rows * cols), [rows, cols])
}
fn vector<T>(buf: &CudaSlice<T>, len: usize) -> Result<TensorView<'_, T, 1>> {
    TensorView::contiguous(buf.slice(..len), [len])
}
fn vector_mut<T>(buf: &mut CudaSlice<T>, len: usize) -> Result<TensorViewMut<'_, T, 1>> {
    TensorViewMut::contiguous(buf.slice_mut(..len), [len])
}
/// A device buffer of at least one element (cudarc does not allocate zero bytes).
fn alloc<T: DeviceRepr + ValidAsZeroBits>(dev: &Device, len: usize) -> Result<CudaSlice<T>> {
    dev.zeros(len.max(1))
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// Activations of one step of up to `max_tokens` tokens (the first rows are used).
struct Buffers {
    max_tokens: usize,
    residual: CudaSlice<bf16>,
    x: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    attn: CudaSlice<bf16>,
    /// `[rows, 2 · inter]` (rows: tokens, or tokens · top_k in a MoE layer).
    gate_up: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
    /// BitNet: the int8 activations of the ternary projections (written by the norms before them).
    int8: Int8Scratch,
    /// FP8 checkpoints: the e4m3 activations of the FP8 projections.
    fp8: Fp8Scratch,
    /// DeepSeek-V3: the MLA layers' activations.
    mla: Option<MlaBuffers>,
    /// Split-KV partials of the attention (grown to the largest plan seen).
    workspace: CudaSlice<f32>,
    /// Rows whose logits are computed `[max_logit_rows, hidden]`, and their logits (f32).
    selected: CudaSlice<bf16>,
    logits: CudaSlice<f32>,
    /// `[max_logit_rows]`: the tokens chosen from the logit rows (greedy or sampled); the
    /// samplers' uniform numbers, temperatures and top_p (`[3, max_logit_rows]`) and top_k.
    tokens: CudaSlice<i32>,
    sample_f32: CudaSlice<f32>,
    sample_k: CudaSlice<i32>,
    max_logit_rows: usize,
    moe: Option<MoeBuffers>,
}

impl GpuModel {
    /// Loads `dir` (config.json + *.safetensors) onto GPU 0's device `dev`. FP8 block
    /// checkpoints keep their projections in e4m3 (linear.rs) unless `WARPCORE_MODEL_FP8` is
    /// `dequantize` (then every weight is bf16, as for a config without the FP8
    /// quantization_config: what [`GpuModel::from_weights`] does with `fp8_weight_block` None).
    pub fn load(dev: &Device, dir: &Path) -> Result<Self> {
        let mut config = ModelConfig::from_dir(dir)?;
        if std::env::var("WARPCORE_MODEL_FP8").as_deref() == Ok("dequantize") {
            config.fp8_weight_block = None;
        }
        check_supported(&config)?;
        let w = Weights::open(dir)?;
        Self::from_weights(dev, config, &w)
    }

    /// Uploads the weights as bf16 (q/k/v and gate/up fused per layer, experts stacked).
    pub fn from_weights(dev: &Device, config: ModelConfig, w: &Weights) -> Result<Self> {
        let act = check_supported(&config)?;
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (qd, kvd) = (c.num_q_heads * hd, c.num_kv_heads * hd);
        let get = |name: &str, shape: &[usize]| w.get_shaped(name, shape);
        let up = |v: Vec<f32>| dev.upload(&to_bf16(&v));
        let gemm = Gemm::new(dev)?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}.");
            let at = |n: &str| format!("{p}self_attn.{n}");
            let attn = match &c.mla {
                Some(m) => GpuAttention::Mla(Box::new(GpuMla::load(dev, w, c, m, &p)?)),
                None => GpuAttention::Gqa {
                    qkv: GpuLinear::load(dev, w, c, &[(at("q_proj"), qd), (at("k_proj"), kvd), (at("v_proj"), kvd)], h)?,
                    o: GpuLinear::load(dev, w, c, &[(at("o_proj"), h)], qd)?,
                    attn_sub_norm: if c.sub_norms { Some(up(get(&at("attn_sub_norm.weight"), &[qd])?)?) } else { None },
                    qk_norm: if c.qk_norm { Some((up(get(&at("q_norm.weight"), &[hd])?)?, up(get(&at("k_norm.weight"), &[hd])?)?)) } else { None },
                },
            };
            let mlp = match (&c.moe, c.architecture) {
                (Some(m), arch) if !m.dense_layers.contains(&l) => {
                    let (block, names) = if arch == Architecture::Mixtral {
                        (format!("{p}block_sparse_moe."), ["w1", "w3", "w2"])
                    } else {
                        (format!("{p}mlp."), ["gate_proj", "up_proj", "down_proj"])
                    };
                    let inter = m.intermediate_size;
                    let expert_parts = |i: usize, n: usize| -> Vec<(String, usize)> {
                        (0..m.num_experts).map(|e| (format!("{block}experts.{e}.{}", names[i]), n)).collect()
                    };
                    // Every expert's gate rows then up rows, stacked: [E · 2 · inter, hidden].
                    let gate_up_parts: Vec<(String, usize)> = expert_parts(0, inter).into_iter().zip(expert_parts(1, inter)).flat_map(|(g, u)| [g, u]).collect();
                    let sigmoid = m.scoring == MoeScoring::Sigmoid;
                    let shared_inter = m.intermediate_size * m.num_shared_experts;
                    let shared_prefix = format!("{block}shared_experts.");
                    // Per-expert tensors, or transformers 5's fused ones (as the CPU path reads).
                    let fused = format!("{block}experts.gate_up_proj");
                    let (gate_up, down) = if w.contains(&fused) {
                        let e = m.num_experts;
                        (GpuLinear::load_whole(dev, w, &fused, &[e, 2 * inter, h])?, GpuLinear::load_whole(dev, w, &format!("{block}experts.down_proj"), &[e, h, inter])?)
                    } else {
                        (GpuLinear::load(dev, w, c, &gate_up_parts, h)?, GpuLinear::load(dev, w, c, &expert_parts(2, h), inter)?)
                    };
                    GpuMlp::Moe {
                        router: up(get(&format!("{block}gate.weight"), &[m.num_experts, h])?)?,
                        gate_up,
                        down,
                        inter,
                        bias: if sigmoid { Some(dev.upload(&get(&format!("{block}gate.e_score_correction_bias"), &[m.num_experts])?)?) } else { None },
                        shared: if m.num_shared_experts > 0 {
                            Some(SharedExpert {
                                gate_up: GpuLinear::load(dev, w, c, &[(format!("{shared_prefix}gate_proj"), shared_inter), (format!("{shared_prefix}up_proj"), shared_inter)], h)?,
                                down: GpuLinear::load(dev, w, c, &[(format!("{shared_prefix}down_proj"), h)], shared_inter)?,
                                inter: shared_inter,
                            })
                        } else {
                            None
                        },
                    }
                }
                _ => {
                    let (m, inter) = (format!("{p}mlp."), c.intermediate_size);
                    GpuMlp::Dense {
                        gate_up: GpuLinear::load(dev, w, c, &[(format!("{m}gate_proj"), inter), (format!("{m}up_proj"), inter)], h)?,
                        down: GpuLinear::load(dev, w, c, &[(format!("{m}down_proj"), h)], inter)?,
                        inter,
                        sub_norm: if c.sub_norms { Some(up(get(&format!("{m}ffn_sub_norm.weight"), &[inter])?)?) } else { None },
                    }
                }
            };
            layers.push(GpuLayer {
                input_norm: up(get(&format!("{p}input_layernorm.weight"), &[h])?)?,
                post_norm: up(get(&format!("{p}post_attention_layernorm.weight"), &[h])?)?,
                attn,
                mlp,
            });
        }
        let embed = up(get("model.embed_tokens.weight", &[c.vocab_size, h])?)?;
        let lm_head =
            if c.tie_word_embeddings && !w.contains("lm_head.weight") { None } else { Some(up(get("lm_head.weight", &[c.vocab_size, h])?)?) };
        let norm = up(get("model.norm.weight", &[h])?)?;
        let checkpoint_kv_scales = w.kv_scales(c.num_layers)?;
        Ok(Self { config, dev: dev.clone(), gemm, act, embed, layers, norm, lm_head, kv_fp8: None, checkpoint_kv_scales, capture: None })
    }

    /// The device the weights live on and every step runs on.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Bytes of weights on the GPU (what a decode step must read at least once).
    pub fn weight_bytes(&self) -> usize {
        let mut n = self.embed.len() + self.norm.len() + self.lm_head.as_ref().map_or(0, |l| l.len());
        for l in &self.layers {
            n += l.input_norm.len() + l.post_norm.len();
            match &l.attn {
                GpuAttention::Gqa { attn_sub_norm, qk_norm, .. } => {
                    n += qk_norm.as_ref().map_or(0, |(q, k)| q.len() + k.len()) + attn_sub_norm.as_ref().map_or(0, |w| w.len());
                }
                GpuAttention::Mla(m) => n += m.norms_len(),
            }
            match &l.mlp {
                GpuMlp::Dense { sub_norm, .. } => n += sub_norm.as_ref().map_or(0, |w| w.len()),
                GpuMlp::Moe { router, bias, .. } => n += router.len() + 2 * bias.as_ref().map_or(0, |b| b.len()),
            }
        }
        let linear: usize = self.layers.iter().flat_map(GpuLayer::linears).map(GpuLinear::bytes).sum();
        n * std::mem::size_of::<bf16>() + linear
    }

    /// BitNet: every norm before a projection writes that projection's int8 codes
    /// (`rms_norm_quantize_activations`), never a bf16 normalised row.
    fn int8_norms(&self) -> bool {
        self.config.bitnet_quant.is_some()
    }

    fn qkv_dim(&self) -> usize {
        (self.config.num_q_heads + 2 * self.config.num_kv_heads) * self.config.head_dim
    }

    fn buffers(&self, max_tokens: usize, max_logit_rows: usize) -> Result<Buffers> {
        let c = &self.config;
        let (dev, h, t) = (&self.dev, c.hidden_size, max_tokens);
        let dense_inter = if self.layers.iter().any(|l| matches!(l.mlp, GpuMlp::Dense { .. })) { c.intermediate_size } else { 0 };
        // MoE rows: every token's top_k experts, or (DeepSeek) its shared experts' MLP.
        let moe_rows_inter = c.moe.as_ref().map_or(0, |m| (m.top_k * m.intermediate_size).max(m.num_shared_experts * m.intermediate_size));
        let mlp_elems = t * dense_inter.max(moe_rows_inter);
        let fp8_experts = self.layers.iter().any(|l| matches!(&l.mlp, GpuMlp::Moe { gate_up, .. } if gate_up.fp8_k().is_some()));
        let moe = c.moe.as_ref().map(|m| MoeBuffers::new(dev, t, m, h, fp8_experts)).transpose()?;
        // FP8 projections' activations: every token's (MoE: every token's top_k rows), as wide as
        // the widest FP8 projection's input; the accumulating ones (FP8 shared experts' down)
        // write [t, hidden].
        let fp8_k = self.layers.iter().flat_map(GpuLayer::linears).filter_map(GpuLinear::fp8_k).max().unwrap_or(0);
        let fp8_rows = if fp8_k > 0 { t * c.moe.as_ref().map_or(1, |m| m.top_k.max(1)) } else { 0 };
        let fp8_add = self.layers.iter().any(|l| matches!(&l.mlp, GpuMlp::Moe { shared: Some(s), .. } if s.down.fp8_k().is_some()));
        // GQA's fused qkv and attention output; MLA keeps its own.
        let gqa_t = if c.mla.is_none() { t } else { 0 };
        Ok(Buffers {
            max_tokens: t,
            residual: alloc(dev, t * h)?,
            x: alloc(dev, t * h)?,
            qkv: alloc(dev, gqa_t * self.qkv_dim())?,
            attn: alloc(dev, gqa_t * c.num_q_heads * c.head_dim)?,
            mla: c.mla.as_ref().map(|m| MlaBuffers::new(dev, t, c, m)).transpose()?,
            int8: Int8Scratch::new(dev, if self.int8_norms() { t } else { 0 }, h.max(c.num_q_heads * c.head_dim).max(dense_inter))?,
            fp8: Fp8Scratch::new(dev, fp8_rows, fp8_k, if fp8_add { t * h } else { 0 })?,
            gate_up: alloc(dev, 2 * mlp_elems)?,
            act: alloc(dev, mlp_elems)?,
            workspace: alloc(dev, 1)?,
            selected: alloc(dev, max_logit_rows * h)?,
            logits: alloc(dev, max_logit_rows * c.vocab_size)?,
            tokens: alloc(dev, max_logit_rows)?,
            sample_f32: alloc(dev, 3 * max_logit_rows)?,
            sample_k: alloc(dev, max_logit_rows)?,
            max_logit_rows,
            moe,
        })
    }
}
