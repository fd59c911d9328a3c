//! GPU tests of the paged-KV-cache write (`append_kv`) against `reference::kv_cache`, with the
//! whole cache and guard regions around it poisoned. Skip without a GPU.

mod common;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::kv_cache::{check_append_kv, check_append_latent, AppendCase, CacheCase};
use warpcore::kv_cache::{KvCacheMut, SlotErrors, PAGE_SIZES};
use warpcore::ops::kv_cache::append_kv;
use warpcore::{Error, TensorView, TensorViewMut, F8E4M3};

const HEAD_DIMS: &[usize] = &[64, 80, 96, 128, 192, 256, 17, 8];

fn append_case() -> impl Strategy<Value = AppendCase> {
    (
        (1usize..80, 1usize..9, proptest::sample::select(HEAD_DIMS), 0usize..3, proptest::sample::select(&[0usize, 0, 1, 8][..])),
        (proptest::sample::select(PAGE_SIZES), 0usize..5, 0usize..5, any::<bool>(), proptest::sample::select(&[0usize, 3, 8][..])),
        any::<u64>(),
    )
        .prop_map(|((num_tokens, num_kv_heads, head_dim, gap, offset), (page_size, padding, out_of_range, slots64, page_pad), seed)| AppendCase {
            num_tokens,
            num_kv_heads,
            head_dim,
            token_gap: gap * 8 + if seed % 5 == 0 { 1 } else { 0 },
            offset,
            cache: CacheCase { padding, out_of_range, slots64, page_pad, ..CacheCase::for_tokens(num_tokens, page_size, seed) },
            seed,
        })
}

proptest! {
    #![proptest_config(config())]
    /// MLA's latent cache: K rows only (V pages never written), any width.
    #[test]
    fn latent_cache(case in append_case(), fp8 in any::<bool>()) {
        let Some(dev) = device() else { return Ok(()) };
        let r = if fp8 { check_append_latent::<bf16, F8E4M3>(&dev, &case) } else { check_append_latent::<f16, f16>(&dev, &case) };
        assert_passed(&r.unwrap());
    }
    #[test]
    fn bf16_cache(case in append_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_append_kv::<bf16, bf16>(&dev, &case).unwrap());
    }
    #[test]
    fn f16_cache(case in append_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_append_kv::<f16, f16>(&dev, &case).unwrap());
    }
    #[test]
    fn fp8_cache_from_bf16(case in append_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_append_kv::<bf16, F8E4M3>(&dev, &case).unwrap());
    }
    #[test]
    fn fp8_cache_from_f16(case in append_case()) {
        let Some(dev) = device() else { return Ok(()) };
        assert_passed(&check_append_kv::<f16, F8E4M3>(&dev, &case).unwrap());
    }
}

#[test]
fn out_of_range_slots_are_harmless() {
    // Most slots past the cache (including i32::MAX and 2^40), a one-page cache: everything
    // but the addressed rows — and the guards around the pages — stays poison, and the count
    // is exact.
    let Some(dev) = device() else { return };
    for slots64 in [false, true] {
        for page_size in [1, 16, 256] {
            let cache = CacheCase { num_pages: 1, out_of_range: 40, padding: 10, slots64, ..CacheCase::for_tokens(60, page_size, 7) };
            let case = AppendCase { num_tokens: 60, num_kv_heads: 4, head_dim: 128, token_gap: 0, offset: 0, cache, seed: 7 };
            assert_passed(&check_append_kv::<bf16, bf16>(&dev, &case).unwrap());
            assert_passed(&check_append_kv::<bf16, F8E4M3>(&dev, &case).unwrap());
        }
    }
}

#[test]
fn prefill_sized_append() {
    let Some(dev) = device() else { return };
    let case = AppendCase { num_tokens: 4099, num_kv_heads: 8, head_dim: 128, token_gap: 0, offset: 0, cache: CacheCase::for_tokens(4099, 16, 3), seed: 3 };
    assert_passed(&check_append_kv::<bf16, bf16>(&dev, &case).unwrap());
    assert_passed(&check_append_kv::<f16, F8E4M3>(&dev, &case).unwrap());
}

#[test]
fn the_slot_error_counter_accumulates_and_resets() {
    let Some(dev) = device() else { return };
    let k = dev.upload(&vec![bf16::ONE; 3 * 64]).unwrap();
    let kv = TensorView::contiguous(k.as_view(), [3, 1, 64]).unwrap();
    let slots = dev.upload(&[0i32, 99, -1]).unwrap();
    let sv = TensorView::contiguous(slots.as_view(), [3]).unwrap();
    let mut pages = (dev.zeros::<bf16>(2 * 8 * 64).unwrap(), dev.zeros::<bf16>(2 * 8 * 64).unwrap());
    let mut errors = SlotErrors::new(&dev).unwrap();
    for _ in 0..2 {
        let mut cache = KvCacheMut::new(
            TensorViewMut::contiguous(pages.0.as_view_mut(), [2, 8, 1, 64]).unwrap(),
            TensorViewMut::contiguous(pages.1.as_view_mut(), [2, 8, 1, 64]).unwrap(),
        )
        .unwrap()
        .count_errors_in(&mut errors);
        let r = append_kv(&dev, &kv, &kv, &sv, &mut cache);
        if cfg!(feature = "debug-sync") {
            assert!(matches!(r, Err(Error::IndexOutOfRange { count: 1, .. })), "{r:?}");
        } else {
            r.unwrap();
        }
    }
    assert_eq!(errors.count(&dev).unwrap(), 2);
    errors.reset(&dev).unwrap();
    assert_eq!(errors.count(&dev).unwrap(), 0);
    // Slot 0 written, nothing else.
    let kp = dev.download(&pages.0).unwrap();
    assert!(kp[..64].iter().all(|v| *v == bf16::ONE) && kp[64..].iter().all(|v| *v == bf16::ZERO));
}

#[test]
fn bad_shapes_and_layouts_are_rejected_before_any_write() {
    let Some(dev) = device() else { return };
    let k = dev.upload(&vec![bf16::ONE; 4 * 2 * 64]).unwrap();
    let slots = dev.upload(&[0i64, 1, 2, 3]).unwrap();
    let mut pages = (dev.zeros::<bf16>(4 * 16 * 2 * 64).unwrap(), dev.zeros::<bf16>(4 * 16 * 2 * 64).unwrap());
    let kv = TensorView::contiguous(k.as_view(), [4, 2, 64]).unwrap();
    let sv = TensorView::contiguous(slots.as_view(), [4]).unwrap();
    {
        let mut cache = KvCacheMut::new(
            TensorViewMut::contiguous(pages.0.as_view_mut(), [4, 16, 2, 64]).unwrap(),
            TensorViewMut::contiguous(pages.1.as_view_mut(), [4, 16, 2, 64]).unwrap(),
        )
        .unwrap();
        // v of another shape.
        let v3 = TensorView::contiguous(k.slice(..3 * 2 * 64), [3, 2, 64]).unwrap();
        let e = append_kv(&dev, &kv, &v3, &sv, &mut cache).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "v", .. }), "{e}");
        // Rows of 1 head of 128 into a cache of 2 heads of 64.
        let k128 = TensorView::contiguous(k.as_view(), [4, 1, 128]).unwrap();
        let e = append_kv(&dev, &k128, &k128, &sv, &mut cache).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "cache", .. }), "{e}");
        // A slot mapping of the wrong length.
        let s3 = TensorView::contiguous(slots.slice(..3), [3]).unwrap();
        let e = append_kv(&dev, &kv, &kv, &s3, &mut cache).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "slot_mapping", .. }), "{e}");
        // A strided head_dim.
        let ks = TensorView::new(k.as_view(), [4, 2, 32], [128, 64, 2]).unwrap();
        assert!(append_kv(&dev, &ks, &ks, &sv, &mut cache).is_err());
        // Zero tokens: a no-op.
        let k0 = TensorView::contiguous(k.slice(..0), [0, 2, 64]).unwrap();
        let s0 = TensorView::contiguous(slots.slice(..0), [0]).unwrap();
        append_kv(&dev, &k0, &k0, &s0, &mut cache).unwrap();
    }
    // An unsupported page size; K and V with different strides.
    let e = KvCacheMut::new(
        TensorViewMut::contiguous(pages.0.as_view_mut(), [4, 12, 2, 64]).unwrap(),
        TensorViewMut::contiguous(pages.1.as_view_mut(), [4, 12, 2, 64]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("page_size")), "{e}");
    let e = KvCacheMut::new(
        TensorViewMut::contiguous(pages.0.as_view_mut(), [2, 16, 2, 64]).unwrap(),
        TensorViewMut::new(pages.1.as_view_mut(), [2, 16, 2, 64], [4096, 128, 64, 1]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("v_pages strides")), "{e}");
    assert!(dev.download(&pages.0).unwrap().iter().all(|v| *v == bf16::ZERO));
    assert!(dev.download(&pages.1).unwrap().iter().all(|v| *v == bf16::ZERO));
}
