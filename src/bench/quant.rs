//! Benchmarks of FP8 quantization (bar: ≥ 85% of the copy bandwidth) and of the fused norm →
//! FP8 ops against the unfused pair (rms_norm, then quantize_fp8) timed in the same run; the
//! fused GLU → FP8 against glu, then quantize_fp8.
//! Bytes counted: x read once (2 B/element), codes written once (1 B), scales written once;
//! the fused add also reads and writes the residual; the weight is read once. Per tensor, the
//! record times `quantize_fp8` on the planner's choice (the single pass where it applies) and
//! the two-kernel plan (`quantize_fp8_with_plan`) as the alternative "two kernels".

use super::{random_buffer, rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::{compare, compare_bounded, compare_exact, compare_ints, Comparison, Rng, Tolerance};
use crate::reference::quant::{self as reference, e4m3_error_bound, e4m3_ordinal, Quantized};
use cudarc::driver::CudaSlice;
use crate::ops::quant::{fused_add_rms_norm_quant_fp8, glu_quant_fp8, quantize_fp8, quantize_fp8_with_plan, rms_norm_quant_fp8, ScaleGranularity, TensorQuantPlan};
use crate::reference::mlp::GluActivation;
use crate::ops::rms_norm::{fused_add_rms_norm, rms_norm, RmsNormConfig};
use crate::{DType, Device, Result, TensorView, TensorViewMut, F8E4M3};
use half::bf16;

const SAMPLES: usize = 25;

fn scale_count(g: ScaleGranularity, rows: usize, cols: usize) -> usize {
    g.scale_shape(rows, cols).iter().product()
}

/// `quantize_fp8` bf16 → e4m3 on `[rows, cols]`.
pub fn bench_quantize(dev: &Device, ceilings: &Ceilings, rows: usize, cols: usize, g: ScaleGranularity) -> Result<BenchRecord> {
    let n = rows * cols;
    let ns = scale_count(g, rows, cols);
    let bytes = 3 * n + 4 * ns;
    let copies = rotation_copies(bytes);
    let xs: Vec<_> = (0..copies).map(|i| random_buffer::<bf16>(dev, n, -4.0, 4.0, i as u64)).collect::<Result<_>>()?;
    let mut outs: Vec<_> = (0..copies).map(|_| dev.zeros::<F8E4M3>(n)).collect::<Result<_>>()?;
    let mut scale = dev.zeros::<f32>(ns)?;
    let shape = g.scale_shape(rows, cols);
    // `plan`: None runs quantize_fp8 (the planner's choice per tensor), Some a forced plan.
    let mut time = |plan: Option<TensorQuantPlan>| {
        time_calls(dev, SAMPLES, |i| {
            let j = i % copies;
            let x = TensorView::contiguous(xs[j].as_view(), [rows, cols])?;
            let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [rows, cols])?;
            let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
            match plan {
                None => quantize_fp8(dev, &x, &mut o, &mut s, g),
                Some(p) => quantize_fp8_with_plan(dev, &x, &mut o, &mut s, p),
            }
        })
    };
    let t = time(None)?;
    let mut r = BenchRecord::bandwidth("quantize_fp8", "bf16", format!("{rows}x{cols} {}", g.name()), t, bytes as f64, ceilings);
    if g == ScaleGranularity::PerTensor {
        r.add_alternative("two kernels", time(Some(TensorQuantPlan::TwoKernels))?.median_us);
    }
    // The output check (quantize_fp8, the planner's choice, on copy 0): the sampled rows' codes
    // and the scales of the blocks they fall in, poisoned first; the reference quantizes the
    // whole rows those scales cover (the whole tensor per tensor: 58 MB at 4096×7168).
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut outs[0], &sample, cols, cols)?;
    dev.stream().memcpy_htod(&vec![f32::NAN; ns], &mut scale)?;
    quantize_fp8(
        dev,
        &TensorView::contiguous(xs[0].as_view(), [rows, cols])?,
        &mut TensorViewMut::contiguous(outs[0].as_view_mut(), [rows, cols])?,
        &mut TensorViewMut::contiguous(scale.as_view_mut(), shape)?,
        g,
    )?;
    let br = g.block(rows, cols).0;
    let mut slabs: Vec<(usize, Vec<bf16>)> = Vec::new();
    for &row in &sample {
        let s = row / br;
        if slabs.last().is_none_or(|(last, _)| *last != s) {
            let covered: Vec<usize> = (s * br..((s + 1) * br).min(rows)).collect();
            slabs.push((s, download_block(dev, &xs[0], s * br * cols, covered.len() * cols)?));
        }
    }
    let codes = download_rows(dev, &outs[0], &sample, cols, cols)?;
    let comparisons = quantize_comparisons(&slabs, &sample, rows, cols, g, &codes, &dev.download(&scale)?);
    r.output = Some(OutputCheck::of(&sample_text(&sample, rows), &comparisons));
    Ok(r)
}

/// Rows the output check samples: every row when at most 32, else 0, 1, rows/2 and the last.
fn sampled_rows(rows: usize) -> Vec<usize> {
    if rows <= 32 {
        return (0..rows).collect();
    }
    vec![0, 1, rows / 2, rows - 1]
}

/// The sample's name in the check's detail, e.g. "rows 0, 1, 2048, 4095 of 4096 vs f64".
fn sample_text(rows: &[usize], total: usize) -> String {
    if rows.len() == total {
        return format!("all {total} rows vs f64");
    }
    format!("rows {} of {total} vs f64", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
}

/// `len` elements of `buf` from `at`.
fn download_block<T: DType>(dev: &Device, buf: &CudaSlice<T>, at: usize, len: usize) -> Result<Vec<T>> {
    dev.download(&buf.slice(at..at + len))
}

/// The first `cols` elements of each of `rows` (rows `stride` elements apart), concatenated.
fn download_rows<T: DType>(dev: &Device, buf: &CudaSlice<T>, rows: &[usize], cols: usize, stride: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend(download_block(dev, buf, r * stride, cols)?);
    }
    Ok(out)
}

/// Writes `values` (`rows.len()` rows of `cols`) over the first `cols` elements of each of `rows`.
fn upload_rows<T: DType>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, stride: usize, values: &[T]) -> Result<()> {
    for (i, &r) in rows.iter().enumerate() {
        dev.stream().memcpy_htod(&values[i * cols..(i + 1) * cols], &mut buf.slice_mut(r * stride..r * stride + cols))?;
    }
    Ok(())
}

/// Writes the poison (NaN) over the first `cols` elements of each of `rows`.
fn poison_rows<T: DType>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, stride: usize) -> Result<()> {
    upload_rows(dev, buf, rows, cols, stride, &vec![T::NAN; rows.len() * cols])
}

/// Elements of a sampled output still holding the NaN poison (the run did not write them).
fn poison_left<T: DType>(what: &'static str, got: &[T]) -> Comparison {
    compare_ints(what, &[got.iter().filter(|v| v.to_f64().is_nan()).count() as i32], &[0])
}

/// Codes as their positions on the e4m3 number line (adjacent values differ by 1).
fn ordinals(q: &[F8E4M3]) -> Vec<f32> {
    q.iter().map(|&c| e4m3_ordinal(c) as f32).collect()
}

/// quantize_fp8's sampled rows against `reference::quantize`, bit for bit (codes and scales):
/// `slabs` holds, for each block row `s` a sampled row falls in (in the sample's order), the
/// x rows its scales cover; `codes` the sampled rows' codes; `scales` the whole dense scale
/// tensor `g.scale_shape(rows, cols)`.
fn quantize_comparisons(slabs: &[(usize, Vec<bf16>)], sample: &[usize], rows: usize, cols: usize, g: ScaleGranularity, codes: &[F8E4M3], scales: &[f32]) -> Vec<Comparison> {
    let br = g.block(rows, cols).0;
    let sc = g.scale_shape(rows, cols)[1];
    let wants: Vec<(usize, Quantized)> = slabs.iter().map(|(s, x)| (*s, reference::quantize(x, x.len() / cols, cols, g))).collect();
    let (mut want_codes, mut got_scales, mut want_scales) = (Vec::new(), Vec::new(), Vec::new());
    for &r in sample {
        let Some((s, want)) = wants.iter().find(|(s, _)| *s == r / br) else { continue };
        want_codes.extend_from_slice(&want.q[(r - s * br) * cols..][..cols]);
        got_scales.extend_from_slice(&scales[s * sc..][..sc]);
        want_scales.extend_from_slice(&want.scale[..sc]);
    }
    vec![
        poison_left("poison left in the codes", codes),
        poison_left("poison left in the scales", &got_scales),
        compare_exact("codes (bit-exact)", codes, &want_codes).in_rows(cols),
        compare_exact("scales (bit-exact)", &got_scales, &want_scales),
    ]
}

/// The fused norm / GLU → FP8 ops' sampled rows against their reference (`want`, and the exact
/// f64 values `exact`), check::quant's error model: scales within f32 slack of the reference,
/// codes within one e4m3 step of it, dequantized values within half a step (plus `slack`
/// relative) of the exact ones; no poison left.
fn fused_quant_comparisons(want: &Quantized, exact: &[f64], codes: &[F8E4M3], scales: &[f32], slack: f64) -> Vec<Comparison> {
    let got = Quantized { rows: want.rows, cols: want.cols, granularity: want.granularity, q: codes.to_vec(), scale: scales.to_vec() };
    let cols = want.cols;
    let scale_tol = Tolerance { atol: 0.0, rtol: 2f64.powi(-16), frobenius: 2f64.powi(-16) };
    let one_step = vec![1.0; codes.len()];
    let deq: Vec<f32> = got.dequantize().iter().map(|&v| v as f32).collect();
    let half_step: Vec<f64> =
        exact.iter().enumerate().map(|(i, &v)| e4m3_error_bound(v, got.scale_at(i / cols, i % cols) as f64) * (1.0 + 2f64.powi(-10)) + v.abs() * slack).collect();
    vec![
        poison_left("poison left in the codes", codes),
        poison_left("poison left in the scales", scales),
        compare("scales (f32 vs f64)", scales, &want.scale.iter().map(|&s| s as f64).collect::<Vec<_>>(), scale_tol),
        compare_bounded("codes within one e4m3 step of the reference", &ordinals(codes), &ordinals(&want.q).iter().map(|&v| v as f64).collect::<Vec<_>>(), &one_step, f64::INFINITY)
            .in_rows(cols),
        compare_bounded("dequantized vs the exact f64 values", &deq, exact, &half_step, 2f64.powi(-4)),
    ]
}

/// The norm → FP8 ops' sampled rows: x (and the residual before and after, with the fused add)
/// against `reference::rms_norm_quant` / `fused_add_rms_norm_quant`; the residual bit for bit.
fn norm_quant_comparisons(x: &[bf16], residual: Option<(&[bf16], &[bf16])>, w: &[bf16], g: ScaleGranularity, codes: &[F8E4M3], scales: &[f32]) -> Vec<Comparison> {
    let cfg = RmsNormConfig::new(1e-6);
    match residual {
        Some((before, after)) => {
            let (sum, want, exact) = reference::fused_add_rms_norm_quant(x, before, w, cfg, g);
            let mut c = fused_quant_comparisons(&want, &exact, codes, scales, 2f64.powi(-23));
            c.push(compare_exact("residual (exact)", after, &sum));
            c
        }
        None => {
            let (want, exact) = reference::rms_norm_quant(x, w, cfg, g);
            fused_quant_comparisons(&want, &exact, codes, scales, 2f64.powi(-23))
        }
    }
}

/// glu_quant_fp8's sampled rows (`gate_up` rows of 2·cols) against `reference::glu_quant`.
fn glu_quant_comparisons(gate_up: &[bf16], cols: usize, g: ScaleGranularity, codes: &[F8E4M3], scales: &[f32]) -> Vec<Comparison> {
    let rows = gate_up.len() / (2 * cols);
    let gate = crate::check::gather_rows(gate_up, 0, rows, cols, 2 * cols);
    let up = crate::check::gather_rows(gate_up, cols, rows, cols, 2 * cols);
    let (want, exact) = reference::glu_quant(&gate, &up, cols, GluActivation::Silu, g);
    fused_quant_comparisons(&want, &exact, codes, scales, 2f64.powi(-20))
}

/// Fused (residual add +) RMSNorm → FP8 on `[tokens, hidden]`, with the unfused pair
/// (fused_add_rms_norm or rms_norm into a bf16 buffer, then quantize_fp8) as the alternative.
pub fn bench_norm_quant(dev: &Device, ceilings: &Ceilings, tokens: usize, hidden: usize, g: ScaleGranularity, add: bool) -> Result<BenchRecord> {
    let n = tokens * hidden;
    let ns = scale_count(g, tokens, hidden);
    let bytes = if add { 2 * n + 2 * 2 * n } else { 2 * n } + n + 4 * ns + 2 * hidden;
    let copies = rotation_copies(bytes);
    let xs: Vec<_> = (0..copies).map(|i| random_buffer::<bf16>(dev, n, -3.0, 3.0, i as u64)).collect::<Result<_>>()?;
    let mut rs: Vec<_> = (0..copies).map(|i| random_buffer::<bf16>(dev, n, -3.0, 3.0, 100 + i as u64)).collect::<Result<_>>()?;
    let mut outs: Vec<_> = (0..copies).map(|_| dev.zeros::<F8E4M3>(n)).collect::<Result<_>>()?;
    let mut tmp: Vec<_> = (0..copies).map(|_| dev.zeros::<bf16>(n)).collect::<Result<_>>()?;
    let w = random_buffer::<bf16>(dev, hidden, -1.0, 1.0, 7)?;
    let mut scale = dev.zeros::<f32>(ns)?;
    let wv = TensorView::contiguous(w.as_view(), [hidden])?;
    let shape = g.scale_shape(tokens, hidden);
    let cfg = RmsNormConfig::new(1e-6);
    let fused = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let x = TensorView::contiguous(xs[j].as_view(), [tokens, hidden])?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [tokens, hidden])?;
        let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
        if add {
            let mut r = TensorViewMut::contiguous(rs[j].as_view_mut(), [tokens, hidden])?;
            fused_add_rms_norm_quant_fp8(dev, &x, &mut r, &wv, &mut o, &mut s, g, cfg)
        } else {
            rms_norm_quant_fp8(dev, &x, &wv, &mut o, &mut s, g, cfg)
        }
    })?;
    let unfused = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        // The unfused pipeline: normalise into bf16 (in place for the fused add), then quantize.
        if add {
            let mut x = TensorViewMut::contiguous(tmp[j].as_view_mut(), [tokens, hidden])?;
            let mut r = TensorViewMut::contiguous(rs[j].as_view_mut(), [tokens, hidden])?;
            fused_add_rms_norm(dev, &mut x, &mut r, &wv, cfg)?;
        } else {
            let x = TensorView::contiguous(xs[j].as_view(), [tokens, hidden])?;
            let mut y = TensorViewMut::contiguous(tmp[j].as_view_mut(), [tokens, hidden])?;
            rms_norm(dev, &x, &wv, &mut y, cfg)?;
        }
        let y = TensorView::contiguous(tmp[j].as_view(), [tokens, hidden])?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [tokens, hidden])?;
        let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
        quantize_fp8(dev, &y, &mut o, &mut s, g)
    })?;
    let op = if add { "fused_add_rms_norm_quant_fp8" } else { "rms_norm_quant_fp8" };
    let mut r = BenchRecord::bandwidth(op, "bf16", format!("{tokens}x{hidden} {}", g.name()), fused, bytes as f64, ceilings);
    r.add_alternative(if add { "fused_add_rms_norm + quantize_fp8" } else { "rms_norm + quantize_fp8" }, unfused.median_us);
    // The output check (the fused op on copy 0): the sampled rows' codes and scales poisoned,
    // their residual rows fresh (after thousands of in-place adds the timed residual is too
    // large for x to move it in bf16: a call that skipped the add would leave it right).
    // Per-row granularities only (a scale never spans rows).
    if g.block(tokens, hidden).0 == 1 {
        let sample = sampled_rows(tokens);
        let sc = shape[1];
        let r_before: Vec<bf16> = Rng::new(21).vec(sample.len() * hidden, -3.0, 3.0);
        poison_rows(dev, &mut outs[0], &sample, hidden, hidden)?;
        poison_rows(dev, &mut scale, &sample, sc, sc)?;
        upload_rows(dev, &mut rs[0], &sample, hidden, hidden, &r_before)?;
        {
            let x = TensorView::contiguous(xs[0].as_view(), [tokens, hidden])?;
            let mut o = TensorViewMut::contiguous(outs[0].as_view_mut(), [tokens, hidden])?;
            let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
            if add {
                fused_add_rms_norm_quant_fp8(dev, &x, &mut TensorViewMut::contiguous(rs[0].as_view_mut(), [tokens, hidden])?, &wv, &mut o, &mut s, g, cfg)?;
            } else {
                rms_norm_quant_fp8(dev, &x, &wv, &mut o, &mut s, g, cfg)?;
            }
        }
        let x = download_rows(dev, &xs[0], &sample, hidden, hidden)?;
        let codes = download_rows(dev, &outs[0], &sample, hidden, hidden)?;
        let scales = download_rows(dev, &scale, &sample, sc, sc)?;
        let r_after = if add { download_rows(dev, &rs[0], &sample, hidden, hidden)? } else { Vec::new() };
        let comparisons = norm_quant_comparisons(&x, add.then_some((&r_before[..], &r_after[..])), &dev.download(&w)?, g, &codes, &scales);
        r.output = Some(OutputCheck::of(&sample_text(&sample, tokens), &comparisons));
    }
    Ok(r)
}

/// Fused SwiGLU → FP8 on `rows` rows of a `[rows, 2 · inter]` gate_up buffer (bytes: gate_up
/// read, codes and scales written), with `glu` into bf16 then `quantize_fp8` as the alternative
/// (when the elementwise family is built).
pub fn bench_glu_quant(dev: &Device, ceilings: &Ceilings, rows: usize, inter: usize, g: ScaleGranularity) -> Result<BenchRecord> {
    let n = rows * inter;
    let ns = scale_count(g, rows, inter);
    let bytes = 2 * 2 * n + n + 4 * ns;
    let copies = rotation_copies(bytes);
    let gus: Vec<_> = (0..copies).map(|i| random_buffer::<bf16>(dev, 2 * n, -4.0, 4.0, i as u64)).collect::<Result<_>>()?;
    let mut outs: Vec<_> = (0..copies).map(|_| dev.zeros::<F8E4M3>(n)).collect::<Result<_>>()?;
    let mut scale = dev.zeros::<f32>(ns)?;
    let shape = g.scale_shape(rows, inter);
    fn halves(gu: &cudarc::driver::CudaSlice<bf16>, rows: usize, inter: usize) -> Result<(TensorView<'_, bf16, 2>, TensorView<'_, bf16, 2>)> {
        Ok((TensorView::new(gu.as_view(), [rows, inter], [2 * inter, 1])?, TensorView::new(gu.slice(inter..), [rows, inter], [2 * inter, 1])?))
    }
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let (gate, up) = halves(&gus[j], rows, inter)?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [rows, inter])?;
        let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
        glu_quant_fp8(dev, &gate, &up, GluActivation::Silu, &mut o, &mut s, g)
    })?;
    #[allow(unused_mut)]
    let mut r = BenchRecord::bandwidth("glu_quant_fp8", "bf16", format!("{rows}x{inter} {}", g.name()), t, bytes as f64, ceilings);
    #[cfg(feature = "elementwise")]
    {
        let mut tmp: Vec<_> = (0..copies).map(|_| dev.zeros::<bf16>(n)).collect::<Result<_>>()?;
        let unfused = time_calls(dev, SAMPLES, |i| {
            let j = i % copies;
            let (gate, up) = halves(&gus[j], rows, inter)?;
            crate::ops::elementwise::glu(dev, &gate, &up, &mut TensorViewMut::contiguous(tmp[j].as_view_mut(), [rows, inter])?, GluActivation::Silu)?;
            let y = TensorView::contiguous(tmp[j].as_view(), [rows, inter])?;
            let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [rows, inter])?;
            let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
            quantize_fp8(dev, &y, &mut o, &mut s, g)
        })?;
        r.add_alternative("glu + quantize_fp8", unfused.median_us);
    }
    // The output check (copy 0): the sampled rows' codes and scales poisoned, then against the
    // reference on the same gate_up rows. Per-row granularities only.
    if g.block(rows, inter).0 == 1 {
        let sample = sampled_rows(rows);
        let sc = shape[1];
        poison_rows(dev, &mut outs[0], &sample, inter, inter)?;
        poison_rows(dev, &mut scale, &sample, sc, sc)?;
        {
            let (gate, up) = halves(&gus[0], rows, inter)?;
            let mut o = TensorViewMut::contiguous(outs[0].as_view_mut(), [rows, inter])?;
            let mut s = TensorViewMut::contiguous(scale.as_view_mut(), shape)?;
            glu_quant_fp8(dev, &gate, &up, GluActivation::Silu, &mut o, &mut s, g)?;
        }
        let gate_up = download_rows(dev, &gus[0], &sample, 2 * inter, 2 * inter)?;
        let codes = download_rows(dev, &outs[0], &sample, inter, inter)?;
        let scales = download_rows(dev, &scale, &sample, sc, sc)?;
        r.output = Some(OutputCheck::of(&sample_text(&sample, rows), &glu_quant_comparisons(&gate_up, inter, g, &codes, &scales)));
    }
    Ok(r)
}

/// Every quantization benchmark `warpcore bench` runs: DeepSeek-V3 shapes (hidden 7168;
/// weights 7168 × 2048 and 18432 × 7168 in 128×128 blocks).
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    use ScaleGranularity::*;
    for g in [PerTensor, PerRow, Group128] {
        out.push(bench_quantize(dev, ceilings, 4096, 7168, g)?); super::checkpoint(out);
    }
    out.push(bench_quantize(dev, ceilings, 64, 4096, PerTensor)?); super::checkpoint(out);
    out.push(bench_quantize(dev, ceilings, 128, 7168, Group128)?); super::checkpoint(out);
    out.push(bench_quantize(dev, ceilings, 7168, 2048, Block128)?); super::checkpoint(out);
    out.push(bench_quantize(dev, ceilings, 18432, 7168, Block128)?); super::checkpoint(out);
    for g in [PerRow, Group128] {
        for add in [false, true] {
            out.push(bench_norm_quant(dev, ceilings, 4096, 7168, g, add)?); super::checkpoint(out);
        }
    }
    out.push(bench_norm_quant(dev, ceilings, 128, 7168, Group128, true)?); super::checkpoint(out);
    // DeepSeek-V3's experts (inter 2048) at 2048 prefill tokens × top-8, and its dense MLP
    // (18432) at 128 tokens.
    out.push(bench_glu_quant(dev, ceilings, 16384, 2048, Group128)?); super::checkpoint(out);
    out.push(bench_glu_quant(dev, ceilings, 128, 18432, Group128)?); super::checkpoint(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(c: &[Comparison]) -> bool {
        OutputCheck::of("sample", c).passed
    }

    /// A `[rows, cols]` bf16 tensor, the sampled rows' codes and the dense scales as a correct
    /// quantize_fp8 writes them, and the slabs the check is given.
    fn quantized(rows: usize, cols: usize, g: ScaleGranularity) -> (Vec<usize>, Vec<(usize, Vec<bf16>)>, Vec<F8E4M3>, Vec<f32>) {
        let x: Vec<bf16> = Rng::new(1).vec(rows * cols, -4.0, 4.0);
        let q = reference::quantize(&x, rows, cols, g);
        let sample = sampled_rows(rows);
        let br = g.block(rows, cols).0;
        let mut slabs: Vec<(usize, Vec<bf16>)> = Vec::new();
        for &r in &sample {
            let s = r / br;
            if slabs.last().is_none_or(|(last, _)| *last != s) {
                slabs.push((s, x[s * br * cols..((s + 1) * br).min(rows) * cols].to_vec()));
            }
        }
        let codes = sample.iter().flat_map(|&r| q.q[r * cols..][..cols].to_vec()).collect();
        (sample, slabs, codes, q.scale)
    }

    #[test]
    fn quantize_check_passes_the_reference_and_fails_zeros_and_poison() {
        use ScaleGranularity::*;
        for (rows, cols, g) in [(40, 256, PerTensor), (40, 384, PerRow), (40, 384, Group128), (300, 256, Block128), (3, 128, Block128)] {
            let (sample, slabs, codes, scales) = quantized(rows, cols, g);
            assert!(passed(&quantize_comparisons(&slabs, &sample, rows, cols, g, &codes, &scales)), "{g:?}");
            let zeros = vec![F8E4M3(0); codes.len()];
            assert!(!passed(&quantize_comparisons(&slabs, &sample, rows, cols, g, &zeros, &scales)), "{g:?}");
            let mut poisoned = codes.clone();
            poisoned[codes.len() - cols..].fill(F8E4M3::NAN);
            assert!(!passed(&quantize_comparisons(&slabs, &sample, rows, cols, g, &poisoned, &scales)), "{g:?}");
            let nan_scales = vec![f32::NAN; scales.len()];
            assert!(!passed(&quantize_comparisons(&slabs, &sample, rows, cols, g, &codes, &nan_scales)), "{g:?}");
        }
    }

    #[test]
    fn norm_quant_check_passes_the_reference_and_fails_a_skipped_call() {
        let (rows, hidden, g) = (4, 384, ScaleGranularity::Group128);
        let x: Vec<bf16> = Rng::new(2).vec(rows * hidden, -3.0, 3.0);
        let r: Vec<bf16> = Rng::new(3).vec(rows * hidden, -3.0, 3.0);
        let w: Vec<bf16> = Rng::new(4).vec(hidden, -1.0, 1.0);
        let cfg = RmsNormConfig::new(1e-6);
        let (q, _) = reference::rms_norm_quant(&x, &w, cfg, g);
        assert!(passed(&norm_quant_comparisons(&x, None, &w, g, &q.q, &q.scale)));
        assert!(!passed(&norm_quant_comparisons(&x, None, &w, g, &vec![F8E4M3(0); q.q.len()], &q.scale)));
        assert!(!passed(&norm_quant_comparisons(&x, None, &w, g, &vec![F8E4M3::NAN; q.q.len()], &vec![f32::NAN; q.scale.len()])));
        let (sum, qa, _) = reference::fused_add_rms_norm_quant(&x, &r, &w, cfg, g);
        assert!(passed(&norm_quant_comparisons(&x, Some((&r, &sum)), &w, g, &qa.q, &qa.scale)));
        // The residual left as it was: the add skipped.
        assert!(!passed(&norm_quant_comparisons(&x, Some((&r, &r)), &w, g, &qa.q, &qa.scale)));
    }

    #[test]
    fn glu_quant_check_passes_the_reference_and_fails_poison() {
        let (rows, cols, g) = (3, 256, ScaleGranularity::Group128);
        let gate_up: Vec<bf16> = Rng::new(5).vec(rows * 2 * cols, -4.0, 4.0);
        let gate = crate::check::gather_rows(&gate_up, 0, rows, cols, 2 * cols);
        let up = crate::check::gather_rows(&gate_up, cols, rows, cols, 2 * cols);
        let (q, _) = reference::glu_quant(&gate, &up, cols, GluActivation::Silu, g);
        assert!(passed(&glu_quant_comparisons(&gate_up, cols, g, &q.q, &q.scale)));
        let mut poisoned = q.q.clone();
        poisoned[cols..2 * cols].fill(F8E4M3::NAN);
        assert!(!passed(&glu_quant_comparisons(&gate_up, cols, g, &poisoned, &q.scale)));
        assert!(!passed(&glu_quant_comparisons(&gate_up, cols, g, &vec![F8E4M3(0); q.q.len()], &q.scale)));
    }
}
