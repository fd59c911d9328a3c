//! What a family's child process hands back to the parent (`warpcore check` / `bench` with one
//! process per family, families.rs): check rows and bench records as JSON, and the ceilings the
//! parent measured, passed down as `--ceilings`.

use serde_json::{json, Value};
use warpcore::bench::{self, BenchRecord, Ceilings};
use warpcore::check::CheckResult;

/// One row of `warpcore check`'s table (from this process's checks or a child's JSON).
pub struct CheckRow {
    pub op: String,
    pub dtype: String,
    pub shape: String,
    pub worst_abs: f64,
    pub rel_frobenius: f64,
    pub passed: bool,
    /// The full comparison text (printed for failures).
    pub text: String,
}

impl CheckRow {
    pub fn of(r: &CheckResult) -> Self {
        CheckRow {
            op: r.op.to_string(),
            dtype: r.dtype.to_string(),
            shape: r.shape.clone(),
            worst_abs: r.comparisons.iter().map(|c| c.max_abs_err).fold(0.0, f64::max),
            rel_frobenius: r.comparisons.iter().map(|c| c.rel_frobenius).fold(0.0, f64::max),
            passed: r.passed(),
            text: r.to_string(),
        }
    }
    pub fn to_json(&self) -> Value {
        json!({"op": self.op, "dtype": self.dtype, "shape": self.shape, "worst_abs": self.worst_abs,
               "rel_frobenius": self.rel_frobenius, "passed": self.passed, "text": self.text})
    }
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(CheckRow {
            op: v["op"].as_str()?.into(),
            dtype: v["dtype"].as_str()?.into(),
            shape: v["shape"].as_str()?.into(),
            worst_abs: v["worst_abs"].as_f64().unwrap_or(f64::NAN),
            rel_frobenius: v["rel_frobenius"].as_f64().unwrap_or(f64::NAN),
            passed: v["passed"].as_bool()?,
            text: v["text"].as_str()?.into(),
        })
    }
}

/// The ceilings as `--ceilings` passes them: COPY_GBPS,GEMM_TFLOPS (GEMM `-`: none). Rust's
/// float formatting round-trips, so a child judges against exactly the parent's numbers.
pub fn ceilings_arg(c: &Ceilings) -> String {
    format!("{},{}", c.copy_gbps, c.gemm_bf16_tflops.map_or("-".to_string(), |t| t.to_string()))
}

/// `--ceilings` back into numbers.
pub fn parse_ceilings(s: &str) -> Result<Ceilings, String> {
    let bad = || format!("--ceilings {s:?}: expected COPY_GBPS,GEMM_TFLOPS (GEMM may be -)");
    let (copy, gemm) = s.split_once(',').ok_or_else(bad)?;
    Ok(Ceilings {
        copy_gbps: copy.trim().parse().map_err(|_| bad())?,
        gemm_bf16_tflops: match gemm.trim() {
            "-" => None,
            g => Some(g.parse().map_err(|_| bad())?),
        },
    })
}

pub fn record_to_json(r: &BenchRecord) -> Value {
    json!({
        "op": r.op, "dtype": r.dtype, "shape": r.shape, "time_us": r.time_us, "graph_us": r.graph_us,
        "bytes": r.bytes, "flops": r.flops, "gbps": r.gbps, "tflops": r.tflops,
        "fraction_of_ceiling": r.fraction_of_ceiling,
        "alternatives": r.alternatives.iter().map(|a| json!({
            "name": a.name, "time_us": a.time_us, "speedup": a.speedup,
        })).collect::<Vec<_>>(),
        "output": r.output.as_ref().map(|o| json!({ "passed": o.passed, "detail": o.detail })),
    })
}

/// A record as record_to_json wrote it (a child's), with the alternatives its bench timed (the
/// parent adds --compare's).
pub fn record_from_json(v: &Value) -> Option<BenchRecord> {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN); // serde_json writes NaN as null
    let alternatives = v["alternatives"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some(bench::Alternative { name: a["name"].as_str()?.into(), time_us: a["time_us"].as_f64()?, speedup: a["speedup"].as_f64()? }))
        .collect();
    Some(BenchRecord {
        op: v["op"].as_str()?.into(),
        dtype: v["dtype"].as_str()?.into(),
        shape: v["shape"].as_str()?.into(),
        time_us: v["time_us"].as_f64()?,
        graph_us: v["graph_us"].as_f64(),
        bytes: f("bytes"),
        flops: f("flops"),
        gbps: f("gbps"),
        tflops: f("tflops"),
        fraction_of_ceiling: f("fraction_of_ceiling"),
        alternatives,
        output: v["output"]["passed"].as_bool().map(|passed| bench::OutputCheck { passed, detail: v["output"]["detail"].as_str().unwrap_or("").into() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child's records reach the parent whole: the alternatives its bench timed (the fused
    /// norm + quant bars are judged on one) and a NaN fraction (no cuBLAS) included.
    #[test]
    fn bench_records_survive_the_trip_from_a_child() {
        let mut r = BenchRecord {
            op: "rms_norm_quant_fp8".into(),
            dtype: "bf16".into(),
            shape: "4096x7168 row".into(),
            time_us: 21.5,
            graph_us: Some(19.25),
            bytes: 1e8,
            flops: 0.0,
            gbps: 3100.0,
            tflops: 0.0,
            fraction_of_ceiling: f64::NAN,
            alternatives: Vec::new(),
            output: Some(bench::OutputCheck { passed: false, detail: "rows 0, 7 vs f64: rel Frobenius 0.5".into() }),
        };
        r.add_alternative("rms_norm + quantize_fp8", 30.0);
        let back = record_from_json(&serde_json::from_str(&serde_json::to_string(&record_to_json(&r)).unwrap()).unwrap()).unwrap();
        assert_eq!((back.op.as_str(), back.dtype.as_str(), back.shape.as_str()), (r.op.as_str(), r.dtype.as_str(), r.shape.as_str()));
        assert_eq!((back.time_us, back.graph_us, back.bytes, back.gbps), (r.time_us, r.graph_us, r.bytes, r.gbps));
        assert!(back.fraction_of_ceiling.is_nan());
        assert_eq!(back.alternatives, r.alternatives);
        assert_eq!(back.output, r.output);
        for c in [Ceilings { copy_gbps: 4061.123456789, gemm_bf16_tflops: None }, Ceilings { copy_gbps: 4061.25, gemm_bf16_tflops: Some(712.0 / 3.0) }] {
            let back = parse_ceilings(&ceilings_arg(&c)).unwrap();
            assert_eq!((back.copy_gbps, back.gemm_bf16_tflops), (c.copy_gbps, c.gemm_bf16_tflops));
        }
        assert!(parse_ceilings("4061").is_err());
    }
}
