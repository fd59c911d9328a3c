//! Batches on the paged KV cache (bf16, or FP8 with per-layer scales): [`Batch`], started by a
//! varlen prefill over all prompts, extended one token per sequence by decode steps;
//! generation with per-sequence samplers (tokens chosen on the GPU) and the end-of-sequence
//! rule; teacher-forced logits. Each step is a `Step` that `GpuModel::run`
//! (mod.rs) executes through the layer stack.

use super::graph::DecodeGraphs;
use super::{alloc, rows, vector, vector_mut, Buffers, GpuModel, Step, PAGE_SIZE};
use crate::kv_cache::{KvScales, PageAllocator, SeqId};
use crate::model::{is_finished, Sampler, Sampling};
use crate::ops::elementwise::{argmax_rows, sample_rows_each, RowSampleConfig};
use crate::{Error, Result, TensorView, F8E4M3};
use cudarc::driver::CudaSlice;
use half::bf16;

/// A batch of sequences in the paged KV cache: started by [`GpuModel::prefill`], extended by
/// [`GpuModel::decode`].
pub struct Batch {
    pub(super) pages: PageAllocator,
    pub(super) seqs: Vec<SeqId>,
    /// Per layer, its pages.
    pub(super) cache: Vec<LayerCache>,
    pub(super) bufs: Buffers,
    /// The current step's index arrays (`GpuModel::stage`).
    pub(super) index: CudaSlice<i32>,
    /// Bumped whenever `index` or the attention workspace is reallocated.
    pub(super) generation: u64,
    /// Decode steps' block-table stride: the most pages any sequence was given room for
    /// (prompt + max_new_tokens), so the table keeps its shape from step to step.
    pub(super) table_stride: usize,
    /// Decode steps as CUDA graphs (graph.rs), when the model has them on.
    pub(super) graphs: DecodeGraphs,
}

/// One layer's KV cache: K and V pages `[num_pages, PAGE_SIZE, num_kv_heads, head_dim]`; MLA:
/// the latent pages `[num_pages, PAGE_SIZE, 1, 576]` and no V. bf16, or e4m3 with the layer's
/// scales ([`GpuModel::set_fp8_kv_cache`] when the batch started: the batch keeps them).
pub(super) enum LayerCache {
    Bf16(CudaSlice<bf16>, Option<CudaSlice<bf16>>),
    Fp8(CudaSlice<F8E4M3>, Option<CudaSlice<F8E4M3>>, KvScales),
}

impl LayerCache {
    /// `len` elements of K (and of V unless `latent`): bf16, or e4m3 with `fp8` scales.
    fn new(dev: &crate::Device, len: usize, latent: bool, fp8: Option<KvScales>) -> Result<Self> {
        Ok(match fp8 {
            Some(scales) => Self::Fp8(alloc(dev, len)?, if latent { None } else { Some(alloc(dev, len)?) }, scales),
            None => Self::Bf16(alloc(dev, len)?, if latent { None } else { Some(alloc(dev, len)?) }),
        })
    }
}

impl Batch {
    /// Whether the batch's cache is FP8 (its attention is planned with `AttentionPlan::with_kv`).
    pub(super) fn fp8_cache(&self) -> bool {
        matches!(self.cache.first(), Some(LayerCache::Fp8(..)))
    }

    /// Sequences in the batch.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }
    /// Tokens of sequence `s` in the cache.
    pub fn seq_len(&self, s: usize) -> Result<usize> {
        let seq = self.seqs.get(s).ok_or_else(|| Error::Unsupported { op: "Batch::seq_len", what: "sequence index", value: format!("{s} (the batch has {})", self.seqs.len()) })?;
        self.pages.seq_len(*seq)
    }

    /// Runs one step `f` on the batch; when it fails, the sequences' lengths and pages are as
    /// before it (rows it may have written to the cache lie past them: the next step
    /// overwrites them), so the caller can retry, e.g. with decode graphs off.
    fn or_unchanged<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let pages = self.pages.clone();
        let result = f(self);
        if result.is_err() {
            self.pages = pages;
        }
        result
    }
}

impl GpuModel {
    /// `Some(scales)`: batches started from now on keep their paged KV cache in FP8 e4m3 with
    /// per-tensor scales (stored = e4m3(x / scale), saturating; attention reads stored ·
    /// scale): half the cache's bytes, so twice the tokens in the same memory and half the
    /// bytes a decode step reads from it. `scales`: one pair for every layer, or one per layer —
    /// a checkpoint's own ([`GpuModel::checkpoint_kv_scales`]); the usual uncalibrated choice
    /// is `[KvScales::ONE]` (e4m3 spans ±448). DeepSeek-V3's latent cache holds K and V in one
    /// row and takes one scale (k = v). `None`: bf16 (the default).
    /// [`crate::model::CpuModel::set_fp8_kv_cache`] rounds K and V the same way.
    pub fn set_fp8_kv_cache(&mut self, scales: Option<&[KvScales]>) -> Result<()> {
        self.kv_fp8 = scales.map(|s| self.config.fp8_kv_scales_per_layer("GpuModel::set_fp8_kv_cache", s)).transpose()?;
        Ok(())
    }

    /// The FP8 KV cache's scales per layer, if the cache is FP8.
    pub fn fp8_kv_cache(&self) -> Option<&[KvScales]> {
        self.kv_fp8.as_deref()
    }

    /// The FP8 KV cache scales the checkpoint carries per layer (`self_attn.k_scale` /
    /// `v_scale`, or `kv_scale`), if any: what [`GpuModel::set_fp8_kv_cache`] should be given
    /// for it.
    pub fn checkpoint_kv_scales(&self) -> Option<&[KvScales]> {
        self.checkpoint_kv_scales.as_deref()
    }

    /// The logits of the last step's `r` logit rows, `[r, vocab_size]`, on the host.
    fn logits_to_host(&self, bufs: &Buffers, r: usize) -> Result<Vec<f32>> {
        self.dev.download(&bufs.logits.slice(..r * self.config.vocab_size))
    }

    /// The token chosen from each of the last step's `r` logit rows, on the GPU (the host gets
    /// r ids, not r · vocab_size logits): greedy (`samplers` None, or all greedy:
    /// `argmax_rows`), or row i by `sample_rows_each` with `samplers[i]`'s settings and next
    /// uniform number — the choice `Sampler::sample` makes from the same logits; a greedy
    /// sampler's row is its argmax and draws no number, as on the host.
    fn tokens_to_host(&self, bufs: &mut Buffers, r: usize, samplers: Option<&mut [Sampler]>) -> Result<Vec<u32>> {
        let v = self.config.vocab_size;
        let logits = rows(&bufs.logits, r, v)?;
        match samplers {
            Some(s) if !s.iter().all(Sampler::is_greedy) => {
                assert_eq!(s.len(), r, "one sampler per logit row");
                // [uniforms | temperatures | top_p], then top_k: two uploads.
                let mut f = vec![0.0f32; 3 * r];
                let mut k = vec![0i32; r];
                for (i, s) in s.iter_mut().enumerate() {
                    let c = s.settings();
                    f[i] = if s.is_greedy() { 0.0 } else { s.uniform() };
                    (f[r + i], f[2 * r + i], k[i]) = (c.temperature, c.top_p, c.top_k.min(i32::MAX as usize) as i32);
                }
                let stream = self.dev.stream();
                stream.memcpy_htod(&f, &mut bufs.sample_f32.slice_mut(..3 * r))?;
                stream.memcpy_htod(&k, &mut bufs.sample_k.slice_mut(..r))?;
                let span = |i: usize| TensorView::contiguous(bufs.sample_f32.slice(i * r..(i + 1) * r), [r]);
                let (u, t, p) = (span(0)?, span(1)?, span(2)?);
                let cfg = RowSampleConfig { temperature: &t, top_k: &vector(&bufs.sample_k, r)?, top_p: &p };
                sample_rows_each(&self.dev, &logits, &u, cfg, &mut vector_mut(&mut bufs.tokens, r)?)?;
            }
            _ => argmax_rows(&self.dev, &logits, &mut vector_mut(&mut bufs.tokens, r)?)?,
        }
        Ok(self.dev.download(&bufs.tokens.slice(..r))?.into_iter().map(|t| t as u32).collect())
    }

    fn check_ids(&self, op: &'static str, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            Some(id) => Err(Error::Unsupported { op, what: "token id (>= vocab_size)", value: id.to_string() }),
            None => Ok(()),
        }
    }

    /// Starts a batch: allocates the paged cache for each prompt plus `max_new_tokens`, runs one
    /// varlen prefill over all prompts and returns the batch and the logits of each prompt's
    /// last position, `[num_seqs, vocab_size]` f32.
    pub fn prefill(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<(Batch, Vec<f32>)> {
        let batch = self.start(prompts, max_new_tokens, false)?;
        let logits = self.logits_to_host(&batch.bufs, prompts.len())?;
        Ok((batch, logits))
    }

    /// [`GpuModel::prefill`] returning each prompt's greedy next token instead of its logits
    /// (the argmax runs on the GPU; ties to the lower id, as [`Sampler`]'s greedy choice).
    pub fn prefill_greedy(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<(Batch, Vec<u32>)> {
        let mut batch = self.start(prompts, max_new_tokens, false)?;
        let tokens = self.tokens_to_host(&mut batch.bufs, prompts.len(), None)?;
        Ok((batch, tokens))
    }

    /// [`GpuModel::prefill`] returning each prompt's next token drawn by `samplers[s]` (one per
    /// prompt, each with its own settings), on the GPU (`sample_rows_each`): the token
    /// [`Sampler::sample`] would draw from the same logits, without their copy to the host.
    pub fn prefill_sampled(&self, prompts: &[Vec<u32>], max_new_tokens: usize, samplers: &mut [Sampler]) -> Result<(Batch, Vec<u32>)> {
        check_samplers("GpuModel::prefill_sampled", samplers, prompts.len())?;
        let mut batch = self.start(prompts, max_new_tokens, false)?;
        let tokens = self.tokens_to_host(&mut batch.bufs, prompts.len(), Some(samplers))?;
        Ok((batch, tokens))
    }

    /// Teacher-forced logits of every position of every prompt (`[len, vocab_size]` each), from
    /// one varlen prefill over the paged cache.
    pub fn forward_logits(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let batch = self.start(prompts, 0, true)?;
        let total = prompts.iter().map(Vec::len).sum();
        let logits = self.logits_to_host(&batch.bufs, total)?;
        Ok(split_rows(&logits, prompts.iter().map(Vec::len), self.config.vocab_size))
    }

    /// Allocates the batch and runs the prefill; the logits of every position (`all_rows`) or of
    /// each prompt's last stay on the device.
    fn start(&self, prompts: &[Vec<u32>], max_new_tokens: usize, all_rows: bool) -> Result<Batch> {
        const OP: &str = "GpuModel::prefill";
        if prompts.is_empty() {
            return Err(Error::Empty { op: OP, arg: "prompts", shape: "[0]".into() });
        }
        if let Some(s) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::Empty { op: OP, arg: "prompt", shape: format!("sequence {s}: [0]") });
        }
        for p in prompts {
            self.check_ids(OP, p)?;
        }
        let c = &self.config;
        let total: usize = prompts.iter().map(Vec::len).sum();
        let too_long = || Error::Unsupported { op: OP, what: "prompt length + max_new_tokens", value: format!("max_new_tokens {max_new_tokens}") };
        let num_pages = prompts.iter().try_fold(0usize, |n, p| p.len().checked_add(max_new_tokens).and_then(|l| n.checked_add(l.div_ceil(PAGE_SIZE)))).ok_or_else(too_long)?;
        // The whole cache against the GPU's memory before anything is sized from it (a huge
        // max_new_tokens had built a host free list of 2^31 pages first).
        let row = match c.mla {
            Some(_) => super::mla::ROW,
            None => 2 * c.num_kv_heads * c.head_dim, // K and V
        };
        let elem = if self.kv_fp8.is_some() { 1 } else { 2 };
        let bytes = [PAGE_SIZE, row, c.num_layers, elem].iter().try_fold(num_pages, |b, &f| b.checked_mul(f));
        if bytes.is_none_or(|b| b > self.dev.info().total_memory) {
            return Err(Error::Unsupported {
                op: OP,
                what: "prompt lengths + max_new_tokens (their KV cache exceeds the GPU's memory)",
                value: format!("{num_pages} pages of {PAGE_SIZE} tokens, max_new_tokens {max_new_tokens}"),
            });
        }
        let mut pages = PageAllocator::new(num_pages, PAGE_SIZE)?;
        let seqs: Vec<SeqId> = prompts.iter().map(|_| pages.add_sequence()).collect();
        let cache = (0..c.num_layers)
            .map(|l| {
                let fp8 = self.kv_fp8.as_ref().map(|s| s[l]);
                match c.mla {
                    Some(_) => LayerCache::new(&self.dev, num_pages * PAGE_SIZE * super::mla::ROW, true, fp8),
                    None => LayerCache::new(&self.dev, num_pages * PAGE_SIZE * c.num_kv_heads * c.head_dim, false, fp8),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let logit_rows = if all_rows { total } else { prompts.len() };
        let bufs = self.buffers(total.max(prompts.len()), logit_rows.max(prompts.len()))?;
        let table_stride = prompts.iter().map(|p| (p.len() + max_new_tokens).div_ceil(PAGE_SIZE)).max().unwrap_or(1);
        let mut batch = Batch { pages, seqs, cache, bufs, index: alloc(&self.dev, 1)?, generation: 0, table_stride, graphs: DecodeGraphs::default() };
        let (mut ids, mut positions, mut slots, mut logit_rows) = (Vec::with_capacity(total), Vec::with_capacity(total), Vec::with_capacity(total), Vec::new());
        for (p, &seq) in prompts.iter().zip(&batch.seqs) {
            let first = ids.len() as i32;
            ids.extend(p.iter().map(|&t| t as i32));
            positions.extend(0..p.len() as i32);
            slots.extend(batch.pages.append(seq, p.len())?);
            if all_rows {
                logit_rows.extend(first..first + p.len() as i32);
            } else {
                logit_rows.push(first + p.len() as i32 - 1);
            }
        }
        let table = batch.pages.block_table(&batch.seqs)?;
        let step = Step { ids, positions, slots, q_lens: prompts.iter().map(Vec::len).collect(), table, logit_rows };
        self.run(&mut batch, &step)?;
        Ok(batch)
    }

    /// One decode step: `tokens[s]` is appended to sequence s (at position `seq_len(s)`);
    /// returns the logits of the new positions, `[num_seqs, vocab_size]` f32.
    pub fn decode(&self, batch: &mut Batch, tokens: &[u32]) -> Result<Vec<f32>> {
        self.decode_step(batch, tokens, |batch| self.logits_to_host(&batch.bufs, tokens.len()))
    }

    /// [`GpuModel::decode`] returning each sequence's greedy next token instead of its logits
    /// (the argmax on the GPU: the host copies one id per sequence, not vocab_size logits).
    pub fn decode_greedy(&self, batch: &mut Batch, tokens: &[u32]) -> Result<Vec<u32>> {
        self.decode_step(batch, tokens, |batch| self.tokens_to_host(&mut batch.bufs, tokens.len(), None))
    }

    /// [`GpuModel::decode`] returning each sequence's next token drawn by `samplers[s]` on the
    /// GPU ([`GpuModel::prefill_sampled`]).
    pub fn decode_sampled(&self, batch: &mut Batch, tokens: &[u32], samplers: &mut [Sampler]) -> Result<Vec<u32>> {
        check_samplers("GpuModel::decode_sampled", samplers, tokens.len())?;
        self.decode_step(batch, tokens, |batch| self.tokens_to_host(&mut batch.bufs, tokens.len(), Some(samplers)))
    }

    /// A decode step, then `read` (its results to the host); either failed, the batch unchanged
    /// ([`Batch::or_unchanged`]).
    fn decode_step<T>(&self, batch: &mut Batch, tokens: &[u32], read: impl FnOnce(&mut Batch) -> Result<T>) -> Result<T> {
        let one: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        batch.or_unchanged(|batch| {
            let step = self.append_step("GpuModel::decode", batch, &one)?;
            match &self.capture {
                Some(capture) => self.run_decode_graph(capture, batch, &step)?,
                None => self.run(batch, &step)?,
            }
            read(batch)
        })
    }

    /// Appends `tokens[s]` (any number, none included) to sequence s in one varlen step —
    /// chunked prefill, or the verification step of speculative decoding — and returns the
    /// logits of every appended position, `[tokens[s].len(), vocab_size]` per sequence. The
    /// attention is causal and bottom-right aligned over each sequence's whole cache. Out of
    /// pages (the batch has room for each prompt plus its `max_new_tokens`): `Error::OutOfPages`;
    /// on that or any other error, the batch unchanged.
    pub fn extend(&self, batch: &mut Batch, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let parts: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
        batch.or_unchanged(|batch| {
            let step = self.append_step("GpuModel::extend", batch, &parts)?;
            let t = step.ids.len();
            if t == 0 {
                return Ok(vec![Vec::new(); tokens.len()]);
            }
            if t > batch.bufs.max_tokens || t > batch.bufs.max_logit_rows {
                batch.bufs = self.buffers(t.max(batch.bufs.max_tokens), t.max(batch.bufs.max_logit_rows))?;
                batch.generation += 1;
            }
            self.run(batch, &step)?;
            let logits = self.logits_to_host(&batch.bufs, t)?;
            Ok(split_rows(&logits, tokens.iter().map(Vec::len), self.config.vocab_size))
        })
    }

    /// The step that appends `tokens[s]` to sequence s (positions from its current length, every
    /// new row's logits): ids checked, and the pages of every sequence allocated only once all
    /// are known to fit (out of pages: the batch unchanged).
    fn append_step(&self, op: &'static str, batch: &mut Batch, tokens: &[&[u32]]) -> Result<Step> {
        if tokens.len() != batch.seqs.len() {
            return Err(Error::ShapeMismatch { op, arg: "tokens", expected: format!("[{}] (one entry per sequence)", batch.seqs.len()), got: format!("[{}]", tokens.len()) });
        }
        let lens: Vec<usize> = batch.seqs.iter().map(|&s| batch.pages.seq_len(s)).collect::<Result<_>>()?;
        for t in tokens {
            self.check_ids(op, t)?;
        }
        let needed: usize = lens.iter().zip(tokens).map(|(&l, t)| (l + t.len()).div_ceil(PAGE_SIZE) - l.div_ceil(PAGE_SIZE)).sum();
        if needed > batch.pages.free_pages() {
            return Err(Error::OutOfPages { op, needed, free: batch.pages.free_pages() });
        }
        let (mut ids, mut positions, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        for ((&seq, &l), t) in batch.seqs.iter().zip(&lens).zip(tokens) {
            ids.extend(t.iter().map(|&id| id as i32));
            positions.extend((l..l + t.len()).map(|p| p as i32));
            slots.extend(batch.pages.append(seq, t.len())?);
        }
        let n = ids.len() as i32;
        Ok(Step {
            ids,
            positions,
            slots,
            q_lens: tokens.iter().map(|t| t.len()).collect(),
            table: batch.pages.block_table(&batch.seqs)?.padded(batch.table_stride),
            logit_rows: (0..n).collect(),
        })
    }

    /// Up to `max_new_tokens` tokens after each prompt: one varlen prefill, then batched decode
    /// steps on the paged cache; sequence s samples with its own [`Sampler`] seeded
    /// `sampling.seed + s` (greedy ignores the seed) and stops right after a token in `eos`
    /// ([`is_finished`], the CPU path's rule; `&[]`: exactly `max_new_tokens` each).
    ///
    /// A finished sequence stays in the batch until every sequence is done: it keeps decoding
    /// its last token, whose logits are dropped, and records nothing. The batch keeps its shape
    /// and its pages (allocated for `max_new_tokens` per sequence) suffice; the cost is that
    /// sequence's share of each later step.
    pub fn generate(&self, prompts: &[Vec<u32>], max_new_tokens: usize, sampling: Sampling, eos: &[u32]) -> Result<Vec<Vec<u32>>> {
        self.generate_with(prompts, max_new_tokens, sampling, eos, |_| {})
    }

    /// [`GpuModel::generate`], calling `on_step(tokens)` after each step with each sequence's
    /// new token (`None` for a sequence already finished).
    pub fn generate_with(
        &self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        sampling: Sampling,
        eos: &[u32],
        mut on_step: impl FnMut(&[Option<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        let samplers: Vec<Sampler> =
            (0..prompts.len()).map(|s| Sampler::new(Sampling { seed: sampling.seed.wrapping_add(s as u64), ..sampling })).collect();
        self.generate_sampled(prompts, max_new_tokens, samplers, eos, &mut on_step)
    }

    /// [`GpuModel::generate`] with each sequence's own settings and seed, `samplings[s]` (an
    /// engine's requests: greedy and sampled ones, different temperatures, top-k and top-p, in
    /// one batch; the tokens are drawn by `sample_rows_each`).
    pub fn generate_each(&self, prompts: &[Vec<u32>], max_new_tokens: usize, samplings: &[Sampling], eos: &[u32]) -> Result<Vec<Vec<u32>>> {
        let samplers: Vec<Sampler> = samplings.iter().map(|&s| Sampler::new(s)).collect();
        check_samplers("GpuModel::generate_each", &samplers, prompts.len())?;
        self.generate_sampled(prompts, max_new_tokens, samplers, eos, &mut |_| {})
    }

    /// Generation with one sampler per sequence (see [`GpuModel::generate`]).
    fn generate_sampled(
        &self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        mut samplers: Vec<Sampler>,
        eos: &[u32],
        on_step: &mut dyn FnMut(&[Option<u32>]),
    ) -> Result<Vec<Vec<u32>>> {
        for s in &samplers {
            s.settings().validate("GpuModel::generate")?;
        }
        // (capacity capped: max_new_tokens is checked against the cache only when it is sized)
        let mut out = vec![Vec::with_capacity(max_new_tokens.min(4096)); prompts.len()];
        if max_new_tokens == 0 {
            return Ok(out);
        }
        // Each step's tokens are chosen on the GPU: argmax_rows (every sequence greedy) or
        // sample_rows_each with each sequence's Sampler's settings and next uniform number (the
        // Sampler's own choice from those logits). A finished sequence's draw is dropped.
        let greedy = samplers.iter().all(Sampler::is_greedy);
        let (mut batch, mut chosen) = if greedy { self.prefill_greedy(prompts, max_new_tokens)? } else { self.prefill_sampled(prompts, max_new_tokens, &mut samplers)? };
        loop {
            let next: Vec<Option<u32>> = out.iter().zip(&chosen).map(|(o, &t)| (!is_finished(o, max_new_tokens, eos)).then_some(t)).collect();
            for (o, t) in out.iter_mut().zip(&next) {
                o.extend(*t);
            }
            on_step(&next);
            if out.iter().all(|o| is_finished(o, max_new_tokens, eos)) {
                return Ok(out);
            }
            // Every sequence has a token by now (the first step samples them all).
            let tokens: Vec<u32> = out.iter().map(|o| o[o.len() - 1]).collect();
            chosen = if greedy { self.decode_greedy(&mut batch, &tokens)? } else { self.decode_sampled(&mut batch, &tokens, &mut samplers)? };
        }
    }
}

/// Consecutive `[len, vocab]` runs of `logits` (rows of `vocab`), one per length.
fn split_rows(logits: &[f32], lens: impl Iterator<Item = usize>, vocab: usize) -> Vec<Vec<f32>> {
    let mut at = 0;
    lens.map(|n| {
        let rows = logits[at * vocab..(at + n) * vocab].to_vec();
        at += n;
        rows
    })
    .collect()
}

/// One sampler per sequence (each with its own settings: `sample_rows_each`).
fn check_samplers(op: &'static str, samplers: &[Sampler], n: usize) -> Result<()> {
    if samplers.len() != n {
        return Err(Error::ShapeMismatch { op, arg: "samplers", expected: format!("[{n}] (one per sequence)"), got: format!("[{}]", samplers.len()) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_are_one_per_sequence() {
        let s = |top_k| Sampler::new(Sampling { temperature: 1.0, top_k, top_p: 1.0, seed: 3 });
        assert!(check_samplers("t", &[s(5), s(6)], 2).is_ok());
        assert!(matches!(check_samplers("t", &[s(5)], 2), Err(Error::ShapeMismatch { arg: "samplers", .. })));
    }
}
