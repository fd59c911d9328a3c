//! The RoPE family (cuda/rope.cu): `rope`, `rope_append_kv`, `qk_norm_rope`,
//! `qk_norm_rope_append_kv` (and `ops::kv_cache::append_kv`, the same kernel).
//!
//! Every op rotates q and k in place, in one launch, from `positions[num_tokens]` (i32 or i64):
//! the rotary part of each head, `[rotary_offset, rotary_offset + rotary_dim)`, turns pair i
//! by `position · inv_freq[i]` ([`RopeConfig::inv_freq`]: base theta and the scaling, computed
//! on the host in f64), cos and sin times [`RopeConfig::attention_factor`]. f32 math, one
//! rounding at each store; the rest of each head is untouched. The appending ops then write
//! the final k (exactly as stored in k) and v into a paged KV cache ([`crate::kv_cache`]), so
//! `rope_append_kv` equals `rope` followed by `append_kv` bit for bit.

pub(crate) mod config;
mod heads;

pub use config::{RopeConfig, RopeScaling, RopeStyle, Yarn, ROPE_MAX_ROTARY_DIM};
pub use heads::Qkv;
pub(crate) use heads::check_token_items;

use super::kv_cache::{check_cache_for, check_slot_mapping, launch_appending};
use super::rms_norm::RmsNormConfig;
use super::{check_device, check_dtype, check_inner_dense, check_shape, launch, FLOAT_DTYPES};
use crate::kv_cache::KvCacheMut;
use crate::{ffi, DType, Device, Error, IndexType, Result, TensorView};
use heads::HeadsLayout;

/// Largest head_dim the `qk_norm_rope` ops take (a warp holds one head in registers).
pub const QK_NORM_ROPE_MAX_HEAD_DIM: usize = ffi::WC_QK_NORM_ROPE_MAX_HEAD_DIM as usize;

/// Qwen3's per-head RMSNorm of q and k (over head_dim, `q_weight` for q heads, `k_weight` for
/// k heads, both `[head_dim]`), applied before the rotation.
#[derive(Clone, Copy, Debug)]
pub struct QkNorm<'b, 'a, T> {
    /// The q heads' norm weight `[head_dim]`.
    pub q_weight: &'b TensorView<'a, T, 1>,
    /// The k heads' norm weight `[head_dim]`.
    pub k_weight: &'b TensorView<'a, T, 1>,
    /// eps and weight offset, shared by the q and k norms.
    pub cfg: RmsNormConfig,
}

/// The C rotation parameters for `cfg` (validated) reading positions at `positions`.
fn rotary_params<P: IndexType>(cfg: &RopeConfig, positions: u64) -> ffi::wc_rotary {
    let inv_freq = cfg.with_freq_table(|t, _| *t);
    ffi::wc_rotary {
        positions: positions as *const _,
        positions_int64: P::IS_I64 as i32,
        style: match cfg.style {
            RopeStyle::NeoX => ffi::wc_rope_style_WC_ROPE_NEOX,
            RopeStyle::GptJ => ffi::wc_rope_style_WC_ROPE_GPTJ,
        },
        rotary_dim: cfg.rotary_dim as i64,
        rotary_offset: cfg.rotary_offset as i64,
        attention_factor: cfg.attention_factor() as f32,
        inv_freq,
    }
}

/// Checks shared by every op of the family; returns the heads' layout.
fn check_common<T: DType, P: IndexType>(
    op: &'static str,
    dev: &Device,
    qkv: &Qkv<'_, '_, T>,
    positions: &TensorView<P, 1>,
    cfg: &RopeConfig,
    appending: bool,
    latent: bool,
) -> Result<HeadsLayout> {
    if !appending {
        check_dtype::<T>(op, FLOAT_DTYPES)?;
    }
    // A latent (MLA) cache takes the k rows only: no v.
    let layout = qkv.layout(op, dev, appending && !latent)?;
    // (A split v given with a latent cache has no v_strides, need_v being false: ask directly.)
    if latent && (layout.v_strides.is_some() || matches!(qkv, Qkv::Split { v: Some(_), .. })) {
        return Err(Error::Unsupported { op, what: "v heads with a latent (MLA) cache, which stores k rows only", value: "v given".into() });
    }
    cfg.validate(op, layout.head_dim)?;
    check_shape(op, "positions", &positions.shape(), &[layout.num_tokens])?;
    check_inner_dense(op, "positions", &positions.strides())?;
    check_device(op, "positions", dev, positions.stream())?;
    Ok(layout)
}

fn check_norm<T: DType>(op: &'static str, dev: &Device, norm: &QkNorm<'_, '_, T>, head_dim: usize) -> Result<()> {
    super::rms_norm::check_config(op, norm.cfg)?;
    if head_dim > QK_NORM_ROPE_MAX_HEAD_DIM {
        return Err(Error::Unsupported { op, what: "head_dim (at most 512)", value: head_dim.to_string() });
    }
    for (arg, w) in [("q_weight", norm.q_weight), ("k_weight", norm.k_weight)] {
        check_shape(op, arg, &w.shape(), &[head_dim])?;
        check_inner_dense(op, arg, &w.strides())?;
        check_device(op, arg, dev, w.stream())?;
    }
    Ok(())
}

/// RoPE in place on q and k, one launch.
///
/// `qkv`: the heads ([`Qkv::fused`] or [`Qkv::split`]; bf16, f16 or f32; any token and head
/// strides, head_dim dense); `positions`: `[num_tokens]`, i32 or i64, any values (a position
/// is an angle, not an index). Zero tokens is a no-op.
pub fn rope<T: DType, P: IndexType>(dev: &Device, mut qkv: Qkv<'_, '_, T>, positions: &TensorView<P, 1>, cfg: &RopeConfig) -> Result<()> {
    const OP: &str = "rope";
    let layout = check_common(OP, dev, &qkv, positions, cfg, false, false)?;
    if layout.num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let raw = qkv.raw(stream, &layout);
    let (pp, _gp) = positions.device_ptr(stream);
    let params = ffi::wc_rope_params { heads: layout.ffi(&raw, T::TAG), rotary: rotary_params::<P>(cfg, pp) };
    // SAFETY: heads, positions and config validated above (shapes, strides inside each buffer,
    // dtype, device, rotary part inside head_dim); the guards live until the launch is queued.
    launch(OP, dev, |s| unsafe { ffi::wc_rope(&params, s) })
}

/// RoPE in place on q and k, then the rotated k (exactly as stored in k) and v into the paged
/// cache at `slot_mapping` — one launch; equal bit for bit to [`rope`] then
/// [`super::kv_cache::append_kv`]. `qkv` must include v ([`Qkv::fused`] with the v heads, or
/// [`Qkv::split_with_v`]); inputs bf16 / f16; the cache the same dtype or FP8 e4m3.
///
/// MLA (DeepSeek): with a latent cache ([`KvCacheMut::latent`]) k is the latent rows `[c_kv |
/// k_pe]` `[num_tokens, 1, 576]` and there is no v ([`Qkv::split`]); with q the absorbed queries
/// `[num_tokens, heads, 576]` and `cfg.rotary_offset` 512, one launch rotates both rope parts
/// and writes each token's whole latent row.
pub fn rope_append_kv<T: DType, C: DType, P: IndexType, S: IndexType>(
    dev: &Device,
    mut qkv: Qkv<'_, '_, T>,
    positions: &TensorView<P, 1>,
    cfg: &RopeConfig,
    slot_mapping: &TensorView<S, 1>,
    cache: &mut KvCacheMut<C>,
) -> Result<()> {
    const OP: &str = "rope_append_kv";
    check_cache_for::<T, C>(OP)?;
    let layout = check_common(OP, dev, &qkv, positions, cfg, true, cache.is_latent())?;
    check_slot_mapping(OP, dev, slot_mapping, layout.num_tokens)?;
    cache.check_for(OP, dev, layout.num_kv_heads, layout.head_dim)?;
    if layout.num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let raw = qkv.raw(stream, &layout);
    let (pp, _gp) = positions.device_ptr(stream);
    let (sp, _gs) = slot_mapping.device_ptr(stream);
    let heads = layout.ffi(&raw, T::TAG);
    let rotary = rotary_params::<P>(cfg, pp);
    let [v_ts, v_hs] = layout.v_strides.unwrap_or([0, 0]); // none: a latent cache (raw.v is 0)
    launch_appending(OP, dev, cache, |cache, s| {
        let append = ffi::wc_kv_append {
            v: raw.v as *const _,
            v_token_stride: v_ts as i64,
            v_head_stride: v_hs as i64,
            slot_mapping: sp as *const _,
            slots_int64: S::IS_I64 as i32,
            cache,
        };
        let params = ffi::wc_rope_append_kv_params { heads, rotary, append };
        // SAFETY: as in `rope`, plus slot_mapping and the cache validated; the kernel
        // bounds-checks every slot against the cache.
        unsafe { ffi::wc_rope_append_kv(&params, s) }
    })
}

/// Qwen3's attention prologue in one launch: per-head RMSNorm of q and k over head_dim
/// (f32 accumulation), then RoPE, in place, one rounding at the store. head_dim <= 512; bf16,
/// f16 or f32.
pub fn qk_norm_rope<T: DType, P: IndexType>(
    dev: &Device,
    mut qkv: Qkv<'_, '_, T>,
    positions: &TensorView<P, 1>,
    cfg: &RopeConfig,
    norm: QkNorm<'_, '_, T>,
) -> Result<()> {
    const OP: &str = "qk_norm_rope";
    let layout = check_common(OP, dev, &qkv, positions, cfg, false, false)?;
    check_norm(OP, dev, &norm, layout.head_dim)?;
    if layout.num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let raw = qkv.raw(stream, &layout);
    let (pp, _gp) = positions.device_ptr(stream);
    let (qw, _gq) = norm.q_weight.device_ptr(stream);
    let (kw, _gk) = norm.k_weight.device_ptr(stream);
    let params = ffi::wc_qk_norm_rope_params {
        heads: layout.ffi(&raw, T::TAG),
        rotary: rotary_params::<P>(cfg, pp),
        q_weight: qw as *const _,
        k_weight: kw as *const _,
        eps: norm.cfg.eps,
        weight_offset: norm.cfg.weight_offset,
        append_kv: 0,
        append: Default::default(),
    };
    // SAFETY: as in `rope`, plus the weights validated ([head_dim], dense, same device).
    launch(OP, dev, |s| unsafe { ffi::wc_qk_norm_rope(&params, s) })
}

/// [`qk_norm_rope`], then the final k and v into the paged cache, one launch (equal bit for
/// bit to `qk_norm_rope` then `append_kv`). Inputs bf16 / f16; the cache the same dtype or FP8.
pub fn qk_norm_rope_append_kv<T: DType, C: DType, P: IndexType, S: IndexType>(
    dev: &Device,
    mut qkv: Qkv<'_, '_, T>,
    positions: &TensorView<P, 1>,
    cfg: &RopeConfig,
    norm: QkNorm<'_, '_, T>,
    slot_mapping: &TensorView<S, 1>,
    cache: &mut KvCacheMut<C>,
) -> Result<()> {
    const OP: &str = "qk_norm_rope_append_kv";
    check_cache_for::<T, C>(OP)?;
    if cache.is_latent() {
        return Err(Error::Unsupported { op: OP, what: "cache (a latent MLA cache: Qwen3's prologue appends K and V)", value: "latent".into() });
    }
    let layout = check_common(OP, dev, &qkv, positions, cfg, true, false)?;
    check_norm(OP, dev, &norm, layout.head_dim)?;
    check_slot_mapping(OP, dev, slot_mapping, layout.num_tokens)?;
    cache.check_for(OP, dev, layout.num_kv_heads, layout.head_dim)?;
    if layout.num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let raw = qkv.raw(stream, &layout);
    let (pp, _gp) = positions.device_ptr(stream);
    let (sp, _gs) = slot_mapping.device_ptr(stream);
    let (qw, _gq) = norm.q_weight.device_ptr(stream);
    let (kw, _gk) = norm.k_weight.device_ptr(stream);
    let heads = layout.ffi(&raw, T::TAG);
    let rotary = rotary_params::<P>(cfg, pp);
    let [v_ts, v_hs] = layout.v_strides.unwrap_or([0, 0]); // none: a latent cache (raw.v is 0)
    launch_appending(OP, dev, cache, |cache, s| {
        let params = ffi::wc_qk_norm_rope_params {
            heads,
            rotary,
            q_weight: qw as *const _,
            k_weight: kw as *const _,
            eps: norm.cfg.eps,
            weight_offset: norm.cfg.weight_offset,
            append_kv: 1,
            append: ffi::wc_kv_append {
                v: raw.v as *const _,
                v_token_stride: v_ts as i64,
                v_head_stride: v_hs as i64,
                slot_mapping: sp as *const _,
                slots_int64: S::IS_I64 as i32,
                cache,
            },
        };
        // SAFETY: as in `qk_norm_rope` and `rope_append_kv`.
        unsafe { ffi::wc_qk_norm_rope(&params, s) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(cfg: &RopeConfig) -> config::FreqTable {
        let mut t = [0f64; ffi::WC_ROPE_MAX_PAIRS as usize];
        t.iter_mut().zip(cfg.inv_freq()).for_each(|(d, f)| *d = f);
        t
    }

    /// Scaling factors that pass the field checks but give a table or an attention factor that
    /// is not finite (or zero in f32) are refused by `validate`, which the ops call first.
    #[test]
    fn extreme_factors_are_refused() {
        let base = RopeConfig::new(128, 10_000.0);
        let y = Yarn::deepseek_v3();
        for cfg in [
            base.with_scaling(RopeScaling::Linear { factor: 1e-320 }),
            base.with_scaling(RopeScaling::DynamicNtk { factor: 1e17, original_max_positions: 4096, seq_len: 4096 }),
            base.with_scaling(RopeScaling::Llama3 { factor: 1e-320, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_positions: 8192 }),
            base.with_scaling(RopeScaling::Yarn(Yarn { factor: 1e-310, ..y })),
            base.with_scaling(RopeScaling::Yarn(Yarn { attention_factor: Some(1e39), ..y })),
            base.with_scaling(RopeScaling::Yarn(Yarn { attention_factor: Some(1e-50), ..y })),
        ] {
            assert!(matches!(cfg.validate("t", 128), Err(Error::Unsupported { .. })), "{cfg:?}");
        }
        assert!(base.with_scaling(RopeScaling::Yarn(y)).validate("t", 128).is_ok());
        assert!(base.with_scaling(RopeScaling::Linear { factor: 0.25 }).validate("t", 128).is_ok());
    }

    /// The last-config cache gives each config its own table bit for bit, whatever came
    /// before: configs alternating, one field changed at a time, the same config repeated.
    #[test]
    fn the_cached_frequency_table_is_the_configs_own() {
        let base = RopeConfig::new(128, 500_000.0);
        let configs = [
            base,
            base.with_scaling(RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_positions: 8192 }),
            RopeConfig::new(64, 10_000.0).with_scaling(RopeScaling::Yarn(Yarn::deepseek_v3())),
            RopeConfig::new(128, 500_001.0),
            RopeConfig::new(126, 500_000.0),
            base.with_style(RopeStyle::GptJ),
            base.with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4096, seq_len: 5000 }),
            base.with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4096, seq_len: 9000 }),
        ];
        for round in 0..3 {
            for (i, cfg) in configs.iter().enumerate() {
                for _repeat in 0..=round {
                    let got = cfg.with_freq_table(|t, _| *t);
                    let want = direct(cfg);
                    assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "config {i}, round {round}");
                }
            }
        }
    }
}
