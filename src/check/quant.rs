//! FP8 quantization: run each op on the GPU with NaN-poisoned outputs (codes and scales) on
//! inputs whose magnitudes span many orders, and compare with `reference::quant`: plain
//! quantization must match bit for bit (codes and scales); every result must dequantize to
//! within half an e4m3 step of its input; the fused norm ops must stay within one step of the
//! reference and of norm-then-quant. Used by tests/quant.rs and `warpcore check`.

use super::{compare, compare_bounded, compare_exact, gather_rows, outside_rows, tolerance, CheckResult, Comparison, Rng, Tolerance};
use crate::ops::quant::{
    dequantize_fp8, fused_add_rms_norm_quant_fp8, glu_quant_fp8, quantize_fp8, quantize_fp8_with_plan, rms_norm_quant_fp8, ScaleGranularity, TensorQuantLimits,
    TensorQuantPlan,
};
use crate::ops::rms_norm::RmsNormConfig;
use crate::reference::mlp::GluActivation;
use crate::reference::quant::{self as reference, e4m3_error_bound, e4m3_ordinal, Quantized};
use crate::{DType, Device, Result, TensorView, TensorViewMut, F8E4M3};
use half::{bf16, f16};

/// How a scale tensor is stored (both with a padded leading dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleLayout {
    /// `[sr, sc]` rows `sc + 1` apart.
    RowMajor,
    /// Column-major: element (i, j) at `i + j · (sr + 3)` (DeepGEMM's activation-scale layout).
    ColMajor,
}

/// (buffer length, strides) of a scale tensor of `shape` stored in `layout`.
pub fn scale_storage(shape: [usize; 2], layout: ScaleLayout) -> (usize, [usize; 2]) {
    let [sr, sc] = shape;
    match layout {
        ScaleLayout::RowMajor => (sr * (sc + 1), [sc + 1, 1]),
        ScaleLayout::ColMajor => ((sr + 3) * sc, [1, sr + 3]),
    }
}

/// The scale tensor's elements, row-major, out of its storage.
pub fn gather_scale(buf: &[f32], shape: [usize; 2], strides: [usize; 2]) -> Vec<f32> {
    (0..shape[0] * shape[1]).map(|i| buf[(i / shape[1]) * strides[0] + (i % shape[1]) * strides[1]]).collect()
}

/// The storage elements no scale lives in (must stay untouched).
fn outside_scale(buf: &[f32], shape: [usize; 2], strides: [usize; 2]) -> Vec<f32> {
    let mut used = vec![false; buf.len()];
    for i in 0..shape[0] * shape[1] {
        used[(i / shape[1]) * strides[0] + (i % shape[1]) * strides[1]] = true;
    }
    buf.iter().zip(used).filter(|(_, u)| !u).map(|(v, _)| *v).collect()
}

/// Magnitudes over `2·spread + 1` decades: element (r, c) is uniform(−1, 1) · 10^e with e
/// cycling over rows and 128-column blocks, so every scale layout sees very different blocks.
fn spread_value(rng: &mut Rng, r: usize, c: usize, spread: i32) -> f64 {
    let span = 2 * spread as usize + 1;
    let e = ((r * 7 + (c / 128) * 3) % span) as i32 - spread;
    let v = rng.uniform(-1.0, 1.0) * 10f64.powi(e);
    if v == 0.0 {
        1e-3
    } else {
        v
    }
}

/// One plain quantization: x rows at `x_stride`, out rows at `out_stride`, both views starting
/// `offset` elements into their buffers.
#[derive(Clone, Copy, Debug)]
pub struct QuantCase {
    /// Rows of x (tokens, or a weight's output channels).
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// Row stride of x, in elements.
    pub x_stride: usize,
    /// Row stride of the codes, in elements.
    pub out_stride: usize,
    /// Elements before the first row of x and of the codes.
    pub offset: usize,
    /// How the scales tile the tensor.
    pub granularity: ScaleGranularity,
    /// How the scale tensor is stored.
    pub layout: ScaleLayout,
    /// Decades of magnitude either side of 1 (f16 inputs are limited to 4).
    pub spread: i32,
    /// Seed of x.
    pub seed: u64,
}

impl QuantCase {
    /// Dense x and codes, row-major scales, magnitudes over ±3 decades.
    pub fn dense(rows: usize, cols: usize, granularity: ScaleGranularity, seed: u64) -> Self {
        Self { rows, cols, x_stride: cols, out_stride: cols, offset: 0, granularity, layout: ScaleLayout::RowMajor, spread: 3, seed }
    }
    fn describe(&self) -> String {
        format!(
            "[{}, {}] {} strides {}/{} offset {} scales {:?} ±{} decades",
            self.rows,
            self.cols,
            self.granularity.name(),
            self.x_stride,
            self.out_stride,
            self.offset,
            self.layout,
            self.spread
        )
    }
}

/// Half-step round-trip check of a GPU result against the values it quantized.
fn round_trip(what: &'static str, q: &Quantized, values: &[f64]) -> Comparison {
    let deq: Vec<f32> = q.dequantize().iter().map(|&v| v as f32).collect();
    let bound: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| e4m3_error_bound(v, q.scale_at(i / q.cols, i % q.cols) as f64) * (1.0 + 2f64.powi(-10)) + v.abs() * 2f64.powi(-23))
        .collect();
    compare_bounded(what, &deq, values, &bound, 2f64.powi(-4))
}

/// `quantize_fp8` against the reference: codes and scales bit for bit.
pub fn check_quantize<T: DType>(dev: &Device, case: &QuantCase) -> Result<CheckResult> {
    let g = case.granularity;
    check_quantize_with::<T>(dev, case, 1, String::new(), |x, out, scale| quantize_fp8(dev, x, out, scale, g).map(|_| None))
}

/// Per-tensor quantization against the reference, bit for bit, `calls` times in a row on the
/// device's one workspace (outputs re-poisoned before each call; the last is compared). `plan`:
/// forced ([`quantize_fp8_with_plan`]), or `None` for [`quantize_fp8`], whose plan
/// ([`TensorQuantPlan::planned`]) the check compares with [`TensorQuantPlan::choose`] on the
/// device's limits and the layout rule worked out here.
pub fn check_quantize_tensor<T: DType>(dev: &Device, case: &QuantCase, plan: Option<TensorQuantPlan>, calls: usize) -> Result<CheckResult> {
    assert_eq!(case.granularity, ScaleGranularity::PerTensor, "check_quantize_tensor: per-tensor cases only");
    let what = match plan {
        Some(p) => format!(" {p:?}"),
        None => " (planned)".to_string(),
    };
    let c = *case;
    let vector = vector_layout_case::<T>(&c);
    let want = match plan {
        Some(p) => p,
        None => TensorQuantPlan::choose(c.rows, c.cols, vector, &TensorQuantLimits::query::<T>(dev)?),
    };
    check_quantize_with::<T>(dev, case, calls.max(1), what, |x, out, scale| {
        let ran = match plan {
            Some(p) => p,
            None => TensorQuantPlan::planned(dev, x, out)?,
        };
        match plan {
            Some(p) => quantize_fp8_with_plan(dev, x, out, scale, p)?,
            None => quantize_fp8(dev, x, out, scale, ScaleGranularity::PerTensor)?,
        }
        Ok(Some((ran, want)))
    })
}

/// Whether the case's views allow the 16-byte path (the single pass needs it): the layout rule
/// worked out here, on buffers that start 256-byte aligned with the views `offset` elements in.
fn vector_layout_case<T: DType>(c: &QuantCase) -> bool {
    let size = std::mem::size_of::<T>();
    c.cols.is_multiple_of(16) && (c.x_stride * size).is_multiple_of(16) && c.out_stride.is_multiple_of(16) && (c.offset * size).is_multiple_of(16) && c.offset.is_multiple_of(16)
}

/// `check_all`'s forced single pass: few CTAs holding little of their share in shared memory
/// (most of it re-read), on padded rows with offset views that keep the 16-byte path (an e4m3
/// output 8 elements in would not: the plan is refused).
fn forced_single_pass_case() -> (QuantCase, TensorQuantPlan) {
    let case = QuantCase { x_stride: 2056, out_stride: 2064, offset: 16, ..QuantCase::dense(33, 2048, ScaleGranularity::PerTensor, 11) };
    (case, TensorQuantPlan::SinglePass { ctas: 3, held: 1024 })
}

/// The plan as numbers (kind, CTAs, held elements), for an exact comparison.
fn plan_numbers(p: TensorQuantPlan) -> Vec<f32> {
    match p {
        TensorQuantPlan::TwoKernels => vec![0.0, 0.0, 0.0],
        TensorQuantPlan::SinglePass { ctas, held } => vec![1.0, ctas as f32, held as f32],
    }
}

type Ran = Option<(TensorQuantPlan, TensorQuantPlan)>;

fn check_quantize_with<T: DType>(
    dev: &Device,
    case: &QuantCase,
    calls: usize,
    what: String,
    mut run: impl FnMut(&TensorView<T, 2>, &mut TensorViewMut<F8E4M3, 2>, &mut TensorViewMut<f32, 2>) -> Result<Ran>,
) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let spread = if T::NAME == "f16" { c.spread.min(4) } else { c.spread };
    let x_host: Vec<T> = (0..c.offset + c.rows * c.x_stride)
        .map(|i| {
            let j = i.saturating_sub(c.offset);
            T::from_f64(spread_value(&mut rng, j / c.x_stride, j % c.x_stride, spread))
        })
        .collect();
    let out_host = vec![F8E4M3::NAN; c.offset + c.rows * c.out_stride];
    let shape = c.granularity.scale_shape(c.rows, c.cols);
    let (len, strides) = scale_storage(shape, c.layout);
    let scale_host = vec![f32::NAN; len];
    let x = dev.upload(&x_host)?;
    let mut out = dev.upload(&out_host)?;
    let mut scale = dev.upload(&scale_host)?;
    let mut ran = None;
    for k in 0..calls {
        if k > 0 {
            dev.stream().memcpy_htod(&out_host, &mut out)?;
            dev.stream().memcpy_htod(&scale_host, &mut scale)?;
        }
        ran = run(
            &TensorView::new(x.slice(c.offset..), [c.rows, c.cols], [c.x_stride, 1])?,
            &mut TensorViewMut::new(out.slice_mut(c.offset..), [c.rows, c.cols], [c.out_stride, 1])?,
            &mut TensorViewMut::new(scale.as_view_mut(), shape, strides)?,
        )?;
    }
    let (out_got, scale_got) = (dev.download(&out)?, dev.download(&scale)?);
    let x_dense = gather_rows(&x_host, c.offset, c.rows, c.cols, c.x_stride);
    let want = reference::quantize(&x_dense, c.rows, c.cols, c.granularity);
    let got = Quantized {
        rows: c.rows,
        cols: c.cols,
        granularity: c.granularity,
        q: gather_rows(&out_got, c.offset, c.rows, c.cols, c.out_stride),
        scale: gather_scale(&scale_got, shape, strides),
    };
    let x64: Vec<f64> = x_dense.iter().map(|v| v.to_f64()).collect();
    let rest = |b: &[F8E4M3]| outside_rows(b, c.offset, c.rows, c.cols, c.out_stride);
    let mut comparisons = vec![
        compare_exact("codes (bit-exact)", &got.q, &want.q).in_rows(c.cols),
        compare_exact("scales (bit-exact)", &got.scale, &want.scale),
        round_trip("dequantize(quantize(x)) vs x", &got, &x64),
        compare_exact("outside out (untouched)", &rest(&out_got), &rest(&out_host)),
        compare_exact("outside scale (untouched)", &outside_scale(&scale_got, shape, strides), &outside_scale(&scale_host, shape, strides)),
    ];
    let mut shape_text = c.describe() + &what;
    if let Some((ran, planned)) = ran {
        comparisons.push(compare_exact("plan that ran (kind, CTAs, held)", &plan_numbers(ran), &plan_numbers(planned)));
        shape_text += &format!(" ran {ran:?}");
    }
    if calls > 1 {
        shape_text += &format!(" ×{calls} calls");
    }
    Ok(CheckResult { op: "quantize_fp8", dtype: T::NAME, shape: shape_text, comparisons })
}

/// One fused norm → FP8 call: x (and the residual, with `add`) rows at `x_stride`.
#[derive(Clone, Copy, Debug)]
pub struct NormQuantCase {
    /// Rows (tokens).
    pub num_tokens: usize,
    /// Elements per row.
    pub hidden: usize,
    /// Row stride of x and the residual, in elements.
    pub x_stride: usize,
    /// Run the fused-add form (`residual += x` first).
    pub add: bool,
    /// How the scales tile the codes (per row or 1×128 groups).
    pub granularity: ScaleGranularity,
    /// How the scale tensor is stored.
    pub layout: ScaleLayout,
    /// Gemma-style weight (`1 + weight`).
    pub gemma: bool,
    /// Seed of x, residual and weight.
    pub seed: u64,
}

/// Codes as their positions on the e4m3 number line (adjacent values differ by 1).
fn ordinals(q: &[F8E4M3]) -> Vec<f32> {
    q.iter().map(|&c| e4m3_ordinal(c) as f32).collect()
}

/// `rms_norm_quant_fp8` or (with `add`) `fused_add_rms_norm_quant_fp8` against the reference.
pub fn check_norm_quant<T: DType>(dev: &Device, case: &NormQuantCase) -> Result<CheckResult> {
    let c = *case;
    let (rows, hidden) = (c.num_tokens, c.hidden);
    let cfg = if c.gemma { RmsNormConfig::gemma(1e-6) } else { RmsNormConfig::new(1e-6) };
    let mut rng = Rng::new(c.seed);
    let x_host: Vec<T> = rng.vec(rows * c.x_stride, -3.0, 3.0);
    let r_host: Vec<T> = rng.vec(rows * c.x_stride, -3.0, 3.0);
    let w_host: Vec<T> = if c.gemma { rng.vec(hidden, -0.5, 0.5) } else { rng.vec(hidden, -1.5, 1.5) };
    let out_host = vec![F8E4M3::NAN; rows * hidden];
    let shape = c.granularity.scale_shape(rows, hidden);
    let (len, strides) = scale_storage(shape, c.layout);
    let scale_host = vec![f32::NAN; len];
    let x = dev.upload(&x_host)?;
    let mut r = dev.upload(&r_host)?;
    let w = dev.upload(&w_host)?;
    let mut out = dev.upload(&out_host)?;
    let mut scale = dev.upload(&scale_host)?;
    {
        let xv = TensorView::new(x.as_view(), [rows, hidden], [c.x_stride, 1])?;
        let wv = TensorView::contiguous(w.as_view(), [hidden])?;
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [rows, hidden])?;
        let mut sv = TensorViewMut::new(scale.as_view_mut(), shape, strides)?;
        if c.add {
            let mut rv = TensorViewMut::new(r.as_view_mut(), [rows, hidden], [c.x_stride, 1])?;
            fused_add_rms_norm_quant_fp8(dev, &xv, &mut rv, &wv, &mut ov, &mut sv, c.granularity, cfg)?;
        } else {
            rms_norm_quant_fp8(dev, &xv, &wv, &mut ov, &mut sv, c.granularity, cfg)?;
        }
    }
    let (out_got, scale_got, r_got) = (dev.download(&out)?, dev.download(&scale)?, dev.download(&r)?);
    let xd = gather_rows(&x_host, 0, rows, hidden, c.x_stride);
    let rd = gather_rows(&r_host, 0, rows, hidden, c.x_stride);
    let mut comparisons = Vec::new();
    let (want, exact, normed_input) = if c.add {
        let (sum, q, exact) = reference::fused_add_rms_norm_quant(&xd, &rd, &w_host, cfg, c.granularity);
        comparisons.push(compare_exact("residual (exact)", &gather_rows(&r_got, 0, rows, hidden, c.x_stride), &sum));
        comparisons.push(compare_exact(
            "outside residual (untouched)",
            &outside_rows(&r_got, 0, rows, hidden, c.x_stride),
            &outside_rows(&r_host, 0, rows, hidden, c.x_stride),
        ));
        (q, exact, sum)
    } else {
        let (q, exact) = reference::rms_norm_quant(&xd, &w_host, cfg, c.granularity);
        (q, exact, xd)
    };
    let got = Quantized { rows, cols: hidden, granularity: c.granularity, q: out_got, scale: gather_scale(&scale_got, shape, strides) };
    let unfused = reference::norm_then_quant(&normed_input, &w_host, cfg, c.granularity);
    let one_step = vec![1.0; rows * hidden];
    let scale_tol = Tolerance { atol: 0.0, rtol: 2f64.powi(-16), frobenius: 2f64.powi(-16) };
    comparisons.extend([
        compare("scales (f32 norm; rsqrtf vs f64)", &got.scale, &want.scale.iter().map(|&s| s as f64).collect::<Vec<_>>(), scale_tol),
        compare_bounded("codes within one e4m3 step of the reference", &ordinals(&got.q), &ordinals(&want.q).iter().map(|&v| v as f64).collect::<Vec<_>>(), &one_step, f64::INFINITY).in_rows(hidden),
        compare_bounded("codes within one step of norm-then-quant", &ordinals(&got.q), &ordinals(&unfused.q).iter().map(|&v| v as f64).collect::<Vec<_>>(), &one_step, f64::INFINITY),
        round_trip("dequantized vs the exact f64 norm", &got, &exact),
        compare_exact("outside scale (untouched)", &outside_scale(&scale_got, shape, strides), &outside_scale(&scale_host, shape, strides)),
    ]);
    Ok(CheckResult {
        op: if c.add { "fused_add_rms_norm_quant_fp8" } else { "rms_norm_quant_fp8" },
        dtype: T::NAME,
        shape: format!("[{rows}, {hidden}] stride {} {} scales {:?}{}", c.x_stride, c.granularity.name(), c.layout, if c.gemma { " gemma" } else { "" }),
        comparisons,
    })
}

/// One fused GLU → FP8 call: gate and up are the two halves of one gate_up buffer (row stride
/// `2 · cols + pad`, as a gate_up GEMM writes them), values over ±4 (SiLU / GELU saturate and
/// vanish there).
#[derive(Clone, Copy, Debug)]
pub struct GluQuantCase {
    /// Rows (tokens).
    pub rows: usize,
    /// Columns of gate, up and the codes (the intermediate size).
    pub cols: usize,
    /// Extra elements per gate_up row (a multiple of 8 keeps rows 16-byte aligned).
    pub pad: usize,
    /// The gate activation.
    pub act: GluActivation,
    /// How the scales tile the tensor.
    pub granularity: ScaleGranularity,
    /// How the scale tensor is stored.
    pub layout: ScaleLayout,
    /// Seed of gate_up.
    pub seed: u64,
}

/// `glu_quant_fp8` against the reference: scales within f32 slack, codes within one e4m3 step
/// of the reference and of glu-then-quantize (the bf16 round trip it saves), dequantized values
/// within half a step of the exact f64 GLU (plus the f32 activation's few ulps).
pub fn check_glu_quant<T: DType>(dev: &Device, case: &GluQuantCase) -> Result<CheckResult> {
    let c = *case;
    let (rows, cols, stride) = (c.rows, c.cols, 2 * c.cols + c.pad);
    let mut rng = Rng::new(c.seed);
    let gate_up: Vec<T> = rng.vec(rows.max(1) * stride, -4.0, 4.0);
    let out_host = vec![F8E4M3::NAN; rows * cols];
    let shape = c.granularity.scale_shape(rows, cols);
    let (len, strides) = scale_storage(shape, c.layout);
    let scale_host = vec![f32::NAN; len];
    let gu = dev.upload(&gate_up)?;
    let mut out = dev.upload(&out_host)?;
    let mut scale = dev.upload(&scale_host)?;
    {
        let gv = TensorView::new(gu.as_view(), [rows, cols], [stride, 1])?;
        let uv = TensorView::new(gu.slice(cols..), [rows, cols], [stride, 1])?;
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [rows, cols])?;
        let mut sv = TensorViewMut::new(scale.as_view_mut(), shape, strides)?;
        glu_quant_fp8(dev, &gv, &uv, c.act, &mut ov, &mut sv, c.granularity)?;
    }
    let (out_got, scale_got) = (dev.download(&out)?, dev.download(&scale)?);
    let gate = gather_rows(&gate_up, 0, rows, cols, stride);
    let up = gather_rows(&gate_up, cols, rows, cols, stride);
    let (want, exact) = reference::glu_quant(&gate, &up, cols, c.act, c.granularity);
    let got = Quantized { rows, cols, granularity: c.granularity, q: out_got, scale: gather_scale(&scale_got, shape, strides) };
    // The unfused path: glu rounded to T, then quantized.
    let glu_t: Vec<T> = crate::reference::mlp::glu(&gate.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), &up.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), c.act)
        .into_iter()
        .map(|v| T::from_f64(v as f64))
        .collect();
    let unfused = reference::quantize(&glu_t, rows, cols, c.granularity);
    let one_step = vec![1.0; rows * cols];
    let scale_tol = Tolerance { atol: 0.0, rtol: 2f64.powi(-16), frobenius: 2f64.powi(-16) };
    let deq: Vec<f32> = got.dequantize().iter().map(|&v| v as f32).collect();
    let half_step: Vec<f64> = exact
        .iter()
        .enumerate()
        .map(|(i, &v)| e4m3_error_bound(v, got.scale_at(i / cols, i % cols) as f64) * (1.0 + 2f64.powi(-10)) + v.abs() * 2f64.powi(-20))
        .collect();
    let ords = |q: &Quantized| ordinals(&q.q).iter().map(|&v| v as f64).collect::<Vec<_>>();
    Ok(CheckResult {
        op: "glu_quant_fp8",
        dtype: T::NAME,
        shape: format!("[{rows}, {cols}] gate_up stride {stride} {:?} {} scales {:?}", c.act, c.granularity.name(), c.layout),
        comparisons: vec![
            compare("scales (f32 activation vs f64)", &got.scale, &want.scale.iter().map(|&s| s as f64).collect::<Vec<_>>(), scale_tol),
            compare_bounded("codes within one e4m3 step of the reference", &ordinals(&got.q), &ords(&want), &one_step, f64::INFINITY),
            compare_bounded("codes within one step of glu-then-quant", &ordinals(&got.q), &ords(&unfused), &one_step, f64::INFINITY),
            compare_bounded("dequantized vs the exact f64 GLU", &deq, &exact, &half_step, 2f64.powi(-4)),
            compare_exact("outside scale (untouched)", &outside_scale(&scale_got, shape, strides), &outside_scale(&scale_host, shape, strides)),
        ],
    })
}

/// One dequantization: random codes (no NaN codes) and scales over `±spread` decades.
#[derive(Clone, Copy, Debug)]
pub struct DequantCase {
    /// Rows of codes.
    pub rows: usize,
    /// Codes per row.
    pub cols: usize,
    /// How the scales tile the tensor.
    pub granularity: ScaleGranularity,
    /// How the scale tensor is stored.
    pub layout: ScaleLayout,
    /// Decades of scale magnitude either side of 1.
    pub spread: i32,
    /// Seed of the codes and scales.
    pub seed: u64,
}

/// `dequantize_fp8` against `Quantized::dequantize` (one rounding of the exact product).
pub fn check_dequantize<T: DType>(dev: &Device, case: &DequantCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let codes: Vec<F8E4M3> = (0..c.rows * c.cols)
        .map(|_| {
            let b = (rng.next_u64() & 0xFF) as u8;
            F8E4M3(if b & 0x7F == 0x7F { b & 0xFE } else { b })
        })
        .collect();
    let shape = c.granularity.scale_shape(c.rows, c.cols);
    let scales: Vec<f32> = (0..shape[0] * shape[1]).map(|_| 10f64.powf(rng.uniform(-c.spread as f64, c.spread as f64)) as f32).collect();
    let (len, strides) = scale_storage(shape, c.layout);
    let mut scale_host = vec![f32::NAN; len];
    for (i, s) in scales.iter().enumerate() {
        scale_host[(i / shape[1]) * strides[0] + (i % shape[1]) * strides[1]] = *s;
    }
    let q = dev.upload(&codes)?;
    let scale = dev.upload(&scale_host)?;
    let mut out = dev.upload(&vec![T::NAN; c.rows * c.cols])?;
    dequantize_fp8(
        dev,
        &TensorView::contiguous(q.as_view(), [c.rows, c.cols])?,
        &TensorView::new(scale.as_view(), shape, strides)?,
        c.granularity,
        &mut TensorViewMut::contiguous(out.as_view_mut(), [c.rows, c.cols])?,
    )?;
    let want = Quantized { rows: c.rows, cols: c.cols, granularity: c.granularity, q: codes, scale: scales }.dequantize();
    Ok(CheckResult {
        op: "dequantize_fp8",
        dtype: T::NAME,
        shape: format!("[{}, {}] {} scales {:?} ±{} decades", c.rows, c.cols, c.granularity.name(), c.layout, c.spread),
        // One rounding of code · scale: a relative bound, absolute only below T's smallest
        // normal. (T's usual atol left ~40 % of the elements unchecked: scales span ±20 decades,
        // and a kernel writing zeros passed wherever |code · scale| < atol.)
        comparisons: vec![compare("out", &dev.download(&out)?, &want, Tolerance { atol: if T::NAME == "f16" { 6.1e-5 } else { 1.2e-38 }, ..tolerance::<T>() })],
    })
}

/// The cases `warpcore check` runs.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    use ScaleGranularity::*;
    use ScaleLayout::*;
    fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
        for g in ScaleGranularity::ALL {
            out.push(check_quantize::<T>(dev, &QuantCase::dense(64, 7168, g, 1))?);
            out.push(check_quantize::<T>(dev, &QuantCase { layout: ColMajor, spread: 12, ..QuantCase::dense(33, 2048, g, 2) })?);
        }
        // Odd layouts: the scalar path (per tensor / per row / blocks), long rows (the loop path).
        for g in [PerTensor, PerRow, Block128] {
            out.push(check_quantize::<T>(dev, &QuantCase { rows: 5, cols: 989, x_stride: 1000, out_stride: 991, offset: 1, granularity: g, layout: RowMajor, spread: 2, seed: 3 })?);
        }
        out.push(check_quantize::<T>(dev, &QuantCase::dense(3, 65536 + 128, Group128, 4))?);
        out.push(check_quantize::<T>(dev, &QuantCase::dense(2, 65536 + 16, PerRow, 5))?);
        out.push(check_quantize::<T>(dev, &QuantCase::dense(576, 7168, Block128, 6))?);
        for (add, g, layout) in [(false, PerRow, RowMajor), (false, Group128, ColMajor), (true, PerRow, ColMajor), (true, Group128, RowMajor)] {
            for &(tokens, hidden) in &[(64usize, 7168usize), (3, 18432), (1, 128)] {
                let case = NormQuantCase { num_tokens: tokens, hidden, x_stride: hidden + 64, add, granularity: g, layout, gemma: tokens == 3, seed: 7 };
                out.push(check_norm_quant::<T>(dev, &case)?);
            }
        }
        // Fused GLU -> FP8 at DeepSeek-V3's / Qwen3-MoE's intermediate sizes.
        for (i, &(rows, cols, act, g, layout)) in [
            (64usize, 2048usize, GluActivation::Silu, Group128, ColMajor),
            (3, 18432, GluActivation::GeluTanh, PerRow, RowMajor),
            (1, 128, GluActivation::SquaredRelu, Group128, RowMajor),
            (256, 768, GluActivation::Silu, PerRow, ColMajor),
        ]
        .iter()
        .enumerate()
        {
            out.push(check_glu_quant::<T>(dev, &GluQuantCase { rows, cols, pad: 8 * i, act, granularity: g, layout, seed: 20 + i as u64 })?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    per_dtype::<bf16>(dev, &mut out)?;
    per_dtype::<f16>(dev, &mut out)?;
    // Per tensor in one pass: planned, and forced onto few CTAs with little shared memory (most
    // of each share re-read), all on the device's one workspace.
    for &(rows, cols) in &[(4096usize, 7168usize), (64, 4096), (1, 16), (33, 2048)] {
        out.push(check_quantize_tensor::<bf16>(dev, &QuantCase::dense(rows, cols, PerTensor, 10), None, 2)?);
    }
    let (case, forced) = forced_single_pass_case();
    out.push(check_quantize_tensor::<f16>(dev, &case, Some(forced), 1)?);
    for g in ScaleGranularity::ALL {
        let case = DequantCase { rows: 130, cols: 384, granularity: g, layout: ColMajor, spread: 20, seed: 8 };
        out.push(check_dequantize::<f32>(dev, &case)?);
        out.push(check_dequantize::<bf16>(dev, &case)?);
        out.push(check_dequantize::<f16>(dev, &DequantCase { spread: 2, ..case })?);
    }
    Ok(out)
}

/// Without a GPU: the reference's own invariants (round trip within half a step for every
/// granularity over many decades; the fused norm within one step of norm-then-quant).
pub fn check_references() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &(rows, cols) in &[(64usize, 7168usize), (130, 384)] {
        for g in ScaleGranularity::ALL {
            let mut rng = Rng::new(rows as u64);
            let x: Vec<bf16> = (0..rows * cols).map(|i| bf16::from_f64(spread_value(&mut rng, i / cols, i % cols, 15))).collect();
            let q = reference::quantize(&x, rows, cols, g);
            let x64: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
            let scales_ok: Vec<f32> = q.scale.iter().map(|s| if s.is_normal() { 1.0 } else { 0.0 }).collect();
            out.push(CheckResult {
                op: "reference::quant",
                dtype: "bf16",
                shape: format!("[{rows}, {cols}] {}", g.name()),
                comparisons: vec![round_trip("dequantize(quantize(x)) vs x", &q, &x64), compare_exact("scales normal", &scales_ok, &vec![1.0; scales_ok.len()])],
            });
        }
    }
    let mut rng = Rng::new(9);
    let (tokens, hidden) = (16, 4096);
    let x: Vec<bf16> = rng.vec(tokens * hidden, -3.0, 3.0);
    let w: Vec<bf16> = rng.vec(hidden, -1.5, 1.5);
    for g in [ScaleGranularity::PerRow, ScaleGranularity::Group128] {
        let (fused, exact) = reference::rms_norm_quant(&x, &w, RmsNormConfig::new(1e-6), g);
        let unfused = reference::norm_then_quant(&x, &w, RmsNormConfig::new(1e-6), g);
        out.push(CheckResult {
            op: "reference::rms_norm_quant",
            dtype: "bf16",
            shape: format!("[{tokens}, {hidden}] {}", g.name()),
            comparisons: vec![
                round_trip("fused vs the exact f64 norm", &fused, &exact),
                compare_bounded(
                    "fused within one step of norm-then-quant",
                    &ordinals(&fused.q),
                    &ordinals(&unfused.q).iter().map(|&v| v as f64).collect::<Vec<_>>(),
                    &vec![1.0; tokens * hidden],
                    f64::INFINITY,
                ),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `warpcore check` runs it on a GPU only, where a refused plan stops the whole family (an
    /// output offset of 8 e4m3 elements did, found when the CLI first ran under host emulation).
    #[test]
    fn the_forced_single_pass_case_keeps_the_vector_layout() {
        let (case, plan) = forced_single_pass_case();
        assert!(vector_layout_case::<f16>(&case), "{case:?}");
        assert!(matches!(plan, TensorQuantPlan::SinglePass { .. }));
        assert!(!vector_layout_case::<f16>(&QuantCase { offset: 8, ..case }), "an e4m3 view 8 bytes in is not 16-byte aligned");
    }
}
