//! The kernel families as `check` and `bench` see them, and the isolation that runs each family
//! in a process of its own on a GPU. A kernel that faults (or traps: the spin-wait watchdog of
//! cuda/common.cuh) leaves the process's CUDA context unusable, so every later call in that
//! process fails, and a kernel that hangs never returns. In a child per family either costs that
//! family's results only; the other families' numbers still come back.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use warpcore::bench::{BenchRecord, Ceilings};
use warpcore::check::CheckResult;
use warpcore::Device;

/// A family's benchmarks (or tuning sweep): its records on this GPU, pushed as they are
/// measured, so that those measured before an error (a kernel fault ends the family: its
/// context is gone) are still reported.
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
    /// The JSON it wrote (None: nothing readable). A child that fails after some of its work
    /// writes what it had done before the failure: those records are as good as any.
    pub records: Option<Value>,
    /// Why it did not finish cleanly (a failed exit status, the time limit, no records).
    pub failure: Option<String>,
}

/// Runs this program again as `warpcore SUBCOMMAND --family NAME --records FILE ARGS...` and
/// returns what the child wrote to FILE and, if it did not finish cleanly, why. The child's
/// stdout and stderr pass through.
pub fn run_child(subcommand: &str, family: &str, args: &[String], limit: Duration) -> ChildRun {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return ChildRun { records: None, failure: Some(format!("cannot find this program to rerun it: {e}")) },
    };
    let records = std::env::temp_dir().join(format!("warpcore-{}-{}-{family}.json", std::process::id(), subcommand));
    let mut cmd = Command::new(exe);
    cmd.arg(subcommand).arg("--family").arg(family).arg("--records").arg(&records).args(args);
    let result = run_for_records(cmd, &records, limit);
    let _ = std::fs::remove_file(&records);
    result
}

/// Runs `cmd` with a time limit (killed past it) and parses the JSON it leaves in `records`.
pub fn run_for_records(mut cmd: Command, records: &Path, limit: Duration) -> ChildRun {
    let _ = std::fs::remove_file(records);
    let fail = |why: String| ChildRun { records: None, failure: Some(why) };
    let mut child = match cmd.stdin(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start the child process: {e}")),
    };
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if t0.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!("killed after {} s (the time limit, WARPCORE_FAMILY_SECONDS): hung or too slow", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return fail(format!("waiting for the child process: {e}")),
        }
    };
    let parsed = std::fs::read_to_string(records)
        .map_err(|e| format!("the child process wrote no records ({e})"))
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| format!("the child process's records are not JSON: {e}")));
    match (status.success(), parsed) {
        (true, Ok(v)) => ChildRun { records: Some(v), failure: None },
        (true, Err(why)) => fail(why),
        (false, Ok(v)) => ChildRun { records: Some(v), failure: Some(format!("the child process failed ({status}) after the records it gave; its output is above")) },
        (false, Err(_)) => fail(format!("the child process failed ({status}); its output is above")),
    }
}

/// Writes a child's records (the parent reads them with run_child).
pub fn write_records(path: &Path, value: &Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_string(value)?)
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

    #[test]
    fn a_childs_records_come_back() {
        let p = path("ok");
        let r = run_for_records(sh(&format!("echo '[1, 2]' > {}", p.display())), &p, Duration::from_secs(20));
        assert_eq!((r.records, r.failure), (Some(serde_json::json!([1, 2])), None));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_failed_hung_or_silent_child_is_an_error() {
        let p = path("bad");
        let failure = |r: ChildRun| r.failure.expect("a failure");
        // Records written, then a failure (a fault after some benchmarks): the records come
        // back, and so does the failure.
        let r = run_for_records(sh(&format!("echo '[3]' > {}; exit 3", p.display())), &p, Duration::from_secs(20));
        assert_eq!(r.records, Some(serde_json::json!([3])));
        assert!(failure(r).contains("failed"));
        let r = run_for_records(sh("exit 3"), &p, Duration::from_secs(20));
        assert!(r.records.is_none() && failure(r).contains("failed"));
        let e = failure(run_for_records(sh("exit 0"), &p, Duration::from_secs(20)));
        assert!(e.contains("wrote no records"), "{e}");
        let e = failure(run_for_records(sh(&format!("echo 'not json' > {}", p.display())), &p, Duration::from_secs(20)));
        assert!(e.contains("not JSON"), "{e}");
        let t0 = Instant::now();
        let e = failure(run_for_records(sh("sleep 30"), &p, Duration::from_secs(1)));
        assert!(e.contains("killed after 1 s"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_file(&p);
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
