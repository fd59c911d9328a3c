//! The model benchmark (`warpcore bench --model DIR`): [`GpuModel`]'s prefill and decode tokens
//! per second on a model folder, at the cases bench/model_torch.py times with transformers.
//!
//! - `prefill 1x2048`: one prompt of 2048 tokens (cache allocation, one varlen prefill, the
//!   last position's logits to the host); median of 5 after a warm-up.
//! - `decode b1`, `decode b32`: B prompts of 128 tokens prefilled, 3 warm-up steps, then 128
//!   timed decode steps, each ending with a greedy token per sequence on the host (chosen on
//!   the GPU, `decode_greedy`, as transformers' argmax on its logits tensor): B · 128 / time. Exactly that many: the benchmark drives `prefill` / `decode`
//!   itself, with no end-of-sequence stop.
//! - `decode b1 graph`, `decode b32 graph`: the same with every decode step replayed as a CUDA
//!   graph (`GpuModel::set_decode_graphs`); transformers' numbers are its eager ones.
//! - `decode b32 ctx2048`, `decode b32 ctx2048 kv-e4m3`: the same after prompts of 2048 tokens,
//!   where the KV cache's bytes are a large share of a step's (Llama-3.2-1B: 32 KB per token
//!   in bf16, 2.1 GB at 32 × 2048 against 2.5 GB of weights), with a bf16 and an FP8 cache
//!   (`GpuModel::set_fp8_kv_cache`: the checkpoint's scales, else 1). No transformers
//!   counterpart.
//!
//! Every timed region ends with a device-to-host copy (logits, or the greedy tokens), so
//! wall-clock time is CUDA-synchronised.

use crate::check::Rng;
use crate::model::GpuModel;
use crate::Result;
use std::time::Instant;

/// Tokens of the prefill case's prompt (also the long-context decode cases' prompts).
pub const PREFILL_LEN: usize = 2048;
/// Tokens of each prompt before the decode cases (`decode b1`, `decode b32`).
pub const PROMPT_LEN: usize = 128;
/// Timed decode steps per decode case (after the warm-up steps).
pub const DECODE_STEPS: usize = 128;
const WARMUP_STEPS: usize = 3;
const PREFILL_RUNS: usize = 5;

/// One measured case.
#[derive(Clone, Debug)]
pub struct ModelRecord {
    /// "prefill 1x2048", "decode b1", "decode b32" (bench/model_torch.py writes the same keys).
    pub case: String,
    /// Tokens processed in the timed region.
    pub tokens: usize,
    /// Wall-clock time of the timed region (prefill: the median run), in seconds.
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_s: f64,
}

fn random_prompt(rng: &mut Rng, len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

/// Prefill tokens per second on one prompt of `len` tokens.
pub fn bench_prefill(model: &GpuModel, len: usize) -> Result<ModelRecord> {
    let prompt = random_prompt(&mut Rng::new(1), len, model.config.vocab_size);
    let prompts = [prompt];
    model.prefill(&prompts, 0)?;
    let mut times = Vec::with_capacity(PREFILL_RUNS);
    for _ in 0..PREFILL_RUNS {
        let t0 = Instant::now();
        model.prefill(&prompts, 0)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    Ok(ModelRecord { case: format!("prefill 1x{len}"), tokens: len, seconds, tokens_per_s: len as f64 / seconds })
}

/// Decode tokens per second at batch `batch` after prompts of `prompt_len` (DECODE_STEPS
/// steps), on the model's KV cache dtype. Case "decode b{batch}" at PROMPT_LEN, else with
/// " ctx{prompt_len}"; " kv-e4m3" with an FP8 cache; " graph" with decode graphs on.
pub fn bench_decode(model: &GpuModel, batch: usize, prompt_len: usize) -> Result<ModelRecord> {
    let v = model.config.vocab_size;
    let mut rng = Rng::new(2);
    let prompts: Vec<Vec<u32>> = (0..batch).map(|_| random_prompt(&mut rng, prompt_len, v)).collect();
    let (mut state, mut next) = model.prefill_greedy(&prompts, WARMUP_STEPS + DECODE_STEPS)?;
    for _ in 0..WARMUP_STEPS {
        next = model.decode_greedy(&mut state, &next)?;
    }
    let t0 = Instant::now();
    for _ in 0..DECODE_STEPS {
        next = model.decode_greedy(&mut state, &next)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = batch * DECODE_STEPS;
    let ctx = if prompt_len == PROMPT_LEN { String::new() } else { format!(" ctx{prompt_len}") };
    let kv = if model.fp8_kv_cache().is_some() { " kv-e4m3" } else { "" };
    let graph = if model.decode_graphs() { " graph" } else { "" };
    Ok(ModelRecord { case: format!("decode b{batch}{ctx}{kv}{graph}"), tokens, seconds, tokens_per_s: tokens as f64 / seconds })
}

/// The cases: prefill of 2048 tokens, decode at batch 1 and 32 (launched op by op, then as
/// CUDA graphs), and decode at batch 32 after 2048-token prompts with a bf16 and an FP8 KV cache
/// (the model's cache is bf16 again after, its graphs off). A case after the first three that
/// fails (the graphs have not run on a GPU before; the 2048-token batch may not fit; the
/// checkpoint's FP8 scales may be refused) is reported in the second list, "case: error", and
/// the others still run and are kept.
pub fn bench_all(model: &mut GpuModel) -> Result<(Vec<ModelRecord>, Vec<String>)> {
    let mut out = vec![bench_prefill(model, PREFILL_LEN)?, bench_decode(model, 1, PROMPT_LEN)?, bench_decode(model, 32, PROMPT_LEN)?];
    let mut failed = Vec::new();
    for batch in [1, 32] {
        match model.set_decode_graphs(true).and_then(|()| bench_decode(model, batch, PROMPT_LEN)) {
            Ok(r) => out.push(r),
            Err(e) => failed.push(format!("decode b{batch} graph: {e}")),
        }
        model.set_decode_graphs(false)?;
    }
    match bench_decode(model, 32, PREFILL_LEN) {
        Ok(r) => out.push(r),
        Err(e) => failed.push(format!("decode b32 ctx{PREFILL_LEN}: {e}")),
    }
    // The checkpoint's scales if it has them, else 1 (the uncalibrated default).
    let scales = model.checkpoint_kv_scales().map_or_else(|| vec![crate::kv_cache::KvScales::ONE], <[_]>::to_vec);
    let fp8 = model.set_fp8_kv_cache(Some(&scales)).and_then(|()| bench_decode(model, 32, PREFILL_LEN));
    model.set_fp8_kv_cache(None)?;
    match fp8 {
        Ok(r) => out.push(r),
        Err(e) => failed.push(format!("decode b32 ctx{PREFILL_LEN} kv-e4m3: {e}")),
    }
    Ok((out, failed))
}

/// Decode tokens per second at batch 1 if a step did nothing but read every weight once at
/// `copy_gbps` (the roofline: weights bytes ÷ bandwidth per step).
pub fn decode_roofline_tokens_per_s(weight_bytes: usize, copy_gbps: f64) -> f64 {
    copy_gbps * 1e9 / weight_bytes as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roofline_of_the_1b_model() {
        // Llama-3.2-1B, tied embeddings: 1.236e9 parameters, 2.47 GB in bf16, at 4.06 TB/s.
        let t = decode_roofline_tokens_per_s(2_471_000_000, 4060.0);
        assert!((t - 1643.0).abs() < 1.0, "{t}");
    }
}
