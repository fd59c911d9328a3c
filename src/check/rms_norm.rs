//! RMSNorm family: run each op on the GPU on fresh random inputs with poisoned outputs, and
//! compare with `reference::rms_norm`. Used by tests/rms_norm.rs and `warpcore check`.

use super::{compare, compare_exact, gather_rows, outside_rows, tolerance, CheckResult, Rng};
use crate::ops::rms_norm::{self as ops, RmsNormConfig};
use crate::reference::rms_norm as reference;
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use half::{bf16, f16};

/// Rows of `hidden` elements inside larger buffers: x rows at `x_stride`, out (or, for
/// fused_add_rms_norm, residual) rows at `out_stride`, both views starting `offset` elements
/// into their buffers (an odd offset exercises the unaligned path).
#[derive(Clone, Copy, Debug)]
pub struct RowsCase {
    /// Rows (tokens).
    pub num_tokens: usize,
    /// Elements per row.
    pub hidden: usize,
    /// Row stride of x, in elements.
    pub x_stride: usize,
    /// Row stride of out (or the residual), in elements.
    pub out_stride: usize,
    /// Elements before the first row of both views.
    pub offset: usize,
    /// Gemma-style weight (`1 + weight`).
    pub gemma: bool,
    /// Seed of the inputs and the weight.
    pub seed: u64,
}

impl RowsCase {
    /// Dense rows, aligned, Llama-style weight.
    pub fn dense(num_tokens: usize, hidden: usize, seed: u64) -> Self {
        Self { num_tokens, hidden, x_stride: hidden, out_stride: hidden, offset: 0, gemma: false, seed }
    }
    fn cfg(&self) -> RmsNormConfig {
        if self.gemma {
            RmsNormConfig::gemma(1e-6)
        } else {
            RmsNormConfig::new(1e-6)
        }
    }
    fn shape(&self) -> String {
        format!(
            "[{}, {}] strides {}/{} offset {}{}",
            self.num_tokens,
            self.hidden,
            self.x_stride,
            self.out_stride,
            self.offset,
            if self.gemma { " gemma" } else { "" }
        )
    }
    fn buffer_len(&self, stride: usize) -> usize {
        self.offset + self.num_tokens * stride
    }
    fn weight<T: DType>(&self, rng: &mut Rng) -> Vec<T> {
        // Gemma stores weight − 1 (small, around 0).
        if self.gemma {
            rng.vec(self.hidden, -0.5, 0.5)
        } else {
            rng.vec(self.hidden, -1.5, 1.5)
        }
    }
}

/// `rms_norm` against the reference.
pub fn check_rms_norm<T: DType>(dev: &Device, case: &RowsCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let x_host: Vec<T> = rng.vec(c.buffer_len(c.x_stride), -3.0, 3.0);
    let w_host: Vec<T> = c.weight(&mut rng);
    let out_host = vec![T::NAN; c.buffer_len(c.out_stride)];
    let x = dev.upload(&x_host)?;
    let w = dev.upload(&w_host)?;
    let mut out = dev.upload(&out_host)?;
    ops::rms_norm(
        dev,
        &TensorView::new(x.slice(c.offset..), [c.num_tokens, c.hidden], [c.x_stride, 1])?,
        &TensorView::contiguous(w.as_view(), [c.hidden])?,
        &mut TensorViewMut::new(out.slice_mut(c.offset..), [c.num_tokens, c.hidden], [c.out_stride, 1])?,
        c.cfg(),
    )?;
    let got = dev.download(&out)?;
    let want = reference::rms_norm(&gather_rows(&x_host, c.offset, c.num_tokens, c.hidden, c.x_stride), &w_host, c.cfg());
    let region = |b: &[T]| gather_rows(b, c.offset, c.num_tokens, c.hidden, c.out_stride);
    let rest = |b: &[T]| outside_rows(b, c.offset, c.num_tokens, c.hidden, c.out_stride);
    Ok(CheckResult {
        op: "rms_norm",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare("out", &region(&got), &want, tolerance::<T>()).in_rows(c.hidden),
            compare_exact("outside out (untouched)", &rest(&got), &rest(&out_host)),
        ],
    })
}

/// `fused_add_rms_norm` against the reference: the residual must match bit for bit.
/// x rows use `x_stride`, residual rows `out_stride`.
pub fn check_fused_add_rms_norm<T: DType>(dev: &Device, case: &RowsCase) -> Result<CheckResult> {
    let c = *case;
    let mut rng = Rng::new(c.seed);
    let x_host: Vec<T> = rng.vec(c.buffer_len(c.x_stride), -3.0, 3.0);
    let r_host: Vec<T> = rng.vec(c.buffer_len(c.out_stride), -3.0, 3.0);
    let w_host: Vec<T> = c.weight(&mut rng);
    let mut x = dev.upload(&x_host)?;
    let mut r = dev.upload(&r_host)?;
    let w = dev.upload(&w_host)?;
    ops::fused_add_rms_norm(
        dev,
        &mut TensorViewMut::new(x.slice_mut(c.offset..), [c.num_tokens, c.hidden], [c.x_stride, 1])?,
        &mut TensorViewMut::new(r.slice_mut(c.offset..), [c.num_tokens, c.hidden], [c.out_stride, 1])?,
        &TensorView::contiguous(w.as_view(), [c.hidden])?,
        c.cfg(),
    )?;
    let (x_got, r_got) = (dev.download(&x)?, dev.download(&r)?);
    let xs = |b: &[T]| gather_rows(b, c.offset, c.num_tokens, c.hidden, c.x_stride);
    let rs = |b: &[T]| gather_rows(b, c.offset, c.num_tokens, c.hidden, c.out_stride);
    let (r_want, x_want) = reference::fused_add_rms_norm(&xs(&x_host), &rs(&r_host), &w_host, c.cfg());
    let x_rest = |b: &[T]| outside_rows(b, c.offset, c.num_tokens, c.hidden, c.x_stride);
    let r_rest = |b: &[T]| outside_rows(b, c.offset, c.num_tokens, c.hidden, c.out_stride);
    Ok(CheckResult {
        op: "fused_add_rms_norm",
        dtype: T::NAME,
        shape: c.shape(),
        comparisons: vec![
            compare("x (normalised)", &xs(&x_got), &x_want, tolerance::<T>()),
            compare_exact("residual (exact)", &rs(&r_got), &r_want),
            compare_exact("outside x (untouched)", &x_rest(&x_got), &x_rest(&x_host)),
            compare_exact("outside residual (untouched)", &r_rest(&r_got), &r_rest(&r_host)),
        ],
    })
}

/// q/k heads inside a fused QKV buffer: each token row holds num_q_heads + num_kv_heads heads
/// that are normalised, then `v_heads` heads that must stay untouched.
#[derive(Clone, Copy, Debug)]
pub struct QkCase {
    /// Token rows of the fused buffer.
    pub num_tokens: usize,
    /// q heads per token (normalised with the q weight).
    pub num_q_heads: usize,
    /// k heads per token (normalised with the k weight).
    pub num_kv_heads: usize,
    /// v heads after them (untouched).
    pub v_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Gemma-style weights (`1 + weight`).
    pub gemma: bool,
    /// Seed of the buffer and the weights.
    pub seed: u64,
}

/// `qk_rms_norm` against the reference, in place in a fused QKV buffer.
pub fn check_qk_rms_norm<T: DType>(dev: &Device, case: &QkCase) -> Result<CheckResult> {
    let c = *case;
    let heads = c.num_q_heads + c.num_kv_heads;
    let row = (heads + c.v_heads) * c.head_dim;
    let cfg = if c.gemma { RmsNormConfig::gemma(1e-6) } else { RmsNormConfig::new(1e-6) };
    let mut rng = Rng::new(c.seed);
    let qkv_host: Vec<T> = rng.vec(c.num_tokens * row, -3.0, 3.0);
    let qw_host: Vec<T> = rng.vec(c.head_dim, -1.5, 1.5);
    let kw_host: Vec<T> = rng.vec(c.head_dim, -1.5, 1.5);
    let mut qkv = dev.upload(&qkv_host)?;
    let (qw, kw) = (dev.upload(&qw_host)?, dev.upload(&kw_host)?);
    ops::qk_rms_norm(
        dev,
        &mut TensorViewMut::new(qkv.as_view_mut(), [c.num_tokens, heads, c.head_dim], [row, c.head_dim, 1])?,
        c.num_q_heads,
        &TensorView::contiguous(qw.as_view(), [c.head_dim])?,
        &TensorView::contiguous(kw.as_view(), [c.head_dim])?,
        cfg,
    )?;
    let got = dev.download(&qkv)?;
    let cols = heads * c.head_dim;
    let want = reference::qk_rms_norm(
        &gather_rows(&qkv_host, 0, c.num_tokens, cols, row),
        c.num_q_heads,
        c.num_kv_heads,
        &qw_host,
        &kw_host,
        cfg,
    );
    Ok(CheckResult {
        op: "qk_rms_norm",
        dtype: T::NAME,
        shape: format!(
            "tokens {} heads {}+{} (+{} v) head_dim {}{}",
            c.num_tokens,
            c.num_q_heads,
            c.num_kv_heads,
            c.v_heads,
            c.head_dim,
            if c.gemma { " gemma" } else { "" }
        ),
        comparisons: vec![
            compare("q and k heads", &gather_rows(&got, 0, c.num_tokens, cols, row), &want, tolerance::<T>()),
            compare_exact(
                "v heads (untouched)",
                &outside_rows(&got, 0, c.num_tokens, cols, row),
                &outside_rows(&qkv_host, 0, c.num_tokens, cols, row),
            ),
        ],
    })
}

/// The cases `warpcore check` runs: every op and dtype at model shapes and awkward ones.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
        let rows = [
            RowsCase::dense(64, 4096, 1),
            RowsCase::dense(7, 8192, 2),
            RowsCase::dense(3, 18432, 3),
            RowsCase::dense(2, 65536 + 8, 4), // past the register path
            RowsCase { num_tokens: 5, hidden: 989, x_stride: 1000, out_stride: 991, offset: 1, gemma: true, seed: 5 },
            RowsCase { num_tokens: 9, hidden: 5120, x_stride: 3 * 5120, out_stride: 5120, offset: 0, gemma: false, seed: 6 },
            RowsCase { num_tokens: 1, hidden: 17, x_stride: 17, out_stride: 17, offset: 3, gemma: false, seed: 7 },
        ];
        for c in &rows {
            out.push(check_rms_norm::<T>(dev, c)?);
            out.push(check_fused_add_rms_norm::<T>(dev, c)?);
        }
        let qk = [
            QkCase { num_tokens: 33, num_q_heads: 32, num_kv_heads: 8, v_heads: 8, head_dim: 128, gemma: false, seed: 8 },
            QkCase { num_tokens: 4, num_q_heads: 16, num_kv_heads: 4, v_heads: 4, head_dim: 64, gemma: true, seed: 9 },
            QkCase { num_tokens: 3, num_q_heads: 5, num_kv_heads: 1, v_heads: 1, head_dim: 80, gemma: false, seed: 10 },
            QkCase { num_tokens: 2, num_q_heads: 2, num_kv_heads: 2, v_heads: 0, head_dim: 512, gemma: false, seed: 11 },
            QkCase { num_tokens: 2, num_q_heads: 3, num_kv_heads: 1, v_heads: 1, head_dim: 17, gemma: false, seed: 12 },
        ];
        for c in &qk {
            out.push(check_qk_rms_norm::<T>(dev, c)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    per_dtype::<bf16>(dev, &mut out)?;
    per_dtype::<f16>(dev, &mut out)?;
    per_dtype::<f32>(dev, &mut out)?;
    Ok(out)
}

/// Without a GPU: the references' own invariants at the same shapes (unit weights and eps = 0
/// give rows of RMS 1; fused_add equals add-then-norm; per-head norm equals row norm).
pub fn check_references() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &(tokens, hidden) in &[(64usize, 4096usize), (3, 18432), (5, 989), (1, 17)] {
        let mut rng = Rng::new(hidden as u64);
        let x: Vec<f32> = rng.vec(tokens * hidden, -3.0, 3.0);
        let ones = vec![1.0f32; hidden];
        let y = reference::rms_norm(&x, &ones, RmsNormConfig::new(0.0));
        let rms: Vec<f64> = y.chunks(hidden).map(|r| (r.iter().map(|v| v * v).sum::<f64>() / hidden as f64).sqrt()).collect();
        let r: Vec<f32> = rng.vec(tokens * hidden, -3.0, 3.0);
        let (sum, fused) = reference::fused_add_rms_norm(&x, &r, &ones, RmsNormConfig::new(0.0));
        let qk = reference::qk_rms_norm(&x, 1, 0, &x[..hidden], &ones, RmsNormConfig::new(0.0));
        let plain_w = reference::rms_norm(&x, &x[..hidden], RmsNormConfig::new(0.0));
        out.push(CheckResult {
            op: "reference::rms_norm",
            dtype: "f64",
            shape: format!("[{tokens}, {hidden}]"),
            comparisons: vec![
                compare("row RMS of unit-weight output = 1", &rms.iter().map(|&v| v as f32).collect::<Vec<_>>(), &vec![1.0; tokens], tolerance::<f32>()),
                compare(
                    "fused_add = add then norm",
                    &fused.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &reference::rms_norm(&sum, &ones, RmsNormConfig::new(0.0)),
                    tolerance::<f32>(),
                ),
                compare("per-head (1 head) = per-row", &qk.iter().map(|&v| v as f32).collect::<Vec<_>>(), &plain_w, tolerance::<f32>()),
            ],
        });
    }
    out
}
