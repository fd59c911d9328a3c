//! FP8 GEMM benchmarks at the shapes, with cuBLASLt FP8 (feature `cublaslt`) timed in
//! the same run as the alternative. FLOPs = 2·m·n·k; bytes = a + b (1 B/element) + D (bf16) +
//! scales. Records are keyed `m x n x k <scales>[ fast]` (bench/compare_torch.py writes the
//! same keys for torch._scaled_mm).

use super::{random_buffer, rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck, Timing};
use crate::check::{compare_bounded, compare_row_frobenius, Comparison};
use crate::reference::matmul_fp8::{group_rows, matmul_f64, MatmulRef};
use cudarc::driver::CudaSlice;
use crate::ops::matmul_fp8::{
    is_unmeasured, matmul_fp8, matmul_fp8_grouped, matmul_grouped, plan_sm90, scaling_mode, sm90_candidates, Accumulation, Fp8Operand, GemmInput, GemmKernel, MatmulFp8Config,
    MatmulFp8Problem, TileConfig, TUNING_BUILT,
};
use crate::ops::quant::ScaleGranularity;
use crate::{Device, Result, TensorView, TensorViewMut, F8E4M3};
use half::bf16;

const SAMPLES: usize = 15;

/// The output rows a bench checks after timing: every row when m ≤ 32, else rows 0, 1, m/2 and
/// m − 1 (the first and last tiles, and one in the middle).
fn sample_rows(m: usize) -> Vec<usize> {
    let mut rows = if m <= 32 { (0..m).collect() } else { vec![0, 1, m / 2, m - 1] };
    rows.dedup();
    rows
}

/// How an output check names its sample: "rows 0, 1, 2048, 4095 of 4096 vs f64" or "all 32 rows vs f64".
fn rows_label(rows: &[usize], m: usize) -> String {
    if rows.len() == m {
        format!("all {m} rows vs f64")
    } else {
        format!("rows {} of {m} vs f64", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
    }
}

/// Rows `rows` (each `cols` long) of a device buffer, concatenated; queued work first.
fn download_rows<T: cudarc::driver::DeviceRepr + Copy>(dev: &Device, buf: &CudaSlice<T>, rows: &[usize], cols: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend(dev.download(&buf.slice(r * cols..(r + 1) * cols))?);
    }
    Ok(out)
}

/// The e4m3 codes of rows `rows` (concatenated, `k` each) of a `[total, k]` operand, times their
/// scales (`g`'s dense row-major scale tensor of the whole operand), in f64 (exact).
fn dequantize_rows(codes: &[F8E4M3], rows: &[usize], total: usize, k: usize, g: ScaleGranularity, scale: &[f32]) -> Vec<f64> {
    let (br, bc) = g.block(total, k);
    let cols = g.scale_shape(total, k)[1];
    assert_eq!(codes.len(), rows.len() * k, "codes must be [rows, k]");
    let mut out = Vec::with_capacity(codes.len());
    for (row, &r) in codes.chunks_exact(k.max(1)).zip(rows) {
        let srow = &scale[(r / br) * cols..];
        out.extend(row.iter().enumerate().map(|(c, q)| q.to_f64() * srow[c / bc] as f64));
    }
    out
}

/// `check::matmul_fp8`'s error model for a bf16 output: (rtol, u, Frobenius limit). `u` scales
/// `Σ|a·b|`: `(k/32)·2⁻¹²` for Hopper's fast accumulation (wgmma, not block-scaled), else
/// `max(2⁻¹¹, k·2⁻²⁴)`; the limit `2⁻⁸`, or fast accumulation's `(k/32)·2⁻¹⁴` when larger.
fn fp8_tolerance(k: usize, fast_wgmma: bool) -> (f64, f64, f64) {
    let steps = (k / 32) as f64;
    let u = if fast_wgmma { steps * 2f64.powi(-12) } else { 2f64.powi(-11).max(k as f64 * 2f64.powi(-24)) };
    let frob = if fast_wgmma { 2f64.powi(-8).max(steps * 2f64.powi(-14)) } else { 2f64.powi(-8) };
    (2f64.powi(-8), u, frob)
}

/// Sampled output rows `got` (`[rows, n]`, the rows `want` holds) against the reference, as
/// `check::matmul_fp8`'s `compare_gemm` compares whole outputs: each element within
/// `rtol·|ref| + u·Σ|a·b|` (NaN, i.e. poison left in, never passes), the sample's relative
/// Frobenius error within `frob`, and each row's within `2·frob`.
fn compare_sampled(got: &[bf16], want: &MatmulRef, n: usize, (rtol, u, frob): (f64, f64, f64)) -> Vec<Comparison> {
    let bound: Vec<f64> = want.out.iter().zip(&want.magnitude).map(|(w, g)| rtol * w.abs() + u * g).collect();
    vec![
        compare_bounded("out (sampled rows)", got, &want.out, &bound, frob).in_rows(n),
        compare_row_frobenius("out rows (Frobenius per row)", got, &want.out, n, 2.0 * frob),
    ]
}

/// The rows a grouped bench checks, each with its group: the first and the last row, and the
/// middle row of the first non-empty group from a quarter, half and three quarters of the way
/// through the groups (rows in no group, which the kernels leave untouched, are not sampled).
fn grouped_sample(offsets: &[i32], m: usize) -> Vec<(usize, usize)> {
    let ranges = group_rows(offsets, m);
    let g = ranges.len();
    let mut rows = vec![0, m.saturating_sub(1)];
    for start in [g / 4, g / 2, 3 * g / 4] {
        if let Some(r) = ranges[start..].iter().find(|r| !r.is_empty()) {
            rows.push(r.start + r.len() / 2);
        }
    }
    rows.sort_unstable();
    rows.dedup();
    rows.into_iter().filter_map(|r| ranges.iter().position(|x| x.contains(&r)).map(|g| (r, g))).collect()
}

/// The reference rows of a grouped GEMM at `sample` ((row, group) pairs): `a_rows` the sampled
/// rows of A in f64 (`[sample, k]`), `b_block(g)` group g's `[n, k]` rows of B in f64 (fetched
/// once per group).
fn grouped_reference(sample: &[(usize, usize)], a_rows: &[f64], k: usize, mut b_block: impl FnMut(usize) -> Result<Vec<f64>>) -> Result<MatmulRef> {
    let mut want = MatmulRef { out: Vec::new(), magnitude: Vec::new() };
    let mut blocks: Vec<(usize, Vec<f64>)> = Vec::new();
    for (i, &(_, g)) in sample.iter().enumerate() {
        let at = match blocks.iter().position(|(h, _)| *h == g) {
            Some(at) => at,
            None => {
                blocks.push((g, b_block(g)?));
                blocks.len() - 1
            }
        };
        let part = matmul_f64::<bf16>(&a_rows[i * k..(i + 1) * k], &blocks[at].1, k, None, None);
        want.out.extend(part.out);
        want.magnitude.extend(part.magnitude);
    }
    Ok(want)
}

/// How a grouped check names its sample: "rows 0 (group 0), … of 256 vs f64".
fn grouped_label(sample: &[(usize, usize)], m: usize) -> String {
    let rows: Vec<String> = sample.iter().map(|(r, g)| format!("{r} (group {g})")).collect();
    format!("rows {} of {m} vs f64", rows.join(", "))
}

/// NaN over a whole `[len]` bf16 buffer (an output the next call must overwrite).
fn poison(dev: &Device, buf: &mut CudaSlice<bf16>) -> Result<()> {
    let nan = vec![bf16::NAN; buf.len()];
    dev.stream().memcpy_htod(&nan[..], buf)?;
    Ok(())
}

/// The scaling of a benchmark: the A and B granularities and its name in the shape key.
#[derive(Clone, Copy, Debug)]
pub struct Scaling {
    /// A's (the activations') scale granularity.
    pub a: ScaleGranularity,
    /// B's (the weights') scale granularity.
    pub b: ScaleGranularity,
    /// The name in the shape key: "tensor", "row" or "block".
    pub name: &'static str,
}

/// One scale per tensor for A and B.
pub const PER_TENSOR: Scaling = Scaling { a: ScaleGranularity::PerTensor, b: ScaleGranularity::PerTensor, name: "tensor" };
/// Per-row scales: per token for A, per output channel for B.
pub const PER_ROW: Scaling = Scaling { a: ScaleGranularity::PerRow, b: ScaleGranularity::PerRow, name: "row" };
/// DeepSeek-V3's block scaling: A per 1×128 group, B per 128×128 block.
pub const BLOCK: Scaling = Scaling { a: ScaleGranularity::Group128, b: ScaleGranularity::Block128, name: "block" };

/// The shape key of a record.
pub fn shape_key(m: usize, n: usize, k: usize, s: Scaling, fast: bool) -> String {
    format!("{m}x{n}x{k} {}{}", s.name, if fast { " fast" } else { "" })
}

/// The operands of one benchmark shape, allocated once (rotated past L2) and timed under any
/// configuration.
struct Operands {
    m: usize,
    n: usize,
    k: usize,
    scaling: Scaling,
    a: Vec<CudaSlice<F8E4M3>>,
    b: Vec<CudaSlice<F8E4M3>>,
    d: Vec<CudaSlice<bf16>>,
    sa: CudaSlice<f32>,
    sb: CudaSlice<f32>,
    /// Bytes per call: a + b (1 B/element) + D (bf16) + scales.
    bytes: usize,
}

impl Operands {
    fn new(dev: &Device, m: usize, n: usize, k: usize, scaling: Scaling) -> Result<Self> {
        let (sa_shape, sb_shape) = (scaling.a.scale_shape(m, k), scaling.b.scale_shape(n, k));
        let scales = sa_shape[0] * sa_shape[1] + sb_shape[0] * sb_shape[1];
        let bytes = m * k + n * k + 2 * m * n + 4 * scales;
        let copies = rotation_copies(bytes);
        // One random operand, copied on the device for the rotation: the copies only keep the
        // inputs out of L2, and generating each on the host cost seconds per shape (the tuner
        // sets up dozens of shapes).
        let rotated = |len: usize, seed: u64| -> Result<Vec<CudaSlice<F8E4M3>>> {
            let first = random_buffer::<F8E4M3>(dev, len, -2.0, 2.0, seed)?;
            let mut v = (1..copies).map(|_| Ok(dev.stream().clone_dtod(&first)?)).collect::<Result<Vec<_>>>()?;
            v.push(first);
            Ok(v)
        };
        let (a, b) = (rotated(m * k, 0)?, rotated(n * k, 50)?);
        let d = (0..copies).map(|_| dev.zeros::<bf16>(m * n)).collect::<Result<_>>()?;
        let sa = dev.upload(&vec![1.0f32; sa_shape[0] * sa_shape[1]])?;
        let sb = dev.upload(&vec![1.0f32; sb_shape[0] * sb_shape[1]])?;
        Ok(Self { m, n, k, scaling, a, b, d, sa, sb, bytes })
    }

    /// `matmul_fp8` (bf16 out) under `cfg`, rotating through the copies.
    fn time(&mut self, dev: &Device, cfg: MatmulFp8Config) -> Result<Timing> {
        let (m, n, k, s) = (self.m, self.n, self.k, self.scaling);
        let sav = TensorView::contiguous(self.sa.as_view(), s.a.scale_shape(m, k))?;
        let sbv = TensorView::contiguous(self.sb.as_view(), s.b.scale_shape(n, k))?;
        let (a, b, d) = (&self.a, &self.b, &mut self.d);
        time_calls(dev, SAMPLES, |i| {
            let j = i % a.len();
            let av = TensorView::contiguous(a[j].as_view(), [m, k])?;
            let bv = TensorView::contiguous(b[j].as_view(), [n, k])?;
            let mut dv = TensorViewMut::contiguous(d[j].as_view_mut(), [m, n])?;
            matmul_fp8(dev, Fp8Operand { data: &av, scale: &sav, granularity: s.a }, Fp8Operand { data: &bv, scale: &sbv, granularity: s.b }, None, None, &mut dv, cfg)
        })
    }

    /// `matmul_fp8` under `cfg` once more on the first copy, into its output poisoned with NaN;
    /// the sampled rows ([`sample_rows`]) against the f64 reference on the operands downloaded
    /// from the device, under `check::matmul_fp8`'s error model.
    fn check_output(&mut self, dev: &Device, cfg: MatmulFp8Config) -> Result<OutputCheck> {
        let (m, n, k, s) = (self.m, self.n, self.k, self.scaling);
        poison(dev, &mut self.d[0])?;
        {
            let sav = TensorView::contiguous(self.sa.as_view(), s.a.scale_shape(m, k))?;
            let sbv = TensorView::contiguous(self.sb.as_view(), s.b.scale_shape(n, k))?;
            let av = TensorView::contiguous(self.a[0].as_view(), [m, k])?;
            let bv = TensorView::contiguous(self.b[0].as_view(), [n, k])?;
            let mut dv = TensorViewMut::contiguous(self.d[0].as_view_mut(), [m, n])?;
            matmul_fp8(dev, Fp8Operand { data: &av, scale: &sav, granularity: s.a }, Fp8Operand { data: &bv, scale: &sbv, granularity: s.b }, None, None, &mut dv, cfg)?;
        }
        let rows = sample_rows(m);
        let got = download_rows(dev, &self.d[0], &rows, n)?;
        let (sa, sb) = (dev.download(&self.sa)?, dev.download(&self.sb)?);
        let da = dequantize_rows(&download_rows(dev, &self.a[0], &rows, k)?, &rows, m, k, s.a, &sa);
        let db = dequantize_rows(&dev.download(&self.b[0])?, &(0..n).collect::<Vec<_>>(), n, k, s.b, &sb);
        let want = matmul_f64::<bf16>(&da, &db, k, None, None);
        // As check_matmul_fp8 decides it for the planner's kernel.
        let block_scaled = matches!(s.a, ScaleGranularity::Group128) || matches!(s.b, ScaleGranularity::Block128);
        let fast = dev.info().compute_capability == (9, 0) && cfg.fast_accumulation && !block_scaled;
        Ok(OutputCheck::of(&rows_label(&rows, m), &compare_sampled(&got, &want, n, fp8_tolerance(k, fast))))
    }

    fn record(&self, shape: String, t: Timing, ceilings: &Ceilings) -> BenchRecord {
        let flops = 2.0 * (self.m * self.n) as f64 * self.k as f64;
        BenchRecord::compute("matmul_fp8", "e4m3", shape, t, self.bytes as f64, flops, ceilings)
    }
}

/// The planner's view of a benchmark shape: one e4m3 GEMM, bf16 out, no residual.
fn problem(m: usize, n: usize, k: usize, scaling: Scaling, fast: bool) -> MatmulFp8Problem {
    let accumulation = Accumulation::of(scaling_mode(scaling.a, scaling.b) == Some(true), fast);
    MatmulFp8Problem { m, n, k, accumulation, groups: 0, input: GemmInput::E4m3, out_bf16: true, residual: false }
}

/// `matmul_fp8` (bf16 out) at m × n × k with `scaling` on the planner's configuration (inputs
/// rotated past L2), with cuBLASLt FP8 timed on the same buffers as the alternative; where the
/// plan splits k (wgmma kernel), also the plan's tile without split-k. After the timing, the
/// plan runs once more into a NaN-poisoned output and sampled rows of it (all when m ≤ 32, else 0, 1, m/2, m − 1) are checked against
/// the f64 reference (`BenchRecord::output`; about 0.1–1 s of host time at the bar shapes).
pub fn bench_matmul(dev: &Device, ceilings: &Ceilings, m: usize, n: usize, k: usize, scaling: Scaling, fast: bool) -> Result<BenchRecord> {
    let mut ops = Operands::new(dev, m, n, k, scaling)?;
    let t = ops.time(dev, MatmulFp8Config { fast_accumulation: fast, ..Default::default() })?;
    let mut record = ops.record(shape_key(m, n, k, scaling, fast), t, ceilings);
    if dev.info().compute_capability == (9, 0) {
        if let Some(plan) = plan_sm90(&problem(m, n, k, scaling, fast), dev.info().sm_count as usize, None).filter(|t| t.k_splits > 1) {
            let whole = plan.unsplit();
            let t = ops.time(dev, MatmulFp8Config { fast_accumulation: fast, tile: Some(whole), ..Default::default() })?;
            record.add_alternative(&format!("warpcore without split-k ({whole})"), t.median_us);
        }
    }
    #[cfg(feature = "cublaslt")]
    let record = {
        let mut r = record;
        if let Some(us) = cublaslt::time_fp8(dev, m, n, k, scaling, fast, &ops.a, &ops.b, &mut ops.d)? {
            r.add_alternative(if fast { "cuBLASLt FP8 (fast accum)" } else { "cuBLASLt FP8" }, us);
        }
        r
    };
    let mut record = record;
    record.output = Some(ops.check_output(dev, MatmulFp8Config { fast_accumulation: fast, ..Default::default() })?);
    Ok(record)
}

/// The wgmma kernel at m × n × k with `scaling` under the configurations of [`sm90_candidates`]
/// that `pick` keeps (nothing off compute capability 9.0): one record each, keyed
/// `"<shape key> | <TileConfig's Display>"`, the planner's pick marked `" (plan)"`.
#[allow(clippy::too_many_arguments)]
pub fn tune_matmul(
    dev: &Device,
    ceilings: &Ceilings,
    m: usize,
    n: usize,
    k: usize,
    scaling: Scaling,
    fast: bool,
    pick: impl Fn(Accumulation, &TileConfig) -> bool,
) -> Result<Vec<BenchRecord>> {
    if dev.info().compute_capability != (9, 0) {
        return Ok(Vec::new());
    }
    let problem = problem(m, n, k, scaling, fast);
    let accumulation = problem.accumulation;
    let sms = dev.info().sm_count as usize;
    let plan = plan_sm90(&problem, sms, None);
    let mut ops = Operands::new(dev, m, n, k, scaling)?;
    let mut out = Vec::new();
    for tile in sm90_candidates(&problem, sms).into_iter().filter(|t| pick(accumulation, t)) {
        let cfg = MatmulFp8Config { kernel: GemmKernel::Wgmma, fast_accumulation: fast, tile: Some(tile), ..Default::default() };
        let t = ops.time(dev, cfg)?;
        let mark = if plan == Some(tile) { " (plan)" } else { "" };
        out.push(ops.record(format!("{} | {tile}{mark}", shape_key(m, n, k, scaling, fast)), t, ceilings));
    }
    Ok(out)
}

/// A seeded routing of `rows` rows to `experts` experts (each row to one, uniformly): the rows per
/// expert and their offsets `[experts + 1]`.
fn routing(experts: usize, rows: usize) -> (Vec<usize>, Vec<i32>) {
    let mut rng = crate::check::Rng::new(7);
    let mut counts = vec![0usize; experts];
    for _ in 0..rows {
        counts[(rng.next_u64() % experts as u64) as usize] += 1;
    }
    let offsets = std::iter::once(0).chain(counts.iter().scan(0, |acc, &c| { *acc += c; Some(*acc as i32) })).collect();
    (counts, offsets)
}

/// The grouped GEMM of one MoE projection: `rows` routed token rows (tokens × top-k, each
/// sent to an expert drawn uniformly; seeded) over `experts` experts of `[n, k]`, block scales
/// (the FP8 MoE checkpoints' format), bf16 out. Bytes: every expert's weights that get rows,
/// plus a, D and scales; FLOPs 2·rows·n·k. The alternative in the same run is what the model did
/// before the grouped kernel: one `matmul_fp8` per expert, its rows known on the host. The
/// grouped kernel's output is then checked at a sample of rows (the first, the last, one in each of three groups; `BenchRecord::output`).
pub fn bench_grouped(dev: &Device, ceilings: &Ceilings, experts: usize, n: usize, k: usize, rows: usize) -> Result<BenchRecord> {
    let (counts, offsets) = routing(experts, rows);
    let used = counts.iter().filter(|&&c| c > 0).count();
    let (g, sa_shape, sb_shape) = (k / 128, BLOCK.a.scale_shape(rows, k), BLOCK.b.scale_shape(experts * n, k));
    let bytes = used * n * (k + 4 * g / 128) + rows * (k + 4 * g) + 2 * rows * n;
    let a = random_buffer::<F8E4M3>(dev, rows * k, -2.0, 2.0, 1)?;
    let b = random_buffer::<F8E4M3>(dev, experts * n * k, -2.0, 2.0, 2)?;
    let mut d = dev.zeros::<bf16>(rows * n)?;
    let sa = dev.upload(&vec![1.0f32; sa_shape[0] * sa_shape[1]])?;
    let sb = dev.upload(&vec![1.0f32; sb_shape[0] * sb_shape[1]])?;
    let offsets_dev = dev.upload(&offsets)?;
    let av = TensorView::contiguous(a.as_view(), [rows, k])?;
    let bv = TensorView::contiguous(b.as_view(), [experts * n, k])?;
    let sav = TensorView::contiguous(sa.as_view(), sa_shape)?;
    let sbv = TensorView::contiguous(sb.as_view(), sb_shape)?;
    let ov = TensorView::contiguous(offsets_dev.as_view(), [experts + 1])?;
    let t = time_calls(dev, SAMPLES, |_| {
        let mut dv = TensorViewMut::contiguous(d.as_view_mut(), [rows, n])?;
        let (a, b) = (Fp8Operand { data: &av, scale: &sav, granularity: BLOCK.a }, Fp8Operand { data: &bv, scale: &sbv, granularity: BLOCK.b });
        matmul_fp8_grouped(dev, a, b, &ov, None, None, &mut dv, MatmulFp8Config::default())
    })?;
    let flops = 2.0 * (rows * n) as f64 * k as f64;
    let key = format!("grouped {experts}x[{n}x{k}] {rows} rows block");
    let mut record = BenchRecord::compute("matmul_fp8_grouped", "e4m3", key, t, bytes as f64, flops, ceilings);
    let per_expert = time_calls(dev, SAMPLES, |_| {
        for e in (0..experts).filter(|&e| counts[e] > 0) {
            let (lo, c) = (offsets[e] as usize, counts[e]);
            let a = TensorView::contiguous(a.slice(lo * k..(lo + c) * k), [c, k])?;
            let sa = TensorView::contiguous(sa.slice(lo * g..(lo + c) * g), [c, g])?;
            let b = TensorView::contiguous(b.slice(e * n * k..(e + 1) * n * k), [n, k])?;
            let sb = TensorView::contiguous(sb.slice(e * (n / 128) * g..(e + 1) * (n / 128) * g), [n / 128, g])?;
            let mut dv = TensorViewMut::contiguous(d.slice_mut(lo * n..(lo + c) * n), [c, n])?;
            let (a, b) = (Fp8Operand { data: &a, scale: &sa, granularity: BLOCK.a }, Fp8Operand { data: &b, scale: &sb, granularity: BLOCK.b });
            matmul_fp8(dev, a, b, None, None, &mut dv, MatmulFp8Config::default())?;
        }
        Ok(())
    })?;
    record.add_alternative("matmul_fp8 per expert (host offsets)", per_expert.median_us);
    // The grouped kernel once more into a poisoned output; sampled rows against the f64
    // reference on the downloaded operands (block-scaled: promoted accumulation's bound).
    poison(dev, &mut d)?;
    {
        let mut dv = TensorViewMut::contiguous(d.as_view_mut(), [rows, n])?;
        let (a, b) = (Fp8Operand { data: &av, scale: &sav, granularity: BLOCK.a }, Fp8Operand { data: &bv, scale: &sbv, granularity: BLOCK.b });
        matmul_fp8_grouped(dev, a, b, &ov, None, None, &mut dv, MatmulFp8Config::default())?;
    }
    let sample = grouped_sample(&offsets, rows);
    let sampled: Vec<usize> = sample.iter().map(|&(r, _)| r).collect();
    let got = download_rows(dev, &d, &sampled, n)?;
    let (sa_host, sb_host) = (dev.download(&sa)?, dev.download(&sb)?);
    let da = dequantize_rows(&download_rows(dev, &a, &sampled, k)?, &sampled, rows, k, BLOCK.a, &sa_host);
    let want = grouped_reference(&sample, &da, k, |e| {
        let codes = dev.download(&b.slice(e * n * k..(e + 1) * n * k))?;
        Ok(dequantize_rows(&codes, &(e * n..(e + 1) * n).collect::<Vec<_>>(), experts * n, k, BLOCK.b, &sb_host))
    })?;
    record.output = Some(OutputCheck::of(&grouped_label(&sample, rows), &compare_sampled(&got, &want, n, fp8_tolerance(k, false))));
    Ok(record)
}

/// The same experts with bf16 weights (`matmul_grouped`, e.g. Qwen3-30B-A3B in bf16), against one
/// cuBLAS GEMM per expert sized by host offsets (what the model ran before, and what an engine
/// without a grouped kernel runs). The output is then checked at a sample of rows.
pub fn bench_grouped_bf16(dev: &Device, ceilings: &Ceilings, experts: usize, n: usize, k: usize, rows: usize) -> Result<BenchRecord> {
    let (counts, offsets) = routing(experts, rows);
    let used = counts.iter().filter(|&&c| c > 0).count();
    let bytes = 2 * (used * n * k + rows * k + rows * n);
    let a = random_buffer::<bf16>(dev, rows * k, -1.0, 1.0, 1)?;
    let b = random_buffer::<bf16>(dev, experts * n * k, -1.0, 1.0, 2)?;
    let mut d = dev.zeros::<bf16>(rows * n)?;
    let offsets_dev = dev.upload(&offsets)?;
    let av = TensorView::contiguous(a.as_view(), [rows, k])?;
    let bv = TensorView::contiguous(b.as_view(), [experts * n, k])?;
    let ov = TensorView::contiguous(offsets_dev.as_view(), [experts + 1])?;
    let t = time_calls(dev, SAMPLES, |_| {
        let mut dv = TensorViewMut::contiguous(d.as_view_mut(), [rows, n])?;
        matmul_grouped(dev, &av, &bv, &ov, None, None, &mut dv, GemmKernel::Auto)
    })?;
    let flops = 2.0 * (rows * n) as f64 * k as f64;
    let key = format!("grouped {experts}x[{n}x{k}] {rows} rows bf16");
    let mut record = BenchRecord::compute("matmul_grouped", "bf16", key, t, bytes as f64, flops, ceilings);
    #[cfg(feature = "model")]
    {
        let gemm = crate::model::gemm::Gemm::new(dev)?;
        let per_expert = time_calls(dev, SAMPLES, |_| {
            for e in (0..experts).filter(|&e| counts[e] > 0) {
                let (lo, c) = (offsets[e] as usize, counts[e]);
                let x = TensorView::contiguous(a.slice(lo * k..(lo + c) * k), [c, k])?;
                let w = TensorView::contiguous(b.slice(e * n * k..(e + 1) * n * k), [n, k])?;
                gemm.linear(dev, &x, &w, &mut TensorViewMut::contiguous(d.slice_mut(lo * n..(lo + c) * n), [c, n])?)?;
            }
            Ok(())
        })?;
        record.add_alternative("cuBLAS per expert (host offsets)", per_expert.median_us);
    }
    // The grouped kernel once more into a poisoned output; sampled rows against the f64
    // reference on the downloaded bf16 operands, under check::matmul_grouped's bound
    // (`k·2⁻²²·Σ|a·b|` plus bf16's rounding).
    poison(dev, &mut d)?;
    {
        let mut dv = TensorViewMut::contiguous(d.as_view_mut(), [rows, n])?;
        matmul_grouped(dev, &av, &bv, &ov, None, None, &mut dv, GemmKernel::Auto)?;
    }
    let sample = grouped_sample(&offsets, rows);
    let sampled: Vec<usize> = sample.iter().map(|&(r, _)| r).collect();
    let got = download_rows(dev, &d, &sampled, n)?;
    let widen = |v: Vec<bf16>| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let da = widen(download_rows(dev, &a, &sampled, k)?);
    let want = grouped_reference(&sample, &da, k, |e| Ok(widen(dev.download(&b.slice(e * n * k..(e + 1) * n * k))?)))?;
    let tol = (2f64.powi(-8), k as f64 * 2f64.powi(-22), 2f64.powi(-8));
    record.output = Some(OutputCheck::of(&grouped_label(&sample, rows), &compare_sampled(&got, &want, n, tol)));
    Ok(record)
}

/// Every FP8 GEMM benchmark `warpcore bench` runs: the four bars, each in the default
/// (promoted) accumulation and, for per-tensor / per-row scales, fast accumulation; grouped
/// GEMMs at a MoE model's expert shapes, in FP8 and (the same kernels' bf16 operands) bf16.
/// (`warpcore bench --tune` times the bar shapes under every tile configuration: [`tune_all`].)
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    for fast in [false, true] {
        out.push(bench_matmul(dev, ceilings, 4096, 7168, 2048, PER_ROW, fast)?); super::checkpoint(out);
        out.push(bench_matmul(dev, ceilings, 8192, 8192, 8192, PER_TENSOR, fast)?); super::checkpoint(out);
        out.push(bench_matmul(dev, ceilings, 128, 7168, 2048, PER_ROW, fast)?); super::checkpoint(out);
    }
    out.push(bench_matmul(dev, ceilings, 4096, 7168, 16384, BLOCK, false)?); super::checkpoint(out);
    // Decode-sized: the 1B FP8 model's down_proj at batch 1 and 32 (16 tiles of 64 × 128: the
    // plan splits k 8 ways), and one token through a 7168-wide projection (56 tiles: no split).
    out.push(bench_matmul(dev, ceilings, 1, 2048, 8192, BLOCK, false)?); super::checkpoint(out);
    out.push(bench_matmul(dev, ceilings, 32, 2048, 8192, BLOCK, false)?); super::checkpoint(out);
    out.push(bench_matmul(dev, ceilings, 1, 7168, 2048, PER_ROW, false)?); super::checkpoint(out);
    // Grouped: Qwen3-30B-A3B-FP8's experts (128 of gate_up [1536, 2048] and down [2048, 768]),
    // at decode (32 tokens × top-8 rows) and prefill (2048 tokens × 8).
    for rows in [256, 16384] {
        out.push(bench_grouped(dev, ceilings, 128, 1536, 2048, rows)?); super::checkpoint(out);
        out.push(bench_grouped(dev, ceilings, 128, 2048, 768, rows)?); super::checkpoint(out);
        out.push(bench_grouped_bf16(dev, ceilings, 128, 1536, 2048, rows)?); super::checkpoint(out);
        out.push(bench_grouped_bf16(dev, ceilings, 128, 2048, 768, rows)?); super::checkpoint(out);
    }
    Ok(())
}

/// `warpcore bench --tune` for the FP8 GEMM: every wgmma configuration ([`tune_matmul`]) at the
/// issue's bar shapes (both accumulations) and at the projections of the Llama-3.2-1B-shaped
/// FP8 block checkpoint the model bench runs (qkv, o, gate_up, down; prefill of 2048 tokens
/// and decode at batch 32) and one token through n = 7168, so that the planner's model (tiles,
/// pairs, split-k) can be checked against the H200.
/// Three passes, each over every shape: the planner's tiles with the staged epilogue, then with
/// the TMA store, then the `UNMEASURED` tiles (the last two new, not run on a GPU before, and
/// built only with the `matmul-fp8-tuning` feature: without it, the first pass alone), so
/// that a fault in a later pass cannot cost an earlier pass's records. A failed shape ends the
/// sweep (a faulted context fails every later call) with what was timed before it, and says so
/// on stderr. Each shape's records go to the process's checkpoint ([`super::checkpoint`]) as
/// soon as they are timed, so that a hang (`warpcore bench`'s child killed at its time limit)
/// keeps them too.
pub fn tune_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    let mut shapes: Vec<(usize, usize, usize, Scaling, bool)> = Vec::new();
    for fast in [false, true] {
        shapes.extend([(4096, 7168, 2048, PER_ROW, fast), (8192, 8192, 8192, PER_TENSOR, fast), (128, 7168, 2048, PER_ROW, fast)]);
    }
    shapes.push((4096, 7168, 16384, BLOCK, false));
    for m in [2048, 32] {
        for (n, k) in [(3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192)] {
            shapes.push((m, n, k, BLOCK, false));
        }
    }
    // One token through n = 7168 (56 tiles: the plan does not split k; the tuner times 2–4 slices).
    shapes.push((1, 7168, 2048, PER_ROW, false));
    // (pass name, which configurations it times)
    type Pick = fn(Accumulation, &TileConfig) -> bool;
    let passes: [(&str, Pick); 3] = [
        ("staged", |acc, t| !is_unmeasured(acc, t) && !t.tma_store),
        ("tma-store", |acc, t| !is_unmeasured(acc, t) && t.tma_store),
        ("unmeasured tiles", is_unmeasured),
    ];
    if !TUNING_BUILT {
        eprintln!("warpcore bench --tune: matmul_fp8's tma-store and unmeasured-tiles passes need a build with `--features matmul-fp8-tuning`; timing the staged pass alone");
    }
    let built = if TUNING_BUILT { &passes[..] } else { &passes[..1] };
    for &(pass, pick) in built {
        for &(m, n, k, s, fast) in &shapes {
            match tune_matmul(dev, ceilings, m, n, k, s, fast, pick) {
                Ok(records) => {
                    out.extend(records);
                    super::checkpoint(out);
                }
                Err(e) => {
                    eprintln!("warpcore bench --tune: matmul_fp8 {} ({pass} pass): {e}; the sweep stops here", shape_key(m, n, k, s, fast));
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// cuBLASLt FP8 through cudarc's raw bindings (its safe wrapper has no FP8): D (n × m column-
/// major, i.e. our row-major m × n) = op(A)·op(B) with cuBLAS's A = our b (transposed, the TN
/// layout FP8 requires) and B = our a; scales as scale pointers with the matching scale mode
/// (scalar, outer vector, or 128-blocks on A and 1×128 vectors on B). Values are not checked:
/// only the time matters here.
#[cfg(feature = "cublaslt")]
mod cublaslt {
    use super::Scaling;
    use crate::bench::time_calls;
    use crate::ops::quant::ScaleGranularity;
    use crate::{Device, Result, F8E4M3};
    use cudarc::cublaslt::{result as lt, sys};
    use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
    use half::bf16;
    use std::ffi::c_void;

    fn mode(g: ScaleGranularity) -> sys::cublasLtMatmulMatrixScale_t {
        use sys::cublasLtMatmulMatrixScale_t as S;
        match g {
            ScaleGranularity::PerTensor => S::CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F,
            ScaleGranularity::PerRow => S::CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
            ScaleGranularity::Group128 => S::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
            ScaleGranularity::Block128 => S::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
        }
    }

    /// Median µs per call, or None when cuBLASLt is missing or declines the problem.
    #[allow(clippy::too_many_arguments)]
    pub fn time_fp8(
        dev: &Device,
        m: usize,
        n: usize,
        k: usize,
        s: Scaling,
        fast: bool,
        a: &[CudaSlice<F8E4M3>],
        b: &[CudaSlice<F8E4M3>],
        d: &mut [CudaSlice<bf16>],
    ) -> Result<Option<f64>> {
        // SAFETY: only tries to dlopen libcublasLt.
        if !unsafe { sys::is_culib_present() } {
            return Ok(None);
        }
        let stream = dev.stream();
        // Scale buffers large enough for any of the layouts (values 1).
        let scale_len = (m.max(n) + 128) * (k / 128 + 1);
        let sa = dev.upload(&vec![1.0f32; scale_len])?;
        let sb = dev.upload(&vec![1.0f32; scale_len])?;
        let workspace = dev.zeros::<u8>(32 << 20)?;
        let lt_err = |e: lt::CublasError| crate::Error::Launch { op: "cublasLt fp8", code: e.0 as i32, name: format!("{e:?}") };
        let handle = match lt::create_handle() {
            Ok(h) => h,
            Err(_) => return Ok(None),
        };
        use sys::cublasLtMatmulDescAttributes_t as A;
        let mut run = || -> std::result::Result<Option<f64>, crate::Error> {
            let e4m3 = sys::cudaDataType_t::CUDA_R_8F_E4M3;
            let la = lt::create_matrix_layout(e4m3, k as u64, n as u64, k as i64).map_err(lt_err)?; // our b: k × n col-major
            let lb = lt::create_matrix_layout(e4m3, k as u64, m as u64, k as i64).map_err(lt_err)?; // our a
            let ld = lt::create_matrix_layout(sys::cudaDataType_t::CUDA_R_16BF, n as u64, m as u64, n as i64).map_err(lt_err)?;
            let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F).map_err(lt_err)?;
            let (sa_ptr, _g1) = sb.device_ptr(stream); // cuBLAS's A is our b
            let (sb_ptr, _g2) = sa.device_ptr(stream);
            let set = |attr: A, v: *const c_void, size: usize| -> std::result::Result<(), crate::Error> {
                // SAFETY: desc is live; v points at `size` readable bytes.
                unsafe { lt::set_matmul_desc_attribute(desc, attr, v, size) }.map_err(lt_err)
            };
            let trans_t = 1i32; // CUBLAS_OP_T
            set(A::CUBLASLT_MATMUL_DESC_TRANSA, &trans_t as *const _ as *const c_void, 4)?;
            let fast_accum = fast as i8;
            set(A::CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast_accum as *const _ as *const c_void, 1)?;
            set(A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa_ptr as *const _ as *const c_void, 8)?;
            set(A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb_ptr as *const _ as *const c_void, 8)?;
            let (ma, mb) = (mode(s.b), mode(s.a));
            set(A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma as *const _ as *const c_void, 4)?;
            set(A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb as *const _ as *const c_void, 4)?;
            let pref = lt::create_matmul_pref().map_err(lt_err)?;
            let ws_size = workspace.len();
            // SAFETY: pref is live; the value is a usize.
            unsafe {
                lt::set_matmul_pref_attribute(
                    pref,
                    sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &ws_size as *const _ as *const c_void,
                    std::mem::size_of::<usize>(),
                )
            }
            .map_err(lt_err)?;
            // SAFETY: every handle and layout above is live.
            let heuristic = match unsafe { lt::get_matmul_algo_heuristic(handle, desc, la, lb, ld, ld, pref) } {
                Ok(h) => h,
                Err(_) => return Ok(None), // this cuBLASLt declines the scaling mode
            };
            let (alpha, beta) = (1.0f32, 0.0f32);
            let copies = a.len();
            let t = time_calls(dev, super::SAMPLES, |i| {
                let j = i % copies;
                let (ap, _ga) = b[j].device_ptr(stream);
                let (bp, _gb) = a[j].device_ptr(stream);
                let (dp, _gd) = d[j].device_ptr_mut(stream);
                let (wp, _gw) = workspace.device_ptr(stream);
                // SAFETY: the buffers hold the sizes the layouts describe; the algo came from
                // the heuristic for exactly these descriptors.
                unsafe {
                    lt::matmul(
                        handle,
                        desc,
                        &alpha as *const _ as *const c_void,
                        &beta as *const _ as *const c_void,
                        ap as *const c_void,
                        la,
                        bp as *const c_void,
                        lb,
                        dp as *const c_void,
                        ld,
                        dp as *mut c_void,
                        ld,
                        &heuristic.algo,
                        wp as *mut c_void,
                        ws_size,
                        stream.cu_stream() as sys::cudaStream_t,
                    )
                }
                .map_err(lt_err)
            });
            // SAFETY: created above, not used after this.
            unsafe {
                let _ = lt::destroy_matmul_pref(pref);
                let _ = lt::destroy_matmul_desc(desc);
                let _ = lt::destroy_matrix_layout(la);
                let _ = lt::destroy_matrix_layout(lb);
                let _ = lt::destroy_matrix_layout(ld);
            }
            Ok(t.ok().map(|t| t.median_us))
        };
        let r = run();
        // SAFETY: the handle is not used after this.
        unsafe {
            let _ = lt::destroy_handle(handle);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use crate::reference::matmul_fp8 as reference;
    use crate::reference::quant::Quantized;

    /// Random e4m3 codes (finite, as the bench's operands) with scales over a few decades.
    fn operand(rng: &mut Rng, rows: usize, k: usize, g: ScaleGranularity) -> Quantized {
        let shape = g.scale_shape(rows, k);
        let q: Vec<F8E4M3> = rng.vec(rows * k, -2.0, 2.0);
        let scale: Vec<f32> = (0..shape[0] * shape[1]).map(|_| 10f64.powf(rng.uniform(-2.0, 2.0)) as f32).collect();
        Quantized::from_parts(rows, k, g, q, scale, shape).unwrap()
    }

    fn to_bf16(v: &[f64]) -> Vec<bf16> {
        v.iter().map(|&x| bf16::from_f64(x)).collect()
    }

    #[test]
    fn the_sample_is_every_small_output_row_or_the_ends_and_the_middle() {
        assert_eq!(sample_rows(4096), [0, 1, 2048, 4095]);
        assert_eq!(sample_rows(32), (0..32).collect::<Vec<_>>());
        assert_eq!(sample_rows(1), [0]);
        assert_eq!(sample_rows(33), [0, 1, 16, 32]);
        assert_eq!(rows_label(&[0, 1, 2048, 4095], 4096), "rows 0, 1, 2048, 4095 of 4096 vs f64");
        assert_eq!(rows_label(&[0], 1), "all 1 rows vs f64");
    }

    /// The sampled reference (rows of A dequantized alone, B whole) equals the whole reference's
    /// rows for every scale layout; the correct output passes, and a sampled row zeroed or 10 %
    /// low, or one element left NaN (the poison), fails.
    #[test]
    fn the_sampled_check_passes_a_right_output_and_fails_a_wrong_row_or_poison() {
        use ScaleGranularity::*;
        let (m, n, k) = (300, 256, 512);
        for (i, (ga, gb, fast)) in [(PerRow, PerRow, false), (PerTensor, PerTensor, true), (Group128, Block128, false)].into_iter().enumerate() {
            let mut rng = Rng::new(3 + i as u64);
            let (qa, qb) = (operand(&mut rng, m, k, ga), operand(&mut rng, n, k, gb));
            let full = reference::matmul_fp8::<bf16>(&qa, &qb, None, None);
            let rows = sample_rows(m);
            let a_rows: Vec<F8E4M3> = rows.iter().flat_map(|&r| qa.q[r * k..(r + 1) * k].iter().copied()).collect();
            let da = dequantize_rows(&a_rows, &rows, m, k, ga, &qa.scale);
            let db = dequantize_rows(&qb.q, &(0..n).collect::<Vec<_>>(), n, k, gb, &qb.scale);
            let want = matmul_f64::<bf16>(&da, &db, k, None, None);
            let pick = |v: &[f64]| rows.iter().flat_map(|&r| v[r * n..(r + 1) * n].iter().copied()).collect::<Vec<f64>>();
            assert_eq!(want.out, pick(&full.out), "{ga:?} x {gb:?}");
            assert_eq!(want.magnitude, pick(&full.magnitude));
            let tol = fp8_tolerance(k, fast);
            let right = to_bf16(&want.out);
            let c = OutputCheck::of(&rows_label(&rows, m), &compare_sampled(&right, &want, n, tol));
            assert!(c.passed, "{c:?}");
            for wrong_row in [0, 2] {
                for factor in [0.0, 0.9] {
                    let mut wrong = right.clone();
                    wrong[wrong_row * n..(wrong_row + 1) * n].iter_mut().for_each(|x| *x = bf16::from_f64(x.to_f64() * factor));
                    let c = OutputCheck::of("x", &compare_sampled(&wrong, &want, n, tol));
                    assert!(!c.passed, "{ga:?} x {gb:?}: row {wrong_row} times {factor} passed");
                }
            }
            let mut poisoned = right.clone();
            poisoned[3 * n + 17] = bf16::NAN;
            assert!(!OutputCheck::of("x", &compare_sampled(&poisoned, &want, n, tol)).passed);
        }
    }

    /// A grouped sample names rows of non-empty groups with their group, the first and last row
    /// included, and its reference equals the grouped reference's rows.
    #[test]
    fn the_grouped_sample_and_its_reference() {
        let (experts, n, k, rows) = (16, 128, 256, 40);
        let (counts, offsets) = routing(experts, rows);
        let sample = grouped_sample(&offsets, rows);
        assert!(sample.len() >= 3 && sample[0].0 == 0 && sample.last().unwrap().0 == rows - 1, "{sample:?}");
        for &(r, g) in &sample {
            assert!(counts[g] > 0 && (offsets[g] as usize..offsets[g + 1] as usize).contains(&r), "{r} in {g}");
        }
        let mut rng = Rng::new(9);
        let (qa, qb) = (operand(&mut rng, rows, k, BLOCK.a), operand(&mut rng, experts * n, k, BLOCK.b));
        let (full, group_of) = reference::matmul_fp8_grouped::<bf16>(&qa, &qb, &offsets, None, None);
        let sampled: Vec<usize> = sample.iter().map(|&(r, _)| r).collect();
        let a_rows: Vec<F8E4M3> = sampled.iter().flat_map(|&r| qa.q[r * k..(r + 1) * k].iter().copied()).collect();
        let da = dequantize_rows(&a_rows, &sampled, rows, k, BLOCK.a, &qa.scale);
        let mut fetched = Vec::new();
        let want = grouped_reference(&sample, &da, k, |g| {
            fetched.push(g);
            let codes = qb.q[g * n * k..(g + 1) * n * k].to_vec();
            Ok(dequantize_rows(&codes, &(g * n..(g + 1) * n).collect::<Vec<_>>(), experts * n, k, BLOCK.b, &qb.scale))
        })
        .unwrap();
        let mut groups: Vec<usize> = sample.iter().map(|&(_, g)| g).collect();
        groups.dedup();
        assert_eq!(fetched, groups, "each group's B fetched once");
        for (i, &(r, g)) in sample.iter().enumerate() {
            assert_eq!(group_of[r], Some(g));
            assert_eq!(want.out[i * n..(i + 1) * n], full.out[r * n..(r + 1) * n]);
        }
        let right = to_bf16(&want.out);
        assert!(OutputCheck::of("x", &compare_sampled(&right, &want, n, fp8_tolerance(k, false))).passed);
        let mut wrong = right.clone();
        wrong[n..2 * n].fill(bf16::ZERO);
        assert!(!OutputCheck::of("x", &compare_sampled(&wrong, &want, n, fp8_tolerance(k, false))).passed);
        assert!(grouped_label(&sample[..1], rows).starts_with("rows 0 (group "));
    }
}
