//! The GPU model's multi-token steps (`GpuModel::extend`) and decode steps replayed as CUDA
//! graphs (`GpuModel::set_decode_graphs`), on the fixtures; a module of tests/model_gpu.rs (its
//! helpers: `load`, `prompts`, `input_ids`, `Errors`, `rel_frobenius`).

use super::{input_ids, load, prompts, rel_frobenius, Errors};
use warpcore::model::Sampling;

/// Chunked prefill and multi-token steps (`extend`): a batch started from each prompt's first
/// two tokens and extended by chunks of 3, 1, 0 and 7 tokens (a different size per sequence in
/// each step) gives, at every appended position, the logits the whole prompts' prefill gives
/// there — each chunk's queries attend causally, bottom-right aligned, to the whole cache; a
/// sequence without tokens in a step is an empty sequence of that step. Then out of pages is
/// an error that leaves the batch as it was, and wrong shapes are refused.
fn extend_matches_prefill(name: &'static str) {
    let Some((gpu, _)) = load(name) else { return };
    let v = gpu.config.vocab_size;
    let ps = prompts(&input_ids(name));
    let full = gpu.forward_logits(&ps).unwrap();
    let mut at: Vec<usize> = ps.iter().map(|p| p.len().min(2)).collect();
    let heads: Vec<Vec<u32>> = ps.iter().zip(&at).map(|(p, &n)| p[..n].to_vec()).collect();
    let rest = ps.iter().zip(&at).map(|(p, &n)| p.len() - n).max().unwrap();
    let (mut batch, _) = gpu.prefill(&heads, rest).unwrap();
    let mut errors = Errors::new(name, &gpu);
    let mut step = 0;
    while at.iter().zip(&ps).any(|(&a, p)| a < p.len()) {
        let chunks: Vec<Vec<u32>> = ps.iter().zip(&at).enumerate().map(|(s, (p, &a))| p[a..(a + [3, 1, 0, 7][(step + s) % 4]).min(p.len())].to_vec()).collect();
        let logits = gpu.extend(&mut batch, &chunks).unwrap();
        for (s, (c, &a)) in chunks.iter().zip(&at).enumerate() {
            assert_eq!(logits[s].len(), c.len() * v, "{name}: step {step}, sequence {s}: one row per token");
            if !c.is_empty() {
                errors.add(&format!("extend step {step}, sequence {s}, positions {a}..{}", a + c.len()), &logits[s], &full[s][a * v..(a + c.len()) * v], v);
            }
        }
        for (a, c) in at.iter_mut().zip(&chunks) {
            *a += c.len();
        }
        step += 1;
    }
    errors.check();
    for (s, p) in ps.iter().enumerate() {
        assert_eq!(batch.seq_len(s).unwrap(), p.len(), "{name}: sequence {s}'s length");
    }
    // The pages were for the prompts: one more token each does not fit, and changes nothing.
    let more: Vec<Vec<u32>> = ps.iter().map(|p| vec![p[0]; 17]).collect();
    assert!(matches!(gpu.extend(&mut batch, &more), Err(warpcore::Error::OutOfPages { .. })), "{name}: out of pages");
    assert!(matches!(gpu.extend(&mut batch, &more[1..]), Err(warpcore::Error::ShapeMismatch { .. })), "{name}: one entry per sequence");
    for (s, p) in ps.iter().enumerate() {
        assert_eq!(batch.seq_len(s).unwrap(), p.len(), "{name}: sequence {s} after the refused steps");
    }
}

mod extend {
    #[test]
    fn llama() {
        super::extend_matches_prefill("llama");
    }
    #[test]
    fn qwen3() {
        super::extend_matches_prefill("qwen3");
    }
    #[test]
    fn deepseek_v3() {
        super::extend_matches_prefill("deepseek_v3");
    }
}

/// Decode steps replayed as CUDA graphs (`set_decode_graphs`) give the logits and tokens the
/// same steps give launched op by op, step after step: the index arrays, cache pages and
/// sequence lengths a replay reads are the current step's, not the captured one's. One long
/// prompt grows past 512 keys while decoding (the attention plan's split count may change:
/// a new graph) and the pages fill up across several page boundaries. Architectures covering
/// every op the decode step uses: GQA (llama), q/k norm + MoE + FP8 projections
/// (qwen3_moe_fp8), MLA (deepseek_v3), ternary projections (bitnet).
fn decode_graphs_replay_the_eager_steps(name: &'static str) {
    if cfg!(feature = "debug-sync") {
        eprintln!("{name}: skipped (debug-sync runs every decode step eagerly: nothing is captured)");
        return;
    }
    let Some((eager, _)) = load(name) else { return };
    let (mut graphed, _) = load(name).unwrap();
    graphed.set_decode_graphs(true).unwrap();
    assert!(graphed.decode_graphs() && !eager.decode_graphs());
    let v = eager.config.vocab_size;
    let ids = input_ids(name);
    let long: Vec<u32> = (0..500).map(|i| ids[(i * 7 + i / 3) % ids.len()]).collect();
    let ps = vec![long, ids[..5].to_vec(), ids.clone()];
    let steps = 24;
    let (mut a, first) = eager.prefill(&ps, steps + 2).unwrap();
    let (mut b, again) = graphed.prefill(&ps, steps + 2).unwrap();
    assert_eq!(first, again, "{name}: prefill");
    let argmax = |logits: &[f32]| logits.chunks_exact(v).map(warpcore::reference::elementwise::argmax).collect::<Vec<u32>>();
    let mut tokens = argmax(&first);
    let mut worst = 0.0f64;
    for step in 0..steps {
        let want = eager.decode(&mut a, &tokens).unwrap();
        let got = graphed.decode(&mut b, &tokens).unwrap();
        // Replays run the eager launches on the same inputs: equal up to a GEMM algorithm cuBLAS
        // may pick differently on the capture's handle.
        let e = rel_frobenius(&got, &want);
        worst = worst.max(e);
        assert!(e <= 2e-3, "{name}: decode step {step}: graph vs eager logits {e:.3e}");
        tokens = argmax(&want);
    }
    let (captures, replays) = b.graph_counts();
    eprintln!("{name}: {steps} decode steps, {captures} graph(s) captured, {replays} replays, worst {worst:.2e}");
    assert_eq!(a.graph_counts(), (0, 0), "{name}: the eager model captured");
    // Each key's first step runs eagerly and its second is captured and replayed.
    assert!(captures >= 1 && replays >= steps - 2 * captures, "{name}: {captures} captures, {replays} replays in {steps} steps");
    // Graphs off (an eager step), then on again: the batch's graph — and the cuBLAS handle and
    // workspace it was recorded through, which the new setting replaced — still serves.
    for on in [false, true] {
        graphed.set_decode_graphs(on).unwrap();
        let want = eager.decode(&mut a, &tokens).unwrap();
        let e = rel_frobenius(&graphed.decode(&mut b, &tokens).unwrap(), &want);
        assert!(e <= 2e-3, "{name}: graphs {on}: {e:.3e}");
        tokens = argmax(&want);
    }
    assert_eq!(b.graph_counts(), (captures, replays + 1), "{name}: the step after turning graphs on again replays the held graph");
    // Generation with greedy tokens on the GPU (argmax after each replay) and with sampling.
    for sampling in [Sampling::greedy(), Sampling { temperature: 0.8, top_k: 20, top_p: 0.9, seed: 11 }] {
        let want = eager.generate(&ps[1..], 20, sampling, &[]).unwrap();
        assert_eq!(graphed.generate(&ps[1..], 20, sampling, &[]).unwrap(), want, "{name}: generate, {sampling:?}");
    }
}

mod decode_graphs {
    #[test]
    fn llama() {
        super::decode_graphs_replay_the_eager_steps("llama");
    }
    #[test]
    fn qwen3_moe_fp8() {
        super::decode_graphs_replay_the_eager_steps("qwen3_moe_fp8");
    }
    #[test]
    fn deepseek_v3() {
        super::decode_graphs_replay_the_eager_steps("deepseek_v3");
    }
    #[test]
    fn bitnet() {
        super::decode_graphs_replay_the_eager_steps("bitnet");
    }
}
