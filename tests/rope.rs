//! GPU tests of the RoPE family against `reference::rope` (and, for the appending ops, the
//! poisoned cache against `reference::kv_cache`). Skip without a GPU.

mod common;

use common::{assert_passed, device};
use common::proptest_config as config;
use half::{bf16, f16};
use proptest::prelude::*;
use warpcore::check::kv_cache::CacheCase;
use warpcore::check::rope::{check_qk_norm_rope, check_qk_norm_rope_append_kv, check_rope, check_rope_append_kv, model_configs, QkvLayout, RopeCase};
use warpcore::kv_cache::{KvCacheMut, KvScales, PAGE_SIZES};
use warpcore::ops::rms_norm::RmsNormConfig;
use warpcore::ops::rope::{qk_norm_rope, rope, rope_append_kv, QkNorm, Qkv, RopeConfig, RopeScaling, RopeStyle, Yarn};
use warpcore::{DType, Device, Error, TensorView, TensorViewMut, F8E4M3};

const HEAD_DIMS: &[usize] = &[64, 80, 96, 128, 192, 256];

fn scaling() -> impl Strategy<Value = RopeScaling> {
    prop_oneof![
        Just(RopeScaling::None),
        (1.0f64..8.0).prop_map(|factor| RopeScaling::Linear { factor }),
        (1.0f64..4.0, 512usize..8192, 0usize..60000).prop_map(|(factor, original_max_positions, seq_len)| RopeScaling::DynamicNtk {
            factor,
            original_max_positions,
            seq_len
        }),
        Just(RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_positions: 8192 }),
        Just(RopeScaling::Yarn(Yarn::deepseek_v3())),
        (2.0f64..40.0, any::<bool>()).prop_map(|(f, truncate)| RopeScaling::Yarn(Yarn { truncate, ..Yarn::new(f, 4096) })),
    ]
}

/// Shapes, partial rotary (full, half, DeepSeek's 64 at the end, any even width at any
/// offset), styles, scalings, fused or strided split layouts, odd offsets (the element-wise
/// path), GQA ratios 1/2/4/8, ragged positions of either index width.
fn rope_case() -> impl Strategy<Value = RopeCase> {
    (
        (proptest::sample::select(HEAD_DIMS), 0usize..4, any::<u64>(), any::<bool>(), scaling()),
        (1usize..40, 1usize..5, proptest::sample::select(&[1usize, 2, 4, 8][..])),
        (any::<bool>(), 0usize..4, 0usize..9, 0usize..9, proptest::sample::select(&[0usize, 0, 1, 8][..])),
        (any::<bool>(), proptest::sample::select(&[1i64, 17, 4096, 1 << 17, 1 << 31][..])),
    )
        .prop_map(|((head_dim, kind, r, gptj, scaling), (num_tokens, nk, ratio), (fused, extra, hg, tg, offset), (pos64, maxp))| {
            let (rotary_dim, rotary_offset) = match kind {
                0 => (head_dim, 0),
                1 => (head_dim / 2, 0),
                2 => (64, head_dim - 64),
                _ => {
                    let d = 4 + 2 * (r as usize % ((head_dim - 4) / 2 + 1));
                    (d, (r >> 32) as usize % (head_dim - d + 1))
                }
            };
            let style = if gptj { RopeStyle::GptJ } else { RopeStyle::NeoX };
            let cfg = RopeConfig { rotary_dim, rotary_offset, theta: 10000.0, style, scaling };
            RopeCase {
                num_tokens,
                num_q_heads: nk * ratio,
                num_kv_heads: nk,
                head_dim,
                cfg,
                layout: if fused { QkvLayout::Fused { extra_heads: extra } } else { QkvLayout::Split { head_gap: hg, token_gap: tg } },
                offset,
                pos64,
                // i64: past the i32 range (the angle stays accurate to ~1e-6 rad up to 2^32).
                max_position: if pos64 && maxp == 1 << 31 { 1 << 32 } else { maxp },
                seed: r,
            }
        })
}

fn cache_case() -> impl Strategy<Value = (usize, usize, usize, bool, usize, u64)> {
    (proptest::sample::select(PAGE_SIZES), 0usize..4, 0usize..4, any::<bool>(), proptest::sample::select(&[0usize, 3, 8][..]), any::<u64>())
}

fn make_cache(num_tokens: usize, (page_size, padding, out_of_range, slots64, page_pad, seed): (usize, usize, usize, bool, usize, u64)) -> CacheCase {
    CacheCase { padding, out_of_range, slots64, page_pad, ..CacheCase::for_tokens(num_tokens, page_size, seed) }
}

macro_rules! rope_tests {
    ($m:ident, $t:ty) => {
        mod $m {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn rope_matches_reference(case in rope_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_rope::<$t>(&dev, &case).unwrap());
                }
                #[test]
                fn qk_norm_rope_matches_reference(case in rope_case(), gemma in any::<bool>()) {
                    let Some(dev) = device() else { return Ok(()) };
                    assert_passed(&check_qk_norm_rope::<$t>(&dev, &case, gemma).unwrap());
                }
            }

            #[test]
            fn model_configs_at_prefill_size() {
                let Some(dev) = device() else { return };
                for (i, (_, hd, cfg)) in model_configs().into_iter().enumerate() {
                    assert_passed(&check_rope::<$t>(&dev, &RopeCase::new(1031, 32, 8, hd, cfg, i as u64)).unwrap());
                }
            }
        }
    };
}
rope_tests!(bf16_rope, bf16);
rope_tests!(f16_rope, f16);
rope_tests!(f32_rope, f32);

macro_rules! append_tests {
    ($m:ident, $t:ty, $c:ty) => {
        mod $m {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn rope_append_kv_matches_reference(case in rope_case(), cache in cache_case()) {
                    let Some(dev) = device() else { return Ok(()) };
                    let cc = make_cache(case.num_tokens, cache);
                    assert_passed(&check_rope_append_kv::<$t, $c>(&dev, &case, &cc).unwrap());
                }
                #[test]
                fn qk_norm_rope_append_kv_matches_reference(case in rope_case(), cache in cache_case(), gemma in any::<bool>()) {
                    let Some(dev) = device() else { return Ok(()) };
                    let cc = make_cache(case.num_tokens, cache);
                    assert_passed(&check_qk_norm_rope_append_kv::<$t, $c>(&dev, &case, &cc, gemma).unwrap());
                }
            }
        }
    };
}
append_tests!(bf16_cache, bf16, bf16);
append_tests!(f16_cache, f16, f16);
append_tests!(bf16_fp8_cache, bf16, F8E4M3);
append_tests!(f16_fp8_cache, f16, F8E4M3);

#[test]
fn positions_past_2_pow_31_and_padding_everywhere() {
    let Some(dev) = device() else { return };
    let cfg = RopeConfig::new(128, 500000.0);
    let case = RopeCase { pos64: true, max_position: 1 << 32, ..RopeCase::new(64, 8, 2, 128, cfg, 9) };
    assert_passed(&check_rope::<f32>(&dev, &case).unwrap());
    // Every token padding: q and k rotated, the cache untouched.
    let cc = CacheCase { padding: 64, ..CacheCase::for_tokens(64, 16, 9) };
    assert_passed(&check_rope_append_kv::<bf16, F8E4M3>(&dev, &case, &cc).unwrap());
}

// ------------------------------------------------------------------ error paths

/// q [2, 4, 64] and k [2, 2, 64] buffers of ones, positions [2].
struct Bufs<T: DType> {
    q: cudarc::driver::CudaSlice<T>,
    k: cudarc::driver::CudaSlice<T>,
    pos: cudarc::driver::CudaSlice<i32>,
}

fn bufs<T: DType>(dev: &Device) -> Bufs<T> {
    Bufs {
        q: dev.upload(&[T::from_f32(1.0); 2 * 4 * 64]).unwrap(),
        k: dev.upload(&[T::from_f32(1.0); 2 * 2 * 64]).unwrap(),
        pos: dev.upload(&[3i32, 5]).unwrap(),
    }
}

fn unchanged<T: DType>(dev: &Device, b: &Bufs<T>) -> bool {
    let one = |v: &T| v.to_f32() == 1.0;
    dev.download(&b.q).unwrap().iter().all(one) && dev.download(&b.k).unwrap().iter().all(one)
}

#[test]
fn bad_configs_and_shapes_are_rejected_before_any_write() {
    let Some(dev) = device() else { return };
    let mut b = bufs::<bf16>(&dev);
    let pos = TensorView::contiguous(b.pos.as_view(), [2]).unwrap();
    let mut run = |cfg: RopeConfig, pos: &TensorView<i32, 1>| {
        let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
        let mut k = TensorViewMut::contiguous(b.k.as_view_mut(), [2, 2, 64]).unwrap();
        rope(&dev, Qkv::split(&mut q, &mut k), pos, &cfg).unwrap_err()
    };
    let e = run(RopeConfig::new(66, 1e4), &pos);
    assert!(matches!(e, Error::Unsupported { op: "rope", .. }), "{e}");
    let e = run(RopeConfig::new(64, 1e4).with_offset(2), &pos);
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let e = run(RopeConfig::new(64, 1e4).with_scaling(RopeScaling::Linear { factor: f64::NAN }), &pos);
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let short = TensorView::contiguous(b.pos.slice(..1), [1]).unwrap();
    let e = run(RopeConfig::new(64, 1e4), &short);
    assert!(matches!(e, Error::ShapeMismatch { arg: "positions", .. }), "{e}");
    assert!(unchanged(&dev, &b));
    // A fused view whose head count (4) is neither q + k (5) nor q + k + v (7). (2 q and 1 kv
    // head would be a valid q + k + v layout of 4.)
    let mut qkv = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
    let e = rope(&dev, Qkv::fused(&mut qkv, 3, 2), &TensorView::contiguous(b.pos.as_view(), [2]).unwrap(), &RopeConfig::new(64, 1e4)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "qkv", .. }), "{e}");
    assert!(unchanged(&dev, &b));
}

#[test]
fn zero_tokens_is_a_no_op() {
    let Some(dev) = device() else { return };
    let mut b = bufs::<f16>(&dev);
    let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [0, 4, 64]).unwrap();
    let mut k = TensorViewMut::contiguous(b.k.as_view_mut(), [0, 2, 64]).unwrap();
    let pos = TensorView::contiguous(b.pos.slice(..0), [0]).unwrap();
    rope(&dev, Qkv::split(&mut q, &mut k), &pos, &RopeConfig::new(64, 1e4)).unwrap();
    assert!(unchanged(&dev, &b));
}

#[test]
fn appending_ops_reject_bad_dtypes_caches_and_missing_v() {
    let Some(dev) = device() else { return };
    let cfg = RopeConfig::new(64, 1e4);
    // f32 caches do not exist (caches are bf16, f16 or e4m3).
    let mut cache32 = (dev.zeros::<f32>(4 * 8 * 2 * 64).unwrap(), dev.zeros::<f32>(4 * 8 * 2 * 64).unwrap());
    let e = KvCacheMut::new(
        TensorViewMut::contiguous(cache32.0.as_view_mut(), [4, 8, 2, 64]).unwrap(),
        TensorViewMut::contiguous(cache32.1.as_view_mut(), [4, 8, 2, 64]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");

    let mut b = bufs::<bf16>(&dev);
    let slots = dev.upload(&[0i32, 9]).unwrap();
    let sv = TensorView::contiguous(slots.as_view(), [2]).unwrap();
    let pos = TensorView::contiguous(b.pos.as_view(), [2]).unwrap();
    let mut f16_pages = (dev.zeros::<f16>(4 * 8 * 2 * 64).unwrap(), dev.zeros::<f16>(4 * 8 * 2 * 64).unwrap());
    {
        let mut cache = KvCacheMut::new(
            TensorViewMut::contiguous(f16_pages.0.as_view_mut(), [4, 8, 2, 64]).unwrap(),
            TensorViewMut::contiguous(f16_pages.1.as_view_mut(), [4, 8, 2, 64]).unwrap(),
        )
        .unwrap();
        let v = dev.upload(&vec![bf16::ONE; 2 * 2 * 64]).unwrap();
        let vv = TensorView::contiguous(v.as_view(), [2, 2, 64]).unwrap();
        let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
        let mut k = TensorViewMut::contiguous(b.k.as_view_mut(), [2, 2, 64]).unwrap();
        // bf16 inputs into an f16 cache.
        let e = rope_append_kv(&dev, Qkv::split_with_v(&mut q, &mut k, &vv), &pos, &cfg, &sv, &mut cache).unwrap_err();
        assert!(matches!(e, Error::Unsupported { op: "rope_append_kv", .. }), "{e}");
    }
    assert!(unchanged(&dev, &b));
    let mut bf_pages = (dev.zeros::<bf16>(4 * 8 * 2 * 64).unwrap(), dev.zeros::<bf16>(4 * 8 * 2 * 64).unwrap());
    let k_view = TensorViewMut::contiguous(bf_pages.0.as_view_mut(), [4, 8, 2, 64]).unwrap();
    let v_view = TensorViewMut::contiguous(bf_pages.1.as_view_mut(), [4, 8, 2, 64]).unwrap();
    // FP8 scales on a bf16 cache are refused.
    let e = KvCacheMut::new(k_view, v_view).unwrap().with_scales(KvScales::new(0.5, 0.5)).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let mut cache = KvCacheMut::new(
        TensorViewMut::contiguous(bf_pages.0.as_view_mut(), [4, 8, 2, 64]).unwrap(),
        TensorViewMut::contiguous(bf_pages.1.as_view_mut(), [4, 8, 2, 64]).unwrap(),
    )
    .unwrap();
    let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
    let mut k = TensorViewMut::contiguous(b.k.as_view_mut(), [2, 2, 64]).unwrap();
    // No v.
    let e = rope_append_kv(&dev, Qkv::split(&mut q, &mut k), &pos, &cfg, &sv, &mut cache).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "v", .. }), "{e}");
    // A slot mapping of the wrong length.
    let v = dev.upload(&vec![bf16::ONE; 2 * 2 * 64]).unwrap();
    let vv = TensorView::contiguous(v.as_view(), [2, 2, 64]).unwrap();
    let short = TensorView::contiguous(slots.slice(..1), [1]).unwrap();
    let e = rope_append_kv(&dev, Qkv::split_with_v(&mut q, &mut k, &vv), &pos, &cfg, &short, &mut cache).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "slot_mapping", .. }), "{e}");
    drop(cache);
    assert!(dev.download(&bf_pages.0).unwrap().iter().all(|v| *v == bf16::ZERO));
    // A latent (MLA) cache stores k rows only: a v given with it is refused by name (a split
    // v once slipped past this check to the launcher, which refused it untyped).
    let mut lat = dev.zeros::<bf16>(4 * 8 * 64).unwrap();
    let mut latent = KvCacheMut::latent(TensorViewMut::contiguous(lat.as_view_mut(), [4, 8, 1, 64]).unwrap(), 32).unwrap();
    let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
    let mut k1 = TensorViewMut::contiguous(b.k.slice_mut(..2 * 64), [2, 1, 64]).unwrap();
    let v1 = TensorView::contiguous(v.slice(..2 * 64), [2, 1, 64]).unwrap();
    let e = rope_append_kv(&dev, Qkv::split_with_v(&mut q, &mut k1, &v1), &pos, &cfg, &sv, &mut latent).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("v heads with a latent")), "{e}");
    drop(latent);
    assert!(dev.download(&lat).unwrap().iter().all(|v| *v == bf16::ZERO));
}

#[test]
fn qk_norm_rope_rejects_big_heads_and_bad_weights() {
    let Some(dev) = device() else { return };
    let mut qk = dev.upload(&vec![bf16::ONE; 2 * 2 * 520]).unwrap();
    let w = dev.upload(&vec![bf16::ONE; 520]).unwrap();
    let pos = dev.upload(&[1i64, 2]).unwrap();
    let pv = TensorView::contiguous(pos.as_view(), [2]).unwrap();
    let w520 = TensorView::contiguous(w.as_view(), [520]).unwrap();
    let mut view = TensorViewMut::contiguous(qk.as_view_mut(), [2, 2, 520]).unwrap();
    let norm = QkNorm { q_weight: &w520, k_weight: &w520, cfg: RmsNormConfig::new(1e-6) };
    let e = qk_norm_rope(&dev, Qkv::fused(&mut view, 1, 1), &pv, &RopeConfig::new(64, 1e4), norm).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "head_dim (at most 512)", .. }), "{e}");
    let mut view = TensorViewMut::contiguous(qk.slice_mut(..2 * 2 * 128), [2, 2, 128]).unwrap();
    let w127 = TensorView::contiguous(w.slice(..127), [127]).unwrap();
    let norm = QkNorm { q_weight: &w127, k_weight: &w127, cfg: RmsNormConfig::new(1e-6) };
    let e = qk_norm_rope(&dev, Qkv::fused(&mut view, 1, 1), &pv, &RopeConfig::new(128, 1e4), norm).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { arg: "q_weight", .. }), "{e}");
    let norm = QkNorm { q_weight: &w520, k_weight: &w520, cfg: RmsNormConfig::new(f32::NAN) };
    let mut view = TensorViewMut::contiguous(qk.slice_mut(..2 * 2 * 128), [2, 2, 128]).unwrap();
    let e = qk_norm_rope(&dev, Qkv::fused(&mut view, 1, 1), &pv, &RopeConfig::new(128, 1e4), norm).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "eps", .. }), "{e}");
    assert!(dev.download(&qk).unwrap().iter().all(|v| *v == bf16::ONE));
}

#[test]
fn fp8_inputs_are_an_unsupported_dtype() {
    let Some(dev) = device() else { return };
    let mut b = bufs::<F8E4M3>(&dev);
    let mut q = TensorViewMut::contiguous(b.q.as_view_mut(), [2, 4, 64]).unwrap();
    let mut k = TensorViewMut::contiguous(b.k.as_view_mut(), [2, 2, 64]).unwrap();
    let pos = TensorView::contiguous(b.pos.as_view(), [2]).unwrap();
    let e = rope(&dev, Qkv::split(&mut q, &mut k), &pos, &RopeConfig::new(64, 1e4)).unwrap_err();
    assert!(matches!(e, Error::Unsupported { what: "dtype", .. }), "{e}");
}
