//! The CPU oracle path: one decoder for Llama, Qwen3, Mixtral, Qwen3-MoE and BitNet, built only from
//! `crate::reference` functions, activations in f32 between ops (each op computes in f64).
//! It exists to be right, not fast: tests compare it with transformers' logits.

use super::{Architecture, BitLinearClass, ModelConfig, Sampler, Sampling, Weights};
use crate::ops::moe_routing::MoeGateConfig;
use crate::ops::rms_norm::RmsNormConfig;
use crate::reference::attention::{attention, AttentionMask, AttentionShape};
use crate::reference::linear::linear;
use crate::reference::mlp::{glu, GluActivation};
use crate::reference::ternary::{self, TernaryWeights};
use crate::reference::{moe_routing, rms_norm, rope};
use crate::{Error, Result};
use std::path::Path;

/// A projection `[n, k]`: dense, or BitNet's ternary AutoBitLinear (int8 activations).
enum Linear {
    Dense(Vec<f32>),
    BitLinear(TernaryWeights),
}

impl Linear {
    /// x `[m, k]` → `[m, n]`.
    fn apply(&self, x: &[f32], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
        match self {
            Self::Dense(w) => linear(x, w, bias, k),
            Self::BitLinear(w) => ternary::bit_linear(x, w, bias, k),
        }
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
    Moe { router: Vec<f32>, experts: Vec<Expert> },
}

struct Layer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// RMSNorm of the attention output before o_proj (BitNet's attn_sub_norm).
    attn_sub_norm: Option<Vec<f32>>,
    /// q_proj, k_proj, v_proj biases (attention_bias).
    bias: Option<[Vec<f32>; 3]>,
    /// Per-head q/k RMSNorm weights (Qwen3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    mlp: Mlp,
}

/// A model loaded for the CPU path.
pub struct CpuModel {
    pub config: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// None: tied to the embedding.
    lm_head: Option<Vec<f32>>,
    act: GluActivation,
}

fn f64_to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

impl CpuModel {
    /// Loads `dir` (config.json + *.safetensors). DeepSeek-V3 is parsed but not yet runnable
    /// here (`Error::Unsupported`); of BitNet's quantization, the offline AutoBitLinear format
    /// (packed ternary weights + `weight_scale`, BitNet b1.58 2B4T's) runs.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let w = Weights::open(dir)?;
        Self::from_weights(config, &w)
    }

    pub fn from_weights(config: ModelConfig, w: &Weights) -> Result<Self> {
        let c = &config;
        if c.architecture == Architecture::DeepseekV3 {
            return Err(Error::Unsupported { op: "CpuModel", what: "architecture (not yet on the CPU path)", value: format!("{:?}", c.architecture) });
        }
        if let Some(q) = &c.bitnet_quant {
            if q.linear_class != BitLinearClass::AutoBitLinear || !q.offline || q.use_rms_norm || c.moe.is_some() {
                return Err(Error::Unsupported {
                    op: "CpuModel",
                    what: "BitNet quantization (offline autobitlinear without use_rms_norm, dense MLP)",
                    value: format!("{q:?}, MoE {}", c.moe.is_some()),
                });
            }
        }
        let act = GluActivation::from_hf(&c.hidden_act)
            .ok_or_else(|| Error::Unsupported { op: "CpuModel", what: "hidden_act", value: c.hidden_act.clone() })?;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (qd, kvd) = (c.num_q_heads * hd, c.num_kv_heads * hd);
        let get = |name: &str, shape: &[usize]| w.get_shaped(name, shape);
        // `{prefix}.weight` [n, k]: dense, or packed ternary [n / 4, k] u8 + `{prefix}.weight_scale` [1].
        let proj = |prefix: &str, n: usize, k: usize| -> Result<Linear> {
            if c.bitnet_quant.is_none() {
                return Ok(Linear::Dense(get(&format!("{prefix}.weight"), &[n, k])?));
            }
            let name = format!("{prefix}.weight");
            let (packed, shape) = w.get_u8(&name)?;
            if n % ternary::VALUES_PER_BYTE != 0 || shape != [n / ternary::VALUES_PER_BYTE, k] {
                return Err(Error::ShapeMismatch { op: "CpuModel", arg: "packed ternary weight", expected: format!("{name}: [{n} / 4, {k}]"), got: format!("{shape:?}") });
            }
            let values = ternary::unpack(&packed, k).ok_or_else(|| Error::Load { path: name.clone(), reason: "a 2-bit code 0b11 (not ternary)".into() })?;
            Ok(Linear::BitLinear(TernaryWeights { values, scale: get(&format!("{prefix}.weight_scale"), &[1])?[0] }))
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}.");
            let at = |n: &str| format!("{p}self_attn.{n}");
            let bias = if c.attention_bias {
                Some([get(&at("q_proj.bias"), &[qd])?, get(&at("k_proj.bias"), &[kvd])?, get(&at("v_proj.bias"), &[kvd])?])
            } else {
                None
            };
            let qk_norm = if c.qk_norm { Some((get(&at("q_norm.weight"), &[hd])?, get(&at("k_norm.weight"), &[hd])?)) } else { None };
            let dense = |prefix: &str, inter: usize, names: [&str; 3]| -> Result<Expert> {
                Ok(Expert {
                    gate: proj(&format!("{prefix}{}", names[0]), inter, h)?,
                    up: proj(&format!("{prefix}{}", names[1]), inter, h)?,
                    down: proj(&format!("{prefix}{}", names[2]), h, inter)?,
                    intermediate_size: inter,
                    sub_norm: if c.sub_norms { Some(get(&format!("{prefix}ffn_sub_norm.weight"), &[inter])?) } else { None },
                })
            };
            let mlp = match (&c.moe, c.architecture) {
                (Some(m), arch) if !m.dense_layers.contains(&l) => {
                    let (block, names) = if arch == Architecture::Mixtral {
                        (format!("{p}block_sparse_moe."), ["w1", "w3", "w2"])
                    } else {
                        (format!("{p}mlp."), ["gate_proj", "up_proj", "down_proj"])
                    };
                    let experts = (0..m.num_experts)
                        .map(|e| dense(&format!("{block}experts.{e}."), m.intermediate_size, names))
                        .collect::<Result<Vec<_>>>()?;
                    Mlp::Moe { router: get(&format!("{block}gate.weight"), &[m.num_experts, h])?, experts }
                }
                _ => Mlp::Dense(dense(&format!("{p}mlp."), c.intermediate_size, ["gate_proj", "up_proj", "down_proj"])?),
            };
            layers.push(Layer {
                input_norm: get(&format!("{p}input_layernorm.weight"), &[h])?,
                post_norm: get(&format!("{p}post_attention_layernorm.weight"), &[h])?,
                q: proj(&at("q_proj"), qd, h)?,
                k: proj(&at("k_proj"), kvd, h)?,
                v: proj(&at("v_proj"), kvd, h)?,
                o: proj(&at("o_proj"), h, qd)?,
                attn_sub_norm: if c.sub_norms { Some(get(&at("attn_sub_norm.weight"), &[qd])?) } else { None },
                bias,
                qk_norm,
                mlp,
            });
        }
        let embed = get("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if c.tie_word_embeddings && !w.contains("lm_head.weight") { None } else { Some(get("lm_head.weight", &[c.vocab_size, h])?) };
        Ok(Self { norm: get("model.norm.weight", &[h])?, embed, layers, lm_head, act, config })
    }

    /// Teacher-forced logits `[ids.len(), vocab_size]` (every position attends to the ones
    /// before it).
    pub fn forward(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, hd, n) = (c.hidden_size, c.head_dim, ids.len());
        let norm = RmsNormConfig::new(c.rms_norm_eps as f32);
        let rope_cfg = c.rope(n)?;
        let positions: Vec<i64> = (0..n as i64).collect();
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::Unsupported { op: "CpuModel::forward", what: "token id (>= vocab_size)", value: id.to_string() });
            }
            x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        let shape = AttentionShape { q_len: n, kv_len: n, num_q_heads: c.num_q_heads, num_kv_heads: c.num_kv_heads, head_dim: hd, head_dim_v: hd };
        let mask = AttentionMask { scale: 1.0 / (hd as f64).sqrt(), causal: true, window_left: None, softcap: None };
        for layer in &self.layers {
            let a = f64_to_f32(rms_norm::rms_norm(&x, &layer.input_norm, norm));
            let bias = |i: usize| layer.bias.as_ref().map(|b| b[i].as_slice());
            let mut q = layer.q.apply(&a, bias(0), h);
            let mut k = layer.k.apply(&a, bias(1), h);
            let v = layer.v.apply(&a, bias(2), h);
            if let Some((qn, kn)) = &layer.qk_norm {
                q = f64_to_f32(rms_norm::rms_norm(&q, qn, norm));
                k = f64_to_f32(rms_norm::rms_norm(&k, kn, norm));
            }
            let (q, k) = rope::rope(&q, &k, hd, &positions, &rope_cfg);
            let (q, k) = (f64_to_f32(q), f64_to_f32(k));
            let (att, _) = attention(&q, &k, &v, shape, &mask, 1.0, 1.0);
            let mut att = f64_to_f32(att);
            if let Some(w) = &layer.attn_sub_norm {
                att = f64_to_f32(rms_norm::rms_norm(&att, w, norm));
            }
            let o = layer.o.apply(&att, None, c.num_q_heads * hd);
            x.iter_mut().zip(&o).for_each(|(r, d)| *r += d);
            let a = f64_to_f32(rms_norm::rms_norm(&x, &layer.post_norm, norm));
            let m = self.mlp(&layer.mlp, &a)?;
            x.iter_mut().zip(&m).for_each(|(r, d)| *r += d);
        }
        let x = f64_to_f32(rms_norm::rms_norm(&x, &self.norm, norm));
        Ok(linear(&x, self.lm_head.as_ref().unwrap_or(&self.embed), None, h))
    }

    fn expert(&self, e: &Expert, x: &[f32]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let mut act = glu(&e.gate.apply(x, None, h), &e.up.apply(x, None, h), self.act);
        if let Some(w) = &e.sub_norm {
            act = f64_to_f32(rms_norm::rms_norm(&act, w, RmsNormConfig::new(self.config.rms_norm_eps as f32)));
        }
        e.down.apply(&act, None, e.intermediate_size)
    }

    fn mlp(&self, mlp: &Mlp, x: &[f32]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        match mlp {
            Mlp::Dense(e) => Ok(self.expert(e, x)),
            Mlp::Moe { router, experts } => {
                let m = self.config.moe.as_ref().expect("a MoE layer has a MoE config");
                let logits = linear(x, router, None, h);
                let gate = moe_routing::moe_gate(&logits, m.num_experts, m.top_k, None, &MoeGateConfig::softmax_topk(m.renormalize));
                let mut out = vec![0.0f32; x.len()];
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
                    out[t * h..(t + 1) * h].iter_mut().zip(acc).for_each(|(o, a)| *o = a as f32);
                }
                Ok(out)
            }
        }
    }

    /// Greedy continuation: `new_tokens` argmax tokens after `prompt` (ties to the lower id).
    pub fn generate_greedy(&self, prompt: &[u32], new_tokens: usize) -> Result<Vec<u32>> {
        self.generate(prompt, new_tokens, &mut Sampler::new(Sampling::greedy()))
    }

    /// `new_tokens` tokens after `prompt`, each drawn by `sampler` from the last position's
    /// logits (the CPU path recomputes the whole sequence per token: it is the oracle).
    pub fn generate(&self, prompt: &[u32], new_tokens: usize, sampler: &mut Sampler) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::Empty { op: "CpuModel::generate", arg: "prompt", shape: "[0]".into() });
        }
        let v = self.config.vocab_size;
        let mut ids = prompt.to_vec();
        for _ in 0..new_tokens {
            let logits = self.forward(&ids)?;
            ids.push(sampler.sample(&logits[(ids.len() - 1) * v..]));
        }
        Ok(ids[prompt.len()..].to_vec())
    }
}
