//! Benchmarks of the RMSNorm family at the shapes the foundation issue sets bars for.
//! Bytes counted: each input read once, each output written once (weights included).

use super::{rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::{compare, compare_exact, compare_ints, tolerance, Comparison, Rng};
use crate::reference::rms_norm as reference;
use crate::ops::rms_norm::{fused_add_rms_norm, qk_rms_norm, rms_norm, RmsNormConfig};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;

const SAMPLES: usize = 25;

/// `count` buffers of `len` random elements (rotated between calls).
fn buffers<T: DType>(dev: &Device, count: usize, len: usize, seed: u64) -> Result<Vec<CudaSlice<T>>> {
    let host: Vec<T> = Rng::new(seed).vec(len, -2.0, 2.0);
    (0..count).map(|_| dev.upload(&host)).collect()
}

/// rms_norm on [tokens, hidden].
pub fn bench_rms_norm<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, hidden: usize) -> Result<BenchRecord> {
    let n = tokens * hidden;
    let bytes = (2 * n + hidden) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let xs = buffers::<T>(dev, copies, n, 1)?;
    let mut outs = buffers::<T>(dev, copies, n, 2)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(hidden, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [hidden])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let x = TensorView::contiguous(xs[j].as_view(), [tokens, hidden])?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [tokens, hidden])?;
        rms_norm(dev, &x, &wv, &mut o, RmsNormConfig::new(1e-6))
    })?;
    let mut record = BenchRecord::bandwidth("rms_norm", T::NAME, format!("{tokens}x{hidden}"), t, bytes as f64, ceilings);
    // The output check: copy 0's sampled rows, the output's poisoned first.
    let rows = sampled_rows(tokens);
    poison_rows(dev, &mut outs[0], &rows, hidden, hidden)?;
    rms_norm(
        dev,
        &TensorView::contiguous(xs[0].as_view(), [tokens, hidden])?,
        &wv,
        &mut TensorViewMut::contiguous(outs[0].as_view_mut(), [tokens, hidden])?,
        RmsNormConfig::new(1e-6),
    )?;
    let x = download_rows(dev, &xs[0], &rows, hidden, hidden)?;
    let got = download_rows(dev, &outs[0], &rows, hidden, hidden)?;
    let comparisons = rms_norm_comparisons(&x, &dev.download(&w)?, &got);
    record.output = Some(OutputCheck::of(&sample_text(&rows, tokens), &comparisons));
    Ok(record)
}

/// Rows the output check samples: every row when at most 32, else 0, 1, rows/2 and the last.
fn sampled_rows(rows: usize) -> Vec<usize> {
    if rows <= 32 {
        return (0..rows).collect();
    }
    vec![0, 1, rows / 2, rows - 1]
}

/// The sample's name in the check's detail, e.g. "rows 0, 1, 8192, 16383 of 16384 vs f64".
fn sample_text(rows: &[usize], total: usize) -> String {
    if rows.len() == total {
        return format!("all {total} rows vs f64");
    }
    format!("rows {} of {total} vs f64", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
}

/// The first `cols` elements of each of `rows` (rows `stride` elements apart), concatenated.
fn download_rows<T: DType>(dev: &Device, buf: &CudaSlice<T>, rows: &[usize], cols: usize, stride: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend(dev.download(&buf.slice(r * stride..r * stride + cols))?);
    }
    Ok(out)
}

/// Writes NaN over the first `cols` elements of each of `rows` (an element the run fails to
/// write stays NaN and fails the comparison).
fn poison_rows<T: DType>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, stride: usize) -> Result<()> {
    upload_rows(dev, buf, rows, cols, stride, &vec![T::NAN; rows.len() * cols])
}

/// Writes `values` (`rows.len()` rows of `cols`) over the first `cols` elements of each of `rows`.
fn upload_rows<T: DType>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, stride: usize, values: &[T]) -> Result<()> {
    for (i, &r) in rows.iter().enumerate() {
        dev.stream().memcpy_htod(&values[i * cols..(i + 1) * cols], &mut buf.slice_mut(r * stride..r * stride + cols))?;
    }
    Ok(())
}

/// The in-place ops' sampled rows are overwritten with fresh values before the checked run:
/// after thousands of in-place calls the timed buffers can sit near a fixed point (a residual
/// too large for x to move it in bf16, a head normalised many times over), where a call that
/// skips its work would leave the right answer; fresh rows cannot.
fn fresh_rows<T: DType>(count: usize, seed: u64) -> Vec<T> {
    Rng::new(seed).vec(count, -2.0, 2.0)
}

/// Elements of the sampled output still holding the NaN poison (the run did not write them).
fn poison_left<T: DType>(what: &'static str, got: &[T]) -> Comparison {
    compare_ints(what, &[got.iter().filter(|v| v.to_f64().is_nan()).count() as i32], &[0])
}

/// rms_norm's sampled rows `got` against the reference on the same rows of x.
fn rms_norm_comparisons<T: DType>(x: &[T], w: &[T], got: &[T]) -> Vec<Comparison> {
    let want = reference::rms_norm(x, w, RmsNormConfig::new(1e-6));
    vec![poison_left("poison left in out", got), compare("out", got, &want, tolerance::<T>()).in_rows(w.len())]
}

/// fused_add_rms_norm's sampled rows (x and residual before and after) against the reference:
/// the normalised x within tolerance, the residual bit for bit.
fn fused_add_comparisons<T: DType>(x: &[T], r: &[T], w: &[T], x_got: &[T], r_got: &[T]) -> Vec<Comparison> {
    let (r_want, x_want) = reference::fused_add_rms_norm(x, r, w, RmsNormConfig::new(1e-6));
    vec![compare("x (normalised)", x_got, &x_want, tolerance::<T>()).in_rows(w.len()), compare_exact("residual (exact)", r_got, &r_want)]
}

/// qk_rms_norm's sampled token rows of the fused QKV buffer (`row` elements each, before and
/// after) against the reference: the q and k heads normalised, the v heads untouched.
fn qk_comparisons<T: DType>(before: &[T], after: &[T], row: usize, q_heads: usize, kv_heads: usize, w: &[T]) -> Vec<Comparison> {
    let cols = (q_heads + kv_heads) * w.len();
    let tokens = before.len() / row;
    let heads = |b: &[T]| crate::check::gather_rows(b, 0, tokens, cols, row);
    let rest = |b: &[T]| crate::check::outside_rows(b, 0, tokens, cols, row);
    let want = reference::qk_rms_norm(&heads(before), q_heads, kv_heads, w, w, RmsNormConfig::new(1e-6));
    vec![compare("q and k heads", &heads(after), &want, tolerance::<T>()).in_rows(cols), compare_exact("v heads (untouched)", &rest(after), &rest(before))]
}

/// fused_add_rms_norm on [tokens, hidden] (in place: x and residual read, both written).
pub fn bench_fused_add_rms_norm<T: DType>(dev: &Device, ceilings: &Ceilings, tokens: usize, hidden: usize) -> Result<BenchRecord> {
    let n = tokens * hidden;
    let bytes = (4 * n + hidden) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let mut xs = buffers::<T>(dev, copies, n, 1)?;
    let mut rs = buffers::<T>(dev, copies, n, 2)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(hidden, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [hidden])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut x = TensorViewMut::contiguous(xs[j].as_view_mut(), [tokens, hidden])?;
        let mut r = TensorViewMut::contiguous(rs[j].as_view_mut(), [tokens, hidden])?;
        fused_add_rms_norm(dev, &mut x, &mut r, &wv, RmsNormConfig::new(1e-6))
    })?;
    let mut record = BenchRecord::bandwidth("fused_add_rms_norm", T::NAME, format!("{tokens}x{hidden}"), t, bytes as f64, ceilings);
    // The output check: copy 0's sampled rows of x and the residual, fresh (see fresh_rows).
    let rows = sampled_rows(tokens);
    let (x, r) = (fresh_rows::<T>(rows.len() * hidden, 11), fresh_rows::<T>(rows.len() * hidden, 12));
    upload_rows(dev, &mut xs[0], &rows, hidden, hidden, &x)?;
    upload_rows(dev, &mut rs[0], &rows, hidden, hidden, &r)?;
    fused_add_rms_norm(
        dev,
        &mut TensorViewMut::contiguous(xs[0].as_view_mut(), [tokens, hidden])?,
        &mut TensorViewMut::contiguous(rs[0].as_view_mut(), [tokens, hidden])?,
        &wv,
        RmsNormConfig::new(1e-6),
    )?;
    let (x_got, r_got) = (download_rows(dev, &xs[0], &rows, hidden, hidden)?, download_rows(dev, &rs[0], &rows, hidden, hidden)?);
    let comparisons = fused_add_comparisons(&x, &r, &dev.download(&w)?, &x_got, &r_got);
    record.output = Some(OutputCheck::of(&sample_text(&rows, tokens), &comparisons));
    Ok(record)
}

/// qk_rms_norm in place on the q and k heads of a fused QKV buffer [tokens, q + 2·kv heads, head_dim].
pub fn bench_qk_rms_norm<T: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<BenchRecord> {
    let row = (q_heads + 2 * kv_heads) * head_dim;
    let heads = q_heads + kv_heads;
    let bytes = (2 * tokens * heads * head_dim + 2 * head_dim) * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let mut qkvs = buffers::<T>(dev, copies, tokens * row, 1)?;
    let w = dev.upload(&Rng::new(3).vec::<T>(head_dim, -1.0, 1.0))?;
    let wv = TensorView::contiguous(w.as_view(), [head_dim])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let mut qk = TensorViewMut::new(qkvs[j].as_view_mut(), [tokens, heads, head_dim], [row, head_dim, 1])?;
        qk_rms_norm(dev, &mut qk, q_heads, &wv, &wv, RmsNormConfig::new(1e-6))
    })?;
    let mut record = BenchRecord::bandwidth("qk_rms_norm", T::NAME, format!("{tokens}x{q_heads}+{kv_heads}x{head_dim}"), t, bytes as f64, ceilings);
    // The output check: copy 0's sampled token rows (q, k and v heads), fresh (see fresh_rows).
    let rows = sampled_rows(tokens);
    let before = fresh_rows::<T>(rows.len() * row, 13);
    upload_rows(dev, &mut qkvs[0], &rows, row, row, &before)?;
    qk_rms_norm(dev, &mut TensorViewMut::new(qkvs[0].as_view_mut(), [tokens, heads, head_dim], [row, head_dim, 1])?, q_heads, &wv, &wv, RmsNormConfig::new(1e-6))?;
    let after = download_rows(dev, &qkvs[0], &rows, row, row)?;
    let comparisons = qk_comparisons(&before, &after, row, q_heads, kv_heads, &dev.download(&w)?);
    record.output = Some(OutputCheck::of(&sample_text(&rows, tokens), &comparisons));
    Ok(record)
}

/// Every RMSNorm benchmark `warpcore bench` runs (bf16, the shapes, plus f16/f32 at one).
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    use half::{bf16, f16};
    for &(t, h) in &[(16384, 4096), (16384, 8192), (64, 4096), (1, 4096)] {
        out.push(bench_rms_norm::<bf16>(dev, ceilings, t, h)?); super::checkpoint(out);
    }
    for &(t, h) in &[(16384, 4096), (16384, 8192), (64, 4096)] {
        out.push(bench_fused_add_rms_norm::<bf16>(dev, ceilings, t, h)?); super::checkpoint(out);
    }
    out.push(bench_rms_norm::<f16>(dev, ceilings, 16384, 4096)?); super::checkpoint(out);
    out.push(bench_rms_norm::<f32>(dev, ceilings, 16384, 4096)?); super::checkpoint(out);
    out.push(bench_qk_rms_norm::<bf16>(dev, ceilings, 16384, 32, 8, 128)?); super::checkpoint(out);
    out.push(bench_qk_rms_norm::<bf16>(dev, ceilings, 64, 32, 8, 128)?); super::checkpoint(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn passed(c: &[Comparison]) -> bool {
        OutputCheck::of("sample", c).passed
    }

    #[test]
    fn sampled_rows_are_all_or_four() {
        assert_eq!(sampled_rows(1), vec![0]);
        assert_eq!(sampled_rows(32), (0..32).collect::<Vec<_>>());
        assert_eq!(sampled_rows(16384), vec![0, 1, 8192, 16383]);
        assert_eq!(sample_text(&sampled_rows(64), 64), "rows 0, 1, 32, 63 of 64 vs f64");
        assert_eq!(sample_text(&sampled_rows(3), 3), "all 3 rows vs f64");
    }

    #[test]
    fn rms_norm_check_passes_the_reference_and_fails_zeros_and_poison() {
        let (rows, hidden) = (4, 256);
        let x: Vec<bf16> = fresh_rows(rows * hidden, 1);
        let w: Vec<bf16> = fresh_rows(hidden, 2);
        let good: Vec<bf16> = reference::rms_norm(&x, &w, RmsNormConfig::new(1e-6)).into_iter().map(bf16::from_f64).collect();
        assert!(passed(&rms_norm_comparisons(&x, &w, &good)));
        assert!(!passed(&rms_norm_comparisons(&x, &w, &vec![bf16::ZERO; rows * hidden])));
        let mut one_row_poisoned = good.clone();
        one_row_poisoned[2 * hidden..3 * hidden].fill(bf16::NAN);
        let c = OutputCheck::of("sample", &rms_norm_comparisons(&x, &w, &one_row_poisoned));
        assert!(!c.passed && c.detail.contains("poison"), "{}", c.detail);
    }

    #[test]
    fn fused_add_check_fails_a_skipped_call() {
        let (rows, hidden) = (2, 128);
        let (x, r): (Vec<bf16>, Vec<bf16>) = (fresh_rows(rows * hidden, 3), fresh_rows(rows * hidden, 4));
        let w: Vec<bf16> = fresh_rows(hidden, 5);
        let (r_want, x_want) = reference::fused_add_rms_norm(&x, &r, &w, RmsNormConfig::new(1e-6));
        let x_good: Vec<bf16> = x_want.into_iter().map(bf16::from_f64).collect();
        assert!(passed(&fused_add_comparisons(&x, &r, &w, &x_good, &r_want)));
        assert!(!passed(&fused_add_comparisons(&x, &r, &w, &x, &r)));
        assert!(!passed(&fused_add_comparisons(&x, &r, &w, &x_good, &r)));
    }

    #[test]
    fn qk_check_fails_a_skipped_call_and_a_touched_v_head() {
        let (q, kv, d) = (4, 2, 64);
        let row = (q + 2 * kv) * d;
        let before: Vec<bf16> = fresh_rows(3 * row, 6);
        let w: Vec<bf16> = fresh_rows(d, 7);
        let cols = (q + kv) * d;
        let want = reference::qk_rms_norm(&crate::check::gather_rows(&before, 0, 3, cols, row), q, kv, &w, &w, RmsNormConfig::new(1e-6));
        let mut after = before.clone();
        for t in 0..3 {
            for c in 0..cols {
                after[t * row + c] = bf16::from_f64(want[t * cols + c]);
            }
        }
        assert!(passed(&qk_comparisons(&before, &after, row, q, kv, &w)));
        assert!(!passed(&qk_comparisons(&before, &before, row, q, kv, &w)));
        after[row - 1] = bf16::NAN;
        assert!(!passed(&qk_comparisons(&before, &after, row, q, kv, &w)));
    }
}
