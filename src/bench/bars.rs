//! The issues' performance bars as data, checked against one `warpcore bench` run. Each bar
//! names the record it reads — op, dtype and shape key exactly as the family's `bench_all`
//! writes them — and a rule; [`check`](crate::bench::bars::check) gives one verdict per bar: met, missed (by how much), or
//! not measured (the record is absent: a filtered run, a failed benchmark, or a bar whose shape
//! the bench does not run, which the unit test below rules out for the full run).
//! `warpcore bench` appends the table to bench.md and the verdicts to bench.json.

use super::BenchRecord;

/// What a bar asks of its record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// At least this fraction of the copy bandwidth measured in the same run.
    MinCopyFraction(f64),
    /// At most this many microseconds per call.
    MaxTimeUs(f64),
    /// At least this many GB/s of the bytes the op must move.
    MinGbps(f64),
    /// At least this many TFLOP/s.
    MinTflops(f64),
    /// At least `factor` times faster than the alternative whose name is `alternative`
    /// (measured in the same run).
    MinSpeedup {
        /// The [`super::Alternative`]'s name in the record.
        alternative: &'static str,
        /// The required speed-up: the alternative's time over ours.
        factor: f64,
    },
}

/// One bar of one issue.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// The issue number that set the bar.
    pub issue: u32,
    /// The record's op, as [`BenchRecord::op`].
    pub op: &'static str,
    /// The record's dtype, as [`BenchRecord::dtype`].
    pub dtype: &'static str,
    /// The record's shape key, as [`BenchRecord::shape`].
    pub shape: &'static str,
    /// What the record must achieve.
    pub rule: Rule,
}

const fn bar(issue: u32, op: &'static str, dtype: &'static str, shape: &'static str, rule: Rule) -> Bar {
    Bar { issue, op, dtype, shape, rule }
}

use Rule::*;

/// Every bar of issues 2–6 that one `warpcore bench` run measures. (Issue 7's bar, decode at
/// batch 1 ≥ 3× transformers, is judged on the model bench's own table.)
pub const BARS: &[Bar] = &[
    // Issue 2: RMSNorm.
    bar(2, "rms_norm", "bf16", "16384x4096", MinCopyFraction(0.90)),
    bar(2, "rms_norm", "bf16", "16384x8192", MinCopyFraction(0.90)),
    bar(2, "fused_add_rms_norm", "bf16", "16384x4096", MinCopyFraction(0.85)),
    bar(2, "fused_add_rms_norm", "bf16", "16384x8192", MinCopyFraction(0.85)),
    bar(2, "rms_norm", "bf16", "64x4096", MaxTimeUs(5.0)),
    // Issue 3: RoPE and the paged KV cache.
    bar(3, "rope", "bf16", "16384x32+8x128", MinCopyFraction(0.85)),
    bar(3, "append_kv", "bf16", "16384x8x128/p16", MinCopyFraction(0.85)),
    bar(3, "rope_append_kv", "bf16", "16384x32+8x128/p16", MinCopyFraction(0.85)),
    // Issue 4: MoE routing (the gate bars for both logit dtypes the bench runs).
    bar(4, "moe_gate", "f32", "16384x256 top8 softmax", MaxTimeUs(10.0)),
    bar(4, "moe_gate", "bf16", "16384x256 top8 softmax", MaxTimeUs(10.0)),
    bar(4, "moe_gate", "f32", "16384x256 top8 sigmoid g8/4", MaxTimeUs(12.0)),
    bar(4, "moe_gate", "bf16", "16384x256 top8 sigmoid g8/4", MaxTimeUs(12.0)),
    bar(4, "moe_gate", "f32", "128x256 top8 softmax", MaxTimeUs(4.0)),
    bar(4, "moe_gate", "bf16", "128x256 top8 softmax", MaxTimeUs(4.0)),
    bar(4, "moe_gate", "f32", "128x256 top8 sigmoid g8/4", MaxTimeUs(4.0)),
    bar(4, "moe_gate", "bf16", "128x256 top8 sigmoid g8/4", MaxTimeUs(4.0)),
    bar(4, "moe_align", "i32", "16384x8 e256 bm64", MaxTimeUs(15.0)),
    bar(4, "moe_gather", "bf16", "4096x7168 top8 e256 bm128", MinCopyFraction(0.80)),
    bar(4, "moe_gather", "bf16", "16384x2048 top8 e128 bm128", MinCopyFraction(0.80)),
    bar(4, "moe_combine", "bf16", "4096x7168 top8 e256 bm128", MinCopyFraction(0.80)),
    bar(4, "moe_combine", "bf16", "16384x2048 top8 e128 bm128", MinCopyFraction(0.80)),
    // Issue 5: GQA attention (decode: GB/s of K/V bytes).
    bar(5, "attention_decode", "bf16", "b64 kv4096 page16", MinGbps(3600.0)),
    bar(5, "attention_decode", "bf16", "b64 kv4096 page64", MinGbps(3600.0)),
    bar(5, "attention_decode", "bf16", "b16 kv32768 page16", MinGbps(3700.0)),
    bar(5, "attention_decode", "bf16", "b16 kv32768 page64", MinGbps(3700.0)),
    bar(5, "attention_decode", "bf16", "b1 kv131072 page16", MinGbps(3000.0)),
    bar(5, "attention_decode", "bf16", "b1 kv131072 page64", MinGbps(3000.0)),
    // Prefill: 350 TFLOP/s "with the portable path" (mma.sync); the Hopper path's goal is 700.
    bar(5, "attention_prefill", "bf16", "b1 q16384 causal", MinTflops(350.0)),
    bar(5, "attention_prefill", "bf16", "b4 q4096 causal", MinTflops(350.0)),
    bar(5, "attention_prefill", "bf16", "b1 q16384 causal wgmma", MinTflops(700.0)),
    bar(5, "attention_prefill", "bf16", "b4 q4096 causal wgmma", MinTflops(700.0)),
    // Issue 6: FP8 GEMM (each accumulation against cuBLASLt in the same mode) and quantization.
    bar(6, "matmul_fp8", "e4m3", "4096x7168x2048 row", MinSpeedup { alternative: "cuBLASLt FP8", factor: 1.15 }),
    bar(6, "matmul_fp8", "e4m3", "4096x7168x2048 row fast", MinSpeedup { alternative: "cuBLASLt FP8 (fast accum)", factor: 1.15 }),
    bar(6, "matmul_fp8", "e4m3", "8192x8192x8192 tensor", MinTflops(1500.0)),
    bar(6, "matmul_fp8", "e4m3", "8192x8192x8192 tensor fast", MinTflops(1500.0)),
    bar(6, "matmul_fp8", "e4m3", "128x7168x2048 row", MinSpeedup { alternative: "cuBLASLt FP8", factor: 2.0 }),
    bar(6, "matmul_fp8", "e4m3", "128x7168x2048 row fast", MinSpeedup { alternative: "cuBLASLt FP8 (fast accum)", factor: 2.0 }),
    bar(6, "matmul_fp8", "e4m3", "4096x7168x16384 block", MinTflops(1350.0)),
    bar(6, "quantize_fp8", "bf16", "4096x7168 tensor", MinCopyFraction(0.85)),
    bar(6, "quantize_fp8", "bf16", "4096x7168 row", MinCopyFraction(0.85)),
    bar(6, "quantize_fp8", "bf16", "4096x7168 group128", MinCopyFraction(0.85)),
    bar(6, "quantize_fp8", "bf16", "7168x2048 block128", MinCopyFraction(0.85)),
    bar(6, "quantize_fp8", "bf16", "18432x7168 block128", MinCopyFraction(0.85)),
    bar(6, "rms_norm_quant_fp8", "bf16", "4096x7168 row", MinSpeedup { alternative: "rms_norm + quantize_fp8", factor: 1.0 }),
    bar(6, "rms_norm_quant_fp8", "bf16", "4096x7168 group128", MinSpeedup { alternative: "rms_norm + quantize_fp8", factor: 1.0 }),
    bar(6, "fused_add_rms_norm_quant_fp8", "bf16", "4096x7168 row", MinSpeedup { alternative: "fused_add_rms_norm + quantize_fp8", factor: 1.0 }),
    bar(6, "fused_add_rms_norm_quant_fp8", "bf16", "4096x7168 group128", MinSpeedup { alternative: "fused_add_rms_norm + quantize_fp8", factor: 1.0 }),
];

/// A bar's outcome in one run.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The bar judged.
    pub bar: Bar,
    /// The measured quantity in the rule's unit (fraction, µs, GB/s, TFLOP/s, or speed-up);
    /// `None` when the record (or the alternative) was not measured.
    pub measured: Option<f64>,
    /// measured ÷ required for "at least" rules, required ÷ measured for "at most": ≥ 1 is met.
    pub ratio: Option<f64>,
    /// For a time bar, the record's time replayed as a CUDA graph ([`BenchRecord::graph_us`]),
    /// shown beside the verdict, which reads the stream time: where the stream time misses a
    /// bar the graph time meets, the miss is the host's launch cost, not the kernel's.
    pub graph_us: Option<f64>,
    /// The record's output check, when its bench made one ([`crate::bench::OutputCheck`]): a
    /// failed one makes the verdict "output wrong" whatever the time.
    pub output: Option<crate::bench::OutputCheck>,
}

impl Verdict {
    /// Whether the bar was met; `None` when it was not measured.
    pub fn met(&self) -> Option<bool> {
        if self.output.as_ref().is_some_and(|o| !o.passed) {
            return Some(false);
        }
        self.ratio.map(|r| r >= 1.0)
    }
}

impl Rule {
    /// The required value and the unit it is written in.
    fn required(self) -> (f64, &'static str) {
        match self {
            MinCopyFraction(f) => (f, "of copy"),
            MaxTimeUs(t) => (t, "µs"),
            MinGbps(g) => (g, "GB/s"),
            MinTflops(t) => (t, "TFLOP/s"),
            MinSpeedup { factor, .. } => (factor, "×"),
        }
    }

    fn describe(self) -> String {
        match self {
            MinCopyFraction(f) => format!("≥ {:.0}% of copy", f * 100.0),
            MaxTimeUs(t) => format!("≤ {t} µs"),
            MinGbps(g) => format!("≥ {g:.0} GB/s"),
            MinTflops(t) => format!("≥ {t:.0} TFLOP/s"),
            MinSpeedup { alternative, factor } => format!("≥ {factor}× {alternative}"),
        }
    }

    fn measure(self, r: &BenchRecord) -> Option<f64> {
        let v = match self {
            MinCopyFraction(_) => r.fraction_of_ceiling,
            MaxTimeUs(_) => r.time_us,
            MinGbps(_) => r.gbps,
            MinTflops(_) => r.tflops,
            MinSpeedup { alternative, .. } => r.alternatives.iter().find(|a| a.name == alternative)?.speedup,
        };
        v.is_finite().then_some(v)
    }
}

/// One verdict per bar of [`BARS`], from the records of one run.
pub fn check(records: &[BenchRecord]) -> Vec<Verdict> {
    BARS.iter()
        .map(|&bar| {
            let record = records.iter().find(|r| r.op == bar.op && r.dtype == bar.dtype && r.shape == bar.shape);
            let measured = record.and_then(|r| bar.rule.measure(r));
            let (required, _) = bar.rule.required();
            let ratio = measured.map(|m| if matches!(bar.rule, MaxTimeUs(_)) { required / m } else { m / required });
            let graph_us = if matches!(bar.rule, MaxTimeUs(_)) { record.and_then(|r| r.graph_us) } else { None };
            Verdict { bar, measured, ratio, graph_us, output: record.and_then(|r| r.output.clone()) }
        })
        .collect()
}

/// The verdicts as a markdown table (a count line, then one row per bar).
pub fn to_markdown(verdicts: &[Verdict]) -> String {
    let met = verdicts.iter().filter(|v| v.met() == Some(true)).count();
    let missed = verdicts.iter().filter(|v| v.met() == Some(false)).count();
    let absent = verdicts.len() - met - missed;
    let mut md = format!("Bars: {met} met, {missed} missed, {absent} not measured (of {}).\n\n", verdicts.len());
    md += "| issue | op | dtype | shape | bar | measured | verdict |\n|---:|---|---|---|---|---:|---|\n";
    for v in verdicts {
        let b = &v.bar;
        let (_, unit) = b.rule.required();
        let measured = match (v.measured, b.rule) {
            (None, _) => "-".to_string(),
            (Some(m), MinCopyFraction(_)) => format!("{:.1}% of copy", m * 100.0),
            (Some(m), MinSpeedup { .. }) => format!("{m:.2}×"),
            (Some(m), _) => format!("{m:.1} {unit}"),
        };
        let measured = match v.graph_us {
            Some(g) => format!("{measured} (graph {g:.1} µs)"),
            None => measured,
        };
        let verdict = match (&v.output, v.ratio) {
            (Some(o), _) if !o.passed => format!("output wrong ({})", o.detail),
            (_, None) => "not measured".to_string(),
            (o, Some(r)) => {
                let checked = if o.is_some() { ", output checked" } else { "" };
                if r >= 1.0 { format!("met{checked}") } else { format!("missed ({:.0}% of the bar{checked})", r * 100.0) }
            }
        };
        md += &format!("| {} | {} | {} | `{}` | {} | {} | {} |\n", b.issue, b.op, b.dtype, b.shape, b.rule.describe(), measured, verdict);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Alternative, BenchRecord};

    fn record(op: &'static str, dtype: &'static str, shape: &str) -> BenchRecord {
        BenchRecord {
            op: op.to_string(),
            dtype: dtype.to_string(),
            shape: shape.to_string(),
            time_us: 8.0,
            graph_us: None,
            bytes: 0.0,
            flops: 0.0,
            gbps: 3650.0,
            tflops: 300.0,
            fraction_of_ceiling: 0.87,
            alternatives: vec![Alternative { name: "cuBLASLt FP8".into(), time_us: 20.0, speedup: 2.5 }],
            output: None,
        }
    }

    #[test]
    fn each_rule_reads_its_quantity_and_direction() {
        let recs = [
            record("rms_norm", "bf16", "16384x4096"),        // 87% < 90%: missed
            record("fused_add_rms_norm", "bf16", "16384x4096"), // 87% ≥ 85%: met
            record("rms_norm", "bf16", "64x4096"),           // 8 µs > 5 µs: missed
            record("moe_gate", "f32", "16384x256 top8 softmax"), // 8 µs ≤ 10: met
            record("attention_decode", "bf16", "b64 kv4096 page16"), // 3650 ≥ 3600: met
            record("attention_prefill", "bf16", "b1 q16384 causal"), // 300 < 350: missed
            record("matmul_fp8", "e4m3", "128x7168x2048 row"), // 2.5× ≥ 2×: met
            record("matmul_fp8", "e4m3", "128x7168x2048 row fast"), // no fast-accum alternative
        ];
        let v = check(&recs);
        let get = |op: &str, shape: &str| v.iter().find(|v| v.bar.op == op && v.bar.shape == shape).unwrap();
        assert_eq!(get("rms_norm", "16384x4096").met(), Some(false));
        assert_eq!(get("fused_add_rms_norm", "16384x4096").met(), Some(true));
        let small = get("rms_norm", "64x4096");
        assert_eq!((small.met(), small.ratio), (Some(false), Some(5.0 / 8.0)));
        assert_eq!(get("moe_gate", "16384x256 top8 softmax").met(), Some(true));
        assert_eq!(get("attention_decode", "b64 kv4096 page16").met(), Some(true));
        assert_eq!(get("attention_prefill", "b1 q16384 causal").met(), Some(false));
        assert_eq!(get("matmul_fp8", "128x7168x2048 row").met(), Some(true));
        assert_eq!(get("matmul_fp8", "128x7168x2048 row fast").met(), None);
        assert_eq!(get("rms_norm", "16384x8192").met(), None);
        let md = to_markdown(&v);
        assert!(md.starts_with(&format!("Bars: 4 met, 3 missed, {} not measured (of {}).", BARS.len() - 7, BARS.len())), "{md}");
        assert!(md.contains("| 2 | rms_norm | bf16 | `64x4096` | ≤ 5 µs | 8.0 µs | missed (62% of the bar) |"), "{md}");
    }

    /// A record whose output check failed meets no bar, however fast; a passed check is shown
    /// beside the verdict; an unchecked record is judged on its numbers as before.
    #[test]
    fn a_wrong_output_meets_no_bar() {
        use crate::bench::OutputCheck;
        let mut fast = record("fused_add_rms_norm", "bf16", "16384x4096"); // 87% ≥ 85%
        fast.output = Some(OutputCheck { passed: false, detail: "rows 0, 16383 vs f64: rel Frobenius 1.0".into() });
        let v = check(&[fast.clone()]);
        let got = v.iter().find(|v| v.bar.op == "fused_add_rms_norm" && v.bar.shape == "16384x4096").unwrap();
        assert_eq!(got.met(), Some(false));
        assert!(to_markdown(&v).contains("output wrong (rows 0, 16383 vs f64: rel Frobenius 1.0)"));
        // From the check module's comparisons: a row off by 10 % fails, the exact one passes.
        let want = [1.0, 2.0, 3.0, 4.0];
        let wrong = crate::check::compare("out", &[1.0f32, 2.0, 3.3, 4.0], &want, crate::check::tolerance::<f32>());
        let right = crate::check::compare("out", &[1.0f32, 2.0, 3.0, 4.0], &want, crate::check::tolerance::<f32>());
        assert!(!OutputCheck::of("rows 0, 1", &[right.clone(), wrong]).passed);
        assert!(OutputCheck::of("rows 0, 1", &[right]).passed);
        fast.output = Some(OutputCheck { passed: true, detail: "ok".into() });
        let v = check(&[fast]);
        assert!(to_markdown(&v).contains("| met, output checked |"), "{}", to_markdown(&v));
    }

    /// A time bar is judged on the stream time and shows the graph time beside it; other rules
    /// do not show it.
    #[test]
    fn time_bars_show_the_graph_time_but_judge_the_stream_time() {
        let mut small = record("rms_norm", "bf16", "64x4096");
        small.graph_us = Some(3.25);
        let mut big = record("rms_norm", "bf16", "16384x4096");
        big.graph_us = Some(7.0);
        let v = check(&[small, big]);
        let get = |shape: &str| v.iter().find(|v| v.bar.op == "rms_norm" && v.bar.shape == shape).unwrap();
        assert_eq!((get("64x4096").met(), get("64x4096").graph_us), (Some(false), Some(3.25)));
        assert_eq!(get("16384x4096").graph_us, None);
        let md = to_markdown(&v);
        assert!(md.contains("| ≤ 5 µs | 8.0 µs (graph 3.2 µs) | missed (62% of the bar) |"), "{md}");
        assert!(md.contains("| `16384x4096` | ≥ 90% of copy | 87.0% of copy | missed"), "{md}");
    }

    /// The gate and GEMM bars' keys are the ones the benches' own key functions write.
    #[test]
    #[cfg(all(feature = "moe-routing", feature = "matmul-fp8"))]
    fn gate_and_gemm_bar_keys_match_the_bench_key_functions() {
        use crate::bench::{matmul_fp8, moe_routing};
        use crate::ops::moe_routing::MoeGateConfig;
        let mut keys = Vec::new();
        for tokens in [16384, 128] {
            for cfg in [MoeGateConfig::softmax_topk(true), MoeGateConfig::deepseek_v3(8, 4, 2.5)] {
                keys.push(("moe_gate", moe_routing::gate_shape(tokens, 256, 8, &cfg)));
            }
        }
        for fast in [false, true] {
            for (m, n, k, s) in [(4096, 7168, 2048, matmul_fp8::PER_ROW), (8192, 8192, 8192, matmul_fp8::PER_TENSOR), (128, 7168, 2048, matmul_fp8::PER_ROW)] {
                keys.push(("matmul_fp8", matmul_fp8::shape_key(m, n, k, s, fast)));
            }
        }
        keys.push(("matmul_fp8", matmul_fp8::shape_key(4096, 7168, 16384, matmul_fp8::BLOCK, false)));
        for b in BARS.iter().filter(|b| b.op == "moe_gate" || b.op == "matmul_fp8") {
            assert!(keys.iter().any(|(op, shape)| *op == b.op && shape == b.shape), "no benchmark writes {b:?}");
        }
        assert_eq!(BARS.iter().filter(|b| b.op == "moe_gate" || b.op == "matmul_fp8").count(), 15);
    }
}
