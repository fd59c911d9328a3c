//! Attention benchmarks at the shapes the GQA issue sets bars for (bf16, 32 q / 8 kv heads,
//! head_dim 128), and MLA decode at DeepSeek-V3's (FlashMLA's benchmark shapes: 16 heads, one
//! GPU's share under 8-way tensor parallelism, and all 128). Decode counts the K/V bytes it
//! must read (q and out are negligible); causal prefill counts 4 · (causal pairs) ·
//! num_q_heads · head_dim FLOPs; MLA decode counts the latent rows (576 · 2 bytes per key) and
//! 2 · (576 + 512) FLOPs per key per head.

use super::{random_buffer, time_calls, BenchRecord, Ceilings, Timing};
use crate::check::Rng;
use crate::kv_cache::{BlockTableView, KvCacheView};
use crate::ops::attention::{attention, AttentionConfig, AttentionKernel, AttentionPlan, KvInput, MLA_DECODE};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use half::bf16;

const SAMPLES: usize = 15;
const NQ: usize = 32;
const NKV: usize = 8;
const HD: usize = 128;

/// Page ids 0..num_pages in a scrambled order, as an engine's allocator leaves them.
fn shuffled_pages(num_pages: usize) -> Vec<i32> {
    let mut ids: Vec<i32> = (0..num_pages as i32).collect();
    let mut rng = Rng::new(3);
    for i in (1..ids.len()).rev() {
        ids.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    ids
}

/// Times causal attention of `batch` sequences of `q_len` queries over `kv_len` keys each,
/// all in the paged cache of type `C` (bf16, or e4m3 with scales 1/64, 1/32) in pages of
/// `page_size`, shuffled as an engine's allocator leaves them; the 32 / 8-head, head_dim-128
/// shape, on `kernel` as `AttentionPlan::with_kv::<C>` resolves it, once per entry of `splits`:
/// with the plan's key splits (None) or that many, and the split merge launched as the plan has
/// it (true) or in plain stream order (false: `AttentionPlan::merge_pdl`). Returns each timing
/// with its plan.
#[allow(clippy::too_many_arguments)]
fn time_paged<C: DType>(dev: &Device, batch: usize, q_len: usize, kv_len: usize, page_size: usize, kernel: AttentionKernel, splits: &[(Option<usize>, bool)]) -> Result<Vec<(Timing, AttentionPlan)>> {
    let (total, pages_per_seq) = (batch * q_len, kv_len.div_ceil(page_size));
    let num_pages = batch * pages_per_seq;
    let cache_len = num_pages * page_size * NKV * HD;
    let k = random_buffer::<C>(dev, cache_len, -1.0, 1.0, 1)?;
    let v = random_buffer::<C>(dev, cache_len, -1.0, 1.0, 2)?;
    let bt = dev.upload(&shuffled_pages(num_pages))?;
    let lens = dev.upload(&vec![kv_len as i32; batch])?;
    let cu = dev.upload(&(0..=batch).map(|s| (s * q_len) as i32).collect::<Vec<_>>())?;
    let q = random_buffer::<bf16>(dev, total * NQ * HD, -1.0, 1.0, 4)?;
    let mut out_buf = dev.zeros::<bf16>(total * NQ * HD)?;
    let planned = AttentionPlan::with_kv::<C>(dev, &vec![q_len; batch], &vec![kv_len; batch], NQ, NKV, HD, HD, kernel)?;
    let cfg = AttentionConfig::causal(HD);
    let mut cache = KvCacheView::new(
        TensorView::contiguous(k.as_view(), [num_pages, page_size, NKV, HD])?,
        TensorView::contiguous(v.as_view(), [num_pages, page_size, NKV, HD])?,
    )?;
    if C::NAME != "bf16" {
        cache = cache.with_scales(crate::kv_cache::KvScales::new(1.0 / 64.0, 1.0 / 32.0))?;
    }
    let table = BlockTableView::new(TensorView::contiguous(bt.as_view(), [batch, pages_per_seq])?, TensorView::contiguous(lens.as_view(), [batch])?)?;
    let qv = TensorView::contiguous(q.as_view(), [total, NQ, HD])?;
    let cv = TensorView::contiguous(cu.as_view(), [batch + 1])?;
    let mut out = Vec::new();
    for &(s, pdl) in splits {
        let plan = AttentionPlan { num_splits: s.unwrap_or(planned.num_splits), merge_pdl: pdl && planned.merge_pdl, ..planned };
        let mut ws = dev.zeros::<f32>(plan.workspace_len().max(1))?;
        let wlen = ws.len();
        let t = time_calls(dev, SAMPLES, |_| {
            let kv = KvInput::Paged { cache: &cache, table: &table };
            let mut ov = TensorViewMut::contiguous(out_buf.as_view_mut(), [total, NQ, HD])?;
            let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
            attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))
        })?;
        out.push((t, plan));
    }
    Ok(out)
}

/// " kv-e4m3" for an FP8 cache's records, nothing for bf16.
fn kv_suffix<C: DType>() -> String {
    if C::NAME == "bf16" {
        String::new()
    } else {
        format!(" kv-{}", C::NAME)
    }
}

/// Decode: `batch` sequences of one query over `kv_len` cached keys of type `C` (bf16, or
/// e4m3) in pages of `page_size` (pages shuffled, as an engine's allocator leaves them).
pub fn bench_decode<C: DType>(dev: &Device, ceilings: &Ceilings, batch: usize, kv_len: usize, page_size: usize) -> Result<BenchRecord> {
    let (t, _) = time_paged::<C>(dev, batch, 1, kv_len, page_size, AttentionKernel::Auto, &[(None, true)])?[0];
    Ok(decode_record::<C>(format!("b{batch} kv{kv_len} page{page_size}{}", kv_suffix::<C>()), t, batch, kv_len, ceilings))
}

/// A decode record: the K/V bytes per second (and the FLOPs, for reference).
fn decode_record<C: DType>(shape: String, t: Timing, batch: usize, kv_len: usize, ceilings: &Ceilings) -> BenchRecord {
    let bytes = (2 * batch * kv_len * NKV * HD * std::mem::size_of::<C>()) as f64;
    let mut r = BenchRecord::bandwidth("attention_decode", "bf16", shape, t, bytes, ceilings);
    r.flops = (4 * batch * kv_len * NQ * HD) as f64;
    r.tflops = r.flops / (t.median_us * 1e-6) / 1e12;
    r
}

/// `warpcore bench --tune` for attention: the decode bar shapes (bf16, pages of 16) at every
/// key split count the plan may choose (1 to 64, at least 4 key tiles per split), keyed
/// `"<shape key> | splits S"`, the plan's pick marked `" (plan)"` — what checks `choose_splits`'
/// wave model against the H200. When the plan splits and launches its merge by PDL, the plan
/// once more with the merge in plain stream order (`" (plan) merge without PDL"`): what the
/// programmatic launch gains. A failed shape ends the sweep with what was timed before it.
pub fn tune_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    for (batch, kv_len) in [(64, 4096), (16, 32768), (1, 131072)] {
        let plan = AttentionPlan::with_kv::<bf16>(dev, &vec![1; batch], &vec![kv_len; batch], NQ, NKV, HD, HD, AttentionKernel::Auto)?;
        let (planned, cap) = (plan.num_splits, plan.max_splits(kv_len));
        let mut counts: Vec<usize> = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64].into_iter().filter(|&s| s <= cap).collect();
        if !counts.contains(&planned) {
            counts.push(planned);
        }
        let mut forced: Vec<(Option<usize>, bool)> = counts.iter().map(|&s| (Some(s), true)).collect();
        if planned > 1 && plan.merge_pdl {
            forced.push((Some(planned), false));
        }
        let timed = match time_paged::<bf16>(dev, batch, 1, kv_len, 16, AttentionKernel::Auto, &forced) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("warpcore bench --tune: attention_decode b{batch} kv{kv_len}: {e}; the sweep stops here");
                return Ok(());
            }
        };
        for (t, p) in timed {
            let (splits, mark) = (p.num_splits, if p.num_splits == planned { " (plan)" } else { "" });
            let pdl = if p.merge_pdl == plan.merge_pdl { "" } else { " merge without PDL" };
            out.push(decode_record::<bf16>(format!("b{batch} kv{kv_len} page16 | splits {splits}{mark}{pdl}"), t, batch, kv_len, ceilings));
        }
        super::checkpoint(out);
    }
    Ok(())
}

/// MLA decode (DeepSeek-V3: one query per sequence, `heads` query heads over the latent cache
/// of `kv_len` keys, pages of 64 shuffled). 16 heads are memory-bound (30 FLOP per byte): the
/// record's fraction is of the copy bandwidth; 128 heads (242 FLOP per byte) compute-bound:
/// of the cuBLAS bf16 rate.
/// `kernel`: `MmaSync` (the portable kernel; the record's plain shape key) or `Wgmma` (the
/// Hopper kernel, 128 heads; key suffix " wgmma"). `C`: the latent cache's dtype (bf16, or e4m3
/// with one scale on the portable kernel: key suffix " kv-e4m3", half the bytes).
pub fn bench_mla_decode<C: DType>(dev: &Device, ceilings: &Ceilings, batch: usize, kv_len: usize, heads: usize, kernel: AttentionKernel) -> Result<BenchRecord> {
    let (hd, hdv) = MLA_DECODE;
    let page_size = 64;
    let pages_per_seq = kv_len.div_ceil(page_size);
    let num_pages = batch * pages_per_seq;
    let pages = random_buffer::<C>(dev, num_pages * page_size * hd, -1.0, 1.0, 1)?;
    let bt = dev.upload(&shuffled_pages(num_pages))?;
    let lens = dev.upload(&vec![kv_len as i32; batch])?;
    let cu = dev.upload(&(0..=batch as i32).collect::<Vec<_>>())?;
    let q = random_buffer::<bf16>(dev, batch * heads * hd, -1.0, 1.0, 4)?;
    let mut out = dev.zeros::<bf16>(batch * heads * hdv)?;
    let plan = AttentionPlan::with_kv::<C>(dev, &vec![1; batch], &vec![kv_len; batch], heads, 1, hd, hdv, kernel)?;
    let mut ws = dev.zeros::<f32>(plan.workspace_len().max(1))?;
    // DeepSeek-V3's softmax scale: 1/√192 (the naive head dim), times YaRN's mscale² (1.0 at
    // factor 40 with mscale_all_dim 1: 0.1·ln 40 + 1 squared ≈ 1.87; the value does not change
    // the work).
    let cfg = AttentionConfig { scale: 1.87 / (192f32).sqrt(), ..AttentionConfig::causal(hd) };
    let mut cache = KvCacheView::latent(TensorView::contiguous(pages.as_view(), [num_pages, page_size, 1, hd])?, hdv)?;
    if C::NAME != "bf16" {
        cache = cache.with_scales(crate::kv_cache::KvScales::new(0.01, 0.01))?;
    }
    let table = BlockTableView::new(TensorView::contiguous(bt.as_view(), [batch, pages_per_seq])?, TensorView::contiguous(lens.as_view(), [batch])?)?;
    let qv = TensorView::contiguous(q.as_view(), [batch, heads, hd])?;
    let cv = TensorView::contiguous(cu.as_view(), [batch + 1])?;
    let wlen = ws.len();
    let t = time_calls(dev, SAMPLES, |_| {
        let kv = KvInput::Paged { cache: &cache, table: &table };
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [batch, heads, hdv])?;
        let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
        attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))
    })?;
    let bytes = (batch * kv_len * hd * std::mem::size_of::<C>()) as f64;
    let flops = (2 * batch * kv_len * heads * (hd + hdv)) as f64;
    let suffix = if plan.kernel == AttentionKernel::Wgmma { " wgmma" } else { "" };
    let shape = format!("b{batch} kv{kv_len} h{heads} page{page_size}{suffix}{}", kv_suffix::<C>());
    Ok(if heads <= 32 {
        let mut r = BenchRecord::bandwidth("attention_mla_decode", "bf16", shape, t, bytes, ceilings);
        r.flops = flops;
        r.tflops = flops / (t.median_us * 1e-6) / 1e12;
        r
    } else {
        BenchRecord::compute("attention_mla_decode", "bf16", shape, t, bytes, flops, ceilings)
    })
}

/// The prefill record's shape key: the portable kernel's is the issue's bar ("b1 q16384
/// causal"); the Hopper kernel's adds " wgmma".
pub fn prefill_shape(batch: usize, seq_len: usize, kernel: AttentionKernel) -> String {
    let suffix = if kernel == AttentionKernel::Wgmma { " wgmma" } else { "" };
    format!("b{batch} q{seq_len} causal{suffix}")
}

/// Causal prefill of `batch` sequences of `seq_len` tokens, K/V contiguous (varlen), on
/// `kernel` (`MmaSync` or `Wgmma`); `tma` false: the wgmma kernel's key tiles all by cp.async,
/// the record's key gains " no-tma" (true: the plan's default, `WARPCORE_ATTENTION_TMA`).
pub fn bench_prefill(dev: &Device, ceilings: &Ceilings, batch: usize, seq_len: usize, kernel: AttentionKernel, tma: bool) -> Result<BenchRecord> {
    let total = batch * seq_len;
    let q = random_buffer::<bf16>(dev, total * NQ * HD, -1.0, 1.0, 1)?;
    let k = random_buffer::<bf16>(dev, total * NKV * HD, -1.0, 1.0, 2)?;
    let v = random_buffer::<bf16>(dev, total * NKV * HD, -1.0, 1.0, 3)?;
    let mut out = dev.zeros::<bf16>(total * NQ * HD)?;
    let cu: Vec<i32> = (0..=batch).map(|s| (s * seq_len) as i32).collect();
    let cu = dev.upload(&cu)?;
    let planned = AttentionPlan::with_kernel(dev, &vec![seq_len; batch], &vec![seq_len; batch], NQ, NKV, HD, HD, kernel)?;
    let plan = AttentionPlan { tma: tma && planned.tma, ..planned };
    let mut ws = dev.zeros::<f32>(plan.workspace_len().max(1))?;
    let cfg = AttentionConfig::causal(HD);
    let qv = TensorView::contiguous(q.as_view(), [total, NQ, HD])?;
    let kt = TensorView::contiguous(k.as_view(), [total, NKV, HD])?;
    let vt = TensorView::contiguous(v.as_view(), [total, NKV, HD])?;
    let cv = TensorView::contiguous(cu.as_view(), [batch + 1])?;
    let wlen = ws.len();
    let t = time_calls(dev, SAMPLES, |_| {
        let kv = KvInput::Contiguous { k: &kt, v: &vt, cu_seqlens_kv: &cv };
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [total, NQ, HD])?;
        let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
        attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))
    })?;
    let pairs = batch * seq_len * (seq_len + 1) / 2;
    let flops = (4 * pairs * NQ * HD) as f64;
    let bytes = (2 * total * NQ * HD * 2 + 2 * total * NKV * HD * 2) as f64;
    let shape = prefill_shape(batch, seq_len, plan.kernel) + if tma || plan.kernel != AttentionKernel::Wgmma { "" } else { " no-tma" };
    Ok(BenchRecord::compute("attention_prefill", "bf16", shape, t, bytes, flops, ceilings))
}

/// Causal prefill of `batch` sequences of `seq_len` tokens whose K/V are already in the paged
/// cache (pages of `page_size`, shuffled) of type `C` — what a chunked prefill or an append
/// reads; on `kernel` (`Auto`: the one [`AttentionPlan::with_kv`] picks). Key
/// `"b{batch} q{seq_len} causal page{page_size}[ kv-e4m3][ wgmma]"`.
pub fn bench_prefill_paged<C: DType>(dev: &Device, ceilings: &Ceilings, batch: usize, seq_len: usize, page_size: usize, kernel: AttentionKernel) -> Result<BenchRecord> {
    let (t, plan) = time_paged::<C>(dev, batch, seq_len, seq_len, page_size, kernel, &[(None, true)])?[0];
    let total = batch * seq_len;
    let pairs = batch * seq_len * (seq_len + 1) / 2;
    let flops = (4 * pairs * NQ * HD) as f64;
    let bytes = (2 * total * NQ * HD * 2 + 2 * total * NKV * HD * std::mem::size_of::<C>()) as f64;
    let suffix = if plan.kernel == AttentionKernel::Wgmma { " wgmma" } else { "" };
    let shape = format!("{} page{page_size}{}{suffix}", prefill_shape(batch, seq_len, AttentionKernel::MmaSync), kv_suffix::<C>());
    Ok(BenchRecord::compute("attention_prefill", "bf16", shape, t, bytes, flops, ceilings))
}

/// Every attention benchmark `warpcore bench` runs.
pub fn bench_all(dev: &Device, ceilings: &Ceilings, out: &mut Vec<BenchRecord>) -> Result<()> {
    for page in [16, 64] {
        out.push(bench_decode::<bf16>(dev, ceilings, 64, 4096, page)?); super::checkpoint(out);
        out.push(bench_decode::<bf16>(dev, ceilings, 16, 32768, page)?); super::checkpoint(out);
        out.push(bench_decode::<bf16>(dev, ceilings, 1, 131072, page)?); super::checkpoint(out);
    }
    out.push(bench_decode::<crate::F8E4M3>(dev, ceilings, 64, 4096, 16)?); super::checkpoint(out);
    // MLA decode: the portable kernel at 16 and 128 heads, and on Hopper the wgmma kernel at
    // 128 (its regime: more than 16 rows per sequence).
    let mla_hopper = AttentionPlan::with_kernel(dev, &[1], &[4096], 128, 1, MLA_DECODE.0, MLA_DECODE.1, AttentionKernel::Wgmma).is_ok();
    for heads in [16, 128] {
        for (batch, kv_len) in [(64, 4096), (128, 8192)] {
            out.push(bench_mla_decode::<bf16>(dev, ceilings, batch, kv_len, heads, AttentionKernel::MmaSync)?); super::checkpoint(out);
            if heads == 128 && mla_hopper {
                out.push(bench_mla_decode::<bf16>(dev, ceilings, batch, kv_len, heads, AttentionKernel::Wgmma)?); super::checkpoint(out);
            }
        }
    }
    // The FP8 latent cache where bytes decide: 16 heads.
    out.push(bench_mla_decode::<crate::F8E4M3>(dev, ceilings, 64, 4096, 16, AttentionKernel::MmaSync)?); super::checkpoint(out);
    // The portable kernel (the 350 TFLOP/s bar), then on Hopper the wgmma kernel (the
    // issue's goal for it: 700).
    let hopper = AttentionPlan::with_kernel(dev, &[4096], &[4096], NQ, NKV, HD, HD, AttentionKernel::Wgmma).is_ok();
    for (batch, seq_len) in [(1, 16384), (4, 4096)] {
        out.push(bench_prefill(dev, ceilings, batch, seq_len, AttentionKernel::MmaSync, true)?); super::checkpoint(out);
        if hopper {
            out.push(bench_prefill(dev, ceilings, batch, seq_len, AttentionKernel::Wgmma, true)?); super::checkpoint(out);
            // The same with every key tile by cp.async (the measure of the TMA tiles).
            out.push(bench_prefill(dev, ceilings, batch, seq_len, AttentionKernel::Wgmma, false)?); super::checkpoint(out);
        }
    }
    // Prefill over the paged cache (chunked prefill, append): bf16, and the FP8 cache, which the
    // kernel Auto picks converts in shared memory (on Hopper the wgmma kernel; there the
    // portable kernel's record too, for the ratio).
    out.push(bench_prefill_paged::<bf16>(dev, ceilings, 4, 4096, 16, AttentionKernel::Auto)?); super::checkpoint(out);
    out.push(bench_prefill_paged::<crate::F8E4M3>(dev, ceilings, 4, 4096, 16, AttentionKernel::Auto)?); super::checkpoint(out);
    if hopper {
        out.push(bench_prefill_paged::<crate::F8E4M3>(dev, ceilings, 4, 4096, 16, AttentionKernel::MmaSync)?); super::checkpoint(out);
    }
    Ok(())
}
