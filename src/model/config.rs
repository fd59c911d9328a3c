//! A Hugging Face `config.json`, read into one decoder description with switches (not one type
//! per model). transformers ≥ 5 writes `rope_parameters` (theta inside); older files write
//! `rope_theta` + `rope_scaling`: both are read.

use crate::ops::rope::{RopeConfig, RopeScaling, Yarn};
use crate::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The architectures the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen3,
    Mixtral,
    Qwen3Moe,
    DeepseekV3,
    BitNet,
}

impl Architecture {
    fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "LlamaForCausalLM" => Self::Llama,
            "Qwen3ForCausalLM" => Self::Qwen3,
            "MixtralForCausalLM" => Self::Mixtral,
            "Qwen3MoeForCausalLM" => Self::Qwen3Moe,
            "DeepseekV3ForCausalLM" => Self::DeepseekV3,
            "BitNetForCausalLM" => Self::BitNet,
            _ => return None,
        })
    }
}

/// Mixture-of-experts settings (Mixtral, Qwen3-MoE).
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    /// Each expert's hidden size.
    pub intermediate_size: usize,
    /// Renormalise the top-k softmax weights to sum to 1 (Mixtral: yes; Qwen3-MoE: norm_topk_prob).
    pub renormalize: bool,
    /// Layers that use a dense MLP instead (Qwen3-MoE `mlp_only_layers`, `decoder_sparse_step`).
    pub dense_layers: Vec<usize>,
}

/// transformers' `linear_class` for BitNet quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitLinearClass {
    /// `bitlinear` (transformers' default): `(q · Tᵀ) / (weight_scale · activation scale)`.
    BitLinear,
    /// `autobitlinear` (BitNet b1.58 2B4T): `(dequantized activations · Tᵀ) · weight_scale`.
    AutoBitLinear,
}

/// BitNet b1.58 ternary projections: config.json `quantization_config` with
/// `quant_method: "bitnet"` (transformers' `BitNetQuantConfig`). Every `nn.Linear` but the
/// output head becomes ternary.
#[derive(Clone, Debug, PartialEq)]
pub struct BitNetQuant {
    pub linear_class: BitLinearClass,
    /// `quantization_mode`: offline (true: the checkpoint holds packed ternary weights and
    /// `weight_scale`) or online (float weights, ternarized at every forward).
    pub offline: bool,
    /// `use_rms_norm`: an extra RMSNorm on each projection's input.
    pub use_rms_norm: bool,
}

/// The decoder, as config.json describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The dense MLP's hidden size.
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_q_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `rope_parameters` / `rope_scaling` without the theta (`rope_type`, factor, ...).
    pub rope_scaling: Option<Value>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Per-head q/k RMSNorm before RoPE (Qwen3, Qwen3-MoE).
    pub qk_norm: bool,
    pub attention_bias: bool,
    pub hidden_act: String,
    pub moe: Option<MoeConfig>,
    /// RMSNorm before o_proj and before down_proj (BitNet's `attn_sub_norm`, `ffn_sub_norm`).
    pub sub_norms: bool,
    pub bitnet_quant: Option<BitNetQuant>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    #[serde(default)]
    intermediate_size: Option<usize>,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<Value>,
    #[serde(default)]
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default, alias = "num_experts")]
    num_local_experts: Option<usize>,
    #[serde(default)]
    num_experts_per_tok: Option<usize>,
    #[serde(default)]
    moe_intermediate_size: Option<usize>,
    #[serde(default)]
    norm_topk_prob: Option<bool>,
    #[serde(default)]
    decoder_sparse_step: Option<usize>,
    #[serde(default)]
    mlp_only_layers: Option<Vec<usize>>,
    #[serde(default)]
    quantization_config: Option<Value>,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Load { path: path.display().to_string(), reason: reason.to_string() }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Load { reason, .. } => bad(&path, reason),
            other => other,
        })
    }

    /// Parses config.json text.
    pub fn from_json(text: &str) -> Result<Self> {
        let here = Path::new("config.json");
        let raw: Raw = serde_json::from_str(text).map_err(|e| bad(here, e))?;
        let name = raw.architectures.first().cloned().unwrap_or_default();
        let architecture = Architecture::from_hf(&name).ok_or_else(|| Error::Unsupported {
            op: "ModelConfig",
            what: "architecture (Llama, Qwen3, Mixtral, Qwen3-MoE, DeepSeek-V3, BitNet)",
            value: if name.is_empty() { "none given".into() } else { name.clone() },
        })?;
        // RoPE: theta and the scaling dict, wherever this version of transformers put them.
        let mut scaling = raw.rope_parameters.clone().or(raw.rope_scaling.clone());
        let theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10000.0);
        if let Some(Value::Object(m)) = &mut scaling {
            m.remove("rope_theta");
            let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(Value::as_str).unwrap_or("default");
            if kind == "default" && m.len() <= 1 {
                scaling = None;
            }
        }
        let heads = raw.num_attention_heads;
        if heads == 0 || raw.hidden_size == 0 || raw.num_hidden_layers == 0 || raw.vocab_size == 0 {
            return Err(bad(here, "zero-sized hidden_size, num_attention_heads, num_hidden_layers or vocab_size"));
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if num_kv_heads == 0 || heads % num_kv_heads != 0 {
            return Err(bad(here, format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {num_kv_heads}")));
        }
        let moe = match architecture {
            Architecture::Mixtral | Architecture::Qwen3Moe => {
                let num_experts = raw.num_local_experts.ok_or_else(|| bad(here, "MoE config without num_local_experts / num_experts"))?;
                let top_k = raw.num_experts_per_tok.unwrap_or(2);
                let step = raw.decoder_sparse_step.unwrap_or(1).max(1);
                let mut dense_layers = raw.mlp_only_layers.clone().unwrap_or_default();
                dense_layers.extend((0..raw.num_hidden_layers).filter(|l| (l + 1) % step != 0));
                dense_layers.sort_unstable();
                dense_layers.dedup();
                Some(MoeConfig {
                    num_experts,
                    top_k,
                    intermediate_size: if architecture == Architecture::Mixtral {
                        raw.intermediate_size.unwrap_or(0)
                    } else {
                        raw.moe_intermediate_size.ok_or_else(|| bad(here, "Qwen3-MoE config without moe_intermediate_size"))?
                    },
                    renormalize: architecture == Architecture::Mixtral || raw.norm_topk_prob.unwrap_or(false),
                    dense_layers,
                })
            }
            _ => None,
        };
        let bitnet_quant = match &raw.quantization_config {
            Some(q) if q.get("quant_method").and_then(Value::as_str) == Some("bitnet") => Some(bitnet_quant(q)?),
            _ => None,
        };
        Ok(Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(4 * raw.hidden_size),
            num_layers: raw.num_hidden_layers,
            num_q_heads: heads,
            num_kv_heads,
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / heads),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: theta,
            rope_scaling: scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Moe),
            attention_bias: raw.attention_bias.unwrap_or(false),
            hidden_act: raw.hidden_act.unwrap_or_else(|| "silu".into()),
            moe,
            sub_norms: architecture == Architecture::BitNet,
            bitnet_quant,
        })
    }
}

/// A `quant_method: "bitnet"` quantization_config, with transformers' defaults.
fn bitnet_quant(q: &Value) -> Result<BitNetQuant> {
    let here = Path::new("config.json");
    let text = |k: &str, default: &'static str| q.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
    let linear_class = match text("linear_class", "bitlinear").as_str() {
        "bitlinear" => BitLinearClass::BitLinear,
        "autobitlinear" => BitLinearClass::AutoBitLinear,
        other => return Err(bad(here, format!("quantization_config.linear_class `{other}` (bitlinear, autobitlinear)"))),
    };
    let offline = match text("quantization_mode", "offline").as_str() {
        "offline" => true,
        "online" => false,
        other => return Err(bad(here, format!("quantization_config.quantization_mode `{other}` (online, offline)"))),
    };
    Ok(BitNetQuant { linear_class, offline, use_rms_norm: q.get("use_rms_norm").and_then(Value::as_bool).unwrap_or(false) })
}

impl ModelConfig {
    /// The RoPE of every attention layer (NeoX style over the whole head), from `rope_theta` and
    /// the scaling dict: default, linear, dynamic (NTK, at `seq_len` tokens), llama3, yarn.
    pub fn rope(&self, seq_len: usize) -> Result<RopeConfig> {
        let base = RopeConfig::new(self.head_dim, self.rope_theta);
        let Some(sc) = &self.rope_scaling else { return Ok(base) };
        let num = |k: &str| sc.get(k).and_then(Value::as_f64);
        let need = |k: &'static str| num(k).ok_or_else(|| bad(Path::new("config.json"), format!("rope scaling without `{k}`")));
        let original = sc
            .get("original_max_position_embeddings")
            .and_then(Value::as_u64)
            .map_or(self.max_position_embeddings, |v| v as usize);
        let kind = sc.get("rope_type").or_else(|| sc.get("type")).and_then(Value::as_str).unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "dynamic" => RopeScaling::DynamicNtk { factor: need("factor")?, original_max_positions: self.max_position_embeddings, seq_len },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_positions: original,
            },
            "yarn" => RopeScaling::Yarn(Yarn {
                beta_fast: num("beta_fast").unwrap_or(32.0),
                beta_slow: num("beta_slow").unwrap_or(1.0),
                mscale: num("mscale"),
                mscale_all_dim: num("mscale_all_dim"),
                attention_factor: num("attention_factor"),
                truncate: sc.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                ..Yarn::new(need("factor")?, original)
            }),
            other => return Err(Error::Unsupported { op: "ModelConfig::rope", what: "rope_type", value: other.to_string() }),
        };
        let cfg = base.with_scaling(scaling);
        cfg.validate("ModelConfig::rope", self.head_dim)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_5_and_legacy_rope_fields() {
        let v5 = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1,"rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0}}"#;
        let c = ModelConfig::from_json(v5).unwrap();
        assert_eq!((c.rope_theta, c.head_dim, c.num_kv_heads), (500000.0, 4, 1));
        assert_eq!(c.rope_scaling.as_ref().unwrap()["rope_type"], "llama3");
        assert!(c.rope_scaling.as_ref().unwrap().get("rope_theta").is_none());
        // llama3 without its frequency factors is an error naming the missing key.
        let e = c.rope(16).unwrap_err();
        assert!(e.to_string().contains("low_freq_factor"), "{e}");
        let legacy = r#"{"architectures":["Qwen3ForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"rope_theta":1e6}"#;
        let c = ModelConfig::from_json(legacy).unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling.clone(), c.qk_norm), (1e6, None, true));
        let default = r#"{"architectures":["MixtralForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,
            "num_attention_heads":2,"num_local_experts":4,"intermediate_size":16,"rope_parameters":{"rope_theta":1e6,"rope_type":"default"}}"#;
        let c = ModelConfig::from_json(default).unwrap();
        assert_eq!(c.rope_scaling, None);
        assert_eq!(c.moe.unwrap(), MoeConfig { num_experts: 4, top_k: 2, intermediate_size: 16, renormalize: true, dense_layers: vec![] });
    }

    #[test]
    fn unknown_architectures_and_bad_heads_are_errors() {
        let e = ModelConfig::from_json(r#"{"architectures":["GPT2LMHeadModel"],"vocab_size":1,"hidden_size":1,"num_hidden_layers":1,"num_attention_heads":1}"#)
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { ref value, .. } if value == "GPT2LMHeadModel"), "{e}");
        let e = ModelConfig::from_json(r#"{"architectures":["LlamaForCausalLM"],"vocab_size":1,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3}"#)
            .unwrap_err();
        assert!(matches!(e, Error::Load { .. }), "{e}");
    }

    #[test]
    fn bitnet_reads_quantization_config_and_has_sub_norms() {
        // microsoft/bitnet-b1.58-2B-4T's config.json, shrunk.
        let j = r#"{"architectures":["BitNetForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":4,"num_key_value_heads":1,"hidden_act":"relu2","rope_theta":500000.0,"tie_word_embeddings":true,
            "quantization_config":{"quant_method":"bitnet","linear_class":"autobitlinear","quantization_mode":"offline"}}"#;
        let c = ModelConfig::from_json(j).unwrap();
        assert_eq!((c.architecture, c.sub_norms, c.qk_norm, c.tie_word_embeddings), (Architecture::BitNet, true, false, true));
        let q = BitNetQuant { linear_class: BitLinearClass::AutoBitLinear, offline: true, use_rms_norm: false };
        assert_eq!(c.bitnet_quant, Some(q));
        // transformers' defaults: bitlinear, offline, no extra norm; other quant methods are not BitNet's.
        let d = j.replace(r#""linear_class":"autobitlinear","quantization_mode":"offline""#, r#""use_rms_norm":true"#);
        let q = BitNetQuant { linear_class: BitLinearClass::BitLinear, offline: true, use_rms_norm: true };
        assert_eq!(ModelConfig::from_json(&d).unwrap().bitnet_quant, Some(q));
        let online = j.replace("offline", "online");
        assert!(!ModelConfig::from_json(&online).unwrap().bitnet_quant.unwrap().offline);
        let fp8 = j.replace(r#""quant_method":"bitnet""#, r#""quant_method":"fp8""#);
        assert_eq!(ModelConfig::from_json(&fp8).unwrap().bitnet_quant, None);
        let e = ModelConfig::from_json(&j.replace("autobitlinear", "ternary")).unwrap_err();
        assert!(e.to_string().contains("linear_class `ternary`"), "{e}");
        // Llama has neither.
        let l = ModelConfig::from_json(&j.replace("BitNetForCausalLM", "LlamaForCausalLM").replace("bitnet", "none")).unwrap();
        assert_eq!((l.sub_norms, l.bitnet_quant), (false, None));
    }

    #[test]
    fn qwen3_moe_dense_layers_come_from_mlp_only_layers_and_sparse_step() {
        let j = r#"{"architectures":["Qwen3MoeForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":4,
            "num_attention_heads":2,"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":4,"norm_topk_prob":false,
            "decoder_sparse_step":2,"mlp_only_layers":[0]}"#;
        let m = ModelConfig::from_json(j).unwrap().moe.unwrap();
        assert_eq!((m.num_experts, m.renormalize, m.dense_layers), (8, false, vec![0, 2]));
    }
}
