//! The CPU model path against Hugging Face transformers (tests/fixtures, made by
//! scripts/make_fixtures): teacher-forced logits at every position within 1e-4 relative error,
//! and the same greedy continuation. No GPU involved.

use std::path::PathBuf;
use warpcore::model::{CpuModel, Weights};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected(name: &str) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let dir = fixture(name);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids = |k: &str| meta[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let (logits, _) = Weights::open_files(&[dir.join("expected.safetensors")]).unwrap().get("logits").unwrap();
    (ids("input_ids"), ids("greedy"), logits)
}

fn check(name: &str) {
    let model = CpuModel::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (ids, greedy, want) = expected(name);
    let got = model.forward(&ids).unwrap();
    let v = model.config.vocab_size;
    assert_eq!(got.len(), want.len(), "{name}: logits shape");
    for (pos, (g, w)) in got.chunks(v).zip(want.chunks(v)).enumerate() {
        let err: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(err / norm <= 1e-4, "{name}: position {pos}: relative error {:.3e}", err / norm);
    }
    assert_eq!(model.generate_greedy(&ids, greedy.len()).unwrap(), greedy, "{name}: greedy continuation");
}

#[test]
fn llama_matches_transformers() {
    check("llama");
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
fn bitnet_matches_transformers() {
    check("bitnet");
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
