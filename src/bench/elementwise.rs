//! Benchmarks of the element-wise family at the model shapes (Llama-3.2-1B: intermediate 8192,
//! hidden 2048, vocab 128256; Llama-3-8B: 14336). Bytes: each input read once, each output
//! written once.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::{compare, compare_exact, compare_ints, tolerance, Comparison, Rng};
use crate::reference::elementwise as reference;
use cudarc::driver::{CudaSlice, DeviceRepr};
use crate::ops::elementwise::{argmax_rows, glu, sample_rows, sample_rows_each, select_rows, RowSampleConfig, SampleConfig};
use crate::reference::mlp::GluActivation;
use crate::{DType, Device, Result, TensorView, TensorViewMut};

const SAMPLES: usize = 25;

/// glu over a fused gate_up buffer [rows, 2·cols] into [rows, cols].
pub fn bench_glu<T: DType>(dev: &Device, ceilings: &Ceilings, rows: usize, cols: usize) -> Result<BenchRecord> {
    let bytes = 3 * rows * cols * std::mem::size_of::<T>();
    let copies = rotation_copies(bytes);
    let host: Vec<T> = Rng::new(1).vec(rows * 2 * cols, -4.0, 4.0);
    let ins = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>, _>>()?;
    let mut outs = (0..copies).map(|_| dev.zeros::<T>(rows * cols)).collect::<Result<Vec<_>>>()?;
    let t = time_calls(dev, SAMPLES, |i| {
        let j = i % copies;
        let gate = TensorView::new(ins[j].as_view(), [rows, cols], [2 * cols, 1])?;
        let up = TensorView::new(ins[j].slice(cols..), [rows, cols], [2 * cols, 1])?;
        let mut o = TensorViewMut::contiguous(outs[j].as_view_mut(), [rows, cols])?;
        glu(dev, &gate, &up, &mut o, GluActivation::Silu)
    })?;
    let mut record = BenchRecord::bandwidth("glu", T::NAME, format!("{rows}x{cols}"), t, bytes as f64, ceilings);
    // The output check (copy 0): the sampled rows poisoned, then against act(gate) · up in f64.
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut outs[0], &sample, cols, cols, T::NAN)?;
    glu(
        dev,
        &TensorView::new(ins[0].as_view(), [rows, cols], [2 * cols, 1])?,
        &TensorView::new(ins[0].slice(cols..), [rows, cols], [2 * cols, 1])?,
        &mut TensorViewMut::contiguous(outs[0].as_view_mut(), [rows, cols])?,
        GluActivation::Silu,
    )?;
    let gate_up = download_rows(dev, &ins[0], &sample, 2 * cols, 2 * cols)?;
    let got = download_rows(dev, &outs[0], &sample, cols, cols)?;
    record.output = Some(OutputCheck::of(&sample_text(&sample, rows), &glu_comparisons(&gate_up, cols, &got)));
    Ok(record)
}

/// select_rows of `rows` random rows of a [vocab, cols] table (an embedding lookup).
pub fn bench_select_rows<T: DType>(dev: &Device, ceilings: &Ceilings, vocab: usize, rows: usize, cols: usize) -> Result<BenchRecord> {
    let bytes = 2 * rows * cols * std::mem::size_of::<T>() + rows * 4;
    let table = super::random_buffer::<T>(dev, vocab * cols, -1.0, 1.0, 2)?;
    let mut rng = Rng::new(3);
    let idx_host: Vec<i32> = (0..rows).map(|_| (rng.next_u64() % vocab as u64) as i32).collect();
    let idx = dev.upload(&idx_host)?;
    let mut out = dev.zeros::<T>(rows * cols)?;
    let t = time_calls(dev, SAMPLES, |_| {
        let src = TensorView::contiguous(table.as_view(), [vocab, cols])?;
        let iv = TensorView::contiguous(idx.as_view(), [rows])?;
        let mut o = TensorViewMut::contiguous(out.as_view_mut(), [rows, cols])?;
        select_rows(dev, &src, &iv, &mut o)
    })?;
    let mut record = BenchRecord::bandwidth("select_rows", T::NAME, format!("{rows}of{vocab}x{cols}"), t, bytes as f64, ceilings);
    // The output check: the sampled rows poisoned, then against the table rows they select.
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut out, &sample, cols, cols, T::NAN)?;
    select_rows(
        dev,
        &TensorView::contiguous(table.as_view(), [vocab, cols])?,
        &TensorView::contiguous(idx.as_view(), [rows])?,
        &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, cols])?,
    )?;
    let picked: Vec<usize> = sample.iter().map(|&r| idx_host[r] as usize).collect();
    let src = download_rows(dev, &table, &picked, cols, cols)?;
    let got = download_rows(dev, &out, &sample, cols, cols)?;
    record.output = Some(OutputCheck::of(&sample_text(&sample, rows), &select_comparisons(&src, cols, &got)));
    Ok(record)
}

/// argmax_rows over `rows` rows of `vocab` f32 logits (greedy decoding's token choice).
pub fn bench_argmax_rows(dev: &Device, ceilings: &Ceilings, rows: usize, vocab: usize) -> Result<BenchRecord> {
    let bytes = rows * vocab * 4 + rows * 4;
    let logits = super::random_buffer::<f32>(dev, rows * vocab, -30.0, 30.0, 4)?;
    let mut out = dev.zeros::<i32>(rows)?;
    let t = time_calls(dev, SAMPLES, |_| {
        let x = TensorView::contiguous(logits.as_view(), [rows, vocab])?;
        argmax_rows(dev, &x, &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?)
    })?;
    let mut record = BenchRecord::bandwidth("argmax_rows", "f32", format!("{rows}x{vocab}"), t, bytes as f64, ceilings);
    // The output check: the sampled rows' tokens poisoned, then against the reference's argmax.
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut out, &sample, 1, 1, TOKEN_POISON)?;
    argmax_rows(dev, &TensorView::contiguous(logits.as_view(), [rows, vocab])?, &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?)?;
    let x = download_rows(dev, &logits, &sample, vocab, vocab)?;
    let got = download_rows(dev, &out, &sample, 1, 1)?;
    let want: Vec<i32> = x.chunks(vocab).map(|row| reference::argmax(row) as i32).collect();
    record.output = Some(OutputCheck::of(&sample_text(&sample, rows), &token_comparisons(&got, &want)));
    Ok(record)
}

/// sample_rows over `rows` rows of `vocab` f32 logits (sampled decoding's token choice) at
/// temperature 0.8 with top-k `top_k` and top-p `top_p`, against copying the logits to the host
/// and running the model's host Sampler on each row (what a step did before).
pub fn bench_sample_rows(dev: &Device, ceilings: &Ceilings, rows: usize, vocab: usize, top_k: usize, top_p: f32) -> Result<BenchRecord> {
    let bytes = rows * vocab * 4 + rows * 8;
    let mut rng = Rng::new(5);
    // LM-like rows: a few plausible tokens well above a wide tail.
    let host: Vec<f32> = (0..rows * vocab).map(|i| if i % 97 == 0 { rng.uniform(8.0, 14.0) as f32 } else { rng.uniform(-4.0, 4.0) as f32 }).collect();
    let logits = dev.upload(&host)?;
    let uniforms = dev.upload(&(0..rows).map(|r| (r as f32 + 0.5) / rows as f32).collect::<Vec<f32>>())?;
    let mut out = dev.zeros::<i32>(rows)?;
    let cfg = SampleConfig { temperature: 0.8, top_k, top_p };
    let t = time_calls(dev, SAMPLES, |_| {
        let x = TensorView::contiguous(logits.as_view(), [rows, vocab])?;
        let u = TensorView::contiguous(uniforms.as_view(), [rows])?;
        sample_rows(dev, &x, &u, cfg, &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?)
    })?;
    let key = format!("{rows}x{vocab} top_k {top_k} top_p {top_p}");
    let mut record = BenchRecord::bandwidth("sample_rows", "f32", key, t, bytes as f64, ceilings);
    // The output check: the sampled rows' tokens poisoned, then against the reference's draw
    // with the same uniforms (the same token: the weights are the same bits on both sides).
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut out, &sample, 1, 1, TOKEN_POISON)?;
    sample_rows(
        dev,
        &TensorView::contiguous(logits.as_view(), [rows, vocab])?,
        &TensorView::contiguous(uniforms.as_view(), [rows])?,
        cfg,
        &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?,
    )?;
    let got = download_rows(dev, &out, &sample, 1, 1)?;
    let settings = vec![(0.8, top_k as i32, top_p); rows];
    let want = sample_want(&download_rows(dev, &logits, &sample, vocab, vocab)?, &sample, rows, &settings);
    record.output = Some(OutputCheck::of(&sample_text(&sample, rows), &token_comparisons(&got, &want)));
    let start = std::time::Instant::now();
    const HOST_REPS: usize = 3;
    for _ in 0..HOST_REPS {
        let l = dev.download(&logits)?;
        for r in 0..rows {
            std::hint::black_box(crate::reference::elementwise::sample_row(&l[r * vocab..(r + 1) * vocab], 0.8, top_k, top_p, 0.5));
        }
    }
    record.add_alternative("logits to the host + host sampler", start.elapsed().as_secs_f64() * 1e6 / HOST_REPS as f64);
    Ok(record)
}

/// `sample_rows_each` on `rows` LM-like rows of `vocab` logits, the rows' settings cycling
/// through top-p 0.9, top-k 50, greedy and (T 1.2, top-k 20, top-p 0.95): an engine's mixed
/// batch. Key "{rows}x{vocab} per-row settings"; expected to cost what `sample_rows` does.
pub fn bench_sample_rows_each(dev: &Device, ceilings: &Ceilings, rows: usize, vocab: usize) -> Result<BenchRecord> {
    let bytes = rows * vocab * 4 + rows * 20;
    let mut rng = Rng::new(6);
    let host: Vec<f32> = (0..rows * vocab).map(|i| if i % 97 == 0 { rng.uniform(8.0, 14.0) as f32 } else { rng.uniform(-4.0, 4.0) as f32 }).collect();
    let settings = [(0.8f32, 0i32, 0.9f32), (0.8, 50, 1.0), (0.0, 0, 1.0), (1.2, 20, 0.95)];
    let row = |r: usize| settings[r % settings.len()];
    let logits = dev.upload(&host)?;
    let uniforms = dev.upload(&(0..rows).map(|r| (r as f32 + 0.5) / rows as f32).collect::<Vec<f32>>())?;
    let temperature = dev.upload(&(0..rows).map(|r| row(r).0).collect::<Vec<_>>())?;
    let top_k = dev.upload(&(0..rows).map(|r| row(r).1).collect::<Vec<_>>())?;
    let top_p = dev.upload(&(0..rows).map(|r| row(r).2).collect::<Vec<_>>())?;
    let mut out = dev.zeros::<i32>(rows)?;
    let t = time_calls(dev, SAMPLES, |_| {
        let x = TensorView::contiguous(logits.as_view(), [rows, vocab])?;
        let u = TensorView::contiguous(uniforms.as_view(), [rows])?;
        let (tv, kv, pv) = (TensorView::contiguous(temperature.as_view(), [rows])?, TensorView::contiguous(top_k.as_view(), [rows])?, TensorView::contiguous(top_p.as_view(), [rows])?);
        sample_rows_each(dev, &x, &u, RowSampleConfig { temperature: &tv, top_k: &kv, top_p: &pv }, &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?)
    })?;
    let mut record = BenchRecord::bandwidth("sample_rows", "f32", format!("{rows}x{vocab} per-row settings"), t, bytes as f64, ceilings);
    // The output check, as bench_sample_rows', each row with its own settings.
    let sample = sampled_rows(rows);
    poison_rows(dev, &mut out, &sample, 1, 1, TOKEN_POISON)?;
    {
        let (tv, kv, pv) = (TensorView::contiguous(temperature.as_view(), [rows])?, TensorView::contiguous(top_k.as_view(), [rows])?, TensorView::contiguous(top_p.as_view(), [rows])?);
        sample_rows_each(
            dev,
            &TensorView::contiguous(logits.as_view(), [rows, vocab])?,
            &TensorView::contiguous(uniforms.as_view(), [rows])?,
            RowSampleConfig { temperature: &tv, top_k: &kv, top_p: &pv },
            &mut TensorViewMut::contiguous(out.as_view_mut(), [rows])?,
        )?;
    }
    let got = download_rows(dev, &out, &sample, 1, 1)?;
    let settings: Vec<(f32, i32, f32)> = (0..rows).map(row).collect();
    let want = sample_want(&download_rows(dev, &logits, &sample, vocab, vocab)?, &sample, rows, &settings);
    record.output = Some(OutputCheck::of(&sample_text(&sample, rows), &token_comparisons(&got, &want)));
    Ok(record)
}

/// Poison for token outputs: an id no op writes.
const TOKEN_POISON: i32 = -7;

/// Rows the output check samples: every row when at most 32, else 0, 1, rows/2 and the last.
fn sampled_rows(rows: usize) -> Vec<usize> {
    if rows <= 32 {
        return (0..rows).collect();
    }
    vec![0, 1, rows / 2, rows - 1]
}

/// The sample's name in the check's detail, e.g. "rows 0, 1, 1024, 2047 of 2048 vs f64".
fn sample_text(rows: &[usize], total: usize) -> String {
    if rows.len() == total {
        return format!("all {total} rows vs the reference");
    }
    format!("rows {} of {total} vs the reference", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
}

/// The first `cols` elements of each of `rows` (rows `stride` elements apart), concatenated.
fn download_rows<T: DeviceRepr>(dev: &Device, buf: &CudaSlice<T>, rows: &[usize], cols: usize, stride: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend(dev.download(&buf.slice(r * stride..r * stride + cols))?);
    }
    Ok(out)
}

/// Writes `poison` over the first `cols` elements of each of `rows`.
fn poison_rows<T: DeviceRepr + Clone>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, stride: usize, poison: T) -> Result<()> {
    let p = vec![poison; cols];
    for &r in rows {
        dev.stream().memcpy_htod(&p, &mut buf.slice_mut(r * stride..r * stride + cols))?;
    }
    Ok(())
}

/// Elements of a sampled float output still holding the NaN poison.
fn nan_left<T: DType>(what: &'static str, got: &[T]) -> Comparison {
    compare_ints(what, &[got.iter().filter(|v| v.to_f64().is_nan()).count() as i32], &[0])
}

/// glu's sampled rows (`gate_up`: their rows of 2·cols) against act(gate) · up in f64.
fn glu_comparisons<T: DType>(gate_up: &[T], cols: usize, got: &[T]) -> Vec<Comparison> {
    let rows = gate_up.len() / (2 * cols);
    let gate = crate::check::gather_rows(gate_up, 0, rows, cols, 2 * cols);
    let up = crate::check::gather_rows(gate_up, cols, rows, cols, 2 * cols);
    let want: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| GluActivation::Silu.apply(g.to_f64()) * u.to_f64()).collect();
    vec![nan_left("poison left in out", got), compare("out", got, &want, tolerance::<T>()).in_rows(cols)]
}

/// select_rows's sampled rows against the table rows they select (`src`, in order), bit for bit.
fn select_comparisons<T: DType>(src: &[T], cols: usize, got: &[T]) -> Vec<Comparison> {
    let indices: Vec<i64> = (0..(src.len() / cols) as i64).collect();
    let want: Vec<T> = reference::select_rows(src, cols, &indices).into_iter().flat_map(|r| r.unwrap_or_default()).collect();
    vec![nan_left("poison left in out", got), compare_exact("out (copied rows)", got, &want).in_rows(cols)]
}

/// The sampled rows' tokens against the reference's, exactly (the poison is no token).
fn token_comparisons(got: &[i32], want: &[i32]) -> Vec<Comparison> {
    vec![compare_ints("poison left in out", &[got.iter().filter(|&&t| t == TOKEN_POISON).count() as i32], &[0]), compare_ints("tokens (exact)", got, want)]
}

/// The reference's token for each sampled row (`x`: their logits, in order) with the bench's
/// uniforms ((r + 0.5) / rows) and row r's (temperature, top_k, top_p) from `settings`.
fn sample_want(x: &[f32], sample: &[usize], rows: usize, settings: &[(f32, i32, f32)]) -> Vec<i32> {
    let vocab = x.len() / sample.len().max(1);
    sample
        .iter()
        .zip(x.chunks(vocab.max(1)))
        .map(|(&r, row)| {
            let (t, k, p) = settings[r];
            reference::sample_row(row, t, k.max(0) as usize, p, (r as f32 + 0.5) / rows as f32) as i32
        })
        .collect()
}

/// Every element-wise benchmark `warpcore bench` runs.
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    use half::bf16;
    for &(rows, cols) in &[(2048, 8192), (32, 8192), (1, 8192), (4096, 14336)] {
        out.push(bench_glu::<bf16>(dev, ceilings, rows, cols)?); super::checkpoint(out);
    }
    for &rows in &[2048, 32] {
        out.push(bench_select_rows::<bf16>(dev, ceilings, 128256, rows, 2048)?); super::checkpoint(out);
    }
    for &rows in &[1, 32] {
        out.push(bench_argmax_rows(dev, ceilings, rows, 128256)?); super::checkpoint(out);
        out.push(bench_sample_rows(dev, ceilings, rows, 128256, 0, 0.9)?); super::checkpoint(out);
        out.push(bench_sample_rows(dev, ceilings, rows, 128256, 50, 1.0)?); super::checkpoint(out);
    }
    out.push(bench_sample_rows_each(dev, ceilings, 32, 128256)?); super::checkpoint(out);
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
    fn glu_and_select_checks_fail_zeros_and_poison() {
        let cols = 128;
        let gate_up: Vec<bf16> = Rng::new(1).vec(3 * 2 * cols, -4.0, 4.0);
        let good: Vec<bf16> = (0..3)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| bf16::from_f64(GluActivation::Silu.apply(gate_up[r * 2 * cols + c].to_f64()) * gate_up[r * 2 * cols + cols + c].to_f64()))
            .collect();
        assert!(passed(&glu_comparisons(&gate_up, cols, &good)));
        assert!(!passed(&glu_comparisons(&gate_up, cols, &vec![bf16::ZERO; good.len()])));
        let mut poisoned = good.clone();
        poisoned[cols..2 * cols].fill(bf16::NAN);
        assert!(!passed(&glu_comparisons(&gate_up, cols, &poisoned)));
        let src: Vec<bf16> = Rng::new(2).vec(4 * cols, -1.0, 1.0);
        assert!(passed(&select_comparisons(&src, cols, &src)));
        let mut poisoned = src.clone();
        poisoned[0] = bf16::NAN;
        assert!(!passed(&select_comparisons(&src, cols, &poisoned)));
    }

    #[test]
    fn token_checks_follow_the_reference_and_fail_poison() {
        let (rows, vocab) = (3, 1000);
        let x: Vec<f32> = Rng::new(3).vec(rows * vocab, -4.0, 4.0);
        let sample = sampled_rows(rows);
        let settings = vec![(0.8, 50, 0.9); rows];
        let want = sample_want(&x, &sample, rows, &settings);
        let by_hand: Vec<i32> = (0..rows).map(|r| reference::sample_row(&x[r * vocab..][..vocab], 0.8, 50, 0.9, (r as f32 + 0.5) / 3.0) as i32).collect();
        assert_eq!(want, by_hand);
        assert!(passed(&token_comparisons(&want, &want)));
        assert!(!passed(&token_comparisons(&[want[0], TOKEN_POISON, want[2]], &want)));
        assert!(!passed(&token_comparisons(&[0, 0, 0], &[1, 0, 0])));
    }
}
