//! The CPU model path against Hugging Face transformers (tests/fixtures, made by
//! scripts/make_fixtures): teacher-forced logits at every position within 1e-4 relative error,
//! and the same greedy continuation; generation stops right after an end-of-sequence token. No
//! GPU involved.

mod common;

use common::f32_bytes;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use warpcore::model::{CpuModel, ModelConfig, Sampler, Sampling, Weights};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected(name: &str) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    expected_in(&fixture(name))
}

/// A model folder's expected.json (input ids, greedy continuation) and expected.safetensors
/// (transformers' teacher-forced logits).
fn expected_in(dir: &Path) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids = |k: &str| meta[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let (logits, _) = Weights::open_files(&[dir.join("expected.safetensors")]).unwrap().get("logits").unwrap();
    (ids("input_ids"), ids("greedy"), logits)
}

fn check(name: &str) {
    check_dir(name, &fixture(name));
}

/// The CPU path on `dir` against `dir`'s expected.*: every position's logits within 1e-4
/// relative error, the same greedy continuation.
fn check_dir(name: &str, dir: &Path) {
    let model = CpuModel::load(dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (ids, greedy, want) = expected_in(dir);
    let got = model.forward(&ids).unwrap();
    let v = model.config.vocab_size;
    assert_eq!(got.len(), want.len(), "{name}: logits shape");
    let mut worst = 0f64;
    for (pos, (g, w)) in got.chunks(v).zip(want.chunks(v)).enumerate() {
        let err: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(err / norm <= 1e-4, "{name}: position {pos}: relative error {:.3e}", err / norm);
        worst = worst.max(err / norm);
    }
    println!("{name}: {} positions, worst relative error {worst:.3e}", ids.len());
    assert_eq!(model.generate_greedy(&ids, greedy.len()).unwrap(), greedy, "{name}: greedy continuation");
}

/// Any checkpoint against transformers, at its real size: `scripts/make_fixtures --expect DIR`
/// writes transformers' f32 outputs beside it, then `WARPCORE_PARITY_DIR=DIR cargo test --release
/// --test model parity_dir`. The tiny fixtures above keep every structural feature; this one
/// shows the CPU path holds at the widths, vocabularies and depths of real models (docs/model.md
/// records the model bench's Llama-3.2-1B-shaped checkpoint).
#[test]
fn the_checkpoint_in_warpcore_parity_dir_matches_transformers() {
    if let Some(dir) = common::parity_dir() {
        check_dir(&dir.display().to_string(), &dir);
    }
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

/// attention_bias: q, k, v and o_proj biases (transformers builds all four).
#[test]
fn llama_with_attention_bias_matches_transformers() {
    check("llama_bias");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn mixtral_matches_transformers() {
    check("mixtral");
}

#[test]
fn qwen3_moe_matches_transformers() {
    check("qwen3_moe");
}

#[test]
fn deepseek_v3_matches_transformers() {
    check("deepseek_v3");
}

#[test]
fn deepseek_v3_without_q_compression_or_interleave_matches_transformers() {
    check("deepseek_v3_q_proj");
}

#[test]
fn qwen3_moe_fp8_matches_transformers() {
    check("qwen3_moe_fp8");
}

#[test]
fn bitnet_matches_transformers() {
    check("bitnet");
}

/// The router margins against transformers' own router logits (f32, hooked on each layer's
/// `mlp.gate`, 2026-11-29): qwen3_moe's prompt at position 3 has its 2nd and 3rd experts
/// 5.41e-2 apart in layer 0 and 6.05e-2 in layer 1; position 0's smallest gap is 7.90e-1
/// (layer 1). Dense models have no router.
#[test]
fn router_margins_match_transformers_router_logits() {
    let (ids, _, _) = expected("qwen3_moe");
    let m = CpuModel::load(&fixture("qwen3_moe")).unwrap().router_margins(&ids).unwrap();
    assert_eq!(m.len(), ids.len());
    assert!((m[3] - 5.41e-2).abs() < 1e-3, "position 3: {}", m[3]);
    assert!((m[0] - 7.90e-1).abs() < 1e-3, "position 0: {}", m[0]);
    let (ids, _, _) = expected("llama");
    assert!(CpuModel::load(&fixture("llama")).unwrap().router_margins(&ids).unwrap().iter().all(|m| m.is_infinite()));
}

#[test]
fn generation_stops_right_after_an_eos_token_unless_there_is_none() {
    let model = CpuModel::load(&fixture("llama")).unwrap();
    let (ids, greedy, _) = expected("llama");
    let n = greedy.len();
    let generate = |eos: &[u32]| model.generate(&ids, n, &mut Sampler::new(Sampling::greedy()), eos).unwrap();
    // No EOS ids: all n tokens (transformers' continuation).
    assert_eq!(generate(&[]), greedy);
    // EOS = the token greedy decoding produces at step 2: the output ends with its first
    // occurrence, included.
    let eos = greedy[2];
    let stop = greedy.iter().position(|&t| t == eos).unwrap();
    assert!(stop + 1 < n, "the fixture's continuation must stop early for this test to mean anything");
    assert_eq!(generate(&[eos]), greedy[..=stop]);
    // Any id of a list counts; ids never produced change nothing.
    assert_eq!(generate(&[255, eos]), greedy[..=stop]);
    let never: Vec<u32> = (0..model.config.vocab_size as u32).filter(|t| !greedy.contains(t)).take(3).collect();
    assert_eq!(generate(&never), greedy);
    // The tokens reach the callback as they are chosen, the EOS token last.
    let mut seen = Vec::new();
    let out = model.generate_with(&ids, n, &mut Sampler::new(Sampling::greedy()), &[eos], |t| seen.push(t)).unwrap();
    assert_eq!(seen, out);
    // Sampling stops by the same rule: with every id but 0 as EOS, a seeded run ends at its
    // first non-zero token.
    let all_but_0: Vec<u32> = (1..model.config.vocab_size as u32).collect();
    let sampled = model.generate(&ids, n, &mut Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 5 }), &all_but_0).unwrap();
    let (last, before) = sampled.split_last().unwrap();
    assert!(*last != 0 && before.iter().all(|&t| t == 0) && sampled.len() < n, "{sampled:?}");
}

#[test]
fn eos_ids_come_from_config_json_unless_generation_config_json_decides() {
    assert_eq!(ModelConfig::from_dir(&fixture("llama")).unwrap().eos_token_ids, vec![2]);
    let dir = std::env::temp_dir().join(format!("warpcore-generation-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("llama").join("config.json"), dir.join("config.json")).unwrap();
    let eos_with = |generation_config: &str| {
        std::fs::write(dir.join("generation_config.json"), generation_config).unwrap();
        ModelConfig::from_dir(&dir).map(|c| c.eos_token_ids)
    };
    let list = eos_with(r#"{"bos_token_id": 1, "eos_token_id": [2, 7]}"#);
    let single = eos_with(r#"{"eos_token_id": 9}"#);
    // transformers takes generation_config.json whole: without eos_token_id there is none.
    let absent = eos_with(r#"{"bos_token_id": 1, "do_sample": false}"#);
    let broken = eos_with("{");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(list.unwrap(), vec![2, 7]);
    assert_eq!(single.unwrap(), vec![9]);
    assert_eq!(absent.unwrap(), Vec::<u32>::new());
    let e = broken.unwrap_err();
    assert!(e.to_string().contains("generation_config.json"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = std::env::temp_dir().join(format!("warpcore-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("llama").join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(fixture("qwen3").join("expected.safetensors"), dir.join("model.safetensors")).unwrap();
    let err = CpuModel::load(&dir).err().expect("loading must fail");
    std::fs::remove_dir_all(&dir).ok();
    assert!(err.to_string().starts_with("missing tensor `model.layers.0."), "{err}");
}

/// [`common::edited_copy`] of fixture `name`.
fn edited_copy(name: &str, tag: &str, edit: impl FnOnce(&mut common::Tensors)) -> PathBuf {
    common::edited_copy(&fixture(name), tag, edit)
}

#[test]
fn fused_experts_load_like_per_expert_ones() {
    // transformers 5 holds routed experts as [E, 2·inter, hidden] gate_up and [E, hidden, inter]
    // down tensors; a checkpoint in that layout gives the same model, bit for bit.
    let w = Weights::open(&fixture("deepseek_v3")).unwrap();
    let (experts, inter, hidden) = (8, 128, 128);
    let dir = edited_copy("deepseek_v3", "fused-experts", |t| {
        for layer in [1, 2] {
            common::fuse_experts(&w, t, &format!("model.layers.{layer}.mlp.experts."), ["gate_proj", "up_proj", "down_proj"], experts, inter, hidden);
        }
    });
    let fused = CpuModel::load(&dir);
    std::fs::remove_dir_all(&dir).ok();
    let (ids, _, _) = expected("deepseek_v3");
    let want = CpuModel::load(&fixture("deepseek_v3")).unwrap().forward(&ids).unwrap();
    assert_eq!(fused.unwrap().forward(&ids).unwrap(), want);
}

#[test]
fn an_fp8_weight_without_its_scale_is_an_error_naming_the_scale() {
    let scale = "model.layers.0.self_attn.q_a_proj.weight_scale_inv";
    let dir = edited_copy("deepseek_v3", "no-scale", |t| {
        t.remove(scale).unwrap();
    });
    let err = CpuModel::load(&dir).err().expect("loading must fail");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(err.to_string(), format!("missing tensor `{scale}`"));
}

#[test]
fn bitnet_quantization_it_does_not_run_is_refused() {
    // Online mode keeps float weights and ternarizes them per forward; bitlinear divides by
    // weight_scale: both would misread the packed fixture, so loading must refuse them.
    let src = fixture("bitnet");
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    for (from, to) in [("\"offline\"", "\"online\""), ("\"autobitlinear\"", "\"bitlinear\"")] {
        let dir = std::env::temp_dir().join(format!("warpcore-bitnet-{}-{}", std::process::id(), to.trim_matches('"')));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(config.contains(from));
        std::fs::write(dir.join("config.json"), config.replace(from, to)).unwrap();
        std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
        let err = CpuModel::load(&dir).err().expect("loading must fail");
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(err, warpcore::Error::Unsupported { .. }), "{to}: {err}");
    }
}

/// `with_fp8_inputs` rounds the input of every FP8 projection to e4m3 (1×128 groups), as FP8
/// inference does: on FP8 checkpoints the logits move from transformers' (dequantized weights,
/// f32 activations) by the e4m3 rounding of the activations (2.4 % per projection), which these
/// small random models amplify (measured 2026-11-30: 1.03e-1 on qwen3_moe_fp8, 3.13e-1 on
/// deepseek_v3, where router choices flip); elsewhere nothing changes.
#[test]
fn fp8_inputs_round_the_fp8_projections_inputs_only() {
    for (name, fp8) in [("qwen3_moe_fp8", true), ("deepseek_v3", true), ("qwen3", false), ("deepseek_v3_q_proj", false)] {
        let (ids, _, want) = expected(name);
        let got = CpuModel::load(&fixture(name)).unwrap().with_fp8_inputs().forward(&ids).unwrap();
        let err: f64 = got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        eprintln!("{name}: FP8 inputs move the logits by {:.3e} (relative Frobenius)", err / norm);
        if fp8 {
            assert!((3e-2..0.5).contains(&(err / norm)), "{name}: {:.3e}", err / norm);
        } else {
            assert!(err / norm <= 1e-4, "{name}: {:.3e}", err / norm);
        }
    }
}

/// An FP8 KV cache on the CPU path (`set_fp8_kv_cache`: K and V rounded to e4m3 as the cache
/// stores them) moves the logits by what e4m3's 3 mantissa bits cost, no more; `None` restores
/// the exact path; MLA's latent cache refuses two scales, and no model takes a scale that is
/// not finite and positive.
#[test]
fn an_fp8_kv_cache_rounds_keys_and_values() {
    use warpcore::kv_cache::KvScales;
    // (fixture, scales, the largest move allowed: DeepSeek-V3's sigmoid routers flip experts)
    let cases = [("llama", KvScales::new(1.0 / 64.0, 1.0 / 128.0), 0.1), ("qwen3", KvScales::ONE, 0.1), ("deepseek_v3_q_proj", KvScales::new(1.0 / 64.0, 1.0 / 64.0), 0.5)];
    for (name, scales, most) in cases {
        let (ids, _, want) = expected(name);
        let mut model = CpuModel::load(&fixture(name)).unwrap();
        model.set_fp8_kv_cache(Some(&[scales])).unwrap();
        let got = model.forward(&ids).unwrap();
        let err: f64 = got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        eprintln!("{name}: an FP8 KV cache (scales {scales:?}) moves the logits by {:.3e} (relative Frobenius)", err / norm);
        assert!((1e-2..most).contains(&(err / norm)), "{name}: {:.3e}", err / norm);
        model.set_fp8_kv_cache(None).unwrap();
        let exact = model.forward(&ids).unwrap();
        assert!(exact.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-3 * (1.0 + b.abs())), "{name}: None restores the exact path");
    }
    let mut mla = CpuModel::load(&fixture("deepseek_v3_q_proj")).unwrap();
    assert!(matches!(mla.set_fp8_kv_cache(Some(&[KvScales::new(0.5, 0.25)])), Err(warpcore::Error::Unsupported { .. })));
    let mut gqa = CpuModel::load(&fixture("llama")).unwrap();
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(gqa.set_fp8_kv_cache(Some(&[KvScales::new(bad, 1.0)])), Err(warpcore::Error::Unsupported { .. })), "{bad}");
    }
    assert!(gqa.fp8_kv_cache().is_none(), "a refused scale leaves the cache as it was");
}

/// A checkpoint's own FP8 KV cache scales (llm-compressor's scalars `self_attn.k_scale` /
/// `v_scale`, or the older `kv_scale` for both) are read per layer; a layer without them when
/// others have them is an error naming the tensor; the model uses each layer's own.
#[test]
fn checkpoint_kv_scales_are_read_per_layer() {
    use warpcore::kv_cache::KvScales;
    let scalar = |v: f32| (Dtype::F32, vec![], f32_bytes(&[v]));
    let dir = edited_copy("llama", "kv-scales", |t| {
        t.insert("model.layers.0.self_attn.k_scale".into(), scalar(0.02));
        t.insert("model.layers.0.self_attn.v_scale".into(), scalar(0.01));
        t.insert("model.layers.1.self_attn.kv_scale".into(), (Dtype::BF16, vec![1], half::bf16::from_f32(0.03125).to_le_bytes().to_vec()));
    });
    let model = CpuModel::load(&dir);
    let partial = edited_copy("llama", "kv-scales-partial", |t| {
        t.insert("model.layers.1.self_attn.k_scale".into(), scalar(0.02));
    });
    let missing = CpuModel::load(&partial).err().map(|e| e.to_string());
    let vector = edited_copy("llama", "kv-scales-vector", |t| {
        for l in 0..2 {
            t.insert(format!("model.layers.{l}.self_attn.k_scale"), (Dtype::F32, vec![2], f32_bytes(&[0.1, 0.2])));
            t.insert(format!("model.layers.{l}.self_attn.v_scale"), scalar(0.1));
        }
    });
    let non_scalar = CpuModel::load(&vector).err();
    for d in [&dir, &partial, &vector] {
        std::fs::remove_dir_all(d).ok();
    }
    let mut model = model.unwrap();
    let want = [KvScales::new(0.02, 0.01), KvScales::new(0.03125, 0.03125)];
    assert_eq!(model.checkpoint_kv_scales(), Some(&want[..]));
    assert_eq!(CpuModel::load(&fixture("llama")).unwrap().checkpoint_kv_scales(), None);
    // Layer 1 has k_scale only, layer 0 nothing: the first tensor missing is named.
    let missing = missing.expect("layers without their scales");
    assert!(missing.contains("model.layers.0.self_attn.k_scale"), "{missing}");
    assert!(matches!(non_scalar, Some(warpcore::Error::Unsupported { .. })), "{non_scalar:?}");
    // Each layer rounds with its own scales: the per-layer pair differs from either one alone.
    let (ids, _, _) = expected("llama");
    let mut run = |s: &[KvScales]| {
        model.set_fp8_kv_cache(Some(s)).unwrap();
        model.forward(&ids).unwrap()
    };
    let per_layer = run(&want);
    assert_ne!(per_layer, run(&want[..1]));
    assert_ne!(per_layer, run(&want[1..]));
    assert_eq!(per_layer, run(&want));
    // Neither one pair nor one per layer.
    assert!(matches!(model.set_fp8_kv_cache(Some(&[want[0]; 3])), Err(warpcore::Error::ShapeMismatch { .. })));
}
