//! Benchmarks of the RMSNorm family at the shapes the foundation issue sets bars for.
//! Bytes counted: each input read once, each output written once (weights included).

use super::{rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::check::Rng;
use crate::ops::rms_norm::{fused_add_rms_norm, qk_rms_norm, rms_norm, RmsNormConfig};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;

const SAMPLES: usize = 25;

/// `count` buffers of `len` random elements (rotated between calls).
fn buffers<T: DType>(dev: &Device, count: usize, len: usize, seed: u64) -> Result<Vec<CudaSlice<T>>> {
    let host: Vec<T> = Rng::new(seed).vec(len, -2.0, 2.0);
    (0..count).map(|_| dev.upload(&host)).collect()
}

/// rms_norm on [tokens, hidden].
pub fn bench_rms_norm<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, hidden: usize) -> Result<BenchRecord> {
    let n = tokens * hidden;
    let bytes = (2 * n + hidden) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let xs = buffers::<T>(dev, copies, n, 1)?;
    let mut outs = buffers::<T>(dev, copies, n, 2)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(hidden, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [hidden])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let x = TensorView::contiguous(xs[j].as_view(), [tokens, hidden])?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [tokens, hidden])?;
        rms_norm(dev, &x, &wv, &mut o, RmsNormConfig::new(1e-6))
    })?;
    Ok(BenchRecord::bandwidth("rms_norm", T::NAME, format!("{tokens}x{hidden}"), t, bytes as f64, ceilings))
}

/// fused_add_rms_norm on [tokens, hidden] (in place: x and residual read, both written).
pub fn bench_fused_add_rms_norm<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, hidden: usize) -> Result<BenchRecord> {
    let n = tokens * hidden;
    let bytes = (4 * n + hidden) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let mut xs = buffers::<T>(dev, copies, n, 1)?;
    let mut rs = buffers::<T>(dev, copies, n, 2)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(hidden, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [hidden])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut x = TensorViewMut::contiguous(xs[j].as_view_mut(), [tokens, hidden])?;
        let mut r = TensorViewMut::contiguous(rs[j].as_view_mut(), [tokens, hidden])?;
        fused_add_rms_norm(dev, &mut x, &mut r, &wv, RmsNormConfig::new(1e-6))
    })?;
    Ok(BenchRecord::bandwidth("fused_add_rms_norm", T::NAME, format!("{tokens}x{hidden}"), t, bytes as f64, ceilings))
}

/// qk_rms_norm in place on the q and k heads of a fused QKV buffer [tokens, q + 2·kv heads, head_dim].
pub fn bench_qk_rms_norm<T: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<BenchRecord> {
    let row = (q_heads + 2 * kv_heads) * head_dim;
    let heads = q_heads + kv_heads;
    let bytes = (2 * tokens * heads * head_dim + 2 * head_dim) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let mut qkvs = buffers::<T>(dev, copies, tokens * row, 1)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(head_dim, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [head_dim])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut qk = TensorViewMut::new(qkvs[j].as_view_mut(), [tokens, heads, head_dim], [row, head_dim, 1])?;
        qk_rms_norm(dev, &mut qk, q_heads, &wv, &wv, RmsNormConfig::new(1e-6))
    })?;
    Ok(BenchRecord::bandwidth("qk_rms_norm", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings))
}

/// Every RMSNorm benchmark `warpcore bench` runs (bf16, the shapes, plus f16/f32 at one).
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    use half::{bf16, f16};
    for &(t, h) in &[(16384, 4096), (16384, 8192), (64, 4096), (1, 4096)] {
        out.push(bench_rms_norm::<bf16>(dev, ceilings, t, h)?); super::checkpoint(out);
    }
    for &(t, h) in &[(16384, 4096), (16384, 8192), (64, 4096)] {
        out.push(bench_fused_add_rms_norm::<bf16>(dev, ceilings, t, h)?); super::checkpoint(out);
    }
    out.push(bench_rms_norm::<f16>(dev, ceilings, 16384, 4096)?); super::checkpoint(out);
    out.push(bench_rms_norm::<f32>(dev, ceilings, 16384, 4096)?); super::checkpoint(out);
    out.push(bench_qk_rms_norm::<bf16>(dev, ceilings, 16384, 32, 8, 128)?); super::checkpoint(out);
    out.push(bench_qk_rms_norm::<bf16>(dev, ceilings, 64, 32, 8, 128)?); super::checkpoint(out);
    Ok(())
}
