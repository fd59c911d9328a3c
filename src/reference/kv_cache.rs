//! CPU oracle for the paged KV cache ([`crate::kv_cache`] has the layout): what `append_kv`
//! stores (bit for bit, including the FP8 rounding) and reading a sequence back through its
//! pages. Needs no GPU; the attention references read caches through [`gather`].

use crate::kv_cache::{KvCacheLayout, KvScales};
use crate::DType;

/// The value the kernels store for `x` in a cache of `C`: the same value when `C` is `T`; for
/// FP8, round_e4m3(f32(x) / scale) — an IEEE f32 division, then round to nearest even with
/// saturation at ±448, exactly the kernels' `__fdiv_rn` + `__nv_cvt_float_to_fp8(SATFINITE)`.
pub fn quantize<T: DType, C: DType>(x: T, scale: f32) -> C {
    if C::TAG == T::TAG {
        C::from_f32(x.to_f32())
    } else {
        C::from_f32(x.to_f32() / scale)
    }
}

/// A stored value back to f64: stored · scale.
pub fn dequantize<C: DType>(c: C, scale: f32) -> f64 {
    c.to_f64() * scale as f64
}

/// `append_kv` into host copies of the K and V pages (both with `layout`, as buffers of at least
/// `layout.extent()` elements): token t's rows of dense k, v `[num_tokens, num_kv_heads,
/// head_dim]` go to slot `slots[t]`; negative slots are padding. Returns how many tokens had a
/// slot past the cache (skipped, as the kernels do).
pub fn append_kv<T: DType, C: DType>(
    k: &[T],
    v: &[T],
    slots: &[i64],
    layout: &KvCacheLayout,
    scales: KvScales,
    k_cache: &mut [C],
    v_cache: &mut [C],
) -> usize {
    let row = layout.num_kv_heads * layout.head_dim;
    assert!(k.len() == slots.len() * row && v.len() == k.len(), "k, v must be [num_tokens, num_kv_heads, head_dim]");
    let mut out_of_range = 0;
    for (t, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        if slot as u64 >= layout.num_slots() as u64 {
            out_of_range += 1;
            continue;
        }
        for h in 0..layout.num_kv_heads {
            let dst = layout.offset(slot as usize, h);
            let src = t * row + h * layout.head_dim;
            for e in 0..layout.head_dim {
                k_cache[dst + e] = quantize::<T, C>(k[src + e], scales.k);
                v_cache[dst + e] = quantize::<T, C>(v[src + e], scales.v);
            }
        }
    }
    out_of_range
}

/// The rows of one sequence, `[seq_len, num_kv_heads, head_dim]`, read through its pages (a
/// block table row) and dequantized with `scale`.
pub fn gather<C: DType>(cache: &[C], layout: &KvCacheLayout, pages: &[i32], seq_len: usize, scale: f32) -> Vec<f64> {
    let ps = layout.page_size;
    assert!(seq_len <= pages.len() * ps, "{seq_len} tokens need more than {} pages", pages.len());
    let mut out = Vec::with_capacity(seq_len * layout.num_kv_heads * layout.head_dim);
    for p in 0..seq_len {
        let page = pages[p / ps];
        assert!(page >= 0 && (page as usize) < layout.num_pages, "page id {page} outside the cache");
        let slot = page as usize * ps + p % ps;
        for h in 0..layout.num_kv_heads {
            let o = layout.offset(slot, h);
            out.extend(cache[o..o + layout.head_dim].iter().map(|&c| dequantize(c, scale)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use crate::kv_cache::PageAllocator;
    use crate::F8E4M3;
    use half::bf16;

    /// Two sequences appended through the allocator, then read back through the block table.
    fn round_trip<C: DType>(scales: KvScales, page_size: usize) -> (Vec<f64>, Vec<bf16>, Vec<C>) {
        let (nk, hd) = (2, 8);
        let layout = KvCacheLayout::dense(32, page_size, nk, hd).unwrap();
        let mut alloc = PageAllocator::shuffled(32, page_size, 5).unwrap();
        let (a, b) = (alloc.add_sequence(), alloc.add_sequence());
        let mut slots = alloc.append(a, 19).unwrap();
        slots.extend(alloc.append(b, 11).unwrap());
        let k: Vec<bf16> = Rng::new(1).vec(30 * nk * hd, -3.0, 3.0);
        let v: Vec<bf16> = Rng::new(2).vec(30 * nk * hd, -3.0, 3.0);
        let mut kc = vec![C::NAN; layout.extent()];
        let mut vc = vec![C::NAN; layout.extent()];
        assert_eq!(append_kv(&k, &v, &slots, &layout, scales, &mut kc, &mut vc), 0);
        let bt = alloc.block_table(&[a, b]).unwrap();
        let row = |s: usize| &bt.table[s * bt.max_pages_per_seq..][..bt.max_pages_per_seq];
        let mut got = gather(&kc, &layout, row(0), 19, scales.k);
        got.extend(gather(&kc, &layout, row(1), 11, scales.k));
        // V went to the same slots.
        let gv = gather(&vc, &layout, row(0), 19, scales.v);
        let want_v: Vec<f64> = v[..19 * nk * hd].iter().map(|x| dequantize(quantize::<bf16, C>(*x, scales.v), scales.v)).collect();
        assert_eq!(gv, want_v);
        (got, k, kc)
    }

    #[test]
    fn bf16_cache_round_trips_exactly_through_the_block_table() {
        for ps in [1, 8, 16] {
            let (got, k, kc) = round_trip::<bf16>(KvScales::ONE, ps);
            assert_eq!(got, k.iter().map(|x| x.to_f64()).collect::<Vec<_>>());
            // 30 tokens written, the rest of the cache untouched.
            assert_eq!(kc.iter().filter(|x| !x.is_nan()).count(), 30 * 16);
        }
    }

    #[test]
    fn fp8_cache_round_trip_is_within_half_an_e4m3_step() {
        let scales = KvScales::new(3.0 / 448.0 * 1.5, 0.01);
        let (got, k, _) = round_trip::<F8E4M3>(scales, 8);
        for (g, x) in got.iter().zip(&k) {
            let x = x.to_f64();
            // Half a step of a 3-bit mantissa (1/16 relative), or half the subnormal step.
            let bound = (x.abs() / 16.0).max(scales.k as f64 * 2f64.powi(-10)) * (1.0 + 1e-6);
            assert!((g - x).abs() <= bound, "{x} stored as {g} (bound {bound})");
        }
    }

    #[test]
    fn fp8_quantization_divides_rounds_to_even_and_saturates() {
        let s = 0.5f32;
        assert_eq!(quantize::<f32, F8E4M3>(1.0, s).to_f64(), 2.0);
        // 1.0625 / 1 lies halfway between 1 and 1.125: even mantissa (1.0).
        assert_eq!(quantize::<f32, F8E4M3>(1.0625, 1.0).to_f64(), 1.0);
        assert_eq!(quantize::<f32, F8E4M3>(1e4, s), F8E4M3(0x7E)); // 448
        assert_eq!(quantize::<f32, F8E4M3>(-1e4, s), F8E4M3(0xFE));
        assert_eq!(dequantize(F8E4M3(0x7E), s), 224.0);
        // Same dtype: an exact copy, scale ignored.
        assert_eq!(quantize::<bf16, bf16>(bf16::from_f32(3.25), 7.0), bf16::from_f32(3.25));
    }

    #[test]
    fn padding_and_out_of_range_slots_write_nothing() {
        let layout = KvCacheLayout::dense(2, 8, 1, 4).unwrap();
        let k: Vec<bf16> = Rng::new(3).vec(5 * 4, -1.0, 1.0);
        let mut kc = vec![bf16::NAN; layout.extent()];
        let mut vc = vec![bf16::NAN; layout.extent()];
        let slots = [3, -1, 16, i64::MAX, 15];
        assert_eq!(append_kv(&k, &k, &slots, &layout, KvScales::ONE, &mut kc, &mut vc), 2);
        let written: Vec<usize> = (0..kc.len()).filter(|&i| !kc[i].is_nan()).collect();
        assert_eq!(written, (12..16).chain(60..64).collect::<Vec<_>>());
        assert_eq!(&kc[60..64], &k[16..20]);
    }

    #[test]
    fn strided_pages_are_addressed_through_the_layout() {
        // Pages padded by 3 elements; heads 8 apart with head_dim 4 (a gap in each row).
        let layout = KvCacheLayout::new("t", [3, 1, 2, 4], [19, 16, 8, 1]).unwrap();
        let k: Vec<f32> = (0..2 * 2 * 4).map(|i| i as f32 + 1.0).collect();
        let mut kc = vec![0.0f32; layout.extent()];
        let mut vc = kc.clone();
        append_kv(&k, &k, &[2, 0], &layout, KvScales::ONE, &mut kc, &mut vc);
        assert_eq!(&kc[38..42], &k[0..4]);
        assert_eq!(&kc[46..50], &k[4..8]);
        assert_eq!(&kc[0..4], &k[8..12]);
        assert_eq!(gather(&kc, &layout, &[2], 1, 1.0), k[0..8].iter().map(|&x| x as f64).collect::<Vec<_>>());
    }
}
