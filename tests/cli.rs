//! `warpcore run` end to end on the CPU: the llama fixture with the tokenizer fixture beside it
//! (its ids below 256 fit the model's vocabulary). The streamed text equals the decode of the
//! printed ids, generation stops at the folder's EOS id (generation_config.json here), and
//! `--ignore-eos` runs to `--max-new-tokens` (these need the `tokenizer` feature; without it,
//! `--prompt` is refused with a message naming the feature).

#[cfg(feature = "tokenizer")]
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
#[cfg(feature = "tokenizer")]
use warpcore::model::Tokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// stdout of `warpcore run --model dir --prompt Hello <extra>`, as (text, ids).
#[cfg(feature = "tokenizer")]
fn run(dir: &Path, extra: &[&str]) -> (String, Vec<u32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_warpcore"))
        .args(["run", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--temperature", "1", "--seed", "2"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (text, ids) = stdout.strip_suffix('\n').unwrap().rsplit_once('\n').unwrap();
    (text.to_string(), ids.split(',').map(|t| t.parse().unwrap()).collect())
}

#[test]
#[cfg(feature = "tokenizer")]
fn run_streams_the_text_of_its_ids_and_stops_at_eos() {
    let dir = std::env::temp_dir().join(format!("warpcore-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (from, file) in [("llama", "config.json"), ("llama", "model.safetensors"), ("tokenizer", "tokenizer.json")] {
        std::fs::copy(fixtures().join(from).join(file), dir.join(file)).unwrap();
    }
    let tok = Tokenizer::from_dir(&dir).unwrap().unwrap();
    // Sampled ids: byte-level tokens, some splitting characters; EOS (2) not sampled with this seed.
    let (text, ids) = run(&dir, &["--max-new-tokens", "24"]);
    assert_eq!(ids.len(), 24);
    assert_eq!(text, tok.decode(&ids).unwrap());
    // EOS = the fourth token: the output ends right after it; --ignore-eos runs past it.
    let eos = ids[3];
    let stop = ids.iter().position(|&t| t == eos).unwrap();
    std::fs::write(dir.join("generation_config.json"), format!("{{\"eos_token_id\": [{eos}]}}")).unwrap();
    let stopped = run(&dir, &["--max-new-tokens", "24"]);
    let ignored = run(&dir, &["--max-new-tokens", "24", "--ignore-eos"]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(stopped.1, ids[..=stop]);
    assert_eq!(stopped.0, tok.decode(&ids[..=stop]).unwrap());
    assert_eq!(ignored, (text, ids));
}

/// Without the `tokenizer` feature, `--prompt TEXT` is refused before the model loads, naming
/// the feature and `--prompt-ids`.
#[test]
#[cfg(not(feature = "tokenizer"))]
fn prompt_text_needs_the_tokenizer_feature() {
    let out = Command::new(env!("CARGO_BIN_EXE_warpcore"))
        .args(["run", "--model", fixtures().join("llama").to_str().unwrap(), "--prompt", "Hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features tokenizer") && stderr.contains("--prompt-ids"), "{stderr}");
}

/// `warpcore check --family`: one family's rows (here, without a GPU, its CPU references' self-
/// checks), and an unknown family refused with the known ones named.
#[test]
fn check_takes_one_family_by_name() {
    if warpcore::driver_present() {
        return; // with a GPU, check runs the kernels: the GPU suite's business, not this file's
    }
    let check = |family: &str| Command::new(env!("CARGO_BIN_EXE_warpcore")).args(["check", "--family", family]).output().unwrap();
    let out = check("rope");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ") && l.ends_with("| PASS |")).collect();
    assert!(!rows.is_empty(), "{stdout}");
    assert!(rows.iter().all(|r| r.starts_with("| reference::rope ") || r.starts_with("| reference::kv_cache ")), "{stdout}");
    let out = check("rms");
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not a family") && stderr.contains("rms_norm") && stderr.contains("matmul_fp8"), "{stderr}");
}

/// `--kv-cache fp8`: on the CPU the keys and values are rounded as an FP8 cache stores them (the
/// run says so and completes); a scale that is not positive is refused before anything runs.
#[test]
fn run_takes_an_fp8_kv_cache() {
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warpcore"))
            .args(["run", "--model", fixtures().join("llama").to_str().unwrap(), "--prompt-ids", "1,5,9,3", "--max-new-tokens", "6", "--ignore-eos"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--kv-cache", "fp8", "--kv-scale", "0.05"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KV cache: FP8 e4m3, scale 0.05"));
    let ids = String::from_utf8(out.stdout).unwrap();
    assert_eq!(ids.trim().split(',').count(), 6, "{ids}");
    let out = run(&["--kv-cache", "fp8", "--kv-scale", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KV cache scale (finite, > 0)"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!run(&["--kv-cache", "int8"]).status.success());
}

/// `--cuda-graphs` belongs to the GPU path: with `--device cpu` it is refused with a message
/// naming `--device cuda`, before any model is loaded.
#[test]
fn cuda_graphs_need_the_gpu_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_warpcore"))
        .args(["run", "--model", fixtures().join("llama").to_str().unwrap(), "--prompt-ids", "1,5", "--max-new-tokens", "2", "--cuda-graphs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cuda-graphs needs --device cuda"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Options out of range are refused with a message naming them, not run as something else:
/// --batch 0 (was one sequence) or past 65536 (was a huge allocation), a negative or NaN
/// temperature (was greedy), top-p outside (0, 1], --kv-scale without an FP8 cache (was ignored).
#[test]
fn run_refuses_options_out_of_range() {
    for (extra, needle) in [
        (&["--batch", "0"][..], "--batch"),
        (&["--batch", "100000000000"][..], "--batch"),
        (&["--temperature=-5"][..], "temperature"),
        (&["--temperature", "NaN"][..], "temperature"),
        (&["--temperature", "1", "--top-p", "7"][..], "top_p"),
        (&["--temperature", "1", "--top-p=-1"][..], "top_p"),
        (&["--kv-scale", "0.5"][..], "--kv-scale needs --kv-cache fp8"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_warpcore"))
            .args(["run", "--model", fixtures().join("llama").to_str().unwrap(), "--prompt-ids", "1,5", "--max-new-tokens", "2"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} ran");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
