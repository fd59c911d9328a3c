//! Generation on the GPU model (`generate`, `generate_each`, the greedy steps, sampling) on the
//! fixtures; a module of tests/model_gpu.rs (its helpers: `load`, `prompts`, `input_ids`).

use super::*;

/// The greedy steps (`prefill_greedy`, `decode_greedy`: the argmax on the GPU) return the
/// argmax of the logits the plain steps return, ties to the lower id (the Sampler's rule).
#[test]
fn greedy_steps_return_the_argmax_of_the_logits() {
    let Some((gpu, _)) = load("qwen3_moe_fp8") else { return };
    let v = gpu.config.vocab_size;
    let ps = prompts(&input_ids("qwen3_moe_fp8"));
    let argmax = |logits: &[f32]| logits.chunks_exact(v).map(warpcore::reference::elementwise::argmax).collect::<Vec<u32>>();
    let (mut a, logits) = gpu.prefill(&ps, 4).unwrap();
    let (mut b, mut tokens) = gpu.prefill_greedy(&ps, 4).unwrap();
    assert_eq!(tokens, argmax(&logits), "prefill");
    for step in 0..4 {
        let logits = gpu.decode(&mut a, &tokens).unwrap();
        let next = gpu.decode_greedy(&mut b, &tokens).unwrap();
        assert_eq!(next, argmax(&logits), "decode step {step}");
        tokens = next;
    }
}

/// A batch with an EOS id: each sequence's output is the same batch's fixed-length output cut
/// right after its first EOS token (the others keep going; a finished sequence still decodes
/// but records nothing), and the step callback sees `None` for finished sequences.
#[test]
fn each_sequence_of_a_batch_stops_at_its_eos_token() {
    let Some((gpu, _)) = load("llama") else { return };
    let ps = prompts(&input_ids("llama"));
    let n = 8;
    let full = gpu.generate(&ps, n, Sampling::greedy(), &[]).unwrap();
    assert!(full.iter().all(|o| o.len() == n));
    let eos = full[0][2];
    let mut seen = vec![Vec::new(); ps.len()];
    let got = gpu
        .generate_with(&ps, n, Sampling::greedy(), &[eos], |step| {
            for (s, t) in step.iter().enumerate() {
                seen[s].extend(*t);
            }
        })
        .unwrap();
    assert_eq!(seen, got, "the callback saw every recorded token and nothing else");
    for (s, (g, f)) in got.iter().zip(&full).enumerate() {
        let want = match f.iter().position(|&t| t == eos) {
            Some(i) => &f[..=i],
            None => &f[..],
        };
        assert_eq!(g, want, "sequence {s} (EOS {eos})");
    }
    assert!(got[0].len() < n);
}

/// `generate_each`: with every sequence's settings those `generate` derives (seed + s), the
/// same tokens; with each sequence its own (greedy ones among them), each sequence generates
/// what it generates in a batch whose rows all share its settings (rows are independent: same
/// batch shape, same kernels, each row's own logits and sampler).
#[test]
fn generate_each_gives_each_sequence_its_own_settings() {
    let Some((gpu, _)) = load("llama") else { return };
    let ps = prompts(&input_ids("llama"));
    let n = 4;
    let base = Sampling { temperature: 0.9, top_k: 0, top_p: 0.95, seed: 11 };
    let derived: Vec<Sampling> = (0..ps.len()).map(|s| Sampling { seed: base.seed + s as u64, ..base }).collect();
    assert_eq!(gpu.generate_each(&ps, n, &derived, &[]).unwrap(), gpu.generate(&ps, n, base, &[]).unwrap());
    let mixed = [Sampling::greedy(), Sampling { temperature: 0.7, top_k: 20, top_p: 1.0, seed: 3 }, Sampling { temperature: 1.3, top_k: 0, top_p: 0.8, seed: 4 }, Sampling::greedy()];
    let got = gpu.generate_each(&ps, n, &mixed, &[]).unwrap();
    for (s, m) in mixed.iter().enumerate() {
        let alike = gpu.generate_each(&ps, n, &vec![*m; ps.len()], &[]).unwrap();
        assert_eq!(got[s], alike[s], "sequence {s}, {m:?}");
    }
    assert!(matches!(gpu.generate_each(&ps, n, &mixed[..3], &[]), Err(warpcore::Error::ShapeMismatch { .. })));
}

/// A batch keeps the KV cache it started with: changing the model's setting afterwards changes
/// nothing for it (an FP8 batch decodes as before, a bf16 batch too), only for later batches.
#[test]
fn a_batch_keeps_the_kv_cache_it_started_with() {
    let Some((mut gpu, _)) = load("llama") else { return };
    let ps = prompts(&input_ids("llama"));
    let scales = kv_fp8_scales(&gpu.config);
    let tokens: Vec<u32> = ps.iter().map(|p| p[0]).collect();
    for start_fp8 in [true, false] {
        let setting = |fp8: bool| if fp8 { Some(&scales[..]) } else { None };
        gpu.set_fp8_kv_cache(setting(start_fp8)).unwrap();
        let (mut kept, first) = gpu.prefill(&ps, 2).unwrap();
        let want = gpu.decode(&mut kept, &tokens).unwrap();
        let (mut switched, again) = gpu.prefill(&ps, 2).unwrap();
        assert_eq!(first, again, "prefill is deterministic");
        gpu.set_fp8_kv_cache(setting(!start_fp8)).unwrap();
        assert_eq!(gpu.decode(&mut switched, &tokens).unwrap(), want, "started with FP8: {start_fp8}");
        // A batch started now takes the new setting: other logits.
        let (_, other) = gpu.prefill(&ps, 2).unwrap();
        assert_ne!(other, first, "a new batch takes the new cache (FP8: {})", !start_fp8);
    }
}

/// The GPU's draw (`sample_rows_each` in prefill_sampled / decode_sampled) is the host
/// Sampler's draw from the same logits, token for token, at several settings, and with each
/// sequence its own (greedy ones included).
#[test]
fn gpu_sampling_draws_what_the_host_sampler_draws() {
    let Some((gpu, _)) = load("llama") else { return };
    let ps = prompts(&input_ids("llama"));
    let v = gpu.config.vocab_size;
    // Every sequence the same settings, then (the last two) each its own — an engine's batch of
    // requests, greedy ones among them.
    let mixed = [(1.0f32, 0usize, 1.0f32), (0.0, 0, 1.0), (0.7, 20, 0.9), (1.5, 3, 0.5)];
    let settings: Vec<Vec<(f32, usize, f32)>> = [(1.0f32, 0usize, 1.0f32), (0.7, 0, 0.9), (1.5, 20, 0.8), (1.0, 3, 1.0)]
        .into_iter()
        .map(|c| vec![c; ps.len()])
        .chain([mixed.to_vec(), mixed.iter().rev().copied().collect()])
        .collect();
    for per_seq in settings {
        let sampling = per_seq.clone();
        let fresh = || per_seq.iter().enumerate().map(|(s, &(temperature, top_k, top_p))| Sampler::new(Sampling { temperature, top_k, top_p, seed: 40 + s as u64 })).collect::<Vec<_>>();
        let (mut on_gpu, mut on_host) = (fresh(), fresh());
        let (mut b_gpu, t_gpu) = gpu.prefill_sampled(&ps, 4, &mut on_gpu).unwrap();
        let (mut b_host, logits) = gpu.prefill(&ps, 4).unwrap();
        let t_host: Vec<u32> = on_host.iter_mut().enumerate().map(|(s, h)| h.sample(&logits[s * v..(s + 1) * v])).collect();
        assert_eq!(t_gpu, t_host, "prefill, {sampling:?}");
        let d_gpu = gpu.decode_sampled(&mut b_gpu, &t_gpu, &mut on_gpu).unwrap();
        let logits = gpu.decode(&mut b_host, &t_host).unwrap();
        let d_host: Vec<u32> = on_host.iter_mut().enumerate().map(|(s, h)| h.sample(&logits[s * v..(s + 1) * v])).collect();
        assert_eq!(d_gpu, d_host, "decode, {sampling:?}");
    }
}

/// Sampled generation (tokens drawn on the GPU): seeded (the same seed draws the same tokens),
/// and top_k = 1 is greedy.
#[test]
fn sampled_generation_is_seeded_and_top_k_1_is_greedy() {
    let Some((gpu, _)) = load("llama") else { return };
    let ps = prompts(&input_ids("llama"));
    let n = 6;
    let sampling = Sampling { temperature: 1.0, top_k: 0, top_p: 0.9, seed: 21 };
    let once = gpu.generate(&ps, n, sampling, &[]).unwrap();
    assert_eq!(gpu.generate(&ps, n, sampling, &[]).unwrap(), once);
    assert!(once.iter().all(|o| o.len() == n));
    let greedy = gpu.generate(&ps, n, Sampling::greedy(), &[]).unwrap();
    assert_eq!(gpu.generate(&ps, n, Sampling { top_k: 1, ..sampling }, &[]).unwrap(), greedy);
}
