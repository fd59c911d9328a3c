//! Benchmarks of the RoPE family and the KV-cache write at the shapes issue 3 sets bars for.
//! Bytes counted: each input read once, each output written once — q and k read and written
//! (in place), v read, the cache rows written, positions / slots / weights read.
//! Shape keys (bench/compare_torch.py writes the same): "TOKENSxQ+KVxHEAD_DIM" for the
//! rotations, with "/pPAGE" for the ops that write a cache of page size PAGE.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::{compare, compare_exact, tolerance, Comparison, Rng};
use crate::kv_cache::{KvCacheMut, KvScales, PageAllocator};
use crate::reference::kv_cache::quantize;
use crate::reference::rope as reference;
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

/// `count` device copies of `len` random values, and the host values (the output check's input).
fn buffers<T: DType>(dev: &Device, count: usize, len: usize, seed: u64) -> Result<(Vec<T>, Vec<CudaSlice<T>>)> {
    let host: Vec<T> = Rng::new(seed).vec(len, -2.0, 2.0);
    let bufs = (0..count).map(|_| dev.upload(&host)).collect::<Result<_>>()?;
    Ok((host, bufs))
}

/// Positions of a prefill batch: sequences of 1024 tokens (0, 1, ..., 1023, 0, 1, ...).
fn positions(dev: &Device, tokens: usize) -> Result<CudaSlice<i32>> {
    dev.upload(&(0..tokens).map(|t| (t % 1024) as i32).collect::<Vec<_>>())
}

/// Slots of a prefill batch through the allocator (sequences of 1024 tokens) and the page count,
/// and the slots on the host.
fn slots(dev: &Device, tokens: usize, page_size: usize) -> Result<(CudaSlice<i32>, usize, Vec<i32>)> {
    let num_pages = tokens.div_ceil(page_size) + 1024usize.div_ceil(page_size);
    let mut alloc = PageAllocator::new(num_pages, page_size)?;
    let mut s = Vec::with_capacity(tokens);
    while s.len() < tokens {
        let id = alloc.add_sequence();
        s.extend(alloc.append(id, (tokens - s.len()).min(1024))?.into_iter().map(|x| x as i32));
    }
    Ok((dev.upload(&s)?, num_pages, s))
}

/// rope in place on separate q [tokens, q_heads, head_dim] and k [tokens, kv_heads, head_dim].
pub fn bench_rope<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<BenchRecord> {
    let (nq, nk) = (tokens * q_heads * head_dim, tokens * kv_heads * head_dim);
    let bytes = 2 * (nq + nk) * std::mem::size_of::<T>() + tokens * 4;
    let copies = rotation_copies(bytes);
    let (q_host, mut qs) = buffers::<T>(dev, copies, nq, 1)?;
    let (k_host, mut ks) = buffers::<T>(dev, copies, nk, 2)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let cfg = RopeConfig { rotary_dim: head_dim, ..llama3() };
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut q = TensorViewMut::contiguous(qs[j].as_view_mut(), [tokens, q_heads, head_dim])?;
        let mut k = TensorViewMut::contiguous(ks[j].as_view_mut(), [tokens, kv_heads, head_dim])?;
        rope(dev, Qkv::split(&mut q, &mut k), &pv, &cfg)
    })?;
    // The output check: copy 0 back to the input (the timing rotated it in place), once more.
    dev.stream().memcpy_htod(&q_host, &mut qs[0])?;
    dev.stream().memcpy_htod(&k_host, &mut ks[0])?;
    {
        let mut q = TensorViewMut::contiguous(qs[0].as_view_mut(), [tokens, q_heads, head_dim])?;
        let mut k = TensorViewMut::contiguous(ks[0].as_view_mut(), [tokens, kv_heads, head_dim])?;
        rope(dev, Qkv::split(&mut q, &mut k), &pv, &cfg)?;
    }
    let toks = sampled_tokens(tokens);
    let (qw, kw) = (q_heads * head_dim, kv_heads * head_dim);
    let (want_q, want_k) = reference::rope(&rows(&q_host, &toks, qw), &rows(&k_host, &toks, kw), head_dim, &token_positions(&toks), &cfg);
    let comparisons = vec![
        compare("q (sampled tokens, every head)", &download_tokens(dev, &qs[0], &toks, qw)?, &want_q, tolerance::<T>()).in_rows(head_dim),
        compare("k (sampled tokens, every head)", &download_tokens(dev, &ks[0], &toks, kw)?, &want_k, tolerance::<T>()).in_rows(head_dim),
    ];
    let mut r = BenchRecord::bandwidth("rope", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings);
    r.output = Some(OutputCheck::of(&format!("tokens {toks:?}, every head, vs f64"), &comparisons));
    Ok(r)
}

/// qk_norm_rope in place on the q and k heads of a fused QKV buffer [tokens, q + 2 kv heads, head_dim].
pub fn bench_qk_norm_rope<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<BenchRecord> {
    let heads = q_heads + 2 * kv_heads;
    let bytes = (2 * tokens * (q_heads + kv_heads) * head_dim + 2 * head_dim) * std::mem::size_of::<T>() + tokens * 4;
    let copies = rotation_copies(bytes);
    let (qkv_host, mut qkvs) = buffers::<T>(dev, copies, tokens * heads * head_dim, 1)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let w_host = Rng::new(3).vec::<T>(head_dim, 0.5, 1.5);
    let w = dev.upload(&w_host)?;
    let wv = TensorView::contiguous(w.as_view(), [head_dim])?;
    let cfg = RopeConfig::new(head_dim, 1e6);
    let t = time_calls(dev, SAMPLES, |i| {
        let mut qkv = TensorViewMut::contiguous(qkvs[i % copies].as_view_mut(), [tokens, heads, head_dim])?;
        let norm = QkNorm { q_weight: &wv, k_weight: &wv, cfg: RmsNormConfig::new(1e-6) };
        qk_norm_rope(dev, Qkv::fused(&mut qkv, q_heads, kv_heads), &pv, &cfg, norm)
    })?;
    // The output check: copy 0 back to the input (rotated in place by the timing), once more.
    dev.stream().memcpy_htod(&qkv_host, &mut qkvs[0])?;
    {
        let mut qkv = TensorViewMut::contiguous(qkvs[0].as_view_mut(), [tokens, heads, head_dim])?;
        let norm = QkNorm { q_weight: &wv, k_weight: &wv, cfg: RmsNormConfig::new(1e-6) };
        qk_norm_rope(dev, Qkv::fused(&mut qkv, q_heads, kv_heads), &pv, &cfg, norm)?;
    }
    let toks = sampled_tokens(tokens);
    let row = heads * head_dim;
    let (input, got) = (rows(&qkv_host, &toks, row), download_tokens(dev, &qkvs[0], &toks, row)?);
    let parts = split_qkv(q_heads, kv_heads, head_dim);
    let (want_q, want_k) = reference::qk_norm_rope(&parts.q(&input), &parts.k(&input), &token_positions(&toks), &w_host, &w_host, RmsNormConfig::new(1e-6), &cfg);
    let comparisons = vec![
        compare("q (sampled tokens, every head)", &parts.q(&got), &want_q, tolerance::<T>()).in_rows(head_dim),
        compare("k (sampled tokens, every head)", &parts.k(&got), &want_k, tolerance::<T>()).in_rows(head_dim),
        compare_exact("v (sampled tokens) untouched", &parts.v(&got), &parts.v(&input)),
    ];
    let mut r = BenchRecord::bandwidth("qk_norm_rope", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings);
    r.output = Some(OutputCheck::of(&format!("tokens {toks:?}, every head, vs f64"), &comparisons));
    Ok(r)
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
    let (k_host, ks) = buffers::<T>(dev, copies, n, 1)?;
    let (v_host, vs) = buffers::<T>(dev, copies, n, 2)?;
    let (sl, num_pages, slots_host) = slots(dev, tokens, page_size)?;
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
    // The output check: copy 0's cache poisoned, the append once more.
    poison_cache(dev, &mut caches[0])?;
    {
        let k = TensorView::contiguous(ks[0].as_view(), [tokens, kv_heads, head_dim])?;
        let v = TensorView::contiguous(vs[0].as_view(), [tokens, kv_heads, head_dim])?;
        append_kv(dev, &k, &v, &sv, &mut cache_view(&mut caches[0], shape, scales)?)?;
    }
    let toks = sampled_tokens(tokens);
    let row = kv_heads * head_dim;
    let (k_in, v_in) = (rows(&k_host, &toks, row), rows(&v_host, &toks, row));
    let comparisons = cache_rows(dev, &caches[0], &toks, &slots_host, row, scales, &k_in, &v_in)?;
    let mut r = BenchRecord::bandwidth("append_kv", dtype_key::<T, C>(), format!("{tokens}x{kv_heads}x{head_dim}/p{page_size}"), t, bytes as f64, ceilings);
    r.output = Some(OutputCheck::of(&format!("the slots of tokens {toks:?}, bit-exact"), &comparisons));
    Ok(r)
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
    let (qkv_host, mut qkvs) = buffers::<T>(dev, copies, tokens * heads * head_dim, 1)?;
    let pos = positions(dev, tokens)?;
    let pv = TensorView::contiguous(pos.as_view(), [tokens])?;
    let (sl, num_pages, slots_host) = slots(dev, tokens, page_size)?;
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
    // The output check: copy 0 back to the input (rotated in place by the timing), its cache
    // poisoned, once more; q and k against the rotation, the cache rows against appending the
    // k the op stored (bit-exact, as src/check/rope.rs) and v.
    dev.stream().memcpy_htod(&qkv_host, &mut qkvs[0])?;
    poison_cache(dev, &mut caches[0])?;
    {
        let mut qkv = TensorViewMut::contiguous(qkvs[0].as_view_mut(), [tokens, heads, head_dim])?;
        rope_append_kv(dev, Qkv::fused(&mut qkv, q_heads, kv_heads), &pv, &cfg, &sv, &mut cache_view(&mut caches[0], shape, scales)?)?;
    }
    let toks = sampled_tokens(tokens);
    let (row, kv_row) = (heads * head_dim, kv_heads * head_dim);
    let (input, got) = (rows(&qkv_host, &toks, row), download_tokens(dev, &qkvs[0], &toks, row)?);
    let parts = split_qkv(q_heads, kv_heads, head_dim);
    let (want_q, want_k) = reference::rope(&parts.q(&input), &parts.k(&input), head_dim, &token_positions(&toks), &cfg);
    let mut comparisons = vec![
        compare("q (sampled tokens, every head)", &parts.q(&got), &want_q, tolerance::<T>()).in_rows(head_dim),
        compare("k (sampled tokens, every head)", &parts.k(&got), &want_k, tolerance::<T>()).in_rows(head_dim),
        compare_exact("v (sampled tokens) untouched", &parts.v(&got), &parts.v(&input)),
    ];
    comparisons.extend(cache_rows(dev, &caches[0], &toks, &slots_host, kv_row, scales, &parts.k(&got), &parts.v(&input))?);
    if C::TAG == F8E4M3::TAG {
        // (src/check/kv_cache.rs, HostCache::compare_fp8_k: the stored K against the f64
        // rotation over the scale, e4m3's tolerance)
        let stored = download_slots(dev, &caches[0].0, &toks, &slots_host, kv_row)?;
        let g: Vec<F8E4M3> = stored.iter().map(|c| F8E4M3::from_f64(c.to_f64())).collect();
        let w: Vec<f64> = want_k.iter().map(|x| x / scales.k as f64).collect();
        comparisons.push(compare("K in the FP8 cache vs f64 reference / scale", &g, &w, tolerance::<F8E4M3>()).in_rows(head_dim));
    }
    let key = format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}/p{page_size}");
    let mut r = BenchRecord::bandwidth("rope_append_kv", dtype_key::<T, C>(), key, t, bytes as f64, ceilings);
    r.output = Some(OutputCheck::of(&format!("tokens {toks:?} (every head) and their slots vs f64"), &comparisons));
    Ok(r)
}

// ---- Output check helpers: the sampled tokens of an op's output, after the timing.

/// Elements per host block when poisoning a cache.
const POISON_BLOCK: usize = 4 << 20;

/// The sampled tokens: the first, one past the middle (position 0 of a sequence is the
/// identity rotation; this one is not), the last.
fn sampled_tokens(tokens: usize) -> Vec<usize> {
    let mut t = vec![0, (tokens / 2 + tokens / 5).min(tokens.saturating_sub(1)), tokens.saturating_sub(1)];
    t.dedup();
    t
}

/// The positions of `toks` ([`positions`]: sequences of 1024 tokens).
fn token_positions(toks: &[usize]) -> Vec<i64> {
    toks.iter().map(|&t| (t % 1024) as i64).collect()
}

/// The rows `toks` (of `width` elements) of a host buffer, dense.
fn rows<T: Copy>(host: &[T], toks: &[usize], width: usize) -> Vec<T> {
    toks.iter().flat_map(|&t| host[t * width..][..width].iter().copied()).collect()
}

/// The rows `toks` (of `width` elements) of a device buffer, dense.
fn download_tokens<T: DType>(dev: &Device, buf: &CudaSlice<T>, toks: &[usize], width: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(toks.len() * width);
    for &t in toks {
        out.extend(dev.download(&buf.slice(t * width..(t + 1) * width))?);
    }
    Ok(out)
}

/// The cache rows (`width` elements per slot, dense pages) of the slots the tokens `toks` wrote.
fn download_slots<C: DType>(dev: &Device, buf: &CudaSlice<C>, toks: &[usize], slots: &[i32], width: usize) -> Result<Vec<C>> {
    download_tokens(dev, buf, &toks.iter().map(|&t| slots[t] as usize).collect::<Vec<_>>(), width)
}

/// Fills both cache buffers with NaN (a row the op does not write then fails).
fn poison_cache<C: DType>(dev: &Device, bufs: &mut (CudaSlice<C>, CudaSlice<C>)) -> Result<()> {
    let block = vec![C::NAN; bufs.0.len().min(POISON_BLOCK)];
    for buf in [&mut bufs.0, &mut bufs.1] {
        let mut at = 0;
        while at < buf.len() {
            let n = block.len().min(buf.len() - at);
            dev.stream().memcpy_htod(&block[..n], &mut buf.slice_mut(at..at + n))?;
            at += n;
        }
    }
    Ok(())
}

/// The K and V cache rows the tokens `toks` wrote against `k_rows`, `v_rows` (`[toks, width]`)
/// stored as the kernels store them (`reference::kv_cache::quantize`): bit-exact, as
/// src/check/kv_cache.rs compares the cache (the poison fails).
#[allow(clippy::too_many_arguments)]
fn cache_rows<T: DType, C: DType>(dev: &Device, cache: &(CudaSlice<C>, CudaSlice<C>), toks: &[usize], slots: &[i32], width: usize, scales: KvScales, k_rows: &[T], v_rows: &[T]) -> Result<Vec<Comparison>> {
    let want = |x: &[T], scale: f32| -> Vec<C> { x.iter().map(|&v| quantize::<T, C>(v, scale)).collect() };
    Ok(vec![
        compare_exact("K cache rows of the sampled tokens (bit-exact)", &download_slots(dev, &cache.0, toks, slots, width)?, &want(k_rows, scales.k)),
        compare_exact("V cache rows of the sampled tokens (bit-exact)", &download_slots(dev, &cache.1, toks, slots, width)?, &want(v_rows, scales.v)),
    ])
}

/// Where q, k, v sit in a fused row of `[q_heads + 2 kv_heads, head_dim]`.
#[derive(Clone, Copy, Debug)]
struct FusedParts {
    q: usize,
    kv: usize,
}

fn split_qkv(q_heads: usize, kv_heads: usize, head_dim: usize) -> FusedParts {
    FusedParts { q: q_heads * head_dim, kv: kv_heads * head_dim }
}

impl FusedParts {
    fn part<T: Copy>(&self, x: &[T], range: std::ops::Range<usize>) -> Vec<T> {
        x.chunks(self.q + 2 * self.kv).flat_map(|r| r[range.clone()].iter().copied()).collect()
    }
    /// The q heads of dense fused rows, dense `[rows, q_heads, head_dim]`.
    fn q<T: Copy>(&self, x: &[T]) -> Vec<T> {
        self.part(x, 0..self.q)
    }
    /// The k heads.
    fn k<T: Copy>(&self, x: &[T]) -> Vec<T> {
        self.part(x, self.q..self.q + self.kv)
    }
    /// The v heads.
    fn v<T: Copy>(&self, x: &[T]) -> Vec<T> {
        self.part(x, self.q + self.kv..self.q + 2 * self.kv)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampled tokens' reference (the rotation of their rows alone, at their positions)
    /// equals the whole batch's reference at those rows; an unrotated output (the op skipped)
    /// fails the comparison; the fused row splits into its q, k, v heads.
    #[test]
    fn sampled_rows_equal_the_full_reference_and_a_skipped_rotation_fails() {
        let (tokens, nq, nk, hd) = (2100, 4, 2, 16);
        let row = (nq + 2 * nk) * hd;
        let fused: Vec<bf16> = Rng::new(1).vec(tokens * row, -2.0, 2.0);
        let parts = split_qkv(nq, nk, hd);
        let cfg = RopeConfig { rotary_dim: hd, ..llama3() };
        let all: Vec<i64> = (0..tokens).map(|t| (t % 1024) as i64).collect();
        let (fq, fk) = reference::rope(&parts.q(&fused), &parts.k(&fused), hd, &all, &cfg);
        let toks = sampled_tokens(tokens);
        assert_eq!(toks, vec![0, 1470, 2099]);
        assert!(token_positions(&toks)[1..].iter().all(|&p| p != 0), "only the first sampled token sits at position 0");
        let input = rows(&fused, &toks, row);
        let (sq, sk) = reference::rope(&parts.q(&input), &parts.k(&input), hd, &token_positions(&toks), &cfg);
        assert_eq!(sq, rows(&fq, &toks, nq * hd));
        assert_eq!(sk, rows(&fk, &toks, nk * hd));
        let as_t = |x: &[f64]| x.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>();
        assert!(compare("q", &as_t(&sq), &sq, tolerance::<bf16>()).passed());
        assert!(!compare("q", &parts.q(&input), &sq, tolerance::<bf16>()).passed(), "the unrotated q passed");
        // q, k, v of a fused row: heads 0..nq, nq..nq+nk, the rest.
        assert_eq!(parts.v(&input)[nk * hd..][..nk * hd], fused[toks[1] * row + (nq + nk) * hd..][..nk * hd]);
        assert_eq!(parts.k(&input)[2 * nk * hd..], fused[toks[2] * row + nq * hd..][..nk * hd]);
        assert_eq!(parts.q(&input)[..nq * hd], fused[..nq * hd]);
        assert_eq!(sampled_tokens(1), vec![0]);
        assert_eq!(sampled_tokens(64), vec![0, 44, 63]);
    }
}
