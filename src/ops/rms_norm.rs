//! The RMSNorm family (cuda/rms_norm.cu): `rms_norm`, `fused_add_rms_norm`, `qk_rms_norm`.
//!
//! `out = x · rsqrt(mean(x²) + eps) · (weight_offset + weight)`, f32 accumulation, bf16 / f16 /
//! f32, any hidden size, any row stride (the innermost stride must be 1). `weight_offset` is 0
//! for Llama-style weights and 1 for Gemma's `(1 + weight)`.

use super::{check_device, check_dtype, check_no_overlap, FLOAT_DTYPES, check_eps, check_fits_i32, check_inner_dense, check_nonempty, check_shape, launch};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};

/// Options shared by the RMSNorm ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNormConfig {
    /// Added to the mean square before the reciprocal square root.
    pub eps: f32,
    /// 0: multiply by `weight` (Llama, Qwen, Mistral). 1: by `1 + weight` (Gemma).
    pub weight_offset: f32,
}

impl RmsNormConfig {
    /// Llama-style: `x̂ · weight`.
    pub fn new(eps: f32) -> Self {
        Self { eps, weight_offset: 0.0 }
    }
    /// Gemma-style: `x̂ · (1 + weight)`.
    pub fn gemma(eps: f32) -> Self {
        Self { eps, weight_offset: 1.0 }
    }
}

/// Largest head_dim [`qk_rms_norm`] takes.
pub const QK_NORM_MAX_HEAD_DIM: usize = ffi::WC_QK_NORM_MAX_HEAD_DIM as usize;

/// eps finite and non-negative, weight_offset finite (every op that normalises, fused ones too).
pub(crate) fn check_config(op: &'static str, cfg: RmsNormConfig) -> Result<()> {
    check_eps(op, cfg.eps)?;
    if !cfg.weight_offset.is_finite() {
        return Err(Error::Unsupported { op, what: "weight_offset", value: cfg.weight_offset.to_string() });
    }
    Ok(())
}

/// Checks shared by the row ops: x is [num_tokens, hidden] with a dense row, weight is [hidden].
fn check_rows<T: DType>(op: &'static str, dev: &Device, x: [usize; 2], x_strides: [usize; 2], weight: &TensorView<T, 1>, cfg: RmsNormConfig) -> Result<()> {
    check_dtype::<T>(op, FLOAT_DTYPES)?;
    check_config(op, cfg)?;
    check_nonempty(op, "x (hidden)", &x[1..])?;
    check_inner_dense(op, "x", &x_strides)?;
    check_shape(op, "weight", &weight.shape(), &[x[1]])?;
    check_inner_dense(op, "weight", &weight.strides())?;
    check_fits_i32(op, "hidden", x[1])?;
    check_fits_i32(op, "num_tokens", x[0])?;
    check_device(op, "weight", dev, weight.stream())
}

/// `out[t, :] = rms_norm(x[t, :]) · (weight_offset + weight)`.
///
/// x, out: `[num_tokens, hidden]` with any row stride; weight: `[hidden]`. Zero tokens is a
/// no-op; `hidden = 0` is an error.
pub fn rms_norm<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    weight: &TensorView<T, 1>,
    out: &mut TensorViewMut<T, 2>,
    cfg: RmsNormConfig,
) -> Result<()> {
    const OP: &str = "rms_norm";
    check_rows(OP, dev, x.shape(), x.strides(), weight, cfg)?;
    check_shape(OP, "out", &out.shape(), &x.shape())?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_device(OP, "x", dev, x.stream())?;
    check_device(OP, "out", dev, out.stream())?;
    let [num_tokens, hidden] = x.shape();
    if num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (w_ptr, _gw) = weight.device_ptr(stream);
    let (out_stride, out_ptr) = (out.strides()[0], out.device_ptr_mut(stream));
    let params = ffi::wc_rms_norm_params {
        x: x_ptr as *const _,
        weight: w_ptr as *const _,
        out: out_ptr.0 as *mut _,
        num_tokens: num_tokens as i64,
        hidden: hidden as i64,
        x_stride: x.strides()[0] as i64,
        out_stride: out_stride as i64,
        eps: cfg.eps,
        weight_offset: cfg.weight_offset,
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides (inside each buffer: checked when the views were made), dtype and
    // context were validated above; the guards keep the buffers' sync events until queued.
    launch(OP, dev, |s| unsafe { ffi::wc_rms_norm(&params, s) })
}

/// In place, one pass: `residual = x + residual` (rounded to T), then `x = rms_norm(residual)`.
///
/// x, residual: `[num_tokens, hidden]`, any row strides; weight: `[hidden]`. The stored
/// residual is what gets normalised (the contract vLLM and FlashInfer use).
pub fn fused_add_rms_norm<T: DType>(
    dev: &Device,
    x: &mut TensorViewMut<T, 2>,
    residual: &mut TensorViewMut<T, 2>,
    weight: &TensorView<T, 1>,
    cfg: RmsNormConfig,
) -> Result<()> {
    const OP: &str = "fused_add_rms_norm";
    check_rows(OP, dev, x.shape(), x.strides(), weight, cfg)?;
    check_shape(OP, "residual", &residual.shape(), &x.shape())?;
    check_inner_dense(OP, "residual", &residual.strides())?;
    check_no_overlap(OP, "x", &x.shape(), &x.strides())?;
    check_no_overlap(OP, "residual", &residual.shape(), &residual.strides())?;
    check_device(OP, "x", dev, x.stream())?;
    check_device(OP, "residual", dev, residual.stream())?;
    let [num_tokens, hidden] = x.shape();
    if num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (x_stride, r_stride) = (x.strides()[0], residual.strides()[0]);
    let (x_ptr, _gx) = x.device_ptr_mut(stream);
    let (r_ptr, _gr) = residual.device_ptr_mut(stream);
    let (w_ptr, _gw) = weight.device_ptr(stream);
    let params = ffi::wc_fused_add_rms_norm_params {
        x: x_ptr as *mut _,
        residual: r_ptr as *mut _,
        weight: w_ptr as *const _,
        num_tokens: num_tokens as i64,
        hidden: hidden as i64,
        x_stride: x_stride as i64,
        residual_stride: r_stride as i64,
        eps: cfg.eps,
        weight_offset: cfg.weight_offset,
        dtype: T::TAG,
    };
    // SAFETY: as in rms_norm; x and residual are distinct &mut views, so they do not overlap.
    launch(OP, dev, |s| unsafe { ffi::wc_fused_add_rms_norm(&params, s) })
}

/// Per-head RMSNorm over head_dim, in place, q and k heads in one launch (Qwen3's q_norm and
/// k_norm). `qk`: `[num_tokens, num_q_heads + num_kv_heads, head_dim]` — typically the first
/// heads of a fused QKV buffer, so its token stride may exceed `heads · head_dim`. Heads below
/// `num_q_heads` use `q_weight`, the rest `k_weight` (both `[head_dim]`). head_dim ≤ 512.
pub fn qk_rms_norm<T: DType>(
    dev: &Device,
    qk: &mut TensorViewMut<T, 3>,
    num_q_heads: usize,
    q_weight: &TensorView<T, 1>,
    k_weight: &TensorView<T, 1>,
    cfg: RmsNormConfig,
) -> Result<()> {
    const OP: &str = "qk_rms_norm";
    check_dtype::<T>(OP, FLOAT_DTYPES)?;
    check_config(OP, cfg)?;
    let [num_tokens, heads, head_dim] = qk.shape();
    check_nonempty(OP, "qk (head_dim)", &[head_dim])?;
    if head_dim > QK_NORM_MAX_HEAD_DIM {
        return Err(Error::Unsupported { op: OP, what: "head_dim (at most 512)", value: head_dim.to_string() });
    }
    if num_q_heads > heads {
        return Err(Error::ShapeMismatch {
            op: OP,
            arg: "qk",
            expected: format!("at least num_q_heads = {num_q_heads} heads"),
            got: format!("{:?}", qk.shape()),
        });
    }
    check_inner_dense(OP, "qk", &qk.strides())?;
    check_no_overlap(OP, "qk", &qk.shape(), &qk.strides())?;
    check_shape(OP, "q_weight", &q_weight.shape(), &[head_dim])?;
    check_shape(OP, "k_weight", &k_weight.shape(), &[head_dim])?;
    check_inner_dense(OP, "q_weight", &q_weight.strides())?;
    check_inner_dense(OP, "k_weight", &k_weight.strides())?;
    check_fits_i32(OP, "heads", heads)?;
    check_fits_i32(OP, "num_tokens · heads / 8 (blocks)", num_tokens.saturating_mul(heads) / 8)?;
    for (arg, s) in [("qk", qk.stream()), ("q_weight", q_weight.stream()), ("k_weight", k_weight.stream())] {
        check_device(OP, arg, dev, s)?;
    }
    if num_tokens == 0 || heads == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let strides = qk.strides();
    let (qk_ptr, _g) = qk.device_ptr_mut(stream);
    let (qw, _gq) = q_weight.device_ptr(stream);
    let (kw, _gk) = k_weight.device_ptr(stream);
    let params = ffi::wc_qk_rms_norm_params {
        qk: qk_ptr as *mut _,
        q_weight: qw as *const _,
        k_weight: kw as *const _,
        num_tokens: num_tokens as i64,
        num_q_heads: num_q_heads as i64,
        num_kv_heads: (heads - num_q_heads) as i64,
        head_dim: head_dim as i64,
        token_stride: strides[0] as i64,
        head_stride: strides[1] as i64,
        eps: cfg.eps,
        weight_offset: cfg.weight_offset,
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides, head_dim bound, dtype and context validated above.
    launch(OP, dev, |s| unsafe { ffi::wc_qk_rms_norm(&params, s) })
}
