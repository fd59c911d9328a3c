//! Benchmarks of the RoPE family and the KV-cache write at the shapes issue 3 sets bars for.
//! Bytes counted: each input read once, each output written once — q and k read and written
//! (in place), v read, the cache rows written, positions / slots / weights read.
//! Shape keys (bench/compare_torch.py writes the same): "TOKENSxQ+KVxHEAD_DIM" for the
//! rotations, with "/pPAGE" for the ops that write a cache of page size PAGE.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::check::Rng;
use crate::kv_cache::{KvCacheMut, KvScales, PageAllocator};
use crate::ops::kv_cache::append_kv;
use crate::ops::rms_norm::RmsNormConfig;
use crate::ops::rope::{qk_norm_rope, rope, rope_append_kv, QkNorm, Qkv, RopeConfig, RopeScaling};
use crate::{DType, Device, Result, TensorView, TensorViewMut, F8E4M3};
use cudarc::driver::CudaSlice;
use half::bf16;

const SAMPLES: usize = 25;

/// Llama 3.1's rotation (the scaling changes nothing in the cost: the table is per launch).
fn llama3() -> RopeConfig {
    RopeConfig::new(128, 500000.0).with_scaling(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_positions: 8192,
    })
}

fn buffers<T: DType>(dev: &Device, count: usize, len: usize, seed: u64) -> Result<Vec<CudaSlice<T>>> {
    let host: Vec<T> = Rng::new(seed).vec(len, -2.0, 2.0);
    (0..count).map(|_| dev.upload(&host)).collect()
}

/// Positions of a prefill batch: sequences of 1024 tokens (0, 1, ..., 1023, 0, 1, ...).
fn positions(dev: &Device, tokens: usize) -> Result<CudaSlice<i32>> {
    dev.upload(&(0..tokens).map(|t| (t % 1024) as i32).collect::<Vec<_>>())
}

/// Slots of a prefill batch through the allocator (sequences of 1024 tokens) and the page count.
fn slots(dev: &Device, tokens: usize, page_size: usize) -> Result<(CudaSlice<i32>, usize)> {
    let num_pages = tokens.div_ceil(page_size) + 1024usize.div_ceil(page_size);
    let mut alloc = PageAllocator::new(num_pages, page_size)?;
    let mut s = Vec::with_capacity(tokens);
    while s.len() < tokens {
        let id = alloc.add_sequence();
        s.extend(alloc.append(id, (tokens - s.len()).min(1024))?.into_iter().map(|x| x as i32));
    }
    Ok((dev.upload(&s)?, num_pages))
}

/// rope in place on separate q [tokens, q_heads, head_dim] and k [tokens, kv_heads, head_dim].
pub fn bench_rope<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<BenchRecord> {
    let (nq, nk) = (tokens * q_heads * head_dim, tokens * kv_heads * head_dim);
    let bytes = 2 * (nq + nk) * std::mem::size_of::<T>() + tokens * 4;
    let copies = rotation_copies(bytes);
    let mut qs = buffers::<T>(dev, copies, nq, 1)?;
    let mut ks = buffers::<T>(dev, copies, nk, 2)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let cfg = RopeConfig { rotary_dim: head_dim, ..llama3() };
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut q = TensorViewMut::contiguous(qs[j].as_view_mut(), [tokens, q_heads, head_dim])?;
        let mut k = TensorViewMut::contiguous(ks[j].as_view_mut(), [tokens, kv_heads, head_dim])?;
        rope(dev, Qkv::split(&mut q, &mut k), &pv, &cfg)
    })?;
    Ok(BenchRecord::bandwidth("rope", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings))
}

/// qk_norm_rope in place on the q and k heads of a fused QKV buffer [tokens, q + 2 kv heads, head_dim].
pub fn bench_qk_norm_rope<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<BenchRecord> {
    let heads = q_heads + 2 * kv_heads;
    let bytes = (2 * tokens * (q_heads + kv_heads) * head_dim + 2 * head_dim) * std::mem::size_of::<T>() + tokens * 4;
    let copies = rotation_copies(bytes);
    let mut qkvs = buffers::<T>(dev, copies, tokens * heads * head_dim, 1)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let w = dev.upload(&Rng::new(3).vec::<T>(head_dim, 0.5, 1.5))?;
    let wv = TensorView::contiguous(w.as_view(), [head_dim])?;
    let cfg = RopeConfig::new(head_dim, 1e6);
    let t = time_calls(dev, SAMPLES, |i| {
        let mut qkv = TensorViewMut::contiguous(qkvs[i % copies].as_view_mut(), [tokens, heads, head_dim])?;
        let norm = QkNorm { q_weight: &wv, k_weight: &wv, cfg: RmsNormConfig::new(1e-6) };
        qk_norm_rope(dev, Qkv::fused(&mut qkv, q_heads, kv_heads), &pv, &cfg, norm)
    })?;
    Ok(BenchRecord::bandwidth("qk_norm_rope", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings))
}

/// The cache buffers (K, V) of `num_pages` dense pages.
fn cache_buffers<C: DType>(dev: &Device, copies: usize, num_pages: usize, page_size: usize, kv_heads: usize, head_dim: usize) -> Result<Vec<(CudaSlice<C>, CudaSlice<C>)>> {
    let len = num_pages * page_size * kv_heads * head_dim;
    (0..copies).map(|_| Ok((dev.zeros::<C>(len)?, dev.zeros::<C>(len)?))).collect()
}

fn cache_view<'a, C: DType>(bufs: &'a mut (CudaSlice<C>, CudaSlice<C>), shape: [usize; 4], scales: KvScales) -> Result<KvCacheMut<'a, C>> {
    let k = TensorViewMut::contiguous(bufs.0.as_view_mut(), shape)?;
    let v = TensorViewMut::contiguous(bufs.1.as_view_mut(), shape)?;
    KvCacheMut::new(k, v)?.with_scales(scales)
}

fn dtype_key<T: DType, C: DType>() -> &'static str {
    crate::check::kv_cache::cache_dtype_name::<T, C>()
}

/// append_kv of k, v [tokens, kv_heads, head_dim] into a paged cache of `C`.
pub fn bench_append_kv<T: DType, C: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, kv_heads: usize, head_dim: usize, page_size: usize) -> Result<BenchRecord> {
    let n = tokens * kv_heads * head_dim;
    let bytes = 2 * n * (std::mem::size_of::<T>() + std::mem::size_of::<C>()) + tokens * 4;
    let copies = rotation_copies(bytes);
    let ks = buffers::<T>(dev, copies, n, 1)?;
    let vs = buffers::<T>(dev, copies, n, 2)?;
    let (sl, num_pages) = slots(dev, tokens, page_size)?;
    let sv = TensorView::contiguous(sl.as_view(), [tokens])?;
    let mut caches = cache_buffers::<C>(dev, copies, num_pages, page_size, kv_heads, head_dim)?;
    let scales = crate::check::kv_cache::scales_for::<C>(2.0, 2.0);
    let shape = [num_pages, page_size, kv_heads, head_dim];
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let k = TensorView::contiguous(ks[j].as_view(), [tokens, kv_heads, head_dim])?;
        let v = TensorView::contiguous(vs[j].as_view(), [tokens, kv_heads, head_dim])?;
        append_kv(dev, &k, &v, &sv, &mut cache_view(&mut caches[j], shape, scales)?)
    })?;
    Ok(BenchRecord::bandwidth("append_kv", dtype_key::<T, C>(), format!("{tokens}x{kv_heads}x{head_dim}/p{page_size}"), t, bytes as f64, ceilings))
}

/// rope_append_kv on a fused QKV buffer [tokens, q + 2 kv heads, head_dim] into a paged cache.
pub fn bench_rope_append_kv<T: DType, C: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    page_size: usize,
) -> Result<BenchRecord> {
    let heads = q_heads + 2 * kv_heads;
    let (t_size, c_size) = (std::mem::size_of::<T>(), std::mem::size_of::<C>());
    let nkv = tokens * kv_heads * head_dim;
    let bytes = 2 * tokens * (q_heads + kv_heads) * head_dim * t_size + nkv * t_size + 2 * nkv * c_size + 2 * tokens * 4;
    let copies = rotation_copies(bytes);
    let mut qkvs = buffers::<T>(dev, copies, tokens * heads * head_dim, 1)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let (sl, num_pages) = slots(dev, tokens, page_size)?;
    let sv = TensorView::contiguous(sl.as_view(), [tokens])?;
    let mut caches = cache_buffers::<C>(dev, copies, num_pages, page_size, kv_heads, head_dim)?;
    let scales = crate::check::kv_cache::scales_for::<C>(3.0, 2.0);
    let shape = [num_pages, page_size, kv_heads, head_dim];
    let cfg = RopeConfig { rotary_dim: head_dim, ..llama3() };
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut qkv = TensorViewMut::contiguous(qkvs[j].as_view_mut(), [tokens, heads, head_dim])?;
        rope_append_kv(dev, Qkv::fused(&mut qkv, q_heads, kv_heads), &pv, &cfg, &sv, &mut cache_view(&mut caches[j], shape, scales)?)
    })?;
    let key = format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}/p{page_size}");
    Ok(BenchRecord::bandwidth("rope_append_kv", dtype_key::<T, C>(), key, t, bytes as f64, ceilings))
}

/// Every benchmark of the family `warpcore bench` runs: the shapes (bf16), a decode
/// batch, the FP8 cache.
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    for &tokens in &[16384usize, 64] {
        out.push(bench_rope::<bf16>(dev, ceilings, tokens, 32, 8, 128)?); super::checkpoint(out);
    }
    out.push(bench_rope::<bf16>(dev, ceilings, 16384, 8, 1, 64)?); super::checkpoint(out);
    for &tokens in &[16384usize, 64] {
        out.push(bench_append_kv::<bf16, bf16>(dev, ceilings, tokens, 8, 128, 16)?); super::checkpoint(out);
    }
    out.push(bench_append_kv::<bf16, F8E4M3>(dev, ceilings, 16384, 8, 128, 16)?); super::checkpoint(out);
    out.push(bench_rope_append_kv::<bf16, bf16>(dev, ceilings, 16384, 32, 8, 128, 16)?); super::checkpoint(out);
    out.push(bench_rope_append_kv::<bf16, bf16>(dev, ceilings, 64, 32, 8, 128, 16)?); super::checkpoint(out);
    out.push(bench_rope_append_kv::<bf16, F8E4M3>(dev, ceilings, 16384, 32, 8, 128, 16)?); super::checkpoint(out);
    out.push(bench_qk_norm_rope::<bf16>(dev, ceilings, 16384, 32, 8, 128)?); super::checkpoint(out);
    Ok(())
}
