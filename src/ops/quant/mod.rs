//! FP8 e4m3 quantization (cuda/quant_fp8.cu): dynamic per-tensor, per-row, 1×128-group and
//! 128×128-block scales; fused RMSNorm → FP8 and fused residual-add + RMSNorm → FP8;
//! dequantization.
//!
//! Scales are f32 and dequantize: `value = fp8 · scale`. A `[rows, cols]` tensor is cut into
//! blocks ([`ScaleGranularity::block`]); scale `(i, j)` covers rows `i·br ..` and columns
//! `j·bc ..`, and the scale tensor is a `[ceil(rows/br), ceil(cols/bc)]` view with any strides
//! (rows or columns of it may be strided, e.g. the column-major `[num_tokens, hidden/128]`
//! layout DeepGEMM reads, strides `[1, num_tokens]`). Per block:
//! `scale = max(amax, AMAX_FLOOR) / 448` and `fp8 = e4m3_rn_satfinite(x · (1/scale))` in f32,
//! so scales are never zero or subnormal, overflow saturates to ±448 (never NaN), and a plain
//! quantization is reproduced bit for bit by `reference::quant`.

mod tensor;

pub use tensor::{TensorQuantLimits, TensorQuantPlan};
use tensor::{vector_layout, WORKSPACE_WORDS};


use super::rms_norm::RmsNormConfig;
use super::{check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_nonempty, check_rows_aligned, check_shape, launch, row_stride};
use crate::reference::mlp::GluActivation;
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut, F8E4M3};

/// Side of the fine-grained scaling blocks.
pub const FP8_BLOCK: usize = ffi::WC_FP8_BLOCK as usize;
/// Largest finite e4m3 value.
pub const FP8_MAX: f32 = 448.0;
/// Block maxima are clamped to at least this before the scale is computed.
pub const AMAX_FLOOR: f32 = 1e-12;

/// The input dtypes of the quantizers.
const HALF_DTYPES: &[ffi::wc_dtype] = &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F16];

/// How a tensor is cut into scaling blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleGranularity {
    /// One scale for the whole tensor: scale shape `[1, 1]`.
    PerTensor,
    /// One scale per row (per token for activations, per output channel for weights): `[rows, 1]`.
    PerRow,
    /// One scale per row per 128 columns (DeepSeek-V3 activations, "1×128"): `[rows, cols/128]`.
    Group128,
    /// One scale per 128×128 block (DeepSeek-V3 weights, `weight_scale_inv`):
    /// `[ceil(rows/128), ceil(cols/128)]`.
    Block128,
}

impl ScaleGranularity {
    /// Every granularity, for tests and reports.
    pub const ALL: [ScaleGranularity; 4] = [Self::PerTensor, Self::PerRow, Self::Group128, Self::Block128];

    /// The block of a `[rows, cols]` tensor one scale covers: (rows, cols) of it (at least 1).
    pub fn block(self, rows: usize, cols: usize) -> (usize, usize) {
        match self {
            Self::PerTensor => (rows.max(1), cols.max(1)),
            Self::PerRow => (1, cols.max(1)),
            Self::Group128 => (1, FP8_BLOCK),
            Self::Block128 => (FP8_BLOCK, FP8_BLOCK),
        }
    }

    /// Shape of the scale tensor of a `[rows, cols]` tensor.
    pub fn scale_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        let (br, bc) = self.block(rows, cols);
        match self {
            Self::PerTensor => [1, 1],
            _ => [rows.div_ceil(br), cols.div_ceil(bc)],
        }
    }

    /// Short name used in reports: "tensor", "row", "group128", "block128".
    pub fn name(self) -> &'static str {
        match self {
            Self::PerTensor => "tensor",
            Self::PerRow => "row",
            Self::Group128 => "group128",
            Self::Block128 => "block128",
        }
    }

    pub(crate) fn tag(self) -> ffi::wc_scale_granularity {
        match self {
            Self::PerTensor => ffi::wc_scale_granularity_WC_SCALE_TENSOR,
            Self::PerRow => ffi::wc_scale_granularity_WC_SCALE_ROW,
            Self::Group128 => ffi::wc_scale_granularity_WC_SCALE_GROUP128,
            Self::Block128 => ffi::wc_scale_granularity_WC_SCALE_BLOCK128,
        }
    }
}

/// A scale tensor's shape for a `[rows, cols]` tensor (and the 1×128 groups' column rule).
fn check_scale(op: &'static str, arg: &'static str, shape: [usize; 2], granularity: ScaleGranularity, rows: usize, cols: usize) -> Result<()> {
    if granularity == ScaleGranularity::Group128 && !cols.is_multiple_of(FP8_BLOCK) {
        return Err(Error::Unsupported { op, what: "columns for 1×128 groups (a multiple of 128)", value: cols.to_string() });
    }
    check_shape(op, arg, &shape, &granularity.scale_shape(rows, cols))
}

/// Common checks of an FP8 output `[rows, cols]` and its scale output.
fn check_outputs(op: &'static str, dev: &Device, rows: usize, cols: usize, out: &TensorViewMut<F8E4M3, 2>, scale: &TensorViewMut<f32, 2>, granularity: ScaleGranularity) -> Result<()> {
    check_shape(op, "out", &out.shape(), &[rows, cols])?;
    check_inner_dense(op, "out", &out.strides())?;
    check_no_overlap(op, "out", &out.shape(), &out.strides())?;
    check_scale(op, "scale", scale.shape(), granularity, rows, cols)?;
    check_no_overlap(op, "scale", &scale.shape(), &scale.strides())?;
    check_device(op, "out", dev, out.stream())?;
    check_device(op, "scale", dev, scale.stream())
}

/// Strides of a scale view as the C side takes them (a dimension of size 1 gets stride 0).
pub(crate) fn scale_strides(shape: [usize; 2], strides: [usize; 2]) -> (i64, i64) {
    let s = |i: usize| if shape[i] > 1 { strides[i] as i64 } else { 0 };
    (s(0), s(1))
}

/// Dynamic quantization: `out = e4m3(x / scale)` with the scales computed from x on the GPU.
///
/// x `[rows, cols]` (bf16 / f16, any row stride, dense rows), out `[rows, cols]`, scale of
/// `granularity.scale_shape(rows, cols)`. [`ScaleGranularity::PerTensor`] reduces the
/// tensor's amax on the GPU (no host synchronisation) on [`TensorQuantPlan::planned`]'s plan:
/// one cooperative pass over x where the device and layout allow it (its grid barrier lives in
/// 8 KB the `Device` keeps, allocated by the first such call), two kernels otherwise.
/// [`ScaleGranularity::Group128`] needs `cols % 128 == 0` and 16-byte aligned rows of x and out
/// (`Error::Misaligned`). Zero rows are a no-op.
pub fn quantize_fp8<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
) -> Result<()> {
    quantize(dev, x, out, scale, granularity, None)
}

/// Per-tensor quantization on a forced plan (tests, benchmarks): bit-identical to
/// [`quantize_fp8`] with [`ScaleGranularity::PerTensor`], whichever plan runs. The plan is
/// checked against the device's limits ([`TensorQuantLimits::query`]) and the layout first
/// (`Error::Unsupported`).
pub fn quantize_fp8_with_plan<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    plan: TensorQuantPlan,
) -> Result<()> {
    quantize(dev, x, out, scale, ScaleGranularity::PerTensor, Some(plan))
}

impl TensorQuantPlan {
    /// The plan [`quantize_fp8`] runs per tensor for these views on this device: the
    /// planner's choice ([`TensorQuantPlan::choose`]) for their layout and the device's limits.
    pub fn planned<T: DType>(dev: &Device, x: &TensorView<T, 2>, out: &TensorViewMut<F8E4M3, 2>) -> Result<Self> {
        let [rows, cols] = x.shape();
        Ok(Self::choose(rows, cols, views_vector_layout(dev, x, out), &TensorQuantLimits::query::<T>(dev)?))
    }
}

/// `vector_layout` of the views' rows and start addresses.
fn views_vector_layout<T: DType>(dev: &Device, x: &TensorView<T, 2>, out: &TensorViewMut<F8E4M3, 2>) -> bool {
    let (x_ptr, out_ptr) = (x.device_ptr(dev.stream()).0, out.as_view().device_ptr(dev.stream()).0);
    vector_layout::<T>(x.shape()[1], x_ptr, x.strides()[0], out_ptr, out.strides()[0])
}

/// quantize_fp8 and quantize_fp8_with_plan: validate, plan (per tensor), launch.
fn quantize<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
    forced: Option<TensorQuantPlan>,
) -> Result<()> {
    const OP: &str = "quantize_fp8";
    check_dtype::<T>(OP, HALF_DTYPES)?;
    let [rows, cols] = x.shape();
    check_nonempty(OP, "x (cols)", &[cols])?;
    check_inner_dense(OP, "x", &x.strides())?;
    check_device(OP, "x", dev, x.stream())?;
    check_outputs(OP, dev, rows, cols, out, scale, granularity)?;
    check_fits_i32(OP, "cols", cols)?;
    if matches!(granularity, ScaleGranularity::PerRow | ScaleGranularity::Group128) {
        check_fits_i32(OP, "rows (one block a row)", rows)?;
    }
    if granularity == ScaleGranularity::Block128 && rows.div_ceil(FP8_BLOCK) > 65535 {
        return Err(Error::Unsupported { op: OP, what: "rows for 128×128 blocks (at most 65535 · 128)", value: rows.to_string() });
    }
    // Per tensor: the plan `planned` reports, or the forced one if the device and layout allow it.
    let plan = match (granularity, forced) {
        (ScaleGranularity::PerTensor, None) => TensorQuantPlan::planned(dev, x, out)?,
        (ScaleGranularity::PerTensor, Some(p)) => {
            p.check(OP, views_vector_layout(dev, x, out), &TensorQuantLimits::query::<T>(dev)?)?;
            p
        }
        _ => TensorQuantPlan::TwoKernels, // not per tensor: the plan does not apply
    };
    let stream = dev.stream();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (out_stride, (ss_row, ss_col)) = (out.strides()[0], scale_strides(scale.shape(), scale.strides()));
    let (out_ptr, _go) = out.device_ptr_mut(stream);
    if rows == 0 {
        return Ok(());
    }
    if granularity == ScaleGranularity::Group128 {
        check_rows_aligned::<T>(OP, "x", x_ptr, rows, x.strides()[0])?;
        check_rows_aligned::<u8>(OP, "out", out_ptr, rows, out_stride)?;
    }
    let (scale_ptr, _gs) = scale.device_ptr_mut(stream);
    let mut params = ffi::wc_quantize_fp8_params {
        x: x_ptr as *const _,
        out: out_ptr as *mut _,
        scale: scale_ptr as *mut f32,
        rows: rows as i64,
        cols: cols as i64,
        x_stride: row_stride(rows, x.strides()[0], cols) as i64,
        out_stride: row_stride(rows, out_stride, cols) as i64,
        scale_stride_row: ss_row,
        scale_stride_col: ss_col,
        granularity: granularity.tag(),
        dtype: T::TAG,
        workspace: std::ptr::null_mut(),
        single_pass_ctas: 0,
        single_pass_held: 0,
    };
    let TensorQuantPlan::SinglePass { ctas, held } = plan else {
        // SAFETY: shapes, strides (inside each buffer by construction), alignment where the
        // kernel needs it, dtype and contexts validated above; the guards live until the
        // launch is queued.
        return launch(OP, dev, |s| unsafe { ffi::wc_quantize_fp8(&params, s) });
    };
    dev.with_scratch(OP, WORKSPACE_WORDS, |ws_ptr| {
        params.workspace = ws_ptr as *mut _;
        params.single_pass_ctas = ctas as i64;
        params.single_pass_held = held as i64;
        // SAFETY: as above; the single-pass plan was checked against the device's limits and
        // the layout, and its workspace (the Device's, zero-filled at allocation, held
        // exclusively while the launch is queued, left as found by every launch) has
        // WC_QUANT_WORKSPACE_WORDS words.
        launch(OP, dev, |s| unsafe { ffi::wc_quantize_fp8(&params, s) })
    })
}

/// The two fused norm → FP8 ops share everything but the residual.
#[allow(clippy::too_many_arguments)]
fn norm_quant<T: DType>(
    op: &'static str,
    dev: &Device,
    x: &TensorView<T, 2>,
    residual: Option<&mut TensorViewMut<T, 2>>,
    weight: &TensorView<T, 1>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
    cfg: RmsNormConfig,
) -> Result<()> {
    check_dtype::<T>(op, HALF_DTYPES)?;
    super::rms_norm::check_config(op, cfg)?;
    if !matches!(granularity, ScaleGranularity::PerRow | ScaleGranularity::Group128) {
        return Err(Error::Unsupported { op, what: "granularity (per row or 1×128 groups)", value: granularity.name().to_string() });
    }
    let [num_tokens, hidden] = x.shape();
    check_nonempty(op, "x (hidden)", &[hidden])?;
    check_inner_dense(op, "x", &x.strides())?;
    check_shape(op, "weight", &weight.shape(), &[hidden])?;
    check_inner_dense(op, "weight", &weight.strides())?;
    check_fits_i32(op, "hidden", hidden)?;
    check_fits_i32(op, "num_tokens", num_tokens)?;
    check_device(op, "x", dev, x.stream())?;
    check_device(op, "weight", dev, weight.stream())?;
    if let Some(r) = &residual {
        check_shape(op, "residual", &r.shape(), &[num_tokens, hidden])?;
        check_inner_dense(op, "residual", &r.strides())?;
        check_no_overlap(op, "residual", &r.shape(), &r.strides())?;
        check_device(op, "residual", dev, r.stream())?;
    }
    check_outputs(op, dev, num_tokens, hidden, out, scale, granularity)?;
    if num_tokens == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (w_ptr, _gw) = weight.device_ptr(stream);
    let (out_stride, (ss_row, ss_col)) = (out.strides()[0], scale_strides(scale.shape(), scale.strides()));
    let (out_ptr, _go) = out.device_ptr_mut(stream);
    let res_stride = residual.as_ref().map_or(0, |r| r.strides()[0]);
    let res_guard = residual.map(|r| r.device_ptr_mut(stream));
    let res_ptr = res_guard.as_ref().map_or(0, |(p, _)| *p);
    if granularity == ScaleGranularity::Group128 {
        check_rows_aligned::<T>(op, "x", x_ptr, num_tokens, x.strides()[0])?;
        check_rows_aligned::<T>(op, "weight", w_ptr, 1, 0)?;
        check_rows_aligned::<u8>(op, "out", out_ptr, num_tokens, out_stride)?;
        if res_guard.is_some() {
            check_rows_aligned::<T>(op, "residual", res_ptr, num_tokens, res_stride)?;
        }
    }
    let (scale_ptr, _gs) = scale.device_ptr_mut(stream);
    let params = ffi::wc_rms_norm_quant_fp8_params {
        x: x_ptr as *const _,
        residual: res_ptr as *mut _,
        weight: w_ptr as *const _,
        out: out_ptr as *mut _,
        scale: scale_ptr as *mut f32,
        num_tokens: num_tokens as i64,
        hidden: hidden as i64,
        x_stride: row_stride(num_tokens, x.strides()[0], hidden) as i64,
        residual_stride: row_stride(num_tokens, res_stride, hidden) as i64,
        out_stride: row_stride(num_tokens, out_stride, hidden) as i64,
        scale_stride_row: ss_row,
        scale_stride_col: ss_col,
        eps: cfg.eps,
        weight_offset: cfg.weight_offset,
        granularity: granularity.tag(),
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides, alignment for groups, dtype and contexts validated above; x and
    // the residual are distinct views (x shared, residual &mut), the guards outlive the launch.
    let r = launch(op, dev, |s| unsafe { ffi::wc_rms_norm_quant_fp8(&params, s) });
    drop(res_guard);
    r
}

/// Fused GLU → FP8: `out = e4m3(act(gate) · up / scale)` with per-row or 1×128-group scales,
/// `act` as [`GluActivation::apply`] defines it, computed in f32 and quantized from registers
/// (never rounded to bf16: what a gated MLP's FP8 down projection reads).
///
/// gate, up `[rows, cols]` (bf16 / f16; typically the two halves of one gate_up GEMM output),
/// out `[rows, cols]` e4m3, scale `[rows, 1]` or `[rows, cols / 128]` (any strides). Rows must
/// be 16-byte aligned with cols a multiple of 16 (groups: of 128); `Misaligned` / `Unsupported`
/// otherwise. Zero rows is a no-op.
#[allow(clippy::too_many_arguments)]
pub fn glu_quant_fp8<T: DType>(
    dev: &Device,
    gate: &TensorView<T, 2>,
    up: &TensorView<T, 2>,
    act: GluActivation,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
) -> Result<()> {
    const OP: &str = "glu_quant_fp8";
    check_dtype::<T>(OP, HALF_DTYPES)?;
    if !matches!(granularity, ScaleGranularity::PerRow | ScaleGranularity::Group128) {
        return Err(Error::Unsupported { op: OP, what: "granularity (per row or 1×128 groups)", value: granularity.name().to_string() });
    }
    let [rows, cols] = super::check_glu_operands(OP, dev, gate, up)?;
    let multiple = if granularity == ScaleGranularity::Group128 { FP8_BLOCK } else { 16 };
    if cols % multiple != 0 {
        return Err(Error::Unsupported { op: OP, what: "cols (a multiple of 16; of 128 with 1×128 groups)", value: cols.to_string() });
    }
    check_outputs(OP, dev, rows, cols, out, scale, granularity)?;
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (g_ptr, _gg) = gate.device_ptr(stream);
    let (u_ptr, _gu) = up.device_ptr(stream);
    let (out_stride, (ss_row, ss_col)) = (out.strides()[0], scale_strides(scale.shape(), scale.strides()));
    let (out_ptr, _go) = out.device_ptr_mut(stream);
    check_rows_aligned::<T>(OP, "gate", g_ptr, rows, gate.strides()[0])?;
    check_rows_aligned::<T>(OP, "up", u_ptr, rows, up.strides()[0])?;
    check_rows_aligned::<u8>(OP, "out", out_ptr, rows, out_stride)?;
    let (scale_ptr, _gs) = scale.device_ptr_mut(stream);
    let params = ffi::wc_glu_quant_fp8_params {
        gate: g_ptr as *const _,
        up: u_ptr as *const _,
        out: out_ptr as *mut _,
        scale: scale_ptr as *mut f32,
        rows: rows as i64,
        cols: cols as i64,
        gate_stride: row_stride(rows, gate.strides()[0], cols) as i64,
        up_stride: row_stride(rows, up.strides()[0], cols) as i64,
        out_stride: row_stride(rows, out_stride, cols) as i64,
        scale_stride_row: ss_row,
        scale_stride_col: ss_col,
        activation: super::glu_activation_tag(act),
        granularity: granularity.tag(),
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides, 16-byte alignment of every row, cols' multiple, dtype and
    // contexts validated above; out and scale are &mut views (distinct from gate and up); the
    // guards outlive the launch.
    launch(OP, dev, |s| unsafe { ffi::wc_glu_quant_fp8(&params, s) })
}

/// Fused RMSNorm → FP8: `out = e4m3(rms_norm(x) · (weight_offset + weight) / scale)` with
/// per-row or 1×128-group scales; the normalised row never leaves f32 registers (no bf16
/// round trip). x `[num_tokens, hidden]`, weight `[hidden]`, out `[num_tokens, hidden]`,
/// scale `[num_tokens, 1]` or `[num_tokens, hidden/128]`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_quant_fp8<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    weight: &TensorView<T, 1>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
    cfg: RmsNormConfig,
) -> Result<()> {
    norm_quant("rms_norm_quant_fp8", dev, x, None, weight, out, scale, granularity, cfg)
}

/// Fused residual add + RMSNorm → FP8: `residual = round(x + residual)` (stored, as
/// `fused_add_rms_norm` does), then `out = e4m3(rms_norm(residual) · w / scale)`. x is only read.
#[allow(clippy::too_many_arguments)]
pub fn fused_add_rms_norm_quant_fp8<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    residual: &mut TensorViewMut<T, 2>,
    weight: &TensorView<T, 1>,
    out: &mut TensorViewMut<F8E4M3, 2>,
    scale: &mut TensorViewMut<f32, 2>,
    granularity: ScaleGranularity,
    cfg: RmsNormConfig,
) -> Result<()> {
    norm_quant("fused_add_rms_norm_quant_fp8", dev, x, Some(residual), weight, out, scale, granularity, cfg)
}

/// `out = fp8 · scale` (tests and debugging): q `[rows, cols]`, scale of
/// `granularity.scale_shape(rows, cols)`, out `[rows, cols]` in bf16, f16 or f32.
pub fn dequantize_fp8<T: DType>(
    dev: &Device,
    q: &TensorView<F8E4M3, 2>,
    scale: &TensorView<f32, 2>,
    granularity: ScaleGranularity,
    out: &mut TensorViewMut<T, 2>,
) -> Result<()> {
    const OP: &str = "dequantize_fp8";
    check_dtype::<T>(OP, super::FLOAT_DTYPES)?;
    let [rows, cols] = q.shape();
    check_nonempty(OP, "q (cols)", &[cols])?;
    check_inner_dense(OP, "q", &q.strides())?;
    check_scale(OP, "scale", scale.shape(), granularity, rows, cols)?;
    check_shape(OP, "out", &out.shape(), &[rows, cols])?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    for (arg, s) in [("q", q.stream()), ("scale", scale.stream()), ("out", out.stream())] {
        check_device(OP, arg, dev, s)?;
    }
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (q_ptr, _gq) = q.device_ptr(stream);
    let (s_ptr, _gs) = scale.device_ptr(stream);
    let (ss_row, ss_col) = scale_strides(scale.shape(), scale.strides());
    let out_stride = out.strides()[0];
    let (out_ptr, _go) = out.device_ptr_mut(stream);
    let params = ffi::wc_dequantize_fp8_params {
        q: q_ptr as *const _,
        scale: s_ptr as *const f32,
        out: out_ptr as *mut _,
        rows: rows as i64,
        cols: cols as i64,
        q_stride: q.strides()[0] as i64,
        out_stride: out_stride as i64,
        scale_stride_row: ss_row,
        scale_stride_col: ss_col,
        granularity: granularity.tag(),
        dtype: T::TAG,
    };
    // SAFETY: shapes, strides, dtype and contexts validated above.
    launch(OP, dev, |s| unsafe { ffi::wc_dequantize_fp8(&params, s) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shapes_follow_the_blocks() {
        use ScaleGranularity::*;
        assert_eq!(PerTensor.scale_shape(7, 300), [1, 1]);
        assert_eq!(PerRow.scale_shape(7, 300), [7, 1]);
        assert_eq!(Group128.scale_shape(7, 384), [7, 3]);
        // DeepSeek-V3 kv_a_proj: [576, 7168] -> [5, 56] (the last row block is partial).
        assert_eq!(Block128.scale_shape(576, 7168), [5, 56]);
        assert_eq!(Block128.scale_shape(7168, 2048), [56, 16]);
        assert_eq!(PerTensor.block(0, 0), (1, 1));
        assert_eq!(AMAX_FLOOR, ffi::WC_FP8_AMAX_FLOOR as f32);
        assert_eq!(FP8_MAX, F8E4M3::MAX);
        // The smallest scale is a normal f32, and so is its reciprocal.
        assert!((AMAX_FLOOR / FP8_MAX).is_normal() && (1.0 / (AMAX_FLOOR / FP8_MAX)).is_normal());
    }

    #[test]
    fn the_launchers_guard_what_the_wrappers_validate() {
        let stream = std::ptr::null_mut();
        let p = ffi::wc_rms_norm_quant_fp8_params {
            num_tokens: 4,
            hidden: 256,
            x_stride: 256,
            out_stride: 256,
            granularity: ScaleGranularity::PerTensor.tag(),
            dtype: ffi::wc_dtype_WC_BF16,
            ..Default::default()
        };
        // SAFETY: each call returns from its argument checks before any CUDA call.
        unsafe {
            assert_eq!(ffi::wc_rms_norm_quant_fp8(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            // 1×128 groups over a misaligned row (x at address 2): refused, not run unaligned.
            let g = ffi::wc_rms_norm_quant_fp8_params {
                granularity: ScaleGranularity::Group128.tag(),
                x: 2 as *const _,
                weight: 16 as *const _,
                ..p
            };
            assert_eq!(ffi::wc_rms_norm_quant_fp8(&g, stream), ffi::WC_ERR_UNSUPPORTED);
            // A norm without a weight: refused (the register path would quantize x unnormalised).
            let no_weight = ffi::wc_rms_norm_quant_fp8_params { x: 16 as *const _, weight: std::ptr::null(), ..g };
            assert_eq!(ffi::wc_rms_norm_quant_fp8(&no_weight, stream), ffi::WC_ERR_INVALID_ARG);
            let f32_in = ffi::wc_quantize_fp8_params { rows: 1, cols: 16, dtype: ffi::wc_dtype_WC_F32, ..Default::default() };
            assert_eq!(ffi::wc_quantize_fp8(&f32_in, stream), ffi::WC_ERR_UNSUPPORTED);
            assert_eq!(ffi::wc_quantize_fp8(std::ptr::null(), stream), ffi::WC_ERR_INVALID_ARG);
        }
    }

    /// The H200: 132 SMs, one 512-thread CTA per SM holding (232448 − 256) / 32 · 16 bf16.
    #[test]
    fn size_one_dimensions_of_a_scale_get_stride_zero() {
        assert_eq!(scale_strides([1, 1], [5, 9]), (0, 0));
        assert_eq!(scale_strides([7, 1], [1, 0]), (1, 0));
        assert_eq!(scale_strides([7, 3], [1, 8]), (1, 8));
    }
}
