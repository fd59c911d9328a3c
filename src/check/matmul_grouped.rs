//! bf16 grouped GEMM (`matmul_grouped`, the MoE experts' GEMM of bf16 checkpoints): random
//! bf16 operands (magnitudes over a few decades by row and by 64-wide k-block), random group
//! offsets (empty groups, rows outside every group), NaN-poisoned output with padded row strides,
//! against `reference::matmul_grouped` (f64 on the bf16 values).
//!
//! Error model (the per-element bound): bf16 products are exact in f32, and the tensor cores add
//! them into f32 accumulators. Their additions align to the largest term and may truncate (the
//! measured behaviour of earlier tensor cores), so each of the k additions may lose up to
//! 2⁻²³ of the running magnitude: `k·2⁻²²·Σ_k |a·b|` bounds the accumulation with a factor-two
//! margin. Plus the output rounding (`2⁻⁸·|ref|` for bf16, `2⁻²²·|ref|` for f32) and the added
//! bias / residual's rounding. Relative Frobenius limits: bf16 2⁻⁸, f32 2⁻¹².

use super::matmul_fp8::{compare_gemm, group_offsets, kernel_label};
use super::{gather_rows, CheckResult, Rng};
use crate::ops::matmul_fp8::{matmul_grouped, GemmKernel};
use crate::reference::matmul_fp8 as reference;
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use half::bf16;

/// One grouped GEMM of bf16 operands: a `[m, k]`, b `[groups · n, k]`, out `[m, n]`.
#[derive(Clone, Copy, Debug)]
pub struct GroupedCase {
    /// Rows of a and of out (all groups together).
    pub m: usize,
    /// Columns of out (rows of b per group).
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// Groups (experts); the m rows are split between them at random offsets.
    pub groups: usize,
    /// Add a bias `[groups · n]` (each group's own n).
    pub bias: bool,
    /// Add a residual `[m, n]`.
    pub residual: bool,
    /// Which kernel runs.
    pub kernel: GemmKernel,
    /// Pad every row stride by 8 · pad elements.
    pub pad: usize,
    /// Seed of the operands and group offsets.
    pub seed: u64,
}

impl GroupedCase {
    /// Dense operands, no bias or residual, the planner's kernel.
    pub fn new(m: usize, n: usize, k: usize, groups: usize, seed: u64) -> Self {
        Self { m, n, k, groups, bias: false, residual: false, kernel: GemmKernel::Auto, pad: 0, seed }
    }
    fn describe(&self) -> String {
        format!(
            "{}x{}x{} in {} groups{}{}{}{}",
            self.m,
            self.n,
            self.k,
            self.groups,
            if self.bias { " +bias" } else { "" },
            if self.residual { " +residual" } else { "" },
            kernel_label(self.kernel),
            if self.pad > 0 { " padded" } else { "" },
        )
    }
}

/// `[rows, k]` bf16 values in rows of `stride`, magnitudes 10^-2 .. 10^2 by row and 64-wide k-block.
fn operand(rng: &mut Rng, rows: usize, k: usize, stride: usize, salt: usize) -> Vec<bf16> {
    let mut v = vec![bf16::ZERO; rows.max(1) * stride];
    for r in 0..rows {
        for c in 0..k {
            let e = ((r * 5 + (c / 64) * 3 + salt) % 5) as i32 - 2;
            v[r * stride + c] = bf16::from_f64(rng.uniform(-1.0, 1.0) * 10f64.powi(e));
        }
    }
    v
}

/// `matmul_grouped` against the reference, for one case; `O` is the output dtype (bf16 or f32).
pub fn check_matmul_grouped<O: DType>(dev: &Device, case: &GroupedCase) -> Result<CheckResult> {
    let c = *case;
    let (m, n, k) = (c.m, c.n, c.k);
    let mut rng = Rng::new(c.seed);
    let b_rows = n * c.groups;
    let (lda, ldb, ldd) = (k + 8 * c.pad, k + 8 * c.pad, n + 8 * c.pad);
    let a_host = operand(&mut rng, m, k, lda, 0);
    let b_host = operand(&mut rng, b_rows, k, ldb, 1);
    let values = |v: &[bf16], rows: usize, stride: usize| -> Vec<f64> { (0..rows).flat_map(|r| v[r * stride..][..k].iter().map(|x| x.to_f64())).collect() };
    let s = super::matmul_fp8::addend_scale(&values(&a_host, m, lda), &values(&b_host, b_rows, ldb), k);
    let bias_host: Vec<O> = rng.vec(b_rows, -s, s);
    let res_host: Vec<O> = rng.vec(m.max(1) * ldd, -s, s);
    let out_host = vec![O::NAN; m.max(1) * ldd];
    let offsets = group_offsets(m, c.groups, c.seed);
    let (a, b) = (dev.upload(&a_host)?, dev.upload(&b_host)?);
    let (bias, res, offsets_dev) = (dev.upload(&bias_host)?, dev.upload(&res_host)?, dev.upload(&offsets)?);
    let mut out = dev.upload(&out_host)?;
    {
        let av = TensorView::new(a.as_view(), [m, k], [lda, 1])?;
        let bv = TensorView::new(b.as_view(), [b_rows, k], [ldb, 1])?;
        let ov_offsets = TensorView::contiguous(offsets_dev.as_view(), [c.groups + 1])?;
        let biasv = TensorView::contiguous(bias.as_view(), [b_rows])?;
        let resv = TensorView::new(res.as_view(), [m, n], [ldd, 1])?;
        let mut ov = TensorViewMut::new(out.as_view_mut(), [m, n], [ldd, 1])?;
        matmul_grouped(dev, &av, &bv, &ov_offsets, c.bias.then_some(&biasv), c.residual.then_some(&resv), &mut ov, c.kernel)?;
    }
    let got = dev.download(&out)?;
    let widen = |v: &[bf16], rows: usize, stride: usize| gather_rows(v, 0, rows, k, stride).iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let res_dense = gather_rows(&res_host, 0, m, n, ldd);
    let (bias_ref, res_ref) = (c.bias.then_some(&bias_host[..]), c.residual.then_some(&res_dense[..]));
    let (want, group_of) = reference::matmul_grouped(&widen(&a_host, m, lda), &widen(&b_host, b_rows, ldb), k, &offsets, bias_ref, res_ref);

    let u = k as f64 * 2f64.powi(-22);
    let (rtol, frob) = if O::NAME == "bf16" { (2f64.powi(-8), 2f64.powi(-8)) } else { (2f64.powi(-22), 2f64.powi(-12)) };
    let added = |i: usize| {
        let bias_row = group_of[i / n].unwrap_or(0) * n + i % n;
        let bias = if c.bias { bias_host[bias_row].to_f64().abs() } else { 0.0 };
        bias + if c.residual { res_dense[i].to_f64().abs() } else { 0.0 }
    };
    let comparisons = compare_gemm(&got, &out_host, (m, n, ldd), &want, &group_of, added, (rtol, u, frob));
    Ok(CheckResult { op: "matmul_grouped", dtype: O::NAME, shape: c.describe(), comparisons })
}

/// The cases `warpcore check` runs on each kernel: Qwen3-30B-A3B's experts at decode (a few
/// rows over 128 groups, most empty), Mixtral-like prefill (hundreds of rows per group), the
/// test models' small widths (n, k multiples of 8 only), f32 out over long k.
pub fn check_all(dev: &Device, kernel: GemmKernel) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    for (i, &(m, n, k, groups)) in [(64usize, 1536usize, 2048usize, 128usize), (1000, 512, 1024, 8), (300, 200, 72, 8), (37, 64, 32, 8), (20, 264, 40, 3)].iter().enumerate() {
        let case = GroupedCase { kernel, bias: i % 2 == 1, residual: i % 2 == 0, pad: i % 2, ..GroupedCase::new(m, n, k, groups, 60 + i as u64) };
        out.push(check_matmul_grouped::<bf16>(dev, &case)?);
    }
    out.push(check_matmul_grouped::<f32>(dev, &GroupedCase { kernel, bias: true, ..GroupedCase::new(129, 136, 4096, 5, 66) })?);
    Ok(out)
}
