//! Paged KV cache: `append_kv` (and `append_latent`, MLA's K-only latent cache) on the GPU
//! against `reference::kv_cache`. The whole cache — and
//! guard regions before and after the pages — is poisoned, so a write anywhere but the
//! addressed rows (padding or out-of-range slots included) fails the check. Also the cache
//! plumbing the fused RoPE checks use (check/rope.rs).

use super::{compare, compare_exact, gather_rows, tolerance, CheckResult, Comparison, Rng};
use crate::kv_cache::{KvCacheLayout, KvCacheMut, KvScales, PageAllocator, SlotErrors};
use crate::ops::kv_cache::{append_kv, append_latent};
use crate::reference::kv_cache as reference;
use crate::{contiguous_strides, DType, Device, Error, IndexType, Result, TensorView, TensorViewMut, F8E4M3};
use half::{bf16, f16};

/// Poisoned elements before and after the pages in each cache buffer (a multiple of 16
/// elements keeps the pages 16-byte aligned, so the vector path runs; `page_pad` misaligns).
pub const GUARD: usize = 64;

/// The cache side of a check: geometry and which slots the tokens get.
#[derive(Clone, Copy, Debug)]
pub struct CacheCase {
    /// Tokens per page (one of `PAGE_SIZES`).
    pub page_size: usize,
    /// Pages in the cache.
    pub num_pages: usize,
    /// Extra elements at the end of each page (a padded page stride).
    pub page_pad: usize,
    /// Tokens whose slot is −1 (padding).
    pub padding: usize,
    /// Tokens whose slot is past the cache (must be skipped and counted).
    pub out_of_range: usize,
    /// i64 slot mapping (else i32).
    pub slots64: bool,
    /// Seed of the allocator's page order and the slot mapping.
    pub seed: u64,
}

impl CacheCase {
    /// Dense pages with room for `num_tokens` ragged tokens, i32 slots, no padding.
    pub fn for_tokens(num_tokens: usize, page_size: usize, seed: u64) -> Self {
        Self { page_size, num_pages: 2 * num_tokens.div_ceil(page_size) + 8, page_pad: 0, padding: 0, out_of_range: 0, slots64: false, seed }
    }
    /// The cache part of a report's shape line, e.g. "page 16 x 40 pages, 3 padding".
    pub fn describe(&self) -> String {
        format!(
            "page {} x {} pages{}{}{}{}",
            self.page_size,
            self.num_pages,
            if self.page_pad > 0 { format!(" (+{} pad)", self.page_pad) } else { String::new() },
            if self.padding > 0 { format!(", {} padding", self.padding) } else { String::new() },
            if self.out_of_range > 0 { format!(", {} out of range", self.out_of_range) } else { String::new() },
            if self.slots64 { ", i64 slots" } else { "" }
        )
    }

    /// Slots for `num_tokens` tokens: ragged sequences through a shuffled allocator (pages out
    /// of order), in shuffled token order, with padding and out-of-range entries mixed in.
    /// Tokens the cache has no room for become padding.
    pub fn slots(&self, num_tokens: usize) -> Vec<i64> {
        let mut rng = Rng::new(self.seed ^ 0x5107);
        let num_slots = (self.num_pages * self.page_size) as i64;
        let valid = num_tokens.saturating_sub(self.padding + self.out_of_range);
        let mut slots = Vec::with_capacity(num_tokens);
        if let Ok(mut alloc) = PageAllocator::shuffled(self.num_pages, self.page_size, self.seed) {
            while slots.len() < valid {
                let s = alloc.add_sequence();
                let want = (1 + rng.next_u64() as usize % (2 * self.page_size + 3)).min(valid - slots.len());
                match alloc.append(s, want) {
                    Ok(v) => slots.extend(v),
                    Err(_) => break,
                }
            }
        }
        slots.resize(valid, -1);
        for i in 0..self.out_of_range {
            slots.push(match i % 3 {
                0 => num_slots + (rng.next_u64() % 1000) as i64,
                1 if self.slots64 => (1i64 << 40) + i as i64,
                _ => i32::MAX as i64 - i as i64,
            });
        }
        slots.resize(num_tokens, -1);
        for i in (1..slots.len()).rev() {
            slots.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        slots
    }
}

/// The host copies of the K and V pages: `GUARD + layout.extent() + GUARD` elements, poisoned.
#[derive(Clone, Debug)]
pub struct HostCache<C> {
    /// The pages' layout (dense but for `page_pad`), starting `GUARD` elements in.
    pub layout: KvCacheLayout,
    /// The K buffer, NaN-poisoned.
    pub k: Vec<C>,
    /// The V buffer, NaN-poisoned.
    pub v: Vec<C>,
}

impl<C: DType> HostCache<C> {
    /// Poisoned buffers for `case`'s pages of `num_kv_heads` heads of `head_dim` elements.
    pub fn new(case: &CacheCase, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        let shape = [case.num_pages, case.page_size, num_kv_heads, head_dim];
        let d = contiguous_strides(shape);
        let layout = KvCacheLayout::new("check", shape, [d[0] + case.page_pad, d[1], d[2], 1])?;
        let len = GUARD + layout.extent() + GUARD;
        Ok(Self { layout, k: vec![C::NAN; len], v: vec![C::NAN; len] })
    }

    /// Uploads the pages, runs `f` on them as a `KvCacheMut` (with `scales` and an error
    /// counter), and downloads (K, V, counted out-of-range slots). Under `debug-sync` an op
    /// reports out-of-range slots as an error: that error, with the count `expected_oob`, is the
    /// expected outcome and is read as the count.
    pub fn run(&self, dev: &Device, scales: KvScales, expected_oob: usize, f: impl FnOnce(&mut KvCacheMut<C>) -> Result<()>) -> Result<(Vec<C>, Vec<C>, u64)> {
        self.run_as(dev, scales, expected_oob, None, f)
    }

    /// [`HostCache::run`] on the K pages alone as MLA's latent cache ([`KvCacheMut::latent`]
    /// with this `kv_lora_rank`): the V pages are never on the device and come back as they
    /// were (poison).
    pub fn run_latent(&self, dev: &Device, scales: KvScales, expected_oob: usize, kv_lora_rank: usize, f: impl FnOnce(&mut KvCacheMut<C>) -> Result<()>) -> Result<(Vec<C>, Vec<C>, u64)> {
        self.run_as(dev, scales, expected_oob, Some(kv_lora_rank), f)
    }

    fn run_as(&self, dev: &Device, scales: KvScales, expected_oob: usize, latent: Option<usize>, f: impl FnOnce(&mut KvCacheMut<C>) -> Result<()>) -> Result<(Vec<C>, Vec<C>, u64)> {
        let mut kb = dev.upload(&self.k)?;
        let mut vb = dev.upload(&self.v)?;
        let mut errors = SlotErrors::new(dev)?;
        let (shape, strides) = (self.layout.shape(), self.layout.strides);
        let mut reported = None;
        {
            let kv = TensorViewMut::new(kb.slice_mut(GUARD..), shape, strides)?;
            let cache = match latent {
                Some(rank) => KvCacheMut::latent(kv, rank)?,
                None => KvCacheMut::new(kv, TensorViewMut::new(vb.slice_mut(GUARD..), shape, strides)?)?,
            };
            let mut cache = cache.with_scales(scales)?.count_errors_in(&mut errors);
            match f(&mut cache) {
                Err(Error::IndexOutOfRange { count, .. }) if cfg!(feature = "debug-sync") && count == expected_oob as u64 => reported = Some(count),
                other => other?,
            }
        }
        let count = reported.unwrap_or(errors.count(dev)? as u64);
        Ok((dev.download(&kb)?, dev.download(&vb)?, count))
    }

    /// The cache after the run against `reference::kv_cache::append_kv` of `k_rows`, `v_rows`
    /// `[num_tokens, num_kv_heads, head_dim]`: bit-exact everywhere (the poison included), and
    /// the out-of-range count.
    pub fn compare<T: DType>(&self, got: &(Vec<C>, Vec<C>, u64), k_rows: &[T], v_rows: &[T], slots: &[i64], scales: KvScales) -> Vec<Comparison> {
        let (mut want_k, mut want_v) = (self.k.clone(), self.v.clone());
        let oob = reference::append_kv(k_rows, v_rows, slots, &self.layout, scales, &mut want_k[GUARD..], &mut want_v[GUARD..]);
        vec![
            compare_exact("K pages (bit-exact; guards and unaddressed rows stay poison)", &got.0, &want_k),
            compare_exact("V pages (bit-exact; guards and unaddressed rows stay poison)", &got.1, &want_v),
            count_comparison("out-of-range slots counted", got.2, oob as u64),
        ]
    }

    /// The stored K of every written token (stored values, not dequantized) against the f64
    /// reference divided by the scale: the FP8 round-trip bound (e4m3's tolerance).
    pub fn compare_fp8_k(&self, got_k: &[C], want_k: &[f64], slots: &[i64], scale: f32) -> Comparison {
        let l = &self.layout;
        let row = l.num_kv_heads * l.head_dim;
        let (mut g, mut w) = (Vec::new(), Vec::new());
        for (t, &slot) in slots.iter().enumerate() {
            if slot < 0 || slot as u64 >= l.num_slots() as u64 {
                continue;
            }
            for h in 0..l.num_kv_heads {
                let o = GUARD + l.offset(slot as usize, h);
                g.extend(got_k[o..o + l.head_dim].iter().map(|c| F8E4M3::from_f64(c.to_f64())));
                w.extend(want_k[t * row + h * l.head_dim..][..l.head_dim].iter().map(|x| x / scale as f64));
            }
        }
        compare("K in the FP8 cache vs f64 reference / scale", &g, &w, tolerance::<F8E4M3>())
    }
}

/// A comparison of one exact count.
pub fn count_comparison(what: &'static str, got: u64, want: u64) -> Comparison {
    let bad = got != want;
    Comparison {
        what,
        len: 1,
        failures: bad as usize,
        max_abs_err: (got as f64 - want as f64).abs(),
        rel_frobenius: 0.0,
        frobenius_limit: f64::INFINITY,
        first_failure: bad.then_some((0, got as f64, want as f64)),
        ..Default::default()
    }
}

/// The FP8 scales of a cache written with values of magnitude up to `amax_k`, `amax_v` (a
/// calibrated scale: amax / 400, a little headroom below 448); 1 for bf16 / f16 caches.
pub fn scales_for<C: DType>(amax_k: f64, amax_v: f64) -> KvScales {
    if C::TAG == crate::ffi::wc_dtype_WC_E4M3 {
        KvScales::new((amax_k.max(1e-3) / 400.0) as f32, (amax_v.max(1e-3) / 400.0) as f32)
    } else {
        KvScales::ONE
    }
}

/// The report name of inputs T written into a cache of C.
pub fn cache_dtype_name<T: DType, C: DType>() -> &'static str {
    match (T::NAME, C::NAME) {
        ("bf16", "e4m3") => "bf16 -> e4m3 cache",
        ("f16", "e4m3") => "f16 -> e4m3 cache",
        (t, _) => t,
    }
}

/// `append_kv` inputs: k and v rows `[num_tokens, num_kv_heads, head_dim]` at token stride
/// `num_kv_heads · head_dim + token_gap`, `offset` elements into their buffers.
#[derive(Clone, Copy, Debug)]
pub struct AppendCase {
    /// Tokens appended.
    pub num_tokens: usize,
    /// KV heads per token.
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Elements after each token's heads before the next token.
    pub token_gap: usize,
    /// Elements before the first token of k and v.
    pub offset: usize,
    /// The cache and the tokens' slots.
    pub cache: CacheCase,
    /// Seed of the k and v values.
    pub seed: u64,
}

/// `append_kv` against the reference.
pub fn check_append_kv<T: DType, C: DType>(dev: &Device, case: &AppendCase) -> Result<CheckResult> {
    if case.cache.slots64 {
        run_append::<T, C, i64>(dev, case, false)
    } else {
        run_append::<T, C, i32>(dev, case, false)
    }
}

/// `append_latent` against the reference: the case's k rows into a latent cache (K pages only;
/// kv_lora_rank 8/9 of head_dim, which only the read side uses). The V pages must stay poison.
pub fn check_append_latent<T: DType, C: DType>(dev: &Device, case: &AppendCase) -> Result<CheckResult> {
    if case.cache.slots64 {
        run_append::<T, C, i64>(dev, case, true)
    } else {
        run_append::<T, C, i32>(dev, case, true)
    }
}

fn run_append<T: DType, C: DType, S: IndexType>(dev: &Device, c: &AppendCase, latent: bool) -> Result<CheckResult> {
    let (row, nt) = (c.num_kv_heads * c.head_dim, c.num_tokens);
    let ts = row + c.token_gap;
    let mut rng = Rng::new(c.seed);
    let k_host: Vec<T> = rng.vec(c.offset + nt * ts, -3.0, 3.0);
    let v_host: Vec<T> = rng.vec(c.offset + nt * ts, -3.0, 3.0);
    let slots = c.cache.slots(nt);
    let slots_s: Vec<S> = slots.iter().map(|&s| S::from_i64(s).expect("case slots fit the index type")).collect();
    let (k_rows, v_rows) = (gather_rows(&k_host, c.offset, nt, row, ts), gather_rows(&v_host, c.offset, nt, row, ts));
    let amax = |x: &[T]| x.iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max);
    let scales = scales_for::<C>(amax(&k_rows), amax(&v_rows));
    let host = HostCache::<C>::new(&c.cache, c.num_kv_heads, c.head_dim)?;
    let expected_oob = slots.iter().filter(|&&s| s >= host.layout.num_slots() as i64).count();
    let (k, v, s) = (dev.upload(&k_host)?, dev.upload(&v_host)?, dev.upload(&slots_s)?);
    let strides = [ts, c.head_dim, 1];
    let kv = TensorView::new(k.slice(c.offset..), [nt, c.num_kv_heads, c.head_dim], strides)?;
    let sv = TensorView::contiguous(s.as_view(), [nt])?;
    let comparisons = if latent {
        let rank = (c.head_dim * 8 / 9).max(1);
        let got = host.run_latent(dev, KvScales::new(scales.k, scales.k), expected_oob, rank, |cache| append_latent(dev, &kv, &sv, cache))?;
        // The reference writes k into both pages: keep K and the count; V must be untouched.
        let mut cmp = host.compare(&got, &k_rows, &k_rows, &slots, KvScales::new(scales.k, scales.k));
        cmp[1] = compare_exact("V pages untouched (a latent cache has none)", &got.1, &host.v);
        cmp
    } else {
        let got = host.run(dev, scales, expected_oob, |cache| {
            let vv = TensorView::new(v.slice(c.offset..), [nt, c.num_kv_heads, c.head_dim], strides)?;
            append_kv(dev, &kv, &vv, &sv, cache)
        })?;
        host.compare(&got, &k_rows, &v_rows, &slots, scales)
    };
    Ok(CheckResult {
        op: if latent { "append_latent" } else { "append_kv" },
        dtype: cache_dtype_name::<T, C>(),
        shape: format!("tokens {nt} kv heads {} head_dim {}, gap {}, {}", c.num_kv_heads, c.head_dim, c.token_gap, c.cache.describe()),
        comparisons,
    })
}

/// The append_kv cases `warpcore check` runs.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
        let cases = [
            AppendCase { num_tokens: 300, num_kv_heads: 8, head_dim: 128, token_gap: 0, offset: 0, cache: CacheCase::for_tokens(300, 16, 1), seed: 1 },
            AppendCase {
                num_tokens: 77,
                num_kv_heads: 2,
                head_dim: 80,
                token_gap: 4 * 128,
                offset: 0,
                cache: CacheCase { padding: 5, out_of_range: 6, slots64: true, page_pad: 8, ..CacheCase::for_tokens(77, 1, 2) },
                seed: 2,
            },
            AppendCase {
                num_tokens: 33,
                num_kv_heads: 1,
                head_dim: 17,
                token_gap: 3,
                offset: 1,
                cache: CacheCase { padding: 2, out_of_range: 3, ..CacheCase::for_tokens(33, 256, 3) },
                seed: 3,
            },
        ];
        for c in &cases {
            out.push(check_append_kv::<T, T>(dev, c)?);
            out.push(check_append_kv::<T, F8E4M3>(dev, c)?);
        }
        // MLA's latent rows (512 + 64), page 64, with padding and out-of-range slots.
        let mla = AppendCase {
            num_tokens: 150,
            num_kv_heads: 1,
            head_dim: 576,
            token_gap: 0,
            offset: 0,
            cache: CacheCase { padding: 3, out_of_range: 2, ..CacheCase::for_tokens(150, 64, 4) },
            seed: 4,
        };
        out.push(check_append_latent::<T, T>(dev, &mla)?);
        Ok(())
    }
    let mut out = Vec::new();
    per_dtype::<bf16>(dev, &mut out)?;
    per_dtype::<f16>(dev, &mut out)?;
    Ok(out)
}

/// Without a GPU: append through the allocator and read back through the block table (bf16
/// exact, FP8 within its bound), with padding and out-of-range slots skipped.
pub fn check_references() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &(page_size, nk, hd) in &[(16usize, 8usize, 128usize), (1, 2, 64), (256, 1, 96)] {
        let case = CacheCase { padding: 3, out_of_range: 4, ..CacheCase::for_tokens(200, page_size, 9) };
        let slots = case.slots(200);
        let host = HostCache::<F8E4M3>::new(&case, nk, hd).expect("valid case");
        let l = host.layout;
        let k: Vec<bf16> = Rng::new(7).vec(200 * nk * hd, -3.0, 3.0);
        let scales = scales_for::<F8E4M3>(3.0, 3.0);
        let (mut kb, mut vb) = (vec![bf16::NAN; l.extent()], vec![bf16::NAN; l.extent()]);
        let (mut k8, mut v8) = (vec![F8E4M3::NAN; l.extent()], vec![F8E4M3::NAN; l.extent()]);
        let oob = reference::append_kv(&k, &k, &slots, &l, KvScales::ONE, &mut kb, &mut vb);
        reference::append_kv(&k, &k, &slots, &l, scales, &mut k8, &mut v8);
        // Read every written token back (one "sequence" per token, its page as the table).
        let (mut exact, mut fp8, mut want) = (Vec::new(), Vec::new(), Vec::new());
        for (t, &s) in slots.iter().enumerate() {
            if s < 0 || s as usize >= l.num_slots() {
                continue;
            }
            let page = [(s as usize / page_size) as i32];
            let one = |c: &[F8E4M3]| reference::gather(c, &l, &page, s as usize % page_size + 1, scales.k);
            let row = reference::gather(&kb, &l, &page, s as usize % page_size + 1, 1.0);
            exact.extend(row[row.len() - nk * hd..].iter().map(|&x| bf16::from_f64(x)));
            let row8 = one(&k8);
            fp8.extend(row8[row8.len() - nk * hd..].iter().map(|&x| F8E4M3::from_f64(x / scales.k as f64)));
            want.extend(k[t * nk * hd..][..nk * hd].iter().map(|x| x.to_f64()));
        }
        let want_q: Vec<f64> = want.iter().map(|x| x / scales.k as f64).collect();
        out.push(CheckResult {
            op: "reference::kv_cache",
            dtype: "bf16 / e4m3",
            shape: format!("200 tokens, kv heads {nk}, head_dim {hd}, {}", case.describe()),
            comparisons: vec![
                compare("bf16 append then gather = input", &exact, &want, super::Tolerance { atol: 0.0, rtol: 0.0, frobenius: 0.0 }),
                compare("e4m3 append then gather within half a step", &fp8, &want_q, tolerance::<F8E4M3>()),
                count_comparison("out-of-range slots skipped", oob as u64, 4),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slots_have_the_requested_padding_and_out_of_range_entries() {
        for (ps, slots64) in [(1usize, false), (16, true), (256, false)] {
            let c = CacheCase { padding: 5, out_of_range: 7, slots64, ..CacheCase::for_tokens(120, ps, 3) };
            let s = c.slots(120);
            let n = (c.num_pages * ps) as i64;
            assert_eq!(s.len(), 120);
            assert_eq!(s.iter().filter(|&&x| x >= n).count(), 7);
            let valid: Vec<i64> = s.iter().copied().filter(|&x| (0..n).contains(&x)).collect();
            assert_eq!(valid.iter().collect::<HashSet<_>>().len(), valid.len(), "valid slots are unique");
            assert_eq!(valid.len() + 7 + s.iter().filter(|&&x| x == -1).count(), 120);
            assert!(s.iter().all(|&x| slots64 || i32::try_from(x).is_ok()));
        }
    }

    #[test]
    fn the_cache_comparison_accepts_the_reference_and_catches_stray_writes() {
        let case = CacheCase { padding: 2, out_of_range: 3, page_pad: 8, ..CacheCase::for_tokens(20, 8, 1) };
        let slots = case.slots(20);
        let host = HostCache::<F8E4M3>::new(&case, 2, 16).unwrap();
        let k: Vec<bf16> = Rng::new(1).vec(20 * 32, -3.0, 3.0);
        let v: Vec<bf16> = Rng::new(2).vec(20 * 32, -3.0, 3.0);
        let scales = scales_for::<F8E4M3>(3.0, 3.0);
        let (mut gk, mut gv) = (host.k.clone(), host.v.clone());
        let oob = reference::append_kv(&k, &v, &slots, &host.layout, scales, &mut gk[GUARD..], &mut gv[GUARD..]);
        assert_eq!(oob, 3);
        let good = (gk, gv, 3u64);
        assert!(host.compare(&good, &k, &v, &slots, scales).iter().all(Comparison::passed));
        let want: Vec<f64> = k.iter().map(|x| x.to_f64()).collect();
        assert!(host.compare_fp8_k(&good.0, &want, &slots, scales.k).passed());
        // A write into the guard, a wrong count, a value off by one step: each fails.
        let mut bad = good.clone();
        bad.0[GUARD - 1] = F8E4M3(0x38);
        assert!(!host.compare(&bad, &k, &v, &slots, scales)[0].passed());
        let bad = (good.0.clone(), good.1.clone(), 2u64);
        assert!(!host.compare(&bad, &k, &v, &slots, scales)[2].passed());
        let t = slots.iter().position(|&s| s >= 0 && (s as usize) < host.layout.num_slots()).unwrap();
        let o = GUARD + host.layout.offset(slots[t] as usize, 1) + 3;
        let mut bad = good.clone();
        bad.1[o] = F8E4M3(bad.1[o].0 ^ 1);
        assert!(!host.compare(&bad, &k, &v, &slots, scales)[1].passed());
    }
}
