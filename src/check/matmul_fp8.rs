//! FP8 GEMM: quantize random operands on the host (magnitudes over many decades, so every scale
//! layout matters), run `matmul_fp8` on the GPU into a NaN-poisoned output with padded row
//! strides, and compare with `reference::matmul_fp8` (f64 on the dequantized inputs).
//!
//! Error model (the per-element bound): the output rounding, `2⁻⁸·|ref|` for bf16 and
//! `2⁻²²·|ref|` for f32, plus the accumulation error relative to `Σ_k |a·b|`:
//! * Hopper's FP8 wgmma keeps ~13 mantissa bits when it adds a k32 step into its accumulator
//!   (truncation). Promoted / block-scaled accumulation adds 4 such steps (k = 128) per f32
//!   promotion: `2⁻¹¹·Σ|a·b|`. Fast accumulation runs all k/32 steps in the tensor core:
//!   `(k/32)·2⁻¹²·Σ|a·b|` (twice the worst truncation of each step).
//! * The mma.sync kernel multiplies exact f16 values with f32 accumulation: within the
//!   promoted bound.
//!
//! Relative Frobenius limits: bf16 2⁻⁸, f32 2⁻¹⁰; fast accumulation `(k/32)·2⁻¹⁴` when larger
//! (the expected systematic shrink of a truncating accumulator, DeepSeek-V3 §3.5.2), and twice
//! that for each row alone (operand rows differ by decades, so one wrong row is invisible in the
//! whole output's norm; a modelled 13-bit truncating accumulator at k = 8192 gives 2.4e-3 against
//! 1.6e-2, `fast_accumulation_tolerance_passes_truncation_and_fails_a_wrong_row`). These are
//! predictions; the H200 run confirms or tightens them (docs/matmul_fp8.md).

use super::quant::{gather_scale, scale_storage, ScaleLayout};
use super::{compare_bounded, compare_exact, compare_row_frobenius, gather_rows, outside_rows, CheckResult, Rng};
use crate::ops::matmul_fp8::{matmul_fp8, matmul_fp8_grouped, Fp8Operand, GemmKernel, MatmulFp8Config, TileConfig};
use crate::ops::quant::ScaleGranularity;
use crate::reference::matmul_fp8 as reference;
use crate::reference::quant::{quantize_f32, Quantized};
use crate::{DType, Device, Result, TensorView, TensorViewMut, F8E4M3};
use half::bf16;

/// One GEMM.
#[derive(Clone, Copy, Debug)]
pub struct MatmulCase {
    /// Rows of A and of the output (tokens).
    pub m: usize,
    /// Columns of the output (rows of B per group).
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// How A's scales tile it.
    pub a_granularity: ScaleGranularity,
    /// How B's scales tile it.
    pub b_granularity: ScaleGranularity,
    /// Storage of A's scales (B's are row-major, the checkpoint layout).
    pub a_scale_layout: ScaleLayout,
    /// Add a bias `[n]` (`[groups · n]` when grouped).
    pub bias: bool,
    /// Add a residual `[m, n]`.
    pub residual: bool,
    /// Which kernel runs.
    pub kernel: GemmKernel,
    /// `MatmulFp8Config::fast_accumulation`.
    pub fast_accumulation: bool,
    /// The wgmma kernel's clusters (`MatmulFp8Config::cluster`): None = the planner's choice.
    pub cluster: Option<usize>,
    /// The wgmma kernel's whole configuration (`MatmulFp8Config::tile`): None = the planner's.
    pub tile: Option<TileConfig>,
    /// Pad every row stride (a, b: 16 · pad bytes; out and residual: 8 · pad elements).
    pub pad: usize,
    /// Decades of magnitude either side of 1 across rows and 128-wide k-blocks.
    pub spread: i32,
    /// 0: one GEMM. Otherwise `matmul_fp8_grouped` with this many groups of n columns: B has
    /// groups · n rows, and the m rows are split at random offsets ([`group_offsets`]; empty
    /// groups, and rows before the first or after the last group, which stay untouched).
    pub groups: usize,
    /// Seed of the operands, scales and group offsets.
    pub seed: u64,
}

impl MatmulCase {
    /// One GEMM with granularities `a` and `b`: dense, column-major A scales, no bias or
    /// residual, the planner's kernel and tiles, magnitudes over ±2 decades.
    pub fn new(m: usize, n: usize, k: usize, a: ScaleGranularity, b: ScaleGranularity, seed: u64) -> Self {
        Self {
            m,
            n,
            k,
            a_granularity: a,
            b_granularity: b,
            a_scale_layout: ScaleLayout::ColMajor,
            bias: false,
            residual: false,
            kernel: GemmKernel::Auto,
            fast_accumulation: false,
            cluster: None,
            tile: None,
            pad: 0,
            spread: 2,
            groups: 0,
            seed,
        }
    }
    fn describe(&self) -> String {
        format!(
            "{}x{}x{}{} a {} b {}{}{}{}{}{}{}{} ±{} decades",
            self.m,
            self.n,
            self.k,
            if self.groups > 0 { format!(" in {} groups", self.groups) } else { String::new() },
            self.a_granularity.name(),
            self.b_granularity.name(),
            if self.bias { " +bias" } else { "" },
            if self.residual { " +residual" } else { "" },
            kernel_label(self.kernel),
            if self.fast_accumulation { " fast-accum" } else { "" },
            match self.cluster {
                None => String::new(),
                Some(c) => format!(" cluster {c}"),
            },
            match self.tile {
                None => String::new(),
                Some(t) => format!(" tile {t}"),
            },
            if self.pad > 0 { " padded" } else { "" },
            self.spread
        )
    }
}

/// How a case names its forced kernel (nothing for Auto).
pub(super) fn kernel_label(kernel: GemmKernel) -> &'static str {
    match kernel {
        GemmKernel::Auto => "",
        GemmKernel::Wgmma => " wgmma",
        GemmKernel::MmaSync => " mma.sync",
    }
}

/// A `[rows, k]` operand with magnitudes varying by row and by 128-wide k-block: a row factor
/// and a k-block factor drawn independently, over ±spread/2 decades each (together ±spread),
/// so that row maxima (the per-row scales) differ by decades. (Before 2026-12-03 one exponent
/// cycled over row and block together: at spread 2 every row had the same pattern, and a
/// kernel reading another row's scale passed within sampling noise.)
fn operand(rng: &mut Rng, rows: usize, k: usize, spread: i32, g: ScaleGranularity, salt: usize) -> Quantized {
    let (h_row, h_blk) = (spread / 2, spread - spread / 2);
    let mut draw = |n: usize, h: i32| -> Vec<i32> { (0..n).map(|_| (rng.next_u64() % (2 * h as u64 + 1)) as i32 - h).collect() };
    let row_e = draw(rows, h_row);
    let mut blk_e = draw(k.div_ceil(128), h_blk);
    let turn = salt % blk_e.len().max(1);
    blk_e.rotate_left(turn);
    let x: Vec<f32> = (0..rows * k).map(|i| (rng.uniform(-1.0, 1.0) * 10f64.powi(row_e[i / k] + blk_e[i % k / 128])) as f32).collect();
    quantize_f32(&x, rows, k, g)
}

/// Bias and residual magnitudes at the product's own scale (rms(a) · rms(b) · √k): drawn in
/// ±1 they vanished under the output's rounding whenever |A·B| ~ 10^(2·spread) (a kernel
/// that dropped them passed every named case).
pub(super) fn addend_scale(a: &[f64], b: &[f64], k: usize) -> f64 {
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
    (rms(a) * rms(b) * (k as f64).sqrt()).max(1e-3)
}

/// Uploads a scale tensor into `layout` storage (NaN elsewhere); returns (buffer, strides).
fn upload_scale(dev: &Device, q: &Quantized, layout: ScaleLayout) -> Result<(cudarc::driver::CudaSlice<f32>, [usize; 2])> {
    let shape = q.scale_shape();
    let (len, strides) = scale_storage(shape, layout);
    let mut host = vec![f32::NAN; len];
    for (i, s) in q.scale.iter().enumerate() {
        host[(i / shape[1]) * strides[0] + (i % shape[1]) * strides[1]] = *s;
    }
    debug_assert_eq!(gather_scale(&host, shape, strides), q.scale);
    Ok((dev.upload(&host)?, strides))
}

/// Codes in rows of `stride` bytes.
fn upload_codes(dev: &Device, q: &Quantized, stride: usize) -> Result<cudarc::driver::CudaSlice<F8E4M3>> {
    let mut host = vec![F8E4M3(0); q.rows.max(1) * stride];
    for r in 0..q.rows {
        host[r * stride..][..q.cols].copy_from_slice(&q.q[r * q.cols..][..q.cols]);
    }
    dev.upload(&host)
}

/// A grouped case's offsets (groups + 1, non-decreasing, in [0, m]) from its seed: cut points
/// drawn uniformly, so that groups of every size occur, empty ones included; every third seed
/// starts the first group after row 0 and ends the last before m.
pub fn group_offsets(m: usize, groups: usize, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let edges = seed.is_multiple_of(3);
    let mut cuts: Vec<i32> = (0..=groups).map(|_| (rng.next_u64() % (m as u64 + 1)) as i32).collect();
    cuts.sort_unstable();
    if !edges {
        cuts[0] = 0;
        cuts[groups] = m as i32;
    }
    cuts
}

/// `matmul_fp8` (or `matmul_fp8_grouped`) against the reference, for one case; `O` is the output
/// dtype (bf16 or f32).
pub fn check_matmul_fp8<O: DType>(dev: &Device, case: &MatmulCase) -> Result<CheckResult> {
    let c = *case;
    let (m, n, k) = (c.m, c.n, c.k);
    let mut rng = Rng::new(c.seed);
    let b_rows = n * c.groups.max(1);
    let qa = operand(&mut rng, m, k, c.spread, c.a_granularity, 0);
    let qb = operand(&mut rng, b_rows, k, c.spread, c.b_granularity, 1);
    let (lda, ldb) = (k + 16 * c.pad, k + 16 * c.pad);
    let (ldd, ldr) = (n + 8 * c.pad, n + 8 * c.pad);
    let a = upload_codes(dev, &qa, lda)?;
    let b = upload_codes(dev, &qb, ldb)?;
    let (sa, sa_strides) = upload_scale(dev, &qa, c.a_scale_layout)?;
    let (sb, sb_strides) = upload_scale(dev, &qb, ScaleLayout::RowMajor)?;
    let s = addend_scale(&qa.dequantize(), &qb.dequantize(), k);
    let bias_host: Vec<O> = rng.vec(b_rows, -s, s);
    let res_host: Vec<O> = rng.vec(m.max(1) * ldr, -s, s);
    let out_host = vec![O::NAN; m.max(1) * ldd];
    let bias = dev.upload(&bias_host)?;
    let res = dev.upload(&res_host)?;
    let mut out = dev.upload(&out_host)?;
    let offsets = (c.groups > 0).then(|| group_offsets(m, c.groups, c.seed));
    let offsets_dev = offsets.as_ref().map(|o| dev.upload(o)).transpose()?;
    {
        let av = TensorView::new(a.as_view(), [m, k], [lda, 1])?;
        let bv = TensorView::new(b.as_view(), [b_rows, k], [ldb, 1])?;
        let sav = TensorView::new(sa.as_view(), qa.scale_shape(), sa_strides)?;
        let sbv = TensorView::new(sb.as_view(), qb.scale_shape(), sb_strides)?;
        let biasv = TensorView::contiguous(bias.as_view(), [b_rows])?;
        let resv = TensorView::new(res.as_view(), [m, n], [ldr, 1])?;
        let mut ov = TensorViewMut::new(out.as_view_mut(), [m, n], [ldd, 1])?;
        let a_op = Fp8Operand { data: &av, scale: &sav, granularity: c.a_granularity };
        let b_op = Fp8Operand { data: &bv, scale: &sbv, granularity: c.b_granularity };
        let cfg = MatmulFp8Config { kernel: c.kernel, fast_accumulation: c.fast_accumulation, cluster: c.cluster, tile: c.tile };
        match &offsets_dev {
            None => matmul_fp8(dev, a_op, b_op, c.bias.then_some(&biasv), c.residual.then_some(&resv), &mut ov, cfg)?,
            Some(o) => {
                let ov_offsets = TensorView::contiguous(o.as_view(), [c.groups + 1])?;
                matmul_fp8_grouped(dev, a_op, b_op, &ov_offsets, c.bias.then_some(&biasv), c.residual.then_some(&resv), &mut ov, cfg)?
            }
        }
    }
    let got = dev.download(&out)?;
    let res_dense = gather_rows(&res_host, 0, m, n, ldr);
    let (bias_ref, res_ref) = (c.bias.then_some(&bias_host[..]), c.residual.then_some(&res_dense[..]));
    // Grouped: rows in no group must keep their poison (compared exactly below, not here).
    let (want, group_of) = match &offsets {
        None => (reference::matmul_fp8(&qa, &qb, bias_ref, res_ref), vec![Some(0); m]),
        Some(o) => reference::matmul_fp8_grouped(&qa, &qb, o, bias_ref, res_ref),
    };
    let sm90 = match c.kernel {
        GemmKernel::Auto => dev.info().compute_capability == (9, 0),
        GemmKernel::Wgmma => true,
        GemmKernel::MmaSync => false,
    };
    let block_scaled = matches!(c.a_granularity, ScaleGranularity::Group128) || matches!(c.b_granularity, ScaleGranularity::Block128);
    let fast = sm90 && c.fast_accumulation && !block_scaled;
    let steps = (k / 32) as f64;
    let u = if fast { steps * 2f64.powi(-12) } else { 2f64.powi(-11).max(k as f64 * 2f64.powi(-24)) };
    let (rtol, out_frob) = if O::NAME == "bf16" { (2f64.powi(-8), 2f64.powi(-8)) } else { (2f64.powi(-22), 2f64.powi(-10)) };
    let frob = if fast { out_frob.max(steps * 2f64.powi(-14)) } else { out_frob };
    let added = |i: usize| {
        let bias_row = group_of[i / n].unwrap_or(0) * n + i % n;
        let bias = if c.bias { bias_host[bias_row].to_f64().abs() } else { 0.0 };
        bias + if c.residual { res_dense[i].to_f64().abs() } else { 0.0 }
    };
    let comparisons = compare_gemm(&got, &out_host, (m, n, ldd), &want, &group_of, added, (rtol, u, frob));
    Ok(CheckResult { op: if c.groups > 0 { "matmul_fp8_grouped" } else { "matmul_fp8" }, dtype: O::NAME, shape: c.describe(), comparisons })
}

/// The comparisons of a GEMM's output `got` (`[m, n]` in rows of `ldd`, poisoned as `poison`
/// before the run): each row some group wrote (`group_of`; every row for a plain GEMM) against
/// the reference within `rtol·|ref| + u·Σ|a·b| + 2⁻²²·added(i)` (`added`: the bias and residual
/// terms' magnitude) and the relative Frobenius limit `frob`, and each such row alone within
/// `2·frob` (rows differ by decades: a wrong small row hides in the whole output's norm, and at
/// fast accumulation's `u` a row 10 % low passes the element bound); everything outside
/// `[m, n]`, and the rows in no group, untouched.
pub(super) fn compare_gemm<O: DType>(
    got: &[O],
    poison: &[O],
    (m, n, ldd): (usize, usize, usize),
    want: &reference::MatmulRef,
    group_of: &[Option<usize>],
    added: impl Fn(usize) -> f64,
    (rtol, u, frob): (f64, f64, f64),
) -> Vec<super::Comparison> {
    let written: Vec<usize> = (0..m).filter(|&i| group_of[i].is_some()).collect();
    let pick = |v: &[f64]| written.iter().flat_map(|&i| v[i * n..(i + 1) * n].iter().copied()).collect::<Vec<f64>>();
    let got_dense = gather_rows(got, 0, m, n, ldd);
    let got_written: Vec<O> = written.iter().flat_map(|&i| got_dense[i * n..(i + 1) * n].iter().copied()).collect();
    let bound: Vec<f64> = (0..m * n).map(|i| rtol * want.out[i].abs() + u * want.magnitude[i] + 2f64.powi(-22) * added(i)).collect();
    let untouched: Vec<usize> = (0..m).filter(|&i| group_of[i].is_none()).collect();
    let rows_of = |buf: &[O]| untouched.iter().flat_map(|&i| buf[i * ldd..i * ldd + n].iter().copied()).collect::<Vec<O>>();
    let mut comparisons = vec![
        compare_bounded("out", &got_written, &pick(&want.out), &pick(&bound), frob).in_rows(n),
        compare_row_frobenius("out rows (Frobenius per row)", &got_written, &pick(&want.out), n, 2.0 * frob),
        compare_exact("outside out (untouched)", &outside_rows(got, 0, m, n, ldd), &outside_rows(poison, 0, m, n, ldd)),
    ];
    if !untouched.is_empty() {
        comparisons.push(compare_exact("rows in no group (untouched)", &rows_of(got), &rows_of(poison)));
    }
    comparisons
}

/// The (kernel, cluster) variants a GPU runs: on compute capability 9.0 the wgmma kernel alone
/// and in cluster pairs (forced, so that small shapes run pairs too) and the mma.sync kernel;
/// elsewhere the mma.sync kernel.
pub fn kernel_variants(dev: &Device) -> Vec<(GemmKernel, Option<usize>)> {
    if dev.info().compute_capability == (9, 0) {
        vec![(GemmKernel::Wgmma, Some(1)), (GemmKernel::Wgmma, Some(2)), (GemmKernel::MmaSync, None)]
    } else {
        vec![(GemmKernel::MmaSync, None)]
    }
}

/// The cases `warpcore check` runs: every scale pair, every kernel variant the GPU has, tails
/// in m, bias and residual, bf16 and f32 out.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    use ScaleGranularity::*;
    let pairs = [(PerTensor, PerTensor), (PerRow, PerRow), (PerRow, PerTensor), (Group128, Block128), (PerRow, Block128), (Group128, PerTensor)];
    let mut out = Vec::new();
    for (kernel, cluster) in kernel_variants(dev) {
        for (i, &(ga, gb)) in pairs.iter().enumerate() {
            for &(m, n, k) in &[(129usize, 384usize, 2048usize), (1, 7168, 1024), (1000, 256, 7168)] {
                let case = MatmulCase { kernel, cluster, pad: i % 2, bias: i % 3 == 0, residual: i % 2 == 1, ..MatmulCase::new(m, n, k, ga, gb, (i * 10 + m) as u64) };
                out.push(check_matmul_fp8::<bf16>(dev, &case)?);
            }
            out.push(check_matmul_fp8::<f32>(dev, &MatmulCase { kernel, cluster, spread: 6, ..MatmulCase::new(64, 256, 16384, ga, gb, 90 + i as u64) })?);
        }
        // Fast accumulation (wgmma, per tensor / per row): the 128×256 tile.
        for (m, n, k) in [(300usize, 512usize, 4096usize), (7, 7168, 2048)] {
            let case = MatmulCase { kernel, cluster, fast_accumulation: true, bias: true, ..MatmulCase::new(m, n, k, PerRow, PerRow, 7) };
            out.push(check_matmul_fp8::<bf16>(dev, &case)?);
        }
        // Grouped (MoE experts; no cluster pairs): decode-like (few rows over many groups, most
        // empty), prefill-like (hundreds of rows per group), per-row scales with fast accumulation.
        if cluster != Some(2) {
            for (i, &(m, n, k, groups, ga, gb, fast)) in [
                (24usize, 512usize, 2048usize, 64usize, Group128, Block128, false),
                (1000, 256, 1024, 4, Group128, Block128, false),
                (300, 384, 768, 8, PerRow, PerRow, true),
                (129, 256, 512, 3, Group128, PerTensor, false),
            ]
            .iter()
            .enumerate()
            {
                let case = MatmulCase { kernel, cluster, groups, fast_accumulation: fast, bias: i % 2 == 1, residual: i % 2 == 0, pad: i % 2, ..MatmulCase::new(m, n, k, ga, gb, 40 + i as u64) };
                out.push(check_matmul_fp8::<bf16>(dev, &case)?);
            }
            let case = MatmulCase { kernel, cluster, groups: 5, spread: 6, ..MatmulCase::new(200, 128, 4096, Group128, Block128, 48) };
            out.push(check_matmul_fp8::<f32>(dev, &case)?);
            // The same kernels on bf16 operands (matmul_grouped).
            out.extend(super::matmul_grouped::check_all(dev, kernel)?);
        }
    }
    Ok(out)
}

/// Without a GPU: the reference's invariants at the check shapes (bias/residual added, a
/// broadcast per-tensor B equals a per-row B of equal scales).
pub fn check_references() -> Vec<CheckResult> {
    use ScaleGranularity::*;
    let mut out = Vec::new();
    let mut rng = Rng::new(11);
    let (m, n, k) = (33, 256, 1024);
    let qa = operand(&mut rng, m, k, 3, Group128, 0);
    let qb = operand(&mut rng, n, k, 3, PerTensor, 1);
    let mut qb_block = qb.clone();
    qb_block.granularity = Block128;
    qb_block.scale = vec![qb.scale[0]; Block128.scale_shape(n, k).iter().product()];
    let x = reference::matmul_fp8::<f32>(&qa, &qb, None, None);
    let y = reference::matmul_fp8::<f32>(&qa, &qb_block, None, None);
    let bias: Vec<f32> = rng.vec(n, -1.0, 1.0);
    let z = reference::matmul_fp8(&qa, &qb, Some(&bias), None);
    let shifted: Vec<f32> = (0..m * n).map(|i| (z.out[i] - bias[i % n] as f64) as f32).collect();
    out.push(CheckResult {
        op: "reference::matmul_fp8",
        dtype: "f64",
        shape: format!("{m}x{n}x{k} group128 x tensor"),
        comparisons: vec![
            compare_bounded("per-tensor B = uniform 128×128 blocks", &y.out.iter().map(|&v| v as f32).collect::<Vec<_>>(), &x.out, &x.magnitude.iter().map(|g| g * 1e-6).collect::<Vec<_>>(), 1e-6),
            compare_bounded("bias added once", &shifted, &x.out, &x.magnitude.iter().map(|g| g * 1e-6).collect::<Vec<_>>(), 1e-6),
        ],
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// The comparison a GEMM check makes catches a kernel that drops the bias or the residual,
    /// at the spreads the named cases use (bias and residual drawn as `check_matmul_fp8` draws
    /// them); the kernel that adds them passes.
    #[test]
    fn a_dropped_bias_or_residual_fails_the_check() {
        for spread in [0, 2, 4, 8] {
            let (m, n, k) = (48, 256, 1024);
            let mut rng = Rng::new(11 + spread as u64);
            let qa = operand(&mut rng, m, k, spread, ScaleGranularity::PerRow, 0);
            let qb = operand(&mut rng, n, k, spread, ScaleGranularity::PerRow, 1);
            let s = addend_scale(&qa.dequantize(), &qb.dequantize(), k);
            let bias: Vec<bf16> = rng.vec(n, -s, s);
            let res: Vec<bf16> = rng.vec(m * n, -s, s);
            for (b, r) in [(true, false), (false, true)] {
                let (bias_ref, res_ref) = (b.then_some(&bias[..]), r.then_some(&res[..]));
                let want = reference::matmul_fp8(&qa, &qb, bias_ref, res_ref);
                let dropped = reference::matmul_fp8::<bf16>(&qa, &qb, None, None);
                let added = |i: usize| if b { bias[i % n].to_f64().abs() } else { res[i].to_f64().abs() };
                let tol = (2f64.powi(-8), 2f64.powi(-11).max(k as f64 * 2f64.powi(-24)), 2f64.powi(-8));
                let poison = vec![bf16::NAN; m * n];
                let groups = vec![Some(0); m];
                let as_out = |v: &reference::MatmulRef| v.out.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<bf16>>();
                let right = compare_gemm(&as_out(&want), &poison, (m, n, n), &want, &groups, added, tol);
                assert!(right.iter().all(|c| c.passed()), "spread {spread}: the correct output failed");
                let wrong = compare_gemm(&as_out(&dropped), &poison, (m, n, n), &want, &groups, added, tol);
                assert!(!wrong.iter().all(|c| c.passed()), "spread {spread}: dropping the {} passed", if b { "bias" } else { "residual" });
            }
        }
    }

    /// Fast accumulation's tolerance (k = 8192: `u` = Σ|a·b|/16, so a per-element bound passes
    /// almost anything) against a model of the tensor core: each k32 step's exact sum added into
    /// an accumulator truncated toward zero to 13 fraction bits, the scales applied after. The
    /// modelled kernel passes every comparison (relative Frobenius 2.4e-3 against the limit
    /// 1.6e-2); the same output with its smallest row zeroed, halved or 10 % low fails the
    /// per-row Frobenius check (operand rows four decades apart: in the whole output's norm the
    /// row is invisible, and the 10 % row passed the element bound and the whole-output norm,
    /// the check before 2026-12-03).
    #[test]
    fn fast_accumulation_tolerance_passes_truncation_and_fails_a_wrong_row() {
        let (m, n, k) = (16, 256, 8192);
        let mut rng = Rng::new(5);
        let qa = operand(&mut rng, m, k, 4, ScaleGranularity::PerRow, 0);
        let qb = operand(&mut rng, n, k, 4, ScaleGranularity::PerRow, 1);
        let want = reference::matmul_fp8::<f32>(&qa, &qb, None, None);
        let truncate = |x: f64| {
            let bits = x.to_bits();
            f64::from_bits(bits & !((1u64 << (52 - 13)) - 1))
        };
        let mut modelled = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for s in (0..k).step_by(32) {
                    let step: f64 = (s..s + 32).map(|t| qa.q[i * k + t].to_f64() * qb.q[j * k + t].to_f64()).sum();
                    acc = truncate(acc + step);
                }
                modelled[i * n + j] = (acc * qa.scale_at(i, 0) as f64 * qb.scale_at(j, 0) as f64) as f32;
            }
        }
        let steps = (k / 32) as f64;
        let tol = (2f64.powi(-22), steps * 2f64.powi(-12), 2f64.powi(-10).max(steps * 2f64.powi(-14)));
        let (poison, groups) = (vec![f32::NAN; m * n], vec![Some(0); m]);
        let right = compare_gemm(&modelled, &poison, (m, n, n), &want, &groups, |_| 0.0, tol);
        assert!(right.iter().all(|c| c.passed()), "the modelled fast accumulation failed: {right:?}");
        let norm = |r: usize| want.out[r * n..(r + 1) * n].iter().map(|x| x * x).sum::<f64>();
        let small = (0..m).min_by(|&x, &y| norm(x).total_cmp(&norm(y))).unwrap();
        let large = (0..m).max_by(|&x, &y| norm(x).total_cmp(&norm(y))).unwrap();
        assert!(norm(large) > 1e4 * norm(small), "rows should differ by decades");
        for factor in [0.0f32, 0.5, 0.9] {
            let mut wrong = modelled.clone();
            wrong[small * n..(small + 1) * n].iter_mut().for_each(|x| *x *= factor);
            let c = compare_gemm(&wrong, &poison, (m, n, n), &want, &groups, |_| 0.0, tol);
            let row = c.iter().find(|c| c.what.starts_with("out rows")).unwrap();
            assert!(!row.passed() && row.first_failure.map(|f| f.0) == Some(small), "row {small} times {factor} passed: {row}");
            if factor == 0.9 {
                assert!(c.iter().filter(|c| !c.what.starts_with("out rows")).all(|c| c.passed()), "the gap the per-row check closes");
            }
        }
    }
}
