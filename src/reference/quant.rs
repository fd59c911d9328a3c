//! CPU oracle for FP8 quantization. The plain quantizers replicate the kernels' f32 arithmetic
//! exactly (`scale = max(amax, floor) / 448`, `q = e4m3_rn_sat(x · (1/scale))`), so the GPU's
//! bytes and scales must match bit for bit. The fused norm → FP8 ops normalise in f32 like the
//! kernel but with an f64 reciprocal square root (the GPU uses `rsqrtf`), so a few bytes may
//! land one e4m3 step away: their checks bound the error instead (see `e4m3_error_bound`).

use super::mlp::GluActivation;
use crate::ops::quant::{ScaleGranularity, AMAX_FLOOR, FP8_MAX};
use crate::ops::rms_norm::RmsNormConfig;
use crate::{DType, Error, Result, F8E4M3};

/// The scale of a block whose largest magnitude is `amax` (f32, as the kernels compute it).
pub fn scale_of(amax: f32) -> f32 {
    amax.max(AMAX_FLOOR) / FP8_MAX
}

/// One value quantized with `scale`: round to nearest even, saturating to ±448.
pub fn quantize_value(v: f32, scale: f32) -> F8E4M3 {
    F8E4M3::from_f32(v * (1.0 / scale))
}

/// Largest |dequantize(quantize(v)) − v| for a value quantized with `scale` (no saturation:
/// |v| ≤ 448 · scale): half an e4m3 step, 2⁻⁴·|v| in the normal range and 2⁻¹⁰·scale among
/// the subnormals.
pub fn e4m3_error_bound(v: f64, scale: f64) -> f64 {
    2f64.powi(-4) * v.abs() + 2f64.powi(-10) * scale
}

/// A quantized `[rows, cols]` tensor: dense row-major codes and a dense row-major scale
/// tensor of `granularity.scale_shape(rows, cols)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// Rows of the tensor (tokens, or a weight's output channels).
    pub rows: usize,
    /// Columns of the tensor (the k dimension of a GEMM operand).
    pub cols: usize,
    /// How the scales tile the tensor.
    pub granularity: ScaleGranularity,
    /// The e4m3 codes `[rows, cols]`: value ≈ code · scale.
    pub q: Vec<F8E4M3>,
    /// The scales, `granularity.scale_shape(rows, cols)`.
    pub scale: Vec<f32>,
}

impl Quantized {
    /// Shape of `scale`.
    pub fn scale_shape(&self) -> [usize; 2] {
        self.granularity.scale_shape(self.rows, self.cols)
    }
    /// The scale that applies to element (r, c).
    pub fn scale_at(&self, r: usize, c: usize) -> f32 {
        let (br, bc) = self.granularity.block(self.rows, self.cols);
        self.scale[(r / br) * self.scale_shape()[1] + c / bc]
    }
    /// Codes and scales from elsewhere (a checkpoint's fp8 weight and its DeepSeek-style
    /// `weight_scale_inv`, which despite the name multiplies): `q` must be `[rows, cols]` and
    /// `scale` of shape `scale_shape` must be `granularity.scale_shape(rows, cols)`.
    pub fn from_parts(rows: usize, cols: usize, granularity: ScaleGranularity, q: Vec<F8E4M3>, scale: Vec<f32>, scale_shape: [usize; 2]) -> Result<Self> {
        let mismatch = |arg, expected: String, got: String| Error::ShapeMismatch { op: "Quantized::from_parts", arg, expected, got };
        if q.len() != rows * cols {
            return Err(mismatch("q", format!("[{rows}, {cols}]"), format!("{} elements", q.len())));
        }
        let want = granularity.scale_shape(rows, cols);
        if scale_shape != want || scale.len() != want[0] * want[1] {
            return Err(mismatch("scale", format!("{want:?} ({} scales of [{rows}, {cols}])", granularity.name()), format!("{scale_shape:?}, {} values", scale.len())));
        }
        Ok(Self { rows, cols, granularity, q, scale })
    }
    /// `q · scale`, exact in f64.
    pub fn dequantize(&self) -> Vec<f64> {
        (0..self.rows * self.cols).map(|i| self.q[i].to_f64() * self.scale_at(i / self.cols, i % self.cols) as f64).collect()
    }
}

/// Quantizes dense f32 values `[rows, cols]` exactly as the kernels do.
pub fn quantize_f32(y: &[f32], rows: usize, cols: usize, granularity: ScaleGranularity) -> Quantized {
    assert_eq!(y.len(), rows * cols, "y must be [rows, cols]");
    let [sr, sc] = granularity.scale_shape(rows, cols);
    let (br, bc) = granularity.block(rows, cols);
    let mut amax = vec![0.0f32; sr * sc];
    for (i, v) in y.iter().enumerate() {
        let s = (i / cols / br) * sc + (i % cols) / bc;
        amax[s] = amax[s].max(v.abs());
    }
    let scale: Vec<f32> = amax.iter().map(|&a| scale_of(a)).collect();
    let q = y.iter().enumerate().map(|(i, &v)| quantize_value(v, scale[(i / cols / br) * sc + (i % cols) / bc])).collect();
    Quantized { rows, cols, granularity, q, scale }
}

/// `quantize_fp8` on dense x `[rows, cols]`.
pub fn quantize<T: DType>(x: &[T], rows: usize, cols: usize, granularity: ScaleGranularity) -> Quantized {
    quantize_f32(&x.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), rows, cols, granularity)
}

/// The normalised rows as the fused kernel computes them in f32 (`x · rstd · (w_off + w)`),
/// with rstd from f64.
fn normalised_f32<T: DType>(x: &[T], weight: &[T], cfg: RmsNormConfig) -> Vec<f32> {
    let hidden = weight.len();
    assert!(hidden > 0 && x.len().is_multiple_of(hidden), "x must be [num_tokens, {hidden}]");
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(hidden) {
        let ss = row.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
        let rstd = (1.0 / (ss / hidden as f64 + cfg.eps as f64).sqrt()) as f32;
        y.extend(row.iter().zip(weight).map(|(v, w)| v.to_f32() * rstd * (cfg.weight_offset + w.to_f32())));
    }
    y
}

/// `rms_norm_quant_fp8` on dense x `[num_tokens, hidden]`: (the quantized normalised rows, the
/// exact f64 normalised rows `reference::rms_norm` computes).
pub fn rms_norm_quant<T: DType>(x: &[T], weight: &[T], cfg: RmsNormConfig, granularity: ScaleGranularity) -> (Quantized, Vec<f64>) {
    let hidden = weight.len();
    let q = quantize_f32(&normalised_f32(x, weight, cfg), x.len() / hidden, hidden, granularity);
    (q, super::rms_norm::rms_norm(x, weight, cfg))
}

/// `glu_quant_fp8` on dense gate and up `[rows, cols]`: (the quantized `act(gate) · up` as the
/// kernel computes it in f32, the exact f64 values). The f32 values take f32 rounding of the
/// activation (the kernel's `expf` / `tanhf` are within a few ulps of it), so codes next to a
/// rounding boundary may differ by one step; check::quant bounds that.
pub fn glu_quant<T: DType>(gate: &[T], up: &[T], cols: usize, act: GluActivation, granularity: ScaleGranularity) -> (Quantized, Vec<f64>) {
    assert_eq!(gate.len(), up.len(), "gate and up have the same shape");
    let exact: Vec<f64> = gate.iter().zip(up).map(|(g, u)| act.apply(g.to_f64()) * u.to_f64()).collect();
    let y: Vec<f32> = gate.iter().zip(up).map(|(g, u)| act.apply(g.to_f64()) as f32 * u.to_f32()).collect();
    (quantize_f32(&y, gate.len() / cols.max(1), cols, granularity), exact)
}

/// `fused_add_rms_norm_quant_fp8`: (the stored residual `round(x + residual)`, the quantized
/// normalised residual, the exact f64 normalised residual).
pub fn fused_add_rms_norm_quant<T: DType>(
    x: &[T],
    residual: &[T],
    weight: &[T],
    cfg: RmsNormConfig,
    granularity: ScaleGranularity,
) -> (Vec<T>, Quantized, Vec<f64>) {
    let (sum, exact) = super::rms_norm::fused_add_rms_norm(x, residual, weight, cfg);
    let (q, _) = rms_norm_quant(&sum, weight, cfg, granularity);
    (sum, q, exact)
}

/// The unfused pipeline the fused ops replace: `rms_norm` stored in T, then `quantize_fp8`.
/// Its bytes differ from the fused op's where the bf16 rounding of the normalised value moves
/// it across an e4m3 rounding boundary (at most one e4m3 step; the fused op is the more
/// accurate of the two, having one rounding instead of two).
pub fn norm_then_quant<T: DType>(x: &[T], weight: &[T], cfg: RmsNormConfig, granularity: ScaleGranularity) -> Quantized {
    let y: Vec<T> = super::rms_norm::rms_norm(x, weight, cfg).into_iter().map(T::from_f64).collect();
    quantize(&y, x.len() / weight.len(), weight.len(), granularity)
}

/// Position of an e4m3 code on the number line (…, −1, 0, 1, …; ±0 both 0): two codes that
/// differ by one here are adjacent values.
pub fn e4m3_ordinal(q: F8E4M3) -> i32 {
    let mag = (q.0 & 0x7F) as i32;
    if q.0 & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use half::bf16;
    use ScaleGranularity::*;

    #[test]
    fn round_trip_is_within_half_an_e4m3_step() {
        let (rows, cols) = (37, 384);
        let mut rng = Rng::new(1);
        // Magnitudes over many orders: each row has its own exponent range.
        let x: Vec<bf16> = (0..rows * cols)
            .map(|i| {
                let e = (i / cols) as i32 % 20 - 10;
                bf16::from_f64(rng.uniform(-1.0, 1.0) * 10f64.powi(e))
            })
            .collect();
        for g in ScaleGranularity::ALL {
            let q = quantize(&x, rows, cols, g);
            let deq = q.dequantize();
            for (i, (d, v)) in deq.iter().zip(&x).enumerate() {
                let s = q.scale_at(i / cols, i % cols) as f64;
                let bound = e4m3_error_bound(v.to_f64(), s) * (1.0 + 1e-6);
                assert!((d - v.to_f64()).abs() <= bound, "{g:?} element {i}: {d} vs {v} (scale {s})");
            }
        }
    }

    #[test]
    fn each_blocks_largest_value_maps_to_448() {
        let (rows, cols) = (130, 260);
        let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1001) as f32 / 100.0 - 5.0).collect();
        for g in ScaleGranularity::ALL {
            let q = quantize_f32(&x, rows, cols, g);
            let [sr, sc] = q.scale_shape();
            let (br, bc) = g.block(rows, cols);
            for bi in 0..sr {
                for bj in 0..sc {
                    let mut best = (0.0f32, F8E4M3(0));
                    for r in bi * br..((bi + 1) * br).min(rows) {
                        for c in bj * bc..((bj + 1) * bc).min(cols) {
                            if x[r * cols + c].abs() > best.0 {
                                best = (x[r * cols + c].abs(), q.q[r * cols + c]);
                            }
                        }
                    }
                    assert_eq!(q.scale[bi * sc + bj], best.0 / 448.0, "{g:?} block ({bi}, {bj})");
                    assert_eq!(best.1 .0 & 0x7F, 0x7E, "{g:?} block ({bi}, {bj}): the amax element is ±448");
                }
            }
        }
    }

    #[test]
    fn block_scales_are_laid_out_like_weight_scale_inv() {
        // [256, 384] weights: block (i, j) filled with (i · 3 + j + 1); scale [2, 3] row-major.
        let (rows, cols) = (256, 384);
        let x: Vec<f32> = (0..rows * cols).map(|i| ((i / cols / 128) * 3 + (i % cols) / 128 + 1) as f32).collect();
        let q = quantize_f32(&x, rows, cols, Block128);
        assert_eq!(q.scale_shape(), [2, 3]);
        assert_eq!(q.scale, (1..=6).map(|v| v as f32 / 448.0).collect::<Vec<_>>());
        assert!(q.q.iter().all(|c| c.0 == 0x7E));
        // Group scales: [rows, cols / 128], one per row per 128 columns.
        let g = quantize_f32(&x, rows, cols, Group128);
        assert_eq!(g.scale_shape(), [256, 3]);
        assert_eq!(g.scale[3 * 200 + 2], 6.0 / 448.0);
    }

    #[test]
    fn block_scales_broadcast_over_partial_blocks() {
        // [130, 260]: blocks of rows 0..128 | 128..130 and columns 0..128 | 128..256 | 256..260.
        let (rows, cols) = (130, 260);
        let one = F8E4M3::from_f32(1.0);
        let scale: Vec<f32> = (1..=6).map(|v| v as f32 * 0.25).collect();
        let q = Quantized::from_parts(rows, cols, Block128, vec![one; rows * cols], scale.clone(), [2, 3]).unwrap();
        let deq = q.dequantize();
        for (r, c) in [(0, 0), (127, 127), (0, 128), (127, 259), (128, 0), (129, 129), (129, 259)] {
            assert_eq!(deq[r * cols + c], scale[(r / 128) * 3 + c / 128] as f64, "({r}, {c})");
        }
        // Wrong shapes are named: a scale tensor for 256 columns, codes one element short.
        let e = Quantized::from_parts(rows, cols, Block128, vec![one; rows * cols], vec![1.0; 4], [2, 2]).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "scale", .. }), "{e}");
        let e = Quantized::from_parts(rows, cols, Block128, vec![one; rows * cols - 1], scale, [2, 3]).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "q", .. }), "{e}");
    }

    #[test]
    fn block_fp8_round_trips_through_codes_and_scales() {
        // Partial blocks on both sides; what a checkpoint stores (codes + scales) rebuilds the
        // same tensor, within half an e4m3 step of the original.
        let (rows, cols) = (160, 200);
        let mut rng = Rng::new(8);
        let w: Vec<f32> = (0..rows * cols).map(|i| (rng.uniform(-1.0, 1.0) * 10f64.powi((i / cols / 128 + i % cols / 128) as i32 - 1)) as f32).collect();
        let q = quantize_f32(&w, rows, cols, Block128);
        let parts = Quantized::from_parts(rows, cols, Block128, q.q.clone(), q.scale.clone(), [2, 2]).unwrap();
        assert_eq!(parts, q);
        for (i, (d, v)) in parts.dequantize().iter().zip(&w).enumerate() {
            let s = q.scale_at(i / cols, i % cols) as f64;
            assert!((d - *v as f64).abs() <= e4m3_error_bound(*v as f64, s) * (1.0 + 1e-6), "{i}: {d} vs {v}");
        }
    }

    #[test]
    fn scales_are_never_zero_or_subnormal_and_overflow_saturates() {
        let zeros = vec![0.0f32; 256];
        let tiny = vec![1e-30f32; 256];
        for g in ScaleGranularity::ALL {
            for x in [&zeros, &tiny] {
                let q = quantize_f32(x, 2, 128, g);
                assert!(q.scale.iter().all(|s| s.is_normal()), "{g:?}: {:?}", q.scale);
                assert!(q.q.iter().all(|c| !c.to_f64().is_nan()));
            }
        }
        assert_eq!(scale_of(0.0), AMAX_FLOOR / 448.0);
        // A value above 448 · scale (a stale static scale) saturates, never NaN.
        assert_eq!(quantize_value(1e6, 1.0), F8E4M3(0x7E));
        assert_eq!(quantize_value(-1e6, 1.0), F8E4M3(0xFE));
        assert_eq!(quantize_value(449.0, 1.0), F8E4M3(0x7E));
    }

    #[test]
    fn fused_norm_quant_is_within_one_step_of_norm_then_quant() {
        let (tokens, hidden) = (9, 512);
        let mut rng = Rng::new(3);
        let x: Vec<bf16> = rng.vec(tokens * hidden, -3.0, 3.0);
        let w: Vec<bf16> = rng.vec(hidden, -1.5, 1.5);
        let cfg = RmsNormConfig::new(1e-6);
        for g in [PerRow, Group128] {
            let (fused, exact) = rms_norm_quant(&x, &w, cfg, g);
            let unfused = norm_then_quant(&x, &w, cfg, g);
            let mut differ = 0;
            for (a, b) in fused.q.iter().zip(&unfused.q) {
                let d = (e4m3_ordinal(*a) - e4m3_ordinal(*b)).abs();
                assert!(d <= 1, "{g:?}: codes {a:?} and {b:?} are {d} steps apart");
                differ += (d != 0) as usize;
            }
            assert!(differ * 8 < fused.q.len(), "{g:?}: {differ} of {} bytes differ", fused.q.len());
            // The fused result is within half a step of the exact normalised value.
            for (i, (d, e)) in fused.dequantize().iter().zip(&exact).enumerate() {
                let s = fused.scale_at(i / hidden, i % hidden) as f64;
                assert!((d - e).abs() <= e4m3_error_bound(*e, s) * 1.001, "{g:?} {i}: {d} vs {e}");
            }
        }
    }

    #[test]
    fn fused_add_stores_the_rounded_sum_and_quantizes_its_norm() {
        let mut rng = Rng::new(4);
        let x: Vec<bf16> = rng.vec(3 * 256, -2.0, 2.0);
        let r: Vec<bf16> = rng.vec(3 * 256, -2.0, 2.0);
        let w: Vec<bf16> = rng.vec(256, -1.0, 1.0);
        let cfg = RmsNormConfig::gemma(1e-6);
        let (sum, q, _) = fused_add_rms_norm_quant(&x, &r, &w, cfg, Group128);
        assert_eq!(sum[5], bf16::from_f32(x[5].to_f32() + r[5].to_f32()));
        assert_eq!(q, rms_norm_quant(&sum, &w, cfg, Group128).0);
    }

    #[test]
    fn ordinals_are_adjacent_for_neighbouring_values() {
        assert_eq!(e4m3_ordinal(F8E4M3(0x00)), 0);
        assert_eq!(e4m3_ordinal(F8E4M3(0x80)), 0);
        assert_eq!(e4m3_ordinal(F8E4M3(0x01)) - e4m3_ordinal(F8E4M3(0x81)), 2);
        assert_eq!(e4m3_ordinal(F8E4M3(0x38)) - e4m3_ordinal(F8E4M3(0x37)), 1);
    }
}
