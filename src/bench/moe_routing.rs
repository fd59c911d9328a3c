//! Benchmarks of the MoE routing family at the shapes issue 4 sets bars for (docs/moe_routing.md).
//! Bytes counted: each input read once, each output written once (gather: each token row read
//! once and written top_k times, plus the zero-filled padding rows).

use super::{rotation_copies, time_calls, BenchRecord, Ceilings, OutputCheck};
use crate::check::moe_routing::INT_POISON;
use crate::check::{compare, compare_exact, compare_ints, tolerance, Comparison, Rng};
use crate::ops::moe_routing::{moe_align, moe_combine, moe_gate, moe_gather, MoeAlignOutputs, MoeAlignSizes, MoeGateConfig, MoeScoring};
use crate::reference::moe_routing as reference;
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;

const SAMPLES: usize = 25;

/// The shape key of a gate benchmark, e.g. "16384x256 top8 softmax" or
/// "16384x256 top8 sigmoid g8/4"; bench/compare_torch.py writes the same keys.
pub fn gate_shape(tokens: usize, experts: usize, top_k: usize, cfg: &MoeGateConfig) -> String {
    match cfg.scoring {
        MoeScoring::Softmax => format!("{tokens}x{experts} top{top_k} softmax"),
        MoeScoring::Sigmoid => format!("{tokens}x{experts} top{top_k} sigmoid g{}/{}", cfg.n_group, cfg.topk_group),
    }
}

/// moe_gate on [tokens, experts] logits (+ bias for sigmoid scoring; + counts when `counts`).
pub fn bench_moe_gate<T: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    experts: usize,
    top_k: usize,
    cfg: &MoeGateConfig,
    counts: bool,
) -> Result<BenchRecord> {
    let sigmoid = cfg.scoring == MoeScoring::Sigmoid;
    let n = tokens * experts;
    let bytes = n * std::mem::size_of::<T>() + tokens * top_k * 8 + if sigmoid { experts * 4 } else { 0 } + if counts { experts * 8 } else { 0 };
    let copies = rotation_copies(bytes);
    let host: Vec<T> = Rng::new(1).vec(n, -3.0, 3.0);
    let logits = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>>>()?;
    let bias_host: Vec<f32> = Rng::new(2).vec(experts, -0.5, 0.5);
    let bias = dev.upload(&bias_host)?;
    let mut ids = dev.zeros::<i32>(tokens * top_k)?;
    let mut weights = dev.zeros::<f32>(tokens * top_k)?;
    let mut cnt = dev.zeros::<i32>(experts)?;
    let bv = TensorView::contiguous(bias.as_view(), [experts])?;
    let t = time_calls(dev, SAMPLES, |i| {
        let mut c = TensorViewMut::contiguous(cnt.as_view_mut(), [experts])?;
        moe_gate(
            dev,
            &TensorView::contiguous(logits[i % copies].as_view(), [tokens, experts])?,
            sigmoid.then_some(&bv),
            &mut TensorViewMut::contiguous(ids.as_view_mut(), [tokens, top_k])?,
            &mut TensorViewMut::contiguous(weights.as_view_mut(), [tokens, top_k])?,
            if counts { Some(&mut c) } else { None },
            cfg,
        )
    })?;
    let mut shape = gate_shape(tokens, experts, top_k, cfg);
    if counts {
        shape += " +counts";
    }
    let mut record = BenchRecord::bandwidth("moe_gate", T::NAME, shape, t, bytes as f64, ceilings);
    // The output check (copy 0): the sampled tokens' ids and weights poisoned, the counts zeroed
    // (the timed calls accumulated into them), then one call against the reference.
    let sample = sampled_rows(tokens);
    poison_rows(dev, &mut ids, &sample, top_k, INT_POISON)?;
    poison_rows(dev, &mut weights, &sample, top_k, f32::NAN)?;
    dev.stream().memcpy_htod(&vec![0i32; experts], &mut cnt)?;
    {
        let mut c = TensorViewMut::contiguous(cnt.as_view_mut(), [experts])?;
        moe_gate(
            dev,
            &TensorView::contiguous(logits[0].as_view(), [tokens, experts])?,
            sigmoid.then_some(&bv),
            &mut TensorViewMut::contiguous(ids.as_view_mut(), [tokens, top_k])?,
            &mut TensorViewMut::contiguous(weights.as_view_mut(), [tokens, top_k])?,
            if counts { Some(&mut c) } else { None },
            cfg,
        )?;
    }
    let ids_got = download_rows(dev, &ids, &sample, top_k)?;
    let w_got = download_rows(dev, &weights, &sample, top_k)?;
    let counts_got = if counts { Some(dev.download(&cnt)?) } else { None };
    let comparisons = gate_comparisons(&host, experts, top_k, sigmoid.then_some(&bias_host[..]), cfg, &sample, &ids_got, &w_got, counts_got.as_deref());
    let what = if counts { format!("{}; counts of all tokens", sample_text(&sample, tokens)) } else { sample_text(&sample, tokens) };
    record.output = Some(OutputCheck::of(&what, &comparisons));
    Ok(record)
}

/// Realistic routing for the permutation benchmarks: softmax top-k of random logits.
fn routing(tokens: usize, experts: usize, top_k: usize) -> Vec<i32> {
    let logits: Vec<f32> = Rng::new(3).vec(tokens * experts, -3.0, 3.0);
    reference::moe_gate(&logits, experts, top_k, None, &MoeGateConfig::softmax_topk(true)).topk_ids
}

/// Device buffers for one align's outputs.
struct AlignBuffers {
    sizes: MoeAlignSizes,
    sorted: CudaSlice<i32>,
    blocks: CudaSlice<i32>,
    offsets: CudaSlice<i32>,
    counts: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    workspace: CudaSlice<i32>,
}

impl AlignBuffers {
    fn new(dev: &Device, sizes: MoeAlignSizes, experts: usize) -> Result<Self> {
        Ok(Self {
            sizes,
            sorted: dev.zeros(sizes.sorted_len)?,
            blocks: dev.zeros(sizes.blocks_len)?,
            offsets: dev.zeros(experts + 1)?,
            counts: dev.zeros(experts)?,
            positions: dev.zeros(sizes.num_assignments)?,
            workspace: dev.zeros(sizes.workspace_len.max(1))?,
        })
    }
    /// The outputs on the host: sorted_ids, block_expert_ids, expert_offsets, expert_counts,
    /// token_positions.
    fn tables(&self, dev: &Device) -> Result<reference::AlignOutput> {
        Ok(reference::AlignOutput {
            sorted_ids: dev.download(&self.sorted)?,
            block_expert_ids: dev.download(&self.blocks)?,
            expert_offsets: dev.download(&self.offsets)?,
            expert_counts: dev.download(&self.counts)?,
            token_positions: dev.download(&self.positions)?,
        })
    }
    fn run(&mut self, dev: &Device, ids: &TensorView<i32, 2>, experts: usize, block_m: usize) -> Result<()> {
        let s = self.sizes;
        let [tokens, top_k] = ids.shape();
        moe_align(
            dev,
            ids,
            experts,
            block_m,
            MoeAlignOutputs {
                sorted_ids: &mut TensorViewMut::contiguous(self.sorted.as_view_mut(), [s.sorted_len])?,
                block_expert_ids: &mut TensorViewMut::contiguous(self.blocks.as_view_mut(), [s.blocks_len])?,
                expert_offsets: &mut TensorViewMut::contiguous(self.offsets.as_view_mut(), [experts + 1])?,
                expert_counts: &mut TensorViewMut::contiguous(self.counts.as_view_mut(), [experts])?,
                token_positions: &mut TensorViewMut::contiguous(self.positions.as_view_mut(), [tokens, top_k])?,
                workspace: &mut TensorViewMut::contiguous(self.workspace.slice_mut(..s.workspace_len), [s.workspace_len])?,
            },
        )
    }
}

/// moe_align of [tokens, top_k] ids over `experts` experts, padded to `block_m`.
pub fn bench_moe_align(dev: &Device, ceilings: &Ceilings, tokens: usize, top_k: usize, experts: usize, block_m: usize) -> Result<BenchRecord> {
    let sizes = MoeAlignSizes::new(tokens, top_k, experts, block_m)?;
    let host = routing(tokens, experts, top_k);
    let bytes = 4 * (2 * sizes.num_assignments + sizes.sorted_len + sizes.blocks_len + 2 * experts + 1);
    let copies = rotation_copies(bytes);
    let ids = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>>>()?;
    let mut bufs = AlignBuffers::new(dev, sizes, experts)?;
    let t = time_calls(dev, SAMPLES, |i| bufs.run(dev, &TensorView::contiguous(ids[i % copies].as_view(), [tokens, top_k])?, experts, block_m))?;
    let mut record = BenchRecord::bandwidth("moe_align", "i32", format!("{tokens}x{top_k} e{experts} bm{block_m}"), t, bytes as f64, ceilings);
    // The output check (copy 0): every output (an index structure, under 1 MB) poisoned, then
    // compared whole with the reference.
    for buf in [&mut bufs.sorted, &mut bufs.blocks, &mut bufs.offsets, &mut bufs.counts, &mut bufs.positions] {
        let len = buf.len();
        dev.stream().memcpy_htod(&vec![INT_POISON; len], buf)?;
    }
    bufs.run(dev, &TensorView::contiguous(ids[0].as_view(), [tokens, top_k])?, experts, block_m)?;
    let got = bufs.tables(dev)?;
    let comparisons = align_comparisons(&got, &reference::moe_align(&host, top_k, experts, block_m));
    record.output = Some(OutputCheck::of("every output vs the reference", &comparisons));
    Ok(record)
}

/// The routing tables of a permutation benchmark, on the device, the padded total, and the
/// reference's tables.
fn permutation(dev: &Device, tokens: usize, top_k: usize, experts: usize, block_m: usize) -> Result<(AlignBuffers, usize, reference::AlignOutput)> {
    let sizes = MoeAlignSizes::new(tokens, top_k, experts, block_m)?;
    let host = routing(tokens, experts, top_k);
    let want = reference::moe_align(&host, top_k, experts, block_m);
    let total = want.expert_offsets[experts] as usize;
    let ids = dev.upload(&host)?;
    let mut bufs = AlignBuffers::new(dev, sizes, experts)?;
    bufs.run(dev, &TensorView::contiguous(ids.as_view(), [tokens, top_k])?, experts, block_m)?;
    Ok((bufs, total, want))
}

/// The tables a permutation benchmark's gather or combine read (the device align's) against
/// the reference's: the sampled rows' expectations follow the reference's.
fn table_comparisons(got: &reference::AlignOutput, want: &reference::AlignOutput) -> Vec<Comparison> {
    vec![
        compare_ints("routing token_positions (device align)", &got.token_positions, &want.token_positions),
        compare_ints("routing expert_offsets (device align)", &got.expert_offsets, &want.expert_offsets),
        compare_ints("routing expert_counts (device align)", &got.expert_counts, &want.expert_counts),
    ]
}

/// Rows the output check samples: every row when at most 32, else 0, 1, rows/2 and the last.
fn sampled_rows(rows: usize) -> Vec<usize> {
    if rows <= 32 {
        return (0..rows).collect();
    }
    vec![0, 1, rows / 2, rows - 1]
}

/// The sample's name in the check's detail, e.g. "tokens 0, 1, 8192, 16383 of 16384 vs f64".
fn sample_text(rows: &[usize], total: usize) -> String {
    if rows.len() == total {
        return format!("all {total} tokens vs f64");
    }
    format!("tokens {} of {total} vs f64", rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
}

/// Rows `rows` of `cols` elements (dense), concatenated.
fn download_rows<T: cudarc::driver::DeviceRepr>(dev: &Device, buf: &CudaSlice<T>, rows: &[usize], cols: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend(dev.download(&buf.slice(r * cols..(r + 1) * cols))?);
    }
    Ok(out)
}

/// Writes `poison` over rows `rows` of `cols` elements (dense).
fn poison_rows<T: cudarc::driver::DeviceRepr + Clone>(dev: &Device, buf: &mut CudaSlice<T>, rows: &[usize], cols: usize, poison: T) -> Result<()> {
    let p = vec![poison; cols];
    for &r in rows {
        dev.stream().memcpy_htod(&p, &mut buf.slice_mut(r * cols..(r + 1) * cols))?;
    }
    Ok(())
}

/// Elements of a sampled float output still holding the NaN poison.
fn nan_left<T: DType>(what: &'static str, got: &[T]) -> Comparison {
    compare_ints(what, &[got.iter().filter(|v| v.to_f64().is_nan()).count() as i32], &[0])
}

/// moe_gate's sampled tokens (`ids`, `weights`: their rows) against the reference on the same
/// logits rows; `counts` (the call's counts from zero) against the reference over every token.
#[allow(clippy::too_many_arguments)]
fn gate_comparisons<T: DType>(
    logits: &[T],
    experts: usize,
    top_k: usize,
    bias: Option<&[f32]>,
    cfg: &MoeGateConfig,
    sample: &[usize],
    ids: &[i32],
    weights: &[f32],
    counts: Option<&[i32]>,
) -> Vec<Comparison> {
    let rows: Vec<T> = sample.iter().flat_map(|&t| logits[t * experts..][..experts].iter().copied()).collect();
    let want = reference::moe_gate(&rows, experts, top_k, bias, cfg);
    let mut c = vec![
        compare_ints("poison left in topk_ids", &[ids.iter().filter(|&&v| v == INT_POISON).count() as i32], &[0]),
        nan_left("poison left in topk_weights", weights),
        compare_ints("topk_ids (exact)", ids, &want.topk_ids),
        compare("topk_weights", weights, &want.topk_weights, tolerance::<f32>()),
    ];
    if let Some(got) = counts {
        let all = reference::moe_gate(logits, experts, top_k, bias, cfg);
        c.push(compare_ints("expert_counts (exact, every token)", got, &all.expert_counts));
    }
    c
}

/// Every output of moe_align against the reference.
fn align_comparisons(got: &reference::AlignOutput, want: &reference::AlignOutput) -> Vec<Comparison> {
    vec![
        compare_ints("sorted_ids", &got.sorted_ids, &want.sorted_ids),
        compare_ints("block_expert_ids", &got.block_expert_ids, &want.block_expert_ids),
        compare_ints("expert_offsets", &got.expert_offsets, &want.expert_offsets),
        compare_ints("expert_counts", &got.expert_counts, &want.expert_counts),
        compare_ints("token_positions", &got.token_positions, &want.token_positions),
    ]
}

/// The rows of the permuted buffer the gather check reads: each sampled token's assignment
/// rows (in order; an unplaced assignment skipped), then the first padding row of each
/// expert they go to (where it has one).
fn gather_check_rows(a: &reference::AlignOutput, sample: &[usize], top_k: usize) -> (Vec<usize>, Vec<usize>) {
    let placed: Vec<usize> = sample.iter().flat_map(|&t| a.token_positions[t * top_k..][..top_k].iter().filter(|&&p| p >= 0).map(|&p| p as usize)).collect();
    let mut padding = Vec::new();
    for &p in &placed {
        let e = a.expert_offsets.partition_point(|&o| o as usize <= p) - 1;
        let first = (a.expert_offsets[e] + a.expert_counts[e]) as usize;
        if first < a.expert_offsets[e + 1] as usize && !padding.contains(&first) {
            padding.push(first);
        }
    }
    (placed, padding)
}

/// moe_gather's checked rows (`got`: the placed rows of the sampled tokens, then the padding
/// rows, as [`gather_check_rows`] lists them) against the reference: each placed row its
/// token's x row bit for bit, each padding row zero. `x` holds the sampled tokens' rows.
fn gather_comparisons<T: DType>(x: &[T], positions: &[i32], hidden: usize, top_k: usize, padding: usize, got: &[T]) -> Vec<Comparison> {
    // The reference's gather on the sampled tokens alone, into their placed rows, numbered in order.
    let mut next = 0;
    let compact: Vec<i32> = positions
        .iter()
        .map(|&p| {
            if p < 0 {
                return -1;
            }
            next += 1;
            next - 1
        })
        .collect();
    let mut want = vec![T::NAN; (next as usize + padding) * hidden];
    let placed_len = next as usize * hidden;
    reference::moe_gather(x, hidden, &compact, top_k, &[0], &[], &mut want[..placed_len]);
    // The reference zero-fills each expert's padding rows.
    want[placed_len..].fill(T::default());
    vec![nan_left("poison left in the checked rows", got), compare_exact("placed rows and padding rows (exact)", got, &want).in_rows(hidden)]
}

/// moe_combine's sampled tokens (`got`: their output rows) against the reference: `expert`
/// holds, for each of their top_k assignments in order, the expert output row it reads (any
/// row where `positions` is negative), `weights` their weights.
fn combine_comparisons<T: DType>(expert: &[T], positions: &[i32], weights: &[f32], hidden: usize, top_k: usize, got: &[T]) -> Vec<Comparison> {
    let compact: Vec<i32> = positions.iter().enumerate().map(|(j, &p)| if p < 0 { -1 } else { j as i32 }).collect();
    let want = reference::moe_combine(expert, hidden, &compact, weights, top_k);
    vec![nan_left("poison left in out", got), compare("out", got, &want, tolerance::<T>()).in_rows(hidden)]
}

/// moe_gather of [tokens, hidden] into expert order (top_k of `experts`, padded to block_m).
pub fn bench_moe_gather<T: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    hidden: usize,
    top_k: usize,
    experts: usize,
    block_m: usize,
) -> Result<BenchRecord> {
    let (a, total, want) = permutation(dev, tokens, top_k, experts, block_m)?;
    let esize = std::mem::size_of::<T>();
    let bytes = (tokens + total) * hidden * esize + 4 * (tokens * top_k + 2 * experts + 1);
    let copies = rotation_copies(bytes);
    let host: Vec<T> = Rng::new(4).vec(tokens * hidden, -2.0, 2.0);
    let xs = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>>>()?;
    let rows = a.sizes.sorted_len;
    let mut out = dev.zeros::<T>(rows * hidden)?;
    let pos = TensorView::contiguous(a.positions.as_view(), [tokens, top_k])?;
    let off = TensorView::contiguous(a.offsets.as_view(), [experts + 1])?;
    let cnt = TensorView::contiguous(a.counts.as_view(), [experts])?;
    let t = time_calls(dev, SAMPLES, |i| {
        moe_gather(
            dev,
            &TensorView::contiguous(xs[i % copies].as_view(), [tokens, hidden])?,
            &pos,
            &off,
            &cnt,
            &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, hidden])?,
        )
    })?;
    let shape = format!("{tokens}x{hidden} top{top_k} e{experts} bm{block_m}");
    let mut record = BenchRecord::bandwidth("moe_gather", T::NAME, shape, t, bytes as f64, ceilings);
    // The output check (copy 0): the sampled tokens' rows and their experts' first padding rows
    // poisoned, then against the reference; the device align's tables against the reference's.
    let sample = sampled_rows(tokens);
    let (placed, padding) = gather_check_rows(&want, &sample, top_k);
    let checked: Vec<usize> = placed.iter().chain(&padding).copied().collect();
    poison_rows(dev, &mut out, &checked, hidden, T::NAN)?;
    moe_gather(dev, &TensorView::contiguous(xs[0].as_view(), [tokens, hidden])?, &pos, &off, &cnt, &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, hidden])?)?;
    let got = download_rows(dev, &out, &checked, hidden)?;
    let x = download_rows(dev, &xs[0], &sample, hidden)?;
    let positions: Vec<i32> = sample.iter().flat_map(|&t| want.token_positions[t * top_k..][..top_k].to_vec()).collect();
    let mut comparisons = table_comparisons(&a.tables(dev)?, &want);
    comparisons.extend(gather_comparisons(&x, &positions, hidden, top_k, padding.len(), &got));
    let what = format!("{} ({} rows, {} padding)", sample_text(&sample, tokens), checked.len(), padding.len());
    record.output = Some(OutputCheck::of(&what, &comparisons));
    Ok(record)
}

/// moe_combine of the expert outputs back to [tokens, hidden].
pub fn bench_moe_combine<T: DType>(
    dev: &Device,
    ceilings: &Ceilings,
    tokens: usize,
    hidden: usize,
    top_k: usize,
    experts: usize,
    block_m: usize,
) -> Result<BenchRecord> {
    let (a, _, want) = permutation(dev, tokens, top_k, experts, block_m)?;
    let esize = std::mem::size_of::<T>();
    let bytes = (tokens * top_k + tokens) * hidden * esize + 8 * tokens * top_k;
    let rows = a.sizes.sorted_len;
    let copies = rotation_copies(bytes);
    let host: Vec<T> = Rng::new(5).vec(rows * hidden, -2.0, 2.0);
    let ys = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>>>()?;
    let w_host: Vec<f32> = Rng::new(6).vec(tokens * top_k, 0.0, 1.0);
    let w = dev.upload(&w_host)?;
    let mut out = dev.zeros::<T>(tokens * hidden)?;
    let pos = TensorView::contiguous(a.positions.as_view(), [tokens, top_k])?;
    let wv = TensorView::contiguous(w.as_view(), [tokens, top_k])?;
    let t = time_calls(dev, SAMPLES, |i| {
        moe_combine(
            dev,
            &TensorView::contiguous(ys[i % copies].as_view(), [rows, hidden])?,
            &pos,
            &wv,
            &mut TensorViewMut::contiguous(out.as_view_mut(), [tokens, hidden])?,
        )
    })?;
    let shape = format!("{tokens}x{hidden} top{top_k} e{experts} bm{block_m}");
    let mut record = BenchRecord::bandwidth("moe_combine", T::NAME, shape, t, bytes as f64, ceilings);
    // The output check (copy 0): the sampled tokens' rows poisoned, then against the reference
    // on the expert rows they read; the device align's tables against the reference's.
    let sample = sampled_rows(tokens);
    poison_rows(dev, &mut out, &sample, hidden, T::NAN)?;
    moe_combine(dev, &TensorView::contiguous(ys[0].as_view(), [rows, hidden])?, &pos, &wv, &mut TensorViewMut::contiguous(out.as_view_mut(), [tokens, hidden])?)?;
    let got = download_rows(dev, &out, &sample, hidden)?;
    let positions: Vec<i32> = sample.iter().flat_map(|&t| want.token_positions[t * top_k..][..top_k].to_vec()).collect();
    let read: Vec<usize> = positions.iter().map(|&p| p.max(0) as usize).collect();
    let expert = download_rows(dev, &ys[0], &read, hidden)?;
    let weights: Vec<f32> = sample.iter().flat_map(|&t| w_host[t * top_k..][..top_k].to_vec()).collect();
    let mut comparisons = table_comparisons(&a.tables(dev)?, &want);
    comparisons.extend(combine_comparisons(&expert, &positions, &weights, hidden, top_k, &got));
    record.output = Some(OutputCheck::of(&sample_text(&sample, tokens), &comparisons));
    Ok(record)
}

/// Every MoE routing benchmark `warpcore bench` runs.
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    use half::bf16;
    let softmax = MoeGateConfig::softmax_topk(true);
    let ds = MoeGateConfig::deepseek_v3(8, 4, 2.5);
    // Bars: softmax top-8 of 256 for 16384 tokens <= 10 us; DeepSeek-V3 <= 12 us (16384) and
    // <= 4 us (128 tokens).
    for tokens in [16384, 128] {
        out.push(bench_moe_gate::<f32>(dev, ceilings, tokens, 256, 8, &softmax, false)?); super::checkpoint(out);
        out.push(bench_moe_gate::<bf16>(dev, ceilings, tokens, 256, 8, &softmax, false)?); super::checkpoint(out);
        out.push(bench_moe_gate::<f32>(dev, ceilings, tokens, 256, 8, &ds, false)?); super::checkpoint(out);
        out.push(bench_moe_gate::<bf16>(dev, ceilings, tokens, 256, 8, &ds, false)?); super::checkpoint(out);
    }
    out.push(bench_moe_gate::<f32>(dev, ceilings, 16384, 256, 8, &ds, true)?); super::checkpoint(out);
    out.push(bench_moe_gate::<bf16>(dev, ceilings, 16384, 128, 8, &softmax, false)?); super::checkpoint(out); // Qwen3-30B-A3B
    out.push(bench_moe_gate::<bf16>(dev, ceilings, 16384, 8, 2, &softmax, false)?); super::checkpoint(out); // Mixtral
    // Align bar: <= 15 us for 16384 tokens top-8.
    out.push(bench_moe_align(dev, ceilings, 16384, 8, 256, 64)?); super::checkpoint(out);
    out.push(bench_moe_align(dev, ceilings, 128, 8, 256, 64)?); super::checkpoint(out);
    // Gather / combine bar: >= 80% of copy bandwidth.
    for (tokens, hidden, k, e) in [(4096, 7168, 8, 256), (16384, 2048, 8, 128)] {
        out.push(bench_moe_gather::<bf16>(dev, ceilings, tokens, hidden, k, e, 128)?); super::checkpoint(out);
        out.push(bench_moe_combine::<bf16>(dev, ceilings, tokens, hidden, k, e, 128)?); super::checkpoint(out);
    }
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
    fn gate_check_passes_the_reference_and_fails_poison_and_wrong_counts() {
        let (tokens, experts, k) = (40, 64, 4);
        let logits: Vec<bf16> = Rng::new(1).vec(tokens * experts, -3.0, 3.0);
        let cfg = MoeGateConfig::softmax_topk(true);
        let all = reference::moe_gate(&logits, experts, k, None, &cfg);
        let sample = sampled_rows(tokens);
        let ids: Vec<i32> = sample.iter().flat_map(|&t| all.topk_ids[t * k..][..k].to_vec()).collect();
        let w: Vec<f32> = sample.iter().flat_map(|&t| all.topk_weights[t * k..][..k].iter().map(|&v| v as f32).collect::<Vec<_>>()).collect();
        assert!(passed(&gate_comparisons(&logits, experts, k, None, &cfg, &sample, &ids, &w, Some(&all.expert_counts))));
        let mut poisoned = ids.clone();
        poisoned[k..2 * k].fill(INT_POISON);
        assert!(!passed(&gate_comparisons(&logits, experts, k, None, &cfg, &sample, &poisoned, &w, None)));
        assert!(!passed(&gate_comparisons(&logits, experts, k, None, &cfg, &sample, &ids, &vec![f32::NAN; w.len()], None)));
        assert!(!passed(&gate_comparisons(&logits, experts, k, None, &cfg, &sample, &ids, &w, Some(&vec![0; experts]))));
    }

    #[test]
    fn align_check_fails_poison() {
        let ids = routing(100, 32, 4);
        let want = reference::moe_align(&ids, 4, 32, 16);
        assert!(passed(&align_comparisons(&want, &want)));
        let mut got = want.clone();
        let n = got.sorted_ids.len();
        got.sorted_ids[n - 1] = INT_POISON;
        assert!(!passed(&align_comparisons(&got, &want)));
    }

    #[test]
    fn gather_and_combine_checks_pass_the_reference_and_fail_poison_and_zeros() {
        let (tokens, experts, k, h, bm) = (50, 16, 4, 64, 16);
        let ids = routing(tokens, experts, k);
        let a = reference::moe_align(&ids, k, experts, bm);
        let x: Vec<bf16> = Rng::new(4).vec(tokens * h, -2.0, 2.0);
        let mut full = vec![bf16::NAN; a.sorted_ids.len() * h];
        reference::moe_gather(&x, h, &a.token_positions, k, &a.expert_offsets, &a.expert_counts, &mut full);
        let sample = sampled_rows(tokens);
        let (placed, padding) = gather_check_rows(&a, &sample, k);
        assert!(!padding.is_empty());
        let checked: Vec<usize> = placed.iter().chain(&padding).copied().collect();
        let got: Vec<bf16> = checked.iter().flat_map(|&r| full[r * h..][..h].to_vec()).collect();
        let xs: Vec<bf16> = sample.iter().flat_map(|&t| x[t * h..][..h].to_vec()).collect();
        let positions: Vec<i32> = sample.iter().flat_map(|&t| a.token_positions[t * k..][..k].to_vec()).collect();
        assert!(passed(&gather_comparisons(&xs, &positions, h, k, padding.len(), &got)));
        let mut poisoned = got.clone();
        poisoned[..h].fill(bf16::NAN);
        assert!(!passed(&gather_comparisons(&xs, &positions, h, k, padding.len(), &poisoned)));
        let mut unpadded = got.clone();
        let n = unpadded.len();
        unpadded[n - h..].fill(bf16::NAN);
        assert!(!passed(&gather_comparisons(&xs, &positions, h, k, padding.len(), &unpadded)));

        // Combine of the gathered rows with random weights.
        let w: Vec<f32> = Rng::new(6).vec(tokens * k, 0.0, 1.0);
        let want = reference::moe_combine(&full.iter().map(|v| if v.is_nan() { bf16::ZERO } else { *v }).collect::<Vec<_>>(), h, &a.token_positions, &w, k);
        let out: Vec<bf16> = sample.iter().flat_map(|&t| want[t * h..][..h].iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>()).collect();
        let expert: Vec<bf16> = positions.iter().flat_map(|&p| full[p.max(0) as usize * h..][..h].to_vec()).collect();
        let ws: Vec<f32> = sample.iter().flat_map(|&t| w[t * k..][..k].to_vec()).collect();
        assert!(passed(&combine_comparisons(&expert, &positions, &ws, h, k, &out)));
        assert!(!passed(&combine_comparisons(&expert, &positions, &ws, h, k, &vec![bf16::ZERO; out.len()])));
        let mut poisoned = out.clone();
        poisoned[3 * h..].fill(bf16::NAN);
        assert!(!passed(&combine_comparisons(&expert, &positions, &ws, h, k, &poisoned)));
    }
}
