//! A Hugging Face `config.json`, read into one decoder description with switches (not one type
//! per model). transformers ≥ 5 writes `rope_parameters` (theta inside); older files write
//! `rope_theta` + `rope_scaling`: both are read. Keys a DeepSeek-V3 config.json leaves out take
//! `DeepseekV3Config`'s defaults (transformers 5.17), as transformers would.

mod rope;

use crate::ops::moe_routing::{MoeGateConfig, MoeScoring};
use crate::kv_cache::KvScales;
use crate::ops::quant::FP8_BLOCK;
use crate::reference::elementwise::MAX_SAMPLE_COLS;
use crate::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// Most decoder layers a config may have (released models have at most a few hundred).
const MAX_LAYERS: usize = 1 << 12;
/// Most any size field may be (the kernels index with int32).
const MAX_DIM: usize = i32::MAX as usize;

/// The architectures the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (Llama 2/3 and checkpoints that share its layout).
    Llama,
    /// `Qwen3ForCausalLM`: Llama with per-head q/k RMSNorm.
    Qwen3,
    /// `MixtralForCausalLM`: Llama attention, softmax-routed MoE MLPs.
    Mixtral,
    /// `Qwen3MoeForCausalLM`: Qwen3 attention, softmax-routed MoE MLPs.
    Qwen3Moe,
    /// `DeepseekV3ForCausalLM`: MLA, sigmoid-routed grouped MoE with shared experts.
    DeepseekV3,
    /// `BitNetForCausalLM` (BitNet b1.58): ternary projections, sub-norms, squared-ReLU GLU.
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

/// Mixture-of-experts settings (Mixtral, Qwen3-MoE, DeepSeek-V3).
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Routed experts (`num_local_experts`, `num_experts`, DeepSeek `n_routed_experts`).
    pub num_experts: usize,
    /// Experts per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// Each expert's hidden size.
    pub intermediate_size: usize,
    /// Renormalise the top-k weights to sum to 1 (Mixtral: yes; Qwen3-MoE, DeepSeek-V3:
    /// norm_topk_prob).
    pub renormalize: bool,
    /// Layers that use a dense MLP instead (Qwen3-MoE `mlp_only_layers`, `decoder_sparse_step`;
    /// DeepSeek-V3 the first `first_k_dense_replace`).
    pub dense_layers: Vec<usize>,
    /// Softmax over the logits (Mixtral, Qwen3-MoE) or sigmoid, selected with the router's
    /// `e_score_correction_bias` added (DeepSeek-V3 `scoring_func: sigmoid`, `topk_method: noaux_tc`).
    pub scoring: MoeScoring,
    /// Grouped selection: experts only from the `topk_group` best of `n_group` groups (1 and 1:
    /// no grouping).
    pub n_group: usize,
    /// Groups kept per token (see `n_group`).
    pub topk_group: usize,
    /// Every routed weight is multiplied by this (DeepSeek-V3; 1 otherwise).
    pub routed_scaling_factor: f32,
    /// Shared experts (DeepSeek-V3 `n_shared_experts`): one MLP of `intermediate_size ·
    /// num_shared_experts` every token runs, added to the routed experts' sum.
    pub num_shared_experts: usize,
}

impl MoeConfig {
    /// The routing as a `moe_gate` configuration.
    pub fn gate(&self) -> MoeGateConfig {
        MoeGateConfig {
            scoring: self.scoring,
            renormalize: self.renormalize,
            n_group: self.n_group,
            topk_group: self.topk_group,
            routed_scaling_factor: self.routed_scaling_factor,
            local_experts: None,
        }
    }
}

/// Multi-head latent attention (DeepSeek-V2/V3). q/k heads are `qk_nope_head_dim +
/// qk_rope_head_dim` wide ([`ModelConfig::head_dim`]), v heads `v_head_dim`; keys and values
/// are expanded from a shared latent of `kv_lora_rank` plus one shared rotary key.
#[derive(Clone, Debug, PartialEq)]
pub struct MlaConfig {
    /// None: `q_proj`; Some(rank): `q_a_proj` → `q_a_layernorm` → `q_b_proj`.
    pub q_lora_rank: Option<usize>,
    /// Width of the shared latent `c_kv` (the latent cache's V width; DeepSeek-V3: 512).
    pub kv_lora_rank: usize,
    /// The non-rotary part of each q/k head (its first elements; DeepSeek-V3: 128).
    pub qk_nope_head_dim: usize,
    /// The rotary part of each q/k head (its last elements); RoPE's rotary_dim.
    pub qk_rope_head_dim: usize,
    /// Elements per v head (DeepSeek-V3: 128).
    pub v_head_dim: usize,
    /// Rotary pairs are interleaved `(x0, x1), (x2, x3), …` (GPT-J style; DeepSeek's default).
    pub rope_interleave: bool,
}

impl MlaConfig {
    /// The RMSNorms inside MLA (`q_a_layernorm`, `kv_a_layernorm`): transformers builds them
    /// with the default eps, not `rms_norm_eps`.
    pub const LATENT_NORM_EPS: f32 = 1e-6;
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
    /// How a ternary projection combines the scales.
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
    /// Which decoder (config.json `architectures[0]`).
    pub architecture: Architecture,
    /// Tokens in the vocabulary (rows of the embedding, columns of the logits).
    pub vocab_size: usize,
    /// The residual stream's width (`hidden`).
    pub hidden_size: usize,
    /// The dense MLP's hidden size.
    pub intermediate_size: usize,
    /// Decoder layers (`num_hidden_layers`).
    pub num_layers: usize,
    /// Query heads (`num_attention_heads`).
    pub num_q_heads: usize,
    /// Key/value heads (`num_key_value_heads`; = num_q_heads without GQA).
    pub num_kv_heads: usize,
    /// The q/k head width (MLA: qk_nope_head_dim + qk_rope_head_dim; transformers' DeepSeek-V3
    /// config calls that `qk_head_dim` and sets its `head_dim` to the rotary part).
    pub head_dim: usize,
    /// eps of the decoder's RMSNorms.
    pub rms_norm_eps: f64,
    /// RoPE base theta.
    pub rope_theta: f64,
    /// `rope_parameters` / `rope_scaling` without the theta (`rope_type`, factor, ...).
    pub rope_scaling: Option<Value>,
    /// The trained context length (some RoPE scalings read it).
    pub max_position_embeddings: usize,
    /// The output head reuses the embedding matrix (when the checkpoint has no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Per-head q/k RMSNorm before RoPE (Qwen3, Qwen3-MoE).
    pub qk_norm: bool,
    /// q_proj, k_proj and v_proj have biases.
    pub attention_bias: bool,
    /// The MLP's gate activation as config.json names it (e.g. "silu").
    pub hidden_act: String,
    /// Mixture-of-experts MLPs (None: dense).
    pub moe: Option<MoeConfig>,
    /// Multi-head latent attention instead of GQA (DeepSeek-V3).
    pub mla: Option<MlaConfig>,
    /// `quantization_config {quant_method: fp8, weight_block_size}`: linear weights stored as
    /// e4m3 with one `<name>_scale_inv` per block of this shape (DeepSeek-V3: 128 × 128).
    pub fp8_weight_block: Option<[usize; 2]>,
    /// RMSNorm before o_proj and before down_proj (BitNet's `attn_sub_norm`, `ffn_sub_norm`).
    pub sub_norms: bool,
    /// BitNet ternary projections (None: ordinary linear layers).
    pub bitnet_quant: Option<BitNetQuant>,
    /// The end-of-sequence token ids generation stops at (empty: none). config.json's
    /// `eos_token_id` (an id or a list of ids); [`ModelConfig::from_dir`] lets a
    /// generation_config.json beside it decide instead, as transformers does.
    pub eos_token_ids: Vec<u32>,
}

/// Deserializes a key that may be present as null: missing → None, null → Some(None).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
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
    mlp_bias: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default, alias = "num_experts", alias = "n_routed_experts")]
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
    n_shared_experts: Option<usize>,
    #[serde(default)]
    n_group: Option<usize>,
    #[serde(default)]
    topk_group: Option<usize>,
    #[serde(default)]
    routed_scaling_factor: Option<f32>,
    #[serde(default)]
    first_k_dense_replace: Option<usize>,
    #[serde(default)]
    scoring_func: Option<String>,
    #[serde(default)]
    topk_method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    q_lora_rank: Option<Option<usize>>,
    #[serde(default)]
    kv_lora_rank: Option<usize>,
    #[serde(default)]
    qk_nope_head_dim: Option<usize>,
    #[serde(default)]
    qk_rope_head_dim: Option<usize>,
    #[serde(default)]
    v_head_dim: Option<usize>,
    #[serde(default)]
    rope_interleave: Option<bool>,
    #[serde(default)]
    quantization_config: Option<Value>,
    #[serde(default)]
    eos_token_id: Option<Value>,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Load { path: path.display().to_string(), reason: reason.to_string() }
}

/// `eos_token_id`: absent or null → none, an id → [id], a list of ids → the list.
fn eos_token_ids(v: Option<&Value>, path: &Path) -> Result<Vec<u32>> {
    let id = |x: &Value| x.as_u64().and_then(|i| u32::try_from(i).ok());
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids.iter().map(|x| id(x).ok_or(())).collect::<std::result::Result<_, _>>(),
        Some(x) => id(x).map(|i| vec![i]).ok_or(()),
    }
    .map_err(|()| bad(path, format!("eos_token_id {} is not a token id or a list of token ids", v.unwrap_or(&Value::Null))))
}

impl ModelConfig {
    /// Both model paths take FP8 block weights in 128 × 128 blocks only (DeepSeek-V3's and
    /// Qwen3-FP8's; what `reference::quant` dequantizes and the FP8 GEMM reads).
    pub fn check_fp8_block(&self, op: &'static str) -> Result<()> {
        match self.fp8_weight_block {
            Some(block) if block != [FP8_BLOCK, FP8_BLOCK] => Err(Error::Unsupported { op, what: "FP8 weight_block_size (128 × 128)", value: format!("{block:?}") }),
            _ => Ok(()),
        }
    }

    /// The FP8 KV cache scales both model paths take (`set_fp8_kv_cache`), one pair per layer:
    /// `scales` holds one pair (every layer's) or one per layer. Each scale finite and positive;
    /// one scale (k = v) for MLA's latent cache, whose rows hold K and V together.
    pub fn fp8_kv_scales_per_layer(&self, op: &'static str, scales: &[KvScales]) -> Result<Vec<KvScales>> {
        let per_layer = match scales.len() {
            1 => vec![scales[0]; self.num_layers],
            n if n == self.num_layers => scales.to_vec(),
            n => return Err(Error::ShapeMismatch { op, arg: "scales", expected: format!("[1] or [{}] (one pair, or one per layer)", self.num_layers), got: format!("[{n}]") }),
        };
        for s in &per_layer {
            crate::kv_cache::check_scales::<crate::F8E4M3>(op, *s)?;
            if self.mla.is_some() && s.k != s.v {
                return Err(Error::Unsupported { op, what: "FP8 KV cache scales of MLA's latent cache (one scale: k = v)", value: format!("{s:?}") });
            }
        }
        Ok(per_layer)
    }

    /// Reads `dir/config.json`. A `dir/generation_config.json`, when present, decides the EOS
    /// ids instead (its `eos_token_id`, or none when it has no such key): transformers replaces
    /// the config.json-derived generation settings with that file whole.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e))?;
        let mut config = Self::from_json(&text).map_err(|e| match e {
            Error::Load { reason, .. } => bad(&path, reason),
            other => other,
        })?;
        let generation = dir.join("generation_config.json");
        if generation.exists() {
            let text = std::fs::read_to_string(&generation).map_err(|e| bad(&generation, e))?;
            let raw: Value = serde_json::from_str(&text).map_err(|e| bad(&generation, e))?;
            config.eos_token_ids = eos_token_ids(raw.get("eos_token_id"), &generation)?;
        }
        Ok(config)
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
        // Sliding-window attention (transformers: Mixtral whenever sliding_window is set; Qwen3
        // and Qwen3-MoE with use_sliding_window, on the layers layer_types marks) is not built
        // into the model: refused, not run as full attention. Released checkpoints of these
        // architectures leave it off.
        let windowed = match architecture {
            Architecture::Mixtral => raw.sliding_window.is_some(),
            Architecture::Qwen3 | Architecture::Qwen3Moe => raw.use_sliding_window == Some(true),
            _ => false,
        } || raw.layer_types.iter().flatten().any(|t| t == "sliding_attention");
        if windowed {
            return Err(Error::Unsupported {
                op: "ModelConfig",
                what: "sliding-window attention (sliding_window, use_sliding_window, layer_types)",
                value: format!("sliding_window {:?}, use_sliding_window {:?}", raw.sliding_window, raw.use_sliding_window),
            });
        }
        // RoPE: theta and the scaling dict, wherever this version of transformers put them.
        let mut scaling = raw.rope_parameters.clone().or(raw.rope_scaling.clone());
        let theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(if architecture == Architecture::Mixtral { 1e6 } else { 10000.0 }); // transformers' defaults
        if let Some(Value::Object(m)) = &mut scaling {
            m.remove("rope_theta");
            let kind = rope::rope_type(|k| m.get(k));
            if kind == "default" && m.len() <= 1 {
                scaling = None;
            }
        }
        let heads = raw.num_attention_heads;
        if heads == 0 || raw.hidden_size == 0 || raw.num_hidden_layers == 0 || raw.vocab_size == 0 {
            return Err(bad(here, "zero-sized hidden_size, num_attention_heads, num_hidden_layers or vocab_size"));
        }
        // Bounds before anything is sized from these (a layer count of 2^40 had aborted on a
        // 633 TB allocation, and a Qwen3-MoE one looped 2^40 times building its dense list).
        if raw.num_hidden_layers > MAX_LAYERS {
            return Err(bad(here, format!("num_hidden_layers {} (at most {MAX_LAYERS})", raw.num_hidden_layers)));
        }
        if raw.vocab_size > MAX_SAMPLE_COLS {
            return Err(bad(here, format!("vocab_size {} (at most 2^23, the sampler's limit)", raw.vocab_size)));
        }
        let dims = [
            ("hidden_size", Some(raw.hidden_size)),
            ("intermediate_size", raw.intermediate_size),
            ("moe_intermediate_size", raw.moe_intermediate_size),
            ("num_attention_heads", Some(heads)),
            ("num_key_value_heads", raw.num_key_value_heads),
            ("head_dim", raw.head_dim),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("kv_lora_rank", raw.kv_lora_rank),
            ("q_lora_rank", raw.q_lora_rank.flatten()),
            ("qk_nope_head_dim", raw.qk_nope_head_dim),
            ("qk_rope_head_dim", raw.qk_rope_head_dim),
            ("v_head_dim", raw.v_head_dim),
        ];
        if let Some((what, v)) = dims.iter().find_map(|&(w, v)| v.filter(|&v| v > MAX_DIM).map(|v| (w, v))) {
            return Err(bad(here, format!("{what} {v} (at most 2^31 - 1)")));
        }
        if raw.mlp_bias == Some(true) {
            return Err(Error::Unsupported { op: "ModelConfig", what: "mlp_bias (biases on gate, up and down projections)", value: "true".into() });
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(if architecture == Architecture::Mixtral { 1e-5 } else { 1e-6 });
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0 && (rms_norm_eps as f32).is_finite()) {
            return Err(bad(here, format!("rms_norm_eps {rms_norm_eps} (finite, >= 0)")));
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if num_kv_heads == 0 || !heads.is_multiple_of(num_kv_heads) {
            return Err(bad(here, format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {num_kv_heads}")));
        }
        let moe = match architecture {
            Architecture::Mixtral | Architecture::Qwen3Moe => {
                let num_experts = raw.num_local_experts.ok_or_else(|| bad(here, "MoE config without num_local_experts / num_experts"))?;
                // transformers' defaults when a key is missing: Mixtral 2 of 8 experts of
                // 14,336; Qwen3-MoE 8 (of 128).
                let top_k = raw.num_experts_per_tok.unwrap_or(if architecture == Architecture::Mixtral { 2 } else { 8 });
                let step = raw.decoder_sparse_step.unwrap_or(1).max(1);
                let mut dense_layers = raw.mlp_only_layers.clone().unwrap_or_default();
                dense_layers.extend((0..raw.num_hidden_layers).filter(|l| (l + 1) % step != 0));
                dense_layers.sort_unstable();
                dense_layers.dedup();
                Some(MoeConfig {
                    num_experts,
                    top_k,
                    intermediate_size: if architecture == Architecture::Mixtral {
                        raw.intermediate_size.unwrap_or(14_336)
                    } else {
                        raw.moe_intermediate_size.ok_or_else(|| bad(here, "Qwen3-MoE config without moe_intermediate_size"))?
                    },
                    renormalize: architecture == Architecture::Mixtral || raw.norm_topk_prob.unwrap_or(false),
                    dense_layers,
                    scoring: MoeScoring::Softmax,
                    n_group: 1,
                    topk_group: 1,
                    routed_scaling_factor: 1.0,
                    num_shared_experts: 0,
                })
            }
            Architecture::DeepseekV3 => {
                // transformers runs sigmoid scoring with the correction bias whatever these say;
                // DeepSeek's own code would not: anything else is refused, not guessed.
                if let Some(f) = raw.scoring_func.as_deref().filter(|f| *f != "sigmoid") {
                    return Err(Error::Unsupported { op: "ModelConfig", what: "DeepSeek-V3 scoring_func (sigmoid)", value: f.to_string() });
                }
                if let Some(m) = raw.topk_method.as_deref().filter(|m| *m != "noaux_tc") {
                    return Err(Error::Unsupported { op: "ModelConfig", what: "DeepSeek-V3 topk_method (noaux_tc)", value: m.to_string() });
                }
                let first_dense = raw.first_k_dense_replace.unwrap_or(3);
                Some(MoeConfig {
                    num_experts: raw.num_local_experts.unwrap_or(256),
                    top_k: raw.num_experts_per_tok.unwrap_or(8),
                    intermediate_size: raw.moe_intermediate_size.unwrap_or(2048),
                    renormalize: raw.norm_topk_prob.unwrap_or(true),
                    dense_layers: (0..first_dense.min(raw.num_hidden_layers)).collect(),
                    scoring: MoeScoring::Sigmoid,
                    n_group: raw.n_group.unwrap_or(8),
                    topk_group: raw.topk_group.unwrap_or(4),
                    routed_scaling_factor: raw.routed_scaling_factor.unwrap_or(2.5),
                    num_shared_experts: raw.n_shared_experts.unwrap_or(1),
                })
            }
            _ => None,
        };
        if let Some(m) = &moe {
            m.gate().validate(m.num_experts, m.top_k)?;
        }
        let mla = (architecture == Architecture::DeepseekV3).then(|| MlaConfig {
            q_lora_rank: raw.q_lora_rank.unwrap_or(Some(1536)),
            kv_lora_rank: raw.kv_lora_rank.unwrap_or(512),
            qk_nope_head_dim: raw.qk_nope_head_dim.unwrap_or(128),
            qk_rope_head_dim: raw.qk_rope_head_dim.unwrap_or(64),
            v_head_dim: raw.v_head_dim.unwrap_or(128),
            rope_interleave: raw.rope_interleave.unwrap_or(true),
        });
        if let Some(m) = &mla {
            if [m.kv_lora_rank, m.qk_rope_head_dim, m.v_head_dim].contains(&0) || m.q_lora_rank == Some(0) {
                return Err(bad(here, format!("zero-sized MLA dimension: {m:?}")));
            }
        }
        let fp8_weight_block = match &raw.quantization_config {
            Some(q) if q.get("quant_method").and_then(Value::as_str) == Some("fp8") => {
                let block = q.get("weight_block_size").and_then(Value::as_array).map(|b| b.iter().filter_map(Value::as_u64).collect::<Vec<_>>());
                match block.as_deref() {
                    Some(&[r, c]) if r > 0 && c > 0 => Some([r as usize, c as usize]),
                    _ => return Err(bad(here, "fp8 quantization_config without a two-element weight_block_size")),
                }
            }
            _ => None,
        };
        let bitnet_quant = match &raw.quantization_config {
            Some(q) if q.get("quant_method").and_then(Value::as_str) == Some("bitnet") => Some(bitnet_quant(q)?),
            _ => None,
        };
        let eos_token_ids = eos_token_ids(raw.eos_token_id.as_ref(), here)?;
        let head_dim = match &mla {
            Some(m) => m.qk_nope_head_dim + m.qk_rope_head_dim, // both at most 2^31 - 1
            None => raw.head_dim.unwrap_or(raw.hidden_size / heads),
        };
        for (what, n) in [("num_attention_heads", heads), ("num_key_value_heads", num_kv_heads)] {
            if head_dim == 0 || n.checked_mul(head_dim).is_none_or(|p| p > MAX_DIM) {
                return Err(bad(here, format!("head_dim {head_dim} with {what} {n} (head_dim > 0, heads · head_dim at most 2^31 - 1)")));
            }
        }
        let config = Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(4 * raw.hidden_size), // hidden_size <= 2^31
            num_layers: raw.num_hidden_layers,
            num_q_heads: heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta: theta,
            rope_scaling: scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Moe),
            attention_bias: raw.attention_bias.unwrap_or(false),
            hidden_act: raw.hidden_act.unwrap_or_else(|| "silu".into()),
            moe,
            mla,
            fp8_weight_block,
            sub_norms: architecture == Architecture::BitNet,
            bitnet_quant,
            eos_token_ids,
        };
        // The RoPE and the softmax scale, checked at load rather than at the first forward.
        config.rope(config.max_position_embeddings)?;
        config.softmax_scale()?;
        Ok(config)
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

#[cfg(test)]
mod tests;
