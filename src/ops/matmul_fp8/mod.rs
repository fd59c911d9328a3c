//! FP8 GEMM (cuda/matmul_fp8_sm90.cu, cuda/matmul_fp8_sm80.cu):
//! `D[m, n] = Σ_k (a[m, k] · sa) (b[n, k] · sb) (+ bias[n]) (+ residual[m, n])`.
//!
//! a `[m, k]` and b `[n, k]` are e4m3, both K-major (the checkpoint layout: b is the weight
//! `[out_features, in_features]`), rows 16-byte aligned; f32 accumulation; D in bf16 or f32
//! (bias and residual in D's dtype). Any m; n and k multiples of 128.
//!
//! Scales (see [`ScaleGranularity`]): A per tensor, per row (token) or 1×128 groups; B per
//! tensor, per row (output channel) or 128×128 blocks. Per-tensor / per-row scales are applied
//! once in the epilogue. As soon as one operand is fine-grained (A 1×128 or B 128×128) the
//! kernels promote: each 128-wide k-block's partial product is scaled by its two scales and
//! added into an f32 register accumulator (DeepSeek-V3 / DeepGEMM). B per-row with A 1×128 is
//! not a supported pair (B's scale must be constant over each 128-column block).
//!
//! Dispatch on the device: compute capability 9.0 runs the wgmma kernel (TMA descriptors are
//! encoded here with `cuTensorMapEncodeTiled` and passed inside the params); everything else
//! runs the mma.sync kernel. [`MatmulFp8Config::kernel`] forces one (tests run both on an H200).
//! The tile configuration is chosen per shape by [`plan_sm90`] / [`plan_sm80`]: pure host
//! functions of the problem ([`MatmulFp8Problem`]) returning a [`TileConfig`].
//!
//! The same kernels take bf16 operands ([`matmul_grouped`]: the grouped GEMM of MoE experts
//! whose weights are bf16): unscaled, f32 accumulation, n and k multiples of 8.

use super::quant::{scale_strides, ScaleGranularity, FP8_BLOCK};
use super::{check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_rows_aligned, check_shape, launch, row_stride};
pub use crate::tma::{tma_box, TmaBox};
use crate::tma::encode_tma;
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut, F8E4M3};
use half::bf16;

mod plan;
pub use plan::{check_sm90_tile, is_unmeasured, plan_sm80, plan_sm90, sm90_candidates, Accumulation, GemmInput, MatmulFp8Problem, TileConfig, SM80_TILE, SM90_TILES, SPLIT_K_WORKSPACE_FLOATS, TUNING_BUILT, UNMEASURED};

#[cfg(test)]
mod tests;

/// One GEMM operand: e4m3 codes `[rows, k]` (K-major) and their scales, a `[.., ..]` view of
/// `granularity.scale_shape(rows, k)` with any strides (a size-1 dimension broadcasts).
#[derive(Clone, Copy, Debug)]
pub struct Fp8Operand<'v, 'a> {
    /// The e4m3 codes `[rows, k]` (a: `[m, k]`, b: `[n, k]`), rows 16-byte aligned.
    pub data: &'v TensorView<'a, F8E4M3, 2>,
    /// The dequantization scales, `granularity.scale_shape(rows, k)`: value = code · scale.
    pub scale: &'v TensorView<'a, f32, 2>,
    /// How the scales tile the operand.
    pub granularity: ScaleGranularity,
}

/// Which kernel runs (both take e4m3 and bf16 operands).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmKernel {
    /// wgmma on compute capability 9.0, mma.sync elsewhere.
    #[default]
    Auto,
    /// The Hopper kernel (sm_90a only; `Error::Unsupported` elsewhere).
    Wgmma,
    /// The portable kernel (any sm_80+ GPU).
    MmaSync,
}

/// Options of [`matmul_fp8`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulFp8Config {
    /// Which kernel runs (default: chosen by the device).
    pub kernel: GemmKernel,
    /// Per-tensor / per-row scales on the wgmma kernel: accumulate all of k in the tensor
    /// core's accumulator (faster, allows 128×256 tiles; its additions keep ~13 mantissa bits,
    /// so the error grows with k — cuBLASLt's `FAST_ACCUM`). Default off: every 128-k partial
    /// product is added into f32 registers. Ignored with block scales (always promoted) and
    /// by the mma.sync kernel (true f32 accumulation).
    pub fast_accumulation: bool,
    /// CTAs per thread block cluster on the wgmma kernel (pairs along m share their B tile by
    /// TMA multicast): `None` lets [`plan_sm90`] choose; `Some(1)` forces none, `Some(2)`
    /// pairs (128-row tiles only; `Error::Unsupported` where the plan has 64-row tiles or for
    /// other sizes). Ignored by the mma.sync kernel.
    pub cluster: Option<usize>,
    /// The wgmma kernel's whole configuration instead of [`plan_sm90`]'s (an autotuner's pick:
    /// `warpcore bench --tune` times every one of [`sm90_candidates`]); checked by
    /// [`check_sm90_tile`] (`Error::Unsupported` naming what is wrong), and `cluster`, when
    /// also given, must agree with its `cluster_m`. Ignored by the mma.sync kernel (one tiling).
    /// Without it, the plan's epilogue is the staged one unless `WARPCORE_FP8_EPILOGUE` is
    /// `tma-store`, and the plan's split-k (small problems) is dropped when
    /// `WARPCORE_FP8_SPLIT_K` is `off`.
    pub tile: Option<TileConfig>,
}

/// `WARPCORE_FP8_EPILOGUE=tma-store`: planned configurations take the TMA-store epilogue where
/// it fits (`MatmulFp8Problem::tma_store_fits`), which moves a whole program (the model, the
/// bench) onto it without a rebuild — for a GPU run whose `bench --tune` found it faster, until
/// the planner is refitted. Read once per process (the GEMM is on every layer's hot path).
/// The epilogue is built only with the `matmul-fp8-tuning` feature: without it, asking for it
/// here makes the planned wgmma GEMMs fail with `Error::Unsupported` rather than run without it.
fn tma_store_from_env() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WARPCORE_FP8_EPILOGUE").is_ok_and(|e| e == "tma-store"))
}

/// A planned configuration, without its k-slices when `WARPCORE_FP8_SPLIT_K=off` (a fallback,
/// should split-k or its programmatic-dependent reduction misbehave on some driver or tool,
/// until fixed). The variable is read once per process.
fn split_k_from_env(t: TileConfig) -> TileConfig {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("WARPCORE_FP8_SPLIT_K").is_ok_and(|e| e == "off"));
    if off {
        t.unsplit()
    } else {
        t
    }
}

/// Whether a pair of granularities is supported, and if so whether it is block-scaled.
pub fn scaling_mode(a: ScaleGranularity, b: ScaleGranularity) -> Option<bool> {
    use ScaleGranularity::*;
    match (a, b) {
        (PerTensor | PerRow, PerTensor | PerRow) => Some(false),
        (PerTensor | PerRow | Group128, Block128) | (Group128, PerTensor) => Some(true),
        _ => None,
    }
}

/// Checks an operand against `[rows, k]` and returns its scale strides (along rows, along k).
fn check_operand(op: &'static str, arg: &'static str, scale_arg: &'static str, dev: &Device, x: &Fp8Operand, rows: usize, k: usize) -> Result<(i64, i64)> {
    check_shape(op, arg, &x.data.shape(), &[rows, k])?;
    check_inner_dense(op, arg, &x.data.strides())?;
    check_shape(op, scale_arg, &x.scale.shape(), &x.granularity.scale_shape(rows, k))?;
    check_device(op, arg, dev, x.data.stream())?;
    check_device(op, scale_arg, dev, x.scale.stream())?;
    Ok(scale_strides(x.scale.shape(), x.scale.strides()))
}

/// `out = A · Bᵀ` with FP8 inputs, plus optional bias `[n]` and residual `[m, n]`.
///
/// a: `[m, k]` codes with scales per tensor / row / 1×128 group; b: `[n, k]` with scales per
/// tensor / row / 128×128 block; out `[m, n]` (bf16 or f32; bias and residual the same dtype).
/// Errors before any launch: shapes (`ShapeMismatch`), n or k not multiples of 128 or an
/// unsupported scale pair (`Unsupported`), rows not 16-byte aligned (`Misaligned`), k = 0 or
/// n = 0 (`Empty`). m = 0 is a no-op.
#[allow(clippy::too_many_arguments)]
pub fn matmul_fp8<O: DType>(
    dev: &Device,
    a: Fp8Operand,
    b: Fp8Operand,
    bias: Option<&TensorView<O, 1>>,
    residual: Option<&TensorView<O, 2>>,
    out: &mut TensorViewMut<O, 2>,
    cfg: MatmulFp8Config,
) -> Result<()> {
    gemm("matmul_fp8", dev, Operands::Fp8(a, b), None, bias, residual, out, cfg)
}

/// Grouped (MoE) FP8 GEMM: `groups = group_offsets.len() − 1` GEMMs in one launch. Group g
/// multiplies a's rows `group_offsets[g]..group_offsets[g + 1]` by b's rows `g·n..(g + 1)·n`
/// into the same rows of out (+ bias, + residual's same rows).
///
/// a: `[m, k]`, every group's rows in group order (moe_gather's output); b: `[groups · n, k]`,
/// the experts' weights stacked, with scales of that shape; group_offsets: `[groups + 1]` i32
/// on the device (moe_align's expert_offsets), read by the kernel, so nothing waits for them on
/// the host; bias: `[groups · n]`; residual and out: `[m, n]`. Rows of out outside every group
/// are not written. The offsets are only trusted as far as memory safety allows: the kernels
/// clamp them into `[0, m]` and make them non-decreasing. No cluster pairs, even for one group
/// (`cfg.cluster = Some(2)`, or a `cfg.tile` with pairs, is `Unsupported`), and no TMA-store
/// epilogue. Errors as [`matmul_fp8`], plus b's rows not a multiple of n (`ShapeMismatch`) and
/// an empty group_offsets (`Empty`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fp8_grouped<O: DType>(
    dev: &Device,
    a: Fp8Operand,
    b: Fp8Operand,
    group_offsets: &TensorView<i32, 1>,
    bias: Option<&TensorView<O, 1>>,
    residual: Option<&TensorView<O, 2>>,
    out: &mut TensorViewMut<O, 2>,
    cfg: MatmulFp8Config,
) -> Result<()> {
    gemm("matmul_fp8_grouped", dev, Operands::Fp8(a, b), Some(group_offsets), bias, residual, out, cfg)
}

/// Grouped (MoE) GEMM of bf16 operands: [`matmul_fp8_grouped`] without scales. Group g
/// multiplies a's rows `group_offsets[g]..group_offsets[g + 1]` by b's rows `g·n..(g + 1)·n`
/// (the experts' stacked `[out_features, in_features]` weights) into the same rows of out
/// (+ bias `[groups · n]`'s rows of the group, + residual's same rows).
///
/// a `[m, k]` and b `[groups · n, k]` bf16, K-major, rows 16-byte aligned; out `[m, n]` bf16 or
/// f32 (bias and residual alike); f32 accumulation of the exact bf16 products. n and k need
/// only be multiples of 8. The offsets are read by the kernels, clamped into `[0, m]` and made
/// non-decreasing there; rows of out outside every group are not written. Errors before any
/// launch as [`matmul_fp8_grouped`] (n or k not a multiple of 8: `Unsupported`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped<O: DType>(
    dev: &Device,
    a: &TensorView<bf16, 2>,
    b: &TensorView<bf16, 2>,
    group_offsets: &TensorView<i32, 1>,
    bias: Option<&TensorView<O, 1>>,
    residual: Option<&TensorView<O, 2>>,
    out: &mut TensorViewMut<O, 2>,
    kernel: GemmKernel,
) -> Result<()> {
    let cfg = MatmulFp8Config { kernel, fast_accumulation: true, ..Default::default() };
    gemm("matmul_grouped", dev, Operands::Bf16(a, b), Some(group_offsets), bias, residual, out, cfg)
}

/// The two operand kinds the kernels take.
enum Operands<'v, 'a> {
    Fp8(Fp8Operand<'v, 'a>, Fp8Operand<'v, 'a>),
    Bf16(&'v TensorView<'a, bf16, 2>, &'v TensorView<'a, bf16, 2>),
}

/// Every op: one GEMM (`groups` None) or a grouped one, of e4m3 or bf16 operands.
#[allow(clippy::too_many_arguments)]
fn gemm<O: DType>(
    op: &'static str,
    dev: &Device,
    operands: Operands,
    groups: Option<&TensorView<i32, 1>>,
    bias: Option<&TensorView<O, 1>>,
    residual: Option<&TensorView<O, 2>>,
    out: &mut TensorViewMut<O, 2>,
    cfg: MatmulFp8Config,
) -> Result<()> {
    check_dtype::<O>(op, &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F32])?;
    let ((a_shape, a_strides, a_stream), (b_shape, b_strides, b_stream)) = match &operands {
        Operands::Fp8(a, b) => ((a.data.shape(), a.data.strides(), a.data.stream()), (b.data.shape(), b.data.strides(), b.data.stream())),
        Operands::Bf16(a, b) => ((a.shape(), a.strides(), a.stream()), (b.shape(), b.strides(), b.stream())),
    };
    let fp8 = matches!(operands, Operands::Fp8(..));
    let elem = if fp8 { 1 } else { 2 };
    let [m, k] = a_shape;
    let b_rows = b_shape[0];
    // Grouped: n comes from out, and b stacks one [n, k] per group.
    let (n, num_groups) = match groups {
        None => (b_rows, 1),
        Some(g) => {
            let num_groups = g.shape()[0].saturating_sub(1);
            super::check_nonempty(op, "group_offsets (groups + 1, at least 2)", &[num_groups])?;
            check_inner_dense(op, "group_offsets", &g.strides())?;
            check_device(op, "group_offsets", dev, g.stream())?;
            let n = out.shape()[1];
            // Saturated: a product past usize is no row count b can have (its rows are refused below).
            check_shape(op, "b", &[b_rows, k], &[num_groups.saturating_mul(n), k])?;
            (n, num_groups)
        }
    };
    super::check_nonempty(op, "a (k)", &[k])?;
    super::check_nonempty(op, "b (n)", &[n])?;
    let dims = if fp8 { [("k (a multiple of 128)", k, FP8_BLOCK), ("n (a multiple of 128)", n, FP8_BLOCK)] } else { [("k (a multiple of 8)", k, 8), ("n (a multiple of 8)", n, 8)] };
    for (what, v, multiple) in dims {
        if v % multiple != 0 {
            return Err(Error::Unsupported { op, what, value: v.to_string() });
        }
    }
    // e4m3: the scale pair and each scale's strides; bf16: unscaled.
    let (block_scaled, (sa_m, sa_k), (sb_n, sb_k)) = match &operands {
        Operands::Fp8(a, b) => {
            let block_scaled = scaling_mode(a.granularity, b.granularity).ok_or_else(|| Error::Unsupported {
                op,
                what: "scale granularities (a: tensor/row/group128, b: tensor/row/block128; b per row only without groups)",
                value: format!("a {}, b {}", a.granularity.name(), b.granularity.name()),
            })?;
            (block_scaled, check_operand(op, "a", "a_scale", dev, a, m, k)?, check_operand(op, "b", "b_scale", dev, b, b_rows, k)?)
        }
        Operands::Bf16(..) => {
            check_shape(op, "b", &b_shape, &[b_rows, k])?;
            for (arg, strides, stream) in [("a", a_strides, a_stream), ("b", b_strides, b_stream)] {
                check_inner_dense(op, arg, &strides)?;
                check_device(op, arg, dev, stream)?;
            }
            (false, (0, 0), (0, 0))
        }
    };
    check_shape(op, "out", &out.shape(), &[m, n])?;
    check_inner_dense(op, "out", &out.strides())?;
    check_no_overlap(op, "out", &out.shape(), &out.strides())?;
    check_device(op, "out", dev, out.stream())?;
    if let Some(v) = bias {
        check_shape(op, "bias", &v.shape(), &[b_rows])?;
        check_inner_dense(op, "bias", &v.strides())?;
        check_device(op, "bias", dev, v.stream())?;
    }
    if let Some(v) = residual {
        check_shape(op, "residual", &v.shape(), &[m, n])?;
        check_inner_dense(op, "residual", &v.strides())?;
        check_device(op, "residual", dev, v.stream())?;
    }
    for (what, v) in [("m + 256 (the last tile's end)", m.saturating_add(256)), ("n (bytes)", n.saturating_mul(2)), ("k (bytes)", k.saturating_mul(2)), ("b rows (groups · n)", b_rows)] {
        check_fits_i32(op, what, v)?;
    }
    let sm90 = match cfg.kernel {
        GemmKernel::Auto => dev.info().compute_capability == (9, 0),
        GemmKernel::MmaSync => false,
        GemmKernel::Wgmma if dev.info().compute_capability == (9, 0) => true,
        GemmKernel::Wgmma => {
            let (maj, min) = dev.info().compute_capability;
            return Err(Error::Unsupported { op, what: "wgmma kernel (compute capability 9.0 only)", value: format!("sm_{maj}{min}") });
        }
    };
    if m == 0 {
        return Ok(());
    }
    // bf16 operands: one f32 accumulator over all of k (their products are exact).
    let accumulation = Accumulation::of(block_scaled, cfg.fast_accumulation || !fp8);
    let input = if fp8 { GemmInput::E4m3 } else { GemmInput::Bf16 };
    // A grouped GEMM counts its groups (one included: no pairs); one GEMM has none.
    let (out_bf16, has_residual) = (O::TAG == ffi::wc_dtype_WC_BF16, residual.is_some());
    let problem = MatmulFp8Problem { m, n, k, accumulation, groups: if groups.is_some() { num_groups } else { 0 }, input, out_bf16, residual: has_residual };
    if groups.is_some() && cfg.cluster.is_some_and(|c| c != 1) {
        return Err(Error::Unsupported { op, what: "cluster (grouped GEMMs have no pairs)", value: format!("{:?}", cfg.cluster) });
    }
    let tiles = match (sm90, cfg.tile) {
        (false, _) => split_k_from_env(plan_sm80(&problem, dev.info().sm_count as usize)),
        (true, Some(t)) => {
            if cfg.cluster.is_some_and(|c| c != t.cluster_m) {
                return Err(Error::Unsupported { op, what: "cluster (must agree with tile.cluster_m)", value: format!("{:?} with {t:?}", cfg.cluster) });
            }
            check_sm90_tile(&problem, &t).map_err(|what| Error::Unsupported { op, what, value: format!("{t:?}") })?;
            t
        }
        (true, None) => {
            let t = plan_sm90(&problem, dev.info().sm_count as usize, cfg.cluster).ok_or_else(|| Error::Unsupported {
                op,
                what: "cluster (1, or 2 where the plan has 128-row tiles)",
                value: format!("{:?}", cfg.cluster),
            })?;
            let t = split_k_from_env(t);
            let tma_store = tma_store_from_env();
            if tma_store && !TUNING_BUILT {
                return Err(Error::Unsupported { op, what: "WARPCORE_FP8_EPILOGUE (the TMA-store epilogue is built only with the `matmul-fp8-tuning` feature)", value: "tma-store".into() });
            }
            TileConfig { tma_store: tma_store && t.k_splits == 1 && problem.tma_store_fits(t.block_m, t.block_n), ..t }
        }
    };

    let stream = dev.stream();
    // Operand pointers (scales: 0 for bf16) and their guards.
    let ((a_ptr, b_ptr, sa_ptr, sb_ptr), _guards) = match &operands {
        Operands::Fp8(a, b) => {
            let (ga, gb, gsa, gsb) = (a.data.device_ptr(stream), b.data.device_ptr(stream), a.scale.device_ptr(stream), b.scale.device_ptr(stream));
            ((ga.0, gb.0, gsa.0, gsb.0), (Some((ga.1, gb.1)), Some((gsa.1, gsb.1)), None))
        }
        Operands::Bf16(a, b) => {
            let (ga, gb) = (a.device_ptr(stream), b.device_ptr(stream));
            ((ga.0, gb.0, 0, 0), (None, None, Some((ga.1, gb.1))))
        }
    };
    let offsets_guard = groups.map(|v| v.device_ptr(stream));
    let bias_guard = bias.map(|v| v.device_ptr(stream));
    let res_guard = residual.map(|v| v.device_ptr(stream));
    // One row's stride is never used: the row's length stands in (a whole number of 16-byte
    // units, as the TMA maps need; the raw stride of a one-row view may be anything).
    let (lda, ldb, ldd) = (row_stride(m, a_strides[0], k), row_stride(b_rows, b_strides[0], k), row_stride(m, out.strides()[0], n));
    let ldr = residual.map_or(0, |v| row_stride(m, v.strides()[0], n));
    let (d_ptr, _gd) = out.device_ptr_mut(stream);
    if fp8 {
        check_rows_aligned::<u8>(op, "a", a_ptr, m, lda)?;
        check_rows_aligned::<u8>(op, "b", b_ptr, b_rows, ldb)?;
    } else {
        check_rows_aligned::<bf16>(op, "a", a_ptr, m, lda)?;
        check_rows_aligned::<bf16>(op, "b", b_ptr, b_rows, ldb)?;
    }
    check_rows_aligned::<O>(op, "out", d_ptr, m, ldd)?;
    let bias_ptr = bias_guard.as_ref().map_or(0, |(p, _)| *p);
    let res_ptr = res_guard.as_ref().map_or(0, |(p, _)| *p);
    if bias_guard.is_some() {
        check_rows_aligned::<O>(op, "bias", bias_ptr, 1, 0)?;
    }
    if res_guard.is_some() {
        check_rows_aligned::<O>(op, "residual", res_ptr, m, ldr)?;
    }
    let mut p = ffi::wc_matmul_fp8_params {
        a: a_ptr as *const _,
        b: b_ptr as *const _,
        a_scale: sa_ptr as *const f32,
        b_scale: sb_ptr as *const f32,
        bias: bias_ptr as *const _,
        residual: res_ptr as *const _,
        d: d_ptr as *mut _,
        group_offsets: offsets_guard.as_ref().map_or(0, |(p, _)| *p) as *const i32,
        num_groups: num_groups as i64,
        m: m as i64,
        n: n as i64,
        k: k as i64,
        lda: lda as i64,
        ldb: ldb as i64,
        ldr: ldr as i64,
        ldd: ldd as i64,
        a_scale_stride_m: sa_m,
        a_scale_stride_k: sa_k,
        b_scale_stride_n: sb_n,
        b_scale_stride_k: sb_k,
        block_scaled: block_scaled as i32,
        fast_accum: (accumulation == Accumulation::Fast) as i32,
        block_m: tiles.block_m as i32,
        block_n: tiles.block_n as i32,
        group_m: tiles.group_m as i32,
        num_ctas: tiles.num_ctas.min(i32::MAX as usize) as i32,
        cluster_m: tiles.cluster_m as i32,
        out_dtype: O::TAG,
        in_dtype: if fp8 { ffi::wc_dtype_WC_E4M3 } else { ffi::wc_dtype_WC_BF16 },
        tma_store: tiles.tma_store as i32,
        k_splits: tiles.k_splits as i32,
        ..Default::default()
    };
    if sm90 {
        dev.context().bind_to_thread()?;
        p.tma_a = encode_tma(a_ptr, &tma_box(m, k * elem, lda * elem, tiles.block_m))?;
        // A cluster's CTAs each load block_n / cluster_m rows of the shared B tile.
        p.tma_b = encode_tma(b_ptr, &tma_box(b_rows, k * elem, ldb * elem, tiles.block_n / tiles.cluster_m))?;
        if tiles.tma_store {
            // D as bytes, boxes of 64 bf16 columns × 64 rows (a consumer's half of a tile).
            p.tma_d = encode_tma(d_ptr, &tma_box(m, n * 2, ldd * 2, 64))?;
        }
    }
    // SAFETY: shapes, strides, 16-byte alignment of every row the kernels move in vectors or
    // by TMA, the scale shapes (so every strided scale read is inside its view), dtype,
    // contexts and the i32 limits were validated above; the tile config comes from the
    // planner or passed check_sm90_tile (a configuration the launcher has; it refuses
    // others). The kernels clamp the group offsets into [0, m], so any offset values stay
    // inside a, out and residual. Guards live until the launch is queued.
    let run = |p: &ffi::wc_matmul_fp8_params| {
        launch(op, dev, |s| unsafe {
            if sm90 {
                ffi::wc_matmul_fp8_sm90(p, s)
            } else {
                ffi::wc_matmul_fp8_sm80(p, s)
            }
        })
    };
    let r = if tiles.k_splits > 1 {
        // Split-k's partials go to the Device's workspace (split_k_fits checked that they fit),
        // held while both of its launches are queued; nothing in it is read before written.
        dev.with_scratch(SPLIT_K_OP, SPLIT_K_WORKSPACE_FLOATS, |ws_ptr| {
            p.workspace = ws_ptr as *mut f32;
            p.workspace_floats = SPLIT_K_WORKSPACE_FLOATS as i64;
            run(&p)
        })
    } else {
        run(&p)
    };
    drop((offsets_guard, bias_guard, res_guard));
    r
}

/// The name of split-k's workspace among a `Device`'s scratch buffers (f32 partials, kept as
/// u32 words).
const SPLIT_K_OP: &str = "matmul_fp8 split-k";
