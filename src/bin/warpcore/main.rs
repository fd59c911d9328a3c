//! `warpcore`: info, check (every op against its CPU reference) and bench.

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use warpcore::bench::{self, BenchRecord, Ceilings};
use warpcore::check::CheckResult;
use warpcore::{resources, Device};

mod run;
use run::{run_model, Generation};

#[derive(Parser)]
#[command(name = "warpcore", version, about = "warpcore's kernels: GPU info, checks against the CPU references, benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The GPU, the driver, and the ceilings measured now (copy bandwidth, cuBLAS bf16 GEMM).
    Info {
        /// Also print every kernel's registers / stack / spills / shared memory (ptxas, sm_90a).
        #[arg(long)]
        kernels: bool,
    },
    /// Every op against its CPU reference at several shapes (a PASS/FAIL table). Without a GPU,
    /// checks the CPU references' own invariants.
    Check {
        /// Only ops whose name contains this.
        #[arg(long)]
        op: Option<String>,
    },
    /// Time every op: time, GB/s or TFLOP/s, % of the ceiling measured in this run, and the
    /// speed-up over each alternative given with --compare.
    Bench {
        /// Only ops whose name contains this.
        #[arg(long)]
        op: Option<String>,
        /// Print JSON instead of the markdown table.
        #[arg(long)]
        json: bool,
        /// Alternatives' timings to compare with (JSON written by bench/compare_torch.py).
        #[arg(long)]
        compare: Vec<PathBuf>,
        /// Also write bench.md and bench.json (with --model: model_bench.md / .json) into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead of the ops: time the GPU model on this Hugging Face folder (prefill of 2048
        /// tokens, decode at batch 1 and 32); --compare takes bench/model_torch.py's JSON.
        #[arg(long, conflicts_with_all = ["op", "json"])]
        model: Option<PathBuf>,
    },
    /// Run a Hugging Face model folder (config.json + *.safetensors): prompt token ids (or text,
    /// through the folder's tokenizer.json) in, generated ids (and text) out, with prefill /
    /// decode tokens per second. Text is printed as it is generated (one sequence at a time);
    /// a sequence stops after its end-of-sequence token (config.json / generation_config.json
    /// `eos_token_id`).
    Run {
        /// The model folder.
        #[arg(long)]
        model: PathBuf,
        /// Prompt token ids, comma-separated (e.g. 1,2,3).
        #[arg(long, value_delimiter = ',', required_unless_present = "prompt", conflicts_with = "prompt")]
        prompt_ids: Vec<u32>,
        /// Prompt text, encoded with the model folder's tokenizer.json (its template, e.g. BOS,
        /// applied); the output is printed as text (streamed at batch 1 or on the CPU) and as ids.
        #[arg(long)]
        prompt: Option<String>,
        #[arg(long, default_value_t = 16)]
        max_new_tokens: usize,
        /// Generate exactly --max-new-tokens, past end-of-sequence tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// cpu (the f32 reference path) or cuda (the GPU path: bf16, paged KV cache).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run the prompt as a batch of this many sequences (the same prompt replicated).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the teacher-forced logits of prompt + output ([tokens, vocab] f32, little-endian;
        /// with --batch, every sequence's in order), computed on the chosen device.
        #[arg(long)]
        logits_out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { kernels } => info(kernels),
        Command::Check { op } => check(op.as_deref()),
        Command::Bench { compare, out, model: Some(dir), .. } => bench_model_cmd(&dir, &compare, out.as_deref()),
        Command::Bench { op, json, compare, out, model: None } => bench_cmd(op.as_deref(), json, &compare, out.as_deref()),
        Command::Run { model, prompt_ids, prompt, max_new_tokens, ignore_eos, device, batch, temperature, top_k, top_p, seed, logits_out } => {
            let sampling = warpcore::model::Sampling { temperature, top_k, top_p, seed };
            let run = |prompt_ids: Vec<u32>, tokenizer: Option<&warpcore::model::Tokenizer>| {
                let prompts = vec![prompt_ids; batch.max(1)];
                let gen = Generation { max_new_tokens, ignore_eos, sampling };
                run_model(&model, &prompts, gen, &device, logits_out.as_deref(), tokenizer)
            };
            match prompt {
                None => run(prompt_ids, None),
                Some(text) => match warpcore::model::Tokenizer::from_dir(&model) {
                    Ok(Some(tok)) => tok.encode(&text, true).map_err(Into::into).and_then(|ids| run(ids, Some(&tok))),
                    Ok(None) => Err(format!("--prompt: {} has no tokenizer.json (use --prompt-ids)", model.display()).into()),
                    Err(e) => Err(e.into()),
                },
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warpcore: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// The GPU, or (inner Err) the reason there is none. With WARPCORE_REQUIRE_GPU=1 a missing
/// GPU is an error (outer Err).
fn open_device() -> Result<Result<Device, String>, String> {
    let dev = if warpcore::driver_present() {
        Device::new(0).map_err(|e| e.to_string())
    } else {
        Err("the NVIDIA driver (libcuda) is not installed".to_string())
    };
    match dev {
        Err(why) if std::env::var("WARPCORE_REQUIRE_GPU").as_deref() == Ok("1") => {
            Err(format!("WARPCORE_REQUIRE_GPU=1 but there is no CUDA device: {why}"))
        }
        other => Ok(other),
    }
}

fn info(kernels: bool) -> CliResult {
    println!("warpcore {} ({} kernels built for sm_80 + sm_90a)", env!("CARGO_PKG_VERSION"), resources::KERNELS.iter().filter(|k| k.arch == "sm_90a").count());
    match open_device()? {
        Err(why) => println!("no CUDA device: {why}"),
        Ok(dev) => {
            let i = dev.info();
            println!(
                "GPU {}: {}, sm_{}{}, {} SMs, {:.1} GiB, driver CUDA {}.{}",
                i.ordinal,
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.sm_count,
                i.total_memory as f64 / (1u64 << 30) as f64,
                i.driver_version / 1000,
                i.driver_version % 1000 / 10
            );
            let c = measure_ceilings(&dev)?;
            println!("device-to-device copy: {:.0} GB/s (read + write)", c.copy_gbps);
            match c.gemm_bf16_tflops {
                Some(t) => println!("cuBLAS bf16 GEMM 8192^3: {t:.0} TFLOP/s"),
                None => println!("cuBLAS bf16 GEMM: libcublas not found (set LD_LIBRARY_PATH)"),
            }
        }
    }
    if kernels {
        print!("\n{}", resources::table());
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_ceilings(dev: &Device) -> warpcore::Result<Ceilings> {
    Ok(Ceilings { copy_gbps: bench::measure_copy_gbps(dev)?, gemm_bf16_tflops: bench::measure_gemm_bf16_tflops(dev)? })
}

fn check(filter: Option<&str>) -> CliResult {
    let keep = |r: &CheckResult| filter.is_none_or(|f| r.op.contains(f));
    let results: Vec<CheckResult> = match open_device()? {
        Err(why) => {
            println!("no CUDA device ({why}): checking the CPU references only");
            all_reference_checks().into_iter().filter(keep).collect()
        }
        Ok(dev) => {
            println!("checking every op on {} against its CPU reference", dev.info().name);
            all_gpu_checks(&dev)?.into_iter().filter(keep).collect()
        }
    };
    println!("\n| op | dtype | shape | worst max abs err | rel Frobenius | result |\n|---|---|---|---:|---:|---|");
    for r in &results {
        let worst = r.comparisons.iter().map(|c| c.max_abs_err).fold(0.0, f64::max);
        let frob = r.comparisons.iter().map(|c| c.rel_frobenius).fold(0.0, f64::max);
        println!("| {} | {} | {} | {:.2e} | {:.2e} | {} |", r.op, r.dtype, r.shape, worst, frob, if r.passed() { "PASS" } else { "FAIL" });
    }
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed()).collect();
    for r in &failed {
        eprintln!("\n{r}");
    }
    println!("\n{} passed, {} failed", results.len() - failed.len(), failed.len());
    Ok(if failed.is_empty() && !results.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every family's GPU checks (a new family adds its line here).
fn all_gpu_checks(dev: &Device) -> warpcore::Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    #[cfg(feature = "rms-norm")]
    out.extend(warpcore::check::rms_norm::check_all(dev)?);
    #[cfg(feature = "attention")]
    out.extend(warpcore::check::attention::check_all(dev)?);
    #[cfg(feature = "rope")]
    out.extend(warpcore::check::rope::check_all(dev)?);
    #[cfg(feature = "rope")]
    out.extend(warpcore::check::kv_cache::check_all(dev)?);
    #[cfg(feature = "moe-routing")]
    out.extend(warpcore::check::moe_routing::check_all(dev)?);
    #[cfg(feature = "quant-fp8")]
    out.extend(warpcore::check::quant::check_all(dev)?);
    #[cfg(feature = "matmul-fp8")]
    out.extend(warpcore::check::matmul_fp8::check_all(dev)?);
    #[cfg(feature = "elementwise")]
    out.extend(warpcore::check::elementwise::check_all(dev)?);
    let _ = dev;
    Ok(out)
}

/// Every family's reference self-checks (no GPU).
fn all_reference_checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    #[cfg(feature = "rms-norm")]
    out.extend(warpcore::check::rms_norm::check_references());
    #[cfg(feature = "attention")]
    out.extend(warpcore::check::attention::check_references());
    #[cfg(feature = "rope")]
    out.extend(warpcore::check::rope::check_references());
    #[cfg(feature = "rope")]
    out.extend(warpcore::check::kv_cache::check_references());
    #[cfg(feature = "moe-routing")]
    out.extend(warpcore::check::moe_routing::check_references());
    #[cfg(feature = "quant-fp8")]
    out.extend(warpcore::check::quant::check_references());
    #[cfg(feature = "matmul-fp8")]
    out.extend(warpcore::check::matmul_fp8::check_references());
    #[cfg(feature = "elementwise")]
    out.extend(warpcore::check::elementwise::check_references());
    out
}

/// Every family's benchmarks (a new family adds its line here).
fn all_benches(dev: &Device, ceilings: &Ceilings, filter: Option<&str>) -> warpcore::Result<Vec<BenchRecord>> {
    let mut out = Vec::new();
    #[cfg(feature = "rms-norm")]
    if filter.is_none_or(|f| "rms_norm fused_add_rms_norm qk_rms_norm".contains(f)) {
        out.extend(bench::rms_norm::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "attention")]
    if filter.is_none_or(|f| "attention_decode attention_prefill".contains(f)) {
        out.extend(bench::attention::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "rope")]
    if filter.is_none_or(|f| "rope append_kv rope_append_kv qk_norm_rope".contains(f)) {
        out.extend(bench::rope::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "moe-routing")]
    if filter.is_none_or(|f| "moe_gate moe_align moe_gather moe_combine".contains(f)) {
        out.extend(bench::moe_routing::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "quant-fp8")]
    if filter.is_none_or(|f| "quantize_fp8 rms_norm_quant_fp8 fused_add_rms_norm_quant_fp8".contains(f)) {
        out.extend(bench::quant::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "matmul-fp8")]
    if filter.is_none_or(|f| "matmul_fp8".contains(f)) {
        out.extend(bench::matmul_fp8::bench_all(dev, ceilings)?);
    }
    #[cfg(feature = "elementwise")]
    if filter.is_none_or(|f| "glu select_rows".contains(f)) {
        out.extend(bench::elementwise::bench_all(dev, ceilings)?);
    }
    out.retain(|r| filter.is_none_or(|f| r.op.contains(f)));
    Ok(out)
}

fn bench_cmd(filter: Option<&str>, as_json: bool, compare: &[PathBuf], out_dir: Option<&std::path::Path>) -> CliResult {
    let dev = match open_device()? {
        Ok(d) => d,
        Err(why) => {
            println!("no CUDA device ({why}): nothing to time. `warpcore check` runs the CPU references.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let ceilings = measure_ceilings(&dev)?;
    let mut records = all_benches(&dev, &ceilings, filter)?;
    for path in compare {
        let alt: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        for a in alt["results"].as_array().into_iter().flatten() {
            let (Some(op), Some(dtype), Some(shape), Some(name), Some(t)) =
                (a["op"].as_str(), a["dtype"].as_str(), a["shape"].as_str(), a["name"].as_str(), a["time_us"].as_f64())
            else {
                continue;
            };
            // The record of that key and its Hopper-kernel variant ("<shape> wgmma", attention
            // prefill) share the alternative.
            let variant = |s: &str| s == shape || s.strip_suffix(" wgmma") == Some(shape);
            for r in records.iter_mut().filter(|r| r.op == op && r.dtype == dtype && variant(&r.shape)) {
                r.add_alternative(name, t);
            }
        }
    }
    let mut json = to_json(&dev, &ceilings, &records);
    let mut md = to_markdown(&dev, &ceilings, &records);
    if filter.is_none() {
        // The issues' bars, judged on this (full) run.
        let verdicts = bench::bars::check(&records);
        md += "\n";
        md += &bench::bars::to_markdown(&verdicts);
        json["bars"] = verdicts
            .iter()
            .map(|v| json!({"issue": v.bar.issue, "op": v.bar.op, "dtype": v.bar.dtype, "shape": v.bar.shape, "measured": v.measured, "ratio": v.ratio, "met": v.met()}))
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(dir.join("bench.md"), &md)?;
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `warpcore bench --model DIR`: the model's prefill / decode tokens per second, the decode
/// roofline, and the alternatives' numbers from --compare (bench/model_torch.py).
fn bench_model_cmd(dir: &std::path::Path, compare: &[PathBuf], out_dir: Option<&std::path::Path>) -> CliResult {
    use warpcore::bench::model as mb;
    let dev = match open_device()? {
        Ok(d) => d,
        Err(why) => {
            println!("no CUDA device ({why}): nothing to time.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let copy_gbps = bench::measure_copy_gbps(&dev)?;
    let model = warpcore::model::GpuModel::load(&dev, dir)?;
    let weight_bytes = model.weight_bytes();
    let records = mb::bench_all(&model)?;
    let roofline = mb::decode_roofline_tokens_per_s(weight_bytes, copy_gbps);
    let mut alternatives: Vec<(String, String, f64)> = Vec::new(); // (case, name, tokens/s)
    for path in compare {
        let alt: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        for a in alt["results"].as_array().into_iter().flatten() {
            if let (Some(case), Some(name), Some(tps)) = (a["case"].as_str(), a["name"].as_str(), a["tokens_per_s"].as_f64()) {
                alternatives.push((case.into(), name.into(), tps));
            }
        }
    }
    let alts_of = |case: &str| alternatives.iter().filter(|a| a.0 == case).cloned().collect::<Vec<_>>();
    let json = json!({
        "gpu": dev.info().name,
        "model": dir.display().to_string(),
        "architecture": format!("{:?}", model.config.architecture),
        "weight_bytes": weight_bytes,
        "copy_gbps": copy_gbps,
        "decode_b1_roofline_tokens_per_s": roofline,
        "commit": std::env::var("WARPCORE_COMMIT").ok(),
        "results": records.iter().map(|r| json!({
            "case": r.case, "name": "warpcore", "tokens": r.tokens, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s,
            "alternatives": alts_of(&r.case).iter().map(|a| json!({"name": a.1, "tokens_per_s": a.2, "speedup": r.tokens_per_s / a.2})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let mut md = format!(
        "Model: {} ({:?}, {:.3} GB of bf16 weights) on {}; copy {:.0} GB/s → decode roofline at batch 1: {:.0} tok/s\n\n",
        dir.display(),
        model.config.architecture,
        weight_bytes as f64 / 1e9,
        dev.info().name,
        copy_gbps,
        roofline
    );
    md += "| case | warpcore tok/s | alternatives (tok/s, our speed-up) |\n|---|---:|---|\n";
    for r in &records {
        let alts: Vec<String> = alts_of(&r.case).iter().map(|a| format!("{} {:.0} ({:.2}×)", a.1, a.2, r.tokens_per_s / a.2)).collect();
        md += &format!("| {} | {:.0} | {} |\n", r.case, r.tokens_per_s, if alts.is_empty() { "-".into() } else { alts.join("; ") });
    }
    // Issue 7's bar: decode at batch 1 ≥ 3× transformers, against the faster of its back-ends.
    if let Some(r) = records.iter().find(|r| r.case == "decode b1") {
        let best = alts_of(&r.case).iter().map(|a| a.2).fold(f64::NAN, f64::max);
        md += &if best.is_nan() {
            "\nBar (issue 7, decode b1 ≥ 3× transformers): not measured (no transformers timing).\n".to_string()
        } else {
            let x = r.tokens_per_s / best;
            format!("\nBar (issue 7, decode b1 ≥ 3× transformers' faster back-end): {:.2}× — {}.\n", x, if x >= 3.0 { "met" } else { "missed" })
        };
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("model_bench.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(dir.join("model_bench.md"), &md)?;
    }
    print!("{md}");
    Ok(ExitCode::SUCCESS)
}

fn to_json(dev: &Device, c: &Ceilings, records: &[BenchRecord]) -> Value {
    let i = dev.info();
    json!({
        "gpu": i.name,
        "compute_capability": format!("{}.{}", i.compute_capability.0, i.compute_capability.1),
        "driver_cuda_version": i.driver_version,
        "commit": option_env!("WARPCORE_COMMIT").map(str::to_string).or_else(|| std::env::var("WARPCORE_COMMIT").ok()),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "ceilings": { "copy_gbps": c.copy_gbps, "cublas_bf16_tflops": c.gemm_bf16_tflops },
        "records": records.iter().map(|r| json!({
            "op": r.op, "dtype": r.dtype, "shape": r.shape, "time_us": r.time_us,
            "bytes": r.bytes, "flops": r.flops, "gbps": r.gbps, "tflops": r.tflops,
            "fraction_of_ceiling": r.fraction_of_ceiling,
            "alternatives": r.alternatives.iter().map(|a| json!({
                "name": a.name, "time_us": a.time_us, "speedup": a.speedup,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn to_markdown(dev: &Device, c: &Ceilings, records: &[BenchRecord]) -> String {
    let mut s = format!(
        "GPU: {} ({} SMs), driver CUDA {}; copy {:.0} GB/s; cuBLAS bf16 {}\n\n",
        dev.info().name,
        dev.info().sm_count,
        dev.info().driver_version,
        c.copy_gbps,
        c.gemm_bf16_tflops.map_or("n/a".to_string(), |t| format!("{t:.0} TFLOP/s"))
    );
    s += "| op | dtype | shape | time µs | GB/s | TFLOP/s | % of ceiling | alternatives (µs, our speed-up) |\n";
    s += "|---|---|---|---:|---:|---:|---:|---|\n";
    for r in records {
        let alts: Vec<String> = r.alternatives.iter().map(|a| format!("{} {:.1} µs ({:.2}×)", a.name, a.time_us, a.speedup)).collect();
        s += &format!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {:.1}% | {} |\n",
            r.op,
            r.dtype,
            r.shape,
            r.time_us,
            r.gbps,
            if r.flops > 0.0 { format!("{:.0}", r.tflops) } else { "-".into() },
            100.0 * r.fraction_of_ceiling,
            if alts.is_empty() { "-".into() } else { alts.join("; ") }
        );
    }
    s
}
