//! Benchmark harness shared by `warpcore bench` and the criterion benches: CUDA-event timing,
//! the ceilings measured in the same run, and one record per (op, dtype, shape).
//!
//! Method (docs/ARCHITECTURE.md, "Performance"): warm up, then many samples of back-to-back
//! calls timed with CUDA events, median per call; inputs rotate over enough copies that the
//! working set exceeds L2 (60 MB on H100/H200), so small shapes are not timed from cache.

#[cfg(feature = "attention")]
pub mod attention;
/// The issues' performance bars, checked against a run.
pub mod bars;
#[cfg(feature = "elementwise")]
pub mod elementwise;
#[cfg(feature = "matmul-ternary")]
pub mod matmul_ternary;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "moe-routing")]
pub mod moe_routing;
#[cfg(feature = "matmul-fp8")]
pub mod matmul_fp8;
#[cfg(feature = "quant-fp8")]
pub mod quant;
#[cfg(feature = "rms-norm")]
pub mod rms_norm;
#[cfg(feature = "rope")]
pub mod rope;

use crate::{Device, Result};
use cudarc::driver::sys::CUevent_flags;

/// Bytes the rotated working set must exceed (twice the H200's 60 MB L2).
pub const ROTATE_BYTES: usize = 120 << 20;

/// How many copies of a `bytes_per_call` working set keep rotation out of L2 (at most 256).
/// Below about 470 KB a call the cap binds and the rotated set stays within L2 (a 128-token
/// moe_gate cycles through 33 MB): those small-shape records are L2 times — as the op's are in
/// a model, where its inputs were written just before — not DRAM times.
pub fn rotation_copies(bytes_per_call: usize) -> usize {
    ROTATE_BYTES.div_ceil(bytes_per_call.max(1)).clamp(1, 256)
}

/// A device buffer of `len` random values in [lo, hi): a 16 Mi-element random block uploaded
/// repeatedly (large benchmark inputs without generating gigabytes on the host).
pub fn random_buffer<T: crate::DType>(dev: &Device, len: usize, lo: f64, hi: f64, seed: u64) -> Result<cudarc::driver::CudaSlice<T>> {
    let block: Vec<T> = crate::check::Rng::new(seed).vec(len.min(16 << 20), lo, hi);
    let mut buf = dev.zeros::<T>(len)?;
    let mut at = 0;
    while at < len {
        let n = block.len().min(len - at);
        dev.stream().memcpy_htod(&block[..n], &mut buf.slice_mut(at..at + n))?;
        at += n;
    }
    Ok(buf)
}

/// When the last [`time_calls`] ended (its warm-up is skipped right after another).
static LAST_TIMED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Per-call time from CUDA events.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median over the samples of the mean time per call, in µs.
    pub median_us: f64,
    /// Fastest sample's mean time per call, in µs.
    pub min_us: f64,
    /// Samples taken.
    pub samples: usize,
    /// Back-to-back calls in each sample (sized to ~0.5 ms).
    pub calls_per_sample: usize,
    /// The same calls replayed as one CUDA graph: median per call over `samples` replays, in µs
    /// (the device's own time, without the host's launch cost). Measured when the stream time
    /// is under [`GRAPH_BELOW_US`] on a capturable [`Device`] (`Device::new_capturable`, which
    /// `warpcore bench` opens unless `WARPCORE_BENCH_GRAPHS` is `off`); `None` otherwise, or
    /// when the calls cannot be captured (an op that synchronizes or allocates).
    pub graph_us: Option<f64>,
}

/// Calls whose stream time per call is under this are also timed as graph replays: where the
/// host's per-launch work (validation, the runtime's launch, ~2–5 µs) can exceed the kernel's.
pub const GRAPH_BELOW_US: f64 = 50.0;

/// Times `f` (which queues one call on the device's stream; its argument counts calls, for
/// rotating buffers). Warm-up (at least 20 ms of calls, unless another timing just ended),
/// then `samples` samples of back-to-back calls sized to ~0.5 ms each, timed with CUDA events;
/// returns the median and minimum per call. Short calls are then also timed as graph replays
/// ([`Timing::graph_us`]): one sample's worth of calls captured into one graph (each call with
/// its own count, so the buffers rotate as in the stream samples), replayed `samples` times.
pub fn time_calls(dev: &Device, samples: usize, f: impl FnMut(usize) -> Result<()>) -> Result<Timing> {
    time_calls_graph_below(dev, samples, GRAPH_BELOW_US, f)
}

/// [`time_calls`] with the stream time per call under which the calls are also replayed as a
/// graph (`f64::INFINITY`: always; 0: never).
pub fn time_calls_graph_below(dev: &Device, samples: usize, graph_below_us: f64, mut f: impl FnMut(usize) -> Result<()>) -> Result<Timing> {
    let stream = dev.stream();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let mut call = 0usize;
    let mut run = |n: usize, f: &mut dyn FnMut(usize) -> Result<()>| -> Result<f64> {
        let start = stream.record_event(flags)?;
        for _ in 0..n {
            f(call)?;
            call += 1;
        }
        let end = stream.record_event(flags)?;
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)? as f64 * 1e3)
    };
    run(3, &mut f)?;
    let one = run(1, &mut f)?.max(0.5);
    let per_sample = ((500.0 / one).ceil() as usize).clamp(1, 2000);
    // At least 20 ms of calls before the samples, so that microsecond-scale ops are not timed
    // while the clocks still rise from idle (a few samples' worth for the long ones); skipped
    // when the last timing ended under 50 ms ago (a tuning sweep's configurations, back to back).
    let warm_already = LAST_TIMED.lock().map(|t| t.is_some_and(|t| t.elapsed().as_millis() < 50)).unwrap_or(false);
    let mut warm = if warm_already { 20_000.0 } else { 0.0 };
    while warm < 20_000.0 {
        warm += run(per_sample, &mut f)?.max(1.0);
    }
    let mut times: Vec<f64> = (0..samples.max(1)).map(|_| run(per_sample, &mut f).map(|t| t / per_sample as f64)).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let median_us = times[times.len() / 2];
    let graph_us = if median_us < graph_below_us && dev.capturable() {
        time_graph(dev, per_sample, times.len(), &mut || {
            f(call)?;
            call += 1;
            Ok(())
        })
    } else {
        None
    };
    if let Ok(mut t) = LAST_TIMED.lock() {
        *t = Some(std::time::Instant::now());
    }
    Ok(Timing { median_us, min_us: times[0], samples: times.len(), calls_per_sample: per_sample, graph_us })
}

/// `calls` calls of `f` captured into one graph and replayed `samples` times (after one
/// untimed replay): the median per call, in µs. `None` (with a line on stderr) when the calls
/// cannot be captured or replayed; the capture is ended on every path, so the stream stays
/// usable.
fn time_graph(dev: &Device, calls: usize, samples: usize, f: &mut dyn FnMut() -> Result<()>) -> Option<f64> {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let stream = dev.stream();
    let graph = (|| -> Result<cudarc::driver::CudaGraph> {
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let queued = (0..calls).try_for_each(|_| f());
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        queued?;
        ended?.ok_or_else(|| crate::Error::Unsupported { op: "bench::time_calls", what: "captured graph", value: "empty".into() })
    })();
    let timed = graph.and_then(|graph| {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        graph.launch()?;
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples.max(1) {
            let start = stream.record_event(flags)?;
            graph.launch()?;
            let end = stream.record_event(flags)?;
            end.synchronize()?;
            times.push(start.elapsed_ms(&end)? as f64 * 1e3 / calls as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    });
    match timed {
        Ok(us) => Some(us),
        Err(e) => {
            eprintln!("warpcore bench: calls not timed as a CUDA graph: {e}");
            None
        }
    }
}

/// The ceilings measured on this GPU in this run.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    /// Device-to-device copy of 1 GiB, bytes read + written per second, in GB/s.
    pub copy_gbps: f64,
    /// cuBLAS bf16 GEMM 8192³ (f32 accumulate), TFLOP/s; None when cuBLAS is not available.
    pub gemm_bf16_tflops: Option<f64>,
}

/// Measures the copy bandwidth: cuMemcpyDtoDAsync of 1 GiB, counting bytes read plus written.
pub fn measure_copy_gbps(dev: &Device) -> Result<f64> {
    let len = 1usize << 30;
    let src = dev.zeros::<u8>(len)?;
    let mut dst = dev.zeros::<u8>(len)?;
    let t = time_calls(dev, 10, |_| Ok(dev.stream().memcpy_dtod(&src, &mut dst)?))?;
    Ok(2.0 * len as f64 / (t.median_us * 1e-6) / 1e9)
}

/// Measures cuBLAS bf16 GEMM (8192³, random inputs) through cudarc; None without cuBLAS.
#[cfg(feature = "cublas")]
pub fn measure_gemm_bf16_tflops(dev: &Device) -> Result<Option<f64>> {
    use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
    use half::bf16;
    // SAFETY: only tries to dlopen libcublas.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Ok(None);
    }
    let n = 8192usize;
    let host: Vec<bf16> = crate::check::Rng::new(1).vec(n * n, -1.0, 1.0);
    let a = dev.upload(&host)?;
    let b = dev.upload(&host)?;
    let mut c = dev.zeros::<bf16>(n * n)?;
    let blas = match CudaBlas::new(dev.stream().clone()) {
        Ok(b) => b,
        Err(_) => return Ok(None),
    };
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha: bf16::ONE,
        lda: n as i32,
        ldb: n as i32,
        beta: bf16::ZERO,
        ldc: n as i32,
    };
    let t = time_calls(dev, 10, |_| {
        // SAFETY: a, b, c hold n·n elements, matching m, n, k and the leading dimensions.
        unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(|e| crate::Error::Launch { op: "cublas gemm", code: e.0 as i32, name: format!("{e:?}") })
    })?;
    Ok(Some(2.0 * (n as f64).powi(3) / (t.median_us * 1e-6) / 1e12))
}

/// Another implementation of the same op, timed in the same run (e.g. PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct Alternative {
    /// What was timed, e.g. "torch" or "cuBLASLt FP8".
    pub name: String,
    /// Its time per call, in µs.
    pub time_us: f64,
    /// Alternative's time over ours (> 1: we are faster).
    pub speedup: f64,
}

/// One measured (op, dtype, shape).
#[derive(Clone, Debug)]
pub struct BenchRecord {
    /// The op's name, e.g. "rms_norm".
    pub op: String,
    /// The element type's short name, e.g. "bf16".
    pub dtype: String,
    /// The shape key, e.g. "16384x4096"; bench/compare_torch.py writes the same keys.
    pub shape: String,
    /// Median time per call, in µs (calls queued back to back on the stream).
    pub time_us: f64,
    /// Median time per call replayed as a CUDA graph, in µs ([`Timing::graph_us`]): the
    /// device's time without the host's launch cost; `None` when not measured.
    pub graph_us: Option<f64>,
    /// Bytes the op must move (each input read once, each output written once).
    pub bytes: f64,
    /// Floating-point operations (0 for bandwidth-bound ops).
    pub flops: f64,
    /// bytes / time, GB/s.
    pub gbps: f64,
    /// flops / time, TFLOP/s.
    pub tflops: f64,
    /// The achieved fraction of the binding ceiling (copy bandwidth or GEMM rate).
    pub fraction_of_ceiling: f64,
    /// Other implementations timed against this one in the same run.
    pub alternatives: Vec<Alternative>,
    /// What the bench found when it checked this shape's output after timing it ([`OutputCheck`]:
    /// sampled against the CPU reference, or whole against an alternative's); `None` when the
    /// record's bench does not check. A record whose output failed meets no bar.
    pub output: Option<OutputCheck>,
}

/// A bench's check of the output of the shape it timed, run once after the timing (the bars'
/// shapes take tiles, splits and paths the small shapes of `warpcore check` and the tests do
/// not reach; a kernel that skips work would otherwise run fast and meet its bar).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputCheck {
    /// Whether the output was within the check's bound.
    pub passed: bool,
    /// What was compared and the error found, e.g. "rows 0, 4095 of 4096 vs f64: rel Frobenius 3.1e-3".
    pub detail: String,
}

impl OutputCheck {
    /// The verdict of `warpcore check`'s comparisons (`crate::check`: the op's own error model,
    /// applied to the sampled part of the output `what` names): passed when every comparison
    /// passed; the detail names the first that failed, or the sample and its worst relative
    /// Frobenius error.
    pub fn of(what: &str, comparisons: &[crate::check::Comparison]) -> Self {
        match comparisons.iter().find(|c| !c.passed()) {
            Some(c) => Self { passed: false, detail: format!("{what}: {c}").replace('\n', " ") },
            None => {
                let worst = comparisons.iter().map(|c| c.rel_frobenius).fold(0.0, f64::max);
                Self { passed: true, detail: format!("{what}: passed, rel Frobenius {worst:.1e}") }
            }
        }
    }
}

impl BenchRecord {
    /// A bandwidth-bound op's record: fraction of the measured copy bandwidth.
    pub fn bandwidth(op: &'static str, dtype: &'static str, shape: String, t: Timing, bytes: f64, ceilings: &Ceilings) -> Self {
        let gbps = bytes / (t.median_us * 1e-6) / 1e9;
        Self {
            op: op.to_string(),
            dtype: dtype.to_string(),
            shape,
            time_us: t.median_us,
            graph_us: t.graph_us,
            bytes,
            flops: 0.0,
            gbps,
            tflops: 0.0,
            fraction_of_ceiling: gbps / ceilings.copy_gbps,
            alternatives: Vec::new(),
            output: None,
        }
    }

    /// A compute-bound op's record: fraction of the measured cuBLAS bf16 GEMM rate (NaN when
    /// cuBLAS was not available).
    pub fn compute(op: &'static str, dtype: &'static str, shape: String, t: Timing, bytes: f64, flops: f64, ceilings: &Ceilings) -> Self {
        let tflops = flops / (t.median_us * 1e-6) / 1e12;
        Self {
            op: op.to_string(),
            dtype: dtype.to_string(),
            shape,
            time_us: t.median_us,
            graph_us: t.graph_us,
            bytes,
            flops,
            gbps: bytes / (t.median_us * 1e-6) / 1e9,
            tflops,
            fraction_of_ceiling: ceilings.gemm_bf16_tflops.map_or(f64::NAN, |peak| tflops / peak),
            alternatives: Vec::new(),
            output: None,
        }
    }

    /// Adds an alternative measured in the same run.
    pub fn add_alternative(&mut self, name: &str, time_us: f64) {
        self.alternatives.push(Alternative { name: name.to_string(), time_us, speedup: time_us / self.time_us });
    }
}

/// What the process does with a sweep's records as they are measured ([`checkpoint`]):
/// `warpcore bench`'s per-family child rewrites its records file, so that the records measured
/// before a hang (the child killed at its time limit) are not lost with the process.
pub type Checkpoint = Box<dyn Fn(&[BenchRecord]) + Send>;

static CHECKPOINT: std::sync::Mutex<Option<Checkpoint>> = std::sync::Mutex::new(None);

/// Installs (Some) or removes (None) the process's [`Checkpoint`].
pub fn set_checkpoint(f: Option<Checkpoint>) {
    *CHECKPOINT.lock().unwrap_or_else(|e| e.into_inner()) = f;
}

/// Hands every record measured so far (the whole vector the sweep was given: a family's
/// `bench_all` / `tune_all` output) to the process's [`Checkpoint`]; a no-op without one. A
/// sweep calls it after each step whose records a later hang must not cost.
pub fn checkpoint(records: &[BenchRecord]) {
    if let Some(f) = CHECKPOINT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        f(records);
    }
}

/// `warpcore bench --tune`'s report from tuning records (keyed `"<shape> | <configuration>"`,
/// the planner's pick ending in " (plan)"): per (op, shape), its configurations fastest first
/// with time, rate and speed-up over the plan, then what the best gains over the plan.
pub fn tune_report(records: &[BenchRecord]) -> String {
    let shape_of = |r: &BenchRecord| r.shape.split(" | ").next().unwrap_or("").to_string();
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in records {
        let k = (r.op.clone(), shape_of(r));
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut s = String::new();
    for (op, shape) in keys {
        let mut rows: Vec<&BenchRecord> = records.iter().filter(|r| r.op == op && shape_of(r) == shape).collect();
        rows.sort_by(|a, b| a.time_us.total_cmp(&b.time_us));
        let config = |r: &BenchRecord| r.shape.split(" | ").nth(1).unwrap_or("").to_string();
        let plan = rows.iter().find(|r| r.shape.ends_with(" (plan)")).map(|r| r.time_us);
        s += &format!("\n### {op} {shape}\n\n| configuration | time µs | GB/s | TFLOP/s | vs plan |\n|---|---:|---:|---:|---:|\n");
        for r in &rows {
            let tflops = if r.flops > 0.0 { format!("{:.0}", r.tflops) } else { "-".into() };
            let vs = plan.map_or("-".into(), |p| format!("{:.3}×", p / r.time_us));
            s += &format!("| {} | {:.2} | {:.0} | {tflops} | {vs} |\n", config(r), r.time_us, r.gbps);
        }
        s += &match (plan, rows.first()) {
            (Some(p), Some(best)) if best.time_us < p => format!("\nBest: {} ({:.1}% faster than the plan).\n", config(best), 100.0 * (p / best.time_us - 1.0)),
            (Some(_), _) => "\nBest: the plan.\n".to_string(),
            (None, _) => "\nNo record of the plan's configuration.\n".to_string(),
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_covers_the_cache() {
        assert_eq!(rotation_copies(1 << 20), 120);
        assert_eq!(rotation_copies(512 << 20), 1);
        assert_eq!(rotation_copies(1), 256);
    }

    #[test]
    fn the_tune_report_groups_by_shape_fastest_first() {
        let t = |us| Timing { median_us: us, min_us: us, samples: 1, calls_per_sample: 1, graph_us: None };
        let c = Ceilings { copy_gbps: 4000.0, gemm_bf16_tflops: None };
        let rec = |shape: &str, us| BenchRecord::compute("matmul_fp8", "e4m3", shape.to_string(), t(us), 1e6, 2e9, &c);
        let records = [rec("s1 | a (plan)", 10.0), rec("s1 | b", 8.0), rec("s2 | a", 5.0), rec("s2 | b (plan)", 4.0), rec("s1 | c", 12.0)];
        let r = tune_report(&records);
        let s1 = r.find("### matmul_fp8 s1").unwrap();
        let s2 = r.find("### matmul_fp8 s2").unwrap();
        assert!(s1 < s2, "{r}");
        let (b, a, cc) = (r.find("| b | 8.00").unwrap(), r.find("| a (plan) | 10.00").unwrap(), r.find("| c | 12.00").unwrap());
        assert!(s1 < b && b < a && a < cc && cc < s2, "{r}");
        assert!(r.contains("| b | 8.00 | 125 | 250 | 1.250× |"), "{r}");
        assert!(r.contains("Best: b (25.0% faster than the plan)."), "{r}");
        assert!(r[s2..].contains("Best: the plan."), "{r}");
    }
}
