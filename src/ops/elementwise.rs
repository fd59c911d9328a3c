//! The element-wise family (cuda/elementwise.cu): `glu` (a gated MLP's `act(gate) · up`),
//! `select_rows` (rows of a table by index: an embedding lookup, the last token of each
//! sequence), `argmax_rows` (greedy tokens from logits on the GPU) and `sample_rows` (sampled
//! tokens: temperature, top-k, top-p). The ops a decoder needs between its GEMMs.

use super::{check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_nonempty, check_shape, launch, FLOAT_DTYPES};
use crate::reference::mlp::GluActivation;
use crate::{ffi, DType, Device, Error, IndexType, Result, TensorView, TensorViewMut};

/// Most bytes in one row of [`select_rows`] (the grid's y extent: 65535 chunks of 256 units).
pub const MAX_ROW_BYTES: usize = 65535 * 256;

/// `out[r, :] = act(gate[r, :]) · up[r, :]` with `act` as [`GluActivation::apply`] defines it,
/// f32 math, one rounding at the store.
///
/// gate, up, out: `[rows, cols]` (bf16 / f16 / f32), any row strides, innermost dense — gate
/// and up are typically the two halves of one fused gate_up GEMM output (views into one
/// buffer, row stride `2 · cols`). `out` must not overlap them (it is a `&mut` view: the
/// borrow checker sees to that for views of distinct buffers). Zero rows is a no-op; zero
/// columns is an error.
pub fn glu<T: DType>(
    dev: &Device,
    gate: &TensorView<T, 2>,
    up: &TensorView<T, 2>,
    out: &mut TensorViewMut<T, 2>,
    act: GluActivation,
) -> Result<()> {
    const OP: &str = "glu";
    check_dtype::<T>(OP, FLOAT_DTYPES)?;
    let [rows, cols] = super::check_glu_operands(OP, dev, gate, up)?;
    check_shape(OP, "out", &out.shape(), &[rows, cols])?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_device(OP, "out", dev, out.stream())?;
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let out_stride = out.strides()[0];
    let (g, _gg) = gate.device_ptr(stream);
    let (u, _gu) = up.device_ptr(stream);
    let (o, _go) = out.device_ptr_mut(stream);
    let params = ffi::wc_glu_params {
        gate: g as *const _,
        up: u as *const _,
        out: o as *mut _,
        rows: rows as i64,
        cols: cols as i64,
        gate_stride: gate.strides()[0] as i64,
        up_stride: up.strides()[0] as i64,
        out_stride: out_stride as i64,
        activation: super::glu_activation_tag(act),
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides (inside each buffer: checked when the views were made), dtype and
    // context validated above; the guards keep the buffers' sync events until queued.
    launch(OP, dev, |s| unsafe { ffi::wc_glu(&params, s) })
}

/// `out[r]` = the index of row r's largest value ([`crate::reference::elementwise::argmax`]:
/// ties to the lower index, NaN never wins, 0 when nothing is above -inf): greedy decoding
/// without copying the logits to the host.
///
/// x `[rows, cols]` f32 (any row stride, innermost dense), out `[rows]` i32 dense. Zero rows is
/// a no-op; zero columns, or more than `i32::MAX` − 65,535, is an error.
pub fn argmax_rows(dev: &Device, x: &TensorView<f32, 2>, out: &mut TensorViewMut<i32, 1>) -> Result<()> {
    const OP: &str = "argmax_rows";
    let [rows, cols] = x.shape();
    check_nonempty(OP, "x (cols)", &[cols])?;
    check_shape(OP, "out", &out.shape(), &[rows])?;
    check_inner_dense(OP, "x", &x.strides())?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_fits_i32(OP, "rows", rows)?;
    check_fits_i32(OP, "cols", cols)?;
    check_device(OP, "x", dev, x.stream())?;
    check_device(OP, "out", dev, out.stream())?;
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let x_stride = super::row_stride(rows, x.strides()[0], cols);
    super::check_rows_apart(OP, "x", rows, x_stride, cols)?;
    let (xp, _gx) = x.device_ptr(stream);
    let (op, _go) = out.device_ptr_mut(stream);
    let params = ffi::wc_argmax_rows_params { x: xp as *const f32, out: op as *mut i32, rows: rows as i64, cols: cols as i64, x_stride: x_stride as i64 };
    // SAFETY: shapes, strides (inside each buffer: checked when the views were made) and context
    // validated above; the guards keep the buffers' sync events until queued.
    launch(OP, dev, |s| unsafe { ffi::wc_argmax_rows(&params, s) })
}

/// The sampling settings of [`sample_rows`] (every row's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleConfig {
    /// > 0 (greedy decoding is [`argmax_rows`]).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the shortest run of the most likely tokens whose probability reaches top_p, in
    /// (0, 1] (1: all).
    pub top_p: f32,
}

/// Per-row settings of [`sample_rows_each`] (an engine's batch of requests): row r draws with
/// `temperature[r]`, `top_k[r]`, `top_p[r]`, `[rows]` each. Read on the device as they are:
/// a temperature not > 0 (NaN included) makes the row greedy ([`argmax_rows`]' token, no
/// draw); top_k <= 0 keeps all; top_p NaN or above 1 keeps all, and <= 0 the best-ranked token.
#[derive(Clone, Copy)]
pub struct RowSampleConfig<'v, 'a> {
    /// Softmax temperature per row `[rows]` (not > 0: greedy).
    pub temperature: &'v TensorView<'a, f32, 1>,
    /// Tokens kept per row `[rows]` (<= 0: all).
    pub top_k: &'v TensorView<'a, i32, 1>,
    /// Nucleus threshold per row `[rows]` (NaN or > 1: all; <= 0: the best-ranked token).
    pub top_p: &'v TensorView<'a, f32, 1>,
}

/// `out[r]` = a token drawn from row r of `logits` with `uniforms[r]` (in [0, 1)), as
/// [`crate::reference::elementwise::sample_row`] defines it (the model's `Sampler` runs that on
/// the host: the same choice from the same logits, up to the last bit of f32 `exp`).
///
/// logits `[rows, cols]` f32 (any row stride, innermost dense; cols at most 2^23); uniforms and
/// out `[rows]`. Errors before any launch: temperature not > 0 or top_p outside (0, 1]
/// (`Unsupported`), zero columns (`Empty`), shapes. Zero rows is a no-op.
pub fn sample_rows(dev: &Device, logits: &TensorView<f32, 2>, uniforms: &TensorView<f32, 1>, cfg: SampleConfig, out: &mut TensorViewMut<i32, 1>) -> Result<()> {
    const OP: &str = "sample_rows";
    if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
        return Err(Error::Unsupported { op: OP, what: "temperature (> 0; greedy is argmax_rows)", value: cfg.temperature.to_string() });
    }
    check_top_p(OP, cfg.top_p)?;
    launch_sample(OP, dev, logits, uniforms, Settings::All(cfg), out)
}

/// A host-side top_p: in (0, 1] (NaN refused). Shared with the model's `Sampling::validate`.
pub(crate) fn check_top_p(op: &'static str, top_p: f32) -> Result<()> {
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::Unsupported { op, what: "top_p (in (0, 1])", value: top_p.to_string() });
    }
    Ok(())
}

/// [`sample_rows`] with each row's own settings ([`RowSampleConfig`]): greedy and sampled
/// requests, and requests with different temperatures, top-k and top-p, in one launch; row r's
/// token is `reference::elementwise::sample_row(row, temperature[r], max(top_k[r], 0),
/// top_p[r], uniforms[r])`. Errors as [`sample_rows`] (no settings to refuse on the host: the
/// device reads them as documented), and the settings' shapes.
pub fn sample_rows_each(dev: &Device, logits: &TensorView<f32, 2>, uniforms: &TensorView<f32, 1>, cfg: RowSampleConfig, out: &mut TensorViewMut<i32, 1>) -> Result<()> {
    launch_sample("sample_rows_each", dev, logits, uniforms, Settings::PerRow(cfg), out)
}

/// Every row's settings, or each row's.
enum Settings<'v, 'a> {
    All(SampleConfig),
    PerRow(RowSampleConfig<'v, 'a>),
}

fn launch_sample(op: &'static str, dev: &Device, logits: &TensorView<f32, 2>, uniforms: &TensorView<f32, 1>, settings: Settings, out: &mut TensorViewMut<i32, 1>) -> Result<()> {
    let [rows, cols] = logits.shape();
    check_nonempty(op, "logits (cols)", &[cols])?;
    check_shape(op, "uniforms", &uniforms.shape(), &[rows])?;
    check_shape(op, "out", &out.shape(), &[rows])?;
    for (arg, strides) in [("logits", &logits.strides()[..]), ("uniforms", &uniforms.strides()[..]), ("out", &out.strides()[..])] {
        check_inner_dense(op, arg, strides)?;
    }
    if let Settings::PerRow(c) = &settings {
        for (arg, shape, strides, stream) in [
            ("temperature", c.temperature.shape(), c.temperature.strides(), c.temperature.stream()),
            ("top_k", c.top_k.shape(), c.top_k.strides(), c.top_k.stream()),
            ("top_p", c.top_p.shape(), c.top_p.strides(), c.top_p.stream()),
        ] {
            check_shape(op, arg, &shape, &[rows])?;
            check_inner_dense(op, arg, &strides)?;
            check_device(op, arg, dev, stream)?;
        }
    }
    check_fits_i32(op, "rows", rows)?;
    if cols > crate::reference::elementwise::MAX_SAMPLE_COLS {
        return Err(Error::Unsupported { op, what: "cols (at most 2^23)", value: cols.to_string() });
    }
    check_device(op, "logits", dev, logits.stream())?;
    check_device(op, "uniforms", dev, uniforms.stream())?;
    check_device(op, "out", dev, out.stream())?;
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let logits_stride = super::row_stride(rows, logits.strides()[0], cols);
    super::check_rows_apart(op, "logits", rows, logits_stride, cols)?;
    let (lp, _gl) = logits.device_ptr(stream);
    let (up, _gu) = uniforms.device_ptr(stream);
    let (op_ptr, _go) = out.device_ptr_mut(stream);
    let mut params = ffi::wc_sample_rows_params {
        logits: lp as *const f32,
        uniforms: up as *const f32,
        out: op_ptr as *mut i32,
        rows: rows as i64,
        cols: cols as i64,
        logits_stride: logits_stride as i64,
        ..Default::default()
    };
    // The per-row settings' guards live until the launch is queued.
    let mut guards = Vec::new();
    match settings {
        Settings::All(cfg) => {
            params.temperature = cfg.temperature;
            params.top_k = cfg.top_k.min(i32::MAX as usize) as i32;
            params.top_p = cfg.top_p;
        }
        Settings::PerRow(c) => {
            let (t, gt) = c.temperature.device_ptr(stream);
            let (k, gk) = c.top_k.device_ptr(stream);
            let (p, gp) = c.top_p.device_ptr(stream);
            (params.temperatures, params.top_ks, params.top_ps) = (t as *const f32, k as *const i32, p as *const f32);
            guards.extend([gt, gk, gp]);
        }
    }
    // SAFETY: shapes, strides (inside each buffer: checked when the views were made), settings
    // and context validated above; the guards keep the buffers' sync events until queued.
    launch(op, dev, |s| unsafe { ffi::wc_sample_rows(&params, s) })
}

/// `out[i, :] = src[indices[i], :]`: a copy, any dtype (FP8 included).
///
/// src `[src_rows, cols]`, out `[num_rows, cols]` (any row strides, innermost dense);
/// indices `[num_rows]` i32 or i64, dense. An index outside `[0, src_rows)` skips its row
/// (out keeps what it held): validate indices that come from users (token ids) on the host.
/// Zero rows is a no-op; zero columns is an error.
pub fn select_rows<T: DType, I: IndexType>(
    dev: &Device,
    src: &TensorView<T, 2>,
    indices: &TensorView<I, 1>,
    out: &mut TensorViewMut<T, 2>,
) -> Result<()> {
    const OP: &str = "select_rows";
    let [src_rows, cols] = src.shape();
    let num_rows = indices.shape()[0];
    check_nonempty(OP, "src (cols)", &[cols])?;
    check_shape(OP, "out", &out.shape(), &[num_rows, cols])?;
    check_inner_dense(OP, "src", &src.strides())?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_inner_dense(OP, "indices", &indices.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_fits_i32(OP, "num_rows", num_rows)?;
    let row_bytes = cols.saturating_mul(std::mem::size_of::<T>());
    if row_bytes > MAX_ROW_BYTES {
        return Err(Error::Unsupported { op: OP, what: "row size in bytes (at most 65535 · 256)", value: row_bytes.to_string() });
    }
    for (arg, s) in [("src", src.stream()), ("indices", indices.stream()), ("out", out.stream())] {
        check_device(OP, arg, dev, s)?;
    }
    if num_rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let out_stride = out.strides()[0];
    let (sp, _gs) = src.device_ptr(stream);
    let (ip, _gi) = indices.device_ptr(stream);
    let (op, _go) = out.device_ptr_mut(stream);
    let params = ffi::wc_select_rows_params {
        src: sp as *const _,
        indices: ip as *const _,
        out: op as *mut _,
        src_rows: src_rows as i64,
        num_rows: num_rows as i64,
        cols: cols as i64,
        // (a one-row view's stride is any value: sent as cols, as the other ops' row strides)
        src_stride: super::row_stride(src_rows, src.strides()[0], cols) as i64,
        out_stride: super::row_stride(num_rows, out_stride, cols) as i64,
        indices_int64: I::IS_I64 as i32,
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides and context validated above; indices read on the device are
    // bounds-checked against src_rows (an out-of-range one skips its row).
    launch(OP, dev, |s| unsafe { ffi::wc_select_rows(&params, s) })
}
