//! `warpcore run`: load a model folder, generate on the CPU or the GPU, stream the text (one
//! sequence) or print each sequence's text and ids, and report prefill / decode speed.

use crate::{open_device, CliResult};
use std::process::ExitCode;
#[cfg(feature = "tokenizer")]
pub(crate) use warpcore::model::{TextStream, Tokenizer};

/// Built without the `tokenizer` feature: `--prompt TEXT` is refused (`Tokenizer::from_dir`), so
/// no tokenizer can exist; these uninhabited stand-ins let the text paths compile unchanged.
#[cfg(not(feature = "tokenizer"))]
pub(crate) enum Tokenizer {}
#[cfg(not(feature = "tokenizer"))]
pub(crate) struct TextStream<'a>(&'a Tokenizer);
#[cfg(not(feature = "tokenizer"))]
impl Tokenizer {
    pub(crate) fn from_dir(_: &std::path::Path) -> warpcore::Result<Option<Self>> {
        Err(warpcore::Error::Unsupported {
            op: "warpcore run",
            what: "--prompt TEXT without the `tokenizer` feature",
            value: "build with `--features tokenizer`, or give --prompt-ids".into(),
        })
    }
    pub(crate) fn encode(&self, _: &str, _: bool) -> warpcore::Result<Vec<u32>> {
        match *self {}
    }
    pub(crate) fn decode(&self, _: &[u32]) -> warpcore::Result<String> {
        match *self {}
    }
    fn text_stream(&self) -> TextStream<'_> {
        match *self {}
    }
}
#[cfg(not(feature = "tokenizer"))]
impl TextStream<'_> {
    fn push(&mut self, _: u32) -> warpcore::Result<String> {
        match *self.0 {}
    }
    fn finish(self) -> warpcore::Result<String> {
        match *self.0 {}
    }
}

/// `warpcore run`'s generation settings.
#[derive(Clone, Copy)]
pub(crate) struct Generation {
    pub(crate) max_new_tokens: usize,
    pub(crate) ignore_eos: bool,
    pub(crate) sampling: warpcore::model::Sampling,
    /// --device cuda: decode steps replayed as CUDA graphs.
    pub(crate) decode_graphs: bool,
}

/// Where generated tokens go while a run is in progress: one sequence's text to stdout, piece by
/// piece (flushed per token), or a progress line on stderr (when nothing is streamed, so the two
/// never interleave on a terminal).
enum Live<'a> {
    Text(TextStream<'a>),
    Progress { done: usize, total: usize },
}

impl<'a> Live<'a> {
    fn new(tokenizer: Option<&'a Tokenizer>, stream: bool, total: usize) -> Self {
        match tokenizer {
            Some(tok) if stream => Live::Text(tok.text_stream()),
            _ => Live::Progress { done: 0, total },
        }
    }

    /// One step: `token` is the streamed sequence's new token (None once it has finished).
    fn step(&mut self, token: Option<u32>) -> warpcore::Result<()> {
        use std::io::Write;
        match self {
            Live::Text(text) => {
                if let Some(t) = token {
                    let piece = text.push(t)?;
                    if !piece.is_empty() {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(piece.as_bytes());
                        let _ = out.flush();
                    }
                }
            }
            Live::Progress { done, total } => {
                *done += 1;
                if *total >= 32 && *done % 16 == 0 {
                    eprint!("\rdecode {done}/{total}");
                    let _ = std::io::stderr().flush();
                }
            }
        }
        Ok(())
    }

    /// Ends the stream (the rest of the text and a newline) or the progress line. Returns
    /// whether the text was printed.
    fn finish(self) -> warpcore::Result<bool> {
        match self {
            Live::Text(text) => {
                println!("{}", text.finish()?);
                Ok(true)
            }
            Live::Progress { done, total } => {
                if total >= 32 && done >= 16 {
                    eprintln!("\rdecode {done}/{total}");
                }
                Ok(false)
            }
        }
    }
}

pub(crate) fn run_model(
    dir: &std::path::Path,
    prompts: &[Vec<u32>],
    gen: Generation,
    // kv_fp8: None for a bf16 cache; Some(scale): FP8 with that scale in every layer, or
    // (None) the checkpoint's, else 1.
    (device, kv_fp8): (&str, Option<Option<warpcore::kv_cache::KvScales>>),
    logits_out: Option<&std::path::Path>,
    tokenizer: Option<&Tokenizer>,
) -> CliResult {
    use std::time::Instant;
    let Generation { max_new_tokens, ignore_eos, sampling, decode_graphs } = gen;
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let print_ids = |o: &[u32]| println!("{}", o.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    // The FP8 cache's scales, given the checkpoint's; and what to say of them.
    let fp8_scales = |checkpoint: Option<&[warpcore::kv_cache::KvScales]>| -> Option<Vec<warpcore::kv_cache::KvScales>> {
        let given = kv_fp8?;
        let (scales, what) = match (given, checkpoint) {
            (Some(s), _) => (vec![s], format!("scale {} for K and V in every layer", s.k)),
            (None, Some(c)) => (c.to_vec(), "the checkpoint's per-layer scales".to_string()),
            (None, None) => (vec![warpcore::kv_cache::KvScales::ONE], "scale 1 for K and V in every layer".to_string()),
        };
        eprintln!("KV cache: FP8 e4m3, {what}");
        Some(scales)
    };
    let t0 = Instant::now();
    // (outputs, whether their text was streamed, prefill seconds, decode seconds, teacher-forced
    // logits of prompt + output)
    let (outputs, streamed, prefill, decode, logits) = match device {
        "cpu" => {
            if decode_graphs {
                return Err("--cuda-graphs needs --device cuda".into());
            }
            let mut model = warpcore::model::CpuModel::load(dir)?;
            model.set_fp8_kv_cache(fp8_scales(model.checkpoint_kv_scales()).as_deref())?;
            eprintln!("loaded {:?} ({} layers) in {:.2} s (CPU)", model.config.architecture, model.config.num_layers, t0.elapsed().as_secs_f64());
            let eos = if ignore_eos { &[][..] } else { &model.config.eos_token_ids[..] };
            // The sequences run one after another: each one's text streams, then its ids. Its
            // prefill is the time to its first token (the prompt's run), the rest is decode.
            let (mut prefill, mut decode) = (0.0, 0.0);
            let mut outputs = Vec::new();
            for (s, p) in prompts.iter().enumerate() {
                let cfg = warpcore::model::Sampling { seed: sampling.seed.wrapping_add(s as u64), ..sampling };
                let mut live = Live::new(tokenizer, true, max_new_tokens);
                let mut failed = None;
                let t1 = Instant::now();
                if max_new_tokens == 0 {
                    model.forward(p)?; // no token to wait for: the prompt alone
                }
                let mut first = None;
                let o = model.generate_with(p, max_new_tokens, &mut warpcore::model::Sampler::new(cfg), eos, |t| {
                    first.get_or_insert_with(|| t1.elapsed().as_secs_f64());
                    if let Err(e) = live.step(Some(t)) {
                        failed.get_or_insert(e);
                    }
                })?;
                let total = t1.elapsed().as_secs_f64();
                let to_first = first.unwrap_or(total);
                prefill += to_first;
                decode += total - to_first;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                if live.finish()? {
                    print_ids(&o);
                }
                outputs.push(o);
            }
            let mut logits = Vec::new();
            if logits_out.is_some() {
                for (p, o) in prompts.iter().zip(&outputs) {
                    logits.extend(model.forward(&[p.as_slice(), o.as_slice()].concat())?);
                }
            }
            (outputs, tokenizer.is_some(), prefill, decode, logits)
        }
        "cuda" => {
            let dev = match open_device(false)? {
                Ok(d) => d,
                Err(why) => return Err(format!("--device cuda: {why}").into()),
            };
            let mut model = warpcore::model::GpuModel::load(&dev, dir)?;
            model.set_fp8_kv_cache(fp8_scales(model.checkpoint_kv_scales()).as_deref())?;
            model.set_decode_graphs(decode_graphs)?;
            dev.synchronize()?;
            eprintln!(
                "loaded {:?} ({} layers, {:.2} GB of weights) on {} in {:.2} s",
                model.config.architecture,
                model.config.num_layers,
                model.weight_bytes() as f64 / 1e9,
                dev.info().name,
                t0.elapsed().as_secs_f64()
            );
            let eos = if ignore_eos { &[][..] } else { &model.config.eos_token_ids[..] };
            // Batch 1 streams its text; a larger batch prints each sequence's text at the end.
            let mut live = Live::new(tokenizer, prompts.len() == 1, max_new_tokens);
            let mut failed = None;
            // The first step's call comes after the prefill's logits reached the host
            // (synchronised), each later one after a decode step's.
            let t1 = Instant::now();
            let mut first = None;
            let outputs = model.generate_with(prompts, max_new_tokens, sampling, eos, |tokens| {
                first.get_or_insert_with(|| t1.elapsed().as_secs_f64());
                if let Err(e) = live.step(tokens[0]) {
                    failed.get_or_insert(e);
                }
            })?;
            let prefill = first.unwrap_or_else(|| t1.elapsed().as_secs_f64());
            let decode = t1.elapsed().as_secs_f64() - prefill;
            if let Some(e) = failed {
                return Err(e.into());
            }
            let streamed = live.finish()?;
            if streamed {
                print_ids(&outputs[0]);
            }
            let logits = if logits_out.is_some() {
                let full: Vec<Vec<u32>> = prompts.iter().zip(&outputs).map(|(p, o)| [p.as_slice(), o.as_slice()].concat()).collect();
                model.forward_logits(&full)?.concat()
            } else {
                Vec::new()
            };
            (outputs, streamed, prefill, decode, logits)
        }
        other => return Err(format!("--device {other}: expected cpu or cuda").into()),
    };
    if !streamed {
        for o in &outputs {
            if let Some(tok) = tokenizer {
                println!("{}", tok.decode(o)?);
            }
            print_ids(o);
        }
    }
    // Decoded tokens: the first of each sequence comes from the prefill's logits.
    let decoded = outputs.iter().map(|o| o.len().saturating_sub(1)).sum::<usize>();
    let stopped = outputs.iter().filter(|o| o.len() < max_new_tokens).count();
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tok/s); decode: {} tokens in {:.3} s ({:.1} tok/s){}{}",
        prompt_tokens,
        prefill,
        prompt_tokens as f64 / prefill.max(1e-9),
        decoded,
        decode,
        decoded as f64 / decode.max(1e-9),
        if stopped > 0 { format!("; {stopped} of {} sequences stopped at end-of-sequence", outputs.len()) } else { String::new() },
        if device == "cpu" { "; CPU reference path" } else { "" }
    );
    if let Some(path) = logits_out {
        std::fs::write(path, logits.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    }
    Ok(ExitCode::SUCCESS)
}
