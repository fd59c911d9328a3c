//! What the GPU path runs: [`check_supported`] refuses everything else from the config alone,
//! before anything is allocated.

use super::super::{Architecture, BitLinearClass, ModelConfig};
use super::OP;
use crate::ops::attention::{HEAD_DIMS, MLA_DECODE};
use crate::reference::mlp::GluActivation;
use crate::{Error, Result};

/// Everything the GPU path does not run, found from the config alone (before any allocation).
pub fn check_supported(c: &ModelConfig) -> Result<GluActivation> {
    if let Some(m) = &c.mla {
        // The MLA decode kernel's dims (DeepSeek-V2/V3's own).
        if (m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank) != MLA_DECODE {
            return Err(Error::Unsupported { op: OP, what: "MLA dims (kv_lora_rank 512, qk_rope_head_dim 64)", value: format!("{}, {}", m.kv_lora_rank, m.qk_rope_head_dim) });
        }
    }
    if let Some(q) = &c.bitnet_quant {
        if q.linear_class != BitLinearClass::AutoBitLinear || !q.offline || q.use_rms_norm || c.moe.is_some() {
            return Err(Error::Unsupported {
                op: OP,
                what: "BitNet quantization (offline autobitlinear without use_rms_norm, dense MLP)",
                value: format!("{q:?}, MoE {}", c.moe.is_some()),
            });
        }
    } else if c.architecture == Architecture::BitNet {
        return Err(Error::Unsupported { op: OP, what: "BitNet without its quantization_config", value: "none".into() });
    }
    if c.attention_bias {
        return Err(Error::Unsupported { op: OP, what: "attention_bias (q/k/v/o biases)", value: "true".into() });
    }
    c.check_fp8_block(OP)?;
    if c.mla.is_none() && !HEAD_DIMS.contains(&(c.head_dim, c.head_dim)) {
        return Err(Error::Unsupported { op: OP, what: "head_dim (the attention kernels take 64, 96, 128, 256)", value: c.head_dim.to_string() });
    }
    if c.num_kv_heads == 0 || !c.num_q_heads.is_multiple_of(c.num_kv_heads) {
        return Err(Error::Unsupported { op: OP, what: "GQA ratio", value: format!("{} / {}", c.num_q_heads, c.num_kv_heads) });
    }
    if let Some(m) = &c.moe {
        m.gate().validate(m.num_experts, m.top_k)?;
        // The experts run as grouped GEMMs (matmul_grouped / matmul_fp8_grouped): bf16 operands
        // need n and k multiples of 8 (every released MoE checkpoint's are).
        if !c.hidden_size.is_multiple_of(8) || !m.intermediate_size.is_multiple_of(8) {
            return Err(Error::Unsupported { op: OP, what: "MoE hidden and expert intermediate sizes (multiples of 8)", value: format!("{}, {}", c.hidden_size, m.intermediate_size) });
        }
    }
    c.rope(c.max_position_embeddings)?;
    GluActivation::from_hf(&c.hidden_act).ok_or_else(|| Error::Unsupported { op: OP, what: "hidden_act", value: c.hidden_act.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ModelConfig {
        let j = format!(
            r#"{{"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":128,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1{extra}}}"#
        );
        ModelConfig::from_json(&j).unwrap()
    }

    #[test]
    fn unsupported_configs_are_rejected_from_the_config_alone() {
        assert_eq!(check_supported(&config("")).unwrap(), GluActivation::Silu);
        let e = check_supported(&config(r#","attention_bias":true"#)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("attention_bias")), "{e}");
        let e = check_supported(&config(r#","head_dim":16"#)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("head_dim")), "{e}");
        let mut fp8 = config("");
        fp8.fp8_weight_block = Some([128, 128]);
        assert!(check_supported(&fp8).is_ok());
        fp8.fp8_weight_block = Some([64, 128]);
        assert!(matches!(check_supported(&fp8).unwrap_err(), Error::Unsupported { what, .. } if what.starts_with("FP8 weight_block_size")));
        let mut moe = config("");
        let experts = crate::model::MoeConfig {
            num_experts: 8,
            top_k: 2,
            intermediate_size: 64,
            renormalize: true,
            dense_layers: vec![],
            scoring: crate::ops::moe_routing::MoeScoring::Softmax,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            num_shared_experts: 0,
        };
        moe.moe = Some(experts.clone());
        assert!(check_supported(&moe).is_ok());
        moe.moe = Some(crate::model::MoeConfig { intermediate_size: 36, ..experts });
        assert!(matches!(check_supported(&moe).unwrap_err(), Error::Unsupported { what, .. } if what.starts_with("MoE hidden")));
        let e = check_supported(&config(r#","hidden_act":"gelu""#)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "hidden_act", .. }), "{e}");
        // (refused at load since 2026-12-03, the RoPE built from the config there)
        let j = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":128,"num_hidden_layers":1,
            "num_attention_heads":2,"rope_scaling":{"rope_type":"longrope","factor":2.0}}"#;
        let e = ModelConfig::from_json(j).unwrap_err();
        assert!(matches!(e, Error::Unsupported { what: "rope_type", .. }), "{e}");
        // DeepSeek-V3 runs at DeepSeek's MLA dims only (the MLA decode kernel's).
        let mut ds = config("");
        ds.architecture = Architecture::DeepseekV3;
        let mla = crate::model::MlaConfig { q_lora_rank: None, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, rope_interleave: true };
        ds.mla = Some(mla.clone());
        ds.head_dim = 192;
        assert!(check_supported(&ds).is_ok());
        ds.mla = Some(crate::model::MlaConfig { kv_lora_rank: 32, qk_rope_head_dim: 8, ..mla });
        assert!(matches!(check_supported(&ds).unwrap_err(), Error::Unsupported { what, .. } if what.starts_with("MLA dims")));
        // BitNet: only the offline AutoBitLinear format (BitNet b1.58 2B4T's), with a dense MLP.
        let mut bitnet = config("");
        bitnet.architecture = Architecture::BitNet;
        assert!(matches!(check_supported(&bitnet).unwrap_err(), Error::Unsupported { what, .. } if what.starts_with("BitNet without")));
        let offline = crate::model::BitNetQuant { linear_class: BitLinearClass::AutoBitLinear, offline: true, use_rms_norm: false };
        bitnet.bitnet_quant = Some(offline.clone());
        assert!(check_supported(&bitnet).is_ok());
        for q in [
            crate::model::BitNetQuant { linear_class: BitLinearClass::BitLinear, ..offline.clone() },
            crate::model::BitNetQuant { offline: false, ..offline.clone() },
            crate::model::BitNetQuant { use_rms_norm: true, ..offline },
        ] {
            bitnet.bitnet_quant = Some(q);
            assert!(matches!(check_supported(&bitnet).unwrap_err(), Error::Unsupported { what, .. } if what.starts_with("BitNet quantization")));
        }
    }
}
