use super::*;

/// tests/fixtures, or WARPCORE_FIXTURES (where scripts/gpu-run puts the bundle's copy: this
/// binary also runs on the GPU machine, away from the source tree).
fn fixtures() -> std::path::PathBuf {
    std::env::var_os("WARPCORE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// A sequence run in pieces over a `Past` (the prompt, then one token at a time, as
/// generation does) gives the bits of the teacher-forced forward of the whole: every fixture
/// architecture, with and without an FP8 KV cache.
#[test]
fn pieces_over_a_past_give_the_whole_sequences_logits() {
    let fixtures = fixtures();
    for name in ["llama", "qwen3", "mixtral", "qwen3_moe", "qwen3_moe_fp8", "deepseek_v3", "deepseek_v3_q_proj", "bitnet"] {
        for fp8_cache in [false, true] {
            let mut model = CpuModel::load(&fixtures.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            if fp8_cache {
                model.set_fp8_kv_cache(Some(&[KvScales { k: 0.02, v: 0.02 }])).unwrap(); // MLA: one scale
            }
            let ids: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % model.config.vocab_size as u32).collect();
            let whole = model.forward(&ids).unwrap();
            let v = model.config.vocab_size;
            let mut past = Past::new(model.layers.len());
            let mut at = 0;
            for piece in [6, 1, 1, 3] {
                let got = model.run(&ids[at..at + piece], &mut past, None, false).unwrap();
                assert!(got == whole[at * v..(at + piece) * v], "{name} (FP8 cache {fp8_cache}): positions {at}..{}", at + piece);
                at += piece;
                if at < ids.len() {
                    // The next two positions, only the last one's logits (what generation asks for).
                    let mut fork = Past { len: past.len, layers: past.layers.clone() };
                    let end = (at + 2).min(ids.len());
                    let last = model.run(&ids[at..end], &mut fork, None, true).unwrap();
                    assert!(last == whole[(end - 1) * v..end * v], "{name} (FP8 cache {fp8_cache}): last-only logits at {}", end - 1);
                }
            }
            assert_eq!(at, ids.len());
        }
    }
}

/// A checkpoint's bf16 and f16 matrices, kept in 16 bits (`Matrix`), give the bits of the
/// same values stored as f32.
#[test]
fn sixteen_bit_matrices_give_the_bits_of_their_values_in_f32() {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let fixtures = fixtures();
    let bf16 = |x: f32| half::bf16::from_f32(x).to_bits();
    let f16 = |x: f32| half::f16::from_f32(x).to_bits();
    let back = |dtype: Dtype, u: u16| if dtype == Dtype::BF16 { half::bf16::from_bits(u).to_f32() } else { half::f16::from_bits(u).to_f32() };
    for name in ["llama", "mixtral", "qwen3_moe"] {
        let src = fixtures.join(name);
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (dtype, round) in [(Dtype::BF16, &bf16 as &dyn Fn(f32) -> u16), (Dtype::F16, &f16)] {
            let dir = std::env::temp_dir().join(format!("warpcore-16bit-{name}-{dtype:?}-{}", std::process::id()));
            let mut logits = Vec::new();
            for sixteen in [true, false] {
                let d = dir.join(if sixteen { "16" } else { "32" });
                std::fs::create_dir_all(&d).unwrap();
                std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
                let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
                    .tensors()
                    .into_iter()
                    .map(|(n, t)| {
                        assert_eq!(t.dtype(), Dtype::F32, "{name}: {n}");
                        let codes: Vec<u16> = t.data().chunks_exact(4).map(|b| round(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect();
                        let data: Vec<u8> = if sixteen {
                            codes.iter().flat_map(|u| u.to_le_bytes()).collect()
                        } else {
                            codes.iter().flat_map(|&u| back(dtype, u).to_le_bytes()).collect()
                        };
                        (n, if sixteen { dtype } else { Dtype::F32 }, t.shape().to_vec(), data)
                    })
                    .collect();
                let views = tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
                safetensors::serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
                let model = CpuModel::load(&d).unwrap();
                assert_eq!(matches!(model.embed, Matrix::F32(_)), !sixteen, "{name} {dtype:?}: the embedding's storage");
                logits.push(model.forward(&[1, 7, 3, 200, 5, 9]).unwrap());
            }
            std::fs::remove_dir_all(&dir).unwrap();
            assert!(logits[0] == logits[1], "{name} {dtype:?}: 16-bit storage changed the logits");
        }
    }
}

/// attention_bias: the q, k, v and o_proj biases are all read (transformers builds each with
/// bias=attention_bias; o_proj's had been left out: a checkpoint's o_proj.bias changed nothing).
/// Zero biases give the bits of the model without them; an o_proj bias alone moves the logits;
/// a missing one is an error naming it.
#[test]
fn attention_biases_include_o_proj() {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let src = fixtures().join("llama");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let base = CpuModel::load(&src).unwrap();
    let c = base.config.clone();
    let ids = [1u32, 7, 3, 200 % c.vocab_size as u32, 5];
    let want = base.forward(&ids).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["attention_bias"] = serde_json::Value::Bool(true);
    let (qd, kvd) = (c.num_q_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let dir = std::env::temp_dir().join(format!("warpcore-attn-bias-{}", std::process::id()));
    // o_bias: layer 0's o_proj bias value (None: the tensor left out).
    let load = |o_bias: Option<f32>| {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
        for l in 0..c.num_layers {
            let o = if l == 0 { o_bias } else { Some(0.0) };
            for (name, len, value) in [("q_proj", qd, Some(0.0)), ("k_proj", kvd, Some(0.0)), ("v_proj", kvd, Some(0.0)), ("o_proj", c.hidden_size, o)] {
                if let Some(x) = value {
                    tensors.push((format!("model.layers.{l}.self_attn.{name}.bias"), vec![len], x.to_le_bytes().repeat(len)));
                }
            }
        }
        let views = tensors.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()));
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        let model = CpuModel::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        model
    };
    assert!(load(Some(0.0)).unwrap().forward(&ids).unwrap() == want, "zero biases changed the logits");
    let moved = load(Some(0.5)).unwrap().forward(&ids).unwrap();
    assert!(moved.iter().zip(&want).any(|(a, b)| a != b), "o_proj.bias was not applied");
    let e = load(None).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("o_proj.bias"), "{e}");
}
