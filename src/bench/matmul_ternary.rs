//! Ternary family benchmarks at BitNet b1.58 2B4T's layer shapes (hidden 2560: q / o 2560 ×
//! 2560, k / v 640 × 2560, gate / up 6912 × 2560, down 2560 × 6912) at decode (m = 1, 32) and
//! prefill (m = 2048) sizes. The alternative timed in the same run (feature `model`): cuBLAS bf16 on the
//! same weights unpacked to bf16 (what transformers runs for BitNet), with bf16 activations.
//! Bytes: packed weights n·k/4 + codes m·k + scales + out m·n (bf16); FLOPs 2·m·n·k.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::check::Rng;
use crate::ops::matmul_ternary::{matmul_ternary_with_tile, plan, quantize_activations, rms_norm_quantize_activations, PackedTernary, TernaryTile, BLOCK_M, HOPPER_BLOCK_M};
use crate::ops::rms_norm::{rms_norm, RmsNormConfig};
use crate::{Device, Result, TensorView, TensorViewMut};
use half::bf16;

const SAMPLES: usize = 25;
/// (n, k) of BitNet b1.58 2B4T's projections as the model runs them, one GEMM each (every
/// projection has its own weight scale): q and o, k and v, gate and up, down.
const LAYERS: &[(usize, usize)] = &[(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)];

/// matmul_ternary on `[m, k] × [n, k]ᵀ` with the planned tile, and with each other tile height
/// (the Hopper tile on compute capability 9.0) as a record of its own (shape key suffix " block{b}") so that one run shows whether the plan
/// chose well; where the plan splits k, the planned record also times its tile unsplit
/// ("warpcore without split-k"). Decode sizes (m ≤ 64) are bandwidth records (fraction of
/// copy), prefill compute ones.
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
    if planned.k_splits > 1 {
        let whole = TernaryTile::unsplit(planned.block_m);
        records[0].add_alternative(&format!("warpcore without split-k ({whole})"), time(whole)?.median_us);
    }
    let heights = BLOCK_M.into_iter().chain(hopper.then_some(HOPPER_BLOCK_M));
    for block_m in heights.filter(|&b| b != planned.block_m) {
        records.push(record(format!("{m}x{n}x{k} block{block_m}"), time(TernaryTile::unsplit(block_m))?));
    }
    #[cfg(feature = "model")]
    if let Some(us) = time_cublas_bf16(dev, m, n, k)? {
        records[0].add_alternative("cuBLAS bf16 (unpacked weights)", us);
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
    Ok(BenchRecord::bandwidth("quantize_activations", "bf16", format!("{m}x{k}"), t, bytes as f64, ceilings))
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
    Ok(r)
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
