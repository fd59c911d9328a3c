//! The kernel families as `check` and `bench` see them, and the isolation that runs each family
//! in a process of its own on a GPU. A kernel that faults (or traps: the spin-wait watchdog of
//! cuda/common.cuh) leaves the process's CUDA context unusable, so every later call in that
//! process fails, and a kernel that hangs never returns. In a child per family either costs that
//! family's results only (not even the records it wrote before: the child rewrites its records
//! file as it goes, and the parent reads it however the child ended); the other families'
//! numbers still come back.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use warpcore::bench::{BenchRecord, Ceilings};
use warpcore::check::CheckResult;
use warpcore::Device;

/// A family's benchmarks (or tuning sweep): its records on this GPU, pushed as they are
/// measured, so that those measured before an error (a kernel fault ends the family: its
/// context is gone) or a panic are still reported. A sweep also hands them to
/// [`warpcore::bench::checkpoint`] where a hang must not cost them (the child's records file).
pub type BenchFn = fn(&Device, &Ceilings, &mut Vec<BenchRecord>) -> warpcore::Result<()>;

/// One kernel family: its GPU checks, its CPU references' self-checks and its benchmarks.
pub struct Family {
    pub name: &'static str,
    /// The ops its benchmarks time (`bench --op X` runs the families with an op containing X).
    pub ops: &'static str,
    pub check: fn(&Device) -> warpcore::Result<Vec<CheckResult>>,
    pub references: fn() -> Vec<CheckResult>,
    pub bench: BenchFn,
    /// `bench --tune`: its planner's choices against every alternative configuration, for the
    /// families whose kernels are planned per shape (records keyed "<shape> | <config>").
    pub tune: Option<BenchFn>,
}

/// The families built into this binary, in the order they run (a new family adds its entry).
pub fn all() -> Vec<Family> {
    #[allow(unused_mut)]
    let mut out: Vec<Family> = Vec::new();
    #[cfg(feature = "rms-norm")]
    out.push(Family {
        name: "rms_norm",
        ops: "rms_norm fused_add_rms_norm qk_rms_norm",
        check: warpcore::check::rms_norm::check_all,
        references: warpcore::check::rms_norm::check_references,
        bench: warpcore::bench::rms_norm::bench_all,
        tune: None,
    });
    #[cfg(feature = "attention")]
    out.push(Family {
        name: "attention",
        ops: "attention_decode attention_prefill attention_mla_decode",
        check: warpcore::check::attention::check_all,
        references: warpcore::check::attention::check_references,
        bench: warpcore::bench::attention::bench_all,
        tune: Some(warpcore::bench::attention::tune_all),
    });
    #[cfg(feature = "rope")]
    out.push(Family {
        name: "rope",
        ops: "rope append_kv rope_append_kv qk_norm_rope",
        check: |dev| {
            let mut v = warpcore::check::rope::check_all(dev)?;
            v.extend(warpcore::check::kv_cache::check_all(dev)?);
            Ok(v)
        },
        references: || {
            let mut v = warpcore::check::rope::check_references();
            v.extend(warpcore::check::kv_cache::check_references());
            v
        },
        bench: warpcore::bench::rope::bench_all,
        tune: None,
    });
    #[cfg(feature = "moe-routing")]
    out.push(Family {
        name: "moe_routing",
        ops: "moe_gate moe_align moe_gather moe_combine",
        check: warpcore::check::moe_routing::check_all,
        references: warpcore::check::moe_routing::check_references,
        bench: warpcore::bench::moe_routing::bench_all,
        tune: None,
    });
    #[cfg(feature = "quant-fp8")]
    out.push(Family {
        name: "quant_fp8",
        ops: "quantize_fp8 rms_norm_quant_fp8 fused_add_rms_norm_quant_fp8 glu_quant_fp8",
        check: warpcore::check::quant::check_all,
        references: warpcore::check::quant::check_references,
        bench: warpcore::bench::quant::bench_all,
        tune: None,
    });
    #[cfg(feature = "matmul-fp8")]
    out.push(Family {
        name: "matmul_fp8",
        ops: "matmul_fp8 matmul_fp8_grouped",
        check: warpcore::check::matmul_fp8::check_all,
        references: warpcore::check::matmul_fp8::check_references,
        bench: warpcore::bench::matmul_fp8::bench_all,
        tune: Some(warpcore::bench::matmul_fp8::tune_all),
    });
    #[cfg(feature = "elementwise")]
    out.push(Family {
        name: "elementwise",
        ops: "glu select_rows argmax_rows",
        check: warpcore::check::elementwise::check_all,
        references: warpcore::check::elementwise::check_references,
        bench: warpcore::bench::elementwise::bench_all,
        tune: None,
    });
    #[cfg(feature = "matmul-ternary")]
    out.push(Family {
        name: "matmul_ternary",
        ops: "quantize_activations rms_norm_quantize_activations fused_add_rms_norm_quantize_activations matmul_ternary",
        check: warpcore::check::matmul_ternary::check_all,
        references: warpcore::check::matmul_ternary::check_references,
        bench: warpcore::bench::matmul_ternary::bench_all,
        tune: None,
    });
    out
}

/// The families `--family` names (all of them when None); an unknown name is an error that
/// lists the known ones.
pub fn select(name: Option<&str>) -> Result<Vec<Family>, String> {
    let all = all();
    match name {
        None => Ok(all),
        Some(n) => {
            let names: Vec<&str> = all.iter().map(|f| f.name).collect();
            let picked: Vec<Family> = all.into_iter().filter(|f| f.name == n).collect();
            if picked.is_empty() {
                Err(format!("--family {n:?}: not a family of this build ({})", names.join(", ")))
            } else {
                Ok(picked)
            }
        }
    }
}

/// How long one family's child may run: WARPCORE_FAMILY_SECONDS, default 900.
pub fn time_limit() -> Duration {
    let secs = std::env::var("WARPCORE_FAMILY_SECONDS").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(900);
    Duration::from_secs(secs.max(1))
}

/// What a family's child process gave back.
pub struct ChildRun {
    /// The JSON it wrote last (None: nothing readable). The child rewrites its records file as
    /// it goes (after each family, and during a bench at each [`warpcore::bench::checkpoint`]),
    /// so a child that failed, was killed at its time limit or died of a signal still hands
    /// back what it had written before: those records are as good as any.
    pub records: Option<Value>,
    /// Why it did not finish cleanly (a failed exit status, a signal, the time limit, no
    /// records).
    pub failure: Option<String>,
}

/// Runs this program again as `warpcore SUBCOMMAND --family NAME --records FILE ARGS...` and
/// returns what the child wrote to FILE and, if it did not finish cleanly, why. The child's
/// stdout and stderr pass through. `progress` gets the records each time the child rewrites
/// them (see [`run_for_records`]).
pub fn run_child(subcommand: &str, family: &str, args: &[String], limit: Duration, progress: &mut dyn FnMut(&Value)) -> ChildRun {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return ChildRun { records: None, failure: Some(format!("cannot find this program to rerun it: {e}")) },
    };
    let records = std::env::temp_dir().join(format!("warpcore-{}-{}-{family}.json", std::process::id(), subcommand));
    let mut cmd = Command::new(exe);
    cmd.arg(subcommand).arg("--family").arg(family).arg("--records").arg(&records).args(args);
    let result = run_for_records(cmd, &records, limit, progress);
    let _ = std::fs::remove_file(&records);
    result
}

/// Runs `cmd` with a time limit (killed past it) and parses the JSON it left in `records`
/// however it ended (its last complete rewrite: [`write_records`]). While it runs, `progress`
/// gets the records each time they change (the parent's report can include a family still
/// running, in case the parent itself is stopped).
pub fn run_for_records(mut cmd: Command, records: &Path, limit: Duration, progress: &mut dyn FnMut(&Value)) -> ChildRun {
    let _ = std::fs::remove_file(records);
    let _ = std::fs::remove_file(part_of(records));
    let mut child = match cmd.stdin(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => return ChildRun { records: None, failure: Some(format!("cannot start the child process: {e}")) },
    };
    let t0 = Instant::now();
    let mut seen = None; // the records file's (length, modified time) when progress last got it
    let ended: Result<ExitStatus, String> = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if t0.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("killed after {} s (the time limit, WARPCORE_FAMILY_SECONDS): hung or too slow", limit.as_secs()));
            }
            Ok(None) => {
                let stamp = std::fs::metadata(records).ok().map(|m| (m.len(), m.modified().ok()));
                if stamp.is_some() && stamp != seen {
                    seen = stamp;
                    if let Ok(v) = read_records(records) {
                        progress(&v);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("waiting for the child process: {e}"));
            }
        }
    };
    let _ = std::fs::remove_file(part_of(records)); // a rewrite the child did not finish
    let failure = match ended {
        Err(why) => Some(why),
        Ok(status) if !status.success() => Some(exit_reason(status)),
        Ok(_) => None,
    };
    match (read_records(records), failure) {
        (Ok(v), failure) => ChildRun { records: Some(v), failure },
        (Err(why), None) => ChildRun { records: None, failure: Some(why) },
        (Err(_), Some(failure)) => ChildRun { records: None, failure: Some(failure) },
    }
}

/// Why a child that exited on its own did not succeed: its exit status, or the signal that
/// ended it (a crash, or a kill from outside: SIGKILL from the out-of-memory killer).
fn exit_reason(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal().is_some() {
            return format!("the child process was killed ({status}); its output is above");
        }
    }
    format!("the child process failed ({status}); its output is above")
}

/// The file a rewrite of `records` goes to first (renamed over it when whole).
fn part_of(records: &Path) -> PathBuf {
    let mut name = records.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

/// Writes a child's records (the parent reads them with [`run_for_records`]), whole or not at
/// all: into FILE.part, then renamed over FILE, so that a child killed mid-write leaves its
/// previous records readable. The child calls it again as its records grow.
pub fn write_records(path: &Path, value: &Value) -> std::io::Result<()> {
    let part = part_of(path);
    std::fs::write(&part, serde_json::to_string(value)?)?;
    std::fs::rename(&part, path)
}

/// The records a child wrote (Err: why there are none).
fn read_records(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("the child process wrote no records ({e})"))?;
    serde_json::from_str(&text).map_err(|e| format!("the child process's records are not JSON: {e}"))
}

/// Runs one family's work in this process with a panic caught: Err says why it did not finish
/// (an error, or a panic and its message). What `f` pushed to vectors outside it before that
/// is still there (a push is whole or not at all).
pub fn guarded(f: impl FnOnce() -> warpcore::Result<()>) -> Result<(), String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("stopped at an error: {e}")),
        Err(payload) => {
            let text = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
            Err(format!("panicked: {}", text.as_deref().unwrap_or("(no message)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    fn path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("warpcore-families-test-{}-{name}.json", std::process::id()))
    }

    fn run(script: &str, p: &Path, limit_s: u64) -> ChildRun {
        run_for_records(sh(script), p, Duration::from_secs(limit_s), &mut |_| {})
    }

    #[test]
    fn a_childs_records_come_back() {
        let p = path("ok");
        let r = run(&format!("echo '[1, 2]' > {}", p.display()), &p, 20);
        assert_eq!((r.records, r.failure), (Some(serde_json::json!([1, 2])), None));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_failed_hung_or_silent_child_is_an_error() {
        let p = path("bad");
        let failure = |r: ChildRun| r.failure.expect("a failure");
        // Records written, then a failure (a fault after some benchmarks): the records come
        // back, and so does the failure.
        let r = run(&format!("echo '[3]' > {}; exit 3", p.display()), &p, 20);
        assert_eq!(r.records, Some(serde_json::json!([3])));
        assert!(failure(r).contains("failed (exit status: 3)"));
        let r = run("exit 3", &p, 20);
        assert!(r.records.is_none() && failure(r).contains("failed"));
        let e = failure(run("exit 0", &p, 20));
        assert!(e.contains("wrote no records"), "{e}");
        let e = failure(run(&format!("echo 'not json' > {}", p.display()), &p, 20));
        assert!(e.contains("not JSON"), "{e}");
        let t0 = Instant::now();
        let e = failure(run("sleep 30", &p, 1));
        assert!(e.contains("killed after 1 s"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_file(&p);
    }

    /// A child killed at its time limit (a hang) or by a signal (a crash, the OOM killer) hands
    /// back the records it wrote before, with the reason; a rewrite it did not finish (FILE.part,
    /// cut short) neither replaces them nor stays behind.
    #[test]
    fn a_killed_childs_records_come_back() {
        let p = path("killed");
        let part = part_of(&p);
        let t0 = Instant::now();
        let r = run(&format!("echo '[1, 2]' > {}; printf '[1, 2, 3' > {}; sleep 30", p.display(), part.display()), &p, 1);
        assert_eq!(r.records, Some(serde_json::json!([1, 2])));
        assert!(r.failure.as_deref().is_some_and(|e| e.contains("killed after 1 s")), "{:?}", r.failure);
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(!part.exists());
        let r = run(&format!("echo '[4]' > {}; kill -9 $$", p.display()), &p, 20);
        assert_eq!(r.records, Some(serde_json::json!([4])));
        assert!(r.failure.as_deref().is_some_and(|e| e.contains("killed (signal: 9")), "{:?}", r.failure);
        let _ = std::fs::remove_file(&p);
    }

    /// While the child runs, each rewrite of its records reaches the parent (the report it keeps
    /// current in case it is stopped itself), and the last one is what comes back.
    #[test]
    fn a_childs_records_so_far_reach_the_parent_while_it_runs() {
        let p = path("progress");
        let write = |v: &str| format!("echo '{v}' > {0}.part && mv {0}.part {0}", p.display());
        let script = format!("{}; sleep 1; {}; sleep 1; {}; sleep 30", write("[1]"), write("[1, 2]"), write("[1, 2, 3]"));
        let mut seen = Vec::new();
        let r = run_for_records(sh(&script), &p, Duration::from_secs(5), &mut |v| seen.push(v.clone()));
        assert_eq!(seen, [serde_json::json!([1]), serde_json::json!([1, 2]), serde_json::json!([1, 2, 3])]);
        assert_eq!(r.records, Some(serde_json::json!([1, 2, 3])));
        assert!(r.failure.is_some());
        let _ = std::fs::remove_file(&p);
    }

    /// write_records replaces the file whole (through FILE.part, not left behind).
    #[test]
    fn records_are_written_whole() {
        let p = path("write");
        write_records(&p, &serde_json::json!([1])).unwrap();
        write_records(&p, &serde_json::json!([1, 2])).unwrap();
        assert_eq!(read_records(&p), Ok(serde_json::json!([1, 2])));
        assert!(!part_of(&p).exists());
        let _ = std::fs::remove_file(&p);
    }

    /// A family's error or panic is a failure with its text; what it pushed before stays.
    #[test]
    fn a_panic_keeps_what_was_pushed_before() {
        let mut pushed = Vec::new();
        let r = guarded(|| {
            pushed.push(1);
            panic!("boom at {}", 2)
        });
        assert_eq!((r, pushed), (Err("panicked: boom at 2".to_string()), vec![1]));
        let r = guarded(|| Err(warpcore::Error::Unsupported { op: "op", what: "what", value: "v".into() }));
        assert!(r.is_err_and(|e| e.starts_with("stopped at an error: ")));
        assert_eq!(guarded(|| Ok(())), Ok(()));
    }

    #[test]
    fn families_are_selected_by_exact_name() {
        let names: Vec<&str> = all().iter().map(|f| f.name).collect();
        assert!(names.contains(&"rms_norm") && names.contains(&"matmul_fp8"), "{names:?}");
        assert_eq!(select(Some("rms_norm")).unwrap().len(), 1);
        assert_eq!(select(None).unwrap().len(), names.len());
        let e = select(Some("rms")).err().unwrap();
        assert!(e.contains("rms_norm"), "{e}");
    }
}
