//! Building a [`CpuModel`] from a checkpoint: every layer's projections (dense, FP8 or
//! ternary), norms, attention and MLP weights, by the names Hugging Face checkpoints use.

use super::{fp8_together, Attention, CpuModel, Expert, Layer, Linear, MlaQuery, Mlp};
use crate::model::{Architecture, BitLinearClass, ModelConfig, Weights};
use crate::ops::moe_routing::MoeScoring;
use crate::reference::matmul_ternary::{self as ternary, TernaryWeights};
use crate::reference::mlp::GluActivation;
use crate::{Error, Result};
use std::path::Path;

/// The routed experts under `block` (e.g. `model.layers.3.mlp.`): per expert
/// (`experts.{e}.<gate>.weight`, as checkpoints and transformers' save_pretrained store them)
/// or fused (`experts.gate_up_proj` `[E, 2·inter, hidden]`, gate rows first, and
/// `experts.down_proj` `[E, hidden, inter]`, transformers 5's in-memory layout).
fn load_experts(w: &Weights, c: &ModelConfig, block: &str, names: [&str; 3], num_experts: usize, inter: usize, h: usize) -> Result<Vec<Expert>> {
    let fused = format!("{block}experts.gate_up_proj");
    if w.contains(&fused) {
        let gate_up = w.get_matrix(&fused, &[num_experts, 2 * inter, h])?;
        let down = w.get_matrix(&format!("{block}experts.down_proj"), &[num_experts, h, inter])?;
        return Ok((0..num_experts)
            .map(|e| {
                let gu = e * 2 * inter * h;
                Expert {
                    gate: Linear::Dense(gate_up.slice(gu..gu + inter * h)),
                    up: Linear::Dense(gate_up.slice(gu + inter * h..gu + 2 * inter * h)),
                    down: Linear::Dense(down.slice(e * h * inter..(e + 1) * h * inter)),
                    intermediate_size: inter,
                    sub_norm: None,
                }
            })
            .collect());
    }
    (0..num_experts).map(|e| load_mlp(w, c, &format!("{block}experts.{e}."), names, inter, h)).collect()
}

/// A gated MLP `{prefix}{gate, up, down}` (+ BitNet's `ffn_sub_norm`).
fn load_mlp(w: &Weights, c: &ModelConfig, prefix: &str, names: [&str; 3], inter: usize, h: usize) -> Result<Expert> {
    let [gate, up] = fp8_together([load_linear(w, c, &format!("{prefix}{}", names[0]), inter, h)?, load_linear(w, c, &format!("{prefix}{}", names[1]), inter, h)?]);
    Ok(Expert {
        gate,
        up,
        down: load_linear(w, c, &format!("{prefix}{}", names[2]), h, inter)?,
        intermediate_size: inter,
        sub_norm: if c.sub_norms { Some(w.get_shaped(&format!("{prefix}ffn_sub_norm.weight"), &[inter])?) } else { None },
    })
}

/// `{prefix}.weight` `[n, k]`: dense or FP8 ([`Linear::from_checkpoint`]), or (BitNet) packed
/// ternary `[n / 4, k]` u8 + `{prefix}.weight_scale` `[1]`.
fn load_linear(w: &Weights, c: &ModelConfig, prefix: &str, n: usize, k: usize) -> Result<Linear> {
    let name = format!("{prefix}.weight");
    if c.bitnet_quant.is_none() {
        return Linear::from_checkpoint(w, c, &name, n, 0..n, k);
    }
    let (packed, shape) = w.get_u8(&name)?;
    if !n.is_multiple_of(ternary::VALUES_PER_BYTE) || shape != [n / ternary::VALUES_PER_BYTE, k] {
        return Err(Error::ShapeMismatch { op: "CpuModel", arg: "packed ternary weight", expected: format!("{name}: [{n} / 4, {k}]"), got: format!("{shape:?}") });
    }
    let values = ternary::unpack(&packed, k).ok_or_else(|| Error::Load { path: name.clone(), reason: "a 2-bit code 0b11 (not ternary)".into() })?;
    Ok(Linear::BitLinear(TernaryWeights { values, scale: w.get_shaped(&format!("{prefix}.weight_scale"), &[1])?[0] }))
}

impl CpuModel {
    /// Loads `dir` (config.json + *.safetensors). Of BitNet's quantization, the offline
    /// AutoBitLinear format (packed ternary weights + `weight_scale`, BitNet b1.58 2B4T's) runs.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let w = Weights::open(dir)?;
        Self::from_weights(config, &w)
    }

    /// Builds the model from `config` and an opened checkpoint: what [`CpuModel::load`] does
    /// after reading them.
    pub fn from_weights(config: ModelConfig, w: &Weights) -> Result<Self> {
        let c = &config;
        if let Some(q) = &c.bitnet_quant {
            if q.linear_class != BitLinearClass::AutoBitLinear || !q.offline || q.use_rms_norm || c.moe.is_some() {
                return Err(Error::Unsupported {
                    op: "CpuModel",
                    what: "BitNet quantization (offline autobitlinear without use_rms_norm, dense MLP)",
                    value: format!("{q:?}, MoE {}", c.moe.is_some()),
                });
            }
        }
        c.check_fp8_block("CpuModel")?;
        if c.mla.is_some() && c.attention_bias {
            return Err(Error::Unsupported { op: "CpuModel", what: "attention_bias with MLA", value: "true".into() });
        }
        let act = GluActivation::from_hf(&c.hidden_act)
            .ok_or_else(|| Error::Unsupported { op: "CpuModel", what: "hidden_act", value: c.hidden_act.clone() })?;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (qd, kvd) = (c.num_q_heads * hd, c.num_kv_heads * hd);
        let get = |name: &str, shape: &[usize]| w.get_shaped(name, shape);
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}.");
            let at = |n: &str| format!("{p}self_attn.{n}");
            let attention = match &c.mla {
                None => {
                    let [q, k, v] = fp8_together([load_linear(w, c, &at("q_proj"), qd, h)?, load_linear(w, c, &at("k_proj"), kvd, h)?, load_linear(w, c, &at("v_proj"), kvd, h)?]);
                    Attention::Gqa {
                        q,
                        k,
                        v,
                        o: load_linear(w, c, &at("o_proj"), h, qd)?,
                        sub_norm: if c.sub_norms { Some(get(&at("attn_sub_norm.weight"), &[qd])?) } else { None },
                        bias: if c.attention_bias {
                            // transformers: q, k, v and o_proj all take bias=attention_bias.
                            Some([get(&at("q_proj.bias"), &[qd])?, get(&at("k_proj.bias"), &[kvd])?, get(&at("v_proj.bias"), &[kvd])?, get(&at("o_proj.bias"), &[h])?])
                        } else {
                            None
                        },
                        qk_norm: if c.qk_norm { Some((get(&at("q_norm.weight"), &[hd])?, get(&at("k_norm.weight"), &[hd])?)) } else { None },
                    }
                }
                Some(m) => {
                    let heads = c.num_q_heads;
                    Attention::Mla {
                        q: match m.q_lora_rank {
                            None => MlaQuery::Full(get(&at("q_proj.weight"), &[qd, h])?),
                            Some(rank) => MlaQuery::LowRank {
                                a: load_linear(w, c, &at("q_a_proj"), rank, h)?,
                                norm: get(&at("q_a_layernorm.weight"), &[rank])?,
                                b: get(&at("q_b_proj.weight"), &[qd, rank])?,
                            },
                        },
                        kv_a: {
                            let (name, lora) = (at("kv_a_proj_with_mqa.weight"), m.kv_lora_rank);
                            let rows = lora + m.qk_rope_head_dim;
                            (Linear::from_checkpoint(w, c, &name, rows, 0..lora, h)?, Linear::from_checkpoint(w, c, &name, rows, lora..rows, h)?)
                        },
                        kv_a_norm: get(&at("kv_a_layernorm.weight"), &[m.kv_lora_rank])?,
                        kv_b: get(&at("kv_b_proj.weight"), &[heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank])?,
                        o: get(&at("o_proj.weight"), &[h, heads * m.v_head_dim])?,
                    }
                }
            };
            let gate_up_down = ["gate_proj", "up_proj", "down_proj"];
            let mlp = match (&c.moe, c.architecture) {
                (Some(m), arch) if !m.dense_layers.contains(&l) => {
                    let (block, names) =
                        if arch == Architecture::Mixtral { (format!("{p}block_sparse_moe."), ["w1", "w3", "w2"]) } else { (format!("{p}mlp."), gate_up_down) };
                    let sigmoid = m.scoring == MoeScoring::Sigmoid;
                    Mlp::Moe {
                        router: get(&format!("{block}gate.weight"), &[m.num_experts, h])?,
                        correction_bias: if sigmoid { Some(get(&format!("{block}gate.e_score_correction_bias"), &[m.num_experts])?) } else { None },
                        experts: load_experts(w, c, &block, names, m.num_experts, m.intermediate_size, h)?,
                        shared: if m.num_shared_experts > 0 {
                            Some(load_mlp(w, c, &format!("{block}shared_experts."), gate_up_down, m.intermediate_size * m.num_shared_experts, h)?)
                        } else {
                            None
                        },
                    }
                }
                _ => Mlp::Dense(load_mlp(w, c, &format!("{p}mlp."), gate_up_down, c.intermediate_size, h)?),
            };
            layers.push(Layer {
                input_norm: get(&format!("{p}input_layernorm.weight"), &[h])?,
                post_norm: get(&format!("{p}post_attention_layernorm.weight"), &[h])?,
                attention,
                mlp,
            });
        }
        let embed = w.get_matrix("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if c.tie_word_embeddings && !w.contains("lm_head.weight") { None } else { Some(w.get_matrix("lm_head.weight", &[c.vocab_size, h])?) };
        let checkpoint_kv_scales = w.kv_scales(c.num_layers)?;
        Ok(Self { norm: get("model.norm.weight", &[h])?, embed, layers, lm_head, act, config, kv_fp8: None, checkpoint_kv_scales })
    }

    /// FP8 checkpoints: the model with every FP8 projection's input rounded to e4m3 per token
    /// per 128 columns first (`Linear::Fp8`), as FP8 inference (the checkpoints'
    /// `activation_scheme: dynamic`, and the GPU path) computes; without it, the CPU path
    /// computes on the dequantized weights in f32, as transformers does on a CPU. No effect on
    /// other checkpoints.
    pub fn with_fp8_inputs(mut self) -> Self {
        for layer in &mut self.layers {
            let mut linears: Vec<&mut Linear> = match &mut layer.attention {
                Attention::Gqa { q, k, v, o, .. } => vec![q, k, v, o],
                Attention::Mla { q, kv_a, .. } => {
                    let mut v = vec![&mut kv_a.0, &mut kv_a.1];
                    if let MlaQuery::LowRank { a, .. } = q {
                        v.push(a);
                    }
                    v
                }
            };
            let experts: Vec<&mut Expert> = match &mut layer.mlp {
                Mlp::Dense(e) => vec![e],
                Mlp::Moe { experts, shared, .. } => experts.iter_mut().chain(shared.as_mut()).collect(),
            };
            linears.extend(experts.into_iter().flat_map(|e| [&mut e.gate, &mut e.up, &mut e.down]));
            for l in linears {
                if let Linear::Fp8 { quantize_input, .. } = l {
                    *quantize_input = true;
                }
            }
        }
        self
    }
}
