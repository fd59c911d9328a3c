//! Benchmarks of FP8 quantization (bar: ≥ 85% of the copy bandwidth) and of the fused norm →
//! FP8 ops against the unfused pair (rms_norm, then quantize_fp8) timed in the same run; the
//! fused GLU → FP8 against glu, then quantize_fp8.
//! Bytes counted: x read once (2 B/element), codes written once (1 B), scales written once;
//! the fused add also reads and writes the residual; the weight is read once. Per tensor, the
//! record times `quantize_fp8` on the planner's choice (the single pass where it applies) and
//! the two-kernel plan (`quantize_fp8_with_plan`) as the alternative "two kernels".

use super::{random_buffer, rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::ops::quant::{fused_add_rms_norm_quant_fp8, glu_quant_fp8, quantize_fp8, quantize_fp8_with_plan, rms_norm_quant_fp8, ScaleGranularity, TensorQuantPlan};
use crate::reference::mlp::GluActivation;
use crate::ops::rms_norm::{fused_add_rms_norm, rms_norm, RmsNormConfig};
use crate::{Device, Result, TensorView, TensorViewMut, F8E4M3};
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
    Ok(r)
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
