//! ModelConfig parsing: every architecture's switches, and the errors for what it refuses.

use super::*;
use crate::ops::rope::{RopeScaling, RopeStyle};

#[test]
fn reads_transformers_5_and_legacy_rope_fields() {
    let v5 = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
        "num_attention_heads":2,"num_key_value_heads":1,"rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,
        "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64.0}}"#;
    let c = ModelConfig::from_json(v5).unwrap();
    assert_eq!((c.rope_theta, c.head_dim, c.num_kv_heads), (500000.0, 4, 1));
    assert_eq!(c.rope_scaling.as_ref().unwrap()["rope_type"], "llama3");
    assert!(c.rope_scaling.as_ref().unwrap().get("rope_theta").is_none());
    // original_max_position_embeddings written as a float is read (it had fallen back to
    // max_position_embeddings).
    assert!(matches!(c.rope(16).unwrap().scaling, RopeScaling::Llama3 { original_max_positions: 64, .. }));
    // llama3 without its frequency factors is an error naming the missing key, at load.
    let e = ModelConfig::from_json(&v5.replace(r#""low_freq_factor":1.0,"#, "")).unwrap_err();
    assert!(e.to_string().contains("low_freq_factor"), "{e}");
    let legacy = r#"{"architectures":["Qwen3ForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
        "num_attention_heads":2,"rope_theta":1e6}"#;
    let c = ModelConfig::from_json(legacy).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling.clone(), c.qk_norm), (1e6, None, true));
    let default = r#"{"architectures":["MixtralForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,
        "num_attention_heads":2,"num_local_experts":4,"intermediate_size":16,"rope_parameters":{"rope_theta":1e6,"rope_type":"default"}}"#;
    let c = ModelConfig::from_json(default).unwrap();
    assert_eq!(c.rope_scaling, None);
    assert_eq!(
        c.moe.unwrap(),
        MoeConfig {
            num_experts: 4,
            top_k: 2,
            intermediate_size: 16,
            renormalize: true,
            dense_layers: vec![],
            scoring: MoeScoring::Softmax,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            num_shared_experts: 0,
        }
    );
}

/// Values no checkpoint has are refused at load with a typed error, before anything is sized
/// from them (a review of 2026-12-03 found each one loading: aborting on a huge allocation,
/// looping, panicking in a reference function, or running silently wrong).
#[test]
fn absurd_or_unsupported_values_are_refused_at_load() {
    // The base config with the fields of `extra` (",k":v,...) put in or replaced.
    let llama = |extra: &str| {
        let mut v: Value = serde_json::from_str(r#"{"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4}"#).unwrap();
        let add: Value = serde_json::from_str(&format!("{{{}}}", extra.trim_start_matches(','))).unwrap();
        v.as_object_mut().unwrap().extend(add.as_object().unwrap().clone());
        v.to_string()
    };
    assert!(ModelConfig::from_json(&llama("")).is_ok());
    for (extra, needle) in [
        (r#","num_hidden_layers":1099511627776"#, "num_hidden_layers"),
        (r#","vocab_size":16777216"#, "vocab_size"),
        (r#","intermediate_size":4294967296"#, "intermediate_size"),
        (r#","head_dim":0"#, "head_dim"),
        (r#","hidden_size":2"#, "head_dim"),
        (r#","head_dim":7"#, "rotary_dim"),
        (r#","num_attention_heads":65536,"head_dim":65536"#, "head_dim"),
        (r#","rope_theta":0.0"#, "theta"),
        (r#","rope_theta":-10000.0"#, "theta"),
        (r#","rms_norm_eps":-1.0"#, "rms_norm_eps"),
        (r#","rms_norm_eps":1e300"#, "rms_norm_eps"),
        (r#","rope_scaling":5"#, "an object"),
        (r#","rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64.5}"#, "original_max_position_embeddings"),
        (r#","mlp_bias":true"#, "mlp_bias"),
    ] {
        let e = ModelConfig::from_json(&llama(extra)).unwrap_err();
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
    // MoE and MLA layer counts: refused before the dense-layer lists are built.
    let moe = r#"{"architectures":["Qwen3MoeForCausalLM"],"vocab_size":16,"hidden_size":64,"num_hidden_layers":1099511627776,
        "num_attention_heads":4,"num_experts":8,"moe_intermediate_size":32,"decoder_sparse_step":2}"#;
    assert!(ModelConfig::from_json(moe).unwrap_err().to_string().contains("num_hidden_layers"));
    let ds = r#"{"architectures":["DeepseekV3ForCausalLM"],"vocab_size":16,"hidden_size":64,"num_hidden_layers":1099511627776,
        "num_attention_heads":4,"first_k_dense_replace":1099511627776}"#;
    assert!(ModelConfig::from_json(ds).unwrap_err().to_string().contains("num_hidden_layers"));
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
    let fp8 = j.replace(r#""quant_method":"bitnet""#, r#""quant_method":"fp8","weight_block_size":[128,128]"#);
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

#[test]
fn moe_keys_left_out_take_transformers_defaults() {
    let base = r#""vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"num_experts":16"#;
    let qwen = format!(r#"{{"architectures":["Qwen3MoeForCausalLM"],{base},"moe_intermediate_size":4}}"#);
    let m = ModelConfig::from_json(&qwen).unwrap().moe.unwrap();
    assert_eq!((m.top_k, m.renormalize), (8, false)); // Qwen3MoeConfig: num_experts_per_tok 8, norm_topk_prob false
    let mixtral = format!(r#"{{"architectures":["MixtralForCausalLM"],{}}}"#, base.replace("num_experts", "num_local_experts"));
    let m = ModelConfig::from_json(&mixtral).unwrap().moe.unwrap();
    assert_eq!((m.top_k, m.renormalize, m.intermediate_size), (2, true, 14_336)); // MixtralConfig
    let c = ModelConfig::from_json(&mixtral).unwrap();
    assert_eq!((c.rope_theta, c.rms_norm_eps), (1e6, 1e-5));
}

/// The DeepSeek-V3 fixture's config.json as transformers 5.17 writes it, plus the FP8 block
/// quantization_config of the Hub checkpoints.
const DEEPSEEK_V3: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"attention_bias":false,"first_k_dense_replace":1,
    "head_dim":8,"hidden_act":"silu","hidden_size":64,"intermediate_size":160,"kv_lora_rank":32,"max_position_embeddings":256,
    "moe_intermediate_size":32,"n_group":2,"n_routed_experts":8,"n_shared_experts":1,"norm_topk_prob":true,
    "num_attention_heads":6,"num_experts_per_tok":2,"num_hidden_layers":3,"num_key_value_heads":6,"q_lora_rank":48,
    "qk_head_dim":24,"qk_nope_head_dim":16,"qk_rope_head_dim":8,"rms_norm_eps":1e-06,"rope_interleave":true,
    "rope_parameters":{"beta_fast":32.0,"beta_slow":1.0,"factor":4.0,"mscale":1.0,"mscale_all_dim":0.5,
    "original_max_position_embeddings":64,"rope_theta":10000.0,"rope_type":"yarn"},"routed_scaling_factor":2.5,
    "tie_word_embeddings":false,"topk_group":1,"v_head_dim":12,"vocab_size":256,
    "quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]}}"#;

#[test]
fn deepseek_v3_reads_mla_grouped_routing_and_fp8_blocks() {
    let c = ModelConfig::from_json(DEEPSEEK_V3).unwrap();
    assert_eq!(c.architecture, Architecture::DeepseekV3);
    let mla = c.mla.clone().unwrap();
    assert_eq!(
        mla,
        MlaConfig { q_lora_rank: Some(48), kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 12, rope_interleave: true }
    );
    // head_dim is the q/k head (nope + rope), not HF's `head_dim` (the rotary part).
    assert_eq!((c.head_dim, c.num_q_heads, c.num_kv_heads), (24, 6, 6));
    let m = c.moe.clone().unwrap();
    assert_eq!((m.num_experts, m.top_k, m.intermediate_size, m.renormalize), (8, 2, 32, true));
    assert_eq!((m.scoring, m.n_group, m.topk_group, m.routed_scaling_factor, m.num_shared_experts), (MoeScoring::Sigmoid, 2, 1, 2.5, 1));
    assert_eq!(m.dense_layers, vec![0]);
    assert_eq!(m.gate(), MoeGateConfig::deepseek_v3(2, 1, 2.5));
    assert_eq!(c.fp8_weight_block, Some([128, 128]));
    // RoPE over the 8 rotary elements, interleaved, YaRN with DeepSeek's mscale pair.
    let rope = c.rope(12).unwrap();
    assert_eq!((rope.rotary_dim, rope.rotary_offset, rope.style), (8, 0, RopeStyle::GptJ));
    let RopeScaling::Yarn(y) = rope.scaling else { panic!("{rope:?}") };
    assert_eq!((y.factor, y.original_max_positions, y.mscale, y.mscale_all_dim), (4.0, 64, Some(1.0), Some(0.5)));
    // cos/sin carry mscale(4, 1) / mscale(4, 0.5); the softmax scale mscale(4, 0.5)².
    let mscale = |m: f64| 0.1 * m * 4f64.ln() + 1.0;
    assert!((rope.attention_factor() - mscale(1.0) / mscale(0.5)).abs() < 1e-15);
    let want = mscale(0.5) * mscale(0.5) / 24f64.sqrt();
    assert!((c.softmax_scale().unwrap() - want).abs() < 1e-15);
    // Without MLA the scale is plain, YaRN or not.
    let plain = ModelConfig { mla: None, ..c.clone() };
    assert_eq!(plain.softmax_scale().unwrap(), 1.0 / 24f64.sqrt());
}

#[test]
fn deepseek_v3_missing_keys_take_transformers_defaults_and_null_q_lora_rank_is_q_proj() {
    let j = r#"{"architectures":["DeepseekV3ForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":4,"num_attention_heads":2}"#;
    let c = ModelConfig::from_json(j).unwrap();
    let mla = c.mla.unwrap();
    assert_eq!((mla.q_lora_rank, mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim), (Some(1536), 512, 128, 64, 128));
    assert!(mla.rope_interleave);
    let m = c.moe.unwrap();
    assert_eq!((m.num_experts, m.top_k, m.n_group, m.topk_group, m.routed_scaling_factor), (256, 8, 8, 4, 2.5));
    assert_eq!(m.dense_layers, vec![0, 1, 2]);
    assert_eq!((c.fp8_weight_block, c.head_dim), (None, 192));
    let null = j.replace("\"num_attention_heads\":2", "\"num_attention_heads\":2,\"q_lora_rank\":null,\"first_k_dense_replace\":9");
    let c = ModelConfig::from_json(&null).unwrap();
    assert_eq!(c.mla.unwrap().q_lora_rank, None);
    assert_eq!(c.moe.unwrap().dense_layers, vec![0, 1, 2, 3]);
}

#[test]
fn deepseek_v3_other_scoring_bad_groups_and_bad_fp8_blocks_are_errors() {
    let with = |extra: &str| ModelConfig::from_json(&DEEPSEEK_V3.replace("\"vocab_size\":256", &format!("\"vocab_size\":256,{extra}")));
    assert!(with(r#""scoring_func":"sigmoid","topk_method":"noaux_tc""#).is_ok());
    for (extra, value) in [(r#""scoring_func":"softmax""#, "softmax"), (r#""topk_method":"greedy""#, "greedy")] {
        let e = with(extra).unwrap_err();
        assert!(matches!(e, Error::Unsupported { value: ref v, .. } if v == value), "{e}");
    }
    // 8 experts do not split into 3 groups.
    let e = ModelConfig::from_json(&DEEPSEEK_V3.replace("\"n_group\":2", "\"n_group\":3")).unwrap_err();
    assert!(e.to_string().contains("n_group"), "{e}");
    let e = ModelConfig::from_json(&DEEPSEEK_V3.replace("[128,128]", "[128]")).unwrap_err();
    assert!(e.to_string().contains("weight_block_size"), "{e}");
    // Other quantization methods are not this field's business.
    let other = DEEPSEEK_V3.replace("\"quant_method\":\"fp8\"", "\"quant_method\":\"bitnet\"");
    assert_eq!(ModelConfig::from_json(&other).unwrap().fp8_weight_block, None);
}

#[test]
fn eos_token_id_is_an_id_a_list_or_none() {
    let base = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2"#;
    let with = |extra: &str| ModelConfig::from_json(&format!("{base}{extra}}}"));
    assert_eq!(with("").unwrap().eos_token_ids, Vec::<u32>::new());
    assert_eq!(with(r#","eos_token_id":null"#).unwrap().eos_token_ids, Vec::<u32>::new());
    assert_eq!(with(r#","eos_token_id":2"#).unwrap().eos_token_ids, vec![2]);
    assert_eq!(with(r#","eos_token_id":[128001,128008,128009]"#).unwrap().eos_token_ids, vec![128001, 128008, 128009]);
    for bad in [r#","eos_token_id":-1"#, r#","eos_token_id":"</s>""#, r#","eos_token_id":[2,null]"#] {
        let e = with(bad).unwrap_err();
        assert!(e.to_string().contains("eos_token_id"), "{bad}: {e}");
    }
}

#[test]
fn sliding_window_attention_is_refused_not_ignored() {
    let base = r#""vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2"#;
    let parse = |arch: &str, extra: &str| ModelConfig::from_json(&format!(r#"{{"architectures":["{arch}"],{base},"num_experts":4,"moe_intermediate_size":4{extra}}}"#));
    // Off as released checkpoints have it: accepted.
    assert!(parse("MixtralForCausalLM", r#","sliding_window":null"#).is_ok());
    assert!(parse("Qwen3ForCausalLM", r#","sliding_window":4096,"use_sliding_window":false,"layer_types":["full_attention","full_attention"]"#).is_ok());
    // On: refused by name.
    for (arch, extra) in [
        ("MixtralForCausalLM", r#","sliding_window":4096"#),
        ("Qwen3ForCausalLM", r#","sliding_window":4096,"use_sliding_window":true"#),
        ("Qwen3MoeForCausalLM", r#","use_sliding_window":true"#),
        ("LlamaForCausalLM", r#","layer_types":["full_attention","sliding_attention"]"#),
    ] {
        let e = parse(arch, extra).unwrap_err();
        assert!(e.to_string().contains("sliding-window"), "{arch}: {e}");
    }
}
