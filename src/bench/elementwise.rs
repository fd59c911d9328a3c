//! Benchmarks of the element-wise family at the model shapes (Llama-3.2-1B: intermediate 8192,
//! hidden 2048, vocab 128256; Llama-3-8B: 14336). Bytes: each input read once, each output
//! written once.

use super::{rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::check::Rng;
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
    Ok(BenchRecord::bandwidth("glu", T::NAME, format!("{rows}x{cols}"), t, bytes as f64, ceilings))
}

/// select_rows of `rows` random rows of a [vocab, cols] table (an embedding lookup).
pub fn bench_select_rows<T: DType>(dev: &Device, ceilings: &Ceilings, vocab: usize, rows: usize, cols: usize) -> Result<BenchRecord> {
    let bytes = 2 * rows * cols * std::mem::size_of::<T>() + rows * 4;
    let table = super::random_buffer::<T>(dev, vocab * cols, -1.0, 1.0, 2)?;
    let mut rng = Rng::new(3);
    let idx: Vec<i32> = (0..rows).map(|_| (rng.next_u64() % vocab as u64) as i32).collect();
    let idx = dev.upload(&idx)?;
    let mut out = dev.zeros::<T>(rows * cols)?;
    let t = time_calls(dev, SAMPLES, |_| {
        let src = TensorView::contiguous(table.as_view(), [vocab, cols])?;
        let iv = TensorView::contiguous(idx.as_view(), [rows])?;
        let mut o = TensorViewMut::contiguous(out.as_view_mut(), [rows, cols])?;
        select_rows(dev, &src, &iv, &mut o)
    })?;
    Ok(BenchRecord::bandwidth("select_rows", T::NAME, format!("{rows}of{vocab}x{cols}"), t, bytes as f64, ceilings))
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
    Ok(BenchRecord::bandwidth("argmax_rows", "f32", format!("{rows}x{vocab}"), t, bytes as f64, ceilings))
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
    Ok(BenchRecord::bandwidth("sample_rows", "f32", format!("{rows}x{vocab} per-row settings"), t, bytes as f64, ceilings))
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
