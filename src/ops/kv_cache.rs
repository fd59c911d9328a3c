//! Writing the paged KV cache (src/kv_cache.rs has the layout): `append_kv` (what engines call
//! reshape_and_cache), `append_latent` (MLA's latent cache: concat_and_cache_mla), and the
//! launch path every appending op shares. The kernel is the RoPE
//! family's (cuda/rope.cu) with nothing to rotate, so it is built with the `rope` feature.

use super::{check_device, check_dtype, check_inner_dense, check_shape, launch};
use crate::kv_cache::{KvCacheMut, SlotErrors};
use crate::{ffi, DType, Device, Error, IndexType, Result, TensorView};

/// The input dtypes of appending ops (the cache is the same dtype, or FP8 e4m3).
pub(crate) const APPEND_DTYPES: &[ffi::wc_dtype] = &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F16];

/// Inputs `T` (bf16 / f16) may go into a cache of `C`: the same dtype, or FP8 e4m3.
pub(crate) fn check_cache_for<T: DType, C: DType>(op: &'static str) -> Result<()> {
    check_dtype::<T>(op, APPEND_DTYPES)?;
    if C::TAG == T::TAG || C::TAG == ffi::wc_dtype_WC_E4M3 {
        return Ok(());
    }
    Err(Error::Unsupported { op, what: "cache dtype for these inputs (same dtype or e4m3)", value: format!("{} cache, {} inputs", C::NAME, T::NAME) })
}

/// `slot_mapping` must be `[num_tokens]`, dense, on the device.
pub(crate) fn check_slot_mapping<S: IndexType>(op: &'static str, dev: &Device, slots: &TensorView<S, 1>, num_tokens: usize) -> Result<()> {
    check_shape(op, "slot_mapping", &slots.shape(), &[num_tokens])?;
    check_inner_dense(op, "slot_mapping", &slots.strides())?;
    check_device(op, "slot_mapping", dev, slots.stream())
}

/// Queues an appending launch. `f` gets the cache's C parameters (error counter included).
/// With `debug-sync` the op waits and returns `Error::IndexOutOfRange` when the kernel skipped
/// out-of-range slots (counting with a temporary counter when none is attached).
pub(crate) fn launch_appending<C: DType>(
    op: &'static str,
    dev: &Device,
    cache: &mut KvCacheMut<C>,
    f: impl FnOnce(ffi::wc_paged_kv_cache, ffi::wc_stream) -> ffi::wc_status,
) -> Result<()> {
    let debug = cfg!(feature = "debug-sync");
    let mut temp = if debug && !cache.has_error_counter() { Some(SlotErrors::new(dev)?) } else { None };
    let before = if debug { cache.error_count(dev)?.unwrap_or(0) } else { 0 };
    {
        let stream = dev.stream();
        let raw = cache.raw(stream, temp.as_mut());
        let params = raw.params;
        launch(op, dev, |s| f(params, s))?;
    }
    if debug {
        let after = match &temp {
            Some(t) => t.count(dev)?,
            None => cache.error_count(dev)?.unwrap_or(0),
        };
        if after != before {
            return Err(Error::IndexOutOfRange { op, arg: "slot_mapping", count: after.wrapping_sub(before) as u64 });
        }
    }
    Ok(())
}

/// Writes `k` and `v` rows `[num_tokens, num_kv_heads, head_dim]` (bf16 / f16, any token and
/// head strides, head_dim dense) into the paged cache at `slot_mapping[num_tokens]` (i32 or
/// i64): token t's rows go to slot `slot_mapping[t]`. Negative slots are padding (skipped);
/// slots past the cache are skipped and counted (see [`crate::kv_cache`]). The cache has the
/// inputs' dtype (an exact copy) or is FP8 e4m3 (stored = round(x / scale)).
pub fn append_kv<T: DType, C: DType, S: IndexType>(
    dev: &Device,
    k: &TensorView<T, 3>,
    v: &TensorView<T, 3>,
    slot_mapping: &TensorView<S, 1>,
    cache: &mut KvCacheMut<C>,
) -> Result<()> {
    append("append_kv", dev, k, Some(v), slot_mapping, cache)
}

/// MLA's cache write (what engines call concat_and_cache_mla): each token's latent row `[c_kv |
/// k_pe]` of `latent` `[num_tokens, 1, kv_lora_rank + rope_dim]` into the latent cache
/// ([`KvCacheMut::latent`]) at `slot_mapping[num_tokens]`, with [`append_kv`]'s slot rules and
/// dtypes. (`rope_append_kv` does the same after rotating k_pe, in one launch.)
pub fn append_latent<T: DType, C: DType, S: IndexType>(
    dev: &Device,
    latent: &TensorView<T, 3>,
    slot_mapping: &TensorView<S, 1>,
    cache: &mut KvCacheMut<C>,
) -> Result<()> {
    append("append_latent", dev, latent, None, slot_mapping, cache)
}

/// k (and v, unless the cache is latent) rows into the cache.
fn append<T: DType, C: DType, S: IndexType>(
    op: &'static str,
    dev: &Device,
    k: &TensorView<T, 3>,
    v: Option<&TensorView<T, 3>>,
    slot_mapping: &TensorView<S, 1>,
    cache: &mut KvCacheMut<C>,
) -> Result<()> {
    check_cache_for::<T, C>(op)?;
    if v.is_some() == cache.is_latent() {
        let what = if cache.is_latent() { "cache (append_kv writes K and V: a latent cache takes append_latent)" } else { "cache (append_latent needs a latent cache, KvCacheMut::latent)" };
        return Err(Error::Unsupported { op, what, value: format!("{:?}", cache.layout().shape()) });
    }
    let [num_tokens, num_kv_heads, head_dim] = k.shape();
    check_inner_dense(op, "k", &k.strides())?;
    check_device(op, "k", dev, k.stream())?;
    if let Some(v) = v {
        check_shape(op, "v", &v.shape(), &k.shape())?;
        check_inner_dense(op, "v", &v.strides())?;
        check_device(op, "v", dev, v.stream())?;
    }
    check_slot_mapping(op, dev, slot_mapping, num_tokens)?;
    cache.check_for(op, dev, num_kv_heads, head_dim)?;
    crate::ops::check_fits_i32(op, "num_tokens", num_tokens)?;
    crate::ops::rope::check_token_items(op, "2 · num_kv_heads · head_dim", num_kv_heads.saturating_mul(head_dim).saturating_mul(2))?;
    if num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (kp, _gk) = k.device_ptr(stream);
    let v_guard = v.map(|v| v.device_ptr(stream));
    let vp = v_guard.as_ref().map_or(0, |(p, _)| *p);
    let (sp, _gs) = slot_mapping.device_ptr(stream);
    let heads = ffi::wc_qk_heads {
        q: std::ptr::null_mut(),
        // The kernel only reads k here (nothing is rotated).
        k: kp as *mut _,
        num_tokens: num_tokens as i64,
        num_q_heads: 0,
        num_kv_heads: num_kv_heads as i64,
        head_dim: head_dim as i64,
        q_token_stride: 0,
        q_head_stride: 0,
        k_token_stride: k.strides()[0] as i64,
        k_head_stride: k.strides()[1] as i64,
        dtype: T::TAG,
    };
    let (v_token_stride, v_head_stride) = v.map_or((0, 0), |v| (v.strides()[0] as i64, v.strides()[1] as i64));
    launch_appending(op, dev, cache, |cache, s| {
        let params = ffi::wc_append_kv_params {
            heads,
            append: ffi::wc_kv_append {
                v: vp as *const _,
                v_token_stride,
                v_head_stride,
                slot_mapping: sp as *const _,
                slots_int64: S::IS_I64 as i32,
                cache,
            },
        };
        // SAFETY: k, v (absent exactly for a latent cache, whose v_pages are null), slot_mapping
        // and the cache were validated above (shapes, strides inside their buffers, dtypes,
        // device); the kernel bounds-checks every slot against the cache.
        unsafe { ffi::wc_append_kv(&params, s) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn cache_dtypes_follow_the_inputs() {
        assert!(check_cache_for::<bf16, bf16>("t").is_ok());
        assert!(check_cache_for::<f16, crate::F8E4M3>("t").is_ok());
        assert!(matches!(check_cache_for::<bf16, f16>("t").unwrap_err(), Error::Unsupported { .. }));
        assert!(matches!(check_cache_for::<f32, f32>("t").unwrap_err(), Error::Unsupported { what: "dtype", .. }));
    }
}
