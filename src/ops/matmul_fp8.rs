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

use super::quant::{scale_strides, ScaleGranularity, FP8_BLOCK};
use super::{check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_rows_aligned, check_shape, launch};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut, F8E4M3};
use cudarc::driver::sys;

/// One GEMM operand: e4m3 codes `[rows, k]` (K-major) and their scales, a `[.., ..]` view of
/// `granularity.scale_shape(rows, k)` with any strides (a size-1 dimension broadcasts).
#[derive(Clone, Copy, Debug)]
pub struct Fp8Operand<'v, 'a> {
    pub data: &'v TensorView<'a, F8E4M3, 2>,
    pub scale: &'v TensorView<'a, f32, 2>,
    pub granularity: ScaleGranularity,
}

/// Which kernel runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fp8GemmKernel {
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
    pub kernel: Fp8GemmKernel,
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
}

/// How the wgmma kernel accumulates over k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// One tensor-core accumulator over all of k; scales in the epilogue.
    Fast,
    /// Each 128-k partial product added into f32 registers; scales in the epilogue.
    Promoted,
    /// Each 128-k partial product times its block scales, added into f32 registers.
    BlockScaled,
}

/// The problem, independent of how it is tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulFp8Problem {
    /// Rows of A (all groups together when grouped).
    pub m: usize,
    /// Columns of D (per group).
    pub n: usize,
    pub k: usize,
    pub accumulation: Accumulation,
    /// 1 for one GEMM; the number of groups of a grouped GEMM, whose sizes the host does not know.
    pub groups: usize,
}

impl MatmulFp8Problem {
    /// An upper bound on the m-tiles of `block_m` rows, over every split of m rows into the
    /// groups (each group's last tile may be partial): ceil(m / block_m) + min(groups, m) − 1,
    /// exact for one group. The kernels use the same bound (`max_units`, matmul_fp8.cuh).
    pub fn m_tiles(&self, block_m: usize) -> usize {
        if self.m == 0 {
            return 0;
        }
        self.m.div_ceil(block_m) + self.groups.max(1).min(self.m) - 1
    }
}

/// How a problem is tiled and scheduled (the kernels' template choice plus the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    pub block_m: usize,
    pub block_n: usize,
    /// Tile order: groups of `group_m` m-tiles, m fastest inside a group (L2 reuse).
    pub group_m: usize,
    /// CTAs launched (the wgmma kernel is persistent: at most one per SM), whole clusters.
    pub num_ctas: usize,
    /// CTAs per cluster along m (wgmma kernel): 1, or 2 for a pair of 128-row tiles sharing
    /// one B tile, each CTA loading half of it by TMA multicast (half the L2→SM traffic for B).
    pub cluster_m: usize,
}

/// (block_m, block_n, accumulation) the wgmma kernel is built for (matmul_fp8_sm90.cu):
/// promotion keeps a second accumulator set, so only the fast mode has 256-column tiles. Every
/// 128-row configuration is also built as cluster pairs.
pub const SM90_TILES: &[(usize, usize, Accumulation)] = &[
    (128, 256, Accumulation::Fast),
    (128, 128, Accumulation::Fast),
    (64, 128, Accumulation::Fast),
    (128, 128, Accumulation::Promoted),
    (64, 128, Accumulation::Promoted),
    (128, 128, Accumulation::BlockScaled),
    (64, 128, Accumulation::BlockScaled),
];
/// The mma.sync kernel's one tile.
pub const SM80_TILE: (usize, usize) = (128, 128);
/// m-tiles per group in the tile order.
const GROUP_M: usize = 8;

/// Relative tensor-core efficiency the planner assumes per tile shape: 128×256 (two consumer
/// warpgroups of m64n256) is the reference; 128×128 loses to the smaller wgmma N and more B
/// traffic per FLOP; a 64-row tile has one consumer warpgroup, which cannot keep the tensor
/// cores busy on its own. Predictions to check on the H200 (docs/matmul_fp8.md).
fn tile_efficiency(block_m: usize, block_n: usize) -> f64 {
    match (block_m, block_n) {
        (128, 256) => 1.0,
        (128, 128) => 0.9,
        _ => 0.6,
    }
}

/// The gain the planner assumes for a cluster pair over two lone CTAs: a pair reads its B tile
/// from L2 once instead of twice (32 instead of 48 KB per 128×256 stage and CTA), which matters
/// where L2→SM bandwidth limits the large shapes. A prediction (docs/matmul_fp8.md), to be
/// replaced by the H200's number: `warpcore bench` times the bar shapes with and without pairs.
/// Grouped GEMMs have no pairs (a pair's tiles could belong to different groups).
const PAIR_GAIN: f64 = 1.1;

/// Picks the wgmma kernel's tile for a problem on a GPU with `sm_count` SMs: the configuration
/// with the least modelled time `waves · block_m · block_n / efficiency`, where waves =
/// ceil(units / slots) (so small-m problems take 64-row tiles and more CTAs, large ones the
/// 128×256 tile). A 128-row tile may run as cluster pairs (units of two m-tiles, SMs / 2
/// slots, efficiency × [`PAIR_GAIN`]): pairs win unless they cost a wave (an odd m-tile count
/// leaves half a pair idle). `cluster` forces the pair choice (see [`MatmulFp8Config`]); None
/// when forcing pairs leaves no configuration. Ties go to the larger tile (listed first).
pub fn plan_sm90(p: &MatmulFp8Problem, sm_count: usize, cluster: Option<usize>) -> Option<TileConfig> {
    let sms = sm_count.max(1);
    let mut best: Option<(f64, TileConfig)> = None;
    for &(bm, bn, acc) in SM90_TILES {
        if acc != p.accumulation || p.n % bn != 0 {
            continue;
        }
        let m_tiles = p.m_tiles(bm).max(1);
        for cm in [1, 2] {
            let allowed = match cluster {
                Some(c) => c == cm,
                None => cm == 1 || m_tiles >= 2,
            };
            if !allowed || (cm == 2 && (bm != 128 || sms < 2 || p.groups > 1)) {
                continue;
            }
            let units = m_tiles.div_ceil(cm) * (p.n / bn).max(1);
            let slots = sms / cm;
            let gain = if cm == 2 { PAIR_GAIN } else { 1.0 };
            let cost = units.div_ceil(slots) as f64 * (bm * bn) as f64 / (tile_efficiency(bm, bn) * gain);
            if best.is_none_or(|(c, _)| cost < c) {
                let t = TileConfig { block_m: bm, block_n: bn, group_m: GROUP_M / cm, num_ctas: units.min(slots) * cm, cluster_m: cm };
                best = Some((cost, t));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// The mma.sync kernel's plan: its one tile, one CTA per tile (grouped: per tile of the bound,
/// the CTAs past the groups' tiles exit at once).
pub fn plan_sm80(p: &MatmulFp8Problem) -> TileConfig {
    let (bm, bn) = SM80_TILE;
    TileConfig { block_m: bm, block_n: bn, group_m: GROUP_M, num_ctas: p.m_tiles(bm) * (p.n / bn), cluster_m: 1 }
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

/// What `cuTensorMapEncodeTiled` gets for one operand: a 2-D uint8 tensor `{k, rows}` (inner
/// dimension first) with the given row stride in bytes, boxes of `{128, box_rows}` bytes,
/// 128-byte swizzle (the layout the wgmma descriptors assume), zero fill out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmaBox {
    pub dims: [u64; 2],
    pub row_stride_bytes: u64,
    pub box_dims: [u32; 2],
}

pub fn tma_box(rows: usize, k: usize, row_stride_bytes: usize, box_rows: usize) -> TmaBox {
    TmaBox { dims: [k as u64, rows as u64], row_stride_bytes: row_stride_bytes as u64, box_dims: [FP8_BLOCK as u32, box_rows as u32] }
}

/// Encodes a tensor map (driver API through cudarc; needs a context on this thread).
fn encode_tma(ptr: u64, b: &TmaBox) -> Result<ffi::wc_tensor_map> {
    use sys::{CUtensorMapDataType as D, CUtensorMapFloatOOBfill as F, CUtensorMapInterleave as I, CUtensorMapL2promotion as L, CUtensorMapSwizzle as S};
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let strides = [b.row_stride_bytes];
    let element_strides = [1u32, 1];
    // SAFETY: every array has the rank's length (2; strides 1), `map` is a writable
    // CUtensorMap, the address and stride were checked 16-byte aligned and the dims to fit.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            D::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            2,
            ptr as *mut std::ffi::c_void,
            b.dims.as_ptr(),
            strides.as_ptr(),
            b.box_dims.as_ptr(),
            element_strides.as_ptr(),
            I::CU_TENSOR_MAP_INTERLEAVE_NONE,
            S::CU_TENSOR_MAP_SWIZZLE_128B,
            L::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            F::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    }
    .result()?;
    Ok(ffi::wc_tensor_map { opaque: map.opaque })
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
    gemm("matmul_fp8", dev, a, b, None, bias, residual, out, cfg)
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
/// clamp them into `[0, m]` and make them non-decreasing. No cluster pairs
/// (`cfg.cluster = Some(2)` is `Unsupported`). Errors as [`matmul_fp8`], plus b's rows not a
/// multiple of n (`ShapeMismatch`) and an empty group_offsets (`Empty`).
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
    gemm("matmul_fp8_grouped", dev, a, b, Some(group_offsets), bias, residual, out, cfg)
}

/// Both ops: one GEMM (`groups` None) or a grouped one.
#[allow(clippy::too_many_arguments)]
fn gemm<O: DType>(
    op: &'static str,
    dev: &Device,
    a: Fp8Operand,
    b: Fp8Operand,
    groups: Option<&TensorView<i32, 1>>,
    bias: Option<&TensorView<O, 1>>,
    residual: Option<&TensorView<O, 2>>,
    out: &mut TensorViewMut<O, 2>,
    cfg: MatmulFp8Config,
) -> Result<()> {
    check_dtype::<O>(op, &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F32])?;
    let [m, k] = a.data.shape();
    let b_rows = b.data.shape()[0];
    // Grouped: n comes from out, and b stacks one [n, k] per group.
    let (n, num_groups) = match groups {
        None => (b_rows, 1),
        Some(g) => {
            let num_groups = g.shape()[0].saturating_sub(1);
            super::check_nonempty(op, "group_offsets (groups + 1, at least 2)", &[num_groups])?;
            check_inner_dense(op, "group_offsets", &g.strides())?;
            check_device(op, "group_offsets", dev, g.stream())?;
            let n = out.shape()[1];
            check_shape(op, "b", &[b_rows, k], &[num_groups * n, k])?;
            (n, num_groups)
        }
    };
    super::check_nonempty(op, "a (k)", &[k])?;
    super::check_nonempty(op, "b (n)", &[n])?;
    for (what, v) in [("k (a multiple of 128)", k), ("n (a multiple of 128)", n)] {
        if v % FP8_BLOCK != 0 {
            return Err(Error::Unsupported { op, what, value: v.to_string() });
        }
    }
    let block_scaled = scaling_mode(a.granularity, b.granularity).ok_or_else(|| Error::Unsupported {
        op,
        what: "scale granularities (a: tensor/row/group128, b: tensor/row/block128; b per row only without groups)",
        value: format!("a {}, b {}", a.granularity.name(), b.granularity.name()),
    })?;
    let (sa_m, sa_k) = check_operand(op, "a", "a_scale", dev, &a, m, k)?;
    let (sb_n, sb_k) = check_operand(op, "b", "b_scale", dev, &b, b_rows, k)?;
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
    for (what, v) in [("m + 256 (the last tile's end)", m + 256), ("n", n), ("k", k), ("b rows (groups · n)", b_rows)] {
        check_fits_i32(op, what, v)?;
    }
    let sm90 = match cfg.kernel {
        Fp8GemmKernel::Auto => dev.info().compute_capability == (9, 0),
        Fp8GemmKernel::MmaSync => false,
        Fp8GemmKernel::Wgmma if dev.info().compute_capability == (9, 0) => true,
        Fp8GemmKernel::Wgmma => {
            let (maj, min) = dev.info().compute_capability;
            return Err(Error::Unsupported { op, what: "wgmma kernel (compute capability 9.0 only)", value: format!("sm_{maj}{min}") });
        }
    };
    if m == 0 {
        return Ok(());
    }
    let accumulation = match (block_scaled, cfg.fast_accumulation) {
        (true, _) => Accumulation::BlockScaled,
        (false, true) => Accumulation::Fast,
        (false, false) => Accumulation::Promoted,
    };
    let problem = MatmulFp8Problem { m, n, k, accumulation, groups: num_groups };
    if groups.is_some() && cfg.cluster.is_some_and(|c| c != 1) {
        return Err(Error::Unsupported { op, what: "cluster (grouped GEMMs have no pairs)", value: format!("{:?}", cfg.cluster) });
    }
    let tiles = if sm90 {
        plan_sm90(&problem, dev.info().sm_count as usize, cfg.cluster).ok_or_else(|| Error::Unsupported {
            op,
            what: "cluster (1, or 2 where the plan has 128-row tiles)",
            value: format!("{:?}", cfg.cluster),
        })?
    } else {
        plan_sm80(&problem)
    };

    let stream = dev.stream();
    let (a_ptr, _ga) = a.data.device_ptr(stream);
    let (b_ptr, _gb) = b.data.device_ptr(stream);
    let (sa_ptr, _gsa) = a.scale.device_ptr(stream);
    let (sb_ptr, _gsb) = b.scale.device_ptr(stream);
    let offsets_guard = groups.map(|v| v.device_ptr(stream));
    let bias_guard = bias.map(|v| v.device_ptr(stream));
    let res_guard = residual.map(|v| v.device_ptr(stream));
    let (lda, ldb, ldd) = (a.data.strides()[0], b.data.strides()[0], out.strides()[0]);
    let ldr = residual.map_or(0, |v| v.strides()[0]);
    let (d_ptr, _gd) = out.device_ptr_mut(stream);
    check_rows_aligned::<u8>(op, "a", a_ptr, m, lda)?;
    check_rows_aligned::<u8>(op, "b", b_ptr, b_rows, ldb)?;
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
        ..Default::default()
    };
    if sm90 {
        dev.context().bind_to_thread()?;
        p.tma_a = encode_tma(a_ptr, &tma_box(m, k, lda, tiles.block_m))?;
        // A cluster's CTAs each load block_n / cluster_m rows of the shared B tile.
        p.tma_b = encode_tma(b_ptr, &tma_box(b_rows, k, ldb, tiles.block_n / tiles.cluster_m))?;
    }
    // SAFETY: shapes, strides, 16-byte alignment of every row the kernels move in vectors or
    // by TMA, the scale shapes (so every strided scale read is inside its view), dtype,
    // contexts and the i32 limits were validated above; the tile config comes from the
    // planner (a configuration the launcher has). The kernels clamp the group offsets into
    // [0, m], so any offset values stay inside a, out and residual. Guards live until the
    // launch is queued.
    let r = launch(op, dev, |s| unsafe {
        if sm90 {
            ffi::wc_matmul_fp8_sm90(&p, s)
        } else {
            ffi::wc_matmul_fp8_sm80(&p, s)
        }
    });
    drop((offsets_guard, bias_guard, res_guard));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScaleGranularity::{Block128, Group128, PerRow, PerTensor};

    fn problem(m: usize, n: usize, k: usize, accumulation: Accumulation) -> MatmulFp8Problem {
        MatmulFp8Problem { m, n, k, accumulation, groups: 1 }
    }
    use Accumulation::*;

    fn plan(m: usize, n: usize, k: usize, acc: Accumulation) -> TileConfig {
        plan_sm90(&problem(m, n, k, acc), 132, None).unwrap()
    }

    #[test]
    fn the_planner_picks_the_expected_tiles_for_the_bench_shapes() {
        // 4096×7168: 32 × 28 = 896 tiles of 128×256; as pairs 448 units over 66 slots: 6.8
        // waves either way, so pairs.
        let t = plan(4096, 7168, 2048, Fast);
        assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m, t.group_m), (128, 256, 132, 2, 4));
        let t = plan(8192, 8192, 8192, Fast);
        assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 256, 2));
        let t = plan(4096, 7168, 2048, Promoted);
        assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 128, 2));
        // Small m: 64-row tiles fill more SMs (2 × 56 = 112 CTAs), no clusters.
        let t = plan(128, 7168, 2048, Fast);
        assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m), (64, 128, 112, 1));
        let t = plan(1, 7168, 2048, Promoted);
        assert_eq!((t.block_m, t.block_n, t.cluster_m), (64, 128, 1));
        let t = plan(4096, 7168, 16384, BlockScaled);
        assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m), (128, 128, 132, 2));
        // Forced: no pairs, or pairs where the plan would not have them.
        let t = plan_sm90(&problem(4096, 7168, 2048, Fast), 132, Some(1)).unwrap();
        assert_eq!((t.block_m, t.block_n, t.num_ctas, t.cluster_m, t.group_m), (128, 256, 132, 1, 8));
        let t = plan_sm90(&problem(128, 7168, 2048, Fast), 132, Some(2)).unwrap();
        assert_eq!((t.block_m, t.cluster_m), (128, 2));
        assert_eq!(plan_sm90(&problem(128, 7168, 2048, Fast), 132, Some(3)), None);
        assert_eq!(plan_sm90(&problem(128, 7168, 2048, Fast), 1, Some(2)), None);
    }

    #[test]
    fn fast_accumulation_pairs_128_wide_tiles_where_256_does_not_divide_n() {
        // n = 3 · 128: no 128×256 tile; the 128×128 fast tile runs as pairs (built).
        let t = plan(4096, 384, 2048, Fast);
        assert_eq!((t.block_m, t.block_n, t.cluster_m), (128, 128, 2));
    }

    #[test]
    fn pairs_are_dropped_where_they_cost_a_wave() {
        // 3 m-tiles × 44 n-tiles = 132 tiles: one wave alone; as pairs 2 × 44 = 88 units over
        // 66 slots: two waves.
        let t = plan(384, 44 * 128, 4096, Promoted);
        assert_eq!((t.block_m, t.cluster_m, t.num_ctas), (128, 1, 132));
    }

    #[test]
    fn every_plan_is_a_built_configuration_that_divides_n() {
        for m in [1, 7, 64, 128, 129, 1000, 4096, 100_000] {
            for n in [128, 384, 1024, 7168, 18432] {
                for acc in [Fast, Promoted, BlockScaled] {
                    for sms in [1, 8, 78, 132] {
                        for cluster in [None, Some(1), Some(2)] {
                            let Some(t) = plan_sm90(&problem(m, n, 4096, acc), sms, cluster) else {
                                assert_eq!((cluster, sms), (Some(2), 1), "{m} {n} {acc:?}");
                                continue;
                            };
                            assert!(SM90_TILES.contains(&(t.block_m, t.block_n, acc)), "{m} {n} {acc:?}: {t:?}");
                            assert_eq!(n % t.block_n, 0);
                            assert!(t.cluster_m == 1 || (t.cluster_m == 2 && t.block_m == 128), "{t:?}");
                            assert!(cluster.is_none_or(|c| c == t.cluster_m));
                            let units = m.div_ceil(t.block_m).div_ceil(t.cluster_m) * (n / t.block_n);
                            assert_eq!(t.num_ctas % t.cluster_m, 0);
                            assert!(t.num_ctas >= t.cluster_m && t.num_ctas / t.cluster_m <= units.min(sms / t.cluster_m), "{t:?}");
                            assert!(acc == Fast || t.block_n == 128);
                        }
                    }
                }
                let t = plan_sm80(&problem(m, n, 256, Promoted));
                assert_eq!((t.block_m, t.block_n, t.num_ctas), (128, 128, m.div_ceil(128) * (n / 128)));
            }
        }
    }

    /// Every unit through the C side (wc_matmul_fp8_tile: the walk the kernels run), as
    /// (m0, m_end, n0, b0), until it reports the end.
    fn walk(p: &ffi::wc_matmul_fp8_params) -> Vec<[i64; 4]> {
        let mut units = Vec::new();
        loop {
            let mut t = [0i64; 4];
            let [a, b, c, d] = &mut t;
            // SAFETY: p is a valid params struct whose group_offsets (if any) are host memory
            // of num_groups + 1 values; the outputs are writable.
            if unsafe { ffi::wc_matmul_fp8_tile(p, units.len() as i64, a, b, c, d) } != 0 {
                return units;
            }
            units.push(t);
        }
    }

    #[test]
    fn the_tile_order_is_a_permutation_grouped_along_m() {
        // With cluster_m = 2 the units are the pairs' (m counts pairs of block_m rows).
        for (m, n, bm, bn, group, cluster) in
            [(1000, 7168, 128, 256, 8, 1), (129, 384, 64, 128, 8, 0), (4096, 1024, 128, 128, 3, 1), (1, 128, 64, 128, 8, 1), (1000, 7168, 128, 256, 4, 2), (129, 384, 128, 128, 4, 2)]
        {
            let p = ffi::wc_matmul_fp8_params { m, n, block_m: bm, block_n: bn, group_m: group, cluster_m: cluster, ..Default::default() };
            let rows = bm as i64 * cluster.max(1) as i64;
            let (mt, nt) = ((m + rows - 1) / rows, n / bn as i64);
            let units = walk(&p);
            assert_eq!(units.len() as i64, mt * nt);
            let mut seen = vec![false; (mt * nt) as usize];
            for (t, &[m0, m_end, n0, b0]) in units.iter().enumerate() {
                let (a, b) = (m0 / rows, n0 / bn as i64);
                assert_eq!((m0 % rows, n0 % bn as i64, m_end, b0), (0, 0, m, n0), "unit {t}");
                assert!((0..mt).contains(&a) && (0..nt).contains(&b), "unit {t} -> ({a}, {b})");
                assert!(!std::mem::replace(&mut seen[(a * nt + b) as usize], true), "tile ({a}, {b}) twice");
                if (t as i64) < group.min(mt as i32) as i64 {
                    assert_eq!((a, b), (t as i64, 0), "the first tiles walk m inside a group");
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn a_grouped_walk_covers_each_groups_rows_with_its_b_rows_once() {
        let (n, bm, bn) = (384i64, 64, 128);
        // Empty groups, a group of one row, one of exactly a tile, one across three tiles, rows
        // before the first group and after the last.
        let offsets = [3i32, 3, 4, 68, 68, 200, 200, 251];
        let p = ffi::wc_matmul_fp8_params { m: 260, n, block_m: bm, block_n: bn, group_m: 2, group_offsets: offsets.as_ptr(), num_groups: 7, ..Default::default() };
        let units = walk(&p);
        let problem = MatmulFp8Problem { m: 260, n: n as usize, k: 128, accumulation: Accumulation::Promoted, groups: 7 };
        assert!(units.len() <= problem.m_tiles(bm as usize) * 3);
        let mut written = vec![0u32; 260 * 3];
        for &[m0, m_end, n0, b0] in &units {
            let g = offsets.windows(2).position(|w| (w[0] as i64..w[1] as i64).contains(&m0)).expect("a tile starts inside a group");
            assert_eq!((m_end, b0), (offsets[g + 1] as i64, g as i64 * n + n0));
            for r in m0..(m0 + bm as i64).min(m_end) {
                written[r as usize * 3 + (n0 / bn as i64) as usize] += 1;
            }
        }
        for r in 0..260 {
            let inside = (3..251).contains(&r);
            assert!(written[r * 3..][..3].iter().all(|&w| w == inside as u32), "row {r}: {:?}", &written[r * 3..][..3]);
        }
        // 1 + 1 + 3 + 1 m-tiles of the four non-empty groups, 3 n-tiles each.
        assert_eq!(units.len(), 6 * 3);
    }

    #[test]
    fn bad_group_offsets_are_clamped_into_the_rows_and_never_overlap() {
        // Negative, decreasing and past-m offsets: groups become [0, 0), [0, 50), [50, 50),
        // [50, 100) — every row written at most once, nothing outside [0, m).
        let offsets = [-5i32, -1, 50, 20, 1000];
        let p = ffi::wc_matmul_fp8_params { m: 100, n: 128, block_m: 64, block_n: 128, group_m: 8, group_offsets: offsets.as_ptr(), num_groups: 4, ..Default::default() };
        let units = walk(&p);
        let got: Vec<(i64, i64, i64)> = units.iter().map(|&[m0, m_end, _, b0]| (m0, m_end, b0)).collect();
        assert_eq!(got, [(0, 50, 128), (50, 100, 3 * 128)]);
        let p = ffi::wc_matmul_fp8_params { num_groups: 0, ..p };
        assert!(walk(&p).is_empty(), "no groups is refused");
    }

    #[test]
    fn the_m_tile_bound_holds_for_every_split() {
        // Σ ceil(c_g / b) over splits of m rows into g groups never exceeds the bound, and a
        // split reaching it exists (the planner and the sm80 grid size by it).
        for (m, g, b) in [(1usize, 256usize, 64usize), (8, 256, 64), (1000, 8, 128), (128, 1, 128), (129, 2, 64), (64, 64, 64)] {
            let bound = MatmulFp8Problem { m, n: 128, k: 128, accumulation: Accumulation::Fast, groups: g }.m_tiles(b);
            let groups = g.min(m);
            // Worst split: groups − 1 groups of one row, the rest in one group.
            let worst = (groups - 1) + (m - (groups - 1)).div_ceil(b);
            assert!(worst <= bound, "{m} {g} {b}: {worst} > {bound}");
            let even: usize = (0..groups).map(|i| (m * (i + 1) / groups - m * i / groups).div_ceil(b)).sum();
            assert!(even <= bound, "{m} {g} {b}");
            if g == 1 {
                assert_eq!(bound, m.div_ceil(b));
            }
        }
    }

    #[test]
    fn the_launchers_reject_configurations_they_do_not_have_before_touching_the_gpu() {
        let mut p = ffi::wc_matmul_fp8_params { m: 128, n: 256, k: 256, block_m: 96, block_n: 128, group_m: 8, num_ctas: 1, out_dtype: ffi::wc_dtype_WC_BF16, ..Default::default() };
        let stream = std::ptr::null_mut();
        // SAFETY: every call below returns from its argument checks before any CUDA call.
        unsafe {
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_INVALID_ARG);
            p.block_m = 128;
            p.block_n = 256;
            p.block_scaled = 1; // block scales have no 256-wide tile
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            p.fast_accum = 0;
            p.block_scaled = 0; // nor does promoted accumulation
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            p.k = 200;
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
            p.out_dtype = ffi::wc_dtype_WC_F16;
            p.k = 256;
            p.block_n = 128;
            assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            p.out_dtype = ffi::wc_dtype_WC_BF16;
            p.cluster_m = 3; // pairs at most
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_INVALID_ARG);
            p.cluster_m = 2;
            p.block_m = 64; // pairs of 128-row tiles only
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_ERR_UNSUPPORTED);
            p.m = 0; // nothing to do
            assert_eq!(ffi::wc_matmul_fp8_sm90(&p, stream), ffi::WC_OK as i32);
            assert_eq!(ffi::wc_matmul_fp8_sm80(&p, stream), ffi::WC_OK as i32);
        }
    }

    #[test]
    fn scale_pairs() {
        assert_eq!(scaling_mode(PerTensor, PerTensor), Some(false));
        assert_eq!(scaling_mode(PerRow, PerRow), Some(false));
        assert_eq!(scaling_mode(PerRow, PerTensor), Some(false));
        assert_eq!(scaling_mode(Group128, Block128), Some(true));
        assert_eq!(scaling_mode(PerRow, Block128), Some(true));
        assert_eq!(scaling_mode(Group128, PerTensor), Some(true));
        assert_eq!(scaling_mode(Group128, PerRow), None);
        assert_eq!(scaling_mode(Block128, Block128), None);
        assert_eq!(scaling_mode(PerTensor, Group128), None);
    }

    #[test]
    fn tma_boxes_cover_one_swizzle_row_of_k() {
        let b = tma_box(1000, 7168, 7168, 128);
        assert_eq!(b, TmaBox { dims: [7168, 1000], row_stride_bytes: 7168, box_dims: [128, 128] });
        // 128 bytes of e4m3 per box row: exactly the 128-byte swizzle span, and one k-block.
        assert_eq!(b.box_dims[0] as usize, FP8_BLOCK);
        assert_eq!(tma_box(1, 256, 512, 64).box_dims, [128, 64]);
        // The params struct carries 128-byte aligned tensor maps (CUtensorMap's alignment).
        assert_eq!(std::mem::align_of::<ffi::wc_tensor_map>(), 128);
        assert_eq!(std::mem::size_of::<ffi::wc_tensor_map>(), std::mem::size_of::<sys::CUtensorMap>());
    }
}
