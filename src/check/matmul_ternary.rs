//! Ternary family: `quantize_activations` bit for bit against
//! [`crate::reference::matmul_ternary::quantize_activations`] (transformers' f32 arithmetic), and
//! `matmul_ternary` against [`crate::reference::matmul_ternary::matmul_ternary`] (exact integer
//! sums, f64 epilogue), on fresh random inputs with poisoned outputs. Used by
//! tests/matmul_ternary.rs and `warpcore check`.

use super::{compare_bounded, compare_exact, compare_ints, gather_rows, outside_rows, tolerance, CheckResult, Comparison, Rng};
use crate::ops::matmul_ternary as ops;
use crate::reference::matmul_ternary::{self as reference, QuantizedActivations, TernaryWeights};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use half::{bf16, f16};

/// `quantize_activations` on x `[m, k]` (row stride `x_stride`, starting `offset` elements into
/// its buffer: a multiple of 16 bytes) into q (row stride `q_stride` bytes). Rows get different
/// magnitudes; with `special_rows`, row 0 is all zeros and row 1 below the 1e-5 absmax floor.
#[derive(Clone, Copy, Debug)]
pub struct QuantizeCase {
    /// Rows (tokens).
    pub m: usize,
    /// Elements per row.
    pub k: usize,
    /// Row stride of x, in elements.
    pub x_stride: usize,
    /// Row stride of q, in bytes (= int8 elements).
    pub q_stride: usize,
    /// Elements before x's first row (16-byte multiple).
    pub offset: usize,
    /// Make row 0 all zeros and row 1 tiny (see above).
    pub special_rows: bool,
    /// Seed of the inputs.
    pub seed: u64,
}

impl QuantizeCase {
    /// Dense x and q, ordinary rows.
    pub fn dense(m: usize, k: usize, seed: u64) -> Self {
        Self { m, k, x_stride: k, q_stride: k, offset: 0, special_rows: false, seed }
    }
}

/// Codes and scales bit-exact; q's row gaps and the poisoned rest untouched.
pub fn check_quantize_activations<T: DType>(dev: &Device, case: &QuantizeCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let mut x_host: Vec<T> = vec![T::from_f32(0.0); c.offset + c.m * c.x_stride];
    for r in 0..c.m {
        // Magnitudes over several decades, so that scales differ from row to row.
        let mag = 10f64.powf(rng.uniform(-3.0, 2.0));
        for j in 0..c.x_stride {
            let v = match r {
                0 if c.special_rows => 0.0,
                1 if c.special_rows => rng.uniform(-4e-6, 4e-6),
                _ => rng.uniform(-mag, mag),
            };
            x_host[c.offset + r * c.x_stride + j] = T::from_f64(v);
        }
    }
    let poison: Vec<i8> = (0..c.m * c.q_stride).map(|_| rng.next_u64() as i8).collect();
    let x = dev.upload(&x_host)?;
    let mut q = dev.upload(&poison)?;
    let mut scale = dev.upload(&vec![f32::NAN; c.m])?;
    ops::quantize_activations(
        dev,
        &TensorView::new(x.slice(c.offset..), [c.m, c.k], [c.x_stride, 1])?,
        &mut TensorViewMut::new(q.slice_mut(..), [c.m, c.k], [c.q_stride, 1])?,
        &mut TensorViewMut::contiguous(scale.slice_mut(..), [c.m])?,
    )?;
    let (got_q, got_s) = (dev.download(&q)?, dev.download(&scale)?);
    let x_dense: Vec<f32> = gather_rows(&x_host, c.offset, c.m, c.k, c.x_stride).iter().map(|v| v.to_f32()).collect();
    let want = reference::quantize_activations(&x_dense, c.k);
    let ints = |v: &[i8]| v.iter().map(|&b| b as i32).collect::<Vec<_>>();
    Ok(CheckResult {
        op: "quantize_activations",
        dtype: T::NAME,
        shape: format!("[{}, {}] strides {}/{} offset {} special rows {}", c.m, c.k, c.x_stride, c.q_stride, c.offset, c.special_rows),
        comparisons: vec![
            compare_ints("q (bit-exact)", &ints(&gather_rows(&got_q, 0, c.m, c.k, c.q_stride)), &ints(&want.q)),
            compare_exact("scale (bit-exact)", &got_s, &want.scale),
            compare_ints("q row gaps (untouched)", &ints(&outside_rows(&got_q, 0, c.m, c.k, c.q_stride)), &ints(&outside_rows(&poison, 0, c.m, c.k, c.q_stride))),
        ],
    })
}

/// `rms_norm_quantize_activations` (or, with `add`, the fused-add form) on x `[m, k]` with rows
/// of different magnitudes, a random weight around 1 (Gemma-style `1 + weight` with `gemma`).
#[derive(Clone, Copy, Debug)]
pub struct NormQuantizeCase {
    /// Rows (tokens).
    pub m: usize,
    /// Elements per row (hidden).
    pub k: usize,
    /// Run the fused-add form (`residual += x` first).
    pub add: bool,
    /// Gemma-style weight (`1 + weight`).
    pub gemma: bool,
    /// Seed of x, residual and weight.
    pub seed: u64,
}

/// The residual bit-exact (`round(x + residual)`); each code within half a step (+1e-3) of the
/// f64 value `rms_norm(x) · scale` (so equal to its rounding except within 1e-3 of a boundary,
/// where the kernel's f32 normalisation may land on either side); the scale within 1e-5
/// relative of the f64 one.
pub fn check_rms_norm_quantize_activations<T: DType>(dev: &Device, case: &NormQuantizeCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let x_host: Vec<T> = (0..c.m * c.k).map(|i| T::from_f64(rng.uniform(-2.0, 2.0) * (1 + (i / c.k) % 4) as f64)).collect();
    let r_host: Vec<T> = rng.vec(c.m * c.k, -1.0, 1.0);
    let w_host: Vec<T> = (0..c.k).map(|_| T::from_f64(rng.uniform(0.5, 1.5) - if c.gemma { 1.0 } else { 0.0 })).collect();
    let cfg = if c.gemma { crate::ops::rms_norm::RmsNormConfig::gemma(1e-5) } else { crate::ops::rms_norm::RmsNormConfig::new(1e-5) };
    let (x, w) = (dev.upload(&x_host)?, dev.upload(&w_host)?);
    let mut res = dev.upload(&r_host)?;
    // Poison: -128, a code the quantizer never writes (its codes are round(x · 127 / amax), in
    // ±127); 0x5A (90), used before 2026-12-03, was a valid code.
    let mut q = dev.upload(&vec![i8::MIN; c.m * c.k])?;
    let mut scale = dev.upload(&vec![f32::NAN; c.m])?;
    {
        let xv = TensorView::contiguous(x.as_view(), [c.m, c.k])?;
        let wv = TensorView::contiguous(w.as_view(), [c.k])?;
        let mut qv = TensorViewMut::contiguous(q.slice_mut(..), [c.m, c.k])?;
        let mut sv = TensorViewMut::contiguous(scale.slice_mut(..), [c.m])?;
        if c.add {
            let mut rv = TensorViewMut::contiguous(res.slice_mut(..), [c.m, c.k])?;
            ops::fused_add_rms_norm_quantize_activations(dev, &xv, &mut rv, &wv, cfg, &mut qv, &mut sv)?;
        } else {
            ops::rms_norm_quantize_activations(dev, &xv, &wv, cfg, &mut qv, &mut sv)?;
        }
    }
    let (got_q, got_s, got_r) = (dev.download(&q)?, dev.download(&scale)?, dev.download(&res)?);
    let (want_r, normed) = if c.add {
        crate::reference::rms_norm::fused_add_rms_norm(&x_host, &r_host, &w_host, cfg)
    } else {
        (r_host.clone(), crate::reference::rms_norm::rms_norm(&x_host, &w_host, cfg))
    };
    let mut want_s = Vec::with_capacity(c.m);
    let mut want_q = Vec::with_capacity(c.m * c.k);
    for row in normed.chunks_exact(c.k) {
        let s = 127.0 / row.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-5);
        want_s.push(s);
        want_q.extend(row.iter().map(|v| (v * s).clamp(-128.0, 127.0)));
    }
    let codes: Vec<f32> = got_q.iter().map(|&v| v as f32).collect();
    let what = if c.add { "fused_add_rms_norm_quantize_activations" } else { "rms_norm_quantize_activations" };
    Ok(CheckResult {
        op: what,
        dtype: T::NAME,
        shape: format!("[{}, {}] gemma {}", c.m, c.k, c.gemma),
        comparisons: vec![
            compare_bounded("q (within half a step of the f64 value)", &codes, &want_q, &vec![0.501; want_q.len()], f64::INFINITY),
            compare_bounded("scale", &got_s, &want_s, &want_s.iter().map(|s| 1e-5 * s).collect::<Vec<_>>(), f64::INFINITY),
            compare_exact("residual (round(x + residual); untouched without add)", &got_r, &want_r),
        ],
    })
}

/// `matmul_ternary` on random int8 codes (the whole range, −128 included) `[m, k]` with row
/// scales over several decades, random ternary weights `[n, k]` packed into `[n / 4, k]` (row
/// stride `w_stride` bytes), out `[m, n]` at row stride `out_stride`, optional bias; the tile
/// forced to `block_m` or planned (None).
#[derive(Clone, Copy, Debug)]
pub struct TernaryCase {
    /// Rows of q and out (tokens).
    pub m: usize,
    /// Output features (a multiple of 4).
    pub n: usize,
    /// Input features (a multiple of 16).
    pub k: usize,
    /// Row stride of q, in bytes.
    pub q_stride: usize,
    /// Row stride of the packed weights, in bytes.
    pub w_stride: usize,
    /// Row stride of out, in elements.
    pub out_stride: usize,
    /// Add a bias `[n]`.
    pub bias: bool,
    /// Force a tile (None: planned).
    pub tile: Option<ops::TernaryTile>,
    /// Seed of the codes, scales, weights and bias.
    pub seed: u64,
}

impl TernaryCase {
    /// Dense operands, no bias, the planned tile.
    pub fn dense(m: usize, n: usize, k: usize, seed: u64) -> Self {
        Self { m, n, k, q_stride: k, w_stride: k, out_stride: n, bias: false, tile: None, seed }
    }
}

/// out within one rounding of `O` plus f32's error on the epilogue (a few ulps of the terms
/// before any cancellation) of the f64 reference over the exact integer sums; the output's row
/// gaps still poison.
pub fn check_matmul_ternary<O: DType>(dev: &Device, case: &TernaryCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let q_host: Vec<i8> = (0..c.m * c.q_stride).map(|_| rng.next_u64() as i8).collect();
    let scale: Vec<f32> = (0..c.m).map(|_| (127.0 / 10f64.powf(rng.uniform(-2.0, 2.0))) as f32).collect();
    // Ternary values with a row-dependent share of zeros (BitNet's are about a third).
    let values: Vec<i8> = (0..c.n * c.k).map(|i| ((rng.next_u64() + (i / c.k) as u64) % 3) as i8 - 1).collect();
    let w_scale = rng.uniform(0.01, 2.0) as f32;
    let packed_dense = reference::pack(&values, c.k);
    let mut packed = vec![0xFFu8; c.n / 4 * c.w_stride];
    for (r, row) in packed_dense.chunks_exact(c.k).enumerate() {
        packed[r * c.w_stride..][..c.k].copy_from_slice(row);
    }
    let bias_host: Vec<O> = rng.vec(c.n, -4.0, 4.0);
    let out_host = vec![O::NAN; c.m * c.out_stride];
    let (q, qs, w, b) = (dev.upload(&q_host)?, dev.upload(&scale)?, dev.upload(&packed)?, dev.upload(&bias_host)?);
    let mut out = dev.upload(&out_host)?;
    let packed_view = TensorView::new(w.as_view(), [c.n / 4, c.k], [c.w_stride, 1])?;
    let bias_view = TensorView::contiguous(b.as_view(), [c.n])?;
    ops::matmul_ternary_with_tile(
        dev,
        &TensorView::new(q.as_view(), [c.m, c.k], [c.q_stride, 1])?,
        &TensorView::contiguous(qs.as_view(), [c.m])?,
        ops::PackedTernary { packed: &packed_view, scale: w_scale },
        c.bias.then_some(&bias_view),
        &mut TensorViewMut::new(out.slice_mut(..), [c.m, c.n], [c.out_stride, 1])?,
        c.tile,
    )?;
    let got = dev.download(&out)?;
    let act = QuantizedActivations { q: gather_rows(&q_host, 0, c.m, c.k, c.q_stride), scale };
    let weights = TernaryWeights { values, scale: w_scale };
    let bias64: Vec<f64> = bias_host.iter().map(|v| v.to_f64()).collect();
    let want = reference::matmul_ternary(&act, &weights, c.bias.then_some(&bias64[..]), c.k);
    // The bound: O's rounding of the result, plus 8 f32 ulps of the largest term of the
    // epilogue ((|sum / scale| + |bias|) · |w_scale|) for the conversion, division, add and
    // product before the store.
    let abs_terms = reference::matmul_ternary(
        &QuantizedActivations { q: act.q.iter().map(|v| v.saturating_abs()).collect(), scale: act.scale.clone() },
        &TernaryWeights { values: weights.values.iter().map(|v| v.abs()).collect(), scale: w_scale },
        c.bias.then_some(&bias64.iter().map(|v| v.abs()).collect::<Vec<_>>()[..]),
        c.k,
    );
    let tol = tolerance::<O>();
    let bound: Vec<f64> = want.iter().zip(&abs_terms).map(|(w, a)| tol.rtol * w.abs() + 8.0 * f32::EPSILON as f64 * a + 1e-30).collect();
    let rest = |v: &[O]| outside_rows(v, 0, c.m, c.n, c.out_stride);
    let comparisons: Vec<Comparison> = vec![
        compare_bounded("out", &gather_rows(&got, 0, c.m, c.n, c.out_stride), &want, &bound, tol.frobenius).in_rows(c.n),
        compare_exact("out row gaps (untouched)", &rest(&got), &rest(&out_host)),
    ];
    Ok(CheckResult {
        op: "matmul_ternary",
        dtype: O::NAME,
        shape: format!(
            "[{}, {}] x [{}, {}]^T strides {}/{}/{} bias {} tile {}",
            c.m, c.k, c.n, c.k, c.q_stride, c.w_stride, c.out_stride, c.bias, c.tile.map_or("planned".into(), |t| t.to_string())
        ),
        comparisons,
    })
}

/// The cases `warpcore check` runs: BitNet b1.58 2B4T's layer shapes (hidden 2560, q/o 2560,
/// k/v 640, gate_up 2 × 6912, down k = 6912) at decode and prefill sizes, awkward tails, both tiles.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
        out.push(check_quantize_activations::<T>(dev, &QuantizeCase::dense(1, 2560, 1))?);
        out.push(check_quantize_activations::<T>(dev, &QuantizeCase::dense(1000, 6912, 2))?);
        out.push(check_quantize_activations::<T>(
            dev,
            &QuantizeCase { m: 7, k: 208, x_stride: 240, q_stride: 224, offset: 16 / std::mem::size_of::<T>(), special_rows: true, seed: 3 },
        )?);
        for (i, (m, k)) in [(1, 2560), (300, 6912), (5, 208)].into_iter().enumerate() {
            for add in [false, true] {
                out.push(check_rms_norm_quantize_activations::<T>(dev, &NormQuantizeCase { m, k, add, gemma: i == 2, seed: 4 + i as u64 })?);
            }
        }
        // The last two: 16-row tiles at m = 300 (40 CTAs of 128 rows would leave SMs idle), 128-row
        // tiles at m = 1024 (160 CTAs); short k keeps the f64 reference quick.
        for (i, (m, n, k)) in [(1, 2560, 2560), (1, 640, 2560), (8, 13824, 2560), (1, 2560, 6912), (300, 2560, 512), (1024, 2560, 256)].into_iter().enumerate() {
            out.push(check_matmul_ternary::<T>(dev, &TernaryCase { bias: i % 2 == 1, ..TernaryCase::dense(m, n, k, 10 + i as u64) })?);
        }
        let hopper = dev.info().compute_capability == (9, 0);
        for block_m in ops::BLOCK_M.into_iter().chain(hopper.then_some(ops::HOPPER_BLOCK_M)) {
            out.push(check_matmul_ternary::<T>(
                dev,
                &TernaryCase { m: 129, n: 148, k: 208, q_stride: 224, w_stride: 240, out_stride: 150, bias: true, tile: Some(ops::TernaryTile::unsplit(block_m)), seed: 20 },
            )?);
        }
        // Split-k forced past the plan: 7 slices of 7 k-steps (one each), padded rows, bias.
        out.push(check_matmul_ternary::<T>(
            dev,
            &TernaryCase {
                m: 17,
                n: 100,
                k: 3344,
                q_stride: 3360,
                w_stride: 3376,
                out_stride: 103,
                bias: true,
                tile: Some(ops::TernaryTile { block_m: 16, k_splits: 7 }),
                seed: 21,
            },
        )?);
        Ok(())
    }
    let mut out = Vec::new();
    per_dtype::<bf16>(dev, &mut out)?;
    per_dtype::<f16>(dev, &mut out)?;
    per_dtype::<f32>(dev, &mut out)?;
    Ok(out)
}

/// Without a GPU: packing round-trips, quantization is within half a step of x, and the
/// integer-sum product equals transformers' dequantize-then-multiply form.
pub fn check_references() -> Vec<CheckResult> {
    let mut rng = Rng::new(21);
    let (m, n, k) = (4, 16, 96);
    let x: Vec<f32> = rng.vec(m * k, -3.0, 3.0);
    let w: Vec<f32> = rng.vec(n * k, -1.0, 1.0);
    let weights = reference::quantize_weights(&w);
    let unpacked = reference::unpack(&reference::pack(&weights.values, k), k).expect("ternary codes");
    let act = reference::quantize_activations(&x, k);
    let back = act.dequantize();
    let half_step: Vec<f64> = (0..m * k).map(|i| 0.5 / act.scale[i / k] as f64 * (1.0 + 1e-5)).collect();
    let product = reference::matmul_ternary(&act, &weights, None, k);
    let transformers: Vec<f32> = reference::bit_linear(&x, &weights, None, k);
    let ints = |v: &[i8]| v.iter().map(|&b| b as i32).collect::<Vec<_>>();
    vec![CheckResult {
        op: "reference::matmul_ternary",
        dtype: "f64",
        shape: format!("[{m}, {k}] x [{n}, {k}]^T"),
        comparisons: vec![
            compare_ints("unpack(pack(v)) = v", &ints(&unpacked), &ints(&weights.values)),
            compare_bounded("q / scale within half a step of x", &back, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &half_step, f64::INFINITY),
            compare_bounded("integer-sum product = bit_linear", &transformers, &product, &product.iter().map(|p| 1e-6 * (1.0 + p.abs())).collect::<Vec<_>>(), 1e-6),
        ],
    }]
}
