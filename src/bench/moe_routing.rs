//! Benchmarks of the MoE routing family at the shapes issue 4 sets bars for (docs/moe_routing.md).
//! Bytes counted: each input read once, each output written once (gather: each token row read
//! once and written top_k times, plus the zero-filled padding rows).

use super::{rotation_copies, time_calls, BenchRecord, Ceilings};
use crate::check::Rng;
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
    let bias = dev.upload(&Rng::new(2).vec::<f32>(experts, -0.5, 0.5))?;
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
    Ok(BenchRecord::bandwidth("moe_gate", T::NAME, shape, t, bytes as f64, ceilings))
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
    Ok(BenchRecord::bandwidth("moe_align", "i32", format!("{tokens}x{top_k} e{experts} bm{block_m}"), t, bytes as f64, ceilings))
}

/// The routing tables of a permutation benchmark, on the device, and the padded total.
fn permutation(dev: &Device, tokens: usize, top_k: usize, experts: usize, block_m: usize) -> Result<(AlignBuffers, usize)> {
    let sizes = MoeAlignSizes::new(tokens, top_k, experts, block_m)?;
    let host = routing(tokens, experts, top_k);
    let total = reference::moe_align(&host, top_k, experts, block_m).expert_offsets[experts] as usize;
    let ids = dev.upload(&host)?;
    let mut bufs = AlignBuffers::new(dev, sizes, experts)?;
    bufs.run(dev, &TensorView::contiguous(ids.as_view(), [tokens, top_k])?, experts, block_m)?;
    Ok((bufs, total))
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
    let (a, total) = permutation(dev, tokens, top_k, experts, block_m)?;
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
    Ok(BenchRecord::bandwidth("moe_gather", T::NAME, shape, t, bytes as f64, ceilings))
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
    let (a, _) = permutation(dev, tokens, top_k, experts, block_m)?;
    let esize = std::mem::size_of::<T>();
    let bytes = (tokens * top_k + tokens) * hidden * esize + 8 * tokens * top_k;
    let rows = a.sizes.sorted_len;
    let copies = rotation_copies(bytes);
    let host: Vec<T> = Rng::new(5).vec(rows * hidden, -2.0, 2.0);
    let ys = (0..copies).map(|_| dev.upload(&host)).collect::<Result<Vec<_>>>()?;
    let w = dev.upload(&Rng::new(6).vec::<f32>(tokens * top_k, 0.0, 1.0))?;
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
    Ok(BenchRecord::bandwidth("moe_combine", T::NAME, shape, t, bytes as f64, ceilings))
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
