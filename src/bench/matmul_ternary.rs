//! Ternary family benchmarks at BitNet b1.58 2B4T's layer shapes (hidden 2560: q / o 2560 ×
//! 2560, k / v 640 × 2560, gate / up 6912 × 2560, down 2560 × 6912) at decode (m = 1, 32) and
//! prefill (m = 2048) sizes. The alternative timed in the same run (feature `model`): cuBLAS bf16 on the
//! same weights unpacked to bf16 (what transformers runs for BitNet), with bf16 activations.
//! Bytes: packed weights n·k/4 + codes m·k + scales + out m·n (bf16); FLOPs 2·m·n·k.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::{compare_bounded, compare_exact, compare_ints, tolerance, Comparison, Rng};
use crate::reference::matmul_ternary::{self as reference, QuantizedActivations, TernaryWeights};
use cudarc::driver::CudaSlice;
use crate::ops::matmul_ternary::{matmul_ternary_with_tile, plan, quantize_activations, rms_norm_quantize_activations, PackedTernary, TernaryTile, BLOCK_M, HOPPER_BLOCK_M};
use crate::ops::rms_norm::{rms_norm, RmsNormConfig};
use crate::{Device, Result, TensorView, TensorViewMut};
use half::bf16;

const SAMPLES: usize = 25;

/// The output rows a bench checks after timing: every row when m ≤ 32, else rows 0, 1, m/2 and
/// m − 1 (the first and last tiles, and one in the middle).
fn sample_rows(m: usize) -> Vec<usize> {
    let mut rows = if m <= 32 { (0..m).collect() } else { vec![0, 1, m / 2, m - 1] };
    rows.dedup();
    rows
}

/// How an output check names its sample: "rows 0, 1, 1024, 2047 of 2048 vs f64" or "all 32 rows vs f64".
fn rows_label(rows: &[usize], m: usize, against: &str) -> String {
    if rows.len() == m {
        format!("all {m} rows vs {against}")
    } else {
        format!("rows {} of {m} vs {against}", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
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

/// `host` over the whole of `buf` (the poison an output's next call must overwrite).
fn fill<T: cudarc::driver::DeviceRepr + Copy>(dev: &Device, buf: &mut CudaSlice<T>, value: T) -> Result<()> {
    let host = vec![value; buf.len()];
    dev.stream().memcpy_htod(&host[..], buf)?;
    Ok(())
}

/// The reference of sampled rows of a ternary GEMM and `check::matmul_ternary`'s bound on them:
/// `act` the sampled rows' codes and scales, `weights` all `[n, k]`. Returns (want, bound): the
/// bound is bf16's `rtol·|ref|` plus 8 f32 ulps of the epilogue's largest term (the product of
/// the absolute values), as the check computes it.
fn ternary_reference(act: &QuantizedActivations, weights: &TernaryWeights, k: usize) -> (Vec<f64>, Vec<f64>) {
    let want = reference::matmul_ternary(act, weights, None, k);
    let abs_terms = reference::matmul_ternary(
        &QuantizedActivations { q: act.q.iter().map(|v| v.saturating_abs()).collect(), scale: act.scale.clone() },
        &TernaryWeights { values: weights.values.iter().map(|v| v.abs()).collect(), scale: weights.scale },
        None,
        k,
    );
    let rtol = tolerance::<bf16>().rtol;
    let bound = want.iter().zip(&abs_terms).map(|(w, a)| rtol * w.abs() + 8.0 * f32::EPSILON as f64 * a + 1e-30).collect();
    (want, bound)
}

/// Sampled rows `got` (`[rows, n]`) against [`ternary_reference`]'s (want, bound), NaN (poison
/// left in) failing, and bf16's Frobenius limit over the sample.
fn compare_ternary(got: &[bf16], want: &[f64], bound: &[f64], n: usize) -> Vec<Comparison> {
    vec![compare_bounded("out (sampled rows)", got, want, bound, tolerance::<bf16>().frobenius).in_rows(n)]
}
/// (n, k) of BitNet b1.58 2B4T's projections as the model runs them, one GEMM each (every
/// projection has its own weight scale): q and o, k and v, gate and up, down.
const LAYERS: &[(usize, usize)] = &[(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)];

/// matmul_ternary on `[m, k] × [n, k]ᵀ` with the planned tile, and with each other tile height
/// (the Hopper tile on compute capability 9.0) as a record of its own (shape key suffix " block{b}") so that one run shows whether the plan
/// chose well; where the plan splits k, the planned record also times its tile unsplit
/// ("warpcore without split-k"). Decode sizes (m ≤ 64) are bandwidth records (fraction of
/// copy), prefill compute ones. After the timing, each record's tile runs once more into a
/// NaN-poisoned output, and sampled rows of it (all when m ≤ 32, else 0, 1, m/2, m − 1) are checked against the f64 reference
/// (`BenchRecord::output`).
pub fn bench_matmul_ternary(dev: &Device, ceilings: &Ceilings, m: usize, n: usize, k: usize) -> Result<Vec<BenchRecord>> {
    let w_bytes = n * k / 4;
    let bytes = (w_bytes + m * k + 4 * m + 2 * m * n) as f64;
    let flops = 2.0 * (m * n * k) as f64;
    let copies = rotation_copies(w_bytes + m * k);
    let mut rng = Rng::new(5);
    let packed: Vec<u8> = (0..w_bytes).map(|_| {
        // Four codes in {0, 1, 2} per byte (never 0b11).
        (0..4).fold(0u8, |b, i| b | (((rng.next_u64() % 3) as u8) << (2 * i)))
    }).collect();
    let q: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as i8).collect();
    let ws = (0..copies).map(|_| dev.upload(&packed)).collect::<Result<Vec<_>, _>>()?;
    let qs = (0..copies).map(|_| dev.upload(&q)).collect::<Result<Vec<_>, _>>()?;
    let scale = dev.upload(&vec![1.0f32; m])?;
    let mut out = dev.zeros::<bf16>(m * n)?;
    let mut time = |tile: TernaryTile| {
        time_calls(dev, SAMPLES, |i| {
            let j = i % copies;
            let wv = TensorView::contiguous(ws[j].as_view(), [n / 4, k])?;
            let qv = TensorView::contiguous(qs[j].as_view(), [m, k])?;
            let sv = TensorView::contiguous(scale.as_view(), [m])?;
            let mut o = TensorViewMut::contiguous(out.as_view_mut(), [m, n])?;
            matmul_ternary_with_tile(dev, &qv, &sv, PackedTernary { packed: &wv, scale: 1.0 }, None, &mut o, Some(tile))
        })
    };
    let hopper = dev.info().compute_capability == (9, 0);
    let planned = plan(m, n, k, dev.info().sm_count as usize, hopper);
    let record = |shape: String, t| {
        if m <= 64 {
            BenchRecord::bandwidth("matmul_ternary", "i8", shape, t, bytes, ceilings)
        } else {
            BenchRecord::compute("matmul_ternary", "i8", shape, t, bytes, flops, ceilings)
        }
    };
    let mut records = vec![record(format!("{m}x{n}x{k}"), time(planned)?)];
    let mut tiles = vec![planned];
    if planned.k_splits > 1 {
        let whole = TernaryTile::unsplit(planned.block_m);
        records[0].add_alternative(&format!("warpcore without split-k ({whole})"), time(whole)?.median_us);
    }
    let heights = BLOCK_M.into_iter().chain(hopper.then_some(HOPPER_BLOCK_M));
    for block_m in heights.filter(|&b| b != planned.block_m) {
        records.push(record(format!("{m}x{n}x{k} block{block_m}"), time(TernaryTile::unsplit(block_m))?));
        tiles.push(TernaryTile::unsplit(block_m));
    }
    #[cfg(feature = "model")]
    if let Some(us) = time_cublas_bf16(dev, m, n, k)? {
        records[0].add_alternative("cuBLAS bf16 (unpacked weights)", us);
    }
    // Each record's tile once more on the first copy into a NaN-poisoned output; the sampled
    // rows against the f64 reference over exact integer sums (the operands' host copies: every
    // copy was uploaded from them).
    let rows = sample_rows(m);
    let values = reference::unpack(&packed, k).ok_or_else(|| crate::Error::Unsupported { op: "bench::matmul_ternary", what: "packed weights", value: "a 0b11 code".into() })?;
    let act = QuantizedActivations { q: rows.iter().flat_map(|&r| q[r * k..(r + 1) * k].iter().copied()).collect(), scale: rows.iter().map(|_| 1.0).collect() };
    let (want, bound) = ternary_reference(&act, &TernaryWeights { values, scale: 1.0 }, k);
    for (record, tile) in records.iter_mut().zip(tiles) {
        fill(dev, &mut out, bf16::NAN)?;
        {
            let wv = TensorView::contiguous(ws[0].as_view(), [n / 4, k])?;
            let qv = TensorView::contiguous(qs[0].as_view(), [m, k])?;
            let sv = TensorView::contiguous(scale.as_view(), [m])?;
            let mut o = TensorViewMut::contiguous(out.as_view_mut(), [m, n])?;
            matmul_ternary_with_tile(dev, &qv, &sv, PackedTernary { packed: &wv, scale: 1.0 }, None, &mut o, Some(tile))?;
        }
        let got = download_rows(dev, &out, &rows, n)?;
        record.output = Some(OutputCheck::of(&format!("{} (tile {tile})", rows_label(&rows, m, "f64")), &compare_ternary(&got, &want, &bound, n)));
    }
    Ok(records)
}

/// cuBLAS bf16 `[m, k] × [n, k]ᵀ` (the model's GEMM); None without cuBLAS.
#[cfg(feature = "model")]
fn time_cublas_bf16(dev: &Device, m: usize, n: usize, k: usize) -> Result<Option<f64>> {
    let Ok(gemm) = crate::model::gemm::Gemm::new(dev) else { return Ok(None) };
    let copies = rotation_copies(2 * (n * k + m * k));
    let ws = (0..copies).map(|i| super::random_buffer::<bf16>(dev, n * k, -1.0, 1.0, 10 + i as u64)).collect::<Result<Vec<_>>>()?;
    let x = super::random_buffer::<bf16>(dev, m * k, -1.0, 1.0, 3)?;
    let mut y = dev.zeros::<bf16>(m * n)?;
    let t = time_calls(dev, SAMPLES, |i| {
        let wv = TensorView::contiguous(ws[i % copies].as_view(), [n, k])?;
        let xv = TensorView::contiguous(x.as_view(), [m, k])?;
        let mut yv = TensorViewMut::contiguous(y.as_view_mut(), [m, n])?;
        gemm.linear(dev, &xv, &wv, &mut yv)
    })?;
    Ok(Some(t.median_us))
}

/// quantize_activations of bf16 `[m, k]`: bytes 2·m·k read + m·k written + 4·m.
pub fn bench_quantize_activations(dev: &Device, ceilings: &Ceilings, m: usize, k: usize) -> Result<BenchRecord> {
    let bytes = 3 * m * k + 4 * m;
    let copies = rotation_copies(bytes);
    let xs = (0..copies).map(|i| super::random_buffer::<bf16>(dev, m * k, -4.0, 4.0, 20 + i as u64)).collect::<Result<Vec<_>>>()?;
    let mut q = dev.zeros::<i8>(m * k)?;
    let mut s = dev.zeros::<f32>(m)?;
    let t = time_calls(dev, SAMPLES, |i| {
        let xv = TensorView::contiguous(xs[i % copies].as_view(), [m, k])?;
        let mut qv = TensorViewMut::contiguous(q.as_view_mut(), [m, k])?;
        let mut sv = TensorViewMut::contiguous(s.as_view_mut(), [m])?;
        quantize_activations(dev, &xv, &mut qv, &mut sv)
    })?;
    let mut r = BenchRecord::bandwidth("quantize_activations", "bf16", format!("{m}x{k}"), t, bytes as f64, ceilings);
    // Once more on the first copy into poisoned codes (−128, which the quantizer never writes)
    // and scales (NaN); the sampled rows bit for bit against transformers' f32 arithmetic.
    fill(dev, &mut q, i8::MIN)?;
    fill(dev, &mut s, f32::NAN)?;
    {
        let xv = TensorView::contiguous(xs[0].as_view(), [m, k])?;
        let mut qv = TensorViewMut::contiguous(q.as_view_mut(), [m, k])?;
        let mut sv = TensorViewMut::contiguous(s.as_view_mut(), [m])?;
        quantize_activations(dev, &xv, &mut qv, &mut sv)?;
    }
    let rows = sample_rows(m);
    let x: Vec<f32> = download_rows(dev, &xs[0], &rows, k)?.iter().map(|v| v.to_f32()).collect();
    let want = reference::quantize_activations(&x, k);
    let comparisons = compare_quantized(&download_rows(dev, &q, &rows, k)?, &download_rows(dev, &s, &rows, 1)?, &want);
    r.output = Some(OutputCheck::of(&rows_label(&rows, m, "transformers' f32"), &comparisons));
    Ok(r)
}

/// rms_norm_quantize_activations of bf16 `[m, k]` (bytes 2·m·k read + m·k written + 4·m), with
/// rms_norm then quantize_activations (the bf16 row written and read back) as the alternative.
pub fn bench_rms_norm_quantize(dev: &Device, ceilings: &Ceilings, m: usize, k: usize) -> Result<BenchRecord> {
    let bytes = 3 * m * k + 4 * m;
    let copies = rotation_copies(bytes);
    let xs = (0..copies).map(|i| super::random_buffer::<bf16>(dev, m * k, -4.0, 4.0, 30 + i as u64)).collect::<Result<Vec<_>>>()?;
    let w = super::random_buffer::<bf16>(dev, k, 0.5, 1.5, 3)?;
    let mut normed = dev.zeros::<bf16>(m * k)?;
    let mut q = dev.zeros::<i8>(m * k)?;
    let mut s = dev.zeros::<f32>(m)?;
    let cfg = RmsNormConfig::new(1e-5);
    let fused = time_calls(dev, SAMPLES, |i| {
        let xv = TensorView::contiguous(xs[i % copies].as_view(), [m, k])?;
        let mut qv = TensorViewMut::contiguous(q.as_view_mut(), [m, k])?;
        let mut sv = TensorViewMut::contiguous(s.as_view_mut(), [m])?;
        rms_norm_quantize_activations(dev, &xv, &TensorView::contiguous(w.as_view(), [k])?, cfg, &mut qv, &mut sv)
    })?;
    let unfused = time_calls(dev, SAMPLES, |i| {
        let xv = TensorView::contiguous(xs[i % copies].as_view(), [m, k])?;
        rms_norm(dev, &xv, &TensorView::contiguous(w.as_view(), [k])?, &mut TensorViewMut::contiguous(normed.as_view_mut(), [m, k])?, cfg)?;
        let mut qv = TensorViewMut::contiguous(q.as_view_mut(), [m, k])?;
        let mut sv = TensorViewMut::contiguous(s.as_view_mut(), [m])?;
        quantize_activations(dev, &TensorView::contiguous(normed.as_view(), [m, k])?, &mut qv, &mut sv)
    })?;
    let mut r = BenchRecord::bandwidth("rms_norm_quantize_activations", "bf16", format!("{m}x{k}"), fused, bytes as f64, ceilings);
    r.add_alternative("rms_norm then quantize_activations", unfused.median_us);
    // The fused op once more on the first copy into poisoned codes and scales; the sampled rows
    // against the f64 norm, as check_rms_norm_quantize_activations bounds them.
    fill(dev, &mut q, i8::MIN)?;
    fill(dev, &mut s, f32::NAN)?;
    {
        let xv = TensorView::contiguous(xs[0].as_view(), [m, k])?;
        let mut qv = TensorViewMut::contiguous(q.as_view_mut(), [m, k])?;
        let mut sv = TensorViewMut::contiguous(s.as_view_mut(), [m])?;
        rms_norm_quantize_activations(dev, &xv, &TensorView::contiguous(w.as_view(), [k])?, cfg, &mut qv, &mut sv)?;
    }
    let rows = sample_rows(m);
    let normed = crate::reference::rms_norm::rms_norm(&download_rows(dev, &xs[0], &rows, k)?, &dev.download(&w)?, cfg);
    let comparisons = compare_norm_quantized(&download_rows(dev, &q, &rows, k)?, &download_rows(dev, &s, &rows, 1)?, &normed, k);
    r.output = Some(OutputCheck::of(&rows_label(&rows, m, "f64"), &comparisons));
    Ok(r)
}

/// Sampled rows' codes and scales of `quantize_activations` bit for bit against the reference
/// (`check_quantize_activations`' comparisons; poison left in fails).
fn compare_quantized(q: &[i8], scale: &[f32], want: &QuantizedActivations) -> Vec<Comparison> {
    let ints = |v: &[i8]| v.iter().map(|&b| b as i32).collect::<Vec<_>>();
    vec![compare_ints("q (bit-exact)", &ints(q), &ints(&want.q)), compare_exact("scale (bit-exact)", scale, &want.scale)]
}

/// Sampled rows' codes and scales of `rms_norm_quantize_activations` against the f64 norm
/// `normed` (`[rows, k]`), as `check_rms_norm_quantize_activations` bounds them: each code within
/// half a step (+1e-3) of `normed · scale`, the scale `127 / max|normed|` within 1e-5 relative.
fn compare_norm_quantized(q: &[i8], scale: &[f32], normed: &[f64], k: usize) -> Vec<Comparison> {
    let mut want_s = Vec::with_capacity(scale.len());
    let mut want_q = Vec::with_capacity(normed.len());
    for row in normed.chunks_exact(k) {
        let s = 127.0 / row.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-5);
        want_s.push(s);
        want_q.extend(row.iter().map(|v| (v * s).clamp(-128.0, 127.0)));
    }
    let codes: Vec<f32> = q.iter().map(|&v| v as f32).collect();
    vec![
        compare_bounded("q (within half a step of the f64 value)", &codes, &want_q, &vec![0.501; want_q.len()], f64::INFINITY).in_rows(k),
        compare_bounded("scale", scale, &want_s, &want_s.iter().map(|s| 1e-5 * s).collect::<Vec<_>>(), f64::INFINITY),
    ]
}

/// Every ternary benchmark `warpcore bench` runs.
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    for &m in &[1, 32, 2048] {
        for &(n, k) in LAYERS {
            out.extend(bench_matmul_ternary(dev, ceilings, m, n, k)?);
        }
    }
    for &(m, k) in &[(1, 2560), (2048, 2560), (2048, 6912)] {
        out.push(bench_quantize_activations(dev, ceilings, m, k)?); super::checkpoint(out);
        out.push(bench_rms_norm_quantize(dev, ceilings, m, k)?); super::checkpoint(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_every_small_output_row_or_the_ends_and_the_middle() {
        assert_eq!(sample_rows(2048), [0, 1, 1024, 2047]);
        assert_eq!(sample_rows(32), (0..32).collect::<Vec<_>>());
        assert_eq!(rows_label(&[0, 1, 1024, 2047], 2048, "f64"), "rows 0, 1, 1024, 2047 of 2048 vs f64");
    }

    /// The bench's operands (full-range int8 codes, ternary weights, unit scales): the exact
    /// output rounded to bf16 passes; a sampled row zeroed, or one element left NaN, fails.
    #[test]
    fn the_ternary_check_passes_a_right_output_and_fails_a_wrong_row_or_poison() {
        let (rows, n, k) = (4, 64, 2560);
        let mut rng = Rng::new(5);
        let act = QuantizedActivations { q: (0..rows * k).map(|_| rng.next_u64() as i8).collect(), scale: vec![1.0; rows] };
        let packed: Vec<u8> = (0..n / 4 * k).map(|_| (0..4).fold(0u8, |b, i| b | (((rng.next_u64() % 3) as u8) << (2 * i)))).collect();
        let values = reference::unpack(&packed, k).unwrap();
        let (want, bound) = ternary_reference(&act, &TernaryWeights { values, scale: 1.0 }, k);
        let right: Vec<bf16> = want.iter().map(|&v| bf16::from_f64(v)).collect();
        assert!(OutputCheck::of("x", &compare_ternary(&right, &want, &bound, n)).passed);
        let mut wrong = right.clone();
        wrong[2 * n..3 * n].fill(bf16::ZERO);
        let c = OutputCheck::of("x", &compare_ternary(&wrong, &want, &bound, n));
        assert!(!c.passed && c.detail.contains("failing rows"), "{c:?}");
        let mut poisoned = right.clone();
        poisoned[n + 5] = bf16::NAN;
        assert!(!OutputCheck::of("x", &compare_ternary(&poisoned, &want, &bound, n)).passed);
    }

    /// quantize_activations: the reference's codes and scales pass; a row left as poison (−128,
    /// NaN scale) fails. rms_norm_quantize_activations: codes rounded from the f64 norm pass; a
    /// poisoned row fails.
    #[test]
    fn the_quantize_checks_pass_the_reference_and_fail_poison() {
        let (rows, k) = (4, 256);
        let mut rng = Rng::new(6);
        let x: Vec<bf16> = rng.vec(rows * k, -4.0, 4.0);
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let want = reference::quantize_activations(&xf, k);
        assert!(OutputCheck::of("x", &compare_quantized(&want.q, &want.scale, &want)).passed);
        let (mut q, mut s) = (want.q.clone(), want.scale.clone());
        q[k..2 * k].fill(i8::MIN);
        assert!(!OutputCheck::of("x", &compare_quantized(&q, &want.scale, &want)).passed);
        s[3] = f32::NAN;
        assert!(!OutputCheck::of("x", &compare_quantized(&want.q, &s, &want)).passed);

        let w: Vec<bf16> = rng.vec(k, 0.5, 1.5);
        let normed = crate::reference::rms_norm::rms_norm(&x, &w, RmsNormConfig::new(1e-5));
        let mut scale = Vec::new();
        let mut codes = Vec::new();
        for row in normed.chunks_exact(k) {
            let s = 127.0 / row.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            scale.push(s as f32);
            codes.extend(row.iter().map(|v| (v * s).round() as i8));
        }
        assert!(OutputCheck::of("x", &compare_norm_quantized(&codes, &scale, &normed, k)).passed);
        let mut poisoned = codes.clone();
        poisoned[2 * k..3 * k].fill(i8::MIN);
        assert!(!OutputCheck::of("x", &compare_norm_quantized(&poisoned, &scale, &normed, k)).passed);
        scale[0] = f32::NAN;
        assert!(!OutputCheck::of("x", &compare_norm_quantized(&codes, &scale, &normed, k)).passed);
    }
}
